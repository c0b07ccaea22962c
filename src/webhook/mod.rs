//! The admission webhook: pure decisions ([`admission`]) apart from the HTTP routes ([`routes`])
//! and the HTTPS transport with its rotating certificate ([`tls`]).

pub mod admission;
pub mod routes;
pub mod tls;

pub use routes::{Webhook, router};

//! The admission webhook: pure decisions ([`admission`]) apart from the HTTP routes ([`routes`]).

pub mod admission;
pub mod routes;

pub use routes::{Webhook, router};

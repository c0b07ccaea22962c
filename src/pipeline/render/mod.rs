//! Rendering a data key's jq template in a sandboxed child ([`sandbox`], [`template`], the
//! protocol between them in [`evaluation`]) against what a template may read ([`inputs`]), whose
//! values are [`secrets`].

pub mod data_template;
pub mod evaluation;
pub mod inputs;
pub mod sandbox;
pub mod secrets;
pub mod template;

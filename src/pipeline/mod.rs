//! The verdict pipeline, pure or reading only its inputs, in the three stages its folders name:
//! a connector ConfigMap is [`parse`]d, each data key rendered as a jq template in a sandbox
//! ([`render`]) against the mounted variables and allowed env, and the result checked
//! ([`check`]) against the worker's plugins and config providers into a
//! [`check::verdict::Verdict`]. The webhook, the reconciler and the CLI all judge through
//! [`judgement::Pipeline::judge`], which runs the stages in order. Each stage imports only those
//! before it.

pub mod check;
pub mod judgement;
pub mod parse;
pub mod render;

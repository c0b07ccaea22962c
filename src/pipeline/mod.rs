//! The verdict pipeline, pure or reading only its inputs: a connector ConfigMap is parsed
//! ([`manifest`]), each data key rendered as a jq template in a sandbox ([`template`]) against
//! the mounted variables and allowed env ([`inputs`], [`secrets`]), and the result checked
//! against the worker's plugins ([`plugins`]) into a [`verdict::Verdict`]. The webhook, the
//! reconciler and the CLI all judge through [`judgement::Pipeline::judge`].

pub mod data_template;
pub mod duplicates;
pub mod evaluation;
pub mod inputs;
pub mod judgement;
pub mod manifest;
pub mod operations;
pub mod plugins;
pub mod problem_kinds;
pub mod properties;
pub mod sandbox;
pub mod secrets;
pub mod shape;
pub mod source_map;
pub mod template;
pub mod verdict;

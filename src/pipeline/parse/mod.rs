//! Reading what users write: connector ConfigMaps ([`manifest`]) and Java properties files
//! ([`properties`]: template variables, the worker's config).

pub mod manifest;
pub mod properties;

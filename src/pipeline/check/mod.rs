//! Checking a rendered connector: its shape ([`shape`]), its class against the worker's plugins
//! ([`plugins`]), its day-2 operations ([`operations`]) and names declared twice
//! ([`duplicates`]), the worker's config [`providers`] and every reference to them
//! ([`references`]), how inputs reach the worker ([`secrets_as`]), into the [`verdict`] types every caller reads.

pub mod duplicates;
pub mod operations;
pub mod plugins;
pub mod problem_kinds;
pub mod providers;
pub mod references;
pub mod secrets_as;
pub mod shape;
pub mod verdict;

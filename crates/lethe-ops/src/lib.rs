//! Lethe's operations library: the engine, the state and the connectors behind every front
//! end (the `lethe` command line, and the daemon and dashboard to come). Each operation
//! ([`ops`]) takes a plain options struct and returns a typed result or an [`Error`];
//! nothing here parses arguments or prints.

pub mod auditor;
pub mod db;
pub mod engine;
pub mod error;
pub mod files;
pub mod guard;
pub mod io;
pub mod ops;
pub mod registry;
pub mod settings;
pub mod state;
pub mod targets;
pub mod util;

pub use error::{Error, Result};

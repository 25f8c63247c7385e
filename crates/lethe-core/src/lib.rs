//! Lethe's core: the policy, the expiry decision and the audit chain's hashing.
//! It does no IO and reads no clock, so every rule here is tested on its own.

pub mod audit;
pub mod config;
pub mod expiry;
pub mod guard;
pub mod lifecycle;
pub mod receipt;
pub mod schedule;
pub mod time;

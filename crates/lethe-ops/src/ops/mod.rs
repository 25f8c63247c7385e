//! The operations, one function each: every front end (the command line, and the daemon and
//! dashboard to come) calls these. Each takes the loaded config and a plain request, and
//! returns a typed result (serde-serialisable) or an [`Error`](crate::Error); none parses
//! arguments or prints. What an operation has to tell besides its result (a warning, a
//! caveat) is a field of the result.
//!
//! The operations use the engine, the state, the registers and the connectors; nothing
//! there uses them.

pub mod audit;
pub mod census;
pub mod check;
pub mod common;
pub mod demo;
pub mod erase;
pub mod exception;
pub mod export;
pub mod hold;
pub mod init;
pub mod lifecycle;
pub mod places;
pub mod plan;
pub mod reconcile;
pub mod report;
pub mod schedule;
pub mod sweep;

pub use audit::{
    LogPage, LogQuery, PruneOutcome, PrunedFrom, RepairOutcome, RepairRequest, TrailFormat,
    VerifyOutcome, export_trail, log, prune, public_key, repair, verify,
};
pub use check::{CheckReport, TargetCheck, check};
pub use common::Destination;
pub use demo::DemoRun;
pub use erase::{EraseRequest, Erasure, Receipt, erase};
pub use exception::{ExceptionGranted, ExceptionRequest, Revocation};
pub use export::{AccessExport, Exported, export, export_by};
pub use hold::{HoldPlaced, HoldRelease, HoldRequest};
pub use init::{InitOutcome, init};
pub use lifecycle::LifecyclePolicy;
pub use plan::{PlanReport, PlanRequest, plan};
pub use sweep::{SweepRequest, new_run_id, sweep};

//! The cloud's own lifecycle policy for an object-store target's window.

use lethe_core::lifecycle::{self, Cloud};

use crate::targets::kind_of;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::settings::Loaded;

/// A target's window as a lifecycle policy, and what such a policy cannot do.
#[derive(Clone, Debug, Serialize)]
pub struct LifecyclePolicy {
    /// The policy document, as the cloud takes it.
    pub policy: serde_json::Value,
    /// What the store will do that Lethe would not (delete held and excepted objects): to be
    /// shown with the policy.
    pub caveat: &'static str,
}

/// Renders the window of object-store target `target` as `cloud`'s lifecycle policy.
pub fn policy(loaded: &Loaded, target: &str, cloud: Cloud) -> Result<LifecyclePolicy> {
    let t = loaded.config.target(target).ok_or_else(|| {
        Error::not_found(format!(
            "--target {target}: no such target in {}",
            loaded.path.display()
        ))
    })?;
    let policy = kind_of(t).lifecycle(t, cloud).map_err(Error::usage)?;
    Ok(LifecyclePolicy {
        policy,
        caveat: lifecycle::CAVEAT,
    })
}

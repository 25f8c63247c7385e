//! Legal holds: keep items whatever their window or an erasure request says, until released.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::ops::common::{find_item, open_state, subject_arg, subject_targets, target};
use crate::registry::{self, HoldRecord};
use crate::settings::Loaded;
use crate::state::Access;
use crate::util::now;

/// A hold to place: on a subject, on one item (`target` and `key`), or on a whole target.
#[derive(Clone, Debug, Default)]
pub struct HoldRequest {
    pub subject: Option<String>,
    pub target: Option<String>,
    /// An item's key: with `target` only.
    pub key: Option<String>,
    /// The legal case this hold serves.
    pub case_id: String,
    pub reason: String,
    /// Who places it [default: the OS user].
    pub by: Option<String>,
}

/// A hold placed.
#[derive(Clone, Debug, Serialize)]
pub struct HoldPlaced {
    pub id: String,
    /// For a subject hold that matched no item today (a typo would otherwise protect nobody,
    /// silently), or an item whose deletion an interrupted run began: what to tell the
    /// person who placed it. The hold is placed all the same.
    pub warning: Option<String>,
    /// For an item hold: the interrupted run that wrote ahead this item's deletion and did
    /// not record it (files go before rows: a file the item owned may already be gone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_begun: Option<String>,
}

/// Places a hold. A subject hold is placed whether or not the subject has items today (it
/// protects what appears later); an item hold needs the item to exist.
pub fn place(loaded: &Loaded, req: &HoldRequest) -> Result<HoldPlaced> {
    let now = now();
    let (subject, tname, key) = (&req.subject, &req.target, &req.key);
    if req.case_id.trim().is_empty() || req.reason.trim().is_empty() {
        return Err(Error::usage("--case and --reason must not be empty"));
    }
    if subject.is_some() && tname.is_some() {
        return Err(Error::usage(
            "a hold is on --subject, or on --target (with or without --key), not both",
        ));
    }
    if key.is_some() && tname.is_none() {
        return Err(Error::usage("--key needs --target"));
    }
    // The hold names the item as the target names it (a composite key in one spelling), so
    // that the sweep's lookup finds it.
    let mut item_key = key.clone();
    let t = tname
        .as_deref()
        .map(|name| target(loaded, name))
        .transpose()?;
    if let (Some(t), Some(k)) = (t, key) {
        let row = find_item(loaded, t, k)?;
        item_key = row.key.ok().map(|k| k.to_string()).or(item_key);
    }
    let subject = subject.as_deref().map(subject_arg).transpose()?;
    if subject.is_none() && tname.is_none() {
        return Err(Error::usage(
            "say what to hold: --subject ID, --target NAME --key KEY, or --target NAME",
        ));
    }
    let warning = match subject {
        Some(s) => subject_matches(loaded, s),
        None => None,
    };
    let mut state = open_state(loaded, Access::Write)?;
    let deletion_begun = match (t, &item_key) {
        (Some(t), Some(k)) => crate::engine::deletion_begun(&mut state, t, &loaded.base, k)?,
        _ => None,
    };
    let warning = warning.or_else(|| {
        deletion_begun.as_ref().map(|run| {
            format!(
                "run {run} wrote ahead the deletion of this item and was interrupted before recording it: a file the item owned may already be removed (files go before rows); the hold keeps what is left, and the next sweep records what it finds"
            )
        })
    });
    let subject_hash = subject.map(|s| state.key.subject_hash(s));
    let id = registry::place_hold(
        &mut state,
        registry::NewHold {
            target: tname.as_deref(),
            key: item_key.as_deref(),
            subject_hash,
            case_id: &req.case_id,
            reason: &req.reason,
            by: registry::actor(req.by.as_deref()),
        },
        now,
        || match (t, key) {
            (Some(t), Some(k)) => find_item(loaded, t, k)
                .map(|_| ())
                .map_err(anyhow::Error::from),
            _ => Ok(()),
        },
    )?;
    Ok(HoldPlaced {
        id,
        warning,
        deletion_begun,
    })
}

/// `None` when some target holds an item of `subject`; otherwise what to tell the person
/// placing a hold on it (naming any target that could not be read).
fn subject_matches(loaded: &Loaded, subject: &str) -> Option<String> {
    let mut unread = Vec::new();
    let Ok(targets) = subject_targets(loaded) else {
        return Some(format!(
            "no target in {} maps a subject, so no item of {subject:?} can be found or protected until one does (`subject = \"COLUMN\"`); the hold is placed all the same",
            loaded.path.display()
        ));
    };
    for t in &targets {
        let found = match loaded.open(t, false) {
            Some(Ok(mut table)) => table.of_subject(subject, 1).map(|rows| !rows.is_empty()),
            Some(Err(e)) => Err(e),
            None => continue,
        };
        match found {
            Ok(true) => return None,
            Ok(false) => {}
            Err(e) => unread.push(format!("{}: {e:#}", t.name)),
        }
    }
    let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    let mut warning = format!(
        "no item of {subject:?} was found in any target that maps a subject ({}): check the spelling; the hold is placed all the same and protects items of this subject that appear later",
        names.join(", ")
    );
    if !unread.is_empty() {
        warning.push_str(&format!("; could not read {}", unread.join("; ")));
    }
    Some(warning)
}

/// Active and released holds, oldest first.
pub fn list(loaded: &Loaded) -> Result<Vec<HoldRecord>> {
    let mut state = open_state(loaded, Access::Read)?;
    Ok(registry::holds(&mut state)?)
}

/// A hold to release, and why.
#[derive(Clone, Debug)]
pub struct HoldRelease {
    pub id: String,
    /// Recorded in the trail; must not be empty.
    pub reason: String,
    /// Who releases it [default: the OS user].
    pub by: Option<String>,
}

/// Releases a hold. An unknown id is [`Error::NotFound`]; a hold already released is
/// [`Error::Conflict`].
pub fn release(loaded: &Loaded, req: &HoldRelease) -> Result<()> {
    let now = now();
    if req.reason.trim().is_empty() {
        return Err(Error::usage(
            "--reason must not be empty: a release needs a reason",
        ));
    }
    let mut state = open_state(loaded, Access::Write)?;
    registry::release_hold(
        &mut state,
        &req.id,
        &req.reason,
        registry::actor(req.by.as_deref()),
        now,
    )?;
    Ok(())
}

//! `init`: the one operation that creates a state (its trail, key and registers).

use serde::Serialize;

use crate::error::Result;
use crate::ops::common::open_state;
use crate::settings::Loaded;
use crate::state::{Access, State, TrailBroken};
use crate::util::now;

/// What `init` found or made.
#[derive(Clone, Debug, Serialize)]
pub struct InitOutcome {
    /// Where the state is, as shown to people (a path or a redacted URL).
    pub location: String,
    /// Whether it was made now; false when it was there already (and was left as it was).
    pub created: bool,
    /// The fingerprint of the audit key the trail is sealed with.
    pub key_fingerprint: String,
}

/// Makes the config's state and its key, and starts the trail with its creation entry; a
/// state that exists is checked and left as it is.
pub fn init(loaded: &Loaded) -> Result<InitOutcome> {
    let (state, created) = init_state(loaded)?;
    Ok(InitOutcome {
        location: state.location.clone(),
        created,
        key_fingerprint: state.key.fingerprint(),
    })
}

/// Makes the config's state if it does not exist (true), or checks the one there (false).
fn init_state(loaded: &Loaded) -> Result<(State, bool)> {
    let mut state = open_state(loaded, Access::Create)?;
    let created = if state.has_entries() {
        state.check_head()?;
        false
    } else {
        // An empty trail beside a state that was used is a trail whose entries were removed:
        // never started again as if new.
        let history = state.history()?;
        if !history.is_empty() {
            return Err(TrailBroken(format!(
                "the trail at {} is empty, but the state was used before ({}): its entries were removed. `lethe audit verify` reports it; `lethe init` does not start it again",
                state.location,
                history.join(", ")
            ))
            .into());
        }
        let body = lethe_core::audit::Body {
            decided_at: now().to_rfc3339(),
            run_id: crate::state::new_id("init")?,
            action: lethe_core::audit::Action::TrailCreated,
            target: String::new(),
            item_key: String::new(),
            category: String::new(),
            reason: "init".into(),
            window: String::new(),
            expires_at: None,
            subject_hash: None,
            detail: format!(
                "state created by lethe init for {}; audit key {}",
                loaded.path.display(),
                state.key.fingerprint()
            ),
        };
        state.create_trail(body)?;
        true
    };
    Ok((state, created))
}

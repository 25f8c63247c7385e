//! What several operations do before they act: open the state (refusing a config whose state
//! is a target's database, and a trail that may not be extended), refuse deletions in flight
//! in a target the config lost, check that the config fits its targets, and find the target,
//! subject or item an operation names.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use lethe_core::config::{ConfigError, Target};

use crate::error::{Error, Result};
use crate::ops::places::{shared_places, state_in_targets};
use crate::settings::Loaded;
use crate::state::{Access, State};
use crate::targets::{Key, Lookup, Row, answers, roots_for};
use crate::util::ConfigProblems;

/// Opens the config's state. A command that writes checks first that the trail may be
/// extended (its head is the sealed head): a cut or rewritten trail stops it before it
/// touches anything.
pub fn open_state(loaded: &Loaded, access: Access) -> Result<State> {
    let c = &loaded.config;
    // Refused before the state is opened, which would create its tables in the target's
    // database.
    if let Some((t, why)) = state_in_targets(loaded).into_iter().next() {
        let problem = ConfigError {
            line: c.state.line,
            key: "state.url".into(),
            message: format!(
                "is the database of target {} (line {}), and Lethe's own state database must be no target's: {why}; nothing was touched",
                t.name, t.line
            ),
        };
        return Err(ConfigProblems {
            message: format!("{}:{problem}", loaded.path.display()),
            problems: vec![problem],
        }
        .into());
    }
    let mut state = open_unchecked(loaded, access)?;
    state.lease_ttl_secs = c.state.lease_ttl.as_secs().max(1);
    if access == Access::Write {
        state.check_head()?;
    }
    Ok(state)
}

/// Opens the state as it is, without the checks of [`open_state`]: for repairing a broken
/// trail, which is what those checks refuse.
pub fn open_unchecked(loaded: &Loaded, access: Access) -> Result<State> {
    let c = &loaded.config;
    Ok(State::open(
        &c.state.url,
        c.state.password_env.as_deref(),
        &loaded.base,
        c.audit.key_env.as_deref(),
        c.audit.signing_key_env.as_deref(),
        access,
    )?)
}

/// Deletions in flight (written ahead, made or not, not yet in the trail) in a target the
/// config no longer has would never be recorded: such a config is refused (exit 2) until the
/// target is back, under any name (records are kept by the target's identity).
pub fn refuse_dropped_pending(state: &State, loaded: &Loaded) -> Result<()> {
    let mut store = state.pending_store()?;
    // Every place a target's passes write ahead (a redaction's records are kept apart from
    // the table's deletions).
    let known: Vec<(&str, String)> = loaded
        .config
        .targets
        .iter()
        .flat_map(|t| {
            let mut ids = vec![crate::targets::identity(t, &loaded.base)];
            for erasure in [false, true] {
                for p in crate::targets::passes(t, erasure) {
                    ids.push(crate::targets::identity(&p.target, &loaded.base));
                }
            }
            ids.into_iter().map(move |i| (t.name.as_str(), i))
        })
        .collect();
    let mut lost = Vec::new();
    for f in store.targets()? {
        let here = match &f.identity {
            Some(i) => known.iter().any(|(_, k)| k == i),
            None => known.iter().any(|(n, _)| *n == f.name),
        };
        if !here {
            lost.push(format!(
                "{} write-ahead batch(es) of run {} in target {} ({})",
                f.batches,
                f.run,
                f.name,
                f.identity
                    .as_deref()
                    .unwrap_or("written before identities were kept")
            ));
        }
    }
    if lost.is_empty() {
        return Ok(());
    }
    Err(Error::usage(format!(
        "{}: deletions were made or begun there and are not yet in the audit trail, but {} has no target at that place. Put the target back (under any name), run `lethe sweep --apply` so that they are recorded, then remove it",
        lost.join("; "),
        loaded.path.display()
    )))
}

/// Reaches every chosen target and checks its table and columns before anything is touched:
/// a config that does not fit its database is bad usage (exit 2), reported all at once.
/// `write` opens the targets as the run will: an apply may need to roll back a hot journal
/// an interrupted writer left, which a read-only open cannot.
pub fn preflight(loaded: &Loaded, targets: &[&Target], write: bool) -> Result<()> {
    let mut problems: Vec<String> = shared_places(loaded)
        .into_iter()
        .map(|(t, p)| {
            format!(
                "{}:line {}: targets.{}: {p}",
                loaded.path.display(),
                t.line,
                t.name
            )
        })
        .collect();
    for t in targets {
        if let Some(source) = loaded.open(t, write) {
            let found = source.and_then(|mut table| table.check_schema());
            let mut found = match found {
                Ok(p) => p,
                Err(e) => vec![format!("{e:#}")],
            };
            // A root that `check` refuses is refused here too: a run never starts on one.
            for p in roots_for(t, &loaded.base).problems() {
                if !found.contains(&p) {
                    found.push(p);
                }
            }
            for p in found {
                problems.push(format!(
                    "{}:line {}: targets.{}: {p}",
                    loaded.path.display(),
                    t.line,
                    t.name
                ));
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::usage(format!(
        "the config does not fit its targets; nothing was touched:\n  {}",
        problems.join("\n  ")
    )))
}

/// A subject as given: never empty.
pub fn subject_arg(s: &str) -> Result<&str> {
    if s.trim().is_empty() {
        return Err(Error::usage("--subject must not be empty"));
    }
    Ok(s)
}

/// Whether a target maps a subject (a column, or an object metadata entry).
pub fn maps_subject(t: &Target) -> bool {
    crate::targets::kind_of(t).reaches_subjects(t)
}

/// The targets that map a subject: the ones erasure, export and subject holds reach.
pub fn subject_targets(loaded: &Loaded) -> Result<Vec<&Target>> {
    let t: Vec<&Target> = loaded
        .config
        .targets
        .iter()
        .filter(|t| maps_subject(t))
        .collect();
    if t.is_empty() {
        return Err(Error::usage(format!(
            "no target in {} maps a subject: set `subject = \"COLUMN\"` on the targets that hold personal data",
            loaded.path.display()
        )));
    }
    Ok(t)
}

/// The target of this name, for a register entry that names one.
pub fn target<'a>(loaded: &'a Loaded, name: &str) -> Result<&'a Target> {
    loaded.config.target(name).ok_or_else(|| {
        let known: Vec<&str> = loaded
            .config
            .targets
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        Error::not_found(format!(
            "--target {name}: no such target (targets: {})",
            known.join(", ")
        ))
    })
}

/// The item of a target with this key, read-only; an unknown key names nothing.
pub fn find_item(loaded: &Loaded, t: &Target, key: &str) -> Result<Row> {
    let Some(source) = loaded.open(t, false) else {
        return Err(Error::usage(format!(
            "target {} is of type {}; items cannot be named in it yet",
            t.name, t.type_name
        )));
    };
    let mut table = source.map_err(|e| Error::target(&t.name, e))?;
    let keys = Key::readings(key);
    let shown: Vec<String> = keys.iter().map(Key::to_string).collect();
    let looked = table
        .lookup(&keys)
        .and_then(|each| answers("lookup", &keys, each))
        .map_err(|e| Error::target(&t.name, e))?;
    let mut unknown = None;
    for l in looked {
        match l {
            Lookup::Found(r) if matches!(&r.key, Ok(k) if shown.contains(&k.to_string())) => {
                return Ok(r);
            }
            Lookup::Found(_) | Lookup::Gone => {}
            Lookup::Unknown(why) => unknown = Some(why),
        }
    }
    match unknown {
        // The store could not say: never reported as "no such item".
        Some(why) => Err(Error::target(
            &t.name,
            anyhow::anyhow!("the item with key {key:?} could not be looked up: {why}"),
        )),
        None => Err(Error::not_found(format!(
            "target {} has no item with key {key:?}",
            t.name
        ))),
    }
}

/// Where an operation that writes a document (a trail export, a person's data) writes it.
pub enum Destination<'a> {
    /// A file, created (or truncated) readable by its owner only.
    File(&'a Path),
    /// A writer the caller holds (stdout); flushed, not closed, at the end.
    Writer(&'a mut dyn Write),
}

impl<'a> Destination<'a> {
    /// Opens it for writing, buffered.
    pub(crate) fn open(self) -> anyhow::Result<Box<dyn Write + 'a>> {
        Ok(match self {
            Destination::File(p) => Box::new(std::io::BufWriter::new(
                crate::util::create_private(p)
                    .with_context(|| format!("Failed to create {}", p.display()))?,
            )),
            Destination::Writer(w) => Box::new(std::io::BufWriter::new(w)),
        })
    }
}

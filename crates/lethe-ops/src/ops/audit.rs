//! The audit trail: verify it, look entries up, export it whole, and repair it after a break
//! was investigated.

use std::collections::VecDeque;
use std::io::Write;

use lethe_core::audit::{Entry, RepairRecord};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::ops::common::{Destination, open_state, open_unchecked};
use crate::settings::Loaded;
use crate::state::{Access, Checkpoint, Filter};

/// What verifying the trail found: intact when `ok`.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyOutcome {
    pub ok: bool,
    pub entries: u64,
    pub head_seq: i64,
    pub head_hash: String,
    /// The audit key the trail is sealed with.
    pub key_fingerprint: String,
    /// The first problem, if any.
    pub problem: Option<String>,
    pub problems: Vec<String>,
    /// Repairs recorded in the trail: what each acknowledged.
    pub repairs: Vec<String>,
    /// Where verification started when the trail was pruned.
    pub pruned: Option<PrunedFrom>,
}

/// The prune checkpoint a verification started from.
#[derive(Clone, Debug, Serialize)]
pub struct PrunedFrom {
    /// The last removed entry.
    pub seq: i64,
    pub hash: String,
    pub pruned_at: String,
    pub by: String,
    /// Entries at or below it still kept (under hold, or holds and exceptions in force).
    pub kept_below: u64,
}

/// Verifies the trail from `from` (a checkpoint an earlier verification returned) when
/// given, else whole; returns the outcome and the checkpoint the next one may resume from
/// (none when a problem was found). `entries` counts the entries checked.
pub fn verify_since(
    loaded: &Loaded,
    from: Option<&Checkpoint>,
) -> Result<(VerifyOutcome, Option<Checkpoint>)> {
    let mut state = open_state(loaded, Access::Read)?;
    let r = match from {
        Some(c) => match state.verify_since(c)? {
            Some(r) => r,
            None => state.verify(&crate::registry::Registry)?,
        },
        None => state.verify(&crate::registry::Registry)?,
    };
    let checkpoint = r.checkpoint.clone();
    Ok((
        VerifyOutcome {
            ok: r.problem.is_none(),
            entries: r.entries,
            head_seq: r.head_seq,
            head_hash: r.head_hash,
            key_fingerprint: state.key.fingerprint(),
            problem: r.problem,
            problems: r.problems,
            repairs: r.repairs,
            pruned: r.pruned.map(|c| PrunedFrom {
                seq: c.seq,
                hash: c.hash,
                pruned_at: c.pruned_at,
                by: c.by,
                kept_below: c.kept_count,
            }),
        },
        checkpoint,
    ))
}

/// Recomputes the hash chain and checks its seal. A broken trail is an outcome (`ok`
/// false), not an error.
pub fn verify(loaded: &Loaded) -> Result<VerifyOutcome> {
    Ok(verify_since(loaded, None)?.0)
}

/// Which entries to look up: an item (target and key), a whole target, a data subject, a
/// run or request, or any of them together; none of them is the whole trail, and a key
/// alone that key in any target.
#[derive(Clone, Debug)]
pub struct LogQuery {
    pub target: Option<String>,
    /// An item's key: with `target` only.
    pub key: Option<String>,
    /// A data subject, as the targets hold it (matched by its keyed hash).
    pub subject: Option<String>,
    /// A run or request id.
    pub run: Option<String>,
    /// At most this many entries, the newest.
    pub limit: usize,
}

/// The entries a query found, oldest first.
#[derive(Clone, Debug, Serialize)]
pub struct LogPage {
    /// The newest `limit` of them.
    pub entries: Vec<Entry>,
    /// How many matched in all.
    pub total: u64,
}

/// Looks entries up in the trail.
pub fn log(loaded: &Loaded, q: &LogQuery) -> Result<LogPage> {
    let mut state = open_state(loaded, Access::Read)?;
    if let Some(s) = &q.subject
        && s.is_empty()
    {
        return Err(Error::usage("--subject must not be empty"));
    }
    let filter = Filter {
        target: q.target.clone(),
        key: q.key.clone(),
        subject_hash: q.subject.as_ref().map(|s| state.key.subject_hash(s)),
        run_id: q.run.clone(),
    };
    let mut entries = VecDeque::new();
    let mut total = 0u64;
    state.entries(&filter, |e| {
        total += 1;
        if entries.len() == q.limit {
            entries.pop_front();
        }
        entries.push_back(e);
        Ok(())
    })?;
    Ok(LogPage {
        entries: entries.into(),
        total,
    })
}

/// How the whole trail is exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrailFormat {
    /// One JSON document per entry, per line.
    Jsonl,
    /// A header, then one row per entry.
    Csv,
}

/// The CSV export's header: the columns of [`csv_row`].
pub const CSV_HEADER: &str = "seq,decided_at,run_id,action,target,item_key,category,reason,window,expires_at,subject_hash,detail,prev_hash,hash";

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One entry as a CSV row (RFC 4180 quoting), in the columns of [`CSV_HEADER`].
pub fn csv_row(e: &Entry) -> String {
    let b = &e.body;
    [
        e.seq.to_string(),
        b.decided_at.clone(),
        b.run_id.clone(),
        b.action.as_str().into(),
        b.target.clone(),
        b.item_key.clone(),
        b.category.clone(),
        b.reason.clone(),
        b.window.clone(),
        b.expires_at.clone().unwrap_or_default(),
        b.subject_hash.clone().unwrap_or_default(),
        b.detail.clone(),
        e.prev_hash.clone(),
        e.hash.clone(),
    ]
    .iter()
    .map(|f| csv_field(f))
    .collect::<Vec<_>>()
    .join(",")
}

/// Writes the whole trail, as it is read; returns how many entries were written.
pub fn export_trail(loaded: &Loaded, format: TrailFormat, to: Destination<'_>) -> Result<u64> {
    let mut state = open_state(loaded, Access::Read)?;
    let mut w = to.open()?;
    let mut n = 0u64;
    if format == TrailFormat::Csv {
        writeln!(w, "{CSV_HEADER}")?;
    }
    state.entries(&Filter::default(), |e| {
        n += 1;
        match format {
            TrailFormat::Jsonl => {
                serde_json::to_writer(&mut w, &e)?;
                writeln!(w)?;
            }
            TrailFormat::Csv => writeln!(w, "{}", csv_row(&e))?,
        }
        Ok(())
    })?;
    w.flush()?;
    Ok(n)
}

/// Who repairs the trail, and why it may be extended again.
#[derive(Clone, Debug)]
pub struct RepairRequest {
    /// What was found, who decided: recorded in the trail.
    pub reason: String,
    /// Who is repairing [default: the OS user].
    pub by: Option<String>,
}

/// What a repair recorded.
#[derive(Clone, Debug, Serialize)]
pub struct RepairOutcome {
    /// The repair's id in the trail.
    pub run_id: String,
    /// What was recorded; `None` when the trail verified and nothing was written.
    pub record: Option<RepairRecord>,
}

/// Records a break of the trail in the trail and seals it as found, so that writing
/// operations run again (verify keeps showing what was broken). Runs on a broken trail: its
/// head is not checked.
pub fn repair(loaded: &Loaded, req: &RepairRequest) -> Result<RepairOutcome> {
    let mut state = open_unchecked(loaded, Access::Write)?;
    if req.reason.trim().is_empty() {
        return Err(Error::usage(
            "--reason must say why the trail may be extended again",
        ));
    }
    let by = crate::registry::actor(req.by.as_deref());
    let run_id = crate::state::new_id("repair")?;
    let record = state.repair(&crate::registry::Registry, &by, &req.reason, &run_id)?;
    Ok(RepairOutcome { run_id, record })
}

/// What `lethe audit prune` removed (or would remove).
#[derive(Clone, Debug, Serialize)]
pub struct PruneOutcome {
    pub dry_run: bool,
    /// `[audit] retention`.
    pub retention: String,
    /// Entries decided before this were past it.
    pub cutoff: String,
    pub removed: u64,
    /// Entries past the window kept: about items under hold, or holds and exceptions in
    /// force.
    pub kept: u64,
    /// The checkpoint the trail now starts from (the last removed entry).
    pub checkpoint_seq: Option<i64>,
    pub checkpoint_hash: Option<String>,
}

/// The trail's own retention: removes the entries older than `[audit] retention`, except
/// those about items under hold and those recording holds and exceptions in force, leaving
/// a signed checkpoint that `audit verify` starts from. `dry_run` only counts.
pub fn prune(loaded: &Loaded, dry_run: bool, by: Option<&str>) -> Result<PruneOutcome> {
    let Some(retention) = loaded.config.audit.retention else {
        return Err(Error::usage(
            "[audit] retention is not set: the trail is kept whole; set it (e.g. \"2555d\") to prune entries older than that",
        ));
    };
    let now = crate::util::now();
    let cutoff = now
        .checked_sub(retention)
        .ok_or_else(|| Error::usage("[audit] retention reaches before the start of time"))?;
    if retention < loaded.config.erasure.deadline {
        return Err(Error::usage(format!(
            "[audit] retention ({retention}) is shorter than [erasure] deadline ({}): a request's evidence would be pruned before its deadline; set a retention of at least the deadline",
            loaded.config.erasure.deadline
        )));
    }
    let mut state = open_state(loaded, if dry_run { Access::Read } else { Access::Write })?;
    // Only a trail that verifies whole is pruned: what it keeps and what its new checkpoint
    // vouches for are read from it, and a prune must never launder a break into a trail
    // that verifies (or drop a hold a forged entry released).
    let checked = state.verify(&crate::registry::Registry)?;
    if let Some(problem) = checked.problem {
        return Err(crate::state::TrailBroken(format!(
            "{problem}; a trail is pruned only where it verifies whole"
        ))
        .into());
    }
    let by = crate::registry::actor(by);
    let run_id = crate::state::new_id("prune")?;
    let r = state.prune(cutoff, &by, &run_id, dry_run)?;
    Ok(PruneOutcome {
        dry_run,
        retention: retention.to_string(),
        cutoff: r.cutoff,
        removed: r.removed,
        kept: r.kept,
        checkpoint_seq: r.checkpoint.as_ref().map(|c| c.seq),
        checkpoint_hash: r.checkpoint.map(|c| c.hash),
    })
}

/// The deployment's public key (hex), for `lethe audit public-key` and receipt verifiers.
pub fn public_key(loaded: &Loaded) -> Result<String> {
    let state = open_state(loaded, Access::Read)?;
    state.public_key().ok_or_else(|| {
        Error::usage(
            "this state has no signing key yet: it was made before trails were signed; any writing command (e.g. `lethe sweep`) makes one",
        )
    })
}

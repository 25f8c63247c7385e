//! What people read: sweep summaries and audit entries as aligned tables, or JSON.

use std::path::Path;

use anyhow::Result;
use lethe_core::audit::Entry;
use lethe_core::config::ConfigError;
use serde::Serialize;

use lethe_ops::engine::SweepReport;
use lethe_ops::ops::Destination;

/// Set once a JSON document has been printed: `--json` prints one document, so an error
/// after it is told on stderr only.
static PRINTED_JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Where a command writes a document: the file `out` names, else stdout, which the caller
/// holds locked while the document is written.
pub fn destination<'a>(
    out: Option<&'a Path>,
    stdout: &'a mut std::io::StdoutLock<'static>,
) -> Destination<'a> {
    match out {
        Some(p) => Destination::File(p),
        None => Destination::Writer(stdout),
    }
}

pub fn json<T: Serialize>(v: &T) -> Result<()> {
    use std::io::Write;
    let s = serde_json::to_string_pretty(v)?;
    let mut out = std::io::stdout().lock();
    PRINTED_JSON.store(true, std::sync::atomic::Ordering::SeqCst);
    writeln!(out, "{s}")?;
    Ok(())
}

/// The one document `--json` prints for an error: `{"error": "...", "exit": N}`, with
/// `problems` (each with its key and line, when known) for a config that was refused.
pub fn json_error(message: &str, exit: u8, problems: &[ConfigError]) {
    if PRINTED_JSON.load(std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let mut doc = serde_json::json!({ "error": message, "exit": exit });
    if !problems.is_empty() {
        doc["problems"] = problems
            .iter()
            .map(|p| serde_json::json!({ "key": p.key, "line": p.line, "message": p.message }))
            .collect();
    }
    // Nothing more can be said if stdout is gone; the message is on stderr.
    let _ = json(&doc);
}

/// The width of each column, in characters.
fn widths(rows: &[Vec<String>]) -> Vec<usize> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect()
}

/// Left-aligns the first column and right-aligns the rest.
fn table(rows: &[Vec<String>]) -> String {
    let widths = widths(rows);
    let mut out = String::new();
    for r in rows {
        let mut line = String::from("  ");
        for (c, cell) in r.iter().enumerate() {
            let pad = widths[c].saturating_sub(cell.chars().count());
            if c == 0 {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str("  ");
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// How a run's summary is headed and which command applies it.
pub struct Heading {
    pub title: String,
    pub apply: String,
}

impl Heading {
    pub fn sweep(r: &SweepReport, config: &Path) -> Heading {
        Heading {
            title: format!("Sweep {}", r.run_id),
            apply: format!("lethe sweep --apply --config {}", config.display()),
        }
    }
}

pub fn sweep(r: &SweepReport, h: &Heading) {
    let mode = if r.dry_run {
        "dry run: nothing was changed"
    } else {
        "applied"
    };
    outln!("{} ({mode}), judged at {}", h.title, r.decided_at);
    let del = if r.dry_run { "would delete" } else { "deleted" };
    let files = if r.dry_run {
        "files to remove"
    } else {
        "files removed"
    };
    // Redactions get a column of their own only where a target redacts.
    let redacts = r.targets.iter().any(|t| t.redacted > 0 || t.redact_due > 0);
    let mut head = vec![
        "target".to_string(),
        "due".into(),
        del.into(),
        "held".into(),
        files.into(),
        "failed".into(),
    ];
    if redacts {
        head.insert(
            3,
            if r.dry_run {
                "would redact"
            } else {
                "redacted"
            }
            .into(),
        );
    }
    let mut rows = vec![head];
    for t in &r.targets {
        let (d, red, f) = if r.dry_run {
            (
                (t.found - t.held - t.failed).saturating_sub(t.redact_due),
                t.redact_due,
                t.files_due,
            )
        } else {
            (t.deleted, t.redacted, t.files_removed)
        };
        let mut row = vec![
            t.target.clone(),
            t.found.to_string(),
            d.to_string(),
            t.held.to_string(),
            f.to_string(),
            t.failed.to_string(),
        ];
        if redacts {
            row.insert(3, red.to_string());
        }
        rows.push(row);
    }
    outln!("{}", table(&rows).trim_end_matches('\n'));
    for t in &r.targets {
        if let Some(e) = &t.error {
            outln!("\n{}: {e}", t.target);
        }
        for g in &t.guard {
            outln!("\n{}: guard: {g}", t.target);
        }
        for n in &t.notes {
            outln!("\n{}: {n}", t.target);
        }
        if let Some(u) = t.untagged.filter(|&u| u > 0) {
            outln!(
                "\n{}: {u} items untagged (lacking a [tags] required entry; vendor files: no expiry of their own)",
                t.target
            );
        }
        if t.in_use > 0 {
            outln!(
                "\n{}: {} items past expiry kept: in use by work still running (a batch or fine-tuning job); judged again next run",
                t.target,
                t.in_use
            );
        }
        if let Some(n) = t.retries.filter(|&n| n > 0) {
            outln!("\n{}: {n} requests retried", t.target);
        }
        if r.dry_run && !t.due_sample.is_empty() {
            let more =
                (t.found - t.held - t.failed - t.in_use).saturating_sub(t.due_sample.len() as u64);
            outln!(
                "\n{} would {} keys: {}{}",
                t.target,
                if t.redact_due > 0 {
                    "delete or redact"
                } else {
                    "delete"
                },
                t.due_sample.join(", "),
                if more > 0 {
                    format!(" … and {more} more")
                } else {
                    String::new()
                }
            );
        }
        if !t.failures.is_empty() {
            outln!(
                "\n{}: {} item(s) not {}:",
                t.target,
                t.failed,
                if t.redacted > 0 || t.redact_due > 0 {
                    "deleted or redacted"
                } else {
                    "deleted"
                }
            );
            for (k, why) in &t.failures {
                outln!("  key {k}: {why}");
            }
            if t.failed > t.failures.len() as u64 {
                outln!(
                    "  … see all: lethe audit log --target {} --run {}",
                    t.target,
                    r.run_id
                );
            }
        }
    }
    if r.dry_run {
        let due: u64 = r.targets.iter().map(|t| t.found - t.held - t.failed).sum();
        if due > 0 {
            outln!("\nTo delete them: {}", h.apply);
        } else {
            outln!("\nNothing is due.");
        }
    }
}

pub fn entries(entries: &[Entry], total: u64) {
    if entries.is_empty() {
        outln!("no audit entries match");
        return;
    }
    let mut rows = vec![vec![
        "seq".to_string(),
        "decided at".into(),
        "action".into(),
        "target".into(),
        "key".into(),
        "reason".into(),
        "window".into(),
        "expires at".into(),
        "run".into(),
        "detail".into(),
    ]];
    for e in entries {
        let b = &e.body;
        rows.push(vec![
            e.seq.to_string(),
            b.decided_at.clone(),
            b.action.as_str().into(),
            b.target.clone(),
            b.item_key.clone(),
            b.reason.clone(),
            b.window.clone(),
            b.expires_at.clone().unwrap_or_default(),
            b.run_id.clone(),
            b.detail.clone(),
        ]);
    }
    // The table's first column is left-aligned; seq reads fine either way.
    outln!("{}", table(&rows).trim_end_matches('\n'));
    if total > entries.len() as u64 {
        outln!(
            "({} older entries not shown; use --limit or audit export)",
            total - entries.len() as u64
        );
    }
}

/// Prints rows as a left-aligned table, first row the header.
pub fn print_table(rows: &[Vec<String>]) {
    let widths = widths(rows);
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, cell)| format!("{cell:<w$}", w = widths[c]))
            .collect();
        outln!("  {}", line.join("  ").trim_end());
    }
}

/// `lethe plan`: per target, the window last applied and the config's, and what the change
/// newly makes due (and no longer), with a few keys.
pub fn plan(r: &lethe_ops::ops::PlanReport, config: &Path) {
    outln!(
        "Plan for {} against the policies last applied (judged at {}; [guard] max_new_due {})",
        config.display(),
        r.at,
        r.max_new_due
    );
    let mut rows = vec![vec![
        "target".to_string(),
        "applied".into(),
        "config".into(),
        "items".into(),
        "newly due".into(),
        "no longer due".into(),
        "limit".into(),
        "".into(),
    ]];
    for t in &r.targets {
        let verdict = if t.error.is_some() {
            "CANNOT JUDGE"
        } else if t.over_limit {
            "OVER THE LIMIT"
        } else if t.applied.is_none() {
            "first apply records it"
        } else if t.changed {
            "changed, within the limit"
        } else {
            "unchanged"
        };
        let judged = t.changed && t.applied.is_some() && t.error.is_none();
        let count = |n: u64| if judged { n.to_string() } else { "-".into() };
        rows.push(vec![
            t.target.clone(),
            t.applied.clone().unwrap_or_else(|| "(none)".into()),
            t.window.clone(),
            t.items.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
            count(t.newly_due),
            count(t.no_longer_due),
            t.allowance
                .map(|n| format!("{n} ({})", t.limit))
                .unwrap_or_else(|| t.limit.clone()),
            verdict.into(),
        ]);
    }
    outln!("{}", table(&rows).trim_end_matches('\n'));
    for t in &r.targets {
        if let Some(e) = &t.error {
            outln!("\n{}: {e}", t.target);
        }
        if let Some(why) = &t.reads_changed {
            outln!("\n{}: {why}", t.target);
        }
        for (what, n, sample) in [
            ("newly due", t.newly_due, &t.newly_due_sample),
            ("no longer due", t.no_longer_due, &t.no_longer_due_sample),
        ] {
            if !sample.is_empty() {
                let more = n.saturating_sub(sample.len() as u64);
                outln!(
                    "\n{} {what}, keys: {}{}",
                    t.target,
                    sample.join(", "),
                    if more > 0 {
                        format!(" … and {more} more")
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
    match &r.accepted {
        Some(targets) if targets.is_empty() => {
            outln!("\nNothing to accept: every target's policy is the one last applied.")
        }
        Some(targets) => outln!(
            "\nAccepted: the config's policy is recorded as applied on {} (trail: lethe audit log --run {}).",
            targets.join(", "),
            r.accept_id.as_deref().unwrap_or("?")
        ),
        None if r.over_limit => outln!(
            "\nAn apply deletes nothing on the targets over the limit until the change is accepted: \
             lethe plan --accept --reason \"...\" (or lethe sweep --apply --allow-large for one run). \
             Erasure requests are not held back."
        ),
        None => outln!("\nWithin the limit: an apply goes on and records the config's policy."),
    }
}

//! Commands for people rather than schedules: erasure and access requests, legal holds and
//! the exception register. Each calls its operation in lethe-ops and prints what it returns.

use std::process::ExitCode;

use anyhow::Result;
use lethe_core::time::Timestamp;

use crate::{EraseArgs, EraseCommand, ExceptionCommand, HoldCommand, ReceiptCommand, output};
use lethe_ops::ops::erase::{NEAR_DEADLINE_DAYS, days_to_deadline, is_closed};
use lethe_ops::ops::{self, exception, hold};
use lethe_ops::registry::{HoldRecord, Request};
use lethe_ops::settings::Loaded;
use lethe_ops::util::now;

/// An id on stdout (or as `{"id": ...}`), and what it means on stderr.
fn json_id(id: &str, json: bool, what: &str) -> Result<()> {
    if json {
        output::json(&serde_json::json!({ "id": id }))
    } else {
        outln!("{id}");
        eprintln!("{what}");
        Ok(())
    }
}

pub fn erase(loaded: &Loaded, args: &EraseArgs, json: bool) -> Result<ExitCode> {
    match &args.command {
        Some(EraseCommand::Status {
            id,
            receipt: true,
            output,
        }) => return erase_receipt(loaded, id, output.as_deref()),
        Some(EraseCommand::Status { id, .. }) => return erase_status(loaded, id, json),
        Some(EraseCommand::List) => return erase_list(loaded, json),
        None => {}
    }
    let subject = args.subject.as_deref().ok_or_else(|| {
        lethe_ops::Error::usage("say whose data: lethe erase --subject ID [--apply]")
    })?;
    let e = ops::erase(
        loaded,
        &ops::EraseRequest {
            subject: subject.to_string(),
            apply: args.apply,
            progress: true,
            by: None,
        },
    )?;
    let (req, report, status) = (&e.request, &e.report, &e.status);
    let held = e.held();
    if json {
        output::json(&serde_json::json!({
            "request_id": req.id,
            "dry_run": report.dry_run,
            "status": status,
            "deadline": req.deadline,
            "targets": report.targets,
            "warning": e.warning,
        }))?;
    } else {
        let heading = output::Heading {
            title: format!(
                "Erasure request {} ({status}; received {}, deadline {})",
                req.id, req.received_at, req.deadline
            ),
            apply: format!(
                "lethe erase --subject ID --apply --config {}",
                loaded.path.display()
            ),
        };
        output::sweep(report, &heading);
        if held > 0 {
            outln!(
                "{held} item(s) withheld under legal hold (GDPR Art. 17(3)(e)); see `lethe hold list`"
            );
        }
        if let Some(w) = &e.warning {
            outln!("warning: {w}");
        }
    }
    Ok(
        if report.has_failures() || (!report.dry_run && status == "failed") {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        },
    )
}

fn deadline_note(r: &Request, now: Timestamp) -> String {
    let Some(days) = days_to_deadline(r, now) else {
        return String::new();
    };
    if days < 0.0 {
        format!("OVERDUE by {:.0} day(s)", -days.floor())
    } else if days <= NEAR_DEADLINE_DAYS as f64 {
        format!("due in {:.1} day(s)", days)
    } else {
        format!("due in {:.0} days", days.floor())
    }
}

/// `lethe erase status ID --receipt [-o FILE]`: the signed receipt, as JSON (it is JSON
/// with or without `--json`).
fn erase_receipt(loaded: &Loaded, id: &str, out: Option<&std::path::Path>) -> Result<ExitCode> {
    let r = ops::erase::receipt(loaded, id)?;
    let text = r.to_text();
    match out {
        Some(path) => {
            std::fs::write(path, &text)
                .map_err(|e| anyhow::anyhow!("Failed to write {}: {e}", path.display()))?;
            eprintln!(
                "wrote the receipt of request {id} to {} (check it with `lethe receipt verify {} --public-key KEY`; `lethe audit public-key` prints KEY)",
                path.display(),
                path.display()
            );
        }
        None => {
            use std::io::Write as _;
            let _ = write!(std::io::stdout(), "{text}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `lethe receipt verify FILE [--public-key K]`: offline, no config. Exit 0 valid, 1 not,
/// 2 unreadable.
pub fn receipt(cmd: &ReceiptCommand, json: bool) -> Result<ExitCode> {
    use lethe_core::receipt::Receipt;
    let ReceiptCommand::Verify { file, public_key } = cmd;
    let text = std::fs::read_to_string(file).map_err(|e| {
        lethe_ops::Error::usage(format!("cannot read receipt {}: {e}", file.display()))
    })?;
    let key = match public_key.as_deref().map(str::trim) {
        None => None,
        Some(k) if k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit()) => Some(k.to_string()),
        Some(k) => Some(
            std::fs::read_to_string(k)
                .map(|s| s.trim().to_string())
                .map_err(|e| {
                    lethe_ops::Error::usage(format!(
                        "--public-key {k:?} is neither 64 hex digits nor a readable file: {e}"
                    ))
                })?,
        ),
    };
    let (r, outcome) = Receipt::check_text(&text, key.as_deref())
        .map_err(|e| lethe_ops::Error::usage(format!("{}: {e}", file.display())))?;
    if json {
        output::json(&match &outcome {
            Ok(v) => serde_json::json!({
                "ok": true, "request": r.request.id, "public_key": v.public_key,
                "key_given": v.key_given, "entries": v.entries, "head_seq": r.head.seq,
                "problems": [],
            }),
            Err(ps) => serde_json::json!({
                "ok": false, "request": r.request.id, "problems": ps,
            }),
        })?;
        return Ok(if outcome.is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    match outcome {
        Ok(v) => {
            outln!(
                "receipt of erasure request {} verifies: {} trail entries through signed head #{}, signature by public key {}",
                r.request.id,
                v.entries,
                r.head.seq,
                v.public_key
            );
            if v.key_given {
                outln!("  the key is the one given (--public-key)");
            } else {
                outln!(
                    "  the key is the receipt's own: this shows the receipt is whole, not who made it; pass --public-key with the deployment's key (`lethe audit public-key`)"
                );
            }
            for t in &r.targets {
                outln!(
                    "  {:<20} deleted {}  withheld: held {}, excepted {}, failed {}, in use {}",
                    t.target,
                    t.deleted,
                    t.withheld.held,
                    t.withheld.excepted,
                    t.withheld.failed,
                    t.withheld.in_use
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            outln!("receipt of request {} does NOT verify:", r.request.id);
            for p in problems {
                outln!("  - {p}");
            }
            Ok(ExitCode::from(1))
        }
    }
}

fn erase_status(loaded: &Loaded, id: &str, json: bool) -> Result<ExitCode> {
    let receipt = ops::erase::status(loaded, id)?;
    if json {
        output::json(&serde_json::to_value(&receipt)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let (req, entries) = (&receipt.request, &receipt.entries);
    outln!("{} request {}", req.kind, req.id);
    outln!("  subject (keyed hash)  {}", req.subject_hash);
    outln!("  received              {}", req.received_at);
    outln!(
        "  deadline              {}{}",
        req.deadline,
        if is_closed(req) {
            String::new()
        } else {
            format!(" ({})", deadline_note(req, now()))
        }
    );
    outln!("  status                {}", req.status);
    outln!("  updated               {}", req.updated_at);
    if let Some(targets) = req.counts.as_array() {
        for t in targets {
            outln!(
                "  {:<20}  found {}  deleted {}{}  withheld {}  files removed {}  failed {}",
                t["target"].as_str().unwrap_or("?"),
                t["found"],
                t["deleted"],
                t["redacted"]
                    .as_u64()
                    .map(|n| format!("  redacted {n}"))
                    .unwrap_or_default(),
                t["held"],
                t["files_removed"],
                t["failed"]
            );
        }
    }
    outln!("\nAudit entries of this request ({}):", entries.len());
    output::entries(entries, entries.len() as u64);
    Ok(ExitCode::SUCCESS)
}

fn erase_list(loaded: &Loaded, json: bool) -> Result<ExitCode> {
    let open = ops::erase::open_requests(loaded)?;
    let now = now();
    if json {
        output::json(&open)?;
        return Ok(ExitCode::SUCCESS);
    }
    if open.is_empty() {
        outln!("no open erasure requests");
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![vec![
        "request".to_string(),
        "status".into(),
        "received".into(),
        "deadline".into(),
        "".into(),
    ]];
    for r in &open {
        rows.push(vec![
            r.id.clone(),
            r.status.clone(),
            r.received_at.clone(),
            r.deadline.clone(),
            deadline_note(r, now),
        ]);
    }
    output::print_table(&rows);
    Ok(ExitCode::SUCCESS)
}

/// Art. 15: every item of a subject, per target, as one JSON document, on stdout or in a file.
pub fn export(loaded: &Loaded, subject: &str, out: Option<&std::path::Path>) -> Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    let x = ops::export(loaded, subject, output::destination(out, &mut stdout))?;
    if let Some(p) = out {
        eprintln!(
            "access export {} written to {}: {}",
            x.request_id,
            p.display(),
            serde_json::to_value(&x.targets)?
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn hold(loaded: &Loaded, cmd: &HoldCommand, json: bool) -> Result<ExitCode> {
    match cmd {
        HoldCommand::Add {
            subject,
            target,
            key,
            case_id,
            reason,
            by,
        } => hold_add(
            loaded,
            &hold::HoldRequest {
                subject: subject.clone(),
                target: target.clone(),
                key: key.clone(),
                case_id: case_id.clone(),
                reason: reason.clone(),
                by: by.clone(),
            },
            json,
        )?,
        HoldCommand::List => hold_list(loaded, json)?,
        HoldCommand::Release { id, reason, by } => hold_release(
            loaded,
            &hold::HoldRelease {
                id: id.clone(),
                reason: reason.clone(),
                by: by.clone(),
            },
            json,
        )?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `lethe hold add`: the hold's id, and a warning when it matches nothing yet.
fn hold_add(loaded: &Loaded, req: &hold::HoldRequest, json: bool) -> Result<()> {
    let placed = hold::place(loaded, req)?;
    let id = &placed.id;
    match &placed.warning {
        None => json_id(
            id,
            json,
            "hold placed; it stays until released with `lethe hold release`",
        ),
        Some(warning) => {
            if json {
                let doc = match &placed.deletion_begun {
                    Some(run) => {
                        serde_json::json!({ "id": id, "warning": warning, "deletion_begun": run })
                    }
                    None => serde_json::json!({ "id": id, "matched": 0, "warning": warning }),
                };
                output::json(&doc)
            } else {
                outln!("{id}");
                eprintln!("warning: {warning}");
                eprintln!("hold placed; it stays until released with `lethe hold release`");
                Ok(())
            }
        }
    }
}

/// `lethe hold list`: every hold, active or released, as a table.
fn hold_list(loaded: &Loaded, json: bool) -> Result<()> {
    let holds = hold::list(loaded)?;
    if json {
        return output::json(&holds);
    }
    if holds.is_empty() {
        outln!("no holds");
        return Ok(());
    }
    let mut rows = vec![vec![
        "hold".to_string(),
        "on".into(),
        "case".into(),
        "reason".into(),
        "placed".into(),
        "status".into(),
    ]];
    rows.extend(holds.into_iter().map(hold_row));
    output::print_table(&rows);
    Ok(())
}

/// One hold as a row of `lethe hold list`.
fn hold_row(h: HoldRecord) -> Vec<String> {
    let on = match h.scope.as_str() {
        "subject" => format!(
            "subject {}…",
            h.subject_hash
                .as_deref()
                .unwrap_or("")
                .get(..12)
                .unwrap_or("")
        ),
        "item" => format!(
            "{} key {}",
            h.target.unwrap_or_default(),
            h.item_key.unwrap_or_default()
        ),
        _ => format!("target {}", h.target.unwrap_or_default()),
    };
    let status = match &h.released_at {
        Some(at) => format!(
            "released {at} by {}: {}",
            h.released_by.unwrap_or_default(),
            h.release_reason.unwrap_or_default()
        ),
        None => "active".into(),
    };
    vec![
        h.id,
        on,
        h.case_id,
        h.reason,
        format!("{} by {}", h.placed_at, h.placed_by),
        status,
    ]
}

/// `lethe hold release`.
fn hold_release(loaded: &Loaded, req: &hold::HoldRelease, json: bool) -> Result<()> {
    hold::release(loaded, req)?;
    let id = &req.id;
    if json {
        output::json(&serde_json::json!({ "id": id, "released": true }))
    } else {
        outln!("hold {id} released");
        Ok(())
    }
}

pub fn exception(loaded: &Loaded, cmd: &ExceptionCommand, json: bool) -> Result<ExitCode> {
    match cmd {
        ExceptionCommand::Add {
            target,
            key,
            until,
            owner,
            reason,
            by,
        } => {
            let g = exception::grant(
                loaded,
                &exception::ExceptionRequest {
                    target: target.clone(),
                    key: key.clone(),
                    until: until.clone(),
                    owner: owner.clone(),
                    reason: reason.clone(),
                    by: by.clone(),
                },
            )?;
            json_id(
                &g.id,
                json,
                &format!(
                    "exception granted: item {} of {} is kept until {}",
                    g.key, g.target, g.until
                ),
            )?;
        }
        ExceptionCommand::List => {
            let list = exception::list(loaded)?;
            if json {
                output::json(&list)?;
            } else if list.is_empty() {
                outln!("no exceptions");
            } else {
                let mut rows = vec![vec![
                    "exception".to_string(),
                    "item".into(),
                    "until".into(),
                    "item expires".into(),
                    "owner".into(),
                    "reason".into(),
                    "status".into(),
                ]];
                for x in list {
                    rows.push(vec![
                        x.id,
                        format!("{} key {}", x.target, x.item_key),
                        x.until,
                        x.item_expires_at,
                        x.owner,
                        x.reason,
                        x.status,
                    ]);
                }
                output::print_table(&rows);
            }
        }
        ExceptionCommand::Revoke { id, reason, by } => {
            exception::revoke(
                loaded,
                &exception::Revocation {
                    id: id.clone(),
                    reason: reason.clone(),
                    by: by.clone(),
                },
            )?;
            if json {
                output::json(&serde_json::json!({ "id": id, "revoked": true }))?;
            } else {
                outln!("exception {id} revoked");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

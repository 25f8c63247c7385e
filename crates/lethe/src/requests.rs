//! Commands for people rather than schedules: erasure and access requests, legal holds and
//! the exception register.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use lethe_core::config::{Target, TargetKind};
use lethe_core::expiry::{self, Facts};
use lethe_core::time::{Duration, Timestamp};

use crate::commands::{open_state, preflight};
use crate::{EraseArgs, EraseCommand, ExceptionCommand, HoldCommand, output};
use lethe_ops::engine::{self, Job, SweepOptions};
use lethe_ops::files::Roots;
use lethe_ops::registry::{self, NewException, NewHold};
use lethe_ops::settings::Loaded;
use lethe_ops::state::{Access, Filter, State};
use lethe_ops::targets::{Key, Lookup, Row, answers, open_source};
use lethe_ops::util::{UsageError, now};

/// Days before a deadline at which `erase list` starts flagging a request.
const NEAR_DEADLINE_DAYS: i64 = 7;

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

fn subject_arg(s: &str) -> Result<&str> {
    if s.trim().is_empty() {
        return Err(usage("--subject must not be empty"));
    }
    Ok(s)
}

/// The targets that map a subject (a column, or an object metadata entry): the ones
/// erasure, export and subject holds reach.
fn subject_targets(loaded: &Loaded) -> Result<Vec<&Target>> {
    let t: Vec<&Target> = loaded
        .config
        .targets
        .iter()
        .filter(|t| match &t.kind {
            TargetKind::Sql(s) => s.subject.is_some(),
            TargetKind::ObjectStore(o) => o.subject.is_some(),
            _ => false,
        })
        .collect();
    if t.is_empty() {
        return Err(usage(format!(
            "no target in {} maps a subject: set `subject = \"COLUMN\"` on the targets that hold personal data",
            loaded.path.display()
        )));
    }
    Ok(t)
}

/// `None` when some target holds an item of `subject`; otherwise what to tell the person
/// placing a hold on it (naming any target that could not be read).
fn subject_matches(loaded: &Loaded, subject: &str) -> Result<Option<String>> {
    let mut unread = Vec::new();
    let Ok(targets) = subject_targets(loaded) else {
        return Ok(Some(format!(
            "no target in {} maps a subject, so no item of {subject:?} can be found or protected until one does (`subject = \"COLUMN\"`); the hold is placed all the same",
            loaded.path.display()
        )));
    };
    for t in &targets {
        let found = match open_source(t, &loaded.base, false) {
            Some(Ok(mut table)) => table.of_subject(subject, 1).map(|rows| !rows.is_empty()),
            Some(Err(e)) => Err(e),
            None => continue,
        };
        match found {
            Ok(true) => return Ok(None),
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
    Ok(Some(warning))
}

fn target<'a>(loaded: &'a Loaded, name: &str) -> Result<&'a Target> {
    loaded.config.target(name).ok_or_else(|| {
        let known: Vec<&str> = loaded
            .config
            .targets
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        usage(format!(
            "--target {name}: no such target (targets: {})",
            known.join(", ")
        ))
    })
}

/// The item of a target with this key, read-only; an unknown key is bad usage.
fn find_item(loaded: &Loaded, t: &Target, key: &str) -> Result<Row> {
    let Some(source) = open_source(t, &loaded.base, false) else {
        return Err(usage(format!(
            "target {} is of type {}; items cannot be named in it yet",
            t.name,
            t.kind.type_name()
        )));
    };
    let mut table = source?;
    let keys = Key::readings(key);
    let shown: Vec<String> = keys.iter().map(Key::to_string).collect();
    let looked = answers("lookup", &keys, table.lookup(&keys)?)?;
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
        Some(why) => Err(anyhow::anyhow!(
            "target {}: the item with key {key:?} could not be looked up: {why}",
            t.name
        )),
        None => Err(usage(format!(
            "target {} has no item with key {key:?}",
            t.name
        ))),
    }
}

/// `--until`: a date means through the end of that day (UTC); a time means that instant.
fn parse_until(s: &str) -> Result<Timestamp> {
    let t = Timestamp::parse(s).map_err(|e| usage(format!("--until: {e}")))?;
    if s.trim().len() == 10 {
        return t
            .checked_add(Duration::from_days(1))
            .ok_or_else(|| usage("--until is out of range"));
    }
    Ok(t)
}

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
        Some(EraseCommand::Status { id }) => return erase_status(loaded, id, json),
        Some(EraseCommand::List) => return erase_list(loaded, json),
        None => {}
    }
    let subject = subject_arg(
        args.subject
            .as_deref()
            .ok_or_else(|| usage("say whose data: lethe erase --subject ID [--apply]"))?,
    )?;
    let targets = subject_targets(loaded)?;
    preflight(loaded, &targets, args.apply)?;
    let now = now();
    let mut state = open_state(loaded, Access::Write)?;
    crate::commands::refuse_dropped_pending(&state, loaded)?;
    let hash = state.key.subject_hash(subject);
    let req = match registry::open_request(&mut state, &hash)? {
        Some(r) => r,
        None => registry::new_request(
            &mut state,
            "erasure",
            &hash,
            loaded.config.erasure.deadline,
            now,
        )?,
    };
    let job = Job::Erasure {
        subject: subject.to_string(),
        request_id: req.id.clone(),
    };
    let opts = SweepOptions {
        apply: args.apply,
        batch: engine::DEFAULT_BATCH,
        rows_per_commit: engine::DEFAULT_ROWS_PER_COMMIT,
        progress: true,
    };
    let report = engine::sweep(&mut state, &targets, &loaded.base, now, &job, &opts)?;
    let held: u64 = report.targets.iter().map(|t| t.held).sum();
    let status = if !args.apply {
        "previewed"
    } else if report.has_failures() {
        "failed"
    } else if held > 0 {
        "completed_with_items_withheld"
    } else {
        "completed"
    };
    let counts = serde_json::to_value(&report.targets)?;
    registry::finish_request(&mut state, &req, status, &counts, now)?;
    if json {
        output::json(&serde_json::json!({
            "request_id": req.id,
            "dry_run": report.dry_run,
            "status": status,
            "deadline": req.deadline,
            "targets": counts,
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
        output::sweep(&report, &heading);
        if held > 0 {
            outln!(
                "{held} item(s) withheld under legal hold (GDPR Art. 17(3)(e)); see `lethe hold list`"
            );
        }
    }
    Ok(if report.has_failures() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn deadline_note(deadline: &str, now: Timestamp) -> String {
    let Ok(d) = Timestamp::parse(deadline) else {
        return String::new();
    };
    let days = (d.as_micros() - now.as_micros()) as f64 / 86_400e6;
    if days < 0.0 {
        format!("OVERDUE by {:.0} day(s)", -days.floor())
    } else if days <= NEAR_DEADLINE_DAYS as f64 {
        format!("due in {:.1} day(s)", days)
    } else {
        format!("due in {:.0} days", days.floor())
    }
}

fn erase_status(loaded: &Loaded, id: &str, json: bool) -> Result<ExitCode> {
    let mut state = open_state(loaded, Access::Read)?;
    let req = registry::request(&mut state, id)?
        .ok_or_else(|| usage(format!("no request {id} (see `lethe erase list`)")))?;
    let mut entries = Vec::new();
    state.entries(
        &Filter {
            run_id: Some(id.to_string()),
            ..Default::default()
        },
        |e| {
            entries.push(e);
            Ok(())
        },
    )?;
    if json {
        output::json(&serde_json::json!({ "request": req, "entries": entries }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let open = !req.status.starts_with("completed");
    outln!("{} request {}", req.kind, req.id);
    outln!("  subject (keyed hash)  {}", req.subject_hash);
    outln!("  received              {}", req.received_at);
    outln!(
        "  deadline              {}{}",
        req.deadline,
        if open {
            format!(" ({})", deadline_note(&req.deadline, now()))
        } else {
            String::new()
        }
    );
    outln!("  status                {}", req.status);
    outln!("  updated               {}", req.updated_at);
    if let Some(targets) = req.counts.as_array() {
        for t in targets {
            outln!(
                "  {:<20}  found {}  deleted {}  withheld {}  files removed {}  failed {}",
                t["target"].as_str().unwrap_or("?"),
                t["found"],
                t["deleted"],
                t["held"],
                t["files_removed"],
                t["failed"]
            );
        }
    }
    outln!("\nAudit entries of this request ({}):", entries.len());
    output::entries(&entries, entries.len() as u64);
    Ok(ExitCode::SUCCESS)
}

fn erase_list(loaded: &Loaded, json: bool) -> Result<ExitCode> {
    let mut state = open_state(loaded, Access::Read)?;
    let now = now();
    let open: Vec<_> = registry::requests(&mut state)?
        .into_iter()
        .filter(|r| r.kind == "erasure" && !r.status.starts_with("completed"))
        .collect();
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
            deadline_note(&r.deadline, now),
        ]);
    }
    output::print_table(&rows);
    Ok(ExitCode::SUCCESS)
}

/// Art. 15: every item of a subject, per target, as one JSON document, written as it is read.
pub fn export(loaded: &Loaded, subject: &str, out: Option<&std::path::Path>) -> Result<ExitCode> {
    let subject = subject_arg(subject)?;
    let targets = subject_targets(loaded)?;
    preflight(loaded, &targets, false)?;
    let now = now();
    let mut state = open_state(loaded, Access::Write)?;
    let hash = state.key.subject_hash(subject);
    let req = registry::new_request(
        &mut state,
        "access",
        &hash,
        loaded.config.erasure.deadline,
        now,
    )?;
    let mut w: Box<dyn Write> = match out {
        Some(p) => Box::new(std::io::BufWriter::new(
            lethe_ops::util::create_private(p)
                .with_context(|| format!("Failed to create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let s = |v: &str| serde_json::to_string(v).unwrap_or_default();
    write!(
        w,
        "{{\"request_id\":{},\"subject\":{},\"generated_at\":{},\"targets\":[",
        s(&req.id),
        s(subject),
        s(&now.to_rfc3339())
    )?;
    let mut counts = Vec::new();
    for (ti, t) in targets.iter().enumerate() {
        // (subject column, file column and key column when rows own files, roots)
        let (subj_col, owned, file_roots) = match &t.kind {
            TargetKind::Sql(sql) => (
                &sql.subject,
                sql.file.as_ref().map(|f| (f, &sql.key)),
                sql.file_roots.as_slice(),
            ),
            TargetKind::ObjectStore(o) => (&o.subject, None, &[][..]),
            _ => continue,
        };
        let Some(subj_col) = subj_col else {
            continue;
        };
        let mut table = match open_source(t, &loaded.base, false) {
            Some(table) => table?,
            None => continue,
        };
        let roots = Roots::new("file_roots", file_roots, &loaded.base);
        if ti > 0 {
            write!(w, ",")?;
        }
        write!(w, "{{\"target\":{},\"items\":[", s(&t.name))?;
        let mut n = 0u64;
        let mut files = Vec::new();
        table.export_subject(subj_col, subject, &mut |row| {
            if n > 0 {
                write!(w, ",")?;
            }
            n += 1;
            if let Some((fcol, kcol)) = owned
                && let Some(serde_json::Value::String(p)) = row.get(fcol)
                && !p.is_empty()
            {
                let parts: Vec<serde_json::Value> = kcol
                    .iter()
                    .map(|k| row.get(k).cloned().unwrap_or(serde_json::Value::Null))
                    .collect();
                let key = match <[serde_json::Value; 1]>::try_from(parts) {
                    Ok([one]) => one,
                    Err(parts) => serde_json::Value::Array(parts),
                };
                files.push((key, p.clone()));
            }
            serde_json::to_writer(&mut w, &row)?;
            Ok(())
        })?;
        write!(w, "],\"files\":[")?;
        for (i, (key, path)) in files.iter().enumerate() {
            let entry = match roots.place(path).and_then(|f| roots.digest(&f)) {
                Ok(Some((size, sha))) => {
                    serde_json::json!({"key": key, "path": path, "size": size, "sha256": sha})
                }
                Ok(None) => serde_json::json!({"key": key, "path": path, "missing": true}),
                Err(e) => serde_json::json!({"key": key, "path": path, "not_read": e}),
            };
            if i > 0 {
                write!(w, ",")?;
            }
            serde_json::to_writer(&mut w, &entry)?;
        }
        write!(w, "]}}")?;
        counts.push(serde_json::json!({"target": t.name, "items": n, "files": files.len()}));
    }
    writeln!(w, "]}}")?;
    w.flush()?;
    drop(w);
    let counts = serde_json::Value::Array(counts);
    registry::finish_request(&mut state, &req, "completed", &counts, now)?;
    if let Some(p) = out {
        eprintln!(
            "access export {} written to {}: {counts}",
            req.id,
            p.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn hold(loaded: &Loaded, cmd: &HoldCommand, json: bool) -> Result<ExitCode> {
    let now = now();
    match cmd {
        HoldCommand::Add {
            subject,
            target: tname,
            key,
            case_id,
            reason,
            by,
        } => {
            if case_id.trim().is_empty() || reason.trim().is_empty() {
                return Err(usage("--case and --reason must not be empty"));
            }
            if subject.is_some() && tname.is_some() {
                return Err(usage(
                    "a hold is on --subject, or on --target (with or without --key), not both",
                ));
            }
            // The hold names the item as the target names it (a composite key in one
            // spelling), so that the sweep's lookup finds it.
            let mut item_key = key.clone();
            if let Some(name) = tname {
                let t = target(loaded, name)?;
                if let Some(k) = key {
                    let row = find_item(loaded, t, k)?;
                    item_key = row.key.ok().map(|k| k.to_string()).or(item_key);
                }
            }
            let subject = subject.as_deref().map(subject_arg).transpose()?;
            if subject.is_none() && tname.is_none() {
                return Err(usage(
                    "say what to hold: --subject ID, --target NAME --key KEY, or --target NAME",
                ));
            }
            // A subject hold is placed whether or not the subject has items today (it
            // protects what appears later), but the placer is told when it matches nothing:
            // a typo in the subject would otherwise protect nobody, silently.
            let unmatched = match subject {
                Some(s) => subject_matches(loaded, s)?,
                None => None,
            };
            let mut state = open_state(loaded, Access::Write)?;
            let subject_hash = subject.map(|s| state.key.subject_hash(s));
            let id = registry::place_hold(
                &mut state,
                NewHold {
                    target: tname.as_deref(),
                    key: item_key.as_deref(),
                    subject_hash,
                    case_id,
                    reason,
                    by: registry::actor(by.as_deref()),
                },
                now,
                || match (tname, key) {
                    (Some(name), Some(k)) => {
                        find_item(loaded, target(loaded, name)?, k).map(|_| ())
                    }
                    _ => Ok(()),
                },
            )?;
            match unmatched {
                None => json_id(
                    &id,
                    json,
                    "hold placed; it stays until released with `lethe hold release`",
                )?,
                Some(warning) => {
                    if json {
                        output::json(
                            &serde_json::json!({ "id": id, "matched": 0, "warning": warning }),
                        )?;
                    } else {
                        outln!("{id}");
                        eprintln!("warning: {warning}");
                        eprintln!("hold placed; it stays until released with `lethe hold release`");
                    }
                }
            }
        }
        HoldCommand::List => {
            let mut state = open_state(loaded, Access::Read)?;
            let holds = registry::holds(&mut state)?;
            if json {
                output::json(&holds)?;
            } else if holds.is_empty() {
                outln!("no holds");
            } else {
                let mut rows = vec![vec![
                    "hold".to_string(),
                    "on".into(),
                    "case".into(),
                    "reason".into(),
                    "placed".into(),
                    "status".into(),
                ]];
                for h in holds {
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
                    rows.push(vec![
                        h.id,
                        on,
                        h.case_id,
                        h.reason,
                        format!("{} by {}", h.placed_at, h.placed_by),
                        status,
                    ]);
                }
                output::print_table(&rows);
            }
        }
        HoldCommand::Release { id, reason, by } => {
            if reason.trim().is_empty() {
                return Err(usage(
                    "--reason must not be empty: a release needs a reason",
                ));
            }
            let mut state = open_state(loaded, Access::Write)?;
            registry::release_hold(&mut state, id, reason, registry::actor(by.as_deref()), now)?;
            if json {
                output::json(&serde_json::json!({ "id": id, "released": true }))?;
            } else {
                outln!("hold {id} released");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn exception(loaded: &Loaded, cmd: &ExceptionCommand, json: bool) -> Result<ExitCode> {
    let now = now();
    match cmd {
        ExceptionCommand::Add {
            target: tname,
            key,
            until,
            owner,
            reason,
            by,
        } => {
            if owner.trim().is_empty() || reason.trim().is_empty() {
                return Err(usage("--owner and --reason must not be empty"));
            }
            let until = parse_until(until)?;
            if until <= now {
                return Err(usage(format!("--until {until} is in the past")));
            }
            let t = target(loaded, tname)?;
            let row = find_item(loaded, t, key)?;
            let item_key = match &row.key {
                Ok(k) => k.to_string(),
                Err(_) => key.to_string(),
            };
            let key = item_key.as_str();
            let (created_at_format, expires_at_format) = engine::formats(t);
            let facts = Facts {
                created_at: row.created_at.raw(),
                expires_at: Some(row.expires_at.raw()),
                retention_days: Some(row.retention_days.raw()),
                created_at_format: created_at_format.as_ref(),
                expires_at_format: expires_at_format.as_ref(),
            };
            let (item_expires_at, _) = expiry::expiry(&t.window, &facts).map_err(|e| {
                usage(format!(
                    "item {key} of {}: its expiry cannot be determined ({e})",
                    t.name
                ))
            })?;
            let mut state = open_state(loaded, Access::Write)?;
            let ex = &loaded.config.exceptions;
            let id = registry::grant_exception(
                &mut state,
                NewException {
                    target: &t.name,
                    category: &t.category,
                    key,
                    until,
                    item_expires_at,
                    owner,
                    reason,
                    by: registry::actor(by.as_deref()),
                },
                ex.max_extension,
                ex.max_renewals,
                now,
            )?;
            json_id(
                &id,
                json,
                &format!(
                    "exception granted: item {key} of {} is kept until {until}",
                    t.name
                ),
            )?;
        }
        ExceptionCommand::List => {
            let mut state = open_state(loaded, Access::Read)?;
            let list = registry::exceptions(&mut state, now)?;
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
            let mut state: State = open_state(loaded, Access::Write)?;
            registry::revoke_exception(
                &mut state,
                id,
                reason,
                registry::actor(by.as_deref()),
                now,
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

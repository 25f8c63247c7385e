//! One function per command: build the operation's request from the arguments, call
//! lethe-ops, print the result (a table, or JSON with `--json`), and choose the exit status.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use lethe_core::config::DEFAULT_CONFIG;

use crate::{
    AlertsCommand, AlertsFormat, AuditCommand, Cli, CloudFormat, Command, ExportFormat,
    LifecycleCommand, LogFormatArg, ReportArgs, ReportFormat, output,
};
use lethe_ops::ops;
use lethe_ops::settings::{self, Loaded};

pub fn run(cli: Cli) -> Result<ExitCode> {
    let load = || settings::load(cli.config.as_deref());
    let json = cli.json;
    match &cli.command {
        Command::DefaultConfig => {
            use std::io::Write as _;
            let _ = write!(std::io::stdout(), "{DEFAULT_CONFIG}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { dir } => demo(dir, json),
        Command::Init => init(&load()?, json),
        Command::Check => check(&load()?, json),
        Command::Sweep(args) => {
            let loaded = load()?;
            if let Some(run) = &args.cancel {
                let c = ops::sweep::cancel(&loaded, run, args.by.as_deref())?;
                if json {
                    output::json(&c)?;
                } else {
                    for (t, n) in &c.targets {
                        outln!("{t}: {n} scheduled deletion(s) of run {run} cancelled");
                    }
                    outln!(
                        "those items are not deleted by that schedule; a later run may find them due and schedule them again"
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            let report = ops::sweep(
                &loaded,
                &ops::SweepRequest {
                    apply: args.apply,
                    targets: args.targets.clone(),
                    batch_size: args.batch_size as usize,
                    rows_per_commit: args.rows_per_commit as usize,
                    progress: !args.no_progress,
                    allow_large: args.allow_large,
                    by: args.by.clone(),
                    ..Default::default()
                },
            )?;
            if json {
                output::json(&report)?;
            } else {
                output::sweep(&report, &output::Heading::sweep(&report, &loaded.path));
            }
            Ok(exit_for(report.has_failures()))
        }
        Command::Plan(args) => plan(&load()?, args, json),
        Command::Erase(args) => crate::requests::erase(&load()?, args, json),
        Command::Export { subject, output } => {
            crate::requests::export(&load()?, subject, output.as_deref())
        }
        Command::Report(args) => report(&load()?, args, json),
        Command::Hold { command } => crate::requests::hold(&load()?, command, json),
        Command::Exception { command } => crate::requests::exception(&load()?, command, json),
        Command::Alerts {
            command: AlertsCommand::Export { format },
        } => {
            use std::io::Write as _;
            match format {
                AlertsFormat::Prometheus => {
                    let _ = write!(std::io::stdout(), "{}", lethe_serve::ALERT_RULES);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { listen, log_format } => {
            let loaded = load()?;
            lethe_serve::serve(
                loaded,
                lethe_serve::ServeOptions {
                    listen: *listen,
                    log_format: match log_format {
                        LogFormatArg::Text => lethe_serve::LogFormat::Text,
                        LogFormatArg::Json => lethe_serve::LogFormat::Json,
                    },
                },
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Lifecycle {
            command: LifecycleCommand::Export { target, format },
        } => {
            let loaded = load()?;
            let cloud = match format {
                CloudFormat::S3 => lethe_core::lifecycle::Cloud::S3,
                CloudFormat::Azure => lethe_core::lifecycle::Cloud::Azure,
                CloudFormat::Gcs => lethe_core::lifecycle::Cloud::Gcs,
            };
            let p = ops::lifecycle::policy(&loaded, target, cloud)?;
            eprintln!("warning: {}", p.caveat);
            output::json(&p.policy)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { command } => audit(&load()?, command, json),
        Command::Receipt { command } => crate::requests::receipt(command, json),
    }
}

/// `lethe plan`: exit 1 when a target would newly lose more than the limit (and nothing
/// was accepted), else 0.
fn plan(loaded: &Loaded, args: &crate::PlanArgs, json: bool) -> Result<ExitCode> {
    let r = ops::plan(
        loaded,
        &ops::PlanRequest {
            targets: args.targets.clone(),
            accept: args.accept,
            reason: args.reason.clone(),
            by: args.by.clone(),
        },
    )?;
    if json {
        output::json(&r)?;
    } else {
        output::plan(&r, &loaded.path);
    }
    Ok(exit_for(r.over_limit && r.accepted.is_none()))
}

/// Exit 1 when something failed while the command ran, else 0.
fn exit_for(failed: bool) -> ExitCode {
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// `lethe init`: makes the state and its key, and starts the trail with its creation entry.
fn init(loaded: &Loaded, json: bool) -> Result<ExitCode> {
    let r = ops::init(loaded)?;
    if json {
        output::json(&serde_json::json!({
            "state": r.location,
            "created": r.created,
            "key_fingerprint": r.key_fingerprint,
        }))?;
    } else if r.created {
        outln!(
            "created the state at {} (audit key {})",
            r.location,
            r.key_fingerprint
        );
    } else {
        outln!(
            "the state at {} already exists; nothing was changed",
            r.location
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `lethe check`: exit 2 when the config does not fit its targets, as for any refused config.
fn check(loaded: &Loaded, json: bool) -> Result<ExitCode> {
    let report = ops::check(loaded)?;
    let c = &loaded.config;
    if json {
        let mut doc = serde_json::to_value(&report)?;
        if !report.ok {
            // Exit 2, as for any refused config: an `error` says so to a script.
            doc["error"] = "the config does not fit its targets: see each target's problems".into();
            doc["exit"] = 2.into();
        }
        output::json(&doc)?;
    } else {
        outln!(
            "config {}: valid ({} categories, {} targets)",
            loaded.path.display(),
            c.categories.len(),
            c.targets.len()
        );
        // The report has the config's targets, in its order.
        for (t, found) in c.targets.iter().zip(&report.targets) {
            let status = if found.ok { "ok" } else { "FAILED" };
            let mut line = format!(
                "target {} ({}, window {}{}): {status}",
                t.name,
                t.type_name,
                t.window.retention,
                t.window
                    .max
                    .map(|m| format!(", max {m}"))
                    .unwrap_or_default()
            );
            if let (Some(r), Some(d), Some(u)) = (found.rows, found.past_expiry, found.unreadable) {
                let items = lethe_ops::targets::kind_of(t).items();
                line.push_str(&format!(
                    " — {r} {items}, {d} past expiry, {u} with unreadable timestamps"
                ));
            }
            if let Some(u) = found.untagged {
                line.push_str(&format!(
                    "; tag coverage: {u} untagged ({})",
                    lethe_ops::targets::kind_of(t).untagged_means()
                ));
            }
            if let Some(o) = &found.oldest {
                line.push_str(&format!("; oldest past expiry: {o}"));
            }
            for p in &found.problems {
                line.push_str(&format!("\n    line {}: targets.{}: {p}", t.line, t.name));
            }
            for w in &found.warnings {
                line.push_str(&format!("\n    warning: {w}"));
            }
            outln!("{line}");
        }
        outln!("nothing was changed");
    }
    // A config that does not fit its targets is bad config: exit 2, as for sweep.
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn audit(loaded: &Loaded, cmd: &AuditCommand, json: bool) -> Result<ExitCode> {
    match cmd {
        AuditCommand::Repair { reason, by } => audit_repair(
            loaded,
            &ops::RepairRequest {
                reason: reason.clone(),
                by: by.clone(),
            },
            json,
        ),
        AuditCommand::Verify => audit_verify(loaded, json),
        AuditCommand::Prune { dry_run, by } => audit_prune(loaded, *dry_run, by.as_deref(), json),
        AuditCommand::PublicKey => {
            let pk = ops::public_key(loaded)?;
            if json {
                output::json(&serde_json::json!({ "public_key": pk }))?;
            } else {
                outln!("{pk}");
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Log {
            target,
            key,
            subject,
            run,
            limit,
        } => audit_log(
            loaded,
            &ops::LogQuery {
                target: target.clone(),
                key: key.clone(),
                subject: subject.clone(),
                run: run.clone(),
                limit: *limit,
            },
            json,
        ),
        AuditCommand::Export {
            format,
            output: out,
        } => audit_export(loaded, *format, out.as_deref()),
        AuditCommand::Reconcile { target, sample } => audit_reconcile(
            loaded,
            &lethe_ops::ops::reconcile::ReconcileRequest {
                target: target.clone(),
                sample: *sample,
            },
            json,
        ),
    }
}

/// `lethe audit reconcile`: each target's figures, each mismatch by target and key, and
/// the success rate; exit 1 unless everything checked matched and was answered.
fn audit_reconcile(
    loaded: &Loaded,
    req: &lethe_ops::ops::reconcile::ReconcileRequest,
    json: bool,
) -> Result<ExitCode> {
    let r = lethe_ops::ops::reconcile::reconcile(loaded, req)?;
    if json {
        output::json(&serde_json::to_value(&r)?)?;
        return Ok(exit_for(!r.is_clean()));
    }
    for t in &r.targets {
        match &t.error {
            Some(e) => outln!("target {}: not reconciled: {e}", t.target),
            None => outln!(
                "target {}: {}/{} recorded deletions absent ({} recreated since under the same key), {}/{} items past expiry known to the trail ({} not swept since they expired){}",
                t.target,
                t.deleted_absent,
                t.deleted_checked,
                t.recreated,
                t.due_known,
                t.due_checked,
                t.due_unswept,
                if t.unanswered > 0 {
                    format!(", {} lookups the store could not answer", t.unanswered)
                } else {
                    String::new()
                }
            ),
        }
    }
    for m in &r.mismatches {
        outln!("MISMATCH {} {}: {}", m.target, m.key, m.what);
    }
    outln!(
        "reconciliation: {} of {} checked matched ({:.2}%), at {}",
        r.matched,
        r.checked,
        r.success_rate * 100.0,
        r.at
    );
    Ok(exit_for(!r.is_clean()))
}

/// `lethe audit repair`: the break recorded and sealed as found, or nothing to repair.
fn audit_repair(loaded: &Loaded, req: &ops::RepairRequest, json: bool) -> Result<ExitCode> {
    let r = ops::repair(loaded, req)?;
    if json {
        output::json(&serde_json::json!({
            "repaired": r.record.is_some(),
            "record": r.record,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    match &r.record {
        None => outln!("the trail verifies: nothing to repair, nothing was written"),
        Some(record) => {
            outln!(
                "recorded the break in the trail (repair {}) and sealed it as found:",
                r.run_id
            );
            for p in record.problems.iter().chain(record.seal_problem.iter()) {
                outln!("  - {p}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `lethe audit prune`: the trail's own retention.
fn audit_prune(loaded: &Loaded, dry_run: bool, by: Option<&str>, json: bool) -> Result<ExitCode> {
    let r = ops::prune(loaded, dry_run, by)?;
    if json {
        output::json(&r)?;
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    outln!(
        "{verb} {} entries decided before {} ([audit] retention {}); kept {} older entries (items under hold, holds and exceptions in force)",
        r.removed,
        r.cutoff,
        r.retention,
        r.kept
    );
    if let (Some(seq), Some(hash)) = (r.checkpoint_seq, &r.checkpoint_hash) {
        outln!("the trail now starts from a signed checkpoint at entry {seq} ({hash})");
    }
    Ok(ExitCode::SUCCESS)
}

/// `lethe audit verify`: fails unless the trail is intact.
fn audit_verify(loaded: &Loaded, json: bool) -> Result<ExitCode> {
    let r = ops::verify(loaded)?;
    if json {
        output::json(&serde_json::to_value(&r)?)?;
        return Ok(exit_for(!r.ok));
    }
    if let Some(p) = &r.pruned {
        outln!(
            "verified from checkpoint at entry {} (pruned {} by {}; {} older entries kept under hold or in force)",
            p.seq,
            p.pruned_at,
            p.by,
            p.kept_below
        );
    }
    if r.problems.is_empty() {
        outln!(
            "audit trail intact: {} entries, head #{} {}, sealed with key {}",
            r.entries,
            r.head_seq,
            r.head_hash,
            r.key_fingerprint
        );
    } else {
        outln!("audit trail BROKEN:");
        for p in &r.problems {
            outln!("  - {p}");
        }
    }
    for rep in &r.repairs {
        outln!("recorded repair, {rep}");
    }
    Ok(exit_for(!r.ok))
}

/// `lethe audit log`: the entries a query selects. Someone at a terminal says what to look
/// up (the whole trail is `lethe audit export`), and a key goes with its target.
fn audit_log(loaded: &Loaded, q: &ops::LogQuery, json: bool) -> Result<ExitCode> {
    if q.target.is_none() && q.subject.is_none() && q.run.is_none() {
        return Err(lethe_ops::Error::usage(
            "say what to look up: --target NAME [--key KEY], --subject ID or --run ID",
        )
        .into());
    }
    if q.key.is_some() && q.target.is_none() {
        return Err(lethe_ops::Error::usage("--key needs --target").into());
    }
    let page = ops::log(loaded, q)?;
    if json {
        output::json(&page.entries)?;
    } else {
        output::entries(&page.entries, page.total);
    }
    Ok(ExitCode::SUCCESS)
}

/// `lethe audit export`: the whole trail, on stdout or in a file.
fn audit_export(loaded: &Loaded, format: ExportFormat, out: Option<&Path>) -> Result<ExitCode> {
    let format = match format {
        ExportFormat::Jsonl => ops::TrailFormat::Jsonl,
        ExportFormat::Csv => ops::TrailFormat::Csv,
    };
    let mut stdout = std::io::stdout().lock();
    let n = ops::export_trail(loaded, format, output::destination(out, &mut stdout))?;
    if let Some(p) = out {
        eprintln!("wrote {n} entries to {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `lethe demo`: builds the demo and shows its dry run.
fn demo(dir: &Path, json: bool) -> Result<ExitCode> {
    let run = ops::demo::run(dir)?;
    if json {
        output::json(&run.report)?;
        return Ok(ExitCode::SUCCESS);
    }
    let shown: PathBuf = pathdiff(&run.config);
    outln!(
        "Built a demo in {}: an SQLite database shaped like an AI app (inference_logs, \
         training_records), dataset files under datasets/, and lethe.toml.\n",
        run.dir.display()
    );
    output::sweep(&run.report, &output::Heading::sweep(&run.report, &shown));
    outln!(
        "\nThe failed items are deliberate: a timestamp nobody can read, a file outside \
         file_roots, a symbolic link out of them and a directory. Lethe reports them and never \
         deletes them on a guess.\n\
         Next: lethe check --config {c}\n      lethe audit verify --config {c}\n      lethe report --config {c}",
        c = shown.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The config path as the user would type it: relative to the working directory when inside it.
fn pathdiff(p: &Path) -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| p.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| p.to_path_buf())
}

/// `lethe report`: computed once, written in the format asked for, to stdout or a file.
/// Exit 0 whatever the KPIs say (the report says it); 2 when it cannot be made.
fn report(loaded: &Loaded, args: &ReportArgs, json: bool) -> Result<ExitCode> {
    use ops::report::{html, render};
    let r = ops::report::report(
        loaded,
        &ops::report::ReportRequest {
            month: args.month.clone(),
            since: args.since.clone(),
            until: args.until.clone(),
            reconcile_sample: Some(args.reconcile_sample),
        },
    )?;
    let format = if json {
        ReportFormat::Json
    } else {
        args.format
    };
    let text = match format {
        ReportFormat::Text => render::text(&r),
        ReportFormat::Json => serde_json::to_string_pretty(&r)? + "\n",
        ReportFormat::Md => render::markdown(&r),
        ReportFormat::Csv => render::csv(&r)?,
        ReportFormat::Html => html::page(&r),
    };
    match &args.output {
        Some(path) => write_whole(path, text.as_bytes())?,
        None => {
            use std::io::Write as _;
            let _ = std::io::stdout().write_all(text.as_bytes());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes a file whole: to a temporary file beside it, then renamed into place, so that a
/// reader (a web server publishing the dashboard) never sees half a page.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .map_err(|e| {
            // A path that cannot be written is bad input: nothing was written (exit 2).
            lethe_ops::Error::usage(format!("cannot write {}: {e}", path.display())).into()
        })
}

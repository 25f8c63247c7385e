//! One function per command: load what it needs, act, print, and choose the exit status.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use lethe_core::config::{DEFAULT_CONFIG, Target, TargetKind};

use crate::{AuditCommand, Cli, Command, ExportFormat, SweepArgs, output, requests};
use lethe_ops::engine::{self, Job, SweepOptions};
use lethe_ops::settings::{self, Loaded};
use lethe_ops::state::{Access, Filter, State};
use lethe_ops::targets::{open_source, roots_for};
use lethe_ops::util::{UsageError, now};

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::DefaultConfig => {
            use std::io::Write as _;
            let _ = write!(std::io::stdout(), "{DEFAULT_CONFIG}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { ref dir } => crate::demo::run(dir, cli.json),
        Command::Init => init(&settings::load(cli.config.as_deref())?, cli.json),
        Command::Check => check(&settings::load(cli.config.as_deref())?, cli.json),
        Command::Sweep(ref args) => {
            let loaded = settings::load(cli.config.as_deref())?;
            let report = sweep(&loaded, args)?;
            if cli.json {
                output::json(&report)?;
            } else {
                output::sweep(&report, &output::Heading::sweep(&report, &loaded.path));
            }
            Ok(if report.has_failures() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Erase(ref args) => {
            requests::erase(&settings::load(cli.config.as_deref())?, args, cli.json)
        }
        Command::Export {
            ref subject,
            ref output,
        } => requests::export(
            &settings::load(cli.config.as_deref())?,
            subject,
            output.as_deref(),
        ),
        Command::Hold { ref command } => {
            requests::hold(&settings::load(cli.config.as_deref())?, command, cli.json)
        }
        Command::Exception { ref command } => {
            requests::exception(&settings::load(cli.config.as_deref())?, command, cli.json)
        }
        Command::Lifecycle {
            command: crate::LifecycleCommand::Export { ref target, format },
        } => {
            let loaded = settings::load(cli.config.as_deref())?;
            let t = loaded.config.target(target).ok_or_else(|| {
                UsageError(format!(
                    "--target {target}: no such target in {}",
                    loaded.path.display()
                ))
            })?;
            let cloud = match format {
                crate::CloudFormat::S3 => lethe_core::lifecycle::Cloud::S3,
                crate::CloudFormat::Azure => lethe_core::lifecycle::Cloud::Azure,
                crate::CloudFormat::Gcs => lethe_core::lifecycle::Cloud::Gcs,
            };
            let policy = lethe_core::lifecycle::render(t, cloud).map_err(UsageError)?;
            eprintln!("warning: {}", lethe_core::lifecycle::CAVEAT);
            output::json(&policy)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { ref command } => {
            let loaded = settings::load(cli.config.as_deref())?;
            audit(&loaded, command, cli.json)
        }
    }
}

/// Opens the config's state. A command that writes checks first that the trail may be
/// extended (its head is the sealed head): a cut or rewritten trail stops it before it
/// touches anything.
pub fn open_state(loaded: &Loaded, access: Access) -> Result<State> {
    let c = &loaded.config;
    // Refused before the state is opened, which would create its tables in the target's
    // database.
    if let Some((t, why)) = state_in_targets(loaded).into_iter().next() {
        let problem = lethe_core::config::ConfigError {
            line: c.state.line,
            key: "state.url".into(),
            message: format!(
                "is the database of target {} (line {}), and Lethe's own state database must be no target's: {why}; nothing was touched",
                t.name, t.line
            ),
        };
        return Err(lethe_ops::util::ConfigProblems {
            message: format!("{}:{problem}", loaded.path.display()),
            problems: vec![problem],
        }
        .into());
    }
    let mut state = State::open(
        &c.state.url,
        c.state.password_env.as_deref(),
        &loaded.base,
        c.audit.key_env.as_deref(),
        access,
    )?;
    state.lease_ttl_secs = c.state.lease_ttl.as_secs().max(1);
    if access == Access::Write {
        state.check_head()?;
    }
    Ok(state)
}

/// Deletions in flight (written ahead, made or not, not yet in the trail) in a target the
/// config no longer has would never be recorded: such a config is refused (exit 2) until the
/// target is back, under any name (records are kept by the target's identity).
pub fn refuse_dropped_pending(state: &State, loaded: &Loaded) -> Result<()> {
    let mut store = state.pending_store()?;
    let known: Vec<(&str, String)> = loaded
        .config
        .targets
        .iter()
        .map(|t| {
            (
                t.name.as_str(),
                lethe_ops::targets::identity(t, &loaded.base),
            )
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
    Err(UsageError(format!(
        "{}: deletions were made or begun there and are not yet in the audit trail, but {} has no target at that place. Put the target back (under any name), run `lethe sweep --apply` so that they are recorded, then remove it",
        lost.join("; "),
        loaded.path.display()
    ))
    .into())
}

/// `lethe init`: makes the state and its key, and starts the trail with its creation entry.
fn init(loaded: &Loaded, json: bool) -> Result<ExitCode> {
    let (state, created) = init_state(loaded)?;
    if json {
        output::json(&serde_json::json!({
            "state": state.location,
            "created": created,
            "key_fingerprint": state.key.fingerprint(),
        }))?;
    } else if created {
        outln!(
            "created the state at {} (audit key {})",
            state.location,
            state.key.fingerprint()
        );
    } else {
        outln!(
            "the state at {} already exists; nothing was changed",
            state.location
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Makes the config's state if it does not exist (true), or checks the one there (false).
pub fn init_state(loaded: &Loaded) -> Result<(State, bool)> {
    let mut state = open_state(loaded, Access::Create)?;
    let created = if state.has_entries() {
        state.check_head()?;
        false
    } else {
        // An empty trail beside a state that was used is a trail whose entries were removed:
        // never started again as if new.
        let history = state.history()?;
        if !history.is_empty() {
            return Err(lethe_ops::state::TrailBroken(format!(
                "the trail at {} is empty, but the state was used before ({}): its entries were removed. `lethe audit verify` reports it; `lethe init` does not start it again",
                state.location,
                history.join(", ")
            ))
            .into());
        }
        let body = lethe_core::audit::Body {
            decided_at: now().to_rfc3339(),
            run_id: lethe_ops::state::new_id("init")?,
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

pub fn sweep(loaded: &Loaded, args: &SweepArgs) -> Result<engine::SweepReport> {
    let c = &loaded.config;
    let mut chosen = Vec::new();
    for name in &args.targets {
        match c.target(name) {
            Some(t) => chosen.push(t),
            None => {
                let known: Vec<&str> = c.targets.iter().map(|t| t.name.as_str()).collect();
                return Err(UsageError(format!(
                    "--target {name}: no such target in {} (targets: {})",
                    loaded.path.display(),
                    known.join(", ")
                ))
                .into());
            }
        }
    }
    if chosen.is_empty() {
        chosen = c.targets.iter().collect();
    }
    preflight(loaded, &chosen, args.apply)?;
    let now = now();
    let mut state = open_state(loaded, Access::Write)?;
    refuse_dropped_pending(&state, loaded)?;
    let opts = SweepOptions {
        apply: args.apply,
        batch: args.batch_size as usize,
        rows_per_commit: args.rows_per_commit as usize,
        progress: !args.no_progress,
    };
    engine::sweep(
        &mut state,
        &chosen,
        &loaded.base,
        now,
        &Job::Retention,
        &opts,
    )
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
        if let Some(source) = open_source(t, &loaded.base, write) {
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
    Err(UsageError(format!(
        "the config does not fit its targets; nothing was touched:\n  {}",
        problems.join("\n  ")
    ))
    .into())
}

/// What a target reaches, for finding two targets that reach the same place.
enum Place {
    /// A table, as its database names it whatever the URL's spelling, then the tables whose
    /// rows include its own.
    Table(Vec<String>),
    /// A directory tree, resolved.
    Tree(PathBuf),
    /// A bucket or container and a prefix in it, by segments.
    Prefix(String, Vec<String>),
}

fn place_of(loaded: &Loaded, t: &Target) -> Option<Place> {
    match &t.kind {
        TargetKind::Sql(_) => {
            let mut table = open_source(t, &loaded.base, false)?.ok()?;
            table.identity().ok().flatten().map(Place::Table)
        }
        TargetKind::Filesystem(f) => std::fs::canonicalize(loaded.base.join(&f.root))
            .ok()
            .map(Place::Tree),
        TargetKind::ObjectStore(o) => match o.url.strip_prefix("file://") {
            Some(p) => std::fs::canonicalize(loaded.base.join(p))
                .ok()
                .map(Place::Tree),
            None => {
                let (scheme, rest) = o.url.split_once("://")?;
                let mut segs = rest.split('/').filter(|s| !s.is_empty());
                let bucket = segs.next()?.to_string();
                let store: Vec<String> = o
                    .options
                    .iter()
                    .filter(|(k, _)| k.contains("endpoint") || k.contains("account"))
                    .map(|(k, v)| format!("{k}={}", v.trim_end_matches('/')))
                    .collect();
                Some(Place::Prefix(
                    format!("{scheme}://{bucket} {}", store.join(" ")),
                    segs.map(str::to_string).collect(),
                ))
            }
        },
        _ => None,
    }
}

/// Pairs of targets that reach the same table, or overlapping trees or prefixes: a hold or
/// exception placed through one would not protect the items the other deletes, so such a
/// config is refused. Each problem is given with the later target of the pair.
pub fn shared_places(loaded: &Loaded) -> Vec<(&Target, String)> {
    let places: Vec<(&Target, Place)> = loaded
        .config
        .targets
        .iter()
        .filter_map(|t| place_of(loaded, t).map(|p| (t, p)))
        .collect();
    let line = loaded
        .config
        .state
        .line
        .map(|l| format!(", line {l}"))
        .unwrap_or_default();
    let mut out: Vec<(&Target, String)> = state_in_targets(loaded)
        .into_iter()
        .map(|(t, why)| {
            (
                t,
                format!("reaches Lethe's own state database (state.url{line}): {why}"),
            )
        })
        .collect();
    for (i, (b, pb)) in places.iter().enumerate() {
        for (a, pa) in &places[..i] {
            let what = match (pa, pb) {
                (Place::Table(x), Place::Table(y))
                    if x.first().is_some_and(|t| y.contains(t))
                        || y.first().is_some_and(|t| x.contains(t)) =>
                {
                    Some(if x.first() == y.first() {
                        "the same table".to_string()
                    } else {
                        "a table and its partition or inheritance child".to_string()
                    })
                }
                (Place::Tree(x), Place::Tree(y)) if x.starts_with(y) || y.starts_with(x) => {
                    Some(format!(
                        "overlapping directories ({} and {})",
                        x.display(),
                        y.display()
                    ))
                }
                (Place::Prefix(sx, x), Place::Prefix(sy, y))
                    if sx == sy && (x.starts_with(y) || y.starts_with(x)) =>
                {
                    Some("overlapping prefixes of one bucket".to_string())
                }
                _ => None,
            };
            if let Some(what) = what {
                out.push((
                    *b,
                    format!(
                        "reaches {what} as target {}: holds and exceptions placed through one would not protect the items the other deletes; point one target at it, or remove the other",
                        a.name
                    ),
                ));
            }
        }
    }
    out
}

/// The SQL targets in Lethe's own state database (`[state] url`), each with why that is
/// refused. Found from the URLs and files alone, opening no database, so that every command
/// refuses such a config before the state is created in a target's database.
pub fn state_in_targets(loaded: &Loaded) -> Vec<(&Target, String)> {
    const WHY: &str = "keep the state in a database of its own (a sweep would wait on its own \
                       locks, or delete Lethe's own records)";
    let state = &loaded.config.state.url;
    let state_files: Vec<PathBuf> = lethe_ops::state::sqlite_path(state, &loaded.base)
        .map(|p| {
            // The state's own second database, beside it (state.rs, `<state>.pending`).
            let mut pending = p.clone().into_os_string();
            pending.push(".pending");
            vec![p, PathBuf::from(pending)]
        })
        .unwrap_or_default();
    let state_pg = pg_database(state);
    loaded
        .config
        .targets
        .iter()
        .filter(|t| {
            let TargetKind::Sql(s) = &t.kind else {
                return false;
            };
            match lethe_ops::state::sqlite_path(&s.url, &loaded.base) {
                Some(file) => state_files.iter().any(|st| same_file(st, &file)),
                None => state_pg
                    .as_ref()
                    .zip(pg_database(&s.url))
                    .is_some_and(|(a, b)| a.same_database(&b)),
            }
        })
        .map(|t| (t, WHY.to_string()))
        .collect()
}

/// Whether two paths name one file: the same inode when both exist (links, `..`, hard
/// links), else the same path once the directories that exist are resolved.
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
        return x.dev() == y.dev() && x.ino() == y.ino();
    }
    let resolve = |p: &std::path::Path| {
        std::fs::canonicalize(p)
            .ok()
            .or_else(|| {
                let dir = std::fs::canonicalize(p.parent()?).ok()?;
                Some(dir.join(p.file_name()?))
            })
            .unwrap_or_else(|| p.to_path_buf())
    };
    resolve(a) == resolve(b)
}

/// Where a PostgreSQL URL leads: its servers (host and port) and database.
struct PgDatabase {
    servers: Vec<(String, u16)>,
    dbname: String,
}

impl PgDatabase {
    fn same_database(&self, other: &PgDatabase) -> bool {
        self.dbname == other.dbname && self.servers.iter().any(|s| other.servers.contains(s))
    }
}

/// The servers and database a `postgres://` URL names, as written: the loopback names and
/// a local socket are one host (a server on this machine listens on both), the default port
/// is 5432 and the default database the user's name.
fn pg_database(url: &str) -> Option<PgDatabase> {
    use postgres::config::Host;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return None;
    }
    let c: postgres::Config = url.parse().ok()?;
    let local = "this machine".to_string();
    let mut hosts: Vec<String> = c
        .get_hostaddrs()
        .iter()
        .map(|a| {
            if a.is_loopback() {
                local.clone()
            } else {
                a.to_string()
            }
        })
        .collect();
    if hosts.is_empty() {
        hosts = c
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => {
                    let name = name.trim_matches(['[', ']']).to_ascii_lowercase();
                    let loopback = name == "localhost"
                        || name
                            .parse::<std::net::IpAddr>()
                            .is_ok_and(|ip| ip.is_loopback());
                    if loopback { local.clone() } else { name }
                }
                Host::Unix(_) => local.clone(),
            })
            .collect();
    }
    if hosts.is_empty() {
        hosts.push(local);
    }
    let ports = c.get_ports();
    let servers = hosts
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            let port = match ports {
                [] => 5432,
                [one] => *one,
                many => many.get(i).copied().unwrap_or(5432),
            };
            (h, port)
        })
        .collect();
    let dbname = c
        .get_dbname()
        .or(c.get_user())
        .unwrap_or_default()
        .to_string();
    Some(PgDatabase { servers, dbname })
}

fn check(loaded: &Loaded, json: bool) -> Result<ExitCode> {
    let c = &loaded.config;
    let now = now();
    let mut ok = true;
    let mut lines = Vec::new();
    let mut targets_json = Vec::new();
    let shared = shared_places(loaded);
    for t in &c.targets {
        let mut problems: Vec<String> = shared
            .iter()
            .filter(|(x, _)| std::ptr::eq(*x, t))
            .map(|(_, p)| p.clone())
            .collect();
        let mut warnings: Vec<String> = Vec::new();
        let mut facts = serde_json::Map::new();
        match open_source(t, &loaded.base, false) {
            Some(source) => match source {
                Err(e) => problems.push(format!("{e:#}")),
                Ok(mut table) => {
                    // One target that cannot be read is reported; the others are checked.
                    let mut reach = || -> Result<()> {
                        problems.extend(table.check_schema()?);
                        if problems.is_empty() {
                            warnings.extend(table.index_warnings()?);
                            let rows = table.count()?;
                            let (due, unreadable) = engine::count_due(table.as_mut(), t, now)?;
                            facts.insert("rows".into(), rows.into());
                            facts.insert("past_expiry".into(), due.into());
                            facts.insert("unreadable".into(), unreadable.into());
                            if let Some(u) = table.untagged() {
                                facts.insert("untagged".into(), u.into());
                            }
                        }
                        Ok(())
                    };
                    if let Err(e) = reach() {
                        problems.push(format!("{e:#}"));
                    }
                    for p in roots_for(t, &loaded.base).problems() {
                        if !problems.contains(&p) {
                            problems.push(p);
                        }
                    }
                }
            },
            None => problems.push(format!(
                "target type {} is not supported by this build yet",
                t.kind.type_name()
            )),
        }
        ok &= problems.is_empty();
        let status = if problems.is_empty() { "ok" } else { "FAILED" };
        let mut line = format!(
            "target {} ({}, window {}{}): {status}",
            t.name,
            t.kind.type_name(),
            t.window.retention,
            t.window
                .max
                .map(|m| format!(", max {m}"))
                .unwrap_or_default()
        );
        if let (Some(r), Some(d), Some(u)) = (
            facts.get("rows"),
            facts.get("past_expiry"),
            facts.get("unreadable"),
        ) {
            let items = match t.kind {
                TargetKind::Filesystem(_) => "files",
                TargetKind::ObjectStore(_) => "objects",
                _ => "rows",
            };
            line.push_str(&format!(
                " — {r} {items}, {d} past expiry, {u} with unreadable timestamps"
            ));
        }
        if let Some(u) = facts.get("untagged") {
            line.push_str(&format!(
                "; tag coverage: {u} untagged (lacking one of [tags] required)"
            ));
        }
        for p in &problems {
            line.push_str(&format!("\n    line {}: targets.{}: {p}", t.line, t.name));
        }
        for w in &warnings {
            line.push_str(&format!("\n    warning: {w}"));
        }
        facts.insert("warnings".into(), warnings.clone().into());
        lines.push(line);
        facts.insert("target".into(), t.name.clone().into());
        facts.insert("ok".into(), problems.is_empty().into());
        facts.insert("problems".into(), problems.into());
        targets_json.push(serde_json::Value::Object(facts));
    }
    if json {
        let mut doc = serde_json::json!({
            "config": loaded.path.display().to_string(),
            "ok": ok,
            "targets": targets_json,
        });
        if !ok {
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
        for l in lines {
            outln!("{l}");
        }
        outln!("nothing was changed");
    }
    // A config that does not fit its targets is bad config: exit 2, as for sweep.
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn audit(loaded: &Loaded, cmd: &AuditCommand, json: bool) -> Result<ExitCode> {
    let mut state = match cmd {
        // Repair is the one writing audit command, and it runs on a broken trail: its head
        // is not checked.
        AuditCommand::Repair { .. } => {
            let c = &loaded.config;
            State::open(
                &c.state.url,
                c.state.password_env.as_deref(),
                &loaded.base,
                c.audit.key_env.as_deref(),
                Access::Write,
            )?
        }
        _ => open_state(loaded, Access::Read)?,
    };
    match cmd {
        AuditCommand::Repair { reason, by } => {
            if reason.trim().is_empty() {
                return Err(UsageError(
                    "--reason must say why the trail may be extended again".into(),
                )
                .into());
            }
            let by = lethe_ops::registry::actor(by.as_deref());
            let run_id = lethe_ops::state::new_id("repair")?;
            let record = state.repair(&by, reason, &run_id)?;
            if json {
                output::json(&serde_json::json!({
                    "repaired": record.is_some(),
                    "record": record,
                }))?;
            } else {
                match &record {
                    None => outln!("the trail verifies: nothing to repair, nothing was written"),
                    Some(r) => {
                        outln!(
                            "recorded the break in the trail (repair {run_id}) and sealed it as found:"
                        );
                        for p in r.problems.iter().chain(r.seal_problem.iter()) {
                            outln!("  - {p}");
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify => {
            let r = state.verify()?;
            if json {
                output::json(&serde_json::json!({
                    "ok": r.problem.is_none(),
                    "entries": r.entries,
                    "head_seq": r.head_seq,
                    "head_hash": r.head_hash,
                    "key_fingerprint": state.key.fingerprint(),
                    "problem": r.problem,
                    "problems": r.problems,
                    "repairs": r.repairs,
                }))?;
            } else {
                if r.problems.is_empty() {
                    outln!(
                        "audit trail intact: {} entries, head #{} {}, sealed with key {}",
                        r.entries,
                        r.head_seq,
                        r.head_hash,
                        state.key.fingerprint()
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
            }
            Ok(if r.problem.is_none() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        AuditCommand::Log {
            target,
            key,
            subject,
            run,
            limit,
        } => {
            if let Some(s) = subject
                && s.is_empty()
            {
                return Err(UsageError("--subject must not be empty".into()).into());
            }
            if target.is_none() && subject.is_none() && run.is_none() {
                return Err(UsageError(
                    "say what to look up: --target NAME [--key KEY], --subject ID or --run ID"
                        .into(),
                )
                .into());
            }
            let filter = Filter {
                target: target.clone(),
                key: key.clone(),
                subject_hash: subject.as_ref().map(|s| state.key.subject_hash(s)),
                run_id: run.clone(),
            };
            let mut entries = std::collections::VecDeque::new();
            let mut total = 0u64;
            state.entries(&filter, |e| {
                total += 1;
                if entries.len() == *limit {
                    entries.pop_front();
                }
                entries.push_back(e);
                Ok(())
            })?;
            let entries: Vec<_> = entries.into();
            if json {
                output::json(&entries)?;
            } else {
                output::entries(&entries, total);
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export {
            format,
            output: out,
        } => {
            let mut w: Box<dyn Write> = match out {
                Some(p) => Box::new(std::io::BufWriter::new(
                    lethe_ops::util::create_private(p)
                        .with_context(|| format!("Failed to create {}", p.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let mut n = 0u64;
            if let ExportFormat::Csv = format {
                writeln!(w, "{}", output::CSV_HEADER)?;
            }
            state.entries(&Filter::default(), |e| {
                n += 1;
                match format {
                    ExportFormat::Jsonl => {
                        serde_json::to_writer(&mut w, &e)?;
                        writeln!(w)?;
                    }
                    ExportFormat::Csv => writeln!(w, "{}", output::csv_row(&e))?,
                }
                Ok(())
            })?;
            w.flush()?;
            if let Some(p) = out {
                eprintln!("wrote {n} entries to {}", p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

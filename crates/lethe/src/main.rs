//! `lethe`: the command line. Parses arguments, loads the config, runs one command, and maps
//! the outcome to an exit status: 0 done, 1 ran but something failed, 2 bad usage or config.

/// `println!` that does not panic when stdout is closed (`lethe audit log | head`): what
/// could not be printed is dropped, as a reader that left wanted.
#[macro_export]
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

mod commands;
mod output;
mod requests;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use lethe_ops::engine;

/// What `--version` prints: a build with the crash tests' hook says so, so that such a build
/// is never mistaken for one to run (and the crash tests can tell they have one).
const VERSION: &str = if cfg!(feature = "failpoints") {
    concat!(
        env!("CARGO_PKG_VERSION"),
        " (failpoints: honours LETHE_FAILPOINT; a test build, not for production)"
    )
} else {
    env!("CARGO_PKG_VERSION")
};

#[derive(Parser, Debug)]
#[command(
    name = "lethe",
    version = VERSION,
    about = "Retention and erasure for the data AI applications leave behind",
    long_about = "Lethe finds what has outlived its retention window in every place your AI \
                  data lives, shows what it would delete (dry run is the default), deletes it \
                  with --apply, and keeps a hash-chained audit trail an auditor can verify."
)]
pub struct Cli {
    /// Config file [default: $LETHE_CONFIG, else ./lethe.toml]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Print one JSON document on stdout instead of tables
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build a self-contained example (SQLite data, aged files, a lethe.toml) and dry-run it
    Demo {
        /// Where to build it
        #[arg(default_value = "lethe-demo")]
        dir: PathBuf,
    },
    /// Print a commented example config
    DefaultConfig,
    /// Create the state (trail, key, registers) for this config: the only command that does
    Init,
    /// Validate the config and reach every target, changing nothing
    Check,
    /// Find expired items and delete them (dry run unless --apply)
    Sweep(SweepArgs),
    /// What the config's policy newly makes due on each target, against the policy last
    /// applied there; exit 1 when a target would newly lose more than [guard] max_new_due.
    /// With --accept, record the change as applied (who and why go in the trail)
    Plan(PlanArgs),
    /// Erase one data subject's items across every target that maps a subject (GDPR Art. 17)
    Erase(EraseArgs),
    /// Export one data subject's items as one JSON document (GDPR Art. 15)
    Export {
        /// The data subject, as the targets' subject column holds it
        #[arg(long)]
        subject: String,
        /// Write to this file instead of stdout
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Legal holds: keep items whatever their window or an erasure request says
    Hold {
        #[command(subcommand)]
        command: HoldCommand,
    },
    /// Approved, time-limited extensions for single expired items
    Exception {
        #[command(subcommand)]
        command: ExceptionCommand,
    },
    /// Query, verify and export the audit trail
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Compliance KPIs (each with its goal and whether it is met), per target, category,
    /// owner, region and sensitivity; the monthly report; the dashboard page. Reads only
    Report(ReportArgs),
    /// The cloud's own lifecycle policy for an object-store target's window
    Lifecycle {
        #[command(subcommand)]
        command: LifecycleCommand,
    },
    /// Run as a daemon: scheduled sweeps ([schedule]), the HTTP API ([api]), /metrics and
    /// alerts ([alerts]), until SIGTERM or Ctrl-C
    Serve {
        /// Listen here instead of [api] listen (e.g. 127.0.0.1:8480)
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// How log lines are written (stderr)
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormatArg,
    },
    /// Alerting rules for the daemon's metrics
    Alerts {
        #[command(subcommand)]
        command: AlertsCommand,
    },
    /// Signed erasure receipts (`lethe erase status ID --receipt` writes one)
    Receipt {
        #[command(subcommand)]
        command: ReceiptCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum ReceiptCommand {
    /// Check a receipt offline: every entry's hash and link up to the signed head, the
    /// head's signature, and the counts against the entries; exit 0 valid, 1 not, 2
    /// unreadable. Needs no config or state.
    Verify {
        /// The receipt (JSON, as `erase status --receipt` wrote it)
        file: PathBuf,
        /// The deployment's public key (64 hex digits, or a file holding them, as `lethe
        /// audit public-key` prints it). Without it the receipt's own key is used, which
        /// shows the receipt is whole but not who signed it
        #[arg(long, value_name = "KEY")]
        public_key: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// text (tables), json, md (the monthly report), csv, or html (the dashboard page)
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormat,
    /// A calendar month (UTC), e.g. 2026-11
    #[arg(long, value_name = "YYYY-MM", conflicts_with_all = ["since", "until"])]
    pub month: Option<String>,
    /// Start of the period (a date or RFC 3339); default 30 days before --until
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// End of the period, excluded (a date or RFC 3339); default now
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// Recorded deletions re-checked per target for the reconciliation KPI (0: skip it)
    #[arg(long, value_name = "N", default_value_t = lethe_ops::ops::report::DEFAULT_RECONCILE_SAMPLE)]
    pub reconcile_sample: usize,
    /// Write to this file instead of stdout
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
    Md,
    Csv,
    Html,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum AlertsCommand {
    /// Print the alerting rules (items past expiry, no successful sweep, misfires, overdue
    /// erasure requests, ...) for Prometheus
    Export {
        #[arg(long, value_enum, default_value = "prometheus")]
        format: AlertsFormat,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum AlertsFormat {
    Prometheus,
}

#[derive(Subcommand, Debug)]
enum LifecycleCommand {
    /// Print the target's window as S3, Azure Blob or GCS lifecycle-policy JSON
    Export {
        #[arg(long)]
        target: String,
        #[arg(long, value_enum)]
        format: CloudFormat,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CloudFormat {
    S3,
    Azure,
    Gcs,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EraseArgs {
    #[command(subcommand)]
    command: Option<EraseCommand>,
    /// The data subject, as the targets' subject column holds it
    #[arg(long)]
    subject: Option<String>,
    /// Delete; without it nothing in any target changes (the request is recorded as previewed)
    #[arg(long)]
    apply: bool,
}

#[derive(Subcommand, Debug)]
enum EraseCommand {
    /// The receipt of one request: deadline, status, counts and the audit entries it produced
    Status {
        id: String,
        /// Write the signed receipt (JSON) of a completed erasure, verifiable offline with
        /// `lethe receipt verify`
        #[arg(long)]
        receipt: bool,
        /// Write the receipt to this file instead of stdout
        #[arg(
            short = 'o',
            long = "output",
            value_name = "FILE",
            requires = "receipt"
        )]
        output: Option<PathBuf>,
    },
    /// Open requests, and those near or past their deadline
    List,
}

#[derive(Subcommand, Debug)]
enum HoldCommand {
    /// Place a hold on a subject, on one item (--target and --key), or on a whole target
    Add {
        #[arg(long)]
        subject: Option<String>,
        #[arg(long)]
        target: Option<String>,
        #[arg(long, requires = "target")]
        key: Option<String>,
        /// The legal case this hold serves
        #[arg(long = "case")]
        case_id: String,
        #[arg(long)]
        reason: String,
        /// Who places it [default: the OS user]
        #[arg(long)]
        by: Option<String>,
    },
    /// Active and released holds
    List,
    /// Release a hold; the reason is recorded
    Release {
        id: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        by: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ExceptionCommand {
    /// Keep one item until a date, within [exceptions] max_extension and max_renewals
    Add {
        #[arg(long)]
        target: String,
        #[arg(long)]
        key: String,
        /// A date (kept through the end of that day, UTC) or an RFC 3339 time
        #[arg(long)]
        until: String,
        /// Who answers for this exception
        #[arg(long)]
        owner: String,
        #[arg(long)]
        reason: String,
        /// Who grants it [default: the OS user]
        #[arg(long)]
        by: Option<String>,
    },
    /// Active, lapsed, superseded and revoked exceptions
    List,
    /// End an exception early
    Revoke {
        id: String,
        #[arg(long, default_value = "revoked")]
        reason: String,
        #[arg(long)]
        by: Option<String>,
    },
}

#[derive(Args, Debug)]
struct SweepArgs {
    /// Delete; without it nothing in any target changes
    #[arg(long)]
    apply: bool,
    /// Sweep only this target (repeatable)
    #[arg(long = "target", value_name = "NAME")]
    targets: Vec<String>,
    /// Items per batch (memory and lock time grow with it)
    #[arg(long, default_value_t = engine::DEFAULT_BATCH as u32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch_size: u32,
    /// Rows deleted per transaction on the target, at most: smaller holds the table's
    /// write lock for less time, larger writes less
    #[arg(long, default_value_t = engine::DEFAULT_ROWS_PER_COMMIT as u32, value_parser = clap::value_parser!(u32).range(1..))]
    rows_per_commit: u32,
    /// No progress bar, even on a terminal
    #[arg(long)]
    no_progress: bool,
    /// Go past the guard for this one run: a policy change past [guard] max_new_due (it is
    /// then recorded as accepted, by --by or the OS user), a target's max_delete
    #[arg(long, requires = "apply")]
    allow_large: bool,
    /// Who allows it (with --allow-large or --cancel) [default: the OS user]
    #[arg(long)]
    by: Option<String>,
    /// Drop what run RUN scheduled on targets with delete_delay (nothing it scheduled is
    /// deleted by that schedule; a later run may find the items due and schedule them again)
    #[arg(long, value_name = "RUN", conflicts_with_all = ["apply", "targets", "allow_large"])]
    cancel: Option<String>,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Plan only this target (repeatable)
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
    /// Record the config's policy as applied on every target where it changed, so that an
    /// apply goes on there
    #[arg(long, requires = "reason")]
    pub accept: bool,
    /// Why the change is right (recorded in the trail)
    #[arg(long, requires = "accept")]
    pub reason: Option<String>,
    /// Who accepts it [default: the OS user]
    #[arg(long, requires = "accept")]
    pub by: Option<String>,
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Recompute the hash chain and check its seal; exit 0 only if intact
    Verify,
    /// What happened to an item, a person's data, or in a run
    Log {
        /// With --key: one item of this target; alone: the whole target
        #[arg(long)]
        target: Option<String>,
        /// The item's key (needs --target)
        #[arg(long, requires = "target")]
        key: Option<String>,
        /// A data subject (matched by keyed hash; never stored in the clear)
        #[arg(long)]
        subject: Option<String>,
        /// A run or request id
        #[arg(long)]
        run: Option<String>,
        /// Show at most this many entries (the newest)
        #[arg(long, default_value_t = 200)]
        limit: usize,
    },
    /// After a break was investigated: record it in the trail and seal the trail as found,
    /// so that writing commands run again (verify keeps showing what was broken)
    Repair {
        /// Why the trail may be extended again (what was found, who decided)
        #[arg(long)]
        reason: String,
        /// Who is repairing (default: the OS user)
        #[arg(long)]
        by: Option<String>,
    },
    /// Check the stores against the trail: every item recorded deleted must be absent, every
    /// item past expiry must be known to the trail; exit 1 on any mismatch
    Reconcile {
        /// Only this target
        #[arg(long)]
        target: Option<String>,
        /// Look up at most this many recorded deletions per target (a uniform sample)
        #[arg(long, value_name = "N")]
        sample: Option<usize>,
    },
    /// The trail's own retention: remove entries older than [audit] retention (except those
    /// about items under hold, and holds and exceptions in force), leaving a signed
    /// checkpoint that verify starts from
    Prune {
        /// Count what would be removed; change nothing
        #[arg(long)]
        dry_run: bool,
        /// Who is pruning (default: the OS user)
        #[arg(long)]
        by: Option<String>,
    },
    /// Print the deployment's Ed25519 public key (hex): what receipt verifiers are given
    PublicKey,
    /// Write the whole trail as JSON lines or CSV, for a SIEM
    Export {
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        /// Write to this file instead of stdout
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return bad_arguments(e),
    };
    let json = cli.json;
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => failed(e, json),
    }
}

/// Whether `--json` is on the command line, for an error clap reports before it has parsed
/// the flag: options only, up to a `--` that ends them.
fn json_asked() -> bool {
    std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

/// A command line clap refused: exit 2, its message on stderr and, with `--json`, as one JSON
/// document on stdout. `--help` and `--version` are no errors: printed as asked, exit 0.
fn bad_arguments(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        e.exit();
    }
    let _ = e.print();
    if json_asked() {
        let text = e.render().to_string();
        let message = if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            // Clap shows the help here; the JSON says what is missing, and the usage.
            let usage = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("Usage: "))
                .unwrap_or("lethe <COMMAND>");
            format!("a subcommand is required: {usage} (see --help)")
        } else {
            // The message is the first paragraph; the usage and hints follow a blank line.
            let para: Vec<&str> = text
                .lines()
                .skip_while(|l| l.trim().is_empty())
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let para = para.join(" ");
            para.strip_prefix("error: ").unwrap_or(&para).to_string()
        };
        output::json_error(&message, 2, &[]);
    }
    ExitCode::from(2)
}

/// A command that returned an error: exit 2 for a refusal (bad usage or config, a name that
/// names nothing, a change the registers refuse: nothing was touched), else 1; the message
/// on stderr and, with `--json`, as one JSON document on stdout.
fn failed(e: anyhow::Error, json: bool) -> ExitCode {
    let e = lethe_ops::Error::from(e);
    if let lethe_ops::Error::Config(c) = &e {
        eprintln!("error: {c}");
        if json {
            output::json_error(&c.to_string(), 2, &c.problems);
        }
        return ExitCode::from(2);
    }
    if e.is_refusal() {
        eprintln!("error: {e}");
        if json {
            output::json_error(&e.to_string(), 2, &[]);
        }
        return ExitCode::from(2);
    }
    // A reader that stopped reading (`| head`) is not a failure.
    let broken_pipe = e.chain_error().is_some_and(|e| {
        e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .map(|io| io.kind())
                .or_else(|| {
                    c.downcast_ref::<serde_json::Error>()
                        .and_then(|j| j.io_error_kind())
                })
                == Some(std::io::ErrorKind::BrokenPipe)
        })
    });
    if broken_pipe {
        return ExitCode::SUCCESS;
    }
    eprintln!("error: {e:#}");
    if json {
        output::json_error(&format!("{e:#}"), 1, &[]);
    }
    ExitCode::from(1)
}

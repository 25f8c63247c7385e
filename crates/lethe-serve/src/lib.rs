//! `lethe serve`: the daemon. It runs the schedules of `[schedule]` (claiming each fire in
//! the state, so several daemons sharing one state run it once and share its targets),
//! answers the HTTP API of `[api]` (bearer tokens with roles), exports `/metrics`, counts
//! what is past expiry every `census_interval`, posts alerts to `[alerts]`'s webhook, and
//! serves the dashboard at `/`.
//!
//! Every operation is the library's ([`lethe_ops::ops`]), run on a blocking thread; this
//! crate adds only the daemon's own concerns.

mod alerts;
mod api;
mod dashboard;
mod logging;
mod metrics;
mod scheduler;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lethe_ops::settings::Loaded;
use lethe_ops::{Error, Result};

pub use logging::LogFormat;

/// The Prometheus alerting rules for the daemon's metrics (`lethe alerts export`).
pub const ALERT_RULES: &str = include_str!("../rules/alerts.yml");

/// How `lethe serve` was asked to run.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub log_format: LogFormat,
    /// `--listen`: overrides `[api] listen`.
    pub listen: Option<std::net::SocketAddr>,
}

/// What every part of the daemon shares.
pub(crate) struct Daemon {
    pub loaded: Arc<Loaded>,
    /// This daemon's id in the state (host, pid, random).
    pub id: String,
    pub metrics: metrics::Metrics,
    /// Set once the daemon is told to stop: no new run starts, the current batch commits.
    pub stop: Arc<AtomicBool>,
    pub stopping: tokio::sync::Notify,
    /// The schedules are loaded and the missed fires dealt with.
    pub ready: AtomicBool,
    /// The last heartbeat reached the state.
    pub state_ok: AtomicBool,
    pub schedules: Vec<scheduler::Schedule>,
    pub tokens: Vec<api::auth::Token>,
    /// New work for the worker (a fire claimed, a sweep asked for).
    pub wake: tokio::sync::Notify,
    /// Ask for a census now (after a run).
    pub recount: tokio::sync::Notify,
    pub alerts: alerts::Alerts,
    /// The newest census.
    pub overview: std::sync::Mutex<Option<lethe_ops::ops::census::Overview>>,
    /// The page at `/`.
    pub dashboard: dashboard::Dashboard,
}

impl Daemon {
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// Runs an operation of the library on a blocking thread.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(Error::Other(anyhow::anyhow!("operation failed: {e}"))),
    }
}

/// Runs the daemon until SIGTERM or Ctrl-C. Refuses to start (a usage error, nothing
/// touched) on an API that would listen beyond loopback with no token, a token whose
/// variable is unset, or a state that is not initialised.
pub fn serve(loaded: Loaded, opts: ServeOptions) -> Result<()> {
    logging::init(opts.log_format);
    let listen = opts.listen.unwrap_or(loaded.config.api.listen);
    let tokens = api::auth::load_tokens(&loaded.config.api)?;
    if tokens.is_empty() && !listen.ip().is_loopback() {
        return Err(Error::usage(format!(
            "{}: [api] listen = {listen} is beyond loopback, and no [[api.tokens]] is configured: anyone who can reach it could delete data; add a token (role and token_env) or listen on 127.0.0.1",
            loaded.path.display()
        )));
    }
    alerts::check_config(&loaded.config.alerts)?;
    let schedules = scheduler::schedules(&loaded.config)?;
    let id = lethe_ops::ops::schedule::daemon_id()?;
    // The state must be there (`lethe init`), and reachable, before anything is promised.
    {
        let mut state =
            lethe_ops::ops::common::open_state(&loaded, lethe_ops::state::Access::Write)?;
        lethe_ops::ops::schedule::heartbeat(&mut state, &id)?;
    }
    let target_names: Vec<String> = loaded
        .config
        .targets
        .iter()
        .map(|t| t.name.clone())
        .collect();
    let schedule_names: Vec<String> = schedules.iter().map(|s| s.name.clone()).collect();
    let daemon = Arc::new(Daemon {
        metrics: metrics::Metrics::new(&target_names, &schedule_names),
        alerts: alerts::Alerts::new(&loaded.config.alerts),
        loaded: Arc::new(loaded),
        id,
        stop: Arc::new(AtomicBool::new(false)),
        stopping: tokio::sync::Notify::new(),
        ready: AtomicBool::new(false),
        state_ok: AtomicBool::new(true),
        schedules,
        tokens,
        wake: tokio::sync::Notify::new(),
        recount: tokio::sync::Notify::new(),
        overview: std::sync::Mutex::new(None),
        dashboard: dashboard::Dashboard::default(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Other(anyhow::anyhow!("Failed to start the runtime: {e}")))?;
    let result = rt.block_on(run(daemon.clone(), listen));
    // Blocking operations still running (a sweep past its batch) are left to the process's
    // end: every one of them is safe to kill.
    rt.shutdown_timeout(Duration::from_millis(200));
    result
}

async fn run(d: Arc<Daemon>, listen: std::net::SocketAddr) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::usage(format!("cannot listen on {listen} ([api] listen): {e}")))?;
    tracing::info!(
        daemon = %d.id,
        listen = %listen,
        schedules = d.schedules.len(),
        apply = d.loaded.config.schedule.apply,
        "lethe serve started"
    );
    if !d.loaded.config.schedule.apply && !d.schedules.is_empty() {
        tracing::warn!(
            "[schedule] apply is false: scheduled runs are dry runs; set apply = true to delete"
        );
    }
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(scheduler::heartbeat(d.clone()));
    tasks.spawn(scheduler::census(d.clone()));
    tasks.spawn(alerts::watch(d.clone()));
    tasks.spawn(dashboard::keep(d.clone()));
    tasks.spawn(scheduler::prune(d.clone()));
    let worker = tokio::spawn(scheduler::worker(d.clone()));
    tasks.spawn(scheduler::start(d.clone()));

    let app = api::router(d.clone());
    let server_d = d.clone();
    let server = tokio::spawn(async move {
        let shutdown = async move { server_d.stopping.notified().await };
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    });

    shutdown_signal().await;
    tracing::info!("stopping: no new run starts; the batch in hand commits");
    d.stop.store(true, Ordering::SeqCst);
    d.stopping.notify_waiters();
    d.wake.notify_waiters();
    // The current batch commits, then the worker gives its target back; a sweep that does
    // not end in time is left to the process's end (safe to kill).
    let _ = tokio::time::timeout(Duration::from_secs(8), worker).await;
    let _ = tokio::time::timeout(Duration::from_millis(500), server).await;
    tasks.abort_all();
    let leave = {
        let d = d.clone();
        blocking(move || {
            let mut state =
                lethe_ops::ops::common::open_state(&d.loaded, lethe_ops::state::Access::Write)?;
            lethe_ops::ops::schedule::leave(&mut state, &d.id)
        })
    };
    match tokio::time::timeout(Duration::from_secs(1), leave).await {
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not sign off in the state; other daemons take over after [state] lease_ttl")
        }
        Err(_) => tracing::warn!("signing off in the state timed out"),
        Ok(Ok(())) => {}
    }
    tracing::info!("lethe serve stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

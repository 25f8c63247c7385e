//! The dashboard at `/`: the report's page ([`lethe_ops::ops::report::html`]) for the last
//! 30 days, rendered on a blocking thread and kept, then rendered again after each run, when
//! the trail moves (a sweep from the CLI or another daemon), and at least every hour.

use std::sync::Arc;
use std::time::Duration;

use lethe_ops::Result;
use lethe_ops::ops::report::{self, ReportRequest, html};

use crate::{Daemon, blocking};

/// Recorded deletions re-checked per target for the page's reconciliation figure: the page
/// is rendered often, and `lethe audit reconcile` is there for the whole trail.
const RECONCILE_SAMPLE: usize = 20;

/// The longest a rendered page is kept when nothing happens (the period's end is "now").
const AT_LEAST_EVERY: Duration = Duration::from_secs(3600);
/// Renderings are this far apart at least.
const MIN_GAP: Duration = Duration::from_secs(5);

/// How often an open page reloads itself.
const PAGE_REFRESH_SECS: u32 = 300;

/// The page last rendered, and the means to render it again.
#[derive(Default)]
pub struct Dashboard {
    page: std::sync::Mutex<Option<Arc<String>>>,
    /// One rendering at a time (a report reads every target).
    rendering: tokio::sync::Mutex<()>,
    /// Render again: a run finished, or the trail moved.
    pub redraw: tokio::sync::Notify,
}

impl Dashboard {
    fn cached(&self) -> Option<Arc<String>> {
        self.page.lock().ok().and_then(|p| p.clone())
    }
}

/// Renders the page now (on a blocking thread) and keeps it.
async fn render(d: &Arc<Daemon>) -> Result<Arc<String>> {
    let _one = d.dashboard.rendering.lock().await;
    let dd = d.clone();
    let page = blocking(move || {
        let r = report::report(
            &dd.loaded,
            &ReportRequest {
                reconcile_sample: Some(RECONCILE_SAMPLE),
                ..ReportRequest::default()
            },
        )?;
        Ok(Arc::new(html::live_page(&r, PAGE_REFRESH_SECS)))
    })
    .await?;
    if let Ok(mut slot) = d.dashboard.page.lock() {
        *slot = Some(page.clone());
    }
    Ok(page)
}

/// The page: the one kept, or one rendered now when there is none yet.
pub async fn current(d: &Arc<Daemon>) -> Result<Arc<String>> {
    if let Some(p) = d.dashboard.cached() {
        return Ok(p);
    }
    // Another request (or the task below) may be rendering: wait for it rather than render
    // twice.
    {
        let _wait = d.dashboard.rendering.lock().await;
        if let Some(p) = d.dashboard.cached() {
            return Ok(p);
        }
    }
    render(d).await
}

/// Keeps the page fresh until the daemon stops.
pub async fn keep(d: Arc<Daemon>) {
    loop {
        match render(&d).await {
            Ok(_) => tracing::debug!("dashboard rendered"),
            // The page kept (if any) stays; the next run or the timer tries again.
            Err(e) => tracing::error!(error = %e, "could not render the dashboard"),
        }
        // At most one rendering every MIN_GAP: a schedule firing every few seconds must not
        // keep a report (a census of every target, the trail verified) running back to back.
        // A redraw asked for meanwhile waits, and is not lost.
        tokio::select! {
            _ = tokio::time::sleep(MIN_GAP) => {}
            _ = d.stopping.notified() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(AT_LEAST_EVERY) => {}
            _ = d.dashboard.redraw.notified() => {}
            _ = d.stopping.notified() => return,
        }
        if d.stopping() {
            return;
        }
    }
}

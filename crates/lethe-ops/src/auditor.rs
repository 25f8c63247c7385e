//! The audit writer: a thread with its own connection to the state that appends a sweep's
//! entries while the sweep goes on deleting, in groups large enough that the trail's
//! indexes are written once per group rather than once per batch.
//!
//! Safety does not rest on this writer's timing: every batch it is handed was already
//! recorded in the pending store before its deletions, and a batch is marked done in the
//! same transaction that appends its entries. A crash before that leaves the pending
//! record, and the next apply records the batch (once) on recovery.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use lethe_core::audit::Body;

use crate::state::{PendingStore, State};

/// Entries appended per transaction, at most.
const GROUP: usize = 5_000;
/// How long entries may wait before they are appended.
const MAX_WAIT: Duration = Duration::from_millis(1_500);

enum Msg {
    Append(Vec<Body>, Option<i64>),
    Flush(mpsc::Sender<Result<(), String>>),
}

pub struct Auditor {
    tx: Option<SyncSender<Msg>>,
    handle: Option<JoinHandle<()>>,
    /// Set by the writer when an append failed: the sweep stops deleting at once rather
    /// than go on removing items whose entries would wait for a rerun.
    failed: Arc<AtomicBool>,
}

impl Auditor {
    /// Starts the writer on a second connection to `state`.
    pub fn start(state: &State, failpoint_after_append: bool) -> Result<Auditor> {
        let writer = state.reopen()?;
        let pending = state.pending_store()?;
        // One batch waiting at most: memory stays bounded whatever the table size.
        let (tx, rx) = mpsc::sync_channel(1);
        let failed = Arc::new(AtomicBool::new(false));
        let flag = failed.clone();
        let handle = std::thread::Builder::new()
            .name("lethe-audit".into())
            .spawn(move || run(writer, pending, rx, failpoint_after_append, flag))?;
        Ok(Auditor {
            tx: Some(tx),
            handle: Some(handle),
            failed,
        })
    }

    /// Hands entries to the writer; `pending` is the batch they record, if any.
    pub fn append(&self, bodies: Vec<Body>, pending: Option<i64>) -> Result<()> {
        if self.failed.load(Ordering::SeqCst) {
            let cause = match self.flush() {
                Err(e) => format!(": {e:#}"),
                Ok(()) => String::new(),
            };
            return Err(anyhow!(
                "the audit writer failed{cause}; stopping before deleting more"
            ));
        }
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(Msg::Append(bodies, pending)).ok())
            .ok_or_else(|| anyhow!("the audit writer stopped"))
    }

    /// Waits until everything handed over is committed; reports the writer's first error.
    pub fn flush(&self) -> Result<()> {
        let (reply, answer) = mpsc::channel();
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(Msg::Flush(reply)).ok())
            .ok_or_else(|| anyhow!("the audit writer stopped"))?;
        answer
            .recv()
            .map_err(|_| anyhow!("the audit writer stopped"))?
            .map_err(|e| anyhow!("{e}"))
    }
}

impl Drop for Auditor {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn run(
    mut state: State,
    mut pending: PendingStore,
    rx: Receiver<Msg>,
    failpoint: bool,
    failed_flag: Arc<AtomicBool>,
) {
    #[cfg(not(feature = "failpoints"))]
    let _ = failpoint;
    let mut bodies: Vec<Body> = Vec::new();
    let mut batches: Vec<i64> = Vec::new();
    let mut since: Option<Instant> = None;
    // The first failure sticks: later flushes report it, and nothing after it is appended
    // out of order.
    let mut failed: Option<String> = None;
    let mut commit =
        |bodies: &mut Vec<Body>, batches: &mut Vec<i64>, failed: &mut Option<String>| {
            if failed.is_some() || (bodies.is_empty() && batches.is_empty()) {
                bodies.clear();
                batches.clear();
                return;
            }
            let done = state
                .append(std::mem::take(bodies), batches)
                .and_then(|()| {
                    // The crash tests' hook (engine's `Failpoint`): built only with the
                    // `failpoints` feature.
                    #[cfg(feature = "failpoints")]
                    if failpoint {
                        let _ = rustix::process::kill_process(
                            rustix::process::getpid(),
                            rustix::process::Signal::KILL,
                        );
                    }
                    if pending.in_state() {
                        Ok(())
                    } else {
                        pending.remove(batches)
                    }
                });
            batches.clear();
            if let Err(e) = done {
                *failed = Some(format!("{e:#}"));
                failed_flag.store(true, Ordering::SeqCst);
            }
        };
    loop {
        let wait = since.map_or(Duration::from_secs(3600), |t| {
            MAX_WAIT.saturating_sub(t.elapsed())
        });
        match rx.recv_timeout(wait) {
            Ok(Msg::Append(b, p)) => {
                bodies.extend(b);
                batches.extend(p);
                since.get_or_insert_with(Instant::now);
                if bodies.len() >= GROUP {
                    commit(&mut bodies, &mut batches, &mut failed);
                    since = None;
                }
            }
            Ok(Msg::Flush(reply)) => {
                commit(&mut bodies, &mut batches, &mut failed);
                since = None;
                let _ = reply.send(match &failed {
                    Some(e) => Err(e.clone()),
                    None => Ok(()),
                });
            }
            Err(RecvTimeoutError::Timeout) => {
                commit(&mut bodies, &mut batches, &mut failed);
                since = None;
            }
            Err(RecvTimeoutError::Disconnected) => {
                commit(&mut bodies, &mut batches, &mut failed);
                return;
            }
        }
    }
}

//! Where network IO runs, and how async callers run operations.
//!
//! The engine and the SQL connectors are synchronous: a sweep is a long, ordered series of
//! transactions. Network stores (object stores, vendor APIs) are async clients. They run on
//! one runtime of the process's own, on a thread of its own; a connector hands it a future
//! and waits for the answer on a channel. No connector builds a runtime of its own, and
//! nothing calls a runtime's `block_on` from the caller's thread, which panics when that
//! thread already drives a runtime (a server's worker).
//!
//! An async front end (the daemon) runs an operation with [`blocking`], on tokio's pool
//! of blocking threads, so that neither a long sweep nor a synchronous database client
//! (which keeps a small runtime inside) ever runs on one of its workers.

use std::future::Future;
use std::sync::OnceLock;

use anyhow::{Result, anyhow};
use tokio::runtime::Handle;

/// The IO runtime's handle, started on first use.
fn handle() -> Result<&'static Handle> {
    static IO: OnceLock<std::result::Result<Handle, String>> = OnceLock::new();
    IO.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the IO runtime: {e}"))?;
        let handle = rt.handle().clone();
        // This thread drives every IO task for the life of the process.
        std::thread::Builder::new()
            .name("lethe-io".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .map_err(|e| format!("cannot start the IO thread: {e}"))?;
        Ok(handle)
    })
    .as_ref()
    .map_err(|e| anyhow!("{e}"))
}

/// Runs `fut` on the IO runtime and waits for its output. Safe from any thread; from an
/// async task it blocks that task's thread (use [`blocking`] there).
pub fn wait<F>(fut: F) -> Result<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle()?.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .map_err(|_| anyhow!("a network task ended without an answer (it panicked)"))
}

/// Runs a synchronous operation (a sweep, an erasure, a check) from async code, on tokio's
/// pool of blocking threads. Needs a tokio runtime with a blocking pool (any runtime).
pub async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow!("the operation did not finish: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn futures_run_on_the_io_thread_from_any_caller() -> Result<()> {
        assert_eq!(wait(async { 6 * 7 })?, 42);
        // From a thread that drives a runtime of its own, where `block_on` would panic.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let from_inside = rt.block_on(async { wait(async { "ok" }) })?;
        assert_eq!(from_inside, "ok");
        let name = wait(async { std::thread::current().name().map(str::to_string) })?;
        assert_eq!(name.as_deref(), Some("lethe-io"));
        Ok(())
    }

    #[test]
    fn a_task_that_panics_is_an_error_not_a_hang() {
        let r = wait(async {
            if std::hint::black_box(true) {
                panic!("boom");
            }
        });
        assert!(r.is_err());
    }
}

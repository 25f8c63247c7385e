//! The daemon's logs, on stderr: one JSON object per line (`--log-format json`) for a log
//! pipeline, or readable lines (`text`, the default). No log line carries a token, a
//! password, a webhook URL or a subject.

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the subscriber (once; later calls are ignored). `LETHE_LOG=debug` shows more.
pub fn init(format: LogFormat) {
    let level = match std::env::var("LETHE_LOG").as_deref() {
        Ok("debug") => tracing::Level::DEBUG,
        Ok("warn") => tracing::Level::WARN,
        Ok("error") => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}

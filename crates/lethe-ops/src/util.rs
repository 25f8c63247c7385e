//! Small things every command needs: the clock, and the refusals (bad usage or config, a
//! name that names nothing, a change the registers refuse), which touch nothing.

use std::fmt;

use lethe_core::time::Timestamp;

/// Bad usage or bad config: reported as is and mapped to exit status 2. Nothing was touched.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A config that does not parse, validate or fit: the whole message, and each problem with
/// its key and line for `--json`. Mapped to exit status 2, as a [`UsageError`]; nothing was
/// touched.
#[derive(Debug)]
pub struct ConfigProblems {
    pub message: String,
    pub problems: Vec<lethe_core::config::ConfigError>,
}

impl fmt::Display for ConfigProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigProblems {}

/// No such target, item, hold, exception or request. Nothing was touched.
#[derive(Debug)]
pub struct NotFound(pub String);

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotFound {}

/// The change contradicts what the registers hold (a hold already released, an exception no
/// longer active). Nothing was touched.
#[derive(Debug)]
pub struct Conflict(pub String);

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Conflict {}

/// The wall clock. Read at the top of a command and passed down, never deep inside.
/// The tests' build (the `failpoints` feature) honours `LETHE_TEST_NOW` ([`test_now`]).
pub fn now() -> Timestamp {
    #[cfg(feature = "failpoints")]
    if let Some(t) = test_now() {
        return t;
    }
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    Timestamp::from_micros(micros)
}

/// The tests' clock: `LETHE_TEST_NOW` (RFC 3339) moves "now" in a build with the
/// `failpoints` feature, so that a test can play a month of daily runs in seconds. No build
/// people run honours it (the feature is off by default, like the failpoints).
#[cfg(feature = "failpoints")]
fn test_now() -> Option<Timestamp> {
    let v = std::env::var("LETHE_TEST_NOW").ok()?;
    Timestamp::parse(&v).ok()
}

/// Creates (or truncates) a file only its owner can read and write (0600): the state, its
/// write-ahead record, exports of the trail and of a person's data hold what nobody else
/// should read. An existing file keeps its mode.
pub fn create_private(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Makes an empty file only its owner can read and write, unless the path exists: SQLite
/// then opens it (and gives its journal and WAL files the same mode).
pub fn touch_private(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

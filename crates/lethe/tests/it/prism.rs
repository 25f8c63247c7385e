//! Stoplight Prism as a validating proxy: Lethe (or a test) talks to Prism, which checks each
//! request against a vendor's OpenAPI description, forwards it to a fake (or any upstream),
//! and checks the answer against the description too.
//!
//! What Prism 5.14 does, found by experiment (`prism proxy --errors SPEC UPSTREAM`):
//! - It matches the request's path against the spec's `paths` as they are (the spec's
//!   `servers`, `https://api.openai.com/v1`, play no part) and forwards it to the upstream URL
//!   with the path appended: `{prism}/files?limit=2` goes to `{upstream}/files?limit=2`. So
//!   with the fake's `base_url()` (`http://127.0.0.1:P/v1`) as the upstream, the client's base
//!   URL is [`Prism::base_url`] (`http://127.0.0.1:Q`, no `/v1`); `{prism}/v1/files` is a 404
//!   `NO_PATH_MATCHED_ERROR`.
//! - An invalid request (a query parameter of the wrong type or outside its enum, a missing
//!   `Authorization: Bearer` when the spec's security requires it) is NOT forwarded: Prism
//!   answers 422 (401 for security) itself, `application/problem+json`, with a `validation`
//!   list.
//! - An answer that breaks its schema (for a status the spec declares) is replaced, with
//!   `--errors`, by a 500 `application/problem+json` whose `type` ends in `#VIOLATIONS`, with
//!   the violations listed in its body and in an `sl-violations` header.
//! - An answer whose status the spec does not declare for the operation (404 or 429 on
//!   `DELETE /files/{file_id}`, a 500) is passed through unchanged, with an `sl-violations`
//!   header of severity `Warning` ("Unable to match the returned status code with those
//!   defined in the document") and a `[VALIDATOR] ⚠ warning Violation:` line in the log: not
//!   an error, even with `--errors`.
//! - A declared error status is checked like any other: `DELETE /vector_stores/{id}` declares
//!   429 with an integer `Retry-After` (minimum 1), so `Retry-After: soon` (or an HTTP date)
//!   is a violation.
//! - Prism adds CORS headers to every answer and forwards the request's headers. It starts in
//!   about 2 s on the cut OpenAI description (15 s on the whole document).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The repository's root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `crates/lethe/tests/fixtures/vendor/NAME`.
pub fn vendor_spec(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/vendor")
        .join(name)
}

/// A running `prism proxy`, killed when dropped.
pub struct Prism {
    child: Child,
    port: u16,
    output: Arc<Mutex<String>>,
    /// How long it took to start listening.
    pub started_in: Duration,
}

impl Prism {
    /// `prism proxy --errors SPEC UPSTREAM` on a free loopback port, once it listens. Fails
    /// the test (saying to run scripts/test) when Prism is not installed in `.cache/npm`.
    pub fn proxy(spec: &Path, upstream: &str) -> Prism {
        let bin = repo_root().join(".cache/npm/node_modules/.bin/prism");
        assert!(
            bin.exists(),
            "Prism is not installed ({} is missing): run scripts/test, which installs \
             @stoplight/prism-cli into .cache/npm",
            bin.display()
        );
        let port = super::free_port();
        let t0 = Instant::now();
        let mut child = Command::new(&bin)
            .arg("proxy")
            .arg("--errors")
            .arg(spec)
            .arg(upstream)
            .args(["-p", &port.to_string(), "-h", "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e} (run scripts/test)", bin.display()));
        let output = Arc::new(Mutex::new(String::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        let mut prism = Prism {
            child,
            port,
            output,
            started_in: Duration::ZERO,
        };
        loop {
            if prism.output().contains("Prism is listening") {
                break;
            }
            if let Ok(Some(status)) = prism.child.try_wait() {
                panic!(
                    "Prism exited ({status}) before listening:\n{}",
                    prism.output()
                );
            }
            if t0.elapsed() > Duration::from_secs(60) {
                panic!("Prism did not listen within 60 s:\n{}", prism.output());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        prism.started_in = t0.elapsed();
        prism
    }

    /// `http://127.0.0.1:PORT`: the base URL a client uses so that `{base_url}/files` is
    /// checked against the spec's `/files` and forwarded to `{upstream}/files`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything Prism has logged so far.
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The log's lines reporting a violation: a request or answer not valid (an error, which
    /// `--errors` turns into Prism's own 422 / 500), or a warning (an answer with a status
    /// the spec does not declare).
    pub fn violations(&self) -> Vec<String> {
        self.output()
            .lines()
            .filter(|l| l.contains("Violation") || l.contains("terminated with error"))
            .map(str::to_string)
            .collect()
    }

    /// [`Prism::violations`] without the undeclared-status warnings.
    pub fn errors(&self) -> Vec<String> {
        self.violations()
            .into_iter()
            .filter(|l| !l.contains("Unable to match the returned status code"))
            .collect()
    }
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! An adversarial review of the `openai_files` / `anthropic_files` targets: each test here
//! was written failing against their first version (commit 3c46d43), and its comment says
//! what was wrong then; all are fixed, and the tests keep them so. Most use the stateful fake of
//! `vendor_fake`; where the vendor must answer in a way that fake cannot (a listing that
//! ignores `purpose`, repeats a cursor or an id, names an odd id, or answers a DELETE
//! oddly), a small scripted server of this file answers instead.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::vendor_fake::{Fake, Fault, FileSpec, RateLimit};
use super::{DAY, Tmp, now_secs, run_env};

use std::path::{Path, PathBuf};

use super::vendor::{KEY, KEY_ENV, config, env, keys_of, subject_map, uploads};

// A scripted vendor: every request is answered by a closure of the test.

type Handler = dyn Fn(&str, &str, &str) -> (u16, String) + Send + Sync;

/// An HTTP server on 127.0.0.1 answering every request with `handler(method, path, query)`
/// (the path as sent, still percent-encoded); stopped when dropped.
pub(super) struct Scripted {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<(String, String)>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Scripted {
    pub(super) fn start(
        handler: impl Fn(&str, &str, &str) -> (u16, String) + Send + Sync + 'static,
    ) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let log: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app_log = log.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let (log, handler) = (app_log.clone(), handler.clone());
            async move {
                let m = req.method().as_str().to_string();
                let p = req.uri().path().to_string();
                let q = req.uri().query().unwrap_or("").to_string();
                log.lock().unwrap().push((m.clone(), p.clone()));
                let (status, body) = handler(&m, &p, &q);
                axum::response::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(body))
                    .unwrap()
            }
        });
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    r = axum::serve(listener, app) => r.unwrap(),
                    _ = stopped => {}
                }
            });
            rt.shutdown_background();
        });
        Scripted {
            addr,
            log,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub(super) fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub(super) fn requests(&self) -> Vec<(String, String)> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An OpenAI project as the scripted server keeps it: file objects by id.
#[derive(Default)]
struct World {
    files: Mutex<BTreeMap<String, Value>>,
}

impl World {
    fn add(&self, id: &str, purpose: &str, created_at: i64) {
        self.files.lock().unwrap().insert(
            id.to_string(),
            json!({"id": id, "object": "file", "bytes": 1, "created_at": created_at,
                   "filename": "f.jsonl", "purpose": purpose, "status": "processed"}),
        );
    }

    fn ids(&self) -> Vec<String> {
        self.files.lock().unwrap().keys().cloned().collect()
    }

    fn remove(&self, id: &str) -> bool {
        self.files.lock().unwrap().remove(id).is_some()
    }

    /// What the real API answers for the calls Lethe makes, `purpose` honoured when
    /// `honour_purpose`, every file on one page.
    fn answer(&self, honour_purpose: bool, m: &str, p: &str, q: &str) -> (u16, String) {
        let params: Vec<(String, String)> = url::form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let purpose = params
            .iter()
            .find(|(k, _)| k == "purpose")
            .map(|(_, v)| v.clone());
        let empty = json!({"object": "list", "data": [], "has_more": false}).to_string();
        let not_found = || {
            (
                404,
                json!({"error": {"message": "No such File object", "type": "invalid_request_error", "param": "id", "code": null}}).to_string(),
            )
        };
        let id_of = |p: &str| percent_decode(p.strip_prefix("/v1/files/").unwrap_or_default());
        match (m, p) {
            ("GET", "/v1/files") => {
                let data: Vec<Value> = self
                    .files
                    .lock()
                    .unwrap()
                    .values()
                    .filter(|f| {
                        !honour_purpose || purpose.as_deref().is_none_or(|p| f["purpose"] == p)
                    })
                    .cloned()
                    .collect();
                let last = data.last().map(|f| f["id"].clone()).unwrap_or(Value::Null);
                let first = data.first().map(|f| f["id"].clone()).unwrap_or(Value::Null);
                (
                    200,
                    json!({"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": false}).to_string(),
                )
            }
            ("GET", "/v1/batches" | "/v1/fine_tuning/jobs" | "/v1/vector_stores") => (200, empty),
            // A router has no route for an empty id.
            (_, p) if p.starts_with("/v1/files/") && id_of(p).is_empty() => not_found(),
            ("GET", p) if p.starts_with("/v1/files/") => {
                match self.files.lock().unwrap().get(&id_of(p)) {
                    Some(f) => (200, f.to_string()),
                    None => not_found(),
                }
            }
            ("DELETE", p) if p.starts_with("/v1/files/") => {
                let id = id_of(p);
                if self.remove(&id) {
                    (200, json!({"id": id, "object": "file", "deleted": true}).to_string())
                } else {
                    not_found()
                }
            }
            _ => (
                404,
                json!({"error": {"message": format!("Invalid URL ({m} {p})"), "type": "invalid_request_error", "param": null, "code": null}}).to_string(),
            ),
        }
    }
}

pub(super) fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Runs `lethe ARGS` and gives up after `limit`: `None` when it was still running (and was
/// then killed), else its exit code.
pub(super) fn run_with_limit(cfg: &Path, args: &[&str], limit: Duration) -> Option<Option<i32>> {
    super::ensure_init_env(cfg, &env());
    let mut child = super::lethe()
        .args(args)
        .arg("--config")
        .arg(cfg)
        .envs(env())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status.code());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// What must never be deleted.

/// OpenAI writes `expires_at` as unix seconds. A 0 (often "never") is not a plausible
/// instant for stored data, and the README says such a number "is reported failed, never
/// guessed into 1970". The connector turns the number into RFC 3339 text itself
/// (api.rs `seconds`, with `Timestamp::from_unix_seconds`, which takes any number), so the
/// engine's plausibility check never sees it: a day-old file is deleted as expired in 1970.
#[test]
fn a_vendor_expiry_of_zero_is_reported_not_read_as_1970() {
    let dir = Tmp::new("review-expiry-zero");
    let fake = Fake::openai(KEY);
    let t = now_secs();
    let young = fake.add_file(FileSpec {
        expires_at: Some(0),
        ..FileSpec::new("user_data", t - DAY)
    });
    let cfg = config(&dir, "openai_files", &fake.base_url(), "");
    let r = run_env(&cfg, &env(), &["sweep", "--apply", "--json"]);
    assert!(
        fake.file_ids().contains(&young),
        "a day-old file whose expires_at is 0 was deleted as if it expired in 1970: {}",
        r.stdout
    );
    assert!(!keys_of(&cfg, "deleted").contains(&young));
    assert!(
        keys_of(&cfg, "failed").contains(&young),
        "an unreadable expiry is reported failed"
    );
}

/// `purposes = ["batch"]` is sent as the listing's `purpose` parameter, and whatever the
/// listing answers is swept: a server that does not filter (a proxy, a compatible API, an
/// older Azure deployment) has every file of every purpose swept, including the fine-tune
/// files another target's holds protect. Each listed item's own `purpose` is never checked.
#[test]
fn a_file_of_a_purpose_not_configured_is_never_deleted() {
    let dir = Tmp::new("review-purpose");
    let world = Arc::new(World::default());
    let t = now_secs();
    world.add("file-batch000000000000000001", "batch", t - 40 * DAY);
    world.add("file-tune0000000000000000001", "fine-tune", t - 40 * DAY);
    let w = world.clone();
    let server = Scripted::start(move |m, p, q| w.answer(false, m, p, q));
    let cfg = config(
        &dir,
        "openai_files",
        &server.base_url(),
        r#"purposes = ["batch"]"#,
    );
    let r = run_env(&cfg, &env(), &["sweep", "--apply", "--json"]);
    assert!(
        world
            .ids()
            .contains(&"file-tune0000000000000000001".to_string()),
        "a fine-tune file was deleted by a target configured for batch files only: {}{}",
        r.stdout,
        r.stderr
    );
    assert!(
        !world
            .ids()
            .contains(&"file-batch000000000000000001".to_string())
    );
}

/// A fine-tuning job whose status is not in the connector's list of running ones (a status
/// the API added since, such as a paused job) does not protect its training file: the
/// list names what runs (api.rs `RUNNING_JOB`), so anything new counts as finished.
#[test]
fn work_in_a_status_lethe_does_not_know_keeps_its_files() {
    let dir = Tmp::new("review-unknown-status");
    let fake = Fake::openai(KEY);
    let t = now_secs();
    let training = fake.add_file(FileSpec::new("fine-tune", t - 40 * DAY));
    let batch_in = fake.add_file(FileSpec::new("batch", t - 40 * DAY));
    fake.add_fine_tuning_job("paused", &training, None, &[]);
    fake.add_batch("pausing", &batch_in, None, None);
    let cfg = config(&dir, "openai_files", &fake.base_url(), "");
    let r = run_env(&cfg, &env(), &["sweep", "--apply", "--json"]);
    let left = fake.file_ids();
    assert!(
        left.contains(&training) && left.contains(&batch_in),
        "files of a paused job / pausing batch were deleted: {}",
        r.stdout
    );
}

/// An id the vendor lists as `..`, `.` or the empty string is put into the DELETE's path
/// with `.` left as is (api.rs `ItemKind::path`); the URL parser then resolves the dot
/// segments, so the DELETE goes to `/v1/` or `/v1/files/`, is answered 404, and the file,
/// never deleted, is recorded `deleted` ("already gone") at every run.
#[test]
fn an_id_made_of_dot_segments_is_never_recorded_deleted() {
    let dir = Tmp::new("review-dot-ids");
    let world = Arc::new(World::default());
    let t = now_secs();
    for id in ["..", ".", ""] {
        world.add(id, "batch", t - 40 * DAY);
    }
    let w = world.clone();
    let server = Scripted::start(move |m, p, q| w.answer(true, m, p, q));
    let cfg = config(&dir, "openai_files", &server.base_url(), "");
    let r = run_env(&cfg, &env(), &["sweep", "--apply", "--json"]);
    assert_eq!(world.ids().len(), 3, "nothing can delete these");
    let deleted = keys_of(&cfg, "deleted");
    let deletes: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|(m, _)| m == "DELETE")
        .map(|(_, p)| p)
        .collect();
    assert!(
        deleted.is_empty(),
        "files still at the vendor were recorded deleted: {deleted:?} (DELETEs sent to {deletes:?}); {}",
        r.stdout
    );
}

// What must be recorded exactly once.

/// A listing page that says `has_more` and gives as its cursor the id it was asked to read
/// after (a vendor bug, a proxy that drops `after`) is read again and again: there is no
/// guard against a cursor that does not move (api.rs `page`, connector.rs `fill` and
/// `count`), so the run never ends, recording the same items without end.
#[test]
fn a_listing_whose_cursor_does_not_move_ends_the_run() {
    let dir = Tmp::new("review-stuck-cursor");
    let world = Arc::new(World::default());
    let t = now_secs();
    world.add("file-young00000000000000000001", "batch", t - DAY);
    world.add("file-young00000000000000000002", "batch", t - DAY);
    let w = world.clone();
    let server = Scripted::start(move |m, p, q| {
        if m == "GET" && p == "/v1/files" {
            let data: Vec<Value> = w.files.lock().unwrap().values().cloned().collect();
            return (
                200,
                json!({"object": "list", "data": data, "first_id": "file-young00000000000000000001",
                       "last_id": "file-young00000000000000000002", "has_more": true})
                .to_string(),
            );
        }
        w.answer(true, m, p, q)
    });
    let cfg = config(&dir, "openai_files", &server.base_url(), "");
    let code = run_with_limit(&cfg, &["sweep", "--json"], Duration::from_secs(30));
    assert!(
        code.is_some(),
        "a dry run over two files was still listing after 30s ({} listing requests)",
        server.requests().iter().filter(|(m, _)| m == "GET").count()
    );
    assert_eq!(
        code.unwrap(),
        Some(1),
        "a listing that cannot end is a failure"
    );
}

/// The same id listed twice (on two pages, or in two purpose listings) is judged and
/// deleted twice: the second DELETE is answered 404 and recorded `deleted` again, so the
/// trail shows two deletions of one file.
#[test]
fn a_file_listed_twice_is_recorded_deleted_once() {
    let dir = Tmp::new("review-dup");
    let world = Arc::new(World::default());
    let t = now_secs();
    let (a, b, c) = (
        "file-a000000000000000000000001",
        "file-b000000000000000000000001",
        "file-c000000000000000000000001",
    );
    for id in [a, b, c] {
        world.add(id, "batch", t - 40 * DAY);
    }
    let w = world.clone();
    // Page one: a, b (more follow); page two, after b: b again, then c.
    let server = Scripted::start(move |m, p, q| {
        if m == "GET" && p == "/v1/files" {
            let obj = |id: &str| {
                json!({"id": id, "object": "file", "bytes": 1, "created_at": t - 40 * DAY,
                       "filename": "f", "purpose": "batch", "status": "processed"})
            };
            let (data, more) = if q.contains("after=") {
                (vec![obj(b), obj(c)], false)
            } else {
                (vec![obj(a), obj(b)], true)
            };
            let last = data.last().unwrap()["id"].clone();
            return (
                200,
                json!({"object": "list", "data": data, "last_id": last, "has_more": more})
                    .to_string(),
            );
        }
        w.answer(true, m, p, q)
    });
    let cfg = config(&dir, "openai_files", &server.base_url(), "");
    let r = run_env(&cfg, &env(), &["sweep", "--apply", "--json"]);
    assert!(world.ids().is_empty(), "{}{}", r.stdout, r.stderr);
    let deleted = keys_of(&cfg, "deleted");
    assert_eq!(
        deleted.iter().filter(|k| *k == b).count(),
        1,
        "one file, one deletion in the trail: {deleted:?}"
    );
}

/// A DELETE answered 2xx with no JSON body (204 No Content, as many proxies and gateways
/// answer a delete, or a body cut short) is taken as a refusal (client.rs: a 2xx whose body
/// is not JSON is `Refused`, "nothing happened") and recorded `failed`, though the file is
/// gone; the next run does not list it, so its deletion is never recorded. The outcome is
/// unknown, not refused: it should be looked up, as a timeout is.
#[test]
fn a_delete_answered_2xx_without_json_is_looked_up_and_recorded_once() {
    let dir = Tmp::new("review-204");
    let world = Arc::new(World::default());
    let t = now_secs();
    let id = "file-gone0000000000000000001";
    world.add(id, "batch", t - 40 * DAY);
    let w = world.clone();
    let server = Scripted::start(move |m, p, q| {
        if m == "DELETE" && p.starts_with("/v1/files/") {
            let (status, _) = w.answer(true, m, p, q);
            if status == 200 {
                return (204, String::new());
            }
        }
        w.answer(true, m, p, q)
    });
    let cfg = config(&dir, "openai_files", &server.base_url(), "");
    let first = run_env(&cfg, &env(), &["sweep", "--apply", "--json"]);
    let second = run_env(&cfg, &env(), &["sweep", "--apply", "--json"]);
    assert!(world.ids().is_empty(), "the file is gone at the vendor");
    assert_eq!(
        keys_of(&cfg, "deleted"),
        vec![id.to_string()],
        "a deletion that happened is recorded, once: {}\n{}",
        first.stdout,
        second.stdout
    );
}

/// `export --subject` writes the items the connector hands it, and the vendor connector
/// leaves out every row with a problem (connector.rs `export_subject`), including a file
/// `subject_map` names for the subject that could not be read (a 503): the export is
/// written incomplete, and the command says all is well (exit 0).
#[test]
fn an_export_never_leaves_out_a_file_it_could_not_read() {
    let dir = Tmp::new("review-export");
    let fake = Fake::openai(KEY);
    let t = now_secs();
    let ids = fake.add_files((0..2).map(|i| FileSpec::new("user_data", t - DAY - i)));
    let rows: Vec<(&str, &str)> = ids.iter().map(|id| (id.as_str(), "bob")).collect();
    uploads(&dir.0, &rows);
    let extra = format!("max_retries = 0\n{}", subject_map("vendor_file"));
    let cfg = config(&dir, "openai_files", &fake.base_url(), &extra);
    super::ensure_init_env(&cfg, &env());
    fake.inject(Fault::status(
        "GET",
        &format!("/v1/files/{}", ids[1]),
        503,
        5,
    ));
    let out = dir.path("bob.json");
    let r = run_env(
        &cfg,
        &env(),
        &[
            "export",
            "--subject",
            "bob",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(text.contains(&ids[0]), "{text}");
    assert!(
        r.code != Some(0) || text.contains(&ids[1]),
        "bob's second file could not be read, yet the export left it out and exited 0: {text}\n{}",
        r.stderr
    );
}

// The key.

/// The README: the key "is scrubbed from any message the vendor echoes; it never reaches a
/// log, an error or the trail". A DELETE answered 200 without confirming it is recorded
/// failed with the answer's body as it came (connector.rs `delete_one`, `shown`), unscrubbed;
/// a refusal's error code is passed on unscrubbed too (client.rs `error_code`).
#[test]
fn the_key_never_reaches_the_trail_when_a_delete_answer_echoes_it() {
    let dir = Tmp::new("review-echo");
    let world = Arc::new(World::default());
    let t = now_secs();
    world.add("file-echo0000000000000000001", "batch", t - 40 * DAY);
    let w = world.clone();
    let server = Scripted::start(move |m, p, q| {
        if m == "DELETE" {
            return (
                200,
                json!({"id": "file-echo0000000000000000001", "object": "file", "deleted": false,
                       "reason": format!("key {KEY} may not delete")})
                .to_string(),
            );
        }
        w.answer(true, m, p, q)
    });
    let cfg = config(&dir, "openai_files", &server.base_url(), "");
    let r = run_env(&cfg, &env(), &["sweep", "--apply", "--json"]);
    let trail = run_env(&cfg, &env(), &["audit", "export", "--format", "jsonl"]).stdout;
    let tail = &KEY[KEY.len() - 4..];
    for (what, text) in [
        ("output", format!("{}{}", r.stdout, r.stderr)),
        ("trail", trail),
    ] {
        assert!(
            !text.contains(KEY) && !text.contains(tail),
            "the key reached the {what}: {text}"
        );
    }
}

/// The same promise for a refusal: a 401 or 403 is reported with the vendor's error code
/// (client.rs `error_code`), which is not scrubbed as its message would be.
#[test]
fn the_key_never_reaches_check_output_when_a_refusal_code_echoes_it() {
    let dir = Tmp::new("review-echo-code");
    let tail = &KEY[KEY.len() - 4..];
    let server = Scripted::start(|_, _, _| {
        (
            403,
            json!({"error": {"message": "no", "type": "invalid_request_error", "param": null,
                             "code": format!("key_{KEY}_lacks_scope")}})
            .to_string(),
        )
    });
    let cfg = config(&dir, "openai_files", &server.base_url(), "");
    let r = run_env(&cfg, &env(), &["check", "--json"]);
    let text = format!("{}{}", r.stdout, r.stderr);
    assert!(
        !text.contains(KEY) && !text.contains(tail),
        "the key reached check's output: {text}"
    );
}

// Retries.

/// A `Retry-After` (or `retry-after-ms`, or OpenAI's reset header) too large for a
/// `Duration` panics the client (client.rs `retry_after` / `go_duration`:
/// `Duration::from_secs_f64` on any finite number): the network task dies, and instead of
/// "the vendor asked to wait ...; the next run tries again" for one request, the run
/// reports a panicked task.
#[test]
fn a_huge_retry_after_or_reset_fails_the_request_without_a_panic() {
    let dir = Tmp::new("review-retry-after");
    let fake = Fake::openai(KEY);
    fake.add_file(FileSpec::new("batch", now_secs() - DAY));
    let cfg = config(&dir, "openai_files", &fake.base_url(), "");
    super::ensure_init_env(&cfg, &env());
    fake.inject(Fault::Status {
        method: "GET",
        path_prefix: "/v1/files".into(),
        status: 429,
        retry_after: Some("1e20".into()),
        retry_after_ms: None,
        times: 100,
    });
    let r = run_env(&cfg, &env(), &["sweep", "--json"]);
    assert!(
        !r.stderr.contains("panicked") && !r.stdout.contains("panicked"),
        "a Retry-After of 1e20 seconds panics: {}{}",
        r.stdout,
        r.stderr
    );
    assert!(
        format!("{}{}", r.stdout, r.stderr).contains("asked to wait"),
        "{}{}",
        r.stdout,
        r.stderr
    );

    let fake = Fake::openai(KEY);
    fake.add_file(FileSpec::new("batch", now_secs() - DAY));
    fake.set_rate_limit_headers(Some(RateLimit {
        limit: 100,
        remaining: 0,
        reset: "99999999999999999999h".into(),
    }));
    let cfg = config(&dir, "openai_files", &fake.base_url(), "");
    let r = run_env(&cfg, &env(), &["sweep", "--json"]);
    assert!(
        !r.stderr.contains("panicked") && !r.stdout.contains("panicked"),
        "a rate-limit reset of 1e20 hours panics: {}{}",
        r.stdout,
        r.stderr
    );
}

// Config.

fn two_targets(dir: &Tmp, a: &str, b: &str) -> PathBuf {
    let cfg = dir.path("two.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[state]
url = "sqlite://lethe-state.db"

[categories.vendor_file]
retention = "30d"

[[targets]]
name = "a"
type = "openai_files"
category = "vendor_file"
api_key_env = "{KEY_ENV}"
{a}

[[targets]]
name = "b"
type = "openai_files"
category = "vendor_file"
api_key_env = "{KEY_ENV}"
{b}
"#
        ),
    )
    .unwrap();
    cfg
}

/// A target that sets no `project` sweeps whatever project its key defaults to, which may
/// be the project another target on the same URL names: the two sweep the same files, and a
/// hold placed through one does not protect them from the other. Places compare
/// `url|org|project` as text (vendor/mod.rs `place`, ops/places.rs), so an unset project
/// meets only another unset one.
#[test]
fn a_target_without_project_shares_a_place_with_one_naming_a_project() {
    let dir = Tmp::new("review-project");
    let fake = Fake::openai(KEY);
    let url = fake.base_url();
    let cfg = two_targets(
        &dir,
        &format!("base_url = \"{url}\""),
        &format!("base_url = \"{url}\"\nproject = \"proj_abc\""),
    );
    let r = run_env(&cfg, &env(), &["check"]);
    assert_eq!(
        r.code,
        Some(2),
        "a project-less target and one naming a project on one URL were both accepted: {}{}",
        r.stdout,
        r.stderr
    );
}

/// One vendor URL spelled two ways (the default left out in one target and written with
/// another case or an explicit port in the other) is two places: the overlap check compares
/// the text of `base_url` (vendor/mod.rs `shown_url` only strips user info).
#[test]
fn one_vendor_url_spelled_two_ways_is_one_place() {
    let dir = Tmp::new("review-url-spelling");
    let cfg = two_targets(
        &dir,
        "max_retries = 0",
        "max_retries = 0\nbase_url = \"https://API.OpenAI.com:443/v1\"",
    );
    let r = run_env(&cfg, &env(), &["check"]);
    let text = format!("{}{}", r.stdout, r.stderr);
    assert!(
        text.contains("reaches the same kinds of item"),
        "the default OpenAI URL and the same URL spelled otherwise were not seen as one project: {text}"
    );
}

/// "Every problem in a config is reported at once, with its line and key": the vendor's
/// own checks (`base_url`, an integer out of its bounds, every `subject_map` key, the
/// `subject_map.source` link) report the line of the target's `[[targets]]` header instead
/// of the key's (config.rs `Section::error` uses the table's span).
#[test]
fn vendor_config_problems_name_the_line_of_their_key() {
    let dir = Tmp::new("review-lines");
    let cfg = dir.path("lethe.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[state]
url = "sqlite://lethe-state.db"

[categories.vendor_file]
retention = "30d"

[[targets]]
name = "vendor"
type = "openai_files"
category = "vendor_file"
api_key_env = "{KEY_ENV}"
base_url = "ftp://example.com/v1"
max_retries = 99

[targets.subject_map]
source = "uploads"
query = "SELECT 1"
subject_of = "SELECT u FROM t WHERE f = $1"
"#
        ),
    )
    .unwrap();
    let r = run_env(&cfg, &env(), &["check"]);
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    for (key, line) in [
        ("base_url", 12),
        ("max_retries", 13),
        ("subject_map.query", 17),
    ] {
        let want = format!("line {line}: targets.vendor.{key}");
        assert!(
            r.stderr.contains(&want),
            "expected {want:?} in: {}",
            r.stderr
        );
    }
}

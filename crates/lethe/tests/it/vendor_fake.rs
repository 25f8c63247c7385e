//! Stateful fakes of the OpenAI and Anthropic file APIs, for the connectors' tests.
//!
//! A [`Fake`] is an HTTP server on `127.0.0.1:<free port>`, on its own runtime thread, stopped
//! when dropped. It keeps files (and, for OpenAI, vector stores, batches and fine-tuning jobs)
//! in memory, answers the list / retrieve / delete requests Lethe sends the way the vendor
//! does (query parameters, cursors, object and error shapes), and lets a test inject faults,
//! latency, a page cap and rate-limit headers, and read back every request it answered.
//!
//! Paths: [`Fake::base_url`] is `http://127.0.0.1:PORT/v1`; a connector appends `/files`,
//! `/files/{id}`, `/batches`, `/fine_tuning/jobs`, `/vector_stores`,
//! `/vector_stores/{id}`.
//!
//! What is copied from the vendors:
//! - OpenAI (from its published OpenAPI description, `tests/fixtures/vendor/openai-files.yaml`):
//!   `Authorization: Bearer KEY` (401, code `invalid_api_key`, when wrong); `GET /files`
//!   with `purpose`, `limit` (1..=10000, default 10000), `order` (`asc`|`desc` by `created_at`,
//!   default `desc`), `after` (an id: the page starts after it in the listing order, even when
//!   that object was deleted since); `GET /batches` and `GET /fine_tuning/jobs` with `after`,
//!   `limit` (1..=100, default 20), newest first; `GET /vector_stores` with `limit` (1..=100,
//!   default 20), `order`, `after`, `before`. Errors are
//!   `{"error":{"message","type","param","code"}}`.
//! - Anthropic (from its API reference and SDK types; it publishes no OpenAPI document):
//!   `x-api-key`, `anthropic-version` and `anthropic-beta` containing `files-api-2025-04-14`
//!   are required (401 / 400 / 400); `GET /files` with `limit` (1..=1000, default 20),
//!   `after_id`, `before_id`, newest first, answering `{data, first_id, last_id, has_more}`;
//!   or, after [`Fake::set_page_cursor_mode`], the newer `page` cursor, answering
//!   `{data, next_page}` (`next_page` null on the last page). Errors are
//!   `{"type":"error","error":{"type","message"},"request_id"}`.
//!
//! Where the vendor's real answers and the published spec differ, the fake follows the real
//! API: an empty OpenAI page has `first_id`/`last_id` null (the spec says string), which
//! Prism reports as a violation. Optional fields that are absent are left out (`expires_at`
//! of a file, a batch's `output_file_id`).
//!
//! Every request is handled in a task of its own, so what it does happens whether or not
//! the client is still waiting for the answer (a client that gives up on a slow DELETE has
//! still deleted the file).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

/// The Anthropic beta that turns the Files API on.
pub const ANTHROPIC_FILES_BETA: &str = "files-api-2025-04-14";
/// The `anthropic-version` the fake expects (any non-empty value is accepted).
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    OpenAi,
    Anthropic,
}

/// A file to put in the fake. `purpose` is OpenAI's (one of `assistants`, `batch`,
/// `batch_output`, `fine-tune`, `fine-tune-results`, `vision`, `user_data`, ...); `mime_type`
/// and `downloadable` are Anthropic's (an empty `mime_type` is answered as `text/plain`).
#[derive(Clone, Debug, Default)]
pub struct FileSpec {
    /// The id to give it (a test that names items before it seeds them); a new one if `None`.
    pub id: Option<String>,
    pub purpose: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    pub filename: String,
    pub bytes: u64,
    pub mime_type: String,
    pub downloadable: bool,
}

impl FileSpec {
    /// A 100-byte `data.jsonl` with this purpose, created at `created_at` (unix seconds).
    pub fn new(purpose: &str, created_at: i64) -> FileSpec {
        FileSpec {
            purpose: purpose.to_string(),
            created_at,
            filename: "data.jsonl".to_string(),
            bytes: 100,
            ..FileSpec::default()
        }
    }
}

/// A vector store to put in the OpenAI fake (times in unix seconds).
#[derive(Clone, Debug, Default)]
pub struct StoreSpec {
    pub created_at: i64,
    pub last_active_at: Option<i64>,
    pub expires_at: Option<i64>,
    /// `expires_after: {anchor: "last_active_at", days}` when set.
    pub expires_after_days: Option<u32>,
    pub name: String,
    pub metadata: BTreeMap<String, String>,
}

/// A request the fake answered.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    /// As sent, e.g. `/v1/files/file-abc`.
    pub path: String,
    /// The raw query string (without `?`), empty when none.
    pub query: String,
    /// Every request header, names lowercased. The credentials (`authorization`, `x-api-key`)
    /// are never kept: their value is `<valid key>` or `<wrong key>`.
    pub headers: BTreeMap<String, String>,
    /// The status answered.
    pub status: u16,
    /// When the request arrived, since the fake started.
    pub at: Duration,
}

impl Logged {
    /// The query parameter `name`, decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        parse_query(&self.query)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// A fault to apply to the next `times` requests whose method is `method` (`"*"`: any) and
/// whose path starts with `path_prefix` (e.g. `/v1/files/`). Faults are kept in the order
/// injected; a request takes the first one that matches.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer `status` with the vendor's error body for it (OpenAI 429: type `requests`, code
    /// `rate_limit_exceeded`; Anthropic 429: `rate_limit_error`, 529: `overloaded_error`, 5xx:
    /// `api_error`), with `retry-after` / `retry-after-ms` when given. Nothing else happens.
    Status {
        method: &'static str,
        path_prefix: String,
        status: u16,
        retry_after: Option<String>,
        retry_after_ms: Option<u64>,
        times: usize,
    },
    /// Wait `delay`, then act and answer as usual. The fake acts even if the client has given
    /// up meanwhile: a DELETE whose client timed out still deletes, after the delay.
    StallBefore {
        method: &'static str,
        path_prefix: String,
        delay: Duration,
        times: usize,
    },
    /// Act at once (e.g. delete the file), then wait `delay` before answering: a client that
    /// times out and retries the DELETE gets a 404 for a file it did delete.
    ActThenStall {
        method: &'static str,
        path_prefix: String,
        delay: Duration,
        times: usize,
    },
}

impl Fault {
    /// `Status` without retry headers.
    pub fn status(method: &'static str, path_prefix: &str, status: u16, times: usize) -> Fault {
        Fault::Status {
            method,
            path_prefix: path_prefix.to_string(),
            status,
            retry_after: None,
            retry_after_ms: None,
            times,
        }
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        let (m, p) = match self {
            Fault::Status {
                method,
                path_prefix,
                ..
            }
            | Fault::StallBefore {
                method,
                path_prefix,
                ..
            }
            | Fault::ActThenStall {
                method,
                path_prefix,
                ..
            } => (*method, path_prefix),
        };
        (m == "*" || m.eq_ignore_ascii_case(method)) && path.starts_with(p.as_str())
    }

    fn times_mut(&mut self) -> &mut usize {
        match self {
            Fault::Status { times, .. }
            | Fault::StallBefore { times, .. }
            | Fault::ActThenStall { times, .. } => times,
        }
    }
}

/// The vendor's rate-limit headers, sent as given on every answer. OpenAI:
/// `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests`,
/// `x-ratelimit-reset-requests` (a duration such as `1s` or `6m0s`); Anthropic:
/// `anthropic-ratelimit-requests-limit`, `-remaining`, `-reset` (RFC 3339).
#[derive(Clone, Debug)]
pub struct RateLimit {
    pub limit: u64,
    pub remaining: u64,
    pub reset: String,
}

/// A running fake. Dropping it stops the server.
pub struct Fake {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    vendor: Vendor,
    api_key: String,
    started: Instant,
    state: Mutex<St>,
    deletes_in_flight: AtomicUsize,
    max_deletes_in_flight: AtomicUsize,
}

#[derive(Default)]
struct St {
    files: Table<FileSpec>,
    stores: Table<StoreSpec>,
    batches: Table<Batch>,
    jobs: Table<Job>,
    log: Vec<Logged>,
    faults: Vec<Fault>,
    latency: Duration,
    page_cap: Option<usize>,
    rate_limit: Option<RateLimit>,
    page_cursor_mode: bool,
}

struct Batch {
    status: String,
    input_file_id: String,
    output_file_id: Option<String>,
    error_file_id: Option<String>,
}

struct Job {
    status: String,
    training_file: String,
    validation_file: Option<String>,
    result_files: Vec<String>,
}

/// Objects listed by `(created_at, id)`. `issued` remembers the position of every id ever
/// issued, so that a cursor naming a deleted object still works.
struct Table<T> {
    live: BTreeMap<(i64, String), T>,
    issued: HashMap<String, i64>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            live: BTreeMap::new(),
            issued: HashMap::new(),
        }
    }
}

/// A listed object: its id, `created_at`, and the object.
type Row<'a, T> = (&'a str, i64, &'a T);

enum Cursor {
    None,
    After(String),
    Before(String),
}

impl<T> Table<T> {
    fn insert(&mut self, id: String, created_at: i64, v: T) {
        self.issued.insert(id.clone(), created_at);
        self.live.insert((created_at, id), v);
    }

    fn key(&self, id: &str) -> Option<(i64, String)> {
        self.issued.get(id).map(|c| (*c, id.to_string()))
    }

    fn get(&self, id: &str) -> Option<(i64, &T)> {
        let k = self.key(id)?;
        self.live.get(&k).map(|v| (k.0, v))
    }

    fn remove(&mut self, id: &str) -> Option<T> {
        let k = self.key(id)?;
        self.live.remove(&k)
    }

    fn ids(&self) -> BTreeSet<String> {
        self.live.keys().map(|(_, id)| id.clone()).collect()
    }

    /// One page in the listing order (`desc`: newest first), and whether more follow (for a
    /// `Before` cursor: whether more precede). `Err(id)` for a cursor never issued.
    fn page(
        &self,
        desc: bool,
        cursor: &Cursor,
        limit: usize,
        keep: impl Fn(&T) -> bool,
    ) -> Result<(Vec<Row<'_, T>>, bool), String> {
        let bound = |id: &String| self.key(id).ok_or_else(|| id.clone());
        type It<'a, T> = Box<dyn Iterator<Item = (&'a (i64, String), &'a T)> + 'a>;
        let (it, backwards): (It<T>, bool) = match (cursor, desc) {
            (Cursor::None, false) => (Box::new(self.live.iter()), false),
            (Cursor::None, true) => (Box::new(self.live.iter().rev()), false),
            (Cursor::After(id), false) => (
                Box::new(
                    self.live
                        .range((Bound::Excluded(bound(id)?), Bound::Unbounded)),
                ),
                false,
            ),
            (Cursor::After(id), true) => (
                Box::new(
                    self.live
                        .range((Bound::Unbounded, Bound::Excluded(bound(id)?)))
                        .rev(),
                ),
                false,
            ),
            (Cursor::Before(id), false) => (
                Box::new(
                    self.live
                        .range((Bound::Unbounded, Bound::Excluded(bound(id)?)))
                        .rev(),
                ),
                true,
            ),
            (Cursor::Before(id), true) => (
                Box::new(
                    self.live
                        .range((Bound::Excluded(bound(id)?), Bound::Unbounded)),
                ),
                true,
            ),
        };
        let mut it = it.filter(|(_, v)| keep(v));
        let mut page: Vec<Row<T>> = it
            .by_ref()
            .take(limit)
            .map(|((c, id), v)| (id.as_str(), *c, v))
            .collect();
        let more = it.next().is_some();
        if backwards {
            page.reverse();
        }
        Ok((page, more))
    }
}

impl Fake {
    /// The OpenAI fake: requires `Authorization: Bearer <api_key>`.
    pub fn openai(api_key: &str) -> Fake {
        Fake::start(Vendor::OpenAi, api_key)
    }

    /// The Anthropic fake: requires `x-api-key: <api_key>`, `anthropic-version` and
    /// `anthropic-beta: files-api-2025-04-14`.
    pub fn anthropic(api_key: &str) -> Fake {
        Fake::start(Vendor::Anthropic, api_key)
    }

    fn start(vendor: Vendor, api_key: &str) -> Fake {
        let shared = Arc::new(Shared {
            vendor,
            api_key: api_key.to_string(),
            started: Instant::now(),
            state: Mutex::new(St::default()),
            deletes_in_flight: AtomicUsize::new(0),
            max_deletes_in_flight: AtomicUsize::new(0),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new().fallback(entry).with_state(shared.clone());
        let thread = std::thread::Builder::new()
            .name(format!("fake-{vendor:?}"))
            .spawn(move || {
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
                // Stalled answers are not waited for.
                rt.shutdown_background();
            })
            .unwrap();
        Fake {
            shared,
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn vendor(&self) -> Vendor {
        self.shared.vendor
    }

    /// `http://127.0.0.1:PORT/v1`: what a connector's `base_url` is, to which it appends
    /// `/files` etc.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    fn st(&self) -> MutexGuard<'_, St> {
        self.shared.st()
    }

    /// Adds a file; returns its id (`file-` + 24 characters for OpenAI, `file_` + 24 for
    /// Anthropic).
    pub fn add_file(&self, f: FileSpec) -> String {
        self.add_files(std::iter::once(f)).pop().unwrap()
    }

    /// Adds many files at once (10,000 take a few milliseconds); returns their ids in order.
    pub fn add_files(&self, files: impl IntoIterator<Item = FileSpec>) -> Vec<String> {
        let prefix = match self.vendor() {
            Vendor::OpenAi => "file-",
            Vendor::Anthropic => "file_",
        };
        let mut st = self.st();
        files
            .into_iter()
            .map(|f| {
                let id = f.id.clone().unwrap_or_else(|| new_id(prefix));
                st.files.insert(id.clone(), f.created_at, f);
                id
            })
            .collect()
    }

    /// Removes a file behind the client's back (as the vendor's own expiry would).
    pub fn remove_file(&self, id: &str) -> bool {
        self.st().files.remove(id).is_some()
    }

    /// Adds a vector store (`vs_` + 24 characters).
    pub fn add_vector_store(&self, s: StoreSpec) -> String {
        let id = new_id("vs_");
        self.st().stores.insert(id.clone(), s.created_at, s);
        id
    }

    /// Adds a batch (`batch_` + 24 characters), created now, with the spec's `status`
    /// (`validating`, `failed`, `in_progress`, `finalizing`, `completed`, `expired`,
    /// `cancelling`, `cancelled`).
    pub fn add_batch(
        &self,
        status: &str,
        input_file_id: &str,
        output_file_id: Option<&str>,
        error_file_id: Option<&str>,
    ) -> String {
        let id = new_id("batch_");
        let b = Batch {
            status: status.to_string(),
            input_file_id: input_file_id.to_string(),
            output_file_id: output_file_id.map(str::to_string),
            error_file_id: error_file_id.map(str::to_string),
        };
        self.st().batches.insert(id.clone(), now(), b);
        id
    }

    /// Adds a fine-tuning job (`ftjob-` + 24 characters), created now, with the spec's
    /// `status` (`validating_files`, `queued`, `running`, `succeeded`, `failed`, `cancelled`).
    pub fn add_fine_tuning_job(
        &self,
        status: &str,
        training_file: &str,
        validation_file: Option<&str>,
        result_files: &[&str],
    ) -> String {
        let id = new_id("ftjob-");
        let j = Job {
            status: status.to_string(),
            training_file: training_file.to_string(),
            validation_file: validation_file.map(str::to_string),
            result_files: result_files.iter().map(|s| s.to_string()).collect(),
        };
        self.st().jobs.insert(id.clone(), now(), j);
        id
    }

    /// The files still present.
    pub fn file_ids(&self) -> BTreeSet<String> {
        self.st().files.ids()
    }

    /// The vector stores still present.
    pub fn vector_store_ids(&self) -> BTreeSet<String> {
        self.st().stores.ids()
    }

    /// Every request answered so far, in the order the answers were sent.
    pub fn requests(&self) -> Vec<Logged> {
        self.st().log.clone()
    }

    /// Queues a fault (see [`Fault`]).
    pub fn inject(&self, f: Fault) {
        self.st().faults.push(f);
    }

    /// How many fault applications are still queued (0: every injected fault was used up).
    /// Drops every fault not yet applied.
    pub fn clear_faults(&self) {
        self.st().faults.clear();
    }

    pub fn pending_faults(&self) -> usize {
        self.st()
            .faults
            .iter_mut()
            .map(|f| *f.times_mut())
            .sum::<usize>()
    }

    /// Added to every request, before it is handled.
    pub fn set_latency(&self, d: Duration) {
        self.st().latency = d;
    }

    /// No page holds more than `n` (at least 1) objects, whatever `limit` asks.
    pub fn set_page_cap(&self, n: usize) {
        self.st().page_cap = Some(n.max(1));
    }

    /// The highest number of DELETE requests in flight at once so far (latency included).
    pub fn max_concurrent_deletes(&self) -> usize {
        self.shared.max_deletes_in_flight.load(Ordering::SeqCst)
    }

    /// Sends the vendor's rate-limit headers on every answer (`None`: none).
    pub fn set_rate_limit_headers(&self, r: Option<RateLimit>) {
        self.st().rate_limit = r;
    }

    /// Anthropic: list with the `page` / `next_page` cursor instead of `after_id` /
    /// `before_id` (which are then refused with a 400).
    pub fn set_page_cursor_mode(&self, on: bool) {
        self.st().page_cursor_mode = on;
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Shared {
    fn st(&self) -> MutexGuard<'_, St> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn now() -> i64 {
    super::now_secs()
}

/// `prefix` + 24 base-62 characters, unique in the process (also across fakes).
fn new_id(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    let n = N.fetch_add(1, Ordering::SeqCst);
    fn mix(mut z: u64) -> u64 {
        // splitmix64: a bijection, so distinct n give distinct ids.
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::from(prefix);
    // 62^11 > 2^64: 11 digits hold a whole u64 (so the first 11 are unique), and 11 + 2 more
    // from other mixes fill the 24.
    for (mut x, width) in [(mix(n), 11), (mix(!n), 11), (mix(n ^ 0xA5A5), 2)] {
        for _ in 0..width {
            out.push(DIGITS[(x % 62) as usize] as char);
            x /= 62;
        }
    }
    out
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// An answer before the common headers are added.
struct Answer {
    status: u16,
    body: Value,
    headers: Vec<(&'static str, String)>,
}

fn ok(body: Value) -> Answer {
    Answer {
        status: 200,
        body,
        headers: Vec::new(),
    }
}

/// The vendor's error body for `status`.
fn error(vendor: Vendor, status: u16, message: &str) -> Answer {
    let body = match vendor {
        Vendor::OpenAi => {
            let (kind, code) = match status {
                401 => ("invalid_request_error", Value::from("invalid_api_key")),
                429 => ("requests", Value::from("rate_limit_exceeded")),
                500..=599 => ("server_error", Value::Null),
                _ => ("invalid_request_error", Value::Null),
            };
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        }
        Vendor::Anthropic => {
            let kind = match status {
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                500..=599 => "api_error",
                _ => "invalid_request_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message},
                   "request_id": new_id("req_")})
        }
    };
    Answer {
        status,
        body,
        headers: Vec::new(),
    }
}

/// Decrements the DELETEs in flight when the request is done.
struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.deletes_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn entry(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let at = shared.started.elapsed();
    let (parts, _body) = req.into_parts();
    // A task of its own: what the request does happens even if the client hangs up.
    let task = tokio::spawn(handle(shared.clone(), parts, at));
    match task.await {
        Ok(r) => r,
        Err(_) => Response::builder()
            .status(500)
            .body(Body::from("the fake's handler failed"))
            .unwrap(),
    }
}

async fn handle(shared: Arc<Shared>, parts: Parts, at: Duration) -> Response {
    let method = parts.method.as_str().to_string();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let _in_flight = (parts.method == Method::DELETE).then(|| {
        let n = shared.deletes_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_deletes_in_flight.fetch_max(n, Ordering::SeqCst);
        InFlight(&shared)
    });

    let latency = shared.st().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let mut headers = BTreeMap::new();
    for (name, value) in &parts.headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        let v = match name.as_str() {
            "authorization" if v.strip_prefix("Bearer ") == Some(shared.api_key.as_str()) => {
                "<valid key>".to_string()
            }
            "x-api-key" if v == shared.api_key => "<valid key>".to_string(),
            "authorization" | "x-api-key" => "<wrong key>".to_string(),
            _ => v,
        };
        headers.insert(name.as_str().to_string(), v);
    }

    let answer = match refuse(&shared, &header) {
        Some(a) => a,
        None => {
            let fault = {
                let mut st = shared.st();
                let i = st.faults.iter().position(|f| f.matches(&method, &path));
                i.map(|i| {
                    let f = st.faults[i].clone();
                    let t = st.faults[i].times_mut();
                    *t -= 1;
                    if *t == 0 {
                        st.faults.remove(i);
                    }
                    f
                })
            };
            match fault {
                Some(Fault::Status {
                    status,
                    retry_after,
                    retry_after_ms,
                    ..
                }) => {
                    let mut a = error(shared.vendor, status, "injected fault");
                    if let Some(s) = retry_after {
                        a.headers.push(("retry-after", s));
                    }
                    if let Some(ms) = retry_after_ms {
                        a.headers.push(("retry-after-ms", ms.to_string()));
                    }
                    a
                }
                Some(Fault::StallBefore { delay, .. }) => {
                    tokio::time::sleep(delay).await;
                    act(&shared, &parts.method, &path, &query)
                }
                Some(Fault::ActThenStall { delay, .. }) => {
                    let a = act(&shared, &parts.method, &path, &query);
                    tokio::time::sleep(delay).await;
                    a
                }
                None => act(&shared, &parts.method, &path, &query),
            }
        }
    };

    let mut rb = Response::builder()
        .status(StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json");
    let request_id = new_id("req_");
    rb = match shared.vendor {
        Vendor::OpenAi => rb.header("x-request-id", request_id),
        Vendor::Anthropic => rb.header("request-id", request_id),
    };
    let rate_limit = shared.st().rate_limit.clone();
    if let Some(r) = rate_limit {
        let names = match shared.vendor {
            Vendor::OpenAi => [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ],
            Vendor::Anthropic => [
                "anthropic-ratelimit-requests-limit",
                "anthropic-ratelimit-requests-remaining",
                "anthropic-ratelimit-requests-reset",
            ],
        };
        rb = rb
            .header(names[0], r.limit)
            .header(names[1], r.remaining)
            .header(names[2], r.reset);
    }
    for (k, v) in &answer.headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            rb = rb.header(*k, v);
        }
    }
    let response = rb
        .body(Body::from(answer.body.to_string()))
        .unwrap_or_else(|_| Response::new(Body::from("bad header")));
    shared.st().log.push(Logged {
        method,
        path,
        query,
        headers,
        status: answer.status,
        at,
    });
    response
}

/// The vendor's refusal for a request without the credentials and headers it requires.
fn refuse(shared: &Shared, header: &dyn Fn(&str) -> Option<String>) -> Option<Answer> {
    let v = shared.vendor;
    match v {
        Vendor::OpenAi => match header("authorization") {
            None => Some(error(
                v,
                401,
                "You didn't provide an API key. You need to provide your API key in an \
                 Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )),
            Some(a) if a.strip_prefix("Bearer ") != Some(shared.api_key.as_str()) => Some(error(
                v,
                401,
                "Incorrect API key provided. You can find your API key at \
                 https://platform.openai.com/account/api-keys.",
            )),
            Some(_) => None,
        },
        Vendor::Anthropic => {
            if header("x-api-key").as_deref() != Some(shared.api_key.as_str()) {
                return Some(error(v, 401, "invalid x-api-key"));
            }
            if header("anthropic-version").is_none_or(|s| s.trim().is_empty()) {
                return Some(error(v, 400, "anthropic-version: header is required"));
            }
            let beta = header("anthropic-beta").unwrap_or_default();
            if !beta.split(',').any(|b| b.trim() == ANTHROPIC_FILES_BETA) {
                return Some(error(
                    v,
                    400,
                    "The Files API is in beta: send the header anthropic-beta: \
                     files-api-2025-04-14",
                ));
            }
            None
        }
    }
}

/// The query's `name`, parsed as an integer in `lo..=hi` (`default` when absent).
fn limit_param(
    q: &[(String, String)],
    name: &str,
    lo: usize,
    hi: usize,
    default: usize,
) -> Result<usize, String> {
    match param(q, name) {
        None => Ok(default),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(n),
            _ => Err(format!(
                "Invalid '{name}': expected an integer between {lo} and {hi}, got '{s}'."
            )),
        },
    }
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn order_param(q: &[(String, String)]) -> Result<bool, String> {
    match param(q, "order") {
        None | Some("desc") => Ok(true),
        Some("asc") => Ok(false),
        Some(o) => Err(format!(
            "Invalid 'order': expected one of 'asc', 'desc', got '{o}'."
        )),
    }
}

/// The cursor from `after_name` / `before_name` (at most one of them).
fn cursor_param(
    q: &[(String, String)],
    after_name: &str,
    before_name: &str,
) -> Result<Cursor, String> {
    match (param(q, after_name), param(q, before_name)) {
        (Some(_), Some(_)) => Err(format!(
            "Only one of '{after_name}' and '{before_name}' may be given."
        )),
        (Some(a), None) => Ok(Cursor::After(a.to_string())),
        (None, Some(b)) => Ok(Cursor::Before(b.to_string())),
        (None, None) => Ok(Cursor::None),
    }
}

/// Does what the request asks, or answers the vendor's error for it.
fn act(shared: &Shared, method: &Method, path: &str, query: &str) -> Answer {
    let v = shared.vendor;
    let q = parse_query(query);
    let Some(rest) = path.strip_prefix("/v1/") else {
        return not_a_route(v, method, path);
    };
    let segs: Vec<&str> = rest.split('/').collect();
    let r = match (v, method.as_str(), segs.as_slice()) {
        (_, "GET", ["files"]) => list_files(shared, &q),
        (_, "GET", ["files", id]) if !id.is_empty() => get_file(shared, id),
        (_, "DELETE", ["files", id]) if !id.is_empty() => delete_file(shared, id),
        (Vendor::OpenAi, "GET", ["batches"]) => list_batches(shared, &q),
        (Vendor::OpenAi, "GET", ["fine_tuning", "jobs"]) => list_jobs(shared, &q),
        (Vendor::OpenAi, "GET", ["vector_stores"]) => list_stores(shared, &q),
        (Vendor::OpenAi, "GET", ["vector_stores", id]) if !id.is_empty() => get_store(shared, id),
        (Vendor::OpenAi, "DELETE", ["vector_stores", id]) if !id.is_empty() => {
            delete_store(shared, id)
        }
        _ => return not_a_route(v, method, path),
    };
    r.unwrap_or_else(|msg| error(v, 400, &msg))
}

fn not_a_route(v: Vendor, method: &Method, path: &str) -> Answer {
    error(v, 404, &format!("Invalid URL ({method} {path})"))
}

fn effective_limit(st: &St, asked: usize) -> usize {
    st.page_cap.map_or(asked, |c| asked.min(c))
}

fn unknown_cursor(id: String) -> String {
    format!("Invalid cursor: no object with id '{id}'.")
}

/// An OpenAI list: `{object: "list", data, first_id, last_id, has_more}` (`ids`: with the
/// first and last ids, null on an empty page).
fn openai_list(data: Vec<Value>, has_more: bool, ids: bool) -> Value {
    let id = |v: Option<&Value>| v.map_or(Value::Null, |v| v["id"].clone());
    let (first, last) = (id(data.first()), id(data.last()));
    let mut body = json!({"object": "list", "data": data, "has_more": has_more});
    if ids {
        body["first_id"] = first;
        body["last_id"] = last;
    }
    body
}

fn list_files(shared: &Shared, q: &[(String, String)]) -> Result<Answer, String> {
    let st = shared.st();
    match shared.vendor {
        Vendor::OpenAi => {
            let limit = limit_param(q, "limit", 1, 10_000, 10_000)?;
            let desc = order_param(q)?;
            let cursor = match param(q, "after") {
                Some(a) => Cursor::After(a.to_string()),
                None => Cursor::None,
            };
            let purpose = param(q, "purpose");
            let (page, more) = st
                .files
                .page(desc, &cursor, effective_limit(&st, limit), |f| {
                    purpose.is_none_or(|p| f.purpose == p)
                })
                .map_err(unknown_cursor)?;
            let data = page.iter().map(|(id, _, f)| openai_file(id, f)).collect();
            Ok(ok(openai_list(data, more, true)))
        }
        Vendor::Anthropic => {
            let limit = limit_param(q, "limit", 1, 1000, 20)?;
            let limit = effective_limit(&st, limit);
            if st.page_cursor_mode {
                if param(q, "after_id").is_some() || param(q, "before_id").is_some() {
                    return Err("after_id and before_id are not supported: use page.".into());
                }
                let cursor = match param(q, "page") {
                    None => Cursor::None,
                    Some(p) => Cursor::After(
                        decode_page_token(p).ok_or_else(|| format!("Invalid page: '{p}'."))?,
                    ),
                };
                let (page, more) = st
                    .files
                    .page(true, &cursor, limit, |_| true)
                    .map_err(unknown_cursor)?;
                let next = match page.last() {
                    Some((id, _, _)) if more => Value::from(page_token(id)),
                    _ => Value::Null,
                };
                let data: Vec<Value> = page
                    .iter()
                    .map(|(id, _, f)| anthropic_file(id, f))
                    .collect();
                Ok(ok(json!({"data": data, "next_page": next})))
            } else {
                let cursor = cursor_param(q, "after_id", "before_id")?;
                let (page, more) = st
                    .files
                    .page(true, &cursor, limit, |_| true)
                    .map_err(unknown_cursor)?;
                let data: Vec<Value> = page
                    .iter()
                    .map(|(id, _, f)| anthropic_file(id, f))
                    .collect();
                let id = |p: Option<&(&str, i64, &FileSpec)>| p.map_or(Value::Null, |p| p.0.into());
                Ok(ok(json!({
                    "data": data,
                    "first_id": id(page.first()),
                    "last_id": id(page.last()),
                    "has_more": more,
                })))
            }
        }
    }
}

fn page_token(id: &str) -> String {
    let hex: String = id.bytes().map(|b| format!("{b:02x}")).collect();
    format!("page_{hex}")
}

fn decode_page_token(t: &str) -> Option<String> {
    let hex = t.strip_prefix("page_")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

fn openai_file(id: &str, f: &FileSpec) -> Value {
    let mut v = json!({
        "id": id,
        "object": "file",
        "bytes": f.bytes,
        "created_at": f.created_at,
        "filename": f.filename,
        "purpose": f.purpose,
        "status": "processed",
    });
    if let Some(e) = f.expires_at {
        v["expires_at"] = e.into();
    }
    v
}

/// RFC 3339 with microseconds, as Anthropic writes times.
fn rfc3339(secs: i64) -> String {
    lethe_core::time::Timestamp::from_micros(secs * 1_000_000 + 100_435).to_rfc3339()
}

fn anthropic_file(id: &str, f: &FileSpec) -> Value {
    json!({
        "id": id,
        "type": "file",
        "filename": f.filename,
        "mime_type": if f.mime_type.is_empty() { "text/plain" } else { f.mime_type.as_str() },
        "size_bytes": f.bytes,
        "created_at": rfc3339(f.created_at),
        "downloadable": f.downloadable,
        "expires_at": f.expires_at.map(rfc3339),
    })
}

fn get_file(shared: &Shared, id: &str) -> Result<Answer, String> {
    let st = shared.st();
    Ok(match (st.files.get(id), shared.vendor) {
        (Some((_, f)), Vendor::OpenAi) => ok(openai_file(id, f)),
        (Some((_, f)), Vendor::Anthropic) => ok(anthropic_file(id, f)),
        (None, v) => file_not_found(v, id),
    })
}

fn file_not_found(v: Vendor, id: &str) -> Answer {
    match v {
        Vendor::OpenAi => {
            let mut a = error(v, 404, &format!("No such File object: {id}"));
            a.body["error"]["param"] = "id".into();
            a
        }
        Vendor::Anthropic => error(v, 404, &format!("File not found: {id}")),
    }
}

fn delete_file(shared: &Shared, id: &str) -> Result<Answer, String> {
    let mut st = shared.st();
    Ok(match (st.files.remove(id), shared.vendor) {
        (Some(_), Vendor::OpenAi) => ok(json!({"id": id, "object": "file", "deleted": true})),
        (Some(_), Vendor::Anthropic) => ok(json!({"id": id, "type": "file_deleted"})),
        (None, v) => file_not_found(v, id),
    })
}

fn list_batches(shared: &Shared, q: &[(String, String)]) -> Result<Answer, String> {
    let st = shared.st();
    let limit = limit_param(q, "limit", 1, 100, 20)?;
    let cursor = match param(q, "after") {
        Some(a) => Cursor::After(a.to_string()),
        None => Cursor::None,
    };
    let (page, more) = st
        .batches
        .page(true, &cursor, effective_limit(&st, limit), |_| true)
        .map_err(unknown_cursor)?;
    let data: Vec<Value> = page.iter().map(|(id, c, b)| batch(id, *c, b)).collect();
    // first_id / last_id are optional strings here: left out of an empty page.
    let mut body = openai_list(data, more, false);
    if let (Some(f), Some(l)) = (page.first(), page.last()) {
        body["first_id"] = f.0.into();
        body["last_id"] = l.0.into();
    }
    Ok(ok(body))
}

fn batch(id: &str, created_at: i64, b: &Batch) -> Value {
    let mut v = json!({
        "id": id,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "model": "gpt-4o-mini",
        "input_file_id": b.input_file_id,
        "completion_window": "24h",
        "status": b.status,
        "created_at": created_at,
        "expires_at": created_at + 86_400,
        "request_counts": {"total": 10, "completed": 10, "failed": 0},
        "metadata": null,
    });
    let later = created_at + 60;
    let stamps: &[&str] = match b.status.as_str() {
        "in_progress" => &["in_progress_at"],
        "finalizing" => &["in_progress_at", "finalizing_at"],
        "completed" => &["in_progress_at", "finalizing_at", "completed_at"],
        "failed" => &["failed_at"],
        "expired" => &["in_progress_at", "expired_at"],
        "cancelling" => &["in_progress_at", "cancelling_at"],
        "cancelled" => &["in_progress_at", "cancelling_at", "cancelled_at"],
        _ => &[],
    };
    for s in stamps {
        v[*s] = later.into();
    }
    if let Some(o) = &b.output_file_id {
        v["output_file_id"] = o.as_str().into();
    }
    if let Some(e) = &b.error_file_id {
        v["error_file_id"] = e.as_str().into();
    }
    v
}

fn list_jobs(shared: &Shared, q: &[(String, String)]) -> Result<Answer, String> {
    let st = shared.st();
    let limit = limit_param(q, "limit", 1, 100, 20)?;
    let cursor = match param(q, "after") {
        Some(a) => Cursor::After(a.to_string()),
        None => Cursor::None,
    };
    let (page, more) = st
        .jobs
        .page(true, &cursor, effective_limit(&st, limit), |_| true)
        .map_err(unknown_cursor)?;
    let data = page.iter().map(|(id, c, j)| job(id, *c, j)).collect();
    // ListPaginatedFineTuningJobsResponse has no first_id / last_id.
    Ok(ok(openai_list(data, more, false)))
}

fn job(id: &str, created_at: i64, j: &Job) -> Value {
    let finished = matches!(j.status.as_str(), "succeeded" | "failed" | "cancelled");
    json!({
        "id": id,
        "object": "fine_tuning.job",
        "created_at": created_at,
        "error": if j.status == "failed" {
            json!({"code": "invalid_training_file", "message": "The training file is invalid.", "param": "training_file"})
        } else {
            Value::Null
        },
        "fine_tuned_model": if j.status == "succeeded" {
            Value::from(format!("ft:gpt-4o-mini-2024-07-18:fake::{}", &id[6..14]))
        } else {
            Value::Null
        },
        "finished_at": if finished { Value::from(created_at + 600) } else { Value::Null },
        "hyperparameters": {"batch_size": "auto", "learning_rate_multiplier": "auto", "n_epochs": "auto"},
        "model": "gpt-4o-mini-2024-07-18",
        "organization_id": "org-fake",
        "result_files": j.result_files,
        "status": j.status,
        "trained_tokens": if j.status == "succeeded" { Value::from(5000) } else { Value::Null },
        "training_file": j.training_file,
        "validation_file": j.validation_file,
        "seed": 42,
        "metadata": null,
    })
}

fn list_stores(shared: &Shared, q: &[(String, String)]) -> Result<Answer, String> {
    let st = shared.st();
    let limit = limit_param(q, "limit", 1, 100, 20)?;
    let desc = order_param(q)?;
    let cursor = cursor_param(q, "after", "before")?;
    let (page, more) = st
        .stores
        .page(desc, &cursor, effective_limit(&st, limit), |_| true)
        .map_err(unknown_cursor)?;
    let data = page.iter().map(|(id, _, s)| store(id, s)).collect();
    Ok(ok(openai_list(data, more, true)))
}

fn store(id: &str, s: &StoreSpec) -> Value {
    let expired = s.expires_at.is_some_and(|e| e <= now());
    let mut v = json!({
        "id": id,
        "object": "vector_store",
        "created_at": s.created_at,
        "name": s.name,
        "usage_bytes": 0,
        "file_counts": {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0, "total": 0},
        "status": if expired { "expired" } else { "completed" },
        "expires_at": s.expires_at,
        "last_active_at": s.last_active_at,
        "metadata": s.metadata,
    });
    if let Some(d) = s.expires_after_days {
        v["expires_after"] = json!({"anchor": "last_active_at", "days": d});
    }
    v
}

fn get_store(shared: &Shared, id: &str) -> Result<Answer, String> {
    let st = shared.st();
    Ok(match st.stores.get(id) {
        Some((_, s)) => ok(store(id, s)),
        None => store_not_found(id),
    })
}

fn store_not_found(id: &str) -> Answer {
    error(
        Vendor::OpenAi,
        404,
        &format!("No vector store found with id '{id}'."),
    )
}

fn delete_store(shared: &Shared, id: &str) -> Result<Answer, String> {
    let mut st = shared.st();
    Ok(match st.stores.remove(id) {
        Some(_) => ok(json!({"id": id, "object": "vector_store.deleted", "deleted": true})),
        None => store_not_found(id),
    })
}

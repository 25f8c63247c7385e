//! `object_store` targets against real servers started here: an S3 server (moto) and the
//! Azure Blob emulator (Azurite), on free loopback ports. Objects are written with metadata
//! through the same client library Lethe uses; what remains is read back from the server.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::path::Path as ObjPath;
use object_store::{Attribute, Attributes, ObjectStore, PutOptions, PutPayload};

use super::{Tmp, free_port, run_env};

pub(crate) const AZ_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's published development key (not a secret).
pub(crate) const AZ_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tool(env: &str, rel: &str, how: &str) -> PathBuf {
    let p = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(rel));
    assert!(
        p.exists(),
        "{} not found: run scripts/test, which installs it ({how}), or set {env}",
        p.display()
    );
    p
}

/// A server process killed when dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) port: u16,
}

impl Server {
    fn wait_ready(mut self, name: &str) -> Server {
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{name} exited before listening: {status}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{name} did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn moto(dir: &Path) -> Server {
    let bin = tool(
        "LETHE_TEST_MOTO_SERVER",
        ".cache/venv/bin/moto_server",
        "pip install 'moto[server]'",
    );
    let port = free_port();
    let child = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("MOTO_ENABLE_RECORDING", "True")
        .env("MOTO_RECORDER_FILEPATH", dir.join("moto_recording"))
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Server { child, port }.wait_ready("moto_server")
}

pub(crate) fn azurite(dir: &Path) -> Server {
    let bin = tool(
        "LETHE_TEST_AZURITE",
        ".cache/npm/node_modules/.bin/azurite-blob",
        "npm install azurite",
    );
    let port = free_port();
    let child = Command::new(bin)
        .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .arg("--location")
        .arg(dir.join("azurite"))
        .arg("--debug")
        .arg(dir.join("azurite-debug.log"))
        .args(["--skipApiVersionCheck", "--loose"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Server { child, port }.wait_ready("azurite-blob")
}

/// One HTTP/1.1 request on a fresh connection; the status and body.
pub(crate) fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Creates an Azurite container with a Shared Key request (object_store cannot create one).
pub(crate) fn az_create_container(port: u16, name: &str) {
    let (status, body) = az_request(port, "PUT", name, &[("restype", "container")], &[]);
    assert_eq!(status, 201, "create container: {body}");
}

/// A body-less request to Azurite signed with the account's Shared Key: `resource` is the
/// container (and blob) path, `query` its parameters, `headers` extra `x-ms-` headers.
pub(crate) fn az_request(
    port: u16,
    method: &str,
    resource: &str,
    query: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> (u16, String) {
    let date = httpdate_now();
    let mut ms: Vec<(String, String)> = vec![
        ("x-ms-date".into(), date),
        ("x-ms-version".into(), "2021-08-06".into()),
    ];
    ms.extend(
        headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())),
    );
    ms.sort();
    let mut query: Vec<(&str, &str)> = query.to_vec();
    query.sort();
    let mut to_sign = format!("{method}\n\n\n\n\n\n\n\n\n\n\n\n");
    for (k, v) in &ms {
        to_sign.push_str(&format!("{k}:{v}\n"));
    }
    to_sign.push_str(&format!("/{AZ_ACCOUNT}/{AZ_ACCOUNT}/{resource}"));
    for (k, v) in &query {
        to_sign.push_str(&format!("\n{k}:{v}"));
    }
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&B64.decode(AZ_KEY).unwrap()).unwrap();
    mac.update(to_sign.as_bytes());
    let sig = B64.encode(mac.finalize().into_bytes());
    ms.push((
        "Authorization".into(),
        format!("SharedKey {AZ_ACCOUNT}:{sig}"),
    ));
    let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    http(
        port,
        method,
        &format!("/{AZ_ACCOUNT}/{resource}?{}", q.join("&")),
        &ms,
        b"",
    )
}

fn httpdate_now() -> String {
    let t = lethe_core::time::Timestamp::from_unix_seconds(super::now_secs()).unwrap();
    // RFC 1123: "Mon, 23 Nov 2026 16:09:54 GMT"
    let iso = t.to_rfc3339();
    let (date, time) = iso.split_once('T').unwrap();
    let mut p = date.split('-').map(|x| x.parse::<i64>().unwrap());
    let (y, m, d) = (p.next().unwrap(), p.next().unwrap(), p.next().unwrap());
    // Zeller-free weekday: days since 1970-01-01 (a Thursday).
    let days = super::now_secs().div_euclid(86_400);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m - 1) as usize];
    format!("{wd}, {d:02} {mon} {y} {} GMT", &time[..8])
}

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// What to put: key and metadata entries.
pub(crate) type Seed = Vec<(String, Vec<(&'static str, String)>)>;

pub(crate) fn put_all(store: Arc<dyn ObjectStore>, seed: &Seed) {
    rt().block_on(async {
        futures::stream::iter(seed.iter().cloned())
            .map(|(key, md)| {
                let store = Arc::clone(&store);
                async move {
                    let mut attrs = Attributes::new();
                    for (k, v) in md {
                        attrs.insert(Attribute::Metadata(k.into()), v.into());
                    }
                    let opts = PutOptions {
                        attributes: attrs,
                        ..Default::default()
                    };
                    store
                        .put_opts(
                            &ObjPath::from(key.as_str()),
                            PutPayload::from_static(b"{}"),
                            opts,
                        )
                        .await
                        .unwrap();
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
    });
}

fn list_all(store: Arc<dyn ObjectStore>) -> BTreeSet<String> {
    rt().block_on(async {
        store
            .list(None)
            .map(|m| m.unwrap().location.to_string())
            .collect()
            .await
    })
}

const EXPIRED: usize = 1_200;

fn tags(expires: &str) -> Vec<(&'static str, String)> {
    vec![
        ("expires_at", expires.to_string()),
        ("data_type", "finetune".into()),
        ("owner", "ml-platform".into()),
        ("sensitivity", "internal".into()),
    ]
}

/// The same objects on either store: expired by metadata (many, so several bulk requests),
/// valid, young and untagged, an unreadable expiry, a subject's young object, and expired
/// objects outside the prefix (one in a sibling whose name merely starts the same).
fn seed() -> Seed {
    let mut s: Seed = Vec::new();
    for i in 0..EXPIRED {
        // One name with characters a path must carry through listing, HEAD and delete.
        let name = if i == 1 {
            "finetune/old/obj 0001 #ü=.jsonl".to_string()
        } else {
            format!("finetune/old/obj-{i:04}.jsonl")
        };
        s.push((name, tags("2020-01-01T00:00:00Z")));
    }
    for i in 0..5 {
        s.push((
            format!("finetune/valid/obj-{i}.jsonl"),
            tags("2099-01-01T00:00:00Z"),
        ));
    }
    for i in 0..3 {
        s.push((format!("finetune/young/untagged-{i}.jsonl"), vec![]));
    }
    s.push(("finetune/bad/when.jsonl".into(), tags("next tuesday")));
    let mut subj = tags("2099-01-01T00:00:00Z");
    subj.push(("user_id", "user-7".into()));
    s.push(("finetune/users/u7.jsonl".into(), subj));
    s.push(("other/old.jsonl".into(), tags("2020-01-01T00:00:00Z")));
    s.push(("finetune2/old.jsonl".into(), tags("2020-01-01T00:00:00Z")));
    s
}

fn config(dir: &Tmp, url: &str, options: &[(&str, String)]) -> PathBuf {
    let mut text = format!(
        r#"[state]
url = "sqlite://state.db"

[categories.finetune_dataset]
retention = "30d"

[[targets]]
name = "blobs"
type = "object_store"
url = "{url}"
category = "finetune_dataset"
subject = "user_id"
[targets.options]
"#
    );
    for (k, v) in options {
        text.push_str(&format!("{k} = \"{v}\"\n"));
    }
    text.push_str(
        "\n[tags]\nrequired = [\"expires_at\", \"data_type\", \"owner\", \"sensitivity\"]\n",
    );
    let p = dir.path("lethe.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs the shared story against one store; `count_deletes` says how many bulk and single
/// delete requests the server saw since the last call.
fn story(
    store: Arc<dyn ObjectStore>,
    dir: &Tmp,
    cfg: &Path,
    env: &[(&str, &str)],
    count_deletes: &dyn Fn() -> (usize, usize),
    bulk_size: usize,
) {
    let seed = seed();
    put_all(Arc::clone(&store), &seed);
    let before = list_all(Arc::clone(&store));
    assert_eq!(before.len(), seed.len());
    let _ = count_deletes();

    // `check` reaches the store and reports tag coverage.
    let check = run_env(cfg, env, &["check", "--json"]);
    assert_eq!(check.code, Some(0), "{}{}", check.stdout, check.stderr);
    let c = &check.json()["targets"][0];
    assert_eq!(c["untagged"], 3, "{}", check.stdout);
    assert_eq!(c["past_expiry"], EXPIRED, "{}", check.stdout);

    // A dry run deletes nothing and reports what it would.
    let dry = run_env(cfg, env, &["sweep", "--json"]);
    let j = dry.json();
    let t = &j["targets"][0];
    // found: the expired objects and the one whose expiry cannot be read.
    assert_eq!(t["found"], EXPIRED + 1, "{}", dry.stdout);
    assert_eq!(t["deleted"], 0);
    assert_eq!(t["failed"], 1, "the unreadable expires_at: {}", dry.stdout);
    // untagged: the three young objects without metadata.
    assert_eq!(t["untagged"], 3, "{}", dry.stdout);
    assert_eq!(
        list_all(Arc::clone(&store)),
        before,
        "a dry run changed the store"
    );
    assert_eq!(count_deletes(), (0, 0));

    // A legal hold on one expired object, named by its key (checked to exist).
    let held = "finetune/old/obj-0005.jsonl";
    let hold = run_env(
        cfg,
        env,
        &[
            "hold",
            "add",
            "--target",
            "blobs",
            "--key",
            held,
            "--case",
            "C-9",
            "--reason",
            "litigation",
        ],
    );
    assert_eq!(hold.code, Some(0), "{}{}", hold.stdout, hold.stderr);
    let missing = run_env(
        cfg,
        env,
        &[
            "hold",
            "add",
            "--target",
            "blobs",
            "--key",
            "finetune/nope",
            "--case",
            "C-9",
            "--reason",
            "x",
        ],
    );
    assert_eq!(
        missing.code,
        Some(2),
        "an unknown key is refused: {}",
        missing.stderr
    );

    // The apply deletes exactly the expired objects under the prefix, in bulk.
    let applied = run_env(cfg, env, &["sweep", "--apply", "--json"]);
    assert_eq!(applied.code, Some(1), "one item failed: {}", applied.stderr);
    let j = applied.json();
    let t = &j["targets"][0];
    assert_eq!(t["deleted"], EXPIRED - 1, "{}", applied.stdout);
    assert_eq!(t["held"], 1, "{}", applied.stdout);
    assert_eq!(t["failed"], 1);
    let left = list_all(Arc::clone(&store));
    let expected: BTreeSet<String> = before
        .iter()
        .filter(|k| !k.starts_with("finetune/old/") || k.as_str() == held)
        .cloned()
        .collect();
    assert_eq!(left, expected);
    let (bulk, single) = count_deletes();
    assert_eq!(
        bulk,
        (EXPIRED - 1).div_ceil(bulk_size),
        "bulk delete requests"
    );
    assert_eq!(single, 0, "no object needed a single delete");

    // The trail has an entry per deleted object and verifies.
    let log = run_env(
        cfg,
        env,
        &[
            "audit",
            "log",
            "--target",
            "blobs",
            "--key",
            "finetune/old/obj-0007.jsonl",
            "--json",
        ],
    );
    assert!(log.stdout.contains("\"deleted\""), "{}", log.stdout);
    let verify = run_env(cfg, env, &["audit", "verify"]);
    assert_eq!(verify.code, Some(0), "{}", verify.stdout);

    // An erasure reaches the subject's young object through its metadata, and nothing else.
    let erase = run_env(
        cfg,
        env,
        &["erase", "--subject", "user-7", "--apply", "--json"],
    );
    assert_eq!(erase.code, Some(0), "{}{}", erase.stdout, erase.stderr);
    assert_eq!(erase.json()["targets"][0]["deleted"], 1, "{}", erase.stdout);
    let after = list_all(Arc::clone(&store));
    let mut expected = expected;
    expected.remove("finetune/users/u7.jsonl");
    assert_eq!(after, expected);
    let _ = dir;
}

/// moto with a bucket `lethe-test`, and a client for it.
fn moto_bucket(dir: &Tmp) -> (Server, Arc<dyn ObjectStore>) {
    let server = moto(&dir.0);
    let (status, body) = http(server.port, "PUT", "/lethe-test", &[], b"");
    assert_eq!(status, 200, "create bucket: {body}");
    let store: Arc<dyn ObjectStore> = Arc::new(
        AmazonS3Builder::new()
            .with_bucket_name("lethe-test")
            .with_endpoint(format!("http://127.0.0.1:{}", server.port))
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .unwrap(),
    );
    (server, store)
}

/// A config for the `lethe-test/finetune/` prefix behind this S3 endpoint.
fn s3_config(dir: &Tmp, port: u16) -> PathBuf {
    config(
        dir,
        "s3://lethe-test/finetune/",
        &[
            ("aws_endpoint", format!("http://127.0.0.1:{port}")),
            ("aws_allow_http", "true".into()),
            ("aws_region", "us-east-1".into()),
        ],
    )
}

pub(crate) const S3_CREDS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
];

#[test]
fn s3_bulk_deletes_expired_objects_under_the_prefix() {
    let dir = Tmp::new("s3");
    let (server, store) = moto_bucket(&dir);
    let port = server.port;
    let cfg = s3_config(&dir, port);
    let env = S3_CREDS;
    // Requests are counted from moto's recording of every request it served.
    let count = || {
        let (_, rec) = http(
            port,
            "GET",
            "/moto-api/recorder/download-recording",
            &[],
            b"",
        );
        let mut bulk = 0;
        let mut single = 0;
        for line in rec.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let url = v["url"].as_str().unwrap_or("");
            match v["method"].as_str() {
                Some("POST") if url.contains("?delete") => bulk += 1,
                Some("DELETE") => single += 1,
                _ => {}
            }
        }
        http(port, "POST", "/moto-api/recorder/reset-recording", &[], b"");
        http(port, "POST", "/moto-api/recorder/start-recording", &[], b"");
        (bulk, single)
    };
    story(store, &dir, &cfg, &env, &count, 1_000);
}

#[test]
fn azure_blob_batch_deletes_expired_blobs_under_the_prefix() {
    let dir = Tmp::new("azure");
    let server = azurite(&dir.0);
    let port = server.port;
    az_create_container(port, "lethe-test");
    let endpoint = format!("http://127.0.0.1:{port}/{AZ_ACCOUNT}");
    let store: Arc<dyn ObjectStore> = Arc::new(
        MicrosoftAzureBuilder::new()
            .with_account(AZ_ACCOUNT)
            .with_access_key(AZ_KEY)
            .with_container_name("lethe-test")
            .with_endpoint(endpoint.clone())
            .with_allow_http(true)
            .build()
            .unwrap(),
    );
    let cfg = config(
        &dir,
        "az://lethe-test/finetune/",
        &[
            ("azure_storage_account_name", AZ_ACCOUNT.into()),
            ("azure_storage_endpoint", endpoint.clone()),
            ("azure_allow_http", "true".into()),
        ],
    );
    let env = [("AZURE_STORAGE_ACCOUNT_KEY", AZ_KEY)];
    // Requests are counted from Azurite's debug log, which names every request it served.
    let log = dir.path("azurite-debug.log");
    let seen = std::cell::Cell::new(0usize);
    let count = || {
        // Azurite writes its log behind its answers: wait until it stops growing.
        let mut size = u64::MAX;
        loop {
            std::thread::sleep(Duration::from_millis(400));
            let now = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
            if now == size {
                break;
            }
            size = now;
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let fresh = &lines[seen.get().min(lines.len())..];
        seen.set(lines.len());
        // A batch's own sub-requests are logged with the full host; requests sent on their
        // own are logged with the host alone.
        let bulk = fresh
            .iter()
            .filter(|l| l.contains("RequestMethod=POST") && l.contains("comp=batch"))
            .count();
        let single = fresh
            .iter()
            .filter(|l| l.contains("RequestMethod=DELETE RequestURL=http://127.0.0.1/"))
            .count();
        (bulk, single)
    };
    story(store, &dir, &cfg, &env, &count, 256);
}

/// A proxy in front of a server that answers the first requests matching each rule with
/// an error status instead of forwarding them, and logs what it did.
pub(crate) struct Flaky {
    pub(crate) port: u16,
    /// (method, url, status answered by the proxy or 0 when forwarded)
    log: Arc<std::sync::Mutex<Vec<(String, String, u16)>>>,
    /// The rules still to apply: a test may add some, or clear them, while the proxy runs.
    pub(crate) rules: Arc<std::sync::Mutex<Vec<Rule>>>,
}

/// A rule: method, a string the request URL contains, the status to answer, how many times.
pub(crate) type Rule = (&'static str, &'static str, u16, usize);

/// Called with each forwarded request's method and URL once the server answered it, before
/// the answer is passed on.
type Hook = Arc<dyn Fn(&str, &str) + Send + Sync>;

pub(crate) fn flaky_proxy(upstream: u16, rules: Vec<Rule>) -> Flaky {
    hooked_proxy(upstream, rules, Arc::new(|_: &str, _: &str| {}))
}

fn hooked_proxy(upstream: u16, rules: Vec<Rule>, hook: Hook) -> Flaky {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let rules = Arc::new(std::sync::Mutex::new(rules));
    let rules2 = Arc::clone(&rules);
    let log2 = Arc::clone(&log);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { break };
            let log = Arc::clone(&log2);
            let rules = Arc::clone(&rules);
            let hook = Arc::clone(&hook);
            std::thread::spawn(move || proxy_one(conn, upstream, &rules, &log, &*hook));
        }
    });
    Flaky {
        port,
        log,
        rules: rules2,
    }
}

/// Serves one request on this connection, then closes it (the client reconnects).
fn proxy_one(
    mut conn: TcpStream,
    upstream: u16,
    rules: &std::sync::Mutex<Vec<Rule>>,
    log: &std::sync::Mutex<Vec<(String, String, u16)>>,
    hook: &(dyn Fn(&str, &str) + Send + Sync),
) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut parts = head.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let url = parts.next().unwrap_or("").to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    if conn.read_exact(&mut body).is_err() {
        return;
    }
    let refuse = {
        let mut rules = rules.lock().unwrap();
        rules
            .iter_mut()
            .find(|(m, u, _, left)| *m == method && url.contains(u) && *left > 0)
            .map(|r| {
                r.3 -= 1;
                r.2
            })
    };
    if let Some(status) = refuse {
        log.lock().unwrap().push((method, url, status));
        let body = "<Error><Code>SlowDown</Code><Message>try again</Message></Error>";
        let _ = write!(
            conn,
            "HTTP/1.1 {status} Refused\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return;
    }
    log.lock().unwrap().push((method.clone(), url.clone(), 0));
    let head: String = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\r\n"))
        .collect();
    let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let _ = up.write_all(format!("{head}Connection: close\r\n\r\n").as_bytes());
    let _ = up.write_all(&body);
    let mut answer = Vec::new();
    let _ = up.read_to_end(&mut answer);
    hook(&method, &url);
    let _ = conn.write_all(&answer);
}

/// `n` objects under `finetune/old/` past their `expires_at`, and `finetune/valid.bin`.
fn expired_and_one_valid(n: usize) -> Seed {
    let mut seed: Seed = (0..n)
        .map(|i| {
            (
                format!("finetune/old/{i:04}.bin"),
                tags("2020-01-01T00:00:00Z"),
            )
        })
        .collect();
    seed.push(("finetune/valid.bin".into(), tags("2099-01-01T00:00:00Z")));
    seed
}

#[test]
fn s3_server_errors_and_throttling_are_retried() {
    let dir = Tmp::new("s3-flaky");
    let (server, store) = moto_bucket(&dir);
    put_all(Arc::clone(&store), &expired_and_one_valid(1_500));
    // The first bulk delete gets a 503, the next one a 429, and two HEADs a 429 each.
    let proxy = flaky_proxy(
        server.port,
        vec![
            ("POST", "?delete", 503, 1),
            ("POST", "?delete", 429, 1),
            ("HEAD", "/finetune/old/", 429, 2),
        ],
    );
    let cfg = s3_config(&dir, proxy.port);
    let env = S3_CREDS;
    let r = run_env(&cfg, &env, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(j["targets"][0]["deleted"], 1_500, "{}", r.stdout);
    assert_eq!(j["targets"][0]["failed"], 0, "{}", r.stdout);
    let left = list_all(store);
    assert_eq!(left, BTreeSet::from(["finetune/valid.bin".to_string()]));
    let log = proxy.log.lock().unwrap().clone();
    let refused = |m: &str, s: u16| log.iter().filter(|(lm, _, ls)| lm == m && *ls == s).count();
    assert_eq!(refused("POST", 503), 1);
    assert_eq!(refused("POST", 429), 1);
    assert_eq!(refused("HEAD", 429), 2);
    // Both chunks went through in bulk after their retries; nothing fell back to singles.
    let forwarded_bulk = log
        .iter()
        .filter(|(m, u, s)| m == "POST" && u.contains("?delete") && *s == 0)
        .count();
    assert_eq!(forwarded_bulk, 2, "{log:?}");
    assert!(!log.iter().any(|(m, _, _)| m == "DELETE"), "{log:?}");
}

/// Killed after the bulk deletes but before their entries reach the trail: the rerun finds
/// the objects gone and records each deletion exactly once; the chain verifies.
#[test]
fn s3_sweep_killed_after_deleting_is_finished_by_the_next_run() {
    use std::os::unix::process::ExitStatusExt;

    let dir = Tmp::new("s3-crash");
    let (server, store) = moto_bucket(&dir);
    put_all(Arc::clone(&store), &expired_and_one_valid(40));
    let cfg = s3_config(&dir, server.port);
    let creds = S3_CREDS;
    super::ensure_init_env(&cfg, &creds);
    let out = super::lethe_failpoint("after_delete")
        .args(["sweep", "--apply", "--config"])
        .arg(&cfg)
        .envs(creds)
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "the failpoint kills the sweep"
    );
    let left = list_all(Arc::clone(&store));
    assert_eq!(
        left.len(),
        1,
        "the objects were deleted before the kill: {left:?}"
    );

    let r = run_env(&cfg, &creds, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let entries = run_env(&cfg, &creds, &["audit", "export", "--format", "jsonl"]);
    let deleted: Vec<String> = entries
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["action"] == "deleted")
        .map(|e| e["item_key"].as_str().unwrap().to_string())
        .collect();
    let distinct: BTreeSet<&String> = deleted.iter().collect();
    assert_eq!(
        deleted.len(),
        40,
        "one entry per deleted object: {deleted:?}"
    );
    assert_eq!(distinct.len(), 40);
    assert_eq!(run_env(&cfg, &creds, &["audit", "verify"]).code, Some(0));
}

/// A bucket console's "folder" marker `finetune/` lists back as the path `finetune`, which
/// names another object, outside the prefix: it must never be judged or deleted.
#[test]
fn s3_folder_marker_never_leads_to_the_object_beside_the_prefix() {
    let dir = Tmp::new("s3-marker");
    let (server, store) = moto_bucket(&dir);
    let (status, body) = http(server.port, "PUT", "/lethe-test/finetune/", &[], b"");
    assert_eq!(status, 200, "put folder marker: {body}");
    let seed: Seed = vec![
        ("finetune".into(), tags("2020-01-01T00:00:00Z")),
        ("finetune/old.bin".into(), tags("2020-01-01T00:00:00Z")),
    ];
    put_all(Arc::clone(&store), &seed);
    let cfg = s3_config(&dir, server.port);
    let r = run_env(&cfg, &S3_CREDS, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let t = &r.json()["targets"][0];
    assert_eq!(
        (t["found"].as_u64(), t["deleted"].as_u64()),
        (Some(1), Some(1)),
        "{}",
        r.stdout
    );
    rt().block_on(async {
        use object_store::ObjectStoreExt;
        assert!(
            store.head(&ObjPath::from("finetune")).await.is_ok(),
            "the object beside the prefix was deleted"
        );
        assert!(
            store
                .head(&ObjPath::from("finetune/old.bin"))
                .await
                .is_err()
        );
    });
}

/// Every key under `prefix` as the server stores it, through a plain ListObjectsV2 request
/// (the client library refuses some keys S3 allows, so it cannot be the witness here).
fn s3_raw_keys(port: u16, prefix: &str) -> BTreeSet<String> {
    let (status, body) = http(
        port,
        "GET",
        &format!("/lethe-test?list-type=2&prefix={prefix}"),
        &[],
        b"",
    );
    assert_eq!(status, 200, "list: {body}");
    body.split("<Key>")
        .skip(1)
        .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_string()))
        .collect()
}

/// Puts an object through a plain request, the key sent as written (no path cleaning).
fn s3_raw_put(port: u16, key: &str, expires_at: &str) {
    let (status, body) = http(
        port,
        "PUT",
        &format!("/lethe-test/{key}"),
        &[("x-amz-meta-expires_at".into(), expires_at.into())],
        b"{}",
    );
    assert_eq!(status, 200, "put {key}: {body}");
}

/// Keys S3 allows but the client library's paths refuse (an empty, `.` or `..` segment):
/// each is a failed item named by its own key and kept; the rest of the prefix is swept.
#[test]
fn s3_keys_the_client_cannot_name_are_failed_items_and_the_rest_is_swept() {
    let dir = Tmp::new("s3-odd-keys");
    let (server, store) = moto_bucket(&dir);
    let port = server.port;
    put_all(Arc::clone(&store), &expired_and_one_valid(3));
    let odd = [
        "finetune/a//b.jsonl",
        "finetune/./x.jsonl",
        "finetune/../y.jsonl",
    ];
    for k in odd {
        s3_raw_put(port, k, "2020-01-01T00:00:00Z");
    }
    let cfg = s3_config(&dir, port);
    let check = run_env(&cfg, &S3_CREDS, &["check"]);
    assert_eq!(check.code, Some(0), "{}{}", check.stdout, check.stderr);

    let r = run_env(&cfg, &S3_CREDS, &["sweep", "--apply", "--json"]);
    assert_eq!(
        r.code,
        Some(1),
        "failures, not an unusable config: {}{}",
        r.stdout,
        r.stderr
    );
    let t = &r.json()["targets"][0];
    assert_eq!(t["deleted"], 3, "{}", r.stdout);
    assert_eq!(t["failed"], 3, "{}", r.stdout);
    let mut expected: BTreeSet<String> = odd.iter().map(|k| k.to_string()).collect();
    expected.insert("finetune/valid.bin".into());
    assert_eq!(s3_raw_keys(port, "finetune/"), expected);

    let entries = run_env(&cfg, &S3_CREDS, &["audit", "export", "--format", "jsonl"]);
    let failed: BTreeSet<String> = entries
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["action"] == "failed")
        .map(|e| e["item_key"].as_str().unwrap_or("").to_string())
        .collect();
    let odd_set: BTreeSet<String> = odd.iter().map(|k| k.to_string()).collect();
    assert_eq!(failed, odd_set, "each odd key is reported by its own name");
}

/// What the server says of one object, through the client library.
fn s3_head(store: &Arc<dyn ObjectStore>, key: &str) -> Option<(object_store::ObjectMeta, String)> {
    rt().block_on(async {
        let opts = object_store::GetOptions {
            head: true,
            ..Default::default()
        };
        let r = store.get_opts(&ObjPath::from(key), opts).await.ok()?;
        let expires = r
            .attributes
            .iter()
            .find_map(|(k, v)| match k {
                Attribute::Metadata(n) if n.eq_ignore_ascii_case("expires_at") => {
                    Some(v.as_ref().to_string())
                }
                _ => None,
            })
            .unwrap_or_default();
        Some((r.meta, expires))
    })
}

/// The audit entries of one action, as JSON objects.
fn entries_of(cfg: &Path, action: &str) -> Vec<serde_json::Value> {
    let out = run_env(cfg, &S3_CREDS, &["audit", "export", "--format", "jsonl"]);
    out.stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["action"] == action)
        .collect()
}

/// In a versioned bucket, an object overwritten after its HEAD (with a new expiry) keeps
/// its new version: the deletion removes exactly the version judged, and its entry names it.
#[test]
fn s3_versioned_overwrite_after_judgement_survives_as_the_current_version() {
    let dir = Tmp::new("s3-versions");
    let (server, store) = moto_bucket(&dir);
    let port = server.port;
    let (status, body) = http(
        port,
        "PUT",
        "/lethe-test?versioning",
        &[],
        b"<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>",
    );
    assert_eq!(status, 200, "enable versioning: {body}");
    put_all(Arc::clone(&store), &expired_and_one_valid(3));
    let key = "finetune/old/0001.bin";
    let (judged, _) = s3_head(&store, key).expect("the object is there");
    let judged_version = judged
        .version
        .clone()
        .expect("a versioned bucket gives version ids");

    // Once the server has answered the sweep's HEAD of `key`, a new body is put there with
    // a future expiry, before the sweep sees the answer (and so before it deletes).
    let overwritten = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&overwritten);
    let writer = Arc::clone(&store);
    let hook: Hook = Arc::new(move |method: &str, url: &str| {
        if method == "HEAD"
            && url.contains(key)
            && !flag.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            put_all(
                Arc::clone(&writer),
                &vec![(key.to_string(), tags("2099-01-01T00:00:00Z"))],
            );
        }
    });
    let proxy = hooked_proxy(port, Vec::new(), hook);
    let cfg = s3_config(&dir, proxy.port);
    let r = run_env(&cfg, &S3_CREDS, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(
        overwritten.load(std::sync::atomic::Ordering::SeqCst),
        "the hook ran"
    );
    assert_eq!(r.json()["targets"][0]["deleted"], 3, "{}", r.stdout);
    // One bulk request named the versions; nothing fell back to single deletes.
    let log = proxy.log.lock().unwrap().clone();
    let bulk = log
        .iter()
        .filter(|(m, u, _)| m == "POST" && u.contains("delete"))
        .count();
    assert_eq!(bulk, 1, "{log:?}");
    assert!(!log.iter().any(|(m, _, _)| m == "DELETE"), "{log:?}");

    // The new version is current, with its own expiry; the judged one is gone.
    let (now, expires) = s3_head(&store, key).expect("the overwrite survives");
    assert_eq!(expires, "2099-01-01T00:00:00Z");
    assert_ne!(now.version.as_deref(), Some(judged_version.as_str()));
    let (_, versions) = http(
        port,
        "GET",
        "/lethe-test?versions&prefix=finetune/old/",
        &[],
        b"",
    );
    assert!(
        !versions.contains("<DeleteMarker>"),
        "no delete marker: {versions}"
    );
    assert!(
        !versions.contains(&judged_version),
        "judged version gone: {versions}"
    );
    assert_eq!(versions.matches("<Version>").count(), 1, "{versions}");

    // The entry names the version it deleted.
    let deleted = entries_of(&cfg, "deleted");
    let entry = deleted
        .iter()
        .find(|e| e["item_key"] == key)
        .expect("an entry for the object");
    let detail = entry["detail"].as_str().unwrap_or("");
    assert!(detail.contains(&judged_version), "{entry}");
}

/// Without versions, the entry of a deleted object says what was judged: its ETag and its
/// last-modified time.
#[test]
fn s3_deleted_entry_names_the_etag_and_last_modified_judged() {
    let dir = Tmp::new("s3-judged");
    let (server, store) = moto_bucket(&dir);
    put_all(Arc::clone(&store), &expired_and_one_valid(1));
    let key = "finetune/old/0000.bin";
    let (meta, _) = s3_head(&store, key).expect("the object is there");
    let etag = meta.e_tag.clone().expect("an ETag");
    let modified = lethe_core::time::Timestamp::from_micros(meta.last_modified.timestamp_micros())
        .to_rfc3339();
    let cfg = s3_config(&dir, server.port);
    let r = run_env(&cfg, &S3_CREDS, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(r.json()["targets"][0]["deleted"], 1, "{}", r.stdout);
    let deleted = entries_of(&cfg, "deleted");
    let entry = deleted
        .iter()
        .find(|e| e["item_key"] == key)
        .expect("an entry for the object");
    let detail = entry["detail"].as_str().unwrap_or("");
    assert!(detail.contains(&etag), "ETag {etag} in {entry}");
    assert!(detail.contains(&modified), "{modified} in {entry}");
}

/// Issue 15: an object's own `sensitivity` metadata entry (`sensitivity_metadata`) brings
/// its level's cap; an object naming another level, or none, keeps the window; a level
/// nobody defined is read as the strictest.
#[test]
fn s3_an_objects_metadata_names_its_level_and_its_cap_applies() {
    let dir = Tmp::new("s3-levels");
    let (server, store) = moto_bucket(&dir);
    let level = |l: &str| vec![("sensitivity", l.to_string())];
    let seed: Seed = vec![
        ("finetune/restricted.bin".into(), level("Restricted")),
        ("finetune/internal.bin".into(), level("internal")),
        ("finetune/unknown.bin".into(), level("top-secret")),
        ("finetune/none.bin".into(), vec![]),
    ];
    put_all(Arc::clone(&store), &seed);
    let cfg = s3_config(&dir, server.port);
    let text = std::fs::read_to_string(&cfg).unwrap();
    // Restricted objects live 1 s; the objects were just written, so only a cap can make
    // one due.
    let text = text
        .replace(
            "subject = \"user_id\"\n",
            "subject = \"user_id\"\nsensitivity_metadata = \"sensitivity\"\n",
        )
        .replace(
            "[tags]",
            "[sensitivity.restricted]\nmax = \"1s\"\n\n[sensitivity.internal]\nmax = \"30d\"\n\n[tags]",
        );
    std::fs::write(&cfg, text).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let r = run_env(&cfg, &S3_CREDS, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let left = list_all(Arc::clone(&store));
    let want: BTreeSet<String> = ["finetune/internal.bin", "finetune/none.bin"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(left, want);
    let deleted = entries_of(&cfg, "deleted");
    let rule = |key: &str| {
        deleted
            .iter()
            .find(|e| e["item_key"] == key)
            .and_then(|e| e["window"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    assert_eq!(
        rule("finetune/restricted.bin"),
        "cap 1s (sensitivity restricted)"
    );
    assert!(
        rule("finetune/unknown.bin") == "cap 1s (unknown sensitivity level, read as the strictest)",
        "{deleted:?}"
    );
}

//! `lethe serve`'s HTTP API, against the real daemon on a free loopback port: every change
//! needs a token whose role allows it (the list of changes is read from the daemon's own
//! `/openapi.json`, so a new endpoint cannot escape), what a token changes is recorded under
//! its name, no token's value ever shows (log, trail, answers), schemathesis finds nothing
//! against the OpenAPI document, and the daemon refuses to start where it would be unsafe.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::*;

/// The roles, in the order of [`tokens`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Viewer,
    Operator,
    Legal,
    Admin,
}

impl Role {
    const ALL: [Role; 4] = [Role::Viewer, Role::Operator, Role::Legal, Role::Admin];

    fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Legal => "legal",
            Role::Admin => "admin",
        }
    }

    /// Whether a token of this role may do what `needed` allows (operator and legal side by
    /// side, admin everything).
    fn may(self, needed: Role) -> bool {
        self == needed || self == Role::Admin || needed == Role::Viewer
    }
}

/// One configured token: its name (the actor in the trail), its variable and its value.
#[derive(Clone, Debug)]
struct Token {
    role: Role,
    name: String,
    env: String,
    value: String,
}

/// A token per role, with values no other text of the test could contain by chance.
fn tokens() -> Vec<Token> {
    let nonce = format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    Role::ALL
        .iter()
        .map(|&role| Token {
            role,
            name: format!("{}-desk", role.name()),
            env: format!("LETHE_IT_TOKEN_{}", role.name().to_uppercase()),
            value: format!("tok{}{nonce}Zq9", role.name()),
        })
        .collect()
}

fn token(tokens: &[Token], role: Role) -> &Token {
    tokens.iter().find(|t| t.role == role).unwrap()
}

/// The training table of [`seed_training`] (even ids 10 days past expiry, each row owning a
/// file), its config, and an `[api]` section naming `tokens`. The state is made (`init`).
fn setup(name: &str, tokens: &[Token]) -> (Tmp, PathBuf) {
    let dir = Tmp::new(name);
    seed_training(&dir, 40);
    let cfg = training_config(&dir);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("\n[exceptions]\nmax_extension = \"30d\"\n\n[api]\n");
    for t in tokens {
        text.push_str(&format!(
            "[[api.tokens]]\nname = \"{}\"\nrole = \"{}\"\ntoken_env = \"{}\"\n",
            t.name,
            t.role.name(),
            t.env
        ));
    }
    std::fs::write(&cfg, text).unwrap();
    let r = run_raw(&cfg, &["init"]);
    assert_eq!(r.code, Some(0), "init: {}{}", r.stdout, r.stderr);
    // Noted as made, so that the `lethe` commands the test runs beside the daemon do not run
    // `init` again while it writes.
    ensure_init(&cfg);
    (dir, cfg)
}

/// `lethe serve` in the background, stopped (SIGTERM, then SIGKILL) when dropped, whatever
/// the test did meanwhile.
struct Serve {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Serve {
    /// Starts the daemon on a free loopback port with `env` and waits for `/readyz`. The port
    /// is free when asked for, not necessarily when the daemon binds it (another test, or an
    /// outgoing connection, may take it meanwhile): a daemon that could not listen is started
    /// again on another port, and one is ready only once its own log says it listens, so that
    /// the test never talks to another test's daemon.
    fn start(dir: &Tmp, cfg: &Path, env: &[(&str, &str)]) -> Serve {
        for _ in 0..3 {
            let port = free_port();
            let log = dir.path(&format!("serve-{port}.log"));
            let mut c = lethe();
            c.arg("serve")
                .arg("--config")
                .arg(cfg)
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap());
            for (k, v) in env {
                c.env(k, v);
            }
            let mut s = Serve {
                child: c.spawn().unwrap(),
                port,
                log,
            };
            let listening = format!("listen=127.0.0.1:{port}");
            let started = Instant::now();
            loop {
                if let Ok(Some(status)) = s.child.try_wait() {
                    let log = s.log();
                    if log.contains("cannot listen on") {
                        break;
                    }
                    panic!("lethe serve exited ({status}) before it was ready:\n{log}");
                }
                if s.log().contains(&listening)
                    && http(port, "GET", "/readyz", None, None).status == 200
                {
                    return s;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "lethe serve was not ready within 30 s:\n{}",
                    s.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("lethe serve could not listen on three free ports in a row");
    }

    /// What the daemon wrote on stderr so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and the daemon's exit within 10 s (as documented).
    fn stop(&mut self) {
        if let Some(p) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!(
            "lethe serve did not stop within 10 s of SIGTERM:\n{}",
            self.log()
        );
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// An answer: its status, headers (names in lower case) and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// An error answer: JSON, with a non-empty `error` string.
    fn assert_error(&self, what: &str) {
        assert!(
            self.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{what}: {} is not JSON: {:?}",
            self.status,
            self.headers
        );
        let j = self.json();
        assert!(
            j["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {} has no \"error\" string: {}",
            self.status,
            self.body
        );
    }
}

/// One HTTP/1.1 request on a fresh connection, with an Authorization header (its value as
/// given) and a JSON body when given.
fn http(port: u16, method: &str, path: &str, auth: Option<&str>, json: Option<&str>) -> Answer {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = json.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if json.is_some() {
        req.push_str("Content-Type: application/json\r\n");
    }
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: not an HTTP answer: {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        super::serve::dechunk(rest)
    } else {
        rest.to_string()
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// A client that keeps every answer's body and headers, for the check that no token's value
/// was ever in one.
struct Client {
    port: u16,
    seen: std::cell::RefCell<Vec<String>>,
}

impl Client {
    fn new(port: u16) -> Client {
        Client {
            port,
            seen: Default::default(),
        }
    }

    /// A request with this bearer token, if any.
    fn call(&self, method: &str, path: &str, bearer: Option<&str>, json: Option<&str>) -> Answer {
        let auth = bearer.map(|t| format!("Bearer {t}"));
        self.call_auth(method, path, auth.as_deref(), json)
    }

    /// A request with this Authorization header, if any.
    fn call_auth(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        json: Option<&str>,
    ) -> Answer {
        let a = http(self.port, method, path, auth, json);
        let mut seen = self.seen.borrow_mut();
        seen.push(a.body.clone());
        seen.extend(a.headers.iter().map(|(k, v)| format!("{k}: {v}")));
        a
    }
}

/// The role an operation of the API needs, by method and path as `/openapi.json` spells
/// them. An operation missing here fails the test: whoever adds one says who may call it.
fn needed(method: &str, path: &str) -> Role {
    match (method, path) {
        ("post", "/v1/sweeps" | "/v1/erasure-requests" | "/v1/access-requests") => Role::Operator,
        (
            "post",
            "/v1/holds"
            | "/v1/holds/{id}/release"
            | "/v1/exceptions"
            | "/v1/exceptions/{id}/revoke",
        ) => Role::Legal,
        (
            "get",
            "/v1/erasure-requests"
            | "/v1/erasure-requests/{id}"
            | "/v1/erasure-requests/{id}/receipt",
        ) => Role::Operator,
        ("get", "/v1/holds" | "/v1/exceptions") => Role::Legal,
        ("get", "/v1/targets" | "/v1/runs" | "/v1/runs/{run_id}")
        | ("get", "/v1/audit/entries" | "/v1/audit/verify") => Role::Viewer,
        _ => panic!(
            "{} {path} is in /openapi.json and not in this test's table of roles: add the role it needs",
            method.to_uppercase()
        ),
    }
}

/// Every operation of the document: its method, its path, and the path with its parameters
/// filled with ids that name nothing.
fn operations(doc: &Value) -> Vec<(String, String, String)> {
    const METHODS: [&str; 9] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace", "query",
    ];
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let mut concrete = path.clone();
            while let (Some(a), Some(b)) = (concrete.find('{'), concrete.find('}')) {
                concrete.replace_range(a..=b, "nothing-here");
            }
            out.push((method.clone(), path.clone(), concrete));
        }
    }
    out
}

#[test]
fn every_change_needs_a_token_whose_role_allows_it() {
    let toks = tokens();
    let (dir, cfg) = setup("serve-roles", &toks);
    let env: Vec<(&str, &str)> = toks
        .iter()
        .map(|t| (t.env.as_str(), t.value.as_str()))
        .collect();
    let serve = Serve::start(&dir, &cfg, &env);
    let c = Client::new(serve.port);
    let doc = c.call("GET", "/openapi.json", None, None);
    assert_eq!(doc.status, 200, "{}", doc.body);
    let doc = doc.json();
    let ops = operations(&doc);
    let changes: BTreeSet<(String, String)> = ops
        .iter()
        .filter(|(m, _, _)| m != "get")
        .map(|(m, p, _)| (m.clone(), p.clone()))
        .collect();
    // The document lists every change the API makes: none may go missing from it either.
    for p in [
        "/v1/sweeps",
        "/v1/erasure-requests",
        "/v1/access-requests",
        "/v1/holds",
        "/v1/holds/{id}/release",
        "/v1/exceptions",
        "/v1/exceptions/{id}/revoke",
    ] {
        assert!(
            changes.contains(&("post".to_string(), p.to_string())),
            "POST {p} is not in /openapi.json: {changes:?}"
        );
    }
    for (method, path, concrete) in &ops {
        if !path.starts_with("/v1/") {
            continue;
        }
        let m = method.to_uppercase();
        let what = |who: &str| format!("{m} {path} {who}");
        let body = (m != "GET").then_some("{}");
        let need = needed(method, path);
        // No token, a token nobody configured, a viewer's token where it does not do.
        let a = c.call(&m, concrete, None, body);
        assert_eq!(a.status, 401, "{}: {}", what("without a token"), a.body);
        a.assert_error(&what("without a token"));
        assert!(
            a.header("www-authenticate")
                .is_some_and(|h| h.starts_with("Bearer")),
            "{}: {:?}",
            what("without a token"),
            a.headers
        );
        for wrong in ["Bearer not-a-token", "Basic dXNlcjpwYXNz", "Bearer "] {
            let a = c.call_auth(&m, concrete, Some(wrong), body);
            assert_eq!(a.status, 401, "{} {wrong:?}: {}", what("with"), a.body);
            a.assert_error(&what("with a wrong token"));
        }
        for t in &toks {
            let a = c.call(&m, concrete, Some(&t.value), body);
            let who = what(&format!("as {}", t.role.name()));
            if t.role.may(need) {
                assert!(
                    a.status != 401 && a.status != 403,
                    "{who} is refused ({}): {}",
                    a.status,
                    a.body
                );
            } else {
                assert_eq!(a.status, 403, "{who}: {}", a.body);
                assert!(
                    a.body.contains(&t.name) && a.body.contains(need.name()),
                    "{who}: the refusal names the token and the role needed: {}",
                    a.body
                );
            }
            if a.status >= 400 {
                a.assert_error(&who);
            }
        }
    }
    // What the API leaves open needs no token.
    for p in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert_eq!(c.call("GET", p, None, None).status, 200, "{p}");
    }
    // An unknown path, a method the path does not take: JSON errors too.
    let a = c.call("GET", "/v2/nothing", None, None);
    assert_eq!(a.status, 404);
    a.assert_error("an unknown path");
    let a = c.call(
        "DELETE",
        "/v1/holds",
        Some(&token(&toks, Role::Admin).value),
        None,
    );
    assert_eq!(a.status, 405);
    a.assert_error("DELETE /v1/holds");
    let allow = a.header("allow").unwrap_or_default();
    assert!(
        allow.contains("GET") && allow.contains("POST"),
        "405 without the methods allowed: {:?}",
        a.headers
    );
    never_shown(&toks, &serve, &cfg, &c.seen.borrow());
}

/// No token's value in the daemon's log, the trail, or any answer the test saw.
fn never_shown(toks: &[Token], serve: &Serve, cfg: &Path, answers: &[String]) {
    let log = serve.log();
    let trail = run(cfg, &["audit", "export", "--format", "jsonl"]);
    assert_eq!(trail.code, Some(0), "{}", trail.stderr);
    for t in toks {
        assert!(
            !log.contains(&t.value),
            "the daemon's log shows the {} token:\n{log}",
            t.name
        );
        assert!(
            !trail.stdout.contains(&t.value),
            "the trail holds the {} token",
            t.name
        );
        for a in answers {
            assert!(
                !a.contains(&t.value),
                "an answer shows the {} token: {a}",
                t.name
            );
        }
    }
}

#[test]
fn what_a_token_changes_is_recorded_under_its_name_never_its_value() {
    let toks = tokens();
    let (dir, cfg) = setup("serve-actor", &toks);
    let env: Vec<(&str, &str)> = toks
        .iter()
        .map(|t| (t.env.as_str(), t.value.as_str()))
        .collect();
    let mut serve = Serve::start(&dir, &cfg, &env);
    let c = Client::new(serve.port);
    let legal = token(&toks, Role::Legal);
    let admin = token(&toks, Role::Admin);
    let operator = token(&toks, Role::Operator);

    // A hold placed by the legal token: the register and the trail name the token.
    let a = c.call(
        "POST",
        "/v1/holds",
        Some(&legal.value),
        Some(r#"{"subject": "user-3", "case_id": "CASE-7", "reason": "litigation"}"#),
    );
    assert_eq!(a.status, 201, "{}", a.body);
    let hold = a.json()["id"].as_str().unwrap().to_string();
    let r = run(&cfg, &["hold", "list", "--json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let listed = r.json();
    let h = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == hold.as_str())
        .unwrap_or_else(|| panic!("hold {hold} is not listed: {listed}"));
    assert_eq!(h["placed_by"], legal.name.as_str(), "{h}");
    // The API's list says the same.
    let a = c.call("GET", "/v1/holds", Some(&legal.value), None);
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains(&hold) && a.body.contains(&legal.name));

    // Released, by the admin token this time.
    let a = c.call(
        "POST",
        &format!("/v1/holds/{hold}/release"),
        Some(&admin.value),
        Some(r#"{"reason": "case closed"}"#),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["status"], "released");
    let a = c.call(
        "POST",
        &format!("/v1/holds/{hold}/release"),
        Some(&admin.value),
        Some(r#"{"reason": "again"}"#),
    );
    assert_eq!(a.status, 409, "released twice: {}", a.body);
    a.assert_error("a second release");

    // An exception on an item 10 days past expiry, for 5 days more.
    let until = lethe_core::time::Timestamp::from_unix_seconds(now_secs() + 5 * DAY)
        .unwrap()
        .to_rfc3339();
    let a = c.call(
        "POST",
        "/v1/exceptions",
        Some(&legal.value),
        Some(&format!(
            r#"{{"target": "training_records", "key": "2", "until": "{until}", "owner": "ml-team", "reason": "retraining audit"}}"#
        )),
    );
    assert_eq!(a.status, 201, "{}", a.body);
    let exc = a.json()["id"].as_str().unwrap().to_string();
    // Beyond [exceptions] max_extension: refused as the documented conflict.
    let far = lethe_core::time::Timestamp::from_unix_seconds(now_secs() + 60 * DAY)
        .unwrap()
        .to_rfc3339();
    let a = c.call(
        "POST",
        "/v1/exceptions",
        Some(&legal.value),
        Some(&format!(
            r#"{{"target": "training_records", "key": "4", "until": "{far}", "owner": "ml-team", "reason": "too long"}}"#
        )),
    );
    assert_eq!(a.status, 409, "past max_extension: {}", a.body);
    assert!(a.body.contains("max_extension"), "{}", a.body);
    // `until` as the document says it: RFC 3339, in the future.
    for (until, status) in [
        ("2001-01-01", 422),
        ("2001-01-01T00:00:00Z", 422),
        ("1700000000", 400),
        ("tomorrow", 400),
        ("2030-02-30", 400),
    ] {
        let a = c.call(
            "POST",
            "/v1/exceptions",
            Some(&legal.value),
            Some(&format!(
                r#"{{"target": "training_records", "key": "4", "until": "{until}", "owner": "o", "reason": "r"}}"#
            )),
        );
        assert_eq!(a.status, status, "until {until}: {}", a.body);
        a.assert_error(&format!("until {until}"));
    }
    // Blank text, a hold on a subject and a target at once, an unknown target: refused.
    for (path, body, status) in [
        (
            "/v1/holds",
            r#"{"subject": "x", "case_id": " ", "reason": "r"}"#,
            400,
        ),
        (
            "/v1/holds",
            r#"{"subject": "x", "target": "training_records", "case_id": "c", "reason": "r"}"#,
            400,
        ),
        (
            "/v1/holds",
            r#"{"target": "nope", "case_id": "c", "reason": "r"}"#,
            404,
        ),
        (
            "/v1/holds",
            r#"{"target": "training_records", "key": "999", "case_id": "c", "reason": "r"}"#,
            404,
        ),
        ("/v1/erasure-requests", r#"{"subject": "　"}"#, 400),
        ("/v1/sweeps", r#"{"targets": []}"#, 400),
        ("/v1/sweeps", r#"{"targets": ["nope"]}"#, 404),
    ] {
        let a = c.call("POST", path, Some(&admin.value), Some(body));
        assert_eq!(a.status, status, "{path} {body}: {}", a.body);
        a.assert_error(&format!("{path} {body}"));
    }
    let a = c.call(
        "POST",
        &format!("/v1/exceptions/{exc}/revoke"),
        Some(&admin.value),
        Some(r#"{"reason": "no longer needed"}"#),
    );
    assert_eq!(a.status, 200, "{}", a.body);

    // An erasure and an access request by the operator, a sweep too.
    let a = c.call(
        "POST",
        "/v1/erasure-requests",
        Some(&operator.value),
        Some(r#"{"subject": "user-5", "apply": true}"#),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let erasure = a.json();
    assert_eq!(erasure["status"], "completed", "{erasure}");
    let request_id = erasure["request_id"].as_str().unwrap();
    let a = c.call(
        "GET",
        &format!("/v1/erasure-requests/{request_id}/receipt"),
        Some(&operator.value),
        None,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(!a.body.contains("user-5"), "a receipt holds no raw subject");
    let a = c.call(
        "POST",
        "/v1/access-requests",
        Some(&operator.value),
        Some(r#"{"subject": "user-6"}"#),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let a = c.call(
        "POST",
        "/v1/sweeps",
        Some(&operator.value),
        Some(r#"{"targets": ["training_records"]}"#),
    );
    assert_eq!(a.status, 202, "{}", a.body);
    let run_id = a.json()["run_id"].as_str().unwrap().to_string();
    let started = Instant::now();
    loop {
        let a = c.call(
            "GET",
            &format!("/v1/runs/{run_id}"),
            Some(&token(&toks, Role::Viewer).value),
            None,
        );
        if a.status == 200 && !a.json()["finished_at"].is_null() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the sweep {run_id} did not finish: {} {}",
            a.status,
            a.body
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The trail through the API: the newest entries with no filter, a key in any target.
    let viewer = token(&toks, Role::Viewer);
    let a = c.call(
        "GET",
        "/v1/audit/entries?limit=5",
        Some(&viewer.value),
        None,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let page = a.json();
    assert_eq!(page["entries"].as_array().unwrap().len(), 5, "{page}");
    assert!(page["total"].as_u64().unwrap() > 5, "{page}");
    let a = c.call("GET", "/v1/audit/entries?key=2", Some(&viewer.value), None);
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains(&exc), "the exception's entries: {}", a.body);
    let a = c.call(
        "GET",
        "/v1/audit/entries?target=",
        Some(&viewer.value),
        None,
    );
    assert_eq!(a.status, 400, "{}", a.body);
    a.assert_error("an empty target");

    // The trail names the tokens that placed, released, granted and revoked.
    let trail = export(&cfg);
    let detail = |action: &str, id: &str| -> String {
        trail
            .iter()
            .find(|e| e["action"] == action && e["run_id"] == id)
            .unwrap_or_else(|| panic!("no {action} entry for {id}"))["detail"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        detail("hold_placed", &hold).contains(&format!("placed by {}", legal.name)),
        "{}",
        detail("hold_placed", &hold)
    );
    assert!(
        detail("hold_released", &hold).contains(&format!("released by {}", admin.name)),
        "{}",
        detail("hold_released", &hold)
    );
    assert!(
        detail("exception_granted", &exc).contains(&format!("granted by {}", legal.name)),
        "{}",
        detail("exception_granted", &exc)
    );
    assert!(
        detail("exception_revoked", &exc).contains(&format!("revoked by {}", admin.name)),
        "{}",
        detail("exception_revoked", &exc)
    );
    assert_eq!(run(&cfg, &["audit", "verify"]).code, Some(0));
    // The daemon's log names the operator's token for what the trail records without an
    // actor (the erasure, the sweep).
    let log = serve.log();
    assert!(
        log.contains(&operator.name) && log.contains(&run_id),
        "the log names who started the sweep:\n{log}"
    );
    serve.stop();
    never_shown(&toks, &serve, &cfg, &c.seen.borrow());
}

/// schemathesis, from the venv `scripts/test` makes.
fn schemathesis() -> PathBuf {
    let p = std::env::var_os("LETHE_TEST_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/venv/bin/schemathesis")
        });
    assert!(
        p.exists(),
        "{} not found: run scripts/test, which installs schemathesis into .cache/venv, or set LETHE_TEST_SCHEMATHESIS",
        p.display()
    );
    p
}

#[test]
fn schemathesis_finds_nothing_against_the_openapi_document() {
    let bin = schemathesis();
    let toks = tokens();
    let (dir, cfg) = setup("serve-fuzz", &toks);
    let env: Vec<(&str, &str)> = toks
        .iter()
        .map(|t| (t.env.as_str(), t.value.as_str()))
        .collect();
    let mut serve = Serve::start(&dir, &cfg, &env);
    let admin = token(&toks, Role::Admin);
    let reports = dir.path("schemathesis");
    // The bearer token reaches schemathesis through its environment, not its command line.
    let st_config = dir.path("schemathesis.toml");
    std::fs::write(&st_config, SCHEMATHESIS_TOML).unwrap();
    let started = Instant::now();
    let mut child = Command::new(&bin)
        .arg("--config-file")
        .arg(&st_config)
        .arg("run")
        .arg(format!("http://127.0.0.1:{}/openapi.json", serve.port))
        .args(["--checks", "all"])
        // Deterministic and bounded: a fixed seed, one worker, no examples carried over
        // from an earlier run, 100 cases per operation (20 to 60 s on two cores).
        .args([
            "--max-examples",
            "100",
            "--seed",
            "20251127",
            "--workers",
            "1",
        ])
        .args(["--generation-database", "none", "--no-color"])
        .args(["--request-timeout", "30"])
        // The answers recorded as they were, so that a token in one would be seen.
        .args(["--output-sanitize", "false"])
        .args(["--report", "har", "--report-dir"])
        .arg(&reports)
        .env("LETHE_IT_ADMIN_TOKEN", &admin.value)
        .current_dir(&dir.0)
        .stdout(std::fs::File::create(dir.path("schemathesis.out")).unwrap())
        .stderr(std::fs::File::create(dir.path("schemathesis.err")).unwrap())
        .spawn()
        .unwrap();
    let said = || {
        std::fs::read_to_string(dir.path("schemathesis.out")).unwrap_or_default()
            + &std::fs::read_to_string(dir.path("schemathesis.err")).unwrap_or_default()
    };
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(240) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("schemathesis ran over 4 minutes:\n{}", said());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let said = said();
    assert!(
        status.success(),
        "schemathesis found problems ({status}):\n{said}\n--- the daemon's log:\n{}",
        serve.log()
    );
    serve.stop();
    // Every answer schemathesis saw, for the token check.
    let mut answers = Vec::new();
    for f in std::fs::read_dir(&reports).unwrap() {
        let har: Value =
            serde_json::from_slice(&std::fs::read(f.unwrap().path()).unwrap()).unwrap();
        for e in har["log"]["entries"].as_array().into_iter().flatten() {
            answers.push(e["response"].to_string());
        }
    }
    assert!(
        answers.len() > 100,
        "schemathesis made {} requests",
        answers.len()
    );
    never_shown(&toks, &serve, &cfg, &answers);
}

/// schemathesis's settings: the admin token on every request (read from the environment,
/// so that it is not on a command line), and one status added to what the
/// `positive_data_acceptance` check takes for one operation.
///
/// `POST /v1/exceptions` answers 422 when `until` is not in the future. A JSON Schema cannot
/// say "after now", so a date in the past is schema-valid, and the check's default list
/// (2xx, 3xx, 401, 403, 404, 409, 429, 5xx) would call its refusal a bug. Granting an
/// exception that has already lapsed is what a deletion tool must not do quietly, so the
/// daemon keeps refusing it; the document lists the 422, and this says the check agrees.
/// Every other check, and this one for every other status and operation, runs as shipped.
const SCHEMATHESIS_TOML: &str = r#"
headers = { Authorization = "Bearer ${LETHE_IT_ADMIN_TOKEN}" }

[[operations]]
include-path = "/v1/exceptions"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
"#;

#[test]
fn the_daemon_refuses_to_start_where_it_would_be_unsafe() {
    // Beyond loopback with no token: anyone who reaches it could delete.
    let dir = Tmp::new("serve-refuse");
    seed_training(&dir, 4);
    let cfg = training_config(&dir);
    let r = run_raw(&cfg, &["init"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let port = free_port();
    let r = serve_briefly(&cfg, &format!("0.0.0.0:{port}"), &[]);
    assert_eq!(
        r.code,
        Some(2),
        "listening on 0.0.0.0 with no token: {}",
        r.stderr
    );
    assert!(r.stderr.contains("[api] listen"), "{}", r.stderr);
    // On loopback with no token: reads only, nothing changes.
    let serve = Serve::start(&dir, &cfg, &[]);
    let a = http(serve.port, "GET", "/v1/targets", None, None);
    assert_eq!(a.status, 200, "{}", a.body);
    let a = http(serve.port, "POST", "/v1/sweeps", None, Some("{}"));
    assert_eq!(a.status, 401, "{}", a.body);
    a.assert_error("a sweep with no token configured");
    drop(serve);

    // A token whose variable is unset, or empty: the variable is named, no value shown.
    let toks = tokens();
    let (_dir, cfg) = setup("serve-unset", &toks);
    let legal = token(&toks, Role::Legal);
    for legal_value in [None, Some(""), Some("  ")] {
        let env: Vec<(&str, &str)> = toks
            .iter()
            .filter_map(|t| {
                if t.role == Role::Legal {
                    legal_value.map(|v| (t.env.as_str(), v))
                } else {
                    Some((t.env.as_str(), t.value.as_str()))
                }
            })
            .collect();
        let r = serve_briefly(&cfg, &format!("127.0.0.1:{}", free_port()), &env);
        assert_eq!(r.code, Some(2), "{legal_value:?}: {}", r.stderr);
        assert!(r.stderr.contains(&legal.env), "{}", r.stderr);
        for t in &toks {
            assert!(
                !r.stderr.contains(&t.value) && !r.stdout.contains(&t.value),
                "the refusal shows the {} token: {}",
                t.name,
                r.stderr
            );
        }
    }
}

/// `lethe serve` that must refuse to start: its exit, or a failure if it is still running
/// after 20 s (killed, so that it does not stay listening).
fn serve_briefly(cfg: &Path, listen: &str, env: &[(&str, &str)]) -> Run {
    let mut c = lethe();
    c.arg("serve")
        .arg("--config")
        .arg(cfg)
        .args(["--listen", listen])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "lethe serve --listen {listen} started instead of refusing:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

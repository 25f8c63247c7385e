//! The dashboard: the page `lethe report --format html` writes (made here through the library,
//! `report` and `html::page`) and the live one `lethe serve` shows at `/`, opened in headless
//! Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`): no console
//! error, no request but the page's own, every chart drawn, nothing wider than a phone.
//! Screenshots at phone and desktop width go to `LETHE_SCREENSHOTS_DIR` (default: the
//! test's directory).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::objects::{S3_CREDS, moto, put_all};
use super::serve::{Daemon, eventually, try_http};
use super::*;

/// The training table (20 rows expired 10 days ago, 20 alive), with a category that names its
/// owner and runbook and a target with its region and sensitivity.
fn training(dir: &Tmp, extra: &str) -> (Connection, PathBuf) {
    let conn = seed_training(dir, 40);
    let cfg = training_config(dir);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(
            "retention = \"90d\"\n",
            "retention = \"90d\"\nowner = \"ml-platform@example.com\"\nrunbook = \"https://runbooks.example/finetune\"\n",
        )
        .replace(
            "file_roots = [\"files\"]\n",
            "file_roots = [\"files\"]\nregion = \"eu-west-1\"\nsensitivity = \"confidential\"\n",
        );
    std::fs::write(&cfg, format!("{text}{extra}")).unwrap();
    (conn, cfg)
}

/// A row expired 40 days after its creation, 10 days ago.
fn insert_expired(dir: &Tmp, conn: &Connection, id: i64) {
    let f = dir.path(&format!("files/late-{id}.jsonl"));
    std::fs::write(&f, "late\n").unwrap();
    conn.execute(
        "INSERT INTO training_records (id, dataset_name, user_id, file_path, created_at, retention_days) VALUES (?1, 'ds', 'u', ?2, ?3, 30)",
        rusqlite::params![id, f.to_string_lossy(), naive(40 * DAY)],
    )
    .unwrap();
}

/// One HTTP exchange with its headers: status, head (lower case), body.
fn get(port: u16, path: &str, token: Option<&str>) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        super::serve::dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, head, body)
}

/// The deletions total the page shows.
fn deleted_on(page: &str) -> Option<u64> {
    let at = page.find("data-figure=\"deleted\">")? + "data-figure=\"deleted\">".len();
    page[at..].split('<').next()?.replace(',', "").parse().ok()
}

#[test]
fn the_served_dashboard_needs_a_viewer_and_shows_each_new_runs_numbers() {
    let viewer = ("LETHE_IT_DASH_VIEWER", "viewer-dash-token-Zq9");
    let operator = ("LETHE_IT_DASH_OPERATOR", "operator-dash-token-Zq9");
    let dir = Tmp::new("dash-serve");
    let (conn, cfg) = training(
        &dir,
        &format!(
            "\n[schedule]\ncensus_interval = \"1s\"\n\n[api]\n[[api.tokens]]\nname = \"wall\"\nrole = \"viewer\"\ntoken_env = \"{}\"\n[[api.tokens]]\nname = \"ops\"\nrole = \"operator\"\ntoken_env = \"{}\"\n",
            viewer.0, operator.0
        ),
    );
    let d = Daemon::start(&cfg, &[viewer, operator]);

    // Like every other page of the API: a token, and a viewer's is enough.
    let (status, _, body) = get(d.port, "/", None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    let (status, _, _) = get(d.port, "/", Some("not-a-token"));
    assert_eq!(status, 401);
    let (status, head, page) = get(d.port, "/", Some(viewer.1));
    assert_eq!(status, 200, "{page}\n{}", d.log_text());
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(
        head.contains(
            "content-security-policy: default-src 'none'; style-src 'unsafe-inline'; img-src data:"
        ),
        "{head}"
    );
    assert!(head.contains("cache-control: no-store"), "{head}");
    assert_eq!(deleted_on(&page), Some(0), "before any run");
    assert!(page.contains("data-target=\"training_records\""));
    assert!(page.contains("href=\"https://runbooks.example/finetune\""));
    assert!(page.contains("href=\"mailto:ml-platform@example.com\""));
    // Nothing expired has been deleted: the overdue KPI fails and says where.
    assert!(page.contains("data-all-met=\"false\""));

    // A sweep from the CLI, beside the daemon: the page shows it once the daemon sees the trail
    // move.
    let r = run(&cfg, &["sweep", "--apply"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(ids(&conn, "training_records").len(), 20);
    eventually(30, "the page shows the CLI sweep's 20 deletions", || {
        deleted_on(&get(d.port, "/", Some(viewer.1)).2) == Some(20)
    });

    // A run through the API: the page shows it once the run is over.
    insert_expired(&dir, &conn, 101);
    insert_expired(&dir, &conn, 102);
    let (status, body) = try_http(
        d.port,
        "POST",
        "/v1/sweeps",
        Some(operator.1),
        Some(r#"{"apply": true}"#),
    )
    .unwrap();
    assert_eq!(status, 202, "{body}");
    eventually(30, "the page shows the API run's 2 more deletions", || {
        deleted_on(&get(d.port, "/", Some(viewer.1)).2) == Some(22)
    });
    let page = get(d.port, "/", Some(viewer.1)).2;
    // A SQL table carries no tags: that chart says so.
    assert!(page.contains("data-chart=\"tag_coverage\" data-empty=\"true\""));
    assert!(page.contains("data-chart=\"deletions_per_day\" data-empty=\"false\""));
    assert!(page.contains("data-chart=\"time_to_delete\" data-empty=\"false\""));
    assert!(page.contains("data-chart=\"backlog\" data-empty=\"false\""));
}

/// Where screenshots go.
fn screenshots_dir(dir: &Tmp) -> PathBuf {
    let p = std::env::var_os("LETHE_SCREENSHOTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.path("screenshots"));
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// A program from the environment variable, or the first of `paths` that exists.
fn program(env: &str, paths: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    paths.iter().map(PathBuf::from).find(|p| p.exists())
}

/// chromedriver and its Chromium, or `None` where `LETHE_SKIP_BROWSER=1` allows their
/// absence. Otherwise missing ones fail the test: a browser test must not pass unrun.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let driver = program(
        "LETHE_TEST_CHROMEDRIVER",
        &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"],
    );
    let chromium = program(
        "LETHE_TEST_CHROMIUM",
        &["/usr/bin/chromium", "/usr/lib/chromium/chromium"],
    );
    match (driver, chromium) {
        (Some(d), Some(c)) => Some((d, c)),
        _ if std::env::var("LETHE_SKIP_BROWSER").as_deref() == Ok("1") => {
            eprintln!(
                "browser test skipped: LETHE_SKIP_BROWSER=1 and chromium/chromedriver are missing"
            );
            None
        }
        _ => panic!(
            "the dashboard's browser test needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; scripts/test installs them), or LETHE_TEST_CHROMIUM / LETHE_TEST_CHROMEDRIVER; set LETHE_SKIP_BROWSER=1 to skip it knowingly"
        ),
    }
}

/// One exchange with chromedriver, which keeps the connection open whatever the request says:
/// the answer is read to its Content-Length. `None` when nothing answers.
fn wd_http(port: u16, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(120))).ok()?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let status = line.split(' ').nth(1)?.parse().ok()?;
    let mut len = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().ok()?;
        }
    }
    let mut buf = vec![0; len];
    r.read_exact(&mut buf).ok()?;
    Some((status, String::from_utf8_lossy(&buf).into_owned()))
}

/// A chromedriver process and one browser session, both ended when dropped.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
    log: PathBuf,
}

impl Browser {
    fn start(dir: &Tmp, driver: &Path, chromium: &Path) -> Browser {
        let port = free_port();
        let log = dir.path("chromedriver.log");
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut b = Browser {
            driver: child,
            port,
            session: String::new(),
            log,
        };
        let started = Instant::now();
        loop {
            if let Some((200, body)) = wd_http(port, "GET", "/status", None)
                && serde_json::from_str::<Value>(&body).is_ok_and(|v| v["value"]["ready"] == true)
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver did not start: {}",
                std::fs::read_to_string(&b.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = dir.path("chromium-profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1366,900", "--hide-scrollbars",
                    format!("--user-data-dir={}", profile.display()),
                    // Nothing of the browser's own leaves the machine either.
                    "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-extensions",
                    "--disable-default-apps", "--metrics-recording-only", "--no-pings"
                ]
            },
            "goog:loggingPrefs": {"browser": "ALL", "performance": "ALL"}
        }}});
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        b
    }

    /// A WebDriver command; its `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string());
        let (status, text) = wd_http(self.port, method, path, body.as_deref())
            .unwrap_or_else(|| panic!("{method} {path}: chromedriver did not answer"));
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
        assert_eq!(status, 200, "{method} {path}: {v}");
        v["value"].clone()
    }

    fn session(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    /// A DevTools command through chromedriver.
    fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.session(
            "POST",
            "/goog/cdp/execute",
            Some(json!({"cmd": cmd, "params": params})),
        )
    }

    fn script(&self, js: &str) -> Value {
        self.session(
            "POST",
            "/execute/sync",
            Some(json!({"script": js, "args": []})),
        )
    }

    /// The log entries of `kind` (`browser`, `performance`) since the last read.
    fn log(&self, kind: &str) -> Vec<Value> {
        let v = self.session("POST", "/se/log", Some(json!({"type": kind})));
        v.as_array().cloned().unwrap_or_default()
    }

    /// A viewport of this size (a phone's: mobile, the viewport meta honoured, 2x pixels).
    fn viewport(&self, width: u32, height: u32, phone: bool) {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": if phone { 2 } else { 1 }, "mobile": phone}),
        );
    }

    /// The page as a PNG, into `to`: the whole of it, or the screen a reader sees first.
    fn screenshot(&self, to: &Path, whole: bool) {
        let size = self.script(if whole {
            "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight];"
        } else {
            "return [window.innerWidth, window.innerHeight];"
        });
        let (w, h) = (size[0].as_f64().unwrap(), size[1].as_f64().unwrap());
        let v = self.cdp(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": whole,
                   "clip": {"x": 0, "y": 0, "width": w, "height": h.min(12000.0), "scale": 1}}),
        );
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(to, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = wd_http(
                self.port,
                "DELETE",
                &format!("/session/{}", self.session),
                None,
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Opens `url` and checks what a reader gets, at desktop and phone width: no console error,
/// no request but to `origin` (or `data:`), four charts each with marks drawn, and a page no
/// wider than the phone. Screenshots are saved as `NAME-desktop.png` (the whole page),
/// `NAME-phone.png` (the first screen) and `NAME-phone-whole.png`.
fn check_page(b: &Browser, url: &str, origin: &str, shots: &Path, name: &str) {
    b.viewport(1366, 900, false);
    // Logs read before are not this page's.
    b.log("browser");
    b.log("performance");
    b.session("POST", "/url", Some(json!({"url": url})));
    let ready = b.script("return document.readyState;");
    assert_eq!(ready, "complete", "{url}");
    let title = b.session("GET", "/title", None);
    assert!(
        title
            .as_str()
            .is_some_and(|t| t.starts_with("Lethe compliance dashboard")),
        "{url}: title {title}"
    );

    let charts = b.script(
        r#"return Array.from(document.querySelectorAll('figure.chart')).map(f => {
             const marks = Array.from(f.querySelectorAll('svg rect, svg polyline, svg circle, svg path'))
               .filter(m => { const r = m.getBoundingClientRect(); return r.width > 0 || r.height > 0; });
             const svg = f.querySelector('svg');
             return {id: f.dataset.chart, empty: f.dataset.empty, marks: marks.length,
                     width: svg ? svg.getBoundingClientRect().width : 0,
                     title: svg && svg.querySelector('title') ? svg.querySelector('title').textContent : ''};
           });"#,
    );
    let charts = charts.as_array().unwrap();
    let ids: Vec<&str> = charts.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(
        ids,
        [
            "deletions_per_day",
            "backlog",
            "time_to_delete",
            "tag_coverage"
        ],
        "{url}"
    );
    for c in charts {
        assert_eq!(c["empty"], "false", "{url}: a chart without data: {c}");
        assert!(c["marks"].as_u64() > Some(0), "{url}: nothing drawn: {c}");
        assert!(c["width"].as_f64() > Some(100.0), "{url}: {c}");
        assert!(!c["title"].as_str().unwrap_or("").is_empty(), "{url}: {c}");
    }
    b.screenshot(&shots.join(format!("{name}-desktop.png")), true);

    b.viewport(390, 844, true);
    let fits = b.script(
        "return [document.documentElement.scrollWidth, window.innerWidth, document.querySelector('.scroll').scrollWidth > document.querySelector('.scroll').clientWidth];",
    );
    let (scroll, inner) = (fits[0].as_f64().unwrap(), fits[1].as_f64().unwrap());
    assert_eq!(inner, 390.0, "{url}: the phone viewport: {fits}");
    assert!(
        scroll <= inner + 1.0,
        "{url}: the page is wider ({scroll}) than a phone ({inner})"
    );
    // The wide tables scroll inside their box instead.
    assert_eq!(fits[2], true, "{url}: {fits}");
    b.screenshot(&shots.join(format!("{name}-phone.png")), false);
    b.screenshot(&shots.join(format!("{name}-phone-whole.png")), true);

    let errors: Vec<Value> = b
        .log("browser")
        .into_iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "{url}: console errors: {errors:?}");
    let mut requests = Vec::new();
    for e in b.log("performance") {
        let m: Value = serde_json::from_str(e["message"].as_str().unwrap_or("{}")).unwrap();
        if m["message"]["method"] == "Network.requestWillBeSent" {
            requests.push(
                m["message"]["params"]["request"]["url"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            );
        }
    }
    assert!(
        requests.iter().any(|u| u.starts_with(origin)),
        "{url}: the page's own request was not seen: {requests:?}"
    );
    for u in &requests {
        assert!(
            u.starts_with(origin) || u.starts_with("data:"),
            "{url}: a request left the page: {u}"
        );
    }
}

#[test]
fn the_page_opens_in_chromium_without_errors_or_requests_with_every_chart_drawn() {
    let Some((driver, chromium)) = browser() else {
        return;
    };
    let dir = Tmp::new("dash-browser");
    let shots = screenshots_dir(&dir);
    // Real data: the SQLite table swept with --apply (deletions, backlog, time to delete) and
    // an S3 bucket (moto) whose objects carry tags, some not all of them (tag coverage).
    let s3 = moto(&dir.0);
    let (status, body) = try_http(s3.port, "PUT", "/dash", None, None).unwrap();
    assert_eq!(status, 200, "create bucket: {body}");
    let (conn, cfg) = training(
        &dir,
        &format!(
            r#"
[categories.uploads]
retention = "30d"
owner = "data-eng"
runbook = "https://runbooks.example/uploads"

[[targets]]
name = "uploads"
type = "object_store"
url = "s3://dash/up/"
category = "uploads"
region = "us-east-1"
sensitivity = "internal"
[targets.options]
aws_endpoint = "http://127.0.0.1:{}"
aws_allow_http = "true"
aws_region = "us-east-1"

[tags]
required = ["expires_at", "owner"]
"#,
            s3.port
        ),
    );
    let store: std::sync::Arc<dyn object_store::ObjectStore> = std::sync::Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name("dash")
            .with_endpoint(format!("http://127.0.0.1:{}", s3.port))
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .unwrap(),
    );
    let tagged = |exp: &str| {
        vec![
            ("expires_at", exp.to_string()),
            ("owner", "data-eng".into()),
        ]
    };
    let mut seed: super::objects::Seed = Vec::new();
    for i in 0..6 {
        seed.push((format!("up/old-{i}.json"), tagged("2020-01-01T00:00:00Z")));
    }
    for i in 0..10 {
        seed.push((format!("up/new-{i}.json"), tagged("2099-01-01T00:00:00Z")));
    }
    for i in 0..2 {
        seed.push((format!("up/untagged-{i}.json"), vec![]));
    }
    put_all(store, &seed);
    let r = run_env(&cfg, &S3_CREDS, &["sweep", "--apply"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(ids(&conn, "training_records").len(), 20);

    // The file `lethe report --format html -o FILE` writes, every target counted (the tag
    // coverage is measured, not missing for an error).
    let file = dir.path("report.html");
    let json = run_env(&cfg, &S3_CREDS, &["--json", "report"]);
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    for t in json.json()["targets"].as_array().unwrap() {
        assert!(t["error"].is_null(), "{t}");
    }
    let r = run_env(
        &cfg,
        &S3_CREDS,
        &["report", "--format", "html", "-o", file.to_str().unwrap()],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let page = std::fs::read_to_string(&file).unwrap();
    assert_eq!(deleted_on(&page), Some(26), "20 rows and 6 objects");
    // 10 of the 12 objects left carry both required tags.
    assert!(
        page.contains("data-value=\"0.8333\""),
        "the uploads' tag coverage"
    );

    let b = Browser::start(&dir, &driver, &chromium);
    // The console log is read: an error a page logs is seen (else "no error" proves nothing).
    b.session(
        "POST",
        "/url",
        Some(json!({"url": "data:text/html,<script>console.error('lethe-probe')</script>"})),
    );
    let probe = b.log("browser");
    assert!(
        probe.iter().any(|e| e["level"] == "SEVERE"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("lethe-probe"))),
        "the probe's console error was not in the browser log: {probe:?}"
    );
    let url = format!("file://{}", file.display());
    check_page(&b, &url, &url, &shots, "report");

    // The live page, from a daemon without tokens (loopback: anyone may view).
    let d = Daemon::start(&cfg, &S3_CREDS);
    let origin = format!("http://127.0.0.1:{}/", d.port);
    check_page(&b, &origin, &origin, &shots, "serve");
    let live = get(d.port, "/", None).2;
    assert_eq!(deleted_on(&live), Some(26), "20 rows and 6 objects");
    eprintln!("screenshots in {}", shots.display());
}

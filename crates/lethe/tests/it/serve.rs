//! `lethe serve`: scheduled runs on real SQLite data (and a shared PostgreSQL state), missed
//! fires, stopping, `/metrics` against the trail, the alert rules and the webhook.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// A daemon the test started: killed when dropped; its log kept in a file.
pub struct Daemon {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(config: &Path, env: &[(&str, &str)]) -> Daemon {
        ensure_init_env(config, env);
        let port = free_port();
        let dir = config.parent().unwrap();
        let log = dir.join(format!("serve-{port}.log"));
        let mut c = lethe();
        c.args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--config",
        ])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            c.env(k, v);
        }
        let d = Daemon {
            child: c.spawn().unwrap(),
            port,
            log,
        };
        d.wait_ready();
        d
    }

    fn wait_ready(&self) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if let Some((200, _)) = try_http(self.port, "GET", "/readyz", None, None) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the daemon did not become ready: {}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http(self.port, "GET", path, None, None)
    }

    /// SIGTERM, and how long the daemon took to exit (it must within 10 s).
    pub fn term(&mut self) -> Duration {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        self.wait_exit()
    }

    /// Waits for the daemon to exit (successfully), and says how long it took.
    pub fn wait_exit(&mut self) -> Duration {
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "exit status {status}: {}",
                    self.log_text()
                );
                return t.elapsed();
            }
            if t.elapsed() > Duration::from_secs(20) {
                panic!(
                    "the daemon did not exit 20 s after SIGTERM: {}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics");
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange; `None` when nothing answers.
pub fn try_http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let (head, rest) = text.split_once("\r\n\r\n")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Some((status, body))
}

/// A chunked HTTP body, whole.
pub fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    try_http(port, method, path, token, body)
        .unwrap_or_else(|| panic!("{method} {path}: no answer on port {port}"))
}

/// Waits for `cond`, up to `secs`.
pub fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("not within {secs} s: {what}");
}

/// The training table and a config that sweeps it on `schedule` (and `extra` appended).
fn scheduled(dir: &Tmp, rows: i64, schedule: &str) -> (Connection, PathBuf) {
    let conn = seed_training(dir, rows);
    let cfg = training_config(dir);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!("\n[schedule]\n{schedule}\n"));
    std::fs::write(&cfg, text).unwrap();
    (conn, cfg)
}

/// A row 40 days old (expired), owning a file under the roots.
fn insert_expired(dir: &Tmp, conn: &Connection, id: i64) {
    let f = dir.path(&format!("files/late-{id}.jsonl"));
    std::fs::write(&f, "late\n").unwrap();
    conn.execute(
        "INSERT INTO training_records (id, dataset_name, user_id, file_path, created_at, retention_days) VALUES (?1, 'ds', 'u', ?2, ?3, 30)",
        rusqlite::params![id, f.to_string_lossy(), naive(40 * DAY)],
    )
    .unwrap();
}

fn entries_of(config: &Path, action: &str) -> Vec<serde_json::Value> {
    export(config)
        .into_iter()
        .filter(|e| e["action"] == action)
        .collect()
}

fn state_db(dir: &Tmp) -> Connection {
    Connection::open(dir.path("state/lethe-state.db")).unwrap()
}

#[test]
fn scheduled_runs_delete_expired_rows_each_with_its_entries() {
    let dir = Tmp::new("serve-sched");
    let (conn, cfg) = scheduled(
        &dir,
        40,
        "sweep = \"*/2 * * * * *\"\napply = true\ncensus_interval = \"1s\"",
    );
    let d = Daemon::start(&cfg, &[]);
    let odd: Vec<i64> = (1..=40).filter(|i| i % 2 == 1).collect();
    eventually(
        30,
        "the expired rows are deleted by a scheduled run",
        || ids(&conn, "training_records") == odd,
    );
    // New expired rows: a later fire deletes them too.
    insert_expired(&dir, &conn, 100);
    eventually(30, "a later fire deletes a row that expired since", || {
        !ids(&conn, "training_records").contains(&100)
    });
    // Stopped as an operator would: the run that deleted it closes first.
    let mut d = d;
    assert!(d.term() < Duration::from_secs(10));
    let deleted = entries_of(&cfg, "deleted");
    for id in (2..=40).step_by(2).chain([100]) {
        let e = deleted
            .iter()
            .find(|e| e["item_key"].as_str() == Some(id.to_string().as_str()))
            .unwrap_or_else(|| panic!("no deleted entry for row {id}"));
        let run = e["run_id"].as_str().unwrap();
        assert!(run.starts_with("run-sweep-"), "{run}");
        // Each scheduled run that deleted closed its target with a sweep_finished entry.
        assert!(
            entries_of(&cfg, "sweep_finished")
                .iter()
                .any(|f| f["run_id"] == run && f["target"] == "training_records"),
            "run {run} has no sweep_finished entry"
        );
    }
    assert_eq!(deleted.len(), 21, "each row deleted once");
    let v = run(&cfg, &["audit", "verify"]);
    assert_eq!(v.code, Some(0), "{}{}", v.stdout, v.stderr);
}

/// Seconds since the epoch, as fires count them.
fn fires_between(dir: &Tmp, from: i64, to: i64) -> Vec<(i64, String)> {
    let db = state_db(dir);
    let mut st = db
        .prepare("SELECT fire_at, COALESCE(result, '') FROM fires WHERE schedule = 'sweep' AND fire_at > ?1 AND fire_at < ?2 ORDER BY fire_at")
        .unwrap();
    st.query_map([from, to], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Sleeps until `offset_ms` into the next `period`-second slot of the clock.
fn align(period: i64, offset_ms: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let into = (now.as_millis() % (period as u128 * 1000)) as u64;
    let wait = (period as u64 * 1000 + offset_ms - into) % (period as u64 * 1000);
    std::thread::sleep(Duration::from_millis(wait));
}

#[test]
fn a_daemon_stopped_across_fires_runs_once_on_restart_within_misfire_grace() {
    let dir = Tmp::new("serve-grace");
    let (conn, cfg) = scheduled(
        &dir,
        10,
        "sweep = \"*/2 * * * * *\"\napply = true\nmisfire_grace = \"1m\"",
    );
    let mut d = Daemon::start(&cfg, &[]);
    eventually(20, "a first scheduled run", || {
        ids(&conn, "training_records").len() == 5
    });
    assert!(d.term() < Duration::from_secs(10));
    let stopped = now_secs();
    // Rows expire while no daemon runs; three fires (or so) pass.
    insert_expired(&dir, &conn, 100);
    std::thread::sleep(Duration::from_millis(5500));
    // Fires before the restart's second count as missed (one at that very second too: the
    // daemon starts after it).
    let restarted = now_secs();
    let d = Daemon::start(&cfg, &[]);
    eventually(10, "the missed fires' run deletes the row", || {
        !ids(&conn, "training_records").contains(&100)
    });
    eventually(10, "the run of the missed fires is closed", || {
        fires_between(&dir, stopped, restarted + 1)
            .iter()
            .all(|(_, result)| !result.is_empty())
    });
    drop(d);
    let missed = fires_between(&dir, stopped, restarted + 1);
    assert_eq!(
        missed.len(),
        1,
        "the missed fires are coalesced into one run: {missed:?}"
    );
    assert_eq!(missed[0].1, "success", "{missed:?}");
    assert!(entries_of(&cfg, "schedule_misfire").is_empty());
}

/// A local webhook receiver: every body posted to it, as JSON.
pub struct Receiver {
    pub port: u16,
    pub got: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        Receiver::failing(0)
    }

    /// A receiver that answers its first `n` posts with a 503 (and does not keep them).
    pub fn failing(n: usize) -> Receiver {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let port = l.local_addr().unwrap().port();
        let got: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let g = got.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let refuse = refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < n;
                let Ok(mut s) = s else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                // Read the head, then as much body as Content-Length says.
                while let Ok(n) = s.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            if !refuse && let Ok(v) = serde_json::from_str(&body[..len]) {
                                g.lock().unwrap().push(v);
                            }
                            break;
                        }
                    }
                }
                let answer: &[u8] = if refuse {
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                };
                let _ = s.write_all(answer);
            }
        });
        Receiver { port, got }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// The posts of `alertname` with `status` (firing or resolved).
    pub fn posts(&self, alertname: &str, status: &str) -> Vec<serde_json::Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p["status"] == status && p["alerts"][0]["labels"]["alertname"] == alertname)
            .cloned()
            .collect()
    }
}

#[test]
fn a_restart_beyond_misfire_grace_records_a_misfire_and_alerts() {
    let dir = Tmp::new("serve-misfire");
    let hook = Receiver::start();
    let (conn, cfg) = scheduled(
        &dir,
        10,
        "sweep = \"*/5 * * * * *\"\napply = true\nmisfire_grace = \"1s\"\n[alerts]\nwebhook_env = \"HOOK\"\ncheck_interval = \"1s\"",
    );
    let url = hook.url();
    let env = [("HOOK", url.as_str())];
    let mut d = Daemon::start(&cfg, &env);
    eventually(20, "a first scheduled run", || {
        ids(&conn, "training_records").len() == 5
    });
    d.term();
    // Restart 2.5 s after a fire, a fire or two later: the newest missed fire is older than
    // misfire_grace.
    std::thread::sleep(Duration::from_secs(5));
    align(5, 2500);
    insert_expired(&dir, &conn, 100);
    let d = Daemon::start(&cfg, &env);
    // Not run now: recorded, counted and alerted.
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        ids(&conn, "training_records").contains(&100),
        "a fire beyond misfire_grace was run"
    );
    let misfires = entries_of(&cfg, "schedule_misfire");
    assert_eq!(misfires.len(), 1, "{misfires:?}");
    assert_eq!(
        d.metric("lethe_schedule_misfires_total{schedule=\"sweep\"}"),
        Some(1.0),
        "{}",
        d.get("/metrics").1
    );
    eventually(30, "the webhook gets the misfire alert", || {
        !hook.posts("LetheScheduleMisfire", "firing").is_empty()
    });
    let post = &hook.posts("LetheScheduleMisfire", "firing")[0];
    assert_eq!(post["version"], "4");
    assert!(
        post["text"].as_str().unwrap().contains("misfire_grace"),
        "{post}"
    );
    // The next fire runs as usual, and its success resolves the alert.
    eventually(20, "the next fire deletes the row", || {
        !ids(&conn, "training_records").contains(&100)
    });
    eventually(30, "the misfire alert is resolved", || {
        !hook.posts("LetheScheduleMisfire", "resolved").is_empty()
    });
    // Recorded once the webhook answered.
    eventually(10, "the resolution is in the trail", || {
        !entries_of(&cfg, "alert_resolved").is_empty()
    });
    drop(d);
    let fired = entries_of(&cfg, "alert_fired");
    assert!(
        fired.iter().any(|e| e["item_key"]
            .as_str()
            .unwrap()
            .starts_with("LetheScheduleMisfire")),
        "{fired:?}"
    );
    assert!(!entries_of(&cfg, "alert_resolved").is_empty());
    let v = run(&cfg, &["audit", "verify"]);
    assert_eq!(v.code, Some(0), "{}{}", v.stdout, v.stderr);
}

/// Whether the process is stopped (SIGSTOP), as /proc says.
fn stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('T'))
        })
        .unwrap_or(false)
}

fn signal(d: &Daemon, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(d.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
}

/// A daemon whose first scheduled sweep stalls (SIGSTOP, the crash tests' hook) after its
/// `nth` delete: caught in the middle of an apply, deterministically.
fn stalled_mid_apply(dir: &Tmp, n: i64, nth: u32) -> (Connection, PathBuf, Daemon) {
    assert!(
        has_failpoints(),
        "this test needs a lethe built with the `failpoints` feature: run scripts/test"
    );
    let (conn, cfg) = scheduled(dir, n, "sweep = \"*/2 * * * * *\"\napply = true");
    let point = format!("after_delete:{nth}:stop");
    let d = Daemon::start(&cfg, &[("LETHE_FAILPOINT", point.as_str())]);
    let pid = d.child.id();
    eventually(30, "the scheduled apply stalls mid-run", || stopped(pid));
    (conn, cfg, d)
}

fn count(conn: &Connection) -> i64 {
    conn.query_row("SELECT COUNT(*) FROM training_records", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn sigterm_during_a_scheduled_apply_exits_in_time_and_the_next_run_finishes() {
    let dir = Tmp::new("serve-term");
    // Twelve batches of expired rows: however long the signal takes to be seen after the
    // process resumes, the run cannot reach the end first.
    let n = 120_000;
    let (conn, cfg, mut d) = stalled_mid_apply(&dir, n, 1);
    // Told to stop in the middle of its first transaction of deletions (of two).
    signal(&d, rustix::process::Signal::TERM);
    signal(&d, rustix::process::Signal::CONT);
    let took = d.wait_exit();
    assert!(took < Duration::from_secs(10), "exited after {took:?}");
    let left = count(&conn);
    assert!(
        left > n / 2 && left < n,
        "the run should have stopped part-way ({left} rows left): {}",
        d.log_text()
    );
    assert!(d.log_text().contains("interrupted"), "{}", d.log_text());
    let v = run(&cfg, &["audit", "verify"]);
    assert_eq!(v.code, Some(0), "{}{}", v.stdout, v.stderr);
    // The next daemon finishes the work.
    let mut d = Daemon::start(&cfg, &[]);
    eventually(60, "the next run deletes the rest", || {
        count(&conn) == n / 2
    });
    // Stopped as an operator would: the trail has every deletion once the daemon is gone.
    assert!(d.term() < Duration::from_secs(10));
    let deleted = entries_of(&cfg, "deleted");
    assert_eq!(
        deleted.len() as i64,
        n / 2,
        "each expired row deleted once, recorded once"
    );
    let v = run(&cfg, &["audit", "verify"]);
    assert_eq!(v.code, Some(0), "{}{}", v.stdout, v.stderr);
}

#[test]
fn a_fire_that_comes_while_the_run_is_going_is_skipped_and_counted() {
    let dir = Tmp::new("serve-skip");
    let (conn, _cfg, d) = stalled_mid_apply(&dir, 30_000, 1);
    // Stalled past the next fire or two; resumed, the run is still going when they come.
    std::thread::sleep(Duration::from_secs(3));
    signal(&d, rustix::process::Signal::CONT);
    eventually(30, "the stalled run ends", || count(&conn) == 15_000);
    // Past the next fire: its sweep (nothing due) must not stall the daemon again.
    std::thread::sleep(Duration::from_secs(3));
    eventually(
        10,
        "the fire that came meanwhile is counted as skipped",
        || {
            d.metric("lethe_schedule_skipped_fires_total{schedule=\"sweep\"}")
                .is_some_and(|n| n >= 1.0)
        },
    );
    let db = state_db(&dir);
    let skipped: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM fires WHERE result = 'skipped'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(skipped >= 1);
    // Never queued: no two runs of the schedule were open at once, and every run closed.
    let open: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM fires WHERE result IS NULL AND fire_at < ?1",
            [now_secs() - 5],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(open, 0);
}

#[test]
fn metrics_parse_and_their_counters_equal_the_trails_counts() {
    let dir = Tmp::new("serve-metrics");
    let (conn, cfg) = scheduled(
        &dir,
        30,
        "sweep = \"*/2 * * * * *\"\napply = true\ncensus_interval = \"1s\"",
    );
    // A row that cannot be judged: a failure the trail records.
    conn.execute(
        "INSERT INTO training_records (id, dataset_name, user_id, file_path, created_at, retention_days) VALUES (99, 'ds', 'u', 'x', 'not a date', 30)",
        [],
    )
    .unwrap();
    let d = Daemon::start(&cfg, &[]);
    eventually(30, "a scheduled run", || {
        ids(&conn, "training_records").len() == 16
    });
    let count = |action: &str| {
        entries_of(&cfg, action)
            .iter()
            .filter(|e| e["target"] == "training_records")
            .count() as f64
    };
    eventually(20, "the counters catch up with the trail", || {
        d.metric("lethe_items_deleted_total{target=\"training_records\"}") == Some(count("deleted"))
            && d.metric("lethe_delete_failures_total{target=\"training_records\"}")
                == Some(count("failed"))
    });
    assert_eq!(count("deleted"), 15.0);
    assert!(count("failed") >= 1.0);
    let (status, body) = d.get("/metrics");
    assert_eq!(status, 200);
    let mut p = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "promtool is missing: run scripts/test, which installs it (Debian package prometheus)",
        );
    p.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "lethe_items_past_expiry{target=\"training_records\",over=\"0d\"}",
        "lethe_sweep_runs_total{schedule=\"sweep\",result=\"failure\"}",
        "lethe_last_success_timestamp_seconds{schedule=\"sweep\"}",
        "lethe_active_holds",
        "lethe_build_info{version=",
    ] {
        assert!(body.contains(name), "{name} missing:\n{body}");
    }
}

#[test]
fn the_alert_rules_pass_promtool_check_and_its_unit_tests() {
    let dir = Tmp::new("serve-rules");
    let out = lethe()
        .args(["alerts", "export", "--format", "prometheus"])
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(dir.path("alerts.yml"), &out.stdout).unwrap();
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lethe-serve/rules/alerts.test.yml");
    std::fs::copy(tests, dir.path("alerts.test.yml")).unwrap();
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "alerts.test.yml"],
    ] {
        let r = std::process::Command::new("promtool")
            .args(&args)
            .current_dir(&dir.0)
            .output()
            .expect("promtool is missing: run scripts/test, which installs it (Debian package prometheus)");
        assert!(
            r.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        );
    }
}

#[test]
fn the_webhook_hears_an_unreachable_store_and_an_item_past_its_slo_then_their_resolution() {
    let dir = Tmp::new("serve-alerts");
    let hook = Receiver::start();
    // A target whose store is missing, and a dry-run schedule over items 25 h past expiry.
    let conn = seed_training(&dir, 0);
    let f = dir.path("files/old.jsonl");
    std::fs::write(&f, "old\n").unwrap();
    conn.execute(
        "INSERT INTO training_records (id, dataset_name, user_id, file_path, created_at, retention_days) VALUES (1, 'ds', 'u', ?1, ?2, 30)",
        rusqlite::params![f.to_string_lossy(), naive(31 * DAY + 3600)],
    )
    .unwrap();
    let cfg = training_config(&dir);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(
        r#"
[[targets]]
name = "gone"
type = "sql"
url = "sqlite://missing/nowhere.db"
table = "t"
category = "finetune_dataset"
key = "id"
created_at = "created_at"

[schedule]
sweep = "*/2 * * * * *"
apply = false
census_interval = "1s"

[alerts]
webhook_env = "HOOK"
check_interval = "1s"
"#,
    );
    std::fs::write(&cfg, text).unwrap();
    let url = hook.url();
    let env = [("HOOK", url.as_str())];
    let started = Instant::now();
    let d = Daemon::start(&cfg, &env);
    eventually(300, "the unreachable store is alerted", || {
        !hook.posts("LetheTargetUnreachable", "firing").is_empty()
    });
    eventually(300, "the failed scheduled run is alerted", || {
        !hook.posts("LetheRunFailed", "firing").is_empty()
    });
    eventually(300, "the item 25 h past expiry is alerted", || {
        !hook.posts("LetheItemsPastExpiry", "firing").is_empty()
    });
    assert!(started.elapsed() < Duration::from_secs(300));
    let post = &hook.posts("LetheItemsPastExpiry", "firing")[0];
    assert_eq!(post["alerts"][0]["labels"]["target"], "training_records");
    assert!(post["text"].as_str().unwrap().contains("24 h"), "{post}");
    // Fixed: the store is there, and the item is deleted.
    std::fs::create_dir_all(dir.path("missing")).unwrap();
    Connection::open(dir.path("missing/nowhere.db"))
        .unwrap()
        .execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL)")
        .unwrap();
    let swept = run(&cfg, &["sweep", "--apply", "--target", "training_records"]);
    assert_eq!(swept.code, Some(0), "{}", swept.stderr);
    for name in [
        "LetheTargetUnreachable",
        "LetheItemsPastExpiry",
        "LetheRunFailed",
    ] {
        eventually(60, &format!("{name} is resolved"), || {
            !hook.posts(name, "resolved").is_empty()
        });
    }
    // Each firing and each resolution posted once.
    std::thread::sleep(Duration::from_secs(2));
    for name in [
        "LetheTargetUnreachable",
        "LetheItemsPastExpiry",
        "LetheRunFailed",
    ] {
        assert_eq!(hook.posts(name, "firing").len(), 1, "{name}");
        assert_eq!(hook.posts(name, "resolved").len(), 1, "{name}");
    }
    drop(d);
    // The URL (it may carry a secret) is in no log line.
    let d_log = std::fs::read_to_string(
        dir.0
            .read_dir()
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().starts_with("serve-"))
            .unwrap()
            .path(),
    )
    .unwrap();
    assert!(!d_log.contains(&url), "{d_log}");
}

#[test]
fn two_daemons_on_one_postgres_state_run_each_fire_once_and_share_its_targets() {
    let pg = super::pg::PgCluster::start();
    pg.create_db("lethe_state");
    let dir = Tmp::new("serve-two");
    let names = ["a", "b", "c"];
    let mut targets = String::new();
    let mut conns = Vec::new();
    for n in names {
        let c = Connection::open(dir.path(&format!("{n}.db"))).unwrap();
        c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL)")
            .unwrap();
        for id in 1..=200 {
            let age = if id % 2 == 0 { 40 * DAY } else { DAY };
            c.execute(
                "INSERT INTO t (id, created_at) VALUES (?1, ?2)",
                rusqlite::params![id, naive(age)],
            )
            .unwrap();
        }
        conns.push(c);
        targets.push_str(&format!(
            "[[targets]]\nname = \"{n}\"\ntype = \"sql\"\nurl = \"sqlite://{n}.db\"\ntable = \"t\"\ncategory = \"log\"\nkey = \"id\"\ncreated_at = \"created_at\"\n\n"
        ));
    }
    let cfg = dir.path("lethe.toml");
    std::fs::write(
        &cfg,
        format!(
            "[state]\nurl = \"{}\"\nlease_ttl = \"5s\"\n\n[categories.log]\nretention = \"30d\"\n\n{targets}[schedule]\nsweep = \"* * * * * *\"\napply = true\n\n[audit]\nkey_env = \"K\"\n",
            pg.url("lethe_state")
        ),
    )
    .unwrap();
    let env = [("K", "a key both daemons share")];
    let mut one = Daemon::start(&cfg, &env);
    let mut two = Daemon::start(&cfg, &env);
    let mut state = pg.client("lethe_state");
    let runs = |state: &mut postgres::Client| -> i64 {
        state
            .query_one(
                "SELECT COUNT(*) FROM fires WHERE result IN ('success', 'failure')",
                &[],
            )
            .unwrap()
            .get(0)
    };
    eventually(90, "20 fires have run", || runs(&mut state) >= 20);
    assert!(one.term() < Duration::from_secs(10));
    assert!(two.term() < Duration::from_secs(10));
    let ran: Vec<String> = state
        .query(
            "SELECT run_id FROM fires WHERE result IN ('success', 'failure')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(ran.len() >= 20);
    // Each fire ran once: one sweep_finished entry per target per run, no more.
    let finished = entries_of_env(&cfg, &env, "sweep_finished");
    let mut per_run: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for e in &finished {
        per_run
            .entry(e["run_id"].as_str().unwrap().to_string())
            .or_default()
            .push(e["target"].as_str().unwrap().to_string());
    }
    for run in &ran {
        let mut t = per_run.get(run).cloned().unwrap_or_default();
        t.sort();
        assert_eq!(t, names, "run {run}: targets swept {t:?}");
    }
    let scheduled = per_run
        .keys()
        .filter(|r| r.starts_with("run-sweep-"))
        .count();
    assert_eq!(
        scheduled,
        ran.len(),
        "runs in the trail and fires run differ"
    );
    // Both daemons swept.
    let workers: i64 = state
        .query_one("SELECT COUNT(DISTINCT worker) FROM fire_targets", &[])
        .unwrap()
        .get(0);
    assert_eq!(workers, 2, "the targets were not shared");
    for c in &conns {
        assert_eq!(ids(c, "t").len(), 100);
    }
    let deleted = entries_of_env(&cfg, &env, "deleted");
    assert_eq!(deleted.len(), 300, "each expired row deleted once");
    let v = run_env(&cfg, &env, &["audit", "verify"]);
    assert_eq!(v.code, Some(0), "{}{}", v.stdout, v.stderr);
}

fn entries_of_env(config: &Path, env: &[(&str, &str)], action: &str) -> Vec<serde_json::Value> {
    let r = run_env(config, env, &["audit", "export", "--format", "jsonl"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    r.stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["action"] == action)
        .collect()
}

#[test]
fn a_sweep_and_an_erasure_through_the_api_name_the_token_in_the_trail_and_logs_are_json() {
    let dir = Tmp::new("serve-actor");
    let conn = seed_training(&dir, 20);
    let cfg = training_config(&dir);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(
        "\n[[api.tokens]]\nname = \"privacy-desk\"\nrole = \"operator\"\ntoken_env = \"DESK\"\n",
    );
    std::fs::write(&cfg, text).unwrap();
    let token = "desk-token-5f1e9c2a7b";
    ensure_init(&cfg);
    let port = free_port();
    let log = dir.path("json.log");
    let child = lethe()
        .args([
            "serve",
            "--log-format",
            "json",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--config",
        ])
        .arg(&cfg)
        .env("DESK", token)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut d = Daemon { child, port, log };
    d.wait_ready();
    let (status, body) = http(
        port,
        "POST",
        "/v1/sweeps",
        Some(token),
        Some(r#"{"apply": true}"#),
    );
    assert_eq!(status, 202, "{body}");
    let run_id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    eventually(30, "the sweep deletes the expired rows", || {
        ids(&conn, "training_records").len() == 10
    });
    eventually(30, "the run is closed", || {
        let (_, b) = http(
            port,
            "GET",
            &format!("/v1/runs/{run_id}"),
            Some(token),
            None,
        );
        serde_json::from_str::<serde_json::Value>(&b).is_ok_and(|r| !r["finished_at"].is_null())
    });
    let (status, body) = http(
        port,
        "POST",
        "/v1/erasure-requests",
        Some(token),
        Some(r#"{"subject": "user-3", "apply": true}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert!(d.term() < Duration::from_secs(10));
    let finished = entries_of(&cfg, "sweep_finished");
    let mine = finished
        .iter()
        .find(|e| e["run_id"] == run_id.as_str())
        .unwrap();
    assert!(
        mine["detail"]
            .as_str()
            .unwrap()
            .ends_with("by=privacy-desk"),
        "{mine}"
    );
    let received = entries_of(&cfg, "erasure_received");
    assert!(
        received
            .iter()
            .any(|e| e["detail"].as_str().unwrap().ends_with("by privacy-desk")),
        "{received:?}"
    );
    let everything = serde_json::to_string(&export(&cfg)).unwrap();
    assert!(!everything.contains(token));
    // Every log line is one JSON object, and none holds the token.
    let text = d.log_text();
    assert!(!text.contains(token));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 3, "{text}");
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{l}");
    }
}

#[test]
fn the_newest_entry_altered_is_alerted_by_the_next_incremental_verification() {
    let dir = Tmp::new("serve-verify");
    let hook = Receiver::start();
    let (conn, cfg) = scheduled(
        &dir,
        10,
        "sweep = \"*/2 * * * * *\"\napply = true\n[alerts]\nwebhook_env = \"HOOK\"\ncheck_interval = \"1s\"\nverify_interval = \"1s\"",
    );
    let url = hook.url();
    let env = [("HOOK", url.as_str())];
    let d = Daemon::start(&cfg, &env);
    eventually(20, "a scheduled run", || {
        ids(&conn, "training_records").len() == 5
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(d.metric("lethe_trail_verified"), Some(1.0));
    assert!(
        hook.posts("LetheTrailVerificationFailed", "firing")
            .is_empty()
    );
    // Someone rewrites what the newest entry says: at or after the last head verified, so
    // the next (incremental) verification sees it. (An older entry is checked by the
    // whole verification, at start-up and daily.)
    let n = state_db(&dir)
        .execute(
            "UPDATE audit SET detail = 'nothing to see' WHERE seq = (SELECT MAX(seq) FROM audit)",
            [],
        )
        .unwrap();
    assert_eq!(n, 1);
    eventually(30, "the altered trail is alerted", || {
        !hook
            .posts("LetheTrailVerificationFailed", "firing")
            .is_empty()
    });
    assert_eq!(d.metric("lethe_trail_verified"), Some(0.0));
}

#[test]
fn a_target_with_its_own_schedule_is_swept_on_it_and_not_on_the_global_one() {
    let dir = Tmp::new("serve-own");
    let mut conns = Vec::new();
    let mut targets = String::new();
    for (n, own) in [("fast", true), ("slow", false)] {
        let c = Connection::open(dir.path(&format!("{n}.db"))).unwrap();
        c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL)")
            .unwrap();
        c.execute(
            "INSERT INTO t (id, created_at) VALUES (1, ?1)",
            [naive(40 * DAY)],
        )
        .unwrap();
        conns.push(c);
        targets.push_str(&format!(
            "[[targets]]\nname = \"{n}\"\ntype = \"sql\"\nurl = \"sqlite://{n}.db\"\ntable = \"t\"\ncategory = \"log\"\nkey = \"id\"\ncreated_at = \"created_at\"\n{}\n",
            if own { "schedule = \"*/2 * * * * *\"" } else { "" }
        ));
    }
    let cfg = dir.path("lethe.toml");
    std::fs::write(
        &cfg,
        format!("[state]\nurl = \"sqlite://state/lethe-state.db\"\n[categories.log]\nretention = \"30d\"\n{targets}[schedule]\nsweep = \"0 0 1 1 *\"\napply = true\n"),
    )
    .unwrap();
    let d = Daemon::start(&cfg, &[]);
    eventually(20, "the target on its own schedule is swept", || {
        ids(&conns[0], "t").is_empty()
    });
    let (_, targets) = http(d.port, "GET", "/v1/targets", None, None);
    let targets: serde_json::Value = serde_json::from_str(&targets).unwrap();
    assert_eq!(targets[0]["schedule"], "targets.fast", "{targets}");
    assert_eq!(targets[1]["schedule"], "sweep", "{targets}");
    drop(d);
    assert_eq!(
        ids(&conns[1], "t"),
        vec![1],
        "the yearly schedule swept the other target"
    );
    let finished = entries_of(&cfg, "sweep_finished");
    assert!(
        finished.iter().all(|e| e["target"] == "fast"),
        "{finished:?}"
    );
    assert!(finished.iter().all(|e| {
        e["run_id"]
            .as_str()
            .unwrap()
            .starts_with("run-targets.fast-")
    }));
}

#[test]
fn a_daemon_that_dies_mid_target_loses_it_and_another_daemon_finishes_it() {
    assert!(
        has_failpoints(),
        "this test needs a lethe built with the `failpoints` feature: run scripts/test"
    );
    let pg = super::pg::PgCluster::start();
    pg.create_db("lethe_state");
    let dir = Tmp::new("serve-dies");
    let n = 30_000;
    let conn = seed_training(&dir, n);
    let cfg = training_config(&dir);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text = text.replace(
        "url = \"sqlite://state/lethe-state.db\"",
        &format!("url = \"{}\"\nlease_ttl = \"3s\"", pg.url("lethe_state")),
    );
    text.push_str("\n[audit]\nkey_env = \"K\"\n[schedule]\nsweep = \"0 0 1 1 *\"\napply = true\n");
    std::fs::write(&cfg, text).unwrap();
    let env = [("K", "a key both daemons share")];
    // The first daemon claims the fire (started by hand through the state: a yearly
    // schedule) and stalls dead in the middle of the target, after its first delete.
    let first = Daemon::start(&cfg, &[env[0], ("LETHE_FAILPOINT", "after_delete:1:stop")]);
    let mut state = pg.client("lethe_state");
    state
        .batch_execute(&format!(
            "INSERT INTO fires (schedule, fire_at, run_id, apply, claimed_by, claimed_at) VALUES ('sweep', {}, 'run-sweep-by-hand', 1, 'test', '2026-01-01T00:00:00Z');
             INSERT INTO fire_targets (run_id, target, status, not_before) VALUES ('run-sweep-by-hand', 'training_records', 'pending', 0);
             INSERT INTO runs (run_id, kind, dry_run, started_at) VALUES ('run-sweep-by-hand', 'retention', 0, '2026-01-01T00:00:00Z');",
            now_secs()
        ))
        .unwrap();
    let pid = first.child.id();
    eventually(30, "the first daemon stalls mid-target", || stopped(pid));
    let left = count(&conn);
    assert!(
        left < n,
        "the first daemon deleted nothing before it stalled"
    );
    // A second daemon takes the target over once the first is silent for lease_ttl, and
    // finishes it: what the first deleted and did not record is recorded, once.
    let mut second = Daemon::start(&cfg, &env);
    eventually(60, "the second daemon finishes the target", || {
        count(&conn) == n / 2
    });
    eventually(20, "the fire is closed", || {
        state
            .query_one(
                "SELECT COALESCE(result, '') FROM fires WHERE run_id = 'run-sweep-by-hand'",
                &[],
            )
            .unwrap()
            .get::<_, String>(0)
            == "success"
    });
    drop(first);
    assert!(second.term() < Duration::from_secs(10));
    let deleted = entries_of_env(&cfg, &env, "deleted");
    assert_eq!(
        deleted.len() as i64,
        n / 2,
        "each expired row recorded once"
    );
    let v = run_env(&cfg, &env, &["audit", "verify"]);
    assert_eq!(v.code, Some(0), "{}{}", v.stdout, v.stderr);
}

#[test]
fn an_open_fire_is_resumed_as_the_config_says_now_and_not_at_all_past_misfire_grace() {
    let dir = Tmp::new("serve-resume");
    let (conn, cfg) = scheduled(
        &dir,
        10,
        "sweep = \"0 0 1 1 *\"\napply = false\nmisfire_grace = \"1h\"",
    );
    ensure_init(&cfg);
    // Two fires left open by daemons that stopped, both claimed to delete: one recent, one
    // older than misfire_grace.
    let db = state_db(&dir);
    let now = now_secs();
    for (run, at) in [
        ("run-sweep-recent", now - 60),
        ("run-sweep-old", now - 7200),
    ] {
        db.execute_batch(&format!(
            "INSERT INTO fires (schedule, fire_at, run_id, apply, claimed_by, claimed_at) VALUES ('sweep', {at}, '{run}', 1, 'gone', 'x');
             INSERT INTO fire_targets (run_id, target, status, not_before) VALUES ('{run}', 'training_records', 'pending', 0);
             INSERT INTO runs (run_id, kind, dry_run, started_at) VALUES ('{run}', 'retention', 0, 'x');"
        ))
        .unwrap();
    }
    let d = Daemon::start(&cfg, &[]);
    eventually(20, "the recent fire is resumed and closed", || {
        db.query_row(
            "SELECT COALESCE(result, '') FROM fires WHERE run_id = 'run-sweep-recent'",
            [],
            |r| r.get::<_, String>(0),
        )
        .unwrap()
            == "success"
    });
    drop(d);
    // Resumed as a dry run: the config says apply = false now.
    assert_eq!(
        ids(&conn, "training_records").len(),
        10,
        "a fire claimed to delete deleted after apply was set to false"
    );
    let would: Vec<_> = entries_of(&cfg, "would_delete");
    assert!(
        would.iter().all(|e| e["run_id"] == "run-sweep-recent") && would.len() == 5,
        "{would:?}"
    );
    let old: String = db
        .query_row(
            "SELECT result FROM fires WHERE run_id = 'run-sweep-old'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(old, "misfire");
    let misfires = entries_of(&cfg, "schedule_misfire");
    assert!(
        misfires.iter().any(|e| e["run_id"] == "run-sweep-old"),
        "{misfires:?}"
    );
    assert!(
        entries_of(&cfg, "sweep_finished")
            .iter()
            .all(|e| e["run_id"] != "run-sweep-old")
    );
}

#[test]
fn an_alert_the_webhook_did_not_take_is_posted_again_until_it_does() {
    let dir = Tmp::new("serve-repost");
    // Down for the first six posts: longer than one firing's retries.
    let hook = Receiver::failing(6);
    let conn = seed_training(&dir, 0);
    let f = dir.path("files/old.jsonl");
    std::fs::write(&f, "old\n").unwrap();
    conn.execute(
        "INSERT INTO training_records (id, dataset_name, user_id, file_path, created_at, retention_days) VALUES (1, 'ds', 'u', ?1, ?2, 30)",
        rusqlite::params![f.to_string_lossy(), naive(33 * DAY)],
    )
    .unwrap();
    let cfg = training_config(&dir);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("\n[schedule]\ncensus_interval = \"1s\"\n[alerts]\nwebhook_env = \"HOOK\"\ncheck_interval = \"1s\"\n");
    std::fs::write(&cfg, text).unwrap();
    let url = hook.url();
    let d = Daemon::start(&cfg, &[("HOOK", url.as_str())]);
    eventually(90, "the alert reaches the webhook once it is back", || {
        !hook.posts("LetheItemsPastExpiry", "firing").is_empty()
    });
    eventually(10, "the delivery is in the trail", || {
        entries_of(&cfg, "alert_fired")
            .iter()
            .any(|e| e["detail"].as_str().unwrap().contains("posted again"))
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        hook.posts("LetheItemsPastExpiry", "firing").len(),
        1,
        "posted again until taken, and not after"
    );
    drop(d);
    let fired = entries_of(&cfg, "alert_fired");
    assert!(
        fired.iter().any(|e| e["detail"]
            .as_str()
            .unwrap()
            .contains("failed after 5 attempts")),
        "{fired:?}"
    );
}

//! PostgreSQL for data and for state, against a throwaway cluster each test starts from the
//! system's binaries on a free loopback port and removes afterwards.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use postgres::{Client, NoTls};

use crate::*;

pub struct PgCluster {
    dir: Tmp,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

fn pg_bin() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if p.join("initdb").exists() {
            return p;
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
        .pop()
        .filter(|p| p.join("initdb").exists())
        .expect("PostgreSQL server binaries not found: run scripts/test, which installs postgresql")
}

/// How a test's cluster differs from the default one.
#[derive(Default)]
pub struct PgSetup<'a> {
    /// TCP connections must give this password (scram); the socket stays trusted.
    pub password: Option<&'a str>,
    /// Files written into the data directory before the server starts, readable by the
    /// server's user alone (a certificate and its key).
    pub files: &'a [(&'a str, &'a [u8])],
    /// Server settings, `name=value` each.
    pub settings: &'a [&'a str],
    /// pg_hba.conf's lines for TCP, in place of initdb's (the socket stays trusted).
    pub hba: Option<&'a str>,
}

impl PgCluster {
    pub fn start() -> PgCluster {
        Self::start_with(None)
    }

    /// With a password, TCP connections must give it (scram); the socket stays trusted.
    pub fn start_with(password: Option<&str>) -> PgCluster {
        Self::start_setup(PgSetup {
            password,
            ..PgSetup::default()
        })
    }

    pub fn start_setup(setup: PgSetup) -> PgCluster {
        let password = setup.password;
        let dir = Tmp::new("pg");
        let bin = pg_bin();
        let as_postgres = rustix::process::getuid().is_root();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir.0)
                .status()
                .unwrap();
            assert!(ok.success(), "chown to postgres failed");
        }
        let c = PgCluster {
            dir,
            bin,
            port: free_port(),
            as_postgres,
        };
        let data = c.dir.path("data");
        let host_auth = if password.is_some() {
            "scram-sha-256"
        } else {
            "trust"
        };
        c.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "--auth-local=trust",
                "--auth-host",
                host_auth,
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        let hba = setup
            .hba
            .map(|h| format!("local all all trust\n{h}\n").into_bytes());
        let files = setup
            .files
            .iter()
            .map(|(name, text)| (*name, text.to_vec()))
            .chain(hba.map(|h| ("pg_hba.conf", h)));
        for (name, text) in files {
            use std::os::unix::fs::PermissionsExt;
            let path = data.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            if as_postgres {
                let ok = Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&path)
                    .status()
                    .unwrap();
                assert!(ok.success(), "chown to postgres failed");
            }
        }
        let mut opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            c.port,
            c.dir.0.display()
        );
        for s in setup.settings {
            opts.push_str(&format!(" -c {s}"));
        }
        let log = c.dir.path("log");
        c.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        if let Some(pw) = password {
            c.socket_client("postgres")
                .batch_execute(&format!("ALTER USER postgres PASSWORD '{pw}'"))
                .unwrap();
        }
        c
    }

    /// A client over the Unix socket, which pg_hba.conf always trusts.
    pub fn socket_client(&self, db: &str) -> Client {
        let socket = format!(
            "host={} port={} user=postgres dbname={db}",
            self.dir.0.display(),
            self.port
        );
        Client::connect(&socket, NoTls).unwrap()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(tool));
            c
        } else {
            Command::new(self.bin.join(tool))
        };
        let out = cmd.args(args).current_dir(&self.dir.0).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn client(&self, db: &str) -> Client {
        Client::connect(&self.url(db), NoTls).unwrap()
    }

    pub fn create_db(&self, name: &str) -> Client {
        self.client("postgres")
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        self.client(name)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir.0
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.path("data");
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        let _ = cmd
            .args(["-D", data.to_str().unwrap_or(""), "-m", "immediate", "stop"])
            .output();
    }
}

/// A config for one PostgreSQL target; the state is in PostgreSQL too unless `state` says.
pub fn config(
    dir: &Path,
    data_url: &str,
    state_url: &str,
    table: &str,
    created: &str,
    extra: &str,
) -> PathBuf {
    let cfg = dir.join("lethe.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[state]
url = "{state_url}"

[categories.log]
retention = "30d"

[[targets]]
name = "logs"
type = "sql"
url = "{data_url}"
table = "{table}"
category = "log"
key = "id"
created_at = "{created}"
subject = "user_id"
{extra}
[audit]
key_env = "LETHE_TEST_AUDIT_KEY"
"#
        ),
    )
    .unwrap();
    cfg
}

pub fn lethe_pg(cfg: &Path, args: &[&str]) -> Run {
    run_env(
        cfg,
        &[(
            "LETHE_TEST_AUDIT_KEY",
            "a shared key for every lethe process",
        )],
        args,
    )
}

pub fn pg_ids(c: &mut Client, table: &str) -> Vec<String> {
    c.query(&format!("SELECT id::text FROM {table} ORDER BY id"), &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn timestamptz_table_in_a_schema_with_state_in_postgres() {
    let pg = PgCluster::start();
    let mut data = pg.create_db("app");
    pg.create_db("lethe_state");
    data.batch_execute(
        "CREATE SCHEMA ai;
         CREATE TABLE ai.inference_logs (id bigint PRIMARY KEY, user_id text NOT NULL, created_at timestamptz NOT NULL, retention_days integer);
         INSERT INTO ai.inference_logs
           SELECT g, 'user-' || (g % 5), now() - make_interval(days => CASE WHEN g % 2 = 0 THEN 40 ELSE 5 END), CASE WHEN g % 10 = 1 THEN 3 END
           FROM generate_series(1, 400) g;",
    )
    .unwrap();
    let cfg = config(
        pg.dir(),
        &pg.url("app"),
        &pg.url("lethe_state"),
        "ai.inference_logs",
        "created_at",
        "retention_days = \"retention_days\"\n",
    );
    let r = lethe_pg(&cfg, &["check"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("no index"),
        "check warns about unindexed columns: {}",
        r.stdout
    );
    assert!(r.stdout.contains("CREATE INDEX"), "{}", r.stdout);

    let r = lethe_pg(&cfg, &["sweep", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    // even ids are 40 days old; odd ids with g%10 == 1 have a 3-day window and are 5 days old
    let due: Vec<i64> = (1..=400).filter(|g| g % 2 == 0 || g % 10 == 1).collect();
    assert_eq!(r.json()["targets"][0]["found"], due.len());
    assert_eq!(
        pg_ids(&mut data, "ai.inference_logs").len(),
        400,
        "dry run deleted"
    );

    let r = lethe_pg(&cfg, &["sweep", "--apply", "--json", "--batch-size", "37"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let left: Vec<String> = (1..=400)
        .filter(|g| !due.contains(g))
        .map(|g| g.to_string())
        .collect();
    let mut got = pg_ids(&mut data, "ai.inference_logs");
    got.sort_by_key(|s| s.parse::<i64>().unwrap());
    assert_eq!(got, left);
    let r = lethe_pg(&cfg, &["audit", "verify"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);

    // Erasure and holds work the same on PostgreSQL.
    let r = lethe_pg(
        &cfg,
        &[
            "hold",
            "add",
            "--subject",
            "user-2",
            "--case",
            "C",
            "--reason",
            "r",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let r = lethe_pg(&cfg, &["erase", "--subject", "user-2", "--apply", "--json"]);
    assert_eq!(r.json()["targets"][0]["deleted"], 0);
    assert_eq!(r.json()["targets"][0]["held"], 40);
    let r = lethe_pg(&cfg, &["erase", "--subject", "user-3", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let n: i64 = data
        .query_one(
            "SELECT count(*) FROM ai.inference_logs WHERE user_id = 'user-3'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let r = lethe_pg(&cfg, &["export", "--subject", "user-2"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let items = doc["targets"][0]["items"].as_array().unwrap();
    assert_eq!(items.len(), 40);
    assert!(
        items
            .iter()
            .all(|i| i["user_id"] == "user-2" && i["created_at"].is_string())
    );
    assert_eq!(lethe_pg(&cfg, &["audit", "verify"]).code, Some(0));
}

#[test]
fn timestamp_text_and_epoch_columns_and_a_uuid_key() {
    let pg = PgCluster::start();
    let mut data = pg.create_db("app");
    data.batch_execute(
        "CREATE TABLE naive (id integer PRIMARY KEY, user_id text, created_at timestamp);
         INSERT INTO naive VALUES (1, 'u', (now() AT TIME ZONE 'UTC') - interval '31 days'),
                                  (2, 'u', (now() AT TIME ZONE 'UTC') - interval '29 days');
         CREATE TABLE texty (id text PRIMARY KEY, user_id text, created_at text);
         INSERT INTO texty VALUES
           ('a', 'u', to_char((now() - interval '30 days 2 hours') AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')),
           ('b', 'u', to_char((now() - interval '30 days' + interval '3 hours') AT TIME ZONE 'Asia/Kolkata', 'YYYY-MM-DD\"T\"HH24:MI:SS') || '+05:30'),
           ('c', 'u', 'not a date'),
           ('d', 'u', to_char((now() - interval '30 days 3 hours') AT TIME ZONE 'America/New_York', 'YYYY-MM-DD\"T\"HH24:MI:SS') || to_char(now() AT TIME ZONE 'America/New_York' - now() AT TIME ZONE 'UTC', 'HH24:MI'));
         CREATE TABLE epoch (id uuid PRIMARY KEY, user_id text, created_at bigint);
         INSERT INTO epoch VALUES
           ('00000000-0000-0000-0000-000000000001', 'u', extract(epoch from now() - interval '31 days')::bigint),
           ('00000000-0000-0000-0000-000000000002', 'u', (extract(epoch from now() - interval '31 days') * 1000)::bigint),
           ('00000000-0000-0000-0000-000000000003', 'u', extract(epoch from now() - interval '1 day')::bigint);",
    )
    .unwrap();
    // 'd' carries a negative offset written as "-05:00" (or "-04:00"): to_char gives "-05:00".
    let state = format!("sqlite://{}/state.db", pg.dir().display());
    for (table, expect_left, code) in [
        ("naive", vec!["2"], 0),
        ("texty", vec!["b", "c"], 1),
        ("epoch", vec!["00000000-0000-0000-0000-000000000003"], 0),
    ] {
        let cfg = config(pg.dir(), &pg.url("app"), &state, table, "created_at", "");
        let r = lethe_pg(&cfg, &["sweep", "--apply", "--json", "--batch-size", "1"]);
        let failures = lethe_pg(&cfg, &["audit", "log", "--target", "logs", "--limit", "5"]).stdout;
        assert_eq!(
            r.code,
            Some(code),
            "{table}: {}{}\n{failures}",
            r.stdout,
            r.stderr
        );
        assert_eq!(
            pg_ids(&mut data, table),
            expect_left,
            "{table}: {}\n{failures}",
            r.stdout
        );
    }
}

#[test]
fn two_processes_sharing_a_postgres_state_never_fork_the_chain() {
    let pg = PgCluster::start();
    let mut data = pg.create_db("app");
    pg.create_db("lethe_state");
    data.batch_execute(
        "CREATE TABLE logs (id bigint PRIMARY KEY, user_id text, created_at timestamptz);
         INSERT INTO logs SELECT g, 'u' || (g % 3), now() - make_interval(days => CASE WHEN g % 2 = 0 THEN 40 ELSE 1 END) FROM generate_series(1, 3000) g;",
    )
    .unwrap();
    let cfg = config(
        pg.dir(),
        &pg.url("app"),
        &pg.url("lethe_state"),
        "logs",
        "created_at",
        "",
    );
    ensure_init_env(
        &cfg,
        &[(
            "LETHE_TEST_AUDIT_KEY",
            "a shared key for every lethe process",
        )],
    );
    let spawn = || {
        lethe()
            .args([
                "sweep",
                "--apply",
                "--json",
                "--batch-size",
                "20",
                "--config",
            ])
            .arg(&cfg)
            .env(
                "LETHE_TEST_AUDIT_KEY",
                "a shared key for every lethe process",
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b, c) = (spawn(), spawn(), spawn());
    let mut deleted = 0;
    for child in [a, b, c] {
        let o = child.wait_with_output().unwrap();
        let j: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
        deleted += j["targets"][0]["deleted"].as_u64().unwrap();
    }
    assert_eq!(deleted, 1500, "each expired row deleted exactly once");
    assert_eq!(pg_ids(&mut data, "logs").len(), 1500);
    let r = lethe_pg(&cfg, &["audit", "export", "--format", "jsonl"]);
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for line in r.stdout.lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        if e["action"] == "deleted" {
            *per_key
                .entry(e["item_key"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    assert_eq!(per_key.len(), 1500);
    assert!(per_key.values().all(|n| *n == 1));
    let r = lethe_pg(&cfg, &["audit", "verify"]);
    assert_eq!(r.code, Some(0), "{}", r.stdout);
}

#[test]
fn killed_mid_apply_on_postgres_then_finished() {
    let pg = PgCluster::start();
    let mut data = pg.create_db("app");
    pg.create_db("lethe_state");
    data.batch_execute(
        "CREATE TABLE logs (id bigint PRIMARY KEY, user_id text, created_at timestamptz);
         INSERT INTO logs SELECT g, 'u', now() - make_interval(days => CASE WHEN g % 2 = 0 THEN 40 ELSE 1 END) FROM generate_series(1, 500) g;",
    )
    .unwrap();
    let cfg = config(
        pg.dir(),
        &pg.url("app"),
        &pg.url("lethe_state"),
        "logs",
        "created_at",
        "",
    );
    ensure_init_env(
        &cfg,
        &[(
            "LETHE_TEST_AUDIT_KEY",
            "a shared key for every lethe process",
        )],
    );
    for point in ["after_pending:2", "after_delete:3"] {
        let out = lethe_failpoint(point)
            .args([
                "sweep",
                "--apply",
                "--batch-size",
                "30",
                "--rows-per-commit",
                "60",
                "--config",
            ])
            .arg(&cfg)
            .env(
                "LETHE_TEST_AUDIT_KEY",
                "a shared key for every lethe process",
            )
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(9), "{point}");
    }
    let r = lethe_pg(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let left = pg_ids(&mut data, "logs");
    assert_eq!(left.len(), 250);
    assert!(left.iter().all(|k| k.parse::<i64>().unwrap() % 2 == 1));
    let r = lethe_pg(&cfg, &["audit", "export", "--format", "jsonl"]);
    let deletions = r
        .stdout
        .lines()
        .filter(|l| l.contains("\"action\":\"deleted\""))
        .count();
    assert_eq!(deletions, 250, "one deletion entry per deleted row");
    assert_eq!(lethe_pg(&cfg, &["audit", "verify"]).code, Some(0));
}

#[test]
fn passwords_come_from_the_environment_and_never_show() {
    let secret = "s3cret-Pa55word";
    let pg = PgCluster::start_with(Some(secret));
    {
        let mut c = Client::connect(
            &pg.url("postgres")
                .replace("postgres@", &format!("postgres:{secret}@")),
            NoTls,
        )
        .unwrap();
        c.batch_execute("CREATE DATABASE app").unwrap();
        let mut app = Client::connect(
            &pg.url("app")
                .replace("postgres@", &format!("postgres:{secret}@")),
            NoTls,
        )
        .unwrap();
        app.batch_execute("CREATE TABLE logs (id bigint PRIMARY KEY, user_id text, created_at timestamptz); INSERT INTO logs VALUES (1, 'u', now() - interval '40 days'), (2, 'u', now())").unwrap();
    }
    let state = format!("sqlite://{}/state.db", pg.dir().display());
    let cfg = config(
        pg.dir(),
        &pg.url("app"),
        &state,
        "logs",
        "created_at",
        "password_env = \"LETHE_TEST_PG_PASSWORD\"\n",
    );
    // Unset: a clear error naming the variable, and nothing touched.
    let r = lethe_pg(&cfg, &["sweep", "--apply"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("LETHE_TEST_PG_PASSWORD"), "{}", r.stderr);
    // Wrong: the error does not echo it.
    let out = lethe()
        .args(["sweep", "--apply", "--config"])
        .arg(&cfg)
        .env(
            "LETHE_TEST_AUDIT_KEY",
            "a shared key for every lethe process",
        )
        .env("LETHE_TEST_PG_PASSWORD", "wrong-guess-123")
        .output()
        .unwrap();
    let all =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(!all.contains("wrong-guess-123"), "{all}");
    // Right: it works, and neither output nor the trail holds the password.
    let out = lethe()
        .args(["sweep", "--apply", "--json", "--config"])
        .arg(&cfg)
        .env(
            "LETHE_TEST_AUDIT_KEY",
            "a shared key for every lethe process",
        )
        .env("LETHE_TEST_PG_PASSWORD", secret)
        .output()
        .unwrap();
    let all =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(!all.contains(secret));
    let trail = lethe_pg(&cfg, &["audit", "export"]).stdout;
    assert!(!trail.contains(secret) && trail.contains("\"deleted\""));
    // A password written in the URL is redacted from messages.
    let cfg2 = config(
        pg.dir(),
        &pg.url("nope")
            .replace("postgres@", &format!("postgres:{secret}@")),
        &state,
        "logs",
        "created_at",
        "",
    );
    let r = lethe_pg(&cfg2, &["check"]);
    assert_ne!(r.code, Some(0));
    assert!(!(r.stdout + &r.stderr).contains(secret));
}

//! Issue 10, item 11: configs refused before anything is created or touched (exit 2, the key
//! and line named): Lethe's state in a target's own database, durations too long to compute
//! with, and a config with no targets.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::pg::PgCluster;
use crate::*;

/// Every entry under `dir`, as relative paths.
fn listing(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.insert(p.strip_prefix(root).unwrap().display().to_string());
            if p.is_dir() && !p.is_symlink() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

fn sqlite_tables(c: &Connection) -> Vec<String> {
    let mut st = c
        .prepare("SELECT name FROM sqlite_schema ORDER BY name")
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// `logs` with one expired row (1) and one young (2), in `ai.db`.
fn seed(d: &Tmp) -> Connection {
    let c = Connection::open(d.path("ai.db")).unwrap();
    c.execute_batch(&format!(
        "CREATE TABLE logs (id INTEGER PRIMARY KEY, user_id TEXT, created_at TEXT);
         INSERT INTO logs VALUES (1, 'u1', '{}'), (2, 'u1', '{}');",
        naive(40 * DAY),
        naive(DAY)
    ))
    .unwrap();
    c
}

fn write(d: &Tmp, text: &str) -> PathBuf {
    let cfg = d.path("lethe.toml");
    std::fs::write(&cfg, text).unwrap();
    cfg
}

const TARGET: &str = "[[targets]]\nname = \"logs\"\ntype = \"sql\"\nurl = \"sqlite://ai.db\"\n\
                      table = \"logs\"\ncategory = \"log\"\nkey = \"id\"\ncreated_at = \"created_at\"\n\
                      subject = \"user_id\"\n";

/// Exit 2, and each of `needles` in the message (on stderr; `check` reports on stdout).
fn refused(r: &Run, needles: &[&str], what: &str) {
    let said = format!("{}{}", r.stdout, r.stderr);
    assert_eq!(r.code, Some(2), "{what}: {said}");
    for n in needles {
        assert!(said.contains(n), "{what}: {n:?} in {said}");
    }
}

#[test]
fn a_state_in_a_targets_sqlite_database_is_refused_by_every_command() {
    let d = Tmp::new("state-is-target");
    let c = seed(&d);
    // The same file under another name: a symbolic link, and a path with `..` in it.
    std::os::unix::fs::symlink(d.path("ai.db"), d.path("link.db")).unwrap();
    std::fs::create_dir(d.path("sub")).unwrap();
    for state in ["sqlite://link.db", "sqlite://sub/../ai.db"] {
        let cfg = write(
            &d,
            &format!(
                "[state]\nurl = \"{state}\"\n[categories.log]\nretention = \"30d\"\n{}",
                TARGET.replace("sqlite://ai.db", "sqlite://./ai.db")
            ),
        );
        let before = listing(&d.0);
        for args in [
            &["init"][..],
            &[
                "hold",
                "add",
                "--subject",
                "u1",
                "--case",
                "C-1",
                "--reason",
                "r",
            ],
            &["hold", "list"],
            &[
                "exception",
                "add",
                "--target",
                "logs",
                "--key",
                "1",
                "--until",
                "2099-01-01",
                "--owner",
                "o",
                "--reason",
                "r",
            ],
            &["erase", "--subject", "u1", "--apply"],
            &["export", "--subject", "u1"],
            &["audit", "verify"],
            &["sweep", "--apply"],
            &["check"],
        ] {
            let r = run_raw(&cfg, args);
            refused(
                &r,
                &["state.url", "line 2", "own state database"],
                &format!("{state} {args:?}"),
            );
        }
        let r = run_raw(&cfg, &["hold", "list", "--json"]);
        assert_eq!(r.code, Some(2));
        assert_eq!(r.json()["problems"][0]["key"], "state.url");
        assert_eq!(r.json()["problems"][0]["line"], 2);
        assert_eq!(
            listing(&d.0),
            before,
            "{state}: no state file or key was made"
        );
        assert_eq!(
            sqlite_tables(&c),
            vec!["logs"],
            "{state}: no table was made"
        );
        assert_eq!(ids(&c, "logs"), vec![1, 2]);
    }
    // Its own database, and all is well.
    let cfg = write(
        &d,
        &format!(
            "[state]\nurl = \"sqlite://state.db\"\n[categories.log]\nretention = \"30d\"\n{TARGET}"
        ),
    );
    let r = run(&cfg, &["sweep", "--apply"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(ids(&c, "logs"), vec![2]);
}

/// `lethe ARGS --config CONFIG` with `env`, without making the state first.
fn raw_env(config: &Path, env: &[(&str, &str)], args: &[&str]) -> Run {
    let out = lethe()
        .args(args)
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn pg_tables(c: &mut postgres::Client) -> Vec<String> {
    c.query(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables
         WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[test]
fn a_state_in_a_targets_postgres_database_is_refused() {
    let pg = PgCluster::start();
    let mut app = pg.create_db("app");
    app.batch_execute(
        "CREATE TABLE logs (id bigint PRIMARY KEY, user_id text, created_at timestamptz);
         INSERT INTO logs VALUES (1, 'u1', now() - interval '40 days'), (2, 'u1', now() - interval '1 day');",
    )
    .unwrap();
    pg.create_db("lethe_state");
    let d = Tmp::new("pg-state-is-target");
    let port = pg
        .url("x")
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let target = TARGET.replace("sqlite://ai.db", &pg.url("app"));
    // The target's database, spelled otherwise: another scheme, host name, and user.
    for state in [
        pg.url("app"),
        format!("postgresql://lethe@localhost:{port}/app"),
        format!("postgres://postgres@[::1]:{port}/app?connect_timeout=1"),
    ] {
        let cfg = write(
            &d,
            &format!(
                "[state]\nurl = \"{state}\"\n[categories.log]\nretention = \"30d\"\n{target}\
                 [audit]\nkey_env = \"LETHE_TEST_AUDIT_KEY\"\n"
            ),
        );
        for args in [
            &["init"][..],
            &[
                "hold",
                "add",
                "--subject",
                "u1",
                "--case",
                "C-1",
                "--reason",
                "r",
            ],
            &["erase", "--subject", "u1", "--apply"],
            &["sweep", "--apply"],
            &["check"],
        ] {
            let r = raw_env(
                &cfg,
                &[("LETHE_TEST_AUDIT_KEY", "a key of sixteen bytes or more")],
                args,
            );
            refused(
                &r,
                &["state.url", "line 2", "own state database"],
                &format!("{state} {args:?}"),
            );
        }
        assert_eq!(
            pg_tables(&mut app),
            vec!["public.logs"],
            "{state}: nothing made"
        );
        assert_eq!(
            app.query_one("SELECT count(*) FROM logs", &[])
                .unwrap()
                .get::<_, i64>(0),
            2
        );
    }
    // Another database of the same server is the state's own.
    let cfg = write(
        &d,
        &format!(
            "[state]\nurl = \"{}\"\n[categories.log]\nretention = \"30d\"\n{target}\
             [audit]\nkey_env = \"LETHE_TEST_AUDIT_KEY\"\n",
            pg.url("lethe_state")
        ),
    );
    let r = run_env(
        &cfg,
        &[("LETHE_TEST_AUDIT_KEY", "a key of sixteen bytes or more")],
        &["sweep", "--apply"],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(pg_tables(&mut app), vec!["public.logs"]);
    assert_eq!(
        app.query_one("SELECT count(*) FROM logs", &[])
            .unwrap()
            .get::<_, i64>(0),
        1
    );
}

#[test]
fn durations_too_long_to_compute_with_are_refused() {
    let d = Tmp::new("long-durations");
    let c = seed(&d);
    for (config, key, line) in [
        (
            format!(
                "[state]\nurl = \"sqlite://state.db\"\n[categories.log]\nretention = \"999999999999d\"\n{TARGET}"
            ),
            "categories.log.retention",
            "line 4",
        ),
        (
            format!(
                "[state]\nurl = \"sqlite://state.db\"\n[categories.log]\nretention = \"30d\"\nmax = \"1001000d\"\n{TARGET}"
            ),
            "categories.log.max",
            "line 5",
        ),
        // SQLite and PostgreSQL count a lock wait in 32-bit milliseconds: 30 days overflowed.
        (
            format!(
                "[state]\nurl = \"sqlite://state.db\"\n[categories.log]\nretention = \"30d\"\n{TARGET}lock_timeout = \"30d\"\n"
            ),
            "targets.logs.lock_timeout",
            "line 14",
        ),
        (
            format!(
                "[state]\nurl = \"sqlite://state.db\"\n[categories.log]\nretention = \"30d\"\n{TARGET}\
                 [exceptions]\nmax_extension = \"9999999999999s\"\n"
            ),
            "exceptions.max_extension",
            "line 15",
        ),
    ] {
        let cfg = write(&d, &config);
        let before = listing(&d.0);
        for args in [&["init"][..], &["sweep", "--apply"], &["check"]] {
            let r = run_raw(&cfg, args);
            refused(&r, &[key, line, "too long"], &format!("{key} {args:?}"));
        }
        assert!(!d.path("state.db").exists(), "{key}: no state made");
        assert_eq!(listing(&d.0), before);
        assert_eq!(ids(&c, "logs"), vec![1, 2]);
    }
}

#[test]
fn a_config_without_targets_says_what_is_missing() {
    let d = Tmp::new("no-targets");
    for (text, needle) in [
        ("", "the config is empty"),
        ("# to be written\n", "the config is empty"),
        (
            "[state]\nurl = \"sqlite://state.db\"\n",
            "no [[targets]] entry",
        ),
    ] {
        let cfg = write(&d, text);
        for args in [
            &["init"][..],
            &["sweep", "--apply"],
            &["check"],
            &["hold", "list"],
        ] {
            let r = run_raw(&cfg, args);
            refused(&r, &["targets", needle], &format!("{text:?} {args:?}"));
        }
        let r = run_raw(&cfg, &["sweep", "--json"]);
        assert_eq!(r.code, Some(2));
        assert_eq!(r.json()["problems"][0]["key"], "targets");
        assert_eq!(
            listing(&d.0),
            BTreeSet::from(["lethe.toml".to_string()]),
            "no state was made"
        );
    }
}

/// Issue 15, part 1 (`range`): a window outside its category's approved range refuses every
/// command, naming the key and its line; nothing is touched.
#[test]
fn a_window_outside_the_approved_range_refuses_every_command_and_touches_nothing() {
    let d = Tmp::new("range-refused");
    let conn = Connection::open(d.path("app.db")).unwrap();
    conn.execute_batch(
        "CREATE TABLE prompts (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL);
         INSERT INTO prompts VALUES (1, '2000-01-01T00:00:00Z'), (2, '2000-01-02T00:00:00Z');",
    )
    .unwrap();
    let cfg = d.path("lethe.toml");
    std::fs::write(
        &cfg,
        "[state]\nurl = \"sqlite://state.db\"\n\n[categories.prompts]\nretention = \"30d\"\nrange = [\"7d\", \"30d\"]\n\n[[targets]]\nname = \"prompts\"\ntype = \"sql\"\nurl = \"sqlite://app.db\"\ntable = \"prompts\"\ncategory = \"prompts\"\nkey = \"id\"\ncreated_at = \"created_at\"\nretention = \"3d\"\n",
    )
    .unwrap();
    let before = listing(&d.0);
    for args in [
        vec!["init"],
        vec!["check"],
        vec!["sweep", "--apply", "--no-progress"],
        vec!["report"],
    ] {
        let r = run_raw(&cfg, &args);
        assert_eq!(r.code, Some(2), "{args:?}: {}{}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains("line 16") && r.stderr.contains("targets.prompts.retention"),
            "{args:?}: {}",
            r.stderr
        );
    }
    assert_eq!(listing(&d.0), before, "nothing was created");
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM prompts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
}

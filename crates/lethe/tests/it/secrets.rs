//! Passwords written in PostgreSQL URLs (in the user part, an `@` in them or not, or as a
//! `password=` parameter in any case), for a target or for the state, never reach stdout or
//! stderr, whatever fails (nothing listening, a wrong password, the driver refusing the URL),
//! while the message still names the host, the database and the user.

use std::path::{Path, PathBuf};

use crate::pg::{PgCluster, config, lethe_pg};
use crate::*;

/// The commands run against each config, as a person and as a script would.
const COMMANDS: [&[&str]; 4] = [
    &["check"],
    &["check", "--json"],
    &["sweep", "--json"],
    &["erase", "--subject", "x", "--json"],
];

/// Runs every command of [`COMMANDS`] on `cfg`: none may show any of `secrets`; each that
/// fails must name `names`. Returns the exit codes.
fn never_shown(cfg: &Path, secrets: &[&str], names: &[&str]) -> Vec<Option<i32>> {
    let mut codes = Vec::new();
    for args in COMMANDS {
        let r = lethe_pg(cfg, args);
        let all = format!("{}{}", r.stdout, r.stderr);
        for s in secrets {
            assert!(!all.contains(s), "{args:?} shows {s:?}: {all}");
        }
        if r.code != Some(0) {
            for n in names {
                assert!(all.contains(n), "{args:?} does not name {n:?}: {all}");
            }
        }
        codes.push(r.code);
    }
    codes
}

/// A config with a SQLite target (`ai.db`, seeded) and the state at `state_url`.
fn sqlite_target_config(dir: &Tmp, state_url: &str) -> PathBuf {
    seed_training(dir, 4);
    let cfg = training_config(dir);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "url = \"sqlite://state/lethe-state.db\"",
        &format!("url = \"{state_url}\""),
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

#[test]
fn url_passwords_never_show_when_nothing_listens() {
    let dir = Tmp::new("secrets-dead");
    let port = free_port();
    let state = format!("sqlite://{}/state.db", dir.0.display());
    let host = format!("127.0.0.1:{port}");
    for url in [
        format!("postgres://alice@{host}/appdb?application_name=x&password=SECRETqp1"),
        format!("postgres://alice@{host}/appdb?PassWord=SECRETqp1"),
        format!("postgres://alice:p@SECRETat2@{host}/appdb"),
        format!("postgresql://alice:p%40SECRETat2@{host}/appdb?password=SECRETqp1"),
    ] {
        let cfg = config(&dir.0, &url, &state, "logs", "created_at", "");
        let codes = never_shown(&cfg, &["SECRET"], &[&host, "appdb", "alice"]);
        // A target that cannot be reached is bad config: exit 2, nothing touched.
        assert_eq!(codes, vec![Some(2); 4], "{url}");
    }
    // The state's URL, likewise.
    for state_url in [
        format!("postgres://bob:p@SECRETst3@{host}/statedb"),
        format!("postgres://bob@{host}/statedb?password=SECRETst3"),
    ] {
        let own = Tmp::new("secrets-state");
        let cfg = sqlite_target_config(&own, &state_url);
        let codes = never_shown(&cfg, &["SECRET"], &[&host, "statedb", "bob"]);
        assert_ne!(
            codes[2],
            Some(0),
            "{state_url}: the sweep cannot reach its state"
        );
    }
}

#[test]
fn url_passwords_never_show_on_a_wrong_password_and_work_when_right() {
    // The right password holds an `@`, as a password may.
    let right = "right@Pa55";
    let pg = PgCluster::start_with(Some(right));
    let mut admin = pg.socket_client("postgres");
    admin.batch_execute("CREATE DATABASE app").unwrap();
    admin.batch_execute("CREATE DATABASE lethe_state").unwrap();
    pg.socket_client("app")
        .batch_execute(
            "CREATE TABLE logs (id bigint PRIMARY KEY, user_id text, created_at timestamptz);
             INSERT INTO logs VALUES (1, 'x', now() - interval '40 days'), (2, 'x', now());",
        )
        .unwrap();
    let host = format!("127.0.0.1:{}", pg.port());
    let state = format!("sqlite://{}/state.db", pg.dir().display());
    let base = |user_part: &str, db: &str, query: &str| {
        format!("postgres://{user_part}{host}/{db}{query}")
    };
    // Wrong passwords, each with the secret text in it: the server's own refusal is reported.
    let refused = "password authentication failed";
    for (url, why) in [
        (base("postgres:p@SECRETat1@", "app", ""), refused),
        (base("postgres:p%40SECRETat1@", "app", ""), refused),
        (base("postgres@", "app", "?password=SECRETqp2"), refused),
        // The driver knows `password` only: the parameter is named, its value never.
        (
            base("postgres@", "app", "?application_name=a&PASSWORD=SECRETqp2"),
            "unknown option `PASSWORD`",
        ),
        (
            base("postgres@", "app", "?password=SECRETqp3&keepalives=often"),
            "keepalives",
        ),
    ] {
        let cfg = config(pg.dir(), &url, &state, "logs", "created_at", "");
        let codes = never_shown(&cfg, &["SECRET"], &[&host, "app", "postgres", why]);
        assert_eq!(codes, vec![Some(2); 4], "{url}");
    }
    // A wrong password for the state, the target's right: the sweep fails on the state.
    let cfg = config(
        pg.dir(),
        &base("postgres:right%40Pa55@", "app", ""),
        &base("postgres@", "lethe_state", "?password=SECRETst4"),
        "logs",
        "created_at",
        "",
    );
    let codes = never_shown(&cfg, &["SECRET"], &[&host, "lethe_state", "postgres"]);
    assert_ne!(codes[2], Some(0));
    // The right password, written each way, connects; and is never shown either.
    for url in [
        base("postgres:right@Pa55@", "app", ""),
        base("postgres:right%40Pa55@", "app", ""),
        base("postgres@", "app", "?password=right%40Pa55"),
    ] {
        let state_url = url.replace("/app", "/lethe_state");
        let cfg = config(pg.dir(), &url, &state_url, "logs", "created_at", "");
        let codes = never_shown(&cfg, &[right, "right%40Pa55"], &[]);
        assert_eq!(codes, vec![Some(0); 4], "{url}");
    }
    let r = lethe_pg(
        &config(
            pg.dir(),
            &base("postgres:right@Pa55@", "app", ""),
            &state,
            "logs",
            "created_at",
            "",
        ),
        &["sweep", "--apply", "--json"],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(r.json()["targets"][0]["deleted"], 1);
}

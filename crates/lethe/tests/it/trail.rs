//! The trail as evidence: a forged trail is never sealed over, reading commands create
//! nothing, and the tables kept beside the trail are checked against it. On SQLite and
//! PostgreSQL states.

use std::path::{Path, PathBuf};

use lethe_core::audit::{Action, Body, Entry, entry_hash};

use crate::pg::PgCluster;
use crate::*;

/// A state's database, opened directly as an intruder would.
pub enum StateDb {
    Lite(rusqlite::Connection),
    Pg(postgres::Client),
}

const COLS: &str = "seq, decided_at, run_id, action, target, item_key, category, reason, policy_window, expires_at, subject_hash, detail, prev_hash, hash";

impl StateDb {
    pub fn open(state: &State) -> StateDb {
        match state {
            State::Lite(p) => StateDb::Lite(rusqlite::Connection::open(p).unwrap()),
            State::Pg(url) => StateDb::Pg(postgres::Client::connect(url, postgres::NoTls).unwrap()),
        }
    }

    pub fn exec(&mut self, sql: &str) {
        match self {
            StateDb::Lite(c) => c.execute_batch(sql).unwrap(),
            StateDb::Pg(c) => c.batch_execute(sql).unwrap(),
        }
    }

    pub fn count(&mut self, sql: &str) -> i64 {
        match self {
            StateDb::Lite(c) => c.query_row(sql, [], |r| r.get(0)).unwrap(),
            StateDb::Pg(c) => c.query_one(sql, &[]).unwrap().get(0),
        }
    }

    pub fn entries(&mut self) -> Vec<Entry> {
        let sql = format!("SELECT {COLS} FROM audit ORDER BY seq");
        let texts: Vec<(i64, Vec<Option<String>>)> = match self {
            StateDb::Lite(c) => {
                let mut st = c.prepare(&sql).unwrap();
                st.query_map([], |r| {
                    let mut v = Vec::new();
                    for i in 1..14 {
                        v.push(r.get::<_, Option<String>>(i)?);
                    }
                    Ok((r.get::<_, i64>(0)?, v))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
            }
            StateDb::Pg(c) => c
                .query(&sql, &[])
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r.get::<_, i64>(0),
                        (1..14).map(|i| r.get::<_, Option<String>>(i)).collect(),
                    )
                })
                .collect(),
        };
        texts
            .into_iter()
            .map(|(seq, v)| {
                let t = |i: usize| v[i].clone().unwrap_or_default();
                Entry {
                    seq,
                    body: Body {
                        decided_at: t(0),
                        run_id: t(1),
                        action: Action::parse(&t(2)).unwrap(),
                        target: t(3),
                        item_key: t(4),
                        category: t(5),
                        reason: t(6),
                        window: t(7),
                        expires_at: v[8].clone(),
                        subject_hash: v[9].clone(),
                        detail: t(10),
                    },
                    prev_hash: t(11),
                    hash: t(12),
                }
            })
            .collect()
    }

    /// Replaces the whole trail with `entries`, as stored (no hash is made here).
    pub fn write(&mut self, entries: &[Entry]) {
        let ins = format!(
            "INSERT INTO audit ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        );
        match self {
            StateDb::Lite(c) => {
                let tx = c.transaction().unwrap();
                tx.execute("DELETE FROM audit", []).unwrap();
                for e in entries {
                    let b = &e.body;
                    tx.execute(
                        &ins.replace('$', "?"),
                        rusqlite::params![
                            e.seq,
                            b.decided_at,
                            b.run_id,
                            b.action.as_str(),
                            b.target,
                            b.item_key,
                            b.category,
                            b.reason,
                            b.window,
                            b.expires_at,
                            b.subject_hash,
                            b.detail,
                            e.prev_hash,
                            e.hash
                        ],
                    )
                    .unwrap();
                }
                tx.commit().unwrap();
            }
            StateDb::Pg(c) => {
                let mut tx = c.transaction().unwrap();
                tx.execute("DELETE FROM audit", &[]).unwrap();
                for e in entries {
                    let b = &e.body;
                    tx.execute(
                        &ins,
                        &[
                            &e.seq,
                            &b.decided_at,
                            &b.run_id,
                            &b.action.as_str(),
                            &b.target,
                            &b.item_key,
                            &b.category,
                            &b.reason,
                            &b.window,
                            &b.expires_at,
                            &b.subject_hash,
                            &b.detail,
                            &e.prev_hash,
                            &e.hash,
                        ],
                    )
                    .unwrap();
                }
                tx.commit().unwrap();
            }
        }
    }
}

/// Renumbers and rehashes a trail from the genesis, as anyone can without the key.
fn recompute(entries: &mut [Entry]) {
    let mut prev = lethe_core::audit::GENESIS.to_string();
    for (i, e) in entries.iter_mut().enumerate() {
        e.seq = i as i64 + 1;
        e.prev_hash = prev.clone();
        e.hash = entry_hash(&prev, e.seq, &e.body);
        prev = e.hash.clone();
    }
}

pub enum State {
    Lite(PathBuf),
    Pg(String),
}

/// A SQLite target of 12 training rows, a hold on row 2, one applied sweep and one dry run:
/// a trail with a hold entry, deletions and run entries.
fn setup(d: &Tmp, state: &State) -> PathBuf {
    drop(seed_training(d, 12));
    let cfg = training_config(d);
    if let State::Pg(url) = state {
        let text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("sqlite://state/lethe-state.db", url);
        std::fs::write(&cfg, text).unwrap();
    }
    let r = run(
        &cfg,
        &[
            "hold",
            "add",
            "--target",
            "training_records",
            "--key",
            "2",
            "--case",
            "C-1",
            "--reason",
            "litigation",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let r = run(&cfg, &["sweep", "--apply"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let r = run(&cfg, &["sweep"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    cfg
}

fn verify(cfg: &Path) -> (Option<i32>, serde_json::Value) {
    let r = run(cfg, &["audit", "verify", "--json"]);
    (r.code, r.json())
}

type Tamper = fn(&mut Vec<Entry>);

/// Every way of changing the trail: (name, change, whether the chain is then recomputed).
fn tampers() -> Vec<(&'static str, Tamper, bool)> {
    fn middle(es: &[Entry]) -> usize {
        es.len() / 2
    }
    let change: Tamper = |es| {
        let m = middle(es);
        es[m].body.item_key = "forged".into();
    };
    let remove: Tamper = |es| {
        let m = middle(es);
        es.remove(m);
    };
    let insert: Tamper = |es| {
        let m = middle(es);
        let mut forged = es[m].clone();
        forged.body.item_key = "inserted".into();
        es.insert(m, forged);
        for (i, e) in es.iter_mut().enumerate() {
            e.seq = i as i64 + 1;
        }
    };
    let reorder: Tamper = |es| {
        let m = middle(es);
        let (a, b) = (es[m].body.clone(), es[m + 1].body.clone());
        es[m].body = b;
        es[m + 1].body = a;
    };
    let cut: Tamper = |es| {
        es.pop();
    };
    let mut out = Vec::new();
    for (name, t) in [
        ("changed", change),
        ("removed", remove),
        ("inserted", insert),
        ("reordered", reorder),
        ("cut", cut),
    ] {
        out.push((name, t, false));
        out.push((name, t, true));
    }
    out
}

fn forged_trails_are_caught_and_never_sealed_over(state_for: impl Fn(usize, &Tmp) -> State) {
    for (i, (name, tamper, rechain)) in tampers().into_iter().enumerate() {
        let d = Tmp::new(&format!("forge-{i}"));
        let state = state_for(i, &d);
        let cfg = setup(&d, &state);
        let mut db = StateDb::open(&state);
        let mut es = db.entries();
        tamper(&mut es);
        if rechain {
            recompute(&mut es);
        }
        db.write(&es);
        let what = format!("{name}, chain recomputed: {rechain}");
        let (code, v) = verify(&cfg);
        assert_eq!(code, Some(1), "{what}: {v}");
        assert_eq!(v["ok"], false, "{what}");
        // A writing command: refused where the head is not the sealed head; either way the
        // forgery stays visible to verify afterwards.
        let head_moved = rechain || name == "cut";
        for args in [
            &["sweep"][..],
            &[
                "hold",
                "add",
                "--subject",
                "user-3",
                "--case",
                "C-2",
                "--reason",
                "r",
            ][..],
        ] {
            let before = db.count("SELECT COUNT(*) FROM audit");
            let r = run(&cfg, args);
            if head_moved {
                assert_eq!(
                    r.code,
                    Some(1),
                    "{what}: {args:?}: {}{}",
                    r.stdout,
                    r.stderr
                );
                assert!(
                    r.stderr.contains("audit trail is broken"),
                    "{what}: {}",
                    r.stderr
                );
                assert_eq!(
                    db.count("SELECT COUNT(*) FROM audit"),
                    before,
                    "{what}: nothing written"
                );
            }
            let (code, v) = verify(&cfg);
            assert_eq!(code, Some(1), "{what}, after {args:?}: {v}");
        }
        if name == "changed" && rechain {
            let (_, v) = verify(&cfg);
            let p = v["problems"].to_string();
            assert!(p.contains("rewritten"), "{p}");
            assert!(!p.contains("removed from the end"), "{p}");
        }
    }
}

#[test]
fn forged_sqlite_trails_are_caught_and_never_sealed_over() {
    forged_trails_are_caught_and_never_sealed_over(|_, d| {
        State::Lite(d.path("state/lethe-state.db"))
    });
}

#[test]
fn forged_postgres_trails_are_caught_and_never_sealed_over() {
    let pg = PgCluster::start();
    forged_trails_are_caught_and_never_sealed_over(|i, _| {
        let name = format!("state_{i}");
        pg.create_db(&name);
        State::Pg(pg.url(&name))
    });
}

#[test]
fn reading_commands_create_nothing_and_only_init_makes_a_state() {
    let d = Tmp::new("noinit");
    drop(seed_training(&d, 4));
    let cfg = training_config(&d);
    let state_dir = d.path("state");
    for args in [
        &["audit", "verify"][..],
        &["audit", "log", "--target", "training_records"][..],
        &["audit", "export"][..],
        &["hold", "list"][..],
        &["exception", "list"][..],
        &["erase", "list"][..],
        // writing commands refuse too: a typo in [state] url never starts an empty state
        &["sweep"][..],
        &["sweep", "--apply"][..],
        &[
            "hold",
            "add",
            "--subject",
            "u",
            "--case",
            "c",
            "--reason",
            "r",
        ][..],
    ] {
        let r = run_raw(&cfg, args);
        assert_eq!(r.code, Some(2), "{args:?}: {}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("lethe init"), "{args:?}: {}", r.stderr);
        assert!(
            !state_dir.exists(),
            "{args:?} created {}",
            state_dir.display()
        );
    }
    assert_eq!(
        ids(
            &rusqlite::Connection::open(d.path("ai.db")).unwrap(),
            "training_records"
        )
        .len(),
        4
    );

    let r = run_raw(&cfg, &["init"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(d.path("state/lethe-state.db").is_file());
    let key = d.path("state/lethe-state.db.key");
    let key_text = std::fs::read_to_string(&key).unwrap();
    let r = run_raw(&cfg, &["init"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("already exists"), "{}", r.stdout);
    assert_eq!(std::fs::read_to_string(&key).unwrap(), key_text);
    let (code, v) = verify(&cfg);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["entries"], 1, "the creation entry");

    // the key removed: refused, never made again (even by init, the trail has entries)
    std::fs::remove_file(&key).unwrap();
    for args in [&["audit", "verify"][..], &["sweep"][..], &["init"][..]] {
        let r = run_raw(&cfg, args);
        assert_eq!(r.code, Some(2), "{args:?}: {}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("missing"), "{}", r.stderr);
        assert!(!key.exists(), "{args:?} made a new key");
    }
    // another key in its place: the seal says so
    std::fs::write(
        &key,
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
    )
    .unwrap();
    let (code, v) = verify(&cfg);
    assert_eq!(code, Some(1));
    assert!(
        v["problems"].to_string().contains("key was replaced"),
        "{v}"
    );
    let r = run_raw(&cfg, &["sweep"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    std::fs::write(&key, &key_text).unwrap();
    let (code, _) = verify(&cfg);
    assert_eq!(code, Some(0));

    // an emptied trail does not verify, with or without its seal
    let mut db = StateDb::open(&State::Lite(d.path("state/lethe-state.db")));
    db.exec("DELETE FROM audit");
    let (code, v) = verify(&cfg);
    assert_eq!(code, Some(1), "{v}");
    db.exec("DELETE FROM audit_seal");
    let (code, v) = verify(&cfg);
    assert_eq!(code, Some(1), "{v}");
    assert!(v["problems"].to_string().contains("empty"), "{v}");
    let r = run_raw(&cfg, &["sweep"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
}

/// The holds table and the subject index edited behind Lethe's back: a sweep refuses to
/// delete on them, verify names them, and a repair puts them back as the trail says.
fn derived_tables_are_checked(state: impl Fn(&Tmp) -> State) {
    let d = Tmp::new("derived");
    let st = state(&d);
    let cfg = setup(&d, &st);
    let conn = rusqlite::Connection::open(d.path("ai.db")).unwrap();
    assert!(ids(&conn, "training_records").contains(&2), "held row kept");
    let mut db = StateDb::open(&st);
    db.exec("UPDATE holds SET released_at = '2026-01-01T00:00:00Z', released_by = 'x', release_reason = 'y'");
    let r = run(&cfg, &["sweep", "--apply"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains("holds or exceptions kept beside the trail disagree"),
        "{all}"
    );
    assert!(
        ids(&conn, "training_records").contains(&2),
        "a hold released in the table only protects still"
    );
    let (code, v) = verify(&cfg);
    assert_eq!(code, Some(1));
    assert!(v["problems"].to_string().contains("hold"), "{v}");

    db.exec("DELETE FROM audit_subjects");
    let (code, v) = verify(&cfg);
    assert_eq!(code, Some(1));
    assert!(v["problems"].to_string().contains("subject index"), "{v}");

    let r = run(
        &cfg,
        &[
            "audit",
            "repair",
            "--reason",
            "holds table edited by hand; restored",
        ],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let (code, v) = verify(&cfg);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["repairs"].as_array().map(Vec::len), Some(1), "{v}");
    let r = run(&cfg, &["sweep", "--apply"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(
        ids(&conn, "training_records").contains(&2),
        "the hold holds again"
    );
    let r = run(&cfg, &["audit", "log", "--subject", "user-2"]);
    assert_eq!(r.code, Some(0));
    assert!(
        r.stdout.contains("training_records"),
        "the subject index is back: {}",
        r.stdout
    );
}

#[test]
fn derived_tables_are_checked_on_sqlite() {
    derived_tables_are_checked(|d| State::Lite(d.path("state/lethe-state.db")));
}

#[test]
fn derived_tables_are_checked_on_postgres() {
    let pg = PgCluster::start();
    pg.create_db("state_derived");
    derived_tables_are_checked(|_| State::Pg(pg.url("state_derived")));
}

#[test]
fn a_repair_lets_writing_commands_run_and_keeps_the_break_visible() {
    let d = Tmp::new("repair");
    let st = State::Lite(d.path("state/lethe-state.db"));
    let cfg = setup(&d, &st);
    let mut db = StateDb::open(&st);
    let mut es = db.entries();
    es.pop();
    db.write(&es);
    let r = run(&cfg, &["sweep"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let r = run(
        &cfg,
        &[
            "audit",
            "repair",
            "--reason",
            "tail lost in a restore",
            "--json",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.json()["repaired"], true);
    assert!(
        r.json()["record"]["seal_problem"]
            .to_string()
            .contains("removed from the end"),
        "{}",
        r.stdout
    );
    let r = run(&cfg, &["sweep"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let (code, v) = verify(&cfg);
    assert_eq!(code, Some(0), "{v}");
    assert!(
        v["repairs"].to_string().contains("tail lost in a restore"),
        "{v}"
    );
    // an entry before the repair changed afterwards: broken again
    let mut es = db.entries();
    es[1].body.detail = "changed after the repair".into();
    db.write(&es);
    let (code, v) = verify(&cfg);
    assert_eq!(code, Some(1), "{v}");
    // nothing to repair on an intact trail
    let d2 = Tmp::new("repair-intact");
    let st2 = State::Lite(d2.path("state/lethe-state.db"));
    let cfg2 = setup(&d2, &st2);
    let r = run(&cfg2, &["audit", "repair", "--reason", "x"]);
    assert_eq!(r.code, Some(0));
    assert!(r.stdout.contains("nothing to repair"), "{}", r.stdout);
}

#[test]
fn a_hold_cut_out_of_the_trail_and_its_table_still_protects() {
    for rechain in [false, true] {
        let d = Tmp::new("cut-hold");
        let st = State::Lite(d.path("state/lethe-state.db"));
        let cfg = setup(&d, &st);
        let mut db = StateDb::open(&st);
        let mut es = db.entries();
        es.retain(|e| e.body.action != Action::HoldPlaced);
        if rechain {
            recompute(&mut es);
        }
        db.write(&es);
        db.exec("DELETE FROM holds");
        let r = run(&cfg, &["sweep", "--apply"]);
        assert_eq!(
            r.code,
            Some(1),
            "rechain {rechain}: {}{}",
            r.stdout,
            r.stderr
        );
        let conn = rusqlite::Connection::open(d.path("ai.db")).unwrap();
        assert!(
            ids(&conn, "training_records").contains(&2),
            "rechain {rechain}: the held row was deleted"
        );
    }
}

#[test]
fn state_files_and_exports_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let d = Tmp::new("private");
    let st = State::Lite(d.path("state/lethe-state.db"));
    let cfg = setup(&d, &st);
    let r = run(
        &cfg,
        &[
            "export",
            "--subject",
            "user-3",
            "-o",
            d.path("access.json").to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let r = run(
        &cfg,
        &[
            "audit",
            "export",
            "-o",
            d.path("trail.jsonl").to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let mut checked = 0;
    for name in [
        "state/lethe-state.db",
        "state/lethe-state.db-wal",
        "state/lethe-state.db-shm",
        "state/lethe-state.db.pending",
        "state/lethe-state.db.key",
        "state/lethe-state.db.head",
        "state/lethe-state.db.protections-lock",
        "access.json",
        "trail.jsonl",
    ] {
        let p = d.path(name);
        if !p.exists() {
            assert!(
                name.ends_with("-wal") || name.ends_with("-shm"),
                "{name} missing"
            );
            continue;
        }
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name} is {mode:o}");
        checked += 1;
    }
    assert!(checked >= 6);
}

#[test]
fn a_replaced_or_missing_key_is_caught_on_a_postgres_state() {
    let pg = PgCluster::start();
    pg.create_db("state_key");
    let d = Tmp::new("pg-key");
    let st = State::Pg(pg.url("state_key"));
    let cfg = setup(&d, &st);
    // With a PostgreSQL state the key comes from a file beside the config, or key_env.
    let key = d.path("lethe-state.key");
    let good = std::fs::read_to_string(&key).unwrap();
    let (code, v) = verify(&cfg);
    assert_eq!(code, Some(0), "{v}");
    std::fs::write(
        &key,
        "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100",
    )
    .unwrap();
    let (code, v) = verify(&cfg);
    assert_eq!(code, Some(1), "{v}");
    assert!(
        v["problems"].to_string().contains("key was replaced"),
        "{v}"
    );
    let r = run(&cfg, &["sweep"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    std::fs::remove_file(&key).unwrap();
    let r = run_raw(&cfg, &["audit", "verify"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("missing"), "{}", r.stderr);
    assert!(!key.exists(), "never made again");
    std::fs::write(&key, good).unwrap();
    let (code, v) = verify(&cfg);
    assert_eq!(code, Some(0), "{v}");
}

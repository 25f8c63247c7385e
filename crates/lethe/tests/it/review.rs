//! Adversarial review of the trail, the seal, repair and init (issue 10): each test is a
//! finding, written as the behaviour that should hold; they FAIL on the code reviewed.
//! The intruder has write access to the state database, never to the audit key file.

use std::path::{Path, PathBuf};

use lethe_core::audit::{Action, Entry, entry_hash};

use crate::trail::{State, StateDb};
use rusqlite::Connection;

use crate::*;

/// The SQLite state opened directly, as an intruder would.
fn open_state(d: &Tmp) -> StateDb {
    StateDb::open(&State::Lite(d.path("state/lethe-state.db")))
}

/// Re-hashes the chain from entry index `from` on, keeping seqs (anyone can, without the key).
fn rechain_from(es: &mut [Entry], from: usize) {
    for i in from..es.len() {
        let prev = if i == 0 {
            lethe_core::audit::GENESIS.to_string()
        } else {
            es[i - 1].hash.clone()
        };
        es[i].prev_hash = prev.clone();
        es[i].hash = entry_hash(&prev, es[i].seq, &es[i].body);
    }
}

fn hold_item(cfg: &Path, key: &str) {
    let r = run(
        cfg,
        &[
            "hold",
            "add",
            "--target",
            "training_records",
            "--key",
            key,
            "--case",
            "C-1",
            "--reason",
            "litigation",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
}

fn verify(cfg: &Path) -> (Option<i32>, serde_json::Value) {
    let r = run(cfg, &["audit", "verify", "--json"]);
    (r.code, r.json())
}

fn rows(d: &Tmp) -> Vec<i64> {
    ids(
        &Connection::open(d.path("ai.db")).unwrap(),
        "training_records",
    )
}

/// 12 training rows, a hold on row 2, one applied sweep, one dry run.
fn setup(d: &Tmp) -> PathBuf {
    drop(seed_training(d, 12));
    let cfg = training_config(d);
    hold_item(&cfg, "2");
    let r = run(&cfg, &["sweep", "--apply"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let r = run(&cfg, &["sweep"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(rows(d).contains(&2));
    cfg
}

/// Finding: `exceptions.until_micros` is what the decision uses (status "active" and the
/// exception's `until`), but only the text column `until` is compared with the trail.
/// An intruder sets `until_micros` to 0: verify still passes and the sweep deletes the
/// excepted item. (Wrong deletion.)
#[test]
fn review_exception_until_micros_edit_deletes_the_excepted_item() {
    let d = Tmp::new("rv-until");
    let conn = seed_training(&d, 12);
    // row 100: expired a day ago
    conn.execute(
        "INSERT INTO training_records VALUES (100, 'ds', 'user-9', '', ?1, 30)",
        [naive(31 * DAY)],
    )
    .unwrap();
    drop(conn);
    let cfg = training_config(&d);
    let until = lethe_core::time::Timestamp::from_unix_seconds(now_secs() + 10 * DAY)
        .unwrap()
        .to_rfc3339();
    let r = run(
        &cfg,
        &[
            "exception",
            "add",
            "--target",
            "training_records",
            "--key",
            "100",
            "--until",
            &until,
            "--owner",
            "ml",
            "--reason",
            "audit",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let mut db = open_state(&d);
    db.exec("UPDATE exceptions SET until_micros = 0");
    let r = run(&cfg, &["sweep", "--apply"]);
    assert!(
        rows(&d).contains(&100),
        "the excepted row was deleted after until_micros was edited: {}{}",
        r.stdout,
        r.stderr
    );
    let (code, v) = verify(&cfg);
    assert_eq!(code, Some(1), "verify misses the edited exception: {v}");
}

/// Finding: a seal row copied at some earlier moment (the intruder can read the state) still
/// verifies after the trail is cut back to that moment: everything after it (here a hold) is
/// gone without a trace, and the sweep deletes the held item. The seal binds no counter kept
/// outside the database. (Wrong deletion; rewritable evidence.)
#[test]
fn review_rollback_to_an_old_seal_hides_a_later_hold() {
    let d = Tmp::new("rv-rollback");
    drop(seed_training(&d, 12));
    let cfg = training_config(&d);
    let r = run(&cfg, &["sweep"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let mut db = open_state(&d);
    let n = db.count("SELECT MAX(seq) FROM audit");
    let (seq, hash, mac, prot, fp): (i64, String, String, Option<String>, String) =
        Connection::open(d.path("state/lethe-state.db"))
            .unwrap()
            .query_row(
                "SELECT seq, hash, mac, protections, key_fingerprint FROM audit_seal",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
    hold_item(&cfg, "2");
    // the intruder rolls the state back to the copy
    db.exec(&format!(
        "DELETE FROM audit WHERE seq > {n}; DELETE FROM holds;"
    ));
    Connection::open(d.path("state/lethe-state.db"))
        .unwrap()
        .execute(
        "UPDATE audit_seal SET seq = ?1, hash = ?2, mac = ?3, protections = ?4, key_fingerprint = ?5",
        rusqlite::params![seq, hash, mac, prot, fp],
    )
    .unwrap();
    let (code, v) = verify(&cfg);
    let r = run(&cfg, &["sweep", "--apply"]);
    assert!(
        rows(&d).contains(&2),
        "the held row was deleted after a rollback (verify said {code:?} {v}): {}{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(code, Some(1), "a rolled-back trail verifies: {v}");
}

/// Finding: a repair trusts the trail as found over the holds table. An intruder appends a
/// forged hold_released entry (chain recomputed; only the seal disagrees); the operator does
/// what the error says (`audit repair`); the repair releases the legitimate hold as the
/// forged entry says, and the next sweep deletes the held item. (Wrong deletion.)
#[test]
fn review_repair_honours_a_forged_hold_release() {
    let d = Tmp::new("rv-repair-forged");
    let cfg = setup(&d);
    let mut db = open_state(&d);
    let mut es = db.entries();
    let placed = es
        .iter()
        .find(|e| e.body.action == Action::HoldPlaced)
        .unwrap()
        .clone();
    let mut rel = placed.clone();
    rel.seq = es.last().unwrap().seq + 1;
    rel.body.action = Action::HoldReleased;
    rel.body.detail = format!("hold {} released by x: forged", placed.body.run_id);
    es.push(rel);
    let n = es.len();
    rechain_from(&mut es, n - 1);
    db.write(&es);
    let r = run(&cfg, &["sweep", "--apply"]);
    assert_eq!(r.code, Some(1), "refused before the repair: {}", r.stderr);
    let r = run(&cfg, &["audit", "repair", "--reason", "found broken"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let r = run(&cfg, &["sweep", "--apply"]);
    assert!(
        rows(&d).contains(&2),
        "the repair released a legitimate hold on a forged entry and the held row was deleted: {}{}",
        r.stdout,
        r.stderr
    );
}

/// Finding: the hold_placed entry cut out of the trail (the holds table untouched). The
/// repair marks the legitimate hold released ("never recorded in the trail") yet leaves its
/// row, so the table still disagrees with the trail: every sweep is refused, and every
/// further repair changes nothing. (Other: a legitimate hold shown released; deletions
/// stopped for good.)
#[test]
fn review_repair_of_a_cut_hold_entry_releases_it_and_never_recovers() {
    let d = Tmp::new("rv-repair-cut");
    let cfg = setup(&d);
    let mut db = open_state(&d);
    let mut es = db.entries();
    es.retain(|e| e.body.action != Action::HoldPlaced);
    db.write(&es);
    for _ in 0..2 {
        let r = run(&cfg, &["audit", "repair", "--reason", "found broken"]);
        assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    }
    let holds = run(&cfg, &["hold", "list", "--json"]).json();
    let r = run(&cfg, &["sweep", "--apply"]);
    assert!(rows(&d).contains(&2));
    assert!(
        holds[0]["released_at"].is_null(),
        "the repair released the legitimate hold: {holds}"
    );
    assert_eq!(
        r.code,
        Some(0),
        "sweeps stay refused after two repairs: {}",
        r.stderr
    );
}

/// Finding: a repair's digest covers each entry's seq and *stored* hash, not its contents.
/// An entry that was already altered (or whose link was broken) when the repair was made can
/// be rewritten at will afterwards: verify still passes. (Rewritable evidence.)
#[test]
fn review_an_entry_broken_before_a_repair_can_be_rewritten_after_it() {
    for link in [true, false] {
        let d = Tmp::new("rv-after-repair");
        let cfg = setup(&d);
        let mut db = open_state(&d);
        let mut es = db.entries();
        let i = es
            .iter()
            .position(|e| e.body.action == Action::Deleted)
            .unwrap();
        if link {
            es[i].prev_hash = "f".repeat(64);
        } else {
            es[i].body.detail = "first edit".into();
        }
        db.write(&es);
        let r = run(&cfg, &["audit", "repair", "--reason", "found broken"]);
        assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
        let (code, v) = verify(&cfg);
        assert_eq!(code, Some(0), "{v}");
        // after the repair: the same entry rewritten again, now saying another item
        let mut es = db.entries();
        es[i].body.item_key = "999999".into();
        es[i].body.detail = "rewritten after the repair".into();
        db.write(&es);
        let (code, v) = verify(&cfg);
        assert_eq!(
            code,
            Some(1),
            "link {link}: an entry rewritten after the repair verifies: {v}"
        );
    }
}

/// Finding: a hold entry altered in place (hash not recomputed) is acknowledged by a repair,
/// which reports success; but every later sweep is refused (the last look re-hashes each
/// protection entry) and a second repair says there is nothing to repair: the state can
/// never sweep again. The repair also re-points the hold to whatever the altered entry
/// says. (Other: permanent stop of deletions, silent failure to delete.)
#[test]
fn review_a_repaired_altered_hold_entry_blocks_sweeps_for_good() {
    let d = Tmp::new("rv-stuck");
    let cfg = setup(&d);
    let mut db = open_state(&d);
    let mut es = db.entries();
    let i = es
        .iter()
        .position(|e| e.body.action == Action::HoldPlaced)
        .unwrap();
    es[i].body.item_key = "3".into();
    db.write(&es);
    let r = run(&cfg, &["audit", "repair", "--reason", "found broken"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let r = run(&cfg, &["sweep", "--apply"]);
    let r2 = run(&cfg, &["audit", "repair", "--reason", "again"]);
    assert_eq!(
        r.code,
        Some(0),
        "after a successful repair the sweep is still refused ({}{}), and a second repair says: {}",
        r.stdout.trim(),
        r.stderr.trim(),
        r2.stdout.trim()
    );
}

/// Finding: the intruder empties `audit` and `audit_seal` (and the holds and subject index);
/// a careless operator runs `lethe init`, which finds an empty trail beside an existing key,
/// runs and leftovers, says "created", and starts a fresh trail that verifies: the history is
/// gone without a trace and the hold with it. (Rewritable evidence; wrong deletion.)
#[test]
fn review_init_on_a_wiped_state_starts_a_clean_trail() {
    let d = Tmp::new("rv-wiped");
    let cfg = setup(&d);
    let mut db = open_state(&d);
    db.exec(
        "DELETE FROM audit; DELETE FROM audit_seal; DELETE FROM holds; DELETE FROM audit_subjects;",
    );
    let r = run_raw(&cfg, &["init", "--json"]);
    let init_code = r.code;
    let (code, v) = verify(&cfg);
    assert!(
        init_code != Some(0) || code == Some(1),
        "init re-created a wiped trail ({}) and verify passes: {v}",
        r.stdout.trim()
    );
}

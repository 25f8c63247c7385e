//! Signed erasure receipts: one verifies with the deployment's public key alone, and any
//! change to it (any byte, a re-chained segment, another key) fails; the trail's head is
//! signed and verify checks it; the signing key file must be private.

use lethe_core::audit::{self, Entry};
use lethe_core::receipt::Receipt;

use crate::*;

/// A training state with user-3's data erased (one of its items under hold): the config,
/// the request id and the deployment's public key.
fn erased(d: &Tmp) -> (PathBuf, String, String) {
    let conn = seed_training(d, 40);
    let cfg = training_config(d);
    // Item 10 is user-3's (10 % 7 == 3): withheld under hold.
    let r = run(
        &cfg,
        &[
            "hold",
            "add",
            "--target",
            "training_records",
            "--key",
            "10",
            "--case",
            "C-1",
            "--reason",
            "litigation",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    // A sweep's entries come before the request's in the trail.
    let r = run(&cfg, &["sweep", "--apply", "--no-progress"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let r = run(&cfg, &["erase", "--subject", "user-3", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(j["status"], "completed_with_items_withheld");
    assert!(ids(&conn, "training_records").contains(&10));
    let id = j["request_id"].as_str().unwrap().to_string();
    let r = run(&cfg, &["audit", "public-key"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let pk = r.stdout.trim().to_string();
    assert_eq!(pk.len(), 64, "{pk}");
    (cfg, id, pk)
}

fn verify_file(file: &Path, key: Option<&str>) -> Run {
    let mut c = lethe();
    c.args(["receipt", "verify"]).arg(file);
    if let Some(k) = key {
        c.args(["--public-key", k]);
    }
    let out = c.output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Whether a receipt's text passes as the CLI checks it (same function).
fn passes(text: &str, pk: &str) -> bool {
    matches!(Receipt::check_text(text, Some(pk)), Ok((_, Ok(_))))
}

#[test]
fn a_receipt_verifies_with_the_public_key_alone_and_any_change_fails() {
    let d = Tmp::new("receipt");
    let (cfg, id, pk) = erased(&d);
    let file = d.path("receipt.json");
    let r = run(
        &cfg,
        &[
            "erase",
            "status",
            &id,
            "--receipt",
            "-o",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let text = std::fs::read_to_string(&file).unwrap();

    // What it says, checked against the request and the trail independently.
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(j["request"]["id"], id.as_str());
    assert_eq!(j["request"]["status"], "completed_with_items_withheld");
    assert_eq!(j["head"]["public_key"], pk.as_str());
    let user3: Vec<i64> = (1..=40).filter(|i| i % 7 == 3).collect();
    let t = &j["targets"][0];
    assert_eq!(t["target"], "training_records");
    assert_eq!(
        t["deleted"],
        user3.iter().filter(|i| *i % 2 == 1).count() as u64
    );
    assert_eq!(t["withheld"]["held"], 1);
    // The sweep before took user-3's expired items (even ids) but the held one; the
    // erasure took the rest.
    let mut deleted: Vec<String> = user3
        .iter()
        .filter(|i| *i % 2 == 1)
        .map(|i| i.to_string())
        .collect();
    deleted.sort();
    let joined: String = deleted
        .iter()
        .map(|k| format!("{}:{k}\n", k.len()))
        .collect();
    assert_eq!(
        t["deleted_keys_sha256"],
        audit::sha256_hex(joined.as_bytes())
    );
    assert_eq!(t["withheld_keys_sha256"], audit::sha256_hex(b"2:10\n"));
    // The segment starts at the request's first entry and is the trail's, entry for entry.
    let seg: Vec<Entry> = serde_json::from_value(j["segment"].clone()).unwrap();
    assert_eq!(seg[0].body.run_id, id);
    let trail: Vec<Entry> = export(&cfg)
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    for e in &seg {
        assert!(trail.contains(e), "entry {} is not the trail's", e.seq);
    }
    // No subject in the clear anywhere in it.
    assert!(!text.contains("user-3"));

    // With the public key alone (no config, no state).
    let r = verify_file(&file, Some(&pk));
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("the one given"), "{}", r.stdout);
    let pk_file = d.path("pk.txt");
    std::fs::write(&pk_file, format!("{pk}\n")).unwrap();
    assert_eq!(
        verify_file(&file, Some(pk_file.to_str().unwrap())).code,
        Some(0)
    );
    // Without it: whole, and it says that does not show who signed it.
    let r = verify_file(&file, None);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("receipt's own"), "{}", r.stdout);

    // Any byte changed, two ways each: the check the CLI runs fails every time.
    assert!(passes(&text, &pk));
    let bytes = text.as_bytes();
    for i in 0..bytes.len() {
        for flip in [0x01u8, 0x20] {
            let mut b = bytes.to_vec();
            b[i] ^= flip;
            let Ok(changed) = String::from_utf8(b) else {
                continue;
            };
            assert!(
                !passes(&changed, &pk),
                "byte {i} ({:?}) ^ {flip:#x} still verifies",
                bytes[i] as char
            );
        }
    }
    // And through the binary, on a spread of positions (exit 1, or 2 when it no longer
    // reads as a receipt).
    for i in (0..bytes.len()).step_by(211) {
        let mut b = bytes.to_vec();
        b[i] ^= 0x01;
        let f = d.path("flipped.json");
        std::fs::write(&f, &b).unwrap();
        let r = verify_file(&f, Some(&pk));
        assert!(
            matches!(r.code, Some(1) | Some(2)),
            "byte {i}: {:?} {}",
            r.code,
            r.stdout
        );
    }

    // A segment entry altered and the whole chain after it recomputed (no key needed for
    // that): the head no longer matches its signature.
    let mut forged: Receipt = serde_json::from_str(&text).unwrap();
    let k = forged
        .segment
        .iter()
        .position(|e| e.body.run_id == id && e.body.action == audit::Action::Held)
        .unwrap();
    forged.segment[k].body.action = audit::Action::Deleted;
    let (s0, h0) = (
        forged.segment[0].seq - 1,
        forged.segment[0].prev_hash.clone(),
    );
    let bodies = forged.segment.iter().map(|e| e.body.clone()).collect();
    forged.segment = audit::chain(s0, &h0, bodies);
    forged.head.hash = forged.segment.last().unwrap().hash.clone();
    forged.targets = lethe_core::receipt::outcomes(&id, &forged.segment);
    let f = d.path("forged.json");
    std::fs::write(&f, forged.to_text()).unwrap();
    let r = verify_file(&f, Some(&pk));
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    assert!(r.stdout.contains("signature"), "{}", r.stdout);
    // An entry dropped from the segment.
    let mut cut: Receipt = serde_json::from_str(&text).unwrap();
    cut.segment.remove(1);
    std::fs::write(&f, cut.to_text()).unwrap();
    assert_eq!(verify_file(&f, Some(&pk)).code, Some(1));

    // Another deployment's key: fails, though the receipt is whole.
    let other = Tmp::new("receipt-other");
    let (ocfg, oid, opk) = erased(&other);
    assert_ne!(opk, pk);
    let r = verify_file(&file, Some(&opk));
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    // A receipt signed by another deployment's key (as a self-signed forgery would be)
    // passes only without --public-key.
    let ofile = other.path("r.json");
    let r = run(
        &ocfg,
        &[
            "erase",
            "status",
            &oid,
            "--receipt",
            "-o",
            ofile.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(verify_file(&ofile, None).code, Some(0));
    assert_eq!(verify_file(&ofile, Some(&pk)).code, Some(1));

    // Unreadable: exit 2.
    assert_eq!(
        verify_file(&d.path("missing.json"), Some(&pk)).code,
        Some(2)
    );
    std::fs::write(d.path("junk.json"), "{\"not\": \"a receipt\"}").unwrap();
    assert_eq!(verify_file(&d.path("junk.json"), Some(&pk)).code, Some(2));
}

#[test]
fn no_receipt_for_an_unfinished_request_and_the_trail_must_agree() {
    let d = Tmp::new("receipt-refused");
    seed_training(&d, 20);
    let cfg = training_config(&d);
    // A preview leaves the request open: nothing to attest yet (exit 2, a refusal).
    let r = run(&cfg, &["erase", "--subject", "user-2", "--json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let id = r.json()["request_id"].as_str().unwrap().to_string();
    let r = run(&cfg, &["erase", "status", &id, "--receipt"]);
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("not completed"), "{}", r.stderr);
    assert!(r.stdout.is_empty());
    let r = run(&cfg, &["erase", "status", "erasure-nope", "--receipt"]);
    assert_eq!(r.code, Some(2));

    // Finished; then an entry of its segment altered in the state: no receipt is signed
    // off over it.
    let r = run(&cfg, &["erase", "--subject", "user-2", "--apply"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let r = run(&cfg, &["erase", "status", &id, "--receipt"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let text = r.stdout.clone();
    let c = rusqlite::Connection::open(d.path("state/lethe-state.db")).unwrap();
    c.execute(
        "UPDATE audit SET item_key = 'other' WHERE run_id = ?1 AND action = 'deleted' AND seq = (SELECT MIN(seq) FROM audit WHERE run_id = ?1 AND action = 'deleted')",
        [&id],
    )
    .unwrap();
    let r = run(&cfg, &["erase", "status", &id, "--receipt"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("does not verify"), "{}", r.stderr);
    // The receipt handed out before still verifies: it carries its own proof.
    let f = d.path("r.json");
    std::fs::write(&f, &text).unwrap();
    let pk = run(&cfg, &["audit", "public-key"])
        .stdout
        .trim()
        .to_string();
    assert_eq!(verify_file(&f, Some(&pk)).code, Some(0));
}

#[test]
fn the_head_is_signed_and_verify_checks_the_signature() {
    let d = Tmp::new("signed-head");
    seed_training(&d, 10);
    let cfg = training_config(&d);
    let r = run(&cfg, &["sweep", "--apply", "--no-progress"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let key_file = d.path("state/lethe-state.db.signing-key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let state = d.path("state/lethe-state.db");
    let c = rusqlite::Connection::open(&state).unwrap();
    let (sig, pk): (Option<String>, Option<String>) = c
        .query_row("SELECT signature, public_key FROM audit_seal", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let pk = pk.unwrap();
    assert_eq!(sig.as_ref().map(String::len), Some(128));
    assert_eq!(run(&cfg, &["audit", "public-key"]).stdout.trim(), pk);
    assert_eq!(run(&cfg, &["audit", "verify"]).code, Some(0));

    // The signature removed: verify fails, and no writing command extends the trail.
    c.execute("UPDATE audit_seal SET signature = NULL", [])
        .unwrap();
    let r = run(&cfg, &["audit", "verify"]);
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    assert!(r.stdout.contains("no signature"), "{}", r.stdout);
    let r = run(&cfg, &["sweep", "--apply", "--no-progress"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    // Altered: fails too.
    c.execute(
        "UPDATE audit_seal SET signature = ?1",
        [sig.as_ref()
            .unwrap()
            .replacen('0', "1", 1)
            .replacen('a', "b", 1)],
    )
    .unwrap();
    let r = run(&cfg, &["audit", "verify"]);
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    assert!(r.stdout.contains("signature"), "{}", r.stdout);
    c.execute(
        "UPDATE audit_seal SET signature = ?1",
        [sig.as_ref().unwrap()],
    )
    .unwrap();
    assert_eq!(run(&cfg, &["audit", "verify"]).code, Some(0));

    // A key file others may read is refused, naming it, without printing the key.
    let seed = std::fs::read_to_string(&key_file).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = run(&cfg, &["audit", "verify"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("signing key file") && r.stderr.contains("0644"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains(seed.trim()) && !r.stdout.contains(seed.trim()));
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Replaced by another key: a writing command refuses (the head was signed by another).
    std::fs::remove_file(&key_file).unwrap();
    std::fs::write(&key_file, "11".repeat(32)).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = run(&cfg, &["sweep", "--apply", "--no-progress"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("signing key was replaced"),
        "{}",
        r.stderr
    );
    // Gone: a writing command refuses rather than make a new one over a signed trail.
    std::fs::remove_file(&key_file).unwrap();
    let r = run(&cfg, &["sweep", "--apply", "--no-progress"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("signing key") && r.stderr.contains("missing"),
        "{}",
        r.stderr
    );
    assert!(!key_file.exists());
    // The operator records the loss: a new key, the break in the trail, writes again.
    let r = run(&cfg, &["audit", "repair", "--reason", "signing key lost"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("signed with public key"), "{}", r.stdout);
    assert!(key_file.exists());
    let new_pk = run(&cfg, &["audit", "public-key"])
        .stdout
        .trim()
        .to_string();
    assert_ne!(new_pk, pk);
    assert_eq!(
        run(&cfg, &["sweep", "--apply", "--no-progress"]).code,
        Some(0)
    );
    let r = run(&cfg, &["audit", "verify"]);
    assert_eq!(r.code, Some(0), "{}", r.stdout);
    assert!(r.stdout.contains("signing key lost"), "{}", r.stdout);
    // The first key put back: recorded the same way.
    std::fs::remove_file(&key_file).unwrap();
    std::fs::write(&key_file, &seed).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = run(&cfg, &["audit", "repair", "--reason", "first key restored"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(run(&cfg, &["audit", "verify"]).code, Some(0));
    // From an environment variable instead ([audit] signing_key_env).
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!("{text}\n[audit]\nsigning_key_env = \"LETHE_TEST_SIGNING_KEY\"\n"),
    )
    .unwrap();
    let r = run_env(
        &cfg,
        &[("LETHE_TEST_SIGNING_KEY", seed.trim())],
        &["audit", "verify"],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let r = run(&cfg, &["audit", "verify"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("LETHE_TEST_SIGNING_KEY"), "{}", r.stderr);
}

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[test]
fn a_state_from_before_signing_is_signed_from_its_next_write() {
    let d = Tmp::new("signing-upgrade");
    seed_training(&d, 10);
    let cfg = training_config(&d);
    assert_eq!(
        run(&cfg, &["sweep", "--apply", "--no-progress"]).code,
        Some(0)
    );
    // What a state made before signing looks like: no key file, no signature, no signed
    // head kept.
    let key_file = d.path("state/lethe-state.db.signing-key");
    std::fs::remove_file(&key_file).unwrap();
    let c = rusqlite::Connection::open(d.path("state/lethe-state.db")).unwrap();
    c.execute_batch(
        "UPDATE audit_seal SET signature = NULL, public_key = NULL; DELETE FROM signed_heads;",
    )
    .unwrap();
    // Reading commands verify it as it is and make nothing.
    let r = run(&cfg, &["audit", "verify"]);
    assert_eq!(r.code, Some(0), "{}", r.stdout);
    let r = run(&cfg, &["audit", "public-key"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("no signing key yet"), "{}", r.stderr);
    assert!(!key_file.exists());
    // A writing command makes the key and signs the head from then on.
    assert_eq!(
        run(&cfg, &["sweep", "--apply", "--no-progress"]).code,
        Some(0)
    );
    assert!(key_file.exists());
    let pk = run(&cfg, &["audit", "public-key"])
        .stdout
        .trim()
        .to_string();
    let stored: String = c
        .query_row("SELECT public_key FROM audit_seal", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, pk);
    assert_eq!(run(&cfg, &["audit", "verify"]).code, Some(0));
}

#[test]
fn a_refused_write_leaves_no_new_signing_key_behind() {
    let d = Tmp::new("signing-refused");
    seed_training(&d, 10);
    let cfg = training_config(&d);
    assert_eq!(
        run(&cfg, &["sweep", "--apply", "--no-progress"]).code,
        Some(0)
    );
    // The key file gone, the seal stripped of its signature, and the seal altered too.
    let key_file = d.path("state/lethe-state.db.signing-key");
    std::fs::remove_file(&key_file).unwrap();
    let c = rusqlite::Connection::open(d.path("state/lethe-state.db")).unwrap();
    c.execute_batch(
        "UPDATE audit_seal SET signature = NULL, public_key = NULL, mac = '00'; DELETE FROM signed_heads;",
    )
    .unwrap();
    let r = run(&cfg, &["sweep", "--apply", "--no-progress"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(
        !key_file.exists(),
        "a refused command made a signing key a repair would adopt"
    );
}

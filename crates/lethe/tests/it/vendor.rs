//! `openai_files` and `anthropic_files` targets against the stateful fakes of
//! `vendor_fake`: what a dry run and an apply do, holds, exceptions, work still running,
//! faults, erasure through `subject_map`, a SIGKILL mid-batch, `check`, and the OpenAI path
//! through Prism's validating proxy.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::vendor_fake::{Fake, Fault, FileSpec, StoreSpec};
use super::{Tmp, run_env};

pub(super) const KEY: &str = "sk-test-0123456789abcdefSECRET";
pub(super) const KEY_ENV: &str = "LETHE_TEST_VENDOR_KEY";
const DAY: i64 = 86_400;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub(super) fn env() -> [(&'static str, &'static str); 1] {
    [(KEY_ENV, KEY)]
}

/// A config with one vendor target (its own keys as given) and a 30-day window.
pub(super) fn config(dir: &Tmp, ty: &str, base_url: &str, extra: &str) -> PathBuf {
    let cfg = dir.path("lethe.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[state]
url = "sqlite://lethe-state.db"

[categories.vendor_file]
retention = "30d"

[exceptions]
max_extension = "30d"

[[targets]]
name = "vendor"
type = "{ty}"
category = "vendor_file"
api_key_env = "{KEY_ENV}"
base_url = "{base_url}"
request_timeout = "2s"
{extra}
"#
        ),
    )
    .unwrap();
    cfg
}

/// An application's table of uploads in `app.db` under `dir`, the way an application
/// records which vendor file it uploaded for whom, with these (file id, user) rows.
pub(super) fn uploads(dir: &Path, rows: &[(&str, &str)]) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(dir.join("app.db")).unwrap();
    conn.execute_batch(
        "CREATE TABLE uploads (id INTEGER PRIMARY KEY, file_id TEXT NOT NULL, user_id TEXT NOT NULL, created_at TEXT NOT NULL);",
    )
    .unwrap();
    for (file, user) in rows {
        record_upload(&conn, file, user);
    }
    conn
}

pub(super) fn record_upload(conn: &rusqlite::Connection, file: &str, user: &str) {
    conn.execute(
        "INSERT INTO uploads (file_id, user_id, created_at) VALUES (?1, ?2, '2026-01-01T00:00:00Z')",
        rusqlite::params![file, user],
    )
    .unwrap();
}

/// The target's `subject_map` on [`uploads`], and that table as a sql target of its own
/// (in `category`, kept ten years: never due).
pub(super) fn subject_map(category: &str) -> String {
    format!(
        r#"
[targets.subject_map]
source = "uploads"
query = "SELECT file_id FROM uploads WHERE user_id = $1"
subject_of = "SELECT user_id FROM uploads WHERE file_id = $1"

[[targets]]
name = "uploads"
type = "sql"
url = "sqlite://app.db"
table = "uploads"
key = "id"
created_at = "created_at"
category = "{category}"
retention = "3650d"
"#
    )
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn target_report(out: &str) -> serde_json::Value {
    json(out)["targets"][0].clone()
}

/// Every trail entry, as `audit export` gives them.
pub(super) fn entries(cfg: &Path) -> Vec<serde_json::Value> {
    let r = run_env(cfg, &env(), &["audit", "export", "--format", "jsonl"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    r.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The keys of the entries with this action, each as often as recorded.
pub(super) fn keys_of(cfg: &Path, action: &str) -> Vec<String> {
    entries(cfg)
        .into_iter()
        .filter(|e| e["action"] == action)
        .map(|e| e["item_key"].as_str().unwrap().to_string())
        .collect()
}

fn deletes(fake: &Fake) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .count()
}

fn hold(cfg: &Path, key: &str) {
    let r = run_env(
        cfg,
        &env(),
        &[
            "hold",
            "add",
            "--target",
            "vendor",
            "--key",
            key,
            "--case",
            "C-1",
            "--reason",
            "litigation",
        ],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
}

fn except(cfg: &Path, key: &str) {
    let until = lethe_core::time::Timestamp::from_unix_seconds(now() + 10 * DAY)
        .unwrap()
        .to_rfc3339();
    let r = run_env(
        cfg,
        &env(),
        &[
            "exception",
            "add",
            "--target",
            "vendor",
            "--key",
            key,
            "--until",
            &until,
            "--owner",
            "ml",
            "--reason",
            "audit",
        ],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
}

/// 2,500 files in five kinds, by `i % 5`: (0) 40 days old, no vendor expiry: due; (1) 10
/// days old: kept; (2) 10 days old, vendor expiry yesterday: due; (3) 40 days old, vendor
/// expiry in 5 days: kept (the vendor's own expiry rules); (4) 40 days old, vendor expiry
/// 2 days ago: due. Returns every id and the due ones.
fn seed_openai(fake: &Fake, n: usize) -> (Vec<String>, BTreeSet<String>) {
    let purposes = [
        "batch",
        "batch_output",
        "fine-tune",
        "assistants",
        "user_data",
    ];
    let t = now();
    let specs: Vec<FileSpec> = (0..n)
        .map(|i| {
            let (age, expires) = match i % 5 {
                0 => (40, None),
                1 => (10, None),
                2 => (10, Some(t - DAY)),
                3 => (40, Some(t + 5 * DAY)),
                _ => (40, Some(t - 2 * DAY)),
            };
            FileSpec {
                expires_at: expires,
                ..FileSpec::new(purposes[(i / 5) % 5], t - age * DAY - i as i64)
            }
        })
        .collect();
    let ids = fake.add_files(specs);
    let due = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| matches!(i % 5, 0 | 2 | 4))
        .map(|(_, id)| id.clone())
        .collect();
    (ids, due)
}

#[test]
fn openai_files_dry_run_then_apply_deletes_exactly_the_due_files() {
    let dir = Tmp::new("openai-sweep");
    let fake = Fake::openai(KEY);
    fake.set_page_cap(1_000);
    let (ids, mut due) = seed_openai(&fake, 2_500);
    let cfg = config(&dir, "openai_files", &fake.base_url(), "");

    // Protected: a held file, an excepted file, a file a running batch reads, a file a
    // running fine-tuning job trains on; a finished batch protects nothing.
    let (held, excepted, batch_in, job_in, done_in) =
        (&ids[0], &ids[5], &ids[10], &ids[15], &ids[20]);
    hold(&cfg, held);
    except(&cfg, excepted);
    fake.add_batch("in_progress", batch_in, None, None);
    fake.add_fine_tuning_job("running", job_in, None, &[]);
    fake.add_batch("completed", done_in, None, None);
    for k in [held, excepted, batch_in, job_in] {
        assert!(due.remove(k));
    }
    let before = fake.file_ids();

    let dry = run_env(&cfg, &env(), &["sweep", "--json"]);
    assert_eq!(dry.code, Some(0), "{}{}", dry.stdout, dry.stderr);
    assert_eq!(deletes(&fake), 0, "a dry run sends no DELETE");
    assert_eq!(
        fake.file_ids(),
        before,
        "a dry run changed the vendor's files"
    );
    let pages = fake
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/v1/files")
        .count();
    assert!(
        pages >= 3,
        "2,500 files over pages of 1,000: {pages} listing requests"
    );
    let would: BTreeSet<String> = keys_of(&cfg, "would_delete").into_iter().collect();
    assert_eq!(would, due, "the dry run names exactly the due files");

    let applied = run_env(&cfg, &env(), &["sweep", "--apply", "--json"]);
    assert_eq!(
        applied.code,
        Some(0),
        "{}{}",
        applied.stdout,
        applied.stderr
    );
    let t = target_report(&applied.stdout);
    assert_eq!(t["deleted"], due.len() as u64, "{t}");
    assert_eq!(t["failed"], 0, "{t}");
    assert_eq!(t["held"], 2, "a hold and an exception: {t}");
    assert_eq!(t["in_use"], 2, "a running batch and a running job: {t}");
    assert_eq!(
        t["untagged"], 1_000,
        "files 0 and 1 of every five have no vendor expiry: {t}"
    );
    let left = fake.file_ids();
    let expected: BTreeSet<String> = before.difference(&due).cloned().collect();
    assert_eq!(left, expected, "exactly the due files are gone");

    let deleted = keys_of(&cfg, "deleted");
    assert_eq!(deleted.len(), due.len(), "one entry per deleted file");
    assert_eq!(deleted.iter().cloned().collect::<BTreeSet<_>>(), due);
    // Dry run and apply each record the kept files.
    assert_eq!(keys_of(&cfg, "held"), vec![held.clone(), held.clone()]);
    assert_eq!(
        keys_of(&cfg, "excepted"),
        vec![excepted.clone(), excepted.clone()]
    );
    let in_use: BTreeSet<String> = keys_of(&cfg, "in_use").into_iter().collect();
    assert_eq!(in_use, BTreeSet::from([batch_in.clone(), job_in.clone()]));
    let verify = run_env(&cfg, &env(), &["audit", "verify"]);
    assert_eq!(verify.code, Some(0), "{}{}", verify.stdout, verify.stderr);

    // Nothing in any output, the trail or the requests' log carries the key.
    let trail = run_env(&cfg, &env(), &["audit", "export", "--format", "jsonl"]).stdout;
    for text in [
        &dry.stdout,
        &dry.stderr,
        &applied.stdout,
        &applied.stderr,
        &trail,
    ] {
        assert!(!text.contains(KEY), "the API key leaked");
    }
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.headers.get("authorization").map(String::as_str) == Some("<valid key>"))
    );

    // A second run finds nothing more to delete and the kept files still kept.
    let again = run_env(&cfg, &env(), &["sweep", "--apply", "--json"]);
    assert_eq!(
        target_report(&again.stdout)["deleted"],
        0,
        "{}",
        again.stdout
    );
    assert_eq!(fake.file_ids(), expected);
}

#[test]
fn openai_vector_stores_expire_by_their_own_metadata_or_last_activity() {
    let dir = Tmp::new("openai-stores");
    let fake = Fake::openai(KEY);
    fake.set_page_cap(7);
    let t = now();
    let md = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let past = lethe_core::time::Timestamp::from_unix_seconds(t - DAY)
        .unwrap()
        .to_rfc3339();
    let future = lethe_core::time::Timestamp::from_unix_seconds(t + DAY)
        .unwrap()
        .to_rfc3339();
    let mut due = BTreeSet::new();
    let mut kept = BTreeSet::new();
    for i in 0..40 {
        let spec = match i % 5 {
            // Own expiry passed, though active yesterday.
            0 => StoreSpec {
                created_at: t - 2 * DAY,
                last_active_at: Some(t - DAY),
                expires_at: Some(t - 60),
                ..Default::default()
            },
            // Metadata expiry passed.
            1 => StoreSpec {
                created_at: t - 2 * DAY,
                metadata: md(&[("expires_at", &past), ("owner", "ml")]),
                ..Default::default()
            },
            // Metadata expiry ahead, though created long ago.
            2 => StoreSpec {
                created_at: t - 90 * DAY,
                metadata: md(&[("expires_at", &future)]),
                ..Default::default()
            },
            // Idle for 40 days.
            3 => StoreSpec {
                created_at: t - 90 * DAY,
                last_active_at: Some(t - 40 * DAY),
                ..Default::default()
            },
            // Created long ago, active last week.
            _ => StoreSpec {
                created_at: t - 90 * DAY,
                last_active_at: Some(t - 7 * DAY),
                metadata: md(&[("owner", "ml")]),
                ..Default::default()
            },
        };
        let id = fake.add_vector_store(spec);
        if matches!(i % 5, 0 | 1 | 3) {
            due.insert(id);
        } else {
            kept.insert(id);
        }
    }
    let old_file = fake.add_file(FileSpec::new("assistants", t - 40 * DAY));
    let cfg = config(
        &dir,
        "openai_files",
        &fake.base_url(),
        "vector_stores = true\npurposes = [\"batch\"]",
    );
    // A hold and an exception, each on a due store, named by its id.
    let held = due.iter().next().unwrap().clone();
    let excepted = due.iter().nth(1).unwrap().clone();
    hold(&cfg, &held);
    except(&cfg, &excepted);
    for k in [&held, &excepted] {
        due.remove(k);
        kept.insert(k.clone());
    }
    let dry = run_env(&cfg, &env(), &["sweep", "--json"]);
    assert_eq!(dry.code, Some(0), "{}{}", dry.stdout, dry.stderr);
    assert_eq!(deletes(&fake), 0);
    let would: BTreeSet<String> = keys_of(&cfg, "would_delete").into_iter().collect();
    assert_eq!(would, due, "the dry run names exactly the due stores");
    let applied = run_env(&cfg, &env(), &["sweep", "--apply", "--json"]);
    assert_eq!(
        applied.code,
        Some(0),
        "{}{}",
        applied.stdout,
        applied.stderr
    );
    assert_eq!(
        fake.vector_store_ids(),
        kept,
        "exactly the due stores are gone"
    );
    assert!(
        fake.file_ids().contains(&old_file),
        "a file of a purpose not swept is never touched"
    );
    assert!(keys_of(&cfg, "held").contains(&held));
    assert!(keys_of(&cfg, "excepted").contains(&excepted));
    let deleted = keys_of(&cfg, "deleted");
    assert_eq!(deleted.len(), due.len(), "one entry per deleted store");
    assert_eq!(deleted.into_iter().collect::<BTreeSet<_>>(), due);
    // Untagged stores: those with no expiry of their own (kinds 3 and 4): 16.
    assert_eq!(target_report(&dry.stdout)["untagged"], 16, "{}", dry.stdout);
    assert_eq!(run_env(&cfg, &env(), &["audit", "verify"]).code, Some(0));
}

#[test]
fn anthropic_files_sweep_pages_by_after_id_and_by_page_cursor() {
    for cursor_mode in [false, true] {
        let dir = Tmp::new("anthropic-sweep");
        let fake = Fake::anthropic(KEY);
        fake.set_page_cap(300);
        fake.set_page_cursor_mode(cursor_mode);
        let t = now();
        let specs: Vec<FileSpec> = (0..2_500)
            .map(|i| FileSpec::new("", t - if i % 2 == 0 { 40 } else { 10 } * DAY - i))
            .collect();
        let ids = fake.add_files(specs);
        let mut due: BTreeSet<String> = ids.iter().step_by(2).cloned().collect();
        let cfg = config(&dir, "anthropic_files", &fake.base_url(), "");
        hold(&cfg, &ids[0]);
        except(&cfg, &ids[2]);
        due.remove(&ids[0]);
        due.remove(&ids[2]);
        let before = fake.file_ids();

        let dry = run_env(&cfg, &env(), &["sweep", "--json"]);
        assert_eq!(dry.code, Some(0), "{}{}", dry.stdout, dry.stderr);
        assert_eq!(deletes(&fake), 0);
        let would: BTreeSet<String> = keys_of(&cfg, "would_delete").into_iter().collect();
        assert!(
            would == due,
            "cursor mode {cursor_mode}: {} would be deleted, {} due: {}",
            would.len(),
            due.len(),
            dry.stdout
        );

        let applied = run_env(&cfg, &env(), &["sweep", "--apply", "--json"]);
        assert_eq!(
            applied.code,
            Some(0),
            "{}{}",
            applied.stdout,
            applied.stderr
        );
        let expected: BTreeSet<String> = before.difference(&due).cloned().collect();
        assert_eq!(fake.file_ids(), expected, "cursor mode {cursor_mode}");
        let deleted = keys_of(&cfg, "deleted");
        assert_eq!(deleted.len(), due.len());
        assert_eq!(deleted.into_iter().collect::<BTreeSet<_>>(), due);
        assert!(
            fake.requests().iter().all(|r| {
                r.headers.get("anthropic-beta").map(String::as_str) == Some("files-api-2025-04-14")
                    && r.headers.contains_key("anthropic-version")
            }),
            "every request carries the beta and version headers"
        );
        assert_eq!(run_env(&cfg, &env(), &["audit", "verify"]).code, Some(0));
    }
}

#[test]
fn throttling_server_errors_and_timeouts_are_retried_and_nothing_failed_is_recorded_deleted() {
    let dir = Tmp::new("openai-faults");
    let fake = Fake::openai(KEY);
    let t = now();
    let ids = fake.add_files((0..60).map(|i| FileSpec::new("batch", t - 40 * DAY - i)));
    let cfg = config(
        &dir,
        "openai_files",
        &fake.base_url(),
        "deletes_in_flight = 4",
    );
    fake.inject(Fault::Status {
        method: "DELETE",
        path_prefix: "/v1/files/".into(),
        status: 429,
        retry_after: Some("1".into()),
        retry_after_ms: None,
        times: 3,
    });
    fake.inject(Fault::status("DELETE", "/v1/files/", 500, 3));
    // Deleted at once, answered after the client gave up: the retry finds it gone.
    fake.inject(Fault::ActThenStall {
        method: "DELETE",
        path_prefix: "/v1/files/".into(),
        delay: Duration::from_secs(4),
        times: 2,
    });
    fake.inject(Fault::status("GET", "/v1/files", 503, 1));
    let r = run_env(&cfg, &env(), &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(fake.file_ids().is_empty(), "every due file is deleted");
    let tr = target_report(&r.stdout);
    assert_eq!(tr["deleted"], 60, "{tr}");
    assert_eq!(tr["failed"], 0, "{tr}");
    let statuses: Vec<(String, u16)> = fake
        .requests()
        .iter()
        .filter(|r| r.status != 200)
        .map(|r| (r.method.clone(), r.status))
        .collect();
    // 3 throttled, 3 server errors, 2 timeouts (the listing's 503 may be met by the
    // preflight's own read of the first page instead).
    assert!(
        tr["retries"].as_u64().unwrap() >= 8,
        "retries counted: {tr} {statuses:?}"
    );
    assert!(
        fake.max_concurrent_deletes() <= 4,
        "at most deletes_in_flight at once"
    );
    let deleted = keys_of(&cfg, "deleted");
    assert_eq!(deleted.len(), 60, "each file recorded once");
    assert_eq!(
        deleted.into_iter().collect::<BTreeSet<_>>(),
        ids.into_iter().collect()
    );
    assert!(
        entries(&cfg)
            .iter()
            .any(|e| e["detail"].as_str().unwrap_or("").contains("already gone")),
        "a file found gone on retry is recorded as already gone"
    );

    // A file that keeps failing is failed, never recorded deleted, and kept.
    let keep = fake.add_file(FileSpec::new("batch", t - 40 * DAY));
    fake.inject(Fault::status("DELETE", "/v1/files/", 400, 1));
    let r = run_env(&cfg, &env(), &["sweep", "--apply", "--json"]);
    assert_eq!(
        r.code,
        Some(1),
        "a failed item makes the run exit 1: {}",
        r.stdout
    );
    assert!(fake.file_ids().contains(&keep));
    assert!(!keys_of(&cfg, "deleted").contains(&keep));
    assert_eq!(keys_of(&cfg, "failed"), vec![keep.clone()]);
    assert_eq!(run_env(&cfg, &env(), &["audit", "verify"]).code, Some(0));
}

#[test]
fn erasure_through_subject_map_removes_that_subjects_vendor_files_only() {
    let dir = Tmp::new("openai-erase");
    let fake = Fake::openai(KEY);
    let t = now();
    // Young files: erasure deletes whatever the windows say.
    let ids = fake.add_files((0..30).map(|i| FileSpec::new("user_data", t - DAY - i)));
    let users = ["alice", "bob", "carol"];
    let rows: Vec<(&str, &str)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), users[i % 3]))
        .collect();
    let conn = uploads(&dir.0, &rows);
    // Alice also uploaded a file since deleted at the vendor: nothing to do for it.
    record_upload(&conn, "file-gone000000000000000000", "alice");
    let extra = subject_map("vendor_file");
    let cfg = config(&dir, "openai_files", &fake.base_url(), &extra);
    let alice: BTreeSet<String> = ids.iter().step_by(3).cloned().collect();
    let carol_held = ids[2].clone();
    // A subject hold on carol keeps her files even from an old-file sweep.
    let r = run_env(
        &cfg,
        &env(),
        &[
            "hold",
            "add",
            "--subject",
            "carol",
            "--case",
            "C-2",
            "--reason",
            "litigation",
        ],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);

    let preview = run_env(&cfg, &env(), &["erase", "--subject", "alice", "--json"]);
    assert_eq!(
        preview.code,
        Some(0),
        "{}{}",
        preview.stdout,
        preview.stderr
    );
    assert_eq!(deletes(&fake), 0, "a preview deletes nothing");

    let r = run_env(
        &cfg,
        &env(),
        &["erase", "--subject", "alice", "--apply", "--json"],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let left = fake.file_ids();
    let all: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(
        left,
        all.difference(&alice).cloned().collect(),
        "alice's files and only hers"
    );
    let erased: BTreeSet<String> = keys_of(&cfg, "deleted").into_iter().collect();
    assert_eq!(erased, alice);

    // Carol's files are held: an erasure withholds them.
    let r = run_env(
        &cfg,
        &env(),
        &["erase", "--subject", "carol", "--apply", "--json"],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(
        fake.file_ids().contains(&carol_held),
        "a subject hold keeps carol's files"
    );
    assert!(keys_of(&cfg, "held").contains(&carol_held));

    // In a sweep, whose a file is comes from subject_of: carol's old file is kept under her
    // hold, bob's old file is deleted.
    let carol_old = fake.add_file(FileSpec::new("user_data", t - 40 * DAY));
    let bob_old = fake.add_file(FileSpec::new("user_data", t - 40 * DAY));
    record_upload(&conn, &carol_old, "carol");
    record_upload(&conn, &bob_old, "bob");
    let r = run_env(&cfg, &env(), &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(
        fake.file_ids().contains(&carol_old),
        "a subject hold keeps it in a sweep"
    );
    assert!(!fake.file_ids().contains(&bob_old));

    // Export lists bob's files, by id.
    let out = dir.path("bob.json");
    let r = run_env(
        &cfg,
        &env(),
        &[
            "export",
            "--subject",
            "bob",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains(&ids[1]) && !text.contains(&ids[0]), "{text}");
    assert_eq!(run_env(&cfg, &env(), &["audit", "verify"]).code, Some(0));
}

#[test]
fn a_sweep_killed_after_its_deletes_is_recorded_once_by_the_next_run() {
    use std::os::unix::process::ExitStatusExt;
    let dir = Tmp::new("openai-crash");
    let fake = Fake::openai(KEY);
    let t = now();
    let ids = fake.add_files((0..40).map(|i| FileSpec::new("batch", t - 40 * DAY - i)));
    fake.add_file(FileSpec::new("batch", t - DAY));
    let cfg = config(&dir, "openai_files", &fake.base_url(), "");
    super::ensure_init_env(&cfg, &env());
    let out = super::lethe_failpoint("after_delete")
        .args(["sweep", "--apply", "--config"])
        .arg(&cfg)
        .envs(env())
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "the failpoint kills the sweep"
    );
    assert_eq!(
        fake.file_ids().len(),
        1,
        "the due files were deleted before the kill"
    );
    assert!(
        keys_of(&cfg, "deleted").is_empty(),
        "nothing recorded before the kill"
    );

    let r = run_env(&cfg, &env(), &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let deleted = keys_of(&cfg, "deleted");
    assert_eq!(deleted.len(), 40, "one entry per deleted file: {deleted:?}");
    assert_eq!(
        deleted.into_iter().collect::<BTreeSet<_>>(),
        ids.into_iter().collect()
    );
    assert!(
        entries(&cfg)
            .iter()
            .filter(|e| e["action"] == "deleted")
            .all(|e| e["detail"]
                .as_str()
                .unwrap_or("")
                .contains("interrupted run")),
        "each is recorded as the interrupted run's deletion"
    );
    assert_eq!(run_env(&cfg, &env(), &["audit", "verify"]).code, Some(0));
}

#[test]
fn check_reaches_the_vendor_read_only_and_names_a_wrong_key_without_it() {
    let dir = Tmp::new("openai-check");
    let fake = Fake::openai(KEY);
    seed_openai(&fake, 50);
    let cfg = config(&dir, "openai_files", &fake.base_url(), "");
    let r = run_env(&cfg, &env(), &["check", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let t = target_report(&r.stdout);
    assert_eq!(t["rows"], 50, "{t}");
    assert_eq!(t["past_expiry"], 30, "{t}");
    assert_eq!(t["untagged"], 20, "files without a vendor expiry: {t}");
    assert!(
        t["oldest"].as_str().is_some_and(|o| o.starts_with("file-")),
        "{t}"
    );
    assert_eq!(deletes(&fake), 0);

    let wrong = [(KEY_ENV, "sk-wrong-key-000000000000")];
    let r = run_env(&cfg, &wrong, &["check"]);
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    let text = format!("{}{}", r.stdout, r.stderr);
    assert!(text.contains(KEY_ENV) && text.contains("refused"), "{text}");
    assert!(
        !text.contains("sk-wrong-key"),
        "the key is never shown: {text}"
    );
    // A refused key is bad config: nothing is touched (exit 2).
    let r = run_env(&cfg, &wrong, &["sweep", "--apply"]);
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(!format!("{}{}", r.stdout, r.stderr).contains("sk-wrong-key"));
    assert_eq!(
        fake.file_ids().len(),
        50,
        "nothing deleted with a refused key"
    );
}

/// Every request Lethe sends on the OpenAI path, and every answer the fake gives it, checked
/// by Prism's validating proxy against OpenAI's published description: `check`, a dry run and
/// an apply, over paged files, vector stores, batches and fine-tuning jobs.
#[test]
fn the_openai_path_conforms_to_the_published_contract_through_prism() {
    let dir = Tmp::new("openai-prism");
    let fake = Fake::openai(KEY);
    fake.set_page_cap(40);
    let (ids, due) = seed_openai(&fake, 120);
    fake.add_batch("in_progress", &ids[0], None, None);
    fake.add_batch("completed", &ids[5], Some(&ids[10]), None);
    fake.add_fine_tuning_job("running", &ids[15], None, &[]);
    let t = now();
    for i in 0..12 {
        fake.add_vector_store(StoreSpec {
            created_at: t - 90 * DAY,
            last_active_at: Some(t - (20 + 5 * i) * DAY),
            name: format!("store-{i}"),
            ..Default::default()
        });
    }
    let prism = super::prism::Prism::proxy(
        &super::prism::vendor_spec("openai-files.yaml"),
        &fake.base_url(),
    );
    let cfg = config(
        &dir,
        "openai_files",
        &prism.base_url(),
        "vector_stores = true",
    );
    for args in [
        &["check", "--json"][..],
        &["sweep", "--json"],
        &["sweep", "--apply", "--json"],
    ] {
        let r = run_env(&cfg, &env(), args);
        assert_eq!(r.code, Some(0), "{args:?}: {}{}", r.stdout, r.stderr);
    }
    let violations = prism.violations();
    assert!(
        violations.is_empty(),
        "Prism found requests or answers outside OpenAI's contract:\n{}",
        violations.join("\n")
    );
    let left = fake.file_ids();
    assert!(
        due.iter()
            .filter(|d| *d != &ids[0] && *d != &ids[15])
            .all(|d| !left.contains(d)),
        "the DELETEs went through Prism to the fake"
    );
    assert!(
        left.contains(&ids[0]) && left.contains(&ids[15]),
        "in use: kept"
    );
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.path.starts_with("/v1/vector_stores/")),
        "vector stores were deleted through Prism too"
    );
}

/// The Anthropic path through Prism, against the description written from Anthropic's
/// documentation (no official one is published): weaker evidence than OpenAI's, but it
/// holds Lethe's requests and the fake's answers to the documented shapes.
#[test]
fn the_anthropic_path_conforms_to_its_documented_shapes_through_prism() {
    let dir = Tmp::new("anthropic-prism");
    let fake = Fake::anthropic(KEY);
    fake.set_page_cap(25);
    let t = now();
    let ids = fake.add_files((0..100).map(|i| FileSpec::new("", t - (i % 2 * 30 + 10) * DAY - i)));
    let prism = super::prism::Prism::proxy(
        &super::prism::vendor_spec("anthropic-files.yaml"),
        &fake.base_url(),
    );
    let cfg = config(&dir, "anthropic_files", &prism.base_url(), "");
    for args in [
        &["check", "--json"][..],
        &["sweep", "--json"],
        &["sweep", "--apply", "--json"],
    ] {
        let r = run_env(&cfg, &env(), args);
        assert_eq!(r.code, Some(0), "{args:?}: {}{}", r.stdout, r.stderr);
    }
    let violations = prism.violations();
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    let left = fake.file_ids();
    assert_eq!(left.len(), 50, "the 40-day-old half is gone");
    assert!(ids.iter().step_by(2).all(|id| left.contains(id)));
}

/// Issue 15: a vector store's metadata names its sensitivity level
/// (`sensitivity_metadata`); its cap applies, an undefined level is read as the strictest,
/// and a store naming none keeps the window.
#[test]
fn openai_vector_stores_take_the_cap_of_the_level_their_metadata_names() {
    let dir = Tmp::new("openai-store-levels");
    let fake = Fake::openai(KEY);
    let t = now();
    let store = |level: Option<&str>| StoreSpec {
        created_at: t - 10 * DAY,
        metadata: level
            .map(|l| {
                [("sensitivity".to_string(), l.to_string())]
                    .into_iter()
                    .collect()
            })
            .unwrap_or_default(),
        ..Default::default()
    };
    let restricted = fake.add_vector_store(store(Some("restricted")));
    let unknown = fake.add_vector_store(store(Some("secrett")));
    let internal = fake.add_vector_store(store(Some("internal")));
    let none = fake.add_vector_store(store(None));
    let cfg = config(
        &dir,
        "openai_files",
        &fake.base_url(),
        "vector_stores = true\npurposes = [\"batch\"]\nsensitivity_metadata = \"sensitivity\"\n\n[sensitivity.restricted]\nmax = \"7d\"\n",
    );
    let applied = run_env(&cfg, &env(), &["sweep", "--apply", "--json"]);
    assert_eq!(
        applied.code,
        Some(0),
        "{}{}",
        applied.stdout,
        applied.stderr
    );
    let left = fake.vector_store_ids();
    assert!(
        !left.contains(&restricted) && !left.contains(&unknown),
        "{left:?}"
    );
    assert!(left.contains(&internal) && left.contains(&none), "{left:?}");
    // Files carry no metadata: the key needs vector stores.
    let bad = config(
        &dir,
        "openai_files",
        &fake.base_url(),
        "sensitivity_metadata = \"sensitivity\"\n",
    );
    let r = run_env(&bad, &env(), &["check"]);
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("targets.vendor.sensitivity_metadata"),
        "{}",
        r.stderr
    );
}

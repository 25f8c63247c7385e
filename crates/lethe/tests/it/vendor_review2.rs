//! A second adversarial review of the `openai_files` / `anthropic_files` targets, after the
//! fixes of commit 0ad0747: each test here fails against main at f5a1897, and its comment
//! says what is wrong.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{Value, json};

use super::vendor::{KEY, KEY_ENV, config, env, keys_of, record_upload, subject_map, uploads};
use super::vendor_fake::{Fake, FileSpec, StoreSpec};
use super::vendor_review::{Scripted, run_with_limit};
use super::{DAY, Tmp, now_secs, run_env};

fn hold_subject(cfg: &std::path::Path, subject: &str) {
    let r = run_env(
        cfg,
        &env(),
        &[
            "hold",
            "add",
            "--subject",
            subject,
            "--case",
            "C-9",
            "--reason",
            "litigation",
        ],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
}

fn hold_key(cfg: &std::path::Path, target: &str, key: &str) {
    let r = run_env(
        cfg,
        &env(),
        &[
            "hold",
            "add",
            "--target",
            target,
            "--key",
            key,
            "--case",
            "C-9",
            "--reason",
            "litigation",
        ],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
}

// What must never be deleted.

/// Two targets on one project with disjoint `purposes` (one for batch files, one for
/// fine-tune files and the vector stores) are accepted as two places: each is to touch only
/// its own kinds, so a hold placed through one protects what it sweeps. But an erasure
/// reads every id `subject_map` gives and deletes it whatever it is (connector.rs
/// `of_subject` / `read`: no purpose or `vector_stores` check, unlike a listing): the
/// batch-files target erases bob's fine-tune file and his vector store, both held through
/// the target that owns them.
#[test]
fn an_erasure_never_deletes_what_another_targets_purposes_own() {
    let dir = Tmp::new("review2-erase-purpose");
    let fake = Fake::openai(KEY);
    let t = now_secs();
    let batch = fake.add_file(FileSpec::new("batch", t - DAY));
    let tune = fake.add_file(FileSpec::new("fine-tune", t - DAY));
    let store = fake.add_vector_store(StoreSpec {
        created_at: t - DAY,
        last_active_at: Some(t - DAY),
        name: "bob's docs".into(),
        ..StoreSpec::default()
    });
    uploads(
        &dir.0,
        &[
            (batch.as_str(), "bob"),
            (tune.as_str(), "bob"),
            (store.as_str(), "bob"),
        ],
    );
    let url = fake.base_url();
    let cfg = dir.path("lethe.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[state]
url = "sqlite://lethe-state.db"

[categories.vendor_file]
retention = "30d"

[[targets]]
name = "batches"
type = "openai_files"
category = "vendor_file"
api_key_env = "{KEY_ENV}"
base_url = "{url}"
request_timeout = "2s"
purposes = ["batch"]

[targets.subject_map]
source = "uploads"
query = "SELECT file_id FROM uploads WHERE user_id = $1"
subject_of = "SELECT user_id FROM uploads WHERE file_id = $1"

[[targets]]
name = "tuning"
type = "openai_files"
category = "vendor_file"
api_key_env = "{KEY_ENV}"
base_url = "{url}"
request_timeout = "2s"
purposes = ["fine-tune"]
vector_stores = true
{}"#,
            subject_map("vendor_file")
        ),
    )
    .unwrap();
    let check = run_env(&cfg, &env(), &["check"]);
    assert_ne!(
        check.code,
        Some(2),
        "disjoint purposes are two places: {}{}",
        check.stdout,
        check.stderr
    );
    hold_key(&cfg, "tuning", &tune);
    hold_key(&cfg, "tuning", &store);
    let r = run_env(
        &cfg,
        &env(),
        &["erase", "--subject", "bob", "--apply", "--json"],
    );
    assert!(
        !fake.file_ids().contains(&batch),
        "bob's batch file is erased: {}{}",
        r.stdout,
        r.stderr
    );
    assert!(
        fake.file_ids().contains(&tune),
        "bob's fine-tune file, held through the target that sweeps fine-tune files, was erased by the batch-files target: {}",
        r.stdout
    );
    assert!(
        fake.vector_store_ids().contains(&store),
        "bob's vector store, held through the target that sweeps vector stores, was erased by a target with vector_stores off: {}",
        r.stdout
    );
}

/// "A subject hold on U keeps them in every sweep." A vector store whose metadata names
/// alice while `subject_map` records it as bob's is judged as alice's alone (connector.rs
/// `row`: the metadata wins, `subject_of` is never asked), so bob's legal hold does not keep
/// it: a sweep deletes a held subject's store. Two sources that disagree on whose an item
/// is are "reported failed, never guessed" for files (subjects.rs `subject_of`); here the
/// disagreement is settled by a guess.
#[test]
fn a_store_subject_map_gives_to_a_held_subject_is_kept_whatever_its_metadata_says() {
    let dir = Tmp::new("review2-store-two-owners");
    let fake = Fake::openai(KEY);
    let t = now_secs();
    let store = fake.add_vector_store(StoreSpec {
        created_at: t - 40 * DAY,
        last_active_at: Some(t - 40 * DAY),
        name: "shared".into(),
        metadata: BTreeMap::from([("user".to_string(), "alice".to_string())]),
        ..StoreSpec::default()
    });
    uploads(&dir.0, &[(store.as_str(), "bob")]);
    let extra = format!(
        "vector_stores = true\nsubject = \"user\"\n{}",
        subject_map("vendor_file")
    );
    let cfg = config(&dir, "openai_files", &fake.base_url(), &extra);
    hold_subject(&cfg, "bob");
    let r = run_env(&cfg, &env(), &["sweep", "--apply", "--json"]);
    assert!(
        fake.vector_store_ids().contains(&store),
        "a store subject_map records as bob's, bob under a legal hold, was deleted because its metadata names alice: {}{}",
        r.stdout,
        r.stderr
    );
}

// What must be recorded exactly once.

/// A vector store that `subject_map` names for bob and whose metadata names bob too is
/// handed out twice by one erasure (connector.rs `of_subject`: once read by id, once from
/// the store listing; the listing's `seen` knows nothing of ids read by id): two DELETEs
/// race, one answered deleted, the other 404 "already gone", and the trail records two
/// deletions of one store.
#[test]
fn a_store_named_by_subject_map_and_by_its_metadata_is_erased_once() {
    let dir = Tmp::new("review2-store-twice");
    let fake = Fake::openai(KEY);
    let t = now_secs();
    let store = fake.add_vector_store(StoreSpec {
        created_at: t - DAY,
        last_active_at: Some(t - DAY),
        name: "bob".into(),
        metadata: BTreeMap::from([("user".to_string(), "bob".to_string())]),
        ..StoreSpec::default()
    });
    let file = fake.add_file(FileSpec::new("user_data", t - DAY));
    let conn = uploads(&dir.0, &[(file.as_str(), "bob")]);
    record_upload(&conn, &store, "bob");
    let extra = format!(
        "vector_stores = true\nsubject = \"user\"\n{}",
        subject_map("vendor_file")
    );
    let cfg = config(&dir, "openai_files", &fake.base_url(), &extra);
    let r = run_env(
        &cfg,
        &env(),
        &["erase", "--subject", "bob", "--apply", "--json"],
    );
    assert!(
        !fake.vector_store_ids().contains(&store),
        "{}{}",
        r.stdout,
        r.stderr
    );
    let deleted = keys_of(&cfg, "deleted");
    assert_eq!(
        deleted.iter().filter(|k| **k == store).count(),
        1,
        "one store, one deletion in the trail: {deleted:?}"
    );
}

// Listings that never end, or end for nothing.

/// An OpenAI files listing answered by the scripted server: the files (all of purpose
/// `fine-tune` unless said) sorted by id, `per_page` a page, after the `after` id; `purpose`
/// ignored, as the first review's proxy did.
fn paged(files: &BTreeMap<String, String>, q: &str, per_page: usize) -> (u16, String) {
    let after = url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == "after")
        .map(|(_, v)| v.into_owned());
    let t = now_secs();
    let rest: Vec<(&String, &String)> = files
        .iter()
        .filter(|(id, _)| after.as_ref().is_none_or(|a| *id > a))
        .collect();
    let data: Vec<Value> = rest
        .iter()
        .take(per_page)
        .map(|(id, purpose)| {
            json!({"id": id, "object": "file", "bytes": 1, "created_at": t - DAY,
                   "filename": "f.jsonl", "purpose": purpose, "status": "processed"})
        })
        .collect();
    let last = data.last().map(|f| f["id"].clone()).unwrap_or(Value::Null);
    (
        200,
        json!({"object": "list", "data": data, "last_id": last, "has_more": rest.len() > per_page})
            .to_string(),
    )
}

fn empty_list() -> (u16, String) {
    (
        200,
        json!({"object": "list", "data": [], "has_more": false}).to_string(),
    )
}

/// The guard against a listing that does not move on compares a cursor with the one just
/// used only, and counts a page as "already read" only by ids it kept (connector.rs
/// `Pages::next`): a listing whose cursors go round (after=f1 gives f2, after=f2 gives f1
/// again, as a proxy that resets an unknown cursor to the start does) over files of
/// another purpose, which are never added to `seen`, is read forever.
#[test]
fn a_listing_whose_cursors_go_round_over_foreign_files_ends_the_run() {
    let dir = Tmp::new("review2-cursor-cycle");
    let server = Scripted::start(|m, p, q| match (m, p) {
        ("GET", "/v1/files") => {
            let after = url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "after")
                .map(|(_, v)| v.into_owned());
            let (id, next) = match after.as_deref() {
                Some("file-f1") => ("file-f2", "file-f2"),
                _ => ("file-f1", "file-f1"),
            };
            let t = now_secs();
            (
                200,
                json!({"object": "list", "data": [{"id": id, "object": "file", "bytes": 1,
                       "created_at": t - DAY, "filename": "f", "purpose": "fine-tune",
                       "status": "processed"}], "last_id": next, "has_more": true})
                .to_string(),
            )
        }
        _ => empty_list(),
    });
    let cfg = config(
        &dir,
        "openai_files",
        &server.base_url(),
        r#"purposes = ["batch"]"#,
    );
    let code = run_with_limit(&cfg, &["sweep", "--json"], Duration::from_secs(30));
    assert!(
        code.is_some(),
        "a dry run over two files of another purpose was still listing after 30s ({} requests)",
        server.requests().len()
    );
    assert_eq!(code.unwrap(), Some(1));
}

/// The first review's fix for an API that ignores `purpose` (each item's own purpose is
/// checked) meets its own repeat guard: with `purposes = ["batch", "fine-tune"]` there is
/// one listing per purpose, and on such an API the second listing's first page is made of
/// files the first listing read. "A whole page of items already read" ends the target with
/// an error before anything is judged, every run: the target never sweeps anything.
#[test]
fn an_api_ignoring_purpose_with_two_purposes_and_two_pages_is_swept() {
    let dir = Tmp::new("review2-two-purposes");
    let files: BTreeMap<String, String> = (0..6)
        .map(|i| {
            (
                format!("file-{i:024}"),
                if i % 2 == 0 { "batch" } else { "fine-tune" }.to_string(),
            )
        })
        .collect();
    let server = Scripted::start(move |m, p, q| match (m, p) {
        ("GET", "/v1/files") => paged(&files, q, 2),
        _ => empty_list(),
    });
    let cfg = config(
        &dir,
        "openai_files",
        &server.base_url(),
        r#"purposes = ["batch", "fine-tune"]"#,
    );
    let r = run_env(&cfg, &env(), &["sweep", "--json"]);
    assert_eq!(
        r.code,
        Some(0),
        "six files listed over three pages by an API that ignores purpose: {}{}",
        r.stdout,
        r.stderr
    );
}

// The key.

/// A server that answers every request with a 307 to the same path and query on `to`.
fn redirector(to: String) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { break };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let head = String::from_utf8_lossy(&buf).to_string();
            let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            let _ = write!(
                s,
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: {to}{target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    format!("http://{addr}/v1")
}

/// The client follows redirects (reqwest's default policy, up to 10), and on a redirect
/// to another host reqwest drops only `Authorization`, `Cookie` and the like: Anthropic's
/// key travels in `x-api-key`, which is sent on to whatever host a redirect names (a
/// proxy's misconfiguration, a captive portal, a compromised gateway). An API client has
/// no redirect to follow: the key must reach only `base_url`'s host.
#[test]
fn the_anthropic_key_is_never_sent_to_a_host_a_redirect_names() {
    let dir = Tmp::new("review2-redirect");
    let elsewhere = Fake::anthropic(KEY);
    elsewhere.add_file(FileSpec::new("", now_secs() - DAY));
    let base = redirector(format!("http://{}", host_of(&elsewhere.base_url())));
    let cfg = config(&dir, "anthropic_files", &base, "max_retries = 0");
    let r = run_env(&cfg, &env(), &["sweep", "--json"]);
    let leaked: Vec<String> = elsewhere
        .requests()
        .iter()
        .filter(|l| l.headers.get("x-api-key").map(String::as_str) == Some("<valid key>"))
        .map(|l| format!("{} {}", l.method, l.path))
        .collect();
    assert!(
        leaked.is_empty(),
        "the key was sent to another host on a redirect: {leaked:?}; {}{}",
        r.stdout,
        r.stderr
    );
}

fn host_of(url: &str) -> String {
    let u = url::Url::parse(url).unwrap();
    format!("{}:{}", u.host_str().unwrap(), u.port().unwrap())
}

// What held: kept as regression tests.

/// A batch written ahead, then killed before its DELETEs; a batch job then starts on one of
/// its files: the recovering run looks the file up, sees it in use and keeps it.
#[test]
fn recovery_keeps_a_file_work_started_on_after_the_write_ahead() {
    use std::os::unix::process::ExitStatusExt;
    let dir = Tmp::new("review2-recover-in-use");
    let fake = Fake::openai(KEY);
    let t = now_secs();
    let ids = fake.add_files((0..3).map(|i| FileSpec::new("batch", t - 40 * DAY - i)));
    let cfg = config(&dir, "openai_files", &fake.base_url(), "");
    super::ensure_init_env(&cfg, &env());
    let out = super::lethe_failpoint("after_pending")
        .args(["sweep", "--apply", "--config"])
        .arg(&cfg)
        .envs(env())
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(9));
    assert_eq!(fake.file_ids().len(), 3, "killed before its deletes");
    fake.add_batch("in_progress", &ids[0], None, None);
    let r = run_env(&cfg, &env(), &["sweep", "--apply", "--json"]);
    assert!(
        fake.file_ids().contains(&ids[0]),
        "{}{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(fake.file_ids().len(), 1);
    // Judged in use twice in that run (by the recovery, then by the sweep's listing), as
    // any item a recovery keeps is.
    assert!(keys_of(&cfg, "in_use").contains(&ids[0]));
    assert!(!keys_of(&cfg, "deleted").contains(&ids[0]));
}

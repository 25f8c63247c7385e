//! One conformance suite that every connector passes: SQLite and PostgreSQL tables,
//! filesystem trees, `file://` object stores, S3 (moto), Azure Blob (Azurite), OpenAI and
//! Anthropic files (their fakes, subjects through `subject_map`), and the toy `jsonl`
//! connector (feature `jsonl-connector`) that shows what adding one takes.
//!
//! Each connector has a [`Harness`]: a fresh place in its store (a table, a directory, a
//! bucket or container) with its own `lethe.toml` and state, and the means to read the
//! store directly (never through Lethe), to remove an item behind Lethe's back, to make one
//! item's delete fail and to make the store unable to answer for one item. The same points
//! then run against every harness and assert on what the store holds and on the audit
//! trail, through the `Connector` trait (`open_source`) and through the `lethe` binary:
//!
//! 1. paging: `candidates` until a short page names every due item exactly once;
//! 2. lookups: one answer per key, in order: `Found` (the right key) or `Gone`;
//! 3. per-key deletes: existing items `Deleted` and gone, missing ones never `Deleted`,
//!    every other item untouched;
//! 4. an item that vanishes between its listing and its deletion is recorded as the
//!    store answered (never `deleted` unless it said `Deleted`/`AlreadyGone`) and the
//!    sweep goes on;
//! 5. a delete the store refuses: reported failed (exit 1, a `failed` entry), the item
//!    kept, every other due item deleted;
//! 6. a sweep killed after deleting is finished by the next run, each deletion recorded
//!    once; an item the store cannot answer for at recovery keeps its batch pending until
//!    the store answers again;
//! 7. a dry run changes nothing in the store and records no deletion;
//!
//! and the subjects capability: a connector that declares it finds exactly one subject's
//! items; one that does not is never asked, and an erasure says so.
//!
//! One test per connector runs every point (one server for all of them); a point that
//! fails is reported by name and the others still run. A point a store cannot support is
//! said so explicitly by its harness (an `Err` with the reason) and printed, never passed
//! in silence.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::process::ExitStatusExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use lethe_core::time::Timestamp;
use lethe_ops::targets::objects::ObjectStoreTarget;
use lethe_ops::targets::{Connector, Deletion, Key, Lookup};
use object_store::ObjectStore;
use object_store::path::Path as ObjPath;
use rusqlite::Connection;
use serde_json::Value;

use crate::objects::{
    AZ_ACCOUNT, AZ_KEY, Flaky, S3_CREDS, Server, az_create_container, az_request, azurite,
    flaky_proxy, http, moto, put_all, rt,
};
use crate::pg::PgCluster;
use crate::*;

/// Items seeded per point: more than two pages of due items.
const N: usize = 31;
/// The page size asked of `candidates`, and the sweeps' batch size.
const LIMIT: usize = 10;
/// The data subject of the subject points, and the items that are theirs (due and not).
const SUBJECT: &str = "user-7";
const SUBJECT_ITEMS: [usize; 3] = [3, 4, 17];
/// An item never seeded.
const NEVER: usize = 99;
const AUDIT_KEY_ENV: &str = "LETHE_TEST_AUDIT_KEY";

/// One seeded item: past its window (`due`) or within it, and whose it is.
struct Item {
    i: usize,
    due: bool,
    subject: String,
}

/// Every fifth item is within its window; the rest are due.
fn items() -> Vec<Item> {
    (0..N)
        .map(|i| Item {
            i,
            due: i % 5 != 4,
            subject: if SUBJECT_ITEMS.contains(&i) {
                SUBJECT.to_string()
            } else {
                format!("user-{}", i % 3)
            },
        })
        .collect()
}

/// The points, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Point {
    Paging,
    Lookups,
    Deletes,
    Vanished,
    FailingDelete,
    Crash,
    DryRun,
    Subjects,
}

impl Point {
    const ALL: [Point; 8] = [
        Point::Paging,
        Point::Lookups,
        Point::Deletes,
        Point::Vanished,
        Point::FailingDelete,
        Point::Crash,
        Point::DryRun,
        Point::Subjects,
    ];

    /// A name usable in a table, bucket or container name.
    fn slug(self) -> &'static str {
        match self {
            Point::Paging => "paging",
            Point::Lookups => "lookups",
            Point::Deletes => "deletes",
            Point::Vanished => "vanished",
            Point::FailingDelete => "failing",
            Point::Crash => "crash",
            Point::DryRun => "dryrun",
            Point::Subjects => "subjects",
        }
    }
}

/// What happens to an item removed behind Lethe's back after its batch was read and
/// written ahead, before Lethe deletes it.
enum Vanished {
    /// The sweep records it with this action (`deleted` when the store answers
    /// `Deleted`/`AlreadyGone` for it, `failed` when it cannot confirm removing it).
    Recorded(&'static str),
    /// The store cannot let it happen (why): the removal behind Lethe's back is refused
    /// while the sweep holds the batch.
    Impossible(&'static str),
}

/// One connector in one fresh place of its store, with a config whose only target is it.
trait Harness {
    /// The `lethe.toml` of this place; its state is under the same directory.
    fn config(&self) -> &Path;
    /// Credentials the store needs, as environment variables: given to each `lethe`
    /// process and, as the target's options, to the connector opened in-process.
    fn env(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    /// Item `i`'s key as the store names it (and the trail records it).
    fn name(&self, i: usize) -> String;
    /// A key as the connector takes it.
    fn key(&self, name: &str) -> Key {
        Key::Text(name.to_string())
    }
    /// Writes the items: due ones past their window, the others well within it.
    fn seed(&mut self, items: &[Item]);
    /// Every item of the target in the store now, read directly: key -> a fingerprint of
    /// its bytes and facts (a dry run must leave each one as it was).
    fn contents(&mut self) -> BTreeMap<String, String>;
    /// Removes an item behind Lethe's back; `Err` with the store's refusal.
    fn remove(&mut self, name: &str) -> Result<(), String>;
    /// Makes deleting this (seeded) item fail; `Err(why)` when the store has no way.
    fn make_delete_fail(&mut self, name: &str) -> Result<(), &'static str>;
    /// Makes the store unable to answer a lookup of this item until `answer_again`;
    /// `Err(why)` when there is no natural way.
    fn cannot_answer(&mut self, name: &str) -> Result<(), &'static str>;
    fn answer_again(&mut self);
    /// What a sweep does with an item that vanishes between its listing and its deletion.
    fn vanished(&self) -> Vanished;
    /// `Err(why)` when `Connector::delete` called on its own is not a deletion for this
    /// connector; deletion is then checked through the engine (the CLI) instead.
    fn trait_delete(&self) -> Result<(), &'static str> {
        Ok(())
    }
    /// The `lethe` command this harness runs.
    fn lethe(&self) -> Command {
        lethe()
    }
}

/// Runs every point against fresh places of one connector; fails naming the points that
/// failed (their own panics say why, above).
fn conform<H: Harness>(connector: &str, make: impl Fn(Point) -> H) {
    let mut failed = Vec::new();
    for point in Point::ALL {
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut h = make(point);
            run_point(point, &mut h)
        }));
        let secs = started.elapsed().as_secs_f64();
        match outcome {
            Ok(notes) => {
                eprintln!("[{connector}] {point:?}: passed in {secs:.1}s");
                for n in notes {
                    eprintln!("[{connector}] {point:?}: NOT EXERCISED: {n}");
                }
            }
            Err(_) => {
                eprintln!("[{connector}] {point:?}: FAILED after {secs:.1}s");
                failed.push(point);
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{connector} fails conformance points {failed:?} (see their panics above)"
    );
}

/// Runs one point; returns what it could not exercise on this connector, and why.
fn run_point<H: Harness>(point: Point, h: &mut H) -> Vec<String> {
    match point {
        Point::Paging => paging(h),
        Point::Lookups => lookups(h),
        Point::Deletes => deletes(h),
        Point::Vanished => vanished(h),
        Point::FailingDelete => return failing_delete(h),
        Point::Crash => return crash(h),
        Point::DryRun => dry_run(h),
        Point::Subjects => subjects(h),
    }
    Vec::new()
}

// ---------------------------------------------------------------------------------------
// What every point shares.

fn all_names<H: Harness>(h: &H) -> BTreeSet<String> {
    (0..N).map(|i| h.name(i)).collect()
}

fn due_names<H: Harness>(h: &H) -> BTreeSet<String> {
    items()
        .iter()
        .filter(|it| it.due)
        .map(|it| h.name(it.i))
        .collect()
}

fn kept_names<H: Harness>(h: &H) -> BTreeSet<String> {
    items()
        .iter()
        .filter(|it| !it.due)
        .map(|it| h.name(it.i))
        .collect()
}

/// Seeds every item and checks the store holds exactly them.
fn seed<H: Harness>(h: &mut H) -> BTreeMap<String, String> {
    h.seed(&items());
    let contents = h.contents();
    assert_eq!(
        contents.keys().cloned().collect::<BTreeSet<_>>(),
        all_names(h),
        "the store does not hold what was seeded"
    );
    contents
}

/// `contents` restricted to `names`.
fn only(c: &BTreeMap<String, String>, names: &BTreeSet<String>) -> BTreeMap<String, String> {
    c.iter()
        .filter(|(k, _)| names.contains(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The target opened in-process, as the engine opens it.
fn open<H: Harness>(h: &H, write: bool) -> Box<dyn Connector> {
    let loaded = lethe_ops::settings::load(Some(h.config())).unwrap();
    let mut target = loaded.config.targets[0].clone();
    // Credentials are refused in a config file; the lethe process reads them from its
    // environment, this one is given them as options.
    if let Some(o) = target.spec::<ObjectStoreTarget>() {
        let mut o = o.clone();
        for (k, v) in h.env() {
            o.options.insert(k.to_ascii_lowercase(), v.to_string());
        }
        target.spec = std::sync::Arc::new(o);
    }
    match lethe_ops::targets::open_source(&target, &loaded.base, write) {
        Some(Ok(c)) => c,
        Some(Err(e)) => panic!("cannot open the target: {e:#}"),
        None => panic!("open_source does not serve this target"),
    }
}

fn now() -> Timestamp {
    Timestamp::from_unix_seconds(now_secs()).unwrap()
}

fn env_of<H: Harness>(h: &H) -> Vec<(&'static str, &'static str)> {
    let mut env = vec![(AUDIT_KEY_ENV, "the conformance suite's audit key")];
    env.extend_from_slice(h.env());
    env
}

/// `lethe ARGS --config CONFIG` through the harness's command, once the state exists.
fn cli<H: Harness>(h: &H, args: &[&str]) -> Run {
    let env = env_of(h);
    ensure_init_env(h.config(), &env);
    let out = h
        .lethe()
        .args(args)
        .arg("--config")
        .arg(h.config())
        .envs(env)
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The harness's `lethe` with the crash tests' hook armed at `point`.
fn failpoint<H: Harness>(h: &H, point: &str) -> Command {
    // Fails the test, saying how to build one, when the binary has no hook.
    drop(lethe_failpoint(point));
    let env = env_of(h);
    ensure_init_env(h.config(), &env);
    let mut c = h.lethe();
    c.env("LETHE_FAILPOINT", point).envs(env);
    c
}

/// `sweep --apply --json` in batches of a page, each batch its own transaction.
fn sweep_apply<H: Harness>(h: &H) -> Run {
    let l = LIMIT.to_string();
    cli(
        h,
        &[
            "sweep",
            "--apply",
            "--json",
            "--no-progress",
            "--batch-size",
            &l,
            "--rows-per-commit",
            &l,
        ],
    )
}

fn said(r: &Run) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        r.code, r.stdout, r.stderr
    )
}

/// The target's line of a sweep's JSON report.
fn report(r: &Run) -> Value {
    r.json()["targets"][0].clone()
}

/// Every entry of the trail about an item: item key -> actions, in order.
fn trail<H: Harness>(h: &H) -> BTreeMap<String, Vec<String>> {
    let r = cli(h, &["audit", "export", "--format", "jsonl"]);
    assert_eq!(r.code, Some(0), "audit export: {}", said(&r));
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in r.stdout.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        if let (Some(k), Some(a)) = (e["item_key"].as_str(), e["action"].as_str()) {
            out.entry(k.to_string()).or_default().push(a.to_string());
        }
    }
    out
}

/// The items with `action` entries, and how many each.
fn with_action(trail: &BTreeMap<String, Vec<String>>, action: &str) -> BTreeMap<String, usize> {
    trail
        .iter()
        .filter_map(|(k, acts)| {
            let n = acts.iter().filter(|a| *a == action).count();
            (n > 0).then(|| (k.clone(), n))
        })
        .collect()
}

fn once(names: &BTreeSet<String>) -> BTreeMap<String, usize> {
    names.iter().map(|n| (n.clone(), 1)).collect()
}

fn verify<H: Harness>(h: &H) {
    let v = cli(h, &["audit", "verify"]);
    assert_eq!(v.code, Some(0), "audit verify: {}", said(&v));
}

/// The keys of the deletions written ahead and not yet recorded, batch by batch.
fn pending<H: Harness>(h: &H) -> Vec<Vec<String>> {
    let p = h
        .config()
        .parent()
        .unwrap()
        .join("state/lethe-state.db.pending");
    if !p.exists() {
        return Vec::new();
    }
    let c = Connection::open(p).unwrap();
    let mut st = c
        .prepare("SELECT payload FROM pending ORDER BY id")
        .unwrap();
    let payloads: Vec<String> = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    payloads
        .iter()
        .map(|p| {
            let items: Vec<Value> = serde_json::from_str(p).unwrap();
            items
                .iter()
                .map(|it| match &it["k"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .collect()
}

/// A child process killed and reaped when dropped, unless taken out to be waited for.
struct Reaped(Option<std::process::Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether a process is stopped (SIGSTOP).
fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('T'))
        })
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------
// The points.

/// 1. `candidates` until a short page: every due item exactly once, across several pages,
///    and nothing that was not seeded. (A connector may also list items that are not due:
///    the SQL ones filter in SQL, the others list everything and the engine judges.)
fn paging<H: Harness>(h: &mut H) {
    seed(h);
    let mut c = open(h, false);
    let now = now();
    let mut seen: Vec<String> = Vec::new();
    let mut pages = Vec::new();
    loop {
        let page = c.candidates(now, LIMIT).unwrap();
        assert!(page.len() <= LIMIT, "a page of {} > limit", page.len());
        pages.push(page.len());
        for r in &page {
            assert!(r.problem.is_none(), "a seeded item has a problem: {r:?}");
            seen.push(r.key.clone().unwrap().to_string());
        }
        if page.len() < LIMIT {
            break;
        }
        assert!(pages.len() < 50, "the pages never end: {pages:?}");
    }
    let distinct: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(distinct.len(), seen.len(), "an item came twice: {seen:?}");
    let due = due_names(h);
    let missing: Vec<&String> = due.difference(&distinct).collect();
    assert!(missing.is_empty(), "due items never listed: {missing:?}");
    let all = all_names(h);
    let unknown: Vec<&String> = distinct.difference(&all).collect();
    assert!(unknown.is_empty(), "listed items never seeded: {unknown:?}");
    assert!(pages.len() >= 3, "the due items span pages: {pages:?}");
}

/// 2. One answer per key, in the order asked: seeded items `Found` with their own key,
///    an item removed behind Lethe's back and one never seeded `Gone`.
fn lookups<H: Harness>(h: &mut H) {
    seed(h);
    let removed = h.name(5);
    h.remove(&removed).unwrap();
    let asked: Vec<(String, bool)> = vec![
        (h.name(12), true),
        (removed, false),
        (h.name(0), true),
        (h.name(NEVER), false),
        (h.name(29), true),
        (h.name(4), true),
    ];
    let keys: Vec<Key> = asked.iter().map(|(n, _)| h.key(n)).collect();
    let mut c = open(h, false);
    let answers = c.lookup(&keys).unwrap();
    assert_eq!(answers.len(), keys.len(), "one answer per key");
    for ((name, exists), a) in asked.iter().zip(&answers) {
        match (exists, a) {
            (true, Lookup::Found(row)) => {
                assert_eq!(
                    row.key.as_ref().map(|k| k.to_string()).as_deref(),
                    Ok(name.as_str()),
                    "found under another key"
                )
            }
            (false, Lookup::Gone) => {}
            _ => panic!("lookup of {name} (exists: {exists}) answered {a:?}"),
        }
    }
}

/// 3. Deleting a mix by key: existing items (due or not: `delete` does not judge) are
///    `Deleted` and gone from the store; a removed one and a never-seeded one are never
///    `Deleted`; every item not named is untouched. Like the engine, the items are read
///    (`lookup`) before they are deleted, in the same transaction when there is one: a
///    connector may delete only what it read (an object's judged version, a row's).
fn deletes<H: Harness>(h: &mut H) {
    let seeded = seed(h);
    let removed = h.name(5);
    h.remove(&removed).unwrap();
    if let Err(why) = h.trait_delete() {
        // The deletion through the engine instead: every due item goes, nothing else.
        eprintln!(
            "deletes: `Connector::delete` alone is not a deletion here ({why}); checked through a sweep"
        );
        let r = sweep_apply(h);
        assert_eq!(r.code, Some(0), "{}", said(&r));
        let mut due = due_names(h);
        due.remove(&removed);
        assert_eq!(report(&r)["deleted"], due.len(), "{}", said(&r));
        assert_eq!(h.contents(), only(&seeded, &kept_names(h)));
        assert_eq!(with_action(&trail(h), "deleted"), once(&due));
        return;
    }
    let existing = [h.name(0), h.name(7), h.name(4)];
    let mix: Vec<(String, bool)> = vec![
        (existing[0].clone(), true),
        (removed.clone(), false),
        (existing[1].clone(), true),
        (h.name(NEVER), false),
        (existing[2].clone(), true),
    ];
    let keys: Vec<Key> = mix.iter().map(|(n, _)| h.key(n)).collect();
    let mut c = open(h, true);
    let txn = c.capabilities().transactions;
    if txn {
        c.begin().unwrap();
    }
    let looked = c.lookup(&keys).unwrap();
    assert_eq!(looked.len(), keys.len());
    let answers = c.delete(&keys).unwrap();
    if txn {
        c.commit().unwrap();
    }
    assert_eq!(answers.len(), keys.len(), "one answer per key");
    for ((name, exists), a) in mix.iter().zip(&answers) {
        if *exists {
            assert_eq!(a, &Deletion::Deleted, "{name}");
        } else {
            assert_ne!(
                a,
                &Deletion::Deleted,
                "{name} did not exist, yet the connector says it removed it"
            );
        }
    }
    let mut expected = seeded;
    expected.remove(&removed);
    for n in &existing {
        expected.remove(n);
    }
    assert_eq!(
        h.contents(),
        expected,
        "deleted exactly the existing items named"
    );
}

/// 4. An item removed behind Lethe's back after its batch was read, judged and written
///    ahead (the sweep stopped there with SIGSTOP), before Lethe deletes it: it is recorded
///    as the store answered, never `deleted` unless the store said so; every other due
///    item is deleted and recorded once; the items within their window stay.
fn vanished<H: Harness>(h: &mut H) {
    let seeded = seed(h);
    let l = LIMIT.to_string();
    let child = failpoint(h, "after_pending:1:stop")
        .args([
            "sweep",
            "--apply",
            "--json",
            "--no-progress",
            "--batch-size",
            &l,
            "--rows-per-commit",
            &l,
            "--config",
        ])
        .arg(h.config())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Killed if this point fails while the sweep is stopped: never left behind.
    let mut guard = Reaped(Some(child));
    let child = guard.0.as_mut().unwrap();
    let started = Instant::now();
    while !is_stopped(child.id()) {
        if let Some(status) = child.try_wait().unwrap() {
            let out = guard.0.take().unwrap().wait_with_output().unwrap();
            panic!(
                "the sweep ended ({status}) before its first batch was written ahead: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the sweep never stopped"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // An item of the batch in flight, in its middle.
    let batch = pending(h)
        .into_iter()
        .next()
        .expect("a batch written ahead");
    let victim = batch[batch.len() / 2].clone();
    let removal = h.remove(&victim);
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    let out = guard.0.take().unwrap().wait_with_output().unwrap();
    let r = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    let trail = trail(h);
    let due = due_names(h);
    let mut others = due.clone();
    others.remove(&victim);
    let deleted = with_action(&trail, "deleted");
    let victim_entries = trail.get(&victim).cloned().unwrap_or_default();
    match h.vanished() {
        Vanished::Recorded(action) => {
            removal.unwrap_or_else(|e| panic!("the removal behind Lethe's back failed: {e}"));
            assert_eq!(
                victim_entries,
                vec![action.to_string()],
                "the vanished item {victim}: {}",
                said(&r)
            );
            let failed = usize::from(action == "failed");
            assert_eq!(
                r.code,
                Some(if failed == 1 { 1 } else { 0 }),
                "{}",
                said(&r)
            );
            let t = report(&r);
            assert_eq!(t["failed"], failed, "{}", said(&r));
            assert_eq!(t["deleted"], due.len() - failed, "{}", said(&r));
        }
        Vanished::Impossible(why) => {
            eprintln!("vanished: cannot happen here ({why}); checked that it is refused");
            assert!(
                removal.is_err(),
                "the store let the item go behind a sweep that said it could not: {why}"
            );
            assert_eq!(r.code, Some(0), "{}", said(&r));
            assert_eq!(victim_entries, vec!["deleted".to_string()]);
        }
    }
    for n in &others {
        assert_eq!(deleted.get(n), Some(&1), "deletion entries of {n}");
    }
    assert!(
        deleted.keys().all(|k| due.contains(k)),
        "an item within its window was recorded deleted: {deleted:?}"
    );
    assert_eq!(h.contents(), only(&seeded, &kept_names(h)));
    assert!(pending(h).is_empty(), "nothing left pending");
    verify(h);
}

/// 5. One item whose delete the store refuses: reported failed (exit 1, the JSON count, a
///    `failed` entry and no `deleted` one), kept as it was; every other due item deleted.
fn failing_delete<H: Harness>(h: &mut H) -> Vec<String> {
    seed(h);
    let victim = h.name(7);
    if let Err(why) = h.make_delete_fail(&victim) {
        return vec![format!("no way to make a delete fail: {why}")];
    }
    let seeded = h.contents();
    let r = sweep_apply(h);
    assert_eq!(r.code, Some(1), "{}", said(&r));
    let t = report(&r);
    let due = due_names(h);
    assert_eq!(t["failed"], 1, "{}", said(&r));
    assert_eq!(t["deleted"], due.len() - 1, "{}", said(&r));
    let mut left = kept_names(h);
    left.insert(victim.clone());
    assert_eq!(
        h.contents(),
        only(&seeded, &left),
        "only the refused item is kept"
    );
    let trail = trail(h);
    assert_eq!(
        trail.get(&victim).cloned().unwrap_or_default(),
        vec!["failed".to_string()],
        "{victim}"
    );
    let mut others = due;
    others.remove(&victim);
    assert_eq!(with_action(&trail, "deleted"), once(&others));
    verify(h);
    Vec::new()
}

/// 6. Killed after its first batch was deleted, before that batch reached the trail: the
///    next run records each of those deletions once and finishes the rest. Before that, a
///    run during which the store cannot answer for one of them records none of them (the
///    batch stays pending, the run reports the error).
fn crash<H: Harness>(h: &mut H) -> Vec<String> {
    let mut notes = Vec::new();
    let seeded = seed(h);
    let l = LIMIT.to_string();
    let out = failpoint(h, "after_delete")
        .args([
            "sweep",
            "--apply",
            "--no-progress",
            "--batch-size",
            &l,
            "--rows-per-commit",
            &l,
            "--config",
        ])
        .arg(h.config())
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "the failpoint kills the sweep: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after_kill = h.contents();
    let gone: BTreeSet<String> = all_names(h)
        .into_iter()
        .filter(|n| !after_kill.contains_key(n))
        .collect();
    let due = due_names(h);
    assert!(
        !gone.is_empty(),
        "the first batch was deleted before the kill"
    );
    assert!(
        gone.is_subset(&due),
        "deleted an item within its window: {gone:?}"
    );
    assert!(
        with_action(&trail(h), "deleted").is_empty(),
        "killed before recording"
    );
    let written_ahead: BTreeSet<String> = pending(h).into_iter().flatten().collect();
    assert!(
        gone.is_subset(&written_ahead),
        "deleted without being written ahead: {gone:?} vs {written_ahead:?}"
    );

    let victim = gone.iter().next().unwrap().clone();
    match h.cannot_answer(&victim) {
        Ok(()) => {
            let r = sweep_apply(h);
            h.answer_again();
            eprintln!(
                "crash: the run while the store could not answer: {}",
                said(&r)
            );
            assert_eq!(r.code, Some(1), "the run reports the error: {}", said(&r));
            assert!(
                with_action(&trail(h), "deleted").is_empty(),
                "recorded a deletion the store did not confirm: {}",
                said(&r)
            );
            assert_eq!(h.contents(), after_kill, "the run went on regardless");
            let still: BTreeSet<String> = pending(h).into_iter().flatten().collect();
            assert!(
                gone.is_subset(&still),
                "the batch is no longer pending: {still:?}"
            );
        }
        Err(why) => notes.push(format!("no way to make the store unable to answer: {why}")),
    }

    let r = sweep_apply(h);
    assert_eq!(r.code, Some(0), "{}", said(&r));
    assert_eq!(h.contents(), only(&seeded, &kept_names(h)));
    assert_eq!(
        with_action(&trail(h), "deleted"),
        once(&due),
        "one deletion entry per deleted item"
    );
    assert!(pending(h).is_empty(), "nothing left pending");
    verify(h);
    notes
}

/// 7. A dry run: the store is exactly as it was (every item, every byte and fact the
///    witness reads), no deletion recorded, and it says what it would delete.
fn dry_run<H: Harness>(h: &mut H) {
    let before = seed(h);
    let r = cli(h, &["sweep", "--json", "--no-progress"]);
    assert_eq!(r.code, Some(0), "{}", said(&r));
    let t = report(&r);
    let due = due_names(h);
    assert_eq!(t["found"], due.len(), "{}", said(&r));
    assert_eq!(t["deleted"], 0, "{}", said(&r));
    assert_eq!(h.contents(), before, "a dry run changed the store");
    let trail = trail(h);
    assert!(with_action(&trail, "deleted").is_empty());
    assert_eq!(with_action(&trail, "would_delete"), once(&due));
}

/// The subjects capability: declared, `of_subject` pages through exactly that subject's
/// items and an erasure deletes exactly them; not declared, the connector is never asked
/// and an erasure that reaches the target reports it failed (or finds no target at all),
/// deleting nothing.
fn subjects<H: Harness>(h: &mut H) {
    let seeded = seed(h);
    let mut c = open(h, false);
    let theirs: BTreeSet<String> = SUBJECT_ITEMS.iter().map(|&i| h.name(i)).collect();
    let erase = |h: &H| cli(h, &["erase", "--subject", SUBJECT, "--apply", "--json"]);
    if c.capabilities().subjects {
        let mut seen = Vec::new();
        loop {
            let page = c.of_subject(SUBJECT, 2).unwrap();
            assert!(page.len() <= 2);
            seen.extend(page.iter().map(|r| r.key.clone().unwrap().to_string()));
            if page.len() < 2 {
                break;
            }
            assert!(seen.len() < 100, "the pages never end");
        }
        let distinct: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(distinct.len(), seen.len(), "an item came twice: {seen:?}");
        assert_eq!(distinct, theirs, "of_subject");
        drop(c);

        let r = erase(h);
        assert_eq!(r.code, Some(0), "{}", said(&r));
        assert_eq!(report(&r)["deleted"], theirs.len(), "{}", said(&r));
        let left: BTreeSet<String> = all_names(h).difference(&theirs).cloned().collect();
        assert_eq!(h.contents(), only(&seeded, &left));
        assert_eq!(with_action(&trail(h), "deleted"), once(&theirs));
    } else {
        drop(c);
        let r = erase(h);
        // The engine never calls `of_subject` on such a connector: an erasure either finds
        // no target that maps a subject (bad usage), or reports this one failed.
        match r.code {
            Some(2) => assert!(r.stderr.contains("maps a subject"), "{}", said(&r)),
            Some(1) => {
                let t = report(&r);
                assert!(
                    t["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("cannot find a subject's items")),
                    "{}",
                    said(&r)
                );
                assert_eq!(t["deleted"], 0);
            }
            _ => panic!("an erasure through a target without subjects: {}", said(&r)),
        }
        assert_eq!(h.contents(), seeded, "the erasure touched the store");
        assert!(with_action(&trail(h), "deleted").is_empty());
    }
}

// ---------------------------------------------------------------------------------------
// The harnesses.

/// A place's config: the state under `state/`, one category, and the target.
fn write_config(dir: &Tmp, target: &str) -> PathBuf {
    let cfg = dir.path("lethe.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[state]
url = "sqlite://state/lethe-state.db"

[audit]
key_env = "{AUDIT_KEY_ENV}"

[categories.conformance]
retention = "30d"

[[targets]]
name = "items"
category = "conformance"
{target}
"#
        ),
    )
    .unwrap();
    cfg
}

/// How old an item is: well past the 30-day window, or well within it.
fn age_days(due: bool) -> i64 {
    if due { 40 } else { 1 }
}

// SQLite ----------------------------------------------------------------------------------

struct SqlitePlace {
    dir: Tmp,
    cfg: PathBuf,
    /// A connection holding the database's exclusive lock (`cannot_answer`).
    lock: Option<Connection>,
}

impl SqlitePlace {
    fn new(point: Point) -> SqlitePlace {
        let dir = Tmp::new(&format!("conf-sqlite-{}", point.slug()));
        Connection::open(dir.path("data.db"))
            .unwrap()
            .execute_batch(
                "CREATE TABLE items (id INTEGER PRIMARY KEY, user_id TEXT, created_at TEXT NOT NULL, payload TEXT NOT NULL)",
            )
            .unwrap();
        let cfg = write_config(
            &dir,
            r#"type = "sql"
url = "sqlite://data.db"
table = "items"
key = "id"
created_at = "created_at"
subject = "user_id"
lock_timeout = "1s""#,
        );
        SqlitePlace {
            dir,
            cfg,
            lock: None,
        }
    }

    fn conn(&self) -> Connection {
        let c = Connection::open(self.dir.path("data.db")).unwrap();
        c.busy_timeout(Duration::from_millis(300)).unwrap();
        c
    }
}

impl Harness for SqlitePlace {
    fn config(&self) -> &Path {
        &self.cfg
    }
    fn name(&self, i: usize) -> String {
        (i + 1).to_string()
    }
    fn key(&self, name: &str) -> Key {
        Key::Int(name.parse().unwrap())
    }
    fn seed(&mut self, items: &[Item]) {
        let c = self.conn();
        for it in items {
            c.execute(
                "INSERT INTO items (id, user_id, created_at, payload) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![
                    it.i as i64 + 1,
                    it.subject,
                    naive(age_days(it.due) * DAY),
                    format!("item {}", it.i)
                ],
            )
            .unwrap();
        }
    }
    fn contents(&mut self) -> BTreeMap<String, String> {
        let c = self.conn();
        let mut st = c
            .prepare("SELECT id, user_id, created_at, payload FROM items")
            .unwrap();
        st.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?.to_string(),
                format!(
                    "{:?}|{}|{}",
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?
                ),
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }
    fn remove(&mut self, name: &str) -> Result<(), String> {
        match self.conn().execute(
            "DELETE FROM items WHERE id = ?1",
            [name.parse::<i64>().unwrap()],
        ) {
            Ok(1) => Ok(()),
            Ok(n) => Err(format!("{n} rows removed")),
            Err(e) => Err(e.to_string()),
        }
    }
    fn make_delete_fail(&mut self, name: &str) -> Result<(), &'static str> {
        self.conn()
            .execute_batch(&format!(
                "CREATE TRIGGER keep_one BEFORE DELETE ON items WHEN OLD.id = {name}
                 BEGIN SELECT RAISE(ABORT, 'row {name} is kept by a trigger'); END;"
            ))
            .unwrap();
        Ok(())
    }
    /// The application holds the database's write lock past `lock_timeout` (readers still
    /// read): recovery cannot lock the database to look its batch up.
    fn cannot_answer(&mut self, _name: &str) -> Result<(), &'static str> {
        let c = self.conn();
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        self.lock = Some(c);
        Ok(())
    }
    fn answer_again(&mut self) {
        if let Some(c) = self.lock.take() {
            c.execute_batch("ROLLBACK").unwrap();
        }
    }
    fn vanished(&self) -> Vanished {
        Vanished::Impossible(
            "a batch is read inside BEGIN IMMEDIATE, which holds the database's write lock until its deletions commit: no writer can remove a row in between",
        )
    }
}

#[test]
fn sqlite_conforms() {
    conform("sqlite", SqlitePlace::new);
}

// PostgreSQL ------------------------------------------------------------------------------

struct PgPlace<'a> {
    pg: &'a PgCluster,
    _dir: Tmp,
    cfg: PathBuf,
    table: String,
    /// A session holding the table's ACCESS EXCLUSIVE lock (`cannot_answer`).
    lock: Option<postgres::Client>,
}

impl<'a> PgPlace<'a> {
    fn new(pg: &'a PgCluster, point: Point) -> PgPlace<'a> {
        let dir = Tmp::new(&format!("conf-pg-{}", point.slug()));
        let table = format!("items_{}", point.slug());
        pg.client("conf")
            .batch_execute(&format!(
                "CREATE TABLE {table} (id bigint PRIMARY KEY, user_id text, created_at timestamptz NOT NULL, payload text NOT NULL)"
            ))
            .unwrap();
        let cfg = write_config(
            &dir,
            &format!(
                r#"type = "sql"
url = "{}"
table = "{table}"
key = "id"
created_at = "created_at"
subject = "user_id"
lock_timeout = "1s""#,
                pg.url("conf")
            ),
        );
        PgPlace {
            pg,
            _dir: dir,
            cfg,
            table,
            lock: None,
        }
    }
}

impl Harness for PgPlace<'_> {
    fn config(&self) -> &Path {
        &self.cfg
    }
    fn name(&self, i: usize) -> String {
        (i + 1).to_string()
    }
    fn seed(&mut self, items: &[Item]) {
        let mut c = self.pg.client("conf");
        for it in items {
            c.execute(
                &format!(
                    "INSERT INTO {} (id, user_id, created_at, payload) VALUES ($1, $2, now() - make_interval(days => $3), $4)",
                    self.table
                ),
                &[
                    &(it.i as i64 + 1),
                    &it.subject,
                    &(age_days(it.due) as i32),
                    &format!("item {}", it.i),
                ],
            )
            .unwrap();
        }
    }
    fn contents(&mut self) -> BTreeMap<String, String> {
        self.pg
            .client("conf")
            .query(
                &format!("SELECT id::text, t::text FROM {} t", self.table),
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }
    fn remove(&mut self, name: &str) -> Result<(), String> {
        let n = self
            .pg
            .client("conf")
            .execute(
                &format!("DELETE FROM {} WHERE id = $1", self.table),
                &[&name.parse::<i64>().unwrap()],
            )
            .map_err(|e| e.to_string())?;
        if n == 1 {
            Ok(())
        } else {
            Err(format!("{n} rows removed"))
        }
    }
    fn make_delete_fail(&mut self, name: &str) -> Result<(), &'static str> {
        let t = &self.table;
        self.pg
            .client("conf")
            .batch_execute(&format!(
                "CREATE FUNCTION {t}_keep() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN
                   IF OLD.id = {name} THEN RAISE EXCEPTION 'row {name} is kept by a trigger'; END IF;
                   RETURN OLD;
                 END $$;
                 CREATE TRIGGER keep_one BEFORE DELETE ON {t} FOR EACH ROW EXECUTE FUNCTION {t}_keep();"
            ))
            .unwrap();
        Ok(())
    }
    /// The application holds the table's ACCESS EXCLUSIVE lock past `lock_timeout`.
    fn cannot_answer(&mut self, _name: &str) -> Result<(), &'static str> {
        let mut c = self.pg.client("conf");
        c.batch_execute(&format!(
            "BEGIN; LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            self.table
        ))
        .unwrap();
        self.lock = Some(c);
        Ok(())
    }
    fn answer_again(&mut self) {
        if let Some(mut c) = self.lock.take() {
            c.batch_execute("ROLLBACK").unwrap();
        }
    }
    /// Read and deleted in separate statements (READ COMMITTED): a row deleted in between
    /// is not among those the DELETE returns, so it is not confirmed removed.
    fn vanished(&self) -> Vanished {
        Vanished::Recorded("failed")
    }
}

#[test]
fn postgres_conforms() {
    let pg = PgCluster::start();
    pg.create_db("conf");
    conform("postgres", |p| PgPlace::new(&pg, p));
}

// Filesystem trees and file:// object stores -----------------------------------------------

struct FsPlace {
    /// Removed when dropped, after the directories made read-only are writable again.
    _dir: Tmp,
    cfg: PathBuf,
    root: PathBuf,
    /// Directories made read-only (`make_delete_fail`), made writable again when dropped.
    locked: Vec<PathBuf>,
    /// A directory standing where a file was (`cannot_answer`).
    blocked: Option<PathBuf>,
}

impl FsPlace {
    /// A `filesystem` target, or with `file_url` an `object_store` target at `file://`.
    fn new(point: Point, file_url: bool) -> FsPlace {
        let kind = if file_url { "file" } else { "fs" };
        let dir = Tmp::new(&format!("conf-{kind}-{}", point.slug()));
        let root = dir.path("tree");
        std::fs::create_dir_all(&root).unwrap();
        let target = if file_url {
            // No `subject`: a file:// store's files carry no metadata to name one, and the
            // config refuses it (tests/config.rs in lethe-ops).
            format!(
                "type = \"object_store\"\nurl = \"file://{}\"",
                root.display()
            )
        } else {
            "type = \"filesystem\"\nroot = \"tree\"".to_string()
        };
        let cfg = write_config(&dir, &target);
        FsPlace {
            _dir: dir,
            cfg,
            root,
            locked: Vec::new(),
            blocked: None,
        }
    }
}

impl Drop for FsPlace {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        for d in &self.locked {
            let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755));
        }
    }
}

/// Every regular file under `dir`, by path relative to `root`.
fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        if m.is_dir() {
            walk(root, &e.path(), out);
        } else if m.is_file() {
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            let mtime = m
                .modified()
                .unwrap()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let bytes = std::fs::read(e.path()).unwrap();
            out.insert(
                rel,
                format!("{}|{mtime}|{}", m.len(), String::from_utf8_lossy(&bytes)),
            );
        }
    }
}

impl Harness for FsPlace {
    fn config(&self) -> &Path {
        &self.cfg
    }
    /// Each item in a directory of its own: one made read-only holds no other.
    fn name(&self, i: usize) -> String {
        format!("g{i:02}/item-{i:02}.bin")
    }
    fn seed(&mut self, items: &[Item]) {
        for it in items {
            let p = self.root.join(self.name(it.i));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, format!("item {}", it.i)).unwrap();
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(
                SystemTime::now() - Duration::from_secs(age_days(it.due) as u64 * 86_400),
            )
            .unwrap();
        }
    }
    fn contents(&mut self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        walk(&self.root, &self.root, &mut out);
        out
    }
    fn remove(&mut self, name: &str) -> Result<(), String> {
        std::fs::remove_file(self.root.join(name)).map_err(|e| e.to_string())
    }
    /// Its directory made read-only: the unlink is refused (EACCES). As root, the sweeps
    /// run without CAP_DAC_OVERRIDE (see `lethe`) so that the mode applies.
    fn make_delete_fail(&mut self, name: &str) -> Result<(), &'static str> {
        use std::os::unix::fs::PermissionsExt;
        let d = self.root.join(name).parent().unwrap().to_path_buf();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o555)).unwrap();
        self.locked.push(d);
        Ok(())
    }
    /// A directory where the file was: not a regular file, so not known to be gone.
    fn cannot_answer(&mut self, name: &str) -> Result<(), &'static str> {
        let p = self.root.join(name);
        std::fs::create_dir_all(&p).unwrap();
        self.blocked = Some(p);
        Ok(())
    }
    fn answer_again(&mut self) {
        if let Some(p) = self.blocked.take() {
            std::fs::remove_dir(p).unwrap();
        }
    }
    /// The engine finds the file already missing when it comes to remove it: the store's
    /// own word that the item is gone.
    fn vanished(&self) -> Vanished {
        Vanished::Recorded("deleted")
    }
    fn trait_delete(&self) -> Result<(), &'static str> {
        Err(
            "a tree's files are its items: the engine removes each (no-follow, checked against what was judged) before it calls `delete`, which only confirms them",
        )
    }
    fn lethe(&self) -> Command {
        let plain = lethe();
        if !rustix::process::geteuid().is_root() {
            return plain;
        }
        let mut c = Command::new("setpriv");
        c.arg("--bounding-set=-dac_override,-dac_read_search")
            .arg(plain.get_program())
            .env_remove("LETHE_CONFIG")
            .env_remove("LETHE_FAILPOINT");
        c
    }
}

#[test]
fn filesystem_conforms() {
    conform("filesystem", |p| FsPlace::new(p, false));
}

#[test]
fn file_url_conforms() {
    conform("file://", |p| FsPlace::new(p, true));
}

// S3 (moto) and Azure Blob (Azurite) --------------------------------------------------------

/// The object keys of a seeded place: under the target's prefix.
fn object_name(i: usize) -> String {
    format!("conf/item-{i:02}.bin")
}

fn object_metadata(it: &Item) -> Vec<(&'static str, String)> {
    let expires = if it.due {
        "2020-01-01T00:00:00Z"
    } else {
        "2099-01-01T00:00:00Z"
    };
    vec![
        ("expires_at", expires.to_string()),
        ("user_id", it.subject.clone()),
    ]
}

/// Makes HEAD requests for `path` fail with 503 (retried by the client, then given up).
fn refuse_heads(proxy: &Flaky, path: String) {
    let path: &'static str = Box::leak(path.into_boxed_str());
    proxy
        .rules
        .lock()
        .unwrap()
        .push(("HEAD", path, 503, usize::MAX));
}

fn object_config(dir: &Tmp, url: &str, options: &[(&str, String)]) -> PathBuf {
    let mut target = format!(
        "type = \"object_store\"\nurl = \"{url}\"\nsubject = \"user_id\"\n[targets.options]\n"
    );
    for (k, v) in options {
        target.push_str(&format!("{k} = \"{v}\"\n"));
    }
    write_config(dir, &target)
}

struct S3Place<'a> {
    moto: &'a Server,
    proxy: &'a Flaky,
    _dir: Tmp,
    cfg: PathBuf,
    bucket: String,
    store: Arc<dyn ObjectStore>,
    metadata: HashMap<String, Vec<(&'static str, String)>>,
    locked_bucket: bool,
}

impl<'a> S3Place<'a> {
    fn new(moto: &'a Server, proxy: &'a Flaky, point: Point) -> S3Place<'a> {
        let dir = Tmp::new(&format!("conf-s3-{}", point.slug()));
        let bucket = format!("conf-{}", point.slug());
        // Object lock (a legal hold refuses a delete) needs a bucket created with it, and
        // such a bucket is versioned: only the failing-delete point gets one, the others
        // are plain buckets.
        let locked_bucket = point == Point::FailingDelete;
        let headers: Vec<(String, String)> = if locked_bucket {
            vec![("x-amz-bucket-object-lock-enabled".into(), "true".into())]
        } else {
            Vec::new()
        };
        let (status, body) = http(moto.port, "PUT", &format!("/{bucket}"), &headers, b"");
        assert_eq!(status, 200, "create bucket: {body}");
        let store: Arc<dyn ObjectStore> = Arc::new(
            object_store::aws::AmazonS3Builder::new()
                .with_bucket_name(&bucket)
                .with_endpoint(format!("http://127.0.0.1:{}", moto.port))
                .with_allow_http(true)
                .with_region("us-east-1")
                .with_access_key_id("test")
                .with_secret_access_key("test")
                .build()
                .unwrap(),
        );
        // The sweeps reach moto through the proxy, which can refuse chosen requests.
        let cfg = object_config(
            &dir,
            &format!("s3://{bucket}/conf/"),
            &[
                ("aws_endpoint", format!("http://127.0.0.1:{}", proxy.port)),
                ("aws_allow_http", "true".into()),
                ("aws_region", "us-east-1".into()),
            ],
        );
        S3Place {
            moto,
            proxy,
            _dir: dir,
            cfg,
            bucket,
            store,
            metadata: HashMap::new(),
            locked_bucket,
        }
    }
}

/// Headers that make a plain request to moto an authenticated one (moto checks no
/// signature, but refuses anonymous requests on existing private objects).
fn moto_auth() -> Vec<(String, String)> {
    vec![
        ("x-amz-date".into(), "20260101T000000Z".into()),
        ("x-amz-content-sha256".into(), "UNSIGNED-PAYLOAD".into()),
        (
            "Authorization".into(),
            "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=0000000000000000000000000000000000000000000000000000000000000000".into(),
        ),
    ]
}

/// The text of each `<tag>` in `xml`.
fn xml_all<'x>(xml: &'x str, tag: &str) -> Vec<&'x str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    xml.split(open.as_str())
        .skip(1)
        .filter_map(|s| s.split_once(close.as_str()).map(|(v, _)| v))
        .collect()
}

impl Harness for S3Place<'_> {
    fn config(&self) -> &Path {
        &self.cfg
    }
    fn env(&self) -> &'static [(&'static str, &'static str)] {
        &S3_CREDS
    }
    fn name(&self, i: usize) -> String {
        object_name(i)
    }
    fn seed(&mut self, items: &[Item]) {
        let seed: Vec<(String, Vec<(&'static str, String)>)> = items
            .iter()
            .map(|it| (object_name(it.i), object_metadata(it)))
            .collect();
        self.metadata.extend(seed.iter().cloned());
        put_all(Arc::clone(&self.store), &seed);
    }
    /// A plain ListObjectsV2 of the prefix: each key with its ETag, time and size.
    fn contents(&mut self) -> BTreeMap<String, String> {
        let (status, body) = http(
            self.moto.port,
            "GET",
            &format!("/{}?list-type=2&prefix=conf/", self.bucket),
            &[],
            b"",
        );
        assert_eq!(status, 200, "list: {body}");
        assert!(
            !body.contains("<IsTruncated>true"),
            "one page holds them all"
        );
        xml_all(&body, "Contents")
            .into_iter()
            .map(|c| {
                let one = |t: &str| xml_all(c, t).first().copied().unwrap_or("").to_string();
                (
                    one("Key"),
                    format!("{}|{}|{}", one("ETag"), one("LastModified"), one("Size")),
                )
            })
            .collect()
    }
    fn remove(&mut self, name: &str) -> Result<(), String> {
        let (status, body) = http(
            self.moto.port,
            "DELETE",
            &format!("/{}/{name}", self.bucket),
            &moto_auth(),
            b"",
        );
        if status == 204 {
            Ok(())
        } else {
            Err(format!("{status}: {body}"))
        }
    }
    /// A new version of the object under a legal hold (object lock): its deletion, by
    /// version as in any versioned bucket, is refused (AccessDenied).
    fn make_delete_fail(&mut self, name: &str) -> Result<(), &'static str> {
        if !self.locked_bucket {
            return Err("object lock needs a bucket created with it");
        }
        let mut headers = moto_auth();
        headers.extend([
            // The MD5 of the body `{}`: S3 requires one with object lock headers.
            ("Content-MD5".into(), "mZFLkyvTelC5g8XnyQrpOw==".into()),
            ("x-amz-object-lock-legal-hold".into(), "ON".into()),
        ]);
        for (k, v) in &self.metadata[name] {
            headers.push((format!("x-amz-meta-{k}"), v.clone()));
        }
        let (status, body) = http(
            self.moto.port,
            "PUT",
            &format!("/{}/{name}", self.bucket),
            &headers,
            b"{}",
        );
        assert_eq!(status, 200, "put under legal hold: {body}");
        Ok(())
    }
    fn cannot_answer(&mut self, name: &str) -> Result<(), &'static str> {
        refuse_heads(self.proxy, format!("/{}/{name}", self.bucket));
        Ok(())
    }
    fn answer_again(&mut self) {
        self.proxy.rules.lock().unwrap().clear();
    }
    /// S3 answers a delete of a missing key as done, and the object is indeed gone.
    fn vanished(&self) -> Vanished {
        Vanished::Recorded("deleted")
    }
}

#[test]
fn s3_conforms() {
    let dir = Tmp::new("conf-moto");
    let server = moto(&dir.0);
    let proxy = flaky_proxy(server.port, Vec::new());
    conform("s3", |p| S3Place::new(&server, &proxy, p));
}

struct AzurePlace<'a> {
    azurite: &'a Server,
    proxy: &'a Flaky,
    _dir: Tmp,
    cfg: PathBuf,
    container: String,
    store: Arc<dyn ObjectStore>,
}

impl<'a> AzurePlace<'a> {
    fn new(azurite: &'a Server, proxy: &'a Flaky, point: Point) -> AzurePlace<'a> {
        let dir = Tmp::new(&format!("conf-az-{}", point.slug()));
        let container = format!("conf-{}", point.slug());
        az_create_container(azurite.port, &container);
        let store: Arc<dyn ObjectStore> = Arc::new(
            object_store::azure::MicrosoftAzureBuilder::new()
                .with_account(AZ_ACCOUNT)
                .with_access_key(AZ_KEY)
                .with_container_name(&container)
                .with_endpoint(format!("http://127.0.0.1:{}/{AZ_ACCOUNT}", azurite.port))
                .with_allow_http(true)
                .build()
                .unwrap(),
        );
        let cfg = object_config(
            &dir,
            &format!("az://{container}/conf/"),
            &[
                ("azure_storage_account_name", AZ_ACCOUNT.into()),
                (
                    "azure_storage_endpoint",
                    format!("http://127.0.0.1:{}/{AZ_ACCOUNT}", proxy.port),
                ),
                ("azure_allow_http", "true".into()),
            ],
        );
        AzurePlace {
            azurite,
            proxy,
            _dir: dir,
            cfg,
            container,
            store,
        }
    }
}

impl Harness for AzurePlace<'_> {
    fn config(&self) -> &Path {
        &self.cfg
    }
    fn env(&self) -> &'static [(&'static str, &'static str)] {
        &[("AZURE_STORAGE_ACCOUNT_KEY", AZ_KEY)]
    }
    fn name(&self, i: usize) -> String {
        object_name(i)
    }
    fn seed(&mut self, items: &[Item]) {
        let seed: Vec<(String, Vec<(&'static str, String)>)> = items
            .iter()
            .map(|it| (object_name(it.i), object_metadata(it)))
            .collect();
        put_all(Arc::clone(&self.store), &seed);
    }
    fn contents(&mut self) -> BTreeMap<String, String> {
        let store = Arc::clone(&self.store);
        rt().block_on(async move {
            store
                .list(Some(&ObjPath::from("conf")))
                .map(|m| {
                    let m = m.unwrap();
                    (
                        m.location.to_string(),
                        format!("{:?}|{}|{}", m.e_tag, m.last_modified, m.size),
                    )
                })
                .collect()
                .await
        })
    }
    fn remove(&mut self, name: &str) -> Result<(), String> {
        let store = Arc::clone(&self.store);
        let path = ObjPath::from(name);
        rt().block_on(async move { object_store::ObjectStoreExt::delete(&store, &path).await })
            .map_err(|e| e.to_string())
    }
    /// An infinite lease on the blob: a delete without the lease id is refused (412).
    fn make_delete_fail(&mut self, name: &str) -> Result<(), &'static str> {
        let (status, body) = az_request(
            self.azurite.port,
            "PUT",
            &format!("{}/{name}", self.container),
            &[("comp", "lease")],
            &[
                ("x-ms-lease-action", "acquire"),
                ("x-ms-lease-duration", "-1"),
            ],
        );
        assert_eq!(status, 201, "acquire lease: {body}");
        Ok(())
    }
    fn cannot_answer(&mut self, name: &str) -> Result<(), &'static str> {
        refuse_heads(self.proxy, format!("/{}/{name}", self.container));
        Ok(())
    }
    fn answer_again(&mut self) {
        self.proxy.rules.lock().unwrap().clear();
    }
    /// A batch delete of a missing blob answers 404, which the connector takes for gone.
    fn vanished(&self) -> Vanished {
        Vanished::Recorded("deleted")
    }
}

#[test]
fn azure_blob_conforms() {
    let dir = Tmp::new("conf-azurite");
    let server = azurite(&dir.0);
    let proxy = flaky_proxy(server.port, Vec::new());
    conform("azure", |p| AzurePlace::new(&server, &proxy, p));
}

// The toy jsonl connector (feature `jsonl-connector`) -------------------------------------

#[cfg(feature = "jsonl-connector")]
struct JsonlPlace {
    _dir: Tmp,
    cfg: PathBuf,
    file: PathBuf,
    /// The file as it was before `cannot_answer` spoiled it.
    saved: Option<Vec<u8>>,
}

#[cfg(feature = "jsonl-connector")]
impl JsonlPlace {
    fn new(point: Point) -> JsonlPlace {
        let dir = Tmp::new(&format!("conf-jsonl-{}", point.slug()));
        let file = dir.path("items.jsonl");
        std::fs::write(&file, "").unwrap();
        let cfg = write_config(
            &dir,
            "type = \"jsonl\"\npath = \"items.jsonl\"\nsubject = \"user_id\"",
        );
        JsonlPlace {
            _dir: dir,
            cfg,
            file,
            saved: None,
        }
    }

    fn lines(&self) -> Vec<serde_json::Map<String, Value>> {
        std::fs::read_to_string(&self.file)
            .unwrap()
            .lines()
            .map(|l| match serde_json::from_str(l).unwrap() {
                Value::Object(m) => m,
                other => panic!("not an object: {other}"),
            })
            .collect()
    }

    fn write(&self, lines: &[serde_json::Map<String, Value>]) {
        let text: String = lines
            .iter()
            .map(|m| format!("{}\n", Value::Object(m.clone())))
            .collect();
        std::fs::write(&self.file, text).unwrap();
    }
}

#[cfg(feature = "jsonl-connector")]
impl Harness for JsonlPlace {
    fn config(&self) -> &Path {
        &self.cfg
    }
    fn name(&self, i: usize) -> String {
        format!("item-{i:02}")
    }
    fn seed(&mut self, items: &[Item]) {
        let lines: Vec<serde_json::Map<String, Value>> = items
            .iter()
            .map(|it| {
                let v = serde_json::json!({
                    "id": self.name(it.i),
                    "user_id": it.subject,
                    "created_at": naive(age_days(it.due) * DAY),
                    "payload": format!("item {}", it.i),
                });
                match v {
                    Value::Object(m) => m,
                    _ => unreachable!(),
                }
            })
            .collect();
        self.write(&lines);
    }
    fn contents(&mut self) -> BTreeMap<String, String> {
        self.lines()
            .into_iter()
            .map(|m| {
                let id = m["id"].as_str().unwrap().to_string();
                (id, Value::Object(m).to_string())
            })
            .collect()
    }
    fn remove(&mut self, name: &str) -> Result<(), String> {
        let mut lines = self.lines();
        let before = lines.len();
        lines.retain(|m| m["id"] != name);
        if lines.len() + 1 != before {
            return Err(format!("{} lines named {name}", before - lines.len()));
        }
        self.write(&lines);
        Ok(())
    }
    /// The toy store's own refusal: an item marked `"locked": true`.
    fn make_delete_fail(&mut self, name: &str) -> Result<(), &'static str> {
        let mut lines = self.lines();
        for m in lines.iter_mut().filter(|m| m["id"] == name) {
            m.insert("locked".into(), Value::Bool(true));
        }
        self.write(&lines);
        Ok(())
    }
    /// A file that is not text cannot be read at all: no lookup can be answered.
    fn cannot_answer(&mut self, _name: &str) -> Result<(), &'static str> {
        let bytes = std::fs::read(&self.file).unwrap();
        let mut spoiled = bytes.clone();
        spoiled.extend_from_slice(b"\xff\xfe\n");
        std::fs::write(&self.file, spoiled).unwrap();
        self.saved = Some(bytes);
        Ok(())
    }
    fn answer_again(&mut self) {
        if let Some(bytes) = self.saved.take() {
            std::fs::write(&self.file, bytes).unwrap();
        }
    }
    fn vanished(&self) -> Vanished {
        Vanished::Recorded("deleted")
    }
}

#[cfg(feature = "jsonl-connector")]
#[test]
fn jsonl_conforms() {
    conform("jsonl", JsonlPlace::new);
}

// Vendor file APIs (the fakes of `vendor_fake`) ---------------------------------------------

/// A vendor's files on a fake of its API, whose subjects come from `subject_map` on an
/// application table beside it. The key is read from `PATH`: the connector opened
/// in-process reads its key from this process's environment, which a test cannot set
/// (`std::env::set_var` is unsafe), and `PATH` is always there.
struct VendorPlace {
    _dir: Tmp,
    cfg: PathBuf,
    fake: crate::vendor_fake::Fake,
    app: PathBuf,
    prefix: &'static str,
}

impl VendorPlace {
    fn new(point: Point, anthropic: bool) -> VendorPlace {
        use crate::vendor_fake::Fake;
        let dir = Tmp::new(&format!("conf-vendor-{}", point.slug()));
        let key = std::env::var("PATH").unwrap();
        let (fake, ty, prefix) = if anthropic {
            (Fake::anthropic(&key), "anthropic_files", "file_")
        } else {
            (Fake::openai(&key), "openai_files", "file-")
        };
        fake.set_page_cap(7);
        let app = dir.path("app.db");
        crate::vendor::uploads(&dir.0, &[]);
        let cfg = write_config(
            &dir,
            &format!(
                r#"type = "{ty}"
api_key_env = "PATH"
base_url = "{}"
max_retries = 0
request_timeout = "10s"
{}"#,
                fake.base_url(),
                crate::vendor::subject_map("conformance")
            ),
        );
        VendorPlace {
            _dir: dir,
            cfg,
            fake,
            app,
            prefix,
        }
    }

    fn path(&self, name: &str) -> String {
        format!("/v1/files/{name}")
    }
}

impl Harness for VendorPlace {
    fn config(&self) -> &Path {
        &self.cfg
    }
    fn name(&self, i: usize) -> String {
        format!("{}conformance{i:013}", self.prefix)
    }
    fn seed(&mut self, items: &[Item]) {
        let now = now_secs();
        let specs: Vec<crate::vendor_fake::FileSpec> = items
            .iter()
            .map(|it| crate::vendor_fake::FileSpec {
                id: Some(self.name(it.i)),
                ..crate::vendor_fake::FileSpec::new("user_data", now - age_days(it.due) * DAY)
            })
            .collect();
        self.fake.add_files(specs);
        let conn = Connection::open(&self.app).unwrap();
        for it in items {
            crate::vendor::record_upload(&conn, &self.name(it.i), &it.subject);
        }
    }
    fn contents(&mut self) -> BTreeMap<String, String> {
        self.fake
            .file_ids()
            .into_iter()
            .map(|id| (id.clone(), id))
            .collect()
    }
    fn remove(&mut self, name: &str) -> Result<(), String> {
        if self.fake.remove_file(name) {
            Ok(())
        } else {
            Err(format!("no file {name}"))
        }
    }
    /// The vendor refuses the DELETE (400) every time.
    fn make_delete_fail(&mut self, name: &str) -> Result<(), &'static str> {
        self.fake.inject(crate::vendor_fake::Fault::status(
            "DELETE",
            &self.path(name),
            400,
            1_000,
        ));
        Ok(())
    }
    /// The vendor answers 503 for it, every time, until `answer_again`.
    fn cannot_answer(&mut self, name: &str) -> Result<(), &'static str> {
        self.fake.inject(crate::vendor_fake::Fault::status(
            "*",
            &self.path(name),
            503,
            1_000,
        ));
        Ok(())
    }
    fn answer_again(&mut self) {
        self.fake.clear_faults();
    }
    /// The DELETE finds it gone (404): recorded deleted, as already gone.
    fn vanished(&self) -> Vanished {
        Vanished::Recorded("deleted")
    }
}

#[test]
fn openai_files_conform() {
    conform("openai_files", |p| VendorPlace::new(p, false));
}

#[test]
fn anthropic_files_conform() {
    conform("anthropic_files", |p| VendorPlace::new(p, true));
}

//! Where data lives. Each connector yields rows (or objects) with what they say about their
//! own lifetime, and deletes by key.

/// Declares a connector folder's kind: the unit struct, the `type` that selects it, whether
/// `subject` means something for it, the function that reads its own keys (pure), and the
/// folder's `KINDS`. The folder then implements [`Kind`] for the struct.
macro_rules! kind {
    ($kind:ident, $type_name:literal, subjects: $subjects:literal, parse: $parse:path) => {
        /// This folder's kind of target.
        pub struct $kind;

        /// The kinds of target this folder provides.
        pub static KINDS: &[&dyn $crate::targets::Kind] = &[&$kind];

        impl lethe_core::config::TargetParser for $kind {
            fn type_name(&self) -> &'static str {
                $type_name
            }
            fn maps_subject(&self) -> bool {
                $subjects
            }
            fn parse(
                &self,
                s: &mut lethe_core::config::Section<'_, '_>,
            ) -> Option<std::sync::Arc<dyn lethe_core::config::TargetSpec>> {
                $parse(s)
            }
        }
    };
}

/// Declares the connector folders and lists their kinds: adding a connector is a folder
/// below this one (with a `KINDS` list of its own) and one line here.
macro_rules! connectors {
    ($($(#[$attr:meta])* $folder:ident),* $(,)?) => {
        $($(#[$attr])* pub mod $folder;)*

        /// Every kind of target this build knows.
        pub fn kinds() -> impl Iterator<Item = &'static dyn Kind> {
            [$($(#[$attr])* $folder::KINDS,)*].into_iter().flatten().copied()
        }
    };
}

connectors! {
    sql,
    fs,
    objects,
    vendor,
    #[cfg(feature = "jsonl-connector")]
    jsonl,
}

use std::fmt;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use lethe_core::config::{Target, TargetParser};
use lethe_core::lifecycle::Cloud;
use lethe_core::time::TimeFormat;

use crate::files::Roots;
use lethe_core::expiry::{Facts, Raw};
use lethe_core::time::Timestamp;
use serde::{Deserialize, Serialize};

/// An item's identity in its target: one column's value, or several (a composite key).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Key {
    Int(i64),
    Text(String),
    Composite(Vec<Key>),
}

impl Key {
    /// A composite key's parts; a plain key is its own one part.
    pub fn parts(&self) -> &[Key] {
        match self {
            Key::Composite(parts) => parts,
            one => std::slice::from_ref(one),
        }
    }

    /// Builds a key from its parts: one part is a plain key.
    pub fn from_parts(mut parts: Vec<Key>) -> Key {
        if parts.len() == 1 {
            parts.remove(0)
        } else {
            Key::Composite(parts)
        }
    }

    /// Reads a key as a person writes it (`--key`): a composite key as a JSON array, such
    /// as `["acme", 1]`; anything else is one value. Returns every reading worth trying:
    /// an integer-looking value may be stored as an integer or as text.
    pub fn readings(text: &str) -> Vec<Key> {
        if text.starts_with('[')
            && let Ok(serde_json::Value::Array(items)) = serde_json::from_str(text)
        {
            let parts: Option<Vec<Key>> = items
                .into_iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => Some(Key::Text(s)),
                    serde_json::Value::Number(n) => n.as_i64().map(Key::Int),
                    _ => None,
                })
                .collect();
            if let Some(parts) = parts
                && parts.len() > 1
            {
                return vec![Key::Composite(parts)];
            }
        }
        let mut keys = vec![Key::Text(text.to_string())];
        if let Ok(i) = text.parse::<i64>() {
            keys.insert(0, Key::Int(i));
        }
        keys
    }
}

/// A plain key is its value; a composite key is a JSON array of its values as text, so
/// that it reads the same whichever database holds it: `["acme","1"]`.
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Int(i) => write!(f, "{i}"),
            Key::Text(s) => f.write_str(s),
            Key::Composite(parts) => {
                let texts: Vec<serde_json::Value> = parts
                    .iter()
                    .map(|p| serde_json::Value::String(p.to_string()))
                    .collect();
                f.write_str(&serde_json::Value::Array(texts).to_string())
            }
        }
    }
}

/// A stored value, owned.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob,
    /// A typed instant the store keeps as one (see [`Raw::Instant`]).
    Instant(lethe_core::time::Timestamp),
}

impl Value {
    pub fn raw(&self) -> Raw<'_> {
        match self {
            Value::Null => Raw::Null,
            Value::Int(i) => Raw::Int(*i),
            Value::Real(f) => Raw::Real(*f),
            Value::Text(s) => Raw::Text(s),
            Value::Blob => Raw::Blob,
            Value::Instant(t) => Raw::Instant(*t),
        }
    }
}

/// One row as a connector reads it. Columns a target does not map read as `Null`.
#[derive(Clone, Debug)]
pub struct Row {
    pub key: Result<Key, String>,
    pub created_at: Value,
    pub retention_days: Value,
    pub expires_at: Value,
    pub subject: Result<Option<String>, String>,
    pub file: Result<Option<String>, String>,
    /// The item's own sensitivity level, where the target reads one.
    pub sensitivity: Value,
    /// Why the item's facts could not be read (it is reported, never deleted on a guess).
    pub problem: Option<String>,
    /// What was judged, when the item can change between its judgement and its deletion
    /// (an object's ETag and last-modified): carried into the entry that records it.
    pub detail: Option<String>,
    /// Why the item must not be deleted now though it may be due: work still running at
    /// the store uses it (a vendor batch's input). Kept and recorded `in_use`, judged again
    /// next run.
    pub in_use: Option<String>,
}

impl Row {
    /// An item known by its key alone; the connector fills in what it reads.
    pub fn new(key: Key) -> Row {
        Row {
            key: Ok(key),
            created_at: Value::Null,
            retention_days: Value::Null,
            expires_at: Value::Null,
            subject: Ok(None),
            file: Ok(None),
            sensitivity: Value::Null,
            problem: None,
            detail: None,
            in_use: None,
        }
    }

    /// What the pure decision reads of this item, given how the target stores its instants
    /// (`created_at_format`, `expires_at_format`).
    pub fn facts<'a>(
        &'a self,
        created_at_format: Option<&'a TimeFormat>,
        expires_at_format: Option<&'a TimeFormat>,
    ) -> Facts<'a> {
        Facts {
            created_at: self.created_at.raw(),
            expires_at: Some(self.expires_at.raw()),
            retention_days: Some(self.retention_days.raw()),
            created_at_format,
            expires_at_format,
            sensitivity: Some(self.sensitivity.raw()),
        }
    }

    /// An item that cannot be judged or deleted, and why: reported failed, never deleted.
    pub fn unusable(key: Key, problem: String) -> Row {
        Row {
            problem: Some(problem),
            ..Row::new(key)
        }
    }
}

/// What `delete` says of a row the database did not confirm removing.
pub const NOT_CONFIRMED: &str = "not deleted: the database did not confirm removing the row (a trigger, rule or row-level security policy kept it, or it changed after it was judged); kept, judged again next run";

/// Bounded waits: an application's lock makes Lethe give up on a row or a table after
/// `lock_timeout`, never wait forever.
pub fn busy_message(what: &str, timeout: lethe_core::time::Duration) -> String {
    format!(
        "{what} is locked by another connection or transaction for longer than lock_timeout ({timeout}); kept, the next run tries again"
    )
}

/// What a delete removed, as the database counted it.
pub enum Removed {
    /// A row for every key given (keys are unique: each names at most one row).
    All,
    /// The keys of the rows removed, when some were not.
    These(Vec<Key>),
}

impl Removed {
    fn outcome(&self, key: &Key, gone: &std::collections::HashSet<&Key>) -> Result<(), String> {
        match self {
            Removed::All => Ok(()),
            Removed::These(_) if gone.contains(key) => Ok(()),
            Removed::These(_) => Err(NOT_CONFIRMED.to_string()),
        }
    }

    fn keys(&self) -> std::collections::HashSet<&Key> {
        match self {
            Removed::All => std::collections::HashSet::new(),
            Removed::These(keys) => keys.iter().collect(),
        }
    }
}

/// The SQL side of a confirmed delete, for [`delete_confirmed`].
pub trait Deleter {
    /// Runs one statement that returns no rows.
    fn execute(&mut self, statement: &str) -> Result<()>;
    fn savepoint(&mut self) -> Result<()> {
        self.execute("SAVEPOINT lethe_group")
    }
    fn release(&mut self) -> Result<()> {
        self.execute("RELEASE SAVEPOINT lethe_group")
    }
    fn rollback_to(&mut self) -> Result<()> {
        self.execute("ROLLBACK TO SAVEPOINT lethe_group")
    }
    /// Deletes these rows (only those still as they were judged) and says which the
    /// database removed. Always called inside the `lethe_group` savepoint, which it may
    /// roll back to (and leave open) to try again.
    fn delete_returning(&mut self, keys: &[Key]) -> Result<Removed>;
    /// Whether an error is a lock wait that ran out.
    fn is_lock_timeout(&self, e: &anyhow::Error) -> bool;
    /// Whether an error refuses the statement whatever rows it names (a rule that rewrites
    /// every delete): splitting the group would only repeat it row by row.
    fn refuses_every_row(&self, _e: &anyhow::Error) -> bool {
        false
    }
    /// Of these rows, those it could lock now without waiting, locked for this
    /// transaction; `None` where the database has no row locks.
    fn lockable(&mut self, keys: &[Key]) -> Result<Option<Vec<Key>>>;
    fn lock_timeout(&self) -> lethe_core::time::Duration;
}

/// Deletes rows with one outcome per key: a row counts as deleted only when the database
/// names it among the rows it removed. A statement the database refuses (a trigger that
/// raises, a restricting foreign key) is undone to a savepoint and the group split in two,
/// down to the refusing rows, so one row never keeps the rest of its group. Rows locked by
/// someone else for longer than the lock timeout are reported busy, not waited for.
/// `Err` only when the transaction itself is lost.
pub fn delete_confirmed(d: &mut dyn Deleter, keys: &[Key]) -> Result<Vec<Deletion>> {
    let as_deletion = |r: Result<(), String>| match r {
        Ok(()) => Deletion::Deleted,
        Err(why) => Deletion::Failed(why),
    };
    let mut out: Vec<Option<Result<(), String>>> = vec![None; keys.len()];
    // The whole group first, as it comes: almost always every row goes at once.
    d.savepoint()?;
    match d.delete_returning(keys) {
        Ok(removed) => {
            d.release()?;
            let gone = removed.keys();
            return Ok(keys
                .iter()
                .map(|k| as_deletion(removed.outcome(k, &gone)))
                .collect());
        }
        Err(e) => {
            d.rollback_to()
                .with_context(|| format!("the database ended the transaction: {e:#}"))?;
            d.release()?;
            let all: Vec<usize> = (0..keys.len()).collect();
            refused(d, keys, all, e, &mut out)?;
        }
    }
    Ok(out
        .into_iter()
        .map(|o| as_deletion(o.unwrap_or_else(|| Err(NOT_CONFIRMED.to_string()))))
        .collect())
}

/// After every group of a transaction's delete: the rows their groups confirmed are looked
/// at once more, together (`there_now` names those there again: put back by code a later
/// group's delete ran, or changed back), and those are failed after all, never recorded
/// deleted.
pub fn recheck_deleted(
    keys: &[Key],
    each: &mut [Deletion],
    there_now: impl FnOnce(&[Key]) -> Result<std::collections::HashSet<Key>>,
) -> Result<()> {
    let gone: Vec<Key> = keys
        .iter()
        .zip(each.iter())
        .filter(|(_, d)| matches!(d, Deletion::Deleted))
        .map(|(k, _)| k.clone())
        .collect();
    if gone.is_empty() {
        return Ok(());
    }
    let back = there_now(&gone)?;
    for (k, d) in keys.iter().zip(each.iter_mut()) {
        if matches!(d, Deletion::Deleted) && back.contains(k) {
            *d = Deletion::Failed(NOT_CONFIRMED.to_string());
        }
    }
    Ok(())
}

fn delete_group(
    d: &mut dyn Deleter,
    keys: &[Key],
    idx: Vec<usize>,
    out: &mut [Option<Result<(), String>>],
) -> Result<()> {
    if idx.is_empty() {
        return Ok(());
    }
    let group: Vec<Key> = idx.iter().map(|&i| keys[i].clone()).collect();
    d.savepoint()?;
    match d.delete_returning(&group) {
        Ok(removed) => {
            d.release()?;
            let gone = removed.keys();
            for i in idx {
                out[i] = Some(removed.outcome(&keys[i], &gone));
            }
            Ok(())
        }
        Err(e) => {
            d.rollback_to()
                .with_context(|| format!("the database ended the transaction: {e:#}"))?;
            d.release()?;
            refused(d, keys, idx, e, out)
        }
    }
}

/// After the database refused a group's delete: rows locked by others are reported busy,
/// a single row (or a refusal of every row) is failed with the database's reason, and
/// anything larger is split in two and tried again.
fn refused(
    d: &mut dyn Deleter,
    keys: &[Key],
    idx: Vec<usize>,
    e: anyhow::Error,
    out: &mut [Option<Result<(), String>>],
) -> Result<()> {
    if d.is_lock_timeout(&e) {
        let group: Vec<Key> = idx.iter().map(|&i| keys[i].clone()).collect();
        if let Some(free) = d.lockable(&group)? {
            let free: std::collections::HashSet<Key> = free.into_iter().collect();
            let (ok, busy): (Vec<usize>, Vec<usize>) =
                idx.into_iter().partition(|&i| free.contains(&keys[i]));
            for i in busy {
                out[i] = Some(Err(busy_message("the row", d.lock_timeout())));
            }
            return delete_group(d, keys, ok, out);
        }
    }
    if idx.len() == 1 || d.refuses_every_row(&e) {
        for i in idx {
            out[i] = Some(Err(format!(
                "the database refused to delete the row: {e:#}; kept"
            )));
        }
        return Ok(());
    }
    let mut left = idx;
    let right = left.split_off(left.len() / 2);
    delete_group(d, keys, left, out)?;
    delete_group(d, keys, right, out)
}

/// Where `export_subject` hands each of a subject's items, as a JSON object.
pub type ExportSink<'a> =
    &'a mut dyn FnMut(serde_json::Map<String, serde_json::Value>) -> Result<()>;

/// What a connector says of one key it was asked to look up.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // Found is the usual answer: boxing it would cost every lookup
pub enum Lookup {
    /// The item is there, as it reads now.
    Found(Row),
    /// The store says no such item exists (no row, no file, a 404).
    Gone,
    /// The store could not say (an error, a timeout, a key it cannot name). Never taken
    /// for gone: a connector that read a 503 as a 404 would record deletions that never
    /// happened.
    Unknown(String),
}

/// What a connector says of one item it was asked to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// The store confirmed it removed the item.
    Deleted,
    /// The store says the item was already gone: nothing is left to delete.
    AlreadyGone,
    /// Not deleted, and why: the item is kept and judged again next run.
    Failed(String),
}

impl Deletion {
    /// Whether the item is gone from the store, by the store's own word.
    pub fn is_gone(&self) -> bool {
        matches!(self, Deletion::Deleted | Deletion::AlreadyGone)
    }
}

/// The optional abilities a connector declares; the engine uses none it was not told of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `begin`/`commit`/`rollback` make a batch's deletions one unit that a crash or an
    /// error undoes; without them each batch is deleted as soon as it is judged.
    pub transactions: bool,
    /// `of_subject` finds one data subject's items (erasure, subject holds).
    pub subjects: bool,
    /// `export_subject` gives one data subject's items whole (GDPR Art. 15).
    pub export: bool,
}

impl Capabilities {
    /// A store that can do all of it (a SQL table).
    pub const ALL: Capabilities = Capabilities {
        transactions: true,
        subjects: true,
        export: true,
    };
}

/// A place a target's items live: a table on SQLite or PostgreSQL, a directory tree, an
/// object store prefix. Three methods are required: list the candidates a page at a time,
/// look items up by key, and delete by key, the last two with one answer per key. The
/// engine judges, protects, writes ahead and records; a connector only reads and deletes.
///
/// The engine counts an item deleted only from [`Deletion::Deleted`] or
/// [`Deletion::AlreadyGone`], and gone only from [`Lookup::Gone`]; a missing answer, or any
/// answer list of the wrong length, is a failure for every key of the call.
pub trait Connector: Send {
    /// The next page of items that may be due at `now`, at most `limit`. The connector
    /// keeps its own place: each call goes on where the last one stopped, until a page
    /// comes back shorter than `limit`. Items whose key or facts cannot be read come back
    /// with a `problem` (reported, never deleted on a guess).
    fn candidates(&mut self, now: Timestamp, limit: usize) -> Result<Vec<Row>>;

    /// One answer per key, in the order of `keys`. `Err` only when nothing can be said of
    /// any key (the store is unreachable).
    fn lookup(&mut self, keys: &[Key]) -> Result<Vec<Lookup>>;

    /// Deletes by key, one answer per key in the order of `keys`: `Deleted` only for an
    /// item the store confirms it removed. With transactions, between `begin` and `commit`,
    /// and only an item still as this transaction read it. The keys are those of the page
    /// (or lookup) just read: a connector that deletes only what it judged (a version, an
    /// ETag) answers `Failed` for a key it has not read. `Err` when nothing can be said of
    /// any key.
    fn delete(&mut self, keys: &[Key]) -> Result<Vec<Deletion>>;

    /// What this connector can do beyond the three required methods.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// Starts the transaction a batch of deletions runs in (with `transactions`).
    fn begin(&mut self) -> Result<()> {
        Ok(())
    }
    fn commit(&mut self) -> Result<()> {
        Ok(())
    }
    fn rollback(&mut self) {}

    /// The next items whose subject is exactly `subject` (with `subjects`), continuing
    /// like `candidates`.
    fn of_subject(&mut self, _subject: &str, _limit: usize) -> Result<Vec<Row>> {
        anyhow::bail!("this kind of target cannot find a subject's items")
    }

    /// Every field of one subject's items, as JSON objects (with `export`).
    fn export_subject(&mut self, _col: &str, _subject: &str, _each: ExportSink) -> Result<()> {
        anyhow::bail!("this kind of target cannot export a subject's items")
    }

    /// Problems that keep the store from being swept as configured (a missing table or
    /// column, a key no unique index covers, an unreadable root): each one a sentence.
    fn check_schema(&mut self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    /// Things that work but are slow or risky, with the fix (a column no index covers).
    fn index_warnings(&mut self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    /// How many items the target holds, when the store can count them.
    fn count(&mut self) -> Result<Option<u64>> {
        Ok(None)
    }
    /// The smallest and largest key when keys are integers, to show progress.
    fn key_range(&mut self) -> Option<(i64, i64)> {
        None
    }
    /// Items that may be due (or of the subject) whose key is NULL: they cannot be named
    /// or deleted, only counted and reported.
    fn null_keys(&mut self, _now: Timestamp, _subject: Option<&str>) -> Result<u64> {
        Ok(0)
    }
    /// What the target reaches, spelled one way whatever the config's spelling (the same
    /// database file or server and the same table), then the tables whose rows include its
    /// own (a partitioned or inheritance parent): two targets where one's identity is the
    /// other's, or among its ancestors, would bypass each other's holds. `None` for
    /// connectors that compare configs instead.
    fn identity(&mut self) -> Result<Option<Vec<String>>> {
        Ok(None)
    }
    /// Items seen that lack a required tag, for stores that carry tags.
    fn untagged(&self) -> Option<u64> {
        None
    }
    /// Items of the whole target lacking one of `required` (`None`: nothing is required).
    /// By default what the scan saw ([`Connector::untagged`]); a connector whose scan reads
    /// only candidates counts them itself.
    fn count_untagged(&mut self, _required: &[String]) -> Result<Option<u64>> {
        Ok(self.untagged())
    }
    /// Bulk and single delete requests made, for stores that have a bulk API.
    fn delete_stats(&self) -> Option<(u64, u64)> {
        None
    }
    /// Requests retried (throttled, server errors, timeouts), for stores reached over a
    /// network API that retries.
    fn retries(&self) -> Option<u64> {
        None
    }
    /// What the user should know about this source after a sweep.
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Checks a connector's answers: one per key, or the call failed for every key.
pub fn answers<T>(what: &str, keys: &[Key], answers: Vec<T>) -> Result<Vec<T>> {
    if answers.len() != keys.len() {
        anyhow::bail!(
            "the connector gave {} {what} answers for {} keys: none is trusted",
            answers.len(),
            keys.len()
        );
    }
    Ok(answers)
}

/// Looks keys up the usual way for a store that reads rows by key: each key found among
/// `rows` is `Found`, each key missing `Gone`. Only for a read that returned without error
/// and returns every row with these keys. Keys are matched by their text (`1` and `"1"`
/// alike, as a person types them): a row that might be the one asked for is found, never
/// taken for gone.
pub fn found_or_gone(keys: &[Key], rows: Vec<Row>) -> Vec<Lookup> {
    let by_key: std::collections::HashMap<String, Row> = rows
        .into_iter()
        .filter_map(|r| r.key.clone().ok().map(|k| (k.to_string(), r)))
        .collect();
    keys.iter()
        .map(|k| match by_key.get(&k.to_string()) {
            Some(row) => Lookup::Found(row.clone()),
            None => Lookup::Gone,
        })
        .collect()
}

/// What a target reaches, for finding two targets that reach the same place.
pub enum Place {
    /// A table, as its database names it whatever the URL's spelling, then the tables whose
    /// rows include its own.
    Table(Vec<String>),
    /// A directory tree, resolved.
    Tree(PathBuf),
    /// A bucket or container (with the store it is on) and a prefix in it, by segments.
    Prefix(String, Vec<String>),
    /// A vendor account and the kinds of item swept in it.
    Account(Account),
}

/// Where a vendor target's items are: the API (its URL normalised), the organization and
/// project (`None` when not set: the key's own, which may be any), and the kinds of item
/// swept (file purposes, vector stores; `None` for every kind).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub api: String,
    pub organization: Option<String>,
    pub project: Option<String>,
    pub kinds: Option<Vec<String>>,
}

impl Account {
    /// Whether two targets may reach the same items: the same API, organizations and
    /// projects that may be the same (an unset one may be any), and a kind in common.
    pub fn meets(&self, other: &Account) -> bool {
        let may_be_same = |x: &Option<String>, y: &Option<String>| match (x, y) {
            (Some(x), Some(y)) => x == y,
            _ => true,
        };
        let kinds_meet = match (&self.kinds, &other.kinds) {
            (Some(x), Some(y)) => x.iter().any(|k| y.contains(k)),
            _ => true,
        };
        self.api == other.api
            && may_be_same(&self.organization, &other.organization)
            && may_be_same(&self.project, &other.project)
            && kinds_meet
    }
}

/// What opening a target needs beyond the target itself.
pub struct Open<'a> {
    /// The config file's directory: relative paths in the config are relative to it.
    pub base: &'a Path,
    /// Open for deleting; read-only otherwise. Opening never creates anything.
    pub write: bool,
    /// `[tags] required`: objects lacking one are counted as untagged.
    pub required_tags: &'a [String],
}

/// One pass of a sweep over a target: the target as this pass judges and opens it, and
/// whether a due item is redacted rather than deleted.
pub struct Pass {
    pub target: Target,
    /// `Some(what)`: due items are redacted (what the entries say was done), not deleted.
    pub redacts: Option<String>,
    /// An item is due by its created time and the window alone (its own expiry and
    /// retention are read, but not for this pass).
    pub created_only: bool,
    /// The window of an earlier pass over the same items in the run: an item due under it
    /// (with its own expiry and retention) was that pass's to act on and record; skipped.
    pub judged_before: Option<lethe_core::config::Window>,
    /// Only finish what an interrupted run of this pass left written ahead; read nothing
    /// new (a retention sweep finishing an interrupted erasure's redactions).
    pub recover_only: bool,
}

impl Pass {
    /// The target as configured, its due items deleted.
    pub fn whole(target: &Target) -> Pass {
        Pass {
            target: target.clone(),
            redacts: None,
            created_only: false,
            judged_before: None,
            recover_only: false,
        }
    }
}

/// A kind of target (`type = "..."`): its connector's config (parsed purely, through
/// [`TargetParser`]) and how to reach it (with IO). One per connector folder, registered
/// in [`KINDS`]; nothing else in Lethe names a kind.
pub trait Kind: TargetParser {
    /// Opens the target's store; `None` for a kind this build can parse but not sweep.
    fn open(&self, target: &Target, how: &Open) -> Option<Result<Box<dyn Connector>>>;
    /// What the target is, whatever it is called: the place its items live (the database
    /// file or server and table, the directory, the bucket and prefix). Write-ahead
    /// records are kept by it, so that renaming a target never orphans the deletions in
    /// flight in it.
    fn identity(&self, target: &Target, _base: &Path) -> String {
        format!("{}:{}", target.type_name, target.name)
    }
    /// The roots the files an item owns must lie under (none: items own no files).
    fn roots(&self, _target: &Target, _base: &Path) -> Roots {
        Roots::default()
    }
    /// What the target reaches, to refuse two targets on one place; `None` when it cannot
    /// be told.
    fn place(&self, _target: &Target, _base: &Path) -> Option<Place> {
        None
    }
    /// The database URL, for targets that are tables (Lethe's state must be in none).
    fn database_url<'t>(&self, _target: &'t Target) -> Option<&'t str> {
        None
    }
    /// How the target stores created_at and expires_at, when its config says.
    fn formats(&self, _target: &Target) -> (Option<TimeFormat>, Option<TimeFormat>) {
        (None, None)
    }
    /// What its items are called in messages: rows, files, objects.
    fn items(&self) -> &'static str {
        "items"
    }
    /// Where an item names a file it owns (the file field, and the key fields that name
    /// the item), for exports; `None` when items own no files.
    fn owned_files<'t>(&self, _target: &'t Target) -> Option<(&'t str, &'t [String])> {
        None
    }
    /// The passes a sweep (or, with `erasure`, an erasure) makes over the target, in order:
    /// by default one, deleting what is due.
    fn passes(&self, target: &Target, _erasure: bool) -> Vec<Pass> {
        vec![Pass::whole(target)]
    }
    /// Whether this build can sweep it (a kind may be parsed, and checked, before it can).
    fn can_sweep(&self) -> bool {
        true
    }
    /// Whether the target reaches data subjects (erasure, export and subject holds): by
    /// default, when it maps a `subject`.
    fn reaches_subjects(&self, target: &Target) -> bool {
        target.subject.is_some()
    }
    /// What `untagged` counts for this kind of target, for people.
    fn untagged_means(&self) -> &'static str {
        "lacking one of [tags] required"
    }
    /// Whether directories left empty by its deletions are removed.
    fn prunes_empty_dirs(&self, _target: &Target) -> bool {
        false
    }
    /// The store's own lifecycle policy for the target's window, where it has one.
    fn lifecycle(&self, target: &Target, _cloud: Cloud) -> Result<serde_json::Value, String> {
        Err(format!(
            "target {} is of type {}; lifecycle policies are for object_store targets",
            target.name, target.type_name
        ))
    }
}

/// The parsers of every kind, for reading a config.
pub fn parsers() -> Vec<&'static dyn TargetParser> {
    kinds().map(|k| k as &dyn TargetParser).collect()
}

/// The kind of a parsed target (every target was parsed by one of [`kinds`]).
pub fn kind_of(target: &Target) -> &'static dyn Kind {
    kinds()
        .find(|k| k.type_name() == target.type_name)
        .unwrap_or(&Unparsed)
}

/// The kind of a target no connector of this build parsed: it cannot be opened.
struct Unparsed;

impl TargetParser for Unparsed {
    fn type_name(&self) -> &'static str {
        "unknown"
    }
    fn parse(
        &self,
        _s: &mut lethe_core::config::Section<'_, '_>,
    ) -> Option<std::sync::Arc<dyn lethe_core::config::TargetSpec>> {
        None
    }
}

impl Kind for Unparsed {
    fn open(&self, _target: &Target, _how: &Open) -> Option<Result<Box<dyn Connector>>> {
        None
    }
}

/// Opens any supported target as a source of items; `None` for kinds this build cannot sweep.
pub fn open_source(
    target: &Target,
    base: &Path,
    write: bool,
) -> Option<Result<Box<dyn Connector>>> {
    open_with(target, base, write, &[])
}

/// [`open_source`], with `[tags] required`.
pub fn open_with(
    target: &Target,
    base: &Path,
    write: bool,
    required_tags: &[String],
) -> Option<Result<Box<dyn Connector>>> {
    let how = Open {
        base,
        write,
        required_tags,
    };
    kind_of(target).open(target, &how)
}

/// The passes a sweep or erasure makes over a target (see [`Kind::passes`]).
pub fn passes(target: &Target, erasure: bool) -> Vec<Pass> {
    kind_of(target).passes(target, erasure)
}

/// What a target is, whatever it is called (see [`Kind::identity`]).
pub fn identity(target: &Target, base: &Path) -> String {
    kind_of(target).identity(target, base)
}

/// The roots a target's files must lie under (see [`Kind::roots`]).
pub fn roots_for(target: &Target, base: &Path) -> Roots {
    kind_of(target).roots(target, base)
}

/// A path as the system resolves it, or as written when it cannot be resolved.
pub(crate) fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// A URL without its query string and fragment.
pub(crate) fn without_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: Key) -> Row {
        Row::new(key)
    }

    #[test]
    fn a_key_is_gone_only_when_the_read_did_not_return_it() {
        let keys = [Key::Int(1), Key::Text("2".into()), Key::Int(3)];
        // The store returned rows 2 (as an integer) and 1, not 3.
        let got = found_or_gone(&keys, vec![row(Key::Int(2)), row(Key::Int(1))]);
        assert!(matches!(&got[0], Lookup::Found(r) if r.key == Ok(Key::Int(1))));
        assert!(matches!(&got[1], Lookup::Found(r) if r.key == Ok(Key::Int(2))));
        assert!(matches!(got[2], Lookup::Gone));
    }

    #[test]
    fn answers_of_the_wrong_length_are_trusted_for_no_key() {
        let keys = [Key::Int(1), Key::Int(2)];
        assert!(answers("delete", &keys, vec![Deletion::Deleted]).is_err());
        assert!(answers("delete", &keys, vec![Deletion::Deleted; 3]).is_err());
        let ok = answers(
            "delete",
            &keys,
            vec![Deletion::Deleted, Deletion::AlreadyGone],
        );
        assert!(ok.is_ok_and(|a| a.iter().all(Deletion::is_gone)));
        assert!(!Deletion::Failed("x".into()).is_gone());
    }
}

//! Where data lives. Each connector yields rows (or objects) with what they say about their
//! own lifetime, and deletes by key.

pub mod fs;
pub mod objects;
pub mod postgres;
pub mod sqlite;

use std::fmt;

use std::path::Path;

use anyhow::Result;
use lethe_core::config::{FsTarget, ObjectStoreTarget, SqlTarget, Target, TargetKind, Window};
use lethe_core::expiry::Raw;
use lethe_core::time::Timestamp;
use serde::{Deserialize, Serialize};

/// An item's identity in its target.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Key {
    Int(i64),
    Text(String),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Int(i) => write!(f, "{i}"),
            Key::Text(s) => f.write_str(s),
        }
    }
}

impl rusqlite::ToSql for Key {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Key::Int(i) => i.to_sql(),
            Key::Text(s) => s.to_sql(),
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
}

impl Value {
    pub fn raw(&self) -> Raw<'_> {
        match self {
            Value::Null => Raw::Null,
            Value::Int(i) => Raw::Int(*i),
            Value::Real(f) => Raw::Real(*f),
            Value::Text(s) => Raw::Text(s),
            Value::Blob => Raw::Blob,
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
    /// Why the item's facts could not be read (it is reported, never deleted on a guess).
    pub problem: Option<String>,
    /// What was judged, when the item can change between its judgement and its deletion
    /// (an object's ETag and last-modified): carried into the entry that records it.
    pub detail: Option<String>,
}

/// A table that holds a target's items, on SQLite or PostgreSQL.
pub trait SqlTable {
    /// The table and every configured column exist with usable types.
    fn check_schema(&mut self) -> Result<Vec<String>>;
    /// Columns that sweeps or erasures filter on but no index covers, with the fix.
    fn index_warnings(&mut self) -> Result<Vec<String>>;
    /// The smallest and largest key when keys are integers, to show progress.
    fn key_range(&mut self) -> Option<(i64, i64)>;
    fn count(&mut self) -> Result<u64>;
    /// The next rows that may be due at `now`, in key order, after `after`.
    fn candidates(&mut self, after: Option<&Key>, now: Timestamp, limit: usize)
    -> Result<Vec<Row>>;
    /// The next rows of one subject, in key order, after `after`.
    fn of_subject(&mut self, subject: &str, after: Option<&Key>, limit: usize) -> Result<Vec<Row>>;
    /// The rows with these keys that still exist.
    fn fetch(&mut self, keys: &[Key]) -> Result<Vec<Row>>;
    /// Starts the write transaction a batch of deletions runs in.
    fn begin(&mut self) -> Result<()>;
    fn commit(&mut self) -> Result<()>;
    fn rollback(&mut self);
    /// Deletes rows by key; between `begin` and `commit`.
    fn delete(&mut self, keys: &[Key]) -> Result<usize>;
    /// Deletes by key with one outcome per key. A table deletes all or none; a store
    /// without transactions says which objects it could not delete.
    fn delete_each(&mut self, keys: &[Key]) -> Result<Vec<Result<(), String>>> {
        self.delete(keys)?;
        Ok(vec![Ok(()); keys.len()])
    }
    /// Items seen that lack a required tag, for stores that carry tags.
    fn untagged(&self) -> Option<u64> {
        None
    }
    /// Bulk and single delete requests made, for stores that have a bulk API.
    fn delete_stats(&self) -> Option<(u64, u64)> {
        None
    }
    /// Delete each batch as soon as it is judged: a store without transactions cannot stop
    /// an item from changing between its judgement and its deletion, so keep that short.
    fn commit_every_batch(&self) -> bool {
        false
    }
    /// What the user should know about this source after a sweep.
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
    /// Every column of one subject's rows, as JSON objects.
    fn export_subject(
        &mut self,
        subject_col: &str,
        subject: &str,
        each: &mut dyn FnMut(serde_json::Map<String, serde_json::Value>) -> Result<()>,
    ) -> Result<()>;
}

/// Opens a target's table: read-only unless `write`; never creates anything.
pub fn open_table(
    cfg: &SqlTarget,
    window: &Window,
    base: &Path,
    write: bool,
) -> Result<Box<dyn SqlTable>> {
    if cfg.url.starts_with("postgres://") || cfg.url.starts_with("postgresql://") {
        Ok(Box::new(postgres::PgTable::open(cfg, window, write)?))
    } else {
        Ok(Box::new(sqlite::SqliteTable::open(
            cfg, window, base, write,
        )?))
    }
}

/// Opens any supported target as a source of items; `None` for kinds this build cannot sweep.
pub fn open_source(target: &Target, base: &Path, write: bool) -> Option<Result<Box<dyn SqlTable>>> {
    match &target.kind {
        TargetKind::Sql(sql) => Some(open_table(sql, &target.window, base, write)),
        TargetKind::Filesystem(fs) => {
            Some(fs::FsTree::open(fs, base).map(|t| Box::new(t) as Box<dyn SqlTable>))
        }
        TargetKind::ObjectStore(o) => Some(match local_root(o) {
            Some(fs) => fs::FsTree::open(&fs, base).map(|t| Box::new(t) as Box<dyn SqlTable>),
            None => objects::ObjectTarget::open(o, &o.required_tags)
                .map(|t| Box::new(t) as Box<dyn SqlTable>),
        }),
        _ => None,
    }
}

/// A `file://` object store is a directory tree: it is walked like a `filesystem` target
/// (never following a link out of it), every file an item.
fn local_root(o: &ObjectStoreTarget) -> Option<FsTarget> {
    let path = o.url.strip_prefix("file://")?;
    Some(FsTarget {
        root: path.to_string(),
        suffixes: Vec::new(),
        include: Vec::new(),
        exclude: Vec::new(),
        prune_empty_dirs: false,
    })
}

/// The roots a target's files must lie under: a sql target's `file_roots`, or a
/// filesystem target's `root`.
pub fn roots_for(target: &Target, base: &Path) -> crate::files::Roots {
    match &target.kind {
        TargetKind::Sql(sql) => crate::files::Roots::new(&sql.file_roots, base),
        TargetKind::Filesystem(fs) => {
            crate::files::Roots::new(std::slice::from_ref(&fs.root), base)
        }
        TargetKind::ObjectStore(o) => match local_root(o) {
            Some(fs) => crate::files::Roots::new(std::slice::from_ref(&fs.root), base),
            None => crate::files::Roots::default(),
        },
        _ => crate::files::Roots::default(),
    }
}

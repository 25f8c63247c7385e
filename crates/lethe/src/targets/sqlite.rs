//! `sql` targets on SQLite: candidate rows streamed in key order with the expiry filter in
//! SQL, and deletes by key inside one `BEGIN IMMEDIATE` transaction per batch.
//!
//! The SQL filter only narrows: it returns every row that may be due (with a day of margin,
//! and every row whose timestamp SQLite cannot read), and the pure decision in
//! `lethe_core::expiry` judges each one exactly. Identifiers are always quoted; values are
//! always bound.

use std::path::Path;
use std::time::Duration as StdDuration;

use anyhow::{Context, Result};
use lethe_core::config::{SqlTarget, Window};
use lethe_core::time::{MILLIS_THRESHOLD, Timestamp};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use super::{Key, Row, SqlTable, Value};
use crate::state::sqlite_path;
use crate::util::UsageError;

/// Rows the SQL filter lets through this far before their window ends are still judged in Rust.
const MARGIN_DAYS: f64 = 1.0;

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// SQL that turns a stored timestamp into a Julian day, or NULL when SQLite cannot read it.
fn julian(col: &str) -> String {
    let unix = format!(
        "((CASE WHEN abs({col}) >= {MILLIS_THRESHOLD:.1} THEN {col} / 86400000.0 ELSE {col} / 86400.0 END) + 2440587.5)"
    );
    format!(
        "(CASE typeof({col}) WHEN 'integer' THEN {unix} WHEN 'real' THEN {unix} \
         WHEN 'text' THEN (CASE WHEN {col} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*' THEN julianday({col}) END) END)"
    )
}

pub struct SqliteTable {
    conn: Connection,
    select: String,
    candidates_first: String,
    candidates_after: String,
    subject_first: Option<String>,
    subject_after: Option<String>,
    pub path: std::path::PathBuf,
    table: String,
    cfg: SqlTarget,
}

impl SqliteTable {
    /// Opens the target's database: read-only for a dry run, read-write (never create) to apply.
    pub fn open(cfg: &SqlTarget, window: &Window, base: &Path, write: bool) -> Result<Self> {
        let path = sqlite_path(&cfg.url, base)
            .ok_or_else(|| UsageError(format!("url {:?} is not a sqlite:// URL", cfg.url)))?;
        if !path.is_file() {
            return Err(UsageError(format!("database {} does not exist", path.display())).into());
        }
        let flags = if write {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        let conn = Connection::open_with_flags(&path, flags)
            .with_context(|| format!("Failed to open {}", path.display()))?;
        conn.busy_timeout(StdDuration::from_secs(30))?;
        if !write {
            // A read-only open cannot roll back a hot journal left by an interrupted writer;
            // say so plainly instead of failing later with SQLite's code.
            let probe = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
                r.get::<_, i64>(0)
            });
            if let Err(rusqlite::Error::SqliteFailure(e, _)) = &probe
                && e.extended_code == 776
            {
                return Err(UsageError(format!(
                    "database {} has a hot journal from an interrupted writer; a dry run opens it read-only and cannot roll that back (an --apply run, or the application, will)",
                    path.display()
                ))
                .into());
            }
        }

        let q = |c: &str| quote_ident(c);
        let table = q(&cfg.table);
        let key = q(&cfg.key);
        let mut cols = vec![key.clone(), q(&cfg.created_at)];
        for c in [
            &cfg.retention_days,
            &cfg.expires_at,
            &cfg.subject,
            &cfg.file,
        ] {
            cols.push(c.as_deref().map(q).unwrap_or_else(|| "NULL".into()));
        }
        let select = format!("SELECT {} FROM {table}", cols.join(", "));

        let cr = julian(&q(&cfg.created_at));
        let days = window.retention.as_days_f64();
        let row_days = match &cfg.retention_days {
            Some(rd) => {
                let rd = q(rd);
                format!(
                    "(CASE WHEN {rd} IS NULL THEN {days} WHEN typeof({rd}) IN ('integer', 'real') THEN {rd} ELSE -1e9 END)"
                )
            }
            None => format!("{days}"),
        };
        let mut due = vec![format!("{cr} IS NULL")];
        if let Some(max) = window.max {
            due.push(format!("{cr} + {} <= ?1", max.as_days_f64()));
        }
        match &cfg.expires_at {
            Some(ex) => {
                let exq = q(ex);
                due.push(format!(
                    "({exq} IS NOT NULL AND ({ex_j} IS NULL OR {ex_j} <= ?1))",
                    ex_j = julian(&exq)
                ));
                due.push(format!("({exq} IS NULL AND {cr} + {row_days} <= ?1)"));
            }
            None => due.push(format!("{cr} + {row_days} <= ?1")),
        }
        let due = due.join(" OR ");
        let candidates_first = format!("{select} WHERE ({due}) ORDER BY {key} LIMIT ?2");
        let candidates_after =
            format!("{select} WHERE {key} > ?3 AND ({due}) ORDER BY {key} LIMIT ?2");
        let (subject_first, subject_after) = match &cfg.subject {
            Some(subj) => {
                let subj = q(subj);
                (
                    Some(format!(
                        "{select} WHERE {subj} = ?1 ORDER BY {key} LIMIT ?2"
                    )),
                    Some(format!(
                        "{select} WHERE {subj} = ?1 AND {key} > ?3 ORDER BY {key} LIMIT ?2"
                    )),
                )
            }
            None => (None, None),
        };
        Ok(SqliteTable {
            conn,
            select,
            candidates_first,
            candidates_after,
            subject_first,
            subject_after,
            path,
            table,
            cfg: cfg.clone(),
        })
    }
}

impl SqlTable for SqliteTable {
    /// Checks that the table and every configured column exist with usable types.
    fn check_schema(&mut self) -> Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare("SELECT name, type FROM pragma_table_xinfo(?1)")?;
        let cols: Vec<(String, String)> = st
            .query_map([&self.cfg.table], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        if cols.is_empty() {
            return Ok(vec![format!(
                "table {:?} does not exist in {}",
                self.cfg.table,
                self.path.display()
            )]);
        }
        let mut problems = Vec::new();
        for (role, col) in self.cfg.columns() {
            let Some((_, ty)) = cols.iter().find(|(n, _)| n == col) else {
                let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
                problems.push(format!(
                    "{role} = {col:?}: table {:?} has no such column (columns: {})",
                    self.cfg.table,
                    names.join(", ")
                ));
                continue;
            };
            let t = ty.to_ascii_uppercase();
            let usable = match role {
                "created_at" | "expires_at" => {
                    t.is_empty()
                        || [
                            "DATE", "TIME", "TEXT", "CHAR", "CLOB", "INT", "REAL", "NUM", "FLOA",
                            "DOUB",
                        ]
                        .iter()
                        .any(|k| t.contains(k))
                }
                "retention_days" => {
                    t.is_empty()
                        || ["INT", "NUM", "REAL", "FLOA", "DOUB"]
                            .iter()
                            .any(|k| t.contains(k))
                }
                "file" => t.is_empty() || ["TEXT", "CHAR", "CLOB"].iter().any(|k| t.contains(k)),
                _ => !t.contains("BLOB"),
            };
            if !usable {
                problems.push(format!(
                    "{role} = {col:?}: column type {ty} cannot hold {}",
                    match role {
                        "created_at" | "expires_at" => "a timestamp",
                        "retention_days" => "a number of days",
                        "file" => "a path",
                        _ => "a key",
                    }
                ));
            }
        }
        Ok(problems)
    }

    /// The smallest and largest integer key, to show progress.
    fn key_range(&mut self) -> Option<(i64, i64)> {
        let key = quote_ident(&self.cfg.key);
        let sql = format!("SELECT min({key}), max({key}) FROM {}", self.table);
        self.conn
            .query_row(&sql, [], |r| {
                Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(1)?))
            })
            .ok()
            .and_then(|(a, b)| Some((a?, b?)))
    }

    /// Total rows and rows the filter lets through, for `lethe check`.
    fn count(&mut self) -> Result<u64> {
        let sql = format!("SELECT count(*) FROM {}", self.table);
        Ok(self.conn.query_row(&sql, [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// The next rows that may be due, in key order, after `after`.
    fn candidates(
        &mut self,
        after: Option<&Key>,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Row>> {
        let threshold = now.julian_day() + MARGIN_DAYS;
        let limit = limit as i64;
        let rows = match after {
            None => {
                let mut st = self.conn.prepare_cached(&self.candidates_first)?;
                st.query_map(rusqlite::params![threshold, limit], read_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            }
            Some(k) => {
                let mut st = self.conn.prepare_cached(&self.candidates_after)?;
                st.query_map(rusqlite::params![threshold, limit, k], read_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            }
        };
        rows.with_context(|| format!("Failed to read {}", self.table))
    }

    /// The next rows of one data subject, in key order, after `after`. The subject is only
    /// ever a bound parameter.
    fn of_subject(&mut self, subject: &str, after: Option<&Key>, limit: usize) -> Result<Vec<Row>> {
        let limit = limit as i64;
        let (Some(first), Some(next)) = (&self.subject_first, &self.subject_after) else {
            return Ok(Vec::new());
        };
        let rows = match after {
            None => {
                let mut st = self.conn.prepare_cached(first)?;
                st.query_map(rusqlite::params![subject, limit], read_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            }
            Some(k) => {
                let mut st = self.conn.prepare_cached(next)?;
                st.query_map(rusqlite::params![subject, limit, k], read_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            }
        };
        rows.with_context(|| format!("Failed to read {}", self.table))
    }

    /// Every column of one subject's rows, as JSON objects, for an access export.
    fn export_subject(
        &mut self,
        subject_col: &str,
        subject: &str,
        each: &mut dyn FnMut(serde_json::Map<String, serde_json::Value>) -> Result<()>,
    ) -> Result<()> {
        let sql = format!(
            "SELECT * FROM {} WHERE {} = ?1 ORDER BY {}",
            self.table,
            quote_ident(subject_col),
            quote_ident(&self.cfg.key)
        );
        let mut st = self.conn.prepare(&sql)?;
        let names: Vec<String> = st.column_names().iter().map(|s| s.to_string()).collect();
        let mut rows = st.query([subject])?;
        while let Some(r) = rows.next()? {
            let mut obj = serde_json::Map::new();
            for (i, n) in names.iter().enumerate() {
                let v = match r.get_ref(i)? {
                    ValueRef::Null => serde_json::Value::Null,
                    ValueRef::Integer(n) => n.into(),
                    ValueRef::Real(f) => f.into(),
                    ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
                    ValueRef::Blob(b) => {
                        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                        serde_json::json!({ "hex": hex })
                    }
                };
                obj.insert(n.clone(), v);
            }
            each(obj)?;
        }
        Ok(())
    }

    /// The rows with these keys that still exist.
    fn fetch(&mut self, keys: &[Key]) -> Result<Vec<Row>> {
        let sql = format!(
            "{} WHERE {} IN (SELECT value FROM json_each(?1))",
            self.select,
            quote_ident(&self.cfg.key)
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st
            .query_map([keys_json(keys)], read_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn begin(&mut self) -> Result<()> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .with_context(|| format!("Failed to lock {} for writing", self.path.display()))
    }

    fn commit(&mut self) -> Result<()> {
        self.conn
            .execute_batch("COMMIT")
            .with_context(|| format!("Failed to commit deletions to {}", self.path.display()))
    }

    fn rollback(&mut self) {
        let _ = self.conn.execute_batch("ROLLBACK");
    }

    /// Deletes rows by key; call between `begin` and `commit`.
    fn delete(&mut self, keys: &[Key]) -> Result<usize> {
        let sql = format!(
            "DELETE FROM {} WHERE {} IN (SELECT value FROM json_each(?1))",
            self.table,
            quote_ident(&self.cfg.key)
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        Ok(st.execute([keys_json(keys)])?)
    }

    fn index_warnings(&mut self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for col in [Some(&self.cfg.created_at), self.cfg.subject.as_ref()]
            .into_iter()
            .flatten()
        {
            let sql = "SELECT count(*) FROM pragma_index_list(?1) l JOIN pragma_index_info(l.name) i ON i.seqno = 0 WHERE i.name = ?2";
            let n: i64 = self
                .conn
                .query_row(sql, rusqlite::params![self.cfg.table, col], |r| r.get(0))?;
            if n == 0 {
                out.push(format!(
                    "column {col:?} has no index; sweeps and erasures scan the whole table. Run: CREATE INDEX {} ON {} ({});",
                    quote_ident(&format!("ix_{}_{}", self.cfg.table, col)),
                    self.table,
                    quote_ident(col)
                ));
            }
        }
        Ok(out)
    }
}

fn keys_json(keys: &[Key]) -> String {
    let v: Vec<serde_json::Value> = keys
        .iter()
        .map(|k| match k {
            Key::Int(i) => serde_json::Value::from(*i),
            Key::Text(s) => serde_json::Value::from(s.as_str()),
        })
        .collect();
    serde_json::Value::Array(v).to_string()
}

fn value(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(_) => Value::Blob,
    }
}

fn text(v: ValueRef<'_>) -> Result<Option<String>, String> {
    match v {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(i) => Ok(Some(i.to_string())),
        ValueRef::Real(f) => Ok(Some(f.to_string())),
        ValueRef::Text(t) => std::str::from_utf8(t)
            .map(|s| Some(s.to_string()))
            .map_err(|_| "is not valid UTF-8".to_string()),
        ValueRef::Blob(_) => Err("is binary".into()),
    }
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let key = match r.get_ref(0)? {
        ValueRef::Integer(i) => Ok(Key::Int(i)),
        ValueRef::Text(t) => std::str::from_utf8(t)
            .map(|s| Key::Text(s.to_string()))
            .map_err(|_| "key is not valid UTF-8".to_string()),
        ValueRef::Null => Err("key is NULL".into()),
        _ => Err("key is neither an integer nor text".into()),
    };
    Ok(Row {
        key,
        created_at: value(r.get_ref(1)?),
        retention_days: value(r.get_ref(2)?),
        expires_at: value(r.get_ref(3)?),
        subject: text(r.get_ref(4)?),
        file: text(r.get_ref(5)?),
        problem: None,
        detail: None,
    })
}

//! `sql` targets on SQLite: candidate rows streamed in key order with the expiry filter in
//! SQL, and deletes by key inside one `BEGIN IMMEDIATE` transaction per group of batches.
//!
//! The SQL filter only narrows: it returns every row that may be due (with a day of margin,
//! and every row whose timestamp SQLite cannot read, or whose number is not a plausible
//! unix time), and the pure decision in `lethe_core::expiry` judges each one exactly.
//! Identifiers are always quoted; values are always bound.
//!
//! Rows are read inside the write transaction that deletes them (`BEGIN IMMEDIATE` holds
//! the database's write lock from the read to the commit), so no writer can change a row
//! between its judgement and its deletion. Every delete returns the keys it removed
//! (`DELETE … RETURNING`); a row not returned was kept by the database and is reported.

use std::path::Path;
use std::time::Duration as StdDuration;

use anyhow::{Context, Result};
use lethe_core::config::Window;
use lethe_core::time::{PLAUSIBLE_SECS, TimeFormat, Timestamp};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql};

use super::SqlTarget;
use super::shared::{self as sql, ColumnType, Dialect, quote_ident};
use crate::targets::{
    Capabilities, Connector, Deleter, Deletion, ExportSink, Key, Lookup, Removed, Row, Value,
    busy_message, delete_confirmed, found_or_gone, recheck_deleted,
};
use crate::state::sqlite_path;
use crate::util::UsageError;

/// Rows the SQL filter lets through this far before their window ends are still judged in Rust.
const MARGIN_DAYS: f64 = 1.0;
/// Per-item retentions the filter computes with; anything else is let through and judged.
const MAX_FILTER_DAYS: f64 = 3_650_000.0;

/// What a declared column type holds, by SQLite's affinity rules (section 3.1 of its
/// datatype page), with dates and times told apart from other numbers.
fn column_type(declared: &str) -> ColumnType {
    let t = declared.to_ascii_uppercase();
    let has = |words: &[&str]| words.iter().any(|w| t.contains(w));
    if t.is_empty() {
        ColumnType::Untyped
    } else if has(&["INT"]) {
        ColumnType::Number
    } else if has(&["CHAR", "CLOB", "TEXT"]) {
        ColumnType::Text
    } else if has(&["BLOB"]) {
        ColumnType::Blob
    } else if has(&["REAL", "FLOA", "DOUB", "NUM"]) {
        ColumnType::Number
    } else if has(&["DATE", "TIME"]) {
        ColumnType::Timestamp
    } else {
        ColumnType::Other
    }
}

/// SQL that turns a stored timestamp into a Julian day, or NULL when it cannot be read
/// safely: the row is then let through and judged (and reported) in Rust.
fn julian(col: &str, format: Option<&TimeFormat>) -> String {
    let (lo, hi) = PLAUSIBLE_SECS;
    let secs = format!("({col} / 86400.0 + 2440587.5)");
    let millis = format!("({col} / 86400000.0 + 2440587.5)");
    let numeric = match format {
        None => format!(
            "(CASE WHEN {col} >= {lo:.1} AND {col} < {hi:.1} THEN {secs} \
             WHEN {col} >= {lo:.1} * 1000 AND {col} < {hi:.1} * 1000 THEN {millis} END)"
        ),
        Some(TimeFormat::UnixSeconds) => {
            format!("(CASE WHEN abs({col}) < 2.5e11 THEN {secs} END)")
        }
        Some(TimeFormat::UnixMillis) => {
            format!("(CASE WHEN abs({col}) < 2.5e14 THEN {millis} END)")
        }
        Some(_) => "NULL".into(),
    };
    let text = match format {
        None | Some(TimeFormat::Iso8601) => format!(
            "(CASE WHEN {col} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*' THEN julianday({col}) END)"
        ),
        Some(_) => "NULL".into(),
    };
    format!(
        "(CASE typeof({col}) WHEN 'integer' THEN {numeric} WHEN 'real' THEN {numeric} WHEN 'text' THEN {text} END)"
    )
}

/// A stored value, kept exactly as SQLite gave it, to carry the place of a scan.
#[derive(Clone, Debug, PartialEq)]
enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

impl Cell {
    fn of(v: ValueRef<'_>) -> Cell {
        match v {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(i) => Cell::Int(i),
            ValueRef::Real(f) => Cell::Real(f),
            ValueRef::Text(t) => Cell::Text(t.to_vec()),
            ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
        }
    }
}

impl ToSql for Cell {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Cell::Null => ValueRef::Null,
            Cell::Int(i) => ValueRef::Integer(*i),
            Cell::Real(f) => ValueRef::Real(*f),
            Cell::Text(t) => ValueRef::Text(t),
            Cell::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

pub struct SqliteTable {
    conn: Connection,
    select: String,
    /// The due filter; `?1` is the threshold as a Julian day.
    due: String,
    /// `k1, k2`: the key columns, quoted, in order.
    key_list: String,
    /// The key columns as compared, ordered and matched: byte for byte (`COLLATE BINARY`),
    /// whatever collation the column declares, so that a NOCASE or RTRIM column never
    /// lets one key name two rows nor a scan skip one.
    key_cmp: String,
    /// `k1 IS NOT NULL AND k2 IS NOT NULL`.
    key_not_null: String,
    /// ` AND NOT (…)`: for a redacting target, leaves out rows already redacted.
    not_done: String,
    /// `CAST(subj AS TEXT) COLLATE BINARY = ?1 AND subj = ?1`: exact text, index-friendly.
    subject_match: Option<String>,
    nkeys: usize,
    /// The database has a trigger, looked at when each write transaction begins (no one can
    /// add one while Lethe holds the write lock): a delete is then confirmed by reading
    /// that each row is gone, since a trigger can put a row back or move another under a
    /// key the delete then names.
    triggers: bool,
    /// Where the current scan stopped: the last row's key as stored.
    cursor: Option<Vec<Cell>>,
    pub path: std::path::PathBuf,
    table: String,
    cfg: SqlTarget,
}

impl SqliteTable {
    /// Opens the target's database: read-only for a dry run, read-write (never create) to apply.
    pub fn open(cfg: &SqlTarget, window: &Window, base: &Path, write: bool) -> Result<Self> {
        let path = sqlite_path(&cfg.url, base).ok_or_else(|| {
            UsageError(format!(
                "url {:?} is not a sqlite:// URL",
                crate::db::redact(&cfg.url)
            ))
        })?;
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
        // Bounded: an application's lock makes the target busy, never a sweep that hangs.
        conn.busy_timeout(StdDuration::from_secs(
            cfg.lock_timeout.as_secs().max(1) as u64
        ))?;
        // The table's own integrity rules apply to Lethe as to the application: a row that a
        // restricting foreign key protects is refused (and reported), not orphaned.
        conn.execute_batch("PRAGMA foreign_keys = ON")?;
        if cfg.redacting.is_some() {
            register_sha256(&conn)?;
        }
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
        let keys: Vec<String> = cfg.key.iter().map(|k| q(k)).collect();
        let key_list = keys.join(", ");
        let key_cmp = if rowid_alias(&conn, cfg)? {
            key_list.clone()
        } else {
            keys.iter()
                .map(|k| format!("{k} COLLATE BINARY"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let key_not_null = keys
            .iter()
            .map(|k| format!("{k} IS NOT NULL"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let mut cols = keys.clone();
        cols.push(q(&cfg.created_at));
        for c in [&cfg.retention_days, &cfg.expires_at] {
            cols.push(c.as_deref().map(q).unwrap_or_else(|| "NULL".into()));
        }
        // The subject as exact text, whatever the column's type: the hash and the match
        // read the same value.
        cols.push(
            cfg.subject
                .as_deref()
                .map(|s| format!("CAST({} AS TEXT)", q(s)))
                .unwrap_or_else(|| "NULL".into()),
        );
        cols.push(cfg.file.as_deref().map(q).unwrap_or_else(|| "NULL".into()));
        cols.push(
            cfg.sensitivity_column
                .as_deref()
                .map(q)
                .unwrap_or_else(|| "NULL".into()),
        );
        let select = format!("SELECT {} FROM {table}", cols.join(", "));

        let cr = julian(&q(&cfg.created_at), cfg.created_at_format.as_ref());
        let days = window.retention.as_days_f64();
        // A `redact_after` pass is due by created_at alone; the row's own expiry columns
        // are still read, for the deletion's judgement.
        let (retention_col, expires_col) = if cfg.created_only {
            (&None, &None)
        } else {
            (&cfg.retention_days, &cfg.expires_at)
        };
        let row_days = match retention_col {
            Some(rd) => {
                let rd = q(rd);
                format!(
                    "(CASE WHEN {rd} IS NULL THEN {days} WHEN typeof({rd}) IN ('integer', 'real') AND {rd} >= 0 AND {rd} <= {MAX_FILTER_DAYS:.1} THEN {rd} ELSE -1e9 END)"
                )
            }
            None => format!("{days}"),
        };
        let mut due = vec![format!("{cr} IS NULL")];
        // The earliest any cap (the category's max, a sensitivity level's) may end a row's
        // life: such rows must reach the pure decision.
        if let Some(cap) = window.earliest_cap(cfg.sensitivity_column.is_some()) {
            due.push(format!("{cr} + {} <= ?1", cap.as_days_f64()));
        }
        match expires_col {
            Some(ex) => {
                let exq = q(ex);
                due.push(format!(
                    "({exq} IS NOT NULL AND ({ex_j} IS NULL OR {ex_j} <= ?1))",
                    ex_j = julian(&exq, cfg.expires_at_format.as_ref())
                ));
                due.push(format!("({exq} IS NULL AND {cr} + {row_days} <= ?1)"));
            }
            None => due.push(format!("{cr} + {row_days} <= ?1")),
        }
        // A redacting target's rows whose columns already hold what a redaction leaves are
        // done with: never selected, redacted or recorded again.
        let not_done = cfg
            .redacting
            .as_ref()
            .map(|r| format!(" AND NOT {}", r.done(Dialect::Sqlite, q)))
            .unwrap_or_default();
        let subject_match = cfg.subject.as_deref().map(|s| {
            let s = q(s);
            format!("{s} = ?1 AND CAST({s} AS TEXT) COLLATE BINARY = ?1{not_done}")
        });
        Ok(SqliteTable {
            conn,
            select,
            due: format!("({}){not_done}", due.join(" OR ")),
            not_done,
            key_list,
            key_cmp,
            key_not_null,
            subject_match,
            nkeys: keys.len(),
            triggers: true,
            cursor: None,
            path,
            table,
            cfg: cfg.clone(),
        })
    }

    /// The next rows matching `filter` (whose first parameter is `first`) after the cursor.
    fn page(&mut self, filter: &str, first: &dyn ToSql, limit: usize) -> Result<Vec<Row>> {
        let limit = limit as i64;
        let mut params: Vec<&dyn ToSql> = vec![first, &limit];
        let after = match &self.cursor {
            Some(cells) => {
                let marks: Vec<String> = (0..cells.len()).map(|i| format!("?{}", i + 3)).collect();
                params.extend(cells.iter().map(|c| c as &dyn ToSql));
                format!(" AND ({}) > ({})", self.key_cmp, marks.join(", "))
            }
            None => String::new(),
        };
        let sql = format!(
            "{} WHERE {} AND ({filter}){after} ORDER BY {} LIMIT ?2",
            self.select, self.key_not_null, self.key_cmp
        );
        let nkeys = self.nkeys;
        let mut st = self.conn.prepare_cached(&sql)?;
        let read: Vec<(Row, Vec<Cell>)> = st
            .query_map(params.as_slice(), |r| read_row(r, nkeys))?
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| busy_or(e, &self.path, self.cfg.lock_timeout))
            .with_context(|| format!("Failed to read {}", self.table))?;
        if let Some((_, cells)) = read.last() {
            // A scan that does not move on would read the same rows forever.
            if self.cursor.as_ref() == Some(cells) {
                anyhow::bail!(
                    "the scan of {} did not move past key {:?}; stopped rather than judge the same rows again",
                    self.table,
                    cells
                );
            }
            self.cursor = Some(cells.clone());
        }
        Ok(read.into_iter().map(|(row, _)| row).collect())
    }

    /// The key columns covered by a unique index or primary key, or the problem with them.
    fn unique_key_problem(&mut self) -> Result<Option<String>> {
        let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        let covered = |cols: &[String], key: &[String]| {
            !cols.is_empty() && cols.iter().all(|c| key.iter().any(|k| same(c, k)))
        };
        // An INTEGER PRIMARY KEY is the rowid itself: unique.
        let mut unique: Vec<(String, Vec<String>)> = Vec::new();
        if let Some(name) = integer_primary_key(&self.conn, &self.cfg.table)? {
            if covered(std::slice::from_ref(&name), &self.cfg.key) {
                return Ok(None);
            }
            unique.push(("the INTEGER PRIMARY KEY".into(), vec![name]));
        }
        let indexes: Vec<(String, String)> = {
            let mut st = self.conn.prepare(
                "SELECT name, origin FROM pragma_index_list(?1) WHERE \"unique\" = 1 AND partial = 0",
            )?;
            st.query_map([&self.cfg.table], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?
        };
        for (index, origin) in indexes {
            let cols: Vec<Option<String>> = {
                let mut st = self
                    .conn
                    .prepare("SELECT name FROM pragma_index_info(?1) ORDER BY seqno")?;
                st.query_map([&index], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?
            };
            // An index on an expression names no column for it: it cannot make a key unique.
            let Some(cols) = cols.into_iter().collect::<Option<Vec<String>>>() else {
                continue;
            };
            if covered(&cols, &self.cfg.key) {
                return Ok(None);
            }
            let name = if origin == "pk" {
                "the PRIMARY KEY".to_string()
            } else {
                format!("unique index {index:?}")
            };
            unique.push((name, cols));
        }
        Ok(Some(sql::not_unique(&self.cfg, &self.table, &unique)))
    }

    /// Foreign keys elsewhere that delete or change rows in other tables when a row of
    /// this one is deleted: nothing judged those rows and no hold here protects them.
    fn cascade_warnings(&mut self) -> Result<Vec<String>> {
        let tables: Vec<String> = {
            let mut st = self
                .conn
                .prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")?;
            st.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        let mut out = Vec::new();
        for t in tables {
            let mut st = self.conn.prepare(
                "SELECT DISTINCT on_delete FROM pragma_foreign_key_list(?1) WHERE \"table\" = ?2 COLLATE NOCASE",
            )?;
            let acts: Vec<String> = st
                .query_map(rusqlite::params![t, self.cfg.table], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for act in acts {
                if matches!(act.as_str(), "CASCADE" | "SET NULL" | "SET DEFAULT") {
                    out.push(sql::cascade(&t, &self.cfg.table, &act));
                }
            }
        }
        Ok(out)
    }
}

/// Whether the key is the table's INTEGER PRIMARY KEY, the rowid itself: integers, with no
/// collation to pin (and pinning one would keep SQLite from walking the table in order).
fn rowid_alias(conn: &Connection, cfg: &SqlTarget) -> Result<bool> {
    Ok(integer_primary_key(conn, &cfg.table)?
        .is_some_and(|name| cfg.key.len() == 1 && cfg.key[0].eq_ignore_ascii_case(&name)))
}

/// The table's INTEGER PRIMARY KEY column (the rowid's alias), if it has one.
fn integer_primary_key(conn: &Connection, table: &str) -> Result<Option<String>> {
    let mut st =
        conn.prepare("SELECT name, type FROM pragma_table_info(?1) WHERE pk > 0 ORDER BY pk")?;
    let pk: Vec<(String, String)> = st
        .query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(match pk.as_slice() {
        [(name, ty)] if ty.eq_ignore_ascii_case("INTEGER") => Some(name.clone()),
        _ => None,
    })
}

/// A lock wait that ran out reads as the target being busy.
fn busy_or(e: rusqlite::Error, path: &Path, timeout: lethe_core::time::Duration) -> anyhow::Error {
    if is_busy(&e) {
        anyhow::anyhow!(busy_message(
            &format!("database {}", path.display()),
            timeout
        ))
    } else {
        e.into()
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

impl SqliteTable {
    /// Of these rows, those still there; on a redacting target, those that do not read as
    /// redacted now.
    fn unchanged(&mut self, keys: &[Key]) -> Result<std::collections::HashSet<Key>> {
        let sql = if self.nkeys == 1 {
            format!(
                "SELECT {} FROM {} WHERE {} IN (SELECT value FROM json_each(?1)){}",
                self.key_list, self.table, self.key_cmp, self.not_done
            )
        } else {
            let parts: Vec<String> = (0..self.nkeys).map(|i| format!("value ->> {i}")).collect();
            format!(
                "SELECT {} FROM {} WHERE ({}) IN (SELECT {} FROM json_each(?1)){}",
                self.key_list,
                self.table,
                self.key_cmp,
                parts.join(", "),
                self.not_done
            )
        };
        let nkeys = self.nkeys;
        let mut st = self.conn.prepare_cached(&sql)?;
        let still = st
            .query_map([keys_json(keys)], |r| {
                read_key(r, nkeys).map(|(k, _)| k.ok())
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(still.into_iter().flatten().collect())
    }
}

impl Deleter for SqliteTable {
    fn execute(&mut self, statement: &str) -> Result<()> {
        Ok(self.conn.execute_batch(statement)?)
    }

    fn delete_returning(&mut self, keys: &[Key]) -> Result<Removed> {
        // A redacting target overwrites its columns instead, only on rows not yet redacted,
        // and counts a row only when the database names it among those it updated.
        let head = match &self.cfg.redacting {
            Some(r) => format!(
                "UPDATE {} SET {}",
                self.table,
                r.set_list(Dialect::Sqlite, quote_ident)
            ),
            None => format!("DELETE FROM {}", self.table),
        };
        let change = if self.nkeys == 1 {
            format!(
                "{head} WHERE {} IN (SELECT value FROM json_each(?1)){}",
                self.key_cmp, self.not_done
            )
        } else {
            let parts: Vec<String> = (0..self.nkeys).map(|i| format!("value ->> {i}")).collect();
            format!(
                "{head} WHERE ({}) IN (SELECT {} FROM json_each(?1)){}",
                self.key_cmp,
                parts.join(", "),
                self.not_done
            )
        };
        let keys_json = keys_json(keys);
        // Keys are unique and each names at most one row.
        let mut seen = std::collections::HashSet::new();
        let distinct: Vec<&Key> = keys.iter().filter(|k| seen.insert(*k)).collect();
        // The count first, on a deleting target: SQLite's count of the rows this statement
        // itself deleted (never a trigger's or a cascade's). As many as keys is every key,
        // confirmed without sending each key back. Fewer: this statement's deletions are
        // undone (the caller's savepoint, `lethe_group`, is open) and made again naming
        // each row removed.
        let counted = self.cfg.redacting.is_none() && {
            let n = self
                .conn
                .prepare_cached(&change)?
                .execute([keys_json.as_str()])?;
            if n != distinct.len() {
                self.rollback_to()?;
            }
            n == distinct.len()
        };
        if counted && !self.triggers {
            return Ok(Removed::All);
        }
        let mut gone: Vec<Key> = if counted {
            distinct.iter().map(|k| (*k).clone()).collect()
        } else {
            let sql = format!("{change} RETURNING {}", self.key_list);
            let nkeys = self.nkeys;
            let mut st = self.conn.prepare_cached(&sql)?;
            let gone = st
                .query_map([keys_json.as_str()], |r| {
                    read_key(r, nkeys).map(|(k, _)| k.ok())
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            gone.into_iter().flatten().collect()
        };
        if (self.cfg.redacting.is_some() || self.triggers) && !gone.is_empty() {
            // A redaction counts only where the row reads as redacted afterwards, in this
            // transaction: a trigger that put the text back (or a column whose type cannot
            // hold the redacted value) leaves the row failed, never recorded redacted. A
            // deletion, where a trigger may have put a row back or moved another under a
            // key the statement then deleted, only where its row is gone now.
            let still = self.unchanged(&gone)?;
            gone.retain(|k| !still.contains(k));
        }
        // As many rows as keys is every key.
        if gone.len() == distinct.len() {
            return Ok(Removed::All);
        }
        Ok(Removed::These(gone))
    }

    fn is_lock_timeout(&self, e: &anyhow::Error) -> bool {
        e.downcast_ref::<rusqlite::Error>().is_some_and(is_busy)
    }

    fn lockable(&mut self, _keys: &[Key]) -> Result<Option<Vec<Key>>> {
        Ok(None)
    }

    fn lock_timeout(&self) -> lethe_core::time::Duration {
        self.cfg.lock_timeout
    }
}

impl Connector for SqliteTable {
    /// Checks that the table and every configured column exist with usable types, and
    /// that the key names one row.
    fn check_schema(&mut self) -> Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare("SELECT name, type FROM pragma_table_xinfo(?1)")?;
        let cols: Vec<(String, String)> = st
            .query_map([&self.cfg.table], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        drop(st);
        let mut problems = sql::column_problems(
            &self.cfg,
            &cols,
            column_type,
            &self.path.display().to_string(),
        );
        if problems.is_empty()
            && let Some(p) = self.unique_key_problem()?
        {
            problems.push(p);
        }
        Ok(problems)
    }

    /// The smallest and largest integer key, to show progress.
    fn key_range(&mut self) -> Option<(i64, i64)> {
        if self.nkeys != 1 {
            return None;
        }
        let key = &self.key_list;
        let sql = format!("SELECT min({key}), max({key}) FROM {}", self.table);
        self.conn
            .query_row(&sql, [], |r| {
                Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(1)?))
            })
            .ok()
            .and_then(|(a, b)| Some((a?, b?)))
    }

    fn count(&mut self) -> Result<Option<u64>> {
        let sql = format!("SELECT count(*) FROM {}", self.table);
        Ok(Some(
            self.conn.query_row(&sql, [], |r| r.get::<_, i64>(0))? as u64
        ))
    }

    fn count_untagged(&mut self, required: &[String]) -> Result<Option<u64>> {
        let Some(cond) = self
            .cfg
            .untagged_condition(required, |c| {
                format!("trim(CAST({c} AS TEXT), ' ' || char(9) || char(10) || char(13)) = ''")
            })
        else {
            return Ok(None);
        };
        let sql = format!("SELECT count(*) FROM {} WHERE {cond}", self.table);
        Ok(Some(
            self.conn.query_row(&sql, [], |r| r.get::<_, i64>(0))? as u64,
        ))
    }

    fn candidates(&mut self, now: Timestamp, limit: usize) -> Result<Vec<Row>> {
        let threshold = now.julian_day() + MARGIN_DAYS;
        let due = self.due.clone();
        self.page(&due, &threshold, limit)
    }

    /// The next rows of one data subject. The subject is only ever a bound parameter, and
    /// matched as exact text: not through the column's numeric affinity or collation.
    fn of_subject(&mut self, subject: &str, limit: usize) -> Result<Vec<Row>> {
        let Some(filter) = self.subject_match.clone() else {
            return Ok(Vec::new());
        };
        let rows = self.page(&filter, &subject, limit)?;
        Ok(sql::only_subject(rows, subject))
    }

    fn null_keys(&mut self, now: Timestamp, subject: Option<&str>) -> Result<u64> {
        let any_null = self
            .cfg
            .key
            .iter()
            .map(|k| format!("{} IS NULL", quote_ident(k)))
            .collect::<Vec<_>>()
            .join(" OR ");
        let (filter, first): (String, Box<dyn ToSql>) = match subject {
            Some(s) => match &self.subject_match {
                Some(m) => (m.clone(), Box::new(s.to_string())),
                None => return Ok(0),
            },
            None => (self.due.clone(), Box::new(now.julian_day() + MARGIN_DAYS)),
        };
        let sql = format!(
            "SELECT count(*) FROM {} WHERE ({any_null}) AND ({filter})",
            self.table
        );
        let n: i64 = self.conn.query_row(&sql, [first.as_ref()], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// The database file (by device and inode, whatever path spells it) and the table
    /// (SQLite's names ignore ASCII case).
    fn identity(&mut self) -> Result<Option<Vec<String>>> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&self.path)
            .with_context(|| format!("Failed to read {}", self.path.display()))?;
        Ok(Some(vec![format!(
            "sqlite file {}:{} table {}",
            meta.dev(),
            meta.ino(),
            self.cfg.table.to_ascii_lowercase()
        )]))
    }

    /// Every column of one subject's rows, as JSON objects, for an access export.
    fn export_subject(&mut self, subject_col: &str, subject: &str, each: ExportSink) -> Result<()> {
        let s = quote_ident(subject_col);
        let sql = format!(
            "SELECT * FROM {} WHERE {s} = ?1 AND CAST({s} AS TEXT) COLLATE BINARY = ?1 ORDER BY {}",
            self.table, self.key_cmp
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

    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    /// On a redacting target a row already redacted reads as gone: nothing is left to do
    /// to it (an interrupted run's redaction is then recorded once, on recovery).
    fn lookup(&mut self, keys: &[Key]) -> Result<Vec<Lookup>> {
        let sql = if self.nkeys == 1 {
            format!(
                "{} WHERE {} IN (SELECT value FROM json_each(?1)){}",
                self.select, self.key_cmp, self.not_done
            )
        } else {
            let parts: Vec<String> = (0..self.nkeys).map(|i| format!("value ->> {i}")).collect();
            format!(
                "{} WHERE ({}) IN (SELECT {} FROM json_each(?1)){}",
                self.select,
                self.key_cmp,
                parts.join(", "),
                self.not_done
            )
        };
        let nkeys = self.nkeys;
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st
            .query_map([keys_json(keys)], |r| {
                read_row(r, nkeys).map(|(row, _)| row)
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(found_or_gone(keys, rows))
    }

    fn begin(&mut self) -> Result<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| {
            busy_or(e, &self.path, self.cfg.lock_timeout).context(format!(
                "Failed to lock {} for writing",
                self.path.display()
            ))
        })?;
        // Unknown counts as a trigger: every row is then read again after its delete.
        self.triggers = self
            .conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'trigger')",
                [],
                |r| r.get::<_, bool>(0),
            )
            .unwrap_or(true);
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        self.conn
            .execute_batch("COMMIT")
            .with_context(|| format!("Failed to commit deletions to {}", self.path.display()))
    }

    fn rollback(&mut self) {
        let _ = self.conn.execute_batch("ROLLBACK");
    }

    fn delete(&mut self, keys: &[Key]) -> Result<Vec<Deletion>> {
        let mut each = delete_confirmed(self, keys)?;
        // Groups confirm their own rows; a trigger a later group's statement ran may have
        // put back a row an earlier group removed: looked at once more, together.
        if self.triggers {
            recheck_deleted(keys, &mut each, |gone| self.unchanged(gone))?;
        }
        Ok(if self.cfg.redacting.is_some() {
            sql::as_redaction(each)
        } else {
            each
        })
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
                out.push(sql::missing_index(
                    col,
                    &self.table,
                    Some(&format!("ix_{}_{}", self.cfg.table, col)),
                ));
            }
        }
        out.extend(self.cascade_warnings()?);
        let not_null: Vec<String> = {
            let mut st = self
                .conn
                .prepare("SELECT name FROM pragma_table_info(?1) WHERE \"notnull\" = 1")?;
            st.query_map([&self.cfg.table], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        out.extend(sql::refused_redactions(&self.cfg, &not_null));
        Ok(out)
    }
}

/// Registers `lethe_sha256(text)`: the hex SHA-256 of a text's bytes (NULL for NULL), for
/// `redact_with = "sha256"` (SQLite has no hash function of its own).
fn register_sha256(conn: &Connection) -> Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        sql::SQLITE_SHA256,
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            Ok(match ctx.get_raw(0) {
                ValueRef::Null => None,
                ValueRef::Text(t) | ValueRef::Blob(t) => Some(lethe_core::audit::sha256_hex(t)),
                ValueRef::Integer(i) => Some(lethe_core::audit::sha256_hex(i.to_string().as_bytes())),
                ValueRef::Real(f) => Some(lethe_core::audit::sha256_hex(f.to_string().as_bytes())),
            })
        },
    )
    .context("Failed to register the sha256 function for redact_with = \"sha256\"")
}

/// Keys as a JSON array for `json_each`: a composite key is an array of its parts.
fn keys_json(keys: &[Key]) -> String {
    fn one(k: &Key) -> serde_json::Value {
        match k {
            Key::Int(i) => serde_json::Value::from(*i),
            Key::Text(s) => serde_json::Value::from(s.as_str()),
            Key::Composite(parts) => serde_json::Value::Array(parts.iter().map(one).collect()),
        }
    }
    serde_json::Value::Array(keys.iter().map(one).collect()).to_string()
}

/// A stored value as the state's SQL layer reads it; bytes are kept apart (they are no
/// timestamp, number or name).
fn value(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Blob(_) => Value::Blob,
        other => match crate::db::from_sqlite(other) {
            crate::db::Val::Null => Value::Null,
            crate::db::Val::Int(i) => Value::Int(i),
            crate::db::Val::Real(f) => Value::Real(f),
            crate::db::Val::Text(t) => Value::Text(t),
        },
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

/// The key of a row, or (as its readable stand-in) why it cannot be named exactly; and the
/// key's cells as stored, to go on from.
#[allow(clippy::type_complexity)]
fn read_key(
    r: &rusqlite::Row<'_>,
    nkeys: usize,
) -> rusqlite::Result<(Result<Key, (String, String)>, Vec<Cell>)> {
    let mut parts = Vec::with_capacity(nkeys);
    let mut cells = Vec::with_capacity(nkeys);
    let mut problem = None;
    for i in 0..nkeys {
        let v = r.get_ref(i)?;
        cells.push(Cell::of(v));
        let part = match v {
            ValueRef::Integer(n) => Key::Int(n),
            ValueRef::Text(t) => match std::str::from_utf8(t) {
                Ok(s) => Key::Text(s.to_string()),
                Err(_) => {
                    problem.get_or_insert("is not valid UTF-8");
                    Key::Text(String::from_utf8_lossy(t).into_owned())
                }
            },
            ValueRef::Null => {
                problem.get_or_insert("is NULL");
                Key::Text("NULL".into())
            }
            ValueRef::Real(f) => {
                problem.get_or_insert("is a real number");
                Key::Text(f.to_string())
            }
            ValueRef::Blob(b) => {
                problem.get_or_insert("is binary");
                Key::Text(format!(
                    "x'{}'",
                    b.iter().map(|x| format!("{x:02x}")).collect::<String>()
                ))
            }
        };
        parts.push(part);
    }
    let key = Key::from_parts(parts);
    Ok(match problem {
        None => (Ok(key), cells),
        Some(why) => (Err((key.to_string(), why.to_string())), cells),
    })
}

fn read_row(r: &rusqlite::Row<'_>, nkeys: usize) -> rusqlite::Result<(Row, Vec<Cell>)> {
    let (key, cells) = read_key(r, nkeys)?;
    let (key, problem) = match key {
        Ok(k) => (Ok(k), None),
        // Reported under its readable stand-in, never deleted: it cannot be named exactly.
        Err((shown, why)) => (
            Ok(Key::Text(shown)),
            Some(format!("its key {why}, so it cannot be named exactly")),
        ),
    };
    let n = nkeys;
    Ok((
        Row {
            key,
            created_at: value(r.get_ref(n)?),
            retention_days: value(r.get_ref(n + 1)?),
            expires_at: value(r.get_ref(n + 2)?),
            subject: text(r.get_ref(n + 3)?),
            file: text(r.get_ref(n + 4)?),
            sensitivity: value(r.get_ref(n + 5)?),
            problem,
            detail: None,
            in_use: None,
        },
        cells,
    ))
}

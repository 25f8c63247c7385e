//! `sql` targets on PostgreSQL: `timestamp`, `timestamptz`, `date`, integer-epoch and text
//! `created_at` columns; `schema.table` names; keys of any orderable type.
//!
//! Every value is read as text and judged by the same pure decision as on SQLite. The SQL
//! filter narrows only where PostgreSQL can read the column without risk of an error (typed
//! timestamps and numbers); a text timestamp cannot be cast safely in a query, so text
//! columns are streamed whole and judged in Rust. Values are always bound, as text, and cast
//! in SQL to the column's own type.

use anyhow::{Context, Result};
use lethe_core::config::{SqlTarget, Window};
use lethe_core::time::{MILLIS_THRESHOLD, Timestamp};
use postgres::Client;

use super::{Key, Row, SqlTable, Value};
use crate::db::redact;

const MARGIN_SECS: i64 = 86_400;

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `schema.table` or `table`, quoted.
fn quote_table(name: &str) -> (Option<String>, String, String) {
    match name.split_once('.') {
        Some((s, t)) => (
            Some(s.to_string()),
            t.to_string(),
            format!("{}.{}", quote_ident(s), quote_ident(t)),
        ),
        None => (None, name.to_string(), quote_ident(name)),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Timestamptz,
    Timestamp,
    Date,
    Number,
    Text,
    Other,
}

fn kind(pg_type: &str) -> Kind {
    let t = pg_type.to_ascii_lowercase();
    if t.starts_with("timestamp") && t.contains("with time zone") {
        Kind::Timestamptz
    } else if t.starts_with("timestamp") {
        Kind::Timestamp
    } else if t == "date" {
        Kind::Date
    } else if [
        "smallint",
        "integer",
        "bigint",
        "numeric",
        "real",
        "double precision",
    ]
    .iter()
    .any(|k| t.starts_with(k))
    {
        Kind::Number
    } else if t == "text" || t.starts_with("character") {
        Kind::Text
    } else {
        Kind::Other
    }
}

/// The column as text the pure decision reads: typed timestamps in RFC 3339 UTC.
fn as_text(col: &str, k: Kind) -> String {
    const FMT: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'"#;
    match k {
        Kind::Timestamptz => format!("to_char({col} AT TIME ZONE 'UTC', {FMT})"),
        Kind::Timestamp => format!("to_char({col}, {FMT})"),
        Kind::Date => format!("to_char({col}, 'YYYY-MM-DD')"),
        _ => format!("{col}::text"),
    }
}

/// The column as a `timestamptz`, where PostgreSQL can compute that without failing.
fn instant(col: &str, k: Kind) -> Option<String> {
    match k {
        Kind::Timestamptz => Some(col.to_string()),
        Kind::Timestamp => Some(format!("({col} AT TIME ZONE 'UTC')")),
        Kind::Date => Some(format!("({col}::timestamp AT TIME ZONE 'UTC')")),
        Kind::Number => Some(format!(
            "to_timestamp(CASE WHEN abs({col}::float8) >= {MILLIS_THRESHOLD:.1} THEN {col}::float8 / 1000.0 ELSE {col}::float8 END)"
        )),
        _ => None,
    }
}

pub struct PgTable {
    client: Client,
    cfg: SqlTarget,
    location: String,
    table: String,
    schema: Option<String>,
    bare_table: String,
    key_type: String,
    select: String,
    due: String,
}

impl PgTable {
    pub fn open(cfg: &SqlTarget, window: &Window, write: bool) -> Result<Self> {
        let location = redact(&cfg.url);
        let mut client = crate::db::connect_pg(&cfg.url, cfg.password_env.as_deref())?;
        if !write {
            client.batch_execute("SET default_transaction_read_only = on")?;
        }
        let (schema, bare_table, table) = quote_table(&cfg.table);
        let mut t = PgTable {
            client,
            cfg: cfg.clone(),
            location,
            table,
            schema,
            bare_table,
            key_type: "text".into(),
            select: String::new(),
            due: "TRUE".into(),
        };
        let cols = t.columns()?;
        let ty = |c: &str| cols.iter().find(|(n, _)| n == c).map(|(_, t)| t.clone());
        if let Some(k) = ty(&cfg.key) {
            t.key_type = k;
        }
        let q = quote_ident;
        let kind_of = |c: &Option<String>| c.as_ref().and_then(|c| ty(c)).map(|t| kind(&t));
        let created_kind = ty(&cfg.created_at).map(|t| kind(&t)).unwrap_or(Kind::Other);
        let mut select = vec![
            format!("{}::text", q(&cfg.key)),
            as_text(&q(&cfg.created_at), created_kind),
        ];
        for c in [&cfg.retention_days, &cfg.expires_at] {
            select.push(match (c, kind_of(c)) {
                (Some(c), Some(k)) => as_text(&q(c), k),
                _ => "NULL::text".into(),
            });
        }
        for c in [&cfg.subject, &cfg.file] {
            select.push(match c {
                Some(c) => format!("{}::text", q(c)),
                None => "NULL::text".into(),
            });
        }
        // Aliased, so that ORDER BY and WHERE always mean the table's own columns.
        let select: Vec<String> = select
            .into_iter()
            .enumerate()
            .map(|(i, e)| format!("{e} AS lethe_c{i}"))
            .collect();
        t.select = format!("SELECT {} FROM {}", select.join(", "), t.table);

        // The filter: rows that may be due. Anything PostgreSQL cannot read safely is let
        // through for the pure decision to judge.
        let threshold = "($1::text::timestamptz)";
        let days = window.retention.as_secs() as f64 / 86_400.0;
        let due = match instant(&q(&cfg.created_at), created_kind) {
            None => "TRUE".to_string(),
            Some(cr) => {
                let mut any = vec![format!("{cr} IS NULL")];
                if let Some(max) = window.max {
                    any.push(format!(
                        "{cr} + make_interval(secs => {}) <= {threshold}",
                        max.as_secs()
                    ));
                }
                let row_days = match (&cfg.retention_days, kind_of(&cfg.retention_days)) {
                    (None, _) => Some(format!("{days}")),
                    (Some(rd), Some(Kind::Number)) => {
                        Some(format!("COALESCE({}::float8, {days})", q(rd)))
                    }
                    _ => None,
                };
                let window_due = match row_days {
                    Some(d) => {
                        format!("{cr} + make_interval(secs => ({d}) * 86400) <= {threshold}")
                    }
                    None => "TRUE".into(),
                };
                match (&cfg.expires_at, kind_of(&cfg.expires_at)) {
                    (None, _) => any.push(window_due),
                    (Some(ex), k) => {
                        let exq = q(ex);
                        match k.and_then(|k| instant(&exq, k)) {
                            Some(exi) => {
                                any.push(format!("({exq} IS NOT NULL AND {exi} <= {threshold})"))
                            }
                            None => any.push(format!("{exq} IS NOT NULL")),
                        }
                        any.push(format!("({exq} IS NULL AND {window_due})"));
                    }
                }
                any.join(" OR ")
            }
        };
        // $1 is bound on every query; a filter that does not read it still names its type.
        t.due = if due.contains("$1") {
            due
        } else {
            format!("({due}) AND $1::text IS NOT NULL")
        };
        Ok(t)
    }

    fn columns(&mut self) -> Result<Vec<(String, String)>> {
        let rows = self
            .client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relname = $1 AND ($2::text IS NULL AND pg_table_is_visible(c.oid) OR n.nspname = $2::text)
                   AND a.attnum > 0 AND NOT a.attisdropped
                 ORDER BY a.attnum",
                &[&self.bare_table, &self.schema],
            )
            .with_context(|| format!("Failed to read the columns of {} in {}", self.cfg.table, self.location))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn key_cast(&self) -> String {
        format!("::text::{}", self.key_type)
    }

    fn rows(
        &mut self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        let rows = self
            .client
            .query(sql, params)
            .with_context(|| format!("Failed to read {} in {}", self.cfg.table, self.location))?;
        Ok(rows.iter().map(read_row).collect())
    }
}

fn text_val(v: Option<String>) -> Value {
    v.map(Value::Text).unwrap_or(Value::Null)
}

fn read_row(r: &postgres::Row) -> Row {
    let key: Option<String> = r.get(0);
    Row {
        key: key.map(Key::Text).ok_or_else(|| "key is NULL".to_string()),
        created_at: text_val(r.get(1)),
        retention_days: text_val(r.get(2)),
        expires_at: text_val(r.get(3)),
        subject: Ok(r.get(4)),
        file: Ok(r.get(5)),
        problem: None,
        detail: None,
    }
}

/// A PostgreSQL array literal of texts, for `= ANY($1::text::T[])`.
fn array_literal(keys: &[Key]) -> String {
    let items: Vec<String> = keys
        .iter()
        .map(|k| {
            let s = k.to_string();
            format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
        })
        .collect();
    format!("{{{}}}", items.join(","))
}

impl SqlTable for PgTable {
    fn check_schema(&mut self) -> Result<Vec<String>> {
        let cols = self.columns()?;
        if cols.is_empty() {
            return Ok(vec![format!(
                "table {:?} does not exist in {}",
                self.cfg.table, self.location
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
            let k = kind(ty);
            let usable = match role {
                "created_at" | "expires_at" => k != Kind::Other,
                "retention_days" => matches!(k, Kind::Number | Kind::Text),
                "file" => k == Kind::Text,
                _ => true,
            };
            if !usable {
                problems.push(format!(
                    "{role} = {col:?}: column type {ty} cannot be read for this role"
                ));
            }
        }
        Ok(problems)
    }

    fn index_warnings(&mut self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for col in [Some(&self.cfg.created_at), self.cfg.subject.as_ref()]
            .into_iter()
            .flatten()
        {
            let indexed: bool = self
                .client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                     WHERE i.indrelid = $1::text::regclass AND a.attname = $2)",
                    &[&self.table, col],
                )?
                .get(0);
            if !indexed {
                out.push(format!(
                    "column {col:?} has no index; sweeps and erasures scan the whole table. Run: CREATE INDEX ON {} ({});",
                    self.table,
                    quote_ident(col)
                ));
            }
        }
        Ok(out)
    }

    fn key_range(&mut self) -> Option<(i64, i64)> {
        let sql = format!(
            "SELECT min({k})::text, max({k})::text FROM {}",
            self.table,
            k = quote_ident(&self.cfg.key)
        );
        let r = self.client.query_one(sql.as_str(), &[]).ok()?;
        let (a, b): (Option<String>, Option<String>) = (r.get(0), r.get(1));
        Some((a?.parse().ok()?, b?.parse().ok()?))
    }

    fn count(&mut self) -> Result<u64> {
        let sql = format!("SELECT count(*) FROM {}", self.table);
        Ok(self.client.query_one(sql.as_str(), &[])?.get::<_, i64>(0) as u64)
    }

    fn candidates(
        &mut self,
        after: Option<&Key>,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Row>> {
        let threshold =
            Timestamp::from_micros(now.as_micros() + MARGIN_SECS * 1_000_000).to_rfc3339();
        let key = quote_ident(&self.cfg.key);
        let limit = limit as i64;
        match after {
            None => {
                let sql = format!(
                    "{} WHERE ({}) ORDER BY {key} LIMIT $2",
                    self.select, self.due
                );
                self.rows(&sql, &[&threshold, &limit])
            }
            Some(k) => {
                let sql = format!(
                    "{} WHERE {key} > $3{} AND ({}) ORDER BY {key} LIMIT $2",
                    self.select,
                    self.key_cast(),
                    self.due
                );
                self.rows(&sql, &[&threshold, &limit, &k.to_string()])
            }
        }
    }

    fn of_subject(&mut self, subject: &str, after: Option<&Key>, limit: usize) -> Result<Vec<Row>> {
        let Some(subj) = &self.cfg.subject else {
            return Ok(Vec::new());
        };
        let (key, subj) = (quote_ident(&self.cfg.key), quote_ident(subj));
        let limit = limit as i64;
        match after {
            None => {
                let sql = format!(
                    "{} WHERE {subj}::text = $1 ORDER BY {key} LIMIT $2",
                    self.select
                );
                self.rows(&sql, &[&subject, &limit])
            }
            Some(k) => {
                let sql = format!(
                    "{} WHERE {subj}::text = $1 AND {key} > $3{} ORDER BY {key} LIMIT $2",
                    self.select,
                    self.key_cast()
                );
                self.rows(&sql, &[&subject, &limit, &k.to_string()])
            }
        }
    }

    fn fetch(&mut self, keys: &[Key]) -> Result<Vec<Row>> {
        let sql = format!(
            "{} WHERE {} = ANY($1::text::{}[])",
            self.select,
            quote_ident(&self.cfg.key),
            self.key_type
        );
        self.rows(&sql, &[&array_literal(keys)])
    }

    fn begin(&mut self) -> Result<()> {
        self.client.batch_execute("BEGIN")?;
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        self.client
            .batch_execute("COMMIT")
            .with_context(|| format!("Failed to commit deletions to {}", self.location))
    }

    fn rollback(&mut self) {
        let _ = self.client.batch_execute("ROLLBACK");
    }

    fn delete(&mut self, keys: &[Key]) -> Result<usize> {
        let sql = format!(
            "DELETE FROM {} WHERE {} = ANY($1::text::{}[])",
            self.table,
            quote_ident(&self.cfg.key),
            self.key_type
        );
        Ok(self.client.execute(sql.as_str(), &[&array_literal(keys)])? as usize)
    }

    fn export_subject(
        &mut self,
        subject_col: &str,
        subject: &str,
        each: &mut dyn FnMut(serde_json::Map<String, serde_json::Value>) -> Result<()>,
    ) -> Result<()> {
        let sql = format!(
            "SELECT to_jsonb(t)::text FROM {} t WHERE {}::text = $1 ORDER BY {}",
            self.table,
            quote_ident(subject_col),
            quote_ident(&self.cfg.key)
        );
        for r in self.client.query(sql.as_str(), &[&subject])? {
            let text: String = r.get(0);
            let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)?;
            each(obj)?;
        }
        Ok(())
    }
}

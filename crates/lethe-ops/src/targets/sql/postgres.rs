//! `sql` targets on PostgreSQL: `timestamp`, `timestamptz`, `date`, integer-epoch and text
//! `created_at` columns; `schema.table` names; keys of any orderable type, one column or
//! several.
//!
//! Every value is read as text and judged by the same pure decision as on SQLite. The SQL
//! filter narrows only where PostgreSQL can read the column without risk of an error (typed
//! timestamps and numbers, every computation bounded so that no row's value can make the
//! query raise); anything else is let through and judged in Rust. Values are always bound,
//! as text, and cast in SQL to the column's own type.
//!
//! PostgreSQL reads and deletes in separate statements under READ COMMITTED, so an
//! application may change a row in between. Each row is read with its version (`xmin`),
//! and deleted only if it is still that version
//! (`DELETE … USING … WHERE xmin = judged RETURNING key`): a row made fresh, given to
//! another subject, or pointed at another file in between is kept, and so is a row a
//! trigger, rule or policy keeps. Where no code runs on delete (no trigger, rule or policy
//! on the table or its partitions), the statement's count is exactly the rows it deleted:
//! as many as keys confirms every key. Otherwise, or when the count falls short, the delete
//! is undone to its savepoint and made again with `RETURNING`; only the rows it names count
//! as deleted, and where code ran on delete, only those still gone afterwards.

use std::collections::HashMap;

use anyhow::{Context, Result};
use lethe_core::config::Window;
use lethe_core::time::{PLAUSIBLE_SECS, TimeFormat, Timestamp};
use postgres::Client;
use postgres::error::SqlState;

use super::SqlTarget;
use super::shared::{self as sql, ColumnType, Dialect, quote_ident};
use crate::targets::{
    Capabilities, Connector, Deleter, Deletion, ExportSink, Key, Lookup, Removed, Row, Value,
    busy_message, delete_confirmed, found_or_gone, recheck_deleted,
};
use crate::db::redact;

const MARGIN_SECS: i64 = 86_400;
/// Windows and per-row retentions the filter computes with (a thousand years); anything
/// longer is let through and judged in Rust, so no value can make the filter overflow.
const MAX_FILTER_SECS: u64 = 1_000 * 365 * 86_400;
const ALIAS: &str = "lethe_t";
/// Keys (as text) and the row versions read, by the statement that read them.
type ByRead = std::collections::BTreeMap<u32, (Vec<String>, Vec<String>)>;

/// Microseconds from the Unix epoch to PostgreSQL's, 2000-01-01T00:00:00Z.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A `timestamp` or `timestamptz` as PostgreSQL sends it in binary: microseconds since
/// 2000-01-01 (in UTC for `timestamptz`; a `timestamp`'s wall clock, read as UTC, as its
/// text was). Read so, the server formats no text and Lethe parses none.
struct PgInstant(i64);

impl<'a> postgres::types::FromSql<'a> for PgInstant {
    fn from_sql(
        _: &postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let bytes: [u8; 8] = raw.try_into()?;
        Ok(PgInstant(i64::from_be_bytes(bytes)))
    }

    fn accepts(ty: &postgres::types::Type) -> bool {
        matches!(
            *ty,
            postgres::types::Type::TIMESTAMP | postgres::types::Type::TIMESTAMPTZ
        )
    }
}

impl PgInstant {
    /// The value as the decision reads it: the infinities as their text reads (`infinity`
    /// is never, `-infinity` no date); an instant past what Lethe can compute with, as text
    /// it cannot read (the row is reported, never deleted).
    fn value(self) -> Value {
        match self.0 {
            i64::MAX => Value::Text("infinity".into()),
            i64::MIN => Value::Text("-infinity".into()),
            m => match m.checked_add(PG_EPOCH_MICROS) {
                Some(unix) => Value::Instant(Timestamp::from_micros(unix)),
                None => Value::Text(format!("{m} microseconds after 2000-01-01")),
            },
        }
    }
}

/// A row version (`xid`) as PostgreSQL sends it in binary: an unsigned 32-bit number.
struct PgXid(u32);

impl<'a> postgres::types::FromSql<'a> for PgXid {
    fn from_sql(
        _: &postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let bytes: [u8; 4] = raw.try_into()?;
        Ok(PgXid(u32::from_be_bytes(bytes)))
    }

    fn accepts(ty: &postgres::types::Type) -> bool {
        *ty == postgres::types::Type::XID
    }
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
    // An array of anything is none of these.
    if t.ends_with(']') {
        Kind::Other
    } else if t.starts_with("timestamp") && t.contains("with time zone") {
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

/// What a column of this type holds, for the checks every SQL target shares.
fn column_type(pg_type: &str) -> ColumnType {
    match kind(pg_type) {
        Kind::Timestamptz | Kind::Timestamp | Kind::Date => ColumnType::Timestamp,
        Kind::Number => ColumnType::Number,
        Kind::Text => ColumnType::Text,
        Kind::Other => ColumnType::Other,
    }
}

/// The column as text the pure decision reads: typed timestamps in RFC 3339 UTC.
fn as_text(col: &str, k: Kind) -> String {
    const FMT: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'"#;
    // `infinity` and `-infinity` have no calendar text: they read as themselves.
    let finite =
        |text: String| format!("(CASE WHEN isfinite({col}) THEN {text} ELSE {col}::text END)");
    match k {
        Kind::Timestamptz => finite(format!("to_char({col} AT TIME ZONE 'UTC', {FMT})")),
        Kind::Timestamp => finite(format!("to_char({col}, {FMT})")),
        Kind::Date => finite(format!("to_char({col}, 'YYYY-MM-DD')")),
        _ => format!("{col}::text"),
    }
}

/// The column as a `timestamptz`, or NULL where it cannot be computed without risk of an
/// error (the row is then let through and judged in Rust); `None` for columns the filter
/// cannot read at all.
fn instant(col: &str, k: Kind, format: Option<&TimeFormat>) -> Option<String> {
    let (lo, hi) = PLAUSIBLE_SECS;
    match (k, format) {
        (Kind::Timestamptz, _) => Some(col.to_string()),
        (Kind::Timestamp, _) => Some(format!("({col} AT TIME ZONE 'UTC')")),
        (Kind::Date, _) => Some(format!("({col}::timestamp AT TIME ZONE 'UTC')")),
        // Compared before any cast: a numeric too large for float8 never reaches one.
        (Kind::Number, None) => Some(format!(
            "(CASE WHEN {col} >= {lo:.1} AND {col} < {hi:.1} THEN to_timestamp({col}::float8) \
             WHEN {col} >= {lo:.1} * 1000 AND {col} < {hi:.1} * 1000 THEN to_timestamp({col}::float8 / 1000.0) END)"
        )),
        (Kind::Number, Some(TimeFormat::UnixSeconds)) => Some(format!(
            "(CASE WHEN {col} > -2.5e11 AND {col} < 2.5e11 THEN to_timestamp({col}::float8) END)"
        )),
        (Kind::Number, Some(TimeFormat::UnixMillis)) => Some(format!(
            "(CASE WHEN {col} > -2.5e14 AND {col} < 2.5e14 THEN to_timestamp({col}::float8 / 1000.0) END)"
        )),
        _ => None,
    }
}

/// `instant <= threshold - secs`, or TRUE (let through) for a window too long to compute.
fn older_than(instant: &str, threshold: &str, secs: u64) -> String {
    if secs > MAX_FILTER_SECS {
        "TRUE".into()
    } else {
        format!("{instant} <= {threshold} - make_interval(secs => {secs})")
    }
}

pub struct PgTable {
    client: Client,
    cfg: SqlTarget,
    location: String,
    table: String,
    schema: Option<String>,
    bare_table: String,
    /// The key columns, quoted, with their types.
    keys: Vec<(String, String)>,
    /// Key columns whose equality is not byte equality (a nondeterministic collation,
    /// `citext`): compared, ordered and matched as text under "C" instead.
    exact: Vec<bool>,
    select: String,
    due: String,
    /// ` AND NOT (…)`: for a redacting target, leaves out rows already redacted.
    not_done: String,
    write: bool,
    /// The fingerprint of every row read in the open transaction, by key: a row is deleted
    /// only while it still has it.
    judged: HashMap<Key, (u32, i64)>,
    /// Statements read in the open transaction, each under its own snapshot: a row's
    /// version is checked against the versions read in the same statement.
    reads: u32,
    /// Known, in the open transaction, to run code when a row is deleted (see
    /// [`PgTable::runs_code_on_delete`]); once true it stays true until the transaction ends.
    watched: bool,
    /// The table's oid, resolved once when opened (None: not found then).
    oid: Option<i64>,
    /// Where the current scan stopped: the last row's key, as text.
    cursor: Option<Vec<String>>,
    /// The row version (`xmin`), as text, qualified by the table alias.
    fingerprint: String,
    /// created_at and expires_at are typed timestamps read in binary.
    binary_created: bool,
    binary_expires: bool,
    /// The scan's and the delete's statements, prepared once: each page and each delete is
    /// then one round trip.
    prepared: HashMap<String, postgres::Statement>,
}

impl PgTable {
    pub fn open(cfg: &SqlTarget, window: &Window, write: bool) -> Result<Self> {
        let location = redact(&cfg.url);
        let mut client = crate::db::connect_pg(&cfg.url, cfg.password_env.as_deref())?;
        // Each statement reads under its own snapshot (READ COMMITTED, whatever the database
        // or role sets): a row's version is judged per statement, and a trigger or rule
        // added since the transaction began is seen.
        // Bounded: an application's lock makes a row or the target busy, never a hang. Values
        // are read as text: fix every setting that changes a value's text, so that a key, a
        // fingerprint or a timestamp reads the same whatever the database or role sets.
        client.batch_execute(&format!(
            "SET lock_timeout = '{}s'; SET default_transaction_isolation = 'read committed'; \
             SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; \
             SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET bytea_output = 'hex'; \
             SET standard_conforming_strings = on",
            cfg.lock_timeout.as_secs().max(1)
        ))?;
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
            keys: Vec::new(),
            exact: Vec::new(),
            select: String::new(),
            due: "TRUE".into(),
            not_done: String::new(),
            write,
            judged: HashMap::new(),
            reads: 0,
            watched: false,
            oid: None,
            cursor: None,
            fingerprint: String::new(),
            binary_created: false,
            binary_expires: false,
            prepared: HashMap::new(),
        };
        t.oid = t
            .client
            .query_one("SELECT to_regclass($1::text)::oid::int8", &[&t.table])?
            .try_get(0)?;
        let cols = t.columns()?;
        let ty = |c: &str| cols.iter().find(|(n, _)| n == c).map(|(_, t)| t.clone());
        t.keys = cfg
            .key
            .iter()
            .map(|k| (quote_ident(k), ty(k).unwrap_or_else(|| "text".into())))
            .collect();
        t.exact = t.inexact_key_columns()?;
        let q = quote_ident;
        let qa = |c: &str| format!("{ALIAS}.{}", q(c));
        let kind_of = |c: &Option<String>| c.as_ref().and_then(|c| ty(c)).map(|t| kind(&t));
        let created_kind = ty(&cfg.created_at).map(|t| kind(&t)).unwrap_or(Kind::Other);
        let mut exprs: Vec<String> = cfg.key.iter().map(|k| format!("{}::text", qa(k))).collect();
        // A typed timestamp with no declared format is read in binary; anything else as text.
        let binary = |k: Option<Kind>, format: Option<&TimeFormat>| {
            format.is_none() && matches!(k, Some(Kind::Timestamptz | Kind::Timestamp))
        };
        t.binary_created = binary(Some(created_kind), cfg.created_at_format.as_ref());
        t.binary_expires = binary(kind_of(&cfg.expires_at), cfg.expires_at_format.as_ref());
        exprs.push(if t.binary_created {
            qa(&cfg.created_at)
        } else {
            as_text(&qa(&cfg.created_at), created_kind)
        });
        for (c, binary) in [(&cfg.retention_days, false), (&cfg.expires_at, t.binary_expires)] {
            exprs.push(match (c, kind_of(c)) {
                (Some(c), Some(_)) if binary => qa(c),
                (Some(c), Some(k)) => as_text(&qa(c), k),
                _ => "NULL::text".into(),
            });
        }
        for c in [&cfg.subject, &cfg.file] {
            exprs.push(match c {
                Some(c) => format!("{}::text", qa(c)),
                None => "NULL::text".into(),
            });
        }
        // The row version read: any change to the row since (an UPDATE, even of nothing)
        // makes a new version with another xmin, so the delete finds nothing to match.
        t.fingerprint = format!("{ALIAS}.xmin::text");
        let mut select: Vec<String> = exprs;
        // Read in binary: no text made or parsed per row.
        select.push(if write {
            format!("{ALIAS}.xmin")
        } else {
            "NULL::xid".into()
        });
        // The row's own sensitivity level, as text.
        select.push(match &cfg.sensitivity_column {
            Some(c) => format!("{}::text", qa(c)),
            None => "NULL::text".into(),
        });
        // Aliased, so that ORDER BY and WHERE always mean the table's own columns.
        let select: Vec<String> = select
            .into_iter()
            .enumerate()
            .map(|(i, e)| format!("{e} AS lethe_c{i}"))
            .collect();
        t.select = format!("SELECT {} FROM {} AS {ALIAS}", select.join(", "), t.table);

        // The filter: rows that may be due. Anything PostgreSQL cannot read safely is let
        // through for the pure decision to judge.
        let threshold = "($1::text::timestamptz)";
        let window_secs = window.retention.as_secs().max(0) as u64;
        let due = match instant(
            &q(&cfg.created_at),
            created_kind,
            cfg.created_at_format.as_ref(),
        ) {
            None => "TRUE".to_string(),
            Some(cr) => {
                let mut any = vec![format!("{cr} IS NULL")];
                // The earliest any cap (the category's max, a sensitivity level's) may end
                // a row's life: such rows must reach the pure decision.
                if let Some(cap) = window.earliest_cap(cfg.sensitivity_column.is_some()) {
                    any.push(older_than(&cr, threshold, cap.as_secs().max(0) as u64));
                }
                let by_window = older_than(&cr, threshold, window_secs);
                // A `redact_after` pass is due by created_at alone; the row's own expiry
                // columns are still read, for the deletion's judgement.
                let (retention_col, expires_col) = if cfg.created_only {
                    (&None, &None)
                } else {
                    (&cfg.retention_days, &cfg.expires_at)
                };
                let window_due = match (retention_col, kind_of(retention_col)) {
                    (None, _) => by_window,
                    (Some(rd), Some(Kind::Number)) => {
                        let rd = q(rd);
                        let max_days = MAX_FILTER_SECS / 86_400;
                        format!(
                            "(CASE WHEN {rd} IS NULL THEN {by_window} \
                             WHEN {rd} >= 0 AND {rd} <= {max_days} THEN {cr} <= {threshold} - make_interval(secs => {rd}::float8 * 86400) \
                             ELSE TRUE END)"
                        )
                    }
                    _ => "TRUE".into(),
                };
                match (expires_col, kind_of(expires_col)) {
                    (None, _) => any.push(window_due),
                    (Some(ex), k) => {
                        let exq = q(ex);
                        match k.and_then(|k| instant(&exq, k, cfg.expires_at_format.as_ref())) {
                            Some(exi) => any.push(format!(
                                "({exq} IS NOT NULL AND ({exi} IS NULL OR {exi} <= {threshold}))"
                            )),
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
        // A redacting target's rows whose columns already hold what a redaction leaves are
        // done with: never selected, redacted or recorded again.
        if let Some(r) = &cfg.redacting {
            t.not_done = format!(" AND NOT {}", r.done(Dialect::Postgres, qa));
            t.due = format!("({}){}", t.due, t.not_done);
        }
        Ok(t)
    }

    fn columns(&mut self) -> Result<Vec<(String, String)>> {
        let rows = self
            .client
            .query(
                // A domain is read as the type it is over, whatever its own name.
                "SELECT a.attname::text,
                        CASE WHEN ty.typtype = 'd' THEN format_type(ty.typbasetype, ty.typtypmod)
                             ELSE format_type(a.atttypid, a.atttypmod) END
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                 JOIN pg_type ty ON ty.oid = a.atttypid
                 WHERE c.relname = $1 AND ($2::text IS NULL AND pg_table_is_visible(c.oid) OR n.nspname = $2::text)
                   AND a.attnum > 0 AND NOT a.attisdropped
                 ORDER BY a.attnum",
                &[&self.bare_table, &self.schema],
            )
            .map_err(|e| self.busy_or(e))
            .with_context(|| format!("Failed to read the columns of {} in {}", self.cfg.table, self.location))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// For each key column, whether its equality is not byte equality.
    fn inexact_key_columns(&mut self) -> Result<Vec<bool>> {
        let mut out = Vec::new();
        for k in &self.cfg.key {
            let row = self.client.query_opt(
                "SELECT t.typname::text = 'citext' OR NOT coalesce(c.collisdeterministic, true)
                 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                 LEFT JOIN pg_collation c ON c.oid = a.attcollation
                 WHERE a.attrelid = $1::text::regclass AND a.attname = $2",
                &[&self.table, k],
            );
            // A table that cannot be read yet is reported by check_schema.
            out.push(matches!(row, Ok(Some(r)) if r.get::<_, bool>(0)));
        }
        Ok(out)
    }

    /// One key column as compared and ordered.
    fn key_expr(&self, i: usize, col: &str) -> String {
        if self.exact.get(i).copied().unwrap_or(false) {
            format!("({ALIAS}.{col}::text COLLATE \"C\")")
        } else {
            format!("{ALIAS}.{col}")
        }
    }

    fn key_list(&self) -> String {
        self.keys
            .iter()
            .enumerate()
            .map(|(i, (k, _))| self.key_expr(i, k))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn key_not_null(&self) -> String {
        self.keys
            .iter()
            .map(|(k, _)| format!("{ALIAS}.{k} IS NOT NULL"))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    fn busy_or(&self, e: postgres::Error) -> anyhow::Error {
        if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
            anyhow::anyhow!(busy_message(
                &format!("table {} in {}", self.cfg.table, self.location),
                self.cfg.lock_timeout
            ))
        } else {
            e.into()
        }
    }

    /// `sql` prepared on this connection, once.
    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, postgres::Error> {
        if let Some(st) = self.prepared.get(sql) {
            return Ok(st.clone());
        }
        let st = self.client.prepare(sql)?;
        // A handful of shapes per target; bounded all the same.
        if self.prepared.len() >= 64 {
            self.prepared.clear();
        }
        self.prepared.insert(sql.to_string(), st.clone());
        Ok(st)
    }

    /// The next rows matching `filter` (`$1` bound to `first`) after the cursor.
    fn page(&mut self, filter: &str, first: &str, limit: usize) -> Result<Vec<Row>> {
        let limit = limit as i64;
        let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&first, &limit];
        let cursor = self.cursor.clone();
        let after = match &cursor {
            Some(texts) => {
                let marks: Vec<String> = self
                    .keys
                    .iter()
                    .enumerate()
                    .map(|(i, (_, ty))| {
                        if self.exact.get(i).copied().unwrap_or(false) {
                            format!("(${}::text COLLATE \"C\")", i + 3)
                        } else {
                            format!("${}::text::{ty}", i + 3)
                        }
                    })
                    .collect();
                params.extend(
                    texts
                        .iter()
                        .map(|t| t as &(dyn postgres::types::ToSql + Sync)),
                );
                format!(" AND ({}) > ({})", self.key_list(), marks.join(", "))
            }
            None => String::new(),
        };
        let sql = format!(
            "{} WHERE {} AND ({filter}){after} ORDER BY {} LIMIT $2",
            self.select,
            self.key_not_null(),
            self.key_list()
        );
        self.reads += 1;
        let rows = match self
            .statement(&sql)
            .and_then(|st| self.client.query(&st, &params))
        {
            Ok(r) => r,
            Err(e) => {
                return Err(self.busy_or(e)).with_context(|| {
                    format!("Failed to read {} in {}", self.cfg.table, self.location)
                });
            }
        };
        let n = self.keys.len();
        if let Some(last) = rows.last() {
            let next: Vec<String> = (0..n)
                .map(|i| last.get::<_, Option<String>>(i).unwrap_or_default())
                .collect();
            // A scan that does not move on would read the same rows forever.
            if self.cursor.as_ref() == Some(&next) {
                anyhow::bail!(
                    "the scan of {} did not move past key {next:?}; stopped rather than judge the same rows again",
                    self.cfg.table
                );
            }
            self.cursor = Some(next);
        }
        Ok(rows.iter().map(|r| self.read_row(r)).collect())
    }

    fn read_row(&mut self, r: &postgres::Row) -> Row {
        let n = self.keys.len();
        let key = if n == 1 {
            r.get::<_, Option<String>>(0).map(Key::Text)
        } else {
            let parts: Option<Vec<Key>> = (0..n)
                .map(|i| r.get::<_, Option<String>>(i).map(Key::Text))
                .collect();
            parts.map(Key::from_parts)
        }
        .ok_or_else(|| "key is NULL".to_string());
        if self.write
            && let (Ok(k), Ok(Some(PgXid(fp)))) = (&key, r.try_get::<_, Option<PgXid>>(n + 5))
        {
            self.judged.insert(k.clone(), (self.reads, i64::from(fp)));
        }
        let instant_or_text = |i: usize, binary: bool| {
            if !binary {
                return text_val(r.get(i));
            }
            match r.try_get::<_, Option<PgInstant>>(i) {
                Ok(Some(t)) => t.value(),
                Ok(None) => Value::Null,
                // Text it cannot read: the row is reported with the reason, never deleted.
                Err(e) => Value::Text(format!("(unreadable: {e})")),
            }
        };
        Row {
            key,
            created_at: instant_or_text(n, self.binary_created),
            retention_days: text_val(r.get(n + 1)),
            expires_at: instant_or_text(n + 2, self.binary_expires),
            subject: Ok(r.get(n + 3)),
            file: Ok(r.get(n + 4)),
            sensitivity: text_val(r.get(n + 6)),
            problem: None,
            detail: None,
            in_use: None,
        }
    }

    fn subject_filter(&self) -> Option<String> {
        self.cfg.subject.as_ref().map(|s| {
            let s = format!("{ALIAS}.{}", quote_ident(s));
            format!(
                "{s}::text = $1 AND {s}::text COLLATE \"C\" = $1{}",
                self.not_done
            )
        })
    }

    /// Keys as one text array per key column.
    fn key_arrays(&self, keys: &[Key]) -> Vec<Vec<String>> {
        let mut cols = vec![Vec::with_capacity(keys.len()); self.keys.len()];
        for k in keys {
            for (i, part) in k.parts().iter().enumerate() {
                if let Some(col) = cols.get_mut(i) {
                    col.push(part.to_string());
                }
            }
        }
        cols
    }

    /// `unnest($1::text[], …) AS lethe_v(lethe_k0, …)` and `lethe_t.k0 = lethe_v.lethe_k0::T0
    /// AND …`; with the judged fingerprints as one more column when `with_fp`.
    fn join_keys(&self, with_fp: bool) -> (String, String) {
        let n = self.keys.len();
        let mut names: Vec<String> = (0..n).map(|i| format!("lethe_k{i}")).collect();
        let mut args: Vec<String> = (0..n).map(|i| format!("${}::text[]", i + 1)).collect();
        let on: Vec<String> = self
            .keys
            .iter()
            .enumerate()
            .zip(&names)
            .map(|((i, (k, ty)), name)| {
                if self.exact.get(i).copied().unwrap_or(false) {
                    format!("{} = (lethe_v.{name} COLLATE \"C\")", self.key_expr(i, k))
                } else {
                    format!("{ALIAS}.{k} = lethe_v.{name}::{ty}")
                }
            })
            .collect();
        if with_fp {
            names.push("lethe_fp".into());
            args.push(format!("${}::text[]", n + 1));
        }
        (
            format!(
                "unnest({}) AS lethe_v({})",
                args.join(", "),
                names.join(", ")
            ),
            on.join(" AND "),
        )
    }

    fn key_texts(&self) -> String {
        self.keys
            .iter()
            .map(|(k, _)| format!("{ALIAS}.{k}::text"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Per statement that read them: the distinct keys as text, and the row versions that
    /// statement saw; and whether some key was never read in this transaction (nothing then
    /// says it is still as judged).
    fn by_read(&self, keys: &[Key]) -> (ByRead, bool) {
        let mut by_read = ByRead::new();
        let mut seen = std::collections::HashSet::new();
        let mut unread = false;
        for key in keys.iter().filter(|k| seen.insert(*k)) {
            match self.judged.get(key) {
                Some((read, version)) => {
                    let (ks, vs) = by_read.entry(*read).or_default();
                    ks.push(key.to_string());
                    let version = version.to_string();
                    if !vs.contains(&version) {
                        vs.push(version);
                    }
                }
                None => unread = true,
            }
        }
        (by_read, unread)
    }

    /// Deletes rows of a one-column key: per statement that read them, the keys (probed
    /// through the key's index) and the row versions that statement saw. A row changed
    /// since it was read has a version written by a transaction that had not committed when
    /// that statement read, so it is not among them: the row is kept.
    fn delete_by_snapshot(&mut self, keys: &[Key]) -> Result<Removed> {
        let (k, ty) = self.keys[0].clone();
        let (by_read, unread) = self.by_read(keys);
        let sql = format!(
            "WITH lethe_d AS (DELETE FROM {} AS {ALIAS} WHERE {ALIAS}.{k} = ANY($1::text[]::{ty}[]) \
             AND {ALIAS}.xmin = ANY($2::text[]::xid[]) RETURNING {ALIAS}.{k} AS lethe_r0) \
             SELECT c.n, CASE WHEN c.n < $3 THEN (SELECT array_agg(lethe_r0::text) FROM lethe_d) END \
             FROM (SELECT count(*) AS n FROM lethe_d) c",
            self.table
        );
        let mut all = !unread;
        let mut gone = Vec::new();
        for (ks, vs) in by_read.into_values() {
            let sent = ks.len() as i64;
            let st = self.statement(&sql)?;
            let row = self.client.query_one(&st, &[&ks, &vs, &sent])?;
            let deleted: i64 = row.try_get(0)?;
            if deleted == sent {
                gone.extend(ks.into_iter().map(Key::Text));
                continue;
            }
            all = false;
            let these: Option<Vec<Option<String>>> = row.try_get(1)?;
            gone.extend(
                these
                    .unwrap_or_default()
                    .into_iter()
                    .flatten()
                    .map(Key::Text),
            );
        }
        if all {
            return Ok(Removed::All);
        }
        Ok(Removed::These(gone))
    }

    fn keys_of(rows: &[postgres::Row], n: usize) -> Vec<Key> {
        rows.iter()
            .filter_map(|r| {
                let parts: Option<Vec<Key>> = (0..n)
                    .map(|i| r.get::<_, Option<String>>(i).map(Key::Text))
                    .collect();
                parts.map(Key::from_parts)
            })
            .collect()
    }
}

fn text_val(v: Option<String>) -> Value {
    v.map(Value::Text).unwrap_or(Value::Null)
}

impl Deleter for PgTable {
    fn execute(&mut self, statement: &str) -> Result<()> {
        Ok(self.client.batch_execute(statement)?)
    }

    fn delete_returning(&mut self, keys: &[Key]) -> Result<Removed> {
        let deleting = self.cfg.redacting.is_none();
        // Asked before the delete too, so that a table known to run code on delete never
        // has a delete made twice (its triggers fired by one that is then undone).
        if deleting && !self.watched {
            self.watched = self.runs_code_on_delete()?;
        }
        if deleting && !self.watched {
            // The count first: where nothing but the statement itself acts on the table,
            // its count is exactly the rows it deleted, so as many as keys sent is every
            // key, confirmed without sending each key back (`RETURNING` makes the server
            // fetch every deleted row again). Asked again after the statement, which holds
            // the table's lock from then on: a trigger or rule added in between is seen.
            let all = self.delete_counted(keys)?;
            self.watched = self.runs_code_on_delete()?;
            if all && !self.watched {
                return Ok(Removed::All);
            }
            // Undone (the caller's savepoint, `lethe_group`, is open) and made again,
            // naming each row removed.
            self.rollback_to()?;
        }
        let removed = self.change_returning(keys)?;
        if deleting && !self.watched {
            return Ok(removed);
        }
        // A redaction counts only where the row reads as redacted afterwards, in this
        // transaction: a trigger that put the text back (or a type that cannot hold the
        // redacted value) leaves the row failed, never recorded redacted. A deletion, where
        // code ran on delete (a trigger, a rule, a cascade) and may have put the row back,
        // only where its row is gone now.
        let claimed: Vec<Key> = match &removed {
            Removed::All => keys.to_vec(),
            Removed::These(k) => k.clone(),
        };
        let still = self.unchanged(&claimed)?;
        if still.is_empty() {
            return Ok(removed);
        }
        Ok(Removed::These(
            claimed.into_iter().filter(|k| !still.contains(k)).collect(),
        ))
    }

    fn is_lock_timeout(&self, e: &anyhow::Error) -> bool {
        self.is_lock_timeout_error(e)
    }

    fn refuses_every_row(&self, e: &anyhow::Error) -> bool {
        self.refuses_every_row_error(e)
    }

    fn lockable(&mut self, keys: &[Key]) -> Result<Option<Vec<Key>>> {
        self.lockable_keys(keys)
    }

    fn lock_timeout(&self) -> lethe_core::time::Duration {
        self.cfg.lock_timeout
    }
}

impl PgTable {
    /// Of these rows, those still there now: on a redacting target, those that do not read
    /// as redacted.
    fn unchanged(&mut self, keys: &[Key]) -> Result<std::collections::HashSet<Key>> {
        if keys.is_empty() {
            return Ok(std::collections::HashSet::new());
        }
        let arrays = self.key_arrays(keys);
        let (unnest, on) = self.join_keys(false);
        let sql = format!(
            "SELECT {} FROM {} AS {ALIAS}, {unnest} WHERE {on}{}",
            self.key_texts(),
            self.table,
            self.not_done
        );
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = arrays
            .iter()
            .map(|a| a as &(dyn postgres::types::ToSql + Sync))
            .collect();
        let rows = self.client.query(sql.as_str(), &params)?;
        Ok(Self::keys_of(&rows, self.keys.len()).into_iter().collect())
    }

    /// Deletes these rows, only those still as they were judged, and says whether the
    /// statements' counts cover every key. False, having deleted nothing, when a key was
    /// not read in this transaction (nothing says it is still as judged).
    fn delete_counted(&mut self, keys: &[Key]) -> Result<bool> {
        if self.keys.len() == 1 && !self.exact.first().copied().unwrap_or(false) {
            let (k, ty) = self.keys[0].clone();
            let (by_read, unread) = self.by_read(keys);
            if unread {
                return Ok(false);
            }
            let sql = format!(
                "DELETE FROM {} AS {ALIAS} WHERE {ALIAS}.{k} = ANY($1::text[]::{ty}[]) \
                 AND {ALIAS}.xmin = ANY($2::text[]::xid[])",
                self.table
            );
            let mut all = true;
            for (ks, vs) in by_read.into_values() {
                let st = self.statement(&sql)?;
                let n = self.client.execute(&st, &[&ks, &vs])?;
                all &= n == ks.len() as u64;
            }
            return Ok(all);
        }
        let mut seen = std::collections::HashSet::new();
        let distinct: Vec<&Key> = keys.iter().filter(|k| seen.insert(*k)).collect();
        if distinct.iter().any(|k| !self.judged.contains_key(*k)) {
            return Ok(false);
        }
        let arrays = self.key_arrays(&distinct.iter().map(|k| (*k).clone()).collect::<Vec<_>>());
        let versions: Vec<Option<String>> = distinct
            .iter()
            .map(|k| self.judged.get(*k).map(|(_, v)| v.to_string()))
            .collect();
        let (unnest, on) = self.join_keys(true);
        let sql = format!(
            "DELETE FROM {} AS {ALIAS} USING {unnest} WHERE {on} AND {} = lethe_v.lethe_fp",
            self.table, self.fingerprint
        );
        let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = arrays
            .iter()
            .map(|a| a as &(dyn postgres::types::ToSql + Sync))
            .collect();
        params.push(&versions);
        let st = self.statement(&sql)?;
        let n = self.client.execute(&st, &params)?;
        Ok(n == distinct.len() as u64)
    }

    /// Whether code may run when a row of the table is deleted: a trigger (a foreign key's
    /// cascade runs as one), a rule or a row-level security policy, on the table or on any
    /// partition or child of it. Then a statement's count may speak of other rows than its
    /// own (a rule's), and a row it deleted may be back. Unknown counts as yes: a table not
    /// found, or a question the database could not answer (the group's savepoint is rolled
    /// back to then, undoing any delete made since and the error with it).
    fn runs_code_on_delete(&mut self) -> Result<bool> {
        let Some(oid) = self.oid else {
            return Ok(true);
        };
        let sql = "WITH RECURSIVE lethe_tree(oid) AS (SELECT $1::int8::oid \
                   UNION SELECT i.inhrelid FROM pg_inherits i JOIN lethe_tree t ON i.inhparent = t.oid) \
                   SELECT coalesce(bool_or(c.relhasrules OR c.relhastriggers OR c.relrowsecurity), true) \
                   FROM pg_class c JOIN lethe_tree USING (oid)";
        let answer = self
            .statement(sql)
            .and_then(|st| self.client.query_one(&st, &[&oid]))
            .and_then(|r| r.try_get::<_, bool>(0));
        match answer {
            Ok(watched) => Ok(watched),
            Err(_) => {
                self.rollback_to()?;
                Ok(true)
            }
        }
    }

    /// Deletes (or redacts) these rows, only those still as they were judged, and says which
    /// the database changed.
    fn change_returning(&mut self, keys: &[Key]) -> Result<Removed> {
        if self.keys.len() == 1
            && !self.exact.first().copied().unwrap_or(false)
            && self.cfg.redacting.is_none()
        {
            return self.delete_by_snapshot(keys);
        }
        let arrays = self.key_arrays(keys);
        let versions: Vec<Option<String>> = keys
            .iter()
            .map(|k| self.judged.get(k).map(|(_, v)| v.to_string()))
            .collect();
        let (unnest, on) = self.join_keys(true);
        let n = self.keys.len();
        // The keys removed come back as one array per key column, in one row: a row per
        // deleted key costs the client far more than the delete costs the server.
        let returning: Vec<String> = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, (k, _))| format!("{ALIAS}.{k}::text AS lethe_r{i}"))
            .collect();
        // A count, and the keys only when some key was not deleted: almost always every
        // key goes, and then nothing more needs to come back.
        // Distinct keys: each names at most one row (the key is unique).
        let sent = keys.iter().collect::<std::collections::HashSet<_>>().len() as i64;
        let aggregated = |count_param: usize| {
            let arrays: Vec<String> = (0..n)
                .map(|i| {
                    format!("CASE WHEN c.n < ${count_param} THEN (SELECT array_agg(lethe_r{i}) FROM lethe_d) END")
                })
                .collect();
            format!(
                "c.n, {} FROM (SELECT count(*) AS n FROM lethe_d) c",
                arrays.join(", ")
            )
        };
        // A redacting target overwrites its columns instead: only on the row version
        // judged, and only on a row not yet redacted.
        let change = match &self.cfg.redacting {
            Some(r) => format!(
                "UPDATE {} AS {ALIAS} SET {} FROM {unnest} WHERE {on} AND {} = lethe_v.lethe_fp{}",
                self.table,
                r.set_list(Dialect::Postgres, |c| format!("{ALIAS}.{}", quote_ident(c))),
                self.fingerprint,
                self.not_done
            ),
            None => format!(
                "DELETE FROM {} AS {ALIAS} USING {unnest} WHERE {on} AND {} = lethe_v.lethe_fp",
                self.table, self.fingerprint
            ),
        };
        let sql = format!(
            "WITH lethe_d AS ({change} RETURNING {}) SELECT {}",
            returning.join(", "),
            aggregated(n + 2)
        );
        let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = arrays
            .iter()
            .map(|a| a as &(dyn postgres::types::ToSql + Sync))
            .collect();
        params.push(&versions);
        params.push(&sent);
        let st = self.statement(&sql)?;
        let row = self.client.query_one(&st, &params)?;
        let deleted: i64 = row.try_get(0)?;
        if deleted == sent {
            // Keys are unique and each names one row: as many rows as keys is every key.
            return Ok(Removed::All);
        }
        let mut columns: Vec<Vec<Option<String>>> = Vec::with_capacity(n);
        for i in 0..n {
            let col: Option<Vec<Option<String>>> = row.try_get(i + 1)?;
            columns.push(col.unwrap_or_default());
        }
        let rows = columns.first().map_or(0, Vec::len);
        let mut gone = Vec::with_capacity(rows);
        for r in 0..rows {
            let parts: Option<Vec<Key>> = columns
                .iter_mut()
                .map(|c| c.get_mut(r).and_then(Option::take).map(Key::Text))
                .collect();
            if let Some(parts) = parts {
                gone.push(Key::from_parts(parts));
            }
        }
        Ok(Removed::These(gone))
    }

    fn is_lock_timeout_error(&self, e: &anyhow::Error) -> bool {
        e.downcast_ref::<postgres::Error>()
            .and_then(|e| e.code())
            .is_some_and(|c| *c == SqlState::LOCK_NOT_AVAILABLE)
    }

    fn refuses_every_row_error(&self, e: &anyhow::Error) -> bool {
        e.downcast_ref::<postgres::Error>()
            .and_then(|e| e.code())
            .is_some_and(|c| *c == SqlState::FEATURE_NOT_SUPPORTED)
    }

    fn lockable_keys(&mut self, keys: &[Key]) -> Result<Option<Vec<Key>>> {
        let arrays = self.key_arrays(keys);
        let (unnest, on) = self.join_keys(false);
        let sql = format!(
            "SELECT {} FROM {} AS {ALIAS}, {unnest} WHERE {on} FOR UPDATE OF {ALIAS} SKIP LOCKED",
            self.key_texts(),
            self.table
        );
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = arrays
            .iter()
            .map(|a| a as &(dyn postgres::types::ToSql + Sync))
            .collect();
        let rows = self.client.query(sql.as_str(), &params)?;
        Ok(Some(Self::keys_of(&rows, self.keys.len())))
    }
}

impl Connector for PgTable {
    fn check_schema(&mut self) -> Result<Vec<String>> {
        let cols = self.columns()?;
        let mut problems = sql::column_problems(&self.cfg, &cols, column_type, &self.location);
        if !problems.is_empty() {
            return Ok(problems);
        }
        // A table with inheritance children (not partitions) reads their rows with its own,
        // and its unique indexes do not reach them: one key could name two rows.
        let children: bool = self
            .client
            .query_one(
                "SELECT c.relkind <> 'p' AND EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhparent = c.oid)
                 FROM pg_class c WHERE c.oid = $1::text::regclass",
                &[&self.table],
            )?
            .get(0);
        if children {
            problems.push(format!(
                "table {} has inheritance children: their rows are read with its own and its unique indexes do not cover them, so a key could name two rows; give each table a target of its own",
                self.cfg.table
            ));
            return Ok(problems);
        }
        // The key must name one row: some valid, non-partial unique index on plain
        // columns, all of them among the key's.
        let rows = self.client.query(
            "SELECT CASE WHEN i.indisprimary THEN 'the primary key' ELSE 'unique index ' || quote_ident(c.relname::text) END,
                    array(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY u(k, n)
                          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = u.k ORDER BY u.n)
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             WHERE i.indrelid = $1::text::regclass AND i.indisunique AND i.indisvalid
               AND i.indpred IS NULL AND i.indexprs IS NULL
             ORDER BY i.indisprimary DESC, c.relname",
            &[&self.table],
        )?;
        let unique: Vec<(String, Vec<String>)> =
            rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        if !sql::key_is_unique(&self.cfg, &unique) {
            problems.push(sql::not_unique(&self.cfg, &self.table, &unique));
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
                out.push(sql::missing_index(col, &self.table, None));
            }
        }
        let cascades = self.client.query(
            "SELECT conrelid::regclass::text, CASE confdeltype WHEN 'c' THEN 'CASCADE' WHEN 'n' THEN 'SET NULL' ELSE 'SET DEFAULT' END
             FROM pg_constraint WHERE contype = 'f' AND confrelid = $1::text::regclass AND confdeltype IN ('c', 'n', 'd')",
            &[&self.table],
        )?;
        for r in cascades {
            let (other, act): (String, String) = (r.get(0), r.get(1));
            out.push(sql::cascade(&other, &self.cfg.table, &act));
        }
        let not_null: Vec<String> = self
            .client
            .query(
                "SELECT attname::text FROM pg_attribute WHERE attrelid = $1::text::regclass AND attnum > 0 AND attnotnull AND NOT attisdropped",
                &[&self.table],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        out.extend(sql::refused_redactions(&self.cfg, &not_null));
        // A row that code run on delete puts back where a policy hides it from this role
        // cannot be seen by the check after the delete.
        let hidden: bool = self
            .client
            .query_one(
                "SELECT row_security_active(c.oid) AND (c.relhastriggers OR c.relhasrules)
                 FROM pg_class c WHERE c.oid = $1::text::regclass",
                &[&self.table],
            )?
            .get(0);
        if hidden {
            out.push(format!(
                "row-level security limits what this role can read of {}, and a trigger or rule runs on delete: a row such code puts back where a policy hides it cannot be seen, and would be recorded deleted; give the role BYPASSRLS, or a SELECT policy that shows it every row",
                self.cfg.table
            ));
        }
        Ok(out)
    }

    fn key_range(&mut self) -> Option<(i64, i64)> {
        if self.keys.len() != 1 {
            return None;
        }
        let sql = format!(
            "SELECT min({k})::text, max({k})::text FROM {} AS {ALIAS}",
            self.table,
            k = self.key_list()
        );
        let r = self.client.query_one(sql.as_str(), &[]).ok()?;
        let (a, b): (Option<String>, Option<String>) = (r.get(0), r.get(1));
        Some((a?.parse().ok()?, b?.parse().ok()?))
    }

    fn count(&mut self) -> Result<Option<u64>> {
        let sql = format!("SELECT count(*) FROM {}", self.table);
        Ok(Some(
            self.client.query_one(sql.as_str(), &[])?.get::<_, i64>(0) as u64,
        ))
    }

    fn count_untagged(&mut self, required: &[String]) -> Result<Option<u64>> {
        let Some(cond) = self
            .cfg
            .untagged_condition(required, |c| format!("btrim({c}::text, E' \\t\\r\\n') = ''"))
        else {
            return Ok(None);
        };
        let sql = format!("SELECT count(*) FROM {} WHERE {cond}", self.table);
        Ok(Some(
            self.client.query_one(sql.as_str(), &[])?.get::<_, i64>(0) as u64,
        ))
    }

    fn candidates(&mut self, now: Timestamp, limit: usize) -> Result<Vec<Row>> {
        let threshold =
            Timestamp::from_micros(now.as_micros() + MARGIN_SECS * 1_000_000).to_rfc3339();
        let due = self.due.clone();
        self.page(&due, &threshold, limit)
    }

    fn of_subject(&mut self, subject: &str, limit: usize) -> Result<Vec<Row>> {
        let Some(filter) = self.subject_filter() else {
            return Ok(Vec::new());
        };
        let rows = self.page(&filter, subject, limit)?;
        Ok(sql::only_subject(rows, subject))
    }

    fn null_keys(&mut self, now: Timestamp, subject: Option<&str>) -> Result<u64> {
        let any_null = self
            .keys
            .iter()
            .map(|(k, _)| format!("{ALIAS}.{k} IS NULL"))
            .collect::<Vec<_>>()
            .join(" OR ");
        let (filter, first) = match subject {
            Some(s) => match self.subject_filter() {
                Some(f) => (f, s.to_string()),
                None => return Ok(0),
            },
            None => (
                self.due.clone(),
                Timestamp::from_micros(now.as_micros() + MARGIN_SECS * 1_000_000).to_rfc3339(),
            ),
        };
        let sql = format!(
            "SELECT count(*) FROM {} AS {ALIAS} WHERE ({any_null}) AND ({filter})",
            self.table
        );
        Ok(self
            .client
            .query_one(sql.as_str(), &[&first])?
            .get::<_, i64>(0) as u64)
    }

    /// The cluster (its system identifier where the role may read it, else the server's
    /// own address and port), the database and the table's oid: the same whatever the URL
    /// or the table's spelling.
    fn identity(&mut self) -> Result<Option<Vec<String>>> {
        let server = match self.client.query_one(
            "SELECT system_identifier::text FROM pg_control_system()",
            &[],
        ) {
            Ok(r) => r.get::<_, String>(0),
            Err(_) => {
                let r = self.client.query_one(
                    "SELECT coalesce(host(inet_server_addr()), 'local') || ':' || coalesce(inet_server_port(), 0)::text",
                    &[],
                )?;
                r.get(0)
            }
        };
        // The table, then every table it is a partition or inheritance child of.
        let rows = self.client.query(
            "WITH RECURSIVE up(oid, depth) AS (
                 SELECT $1::text::regclass::oid, 0
                 UNION ALL SELECT i.inhparent, up.depth + 1 FROM pg_inherits i JOIN up ON i.inhrelid = up.oid
             )
             SELECT current_database()::text, oid::int8 FROM up ORDER BY depth",
            &[&self.table],
        )?;
        Ok(Some(
            rows.iter()
                .map(|r| {
                    let (db, oid): (String, i64) = (r.get(0), r.get(1));
                    format!("postgres {server} database {db} table oid {oid}")
                })
                .collect(),
        ))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    fn lookup(&mut self, keys: &[Key]) -> Result<Vec<Lookup>> {
        let arrays = self.key_arrays(keys);
        let (unnest, on) = self.join_keys(false);
        // On a redacting target a row already redacted reads as gone: nothing is left to
        // do to it (an interrupted run's redaction is then recorded once, on recovery).
        let sql = format!("{}, {unnest} WHERE {on}{}", self.select, self.not_done);
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = arrays
            .iter()
            .map(|a| a as &(dyn postgres::types::ToSql + Sync))
            .collect();
        self.reads += 1;
        let rows = match self.client.query(sql.as_str(), &params) {
            Ok(r) => r,
            Err(e) => return Err(self.busy_or(e)),
        };
        let rows = rows.iter().map(|r| self.read_row(r)).collect();
        Ok(found_or_gone(keys, rows))
    }

    fn begin(&mut self) -> Result<()> {
        self.judged.clear();
        self.watched = false;
        // Deferred constraints and constraint triggers act at the end of each statement,
        // not at COMMIT: a row one puts back is seen by the check after its delete, and a
        // row one refuses is isolated like any other refusal, not the whole commit failed.
        self.client
            .batch_execute("BEGIN; SET CONSTRAINTS ALL IMMEDIATE")?;
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        self.judged.clear();
        self.watched = false;
        self.client
            .batch_execute("COMMIT")
            .with_context(|| format!("Failed to commit deletions to {}", self.location))
    }

    fn rollback(&mut self) {
        self.judged.clear();
        self.watched = false;
        let _ = self.client.batch_execute("ROLLBACK");
    }

    fn delete(&mut self, keys: &[Key]) -> Result<Vec<Deletion>> {
        let mut each = delete_confirmed(self, keys)?;
        // Groups confirm their own rows; code run by a later group's delete (or redaction)
        // may have put back a row an earlier group removed: looked at once more, together.
        if self.watched || self.cfg.redacting.is_some() {
            recheck_deleted(keys, &mut each, |gone| {
                // Code run on delete may have deferred constraints again: whatever is still
                // pending acts now, before the look, not at COMMIT after it.
                self.client.batch_execute("SET CONSTRAINTS ALL IMMEDIATE")?;
                self.unchanged(gone)
            })?;
        }
        Ok(if self.cfg.redacting.is_some() {
            sql::as_redaction(each)
        } else {
            each
        })
    }

    fn export_subject(&mut self, subject_col: &str, subject: &str, each: ExportSink) -> Result<()> {
        let s = quote_ident(subject_col);
        let sql = format!(
            "SELECT to_jsonb(t)::text FROM {} t WHERE t.{s}::text = $1 AND t.{s}::text COLLATE \"C\" = $1 ORDER BY {}",
            self.table,
            self.keys
                .iter()
                .map(|(k, _)| format!("t.{k}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for r in self.client.query(sql.as_str(), &[&subject])? {
            let text: String = r.get(0);
            let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)?;
            each(obj)?;
        }
        Ok(())
    }
}

//! One small SQL interface over SQLite and PostgreSQL, for Lethe's own state: statements are
//! written once with `?1` placeholders, values travel as [`Val`], and a write transaction
//! is exclusive on both (SQLite's `BEGIN IMMEDIATE`, a PostgreSQL advisory lock).

mod pg_tls;
mod pg_url;

use std::time::Duration as StdDuration;

use anyhow::{Context, Result};
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use rusqlite::types::ValueRef;

pub use pg_url::redact;

/// A value bound to, or read from, a statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl From<&str> for Val {
    fn from(s: &str) -> Self {
        Val::Text(s.to_string())
    }
}
impl From<String> for Val {
    fn from(s: String) -> Self {
        Val::Text(s)
    }
}
impl From<&String> for Val {
    fn from(s: &String) -> Self {
        Val::Text(s.clone())
    }
}
impl From<i64> for Val {
    fn from(i: i64) -> Self {
        Val::Int(i)
    }
}
impl From<u32> for Val {
    fn from(i: u32) -> Self {
        Val::Int(i as i64)
    }
}
impl From<bool> for Val {
    fn from(b: bool) -> Self {
        Val::Int(b as i64)
    }
}
impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(o: Option<T>) -> Self {
        o.map(Into::into).unwrap_or(Val::Null)
    }
}
impl<T: Clone + Into<Val>> From<&Option<T>> for Val {
    fn from(o: &Option<T>) -> Self {
        o.clone().map(Into::into).unwrap_or(Val::Null)
    }
}

/// A value for a bulk insert, borrowed: hundreds of thousands of trail entries are written
/// without copying a string of theirs.
#[derive(Clone, Copy, Debug)]
pub enum Cell<'a> {
    Null,
    Int(i64),
    Text(&'a str),
}

impl<'a> From<&'a str> for Cell<'a> {
    fn from(s: &'a str) -> Self {
        Cell::Text(s)
    }
}
impl<'a> From<&'a String> for Cell<'a> {
    fn from(s: &'a String) -> Self {
        Cell::Text(s)
    }
}
impl From<i64> for Cell<'_> {
    fn from(i: i64) -> Self {
        Cell::Int(i)
    }
}
impl<'a> From<&'a Option<String>> for Cell<'a> {
    fn from(o: &'a Option<String>) -> Self {
        o.as_deref().map_or(Cell::Null, Cell::Text)
    }
}

impl rusqlite::ToSql for Cell<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::ToSqlOutput;
        Ok(match *self {
            Cell::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Cell::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(i)),
            Cell::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
        })
    }
}

/// `cells![a, b, c]`: a row for [`Db::insert_many`].
#[macro_export]
macro_rules! cells {
    ($($v:expr),* $(,)?) => { [$($crate::db::Cell::from($v)),*] };
}

/// `vals![a, b, c]`: a parameter list.
#[macro_export]
macro_rules! vals {
    ($($v:expr),* $(,)?) => { [$($crate::db::Val::from($v)),*] };
}

impl ToSql for Val {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Val::Null => Ok(IsNull::Yes),
            Val::Int(i) => match *ty {
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().to_sql(ty, out),
                _ => i.to_sql(ty, out),
            },
            Val::Real(f) => match *ty {
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                _ => f.to_sql(ty, out),
            },
            Val::Text(s) => s.as_str().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A row read back: columns by position.
#[derive(Clone, Debug)]
pub struct DbRow(pub Vec<Val>);

impl DbRow {
    pub fn int(&self, i: usize) -> i64 {
        match self.0.get(i) {
            Some(Val::Int(n)) => *n,
            Some(Val::Real(f)) => *f as i64,
            Some(Val::Text(s)) => s.parse().unwrap_or(0),
            _ => 0,
        }
    }
    pub fn opt_int(&self, i: usize) -> Option<i64> {
        match self.0.get(i) {
            Some(Val::Null) | None => None,
            _ => Some(self.int(i)),
        }
    }
    pub fn text(&self, i: usize) -> String {
        self.opt_text(i).unwrap_or_default()
    }
    pub fn opt_text(&self, i: usize) -> Option<String> {
        match self.0.get(i) {
            Some(Val::Text(s)) => Some(s.clone()),
            Some(Val::Int(n)) => Some(n.to_string()),
            Some(Val::Real(f)) => Some(f.to_string()),
            _ => None,
        }
    }
}

pub enum Db {
    Sqlite(rusqlite::Connection),
    Pg(Box<PgConn>),
}

/// A PostgreSQL connection and the statements it has prepared: a statement run again (the
/// holds read before every batch, the write-ahead record of every transaction) is parsed
/// once, and each run is one round trip, not two.
pub struct PgConn {
    client: postgres::Client,
    prepared: std::collections::HashMap<String, postgres::Statement>,
}

impl PgConn {
    /// Statements kept prepared at most; beyond, the cache starts again.
    const PREPARED_MAX: usize = 256;

    fn statement(&mut self, sql: &str) -> Result<postgres::Statement> {
        if let Some(st) = self.prepared.get(sql) {
            return Ok(st.clone());
        }
        let st = self.client.prepare(sql)?;
        if self.prepared.len() >= Self::PREPARED_MAX {
            self.prepared.clear();
        }
        self.prepared.insert(sql.to_string(), st.clone());
        Ok(st)
    }
}

/// `?N` to `$N` for PostgreSQL. Lethe's own statements hold no `?` inside literals.
fn pg_sql(sql: &str) -> String {
    sql.replace('?', "$")
}

fn sqlite_params(params: &[Val]) -> Vec<rusqlite::types::Value> {
    params
        .iter()
        .map(|v| match v {
            Val::Null => rusqlite::types::Value::Null,
            Val::Int(i) => rusqlite::types::Value::Integer(*i),
            Val::Real(f) => rusqlite::types::Value::Real(*f),
            Val::Text(s) => rusqlite::types::Value::Text(s.clone()),
        })
        .collect()
}

pub fn from_sqlite(v: ValueRef<'_>) -> Val {
    match v {
        ValueRef::Null => Val::Null,
        ValueRef::Integer(i) => Val::Int(i),
        ValueRef::Real(f) => Val::Real(f),
        ValueRef::Text(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(_) => Val::Null,
    }
}

fn from_pg(row: &postgres::Row, i: usize) -> Result<Val> {
    let ty = row.columns()[i].type_().clone();
    Ok(match ty {
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)?
            .map(Val::Int)
            .unwrap_or(Val::Null),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)?
            .map(|v| Val::Int(v as i64))
            .unwrap_or(Val::Null),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)?
            .map(|v| Val::Int(v as i64))
            .unwrap_or(Val::Null),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)?
            .map(|v| Val::Int(v as i64))
            .unwrap_or(Val::Null),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(i)?
            .map(Val::Real)
            .unwrap_or(Val::Null),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)?
            .map(|v| Val::Real(v as f64))
            .unwrap_or(Val::Null),
        _ => row
            .try_get::<_, Option<String>>(i)?
            .map(Val::Text)
            .unwrap_or(Val::Null),
    })
}

impl Db {
    pub fn open_sqlite(path: &std::path::Path) -> Result<Db> {
        let conn = rusqlite::Connection::open(path)
            .with_context(|| format!("Failed to open {}", path.display()))?;
        conn.busy_timeout(StdDuration::from_secs(60))?;
        Ok(Db::Sqlite(conn))
    }

    /// Connects to PostgreSQL. The URL's password, if any, never appears in an error.
    pub fn open_pg(url: &str, password_env: Option<&str>) -> Result<Db> {
        Ok(Db::Pg(Box::new(PgConn {
            client: connect_pg(url, password_env)?,
            prepared: std::collections::HashMap::new(),
        })))
    }

    pub fn is_pg(&self) -> bool {
        matches!(self, Db::Pg(_))
    }

    pub fn batch(&mut self, sql: &str) -> Result<()> {
        match self {
            Db::Sqlite(c) => c.execute_batch(sql)?,
            Db::Pg(c) => c.client.batch_execute(sql)?,
        }
        Ok(())
    }

    pub fn execute(&mut self, sql: &str, params: &[Val]) -> Result<u64> {
        Ok(match self {
            Db::Sqlite(c) => {
                let mut st = c.prepare_cached(sql)?;
                st.execute(rusqlite::params_from_iter(sqlite_params(params)))? as u64
            }
            Db::Pg(c) => {
                let p: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| v as _).collect();
                let st = c.statement(&pg_sql(sql))?;
                c.client.execute(&st, &p)?
            }
        })
    }

    /// Runs a query and hands each row to `each`, in order.
    pub fn query_each(
        &mut self,
        sql: &str,
        params: &[Val],
        each: impl FnMut(DbRow) -> Result<()>,
    ) -> Result<()> {
        self.query_inner(sql, params, true, each)
    }

    /// Runs an operator's query as written (`$1` on both databases; no `?` is rewritten).
    pub fn query_user(&mut self, sql: &str, params: &[Val]) -> Result<Vec<DbRow>> {
        let mut out = Vec::new();
        self.query_inner(sql, params, false, |r| {
            out.push(r);
            Ok(())
        })?;
        Ok(out)
    }

    fn query_inner(
        &mut self,
        sql: &str,
        params: &[Val],
        ours: bool,
        mut each: impl FnMut(DbRow) -> Result<()>,
    ) -> Result<()> {
        match self {
            Db::Sqlite(c) => {
                let mut st = c.prepare_cached(sql)?;
                let n = st.column_count();
                let mut rows = st.query(rusqlite::params_from_iter(sqlite_params(params)))?;
                while let Some(r) = rows.next()? {
                    let mut v = Vec::with_capacity(n);
                    for i in 0..n {
                        v.push(from_sqlite(r.get_ref(i)?));
                    }
                    each(DbRow(v))?;
                }
            }
            Db::Pg(c) => {
                use postgres::fallible_iterator::FallibleIterator;
                let st = if ours {
                    c.statement(&pg_sql(sql))?
                } else {
                    c.statement(sql)?
                };
                let mut it = c.client.query_raw(&st, params.iter())?;
                while let Some(r) = it.next()? {
                    let mut v = Vec::with_capacity(r.len());
                    for i in 0..r.len() {
                        v.push(from_pg(&r, i)?);
                    }
                    each(DbRow(v))?;
                }
            }
        }
        Ok(())
    }

    /// Inserts many rows into `table`: one prepared statement on SQLite, `COPY` on
    /// PostgreSQL (a round trip per row, or a statement with thousands of parameters, would
    /// dominate a large sweep).
    /// Rows are taken one at a time from `rows`, so a large insert holds one row in memory.
    pub fn insert_many<'a, R: AsRef<[Cell<'a>]>>(
        &mut self,
        table: &str,
        cols: &[&str],
        rows: impl IntoIterator<Item = R>,
    ) -> Result<()> {
        let mut rows = rows.into_iter().peekable();
        if rows.peek().is_none() {
            return Ok(());
        }
        match self {
            Db::Sqlite(c) => {
                let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
                let sql = format!(
                    "INSERT INTO {table} ({}) VALUES ({})",
                    cols.join(", "),
                    marks.join(", ")
                );
                let mut st = c.prepare_cached(&sql)?;
                for r in rows {
                    st.execute(rusqlite::params_from_iter(r.as_ref()))?;
                }
            }
            Db::Pg(c) => {
                use std::fmt::Write as _;
                use std::io::Write as _;
                let sql = format!("COPY {table} ({}) FROM STDIN", cols.join(", "));
                let mut w = c.client.copy_in(sql.as_str())?;
                let mut line = String::new();
                for r in rows {
                    line.clear();
                    for (i, v) in r.as_ref().iter().enumerate() {
                        if i > 0 {
                            line.push('\t');
                        }
                        match *v {
                            Cell::Null => line.push_str("\\N"),
                            Cell::Int(n) => {
                                let _ = write!(line, "{n}");
                            }
                            Cell::Text(t) => copy_escape(t, &mut line),
                        }
                    }
                    line.push('\n');
                    w.write_all(line.as_bytes())?;
                }
                w.finish()?;
            }
        }
        Ok(())
    }

    /// Inserts (a, b) pairs into a table whose primary key is both columns; pairs already
    /// there are skipped by the database (one statement per pair on SQLite, one statement in
    /// all on PostgreSQL).
    pub fn insert_pairs_ignoring_known(
        &mut self,
        table: &str,
        cols: (&str, &str),
        pairs: &[(String, String)],
    ) -> Result<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        let (a, b) = cols;
        match self {
            Db::Sqlite(c) => {
                let mut st = c.prepare_cached(&format!(
                    "INSERT INTO {table} ({a}, {b}) VALUES (?1, ?2) ON CONFLICT DO NOTHING"
                ))?;
                for (x, y) in pairs {
                    st.execute(rusqlite::params![x, y])?;
                }
            }
            Db::Pg(c) => {
                let xs: Vec<&str> = pairs.iter().map(|(x, _)| x.as_str()).collect();
                let ys: Vec<&str> = pairs.iter().map(|(_, y)| y.as_str()).collect();
                let st = c.statement(&format!(
                    "INSERT INTO {table} ({a}, {b}) SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING"
                ))?;
                c.client.execute(&st, &[&xs, &ys])?;
            }
        }
        Ok(())
    }

    pub fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<DbRow>> {
        let mut out = Vec::new();
        self.query_each(sql, params, |r| {
            out.push(r);
            Ok(())
        })?;
        Ok(out)
    }

    pub fn query_opt(&mut self, sql: &str, params: &[Val]) -> Result<Option<DbRow>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// Like `write`, but on PostgreSQL first takes the advisory lock that guards holds and
    /// exceptions ([`PROTECTIONS_LOCK`]), then the write lock: a change to the protections
    /// waits for a sweep's deletions in flight, and a sweep never waits for the trail.
    pub fn write_protections<T>(&mut self, f: impl FnOnce(&mut Db) -> Result<T>) -> Result<T> {
        self.in_write(&[PROTECTIONS_LOCK, WRITE_LOCK], f)
    }

    /// Runs `f` in a write transaction that excludes every other writer of this state, on
    /// this machine or another: commits if `f` succeeds, rolls back otherwise.
    pub fn write<T>(&mut self, f: impl FnOnce(&mut Db) -> Result<T>) -> Result<T> {
        self.in_write(&[WRITE_LOCK], f)
    }

    /// Starts a read-only snapshot: every read until [`Db::end_snapshot`] sees the state as
    /// of its first read (SQLite in WAL; PostgreSQL's repeatable read).
    pub fn begin_snapshot(&mut self) -> Result<()> {
        match self {
            Db::Sqlite(c) => c.execute_batch("BEGIN")?,
            Db::Pg(c) => c
                .client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?,
        }
        Ok(())
    }

    /// Ends a snapshot [`Db::begin_snapshot`] began.
    pub fn end_snapshot(&mut self) {
        let _ = self.batch("ROLLBACK");
    }

    /// A write transaction under other PostgreSQL advisory locks than the trail's (tables
    /// that are not the trail's, written without waiting for a sweep): on SQLite, the same
    /// `BEGIN IMMEDIATE` as every write.
    pub fn write_under<T>(
        &mut self,
        pg_locks: &[i64],
        f: impl FnOnce(&mut Db) -> Result<T>,
    ) -> Result<T> {
        self.in_write(pg_locks, f)
    }

    /// A write transaction: SQLite's `BEGIN IMMEDIATE`, or on PostgreSQL these advisory
    /// locks taken in order; committed if `f` succeeds, rolled back otherwise.
    fn in_write<T>(&mut self, pg_locks: &[i64], f: impl FnOnce(&mut Db) -> Result<T>) -> Result<T> {
        match self {
            Db::Sqlite(c) => c.execute_batch("BEGIN IMMEDIATE")?,
            Db::Pg(c) => {
                let locks: Vec<String> = pg_locks
                    .iter()
                    .map(|l| format!("SELECT pg_advisory_xact_lock({l})"))
                    .collect();
                c.client
                    .batch_execute(&format!("BEGIN; {}", locks.join("; ")))?
            }
        }
        match f(self) {
            Ok(v) => {
                self.batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

/// The PostgreSQL advisory lock every writer of the state takes (the chain's order).
pub const WRITE_LOCK: i64 = 7_415_289_561;
/// The PostgreSQL advisory lock that guards holds and exceptions: taken by whatever changes
/// them, and by a sweep from its last look at them until its deletions commit.
pub const PROTECTIONS_LOCK: i64 = 7_415_289_562;

/// Connects to PostgreSQL, taking the password from the named environment variable when
/// there is one, over TLS if the URL's `sslmode` asks for it (see [`pg_tls`]). Neither a
/// password in the URL nor the variable's value reaches a message, whatever the driver says.
pub fn connect_pg(url: &str, password_env: Option<&str>) -> Result<postgres::Client> {
    let url = pg_url::PgUrl::parse(url).map_err(crate::util::UsageError)?;
    let shown = &url.shown;
    let mut secrets = url.secrets.clone();
    let mut config: postgres::Config = url.driver.parse().map_err(|e| {
        crate::util::UsageError(pg_url::scrub(
            &format!("{shown} is not a valid PostgreSQL URL: {}", chain(&e)),
            &secrets,
        ))
    })?;
    if let Some(var) = password_env {
        let pw = std::env::var(var).map_err(|_| {
            crate::util::UsageError(format!("password_env names {var}, but {var} is not set"))
        })?;
        config.password(pw.as_str());
        secrets.push(pw);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
    let tls = pg_tls::for_url(url.sslmode.as_deref(), url.sslrootcert.as_deref())
        .map_err(|e| crate::util::UsageError(format!("{shown}: {e}")))?;
    let (client, checked) = match tls {
        pg_tls::Tls::Off => (
            config
                .ssl_mode(postgres::config::SslMode::Disable)
                .connect(postgres::NoTls),
            None,
        ),
        pg_tls::Tls::On(mode, tls, checked) => (config.ssl_mode(mode).connect(tls), Some(checked)),
    };
    client.map_err(|e| {
        let mut text = format!("Failed to connect to {shown}: {}", chain(&e));
        match &checked {
            Some(checked) if pg_tls::is_certificate_error(&e) => {
                text.push_str(&format!(" ({checked})"));
            }
            None if e
                .as_db_error()
                .is_some_and(|d| d.message().contains("no encryption")) =>
            {
                text.push_str(" (without sslmode in the URL, Lethe connects without TLS)");
            }
            _ => {}
        }
        anyhow::anyhow!(pg_url::scrub(&text, &secrets))
    })
}

/// An error and its causes, `: `-joined (the driver's own text names only its kind).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        cause = c.source();
    }
    text
}

/// Escapes text for COPY's text format.
fn copy_escape(t: &str, out: &mut String) {
    if !t
        .bytes()
        .any(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r'))
    {
        out.push_str(t);
        return;
    }
    for ch in t.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

//! `type = "sql"`: a table in SQLite (`sqlite://PATH`) or PostgreSQL (`postgres://...`).
//! Each row is an item; a row may own a file (`file`, under `file_roots`).

pub mod postgres;
pub mod shared;
pub mod sqlite;

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use lethe_core::config::{MAX_LOCK_TIMEOUT, Section, Target, TargetSpec, Window};
use lethe_core::lifecycle::Cloud;
use lethe_core::time::{Duration, TimeFormat};

use super::{Connector, Kind, Open, Pass, Place, canonical, without_query};
use crate::files::Roots;

/// A `sql` target's own settings.
#[derive(Clone, Debug)]
pub struct SqlTarget {
    pub url: String,
    /// Environment variable holding the database password, never the password itself.
    pub password_env: Option<String>,
    pub table: String,
    /// The columns that name one row: one (`key = "id"`) or several (`key = ["tenant", "id"]`).
    /// They must be covered by a unique index; the connector refuses them otherwise.
    pub key: Vec<String>,
    pub created_at: String,
    /// How created_at is stored, when numbers or text in it are not self-describing.
    pub created_at_format: Option<TimeFormat>,
    /// How expires_at is stored (same forms as created_at_format).
    pub expires_at_format: Option<TimeFormat>,
    /// How long a sweep waits for a lock held by someone else before it reports the table
    /// busy, or a row failed, and goes on (`lock_timeout`, default 5s).
    pub lock_timeout: Duration,
    pub retention_days: Option<String>,
    pub expires_at: Option<String>,
    pub subject: Option<String>,
    pub file: Option<String>,
    pub file_roots: Vec<String>,
    /// `sensitivity_column`: the column naming each row's own sensitivity level, whose cap
    /// then applies to it (an empty one: the target's level).
    pub sensitivity_column: Option<String>,
    /// `[targets.tags]`: the column holding each `[tags] required` entry. A row carries a
    /// tag when its column is neither NULL nor empty; a tag no column holds, no row carries.
    pub tags: std::collections::BTreeMap<String, String>,
    /// `action`: what becomes of a due row (deleted, or its `redact` columns overwritten).
    pub action: SqlAction,
    /// `redact`: the columns a redaction overwrites (with `action = "redact"` or
    /// `redact_after`).
    pub redact: Vec<String>,
    /// `redact_with`: what a redacted column holds afterwards.
    pub redact_with: RedactWith,
    /// `redact_after`: redact a row this long after created_at, before its deletion.
    pub redact_after: Option<Duration>,
    /// The redaction this opening of the table carries out in place of deletion: set for
    /// `action = "redact"`, and for the passes [`SqlKind::passes`] derives (`redact_after`,
    /// an erasure on a redacting target). `None`: due rows are deleted.
    pub redacting: Option<Redaction>,
    /// Rows are due by created_at and the window alone (a `redact_after` pass): the SQL
    /// filter ignores retention_days and expires_at, which are still read.
    pub created_only: bool,
}

/// What a sweep does to a due row of a `sql` target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqlAction {
    Delete,
    Redact,
}

/// What a redacted column holds afterwards (`redact_with`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedactWith {
    /// NULL.
    Null,
    /// A fixed text (`"'[redacted]'"`), as the text itself (quotes removed, `''` undoubled).
    Literal(String),
    /// `sha256:` and the hex SHA-256 of the value's text: equal values stay comparable,
    /// the text is gone.
    Sha256,
}

impl RedactWith {
    /// Reads `redact_with`: `null`, `sha256`, or one single-quoted SQL literal.
    pub fn parse(text: &str) -> Result<RedactWith, String> {
        match text {
            "null" => return Ok(RedactWith::Null),
            "sha256" => return Ok(RedactWith::Sha256),
            _ => {}
        }
        let inner = text
            .strip_prefix('\'')
            .and_then(|t| t.strip_suffix('\''))
            .filter(|_| text.len() >= 2)
            .ok_or_else(|| {
                format!(
                    "{text:?} is not a way to redact: expected \"null\", \"sha256\" or a single-quoted literal such as \"'[redacted]'\""
                )
            })?;
        if inner.replace("''", "").contains('\'') {
            return Err(format!(
                "{text:?}: a quote inside the literal must be doubled ('')"
            ));
        }
        Ok(RedactWith::Literal(inner.replace("''", "'")))
    }
}

impl std::fmt::Display for RedactWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedactWith::Null => f.write_str("null"),
            RedactWith::Sha256 => f.write_str("sha256"),
            RedactWith::Literal(t) => write!(f, "'{}'", t.replace('\'', "''")),
        }
    }
}

/// A redaction as carried out: these columns overwritten this way, on due rows that still
/// hold something to overwrite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redaction {
    pub columns: Vec<String>,
    pub with: RedactWith,
}

impl Redaction {
    /// What the entries say was done: the columns and how, never a value.
    pub fn describe(&self) -> String {
        format!("columns {} with {}", self.columns.join(", "), self.with)
    }
}

impl SqlTarget {
    /// Every column the target reads, with the config key that names it.
    pub fn columns(&self) -> Vec<(&'static str, &str)> {
        let mut v: Vec<(&'static str, &str)> =
            self.key.iter().map(|k| ("key", k.as_str())).collect();
        v.push(("created_at", &self.created_at));
        for (k, c) in [
            ("retention_days", &self.retention_days),
            ("expires_at", &self.expires_at),
            ("subject", &self.subject),
            ("file", &self.file),
            ("sensitivity_column", &self.sensitivity_column),
        ] {
            if let Some(c) = c {
                v.push((k, c.as_str()));
            }
        }
        v.extend(self.tags.values().map(|c| ("tags", c.as_str())));
        v.extend(self.redact.iter().map(|c| ("redact", c.as_str())));
        v
    }

    /// The condition a row lacking one of `required` meets, for `SELECT count(*)`; `None`
    /// when nothing is required. `blank` says a quoted column holds only spaces, tabs and
    /// line breaks (or nothing).
    pub fn untagged_condition(
        &self,
        required: &[String],
        blank: impl Fn(&str) -> String,
    ) -> Option<String> {
        if required.is_empty() {
            return None;
        }
        let mut any = Vec::new();
        for tag in required {
            match self.tags.get(tag) {
                Some(col) => {
                    let c = shared::quote_ident(col);
                    any.push(format!("{c} IS NULL OR {}", blank(&c)));
                }
                // Carried by no column: every row lacks it.
                None => return Some("1 = 1".into()),
            }
        }
        Some(any.join(" OR "))
    }

    fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")
    }
}

kind!(SqlKind, "sql", subjects: true, parse: parse);

/// Reads a `sql` target's own keys.
fn parse(s: &mut Section<'_, '_>) -> Option<Arc<dyn TargetSpec>> {
    let url = s.required_str("url");
    let password_env = s.optional_str("password_env");
    let table = s.required_str("table");
    let key = s.key_columns();
    let created_at = s.required_str("created_at");
    let created_at_format = s.time_format("created_at_format");
    let expires_at_format = s.time_format("expires_at_format");
    let lock_timeout = if s.has("lock_timeout") {
        s.duration_at_most("lock_timeout", MAX_LOCK_TIMEOUT, "a day")
    } else {
        Some(Duration::from_secs(5))
    };
    let retention_days = s.optional_str("retention_days");
    let expires_at = s.optional_str("expires_at");
    let file = s.optional_str("file");
    let sensitivity_column = s.optional_str("sensitivity_column");
    let tags = s.string_map("tags");
    let file_roots = s.strings("file_roots", |_| Ok(()));
    if file.is_some() && file_roots.is_empty() {
        s.error(
            "file_roots",
            "a target with `file` needs file_roots: files outside them are never deleted",
        );
    }
    let (action, redact, redact_with, redact_after) =
        parse_redaction(
            s,
            &key,
            &created_at,
            &retention_days,
            &expires_at,
            &file,
            &sensitivity_column,
        );
    if let Some(u) = &url
        && !(u.starts_with("sqlite:")
            || u.starts_with("postgres://")
            || u.starts_with("postgresql://"))
    {
        s.error("url", "expected sqlite://PATH or postgres://...");
    }
    Some(Arc::new(SqlTarget {
        url: url?,
        password_env,
        table: table?,
        key: key?,
        created_at: created_at?,
        created_at_format,
        expires_at_format,
        lock_timeout: lock_timeout?,
        retention_days,
        expires_at,
        subject: s.subject().map(str::to_string),
        file,
        file_roots,
        sensitivity_column,
        tags,
        redacting: (action? == SqlAction::Redact).then(|| Redaction {
            columns: redact.clone(),
            with: redact_with.clone(),
        }),
        action: action?,
        redact,
        redact_with,
        redact_after: redact_after?,
        created_only: false,
    }))
}

/// The longest `redact_after` (a century): anything longer is surely a typo.
const MAX_REDACT_AFTER: Duration = Duration::from_days(36_500);

/// Reads `action`, `redact`, `redact_with` and `redact_after`, with every problem reported
/// on its key's line: a redaction that names the key or a timestamp column, or that has no
/// columns, would break what the sweep judges rows by (or do nothing while claiming to).
#[allow(clippy::type_complexity)]
fn parse_redaction(
    s: &mut Section<'_, '_>,
    key: &Option<Vec<String>>,
    created_at: &Option<String>,
    retention_days: &Option<String>,
    expires_at: &Option<String>,
    file: &Option<String>,
    sensitivity_column: &Option<String>,
) -> (
    Option<SqlAction>,
    Vec<String>,
    RedactWith,
    Option<Option<Duration>>,
) {
    let action = match s.optional_str("action").as_deref() {
        None | Some("delete") => Some(SqlAction::Delete),
        Some("redact") => Some(SqlAction::Redact),
        Some(other) => {
            s.error(
                "action",
                format!("{other:?} is not an action: expected \"delete\" or \"redact\""),
            );
            None
        }
    };
    let mut roles: Vec<(&str, &str)> = Vec::new();
    for k in key.iter().flatten() {
        roles.push(("key", k));
    }
    // The file column too: a row redacted before its deletion must still name its file.
    for (role, col) in [
        ("created_at", created_at),
        ("expires_at", expires_at),
        ("retention_days", retention_days),
        ("file", file),
        // A redacted level would read as unknown, then as the strictest cap: the row would
        // go early.
        ("sensitivity_column", sensitivity_column),
    ] {
        if let Some(c) = col {
            roles.push((role, c));
        }
    }
    let subject = s.subject().map(str::to_string);
    let redact = s.strings("redact", |c| {
        if subject.as_deref() == Some(c) {
            return Err(format!(
                "{c:?} is the subject column: an erasure request must still find the row (it clears the subject itself), and a hash of an id can be reversed by trying ids; it is never redacted by retention"
            ));
        }
        match roles.iter().find(|(_, r)| *r == c) {
            Some((role, _)) => Err(format!(
                "{c:?} is the {role} column: Lethe reads it to judge, name or delete the row, so it is never redacted"
            )),
            None => Ok(()),
        }
    });
    let redact_with = match s.optional_str("redact_with") {
        None => RedactWith::Null,
        Some(text) => RedactWith::parse(&text).unwrap_or_else(|e| {
            s.error("redact_with", e);
            RedactWith::Null
        }),
    };
    let redact_after = if s.has("redact_after") {
        s.duration_at_most("redact_after", MAX_REDACT_AFTER, "a century")
            .map(Some)
    } else {
        Some(None)
    };
    let redacts = action == Some(SqlAction::Redact) || matches!(redact_after, Some(Some(_)));
    if redacts && redact.is_empty() {
        s.error(
            "redact",
            "required with action = \"redact\" or redact_after: the columns to overwrite, such as redact = [\"prompt\", \"response\"]",
        );
    }
    if !redacts && (s.has("redact") || s.has("redact_with")) {
        let k = if s.has("redact") { "redact" } else { "redact_with" };
        s.error(
            k,
            "nothing redacts on this target: set action = \"redact\" or redact_after, or remove it",
        );
    }
    if action == Some(SqlAction::Redact) && file.is_some() {
        s.error(
            "file",
            "a redacted row stays, and so would its file: action = \"redact\" cannot be used with file",
        );
    }
    let mut seen = std::collections::HashSet::new();
    for c in &redact {
        if !seen.insert(c.as_str()) {
            s.error("redact", format!("{c:?} is named twice"));
        }
    }
    (action, redact, redact_with, redact_after)
}

impl Kind for SqlKind {
    fn open(&self, target: &Target, how: &Open) -> Option<Result<Box<dyn Connector>>> {
        let cfg = target.spec::<SqlTarget>()?;
        Some(if cfg.is_postgres() {
            postgres::PgTable::open(cfg, &target.window, how.write)
                .map(|t| Box::new(t) as Box<dyn Connector>)
        } else {
            sqlite::SqliteTable::open(cfg, &target.window, how.base, how.write)
                .map(|t| Box::new(t) as Box<dyn Connector>)
        })
    }

    fn identity(&self, target: &Target, base: &Path) -> String {
        let Some(sql) = target.spec::<SqlTarget>() else {
            return format!("sql:{}", target.name);
        };
        // A redaction's write-ahead records are kept apart from the table's deletions (a
        // redacted row is still there: only a redaction pass can tell it is done), and an
        // erasure's (which also clears the subject) apart from a retention sweep's.
        let pass = match &sql.redacting {
            None => "",
            Some(r) if sql.subject.as_ref().is_some_and(|s| r.columns.contains(s)) => {
                "|erase-redact"
            }
            Some(_) => "|redact",
        };
        let place = match crate::state::sqlite_path(&sql.url, base) {
            Some(p) => format!("sqlite:{}|{}", canonical(&p).display(), sql.table),
            None => format!(
                "{}|{}",
                without_query(&crate::db::redact(&sql.url)),
                sql.table
            ),
        };
        place + pass
    }

    /// A deletion pass, a redaction pass, or both: `redact_after` redacts rows from
    /// created_at + redact_after, after the deletion pass has removed the rows due for it
    /// (so no row is redacted and deleted in one run). An erasure on a redacting target
    /// redacts the subject's rows, subject column included.
    fn passes(&self, target: &Target, erasure: bool) -> Vec<Pass> {
        let Some(sql) = target.spec::<SqlTarget>() else {
            return vec![Pass::whole(target)];
        };
        // A derived pass (redact_after, an erasure's redaction) is never delayed: its
        // schedule would share the target's name with the deletions' own.
        let derived = |spec: SqlTarget, window: Window| {
            let mut t = target.clone();
            t.spec = Arc::new(spec);
            t.window = window;
            t.delete_delay = None;
            t
        };
        let redaction = || Redaction {
            columns: sql.redact.clone(),
            with: sql.redact_with.clone(),
        };
        // An erasure on a redacting target: its rows redacted, subject column included (its
        // write-ahead records kept apart, see `identity`).
        let erasing = || {
            let mut r = redaction();
            // An unkeyed hash of a subject's id can be reversed by trying ids: an erasure
            // leaves a fixed text instead.
            if r.with == RedactWith::Sha256 {
                r.with = RedactWith::Literal("[erased]".into());
            }
            if let Some(s) = &sql.subject
                && !r.columns.contains(s)
            {
                r.columns.push(s.clone());
            }
            let what = r.describe();
            let spec = SqlTarget {
                redacting: Some(r),
                ..sql.clone()
            };
            Pass {
                target: derived(spec, target.window.clone()),
                redacts: Some(what),
                ..Pass::whole(target)
            }
        };
        if erasure {
            if sql.action == SqlAction::Delete {
                return vec![Pass::whole(target)];
            }
            return vec![erasing()];
        }
        let mut passes = Vec::new();
        if sql.action == SqlAction::Redact && sql.subject.is_some() {
            // A retention sweep also finishes an interrupted erasure's redactions (only
            // the erasure's own pass, which clears the subject too, can).
            passes.push(Pass {
                recover_only: true,
                ..erasing()
            });
        }
        passes.push(Pass {
            redacts: sql.redacting.as_ref().map(Redaction::describe),
            ..Pass::whole(target)
        });
        if let Some(after) = sql.redact_after {
            // Judged by created_at alone: the row's own expiry says when it goes, not when
            // its text does.
            let r = redaction();
            let what = r.describe();
            let spec = SqlTarget {
                redacting: Some(r),
                created_only: true,
                file: None,
                ..sql.clone()
            };
            let mut window = target.window.clone();
            window.retention = after;
            passes.push(Pass {
                target: derived(spec, window),
                redacts: Some(what),
                created_only: true,
                // A row the first pass found due (and kept: held, excepted, failed) is that
                // pass's to record, not this one's again.
                judged_before: Some(target.window.clone()),
                recover_only: false,
            });
        }
        passes
    }

    fn roots(&self, target: &Target, base: &Path) -> Roots {
        target.spec::<SqlTarget>()
            .map(|sql| Roots::new("file_roots", &sql.file_roots, base))
            .unwrap_or_default()
    }

    /// The table as its database names it (opened read-only to ask).
    fn place(&self, target: &Target, base: &Path) -> Option<Place> {
        let mut table = self.open(target, &Open {
            base,
            write: false,
            required_tags: &[],
        })?
        .ok()?;
        table.identity().ok().flatten().map(Place::Table)
    }

    fn database_url<'t>(&self, target: &'t Target) -> Option<&'t str> {
        target.spec::<SqlTarget>().map(|s| s.url.as_str())
    }

    fn formats(&self, target: &Target) -> (Option<TimeFormat>, Option<TimeFormat>) {
        target.spec::<SqlTarget>()
            .map(|s| (s.created_at_format.clone(), s.expires_at_format.clone()))
            .unwrap_or_default()
    }

    fn items(&self) -> &'static str {
        "rows"
    }

    fn owned_files<'t>(&self, target: &'t Target) -> Option<(&'t str, &'t [String])> {
        let sql = target.spec::<SqlTarget>()?;
        Some((sql.file.as_deref()?, sql.key.as_slice()))
    }

    fn lifecycle(&self, target: &Target, _cloud: Cloud) -> Result<serde_json::Value, String> {
        Err(format!(
            "target {} is of type sql; lifecycle policies are for object_store targets",
            target.name
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::sql::shared::Dialect;

    #[test]
    fn redact_with_reads_null_sha256_and_single_quoted_literals_only() {
        assert_eq!(RedactWith::parse("null"), Ok(RedactWith::Null));
        assert_eq!(RedactWith::parse("sha256"), Ok(RedactWith::Sha256));
        assert_eq!(
            RedactWith::parse("'[redacted]'"),
            Ok(RedactWith::Literal("[redacted]".into()))
        );
        assert_eq!(
            RedactWith::parse("'it''s gone'"),
            Ok(RedactWith::Literal("it's gone".into()))
        );
        assert_eq!(RedactWith::parse("''"), Ok(RedactWith::Literal(String::new())));
        for bad in ["md5", "NULL", "'", "'a'b'", "[redacted]", "'open"] {
            assert!(RedactWith::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_redaction_overwrites_only_what_is_not_yet_redacted_and_quotes_its_literal() {
        let r = Redaction {
            columns: vec!["prompt".into()],
            with: RedactWith::Literal("it's".into()),
        };
        let q = |c: &str| shared::quote_ident(c);
        assert_eq!(
            r.set_list(Dialect::Sqlite, q),
            "\"prompt\" = CASE WHEN (\"prompt\" IS NULL OR CAST(\"prompt\" AS TEXT) = 'it''s') THEN \"prompt\" ELSE 'it''s' END"
        );
        assert_eq!(
            r.done(Dialect::Postgres, q),
            "((\"prompt\" IS NULL OR \"prompt\"::text = 'it''s'))"
        );
        let h = Redaction {
            columns: vec!["a".into(), "b".into()],
            with: RedactWith::Sha256,
        };
        let done = h.done(Dialect::Postgres, q);
        assert!(done.contains("\"a\"::text ~ '^sha256:[0-9a-f]{64}$'"), "{done}");
        assert!(done.contains(" AND "), "{done}");
        assert_eq!(h.describe(), "columns a, b with sha256");
    }
}

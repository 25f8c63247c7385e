//! `type = "sql"`: a table in SQLite (`sqlite://PATH`) or PostgreSQL (`postgres://...`).
//! Each row is an item; a row may own a file (`file`, under `file_roots`).

pub mod postgres;
pub mod shared;
pub mod sqlite;

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use lethe_core::config::{MAX_LOCK_TIMEOUT, Section, Target, TargetSpec};
use lethe_core::lifecycle::Cloud;
use lethe_core::time::{Duration, TimeFormat};

use super::{Connector, Kind, Open, Place, canonical, without_query};
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
    }))
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
        match crate::state::sqlite_path(&sql.url, base) {
            Some(p) => format!("sqlite:{}|{}", canonical(&p).display(), sql.table),
            None => format!(
                "{}|{}",
                without_query(&crate::db::redact(&sql.url)),
                sql.table
            ),
        }
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

//! What the SQL targets share, whatever the database holds them: quoting identifiers,
//! checking a target's columns against the table, and the advice and refusals they give.
//! Each backend says only how its own type names map to [`ColumnType`] and how it reads
//! its catalog; everything here is written once.

use super::{RedactWith, Redaction, SqlTarget};

/// An identifier quoted for SQL (both SQLite and PostgreSQL double the quote).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The SQL a database speaks, where redaction's statements differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A text as an SQL string literal (quotes doubled; PostgreSQL sessions set
/// `standard_conforming_strings`, so a backslash is only a backslash).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The name SQLite knows Lethe's SHA-256 function by (registered on each connection).
pub const SQLITE_SHA256: &str = "lethe_sha256";

impl Redaction {
    /// SQL true when column `col` (as written in the statement) already holds what a
    /// redaction leaves: NULL, the literal, or `sha256:` and 64 hex digits.
    fn column_done(&self, d: Dialect, col: &str) -> String {
        let text = match d {
            Dialect::Sqlite => format!("CAST({col} AS TEXT)"),
            Dialect::Postgres => format!("{col}::text"),
        };
        match (&self.with, d) {
            (RedactWith::Null, _) => format!("{col} IS NULL"),
            (RedactWith::Literal(t), _) => {
                format!("({col} IS NULL OR {text} = {})", quote_literal(t))
            }
            (RedactWith::Sha256, Dialect::Sqlite) => format!(
                "({col} IS NULL OR {text} GLOB 'sha256:{}')",
                "[0-9a-f]".repeat(64)
            ),
            (RedactWith::Sha256, Dialect::Postgres) => {
                format!("({col} IS NULL OR {text} ~ '^sha256:[0-9a-f]{{64}}$')")
            }
        }
    }

    /// SQL true when every redacted column of a row already holds what a redaction leaves:
    /// such a row is not selected, redacted or recorded again. `qualify` writes a column
    /// as the statement names it.
    pub fn done(&self, d: Dialect, qualify: impl Fn(&str) -> String) -> String {
        let each: Vec<String> = self
            .columns
            .iter()
            .map(|c| self.column_done(d, &qualify(c)))
            .collect();
        format!("({})", each.join(" AND "))
    }

    /// The `SET` list of the redacting UPDATE: each column overwritten unless it already
    /// holds what a redaction leaves (a NULL stays NULL; a hash is not hashed again).
    pub fn set_list(&self, d: Dialect, qualify: impl Fn(&str) -> String) -> String {
        self.columns
            .iter()
            .map(|c| {
                let col = qualify(c);
                let value = match (&self.with, d) {
                    (RedactWith::Null, _) => "NULL".to_string(),
                    (RedactWith::Literal(t), _) => quote_literal(t),
                    (RedactWith::Sha256, Dialect::Sqlite) => {
                        format!("'sha256:' || {SQLITE_SHA256}(CAST({col} AS TEXT))")
                    }
                    (RedactWith::Sha256, Dialect::Postgres) => format!(
                        "'sha256:' || encode(sha256(convert_to({col}::text, 'UTF8')), 'hex')"
                    ),
                };
                format!(
                    "{} = CASE WHEN {} THEN {col} ELSE {value} END",
                    quote_ident(c),
                    self.column_done(d, &col)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Redactions the database will refuse on every row: a `NOT NULL` column overwritten with
/// NULL (a `redact` column, or the subject an erasure on a redacting target clears).
/// `not_null` names the table's NOT NULL columns.
pub fn refused_redactions(cfg: &SqlTarget, not_null: &[String]) -> Vec<String> {
    if cfg.redact_with != RedactWith::Null || cfg.redact.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<String> = cfg
        .redact
        .iter()
        .filter(|c| not_null.contains(c))
        .map(|c| {
            format!(
                "redact = {c:?}: the column is NOT NULL, so redact_with = \"null\" is refused on every row (each reported failed, none redacted); use a literal such as \"'[redacted]'\" or \"sha256\""
            )
        })
        .collect();
    if cfg.action == super::SqlAction::Redact
        && let Some(s) = &cfg.subject
        && not_null.contains(s)
        && !cfg.redact.contains(s)
    {
        out.push(format!(
            "subject = {s:?}: the column is NOT NULL, and an erasure on this redacting target clears it with redact_with = \"null\": the database refuses, and each of the subject's rows is reported failed; use a literal or \"sha256\""
        ));
    }
    out
}

/// A connector's answer for a row it redacted rather than deleted, in a redaction's words.
pub fn as_redaction(each: Vec<crate::targets::Deletion>) -> Vec<crate::targets::Deletion> {
    use crate::targets::Deletion;
    each.into_iter()
        .map(|d| match d {
            Deletion::Failed(why) => Deletion::Failed(
                why.replacen("not deleted: the database did not confirm removing the row", "not redacted: the database did not confirm updating the row", 1)
                    .replacen("refused to delete the row", "refused to redact the row", 1),
            ),
            other => other,
        })
        .collect()
}

/// What a column can hold, as far as judging and deleting go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// A date or time type.
    Timestamp,
    /// Integers, decimals and floats.
    Number,
    /// Text of any length.
    Text,
    /// No declared type (SQLite): any value, judged when read.
    Untyped,
    /// Raw bytes.
    Blob,
    /// Anything else (arrays, JSON, UUIDs, ...).
    Other,
}

impl ColumnType {
    /// Whether a column of this type can play `role` in a target's config.
    fn fits(self, role: &str) -> bool {
        use ColumnType::*;
        match role {
            "created_at" | "expires_at" => matches!(self, Timestamp | Number | Text | Untyped),
            "retention_days" => matches!(self, Number | Text | Untyped),
            "file" => matches!(self, Text | Untyped),
            // Any column can be overwritten; the database refuses what it cannot hold.
            "redact" => true,
            // Keys and subjects are read as text; bytes have no text to name them by.
            _ => self != Blob,
        }
    }
}

/// What a role's column must hold, for the message when it cannot.
fn role_needs(role: &str) -> &'static str {
    match role {
        "created_at" | "expires_at" => "a timestamp",
        "retention_days" => "a number of days",
        "file" => "a path",
        "subject" => "a subject",
        "redact" => "a redacted value",
        _ => "a key",
    }
}

/// The problems with a target's columns: each configured column must exist in `cols`
/// (name and declared type, as the database lists them) with a type that fits its role.
/// `where_` says where the table was looked for, when it has no columns at all.
pub fn column_problems(
    cfg: &SqlTarget,
    cols: &[(String, String)],
    type_of: impl Fn(&str) -> ColumnType,
    where_: &str,
) -> Vec<String> {
    if cols.is_empty() {
        return vec![format!("table {:?} does not exist in {where_}", cfg.table)];
    }
    let mut problems = Vec::new();
    for (role, col) in cfg.columns() {
        match cols.iter().find(|(n, _)| n == col) {
            None => {
                let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
                problems.push(format!(
                    "{role} = {col:?}: table {:?} has no such column (columns: {})",
                    cfg.table,
                    names.join(", ")
                ));
            }
            Some((_, ty)) if !type_of(ty).fits(role) => problems.push(format!(
                "{role} = {col:?}: column type {ty} cannot hold {}",
                role_needs(role)
            )),
            Some(_) => {}
        }
    }
    problems
}

/// The rows whose subject reads exactly `subject`: a filter in SQL may match more (case,
/// collation, numeric affinity), never fewer.
pub fn only_subject(rows: Vec<crate::targets::Row>, subject: &str) -> Vec<crate::targets::Row> {
    rows.into_iter()
        .filter(|r| matches!(&r.subject, Ok(Some(s)) if s == subject))
        .collect()
}

/// The advice for a column sweeps or erasures filter on that no index leads with.
pub fn missing_index(col: &str, table_sql: &str, index_name: Option<&str>) -> String {
    let name = index_name
        .map(|n| format!("{} ", quote_ident(n)))
        .unwrap_or_default();
    format!(
        "column {col:?} has no index; sweeps and erasures scan the whole table. Run: CREATE INDEX {name}ON {table_sql} ({});",
        quote_ident(col)
    )
}

/// The warning for a table whose rows another table's foreign key changes on delete.
pub fn cascade(other: &str, table: &str, action: &str) -> String {
    format!(
        "table {other:?} references {table:?} with ON DELETE {action}: deleting a row here also changes its rows in {other:?}, which no policy judged and no hold on this target protects"
    )
}

/// The refusal for a key that does not name one row, with what would do: `unique` lists
/// the table's primary key and unique indexes (a name to show, and its columns).
pub fn not_unique(cfg: &SqlTarget, table: &str, unique: &[(String, Vec<String>)]) -> String {
    let key = if cfg.key.len() == 1 {
        format!("key = {:?}", cfg.key[0])
    } else {
        format!("key = {:?}", cfg.key)
    };
    let fix = match unique.first() {
        Some((name, cols)) => {
            let cols = if cols.len() == 1 {
                format!("{:?}", cols[0])
            } else {
                format!("{cols:?}")
            };
            format!("{name} would do: key = {cols}")
        }
        None => format!(
            "the table has no primary key or unique index; create one (CREATE UNIQUE INDEX ON {table} ({})) or name columns that have one",
            cfg.key
                .iter()
                .map(|k| quote_ident(k))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!(
        "{key}: no primary key or unique index of {table} covers only these columns, so two rows could share a key and a deletion meant for one would take both; {fix}"
    )
}

/// Whether some unique index covers only key columns (so a key names at most one row).
pub fn key_is_unique(cfg: &SqlTarget, unique: &[(String, Vec<String>)]) -> bool {
    unique
        .iter()
        .any(|(_, cols)| !cols.is_empty() && cols.iter().all(|c| cfg.key.contains(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_with_their_quotes_doubled() {
        assert_eq!(quote_ident("id"), "\"id\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn roles_take_only_types_that_can_hold_them() {
        use ColumnType::*;
        assert!(Timestamp.fits("created_at") && Text.fits("expires_at"));
        assert!(!Blob.fits("created_at") && !Other.fits("created_at"));
        assert!(Number.fits("retention_days") && !Timestamp.fits("retention_days"));
        assert!(Text.fits("file") && !Number.fits("file"));
        assert!(Other.fits("key") && !Blob.fits("key") && !Blob.fits("subject"));
    }
}

//! `subject_map`: a vendor file carries no metadata, so whose it is comes from the
//! application's own record of what it uploaded for whom, read with two queries on one of
//! the config's SQL targets: a subject's ids, and an id's subject. The database is opened
//! read-only: the queries are the operator's, and may only read.

use std::path::Path;

use anyhow::{Context, Result};

use super::SubjectMap;
use crate::db::{Db, Val};
use crate::util::UsageError;

pub struct Mapper {
    db: Db,
    map: SubjectMap,
}

impl Mapper {
    pub fn open(map: &SubjectMap, base: &Path) -> Result<Mapper> {
        let Some(sql) = &map.db else {
            return Err(UsageError(format!(
                "subject_map.source {:?} was not resolved to a sql target",
                map.source
            ))
            .into());
        };
        let db = if sql.url.starts_with("postgres://") || sql.url.starts_with("postgresql://") {
            let mut db = Db::open_pg(&sql.url, sql.password_env.as_deref())?;
            db.batch("SET default_transaction_read_only = on")?;
            db
        } else {
            let path = crate::state::sqlite_path(&sql.url, base).ok_or_else(|| {
                UsageError(format!(
                    "subject_map.source {}: url is not a sqlite:// or postgres:// URL",
                    map.source
                ))
            })?;
            if !path.is_file() {
                return Err(UsageError(format!(
                    "subject_map.source {}: database {} does not exist",
                    map.source,
                    path.display()
                ))
                .into());
            }
            let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let conn = rusqlite::Connection::open_with_flags(&path, flags)
                .with_context(|| format!("Failed to open {}", path.display()))?;
            conn.busy_timeout(std::time::Duration::from_secs(30))?;
            Db::Sqlite(conn)
        };
        Ok(Mapper {
            db,
            map: map.clone(),
        })
    }

    /// The vendor ids the application recorded for this subject.
    pub fn ids(&mut self, subject: &str) -> Result<Vec<String>> {
        let rows = self
            .db
            .query_user(&self.map.query, &[Val::Text(subject.to_string())])
            .with_context(|| format!("subject_map.query on {}", self.map.source))?;
        let mut ids: Vec<String> = rows.iter().filter_map(|r| r.opt_text(0)).collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// The subject of one vendor id, when the application recorded one. Several rows that
    /// disagree cannot be told apart: an error, so the item is reported, not judged.
    pub fn subject_of(&mut self, id: &str) -> Result<Option<String>, String> {
        let rows = self
            .db
            .query_user(&self.map.subject_of, &[Val::Text(id.to_string())])
            .map_err(|e| format!("subject_map.subject_of on {}: {e:#}", self.map.source))?;
        let mut subjects: Vec<String> = rows.iter().filter_map(|r| r.opt_text(0)).collect();
        subjects.sort();
        subjects.dedup();
        match subjects.len() {
            0 => Ok(None),
            1 => Ok(subjects.pop()),
            n => Err(format!(
                "subject_map.subject_of gives {n} different subjects for it; whose it is cannot be told"
            )),
        }
    }
}

//! `type = "jsonl"`: a toy store, one item per line of a JSON-lines file, compiled only for
//! tests (feature `jsonl-connector`). It exists to show what adding a connector takes: this
//! folder and one line in `targets/mod.rs`. It uses only what any connector may use.
//!
//! ```toml
//! [[targets]]
//! name = "notes"
//! type = "jsonl"
//! path = "notes.jsonl"        # relative to the config file
//! category = "notes"
//! subject = "user"            # optional: the field naming an item's data subject
//! ```
//!
//! Each line is an object with a text `id` (the key), a `created_at` timestamp and any other
//! fields; one with `"locked": true` refuses to be deleted (as a trigger would). A delete
//! rewrites the file without the deleted lines (to a temporary file, then renamed over it),
//! so a crash leaves the old file or the new one, never half of one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use lethe_core::config::{Section, Target, TargetSpec};
use lethe_core::time::Timestamp;
use serde_json::{Map, Value as Json};

use crate::targets::{
    Capabilities, Connector, Deletion, ExportSink, Key, Kind, Lookup, Open, Row, Value,
};

/// A `jsonl` target's own settings.
#[derive(Clone, Debug)]
pub struct JsonlTarget {
    pub path: String,
    pub subject: Option<String>,
}

kind!(JsonlKind, "jsonl", subjects: true, parse: parse);

/// Reads a `jsonl` target's own keys.
fn parse(s: &mut Section<'_, '_>) -> Option<Arc<dyn TargetSpec>> {
    let path = s.required_str("path");
    Some(Arc::new(JsonlTarget {
        path: path?,
        subject: s.subject().map(str::to_string),
    }))
}

impl Kind for JsonlKind {
    fn open(&self, target: &Target, how: &Open) -> Option<Result<Box<dyn Connector>>> {
        let cfg = target.spec::<JsonlTarget>()?;
        Some(Ok(Box::new(JsonlFile {
            path: how.base.join(&cfg.path),
            subject: cfg.subject.clone(),
            listed: None,
        })))
    }

    fn identity(&self, target: &Target, base: &Path) -> String {
        match target.spec::<JsonlTarget>() {
            Some(cfg) => format!("jsonl:{}", crate::targets::canonical(&base.join(&cfg.path)).display()),
            None => format!("jsonl:{}", target.name),
        }
    }
}

/// A line of the file (numbered from 1): its object, or why it is none.
type Line = (usize, Result<Map<String, Json>, String>);

/// One open file.
struct JsonlFile {
    path: PathBuf,
    subject: Option<String>,
    /// The items still to hand out by `candidates`, read once per scan.
    listed: Option<std::vec::IntoIter<Row>>,
}

impl JsonlFile {
    /// Every line, in file order, each with its line number (from 1) or why it is unusable.
    fn lines(&self) -> Result<Vec<Line>> {
        let text = std::fs::read_to_string(&self.path)
            .with_context(|| format!("Failed to read {}", self.path.display()))?;
        Ok(text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                let item = match serde_json::from_str::<Json>(l) {
                    Ok(Json::Object(m)) => Ok(m),
                    Ok(_) => Err("not a JSON object".to_string()),
                    Err(e) => Err(format!("not JSON: {e}")),
                };
                (i + 1, item)
            })
            .collect())
    }

    fn row(&self, line: usize, item: Result<Map<String, Json>, String>) -> Row {
        let item = match item {
            Ok(m) => m,
            Err(why) => return Row::unusable(Key::Text(format!("line {line}")), why),
        };
        let Some(Json::String(id)) = item.get("id") else {
            return Row::unusable(
                Key::Text(format!("line {line}")),
                "no text `id`: the item cannot be named".into(),
            );
        };
        let mut row = Row::new(Key::Text(id.clone()));
        row.created_at = match item.get("created_at") {
            Some(Json::String(t)) => Value::Text(t.clone()),
            _ => Value::Null,
        };
        if let Some(field) = &self.subject {
            row.subject = match item.get(field) {
                Some(Json::String(s)) => Ok(Some(s.clone())),
                None | Some(Json::Null) => Ok(None),
                Some(_) => Err(format!("{field} is not text")),
            };
        }
        row
    }

    /// The next page of the scan whose rows pass `keep`.
    fn page(&mut self, limit: usize, keep: impl Fn(&Row) -> bool) -> Result<Vec<Row>> {
        if self.listed.is_none() {
            let rows: Vec<Row> = self
                .lines()?
                .into_iter()
                .map(|(n, item)| self.row(n, item))
                .filter(|r| keep(r))
                .collect();
            self.listed = Some(rows.into_iter());
        }
        let page: Vec<Row> = self.listed.iter_mut().flatten().take(limit).collect();
        if page.len() < limit {
            self.listed = None;
        }
        Ok(page)
    }
}

impl Connector for JsonlFile {
    fn candidates(&mut self, _now: Timestamp, limit: usize) -> Result<Vec<Row>> {
        self.page(limit, |_| true)
    }

    fn lookup(&mut self, keys: &[Key]) -> Result<Vec<Lookup>> {
        let rows: Vec<Row> = self
            .lines()?
            .into_iter()
            .map(|(n, item)| self.row(n, item))
            .filter(|r| r.problem.is_none())
            .collect();
        Ok(crate::targets::found_or_gone(keys, rows))
    }

    fn delete(&mut self, keys: &[Key]) -> Result<Vec<Deletion>> {
        let text = std::fs::read_to_string(&self.path)
            .with_context(|| format!("Failed to read {}", self.path.display()))?;
        let wanted: Vec<String> = keys.iter().map(Key::to_string).collect();
        let mut answers = vec![Deletion::AlreadyGone; keys.len()];
        let mut kept = String::new();
        for line in text.lines() {
            let (id, locked) = match serde_json::from_str::<Json>(line) {
                Ok(Json::Object(m)) => (
                    m.get("id").and_then(Json::as_str).map(str::to_string),
                    m.get("locked") == Some(&Json::Bool(true)),
                ),
                _ => (None, false),
            };
            // The store's own refusal, like a trigger's: an item marked locked stays.
            match id.and_then(|id| wanted.iter().position(|w| *w == id)) {
                Some(i) if locked => {
                    answers[i] = Deletion::Failed("the item is locked".into());
                    kept.push_str(line);
                    kept.push('\n');
                }
                Some(i) => answers[i] = Deletion::Deleted,
                None => {
                    kept.push_str(line);
                    kept.push('\n');
                }
            }
        }
        let tmp = self.path.with_extension("jsonl.tmp");
        std::fs::write(&tmp, kept).with_context(|| format!("Failed to write {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("Failed to replace {}", self.path.display()))?;
        Ok(answers)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            transactions: false,
            subjects: self.subject.is_some(),
            export: self.subject.is_some(),
        }
    }

    fn of_subject(&mut self, subject: &str, limit: usize) -> Result<Vec<Row>> {
        self.page(limit, |r| matches!(&r.subject, Ok(Some(s)) if s == subject))
    }

    fn export_subject(&mut self, field: &str, subject: &str, each: ExportSink) -> Result<()> {
        for (_, item) in self.lines()? {
            if let Ok(m) = item
                && m.get(field).and_then(Json::as_str) == Some(subject)
            {
                each(m)?;
            }
        }
        Ok(())
    }

    fn check_schema(&mut self) -> Result<Vec<String>> {
        Ok(match std::fs::metadata(&self.path) {
            Ok(m) if m.is_file() => Vec::new(),
            Ok(_) => vec![format!("{} is not a file", self.path.display())],
            Err(e) => vec![format!("{}: {e}", self.path.display())],
        })
    }

    fn count(&mut self) -> Result<Option<u64>> {
        Ok(Some(self.lines()?.len() as u64))
    }
}

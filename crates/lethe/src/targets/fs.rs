//! `filesystem` targets: a directory tree of model artifacts, checkpoints and exports, each
//! file an item whose window runs from its modification time.
//!
//! The walk is streamed (a stack of open directory listings, never a list of every file),
//! never descends into a symbolic link, and lists regular files only. Each file is an item
//! that owns itself: the engine removes it with the same no-follow walk from the root as a
//! row's file, so a directory swapped for a link while we walk stops the removal instead of
//! leading out of the root.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use lethe_core::config::FsTarget;
use lethe_core::time::Timestamp;

use super::{Key, Row, SqlTable, Value};

pub struct FsTree {
    root: PathBuf,
    cfg: FsTarget,
    /// Open listings, deepest last, each with its path relative to the root.
    stack: Vec<(PathBuf, std::fs::ReadDir)>,
    started: bool,
}

impl FsTree {
    pub fn open(cfg: &FsTarget, base: &Path) -> Result<Self> {
        let root = base.join(&cfg.root);
        Ok(FsTree {
            root,
            cfg: cfg.clone(),
            stack: Vec::new(),
            started: false,
        })
    }

    fn wanted(&self, rel: &str) -> bool {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        let suffix_ok = self.cfg.suffixes.is_empty()
            || self.cfg.suffixes.iter().any(|s| name.ends_with(s.as_str()));
        let include_ok =
            self.cfg.include.is_empty() || self.cfg.include.iter().any(|g| glob(g, rel));
        let excluded = self.cfg.exclude.iter().any(|g| glob(g, rel));
        suffix_ok && include_ok && !excluded
    }

    fn row(&self, rel: &str, meta: &std::fs::Metadata) -> Row {
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| Value::Text(Timestamp::from_micros(d.as_micros() as i64).to_rfc3339()))
            .unwrap_or(Value::Null);
        Row {
            key: Ok(Key::Text(rel.to_string())),
            created_at: mtime,
            retention_days: Value::Null,
            expires_at: Value::Null,
            subject: Ok(None),
            file: Ok(Some(self.root.join(rel).to_string_lossy().into_owned())),
            problem: None,
            detail: None,
        }
    }
}

/// A small glob: `*` matches within one path segment, `**` across segments, `?` one
/// character. Patterns are matched against the path relative to the root.
pub fn glob(pattern: &str, path: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(b'*') if p.get(1) == Some(&b'*') => {
                let rest = if p.get(2) == Some(&b'/') {
                    &p[3..]
                } else {
                    &p[2..]
                };
                (0..=s.len()).any(|i| go(rest, &s[i..]))
            }
            Some(b'*') => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != b'/')
                .any(|i| go(&p[1..], &s[i..])),
            Some(b'?') => !s.is_empty() && s[0] != b'/' && go(&p[1..], &s[1..]),
            Some(c) => s.first() == Some(c) && go(&p[1..], &s[1..]),
        }
    }
    go(pattern.as_bytes(), path.as_bytes())
}

impl SqlTable for FsTree {
    fn check_schema(&mut self) -> Result<Vec<String>> {
        match std::fs::symlink_metadata(&self.root) {
            Ok(m) if m.is_dir() => Ok(Vec::new()),
            Ok(_) => Ok(vec![format!(
                "root {} is not a directory",
                self.root.display()
            )]),
            Err(e) => Ok(vec![format!("root {}: {e}", self.root.display())]),
        }
    }

    fn index_warnings(&mut self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn key_range(&mut self) -> Option<(i64, i64)> {
        None
    }

    fn count(&mut self) -> Result<u64> {
        let mut n = 0u64;
        let mut walk = FsTree::open(&self.cfg, Path::new("/"))?;
        walk.root = self.root.clone();
        loop {
            let rows = walk.candidates(None, Timestamp::from_micros(0), 10_000)?;
            if rows.is_empty() {
                return Ok(n);
            }
            n += rows.len() as u64;
        }
    }

    /// The next files of the walk (the walk keeps its own place; `after` is not needed).
    fn candidates(
        &mut self,
        _after: Option<&Key>,
        _now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Row>> {
        if !self.started {
            self.started = true;
            let list = std::fs::read_dir(&self.root)
                .with_context(|| format!("Failed to list {}", self.root.display()))?;
            self.stack.push((PathBuf::new(), list));
        }
        let mut out = Vec::new();
        while out.len() < limit {
            let Some((dir, list)) = self.stack.last_mut() else {
                break;
            };
            let dir = dir.clone();
            let Some(entry) = list.next() else {
                self.stack.pop();
                continue;
            };
            let entry = entry
                .with_context(|| format!("Failed to list {}", self.root.join(&dir).display()))?;
            let rel_path = dir.join(entry.file_name());
            let Some(rel) = rel_path.to_str().map(str::to_string) else {
                continue; // not UTF-8: cannot be named in the trail; left alone
            };
            // file_type() does not follow links: a link to a directory is not descended.
            let ft = entry.file_type()?;
            if ft.is_dir() {
                let list = std::fs::read_dir(self.root.join(&rel_path)).with_context(|| {
                    format!("Failed to list {}", self.root.join(&rel_path).display())
                })?;
                self.stack.push((rel_path, list));
            } else if ft.is_file() && self.wanted(&rel) {
                let meta = entry.metadata()?;
                out.push(self.row(&rel, &meta));
            }
        }
        Ok(out)
    }

    fn of_subject(
        &mut self,
        _subject: &str,
        _after: Option<&Key>,
        _limit: usize,
    ) -> Result<Vec<Row>> {
        Ok(Vec::new())
    }

    fn fetch(&mut self, keys: &[Key]) -> Result<Vec<Row>> {
        let mut out = Vec::new();
        for k in keys {
            let rel = k.to_string();
            if let Ok(meta) = std::fs::symlink_metadata(self.root.join(&rel))
                && meta.is_file()
            {
                out.push(self.row(&rel, &meta));
            }
        }
        Ok(out)
    }

    fn commit_every_batch(&self) -> bool {
        true
    }

    fn begin(&mut self) -> Result<()> {
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        Ok(())
    }

    fn rollback(&mut self) {}

    /// The files themselves were removed as the items' owned files.
    fn delete(&mut self, keys: &[Key]) -> Result<usize> {
        Ok(keys.len())
    }

    fn export_subject(
        &mut self,
        _subject_col: &str,
        _subject: &str,
        _each: &mut dyn FnMut(serde_json::Map<String, serde_json::Value>) -> Result<()>,
    ) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs() {
        assert!(glob("*.pt", "a.pt"));
        assert!(!glob("*.pt", "run1/a.pt"));
        assert!(glob("**/*.pt", "run1/a.pt"));
        assert!(glob("**/*.pt", "a.pt"));
        assert!(glob("run?/best.pt", "run1/best.pt"));
        assert!(glob("runs/**", "runs/x/y/z.bin"));
        assert!(!glob("runs/**", "other/x.bin"));
        assert!(glob("**/keep/**", "a/keep/b.pt"));
    }
}

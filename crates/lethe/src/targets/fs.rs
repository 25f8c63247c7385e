//! `filesystem` targets: a directory tree of model artifacts, checkpoints and exports, each
//! file an item whose window runs from its modification time.
//!
//! The root is resolved once when the target is opened (links and `..` in it followed then)
//! and a root that resolves to `/` is refused. The walk is streamed (a stack of open
//! directory listings, never a list of every file), never descends into a symbolic link,
//! and lists regular files only. Each file is an item that owns itself: the engine removes
//! it with the same no-follow walk from the root as a row's file, so a directory swapped for
//! a link while we walk stops the removal instead of leading out of the root.
//!
//! Nothing is skipped silently: a directory that cannot be listed, and a wanted file whose
//! path is not UTF-8 (so cannot be named exactly in the trail), are each an item with a
//! problem, reported failed under its lossy path and never deleted; the walk goes on.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use lethe_core::config::FsTarget;
use lethe_core::time::Timestamp;

use super::{Key, Row, SqlTable, Value};

pub struct FsTree {
    /// The root as resolved when opened; rows name files under it.
    root: PathBuf,
    cfg: FsTarget,
    /// Open listings, deepest last, each with its path relative to the root.
    stack: Vec<(PathBuf, std::fs::ReadDir)>,
    started: bool,
}

impl FsTree {
    /// Resolves the root (relative to `base`); refuses a root that is not a directory or
    /// resolves to `/`.
    pub fn open(cfg: &FsTarget, base: &Path) -> Result<Self> {
        let root =
            crate::files::resolve_root("root", &cfg.root, base).map_err(anyhow::Error::msg)?;
        Ok(FsTree {
            root,
            cfg: cfg.clone(),
            stack: Vec::new(),
            started: false,
        })
    }

    /// A fresh walk over the same tree.
    fn restart(&self) -> FsTree {
        FsTree {
            root: self.root.clone(),
            cfg: self.cfg.clone(),
            stack: Vec::new(),
            started: false,
        }
    }

    /// Whether a file, by its path relative to the root, is one of the target's.
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
        }
    }

    /// An item that cannot be judged or deleted, named by its (lossy) relative path: the
    /// engine reports it failed and never deletes it.
    fn failed(rel: &Path, problem: String) -> Row {
        Row {
            key: Ok(Key::Text(rel.to_string_lossy().into_owned())),
            created_at: Value::Null,
            retention_days: Value::Null,
            expires_at: Value::Null,
            subject: Ok(None),
            file: Ok(None),
            problem: Some(problem),
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
        let mut walk = self.restart();
        loop {
            let rows = walk.candidates(None, Timestamp::from_micros(0), 10_000)?;
            if rows.is_empty() {
                return Ok(n);
            }
            n += rows.len() as u64;
        }
    }

    /// The next files of the walk (the walk keeps its own place; `after` is not needed).
    /// Only the root itself failing to list stops the target; anything below it that cannot
    /// be read is an item with a problem, and the walk goes on.
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
            let entry = match list.next() {
                None => {
                    self.stack.pop();
                    continue;
                }
                Some(Ok(entry)) => entry,
                Some(Err(e)) => {
                    // A listing that fails part-way is given up: what it did not list is
                    // reported under the directory's name.
                    self.stack.pop();
                    out.push(Self::failed(
                        &dir,
                        format!(
                            "cannot list directory {} to the end: {e}; files in it may not have been judged",
                            self.root.join(&dir).display()
                        ),
                    ));
                    continue;
                }
            };
            let rel_path = dir.join(entry.file_name());
            let shown = self.root.join(&rel_path);
            // file_type() does not follow links: a link to a directory is not descended.
            let ft = match entry.file_type() {
                Ok(ft) => ft,
                Err(e) => {
                    out.push(Self::failed(
                        &rel_path,
                        format!("cannot read the type of {}: {e}", shown.display()),
                    ));
                    continue;
                }
            };
            if ft.is_dir() {
                match std::fs::read_dir(&shown) {
                    Ok(list) => self.stack.push((rel_path, list)),
                    Err(e) => out.push(Self::failed(
                        &rel_path,
                        format!(
                            "cannot list directory {}: {e}; files in it were not judged",
                            shown.display()
                        ),
                    )),
                }
                continue;
            }
            if !ft.is_file() {
                continue; // links, sockets, devices: never items
            }
            let Some(rel) = rel_path.to_str() else {
                // Not UTF-8: the trail, the keys and the removal all name files by UTF-8
                // paths, so this one cannot be named exactly; it is reported, never deleted
                // on a guess.
                if self.wanted(&rel_path.to_string_lossy()) {
                    out.push(Self::failed(
                        &rel_path,
                        format!(
                            "{} has a name that is not valid UTF-8 and cannot be named exactly; rename it to let it be swept",
                            shown.display()
                        ),
                    ));
                }
                continue;
            };
            if !self.wanted(rel) {
                continue;
            }
            match entry.metadata() {
                Ok(meta) => out.push(self.row(rel, &meta)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {} // gone meanwhile
                Err(e) => out.push(Self::failed(
                    &rel_path,
                    format!("cannot read {}: {e}", shown.display()),
                )),
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

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
use globset::{GlobSet, GlobSetBuilder};
use super::{FsTarget, path_glob};
use lethe_core::time::Timestamp;

use crate::targets::{Capabilities, Connector, Deletion, Key, Lookup, Row, Value};

pub struct FsTree {
    /// The root as resolved when opened; rows name files under it.
    root: PathBuf,
    cfg: FsTarget,
    include: GlobSet,
    exclude: GlobSet,
    /// Open listings, deepest last, each with its path relative to the root.
    stack: Vec<(PathBuf, std::fs::ReadDir)>,
    started: bool,
}

/// Compiles a target's patterns; an invalid one is named by its key.
fn glob_set(key: &str, patterns: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for (i, p) in patterns.iter().enumerate() {
        b.add(path_glob(p).map_err(|e| anyhow::anyhow!("{key}[{i}]: {e}"))?);
    }
    b.build()
        .map_err(|e| anyhow::anyhow!("{key}: patterns cannot be compiled: {e}"))
}

/// The most of a sidecar read: tags are a few short strings.
const SIDECAR_MAX: u64 = 64 * 1024;

/// A sidecar's bytes, when it is a regular file (never a link, FIFO or device) of at most
/// [`SIDECAR_MAX`] bytes; anything else counts as no tags.
fn read_sidecar(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.len() > SIDECAR_MAX {
        return None;
    }
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
        .ok()?;
    // Swapped for something else between the look and the open: not read.
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut buf = Vec::new();
    f.take(SIDECAR_MAX + 1).read_to_end(&mut buf).ok()?;
    (buf.len() as u64 <= SIDECAR_MAX).then_some(buf)
}

/// A tag value that says nothing: empty, or spaces, tabs and line breaks only (the same
/// characters the SQL count trims).
pub fn blank(v: &str) -> bool {
    v.trim_matches([' ', '\t', '\r', '\n']).is_empty()
}

impl FsTree {
    /// Resolves the root (relative to `base`) and compiles the patterns; refuses a root that
    /// is not a directory or resolves to `/`, and a pattern that is not a glob.
    pub fn open(cfg: &FsTarget, base: &Path) -> Result<Self> {
        let root =
            crate::files::resolve_root("root", &cfg.root, base).map_err(anyhow::Error::msg)?;
        Ok(FsTree {
            root,
            cfg: cfg.clone(),
            include: glob_set("include", &cfg.include)?,
            exclude: glob_set("exclude", &cfg.exclude)?,
            stack: Vec::new(),
            started: false,
        })
    }

    /// A fresh walk over the same tree.
    fn restart(&self) -> FsTree {
        FsTree {
            root: self.root.clone(),
            cfg: self.cfg.clone(),
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            stack: Vec::new(),
            started: false,
        }
    }

    /// Whether a file, by its path relative to the root, is one of the target's.
    fn wanted(&self, rel: &str) -> bool {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        let suffix_ok = self.cfg.suffixes.is_empty()
            || self.cfg.suffixes.iter().any(|s| name.ends_with(s.as_str()));
        let include_ok = self.cfg.include.is_empty() || self.include.is_match(rel);
        suffix_ok && include_ok && !self.exclude.is_match(rel)
    }

    fn row(&self, rel: &str, meta: &std::fs::Metadata) -> Row {
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| Value::Text(Timestamp::from_micros(d.as_micros() as i64).to_rfc3339()))
            .unwrap_or(Value::Null);
        Row {
            created_at: mtime,
            file: Ok(Some(self.root.join(rel).to_string_lossy().into_owned())),
            ..Row::new(Key::Text(rel.to_string()))
        }
    }

    /// An item that cannot be judged or deleted, named by its (lossy) relative path: the
    /// engine reports it failed and never deletes it.
    fn failed(rel: &Path, problem: String) -> Row {
        Row::unusable(Key::Text(rel.to_string_lossy().into_owned()), problem)
    }
}

impl Connector for FsTree {
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

    fn count(&mut self) -> Result<Option<u64>> {
        let mut n = 0u64;
        let mut walk = self.restart();
        loop {
            let rows = walk.candidates(Timestamp::from_micros(0), 10_000)?;
            if rows.is_empty() {
                return Ok(Some(n));
            }
            n += rows.len() as u64;
        }
    }

    /// The next files of the walk (the walk keeps its own place). Only the root itself
    /// failing to list stops the target; anything below it that cannot be read is an item
    /// with a problem, and the walk goes on.
    /// Files lacking a required tag: with `tags_sidecar`, those whose sidecar is missing,
    /// unreadable or lacks one; without it, every file. A sidecar is itself counted tagged
    /// (it is where tags live, not an asset lacking them).
    fn count_untagged(&mut self, required: &[String]) -> Result<Option<u64>> {
        if required.is_empty() {
            return Ok(None);
        }
        let pattern = self.cfg.tags_sidecar.clone();
        let (before, after) = pattern
            .as_deref()
            .and_then(|p| p.split_once("{}"))
            .unwrap_or(("", ""));
        let mut walk = self.restart();
        let mut n = 0u64;
        loop {
            let rows = walk.candidates(Timestamp::from_micros(0), 10_000)?;
            if rows.is_empty() {
                return Ok(Some(n));
            }
            for row in rows {
                let Ok(Key::Text(rel)) = &row.key else {
                    n += 1;
                    continue;
                };
                if pattern.is_none() || row.problem.is_some() {
                    n += 1;
                    continue;
                }
                let path = self.root.join(rel);
                let name = rel.rsplit('/').next().unwrap_or(rel);
                // A sidecar is the tags of a file beside it: one whose file is not there is
                // an item like any other.
                let is_sidecar = name.len() > before.len() + after.len()
                    && name.starts_with(before)
                    && name.ends_with(after)
                    && std::fs::symlink_metadata(path.with_file_name(
                        &name[before.len()..name.len() - after.len()],
                    ))
                    .is_ok_and(|m| m.is_file());
                if is_sidecar {
                    continue;
                }
                let sidecar = path.with_file_name(format!("{before}{name}{after}"));
                let tagged = read_sidecar(&sidecar)
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .is_some_and(|v| {
                        required.iter().all(|t| {
                            v.get(t)
                                .and_then(|x| x.as_str())
                                .is_some_and(|x| !blank(x))
                        })
                    });
                if !tagged {
                    n += 1;
                }
            }
        }
    }

    fn candidates(&mut self, _now: Timestamp, limit: usize) -> Result<Vec<Row>> {
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

    /// A file is found while it is a regular file under the root; gone only when the
    /// system says no such file. Anything else (unreadable directory, a directory or link
    /// in its place) is unknown, never taken for gone.
    fn lookup(&mut self, keys: &[Key]) -> Result<Vec<Lookup>> {
        Ok(keys
            .iter()
            .map(|k| {
                let rel = k.to_string();
                let plain = !rel.is_empty()
                    && Path::new(&rel)
                        .components()
                        .all(|c| matches!(c, std::path::Component::Normal(_)));
                if !plain {
                    return Lookup::Unknown(format!("{rel:?} is not a path under the root"));
                }
                match std::fs::symlink_metadata(self.root.join(&rel)) {
                    Ok(meta) if meta.is_file() => Lookup::Found(self.row(&rel, &meta)),
                    Ok(_) => Lookup::Unknown(format!(
                        "{rel} is no longer a regular file under {}",
                        self.root.display()
                    )),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Lookup::Gone,
                    Err(e) => Lookup::Unknown(format!("{rel}: {e}")),
                }
            })
            .collect())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// The files themselves were removed as the items' owned files (the engine hands over
    /// only items whose file removal succeeded): each is confirmed gone from the tree, and
    /// one still there (or that cannot be looked at) is failed, never confirmed on trust.
    fn delete(&mut self, keys: &[Key]) -> Result<Vec<Deletion>> {
        Ok(self
            .lookup(keys)?
            .into_iter()
            .map(|l| match l {
                Lookup::Gone => Deletion::Deleted,
                Lookup::Found(_) => {
                    Deletion::Failed("the file is still there: it was not removed".into())
                }
                Lookup::Unknown(why) => Deletion::Failed(why),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(include: &[&str], exclude: &[&str]) -> Result<FsTree> {
        let cfg = FsTarget {
            root: ".".into(),
            suffixes: Vec::new(),
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            prune_empty_dirs: false,
            tags_sidecar: None,
        };
        FsTree::open(&cfg, &std::env::temp_dir())
    }

    fn glob(pattern: &str, path: &str) -> bool {
        tree(&[pattern], &[]).is_ok_and(|t| t.wanted(path))
    }

    #[test]
    fn globs() {
        assert!(glob("*.pt", "a.pt"));
        assert!(!glob("*.pt", "run1/a.pt"));
        assert!(glob("**/*.pt", "run1/a.pt"));
        assert!(glob("**/*.pt", "a.pt"));
        assert!(glob("run?/best.pt", "run1/best.pt"));
        assert!(!glob("run?best.pt", "run/best.pt"));
        assert!(glob("runs/**", "runs/x/y/z.bin"));
        assert!(!glob("runs/**", "other/x.bin"));
        assert!(glob("**/keep/**", "a/keep/b.pt"));
        // Anchored at the root: a leading `/` is the root.
        assert!(glob("/runs/**", "runs/x.bin"));
        assert!(glob("/*.pt", "a.pt"));
        assert!(!glob("/runs/**", "a/runs/x.bin"));
        assert!(glob("run[12]/*.pt", "run2/a.pt"));
        assert!(tree(&[], &["keep/**"]).is_ok_and(|t| t.wanted("a.pt") && !t.wanted("keep/a.pt")));
    }

    #[test]
    fn bad_patterns_are_named_by_key() {
        let e = tree(&["*.pt", "run[1"], &[]).err().map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.starts_with("include[1]: ")),
            "{e:?}"
        );
        let e = tree(&[], &["{a"]).err().map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.starts_with("exclude[0]: ")),
            "{e:?}"
        );
    }
}

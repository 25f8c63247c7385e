//! Files that rows own, removed only inside their target's roots.
//!
//! Each root is resolved once, when the roots are made (once per target and run): links and
//! `..` in the root itself are followed then, and never again. A root that resolves to `/`,
//! or does not resolve to a directory, is refused. A row's path is checked lexically
//! (absolute, no `..`) and must lie under a root's *resolved* path: a path written through a
//! link to the root is outside. It is then walked from the resolved root one directory at a
//! time with `openat(O_NOFOLLOW)`, so a symbolic link anywhere below the root, or swapped in
//! while we walk, stops the walk instead of leading out of the root. Only a regular file is
//! ever unlinked, and `unlinkat` never follows the final name. A file is "already gone" only
//! when its own directory exists and lacks it: a missing directory on the way (a volume not
//! mounted) is an error, never taken as the file being gone.

use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

#[derive(Clone, Debug)]
struct Root {
    /// As written in the config, for messages.
    written: String,
    /// Resolved once when the roots are made: the prefix rows are matched against and where
    /// every walk starts; `Err` says why the root cannot be used.
    resolved: Result<PathBuf, String>,
}

/// A target's roots, with the config key that names them (`file_roots` or `root`).
#[derive(Clone, Debug, Default)]
pub struct Roots {
    key: &'static str,
    roots: Vec<Root>,
}
/// A file a row names, placed under one root.
#[derive(Clone, Debug)]
pub struct OwnedFile {
    root: usize,
    parts: Vec<std::ffi::OsString>,
    /// The file as it was when judged: it is removed only while it is still that file.
    judged: Option<Stamp>,
}

/// What identifies a file's content without reading it: inode, size and modification
/// time. A file rewritten or replaced after it was judged has another stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    ino: u64,
    size: i64,
    mtime: i64,
    mtime_nsec: i64,
}

fn stamp(st: &rustix::fs::Stat) -> Stamp {
    Stamp {
        ino: st.st_ino,
        size: st.st_size,
        mtime: st.st_mtime,
        mtime_nsec: st.st_mtime_nsec as i64,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileState {
    Present,
    Missing,
}

/// Lexically normalises an absolute path: drops `.`, refuses `..`.
fn normalise(p: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => return Err("contains '..'".into()),
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    Ok(out)
}

/// Resolves a root as written in the config (relative to `base`, the config's directory):
/// follows links and `..` once, and refuses what is not a directory or resolves to `/`.
/// `key` names the setting in messages.
pub fn resolve_root(key: &str, written: &str, base: &Path) -> Result<PathBuf, String> {
    let joined = base.join(written);
    let resolved = std::fs::canonicalize(&joined)
        .map_err(|e| format!("{key}: {written:?} ({}): {e}", joined.display()))?;
    if resolved.parent().is_none() {
        return Err(format!(
            "{key}: {written:?} resolves to /: a root of / would put every file on the machine \
             in reach; name the directory that holds the files"
        ));
    }
    if !resolved.is_dir() {
        return Err(format!(
            "{key}: {written:?} resolves to {}, which is not a directory",
            resolved.display()
        ));
    }
    Ok(resolved)
}

impl Roots {
    /// Roots as configured under `key`, each resolved now (relative ones from `base`).
    pub fn new(key: &'static str, roots: &[String], base: &Path) -> Self {
        let roots = roots
            .iter()
            .map(|r| Root {
                written: r.clone(),
                resolved: resolve_root(key, r, base),
            })
            .collect();
        Roots { key, roots }
    }

    /// Roots that cannot be used, each naming its key: for `lethe check` and before a run.
    pub fn problems(&self) -> Vec<String> {
        self.roots
            .iter()
            .filter_map(|r| r.resolved.as_ref().err().cloned())
            .collect()
    }

    /// The roots as resolved for this run (an unusable one as written, marked so), for the
    /// audit trail.
    pub fn resolved(&self) -> Vec<String> {
        self.roots
            .iter()
            .map(|r| match &r.resolved {
                Ok(p) => p.display().to_string(),
                Err(_) => format!("{} (unusable)", r.written),
            })
            .collect()
    }

    /// Places a path under a root's resolved path, or says why it may not be touched.
    pub fn place(&self, raw: &str) -> Result<OwnedFile, String> {
        let p = Path::new(raw);
        if !p.is_absolute() {
            return Err(format!(
                "file {raw:?} is a relative path; only absolute paths under {} are deleted",
                self.key
            ));
        }
        let norm = normalise(p).map_err(|e| format!("file {raw:?} {e}"))?;
        for (i, root) in self.roots.iter().enumerate() {
            let Ok(prefix) = &root.resolved else {
                continue;
            };
            if let Ok(rest) = norm.strip_prefix(prefix) {
                let parts: Vec<_> = rest.iter().map(|s| s.to_os_string()).collect();
                if parts.is_empty() {
                    return Err(format!("file {raw:?} is the root itself"));
                }
                return Ok(OwnedFile {
                    root: i,
                    parts,
                    judged: None,
                });
            }
        }
        let mut why = format!(
            "file {raw:?} is outside {} (resolved: {}; paths are matched against resolved roots \
             only, never through a link)",
            self.key,
            self.resolved().join(", ")
        );
        for e in self.problems() {
            why.push_str(&format!("; {e}"));
        }
        Err(why)
    }

    /// Walks to the file's directory without following any link; returns its fd and the
    /// final name. A directory on the way that does not exist is an error: the file may be on
    /// a volume that is not mounted, so it cannot be said to be gone.
    fn open_parent(&self, f: &OwnedFile) -> Result<(rustix::fd::OwnedFd, String), String> {
        let root = self
            .roots
            .get(f.root)
            .ok_or_else(|| "file placed under no root".to_string())?;
        let resolved = root.resolved.as_ref().map_err(String::clone)?;
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut dir = rustix::fs::open(resolved, dir_flags, Mode::empty())
            .map_err(|e| format!("cannot open {} {}: {e}", self.key, resolved.display()))?;
        let mut walked = resolved.clone();
        let (last, dirs) = match f.parts.split_last() {
            Some(x) => x,
            None => return Err("empty path".into()),
        };
        let missing = |walked: &Path| {
            format!(
                "directory {} does not exist (a volume not mounted?): the file cannot be \
                 confirmed gone",
                walked.display()
            )
        };
        for part in dirs {
            walked.push(part);
            match rustix::fs::statat(&dir, part.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Err(Errno::NOENT) => return Err(missing(&walked)),
                Err(e) => return Err(format!("cannot inspect {}: {e}", walked.display())),
                Ok(st) => match FileType::from_raw_mode(st.st_mode) {
                    FileType::Directory => {}
                    FileType::Symlink => {
                        return Err(format!(
                            "{} is a symbolic link: links are never followed",
                            walked.display()
                        ));
                    }
                    _ => return Err(format!("{} is not a directory", walked.display())),
                },
            }
            dir = match rustix::fs::openat(&dir, part.as_os_str(), dir_flags, Mode::empty()) {
                Ok(d) => d,
                Err(Errno::NOENT) => return Err(missing(&walked)),
                Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                    return Err(format!(
                        "{} changed into a link or file while being checked",
                        walked.display()
                    ));
                }
                Err(e) => return Err(format!("cannot open {}: {e}", walked.display())),
            };
        }
        let name = last
            .to_str()
            .ok_or_else(|| format!("{} is not valid UTF-8", walked.join(last).display()))?
            .to_string();
        Ok((dir, name))
    }

    fn stat_final(
        dir: &rustix::fd::OwnedFd,
        name: &str,
        shown: &Path,
    ) -> Result<FileState, String> {
        Self::stat_stamped(dir, name, shown).map(|(state, _)| state)
    }

    fn stat_stamped(
        dir: &rustix::fd::OwnedFd,
        name: &str,
        shown: &Path,
    ) -> Result<(FileState, Option<Stamp>), String> {
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok((FileState::Missing, None)),
            Err(e) => Err(format!("cannot inspect {}: {e}", shown.display())),
            Ok(st) => match FileType::from_raw_mode(st.st_mode) {
                FileType::RegularFile => Ok((FileState::Present, Some(stamp(&st)))),
                FileType::Symlink => Err(format!(
                    "{} is a symbolic link, not a regular file",
                    shown.display()
                )),
                FileType::Directory => {
                    Err(format!("{} is a directory, not a file", shown.display()))
                }
                _ => Err(format!("{} is not a regular file", shown.display())),
            },
        }
    }

    /// The file's path under its resolved root, for messages.
    fn shown(&self, f: &OwnedFile) -> PathBuf {
        let mut p = match self.roots.get(f.root).map(|r| &r.resolved) {
            Some(Ok(r)) => r.clone(),
            _ => PathBuf::new(),
        };
        p.extend(&f.parts);
        p
    }

    /// Whether the file is there and may be removed (`Missing` only when its directory
    /// exists and lacks it), remembering the file as it is now: `remove` then removes it
    /// only while it is still the same file, unchanged. Changes nothing on disk.
    pub fn inspect_judged(&self, f: &mut OwnedFile) -> Result<FileState, String> {
        let (dir, name) = self.open_parent(f)?;
        let (state, stamp) = Self::stat_stamped(&dir, &name, &self.shown(f))?;
        f.judged = stamp;
        Ok(state)
    }

    /// Removes the directories above a removed file that it left empty, up to (not
    /// including) the root, without following links. Best effort: a directory that is not
    /// empty, or that cannot be removed, ends it.
    pub fn prune_empty_parents(&self, f: &OwnedFile) {
        let mut parts = f.parts.clone();
        parts.pop();
        while !parts.is_empty() {
            let probe = OwnedFile {
                root: f.root,
                parts: parts.clone(),
                judged: None,
            };
            let Ok((dir, name)) = self.open_parent(&probe) else {
                return;
            };
            if rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::REMOVEDIR).is_err() {
                return;
            }
            parts.pop();
        }
    }

    /// Size and SHA-256 of a regular file, read without following links; `None` if missing
    /// from a directory that exists.
    pub fn digest(&self, f: &OwnedFile) -> Result<Option<(u64, String)>, String> {
        use sha2::Digest;
        use std::io::Read;
        let (dir, name) = self.open_parent(f)?;
        let shown = self.shown(f);
        if Self::stat_final(&dir, &name, &shown)? == FileState::Missing {
            return Ok(None);
        }
        let fd = rustix::fs::openat(
            &dir,
            name.as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("cannot open {}: {e}", shown.display()))?;
        let mut file = std::fs::File::from(fd);
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| format!("cannot read {}: {e}", shown.display()))?;
            if n == 0 {
                break;
            }
            size += n as u64;
            h.update(&buf[..n]);
        }
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok(Some((size, hex)))
    }

    /// Removes the file if it is a regular file. A file missing from a directory that exists
    /// is not an error (`Missing`); a missing directory on the way is.
    pub fn remove(&self, f: &OwnedFile) -> Result<FileState, String> {
        let (dir, name) = self.open_parent(f)?;
        let shown = self.shown(f);
        let (state, now) = Self::stat_stamped(&dir, &name, &shown)?;
        if state == FileState::Missing {
            return Ok(FileState::Missing);
        }
        if f.judged.is_some() && f.judged != now {
            return Err(format!(
                "{} changed after it was judged (rewritten or replaced); kept, judged again next run",
                shown.display()
            ));
        }
        match rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::empty()) {
            Ok(()) => Ok(FileState::Present),
            Err(Errno::NOENT) => Ok(FileState::Missing),
            Err(e) => Err(format!("cannot remove {}: {e}", shown.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn tmp(name: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("lethe-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap_or_default();
        Tmp(p)
    }

    #[test]
    fn only_regular_files_inside_roots_are_removed() {
        let t = tmp("basic");
        let root = t.0.join("root");
        let outside = t.0.join("outside");
        for d in [&root, &outside, &root.join("sub"), &root.join("adir")] {
            std::fs::create_dir_all(d).unwrap_or_default();
        }
        std::fs::write(root.join("sub/a.jsonl"), "a").unwrap_or_default();
        std::fs::write(outside.join("secret"), "s").unwrap_or_default();
        symlink(&outside, root.join("escape")).unwrap_or_default();
        symlink(outside.join("secret"), root.join("link-to-secret")).unwrap_or_default();
        let roots = Roots::new(
            "file_roots",
            &[root.to_string_lossy().into_owned()],
            Path::new("/"),
        );
        let p = |s: &str| root.join(s).to_string_lossy().into_owned();

        let f = roots.place(&p("sub/a.jsonl")).map_err(|e| e.to_string());
        let f = f.as_ref().map(|f| roots.remove(f));
        assert!(matches!(f, Ok(Ok(FileState::Present))));
        assert!(!root.join("sub/a.jsonl").exists());

        let again = roots.place(&p("sub/a.jsonl")).map(|f| roots.remove(&f));
        assert!(matches!(again, Ok(Ok(FileState::Missing))));

        let via_link = roots.place(&p("escape/secret")).map(|f| roots.remove(&f));
        assert!(
            matches!(via_link, Ok(Err(ref e)) if e.contains("symbolic link")),
            "{via_link:?}"
        );
        let link = roots.place(&p("link-to-secret")).map(|f| roots.remove(&f));
        assert!(
            matches!(link, Ok(Err(ref e)) if e.contains("symbolic link")),
            "{link:?}"
        );
        assert!(root.join("link-to-secret").is_symlink());
        let dir = roots.place(&p("adir")).map(|f| roots.remove(&f));
        assert!(
            matches!(dir, Ok(Err(ref e)) if e.contains("directory")),
            "{dir:?}"
        );
        assert!(outside.join("secret").exists());

        assert!(
            roots
                .place(&outside.join("secret").to_string_lossy())
                .is_err()
        );
        assert!(
            roots
                .place(&format!("{}/../outside/secret", root.display()))
                .is_err()
        );
        assert!(roots.place("relative/path").is_err());
        assert!(roots.place(&root.to_string_lossy()).is_err());
        let missing_dir = roots
            .place(&p("nope/x"))
            .map(|mut f| roots.inspect_judged(&mut f));
        assert!(
            matches!(missing_dir, Ok(Err(ref e)) if e.contains("does not exist")),
            "{missing_dir:?}"
        );
        let missing_dir = roots.place(&p("nope/x")).map(|f| roots.remove(&f));
        assert!(matches!(missing_dir, Ok(Err(_))), "{missing_dir:?}");
        let missing_file = roots
            .place(&p("sub/nope"))
            .map(|mut f| roots.inspect_judged(&mut f));
        assert!(matches!(missing_file, Ok(Ok(FileState::Missing))));
    }

    #[test]
    fn roots_are_resolved_once_and_slash_is_refused() {
        let t = tmp("resolve");
        let real = t.0.join("real");
        std::fs::create_dir_all(real.join("sub")).unwrap_or_default();
        std::fs::write(real.join("sub/a"), "a").unwrap_or_default();
        symlink(&real, t.0.join("link")).unwrap_or_default();
        symlink("/", t.0.join("slash")).unwrap_or_default();
        let roots = Roots::new("file_roots", &["link".into()], &t.0);
        assert!(roots.problems().is_empty(), "{:?}", roots.problems());
        assert_eq!(roots.resolved(), vec![real.display().to_string()]);
        let through_link = roots.place(&t.0.join("link/sub/a").to_string_lossy());
        assert!(
            matches!(through_link, Err(ref e) if e.contains("outside file_roots")),
            "{through_link:?}"
        );
        let f = roots.place(&real.join("sub/a").to_string_lossy());
        assert!(matches!(
            f.map(|mut f| roots.inspect_judged(&mut f)),
            Ok(Ok(FileState::Present))
        ));
        for bad in ["/", "slash", "../../../../../../../../../../../../.."] {
            let roots = Roots::new("root", &[bad.into()], &t.0);
            let problems = roots.problems();
            assert!(
                problems.len() == 1
                    && problems[0].starts_with("root: ")
                    && problems[0].contains("resolves to /"),
                "{bad}: {problems:?}"
            );
            assert!(roots.place("/etc/passwd").is_err());
        }
        let missing = Roots::new("file_roots", &["nope".into()], &t.0);
        assert_eq!(missing.problems().len(), 1);
    }

    #[test]
    fn a_file_changed_after_it_was_judged_is_kept() {
        let t = tmp("judged");
        let root = t.0.join("root");
        std::fs::create_dir_all(&root).unwrap_or_default();
        let path = root.join("ckpt.pt");
        std::fs::write(&path, "old weights").unwrap_or_default();
        let roots = Roots::new(
            "root",
            &[root.to_string_lossy().into_owned()],
            Path::new("/"),
        );
        let judge = |roots: &Roots| {
            let mut f = roots
                .place(&path.to_string_lossy())
                .map_err(|e| e.to_string())?;
            roots.inspect_judged(&mut f).map(|_| f)
        };
        // Rewritten (new content, new size) between judgement and removal: kept.
        let f = judge(&roots);
        std::fs::write(&path, "new weights, longer").unwrap_or_default();
        let r = f.as_ref().map(|f| roots.remove(f));
        assert!(
            matches!(r, Ok(Err(ref e)) if e.contains("changed after it was judged")),
            "{r:?}"
        );
        assert!(path.exists());
        // Replaced by another file of the same size: another inode, kept.
        let f = judge(&roots);
        let other = root.join("other");
        std::fs::write(&other, "new weights, LONGER").unwrap_or_default();
        std::fs::rename(&other, &path).unwrap_or_default();
        let r = f.as_ref().map(|f| roots.remove(f));
        assert!(matches!(r, Ok(Err(_))), "{r:?}");
        // Unchanged: removed.
        let f = judge(&roots);
        let r = f.as_ref().map(|f| roots.remove(f));
        assert!(matches!(r, Ok(Ok(FileState::Present))), "{r:?}");
        assert!(!path.exists());
    }
}

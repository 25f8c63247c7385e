//! `type = "filesystem"`: a directory tree (model artifacts, checkpoints, exports), each
//! file an item whose window runs from its modification time.

pub mod tree;

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use lethe_core::config::{Section, Target, TargetSpec};

use super::{Connector, Kind, Open, Place, canonical};
use crate::files::Roots;

/// A `filesystem` target's own settings.
#[derive(Clone, Debug)]
pub struct FsTarget {
    pub root: String,
    pub suffixes: Vec<String>,
    /// Globs over a file's path relative to the root (see [`path_glob`]).
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub prune_empty_dirs: bool,
    /// `tags_sidecar = "{}.tags.json"`: where a file's tags live, a JSON object in a file
    /// beside it (`{}` is the file's name). Without it no file carries tags.
    pub tags_sidecar: Option<String>,
}

impl FsTarget {
    /// A whole tree, every file an item (how a `file://` object store is walked).
    pub fn whole(root: &str) -> FsTarget {
        FsTarget {
            root: root.to_string(),
            suffixes: Vec::new(),
            include: Vec::new(),
            exclude: Vec::new(),
            prune_empty_dirs: false,
            tags_sidecar: None,
        }
    }

    /// Opens the tree as a connector.
    pub fn open(&self, base: &Path) -> Result<Box<dyn Connector>> {
        Ok(Box::new(tree::FsTree::open(self, base)?))
    }

    /// The roots its files must lie under: the tree itself (`key` names it in messages).
    pub fn roots(&self, key: &'static str, base: &Path) -> Roots {
        Roots::new(key, std::slice::from_ref(&self.root), base)
    }

    /// The tree, resolved.
    pub fn place(&self, base: &Path) -> Option<Place> {
        std::fs::canonicalize(base.join(&self.root))
            .ok()
            .map(Place::Tree)
    }

    pub fn identity(&self, base: &Path) -> String {
        format!("fs:{}", canonical(&base.join(&self.root)).display())
    }
}

/// An `include`/`exclude` pattern of a `filesystem` target, matched against a file's path
/// relative to the root: `*` and `?` stay within one path segment, `**` crosses segments,
/// `[...]` is a character class. Patterns are anchored at the root: a leading `/` means the
/// root, so `/runs/**` and `runs/**` are the same pattern.
pub fn path_glob(pattern: &str) -> Result<globset::Glob, String> {
    globset::GlobBuilder::new(pattern.trim_start_matches('/'))
        .literal_separator(true)
        .build()
        .map_err(|e| format!("{pattern:?} is not a valid pattern: {}", e.kind()))
}

kind!(FsKind, "filesystem", subjects: false, parse: parse);

/// Reads a `filesystem` target's own keys.
fn parse(s: &mut Section<'_, '_>) -> Option<Arc<dyn TargetSpec>> {
    let root = s.required_str("root");
    let suffixes = s.strings("suffixes", |_| Ok(()));
    let is_glob = |p: &str| path_glob(p).map(|_| ());
    let include = s.strings("include", is_glob);
    let exclude = s.strings("exclude", is_glob);
    let prune_empty_dirs = s.boolean("prune_empty_dirs").unwrap_or(false);
    let tags_sidecar = s.optional_str("tags_sidecar");
    if let Some(p) = &tags_sidecar
        && (p.matches("{}").count() != 1 || p.contains('/') || p == "{}")
    {
        s.error(
            "tags_sidecar",
            "expected a file name beside each file, with {} once for the file's name, e.g. \"{}.tags.json\"",
        );
    }
    Some(Arc::new(FsTarget {
        root: root?,
        suffixes,
        include,
        exclude,
        prune_empty_dirs,
        tags_sidecar,
    }))
}

impl Kind for FsKind {
    fn open(&self, target: &Target, how: &Open) -> Option<Result<Box<dyn Connector>>> {
        Some(target.spec::<FsTarget>()?.open(how.base))
    }

    fn identity(&self, target: &Target, base: &Path) -> String {
        target.spec::<FsTarget>()
            .map(|f| f.identity(base))
            .unwrap_or_else(|| format!("filesystem:{}", target.name))
    }

    fn roots(&self, target: &Target, base: &Path) -> Roots {
        target.spec::<FsTarget>()
            .map(|f| f.roots("root", base))
            .unwrap_or_default()
    }

    fn place(&self, target: &Target, base: &Path) -> Option<Place> {
        target.spec::<FsTarget>()?.place(base)
    }

    fn items(&self) -> &'static str {
        "files"
    }

    fn prunes_empty_dirs(&self, target: &Target) -> bool {
        target.spec::<FsTarget>().is_some_and(|f| f.prune_empty_dirs)
    }
}

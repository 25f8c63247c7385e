//! Finding and loading `lethe.toml`: `--config`, else `$LETHE_CONFIG`, else `./lethe.toml`.
//! Relative paths inside it are read from the file's own directory.

use std::path::{Path, PathBuf};

use lethe_core::config::{self, Config, Target};

use crate::error::Result;
use crate::targets::{self, Connector};
use crate::util::UsageError;

/// A config as loaded: what every operation takes.
pub struct Loaded {
    pub config: Config,
    pub path: PathBuf,
    /// The config file's directory: relative paths in it are read from here.
    pub base: PathBuf,
}

impl Loaded {
    /// Opens a target's store as this config says (read-only unless `write`); `None` for a
    /// kind this build cannot sweep.
    pub fn open(&self, target: &Target, write: bool) -> Option<anyhow::Result<Box<dyn Connector>>> {
        targets::open_with(target, &self.base, write, &self.config.tags.required)
    }
}

pub fn config_path(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("LETHE_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("lethe.toml"))
}

pub fn load(flag: Option<&Path>) -> Result<Loaded> {
    let path = config_path(flag);
    let src = std::fs::read_to_string(&path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (pass --config PATH, set LETHE_CONFIG, or run `lethe default-config > lethe.toml`)"
        } else {
            ""
        };
        UsageError(format!("cannot read config {}: {e}{hint}", path.display()))
    })?;
    let config = config::parse(&src, &targets::parsers()).map_err(|errs| {
        let mut msg = format!(
            "{} has {} problem{}; nothing was touched:",
            path.display(),
            errs.len(),
            if errs.len() == 1 { "" } else { "s" }
        );
        for e in &errs {
            msg.push_str(&format!("\n  {}:{e}", path.display()));
        }
        crate::util::ConfigProblems {
            message: msg,
            problems: errs,
        }
    })?;
    let base = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base = std::fs::canonicalize(&base).unwrap_or(base);
    Ok(Loaded { config, path, base })
}

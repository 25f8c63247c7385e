//! `type = "openai_files"` and `type = "anthropic_files"`: files held by model vendors. Their
//! config is read and checked today; sweeping them comes with their connectors.

use std::sync::Arc;

use anyhow::Result;
use lethe_core::config::{Section, Target, TargetParser, TargetSpec};

use super::{Connector, Kind, Open};

/// A vendor file store's own settings.
#[derive(Clone, Debug)]
pub struct VendorTarget {
    pub vendor: &'static str,
    /// The environment variable holding the API key, never the key itself.
    pub api_key_env: String,
    pub base_url: Option<String>,
    pub purpose: Option<String>,
}

/// A vendor's kind, by its `type`.
pub struct VendorKind(&'static str);

pub static OPENAI_FILES: VendorKind = VendorKind("openai_files");
pub static ANTHROPIC_FILES: VendorKind = VendorKind("anthropic_files");

/// The kinds of target this folder provides.
pub static KINDS: &[&dyn Kind] = &[&OPENAI_FILES, &ANTHROPIC_FILES];

impl TargetParser for VendorKind {
    fn type_name(&self) -> &'static str {
        self.0
    }

    fn parse(&self, s: &mut Section<'_, '_>) -> Option<Arc<dyn TargetSpec>> {
        let api_key_env = s.required_str("api_key_env");
        let base_url = s.optional_str("base_url");
        let purpose = s.optional_str("purpose");
        Some(Arc::new(VendorTarget {
            vendor: self.0,
            api_key_env: api_key_env?,
            base_url,
            purpose,
        }))
    }
}

impl Kind for VendorKind {
    /// Not swept by this build: `check` says so, and a sweep reports the target.
    fn open(&self, _target: &Target, _how: &Open) -> Option<Result<Box<dyn Connector>>> {
        None
    }

    fn can_sweep(&self) -> bool {
        false
    }
}

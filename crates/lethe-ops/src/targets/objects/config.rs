//! `type = "object_store"`: a bucket or container prefix on S3, Azure Blob or GCS, or a
//! `file://` directory (walked like a `filesystem` target).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use lethe_core::config::{Section, Target, TargetSpec};
use lethe_core::lifecycle::{self, Cloud};

use super::ObjectTarget;
use crate::files::Roots;
use crate::targets::fs::FsTarget;
use crate::targets::{Connector, Kind, Open, Place, without_query};

/// An `object_store` target's own settings.
#[derive(Clone, Debug)]
pub struct ObjectStoreTarget {
    pub url: String,
    pub options: BTreeMap<String, String>,
    /// The metadata entry that names an object's data subject.
    pub subject: Option<String>,
    /// `sensitivity_metadata`: the metadata entry naming an object's own sensitivity level,
    /// whose cap then applies to it.
    pub sensitivity_metadata: Option<String>,
}

impl ObjectStoreTarget {
    /// A `file://` store is a directory tree: walked like a `filesystem` target (never
    /// following a link out of it), every file an item.
    fn local(&self) -> Option<FsTarget> {
        self.url.strip_prefix("file://").map(FsTarget::whole)
    }
}

kind!(ObjectStoreKind, "object_store", subjects: true, parse: parse);

/// Reads a `object_store` target's own keys.
fn parse(s: &mut Section<'_, '_>) -> Option<Arc<dyn TargetSpec>> {
    let url = s.required_str("url");
    let options = s.string_map("options");
    let sensitivity_metadata = s.optional_str("sensitivity_metadata");
    if let (Some(u), Some(_)) = (&url, &sensitivity_metadata)
        && u.starts_with("file://")
    {
        s.error(
            "sensitivity_metadata",
            "a file:// store's files carry no metadata to name a level",
        );
    }
    if let Some(u) = &url
        && u.starts_with("file://")
        && s.subject().is_some()
    {
        s.error(
            "subject",
            "a file:// store's files carry no metadata to name a subject: erasure could not find them",
        );
    }
    Some(Arc::new(ObjectStoreTarget {
        url: url?,
        options,
        subject: s.subject().map(str::to_string),
        sensitivity_metadata,
    }))
}

impl Kind for ObjectStoreKind {
    fn open(&self, target: &Target, how: &Open) -> Option<Result<Box<dyn Connector>>> {
        let o = target.spec::<ObjectStoreTarget>()?;
        Some(match o.local() {
            Some(fs) => fs.open(how.base),
            None => ObjectTarget::open(o, how.required_tags)
                .map(|t| Box::new(t) as Box<dyn Connector>),
        })
    }

    /// The endpoint is part of where a bucket is: two servers may each have `datasets`.
    fn identity(&self, target: &Target, _base: &Path) -> String {
        let Some(o) = target.spec::<ObjectStoreTarget>() else {
            return format!("object_store:{}", target.name);
        };
        let endpoints: Vec<String> = o
            .options
            .iter()
            .filter(|(k, _)| k.to_ascii_lowercase().contains("endpoint"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("objects:{}|{}", without_query(&o.url), endpoints.join(","))
    }

    fn roots(&self, target: &Target, base: &Path) -> Roots {
        target.spec::<ObjectStoreTarget>()
            .and_then(ObjectStoreTarget::local)
            .map(|fs| fs.roots("url", base))
            .unwrap_or_default()
    }

    fn place(&self, target: &Target, base: &Path) -> Option<Place> {
        let o = target.spec::<ObjectStoreTarget>()?;
        if let Some(fs) = o.local() {
            return fs.place(base);
        }
        let (scheme, rest) = o.url.split_once("://")?;
        let mut segs = rest.split('/').filter(|s| !s.is_empty());
        let bucket = segs.next()?.to_string();
        let store: Vec<String> = o
            .options
            .iter()
            .filter(|(k, _)| k.contains("endpoint") || k.contains("account"))
            .map(|(k, v)| format!("{k}={}", v.trim_end_matches('/')))
            .collect();
        Some(Place::Prefix(
            format!("{scheme}://{bucket} {}", store.join(" ")),
            segs.map(str::to_string).collect(),
        ))
    }

    fn items(&self) -> &'static str {
        "objects"
    }

    fn lifecycle(&self, target: &Target, cloud: Cloud) -> Result<serde_json::Value, String> {
        let o = target.spec::<ObjectStoreTarget>().ok_or_else(|| format!("target {} has no url", target.name))?;
        // An object naming its own level replaces the target's, and may be less strict: the
        // store, which cannot read it, must not apply the target's cap to every object.
        let mut window = target.window.clone();
        if o.sensitivity_metadata.is_some() {
            window.level = None;
        }
        lifecycle::render(&target.name, &window, &o.url, cloud)
    }
}

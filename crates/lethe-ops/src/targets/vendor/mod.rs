//! `type = "openai_files"` and `type = "anthropic_files"`: files (and, on OpenAI, vector
//! stores) held by model vendors, swept through the vendors' own REST APIs.
//!
//! An item is keyed by the vendor's id (`file-…`, `vs_…`, `file_…`). Its window runs from
//! its own `expires_at` when the vendor set one, else from `created_at` (a vector store's
//! `last_active_at`) plus the target's window. Nothing is recorded deleted unless the vendor
//! said so: a `DELETE` answered `deleted: true` is deleted, a 404 is already gone, anything
//! else is failed, and a request whose outcome is unknown (it timed out every time) is
//! looked up before anything is said of it. Whose a file is comes from `subject_map`, a
//! query on one of the config's SQL targets, because vendor files carry no metadata.

mod api;
mod client;
mod connector;
mod subjects;

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use lethe_core::config::{Section, Target, TargetParser, TargetSpec};
use lethe_core::time::Duration;

use super::sql::SqlTarget;
use super::{Account, Connector, Kind, Open, Place};

pub use connector::VendorConnector;

/// Which vendor's API a target speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    OpenAi,
    Anthropic,
}

impl Vendor {
    fn default_base_url(self) -> &'static str {
        match self {
            Vendor::OpenAi => "https://api.openai.com/v1",
            Vendor::Anthropic => "https://api.anthropic.com/v1",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Vendor::OpenAi => "OpenAI",
            Vendor::Anthropic => "Anthropic",
        }
    }
}

/// `subject_map`: how a data subject's vendor ids are found in an application's database.
#[derive(Clone, Debug)]
pub struct SubjectMap {
    /// The `sql` target whose database holds the mapping (by name, as configured).
    pub source: String,
    /// Its database, once the config is read whole.
    pub db: Option<SqlTarget>,
    /// A subject's vendor ids: one column, the subject as `$1`.
    pub query: String,
    /// One vendor id's subject: one column (NULL or no row: nobody's), the id as `$1`.
    pub subject_of: String,
}

/// A vendor file store's own settings.
#[derive(Clone, Debug)]
pub struct VendorTarget {
    pub vendor: Vendor,
    /// The environment variable holding the API key, never the key itself.
    pub api_key_env: String,
    /// As the official SDKs take it, ending in `/v1`.
    pub base_url: String,
    pub organization: Option<String>,
    pub project: Option<String>,
    /// Only files of these purposes (OpenAI); all files when empty.
    pub purposes: Vec<String>,
    /// Sweep the project's vector stores too (OpenAI).
    pub vector_stores: bool,
    /// DELETE requests in flight at once, at most.
    pub deletes_in_flight: usize,
    /// Retries of one request (408, 409, 429, 5xx, timeouts) before it is failed.
    pub max_retries: u32,
    /// How long one request may take before it counts as timed out.
    pub request_timeout: Duration,
    pub subject_map: Option<SubjectMap>,
    /// A vector store's metadata key that names its subject.
    pub subject_key: Option<String>,
    /// `sensitivity_metadata`: a vector store's metadata key naming its own sensitivity
    /// level (files carry none: they take the target's `sensitivity`).
    pub sensitivity_metadata: Option<String>,
}

/// A vendor's kind, by its `type`.
pub struct VendorKind(Vendor, &'static str);

pub static OPENAI_FILES: VendorKind = VendorKind(Vendor::OpenAi, "openai_files");
pub static ANTHROPIC_FILES: VendorKind = VendorKind(Vendor::Anthropic, "anthropic_files");

/// The kinds of target this folder provides.
pub static KINDS: &[&dyn Kind] = &[&OPENAI_FILES, &ANTHROPIC_FILES];

/// OpenAI's file purposes (`purposes` refuses anything else: a typo would sweep nothing).
const OPENAI_PURPOSES: &[&str] = &[
    "assistants",
    "assistants_output",
    "batch",
    "batch_output",
    "fine-tune",
    "fine-tune-results",
    "vision",
    "user_data",
    "evals",
];

/// The default and the ceiling of `deletes_in_flight`.
const DELETES_IN_FLIGHT: usize = 8;
const MAX_DELETES_IN_FLIGHT: i64 = 64;
const MAX_RETRIES: u32 = 6;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl TargetParser for VendorKind {
    fn type_name(&self) -> &'static str {
        self.1
    }

    /// `subject` names a vector store's metadata key (OpenAI); on Anthropic the parser
    /// refuses it, saying what to use instead.
    fn maps_subject(&self) -> bool {
        true
    }

    fn parse(&self, s: &mut Section<'_, '_>) -> Option<Arc<dyn TargetSpec>> {
        let vendor = self.0;
        let api_key_env = s.required_str("api_key_env");
        let base_url = s.optional_str("base_url");
        if let Some(u) = &base_url {
            match url::Url::parse(u) {
                Ok(p) if !matches!(p.scheme(), "http" | "https") || p.host().is_none() => s
                    .error(
                        "base_url",
                        "expected an http:// or https:// URL ending in /v1, as the vendor's SDKs take it",
                    ),
                // The key goes in its own header; a user name in the URL would replace it.
                Ok(p) if !p.username().is_empty() || p.password().is_some() => s.error(
                    "base_url",
                    "a user name or password in the URL is not supported (it would be sent instead of the API key)",
                ),
                Ok(_) => {}
                Err(e) => s.error("base_url", format!("not a URL: {e}")),
            }
        }
        let (organization, project, purposes, vector_stores) = if vendor == Vendor::OpenAi {
            let purposes = s.strings("purposes", |p| {
                if OPENAI_PURPOSES.contains(&p) {
                    Ok(())
                } else {
                    Err(format!(
                        "not an OpenAI file purpose (one of {})",
                        OPENAI_PURPOSES.join(", ")
                    ))
                }
            });
            (
                s.optional_str("organization"),
                s.optional_str("project"),
                purposes,
                s.boolean("vector_stores").unwrap_or(false),
            )
        } else {
            (None, None, Vec::new(), false)
        };
        if vendor == Vendor::Anthropic && s.subject().is_some() {
            s.error(
                "subject",
                "Anthropic files carry no metadata to name a subject: use subject_map",
            );
        }
        if vendor == Vendor::OpenAi && s.subject().is_some() && !vector_stores {
            s.error(
                "subject",
                "names a vector store metadata key: it needs vector_stores = true (files carry no metadata; use subject_map for them)",
            );
        }
        let sensitivity_metadata = s.optional_str("sensitivity_metadata");
        if sensitivity_metadata.is_some() && !(vendor == Vendor::OpenAi && vector_stores) {
            s.error(
                "sensitivity_metadata",
                "names a vector store metadata key: it needs vector_stores = true (files carry no metadata; set the target's sensitivity for them)",
            );
        }
        let deletes_in_flight = if s.has("deletes_in_flight") {
            s.integer_in("deletes_in_flight", 1..=MAX_DELETES_IN_FLIGHT)
                .map(|n| n as usize)
        } else {
            Some(DELETES_IN_FLIGHT)
        };
        let max_retries = if s.has("max_retries") {
            s.integer_in("max_retries", 0..=20).map(|n| n as u32)
        } else {
            Some(MAX_RETRIES)
        };
        let request_timeout = if s.has("request_timeout") {
            s.duration_at_most("request_timeout", Duration::from_secs(600), "10m")
        } else {
            Some(REQUEST_TIMEOUT)
        };
        let subject_map = s.has("subject_map").then(|| parse_subject_map(s)).flatten();
        let had_map = s.has("subject_map");
        if had_map && subject_map.is_none() {
            return None;
        }
        Some(Arc::new(VendorTarget {
            vendor,
            api_key_env: api_key_env?,
            base_url: base_url
                .unwrap_or_else(|| vendor.default_base_url().to_string())
                .trim_end_matches('/')
                .to_string(),
            organization,
            project,
            purposes,
            vector_stores,
            deletes_in_flight: deletes_in_flight?,
            max_retries: max_retries?,
            request_timeout: request_timeout?,
            subject_map,
            subject_key: s.subject().map(str::to_string),
            sensitivity_metadata,
        }))
    }

    fn link(
        &self,
        target: &Target,
        all: &[Target],
    ) -> Result<Option<Arc<dyn TargetSpec>>, (String, String)> {
        let Some(v) = target.spec::<VendorTarget>() else {
            return Ok(None);
        };
        let Some(map) = &v.subject_map else {
            return Ok(None);
        };
        let source = all.iter().find(|t| t.name == map.source);
        let Some(db) = source.and_then(|t| t.spec::<SqlTarget>()) else {
            let sql: Vec<&str> = all
                .iter()
                .filter(|t| t.spec::<SqlTarget>().is_some())
                .map(|t| t.name.as_str())
                .collect();
            return Err((
                "subject_map.source".into(),
                format!(
                    "{:?} is not a sql target of this config (the sql targets: {})",
                    map.source,
                    if sql.is_empty() {
                        "none".to_string()
                    } else {
                        sql.join(", ")
                    }
                ),
            ));
        };
        let mut linked = v.clone();
        if let Some(m) = linked.subject_map.as_mut() {
            m.db = Some(db.clone());
        }
        Ok(Some(Arc::new(linked)))
    }
}

/// A URL spelled one way (scheme and host in lower case, no default port, no user name
/// or password, no trailing slash), so that two spellings of one API are one place.
fn normal_url(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut p) => {
            let _ = p.set_username("");
            let _ = p.set_password(None);
            p.set_query(None);
            p.set_fragment(None);
            p.to_string().trim_end_matches('/').to_string()
        }
        Err(_) => u.trim_end_matches('/').to_string(),
    }
}

/// `subject_map = { source, query, subject_of }`.
fn parse_subject_map(s: &mut Section<'_, '_>) -> Option<SubjectMap> {
    let m = s.string_map("subject_map");
    let mut ok = true;
    for k in m.keys() {
        if !matches!(k.as_str(), "source" | "query" | "subject_of") {
            s.error(
                &format!("subject_map.{k}"),
                "unknown key (subject_map takes source, query and subject_of)",
            );
            ok = false;
        }
    }
    let mut get = |key: &str, what: &str| match m.get(key) {
        Some(v) if !v.trim().is_empty() => Some(v.clone()),
        _ => {
            s.error(&format!("subject_map.{key}"), format!("required: {what}"));
            None
        }
    };
    let source = get("source", "the name of the sql target whose database maps subjects to vendor ids");
    let query = get("query", "a query giving a subject's vendor ids, the subject as $1 (SELECT file_id FROM uploads WHERE user_id = $1)");
    let subject_of = get("subject_of", "a query giving one vendor id's subject, the id as $1 (SELECT user_id FROM uploads WHERE file_id = $1): without it a subject's legal hold could not keep their files in a sweep");
    for (key, q) in [("query", &query), ("subject_of", &subject_of)] {
        if let Some(q) = q
            && !q.contains("$1")
        {
            s.error(
                &format!("subject_map.{key}"),
                "must take its value as $1",
            );
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    Some(SubjectMap {
        source: source?,
        db: None,
        query: query?,
        subject_of: subject_of?,
    })
}

impl Kind for VendorKind {
    fn open(&self, target: &Target, how: &Open) -> Option<Result<Box<dyn Connector>>> {
        let v = target.spec::<VendorTarget>()?;
        Some(
            VendorConnector::open(v, how.base, how.required_tags, how.write)
                .map(|c| Box::new(c) as Box<dyn Connector>),
        )
    }

    /// The account is part of where a file is: one URL may serve several projects.
    fn identity(&self, target: &Target, _base: &Path) -> String {
        let Some(v) = target.spec::<VendorTarget>() else {
            return format!("{}:{}", self.1, target.name);
        };
        format!(
            "{}:{}|org={}|project={}|key={}",
            self.1,
            normal_url(&v.base_url),
            v.organization.as_deref().unwrap_or(""),
            v.project.as_deref().unwrap_or(""),
            v.api_key_env
        )
    }

    /// Two targets that may reach one project's files of the same kinds would each delete
    /// what the other's holds protect: refused like two targets on one table. An unset
    /// organization or project is the key's own, which may be any.
    fn place(&self, target: &Target, _base: &Path) -> Option<Place> {
        let v = target.spec::<VendorTarget>()?;
        let kinds = (!v.purposes.is_empty()).then(|| {
            let mut k = v.purposes.clone();
            if v.vector_stores {
                k.push("(vector stores)".into());
            }
            k
        });
        Some(Place::Account(Account {
            api: normal_url(&v.base_url),
            organization: v.organization.clone(),
            project: v.project.clone(),
            kinds,
        }))
    }

    fn items(&self) -> &'static str {
        "files"
    }

    fn untagged_means(&self) -> &'static str {
        "files with no expiry set by the vendor; vector stores with no expiry of their own or lacking one of [tags] required"
    }

    /// Through `subject_map` (files, stores) or a vector store metadata key (`subject`).
    fn reaches_subjects(&self, target: &Target) -> bool {
        target.subject.is_some()
            || target
                .spec::<VendorTarget>()
                .is_some_and(|v| v.subject_map.is_some())
    }
}

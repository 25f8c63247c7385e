//! The vendors' requests and answers: which path lists, reads and deletes what, and how an
//! answer becomes items. Written from OpenAI's published OpenAPI description (`/files`,
//! `/vector_stores`, `/batches`, `/fine_tuning/jobs`) and Anthropic's Files API
//! documentation (`/files`, beta `files-api-2025-04-14`).

use std::collections::{BTreeMap, HashMap};

use anyhow::{Result, anyhow};
use lethe_core::time::Timestamp;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value as Json;

use super::Vendor;
use super::client::{Client, Reply};
use crate::targets::Value;

/// Characters left as they are in a query value or a path segment.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Files per listing page (OpenAI allows 10,000, Anthropic 1,000), vector stores per page.
const OPENAI_FILES_PAGE: usize = 10_000;
const ANTHROPIC_FILES_PAGE: usize = 1_000;
const STORES_PAGE: usize = 100;

/// What kind of thing a vendor id names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemKind {
    File,
    VectorStore,
}

impl ItemKind {
    /// The kind an id names when it was not seen in a listing: OpenAI's vector store ids
    /// begin `vs_`, everything else Lethe reaches is a file.
    pub fn of_id(id: &str) -> ItemKind {
        if id.starts_with("vs_") {
            ItemKind::VectorStore
        } else {
            ItemKind::File
        }
    }

    pub fn path(self, id: &str) -> String {
        let id = utf8_percent_encode(id, QUERY);
        match self {
            ItemKind::File => format!("/files/{id}"),
            ItemKind::VectorStore => format!("/vector_stores/{id}"),
        }
    }

    pub fn noun(self) -> &'static str {
        match self {
            ItemKind::File => "file",
            ItemKind::VectorStore => "vector store",
        }
    }
}

/// One item as the vendor describes it.
#[derive(Clone, Debug)]
pub struct Item {
    /// `Err` when the answer names no id: reported, never deleted.
    pub id: Result<String, String>,
    pub kind: ItemKind,
    /// When its window starts, as the vendor wrote it: a number of seconds, or text. The
    /// engine reads it (a number that is no plausible instant, such as 0, is refused).
    pub created_at: Option<Value>,
    /// Its own expiry: the vendor's `expires_at`, else (a vector store) its metadata's.
    pub expires_at: Option<Value>,
    /// Where the expiry came from, for the entry.
    pub expiry_from: &'static str,
    pub purpose: Option<String>,
    pub filename: Option<String>,
    pub bytes: Option<i64>,
    pub metadata: BTreeMap<String, String>,
    /// Why the answer cannot be read as an item (a field of the wrong type).
    pub problem: Option<String>,
}

/// A listing's place: the cursor for the next page, or the end.
#[derive(Clone, Debug, Default)]
pub struct Cursor {
    pub after: Option<String>,
    /// Anthropic's newer opaque page token, when the answer carried one.
    pub page: Option<String>,
}

/// One page of a listing.
pub struct Page {
    pub items: Vec<Item>,
    /// Where the next page starts; `None` at the end.
    pub next: Option<Cursor>,
}

/// What to list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listing {
    Files { purpose: Option<String> },
    VectorStores,
}

fn q(v: &str) -> String {
    utf8_percent_encode(v, QUERY).to_string()
}

/// An instant as the vendor wrote it (seconds since the epoch, or RFC 3339 text), handed
/// to the engine as it is: the engine's own rules decide what is a plausible instant, so
/// `0` ("never", a placeholder) is reported, never read as 1970.
fn seconds(v: &Json) -> Option<Value> {
    match v {
        Json::Null => None,
        Json::Number(n) => Some(match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(f)) => Value::Real(f),
            _ => Value::Text(n.to_string()),
        }),
        Json::String(s) => Some(Value::Text(s.clone())),
        other => Some(Value::Text(other.to_string())),
    }
}

/// An instant the vendor wrote, as people read it (for exports and details).
pub fn shown(v: &Value) -> String {
    match v {
        Value::Int(i) => Timestamp::from_unix_seconds(*i)
            .map(Timestamp::to_rfc3339)
            .unwrap_or_else(|| i.to_string()),
        Value::Real(f) => f.to_string(),
        Value::Text(t) => t.clone(),
        Value::Instant(t) => t.to_rfc3339(),
        Value::Null | Value::Blob => String::new(),
    }
}

fn text(o: &Json, k: &str) -> Option<String> {
    o.get(k).and_then(Json::as_str).map(str::to_string)
}

/// An OpenAI file object.
fn openai_file(o: &Json) -> Item {
    let expires = o.get("expires_at").and_then(seconds);
    Item {
        id: text(o, "id").ok_or_else(|| "a file in the listing has no id".to_string()),
        kind: ItemKind::File,
        created_at: o.get("created_at").and_then(seconds),
        expiry_from: if expires.is_some() { "the vendor's expires_at" } else { "" },
        expires_at: expires,
        purpose: text(o, "purpose"),
        filename: text(o, "filename"),
        bytes: o.get("bytes").and_then(Json::as_i64),
        metadata: BTreeMap::new(),
        problem: None,
    }
}

/// An OpenAI vector store: its own `expires_at`, else its metadata's, else its window from
/// `last_active_at` (or `created_at`).
fn vector_store(o: &Json) -> Item {
    let mut metadata = BTreeMap::new();
    let mut problem = None;
    match o.get("metadata") {
        Some(Json::Object(m)) => {
            for (k, v) in m {
                match v {
                    Json::String(s) => {
                        metadata.insert(k.to_ascii_lowercase(), s.clone());
                    }
                    other => {
                        problem = Some(format!("metadata {k} is not a string: {other}"));
                    }
                }
            }
        }
        Some(Json::Null) | None => {}
        Some(other) => problem = Some(format!("metadata is not an object: {other}")),
    }
    let own = o.get("expires_at").and_then(seconds);
    let (expires_at, expiry_from) = match (own, metadata.get("expires_at")) {
        (Some(e), _) => (Some(e), "the vendor's expires_at"),
        (None, Some(m)) => (Some(Value::Text(m.clone())), "its metadata expires_at"),
        (None, None) => (None, ""),
    };
    let started = o
        .get("last_active_at")
        .and_then(seconds)
        .or_else(|| o.get("created_at").and_then(seconds));
    Item {
        id: text(o, "id").ok_or_else(|| "a vector store in the listing has no id".to_string()),
        kind: ItemKind::VectorStore,
        created_at: started,
        expires_at,
        expiry_from,
        purpose: None,
        filename: text(o, "name"),
        bytes: o.get("usage_bytes").and_then(Json::as_i64),
        metadata,
        problem,
    }
}

/// An Anthropic file: `created_at` is RFC 3339; an `expires_at`, where a newer answer
/// carries one, is the file's own expiry, as on OpenAI.
fn anthropic_file(o: &Json) -> Item {
    let expires = o.get("expires_at").and_then(seconds);
    Item {
        id: text(o, "id").ok_or_else(|| "a file in the listing has no id".to_string()),
        kind: ItemKind::File,
        created_at: o.get("created_at").and_then(seconds),
        expiry_from: if expires.is_some() { "the vendor's expires_at" } else { "" },
        expires_at: expires,
        purpose: None,
        filename: text(o, "filename"),
        bytes: o.get("size_bytes").and_then(Json::as_i64),
        metadata: BTreeMap::new(),
        problem: None,
    }
}

/// Reads an item the vendor described, whichever vendor and kind.
pub fn item(vendor: Vendor, kind: ItemKind, o: &Json) -> Item {
    match (vendor, kind) {
        (Vendor::Anthropic, _) => anthropic_file(o),
        (Vendor::OpenAi, ItemKind::File) => openai_file(o),
        (Vendor::OpenAi, ItemKind::VectorStore) => vector_store(o),
    }
}

/// A listing's answer as a page: `data`, and where the next page starts.
fn page(vendor: Vendor, kind: ItemKind, v: &Json, what: &str) -> Result<Page> {
    let data = v
        .get("data")
        .and_then(Json::as_array)
        .ok_or_else(|| anyhow!("{what}: the answer has no data list"))?;
    let items: Vec<Item> = data.iter().map(|o| item(vendor, kind, o)).collect();
    let has_more = v.get("has_more").and_then(Json::as_bool).unwrap_or(false);
    let next_page = text(v, "next_page");
    let last = text(v, "last_id").or_else(|| {
        data.last()
            .and_then(|o| o.get("id"))
            .and_then(Json::as_str)
            .map(str::to_string)
    });
    // A page token, when the answer carries one, says on its own that more follows.
    let next = match (has_more, next_page, last) {
        (_, Some(p), _) => Some(Cursor {
            after: None,
            page: Some(p),
        }),
        (true, None, Some(after)) => Some(Cursor {
            after: Some(after),
            page: None,
        }),
        (true, None, None) => {
            return Err(anyhow!(
                "{what}: the answer says there is more but gives no cursor to read it by"
            ));
        }
        (false, ..) => None,
    };
    Ok(Page { items, next })
}

/// The next page of a listing.
pub async fn list(client: &Client, vendor: Vendor, l: &Listing, c: &Cursor) -> Result<Page> {
    let (path, kind) = match (vendor, l) {
        (Vendor::OpenAi, Listing::Files { purpose }) => {
            let mut p = format!("/files?limit={OPENAI_FILES_PAGE}&order=asc");
            if let Some(purpose) = purpose {
                p.push_str(&format!("&purpose={}", q(purpose)));
            }
            if let Some(a) = &c.after {
                p.push_str(&format!("&after={}", q(a)));
            }
            (p, ItemKind::File)
        }
        (Vendor::OpenAi, Listing::VectorStores) => {
            let mut p = format!("/vector_stores?limit={STORES_PAGE}&order=asc");
            if let Some(a) = &c.after {
                p.push_str(&format!("&after={}", q(a)));
            }
            (p, ItemKind::VectorStore)
        }
        (Vendor::Anthropic, _) => {
            let mut p = format!("/files?limit={ANTHROPIC_FILES_PAGE}");
            if let Some(token) = &c.page {
                p.push_str(&format!("&page={}", q(token)));
            } else if let Some(a) = &c.after {
                p.push_str(&format!("&after_id={}", q(a)));
            }
            (p, ItemKind::File)
        }
    };
    let what = format!("{} GET {path}", vendor.name());
    match client.get(&path).await {
        Reply::Ok(v) => page(vendor, kind, &v, &what),
        Reply::NotFound => Err(anyhow!(
            "{what}: answered 404; check base_url (it ends in /v1, as the vendor's SDKs take it)"
        )),
        Reply::Refused(why) | Reply::Unknown(why) => Err(anyhow!("{why}")),
    }
}

/// Files in use by work still running at the vendor, each with why: a batch's input,
/// output and error files, a fine-tuning job's training, validation and result files.
/// Deleting one would break the work, so it is kept (and judged again next run).
pub async fn files_in_use(client: &Client) -> Result<HashMap<String, String>> {
    let mut used = HashMap::new();
    // Work is running unless it says it has finished: a status added later keeps its files.
    const FINISHED_BATCH: &[&str] = &["completed", "failed", "expired", "cancelled"];
    const FINISHED_JOB: &[&str] = &["succeeded", "failed", "cancelled"];
    for (base, finished, fields, noun) in [
        (
            "/batches?limit=100",
            FINISHED_BATCH,
            &["input_file_id", "output_file_id", "error_file_id"][..],
            "batch",
        ),
        (
            "/fine_tuning/jobs?limit=100",
            FINISHED_JOB,
            &["training_file", "validation_file"][..],
            "fine-tuning job",
        ),
    ] {
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                Some(a) => format!("{base}&after={}", q(a)),
                None => base.to_string(),
            };
            let v = match client.get(&path).await {
                Reply::Ok(v) => v,
                Reply::NotFound => {
                    return Err(anyhow!(
                        "OpenAI GET {path}: answered 404 (needed to keep the files of work still running)"
                    ));
                }
                Reply::Refused(why) | Reply::Unknown(why) => {
                    return Err(anyhow!(
                        "{why} (needed to keep the files of work still running)"
                    ));
                }
            };
            let data = v.get("data").and_then(Json::as_array).ok_or_else(|| {
                anyhow!("OpenAI GET {path}: the answer has no data list")
            })?;
            for o in data {
                let status = text(o, "status").unwrap_or_default();
                if finished.contains(&status.as_str()) {
                    continue;
                }
                let id = text(o, "id").unwrap_or_else(|| "(no id)".into());
                let why = format!("in use by {noun} {id} ({status})");
                for f in fields {
                    if let Some(file) = text(o, f) {
                        used.insert(file, why.clone());
                    }
                }
                if let Some(Json::Array(results)) = o.get("result_files") {
                    for r in results.iter().filter_map(Json::as_str) {
                        used.insert(r.to_string(), why.clone());
                    }
                }
            }
            let more = v.get("has_more").and_then(Json::as_bool).unwrap_or(false);
            let last = data.last().and_then(|o| text(o, "id"));
            match (more, last) {
                (false, _) => break,
                (true, Some(l)) if after.as_ref() != Some(&l) => after = Some(l),
                // More is said to follow but cannot be read: the running work is not known.
                (true, _) => {
                    return Err(anyhow!(
                        "OpenAI GET {path}: the answer says there is more but gives no new cursor to read it by (needed to keep the files of work still running)"
                    ));
                }
            }
        }
    }
    Ok(used)
}

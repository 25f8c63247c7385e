//! `object_store` targets: the objects under a prefix in an S3, Azure Blob or GCS bucket, each
//! an item whose window runs from its `expires_at` metadata entry, else its last-modified time.
//!
//! The listing is streamed (one page at a time, never a list of every object); each listed
//! object's metadata is read with a HEAD request, several in flight. Deletes go through the
//! store's bulk API (S3 DeleteObjects, Azure Blob Batch) one request per chunk, with a result
//! per object; a chunk whose request fails as a whole, and any object the bulk answer says
//! failed, is tried once more on its own. Answers 5xx and 429 are retried with backoff by the
//! store client. `file://` URLs are not served here: they go to the no-follow directory walk
//! (see `open_source`), because a listing that follows links could lead out of the prefix.
//!
//! On S3 the listing is our own ListObjectsV2 (see `s3`): the client's refuses keys S3
//! allows, and one such key would stop the whole target. A key the client cannot name is
//! a failed item reported by its own name; the rest is swept. Every deleted entry says what
//! was judged (ETag, last-modified, version); in a versioned S3 bucket exactly the version
//! judged is deleted, so an object overwritten after its HEAD keeps its new version.

mod config;
mod s3;

pub use config::{KINDS, ObjectStoreKind, ObjectStoreTarget};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use futures::stream::{self, BoxStream, StreamExt};
use lethe_core::time::Timestamp;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::path::Path;
use object_store::{
    Attribute, BackoffConfig, GetOptions, ObjectMeta, ObjectStore, ObjectStoreExt, RetryConfig,
};

use crate::targets::{Capabilities, Connector, Deletion, ExportSink, Key, Lookup, Row, Value};
use crate::util::UsageError;

/// HEAD requests in flight while reading metadata.
const HEADS_IN_FLIGHT: usize = 16;
/// Single deletes in flight when falling back from a bulk request.
const SINGLES_IN_FLIGHT: usize = 8;
/// The metadata entry that carries an object's own expiry.
pub const EXPIRES_AT: &str = "expires_at";

/// What a listing names under the prefix.
enum Listed {
    /// An object the store client can name: read and deleted through it.
    Object(ObjectMeta),
    /// A key it cannot name, and why: reported by its own name, never read or deleted.
    Unusable { key: String, why: String },
}

type Listing = BoxStream<'static, Result<Listed, String>>;

/// A key the store client cannot name, and why.
type Unnamed = (String, String);

/// What was judged of an object, kept from its HEAD until its batch is deleted.
struct Judged {
    /// The version the HEAD read, in a versioned S3 bucket: the one a deletion removes.
    version: Option<String>,
}

/// The store's kind decides how many keys one bulk delete request carries.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    S3,
    Azure,
    Gcs,
}

impl Kind {
    /// Keys per bulk request: S3 DeleteObjects takes 1,000, an Azure blob batch 256; GCS
    /// deletes one object per request (the store client keeps several in flight).
    fn chunk(self) -> usize {
        match self {
            Kind::S3 => 1_000,
            Kind::Azure => 256,
            Kind::Gcs => 100,
        }
    }
}

/// Counts of delete requests, reported after a sweep so the bulk path can be seen at work.
#[derive(Clone, Copy, Debug, Default)]
struct DeleteStats {
    bulk_requests: u64,
    single_requests: u64,
}

pub struct ObjectTarget {
    store: Arc<dyn ObjectStore>,
    kind: Kind,
    prefix: Path,
    url: String,
    subject_key: Option<String>,
    /// The metadata entry naming an object's sensitivity level (lower case, as read).
    level_key: Option<String>,
    required: Vec<String>,
    listing: Option<Listing>,
    /// S3 requests the store client does not make (listing, versioned deletes).
    raw: Option<Arc<s3::Raw>>,
    /// The objects of the batch last read, by key.
    judged: HashMap<String, Judged>,
    /// The listing has ended.
    listed_all: bool,
    /// Rows read but not yet handed out.
    buffer: std::collections::VecDeque<Row>,
    /// Objects seen that lack a required tag.
    untagged: u64,
    /// Objects seen with a version id (a versioned bucket or container).
    versioned: u64,
    stats: DeleteStats,
}

/// Splits `scheme://bucket/prefix` into its scheme, bucket and prefix path.
fn split_url(url: &str) -> Result<(&str, &str, Path)> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| UsageError(format!("url {url:?} has no scheme (s3://, az://, gs://)")))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(UsageError(format!("url {url:?} names no bucket or container")).into());
    }
    let prefix = prefix.trim_matches('/');
    let prefix = Path::parse(prefix)
        .map_err(|e| UsageError(format!("url {url:?}: prefix {prefix:?} is not usable: {e}")))?;
    Ok((scheme, bucket, prefix))
}

fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: 6,
        retry_timeout: Duration::from_secs(120),
    }
}

/// A store, its kind, the prefix, and on S3 the client for the requests the store's own
/// client does not make.
type Built = (Arc<dyn ObjectStore>, Kind, Path, Option<Arc<s3::Raw>>);

/// Builds the store: credentials and settings from the store's usual environment variables,
/// then the target's `options` (each a configuration key of that store, checked by name).
fn build(url: &str, options: &BTreeMap<String, String>) -> Result<Built> {
    let (scheme, bucket, prefix) = split_url(url)?;
    let bad_key = |k: &str, store: &str| {
        UsageError(format!(
            "options.{k}: not a configuration key of the {store} store"
        ))
    };
    let store: Arc<dyn ObjectStore> = match scheme {
        "s3" | "s3a" => {
            let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
            for (k, v) in options {
                let key: AmazonS3ConfigKey = k.parse().map_err(|_| bad_key(k, "S3"))?;
                b = b.with_config(key, v);
            }
            let client_setting = |name: &str| {
                let key = AmazonS3ConfigKey::Client(name.parse().ok()?);
                b.get_config_value(&key)
            };
            let s = Arc::new(
                b.clone()
                    .with_retry(retry())
                    .build()
                    .map_err(|e| anyhow!("{e}"))?,
            );
            let raw = s3::Raw::new(Arc::clone(&s), client_setting)?;
            let store: Arc<dyn ObjectStore> = s as Arc<AmazonS3>;
            return Ok((store, Kind::S3, prefix, Some(Arc::new(raw))));
        }
        "az" | "azure" | "abfs" | "abfss" => {
            let mut b = MicrosoftAzureBuilder::from_env().with_container_name(bucket);
            for (k, v) in options {
                let key: AzureConfigKey = k.parse().map_err(|_| bad_key(k, "Azure"))?;
                b = b.with_config(key, v);
            }
            let s = b.with_retry(retry()).build().map_err(|e| anyhow!("{e}"))?;
            return Ok((Arc::new(s), Kind::Azure, prefix, None));
        }
        "gs" => {
            let mut b = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
            for (k, v) in options {
                let key: GoogleConfigKey = k.parse().map_err(|_| bad_key(k, "GCS"))?;
                b = b.with_config(key, v);
            }
            Arc::new(b.with_retry(retry()).build().map_err(|e| anyhow!("{e}"))?)
        }
        other => {
            return Err(UsageError(format!(
                "url {url:?}: scheme {other}:// is not supported (s3://, az://, gs://, file://)"
            ))
            .into());
        }
    };
    Ok((store, Kind::Gcs, prefix, None))
}

/// Whether `location` names an item under `prefix`. A listing may return the prefix's own
/// "folder" marker (`prefix/` reads back as the path `prefix`, which names another object):
/// only paths strictly under the prefix are items.
fn under(prefix: &Path, location: &Path) -> bool {
    prefix.as_ref().is_empty() || (location.prefix_matches(prefix) && location != prefix)
}

/// A key from our own S3 listing: an object the client names exactly as stored, a key it
/// cannot name, or `None` for an empty "folder" marker (`dir/`, no data, not an item).
fn classify(entry: s3::Entry, prefix: &Path) -> Option<Listed> {
    if entry.key.ends_with('/') && entry.size == 0 {
        return None;
    }
    let why = match Path::parse(&entry.key) {
        Ok(p) if p.as_ref() == entry.key => {
            return under(prefix, &p).then(|| {
                Listed::Object(ObjectMeta {
                    location: p,
                    last_modified: Default::default(),
                    size: entry.size,
                    e_tag: None,
                    version: None,
                })
            });
        }
        // A leading or trailing `/` is dropped by the client: it would name another object.
        Ok(p) => format!("the store client would take this key for {:?}", p.as_ref()),
        Err(e) => format!("the store client cannot name this key ({e})"),
    };
    Some(Listed::Unusable {
        key: entry.key,
        why: format!("{why}: it cannot be read or deleted here; delete it by hand if it is due"),
    })
}

/// An object's user metadata, keys lowercased (S3 and Azure compare them case-insensitively).
fn metadata(attrs: &object_store::Attributes) -> BTreeMap<String, String> {
    attrs
        .iter()
        .filter_map(|(k, v)| match k {
            Attribute::Metadata(name) => Some((name.to_ascii_lowercase(), v.as_ref().to_string())),
            _ => None,
        })
        .collect()
}

/// What a HEAD tells about one object: its metadata, or why it could not be read. `None`
/// when the object is gone.
type Head = Option<(ObjectMeta, Result<BTreeMap<String, String>, String>)>;

async fn head(store: Arc<dyn ObjectStore>, meta: ObjectMeta) -> Head {
    let opts = GetOptions {
        head: true,
        ..Default::default()
    };
    match store.get_opts(&meta.location, opts).await {
        Ok(r) => Some((r.meta, Ok(metadata(&r.attributes)))),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => Some((meta, Err(format!("metadata unreadable: {e}")))),
    }
}

impl ObjectTarget {
    pub fn open(cfg: &ObjectStoreTarget, required_tags: &[String]) -> Result<Self> {
        let (store, kind, prefix, raw) = build(&cfg.url, &cfg.options)
            .with_context(|| format!("Failed to set up {}", cfg.url))?;
        Ok(ObjectTarget {
            store,
            kind,
            prefix,
            url: cfg.url.clone(),
            subject_key: cfg.subject.as_ref().map(|s| s.to_ascii_lowercase()),
            level_key: cfg
                .sensitivity_metadata
                .as_ref()
                .map(|s| s.to_ascii_lowercase()),
            required: required_tags
                .iter()
                .map(|t| t.to_ascii_lowercase())
                .collect(),
            listing: None,
            raw,
            judged: HashMap::new(),
            listed_all: false,
            buffer: Default::default(),
            untagged: 0,
            versioned: 0,
            stats: DeleteStats::default(),
        })
    }

    fn prefix(&self) -> Option<&Path> {
        (!self.prefix.as_ref().is_empty()).then_some(&self.prefix)
    }

    /// The listing of the prefix: our own on S3, the store client's elsewhere.
    fn listing(&self) -> Listing {
        if let Some(raw) = &self.raw {
            let prefix = self.prefix.clone();
            let raw_prefix = match prefix.as_ref() {
                "" => String::new(),
                p => format!("{p}/"),
            };
            return Arc::clone(raw)
                .list(raw_prefix)
                .filter_map(move |e| {
                    let listed = match e {
                        Ok(e) => classify(e, &prefix).map(Ok),
                        Err(e) => Some(Err(e)),
                    };
                    futures::future::ready(listed)
                })
                .boxed();
        }
        let prefix = self.prefix.clone();
        self.store
            .list(self.prefix())
            .filter_map(move |m| {
                futures::future::ready(match m {
                    Ok(m) if under(&prefix, &m.location) => Some(Ok(Listed::Object(m))),
                    Ok(_) => None,
                    Err(e) => Some(Err(e.to_string())),
                })
            })
            .boxed()
    }

    /// The row of an object read with a HEAD; what was judged of it is kept for its delete.
    fn row(&mut self, meta: &ObjectMeta, md: Result<&BTreeMap<String, String>, &String>) -> Row {
        let modified = Timestamp::from_micros(meta.last_modified.timestamp_micros());
        let key = meta.location.to_string();
        let mut row = Row::new(Key::Text(key.clone()));
        row.created_at = Value::Text(modified.to_rfc3339());
        match md {
            Ok(md) => {
                if let Some(e) = md.get(EXPIRES_AT) {
                    row.expires_at = Value::Text(e.clone());
                }
                if let Some(k) = &self.subject_key {
                    row.subject = Ok(md.get(k).cloned());
                }
                if let Some(level) = self.level_key.as_ref().and_then(|k| md.get(k)) {
                    row.sensitivity = Value::Text(level.clone());
                }
                let mut judged = format!(
                    "judged ETag {}, last modified {}",
                    meta.e_tag.as_deref().unwrap_or("(none)"),
                    modified.to_rfc3339()
                );
                if let Some(v) = &meta.version {
                    judged.push_str(&format!(", version {v}"));
                }
                row.detail = Some(judged);
                let version = if self.kind == Kind::S3 {
                    meta.version.clone()
                } else {
                    None
                };
                self.judged.insert(key, Judged { version });
            }
            Err(why) => row.problem = Some(why.clone()),
        }
        row
    }

    /// The row of a key the store client cannot name: a failed item, by its own name.
    /// The next `limit` objects of the listing with their metadata, and the keys the store
    /// client cannot name; fewer at the listing's end.
    fn next_heads(&mut self, limit: usize) -> Result<(Vec<Head>, Vec<Unnamed>)> {
        if self.listing.is_none() {
            self.listing = Some(self.listing());
        }
        let store = Arc::clone(&self.store);
        let url = self.url.clone();
        // The listing goes to the IO thread and comes back with the page; a listing lost
        // to a failed task starts again on the next scan, after the error ends this one.
        let Some(mut listing) = self.listing.take() else {
            return Ok((Vec::new(), Vec::new()));
        };
        let (listing, listed_all, page) = crate::io::wait(async move {
            let mut metas = Vec::with_capacity(limit);
            let mut unusable = Vec::new();
            let mut listed_all = false;
            while metas.len() + unusable.len() < limit {
                match listing.next().await {
                    Some(Ok(Listed::Object(m))) => metas.push(m),
                    Some(Ok(Listed::Unusable { key, why })) => unusable.push((key, why)),
                    Some(Err(e)) => {
                        let failed = Err(anyhow!("Failed to list {url}: {e}"));
                        return (listing, listed_all, failed);
                    }
                    None => {
                        listed_all = true;
                        break;
                    }
                }
            }
            let heads = stream::iter(metas)
                .map(|m| head(Arc::clone(&store), m))
                .buffered(HEADS_IN_FLIGHT)
                .collect::<Vec<_>>()
                .await;
            (listing, listed_all, Ok((heads, unusable)))
        })?;
        self.listing = Some(listing);
        self.listed_all |= listed_all;
        page
    }

    /// Exactly `limit` rows (fewer only at the listing's end), of one subject if given.
    fn fill(&mut self, limit: usize, subject: Option<&str>) -> Result<Vec<Row>> {
        // What was judged is kept only for the rows still buffered: without transactions
        // the engine deletes each batch before it reads the next, so the batch handed out
        // last is done with by now (a key asked for later is refused, never guessed at).
        let buffered: std::collections::HashSet<&str> = self
            .buffer
            .iter()
            .filter_map(|r| match &r.key {
                Ok(Key::Text(k)) => Some(k.as_str()),
                _ => None,
            })
            .collect();
        self.judged.retain(|k, _| buffered.contains(k.as_str()));
        while self.buffer.len() < limit && !self.listed_all {
            let (heads, unusable) = self.next_heads(limit)?;
            // Whose such a key is cannot be known either: an erasure reports it too.
            for (key, why) in unusable {
                self.buffer.push_back(Row::unusable(Key::Text(key), why));
            }
            for (meta, md) in heads.into_iter().flatten() {
                if meta.version.is_some() {
                    self.versioned += 1;
                }
                let wanted = match (subject, &md, &self.subject_key) {
                    (None, _, _) => true,
                    (Some(s), Ok(m), Some(k)) => m.get(k).map(String::as_str) == Some(s),
                    // Whose it is cannot be known: report it (failed) rather than skip it.
                    (Some(_), Err(_), _) => true,
                    _ => false,
                };
                if subject.is_none() {
                    self.tally(&md);
                }
                if wanted {
                    let row = self.row(&meta, md.as_ref());
                    self.buffer.push_back(row);
                }
            }
        }
        let n = limit.min(self.buffer.len());
        Ok(self.buffer.drain(..n).collect())
    }

    fn restart(&mut self) {
        self.listing = None;
        self.listed_all = false;
        self.buffer.clear();
    }

    fn tally(&mut self, md: &Result<BTreeMap<String, String>, String>) {
        if let Ok(md) = md
            && self.required.iter().any(|t| !md.contains_key(t))
        {
            self.untagged += 1;
        }
    }

    /// Deletes one chunk with one bulk request; `None` when the request failed as a whole.
    async fn bulk(store: &Arc<dyn ObjectStore>, paths: &[Path]) -> Option<Vec<Result<(), String>>> {
        let owned: Vec<Path> = paths.to_vec();
        let input = stream::iter(owned.into_iter().map(Ok)).boxed();
        let results: Vec<_> = store.delete_stream(input).collect().await;
        if results.len() != paths.len() {
            return None;
        }
        Some(
            results
                .into_iter()
                .map(|r| match r {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(e.to_string()),
                })
                .collect(),
        )
    }

    async fn single(store: Arc<dyn ObjectStore>, path: Path) -> Result<(), String> {
        match store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl Connector for ObjectTarget {
    fn check_schema(&mut self) -> Result<Vec<String>> {
        let mut listing = self.listing();
        let first = crate::io::wait(async move { listing.next().await.map(|r| r.map(|_| ())) })?;
        Ok(match first {
            Some(Err(e)) => {
                let mut why = format!("cannot list {}: {e}", self.url);
                // Without credentials in the environment the client falls back to the
                // instance metadata service; say what is missing instead.
                if why.contains("169.254.169.254") {
                    why.push_str(" (no credentials found: set the store's environment variables, e.g. AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)");
                }
                vec![why]
            }
            _ => Vec::new(),
        })
    }

    fn count(&mut self) -> Result<Option<u64>> {
        let url = self.url.clone();
        let mut list = self.listing();
        crate::io::wait(async move {
            let mut n = 0u64;
            while let Some(m) = list.next().await {
                m.map_err(|e| anyhow!("Failed to list {url}: {e}"))?;
                n += 1;
            }
            Ok(Some(n))
        })?
    }

    /// The next objects of the listing (it keeps its own place). Every
    /// object is a candidate: its expiry is known only once its metadata is read.
    fn candidates(&mut self, _now: Timestamp, limit: usize) -> Result<Vec<Row>> {
        self.fill(limit, None)
    }

    /// The next objects whose `subject` metadata entry names this subject.
    fn of_subject(&mut self, subject: &str, limit: usize) -> Result<Vec<Row>> {
        if self.subject_key.is_none() {
            return Ok(Vec::new());
        }
        self.fill(limit, Some(subject))
    }

    /// A HEAD per key: found with its metadata, gone on a 404, unknown on anything else
    /// (an error, a throttle, a key that is not an object path as written).
    fn lookup(&mut self, keys: &[Key]) -> Result<Vec<Lookup>> {
        let store = Arc::clone(&self.store);
        self.judged.clear();
        // A key is the listed path verbatim; one the client does not name as written was
        // never read or planned here.
        let mut out: Vec<Option<Lookup>> = Vec::with_capacity(keys.len());
        let mut paths: Vec<Path> = Vec::new();
        for k in keys {
            let key = k.to_string();
            match Path::parse(&key) {
                Ok(p) if p.as_ref() == key => {
                    paths.push(p);
                    out.push(None);
                }
                Ok(_) => out.push(Some(Lookup::Unknown(format!(
                    "{key}: not an object path as written"
                )))),
                Err(e) => out.push(Some(Lookup::Unknown(format!(
                    "{key}: not an object path: {e}"
                )))),
            }
        }
        let heads: Vec<Head> = crate::io::wait(
            stream::iter(paths)
                .map(move |location| {
                    let meta = ObjectMeta {
                        location,
                        last_modified: Default::default(),
                        size: 0,
                        e_tag: None,
                        version: None,
                    };
                    head(Arc::clone(&store), meta)
                })
                .buffered(HEADS_IN_FLIGHT)
                .collect(),
        )?;
        let mut heads = heads.into_iter();
        Ok(out
            .into_iter()
            .map(|o| match o {
                Some(known) => known,
                None => match heads.next() {
                    None => Lookup::Unknown("no answer for this object".into()),
                    Some(None) => Lookup::Gone,
                    Some(Some((meta, Ok(md)))) => Lookup::Found(self.row(&meta, Ok(&md))),
                    Some(Some((meta, Err(why)))) => {
                        Lookup::Unknown(format!("{}: {why}", meta.location))
                    }
                },
            })
            .collect())
    }

    fn capabilities(&self) -> Capabilities {
        let subjects = self.subject_key.is_some();
        Capabilities {
            transactions: false,
            subjects,
            export: subjects,
        }
    }

    /// Bulk deletes, one request per chunk, with a result per object; what the bulk path
    /// could not delete is tried once more on its own. In a versioned S3 bucket each object's
    /// judged version is deleted, not whatever is current by then.
    fn delete(&mut self, keys: &[Key]) -> Result<Vec<Deletion>> {
        /// Where one key's outcome comes from.
        enum Route {
            Refused(String),
            Plain(usize),
            Version(usize),
        }
        let mut plain: Vec<Path> = Vec::new();
        let mut versions: Vec<(Path, String)> = Vec::new();
        let mut routes = Vec::with_capacity(keys.len());
        for k in keys {
            let key = k.to_string();
            let route = match (Path::parse(&key), self.judged.remove(&key)) {
                (Err(e), _) => Route::Refused(format!("not an object path: {e}")),
                (Ok(p), _) if p.as_ref() != key => {
                    Route::Refused("not an object path as written".into())
                }
                (Ok(_), None) => Route::Refused(
                    "not judged in the batch just read; kept, and judged again on the next sweep"
                        .into(),
                ),
                (Ok(p), Some(Judged { version: Some(v) })) => {
                    versions.push((p, v));
                    Route::Version(versions.len() - 1)
                }
                (Ok(p), Some(Judged { version: None })) => {
                    plain.push(p);
                    Route::Plain(plain.len() - 1)
                }
            };
            routes.push(route);
        }
        let store = Arc::clone(&self.store);
        let raw = self.raw.clone();
        let chunk = self.kind.chunk();
        let bulk_api = self.kind != Kind::Gcs;
        let mut stats = self.stats;
        let (plain_out, version_out, stats) = crate::io::wait(async move {
            let mut out = Vec::with_capacity(plain.len());
            for part in plain.chunks(chunk) {
                let first = if bulk_api {
                    stats.bulk_requests += 1;
                    // In a task of its own: the store client's parsing of a malformed bulk
                    // answer can panic; that chunk then falls back to single deletes.
                    let (store, part) = (Arc::clone(&store), part.to_vec());
                    tokio::spawn(async move { Self::bulk(&store, &part).await })
                        .await
                        .ok()
                        .flatten()
                } else {
                    None
                };
                let first = first.unwrap_or_else(|| vec![Err(String::new()); part.len()]);
                let retry: Vec<(usize, Path)> = first
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.is_err())
                    .map(|(i, _)| (i, part[i].clone()))
                    .collect();
                stats.single_requests += retry.len() as u64;
                let again: Vec<(usize, Result<(), String>)> = stream::iter(retry)
                    .map(|(i, p)| {
                        let store = Arc::clone(&store);
                        async move { (i, Self::single(store, p).await) }
                    })
                    .buffered(SINGLES_IN_FLIGHT)
                    .collect()
                    .await;
                let mut results = first;
                for (i, r) in again {
                    results[i] = r;
                }
                out.extend(results);
            }
            let mut vout = Vec::with_capacity(versions.len());
            let Some(raw) = raw else {
                // Versions are judged only on S3, which always has the raw client.
                vout.resize(
                    versions.len(),
                    Err("no client for versioned deletes".into()),
                );
                return (out, vout, stats);
            };
            for part in versions.chunks(Kind::S3.chunk()) {
                stats.bulk_requests += 1;
                let first = raw
                    .delete_versions(part)
                    .await
                    .unwrap_or_else(|e| vec![Err(e); part.len()]);
                let retry: Vec<usize> = (0..part.len()).filter(|i| first[*i].is_err()).collect();
                stats.single_requests += retry.len() as u64;
                let again: Vec<(usize, Result<(), String>)> = stream::iter(retry)
                    .map(|i| {
                        let raw = Arc::clone(&raw);
                        let (p, v) = part[i].clone();
                        async move { (i, raw.delete_version(&p, &v).await) }
                    })
                    .buffered(SINGLES_IN_FLIGHT)
                    .collect()
                    .await;
                let mut results = first;
                for (i, r) in again {
                    results[i] = r;
                }
                vout.extend(results);
            }
            (out, vout, stats)
        })?;
        self.stats = stats;
        // One outcome per key, in order.
        let answer = |outs: &[Result<(), String>], i: usize| {
            outs.get(i)
                .cloned()
                .unwrap_or_else(|| Err("no answer for this object".into()))
        };
        let outcome = |r: Result<(), String>| match r {
            Ok(()) => Deletion::Deleted,
            Err(why) => Deletion::Failed(why),
        };
        Ok(routes
            .into_iter()
            .map(|r| match r {
                Route::Refused(why) => Deletion::Failed(why),
                Route::Plain(i) => outcome(answer(&plain_out, i)),
                Route::Version(i) => outcome(answer(&version_out, i)),
            })
            .collect())
    }

    fn export_subject(
        &mut self,
        _subject_col: &str,
        subject: &str,
        each: ExportSink,
    ) -> Result<()> {
        self.restart();
        loop {
            let rows = self.of_subject(subject, 1_000)?;
            if rows.is_empty() {
                break;
            }
            // A row whose facts could not be read is not known to be this subject's: its
            // name is not handed out in someone's export.
            for r in rows.into_iter().filter(|r| r.problem.is_none()) {
                let mut obj = serde_json::Map::new();
                if let Ok(k) = &r.key {
                    obj.insert("key".into(), k.to_string().into());
                }
                if let Value::Text(t) = &r.created_at {
                    obj.insert("last_modified".into(), t.clone().into());
                }
                if let Value::Text(t) = &r.expires_at {
                    obj.insert(EXPIRES_AT.into(), t.clone().into());
                }
                each(obj)?;
            }
        }
        self.restart();
        Ok(())
    }

    fn untagged(&self) -> Option<u64> {
        (!self.required.is_empty()).then_some(self.untagged)
    }

    fn delete_stats(&self) -> Option<(u64, u64)> {
        Some((self.stats.bulk_requests, self.stats.single_requests))
    }

    fn notes(&self) -> Vec<String> {
        if self.versioned == 0 {
            return Vec::new();
        }
        if self.kind == Kind::S3 {
            return vec![format!(
                "{} objects carry version ids (a versioned bucket): each deletion removed exactly the version judged; earlier versions remain until a lifecycle rule for noncurrent versions expires them, and the newest of them is current again (judged on its own at the next sweep)",
                self.versioned
            )];
        }
        vec![format!(
            "{} objects carry version ids (a versioned bucket): deleting one keeps its earlier versions until a lifecycle rule for noncurrent versions expires them",
            self.versioned
        )]
    }
}

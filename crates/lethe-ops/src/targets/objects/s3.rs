//! The S3 requests the store client does not make, sent with its own signing: each request
//! is a URL presigned by the client (its credentials, region, endpoint and addressing style,
//! so nothing of that is reimplemented here) and sent by an HTTP client built from the same
//! client options (proxy, certificates, timeouts, plain HTTP).
//!
//! - A listing that names every key exactly as stored. The client's own listing parses each
//!   key into its `Path`, which refuses keys S3 allows (`a//b`, `./x`, `../y`, a control
//!   character): one such key fails the whole page, so it cannot be used to find them.
//! - Deletes of one version of an object (DeleteObjects with a `VersionId` per object, and
//!   DeleteObject with `?versionId=`), which the client cannot send at all.
//!
//! Answers 5xx and 429, and requests that never got an answer, are retried with backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures::stream::{self, BoxStream, StreamExt};
use md5::{Digest, Md5};
use object_store::aws::AmazonS3;
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::path::Path;
use object_store::signer::{Method, SignedUrlOptions, Signer};
use object_store::{ClientConfigKey, ClientOptions};
use serde::Deserialize;

/// How long a presigned URL stays valid: it is used at once (re-signed on each retry).
const URL_VALID: Duration = Duration::from_secs(15 * 60);
/// Retries of one request, after its first try.
const RETRIES: u32 = 6;

/// The client settings copied from the store's configuration, by their names.
const CLIENT_KEYS: [&str; 20] = [
    "allow_http",
    "allow_invalid_certificates",
    "disable_system_certificates",
    "connect_timeout",
    "default_content_type",
    "http1_only",
    "http2_only",
    "http2_keep_alive_interval",
    "http2_keep_alive_timeout",
    "http2_keep_alive_while_idle",
    "http2_max_frame_size",
    "pool_idle_timeout",
    "pool_max_idle_per_host",
    "proxy_url",
    "proxy_ca_certificate",
    "proxy_excludes",
    "randomize_addresses",
    "read_timeout",
    "timeout",
    "user_agent",
];

/// One key of a listing, as stored.
pub struct Entry {
    pub key: String,
    pub size: u64,
}

pub struct Raw {
    s3: Arc<AmazonS3>,
    http: HttpClient,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListResult {
    #[serde(default)]
    contents: Vec<Contents>,
    #[serde(default)]
    is_truncated: bool,
    next_continuation_token: Option<String>,
    encoding_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Contents {
    key: String,
    #[serde(default)]
    size: u64,
}

#[derive(Deserialize)]
struct DeleteResult {
    #[serde(rename = "$value", default)]
    content: Vec<DeleteOutcome>,
}

#[derive(Deserialize)]
enum DeleteOutcome {
    Deleted(Deleted),
    Error(DeleteError),
    /// Anything else the answer carries (namespaces, new elements): not an outcome.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Deleted {
    key: String,
    version_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteError {
    key: String,
    version_id: Option<String>,
    code: Option<String>,
    message: Option<String>,
}

/// Error codes that mean the version is gone already: what a delete wanted.
fn gone(code: &str) -> bool {
    matches!(code, "NoSuchKey" | "NoSuchVersion")
}

/// S3's `url` encoding of listed keys: percent-encoding with `+` for a space.
fn url_decode(s: &str) -> Result<String, String> {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|e| format!("listed key {s:?} is not UTF-8 once decoded: {e}"))
}

fn xml_escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

/// An error answer's code and message, for an error message. Nothing else of the body is
/// repeated: S3 echoes the signed request (its credential scope, a session token) in some.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let element = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let len = text[start..].find(&format!("</{name}>"))?;
        Some(
            text[start..start + len]
                .chars()
                .take(300)
                .collect::<String>(),
        )
    };
    match (element("Code"), element("Message")) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c,
        _ => format!("no error code in the answer ({} bytes)", body.len()),
    }
}

impl Raw {
    /// `config` reads the store's configuration by key name: the client settings in it are
    /// applied to the HTTP client here too.
    pub fn new(s3: Arc<AmazonS3>, config: impl Fn(&str) -> Option<String>) -> Result<Raw> {
        let mut opts = ClientOptions::new();
        for name in CLIENT_KEYS {
            if let (Ok(key), Some(v)) = (name.parse::<ClientConfigKey>(), config(name)) {
                opts = opts.with_config(key, v);
            }
        }
        let http = ReqwestConnector::default()
            .connect(&opts)
            .context("Failed to set up the HTTP client for S3 listings and versioned deletes")?;
        Ok(Raw { s3, http })
    }

    /// Sends one presigned request, retrying what may pass on a second try; the status and
    /// body of the answer, or why there was none.
    async fn send(
        &self,
        method: Method,
        path: &Path,
        query: &[(&str, &str)],
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), String> {
        let opts = SignedUrlOptions::new().with_query(query.iter().copied());
        let mut wait = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            let url = self
                .s3
                .signed_url_opts(method.clone(), path, URL_VALID, &opts)
                .await
                .map_err(|e| format!("cannot sign the request: {e}"))?;
            let mut req = http::Request::builder()
                .method(method.clone())
                .uri(url.as_str());
            for (k, v) in headers {
                req = req.header(*k, v.as_str());
            }
            let req = req
                .body(HttpRequestBody::from(body.to_vec()))
                .map_err(|e| format!("cannot build the request: {e}"))?;
            let answer = match self.http.execute(req).await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    match r.into_body().bytes().await {
                        Ok(b) => Ok((status, b.to_vec())),
                        Err(e) => Err(format!("answer cut short: {e}")),
                    }
                }
                // The signed query is a credential for a while: never in a message.
                Err(e) => Err(format!("no answer: {e}")
                    .replace(url.query().unwrap_or("\u{0}"), "(signed query)")),
            };
            let again = match &answer {
                Ok((status, _)) => *status == 429 || *status >= 500,
                Err(_) => true,
            };
            if !again || attempt >= RETRIES {
                return match answer {
                    Ok((status, b)) if status == 429 || status >= 500 => Err(format!(
                        "answered {status} after {} tries: {}",
                        attempt + 1,
                        snippet(&b)
                    )),
                    other => other,
                };
            }
            attempt += 1;
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(15));
        }
    }

    /// One page of ListObjectsV2 under `prefix`: its keys as stored, and the token of the
    /// next page if there is one.
    async fn page(
        &self,
        prefix: &str,
        token: Option<&str>,
    ) -> Result<(Vec<Entry>, Option<String>), String> {
        let mut query = vec![
            ("list-type", "2"),
            ("encoding-type", "url"),
            ("prefix", prefix),
        ];
        if let Some(t) = token {
            query.push(("continuation-token", t));
        }
        let (status, body) = self
            .send(Method::GET, &Path::ROOT, &query, &[], b"")
            .await?;
        if status != 200 {
            return Err(format!("answered {status}: {}", snippet(&body)));
        }
        let text = String::from_utf8_lossy(&body);
        let page: ListResult = quick_xml::de::from_str(&text)
            .map_err(|e| format!("unreadable listing ({e}): {}", snippet(&body)))?;
        // The keys are encoded only when the answer says so (a store may ignore the ask).
        let encoded = page.encoding_type.as_deref() == Some("url");
        let mut entries = Vec::with_capacity(page.contents.len());
        for c in page.contents {
            let key = if encoded { url_decode(&c.key)? } else { c.key };
            entries.push(Entry { key, size: c.size });
        }
        let next = match (page.is_truncated, page.next_continuation_token) {
            (false, _) => None,
            (true, Some(t)) if Some(t.as_str()) != token => Some(t),
            (true, _) => {
                return Err(
                    "the listing says more keys follow but gives no new place to go on from".into(),
                );
            }
        };
        Ok((entries, next))
    }

    /// Every key under `prefix` (`""` for the whole bucket), one page at a time.
    pub fn list(self: Arc<Self>, prefix: String) -> BoxStream<'static, Result<Entry, String>> {
        // The state: the next page's token; `None` once the last page was read.
        let start: Option<Option<String>> = Some(None);
        stream::unfold(start, move |state| {
            let raw = Arc::clone(&self);
            let prefix = prefix.clone();
            async move {
                let token = state?;
                match raw.page(&prefix, token.as_deref()).await {
                    Ok((entries, next)) => {
                        let items: Vec<Result<Entry, String>> =
                            entries.into_iter().map(Ok).collect();
                        Some((stream::iter(items), next.map(Some)))
                    }
                    Err(e) => Some((stream::iter(vec![Err(e)]), None)),
                }
            }
        })
        .flatten()
        .boxed()
    }

    /// Deletes these versions with one DeleteObjects request: an outcome per object, in
    /// order, or why the request failed as a whole.
    pub async fn delete_versions(
        &self,
        objects: &[(Path, String)],
    ) -> Result<Vec<Result<(), String>>, String> {
        let mut xml = String::from("<Delete><Quiet>false</Quiet>");
        for (path, version) in objects {
            xml.push_str(&format!(
                "<Object><Key>{}</Key><VersionId>{}</VersionId></Object>",
                xml_escape(path.as_ref()),
                xml_escape(version)
            ));
        }
        xml.push_str("</Delete>");
        // S3 and the stores like it require the body's MD5 on a DeleteObjects request.
        let md5 = B64.encode(Md5::digest(xml.as_bytes()));
        let headers = [
            ("content-md5", md5),
            ("content-type", "application/xml".to_string()),
        ];
        let (status, body) = self
            .send(
                Method::POST,
                &Path::ROOT,
                &[("delete", "")],
                &headers,
                xml.as_bytes(),
            )
            .await?;
        if status != 200 {
            return Err(format!("answered {status}: {}", snippet(&body)));
        }
        let text = String::from_utf8_lossy(&body);
        let answer: DeleteResult = quick_xml::de::from_str(&text)
            .map_err(|e| format!("unreadable answer ({e}): {}", snippet(&body)))?;
        let mut told: HashMap<(String, String), Result<(), String>> = HashMap::new();
        for c in answer.content {
            match c {
                DeleteOutcome::Deleted(d) => {
                    told.insert((d.key, d.version_id.unwrap_or_default()), Ok(()));
                }
                DeleteOutcome::Error(e) => {
                    let code = e.code.unwrap_or_default();
                    let outcome = if gone(&code) {
                        Ok(())
                    } else {
                        Err(format!("{code}: {}", e.message.unwrap_or_default()))
                    };
                    told.insert((e.key, e.version_id.unwrap_or_default()), outcome);
                }
                DeleteOutcome::Other => {}
            }
        }
        // An object the answer does not name is not taken as deleted.
        Ok(objects
            .iter()
            .map(|(p, v)| {
                told.remove(&(p.to_string(), v.clone()))
                    .unwrap_or_else(|| Err("the bulk answer does not name this version".into()))
            })
            .collect())
    }

    /// Deletes one version with DeleteObject `?versionId=`.
    pub async fn delete_version(&self, path: &Path, version: &str) -> Result<(), String> {
        let (status, body) = self
            .send(Method::DELETE, path, &[("versionId", version)], &[], b"")
            .await?;
        let text = String::from_utf8_lossy(&body);
        match status {
            200..=299 => Ok(()),
            404 if text.contains("NoSuchKey") || text.contains("NoSuchVersion") => Ok(()),
            _ => Err(format!("answered {status}: {}", snippet(&body))),
        }
    }
}

//! The vendor fakes behave as the vendors do (paging, cursors, deletes, auth, faults), and
//! what Lethe sends them, and what they answer, conforms to the vendors' OpenAPI
//! descriptions (checked by Prism as a validating proxy).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::prism::{Prism, vendor_spec};
use super::vendor_fake::{
    ANTHROPIC_FILES_BETA, ANTHROPIC_VERSION, Fake, Fault, FileSpec, RateLimit, StoreSpec,
};

const KEY: &str = "sk-test-123";

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Names lowercased.
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// `METHOD url` with `headers`, over a fresh connection; `None` when no answer came within
/// `timeout`.
pub fn try_call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Option<Reply> {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut s = TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
    {
        super::serve::dechunk(rest)
    } else {
        rest.to_string()
    };
    Some(Reply {
        status,
        headers,
        body,
    })
}

pub fn call(method: &str, url: &str, headers: &[(&str, &str)]) -> Reply {
    try_call(method, url, headers, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("{method} {url}: no answer"))
}

fn bearer() -> String {
    format!("Bearer {KEY}")
}

/// A request to the OpenAI fake (or to Prism in front of it), with the key.
fn oa(method: &str, url: &str) -> Reply {
    call(method, url, &[("Authorization", &bearer())])
}

const ANTHROPIC_HEADERS: [(&str, &str); 3] = [
    ("x-api-key", KEY),
    ("anthropic-version", ANTHROPIC_VERSION),
    ("anthropic-beta", ANTHROPIC_FILES_BETA),
];

fn an(method: &str, url: &str) -> Reply {
    call(method, url, &ANTHROPIC_HEADERS)
}

fn ids_of(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect()
}

/// Every id of a listing, page by page (`after` = the previous page's last id).
fn openai_walk(base: &str, path: &str, query: &str) -> (Vec<String>, usize) {
    openai_walk_after(base, path, query, None)
}

/// [`openai_walk`] from after `after`.
fn openai_walk_after(
    base: &str,
    path: &str,
    query: &str,
    mut after: Option<String>,
) -> (Vec<String>, usize) {
    let (mut all, mut pages) = (Vec::new(), 0);
    loop {
        let mut url = format!("{base}{path}?{query}");
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let r = oa("GET", &url);
        assert_eq!(r.status, 200, "{url}: {}", r.body);
        let page = r.json();
        pages += 1;
        let ids = ids_of(&page);
        all.extend(ids.iter().cloned());
        if !page["has_more"].as_bool().unwrap() {
            return (all, pages);
        }
        after = Some(ids.last().unwrap().clone());
    }
}

/// 25 files: created_at 1000 + (i % 10) (ties on purpose), purposes alternating.
fn twenty_five(fake: &Fake) -> Vec<(String, i64, String)> {
    (0..25)
        .map(|i| {
            let purpose = if i % 2 == 0 { "fine-tune" } else { "batch" };
            let c = 1000 + (i % 10);
            let id = fake.add_file(FileSpec::new(purpose, c));
            (id, c, purpose.to_string())
        })
        .collect()
}

#[test]
fn openai_pages_cover_every_file_exactly_once_in_order() {
    let fake = Fake::openai(KEY);
    let files = twenty_five(&fake);
    fake.set_page_cap(7);
    let created: BTreeMap<String, i64> = files.iter().map(|(id, c, _)| (id.clone(), *c)).collect();
    for (order, query) in [("desc", "limit=10"), ("asc", "limit=10&order=asc")] {
        let (ids, pages) = openai_walk(&fake.base_url(), "/files", query);
        assert_eq!(
            pages, 4,
            "{order}: 25 files at 7 a page (the cap beats limit=10)"
        );
        assert_eq!(ids.len(), 25, "{order}: {ids:?}");
        assert_eq!(
            ids.iter().collect::<BTreeSet<_>>(),
            created.keys().collect(),
            "{order}"
        );
        let times: Vec<i64> = ids.iter().map(|id| created[id]).collect();
        let mut sorted = times.clone();
        sorted.sort();
        if order == "desc" {
            sorted.reverse();
        }
        assert_eq!(times, sorted, "{order}: listed by created_at");
    }
    // purpose filters, across pages.
    let (ids, _) = openai_walk(&fake.base_url(), "/files", "purpose=batch&limit=5");
    let want: BTreeSet<&String> = files
        .iter()
        .filter(|f| f.2 == "batch")
        .map(|f| &f.0)
        .collect();
    assert_eq!(ids.iter().collect::<BTreeSet<_>>(), want);

    // The first page's shape.
    let page = oa("GET", &format!("{}/files?limit=2", fake.base_url())).json();
    assert_eq!(page["object"], "list");
    assert_eq!(page["first_id"], page["data"][0]["id"]);
    assert_eq!(page["last_id"], page["data"][1]["id"]);
    let f = &page["data"][0];
    assert!(f["id"].as_str().unwrap().starts_with("file-"));
    assert_eq!(f["id"].as_str().unwrap().len(), 5 + 24);
    assert_eq!(f["object"], "file");
    assert_eq!(f["status"], "processed");
    assert!(f.get("expires_at").is_none(), "left out when none: {f}");
}

#[test]
fn openai_after_cursor_survives_deleting_the_item_it_names() {
    let fake = Fake::openai(KEY);
    let files = twenty_five(&fake);
    let base = fake.base_url();
    let first = oa("GET", &format!("{base}/files?limit=10&order=asc")).json();
    let cursor = first["last_id"].as_str().unwrap().to_string();
    // Delete the whole first page, the cursor's file included (one behind the client's back).
    for id in ids_of(&first) {
        if id == cursor {
            assert!(fake.remove_file(&id));
        } else {
            assert_eq!(oa("DELETE", &format!("{base}/files/{id}")).status, 200);
        }
    }
    let (rest, _) = openai_walk_after(&base, "/files", "order=asc&limit=4", Some(cursor.clone()));
    let mut want: Vec<_> = files.iter().map(|f| (f.1, f.0.clone())).collect();
    want.sort();
    let want: Vec<String> = want.into_iter().skip(10).map(|w| w.1).collect();
    assert_eq!(rest, want);
    let lists: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|l| l.method == "GET" && l.path == "/v1/files")
        .collect();
    assert_eq!(
        lists.len(),
        1 + 4,
        "the first page, then 15 files 4 at a time"
    );
    assert_eq!(lists[1].param("after").as_deref(), Some(cursor.as_str()));
    assert_eq!(lists[1].query, format!("order=asc&limit=4&after={cursor}"));
    assert!(lists.windows(2).all(|w| w[0].at <= w[1].at));
    // A cursor that was never issued is a 400 in OpenAI's error shape.
    let r = oa("GET", &format!("{base}/files?after=file-nope"));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
}

#[test]
fn deletes_remove_and_a_second_delete_is_a_404_in_the_vendors_shape() {
    let fake = Fake::openai(KEY);
    let id = fake.add_file(FileSpec::new("batch", 1000));
    let url = format!("{}/files/{id}", fake.base_url());
    let got = oa("GET", &url);
    assert_eq!(
        (got.status, got.json()["id"].as_str()),
        (200, Some(id.as_str()))
    );
    let del = oa("DELETE", &url);
    assert_eq!(del.status, 200);
    assert_eq!(
        del.json(),
        serde_json::json!({"id": id, "object": "file", "deleted": true})
    );
    assert!(fake.file_ids().is_empty());
    for method in ["DELETE", "GET"] {
        let r = oa(method, &url);
        assert_eq!(r.status, 404, "{method}");
        let e = &r.json()["error"];
        assert_eq!(e["type"], "invalid_request_error");
        assert!(e["message"].as_str().unwrap().contains(&id));
        assert!(e.get("code").is_some() && e.get("param").is_some());
    }

    let fake = Fake::anthropic(KEY);
    let id = fake.add_file(FileSpec::new("", 1000));
    assert!(id.starts_with("file_") && id.len() == 5 + 24);
    let url = format!("{}/files/{id}", fake.base_url());
    let meta = an("GET", &url).json();
    assert_eq!(meta["type"], "file");
    assert_eq!(meta["created_at"], "1970-01-01T00:16:40.100435Z");
    let del = an("DELETE", &url);
    assert_eq!(del.status, 200);
    assert_eq!(
        del.json(),
        serde_json::json!({"id": id, "type": "file_deleted"})
    );
    let again = an("DELETE", &url);
    assert_eq!(again.status, 404);
    let body = again.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "not_found_error");
    assert!(fake.file_ids().is_empty());
}

#[test]
fn openai_auth_is_enforced_and_the_key_never_logged() {
    let fake = Fake::openai(KEY);
    let url = format!("{}/files", fake.base_url());
    let none = call("GET", &url, &[]);
    assert_eq!(none.status, 401);
    let wrong = call("GET", &url, &[("Authorization", "Bearer sk-other")]);
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["error"]["code"], "invalid_api_key");
    assert_eq!(oa("GET", &url).status, 200);
    let log = fake.requests();
    let auth: Vec<Option<&str>> = log
        .iter()
        .map(|l| l.headers.get("authorization").map(String::as_str))
        .collect();
    assert_eq!(auth, [None, Some("<wrong key>"), Some("<valid key>")]);
    assert_eq!(
        log.iter().map(|l| l.status).collect::<Vec<_>>(),
        [401, 401, 200]
    );
    assert!(!format!("{log:?}").contains(KEY));
}

#[test]
fn anthropic_requires_key_version_and_the_files_beta() {
    let fake = Fake::anthropic(KEY);
    let url = format!("{}/files", fake.base_url());
    let without = |skip: &str| {
        let h: Vec<(&str, &str)> = ANTHROPIC_HEADERS
            .iter()
            .copied()
            .filter(|(k, _)| *k != skip)
            .collect();
        call("GET", &url, &h)
    };
    let r = without("x-api-key");
    assert_eq!(
        (r.status, r.json()["error"]["type"].as_str()),
        (401, Some("authentication_error"))
    );
    let r = without("anthropic-version");
    assert_eq!(
        (r.status, r.json()["error"]["type"].as_str()),
        (400, Some("invalid_request_error"))
    );
    let r = without("anthropic-beta");
    assert_eq!(
        (r.status, r.json()["error"]["type"].as_str()),
        (400, Some("invalid_request_error"))
    );
    let r = call(
        "GET",
        &url,
        &[
            ("x-api-key", KEY),
            ("anthropic-version", ANTHROPIC_VERSION),
            ("anthropic-beta", "pdfs-2024-09-25, files-api-2025-04-14"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.headers.contains_key("request-id"));
    let log = fake.requests();
    assert_eq!(log[0].headers.get("x-api-key"), None);
    assert_eq!(log[1].headers["x-api-key"], "<valid key>");
}

#[test]
fn anthropic_pages_by_ids_and_by_page_cursor() {
    let fake = Fake::anthropic(KEY);
    let ids: Vec<String> = (0..23)
        .map(|i| fake.add_file(FileSpec::new("", 5000 + i)))
        .collect();
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    let base = fake.base_url();

    // Default limit 20, newest first; after_id pages on.
    let p1 = an("GET", &format!("{base}/files")).json();
    assert_eq!(ids_of(&p1), newest_first[..20]);
    assert_eq!(p1["has_more"], true);
    assert_eq!(p1["first_id"], newest_first[0].as_str());
    let last = p1["last_id"].as_str().unwrap().to_string();
    let p2 = an("GET", &format!("{base}/files?after_id={last}")).json();
    assert_eq!(ids_of(&p2), newest_first[20..]);
    assert_eq!(p2["has_more"], false);
    // before_id: the page just before an object, in listing order.
    let p0 = an(
        "GET",
        &format!("{base}/files?before_id={}&limit=3", newest_first[10]),
    )
    .json();
    assert_eq!(ids_of(&p0), newest_first[7..10]);
    assert_eq!(p0["has_more"], true);
    // The page cap and limit bounds.
    fake.set_page_cap(6);
    let (mut seen, mut after) = (Vec::new(), String::new());
    loop {
        let q = if after.is_empty() {
            String::new()
        } else {
            format!("&after_id={after}")
        };
        let p = an("GET", &format!("{base}/files?limit=1000{q}")).json();
        seen.extend(ids_of(&p));
        if p["has_more"] == false {
            break;
        }
        after = p["last_id"].as_str().unwrap().to_string();
    }
    assert_eq!(seen, newest_first);
    for bad in ["limit=0", "limit=1001", "limit=x"] {
        let r = an("GET", &format!("{base}/files?{bad}"));
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    }

    // The opaque cursor.
    fake.set_page_cursor_mode(true);
    let (mut seen, mut page, mut n) = (Vec::new(), None::<String>, 0);
    loop {
        let q = page
            .as_ref()
            .map_or(String::new(), |p| format!("?page={p}"));
        let p = an("GET", &format!("{base}/files{q}")).json();
        assert!(p.get("has_more").is_none(), "{p}");
        seen.extend(ids_of(&p));
        n += 1;
        match p["next_page"].as_str() {
            Some(next) => {
                assert!(next.starts_with("page_"));
                page = Some(next.to_string());
            }
            None => break,
        }
    }
    assert_eq!((seen, n), (newest_first.clone(), 4));
    let r = an("GET", &format!("{base}/files?after_id={}", newest_first[0]));
    assert_eq!(r.status, 400, "no id cursors in page mode");
}

#[test]
fn a_status_fault_is_applied_exactly_times_times_and_changes_nothing() {
    let fake = Fake::openai(KEY);
    let id = fake.add_file(FileSpec::new("batch", 1000));
    let other = fake.add_file(FileSpec::new("batch", 1001));
    fake.inject(Fault::Status {
        method: "DELETE",
        path_prefix: format!("/v1/files/{id}"),
        status: 429,
        retry_after: Some("2".into()),
        retry_after_ms: Some(1500),
        times: 2,
    });
    assert_eq!(fake.pending_faults(), 2);
    let url = format!("{}/files/{id}", fake.base_url());
    // Another path and another method are not affected.
    assert_eq!(oa("GET", &url).status, 200);
    assert_eq!(
        oa("DELETE", &format!("{}/files/{other}", fake.base_url())).status,
        200
    );
    for _ in 0..2 {
        let r = oa("DELETE", &url);
        assert_eq!(r.status, 429);
        assert_eq!(r.headers["retry-after"], "2");
        assert_eq!(r.headers["retry-after-ms"], "1500");
        assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
        assert!(
            fake.file_ids().contains(&id),
            "a fault leaves the state alone"
        );
    }
    assert_eq!(fake.pending_faults(), 0);
    assert_eq!(oa("DELETE", &url).status, 200);
    assert!(fake.file_ids().is_empty());

    // Anthropic's shapes, and "*" for any method.
    let fake = Fake::anthropic(KEY);
    fake.inject(Fault::status("*", "/v1/files", 529, 1));
    fake.inject(Fault::Status {
        method: "GET",
        path_prefix: "/v1/files".into(),
        status: 429,
        retry_after: Some("1".into()),
        retry_after_ms: None,
        times: 1,
    });
    let url = format!("{}/files", fake.base_url());
    let r = an("GET", &url);
    assert_eq!(
        (r.status, r.json()["error"]["type"].as_str()),
        (529, Some("overloaded_error"))
    );
    let r = an("GET", &url);
    assert_eq!(
        (r.status, r.json()["error"]["type"].as_str()),
        (429, Some("rate_limit_error"))
    );
    assert_eq!(r.headers["retry-after"], "1");
    assert_eq!(an("GET", &url).status, 200);
}

#[test]
fn stalls_act_before_or_after_the_wait_whether_or_not_the_client_waits() {
    let fake = Fake::openai(KEY);
    let a = fake.add_file(FileSpec::new("batch", 1000));
    let b = fake.add_file(FileSpec::new("batch", 1001));
    let auth = bearer();
    let h = [("Authorization", auth.as_str())];
    let short = Duration::from_millis(300);

    // Act, then stall: the client gives up, but the file is gone; its retry gets a 404.
    fake.inject(Fault::ActThenStall {
        method: "DELETE",
        path_prefix: "/v1/files/".into(),
        delay: Duration::from_secs(3),
        times: 1,
    });
    let url = format!("{}/files/{a}", fake.base_url());
    assert!(try_call("DELETE", &url, &h, short).is_none(), "timed out");
    assert!(!fake.file_ids().contains(&a));
    assert_eq!(oa("DELETE", &url).status, 404);

    // Stall, then act: nothing has happened when the client gives up; then it happens.
    fake.inject(Fault::StallBefore {
        method: "DELETE",
        path_prefix: "/v1/files/".into(),
        delay: Duration::from_secs(1),
        times: 1,
    });
    let url = format!("{}/files/{b}", fake.base_url());
    assert!(try_call("DELETE", &url, &h, short).is_none(), "timed out");
    assert!(fake.file_ids().contains(&b));
    super::serve::eventually(10, "the stalled delete acts", || fake.file_ids().is_empty());
}

#[test]
fn latency_and_concurrent_deletes_are_measured() {
    let fake = Fake::openai(KEY);
    let ids = fake.add_files((0..6).map(|i| FileSpec::new("batch", 1000 + i)));
    fake.set_latency(Duration::from_millis(300));
    let t = Instant::now();
    std::thread::scope(|s| {
        for id in &ids {
            let url = format!("{}/files/{id}", fake.base_url());
            s.spawn(move || assert_eq!(oa("DELETE", &url).status, 200));
        }
    });
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(
        fake.max_concurrent_deletes() >= 3,
        "{}",
        fake.max_concurrent_deletes()
    );
    assert!(fake.file_ids().is_empty());
    let log = fake.requests();
    assert_eq!(log.len(), 6);
    assert!(log.iter().all(|l| l.method == "DELETE" && l.status == 200));
}

#[test]
fn ten_thousand_files_are_added_and_listed_quickly() {
    let fake = Fake::openai(KEY);
    let t = Instant::now();
    let ids = fake.add_files((0..10_000).map(|i| FileSpec::new("batch", 1_700_000_000 + i)));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 10_000);
    // OpenAI's default limit is 10,000: one page.
    let page = oa("GET", &format!("{}/files", fake.base_url())).json();
    assert_eq!(page["data"].as_array().unwrap().len(), 10_000);
    assert_eq!(page["has_more"], false);
    assert_eq!(page["first_id"], ids[9_999].as_str());
    let r = oa("GET", &format!("{}/files?limit=10001", fake.base_url()));
    assert_eq!(r.status, 400);

    let fake = Fake::anthropic(KEY);
    fake.add_files((0..10_000).map(|i| FileSpec::new("", 1_700_000_000 + i)));
    assert_eq!(fake.file_ids().len(), 10_000);
}

#[test]
fn batches_jobs_and_vector_stores_list_page_and_delete() {
    let fake = Fake::openai(KEY);
    let base = fake.base_url();
    let input = fake.add_file(FileSpec::new("batch", 1000));
    let batches: Vec<String> = (0..5)
        .map(|i| {
            let out = (i % 2 == 0).then_some("file-out");
            fake.add_batch("completed", &input, out, None)
        })
        .collect();
    fake.set_page_cap(2);
    let (seen, pages) = openai_walk(&base, "/batches", "limit=100");
    assert_eq!(pages, 3);
    assert_eq!(
        seen.iter().collect::<BTreeSet<_>>(),
        batches.iter().collect()
    );
    let b = &oa("GET", &format!("{base}/batches?limit=1")).json()["data"][0];
    assert_eq!(b["object"], "batch");
    assert_eq!(b["input_file_id"], input.as_str());
    assert!(b["completed_at"].is_i64());

    let jobs: Vec<String> = ["succeeded", "failed", "running"]
        .iter()
        .map(|s| fake.add_fine_tuning_job(s, &input, None, &["file-res"]))
        .collect();
    let (seen, _) = openai_walk(&base, "/fine_tuning/jobs", "limit=2");
    assert_eq!(seen.iter().collect::<BTreeSet<_>>(), jobs.iter().collect());
    let page = oa("GET", &format!("{base}/fine_tuning/jobs")).json();
    assert!(page.get("first_id").is_none());
    assert_eq!(page["data"][0]["object"], "fine_tuning.job");

    let stores: Vec<String> = (0..5)
        .map(|i| {
            fake.add_vector_store(StoreSpec {
                created_at: 2000 + i,
                last_active_at: Some(3000 + i),
                expires_after_days: (i == 0).then_some(7),
                expires_at: (i == 0).then_some(3000 + 7 * 86_400),
                name: format!("store {i}"),
                metadata: BTreeMap::from([("owner".into(), "t".into())]),
            })
        })
        .collect();
    let (seen, pages) = openai_walk(&base, "/vector_stores", "order=asc");
    assert_eq!((seen.clone(), pages), (stores.clone(), 3));
    let before = oa(
        "GET",
        &format!("{base}/vector_stores?order=asc&before={}", stores[4]),
    )
    .json();
    assert_eq!(ids_of(&before), stores[2..4]);
    let s0 = oa("GET", &format!("{base}/vector_stores/{}", stores[0])).json();
    assert_eq!(s0["expires_after"]["days"], 7);
    assert_eq!(s0["last_active_at"], 3000);
    let d = oa("DELETE", &format!("{base}/vector_stores/{}", stores[0]));
    assert_eq!(
        d.json(),
        serde_json::json!({"id": stores[0], "object": "vector_store.deleted", "deleted": true})
    );
    assert_eq!(
        oa("DELETE", &format!("{base}/vector_stores/{}", stores[0])).status,
        404
    );
    assert_eq!(fake.vector_store_ids().len(), 4);
}

#[test]
fn what_the_fakes_cannot_parse_is_a_400_in_the_vendors_shape() {
    let fake = Fake::openai(KEY);
    let base = fake.base_url();
    for q in [
        "limit=0",
        "limit=abc",
        "limit=-1",
        "order=sideways",
        "after=%ZZ",
    ] {
        let r = oa("GET", &format!("{base}/files?{q}"));
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        assert_eq!(r.json()["error"]["type"], "invalid_request_error", "{q}");
    }
    let r = oa("GET", &format!("{base}/vector_stores?after=a&before=b"));
    assert_eq!(r.status, 400);
    let r = oa("POST", &format!("{base}/files"));
    assert_eq!(r.status, 404);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Invalid URL")
    );
    let r = oa("GET", &format!("{base}/files/"));
    assert_eq!(r.status, 404);
    let fake = Fake::anthropic(KEY);
    let r = an("GET", &format!("{}/files/x", fake.base_url()));
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    for q in ["limit=0", "after_id=x&before_id=y", "after_id=never-issued"] {
        let r = an("GET", &format!("{}/files?{q}", fake.base_url()));
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        assert_eq!(r.json()["error"]["type"], "invalid_request_error", "{q}");
    }
    fake.set_page_cursor_mode(true);
    let r = an("GET", &format!("{}/files?page=garbage", fake.base_url()));
    assert_eq!(r.status, 400, "{}", r.body);
}

#[test]
fn rate_limit_headers_are_sent_when_asked() {
    let fake = Fake::openai(KEY);
    let url = format!("{}/files", fake.base_url());
    assert!(
        !oa("GET", &url)
            .headers
            .contains_key("x-ratelimit-limit-requests")
    );
    fake.set_rate_limit_headers(Some(RateLimit {
        limit: 500,
        remaining: 499,
        reset: "120ms".into(),
    }));
    let r = oa("GET", &url);
    assert_eq!(r.headers["x-ratelimit-limit-requests"], "500");
    assert_eq!(r.headers["x-ratelimit-remaining-requests"], "499");
    assert_eq!(r.headers["x-ratelimit-reset-requests"], "120ms");

    let fake = Fake::anthropic(KEY);
    fake.set_rate_limit_headers(Some(RateLimit {
        limit: 50,
        remaining: 0,
        reset: "2026-01-01T00:00:01Z".into(),
    }));
    let r = an("GET", &format!("{}/files", fake.base_url()));
    assert_eq!(r.headers["anthropic-ratelimit-requests-remaining"], "0");
    assert_eq!(
        r.headers["anthropic-ratelimit-requests-reset"],
        "2026-01-01T00:00:01Z"
    );
}

/// Prism's verdict on one exchange: the answer, and the violations logged for it.
fn through(prism: &Prism, reply: Reply) -> Reply {
    if let Some(v) = reply.headers.get("sl-violations") {
        // Undeclared statuses only warn; anything else is an error.
        assert!(
            v.contains("Unable to match the returned status code"),
            "violations: {v}\n{}",
            prism.output()
        );
    }
    reply
}

#[test]
fn the_openai_fake_and_the_requests_lethe_sends_conform_to_openais_spec() {
    let fake = Fake::openai(KEY);
    let prism = Prism::proxy(&vendor_spec("openai-files.yaml"), &fake.base_url());
    eprintln!("Prism started in {:?}", prism.started_in);
    let p = prism.base_url();
    let ids = fake.add_files((0..12).map(|i| {
        let mut f = FileSpec::new(if i % 3 == 0 { "fine-tune" } else { "batch" }, 1000 + i);
        f.expires_at = (i % 2 == 0).then_some(5000 + i);
        f
    }));
    fake.set_page_cap(5);

    // Files: every query shape, paging, retrieve, delete, a second delete.
    let (seen, pages) = {
        let (mut all, mut n, mut after) = (Vec::new(), 0, None::<String>);
        loop {
            let a = after
                .as_ref()
                .map_or(String::new(), |a| format!("&after={a}"));
            let r = through(
                &prism,
                oa("GET", &format!("{p}/files?limit=10000&order=asc{a}")),
            );
            assert_eq!(r.status, 200, "{}", r.body);
            let page = r.json();
            all.extend(ids_of(&page));
            n += 1;
            if page["has_more"] == false {
                break (all, n);
            }
            after = page["last_id"].as_str().map(str::to_string);
        }
    };
    assert_eq!((seen, pages), (ids.clone(), 3));
    for q in [
        "",
        "?purpose=fine-tune",
        "?order=desc&limit=3",
        "?limit=1&after=",
    ] {
        let q = if q.ends_with('=') {
            format!("{q}{}", ids[5])
        } else {
            q.to_string()
        };
        let r = through(&prism, oa("GET", &format!("{p}/files{q}")));
        assert_eq!(r.status, 200, "{q}: {}", r.body);
    }
    let r = through(&prism, oa("GET", &format!("{p}/files/{}", ids[0])));
    assert_eq!(
        (r.status, r.json()["id"].as_str()),
        (200, Some(ids[0].as_str()))
    );
    let r = through(&prism, oa("DELETE", &format!("{p}/files/{}", ids[0])));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = through(&prism, oa("DELETE", &format!("{p}/files/{}", ids[0])));
    assert_eq!(r.status, 404, "passed through, with a warning");
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");

    // Batches, fine-tuning jobs, vector stores, with paging.
    for i in 0..4 {
        fake.add_batch(
            ["completed", "failed", "in_progress", "expired"][i],
            &ids[1],
            (i == 0).then_some(ids[2].as_str()),
            (i == 1).then_some(ids[3].as_str()),
        );
        fake.add_fine_tuning_job(
            ["succeeded", "failed", "running", "queued"][i],
            &ids[1],
            (i == 0).then_some(ids[4].as_str()),
            &[&ids[5]],
        );
    }
    let stores: Vec<String> = (0..7)
        .map(|i| {
            fake.add_vector_store(StoreSpec {
                created_at: 2000 + i,
                last_active_at: (i != 3).then_some(3000 + i),
                expires_after_days: (i % 2 == 0).then_some(30),
                expires_at: (i % 2 == 0).then_some(3000 + i + 30 * 86_400),
                name: format!("store {i}"),
                metadata: BTreeMap::from([("k".into(), "v".into())]),
            })
        })
        .collect();
    fake.set_page_cap(3);
    for (path, query) in [
        ("/batches", "limit=100"),
        ("/fine_tuning/jobs", "limit=2"),
        ("/vector_stores", "limit=100&order=asc"),
        ("/vector_stores", "limit=2"),
    ] {
        let mut after = None::<String>;
        loop {
            let a = after
                .as_ref()
                .map_or(String::new(), |a| format!("&after={a}"));
            let r = through(&prism, oa("GET", &format!("{p}{path}?{query}{a}")));
            assert_eq!(r.status, 200, "{path}?{query}{a}: {}", r.body);
            let page = r.json();
            if page["has_more"] == false {
                break;
            }
            after = ids_of(&page).last().cloned();
        }
    }
    let r = through(
        &prism,
        oa("GET", &format!("{p}/vector_stores?before={}", stores[2])),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = through(
        &prism,
        oa("GET", &format!("{p}/vector_stores/{}", stores[0])),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = through(
        &prism,
        oa("DELETE", &format!("{p}/vector_stores/{}", stores[0])),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // A 429 the spec declares for vector stores: its body and Retry-After are checked.
    fake.inject(Fault::Status {
        method: "DELETE",
        path_prefix: "/v1/vector_stores/".into(),
        status: 429,
        retry_after: Some("1".into()),
        retry_after_ms: None,
        times: 1,
    });
    let r = through(
        &prism,
        oa("DELETE", &format!("{p}/vector_stores/{}", stores[1])),
    );
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.headers["retry-after"], "1");

    assert_eq!(prism.errors(), Vec::<String>::new(), "{}", prism.output());
    assert_eq!(
        fake.requests().len(),
        fake.requests().iter().filter(|l| l.status < 500).count()
    );
}

#[test]
fn prism_refuses_what_breaks_openais_spec() {
    let fake = Fake::openai(KEY);
    let prism = Prism::proxy(&vendor_spec("openai-files.yaml"), &fake.base_url());
    let p = prism.base_url();
    // A request outside the spec is answered by Prism (422) and never reaches the fake.
    let r = oa("GET", &format!("{p}/files?order=sideways"));
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/problem+json");
    assert!(r.body.contains("UNPROCESSABLE_ENTITY"), "{}", r.body);
    let r = call("GET", &format!("{p}/files"), &[]);
    assert_eq!(r.status, 401, "no bearer token: Prism refuses it itself");
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
    // The path is the spec's, without /v1.
    assert_eq!(oa("GET", &format!("{p}/v1/files")).status, 404);
    // An empty page: the real API's null first_id / last_id break the spec (string).
    let r = oa("GET", &format!("{p}/files"));
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(
        r.body.contains("VIOLATIONS") && r.body.contains("first_id"),
        "{}",
        r.body
    );
    assert!(!prism.errors().is_empty());
}

#[test]
fn the_anthropic_fake_conforms_to_the_files_spec_written_from_its_docs() {
    let fake = Fake::anthropic(KEY);
    let prism = Prism::proxy(&vendor_spec("anthropic-files.yaml"), &fake.base_url());
    let p = prism.base_url();
    let ids = fake.add_files((0..9).map(|i| {
        let mut f = FileSpec::new("", 1_750_000_000 + i);
        f.filename = format!("doc-{i}.pdf");
        f.mime_type = "application/pdf".into();
        f.expires_at = (i % 2 == 0).then_some(1_760_000_000);
        f
    }));
    fake.set_page_cap(4);
    let mut after = None::<String>;
    let mut seen = Vec::new();
    loop {
        let a = after
            .as_ref()
            .map_or(String::new(), |a| format!("&after_id={a}"));
        let r = through(&prism, an("GET", &format!("{p}/files?limit=1000{a}")));
        assert_eq!(r.status, 200, "{}", r.body);
        let page = r.json();
        seen.extend(ids_of(&page));
        if page["has_more"] == false {
            break;
        }
        after = page["last_id"].as_str().map(str::to_string);
    }
    assert_eq!(seen.len(), 9);
    let r = through(
        &prism,
        an("GET", &format!("{p}/files?before_id={}&limit=2", ids[0])),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    fake.set_page_cursor_mode(true);
    fake.set_page_cap(5);
    let r = through(&prism, an("GET", &format!("{p}/files?limit=5")));
    let next = r.json()["next_page"].as_str().unwrap().to_string();
    let r = through(&prism, an("GET", &format!("{p}/files?limit=5&page={next}")));
    assert_eq!(r.json()["next_page"], Value::Null);
    let r = through(&prism, an("GET", &format!("{p}/files/{}", ids[0])));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = through(&prism, an("DELETE", &format!("{p}/files/{}", ids[0])));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = through(&prism, an("DELETE", &format!("{p}/files/{}", ids[0])));
    assert_eq!(r.status, 404, "{}", r.body);
    fake.inject(Fault::Status {
        method: "DELETE",
        path_prefix: "/v1/files/".into(),
        status: 429,
        retry_after: Some("3".into()),
        retry_after_ms: None,
        times: 1,
    });
    let r = through(&prism, an("DELETE", &format!("{p}/files/{}", ids[1])));
    assert_eq!((r.status, r.headers["retry-after"].as_str()), (429, "3"));
    fake.inject(Fault::status("GET", "/v1/files", 529, 1));
    let r = through(&prism, an("GET", &format!("{p}/files")));
    assert_eq!(r.status, 529, "{}", r.body);
    assert_eq!(
        prism.violations(),
        Vec::<String>::new(),
        "{}",
        prism.output()
    );

    // And the spec catches a request without the Files beta before it reaches the fake.
    let before = fake.requests().len();
    let r = call(
        "GET",
        &format!("{p}/files"),
        &[("x-api-key", KEY), ("anthropic-version", ANTHROPIC_VERSION)],
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(fake.requests().len(), before);
}

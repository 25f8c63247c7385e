//! The vendor connector's benchmark (`scripts/bench-vendor` runs it; ignored otherwise):
//! an `openai_files` sweep of BENCH_FILES due files on the fake with BENCH_LATENCY_MS added
//! to every request, against the floor: the same number of GET and DELETE requests issued
//! by a plain loop (pages read one after another, DELETEs at the sweep's concurrency) on a
//! second fake seeded the same way. Prints a markdown table; asserts only that every file
//! was deleted by both (a benchmark of failures is not a benchmark).

use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};

use super::vendor_fake::{Fake, FileSpec};
use super::{Tmp, run_env};

const KEY: &str = "sk-bench-0000000000000000";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn seeded(n: usize, latency: Duration) -> Fake {
    let fake = Fake::openai(KEY);
    fake.set_page_cap(1_000);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    fake.add_files((0..n).map(|i| FileSpec::new("batch_output", t - 40 * 86_400 - i as i64)));
    fake.set_latency(latency);
    fake
}

#[test]
#[ignore = "a benchmark: scripts/bench-vendor runs it"]
fn vendor_sweep_against_a_plain_request_loop() {
    let n = env_num("BENCH_FILES", 10_000) as usize;
    let latency = Duration::from_millis(env_num("BENCH_LATENCY_MS", 50));
    let in_flight = env_num("BENCH_IN_FLIGHT", 8) as usize;

    // The sweep.
    let dir = Tmp::new("vendor-bench");
    let fake = seeded(n, latency);
    let cfg = dir.path("lethe.toml");
    std::fs::write(
        &cfg,
        format!(
            "[categories.v]\nretention = \"30d\"\n[[targets]]\nname = \"openai\"\ntype = \"openai_files\"\ncategory = \"v\"\napi_key_env = \"BENCH_KEY\"\nbase_url = \"{}\"\ndeletes_in_flight = {in_flight}\n",
            fake.base_url()
        ),
    )
    .unwrap();
    let env = [("BENCH_KEY", KEY)];
    super::ensure_init_env(&cfg, &env);
    let start = Instant::now();
    let r = run_env(&cfg, &env, &["sweep", "--apply", "--json"]);
    let sweep = start.elapsed();
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(fake.file_ids().is_empty(), "the sweep deleted every file");
    let log = fake.requests();
    let gets = log.iter().filter(|l| l.method == "GET").count();
    let deletes = log.iter().filter(|l| l.method == "DELETE").count();

    // The floor: the same numbers of requests from a plain loop.
    let floor_fake = seeded(n, latency);
    let base = floor_fake.base_url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let floor = rt.block_on(async {
        let http = reqwest::Client::new();
        let auth = format!("Bearer {KEY}");
        let start = Instant::now();
        let mut ids: Vec<String> = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..gets {
            let url = match &after {
                Some(a) => format!("{base}/files?limit=10000&order=asc&after={a}"),
                None => format!("{base}/files?limit=10000&order=asc"),
            };
            let body = http
                .get(&url)
                .header("authorization", &auth)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let page: Vec<String> = v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["id"].as_str().unwrap().to_string())
                .collect();
            after = page.last().cloned().or(after);
            ids.extend(page);
        }
        let results: Vec<u16> = stream::iter(ids.into_iter().take(deletes))
            .map(|id| {
                let (http, auth, base) = (http.clone(), auth.clone(), base.clone());
                async move {
                    http.delete(format!("{base}/files/{id}"))
                        .header("authorization", auth)
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0)
                }
            })
            .buffer_unordered(in_flight)
            .collect()
            .await;
        assert!(
            results.iter().all(|s| *s == 200),
            "the floor's deletes all succeeded"
        );
        start.elapsed()
    });
    assert!(
        floor_fake.file_ids().is_empty(),
        "the floor deleted every file"
    );

    println!(
        "\n| files | latency | DELETEs in flight | GET requests | DELETE requests | lethe sweep --apply | plain loop (floor) | sweep / floor |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n| {n} | {} ms | {in_flight} | {gets} | {deletes} | {:.2} s | {:.2} s | {:.2} |",
        latency.as_millis(),
        sweep.as_secs_f64(),
        floor.as_secs_f64(),
        sweep.as_secs_f64() / floor.as_secs_f64()
    );
}

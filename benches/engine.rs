//! Engine throughput: 1,000 incidents across 1,000 simulated servers with zero action latency.
//!
//! Run with `cargo bench --bench engine`. It starts the real service in-process on a loopback port, posts one
//! signed CTP alert per server (each server's app pool is stuck, so every incident runs probe, recycle, probe),
//! waits until every incident is recovered, and reports incidents finished per second and peak memory.
//! It reports; it asserts nothing about time.

use std::time::Instant;

use healthset_responder::auth::{sign_standard, Secret};
use healthset_responder::config::Config;
use healthset_responder::service::Service;

const SERVERS: usize = 1000;
const CONCURRENCY: usize = 32;
const SECRET: &str = "whsec_YmVuY2htYXJrcyBvbmx5LCBuZXZlciBpbiBzZXJ2aWNl";
const TOKEN: &str = "bench-admin-token-0123456789";

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let data_dir = tempfile::tempdir()?;
    let mut config = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n[[senders]]\nname = \"bench\"\nsecrets = [\"{SECRET}\"]\n[admin]\ntokens = [\"{TOKEN}\"]\n",
        data_dir.path().display().to_string()
    );
    for n in 0..SERVERS {
        config
            .push_str(&format!("[[servers]]\nname = \"cas{n:04}.contoso.com\"\nrole = \"cas\"\n"));
    }
    config.push_str("[simulator]\naction_latency = \"0s\"\n");
    for n in 0..SERVERS {
        config.push_str(&format!(
            "[simulator.servers.\"cas{n:04}.contoso.com\"]\nfault = \"app_pool\"\n"
        ));
    }
    let settings = Config::parse(&config)?.resolve(|_| None)?;
    let service = Service::start(settings).await?;
    let url = format!("http://{}", service.addr);
    let http = reqwest::Client::new();
    let key = Secret::parse_whsec(SECRET).map_err(anyhow::Error::msg)?;

    let started = Instant::now();
    let mut posts = tokio::task::JoinSet::new();
    for chunk in (0..SERVERS).collect::<Vec<_>>().chunks(SERVERS.div_ceil(CONCURRENCY)) {
        let (http, url, key, chunk) = (http.clone(), url.clone(), key.clone(), chunk.to_vec());
        posts.spawn(async move {
            for n in chunk {
                let body = format!(
                    r#"{{"health_set":"ActiveSync","server":"cas{n:04}.contoso.com","monitor":"ActiveSyncCTPMonitor","message":"_Cas:cas{n:04}.contoso.com_Mbx:mbx01.contoso.com_"}}"#
                );
                let id = format!("msg_{n}");
                let ts = chrono::Utc::now().timestamp();
                let response = http
                    .post(format!("{url}/v1/alerts"))
                    .header("content-type", "application/json")
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", ts.to_string())
                    .header("webhook-signature", sign_standard(&key, &id, ts, body.as_bytes()))
                    .body(body)
                    .send()
                    .await?;
                anyhow::ensure!(response.status() == 202, "alert {n} refused: {}", response.status());
            }
            anyhow::Ok(())
        });
    }
    while let Some(result) = posts.join_next().await {
        result??;
    }
    let posted = started.elapsed();

    // Poll for any incident not yet final, one row per state, so that watching costs the engine little.
    'poll: loop {
        for state in ["queued", "running", "waiting"] {
            let page: serde_json::Value = http
                .get(format!("{url}/v1/incidents?limit=1&state={state}"))
                .bearer_auth(TOKEN)
                .send()
                .await?
                .json()
                .await?;
            if page["incidents"].as_array().is_some_and(|rows| !rows.is_empty()) {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue 'poll;
            }
        }
        break;
    }
    let finished = started.elapsed();
    let recovered: serde_json::Value = http
        .get(format!("{url}/v1/incidents?limit=1000&state=recovered"))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .json()
        .await?;
    let recovered = recovered["incidents"].as_array().map_or(0, Vec::len);
    service.stop().await?;

    println!(
        "engine benchmark: {SERVERS} incidents on {SERVERS} simulated servers, zero action latency"
    );
    println!("  alerts posted in      {:>8.3} s", posted.as_secs_f64());
    println!(
        "  all finished in       {:>8.3} s ({recovered} recovered, 3 journaled steps each)",
        finished.as_secs_f64()
    );
    println!("  incidents finished/s  {:>8.0}", SERVERS as f64 / finished.as_secs_f64());
    println!(
        "  peak memory (VmHWM)   {:>8} KiB",
        peak_rss_kib().map_or("n/a".into(), |k| k.to_string())
    );
    Ok(())
}

/// Peak resident set size of this process, from /proc (Linux only).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

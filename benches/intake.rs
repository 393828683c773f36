//! Intake throughput against a bare hyper server, in the same run, with the same load.
//!
//! Run with `cargo bench --bench intake`. It starts two processes on loopback: the real service
//! (`healthset-responder serve`, automation paused so that only intake is measured) and a bare hyper server that
//! reads the body and answers 202 (this benchmark binary run with `--bare`). Then, from this process, 32 keep-alive
//! connections post signed ~1.5 KB native alerts to each in turn for a fixed time, and it prints requests/s, p50 and
//! p99 for both, their ratio, the service's peak memory, and whether every accepted alert is on disk (it counts the
//! rows in the SQLite file afterwards). It reports; it asserts nothing about time.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use healthset_responder::auth::{sign_standard, Secret};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

const CONNECTIONS: usize = 32;
const DURATION: Duration = Duration::from_secs(8);
const WARM_UP: Duration = Duration::from_secs(1);
const SECRET: &str = "whsec_YmVuY2htYXJrcyBvbmx5LCBuZXZlciBpbiBzZXJ2aWNl";

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if std::env::args().any(|a| a == "--bare") {
        return runtime.block_on(bare_server());
    }
    runtime.block_on(run())
}

/// The baseline: read the whole body, answer 202 with a small JSON body.
async fn bare_server() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                let _body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                Ok::<_, Infallible>(Response::builder().status(StatusCode::ACCEPTED).body(Full::new(Bytes::from_static(b"{\"alerts\":[]}"))).unwrap())
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

struct Process {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a process and reads the address it prints (the bare server) or logs (the service).
fn spawn(command: &mut Command) -> anyhow::Result<Process> {
    use std::io::BufRead;
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (found, address) = std::sync::mpsc::channel::<String>();
    let found2 = found.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = found.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("addr=").nth(1) {
                let _ = found2.send(addr.split_whitespace().next().unwrap_or_default().to_owned());
            }
        }
    });
    let addr = address.recv_timeout(Duration::from_secs(30))?.parse()?;
    Ok(Process { child, addr })
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| line.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// An alert of about 1.5 KB, like a CTP probe failure with its diagnostics.
fn alert_body(n: u64) -> String {
    let padding = "x".repeat(1100);
    format!(
        r#"{{"health_set":"ActiveSync","server":"cas{:03}.contoso.com","monitor":"ActiveSyncCTPMonitor","message":"Error occurred: User: HealthMailbox7b3c4a1e@contoso.com Response: 503 Service Unavailable Diagnostics header:_Cas:CAS01.contoso.com_Mbx:MBX01.contoso.com_Dc:DC01.contoso.com_ request {n} {padding}","raised_at":"2026-11-26T10:00:00Z"}}"#,
        n % 500
    )
}

struct Measured {
    accepted: u64,
    refused: u64,
    latencies_us: Vec<u32>,
    elapsed: Duration,
}

/// Drives one server: 32 connections, each posting signed alerts back to back until the time is up.
async fn drive(addr: SocketAddr, label: &'static str) -> anyhow::Result<Measured> {
    let key = Secret::parse_whsec(SECRET).map_err(anyhow::Error::msg)?;
    let next = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS {
        let (key, next, measuring, stop) = (key.clone(), next.clone(), measuring.clone(), stop.clone());
        tasks.spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            let (mut accepted, mut refused, mut latencies) = (0u64, 0u64, Vec::with_capacity(100_000));
            while !stop.load(Ordering::Relaxed) {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let body = alert_body(n);
                let id = format!("msg_{label}_{n}");
                let timestamp = chrono::Utc::now().timestamp();
                let request = Request::post("/v1/alerts")
                    .header("host", "127.0.0.1")
                    .header("content-type", "application/json")
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", timestamp.to_string())
                    .header("webhook-signature", sign_standard(&key, &id, timestamp, body.as_bytes()))
                    .body(Full::new(Bytes::from(body)))?;
                let started = Instant::now();
                let response = sender.send_request(request).await?;
                let status = response.status();
                response.into_body().collect().await?;
                if measuring.load(Ordering::Relaxed) {
                    latencies.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    if status == StatusCode::ACCEPTED {
                        accepted += 1;
                    } else {
                        refused += 1;
                    }
                }
            }
            anyhow::Ok((accepted, refused, latencies))
        });
    }
    tokio::time::sleep(WARM_UP).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(DURATION).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut result = Measured { accepted: 0, refused: 0, latencies_us: Vec::new(), elapsed };
    while let Some(task) = tasks.join_next().await {
        let (accepted, refused, latencies) = task??;
        result.accepted += accepted;
        result.refused += refused;
        result.latencies_us.extend(latencies);
    }
    result.latencies_us.sort_unstable();
    Ok(result)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

async fn run() -> anyhow::Result<()> {
    let data_dir = tempfile::tempdir()?;
    let config = data_dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n[[senders]]\nname = \"bench\"\nsecrets = [\"{SECRET}\"]\n[admin]\ntokens = [\"bench-admin-token-0123456789\"]\n",
            data_dir.path().join("data").display().to_string()
        ),
    )?;
    // Only intake is measured: with automation paused, every alert opens or joins an incident that waits queued.
    healthset_responder::store::Store::open(&data_dir.path().join("data"))?.set_paused(Some("intake benchmark".into())).await?;

    let service = spawn(Command::new(env!("CARGO_BIN_EXE_healthset-responder")).args(["serve", "--config"]).arg(&config).env("RUST_LOG", "info"))?;
    let bare = spawn(Command::new(std::env::current_exe()?).arg("--bare"))?;

    let bare_result = drive(bare.addr, "bare").await?;
    let service_result = drive(service.addr, "service").await?;
    let peak = peak_rss_kib(service.child.id());
    drop(service);

    let db = rusqlite::Connection::open(data_dir.path().join("data").join(healthset_responder::store::DB_FILE))?;
    let rows: u64 = db.query_row("SELECT COUNT(*) FROM alerts", [], |row| row.get(0))?;

    let rate = |r: &Measured| r.accepted as f64 / r.elapsed.as_secs_f64();
    println!(
        "intake benchmark: {CONNECTIONS} connections, signed ~1.5 KB native alerts, {} s per server after {} s warm-up",
        DURATION.as_secs(),
        WARM_UP.as_secs()
    );
    println!("  {:<10} {:>12} {:>10} {:>10} {:>10}", "server", "requests/s", "p50 ms", "p99 ms", "refused");
    for (name, result) in [("bare hyper", &bare_result), ("service", &service_result)] {
        println!(
            "  {:<10} {:>12.0} {:>10.2} {:>10.2} {:>10}",
            name,
            rate(result),
            percentile(&result.latencies_us, 0.50),
            percentile(&result.latencies_us, 0.99),
            result.refused
        );
    }
    println!("  ratio service/bare   {:.2}", rate(&service_result) / rate(&bare_result));
    println!("  service peak memory  {} KiB", peak.map_or("n/a".into(), |k| k.to_string()));
    println!("  alerts on disk       {rows} (service answered 202 to at least {} while measured)", service_result.accepted);
    Ok(())
}

//! Intake throughput against a bare hyper server, in the same run, with the same load.
//!
//! Run with `cargo bench --bench intake`. It starts three kinds of process on loopback: the real service
//! (`healthset-responder serve`, automation paused so that only intake is measured), a bare hyper server that reads
//! the body and answers 202 (this benchmark binary run with `--bare`), and, for each of the two servers in turn, a load
//! generator (this binary run with `--load ADDR LABEL`): 32 keep-alive connections posting signed ~1.5 KB native
//! alerts for a fixed time, which reports what it measured as one JSON line on its standard output. The load comes
//! from a process of its own, as it would from wrk, so that this process neither shares a runtime with it nor
//! competes for the servers' cores beyond what any client would. It prints requests/s, p50 and p99 for both
//! servers, their ratio, the service's peak memory, and whether every accepted alert is kept (it counts the rows in
//! the store after the service has been killed). The service runs on SQLite, then, when PostgreSQL's server binaries
//! are installed, on a throwaway PostgreSQL server (the tests' own, `tests/api/postgres/cluster.rs`) with the same
//! load. It reports; it asserts nothing about time. Every process it starts is ended through its own handle.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use healthset_responder::auth::{sign_standard, Secret};
use healthset_responder::store::{Store, StoreSettings};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

/// The throwaway PostgreSQL server the tests use, for the PostgreSQL figure, and the test CA it needs.
#[path = "../tests/api/postgres/cluster.rs"]
mod cluster;
#[path = "../tests/api/pki.rs"]
mod pki;

const CONNECTIONS: usize = 32;
const DURATION: Duration = Duration::from_secs(5);
const WARM_UP: Duration = Duration::from_secs(1);
/// How long a process may take to start, or a load generator to finish after its time is up.
const GRACE: Duration = Duration::from_secs(30);
const SECRET: &str = "whsec_YmVuY2htYXJrcyBvbmx5LCBuZXZlciBpbiBzZXJ2aWNl";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bare") {
        return tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(bare_server());
    }
    if let Some(at) = args.iter().position(|a| a == "--load") {
        let (Some(addr), Some(label)) = (args.get(at + 1), args.get(at + 2)) else {
            anyhow::bail!("usage: --load ADDR LABEL");
        };
        let report = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(load(addr.parse()?, label))?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    run()
}

/// The baseline: read the whole body, answer 202 with a small JSON body.
async fn bare_server() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                let _body =
                    request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                Ok::<_, Infallible>(
                    Response::builder()
                        .status(StatusCode::ACCEPTED)
                        .body(Full::new(Bytes::from_static(b"{\"alerts\":[]}")))
                        .unwrap(),
                )
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A process this benchmark started: its output, line by line, and its handle, through which it is ended when
/// dropped.
struct Process {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Process {
    /// Starts a process; every line it writes, on either stream, arrives on `lines`.
    fn spawn(command: &mut Command) -> anyhow::Result<Process> {
        use std::io::BufRead;
        let mut child =
            command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let (sender, lines) = mpsc::channel::<String>();
        let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout is piped"));
        let stderr = std::io::BufReader::new(child.stderr.take().expect("stderr is piped"));
        for stream in [Box::new(stdout) as Box<dyn BufRead + Send>, Box::new(stderr)] {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in stream.lines().map_while(Result::ok) {
                    let _ = sender.send(line);
                }
            });
        }
        Ok(Process { child, lines })
    }

    /// The first line for which `pick` finds something, within `within`.
    fn find<T>(
        &self,
        within: Duration,
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).map_err(|_| {
                anyhow::anyhow!(
                    "process {} said nothing expected within {within:?}",
                    self.child.id()
                )
            })?;
            if let Some(found) = pick(&line) {
                return Ok(found);
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// An alert of about 1.5 KB: what SCOM shows for a failed ActiveSync probe (as in
/// `tests/fixtures/scom/ctp-firing.json`, on one line), for one of 500 CAS servers, with a health mailbox and a
/// request id of its own, as hex digits that repeat nothing. Its bytes compress as a real alert's do, no better.
fn alert_body(n: u64) -> String {
    let (cas, mbx) = (n % 500, n % 16);
    let (mailbox, request) = (mix(n), mix(!n));
    let (r1, r2, r3) = (request >> 32, (request >> 16) & 0xffff, request & 0xffff);
    let (latency, execution) = (20_000 + request % 10_000, mix(n ^ mailbox) >> 1);
    let message = format!(
        "The ActiveSync health set on CAS{cas:03}.contoso.com is unhealthy. The ActiveSync client test probe \
         (ActiveSyncCTPProbe) failed 5 consecutive times. Incident start time: 11/26/2026 9:58:12 AM. Last failed \
         result: Failing Component - ActiveSync. Failure Reason - FAIL/HTTP:503/EASStatus:0. Error occurred: User: \
         HealthMailbox{mailbox:016x}@contoso.com Password: ****** Target: \
         https://cas{cas:03}.contoso.com/Microsoft-Server-ActiveSync Response: 503 Service Unavailable Diagnostics \
         header:[ClientAccessServer=CAS{cas:03},BackEndServer=mbx{mbx:02}.contoso.com,\
         RequestId={r1:08x}-{r2:04x}-4{:03x}-a{:03x}-{:012x},TimeStamp=11/26/2026 9:58:11 AM]\
         _Cas:CAS{cas:03}.contoso.com_Mbx:MBX{mbx:02}.contoso.com_Dc:DC01.contoso.com_Proto:EAS Reason: Storage \
         Transient. Exception: System.Net.WebException: The remote server returned an error: (503) Server \
         Unavailable. at System.Net.HttpWebRequest.GetResponse() at \
         Microsoft.Exchange.Monitoring.ActiveMonitoring.ActiveSync.Probes.ActiveSyncProbeBase.DoWork(CancellationToken \
         cancellationToken) at Microsoft.Exchange.WorkerTaskFramework.WorkItem.Execute(CancellationToken joinedToken) \
         Probe latency: {latency} ms. Probe result: ActiveSyncCTPProbe/HealthMailbox{mailbox:016x} failed on \
         CAS{cas:03} at 11/26/2026 9:58:11 AM after 3 attempts; the last success was at 11/26/2026 9:41:05 AM. \
         Execution id: {execution}. Probe run {n}.",
        r3 & 0xfff,
        (mailbox >> 20) & 0xfff,
        mailbox & 0xffff_ffff_ffff,
    );
    format!(
        r#"{{"health_set":"ActiveSync","server":"cas{cas:03}.contoso.com","monitor":"ActiveSyncCTPMonitor","message":"{message}","raised_at":"2026-11-26T10:00:00Z"}}"#
    )
}

/// SplitMix64: distinct, evenly spread bits for each `n`.
fn mix(n: u64) -> u64 {
    let z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What a load generator measured, as the one JSON line it prints.
#[derive(Debug, Serialize, Deserialize)]
struct Report {
    /// Answers with 202 while measured.
    accepted: u64,
    /// Other answers while measured.
    refused: u64,
    /// Answers with 202 in all, the warm-up included: what must be on disk afterwards.
    acknowledged: u64,
    seconds: f64,
    requests_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// How many different alert bodies the load generator posts, made before it starts: a body made per request would
/// cost the generator, which shares the cores with the server it loads, more than the bare server spends on it.
/// Each delivery still has a webhook-id of its own.
const BODIES: u64 = 1000;

/// The load generator: 32 connections, each posting signed alerts back to back until the time is up.
async fn load(addr: SocketAddr, label: &str) -> anyhow::Result<Report> {
    let key = Secret::parse_whsec(SECRET).map_err(anyhow::Error::msg)?;
    let bodies: Arc<[Bytes]> = (0..BODIES).map(|n| Bytes::from(alert_body(n))).collect();
    let next = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS {
        let (key, next, measuring, stop, label, bodies) = (
            key.clone(),
            next.clone(),
            measuring.clone(),
            stop.clone(),
            label.to_owned(),
            bodies.clone(),
        );
        tasks.spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            let (mut accepted, mut refused, mut acknowledged, mut latencies) =
                (0u64, 0u64, 0u64, Vec::with_capacity(100_000));
            while !stop.load(Ordering::Relaxed) {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let body = bodies[(n % BODIES) as usize].clone();
                let id = format!("msg_{label}_{n}");
                let timestamp = chrono::Utc::now().timestamp();
                let request = Request::post("/v1/alerts")
                    .header("host", "127.0.0.1")
                    .header("content-type", "application/json")
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", timestamp.to_string())
                    .header("webhook-signature", sign_standard(&key, &id, timestamp, &body))
                    .body(Full::new(body))?;
                let started = Instant::now();
                let response = sender.send_request(request).await?;
                let status = response.status();
                response.into_body().collect().await?;
                if status == StatusCode::ACCEPTED {
                    acknowledged += 1;
                }
                if measuring.load(Ordering::Relaxed) {
                    latencies.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    if status == StatusCode::ACCEPTED {
                        accepted += 1;
                    } else {
                        refused += 1;
                    }
                }
            }
            anyhow::Ok((accepted, refused, acknowledged, latencies))
        });
    }
    tokio::time::sleep(WARM_UP).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(DURATION).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (mut accepted, mut refused, mut acknowledged, mut latencies) = (0, 0, 0, Vec::new());
    while let Some(task) = tasks.join_next().await {
        let (a, r, k, l) = task??;
        (accepted, refused, acknowledged) = (accepted + a, refused + r, acknowledged + k);
        latencies.extend(l);
    }
    latencies.sort_unstable();
    Ok(Report {
        accepted,
        refused,
        acknowledged,
        seconds: elapsed.as_secs_f64(),
        requests_per_s: accepted as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
    })
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

/// Loads one server from a load generator of its own and returns what that process reported.
fn drive(addr: SocketAddr, label: &str) -> anyhow::Result<Report> {
    let generator = Process::spawn(
        Command::new(std::env::current_exe()?).arg("--load").arg(addr.to_string()).arg(label),
    )?;
    let report = generator
        .find(WARM_UP + DURATION + GRACE, |line| serde_json::from_str::<Report>(line).ok())?;
    Ok(report)
}

/// One run of the service on one store: what the load measured, its peak memory, and how many alerts the store
/// holds once the service has been killed.
struct Measured {
    result: Report,
    peak: Option<u64>,
    kept: u64,
}

/// Where the service keeps its alerts in a run: its `[store]` section, and how to count what it kept.
struct Backend<'a> {
    name: &'a str,
    store_toml: String,
    settings: StoreSettings,
    kept: Box<dyn Fn() -> anyhow::Result<u64> + 'a>,
}

/// Starts the service on `backend` with automation paused, loads it, kills it, and counts what it kept.
fn measure(dir: &std::path::Path, backend: Backend<'_>) -> anyhow::Result<Measured> {
    let data = dir.join(backend.name);
    let config = dir.join(format!("{}.toml", backend.name));
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n[[senders]]\nname = \"bench\"\nsecrets = [\"{SECRET}\"]\n[admin]\ntokens = [\"bench-admin-token-0123456789\"]\n{}",
            data.display().to_string(),
            backend.store_toml
        ),
    )?;
    // Only intake is measured: with automation paused, every alert opens or joins an incident that waits queued.
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
        let store = Store::connect(&backend.settings, &data).await?;
        store.set_paused(Some("intake benchmark".into())).await?;
        anyhow::Ok(())
    })?;
    let service = Process::spawn(
        Command::new(env!("CARGO_BIN_EXE_healthset-responder"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info"),
    )?;
    let addr: SocketAddr = service.find(GRACE, |line| {
        line.split("addr=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
    })?;
    let result = drive(addr, backend.name)?;
    let peak = peak_rss_kib(service.child.id());
    // Killed, not stopped: what a 202 promised must be kept whatever happens to the process afterwards.
    drop(service);
    let kept = (backend.kept)()?;
    Ok(Measured { result, peak, kept })
}

fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bare = Process::spawn(Command::new(std::env::current_exe()?).arg("--bare"))?;
    let bare_addr: SocketAddr = bare.find(GRACE, |line| line.trim().parse().ok())?;
    let bare_result = drive(bare_addr, "bare")?;
    drop(bare);

    let sqlite_file = dir.path().join("sqlite").join(healthset_responder::store::DB_FILE);
    let sqlite = measure(
        dir.path(),
        Backend {
            name: "sqlite",
            store_toml: String::new(),
            settings: StoreSettings::Sqlite,
            kept: Box::new(|| {
                let db = rusqlite::Connection::open(&sqlite_file)?;
                Ok(db.query_row("SELECT COUNT(*) FROM alerts", [], |row| row.get(0))?)
            }),
        },
    )?;
    // The same load on a PostgreSQL server of its own (fsync on), when its binaries are installed.
    let postgres = if cluster::installed() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let url = runtime.block_on(cluster::database());
        let store_toml = format!("[store]\nbackend = \"postgres\"\nurl = {url:?}\n");
        let settings = StoreSettings::Postgres { url: url.clone(), lease: Duration::from_secs(30) };
        let kept = Box::new(|| {
            runtime.block_on(async {
                let db = cluster::connect(&url).await;
                let rows: i64 = db.query_one("SELECT COUNT(*) FROM alerts", &[]).await?.get(0);
                anyhow::Ok(rows as u64)
            })
        });
        Some(measure(dir.path(), Backend { name: "postgres", store_toml, settings, kept })?)
    } else {
        None
    };

    println!(
        "intake benchmark: {CONNECTIONS} connections from a load generator process, signed ~1.5 KB native alerts, {} s per server after {} s warm-up",
        DURATION.as_secs(),
        WARM_UP.as_secs()
    );
    println!(
        "  {:<20} {:>12} {:>10} {:>10} {:>10} {:>8} {:>12}",
        "server", "requests/s", "p50 ms", "p99 ms", "refused", "ratio", "peak KiB"
    );
    let bare_rate = bare_result.requests_per_s;
    let rows = [("bare hyper", &bare_result, None)]
        .into_iter()
        .chain([("service, SQLite", &sqlite.result, Some(sqlite.peak))])
        .chain(postgres.iter().map(|pg| ("service, PostgreSQL", &pg.result, Some(pg.peak))));
    for (name, result, peak) in rows {
        let ratio = result.requests_per_s / bare_rate;
        let peak = peak.map_or(String::new(), |peak| peak.map_or("n/a".into(), |k| k.to_string()));
        println!(
            "  {:<20} {:>12.0} {:>10.2} {:>10.2} {:>10} {:>8.2} {:>12}",
            name, result.requests_per_s, result.p50_ms, result.p99_ms, result.refused, ratio, peak
        );
    }
    if postgres.is_none() {
        println!("  (PostgreSQL not measured: no server binaries under /usr/lib/postgresql)");
    }
    for (name, measured) in [("SQLite", Some(&sqlite)), ("PostgreSQL", postgres.as_ref())] {
        let Some(measured) = measured else { continue };
        println!(
            "  {name}: {} alerts kept of {} acknowledged with 202 (warm-up included)",
            measured.kept, measured.result.acknowledged
        );
        anyhow::ensure!(
            measured.kept >= measured.result.acknowledged,
            "{name}: {} acknowledged alerts were not kept",
            measured.result.acknowledged - measured.kept
        );
    }
    Ok(())
}

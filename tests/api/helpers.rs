//! Starts the real service on a free loopback port with a fresh data directory, and talks to it over HTTP.

use std::path::PathBuf;

use healthset_responder::auth::{self, Secret};
use healthset_responder::config::{Config, Settings};
use healthset_responder::service::Service;
use serde_json::Value;

pub const SECRET: &str = "whsec_aW50ZWdyYXRpb24gdGVzdHMgb25seTogMzIgYnl0ZXM=";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The configuration every test starts from; tests append TOML to change it.
pub fn base_config(data_dir: &std::path::Path) -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
data_dir = {data_dir:?}
max_body_bytes = 16384

[[senders]]
name = "scom"
secrets = ["{SECRET}"]

[admin]
tokens = ["{ADMIN_TOKEN}"]
"#
    )
}

/// `[timing]` for tests: no warm-up, and a failover checks copy status every 50 ms for 200 ms (four checks after
/// the first, the remaining copies moved explicitly after two), so that waits take milliseconds. A test that writes
/// its own `[timing]` keeps its keys and gets these for the others.
pub const TEST_TIMING: [(&str, &str); 3] =
    [("warm_up", "0s"), ("poll_interval", "50ms"), ("failover_timeout", "200ms")];

/// `extra_toml` with [`TEST_TIMING`] merged into its `[timing]` table (or added as one).
pub fn with_test_timing(extra_toml: &str) -> String {
    let missing: String = TEST_TIMING
        .iter()
        .filter(|(key, _)| !extra_toml.contains(&format!("{key} =")))
        .map(|(key, value)| format!("{key} = \"{value}\"\n"))
        .collect();
    match extra_toml.split_once("[timing]\n") {
        Some((before, after)) => format!("{before}[timing]\n{missing}{after}"),
        None => format!("{extra_toml}\n[timing]\n{missing}"),
    }
}

pub struct TestApp {
    pub service: Option<Service>,
    pub url: String,
    pub data_dir: tempfile::TempDir,
    pub config: String,
    pub http: reqwest::Client,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with("").await
}

pub async fn spawn_app_with(extra_toml: &str) -> TestApp {
    spawn_app_with_root("", extra_toml).await
}

/// Like [`spawn_app_with`], with `root_toml` holding top-level keys (which TOML wants before any table).
pub async fn spawn_app_with_root(root_toml: &str, extra_toml: &str) -> TestApp {
    let data_dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{root_toml}\n{}\n{}{}",
        base_config(data_dir.path()),
        with_test_timing(extra_toml),
        store_under_test(extra_toml).await
    );
    let service = Service::start(settings(&config)).await.expect("service starts");
    TestApp {
        url: format!("http://{}", service.addr),
        service: Some(service),
        data_dir,
        config,
        http: reqwest::Client::new(),
    }
}

/// The environment variable that runs the suite on PostgreSQL: `HSR_TEST_STORE=postgres`.
pub const STORE_UNDER_TEST: &str = "HSR_TEST_STORE";

/// Whether this run keeps the tests' services on PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var(STORE_UNDER_TEST).is_ok_and(|store| store == "postgres")
}

/// The `[store]` a test's service runs on: none (SQLite in its data directory) unless the suite runs on
/// PostgreSQL, where each service gets a fresh database of its own in the test cluster. A test about one backend
/// names it in its own `[store]`, which is kept.
pub async fn store_under_test(extra_toml: &str) -> String {
    if !on_postgres() || extra_toml.contains("[store]") {
        return String::new();
    }
    let url = crate::postgres::cluster::database().await;
    format!("\n[store]\nbackend = \"postgres\"\nurl = {url:?}\nlease = \"3s\"\n")
}

/// The PostgreSQL database a test's service runs on, if it runs on one: what a test reads the rows from.
pub fn postgres_url(app: &TestApp) -> Option<String> {
    match settings(&app.config).store {
        healthset_responder::config::StoreSettings::Postgres { url, .. } => Some(url),
        healthset_responder::config::StoreSettings::Sqlite => None,
    }
}

pub fn settings(toml: &str) -> Settings {
    Config::parse(toml)
        .expect("test config parses")
        .resolve(|_| None)
        .expect("test config resolves")
}

impl TestApp {
    /// Talks to a service running elsewhere (another process).
    pub fn attached(url: &str) -> TestApp {
        TestApp {
            service: None,
            url: url.to_owned(),
            data_dir: tempfile::tempdir().unwrap(),
            config: String::new(),
            http: reqwest::Client::new(),
        }
    }

    /// Stops the service gracefully and starts it again on the same data directory (on a new port).
    pub async fn restart(&mut self) {
        self.service.take().expect("service running").stop().await.expect("clean stop");
        let service = Service::start(settings(&self.config)).await.expect("service restarts");
        self.url = format!("http://{}", service.addr);
        self.service = Some(service);
    }

    /// Posts a body to an intake route, signed with the test secret.
    pub async fn post_signed(&self, path: &str, body: &str) -> reqwest::Response {
        let id = format!("msg_{}", uuid_like());
        self.post_signed_as(path, body, &id, chrono::Utc::now().timestamp(), SECRET).await
    }

    pub async fn post_signed_as(
        &self,
        path: &str,
        body: &str,
        id: &str,
        timestamp: i64,
        secret: &str,
    ) -> reqwest::Response {
        post_signed_to(&self.http, &format!("{}{path}", self.url), body, id, timestamp, secret)
            .await
    }

    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// Posts `body` to `url` signed as Standard Webhooks with `secret`, delivery id `id` and `timestamp`: what a
/// sender does, usable from tasks of its own.
pub async fn post_signed_to(
    http: &reqwest::Client,
    url: &str,
    body: &str,
    id: &str,
    timestamp: i64,
    secret: &str,
) -> reqwest::Response {
    let key = Secret::parse_whsec(secret).unwrap();
    http.post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", auth::sign_standard(&key, id, timestamp, body.as_bytes()))
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A native alert body.
pub fn native(server: &str, monitor: &str, message: &str) -> String {
    serde_json::json!({"health_set": "ActiveSync", "server": server, "monitor": monitor, "message": message}).to_string()
}

/// The inventory and simulator the runbook tests share: a CAS array of two and a DAG of two.
pub const INVENTORY: &str = r#"
[[servers]]
name = "cas01.contoso.com"
role = "cas"
group = "cas-array-1"

[[servers]]
name = "cas02.contoso.com"
role = "cas"
group = "cas-array-1"

[[servers]]
name = "mbx01.contoso.com"
role = "mailbox"
group = "dag1"

[[servers]]
name = "mbx02.contoso.com"
role = "mailbox"
group = "dag1"
"#;

impl TestApp {
    /// Polls an incident until it reaches a final state (bounded: 20 s), and returns it.
    pub async fn wait_final(&self, incident_id: &str) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let (status, incident) = self.admin_get(&format!("/v1/incidents/{incident_id}")).await;
            assert_eq!(status, 200, "{incident}");
            let state = incident["state"].as_str().unwrap().to_owned();
            if !["queued", "running", "waiting", "awaiting_approval"].contains(&state.as_str()) {
                return incident;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "incident {incident_id} still {state}: {incident:#}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Posts a native alert and returns its incident id.
    pub async fn open(&self, body: &str) -> String {
        let response = self.post_signed("/v1/alerts", body).await;
        assert_eq!(response.status(), 202);
        let answer: Value = response.json().await.unwrap();
        answer["alerts"][0]["incident_id"].as_str().expect("an incident").to_owned()
    }
}

/// The steps of an incident as `action server outcome` lines.
pub fn steps(incident: &Value) -> Vec<String> {
    incident["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{} {} {}",
                s["action"].as_str().unwrap(),
                s["server"].as_str().unwrap(),
                s["outcome"].as_str().unwrap_or("-")
            )
        })
        .collect()
}

/// The `.eml` files in the outbox, oldest first.
pub fn outbox(app: &TestApp) -> Vec<PathBuf> {
    let dir = app.data_dir.path().join("outbox");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
    files.sort();
    files
}

/// The service as a separate process (the real binary), so that it can be signalled or killed.
pub struct ServiceProcess {
    pub child: std::process::Child,
    pub url: String,
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ServiceProcess {
    /// Runs `serve --config FILE`, or plain `serve` in `cwd` when `cwd` is given (it then finds
    /// ./healthset-responder.toml itself), and waits (bounded) until it logs the address it listens on.
    pub fn start(config: &std::path::Path, cwd: Option<&std::path::Path>) -> ServiceProcess {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_healthset-responder"));
        match cwd {
            Some(dir) => command.arg("serve").current_dir(dir),
            None => command.args(["serve", "--config"]).arg(config),
        };
        ServiceProcess::spawn(command)
    }

    /// Runs a `serve` command prepared by the caller (say, with limits of its own), as [`ServiceProcess::start`] does.
    pub fn spawn(mut command: std::process::Command) -> ServiceProcess {
        use std::io::BufRead;
        let mut child = command
            .env("RUST_LOG", "info")
            .env_remove("HSR_CONFIG")
            .env_remove("HSR_STORE_URL")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the service starts");
        // Read the log on a thread of its own: it finds the address, then keeps draining so the service never
        // blocks on a full pipe.
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (found, address) = std::sync::mpsc::channel();
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("addr=").nth(1) {
                    let _ = found.send(format!(
                        "http://{}",
                        addr.split_whitespace().next().unwrap_or_default()
                    ));
                }
                let mut log = kept.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let url = address
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the service logs its address within 60 s");
        ServiceProcess { child, url, log }
    }

    /// Asks the service to stop as an operator would (SIGTERM), and waits for it.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: signalling a child process this test started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        self.child.wait().unwrap()
    }
}

/// A test that ends (or fails) with the service still running kills it, so that no run leaves a process behind.
impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

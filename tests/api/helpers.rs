//! Starts the real service on a free loopback port with a fresh data directory, and talks to it over HTTP.

use std::path::PathBuf;

use healthset_responder::auth::{self, Secret};
use healthset_responder::config::{Config, Settings};
use healthset_responder::service::Service;
use serde_json::Value;

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
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
    let data_dir = tempfile::tempdir().unwrap();
    let config = format!("{}\n{extra_toml}", base_config(data_dir.path()));
    let service = Service::start(settings(&config)).await.expect("service starts");
    TestApp { url: format!("http://{}", service.addr), service: Some(service), data_dir, config, http: reqwest::Client::new() }
}

pub fn settings(toml: &str) -> Settings {
    Config::parse(toml).expect("test config parses").resolve(|_| None).expect("test config resolves")
}

impl TestApp {
    pub fn data_path(&self) -> PathBuf {
        self.data_dir.path().to_path_buf()
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

    pub async fn post_signed_as(&self, path: &str, body: &str, id: &str, timestamp: i64, secret: &str) -> reqwest::Response {
        let key = Secret::parse_whsec(secret).unwrap();
        self.http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", auth::sign_standard(&key, id, timestamp, body.as_bytes()))
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(format!("{}{path}", self.url)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self.http.post(format!("{}{path}", self.url)).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
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

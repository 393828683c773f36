//! The admin API client that the CLI's client commands use, and the signed poster behind `send`.
//!
//! Errors say what an operator can do about them: the service is not running, the token was refused, the id is
//! unknown, an incident is already open. Nothing here knows how the server is built or how answers are shown.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::alert::Format;
use crate::auth::{self, Secret};
use crate::config::Credentials;

pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the service at {url}: is `healthset-responder serve` running there? ({detail})")]
    Unreachable { url: String, detail: String },
    #[error("the service refused the credentials: {0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    /// The request clashes with what the service holds, such as a replay while an incident is open for the key.
    #[error("{0}")]
    Conflict(String),
    #[error("the service answered {status}: {message}")]
    Refused { status: u16, code: String, message: String, body: Value },
    #[error("{0}")]
    Usage(String),
}

/// Where the service is and how to prove who we are, resolved from flags, the environment and `credentials.toml`.
pub struct Target {
    pub url: String,
    pub admin_token: Option<String>,
    pub webhook_secret: Option<String>,
}

impl Target {
    pub fn resolve(
        url: Option<String>,
        admin_token: Option<String>,
        webhook_secret: Option<String>,
        data_dir: &Path,
    ) -> Target {
        let creds = Credentials::read(data_dir).unwrap_or_default();
        Target {
            url: url
                .or(creds.url)
                .unwrap_or_else(|| DEFAULT_URL.to_owned())
                .trim_end_matches('/')
                .to_owned(),
            admin_token: admin_token.or(creds.admin_token),
            webhook_secret: webhook_secret.or(creds.webhook_secret),
        }
    }
}

pub struct Client {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl Client {
    pub fn new(target: &Target) -> Client {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("an HTTP client builds");
        Client { http, url: target.url.clone(), token: target.admin_token.clone() }
    }

    fn token(&self) -> Result<&str, ClientError> {
        self.token.as_deref().ok_or_else(|| {
            ClientError::Usage(
                "no admin token: pass --token, set HSR_ADMIN_TOKEN, or run `healthset-responder serve` once so that it writes data/credentials.toml".into(),
            )
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        let request = self.http.get(format!("{}{path}", self.url)).bearer_auth(self.token()?);
        self.send(request).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let request =
            self.http.post(format!("{}{path}", self.url)).bearer_auth(self.token()?).json(body);
        self.send(request).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        let request = self.http.delete(format!("{}{path}", self.url)).bearer_auth(self.token()?);
        self.send(request).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let response = request.send().await.map_err(|err| ClientError::Unreachable {
            url: self.url.clone(),
            detail: root_cause(&err),
        })?;
        answer(response).await
    }
}

/// Reads an answer, turning error bodies into [`ClientError`]s.
async fn answer(response: reqwest::Response) -> Result<Value, ClientError> {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let body: Value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    if status.is_success() {
        return Ok(body);
    }
    let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
    let message =
        body["error"]["message"].as_str().map(str::to_owned).unwrap_or_else(|| body.to_string());
    Err(match status.as_u16() {
        401 => ClientError::Unauthorized(message),
        404 => ClientError::NotFound(message),
        409 => ClientError::Conflict(message),
        code_number => ClientError::Refused { status: code_number, code, message, body },
    })
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The route each format is posted to.
pub fn intake_path(format: Format) -> &'static str {
    match format {
        Format::Native => "/v1/alerts",
        Format::Scom => "/v1/alerts/scom",
        Format::Alertmanager => "/v1/alerts/alertmanager",
    }
}

/// How `send` proves who it is.
pub enum Signer {
    StandardWebhooks(Secret),
    Bearer(String),
}

impl Signer {
    pub fn from_target(target: &Target, token: Option<String>) -> Result<Signer, ClientError> {
        if let Some(token) = token {
            return Ok(Signer::Bearer(token));
        }
        let secret = target.webhook_secret.as_deref().ok_or_else(|| {
            ClientError::Usage("no webhook secret: pass --secret or --token, set HSR_WEBHOOK_SECRET, or run `healthset-responder serve` once so that it writes data/credentials.toml".into())
        })?;
        Secret::parse_whsec(secret)
            .map(Signer::StandardWebhooks)
            .map_err(|e| ClientError::Usage(format!("--secret: {e}")))
    }
}

/// Posts one alert body, signed, and returns the service's answer.
pub async fn post_alert(
    url: &str,
    format: Format,
    signer: &Signer,
    body: Vec<u8>,
) -> Result<Value, ClientError> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client builds");
    let mut request = http
        .post(format!("{}{}", url.trim_end_matches('/'), intake_path(format)))
        .header("content-type", "application/json");
    match signer {
        Signer::StandardWebhooks(key) => {
            let id = format!("msg_{}", uuid::Uuid::now_v7().simple());
            let timestamp = chrono::Utc::now().timestamp();
            request = request
                .header("webhook-id", &id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", auth::sign_standard(key, &id, timestamp, &body));
        }
        Signer::Bearer(token) => request = request.bearer_auth(token),
    }
    let response = request.body(body).send().await.map_err(|err| ClientError::Unreachable {
        url: url.to_owned(),
        detail: root_cause(&err),
    })?;
    answer(response).await
}

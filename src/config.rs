//! Typed settings: the TOML file of SPEC section 6, the environment's secrets, and the generated credentials file.
//!
//! This is the only module that reads configuration from files or the environment (runbook files included: they
//! are configuration too). It works in two stages: serde
//! reads the file into [`Config`] (unknown keys refused), then [`Config::resolve`] checks every value and builds
//! [`Settings`], whose fields cannot hold a bad value. Every error names the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::{self, Secret};
use crate::domain::ServerName;
use crate::runbook::RunbookSet;

/// A configuration problem, with the key (or file) it concerns; printed as one line.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl std::fmt::Display) -> Self {
        ConfigError { key: key.into(), message: message.to_string() }
    }
}

/// A duration written as humans do: `"30s"`, `"10m"`, `"4h"`, `"90days"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        humantime::parse_duration(&raw)
            .map(Dur)
            .map_err(|err| serde::de::Error::custom(format!("{raw:?} is not a duration like \"30s\", \"10m\" or \"4h\" ({err})")))
    }
}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

fn minutes(m: u64) -> Dur {
    Dur(Duration::from_secs(m * 60))
}

/// The file as written. Every field has a default, so an empty file (or none) is a valid configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: String,
    pub data_dir: PathBuf,
    pub max_body_bytes: usize,
    pub runbook_dir: Option<PathBuf>,
    pub log_format: LogFormat,
    pub retention: Dur,
    pub listener: ListenerConfig,
    pub senders: Vec<SenderConfig>,
    pub admin: AdminConfig,
    pub servers: Vec<ServerConfig>,
    pub executor: ExecutorConfig,
    pub simulator: SimulatorConfig,
    pub timing: TimingConfig,
    pub safety: SafetyConfig,
    pub email: EmailConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            data_dir: "data".into(),
            max_body_bytes: 256 * 1024,
            runbook_dir: None,
            log_format: LogFormat::Text,
            retention: Dur(Duration::from_secs(90 * 24 * 3600)),
            listener: ListenerConfig::default(),
            senders: Vec::new(),
            admin: AdminConfig::default(),
            servers: Vec::new(),
            executor: ExecutorConfig::default(),
            simulator: SimulatorConfig::default(),
            timing: TimingConfig::default(),
            safety: SafetyConfig::default(),
            email: EmailConfig::default(),
        }
    }
}

/// `[listener]`: how slow, idle and numerous clients are kept from locking intake out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// A request's head must arrive within this time of the connection opening or of the previous answer; an idle
    /// keep-alive connection is closed after it.
    pub header_timeout: Dur,
    /// The most client connections open at once; lowered at start where the open file limit requires it.
    pub max_connections: usize,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig { header_timeout: Dur(Duration::from_secs(10)), max_connections: 1024 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SenderConfig {
    pub name: String,
    #[serde(default)]
    pub auth: AuthKind,
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub tokens: Vec<String>,
    #[serde(default)]
    pub tolerance: Option<Dur>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AuthKind {
    #[default]
    StandardWebhooks,
    #[serde(rename = "hub-signature-256")]
    HubSignature256,
    Bearer,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub tokens: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub name: ServerName,
    pub role: Role,
    #[serde(default)]
    pub group: Option<String>,
}

/// What an Exchange 2013 server does; it decides the restart path (a Mailbox server fails its databases over first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Cas,
    Mailbox,
    Multi,
}

impl Role {
    pub fn hosts_databases(self) -> bool {
        matches!(self, Role::Mailbox | Role::Multi)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Cas => "CAS",
            Role::Mailbox => "Mailbox",
            Role::Multi => "multi-role",
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorConfig {
    pub kind: ExecutorKind,
    pub dry_run: bool,
    pub program: String,
    pub args: Vec<String>,
    pub connection_uri: String,
    pub authentication: String,
    pub timeout: Dur,
    pub scripts: BTreeMap<String, String>,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            kind: ExecutorKind::Simulator,
            dry_run: false,
            program: "pwsh".into(),
            args: ["-NoLogo", "-NoProfile", "-NonInteractive", "-Command", "-"].map(String::from).to_vec(),
            connection_uri: "http://{server}/PowerShell/".into(),
            authentication: "Kerberos".into(),
            timeout: minutes(10),
            scripts: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    Simulator,
    Powershell,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatorConfig {
    pub action_latency: Dur,
    pub servers: BTreeMap<String, SimServerConfig>,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig { action_latency: Dur(Duration::ZERO), servers: BTreeMap::new() }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimServerConfig {
    pub fault: Fault,
    pub unhealthy_monitors: Vec<String>,
    pub active_copies: u32,
    pub copies_moved_per_failover: u32,
}

impl Default for SimServerConfig {
    fn default() -> Self {
        SimServerConfig { fault: Fault::None, unhealthy_monitors: Vec::new(), active_copies: 3, copies_moved_per_failover: 3 }
    }
}

/// What the simulator must see done before a faulted server's probes pass again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    None,
    AppPool,
    IisReset,
    Restart,
    Mailbox,
    Never,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimingConfig {
    pub settle_wait: Dur,
    pub restart_timeout: Dur,
    pub copy_status_attempts: u32,
}

impl Default for TimingConfig {
    fn default() -> Self {
        TimingConfig { settle_wait: minutes(10), restart_timeout: minutes(30), copy_status_attempts: 3 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SafetyConfig {
    pub escalation_min_interval: Dur,
    pub recycle_app_pool: Throttle,
    pub iis_reset: Throttle,
    pub disable_activation: Throttle,
    pub restart_server: Throttle,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        let remedy = Throttle { server_min_interval: minutes(60), server_max_per_day: 1, group_min_interval: minutes(60), group_max_per_day: 4 };
        SafetyConfig {
            escalation_min_interval: minutes(240),
            recycle_app_pool: remedy.clone(),
            iis_reset: remedy.clone(),
            disable_activation: remedy,
            restart_server: Throttle { server_min_interval: minutes(720), server_max_per_day: 1, group_min_interval: minutes(600), group_max_per_day: 4 },
        }
    }
}

/// Managed Availability's own limits for one kind of recovery action.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Throttle {
    pub server_min_interval: Dur,
    pub server_max_per_day: u32,
    pub group_min_interval: Dur,
    pub group_max_per_day: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    pub transport: MailTransportKind,
    pub from: String,
    /// The recipients when no route matches.
    pub to: Vec<String>,
    /// The endings that send an email: always `escalated` and `blocked`; `recovered` adds a notice when a remedy
    /// worked.
    pub notify_on: Vec<NotifyOn>,
    /// A failed delivery is tried again after `retry_initial`, then after twice as long each time, at most
    /// `retry_max` apart (with jitter), until the transport accepts it.
    pub retry_initial: Dur,
    pub retry_max: Dur,
    /// `[[email.routes]]`: the first route that matches an incident picks its recipients.
    pub routes: Vec<EmailRouteConfig>,
    pub smtp: SmtpConfig,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            transport: MailTransportKind::Outbox,
            from: "healthset-responder@localhost".into(),
            to: vec!["oncall@localhost".into()],
            notify_on: vec![NotifyOn::Escalated, NotifyOn::Blocked],
            retry_initial: Dur(Duration::from_secs(5)),
            retry_max: minutes(60),
            routes: Vec::new(),
            smtp: SmtpConfig::default(),
        }
    }
}

/// A final state that sends an email (`email.notify_on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyOn {
    Escalated,
    Blocked,
    Recovered,
}

/// One `[[email.routes]]` entry as written: name patterns (exact, or a prefix ending in `*`; any case) and the
/// recipients when every condition given holds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailRouteConfig {
    #[serde(default)]
    pub health_sets: Option<Vec<String>>,
    #[serde(default)]
    pub monitors: Option<Vec<String>>,
    #[serde(default)]
    pub servers: Option<Vec<String>>,
    pub to: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailTransportKind {
    Outbox,
    Smtp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub timeout: Dur,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: "localhost".into(),
            port: 587,
            tls: SmtpTls::Starttls,
            username: None,
            password: None,
            ca_file: None,
            timeout: Dur(Duration::from_secs(30)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    Starttls,
    Tls,
    None,
}

/// Where configuration came from, for messages.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    Defaults,
}

impl Config {
    /// Reads the file named by `--config`, else `$HSR_CONFIG`, else `./healthset-responder.toml` when present, else
    /// the built-in defaults.
    pub fn load(explicit: Option<&Path>) -> Result<(Config, Source), ConfigError> {
        let path = match explicit {
            Some(path) => Some(path.to_path_buf()),
            None => match std::env::var_os("HSR_CONFIG") {
                Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
                _ => Some(PathBuf::from("healthset-responder.toml")).filter(|p| p.exists()),
            },
        };
        match path {
            None => Ok((Config::default(), Source::Defaults)),
            Some(path) => {
                let text =
                    std::fs::read_to_string(&path).map_err(|err| ConfigError::new(path.display().to_string(), format!("cannot read the file: {err}")))?;
                let config = Config::parse(&text).map_err(|err| ConfigError::new(format!("{}: {}", path.display(), err.key), err.message))?;
                Ok((config, Source::File(path)))
            }
        }
    }

    /// Reads TOML text; the error names the key that is wrong.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let deserializer = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let line = inner.span().map(|span| text[..span.start].lines().count().max(1));
            let key = match (path.as_str(), line) {
                (".", Some(line)) => format!("line {line}"),
                (".", None) => "config".to_owned(),
                (_, Some(line)) => format!("{path} (line {line})"),
                (_, None) => path,
            };
            ConfigError::new(key, inner.message().trim())
        })
    }

    /// Checks every value and builds the settings the service runs on. `env` looks up environment variables.
    pub fn resolve(self, env: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let listen: SocketAddr =
            self.listen.parse().map_err(|_| ConfigError::new("listen", format!("{:?} is not an address like \"127.0.0.1:8080\"", self.listen)))?;
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::new("max_body_bytes", "must be at least 1024"));
        }
        if self.listener.header_timeout.0.is_zero() {
            return Err(ConfigError::new("listener.header_timeout", "must be more than zero"));
        }
        if self.listener.max_connections == 0 {
            return Err(ConfigError::new("listener.max_connections", "must be at least 1"));
        }
        let listener_limits = crate::http::listener::Limits { header_timeout: self.listener.header_timeout.0, max_connections: self.listener.max_connections };
        let mut senders = Vec::new();
        for (i, sender) in self.senders.iter().enumerate() {
            let key = |field: &str| format!("senders[{i}].{field}");
            if sender.name.trim().is_empty() {
                return Err(ConfigError::new(key("name"), "is empty"));
            }
            if senders.iter().any(|s: &auth::Sender| s.name == sender.name) {
                return Err(ConfigError::new(key("name"), format!("{:?} names two senders", sender.name)));
            }
            let method = match sender.auth {
                AuthKind::StandardWebhooks | AuthKind::HubSignature256 => {
                    if !sender.tokens.is_empty() {
                        return Err(ConfigError::new(key("tokens"), "only bearer senders take tokens; signing senders take secrets"));
                    }
                    if sender.secrets.is_empty() {
                        return Err(ConfigError::new(key("secrets"), "is empty; give at least one secret"));
                    }
                    let keys = sender
                        .secrets
                        .iter()
                        .enumerate()
                        .map(|(j, s)| match sender.auth {
                            AuthKind::StandardWebhooks => Secret::parse_whsec(s).map_err(|e| ConfigError::new(format!("senders[{i}].secrets[{j}]"), e)),
                            _ if s.len() < 16 => Err(ConfigError::new(format!("senders[{i}].secrets[{j}]"), "is shorter than 16 characters")),
                            _ => Ok(Secret::new(s.as_bytes().to_vec())),
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    if sender.auth == AuthKind::StandardWebhooks {
                        auth::Method::StandardWebhooks { keys, tolerance: sender.tolerance.unwrap_or(minutes(5)).0 }
                    } else {
                        auth::Method::HubSignature { keys }
                    }
                }
                AuthKind::Bearer => {
                    if !sender.secrets.is_empty() {
                        return Err(ConfigError::new(key("secrets"), "bearer senders take tokens, not secrets"));
                    }
                    auth::Method::Bearer { tokens: tokens(&sender.tokens, &key("tokens"))? }
                }
            };
            senders.push(auth::Sender { name: sender.name.clone(), method });
        }
        if let Some(secret) = env("HSR_WEBHOOK_SECRET").filter(|s| !s.is_empty()) {
            let key = Secret::parse_whsec(&secret).map_err(|e| ConfigError::new("HSR_WEBHOOK_SECRET", e))?;
            senders.push(auth::Sender { name: "env".into(), method: auth::Method::StandardWebhooks { keys: vec![key], tolerance: minutes(5).0 } });
        }
        let mut admin_tokens = tokens(&self.admin.tokens, "admin.tokens")?;
        if let Some(token) = env("HSR_ADMIN_TOKEN").filter(|s| !s.is_empty()) {
            admin_tokens.extend(tokens(&[token], "HSR_ADMIN_TOKEN")?);
        }

        let mut inventory = BTreeMap::new();
        for (i, server) in self.servers.iter().enumerate() {
            let group = server.group.clone().unwrap_or_else(|| server.name.to_string());
            if inventory.insert(server.name.clone(), InventoryEntry { role: server.role, group }).is_some() {
                return Err(ConfigError::new(format!("servers[{i}].name"), format!("{} is listed twice", server.name)));
            }
        }

        let mut simulated = BTreeMap::new();
        for (name, server) in &self.simulator.servers {
            let parsed = ServerName::parse(name).map_err(|e| ConfigError::new(format!("simulator.servers.{name:?}"), e))?;
            simulated.insert(parsed, server.clone());
        }

        if self.executor.timeout.0.is_zero() {
            return Err(ConfigError::new("executor.timeout", "must be more than zero"));
        }
        if self.executor.kind == ExecutorKind::Powershell {
            // Checks the program, the endpoint and every script template, naming the key that is wrong.
            crate::executor::powershell::PowerShell::new(&self.executor, self.timing.restart_timeout.0)?;
        }
        if self.retention.0 < Duration::from_secs(24 * 3600) {
            return Err(ConfigError::new("retention", "must be at least one day: throttles count the last day of the journal"));
        }
        if self.timing.copy_status_attempts == 0 {
            return Err(ConfigError::new("timing.copy_status_attempts", "must be at least 1"));
        }
        for (name, throttle) in [
            ("recycle_app_pool", &self.safety.recycle_app_pool),
            ("iis_reset", &self.safety.iis_reset),
            ("disable_activation", &self.safety.disable_activation),
            ("restart_server", &self.safety.restart_server),
        ] {
            if throttle.server_max_per_day == 0 || throttle.group_max_per_day == 0 {
                return Err(ConfigError::new(format!("safety.{name}"), "max_per_day must be at least 1 (remove the remedy from the runbook to forbid it)"));
            }
        }

        let email = &self.email;
        for (j, to) in email.to.iter().enumerate() {
            to.parse::<lettre::Address>().map_err(|e| ConfigError::new(format!("email.to[{j}]"), format!("{to:?} is not an email address ({e})")))?;
        }
        if email.to.is_empty() {
            return Err(ConfigError::new("email.to", "is empty; escalations need a recipient"));
        }
        email.from.parse::<lettre::Address>().map_err(|e| ConfigError::new("email.from", format!("{:?} is not an email address ({e})", email.from)))?;
        let smtp_password = env("HSR_SMTP_PASSWORD").filter(|s| !s.is_empty()).or_else(|| email.smtp.password.clone()).map(|p| Secret::new(p.into_bytes()));
        if email.transport == MailTransportKind::Smtp && email.smtp.host.trim().is_empty() {
            return Err(ConfigError::new("email.smtp.host", "is empty"));
        }
        if email.smtp.username.is_some() != smtp_password.is_some() {
            return Err(ConfigError::new("email.smtp.password", "username and password go together (the password may come from HSR_SMTP_PASSWORD)"));
        }
        if !(email.notify_on.contains(&NotifyOn::Escalated) && email.notify_on.contains(&NotifyOn::Blocked)) {
            return Err(ConfigError::new(
                "email.notify_on",
                "must keep \"escalated\" and \"blocked\" (escalations always go out); add \"recovered\" for recovery notices",
            ));
        }
        if email.retry_initial.0.is_zero() {
            return Err(ConfigError::new("email.retry_initial", "must be more than zero"));
        }
        if email.retry_max.0 < email.retry_initial.0 {
            return Err(ConfigError::new(
                "email.retry_max",
                format!("must be at least email.retry_initial ({})", humantime::format_duration(email.retry_initial.0)),
            ));
        }
        let email_routes = email_routes(&email.routes)?;

        let runbooks = RunbookSet::load(self.runbook_dir.as_deref())
            .map_err(|e| ConfigError::new(format!("runbook_dir: {}", e.file), format!("{}: {}", e.field, e.message)))?;

        Ok(Settings {
            runbooks,
            listen,
            data_dir: self.data_dir,
            max_body_bytes: self.max_body_bytes,
            runbook_dir: self.runbook_dir,
            log_format: self.log_format,
            retention: self.retention.0,
            listener: listener_limits,
            senders,
            admin_tokens,
            inventory,
            executor: self.executor,
            simulator: SimulatorSettings { action_latency: self.simulator.action_latency.0, servers: simulated },
            timing: self.timing,
            safety: self.safety,
            email: self.email,
            email_routes,
            smtp_password,
        })
    }
}

fn tokens(raw: &[String], key: &str) -> Result<Vec<Secret>, ConfigError> {
    raw.iter()
        .enumerate()
        .map(|(j, t)| {
            if t.len() < 16 {
                Err(ConfigError::new(format!("{key}[{j}]"), "is shorter than 16 characters"))
            } else if t.bytes().any(|b| !b.is_ascii_graphic()) {
                Err(ConfigError::new(format!("{key}[{j}]"), "may hold only visible ASCII characters"))
            } else {
                Ok(Secret::new(t.as_bytes().to_vec()))
            }
        })
        .collect()
}

/// Checks `[[email.routes]]` and builds the routes the mailer's routing decision takes; errors name the key.
fn email_routes(routes: &[EmailRouteConfig]) -> Result<Vec<crate::mailer::Route>, ConfigError> {
    use crate::mailer::{Pattern, Route, RouteError};
    let mut checked = Vec::new();
    for (i, route) in routes.iter().enumerate() {
        let patterns = |field: &str, list: &Option<Vec<String>>| -> Result<Option<Vec<Pattern>>, ConfigError> {
            let Some(list) = list else { return Ok(None) };
            if list.is_empty() {
                return Err(ConfigError::new(format!("email.routes[{i}].{field}"), "is empty; leave the key out to match any name"));
            }
            list.iter()
                .enumerate()
                .map(|(j, raw)| Pattern::parse(raw).map_err(|e| ConfigError::new(format!("email.routes[{i}].{field}[{j}]"), e)))
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        };
        let health_sets = patterns("health_sets", &route.health_sets)?;
        let monitors = patterns("monitors", &route.monitors)?;
        let servers = patterns("servers", &route.servers)?;
        let to = route
            .to
            .iter()
            .enumerate()
            .map(|(j, raw)| {
                raw.parse::<lettre::Address>()
                    .map_err(|e| ConfigError::new(format!("email.routes[{i}].to[{j}]"), format!("{raw:?} is not an email address ({e})")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let route = Route::new(health_sets, monitors, servers, to).map_err(|e| match e {
            RouteError::NoRecipient => ConfigError::new(format!("email.routes[{i}].to"), e),
            RouteError::NoCondition | RouteError::EmptyCondition => ConfigError::new(format!("email.routes[{i}]"), e),
        })?;
        checked.push(route);
    }
    Ok(checked)
}

/// One server of the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryEntry {
    pub role: Role,
    /// The throttle group: the DAG for Mailbox servers, the CAS array for CAS; the server itself when not set.
    pub group: String,
}

#[derive(Debug, Clone)]
pub struct SimulatorSettings {
    pub action_latency: Duration,
    pub servers: BTreeMap<ServerName, SimServerConfig>,
}

/// Checked settings the service runs on.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub max_body_bytes: usize,
    pub runbook_dir: Option<PathBuf>,
    /// The built-in runbooks with those of `runbook_dir` added or replacing them.
    pub runbooks: RunbookSet,
    pub log_format: LogFormat,
    pub retention: Duration,
    /// `[listener]`: the header timeout and the connection cap.
    pub listener: crate::http::listener::Limits,
    pub senders: Vec<auth::Sender>,
    pub admin_tokens: Vec<Secret>,
    pub inventory: BTreeMap<ServerName, InventoryEntry>,
    pub executor: ExecutorConfig,
    pub simulator: SimulatorSettings,
    pub timing: TimingConfig,
    pub safety: SafetyConfig,
    pub email: EmailConfig,
    /// `[[email.routes]]`, checked, in the order written.
    pub email_routes: Vec<crate::mailer::Route>,
    pub smtp_password: Option<Secret>,
}

/// Credentials that `serve` generated because none were configured; client commands read them by default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub url: Option<String>,
    pub webhook_secret: Option<String>,
    pub admin_token: Option<String>,
}

impl Credentials {
    pub const FILE_NAME: &'static str = "credentials.toml";

    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(Self::FILE_NAME)
    }

    pub fn read(data_dir: &Path) -> Option<Credentials> {
        let text = std::fs::read_to_string(Self::path(data_dir)).ok()?;
        toml::from_str(&text).ok()
    }

    /// Fills in a webhook sender and an admin token where the settings have none, reusing the ones generated on an
    /// earlier start. Returns the credentials file's path when it was used.
    pub fn ensure(settings: &mut Settings) -> std::io::Result<Option<PathBuf>> {
        if !settings.senders.is_empty() && !settings.admin_tokens.is_empty() {
            return Ok(None);
        }
        let path = Self::path(&settings.data_dir);
        let mut creds = Self::read(&settings.data_dir).unwrap_or_default();
        let before = creds.clone();
        if settings.senders.is_empty() {
            let secret = creds.webhook_secret.get_or_insert_with(Secret::generate_whsec);
            let key = Secret::parse_whsec(secret).map_err(|e| std::io::Error::other(format!("{}: webhook_secret {e}", path.display())))?;
            settings.senders.push(auth::Sender { name: "default".into(), method: auth::Method::StandardWebhooks { keys: vec![key], tolerance: minutes(5).0 } });
        }
        if settings.admin_tokens.is_empty() {
            let token = creds.admin_token.get_or_insert_with(|| hex::encode(rand::random::<[u8; 24]>()));
            settings.admin_tokens.push(Secret::new(token.as_bytes().to_vec()));
        }
        if creds != before {
            std::fs::create_dir_all(&settings.data_dir)?;
            write_private(&path, &toml::to_string(&creds).expect("credentials serialise"))?;
        }
        Ok(Some(path))
    }

    /// Records where the service listens, once it is bound, so that client commands find it (a wildcard address
    /// becomes loopback).
    pub fn record_url(data_dir: &Path, addr: std::net::SocketAddr) -> std::io::Result<()> {
        let Some(mut creds) = Self::read(data_dir) else { return Ok(()) };
        let mut addr = addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
        }
        let url = format!("http://{addr}");
        if creds.url.as_deref() == Some(url.as_str()) {
            return Ok(());
        }
        creds.url = Some(url);
        write_private(&Self::path(data_dir), &toml::to_string(&creds).expect("credentials serialise"))
    }
}

/// Writes a file that only its owner can read.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(b"# Generated by healthset-responder serve because no sender or admin token was configured.\n")?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str) -> Result<Settings, String> {
        Config::parse(text).and_then(|c| c.resolve(|_| None)).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_resolve() {
        let settings = resolve("").unwrap();
        assert_eq!(settings.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.max_body_bytes, 262144);
        assert_eq!(settings.safety.restart_server.server_min_interval, minutes(720));
        assert_eq!(settings.timing.settle_wait, minutes(10));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("listen = 5", "listen (line 1): invalid type"),
            ("lisen = \"x\"", "unknown field `lisen`"),
            ("listen = \"nowhere\"", "listen: \"nowhere\" is not an address"),
            ("[timing]\nsettle_wait = \"soon\"", "timing.settle_wait (line 2)"),
            ("[[senders]]\nname = \"scom\"\nsecrets = [\"abc\"]", "senders[0].secrets[0]: must start with \"whsec_\""),
            ("[[senders]]\nname = \"am\"\nauth = \"basic\"", "senders[0].auth"),
            ("[[servers]]\nname = \"cas 01\"\nrole = \"cas\"", "servers[0].name"),
            ("[[servers]]\nname = \"cas01\"\nrole = \"edge\"", "servers[0].role"),
            ("[admin]\ntokens = [\"short\"]", "admin.tokens[0]: is shorter than 16 characters"),
            ("[email]\nto = [\"not an address\"]", "email.to[0]"),
            ("[email]\nnotify_on = [\"escalated\", \"sometimes\"]", "email.notify_on[1] (line 2): unknown variant `sometimes`"),
            ("[email]\nnotify_on = [\"escalated\", \"recovered\"]", "email.notify_on: must keep \"escalated\" and \"blocked\""),
            ("[email]\nretry_initial = \"0s\"", "email.retry_initial: must be more than zero"),
            ("[email]\nretry_initial = \"1m\"\nretry_max = \"30s\"", "email.retry_max: must be at least email.retry_initial (1m)"),
            (
                "[[email.routes]]\nservers = [\"mbx*\"]\nto = [\"a@contoso.com\"]\n[[email.routes]]\nservers = [\"cas*\"]\nto = [\"nobody\"]",
                "email.routes[1].to[0]: \"nobody\" is not an email address",
            ),
            ("[[email.routes]]\nservers = [\"cas*\"]\nto = []", "email.routes[0].to: is empty"),
            ("[[email.routes]]\nservers = [\"cas*\"]", "email.routes[0] (line 1): missing field `to`"),
            ("[[email.routes]]\nto = [\"a@contoso.com\"]", "email.routes[0]: sets none of health_sets, monitors and servers"),
            ("[[email.routes]]\nmonitors = []\nto = [\"a@contoso.com\"]", "email.routes[0].monitors: is empty"),
            (
                "[[email.routes]]\nhealth_sets = [\"Active*Sync\"]\nto = [\"a@contoso.com\"]",
                "email.routes[0].health_sets[0]: \"Active*Sync\" has a '*' before its end",
            ),
            ("[[email.routes]]\nservers = [\"cas*\"]\ncc = [\"a@contoso.com\"]\nto = [\"a@contoso.com\"]", "unknown field `cc`"),
            ("[executor]\nkind = \"ssh\"", "executor.kind"),
            ("[simulator.servers.\"cas01\"]\nfault = \"gremlins\"", "simulator.servers.cas01.fault"),
        ];
        for (text, want) in cases {
            let err = resolve(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: got {err:?}, want {want:?}");
            assert!(!err.contains('\n'), "{text:?}: error spans lines: {err:?}");
        }
    }

    #[test]
    fn email_routes_notices_and_retries_resolve() {
        let defaults = resolve("").unwrap();
        assert_eq!(defaults.email.notify_on, [NotifyOn::Escalated, NotifyOn::Blocked]);
        assert_eq!((defaults.email.retry_initial.0, defaults.email.retry_max.0), (Duration::from_secs(5), Duration::from_secs(3600)));
        assert!(defaults.email_routes.is_empty());

        let text = "[email]\nnotify_on = [\"escalated\", \"blocked\", \"recovered\"]\nretry_initial = \"50ms\"\nretry_max = \"2s\"\n\n\
                    [[email.routes]]\nservers = [\"MBX*\"]\nto = [\"mailbox-team@contoso.com\", \"dba@contoso.com\"]\n\n\
                    [[email.routes]]\nhealth_sets = [\"ActiveSync.Proxy\"]\nmonitors = [\"ActiveSyncProxyTestMonitor\"]\nto = [\"proxy@contoso.com\"]\n";
        let settings = resolve(text).unwrap();
        assert_eq!(settings.email.notify_on.last(), Some(&NotifyOn::Recovered));
        assert_eq!(settings.email.retry_initial.0, Duration::from_millis(50));
        assert_eq!(settings.email_routes.len(), 2);
        let names = crate::mailer::Names { health_set: "ActiveSync", monitor: None, server: "mbx01.contoso.com" };
        assert_eq!(crate::mailer::recipients(&settings.email_routes, &settings.email.to, &names), ["mailbox-team@contoso.com", "dba@contoso.com"]);
    }

    #[test]
    fn environment_secrets_add_a_sender_and_a_token() {
        let env = |name: &str| match name {
            "HSR_WEBHOOK_SECRET" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()),
            "HSR_ADMIN_TOKEN" => Some("an-admin-token-from-env".to_owned()),
            _ => None,
        };
        let settings = Config::default().resolve(env).unwrap();
        assert_eq!(settings.senders.len(), 1);
        assert!(auth::token_matches(&settings.admin_tokens, "an-admin-token-from-env"));
    }

    #[test]
    fn generated_credentials_are_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Config { data_dir: dir.path().to_path_buf(), ..Config::default() }.resolve(|_| None).unwrap();
        let path = Credentials::ensure(&mut settings).unwrap().unwrap();
        let first = Credentials::read(dir.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let mut again = Config { data_dir: dir.path().to_path_buf(), ..Config::default() }.resolve(|_| None).unwrap();
        Credentials::ensure(&mut again).unwrap();
        assert_eq!(Credentials::read(dir.path()).unwrap(), first);
        assert!(auth::token_matches(&again.admin_tokens, first.admin_token.as_deref().unwrap()));
    }
}

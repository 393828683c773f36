//! Typed settings: the TOML file of SPEC section 6, the environment's secrets, and the generated credentials file.
//!
//! This is the only module that reads configuration from files or the environment (runbook files included: they
//! are configuration too). It works in two stages: serde reads the file into [`Config`] (unknown keys refused),
//! then [`Config::resolve`] checks every value and builds [`Settings`], whose fields cannot hold a bad value. Every
//! error names the key.
//!
//! A section's types belong to the module whose settings they are: `[servers]` to `inventory`, `[executor]` and
//! `[simulator]` to `executor`, `[safety]` to `safety`, `[approval]` to `approval`, `[email]` to `mailer`, `[store]`
//! to `store`. They are re-exported here with the file they make up. This module keeps only the sections of the
//! service as a whole (`listen`, `[listener]`, `[intake]`, `[[senders]]`, `[admin]`, `[timing]`), reads, checks
//! and assembles.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::approval::ApprovalConfig;
use crate::auth::{self, Secret};
pub use crate::domain::Dur;
use crate::domain::ServerName;
pub use crate::executor::simulator::{Fault, SimServerConfig, SimulatorConfig, SimulatorSettings};
pub use crate::executor::{ExecutorConfig, ExecutorKind};
pub use crate::inventory::{Inventory, InventoryEntry, Role, ServerConfig};
pub use crate::mailer::{
    EmailConfig, EmailRouteConfig, MailTransportKind, NotifyOn, SmtpConfig, SmtpTls,
};
use crate::runbook::RunbookSet;
pub use crate::safety::{SafetyConfig, Throttle};
pub use crate::store::{Backend, StoreConfig, StoreSettings};

mod credentials;
pub use credentials::{Credentials, CredentialsError};

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

impl From<crate::executor::BadSetting> for ConfigError {
    fn from(bad: crate::executor::BadSetting) -> Self {
        ConfigError { key: bad.key, message: bad.message }
    }
}

/// The file as written. Every field has a default, so an empty file (or none) is a valid configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: String,
    pub data_dir: PathBuf,
    pub max_body_bytes: usize,
    pub runbook_dir: Option<PathBuf>,
    /// The address people use to reach the service (behind a reverse proxy, the proxy's): links in emails, and a
    /// `Secure` session cookie when it is https.
    pub public_url: Option<String>,
    pub log_format: LogFormat,
    pub retention: Dur,
    pub store: StoreConfig,
    pub listener: ListenerConfig,
    pub intake: IntakeConfig,
    pub senders: Vec<SenderConfig>,
    pub admin: AdminConfig,
    pub servers: Vec<ServerConfig>,
    pub executor: ExecutorConfig,
    pub simulator: SimulatorConfig,
    pub timing: TimingConfig,
    pub safety: SafetyConfig,
    pub approval: ApprovalConfig,
    pub email: EmailConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            data_dir: "data".into(),
            max_body_bytes: 256 * 1024,
            runbook_dir: None,
            public_url: None,
            log_format: LogFormat::Text,
            retention: Dur(Duration::from_secs(90 * 24 * 3600)),
            store: StoreConfig::default(),
            listener: ListenerConfig::default(),
            intake: IntakeConfig::default(),
            senders: Vec::new(),
            admin: AdminConfig::default(),
            servers: Vec::new(),
            executor: ExecutorConfig::default(),
            simulator: SimulatorConfig::default(),
            timing: TimingConfig::default(),
            safety: SafetyConfig::default(),
            approval: ApprovalConfig::default(),
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

/// `[intake]`: how deliveries are told apart.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntakeConfig {
    /// The same body from the same sender within this time is a duplicate: the only replay protection for senders
    /// that carry no delivery id (`hub-signature-256`, `bearer`) nor a source alert id. `"0s"` turns it off.
    pub duplicate_window: Dur,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        IntakeConfig { duplicate_window: Dur::minutes(10) }
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
#[serde(deny_unknown_fields, default)]
pub struct TimingConfig {
    /// RequestsQueuedGt500: the wait before each `Get-ServerHealth` check after a remedy.
    pub settle_wait: Dur,
    /// How long a restarted server has to answer again.
    pub restart_timeout: Dur,
    /// After every remedy, before verifying again: an application pool or a booted server answers slowly at first.
    pub warm_up: Dur,
    /// How long active database copies have to move off a Mailbox server.
    pub failover_timeout: Dur,
    /// Between copy-status checks while they move.
    pub poll_interval: Dur,
    /// An open incident that makes no progress this long, with no driver running it, is reported once.
    pub stall_after: Dur,
}

impl Default for TimingConfig {
    fn default() -> Self {
        TimingConfig {
            settle_wait: Dur::minutes(10),
            restart_timeout: Dur::minutes(30),
            warm_up: Dur(Duration::from_secs(60)),
            failover_timeout: Dur::minutes(10),
            poll_interval: Dur(Duration::from_secs(30)),
            stall_after: Dur::minutes(30),
        }
    }
}

/// The secrets and tokens `examples/healthset-responder.toml` ships with (the Standard Webhooks specification's own
/// example secret among them); [`Config::refuse_placeholders`] refuses them.
pub const EXAMPLE_PLACEHOLDERS: [&str; 4] = [
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "replace-with-a-long-random-token",
    "replace-with-another-long-random-token",
    "...",
];

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
                let text = std::fs::read_to_string(&path).map_err(|err| {
                    ConfigError::new(
                        path.display().to_string(),
                        format!("cannot read the file: {err}"),
                    )
                })?;
                let config = Config::parse(&text).map_err(|err| {
                    ConfigError::new(format!("{}: {}", path.display(), err.key), err.message)
                })?;
                Ok((config, Source::File(path)))
            }
        }
    }

    /// Reads TOML text; the error names the key that is wrong, and never shows the value of a secret.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_toml(text, is_secret_key)
    }

    /// Refuses the placeholder secrets and tokens that `examples/healthset-responder.toml` ships with: a copy of the
    /// example put into service would accept alerts and admin calls from anyone who has read it. `serve` and
    /// `check-config` ask this.
    pub fn refuse_placeholders(&self) -> Result<(), ConfigError> {
        let placeholder = |value: &str| EXAMPLE_PLACEHOLDERS.contains(&value.trim());
        let refuse = |key: String| {
            ConfigError::new(key, "is the placeholder from the example configuration; generate a secret of your own (see the README)")
        };
        for (i, sender) in self.senders.iter().enumerate() {
            for (field, values) in [("secrets", &sender.secrets), ("tokens", &sender.tokens)] {
                if let Some(j) = values.iter().position(|v| placeholder(v)) {
                    return Err(refuse(format!("senders[{i}].{field}[{j}]")));
                }
            }
        }
        if let Some(j) = self.admin.tokens.iter().position(|v| placeholder(v)) {
            return Err(refuse(format!("admin.tokens[{j}]")));
        }
        if self.email.smtp.password.as_deref().is_some_and(placeholder) {
            return Err(refuse("email.smtp.password".into()));
        }
        Ok(())
    }

    /// Checks every value and builds the settings the service runs on. `env` looks up environment variables.
    pub fn resolve(self, env: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let listen: SocketAddr = self.listen.parse().map_err(|_| {
            ConfigError::new(
                "listen",
                format!("{:?} is not an address like \"127.0.0.1:8080\"", self.listen),
            )
        })?;
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::new("max_body_bytes", "must be at least 1024"));
        }
        let public_url = self.public_url.as_deref().map(public_url).transpose()?;
        if self.listener.header_timeout.0.is_zero() {
            return Err(ConfigError::new("listener.header_timeout", "must be more than zero"));
        }
        if self.listener.max_connections == 0 {
            return Err(ConfigError::new("listener.max_connections", "must be at least 1"));
        }
        let mut senders = Vec::new();
        for (i, sender) in self.senders.iter().enumerate() {
            let key = |field: &str| format!("senders[{i}].{field}");
            if sender.name.trim().is_empty() {
                return Err(ConfigError::new(key("name"), "is empty"));
            }
            if senders.iter().any(|s: &auth::Sender| s.name == sender.name) {
                return Err(ConfigError::new(
                    key("name"),
                    format!("{:?} names two senders", sender.name),
                ));
            }
            let method = match sender.auth {
                AuthKind::StandardWebhooks | AuthKind::HubSignature256 => {
                    if !sender.tokens.is_empty() {
                        return Err(ConfigError::new(
                            key("tokens"),
                            "only bearer senders take tokens; signing senders take secrets",
                        ));
                    }
                    if sender.secrets.is_empty() {
                        return Err(ConfigError::new(
                            key("secrets"),
                            "is empty; give at least one secret",
                        ));
                    }
                    let keys = sender
                        .secrets
                        .iter()
                        .enumerate()
                        .map(|(j, s)| match sender.auth {
                            AuthKind::StandardWebhooks => Secret::parse_whsec(s).map_err(|e| {
                                ConfigError::new(format!("senders[{i}].secrets[{j}]"), e)
                            }),
                            _ if s.len() < 16 => Err(ConfigError::new(
                                format!("senders[{i}].secrets[{j}]"),
                                "is shorter than 16 characters",
                            )),
                            _ => Ok(Secret::new(s.as_bytes().to_vec())),
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    if sender.auth == AuthKind::StandardWebhooks {
                        auth::Method::StandardWebhooks {
                            keys,
                            tolerance: sender.tolerance.unwrap_or(Dur::minutes(5)).0,
                        }
                    } else {
                        auth::Method::HubSignature { keys }
                    }
                }
                AuthKind::Bearer => {
                    if !sender.secrets.is_empty() {
                        return Err(ConfigError::new(
                            key("secrets"),
                            "bearer senders take tokens, not secrets",
                        ));
                    }
                    auth::Method::Bearer { tokens: tokens(&sender.tokens, &key("tokens"))? }
                }
            };
            senders.push(auth::Sender { name: sender.name.clone(), method });
        }
        if let Some(secret) = env("HSR_WEBHOOK_SECRET").filter(|s| !s.is_empty()) {
            let key = Secret::parse_whsec(&secret)
                .map_err(|e| ConfigError::new("HSR_WEBHOOK_SECRET", e))?;
            senders.push(auth::Sender {
                name: "env".into(),
                method: auth::Method::StandardWebhooks {
                    keys: vec![key],
                    tolerance: Dur::minutes(5).0,
                },
            });
        }
        let mut admin_tokens = tokens(&self.admin.tokens, "admin.tokens")?;
        if let Some(token) = env("HSR_ADMIN_TOKEN").filter(|s| !s.is_empty()) {
            admin_tokens.extend(tokens(&[token], "HSR_ADMIN_TOKEN")?);
        }

        let mut inventory = BTreeMap::new();
        for (i, server) in self.servers.iter().enumerate() {
            let group = server.group.clone().unwrap_or_else(|| server.name.to_string());
            if let Some(uri) = &server.connection_uri {
                crate::executor::powershell::check_connection_uri(uri)
                    .map_err(|e| ConfigError::new(format!("servers[{i}].connection_uri"), e))?;
            }
            let entry = InventoryEntry {
                role: server.role,
                group,
                connection_uri: server.connection_uri.clone(),
            };
            if inventory.insert(server.name.clone(), entry).is_some() {
                return Err(ConfigError::new(
                    format!("servers[{i}].name"),
                    format!("{} is listed twice", server.name),
                ));
            }
        }

        let mut simulated = BTreeMap::new();
        for (name, server) in &self.simulator.servers {
            let parsed = ServerName::parse(name)
                .map_err(|e| ConfigError::new(format!("simulator.servers.{name:?}"), e))?;
            simulated.insert(parsed, server.clone());
        }

        if self.executor.timeout.0.is_zero() {
            return Err(ConfigError::new("executor.timeout", "must be more than zero"));
        }
        for (i, name) in self.executor.pass_env.iter().enumerate() {
            let key = format!("executor.pass_env[{i}]");
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '(' || c == ')');
            if !valid {
                return Err(ConfigError::new(
                    key,
                    format!("{name:?} is not an environment variable name"),
                ));
            }
            if name.to_ascii_uppercase().starts_with("HSR_") {
                return Err(ConfigError::new(key, format!("{name} is one of the service's own variables; HSR_* variables never reach the shell")));
            }
        }
        if self.executor.kind == ExecutorKind::Powershell {
            // Checks the program, the endpoint and every script template, naming the key that is wrong.
            crate::executor::powershell::PowerShell::new(
                &self.executor,
                self.timing.restart_timeout.0,
            )?;
        }
        if self.retention.0 < Duration::from_secs(24 * 3600) {
            return Err(ConfigError::new(
                "retention",
                "must be at least one day: throttles count the last day of the journal",
            ));
        }
        if self.timing.poll_interval.0.is_zero() {
            return Err(ConfigError::new("timing.poll_interval", "must be more than zero"));
        }
        if self.timing.failover_timeout.0 < self.timing.poll_interval.0 {
            return Err(ConfigError::new(
                "timing.failover_timeout",
                format!(
                    "must be at least timing.poll_interval ({})",
                    humantime::format_duration(self.timing.poll_interval.0)
                ),
            ));
        }
        if self.executor.read_attempts == 0 {
            return Err(ConfigError::new("executor.read_attempts", "must be at least 1"));
        }
        if self.executor.max_parallel == 0 {
            return Err(ConfigError::new("executor.max_parallel", "must be at least 1"));
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
            to.parse::<lettre::Address>().map_err(|e| {
                ConfigError::new(
                    format!("email.to[{j}]"),
                    format!("{to:?} is not an email address ({e})"),
                )
            })?;
        }
        if email.to.is_empty() {
            return Err(ConfigError::new("email.to", "is empty; escalations need a recipient"));
        }
        email.from.parse::<lettre::Address>().map_err(|e| {
            ConfigError::new(
                "email.from",
                format!("{:?} is not an email address ({e})", email.from),
            )
        })?;
        let smtp_password = env("HSR_SMTP_PASSWORD")
            .filter(|s| !s.is_empty())
            .or_else(|| email.smtp.password.clone())
            .map(|p| Secret::new(p.into_bytes()));
        if email.transport == MailTransportKind::Smtp && email.smtp.host.trim().is_empty() {
            return Err(ConfigError::new("email.smtp.host", "is empty"));
        }
        if email.smtp.username.is_some() != smtp_password.is_some() {
            return Err(ConfigError::new(
                "email.smtp.password",
                "username and password go together (the password may come from HSR_SMTP_PASSWORD)",
            ));
        }
        if email.smtp.tls == SmtpTls::None
            && email.smtp.username.is_some()
            && !email.smtp.allow_plaintext_login
        {
            return Err(ConfigError::new(
                "email.smtp.username",
                "a login over tls = \"none\" sends the password in clear; use \"starttls\" or \"tls\", or set email.smtp.allow_plaintext_login = true if that is meant",
            ));
        }
        if !(email.notify_on.contains(&NotifyOn::Escalated)
            && email.notify_on.contains(&NotifyOn::Blocked))
        {
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
                format!(
                    "must be at least email.retry_initial ({})",
                    humantime::format_duration(email.retry_initial.0)
                ),
            ));
        }
        let email_routes = email_routes(&email.routes)?;

        let approval = approval_policy(self.approval)?;
        let runbooks = RunbookSet::load(self.runbook_dir.as_deref()).map_err(|e| {
            ConfigError::new(
                format!("runbook_dir: {}", e.file),
                format!("{}: {}", e.field, e.message),
            )
        })?;

        let store = self
            .store
            .resolve(env("HSR_STORE_URL"))
            .map_err(|bad| ConfigError::new(bad.key, bad.message))?;
        Ok(Settings {
            store,
            runbooks,
            listen,
            data_dir: self.data_dir,
            max_body_bytes: self.max_body_bytes,
            runbook_dir: self.runbook_dir,
            public_url,
            log_format: self.log_format,
            retention: self.retention.0,
            listener: self.listener,
            duplicate_window: self.intake.duplicate_window.0,
            senders,
            admin_tokens,
            inventory,
            executor: self.executor,
            simulator: SimulatorSettings {
                action_latency: self.simulator.action_latency.0,
                servers: simulated,
            },
            timing: self.timing,
            safety: self.safety,
            approval,
            email: self.email,
            email_routes,
            smtp_password,
        })
    }
}

/// Checks `[approval]` and builds the policy the planner and the engine follow.
fn approval_policy(config: ApprovalConfig) -> Result<crate::approval::Policy, ConfigError> {
    use crate::incident::ActionKind;
    let mut actions = Vec::new();
    for (i, name) in config.actions.iter().enumerate() {
        let mutating = || ActionKind::ALL.iter().copied().filter(|k| k.is_mutating());
        let kind = ActionKind::parse(name).filter(|k| k.is_mutating()).ok_or_else(|| {
            let known = mutating().map(ActionKind::as_str).collect::<Vec<_>>().join(", ");
            ConfigError::new(
                format!("approval.actions[{i}]"),
                format!("{name:?} is not a mutating action; approvals are for {known}"),
            )
        })?;
        if !actions.contains(&kind) {
            actions.push(kind);
        }
    }
    if config.timeout.0.is_zero() {
        return Err(ConfigError::new("approval.timeout", "must be more than zero"));
    }
    for (i, raw) in config.to.iter().enumerate() {
        raw.parse::<lettre::Address>().map_err(|e| {
            ConfigError::new(
                format!("approval.to[{i}]"),
                format!("{raw:?} is not an email address ({e})"),
            )
        })?;
    }
    Ok(crate::approval::Policy { actions, timeout: config.timeout.0, to: config.to })
}

/// Checks `public_url`: an http or https address with a host, and no query or fragment.
fn public_url(raw: &str) -> Result<String, ConfigError> {
    let bad = |why: &str| ConfigError::new("public_url", format!("{raw:?} {why}"));
    let url = reqwest::Url::parse(raw.trim())
        .map_err(|_| bad("is not an address like \"https://responder.contoso.com\""))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must start with https:// or http://"));
    }
    if url.host_str().is_none_or(str::is_empty)
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return Err(bad(
            "must be a plain address: a host (and a path), without credentials, query or fragment",
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn tokens(raw: &[String], key: &str) -> Result<Vec<Secret>, ConfigError> {
    raw.iter()
        .enumerate()
        .map(|(j, t)| {
            if t.len() < 16 {
                Err(ConfigError::new(format!("{key}[{j}]"), "is shorter than 16 characters"))
            } else if t.bytes().any(|b| !b.is_ascii_graphic()) {
                Err(ConfigError::new(
                    format!("{key}[{j}]"),
                    "may hold only visible ASCII characters",
                ))
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
        let patterns = |field: &str,
                        list: &Option<Vec<String>>|
         -> Result<Option<Vec<Pattern>>, ConfigError> {
            let Some(list) = list else { return Ok(None) };
            if list.is_empty() {
                return Err(ConfigError::new(
                    format!("email.routes[{i}].{field}"),
                    "is empty; leave the key out to match any name",
                ));
            }
            list.iter()
                .enumerate()
                .map(|(j, raw)| {
                    Pattern::parse(raw)
                        .map_err(|e| ConfigError::new(format!("email.routes[{i}].{field}[{j}]"), e))
                })
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
                raw.parse::<lettre::Address>().map_err(|e| {
                    ConfigError::new(
                        format!("email.routes[{i}].to[{j}]"),
                        format!("{raw:?} is not an email address ({e})"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let route = Route::new(health_sets, monitors, servers, to).map_err(|e| match e {
            RouteError::NoRecipient => ConfigError::new(format!("email.routes[{i}].to"), e),
            RouteError::NoCondition | RouteError::EmptyCondition => {
                ConfigError::new(format!("email.routes[{i}]"), e)
            }
        })?;
        checked.push(route);
    }
    Ok(checked)
}

/// Checked settings the service runs on.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub max_body_bytes: usize,
    pub runbook_dir: Option<PathBuf>,
    /// `public_url`, checked, without a trailing `/`.
    pub public_url: Option<String>,
    /// The built-in runbooks with those of `runbook_dir` added or replacing them.
    pub runbooks: RunbookSet,
    pub log_format: LogFormat,
    pub retention: Duration,
    /// `[store]`: the SQLite file in `data_dir`, or the PostgreSQL database instances share.
    pub store: StoreSettings,
    /// `[listener]`: the header timeout and the connection cap.
    pub listener: ListenerConfig,
    /// `intake.duplicate_window`: the same body from the same sender within it is a duplicate.
    pub duplicate_window: Duration,
    pub senders: Vec<auth::Sender>,
    pub admin_tokens: Vec<Secret>,
    pub inventory: Inventory,
    pub executor: ExecutorConfig,
    pub simulator: SimulatorSettings,
    pub timing: TimingConfig,
    pub safety: SafetyConfig,
    /// `[approval]`: the changes that wait for a person.
    pub approval: crate::approval::Policy,
    pub email: EmailConfig,
    /// `[[email.routes]]`, checked, in the order written.
    pub email_routes: Vec<crate::mailer::Route>,
    pub smtp_password: Option<Secret>,
}

/// Whether a key (as serde_path_to_error writes it: `senders[0].secrets[1]`) holds a secret, whose value must not
/// appear in an error.
fn is_secret_key(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    let field = last.split('[').next().unwrap_or(last);
    matches!(field, "secrets" | "tokens" | "password" | "webhook_secret" | "admin_token" | "url")
}

/// Reads TOML into `T`; the error names the key (with its line) and, for a key that `secret` says holds a secret,
/// says what was wrong without the value.
fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    secret: impl Fn(&str) -> bool,
) -> Result<T, ConfigError> {
    let deserializer = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let line = inner.span().map(|span| text[..span.start].lines().count().max(1));
        let message = if secret(&path) {
            without_value(inner.message().trim())
        } else {
            inner.message().trim().to_owned()
        };
        let key = match (path.as_str(), line) {
            (".", Some(line)) => format!("line {line}"),
            (".", None) => "config".to_owned(),
            (_, Some(line)) => format!("{path} (line {line})"),
            (_, None) => path,
        };
        ConfigError::new(key, message)
    })
}

/// serde's `invalid type: string "whsec_...", expected a sequence` without the value: `invalid type: string,
/// expected a sequence`. Any other message about a secret is replaced by one that cannot hold the value.
fn without_value(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            if let Some((unexpected, expected)) = rest.rsplit_once(", expected ") {
                let kind = unexpected.split(['"', '`', '\'']).next().unwrap_or("").trim();
                if !expected.contains(['"', '`']) {
                    return format!("{prefix}{kind}, expected {expected}");
                }
                return format!("{prefix}{kind}");
            }
        }
    }
    if message.starts_with("unknown field") || message.starts_with("missing field") {
        return message.to_owned();
    }
    "is not valid here (the value is a secret, so it is not shown)".to_owned()
}

#[cfg(test)]
mod tests;

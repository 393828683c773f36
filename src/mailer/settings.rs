//! `[email]`: who hears of an incident, and how mail leaves (the outbox directory or an SMTP relay).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::domain::Dur;

/// `[email]` as written.
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
            retry_max: Dur::minutes(60),
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
    /// AUTH over `tls = "none"` sends the password in clear; refused unless this says it is meant.
    pub allow_plaintext_login: bool,
    /// The relay's own certificate (PEM): trusted as it is, and nothing else is (Exchange's self-signed one).
    pub pin_certificate: Option<PathBuf>,
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
            allow_plaintext_login: false,
            pin_certificate: None,
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

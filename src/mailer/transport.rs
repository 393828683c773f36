//! Sending formatted messages: `.eml` files in `<data_dir>/outbox`, or SMTP with STARTTLS, implicit TLS or none.
//!
//! Built once from the `[email]` settings; every setting is checked (and a CA file read) when the mailer is built,
//! so that a bad setting stops the service at start rather than at the first escalation. This module knows nothing
//! of what the messages say, nor of the queue that retries them (it only carries the queue's `[email]` retry
//! settings to it).
//!
//! SMTP is spoken one step at a time with lettre's connection API rather than its all-in-one transport, so that
//! every step (connecting, STARTTLS, AUTH, each command, the message) has its own `email.smtp.timeout`, a failure
//! names the step and quotes the server's answer, and the caller learns of the acceptance before the goodbye.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;

use super::pinned::{PinnedRelay, PinnedStream};
use super::RetryPolicy;
use super::{envelope, DeliveryError, MailError};
use super::{EmailConfig, MailTransportKind, SmtpTls};
use crate::auth::Secret;

/// The configured way out for escalation email.
pub struct Mailer {
    transport: Transport,
    retry: RetryPolicy,
}

enum Transport {
    Outbox { dir: PathBuf },
    Smtp(Box<Smtp>),
}

struct Smtp {
    host: String,
    port: u16,
    security: Security,
    /// The user name (for messages) and the credentials AUTH sends.
    login: Option<(String, Credentials)>,
    ca_file: Option<PathBuf>,
    /// `email.smtp.pin_certificate`, for messages.
    pin_certificate: Option<PathBuf>,
    /// Bounds each step: the connection (TCP, implicit TLS, greeting and EHLO), STARTTLS, AUTH, every command and
    /// the message with its final answer.
    timeout: Duration,
}

/// How the connection is protected.
enum Security {
    None,
    StartTls(TlsParameters),
    /// Implicit TLS from the first byte (port 465).
    Wrapper(TlsParameters),
    /// STARTTLS, or implicit TLS, to a relay that must present the pinned certificate.
    PinnedStartTls(PinnedRelay),
    PinnedWrapper(PinnedRelay),
}

/// What the far side said when it took a message: the SMTP server's final answer (`250 ...`), or the file written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub reply: String,
}

/// One delivery told step by step, for a person checking the setup (`check-config --send-test-email`).
#[derive(Debug)]
pub struct Conversation {
    /// What happened, one line per step, in order (`connected to ...`, `STARTTLS: ...`, `RCPT TO:<...>: 250 OK`).
    pub steps: Vec<String>,
    pub result: Result<Accepted, DeliveryError>,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Mailer").field(&self.describe()).finish()
    }
}

impl Mailer {
    /// Checks the `[email]` settings and prepares the transport. Reads `email.smtp.ca_file` when one is set; touches
    /// nothing else on disk (the outbox directory is made on the first delivery).
    pub fn new(
        email: &EmailConfig,
        smtp_password: Option<&Secret>,
        data_dir: &Path,
    ) -> Result<Mailer, MailError> {
        let transport = match email.transport {
            MailTransportKind::Outbox => Transport::Outbox { dir: data_dir.join("outbox") },
            MailTransportKind::Smtp => Transport::Smtp(Box::new(smtp(email, smtp_password)?)),
        };
        Ok(Mailer { transport, retry: RetryPolicy::new(email.retry_initial.0, email.retry_max.0) })
    }

    /// Sends an already formatted message (the bytes of `Message::formatted()`) to the given envelope. Returns as
    /// soon as the server has accepted the message: the polite `QUIT` that follows is sent in the background, so
    /// the caller can record the delivery at once.
    pub async fn deliver(
        &self,
        from: &str,
        to: &[String],
        raw: &[u8],
    ) -> Result<Accepted, DeliveryError> {
        self.deliver_logged(from, to, raw, &mut Vec::new()).await
    }

    /// Like [`Mailer::deliver`], and says what happened at each step.
    pub async fn converse(&self, from: &str, to: &[String], raw: &[u8]) -> Conversation {
        let mut steps = Vec::new();
        let result = self.deliver_logged(from, to, raw, &mut steps).await;
        Conversation { steps, result }
    }

    async fn deliver_logged(
        &self,
        from: &str,
        to: &[String],
        raw: &[u8],
        steps: &mut Vec<String>,
    ) -> Result<Accepted, DeliveryError> {
        let envelope = envelope(from, to)?;
        match &self.transport {
            Transport::Outbox { dir } => {
                let path = write_outbox(dir, raw).await?;
                steps.push(format!("wrote {}", path.display()));
                Ok(Accepted { reply: format!("written to {}", path.display()) })
            }
            Transport::Smtp(smtp) => smtp.deliver(&envelope, raw, steps).await,
        }
    }

    /// One line for logs: `outbox data/outbox` or `smtp smtp.contoso.com:587 (starttls)`.
    pub fn describe(&self) -> String {
        match &self.transport {
            Transport::Outbox { dir } => format!("outbox {}", dir.display()),
            Transport::Smtp(smtp) => {
                let mut parts = vec![match smtp.security {
                    Security::StartTls(_) | Security::PinnedStartTls(_) => "starttls".to_owned(),
                    Security::Wrapper(_) | Security::PinnedWrapper(_) => "tls".to_owned(),
                    Security::None => "none".to_owned(),
                }];
                if let Some((user, _)) = &smtp.login {
                    parts.push(format!("login as {user}"));
                }
                if let Some(ca) = &smtp.ca_file {
                    parts.push(format!("extra CA {}", ca.display()));
                }
                if let Some(pin) = &smtp.pin_certificate {
                    parts.push(format!("pinned certificate {}", pin.display()));
                }
                format!("smtp {}:{} ({})", smtp.host, smtp.port, parts.join(", "))
            }
        }
    }

    /// The outbox directory, when mail goes to files.
    pub fn outbox(&self) -> Option<&Path> {
        match &self.transport {
            Transport::Outbox { dir } => Some(dir),
            Transport::Smtp(_) => None,
        }
    }

    /// How the notifier spaces the retries of a failed delivery (`email.retry_initial`, `email.retry_max`). The
    /// mailer carries it because it is what the notifier is handed, built from the same `[email]` settings.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }
}

impl Smtp {
    fn target(&self) -> String {
        format!("smtp {}:{}", self.host, self.port)
    }

    /// Runs one step under the step timeout; a failure names the target and the step, and quotes the server.
    async fn step<T>(
        &self,
        step: &str,
        work: impl Future<Output = Result<T, lettre::transport::smtp::Error>>,
    ) -> Result<T, DeliveryError> {
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) if err.is_permanent() => {
                Err(DeliveryError::permanent(format!("{}: {step}: {err}", self.target())))
            }
            Ok(Err(err)) => {
                Err(DeliveryError::transient(format!("{}: {step}: {err}", self.target())))
            }
            Err(_) => Err(DeliveryError::transient(format!(
                "{}: {step}: no answer within {}",
                self.target(),
                humantime::format_duration(self.timeout)
            ))),
        }
    }

    async fn deliver(
        &self,
        envelope: &Envelope,
        raw: &[u8],
        steps: &mut Vec<String>,
    ) -> Result<Accepted, DeliveryError> {
        let hello = ClientId::default();
        let wrapper = match &self.security {
            Security::Wrapper(params) => Some(params.clone()),
            Security::None
            | Security::StartTls(_)
            | Security::PinnedStartTls(_)
            | Security::PinnedWrapper(_) => None,
        };
        let mut conn = match &self.security {
            Security::PinnedStartTls(pin) | Security::PinnedWrapper(pin) => {
                let stream = self.pinned(pin, &hello).await?;
                let conn = self
                    .step(
                        "connect",
                        AsyncSmtpConnection::connect_with_transport(Box::new(stream), &hello),
                    )
                    .await?;
                let how = if matches!(self.security, Security::PinnedStartTls(_)) {
                    "STARTTLS"
                } else {
                    "TLS"
                };
                steps.push(format!(
                    "connected to {} over {how}: the relay presented the pinned certificate; it (EHLO name {:?}) offers {}",
                    self.target(),
                    conn.server_info().name(),
                    offers(&conn)
                ));
                conn
            }
            _ => {
                let connect = AsyncSmtpConnection::connect_tokio1(
                    (self.host.as_str(), self.port),
                    Some(self.timeout),
                    &hello,
                    wrapper,
                    None,
                );
                let conn = self.step("connect", connect).await?;
                let tls = if conn.is_encrypted() { " over TLS" } else { "" };
                steps.push(format!(
                    "connected to {}{tls}: the server (EHLO name {:?}) offers {}",
                    self.target(),
                    conn.server_info().name(),
                    offers(&conn)
                ));
                conn
            }
        };
        if let Security::StartTls(params) = &self.security {
            // A failed upgrade leaves lettre's stream unusable (not even for QUIT), so the connection is only dropped.
            self.step("STARTTLS", conn.starttls(params.clone(), &hello)).await?;
            steps.push(format!(
                "STARTTLS: encrypted, the certificate is valid for {}; the server now offers {}",
                self.host,
                offers(&conn)
            ));
        }

        match self.transaction(&mut conn, envelope, raw, steps).await {
            Ok(accepted) => {
                // The message is the server's now; the goodbye must not hold up recording that.
                let timeout = self.timeout;
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(timeout, conn.quit()).await;
                });
                Ok(accepted)
            }
            Err(err) => {
                let _ = tokio::time::timeout(self.timeout, conn.abort()).await;
                Err(err)
            }
        }
    }

    /// The encrypted stream to a pinned relay: TCP, then (after the plain-text STARTTLS lines where they apply) the
    /// handshake that accepts only the pinned certificate, each under the step timeout.
    async fn pinned(
        &self,
        pin: &PinnedRelay,
        hello: &ClientId,
    ) -> Result<PinnedStream, DeliveryError> {
        let failed = |step: &str, err: std::io::Error| {
            DeliveryError::transient(format!("{}: {step}: {err}", self.target()))
        };
        let timed_out = |step: &str| {
            DeliveryError::transient(format!(
                "{}: {step}: no answer within {}",
                self.target(),
                humantime::format_duration(self.timeout)
            ))
        };
        let tcp = tokio::time::timeout(
            self.timeout,
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| timed_out("connect"))?
        .map_err(|e| failed("connect", e))?;
        let (step, secured) = match &self.security {
            Security::PinnedStartTls(_) => (
                "STARTTLS",
                tokio::time::timeout(
                    self.timeout,
                    pin.starttls(&self.host, &hello.to_string(), tcp),
                )
                .await,
            ),
            _ => ("TLS", tokio::time::timeout(self.timeout, pin.wrap(&self.host, tcp)).await),
        };
        secured.map_err(|_| timed_out(step))?.map_err(|e| failed(step, e))
    }

    /// Everything after the connection is secured: AUTH, the envelope, the message.
    async fn transaction(
        &self,
        conn: &mut AsyncSmtpConnection,
        envelope: &Envelope,
        raw: &[u8],
        steps: &mut Vec<String>,
    ) -> Result<Accepted, DeliveryError> {
        if let Some((user, credentials)) = &self.login {
            let response = self.step("AUTH", conn.auth(DEFAULT_MECHANISMS, credentials)).await?;
            steps.push(format!("AUTH as {user}: {}", reply(&response)));
        }

        let info = conn.server_info();
        let mut parameters = Vec::new();
        if envelope.to().iter().chain(envelope.from()).any(|a| !AsRef::<str>::as_ref(a).is_ascii())
        {
            if !info.supports_feature(Extension::SmtpUtfEight) {
                return Err(DeliveryError::permanent(format!(
                    "{}: an address is not ASCII and the server does not offer SMTPUTF8",
                    self.target()
                )));
            }
            parameters.push(MailParameter::SmtpUtfEight);
        }
        if !raw.is_ascii() {
            if !info.supports_feature(Extension::EightBitMime) {
                return Err(DeliveryError::permanent(format!(
                    "{}: the message is not ASCII and the server does not offer 8BITMIME",
                    self.target()
                )));
            }
            parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let from = envelope.from().map(ToString::to_string).unwrap_or_default();
        let step = format!("MAIL FROM:<{from}>");
        let response =
            self.step(&step, conn.command(Mail::new(envelope.from().cloned(), parameters))).await?;
        steps.push(format!("{step}: {}", reply(&response)));
        for recipient in envelope.to() {
            let step = format!("RCPT TO:<{recipient}>");
            let response =
                self.step(&step, conn.command(Rcpt::new(recipient.clone(), Vec::new()))).await?;
            steps.push(format!("{step}: {}", reply(&response)));
        }
        let response = self.step("DATA", conn.command(Data)).await?;
        steps.push(format!("DATA: {}", reply(&response)));
        let response = self.step("the message", conn.message(raw)).await?;
        let accepted = Accepted { reply: reply(&response) };
        steps.push(format!("the message ({} bytes): {}", raw.len(), accepted.reply));
        Ok(accepted)
    }
}

/// The server's answer as one line: `250 2.0.0 OK queued`.
fn reply(response: &Response) -> String {
    let text: Vec<&str> = response.message().map(str::trim).filter(|l| !l.is_empty()).collect();
    format!("{} {}", response.code(), text.join(" ")).trim_end().to_owned()
}

/// The extensions that matter here, as the server announced them.
fn offers(conn: &AsyncSmtpConnection) -> String {
    let info = conn.server_info();
    let mut offered: Vec<String> =
        [Extension::StartTls, Extension::EightBitMime, Extension::SmtpUtfEight]
            .into_iter()
            .filter(|e| info.supports_feature(*e))
            .map(|e| e.to_string())
            .collect();
    let mechanisms: Vec<String> = [Mechanism::Plain, Mechanism::Login, Mechanism::Xoauth2]
        .into_iter()
        .filter(|m| info.supports_auth_mechanism(*m))
        .map(|m| m.to_string())
        .collect();
    if !mechanisms.is_empty() {
        offered.push(format!("AUTH {}", mechanisms.join(" ")));
    }
    if offered.is_empty() {
        "no extension that matters here".to_owned()
    } else {
        offered.join(", ")
    }
}

fn smtp(email: &EmailConfig, smtp_password: Option<&Secret>) -> Result<Smtp, MailError> {
    let config = &email.smtp;
    let host = config.host.trim().to_owned();
    if host.is_empty() {
        return Err(MailError::config("email.smtp.host", "is empty"));
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(MailError::config("email.smtp.host", format!("{host:?} is not a host name")));
    }
    if config.port == 0 {
        return Err(MailError::config("email.smtp.port", "must be between 1 and 65535"));
    }
    let timeout = config.timeout.0;
    if timeout.is_zero() {
        return Err(MailError::config("email.smtp.timeout", "must be more than zero"));
    }

    let tls_parameters = |ca: Option<&PathBuf>| -> Result<TlsParameters, MailError> {
        let mut params = TlsParameters::builder(host.clone());
        if let Some(path) = ca {
            params = params.add_root_certificate(certificate(path)?);
        }
        params.build().map_err(|e| match ca {
            Some(path) => MailError::config(
                "email.smtp.ca_file",
                format!("{}: cannot set up TLS with it ({e})", path.display()),
            ),
            None => MailError::config("email.smtp.tls", format!("cannot set up TLS ({e})")),
        })
    };
    let pin = match &config.pin_certificate {
        None => None,
        Some(_) if config.ca_file.is_some() => {
            return Err(MailError::config(
                "email.smtp.pin_certificate",
                "and email.smtp.ca_file are both set; a pinned certificate is trusted alone, remove ca_file",
            ))
        }
        Some(_) if config.tls == SmtpTls::None => {
            return Err(MailError::config("email.smtp.pin_certificate", "is set but email.smtp.tls is \"none\"; use \"starttls\" or \"tls\""))
        }
        Some(path) => Some(PinnedRelay::read(path).map_err(|e| MailError::config("email.smtp.pin_certificate", e))?),
    };
    let security = match (config.tls, pin) {
        (SmtpTls::Starttls, Some(pin)) => Security::PinnedStartTls(pin),
        (SmtpTls::Tls, Some(pin)) => Security::PinnedWrapper(pin),
        _ => match config.tls {
            SmtpTls::Starttls => Security::StartTls(tls_parameters(config.ca_file.as_ref())?),
            SmtpTls::Tls => Security::Wrapper(tls_parameters(config.ca_file.as_ref())?),
            SmtpTls::None if config.ca_file.is_some() => {
                return Err(MailError::config("email.smtp.ca_file", "is set but email.smtp.tls is \"none\"; use \"starttls\" or \"tls\", or remove ca_file"))
            }
            SmtpTls::None => Security::None,
        },
    };

    let username = config.username.as_deref().map(str::trim).filter(|u| !u.is_empty());
    let login = match (username, smtp_password) {
        (Some(user), Some(password)) => {
            let password = String::from_utf8(password.expose().to_vec())
                .map_err(|_| MailError::config("email.smtp.password", "is not valid UTF-8"))?;
            Some((user.to_owned(), Credentials::new(user.to_owned(), password)))
        }
        (Some(_), None) => {
            return Err(MailError::config(
                "email.smtp.password",
                "is missing; a username needs a password (or set HSR_SMTP_PASSWORD)",
            ));
        }
        (None, Some(_)) => {
            return Err(MailError::config(
                "email.smtp.username",
                "is missing; a password needs a username",
            ))
        }
        (None, None) => None,
    };

    Ok(Smtp {
        host,
        port: config.port,
        security,
        login,
        ca_file: config.ca_file.clone(),
        pin_certificate: config.pin_certificate.clone(),
        timeout,
    })
}

/// Reads the extra trusted CA: a PEM file holding at least one certificate.
fn certificate(path: &Path) -> Result<Certificate, MailError> {
    let key = "email.smtp.ca_file";
    let pem = std::fs::read(path)
        .map_err(|e| MailError::config(key, format!("cannot read {}: {e}", path.display())))?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(MailError::config(
            key,
            format!("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display()),
        ));
    }
    Certificate::from_pem(&pem).map_err(|e| {
        MailError::config(key, format!("{} is not a valid PEM certificate ({e})", path.display()))
    })
}

/// Writes one message as `<dir>/<UTC time>-<random>.eml`: to a hidden temporary file first, synced, then renamed,
/// so that a reader of the directory never sees half a message. Names sort by time.
async fn write_outbox(dir: &Path, raw: &[u8]) -> Result<PathBuf, DeliveryError> {
    let dir = dir.to_path_buf();
    let raw = raw.to_vec();
    let fail = |dir: &Path, e: std::io::Error| {
        DeliveryError::transient(format!("outbox {}: {e}", dir.display()))
    };
    tokio::task::spawn_blocking(move || {
        // The outbox is as private as the rest of the data directory: 0700, and each email 0600, written whole or
        // not at all.
        crate::private_files::private_dir(&dir).map_err(|e| fail(&dir, e))?;
        let name = format!(
            "{}-{:08x}.eml",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
            rand::random::<u32>()
        );
        let path = dir.join(&name);
        crate::private_files::write_private(&path, &raw).map_err(|e| fail(&dir, e))?;
        Ok(path)
    })
    .await
    .map_err(|e| DeliveryError::transient(format!("outbox: the writer stopped ({e})")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Dur;

    fn smtp_config(tls: SmtpTls, ca_file: Option<PathBuf>) -> EmailConfig {
        let mut email =
            EmailConfig { transport: MailTransportKind::Smtp, ..EmailConfig::default() };
        email.smtp.host = "smtp.contoso.com".into();
        email.smtp.tls = tls;
        email.smtp.ca_file = ca_file;
        email
    }

    #[test]
    fn a_missing_ca_file_names_the_key() {
        let email = smtp_config(SmtpTls::Starttls, Some("/nonexistent/internal-ca.pem".into()));
        let err = Mailer::new(&email, None, Path::new("data")).unwrap_err().to_string();
        assert!(
            err.starts_with("email.smtp.ca_file: cannot read /nonexistent/internal-ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = Mailer::new(&smtp_config(SmtpTls::Tls, Some(path)), None, dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("email.smtp.ca_file: ") && err.contains("holds no PEM certificate"),
            "{err}"
        );
        let err = Mailer::new(&smtp_config(SmtpTls::None, Some("ca.pem".into())), None, dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("email.smtp.ca_file: is set but email.smtp.tls is \"none\""),
            "{err}"
        );
    }

    #[test]
    fn a_valid_ca_file_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("internal-ca.pem");
        std::fs::write(&path, TEST_CA).unwrap();
        let mailer =
            Mailer::new(&smtp_config(SmtpTls::Starttls, Some(path.clone())), None, dir.path())
                .unwrap();
        assert_eq!(
            mailer.describe(),
            format!("smtp smtp.contoso.com:587 (starttls, extra CA {})", path.display())
        );
    }

    #[test]
    fn a_pinned_certificate_is_checked_when_the_mailer_is_built() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("relay.pem");
        std::fs::write(&pem, TEST_CA).unwrap();
        let pinned = |tls, ca_file: Option<PathBuf>, pin: &Path| {
            let mut email = smtp_config(tls, ca_file);
            email.smtp.pin_certificate = Some(pin.to_path_buf());
            Mailer::new(&email, None, dir.path()).map(|m| m.describe()).map_err(|e| e.to_string())
        };
        assert_eq!(
            pinned(SmtpTls::Starttls, None, &pem).unwrap(),
            format!("smtp smtp.contoso.com:587 (starttls, pinned certificate {})", pem.display())
        );
        let err = pinned(SmtpTls::Starttls, Some(pem.clone()), &pem).unwrap_err();
        assert!(
            err.starts_with("email.smtp.pin_certificate: and email.smtp.ca_file are both set"),
            "{err}"
        );
        let err = pinned(SmtpTls::None, None, &pem).unwrap_err();
        assert!(
            err.starts_with("email.smtp.pin_certificate: is set but email.smtp.tls is \"none\""),
            "{err}"
        );
        let err = pinned(SmtpTls::Tls, None, Path::new("/nonexistent/relay.pem")).unwrap_err();
        assert!(
            err.starts_with("email.smtp.pin_certificate: cannot read /nonexistent/relay.pem"),
            "{err}"
        );
        std::fs::write(&pem, "not a certificate").unwrap();
        let err = pinned(SmtpTls::Tls, None, &pem).unwrap_err();
        assert!(err.contains("holds no PEM certificate"), "{err}");
    }

    #[test]
    fn describe_names_the_transport() {
        let outbox = Mailer::new(&EmailConfig::default(), None, Path::new("data")).unwrap();
        assert_eq!(outbox.describe(), "outbox data/outbox");
        let mut email = smtp_config(SmtpTls::Tls, None);
        email.smtp.port = 465;
        email.smtp.username = Some("healthset".into());
        email.smtp.timeout = Dur(Duration::from_secs(10));
        let secret = Secret::new(b"p4ssw0rd".to_vec());
        let smtp = Mailer::new(&email, Some(&secret), Path::new("data")).unwrap();
        assert_eq!(smtp.describe(), "smtp smtp.contoso.com:465 (tls, login as healthset)");
        assert!(!format!("{smtp:?}").contains("p4ssw0rd"));
        let plain =
            Mailer::new(&smtp_config(SmtpTls::None, None), None, Path::new("data")).unwrap();
        assert_eq!(plain.describe(), "smtp smtp.contoso.com:587 (none)");
    }

    #[test]
    fn login_needs_both_halves() {
        let mut email = smtp_config(SmtpTls::Starttls, None);
        email.smtp.username = Some("healthset".into());
        let err = Mailer::new(&email, None, Path::new("data")).unwrap_err().to_string();
        assert!(err.starts_with("email.smtp.password: "), "{err}");
        email.smtp.username = None;
        let err = Mailer::new(&email, Some(&Secret::new(b"x".to_vec())), Path::new("data"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("email.smtp.username: "), "{err}");
    }

    #[tokio::test]
    async fn a_bad_envelope_is_a_permanent_failure() {
        let dir = tempfile::tempdir().unwrap();
        let mailer = Mailer::new(&EmailConfig::default(), None, dir.path()).unwrap();
        let err = mailer
            .deliver("not an address", &["oncall@contoso.com".into()], b"x")
            .await
            .unwrap_err();
        assert!(err.permanent, "{err}");
        let err = mailer.deliver("hsr@contoso.com", &[], b"x").await.unwrap_err();
        assert!(err.permanent, "{err}");
        assert!(!dir.path().join("outbox").exists());
    }

    #[tokio::test]
    async fn an_unreachable_smtp_server_is_a_transient_failure() {
        // A loopback port nobody listens on: the connection is refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut email = smtp_config(SmtpTls::None, None);
        email.smtp.host = "127.0.0.1".into();
        email.smtp.port = port;
        email.smtp.timeout = Dur(Duration::from_secs(5));
        let mailer = Mailer::new(&email, None, Path::new("data")).unwrap();
        let err = mailer
            .deliver("hsr@contoso.com", &["oncall@contoso.com".into()], b"Subject: x\r\n\r\nx\r\n")
            .await
            .unwrap_err();
        assert!(!err.permanent, "{err}");
        assert!(err.message.starts_with(&format!("smtp 127.0.0.1:{port}: ")), "{err}");
    }

    /// A self-signed test CA (`openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj /CN=hsr-test-ca`).
    const TEST_CA: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBgjCCASmgAwIBAgIUW98OeR/z01EG9OM1l0VH6hBNfcQwCgYIKoZIzj0EAwIw\n\
FjEUMBIGA1UEAwwLaHNyLXRlc3QtY2EwIBcNMjYxMTI4MTQyNDM2WhgPMjEyNjEx\n\
MDQxNDI0MzZaMBYxFDASBgNVBAMMC2hzci10ZXN0LWNhMFkwEwYHKoZIzj0CAQYI\n\
KoZIzj0DAQcDQgAEWhEtO6QZj07Kog2jNbhS/ZGYziu3rat+hxmIpLlVfnX1C5jb\n\
P1XizzVZ+p+N74bMUaWjM1i7MFSsqBBlbU7vbaNTMFEwHQYDVR0OBBYEFGWTNGFE\n\
eR14EAaEAxPUg4uZUsM0MB8GA1UdIwQYMBaAFGWTNGFEeR14EAaEAxPUg4uZUsM0\n\
MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIgVTbSjsnAuso6dW7X\n\
4TrteIHr3TcDB/11k7vonAWE6ikCIGoLgGb66OQl0BJwkH8CTec4kDMiwN5WkNbk\n\
O5S+1Z3z\n\
-----END CERTIFICATE-----\n\
";
}

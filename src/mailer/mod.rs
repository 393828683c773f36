//! Escalation email (SPEC section 7): composing the message an on-call Exchange administrator reads, and sending
//! already formatted messages through the configured transport (an outbox of `.eml` files, or SMTP).
//!
//! This module owns the email's words, headers and transports. It knows nothing of HTTP or SQL: the engine hands it
//! plain views of an incident, stores the formatted bytes in its queue, and later asks [`Mailer::deliver`] to send
//! them, retrying as [`DeliveryError::permanent`] says.
//!
//! - [`compose`] and [`subject`]: the message, `multipart/alternative` with plain text and HTML (`content`).
//! - [`recipients`] and [`notifies`]: who is told, and which endings send an email at all (`routing`, pure).
//! - [`Mailer`]: the transport, built once from settings (`transport`); [`compose_test`] is the message that
//!   `check-config --send-test-email` sends through it.

mod content;
mod pinned;
mod retry;
mod routing;
mod settings;
mod transport;

use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::Message;

use crate::domain::ServerName;
use crate::store::{AlertSummary, IncidentView};

pub use content::Request;
pub use retry::RetryPolicy;
pub use routing::{notifies, recipients, Names, Pattern, Route, RouteError};
pub use settings::{
    EmailConfig, EmailRouteConfig, MailTransportKind, NotifyOn, SmtpConfig, SmtpTls,
};
pub use transport::{Accepted, Conversation, Mailer};

/// The name every subject starts with, so that mail rules can sort escalations.
pub const SUBJECT_PREFIX: &str = "[healthset-responder]";

/// What an escalation email is made from.
#[derive(Debug, Clone, Copy)]
pub struct Escalation<'a> {
    /// The incident, with its final state and reason, and its steps (`steps: Some`) for the timeline.
    pub incident: &'a IncidentView,
    /// The incident's alerts, oldest first: the first one opened it.
    pub alerts: &'a [AlertSummary],
    /// Mailbox servers left with database activation disabled.
    pub activation_disabled: &'a [ServerName],
    /// Mailbox servers whose activation was already disabled before the responder's failover: left as found.
    pub activation_left_as_found: &'a [ServerName],
    /// Escalations for the same server, health set and monitor held back since the last email.
    pub suppressed_escalations: u32,
}

/// A configuration problem found while composing or setting up mail; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("{key}: {message}")]
    Config { key: String, message: String },
    #[error("cannot build the escalation message: {0}")]
    Message(String),
}

impl MailError {
    fn config(key: impl Into<String>, message: impl std::fmt::Display) -> Self {
        MailError::Config { key: key.into(), message: message.to_string() }
    }
}

/// Why a delivery failed. `permanent` is set when the SMTP server refused with a 5xx answer (or the envelope can
/// never be valid): retrying the same message will not help. Everything else (connection failure, timeout, 4xx,
/// a full disk) is worth another try.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    pub permanent: bool,
    pub message: String,
}

impl DeliveryError {
    pub fn transient(message: impl Into<String>) -> Self {
        DeliveryError { permanent: false, message: message.into() }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        DeliveryError { permanent: true, message: message.into() }
    }
}

/// `"recovered"` for the optional notice that a remedy worked, else `"escalation"` (states escalated and blocked).
pub fn kind(escalation: &Escalation) -> &'static str {
    if escalation.incident.state.trim().eq_ignore_ascii_case("recovered") {
        "recovered"
    } else {
        "escalation"
    }
}

/// `[healthset-responder] ESCALATED: ActiveSync ActiveSyncCTPMonitor on cas01.contoso.com`, with `DRY RUN` before
/// the state for a dry-run incident. Built from validated names, and still stripped of anything but one line.
pub fn subject(escalation: &Escalation) -> String {
    let incident = escalation.incident;
    let word = |text: &str| {
        content::line(text).chars().filter(|c| !c.is_whitespace()).take(128).collect::<String>()
    };
    let state = match word(&incident.state).to_ascii_uppercase() {
        state if state.is_empty() => "ENDED".to_owned(),
        state => state,
    };
    let monitor = incident
        .monitor
        .as_deref()
        .or(escalation.alerts.first().and_then(|a| a.monitor.as_deref()))
        .map(word)
        .filter(|m| !m.is_empty());
    let what = match monitor {
        Some(monitor) => format!("{} {monitor}", word(&incident.health_set)),
        None => word(&incident.health_set),
    };
    let dry_run = if incident.dry_run { "DRY RUN " } else { "" };
    format!("{SUBJECT_PREFIX} {dry_run}{state}: {what} on {}", word(&incident.server))
}

/// Builds the message: `multipart/alternative` with a plain text part and an HTML part carrying the same facts.
/// What it says follows the incident's state ([`kind`]): an escalation for escalated and blocked (marked important,
/// with Microsoft Support guidance), a calm notice for recovered. `from` and `to` are the `[email]` settings; the
/// errors name those keys.
pub fn compose(escalation: &Escalation, from: &str, to: &[String]) -> Result<Message, MailError> {
    compose_for(escalation, from, to, None)
}

/// Like [`compose`], for a service people reach at `public_url` (the `public_url` setting): the email links the
/// incident's page there, and its commands carry `--url` so that they work from any machine.
pub fn compose_for(
    escalation: &Escalation,
    from: &str,
    to: &[String],
    public_url: Option<&str>,
) -> Result<Message, MailError> {
    let content = content::Content::new(escalation, public_url);
    build(escalation, subject(escalation), kind(escalation) == "escalation", content, from, to)
}

/// The email that asks for a decision on `request`: the proposal, its exact commands, why (the timeline, the latest
/// probe), the deadline, and the approval page's links. Sent to `approval.to` through the same outbox.
pub fn compose_request(
    escalation: &Escalation,
    request: &Request,
    from: &str,
    to: &[String],
    public_url: Option<&str>,
) -> Result<Message, MailError> {
    let content = content::Content::new(escalation, public_url).ask(request);
    build(escalation, request_subject(escalation, request), true, content, from, to)
}

/// The notification kind of an approval request.
pub const REQUEST_KIND: &str = "approval_request";

/// `[healthset-responder] APPROVAL NEEDED: restart_server on mbx01.contoso.com (ActiveSync ActiveSyncDeepTestMonitor)`.
pub fn request_subject(escalation: &Escalation, request: &Request) -> String {
    let what = subject(escalation);
    let about = what.split_once(": ").map_or(what.as_str(), |(_, about)| about);
    let action = content::line(request.proposal).split(' ').next().unwrap_or_default().to_owned();
    let dry_run = if escalation.incident.dry_run { "DRY RUN " } else { "" };
    format!(
        "{SUBJECT_PREFIX} {dry_run}APPROVAL NEEDED: {action} on {} ({})",
        content::line(request.server),
        about.replacen(" on ", " alert on ", 1)
    )
}

fn build(
    escalation: &Escalation,
    subject: String,
    important: bool,
    content: content::Content,
    from: &str,
    to: &[String],
) -> Result<Message, MailError> {
    let mut sender: Mailbox = from.trim().parse().map_err(|e| {
        MailError::config("email.from", format!("{from:?} is not an email address ({e})"))
    })?;
    if sender.name.is_none() {
        sender.name = Some("healthset-responder".to_owned());
    }
    if to.is_empty() {
        return Err(MailError::config("email.to", "is empty; escalations need a recipient"));
    }
    let domain = sender.email.domain().to_owned();
    let mut builder = Message::builder()
        .from(sender)
        .subject(subject.clone())
        .message_id(Some(format!("<{}@{}>", uuid::Uuid::now_v7().simple(), domain)))
        .date_now();
    for (i, recipient) in to.iter().enumerate() {
        let mailbox: Mailbox = recipient.trim().parse().map_err(|e| {
            MailError::config(
                format!("email.to[{i}]"),
                format!("{recipient:?} is not an email address ({e})"),
            )
        })?;
        builder = builder.to(mailbox);
    }
    // RFC 3834: an automatic message; Exchange's own header keeps out-of-office replies away from the sender.
    builder = builder.raw_header(HeaderValue::new(
        HeaderName::new_from_ascii_str("Auto-Submitted"),
        "auto-generated".to_owned(),
    ));
    builder = builder.raw_header(HeaderValue::new(
        HeaderName::new_from_ascii_str("X-Auto-Response-Suppress"),
        "All".to_owned(),
    ));
    if important {
        builder = builder.raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Importance"),
            "high".to_owned(),
        ));
    }
    builder = builder.raw_header(HeaderValue::new(
        HeaderName::new_from_ascii_str("X-Healthset-Responder-Incident"),
        content::line(&escalation.incident.id),
    ));

    let part = |content_type: ContentType, body: String| {
        SinglePart::builder()
            .header(content_type)
            .header(ContentTransferEncoding::QuotedPrintable)
            .body(body)
    };
    let body = MultiPart::alternative()
        .singlepart(part(ContentType::TEXT_PLAIN, content.text()))
        .singlepart(part(ContentType::TEXT_HTML, content.html(&subject)));
    builder.multipart(body).map_err(|e| MailError::Message(e.to_string().to_lowercase()))
}

/// The message `check-config --send-test-email` sends: plain text saying where it came from and through which
/// transport, so that whoever receives it knows escalations will reach them the same way.
pub fn compose_test(from: &str, to: &[String], transport: &str) -> Result<Message, MailError> {
    let sender: Mailbox = from.trim().parse().map_err(|e| {
        MailError::config("email.from", format!("{from:?} is not an email address ({e})"))
    })?;
    if to.is_empty() {
        return Err(MailError::config("email.to", "is empty; escalations need a recipient"));
    }
    let host = hostname();
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC");
    let domain = sender.email.domain().to_owned();
    let mut builder = Message::builder()
        .from(sender)
        .subject(format!("{SUBJECT_PREFIX} TEST: escalation email from {host}"))
        .message_id(Some(format!("<{}@{}>", uuid::Uuid::now_v7().simple(), domain)))
        .date_now()
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".to_owned(),
        ))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Auto-Response-Suppress"),
            "All".to_owned(),
        ));
    for (i, recipient) in to.iter().enumerate() {
        let mailbox: Mailbox = recipient.trim().parse().map_err(|e| {
            MailError::config(
                format!("email.to[{i}]"),
                format!("{recipient:?} is not an email address ({e})"),
            )
        })?;
        builder = builder.to(mailbox);
    }
    let body = format!(
        "This is a test message from healthset-responder on {host}, sent at {now} by\n\n  \
         healthset-responder check-config --send-test-email\n\n\
         through {transport}.\n\n\
         If you are reading it, escalation emails about Exchange ActiveSync health sets will reach you the same way.\n\
         Nothing needs doing.\n"
    );
    builder
        .singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .header(ContentTransferEncoding::QuotedPrintable)
                .body(body),
        )
        .map_err(|e| MailError::Message(e.to_string().to_lowercase()))
}

/// This machine's name, for the test message; one clean line.
fn hostname() -> String {
    let name = lettre::transport::smtp::extension::ClientId::default().to_string();
    let name = content::line(&name);
    if name.is_empty() {
        "this host".to_owned()
    } else {
        name
    }
}

/// The envelope of a delivery; a bad address can never succeed, so it is a permanent failure.
fn envelope(from: &str, to: &[String]) -> Result<lettre::address::Envelope, DeliveryError> {
    // Accept "Name <address>" as well as a bare address.
    let parse = |text: &str| {
        text.trim().parse::<Mailbox>().map(|m| m.email).map_err(|e| {
            DeliveryError::permanent(format!("{text:?} is not an email address ({e})"))
        })
    };
    let from = parse(from)?;
    if to.is_empty() {
        return Err(DeliveryError::permanent("no recipient"));
    }
    let to = to.iter().map(|t| parse(t)).collect::<Result<Vec<_>, _>>()?;
    lettre::address::Envelope::new(Some(from), to)
        .map_err(|e| DeliveryError::permanent(format!("bad envelope: {e}")))
}

#[cfg(test)]
mod tests;

//! Approvals: which changes wait for a person, the token that lets a link decide, and how a decision is told.
//!
//! `[approval] actions` names the mutating actions that need a person's yes. The planner asks before such a step
//! (a Mailbox server's restart once, before its failover, for the whole procedure); the engine checks throttles and
//! silences first, journals an `approval` step `requested`, and queues the request email with two links. The link's
//! token is random and goes out only in that email: the store keeps its SHA-256, bound to the incident and the
//! step, so a copy of the database cannot decide anything. Every decision (the link, the operator's page, the admin
//! API and the CLI through it, or the timeout) is recorded by one function, the store's `decide`, in one
//! transaction: the first decision wins, and a token whose approval was decided, expired or ended is void (`410`).

use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::domain::Dur;
use crate::incident::{ActionKind, Outcome};

/// `[approval]`: the changes that wait for a person's decision.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalConfig {
    /// Mutating action names, e.g. `["disable_activation", "restart_server"]`.
    pub actions: Vec<String>,
    pub timeout: Dur,
    /// Who is asked; empty means the escalation recipients.
    pub to: Vec<String>,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        ApprovalConfig { actions: Vec::new(), timeout: Dur::minutes(30), to: Vec::new() }
    }
}

/// `[approval]`, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The mutating actions that wait for a person; none by default.
    pub actions: Vec<ActionKind>,
    /// No decision by then: the incident ends `blocked` and escalates.
    pub timeout: Duration,
    /// Who is asked; empty means the escalation recipients.
    pub to: Vec<String>,
}

/// A link's secret: 32 random bytes, URL-safe. Only its hash is stored.
pub struct Token(String);

impl Token {
    /// A fresh token from the operating system's random source.
    pub fn random() -> Token {
        Token(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the store keeps of a token, and looks a presented one up by.
    pub fn hash(text: &str) -> [u8; 32] {
        Sha256::digest(text.as_bytes()).into()
    }
}

/// A person's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Deny,
}

impl Verdict {
    pub fn parse(text: &str) -> Option<Verdict> {
        match text {
            "approve" => Some(Verdict::Approve),
            "deny" => Some(Verdict::Deny),
            _ => None,
        }
    }

    pub fn outcome(self) -> Outcome {
        match self {
            Verdict::Approve => Outcome::Approved,
            Verdict::Deny => Outcome::Denied,
        }
    }
}

/// Where a decision came from: journaled with it, and named in the escalation a denial sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The link in the request email (its token).
    Link,
    /// The operator's page, behind its login.
    Page,
    /// `POST /v1/incidents/{id}/approve|deny`, which `healthset-responder approve|deny` calls.
    Api,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Link => "link",
            Via::Page => "page",
            Via::Api => "api",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Via::Link => "through the link in the approval email",
            Via::Page => "on the operator's page",
            Via::Api => {
                "through the admin API (healthset-responder approve|deny, or a client of the API)"
            }
        }
    }
}

/// The journal's words for a person's decision: how it was given and why.
pub fn detail(via: Via, reason: Option<&str>) -> String {
    match reason.map(str::trim).filter(|r| !r.is_empty()) {
        Some(reason) => format!("{}; reason: {reason}", via.describe()),
        None => format!("{}; no reason given", via.describe()),
    }
}

/// The journal's words for an approval nobody gave in time.
pub fn expired_detail(timeout: Duration) -> String {
    format!(
        "because nobody decided within {} (approval.timeout)",
        humantime::format_duration(timeout)
    )
}

/// The longest reason kept; a longer one is refused, naming the limit.
pub const MAX_REASON: usize = 1000;

/// Checks a reason a person gave: `Err` names what is wrong.
pub fn check_reason(reason: Option<&str>) -> Result<(), String> {
    match reason {
        Some(reason) if reason.chars().count() > MAX_REASON => {
            Err(format!("reason: longer than {MAX_REASON} characters"))
        }
        Some(reason) if reason.chars().any(|c| c.is_control() && c != '\n') => {
            Err("reason: holds control characters".to_owned())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unguessable_and_only_their_hash_identifies_them() {
        let (a, b) = (Token::random(), Token::random());
        assert_ne!(a.as_str(), b.as_str());
        assert_eq!(a.as_str().len(), 43, "32 bytes, URL-safe base64 without padding");
        assert!(
            a.as_str().bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
            "fits a URL path as is"
        );
        assert_eq!(Token::hash(a.as_str()), Token::hash(a.as_str()));
        assert_ne!(Token::hash(a.as_str()), Token::hash(b.as_str()));
    }

    #[test]
    fn a_decision_says_how_it_was_given_and_why() {
        assert_eq!(
            detail(Via::Page, Some(" not during the backup window ")),
            "on the operator's page; reason: not during the backup window"
        );
        assert_eq!(
            detail(Via::Link, Some("")),
            "through the link in the approval email; no reason given"
        );
        assert_eq!(
            expired_detail(Duration::from_secs(1800)),
            "because nobody decided within 30m (approval.timeout)"
        );
        assert!(check_reason(Some(&"x".repeat(MAX_REASON + 1)))
            .unwrap_err()
            .contains("longer than 1000"));
        assert!(check_reason(Some("a\u{7}b")).is_err());
        assert!(check_reason(Some("two\nlines")).is_ok());
    }
}

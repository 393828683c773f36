//! One normalised [`Alert`] from every source format.
//!
//! Each submodule turns the raw body of one route into alerts; this module owns the shared types and the error that
//! tells a sender which field is wrong. Nothing here knows HTTP or SQL: the body arrives as bytes that were already
//! authenticated.

pub mod native;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::{HealthSet, Monitor, ServerName};

/// The route a delivery came in on, which fixes how its body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Native,
    Scom,
    Alertmanager,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Native => "native",
            Format::Scom => "scom",
            Format::Alertmanager => "alertmanager",
        }
    }

    pub fn parse_name(name: &str) -> Option<Self> {
        [Format::Native, Format::Scom, Format::Alertmanager].into_iter().find(|f| f.as_str() == name)
    }
}

/// Whether the source says the problem is happening or is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    #[default]
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// An alert as the engine sees it, whatever format it arrived in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// The source's own identity for this notice (native `id`, SCOM `alertId`, Alertmanager fingerprint and
    /// `startsAt`), with the status, so that the same notice delivered twice is recognised as a duplicate while a
    /// later resolved notice of the same alert is not.
    pub source_key: Option<String>,
    pub health_set: HealthSet,
    pub server: ServerName,
    pub monitor: Option<Monitor>,
    pub mailbox_hint: Option<ServerName>,
    pub message: String,
    pub status: AlertStatus,
    pub raised_at: Option<DateTime<Utc>>,
}

/// Why a body is not an alert. `Malformed` is not JSON at all (HTTP 400); `Invalid` is JSON that is not a valid
/// alert, and names the field (HTTP 422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("malformed JSON: {0}")]
    Malformed(String),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

impl ParseError {
    pub fn invalid(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        ParseError::Invalid { field: field.into(), message: message.to_string() }
    }
}

/// Reads JSON into `T`, sorting failures into "not JSON" and "JSON of the wrong shape, at this field".
pub(crate) fn from_json<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, ParseError> {
    use serde_json::error::Category;
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        match inner.classify() {
            Category::Data if !body.trim_ascii_start().starts_with(b"{") => ParseError::invalid("body", "expected a JSON object"),
            Category::Data => ParseError::invalid(if path == "." { "body".to_owned() } else { path }, inner),
            Category::Syntax | Category::Eof | Category::Io => ParseError::Malformed(inner.to_string()),
        }
    })?;
    deserializer.end().map_err(|err| ParseError::Malformed(err.to_string()))?;
    Ok(value)
}

/// Reads the alerts of one delivery.
pub fn parse(format: Format, body: &[u8]) -> Result<Vec<Alert>, ParseError> {
    match format {
        Format::Native => native::parse(body).map(|alert| vec![alert]),
        Format::Scom | Format::Alertmanager => Err(ParseError::invalid("format", format!("the {} format is not accepted yet", format.as_str()))),
    }
}

/// Parses a field with a name type, naming the field when it is wrong.
pub(crate) fn field<T, E: std::fmt::Display>(name: &str, raw: &str, parse: impl FnOnce(&str) -> Result<T, E>) -> Result<T, ParseError> {
    parse(raw).map_err(|err| ParseError::invalid(name, err))
}

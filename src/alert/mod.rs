//! One normalised [`Alert`] from every source format.
//!
//! Each submodule turns the raw body of one route into alerts; this module owns the shared types and the error that
//! tells a sender which field is wrong. Nothing here knows HTTP or SQL: the body arrives as bytes that were already
//! authenticated.

pub mod alertmanager;
pub mod native;
pub mod scom;

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
        [Format::Native, Format::Scom, Format::Alertmanager]
            .into_iter()
            .find(|f| f.as_str() == name)
    }
}

/// Whether the source says the problem is happening or is over.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema, Default,
)]
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
            Category::Data if !body.trim_ascii_start().starts_with(b"{") => {
                ParseError::invalid("body", "expected a JSON object")
            }
            // An unknown key that is itself empty has an empty path: the body is what names it then.
            Category::Data => ParseError::invalid(
                if path == "." || path.is_empty() { "body".to_owned() } else { path },
                inner,
            ),
            Category::Syntax | Category::Eof | Category::Io => {
                ParseError::Malformed(inner.to_string())
            }
        }
    })?;
    deserializer.end().map_err(|err| ParseError::Malformed(err.to_string()))?;
    Ok(value)
}

/// Reads the alerts of one delivery, recognising the names of the built-in runbooks.
pub fn parse(format: Format, body: &[u8]) -> Result<Delivery, ParseError> {
    parse_with(format, body, crate::runbook::built_in())
}

/// Reads the alerts of one delivery; SCOM and Alertmanager alerts are recognised by the runbooks in force.
pub fn parse_with(
    format: Format,
    body: &[u8],
    runbooks: &crate::runbook::RunbookSet,
) -> Result<Delivery, ParseError> {
    match format {
        Format::Native => {
            native::parse(body).map(|alert| Delivery { alerts: vec![alert], truncated_alerts: 0 })
        }
        Format::Scom => scom::parse_with(body, runbooks)
            .map(|alert| Delivery { alerts: vec![alert], truncated_alerts: 0 }),
        Format::Alertmanager => alertmanager::parse_with(body, runbooks)
            .map(|n| Delivery { alerts: n.alerts, truncated_alerts: n.truncated_alerts }),
    }
}

/// The alerts of one delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub alerts: Vec<Alert>,
    /// Alerts the sender left out (Alertmanager's `truncatedAlerts`, when `max_alerts` cut the group).
    pub truncated_alerts: u64,
}

/// Parses a field with a name type, naming the field when it is wrong.
pub(crate) fn field<T, E: std::fmt::Display>(
    name: &str,
    raw: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, ParseError> {
    parse(raw).map_err(|err| ParseError::invalid(name, err))
}

#[cfg(test)]
pub(crate) mod tests {
    //! Checks shared by the parsers' tests, and properties of the name types every parser relies on.

    use proptest::prelude::*;

    use super::*;
    use crate::domain::mailbox_hint;

    /// Every refusal is one a sender can act on: a JSON syntax error, or a named field and what is wrong with it.
    pub(crate) fn assert_actionable(err: &ParseError) {
        match err {
            ParseError::Malformed(message) => {
                assert!(!message.is_empty(), "empty malformed message")
            }
            ParseError::Invalid { field, message } => {
                assert!(!field.is_empty(), "empty field in {err:?}");
                assert!(!message.is_empty(), "empty message in {err:?}");
                assert!(
                    !message.starts_with(|c: char| c.is_ascii_uppercase()),
                    "message starts upper-case: {err:?}"
                );
                assert!(!message.ends_with('.'), "message ends with a period: {err:?}");
            }
        }
    }

    /// One way of damaging a payload.
    #[derive(Debug, Clone)]
    enum Mutation {
        FlipBit { at: usize, bit: u8 },
        Truncate { at: usize },
        Insert { at: usize, text: &'static str },
        Delete { at: usize },
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        const INSERTS: [&str; 16] = [
            "\"", "{", "}", "[", "]", ",", ":", "\\", "\\u", "0", "x", " ", "é", "\u{0}", "_Mbx:",
            "null",
        ];
        prop_oneof![
            (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
            any::<usize>().prop_map(|at| Mutation::Truncate { at }),
            (any::<usize>(), prop::sample::select(INSERTS.as_slice()))
                .prop_map(|(at, text)| Mutation::Insert { at, text }),
            any::<usize>().prop_map(|at| Mutation::Delete { at }),
        ]
    }

    fn apply(mut body: Vec<u8>, mutation: &Mutation) -> Vec<u8> {
        let len = body.len();
        match *mutation {
            Mutation::FlipBit { at, bit } if len > 0 => body[at % len] ^= 1 << bit,
            Mutation::Truncate { at } => body.truncate(at % (len + 1)),
            Mutation::Insert { at, text } => {
                let at = at % (len + 1);
                body.splice(at..at, text.bytes());
            }
            Mutation::Delete { at } if len > 0 => {
                body.remove(at % len);
            }
            _ => {}
        }
        body
    }

    /// A real payload damaged in a few places: flipped bits, a cut, inserted or deleted characters.
    pub(crate) fn damaged(payloads: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
        (prop::sample::select(payloads), prop::collection::vec(mutation(), 1..6)).prop_map(
            |(payload, mutations)| mutations.iter().fold(payload.as_bytes().to_vec(), apply),
        )
    }

    /// A real payload with one of its string values replaced by arbitrary text, which reaches the parsers' text
    /// scanning rather than stopping at the JSON syntax.
    pub(crate) fn with_text_replaced(
        payloads: &'static [&'static str],
    ) -> impl Strategy<Value = Vec<u8>> {
        (prop::sample::select(payloads), any::<usize>(), any::<String>()).prop_map(
            |(payload, index, text)| {
                let mut value: serde_json::Value =
                    serde_json::from_str(payload).expect("fixtures are JSON");
                let mut strings = Vec::new();
                collect_strings(&mut value, &mut strings);
                let count = strings.len();
                if count > 0 {
                    *strings.swap_remove(index % count) = text;
                }
                serde_json::to_vec(&value).expect("a JSON value serialises")
            },
        )
    }

    fn collect_strings<'a>(value: &'a mut serde_json::Value, strings: &mut Vec<&'a mut String>) {
        match value {
            serde_json::Value::String(text) => strings.push(text),
            serde_json::Value::Array(items) => {
                items.iter_mut().for_each(|item| collect_strings(item, strings))
            }
            serde_json::Value::Object(map) => {
                map.values_mut().for_each(|item| collect_strings(item, strings))
            }
            _ => {}
        }
    }

    /// Native alerts as senders post them, for the damaging strategies.
    const NATIVE_PAYLOADS: &[&str] = &[
        r#"{"id":"nagios-4711","health_set":"ActiveSync","server":"cas01.contoso.com","monitor":"ActiveSyncCTPMonitor","message":"CTP probe failed _Mbx:mbx01.contoso.com","status":"firing","raised_at":"2026-11-26T10:00:00Z"}"#,
        r#"{"health_set":"ActiveSync","server":"MBX01","status":"resolved"}"#,
    ];

    /// A host name as DNS allows it, in mixed case.
    fn host_name() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9]([a-zA-Z0-9-]{0,12}[a-zA-Z0-9])?(\\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,12}[a-zA-Z0-9])?){0,4}"
    }

    #[test]
    fn an_empty_unknown_key_is_named_through_the_body() {
        let err = parse(Format::Native, br#"{"health_set":"ActiveSync","server":"cas01","":1}"#)
            .unwrap_err();
        assert!(err.to_string().starts_with("body: unknown field ``"), "{err}");
    }

    #[test]
    fn formats_reach_their_parsers() {
        let scom = r#"{"alertName":"ActiveSync health set unhealthy (ActiveSyncCTPMonitor)","managedEntityPath":"cas01.contoso.com"}"#;
        let alerts = parse(Format::Scom, scom.as_bytes()).unwrap().alerts;
        assert_eq!((alerts.len(), alerts[0].server.as_str()), (1, "cas01.contoso.com"));
        let alertmanager = r#"{"version":"4","alerts":[{"status":"firing","labels":{"health_set":"ActiveSync","instance":"cas01:9182"},"startsAt":"2026-11-26T10:00:00Z"},
            {"status":"resolved","labels":{"health_set":"ActiveSync","server":"cas02"},"startsAt":"2026-11-26T10:00:00Z"}]}"#;
        let alerts = parse(Format::Alertmanager, alertmanager.as_bytes()).unwrap().alerts;
        assert_eq!(
            alerts.iter().map(|alert| alert.server.as_str()).collect::<Vec<_>>(),
            ["cas01", "cas02"]
        );
        assert_eq!(
            parse(Format::Alertmanager, b"{\"version\":\"4\",\"alerts\":[]}")
                .unwrap_err()
                .to_string(),
            "alerts: is empty, expected at least one alert"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn server_names_are_stored_lower_case_and_parse_again(raw in any::<String>()) {
            if let Ok(name) = ServerName::parse(&raw) {
                prop_assert_eq!(name.as_str(), name.as_str().to_ascii_lowercase());
                prop_assert!(name.as_str().len() <= 253);
                prop_assert_eq!(ServerName::parse(name.as_str()).unwrap(), name);
            }
        }

        #[test]
        fn host_names_are_accepted_whatever_their_case(host in host_name()) {
            let name = ServerName::parse(&host).unwrap();
            prop_assert_eq!(name.as_str(), host.to_ascii_lowercase());
        }

        #[test]
        fn mailbox_hint_is_a_host_name_that_follows_the_token(message in any::<String>()) {
            if let Some(hint) = mailbox_hint(&message) {
                let message = message.to_ascii_lowercase();
                prop_assert!(message.contains(&format!("_mbx:{hint}")), "{hint} is not after _Mbx: in {message:?}");
            }
        }

        #[test]
        fn hostile_bytes_on_every_route_get_a_typed_error_or_a_valid_alert(
            format in prop::sample::select(vec![Format::Native, Format::Scom, Format::Alertmanager]),
            body in prop::collection::vec(any::<u8>(), 0..2048),
        ) {
            match parse(format, &body) {
                Ok(delivery) => prop_assert!(!delivery.alerts.is_empty()),
                Err(err) => assert_actionable(&err),
            }
        }

        #[test]
        fn damaged_native_alerts_get_a_typed_error_or_a_valid_alert(body in damaged(NATIVE_PAYLOADS)) {
            match parse(Format::Native, &body) {
                Ok(delivery) => prop_assert_eq!(delivery.alerts.len(), 1),
                Err(err) => assert_actionable(&err),
            }
        }

        #[test]
        fn native_alerts_with_any_text_in_a_field_get_a_typed_error_or_a_valid_alert(body in with_text_replaced(NATIVE_PAYLOADS)) {
            if let Err(err) = parse(Format::Native, &body) {
                assert_actionable(&err);
            }
        }

        #[test]
        fn mailbox_hint_finds_the_diagnostics_token(prefix in "[^_]{0,40}", host in host_name(), suffix in ".{0,40}", token in "_(Mbx|MBX|mbx):") {
            let message = format!("{prefix}_Cas:CAS01.contoso.com{token}{host}_Dc:DC01.contoso.com{suffix}");
            let hint = mailbox_hint(&message);
            let host = host.to_ascii_lowercase();
            prop_assert_eq!(hint.as_ref().map(ServerName::as_str), Some(host.as_str()));
        }
    }
}

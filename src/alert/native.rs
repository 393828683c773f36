//! The native alert format of `POST /v1/alerts` (`schemas/alert.schema.json`).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Deserialize;

use super::{field, from_json, Alert, AlertStatus, ParseError};
use crate::domain::{mailbox_hint, HealthSet, Monitor, ServerName};

/// A native alert: one health set on one server, usually naming the monitor.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "healthset-responder native alert")]
pub struct NativeAlert {
    /// The source's id for this alert; the same id and status again is a duplicate.
    #[serde(default)]
    pub id: Option<String>,
    /// The Managed Availability health set, e.g. `ActiveSync`.
    pub health_set: String,
    /// The server's DNS host name (FQDN or short).
    pub server: String,
    /// The monitor that turned unhealthy; when absent, `Get-ServerHealth` tells.
    #[serde(default)]
    pub monitor: Option<String>,
    /// The alert text; an `_Mbx:<host>` token names the Mailbox server behind a CAS probe.
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub status: AlertStatus,
    /// When the source raised the alert (RFC 3339).
    #[serde(default)]
    pub raised_at: Option<DateTime<Utc>>,
}

pub fn parse(body: &[u8]) -> Result<Alert, ParseError> {
    let raw: NativeAlert = from_json(body)?;
    let id = match raw.id {
        Some(id) if id.trim().is_empty() => {
            return Err(ParseError::invalid("id", "is empty; leave it out instead"))
        }
        Some(id) if id.len() > 256 => {
            return Err(ParseError::invalid("id", "is longer than 256 characters"))
        }
        other => other,
    };
    Ok(Alert {
        source_key: id.map(|id| format!("{id}/{}", raw.status.as_str())),
        health_set: field("health_set", &raw.health_set, HealthSet::parse)?,
        server: field("server", &raw.server, ServerName::parse)?,
        monitor: raw.monitor.as_deref().map(|m| field("monitor", m, Monitor::parse)).transpose()?,
        mailbox_hint: mailbox_hint(&raw.message),
        message: raw.message,
        status: raw.status,
        raised_at: raw.raised_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str, expected: Result<(&str, &str, Option<&str>, Option<&str>), &str>) {
        match (parse(body.as_bytes()), expected) {
            (Ok(alert), Ok((server, health_set, monitor, hint))) => {
                assert_eq!(alert.server.as_str(), server);
                assert_eq!(alert.health_set.as_str(), health_set);
                assert_eq!(alert.monitor.as_ref().map(|m| m.as_str()), monitor);
                assert_eq!(alert.mailbox_hint.as_ref().map(|s| s.as_str()), hint);
            }
            (Err(err), Err(want)) => assert!(err.to_string().contains(want), "{body}: {err}"),
            (got, want) => panic!("{body}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn native_alerts() {
        check(
            r#"{"health_set":"ActiveSync","server":"CAS01.contoso.com","monitor":"ActiveSyncCTPMonitor","message":"x_Mbx:MBX01.contoso.com_Dc:dc"}"#,
            Ok((
                "cas01.contoso.com",
                "ActiveSync",
                Some("ActiveSyncCTPMonitor"),
                Some("mbx01.contoso.com"),
            )),
        );
        check(
            r#"{"health_set":"ActiveSync","server":"mbx01"}"#,
            Ok(("mbx01", "ActiveSync", None, None)),
        );
        check(
            r#"{"health_set":"ActiveSync","server":"cas01 contoso"}"#,
            Err("server: \"cas01 contoso\" is not a host name"),
        );
        check(r#"{"server":"cas01"}"#, Err("missing field `health_set`"));
        check(
            r#"{"health_set":"ActiveSync","server":"cas01","monitr":"x"}"#,
            Err("unknown field `monitr`"),
        );
        check(
            r#"{"health_set":"ActiveSync","server":"cas01","status":"open"}"#,
            Err("unknown variant `open`"),
        );
        check(
            r#"{"health_set":"ActiveSync","server":"cas01","raised_at":"yesterday"}"#,
            Err("raised_at"),
        );
        check(r#"{"health_set":"ActiveSync","server":"cas01","monitor":"a b"}"#, Err("monitor:"));
        check(r#"{"health_set":"ActiveSync","#, Err("malformed JSON"));
        check(r#"[1,2]"#, Err("body: expected a JSON object"));
    }
}

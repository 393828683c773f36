//! The Prometheus Alertmanager format of `POST /v1/alerts/alertmanager`: the webhook notification of version "4".
//!
//! One notification carries a group of alerts; each becomes one [`Alert`], named by its labels `health_set`,
//! `server` (else `instance` without its port) and `monitor`. This module knows nothing of HTTP, nor of how
//! Alertmanager authenticates or retries.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use schemars::JsonSchema;
use serde::Deserialize;

use super::{field, from_json, Alert, AlertStatus, ParseError};
use crate::domain::{mailbox_hint, HealthSet, Monitor, ServerName};
use crate::runbook::RunbookSet;

/// The webhook notification Alertmanager posts to a `webhook_config` receiver. Keys beyond these are ignored, so that
/// a later Alertmanager that adds one is still understood.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "Prometheus Alertmanager webhook notification, version 4")]
pub struct AlertmanagerWebhook {
    /// The notification format's version; only `"4"` is accepted.
    pub version: String,
    /// Identifies the group of alerts the notification is about. Ignored.
    #[serde(default)]
    pub group_key: String,
    /// How many alerts Alertmanager left out because the receiver's `max_alerts` was reached.
    #[serde(default)]
    pub truncated_alerts: u64,
    /// `resolved` when every alert of the group is resolved, else `firing`. Ignored: each alert has its own status.
    #[serde(default)]
    pub status: AlertStatus,
    /// The receiver's name in the Alertmanager configuration. Ignored.
    #[serde(default)]
    pub receiver: String,
    /// The labels the group is formed by. Ignored.
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    /// The labels every alert of the group has. Ignored: each alert carries them in its own labels.
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    /// The annotations every alert of the group has. Ignored: each alert carries them in its own annotations.
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    /// Alertmanager's own address. Ignored.
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    /// The alerts of the group; each becomes one alert of the responder.
    pub alerts: Vec<AlertmanagerAlert>,
}

/// One alert of an Alertmanager notification.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerAlert {
    /// `firing`, or `resolved` for a resolved notice.
    pub status: AlertStatus,
    /// The alert's labels: `health_set` (required), `server` (else `instance`, whose `:port` is dropped) and
    /// `monitor` (optional; when absent, `Get-ServerHealth` tells which monitor is unhealthy).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The alert's annotations: the message is `message`, else `description`, else `summary`. An `_Mbx:<host>` token
    /// in it names the Mailbox server behind a Client Access probe.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// When the alert started firing; with the fingerprint and the status it identifies the notice.
    pub starts_at: DateTime<Utc>,
    /// When the alert ended; `0001-01-01T00:00:00Z` while it has not. Ignored.
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    /// The address of the rule that raised the alert. Ignored.
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    /// Alertmanager's identity of the alert's label set. The two Alertmanagers of a highly available pair both send
    /// each notice; the fingerprint, `startsAt` and the status make them one.
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// The alerts of one notification.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// One alert per element of `alerts`, in order.
    pub alerts: Vec<Alert>,
    /// How many further alerts Alertmanager left out (`truncatedAlerts`); they will come again in a later
    /// notification of the group, but not in this one.
    pub truncated_alerts: u64,
}

/// Reads an Alertmanager notification into its alerts.
pub fn parse(body: &[u8]) -> Result<Notification, ParseError> {
    parse_with(body, crate::runbook::built_in())
}

/// Reads a notification, recognising the health sets and monitors of `runbooks` (those in force): their names are
/// spelled as the runbooks spell them, and an alert whose rule sets a known `monitor` but no `health_set` takes the
/// monitor's health set.
pub fn parse_with(body: &[u8], runbooks: &RunbookSet) -> Result<Notification, ParseError> {
    let webhook: AlertmanagerWebhook = from_json(body).map_err(|err| match err {
        // A notification of another version may differ anywhere; saying so is more use than naming the first field
        // that differs.
        ParseError::Invalid { .. } => version_error(body).unwrap_or(err),
        ParseError::Malformed(_) => err,
    })?;
    if webhook.version != "4" {
        return Err(ParseError::invalid(
            "version",
            format!("is {:?}, only version \"4\" is accepted", short(&webhook.version)),
        ));
    }
    if webhook.alerts.is_empty() {
        return Err(ParseError::invalid("alerts", "is empty, expected at least one alert"));
    }
    let alerts = webhook
        .alerts
        .into_iter()
        .enumerate()
        .map(|(index, alert)| alert.into_alert(index, runbooks))
        .collect::<Result<_, _>>()?;
    Ok(Notification { alerts, truncated_alerts: webhook.truncated_alerts })
}

/// The error to give when a body that is not a valid notification is not of version "4" either.
fn version_error(body: &[u8]) -> Option<ParseError> {
    #[derive(Deserialize)]
    struct Versioned {
        version: Option<serde_json::Value>,
    }
    let versioned: Versioned = serde_json::from_slice(body).ok()?;
    match versioned.version {
        Some(serde_json::Value::String(version)) if version == "4" => None,
        Some(serde_json::Value::String(version)) => Some(ParseError::invalid(
            "version",
            format!("is {:?}, only version \"4\" is accepted", short(&version)),
        )),
        Some(other) => Some(ParseError::invalid(
            "version",
            format!("is {}, only the string \"4\" is accepted", short(&other.to_string())),
        )),
        None => Some(ParseError::invalid("version", "is missing, expected \"4\"")),
    }
}

impl AlertmanagerAlert {
    fn into_alert(self, index: usize, runbooks: &RunbookSet) -> Result<Alert, ParseError> {
        let label_field = |name: &str| format!("alerts[{index}].labels.{name}");
        let monitor = label(&self.labels, "monitor")
            .map(|raw| field(&label_field("monitor"), raw, Monitor::parse))
            .transpose()?;
        // A known monitor is spelled as its runbook spells it.
        let known = monitor.as_ref().map(|m| runbooks.for_monitor(m.as_str())).unwrap_or_default();
        let monitor = known.first().map(|(runbook, _)| runbook.monitor.clone()).or(monitor);
        let health_set = match (label(&self.labels, "health_set"), known.as_slice()) {
            (Some(raw), _) => {
                let health_set = field(&label_field("health_set"), raw, HealthSet::parse)?;
                runbooks
                    .health_set_names()
                    .into_iter()
                    .find(|known| known.matches(health_set.as_str()))
                    .cloned()
                    .unwrap_or(health_set)
            }
            (None, [(runbook, _)]) => runbook.health_set.clone(),
            (None, _) => {
                return Err(ParseError::invalid(
                    label_field("health_set"),
                    "is missing: the alert rule must set a health_set label",
                ))
            }
        };
        let server = match (label(&self.labels, "server"), label(&self.labels, "instance")) {
            (Some(raw), _) => field(&label_field("server"), raw, ServerName::parse)?,
            (None, Some(instance)) => {
                field(&label_field("instance"), instance, server_of_instance)?
            }
            (None, None) => {
                return Err(ParseError::invalid(
                    label_field("server"),
                    "is missing, and there is no instance label either",
                ))
            }
        };
        let message = ["message", "description", "summary"]
            .into_iter()
            .find_map(|name| label(&self.annotations, name))
            .unwrap_or_default()
            .to_owned();
        let starts_at = self.starts_at.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        let fingerprint = self.fingerprint.filter(|fingerprint| !fingerprint.trim().is_empty());
        if fingerprint.as_ref().is_some_and(|fingerprint| fingerprint.len() > 256) {
            return Err(ParseError::invalid(
                format!("alerts[{index}].fingerprint"),
                "is longer than 256 characters",
            ));
        }
        Ok(Alert {
            source_key: fingerprint
                .map(|fingerprint| format!("{fingerprint}/{starts_at}/{}", self.status.as_str())),
            health_set,
            server,
            monitor,
            mailbox_hint: mailbox_hint(&message),
            message,
            status: self.status,
            raised_at: Some(self.starts_at),
        })
    }
}

/// A label or annotation's value. Prometheus treats a label with an empty value as absent, and so does this.
fn label<'a>(map: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    map.get(name).map(String::as_str).filter(|value| !value.trim().is_empty())
}

/// The server an `instance` label names: `cas01.contoso.com:9182` is `cas01.contoso.com`.
fn server_of_instance(instance: &str) -> Result<ServerName, String> {
    if instance.starts_with('[') {
        return Err(format!(
            "{:?} is an IPv6 address, not a host name; give the alert a server label",
            short(instance)
        ));
    }
    let host = match instance.rsplit_once(':') {
        Some((host, port))
            if !port.is_empty() && port.bytes().all(|byte| byte.is_ascii_digit()) =>
        {
            host
        }
        _ => instance,
    };
    ServerName::parse(host).map_err(|err| format!("{err}; give the alert a server label"))
}

/// Keeps a quoted value in an error message short.
fn short(raw: &str) -> String {
    const MAX: usize = 40;
    match raw.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &raw[..cut]),
        None => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::alert::tests::{assert_actionable, damaged, with_text_replaced};

    const SINGLE_FIRING: &str =
        include_str!("../../tests/fixtures/alertmanager/single-firing.json");
    const GROUP_OF_THREE: &str =
        include_str!("../../tests/fixtures/alertmanager/group-of-three.json");
    const RESOLVED: &str = include_str!("../../tests/fixtures/alertmanager/resolved.json");
    const INSTANCE_ONLY: &str =
        include_str!("../../tests/fixtures/alertmanager/instance-only.json");
    const TRUNCATED: &str = include_str!("../../tests/fixtures/alertmanager/truncated.json");
    const EXAMPLE: &str = include_str!("../../examples/alertmanager-alert.json");

    /// One expected alert: source key, health set, server, monitor, mailbox hint, message, status, raised at.
    type Expected = (
        Option<&'static str>,
        &'static str,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        &'static str,
        AlertStatus,
        &'static str,
    );

    const CTP_MESSAGE: &str = "ActiveSyncCTPMonitor on CAS01.contoso.com is Unhealthy: ActiveSyncCTPProbe failed 5 consecutive times. Last error: Response: 401 Unauthorized; Diagnostics header:_Cas:CAS01.contoso.com_Mbx:MBX01.contoso.com_Dc:DC01.contoso.com_Proto:EAS";

    fn fixtures() -> Vec<(&'static str, u64, Vec<Expected>)> {
        use AlertStatus::{Firing, Resolved};
        vec![
            (
                SINGLE_FIRING,
                0,
                vec![(
                    Some("5f2d9a7c1e8b3f04/2026-11-26T09:58:12.345678901Z/firing"),
                    "ActiveSync",
                    "cas01.contoso.com",
                    Some("ActiveSyncCTPMonitor"),
                    Some("mbx01.contoso.com"),
                    CTP_MESSAGE,
                    Firing,
                    "2026-11-26T09:58:12.345678901Z",
                )],
            ),
            (
                GROUP_OF_THREE,
                0,
                vec![
                    (
                        Some("0b7e3c9d51a2f86e/2026-11-26T14:07:55Z/firing"),
                        "ActiveSync",
                        "cas01.contoso.com",
                        Some("RequestsQueuedGt500Monitor"),
                        None,
                        "More than 500 ActiveSync requests queued in MSExchangeSyncAppPool for 2 samples",
                        Firing,
                        "2026-11-26T14:07:55Z",
                    ),
                    (
                        Some("9d41f0a6c3e7b258/2026-11-26T14:09:30.500Z/firing"),
                        "ActiveSync",
                        "mbx02.contoso.com",
                        Some("ActiveSyncDeepTestMonitor"),
                        None,
                        "ActiveSyncDeepTestProbe failed 5 consecutive times: Response: 500 Internal Server Error",
                        Firing,
                        "2026-11-26T14:09:30.5Z",
                    ),
                    (
                        Some("e2c85b17a94d0f63/2026-11-26T14:11:02Z/firing"),
                        "ActiveSync.Protocol",
                        "mbx03.contoso.com",
                        None,
                        None,
                        "ActiveSync.Protocol health set unhealthy on mbx03.contoso.com",
                        Firing,
                        "2026-11-26T14:11:02Z",
                    ),
                ],
            ),
            (
                RESOLVED,
                0,
                vec![(
                    Some("5f2d9a7c1e8b3f04/2026-11-26T09:58:12.345678901Z/resolved"),
                    "ActiveSync",
                    "cas01.contoso.com",
                    Some("ActiveSyncCTPMonitor"),
                    Some("mbx01.contoso.com"),
                    CTP_MESSAGE,
                    Resolved,
                    "2026-11-26T09:58:12.345678901Z",
                )],
            ),
            (
                INSTANCE_ONLY,
                0,
                vec![(
                    Some("7a0e4d2b96c15f38/2026-11-26T12:31:47.902Z/firing"),
                    "ActiveSync.Proxy",
                    "cas02.contoso.com",
                    Some("ActiveSyncProxyTestMonitor"),
                    None,
                    "ActiveSync proxy test failing on CAS02.contoso.com",
                    Firing,
                    "2026-11-26T12:31:47.902Z",
                )],
            ),
            (
                TRUNCATED,
                7,
                vec![
                    (
                        Some("3c6f18e0d2a7b945/2026-11-26T16:00:05Z/firing"),
                        "ActiveSync",
                        "cas03.contoso.com",
                        Some("ActiveSyncCTPMonitor"),
                        None,
                        "ActiveSyncCTPProbe failed: Diagnostics header:_Cas:CAS03.contoso.com_Mbx:UnkownMailboxServer_Dc:DC02.contoso.com",
                        Firing,
                        "2026-11-26T16:00:05Z",
                    ),
                    (
                        Some("a81d5e2f07c4b6e9/2026-11-26T16:00:09Z/firing"),
                        "ActiveSync",
                        "cas04.contoso.com",
                        Some("ActiveSyncCTPMonitor"),
                        Some("mbx04.contoso.com"),
                        "ActiveSyncCTPProbe failed: Diagnostics header:_Cas:CAS04.contoso.com_Mbx:MBX04.contoso.com_Dc:DC02.contoso.com",
                        Firing,
                        "2026-11-26T16:00:09Z",
                    ),
                ],
            ),
        ]
    }

    fn alert_of(expected: &Expected) -> Alert {
        let (source_key, health_set, server, monitor, hint, message, status, raised_at) = *expected;
        Alert {
            source_key: source_key.map(str::to_owned),
            health_set: HealthSet::parse(health_set).unwrap(),
            server: ServerName::parse(server).unwrap(),
            monitor: monitor.map(|monitor| Monitor::parse(monitor).unwrap()),
            mailbox_hint: hint.map(|hint| ServerName::parse(hint).unwrap()),
            message: message.to_owned(),
            status,
            raised_at: Some(raised_at.parse().unwrap()),
        }
    }

    #[test]
    fn fixtures_normalise() {
        for (body, truncated_alerts, expected) in fixtures() {
            let want =
                Notification { alerts: expected.iter().map(alert_of).collect(), truncated_alerts };
            assert_eq!(parse(body.as_bytes()).unwrap(), want, "fixture {}", &body[..200]);
        }
    }

    #[test]
    fn example_is_an_activesync_alert() {
        let notification = parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(notification.alerts.len(), 1);
        assert_eq!(notification.alerts[0].health_set.as_str(), "ActiveSync");
        assert_eq!(
            notification.alerts[0].mailbox_hint.as_ref().map(ServerName::as_str),
            Some("mbx02.contoso.com")
        );
    }

    #[test]
    fn both_members_of_a_pair_give_the_same_key() {
        // The two Alertmanagers of a highly available pair may write the same instant differently.
        let with_start = |starts_at: &str| {
            let body = format!(
                r#"{{"version":"4","alerts":[{{"status":"firing","labels":{{"health_set":"ActiveSync","server":"cas01"}},"startsAt":"{starts_at}","fingerprint":"f1"}}]}}"#
            );
            parse(body.as_bytes()).unwrap().alerts.remove(0).source_key.unwrap()
        };
        assert_eq!(
            with_start("2026-11-26T10:00:00.500Z"),
            with_start("2026-11-26T11:00:00.5+01:00")
        );
        assert_eq!(with_start("2026-11-26T10:00:00Z"), "f1/2026-11-26T10:00:00Z/firing");
    }

    fn alert_body(alert: &str) -> String {
        format!(
            r#"{{"version":"4","alerts":[{{"status":"firing","labels":{{"health_set":"ActiveSync","server":"cas01"}},"startsAt":"2026-11-26T10:00:00Z"}},{alert}]}}"#
        )
    }

    #[test]
    fn refusals_name_the_field() {
        let cases: &[(String, &str)] = &[
            (SINGLE_FIRING.replace(r#""version": "4""#, r#""version": "3""#), r#"version: is "3", only version "4" is accepted"#),
            (SINGLE_FIRING.replace(r#""version": "4""#, r#""version": 4"#), r#"version: is 4, only the string "4" is accepted"#),
            (r#"{"alerts":[]}"#.to_owned(), r#"version: is missing, expected "4""#),
            (r#"{"version":"5","alerts":"changed"}"#.to_owned(), r#"version: is "5", only version "4" is accepted"#),
            (r#"{"version":"4","alerts":[]}"#.to_owned(), "alerts: is empty, expected at least one alert"),
            (r#"{"version":"4"}"#.to_owned(), "body: missing field `alerts`"),
            (r#"{"version":"4","alerts":{}}"#.to_owned(), "alerts: invalid type: map, expected a sequence"),
            (r#"["version","4"]"#.to_owned(), "body: expected a JSON object"),
            (
                alert_body(r#"{"status":"firing","labels":{"server":"cas02"},"startsAt":"2026-11-26T10:00:00Z"}"#),
                "alerts[1].labels.health_set: is missing: the alert rule must set a health_set label",
            ),
            (
                alert_body(r#"{"status":"firing","labels":{"health_set":"Active Sync","server":"cas02"},"startsAt":"2026-11-26T10:00:00Z"}"#),
                r#"alerts[1].labels.health_set: "Active Sync" is not a health set name: only letters, digits and "._-" are allowed"#,
            ),
            (
                alert_body(r#"{"status":"firing","labels":{"health_set":"ActiveSync"},"startsAt":"2026-11-26T10:00:00Z"}"#),
                "alerts[1].labels.server: is missing, and there is no instance label either",
            ),
            (
                alert_body(
                    r#"{"status":"firing","labels":{"health_set":"ActiveSync","server":"","instance":"[2001:db8::5]:9182"},"startsAt":"2026-11-26T10:00:00Z"}"#,
                ),
                r#"alerts[1].labels.instance: "[2001:db8::5]:9182" is an IPv6 address, not a host name; give the alert a server label"#,
            ),
            (
                alert_body(
                    r#"{"status":"firing","labels":{"health_set":"ActiveSync","instance":"https://mail.contoso.com/Microsoft-Server-ActiveSync"},"startsAt":"2026-11-26T10:00:00Z"}"#,
                ),
                r#"alerts[1].labels.instance: "https://mail.contoso.com/Microsoft-Server-ActiveSync" is not a host name: only letters, digits, '-' and '.' are allowed; give the alert a server label"#,
            ),
            (
                alert_body(r#"{"status":"firing","labels":{"health_set":"ActiveSync","server":"cas02:9182"},"startsAt":"2026-11-26T10:00:00Z"}"#),
                r#"alerts[1].labels.server: "cas02:9182" is not a host name: only letters, digits, '-' and '.' are allowed"#,
            ),
            (
                alert_body(
                    r#"{"status":"firing","labels":{"health_set":"ActiveSync","server":"cas02","monitor":"CTP Monitor"},"startsAt":"2026-11-26T10:00:00Z"}"#,
                ),
                r#"alerts[1].labels.monitor: "CTP Monitor" is not a monitor name: only letters, digits and "._-" are allowed"#,
            ),
            (
                alert_body(r#"{"status":"pending","labels":{"health_set":"ActiveSync","server":"cas02"},"startsAt":"2026-11-26T10:00:00Z"}"#),
                "alerts[1].status: unknown variant `pending`, expected `firing` or `resolved`",
            ),
            (alert_body(r#"{"status":"firing","labels":{"health_set":"ActiveSync","server":"cas02"}}"#), "alerts[1]: missing field `startsAt`"),
            (
                alert_body(r#"{"status":"firing","labels":{"health_set":"ActiveSync","server":"cas02"},"startsAt":"today"}"#),
                "alerts[1].startsAt: input contains invalid characters",
            ),
            (
                alert_body(r#"{"status":"firing","labels":{"health_set":"ActiveSync","server":null},"startsAt":"2026-11-26T10:00:00Z"}"#),
                "alerts[1].labels.server: invalid type: null, expected a string",
            ),
        ];
        for (body, want) in cases {
            let err = parse(body.as_bytes()).unwrap_err();
            assert_actionable(&err);
            assert!(err.to_string().starts_with(want), "{body}: {err}");
        }
    }

    #[test]
    fn labels_and_annotations() {
        let one = |alert: &str| parse(alert_body(alert).as_bytes()).unwrap().alerts.remove(1);
        let alert = one(
            r#"{"status":"resolved","labels":{"health_set":"ActiveSync","server":"","instance":"MBX01.contoso.com:9182","monitor":""},"annotations":{"message":" ","description":"d _Mbx:mbx02.contoso.com","summary":"s"},"startsAt":"2026-11-26T10:00:00Z","fingerprint":""}"#,
        );
        assert_eq!(alert.server.as_str(), "mbx01.contoso.com");
        assert_eq!(
            (alert.monitor, alert.source_key, alert.status),
            (None, None, AlertStatus::Resolved)
        );
        assert_eq!(alert.message, "d _Mbx:mbx02.contoso.com");
        assert_eq!(alert.mailbox_hint.as_ref().map(ServerName::as_str), Some("mbx02.contoso.com"));
        let alert = one(
            r#"{"status":"firing","labels":{"health_set":"ActiveSync","instance":"10.0.4.21"},"annotations":{"summary":"s"},"startsAt":"2026-11-26T10:00:00Z","extra":1}"#,
        );
        assert_eq!((alert.server.as_str(), alert.message.as_str()), ("10.0.4.21", "s"));
        let alert = one(
            r#"{"status":"firing","labels":{"health_set":"ActiveSync","server":"cas02"},"startsAt":"2026-11-26T10:00:00Z"}"#,
        );
        assert_eq!(alert.message, "");
    }

    #[test]
    fn schema_describes_the_notification() {
        let schema = serde_json::to_value(schemars::schema_for!(AlertmanagerWebhook)).unwrap();
        assert_eq!(schema["required"], serde_json::json!(["alerts", "version"]));
        assert!(
            schema["properties"]["externalURL"].is_object()
                && schema["properties"]["truncatedAlerts"].is_object()
        );
        let alert = &schema["definitions"]["AlertmanagerAlert"];
        assert_eq!(alert["required"], serde_json::json!(["startsAt", "status"]));
        assert!(alert["properties"]["generatorURL"].is_object());
    }

    static PAYLOADS: [&str; 6] =
        [SINGLE_FIRING, GROUP_OF_THREE, RESOLVED, INSTANCE_ONLY, TRUNCATED, EXAMPLE];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_are_refused_cleanly(body in prop::collection::vec(any::<u8>(), 0..512)) {
            if let Err(err) = parse(&body) {
                assert_actionable(&err);
            }
        }

        #[test]
        fn damaged_payloads_are_refused_cleanly(body in damaged(&PAYLOADS)) {
            match parse(&body) {
                Ok(notification) => prop_assert!(!notification.alerts.is_empty()),
                Err(err) => assert_actionable(&err),
            }
        }

        #[test]
        fn arbitrary_text_in_any_value_is_handled(body in with_text_replaced(&PAYLOADS)) {
            if let Err(err) = parse(&body) {
                assert_actionable(&err);
            }
        }
    }
}

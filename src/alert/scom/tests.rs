use proptest::prelude::*;

use super::*;
use crate::alert::tests::{assert_actionable, damaged, with_text_replaced};

const FIXTURES: [&str; 9] = [
    include_str!("../../../tests/fixtures/scom/ctp-firing.json"),
    include_str!("../../../tests/fixtures/scom/ctp-closed.json"),
    include_str!("../../../tests/fixtures/scom/deep-test.json"),
    include_str!("../../../tests/fixtures/scom/self-test.json"),
    include_str!("../../../tests/fixtures/scom/requests-queued.json"),
    include_str!("../../../tests/fixtures/scom/proxy-test.json"),
    include_str!("../../../tests/fixtures/scom/not-present.json"),
    include_str!("../../../tests/fixtures/scom/resolution-state-255.json"),
    include_str!("../../../tests/fixtures/scom/custom-fields.json"),
];

const EXAMPLE: &str = include_str!("../../../examples/scom-alert.json");

/// What a fixture should normalise to; the message is always the fixture's `alertDescription`.
struct Expected {
    source_key: Option<&'static str>,
    health_set: &'static str,
    server: &'static str,
    monitor: Option<&'static str>,
    mailbox_hint: Option<&'static str>,
    status: AlertStatus,
    raised_at: Option<&'static str>,
}

fn expected() -> [Expected; 9] {
    use AlertStatus::{Firing, Resolved};
    let ctp = |source_key, status| Expected {
        source_key: Some(source_key),
        health_set: "ActiveSync",
        server: "cas01.contoso.com",
        monitor: Some("ActiveSyncCTPMonitor"),
        mailbox_hint: Some("mbx01.contoso.com"),
        status,
        raised_at: Some("2026-11-26T09:58:12Z"),
    };
    [
        ctp("{6F1C2F7E-3B9A-4C1D-9E2B-7A5D0C4E8F13}/firing", Firing),
        ctp("{6F1C2F7E-3B9A-4C1D-9E2B-7A5D0C4E8F13}/resolved", Resolved),
        // The description names the probe's health set, ActiveSync.Protocol, in passing; the monitor's own
        // health set wins over a name that is not stated as the health set.
        Expected {
            source_key: Some("{2D8B4F61-7E0C-4A93-B5D2-C1F6E8A3907B}/firing"),
            health_set: "ActiveSync",
            server: "mbx02.contoso.com",
            monitor: Some("ActiveSyncDeepTestMonitor"),
            mailbox_hint: None,
            status: Firing,
            raised_at: Some("2026-11-26T10:04:31.427Z"),
        },
        Expected {
            source_key: Some("{B3E7A9C2-4F1D-4E6B-9A8C-2D0F5B7E1C43}/firing"),
            health_set: "ActiveSync.Protocol",
            server: "mbx03.contoso.com",
            monitor: Some("ActiveSyncSelfTestMonitor"),
            mailbox_hint: None,
            status: Firing,
            raised_at: Some("2026-11-26T11:14:59Z"),
        },
        Expected {
            source_key: Some("{E1A4C7F0-9B2D-4A5E-8C3F-6D1B0E9A7C58}/firing"),
            health_set: "ActiveSync",
            server: "cas02",
            monitor: Some("RequestsQueuedGt500Monitor"),
            mailbox_hint: None,
            status: Firing,
            raised_at: Some("2026-11-26T14:07:55Z"),
        },
        Expected {
            source_key: Some("{0C9E5B3A-7D1F-4A6C-B2E8-9F4D1A7C3B05}/firing"),
            health_set: "ActiveSync.Proxy",
            server: "cas01.contoso.com",
            monitor: Some("ActiveSyncProxyTestMonitor"),
            mailbox_hint: None,
            status: Firing,
            raised_at: Some("2026-11-26T12:31:47Z"),
        },
        Expected {
            source_key: None,
            health_set: "ActiveSync",
            server: "cas03.contoso.com",
            monitor: Some("ActiveSyncCTPMonitor"),
            mailbox_hint: None,
            status: Firing,
            raised_at: None,
        },
        Expected {
            source_key: Some("{B3E7A9C2-4F1D-4E6B-9A8C-2D0F5B7E1C43}/resolved"),
            health_set: "ActiveSync.Protocol",
            server: "mbx03.contoso.com",
            monitor: Some("ActiveSyncSelfTestMonitor"),
            mailbox_hint: None,
            status: Resolved,
            raised_at: None,
        },
        Expected {
            source_key: Some("{F7A2D5B8-1C4E-4F9A-8B3D-0E6C2A9F5D71}/firing"),
            health_set: "ActiveSync",
            server: "cas04.contoso.com",
            monitor: Some("ActiveSyncCTPMonitor"),
            mailbox_hint: None,
            status: Firing,
            raised_at: Some("2026-11-26T15:20:00Z"),
        },
    ]
}

fn check_fixture(body: &str, want: &Expected) {
    let description = serde_json::from_str::<serde_json::Value>(body).unwrap()["alertDescription"]
        .as_str()
        .unwrap()
        .to_owned();
    let message = if description == "Not Present" { String::new() } else { description };
    let expected = Alert {
        source_key: want.source_key.map(str::to_owned),
        health_set: HealthSet::parse(want.health_set).unwrap(),
        server: ServerName::parse(want.server).unwrap(),
        monitor: want.monitor.map(|monitor| Monitor::parse(monitor).unwrap()),
        mailbox_hint: want.mailbox_hint.map(|hint| ServerName::parse(hint).unwrap()),
        message,
        status: want.status,
        raised_at: want.raised_at.map(|time| time.parse().unwrap()),
    };
    assert_eq!(
        parse(body.as_bytes()).unwrap(),
        expected,
        "fixture with alertName {:?}",
        &body[..body.len().min(200)]
    );
}

#[test]
fn fixtures_normalise() {
    for (body, want) in FIXTURES.iter().zip(expected().iter()) {
        check_fixture(body, want);
    }
}

#[test]
fn example_is_an_activesync_alert() {
    let alert = parse(EXAMPLE.as_bytes()).unwrap();
    assert_eq!(alert.health_set.as_str(), "ActiveSync");
    assert_eq!(alert.monitor.as_ref().map(Monitor::as_str), Some("ActiveSyncCTPMonitor"));
    assert!(alert.mailbox_hint.is_some());
}

fn check(body: &str, expected: Result<(&str, &str, Option<&str>), &str>) {
    match (parse(body.as_bytes()), expected) {
        (Ok(alert), Ok((server, health_set, monitor))) => {
            assert_eq!(alert.server.as_str(), server, "{body}");
            assert_eq!(alert.health_set.as_str(), health_set, "{body}");
            assert_eq!(alert.monitor.as_ref().map(Monitor::as_str), monitor, "{body}");
        }
        (Err(err), Err(want)) => {
            assert_actionable(&err);
            assert!(err.to_string().starts_with(want), "{body}: {err}");
        }
        (got, want) => panic!("{body}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn health_set_monitor_and_server_are_found_in_free_text() {
    let cases: &[(&str, Result<(&str, &str, Option<&str>), &str>)] = &[
        (r#"{"alertName":"The health set ActiveSync.Protocol is unhealthy","managedEntityPath":"mbx01"}"#, Ok(("mbx01", "ActiveSync.Protocol", None))),
        (r#"{"alertName":"x","alertDescription":"Health Set Name = 'OWA.Protocol'","managedEntityPath":"mbx01"}"#, Ok(("mbx01", "OWA.Protocol", None))),
        (r#"{"alertName":"Monitor: EWSCtpMonitor HealthSet: EWS.Protocol","managedEntityPath":"cas01"}"#, Ok(("cas01", "EWS.Protocol", Some("EwsCtpMonitor")))),
        (
            r#"{"alertName":"Unhealthy on CAS01. Health set is degraded","customField2":"ActiveSync","managedEntityPath":"cas01"}"#,
            Ok(("cas01", "ActiveSync", None)),
        ),
        (
            r#"{"alertName":"activesync health set unhealthy","customField1":"ActiveSyncSelfTestMonitor","managedEntityPath":"mbx01"}"#,
            Ok(("mbx01", "ActiveSync", Some("ActiveSyncSelfTestMonitor"))),
        ),
        (
            r#"{"alertName":"Exchange ActiveSync self test failing","customField1":"ActiveSyncSelfTestMonitor","managedEntityPath":"mbx01"}"#,
            Ok(("mbx01", "ActiveSync.Protocol", Some("ActiveSyncSelfTestMonitor"))),
        ),
        (
            r#"{"alertName":"Exchange ActiveSync: activesyncproxytestmonitor","managedEntityPath":"cas01"}"#,
            Ok(("cas01", "ActiveSync.Proxy", Some("ActiveSyncProxyTestMonitor"))),
        ),
        (r#"{"alertName":"CreatedByMonitor UnitMonitor Monitor: ActiveSync","managedEntityPath":"cas01"}"#, Ok(("cas01", "ActiveSync", None))),
        (r#"{"alertName":"ActiveSync health set","managedEntityPath":"Exchange 2013 Organization;CAS05"}"#, Ok(("cas05", "ActiveSync", None))),
        (r#"{"alertName":"ActiveSync health set","managedEntityPath":"Server cas05.contoso.com:443"}"#, Ok(("cas05.contoso.com", "ActiveSync", None))),
        (
            r#"{"alertName":"ActiveSync.Protocol health set","managedEntityPath":"ActiveSync.Protocol;System.Computer.Windows;MBX01"}"#,
            Ok(("mbx01", "ActiveSync.Protocol", None)),
        ),
        (r#"{"alertName":"ActiveSync health set","managedEntityPath":"Not Present","managedEntitySource":"CAS06"}"#, Ok(("cas06", "ActiveSync", None))),
        (
            r#"{"alertName":"ActiveSync health set","managedEntityPath":"CAS07.contoso.com","managedEntityGUID":"cas08"}"#,
            Ok(("cas07.contoso.com", "ActiveSync", None)),
        ),
        (
            r#"{"alertName":"ActiveSync health set","managedEntityPath":"Not Present","managedEntitySource":"ActiveSync","managedEntityGUID":"{A7C3E9F1-5B2D-4A8E-B6C0-9D1F3E5A7B24}"}"#,
            Err("managedEntityPath: is missing, and managedEntitySource names no server host name either"),
        ),
        (
            r#"{"alertName":"ActiveSync health set","managedEntityPath":"Exchange 2013 Organization"}"#,
            Err("managedEntityPath: no server host name found in \"Exchange 2013 Organization\" nor in managedEntitySource"),
        ),
        (
            r#"{"alertName":"Monitor unhealthy","alertDescription":"Health set: is unhealthy","customField1":"Not Present","managedEntityPath":"cas01"}"#,
            Err("alertName: no health set name was found in alertName, alertDescription or customField1..10"),
        ),
        (r#"{"alertName":{"text":"ActiveSync"},"managedEntityPath":"cas01"}"#, Err("alertName: invalid type: map, expected a string or a number")),
        (r#"[{"alertName":"ActiveSync"}]"#, Err("body: expected a JSON object")),
        (r#"{"alertName":"ActiveSync health set","managedEntityPath":"cas01""#, Err("malformed JSON: EOF while parsing an object")),
    ];
    for (body, expected) in cases {
        check(body, *expected);
    }
}

#[test]
fn status_source_key_and_time() {
    let alert = |extra: &str| {
        let body = format!(
            r#"{{"alertName":"ActiveSync health set","managedEntityPath":"cas01"{extra}}}"#
        );
        parse(body.as_bytes()).unwrap()
    };
    assert_eq!(
        alert(r#","resolutionState":"closed","alertId":"{1}""#).source_key.as_deref(),
        Some("{1}/resolved")
    );
    assert_eq!(
        alert(r#","resolutionState":255,"alertId":" {1} ""#).source_key.as_deref(),
        Some("{1}/resolved")
    );
    assert_eq!(alert(r#","resolutionState":"0""#).status, AlertStatus::Firing);
    assert_eq!(alert(r#","resolutionState":"Resolved""#).status, AlertStatus::Firing);
    assert_eq!(alert(r#","alertId":"""#).source_key, None);
    assert_eq!(alert(r#","repeatCount":2,"severity":null,"priority":1.5"#).source_key, None);
    let long_id = format!(
        r#"{{"alertName":"ActiveSync health set","managedEntityPath":"cas01","alertId":"{}"}}"#,
        "x".repeat(257)
    );
    assert_eq!(
        parse(long_id.as_bytes()).unwrap_err().to_string(),
        "alertId: is longer than 256 characters"
    );

    let times: &[(&str, Option<&str>)] = &[
        ("2026-11-26T10:00:00Z", Some("2026-11-26T10:00:00Z")),
        ("2026-11-26T11:00:00.1234567+01:00", Some("2026-11-26T10:00:00.1234567Z")),
        ("11/26/2026 9:58:12 AM", Some("2026-11-26T09:58:12Z")),
        ("11/26/2026 12:05:00 AM", Some("2026-11-26T00:05:00Z")),
        ("1/2/2026 1:02:03 pm", Some("2026-01-02T13:02:03Z")),
        ("11/26/2026 21:58:12", Some("2026-11-26T21:58:12Z")),
        ("2026-11-26 10:00:00.5", Some("2026-11-26T10:00:00.5Z")),
        ("26.11.2026 10:00:00", None),
        ("26/11/2026 10:00:00", None),
        ("yesterday", None),
    ];
    for (raw, want) in times {
        let got = alert(&format!(r#","timeRaised":"{raw}""#)).raised_at;
        assert_eq!(got, want.map(|time| time.parse().unwrap()), "timeRaised {raw:?}");
    }
}

#[test]
fn windows_powershell_bodies_are_read() {
    // Windows PowerShell 5.1 sends ISO-8859-1 ("Zürich") unless told otherwise; a file-based script may add a BOM.
    let latin1 = b"{\"alertName\":\"ActiveSync health set\",\"alertDescription\":\"Z\xfcrich _Mbx:mbx01.contoso.com\",\"managedEntityPath\":\"cas01\"}";
    let alert = parse(latin1).unwrap();
    assert_eq!(alert.message, "Z\u{fc}rich _Mbx:mbx01.contoso.com");
    assert_eq!(alert.mailbox_hint.as_ref().map(ServerName::as_str), Some("mbx01.contoso.com"));
    let with_bom = [
        b"\xEF\xBB\xBF".as_slice(),
        br#"{"alertName":"ActiveSync health set","managedEntityPath":"cas01"}"#,
    ]
    .concat();
    assert_eq!(parse(&with_bom).unwrap().server.as_str(), "cas01");
}

#[test]
fn schema_documents_every_field() {
    let schema = serde_json::to_value(schemars::schema_for!(ScomAlert)).unwrap();
    let properties = schema["properties"].as_object().unwrap();
    assert_eq!(properties.len(), 31);
    for (name, property) in properties {
        assert!(
            property["description"].as_str().is_some_and(|text| !text.is_empty()),
            "{name} has no description"
        );
    }
    assert!(
        properties.contains_key("managedEntityGUID") && properties.contains_key("customField10")
    );
    assert!(schema.get("required").is_none() && schema.get("additionalProperties").is_none());
}

static PAYLOADS: [&str; 10] = [
    FIXTURES[0],
    FIXTURES[1],
    FIXTURES[2],
    FIXTURES[3],
    FIXTURES[4],
    FIXTURES[5],
    FIXTURES[6],
    FIXTURES[7],
    FIXTURES[8],
    EXAMPLE,
];

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
        if let Err(err) = parse(&body) {
            assert_actionable(&err);
        }
    }

    #[test]
    fn arbitrary_text_in_any_value_is_handled(body in with_text_replaced(&PAYLOADS)) {
        if let Err(err) = parse(&body) {
            assert_actionable(&err);
        }
    }
}

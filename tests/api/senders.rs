//! Real senders (SPEC sections 3 and 4): every intake route with every kind of sender authentication and key
//! rotation, SCOM and Alertmanager notifications end to end, resolved notices, the duplicates of a highly available
//! Alertmanager pair, an alert storm, and the SCOM command-channel script in examples/.

mod channel_script;
mod resolved;
mod storm;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use healthset_responder::auth::{self, Secret};
use healthset_responder::service::Service;
use healthset_responder::store::Store;
use serde_json::{json, Value};

use crate::helpers::*;

const CTP: &str = "ActiveSyncCTPProbe failed. Diagnostics header:_Cas:CAS01.contoso.com_Mbx:MBX01.contoso.com_Dc:DC01.contoso.com_";

const SCOM_CTP_FIRING: &str = include_str!("../fixtures/scom/ctp-firing.json");
const SCOM_CTP_CLOSED: &str = include_str!("../fixtures/scom/ctp-closed.json");
const AM_SINGLE_FIRING: &str = include_str!("../fixtures/alertmanager/single-firing.json");
const AM_GROUP_OF_THREE: &str = include_str!("../fixtures/alertmanager/group-of-three.json");
const AM_RESOLVED: &str = include_str!("../fixtures/alertmanager/resolved.json");
const AM_TRUNCATED: &str = include_str!("../fixtures/alertmanager/truncated.json");
const SCOM_SCRIPT: &str = include_str!("../../examples/scom-notification-channel.ps1");
const SCOM_SCHEMA: &str = include_str!("../../schemas/scom-alert.schema.json");

const ROUTES: [&str; 3] = ["/v1/alerts", "/v1/alerts/scom", "/v1/alerts/alertmanager"];

/// Two `hub-signature-256` secrets and two bearer tokens: one being retired, one taking over.
const HUB_SECRETS: [&str; 2] = ["hub-secret-being-retired", "hub-secret-taking-over"];
const BEARER_TOKENS: [&str; 2] =
    ["alertmanager-token-being-retired", "alertmanager-token-taking-over"];

/// Two keys of a second Standard Webhooks sender in rotation; neither is `helpers::SECRET`.
fn rotated_whsecs() -> [String; 2] {
    [
        format!("whsec_{}", BASE64.encode(b"rotation: the key being retired")),
        format!("whsec_{}", BASE64.encode(b"rotation: the key taking over")),
    ]
}

/// The senders every test here adds to `helpers::base_config` (whose own sender, `scom`, is Standard Webhooks with
/// `helpers::SECRET`): a second Standard Webhooks sender and a bearer sender, each with two keys in rotation.
fn senders_toml() -> String {
    let [retired, current] = rotated_whsecs();
    format!(
        r#"
[[senders]]
name = "scom-rotating"
secrets = ["{current}", "{retired}"]

[[senders]]
name = "alertmanager"
auth = "bearer"
tokens = ["{}", "{}"]
"#,
        BEARER_TOKENS[1], BEARER_TOKENS[0]
    )
}

/// A `hub-signature-256` sender with two secrets in rotation, written as SPEC section 6 and README write it. Only the
/// authentication test adds it, so that the other tests do not depend on it.
fn hub_sender_toml() -> String {
    format!(
        "\n[[senders]]\nname = \"hub\"\nauth = \"hub-signature-256\"\nsecrets = [\"{}\", \"{}\"]\n",
        HUB_SECRETS[1], HUB_SECRETS[0]
    )
}

/// Starts the service with the senders above and `extra` TOML. With `paused`, the pause switch is in the store
/// before the service starts, so the engine never runs an incident of the test (SPEC: while paused, new incidents
/// are still opened and wait `queued`).
async fn spawn(extra: &str, paused: bool) -> TestApp {
    let data_dir = tempfile::tempdir().unwrap();
    if paused {
        let store = Store::open(data_dir.path()).expect("store opens");
        store
            .set_paused(Some("tests/api/senders.rs holds incidents queued".into()))
            .await
            .expect("pause stored");
    }
    let config = format!(
        "{}\n{}\n{}",
        base_config(data_dir.path()),
        senders_toml(),
        with_test_timing(extra)
    );
    let service = Service::start(settings(&config)).await.expect("service starts");
    TestApp {
        url: format!("http://{}", service.addr),
        service: Some(service),
        data_dir,
        config,
        http: reqwest::Client::new(),
    }
}

/// How a test request authenticates.
#[derive(Debug, Clone, Copy)]
enum Credential<'a> {
    /// Standard Webhooks with this `whsec_` secret and a fresh `webhook-id`.
    Standard(&'a str),
    /// `X-Hub-Signature-256` with this secret.
    Hub(&'a str),
    /// `Authorization: Bearer` with this token.
    Bearer(&'a str),
    /// One header, as given.
    Header(&'static str, &'a str),
    None,
}

fn next_webhook_id() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("msg_senders_{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn signed_standard(
    request: reqwest::RequestBuilder,
    secret: &str,
    webhook_id: &str,
    body: &[u8],
) -> reqwest::RequestBuilder {
    let key = Secret::parse_whsec(secret).unwrap();
    let timestamp = chrono::Utc::now().timestamp();
    request
        .header("webhook-id", webhook_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", auth::sign_standard(&key, webhook_id, timestamp, body))
}

async fn post(
    app: &TestApp,
    path: &str,
    body: &[u8],
    credential: Credential<'_>,
) -> reqwest::Response {
    let request =
        app.http.post(format!("{}{path}", app.url)).header("content-type", "application/json");
    let request = match credential {
        Credential::Standard(secret) => signed_standard(request, secret, &next_webhook_id(), body),
        Credential::Hub(secret) => request.header(
            "x-hub-signature-256",
            auth::sign_hub(&Secret::new(secret.as_bytes().to_vec()), body),
        ),
        Credential::Bearer(token) => request.bearer_auth(token),
        Credential::Header(name, value) => request.header(name, value),
        Credential::None => request,
    };
    request.body(body.to_vec()).send().await.unwrap()
}

/// Posts with Standard Webhooks under a chosen `webhook-id`, as a sender retrying or a second sender would.
async fn post_with_id(
    app: &TestApp,
    path: &str,
    body: &[u8],
    secret: &str,
    webhook_id: &str,
) -> reqwest::Response {
    let request =
        app.http.post(format!("{}{path}", app.url)).header("content-type", "application/json");
    signed_standard(request, secret, webhook_id, body).body(body.to_vec()).send().await.unwrap()
}

/// Posts and expects `202`; returns the answer's items.
async fn accepted(
    app: &TestApp,
    path: &str,
    body: &[u8],
    credential: Credential<'_>,
) -> Vec<Value> {
    let response = post(app, path, body, credential).await;
    let status = response.status();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 202, "{path} {credential:?}: {answer}");
    answer["alerts"].as_array().unwrap().clone()
}

async fn counts(app: &TestApp) -> (usize, usize) {
    let (_, alerts) = app.admin_get("/v1/alerts?limit=1000").await;
    let (_, incidents) = app.admin_get("/v1/incidents?limit=1000").await;
    (alerts["alerts"].as_array().unwrap().len(), incidents["incidents"].as_array().unwrap().len())
}

async fn alert(app: &TestApp, id: &Value) -> Value {
    let (status, alert) = app.admin_get(&format!("/v1/alerts/{}", id.as_str().unwrap())).await;
    assert_eq!(status, 200, "{alert}");
    alert
}

async fn incident(app: &TestApp, id: &Value) -> Value {
    let (status, incident) =
        app.admin_get(&format!("/v1/incidents/{}", id.as_str().unwrap())).await;
    assert_eq!(status, 200, "{incident}");
    incident
}

/// A valid body for a route, about a server no other call of the test uses (`cas<n>.contoso.com`), so that each
/// accepted delivery stores a new alert and opens a new incident.
fn unique_body(route: &str, n: usize) -> Vec<u8> {
    let server = format!("cas{n:03}.contoso.com");
    match route {
        "/v1/alerts" => native(&server, "ActiveSyncCTPMonitor", CTP).into_bytes(),
        "/v1/alerts/scom" => {
            let mut alert: Value = serde_json::from_str(SCOM_CTP_FIRING).unwrap();
            alert["alertId"] = json!(format!("{{00000000-0000-4000-8000-{n:012}}}"));
            alert["managedEntityPath"] = json!(server.to_uppercase());
            serde_json::to_vec(&alert).unwrap()
        }
        "/v1/alerts/alertmanager" => {
            let mut notification: Value = serde_json::from_str(AM_SINGLE_FIRING).unwrap();
            notification["alerts"][0]["labels"]["server"] = json!(server);
            notification["alerts"][0]["fingerprint"] = json!(format!("{n:016x}"));
            serde_json::to_vec(&notification).unwrap()
        }
        other => panic!("no such route {other}"),
    }
}

fn format_of(route: &str) -> &'static str {
    match route {
        "/v1/alerts" => "native",
        "/v1/alerts/scom" => "scom",
        _ => "alertmanager",
    }
}

#[tokio::test]
async fn every_route_takes_every_kind_of_sender_and_refuses_bad_credentials() {
    let app = spawn(&hub_sender_toml(), true).await;
    let [retired, current] = rotated_whsecs();
    let unknown_whsec = format!("whsec_{}", BASE64.encode(b"a key that no sender was given"));
    let hub_over_other_body =
        auth::sign_hub(&Secret::new(HUB_SECRETS[1].as_bytes().to_vec()), b"{}");
    let refusals: [(&str, Credential); 9] = [
        ("standard-webhooks, a secret no sender has", Credential::Standard(&unknown_whsec)),
        (
            "hub-signature-256, a secret no sender has",
            Credential::Hub("a-hub-secret-no-sender-has"),
        ),
        (
            "hub-signature-256, the signature of another body",
            Credential::Header("x-hub-signature-256", &hub_over_other_body),
        ),
        (
            "hub-signature-256, not hex",
            Credential::Header("x-hub-signature-256", "sha256=not-hex-at-all"),
        ),
        ("bearer, a token no sender has", Credential::Bearer("a-bearer-token-no-sender-has")),
        ("bearer, the admin token", Credential::Bearer(ADMIN_TOKEN)),
        ("bearer, a hub secret offered as a token", Credential::Bearer(HUB_SECRETS[0])),
        (
            "basic authentication",
            Credential::Header("authorization", "Basic YWxlcnRtYW5hZ2VyOmFsZXJ0bWFuYWdlcg=="),
        ),
        ("no credentials", Credential::None),
    ];
    for route in ROUTES {
        let body = unique_body(route, 0);
        for (case, credential) in refusals {
            let response = post(&app, route, &body, credential).await;
            assert_eq!(response.status(), 401, "{route} {case}");
            let text = response.text().await.unwrap();
            let error: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(error["error"]["code"], "unauthorized", "{route} {case}: {text}");
            for secret in [
                SECRET,
                &retired,
                &current,
                HUB_SECRETS[0],
                HUB_SECRETS[1],
                BEARER_TOKENS[0],
                BEARER_TOKENS[1],
            ] {
                assert!(
                    !text.contains(secret),
                    "{route} {case}: the answer shows a configured secret: {text}"
                );
            }
        }
    }
    assert_eq!(counts(&app).await, (0, 0), "nothing is stored for a refused delivery");
    let (_, rejected) = app.admin_get("/v1/alerts?rejected=true").await;
    assert_eq!(
        rejected["rejected"],
        json!([]),
        "unauthenticated bodies are not kept, not even as rejected deliveries"
    );

    // Each sender, with each of its keys (rotation: the retired key and the new one are both accepted), on each route.
    let senders: [(&str, Credential); 7] = [
        ("scom", Credential::Standard(SECRET)),
        ("scom-rotating", Credential::Standard(&retired)),
        ("scom-rotating", Credential::Standard(&current)),
        ("hub", Credential::Hub(HUB_SECRETS[0])),
        ("hub", Credential::Hub(HUB_SECRETS[1])),
        ("alertmanager", Credential::Bearer(BEARER_TOKENS[0])),
        ("alertmanager", Credential::Bearer(BEARER_TOKENS[1])),
    ];
    let mut n = 0;
    for route in ROUTES {
        for (sender, credential) in senders {
            n += 1;
            let items = accepted(&app, route, &unique_body(route, n), credential).await;
            assert_eq!(items.len(), 1, "{route} {sender}");
            assert_eq!(items[0]["disposition"], "new_incident", "{route} {sender} {credential:?}");
            let stored = alert(&app, &items[0]["alert_id"]).await;
            assert_eq!(
                stored["sender"], sender,
                "{route} {credential:?}: the delivery is credited to the sender whose key verified"
            );
            assert_eq!(stored["format"], format_of(route));
            assert_eq!(stored["server"], format!("cas{n:03}.contoso.com"));
        }
    }
    assert_eq!(counts(&app).await, (21, 21));
}

/// One SCOM fixture posted end to end, and what the stored alert must say.
struct ScomCase {
    fixture: &'static str,
    body: &'static str,
    server: &'static str,
    health_set: &'static str,
    monitor: &'static str,
    mailbox_hint: Option<&'static str>,
    status: &'static str,
    disposition: &'static str,
}

#[tokio::test]
async fn scom_fixtures_are_stored_with_their_server_health_set_monitor_and_mailbox_hint() {
    let app = spawn("", true).await;
    let case = |fixture, body, server, health_set, monitor, mailbox_hint, status, disposition| {
        ScomCase { fixture, body, server, health_set, monitor, mailbox_hint, status, disposition }
    };
    // In this order: the two resolved notices come after the firing notices of their alerts.
    let cases = [
        case(
            "ctp-firing",
            SCOM_CTP_FIRING,
            "cas01.contoso.com",
            "ActiveSync",
            "ActiveSyncCTPMonitor",
            Some("mbx01.contoso.com"),
            "firing",
            "new_incident",
        ),
        case(
            "deep-test",
            include_str!("../fixtures/scom/deep-test.json"),
            "mbx02.contoso.com",
            "ActiveSync",
            "ActiveSyncDeepTestMonitor",
            None,
            "firing",
            "new_incident",
        ),
        case(
            "self-test",
            include_str!("../fixtures/scom/self-test.json"),
            "mbx03.contoso.com",
            "ActiveSync.Protocol",
            "ActiveSyncSelfTestMonitor",
            None,
            "firing",
            "new_incident",
        ),
        case(
            "requests-queued",
            include_str!("../fixtures/scom/requests-queued.json"),
            "cas02",
            "ActiveSync",
            "RequestsQueuedGt500Monitor",
            None,
            "firing",
            "new_incident",
        ),
        case(
            "proxy-test (Acknowledged is still firing)",
            include_str!("../fixtures/scom/proxy-test.json"),
            "cas01.contoso.com",
            "ActiveSync.Proxy",
            "ActiveSyncProxyTestMonitor",
            None,
            "firing",
            "new_incident",
        ),
        case(
            "not-present",
            include_str!("../fixtures/scom/not-present.json"),
            "cas03.contoso.com",
            "ActiveSync",
            "ActiveSyncCTPMonitor",
            None,
            "firing",
            "new_incident",
        ),
        case(
            "custom-fields",
            include_str!("../fixtures/scom/custom-fields.json"),
            "cas04.contoso.com",
            "ActiveSync",
            "ActiveSyncCTPMonitor",
            None,
            "firing",
            "new_incident",
        ),
        case(
            "ctp-closed",
            SCOM_CTP_CLOSED,
            "cas01.contoso.com",
            "ActiveSync",
            "ActiveSyncCTPMonitor",
            Some("mbx01.contoso.com"),
            "resolved",
            "resolved",
        ),
        case(
            "resolution-state-255",
            include_str!("../fixtures/scom/resolution-state-255.json"),
            "mbx03.contoso.com",
            "ActiveSync.Protocol",
            "ActiveSyncSelfTestMonitor",
            None,
            "resolved",
            "resolved",
        ),
    ];
    let mut answers = std::collections::HashMap::new();
    for case in &cases {
        let items =
            accepted(&app, "/v1/alerts/scom", case.body.as_bytes(), Credential::Standard(SECRET))
                .await;
        assert_eq!(items[0]["disposition"], case.disposition, "{}", case.fixture);
        let stored = alert(&app, &items[0]["alert_id"]).await;
        let got = (
            &stored["server"],
            &stored["health_set"],
            &stored["monitor"],
            &stored["mailbox_hint"],
            &stored["status"],
        );
        let want = (
            &json!(case.server),
            &json!(case.health_set),
            &json!(case.monitor),
            &json!(case.mailbox_hint),
            &json!(case.status),
        );
        assert_eq!(got, want, "{}", case.fixture);
        assert_eq!(stored["format"], "scom");
        assert_eq!(
            stored["raw_body"], case.body,
            "{}: the body is kept byte for byte",
            case.fixture
        );
        answers.insert(case.fixture, items[0].clone());
    }

    // A Closed (or 255) notice is recorded on the open incident of its alert, and on no other.
    for (firing, closing) in [("ctp-firing", "ctp-closed"), ("self-test", "resolution-state-255")] {
        assert_eq!(
            answers[closing]["incident_id"], answers[firing]["incident_id"],
            "{closing} goes to the incident {firing} opened"
        );
        let incident = incident(&app, &answers[firing]["incident_id"]).await;
        assert!(incident["resolved_notice_at"].is_string(), "{firing}: {incident:#}");
        assert_eq!(
            incident["alert_ids"],
            json!([answers[firing]["alert_id"], answers[closing]["alert_id"]])
        );
        assert_eq!(
            incident["state"], "queued",
            "automation is paused: the notice is recorded, nothing runs"
        );
    }
    let untouched = incident(&app, &answers["deep-test"]["incident_id"]).await;
    assert_eq!(untouched["resolved_notice_at"], Value::Null);
    assert_eq!(counts(&app).await, (9, 7));
}

// SCOM gives a monitor's new alert a new alertId; the same alertId and state again is the same notice (SPEC
// section 3: the same source alert id is a duplicate), even when SCOM's own fields have moved on.
#[tokio::test]
async fn a_scom_notice_sent_again_for_the_same_alert_id_is_a_duplicate() {
    let app = spawn("", false).await;
    let first =
        accepted(&app, "/v1/alerts/scom", SCOM_CTP_FIRING.as_bytes(), Credential::Standard(SECRET))
            .await
            .remove(0);
    assert_eq!(first["disposition"], "new_incident");
    let mut again: Value = serde_json::from_str(SCOM_CTP_FIRING).unwrap();
    again["lastModified"] = json!("11/26/2026 11:40:02 AM");
    again["repeatCount"] = json!("3");
    let again = accepted(
        &app,
        "/v1/alerts/scom",
        &serde_json::to_vec(&again).unwrap(),
        Credential::Standard(SECRET),
    )
    .await
    .remove(0);
    assert_eq!(again["disposition"], "duplicate");
    assert_eq!(again["alert_id"], first["alert_id"]);
    assert_eq!(again["incident_id"], first["incident_id"]);
}

#[tokio::test]
async fn an_alertmanager_group_becomes_one_alert_and_incident_per_element() {
    let app = spawn("", true).await;
    let items = accepted(
        &app,
        "/v1/alerts/alertmanager",
        AM_GROUP_OF_THREE.as_bytes(),
        Credential::Bearer(BEARER_TOKENS[1]),
    )
    .await;
    let expected = [
        ("cas01.contoso.com", "ActiveSync", json!("RequestsQueuedGt500Monitor")),
        ("mbx02.contoso.com", "ActiveSync", json!("ActiveSyncDeepTestMonitor")),
        ("mbx03.contoso.com", "ActiveSync.Protocol", Value::Null),
    ];
    assert_eq!(items.len(), 3);
    let mut incidents = HashSet::new();
    for (position, (item, (server, health_set, monitor))) in items.iter().zip(&expected).enumerate()
    {
        assert_eq!(item["disposition"], "new_incident", "{item}");
        assert!(
            incidents.insert(item["incident_id"].as_str().unwrap().to_owned()),
            "each element opens its own incident"
        );
        let stored = alert(&app, &item["alert_id"]).await;
        assert_eq!(
            (&stored["server"], &stored["health_set"], &stored["monitor"]),
            (&json!(server), &json!(health_set), monitor)
        );
        assert_eq!(
            (stored["position"].as_u64(), &stored["sender"], &stored["format"]),
            (Some(position as u64), &json!("alertmanager"), &json!("alertmanager"))
        );
        assert_eq!(
            stored["raw_body"], AM_GROUP_OF_THREE,
            "every alert keeps the whole notification"
        );
        let incident = incident(&app, &item["incident_id"]).await;
        assert_eq!(incident["alert_ids"], json!([item["alert_id"]]));
    }

    // A notification Alertmanager had to cut short (truncatedAlerts > 0) is still taken: the alerts it carries.
    let truncated: Value = serde_json::from_str(AM_TRUNCATED).unwrap();
    assert!(truncated["truncatedAlerts"].as_u64().unwrap() > 0);
    let items = accepted(
        &app,
        "/v1/alerts/alertmanager",
        AM_TRUNCATED.as_bytes(),
        Credential::Bearer(BEARER_TOKENS[0]),
    )
    .await;
    assert_eq!(items.len(), truncated["alerts"].as_array().unwrap().len());
    assert!(items.iter().all(|item| item["disposition"] == "new_incident"), "{items:?}");
}

#[tokio::test]
async fn a_highly_available_pair_delivering_the_same_notification_twice_creates_nothing_new() {
    let app = spawn("", true).await;
    let first = accepted(
        &app,
        "/v1/alerts/alertmanager",
        AM_GROUP_OF_THREE.as_bytes(),
        Credential::Bearer(BEARER_TOKENS[1]),
    )
    .await;
    assert!(first.iter().all(|item| item["disposition"] == "new_incident"));

    // The other member of the pair: the same notification, bearer again (no delivery id to go by).
    let second = accepted(
        &app,
        "/v1/alerts/alertmanager",
        AM_GROUP_OF_THREE.as_bytes(),
        Credential::Bearer(BEARER_TOKENS[1]),
    )
    .await;
    // The same alerts with keys in another order and each startsAt written in another offset (the same instants),
    // from the pair's sender: the fingerprints are what count.
    let mut relayed: Value = serde_json::from_str(AM_GROUP_OF_THREE).unwrap();
    for alert in relayed["alerts"].as_array_mut().unwrap() {
        let starts_at =
            chrono::DateTime::parse_from_rfc3339(alert["startsAt"].as_str().unwrap()).unwrap();
        let offset = chrono::FixedOffset::east_opt(3600).unwrap();
        alert["startsAt"] = json!(starts_at
            .with_timezone(&offset)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false));
    }
    let relayed = serde_json::to_vec(&relayed).unwrap();
    assert_ne!(relayed, AM_GROUP_OF_THREE.as_bytes());
    let third =
        accepted(&app, "/v1/alerts/alertmanager", &relayed, Credential::Bearer(BEARER_TOKENS[0]))
            .await;
    for (copy, items) in [("bearer copy", &second), ("bearer copy, written otherwise", &third)] {
        assert_eq!(items.len(), 3, "{copy}");
        for (original, again) in first.iter().zip(items.iter()) {
            assert_eq!(again["disposition"], "duplicate", "{copy}: {again}");
            assert_eq!(
                (&again["alert_id"], &again["incident_id"]),
                (&original["alert_id"], &original["incident_id"]),
                "{copy}"
            );
        }
    }
    assert_eq!(counts(&app).await, (3, 3), "duplicates create nothing");

    // Another sender relaying the same alerts is not a copy of the pair's delivery: its alerts are kept, attached
    // to the incidents already open (one sender's fingerprints cannot silence another's alerts), and its own
    // repeat, under another webhook-id, is a duplicate of its first.
    let fourth =
        accepted(&app, "/v1/alerts/alertmanager", &relayed, Credential::Standard(SECRET)).await;
    let fifth = {
        let response = post_with_id(
            &app,
            "/v1/alerts/alertmanager",
            &relayed,
            SECRET,
            "alertmanager-2-notification-1",
        )
        .await;
        assert_eq!(response.status(), 202);
        response.json::<Value>().await.unwrap()["alerts"].as_array().unwrap().clone()
    };
    for ((original, other), again) in first.iter().zip(fourth.iter()).zip(fifth.iter()) {
        assert_eq!(other["disposition"], "attached", "{other}");
        assert_eq!(other["incident_id"], original["incident_id"]);
        assert_eq!(again["disposition"], "duplicate", "{again}");
        assert_eq!(again["alert_id"], other["alert_id"]);
    }
    assert_eq!(
        counts(&app).await,
        (6, 3),
        "the other sender's alerts are stored; no incident is added"
    );
}

//! `GET /metrics`: the Prometheus exposition, and the counters that intake, the engine and the notifier move.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;

/// Every family the service exposes, as its `# TYPE` line names it.
const FAMILIES: [(&str, &str); 8] = [
    ("hsr_deliveries", "counter"),
    ("hsr_auth_failures", "counter"),
    ("hsr_intake_duration_seconds", "histogram"),
    ("hsr_incidents_finished", "counter"),
    ("hsr_actions", "counter"),
    ("hsr_emails", "counter"),
    ("hsr_open_incidents", "gauge"),
    ("hsr_automation_paused", "gauge"),
];

/// Scrapes `/metrics` without credentials, checks the text is OpenMetrics made of `hsr_` samples, and returns each
/// series (name with labels, as written) with its value.
async fn scrape(app: &TestApp) -> BTreeMap<String, f64> {
    let response = app.http.get(format!("{}/metrics", app.url)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    assert_eq!(text.lines().last(), Some("# EOF"), "{text}");
    let mut series = BTreeMap::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        assert!(line.starts_with("hsr_"), "a sample without the hsr_ prefix: {line:?}");
        let (name, value) =
            line.rsplit_once(' ').unwrap_or_else(|| panic!("a sample without a value: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("a sample whose value is not a number: {line:?}"));
        assert!(series.insert(name.to_owned(), value).is_none(), "a series twice: {line:?}");
    }
    series
}

/// Waits (at most 10 s) until every series has the value given. The engine and the notifier count right after their
/// commit, so a counter can trail what the admin API already shows by a moment.
async fn expect(app: &TestApp, expected: &[(&str, f64)]) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let series = scrape(app).await;
        let wrong: Vec<String> = expected
            .iter()
            .filter(|(name, value)| series.get(*name) != Some(value))
            .map(|(name, value)| format!("{name}: want {value}, got {:?}", series.get(*name)))
            .collect();
        if wrong.is_empty() {
            return series;
        }
        assert!(Instant::now() < deadline, "{wrong:#?}\nin {series:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_exposition_is_openmetrics_text_that_needs_no_credentials() {
    let app = spawn_app().await;
    let response = app.http.get(format!("{}/metrics", app.url)).send().await.unwrap();
    let text = response.text().await.unwrap();
    for line in text.lines() {
        assert!(line.starts_with("hsr_") || line.starts_with('#'), "{line:?}");
    }
    for (family, kind) in FAMILIES {
        assert!(
            text.lines().any(|line| line == format!("# TYPE {family} {kind}")),
            "no {family} {kind} in\n{text}"
        );
        assert!(
            text.lines().any(|line| line.starts_with(&format!("# HELP {family} "))),
            "no help for {family} in\n{text}"
        );
    }
    expect(
        &app,
        &[
            ("hsr_open_incidents", 0.0),
            ("hsr_automation_paused", 0.0),
            (r#"hsr_emails_total{result="failed"}"#, 0.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn intake_answers_are_counted_by_route_sender_and_disposition() {
    let app = spawn_app().await;
    let now = chrono::Utc::now().timestamp();
    let body = native("cas01.contoso.com", "ActiveSyncCTPMonitor", "x");
    let other_secret = "whsec_c29tZSBvdGhlciBzZWNyZXQga2V5IGJ5dGVz";
    let scom =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/scom-alert.json"))
            .unwrap();
    let cases = [
        (app.post_signed_as("/v1/alerts", &body, "msg_once", now, SECRET).await, 202),
        (app.post_signed_as("/v1/alerts", &body, "msg_once", now, SECRET).await, 202),
        (app.post_signed_as("/v1/alerts", &body, "msg_other", now, other_secret).await, 401),
        (app.post_signed_as("/v1/alerts", &body, "msg_stale", now - 600, SECRET).await, 401),
        (
            app.http
                .post(format!("{}/v1/alerts", app.url))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap(),
            401,
        ),
        (
            app.post_signed(
                "/v1/alerts",
                &json!({"health_set": "ActiveSync", "server": "cas01; Restart-Computer"})
                    .to_string(),
            )
            .await,
            422,
        ),
        (app.post_signed("/v1/alerts/scom", &scom).await, 202),
    ];
    for (index, (response, status)) in cases.into_iter().enumerate() {
        assert_eq!(response.status(), status, "request {index}");
    }
    let series = expect(
        &app,
        &[
            (
                r#"hsr_deliveries_total{route="native",sender="scom",disposition="new_incident"}"#,
                1.0,
            ),
            (r#"hsr_deliveries_total{route="native",sender="scom",disposition="duplicate"}"#, 1.0),
            (r#"hsr_deliveries_total{route="native",sender="scom",disposition="rejected"}"#, 1.0),
            (r#"hsr_deliveries_total{route="scom",sender="scom",disposition="new_incident"}"#, 1.0),
            (r#"hsr_auth_failures_total{route="native",reason="mismatch"}"#, 1.0),
            (r#"hsr_auth_failures_total{route="native",reason="stale"}"#, 1.0),
            (r#"hsr_auth_failures_total{route="native",reason="missing"}"#, 1.0),
            (r#"hsr_intake_duration_seconds_count{route="native"}"#, 6.0),
            (r#"hsr_intake_duration_seconds_count{route="scom"}"#, 1.0),
        ],
    )
    .await;
    let deliveries: f64 = series
        .iter()
        .filter(|(name, _)| name.starts_with("hsr_deliveries_total"))
        .map(|(_, value)| value)
        .sum();
    assert_eq!(
        deliveries, 4.0,
        "a refused (401) delivery is an auth failure, not a delivery: {series:#?}"
    );
    let under_a_second = series[r#"hsr_intake_duration_seconds_bucket{le="1.0",route="native"}"#];
    assert_eq!(under_a_second, 6.0, "every answer on loopback takes less than a second");
}

#[tokio::test]
async fn finished_incidents_count_their_steps_their_ending_and_their_email() {
    let app =
        spawn_app_with(&format!("{INVENTORY}\n[timing]\nsettle_wait = \"50ms\"\n\n[simulator.servers.\"cas01.contoso.com\"]\nfault = \"app_pool\"")).await;
    let recovered = app.open(&native("cas01.contoso.com", "ActiveSyncCTPMonitor", "x")).await;
    assert_eq!(app.wait_final(&recovered).await["state"], "recovered");
    // A server outside the inventory: automation may not act, so the incident ends blocked and escalates by email.
    let blocked = app.open(&native("cas09.contoso.com", "ActiveSyncCTPMonitor", "x")).await;
    assert_eq!(app.wait_final(&blocked).await["state"], "blocked");
    expect(
        &app,
        &[
            (r#"hsr_actions_total{action="probe",outcome="failed"}"#, 1.0),
            (r#"hsr_actions_total{action="recycle_app_pool",outcome="done"}"#, 1.0),
            (r#"hsr_actions_total{action="probe",outcome="succeeded"}"#, 1.0),
            (r#"hsr_incidents_finished_total{state="recovered"}"#, 1.0),
            (r#"hsr_incidents_finished_total{state="blocked"}"#, 1.0),
            (r#"hsr_incidents_finished_total{state="escalated"}"#, 0.0),
            (r#"hsr_emails_total{result="sent"}"#, 1.0),
            (r#"hsr_emails_total{result="failed"}"#, 0.0),
            ("hsr_open_incidents", 0.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn the_gauges_follow_the_store() {
    let app = spawn_app_with(INVENTORY).await;
    let (status, _) =
        app.admin_post("/v1/automation/pause", json!({"reason": "maintenance"})).await;
    assert_eq!(status, 200);
    app.open(&native("cas01.contoso.com", "ActiveSyncCTPMonitor", "x")).await;
    app.open(&native("cas02.contoso.com", "ActiveSyncCTPMonitor", "x")).await;
    expect(&app, &[("hsr_automation_paused", 1.0), ("hsr_open_incidents", 2.0)]).await;
    let (status, _) = app.admin_post("/v1/automation/resume", json!({})).await;
    assert_eq!(status, 200);
    expect(
        &app,
        &[
            ("hsr_automation_paused", 0.0),
            ("hsr_open_incidents", 0.0),
            (r#"hsr_incidents_finished_total{state="transient"}"#, 2.0),
        ],
    )
    .await;
}

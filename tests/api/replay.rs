//! Replaying a stored alert over the admin API (SPEC section 3): a new incident linked to the alert, refused while
//! one is open for the same key, dry-run on request or by configuration, and the right alert of a delivery.
//!
//! Also home of [`held_alert`], which the CLI and page tests use to get a stored alert that has not run yet.

use serde_json::{json, Value};

use crate::helpers::*;

pub const CTP_MESSAGE: &str = "Error occurred:\n\nUser: eas-probe@contoso.com\nResponse: 503 Service Unavailable\nDiagnostics header:_Cas:CAS01.contoso.com_Mbx:MBX01.contoso.com_Dc:DC01.contoso.com_";

/// The inventory with cas01 broken until its app pool is recycled.
pub fn app_pool_fault() -> String {
    format!("{INVENTORY}\n[simulator.servers.\"cas01.contoso.com\"]\nfault = \"app_pool\"\n")
}

/// Stores an alert without running it: a silence covers the server while the alert arrives (disposition
/// `suppressed`), and is lifted again. The simulator's fault is therefore still there when the alert is replayed.
pub async fn held_alert(app: &TestApp, body: &str) -> String {
    let until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (status, silence) = app.admin_post("/v1/silences", json!({"server": "cas01.contoso.com", "until": until, "reason": "held for a replay test"})).await;
    assert_eq!(status, 201, "{silence}");
    let answer: Value = app.post_signed("/v1/alerts", body).await.json().await.unwrap();
    assert_eq!(answer["alerts"][0]["disposition"], "suppressed", "{answer}");
    let response = app
        .http
        .delete(format!("{}/v1/silences/{}", app.url, silence["id"].as_str().unwrap()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    answer["alerts"][0]["alert_id"].as_str().unwrap().to_owned()
}

/// Pauses automation so that new incidents stay queued (and so open). The pause is sent again once the engine runs:
/// the engine reads the switch from the store as it starts, and a pause that lands during that read is lost.
pub async fn hold_incidents(app: &TestApp) {
    app.admin_post("/v1/automation/pause", json!({"reason": "held by the test"})).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.admin_get("/readyz").await.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "the engine did not start within 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    app.admin_post("/v1/automation/pause", json!({"reason": "held by the test"})).await;
}

/// Posts a replay request with a raw body and returns the status and the answer.
async fn replay(app: &TestApp, alert_id: &str, body: &'static str) -> (u16, Value) {
    let response = app
        .http
        .post(format!("{}/v1/alerts/{alert_id}/replay", app.url))
        .bearer_auth(ADMIN_TOKEN)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_replay_opens_a_new_incident_linked_to_its_alert_and_runs_it() {
    let app = spawn_app_with(&app_pool_fault()).await;
    let alert_id =
        held_alert(&app, &native("cas01.contoso.com", "ActiveSyncCTPMonitor", CTP_MESSAGE)).await;

    let (status, answer) = replay(&app, &alert_id, "").await;
    assert_eq!(status, 202, "an empty body means dry_run false: {answer}");
    let incident_id = answer["incident_id"].as_str().expect("the new incident's id").to_owned();
    let incident = app.wait_final(&incident_id).await;
    assert_eq!(incident["replay_of"], alert_id.as_str());
    assert_eq!(incident["alert_ids"], json!([alert_id]));
    assert_eq!(incident["dry_run"], false);
    assert_eq!(
        incident["mailbox_hint"], "mbx01.contoso.com",
        "the replay reads the _Mbx: hint from the raw body again"
    );
    assert_eq!(
        steps(&incident),
        [
            "probe cas01.contoso.com failed",
            "ma_history cas01.contoso.com none",
            "component_state cas01.contoso.com active",
            "recycle_app_pool cas01.contoso.com done",
            "probe cas01.contoso.com succeeded"
        ]
    );
    assert_eq!(incident["state"], "recovered");

    let (_, alert) = app.admin_get(&format!("/v1/alerts/{alert_id}")).await;
    assert_eq!(
        alert["incident_ids"],
        json!([incident_id]),
        "the alert lists the incident it was replayed into"
    );

    // Once that incident is over, the same alert may be replayed again; the server is healthy by now.
    let (status, again) = replay(&app, &alert_id, r#"{"dry_run": false}"#).await;
    assert_eq!(status, 202, "{again}");
    assert_ne!(again["incident_id"], incident_id.as_str());
    let incident = app.wait_final(again["incident_id"].as_str().unwrap()).await;
    assert_eq!(
        (incident["state"].as_str(), incident["replay_of"].as_str()),
        (Some("transient"), Some(alert_id.as_str()))
    );
}

#[tokio::test]
async fn a_replay_is_refused_while_an_incident_is_open_for_the_same_key() {
    let app = spawn_app_with(INVENTORY).await;
    hold_incidents(&app).await;
    let answer: Value = app
        .post_signed(
            "/v1/alerts",
            &native("cas01.contoso.com", "ActiveSyncCTPMonitor", CTP_MESSAGE),
        )
        .await
        .json()
        .await
        .unwrap();
    let alert_id = answer["alerts"][0]["alert_id"].as_str().unwrap();
    let open = answer["alerts"][0]["incident_id"].as_str().unwrap();

    let (status, refused) = replay(&app, alert_id, r#"{"dry_run": true}"#).await;
    assert_eq!(status, 409);
    assert_eq!(
        refused,
        json!({"error": {"code": "conflict", "message": format!("incident {open} is already open for cas01.contoso.com ActiveSync ActiveSyncCTPMonitor")}})
    );
    let (_, incidents) = app.admin_get("/v1/incidents").await;
    assert_eq!(incidents["incidents"].as_array().unwrap().len(), 1, "nothing new was opened");
}

#[tokio::test]
async fn unknown_alerts_bad_bodies_and_missing_tokens_are_refused() {
    let app = spawn_app().await;
    let (status, answer) = replay(&app, "0193aaaa-0000-7000-8000-000000000000", "{}").await;
    assert_eq!(status, 404);
    assert_eq!(answer["error"]["code"], "not_found");
    assert_eq!(
        answer["error"]["message"],
        "alert 0193aaaa-0000-7000-8000-000000000000 does not exist"
    );

    let alert_id = app
        .post_signed("/v1/alerts", &native("cas01.contoso.com", "ActiveSyncCTPMonitor", "x"))
        .await
        .json::<Value>()
        .await
        .unwrap()["alerts"][0]["alert_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, answer) = replay(&app, &alert_id, r#"{"dry_run": "yes"}"#).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().starts_with("body: "), "{answer}");

    let response = app
        .http
        .post(format!("{}/v1/alerts/{alert_id}/replay", app.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn a_dry_run_replay_journals_mutating_steps_as_dry_run() {
    let app = spawn_app_with(&app_pool_fault()).await;
    let alert_id =
        held_alert(&app, &native("cas01.contoso.com", "ActiveSyncCTPMonitor", CTP_MESSAGE)).await;
    let (status, answer) = replay(&app, &alert_id, r#"{"dry_run": true}"#).await;
    assert_eq!(status, 202, "{answer}");
    let incident = app.wait_final(answer["incident_id"].as_str().unwrap()).await;
    assert_eq!(incident["dry_run"], true);
    let journal = steps(&incident);
    assert!(
        journal.contains(&"recycle_app_pool cas01.contoso.com dry_run".to_owned()),
        "{journal:#?}"
    );
    let mutating = [
        "recycle_app_pool",
        "iis_reset",
        "disable_activation",
        "restart_server",
        "enable_activation",
    ];
    for step in &journal {
        if mutating.iter().any(|action| step.starts_with(action)) {
            assert!(step.ends_with(" dry_run"), "a mutating step ran in a dry run: {journal:#?}");
        }
    }
    assert_ne!(
        incident["state"], "recovered",
        "nothing was changed, so nothing recovered: {journal:#?}"
    );
}

#[tokio::test]
async fn the_services_dry_run_setting_wins_over_the_request() {
    let app = spawn_app_with(&format!("{}\n[executor]\ndry_run = true\n", app_pool_fault())).await;
    let alert_id =
        held_alert(&app, &native("cas01.contoso.com", "ActiveSyncCTPMonitor", CTP_MESSAGE)).await;
    let (status, answer) = replay(&app, &alert_id, r#"{"dry_run": false}"#).await;
    assert_eq!(status, 202, "{answer}");
    let incident = app.wait_final(answer["incident_id"].as_str().unwrap()).await;
    assert_eq!(incident["dry_run"], true);
    assert!(
        steps(&incident).contains(&"recycle_app_pool cas01.contoso.com dry_run".to_owned()),
        "{incident:#}"
    );
}

#[tokio::test]
async fn a_replay_takes_the_alert_at_its_position_in_the_delivery() {
    let app = spawn_app_with(INVENTORY).await;
    let alert = |server: &str| {
        json!({"status": "firing", "labels": {"health_set": "ActiveSync", "monitor": "ActiveSyncDeepTestMonitor", "server": server},
               "startsAt": "2026-11-26T10:00:00Z", "fingerprint": format!("fp-{server}")})
    };
    let body = json!({"version": "4", "status": "firing", "alerts": [alert("cas01.contoso.com"), alert("cas02.contoso.com")]}).to_string();
    let answer: Value =
        app.post_signed("/v1/alerts/alertmanager", &body).await.json().await.unwrap();
    for item in answer["alerts"].as_array().unwrap() {
        app.wait_final(item["incident_id"].as_str().unwrap()).await;
    }
    let second = answer["alerts"][1]["alert_id"].as_str().unwrap();
    let (status, replayed) = replay(&app, second, "{}").await;
    assert_eq!(status, 202, "{replayed}");
    let incident = app.wait_final(replayed["incident_id"].as_str().unwrap()).await;
    assert_eq!(
        (incident["server"].as_str(), incident["monitor"].as_str()),
        (Some("cas02.contoso.com"), Some("ActiveSyncDeepTestMonitor"))
    );
}

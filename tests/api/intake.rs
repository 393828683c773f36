//! Authenticated intake into the durable store (SPEC section 3).

use serde_json::{json, Value};

use crate::helpers::*;

const CTP: &str = "Error occurred:\n\nUser: eas-probe@contoso.com\nResponse: 503 Service Unavailable\nDiagnostics header:_Cas:CAS01.contoso.com_Mbx:MBX01.contoso.com_Dc:DC01.contoso.com_";

async fn counts(app: &TestApp) -> (usize, usize) {
    let (_, alerts) = app.admin_get("/v1/alerts?limit=1000").await;
    let (_, incidents) = app.admin_get("/v1/incidents?limit=1000").await;
    (alerts["alerts"].as_array().unwrap().len(), incidents["incidents"].as_array().unwrap().len())
}

#[tokio::test]
async fn a_signed_alert_is_stored_and_readable_back() {
    let app = spawn_app().await;
    let body = native("CAS01.contoso.com", "ActiveSyncCTPMonitor", CTP);
    let response = app.post_signed("/v1/alerts", &body).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    let item = &answer["alerts"][0];
    assert_eq!(item["disposition"], "new_incident");
    let alert_id = item["alert_id"].as_str().unwrap();
    let incident_id = item["incident_id"].as_str().unwrap();

    let (status, alert) = app.admin_get(&format!("/v1/alerts/{alert_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(alert["server"], "cas01.contoso.com");
    assert_eq!(alert["monitor"], "ActiveSyncCTPMonitor");
    assert_eq!(alert["mailbox_hint"], "mbx01.contoso.com");
    assert_eq!(alert["sender"], "scom");
    assert_eq!(alert["raw_body"], body, "the raw body is kept byte for byte");

    let (status, incident) = app.admin_get(&format!("/v1/incidents/{incident_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(incident["server"], "cas01.contoso.com");
    assert_eq!(incident["mailbox_hint"], "mbx01.contoso.com");
    assert_eq!(incident["alert_ids"], json!([alert_id]));
}

#[tokio::test]
async fn a_second_alert_for_the_same_key_attaches_to_the_open_incident() {
    let app = spawn_app_with("[executor]\ndry_run = true").await;
    app.admin_post("/v1/automation/pause", json!({"reason": "test holds incidents queued"})).await;
    let first: Value = app
        .post_signed("/v1/alerts", &native("cas01.contoso.com", "ActiveSyncCTPMonitor", "a"))
        .await
        .json()
        .await
        .unwrap();
    let second: Value = app
        .post_signed("/v1/alerts", &native("CAS01.CONTOSO.COM", "activesyncctpmonitor", "b"))
        .await
        .json()
        .await
        .unwrap();
    let other: Value = app
        .post_signed("/v1/alerts", &native("cas02.contoso.com", "ActiveSyncCTPMonitor", "c"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["alerts"][0]["disposition"], "attached");
    assert_eq!(second["alerts"][0]["incident_id"], first["alerts"][0]["incident_id"]);
    assert_eq!(other["alerts"][0]["disposition"], "new_incident");
    assert_ne!(other["alerts"][0]["incident_id"], first["alerts"][0]["incident_id"]);
    let (_, incident) = app
        .admin_get(&format!(
            "/v1/incidents/{}",
            first["alerts"][0]["incident_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(incident["alert_ids"].as_array().unwrap().len(), 2);
    assert_eq!(incident["state"], "queued");
    assert_eq!(incident["dry_run"], true);
}

#[tokio::test]
async fn bad_credentials_are_refused_and_nothing_is_stored() {
    let app = spawn_app().await;
    let body = native("cas01.contoso.com", "ActiveSyncCTPMonitor", "x");
    let now = chrono::Utc::now().timestamp();
    let other_secret = "whsec_c29tZSBvdGhlciBzZWNyZXQga2V5IGJ5dGVz";
    let cases = [
        ("wrong secret", app.post_signed_as("/v1/alerts", &body, "msg_a", now, other_secret).await),
        (
            "stale timestamp",
            app.post_signed_as("/v1/alerts", &body, "msg_b", now - 600, SECRET).await,
        ),
        (
            "future timestamp",
            app.post_signed_as("/v1/alerts", &body, "msg_c", now + 600, SECRET).await,
        ),
        (
            "tampered body",
            app.http
                .post(format!("{}/v1/alerts", app.url))
                .header("content-type", "application/json")
                .header("webhook-id", "msg_d")
                .header("webhook-timestamp", now.to_string())
                .header(
                    "webhook-signature",
                    healthset_responder::auth::sign_standard(
                        &healthset_responder::auth::Secret::parse_whsec(SECRET).unwrap(),
                        "msg_d",
                        now,
                        b"{}",
                    ),
                )
                .body(body.clone())
                .send()
                .await
                .unwrap(),
        ),
        (
            "missing signature",
            app.http
                .post(format!("{}/v1/alerts", app.url))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap(),
        ),
    ];
    for (case, response) in cases {
        assert_eq!(response.status(), 401, "{case}");
        let text = response.text().await.unwrap();
        let error: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error["error"]["code"], "unauthorized", "{case}");
        assert!(!text.contains("v1,"), "{case}: the answer hints at a signature: {text}");
    }
    assert_eq!(counts(&app).await, (0, 0));
    let (_, rejected) = app.admin_get("/v1/alerts?rejected=true").await;
    assert_eq!(
        rejected["rejected"].as_array().unwrap().len(),
        0,
        "unauthenticated bodies are not kept"
    );
}

#[tokio::test]
async fn malformed_invalid_oversized_and_non_json_bodies_get_clear_errors() {
    let app = spawn_app().await;
    let response = app.post_signed("/v1/alerts", "{\"health_set\": ").await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "malformed_json");

    let response = app
        .post_signed(
            "/v1/alerts",
            &json!({"health_set": "ActiveSync", "server": "cas01; Restart-Computer"}).to_string(),
        )
        .await;
    assert_eq!(response.status(), 422);
    let error: Value = response.json().await.unwrap();
    assert!(error["error"]["message"].as_str().unwrap().starts_with("server:"), "{error}");

    let response = app
        .post_signed("/v1/alerts", &json!({"health_set": "ActiveSync", "server": 7}).to_string())
        .await;
    assert_eq!(response.status(), 422);
    assert!(response.json::<Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("server:"));

    let huge = native("cas01.contoso.com", "ActiveSyncCTPMonitor", &"x".repeat(20_000));
    let response = app.post_signed("/v1/alerts", &huge).await;
    assert_eq!(response.status(), 413);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "payload_too_large");

    let body = native("cas01.contoso.com", "ActiveSyncCTPMonitor", "x");
    let now = chrono::Utc::now().timestamp();
    let key = healthset_responder::auth::Secret::parse_whsec(SECRET).unwrap();
    let response = app
        .http
        .post(format!("{}/v1/alerts", app.url))
        .header("content-type", "text/plain")
        .header("webhook-id", "msg_text")
        .header("webhook-timestamp", now.to_string())
        .header(
            "webhook-signature",
            healthset_responder::auth::sign_standard(&key, "msg_text", now, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);

    assert_eq!(counts(&app).await, (0, 0), "no alert or incident from bad input");
    let (_, rejected) = app.admin_get("/v1/alerts?rejected=true").await;
    let rejected = rejected["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2, "the two authenticated 422 deliveries are kept");
    assert!(rejected.iter().all(|r| r["error"].as_str().unwrap().starts_with("server:")));
}

#[tokio::test]
async fn the_same_delivery_again_gets_the_original_answer() {
    let app = spawn_app().await;
    let body = native("cas01.contoso.com", "ActiveSyncCTPMonitor", "x");
    let now = chrono::Utc::now().timestamp();
    let first: Value = app
        .post_signed_as("/v1/alerts", &body, "msg_same", now, SECRET)
        .await
        .json()
        .await
        .unwrap();
    let again = app.post_signed_as("/v1/alerts", &body, "msg_same", now + 1, SECRET).await;
    assert_eq!(again.status(), 202);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["alerts"][0]["alert_id"], first["alerts"][0]["alert_id"]);
    assert_eq!(again["alerts"][0]["incident_id"], first["alerts"][0]["incident_id"]);
    assert_eq!(again["alerts"][0]["disposition"], "duplicate");

    let with_id = json!({"id": "scom-42", "health_set": "ActiveSync", "server": "cas02.contoso.com", "monitor": "ActiveSyncCTPMonitor"}).to_string();
    let first: Value = app.post_signed("/v1/alerts", &with_id).await.json().await.unwrap();
    let again: Value = app.post_signed("/v1/alerts", &with_id).await.json().await.unwrap();
    assert_eq!(again["alerts"][0]["alert_id"], first["alerts"][0]["alert_id"]);
    assert_eq!(again["alerts"][0]["disposition"], "duplicate");
    assert_eq!(counts(&app).await, (2, 2), "duplicates create nothing");
}

#[tokio::test]
async fn everything_survives_a_restart() {
    let mut app = spawn_app().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let answer: Value = app
            .post_signed(
                "/v1/alerts",
                &native(&format!("cas{n:02}.contoso.com"), "ActiveSyncCTPMonitor", CTP),
            )
            .await
            .json()
            .await
            .unwrap();
        ids.push(answer["alerts"][0]["alert_id"].as_str().unwrap().to_owned());
    }
    app.restart().await;
    assert_eq!(counts(&app).await, (5, 5));
    for id in ids {
        let (status, alert) = app.admin_get(&format!("/v1/alerts/{id}")).await;
        assert_eq!(status, 200);
        assert_eq!(alert["mailbox_hint"], "mbx01.contoso.com");
    }
}

#[tokio::test]
async fn the_admin_api_needs_the_admin_token() {
    let app = spawn_app().await;
    for path in ["/v1/alerts", "/v1/incidents", "/v1/silences"] {
        let response = app.http.get(format!("{}{path}", app.url)).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        let response = app
            .http
            .get(format!("{}{path}", app.url))
            .bearer_auth("not-the-admin-token")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path}");
    }
    let (status, _) = app.admin_get("/v1/incidents?state=lost").await;
    assert_eq!(status, 400);
    let (status, _) = app.admin_get("/v1/alerts/no-such-alert").await;
    assert_eq!(status, 404);
    assert_eq!(app.http.get(format!("{}/healthz", app.url)).send().await.unwrap().status(), 200);
    let ready: Value =
        app.http.get(format!("{}/readyz", app.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "ready");
}

/// Two more senders: a `hub-signature-256` one and a low-trust bearer one.
const OTHER_SENDERS: &str = r#"
[[senders]]
name = "ticketing"
auth = "hub-signature-256"
secrets = ["ticketing-hub-secret-0123"]

[[senders]]
name = "lab"
auth = "bearer"
tokens = ["low-trust-lab-token-0123"]
"#;

async fn post_hub(app: &TestApp, body: &str) -> Value {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"ticketing-hub-secret-0123").unwrap();
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let response = app
        .http
        .post(format!("{}/v1/alerts", app.url))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    response.json().await.unwrap()
}

async fn post_bearer(app: &TestApp, body: &str) -> Value {
    let response = app
        .http
        .post(format!("{}/v1/alerts", app.url))
        .header("content-type", "application/json")
        .bearer_auth("low-trust-lab-token-0123")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    response.json().await.unwrap()
}

#[tokio::test]
async fn one_senders_source_id_does_not_make_anothers_alert_a_duplicate() {
    let app = spawn_app_with(OTHER_SENDERS).await;
    // A low-trust sender posts the id first, for another server...
    let planted = json!({"id": "scom-4711", "health_set": "ActiveSync", "server": "lab01.contoso.com", "monitor": "ActiveSyncCTPMonitor"}).to_string();
    assert_eq!(post_bearer(&app, &planted).await["alerts"][0]["disposition"], "new_incident");
    // ...and SCOM's real alert with that id is still taken.
    let real = json!({"id": "scom-4711", "health_set": "ActiveSync", "server": "cas01.contoso.com", "monitor": "ActiveSyncCTPMonitor"}).to_string();
    let answer: Value = app.post_signed("/v1/alerts", &real).await.json().await.unwrap();
    assert_eq!(answer["alerts"][0]["disposition"], "new_incident");
    let (_, incident) = app
        .admin_get(&format!(
            "/v1/incidents/{}",
            answer["alerts"][0]["incident_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(incident["server"], "cas01.contoso.com");
    // SCOM's own repeat is still a duplicate of SCOM's first.
    let again: Value = app.post_signed("/v1/alerts", &real).await.json().await.unwrap();
    assert_eq!(again["alerts"][0]["disposition"], "duplicate");
    assert_eq!(again["alerts"][0]["alert_id"], answer["alerts"][0]["alert_id"]);
    assert_eq!(counts(&app).await, (2, 2));
}

#[tokio::test]
async fn the_same_signed_bytes_without_a_delivery_id_are_a_duplicate_within_the_window() {
    let app = spawn_app_with(OTHER_SENDERS).await;
    let body = native("cas01.contoso.com", "ActiveSyncCTPMonitor", "probe failed");
    let first = post_hub(&app, &body).await;
    assert_eq!(first["alerts"][0]["disposition"], "new_incident");
    // The incident ends (an empty inventory blocks it); a captured request posted again must not open another.
    let incident_id = first["alerts"][0]["incident_id"].as_str().unwrap();
    app.wait_final(incident_id).await;
    let replayed = post_hub(&app, &body).await;
    assert_eq!(replayed["alerts"][0]["disposition"], "duplicate");
    assert_eq!(
        replayed["alerts"][0]["alert_id"], first["alerts"][0]["alert_id"],
        "the original answer"
    );
    assert_eq!(replayed["alerts"][0]["incident_id"], first["alerts"][0]["incident_id"]);
    assert_eq!(counts(&app).await, (1, 1), "the replay created nothing");

    // The same bytes from another sender are that sender's own alert.
    let other = post_bearer(&app, &body).await;
    assert_eq!(other["alerts"][0]["disposition"], "new_incident");
    assert_eq!(post_bearer(&app, &body).await["alerts"][0]["disposition"], "duplicate");
    assert_eq!(counts(&app).await, (2, 2));
}

#[tokio::test]
async fn the_duplicate_window_can_be_turned_off() {
    let app =
        spawn_app_with(&format!("{OTHER_SENDERS}\n[intake]\nduplicate_window = \"0s\"\n")).await;
    let body = native("cas01.contoso.com", "ActiveSyncCTPMonitor", "probe failed");
    let first = post_hub(&app, &body).await;
    app.wait_final(first["alerts"][0]["incident_id"].as_str().unwrap()).await;
    assert_eq!(post_hub(&app, &body).await["alerts"][0]["disposition"], "new_incident");
}

//! Resolved notices from Alertmanager and native senders: recorded on the open incident, and cutting a settle wait short.

use super::*;

#[tokio::test]
async fn resolved_notices_from_alertmanager_and_native_senders_are_recorded_on_the_open_incident() {
    let app = spawn("", true).await;

    // Alertmanager: the firing notice of resolved.json's alert, then resolved.json itself.
    let mut firing: Value = serde_json::from_str(AM_RESOLVED).unwrap();
    firing["status"] = json!("firing");
    firing["alerts"][0]["status"] = json!("firing");
    firing["alerts"][0]["endsAt"] = json!("0001-01-01T00:00:00Z");
    let opened = accepted(
        &app,
        "/v1/alerts/alertmanager",
        &serde_json::to_vec(&firing).unwrap(),
        Credential::Bearer(BEARER_TOKENS[0]),
    )
    .await
    .remove(0);
    assert_eq!(opened["disposition"], "new_incident");
    let resolved = accepted(
        &app,
        "/v1/alerts/alertmanager",
        AM_RESOLVED.as_bytes(),
        Credential::Bearer(BEARER_TOKENS[0]),
    )
    .await
    .remove(0);
    assert_eq!(resolved["disposition"], "resolved");
    assert_eq!(resolved["incident_id"], opened["incident_id"]);
    assert_eq!(alert(&app, &resolved["alert_id"]).await["status"], "resolved");
    assert!(incident(&app, &opened["incident_id"]).await["resolved_notice_at"].is_string());
    let again = accepted(
        &app,
        "/v1/alerts/alertmanager",
        AM_RESOLVED.as_bytes(),
        Credential::Bearer(BEARER_TOKENS[0]),
    )
    .await
    .remove(0);
    assert_eq!(
        (&again["disposition"], &again["alert_id"]),
        (&json!("duplicate"), &resolved["alert_id"]),
        "the pair's second resolved notice"
    );

    // Native, with a source id and without one.
    for (name, id) in [("with an id", Some("native-42")), ("without an id", None)] {
        let server = if id.is_some() { "cas05.contoso.com" } else { "cas06.contoso.com" };
        let mut body = json!({"health_set": "ActiveSync", "server": server, "monitor": "ActiveSyncCTPMonitor", "message": CTP});
        if let Some(id) = id {
            body["id"] = json!(id);
        }
        let opened =
            accepted(&app, "/v1/alerts", body.to_string().as_bytes(), Credential::Standard(SECRET))
                .await
                .remove(0);
        assert_eq!(opened["disposition"], "new_incident", "{name}");
        body["status"] = json!("resolved");
        let resolved = accepted(
            &app,
            "/v1/alerts",
            body.to_string().as_bytes(),
            Credential::Bearer(BEARER_TOKENS[1]),
        )
        .await
        .remove(0);
        assert_eq!(resolved["disposition"], "resolved", "{name}");
        assert_eq!(resolved["incident_id"], opened["incident_id"], "{name}");
        let incident = incident(&app, &opened["incident_id"]).await;
        assert!(incident["resolved_notice_at"].is_string(), "{name}: {incident:#}");
        assert_eq!(incident["alert_ids"].as_array().unwrap().len(), 2, "{name}");
    }

    // A resolved notice with no open incident is stored, and opens nothing.
    let body = json!({"health_set": "ActiveSync", "server": "cas07.contoso.com", "monitor": "ActiveSyncCTPMonitor", "status": "resolved"});
    let lone =
        accepted(&app, "/v1/alerts", body.to_string().as_bytes(), Credential::Standard(SECRET))
            .await
            .remove(0);
    assert_eq!((&lone["disposition"], &lone["incident_id"]), (&json!("resolved"), &Value::Null));
    assert_eq!(counts(&app).await, (7, 3));
}

#[tokio::test]
async fn a_resolved_notice_cuts_a_settle_wait_short() {
    let app = spawn(
        &format!(
            "{INVENTORY}\n[timing]\nsettle_wait = \"30s\"\n[simulator.servers.\"cas01.contoso.com\"]\nfault = \"app_pool\"\nunhealthy_monitors = [\"RequestsQueuedGt500Monitor\"]\n"
        ),
        false,
    )
    .await;
    let firing = native(
        "cas01.contoso.com",
        "RequestsQueuedGt500Monitor",
        "More than 500 ActiveSync requests queued in MSExchangeSyncAppPool",
    );
    let opened = accepted(&app, "/v1/alerts", firing.as_bytes(), Credential::Standard(SECRET))
        .await
        .remove(0);
    let id = opened["incident_id"].clone();

    // Get-ServerHealth says unhealthy, the app pool is recycled, then the runbook waits 30 s before checking again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let incident = incident(&app, &id).await;
        if incident["state"] == "waiting" {
            assert_eq!(
                steps(&incident).last().map(String::as_str),
                Some("wait cas01.contoso.com -"),
                "{incident:#}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the incident never started its settle wait: {incident:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let resolved_body = json!({"health_set": "ActiveSync", "server": "cas01.contoso.com", "monitor": "RequestsQueuedGt500Monitor", "status": "resolved"});
    let notice_sent = Instant::now();
    let resolved = accepted(
        &app,
        "/v1/alerts",
        resolved_body.to_string().as_bytes(),
        Credential::Standard(SECRET),
    )
    .await
    .remove(0);
    assert_eq!((&resolved["disposition"], &resolved["incident_id"]), (&json!("resolved"), &id));
    let incident = app.wait_final(id.as_str().unwrap()).await;
    let took = notice_sent.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the incident re-checked {took:?} after the resolved notice, not at once"
    );
    assert_eq!(
        steps(&incident),
        [
            "server_health cas01.contoso.com unhealthy",
            "ma_history cas01.contoso.com none",
            "component_state cas01.contoso.com active",
            "recycle_app_pool cas01.contoso.com done",
            "wait cas01.contoso.com done",
            "server_health cas01.contoso.com healthy",
        ],
        "{incident:#}"
    );
    let wait =
        incident["steps"].as_array().unwrap().iter().find(|step| step["action"] == "wait").unwrap();
    assert!(wait["detail"].as_str().unwrap().contains("cut short"), "{wait:#}");
    assert_eq!(incident["state"], "recovered", "{incident:#}");
    assert!(incident["resolved_notice_at"].is_string());
}

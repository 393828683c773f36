//! An alert storm: thousands of signed deliveries from many tasks at once, every one acknowledged and stored.

use super::*;

/// How many deliveries the storm sends, and from how many concurrent tasks.
const STORM: usize = 3000;
const STORM_TASKS: usize = 64;

#[tokio::test]
async fn an_alert_storm_is_acknowledged_and_stored_in_full() {
    // Automation is paused before the service starts, so the engine opens the 3,000 incidents but runs none.
    let app = spawn("", true).await;
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..STORM_TASKS {
        let (http, url, next) = (app.http.clone(), app.url.clone(), next.clone());
        tasks.spawn(async move {
            let key = Secret::parse_whsec(SECRET).unwrap();
            let mut acknowledged = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= STORM {
                    return acknowledged;
                }
                let body = native(&format!("cas{n:04}.contoso.com"), "ActiveSyncCTPMonitor", CTP);
                let (id, timestamp) = (format!("storm-{n}"), chrono::Utc::now().timestamp());
                let response = http
                    .post(format!("{url}/v1/alerts"))
                    .header("content-type", "application/json")
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", timestamp.to_string())
                    .header(
                        "webhook-signature",
                        auth::sign_standard(&key, &id, timestamp, body.as_bytes()),
                    )
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 202, "delivery {n}: {:?}", response.text().await);
                let answer: Value = response.json().await.unwrap();
                assert_eq!(answer["alerts"][0]["disposition"], "new_incident", "delivery {n}");
                acknowledged.push(answer["alerts"][0]["alert_id"].as_str().unwrap().to_owned());
            }
        });
    }
    let mut acknowledged = HashSet::new();
    while let Some(ids) = tasks.join_next().await {
        acknowledged.extend(ids.unwrap());
    }
    let storm_took = started.elapsed();
    assert_eq!(acknowledged.len(), STORM, "every delivery got a 202 with its own alert id");

    // Page through the alerts, newest first, 1,000 at a time.
    let mut stored = HashSet::new();
    let mut before: Option<String> = None;
    for page in 0.. {
        assert!(page <= STORM / 1000, "more pages than {STORM} alerts need");
        let path = match &before {
            Some(id) => format!("/v1/alerts?limit=1000&before={id}"),
            None => "/v1/alerts?limit=1000".to_owned(),
        };
        let (status, answer) = app.admin_get(&path).await;
        assert_eq!(status, 200, "{answer}");
        let alerts = answer["alerts"].as_array().unwrap();
        let Some(last) = alerts.last() else { break };
        for alert in alerts {
            assert!(
                stored.insert(alert["id"].as_str().unwrap().to_owned()),
                "an alert on two pages: {alert}"
            );
        }
        before = Some(last["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(stored.len(), STORM, "exactly the acknowledged alerts are stored");
    assert_eq!(stored, acknowledged);

    let (_, queued) = app.admin_get("/v1/incidents?state=queued&limit=1000").await;
    assert_eq!(
        queued["incidents"].as_array().unwrap().len(),
        1000,
        "paused: the incidents wait queued"
    );
    let (_, running) = app.admin_get("/v1/incidents?state=running").await;
    assert_eq!(running["incidents"], json!([]));
    eprintln!("alert storm: {STORM} signed deliveries from {STORM_TASKS} tasks acknowledged in {storm_took:?}");
}

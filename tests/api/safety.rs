//! Safe automation: pause, silences, dry-run, throttles and locks under a storm, crash safety, retention.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::*;

const CTP: &str =
    "Diagnostics header:_Cas:CAS01.contoso.com_Mbx:MBX01.contoso.com_Dc:DC01.contoso.com_";

fn ctp(server: &str) -> String {
    native(server, "ActiveSyncCTPMonitor", CTP)
}

#[tokio::test]
async fn paused_automation_holds_new_incidents_queued_across_a_restart() {
    let mut app = spawn_app_with(&format!(
        "{INVENTORY}\n[simulator.servers.\"cas01.contoso.com\"]\nfault = \"app_pool\""
    ))
    .await;
    let (status, answer) =
        app.admin_post("/v1/automation/pause", json!({"reason": "change window CHG-1234"})).await;
    assert_eq!((status, answer["paused"].as_bool()), (200, Some(true)));
    app.restart().await;
    let ready: Value =
        app.http.get(format!("{}/readyz", app.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["paused"], true, "the pause survives a restart and shows in /readyz");
    assert_eq!(ready["pause_reason"], "change window CHG-1234");

    let response: Value =
        app.post_signed("/v1/alerts", &ctp("cas01.contoso.com")).await.json().await.unwrap();
    assert_eq!(
        response["alerts"][0]["disposition"], "new_incident",
        "while paused, new incidents are still opened"
    );
    let id = response["alerts"][0]["incident_id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, incident) = app.admin_get(&format!("/v1/incidents/{id}")).await;
    assert_eq!(incident["state"], "queued");
    assert_eq!(incident["steps"], json!([]), "nothing ran while paused");

    app.admin_post("/v1/automation/resume", json!({})).await;
    let incident = app.wait_final(&id).await;
    assert_eq!(incident["state"], "recovered");
}

#[tokio::test]
async fn silences_suppress_alerts_until_they_expire_or_are_deleted() {
    let app = spawn_app_with(INVENTORY).await;
    let until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (status, silence) = app
        .admin_post(
            "/v1/silences",
            json!({"server": "CAS01.contoso.com", "until": until, "reason": "patching"}),
        )
        .await;
    assert_eq!(status, 201, "{silence}");
    let answer: Value =
        app.post_signed("/v1/alerts", &ctp("cas01.contoso.com")).await.json().await.unwrap();
    assert_eq!(answer["alerts"][0]["disposition"], "suppressed");
    assert_eq!(answer["alerts"][0]["incident_id"], Value::Null);
    let other: Value =
        app.post_signed("/v1/alerts", &ctp("cas02.contoso.com")).await.json().await.unwrap();
    assert_eq!(
        other["alerts"][0]["disposition"], "new_incident",
        "a silence covers its server only"
    );

    let (status, error) = app
        .admin_post(
            "/v1/silences",
            json!({"server": "cas01.contoso.com", "until": "2020-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(error["error"]["message"].as_str().unwrap().starts_with("until:"));
    let (status, _) =
        app.admin_post("/v1/silences", json!({"server": "cas01 contoso", "until": until})).await;
    assert_eq!(status, 400);

    let response = app
        .http
        .delete(format!("{}/v1/silences/{}", app.url, silence["id"].as_str().unwrap()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let answer: Value =
        app.post_signed("/v1/alerts", &ctp("cas01.contoso.com")).await.json().await.unwrap();
    assert_eq!(answer["alerts"][0]["disposition"], "new_incident");

    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(600)).to_rfc3339();
    app.admin_post(
        "/v1/silences",
        json!({"server": "mbx02.contoso.com", "until": soon, "reason": "short"}),
    )
    .await;
    let during: Value = app
        .post_signed("/v1/alerts", &native("mbx02.contoso.com", "ActiveSyncDeepTestMonitor", "x"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(during["alerts"][0]["disposition"], "suppressed");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let after: Value = app
        .post_signed("/v1/alerts", &native("mbx02.contoso.com", "ActiveSyncDeepTestMonitor", "y"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        after["alerts"][0]["disposition"], "new_incident",
        "an expired silence no longer suppresses"
    );
}

#[tokio::test]
async fn dry_run_verifies_for_real_and_only_journals_changes() {
    let app = spawn_app_with(&format!("{INVENTORY}\n[executor]\ndry_run = true\n[simulator.servers.\"cas01.contoso.com\"]\nfault = \"app_pool\"")).await;
    let incident = app.wait_final(&app.open(&ctp("cas01.contoso.com")).await).await;
    assert_eq!(incident["dry_run"], true);
    assert_eq!(
        steps(&incident),
        [
            "probe cas01.contoso.com failed",
            "ma_history cas01.contoso.com none",
            "component_state cas01.contoso.com active",
            "recycle_app_pool cas01.contoso.com dry_run",
            "probe cas01.contoso.com failed",
            "iis_reset cas01.contoso.com dry_run",
            "probe cas01.contoso.com failed",
            "server_health mbx01.contoso.com healthy",
            "component_state cas01.contoso.com active",
            // Nothing restarted, so there is no boot to wait for.
            "restart_server cas01.contoso.com dry_run",
            "probe cas01.contoso.com failed",
        ]
    );
    let recycle = &incident["steps"][3];
    assert!(
        recycle["command"].as_str().unwrap().contains("MSExchangeSyncAppPool"),
        "a dry-run step shows the command it would have run"
    );
    assert_eq!(incident["state"], "escalated");
    let deadline = Instant::now() + Duration::from_secs(10);
    while outbox(&app).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let email = std::fs::read_to_string(&outbox(&app)[0]).unwrap();
    let subject = email.lines().find(|l| l.starts_with("Subject:")).unwrap();
    assert!(subject.contains("DRY RUN"), "{subject}");
}

#[tokio::test]
async fn retention_prunes_what_is_old_and_keeps_what_open_incidents_need() {
    let app = spawn_app_with(&format!(
        "{INVENTORY}\n[simulator.servers.\"cas02.contoso.com\"]\nfault = \"app_pool\""
    ))
    .await;
    let done = app.open(&ctp("cas01.contoso.com")).await;
    app.wait_final(&done).await;
    app.admin_post("/v1/automation/pause", json!({})).await;
    let open = app.open(&ctp("cas02.contoso.com")).await;
    let store = &app.service.as_ref().unwrap().store;
    let pruned = store.prune(healthset_responder::store::now_ms() + 1000).await.unwrap();
    assert_eq!((pruned.incidents, pruned.alerts, pruned.deliveries), (1, 1, 1));
    assert_eq!(app.admin_get(&format!("/v1/incidents/{done}")).await.0, 404);
    let (status, incident) = app.admin_get(&format!("/v1/incidents/{open}")).await;
    assert_eq!(status, 200);
    let alert = incident["alert_ids"][0].as_str().unwrap();
    assert_eq!(
        app.admin_get(&format!("/v1/alerts/{alert}")).await.0,
        200,
        "an open incident keeps its alerts"
    );
}

/// Which throttle group each test server is in (tests/api/helpers.rs INVENTORY).
fn group(server: &str) -> &'static str {
    if server.starts_with("cas") {
        "cas-array-1"
    } else {
        "dag1"
    }
}

pub async fn all_incidents(app: &TestApp) -> Vec<Value> {
    let (_, list) = app.admin_get("/v1/incidents?limit=1000").await;
    let mut full = Vec::new();
    for incident in list["incidents"].as_array().unwrap() {
        full.push(app.wait_final(incident["id"].as_str().unwrap()).await);
    }
    full
}

#[tokio::test]
async fn an_alert_storm_on_one_group_keeps_every_lock_and_limit() {
    let app = spawn_app_with(&format!(
        "{INVENTORY}\n[simulator]\naction_latency = \"5ms\"\n[simulator.servers.\"cas01.contoso.com\"]\nfault = \"never\"\n[simulator.servers.\"cas02.contoso.com\"]\nfault = \"iis_reset\"\n[simulator.servers.\"mbx01.contoso.com\"]\nfault = \"never\"\nunhealthy_monitors = [\"ActiveSyncDeepTestMonitor\"]\n[simulator.servers.\"mbx02.contoso.com\"]\nfault = \"restart\""
    ))
    .await;
    let alerts = [
        ("cas01.contoso.com", "ActiveSyncCTPMonitor"),
        ("cas02.contoso.com", "ActiveSyncCTPMonitor"),
        ("mbx01.contoso.com", "ActiveSyncDeepTestMonitor"),
        ("mbx02.contoso.com", "ActiveSyncSelfTestMonitor"),
        ("cas01.contoso.com", "RequestsQueuedGt500Monitor"),
    ];
    let mut accepted = 0;
    for wave in 0..6 {
        let mut posts = tokio::task::JoinSet::new();
        for n in 0..50 {
            let (server, monitor) = alerts[(wave + n) % alerts.len()];
            let body = native(server, monitor, CTP);
            let (http, url) = (app.http.clone(), format!("{}/v1/alerts", app.url));
            posts.spawn(async move {
                let id = format!("storm-{wave}-{n}");
                post_signed_to(&http, &url, &body, &id, chrono::Utc::now().timestamp(), SECRET)
                    .await
                    .status()
            });
        }
        while let Some(status) = posts.join_next().await {
            assert_eq!(status.unwrap(), 202);
            accepted += 1;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(accepted, 300);
    let (_, stored) = app.admin_get("/v1/alerts?limit=1000").await;
    assert_eq!(
        stored["alerts"].as_array().unwrap().len(),
        300,
        "every acknowledged alert is stored"
    );

    let incidents = all_incidents(&app).await;
    assert!(
        incidents.len() >= 5,
        "waves open new incidents once earlier ones end: {}",
        incidents.len()
    );

    // One incident acts on a server at a time: per server, the spans of different incidents do not overlap.
    let mut spans: BTreeMap<String, Vec<(i64, i64, String)>> = BTreeMap::new();
    let ms = |t: &Value| {
        chrono::DateTime::parse_from_rfc3339(t.as_str().unwrap()).unwrap().timestamp_millis()
    };
    for incident in &incidents {
        let mut per_server: HashMap<String, (i64, i64)> = HashMap::new();
        for step in incident["steps"].as_array().unwrap() {
            let span = per_server
                .entry(step["server"].as_str().unwrap().to_owned())
                .or_insert((i64::MAX, i64::MIN));
            span.0 = span.0.min(ms(&step["started_at"]));
            span.1 = span.1.max(ms(&step["finished_at"]));
        }
        for (server, (start, end)) in per_server {
            spans.entry(server).or_default().push((
                start,
                end,
                incident["id"].as_str().unwrap().to_owned(),
            ));
        }
    }
    for (server, mut list) in spans {
        list.sort();
        for pair in list.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "{server}: incidents {} and {} acted at the same time",
                pair[0].2,
                pair[1].2
            );
        }
    }

    // Managed Availability's limits held: within a day, one of each remedy per server and per group at most
    // (the minimum spacing is an hour or more), so at most one done step per group and kind.
    let mut done: BTreeMap<(String, String), usize> = BTreeMap::new();
    for incident in &incidents {
        for step in incident["steps"].as_array().unwrap() {
            let action = step["action"].as_str().unwrap();
            if ["recycle_app_pool", "iis_reset", "restart_server"].contains(&action)
                && step["outcome"] == "done"
            {
                *done
                    .entry((group(step["server"].as_str().unwrap()).to_owned(), action.to_owned()))
                    .or_default() += 1;
            }
        }
    }
    assert!(done.values().all(|&n| n == 1), "one run per group and remedy: {done:?}");

    let blocked: Vec<&Value> = incidents.iter().filter(|i| i["state"] == "blocked").collect();
    assert!(!blocked.is_empty(), "the storm must run into the throttles");
    for incident in blocked {
        assert!(
            incident["reason"].as_str().unwrap().contains("throttled: safety."),
            "{}",
            incident["reason"]
        );
        assert_eq!(
            incident["notifications"].as_array().unwrap().len(),
            1,
            "every blocked incident escalates: {incident:#}"
        );
    }
}

/// A simulator on which each of [`remedy_alerts`] runs real remedies, each change taking 120 ms and each settle
/// 400 ms: what the crash tests kill the service in the middle of.
pub const REMEDIES: &str = "[simulator]\naction_latency = \"120ms\"\n[timing]\nsettle_wait = \"400ms\"\n[simulator.servers.\"cas01.contoso.com\"]\nfault = \"never\"\n[simulator.servers.\"cas02.contoso.com\"]\nfault = \"never\"\nunhealthy_monitors = [\"RequestsQueuedGt500Monitor\"]\n[simulator.servers.\"mbx01.contoso.com\"]\nfault = \"never\"\n[simulator.servers.\"mbx02.contoso.com\"]\nfault = \"never\"\nactive_copies = 4\ncopies_moved_per_failover = 2\n";

/// One alert for each server of the inventory, each leading to remedies on [`REMEDIES`].
pub fn remedy_alerts() -> [String; 4] {
    [
        native("cas01.contoso.com", "ActiveSyncCTPMonitor", CTP),
        native("cas02.contoso.com", "RequestsQueuedGt500Monitor", "queue"),
        native("mbx01.contoso.com", "ActiveSyncDeepTestMonitor", "deep"),
        native("mbx02.contoso.com", "ActiveSyncSelfTestMonitor", "self"),
    ]
}

/// Throttles loose enough that every round of the crash test runs real remedies.
pub fn relaxed_throttles() -> String {
    ["recycle_app_pool", "iis_reset", "disable_activation", "restart_server"]
        .iter()
        .map(|kind| {
            format!("[safety.{kind}]\nserver_min_interval = \"0s\"\nserver_max_per_day = 1000\ngroup_min_interval = \"0s\"\ngroup_max_per_day = 1000\n")
        })
        .collect()
}

pub const MUTATING: [&str; 5] =
    ["recycle_app_pool", "iis_reset", "disable_activation", "restart_server", "enable_activation"];
pub const VERIFYING: [&str; 3] = ["probe", "server_health", "copy_status"];

/// What an incident's journal shows after any number of crashes or take-overs: every step finished, never two
/// changes without a check between them, and a change whose result was lost (`interrupted`) verified next on the
/// same server (probe, server health or copy status), never repeated blind.
pub fn assert_no_change_repeated_blind(incident: &Value) {
    let mutating = |s: &Value| MUTATING.contains(&s["action"].as_str().unwrap());
    let steps: Vec<&Value> =
        incident["steps"].as_array().unwrap().iter().filter(|s| s["action"] != "wait").collect();
    assert!(steps.iter().all(|s| !s["finished_at"].is_null()), "every step finished: {incident:#}");
    for pair in steps.windows(2) {
        assert!(
            !(mutating(pair[0]) && mutating(pair[1])),
            "two changes without a check between them: {incident:#}"
        );
        if pair[0]["outcome"] == "interrupted" && mutating(pair[0]) {
            assert!(
                VERIFYING.contains(&pair[1]["action"].as_str().unwrap()),
                "an interrupted change was not verified next: {incident:#}"
            );
            assert_eq!(pair[1]["server"], pair[0]["server"], "{incident:#}");
        }
    }
}

/// Waits (bounded) until some incident has a change started and not finished, and returns it and the step's seq.
pub async fn change_under_way(app: &TestApp) -> (String, i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, list) = app.admin_get("/v1/incidents?limit=1000").await;
        for summary in list["incidents"].as_array().unwrap() {
            let (_, incident) =
                app.admin_get(&format!("/v1/incidents/{}", summary["id"].as_str().unwrap())).await;
            let running = incident["steps"].as_array().unwrap().iter().find(|s| {
                s["finished_at"].is_null() && MUTATING.contains(&s["action"].as_str().unwrap())
            });
            if let Some(step) = running {
                return (
                    incident["id"].as_str().unwrap().to_owned(),
                    step["seq"].as_i64().unwrap(),
                );
            }
        }
        assert!(Instant::now() < deadline, "no change was under way within 30 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn killed_at_any_moment_it_loses_no_alert_and_repeats_no_change_blind() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("{}\n{}", base_config(&dir.path().join("data")), with_test_timing(REMEDIES),)
            + INVENTORY
            + &relaxed_throttles()
            + &store_under_test("").await,
    )
    .unwrap();
    let http = reqwest::Client::new();
    let alerts = remedy_alerts();
    let mut acknowledged = Vec::new();
    // Kill points spread over the runbooks: early, mid-step, mid-wait, late.
    // Kill points spread over the runbooks: early, mid-step, mid-wait, late; the last round kills while a change
    // is under way, as the journal shows it (a step started and not finished).
    let kill_after_ms = [150u64, 420, 90, 700, 260, 510, 330, 860, 0];
    let mut killed_during = None;
    for (round, delay) in kill_after_ms.iter().enumerate() {
        let mut process = ServiceProcess::start(&config, None);
        for body in &alerts {
            let id = format!("crash-{round}-{}", acknowledged.len());
            let url = format!("{}/v1/alerts", process.url);
            let response =
                post_signed_to(&http, &url, body, &id, chrono::Utc::now().timestamp(), SECRET)
                    .await;
            assert_eq!(response.status(), 202);
            let answer: Value = response.json().await.unwrap();
            acknowledged.push(answer["alerts"][0]["alert_id"].as_str().unwrap().to_owned());
        }
        if *delay > 0 {
            tokio::time::sleep(Duration::from_millis(*delay)).await;
        } else {
            killed_during = Some(change_under_way(&TestApp::attached(&process.url)).await);
        }
        process.child.kill().unwrap();
        process.child.wait().unwrap();
    }

    let mut process = ServiceProcess::start(&config, None);
    let app = TestApp::attached(&process.url);
    for id in &acknowledged {
        assert_eq!(
            app.admin_get(&format!("/v1/alerts/{id}")).await.0,
            200,
            "acknowledged alert {id} survived every kill"
        );
    }
    let incidents = all_incidents(&app).await;
    assert!(!incidents.is_empty());
    for incident in &incidents {
        assert_no_change_repeated_blind(incident);
    }
    let (incident_id, seq) =
        killed_during.expect("the last round killed the service during a change");
    let incident =
        incidents.iter().find(|i| i["id"] == incident_id.as_str()).expect("the incident is listed");
    let steps = incident["steps"].as_array().unwrap();
    let step = steps.iter().find(|s| s["seq"] == seq).unwrap();
    assert_eq!(
        step["outcome"], "interrupted",
        "the change the kill cut short is recorded interrupted: {incident:#}"
    );
    let next = steps
        .iter()
        .find(|s| s["seq"].as_i64() > Some(seq) && s["action"] != "wait")
        .expect("the incident went on");
    assert!(
        VERIFYING.contains(&next["action"].as_str().unwrap()),
        "and verified before anything else: {incident:#}"
    );
    process.child.kill().unwrap();
    process.child.wait().unwrap();
}

#[tokio::test]
async fn one_escalation_per_server_health_set_and_monitor_per_interval() {
    let app =
        spawn_app_with(&format!("{INVENTORY}\n[safety]\nescalation_min_interval = \"1500ms\"\n[simulator.servers.\"cas02.contoso.com\"]\nfault = \"never\""))
            .await;
    let proxy = || {
        json!({"health_set": "ActiveSync.Proxy", "server": "cas02.contoso.com", "monitor": "ActiveSyncProxyTestMonitor"}).to_string()
    };
    let mut statuses = Vec::new();
    for pause_after in [Duration::ZERO, Duration::ZERO, Duration::from_millis(1600), Duration::ZERO]
    {
        let incident = app.wait_final(&app.open(&proxy()).await).await;
        assert_eq!(incident["state"], "escalated");
        statuses.push(incident["notifications"][0]["status"].as_str().unwrap().to_owned());
        tokio::time::sleep(pause_after).await;
    }
    // The held ones are recorded on their incidents; the first and the one after the interval go out.
    assert_eq!(
        statuses.iter().map(|s| s == "held").collect::<Vec<_>>(),
        [false, true, true, false],
        "{statuses:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while outbox(&app).len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let emails = outbox(&app);
    assert_eq!(emails.len(), 2, "two emails sent");
    let last = mail_parser::MessageParser::default()
        .parse(&std::fs::read(&emails[1]).unwrap())
        .unwrap()
        .body_text(0)
        .unwrap()
        .into_owned();
    assert!(last.contains("2 more escalations"), "the next email summarises the held ones: {last}");
    // Another monitor on the same server is another key.
    let ctp = app.wait_final(&app.open(&ctp("cas02.contoso.com")).await).await;
    assert_eq!(ctp["state"], "escalated");
    assert_ne!(
        ctp["notifications"][0]["status"], "held",
        "a different monitor is escalated on its own"
    );
}

#[tokio::test]
async fn an_incident_waits_for_a_busy_mailbox_server_only_when_it_needs_it_and_only_so_long() {
    let app = spawn_app_with(&format!(
        "{INVENTORY}\n[timing]\nrestart_timeout = \"1s\"\n[simulator]\naction_latency = \"300ms\"\n[simulator.servers.\"mbx01.contoso.com\"]\nfault = \"never\"\nunhealthy_monitors = [\"ActiveSyncDeepTestMonitor\"]\n[simulator.servers.\"cas01.contoso.com\"]\nfault = \"never\""
    ))
    .await;
    let mailbox = app
        .open(&native("mbx01.contoso.com", "ActiveSyncDeepTestMonitor", "deep test failing"))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cas = app.open(&ctp("cas01.contoso.com")).await;
    let cas = app.wait_final(&cas).await;
    // The CAS incident ran its own remedies while the Mailbox server's incident held mbx01, then gave up waiting.
    assert_eq!(
        steps(&cas)[..7],
        [
            "probe cas01.contoso.com failed",
            "ma_history cas01.contoso.com none",
            "component_state cas01.contoso.com active",
            "recycle_app_pool cas01.contoso.com done",
            "probe cas01.contoso.com failed",
            "iis_reset cas01.contoso.com done",
            "probe cas01.contoso.com failed",
        ]
    );
    assert_eq!(cas["state"], "blocked", "{cas:#}");
    assert!(
        cas["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("mbx01.contoso.com stayed busy with incident {mailbox}")),
        "{}",
        cas["reason"]
    );
    assert!(steps(&cas).iter().all(|s| !s.contains("mbx01")), "it never acted on the busy server");
    assert_eq!(app.wait_final(&mailbox).await["state"], "escalated");
}

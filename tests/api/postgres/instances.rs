//! Several instances of the real service (separate processes) on one PostgreSQL database, as they run behind a load
//! balancer or as two SCOM channel targets: what an operator would see when one of them dies.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use healthset_responder::domain::{Dur, ServerName};
use healthset_responder::journal::Action;
use healthset_responder::safety::Throttle;
use healthset_responder::store::{NewStep, Postgres, Started};
use serde_json::Value;

use super::cluster::{connect, database};
use super::column;
use crate::helpers::*;
use crate::safety::{assert_no_change_repeated_blind, change_under_way};

/// One instance's configuration file: its own data directory (and outbox), the shared database, a lease of three
/// seconds (the shortest), and `extra` (simulator, timing).
fn instance_config(dir: &Path, name: &str, url: &str, extra: &str) -> PathBuf {
    let config = dir.join(format!("{name}.toml"));
    let store = format!("\n[store]\nbackend = \"postgres\"\nurl = {url:?}\nlease = \"3s\"\n");
    std::fs::write(
        &config,
        format!("{}\n{}{INVENTORY}{store}", base_config(&dir.join(name)), with_test_timing(extra)),
    )
    .unwrap();
    config
}

/// Posts `body` to one instance as a new delivery; returns the answer.
async fn post(http: &reqwest::Client, instance: &str, body: &str, id: &str) -> Value {
    let url = format!("{instance}/v1/alerts");
    let response =
        post_signed_to(http, &url, body, id, chrono::Utc::now().timestamp(), SECRET).await;
    let status = response.status();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 202, "{instance} acknowledged {id}: {answer}");
    answer
}

/// The `.eml` files every instance's outbox holds.
fn emails(dir: &Path, instances: &[&str]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for name in instances {
        if let Ok(entries) = std::fs::read_dir(dir.join(name).join("outbox")) {
            files.extend(
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "eml")),
            );
        }
    }
    files
}

/// The process id in an instance's name (`host:pid:suffix`).
fn pid_of(instance: &str) -> u32 {
    instance
        .split(':')
        .nth(1)
        .and_then(|pid| pid.parse().ok())
        .expect("an instance name holds its pid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_posted_to_two_instances_at_once_open_one_incident_per_key() {
    let url = database().await;
    let dir = tempfile::tempdir().unwrap();
    // Every key's check fails, so each incident wants a change; automation paused through one instance refuses
    // every change on both (the other may still verify before it hears of the pause), so every incident stays open.
    let extra = "[simulator.servers.\"cas01.contoso.com\"]\nfault = \"app_pool\"\nunhealthy_monitors = [\"RequestsQueuedGt500Monitor\"]\n[simulator.servers.\"cas02.contoso.com\"]\nfault = \"app_pool\"\n";
    let a = ServiceProcess::start(&instance_config(dir.path(), "a", &url, extra), None);
    let b = ServiceProcess::start(&instance_config(dir.path(), "b", &url, extra), None);
    let (status, _) = TestApp::attached(&a.url)
        .admin_post("/v1/automation/pause", serde_json::json!({"reason": "change freeze"}))
        .await;
    assert_eq!(status, 200);
    let http = reqwest::Client::new();
    let keys = [
        ("cas01.contoso.com", "ActiveSyncCTPMonitor"),
        ("cas02.contoso.com", "ActiveSyncCTPMonitor"),
        ("cas01.contoso.com", "RequestsQueuedGt500Monitor"),
    ];
    let mut posts = Vec::new();
    for round in 0..4 {
        for (k, (server, monitor)) in keys.iter().enumerate() {
            let body = native(server, monitor, "probe failing");
            // Every delivery goes to both instances at once: once under its own id, and once more under the
            // same id (a sender retrying through the other target).
            for (n, instance) in [&a.url, &b.url].into_iter().enumerate() {
                let (http, body, instance) = (http.clone(), body.clone(), instance.clone());
                let own = format!("msg_{round}_{k}_{n}");
                let shared = format!("msg_{round}_{k}_shared");
                posts.push(tokio::spawn(async move {
                    let own = post(&http, &instance, &body, &own).await;
                    let shared = post(&http, &instance, &body, &shared).await;
                    (k, own, shared)
                }));
            }
        }
    }
    let mut by_key: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    let mut shared_dispositions = Vec::new();
    for post in posts {
        let Ok((k, own, shared)) = post.await else {
            let logs = [a.log.lock().unwrap().clone(), b.log.lock().unwrap().clone()];
            let errors: Vec<&str> =
                logs.iter().flat_map(|log| log.lines()).filter(|l| l.contains("ERROR")).collect();
            panic!("a delivery was not acknowledged; the instances logged: {errors:#?}");
        };
        for answer in [&own, &shared] {
            let alert = &answer["alerts"][0];
            if alert["disposition"] != "duplicate" {
                by_key.entry(k).or_default().insert(alert["incident_id"].as_str().unwrap().into());
            }
        }
        shared_dispositions.push(shared["alerts"][0]["disposition"].as_str().unwrap().to_owned());
    }
    assert_eq!(by_key.len(), keys.len());
    let db = connect(&url).await;
    for (key, incidents) in &by_key {
        assert_eq!(incidents.len(), 1, "one incident for {:?}: {incidents:?}", keys[*key]);
    }
    let open: Vec<i64> = column(&db, "SELECT count(*) FROM incidents").await;
    assert_eq!(open, [keys.len() as i64], "no other incident was opened");
    let duplicates = shared_dispositions.iter().filter(|d| *d == "duplicate").count();
    assert_eq!(
        duplicates,
        shared_dispositions.len() / 2,
        "each delivery sent to both under one id was kept once: {shared_dispositions:?}"
    );
    let alerts: Vec<i64> = column(&db, "SELECT count(*) FROM alerts").await;
    assert_eq!(
        alerts,
        [(4 * keys.len() * 3) as i64],
        "every delivery kept once: own ids and the shared one"
    );
    // The pause set through a held b too: neither instance changed anything.
    let changes: Vec<i64> =
        column(&db, "SELECT count(*) FROM steps WHERE action IN ('recycle_app_pool', 'iis_reset')")
            .await;
    assert_eq!(changes, [0], "no change while paused");
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_in_a_long_change_is_taken_over_verified_and_escalated_once() {
    let url = database().await;
    let dir = tempfile::tempdir().unwrap();
    // Every change takes 1.5 s, and nothing cures cas01 short of a restart, which the CAS runbook does not make
    // blind.
    let extra = "[simulator]\naction_latency = \"1500ms\"\n[timing]\nsettle_wait = \"100ms\"\n[simulator.servers.\"cas01.contoso.com\"]\nfault = \"restart\"\n";
    let mut a = ServiceProcess::start(&instance_config(dir.path(), "a", &url, extra), None);
    let mut b = ServiceProcess::start(&instance_config(dir.path(), "b", &url, extra), None);
    let http = reqwest::Client::new();
    let answer = post(
        &http,
        &a.url,
        &native("cas01.contoso.com", "ActiveSyncCTPMonitor", "CTP failing"),
        "msg_long",
    )
    .await;
    let id = answer["alerts"][0]["incident_id"].as_str().unwrap().to_owned();
    let (cut, seq) = change_under_way(&TestApp::attached(&a.url)).await;
    assert_eq!(cut, id);
    let db = connect(&url).await;
    let owner: Vec<String> = column(&db, "SELECT lease_owner FROM incidents").await;
    let driver = pid_of(&owner[0]);
    // Kill whichever instance drives it (the one that took the alert, or the other, if its sweep came first).
    let (killed, survivor) = if driver == a.child.id() { (&mut a, &b) } else { (&mut b, &a) };
    assert_eq!(killed.child.id(), driver, "one of the two instances drives the incident");
    let killed_at = Instant::now();
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();

    let app = TestApp::attached(&survivor.url);
    let deadline = Instant::now() + Duration::from_secs(60);
    let taken_over = loop {
        let (_, incident) = app.admin_get(&format!("/v1/incidents/{id}")).await;
        let step = incident["steps"].as_array().unwrap().iter().find(|s| s["seq"] == seq).cloned();
        if step.is_some_and(|s| !s["finished_at"].is_null()) {
            break killed_at.elapsed();
        }
        assert!(Instant::now() < deadline, "nobody took the incident over: {incident:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("taken over {} ms after the kill (store.lease = 3s)", taken_over.as_millis());
    let incident = loop {
        let (_, incident) = app.admin_get(&format!("/v1/incidents/{id}")).await;
        if !["queued", "running", "waiting"].contains(&incident["state"].as_str().unwrap()) {
            break incident;
        }
        assert!(Instant::now() < deadline, "the incident did not end: {incident:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // After IIS reset the CAS runbook would check the Mailbox server the alert does not name: a person takes over.
    assert_eq!(incident["state"], "blocked", "{incident:#}");
    assert!(incident["reason"].as_str().unwrap().contains("no _Mbx: hint"), "{incident:#}");
    let steps = incident["steps"].as_array().unwrap();
    let cut_step = steps.iter().find(|s| s["seq"] == seq).unwrap();
    assert_eq!(cut_step["outcome"], "interrupted", "the change the kill cut short: {incident:#}");
    let next = steps
        .iter()
        .find(|s| s["seq"].as_i64() > Some(seq) && s["action"] != "wait")
        .expect("the survivor went on");
    assert_eq!(next["action"], "probe", "the survivor verified before anything else: {incident:#}");
    assert_no_change_repeated_blind(&incident);

    // One escalation, sent once, by the survivor.
    let deadline = Instant::now() + Duration::from_secs(20);
    while emails(dir.path(), &["a", "b"]).is_empty() {
        assert!(Instant::now() < deadline, "the escalation was not sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = emails(dir.path(), &["a", "b"]);
    assert_eq!(sent.len(), 1, "one escalation email: {sent:?}");
    let (_, incident) = app.admin_get(&format!("/v1/incidents/{id}")).await;
    let notifications = incident["notifications"].as_array().unwrap();
    assert_eq!(notifications.len(), 1, "{incident:#}");
    assert_eq!(
        (notifications[0]["kind"].as_str(), notifications[0]["status"].as_str()),
        (Some("escalation"), Some("sent"))
    );
    let owners: Vec<Option<String>> = column(&db, "SELECT lease_owner FROM incidents").await;
    assert_eq!(owners, [None], "the ended incident is held by nobody");
}

/// Opens an incident for `server` through `pg` and claims it for that instance; returns its id.
async fn claimed(pg: &Postgres, server: &str, id: &str) -> String {
    let body = super::body(Some(id), server, "firing");
    let (delivery, alerts) = super::delivery("scom", None, &body);
    let answer = pg.accept(delivery, alerts, false, super::WINDOW).await.unwrap();
    let incident = answer.alerts[0].incident_id.clone().unwrap();
    let runnable = pg.runnable(Some(incident.clone())).await.unwrap();
    assert_eq!(runnable.len(), 1, "{} claims {incident}", pg.instance());
    incident
}

/// Starts an IIS reset on `server` for `incident` through `pg`, under `throttle` for the CAS array.
async fn iis_reset(pg: Postgres, incident: String, server: &str, throttle: Throttle) -> Started {
    let action = Action::IisReset { server: ServerName::parse(server).unwrap(), noforce: true };
    let step = NewStep {
        action: &action,
        command: "iisreset /noforce".into(),
        group: Some("cas-array-1".into()),
        throttle: Some(throttle),
        commits_to: Vec::new(),
    };
    pg.start_step(incident, step).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_racing_for_one_throttle_never_both_pass() {
    // One IIS reset per day in the CAS array: two incidents in the array, driven by two instances, reach it at once.
    let once = Throttle {
        server_min_interval: Dur(Duration::ZERO),
        server_max_per_day: 10,
        group_min_interval: Dur(Duration::ZERO),
        group_max_per_day: 1,
    };
    for round in 0..5 {
        let url = database().await;
        let (a, b) = super::two_instances(&url).await;
        let first = claimed(&a, "cas01.contoso.com", &format!("{round}-a")).await;
        let second = claimed(&b, "cas02.contoso.com", &format!("{round}-b")).await;
        let (by_a, by_b) = tokio::join!(
            tokio::spawn(iis_reset(a.clone(), first, "cas01.contoso.com", once.clone())),
            tokio::spawn(iis_reset(b.clone(), second, "cas02.contoso.com", once.clone())),
        );
        let outcomes = [by_a.unwrap(), by_b.unwrap()];
        let ran = outcomes.iter().filter(|s| matches!(s, Started::Run { .. })).count();
        assert_eq!(ran, 1, "round {round}: exactly one reset passes the limit: {outcomes:?}");
        let refused = outcomes.iter().find_map(|s| match s {
            Started::Throttled(reason) => Some(reason.clone()),
            _ => None,
        });
        let refused = refused.expect("the other is throttled");
        assert!(refused.contains("cas-array-1"), "the refusal names the group: {refused}");
        let db = connect(&url).await;
        let counted: Vec<i64> =
            column(&db, "SELECT count(*) FROM steps WHERE action = 'iis_reset' AND counted").await;
        assert_eq!(counted, [1], "one reset counts against the limit");
        let throttled: Vec<i64> =
            column(&db, "SELECT count(*) FROM steps WHERE outcome = 'throttled'").await;
        assert_eq!(throttled, [1], "the refused one is journaled throttled");
    }
}

/// Waits (bounded) until no notification waits to be sent: a kill then cannot fall between an email leaving and
/// its being recorded, the one window in which an email may go twice (README, Reliability).
async fn outbox_settled(db: &tokio_postgres::Client) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while column::<i64>(db, "SELECT count(*) FROM notifications WHERE status = 'pending'").await
        != [0]
    {
        assert!(Instant::now() < deadline, "an email stayed unsent");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_alerts_survives_one_instance_killed_again_and_again() {
    let url = database().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("{}{}", crate::safety::REMEDIES, crate::safety::relaxed_throttles());
    let b = ServiceProcess::start(&instance_config(dir.path(), "b", &url, &extra), None);
    let a_config = instance_config(dir.path(), "a", &url, &extra);
    let db = connect(&url).await;
    let http = reqwest::Client::new();
    let alerts = crate::safety::remedy_alerts();
    let mut acknowledged = Vec::new();
    // a dies early in a round, in the middle of remedies, in a settle, and last as soon as it drives an incident.
    let rounds = [150_u64, 450, 800, 0];
    for (round, delay) in rounds.into_iter().enumerate() {
        let last = round + 1 == rounds.len();
        if last {
            // b first ends what the earlier rounds left, so that the last round's alerts open incidents of their
            // own, which a claims.
            crate::safety::all_incidents(&TestApp::attached(&b.url)).await;
        }
        let mut a = ServiceProcess::start(&a_config, None);
        for (n, body) in alerts.iter().enumerate() {
            // Alternately through each instance, as a load balancer spreads them; the last round all through a.
            let instance = if n % 2 == 0 || last { &a.url } else { &b.url };
            let answer = post(&http, instance, body, &format!("stream_{round}_{n}")).await;
            acknowledged.push(answer["alerts"][0]["alert_id"].as_str().unwrap().to_owned());
        }
        tokio::time::sleep(Duration::from_millis(delay)).await;
        outbox_settled(&db).await;
        if last {
            // The last kill comes while a drives an open incident (whose remedies take seconds), which b must then
            // take over.
            let mine = format!(
                "SELECT count(*) FROM incidents WHERE lease_owner LIKE '%:{}:%' AND state IN ('queued', 'running', 'waiting')",
                a.child.id()
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            while column::<i64>(&db, &mine).await[0] == 0 {
                assert!(Instant::now() < deadline, "a never drove an incident of the last round");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        a.child.kill().unwrap();
        a.child.wait().unwrap();
    }

    // b finishes what a left, once a's leases lapse.
    let app = TestApp::attached(&b.url);
    for id in &acknowledged {
        assert_eq!(
            app.admin_get(&format!("/v1/alerts/{id}")).await.0,
            200,
            "acknowledged alert {id} was kept"
        );
    }
    let incidents = crate::safety::all_incidents(&app).await;
    assert!(incidents.len() >= alerts.len(), "{} incidents", incidents.len());
    let handed_over: Vec<i64> =
        column(&db, "SELECT count(*) FROM incidents WHERE lease_epoch > 1").await;
    assert!(handed_over[0] > 0, "some incident was taken over from a killed instance");
    let mut changes: BTreeMap<String, Vec<(String, String, String)>> = BTreeMap::new();
    for incident in &incidents {
        assert_no_change_repeated_blind(incident);
        for step in incident["steps"].as_array().unwrap() {
            if crate::safety::MUTATING.contains(&step["action"].as_str().unwrap()) {
                changes.entry(step["server"].as_str().unwrap().to_owned()).or_default().push((
                    step["started_at"].as_str().unwrap().to_owned(),
                    step["finished_at"].as_str().unwrap().to_owned(),
                    incident["id"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    // No two incidents (whichever instance drove them) ever changed one server at once.
    for (server, mut spans) in changes {
        spans.sort();
        for pair in spans.windows(2) {
            assert!(
                pair[0].2 == pair[1].2 || pair[0].1 <= pair[1].0,
                "{server} was changed by two incidents at once: {pair:?}"
            );
        }
    }
    // Every email the incidents record as sent left exactly once, from one instance or the other.
    outbox_settled(&db).await;
    let sent: Vec<i64> =
        column(&db, "SELECT count(*) FROM notifications WHERE status = 'sent'").await;
    let files = emails(dir.path(), &["a", "b"]);
    assert_eq!(files.len() as i64, sent[0], "one email per sent notification: {files:?}");
    let ids: BTreeSet<String> = files
        .iter()
        .map(|file| {
            let message = std::fs::read(file).unwrap();
            let parsed = mail_parser::MessageParser::default().parse(&message).unwrap();
            parsed.message_id().unwrap_or_default().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), files.len(), "no email was sent twice");
    drop(b);
}

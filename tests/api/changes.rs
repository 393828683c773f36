//! What must hold before the responder changes a server (SPEC section 5): no silence and no maintenance on any
//! server it would change, a failover only when its restart is allowed, copy states read strictly, locks that
//! outlive a pause and a restart, activation left as an administrator had it, and no remedy run twice.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::*;

const CTP: &str =
    "Diagnostics header:_Cas:CAS01.contoso.com_Mbx:MBX01.contoso.com_Dc:DC01.contoso.com_";

const MUTATING: [&str; 5] =
    ["recycle_app_pool", "iis_reset", "disable_activation", "restart_server", "enable_activation"];

/// Remedies may run once per server an hour (the defaults); these tests run several on one group.
fn relaxed(kinds: &[&str]) -> String {
    kinds
        .iter()
        .map(|kind| format!("[safety.{kind}]\nserver_min_interval = \"0s\"\nserver_max_per_day = 100\ngroup_min_interval = \"0s\"\ngroup_max_per_day = 100\n"))
        .collect()
}

/// Polls an incident until `done` holds for it (bounded: 20 s), and returns it.
async fn wait_until(app: &TestApp, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, incident) = app.admin_get(&format!("/v1/incidents/{id}")).await;
        if done(&incident) {
            return incident;
        }
        assert!(Instant::now() < deadline, "incident {id} never reached {what}: {incident:#}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The mutating steps an incident ran (or tried) on a server.
fn changes_on(incident: &Value, server: &str) -> Vec<String> {
    steps(incident)
        .into_iter()
        .filter(|s| MUTATING.iter().any(|m| s.starts_with(&format!("{m} {server}"))))
        .collect()
}

/// The text of the only email in the outbox, waiting (bounded) for it.
async fn only_email(app: &TestApp) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    while outbox(app).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let emails = outbox(app);
    assert_eq!(emails.len(), 1, "one email");
    let message = std::fs::read(&emails[0]).unwrap();
    mail_parser::MessageParser::default()
        .parse(&message)
        .unwrap()
        .body_text(0)
        .unwrap()
        .into_owned()
}

#[tokio::test]
async fn a_silence_on_the_mailbox_server_stops_a_cas_incident_before_it_changes_that_server() {
    let app = spawn_app_with(&format!(
        "{INVENTORY}\n[simulator.servers.\"cas01.contoso.com\"]\nfault = \"mailbox\"\n\
         [simulator.servers.\"mbx01.contoso.com\"]\nfault = \"restart\"\nunhealthy_monitors = [\"ActiveSyncDeepTestMonitor\"]\n"
    ))
    .await;
    let until = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let (status, _) = app
        .admin_post(
            "/v1/silences",
            json!({"server": "mbx01.contoso.com", "until": until, "reason": "patching"}),
        )
        .await;
    assert_eq!(status, 201);
    let incident = app
        .wait_final(&app.open(&native("cas01.contoso.com", "ActiveSyncCTPMonitor", CTP)).await)
        .await;
    assert_eq!(incident["state"], "suppressed", "{incident:#}");
    let reason = incident["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("a silence covers mbx01.contoso.com until")
            && reason.ends_with(": patching"),
        "{reason}"
    );
    assert_eq!(
        changes_on(&incident, "mbx01.contoso.com"),
        Vec::<String>::new(),
        "the silenced Mailbox server was never changed"
    );
    assert!(
        steps(&incident).contains(&"server_health mbx01.contoso.com unhealthy".to_owned()),
        "reading its health is no change"
    );
    assert_eq!(incident["notifications"], json!([]), "a suppressed incident sends no escalation");
}

#[tokio::test]
async fn a_silence_created_while_an_incident_runs_stops_its_next_change() {
    let app =
        spawn_app_with(&format!("{INVENTORY}\n[simulator]\naction_latency = \"600ms\"\n[simulator.servers.\"cas01.contoso.com\"]\nfault = \"never\"\n")).await;
    let id = app.open(&native("cas01.contoso.com", "ActiveSyncCTPMonitor", CTP)).await;
    wait_until(&app, &id, "its first step", |i| !i["steps"].as_array().unwrap().is_empty()).await;
    let until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    app.admin_post("/v1/silences", json!({"server": "cas01.contoso.com", "until": until, "reason": "CHG-2231 emergency patch"})).await;
    let incident = app.wait_final(&id).await;
    assert_eq!(incident["state"], "suppressed", "{incident:#}");
    assert_eq!(
        steps(&incident),
        [
            "probe cas01.contoso.com failed",
            "ma_history cas01.contoso.com none",
            "component_state cas01.contoso.com active"
        ]
    );
    assert!(
        incident["reason"].as_str().unwrap().ends_with("CHG-2231 emergency patch"),
        "{}",
        incident["reason"]
    );
}

#[tokio::test]
async fn a_server_in_maintenance_is_never_changed() {
    let app = spawn_app_with(&format!(
        "{INVENTORY}\n[simulator.servers.\"cas01.contoso.com\"]\nfault = \"mailbox\"\n\
         [simulator.servers.\"mbx01.contoso.com\"]\nfault = \"restart\"\nmaintenance = true\nunhealthy_monitors = [\"ActiveSyncDeepTestMonitor\"]\n{}",
        relaxed(&["recycle_app_pool", "iis_reset"])
    ))
    .await;
    let own = app
        .wait_final(
            &app.open(&native(
                "mbx01.contoso.com",
                "ActiveSyncDeepTestMonitor",
                "DeepTest failing",
            ))
            .await,
        )
        .await;
    assert_eq!(
        steps(&own),
        [
            "probe mbx01.contoso.com failed",
            "ma_history mbx01.contoso.com none",
            "component_state mbx01.contoso.com inactive"
        ]
    );
    assert_eq!(own["state"], "suppressed");
    assert!(
        own["reason"]
            .as_str()
            .unwrap()
            .starts_with("mbx01.contoso.com is in maintenance (ServerWideOffline is Inactive"),
        "{}",
        own["reason"]
    );

    // A CAS alert caused by that maintenance: the CAS's own remedies run, the Mailbox server is left alone.
    let cas = app
        .wait_final(&app.open(&native("cas01.contoso.com", "ActiveSyncCTPMonitor", CTP)).await)
        .await;
    assert_eq!(cas["state"], "suppressed", "{cas:#}");
    assert_eq!(
        &steps(&cas)[steps(&cas).len() - 3..],
        [
            "server_health mbx01.contoso.com unhealthy",
            "ma_history mbx01.contoso.com none",
            "component_state mbx01.contoso.com inactive"
        ]
    );
    assert_eq!(changes_on(&cas, "mbx01.contoso.com"), Vec::<String>::new());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(outbox(&app).is_empty(), "maintenance is no escalation");
}

#[tokio::test]
async fn a_failover_starts_only_when_its_restart_would_be_allowed() {
    let app = spawn_app_with(&format!(
        "{INVENTORY}\n[simulator.servers.\"mbx01.contoso.com\"]\nfault = \"restart\"\nunhealthy_monitors = [\"ActiveSyncDeepTestMonitor\"]\n\
         [simulator.servers.\"mbx02.contoso.com\"]\nfault = \"restart\"\nunhealthy_monitors = [\"ActiveSyncDeepTestMonitor\"]\n{}",
        relaxed(&["recycle_app_pool", "iis_reset", "disable_activation"])
    ))
    .await;
    let first = app
        .wait_final(
            &app.open(&native(
                "mbx02.contoso.com",
                "ActiveSyncDeepTestMonitor",
                "DeepTest failing",
            ))
            .await,
        )
        .await;
    assert_eq!(first["reason"], "restarting mbx02.contoso.com fixed it");

    // The DAG restarted a server minutes ago: safety.restart_server.group_min_interval (10 h) refuses the next one,
    // so the next failover is not even started.
    let second = app
        .wait_final(
            &app.open(&native(
                "mbx01.contoso.com",
                "ActiveSyncDeepTestMonitor",
                "DeepTest failing",
            ))
            .await,
        )
        .await;
    assert_eq!(second["state"], "blocked", "{second:#}");
    let last = second["steps"].as_array().unwrap().last().unwrap();
    assert_eq!(
        (last["action"].as_str(), last["outcome"].as_str()),
        (Some("disable_activation"), Some("throttled"))
    );
    let detail = last["detail"].as_str().unwrap();
    assert!(
        detail.starts_with(
            "safety.restart_server.group_min_interval: restart_server ran in group dag1"
        ),
        "{detail}"
    );
    assert!(detail.ends_with("disable_activation was not started, since the restart_server it leads to would be refused"), "{detail}");
    assert!(
        second["reason"]
            .as_str()
            .unwrap()
            .starts_with("throttled: safety.restart_server.group_min_interval"),
        "{}",
        second["reason"]
    );
    let email = only_email(&app).await;
    assert!(
        !email.contains("still disabled"),
        "nothing was failed over, so nothing is left disabled: {email}"
    );
}

#[tokio::test]
async fn copies_in_states_that_are_not_passive_keep_a_server_from_restarting() {
    let app = spawn_app_with(&format!(
        "{INVENTORY}\n[simulator.servers.\"mbx01.contoso.com\"]\nfault = \"restart\"\nactive_copies = 0\ncopy_states = {{ ServiceDown = 2 }}\n\
         unhealthy_monitors = [\"ActiveSyncDeepTestMonitor\"]\n{}",
        relaxed(&["disable_activation"])
    ))
    .await;
    let incident = app
        .wait_final(
            &app.open(&native(
                "mbx01.contoso.com",
                "ActiveSyncDeepTestMonitor",
                "DeepTest failing",
            ))
            .await,
        )
        .await;
    assert_eq!(incident["state"], "escalated", "{incident:#}");
    assert!(
        !steps(&incident).iter().any(|s| s.starts_with("restart_server")),
        "never restarted with copy states unknown"
    );
    let reason = incident["reason"].as_str().unwrap();
    assert!(
        reason.contains(
            "active database copies remain on mbx01.contoso.com after 200ms of copy-status checks"
        ),
        "{reason}"
    );
    assert!(reason.contains("not passive: ServiceDown"), "the statuses seen are named: {reason}");
    let email = only_email(&app).await;
    assert!(
        email.contains("Database activation is still disabled on mbx01.contoso.com"),
        "{email}"
    );
    assert!(
        email.contains(
            "Set-MailboxServer mbx01.contoso.com -DatabaseCopyActivationDisabledAndMoveNow $false"
        ),
        "{email}"
    );
}

#[tokio::test]
async fn activation_an_administrator_disabled_is_left_as_found() {
    let app = spawn_app_with(&format!(
        "{INVENTORY}\n[email]\nnotify_on = [\"escalated\", \"blocked\", \"recovered\"]\n\
         [simulator.servers.\"mbx01.contoso.com\"]\nfault = \"restart\"\nactivation_disabled = true\nunhealthy_monitors = [\"ActiveSyncDeepTestMonitor\"]\n"
    ))
    .await;
    let incident = app
        .wait_final(
            &app.open(&native(
                "mbx01.contoso.com",
                "ActiveSyncDeepTestMonitor",
                "DeepTest failing",
            ))
            .await,
        )
        .await;
    assert_eq!(incident["state"], "recovered", "{incident:#}");
    assert!(steps(&incident).contains(&"restart_server mbx01.contoso.com done".to_owned()));
    assert!(
        !steps(&incident).iter().any(|s| s.starts_with("enable_activation")),
        "never re-enables what it did not disable: {:?}",
        steps(&incident)
    );
    let disable = incident["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["action"] == "disable_activation")
        .unwrap();
    assert_eq!(
        disable["detail"],
        "activation was already disabled on mbx01.contoso.com before this failover"
    );
    let email = only_email(&app).await;
    assert!(email.contains("Database activation was already disabled on mbx01.contoso.com before automation failed it over"), "{email}");
    assert!(!email.contains("is still disabled"), "{email}");
}

#[tokio::test]
async fn a_multi_role_server_naming_itself_as_its_mailbox_server_goes_on_to_the_restart() {
    let app = spawn_app_with(
        "[[servers]]\nname = \"ex01.contoso.com\"\nrole = \"multi\"\ngroup = \"dag2\"\n\
         [simulator.servers.\"ex01.contoso.com\"]\nfault = \"restart\"\nunhealthy_monitors = [\"ActiveSyncDeepTestMonitor\"]\n",
    )
    .await;
    let message =
        "Diagnostics header:_Cas:EX01.contoso.com_Mbx:EX01.contoso.com_Dc:DC01.contoso.com_";
    let incident = app
        .wait_final(&app.open(&native("ex01.contoso.com", "ActiveSyncCTPMonitor", message)).await)
        .await;
    assert_eq!(incident["state"], "recovered", "{incident:#}");
    assert_eq!(incident["reason"], "ActiveSyncDeepTestMonitor on the Mailbox server ex01.contoso.com: restarting ex01.contoso.com fixed it");
    let changes = changes_on(&incident, "ex01.contoso.com");
    assert_eq!(
        changes,
        [
            "recycle_app_pool ex01.contoso.com done",
            "iis_reset ex01.contoso.com done",
            "disable_activation ex01.contoso.com done",
            "restart_server ex01.contoso.com done",
            "enable_activation ex01.contoso.com done",
        ],
        "each remedy once, though both runbooks list it"
    );
}

#[tokio::test]
async fn a_lock_on_the_mailbox_server_outlives_a_pause_and_a_restart() {
    let mut app = spawn_app_with(&format!(
        "{INVENTORY}\n[simulator]\naction_latency = \"100ms\"\n[simulator.servers.\"cas01.contoso.com\"]\nfault = \"mailbox\"\n\
         [simulator.servers.\"mbx01.contoso.com\"]\nfault = \"restart\"\nactive_copies = 4\ncopies_moved_per_failover = 2\n\
         unhealthy_monitors = [\"ActiveSyncDeepTestMonitor\"]\n{}",
        relaxed(&["recycle_app_pool", "iis_reset", "disable_activation", "restart_server"])
    ))
    .await;
    let cas = app.open(&native("cas01.contoso.com", "ActiveSyncCTPMonitor", CTP)).await;
    // Pause once mbx01's databases are off it: activation is disabled and the restart has not run yet.
    wait_until(&app, &cas, "the failover on mbx01", |i| {
        steps(i).contains(&"copy_status mbx01.contoso.com no_active_copies".to_owned())
    })
    .await;
    app.admin_post("/v1/automation/pause", json!({"reason": "on-call looking"})).await;
    wait_until(&app, &cas, "queued", |i| i["state"] == "queued").await;
    // Mailbox monitoring sees the trouble too, while the restart procedure is half done.
    let mailbox = app
        .open(&native("mbx01.contoso.com", "ActiveSyncDeepTestMonitor", "DeepTest failing"))
        .await;
    app.restart().await;
    app.admin_post("/v1/automation/resume", json!({})).await;

    let cas = app.wait_final(&cas).await;
    let mailbox = app.wait_final(&mailbox).await;
    assert_eq!(cas["state"], "recovered", "{cas:#}");
    assert!(
        steps(&cas).contains(&"enable_activation mbx01.contoso.com done".to_owned()),
        "the failover was finished and undone by its incident"
    );
    let ms = |t: &Value| {
        chrono::DateTime::parse_from_rfc3339(t.as_str().unwrap()).unwrap().timestamp_millis()
    };
    let cas_end =
        cas["steps"].as_array().unwrap().iter().map(|s| ms(&s["finished_at"])).max().unwrap();
    let mailbox_start =
        mailbox["steps"].as_array().unwrap().iter().map(|s| ms(&s["started_at"])).min().unwrap();
    assert!(
        mailbox_start >= cas_end,
        "the Mailbox server's own incident waited for the failover's incident to end"
    );
    assert_eq!(mailbox["state"], "transient", "by then the restart had fixed it: {mailbox:#}");
    assert_eq!(changes_on(&mailbox, "mbx01.contoso.com"), Vec::<String>::new());
}

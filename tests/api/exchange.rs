//! Exchange as it behaves, on the simulator: database copies that take their time to move, application pools that
//! warm up, WinRM hiccups, an Exchange endpoint that is down while IIS resets, and resolved notices that arrive in
//! the middle of things. The waits are milliseconds here; the rules are those of production.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::*;

/// The detail of the first step of `action` on `server`.
fn detail<'a>(incident: &'a Value, action: &str, server: &str) -> &'a str {
    let step = incident["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["action"] == action && s["server"] == server);
    step.unwrap_or_else(|| panic!("no {action} on {server}: {incident:#}"))["detail"]
        .as_str()
        .unwrap()
}

#[tokio::test]
async fn a_failover_waits_for_copies_that_take_their_time_and_fails_back() {
    let app = spawn_app_with(&format!(
        "{INVENTORY}\n[timing]\npoll_interval = \"100ms\"\nfailover_timeout = \"5s\"\n\
         [simulator.servers.\"mbx01.contoso.com\"]\nfault = \"restart\"\nactive_copies = 3\ncopies_moved_per_failover = 3\nmove_time = \"1s\"\n\
         unhealthy_monitors = [\"ActiveSyncDeepTestMonitor\"]\n"
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
    assert_eq!(incident["reason"], "restarting mbx01.contoso.com fixed it");
    let steps = steps(&incident);
    // Still mounted when first checked, gone at a later check: the failover waited instead of giving up.
    let checks: Vec<&String> = steps.iter().filter(|s| s.starts_with("copy_status")).collect();
    assert!(
        checks.len() >= 2 && checks[0].ends_with(" active_copies"),
        "the copies took several checks to move: {steps:?}"
    );
    assert!(checks.last().unwrap().ends_with(" no_active_copies"), "{steps:?}");
    assert_eq!(
        steps.iter().filter(|s| s.starts_with("disable_activation")).count(),
        1,
        "they moved without being asked again"
    );
    let failover: Vec<&String> = steps
        .iter()
        .skip_while(|s| !s.starts_with("disable_activation"))
        .take_while(|s| !s.starts_with("component_state"))
        .collect();
    for pair in failover.windows(2).filter(|pair| pair[1].starts_with("copy_status")) {
        assert!(
            pair[0].starts_with("wait") || pair[0].starts_with("disable"),
            "a wait before each check: {steps:?}"
        );
    }
    assert!(
        steps.last().unwrap().starts_with("enable_activation mbx01.contoso.com done"),
        "activation re-enabled: {steps:?}"
    );
    assert!(incident["notifications"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_recycle_whose_pool_needs_to_warm_up_is_recognised_as_the_fix() {
    let simulator = "[simulator.servers.\"mbx02.contoso.com\"]\nfault = \"app_pool\"\nwarm_up = \"1s\"\nunhealthy_monitors = [\"ActiveSyncSelfTestMonitor\"]\n";
    let alert = json!({"health_set": "ActiveSync.Protocol", "server": "mbx02.contoso.com", "monitor": "ActiveSyncSelfTestMonitor"}).to_string();

    let app =
        spawn_app_with(&format!("{INVENTORY}\n[timing]\nwarm_up = \"1200ms\"\n{simulator}")).await;
    let incident = app.wait_final(&app.open(&alert).await).await;
    assert_eq!(
        steps(&incident),
        [
            "probe mbx02.contoso.com failed",
            "ma_history mbx02.contoso.com none",
            "component_state mbx02.contoso.com active",
            "recycle_app_pool mbx02.contoso.com done",
            "wait mbx02.contoso.com done",
            "probe mbx02.contoso.com succeeded",
        ]
    );
    assert_eq!(incident["reason"], "recycling MSExchangeSyncAppPool on mbx02.contoso.com fixed it");
    assert_eq!(incident["steps"][4]["detail"], "waited 1s 200ms");

    // Without the warm-up, the cold pool's first probe fails and the ladder climbs to IISReset for nothing.
    let hasty =
        spawn_app_with(&format!("{INVENTORY}\n[timing]\nwarm_up = \"0s\"\n{simulator}")).await;
    let incident = hasty.wait_final(&hasty.open(&alert).await).await;
    assert!(
        steps(&incident).contains(&"iis_reset mbx02.contoso.com done".to_owned()),
        "{incident:#}"
    );
}

#[tokio::test]
async fn read_only_steps_are_retried_on_executor_errors_and_each_attempt_is_told() {
    let config = |attempts: u32| {
        format!(
            "{INVENTORY}\n[executor]\nread_attempts = {attempts}\nread_backoff = \"20ms\"\n\
             [simulator.servers.\"cas01.contoso.com\"]\nfault = \"none\"\nflaky_reads = 2\n"
        )
    };
    let ctp = native("cas01.contoso.com", "ActiveSyncCTPMonitor", "_Mbx:mbx01.contoso.com");
    let app = spawn_app_with(&config(3)).await;
    let incident = app.wait_final(&app.open(&ctp).await).await;
    assert_eq!(
        incident["state"], "transient",
        "two WinRM hiccups are no reason to give up: {incident:#}"
    );
    let probe = detail(&incident, "probe", "cas01.contoso.com");
    assert!(
        probe.starts_with(
            "attempt 1 of 3 failed: Connecting to remote server cas01.contoso.com failed"
        ),
        "{probe}"
    );
    assert!(
        probe.contains("; attempt 2 of 3 failed: ")
            && probe
                .contains("; attempt 3 of 3: ActiveSync\\ActiveSyncCTPProbe: ResultType Succeeded"),
        "{probe}"
    );

    let app = spawn_app_with(&config(2)).await;
    let incident = app.wait_final(&app.open(&ctp).await).await;
    assert_eq!(incident["state"], "blocked");
    assert!(
        incident["reason"].as_str().unwrap().starts_with(
            "executor failure: probe on cas01.contoso.com failed: attempt 1 of 2 failed"
        ),
        "{}",
        incident["reason"]
    );
}

#[tokio::test]
async fn the_probe_after_an_iisreset_outlasts_the_endpoint_being_down() {
    let app = spawn_app_with(&format!(
        "{INVENTORY}\n[executor]\nread_backoff = \"400ms\"\n\
         [simulator.servers.\"cas01.contoso.com\"]\nfault = \"iis_reset\"\niis_reset_downtime = \"1s\"\n"
    ))
    .await;
    let incident = app
        .wait_final(
            &app.open(&native(
                "cas01.contoso.com",
                "ActiveSyncCTPMonitor",
                "_Mbx:mbx01.contoso.com",
            ))
            .await,
        )
        .await;
    assert_eq!(incident["state"], "recovered", "{incident:#}");
    assert_eq!(incident["reason"], "IISReset on cas01.contoso.com fixed it");
    let last = incident["steps"].as_array().unwrap().last().unwrap();
    let probe = last["detail"].as_str().unwrap();
    assert!(
        probe.starts_with("attempt 1 of 3 failed: ")
            && probe.contains("503 Service Unavailable (IIS is restarting)"),
        "{probe}"
    );
}

#[tokio::test]
async fn a_resolved_notice_ends_only_a_wait_that_began_before_it() {
    let app = spawn_app_with(&format!(
        "{INVENTORY}\n[simulator]\naction_latency = \"1s\"\n[timing]\nsettle_wait = \"1s\"\n\
         [simulator.servers.\"cas01.contoso.com\"]\nfault = \"app_pool\"\nunhealthy_monitors = [\"RequestsQueuedGt500Monitor\"]\n"
    ))
    .await;
    let id = app
        .open(&native("cas01.contoso.com", "RequestsQueuedGt500Monitor", "queue above 500"))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, incident) = app.admin_get(&format!("/v1/incidents/{id}")).await;
        if steps(&incident).last().is_some_and(|s| s.starts_with("recycle_app_pool")) {
            break;
        }
        assert!(Instant::now() < deadline, "{incident:#}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Arrives while the recycle runs: the settle wait after it has not begun, so it runs in full.
    let resolved = json!({"health_set": "ActiveSync", "server": "cas01.contoso.com", "monitor": "RequestsQueuedGt500Monitor", "status": "resolved"});
    assert_eq!(app.post_signed("/v1/alerts", &resolved.to_string()).await.status(), 202);
    let incident = app.wait_final(&id).await;
    assert_eq!(detail(&incident, "wait", "cas01.contoso.com"), "waited 1s", "{incident:#}");
    assert_eq!(incident["state"], "recovered");
}

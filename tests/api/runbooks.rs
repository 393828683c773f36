//! Every runbook against every simulator fault, end to end over HTTP: the exact steps, the final state and reason.

use serde_json::json;

use crate::helpers::*;

const CTP_MESSAGE: &str = "Error occurred:\n\nUser: eas-probe@contoso.com\nPassword: ******\nTarget: https://cas01.contoso.com/Microsoft-Server-ActiveSync\nResponse: 503 Service Unavailable\nDiagnostics header:_Cas:CAS01.contoso.com_Mbx:MBX01.contoso.com_Dc:DC01.contoso.com_";

/// One scenario: simulator TOML, the alert, the steps expected and how the incident ends.
struct Case {
    name: &'static str,
    simulator: &'static str,
    alert: serde_json::Value,
    steps: &'static [&'static str],
    state: &'static str,
    reason: &'static str,
}

fn alert(server: &str, monitor: &str, message: &str) -> serde_json::Value {
    let health_set = match monitor {
        "ActiveSyncSelfTestMonitor" => "ActiveSync.Protocol",
        "ActiveSyncProxyTestMonitor" => "ActiveSync.Proxy",
        _ => "ActiveSync",
    };
    json!({"health_set": health_set, "server": server, "monitor": monitor, "message": message})
}

async fn check(case: &Case) {
    let app = spawn_app_with(&format!(
        "{INVENTORY}\n[timing]\nsettle_wait = \"50ms\"\n\n{}",
        case.simulator
    ))
    .await;
    let incident_id = app.open(&case.alert.to_string()).await;
    let incident = app.wait_final(&incident_id).await;
    assert_eq!(steps(&incident), case.steps, "{}: steps", case.name);
    assert_eq!(incident["state"], case.state, "{}: state ({})", case.name, incident["reason"]);
    let reason = incident["reason"].as_str().unwrap();
    assert!(
        reason.contains(case.reason),
        "{}: reason {reason:?} lacks {:?}",
        case.name,
        case.reason
    );
    let emails = outbox(&app).len();
    let escalates = ["escalated", "blocked"].contains(&case.state);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while escalates && outbox(&app).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        outbox(&app).len(),
        usize::from(escalates).max(emails),
        "{}: escalation emails",
        case.name
    );
    let (_, incident) = app.admin_get(&format!("/v1/incidents/{incident_id}")).await;
    assert_eq!(
        incident["notifications"].as_array().unwrap().len(),
        usize::from(escalates),
        "{}: notifications",
        case.name
    );
}

#[tokio::test]
async fn ctp_runbook() {
    let cases = [
        Case {
            name: "transient",
            simulator: "",
            alert: alert("cas01.contoso.com", "ActiveSyncCTPMonitor", CTP_MESSAGE),
            steps: &["probe cas01.contoso.com succeeded"],
            state: "transient",
            reason: "nothing was done",
        },
        Case {
            name: "app pool recycle",
            simulator: "[simulator.servers.\"cas01.contoso.com\"]\nfault = \"app_pool\"",
            alert: alert("cas01.contoso.com", "ActiveSyncCTPMonitor", CTP_MESSAGE),
            steps: &["probe cas01.contoso.com failed", "ma_history cas01.contoso.com none", "component_state cas01.contoso.com active", "recycle_app_pool cas01.contoso.com done", "probe cas01.contoso.com succeeded"],
            state: "recovered",
            reason: "recycling MSExchangeSyncAppPool on cas01.contoso.com fixed it",
        },
        Case {
            name: "iisreset",
            simulator: "[simulator.servers.\"cas01.contoso.com\"]\nfault = \"iis_reset\"",
            alert: alert("cas01.contoso.com", "ActiveSyncCTPMonitor", CTP_MESSAGE),
            steps: &[
                "probe cas01.contoso.com failed",
                "ma_history cas01.contoso.com none",
                "component_state cas01.contoso.com active",
                "recycle_app_pool cas01.contoso.com done",
                "probe cas01.contoso.com failed",
                "iis_reset cas01.contoso.com done",
                "probe cas01.contoso.com succeeded",
            ],
            state: "recovered",
            reason: "IISReset on cas01.contoso.com fixed it",
        },
        Case {
            name: "unhealthy mailbox server fixed first",
            simulator: "[simulator.servers.\"cas01.contoso.com\"]\nfault = \"mailbox\"\n[simulator.servers.\"mbx01.contoso.com\"]\nfault = \"restart\"\nunhealthy_monitors = [\"ActiveSyncDeepTestMonitor\"]",
            alert: alert("cas01.contoso.com", "ActiveSyncCTPMonitor", CTP_MESSAGE),
            steps: &[
                "probe cas01.contoso.com failed",
                "ma_history cas01.contoso.com none",
                "component_state cas01.contoso.com active",
                "recycle_app_pool cas01.contoso.com done",
                "probe cas01.contoso.com failed",
                "iis_reset cas01.contoso.com done",
                "probe cas01.contoso.com failed",
                "server_health mbx01.contoso.com unhealthy",
                "ma_history mbx01.contoso.com none",
                "component_state mbx01.contoso.com active",
                "recycle_app_pool mbx01.contoso.com done",
                "probe mbx01.contoso.com failed",
                "iis_reset mbx01.contoso.com done",
                "probe mbx01.contoso.com failed",
                "component_state mbx01.contoso.com active",
                "disable_activation mbx01.contoso.com done",
                "copy_status mbx01.contoso.com no_active_copies",
                "component_state mbx01.contoso.com active",
                "restart_server mbx01.contoso.com done",
                "wait mbx01.contoso.com done",
                "probe mbx01.contoso.com succeeded",
                "enable_activation mbx01.contoso.com done",
                "probe cas01.contoso.com succeeded",
            ],
            state: "recovered",
            reason: "ActiveSyncDeepTestMonitor on the Mailbox server mbx01.contoso.com: restarting mbx01.contoso.com fixed it",
        },
        Case {
            name: "healthy mailbox server, CAS restarted",
            simulator: "[simulator.servers.\"cas01.contoso.com\"]\nfault = \"restart\"",
            alert: alert("cas01.contoso.com", "ActiveSyncCTPMonitor", CTP_MESSAGE),
            steps: &[
                "probe cas01.contoso.com failed",
                "ma_history cas01.contoso.com none",
                "component_state cas01.contoso.com active",
                "recycle_app_pool cas01.contoso.com done",
                "probe cas01.contoso.com failed",
                "iis_reset cas01.contoso.com done",
                "probe cas01.contoso.com failed",
                "server_health mbx01.contoso.com healthy",
                "component_state cas01.contoso.com active",
                "restart_server cas01.contoso.com done",
                "wait cas01.contoso.com done",
                "probe cas01.contoso.com succeeded",
            ],
            state: "recovered",
            reason: "restarting cas01.contoso.com fixed it",
        },
        Case {
            name: "no _Mbx: hint",
            simulator: "[simulator.servers.\"cas01.contoso.com\"]\nfault = \"restart\"",
            alert: alert("cas01.contoso.com", "ActiveSyncCTPMonitor", "probe failed: NoDiagnosticsHeaderReturned"),
            steps: &[
                "probe cas01.contoso.com failed",
                "ma_history cas01.contoso.com none",
                "component_state cas01.contoso.com active",
                "recycle_app_pool cas01.contoso.com done",
                "probe cas01.contoso.com failed",
                "iis_reset cas01.contoso.com done",
                "probe cas01.contoso.com failed",
            ],
            state: "blocked",
            reason: "no _Mbx: hint",
        },
        Case {
            name: "never fixed",
            simulator: "[simulator.servers.\"cas01.contoso.com\"]\nfault = \"never\"",
            alert: alert("cas01.contoso.com", "ActiveSyncCTPMonitor", CTP_MESSAGE),
            steps: &[
                "probe cas01.contoso.com failed",
                "ma_history cas01.contoso.com none",
                "component_state cas01.contoso.com active",
                "recycle_app_pool cas01.contoso.com done",
                "probe cas01.contoso.com failed",
                "iis_reset cas01.contoso.com done",
                "probe cas01.contoso.com failed",
                "server_health mbx01.contoso.com healthy",
                "component_state cas01.contoso.com active",
                "restart_server cas01.contoso.com done",
                "wait cas01.contoso.com done",
                "probe cas01.contoso.com failed",
            ],
            state: "escalated",
            reason: "probe still failing after all remedies",
        },
    ];
    for case in &cases {
        check(case).await;
    }
}

#[tokio::test]
async fn mailbox_runbooks() {
    let cases = [
        Case {
            name: "deep test, copies need two rounds",
            simulator: "[simulator.servers.\"mbx01.contoso.com\"]\nfault = \"restart\"\nactive_copies = 4\ncopies_moved_per_failover = 2",
            alert: alert("mbx01.contoso.com", "ActiveSyncDeepTestMonitor", "DeepTest probe failed"),
            steps: &[
                "probe mbx01.contoso.com failed",
                "ma_history mbx01.contoso.com none",
                "component_state mbx01.contoso.com active",
                "recycle_app_pool mbx01.contoso.com done",
                "probe mbx01.contoso.com failed",
                "iis_reset mbx01.contoso.com done",
                "probe mbx01.contoso.com failed",
                "component_state mbx01.contoso.com active",
                "disable_activation mbx01.contoso.com done",
                "copy_status mbx01.contoso.com active_copies",
                "wait mbx01.contoso.com done",
                "copy_status mbx01.contoso.com active_copies",
                "wait mbx01.contoso.com done",
                "copy_status mbx01.contoso.com active_copies",
                "disable_activation mbx01.contoso.com done",
                "wait mbx01.contoso.com done",
                "copy_status mbx01.contoso.com no_active_copies",
                "component_state mbx01.contoso.com active",
                "restart_server mbx01.contoso.com done",
                "wait mbx01.contoso.com done",
                "probe mbx01.contoso.com succeeded",
                "enable_activation mbx01.contoso.com done",
            ],
            state: "recovered",
            reason: "restarting mbx01.contoso.com fixed it",
        },
        Case {
            name: "deep test, copies never move",
            simulator: "[simulator.servers.\"mbx01.contoso.com\"]\nfault = \"restart\"\ncopies_moved_per_failover = 0",
            alert: alert("mbx01.contoso.com", "ActiveSyncDeepTestMonitor", "DeepTest probe failed"),
            steps: &[
                "probe mbx01.contoso.com failed",
                "ma_history mbx01.contoso.com none",
                "component_state mbx01.contoso.com active",
                "recycle_app_pool mbx01.contoso.com done",
                "probe mbx01.contoso.com failed",
                "iis_reset mbx01.contoso.com done",
                "probe mbx01.contoso.com failed",
                "component_state mbx01.contoso.com active",
                "disable_activation mbx01.contoso.com done",
                "copy_status mbx01.contoso.com active_copies",
                "wait mbx01.contoso.com done",
                "copy_status mbx01.contoso.com active_copies",
                "wait mbx01.contoso.com done",
                "copy_status mbx01.contoso.com active_copies",
                "disable_activation mbx01.contoso.com done",
                "wait mbx01.contoso.com done",
                "copy_status mbx01.contoso.com active_copies",
                "wait mbx01.contoso.com done",
                "copy_status mbx01.contoso.com active_copies",
            ],
            state: "escalated",
            reason: "active database copies remain on mbx01.contoso.com after 200ms of copy-status checks",
        },
        Case {
            name: "self test fixed by a recycle",
            simulator: "[simulator.servers.\"mbx02.contoso.com\"]\nfault = \"app_pool\"",
            alert: alert("mbx02.contoso.com", "ActiveSyncSelfTestMonitor", "SelfTest probe failed"),
            steps: &[
                "probe mbx02.contoso.com failed",
                "ma_history mbx02.contoso.com none",
                "component_state mbx02.contoso.com active",
                "recycle_app_pool mbx02.contoso.com done",
                "probe mbx02.contoso.com succeeded",
            ],
            state: "recovered",
            reason: "recycling MSExchangeSyncAppPool on mbx02.contoso.com",
        },
        Case {
            name: "self test never fixed leaves activation disabled",
            simulator: "[simulator.servers.\"mbx02.contoso.com\"]\nfault = \"never\"",
            alert: alert("mbx02.contoso.com", "ActiveSyncSelfTestMonitor", "SelfTest probe failed"),
            steps: &[
                "probe mbx02.contoso.com failed",
                "ma_history mbx02.contoso.com none",
                "component_state mbx02.contoso.com active",
                "recycle_app_pool mbx02.contoso.com done",
                "probe mbx02.contoso.com failed",
                "iis_reset mbx02.contoso.com done",
                "probe mbx02.contoso.com failed",
                "component_state mbx02.contoso.com active",
                "disable_activation mbx02.contoso.com done",
                "copy_status mbx02.contoso.com no_active_copies",
                "component_state mbx02.contoso.com active",
                "restart_server mbx02.contoso.com done",
                "wait mbx02.contoso.com done",
                "probe mbx02.contoso.com failed",
            ],
            state: "escalated",
            reason: "probe still failing after all remedies",
        },
    ];
    for case in &cases {
        check(case).await;
    }
}

#[tokio::test]
async fn requests_queued_proxy_unknown_and_unmonitored_alerts() {
    let cases = [
        Case {
            name: "requests queued, settle waits",
            simulator: "[simulator.servers.\"cas02.contoso.com\"]\nfault = \"iis_reset\"\nunhealthy_monitors = [\"RequestsQueuedGt500Monitor\"]",
            alert: alert("cas02.contoso.com", "RequestsQueuedGt500Monitor", "EAS queue above 500"),
            steps: &[
                "server_health cas02.contoso.com unhealthy",
                "ma_history cas02.contoso.com none",
                "component_state cas02.contoso.com active",
                "recycle_app_pool cas02.contoso.com done",
                "wait cas02.contoso.com done",
                "server_health cas02.contoso.com unhealthy",
                "iis_reset cas02.contoso.com done",
                "wait cas02.contoso.com done",
                "server_health cas02.contoso.com healthy",
            ],
            state: "recovered",
            reason: "IISReset on cas02.contoso.com fixed it",
        },
        Case {
            name: "proxy test has no documented recovery",
            simulator: "[simulator.servers.\"cas02.contoso.com\"]\nfault = \"never\"",
            alert: alert("cas02.contoso.com", "ActiveSyncProxyTestMonitor", "proxy probe failed"),
            steps: &["probe cas02.contoso.com failed"],
            state: "escalated",
            reason: "probe still failing; the runbook has no remedy for ActiveSyncProxyTestMonitor on a CAS server",
        },
        Case {
            name: "unknown monitor",
            simulator: "",
            alert: json!({"health_set": "UM.CallRouter", "server": "cas01.contoso.com", "monitor": "UMCallRouterTestMonitor"}),
            steps: &[],
            state: "blocked",
            reason: "unknown monitor UMCallRouterTestMonitor",
        },
        Case {
            name: "no monitor: Get-ServerHealth names it",
            simulator: "[simulator.servers.\"cas01.contoso.com\"]\nfault = \"app_pool\"\nunhealthy_monitors = [\"ActiveSyncCTPMonitor\"]",
            alert: json!({"health_set": "ActiveSync", "server": "cas01.contoso.com", "message": CTP_MESSAGE}),
            steps: &[
                "server_health cas01.contoso.com unhealthy",
                "probe cas01.contoso.com failed",
                "ma_history cas01.contoso.com none",
                "component_state cas01.contoso.com active",
                "recycle_app_pool cas01.contoso.com done",
                "probe cas01.contoso.com succeeded",
            ],
            state: "recovered",
            reason: "recycling MSExchangeSyncAppPool",
        },
        Case {
            name: "server outside the inventory",
            simulator: "[simulator.servers.\"ex2010.contoso.com\"]\nfault = \"never\"",
            alert: alert("ex2010.contoso.com", "ActiveSyncCTPMonitor", CTP_MESSAGE),
            steps: &[],
            state: "blocked",
            reason: "not in the server inventory",
        },
    ];
    for case in &cases {
        check(case).await;
    }
}

#[tokio::test]
async fn an_alert_without_a_monitor_learns_it_and_later_alerts_attach() {
    let app = spawn_app_with(&format!("{INVENTORY}\n[simulator]\naction_latency = \"300ms\"\n[simulator.servers.\"cas01.contoso.com\"]\nfault = \"app_pool\"\nunhealthy_monitors = [\"ActiveSyncCTPMonitor\"]")).await;
    let incident_id = app
        .open(&json!({"health_set": "ActiveSync", "server": "cas01.contoso.com"}).to_string())
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, incident) = app.admin_get(&format!("/v1/incidents/{incident_id}")).await;
        if incident["monitor"] == "ActiveSyncCTPMonitor" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "monitor never learnt: {incident}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let answer: serde_json::Value = app
        .post_signed("/v1/alerts", &native("cas01.contoso.com", "ActiveSyncCTPMonitor", "again"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["alerts"][0]["disposition"], "attached");
    assert_eq!(answer["alerts"][0]["incident_id"], incident_id.as_str());
    assert_eq!(app.wait_final(&incident_id).await["state"], "recovered");
}

#[tokio::test]
async fn a_runbook_file_teaches_the_service_another_health_set() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("um.toml"),
        "monitor = \"UMCallRouterTestMonitor\"\nhealth_set = \"UM.CallRouter\"\nverify = { probe = 'UM.CallRouter\\UMCallRouterTestProbe' }\n[[remedies]]\naction = \"restart_service\"\nservice = \"MSExchangeUMCR\"\n",
    )
    .unwrap();
    let root = format!("runbook_dir = {:?}", dir.path().display().to_string());
    let app =
        spawn_app_with_root(&root, &format!("{INVENTORY}\n[simulator.servers.\"cas01.contoso.com\"]\nfault = \"service\"\nservice = \"MSExchangeUMCR\"")).await;
    let incident = app
        .wait_final(&app.open(&json!({"health_set": "UM.CallRouter", "server": "cas01.contoso.com", "monitor": "UMCallRouterTestMonitor"}).to_string()).await)
        .await;
    assert_eq!(
        steps(&incident),
        [
            "probe cas01.contoso.com failed",
            "ma_history cas01.contoso.com none",
            "component_state cas01.contoso.com active",
            "restart_service cas01.contoso.com done",
            "probe cas01.contoso.com succeeded"
        ]
    );
    assert_eq!(incident["reason"], "restarting MSExchangeUMCR on cas01.contoso.com fixed it");
    assert!(incident["steps"][0]["command"]
        .as_str()
        .unwrap()
        .contains("UM.CallRouter\\UMCallRouterTestProbe"));
}

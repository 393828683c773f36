//! Beyond ActiveSync: every built-in runbook of the other health sets end to end on the simulator (one table),
//! Managed Availability's own recovery record (a remedy it took is skipped, its actions count toward the throttles,
//! a lookback of zero reads nothing), and SCOM and Alertmanager alerts for these health sets.

use serde_json::{json, Value};

use crate::helpers::*;

const MBX_HINT: &str =
    "Diagnostics header:_Cas:CAS01.contoso.com_Mbx:MBX01.contoso.com_Dc:DC01.contoso.com_";

/// One runbook's ladder: health set, monitor and server of the alert, its message, the simulator, what the ladder
/// changed (every step but reads and waits), the final state, text of the reason, and a step's action with text
/// its command must contain (which pools, which service, `/noforce` or not).
type Ladder = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static str,
    &'static str,
    Option<(&'static str, &'static str)>,
);

const READS: [&str; 6] =
    ["probe", "server_health", "copy_status", "component_state", "ma_history", "wait"];

fn changes(incident: &Value) -> Vec<String> {
    steps(incident)
        .into_iter()
        .filter(|line| !READS.iter().any(|read| line.starts_with(&format!("{read} "))))
        .collect()
}

async fn climb(ladder: &Ladder) {
    let &(health_set, monitor, server, message, simulator, expected, state, reason, command) =
        ladder;
    let app =
        spawn_app_with(&format!("{INVENTORY}\n[timing]\nsettle_wait = \"50ms\"\n\n{simulator}"))
            .await;
    let alert =
        json!({"health_set": health_set, "server": server, "monitor": monitor, "message": message});
    let incident = app.wait_final(&app.open(&alert.to_string()).await).await;
    let what = format!("{health_set} {monitor}");
    assert_eq!(changes(&incident), expected, "{what}: {:#?}", steps(&incident));
    assert_eq!(incident["state"], state, "{what}: {}", incident["reason"]);
    assert!(
        incident["reason"].as_str().unwrap().contains(reason),
        "{what}: reason {}",
        incident["reason"]
    );
    let first = &incident["steps"][0];
    assert!(
        ["probe", "server_health"].contains(&first["action"].as_str().unwrap()),
        "{what}: verification first"
    );
    if let Some((action, text)) = command {
        let step = incident["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["action"] == action)
            .unwrap_or_else(|| panic!("{what}: no {action}"));
        assert!(
            step["command"].as_str().unwrap().contains(text),
            "{what}: {} lacks {text:?}",
            step["command"]
        );
    }
}

const CAS_RESTART: &str = "[simulator.servers.\"cas01.contoso.com\"]\nfault = \"restart\"";
const MBX_RESTART: &str = "[simulator.servers.\"mbx01.contoso.com\"]\nfault = \"restart\"";
const MAILBOX_PROCEDURE: [&str; 3] = [
    "disable_activation mbx01.contoso.com done",
    "restart_server mbx01.contoso.com done",
    "enable_activation mbx01.contoso.com done",
];

#[tokio::test]
async fn every_runbook_of_the_other_health_sets_runs_its_documented_ladder() {
    let cas_ladder: &[&str] = &[
        "recycle_app_pool cas01.contoso.com done",
        "iis_reset cas01.contoso.com done",
        "restart_server cas01.contoso.com done",
    ];
    let mbx_ladder: &[&str] = &[
        "recycle_app_pool mbx01.contoso.com done",
        "iis_reset mbx01.contoso.com done",
        MAILBOX_PROCEDURE[0],
        MAILBOX_PROCEDURE[1],
        MAILBOX_PROCEDURE[2],
    ];
    let restarted_cas = "restarting cas01.contoso.com fixed it";
    let restarted_mbx = "restarting mbx01.contoso.com fixed it";
    let ladders: [Ladder; 24] = [
        ("OWA", "OwaCtpMonitor", "cas01.contoso.com", "", CAS_RESTART, cas_ladder, "recovered", restarted_cas, Some(("iis_reset", "iisreset /noforce"))),
        ("OWA.Proxy", "OWAProxyTestMonitor", "cas01.contoso.com", "", CAS_RESTART, cas_ladder, "recovered", restarted_cas, Some(("recycle_app_pool", "MSExchangeOWAAppPool, MSExchangeOWACalendarAppPool"))),
        ("ECP", "EacSelfTestMonitor", "mbx01.contoso.com", "", MBX_RESTART, mbx_ladder, "recovered", restarted_mbx, Some(("recycle_app_pool", "MSExchangeECPAppPool"))),
        ("ECP", "EacDeepTestMonitor", "mbx01.contoso.com", "", MBX_RESTART, mbx_ladder, "recovered", restarted_mbx, Some(("iis_reset", "{ iisreset }"))),
        ("EWS", "EwsCtpMonitor", "cas01.contoso.com", "", CAS_RESTART, cas_ladder, "recovered", restarted_cas, Some(("recycle_app_pool", "MSExchangeServicesAppPool"))),
        ("EWS.Protocol", "EWSSelfTestMonitor", "mbx01.contoso.com", "", MBX_RESTART, mbx_ladder, "recovered", restarted_mbx, Some(("recycle_app_pool", "MSExchangeServicesAppPool"))),
        ("EWS.Protocol", "EWSDeepTestMonitor", "mbx01.contoso.com", "", "[simulator.servers.\"mbx01.contoso.com\"]\nfault = \"never\"", &mbx_ladder[..4], "escalated", "probe still failing after all remedies", None),
        ("Outlook.Proxy", "OutlookProxyTestMonitor", "cas01.contoso.com", "", CAS_RESTART, cas_ladder, "recovered", restarted_cas, Some(("recycle_app_pool", "MSExchangeRpcProxyAppPool"))),
        ("Outlook", "OutlookRpcCtpMonitor", "cas01.contoso.com", "", "[simulator.servers.\"cas01.contoso.com\"]\nfault = \"never\"", &[], "escalated", "the runbook has no remedy for OutlookRpcCtpMonitor", None),
        ("Outlook.Protocol", "OutlookRpcSelfTestMonitor", "mbx01.contoso.com", "", "[simulator.servers.\"mbx01.contoso.com\"]\nfault = \"never\"", &[], "escalated", "the runbook has no remedy", None),
        ("Outlook.Protocol", "OutlookRpcDeepTestMonitor", "mbx01.contoso.com", "", "", &[], "transient", "nothing was done", None),
        ("IMAP", "ImapCTPMonitor", "cas01.contoso.com", MBX_HINT, "[simulator.servers.\"cas01.contoso.com\"]\nfault = \"mailbox\"\n[simulator.servers.\"mbx01.contoso.com\"]\nfault = \"service\"\nservice = \"MSExchangeIMAP4BE\"\nunhealthy_monitors = [\"ImapTestDeepMonitor\"]", &["restart_service mbx01.contoso.com done"], "recovered", "restarting MSExchangeIMAP4BE on mbx01.contoso.com fixed it", Some(("restart_service", "Invoke-Command -ComputerName mbx01.contoso.com { Restart-Service -Name MSExchangeIMAP4BE -Force }"))),
        ("IMAP", "ImapCTPMonitor", "cas01.contoso.com", MBX_HINT, CAS_RESTART, &["restart_service mbx01.contoso.com done", "restart_server cas01.contoso.com done"], "recovered", restarted_cas, None),
        ("IMAP.Proxy", "ImapProxyTestMonitor", "cas01.contoso.com", "", CAS_RESTART, &["restart_service cas01.contoso.com done", "restart_server cas01.contoso.com done"], "recovered", restarted_cas, Some(("restart_service", "MSExchangeIMAP4 -Force"))),
        ("IMAP.Protocol", "ImapTestDeepMonitor", "mbx01.contoso.com", "", MBX_RESTART, &["restart_service mbx01.contoso.com done", MAILBOX_PROCEDURE[0], MAILBOX_PROCEDURE[1], MAILBOX_PROCEDURE[2]], "recovered", restarted_mbx, Some(("restart_service", "MSExchangeIMAP4BE"))),
        ("IMAP.Protocol", "ImapSelfTestMonitor", "mbx01.contoso.com", "", "[simulator.servers.\"mbx01.contoso.com\"]\nfault = \"service\"\nservice = \"MSExchangeIMAP4BE\"", &["restart_service mbx01.contoso.com done"], "recovered", "restarting MSExchangeIMAP4BE on mbx01.contoso.com fixed it", None),
        ("IMAP", "AverageCommandProcessingTimeGt60sMonitor", "cas01.contoso.com", "", "[simulator.servers.\"cas01.contoso.com\"]\nfault = \"restart\"\nunhealthy_monitors = [\"AverageCommandProcessingTimeGt60sMonitor\"]", &["restart_service cas01.contoso.com done", "restart_server cas01.contoso.com done"], "recovered", restarted_cas, Some(("restart_service", "MSExchangeIMAP4 -Force"))),
        // The same monitor name as ActiveSync's: the alert's health set picks IMAP's runbook, and a Mailbox server
        // restarts the back-end service.
        ("IMAP", "RequestsQueuedGt500Monitor", "mbx01.contoso.com", "", "[simulator.servers.\"mbx01.contoso.com\"]\nfault = \"service\"\nservice = \"MSExchangeIMAP4BE\"\nunhealthy_monitors = [\"RequestsQueuedGt500Monitor\"]", &["restart_service mbx01.contoso.com done"], "recovered", "restarting MSExchangeIMAP4BE on mbx01.contoso.com fixed it", None),
        ("POP", "PopCTPMonitor", "cas01.contoso.com", MBX_HINT, CAS_RESTART, &["restart_service cas01.contoso.com done", "restart_server cas01.contoso.com done"], "recovered", restarted_cas, Some(("restart_service", "MSExchangePOP3 -Force"))),
        ("POP.Proxy", "PopProxyTestMonitor", "cas01.contoso.com", "", "[simulator.servers.\"cas01.contoso.com\"]\nfault = \"service\"\nservice = \"MSExchangePOP3\"", &["restart_service cas01.contoso.com done"], "recovered", "restarting MSExchangePOP3 on cas01.contoso.com fixed it", None),
        ("POP.Protocol", "PopTestDeepMonitor", "mbx01.contoso.com", "", MBX_RESTART, &["restart_service mbx01.contoso.com done", MAILBOX_PROCEDURE[0], MAILBOX_PROCEDURE[1], MAILBOX_PROCEDURE[2]], "recovered", restarted_mbx, Some(("restart_service", "MSExchangePOP3BE"))),
        // Restarting another service than the faulted one fixes nothing; the reboot restarts every service.
        ("POP.Protocol", "PopSelfTestMonitor", "mbx01.contoso.com", "", "[simulator.servers.\"mbx01.contoso.com\"]\nfault = \"service\"\nservice = \"MSExchangeIMAP4BE\"", &["restart_service mbx01.contoso.com done", MAILBOX_PROCEDURE[0], MAILBOX_PROCEDURE[1], MAILBOX_PROCEDURE[2]], "recovered", restarted_mbx, None),
        ("POP", "AverageCommandProcessingTimeGt60sMonitor", "mbx01.contoso.com", "", "[simulator.servers.\"mbx01.contoso.com\"]\nfault = \"service\"\nservice = \"MSExchangePOP3BE\"\nunhealthy_monitors = [\"AverageCommandProcessingTimeGt60sMonitor\"]", &["restart_service mbx01.contoso.com done"], "recovered", "restarting MSExchangePOP3BE on mbx01.contoso.com fixed it", None),
        ("Autodiscover", "AutodiscoverCtpMonitor", "cas01.contoso.com", "", "[simulator.servers.\"cas01.contoso.com\"]\nfault = \"iis_reset\"", &["recycle_app_pool cas01.contoso.com done", "iis_reset cas01.contoso.com done"], "recovered", "IISReset on cas01.contoso.com fixed it", Some(("iis_reset", "iisreset /noforce"))),
    ];
    for ladder in &ladders {
        climb(ladder).await;
    }
    // Every built-in runbook outside ActiveSync is in the table.
    let runbooks = healthset_responder::runbook::built_in();
    for (runbook, _) in
        runbooks.iter().filter(|(r, _)| !r.health_set.as_str().starts_with("ActiveSync"))
    {
        assert!(
            ladders.iter().any(|l| runbook.monitor.matches(l.1) && runbook.health_set.matches(l.0)),
            "{} {} has no end-to-end case",
            runbook.health_set,
            runbook.monitor
        );
    }
}

/// Managed Availability recycled the DeepTest monitor's pool on mbx01 ten minutes ago, as it does the moment the
/// monitor turns Unhealthy; `fault` says what the recycle did not fix.
fn recycled_by_ma(fault: &str) -> String {
    format!(
        "[simulator.servers.\"mbx01.contoso.com\"]\nfault = \"{fault}\"\nma_log = [\n  {{ action = \"RecycleApplicationPool\", resource = \"MSExchangeSyncAppPool\", requestor = \"ActiveSyncDeepTestRecycleAppPool\", ago = \"10m\" }},\n  {{ action = \"RestartService\", resource = \"MSExchangeIMAP4BE\", ago = \"1m\", finished = false }},\n  {{ action = \"RecycleApplicationPool\", resource = \"MSExchangeOWAAppPool\", ago = \"3h\" }},\n]"
    )
}

/// A DeepTest alert for mbx01 on a service whose configuration ends with `extra_toml`, and its incident once final.
async fn deep_test(extra_toml: &str) -> (TestApp, Value) {
    let app = spawn_app_with(&format!("{INVENTORY}\n{extra_toml}")).await;
    let incident = app
        .wait_final(
            &app.open(&native(
                "mbx01.contoso.com",
                "ActiveSyncDeepTestMonitor",
                "deep test failing",
            ))
            .await,
        )
        .await;
    (app, incident)
}

#[tokio::test]
async fn a_deep_test_alert_after_managed_availabilitys_own_recycle_goes_straight_to_iisreset() {
    let (_app, incident) = deep_test(&recycled_by_ma("iis_reset")).await;
    assert_eq!(
        steps(&incident),
        [
            "probe mbx01.contoso.com failed",
            "ma_history mbx01.contoso.com found",
            "recycle_app_pool mbx01.contoso.com skipped",
            "probe mbx01.contoso.com failed",
            "component_state mbx01.contoso.com active",
            "iis_reset mbx01.contoso.com done",
            "probe mbx01.contoso.com succeeded",
        ]
    );
    assert_eq!(incident["state"], "recovered");
    assert_eq!(incident["reason"], "IISReset on mbx01.contoso.com fixed it");
    let history = &incident["steps"][1];
    // Only the finished recycle within the hour: not the unfinished restart, not the recycle of three hours ago.
    assert_eq!(history["managed_availability"].as_array().unwrap().len(), 1, "{history:#}");
    assert_eq!(history["managed_availability"][0]["requestor"], "ActiveSyncDeepTestRecycleAppPool");
    let skipped = incident["steps"][2]["detail"].as_str().unwrap();
    assert!(
        skipped.starts_with(
            "Managed Availability already did this: RecycleApplicationPool MSExchangeSyncAppPool by ActiveSyncDeepTestRecycleAppPool, finished 20"
        ),
        "when and by which responder: {skipped}"
    );
}

#[tokio::test]
async fn the_escalation_lists_what_managed_availability_did_and_what_was_not_repeated() {
    let (app, incident) =
        deep_test(&format!("{}\nactive_copies = 0", recycled_by_ma("never"))).await;
    assert_eq!(incident["state"], "escalated", "{incident:#}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while outbox(&app).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let email = std::fs::read_to_string(&outbox(&app)[0]).unwrap();
    let text = email.replace("=\r\n", "").replace("\r\n", "\n");
    for expected in [
        "Managed Availability had already acted on mbx01.contoso.com before automation did (1 recovery action(s), counted toward the throttles): RecycleApplicationPool MSExchangeSyncAppPool by ActiveSyncDeepTestRecycleAppPool",
        "Not repeated, since Managed Availability had just done it: recycle_app_pool on mbx01.contoso.com.",
    ] {
        assert!(text.contains(expected), "{expected:?} not in\n{text}");
    }
}

#[tokio::test]
async fn managed_availabilitys_actions_count_toward_the_throttles() {
    // It recycled the OWA pool on cas01 twenty minutes ago; the ActiveSync runbook's own recycle (another pool, so
    // not skipped) would be the second on that server within the hour.
    let simulator = "[simulator.servers.\"cas01.contoso.com\"]\nfault = \"iis_reset\"\nma_log = [{ action = \"RecycleApplicationPool\", resource = \"MSExchangeOWAAppPool\", requestor = \"OwaCtpRecycleAppPool\", ago = \"20m\" }]";
    let app = spawn_app_with(&format!("{INVENTORY}\n{simulator}")).await;
    let incident = app
        .wait_final(&app.open(&native("cas01.contoso.com", "ActiveSyncCTPMonitor", MBX_HINT)).await)
        .await;
    assert_eq!(
        steps(&incident),
        [
            "probe cas01.contoso.com failed",
            "ma_history cas01.contoso.com found",
            "component_state cas01.contoso.com active",
            "recycle_app_pool cas01.contoso.com throttled"
        ]
    );
    assert_eq!(incident["state"], "blocked");
    let reason = incident["reason"].as_str().unwrap();
    assert!(reason.starts_with("throttled: safety.recycle_app_pool.server_min_interval: recycle_app_pool ran on cas01.contoso.com 20m"), "{reason}");
    assert!(
        reason.ends_with("(counting 1 recovery action(s) Managed Availability took itself)"),
        "{reason}"
    );

    // With room for two a day, Managed Availability's and the responder's own fill it: a later incident on the
    // server, reading the same record again, counts it once, and is refused.
    let room_for_two = "[safety.recycle_app_pool]\nserver_min_interval = \"0s\"\nserver_max_per_day = 2\ngroup_min_interval = \"0s\"\ngroup_max_per_day = 8";
    let app = spawn_app_with(&format!(
        "{INVENTORY}\n{}\n{room_for_two}",
        simulator.replace("iis_reset", "never")
    ))
    .await;
    let first = app
        .wait_final(&app.open(&native("cas01.contoso.com", "ActiveSyncCTPMonitor", MBX_HINT)).await)
        .await;
    assert!(
        steps(&first).contains(&"recycle_app_pool cas01.contoso.com done".to_owned()),
        "one of Managed Availability's and one of the responder's: {first:#}"
    );
    let second = app
        .wait_final(&app.open(&native("cas01.contoso.com", "ActiveSyncCTPMonitor", MBX_HINT)).await)
        .await;
    let reason = second["reason"].as_str().unwrap();
    assert!(reason.contains("safety.recycle_app_pool.server_max_per_day: recycle_app_pool already ran 2 time(s) on cas01.contoso.com"), "{reason}");
}

#[tokio::test]
async fn a_lookback_of_zero_reads_no_history_and_repeats_the_recycle() {
    let (_app, incident) =
        deep_test(&format!("{}\n[safety]\nma_lookback = \"0s\"", recycled_by_ma("iis_reset")))
            .await;
    assert_eq!(
        steps(&incident),
        [
            "probe mbx01.contoso.com failed",
            "component_state mbx01.contoso.com active",
            "recycle_app_pool mbx01.contoso.com done",
            "probe mbx01.contoso.com failed",
            "iis_reset mbx01.contoso.com done",
            "probe mbx01.contoso.com succeeded",
        ]
    );
}

#[tokio::test]
async fn scom_and_alertmanager_alerts_of_other_health_sets_are_recognised() {
    let app = spawn_app_with(INVENTORY).await;
    let cases = [
        (
            "/v1/alerts/scom",
            include_str!("../fixtures/scom/owa-ctp.json"),
            "OWA",
            "OwaCtpMonitor",
            "cas01.contoso.com",
            None,
        ),
        (
            "/v1/alerts/scom",
            include_str!("../fixtures/scom/imap-ctp.json"),
            "IMAP",
            "ImapCTPMonitor",
            "cas01.contoso.com",
            Some("mbx01.contoso.com"),
        ),
        // The rule sets no health_set label: the monitor (any case) is known, and so is its health set.
        (
            "/v1/alerts/alertmanager",
            include_str!("../fixtures/alertmanager/ews-protocol-no-health-set.json"),
            "EWS.Protocol",
            "EWSDeepTestMonitor",
            "mbx02.contoso.com",
            None,
        ),
    ];
    for (route, body, health_set, monitor, server, hint) in cases {
        let response = app.post_signed(route, body).await;
        assert_eq!(response.status(), 202, "{route}: {}", response.text().await.unwrap());
        let answer: Value = response.json().await.unwrap();
        let id = answer["alerts"][0]["incident_id"].as_str().unwrap();
        let incident = app.wait_final(id).await;
        assert_eq!(
            (
                incident["health_set"].as_str(),
                incident["monitor"].as_str(),
                incident["server"].as_str(),
                incident["mailbox_hint"].as_str()
            ),
            (Some(health_set), Some(monitor), Some(server), hint),
            "{route}"
        );
        assert_eq!(incident["state"], "transient", "its runbook verified first: {incident:#}");
    }
}

#[test]
fn the_runbooks_command_lists_every_health_set_and_monitor_with_its_page() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_healthset-responder"))
        .arg("runbooks")
        .env_remove("HSR_CONFIG")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    for (health_set, monitor, page) in [
        ("OWA", "OwaCtpMonitor", "Troubleshooting OWA Health Set, \"OwaCtpMonitor Recovery Actions\""),
        ("IMAP", "RequestsQueuedGt500Monitor", "Troubleshooting IMAP Health Set"),
        ("ActiveSync", "RequestsQueuedGt500Monitor", "Troubleshooting ActiveSync Health Set, \"RequestsQueuedGt500Monitor Recovery Actions\""),
        ("Outlook", "OutlookRpcCtpMonitor", "the page documents no recovery"),
        ("Autodiscover", "AutodiscoverCtpMonitor", "Troubleshooting Autodiscover Health Set"),
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{health_set} ")) && l.contains(&format!(" {monitor} ")))
            .unwrap_or_else(|| panic!("{health_set} {monitor} in\n{text}"));
        assert!(line.contains(page) && line.contains("built-in"), "{line}");
    }
    assert_eq!(
        text.lines().count(),
        healthset_responder::runbook::built_in().iter().count() + 1,
        "a header and one line per runbook"
    );
}

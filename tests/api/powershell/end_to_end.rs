//! The service driving incidents through the PowerShell executor: every runbook, maintenance, failures, hostile names, restarts, storms and secrets, seen through the stand-in shell's log and the API.

use super::*;

/// The service configured with the PowerShell executor, its shell being the stand-in playing `scenario`.
async fn service_with(world: &World, timeout: &str) -> crate::helpers::TestApp {
    crate::helpers::spawn_app_with(&world.service_toml(
        crate::helpers::INVENTORY,
        &format!("timeout = \"{timeout}\"\n"),
        "settle_wait = \"50ms\"\n",
    ))
    .await
}

impl World {
    /// The service's TOML for this world: `inventory`, then `[executor]` (the stand-in, and `executor` keys), then
    /// `[timing]` with `timing` keys.
    fn service_toml(&self, inventory: &str, executor: &str, timing: &str) -> String {
        let config = self.config(Duration::from_secs(1));
        let args: Vec<String> = config.args.iter().map(|a| format!("{a:?}")).collect();
        format!("{inventory}\n[executor]\nkind = \"powershell\"\nprogram = {:?}\nargs = [{}]\n{executor}[timing]\n{timing}", config.program, args.join(", "))
    }
}

/// The `action server` pairs the stand-in received, in order.
fn received(world: &World) -> Vec<String> {
    world
        .calls()
        .iter()
        .map(|call| {
            format!("{} {}", call["action"].as_str().unwrap(), call["server"].as_str().unwrap())
        })
        .collect()
}

/// The journal's steps as `action server`, as the shell should have seen them: the engine's own waits run no
/// shell, but a wait for a restarted server to answer runs one `component_state` check per try.
fn journaled(incident: &Value) -> Vec<String> {
    let mut calls = Vec::new();
    for step in incident["steps"].as_array().unwrap() {
        let server = step["server"].as_str().unwrap();
        if step["action"] != "wait" {
            calls.push(format!("{} {server}", step["action"].as_str().unwrap()));
        } else if step["command"].as_str().unwrap().starts_with("wait until") {
            let detail = step["detail"].as_str().unwrap();
            let checks: usize = detail
                .rsplit_once(" (")
                .and_then(|(_, n)| n.split(' ').next()?.parse().ok())
                .expect("the number of checks");
            calls.extend(std::iter::repeat_n(format!("component_state {server}"), checks));
        }
    }
    calls
}

#[tokio::test]
async fn every_runbook_runs_end_to_end_through_the_shell() {
    let cases: &[(&str, serde_json::Value, &str)] = &[
        (
            "[servers.\"cas01.contoso.com\"]\nfault = \"mailbox\"\nmailbox = \"mbx01.contoso.com\"\n[servers.\"mbx01.contoso.com\"]\nfault = \"iis_reset\"\nunhealthy_monitors = [\"ActiveSyncDeepTestMonitor\"]\n",
            serde_json::json!({"health_set": "ActiveSync", "server": "cas01.contoso.com", "monitor": "ActiveSyncCTPMonitor", "message": "_Cas:CAS01.contoso.com_Mbx:MBX01.contoso.com_"}),
            "recovered",
        ),
        (
            "[servers.\"mbx02.contoso.com\"]\nfault = \"restart\"\nactive_copies = 4\ncopies_moved_per_failover = 2\nunhealthy_monitors = [\"ActiveSyncDeepTestMonitor\"]\n",
            serde_json::json!({"health_set": "ActiveSync", "server": "mbx02.contoso.com", "monitor": "ActiveSyncDeepTestMonitor"}),
            "recovered",
        ),
        (
            "[servers.\"cas02.contoso.com\"]\nfault = \"app_pool\"\nunhealthy_monitors = [\"RequestsQueuedGt500Monitor\"]\n",
            serde_json::json!({"health_set": "ActiveSync", "server": "cas02.contoso.com", "monitor": "RequestsQueuedGt500Monitor"}),
            "recovered",
        ),
        (
            "[servers.\"cas02.contoso.com\"]\nfault = \"never\"\n",
            serde_json::json!({"health_set": "ActiveSync.Proxy", "server": "cas02.contoso.com", "monitor": "ActiveSyncProxyTestMonitor"}),
            "escalated",
        ),
        (
            "[servers.\"mbx01.contoso.com\"]\nfault = \"never\"\nactive_copies = 1\n",
            serde_json::json!({"health_set": "ActiveSync.Protocol", "server": "mbx01.contoso.com", "monitor": "ActiveSyncSelfTestMonitor"}),
            "escalated",
        ),
    ];
    for (scenario, alert, state) in cases {
        let world = World::new(scenario);
        let app = service_with(&world, "30s").await;
        let incident = app.wait_final(&app.open(&alert.to_string()).await).await;
        assert_eq!(incident["state"], *state, "{alert}: {incident:#}");
        assert_eq!(
            received(&world),
            journaled(&incident),
            "{alert}: the shell received exactly the journaled steps, in order"
        );
        // Every script but component_state's (a wait for an answer runs those too) is a journaled step's command.
        let calls = world.calls();
        let scripts: Vec<&Value> = calls
            .iter()
            .filter(|call| call["action"] != "component_state")
            .map(|call| &call["script"])
            .collect();
        let commands: Vec<&Value> = incident["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["action"] != "wait" && s["action"] != "component_state")
            .map(|s| &s["command"])
            .collect();
        assert_eq!(scripts, commands, "the journal records the exact script the shell ran");
        for call in &calls {
            assert!(
                call["script"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("'{}'", call["server"].as_str().unwrap())),
                "servers reach scripts as quoted literals"
            );
        }
    }
}

#[tokio::test]
async fn maintenance_copy_states_and_activation_as_found_hold_through_the_shell() {
    let deep = |server: &str| serde_json::json!({"health_set": "ActiveSync", "server": server, "monitor": "ActiveSyncDeepTestMonitor"});
    let cases: &[(&str, serde_json::Value, &str, &[&str])] = &[
        (
            "[servers.\"mbx01.contoso.com\"]\nfault = \"restart\"\nmaintenance = true\nunhealthy_monitors = [\"ActiveSyncDeepTestMonitor\"]\n",
            deep("mbx01.contoso.com"),
            "suppressed",
            &["recycle_app_pool", "iis_reset", "disable_activation", "restart_server"],
        ),
        (
            "[servers.\"mbx01.contoso.com\"]\nfault = \"restart\"\nactive_copies = 0\npassive_copies = 2\ncopy_states = { ServiceDown = 1 }\n",
            deep("mbx01.contoso.com"),
            "escalated",
            &["restart_server"],
        ),
        (
            "[servers.\"mbx02.contoso.com\"]\nfault = \"restart\"\nactivation_disabled = true\nactive_copies = 2\ncopies_moved_per_failover = 2\n",
            deep("mbx02.contoso.com"),
            "recovered",
            &["enable_activation"],
        ),
    ];
    for (scenario, alert, state, never) in cases {
        let world = World::new(scenario);
        let app = service_with(&world, "30s").await;
        let incident = app.wait_final(&app.open(&alert.to_string()).await).await;
        assert_eq!(incident["state"], *state, "{scenario}: {incident:#}");
        let received = received(&world);
        assert_eq!(received, journaled(&incident), "{scenario}");
        for action in *never {
            assert!(
                !received.iter().any(|call| call.starts_with(action)),
                "{scenario}: the shell never ran {action}: {received:?}"
            );
        }
    }
}

#[tokio::test]
async fn executor_failures_block_the_incident_and_escalate() {
    let cases = [
        ("[servers.\"cas01.contoso.com\"]\nfault = \"iis_reset\"\n[servers.\"cas01.contoso.com\".actions]\niis_reset = { garbage = true }\n", "1m", "executor failure: iis_reset on cas01.contoso.com failed"),
        ("[servers.\"cas01.contoso.com\"]\nfault = \"iis_reset\"\n[servers.\"cas01.contoso.com\".actions]\nrecycle_app_pool = { exit_code = 1, stderr = \"Restart-WebAppPool : access denied\" }\n", "1m", "access denied"),
        ("[servers.\"cas01.contoso.com\"]\nfault = \"never\"\n[servers.\"cas01.contoso.com\".actions]\nprobe = { hang = true }\n", "1s", "executor failure: probe on cas01.contoso.com failed"),
    ];
    for (scenario, timeout, reason) in cases {
        let world = World::new(scenario);
        let app = service_with(&world, timeout).await;
        let alert = serde_json::json!({"health_set": "ActiveSync", "server": "cas01.contoso.com", "monitor": "ActiveSyncCTPMonitor", "message": "_Mbx:mbx01.contoso.com"});
        let incident = app.wait_final(&app.open(&alert.to_string()).await).await;
        assert_eq!(incident["state"], "blocked", "{scenario}: {incident:#}");
        assert!(
            incident["reason"].as_str().unwrap().contains(reason),
            "{scenario}: {}",
            incident["reason"]
        );
        assert_eq!(
            incident["notifications"].as_array().unwrap().len(),
            1,
            "a blocked incident escalates"
        );
        for call in world.calls() {
            if let Some(child) = call["child_pid"].as_u64() {
                assert!(ended(child), "the hung shell's child was killed with it");
            }
        }
    }
}

#[tokio::test]
async fn a_hostile_server_name_never_reaches_a_script() {
    let world = World::new("");
    let app = service_with(&world, "30s").await;
    for server in [
        "cas01.contoso.com'; Restart-Computer -Force; '",
        "cas01$(Remove-Item C:\\ -Recurse)",
        "cas01.contoso.com\u{2019}",
    ] {
        let body = serde_json::json!({"health_set": "ActiveSync", "server": server, "monitor": "ActiveSyncCTPMonitor"}).to_string();
        assert_eq!(app.post_signed("/v1/alerts", &body).await.status(), 422, "{server}");
    }
    let body = serde_json::json!({"health_set": "ActiveSync", "server": "cas01.contoso.com", "monitor": "ActiveSyncCTPMonitor", "message": "_Mbx:mbx01.contoso.com'; Stop-Computer"}).to_string();
    let incident = app.wait_final(&app.open(&body).await).await;
    assert_eq!(
        incident["mailbox_hint"], "mbx01.contoso.com",
        "the hint ends at the first character that cannot be in a host name"
    );
    assert!(world
        .calls()
        .iter()
        .all(|call| !call["script"].as_str().unwrap().contains("Stop-Computer")));
}

#[tokio::test]
async fn a_restart_the_responder_was_killed_during_waits_for_the_server_to_answer_again() {
    let world = World::new(
        "[servers.\"mbx02.contoso.com\"]\nfault = \"restart\"\nboot_time_ms = 4000\nunhealthy_monitors = [\"ActiveSyncDeepTestMonitor\"]\n\
         [servers.\"mbx02.contoso.com\".actions]\nrestart_server = { delay_ms = 1500 }\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let toml = world.service_toml(
        crate::helpers::INVENTORY,
        "timeout = \"1m\"\n",
        "poll_interval = \"100ms\"\nwarm_up = \"0s\"\nrestart_timeout = \"30s\"\n",
    );
    std::fs::write(
        &config,
        format!("{}\n{toml}", crate::helpers::base_config(&dir.path().join("data"))),
    )
    .unwrap();

    let mut process = crate::helpers::ServiceProcess::start(&config, None);
    let app = crate::helpers::TestApp::attached(&process.url);
    let id =
        app.open(&serde_json::json!({"health_set": "ActiveSync", "server": "mbx02.contoso.com", "monitor": "ActiveSyncDeepTestMonitor"}).to_string()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, incident) = app.admin_get(&format!("/v1/incidents/{id}")).await;
        if incident["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["action"] == "restart_server" && s["finished_at"].is_null())
        {
            break;
        }
        assert!(Instant::now() < deadline, "the restart never began: {incident:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    process.child.kill().unwrap();
    process.child.wait().unwrap();

    let mut process = crate::helpers::ServiceProcess::start(&config, None);
    let app = crate::helpers::TestApp::attached(&process.url);
    let incident = app.wait_final(&id).await;
    process.child.kill().unwrap();
    process.child.wait().unwrap();
    assert_eq!(incident["state"], "recovered", "{incident:#}");
    let steps = incident["steps"].as_array().unwrap();
    let at = steps.iter().position(|s| s["action"] == "restart_server").unwrap();
    assert_eq!(steps[at]["outcome"], "interrupted");
    let wait = &steps[at + 1];
    assert_eq!(wait["action"], "wait");
    let detail = wait["detail"].as_str().unwrap();
    let checks: usize =
        detail.rsplit_once(" (").and_then(|(_, n)| n.split(' ').next()?.parse().ok()).unwrap();
    assert!(
        detail.starts_with("mbx02.contoso.com answered after") && checks >= 2,
        "it waited for the booting server: {detail}"
    );
    assert_eq!(
        (steps[at + 2]["action"].as_str(), steps[at + 2]["outcome"].as_str()),
        (Some("probe"), Some("succeeded")),
        "{incident:#}"
    );
    assert_eq!(steps.last().unwrap()["action"], "enable_activation");
}

#[tokio::test]
async fn a_storm_of_alerts_never_runs_more_shells_than_max_parallel() {
    const SERVERS: usize = 50;
    const MAX_PARALLEL: usize = 4;
    let mut inventory = String::new();
    let mut scenario = String::new();
    for n in 0..SERVERS / 2 {
        inventory.push_str(&format!(
            "[[servers]]\nname = \"cas{n:02}.contoso.com\"\nrole = \"cas\"\ngroup = \"array{}\"\n",
            n / 5
        ));
        inventory.push_str(&format!("[[servers]]\nname = \"mbx{n:02}.contoso.com\"\nrole = \"mailbox\"\ngroup = \"dag{}\"\n", n % 5));
        if n % 5 == 0 {
            scenario
                .push_str(&format!("[servers.\"cas{n:02}.contoso.com\"]\nfault = \"app_pool\"\n"));
        }
    }
    let world = World::new(&scenario);
    let app = crate::helpers::spawn_app_with(&world.service_toml(
        &inventory,
        &format!("max_parallel = {MAX_PARALLEL}\ntimeout = \"1m\"\n"),
        "",
    ))
    .await;

    let mut posts = tokio::task::JoinSet::new();
    for n in 0..SERVERS / 2 {
        let bodies = [
            serde_json::json!({"health_set": "ActiveSync", "server": format!("cas{n:02}.contoso.com"), "monitor": "ActiveSyncCTPMonitor", "message": format!("_Mbx:mbx{n:02}.contoso.com")}),
            serde_json::json!({"health_set": "ActiveSync.Proxy", "server": format!("cas{n:02}.contoso.com"), "monitor": "ActiveSyncProxyTestMonitor"}),
            serde_json::json!({"health_set": "ActiveSync", "server": format!("mbx{n:02}.contoso.com"), "monitor": "ActiveSyncDeepTestMonitor"}),
            serde_json::json!({"health_set": "ActiveSync.Protocol", "server": format!("mbx{n:02}.contoso.com"), "monitor": "ActiveSyncSelfTestMonitor"}),
        ];
        // Each alert twice, as a flapping monitor sends them: the second attaches to the open incident or, where
        // that one ended, opens a new one.
        for (k, body) in bodies.iter().chain(bodies.iter()).cloned().enumerate() {
            let (http, url) = (app.http.clone(), format!("{}/v1/alerts", app.url));
            posts.spawn(async move {
                let (id, ts) = (format!("storm-{n}-{k}"), chrono::Utc::now().timestamp());
                let response = crate::helpers::post_signed_to(
                    &http,
                    &url,
                    &body.to_string(),
                    &id,
                    ts,
                    crate::helpers::SECRET,
                )
                .await;
                assert_eq!(response.status(), 202);
            });
        }
    }
    let mut posted = 0;
    while let Some(done) = posts.join_next().await {
        done.unwrap();
        posted += 1;
    }
    assert!(posted >= 200, "{posted} alerts");

    let (_, list) = app.admin_get("/v1/incidents?limit=1000").await;
    let mut states = std::collections::BTreeMap::new();
    for summary in list["incidents"].as_array().unwrap() {
        let incident = wait_final_long(&app, summary["id"].as_str().unwrap()).await;
        let server = incident["server"].as_str().unwrap().to_owned();
        let faulted = server.starts_with("cas") && server[3..5].parse::<usize>().unwrap() % 5 == 0;
        // A faulted CAS: its CTP incident recycles the pool; its proxy probe fails too until that has happened, and
        // the proxy runbook has no remedy of its own, so that incident escalates or is transient by turn.
        let expected: &[&str] = match (faulted, incident["monitor"].as_str().unwrap()) {
            (true, "ActiveSyncCTPMonitor") => &["recovered", "transient"],
            (true, _) => &["escalated", "transient"],
            (false, _) => &["transient"],
        };
        let state = incident["state"].as_str().unwrap().to_owned();
        assert!(expected.contains(&state.as_str()), "{incident:#}");
        *states.entry(state).or_insert(0) += 1;
    }
    assert!(
        states["recovered"] >= 5 && states["transient"] >= SERVERS,
        "each faulted CAS recovered once: {states:?}"
    );
    let most = world.calls().iter().filter_map(|call| call["running"].as_u64()).max().unwrap();
    assert!(most as usize <= MAX_PARALLEL, "at most {MAX_PARALLEL} shells at once, saw {most}");
    assert!(most >= 2, "shells did run side by side ({most})");
}

/// Like `wait_final`, with the minute a storm through real processes may take.
async fn wait_final_long(app: &crate::helpers::TestApp, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, incident) = app.admin_get(&format!("/v1/incidents/{id}")).await;
        if !["queued", "running", "waiting"].contains(&incident["state"].as_str().unwrap()) {
            return incident;
        }
        assert!(
            Instant::now() < deadline,
            "incident {id} still {}: {incident:#}",
            incident["state"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(unix)]
#[tokio::test]
async fn the_shell_never_sees_the_services_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("shell-environment.txt");
    // A shell that writes down its environment, then reports a probe that passed.
    let script = format!(
        "env > {}; cat > /dev/null; printf '{{\"ResultType\":\"Succeeded\"}}'",
        dump.display()
    );
    let config = format!(
        "{}\n{}\n[executor]\nkind = \"powershell\"\nprogram = \"sh\"\nargs = [\"-c\", {script:?}]\npass_env = [\"HTTPS_PROXY\"]\n",
        crate::helpers::base_config(&dir.path().join("data")),
        crate::helpers::INVENTORY
    );
    let path = dir.path().join("healthset-responder.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_healthset-responder"));
    command
        .args(["serve", "--config"])
        .arg(&path)
        .env("HSR_ADMIN_TOKEN", "admin-token-from-the-environment")
        .env("HSR_WEBHOOK_SECRET", "whsec_c2VjcmV0IGZyb20gdGhlIGVudmlyb25tZW50")
        .env("HTTPS_PROXY", "http://proxy.contoso.com:3128")
        .env("DATABASE_PASSWORD", "not-for-the-shell");
    let service = crate::helpers::ServiceProcess::spawn(command);
    let app = crate::helpers::TestApp::attached(&service.url);
    let incident = app
        .open(&crate::helpers::native("cas01.contoso.com", "ActiveSyncCTPMonitor", "probe failed"))
        .await;
    assert_eq!(app.wait_final(&incident).await["state"], "transient");
    let seen = std::fs::read_to_string(&dump).unwrap();
    assert!(
        !seen.contains("HSR_")
            && !seen.contains("from-the-environment")
            && !seen.contains("c2VjcmV0"),
        "{seen}"
    );
    assert!(!seen.contains("DATABASE_PASSWORD"), "a variable not listed stays out: {seen}");
    assert!(
        seen.contains("HTTPS_PROXY=http://proxy.contoso.com:3128"),
        "a listed variable is passed: {seen}"
    );
    assert!(seen.lines().any(|l| l.starts_with("PATH=")), "the basics are there: {seen}");
    assert!(service.terminate().success());
}

//! The client commands end to end: the real `healthset-responder` binary against the real service on loopback, as
//! an operator (text for a person, coloured only on a terminal) or a script (`--json`, exit codes) would use it.

use std::process::Output;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;
use crate::replay::{app_pool_fault, held_alert, hold_incidents, CTP_MESSAGE};

const BINARY: &str = env!("CARGO_BIN_EXE_healthset-responder");

/// Runs the binary with `args`, from the test's data directory (so no stray config or credentials file is read),
/// with no environment that could change its answers; bounded so that a hung command fails the test.
async fn run(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(BINARY);
    command
        .args(args)
        .current_dir(app.data_dir.path())
        .env_remove("HSR_CONFIG")
        .env_remove("HSR_STORE_URL")
        .env_remove("HSR_ADMIN_TOKEN")
        .env_remove("HSR_WEBHOOK_SECRET")
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the command finishes within 60 s")
        .expect("the binary runs")
}

/// Runs a client command against the test service with the test's admin token.
async fn client(app: &TestApp, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.extend(["--url", &app.url, "--token", ADMIN_TOKEN]);
    run(app, &all, &[]).await
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("the command exited rather than being killed")
}

#[tokio::test]
async fn replay_wait_follows_a_recovering_incident_and_exits_0() {
    let app =
        spawn_app_with(&format!("{}\n[simulator]\naction_latency = \"100ms\"\n", app_pool_fault()))
            .await;
    let alert_id =
        held_alert(&app, &native("cas01.contoso.com", "ActiveSyncCTPMonitor", CTP_MESSAGE)).await;

    let output = client(&app, &["replay", &alert_id, "--wait"]).await;
    let text = stdout(&output);
    assert_eq!(code(&output), 0, "stdout:\n{text}\nstderr:\n{}", stderr(&output));
    assert!(!text.contains('\x1b'), "piped output carries no ANSI codes: {text:?}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with(&format!("replayed alert {alert_id} as incident ")), "{text}");
    let incident_id = lines[0].rsplit(' ').next().unwrap();
    let steps: Vec<Vec<&str>> = lines
        .iter()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let columns: Vec<(&str, &str, &str, &str)> =
        steps.iter().map(|s| (s[0], s[2], s[3], s[4])).collect();
    assert_eq!(
        columns,
        [
            ("1", "cas01.contoso.com", "probe", "failed"),
            ("2", "cas01.contoso.com", "ma_history", "none"),
            ("3", "cas01.contoso.com", "component_state", "active"),
            ("4", "cas01.contoso.com", "recycle_app_pool", "done"),
            ("5", "cas01.contoso.com", "probe", "succeeded")
        ],
        "{text}"
    );
    for step in &steps {
        assert!(
            chrono::NaiveTime::parse_from_str(step[1], "%H:%M:%S%.3f").is_ok(),
            "a time of day: {step:?}"
        );
    }
    assert_eq!(lines.last().unwrap(), &format!("incident {incident_id} ended recovered: recycling MSExchangeSyncAppPool on cas01.contoso.com fixed it"));
    let incident = app.wait_final(incident_id).await;
    assert_eq!(incident["replay_of"], alert_id.as_str());
}

#[tokio::test]
async fn replay_wait_exits_1_when_the_incident_escalates() {
    let app = spawn_app_with(&format!(
        "{INVENTORY}\n[simulator.servers.\"cas01.contoso.com\"]\nfault = \"never\"\n"
    ))
    .await;
    let alert_id =
        &held_alert(&app, &native("cas01.contoso.com", "ActiveSyncCTPMonitor", CTP_MESSAGE)).await;

    let output = client(&app, &["replay", alert_id, "--wait"]).await;
    let text = stdout(&output);
    assert_eq!(code(&output), 1, "stdout:\n{text}\nstderr:\n{}", stderr(&output));
    assert!(text.contains(" restart_server "), "each step is printed: {text}");
    let last = text.lines().last().unwrap();
    assert!(
        last.starts_with("incident ")
            && last.ends_with(" ended escalated: probe still failing after all remedies"),
        "{text}"
    );
}

#[tokio::test]
async fn lists_and_shows_read_well_and_json_is_the_apis() {
    let app = spawn_app_with(&app_pool_fault()).await;
    let answer: Value = app
        .post_signed(
            "/v1/alerts",
            &native("cas01.contoso.com", "ActiveSyncCTPMonitor", CTP_MESSAGE),
        )
        .await
        .json()
        .await
        .unwrap();
    let alert_id = answer["alerts"][0]["alert_id"].as_str().unwrap();
    let incident_id = answer["alerts"][0]["incident_id"].as_str().unwrap();
    app.wait_final(incident_id).await;

    let output = client(&app, &["incidents", "list", "--json"]).await;
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let listed: Value = serde_json::from_slice(&output.stdout).expect("--json prints JSON");
    assert_eq!(listed["incidents"][0]["id"], incident_id);
    assert_eq!(
        listed,
        app.admin_get("/v1/incidents?limit=50").await.1,
        "--json is the API's answer"
    );

    let output = client(&app, &["incidents", "list"]).await;
    let text = stdout(&output);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(!text.contains('\x1b'), "{text:?}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["id", "state", "opened", "server", "monitor", "reason"]
    );
    assert!(lines[1].starts_with(&format!("{incident_id}  recovered  ")), "{text}");
    assert!(lines[1].ends_with("cas01.contoso.com  ActiveSyncCTPMonitor  recycling MSExchangeSyncAppPool on cas01.contoso.com fixed it"), "{text}");

    let output = client(&app, &["incidents", "list", "--state", "escalated"]).await;
    assert_eq!((code(&output), stdout(&output)), (0, "no incidents\n".to_owned()));

    let output = client(&app, &["incidents", "show", incident_id]).await;
    let text = stdout(&output);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(
        text.starts_with(&format!("incident {incident_id}  RECOVERED\n  ActiveSync ActiveSyncCTPMonitor on cas01.contoso.com (_Mbx: mbx01.contoso.com)\n")),
        "{text}"
    );
    let step: Vec<&str> = text
        .lines()
        .find(|l| l.contains("recycle_app_pool"))
        .expect("the timeline is shown")
        .split_whitespace()
        .collect();
    assert_eq!(
        (step[0], step[2], step[3], step[4]),
        ("4", "cas01.contoso.com", "recycle_app_pool", "done"),
        "{text}"
    );

    let output = client(&app, &["alerts", "list"]).await;
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(stdout(&output).lines().nth(1).unwrap().starts_with(alert_id), "{}", stdout(&output));

    let output = client(&app, &["alerts", "show", alert_id]).await;
    let text = stdout(&output);
    assert!(text.contains("_Mbx:MBX01.contoso.com"), "the message is shown: {text}");
    assert!(text.contains("raw body:\n  {"), "the raw body is shown: {text}");

    let output = client(&app, &["pause", "--reason", "patching the CAS array"]).await;
    assert_eq!(
        (code(&output), stdout(&output)),
        (0, "automation paused: patching the CAS array\n".to_owned())
    );
    let (_, ready) = app.admin_get("/readyz").await;
    assert_eq!(ready["paused"], true);
    let output = client(&app, &["resume", "--json"]).await;
    assert_eq!(serde_json::from_slice::<Value>(&output.stdout).unwrap(), json!({"paused": false}));

    let output = client(&app, &["incidents", "list", "--state", "fixed"]).await;
    assert_eq!(code(&output), 2, "a bad flag value is a usage error");
    assert!(
        stderr(&output).starts_with("error: --state: \"fixed\" is not one of queued, running,"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn a_terminal_gets_colour_unless_no_color_is_set() {
    let app = spawn_app_with(INVENTORY).await;
    let incident_id =
        app.open(&native("cas01.contoso.com", "ActiveSyncCTPMonitor", CTP_MESSAGE)).await;
    app.wait_final(&incident_id).await;
    let line = format!("{BINARY} incidents list --url {} --token {ADMIN_TOKEN}", app.url);
    let coloured = on_a_terminal(&app, &line, None).await;
    assert!(
        coloured.contains("\x1b[32mtransient\x1b[0m"),
        "a terminal sees the state in colour: {coloured:?}"
    );
    let plain = on_a_terminal(&app, &line, Some("1")).await;
    assert!(
        plain.contains("transient") && !plain.contains('\x1b'),
        "NO_COLOR is honoured: {plain:?}"
    );
}

/// Runs a shell command line with a pseudo-terminal as its stdout, as an operator's shell would give it, through
/// util-linux's `script`; returns what the terminal showed.
async fn on_a_terminal(app: &TestApp, line: &str, no_color: Option<&str>) -> String {
    let mut command = tokio::process::Command::new("script");
    command
        .args(["-qec", line, "/dev/null"])
        .current_dir(app.data_dir.path())
        .env_remove("NO_COLOR")
        .kill_on_drop(true);
    if let Some(value) = no_color {
        command.env("NO_COLOR", value);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("bounded")
        .expect("script(1) from util-linux runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn failures_say_what_to_do_and_exit_1() {
    let app = spawn_app_with(INVENTORY).await;

    let output =
        run(&app, &["incidents", "list", "--url", &app.url, "--token", "not-the-token"], &[]).await;
    assert_eq!(code(&output), 1);
    assert_eq!(
        stderr(&output),
        "error: the service refused the credentials: the admin token is not valid\n"
    );

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let output = run(
        &app,
        &["alerts", "list", "--url", &format!("http://{closed}"), "--token", ADMIN_TOKEN],
        &[],
    )
    .await;
    assert_eq!(code(&output), 1);
    assert!(
        stderr(&output).starts_with(&format!("error: cannot reach the service at http://{closed}: is `healthset-responder serve` running there?")),
        "{}",
        stderr(&output)
    );

    let output = client(&app, &["replay", "0193aaaa-0000-7000-8000-000000000000"]).await;
    assert_eq!(
        (code(&output), stderr(&output)),
        (1, "error: alert 0193aaaa-0000-7000-8000-000000000000 does not exist\n".to_owned())
    );

    hold_incidents(&app).await;
    let answer: Value = app
        .post_signed(
            "/v1/alerts",
            &native("cas01.contoso.com", "ActiveSyncCTPMonitor", CTP_MESSAGE),
        )
        .await
        .json()
        .await
        .unwrap();
    let output =
        client(&app, &["replay", answer["alerts"][0]["alert_id"].as_str().unwrap(), "--wait"])
            .await;
    assert_eq!(code(&output), 1);
    let open = answer["alerts"][0]["incident_id"].as_str().unwrap();
    assert_eq!(stderr(&output), format!("error: incident {open} is already open for cas01.contoso.com ActiveSync ActiveSyncCTPMonitor\n"));

    let output = run(
        &app,
        &["incidents", "show", "../v1/alerts", "--url", &app.url, "--token", ADMIN_TOKEN],
        &[],
    )
    .await;
    assert_eq!(
        code(&output),
        2,
        "an id that would change the URL path is a usage error: {}",
        stderr(&output)
    );
}

/// `approve` and `deny` from a shell: the decision and its reason reach the journal, and a second decision or an
/// incident that waits for none is refused with the service's reason, exit 1.
#[tokio::test]
async fn operators_approve_and_deny_from_the_command_line() {
    let faults = "[simulator.servers.\"mbx01.contoso.com\"]\nfault = \"iis_reset\"\n[simulator.servers.\"mbx02.contoso.com\"]\nfault = \"iis_reset\"\n";
    let app = spawn_app_with(&format!(
        "{INVENTORY}\n[approval]\nactions = [\"iis_reset\"]\n{faults}{}",
        crate::safety::relaxed_throttles()
    ))
    .await;
    let approved =
        app.open(&native("mbx01.contoso.com", "ActiveSyncDeepTestMonitor", "deep")).await;
    let denied = app.open(&native("mbx02.contoso.com", "ActiveSyncDeepTestMonitor", "deep")).await;
    for id in [&approved, &denied] {
        crate::approvals::wait_state(&app, id, "awaiting_approval").await;
    }

    let output = client(&app, &["approve", &approved, "--reason", "pool checked by hand"]).await;
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(stdout(&output), format!("approved incident {approved}: automation checks again and runs the steps only if the problem persists\n"));
    let output = client(&app, &["deny", &denied, "--json"]).await;
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&output)).unwrap(),
        json!({"incident_id": denied, "decision": "denied"})
    );

    let incident = app.wait_final(&approved).await;
    assert_eq!(incident["state"], "recovered", "{incident:#}");
    let approval =
        incident["steps"].as_array().unwrap().iter().find(|s| s["outcome"] == "approved").unwrap();
    assert!(
        approval["detail"].as_str().unwrap().ends_with("reason: pool checked by hand"),
        "{approval:#}"
    );
    assert_eq!(app.wait_final(&denied).await["state"], "blocked");

    let output = client(&app, &["approve", &approved]).await;
    assert_eq!(code(&output), 1);
    assert_eq!(stderr(&output), format!("error: incident {approved} is recovered, not awaiting_approval: there is nothing to decide\n"));
}

/// What a new user does first: `serve` with no secrets configured, `send` an example, read it back, restart.
#[tokio::test]
async fn a_new_user_serves_sends_and_reads_back_with_generated_credentials() {
    let home = tempfile::tempdir().unwrap();
    // Only the port is set (a free one); everything else is the built-in defaults, data in ./data.
    std::fs::write(home.path().join("healthset-responder.toml"), "listen = \"127.0.0.1:0\"\n")
        .unwrap();
    let binary = env!("CARGO_BIN_EXE_healthset-responder");
    let example =
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/alerts/activesync-ctp-transient.json");
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(binary)
            .args(args)
            .current_dir(home.path())
            .env_remove("HSR_ADMIN_TOKEN")
            .env_remove("HSR_WEBHOOK_SECRET")
            .output()
            .unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    let service = ServiceProcess::start(std::path::Path::new(""), Some(home.path()));
    let credentials = home.path().join("data").join("credentials.toml");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&credentials).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let (code, out, err) = cli(&["send", example]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("new_incident"), "{out}");
    let (code, out, _) = cli(&["alerts", "list", "--json"]);
    assert_eq!(code, 0);
    let alerts: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(alerts["alerts"].as_array().unwrap().len(), 1);
    assert_eq!(alerts["alerts"][0]["server"], "cas01.contoso.com");

    let generated = std::fs::read_to_string(&credentials).unwrap();
    let secret = generated
        .lines()
        .find_map(|l| l.strip_prefix("webhook_secret = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let token = generated
        .lines()
        .find_map(|l| l.strip_prefix("admin_token = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    assert!(service.terminate().success(), "SIGTERM stops the service cleanly");

    let service = ServiceProcess::start(std::path::Path::new(""), Some(home.path()));
    let (code, out, _) = cli(&["incidents", "list", "--json"]);
    assert_eq!(code, 0);
    let incidents: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        incidents["incidents"].as_array().unwrap().len(),
        1,
        "the incident survived the restart"
    );
    assert_eq!(
        incidents["incidents"][0]["state"], "blocked",
        "an empty inventory blocks automation: the safe default"
    );
    let log = service.log.lock().unwrap().clone();
    assert!(log.contains("credentials.toml"), "the log names the credentials file: {log}");
    assert!(!log.contains(&secret) && !log.contains(&token), "no secret in the log");
    assert!(service.terminate().success());
}

#[tokio::test]
async fn operators_silence_a_server_from_the_command_line() {
    let app = spawn_app_with(INVENTORY).await;
    let added = client(
        &app,
        &[
            "silences",
            "add",
            "CAS01.contoso.com",
            "--until",
            "2h",
            "--reason",
            "patching CU23",
            "--json",
        ],
    )
    .await;
    assert_eq!(code(&added), 0, "{}", stderr(&added));
    let silence: Value = serde_json::from_str(&stdout(&added)).unwrap();
    assert_eq!(silence["server"], "cas01.contoso.com");
    let listed = client(&app, &["silences", "list"]).await;
    assert!(
        stdout(&listed).contains("cas01.contoso.com") && stdout(&listed).contains("patching CU23"),
        "{}",
        stdout(&listed)
    );
    let answer: Value = app
        .post_signed("/v1/alerts", &native("cas01.contoso.com", "ActiveSyncCTPMonitor", "x"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["alerts"][0]["disposition"], "suppressed");

    let bad = client(&app, &["silences", "add", "cas01.contoso.com", "--until", "whenever"]).await;
    assert_eq!(code(&bad), 2, "a bad --until is a usage error");
    assert!(stderr(&bad).contains("--until"), "{}", stderr(&bad));

    let deleted = client(&app, &["silences", "delete", silence["id"].as_str().unwrap()]).await;
    assert_eq!(code(&deleted), 0, "{}", stderr(&deleted));
    assert!(stdout(&client(&app, &["silences", "list"]).await).contains("no silences in force"));
}

#[tokio::test]
async fn the_demo_runs_every_scenario_to_its_end_and_exits_0() {
    let app = TestApp::attached("http://127.0.0.1:9");
    let output = run(&app, &["demo"], &[]).await;
    let text = stdout(&output);
    assert_eq!(code(&output), 0, "stdout:\n{text}\nstderr:\n{}", stderr(&output));
    let endings: Vec<(&str, &str)> = text
        .split("\n== ")
        .skip(1)
        .map(|scenario| {
            let mut lines = scenario.lines();
            let what = lines.next().unwrap();
            let state = lines.next().unwrap().rsplit(": ").next().unwrap();
            (what, state)
        })
        .collect();
    assert_eq!(
        endings,
        [
            ("a transient alert", "TRANSIENT"),
            ("recovery by app pool recycle", "RECOVERED"),
            ("a CTP alert fixed on the _Mbx: Mailbox server", "RECOVERED"),
            ("a Mailbox restart with database failover and failback", "RECOVERED"),
            ("RequestsQueuedGt500 recovered after a settle wait", "RECOVERED"),
            ("an escalation after every remedy", "ESCALATED"),
            ("no documented recovery: verify, then escalate", "ESCALATED"),
            ("a server in maintenance is left alone", "SUPPRESSED"),
        ],
        "{text}"
    );
    assert!(text.contains("escalation emails (2), written to "), "{text}");
}

#[tokio::test]
async fn check_config_says_what_each_servers_steps_connect_to() {
    let app = TestApp::attached("http://127.0.0.1:9");
    let config = app.data_dir.path().join("healthset-responder.toml");
    std::fs::write(
        &config,
        "[[servers]]\nname = \"cas01.contoso.com\"\nrole = \"cas\"\n\
         [[servers]]\nname = \"mbx01.contoso.com\"\nrole = \"mailbox\"\nconnection_uri = \"http://cas01.contoso.com/PowerShell/\"\n\
         [executor]\nkind = \"powershell\"\nconnection_uri = \"https://{server}/PowerShell/\"\n",
    )
    .unwrap();
    let output = run(&app, &["check-config", "--config", config.to_str().unwrap()], &[]).await;
    let text = stdout(&output);
    assert_eq!(code(&output), 0, "{text}{}", stderr(&output));
    assert!(
        text.contains(
            "  cas01.contoso.com: Exchange steps connect to https://cas01.contoso.com/PowerShell/"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "  mbx01.contoso.com: Exchange steps connect to http://cas01.contoso.com/PowerShell/; IIS and restart steps to mbx01.contoso.com over WinRM"
        ),
        "a Mailbox-only server's own endpoint: {text}"
    );

    // One management endpoint for every server: no {server} in it.
    std::fs::write(&config, "[[servers]]\nname = \"mbx01.contoso.com\"\nrole = \"mailbox\"\n[executor]\nkind = \"powershell\"\nconnection_uri = \"http://ex-mgmt.contoso.com/PowerShell/\"\n").unwrap();
    let output = run(&app, &["check-config", "--config", config.to_str().unwrap()], &[]).await;
    assert!(
        stdout(&output).contains(
            "mbx01.contoso.com: Exchange steps connect to http://ex-mgmt.contoso.com/PowerShell/"
        ),
        "{}",
        stdout(&output)
    );

    std::fs::write(&config, "[[servers]]\nname = \"mbx01.contoso.com\"\nrole = \"mailbox\"\nconnection_uri = \"mbx01/PowerShell\"\n").unwrap();
    let output = run(&app, &["check-config", "--config", config.to_str().unwrap()], &[]).await;
    assert_eq!(code(&output), 2);
    assert!(
        stderr(&output).contains(
            "servers[0].connection_uri: \"mbx01/PowerShell\" is not an http:// or https:// URL"
        ),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn check_config_names_the_store_without_its_password() {
    let app = TestApp::attached("http://127.0.0.1:9");
    let config = app.data_dir.path().join("healthset-responder.toml");
    std::fs::write(&config, format!("data_dir = {:?}\n", app.data_dir.path().join("data")))
        .unwrap();
    let output = run(&app, &["check-config", "--config", config.to_str().unwrap()], &[]).await;
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let sqlite = format!("  store: SQLite in {}", app.data_dir.path().join("data").display());
    assert!(stdout(&output).contains(&sqlite), "{}", stdout(&output));

    std::fs::write(&config, "[store]\nbackend = \"postgres\"\nlease = \"45s\"\n").unwrap();
    let url = [("HSR_STORE_URL", "postgres://responder:s3cret@db01.contoso.com:5433/healthset")];
    let output = run(&app, &["check-config", "--config", config.to_str().unwrap()], &url).await;
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("  store: PostgreSQL responder@db01.contoso.com:5433/healthset, shared with other instances; claims last 45s unrenewed"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "the password is never printed: {text}");

    std::fs::write(&config, "[store]\nbackend = \"postgres\"\n").unwrap();
    let output = run(&app, &["check-config", "--config", config.to_str().unwrap()], &[]).await;
    assert_eq!(code(&output), 2);
    assert!(
        stderr(&output)
            .contains("store.url: is needed for backend = \"postgres\" (or set HSR_STORE_URL)"),
        "{}",
        stderr(&output)
    );
}

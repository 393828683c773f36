//! Process-level tests of the PowerShell executor: every action's script goes through a real child process, the
//! stand-in shell (`tests/stand-in-pwsh`, built once per test run as the example `stand-in-pwsh`), which plays
//! Exchange servers from a scenario file and logs every script it receives.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use healthset_responder::config::{Dur, ExecutorConfig, ExecutorKind};
use healthset_responder::domain::{AppPool, HealthSetPattern, Monitor, ServerName, ServiceName};
use healthset_responder::executor::powershell::PowerShell;
use healthset_responder::executor::{Action, ProbeRef, Until};
use healthset_responder::incident::Outcome;

const RESTART_TIMEOUT: Duration = Duration::from_secs(1800);

/// The stand-in's executable, built on first use. Cargo names the file it built, whatever the target directory
/// (`CARGO_TARGET_DIR` included) or profile.
fn stand_in() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let output = std::process::Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--locked", "--example", "stand-in-pwsh", "--message-format", "json-render-diagnostics"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("cargo starts");
        assert!(output.status.success(), "building the stand-in failed");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|message| message["reason"] == "compiler-artifact" && message["target"]["name"] == "stand-in-pwsh")
            .find_map(|message| message["executable"].as_str().map(PathBuf::from))
            .expect("cargo names the stand-in's executable")
    })
}

/// A scenario file, its state and log, in a directory of its own.
struct World {
    _dir: tempfile::TempDir,
    scenario: PathBuf,
}

impl World {
    fn new(scenario: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scenario.toml");
        std::fs::write(&path, scenario).unwrap();
        World { _dir: dir, scenario: path }
    }

    fn config(&self, timeout: Duration) -> ExecutorConfig {
        let mut args = ExecutorConfig::default().args;
        args.extend(["--scenario".to_owned(), self.scenario.display().to_string()]);
        ExecutorConfig { kind: ExecutorKind::Powershell, program: stand_in().display().to_string(), args, timeout: Dur(timeout), ..ExecutorConfig::default() }
    }

    fn executor(&self, timeout: Duration) -> PowerShell {
        PowerShell::new(&self.config(timeout), RESTART_TIMEOUT).unwrap()
    }

    /// Every call the stand-in logged, in order.
    fn calls(&self) -> Vec<Value> {
        let mut log = self.scenario.clone().into_os_string();
        log.push(".log.jsonl");
        match std::fs::read_to_string(log) {
            Ok(text) => text.lines().map(|line| serde_json::from_str(line).unwrap()).collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn server(name: &str) -> ServerName {
    ServerName::parse(name).unwrap()
}

fn probe(name: &str, probe: &str) -> Action {
    Action::Probe { server: server(name), probe: ProbeRef::parse(probe).unwrap(), backend: None }
}

fn health(name: &str, pattern: &str) -> Action {
    Action::ServerHealth { server: server(name), health_sets: HealthSetPattern::parse(pattern).unwrap() }
}

/// Whether a process has ended: gone, or a zombie nobody has reaped yet.
fn ended(pid: u64) -> bool {
    if Path::new("/proc/self").exists() {
        return match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        };
    }
    let pid = libc::pid_t::try_from(pid).unwrap();
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) != 0 }
}

#[tokio::test]
async fn every_action_runs_its_script_through_the_shell_and_reads_the_answer() {
    let world = World::new(
        r#"
        [servers."cas01.contoso.com"]
        fault = "iis_reset"
        unhealthy_monitors = ["ActiveSyncCTPMonitor"]
        mailbox = "mbx01.contoso.com"

        [servers."MBX01.contoso.com"]
        fault = "restart"
        unhealthy_monitors = ["ActiveSyncDeepTestMonitor"]
        active_copies = 4
        copies_moved_per_failover = 2
        passive_copies = 3
        ma_log = [
            { id = "RecycleApplicationPool", resource = "MSExchangeSyncAppPool", ago_ms = 600000 },
            { id = "RestartService", resource = "MSExchangeIMAP4BE", requestor = "ImapDeepTestRestartService", ago_ms = 60000, finished = false },
            { id = "ForceReboot", resource = "MBX01", requestor = "ActiveSyncDeepTestForceReboot", ago_ms = 7200000 },
        ]
        "#,
    );
    let executor = world.executor(Duration::from_secs(20));
    let (cas, mbx) = ("cas01.contoso.com", "mbx01.contoso.com");
    let ctp = "ActiveSync\\ActiveSyncCTPProbe";
    let steps: Vec<(Action, Outcome, &str)> = vec![
        (probe(cas, ctp), Outcome::Failed, "ActiveSync\\ActiveSyncCTPProbe: ResultType Failed; Error: Error occurred:"),
        (health(cas, "ActiveSync*"), Outcome::Unhealthy, "Unhealthy: ActiveSyncCTPMonitor"),
        (
            Action::RecycleAppPool {
                server: server(cas),
                app_pools: vec![AppPool::parse("MSExchangeSyncAppPool").unwrap(), AppPool::parse("MSExchangeOWACalendarAppPool").unwrap()],
            },
            Outcome::Done,
            "MSExchangeSyncAppPool, MSExchangeOWACalendarAppPool recycled on cas01.contoso.com",
        ),
        (probe(cas, ctp), Outcome::Failed, "_Mbx:mbx01.contoso.com_"),
        (
            Action::IisReset { server: server(cas), noforce: true },
            Outcome::Done,
            "iisreset /noforce on cas01.contoso.com: Internet services successfully restarted",
        ),
        (probe(cas, ctp), Outcome::Succeeded, "ActiveSync\\ActiveSyncCTPProbe: ResultType Succeeded"),
        (health(cas, "ActiveSync"), Outcome::Healthy, "no ActiveSync monitor Unhealthy on cas01.contoso.com (3 reported)"),
        (health(mbx, "ActiveSync*"), Outcome::Unhealthy, "Unhealthy: ActiveSyncDeepTestMonitor"),
        (Action::ComponentState { server: server(mbx) }, Outcome::Active, "ServerWideOffline is Active on mbx01.contoso.com"),
        (
            Action::DisableActivation { server: server(mbx), attempt: 1 },
            Outcome::Done,
            "DatabaseCopyActivationDisabledAndMoveNow set to True on mbx01.contoso.com",
        ),
        (Action::CopyStatus { server: server(mbx) }, Outcome::ActiveCopies, "Mounted: 2, Healthy: 5; not passive: Mounted"),
        (Action::DisableActivation { server: server(mbx), attempt: 2 }, Outcome::Done, "asked to move again"),
        (Action::CopyStatus { server: server(mbx) }, Outcome::NoActiveCopies, "Healthy: 7"),
        (Action::RestartServer { server: server(mbx) }, Outcome::Done, "mbx01.contoso.com restarted and answering PowerShell remoting"),
        (probe(mbx, "ActiveSync.Protocol\\ActiveSyncDeepTestProbe"), Outcome::Succeeded, "ResultType Succeeded"),
        (Action::EnableActivation { server: server(mbx) }, Outcome::Done, "DatabaseCopyActivationDisabledAndMoveNow set to False on mbx01.contoso.com"),
        (
            Action::RestartService { server: server(mbx), service: ServiceName::parse("MSExchangeIMAP4BE").unwrap() },
            Outcome::Done,
            "MSExchangeIMAP4BE restarted on mbx01.contoso.com; Status Running",
        ),
        // Within the hour: the recycle, not the unfinished service restart's start event, nor the reboot of two hours ago.
        (
            Action::MaHistory { server: server(mbx), lookback: Duration::from_secs(3600) },
            Outcome::Found,
            "in the last 1h: RecycleApplicationPool MSExchangeSyncAppPool by ActiveSyncDeepTestRecycleAppPool, finished ",
        ),
        (
            Action::MaHistory { server: server(cas), lookback: Duration::from_secs(3600) },
            Outcome::NoneFound,
            "no finished Managed Availability recovery action",
        ),
    ];
    let mut reports = Vec::new();
    for (action, outcome, detail) in &steps {
        let report = executor.run(action).await;
        assert_eq!(report.outcome, *outcome, "{action:?}: {}", report.detail);
        assert!(report.detail.contains(detail), "{action:?}: {:?} lacks {detail:?}", report.detail);
        reports.push(report);
    }
    assert_eq!(reports[1].unhealthy, [Monitor::parse("ActiveSyncCTPMonitor").unwrap()]);
    assert_eq!(reports[7].unhealthy, [Monitor::parse("ActiveSyncDeepTestMonitor").unwrap()]);
    let found = &reports[steps.len() - 2].ma_actions;
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].ended_at < chrono::Utc::now() - chrono::Duration::minutes(5), "the event's own end time: {found:?}");

    let wait = executor.run(&Action::Wait { server: server(cas), duration: Duration::from_secs(600), until: Until::Elapsed }).await;
    assert_eq!((wait.outcome, wait.command), (Outcome::Done, None), "a wait starts no shell");

    let calls = world.calls();
    assert_eq!(calls.len(), steps.len(), "one shell per action");
    for ((action, ..), (call, report)) in steps.iter().zip(calls.iter().zip(&reports)) {
        assert_eq!((call["action"].as_str(), call["server"].as_str()), (Some(action.kind().as_str()), Some(action.server().as_str())));
        let received = call["script"].as_str().unwrap();
        assert_eq!(received, executor.command(action), "command() is the script the shell received");
        assert_eq!(report.command.as_deref(), Some(received), "the report carries the script that ran");
    }

    // Every value arrives as a quoted literal.
    let script = |i: usize| calls[i]["script"].as_str().unwrap().to_owned();
    for expected in [
        "-ConnectionUri 'http://cas01.contoso.com/PowerShell/' -Authentication 'Kerberos'",
        "Invoke-MonitoringProbe 'ActiveSync\\ActiveSyncCTPProbe' -Server 'cas01.contoso.com' |",
    ] {
        assert!(script(0).contains(expected), "{expected:?} not in {}", script(0));
    }
    assert!(script(1).contains("Get-ServerHealth -Identity 'cas01.contoso.com' |") && script(1).contains("$_.HealthSetName -like 'ActiveSync*'"));
    assert!(
        script(2).contains(
            "Invoke-Command -ComputerName 'cas01.contoso.com' -Authentication 'Kerberos' -ArgumentList (,[string[]]@('MSExchangeSyncAppPool', 'MSExchangeOWACalendarAppPool')) -ScriptBlock {"
        ),
        "{}",
        script(2)
    );
    assert!(script(4).contains("-ArgumentList 'true'"), "iisreset /noforce only, as the page says");
    let last = calls.len() - 1;
    assert!(script(last - 2).contains("-ArgumentList 'MSExchangeIMAP4BE'") && script(last - 2).contains("Restart-Service -Name $name -Force"));
    assert!(
        script(last - 1).contains("Get-WinEvent -ComputerName 'mbx01.contoso.com' -FilterHashtable $filter")
            && script(last - 1)
                .contains("LogName = 'Microsoft-Exchange-ManagedAvailability/RecoveryActionResults'; StartTime = (Get-Date).AddSeconds(-[int]'3600')"),
        "{}",
        script(last - 1)
    );
    assert!(!script(2).contains("New-PSSession"), "recycling needs no Exchange session");
    assert!(script(4).contains("iisreset /noforce") && script(4).contains("$LASTEXITCODE"));
    assert!(script(8).contains("Get-ServerComponentState -Identity 'mbx01.contoso.com' -Component ServerWideOffline"));
    assert!(script(9).contains("Set-MailboxServer -Identity 'mbx01.contoso.com' -DatabaseCopyActivationDisabledAndMoveNow $true"));
    assert!(
        script(9).find("Get-MailboxServer -Identity 'mbx01.contoso.com'").unwrap() < script(9).find("Set-MailboxServer -Identity").unwrap(),
        "disabling activation reads how it was before changing it"
    );
    assert!(script(10).contains("Get-MailboxDatabaseCopyStatus -Server 'mbx01.contoso.com' | Group-Object Status | Select-Object Name, Count"));
    assert!(script(13).contains("Restart-Computer -ComputerName 'mbx01.contoso.com' -Force -Wait -For PowerShell -Timeout '1800' -Delay 5"));
    assert!(script(15).contains("-DatabaseCopyActivationDisabledAndMoveNow $false"));
    assert!(
        script(0).contains("Import-PSSession $session -CommandName Invoke-MonitoringProbe -DisableNameChecking"),
        "only the cmdlets a step uses are imported"
    );
    assert!(script(9).contains("-CommandName Get-MailboxServer, Set-MailboxServer, Move-ActiveMailboxDatabase"));
    assert!(!script(9).contains("Move-ActiveMailboxDatabase -Server") || script(9).contains("if ([int]'1' -gt 1)"), "the first round only disables");
    assert!(
        script(11).contains("if ([int]'2' -gt 1) { Move-ActiveMailboxDatabase -Server 'mbx01.contoso.com' -Confirm:$false"),
        "a later round moves the copies explicitly"
    );
}

#[tokio::test]
async fn a_hung_shell_is_killed_with_everything_it_started() {
    let world = World::new(
        r#"
        [servers."cas01.contoso.com".actions]
        probe = { hang = true }
        "#,
    );
    let executor = world.executor(Duration::from_secs(1));
    let started = Instant::now();
    let report = executor.run(&probe("cas01.contoso.com", "ActiveSync\\ActiveSyncCTPProbe")).await;
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_eq!(report.outcome, Outcome::Error);
    assert!(report.detail.starts_with("timed out after 1s; the shell and everything it started were killed"), "{}", report.detail);
    assert!(report.command.is_some_and(|c| c.contains("Invoke-MonitoringProbe")));

    let call = &world.calls()[0];
    let (shell, grandchild) = (call["pid"].as_u64().unwrap(), call["child_pid"].as_u64().unwrap());
    let deadline = Instant::now() + Duration::from_secs(3);
    while !(ended(shell) && ended(grandchild)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ended(shell), "the shell {shell} still runs");
    assert!(ended(grandchild), "the shell's child {grandchild} still runs");
}

#[tokio::test]
async fn output_that_is_not_json_and_failing_scripts_are_errors() {
    let world = World::new(
        r#"
        [servers."cas01.contoso.com".actions]
        iis_reset = { garbage = true }
        server_health = { exit_code = 3, stderr = "Get-ServerHealth : The WinRM client cannot process the request." }

        [actions]
        disable_activation = { exit_code = 1 }
        "#,
    );
    let executor = world.executor(Duration::from_secs(20));
    let garbage = executor.run(&Action::IisReset { server: server("cas01.contoso.com"), noforce: false }).await;
    assert_eq!(garbage.outcome, Outcome::Error);
    assert!(garbage.detail.starts_with("the script's standard output is not JSON"), "{}", garbage.detail);

    let failed = executor.run(&health("cas01.contoso.com", "ActiveSync*")).await;
    assert_eq!(
        (failed.outcome, failed.detail.as_str()),
        (Outcome::Error, "the script exited with code 3: Get-ServerHealth : The WinRM client cannot process the request.")
    );

    let defaulted = executor.run(&Action::DisableActivation { server: server("mbx07.contoso.com"), attempt: 1 }).await;
    assert_eq!((defaulted.outcome, defaulted.detail.as_str()), (Outcome::Error, "the script exited with code 1: the stand-in was told to fail"));
}

#[tokio::test]
async fn a_shell_that_cannot_start_is_an_error() {
    let world = World::new("");
    let config = ExecutorConfig { program: "/nonexistent/pwsh".into(), ..world.config(Duration::from_secs(5)) };
    let report = PowerShell::new(&config, RESTART_TIMEOUT).unwrap().run(&Action::IisReset { server: server("cas01"), noforce: false }).await;
    assert_eq!(report.outcome, Outcome::Error);
    assert!(report.detail.starts_with("could not run /nonexistent/pwsh: "), "{}", report.detail);
}

#[tokio::test]
async fn an_administrators_template_replaces_the_builtin_script_and_is_quoted_the_same() {
    let world = World::new(
        r#"
        [servers."mbx01.contoso.com"]
        active_copies = 1
        "#,
    );
    let mut config = world.config(Duration::from_secs(20));
    config.connection_uri = "https://{server}/PowerShell/'; Remove-Item C:\\ -Recurse; '".into();
    config.authentication = "negotiate".into();
    config.scripts.insert(
        "copy_status".into(),
        "$s = New-PSSession -ConfigurationName Microsoft.Exchange -ConnectionUri {connection_uri} -Authentication {authentication}\n\n\
         Import-PSSession $s | Out-Null\n\
         Get-MailboxDatabaseCopyStatus -Server {server} | Group-Object Status | Select-Object Name, Count | ConvertTo-Json -Compress"
            .into(),
    );
    let executor = PowerShell::new(&config, RESTART_TIMEOUT).unwrap();
    let action = Action::CopyStatus { server: server("mbx01.contoso.com") };
    let report = executor.run(&action).await;
    assert_eq!((report.outcome, report.detail.as_str()), (Outcome::ActiveCopies, "Mounted: 1; not passive: Mounted"));
    let expected = "& {\n\
        $s = New-PSSession -ConfigurationName Microsoft.Exchange -ConnectionUri 'https://mbx01.contoso.com/PowerShell/''; Remove-Item C:\\ -Recurse; ''' -Authentication 'Negotiate'\n\
        Import-PSSession $s | Out-Null\n\
        Get-MailboxDatabaseCopyStatus -Server 'mbx01.contoso.com' | Group-Object Status | Select-Object Name, Count | ConvertTo-Json -Compress\n\
        }\n\n";
    assert_eq!(world.calls()[0]["script"].as_str(), Some(expected));
    assert_eq!(executor.command(&action), expected);
}

#[test]
fn settings_are_checked_naming_the_key() {
    let refusal = |config: &ExecutorConfig| PowerShell::new(config, RESTART_TIMEOUT).err().map(|e| e.to_string());
    assert_eq!(refusal(&ExecutorConfig::default()), None);
    let settings: &[(fn(&mut ExecutorConfig), &str)] = &[
        (|c| c.program = " ".into(), "executor.program: is empty"),
        (
            |c| c.connection_uri = "cas01.contoso.com/PowerShell/".into(),
            "executor.connection_uri: \"cas01.contoso.com/PowerShell/\" is not an http:// or https:// URL",
        ),
        (|c| c.connection_uri = "https:///PowerShell/".into(), "executor.connection_uri: \"https:///PowerShell/\" names no host"),
        (|c| c.timeout = Dur(Duration::ZERO), "executor.timeout: must be more than zero"),
        (|c| c.authentication = "Kerberos'".into(), "executor.authentication: \"Kerberos'\" is not one of Default, Basic"),
    ];
    let scripts = [
        ("prob", "{server}", "executor.scripts.prob: unknown action \"prob\"; scripts are for probe, server_health"),
        ("wait", "{server}", "executor.scripts.wait: unknown action \"wait\""),
        ("probe", "Invoke-MonitoringProbe {probe} -Server {sever}", "executor.scripts.probe: {sever} is not a placeholder of probe"),
        ("restart_server", "Restart-Computer -ComputerName cas01", "executor.scripts.restart_server: never uses {server}"),
    ];
    let configs = settings
        .iter()
        .map(|(change, expected)| {
            let mut config = ExecutorConfig::default();
            change(&mut config);
            (config, *expected)
        })
        .chain(scripts.iter().map(|(key, text, expected)| {
            let mut config = ExecutorConfig::default();
            config.scripts.insert(key.to_string(), text.to_string());
            (config, *expected)
        }));
    for (config, expected) in configs {
        let error = refusal(&config).expect("refused");
        assert!(error.starts_with(expected), "{error}");
    }
}

/// The service configured with the PowerShell executor, its shell being the stand-in playing `scenario`.
async fn service_with(world: &World, timeout: &str) -> crate::helpers::TestApp {
    crate::helpers::spawn_app_with(&world.service_toml(crate::helpers::INVENTORY, &format!("timeout = \"{timeout}\"\n"), "settle_wait = \"50ms\"\n")).await
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
    world.calls().iter().map(|call| format!("{} {}", call["action"].as_str().unwrap(), call["server"].as_str().unwrap())).collect()
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
            let checks: usize = detail.rsplit_once(" (").and_then(|(_, n)| n.split(' ').next()?.parse().ok()).expect("the number of checks");
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
        assert_eq!(received(&world), journaled(&incident), "{alert}: the shell received exactly the journaled steps, in order");
        // Every script but component_state's (a wait for an answer runs those too) is a journaled step's command.
        let calls = world.calls();
        let scripts: Vec<&Value> = calls.iter().filter(|call| call["action"] != "component_state").map(|call| &call["script"]).collect();
        let commands: Vec<&Value> =
            incident["steps"].as_array().unwrap().iter().filter(|s| s["action"] != "wait" && s["action"] != "component_state").map(|s| &s["command"]).collect();
        assert_eq!(scripts, commands, "the journal records the exact script the shell ran");
        for call in &calls {
            assert!(call["script"].as_str().unwrap().contains(&format!("'{}'", call["server"].as_str().unwrap())), "servers reach scripts as quoted literals");
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
            assert!(!received.iter().any(|call| call.starts_with(action)), "{scenario}: the shell never ran {action}: {received:?}");
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
        assert!(incident["reason"].as_str().unwrap().contains(reason), "{scenario}: {}", incident["reason"]);
        assert_eq!(incident["notifications"].as_array().unwrap().len(), 1, "a blocked incident escalates");
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
    for server in ["cas01.contoso.com'; Restart-Computer -Force; '", "cas01$(Remove-Item C:\\ -Recurse)", "cas01.contoso.com\u{2019}"] {
        let body = serde_json::json!({"health_set": "ActiveSync", "server": server, "monitor": "ActiveSyncCTPMonitor"}).to_string();
        assert_eq!(app.post_signed("/v1/alerts", &body).await.status(), 422, "{server}");
    }
    let body = serde_json::json!({"health_set": "ActiveSync", "server": "cas01.contoso.com", "monitor": "ActiveSyncCTPMonitor", "message": "_Mbx:mbx01.contoso.com'; Stop-Computer"}).to_string();
    let incident = app.wait_final(&app.open(&body).await).await;
    assert_eq!(incident["mailbox_hint"], "mbx01.contoso.com", "the hint ends at the first character that cannot be in a host name");
    assert!(world.calls().iter().all(|call| !call["script"].as_str().unwrap().contains("Stop-Computer")));
}

#[tokio::test]
async fn a_restart_the_responder_was_killed_during_waits_for_the_server_to_answer_again() {
    let world = World::new(
        "[servers.\"mbx02.contoso.com\"]\nfault = \"restart\"\nboot_time_ms = 4000\nunhealthy_monitors = [\"ActiveSyncDeepTestMonitor\"]\n\
         [servers.\"mbx02.contoso.com\".actions]\nrestart_server = { delay_ms = 1500 }\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let toml = world.service_toml(crate::helpers::INVENTORY, "timeout = \"1m\"\n", "poll_interval = \"100ms\"\nwarm_up = \"0s\"\nrestart_timeout = \"30s\"\n");
    std::fs::write(&config, format!("{}\n{toml}", crate::helpers::base_config(&dir.path().join("data")))).unwrap();

    let mut process = crate::helpers::ServiceProcess::start(&config, None);
    let app = crate::helpers::TestApp::attached(&process.url);
    let id =
        app.open(&serde_json::json!({"health_set": "ActiveSync", "server": "mbx02.contoso.com", "monitor": "ActiveSyncDeepTestMonitor"}).to_string()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, incident) = app.admin_get(&format!("/v1/incidents/{id}")).await;
        if incident["steps"].as_array().unwrap().iter().any(|s| s["action"] == "restart_server" && s["finished_at"].is_null()) {
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
    let checks: usize = detail.rsplit_once(" (").and_then(|(_, n)| n.split(' ').next()?.parse().ok()).unwrap();
    assert!(detail.starts_with("mbx02.contoso.com answered after") && checks >= 2, "it waited for the booting server: {detail}");
    assert_eq!((steps[at + 2]["action"].as_str(), steps[at + 2]["outcome"].as_str()), (Some("probe"), Some("succeeded")), "{incident:#}");
    assert_eq!(steps.last().unwrap()["action"], "enable_activation");
}

#[tokio::test]
async fn a_storm_of_alerts_never_runs_more_shells_than_max_parallel() {
    const SERVERS: usize = 50;
    const MAX_PARALLEL: usize = 4;
    let mut inventory = String::new();
    let mut scenario = String::new();
    for n in 0..SERVERS / 2 {
        inventory.push_str(&format!("[[servers]]\nname = \"cas{n:02}.contoso.com\"\nrole = \"cas\"\ngroup = \"array{}\"\n", n / 5));
        inventory.push_str(&format!("[[servers]]\nname = \"mbx{n:02}.contoso.com\"\nrole = \"mailbox\"\ngroup = \"dag{}\"\n", n % 5));
        if n % 5 == 0 {
            scenario.push_str(&format!("[servers.\"cas{n:02}.contoso.com\"]\nfault = \"app_pool\"\n"));
        }
    }
    let world = World::new(&scenario);
    let app = crate::helpers::spawn_app_with(&world.service_toml(&inventory, &format!("max_parallel = {MAX_PARALLEL}\ntimeout = \"1m\"\n"), "")).await;

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
                let response = crate::helpers::post_signed_to(&http, &url, &body.to_string(), &id, ts, crate::helpers::SECRET).await;
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
    assert!(states["recovered"] >= 5 && states["transient"] >= SERVERS, "each faulted CAS recovered once: {states:?}");
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
        assert!(Instant::now() < deadline, "incident {id} still {}: {incident:#}", incident["state"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(unix)]
#[tokio::test]
async fn the_shell_never_sees_the_services_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("shell-environment.txt");
    // A shell that writes down its environment, then reports a probe that passed.
    let script = format!("env > {}; cat > /dev/null; printf '{{\"ResultType\":\"Succeeded\"}}'", dump.display());
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
    let incident = app.open(&crate::helpers::native("cas01.contoso.com", "ActiveSyncCTPMonitor", "probe failed")).await;
    assert_eq!(app.wait_final(&incident).await["state"], "transient");
    let seen = std::fs::read_to_string(&dump).unwrap();
    assert!(!seen.contains("HSR_") && !seen.contains("from-the-environment") && !seen.contains("c2VjcmV0"), "{seen}");
    assert!(!seen.contains("DATABASE_PASSWORD"), "a variable not listed stays out: {seen}");
    assert!(seen.contains("HTTPS_PROXY=http://proxy.contoso.com:3128"), "a listed variable is passed: {seen}");
    assert!(seen.lines().any(|l| l.starts_with("PATH=")), "the basics are there: {seen}");
    assert!(service.terminate().success());
}

//! Process-level tests of the PowerShell executor: every action's script goes through a real child process, the
//! stand-in shell (`tests/stand-in-pwsh`, built once per test run as the example `stand-in-pwsh`), which plays
//! Exchange servers from a scenario file and logs every script it receives.

mod end_to_end;

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
            .args([
                "build",
                "--quiet",
                "--locked",
                "--example",
                "stand-in-pwsh",
                "--message-format",
                "json-render-diagnostics",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("cargo starts");
        assert!(output.status.success(), "building the stand-in failed");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|message| {
                message["reason"] == "compiler-artifact"
                    && message["target"]["name"] == "stand-in-pwsh"
            })
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
        ExecutorConfig {
            kind: ExecutorKind::Powershell,
            program: stand_in().display().to_string(),
            args,
            timeout: Dur(timeout),
            ..ExecutorConfig::default()
        }
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
    Action::ServerHealth {
        server: server(name),
        health_sets: HealthSetPattern::parse(pattern).unwrap(),
    }
}

/// Whether a process has ended: gone, or a zombie nobody has reaped yet.
fn ended(pid: u64) -> bool {
    if Path::new("/proc/self").exists() {
        return match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => {
                stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
            }
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
    assert!(
        found[0].ended_at < chrono::Utc::now() - chrono::Duration::minutes(5),
        "the event's own end time: {found:?}"
    );

    let wait = executor
        .run(&Action::Wait {
            server: server(cas),
            duration: Duration::from_secs(600),
            until: Until::Elapsed,
        })
        .await;
    assert_eq!((wait.outcome, wait.command), (Outcome::Done, None), "a wait starts no shell");

    let calls = world.calls();
    assert_eq!(calls.len(), steps.len(), "one shell per action");
    for ((action, ..), (call, report)) in steps.iter().zip(calls.iter().zip(&reports)) {
        assert_eq!(
            (call["action"].as_str(), call["server"].as_str()),
            (Some(action.kind().as_str()), Some(action.server().as_str()))
        );
        let received = call["script"].as_str().unwrap();
        assert_eq!(
            received,
            executor.command(action),
            "command() is the script the shell received"
        );
        assert_eq!(
            report.command.as_deref(),
            Some(received),
            "the report carries the script that ran"
        );
    }

    // Every value arrives as a quoted literal.
    let script = |i: usize| calls[i]["script"].as_str().unwrap().to_owned();
    for expected in [
        "-ConnectionUri 'http://cas01.contoso.com/PowerShell/' -Authentication 'Kerberos'",
        "Invoke-MonitoringProbe 'ActiveSync\\ActiveSyncCTPProbe' -Server 'cas01.contoso.com' |",
    ] {
        assert!(script(0).contains(expected), "{expected:?} not in {}", script(0));
    }
    assert!(
        script(1).contains("Get-ServerHealth -Identity 'cas01.contoso.com' |")
            && script(1).contains("$_.HealthSetName -like 'ActiveSync*'")
    );
    assert!(
        script(2).contains(
            "Invoke-Command -ComputerName 'cas01.contoso.com' -Authentication 'Kerberos' -ArgumentList (,[string[]]@('MSExchangeSyncAppPool', 'MSExchangeOWACalendarAppPool')) -ScriptBlock {"
        ),
        "{}",
        script(2)
    );
    assert!(script(4).contains("-ArgumentList 'true'"), "iisreset /noforce only, as the page says");
    let last = calls.len() - 1;
    assert!(
        script(last - 2).contains("-ArgumentList 'MSExchangeIMAP4BE'")
            && script(last - 2).contains("Restart-Service -Name $name -Force")
    );
    assert!(
        script(last - 1).contains("Get-WinEvent -ComputerName 'mbx01.contoso.com' -FilterHashtable $filter")
            && script(last - 1)
                .contains("LogName = 'Microsoft-Exchange-ManagedAvailability/RecoveryActionResults'; StartTime = (Get-Date).AddSeconds(-[int]'3600')"),
        "{}",
        script(last - 1)
    );
    assert!(!script(2).contains("New-PSSession"), "recycling needs no Exchange session");
    assert!(script(4).contains("iisreset /noforce") && script(4).contains("$LASTEXITCODE"));
    assert!(script(8).contains(
        "Get-ServerComponentState -Identity 'mbx01.contoso.com' -Component ServerWideOffline"
    ));
    assert!(script(9).contains("Set-MailboxServer -Identity 'mbx01.contoso.com' -DatabaseCopyActivationDisabledAndMoveNow $true"));
    assert!(
        script(9).find("Get-MailboxServer -Identity 'mbx01.contoso.com'").unwrap()
            < script(9).find("Set-MailboxServer -Identity").unwrap(),
        "disabling activation reads how it was before changing it"
    );
    assert!(script(10).contains("Get-MailboxDatabaseCopyStatus -Server 'mbx01.contoso.com' | Group-Object Status | Select-Object Name, Count"));
    assert!(script(13).contains("Restart-Computer -ComputerName 'mbx01.contoso.com' -Force -Wait -For PowerShell -Timeout '1800' -Delay 5"));
    assert!(script(15).contains("-DatabaseCopyActivationDisabledAndMoveNow $false"));
    assert!(
        script(0).contains(
            "Import-PSSession $session -CommandName Invoke-MonitoringProbe -DisableNameChecking"
        ),
        "only the cmdlets a step uses are imported"
    );
    assert!(script(9)
        .contains("-CommandName Get-MailboxServer, Set-MailboxServer, Move-ActiveMailboxDatabase"));
    assert!(
        !script(9).contains("Move-ActiveMailboxDatabase -Server")
            || script(9).contains("if ([int]'1' -gt 1)"),
        "the first round only disables"
    );
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
    assert!(
        report
            .detail
            .starts_with("timed out after 1s; the shell and everything it started were killed"),
        "{}",
        report.detail
    );
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
    let garbage = executor
        .run(&Action::IisReset { server: server("cas01.contoso.com"), noforce: false })
        .await;
    assert_eq!(garbage.outcome, Outcome::Error);
    assert!(
        garbage.detail.starts_with("the script's standard output is not JSON"),
        "{}",
        garbage.detail
    );

    let failed = executor.run(&health("cas01.contoso.com", "ActiveSync*")).await;
    assert_eq!(
        (failed.outcome, failed.detail.as_str()),
        (Outcome::Error, "the script exited with code 3: Get-ServerHealth : The WinRM client cannot process the request.")
    );

    let defaulted = executor
        .run(&Action::DisableActivation { server: server("mbx07.contoso.com"), attempt: 1 })
        .await;
    assert_eq!(
        (defaulted.outcome, defaulted.detail.as_str()),
        (Outcome::Error, "the script exited with code 1: the stand-in was told to fail")
    );
}

#[tokio::test]
async fn a_shell_that_cannot_start_is_an_error() {
    let world = World::new("");
    let config = ExecutorConfig {
        program: "/nonexistent/pwsh".into(),
        ..world.config(Duration::from_secs(5))
    };
    let report = PowerShell::new(&config, RESTART_TIMEOUT)
        .unwrap()
        .run(&Action::IisReset { server: server("cas01"), noforce: false })
        .await;
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
    assert_eq!(
        (report.outcome, report.detail.as_str()),
        (Outcome::ActiveCopies, "Mounted: 1; not passive: Mounted")
    );
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
    let refusal = |config: &ExecutorConfig| {
        PowerShell::new(config, RESTART_TIMEOUT).err().map(|e| e.to_string())
    };
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
        (
            "prob",
            "{server}",
            "executor.scripts.prob: unknown action \"prob\"; scripts are for probe, server_health",
        ),
        ("wait", "{server}", "executor.scripts.wait: unknown action \"wait\""),
        (
            "probe",
            "Invoke-MonitoringProbe {probe} -Server {sever}",
            "executor.scripts.probe: {sever} is not a placeholder of probe",
        ),
        (
            "restart_server",
            "Restart-Computer -ComputerName cas01",
            "executor.scripts.restart_server: never uses {server}",
        ),
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

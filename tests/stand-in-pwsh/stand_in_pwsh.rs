//! A stand-in for `pwsh` in tests: it reads the script the PowerShell executor sends on standard input, recognises
//! the cmdlet, and answers as Exchange 2013 would through `ConvertTo-Json`, for servers a scenario file describes.
//!
//! It is built as the example `stand-in-pwsh` and never ships. It knows nothing of the product's code: it reads
//! scripts as PowerShell would (single-quoted literals with doubled quotes), so a quoting mistake in the product
//! shows up here as a wrong server or a refused script, not as a mirrored bug.
//!
//! Usage: `stand-in-pwsh [--scenario FILE] [--state FILE] [--log FILE] [any pwsh flags]`, or the environment
//! variables `STAND_IN_SCENARIO`, `STAND_IN_STATE`, `STAND_IN_LOG`. The state file (default: the scenario's path
//! with `.state.json` appended) keeps each server's faults, copies and restarts across the separate calls; the log
//! (default: the scenario's path with `.log.jsonl` appended) gets one JSON line per call:
//! `{"action": "probe", "server": "cas01.contoso.com", "script": "...", "pid": 123, "child_pid": null, "running": 2}`,
//! where `running` counts the stand-in processes alive at that moment, this one included (each keeps a file in the
//! directory named like the scenario with `.running` appended while it runs).
//!
//! Scenario (TOML, or JSON when the file name ends in `.json`); servers not named are healthy:
//!
//! ```toml
//! [servers."cas01.contoso.com"]
//! fault = "iis_reset"          # none | app_pool | iis_reset | restart | mailbox | never
//! unhealthy_monitors = ["ActiveSyncCTPMonitor"]
//! mailbox = "mbx01.contoso.com" # the _Mbx: server named in a failing probe's diagnostics header
//! active_copies = 0             # Mounted database copies; disable_activation moves copies_moved_per_failover
//! copies_moved_per_failover = 3
//! passive_copies = 0            # Healthy database copies
//! copy_states = { ServiceDown = 1 } # copies in other states; they never move
//! maintenance = false           # Get-ServerComponentState ServerWideOffline: Inactive when true
//! activation_disabled = false   # an administrator disabled database activation beforehand
//! move_time_ms = 0              # moved copies stay Mounted this long (moves are asynchronous)
//! warm_up_ms = 0                # after a remedy, probes fail this long
//! flaky_reads = 0               # the first N read-only calls fail as WinRM does, then it answers
//! iis_reset_downtime_ms = 0     # after an IISReset, read-only calls fail this long (the endpoint is down)
//! boot_time_ms = 0              # after a restart, every call fails this long (the server is starting)
//! service = "MSExchangeIMAP4BE" # the service whose restart clears a `service` fault (any, when unset)
//! ma_log = [{ id = "RecycleApplicationPool", resource = "MSExchangeSyncAppPool", ago_ms = 600000 }]
//!                               # Managed Availability's RecoveryActionResults log: each entry gives a start event
//!                               # and (unless finished = false) a Finished one; requestor and result are optional
//!
//! [servers."cas01.contoso.com".actions]   # how an action answers on this server, instead of normally
//! probe = { hang = true }                 # sleep forever, with a `sleep 1000` grandchild
//! iis_reset = { garbage = true }          # print something that is not JSON, exit 0
//! restart_server = { exit_code = 1, stderr = "Restart-Computer : access denied" }
//! copy_status = { delay_ms = 500 }        # answer normally, late
//!
//! [actions]                               # the same, for servers without their own
//! [health_sets]                           # monitor = health set, beyond the ActiveSync monitors it knows
//! ```
//!
//! A faulted server's probes fail, and `Get-ServerHealth` reports its unhealthy monitors, until the named action
//! has run on it; `mailbox` fails while another faulted server does; `never` is never fixed. Managed
//! Availability's log is only read here: what its entries did is the scenario's to describe with `fault`.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use healthset_responder::config::Fault;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Scenario {
    servers: BTreeMap<String, ServerScenario>,
    actions: BTreeMap<String, Behaviour>,
    health_sets: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ServerScenario {
    fault: Fault,
    unhealthy_monitors: Vec<String>,
    mailbox: Option<String>,
    active_copies: u32,
    copies_moved_per_failover: u32,
    passive_copies: u32,
    copy_states: BTreeMap<String, u32>,
    maintenance: bool,
    activation_disabled: bool,
    move_time_ms: i64,
    warm_up_ms: i64,
    flaky_reads: u32,
    iis_reset_downtime_ms: i64,
    boot_time_ms: i64,
    service: Option<String>,
    ma_log: Vec<MaEntry>,
    actions: BTreeMap<String, Behaviour>,
}

/// One recovery action in a server's Managed Availability log, `ago_ms` before the call that reads it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct MaEntry {
    id: String,
    #[serde(default)]
    resource: String,
    #[serde(default = "default_requestor")]
    requestor: String,
    ago_ms: i64,
    #[serde(default = "finished")]
    finished: bool,
    #[serde(default = "succeeded")]
    result: String,
}

fn default_requestor() -> String {
    "ActiveSyncDeepTestRecycleAppPool".into()
}

fn finished() -> bool {
    true
}

fn succeeded() -> String {
    "Succeeded".into()
}

impl Default for ServerScenario {
    fn default() -> Self {
        ServerScenario {
            fault: Fault::None,
            unhealthy_monitors: Vec::new(),
            mailbox: None,
            active_copies: 0,
            copies_moved_per_failover: 3,
            passive_copies: 0,
            copy_states: BTreeMap::new(),
            maintenance: false,
            activation_disabled: false,
            move_time_ms: 0,
            warm_up_ms: 0,
            flaky_reads: 0,
            iis_reset_downtime_ms: 0,
            boot_time_ms: 0,
            service: None,
            ma_log: Vec::new(),
            actions: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Behaviour {
    hang: bool,
    garbage: bool,
    exit_code: Option<u8>,
    stderr: Option<String>,
    delay_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ServerState {
    fixed: bool,
    active_copies: u32,
    /// When each copy on its way off the server leaves it (Unix ms); `Mounted` until then.
    moving: Vec<i64>,
    moved: u32,
    activation_disabled: bool,
    restarts: u32,
    flaky_used: u32,
    cold_until: i64,
    endpoint_down_until: i64,
    booting_until: i64,
}

/// The monitors every server reports, with their health sets, as `Get-ServerHealth` lists them.
const MONITORS: [(&str, &str); 6] = [
    ("ActiveSyncCTPMonitor", "ActiveSync"),
    ("ActiveSyncDeepTestMonitor", "ActiveSync"),
    ("RequestsQueuedGt500Monitor", "ActiveSync"),
    ("ActiveSyncSelfTestMonitor", "ActiveSync.Protocol"),
    ("ActiveSyncProxyTestMonitor", "ActiveSync.Proxy"),
    ("OwaCTPMonitor", "OWA"),
];

struct Paths {
    scenario: PathBuf,
    state: PathBuf,
    log: PathBuf,
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(message) => {
            eprintln!("stand-in-pwsh: {message}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode, String> {
    let paths = paths()?;
    let mut script = String::new();
    std::io::stdin().read_to_string(&mut script).map_err(|e| format!("reading the script: {e}"))?;
    let text = fs::read_to_string(&paths.scenario)
        .map_err(|e| format!("{}: {e}", paths.scenario.display()))?;
    let mut scenario: Scenario = if paths.scenario.extension().is_some_and(|ext| ext == "json") {
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", paths.scenario.display()))?
    } else {
        toml::from_str(&text).map_err(|e| format!("{}: {e}", paths.scenario.display()))?
    };
    // Exchange compares server names ignoring case; the scripts carry them lower-case.
    scenario.servers = std::mem::take(&mut scenario.servers)
        .into_iter()
        .map(|(name, server)| (name.to_ascii_lowercase(), server))
        .collect();

    let call = Call::recognise(&script);
    let behaviour = call
        .as_ref()
        .ok()
        .and_then(|call| {
            scenario
                .servers
                .get(&call.server)
                .and_then(|s| s.actions.get(call.action))
                .or_else(|| scenario.actions.get(call.action))
        })
        .cloned()
        .unwrap_or_default();
    let child_pid = if behaviour.hang {
        let child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .map_err(|e| format!("starting sleep: {e}"))?;
        Some(child.id())
    } else {
        None
    };

    let running = Running::enter(&paths.scenario)?;
    let lock = Lock::take(&paths.state)?;
    let log_line = json!({
        "action": call.as_ref().ok().map(|c| c.action),
        "server": call.as_ref().ok().map(|c| c.server.clone()),
        "script": script,
        "pid": std::process::id(),
        "child_pid": child_pid,
        "running": running.count,
    });
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&paths.log)
        .map_err(|e| format!("{}: {e}", paths.log.display()))?;
    log.write_all(format!("{log_line}\n").as_bytes())
        .map_err(|e| format!("{}: {e}", paths.log.display()))?;

    let call = call?;
    if behaviour.hang {
        drop(lock);
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let delay = Duration::from_millis(behaviour.delay_ms);
    if behaviour.garbage || behaviour.exit_code.is_some() {
        drop(lock);
        std::thread::sleep(delay);
        if let Some(code) = behaviour.exit_code {
            eprintln!("{}", behaviour.stderr.as_deref().unwrap_or("the stand-in was told to fail"));
            return Ok(ExitCode::from(code));
        }
        println!("Import-PSSession : <garbage> this is not JSON {{");
        return Ok(ExitCode::SUCCESS);
    }

    // The change takes effect when the call starts (a restart is under way while its delay lasts); the answer comes
    // after the delay, with other calls free to run meanwhile.
    let mut state = load_state(&paths.state, &scenario)?;
    let answer = call.answer(&scenario, &mut state, chrono::Utc::now().timestamp_millis());
    fs::write(&paths.state, serde_json::to_string_pretty(&state).expect("state serialises"))
        .map_err(|e| format!("{}: {e}", paths.state.display()))?;
    drop(lock);
    std::thread::sleep(delay);
    drop(running);
    match answer {
        Ok(answer) => {
            println!("{answer}");
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("{error}");
            Ok(ExitCode::from(1))
        }
    }
}

/// This process's file in the `.running` directory while it runs, and how many were there when it came.
struct Running {
    file: PathBuf,
    count: usize,
}

impl Running {
    fn enter(scenario: &Path) -> Result<Running, String> {
        let mut dir = scenario.as_os_str().to_owned();
        dir.push(".running");
        let dir = PathBuf::from(dir);
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let file = dir.join(std::process::id().to_string());
        fs::write(&file, b"").map_err(|e| format!("{}: {e}", file.display()))?;
        let count = fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?.count();
        Ok(Running { file, count })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.file);
    }
}

fn paths() -> Result<Paths, String> {
    let mut flags: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if let Some(name) =
            arg.strip_prefix("--").filter(|name| ["scenario", "state", "log"].contains(name))
        {
            flags.insert(
                name.to_owned(),
                args.next().ok_or_else(|| format!("{arg} needs a path"))?.into(),
            );
        }
    }
    let mut path = |name: &str, env: &str| {
        flags.remove(name).or_else(|| std::env::var_os(env).map(PathBuf::from))
    };
    let scenario = path("scenario", "STAND_IN_SCENARIO")
        .ok_or("no scenario: give --scenario FILE or STAND_IN_SCENARIO")?;
    let beside = |suffix: &str| {
        let mut name = scenario.clone().into_os_string();
        name.push(suffix);
        PathBuf::from(name)
    };
    Ok(Paths {
        state: path("state", "STAND_IN_STATE").unwrap_or_else(|| beside(".state.json")),
        log: path("log", "STAND_IN_LOG").unwrap_or_else(|| beside(".log.jsonl")),
        scenario,
    })
}

fn load_state(path: &Path, scenario: &Scenario) -> Result<BTreeMap<String, ServerState>, String> {
    let mut state: BTreeMap<String, ServerState> = match fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?,
        Err(_) => BTreeMap::new(),
    };
    for (name, server) in &scenario.servers {
        state.entry(name.clone()).or_insert_with(|| ServerState {
            active_copies: server.active_copies,
            activation_disabled: server.activation_disabled,
            ..ServerState::default()
        });
    }
    Ok(state)
}

/// One action, as recognised in a script, with the values read from its literals.
struct Call {
    action: &'static str,
    server: String,
    /// The probe, the health set pattern, the app pool or the restart timeout, where the action has one.
    argument: Option<String>,
}

impl Call {
    fn recognise(script: &str) -> Result<Call, String> {
        // (marker that names the action, action, cmdlet the server follows, the server's parameter, the argument's)
        let table: [(&str, &str, &str, &str, Option<&str>); 11] = [
            (
                "Invoke-MonitoringProbe",
                "probe",
                "Invoke-MonitoringProbe",
                "-Server",
                Some("Invoke-MonitoringProbe"),
            ),
            ("Get-ServerHealth", "server_health", "Get-ServerHealth", "-Identity", Some("-like")),
            (
                "Restart-WebAppPool",
                "recycle_app_pool",
                "Invoke-Command",
                "-ComputerName",
                Some("[string[]]@("),
            ),
            (
                "Restart-Service",
                "restart_service",
                "Invoke-Command",
                "-ComputerName",
                Some("-ArgumentList"),
            ),
            ("RecoveryActionResults", "ma_history", "Get-WinEvent", "-ComputerName", Some("[int]")),
            ("iisreset", "iis_reset", "Invoke-Command", "-ComputerName", None),
            (
                "DatabaseCopyActivationDisabledAndMoveNow $true",
                "disable_activation",
                "Set-MailboxServer",
                "-Identity",
                None,
            ),
            (
                "DatabaseCopyActivationDisabledAndMoveNow $false",
                "enable_activation",
                "Set-MailboxServer",
                "-Identity",
                None,
            ),
            (
                "Get-MailboxDatabaseCopyStatus",
                "copy_status",
                "Get-MailboxDatabaseCopyStatus",
                "-Server",
                None,
            ),
            (
                "Restart-Computer",
                "restart_server",
                "Restart-Computer",
                "-ComputerName",
                Some("-Timeout"),
            ),
            (
                "Get-ServerComponentState",
                "component_state",
                "Get-ServerComponentState",
                "-Identity",
                None,
            ),
        ];
        let (_, action, cmdlet, parameter, argument) = table
            .into_iter()
            .find(|(marker, ..)| find(script, 0, marker).is_some())
            .ok_or("the script runs no cmdlet the stand-in knows")?;
        let at = find(script, 0, cmdlet)
            .ok_or_else(|| format!("{action}: the script has no {cmdlet}"))?;
        let server = literal_after(script, at, parameter)
            .ok_or_else(|| format!("{action}: no quoted literal after {cmdlet} ... {parameter}"))?;
        let argument = match argument {
            // Several application pools make one array of literals: `@('A', 'B')`.
            Some(marker) if action == "recycle_app_pool" => Some(
                literals_after(script, marker)
                    .ok_or_else(|| format!("{action}: no quoted literals after {marker}"))?
                    .join(","),
            ),
            Some(marker) => Some(
                literal_after(script, 0, marker)
                    .ok_or_else(|| format!("{action}: no quoted literal after {marker}"))?,
            ),
            None => None,
        };
        Ok(Call { action, server: server.to_ascii_lowercase(), argument })
    }

    /// The JSON Exchange would print, or the error a shell would meet reaching the server now (`now`: Unix ms).
    fn answer(
        &self,
        scenario: &Scenario,
        state: &mut BTreeMap<String, ServerState>,
        now: i64,
    ) -> Result<Value, String> {
        let failing = failing(scenario, state, &self.server);
        let config = scenario.servers.get(&self.server).cloned().unwrap_or_default();
        let server_state = state.entry(self.server.clone()).or_default();
        let server = &self.server;
        if server_state.booting_until > now {
            return Err(format!("Connecting to remote server {server} failed: WinRM cannot complete the operation (the server is starting)"));
        }
        if ["probe", "server_health", "copy_status", "component_state", "ma_history"]
            .contains(&self.action)
        {
            if server_state.endpoint_down_until > now {
                return Err(format!("Connecting to remote server {server} failed: http://{server}/PowerShell/ answered 503 (IIS is restarting)"));
            }
            if server_state.flaky_used < config.flaky_reads {
                server_state.flaky_used += 1;
                return Err(format!("Connecting to remote server {server} failed: The WinRM client cannot complete the operation within the time specified"));
            }
        }
        let failing = failing || (self.action == "probe" && server_state.cold_until > now);
        let short = self.server.split('.').next().unwrap_or_default().to_ascii_uppercase();
        let at = now;
        let now = chrono::Utc::now().to_rfc3339();
        Ok(match self.action {
            "probe" => {
                let probe = self.argument.clone().unwrap_or_default();
                let (result_type, error) = if failing {
                    let mailbox =
                        config.mailbox.clone().unwrap_or_else(|| "UnkownMailboxServer".into());
                    let error = format!(
                        "Error occurred:\r\n\r\nUser: HealthMailbox0c1f2e3d@contoso.com\r\nPassword: ******\r\nTarget: https://{}:444/Microsoft-Server-ActiveSync/Proxy\r\nResponse: 503 Service Unavailable\r\nDiagnostics header:[ClientAccessServer={short}]_Cas:{}_Mbx:{mailbox}_Dc:DC01.contoso.com_FAIL/HTTP:503/EASStatus:0",
                        self.server, self.server
                    );
                    ("Failed", error)
                } else {
                    ("Succeeded", String::new())
                };
                json!([{
                    "Server": short, "MonitorIdentity": probe, "ResultType": result_type, "Error": error, "Exception": "",
                    "ExecutionStartTime": now, "ExecutionEndTime": now,
                }])
            }
            "server_health" => {
                let pattern = self.argument.clone().unwrap_or_default();
                let mut monitors: Vec<(String, String)> =
                    MONITORS.iter().map(|(m, hs)| (m.to_string(), hs.to_string())).collect();
                for monitor in &config.unhealthy_monitors {
                    if !monitors.iter().any(|(m, _)| m.eq_ignore_ascii_case(monitor)) {
                        monitors.push((
                            monitor.clone(),
                            scenario
                                .health_sets
                                .get(monitor)
                                .cloned()
                                .unwrap_or_else(|| "ActiveSync".into()),
                        ));
                    }
                }
                let rows: Vec<Value> = monitors
                    .into_iter()
                    .filter(|(_, health_set)| like(health_set, &pattern))
                    .map(|(monitor, health_set)| {
                        let unhealthy = failing && config.unhealthy_monitors.iter().any(|m| m.eq_ignore_ascii_case(&monitor));
                        json!({
                            "Server": short, "CurrentHealthSetState": "NotApplicable", "Name": monitor, "TargetResource": "MSExchangeSyncAppPool",
                            "HealthSetName": health_set, "AlertValue": if unhealthy { "Unhealthy" } else { "Healthy" }, "LastTransitionTime": now,
                        })
                    })
                    .collect();
                Value::Array(rows)
            }
            "recycle_app_pool" => {
                server_state.fixed |= config.fault == Fault::AppPool;
                server_state.cold_until = at + config.warm_up_ms;
                let pools: Vec<&str> =
                    self.argument.as_deref().unwrap_or_default().split(',').collect();
                json!({"Server": self.server, "AppPools": pools, "Recycled": true})
            }
            "restart_service" => {
                let service = self.argument.clone().unwrap_or_default();
                server_state.fixed |= config.fault == Fault::Service
                    && config.service.as_deref().is_none_or(|s| s.eq_ignore_ascii_case(&service));
                server_state.cold_until = at + config.warm_up_ms;
                json!({"Server": self.server, "Service": service, "Status": "Running"})
            }
            "ma_history" => {
                // Get-WinEvent -FilterHashtable StartTime: events created within the lookback, a start event and a
                // finished one per action, newest first, as EventXML fields.
                let lookback_ms =
                    self.argument.as_deref().and_then(|s| s.parse::<i64>().ok()).unwrap_or(0)
                        * 1000;
                let time = |ms: i64| {
                    chrono::DateTime::from_timestamp_millis(ms)
                        .unwrap_or_default()
                        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                };
                let mut events = Vec::new();
                for entry in &config.ma_log {
                    let (started, ended) = (at - entry.ago_ms - 5_000, at - entry.ago_ms);
                    let event = |state: &str, end: i64, result: &str| {
                        json!({"Id": entry.id, "InstanceId": "1", "ResourceName": entry.resource, "RequestorName": entry.requestor,
                               "StartTime": time(started), "EndTime": time(end), "State": state, "Result": result})
                    };
                    if started >= at - lookback_ms {
                        // A start event carries the expected end time and a placeholder result.
                        events.push((started, event("Started", ended + 60_000, "Unknown")));
                    }
                    if entry.finished && ended >= at - lookback_ms {
                        events.push((ended, event("Finished", ended, &entry.result)));
                    }
                }
                events.sort_by_key(|(t, _)| std::cmp::Reverse(*t));
                Value::Array(events.into_iter().map(|(_, e)| e).collect())
            }
            "iis_reset" => {
                server_state.fixed |= config.fault == Fault::IisReset;
                server_state.endpoint_down_until = at + config.iis_reset_downtime_ms;
                server_state.cold_until = at + config.iis_reset_downtime_ms + config.warm_up_ms;
                let output = "Attempting stop...\r\nInternet services successfully stopped\r\nAttempting start...\r\nInternet services successfully restarted";
                json!({"Server": self.server, "ExitCode": 0, "Output": output})
            }
            "disable_activation" => {
                // The script returns Get-MailboxServer as it was before the change.
                let before = server_state.activation_disabled;
                server_state.activation_disabled = true;
                // Each round moves copies_moved_per_failover; the others stay Mounted until asked again.
                let moves = server_state.active_copies.min(config.copies_moved_per_failover);
                server_state.active_copies -= moves;
                server_state.moving.extend((0..moves).map(|_| at + config.move_time_ms));
                json!({"Name": short, "DatabaseCopyActivationDisabledAndMoveNow": before})
            }
            "component_state" => {
                let state = if config.maintenance { "Inactive" } else { "Active" };
                json!({"Identity": short, "Component": "ServerWideOffline", "State": state})
            }
            "enable_activation" => {
                server_state.activation_disabled = false;
                json!({"Name": short, "DatabaseCopyActivationDisabledAndMoveNow": false})
            }
            "copy_status" => {
                let arrived = server_state.moving.iter().filter(|t| **t <= at).count() as u32;
                server_state.moving.retain(|t| *t > at);
                server_state.moved += arrived;
                let mounted = server_state.active_copies + server_state.moving.len() as u32;
                let groups =
                    [("Mounted", mounted), ("Healthy", config.passive_copies + server_state.moved)];
                let others = config.copy_states.iter().map(|(name, count)| (name.as_str(), *count));
                Value::Array(
                    groups
                        .into_iter()
                        .chain(others)
                        .filter(|(_, count)| *count > 0)
                        .map(|(name, count)| json!({"Count": count, "Name": name}))
                        .collect(),
                )
            }
            "restart_server" => {
                server_state.restarts += 1;
                // A reboot restarts every service too.
                server_state.fixed |=
                    config.fault == Fault::Restart || config.fault == Fault::Service;
                server_state.booting_until = at + config.boot_time_ms;
                server_state.cold_until = at + config.boot_time_ms + config.warm_up_ms;
                json!({"Server": self.server, "Restarted": true})
            }
            other => unreachable!("recognise yields known actions only, not {other}"),
        })
    }
}

fn faulted(scenario: &ServerScenario, state: Option<&ServerState>) -> bool {
    match scenario.fault {
        Fault::None => false,
        Fault::Never => true,
        _ => !state.is_some_and(|s| s.fixed),
    }
}

fn failing(scenario: &Scenario, state: &BTreeMap<String, ServerState>, server: &str) -> bool {
    match scenario.servers.get(server) {
        None => false,
        Some(config) if config.fault == Fault::Mailbox => scenario
            .servers
            .iter()
            .any(|(name, other)| other.fault != Fault::Mailbox && faulted(other, state.get(name))),
        Some(config) => faulted(config, state.get(server)),
    }
}

/// PowerShell's `-like` for the patterns the executor sends: a name, or a prefix ending in `*`; ignoring case.
fn like(value: &str, pattern: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.to_ascii_lowercase().starts_with(&prefix.to_ascii_lowercase()),
        None => value.eq_ignore_ascii_case(pattern),
    }
}

/// Where `needle` first occurs in `haystack` at or after `from`, ignoring ASCII case.
fn find(haystack: &str, from: usize, needle: &str) -> Option<usize> {
    let lower = haystack.to_ascii_lowercase();
    lower[from..].find(&needle.to_ascii_lowercase()).map(|i| from + i)
}

fn is_quote(c: char) -> bool {
    matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}')
}

/// The value of the single-quoted literal that follows `marker` (after `from`), as PowerShell reads it: a doubled
/// quote character stands for one.
fn literal_after(script: &str, from: usize, marker: &str) -> Option<String> {
    // The first occurrence followed by a literal: a cmdlet's name also stands in `Import-PSSession -CommandName`.
    let mut from = from;
    while let Some(at) = find(script, from, marker) {
        if let Some(value) = literal_at(script, at + marker.len()) {
            return Some(value);
        }
        from = at + marker.len();
    }
    None
}

/// The values of the comma-separated single-quoted literals that follow `marker`, as in `@('A', 'B')`.
fn literals_after(script: &str, marker: &str) -> Option<Vec<String>> {
    let mut at = find(script, 0, marker)? + marker.len();
    let mut values = Vec::new();
    while let Some(value) = literal_at(script, at) {
        // Past the blanks, the literal and its doubled quotes: as long as the value plus its quotes, at least.
        let start = at + script[at..].len() - script[at..].trim_start_matches([' ', '\t']).len();
        let mut end = start + 1;
        let mut chars = script[end..].char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if is_quote(c) {
                if chars.peek().is_some_and(|(_, n)| is_quote(*n)) {
                    chars.next();
                } else {
                    end += i + c.len_utf8();
                    break;
                }
            }
        }
        values.push(value);
        let rest = script[end..].trim_start();
        match rest.strip_prefix(',') {
            Some(after) => at = script.len() - after.len(),
            None => break,
        }
    }
    (!values.is_empty()).then_some(values)
}

/// The value of the single-quoted literal at `at`, after blanks.
fn literal_at(script: &str, at: usize) -> Option<String> {
    let mut chars = script[at..].chars().skip_while(|c| *c == ' ' || *c == '\t').peekable();
    if !chars.next().is_some_and(is_quote) {
        return None;
    }
    let mut value = String::new();
    while let Some(c) = chars.next() {
        if !is_quote(c) {
            value.push(c);
        } else if chars.peek().copied().is_some_and(is_quote) {
            value.push(chars.next().expect("peeked"));
        } else {
            return Some(value);
        }
    }
    None
}

/// Serialises calls that share a state file: the executor may run actions on several servers at once.
struct Lock(PathBuf);

impl Lock {
    fn take(state: &Path) -> Result<Lock, String> {
        let mut name = state.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let started = Instant::now();
        loop {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(_) => return Ok(Lock(path)),
                Err(_) if started.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => return Err(format!("{}: still locked after 10s ({e})", path.display())),
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

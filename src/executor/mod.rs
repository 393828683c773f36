//! Executors carry out one runbook action on one server: the simulator for demonstrations and tests, PowerShell
//! against real Exchange servers.
//!
//! An executor knows nothing of incidents, throttles or the journal: it gets one [`Action`] made of validated names
//! and answers with a [`Report`]. The engine decides whether an action may run at all.

pub mod powershell;
mod settings;
pub mod simulator;

pub use settings::{BadSetting, ExecutorConfig, ExecutorKind};

use std::time::Duration;

use crate::domain::{AppPool, HealthSet, HealthSetPattern, Monitor, ProbeName, ServerName, ServiceName};
use crate::incident::{ActionKind, Outcome};

/// A probe as `Invoke-MonitoringProbe` names it: `<health set>\<probe>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProbeRef {
    pub health_set: HealthSet,
    pub probe: ProbeName,
}

impl ProbeRef {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (health_set, probe) = raw.split_once('\\').ok_or_else(|| format!("{raw:?} is not <health set>\\<probe>"))?;
        Ok(ProbeRef {
            health_set: HealthSet::parse(health_set).map_err(|e| format!("health set {e}"))?,
            probe: ProbeName::parse(probe).map_err(|e| format!("probe {e}"))?,
        })
    }
}

impl std::fmt::Display for ProbeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\\{}", self.health_set, self.probe)
    }
}

/// One action on one server, with everything it needs and nothing raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `backend` is the Mailbox server the alert's `_Mbx:` hint names behind a CAS probe; only the simulator uses
    /// it, to model a CAS that fails because of its Mailbox server.
    Probe {
        server: ServerName,
        probe: ProbeRef,
        backend: Option<ServerName>,
    },
    ServerHealth {
        server: ServerName,
        health_sets: HealthSetPattern,
    },
    /// One remedy may recycle several pools (OWA.Proxy recycles the OWA and the calendar pools): one step, one
    /// throttle count. Never empty.
    RecycleAppPool {
        server: ServerName,
        app_pools: Vec<AppPool>,
    },
    /// `noforce`: `iisreset /noforce` only, as the OWA and Autodiscover pages say; else IIS is stopped gracefully
    /// where it can be and forcibly where it cannot, as the IISReset utility does.
    IisReset {
        server: ServerName,
        noforce: bool,
    },
    /// Restart a Windows service (`Restart-Service` through `Invoke-Command`).
    RestartService {
        server: ServerName,
        service: ServiceName,
    },
    /// Managed Availability's finished recovery actions on the server that ended within `lookback`.
    MaHistory {
        server: ServerName,
        lookback: Duration,
    },
    /// `attempt` counts the disable-and-check rounds of one restart procedure, from 1; only the first is a new
    /// failover for the throttles.
    DisableActivation {
        server: ServerName,
        attempt: u32,
    },
    CopyStatus {
        server: ServerName,
    },
    RestartServer {
        server: ServerName,
    },
    EnableActivation {
        server: ServerName,
    },
    /// `Get-ServerComponentState <s> -Component ServerWideOffline`: whether the server is in maintenance.
    ComponentState {
        server: ServerName,
    },
    /// Kept by the engine, never by a shell: a settle or warm-up time, a pause between copy-status checks, or
    /// (`Until::Answering`) the time a restarted server has to answer the Exchange Management Shell again.
    Wait {
        server: ServerName,
        duration: Duration,
        until: Until,
    },
}

/// What a wait waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// The time to pass (a resolved notice that arrives meanwhile cuts it short).
    Elapsed,
    /// The server to answer `Get-ServerComponentState` again, for at most the duration.
    Answering,
}

impl Action {
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Probe { .. } => ActionKind::Probe,
            Action::ServerHealth { .. } => ActionKind::ServerHealth,
            Action::RecycleAppPool { .. } => ActionKind::RecycleAppPool,
            Action::IisReset { .. } => ActionKind::IisReset,
            Action::DisableActivation { .. } => ActionKind::DisableActivation,
            Action::CopyStatus { .. } => ActionKind::CopyStatus,
            Action::RestartServer { .. } => ActionKind::RestartServer,
            Action::EnableActivation { .. } => ActionKind::EnableActivation,
            Action::ComponentState { .. } => ActionKind::ComponentState,
            Action::RestartService { .. } => ActionKind::RestartService,
            Action::MaHistory { .. } => ActionKind::MaHistory,
            Action::Wait { .. } => ActionKind::Wait,
        }
    }

    pub fn server(&self) -> &ServerName {
        match self {
            Action::Probe { server, .. }
            | Action::ServerHealth { server, .. }
            | Action::RecycleAppPool { server, .. }
            | Action::IisReset { server, .. }
            | Action::RestartService { server, .. }
            | Action::MaHistory { server, .. }
            | Action::DisableActivation { server, .. }
            | Action::CopyStatus { server }
            | Action::RestartServer { server }
            | Action::EnableActivation { server }
            | Action::ComponentState { server }
            | Action::Wait { server, .. } => server,
        }
    }

    /// Whether this action only reads (a check an executor failure may be retried for): neither a change nor a wait.
    pub fn is_read_only(&self) -> bool {
        !self.kind().is_mutating() && self.kind() != ActionKind::Wait
    }

    /// Whether this action counts against the throttles: every mutating action but the repeated disable-and-check
    /// rounds of one failover, and re-enabling activation, which only undoes a failover.
    pub fn is_throttled(&self) -> bool {
        match self {
            Action::DisableActivation { attempt, .. } => *attempt == 1,
            Action::EnableActivation { .. } => false,
            other => other.kind().is_mutating(),
        }
    }

    /// The Exchange Management Shell command this action stands for, as the runbook documents it.
    pub fn command(&self) -> String {
        match self {
            Action::Probe { server, probe, .. } => format!("Invoke-MonitoringProbe {probe} -Server {server} | Format-List"),
            Action::ServerHealth { server, health_sets } => {
                let op = if health_sets.as_str().ends_with('*') { "-like" } else { "-eq" };
                format!("Get-ServerHealth {server} | ?{{$_.HealthSetName {op} \"{health_sets}\"}}")
            }
            Action::RecycleAppPool { server, app_pools } => {
                let names: Vec<&str> = app_pools.iter().map(AppPool::as_str).collect();
                format!("Invoke-Command -ComputerName {server} {{ Restart-WebAppPool -Name {} }}", names.join(", "))
            }
            Action::IisReset { server, noforce: true } => format!("Invoke-Command -ComputerName {server} {{ iisreset /noforce }}"),
            Action::IisReset { server, noforce: false } => format!("Invoke-Command -ComputerName {server} {{ iisreset }}"),
            Action::RestartService { server, service } => format!("Invoke-Command -ComputerName {server} {{ Restart-Service -Name {service} -Force }}"),
            Action::MaHistory { server, lookback } => format!(
                "Get-WinEvent -ComputerName {server} -LogName Microsoft-Exchange-ManagedAvailability/RecoveryActionResults (the last {}, finished actions only)",
                humantime::format_duration(*lookback)
            ),
            Action::DisableActivation { server, .. } => format!("Set-MailboxServer {server} -DatabaseCopyActivationDisabledAndMoveNow $true"),
            Action::CopyStatus { server } => format!("Get-MailboxDatabaseCopyStatus -Server {server} | Group Status"),
            Action::RestartServer { server } => format!("Restart-Computer -ComputerName {server} -Force -Wait -For WinRM"),
            Action::EnableActivation { server } => format!("Set-MailboxServer {server} -DatabaseCopyActivationDisabledAndMoveNow $false"),
            Action::ComponentState { server } => format!("Get-ServerComponentState {server} -Component ServerWideOffline"),
            Action::Wait { duration, until: Until::Elapsed, .. } => format!("Start-Sleep -Seconds {}", duration.as_secs()),
            Action::Wait { server, duration, until: Until::Answering } => {
                format!("wait until Get-ServerComponentState {server} answers, at most {} s", duration.as_secs())
            }
        }
    }
}

/// The only database copy states that count as passive (SPEC section 5, "Copy status"). Every other status,
/// `Mounted`, `Mounting`, `Dismounting`, `Dismounted`, `ServiceDown` (the Replication service is down, so the
/// copies' real states are unknown) or a name this list does not know, means active copies may remain.
const PASSIVE_COPY_STATES: [&str; 9] = [
    "Healthy",
    "Suspended",
    "Failed",
    "FailedAndSuspended",
    "Initializing",
    "Resynchronizing",
    "Seeding",
    "DisconnectedAndHealthy",
    "DisconnectedAndResynchronizing",
];

/// Whether a `Get-MailboxDatabaseCopyStatus` status means the copy is surely not active on the server.
fn is_passive_copy_status(status: &str) -> bool {
    PASSIVE_COPY_STATES.iter().any(|state| state.eq_ignore_ascii_case(status))
}

/// What came of an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub outcome: Outcome,
    /// A short human account: the probe's error, the unhealthy monitors, the copy counts, stderr.
    pub detail: String,
    /// For `server_health`: the monitors reported Unhealthy.
    pub unhealthy: Vec<Monitor>,
    /// The exact command text that ran, when it differs from [`Action::command`] (the PowerShell executor's script).
    pub command: Option<String>,
    /// For `disable_activation`: activation was already disabled before the step (an administrator's doing), so
    /// the responder must not re-enable it.
    pub already_in_place: bool,
    /// For `ma_history`: Managed Availability's finished recovery actions in the window, newest first.
    pub ma_actions: Vec<crate::ma::RecoveryAction>,
}

impl Report {
    pub fn new(outcome: Outcome, detail: impl Into<String>) -> Self {
        Report { outcome, detail: detail.into(), unhealthy: Vec::new(), command: None, already_in_place: false, ma_actions: Vec::new() }
    }

    /// What `Get-MailboxDatabaseCopyStatus -Server <s> | Group Status` reported (each status with its count), read
    /// as SPEC section 5 says: active copies may remain unless every status with copies is a passive one.
    pub fn copy_status(server: &ServerName, groups: &[(impl AsRef<str>, u64)]) -> Self {
        if groups.is_empty() {
            return Report::new(Outcome::NoActiveCopies, format!("no database copies on {server}"));
        }
        let counts = groups.iter().map(|(status, count)| format!("{}: {count}", status.as_ref())).collect::<Vec<_>>().join(", ");
        let not_passive: Vec<&str> =
            groups.iter().filter(|(status, count)| *count > 0 && !is_passive_copy_status(status.as_ref())).map(|(status, _)| status.as_ref()).collect();
        if not_passive.is_empty() {
            return Report::new(Outcome::NoActiveCopies, counts);
        }
        Report::new(Outcome::ActiveCopies, format!("{counts}; not passive: {}", not_passive.join(", ")))
    }

    /// What `disable_activation` did, given whether activation was disabled before it ran. On a failover's later
    /// rounds it was, by the first round: those only ask Exchange to move the remaining copies again.
    pub fn activation_disabled(server: &ServerName, attempt: u32, already: bool) -> Self {
        let detail = match (already, attempt) {
            (false, _) => format!("DatabaseCopyActivationDisabledAndMoveNow set to True on {server}; active copies move off"),
            (true, 1) => format!("activation was already disabled on {server} before this failover"),
            (true, _) => format!("activation still disabled on {server}; the remaining active copies were asked to move again"),
        };
        Report { already_in_place: already, ..Report::new(Outcome::Done, detail) }
    }
}

/// How many executor processes run and how many steps wait for one (`executor.max_parallel`): the executor keeps
/// them current, `/metrics` shows them.
#[derive(Debug, Clone, Default)]
pub struct ExecutorGauges {
    pub running: prometheus_client::metrics::gauge::Gauge,
    pub waiting: prometheus_client::metrics::gauge::Gauge,
}

/// The executor in force.
pub enum Executor {
    Simulator(simulator::Simulator),
    PowerShell(powershell::PowerShell),
}

impl Executor {
    pub async fn run(&self, action: &Action) -> Report {
        match self {
            Executor::Simulator(simulator) => simulator.run(action).await,
            Executor::PowerShell(powershell) => powershell.run(action).await,
        }
    }

    /// The command text the journal records for an action before it runs.
    pub fn command(&self, action: &Action) -> String {
        match self {
            Executor::Simulator(_) => action.command(),
            Executor::PowerShell(powershell) => powershell.command(action),
        }
    }
}

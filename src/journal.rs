//! An incident's journal in the contract's words (SPEC sections 3 and 5): what the incident is about ([`Facts`]),
//! a step to run ([`Action`]: one action on one server, made of validated names), what came of it ([`Report`]),
//! a finished step as the planner reads it back ([`Done`]), and how an incident ends ([`Ending`], read from the
//! journal).
//!
//! The planner decides these, the executors carry them out and the store keeps them; this module depends on none
//! of those, so each speaks the same words without reaching into another.

use std::time::Duration;

use crate::domain::{
    AppPool, HealthSet, HealthSetPattern, Monitor, ProbeName, ServerName, ServiceName,
};
use crate::incident::{ActionKind, Outcome, State};
use crate::ma::RecoveryAction;

/// What the incident says about itself.
#[derive(Debug, Clone)]
pub struct Facts {
    pub server: ServerName,
    pub health_set: HealthSet,
    pub monitor: Option<Monitor>,
    pub mailbox_hint: Option<ServerName>,
}

/// A probe as `Invoke-MonitoringProbe` names it: `<health set>\<probe>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProbeRef {
    pub health_set: HealthSet,
    pub probe: ProbeName,
}

impl ProbeRef {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (health_set, probe) =
            raw.split_once('\\').ok_or_else(|| format!("{raw:?} is not <health set>\\<probe>"))?;
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
    pub ma_actions: Vec<RecoveryAction>,
}

impl Report {
    pub fn new(outcome: Outcome, detail: impl Into<String>) -> Self {
        Report {
            outcome,
            detail: detail.into(),
            unhealthy: Vec::new(),
            command: None,
            already_in_place: false,
            ma_actions: Vec::new(),
        }
    }

    /// What `Get-MailboxDatabaseCopyStatus -Server <s> | Group Status` reported (each status with its count), read
    /// as SPEC section 5 says: active copies may remain unless every status with copies is a passive one.
    pub fn copy_status(server: &ServerName, groups: &[(impl AsRef<str>, u64)]) -> Self {
        if groups.is_empty() {
            return Report::new(Outcome::NoActiveCopies, format!("no database copies on {server}"));
        }
        let counts = groups
            .iter()
            .map(|(status, count)| format!("{}: {count}", status.as_ref()))
            .collect::<Vec<_>>()
            .join(", ");
        let not_passive: Vec<&str> = groups
            .iter()
            .filter(|(status, count)| *count > 0 && !is_passive_copy_status(status.as_ref()))
            .map(|(status, _)| status.as_ref())
            .collect();
        if not_passive.is_empty() {
            return Report::new(Outcome::NoActiveCopies, counts);
        }
        Report::new(
            Outcome::ActiveCopies,
            format!("{counts}; not passive: {}", not_passive.join(", ")),
        )
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

    /// The report of an `ma_history` step: `found` with one line per action, or `none`.
    pub fn ma_history(
        server: &ServerName,
        lookback: Duration,
        actions: Vec<RecoveryAction>,
    ) -> Report {
        let window = humantime::format_duration(lookback);
        if actions.is_empty() {
            return Report::new(Outcome::NoneFound, format!("no finished Managed Availability recovery action on {server} in the last {window}"));
        }
        let lines: Vec<String> = actions.iter().map(RecoveryAction::describe).collect();
        let detail = format!(
            "Managed Availability's finished recovery actions on {server} in the last {window}: {}",
            lines.join("; ")
        );
        Report { ma_actions: actions, ..Report::new(Outcome::Found, detail) }
    }
}

/// One finished journal step, as the planner reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Done {
    pub action: ActionKind,
    pub server: ServerName,
    pub outcome: Outcome,
    pub detail: String,
    /// For `server_health`: the monitors reported Unhealthy.
    pub unhealthy: Vec<Monitor>,
    /// For `disable_activation`: activation was already disabled before the step.
    pub already_in_place: bool,
    /// For `ma_history`: Managed Availability's finished recovery actions it found.
    pub ma_actions: Vec<RecoveryAction>,
}

/// How an incident ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub state: State,
    pub reason: String,
    /// Servers whose database activation the responder disabled (or may have: the step's result was lost) and did
    /// not re-enable: the email must say so, with the command to re-enable it.
    pub activation_disabled: Vec<ServerName>,
    /// Servers whose activation was already disabled before the responder's failover: left as found.
    pub activation_left_as_found: Vec<ServerName>,
}

impl Ending {
    /// An ending with what the journal says about database activation, however the incident came to end: the
    /// planner's decision, a forced stop (a busy server, a silence) or a crash. The one place that knows it.
    pub fn from_journal(state: State, reason: impl Into<String>, journal: &[Done]) -> Self {
        let activation = Activation::read(journal);
        Ending {
            state,
            reason: reason.into(),
            activation_disabled: activation.left_disabled(),
            activation_left_as_found: activation.as_found,
        }
    }
}

/// What the journal says about database activation on each server the incident failed over.
#[derive(Debug, Default)]
pub struct Activation {
    /// Disabled by the responder; re-enabling it is the responder's to do.
    by_us: Vec<ServerName>,
    /// The first `disable_activation` of a failover lost its result (or failed): activation may be disabled, and
    /// whether it was before is unknown, so the responder does not re-enable it.
    unknown: Vec<ServerName>,
    /// Already disabled when the responder's failover began.
    as_found: Vec<ServerName>,
}

impl Activation {
    pub fn read(journal: &[Done]) -> Activation {
        let mut activation = Activation::default();
        for done in journal {
            let server = &done.server;
            let known = activation.by_us.contains(server)
                || activation.unknown.contains(server)
                || activation.as_found.contains(server);
            match (done.action, done.outcome) {
                // Only the first disable of a failover tells how activation was before: later rounds find it
                // disabled by the first.
                (ActionKind::DisableActivation, _) if known => {}
                (ActionKind::DisableActivation, Outcome::Done) if done.already_in_place => {
                    activation.as_found.push(server.clone())
                }
                (ActionKind::DisableActivation, Outcome::Done) => {
                    activation.by_us.push(server.clone())
                }
                (ActionKind::DisableActivation, Outcome::Interrupted | Outcome::Error) => {
                    activation.unknown.push(server.clone())
                }
                (ActionKind::EnableActivation, Outcome::Done) => {
                    activation.by_us.retain(|s| s != server);
                    activation.unknown.retain(|s| s != server);
                }
                _ => {}
            }
        }
        activation
    }

    /// Whether the responder disabled activation on `server` and has not re-enabled it.
    pub fn disabled_by_us(&self, server: &ServerName) -> bool {
        self.by_us.contains(server)
    }

    fn left_disabled(&self) -> Vec<ServerName> {
        self.by_us.iter().chain(&self.unknown).cloned().collect()
    }
}

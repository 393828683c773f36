//! `[simulator]`: the simulated Exchange servers and the faults they have.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::{Dur, ServerName};

/// `[simulator]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatorConfig {
    pub action_latency: Dur,
    pub servers: BTreeMap<String, SimServerConfig>,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig { action_latency: Dur(Duration::ZERO), servers: BTreeMap::new() }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimServerConfig {
    pub fault: Fault,
    pub unhealthy_monitors: Vec<String>,
    pub active_copies: u32,
    pub copies_moved_per_failover: u32,
    /// In maintenance: `Get-ServerComponentState -Component ServerWideOffline` reports `Inactive`.
    pub maintenance: bool,
    /// Database activation already disabled by an administrator before any incident.
    pub activation_disabled: bool,
    /// Database copies in other states than `Mounted` and `Healthy` (e.g. `ServiceDown = 2`); they never move.
    pub copy_states: BTreeMap<String, u32>,
    /// How long the copies a `disable_activation` moves stay `Mounted` before they are gone: moves are asynchronous.
    pub move_time: Dur,
    /// After a remedy, probes fail this long: a recycled pool or a booted server answers slowly at first.
    pub warm_up: Dur,
    /// The first this many read-only actions on the server fail in the executor (WinRM hiccups), then it answers.
    pub flaky_reads: u32,
    /// After an IISReset the server's Exchange endpoint is down this long: read-only actions on it fail.
    pub iis_reset_downtime: Dur,
    /// After a restart the server answers nothing this long: Windows and Exchange are starting.
    pub boot_time: Dur,
    /// The Windows service whose restart clears a `service` fault; any restarted service does when unset.
    pub service: Option<String>,
    /// Managed Availability's log on this server: recovery actions it took before the simulator started.
    pub ma_log: Vec<crate::ma::SimRecoveryAction>,
}

impl Default for SimServerConfig {
    fn default() -> Self {
        SimServerConfig {
            fault: Fault::None,
            unhealthy_monitors: Vec::new(),
            active_copies: 3,
            copies_moved_per_failover: 3,
            maintenance: false,
            activation_disabled: false,
            copy_states: BTreeMap::new(),
            move_time: Dur(Duration::ZERO),
            warm_up: Dur(Duration::ZERO),
            flaky_reads: 0,
            iis_reset_downtime: Dur(Duration::ZERO),
            boot_time: Dur(Duration::ZERO),
            service: None,
            ma_log: Vec::new(),
        }
    }
}

/// What the simulator must see done before a faulted server's probes pass again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    None,
    AppPool,
    IisReset,
    Restart,
    /// Cleared by restarting a Windows service (`service`, when the server names one), or by a restart.
    Service,
    Mailbox,
    Never,
}

#[derive(Debug, Clone)]
pub struct SimulatorSettings {
    pub action_latency: Duration,
    pub servers: BTreeMap<ServerName, SimServerConfig>,
}

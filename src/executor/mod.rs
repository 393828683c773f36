//! Executors carry out one runbook action on one server: the simulator for demonstrations and tests, PowerShell
//! against real Exchange servers.
//!
//! An executor knows nothing of incidents, throttles or how the journal is kept: it gets one [`Action`] made of
//! validated names and answers with a [`Report`] (both the journal's words, `crate::journal`, re-exported here as
//! the executor's interface). The engine decides whether an action may run at all.

pub mod powershell;
mod settings;
pub mod simulator;

pub use crate::journal::{Action, ProbeRef, Report, Until};
pub use settings::{BadSetting, ExecutorConfig, ExecutorKind};

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

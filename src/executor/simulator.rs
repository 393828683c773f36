//! A deterministic model of Exchange servers for demonstrations and tests (SPEC section 6, "Simulator faults").
//!
//! A faulted server's probes fail, and `Get-ServerHealth` reports its unhealthy monitors, until the named action has
//! run on it: `app_pool` (recycle), `iis_reset`, `restart`; `mailbox` (a CAS) fails while a faulted Mailbox server
//! stays faulted; `never` is never fixed; `none` is healthy. Mailbox servers hold active database copies that
//! `disable_activation` moves off a few at a time. Servers the configuration does not name are healthy.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use super::{is_passive_copy_status, Action, Report};
use crate::config::{Fault, InventoryEntry, SimServerConfig, SimulatorSettings};
use crate::domain::{Monitor, ServerName};
use crate::incident::Outcome;

/// Passive copies each simulated Mailbox server also holds, for realistic `Group Status` output.
const PASSIVE_COPIES: u32 = 3;

#[derive(Debug, Clone)]
struct SimServer {
    config: SimServerConfig,
    fixed: bool,
    active_copies: u32,
    activation_disabled: bool,
    hosts_databases: bool,
    restarts: u32,
}

impl SimServer {
    fn faulted(&self) -> bool {
        match self.config.fault {
            Fault::None => false,
            Fault::Never => true,
            _ => !self.fixed,
        }
    }
}

pub struct Simulator {
    latency: Duration,
    servers: Mutex<HashMap<ServerName, SimServer>>,
    /// Which health set each monitor belongs to, so `server_health` can filter as `Get-ServerHealth | ?{...}` does.
    health_sets: HashMap<String, String>,
}

impl Simulator {
    pub fn new(settings: &SimulatorSettings, inventory: &BTreeMap<ServerName, InventoryEntry>, health_sets: HashMap<String, String>) -> Simulator {
        let servers = settings
            .servers
            .iter()
            .map(|(name, config)| {
                let hosts_databases = inventory.get(name).map(|e| e.role.hosts_databases()).unwrap_or(config.fault != Fault::Mailbox);
                let server = SimServer {
                    config: config.clone(),
                    fixed: false,
                    active_copies: if hosts_databases { config.active_copies } else { 0 },
                    activation_disabled: config.activation_disabled,
                    hosts_databases,
                    restarts: 0,
                };
                (name.clone(), server)
            })
            .collect();
        Simulator {
            latency: settings.action_latency,
            servers: Mutex::new(servers),
            health_sets: health_sets.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect(),
        }
    }

    pub async fn run(&self, action: &Action) -> Report {
        if !self.latency.is_zero() && !matches!(action, Action::Wait { .. }) {
            tokio::time::sleep(self.latency).await;
        }
        self.apply(action)
    }

    fn apply(&self, action: &Action) -> Report {
        let mut servers = self.servers.lock().expect("simulator lock");
        // A CAS with a `mailbox` fault fails while the Mailbox server behind its probe is faulted; without a hint,
        // while any Mailbox server is.
        let backend = match action {
            Action::Probe { backend, .. } => backend.as_ref(),
            _ => None,
        };
        let mailbox_faulted = match backend {
            Some(mailbox) => servers.get(mailbox).is_some_and(|s| s.faulted()),
            None => servers.values().any(|s| s.hosts_databases && s.faulted()),
        };
        let failing = |server: &ServerName| -> bool {
            match servers.get(server) {
                None => false,
                Some(s) if s.config.fault == Fault::Mailbox => mailbox_faulted,
                Some(s) => s.faulted(),
            }
        };
        match action {
            Action::Probe { server, probe, .. } => {
                if failing(server) {
                    let mut report = Report::new(Outcome::Failed, format!("{probe}: ResultType Failed"));
                    report
                        .detail
                        .push_str(&format!("; Error occurred: Response: 503 Service Unavailable; Diagnostics header:_Cas:{server}_FAIL/HTTP:503/EASStatus:0"));
                    report
                } else {
                    Report::new(Outcome::Succeeded, format!("{probe}: ResultType Succeeded"))
                }
            }
            Action::ServerHealth { server, health_sets } => {
                let unhealthy: Vec<Monitor> = match servers.get(server) {
                    Some(s) if failing(server) => s
                        .config
                        .unhealthy_monitors
                        .iter()
                        .filter(|m| self.health_sets.get(&m.to_ascii_lowercase()).is_none_or(|hs| health_sets.matches(hs)))
                        .filter_map(|m| Monitor::parse(m).ok())
                        .collect(),
                    _ => Vec::new(),
                };
                let detail = if unhealthy.is_empty() {
                    format!("all {health_sets} monitors Healthy")
                } else {
                    format!("Unhealthy: {}", unhealthy.iter().map(Monitor::as_str).collect::<Vec<_>>().join(", "))
                };
                let outcome = if unhealthy.is_empty() { Outcome::Healthy } else { Outcome::Unhealthy };
                Report { unhealthy, ..Report::new(outcome, detail) }
            }
            Action::RecycleAppPool { server, app_pool } => {
                fix(&mut servers, server, Fault::AppPool);
                Report::new(Outcome::Done, format!("{app_pool} recycled"))
            }
            Action::IisReset { server } => {
                fix(&mut servers, server, Fault::IisReset);
                Report::new(Outcome::Done, "Internet services successfully restarted")
            }
            Action::RestartServer { server } => {
                if let Some(s) = servers.get_mut(server) {
                    s.restarts += 1;
                }
                fix(&mut servers, server, Fault::Restart);
                Report::new(Outcome::Done, format!("{server} restarted and answering"))
            }
            Action::DisableActivation { server, attempt } => {
                let mut already = false;
                if let Some(s) = servers.get_mut(server) {
                    already = s.activation_disabled;
                    s.activation_disabled = true;
                    s.active_copies = s.active_copies.saturating_sub(s.config.copies_moved_per_failover);
                }
                Report::activation_disabled(server, *attempt, already)
            }
            Action::CopyStatus { server } => {
                let mut groups: Vec<(String, u32)> = Vec::new();
                if let Some(s) = servers.get(server).filter(|s| s.hosts_databases) {
                    groups.push(("Mounted".into(), s.active_copies));
                    groups.push(("Healthy".into(), PASSIVE_COPIES));
                    groups.extend(s.config.copy_states.iter().map(|(status, count)| (status.clone(), *count)));
                }
                let not_passive: Vec<&str> =
                    groups.iter().filter(|(status, count)| *count > 0 && !is_passive_copy_status(status)).map(|(s, _)| s.as_str()).collect();
                let counts = groups.iter().map(|(status, count)| format!("{status}: {count}")).collect::<Vec<_>>().join(", ");
                if not_passive.is_empty() {
                    Report::new(Outcome::NoActiveCopies, counts)
                } else {
                    Report::new(Outcome::ActiveCopies, format!("{counts}; not passive: {}", not_passive.join(", ")))
                }
            }
            Action::ComponentState { server } => match servers.get(server) {
                Some(s) if s.config.maintenance => {
                    Report::new(Outcome::Inactive, format!("ServerWideOffline is Inactive on {server}: the server is in maintenance"))
                }
                _ => Report::new(Outcome::Active, format!("ServerWideOffline is Active on {server}")),
            },
            Action::EnableActivation { server } => {
                if let Some(s) = servers.get_mut(server) {
                    s.activation_disabled = false;
                }
                Report::new(Outcome::Done, "DatabaseCopyActivationDisabledAndMoveNow set to False")
            }
            Action::Wait { duration, .. } => Report::new(Outcome::Done, format!("waited {}", humantime::format_duration(*duration))),
        }
    }
}

fn fix(servers: &mut HashMap<ServerName, SimServer>, server: &ServerName, by: Fault) {
    if let Some(s) = servers.get_mut(server) {
        if s.config.fault == by {
            s.fixed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Role;
    use crate::domain::AppPool;
    use crate::executor::ProbeRef;

    fn name(s: &str) -> ServerName {
        ServerName::parse(s).unwrap()
    }

    fn simulator(servers: &[(&str, Fault, Role)]) -> Simulator {
        let mut settings = SimulatorSettings { action_latency: Duration::ZERO, servers: BTreeMap::new() };
        let mut inventory = BTreeMap::new();
        for (server, fault, role) in servers {
            settings.servers.insert(
                name(server),
                SimServerConfig {
                    fault: *fault,
                    unhealthy_monitors: vec!["ActiveSyncDeepTestMonitor".into()],
                    active_copies: 5,
                    copies_moved_per_failover: 2,
                    ..SimServerConfig::default()
                },
            );
            inventory.insert(name(server), InventoryEntry { role: *role, group: "g".into() });
        }
        Simulator::new(&settings, &inventory, HashMap::from([("ActiveSyncDeepTestMonitor".to_owned(), "ActiveSync".to_owned())]))
    }

    fn probe(sim: &Simulator, server: &str) -> Outcome {
        let probe = ProbeRef::parse("ActiveSync\\ActiveSyncCTPProbe").unwrap();
        sim.apply(&Action::Probe { server: name(server), probe, backend: Some(name("mbx01")) }).outcome
    }

    #[test]
    fn faults_clear_only_by_their_named_action() {
        let sim = simulator(&[("cas01", Fault::IisReset, Role::Cas), ("cas02", Fault::Never, Role::Cas), ("cas03", Fault::None, Role::Cas)]);
        assert_eq!(probe(&sim, "cas01"), Outcome::Failed);
        sim.apply(&Action::RecycleAppPool { server: name("cas01"), app_pool: AppPool::parse("MSExchangeSyncAppPool").unwrap() });
        assert_eq!(probe(&sim, "cas01"), Outcome::Failed, "a recycle does not clear an iis_reset fault");
        sim.apply(&Action::IisReset { server: name("cas01") });
        assert_eq!(probe(&sim, "cas01"), Outcome::Succeeded);
        sim.apply(&Action::RestartServer { server: name("cas02") });
        assert_eq!(probe(&sim, "cas02"), Outcome::Failed, "never is never fixed");
        assert_eq!(probe(&sim, "cas03"), Outcome::Succeeded);
        assert_eq!(probe(&sim, "unknown.contoso.com"), Outcome::Succeeded);
    }

    #[test]
    fn a_mailbox_fault_follows_the_mailbox_server_and_copies_move_a_few_at_a_time() {
        let sim = simulator(&[("cas01", Fault::Mailbox, Role::Cas), ("mbx01", Fault::Restart, Role::Mailbox)]);
        assert_eq!(probe(&sim, "cas01"), Outcome::Failed);
        let outcomes: Vec<Outcome> = (1..=3)
            .map(|attempt| {
                sim.apply(&Action::DisableActivation { server: name("mbx01"), attempt });
                sim.apply(&Action::CopyStatus { server: name("mbx01") }).outcome
            })
            .collect();
        assert_eq!(outcomes, [Outcome::ActiveCopies, Outcome::ActiveCopies, Outcome::NoActiveCopies], "5 copies, 2 moved per call");
        sim.apply(&Action::RestartServer { server: name("mbx01") });
        assert_eq!(probe(&sim, "mbx01"), Outcome::Succeeded);
        assert_eq!(probe(&sim, "cas01"), Outcome::Succeeded, "the CAS recovers with its Mailbox server");
    }
}

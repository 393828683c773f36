//! A deterministic model of Exchange servers for demonstrations and tests (SPEC section 6, "Simulator faults").
//!
//! A faulted server's probes fail, and `Get-ServerHealth` reports its unhealthy monitors, until the named action has
//! run on it: `app_pool` (recycle), `iis_reset`, `restart`; `mailbox` (a CAS) fails while a faulted Mailbox server
//! stays faulted; `never` is never fixed; `none` is healthy. Servers the configuration does not name are healthy.
//!
//! It is as unkind as Exchange where a server's settings ask: database copies move asynchronously (`move_time`) and
//! a few at a time (`copies_moved_per_failover` per `disable_activation`; the rest wait to be asked again), a remedied server fails probes while it warms up (`warm_up`), reads fail in the executor now and then
//! (`flaky_reads`), the Exchange endpoint is down while IIS resets (`iis_reset_downtime`), and a restarted server
//! answers nothing while it boots (`boot_time`). Its state lives in memory: it starts afresh with the service.
//!
//! Managed Availability acted before the simulator started where a server's `ma_log` says so: each finished,
//! successful entry has had its effect (a recycle cleared an `app_pool` fault, a service restart a `service` fault,
//! a `ForceReboot` a `restart` fault), and `ma_history` reports the entries that ended within its lookback, by the
//! wall clock; unfinished entries never count.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod settings;

pub use settings::{Fault, SimServerConfig, SimulatorConfig, SimulatorSettings};

use crate::domain::{Monitor, ServerName, ServiceName};
use crate::incident::{ActionKind, Outcome};
use crate::inventory::Inventory;
use crate::journal::{Action, Report};
use crate::ma::{self, RecoveryAction, SimRecoveryAction};

/// Passive copies each simulated Mailbox server also holds, for realistic `Group Status` output.
const PASSIVE_COPIES: u32 = 3;

#[derive(Debug, Clone)]
struct SimServer {
    config: SimServerConfig,
    fixed: bool,
    /// Mounted copies that no `disable_activation` has asked to move yet.
    active_copies: u32,
    /// Copies on their way off the server: still `Mounted` until then.
    moving: Vec<Instant>,
    /// Copies that have moved off (now passive here).
    moved: u32,
    activation_disabled: bool,
    hosts_databases: bool,
    restarts: u32,
    flaky_left: u32,
    /// Probes fail until then: the server is warming up after a remedy.
    cold_until: Option<Instant>,
    /// Read-only actions fail until then: IIS, and with it the Exchange endpoint, is restarting.
    endpoint_down_until: Option<Instant>,
    /// Every action fails until then: the server is booting.
    booting_until: Option<Instant>,
    /// Managed Availability's finished recovery actions, with wall-clock times.
    ma_log: Vec<RecoveryAction>,
}

impl SimServer {
    fn faulted(&self) -> bool {
        match self.config.fault {
            Fault::None => false,
            Fault::Never => true,
            _ => !self.fixed,
        }
    }

    fn mounted(&self, now: Instant) -> u32 {
        self.active_copies + self.moving.iter().filter(|at| **at > now).count() as u32
    }

    /// Why an executor would fail to reach the server now, if it would.
    fn unreachable(&mut self, action: &Action, now: Instant) -> Option<String> {
        let server = action.server();
        if self.booting_until.is_some_and(|until| until > now) {
            return Some(format!("Connecting to remote server {server} failed: WinRM cannot complete the operation (the server is starting)"));
        }
        if !action.is_read_only() {
            return None;
        }
        if self.endpoint_down_until.is_some_and(|until| until > now) {
            return Some(format!(
                "Connecting to remote server {server} failed: http://{server}/PowerShell/ answered 503 Service Unavailable (IIS is restarting)"
            ));
        }
        if self.flaky_left > 0 {
            self.flaky_left -= 1;
            return Some(format!("Connecting to remote server {server} failed: The WinRM client cannot complete the operation within the time specified"));
        }
        None
    }

    /// A remedy ran: the server answers slowly for its warm-up.
    fn remedied(&mut self, now: Instant, downtime: Duration) {
        self.cold_until = Some(now + downtime + self.config.warm_up.0);
    }

    /// Whether restarting `service` clears this server's `service` fault.
    fn fixed_by_service(&self, service: &str) -> bool {
        self.config.fault == Fault::Service
            && self.config.service.as_deref().is_none_or(|s| s.eq_ignore_ascii_case(service))
    }

    /// What Managed Availability did before the simulator started: its log, and the effect of what succeeded.
    fn replay_ma_log(
        &mut self,
        entries: &[SimRecoveryAction],
        started: chrono::DateTime<chrono::Utc>,
    ) {
        for entry in entries.iter().filter(|e| e.finished) {
            let ended_at = started
                - chrono::Duration::from_std(entry.ago.0).unwrap_or(chrono::Duration::zero());
            let action = RecoveryAction {
                id: entry.action.clone(),
                resource: entry.resource.clone(),
                requestor: entry.requestor.clone(),
                started_at: ended_at - chrono::Duration::seconds(5),
                ended_at,
                result: entry.result.clone(),
            };
            if action.result.eq_ignore_ascii_case("Succeeded") {
                let fixed = match action.counts_as() {
                    Some(ActionKind::RecycleAppPool) => self.config.fault == Fault::AppPool,
                    Some(ActionKind::RestartService) => self.fixed_by_service(&action.resource),
                    Some(ActionKind::RestartServer) => self.config.fault == Fault::Restart,
                    _ => false,
                };
                self.fixed |= fixed;
            }
            self.ma_log.push(action);
        }
    }
}

pub struct Simulator {
    latency: Duration,
    servers: Mutex<HashMap<ServerName, SimServer>>,
    /// Which health sets each monitor belongs to (`RequestsQueuedGt500Monitor` is in ActiveSync and in IMAP), so
    /// `server_health` can filter as `Get-ServerHealth | ?{...}` does.
    health_sets: HashMap<String, Vec<String>>,
}

impl Simulator {
    pub fn new(
        settings: &SimulatorSettings,
        inventory: &Inventory,
        health_sets: HashMap<String, Vec<String>>,
    ) -> Simulator {
        let servers = settings
            .servers
            .iter()
            .map(|(name, config)| {
                let hosts_databases = inventory
                    .get(name)
                    .map(|e| e.role.hosts_databases())
                    .unwrap_or(config.fault != Fault::Mailbox);
                let server = SimServer {
                    config: config.clone(),
                    fixed: false,
                    active_copies: if hosts_databases { config.active_copies } else { 0 },
                    moving: Vec::new(),
                    moved: 0,
                    activation_disabled: config.activation_disabled,
                    hosts_databases,
                    restarts: 0,
                    flaky_left: config.flaky_reads,
                    cold_until: None,
                    endpoint_down_until: None,
                    booting_until: None,
                    ma_log: Vec::new(),
                };
                let mut server = server;
                server.replay_ma_log(&config.ma_log, chrono::Utc::now());
                (name.clone(), server)
            })
            .collect();
        Simulator {
            latency: settings.action_latency,
            servers: Mutex::new(servers),
            health_sets: health_sets
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
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
        let now = Instant::now();
        if let Some(error) =
            servers.get_mut(action.server()).and_then(|s| s.unreachable(action, now))
        {
            return Report::new(Outcome::Error, error);
        }
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
        let cold = |server: &ServerName| {
            servers.get(server).and_then(|s| s.cold_until).is_some_and(|until| until > now)
        };
        match action {
            Action::Probe { server, probe, .. } => {
                if cold(server) && !failing(server) {
                    Report::new(
                        Outcome::Failed,
                        format!("{probe}: ResultType Failed; Error occurred: Response: 500 Internal Server Error (the application is still starting)"),
                    )
                } else if failing(server) {
                    let mut report =
                        Report::new(Outcome::Failed, format!("{probe}: ResultType Failed"));
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
                        .filter(|m| {
                            self.health_sets
                                .get(&m.to_ascii_lowercase())
                                .is_none_or(|sets| sets.iter().any(|hs| health_sets.matches(hs)))
                        })
                        .filter_map(|m| Monitor::parse(m).ok())
                        .collect(),
                    _ => Vec::new(),
                };
                let detail = if unhealthy.is_empty() {
                    format!("all {health_sets} monitors Healthy")
                } else {
                    format!(
                        "Unhealthy: {}",
                        unhealthy.iter().map(Monitor::as_str).collect::<Vec<_>>().join(", ")
                    )
                };
                let outcome =
                    if unhealthy.is_empty() { Outcome::Healthy } else { Outcome::Unhealthy };
                Report { unhealthy, ..Report::new(outcome, detail) }
            }
            Action::RecycleAppPool { server, app_pools } => {
                fix(&mut servers, server, Fault::AppPool);
                if let Some(s) = servers.get_mut(server) {
                    s.remedied(now, Duration::ZERO);
                }
                let names: Vec<&str> = app_pools.iter().map(|p| p.as_str()).collect();
                Report::new(Outcome::Done, format!("{} recycled", names.join(", ")))
            }
            Action::RestartService { server, service } => {
                restart_service(&mut servers, server, service, now)
            }
            Action::MaHistory { server, lookback } => {
                let log = servers.get(server).map(|s| s.ma_log.clone()).unwrap_or_default();
                Report::ma_history(
                    server,
                    *lookback,
                    ma::recent(log, *lookback, chrono::Utc::now()),
                )
            }
            Action::IisReset { server, .. } => {
                fix(&mut servers, server, Fault::IisReset);
                if let Some(s) = servers.get_mut(server) {
                    let downtime = s.config.iis_reset_downtime.0;
                    s.endpoint_down_until = Some(now + downtime);
                    s.remedied(now, downtime);
                }
                Report::new(Outcome::Done, "Internet services successfully restarted")
            }
            Action::RestartServer { server } => {
                if let Some(s) = servers.get_mut(server) {
                    s.restarts += 1;
                    let boot = s.config.boot_time.0;
                    s.booting_until = Some(now + boot);
                    s.remedied(now, boot);
                }
                fix(&mut servers, server, Fault::Restart);
                // A reboot restarts every service too.
                fix(&mut servers, server, Fault::Service);
                Report::new(Outcome::Done, format!("{server} restarted and answering"))
            }
            Action::DisableActivation { server, attempt } => {
                let mut already = false;
                if let Some(s) = servers.get_mut(server) {
                    already = s.activation_disabled;
                    s.activation_disabled = true;
                    // Each round moves a few (SPEC: copies_moved_per_failover per call); the others stay until asked again.
                    let moves = s.active_copies.min(s.config.copies_moved_per_failover);
                    s.active_copies -= moves;
                    s.moving.extend((0..moves).map(|_| now + s.config.move_time.0));
                }
                Report::activation_disabled(server, *attempt, already)
            }
            Action::CopyStatus { server } => {
                let groups: Vec<(String, u64)> =
                    match servers.get_mut(server).filter(|s| s.hosts_databases) {
                        Some(s) => {
                            let arrived = s.moving.iter().filter(|at| **at <= now).count() as u32;
                            s.moving.retain(|at| *at > now);
                            s.moved += arrived;
                            let others = s
                                .config
                                .copy_states
                                .iter()
                                .map(|(status, count)| (status.clone(), u64::from(*count)));
                            [
                                ("Mounted".to_owned(), u64::from(s.mounted(now))),
                                ("Healthy".to_owned(), u64::from(PASSIVE_COPIES + s.moved)),
                            ]
                            .into_iter()
                            .chain(others)
                            .collect()
                        }
                        None => Vec::new(),
                    };
                Report::copy_status(server, &groups)
            }
            Action::ComponentState { server } => match servers.get(server) {
                Some(s) if s.config.maintenance => Report::new(
                    Outcome::Inactive,
                    format!(
                        "ServerWideOffline is Inactive on {server}: the server is in maintenance"
                    ),
                ),
                _ => {
                    Report::new(Outcome::Active, format!("ServerWideOffline is Active on {server}"))
                }
            },
            Action::EnableActivation { server } => {
                if let Some(s) = servers.get_mut(server) {
                    s.activation_disabled = false;
                }
                Report::new(Outcome::Done, "DatabaseCopyActivationDisabledAndMoveNow set to False")
            }
            Action::Wait { duration, .. } => Report::new(
                Outcome::Done,
                format!("waited {}", humantime::format_duration(*duration)),
            ),
        }
    }
}

/// `Restart-Service`: the service stops and starts; the server answers slowly while it warms up.
fn restart_service(
    servers: &mut HashMap<ServerName, SimServer>,
    server: &ServerName,
    service: &ServiceName,
    now: Instant,
) -> Report {
    if let Some(s) = servers.get_mut(server) {
        s.fixed |= s.fixed_by_service(service.as_str());
        s.remedied(now, Duration::ZERO);
    }
    Report::new(Outcome::Done, format!("{service} restarted on {server}; Status Running"))
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
    use crate::domain::Dur;
    use std::collections::BTreeMap;

    use crate::domain::AppPool;
    use crate::inventory::{InventoryEntry, Role};
    use crate::journal::ProbeRef;

    fn name(s: &str) -> ServerName {
        ServerName::parse(s).unwrap()
    }

    fn simulator(servers: &[(&str, Fault, Role)]) -> Simulator {
        let mut settings =
            SimulatorSettings { action_latency: Duration::ZERO, servers: BTreeMap::new() };
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
            inventory.insert(
                name(server),
                InventoryEntry { role: *role, group: "g".into(), connection_uri: None },
            );
        }
        Simulator::new(
            &settings,
            &inventory,
            HashMap::from([(
                "ActiveSyncDeepTestMonitor".to_owned(),
                vec!["ActiveSync".to_owned()],
            )]),
        )
    }

    fn probe(sim: &Simulator, server: &str) -> Outcome {
        let probe = ProbeRef::parse("ActiveSync\\ActiveSyncCTPProbe").unwrap();
        sim.apply(&Action::Probe { server: name(server), probe, backend: Some(name("mbx01")) })
            .outcome
    }

    #[test]
    fn faults_clear_only_by_their_named_action() {
        let sim = simulator(&[
            ("cas01", Fault::IisReset, Role::Cas),
            ("cas02", Fault::Never, Role::Cas),
            ("cas03", Fault::None, Role::Cas),
        ]);
        assert_eq!(probe(&sim, "cas01"), Outcome::Failed);
        sim.apply(&Action::RecycleAppPool {
            server: name("cas01"),
            app_pools: vec![AppPool::parse("MSExchangeSyncAppPool").unwrap()],
        });
        assert_eq!(
            probe(&sim, "cas01"),
            Outcome::Failed,
            "a recycle does not clear an iis_reset fault"
        );
        sim.apply(&Action::IisReset { server: name("cas01"), noforce: false });
        assert_eq!(probe(&sim, "cas01"), Outcome::Succeeded);
        sim.apply(&Action::RestartServer { server: name("cas02") });
        assert_eq!(probe(&sim, "cas02"), Outcome::Failed, "never is never fixed");
        assert_eq!(probe(&sim, "cas03"), Outcome::Succeeded);
        assert_eq!(probe(&sim, "unknown.contoso.com"), Outcome::Succeeded);
    }

    #[test]
    fn a_mailbox_fault_follows_the_mailbox_server_and_copies_move_only_when_asked() {
        let sim = simulator(&[
            ("cas01", Fault::Mailbox, Role::Cas),
            ("mbx01", Fault::Restart, Role::Mailbox),
        ]);
        assert_eq!(probe(&sim, "cas01"), Outcome::Failed);
        let copies = || sim.apply(&Action::CopyStatus { server: name("mbx01") });
        sim.apply(&Action::DisableActivation { server: name("mbx01"), attempt: 1 });
        assert_eq!(
            copies().detail,
            "Mounted: 3, Healthy: 5; not passive: Mounted",
            "5 copies, 2 moved by the activation change"
        );
        assert_eq!(copies().outcome, Outcome::ActiveCopies, "the others do not move by themselves");
        sim.apply(&Action::DisableActivation { server: name("mbx01"), attempt: 2 });
        assert_eq!(
            copies().detail,
            "Mounted: 1, Healthy: 7; not passive: Mounted",
            "each round moves two more"
        );
        sim.apply(&Action::DisableActivation { server: name("mbx01"), attempt: 3 });
        assert_eq!(copies().outcome, Outcome::NoActiveCopies);
        sim.apply(&Action::RestartServer { server: name("mbx01") });
        assert_eq!(probe(&sim, "mbx01"), Outcome::Succeeded);
        assert_eq!(
            probe(&sim, "cas01"),
            Outcome::Succeeded,
            "the CAS recovers with its Mailbox server"
        );
    }

    #[test]
    fn exchange_takes_its_time_and_stumbles() {
        let ms = |n| Dur(Duration::from_millis(n));
        let config = SimServerConfig {
            fault: Fault::AppPool,
            active_copies: 2,
            copies_moved_per_failover: 2,
            move_time: ms(150),
            warm_up: ms(150),
            flaky_reads: 1,
            iis_reset_downtime: ms(150),
            boot_time: ms(150),
            ..SimServerConfig::default()
        };
        let settings = SimulatorSettings {
            action_latency: Duration::ZERO,
            servers: BTreeMap::from([(name("mbx01"), config)]),
        };
        let inventory = BTreeMap::from([(
            name("mbx01"),
            InventoryEntry { role: Role::Mailbox, group: "g".into(), connection_uri: None },
        )]);
        let sim = Simulator::new(&settings, &inventory, HashMap::new());
        let pause = || std::thread::sleep(Duration::from_millis(200));
        let state = || sim.apply(&Action::ComponentState { server: name("mbx01") });

        assert_eq!(state().outcome, Outcome::Error, "one WinRM hiccup");
        assert_eq!(state().outcome, Outcome::Active);
        sim.apply(&Action::RecycleAppPool {
            server: name("mbx01"),
            app_pools: vec![AppPool::parse("MSExchangeSyncAppPool").unwrap()],
        });
        assert_eq!(probe(&sim, "mbx01"), Outcome::Failed, "a fresh pool warms up");
        pause();
        assert_eq!(probe(&sim, "mbx01"), Outcome::Succeeded);

        sim.apply(&Action::DisableActivation { server: name("mbx01"), attempt: 1 });
        assert_eq!(
            sim.apply(&Action::CopyStatus { server: name("mbx01") }).outcome,
            Outcome::ActiveCopies,
            "moves take time"
        );
        pause();
        assert_eq!(
            sim.apply(&Action::CopyStatus { server: name("mbx01") }).outcome,
            Outcome::NoActiveCopies
        );

        sim.apply(&Action::IisReset { server: name("mbx01"), noforce: true });
        assert!(state().detail.contains("503"), "the endpoint is down while IIS resets");
        pause();
        assert_eq!(state().outcome, Outcome::Active);

        sim.apply(&Action::RestartServer { server: name("mbx01") });
        assert!(state().detail.contains("the server is starting"));
        pause();
        assert_eq!(state().outcome, Outcome::Active);
    }
}

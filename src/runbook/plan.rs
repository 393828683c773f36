//! The pure step function: given an incident, the runbooks and the incident's journal so far, what happens next.
//!
//! The runbook is interpreted by replaying it against the journal: the interpreter walks the runbook as plain
//! sequential code, and each time it wants an action it takes the next journal step instead, if there is one.
//! Where the journal ends, the wanted action is the decision. So the incident's position is never stored apart
//! from its journal, and a restarted engine continues exactly where the journal stops.
//!
//! Crash safety lives here too: a mutating step whose result was lost is recorded `interrupted`, and every
//! mutating step is followed by verification before anything else changes a server, so nothing is repeated blind.
//! This module does no IO and reads no clock.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Remedy, Runbook, RunbookSet};
use crate::config::{InventoryEntry, Role};
use crate::domain::{HealthSet, HealthSetPattern, Monitor, ServerName};
use crate::executor::Action;
use crate::incident::{ActionKind, Outcome, State};

/// What the incident says about itself.
#[derive(Debug, Clone)]
pub struct Facts {
    pub server: ServerName,
    pub health_set: HealthSet,
    pub monitor: Option<Monitor>,
    pub mailbox_hint: Option<ServerName>,
}

/// The settings the planner needs.
#[derive(Debug, Clone)]
pub struct Limits {
    pub settle_wait: Duration,
    pub copy_status_attempts: u32,
}

pub struct Context<'a> {
    pub facts: &'a Facts,
    pub runbooks: &'a RunbookSet,
    pub inventory: &'a BTreeMap<ServerName, InventoryEntry>,
    pub limits: &'a Limits,
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
}

/// How an incident ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub state: State,
    pub reason: String,
    /// Servers left with database activation disabled: the escalation must say so.
    pub activation_disabled: Vec<ServerName>,
}

impl Ending {
    fn new(state: State, reason: impl Into<String>) -> Self {
        Ending { state, reason: reason.into(), activation_disabled: Vec::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Run(Action),
    Finish(Ending),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub decision: Decision,
    /// The monitor, once known (an alert without one learns it from `Get-ServerHealth`).
    pub monitor: Option<Monitor>,
}

/// Decides the next step of an incident from its journal. Every step in `journal` must be finished.
pub fn next(ctx: &Context, journal: &[Done]) -> Plan {
    let mut replay = Replay { journal, pos: 0, monitor: ctx.facts.monitor.clone(), disabled: Vec::new() };
    let decision = match replay.incident(ctx) {
        Ok(ending) => Decision::Finish(ending),
        Err(decision) => decision,
    };
    let decision = match decision {
        Decision::Finish(mut ending) => {
            ending.activation_disabled = replay.disabled;
            Decision::Finish(ending)
        }
        run => run,
    };
    Plan { decision, monitor: replay.monitor }
}

/// `Err` carries the decision out of the interpreter: an action to run, or an early ending.
type Step<T> = Result<T, Decision>;

enum Remedied {
    Recovered(String),
    Exhausted(String),
}

struct Replay<'a> {
    journal: &'a [Done],
    pos: usize,
    monitor: Option<Monitor>,
    disabled: Vec<ServerName>,
}

fn stop(state: State, reason: impl Into<String>) -> Decision {
    Decision::Finish(Ending::new(state, reason))
}

impl<'a> Replay<'a> {
    /// The journal's record of `action`, or the decision to run it.
    fn run(&mut self, action: Action) -> Step<&'a Done> {
        let journal: &'a [Done] = self.journal;
        match journal.get(self.pos) {
            None => Err(Decision::Run(action)),
            Some(done) if done.action == action.kind() && &done.server == action.server() => {
                self.pos += 1;
                Ok(done)
            }
            Some(done) => Err(stop(
                State::Blocked,
                format!(
                    "the journal no longer matches the runbook (step {} was {} on {}, the runbook now asks for {} on {}); was the runbook changed while the incident ran?",
                    self.pos + 1,
                    done.action,
                    done.server,
                    action.kind(),
                    action.server()
                ),
            )),
        }
    }

    /// A read-only check; an executor failure stops the incident.
    fn read(&mut self, action: Action) -> Step<&'a Done> {
        let done = self.run(action)?;
        match done.outcome {
            Outcome::Error => Err(stop(State::Blocked, format!("executor failure: {} on {} failed: {}", done.action, done.server, done.detail))),
            _ => Ok(done),
        }
    }

    /// A change to a server. `interrupted` (the result was lost in a crash) counts as done: verification follows.
    fn mutate(&mut self, action: Action) -> Step<&'a Done> {
        let done = self.run(action)?;
        match done.outcome {
            Outcome::Error => Err(stop(State::Blocked, format!("executor failure: {} on {} failed: {}", done.action, done.server, done.detail))),
            Outcome::Throttled => Err(stop(State::Blocked, format!("throttled: {}", done.detail))),
            _ => Ok(done),
        }
    }

    fn incident(&mut self, ctx: &Context) -> Step<Ending> {
        let facts = ctx.facts;
        let server = &facts.server;
        let Some(entry) = ctx.inventory.get(server) else {
            return Ok(Ending::new(State::Blocked, format!("{server} is not in the server inventory; automation acts on inventory servers only")));
        };
        let monitor = match self.monitor.clone() {
            Some(monitor) => monitor,
            None => {
                let health = self.read(Action::ServerHealth { server: server.clone(), health_sets: HealthSetPattern::exact(&facts.health_set) })?;
                let found = health.unhealthy.iter().find(|m| ctx.runbooks.get(m).is_some()).or(health.unhealthy.first());
                let Some(monitor) = found else {
                    return Ok(Ending::new(
                        State::Transient,
                        format!("Get-ServerHealth shows no Unhealthy monitor in the {} health set on {server}; nothing was done", facts.health_set),
                    ));
                };
                self.monitor = Some(monitor.clone());
                monitor.clone()
            }
        };
        let Some(runbook) = ctx.runbooks.get(&monitor) else {
            return Ok(Ending::new(State::Blocked, format!("unknown monitor {monitor}: no runbook answers it (add one to runbook_dir)")));
        };
        if self.verify(ctx, runbook, server, &monitor, false)? {
            return Ok(Ending::new(State::Transient, format!("{} at once: the problem no longer exists and nothing was done", passed(runbook, &monitor))));
        }
        Ok(match self.remedies(ctx, runbook, server, &monitor, entry.role, true)? {
            Remedied::Recovered(how) => Ending::new(State::Recovered, how),
            Remedied::Exhausted(why) => Ending::new(State::Escalated, why),
        })
    }

    /// Runs a runbook's remedies on `server`, verifying after each. `top` is false for a Mailbox server's runbook
    /// run from a CAS incident, which does not check a mailbox again.
    fn remedies(&mut self, ctx: &Context, runbook: &Runbook, server: &ServerName, monitor: &Monitor, role: Role, top: bool) -> Step<Remedied> {
        let mut tried = false;
        for remedy in runbook.remedies.iter().filter(|r| r.applies_to(role)) {
            tried = true;
            match remedy {
                Remedy::RecycleAppPool { app_pool, .. } => {
                    self.mutate(Action::RecycleAppPool { server: server.clone(), app_pool: app_pool.clone() })?;
                    if self.verify(ctx, runbook, server, monitor, true)? {
                        return Ok(Remedied::Recovered(format!("recycling {app_pool} on {server} fixed it")));
                    }
                }
                Remedy::IisReset { .. } => {
                    self.mutate(Action::IisReset { server: server.clone() })?;
                    if self.verify(ctx, runbook, server, monitor, true)? {
                        return Ok(Remedied::Recovered(format!("IISReset on {server} fixed it")));
                    }
                }
                Remedy::RestartServer { .. } => {
                    if let Some(result) = self.restart(ctx, runbook, server, monitor, role)? {
                        return Ok(result);
                    }
                }
                Remedy::CheckMailbox { health_sets, .. } if top => {
                    if let Some(result) = self.check_mailbox(ctx, runbook, server, monitor, health_sets)? {
                        return Ok(result);
                    }
                }
                Remedy::CheckMailbox { .. } => {}
            }
        }
        if !tried {
            return Ok(Remedied::Exhausted(format!(
                "{}; the runbook has no remedy for {monitor} on a {role} server, so a person must look",
                failing(runbook, monitor)
            )));
        }
        Ok(Remedied::Exhausted(format!("{} after all remedies", failing(runbook, monitor))))
    }

    /// Step 5 of the CTP runbook: the `_Mbx:` server's health decides between fixing it and restarting the CAS.
    fn check_mailbox(
        &mut self,
        ctx: &Context,
        runbook: &Runbook,
        server: &ServerName,
        monitor: &Monitor,
        health_sets: &HealthSetPattern,
    ) -> Step<Option<Remedied>> {
        let Some(mailbox) = &ctx.facts.mailbox_hint else {
            return Err(stop(
                State::Blocked,
                format!("no _Mbx: hint in the alert: cannot verify the Mailbox server behind {server}, and will not restart it blind"),
            ));
        };
        let Some(entry) = ctx.inventory.get(mailbox) else {
            return Err(stop(State::Blocked, format!("the _Mbx: server {mailbox} is not in the server inventory; automation acts on inventory servers only")));
        };
        let health = self.read(Action::ServerHealth { server: mailbox.clone(), health_sets: health_sets.clone() })?;
        if health.unhealthy.is_empty() {
            return Ok(None);
        }
        let Some((sub_monitor, sub_runbook)) = health.unhealthy.iter().find_map(|m| ctx.runbooks.get(m).map(|r| (m, r))) else {
            let names: Vec<&str> = health.unhealthy.iter().map(Monitor::as_str).collect();
            return Ok(Some(Remedied::Exhausted(format!("the Mailbox server {mailbox} reports {} Unhealthy and no runbook answers them", names.join(", ")))));
        };
        match self.remedies(ctx, sub_runbook, mailbox, sub_monitor, entry.role, false)? {
            Remedied::Exhausted(why) => Ok(Some(Remedied::Exhausted(format!("the Mailbox server {mailbox} could not be recovered: {why}")))),
            Remedied::Recovered(how) => {
                if self.verify(ctx, runbook, server, monitor, true)? {
                    Ok(Some(Remedied::Recovered(format!("{sub_monitor} on the Mailbox server {mailbox}: {how}"))))
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// Restarts a server; a Mailbox server fails its databases over first and back once verification passes.
    /// `None` means the restart did not help and the runbook goes on.
    fn restart(&mut self, ctx: &Context, runbook: &Runbook, server: &ServerName, monitor: &Monitor, role: Role) -> Step<Option<Remedied>> {
        if role.hosts_databases() {
            let attempts = ctx.limits.copy_status_attempts;
            let mut emptied = false;
            for attempt in 1..=attempts {
                let done = self.mutate(Action::DisableActivation { server: server.clone(), attempt })?;
                if matches!(done.outcome, Outcome::Done | Outcome::Interrupted) && !self.disabled.contains(server) {
                    self.disabled.push(server.clone());
                }
                if self.read(Action::CopyStatus { server: server.clone() })?.outcome == Outcome::NoActiveCopies {
                    emptied = true;
                    break;
                }
            }
            if !emptied {
                return Ok(Some(Remedied::Exhausted(format!(
                    "active database copies remain on {server} after {attempts} failover attempt(s); the server was not restarted"
                ))));
            }
        }
        self.mutate(Action::RestartServer { server: server.clone() })?;
        if !self.verify(ctx, runbook, server, monitor, true)? {
            return Ok(None);
        }
        if role.hosts_databases() {
            loop {
                let done = self.mutate(Action::EnableActivation { server: server.clone() })?;
                if done.outcome != Outcome::Interrupted {
                    self.disabled.retain(|s| s != server);
                    break;
                }
                // The result of re-enabling was lost: verify again before repeating it.
                if !self.verify(ctx, runbook, server, monitor, true)? {
                    return Ok(Some(Remedied::Exhausted(format!("{} again before activation could be re-enabled on {server}", failing(runbook, monitor)))));
                }
            }
        }
        Ok(Some(Remedied::Recovered(format!("restarting {server} fixed it"))))
    }

    /// Whether the problem is gone: the probe succeeds, or `Get-ServerHealth` no longer reports the monitor.
    fn verify(&mut self, ctx: &Context, runbook: &Runbook, server: &ServerName, monitor: &Monitor, after_remedy: bool) -> Step<bool> {
        if let Some(probe) = &runbook.verify.probe {
            let backend = ctx.facts.mailbox_hint.clone().filter(|_| server == &ctx.facts.server);
            return Ok(self.read(Action::Probe { server: server.clone(), probe: probe.clone(), backend })?.outcome == Outcome::Succeeded);
        }
        let Some(health_sets) = &runbook.verify.server_health else {
            return Ok(false);
        };
        if after_remedy && runbook.verify.settle && !ctx.limits.settle_wait.is_zero() {
            self.run(Action::Wait { server: server.clone(), duration: ctx.limits.settle_wait })?;
        }
        let health = self.read(Action::ServerHealth { server: server.clone(), health_sets: health_sets.clone() })?;
        Ok(!health.unhealthy.iter().any(|m| m.matches(monitor.as_str())))
    }
}

fn passed(runbook: &Runbook, monitor: &Monitor) -> String {
    match &runbook.verify.probe {
        Some(probe) => format!("probe {probe} succeeded"),
        None => format!("{monitor} was Healthy"),
    }
}

fn failing(runbook: &Runbook, monitor: &Monitor) -> String {
    match &runbook.verify.probe {
        Some(_) => "probe still failing".to_owned(),
        None => format!("{monitor} still Unhealthy"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ServerName {
        ServerName::parse(s).unwrap()
    }

    /// Feeds the planner the outcomes a scenario gives, step by step, and returns the steps and the ending.
    fn drive(monitor: Option<&str>, hint: Option<&str>, answer: impl Fn(&Action, usize) -> (Outcome, Vec<&'static str>)) -> (Vec<String>, Ending) {
        let runbooks = RunbookSet::load(None).unwrap();
        let inventory = BTreeMap::from([
            (name("cas01"), InventoryEntry { role: Role::Cas, group: "cas".into() }),
            (name("mbx01"), InventoryEntry { role: Role::Mailbox, group: "dag".into() }),
        ]);
        let facts = Facts {
            server: name("cas01"),
            health_set: HealthSet::parse("ActiveSync").unwrap(),
            monitor: monitor.map(|m| Monitor::parse(m).unwrap()),
            mailbox_hint: hint.map(name),
        };
        let limits = Limits { settle_wait: Duration::from_secs(600), copy_status_attempts: 2 };
        let ctx = Context { facts: &facts, runbooks: &runbooks, inventory: &inventory, limits: &limits };
        let mut journal = Vec::new();
        loop {
            match next(&ctx, &journal).decision {
                Decision::Finish(ending) => {
                    let steps = journal.iter().map(|d: &Done| format!("{} {} {}", d.action, d.server, d.outcome)).collect();
                    return (steps, ending);
                }
                Decision::Run(action) => {
                    let (outcome, unhealthy) = answer(&action, journal.len());
                    journal.push(Done {
                        action: action.kind(),
                        server: action.server().clone(),
                        outcome,
                        detail: String::new(),
                        unhealthy: unhealthy.into_iter().map(|m| Monitor::parse(m).unwrap()).collect(),
                    });
                }
            }
        }
    }

    #[test]
    fn ctp_with_an_unhealthy_mailbox_server_fixes_the_mailbox_first() {
        let (steps, ending) = drive(Some("ActiveSyncCTPMonitor"), Some("mbx01"), |action, _| match action {
            Action::Probe { server, .. } if server.as_str() == "cas01" => (Outcome::Failed, vec![]),
            Action::Probe { .. } => (Outcome::Succeeded, vec![]),
            Action::ServerHealth { .. } => (Outcome::Unhealthy, vec!["ActiveSyncDeepTestMonitor"]),
            _ => (Outcome::Done, vec![]),
        });
        assert_eq!(
            steps,
            [
                "probe cas01 failed",
                "recycle_app_pool cas01 done",
                "probe cas01 failed",
                "iis_reset cas01 done",
                "probe cas01 failed",
                "server_health mbx01 unhealthy",
                "recycle_app_pool mbx01 done",
                "probe mbx01 succeeded",
                "probe cas01 failed",
                "restart_server cas01 done",
                "probe cas01 failed",
            ]
        );
        assert_eq!(ending.state, State::Escalated);
        assert_eq!(ending.reason, "probe still failing after all remedies");
    }

    #[test]
    fn a_lost_restart_result_is_verified_not_repeated() {
        let (steps, ending) = drive(Some("ActiveSyncCTPMonitor"), Some("mbx01"), |action, seq| match action {
            Action::Probe { .. } => (if seq < 7 { Outcome::Failed } else { Outcome::Succeeded }, vec![]),
            Action::ServerHealth { .. } => (Outcome::Healthy, vec![]),
            Action::RestartServer { .. } => (Outcome::Interrupted, vec![]),
            _ => (Outcome::Done, vec![]),
        });
        assert_eq!(&steps[6..], ["restart_server cas01 interrupted", "probe cas01 succeeded"]);
        assert_eq!(ending.state, State::Recovered);
    }

    #[test]
    fn a_mailbox_restart_whose_copies_never_move_escalates_with_activation_disabled() {
        let (steps, ending) = drive(Some("ActiveSyncCTPMonitor"), Some("mbx01"), |action, _| match action {
            Action::Probe { .. } => (Outcome::Failed, vec![]),
            Action::ServerHealth { .. } => (Outcome::Unhealthy, vec!["ActiveSyncDeepTestMonitor"]),
            Action::CopyStatus { .. } => (Outcome::ActiveCopies, vec![]),
            _ => (Outcome::Done, vec![]),
        });
        assert!(steps.ends_with(&[
            "disable_activation mbx01 done".into(),
            "copy_status mbx01 active_copies".into(),
            "disable_activation mbx01 done".into(),
            "copy_status mbx01 active_copies".into()
        ]));
        assert_eq!(ending.state, State::Escalated);
        assert!(ending.reason.contains("active database copies remain on mbx01 after 2"), "{}", ending.reason);
        assert_eq!(ending.activation_disabled, [name("mbx01")]);
    }
}

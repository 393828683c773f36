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

mod ladder;

use super::{Remedy, Runbook, RunbookSet};
use crate::inventory::{InventoryEntry, Role};
use crate::domain::{AppPool, HealthSet, HealthSetPattern, Monitor, ServerName, ServiceName};
use crate::executor::{Action, Until};
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

/// The settings the planner needs (`[timing]`).
#[derive(Debug, Clone)]
pub struct Limits {
    pub settle_wait: Duration,
    pub warm_up: Duration,
    pub restart_timeout: Duration,
    pub failover_timeout: Duration,
    pub poll_interval: Duration,
    /// `safety.ma_lookback`: zero reads no Managed Availability history.
    pub ma_lookback: Duration,
}

impl Limits {
    /// How many copy-status checks follow the first one before a failover gives up: one every `poll_interval`
    /// until `failover_timeout` has passed.
    fn polls(&self) -> u32 {
        let polls = self.failover_timeout.as_millis() / self.poll_interval.as_millis().max(1);
        u32::try_from(polls).unwrap_or(u32::MAX)
    }
}

pub struct Context<'a> {
    pub facts: &'a Facts,
    pub runbooks: &'a RunbookSet,
    pub inventory: &'a BTreeMap<ServerName, InventoryEntry>,
    pub limits: &'a Limits,
    /// The mutating actions that wait for a person's approval (`approval.actions`; none in a dry run).
    pub approval: &'a [ActionKind],
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
        Ending { state, reason: reason.into(), activation_disabled: activation.left_disabled(), activation_left_as_found: activation.as_found }
    }
}

/// What the journal says about database activation on each server the incident failed over.
#[derive(Debug, Default)]
struct Activation {
    /// Disabled by the responder; re-enabling it is the responder's to do.
    by_us: Vec<ServerName>,
    /// The first `disable_activation` of a failover lost its result (or failed): activation may be disabled, and
    /// whether it was before is unknown, so the responder does not re-enable it.
    unknown: Vec<ServerName>,
    /// Already disabled when the responder's failover began.
    as_found: Vec<ServerName>,
}

impl Activation {
    fn read(journal: &[Done]) -> Activation {
        let mut activation = Activation::default();
        for done in journal {
            let server = &done.server;
            let known = activation.by_us.contains(server) || activation.unknown.contains(server) || activation.as_found.contains(server);
            match (done.action, done.outcome) {
                // Only the first disable of a failover tells how activation was before: later rounds find it
                // disabled by the first.
                (ActionKind::DisableActivation, _) if known => {}
                (ActionKind::DisableActivation, Outcome::Done) if done.already_in_place => activation.as_found.push(server.clone()),
                (ActionKind::DisableActivation, Outcome::Done) => activation.by_us.push(server.clone()),
                (ActionKind::DisableActivation, Outcome::Interrupted | Outcome::Error) => activation.unknown.push(server.clone()),
                (ActionKind::EnableActivation, Outcome::Done) => {
                    activation.by_us.retain(|s| s != server);
                    activation.unknown.retain(|s| s != server);
                }
                _ => {}
            }
        }
        activation
    }

    fn left_disabled(&self) -> Vec<ServerName> {
        self.by_us.iter().chain(&self.unknown).cloned().collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Run(Action),
    /// Journal the action `skipped` without running it, with this reason: Managed Availability already did it.
    Skip(Action, String),
    /// Ask a person to approve these steps (journaled as an `approval` step, `requested`).
    Ask(Proposal),
    /// A person has been asked and has not decided: the incident waits `awaiting_approval`.
    Await,
    Finish(Ending),
}

/// What a person is asked to approve: one remedy, or a whole restart procedure (a Mailbox server's failover, its
/// restart and re-enabling activation), all on one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub server: ServerName,
    /// The steps the approval covers, the first being the one that would run next.
    pub covers: Vec<Action>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub decision: Decision,
    /// The monitor, once known (an alert without one learns it from `Get-ServerHealth`).
    pub monitor: Option<Monitor>,
}

/// Decides the next step of an incident from its journal. Every step in `journal` must be finished.
pub fn next(ctx: &Context, journal: &[Done]) -> Plan {
    let mut replay = Replay { journal, pos: 0, monitor: ctx.facts.monitor.clone(), in_service: Vec::new(), ran: Vec::new(), ma_read: Vec::new() };
    let decision = match replay.incident(ctx) {
        Ok(ending) => Decision::Finish(ending),
        Err(decision) => decision,
    };
    Plan { decision, monitor: replay.monitor }
}

/// `Err` carries the decision out of the interpreter: an action to run, or an early ending.
type Step<T> = Result<T, Decision>;

enum Remedied {
    Recovered(String),
    Exhausted(String),
}

/// A remedy as run on one server, so that one incident never runs the same remedy twice on a server.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ran {
    Recycle(ServerName, AppPool),
    IisReset(ServerName),
    Service(ServerName, ServiceName),
    Restart(ServerName),
}

struct Replay<'a> {
    journal: &'a [Done],
    pos: usize,
    monitor: Option<Monitor>,
    /// Servers whose `component_state` this incident found `active`.
    in_service: Vec<ServerName>,
    /// The remedies run so far in this incident.
    ran: Vec<Ran>,
    /// Managed Availability's recent recovery actions on each server this incident read them for.
    ma_read: Vec<(ServerName, Vec<RecoveryAction>)>,
}

impl<'a> Replay<'a> {
    /// The journal up to where the replay has read: what an ending decided now knows.
    fn stop(&self, state: State, reason: impl Into<String>) -> Decision {
        Decision::Finish(self.ending(state, reason))
    }

    fn ending(&self, state: State, reason: impl Into<String>) -> Ending {
        Ending::from_journal(state, reason, &self.journal[..self.pos])
    }

    /// The journal's record of `action`, or the decision to run it.
    fn run(&mut self, action: Action) -> Step<&'a Done> {
        let journal: &'a [Done] = self.journal;
        match journal.get(self.pos) {
            None => Err(Decision::Run(action)),
            Some(done) if done.action == action.kind() && &done.server == action.server() => {
                self.pos += 1;
                Ok(done)
            }
            Some(done) => Err(self.mismatch(done, action.kind(), action.server())),
        }
    }

    fn mismatch(&self, done: &Done, wanted: ActionKind, server: &ServerName) -> Decision {
        Decision::Finish(Ending::from_journal(
            State::Blocked,
            format!(
                "the journal no longer matches the runbook (step {} was {} on {}, the runbook now asks for {wanted} on {server}); was the runbook changed while the incident ran?",
                self.pos + 1,
                done.action,
                done.server,
            ),
            self.journal,
        ))
    }

    /// Approval (`approval.actions`): before `proposal` runs, a person decides. Maintenance and throttles come
    /// first, so nobody is asked to approve what the rules would refuse (the engine records a throttled proposal as
    /// its first step, `throttled`, instead of asking). A denial or silence ends the incident `blocked`. After an
    /// approval the problem is verified again, and the steps run only if it persists; the server's maintenance
    /// state is checked again before they change it, however long the decision took.
    fn approved(&mut self, ctx: &Context, runbook: &Runbook, checked: &ServerName, monitor: &Monitor, proposal: Proposal) -> Step<()> {
        if !proposal.covers.iter().any(|action| ctx.approval.contains(&action.kind())) {
            return Ok(());
        }
        let server = proposal.server.clone();
        if !self.in_service.contains(&server) {
            self.in_service(&server)?;
        }
        let first = proposal.covers[0].kind();
        let journal: &'a [Done] = self.journal;
        let requested = match journal.get(self.pos) {
            None => return Err(Decision::Ask(proposal)),
            Some(done) if done.action == first && done.server == server && done.outcome == Outcome::Throttled => {
                self.pos += 1;
                return Err(self.stop(State::Blocked, format!("throttled: {}", done.detail)));
            }
            Some(done) if done.action == ActionKind::Approval && done.server == server => done,
            Some(done) => return Err(self.mismatch(done, ActionKind::Approval, &server)),
        };
        self.pos += 1;
        let decision = match journal.get(self.pos) {
            None => return Err(Decision::Await),
            Some(done) if done.action == ActionKind::Approval && done.server == server => done,
            Some(done) => return Err(self.mismatch(done, ActionKind::Approval, &server)),
        };
        self.pos += 1;
        let proposed = proposal.covers.iter().map(|action| action.kind().as_str()).collect::<Vec<_>>().join(", ");
        match decision.outcome {
            Outcome::Approved => {}
            Outcome::Denied | Outcome::Expired => {
                let why = format!("approval {} {}; {proposed} on {server} was not run", decision.outcome, decision.detail);
                return Err(self.stop(State::Blocked, why));
            }
            _ => return Err(self.stop(State::Blocked, format!("the approval asked for in step {} has no decision ({})", self.pos - 1, requested.outcome))),
        }
        // The decision may have taken an hour: what the server was then says little now.
        self.in_service.clear();
        if self.verify(ctx, runbook, checked, monitor, false)? {
            let changed = self.journal[..self.pos].iter().any(|d| d.action.is_mutating() && matches!(d.outcome, Outcome::Done | Outcome::Interrupted));
            let state = if changed { State::Recovered } else { State::Transient };
            let since = if changed { "an earlier remedy took effect" } else { "the problem went away by itself" };
            return Err(self
                .stop(state, format!("{} when checked again after the approval: {since}, and {proposed} on {server} was not run", passed(runbook, monitor))));
        }
        Ok(())
    }

    /// A read-only check; an executor failure stops the incident.
    fn read(&mut self, action: Action) -> Step<&'a Done> {
        let done = self.run(action)?;
        match done.outcome {
            Outcome::Error => Err(self.stop(State::Blocked, format!("executor failure: {} on {} failed: {}", done.action, done.server, done.detail))),
            _ => Ok(done),
        }
    }

    /// Maintenance: `Get-ServerComponentState -Component ServerWideOffline` must say `Active`; otherwise the server
    /// is never changed and the incident ends `suppressed`.
    fn in_service(&mut self, server: &ServerName) -> Step<()> {
        let done = self.read(Action::ComponentState { server: server.clone() })?;
        if done.outcome != Outcome::Active {
            return Err(self.stop(State::Suppressed, format!("{server} is in maintenance ({}); automation never changes a server in maintenance", done.detail)));
        }
        if !self.in_service.contains(server) {
            self.in_service.push(server.clone());
        }
        Ok(())
    }

    /// A change to a server, after checking once per incident that the server is not in maintenance.
    /// `interrupted` (the result was lost in a crash) counts as done: verification follows.
    fn mutate(&mut self, action: Action) -> Step<&'a Done> {
        if !self.in_service.contains(action.server()) {
            self.in_service(action.server())?;
        }
        let done = self.run(action)?;
        match done.outcome {
            Outcome::Error => Err(self.stop(State::Blocked, format!("executor failure: {} on {} failed: {}", done.action, done.server, done.detail))),
            Outcome::Throttled => Err(self.stop(State::Blocked, format!("throttled: {}", done.detail))),
            _ => Ok(done),
        }
    }

    fn incident(&mut self, ctx: &Context) -> Step<Ending> {
        let facts = ctx.facts;
        let server = &facts.server;
        let Some(entry) = ctx.inventory.get(server) else {
            return Ok(self.ending(State::Blocked, format!("{server} is not in the server inventory; automation acts on inventory servers only")));
        };
        let monitor = match self.monitor.clone() {
            Some(monitor) => monitor,
            None => {
                let health = self.read(Action::ServerHealth { server: server.clone(), health_sets: HealthSetPattern::exact(&facts.health_set) })?;
                let found = health.unhealthy.iter().find(|m| ctx.runbooks.get(&facts.health_set, m).is_some()).or(health.unhealthy.first());
                let Some(monitor) = found else {
                    return Ok(self.ending(
                        State::Transient,
                        format!("Get-ServerHealth shows no Unhealthy monitor in the {} health set on {server}; nothing was done", facts.health_set),
                    ));
                };
                self.monitor = Some(monitor.clone());
                monitor.clone()
            }
        };
        let Some(runbook) = ctx.runbooks.get(&facts.health_set, &monitor) else {
            return Ok(self.ending(State::Blocked, format!("unknown monitor {monitor}: no runbook answers it (add one to runbook_dir)")));
        };
        if self.verify(ctx, runbook, server, &monitor, false)? {
            return Ok(self.ending(State::Transient, format!("{} at once: the problem no longer exists and nothing was done", passed(runbook, &monitor))));
        }
        Ok(match self.remedies(ctx, runbook, server, &monitor, entry.role, true)? {
            Remedied::Recovered(how) => self.ending(State::Recovered, how),
            Remedied::Exhausted(why) => self.ending(State::Escalated, why),
        })
    }

    /// Runs a runbook's remedies on `server`, verifying after each, skipping any this incident already ran there.
    /// `top` is false for a Mailbox server's runbook run from a CAS incident, which does not check a mailbox again.
    fn remedies(&mut self, ctx: &Context, runbook: &Runbook, server: &ServerName, monitor: &Monitor, role: Role, top: bool) -> Step<Remedied> {
        let mut tried = false;
        for remedy in runbook.remedies.iter().filter(|r| r.applies_to(role)) {
            tried = true;
            match remedy {
                Remedy::RecycleAppPool { .. } | Remedy::IisReset { .. } | Remedy::RestartService { .. } => {
                    if let Some(result) = self.remedy(ctx, runbook, server, monitor, remedy)? {
                        return Ok(result);
                    }
                }
                Remedy::RestartServer { .. } => {
                    if !self.first_time(Ran::Restart(server.clone())) {
                        continue;
                    }
                    let result = match self.rebooted_by_ma(ctx, runbook, server, monitor)? {
                        Some(result) => result,
                        None => self.restart(ctx, runbook, server, monitor, role)?,
                    };
                    if let Some(result) = result {
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

    /// Records a remedy as run; false when this incident already ran it.
    fn first_time(&mut self, ran: Ran) -> bool {
        if self.ran.contains(&ran) {
            return false;
        }
        self.ran.push(ran);
        true
    }

    /// Step 5 of the CTP runbook: the `_Mbx:` server's health decides between fixing it and restarting the CAS.
    /// Every unhealthy monitor with a runbook is addressed in turn, the CAS probed after each recovery, and the
    /// Mailbox server checked again; only when that check finds it all healthy does the CAS restart (`None`).
    fn check_mailbox(
        &mut self,
        ctx: &Context,
        runbook: &Runbook,
        server: &ServerName,
        monitor: &Monitor,
        health_sets: &HealthSetPattern,
    ) -> Step<Option<Remedied>> {
        let Some(mailbox) = &ctx.facts.mailbox_hint else {
            return Err(self
                .stop(State::Blocked, format!("no _Mbx: hint in the alert: cannot verify the Mailbox server behind {server}, and will not restart it blind")));
        };
        let Some(entry) = ctx.inventory.get(mailbox) else {
            return Err(
                self.stop(State::Blocked, format!("the _Mbx: server {mailbox} is not in the server inventory; automation acts on inventory servers only"))
            );
        };
        let mut addressed: Vec<&Monitor> = Vec::new();
        let mut fixed: Vec<String> = Vec::new();
        loop {
            let health = self.read(Action::ServerHealth { server: mailbox.clone(), health_sets: health_sets.clone() })?;
            if health.unhealthy.is_empty() {
                return Ok(None);
            }
            let next = health
                .unhealthy
                .iter()
                .filter(|m| !addressed.iter().any(|a| a.matches(m.as_str())))
                .find_map(|m| ctx.runbooks.get_in(health_sets, m).map(|r| (m, r)));
            let Some((sub_monitor, sub_runbook)) = next else {
                let names: Vec<&str> = health.unhealthy.iter().map(Monitor::as_str).collect();
                let why = if addressed.is_empty() { "no runbook answers them" } else { "their runbooks were already run in this incident" };
                return Ok(Some(Remedied::Exhausted(format!("the Mailbox server {mailbox} reports {} Unhealthy and {why}", names.join(", ")))));
            };
            addressed.push(sub_monitor);
            match self.remedies(ctx, sub_runbook, mailbox, sub_monitor, entry.role, false)? {
                Remedied::Exhausted(why) => return Ok(Some(Remedied::Exhausted(format!("the Mailbox server {mailbox} could not be recovered: {why}")))),
                Remedied::Recovered(how) => {
                    fixed.push(format!("{sub_monitor} on the Mailbox server {mailbox}: {how}"));
                    // The Mailbox server warmed up before its own check; the CAS was not changed.
                    if self.verify(ctx, runbook, server, monitor, false)? {
                        return Ok(Some(Remedied::Recovered(fixed.join("; "))));
                    }
                }
            }
        }
    }

    /// Restarts a server; a Mailbox server fails its databases over first and back once verification passes.
    /// The server's maintenance state is checked again before the procedure and before the restart itself.
    /// `None` means the restart did not help and the runbook goes on.
    fn restart(&mut self, ctx: &Context, runbook: &Runbook, server: &ServerName, monitor: &Monitor, role: Role) -> Step<Option<Remedied>> {
        // One approval covers the whole procedure, asked before its failover starts.
        let restart = Action::RestartServer { server: server.clone() };
        let covers = match role.hosts_databases() {
            true => vec![
                Action::DisableActivation { server: server.clone(), attempt: 1 },
                Action::CopyStatus { server: server.clone() },
                restart,
                Action::EnableActivation { server: server.clone() },
            ],
            false => vec![restart],
        };
        self.approved(ctx, runbook, server, monitor, Proposal { server: server.clone(), covers })?;
        self.in_service(server)?;
        if role.hosts_databases() {
            if let Some(why) = self.fail_over(ctx, server)? {
                return Ok(Some(Remedied::Exhausted(why)));
            }
            self.in_service(server)?;
        }
        let restarted = self.run(Action::RestartServer { server: server.clone() })?;
        match restarted.outcome {
            Outcome::Error => return Err(self.stop(State::Blocked, format!("executor failure: restart_server on {server} failed: {}", restarted.detail))),
            Outcome::Throttled => {
                // Refused after all (the throttles changed since the failover began): undo the failover.
                let reason = format!("throttled: {}", restarted.detail);
                if self.reenable(server)? {
                    return Err(self.stop(State::Blocked, format!("{reason}; the failover was undone (activation re-enabled on {server})")));
                }
                return Err(self.stop(State::Blocked, reason));
            }
            _ => {}
        }
        // Windows answers before Exchange does, and a responder that restarted meanwhile finds the restart
        // interrupted: either way, first wait (bounded) until the server answers again.
        if changed(restarted) {
            self.run(Action::Wait { server: server.clone(), duration: ctx.limits.restart_timeout, until: Until::Answering })?;
        }
        if !self.verify(ctx, runbook, server, monitor, changed(restarted))? {
            return Ok(None);
        }
        if role.hosts_databases() {
            loop {
                if !Activation::read(&self.journal[..self.pos]).by_us.contains(server) {
                    break;
                }
                let done = self.mutate(Action::EnableActivation { server: server.clone() })?;
                if done.outcome != Outcome::Interrupted {
                    break;
                }
                // The result of re-enabling was lost: verify again before repeating it.
                if !self.verify(ctx, runbook, server, monitor, false)? {
                    return Ok(Some(Remedied::Exhausted(format!("{} again before activation could be re-enabled on {server}", failing(runbook, monitor)))));
                }
            }
        }
        Ok(Some(Remedied::Recovered(format!("restarting {server} fixed it"))))
    }

    /// Disables activation and checks copy status every `poll_interval` until no active copy remains (the moves are
    /// asynchronous). Halfway through `failover_timeout` with copies still active, it asks Exchange to move them
    /// again (the second `disable_activation` round runs `Move-ActiveMailboxDatabase`). Copies that never leave
    /// end the runbook here, with the reason: the server is not restarted.
    fn fail_over(&mut self, ctx: &Context, server: &ServerName) -> Step<Option<String>> {
        // Refused (changing nothing) when the restart that must follow it would be.
        let dry_run = self.mutate(Action::DisableActivation { server: server.clone(), attempt: 1 })?.outcome == Outcome::DryRun;
        let polls = ctx.limits.polls();
        let push_after = polls / 2;
        let mut copies = self.read(Action::CopyStatus { server: server.clone() })?;
        let mut checks = 0;
        while copies.outcome != Outcome::NoActiveCopies {
            if dry_run {
                // Nothing was asked to move, so waiting for the copies would only wait out the timeout.
                return Ok(Some(format!("dry run: activation was not disabled, so active database copies remain on {server} ({})", copies.detail)));
            }
            if checks == polls {
                let waited = humantime::format_duration(ctx.limits.poll_interval * polls);
                return Ok(Some(format!(
                    "active database copies remain on {server} after {waited} of copy-status checks ({}); the server was not restarted",
                    copies.detail
                )));
            }
            if checks == push_after && push_after > 0 {
                self.mutate(Action::DisableActivation { server: server.clone(), attempt: 2 })?;
            }
            self.run(Action::Wait { server: server.clone(), duration: ctx.limits.poll_interval, until: Until::Elapsed })?;
            checks += 1;
            copies = self.read(Action::CopyStatus { server: server.clone() })?;
        }
        Ok(None)
    }

    /// Re-enables activation where this incident disabled it; false when there was nothing of ours to undo.
    fn reenable(&mut self, server: &ServerName) -> Step<bool> {
        if !Activation::read(&self.journal[..self.pos]).by_us.contains(server) {
            return Ok(false);
        }
        self.mutate(Action::EnableActivation { server: server.clone() })?;
        Ok(true)
    }

    /// Whether the problem is gone: the probe succeeds, or `Get-ServerHealth` no longer reports the monitor. Right
    /// after a remedy on `server` it first waits: the settle wait for runbooks that settle, else the warm-up.
    fn verify(&mut self, ctx: &Context, runbook: &Runbook, server: &ServerName, monitor: &Monitor, after_remedy: bool) -> Step<bool> {
        let pause = if runbook.verify.settle { ctx.limits.settle_wait } else { ctx.limits.warm_up };
        if after_remedy && !pause.is_zero() {
            self.run(Action::Wait { server: server.clone(), duration: pause, until: Until::Elapsed })?;
        }
        if let Some(probe) = &runbook.verify.probe {
            let backend = ctx.facts.mailbox_hint.clone().filter(|_| server == &ctx.facts.server);
            return Ok(self.read(Action::Probe { server: server.clone(), probe: probe.clone(), backend })?.outcome == Outcome::Succeeded);
        }
        let Some(health_sets) = &runbook.verify.server_health else {
            return Ok(false);
        };
        let health = self.read(Action::ServerHealth { server: server.clone(), health_sets: health_sets.clone() })?;
        Ok(!health.unhealthy.iter().any(|m| m.matches(monitor.as_str())))
    }
}

/// Whether a change step may have changed the server (a dry run did not): then a warm-up or a boot follows it.
fn changed(done: &Done) -> bool {
    done.outcome != Outcome::DryRun
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
    use crate::executor::ProbeRef;

    pub(super) fn name(s: &str) -> ServerName {
        ServerName::parse(s).unwrap()
    }

    /// Ten minutes to settle, a minute to warm up, two copy-status checks a minute apart after the first.
    pub(super) const LIMITS: Limits = Limits {
        settle_wait: Duration::from_secs(600),
        warm_up: Duration::from_secs(60),
        restart_timeout: Duration::from_secs(1800),
        failover_timeout: Duration::from_secs(120),
        poll_interval: Duration::from_secs(60),
        ma_lookback: Duration::ZERO,
    };

    /// What a scenario answers for one action, given the journal so far.
    pub(super) type Answer<'a> = &'a dyn Fn(&Action, &[Done]) -> (Outcome, Vec<&'static str>);

    /// Feeds the planner the outcomes a scenario gives, step by step, and returns the steps and the ending.
    /// `component_state` answers `active` unless the scenario says otherwise.
    fn drive(server: &str, monitor: Option<&str>, hint: Option<&str>, answer: Answer) -> (Vec<String>, Ending) {
        drive_asking(server, monitor, hint, &[], Outcome::Approved, answer)
    }

    /// The servers the scenarios know: a CAS, a Mailbox server and a multi-role server.
    pub(super) fn inventory() -> BTreeMap<ServerName, InventoryEntry> {
        BTreeMap::from([
            (name("cas01"), InventoryEntry { role: Role::Cas, group: "cas".into(), connection_uri: None }),
            (name("mbx01"), InventoryEntry { role: Role::Mailbox, group: "dag".into(), connection_uri: None }),
            (name("multi01"), InventoryEntry { role: Role::Multi, group: "dag".into(), connection_uri: None }),
        ])
    }

    /// Like [`drive`] with `approval.actions` set to `approval`: a request is journaled `requested` (with the
    /// proposal's steps in its detail), and a person answers each with `decision`.
    fn drive_asking(
        server: &str,
        monitor: Option<&str>,
        hint: Option<&str>,
        approval: &[ActionKind],
        decision: Outcome,
        answer: Answer,
    ) -> (Vec<String>, Ending) {
        let runbooks = RunbookSet::load(None).unwrap();
        let inventory = inventory();
        let facts = Facts {
            server: name(server),
            health_set: HealthSet::parse("ActiveSync").unwrap(),
            monitor: monitor.map(|m| Monitor::parse(m).unwrap()),
            mailbox_hint: hint.map(name),
        };
        let limits = LIMITS;
        let ctx = Context { facts: &facts, runbooks: &runbooks, inventory: &inventory, limits: &limits, approval };
        let (journal, ending) = run_planner(&ctx, answer, &|_, _| (Outcome::Done, Vec::new()), decision);
        (lines(&journal), ending)
    }

    /// Feeds the planner a scenario's outcomes until it ends: `answer` for each action, `history` for the
    /// Managed Availability actions an `ma_history` step finds, `decision` for every approval asked for (its request
    /// journaled with the proposal's steps in its detail). Skipped steps are journaled `skipped`.
    pub(super) fn run_planner(
        ctx: &Context,
        answer: Answer,
        history: &dyn Fn(&Action, &[Done]) -> (Outcome, Vec<RecoveryAction>),
        decision: Outcome,
    ) -> (Vec<Done>, Ending) {
        let mut journal: Vec<Done> = Vec::new();
        loop {
            match next(ctx, &journal).decision {
                Decision::Finish(ending) => return (journal, ending),
                Decision::Skip(action, why) => journal.push(Done { detail: why, ..done(&action, Outcome::Skipped, vec![]) }),
                Decision::Run(action @ Action::MaHistory { .. }) => {
                    let (outcome, ma_actions) = history(&action, &journal);
                    journal.push(Done { ma_actions, ..done(&action, outcome, vec![]) });
                }
                Decision::Ask(proposal) => {
                    let covers: Vec<&str> = proposal.covers.iter().map(|a| a.kind().as_str()).collect();
                    let mut request = done(&Action::ComponentState { server: proposal.server.clone() }, Outcome::Requested, vec![]);
                    (request.action, request.detail) = (ActionKind::Approval, covers.join(","));
                    journal.push(request);
                }
                Decision::Await => {
                    let asked = journal.last().expect("a request comes first").clone();
                    journal.push(Done { outcome: decision, detail: "on the operator's page; reason: checked".into(), ..asked });
                }
                Decision::Run(action) => {
                    let (outcome, unhealthy) = match (&action, answer(&action, &journal)) {
                        (Action::ComponentState { .. }, (Outcome::Done, _)) => (Outcome::Active, vec![]),
                        (Action::MaHistory { .. }, _) => (Outcome::NoneFound, vec![]),
                        (_, answered) => answered,
                    };
                    journal.push(done(&action, outcome, unhealthy));
                }
            }
            assert!(journal.len() < 100, "the planner never ends: {:?}", lines(&journal));
        }
    }

    pub(super) fn done(action: &Action, outcome: Outcome, unhealthy: Vec<&str>) -> Done {
        Done {
            action: action.kind(),
            server: action.server().clone(),
            outcome,
            detail: String::new(),
            unhealthy: unhealthy.into_iter().map(|m| Monitor::parse(m).unwrap()).collect(),
            already_in_place: false,
            ma_actions: Vec::new(),
        }
    }

    pub(super) fn lines(journal: &[Done]) -> Vec<String> {
        journal
            .iter()
            .map(|d| match d.outcome {
                Outcome::Requested => format!("{} {} {} {}", d.action, d.server, d.outcome, d.detail),
                _ => format!("{} {} {}", d.action, d.server, d.outcome),
            })
            .collect()
    }

    /// Whether the journal has `action` done on `server`.
    fn ran(journal: &[Done], action: ActionKind, server: &str) -> bool {
        journal.iter().any(|d| d.action == action && d.server.as_str() == server && d.outcome == Outcome::Done)
    }

    const CTP: Option<&str> = Some("ActiveSyncCTPMonitor");
    /// A Mailbox server's restart procedure as the journal shows it, from its failover to re-enabling activation.
    const MBX01_RESTART: [&str; 8] = [
        "disable_activation mbx01 done",
        "copy_status mbx01 no_active_copies",
        "component_state mbx01 active",
        "restart_server mbx01 done",
        "wait mbx01 done",
        "wait mbx01 done",
        "probe mbx01 succeeded",
        "enable_activation mbx01 done",
    ];
    const DEEP: &str = "ActiveSyncDeepTestMonitor";
    const SELF_TEST: &str = "ActiveSyncSelfTestMonitor";

    #[test]
    fn ctp_with_an_unhealthy_mailbox_server_fixes_the_mailbox_first_and_checks_it_again_before_restarting_the_cas() {
        let (steps, ending) = drive("cas01", CTP, Some("mbx01"), &|action, journal| match action {
            Action::Probe { server, .. } if server.as_str() == "cas01" => (Outcome::Failed, vec![]),
            Action::Probe { .. } => (Outcome::Succeeded, vec![]),
            Action::ServerHealth { .. } if ran(journal, ActionKind::RecycleAppPool, "mbx01") => (Outcome::Healthy, vec![]),
            Action::ServerHealth { .. } => (Outcome::Unhealthy, vec![DEEP]),
            _ => (Outcome::Done, vec![]),
        });
        assert_eq!(
            steps,
            [
                "probe cas01 failed",
                "component_state cas01 active",
                "recycle_app_pool cas01 done",
                "wait cas01 done",
                "probe cas01 failed",
                "iis_reset cas01 done",
                "wait cas01 done",
                "probe cas01 failed",
                "server_health mbx01 unhealthy",
                "component_state mbx01 active",
                "recycle_app_pool mbx01 done",
                "wait mbx01 done",
                "probe mbx01 succeeded",
                "probe cas01 failed",
                "server_health mbx01 healthy",
                "component_state cas01 active",
                "restart_server cas01 done",
                "wait cas01 done",
                "wait cas01 done",
                "probe cas01 failed",
            ]
        );
        assert_eq!(ending.state, State::Escalated);
        assert_eq!(ending.reason, "probe still failing after all remedies");
    }

    #[test]
    fn ctp_addresses_every_unhealthy_monitor_on_the_mailbox_server_without_repeating_a_remedy() {
        // Recycling fixes the DeepTest monitor; the SelfTest monitor needs a restart, whose failover comes first.
        let (steps, ending) = drive("cas01", CTP, Some("mbx01"), &|action, journal| {
            let restarted = ran(journal, ActionKind::RestartServer, "mbx01");
            match action {
                Action::Probe { server, .. } if server.as_str() == "cas01" => (if restarted { Outcome::Succeeded } else { Outcome::Failed }, vec![]),
                Action::Probe { probe, .. } if probe.probe.as_str() == "ActiveSyncDeepTestProbe" => (Outcome::Succeeded, vec![]),
                Action::Probe { .. } => (if restarted { Outcome::Succeeded } else { Outcome::Failed }, vec![]),
                Action::ServerHealth { .. } if ran(journal, ActionKind::RecycleAppPool, "mbx01") => (Outcome::Unhealthy, vec![SELF_TEST]),
                Action::ServerHealth { .. } => (Outcome::Unhealthy, vec![DEEP, SELF_TEST]),
                Action::CopyStatus { .. } => (Outcome::NoActiveCopies, vec![]),
                _ => (Outcome::Done, vec![]),
            }
        });
        assert_eq!(
            steps[8..],
            [
                "server_health mbx01 unhealthy",
                "component_state mbx01 active",
                "recycle_app_pool mbx01 done",
                "wait mbx01 done",
                "probe mbx01 succeeded",
                "probe cas01 failed",
                "server_health mbx01 unhealthy",
                // The SelfTest runbook's recycle already ran on mbx01 for the DeepTest monitor: not again.
                "iis_reset mbx01 done",
                "wait mbx01 done",
                "probe mbx01 failed",
                "component_state mbx01 active",
            ]
            .into_iter()
            .chain(MBX01_RESTART)
            .chain(["probe cas01 succeeded"])
            .collect::<Vec<_>>()
        );
        assert_eq!(ending.state, State::Recovered);
        assert!(
            ending.reason.contains("ActiveSyncDeepTestMonitor on the Mailbox server mbx01") && ending.reason.contains("restarting mbx01 fixed it"),
            "{}",
            ending.reason
        );
        assert!(ending.activation_disabled.is_empty());
    }

    #[test]
    fn a_ctp_incident_whose_mailbox_runbook_is_exhausted_escalates_without_restarting_the_cas() {
        let (steps, ending) = drive("cas01", CTP, Some("mbx01"), &|action, _| match action {
            Action::Probe { .. } => (Outcome::Failed, vec![]),
            Action::ServerHealth { .. } => (Outcome::Unhealthy, vec![DEEP]),
            Action::CopyStatus { .. } => (Outcome::NoActiveCopies, vec![]),
            _ => (Outcome::Done, vec![]),
        });
        assert!(!steps.contains(&"restart_server cas01 done".to_owned()), "{steps:?}");
        assert_eq!(steps.last().unwrap(), "probe mbx01 failed");
        assert_eq!(ending.state, State::Escalated);
        assert_eq!(ending.reason, "the Mailbox server mbx01 could not be recovered: probe still failing after all remedies");
        assert_eq!(ending.activation_disabled, [name("mbx01")], "a failed restart leaves activation disabled, and the email says so");
    }

    #[test]
    fn a_multi_role_server_named_as_its_own_mailbox_server_goes_on_to_the_restart() {
        let (steps, ending) = drive("multi01", CTP, Some("multi01"), &|action, journal| {
            let restarted = ran(journal, ActionKind::RestartServer, "multi01");
            match action {
                Action::Probe { .. } => (if restarted { Outcome::Succeeded } else { Outcome::Failed }, vec![]),
                Action::ServerHealth { .. } => (Outcome::Unhealthy, vec![DEEP]),
                Action::CopyStatus { .. } => (Outcome::NoActiveCopies, vec![]),
                _ => (Outcome::Done, vec![]),
            }
        });
        assert_eq!(
            steps,
            [
                "probe multi01 failed",
                "component_state multi01 active",
                "recycle_app_pool multi01 done",
                "wait multi01 done",
                "probe multi01 failed",
                "iis_reset multi01 done",
                "wait multi01 done",
                "probe multi01 failed",
                "server_health multi01 unhealthy",
                "component_state multi01 active",
                "disable_activation multi01 done",
                "copy_status multi01 no_active_copies",
                "component_state multi01 active",
                "restart_server multi01 done",
                "wait multi01 done",
                "wait multi01 done",
                "probe multi01 succeeded",
                "enable_activation multi01 done",
                "probe multi01 succeeded",
            ]
        );
        assert_eq!(ending.state, State::Recovered);
    }

    #[test]
    fn requests_queued_on_a_mailbox_and_a_multi_role_server_fail_over_before_the_restart() {
        for server in ["mbx01", "multi01"] {
            let (steps, ending) = drive(server, Some("RequestsQueuedGt500Monitor"), None, &|action, journal| {
                let restarted = journal.iter().any(|d| d.action == ActionKind::RestartServer);
                match action {
                    Action::ServerHealth { .. } if restarted => (Outcome::Healthy, vec![]),
                    Action::ServerHealth { .. } => (Outcome::Unhealthy, vec!["RequestsQueuedGt500Monitor"]),
                    Action::CopyStatus { .. } if journal.iter().filter(|d| d.action == ActionKind::DisableActivation).count() < 2 => {
                        (Outcome::ActiveCopies, vec![])
                    }
                    Action::CopyStatus { .. } => (Outcome::NoActiveCopies, vec![]),
                    _ => (Outcome::Done, vec![]),
                }
            });
            let s = |text: &str| text.replace("S", server);
            assert_eq!(
                steps,
                [
                    "server_health S unhealthy",
                    "component_state S active",
                    "recycle_app_pool S done",
                    "wait S done",
                    "server_health S unhealthy",
                    "iis_reset S done",
                    "wait S done",
                    "server_health S unhealthy",
                    "component_state S active",
                    "disable_activation S done",
                    "copy_status S active_copies",
                    "wait S done",
                    "copy_status S active_copies",
                    // Halfway through timing.failover_timeout: the remaining copies are moved explicitly.
                    "disable_activation S done",
                    "wait S done",
                    "copy_status S no_active_copies",
                    "component_state S active",
                    "restart_server S done",
                    "wait S done",
                    "wait S done",
                    "server_health S healthy",
                    "enable_activation S done",
                ]
                .map(s),
                "{server}"
            );
            assert_eq!((ending.state, ending.activation_disabled.len()), (State::Recovered, 0), "{server}");
        }
    }

    #[test]
    fn a_lost_restart_result_is_verified_not_repeated() {
        let (steps, ending) = drive("cas01", CTP, Some("mbx01"), &|action, journal| match action {
            Action::Probe { .. } => (if journal.len() < 9 { Outcome::Failed } else { Outcome::Succeeded }, vec![]),
            Action::ServerHealth { .. } => (Outcome::Healthy, vec![]),
            Action::RestartServer { .. } => (Outcome::Interrupted, vec![]),
            _ => (Outcome::Done, vec![]),
        });
        assert_eq!(
            &steps[8..],
            [
                "server_health mbx01 healthy",
                "component_state cas01 active",
                "restart_server cas01 interrupted",
                // Until the server answers, then its warm-up: the restart may still be under way.
                "wait cas01 done",
                "wait cas01 done",
                "probe cas01 succeeded"
            ]
        );
        assert_eq!(ending.state, State::Recovered);
    }

    #[test]
    fn a_mailbox_restart_whose_copies_never_move_escalates_with_activation_disabled() {
        let (steps, ending) = drive("cas01", CTP, Some("mbx01"), &|action, _| match action {
            Action::Probe { .. } => (Outcome::Failed, vec![]),
            Action::ServerHealth { .. } => (Outcome::Unhealthy, vec![DEEP]),
            Action::CopyStatus { .. } => (Outcome::ActiveCopies, vec![]),
            _ => (Outcome::Done, vec![]),
        });
        // A check at once, then one a minute for the two minutes of timing.failover_timeout, with one push between.
        assert!(
            steps.ends_with(&[
                "disable_activation mbx01 done".into(),
                "copy_status mbx01 active_copies".into(),
                "wait mbx01 done".into(),
                "copy_status mbx01 active_copies".into(),
                "disable_activation mbx01 done".into(),
                "wait mbx01 done".into(),
                "copy_status mbx01 active_copies".into(),
            ]),
            "{steps:?}"
        );
        assert_eq!(ending.state, State::Escalated);
        assert!(ending.reason.contains("active database copies remain on mbx01 after 2m of copy-status checks"), "{}", ending.reason);
        assert_eq!(ending.activation_disabled, [name("mbx01")]);
    }

    #[test]
    fn a_server_in_maintenance_is_never_changed() {
        // In maintenance from the start: nothing changes anywhere.
        let (steps, ending) = drive("mbx01", Some(DEEP), None, &|action, _| match action {
            Action::Probe { .. } => (Outcome::Failed, vec![]),
            Action::ComponentState { .. } => (Outcome::Inactive, vec![]),
            _ => (Outcome::Done, vec![]),
        });
        assert_eq!(steps, ["probe mbx01 failed", "component_state mbx01 inactive"]);
        assert_eq!(ending.state, State::Suppressed);
        assert!(ending.reason.starts_with("mbx01 is in maintenance"), "{}", ending.reason);

        // Put in maintenance while its databases moved: not restarted, and activation is reported as still off.
        let (steps, ending) = drive("mbx01", Some(DEEP), None, &|action, journal| match action {
            Action::Probe { .. } => (Outcome::Failed, vec![]),
            Action::ComponentState { .. } if ran(journal, ActionKind::DisableActivation, "mbx01") => (Outcome::Inactive, vec![]),
            Action::CopyStatus { .. } => (Outcome::NoActiveCopies, vec![]),
            _ => (Outcome::Done, vec![]),
        });
        assert_eq!(&steps[steps.len() - 3..], ["disable_activation mbx01 done", "copy_status mbx01 no_active_copies", "component_state mbx01 inactive"]);
        assert_eq!(ending.state, State::Suppressed);
        assert_eq!(ending.activation_disabled, [name("mbx01")]);
    }

    #[test]
    fn activation_disabled_by_an_administrator_is_left_as_found() {
        let runbooks = RunbookSet::load(None).unwrap();
        let inventory = BTreeMap::from([(name("mbx01"), InventoryEntry { role: Role::Mailbox, group: "dag".into(), connection_uri: None })]);
        let facts = Facts {
            server: name("mbx01"),
            health_set: HealthSet::parse("ActiveSync").unwrap(),
            monitor: Some(Monitor::parse(DEEP).unwrap()),
            mailbox_hint: None,
        };
        let limits = LIMITS;
        let ctx = Context { facts: &facts, runbooks: &runbooks, inventory: &inventory, limits: &limits, approval: &[] };
        let mut journal = Vec::new();
        let ending = loop {
            match next(&ctx, &journal).decision {
                Decision::Finish(ending) => break ending,
                Decision::Skip(..) => unreachable!("no Managed Availability history in this scenario"),
                Decision::Run(action) => {
                    let restarted = journal.iter().any(|d: &Done| d.action == ActionKind::RestartServer);
                    let outcome = match &action {
                        Action::Probe { .. } if restarted => Outcome::Succeeded,
                        Action::Probe { .. } => Outcome::Failed,
                        Action::ComponentState { .. } => Outcome::Active,
                        Action::CopyStatus { .. } => Outcome::NoActiveCopies,
                        _ => Outcome::Done,
                    };
                    let mut step = done(&action, outcome, vec![]);
                    step.already_in_place = action.kind() == ActionKind::DisableActivation;
                    journal.push(step);
                }
                other => panic!("nobody is asked without approval.actions: {other:?}"),
            }
        };
        assert_eq!(ending.state, State::Recovered);
        assert!(!journal.iter().any(|d| d.action == ActionKind::EnableActivation), "{:?}", lines(&journal));
        assert_eq!((ending.activation_disabled.len(), ending.activation_left_as_found.clone()), (0, vec![name("mbx01")]));
    }

    #[test]
    fn a_refused_failover_changes_nothing_and_a_refused_restart_undoes_the_failover() {
        let (steps, ending) = drive("mbx01", Some(DEEP), None, &|action, _| match action {
            Action::Probe { .. } => (Outcome::Failed, vec![]),
            Action::DisableActivation { .. } => (Outcome::Throttled, vec![]),
            _ => (Outcome::Done, vec![]),
        });
        assert_eq!(steps.last().unwrap(), "disable_activation mbx01 throttled");
        assert_eq!((ending.state, ending.activation_disabled.len()), (State::Blocked, 0));

        let (steps, ending) = drive("mbx01", Some(DEEP), None, &|action, _| match action {
            Action::Probe { .. } => (Outcome::Failed, vec![]),
            Action::CopyStatus { .. } => (Outcome::NoActiveCopies, vec![]),
            Action::RestartServer { .. } => (Outcome::Throttled, vec![]),
            _ => (Outcome::Done, vec![]),
        });
        assert_eq!(&steps[steps.len() - 2..], ["restart_server mbx01 throttled", "enable_activation mbx01 done"]);
        assert_eq!((ending.state, ending.activation_disabled.len()), (State::Blocked, 0));
        assert!(ending.reason.ends_with("the failover was undone (activation re-enabled on mbx01)"), "{}", ending.reason);
    }

    #[test]
    fn a_dry_run_failover_does_not_wait_for_copies_nobody_asked_to_move() {
        let (steps, ending) = drive("mbx01", Some(DEEP), None, &|action, _| match action {
            Action::Probe { .. } => (Outcome::Failed, vec![]),
            Action::RecycleAppPool { .. } | Action::IisReset { .. } | Action::DisableActivation { .. } => (Outcome::DryRun, vec![]),
            Action::CopyStatus { .. } => (Outcome::ActiveCopies, vec![]),
            _ => (Outcome::Done, vec![]),
        });
        assert_eq!(&steps[steps.len() - 2..], ["disable_activation mbx01 dry_run", "copy_status mbx01 active_copies"]);
        assert_eq!(ending.state, State::Escalated);
        assert!(ending.reason.starts_with("dry run: activation was not disabled"), "{}", ending.reason);
        assert!(ending.activation_disabled.is_empty());
    }

    #[test]
    fn an_interrupted_enable_activation_is_verified_then_repeated() {
        let (steps, ending) = drive("mbx01", Some(DEEP), None, &|action, journal| {
            let restarted = ran(journal, ActionKind::RestartServer, "mbx01");
            let enables = journal.iter().filter(|d| d.action == ActionKind::EnableActivation).count();
            match action {
                Action::Probe { .. } => (if restarted { Outcome::Succeeded } else { Outcome::Failed }, vec![]),
                Action::CopyStatus { .. } => (Outcome::NoActiveCopies, vec![]),
                Action::EnableActivation { .. } if enables == 0 => (Outcome::Interrupted, vec![]),
                _ => (Outcome::Done, vec![]),
            }
        });
        assert_eq!(
            &steps[steps.len() - 4..],
            ["probe mbx01 succeeded", "enable_activation mbx01 interrupted", "probe mbx01 succeeded", "enable_activation mbx01 done"]
        );
        assert_eq!((ending.state, ending.activation_disabled.len()), (State::Recovered, 0));
    }

    #[test]
    fn an_interrupted_failover_is_not_undone_blind_and_is_reported() {
        let (steps, ending) = drive("mbx01", Some(DEEP), None, &|action, journal| {
            let restarted = ran(journal, ActionKind::RestartServer, "mbx01");
            match action {
                Action::Probe { .. } => (if restarted { Outcome::Succeeded } else { Outcome::Failed }, vec![]),
                Action::DisableActivation { attempt: 1, .. } => (Outcome::Interrupted, vec![]),
                Action::CopyStatus { .. } => (Outcome::NoActiveCopies, vec![]),
                _ => (Outcome::Done, vec![]),
            }
        });
        assert_eq!(steps.last().unwrap(), "probe mbx01 succeeded", "whether activation was disabled before is unknown: it is not re-enabled");
        assert_eq!((ending.state, ending.activation_disabled.clone()), (State::Recovered, vec![name("mbx01")]));
    }

    #[test]
    fn a_journal_that_no_longer_matches_the_runbook_ends_blocked() {
        let runbooks = RunbookSet::load(None).unwrap();
        let inventory = BTreeMap::from([(name("cas01"), InventoryEntry { role: Role::Cas, group: "cas".into(), connection_uri: None })]);
        let facts = Facts {
            server: name("cas01"),
            health_set: HealthSet::parse("ActiveSync").unwrap(),
            monitor: CTP.map(|m| Monitor::parse(m).unwrap()),
            mailbox_hint: None,
        };
        let limits = LIMITS;
        let ctx = Context { facts: &facts, runbooks: &runbooks, inventory: &inventory, limits: &limits, approval: &[] };
        let probe = Action::Probe { server: name("cas01"), probe: ProbeRef::parse("ActiveSync\\ActiveSyncCTPProbe").unwrap(), backend: None };
        let journal = [done(&probe, Outcome::Failed, vec![]), done(&Action::IisReset { server: name("cas01"), noforce: false }, Outcome::Done, vec![])];
        let Decision::Finish(ending) = next(&ctx, &journal).decision else { panic!("the planner must stop") };
        assert_eq!(ending.state, State::Blocked);
        assert!(
            ending
                .reason
                .starts_with("the journal no longer matches the runbook (step 2 was iis_reset on cas01, the runbook now asks for component_state on cas01)"),
            "{}",
            ending.reason
        );
    }

    #[test]
    fn a_forced_ending_after_a_failover_keeps_what_the_journal_says_about_activation() {
        // A busy server or a silence ends the incident from outside the planner; the ending still reads the journal.
        let disable = Action::DisableActivation { server: name("mbx01"), attempt: 1 };
        let journal = [done(&disable, Outcome::Done, vec![]), done(&Action::CopyStatus { server: name("mbx01") }, Outcome::NoActiveCopies, vec![])];
        let ending = Ending::from_journal(State::Blocked, "mbx01 stayed busy", &journal);
        assert_eq!(ending.activation_disabled, [name("mbx01")]);
        let enable = done(&Action::EnableActivation { server: name("mbx01") }, Outcome::Done, vec![]);
        let ending = Ending::from_journal(State::Blocked, "x", &[journal[0].clone(), journal[1].clone(), enable]);
        assert!(ending.activation_disabled.is_empty());
    }

    const HURTS: &[ActionKind] = &[ActionKind::DisableActivation, ActionKind::RestartServer];

    #[test]
    fn a_mailbox_restart_is_approved_once_before_its_failover_for_the_whole_procedure() {
        let (steps, ending) = drive_asking("mbx01", Some(DEEP), None, HURTS, Outcome::Approved, &|action, journal| match action {
            Action::Probe { .. } => (if ran(journal, ActionKind::RestartServer, "mbx01") { Outcome::Succeeded } else { Outcome::Failed }, vec![]),
            Action::CopyStatus { .. } => (Outcome::NoActiveCopies, vec![]),
            _ => (Outcome::Done, vec![]),
        });
        let asked = "approval mbx01 requested disable_activation,copy_status,restart_server,enable_activation";
        let at = steps.iter().position(|s| s == asked).expect("asked before the failover");
        assert_eq!(steps[at - 1], "probe mbx01 failed", "asked once the IISReset had not helped");
        // Verified again after the decision, and the maintenance state read again before the change.
        let decided = [asked, "approval mbx01 approved", "probe mbx01 failed", "component_state mbx01 active"];
        assert_eq!(steps[at..], [&decided[..], &MBX01_RESTART[..]].concat());
        assert_eq!(steps.iter().filter(|s| s.starts_with("approval")).count(), 2, "one request, one decision: {steps:?}");
        assert_eq!(ending.state, State::Recovered);
        assert!(steps[..at].iter().all(|s| !s.starts_with("approval")), "the recycle and IISReset were not asked about: {steps:?}");
    }

    #[test]
    fn a_denied_or_expired_approval_runs_nothing_and_ends_blocked_naming_the_decision() {
        for decision in [Outcome::Denied, Outcome::Expired] {
            let (steps, ending) =
                drive_asking("cas01", Some("ActiveSyncCTPMonitor"), Some("mbx01"), &[ActionKind::IisReset], decision, &|action, _| match action {
                    Action::Probe { .. } => (Outcome::Failed, vec![]),
                    _ => (Outcome::Done, vec![]),
                });
            assert_eq!(steps[steps.len() - 2..], ["approval cas01 requested iis_reset".to_owned(), format!("approval cas01 {decision}")]);
            assert!(!steps.iter().any(|s| s.starts_with("iis_reset")), "{steps:?}");
            assert_eq!(ending.state, State::Blocked);
            assert_eq!(ending.reason, format!("approval {decision} on the operator's page; reason: checked; iis_reset on cas01 was not run"));
        }
    }

    #[test]
    fn an_approval_given_after_the_problem_went_away_does_nothing_more() {
        // The probe fails until the person has been asked, and succeeds when checked after the decision.
        let asked = |journal: &[Done]| journal.iter().any(|d| d.action == ActionKind::Approval);
        let answer = |action: &Action, journal: &[Done]| match action {
            Action::Probe { .. } if asked(journal) => (Outcome::Succeeded, vec![]),
            Action::Probe { .. } => (Outcome::Failed, vec![]),
            _ => (Outcome::Done, vec![]),
        };
        let (steps, ending) = drive_asking("cas01", Some("ActiveSyncCTPMonitor"), Some("mbx01"), &[ActionKind::RecycleAppPool], Outcome::Approved, &answer);
        assert_eq!(
            steps,
            [
                "probe cas01 failed",
                "component_state cas01 active",
                "approval cas01 requested recycle_app_pool",
                "approval cas01 approved",
                "probe cas01 succeeded"
            ]
        );
        assert_eq!(ending.state, State::Transient, "nothing was changed: {}", ending.reason);
        assert!(ending.reason.contains("the problem went away by itself, and recycle_app_pool on cas01 was not run"), "{}", ending.reason);

        let (steps, ending) = drive_asking("cas01", Some("ActiveSyncCTPMonitor"), Some("mbx01"), &[ActionKind::IisReset], Outcome::Approved, &answer);
        assert_eq!(steps.last().unwrap(), "probe cas01 succeeded");
        assert!(steps.contains(&"recycle_app_pool cas01 done".to_owned()));
        assert_eq!(ending.state, State::Recovered, "the recycle before the request changed the server: {}", ending.reason);
        assert!(ending.reason.contains("an earlier remedy took effect, and iis_reset on cas01 was not run"), "{}", ending.reason);
    }

    #[test]
    fn nobody_is_asked_to_approve_what_a_throttle_or_maintenance_refuses() {
        // The engine records a throttled proposal as its first step, `throttled`, instead of asking.
        let ctx_journal = |outcome: Outcome| {
            vec![
                done(
                    &Action::Probe { server: name("cas01"), probe: ProbeRef::parse("ActiveSync\\ActiveSyncCTPProbe").unwrap(), backend: Some(name("mbx01")) },
                    Outcome::Failed,
                    vec![],
                ),
                done(&Action::ComponentState { server: name("cas01") }, outcome, vec![]),
            ]
        };
        let runbooks = RunbookSet::load(None).unwrap();
        let inventory = BTreeMap::from([(name("cas01"), InventoryEntry { role: Role::Cas, group: "cas".into(), connection_uri: None })]);
        let facts = Facts {
            server: name("cas01"),
            health_set: HealthSet::parse("ActiveSync").unwrap(),
            monitor: Some(Monitor::parse("ActiveSyncCTPMonitor").unwrap()),
            mailbox_hint: Some(name("mbx01")),
        };
        let approval = [ActionKind::RecycleAppPool];
        let ctx = Context { facts: &facts, runbooks: &runbooks, inventory: &inventory, limits: &LIMITS, approval: &approval };
        let mut journal = ctx_journal(Outcome::Active);
        journal.push(done(
            &Action::RecycleAppPool { server: name("cas01"), app_pools: vec![AppPool::parse("MSExchangeSyncAppPool").unwrap()] },
            Outcome::Throttled,
            vec![],
        ));
        match next(&ctx, &journal).decision {
            Decision::Finish(ending) => assert_eq!(ending.state, State::Blocked),
            other => panic!("a throttled proposal ends the incident: {other:?}"),
        }
        match next(&ctx, &ctx_journal(Outcome::Inactive)).decision {
            Decision::Finish(ending) => assert_eq!(ending.state, State::Suppressed, "a server in maintenance is not asked about"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(next(&ctx, &ctx_journal(Outcome::Active)).decision, Decision::Ask(_)), "an active server with room in its throttles is asked about");
    }
}

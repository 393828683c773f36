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

use std::time::Duration;

mod ladder;

use super::{Remedy, Runbook, RunbookSet};
use crate::domain::{AppPool, HealthSetPattern, Monitor, ServerName, ServiceName};
use crate::incident::{ActionKind, Outcome, State};
use crate::inventory::{Inventory, Role};
use crate::journal::{Action, Activation, Done, Ending, Facts, Until};
use crate::ma::RecoveryAction;

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
    pub inventory: &'a Inventory,
    pub limits: &'a Limits,
    /// The mutating actions that wait for a person's approval (`approval.actions`; none in a dry run).
    pub approval: &'a [ActionKind],
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
    let mut replay = Replay {
        journal,
        pos: 0,
        monitor: ctx.facts.monitor.clone(),
        in_service: Vec::new(),
        ran: Vec::new(),
        ma_read: Vec::new(),
    };
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
    fn approved(
        &mut self,
        ctx: &Context,
        runbook: &Runbook,
        checked: &ServerName,
        monitor: &Monitor,
        proposal: Proposal,
    ) -> Step<()> {
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
            Some(done)
                if done.action == first
                    && done.server == server
                    && done.outcome == Outcome::Throttled =>
            {
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
        let proposed = proposal
            .covers
            .iter()
            .map(|action| action.kind().as_str())
            .collect::<Vec<_>>()
            .join(", ");
        match decision.outcome {
            Outcome::Approved => {}
            Outcome::Denied | Outcome::Expired => {
                let why = format!(
                    "approval {} {}; {proposed} on {server} was not run",
                    decision.outcome, decision.detail
                );
                return Err(self.stop(State::Blocked, why));
            }
            _ => {
                return Err(self.stop(
                    State::Blocked,
                    format!(
                        "the approval asked for in step {} has no decision ({})",
                        self.pos - 1,
                        requested.outcome
                    ),
                ))
            }
        }
        // The decision may have taken an hour: what the server was then says little now.
        self.in_service.clear();
        if self.verify(ctx, runbook, checked, monitor, false)? {
            let changed = self.journal[..self.pos].iter().any(|d| {
                d.action.is_mutating() && matches!(d.outcome, Outcome::Done | Outcome::Interrupted)
            });
            let state = if changed { State::Recovered } else { State::Transient };
            let since = if changed {
                "an earlier remedy took effect"
            } else {
                "the problem went away by itself"
            };
            return Err(self
                .stop(state, format!("{} when checked again after the approval: {since}, and {proposed} on {server} was not run", passed(runbook, monitor))));
        }
        Ok(())
    }

    /// A read-only check; an executor failure stops the incident.
    fn read(&mut self, action: Action) -> Step<&'a Done> {
        let done = self.run(action)?;
        match done.outcome {
            Outcome::Error => Err(self.stop(
                State::Blocked,
                format!(
                    "executor failure: {} on {} failed: {}",
                    done.action, done.server, done.detail
                ),
            )),
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
            Outcome::Error => Err(self.stop(
                State::Blocked,
                format!(
                    "executor failure: {} on {} failed: {}",
                    done.action, done.server, done.detail
                ),
            )),
            Outcome::Throttled => {
                Err(self.stop(State::Blocked, format!("throttled: {}", done.detail)))
            }
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
                let health = self.read(Action::ServerHealth {
                    server: server.clone(),
                    health_sets: HealthSetPattern::exact(&facts.health_set),
                })?;
                let found = health
                    .unhealthy
                    .iter()
                    .find(|m| ctx.runbooks.get(&facts.health_set, m).is_some())
                    .or(health.unhealthy.first());
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
            return Ok(self.ending(
                State::Blocked,
                format!(
                    "unknown monitor {monitor}: no runbook answers it (add one to runbook_dir)"
                ),
            ));
        };
        if self.verify(ctx, runbook, server, &monitor, false)? {
            return Ok(self.ending(
                State::Transient,
                format!(
                    "{} at once: the problem no longer exists and nothing was done",
                    passed(runbook, &monitor)
                ),
            ));
        }
        Ok(match self.remedies(ctx, runbook, server, &monitor, entry.role, true)? {
            Remedied::Recovered(how) => self.ending(State::Recovered, how),
            Remedied::Exhausted(why) => self.ending(State::Escalated, why),
        })
    }

    /// Runs a runbook's remedies on `server`, verifying after each, skipping any this incident already ran there.
    /// `top` is false for a Mailbox server's runbook run from a CAS incident, which does not check a mailbox again.
    fn remedies(
        &mut self,
        ctx: &Context,
        runbook: &Runbook,
        server: &ServerName,
        monitor: &Monitor,
        role: Role,
        top: bool,
    ) -> Step<Remedied> {
        let mut tried = false;
        for remedy in runbook.remedies.iter().filter(|r| r.applies_to(role)) {
            tried = true;
            match remedy {
                Remedy::RecycleAppPool { .. }
                | Remedy::IisReset { .. }
                | Remedy::RestartService { .. } => {
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
                    if let Some(result) =
                        self.check_mailbox(ctx, runbook, server, monitor, health_sets)?
                    {
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
            let health = self.read(Action::ServerHealth {
                server: mailbox.clone(),
                health_sets: health_sets.clone(),
            })?;
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
                let why = if addressed.is_empty() {
                    "no runbook answers them"
                } else {
                    "their runbooks were already run in this incident"
                };
                return Ok(Some(Remedied::Exhausted(format!(
                    "the Mailbox server {mailbox} reports {} Unhealthy and {why}",
                    names.join(", ")
                ))));
            };
            addressed.push(sub_monitor);
            match self.remedies(ctx, sub_runbook, mailbox, sub_monitor, entry.role, false)? {
                Remedied::Exhausted(why) => {
                    return Ok(Some(Remedied::Exhausted(format!(
                        "the Mailbox server {mailbox} could not be recovered: {why}"
                    ))))
                }
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
    fn restart(
        &mut self,
        ctx: &Context,
        runbook: &Runbook,
        server: &ServerName,
        monitor: &Monitor,
        role: Role,
    ) -> Step<Option<Remedied>> {
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
            Outcome::Error => {
                return Err(self.stop(
                    State::Blocked,
                    format!(
                        "executor failure: restart_server on {server} failed: {}",
                        restarted.detail
                    ),
                ))
            }
            Outcome::Throttled => {
                // Refused after all (the throttles changed since the failover began): undo the failover.
                let reason = format!("throttled: {}", restarted.detail);
                if self.reenable(server)? {
                    return Err(self.stop(
                        State::Blocked,
                        format!(
                            "{reason}; the failover was undone (activation re-enabled on {server})"
                        ),
                    ));
                }
                return Err(self.stop(State::Blocked, reason));
            }
            _ => {}
        }
        // Windows answers before Exchange does, and a responder that restarted meanwhile finds the restart
        // interrupted: either way, first wait (bounded) until the server answers again.
        if changed(restarted) {
            self.run(Action::Wait {
                server: server.clone(),
                duration: ctx.limits.restart_timeout,
                until: Until::Answering,
            })?;
        }
        if !self.verify(ctx, runbook, server, monitor, changed(restarted))? {
            return Ok(None);
        }
        if role.hosts_databases() {
            loop {
                if !Activation::read(&self.journal[..self.pos]).disabled_by_us(server) {
                    break;
                }
                let done = self.mutate(Action::EnableActivation { server: server.clone() })?;
                if done.outcome != Outcome::Interrupted {
                    break;
                }
                // The result of re-enabling was lost: verify again before repeating it.
                if !self.verify(ctx, runbook, server, monitor, false)? {
                    return Ok(Some(Remedied::Exhausted(format!(
                        "{} again before activation could be re-enabled on {server}",
                        failing(runbook, monitor)
                    ))));
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
        let dry_run =
            self.mutate(Action::DisableActivation { server: server.clone(), attempt: 1 })?.outcome
                == Outcome::DryRun;
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
            self.run(Action::Wait {
                server: server.clone(),
                duration: ctx.limits.poll_interval,
                until: Until::Elapsed,
            })?;
            checks += 1;
            copies = self.read(Action::CopyStatus { server: server.clone() })?;
        }
        Ok(None)
    }

    /// Re-enables activation where this incident disabled it; false when there was nothing of ours to undo.
    fn reenable(&mut self, server: &ServerName) -> Step<bool> {
        if !Activation::read(&self.journal[..self.pos]).disabled_by_us(server) {
            return Ok(false);
        }
        self.mutate(Action::EnableActivation { server: server.clone() })?;
        Ok(true)
    }

    /// Whether the problem is gone: the probe succeeds, or `Get-ServerHealth` no longer reports the monitor. Right
    /// after a remedy on `server` it first waits: the settle wait for runbooks that settle, else the warm-up.
    fn verify(
        &mut self,
        ctx: &Context,
        runbook: &Runbook,
        server: &ServerName,
        monitor: &Monitor,
        after_remedy: bool,
    ) -> Step<bool> {
        let pause = if runbook.verify.settle { ctx.limits.settle_wait } else { ctx.limits.warm_up };
        if after_remedy && !pause.is_zero() {
            self.run(Action::Wait {
                server: server.clone(),
                duration: pause,
                until: Until::Elapsed,
            })?;
        }
        if let Some(probe) = &runbook.verify.probe {
            let backend = ctx.facts.mailbox_hint.clone().filter(|_| server == &ctx.facts.server);
            return Ok(self
                .read(Action::Probe { server: server.clone(), probe: probe.clone(), backend })?
                .outcome
                == Outcome::Succeeded);
        }
        let Some(health_sets) = &runbook.verify.server_health else {
            return Ok(false);
        };
        let health = self.read(Action::ServerHealth {
            server: server.clone(),
            health_sets: health_sets.clone(),
        })?;
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
mod tests;

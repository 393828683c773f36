//! The rungs of a runbook's ladder that change one thing on one server (recycle pools, IISReset, restart a
//! service), on the alert's server or on the `_Mbx:` Mailbox server, and what Managed Availability already did.
//!
//! Before the first remedy on a server the planner reads Managed Availability's recent recovery actions there
//! (`ma_history`, once per server and incident, when `safety.ma_lookback` is not zero). A remedy it already took in
//! that window is journaled `skipped` instead of run, and verification follows as after any remedy. Like the rest
//! of the planner, this does no IO and reads no clock: the executor applied the window.

use super::Context;
use super::{changed, Decision, Done, Proposal, Ran, Remedied, Replay, Step};
use crate::domain::Monitor;
use crate::domain::ServerName;
use crate::incident::{ActionKind, Outcome, State};
use crate::journal::{Action, Until};
use crate::ma::{self, RecoveryAction};
use crate::runbook::{Remedy, Runbook, Target};

impl<'a> Replay<'a> {
    /// Runs one recycle, IISReset or service restart, unless this incident already ran it on that server or
    /// Managed Availability did; then verifies on the alert's server. `Some` when the runbook is done.
    pub(super) fn remedy(
        &mut self,
        ctx: &Context,
        runbook: &Runbook,
        server: &ServerName,
        monitor: &Monitor,
        remedy: &Remedy,
    ) -> Step<Option<Remedied>> {
        let on = match remedy.target() {
            Target::AlertServer => server.clone(),
            Target::MailboxHint => self.hinted_mailbox(ctx, server)?,
        };
        let (action, what) = match remedy {
            Remedy::RecycleAppPool { .. } => {
                let pools: Vec<_> = remedy
                    .app_pools()
                    .into_iter()
                    .filter(|pool| self.first_time(Ran::Recycle(on.clone(), pool.clone())))
                    .collect();
                if pools.is_empty() {
                    return Ok(None);
                }
                let history = self.ma_history(ctx, &on)?;
                let (by_ma, left): (Vec<_>, Vec<_>) = pools.into_iter().partition(|pool| {
                    ma::took(&history, ma::Remedy::Recycle(pool.as_str())).is_some()
                });
                if left.is_empty() {
                    let taken: Vec<&RecoveryAction> = by_ma
                        .iter()
                        .filter_map(|pool| ma::took(&history, ma::Remedy::Recycle(pool.as_str())))
                        .collect();
                    return self.skipped(
                        ctx,
                        runbook,
                        server,
                        monitor,
                        Action::RecycleAppPool { server: on, app_pools: by_ma },
                        &taken,
                    );
                }
                let names: Vec<&str> = left.iter().map(|p| p.as_str()).collect();
                let what = format!("recycling {} on {on}", names.join(" and "));
                (Action::RecycleAppPool { server: on.clone(), app_pools: left }, what)
            }
            Remedy::IisReset { noforce, .. } => {
                if !self.first_time(Ran::IisReset(on.clone())) {
                    return Ok(None);
                }
                // Managed Availability never resets IIS; its history is read all the same, before the first change.
                self.ma_history(ctx, &on)?;
                (
                    Action::IisReset { server: on.clone(), noforce: *noforce },
                    format!("IISReset on {on}"),
                )
            }
            Remedy::RestartService { service, .. } => {
                if !self.first_time(Ran::Service(on.clone(), service.clone())) {
                    return Ok(None);
                }
                let history = self.ma_history(ctx, &on)?;
                let action =
                    Action::RestartService { server: on.clone(), service: service.clone() };
                if let Some(taken) =
                    ma::took(&history, ma::Remedy::RestartService(service.as_str()))
                {
                    return self.skipped(ctx, runbook, server, monitor, action, &[taken]);
                }
                (action, format!("restarting {service} on {on}"))
            }
            Remedy::CheckMailbox { .. } | Remedy::RestartServer { .. } => {
                unreachable!("the planner runs these itself")
            }
        };
        self.approved(
            ctx,
            runbook,
            server,
            monitor,
            Proposal { server: on.clone(), covers: vec![action.clone()] },
        )?;
        let done = self.mutate(action)?;
        // A change on the Mailbox server warms up there; the check is the alert's server's.
        let recovered = if &on == server {
            self.verify(ctx, runbook, server, monitor, changed(done))?
        } else {
            let pause =
                if runbook.verify.settle { ctx.limits.settle_wait } else { ctx.limits.warm_up };
            if changed(done) && !pause.is_zero() {
                self.run(Action::Wait {
                    server: on.clone(),
                    duration: pause,
                    until: Until::Elapsed,
                })?;
            }
            self.verify(ctx, runbook, server, monitor, false)?
        };
        Ok(recovered.then(|| Remedied::Recovered(format!("{what} fixed it"))))
    }

    /// A restart Managed Availability already did (`ForceReboot` in the window): journaled `skipped`, with no
    /// failover, then verified. `None` when it did not, and the restart procedure runs.
    pub(super) fn rebooted_by_ma(
        &mut self,
        ctx: &Context,
        runbook: &Runbook,
        server: &ServerName,
        monitor: &Monitor,
    ) -> Step<Option<Option<Remedied>>> {
        let history = self.ma_history(ctx, server)?;
        match ma::took(&history, ma::Remedy::Restart) {
            Some(taken) => Ok(Some(self.skipped(
                ctx,
                runbook,
                server,
                monitor,
                Action::RestartServer { server: server.clone() },
                &[taken],
            )?)),
            None => Ok(None),
        }
    }

    /// Journals `action` skipped (naming what Managed Availability did, when and by which responder), then verifies
    /// at once: nothing changed now, so there is nothing to warm up.
    fn skipped(
        &mut self,
        ctx: &Context,
        runbook: &Runbook,
        server: &ServerName,
        monitor: &Monitor,
        action: Action,
        taken: &[&RecoveryAction],
    ) -> Step<Option<Remedied>> {
        let why: Vec<String> = taken.iter().map(|a| ma::skipped(a)).collect();
        let kind = action.kind();
        self.skip(action, why.join("; "))?;
        if self.verify(ctx, runbook, server, monitor, false)? {
            let what: Vec<String> = taken.iter().map(|a| a.describe()).collect();
            return Ok(Some(Remedied::Recovered(format!(
                "Managed Availability's own {kind} ({}) fixed it; the responder did not repeat it",
                what.join("; ")
            ))));
        }
        Ok(None)
    }

    /// The journal's record of a skipped step, or the decision to journal it.
    fn skip(&mut self, action: Action, why: String) -> Step<&'a Done> {
        let journal: &'a [Done] = self.journal;
        match journal.get(self.pos) {
            Some(done)
                if done.action == action.kind()
                    && &done.server == action.server()
                    && done.outcome == Outcome::Skipped =>
            {
                self.pos += 1;
                Ok(done)
            }
            None => Err(Decision::Skip(action, why)),
            Some(_) => self.run(action),
        }
    }

    /// Managed Availability's recent recovery actions on `server`, read once per incident before the first remedy
    /// there. A journal written before this step existed (or while `safety.ma_lookback` was zero) has another step
    /// where it would be: that journal goes on without it.
    fn ma_history(&mut self, ctx: &Context, server: &ServerName) -> Step<Vec<RecoveryAction>> {
        if let Some((_, actions)) = self.ma_read.iter().find(|(s, _)| s == server) {
            return Ok(actions.clone());
        }
        let lookback = ctx.limits.ma_lookback;
        let older_journal =
            self.journal.get(self.pos).is_some_and(|done| done.action != ActionKind::MaHistory);
        let actions = if lookback.is_zero() || older_journal {
            Vec::new()
        } else {
            self.read(Action::MaHistory { server: server.clone(), lookback })?.ma_actions.clone()
        };
        self.ma_read.push((server.clone(), actions.clone()));
        Ok(actions)
    }

    /// The `_Mbx:` Mailbox server a remedy runs on; without a hint, or outside the inventory, the incident stops.
    fn hinted_mailbox(&self, ctx: &Context, server: &ServerName) -> Step<ServerName> {
        let Some(mailbox) = &ctx.facts.mailbox_hint else {
            return Err(
                self.stop(State::Blocked, format!("no _Mbx: hint in the alert: the runbook acts on the Mailbox server behind {server}, and none is named"))
            );
        };
        if !ctx.inventory.contains_key(mailbox) {
            return Err(
                self.stop(State::Blocked, format!("the _Mbx: server {mailbox} is not in the server inventory; automation acts on inventory servers only"))
            );
        }
        Ok(mailbox.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::{inventory, lines, name, run_planner, Answer, LIMITS};
    use super::super::{Context, Ending, Facts, Limits};
    use crate::domain::{HealthSet, Monitor};
    use crate::incident::{Outcome, State};
    use crate::journal::Action;
    use crate::ma::RecoveryAction;
    use crate::runbook::RunbookSet;

    fn recovery(id: &str, resource: &str) -> RecoveryAction {
        let ended_at =
            chrono::DateTime::parse_from_rfc3339("2026-11-26T10:02:11Z").unwrap().to_utc();
        RecoveryAction {
            id: id.into(),
            resource: resource.into(),
            requestor: "ActiveSyncDeepTestRecycleAppPool".into(),
            started_at: ended_at,
            ended_at,
            result: "Succeeded".into(),
        }
    }

    /// Runs a runbook on `server` with a one-hour lookback; `history` is what `ma_history` finds on each server.
    fn drive(
        health_set: &str,
        monitor: &str,
        server: &str,
        hint: Option<&str>,
        history: &[(&str, RecoveryAction)],
        answer: Answer,
    ) -> (Vec<String>, Ending) {
        let limits = Limits { ma_lookback: Duration::from_secs(3600), ..LIMITS };
        drive_with(&limits, health_set, monitor, server, hint, history, answer)
    }

    fn drive_with(
        limits: &Limits,
        health_set: &str,
        monitor: &str,
        server: &str,
        hint: Option<&str>,
        history: &[(&str, RecoveryAction)],
        answer: Answer,
    ) -> (Vec<String>, Ending) {
        let runbooks = RunbookSet::load(None).unwrap();
        let inventory = inventory();
        let facts = Facts {
            server: name(server),
            health_set: HealthSet::parse(health_set).unwrap(),
            monitor: Some(Monitor::parse(monitor).unwrap()),
            mailbox_hint: hint.map(name),
        };
        let ctx = Context {
            facts: &facts,
            runbooks: &runbooks,
            inventory: &inventory,
            limits,
            approval: &[],
        };
        let found = |action: &Action, _: &[super::Done]| {
            let actions: Vec<RecoveryAction> = history
                .iter()
                .filter(|(s, _)| name(s) == *action.server())
                .map(|(_, a)| a.clone())
                .collect();
            (if actions.is_empty() { Outcome::NoneFound } else { Outcome::Found }, actions)
        };
        let (journal, ending) = run_planner(&ctx, answer, &found, Outcome::Approved);
        (lines(&journal), ending)
    }

    fn fails_until(
        kind: crate::incident::ActionKind,
    ) -> impl Fn(&Action, &[super::Done]) -> (Outcome, Vec<&'static str>) {
        move |action, journal| match action {
            Action::Probe { .. }
                if journal.iter().any(|d| d.action == kind && d.outcome == Outcome::Done) =>
            {
                (Outcome::Succeeded, vec![])
            }
            Action::Probe { .. } => (Outcome::Failed, vec![]),
            _ => (Outcome::Done, vec![]),
        }
    }

    #[test]
    fn a_recycle_managed_availability_already_did_is_skipped_and_the_ladder_goes_on_after_verifying(
    ) {
        let recycled = recovery("RecycleApplicationPool", "msexchangesyncapppool");
        let answer = fails_until(crate::incident::ActionKind::IisReset);
        let (steps, ending) = drive(
            "ActiveSync",
            "ActiveSyncDeepTestMonitor",
            "mbx01",
            None,
            &[("mbx01", recycled)],
            &answer,
        );
        assert_eq!(
            steps,
            [
                "probe mbx01 failed",
                "ma_history mbx01 found",
                "recycle_app_pool mbx01 skipped",
                "probe mbx01 failed",
                "component_state mbx01 active",
                "iis_reset mbx01 done",
                "wait mbx01 done",
                "probe mbx01 succeeded",
            ]
        );
        assert_eq!(
            (ending.state, ending.reason.as_str()),
            (State::Recovered, "IISReset on mbx01 fixed it")
        );

        // Another pool's recycle, or a lookback of zero, skips nothing; with zero nothing is read at all.
        let other = recovery("RecycleApplicationPool", "MSExchangeOWAAppPool");
        let (steps, _) = drive(
            "ActiveSync",
            "ActiveSyncDeepTestMonitor",
            "mbx01",
            None,
            &[("mbx01", other.clone())],
            &answer,
        );
        assert_eq!(
            steps[1..4],
            [
                "ma_history mbx01 found",
                "component_state mbx01 active",
                "recycle_app_pool mbx01 done"
            ]
        );
        let (steps, _) = drive_with(
            &LIMITS,
            "ActiveSync",
            "ActiveSyncDeepTestMonitor",
            "mbx01",
            None,
            &[("mbx01", other)],
            &answer,
        );
        assert_eq!(steps[1..3], ["component_state mbx01 active", "recycle_app_pool mbx01 done"]);
    }

    #[test]
    fn a_probe_that_passes_after_managed_availabilitys_own_remedy_recovers_without_a_change() {
        let recycled = recovery("RecycleApplicationPool", "MSExchangeOWAAppPool");
        let answer = |action: &Action, journal: &[super::Done]| match action {
            Action::Probe { .. } if journal.len() > 2 => (Outcome::Succeeded, vec![]),
            _ => (Outcome::Failed, vec![]),
        };
        let (steps, ending) =
            drive("OWA", "OwaCtpMonitor", "cas01", None, &[("cas01", recycled)], &answer);
        assert_eq!(
            steps,
            [
                "probe cas01 failed",
                "ma_history cas01 found",
                "recycle_app_pool cas01 skipped",
                "probe cas01 succeeded"
            ]
        );
        assert_eq!(ending.state, State::Recovered);
        assert!(ending.reason.starts_with("Managed Availability's own recycle_app_pool (RecycleApplicationPool MSExchangeOWAAppPool"), "{}", ending.reason);
    }

    #[test]
    fn of_several_pools_only_those_managed_availability_left_are_recycled() {
        let recycled = recovery("RecycleApplicationPool", "MSExchangeOWAAppPool");
        let answer = fails_until(crate::incident::ActionKind::RecycleAppPool);
        let (steps, ending) = drive(
            "OWA.Proxy",
            "OWAProxyTestMonitor",
            "cas01",
            None,
            &[("cas01", recycled)],
            &answer,
        );
        assert_eq!(
            steps[..4],
            [
                "probe cas01 failed",
                "ma_history cas01 found",
                "component_state cas01 active",
                "recycle_app_pool cas01 done"
            ]
        );
        assert_eq!(ending.reason, "recycling MSExchangeOWACalendarAppPool on cas01 fixed it");
    }

    #[test]
    fn a_force_reboot_stands_for_the_restart_and_no_failover_is_started() {
        let rebooted = recovery("ForceReboot", "MBX01");
        let answer = |action: &Action, _: &[super::Done]| match action {
            Action::Probe { .. } => (Outcome::Failed, vec![]),
            _ => (Outcome::Done, vec![]),
        };
        let (steps, ending) = drive(
            "IMAP.Protocol",
            "ImapSelfTestMonitor",
            "mbx01",
            None,
            &[("mbx01", rebooted)],
            &answer,
        );
        assert_eq!(
            steps,
            [
                "probe mbx01 failed",
                "ma_history mbx01 found",
                "component_state mbx01 active",
                "restart_service mbx01 done",
                "wait mbx01 done",
                "probe mbx01 failed",
                "restart_server mbx01 skipped",
                "probe mbx01 failed",
            ]
        );
        assert_eq!((ending.state, ending.activation_disabled.len()), (State::Escalated, 0));
    }

    #[test]
    fn imap_ctp_restarts_the_back_end_service_on_the_mailbox_server_and_probes_the_cas() {
        let answer = fails_until(crate::incident::ActionKind::RestartService);
        let (steps, ending) = drive("IMAP", "ImapCTPMonitor", "cas01", Some("mbx01"), &[], &answer);
        assert_eq!(
            steps,
            [
                "probe cas01 failed",
                "ma_history mbx01 none",
                "component_state mbx01 active",
                "restart_service mbx01 done",
                "wait mbx01 done",
                "probe cas01 succeeded"
            ]
        );
        assert_eq!(ending.reason, "restarting MSExchangeIMAP4BE on mbx01 fixed it");

        let (steps, ending) = drive("IMAP", "ImapCTPMonitor", "cas01", None, &[], &answer);
        assert_eq!(steps, ["probe cas01 failed"]);
        assert_eq!(ending.state, State::Blocked);
        assert!(ending.reason.starts_with("no _Mbx: hint in the alert"), "{}", ending.reason);
    }
}

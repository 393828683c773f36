//! The rungs of a runbook's ladder that change one thing on one server (recycle pools, IISReset, restart a
//! service), on the alert's server or on the `_Mbx:` Mailbox server, and what Managed Availability already did.
//!
//! Before the first remedy on a server the planner reads Managed Availability's recent recovery actions there
//! (`ma_history`, once per server and incident, when `safety.ma_lookback` is not zero). A remedy it already took in
//! that window is journaled `skipped` instead of run, and verification follows as after any remedy. Like the rest
//! of the planner, this does no IO and reads no clock: the executor applied the window.

use super::{changed, Decision, Done, Ran, Remedied, Replay, Step};
use crate::domain::ServerName;
use crate::executor::{Action, Until};
use crate::incident::{ActionKind, Outcome, State};
use crate::ma::{self, RecoveryAction};
use super::Context;
use crate::domain::Monitor;
use crate::runbook::{Remedy, Runbook, Target};

impl<'a> Replay<'a> {
    /// Runs one recycle, IISReset or service restart, unless this incident already ran it on that server or
    /// Managed Availability did; then verifies on the alert's server. `Some` when the runbook is done.
    pub(super) fn remedy(&mut self, ctx: &Context, runbook: &Runbook, server: &ServerName, monitor: &Monitor, remedy: &Remedy) -> Step<Option<Remedied>> {
        let on = match remedy.target() {
            Target::AlertServer => server.clone(),
            Target::MailboxHint => self.hinted_mailbox(ctx, server)?,
        };
        let (action, what) = match remedy {
            Remedy::RecycleAppPool { .. } => {
                let pools: Vec<_> = remedy.app_pools().into_iter().filter(|pool| self.first_time(Ran::Recycle(on.clone(), pool.clone()))).collect();
                if pools.is_empty() {
                    return Ok(None);
                }
                let history = self.ma_history(ctx, &on)?;
                let (by_ma, left): (Vec<_>, Vec<_>) = pools.into_iter().partition(|pool| ma::took(&history, ma::Remedy::Recycle(pool.as_str())).is_some());
                if left.is_empty() {
                    let taken: Vec<&RecoveryAction> = by_ma.iter().filter_map(|pool| ma::took(&history, ma::Remedy::Recycle(pool.as_str()))).collect();
                    return self.skipped(ctx, runbook, server, monitor, Action::RecycleAppPool { server: on, app_pools: by_ma }, &taken);
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
                (Action::IisReset { server: on.clone(), noforce: *noforce }, format!("IISReset on {on}"))
            }
            Remedy::RestartService { service, .. } => {
                if !self.first_time(Ran::Service(on.clone(), service.clone())) {
                    return Ok(None);
                }
                let history = self.ma_history(ctx, &on)?;
                let action = Action::RestartService { server: on.clone(), service: service.clone() };
                if let Some(taken) = ma::took(&history, ma::Remedy::RestartService(service.as_str())) {
                    return self.skipped(ctx, runbook, server, monitor, action, &[taken]);
                }
                (action, format!("restarting {service} on {on}"))
            }
            Remedy::CheckMailbox { .. } | Remedy::RestartServer { .. } => unreachable!("the planner runs these itself"),
        };
        let done = self.mutate(action)?;
        // A change on the Mailbox server warms up there; the check is the alert's server's.
        let recovered = if &on == server {
            self.verify(ctx, runbook, server, monitor, changed(done))?
        } else {
            let pause = if runbook.verify.settle { ctx.limits.settle_wait } else { ctx.limits.warm_up };
            if changed(done) && !pause.is_zero() {
                self.run(Action::Wait { server: on.clone(), duration: pause, until: Until::Elapsed })?;
            }
            self.verify(ctx, runbook, server, monitor, false)?
        };
        Ok(recovered.then(|| Remedied::Recovered(format!("{what} fixed it"))))
    }

    /// A restart Managed Availability already did (`ForceReboot` in the window): journaled `skipped`, with no
    /// failover, then verified. `None` when it did not, and the restart procedure runs.
    pub(super) fn rebooted_by_ma(&mut self, ctx: &Context, runbook: &Runbook, server: &ServerName, monitor: &Monitor) -> Step<Option<Option<Remedied>>> {
        let history = self.ma_history(ctx, server)?;
        match ma::took(&history, ma::Remedy::Restart) {
            Some(taken) => Ok(Some(self.skipped(ctx, runbook, server, monitor, Action::RestartServer { server: server.clone() }, &[taken])?)),
            None => Ok(None),
        }
    }

    /// Journals `action` skipped (naming what Managed Availability did, when and by which responder), then verifies
    /// at once: nothing changed now, so there is nothing to warm up.
    fn skipped(&mut self, ctx: &Context, runbook: &Runbook, server: &ServerName, monitor: &Monitor, action: Action, taken: &[&RecoveryAction]) -> Step<Option<Remedied>> {
        let why: Vec<String> = taken.iter().map(|a| ma::skipped(a)).collect();
        let kind = action.kind();
        self.skip(action, why.join("; "))?;
        if self.verify(ctx, runbook, server, monitor, false)? {
            let what: Vec<String> = taken.iter().map(|a| a.describe()).collect();
            return Ok(Some(Remedied::Recovered(format!("Managed Availability's own {kind} ({}) fixed it; the responder did not repeat it", what.join("; ")))));
        }
        Ok(None)
    }

    /// The journal's record of a skipped step, or the decision to journal it.
    fn skip(&mut self, action: Action, why: String) -> Step<&'a Done> {
        let journal: &'a [Done] = self.journal;
        match journal.get(self.pos) {
            Some(done) if done.action == action.kind() && &done.server == action.server() && done.outcome == Outcome::Skipped => {
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
        let older_journal = self.journal.get(self.pos).is_some_and(|done| done.action != ActionKind::MaHistory);
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
            return Err(self.stop(State::Blocked, format!("no _Mbx: hint in the alert: the runbook acts on the Mailbox server behind {server}, and none is named")));
        };
        if !ctx.inventory.contains_key(mailbox) {
            return Err(self.stop(State::Blocked, format!("the _Mbx: server {mailbox} is not in the server inventory; automation acts on inventory servers only")));
        }
        Ok(mailbox.clone())
    }
}

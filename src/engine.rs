//! The runbook engine: the worker that takes incidents that are not final and drives each to a final state.
//!
//! For each incident it asks the pure planner ([`crate::runbook::plan`]) for the next step, applies the safety
//! rules (pause, silences, dry-run, throttles, per-server locks), journals the step before and after running it,
//! and calls the executor. When the planner says the incident is over, it composes the escalation (if the ending
//! needs a human) and commits ending and email together. The notifier ([`crate::notifier`]) delivers the email.
//!
//! Invariant: a mutating step is journaled as started before it runs; after a crash it is never run again, only
//! marked `interrupted`, and the planner verifies before anything else changes a server.
//! Invariant: one incident acts on a server at a time. A running driver holds its servers in memory; every server
//! an incident has acted on is also held in the store until the incident ends, so a pause or a restart in the
//! middle of a failover never lets another incident act there. A driver that stops, fails or panics drops its
//! memory locks through a guard; a failed or panicked incident is driven again after a backoff.
//! Invariant: every ending, planned or forced, reads the journal for what it leaves behind (activation disabled).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::approval::Token;
use crate::config::Settings;
use crate::domain::ServerName;
use crate::executor::{powershell::PowerShell, simulator::Simulator, Executor, ExecutorKind};
use crate::incident::{ActionKind, Outcome, State};
use crate::journal::{Action, Done, Ending, Report, Until};
use crate::mailer::{self, Escalation, Mailer};
use crate::metrics::Metrics;
use crate::runbook::plan::{self, Context, Decision, Limits, Proposal};
use crate::shutdown::Signal;
use crate::store::{
    now_ms, Decided, NewApproval, NewDecision, NewNotification, NewStep, Requested, Silence,
    Started, Store, StoreError, Target,
};

mod approvals;
mod steps;

use approvals::{ask, commits_to, expire_approvals};
use steps::{perform, resume};

/// How the rest of the service talks to the engine: it is told which incidents to look at.
#[derive(Clone)]
pub struct EngineHandle {
    wake: mpsc::UnboundedSender<Wake>,
    running: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
}

#[derive(Debug)]
enum Wake {
    /// A new incident, or an alert attached to one: drive it if nothing does.
    Incident(String),
    /// A resolved notice for an incident: drive it, or end the wait it is in.
    Resolved(String),
    /// Automation was resumed: look at everything.
    All,
    /// A driver stopped; its servers are free.
    Stopped,
}

impl EngineHandle {
    pub fn wake(&self, incident_id: &str) {
        let _ = self.wake.send(Wake::Incident(incident_id.to_owned()));
    }

    /// A resolved notice arrived for the incident: a wait under way ends and it checks at once.
    pub fn resolved(&self, incident_id: &str) {
        let _ = self.wake.send(Wake::Resolved(incident_id.to_owned()));
    }

    /// Applies the pause switch at once (the store already holds it); resuming looks at every waiting incident.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
        if !paused {
            let _ = self.wake.send(Wake::All);
        }
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }
}

/// What every driver shares.
struct Shared {
    settings: Arc<Settings>,
    store: Store,
    executor: Executor,
    limits: Limits,
    mail: Arc<Notify>,
    wake: mpsc::UnboundedSender<Wake>,
    /// Servers held by a running driver, and by which incident.
    locks: Mutex<HashMap<ServerName, String>>,
    /// Notified whenever a driver stops and frees its servers.
    released: Notify,
    /// Running drivers, with the signal that cuts their wait short.
    drivers: Mutex<HashMap<String, Arc<Notify>>>,
    /// How often each incident's driver failed in a row, and when it may be driven again (the backoff).
    failures: Mutex<HashMap<String, (u32, tokio::time::Instant)>>,
    paused: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    /// Where people reach the service (`public_url`, else the listener's address): the approval links.
    links: String,
}

/// A mutex that a panicking driver may have held: its data is still sound (plain maps), so take it anyway.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The first wait before a failed driver's incident is driven again; it doubles with each failure in a row.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two tries.
const RETRY_MAX: Duration = Duration::from_secs(300);

/// Held by a running driver: when it is dropped (the driver returned, failed or panicked) the driver's memory locks
/// are released, and a failed incident is scheduled to be driven again.
struct Driving {
    shared: Arc<Shared>,
    id: String,
    /// Set when the driver reached a clean stop; unset on an error or a panic.
    succeeded: bool,
}

impl Drop for Driving {
    fn drop(&mut self) {
        let shared = &self.shared;
        lock(&shared.drivers).remove(&self.id);
        lock(&shared.locks).retain(|_, holder| holder != &self.id);
        shared.released.notify_waiters();
        let _ = shared.wake.send(Wake::Stopped);
        if self.succeeded {
            lock(&shared.failures).remove(&self.id);
            return;
        }
        if std::thread::panicking() {
            tracing::error!(incident = %self.id, "incident driver panicked; its servers are released and it is driven again after a backoff");
        }
        let delay = {
            let mut failures = lock(&shared.failures);
            let entry = failures.entry(self.id.clone()).or_insert((0, tokio::time::Instant::now()));
            entry.0 = entry.0.saturating_add(1);
            let delay =
                RETRY_FIRST.saturating_mul(1 << entry.0.min(16).saturating_sub(1)).min(RETRY_MAX);
            entry.1 = tokio::time::Instant::now() + delay;
            delay
        };
        let (wake, id) = (shared.wake.clone(), self.id.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = wake.send(Wake::Incident(id));
            });
        }
    }
}

pub struct Engine {
    shared: Arc<Shared>,
    wakes: mpsc::UnboundedReceiver<Wake>,
    running: Arc<AtomicBool>,
    mailer: Mailer,
}

impl Engine {
    /// Builds the executor and mailer; a bad mail setting fails here.
    /// `paused` is the pause switch as the store holds it at start; later changes arrive through the handle.
    /// `links` is the address approval links are built on: `public_url`, else the listener's own.
    pub fn new(
        settings: Arc<Settings>,
        store: Store,
        metrics: Arc<Metrics>,
        paused: bool,
        links: String,
    ) -> anyhow::Result<(Engine, EngineHandle)> {
        let executor = match settings.executor.kind {
            ExecutorKind::Simulator => Executor::Simulator(Simulator::new(
                &settings.simulator,
                &settings.inventory,
                settings.runbooks.health_sets(),
            )),
            ExecutorKind::Powershell => Executor::PowerShell(
                PowerShell::new(&settings.executor, settings.timing.restart_timeout.0)?
                    .with_inventory(&settings.inventory)
                    .with_gauges(metrics.executor_gauges()),
            ),
        };
        let mailer =
            Mailer::new(&settings.email, settings.smtp_password.as_ref(), &settings.data_dir)?;
        let (wake, wakes) = mpsc::unbounded_channel();
        let running = Arc::new(AtomicBool::new(false));
        let mail = Arc::new(Notify::new());
        let paused = Arc::new(AtomicBool::new(paused));
        let timing = &settings.timing;
        let limits = Limits {
            settle_wait: timing.settle_wait.0,
            warm_up: timing.warm_up.0,
            restart_timeout: timing.restart_timeout.0,
            failover_timeout: timing.failover_timeout.0,
            poll_interval: timing.poll_interval.0,
            ma_lookback: settings.safety.ma_lookback.0,
        };
        let shared = Arc::new(Shared {
            settings,
            store,
            executor,
            limits,
            mail,
            wake: wake.clone(),
            locks: Mutex::new(HashMap::new()),
            released: Notify::new(),
            drivers: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            paused: paused.clone(),
            metrics,
            links,
        });
        let handle = EngineHandle { wake, running: running.clone(), paused };
        Ok((Engine { shared, wakes, running, mailer }, handle))
    }

    /// Drives incidents until `stopping` turns true; then lets running steps finish within the service's deadline.
    pub async fn run(mut self, stopping: Signal) {
        let shared = self.shared.clone();
        let mut drivers = JoinSet::new();
        let notifier = tokio::spawn(crate::notifier::run(
            shared.store.clone(),
            self.mailer,
            shared.mail.clone(),
            stopping.clone(),
            shared.metrics.clone(),
        ));
        self.running.store(true, Ordering::Relaxed);
        // Whether some incident is waiting for a server another incident holds: then a driver stopping is a reason
        // to look again.
        let mut deferred = dispatch(&shared, &mut drivers, &stopping, None).await;
        // The sweep: every open incident without a driver (its driver failed on a store error, its retry was lost)
        // is driven again, and one that makes no progress is reported once.
        let mut sweep = tokio::time::interval(sweep_every(&shared.settings));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stopping.stopped() => break,
                _ = sweep.tick() => {
                    // Another instance may have paused or resumed automation: the store holds the switch.
                    match shared.store.paused().await {
                        Ok(paused) => shared.paused.store(paused.is_some(), Ordering::SeqCst),
                        Err(err) => tracing::warn!(error = %err, "cannot read the pause switch"),
                    }
                    expire_approvals(&shared).await;
                    notify_stalled(&shared).await;
                    deferred = dispatch(&shared, &mut drivers, &stopping, None).await;
                }
                Some(wake) = self.wakes.recv() => match wake {
                    Wake::Incident(id) | Wake::Resolved(id) if !lock(&shared.drivers).contains_key(&id) => {
                        deferred |= dispatch(&shared, &mut drivers, &stopping, Some(id)).await;
                    }
                    Wake::Resolved(id) => {
                        // Only waits under way hear it: a notice never shortens a wait that begins later.
                        if let Some(signal) = lock(&shared.drivers).get(&id) {
                            signal.notify_waiters();
                        }
                    }
                    Wake::Incident(_) => {}
                    Wake::All => deferred = dispatch(&shared, &mut drivers, &stopping, None).await,
                    Wake::Stopped if deferred => deferred = dispatch(&shared, &mut drivers, &stopping, None).await,
                    Wake::Stopped => {}
                },
                Some(_) = drivers.join_next(), if !drivers.is_empty() => {}
            }
        }
        self.running.store(false, Ordering::Relaxed);
        while drivers.join_next().await.is_some() {}
        let _ = notifier.await;
    }
}

/// Starts a driver for every incident (or the one named) that is not final, not already driven, and whose servers
/// are free: its own server, and every server it holds in the store from before (a pause, a restart). An incident
/// whose own server another incident holds in the store waits for that one to end. Nothing starts while automation
/// is paused. Returns whether an incident had to wait for a server.
async fn dispatch(
    shared: &Arc<Shared>,
    drivers: &mut JoinSet<()>,
    stopping: &Signal,
    only: Option<String>,
) -> bool {
    if stopping.is_raised() || shared.paused.load(Ordering::SeqCst) {
        return false;
    }
    let (runnable, held) =
        match (shared.store.runnable(only).await, shared.store.server_locks().await) {
            (Ok(runnable), Ok(held)) => (runnable, held),
            (Err(err), _) | (_, Err(err)) => {
                tracing::error!(error = %err, "cannot list incidents to run");
                return false;
            }
        };
    let mut deferred = false;
    let now = tokio::time::Instant::now();
    for incident in runnable {
        if lock(&shared.drivers).contains_key(&incident.id) {
            continue;
        }
        // A failed driver's incident waits out its backoff; its retry (or the sweep) comes back for it.
        if lock(&shared.failures).get(&incident.id).is_some_and(|(_, due)| *due > now) {
            continue;
        }
        if held.iter().any(|(server, holder)| server == &incident.server && holder != &incident.id)
        {
            deferred = true;
            continue;
        }
        let mut needed = vec![incident.server.clone()];
        needed.extend(
            held.iter()
                .filter(|(server, holder)| holder == &incident.id && server != &incident.server)
                .map(|(server, _)| server.clone()),
        );
        {
            let mut locks = lock(&shared.locks);
            if needed
                .iter()
                .any(|server| locks.get(server).is_some_and(|holder| holder != &incident.id))
            {
                deferred = true;
                continue;
            }
            for server in needed {
                locks.insert(server, incident.id.clone());
            }
        }
        let signal = Arc::new(Notify::new());
        lock(&shared.drivers).insert(incident.id.clone(), signal.clone());
        let span = tracing::info_span!("incident", id = %incident.id, server = %incident.server);
        let mut driving =
            Driving { shared: shared.clone(), id: incident.id.clone(), succeeded: false };
        let stopping = stopping.clone();
        drivers.spawn(
            async move {
                let shared = driving.shared.clone();
                let driven = drive(&shared, &driving.id, &signal, stopping).await;
                let lost = driven.as_ref().err().and_then(|err| err.downcast_ref::<StoreError>());
                match (&driven, lost) {
                    // Another instance took the incident over (this one stalled past its lease): it drives it now,
                    // and this one lets it go.
                    (Err(_), Some(StoreError::LostClaim(why))) => {
                        tracing::warn!(reason = %why, "another instance drives this incident now; this one lets it go");
                    }
                    (Err(err), _) => {
                        tracing::error!(error = %format!("{err:#}"), "incident driver failed; it is driven again after a backoff");
                    }
                    (Ok(()), _) => {}
                }
                driving.succeeded = driven.is_ok() || lost.is_some_and(|e| matches!(e, StoreError::LostClaim(_)));
                drop(driving);
            }
            .instrument(span),
        );
    }
    deferred
}

/// Drives one incident until it ends, automation is paused, or the service stops.
async fn drive(shared: &Shared, id: &str, signal: &Notify, stopping: Signal) -> anyhow::Result<()> {
    let store = &shared.store;
    // The servers this driver holds both in memory and in the store.
    let mut held: Vec<ServerName> = Vec::new();
    loop {
        if stopping.is_raised() {
            return Ok(());
        }
        let (incident, steps) = store.load(id.to_owned()).await?;
        if incident.state.is_final() {
            return Ok(());
        }
        if steps.is_empty() {
            if shared.paused.load(Ordering::Relaxed) {
                return Ok(());
            }
            if let Some(reason) = silenced(store, &incident.facts.server).await? {
                end(shared, id, State::Suppressed, reason).await?;
                return Ok(());
            }
        }
        let unfinished = steps.last().filter(|s| !s.finished).cloned();
        let journal: Vec<Done> =
            steps.iter().filter(|s| s.finished).map(|s| s.done.clone()).collect();
        let dry_run = incident.dry_run || shared.settings.executor.dry_run;
        // A dry run changes nothing, so nobody is asked to approve it.
        let approval: &[ActionKind] = if dry_run { &[] } else { &shared.settings.approval.actions };
        let settings = &shared.settings;
        let ctx = Context {
            facts: &incident.facts,
            runbooks: &settings.runbooks,
            inventory: &settings.inventory,
            limits: &shared.limits,
            approval,
        };
        let plan = plan::next(&ctx, &journal);
        if incident.facts.monitor.is_none() && !incident.monitor_found {
            if let Some(monitor) = plan.monitor {
                store.set_monitor(id.to_owned(), monitor).await?;
            }
        }
        let (action, proposal, skipped) = match plan.decision {
            Decision::Finish(ending) => {
                finish(shared, id, ending).await?;
                return Ok(());
            }
            // A person decides; the decision queues the incident again.
            Decision::Await => return Ok(()),
            Decision::Ask(proposal) => (proposal.covers[0].clone(), Some(proposal), None),
            Decision::Run(action) => (action, None, None),
            Decision::Skip(action, why) => (action, None, Some(why)),
        };
        if !held.contains(action.server()) {
            match hold(shared, action.server(), id, &stopping).await? {
                Held::Yes => held.push(action.server().clone()),
                Held::Stopping => return Ok(()),
                Held::Busy(reason) => {
                    end(shared, id, State::Blocked, reason).await?;
                    return Ok(());
                }
            }
        }
        if let Some(step) = unfinished {
            resume(shared, &incident, step, &action, signal, &stopping).await?;
            continue;
        }
        let kind = action.kind();
        let command = shared.executor.command(&action);
        // Managed Availability already did it: journaled, not run, and not counted again.
        if let Some(why) = skipped {
            tracing::info!(%kind, reason = %why, "step skipped");
            store.skip_step(id.to_owned(), action.clone(), command, Outcome::Skipped, why).await?;
            shared.metrics.action(kind, Outcome::Skipped);
            continue;
        }
        if kind.is_mutating() {
            if shared.paused.load(Ordering::Relaxed) {
                return wait_paused(shared, id, &action, proposal.is_some()).await;
            }
            // A silence created while the incident runs takes effect before its next change.
            if let Some(reason) = silenced(store, action.server()).await? {
                tracing::info!(%kind, %reason, "a silence stops the next change");
                end(shared, id, State::Suppressed, reason).await?;
                return Ok(());
            }
            if let Some(proposal) = proposal {
                ask(shared, id, proposal).await?;
                continue;
            }
            if dry_run {
                store
                    .skip_step(
                        id.to_owned(),
                        action.clone(),
                        command,
                        Outcome::DryRun,
                        "dry run: not run".into(),
                    )
                    .await?;
                shared.metrics.action(kind, Outcome::DryRun);
                continue;
            }
        }
        let safety = &shared.settings.safety;
        let group = shared.settings.inventory.get(action.server()).map(|e| e.group.clone());
        let throttle =
            action.is_throttled().then(|| crate::safety::rule(safety, kind).cloned()).flatten();
        let commits_to = commits_to(safety, &action);
        let seq = match store
            .start_step(
                id.to_owned(),
                NewStep { action: &action, command, group, throttle, commits_to },
            )
            .await?
        {
            Started::Run { seq } => seq,
            Started::Throttled(reason) => {
                tracing::warn!(%kind, %reason, "step throttled");
                shared.metrics.action(kind, Outcome::Throttled);
                continue;
            }
            // Paused or silenced through another instance since the checks above.
            Started::Paused => {
                shared.paused.store(true, Ordering::SeqCst);
                return wait_paused(shared, id, &action, false).await;
            }
            Started::Silenced(silence) => {
                let reason = silence_reason(&silence);
                tracing::info!(%kind, %reason, "a silence stops the next change");
                end(shared, id, State::Suppressed, reason).await?;
                return Ok(());
            }
        };
        tracing::info!(%kind, server = %action.server(), "step started");
        let Some(report) = perform(shared, &action, None, signal, &stopping).await else {
            // The service is stopping: the step stays unfinished in the journal and resumes after a restart.
            return Ok(());
        };
        tracing::info!(%kind, outcome = %report.outcome, "step finished");
        shared.metrics.action(kind, report.outcome);
        store.finish_step(id.to_owned(), seq, report).await?;
    }
}

enum Held {
    Yes,
    Stopping,
    /// Another incident kept the server longer than `timing.restart_timeout`.
    Busy(String),
}

/// Takes a server before the first step on it: in memory (no running driver holds it) and in the store (no other
/// incident that is not final holds it), waiting (bounded) while another incident has it. The incident keeps it in
/// the store until it ends. A Mailbox server's own incident never waits for a CAS, so only multi-role servers
/// alerting about each other could wait on each other, and the bound ends that.
async fn hold(
    shared: &Shared,
    server: &ServerName,
    id: &str,
    stopping: &Signal,
) -> anyhow::Result<Held> {
    let deadline = tokio::time::Instant::now() + shared.settings.timing.restart_timeout.0;
    loop {
        let released = shared.released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        let running = {
            let mut locks = lock(&shared.locks);
            match locks.get(server) {
                Some(holder) if holder != id => Some(holder.clone()),
                _ => {
                    locks.insert(server.clone(), id.to_owned());
                    None
                }
            }
        };
        let holder = match running {
            Some(holder) => holder,
            None => match shared
                .store
                .lock_server(id.to_owned(), server.clone())
                .await
                .context("cannot take the server lock")?
            {
                None => return Ok(Held::Yes),
                Some(holder) => {
                    // Held by an incident that is not running now (paused, or waiting to resume): give the memory
                    // lock back and wait for that incident to end.
                    lock(&shared.locks).retain(|s, h| !(s == server && h == id));
                    holder
                }
            },
        };
        tracing::info!(%server, %holder, "waiting for another incident to finish with the server");
        tokio::select! {
            _ = released => {}
            _ = tokio::time::sleep_until(deadline) => {
                return Ok(Held::Busy(format!(
                    "{server} stayed busy with incident {holder} for {}; not acting on it",
                    humantime::format_duration(shared.settings.timing.restart_timeout.0)
                )));
            }
            _ = stopping.stopped() => return Ok(Held::Stopping),
        }
    }
}

/// The silence covering a server now, as an ending's reason.
async fn silenced(store: &Store, server: &ServerName) -> anyhow::Result<Option<String>> {
    Ok(store.silenced(server.to_string()).await?.as_ref().map(silence_reason))
}

fn silence_reason(silence: &Silence) -> String {
    format!("a silence covers {} until {}: {}", silence.server, silence.until, silence.reason)
}

/// Leaves an incident queued while automation is paused, before the change it would make next (or ask to approve).
async fn wait_paused(
    shared: &Shared,
    id: &str,
    action: &Action,
    asking: bool,
) -> anyhow::Result<()> {
    let asking = if asking { "asking to approve " } else { "" };
    let kind = action.kind();
    let reason = format!("automation paused before {asking}{kind} on {}", action.server());
    shared.store.set_state(id.to_owned(), State::Queued, Some(reason)).await?;
    tracing::info!(%kind, "automation paused; the incident waits queued");
    Ok(())
}

/// Ends an incident from outside the runbook (a busy server, a silence): the ending reads the journal, where a
/// step still running counts as interrupted, so what the incident leaves behind is never dropped.
async fn end(shared: &Shared, id: &str, state: State, reason: String) -> anyhow::Result<()> {
    let ending = ending_now(shared, id, state, reason).await?;
    finish(shared, id, ending).await
}

/// An ending as the journal stands now; the store reads a step without a result as `interrupted`.
async fn ending_now(
    shared: &Shared,
    id: &str,
    state: State,
    reason: String,
) -> anyhow::Result<Ending> {
    let (_, steps) = shared.store.load(id.to_owned()).await?;
    let journal: Vec<Done> = steps.into_iter().map(|step| step.done).collect();
    Ok(Ending::from_journal(state, reason, &journal))
}

/// Ends an incident; endings that need a human carry their escalation email in the same commit, and so does a
/// recovery when `email.notify_on` asks for recovered notices. An ending that leaves database activation disabled
/// always emails, whatever its state: someone must re-enable it.
async fn finish(shared: &Shared, id: &str, ending: Ending) -> anyhow::Result<()> {
    let notify = mailer::notifies(&shared.settings.email.notify_on, ending.state)
        || !ending.activation_disabled.is_empty();
    let notification = if notify {
        Some(escalation(shared, id, ending.state.as_str(), &ending).await?)
    } else {
        None
    };
    tracing::info!(state = %ending.state, reason = %ending.reason, "incident finished");
    let (queued, state) = (notification.as_ref().is_some_and(|n| !n.held), ending.state);
    shared.store.finish_incident(id.to_owned(), ending, notification).await?;
    shared.metrics.incident_finished(state);
    if queued {
        shared.mail.notify_one();
    }
    Ok(())
}

/// How often the sweep looks at every open incident: `timing.poll_interval`, at most every ten seconds; on a
/// shared PostgreSQL store at most every two, since the sweep is how an instance takes over the incidents of one
/// that died once their leases lapse.
fn sweep_every(settings: &Settings) -> Duration {
    let most = match settings.store {
        crate::config::StoreSettings::Sqlite => Duration::from_secs(10),
        crate::config::StoreSettings::Postgres { .. } => TAKE_OVER_EVERY,
    };
    settings.timing.poll_interval.0.clamp(Duration::from_millis(10), most)
}

/// The longest an instance on a shared store waits between two looks for incidents it could take over.
const TAKE_OVER_EVERY: Duration = Duration::from_secs(2);

/// Reports, once each, the open incidents that have made no progress for `timing.stall_after` and that no driver
/// is running (its driver keeps failing, or its servers stay taken): never silent, even when it cannot end.
async fn notify_stalled(shared: &Shared) {
    if shared.paused.load(Ordering::SeqCst) {
        return;
    }
    let bound = shared.settings.timing.stall_after.0;
    let stalled = match shared.store.stalled(bound.as_millis() as i64).await {
        Ok(stalled) => stalled,
        Err(err) => {
            tracing::warn!(error = %err, "cannot look for incidents that make no progress");
            return;
        }
    };
    for (id, since) in stalled {
        if lock(&shared.drivers).contains_key(&id) {
            continue;
        }
        let failures = lock(&shared.failures).get(&id).map_or(0, |(count, _)| *count);
        let reason = format!(
            "no progress since {} (timing.stall_after is {}); automation keeps trying{}, but a person should look now",
            crate::store::rfc3339(since),
            humantime::format_duration(bound),
            if failures > 0 { format!(" after {failures} failed attempt(s) to drive it; the service log has each error") } else { String::new() }
        );
        let sent = async {
            let ending = ending_now(shared, &id, State::Running, reason.clone()).await?;
            let mut notice = escalation(shared, &id, "stalled", &ending).await?;
            notice.held = false;
            shared.store.notify_stalled(id.clone(), notice).await?;
            anyhow::Ok(())
        };
        match sent.await {
            Ok(()) => {
                tracing::warn!(incident = %id, %reason, "incident makes no progress; on-call is told");
                shared.mail.notify_one();
            }
            Err(err) => {
                tracing::warn!(incident = %id, error = %format!("{err:#}"), "cannot report an incident that makes no progress; trying again")
            }
        }
    }
}

/// Who hears about an incident: the first `[[email.routes]]` that matches it, else `email.to`.
fn recipients<'s>(
    shared: &'s Shared,
    incident: &crate::store::IncidentView,
    alerts: &[crate::store::AlertSummary],
) -> &'s [String] {
    let monitor =
        incident.monitor.as_deref().or_else(|| alerts.first().and_then(|a| a.monitor.as_deref()));
    let names =
        mailer::Names { health_set: &incident.health_set, monitor, server: &incident.server };
    mailer::recipients(&shared.settings.email_routes, &shared.settings.email.to, &names)
}

/// The email for an incident: its ending, or (`word` "stalled") the notice that it makes no progress.
async fn escalation(
    shared: &Shared,
    id: &str,
    word: &str,
    ending: &Ending,
) -> anyhow::Result<NewNotification> {
    let mut incident = shared.store.incident(id.to_owned()).await?;
    incident.state = word.to_owned();
    incident.reason = Some(ending.reason.clone());
    let alerts = shared.store.incident_alerts(id.to_owned()).await?;
    let email = &shared.settings.email;
    // One escalation per server, health set and monitor per `safety.escalation_min_interval`: later ones are kept
    // on their incident, not sent, and the next one that is sent says how many were held back.
    let history = shared.store.escalation_history(id.to_owned()).await?;
    let interval = shared.settings.safety.escalation_min_interval.0.as_millis() as i64;
    let is_escalation = word != State::Recovered.as_str();
    let held = is_escalation
        && history.last_sent_at.is_some_and(|at| crate::store::now_ms() - at < interval);
    let suppressed_escalations = if is_escalation { history.held_since } else { 0 };
    let escalation = Escalation {
        incident: &incident,
        alerts: &alerts,
        activation_disabled: &ending.activation_disabled,
        activation_left_as_found: &ending.activation_left_as_found,
        suppressed_escalations,
    };
    let to = recipients(shared, &incident, &alerts);
    let message =
        mailer::compose_for(&escalation, &email.from, to, shared.settings.public_url.as_deref())?;
    Ok(NewNotification {
        kind: mailer::kind(&escalation).into(),
        from: email.from.clone(),
        to: to.to_vec(),
        subject: mailer::subject(&escalation),
        message: message.formatted(),
        held,
    })
}

#[cfg(test)]
mod tests;

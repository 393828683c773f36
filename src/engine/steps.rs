//! Running one journaled step: a wait is kept here (cut short by a resolved notice), a read is retried on executor
//! errors, a change runs once; and a step the service was running when it stopped is continued or recorded
//! `interrupted`.

use super::*;

/// Continues a step whose result the journal does not have: the service stopped while it ran. A wait or a read
/// goes on (a wait with the time it has left, ended at once by a resolved notice that came after it began); a change
/// is recorded `interrupted`, and the planner verifies before anything else.
pub(super) async fn resume(
    shared: &Shared,
    incident: &crate::store::IncidentRecord,
    step: crate::store::StepRecord,
    wanted: &Action,
    signal: &Notify,
    stopping: &Signal,
) -> anyhow::Result<()> {
    let same = step.done.action == wanted.kind() && &step.done.server == wanted.server();
    let noticed = incident.resolved_at.is_some_and(|at| at >= step.started_at);
    let report = match wanted {
        Action::Wait { until: Until::Elapsed, .. } if same && noticed => {
            Report::new(Outcome::Done, "cut short: a resolved notice arrived while the service was stopped, checking now")
        }
        action if same && !action.kind().is_mutating() => match perform(shared, action, Some(step.started_at), signal, stopping).await {
            Some(report) => report,
            None => return Ok(()),
        },
        _ => Report::new(Outcome::Interrupted, "the service stopped before this step's result was recorded; verifying before anything else"),
    };
    tracing::warn!(kind = %step.done.action, outcome = %report.outcome, "resumed a step the service was running when it stopped");
    shared.metrics.action(step.done.action, report.outcome);
    shared
        .store
        .finish_step(incident.id.clone(), step.seq, report)
        .await
        .context("cannot record the resumed step")
}

/// Runs one journaled step: a wait is kept here (a resumed one, journaled at `resumed` in store time, for the time
/// it has left), a read is retried on executor errors, a change runs once. `None` when the service is stopping.
pub(super) async fn perform(
    shared: &Shared,
    action: &Action,
    resumed: Option<i64>,
    signal: &Notify,
    stopping: &Signal,
) -> Option<Report> {
    let left = |duration: Duration| match resumed {
        Some(started_at) => duration.saturating_sub(Duration::from_millis(
            u64::try_from(now_ms() - started_at).unwrap_or(0),
        )),
        None => duration,
    };
    match action {
        Action::Wait { duration, until: Until::Elapsed, .. } => {
            settle(left(*duration), signal, stopping).await
        }
        Action::Wait { server, duration, until: Until::Answering } => {
            answering(shared, server, left(*duration), stopping).await
        }
        action if action.is_read_only() => read(shared, action, stopping).await,
        action => Some(shared.executor.run(action).await),
    }
}

/// Waits out a settle or warm-up time; a resolved notice that arrives meanwhile cuts it short. `None` when the
/// service is stopping: the wait stays unfinished in the journal and continues with the time left after a restart.
async fn settle(duration: Duration, signal: &Notify, stopping: &Signal) -> Option<Report> {
    tokio::select! {
        _ = tokio::time::sleep(duration) => Some(Report::new(Outcome::Done, format!("waited {}", humantime::format_duration(duration)))),
        _ = signal.notified() => Some(Report::new(Outcome::Done, "cut short: a resolved notice arrived, checking now")),
        _ = stopping.stopped() => None,
    }
}

/// A read-only step, tried up to `executor.read_attempts` times while the executor fails (the shell errs, times
/// out, or prints what does not parse), `executor.read_backoff` apart and doubling. A probe that ran and failed is
/// a result, not an error. The detail tells every attempt.
async fn read(shared: &Shared, action: &Action, stopping: &Signal) -> Option<Report> {
    let config = &shared.settings.executor;
    let attempts = config.read_attempts.max(1);
    let mut failures: Vec<String> = Vec::new();
    let mut backoff = config.read_backoff.0;
    loop {
        let mut report = shared.executor.run(action).await;
        let attempt = failures.len() as u32 + 1;
        if report.outcome != Outcome::Error || attempt == attempts {
            if !failures.is_empty() {
                report.detail = format!(
                    "{}; attempt {attempt} of {attempts}: {}",
                    failures.join("; "),
                    report.detail
                );
            }
            return Some(report);
        }
        tracing::warn!(kind = %action.kind(), server = %action.server(), attempt, detail = %report.detail, "read-only step failed in the executor; trying again");
        failures.push(format!("attempt {attempt} of {attempts} failed: {}", report.detail));
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopping.stopped() => return None,
        }
        backoff = backoff.saturating_mul(2);
    }
}

/// Waits until a restarted server answers the Exchange Management Shell again (`component_state` succeeds),
/// checking every `timing.poll_interval`, for at most `bound`. A server that does not answer in time is left to the
/// verification that follows, whose own retries then decide.
async fn answering(
    shared: &Shared,
    server: &ServerName,
    bound: Duration,
    stopping: &Signal,
) -> Option<Report> {
    let started = tokio::time::Instant::now();
    let check = Action::ComponentState { server: server.clone() };
    let mut checks = 0;
    loop {
        let report = shared.executor.run(&check).await;
        checks += 1;
        let waited = humantime::format_duration(Duration::from_secs(started.elapsed().as_secs()));
        if report.outcome != Outcome::Error {
            return Some(Report::new(
                Outcome::Done,
                format!("{server} answered after {waited} ({checks} check(s))"),
            ));
        }
        let left = bound.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Some(Report::new(
                Outcome::Done,
                format!("{server} did not answer within {waited}: {}", report.detail),
            ));
        }
        tokio::select! {
            _ = tokio::time::sleep(shared.settings.timing.poll_interval.0.min(left)) => {}
            _ = stopping.stopped() => return None,
        }
    }
}

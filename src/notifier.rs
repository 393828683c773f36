//! Delivers queued notifications: every email is in the store before it is sent, and is retried with capped,
//! jittered exponential backoff until the transport accepts it, across restarts.
//!
//! The loop ([`run`]) only finds due work and sleeps; one attempt at one notification is [`attempt`], and its two
//! outcomes are recorded (in the store and in the metrics) by `delivered` and `failed`.
//!
//! Invariant: a message the SMTP server has accepted is never sent again by this process. One task sends, one
//! message at a time; acceptance is recorded as soon as the server's final `250` arrives (the mailer does not wait
//! for `QUIT`), and a message whose acceptance could not be recorded is held back in memory, never re-sent.
//!
//! Delivery is still at least once, not exactly once, in three narrow windows: the process dies between the
//! server's acceptance and the commit of `sent`; the connection drops after the server took the message but before
//! its final answer reached us (SMTP cannot tell "lost answer" from "not taken", so it counts as a failure); or the
//! store stays unwritable until the process stops. In each the message is sent again later, which beats losing an
//! escalation.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::mailer::{Accepted, DeliveryError, Mailer, RetryPolicy};
use crate::metrics::Metrics;
use crate::shutdown::Signal;
use crate::store::{now_ms, NotificationRow, Store};

/// How long to sleep when nothing is due and nothing wakes us, so a clock jump cannot stall delivery for long.
const IDLE_POLL: Duration = Duration::from_secs(60);
/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// The transport refused or could not be reached; the notification waits for its next attempt, at `retry_at`
    /// (milliseconds since the epoch).
    Failed {
        permanent: bool,
        retry_at: i64,
    },
    /// The transport accepted it but the store could not record that; it must not be sent again.
    DeliveredUnrecorded,
}

/// Runs until `stopping` turns true. `wake` is notified when a new notification is queued.
pub async fn run(
    store: Store,
    mailer: Mailer,
    wake: Arc<Notify>,
    stopping: Signal,
    metrics: Arc<Metrics>,
) {
    let policy = mailer.retry_policy();
    tracing::info!(transport = %mailer.describe(), "notifier started");
    // Accepted by the transport, not yet recorded as sent: recorded again before anything else, never re-sent.
    let mut unrecorded: HashSet<String> = HashSet::new();
    loop {
        unrecorded = record_unrecorded(&store, unrecorded).await;
        let next = match store.due_notifications().await {
            Ok((due, mut next)) => {
                // `next` was read before these attempts: each failure brings its own retry time, and a delivery
                // means looking again at once (the store hands out due notifications a page at a time).
                let mut earliest = |at: i64| next = Some(next.map_or(at, |n: i64| n.min(at)));
                for row in due {
                    if stopping.is_raised() {
                        return;
                    }
                    if unrecorded.contains(&row.id) {
                        continue;
                    }
                    match attempt(&store, &mailer, &policy, &metrics, &row).await {
                        Outcome::Delivered => earliest(now_ms()),
                        Outcome::Failed { retry_at, .. } => earliest(retry_at),
                        Outcome::DeliveredUnrecorded => {
                            unrecorded.insert(row.id);
                        }
                    }
                }
                if !unrecorded.is_empty() {
                    earliest(now_ms() + policy.delay(1).as_millis() as i64);
                }
                next
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot read the notification outbox");
                Some(now_ms() + policy.delay(1).as_millis() as i64)
            }
        };
        let sleep = next
            .map(|at| Duration::from_millis((at - now_ms()).max(0) as u64))
            .unwrap_or(IDLE_POLL)
            .min(IDLE_POLL);
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = wake.notified() => {}
            _ = stopping.stopped() => return,
        }
    }
}

/// One delivery attempt of one notification, recorded in the store.
pub async fn attempt(
    store: &Store,
    mailer: &Mailer,
    policy: &RetryPolicy,
    metrics: &Metrics,
    row: &NotificationRow,
) -> Outcome {
    match mailer.deliver(&row.from, &row.to, &row.message).await {
        // Recorded before anything else happens: this is what keeps an accepted message from going out twice.
        Ok(accepted) => delivered(store, metrics, row, &accepted).await,
        Err(err) => failed(store, policy, metrics, row, &err).await,
    }
}

/// The transport accepted the message: count it and mark it sent.
async fn delivered(
    store: &Store,
    metrics: &Metrics,
    row: &NotificationRow,
    accepted: &Accepted,
) -> Outcome {
    metrics.email_sent();
    tracing::info!(notification = %row.id, incident = %row.incident_id, attempt = row.attempts + 1, reply = %accepted.reply, "notification delivered");
    match store.notification_sent(row.id.clone()).await {
        Ok(()) => Outcome::Delivered,
        Err(err) => {
            tracing::error!(error = %err, notification = %row.id, "delivered, but cannot record it; it will not be sent again");
            Outcome::DeliveredUnrecorded
        }
    }
}

/// The attempt failed: record the error and when to try again. A permanent refusal (5xx) is retried on the same
/// policy, since it usually means a relay setting that someone will fix; the error stays on the incident.
async fn failed(
    store: &Store,
    policy: &RetryPolicy,
    metrics: &Metrics,
    row: &NotificationRow,
    err: &DeliveryError,
) -> Outcome {
    metrics.email_failed();
    let failures = u32::try_from(row.attempts + 1).unwrap_or(u32::MAX);
    let delay = policy.delay(failures);
    tracing::warn!(
        notification = %row.id,
        incident = %row.incident_id,
        attempt = failures,
        permanent = err.permanent,
        error = %err.message,
        retry_in = %humantime::format_duration(Duration::from_millis(delay.as_millis() as u64)),
        "notification delivery failed"
    );
    let retry_at = now_ms() + delay.as_millis() as i64;
    if let Err(store_err) =
        store.notification_failed(row.id.clone(), err.message.clone(), retry_at).await
    {
        tracing::error!(error = %store_err, notification = %row.id, "cannot record the failed delivery; it is tried again when next due");
    }
    Outcome::Failed { permanent: err.permanent, retry_at }
}

/// Tries again to record deliveries the store refused; returns those still unrecorded.
async fn record_unrecorded(store: &Store, unrecorded: HashSet<String>) -> HashSet<String> {
    let mut left = HashSet::new();
    for id in unrecorded {
        if let Err(err) = store.notification_sent(id.clone()).await {
            tracing::error!(error = %err, notification = %id, "still cannot record a delivered notification");
            left.insert(id);
        }
    }
    left
}

//! Delivers queued notifications: every email is in the store before it is sent, and is retried with capped,
//! jittered exponential backoff until the transport accepts it, across restarts.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::mailer::Mailer;
use crate::store::{now_ms, Store};

/// The first retry comes after this; each later one waits twice as long, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How long to sleep when nothing is due and nothing wakes us, so a clock jump cannot stall delivery for long.
const IDLE_POLL: Duration = Duration::from_secs(60);

/// The delay before retry number `attempt` (1 for the first retry), with up to 20% jitter.
pub fn backoff(attempt: u32) -> Duration {
    let base = FIRST_BACKOFF.saturating_mul(1u32 << attempt.saturating_sub(1).min(20)).min(MAX_BACKOFF);
    let jitter = rand::random::<f64>() * 0.2;
    base.mul_f64(1.0 + jitter).min(MAX_BACKOFF)
}

/// Runs until `stopping` turns true. `wake` is notified when a new notification is queued.
pub async fn run(store: Store, mailer: Mailer, wake: Arc<Notify>, mut stopping: watch::Receiver<bool>) {
    tracing::info!(transport = %mailer.describe(), "notifier started");
    loop {
        let next = match store.due_notifications().await {
            Ok((due, next)) => {
                for row in due {
                    if *stopping.borrow() {
                        return;
                    }
                    match mailer.deliver(&row.from, &row.to, &row.message).await {
                        Ok(()) => {
                            tracing::info!(notification = %row.id, incident = %row.incident_id, "escalation delivered");
                            if let Err(err) = store.notification_sent(row.id.clone()).await {
                                tracing::error!(error = %err, notification = %row.id, "delivered, but cannot record it");
                            }
                        }
                        Err(err) => {
                            let retry_at = now_ms() + backoff(row.attempts as u32 + 1).as_millis() as i64;
                            tracing::warn!(notification = %row.id, permanent = err.permanent, error = %err.message, "delivery failed; will retry");
                            if let Err(err) = store.notification_failed(row.id.clone(), err.message, retry_at).await {
                                tracing::error!(error = %err, "cannot record the failed delivery");
                            }
                        }
                    }
                }
                next
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot read the notification outbox");
                Some(now_ms() + FIRST_BACKOFF.as_millis() as i64)
            }
        };
        let sleep = next.map(|at| Duration::from_millis((at - now_ms()).max(0) as u64)).unwrap_or(IDLE_POLL).min(IDLE_POLL);
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = wake.notified() => {}
            _ = crate::service::stopped(&mut stopping) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for attempt in 1..=5u32 {
            let base = FIRST_BACKOFF * 2u32.pow(attempt - 1);
            let got = backoff(attempt);
            assert!(got >= base && got <= base.mul_f64(1.2), "attempt {attempt}: {got:?}");
        }
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}

//! The email outbox on PostgreSQL, shared by every instance: each notification is claimed by the instance sending
//! it, sent by that one alone, and taken over by another only once the sender stopped.
//!
//! A claim names the instance (`claimed_by`) and lasts while that instance's heartbeat does (`instances`, renewed
//! with its leases): a slow SMTP session never lets a second instance send the same message, and an instance that
//! died leaves its notifications to the others within `store.lease`. Recording the attempt ends the claim.

use super::{Postgres, Result};
use crate::store::engine::bounded;
use crate::store::{now_ms, NotificationRow};

/// The most notifications one instance claims at a time: the notifier sends one at a time, and what it has not
/// reached stays free for the others.
const CLAIM_BATCH: i64 = 8;

impl Postgres {
    /// Records that this instance is alive until `now` plus its lease: what keeps its claims on notifications. Renewed
    /// with its claims, and first at start, before it can claim any.
    pub(super) async fn heartbeat(&self, now: i64) -> Result<()> {
        let client = self.client().await?;
        let beat = client
            .prepare_cached(
                "INSERT INTO instances (name, alive_until) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET alive_until = excluded.alive_until",
            )
            .await?;
        let until = now.saturating_add(self.lease.as_millis() as i64);
        client.execute(&beat, &[&&*self.instance, &until]).await?;
        Ok(())
    }

    /// Claims the notifications due for a delivery attempt that no live instance is sending, and says when the
    /// next one falls due.
    pub async fn due_notifications(&self) -> Result<(Vec<NotificationRow>, Option<i64>)> {
        let now = now_ms();
        let client = self.client().await?;
        let claim = client
            .prepare_cached(
                "UPDATE notifications SET claimed_by = $1
                 WHERE id IN (SELECT n.id FROM notifications n LEFT JOIN instances s ON s.name = n.claimed_by
                              WHERE n.status = 'pending' AND n.next_attempt_at <= $2
                                AND (n.claimed_by IS NULL OR n.claimed_by = $1 OR COALESCE(s.alive_until, 0) <= $2)
                              ORDER BY n.next_attempt_at LIMIT $3 FOR UPDATE OF n SKIP LOCKED)
                 RETURNING id, incident_id, mail_from, recipients, message, attempts, next_attempt_at",
            )
            .await?;
        let next = client
            .prepare_cached(
                "SELECT MIN(next_attempt_at) FROM notifications
                 WHERE status = 'pending' AND (next_attempt_at > $1 OR claimed_by <> $2)",
            )
            .await?;
        let mut rows = client.query(&claim, &[&&*self.instance, &now, &CLAIM_BATCH]).await?;
        rows.sort_by_key(|row| row.get::<_, i64>(6));
        let due = rows
            .iter()
            .map(|row| NotificationRow {
                id: row.get(0),
                incident_id: row.get(1),
                from: row.get(2),
                to: serde_json::from_str(row.get(3)).unwrap_or_default(),
                message: row.get(4),
                attempts: row.get(5),
            })
            .collect();
        // One claimed elsewhere is due again, here, once its sender's heartbeat has ended.
        let next: Option<i64> = client.query_one(&next, &[&now, &&*self.instance]).await?.get(0);
        let next = match (rows.len() as i64 == CLAIM_BATCH, next) {
            (true, _) => Some(now),
            (false, next) => next.map(|at| at.max(now + self.lease.as_millis() as i64 / 3)),
        };
        Ok((due, next))
    }

    /// Records the attempt the transport accepted and ends the claim. Only a pending notification changes:
    /// recording twice counts one attempt. A delivered approval request's body is dropped: it holds its link's
    /// token, which the store otherwise keeps only as a hash.
    pub async fn notification_sent(&self, id: String) -> Result<()> {
        let client = self.client().await?;
        let sent = client
            .prepare_cached(
                "UPDATE notifications SET status = 'sent', attempts = attempts + 1, sent_at = $2, claimed_by = NULL,
                        message = CASE WHEN kind = 'approval_request' THEN ''::bytea ELSE message END
                 WHERE id = $1 AND status = 'pending'",
            )
            .await?;
        client.execute(&sent, &[&id, &now_ms()]).await?;
        Ok(())
    }

    /// Records a failed attempt, its error and when to try next, and ends the claim: any instance may try next.
    pub async fn notification_failed(
        &self,
        id: String,
        error: String,
        next_attempt_at: i64,
    ) -> Result<()> {
        let client = self.client().await?;
        let failed = client
            .prepare_cached(
                "UPDATE notifications SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3, claimed_by = NULL
                 WHERE id = $1 AND status = 'pending'",
            )
            .await?;
        client.execute(&failed, &[&id, &bounded(&error), &next_attempt_at]).await?;
        Ok(())
    }
}

//! Retention: what is older than the configured age goes, except what open incidents still need.

use rusqlite::params;

use super::{now_ms, Result, Store};

/// What one pruning pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub incidents: usize,
    pub alerts: usize,
    pub deliveries: usize,
}

impl Store {
    /// Removes final incidents last updated before `cutoff_ms` (with their steps and notifications), alerts and
    /// deliveries received before it that no remaining incident refers to, and silences that ended before it.
    /// Throttles count the last day only, so a cutoff at least a day old never weakens them.
    pub async fn prune(&self, cutoff_ms: i64) -> Result<Pruned> {
        self.write(move |tx| {
            let incidents = tx.execute(
                "DELETE FROM incidents WHERE state IN ('transient', 'recovered', 'escalated', 'blocked', 'suppressed') AND updated_at < ?1",
                [cutoff_ms],
            )?;
            let alerts = tx.execute(
                "DELETE FROM alerts WHERE received_at < ?1 AND NOT EXISTS (SELECT 1 FROM incident_alerts l WHERE l.alert_id = alerts.id)",
                [cutoff_ms],
            )?;
            let deliveries = tx.execute(
                "DELETE FROM deliveries WHERE received_at < ?1 AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.delivery_id = deliveries.id)",
                [cutoff_ms],
            )?;
            tx.execute("DELETE FROM silences WHERE until < ?1", params![cutoff_ms.min(now_ms())])?;
            Ok(Pruned { incidents, alerts, deliveries })
        })
        .await
    }
}

//! Retention on PostgreSQL, as `store/retention.rs` has it: what is older than the configured age goes, except what
//! open incidents still need, in one transaction. Any instance may prune; a pass that runs while another does
//! deletes what the other left, and nothing twice.
//!
//! **Invariant:** an incident that is open, or that has an email not yet sent (pending or held), is never pruned,
//! and neither are its alerts and their deliveries: an escalation is never deleted unsent.

use super::{Postgres, Result};
use crate::store::{now_ms, Pruned};

/// What goes, in this order, and is counted: final incidents whose every email was sent (their steps, emails,
/// approvals and locks go with them), then the alerts no remaining incident refers to, then the deliveries no
/// remaining alert came in. Each takes the cutoff as `$1`.
const PRUNED: [&str; 3] = [
    "DELETE FROM incidents WHERE state IN ('transient', 'recovered', 'escalated', 'blocked', 'suppressed')
     AND updated_at < $1
     AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.incident_id = incidents.id AND n.status <> 'sent')",
    "DELETE FROM alerts WHERE received_at < $1
     AND NOT EXISTS (SELECT 1 FROM incident_alerts l WHERE l.alert_id = alerts.id)",
    "DELETE FROM deliveries WHERE received_at < $1
     AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.delivery_id = deliveries.id)",
];

impl Postgres {
    /// Removes final incidents last updated before `cutoff_ms` whose every email has been sent (with their steps,
    /// notifications, approvals and locks), alerts and deliveries received before it that no remaining incident
    /// refers to, and silences that ended before it. Throttles count the last day only, so a cutoff at least a day
    /// old never weakens them.
    pub async fn prune(&self, cutoff_ms: i64) -> Result<Pruned> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut counts = [0; PRUNED.len()];
        for (statement, count) in PRUNED.iter().zip(&mut counts) {
            let deleted = tx.execute(*statement, &[&cutoff_ms]).await?;
            *count = usize::try_from(deleted).unwrap_or(usize::MAX);
        }
        let [incidents, alerts, deliveries] = counts;
        let now = now_ms();
        tx.execute("DELETE FROM silences WHERE until < $1", &[&cutoff_ms.min(now)]).await?;
        // Managed Availability's actions matter to the throttles for a day; older ones go with the retention.
        let ma_cutoff = cutoff_ms.min(crate::safety::window_start(now));
        tx.execute("DELETE FROM ma_actions WHERE ended_at < $1", &[&ma_cutoff]).await?;
        tx.commit().await?;
        Ok(Pruned { incidents, alerts, deliveries })
    }
}

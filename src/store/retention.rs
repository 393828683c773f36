//! Retention: what is older than the configured age goes, except what open incidents still need.
//!
//! **Invariant:** an incident that is open, or that has an email not yet sent (pending or held), is never pruned,
//! and neither are its alerts and their deliveries: an escalation is never deleted unsent.

use rusqlite::params;

use super::{now_ms, Result, Sqlite};

/// What one pruning pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub incidents: usize,
    pub alerts: usize,
    pub deliveries: usize,
}

/// What goes, in this order, and is counted: final incidents whose every email was sent (their steps, emails,
/// approvals and locks go with them), then the alerts no remaining incident refers to, then the deliveries no
/// remaining alert came in. Each takes the cutoff as `?1`, and finds what refers to a row through an index.
const PRUNED: [&str; 3] = [
    "DELETE FROM incidents WHERE state IN ('transient', 'recovered', 'escalated', 'blocked', 'suppressed')
     AND updated_at < ?1
     AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.incident_id = incidents.id AND n.status <> 'sent')",
    "DELETE FROM alerts WHERE received_at < ?1
     AND NOT EXISTS (SELECT 1 FROM incident_alerts l WHERE l.alert_id = alerts.id)",
    "DELETE FROM deliveries WHERE received_at < ?1
     AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.delivery_seq = deliveries.seq)",
];

impl Sqlite {
    /// Removes final incidents last updated before `cutoff_ms` whose every email has been sent (with their steps and
    /// notifications), alerts and
    /// deliveries received before it that no remaining incident refers to, and silences that ended before it.
    /// Throttles count the last day only, so a cutoff at least a day old never weakens them.
    pub async fn prune(&self, cutoff_ms: i64) -> Result<Pruned> {
        self.write(move |tx| {
            // Which alerts an incident still refers to is read from `incident_alerts`: every alert is in it first.
            super::links::link_pending(tx, None)?;
            let [incidents, alerts, deliveries] = PRUNED;
            let incidents = tx.execute(incidents, [cutoff_ms])?;
            let alerts = tx.execute(alerts, [cutoff_ms])?;
            super::links::after_deleting_alerts(tx)?;
            let deliveries = tx.execute(deliveries, [cutoff_ms])?;
            tx.execute("DELETE FROM silences WHERE until < ?1", params![cutoff_ms.min(now_ms())])?;
            // Managed Availability's actions matter to the throttles for a day; older ones go with the retention.
            tx.execute(
                "DELETE FROM ma_actions WHERE ended_at < ?1",
                params![cutoff_ms.min(crate::safety::window_start(now_ms()))],
            )?;
            Ok(Pruned { incidents, alerts, deliveries })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::migrations::tests::{migrated, query_plan};

    /// An incident with one alert (and its delivery) and, when given, one email in that status; all a year old.
    fn incident(
        tx: &rusqlite::Transaction,
        id: &str,
        state: &str,
        email: Option<&str>,
    ) -> rusqlite::Result<()> {
        let old = now_ms() - 365 * 24 * 3600 * 1000;
        tx.execute(
            "INSERT INTO deliveries (id, received_at, sender, format, body, response) VALUES (?1, ?2, 'scom', 'native', x'7b7d', '{}')",
            params![format!("d-{id}"), old],
        )?;
        let delivery = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO incidents (id, created_at, updated_at, state, dry_run, health_set, server) VALUES (?1, ?2, ?2, ?3, 0, 'ActiveSync', 'cas01.contoso.com')",
            params![id, old, state],
        )?;
        tx.execute(
            "INSERT INTO alerts (id, delivery_seq, position, received_at, sender, format, health_set, server, message, status, incident_id, disposition)
             VALUES (?1, ?2, 0, ?3, 'scom', 'native', 'ActiveSync', 'cas01.contoso.com', 'm', 'firing', ?4, 'new_incident')",
            params![format!("a-{id}"), delivery, old, id],
        )?;
        tx.execute(
            "INSERT INTO incident_alerts (incident_id, alert_id, linked_at) VALUES (?1, ?2, ?3)",
            params![id, format!("a-{id}"), old],
        )?;
        if let Some(status) = email {
            tx.execute(
                "INSERT INTO notifications (id, incident_id, kind, mail_from, recipients, subject, message, status, next_attempt_at, created_at)
                 VALUES (?1, ?2, 'escalation', 'a@b.c', '[]', 's', x'00', ?3, ?4, ?4)",
                params![format!("n-{id}"), id, status, old],
            )?;
        }
        Ok(())
    }

    /// Pruning reads each table it deletes from once and looks every reference up: a correlated subquery that
    /// scans would read the whole referring table once per row considered, for as long as the writer is held.
    #[test]
    fn pruning_looks_up_what_refers_to_a_row_instead_of_scanning_for_it() {
        let conn = migrated();
        for statement in PRUNED {
            let steps = query_plan(&conn, statement);
            let correlated: Vec<i64> = steps
                .iter()
                .filter(|(_, _, d)| d.starts_with("CORRELATED"))
                .map(|(id, ..)| *id)
                .collect();
            assert!(!correlated.is_empty(), "{statement}: {steps:?}");
            let scans: Vec<&String> = steps
                .iter()
                .filter(|(_, parent, detail)| {
                    correlated.contains(parent) && detail.starts_with("SCAN")
                })
                .map(|(.., detail)| detail)
                .collect();
            assert_eq!(scans, Vec::<&String>::new(), "{statement}");
        }
    }

    #[tokio::test]
    async fn retention_keeps_open_incidents_and_unsent_emails_with_their_alerts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Sqlite::open(dir.path()).unwrap();
        store
            .write(|tx| {
                incident(tx, "sent", "escalated", Some("sent"))?;
                incident(tx, "quiet", "transient", None)?;
                incident(tx, "pending", "escalated", Some("pending"))?;
                incident(tx, "held", "blocked", Some("held"))?;
                incident(tx, "running", "running", None)?;
                Ok(())
            })
            .await
            .unwrap();
        let pruned = store.prune(now_ms() - 24 * 3600 * 1000).await.unwrap();
        assert_eq!(pruned, Pruned { incidents: 2, alerts: 2, deliveries: 2 });
        let left = store
            .read(|conn| {
                let ids = |sql: &str| -> rusqlite::Result<Vec<String>> {
                    conn.prepare(sql)?.query_map([], |row| row.get(0))?.collect()
                };
                Ok((
                    ids("SELECT id FROM incidents ORDER BY id")?,
                    ids("SELECT incident_id FROM alerts ORDER BY incident_id")?,
                    ids("SELECT id FROM deliveries ORDER BY id")?,
                    ids("SELECT incident_id FROM notifications ORDER BY incident_id")?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(left.0, ["held", "pending", "running"], "open incidents and unsent emails stay");
        assert_eq!(left.1, ["held", "pending", "running"], "their alerts stay");
        assert_eq!(left.2, ["d-held", "d-pending", "d-running"], "and the deliveries they came in");
        assert_eq!(left.3, ["held", "pending"], "no email is deleted unsent");
    }
}

//! What operators read and change, as `store/views.rs` has it, on PostgreSQL: alerts, incidents with their
//! timeline, emails and approval, rejected deliveries, and the silences and the pause switch, which every instance
//! shares. A silence or a pause set through one instance is in the database, so the next change any instance is
//! about to make is checked against it.
//!
//! Rows become views through the same functions as SQLite's (`views::alert_summary` and the like), so both
//! backends show the same columns the same way, in the same order.

use deadpool_postgres::{Client, GenericClient};
use tokio_postgres::Row;

use super::{Error, Postgres, Result};
use crate::incident::State;
use crate::store::approvals::{approval_view, APPROVAL_COLUMNS};
use crate::store::views::{
    alert_detail, alert_summary, incident_row, notification_row, step_row, INCIDENT_COLUMNS,
    NOTIFICATION_COLUMNS, STEP_COLUMNS,
};
use crate::store::{
    new_id, now_ms, rfc3339, AlertDetail, AlertSummary, IncidentView, RejectedDelivery, Silence,
};

/// The columns of an [`AlertSummary`], in the order `views::alert_summary` reads them. PostgreSQL keeps each
/// alert's message with it.
const ALERT_COLUMNS: &str =
    "a.id, a.received_at, a.sender, a.format, a.health_set, a.server, a.monitor, a.mailbox_hint,
    a.message, a.status, a.raised_at, a.incident_id, a.disposition";

/// The alerts of an incident and its latest approval, which a listed incident shows as well as a single one.
async fn alerts_and_approval(client: &Client, view: &mut IncidentView) -> Result<()> {
    let linked = client
        .prepare_cached(
            "SELECT alert_id FROM incident_alerts WHERE incident_id = $1 ORDER BY linked_at, alert_id",
        )
        .await?;
    view.alert_ids =
        client.query(&linked, &[&view.id]).await?.iter().map(|row| row.get(0)).collect();
    let latest = client
        .prepare_cached(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE incident_id = $1 ORDER BY requested_at DESC, id DESC LIMIT 1"
        ))
        .await?;
    view.approval =
        client.query_opt(&latest, &[&view.id]).await?.as_ref().map(approval_view).transpose()?;
    Ok(())
}

/// The columns [`silence`] reads, in its order.
const SILENCE_COLUMNS: &str = "id, server, until, reason, created_at";

fn silence(row: &Row) -> Silence {
    Silence {
        id: row.get(0),
        server: row.get(1),
        until: rfc3339(row.get(2)),
        reason: row.get(3),
        created_at: rfc3339(row.get(4)),
    }
}

/// The silence covering `server` at `now` (the one lasting longest), as `client` sees it: what the operator's view
/// and the transaction that journals a change both read.
pub(super) async fn silence_over(
    client: &impl GenericClient,
    server: &str,
    now: i64,
) -> Result<Option<Silence>> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {SILENCE_COLUMNS} FROM silences WHERE server = $1 AND until > $2 ORDER BY until DESC LIMIT 1"
        ))
        .await?;
    Ok(client.query_opt(&statement, &[&server, &now]).await?.as_ref().map(silence))
}

/// Why automation is paused, if it is, as `client` sees it.
pub(super) async fn pause_reason(client: &impl GenericClient) -> Result<Option<String>> {
    let statement =
        client.prepare_cached("SELECT value FROM settings WHERE key = 'paused'").await?;
    Ok(client.query_opt(&statement, &[]).await?.map(|row| row.get(0)))
}

impl Postgres {
    /// Alerts newest first; `before` is an alert id to page from.
    pub async fn list_alerts(
        &self,
        limit: u32,
        before: Option<String>,
    ) -> Result<Vec<AlertSummary>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {ALERT_COLUMNS} FROM alerts a WHERE ($1::text IS NULL OR a.id < $1) ORDER BY a.id DESC LIMIT $2"
            ))
            .await?;
        let rows = client.query(&statement, &[&before, &i64::from(limit)]).await?;
        Ok(rows.iter().map(alert_summary).collect::<std::result::Result<_, _>>()?)
    }

    /// One alert with its delivery, its body and every incident it opened, joined or was replayed into;
    /// [`Error::NotFound`] naming it when there is none by that id.
    pub async fn alert(&self, id: String) -> Result<AlertDetail> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {ALERT_COLUMNS}, a.delivery_id, a.position, d.webhook_id, d.body FROM alerts a
                 JOIN deliveries d ON d.id = a.delivery_id WHERE a.id = $1"
            ))
            .await?;
        let row = client
            .query_opt(&statement, &[&id])
            .await?
            .ok_or_else(|| Error::NotFound(format!("alert {id}")))?;
        let summary = alert_summary(&row)?;
        let linked = client
            .prepare_cached(
                "SELECT incident_id FROM incident_alerts WHERE alert_id = $1 ORDER BY linked_at, incident_id",
            )
            .await?;
        let incident_ids =
            client.query(&linked, &[&id]).await?.iter().map(|row| row.get(0)).collect();
        Ok(alert_detail(summary, row.get(13), row.get(14), row.get(15), row.get(16), incident_ids))
    }

    /// Incidents newest first, optionally in one state; `before` is an incident id to page from.
    pub async fn list_incidents(
        &self,
        state: Option<State>,
        limit: u32,
        before: Option<String>,
    ) -> Result<Vec<IncidentView>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR id < $2)
                 ORDER BY id DESC LIMIT $3"
            ))
            .await?;
        let rows = client
            .query(&statement, &[&state.map(State::as_str), &before, &i64::from(limit)])
            .await?;
        let mut views = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut view = incident_row(row)?;
            alerts_and_approval(&client, &mut view).await?;
            views.push(view);
        }
        Ok(views)
    }

    /// One incident with its alerts, timeline, emails and latest approval; [`Error::NotFound`] naming it when there
    /// is none by that id.
    pub async fn incident(&self, id: String) -> Result<IncidentView> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1"))
            .await?;
        let row = client
            .query_opt(&statement, &[&id])
            .await?
            .ok_or_else(|| Error::NotFound(format!("incident {id}")))?;
        let mut view = incident_row(&row)?;
        alerts_and_approval(&client, &mut view).await?;
        let steps = client
            .prepare_cached(&format!(
                "SELECT {STEP_COLUMNS} FROM steps WHERE incident_id = $1 ORDER BY seq"
            ))
            .await?;
        let steps = client.query(&steps, &[&id]).await?;
        view.steps = Some(steps.iter().map(step_row).collect::<std::result::Result<_, _>>()?);
        let notifications = client
            .prepare_cached(&format!(
                "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE incident_id = $1 ORDER BY created_at, id"
            ))
            .await?;
        let notifications = client.query(&notifications, &[&id]).await?;
        view.notifications = Some(
            notifications.iter().map(notification_row).collect::<std::result::Result<_, _>>()?,
        );
        Ok(view)
    }

    /// The alerts of an incident, oldest first (none for an incident there is not).
    pub async fn incident_alerts(&self, id: String) -> Result<Vec<AlertSummary>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {ALERT_COLUMNS} FROM incident_alerts l JOIN alerts a ON a.id = l.alert_id
                 WHERE l.incident_id = $1 ORDER BY l.linked_at, a.id"
            ))
            .await?;
        let rows = client.query(&statement, &[&id]).await?;
        Ok(rows.iter().map(alert_summary).collect::<std::result::Result<_, _>>()?)
    }

    /// Deliveries kept because they were not valid alerts, newest first; `before` is a delivery id to page from.
    pub async fn list_rejected(
        &self,
        limit: u32,
        before: Option<String>,
    ) -> Result<Vec<RejectedDelivery>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT id, received_at, sender, format, webhook_id, error, body FROM deliveries
                 WHERE error IS NOT NULL AND ($1::text IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
            )
            .await?;
        let rows = client.query(&statement, &[&before, &i64::from(limit)]).await?;
        Ok(rows
            .iter()
            .map(|row| RejectedDelivery {
                id: row.get(0),
                received_at: rfc3339(row.get(1)),
                sender: row.get(2),
                format: row.get(3),
                webhook_id: row.get(4),
                error: row.get(5),
                raw_body: String::from_utf8_lossy(row.get::<_, &[u8]>(6)).into_owned(),
            })
            .collect())
    }

    /// The silence that covers a server now, if any (the one lasting longest).
    pub async fn silenced(&self, server: String) -> Result<Option<Silence>> {
        silence_over(&self.client().await?, &server, now_ms()).await
    }

    /// The pause switch: `Some(reason)` while automation is paused.
    pub async fn paused(&self) -> Result<Option<String>> {
        pause_reason(&self.client().await?).await
    }

    /// Pauses automation with a reason, or (`None`) resumes it.
    pub async fn set_paused(&self, reason: Option<String>) -> Result<()> {
        let client = self.client().await?;
        match reason {
            Some(reason) => {
                let statement = client
                    .prepare_cached(
                        "INSERT INTO settings (key, value) VALUES ('paused', $1)
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    )
                    .await?;
                client.execute(&statement, &[&reason]).await?
            }
            None => client.execute("DELETE FROM settings WHERE key = 'paused'", &[]).await?,
        };
        Ok(())
    }

    /// Silences changes to `server` until `until` (milliseconds since the Unix epoch), with a reason.
    pub async fn add_silence(&self, server: String, until: i64, reason: String) -> Result<Silence> {
        let client = self.client().await?;
        let (id, now) = (new_id(), now_ms());
        let statement = client
            .prepare_cached(
                "INSERT INTO silences (id, server, until, reason, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .await?;
        client.execute(&statement, &[&id, &server, &until, &reason, &now]).await?;
        Ok(Silence { id, server, until: rfc3339(until), reason, created_at: rfc3339(now) })
    }

    /// Silences that have not expired, the soonest to end first.
    pub async fn silences(&self) -> Result<Vec<Silence>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {SILENCE_COLUMNS} FROM silences WHERE until > $1 ORDER BY until, id"
            ))
            .await?;
        Ok(client.query(&statement, &[&now_ms()]).await?.iter().map(silence).collect())
    }

    /// Ends a silence; [`Error::NotFound`] naming it when there is none by that id.
    pub async fn delete_silence(&self, id: String) -> Result<()> {
        let client = self.client().await?;
        match client.execute("DELETE FROM silences WHERE id = $1", &[&id]).await? {
            0 => Err(Error::NotFound(format!("silence {id}"))),
            _ => Ok(()),
        }
    }
}

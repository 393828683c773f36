//! What operators read: alerts, rejected deliveries, incidents with their timeline and notifications, silences and
//! the pause switch. The shapes here are the API's (SPEC section 3).

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use super::{new_id, now_ms, rfc3339, Result, Sqlite, StoreError};
use crate::incident::State;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlertSummary {
    pub id: String,
    pub received_at: String,
    pub sender: String,
    pub format: String,
    pub health_set: String,
    pub server: String,
    pub monitor: Option<String>,
    pub mailbox_hint: Option<String>,
    pub message: String,
    pub status: String,
    pub raised_at: Option<String>,
    pub incident_id: Option<String>,
    pub disposition: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlertDetail {
    #[serde(flatten)]
    pub summary: AlertSummary,
    pub delivery_id: String,
    /// Which alert of the delivery this is (Alertmanager deliveries carry several).
    pub position: i64,
    pub webhook_id: Option<String>,
    /// The delivery's body byte for byte, as text (invalid UTF-8 shown with replacement characters).
    pub raw_body: String,
    /// Every incident this alert opened, joined or was replayed into.
    pub incident_ids: Vec<String>,
    #[serde(skip)]
    pub raw_bytes: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RejectedDelivery {
    pub id: String,
    pub received_at: String,
    pub sender: String,
    pub format: String,
    pub webhook_id: Option<String>,
    pub error: String,
    pub raw_body: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepView {
    pub seq: i64,
    pub action: String,
    pub server: String,
    pub command: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub outcome: Option<String>,
    pub detail: String,
    /// For `ma_history`: Managed Availability's finished recovery actions it found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_availability: Vec<crate::ma::RecoveryAction>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotificationView {
    pub id: String,
    pub kind: String,
    pub to: Vec<String>,
    pub status: String,
    pub subject: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: String,
    pub sent_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IncidentView {
    pub id: String,
    pub state: String,
    pub dry_run: bool,
    pub health_set: String,
    pub monitor: Option<String>,
    pub server: String,
    pub mailbox_hint: Option<String>,
    pub alert_ids: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    pub reason: Option<String>,
    pub resolved_notice_at: Option<String>,
    pub replay_of: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepView>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<Vec<NotificationView>>,
    /// The latest approval asked for, if any.
    pub approval: Option<super::ApprovalView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub server: String,
    pub until: String,
    pub reason: String,
    pub created_at: String,
}

/// The columns of an [`AlertSummary`]. A message that intake found in its delivery's body is read back from there
/// (`message_at` is a byte offset into the body as it came, and `substr` counts bytes in a blob). Every body is read
/// through `body_of` (`sqlite/bodies.rs`).
const ALERT_COLUMNS: &str = "a.id, a.received_at, a.sender, a.format, a.health_set, a.server, a.monitor, a.mailbox_hint,
    CASE WHEN a.message_at IS NULL THEN a.message
         ELSE (SELECT CAST(substr(body_of(b.body, b.body_encoding), a.message_at + 1, a.message_len) AS TEXT) FROM deliveries b WHERE b.seq = a.delivery_seq) END,
    a.status, a.raised_at, a.incident_id, a.disposition";

/// A value either backend reads from a column: text, integers, flags, and those that may be NULL.
pub(crate) trait Column:
    rusqlite::types::FromSql + for<'a> tokio_postgres::types::FromSql<'a>
{
}

impl<T: rusqlite::types::FromSql + for<'a> tokio_postgres::types::FromSql<'a>> Column for T {}

/// A row of either backend, read by column position: what lets both turn the same columns into the same views.
pub(crate) trait Stored {
    type Error;
    fn at<T: Column>(&self, index: usize) -> std::result::Result<T, Self::Error>;
}

impl Stored for Row<'_> {
    type Error = rusqlite::Error;
    fn at<T: Column>(&self, index: usize) -> rusqlite::Result<T> {
        self.get(index)
    }
}

impl Stored for tokio_postgres::Row {
    type Error = tokio_postgres::Error;
    fn at<T: Column>(&self, index: usize) -> std::result::Result<T, tokio_postgres::Error> {
        self.try_get(index)
    }
}

/// An [`AlertSummary`] from its columns, in the order of [`ALERT_COLUMNS`].
pub(crate) fn alert_summary<R: Stored>(row: &R) -> std::result::Result<AlertSummary, R::Error> {
    Ok(AlertSummary {
        id: row.at(0)?,
        received_at: rfc3339(row.at(1)?),
        sender: row.at(2)?,
        format: row.at(3)?,
        health_set: row.at(4)?,
        server: row.at(5)?,
        monitor: row.at(6)?,
        mailbox_hint: row.at(7)?,
        message: row.at(8)?,
        status: row.at(9)?,
        raised_at: row.at(10)?,
        incident_id: row.at(11)?,
        disposition: row.at(12)?,
    })
}

/// The columns [`incident_row`] reads, in its order; the same on both backends.
pub(crate) const INCIDENT_COLUMNS: &str = "id, state, dry_run, health_set, monitor, server, mailbox_hint, created_at, updated_at, reason, resolved_at, replay_of";

/// An incident without its alerts, timeline, notifications or approval, from [`INCIDENT_COLUMNS`].
pub(crate) fn incident_row<R: Stored>(row: &R) -> std::result::Result<IncidentView, R::Error> {
    Ok(IncidentView {
        id: row.at(0)?,
        state: row.at(1)?,
        dry_run: row.at(2)?,
        health_set: row.at(3)?,
        monitor: row.at(4)?,
        server: row.at(5)?,
        mailbox_hint: row.at(6)?,
        alert_ids: Vec::new(),
        created_at: rfc3339(row.at(7)?),
        updated_at: rfc3339(row.at(8)?),
        reason: row.at(9)?,
        resolved_notice_at: row.at::<Option<i64>>(10)?.map(rfc3339),
        replay_of: row.at(11)?,
        steps: None,
        notifications: None,
        approval: None,
    })
}

/// The columns [`step_row`] reads, in its order; the same on both backends.
pub(crate) const STEP_COLUMNS: &str =
    "seq, action, server, command, started_at, finished_at, outcome, detail, ma_actions";

/// A step of an incident's timeline, from [`STEP_COLUMNS`]. Managed Availability's findings are kept as JSON.
pub(crate) fn step_row<R: Stored>(row: &R) -> std::result::Result<StepView, R::Error> {
    Ok(StepView {
        seq: row.at(0)?,
        action: row.at(1)?,
        server: row.at(2)?,
        command: row.at(3)?,
        started_at: rfc3339(row.at(4)?),
        finished_at: row.at::<Option<i64>>(5)?.map(rfc3339),
        outcome: row.at(6)?,
        detail: row.at(7)?,
        managed_availability: row
            .at::<Option<String>>(8)?
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default(),
    })
}

/// The columns [`notification_row`] reads, in its order; the same on both backends.
pub(crate) const NOTIFICATION_COLUMNS: &str =
    "id, kind, recipients, status, subject, attempts, last_error, created_at, sent_at";

/// An email of an incident, from [`NOTIFICATION_COLUMNS`]. Its recipients are kept as a JSON list.
pub(crate) fn notification_row<R: Stored>(
    row: &R,
) -> std::result::Result<NotificationView, R::Error> {
    Ok(NotificationView {
        id: row.at(0)?,
        kind: row.at(1)?,
        to: serde_json::from_str(&row.at::<String>(2)?).unwrap_or_default(),
        status: row.at(3)?,
        subject: row.at(4)?,
        attempts: row.at(5)?,
        last_error: row.at(6)?,
        created_at: rfc3339(row.at(7)?),
        sent_at: row.at::<Option<i64>>(8)?.map(rfc3339),
    })
}

/// An [`AlertDetail`] from its summary and its delivery's columns: the body is shown as text, invalid UTF-8 replaced.
pub(crate) fn alert_detail(
    summary: AlertSummary,
    delivery_id: String,
    position: i64,
    webhook_id: Option<String>,
    body: Vec<u8>,
    incident_ids: Vec<String>,
) -> AlertDetail {
    AlertDetail {
        summary,
        delivery_id,
        position,
        webhook_id,
        raw_body: String::from_utf8_lossy(&body).into_owned(),
        incident_ids,
        raw_bytes: body,
    }
}

fn alert_ids(conn: &Connection, incident_id: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT alert_id FROM links WHERE incident_id = ?1 ORDER BY linked_at, alert_id",
    )?;
    let ids = stmt
        .query_map([incident_id], |row| row.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(ids)
}

/// Reads one incident with its alerts, timeline and notifications.
pub(crate) fn incident(conn: &Connection, id: &str) -> Result<IncidentView> {
    let mut view = conn
        .query_row(
            &format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?1"),
            [id],
            |row| incident_row(row),
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("incident {id}")))?;
    view.alert_ids = alert_ids(conn, id)?;
    view.approval = super::approvals::latest(conn, id)?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {STEP_COLUMNS} FROM steps WHERE incident_id = ?1 ORDER BY seq"
    ))?;
    let steps = stmt.query_map([id], |row| step_row(row))?.collect::<rusqlite::Result<Vec<_>>>()?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE incident_id = ?1 ORDER BY created_at, id"
    ))?;
    let notifications =
        stmt.query_map([id], |row| notification_row(row))?.collect::<rusqlite::Result<Vec<_>>>()?;
    view.steps = Some(steps);
    view.notifications = Some(notifications);
    Ok(view)
}

/// The silence covering `server` at `now` (the one lasting longest), as `conn` sees it: what the operator's view
/// and the transaction that journals a change both read.
pub(super) fn silence_over(conn: &Connection, server: &str, now: i64) -> Result<Option<Silence>> {
    Ok(conn
        .prepare_cached(
            "SELECT id, server, until, reason, created_at FROM silences WHERE server = ?1 AND until > ?2 ORDER BY until DESC LIMIT 1",
        )?
        .query_row(params![server, now], |row| {
            Ok(Silence {
                id: row.get(0)?,
                server: row.get(1)?,
                until: rfc3339(row.get(2)?),
                reason: row.get(3)?,
                created_at: rfc3339(row.get(4)?),
            })
        })
        .optional()?)
}

/// Why automation is paused, if it is, as `conn` sees it.
pub(super) fn pause_reason(conn: &Connection) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT value FROM settings WHERE key = 'paused'")?
        .query_row([], |row| row.get(0))
        .optional()?)
}

impl Sqlite {
    /// Alerts newest first; `before` is an alert id to page from.
    pub async fn list_alerts(
        &self,
        limit: u32,
        before: Option<String>,
    ) -> Result<Vec<AlertSummary>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!("SELECT {ALERT_COLUMNS} FROM alerts a WHERE (?1 IS NULL OR a.id < ?1) ORDER BY a.id DESC LIMIT ?2"))?;
            let rows = stmt.query_map(params![before, limit], |row| alert_summary(row))?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn alert(&self, id: String) -> Result<AlertDetail> {
        self.read(move |conn| {
            let (summary, delivery_id, position, webhook_id, body) = conn
                .query_row(
                    &format!("SELECT {ALERT_COLUMNS}, d.id, a.position, d.webhook_id, body_of(d.body, d.body_encoding) FROM alerts a JOIN deliveries d ON d.seq = a.delivery_seq WHERE a.id = ?1"),
                    [&id],
                    |row| Ok((alert_summary(row)?, row.get(13)?, row.get(14)?, row.get(15)?, row.get::<_, Vec<u8>>(16)?)),
                )
                .optional()?
                .ok_or_else(|| StoreError::NotFound(format!("alert {id}")))?;
            let mut stmt = conn.prepare_cached("SELECT incident_id FROM links WHERE alert_id = ?1 ORDER BY linked_at, incident_id")?;
            let incident_ids = stmt.query_map([&id], |row| row.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(alert_detail(summary, delivery_id, position, webhook_id, body, incident_ids))
        })
        .await
    }

    pub async fn list_rejected(
        &self,
        limit: u32,
        before: Option<String>,
    ) -> Result<Vec<RejectedDelivery>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, received_at, sender, format, webhook_id, error, body_of(body, body_encoding) FROM deliveries
                 WHERE error IS NOT NULL AND (?1 IS NULL OR id < ?1) ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(params![before, limit], |row| {
                    Ok(RejectedDelivery {
                        id: row.get(0)?,
                        received_at: rfc3339(row.get(1)?),
                        sender: row.get(2)?,
                        format: row.get(3)?,
                        webhook_id: row.get(4)?,
                        error: row.get(5)?,
                        raw_body: String::from_utf8_lossy(&row.get::<_, Vec<u8>>(6)?).into_owned(),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    /// Incidents newest first, optionally in one state.
    pub async fn list_incidents(
        &self,
        state: Option<State>,
        limit: u32,
        before: Option<String>,
    ) -> Result<Vec<IncidentView>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3"
            ))?;
            let mut rows = stmt.query_map(params![state.map(State::as_str), before, limit], |row| incident_row(row))?.collect::<rusqlite::Result<Vec<_>>>()?;
            for row in rows.iter_mut() {
                row.alert_ids = alert_ids(conn, &row.id)?;
                row.approval = super::approvals::latest(conn, &row.id)?;
            }
            Ok(rows)
        })
        .await
    }

    pub async fn incident(&self, id: String) -> Result<IncidentView> {
        self.read(move |conn| incident(conn, &id)).await
    }

    /// The alerts of an incident, oldest first.
    pub async fn incident_alerts(&self, id: String) -> Result<Vec<AlertSummary>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {ALERT_COLUMNS} FROM links l JOIN alerts a ON a.id = l.alert_id WHERE l.incident_id = ?1 ORDER BY l.linked_at, a.id"
            ))?;
            let rows = stmt.query_map([id], |row| alert_summary(row))?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    /// The silence that covers a server now, if any.
    pub async fn silenced(&self, server: String) -> Result<Option<Silence>> {
        self.read(move |conn| silence_over(conn, &server, now_ms())).await
    }

    /// The pause switch: `Some(reason)` while automation is paused.
    pub async fn paused(&self) -> Result<Option<String>> {
        self.read(pause_reason).await
    }

    pub async fn set_paused(&self, reason: Option<String>) -> Result<()> {
        self.write(move |tx| {
            match reason {
                Some(reason) => {
                    tx.execute("INSERT INTO settings (key, value) VALUES ('paused', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value", [reason])?
                }
                None => tx.execute("DELETE FROM settings WHERE key = 'paused'", [])?,
            };
            Ok(())
        })
        .await
    }

    pub async fn add_silence(
        &self,
        server: String,
        until_ms: i64,
        reason: String,
    ) -> Result<Silence> {
        self.write(move |tx| {
            let id = new_id();
            let now = now_ms();
            tx.execute("INSERT INTO silences (id, server, until, reason, created_at) VALUES (?1, ?2, ?3, ?4, ?5)", params![id, server, until_ms, reason, now])?;
            Ok(Silence { id, server, until: rfc3339(until_ms), reason, created_at: rfc3339(now) })
        })
        .await
    }

    /// Silences that have not expired.
    pub async fn silences(&self) -> Result<Vec<Silence>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT id, server, until, reason, created_at FROM silences WHERE until > ?1 ORDER BY until, id")?;
            let rows = stmt
                .query_map([now_ms()], |row| {
                    Ok(Silence { id: row.get(0)?, server: row.get(1)?, until: rfc3339(row.get(2)?), reason: row.get(3)?, created_at: rfc3339(row.get(4)?) })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn delete_silence(&self, id: String) -> Result<()> {
        self.write(move |tx| match tx.execute("DELETE FROM silences WHERE id = ?1", [&id])? {
            0 => Err(StoreError::NotFound(format!("silence {id}"))),
            _ => Ok(()),
        })
        .await
    }
}

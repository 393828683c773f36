//! Intake: one delivery and its alerts committed in one step, with idempotency and incident grouping.
//!
//! A delivery is a duplicate, answered with the original answer and creating nothing, when its sender sent the same
//! delivery id before, or, for a delivery without an id, the same body within the duplicate window; an alert is a duplicate when its sender sent
//! the same source alert id (or Alertmanager fingerprint) before. Every check is per sender, so no sender can make
//! another's alerts duplicates.

use rusqlite::{params, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use super::{new_id, now_ms, Result, Store, StoreError};
use crate::alert::{Alert, AlertStatus, Format};
use crate::domain::{HealthSet, Monitor, ServerName};
use crate::incident::State;

/// A delivery as it arrived: who sent it, on which route, and the body byte for byte.
pub struct NewDelivery {
    pub sender: String,
    pub format: Format,
    pub webhook_id: Option<String>,
    pub body: bytes::Bytes,
}

/// What became of one alert of a delivery (SPEC section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    NewIncident,
    Attached,
    Suppressed,
    Resolved,
    Duplicate,
}

impl Disposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::NewIncident => "new_incident",
            Disposition::Attached => "attached",
            Disposition::Suppressed => "suppressed",
            Disposition::Resolved => "resolved",
            Disposition::Duplicate => "duplicate",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AnswerItem {
    pub alert_id: String,
    pub incident_id: Option<String>,
    pub disposition: Disposition,
}

/// The `202` body, and what the engine must hear about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub alerts: Vec<AnswerItem>,
}

/// The key that groups alerts into one open incident: server, health set and monitor, case-insensitively.
pub(super) fn open_key(server: &ServerName, health_set: &HealthSet, monitor: Option<&Monitor>) -> String {
    let monitor = monitor.map(|m| m.as_str().to_ascii_lowercase()).unwrap_or_default();
    format!("{}|{}|{}", server, health_set.as_str().to_ascii_lowercase(), monitor)
}

impl Store {
    /// Commits a delivery and its alerts, grouping each into an incident. `dry_run` marks new incidents; the same
    /// body from the same sender within `duplicate_window` is a duplicate (zero: never).
    pub async fn accept(&self, delivery: NewDelivery, alerts: Vec<Alert>, dry_run: bool, duplicate_window: std::time::Duration) -> Result<Answer> {
        self.write(move |tx| accept(tx, delivery, alerts, dry_run, duplicate_window)).await
    }

    /// Keeps an authenticated delivery that is not a valid alert, so nothing a sender sent is lost.
    pub async fn reject(&self, delivery: NewDelivery, error: String) -> Result<String> {
        self.write(move |tx| {
            let id = new_id();
            tx.prepare_cached("INSERT INTO deliveries (id, received_at, sender, format, webhook_id, body, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?
                .execute(params![id, now_ms(), delivery.sender, delivery.format.as_str(), delivery.webhook_id, &delivery.body[..], error])?;
            Ok(id)
        })
        .await
    }

    /// Opens a new incident for a stored alert, as if it had just arrived; refused while one is open for its key.
    pub async fn replay(&self, alert_id: String, alert: Alert, dry_run: bool) -> Result<String> {
        self.write(move |tx| {
            let key = open_key(&alert.server, &alert.health_set, alert.monitor.as_ref());
            if let Some(open) = open_incident(tx, &key)? {
                return Err(StoreError::Conflict(open));
            }
            let id = create_incident(tx, &alert, &key, dry_run, Some(&alert_id))?;
            link(tx, &id, &alert_id)?;
            Ok(id)
        })
        .await
    }
}

/// The original answer to a delivery seen before, marked `duplicate` throughout.
pub(super) fn duplicate_of(original: &str) -> Result<Answer> {
    let mut answer: Answer = serde_json::from_str(original).map_err(|e| StoreError::Unavailable(format!("stored answer unreadable: {e}")))?;
    answer.alerts.iter_mut().for_each(|item| item.disposition = Disposition::Duplicate);
    Ok(answer)
}

fn accept(tx: &Transaction, delivery: NewDelivery, alerts: Vec<Alert>, dry_run: bool, duplicate_window: std::time::Duration) -> Result<Answer> {
    let now = now_ms();
    if let Some(webhook_id) = &delivery.webhook_id {
        let original: Option<String> = tx
            .prepare_cached("SELECT response FROM deliveries WHERE sender = ?1 AND webhook_id = ?2 AND error IS NULL")?
            .query_row(params![delivery.sender, webhook_id], |row| row.get(0))
            .optional()?;
        if let Some(original) = original {
            return duplicate_of(&original);
        }
    }
    let body_sha256: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&delivery.body).into();
    // A Standard Webhooks delivery is told apart by its webhook-id, and its timestamp keeps old ones out; a delivery
    // without an id (hub-signature-256, bearer) has only its bytes.
    if delivery.webhook_id.is_none() && !duplicate_window.is_zero() {
        let since = now - duplicate_window.as_millis() as i64;
        let original: Option<String> = tx
            .prepare_cached(
                "SELECT response FROM deliveries WHERE sender = ?1 AND body_sha256 = ?2 AND received_at >= ?3 AND error IS NULL
                 ORDER BY received_at DESC LIMIT 1",
            )?
            .query_row(params![delivery.sender, &body_sha256[..], since], |row| row.get(0))
            .optional()?;
        if let Some(original) = original {
            return duplicate_of(&original);
        }
    }

    let delivery_id = new_id();
    let mut answer = Answer { alerts: Vec::with_capacity(alerts.len()) };
    // First decide what becomes of each alert (opening incidents as needed), so that the delivery row is written
    // once, with its answer, and the alerts after it.
    let mut fresh = Vec::with_capacity(alerts.len());
    for (position, alert) in alerts.into_iter().enumerate() {
        if let Some(source_key) = &alert.source_key {
            let original = tx
                .prepare_cached("SELECT id, incident_id FROM alerts WHERE sender = ?1 AND format = ?2 AND source_key = ?3")?
                .query_row(params![delivery.sender, delivery.format.as_str(), source_key], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?))
                })
                .optional()?;
            if let Some((alert_id, incident_id)) = original {
                answer.alerts.push(AnswerItem { alert_id, incident_id, disposition: Disposition::Duplicate });
                continue;
            }
        }
        let key = open_key(&alert.server, &alert.health_set, alert.monitor.as_ref());
        let (incident_id, disposition) = if silenced(tx, &alert.server, now)? {
            (None, Disposition::Suppressed)
        } else if alert.status == AlertStatus::Resolved {
            let open = open_incident(tx, &key)?;
            if let Some(id) = &open {
                tx.prepare_cached("UPDATE incidents SET resolved_at = ?2, updated_at = ?2 WHERE id = ?1")?.execute(params![id, now])?;
            }
            (open, Disposition::Resolved)
        } else if let Some(open) = open_incident(tx, &key)? {
            tx.prepare_cached("UPDATE incidents SET updated_at = ?2, mailbox_hint = COALESCE(mailbox_hint, ?3) WHERE id = ?1")?.execute(params![
                open,
                now,
                alert.mailbox_hint.as_ref().map(|s| s.as_str())
            ])?;
            (Some(open), Disposition::Attached)
        } else {
            let id = create_incident(tx, &alert, &key, dry_run, None)?;
            (Some(id), Disposition::NewIncident)
        };
        answer.alerts.push(AnswerItem { alert_id: new_id(), incident_id, disposition });
        fresh.push((position, answer.alerts.len() - 1, alert));
    }
    if fresh.is_empty() {
        return Ok(answer);
    }
    let response = serde_json::to_string(&answer).expect("answers serialise");
    tx.prepare_cached(
        "INSERT INTO deliveries (id, received_at, sender, format, webhook_id, body, response, body_sha256) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![delivery_id, now, delivery.sender, delivery.format.as_str(), delivery.webhook_id, &delivery.body[..], response, &body_sha256[..]])?;
    for (position, item, alert) in fresh {
        let AnswerItem { alert_id, incident_id, disposition } = &answer.alerts[item];
        tx.prepare_cached(
            "INSERT INTO alerts (id, delivery_id, position, received_at, sender, format, source_key, health_set, server, monitor, mailbox_hint, message, status, raised_at, incident_id, disposition)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        )?
        .execute(params![
            alert_id,
            delivery_id,
            position as i64,
            now,
            delivery.sender,
            delivery.format.as_str(),
            alert.source_key,
            alert.health_set.as_str(),
            alert.server.as_str(),
            alert.monitor.as_ref().map(|m| m.as_str()),
            alert.mailbox_hint.as_ref().map(|s| s.as_str()),
            alert.message,
            alert.status.as_str(),
            alert.raised_at.map(|t| t.to_rfc3339()),
            incident_id,
            disposition.as_str(),
        ])?;
        if let Some(incident_id) = incident_id {
            link(tx, incident_id, alert_id)?;
        }
    }
    Ok(answer)
}

fn open_incident(tx: &Transaction, key: &str) -> Result<Option<String>> {
    Ok(tx.prepare_cached("SELECT id FROM incidents WHERE open_key = ?1")?.query_row([key], |row| row.get(0)).optional()?)
}

fn silenced(tx: &Transaction, server: &ServerName, now: i64) -> Result<bool> {
    Ok(tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM silences WHERE server = ?1 AND until > ?2)")?
        .query_row(params![server.as_str(), now], |row| row.get(0))?)
}

fn create_incident(tx: &Transaction, alert: &Alert, key: &str, dry_run: bool, replay_of: Option<&str>) -> Result<String> {
    let id = new_id();
    let now = now_ms();
    tx.prepare_cached(
        "INSERT INTO incidents (id, created_at, updated_at, state, dry_run, health_set, server, monitor, mailbox_hint, open_key, replay_of)
         VALUES (?1, ?2, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        id,
        now,
        State::Queued.as_str(),
        dry_run,
        alert.health_set.as_str(),
        alert.server.as_str(),
        alert.monitor.as_ref().map(|m| m.as_str()),
        alert.mailbox_hint.as_ref().map(|s| s.as_str()),
        key,
        replay_of,
    ])?;
    Ok(id)
}

fn link(tx: &Transaction, incident_id: &str, alert_id: &str) -> Result<()> {
    tx.prepare_cached("INSERT OR IGNORE INTO incident_alerts (incident_id, alert_id, linked_at) VALUES (?1, ?2, ?3)")?.execute(params![
        incident_id,
        alert_id,
        now_ms()
    ])?;
    Ok(())
}

//! Intake: one delivery and its alerts committed in one step, with idempotency and incident grouping.
//!
//! A delivery is a duplicate, answered with the original answer and creating nothing, when its sender sent the same
//! delivery id before, or, for a delivery without an id, the same body within the duplicate window; an alert is a duplicate when its sender sent
//! the same source alert id (or Alertmanager fingerprint) before. Every check is per sender, so no sender can make
//! another's alerts duplicates.

use rusqlite::{params, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use super::sqlite::bodies::Kept;
use super::{new_id, now_ms, Result, Sqlite, StoreError};
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
pub(super) fn open_key(
    server: &ServerName,
    health_set: &HealthSet,
    monitor: Option<&Monitor>,
) -> String {
    let monitor = monitor.map(|m| m.as_str().to_ascii_lowercase()).unwrap_or_default();
    format!("{}|{}|{}", server, health_set.as_str().to_ascii_lowercase(), monitor)
}

impl Sqlite {
    /// Commits a delivery and its alerts, grouping each into an incident. `dry_run` marks new incidents; the same
    /// body from the same sender within `duplicate_window` is a duplicate (zero: never).
    pub async fn accept(
        &self,
        delivery: NewDelivery,
        alerts: Vec<Alert>,
        dry_run: bool,
        duplicate_window: std::time::Duration,
    ) -> Result<Answer> {
        // What follows from the bytes alone is worked out here, off the writer that every delivery waits on.
        let body_sha256 = delivery
            .webhook_id
            .is_none()
            .then(|| <sha2::Sha256 as sha2::Digest>::digest(&delivery.body).into());
        let found = messages_in_body(&delivery.body, &alerts);
        let alerts = alerts
            .into_iter()
            .zip(found)
            .map(|(alert, in_body)| PreparedAlert {
                id: new_id(),
                raised_at: alert.raised_at.map(|t| t.to_rfc3339()),
                alert,
                in_body,
            })
            .collect();
        let body = Kept::new(&delivery.body);
        let delivery = Prepared { delivery, id: new_id(), body, body_sha256, alerts };
        self.write_repeatable(move |tx| accept(tx, &delivery, dry_run, duplicate_window)).await
    }

    /// Keeps an authenticated delivery that is not a valid alert, so nothing a sender sent is lost.
    pub async fn reject(&self, delivery: NewDelivery, error: String) -> Result<String> {
        let body = Kept::new(&delivery.body);
        self.write(move |tx| {
            let id = new_id();
            tx.prepare_cached("INSERT INTO deliveries (id, received_at, sender, format, webhook_id, body, body_encoding, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?
                .execute(params![id, now_ms(), delivery.sender, delivery.format.as_str(), delivery.webhook_id, body.bytes(), body.encoding(), error])?;
            Ok(id)
        })
        .await
    }

    /// Opens a new incident for a stored alert, as if it had just arrived; refused while one is open for its key.
    pub async fn replay(&self, alert_id: String, alert: Alert, dry_run: bool) -> Result<String> {
        self.write(move |tx| {
            let key = open_key(&alert.server, &alert.health_set, alert.monitor.as_ref());
            if let Some(open) = open_incident(tx, &key)? {
                return Err(StoreError::Conflict(open.id));
            }
            let id = create_incident(tx, &alert, &key, dry_run, Some(&alert_id))?;
            link(tx, &id, &alert_id)?;
            Ok(id)
        })
        .await
    }
}

/// A delivery ready for the writer, with all that follows from it alone: the id it is kept under, its body as it is
/// kept, the SHA-256 of its body when it has no delivery id (the same body is a duplicate only then), and its
/// alerts.
struct Prepared {
    delivery: NewDelivery,
    id: String,
    body: Kept,
    body_sha256: Option<[u8; 32]>,
    alerts: Vec<PreparedAlert>,
}

/// An alert ready for the writer: the id it is kept under if it is not a duplicate, where its message is found in
/// the body, and when it was raised as stored.
struct PreparedAlert {
    alert: Alert,
    id: String,
    in_body: Option<InBody>,
    raised_at: Option<String>,
}

/// Where a message is found in its delivery's body: a byte offset and a length. An alert stores this instead of a
/// second copy of the text; the views read the text back from the body (`views::ALERT_COLUMNS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InBody {
    at: usize,
    len: usize,
}

/// Messages shorter than this are kept with their alert: the reference would save next to nothing.
const REFERENCED_FROM: usize = 64;

/// Where each alert's message is found, byte for byte, in the body: a JSON string without escapes is. A message
/// found nowhere (escaped characters, a normalised value) is kept with its alert as it is.
fn messages_in_body(body: &[u8], alerts: &[Alert]) -> Vec<Option<InBody>> {
    alerts
        .iter()
        .map(|alert| {
            let message = alert.message.as_bytes();
            let at = if message.len() < REFERENCED_FROM { None } else { find(body, message) }?;
            Some(InBody { at, len: message.len() })
        })
        .collect()
}

/// How much of a message is looked for first, and at how many places that start like it the whole message is
/// compared, before the search turns to Two-Way over the rest of the body.
const PREFIX: usize = 32;
const QUICK_TRIES: usize = 4;

/// Where `message` first occurs in `body`. A message is found where its first bytes are, almost always at the first
/// place they are: looking for those and comparing there spares setting up a search for the whole message, which
/// reads all of it. A body that keeps starting like the message and then differs (as one byte repeated does) gets
/// a few such tries, then memchr's Two-Way search, which never looks at a byte twice: linear whatever the body.
fn find(body: &[u8], message: &[u8]) -> Option<usize> {
    let start = memchr::memmem::Finder::new(&message[..PREFIX.min(message.len())]);
    let mut from = 0;
    for _ in 0..QUICK_TRIES {
        // Where the first bytes are not, the message is not.
        let at = from + start.find(&body[from..])?;
        if body[at..].starts_with(message) {
            return Some(at);
        }
        from = at + 1;
    }
    memchr::memmem::find(&body[from..], message).map(|at| from + at)
}

/// The original answer to a delivery seen before, marked `duplicate` throughout.
pub(super) fn duplicate_of(original: &str) -> Result<Answer> {
    let mut answer: Answer = serde_json::from_str(original)
        .map_err(|e| StoreError::Unavailable(format!("stored answer unreadable: {e}")))?;
    answer.alerts.iter_mut().for_each(|item| item.disposition = Disposition::Duplicate);
    Ok(answer)
}

/// What intake looks up for every delivery or alert of a storm, on the writer every delivery waits on: each is a
/// search of an index, never a scan of a table that grows (`lookups_search_an_index`).
const BY_DELIVERY_ID: &str =
    "SELECT response FROM deliveries WHERE sender = ?1 AND webhook_id = ?2 AND error IS NULL";
const BY_BODY: &str = "SELECT response FROM deliveries
    WHERE sender = ?1 AND body_sha256 = ?2 AND received_at >= ?3 AND webhook_id IS NULL AND error IS NULL
    ORDER BY received_at DESC LIMIT 1";
const BY_SOURCE_KEY: &str =
    "SELECT id, incident_id FROM alerts WHERE sender = ?1 AND format = ?2 AND source_key = ?3";
const OPEN_INCIDENT: &str =
    "SELECT id, mailbox_hint IS NOT NULL FROM incidents WHERE open_key = ?1";
const SILENCED: &str = "SELECT EXISTS (SELECT 1 FROM silences WHERE server = ?1 AND until > ?2)";

/// Runs as often as the writer needs (see [`Store::write_repeatable`]): it reads what it is given and changes only
/// the store.
fn accept(
    tx: &Transaction,
    prepared: &Prepared,
    dry_run: bool,
    duplicate_window: std::time::Duration,
) -> Result<Answer> {
    let Prepared { delivery, id: delivery_id, body, body_sha256, alerts } = prepared;
    let now = now_ms();
    if let Some(webhook_id) = &delivery.webhook_id {
        let original: Option<String> = tx
            .prepare_cached(BY_DELIVERY_ID)?
            .query_row(params![delivery.sender, webhook_id], |row| row.get(0))
            .optional()?;
        if let Some(original) = original {
            return duplicate_of(&original);
        }
    }
    // A Standard Webhooks delivery is told apart by its webhook-id, and its timestamp keeps old ones out; a delivery
    // without an id (hub-signature-256, bearer) has only its bytes.
    if let Some(body_sha256) = body_sha256.filter(|_| !duplicate_window.is_zero()) {
        let since = now - duplicate_window.as_millis() as i64;
        let original: Option<String> = tx
            .prepare_cached(BY_BODY)?
            .query_row(params![delivery.sender, &body_sha256[..], since], |row| row.get(0))
            .optional()?;
        if let Some(original) = original {
            return duplicate_of(&original);
        }
    }

    let mut answer = Answer { alerts: Vec::with_capacity(alerts.len()) };
    // First decide what becomes of each alert (opening incidents as needed), so that the delivery row is written
    // once, with its answer, and the alerts after it.
    let mut fresh = Vec::with_capacity(alerts.len());
    for (position, prepared) in alerts.iter().enumerate() {
        let alert = &prepared.alert;
        if let Some(source_key) = &alert.source_key {
            let original = tx
                .prepare_cached(BY_SOURCE_KEY)?
                .query_row(params![delivery.sender, delivery.format.as_str(), source_key], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?))
                })
                .optional()?;
            if let Some((alert_id, incident_id)) = original {
                answer.alerts.push(AnswerItem {
                    alert_id,
                    incident_id,
                    disposition: Disposition::Duplicate,
                });
                continue;
            }
        }
        let key = open_key(&alert.server, &alert.health_set, alert.monitor.as_ref());
        let (incident_id, disposition) = if silenced(tx, &alert.server, now)? {
            (None, Disposition::Suppressed)
        } else if alert.status == AlertStatus::Resolved {
            let open = open_incident(tx, &key)?.map(|open| open.id);
            if let Some(id) = &open {
                tx.prepare_cached(
                    "UPDATE incidents SET resolved_at = ?2, updated_at = ?2 WHERE id = ?1",
                )?
                .execute(params![id, now])?;
            }
            (open, Disposition::Resolved)
        } else if let Some(open) = open_incident(tx, &key)? {
            // An alert joining an incident changes it only when it brings the first `_Mbx:` hint: arriving is not
            // progress (an incident that makes none is reported stalled however many alerts join it), and leaving
            // the row alone spares a storm a changed page per open incident in every commit.
            if let Some(hint) = alert.mailbox_hint.as_ref().filter(|_| !open.has_hint) {
                tx.prepare_cached("UPDATE incidents SET mailbox_hint = ?2 WHERE id = ?1")?
                    .execute(params![open.id, hint.as_str()])?;
            }
            (Some(open.id), Disposition::Attached)
        } else {
            let id = create_incident(tx, alert, &key, dry_run, None)?;
            (Some(id), Disposition::NewIncident)
        };
        answer.alerts.push(AnswerItem { alert_id: prepared.id.clone(), incident_id, disposition });
        fresh.push((position, answer.alerts.len() - 1, prepared));
    }
    if fresh.is_empty() {
        return Ok(answer);
    }
    let response = serde_json::to_string(&answer).expect("answers serialise");
    tx.prepare_cached(
        "INSERT INTO deliveries (id, received_at, sender, format, webhook_id, body, body_encoding, response, body_sha256)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        delivery_id,
        now,
        delivery.sender,
        delivery.format.as_str(),
        delivery.webhook_id,
        body.bytes(),
        body.encoding(),
        response,
        body_sha256.as_ref().map(|sha| &sha[..])
    ])?;
    let delivery_seq = tx.last_insert_rowid();
    for (position, item, PreparedAlert { alert, in_body, raised_at, .. }) in fresh {
        let AnswerItem { alert_id, incident_id, disposition } = &answer.alerts[item];
        tx.prepare_cached(
            "INSERT INTO alerts (id, delivery_seq, position, received_at, sender, format, source_key, health_set, server, monitor, mailbox_hint, message, status, raised_at, incident_id, disposition, message_at, message_len)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        )?
        .execute(params![
            alert_id,
            delivery_seq,
            position as i64,
            now,
            delivery.sender,
            delivery.format.as_str(),
            alert.source_key,
            alert.health_set.as_str(),
            alert.server.as_str(),
            alert.monitor.as_ref().map(|m| m.as_str()),
            alert.mailbox_hint.as_ref().map(|s| s.as_str()),
            if in_body.is_some() { "" } else { alert.message.as_str() },
            alert.status.as_str(),
            raised_at,
            incident_id,
            disposition.as_str(),
            in_body.map(|found| found.at as i64),
            in_body.map(|found| found.len as i64),
        ])?;
        // The alert's `incident_id` is its link: the writer indexes it later (`links.rs`).
    }
    Ok(answer)
}

/// The incident open for a key, and whether it has its `_Mbx:` hint.
struct Open {
    id: String,
    has_hint: bool,
}

fn open_incident(tx: &Transaction, key: &str) -> Result<Option<Open>> {
    Ok(tx
        .prepare_cached(OPEN_INCIDENT)?
        .query_row([key], |row| Ok(Open { id: row.get(0)?, has_hint: row.get(1)? }))
        .optional()?)
}

fn silenced(tx: &Transaction, server: &ServerName, now: i64) -> Result<bool> {
    Ok(tx.prepare_cached(SILENCED)?.query_row(params![server.as_str(), now], |row| row.get(0))?)
}

fn create_incident(
    tx: &Transaction,
    alert: &Alert,
    key: &str,
    dry_run: bool,
    replay_of: Option<&str>,
) -> Result<String> {
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

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::migrations::tests::{migrated, query_plan};

    /// Posts one native alert for `server` with delivery id `msg_{n}`, as intake would.
    pub(in crate::store) async fn post(
        store: &Sqlite,
        n: usize,
        server: &str,
        message: &str,
    ) -> Result<Answer> {
        let body = format!(
            r#"{{"health_set":"ActiveSync","server":"{server}","monitor":"ActiveSyncCTPMonitor","message":"{message}"}}"#
        );
        let alerts = crate::alert::parse(Format::Native, body.as_bytes()).unwrap().alerts;
        let delivery = NewDelivery {
            sender: "scom".into(),
            format: Format::Native,
            webhook_id: Some(format!("msg_{n}")),
            body: body.into_bytes().into(),
        };
        store.accept(delivery, alerts, false, Duration::ZERO).await
    }

    /// Every delivery the project ships as an example or fixture: the format it is posted as, its file, its bytes.
    pub(in crate::store) fn fixtures() -> Vec<(Format, std::path::PathBuf, Vec<u8>)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut found = Vec::new();
        for (dir, format) in [
            ("tests/fixtures/scom", Format::Scom),
            ("tests/fixtures/alertmanager", Format::Alertmanager),
            ("examples/alerts", Format::Native),
        ] {
            let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
                .collect();
            files.sort();
            found.extend(files.into_iter().map(|path| {
                let body = std::fs::read(&path).unwrap();
                (format, path, body)
            }));
        }
        found
    }

    /// Every delivery the project ships as an example or fixture, with messages that cannot be found in their body
    /// (escaped characters) or are too short to refer to, each with the format it is posted as.
    fn deliveries() -> Vec<(Format, Vec<u8>)> {
        let mut found: Vec<_> =
            fixtures().into_iter().map(|(format, _, body)| (format, body)).collect();
        let long = "Error occurred: User: HealthMailbox7b3c4a1e@contoso.com _Cas:CAS01.contoso.com_Mbx:MBX01.contoso.com_Dc:DC01.contoso.com_";
        for message in [
            "",
            "short",
            long,
            &format!("{long} \"quoted\"\tand\nnew line"),
            &format!("{long} Z\u{fc}rich \u{2713} \u{1F600}"),
            &long.repeat(100),
        ] {
            let body = serde_json::json!({"health_set": "ActiveSync", "server": "cas01.contoso.com", "monitor": "ActiveSyncCTPMonitor", "message": message});
            found.push((Format::Native, body.to_string().into_bytes()));
        }
        found.push((Format::Native, format!(r#"{{"health_set":"ActiveSync","server":"cas02.contoso.com","message":"\u0041{long}"}}"#).into_bytes()));
        found
    }

    /// What a view shows of an alert is what intake parsed, whether the alert keeps its message or refers to it in
    /// its delivery's body, and its delivery's body is what came, whether it is kept compressed or not.
    #[tokio::test]
    async fn every_alert_reads_back_as_it_was_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Sqlite::open(dir.path()).unwrap();
        let mut referred = 0;
        for (n, (format, body)) in deliveries().into_iter().enumerate() {
            let Ok(parsed) = crate::alert::parse(format, &body) else { continue };
            referred += messages_in_body(&body, &parsed.alerts).iter().flatten().count();
            let delivery = NewDelivery {
                sender: "scom".into(),
                format,
                webhook_id: Some(format!("msg_{n}")),
                body: body.clone().into(),
            };
            let answer = store
                .accept(delivery, parsed.alerts.clone(), false, Duration::from_secs(600))
                .await
                .unwrap();
            for (item, alert) in answer.alerts.iter().zip(&parsed.alerts) {
                if item.disposition == Disposition::Duplicate {
                    continue;
                }
                let detail = store.alert(item.alert_id.clone()).await.unwrap();
                assert_eq!(detail.summary.message, alert.message, "{n}: {format:?}");
                assert_eq!(detail.raw_bytes, body, "{n}: the body as it came");
                let listed = store.list_alerts(1000, None).await.unwrap();
                assert_eq!(
                    listed.iter().find(|a| a.id == item.alert_id).map(|a| a.message.as_str()),
                    Some(alert.message.as_str()),
                    "{n}"
                );
                if let Some(incident) = &item.incident_id {
                    let linked = store.incident_alerts(incident.clone()).await.unwrap();
                    assert_eq!(
                        linked.iter().find(|a| a.id == item.alert_id).map(|a| a.message.as_str()),
                        Some(alert.message.as_str()),
                        "{n}"
                    );
                }
            }
        }
        assert!(referred >= 3, "long messages are referred to in their bodies: {referred}");
        let compressed: i64 = store
            .read(|conn| {
                let sql = "SELECT COUNT(*) FROM deliveries WHERE body_encoding = 'lz4'";
                Ok(conn.query_row(sql, [], |row| row.get(0))?)
            })
            .await
            .unwrap();
        assert!(
            compressed >= 10,
            "the bodies of a kilobyte or more are kept compressed: {compressed}"
        );
    }

    /// A rejected delivery is kept like any other, compressed when that makes it smaller, and listed as it came.
    #[tokio::test]
    async fn a_rejected_delivery_is_listed_as_it_came() {
        let dir = tempfile::tempdir().unwrap();
        let store = Sqlite::open(dir.path()).unwrap();
        let body = format!(
            r#"{{"server":"cas01.contoso.com","message":"{}"}}"#,
            "Error occurred: 503 ".repeat(60)
        );
        let delivery = NewDelivery {
            sender: "scom".into(),
            format: Format::Native,
            webhook_id: None,
            body: body.clone().into(),
        };
        store.reject(delivery, "health_set is missing".into()).await.unwrap();
        let listed = store.list_rejected(10, None).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].raw_body, body);
        let kept: (i64, Option<String>) = store
            .read(|conn| {
                let sql = "SELECT length(body), body_encoding FROM deliveries";
                Ok(conn.query_row(sql, [], |row| Ok((row.get(0)?, row.get(1)?)))?)
            })
            .await
            .unwrap();
        assert_eq!(kept.1.as_deref(), Some("lz4"), "kept compressed");
        assert!((kept.0 as usize) < body.len() / 2, "in fewer bytes: {} of {}", kept.0, body.len());
    }

    /// Silences and incidents pile up for as long as retention keeps them (90 days by default): a lookup that
    /// scanned them would cost every alert of a storm more the longer the service has run.
    #[test]
    fn lookups_search_an_index() {
        let conn = migrated();
        for lookup in [BY_DELIVERY_ID, BY_BODY, BY_SOURCE_KEY, OPEN_INCIDENT, SILENCED] {
            let steps: Vec<String> =
                query_plan(&conn, lookup).into_iter().map(|(.., detail)| detail).collect();
            let scans: Vec<&String> = steps
                .iter()
                .filter(|step| step.starts_with("SCAN ") && *step != "SCAN CONSTANT ROW")
                .collect();
            assert!(steps.iter().any(|step| step.starts_with("SEARCH")), "{lookup}: {steps:?}");
            assert_eq!(scans, Vec::<&String>::new(), "{lookup}");
        }
    }

    /// Alerts that keep joining an incident no automation moves are not progress: it is still reported stalled,
    /// and only the first `_Mbx:` hint changes it.
    #[tokio::test]
    async fn alerts_joining_an_incident_do_not_hide_that_it_makes_no_progress() {
        let dir = tempfile::tempdir().unwrap();
        let store = Sqlite::open(dir.path()).unwrap();
        let to_cas01 = |n, message| post(&store, n, "cas01.contoso.com", message);
        let incident =
            to_cas01(0, "probe failed").await.unwrap().alerts[0].incident_id.clone().unwrap();
        let hour_ago = now_ms() - 3_600_000;
        store
            .write(move |tx| Ok(tx.execute("UPDATE incidents SET updated_at = ?1", [hour_ago])?))
            .await
            .unwrap();
        let before = store.incident(incident.clone()).await.unwrap();
        let answer = to_cas01(1, "probe failed _Cas:CAS01.contoso.com_Mbx:MBX01.contoso.com_")
            .await
            .unwrap();
        assert_eq!(answer.alerts[0].disposition, Disposition::Attached);
        to_cas01(2, "probe failed _Mbx:MBX02.contoso.com_").await.unwrap();
        let after = store.incident(incident.clone()).await.unwrap();
        assert_eq!(after.updated_at, before.updated_at);
        assert_eq!(
            after.mailbox_hint.as_deref(),
            Some("mbx01.contoso.com"),
            "the first hint is kept"
        );
        assert_eq!(after.alert_ids.len(), 3);
        let stalled = store.stalled(30 * 60 * 1000).await.unwrap();
        assert_eq!(stalled, vec![(incident, hour_ago)]);
    }

    /// Where each message lies in its body: past a field that starts like it, and never in a body of one byte
    /// repeated that holds only most of it (compared at every position, that would take billions of comparisons).
    #[test]
    fn a_message_is_found_past_false_starts_and_a_repeated_byte_costs_one_pass() {
        let at = |body: &str| {
            let alerts = crate::alert::parse(Format::Native, body.as_bytes()).unwrap().alerts;
            messages_in_body(body.as_bytes(), &alerts)
        };
        let native = |id: &str, message: &str| {
            format!(
                r#"{{"id":"{id}","health_set":"ActiveSync","server":"cas01.contoso.com","message":"{message}"}}"#
            )
        };
        let message = format!(
            "{}{}",
            "probe failed ".repeat(3),
            "_Mbx:mbx01.contoso.com and more text to reach sixty-four bytes"
        );
        let body = native(&message[..40], &message);
        let found = body.rfind(&message).unwrap();
        assert!(found > body.find(&message[..40]).unwrap(), "the id starts like the message");
        assert_eq!(at(&body), [Some(InBody { at: found, len: message.len() })]);
        let escaped = native("e1", &format!("{message} \\\\ and a backslash"));
        assert_eq!(at(&escaped), [None], "an escaped message is not in the body as it is");
        // A body of one byte repeated, asked for most of it: after a few tries, Two-Way search gives up in one pass.
        let mut alerts = crate::alert::parse(Format::Native, body.as_bytes()).unwrap().alerts;
        let (repeated, almost) = ("a".repeat(256 * 1024), format!("{}b", "a".repeat(128 * 1024)));
        alerts[0].message.clone_from(&almost);
        assert_eq!(messages_in_body(repeated.as_bytes(), &alerts), [None]);
        let body = format!("{repeated}{almost}");
        assert_eq!(
            messages_in_body(body.as_bytes(), &alerts),
            [Some(InBody { at: repeated.len(), len: almost.len() })]
        );
    }

    /// The same body again is a duplicate for a sender that sends no delivery id, and never for one that does.
    #[tokio::test]
    async fn the_same_body_is_a_duplicate_only_without_a_delivery_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = Sqlite::open(dir.path()).unwrap();
        let body = br#"{"health_set":"ActiveSync","server":"cas01.contoso.com","monitor":"ActiveSyncCTPMonitor","message":"m"}"#;
        let post = |webhook_id: Option<&str>| {
            let delivery = NewDelivery {
                sender: "scom".into(),
                format: Format::Native,
                webhook_id: webhook_id.map(str::to_owned),
                body: body[..].into(),
            };
            store.accept(
                delivery,
                crate::alert::parse(Format::Native, body).unwrap().alerts,
                false,
                Duration::from_secs(600),
            )
        };
        let first = post(None).await.unwrap();
        assert_eq!(first.alerts[0].disposition, Disposition::NewIncident);
        let again = post(None).await.unwrap();
        assert_eq!(
            (again.alerts[0].disposition, &again.alerts[0].alert_id),
            (Disposition::Duplicate, &first.alerts[0].alert_id)
        );
        for id in ["msg_1", "msg_2"] {
            assert_eq!(
                post(Some(id)).await.unwrap().alerts[0].disposition,
                Disposition::Attached,
                "{id}"
            );
        }
    }
}

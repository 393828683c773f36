//! Intake on PostgreSQL: the SQLite store's `accept` and `replay` (same inputs, same answers), with every duplicate
//! and every open incident decided by a unique index; and the readiness probe's write.
//!
//! The delivery row is written first, before its answer is known, so that its webhook id is taken at once: the same
//! delivery arriving at another instance meanwhile waits on that row, and once this transaction commits finds it and
//! answers `duplicate`. A delivery without an id takes its sender's body in `delivery_bodies` the same way, and a
//! source alert id takes its place in `alerts`. The one open incident per key is `INSERT ... ON CONFLICT` on the
//! open key: whoever comes second attaches to the first one's incident.
//!
//! Deliveries are group-committed: a writer task takes every delivery waiting, locks the unique keys they may take
//! (in one order, so that batches sharing keys take turns rather than deadlock), runs each in its own savepoint
//! inside one transaction, commits once, and only then answers each caller. A few writers commit at once. A delivery that fails rolls back its savepoint
//! alone (one that PostgreSQL picked as a deadlock's victim is tried again in a new one); when the transaction
//! itself breaks or the commit fails, every delivery of the batch fails alike.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Pool, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::{pool_error, Error, Postgres, Result};
use crate::alert::{Alert, AlertStatus};
use crate::incident::State;
use crate::store::intake::{duplicate_of, open_key};
use crate::store::{new_id, now_ms, Answer, AnswerItem, Disposition, NewDelivery, StoreError};

/// The most deliveries one transaction takes: enough to amortise the commit, few enough to bound how long a batch
/// holds the rows it took.
const MAX_BATCH: usize = 256;

/// How often a delivery PostgreSQL rolled back to break a deadlock is tried again within its batch.
const ATTEMPTS: usize = 3;

/// A delivery waiting for the next group commit.
pub(super) struct Queued {
    work: Work,
    reply: oneshot::Sender<Result<Answer>>,
}

struct Work {
    delivery: NewDelivery,
    /// The SHA-256 of the body: how a delivery without an id is told apart, and one of the keys its batch locks.
    body_sha256: [u8; 32],
    alerts: Vec<Alert>,
    dry_run: bool,
    duplicate_window: Duration,
    now: i64,
}

/// How many batches commit at once, each on a connection of its own. A delivery costs a dozen round trips to the
/// server, so one batch at a time leaves both the server and the connection idle most of the time; batches that
/// share keys take turns on them (see [`keys`]).
const WRITERS: usize = 4;

/// Starts the writers; they stop once every sender (every clone of the handle) is gone.
pub(super) fn start(pool: Pool, target: Arc<str>) -> mpsc::Sender<Queued> {
    let (queue, waiting) = mpsc::channel(MAX_BATCH * 4);
    let waiting = Arc::new(tokio::sync::Mutex::new(waiting));
    for _ in 0..WRITERS {
        tokio::spawn(writer(pool.clone(), target.clone(), waiting.clone()));
    }
    queue
}

impl Postgres {
    /// Commits a delivery and its alerts, grouping each into an incident, as [`crate::store::Store::accept`] does:
    /// `dry_run` marks new incidents; the same body from the same sender within `duplicate_window` is a duplicate
    /// (zero: never). Returns once the commit is on disk.
    pub async fn accept(
        &self,
        delivery: NewDelivery,
        alerts: Vec<Alert>,
        dry_run: bool,
        duplicate_window: Duration,
    ) -> Result<Answer> {
        self.accept_at(delivery, alerts, dry_run, duplicate_window, now_ms()).await
    }

    /// [`Postgres::accept`] at `now` (milliseconds since the Unix epoch): when the delivery counts as received.
    pub async fn accept_at(
        &self,
        delivery: NewDelivery,
        alerts: Vec<Alert>,
        dry_run: bool,
        duplicate_window: Duration,
        now: i64,
    ) -> Result<Answer> {
        let (reply, answer) = oneshot::channel();
        let stopped = || Error::unavailable(&self.target, "the intake writer has stopped");
        let body_sha256 = <sha2::Sha256 as sha2::Digest>::digest(&delivery.body).into();
        // The queue is bounded: when the database falls behind, callers wait here instead of piling up in memory.
        self.intake
            .send(Queued {
                work: Work { body_sha256, delivery, alerts, dry_run, duplicate_window, now },
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Keeps an authenticated delivery that is not a valid alert, with why, so nothing a sender sent is lost;
    /// returns its id. It keeps its webhook id without taking it: a corrected retry under that id is still new.
    pub async fn reject(&self, delivery: NewDelivery, error: String) -> Result<String> {
        let client = self.client().await?;
        let id = new_id();
        let statement = client
            .prepare_cached(
                "INSERT INTO deliveries (id, received_at, sender, format, webhook_id, body, error)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .await?;
        let body: &[u8] = &delivery.body;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
            &id,
            &now_ms(),
            &delivery.sender,
            &delivery.format.as_str(),
            &delivery.webhook_id,
            &body,
            &error,
        ];
        client.execute(&statement, &params).await?;
        Ok(id)
    }
}

/// One writer: takes every delivery waiting (while the others commit theirs), commits them together, answers each.
async fn writer(
    pool: Pool,
    target: Arc<str>,
    waiting: Arc<tokio::sync::Mutex<mpsc::Receiver<Queued>>>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while waiting.lock().await.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match commit(&pool, &target, &batch).await {
            Ok(answers) => {
                for (queued, answer) in batch.drain(..).zip(answers) {
                    let _ = queued.reply.send(answer);
                }
            }
            Err(err) => {
                let count = batch.len();
                tracing::error!(error = %err, deliveries = count, "PostgreSQL group commit failed");
                let why = match &err {
                    Error::Unavailable { detail, .. } => detail.clone(),
                    other => other.to_string(),
                };
                for queued in batch.drain(..) {
                    let detail = format!("the transaction of {count} deliveries failed, and none of them was kept: {why}");
                    let _ = queued.reply.send(Err(Error::unavailable(&target, detail)));
                }
            }
        }
    }
}

/// Runs a batch in one transaction and commits it: each delivery's own answer (or error), or the error that broke
/// the transaction.
async fn commit(pool: &Pool, target: &str, batch: &[Queued]) -> Result<Vec<Result<Answer>>> {
    let mut client = pool.get().await.map_err(|e| Error::unavailable(target, pool_error(e)))?;
    let tx = client.transaction().await?;
    // Every unique key the batch may take, locked first in one order: two instances' batches sharing keys then
    // take turns instead of each holding a row the other waits for (a deadlock that would fail both).
    let lock = tx
        .prepare_cached(
            "SELECT pg_advisory_xact_lock(h) FROM
               (SELECT DISTINCT hashtextextended(k, 0) AS h FROM unnest($1::text[]) AS k ORDER BY h) AS keys",
        )
        .await?;
    tx.execute(&lock, &[&keys(batch)]).await?;
    let mut answers = Vec::with_capacity(batch.len());
    for queued in batch {
        answers.push(one(&tx, &queued.work).await?);
    }
    tx.commit().await?;
    Ok(answers)
}

/// The unique keys the deliveries of a batch may take or wait on: webhook ids, bodies, source alert ids and the open
/// incident of each alert's key.
fn keys(batch: &[Queued]) -> Vec<String> {
    let mut keys = Vec::new();
    for Queued { work, .. } in batch {
        let sender = &work.delivery.sender;
        if let Some(id) = &work.delivery.webhook_id {
            keys.push(format!("delivery\u{1f}{sender}\u{1f}{id}"));
        }
        keys.push(format!("body\u{1f}{sender}\u{1f}{}", hex::encode(work.body_sha256)));
        for alert in &work.alerts {
            if let Some(source) = &alert.source_key {
                keys.push(format!(
                    "alert\u{1f}{sender}\u{1f}{}\u{1f}{source}",
                    work.delivery.format.as_str()
                ));
            }
            keys.push(format!(
                "incident\u{1f}{}",
                open_key(&alert.server, &alert.health_set, alert.monitor.as_ref())
            ));
        }
    }
    // Text cannot hold NUL, which an id may carry.
    keys.into_iter().map(|key| text(&key).into_owned()).collect()
}

/// One delivery in its own savepoint. The outer error means the transaction itself is broken.
async fn one(tx: &Transaction<'_>, work: &Work) -> Result<Result<Answer>> {
    // Released after a rollback too, so that savepoints do not nest deeper with every delivery of the batch.
    const UNDO: &str = "ROLLBACK TO SAVEPOINT delivery; RELEASE SAVEPOINT delivery";
    let mut attempt = 1;
    loop {
        tx.batch_execute("SAVEPOINT delivery").await?;
        match accept(tx, work).await {
            // A delivery that is a duplicate throughout keeps nothing, as in the SQLite store.
            Ok((answer, keep)) => {
                tx.batch_execute(if keep { "RELEASE SAVEPOINT delivery" } else { UNDO }).await?;
                return Ok(Ok(answer));
            }
            Err(err) => {
                tx.batch_execute(UNDO).await?;
                if !(err.is_retryable() && attempt < ATTEMPTS) {
                    return Ok(Err(err));
                }
                attempt += 1;
            }
        }
    }
}

/// Intake's statements for one delivery: its answer, and whether anything of it is to be kept.
async fn accept(tx: &Transaction<'_>, work: &Work) -> Result<(Answer, bool)> {
    let Work { delivery, body_sha256, alerts, dry_run, duplicate_window, now } = work;
    let now = *now;
    let format = delivery.format.as_str();
    let webhook_id = delivery.webhook_id.as_deref().map(text);
    let delivery_id = new_id();

    let insert = tx
        .prepare_cached(
            "INSERT INTO deliveries (id, received_at, sender, format, webhook_id, body, body_sha256) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (sender, webhook_id) WHERE webhook_id IS NOT NULL AND error IS NULL DO NOTHING RETURNING id",
        )
        .await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
        &delivery_id,
        &now,
        &delivery.sender,
        &format,
        &webhook_id,
        &&delivery.body[..],
        &&body_sha256[..],
    ];
    if tx.query_opt(&insert, &params).await?.is_none() {
        let original = tx.prepare_cached("SELECT response FROM deliveries WHERE sender = $1 AND webhook_id = $2 AND error IS NULL").await?;
        let response: Option<String> =
            tx.query_one(&original, &[&delivery.sender, &webhook_id]).await?.get(0);
        return Ok((answer_of(response)?, false));
    }

    // A Standard Webhooks delivery is told apart by its webhook-id; one without (hub-signature-256, bearer) by its
    // body within the window. Every accepted body is recorded, so a later delivery without an id sees it; only a
    // delivery without an id within the window is refused by an earlier one.
    let counts_from = match (&delivery.webhook_id, duplicate_window.is_zero()) {
        (None, false) => {
            now.saturating_sub(i64::try_from(duplicate_window.as_millis()).unwrap_or(i64::MAX))
        }
        _ => i64::MAX,
    };
    let body = tx
        .prepare_cached(
            "INSERT INTO delivery_bodies (sender, body_sha256, delivery_id, received_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (sender, body_sha256) DO UPDATE SET delivery_id = excluded.delivery_id, received_at = excluded.received_at
             WHERE delivery_bodies.received_at < $5 RETURNING delivery_id",
        )
        .await?;
    if tx
        .query_opt(&body, &[&delivery.sender, &&body_sha256[..], &delivery_id, &now, &counts_from])
        .await?
        .is_none()
    {
        let original = tx
            .prepare_cached("SELECT d.response FROM delivery_bodies b JOIN deliveries d ON d.id = b.delivery_id WHERE b.sender = $1 AND b.body_sha256 = $2")
            .await?;
        let response: Option<String> =
            tx.query_one(&original, &[&delivery.sender, &&body_sha256[..]]).await?.get(0);
        return Ok((answer_of(response)?, false));
    }

    let mut answer = Answer { alerts: Vec::with_capacity(alerts.len()) };
    let mut fresh = false;
    for (position, alert) in alerts.iter().enumerate() {
        // The alert takes its source id first, with a disposition set below before anything commits: a duplicate
        // is known before any incident is touched.
        let alert_id = new_id();
        let source_key = alert.source_key.as_deref().map(text);
        let take = tx
            .prepare_cached(
                "INSERT INTO alerts (id, delivery_id, position, received_at, sender, format, source_key, health_set, server, monitor, mailbox_hint, message, status, raised_at, disposition)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 'duplicate')
                 ON CONFLICT (sender, format, source_key) WHERE source_key IS NOT NULL DO NOTHING RETURNING id",
            )
            .await?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 14] = [
            &alert_id,
            &delivery_id,
            &(position as i64),
            &now,
            &delivery.sender,
            &format,
            &source_key,
            &alert.health_set.as_str(),
            &alert.server.as_str(),
            &alert.monitor.as_ref().map(|m| m.as_str()),
            &alert.mailbox_hint.as_ref().map(|s| s.as_str()),
            &text(&alert.message),
            &alert.status.as_str(),
            &alert.raised_at.map(|t| t.to_rfc3339()),
        ];
        if tx.query_opt(&take, &params).await?.is_none() {
            let original = tx.prepare_cached("SELECT id, incident_id FROM alerts WHERE sender = $1 AND format = $2 AND source_key = $3").await?;
            let row = tx.query_one(&original, &[&delivery.sender, &format, &source_key]).await?;
            answer.alerts.push(AnswerItem {
                alert_id: row.get(0),
                incident_id: row.get(1),
                disposition: Disposition::Duplicate,
            });
            continue;
        }
        fresh = true;
        let (incident_id, disposition) = incident_for(tx, alert, *dry_run, now).await?;
        let decided = tx
            .prepare_cached("UPDATE alerts SET incident_id = $2, disposition = $3 WHERE id = $1")
            .await?;
        tx.execute(&decided, &[&alert_id, &incident_id, &disposition.as_str()]).await?;
        if let Some(incident_id) = &incident_id {
            let link = tx.prepare_cached("INSERT INTO incident_alerts (incident_id, alert_id, linked_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING").await?;
            tx.execute(&link, &[incident_id, &alert_id, &now]).await?;
        }
        answer.alerts.push(AnswerItem { alert_id, incident_id, disposition });
    }
    if !fresh {
        return Ok((answer, false));
    }
    let response = serde_json::to_string(&answer).expect("answers serialise");
    let answered = tx.prepare_cached("UPDATE deliveries SET response = $2 WHERE id = $1").await?;
    tx.execute(&answered, &[&delivery_id, &response]).await?;
    Ok((answer, true))
}

/// PostgreSQL's text cannot hold NUL, which JSON can carry (`\u0000`): in what is kept as text it becomes U+FFFD,
/// the replacement character. The body itself is kept byte for byte.
fn text(value: &str) -> Cow<'_, str> {
    if value.contains('\0') {
        Cow::Owned(value.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(value)
    }
}

/// The original answer to a delivery seen before, marked `duplicate` throughout.
fn answer_of(response: Option<String>) -> Result<Answer> {
    let response =
        response.ok_or_else(|| Error::NotFound("the answer to the original delivery".into()))?;
    Ok(duplicate_of(&response)?)
}

/// What becomes of a new alert: suppressed under a silence, resolving the open incident of its key, attached to
/// it, or opening one.
async fn incident_for(
    tx: &Transaction<'_>,
    alert: &Alert,
    dry_run: bool,
    now: i64,
) -> Result<(Option<String>, Disposition)> {
    let silenced = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM silences WHERE server = $1 AND until > $2)")
        .await?;
    if tx.query_one(&silenced, &[&alert.server.as_str(), &now]).await?.get::<_, bool>(0) {
        return Ok((None, Disposition::Suppressed));
    }
    let key = open_key(&alert.server, &alert.health_set, alert.monitor.as_ref());
    if alert.status == AlertStatus::Resolved {
        let resolve = tx.prepare_cached("UPDATE incidents SET resolved_at = $2, updated_at = $2 WHERE open_key = $1 RETURNING id").await?;
        let open = tx.query_opt(&resolve, &[&key, &now]).await?.map(|row| row.get(0));
        return Ok((open, Disposition::Resolved));
    }
    // Opens the incident of this key, or attaches to the one open: another instance's, if it committed first.
    // Joining changes the incident only by the first `_Mbx:` hint: arriving is not progress (see the SQLite store).
    let on_open =
        "DO UPDATE SET mailbox_hint = COALESCE(incidents.mailbox_hint, excluded.mailbox_hint)";
    let (id, open) = open_incident(tx, alert, &key, dry_run, None, now, on_open).await?;
    let open = open.expect("an upsert returns the open incident");
    let disposition = if open == id { Disposition::NewIncident } else { Disposition::Attached };
    Ok((Some(open), disposition))
}

/// Inserts a queued incident for `alert` under its open `key`, `replay_of` a stored alert or not. `on_open` is what
/// the unique index of open keys does when an incident is open for the key already: an `ON CONFLICT` action. Returns
/// the new incident's id, and the id of the row the statement returned: the new one, the open one when `on_open`
/// updates it, nothing when `on_open` does nothing.
async fn open_incident(
    tx: &Transaction<'_>,
    alert: &Alert,
    key: &str,
    dry_run: bool,
    replay_of: Option<&str>,
    now: i64,
    on_open: &str,
) -> Result<(String, Option<String>)> {
    let id = new_id();
    let insert = tx
        .prepare_cached(&format!(
            "INSERT INTO incidents (id, created_at, updated_at, state, dry_run, health_set, server, monitor, mailbox_hint, open_key, replay_of)
             VALUES ($1, $2, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (open_key) WHERE open_key IS NOT NULL {on_open} RETURNING id"
        ))
        .await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 10] = [
        &id,
        &now,
        &State::Queued.as_str(),
        &dry_run,
        &alert.health_set.as_str(),
        &alert.server.as_str(),
        &alert.monitor.as_ref().map(|m| m.as_str()),
        &alert.mailbox_hint.as_ref().map(|s| s.as_str()),
        &key,
        &replay_of,
    ];
    let returned = tx.query_opt(&insert, &params).await?.map(|row| row.get(0));
    Ok((id, returned))
}

/// How often a replay tries again when the incident that stood in its way ended before it could be named.
const REPLAY_ATTEMPTS: usize = 3;

impl Postgres {
    /// Opens a new incident for a stored alert, as if it had just arrived, and links the alert to it; refused with
    /// [`StoreError::Conflict`] naming the incident open for its key. The unique index of open keys decides, so two
    /// replays of one key at once open one incident.
    pub async fn replay(&self, alert_id: String, alert: Alert, dry_run: bool) -> Result<String> {
        let mut client = self.client().await?;
        let key = open_key(&alert.server, &alert.health_set, alert.monitor.as_ref());
        for _ in 0..REPLAY_ATTEMPTS {
            let tx = client.transaction().await?;
            let now = now_ms();
            let (id, opened) =
                open_incident(&tx, &alert, &key, dry_run, Some(&alert_id), now, "DO NOTHING")
                    .await?;
            if opened.is_none() {
                // The statement waited for the incident in the way to commit; a new snapshot sees it, unless it
                // has ended since, and then the key is free to try again.
                let holder =
                    tx.prepare_cached("SELECT id FROM incidents WHERE open_key = $1").await?;
                match tx.query_opt(&holder, &[&key]).await? {
                    Some(row) => return Err(StoreError::Conflict(row.get(0)).into()),
                    None => continue,
                }
            }
            let link = tx
                .prepare_cached(
                    "INSERT INTO incident_alerts (incident_id, alert_id, linked_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .await?;
            tx.execute(&link, &[&id, &alert_id, &now]).await?;
            tx.commit().await?;
            return Ok(id);
        }
        Err(Error::unavailable(
            &self.target,
            format!(
                "incidents of {key} kept opening and ending while alert {alert_id} was replayed"
            ),
        ))
    }

    /// Whether writes commit: a probe write as large as the largest delivery (`bytes`) into `settings`, in a
    /// transaction that commits, as `/readyz` asks of the SQLite store.
    pub async fn check_writable(&self, bytes: usize) -> Result<()> {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let probe = tx
            .prepare_cached(
                "INSERT INTO settings (key, value) VALUES ('ready_check', repeat('0', $1::bigint::integer))
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .await?;
        tx.execute(&probe, &[&bytes]).await?;
        tx.commit().await?;
        Ok(())
    }
}

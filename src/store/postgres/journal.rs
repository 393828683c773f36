//! The engine's journal on PostgreSQL: the SQLite store's `store/engine.rs` (same calls, same answers), for
//! several instances at once.
//!
//! What differs is who may write. [`Postgres::runnable`] claims the incidents this instance is to drive (those
//! nobody holds, or whose lease ran out), and a background task renews every claim held every third of the lease.
//! Every journal write for an incident runs [`Fenced`] under this instance's claim: one whose claim was lost (it
//! stalled past its lease and another instance took the incident over) writes nothing and learns it. Ending an
//! incident gives its claim up.
//!
//! What must hold across instances is decided in the transaction that journals the step, never read beforehand:
//! a step's throttles read the history of every instance's steps under an advisory lock on the server and on its
//! throttle group (so two instances starting a restart in one group at once take turns, and the second sees the
//! first), and a change checks the pause switch and the silences in the same transaction. A server is taken for
//! an incident by an `INSERT ... ON CONFLICT` that only an incident already holding it, or an ended holder, passes.

use std::sync::MutexGuard;

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::leases::{Claim, Fenced, DRIVEN};
use super::views::{pause_reason, silence_over};
use super::{Error, Postgres, Result};
use crate::domain::{HealthSet, Monitor, ServerName};
use crate::incident::{ActionKind, Outcome, State};
use crate::journal::{Action, Ending, Facts, Report};
use crate::ma::RecoveryAction;
use crate::safety::{self, History, Throttle};
use crate::store::engine::{bounded, monitor_key, unhealthy_json, StoredStep, OPEN_STATES as OPEN};
use crate::store::{
    new_id, now_ms, EscalationHistory, IncidentRecord, NewNotification, NewStep, Runnable, Started,
    StepRecord, StoreError,
};

/// The most incidents one look at the queue claims: instances looking in turn share a storm between them.
const CLAIM_BATCH: i64 = 32;

/// The detail of a step that was still running when its incident was ended from outside the runbook.
const INTERRUPTED_BY_ENDING: &str =
    "the incident ended while this step ran; its result was not recorded";

fn server(raw: String) -> Result<ServerName> {
    ServerName::parse(&raw).map_err(|e| Error::Store(StoreError::Conflict(format!("server: {e}"))))
}

impl Postgres {
    pub(super) fn claims(&self) -> MutexGuard<'_, std::collections::HashMap<String, Claim>> {
        self.claims.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Begins a journal write for incident `id` under this instance's claim on it. A claim found lost is
    /// forgotten, so the engine stops driving the incident and no later write tries it again.
    pub(super) async fn fenced<'c>(
        &self,
        client: &'c mut deadpool_postgres::Client,
        id: &str,
    ) -> Result<Fenced<'c>> {
        let held = self.claims().get(id).cloned().ok_or_else(|| Error::Unclaimed(id.to_owned()))?;
        match Fenced::begin(client, &held).await {
            Err(err @ (Error::LostClaim { .. } | Error::NotFound(_))) => {
                self.forget(&held);
                Err(err)
            }
            other => other,
        }
    }

    /// Drops `claim` from the claims held, unless a newer claim of this instance replaced it.
    fn forget(&self, claim: &Claim) {
        let mut claims = self.claims();
        if claims.get(&claim.incident_id).is_some_and(|held| held.epoch == claim.epoch) {
            claims.remove(&claim.incident_id);
        }
    }

    /// The incidents this instance drives (or just the one named): those it holds already, and as many as
    /// [`CLAIM_BATCH`] more that nobody holds or whose lease ran out, each claimed for `store.lease`. Oldest first.
    pub async fn runnable(&self, only: Option<String>) -> Result<Vec<Runnable>> {
        let now = now_ms();
        let client = self.client().await?;
        let mine = client
            .prepare_cached(&format!(
                "SELECT id, server, lease_epoch FROM incidents
                 WHERE lease_owner = $1 AND state IN {DRIVEN} AND ($2::text IS NULL OR id = $2)"
            ))
            .await?;
        let claim = client
            .prepare_cached(&format!(
                "UPDATE incidents SET lease_owner = $1, lease_until = $3, lease_epoch = lease_epoch + 1
                 WHERE id IN (SELECT id FROM incidents WHERE state IN {DRIVEN}
                                 AND (lease_until IS NULL OR lease_until <= $2) AND ($4::text IS NULL OR id = $4)
                              ORDER BY created_at, id LIMIT $5 FOR UPDATE SKIP LOCKED)
                 RETURNING id, server, lease_epoch"
            ))
            .await?;
        let held = client.query(&mine, &[&&*self.instance, &only]).await?;
        let until = now.saturating_add(self.lease.as_millis() as i64);
        let claimed =
            client.query(&claim, &[&&*self.instance, &now, &until, &only, &CLAIM_BATCH]).await?;
        let mut runnable = Vec::with_capacity(held.len() + claimed.len());
        let mut claims = self.claims();
        for row in &held {
            let id: String = row.get(0);
            if claims.get(&id).is_some_and(|claim| claim.epoch == row.get::<_, i64>(2)) {
                runnable.push(Runnable { id, server: server(row.get(1))? });
            }
        }
        for row in &claimed {
            let id: String = row.get(0);
            let claim = Claim {
                incident_id: id.clone(),
                instance: self.instance.to_string(),
                epoch: row.get(2),
            };
            claims.insert(id.clone(), claim);
            runnable.push(Runnable { id, server: server(row.get(1))? });
        }
        runnable.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(runnable)
    }

    /// How many incidents are driven or waiting to be, on every instance: what `/readyz` reports.
    pub async fn open_incidents(&self) -> Result<usize> {
        let client = self.client().await?;
        let count = client
            .prepare_cached(&format!("SELECT COUNT(*) FROM incidents WHERE state IN {DRIVEN}"))
            .await?;
        Ok(client.query_one(&count, &[]).await?.get::<_, i64>(0) as usize)
    }

    /// An incident with its journal.
    pub async fn load(&self, id: String) -> Result<(IncidentRecord, Vec<StepRecord>)> {
        let client = self.client().await?;
        let incident = client
            .prepare_cached(
                "SELECT id, state, dry_run, server, health_set, CASE WHEN monitor_found THEN NULL ELSE monitor END,
                        mailbox_hint, resolved_at, monitor_found FROM incidents WHERE id = $1",
            )
            .await?;
        let steps = client
            .prepare_cached(
                "SELECT seq, action, server, started_at, finished_at, outcome, detail, unhealthy, already_in_place,
                        ma_actions FROM steps WHERE incident_id = $1 ORDER BY seq",
            )
            .await?;
        let row = client
            .query_opt(&incident, &[&id])
            .await?
            .ok_or_else(|| Error::NotFound(format!("incident {id}")))?;
        let health_set: String = row.get(4);
        let incident = IncidentRecord {
            id: row.get(0),
            state: State::parse(row.get(1)).unwrap_or(State::Blocked),
            dry_run: row.get(2),
            facts: Facts {
                server: server(row.get(3))?,
                health_set: HealthSet::parse(&health_set)
                    .map_err(|e| Error::Store(StoreError::Conflict(format!("health set: {e}"))))?,
                monitor: row.get::<_, Option<String>>(5).and_then(|m| Monitor::parse(&m).ok()),
                mailbox_hint: row.get::<_, Option<String>>(6).map(server).transpose()?,
            },
            resolved_at: row.get(7),
            monitor_found: row.get(8),
        };
        let steps = client
            .query(&steps, &[&id])
            .await?
            .into_iter()
            .map(|row| step(&row))
            .collect::<Result<Vec<_>>>()?;
        Ok((incident, steps))
    }

    pub async fn set_state(&self, id: String, state: State, reason: Option<String>) -> Result<()> {
        let mut client = self.client().await?;
        let tx = self.fenced(&mut client, &id).await?;
        let update = tx
            .prepare_cached(
                "UPDATE incidents SET state = $2, reason = $3, updated_at = $4 WHERE id = $1",
            )
            .await?;
        tx.execute(&update, &[&id, &state.as_str(), &reason, &now_ms()]).await?;
        tx.commit().await
    }

    /// Records the monitor learnt from `Get-ServerHealth`, and lets later alerts naming it attach to this incident,
    /// unless another incident is open for that key already.
    pub async fn set_monitor(&self, id: String, monitor: Monitor) -> Result<()> {
        let mut client = self.client().await?;
        let tx = self.fenced(&mut client, &id).await?;
        let read =
            tx.prepare_cached("SELECT server, health_set FROM incidents WHERE id = $1").await?;
        let row = tx.query_one(&read, &[&id]).await?;
        let key = monitor_key(row.get(0), row.get(1), &monitor);
        // Another incident may hold the key, or take it at this moment (an alert naming the monitor): the unique
        // index refuses the key then, and the savepoint keeps the transaction usable, so only the monitor is
        // recorded.
        let keyed = tx
            .prepare_cached(
                "UPDATE incidents SET open_key = $2 WHERE id = $1 AND open_key IS NOT NULL
                 AND NOT EXISTS (SELECT 1 FROM incidents WHERE open_key = $2 AND id <> $1)",
            )
            .await?;
        tx.batch_execute("SAVEPOINT monitor_key").await?;
        match tx.execute(&keyed, &[&id, &key]).await {
            Ok(_) => tx.batch_execute("RELEASE SAVEPOINT monitor_key").await?,
            Err(err) if err.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT monitor_key; RELEASE SAVEPOINT monitor_key")
                    .await?
            }
            Err(err) => return Err(err.into()),
        }
        let update = tx
            .prepare_cached(
                "UPDATE incidents SET monitor = $2, monitor_found = true, updated_at = $3 WHERE id = $1",
            )
            .await?;
        tx.execute(&update, &[&id, &monitor.as_str(), &now_ms()]).await?;
        tx.commit().await
    }

    /// Journals a step as started, unless a throttle, the pause switch or a silence forbids it, each decided in
    /// the transaction that journals the step (see the module's overview).
    pub async fn start_step(&self, id: String, step: NewStep<'_>) -> Result<Started> {
        let mut client = self.client().await?;
        let tx = self.fenced(&mut client, &id).await?;
        let now = now_ms();
        let action = step.action;
        let group = step.group.as_deref();
        if action.kind().is_mutating() {
            if pause_reason(&*tx).await?.is_some() {
                return Ok(Started::Paused);
            }
            if let Some(silence) = silence_over(&*tx, action.server().as_str(), now).await? {
                return Ok(Started::Silenced(silence));
            }
        }
        let mut rules: Vec<(ActionKind, &Throttle, String)> =
            step.throttle.iter().map(|rule| (action.kind(), rule, String::new())).collect();
        rules.extend(step.commits_to.iter().map(|(kind, rule)| {
            let consequence = format!(
                "; {} was not started, since the {kind} it leads to would be refused",
                action.kind()
            );
            (*kind, rule, consequence)
        }));
        if let Some(reason) = refusal(&tx, &id, action.server(), group, &rules, now).await? {
            record_throttled(&tx, &id, action, &step.command, group, &reason, now).await?;
            tx.commit().await?;
            return Ok(Started::Throttled(reason));
        }
        let counted = step.throttle.is_some();
        let seq = insert_step(&tx, &id, action, &step.command, group, counted, now).await?;
        tx.commit().await?;
        Ok(Started::Run { seq })
    }

    /// Journals a step that did not run (dry run, or Managed Availability did it), finished at once.
    pub async fn skip_step(
        &self,
        id: String,
        action: Action,
        command: String,
        outcome: Outcome,
        detail: String,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = self.fenced(&mut client, &id).await?;
        let now = now_ms();
        let seq = insert_step(&tx, &id, &action, &command, None, false, now).await?;
        finish_at_once(&tx, &id, seq, outcome, &detail, now).await?;
        tx.commit().await
    }

    /// Records a step's result; the command text is replaced when the executor reports the exact script it ran.
    /// A step already finished (recorded `interrupted` by an instance that took the incident over) keeps its
    /// record.
    pub async fn finish_step(&self, id: String, seq: i64, report: Report) -> Result<()> {
        let mut client = self.client().await?;
        let tx = self.fenced(&mut client, &id).await?;
        let now = now_ms();
        let update = tx
            .prepare_cached(
                "UPDATE steps SET finished_at = $3, outcome = $4, detail = $5, unhealthy = $6,
                        command = COALESCE($7, command), already_in_place = $8
                 WHERE incident_id = $1 AND seq = $2 AND finished_at IS NULL",
            )
            .await?;
        let params: [&(dyn ToSql + Sync); 8] = [
            &id,
            &seq,
            &now,
            &report.outcome.as_str(),
            &bounded(&report.detail),
            &unhealthy_json(&report),
            &report.command,
            &report.already_in_place,
        ];
        tx.execute(&update, &params).await?;
        let touched =
            tx.prepare_cached("UPDATE incidents SET updated_at = $2 WHERE id = $1").await?;
        tx.execute(&touched, &[&id, &now]).await?;
        if !report.ma_actions.is_empty() {
            record_ma_actions(&tx, &id, seq, &report.ma_actions).await?;
        }
        tx.commit().await
    }

    /// Ends an incident, frees its key and its servers, queues its notification and gives the claim up, in one
    /// transaction. A step still unfinished is recorded `interrupted` first.
    pub async fn finish_incident(
        &self,
        id: String,
        ending: Ending,
        notification: Option<NewNotification>,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = self.fenced(&mut client, &id).await?;
        let now = now_ms();
        let interrupted = tx
            .prepare_cached(
                "UPDATE steps SET finished_at = $2, outcome = 'interrupted', detail = $3
                 WHERE incident_id = $1 AND finished_at IS NULL",
            )
            .await?;
        tx.execute(&interrupted, &[&id, &now, &INTERRUPTED_BY_ENDING]).await?;
        let unlocked = tx.prepare_cached("DELETE FROM server_locks WHERE incident_id = $1").await?;
        tx.execute(&unlocked, &[&id]).await?;
        let ended = tx
            .prepare_cached(
                "UPDATE incidents SET state = $2, reason = $3, open_key = NULL, updated_at = $4,
                        lease_owner = NULL, lease_until = NULL WHERE id = $1",
            )
            .await?;
        tx.execute(&ended, &[&id, &ending.state.as_str(), &ending.reason, &now]).await?;
        if let Some(notification) = notification {
            queue_notification(&tx, &id, notification, now).await?;
        }
        tx.commit().await?;
        self.claims().remove(&id);
        Ok(())
    }

    /// The escalations already queued, by any instance, for the same server, health set and monitor.
    pub async fn escalation_history(&self, incident_id: String) -> Result<EscalationHistory> {
        const SAME_KEY: &str =
            "FROM notifications n JOIN incidents i ON i.id = n.incident_id, incidents me
             WHERE me.id = $1 AND n.kind = 'escalation' AND i.server = me.server
               AND lower(i.health_set) = lower(me.health_set)
               AND lower(COALESCE(i.monitor, '')) = lower(COALESCE(me.monitor, ''))";
        let client = self.client().await?;
        let last = client
            .prepare_cached(&format!(
                "SELECT MAX(n.created_at) {SAME_KEY} AND n.status IN ('pending', 'sent')"
            ))
            .await?;
        let held = client
            .prepare_cached(&format!(
                "SELECT COUNT(*) {SAME_KEY} AND n.status = 'held' AND n.created_at > COALESCE($2::bigint, 0)"
            ))
            .await?;
        let last_sent_at: Option<i64> = client.query_one(&last, &[&incident_id]).await?.get(0);
        let held_since: i64 = client.query_one(&held, &[&incident_id, &last_sent_at]).await?.get(0);
        Ok(EscalationHistory { last_sent_at, held_since: held_since as u32 })
    }

    /// Open incidents not updated for `bound_ms`, not yet reported as making no progress, and driven by no live
    /// instance, with when they last moved.
    pub async fn stalled(&self, bound_ms: i64) -> Result<Vec<(String, i64)>> {
        let now = now_ms();
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT id, updated_at FROM incidents
                 WHERE state IN {DRIVEN} AND NOT stall_notified AND updated_at < $1
                   AND (lease_owner IS NULL OR lease_owner = $3 OR lease_until <= $2)
                 ORDER BY id"
            ))
            .await?;
        let rows = client.query(&statement, &[&(now - bound_ms), &now, &&*self.instance]).await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    /// Queues the notice that an incident makes no progress, and marks it reported, in one transaction: of two
    /// instances noticing at once, one queues it.
    pub async fn notify_stalled(&self, id: String, notification: NewNotification) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mark = tx
            .prepare_cached(
                "UPDATE incidents SET stall_notified = true WHERE id = $1 AND NOT stall_notified",
            )
            .await?;
        if tx.execute(&mark, &[&id]).await? == 1 {
            queue_notification(&tx, &id, notification, now_ms()).await?;
        }
        Ok(tx.commit().await?)
    }

    /// Every server held by an incident that is not final, on any instance, and by which incident.
    pub async fn server_locks(&self) -> Result<Vec<(ServerName, String)>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT l.server, l.incident_id FROM server_locks l JOIN incidents i ON i.id = l.incident_id
                 WHERE i.state IN {OPEN}"
            ))
            .await?;
        client
            .query(&statement, &[])
            .await?
            .into_iter()
            .map(|row| Ok((server(row.get(0))?, row.get(1))))
            .collect()
    }

    /// Takes `server` for `incident` until the incident ends, unless another incident that is not final holds it:
    /// then its id. Two instances taking one server at once meet on its row: the second waits for the first and
    /// finds it held.
    pub async fn lock_server(
        &self,
        incident: String,
        server: ServerName,
    ) -> Result<Option<String>> {
        let mut client = self.client().await?;
        let tx = self.fenced(&mut client, &incident).await?;
        let take = tx
            .prepare_cached(&format!(
                "INSERT INTO server_locks (server, incident_id, since) VALUES ($1, $2, $3)
                 ON CONFLICT (server) DO UPDATE SET incident_id = excluded.incident_id, since = excluded.since
                 WHERE server_locks.incident_id = excluded.incident_id
                    OR NOT EXISTS (SELECT 1 FROM incidents i WHERE i.id = server_locks.incident_id AND i.state IN {OPEN})
                 RETURNING incident_id"
            ))
            .await?;
        let taken = tx.query_opt(&take, &[&server.as_str(), &incident, &now_ms()]).await?;
        let holder = match taken {
            Some(_) => None,
            None => {
                let holder = tx
                    .prepare_cached("SELECT incident_id FROM server_locks WHERE server = $1")
                    .await?;
                Some(tx.query_one(&holder, &[&server.as_str()]).await?.get(0))
            }
        };
        tx.commit().await?;
        Ok(holder)
    }

    /// Gives up every claim this instance holds, so that another instance takes its incidents over at once rather
    /// than after the lease: what a clean stop does once its drivers have stopped.
    pub async fn release_claims(&self) -> Result<()> {
        let claims: Vec<Claim> = self.claims().drain().map(|(_, claim)| claim).collect();
        if claims.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        let release = client
            .prepare_cached(
                "UPDATE incidents SET lease_owner = NULL, lease_until = NULL
                 WHERE id = $1 AND lease_owner = $2 AND lease_epoch = $3",
            )
            .await?;
        for claim in &claims {
            client.execute(&release, &[&claim.incident_id, &claim.instance, &claim.epoch]).await?;
        }
        Ok(())
    }

    /// Renews every claim held, and this instance's heartbeat, once: what the renewal task does every third of
    /// the lease. A claim found lost, or whose incident was deleted, is forgotten.
    pub async fn renew_held(&self) -> Result<()> {
        let now = now_ms();
        self.heartbeat(now).await?;
        let held: Vec<Claim> = self.claims().values().cloned().collect();
        for claim in held {
            match self.renew(&claim, now, self.lease).await {
                Ok(_) => {}
                Err(err @ (Error::LostClaim { .. } | Error::NotFound(_))) => {
                    tracing::warn!(error = %err, "a claim on an incident was lost; another instance drives it now");
                    self.forget(&claim);
                }
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

/// Renews the claims `store` holds every third of its lease, until every other handle on the store is dropped.
pub(super) fn renew_claims(store: &Postgres) {
    let store = store.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(store.lease / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if std::sync::Arc::strong_count(&store.claims) == 1 {
                return;
            }
            if let Err(err) = store.renew_held().await {
                tracing::warn!(error = %err, "cannot renew this instance's claims; they lapse after store.lease unless renewed");
            }
        }
    });
}

fn step(row: &Row) -> Result<StepRecord> {
    Ok(StepRecord::from(StoredStep {
        seq: row.get(0),
        action: row.get(1),
        server: server(row.get(2))?,
        started_at: row.get(3),
        finished_at: row.get(4),
        outcome: row.get(5),
        detail: row.get(6),
        unhealthy: row.get(7),
        already_in_place: row.get(8),
        ma_actions: row.get(9),
    }))
}

/// Queues an email in the transaction that decided it.
pub(super) async fn queue_notification(
    tx: &Transaction<'_>,
    incident: &str,
    n: NewNotification,
    now: i64,
) -> Result<()> {
    let insert = tx
        .prepare_cached(
            "INSERT INTO notifications (id, incident_id, kind, recipients, subject, message, status, next_attempt_at,
                                        created_at, mail_from)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)",
        )
        .await?;
    let recipients = serde_json::to_string(&n.to).expect("addresses serialise");
    let status = if n.held { "held" } else { "pending" };
    let params: [&(dyn ToSql + Sync); 9] = [
        &new_id(),
        &incident,
        &n.kind,
        &recipients,
        &n.subject,
        &n.message,
        &status,
        &now,
        &n.from,
    ];
    tx.execute(&insert, &params).await?;
    Ok(())
}

/// Journals a step as started (`action` on its server) and moves the incident to `running` (`waiting` for a wait).
pub(super) async fn insert_step(
    tx: &Transaction<'_>,
    id: &str,
    action: &Action,
    command: &str,
    group: Option<&str>,
    counted: bool,
    now: i64,
) -> Result<i64> {
    journal_step(tx, id, (action.kind(), action.server()), command, group, counted, now).await
}

/// [`insert_step`] for a step named by its kind and server.
pub(super) async fn journal_step(
    tx: &Transaction<'_>,
    id: &str,
    (kind, server): (ActionKind, &ServerName),
    command: &str,
    group: Option<&str>,
    counted: bool,
    now: i64,
) -> Result<i64> {
    let next = tx
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) + 1 FROM steps WHERE incident_id = $1")
        .await?;
    let seq: i64 = tx.query_one(&next, &[&id]).await?.get(0);
    let insert = tx
        .prepare_cached(
            "INSERT INTO steps (incident_id, seq, action, server, server_group, command, counted, started_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .await?;
    let params: [&(dyn ToSql + Sync); 8] =
        [&id, &seq, &kind.as_str(), &server.as_str(), &group, &command, &counted, &now];
    tx.execute(&insert, &params).await?;
    let state = if kind == ActionKind::Wait { State::Waiting } else { State::Running };
    let moved =
        tx.prepare_cached("UPDATE incidents SET state = $2, updated_at = $3 WHERE id = $1").await?;
    tx.execute(&moved, &[&id, &state.as_str(), &now]).await?;
    Ok(seq)
}

/// Records the result of a step that took no time (one that did not run, a request, a decision).
pub(super) async fn finish_at_once(
    tx: &Transaction<'_>,
    id: &str,
    seq: i64,
    outcome: Outcome,
    detail: &str,
    now: i64,
) -> Result<()> {
    let update = tx
        .prepare_cached(
            "UPDATE steps SET finished_at = $3, outcome = $4, detail = $5 WHERE incident_id = $1 AND seq = $2",
        )
        .await?;
    tx.execute(&update, &[&id, &seq, &now, &outcome.as_str(), &detail]).await?;
    Ok(())
}

/// Journals a step a throttle refused: finished at once, `throttled`, not counted.
pub(super) async fn record_throttled(
    tx: &Transaction<'_>,
    id: &str,
    action: &Action,
    command: &str,
    group: Option<&str>,
    reason: &str,
    now: i64,
) -> Result<()> {
    let seq = insert_step(tx, id, action, command, group, false, now).await?;
    finish_at_once(tx, id, seq, Outcome::Throttled, reason, now).await
}

/// Keeps what an `ma_history` step found: on the step, and once each for the throttles of every instance.
async fn record_ma_actions(
    tx: &Transaction<'_>,
    id: &str,
    seq: i64,
    actions: &[RecoveryAction],
) -> Result<()> {
    let json = serde_json::to_string(actions).expect("recovery actions serialise");
    let update = tx
        .prepare_cached(
            "UPDATE steps SET ma_actions = $3 WHERE incident_id = $1 AND seq = $2
             RETURNING server, server_group",
        )
        .await?;
    let row = tx.query_one(&update, &[&id, &seq, &json]).await?;
    let (server, group): (String, Option<String>) = (row.get(0), row.get(1));
    let insert = tx
        .prepare_cached(
            "INSERT INTO ma_actions (server, server_group, kind, action_id, resource, requestor, ended_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .await?;
    for action in actions {
        if let Some(kind) = action.counts_as() {
            let ended_at = action.ended_at.timestamp_millis();
            let params: [&(dyn ToSql + Sync); 7] = [
                &server,
                &group,
                &kind.as_str(),
                &action.id,
                &action.resource,
                &action.requestor,
                &ended_at,
            ];
            tx.execute(&insert, &params).await?;
        }
    }
    Ok(())
}

/// The first of `rules` that refuses a step on `server` now, as its reason. The server and its group are locked
/// (transaction-level advisory locks, in a fixed order) before their history is read, so that two instances
/// deciding for one server or one group take turns, and the second counts the first's step.
pub(super) async fn refusal(
    tx: &Transaction<'_>,
    incident: &str,
    server: &ServerName,
    group: Option<&str>,
    rules: &[(ActionKind, &Throttle, String)],
    now: i64,
) -> Result<Option<String>> {
    if rules.is_empty() {
        return Ok(None);
    }
    let mut scopes = vec![format!("server:{server}")];
    scopes.extend(group.map(|group| format!("group:{group}")));
    scopes.sort();
    let lock = tx
        .prepare_cached(
            "SELECT pg_advisory_xact_lock(hashtextextended('healthset-responder ' || $1, 0))",
        )
        .await?;
    for scope in &scopes {
        tx.execute(&lock, &[scope]).await?;
    }
    for (kind, rule, consequence) in rules {
        let history = history(tx, incident, *kind, server, group, now).await?;
        let scope = group.unwrap_or(server.as_str());
        if let Err(reason) = safety::check(*kind, rule, server.as_str(), scope, &history, now) {
            return Ok(Some(reason + consequence));
        }
    }
    Ok(None)
}

/// The last time and the count since `since` of runs of `kind`, the responder's own (on every instance) then
/// Managed Availability's, on one server (`column` = `server`) or in one group (`server_group`).
async fn counted(
    tx: &Transaction<'_>,
    column: &str,
    kind: ActionKind,
    value: &str,
    since: i64,
) -> Result<(Option<i64>, u32, u32)> {
    let own = format!("SELECT MAX(started_at), COUNT(*) FROM steps WHERE counted AND action = $1 AND {column} = $2 AND started_at > $3");
    let theirs = format!("SELECT MAX(ended_at), COUNT(*) FROM ma_actions WHERE kind = $1 AND {column} = $2 AND ended_at > $3");
    let mut found = [(None, 0_u32); 2];
    for (sql, slot) in [own, theirs].iter().zip(found.iter_mut()) {
        let statement = tx.prepare_cached(sql).await?;
        let row = tx.query_one(&statement, &[&kind.as_str(), &value, &since]).await?;
        *slot = (row.get::<_, Option<i64>>(0), row.get::<_, i64>(1) as u32);
    }
    let [(own_last, own_count), (their_last, their_count)] = found;
    Ok((own_last.max(their_last), own_count + their_count, their_count))
}

async fn history(
    tx: &Transaction<'_>,
    incident: &str,
    kind: ActionKind,
    server: &ServerName,
    group: Option<&str>,
    now: i64,
) -> Result<History> {
    let since = safety::window_start(now);
    let (server_last, server_today, by_ma) =
        counted(tx, "server", kind, server.as_str(), since).await?;
    let mut history =
        History { server_last, server_today, managed_availability: by_ma, ..History::default() };
    if let Some(group) = group {
        let (group_last, group_today, by_ma) =
            counted(tx, "server_group", kind, group, since).await?;
        (history.group_last, history.group_today) = (group_last, group_today);
        history.managed_availability = history.managed_availability.max(by_ma);
        if kind == ActionKind::RestartServer {
            // A restart procedure is in flight from its failover (or the restart itself) until its incident ends.
            let in_flight = tx
                .prepare_cached(&format!(
                    "SELECT COUNT(DISTINCT s.incident_id) FROM steps s JOIN incidents i ON i.id = s.incident_id
                     WHERE s.counted AND s.server_group = $1 AND s.incident_id <> $2
                       AND s.action IN ('disable_activation', 'restart_server') AND i.state IN {OPEN}"
                ))
                .await?;
            let count: i64 = tx.query_one(&in_flight, &[&group, &incident]).await?.get(0);
            history.group_in_flight = count as u32;
        }
    }
    Ok(history)
}

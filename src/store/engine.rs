//! The engine's side of the store: the incidents to drive, their journal of steps, throttle history, endings
//! and the notification outbox.

use rusqlite::{params, OptionalExtension, Transaction};

use super::views::{pause_reason, silence_over};
use super::{now_ms, Result, Silence, Sqlite, StoreError};
use crate::domain::{HealthSet, Monitor, ServerName};
use crate::incident::{ActionKind, Outcome, State};
use crate::journal::{Action, Done, Ending, Facts, Report};
use crate::ma::RecoveryAction;
use crate::safety::Throttle;
use crate::safety::{self, History};

/// An incident as the engine loads it.
#[derive(Debug, Clone)]
pub struct IncidentRecord {
    pub id: String,
    pub state: State,
    pub dry_run: bool,
    /// The alert named no monitor and `Get-ServerHealth` found it (`facts.monitor` stays empty for the planner).
    pub monitor_found: bool,
    pub facts: Facts,
    pub resolved_at: Option<i64>,
}

/// One journal step.
#[derive(Debug, Clone)]
pub struct StepRecord {
    pub seq: i64,
    pub started_at: i64,
    pub done: Done,
    pub finished: bool,
}

/// A journal step as both backends keep it, column by column: what [`StepRecord`] is read from.
pub(super) struct StoredStep {
    pub seq: i64,
    pub action: String,
    pub server: ServerName,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub outcome: Option<String>,
    pub detail: String,
    /// JSON: the unhealthy monitors a read found.
    pub unhealthy: Option<String>,
    pub already_in_place: bool,
    /// JSON: Managed Availability's recovery actions an `ma_history` step found.
    pub ma_actions: Option<String>,
}

impl From<StoredStep> for StepRecord {
    fn from(step: StoredStep) -> StepRecord {
        StepRecord {
            seq: step.seq,
            started_at: step.started_at,
            finished: step.finished_at.is_some(),
            done: Done {
                action: ActionKind::parse(&step.action).unwrap_or(ActionKind::Wait),
                server: step.server,
                outcome: step
                    .outcome
                    .as_deref()
                    .and_then(Outcome::parse)
                    .unwrap_or(Outcome::Interrupted),
                detail: step.detail,
                unhealthy: step
                    .unhealthy
                    .and_then(|json| serde_json::from_str::<Vec<String>>(&json).ok())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|m| Monitor::parse(m).ok())
                    .collect(),
                already_in_place: step.already_in_place,
                ma_actions: step
                    .ma_actions
                    .and_then(|json| serde_json::from_str(&json).ok())
                    .unwrap_or_default(),
            },
        }
    }
}

/// The JSON both backends keep a step's unhealthy monitors as; `None` for none.
pub(super) fn unhealthy_json(report: &Report) -> Option<String> {
    (!report.unhealthy.is_empty())
        .then(|| serde_json::to_string(&report.unhealthy).expect("names serialise"))
}

/// The key of the one open incident per server, health set and monitor, once `Get-ServerHealth` named the monitor.
pub(super) fn monitor_key(server: &str, health_set: &str, monitor: &Monitor) -> String {
    format!(
        "{}|{}|{}",
        server,
        health_set.to_ascii_lowercase(),
        monitor.as_str().to_ascii_lowercase()
    )
}

/// An incident that is not final, and the server it needs to itself.
#[derive(Debug, Clone)]
pub struct Runnable {
    pub id: String,
    pub server: ServerName,
}

/// A step about to run, with the throttles that govern it.
pub struct NewStep<'a> {
    pub action: &'a Action,
    pub command: String,
    pub group: Option<String>,
    /// The step's own throttle: the step counts against it when it runs.
    pub throttle: Option<Throttle>,
    /// Throttles of a later step this one commits to (a failover commits to its restart): checked, not counted.
    pub commits_to: Vec<(ActionKind, Throttle)>,
}

/// Whether a step may run.
#[derive(Debug)]
pub enum Started {
    Run {
        seq: i64,
    },
    /// A throttle forbade it; the step is recorded `throttled` with this reason.
    Throttled(String),
    /// A change while automation is paused (by this instance or another): nothing is journaled.
    Paused,
    /// A change on a server a silence covers: nothing is journaled.
    Silenced(Silence),
}

/// An email to queue with the incident's ending.
pub struct NewNotification {
    pub kind: String,
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub message: Vec<u8>,
    /// Held back by `safety.escalation_min_interval`: recorded on the incident, not sent, and counted in the next
    /// escalation for the same server, health set and monitor.
    pub held: bool,
}

/// Earlier escalations for one server, health set and monitor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EscalationHistory {
    /// When the last one that was (or is being) sent was queued.
    pub last_sent_at: Option<i64>,
    /// How many were held back since then.
    pub held_since: u32,
}

/// A notification waiting for delivery.
#[derive(Debug, Clone)]
pub struct NotificationRow {
    pub id: String,
    pub incident_id: String,
    pub from: String,
    pub to: Vec<String>,
    pub message: Vec<u8>,
    pub attempts: i64,
}

/// The states of an incident that is not final, as SQL: `awaiting_approval` holds its servers and counts toward
/// the restarts in flight like the others, but only the first three are driven.
macro_rules! open_states {
    () => {
        "('queued', 'running', 'waiting', 'awaiting_approval')"
    };
}

/// [`open_states`] for statements built with `format!`, on either backend.
pub(super) const OPEN_STATES: &str = open_states!();

fn parse_server(raw: String) -> rusqlite::Result<ServerName> {
    ServerName::parse(&raw).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

impl Sqlite {
    /// Incidents that are not final (or just the one named, if it is not final), oldest first.
    pub async fn runnable(&self, only: Option<String>) -> Result<Vec<Runnable>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT id, server FROM incidents WHERE state IN ('queued', 'running', 'waiting') AND (?1 IS NULL OR id = ?1) ORDER BY id")?;
            let rows =
                stmt.query_map([only], |row| Ok(Runnable { id: row.get(0)?, server: parse_server(row.get(1)?)? }))?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    /// How many incidents are driven or waiting to be.
    pub async fn open_incidents(&self) -> Result<usize> {
        self.read(|conn| {
            Ok(conn.query_row(
                "SELECT COUNT(*) FROM incidents WHERE state IN ('queued', 'running', 'waiting')",
                [],
                |r| r.get::<_, i64>(0),
            )? as usize)
        })
        .await
    }

    /// One instance holds no claims: nothing to give up.
    pub async fn release_claims(&self) -> Result<()> {
        Ok(())
    }

    /// An incident with its journal.
    pub async fn load(&self, id: String) -> Result<(IncidentRecord, Vec<StepRecord>)> {
        self.read(move |conn| {
            let incident = conn
                .query_row(
                    "SELECT id, state, dry_run, server, health_set, CASE WHEN monitor_found THEN NULL ELSE monitor END, mailbox_hint, resolved_at, monitor_found FROM incidents WHERE id = ?1",
                    [&id],
                    |row| {
                        let state: String = row.get(1)?;
                        let health_set: String = row.get(4)?;
                        Ok(IncidentRecord {
                            id: row.get(0)?,
                            state: State::parse(&state).unwrap_or(State::Blocked),
                            dry_run: row.get(2)?,
                            facts: Facts {
                                server: parse_server(row.get(3)?)?,
                                health_set: HealthSet::parse(&health_set).map_err(|e| rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e)))?,
                                monitor: row.get::<_, Option<String>>(5)?.and_then(|m| Monitor::parse(&m).ok()),
                                mailbox_hint: row.get::<_, Option<String>>(6)?.map(parse_server).transpose()?,
                            },
                            resolved_at: row.get(7)?,
                            monitor_found: row.get(8)?,
                        })
                    },
                )
                .optional()?
                .ok_or_else(|| StoreError::NotFound(format!("incident {id}")))?;
            let mut stmt = conn.prepare_cached("SELECT seq, action, server, started_at, finished_at, outcome, detail, unhealthy, already_in_place, ma_actions FROM steps WHERE incident_id = ?1 ORDER BY seq")?;
            let steps = stmt
                .query_map([&id], |row| {
                    Ok(StepRecord::from(StoredStep {
                        seq: row.get(0)?,
                        action: row.get(1)?,
                        server: parse_server(row.get(2)?)?,
                        started_at: row.get(3)?,
                        finished_at: row.get(4)?,
                        outcome: row.get(5)?,
                        detail: row.get(6)?,
                        unhealthy: row.get(7)?,
                        already_in_place: row.get(8)?,
                        ma_actions: row.get(9)?,
                    }))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((incident, steps))
        })
        .await
    }

    pub async fn set_state(&self, id: String, state: State, reason: Option<String>) -> Result<()> {
        self.write(move |tx| {
            tx.prepare_cached(
                "UPDATE incidents SET state = ?2, reason = ?3, updated_at = ?4 WHERE id = ?1",
            )?
            .execute(params![id, state.as_str(), reason, now_ms()])?;
            Ok(())
        })
        .await
    }

    /// Records the monitor learnt from `Get-ServerHealth`, and lets later alerts naming it attach to this incident.
    /// The planner still sees the incident as the alert made it (no monitor), so it replays the discovery step.
    pub async fn set_monitor(&self, id: String, monitor: Monitor) -> Result<()> {
        self.write(move |tx| {
            let (server, health_set): (String, String) = tx.prepare_cached("SELECT server, health_set FROM incidents WHERE id = ?1")?.query_row([&id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let key = monitor_key(&server, &health_set, &monitor);
            let taken: bool = tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM incidents WHERE open_key = ?1 AND id != ?2)")?.query_row(params![key, id], |r| r.get(0))?;
            let sql = if taken {
                "UPDATE incidents SET monitor = ?2, monitor_found = 1, updated_at = ?4 WHERE id = ?1"
            } else {
                "UPDATE incidents SET monitor = ?2, monitor_found = 1, open_key = CASE WHEN open_key IS NULL THEN NULL ELSE ?3 END, updated_at = ?4 WHERE id = ?1"
            };
            tx.execute(sql, params![id, monitor.as_str(), key, now_ms()])?;
            Ok(())
        })
        .await
    }

    /// Journals a step as started, unless a throttle forbids it: then it is journaled `throttled` and not run.
    /// The throttle history is read in the same transaction, so concurrent incidents cannot both pass one limit; so
    /// are the pause switch and the silences, for a change.
    pub async fn start_step(&self, id: String, step: NewStep<'_>) -> Result<Started> {
        let action = step.action.clone();
        let (command, group, throttle, commits_to) =
            (step.command, step.group, step.throttle, step.commits_to);
        self.write(move |tx| {
            let now = now_ms();
            if action.kind().is_mutating() {
                if pause_reason(tx)?.is_some() {
                    return Ok(Started::Paused);
                }
                if let Some(silence) = silence_over(tx, action.server().as_str(), now)? {
                    return Ok(Started::Silenced(silence));
                }
            }
            let counted = throttle.is_some();
            let rules = throttle.iter().map(|rule| (action.kind(), rule, String::new())).chain(
                commits_to.iter().map(|(kind, rule)| {
                    (
                        *kind,
                        rule,
                        format!(
                            "; {} was not started, since the {kind} it leads to would be refused",
                            action.kind()
                        ),
                    )
                }),
            );
            if let Some(reason) = refusal(tx, &id, action.server(), group.as_deref(), rules, now)? {
                record_throttled(tx, &id, &action, &command, group.as_deref(), &reason, now)?;
                return Ok(Started::Throttled(reason));
            }
            let seq = insert_step(
                tx,
                &id,
                (action.kind(), action.server()),
                &command,
                group.as_deref(),
                counted,
                now,
            )?;
            Ok(Started::Run { seq })
        })
        .await
    }

    /// Journals a step that did not run (dry run), finished at once.
    pub async fn skip_step(
        &self,
        id: String,
        action: Action,
        command: String,
        outcome: Outcome,
        detail: String,
    ) -> Result<()> {
        self.write(move |tx| {
            let now = now_ms();
            let seq =
                insert_step(tx, &id, (action.kind(), action.server()), &command, None, false, now)?;
            finish_at_once(tx, &id, seq, outcome, &detail, now)
        })
        .await
    }

    /// Records a step's result; the command text is replaced when the executor reports the exact script it ran.
    pub async fn finish_step(&self, id: String, seq: i64, report: Report) -> Result<()> {
        self.write(move |tx| {
            let unhealthy = unhealthy_json(&report);
            tx.prepare_cached("UPDATE steps SET finished_at = ?3, outcome = ?4, detail = ?5, unhealthy = ?6, command = COALESCE(?7, command), already_in_place = ?8 WHERE incident_id = ?1 AND seq = ?2")?.execute(params![id, seq, now_ms(), report.outcome.as_str(), bounded(&report.detail), unhealthy, report.command, report.already_in_place],
            )?;
            tx.prepare_cached("UPDATE incidents SET updated_at = ?2 WHERE id = ?1")?.execute(params![id, now_ms()])?;
            if !report.ma_actions.is_empty() {
                record_ma_actions(tx, &id, seq, &report.ma_actions)?;
            }
            Ok(())
        })
        .await
    }

    /// Ends an incident, frees its key for new incidents and its servers, and queues its notification in the same
    /// transaction. A step still unfinished (the ending was forced while it ran) is recorded `interrupted` first.
    pub async fn finish_incident(
        &self,
        id: String,
        ending: Ending,
        notification: Option<NewNotification>,
    ) -> Result<()> {
        self.write(move |tx| {
            let now = now_ms();
            tx.prepare_cached("UPDATE steps SET finished_at = ?2, outcome = 'interrupted', detail = ?3 WHERE incident_id = ?1 AND finished_at IS NULL")?
                .execute(params![id, now, INTERRUPTED_BY_ENDING])?;
            tx.prepare_cached("DELETE FROM server_locks WHERE incident_id = ?1")?.execute([&id])?;
            tx.prepare_cached("UPDATE incidents SET state = ?2, reason = ?3, open_key = NULL, updated_at = ?4 WHERE id = ?1")?.execute(params![
                id,
                ending.state.as_str(),
                ending.reason,
                now
            ])?;
            if let Some(n) = notification {
                queue_notification(tx, &id, n, now)?;
            }
            Ok(())
        })
        .await
    }

    /// The escalations already queued for the same server, health set and monitor as this incident.
    pub async fn escalation_history(&self, incident_id: String) -> Result<EscalationHistory> {
        self.read(move |conn| {
            const SAME_KEY: &str = "FROM notifications n JOIN incidents i ON i.id = n.incident_id, incidents me
                 WHERE me.id = ?1 AND n.kind = 'escalation' AND i.server = me.server
                   AND lower(i.health_set) = lower(me.health_set) AND lower(COALESCE(i.monitor, '')) = lower(COALESCE(me.monitor, ''))";
            let last_sent_at: Option<i64> =
                conn.query_row(&format!("SELECT MAX(n.created_at) {SAME_KEY} AND n.status IN ('pending', 'sent')"), [&incident_id], |r| r.get(0))?;
            let held_since: u32 = conn.query_row(
                &format!("SELECT COUNT(*) {SAME_KEY} AND n.status = 'held' AND n.created_at > COALESCE(?2, 0)"),
                params![incident_id, last_sent_at],
                |r| r.get(0),
            )?;
            Ok(EscalationHistory { last_sent_at, held_since })
        })
        .await
    }

    /// Open incidents not updated for `bound_ms` and not yet reported as making no progress, with when they last
    /// moved.
    pub async fn stalled(&self, bound_ms: i64) -> Result<Vec<(String, i64)>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, updated_at FROM incidents WHERE state IN ('queued', 'running', 'waiting') AND stall_notified = 0 AND updated_at < ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([now_ms() - bound_ms], |row| Ok((row.get(0)?, row.get(1)?)))?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    /// Queues the notice that an incident makes no progress, and marks it reported, in one transaction.
    pub async fn notify_stalled(&self, id: String, notification: NewNotification) -> Result<()> {
        self.write(move |tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE incidents SET stall_notified = 1 WHERE id = ?1 AND stall_notified = 0",
                )?
                .execute([&id])?;
            if changed == 1 {
                queue_notification(tx, &id, notification, now_ms())?;
            }
            Ok(())
        })
        .await
    }

    /// Every server held by an incident that is not final, and by which incident.
    pub async fn server_locks(&self) -> Result<Vec<(ServerName, String)>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(concat!(
                "SELECT l.server, l.incident_id FROM server_locks l JOIN incidents i ON i.id = l.incident_id WHERE i.state IN ",
                open_states!()
            ))?;
            let rows = stmt.query_map([], |row| Ok((parse_server(row.get(0)?)?, row.get(1)?)))?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    /// Takes `server` for `incident` until the incident ends, unless another incident that is not final holds it:
    /// then its id. Holding it already is taking it.
    pub async fn lock_server(
        &self,
        incident: String,
        server: ServerName,
    ) -> Result<Option<String>> {
        self.write(move |tx| {
            let holder: Option<String> = tx
                .prepare_cached(
                    concat!(
                        "SELECT l.incident_id FROM server_locks l JOIN incidents i ON i.id = l.incident_id WHERE l.server = ?1 AND i.state IN ",
                        open_states!()
                    ),
                )?
                .query_row([server.as_str()], |r| r.get(0))
                .optional()?;
            match holder {
                Some(holder) if holder != incident => Ok(Some(holder)),
                Some(_) => Ok(None),
                None => {
                    tx.prepare_cached("INSERT INTO server_locks (server, incident_id, since) VALUES (?1, ?2, ?3) ON CONFLICT(server) DO UPDATE SET incident_id = excluded.incident_id, since = excluded.since")?
                        .execute(params![server.as_str(), incident, now_ms()])?;
                    Ok(None)
                }
            }
        })
        .await
    }

    /// Notifications due for a delivery attempt, and when the next one falls due.
    pub async fn due_notifications(&self) -> Result<(Vec<NotificationRow>, Option<i64>)> {
        self.read(|conn| {
            let now = now_ms();
            let mut stmt = conn.prepare_cached(
                "SELECT id, incident_id, mail_from, recipients, message, attempts FROM notifications WHERE status = 'pending' AND next_attempt_at <= ?1 ORDER BY next_attempt_at LIMIT 100",
            )?;
            let due = stmt
                .query_map([now], |row| {
                    Ok(NotificationRow {
                        id: row.get(0)?,
                        incident_id: row.get(1)?,
                        from: row.get(2)?,
                        to: serde_json::from_str(&row.get::<_, String>(3)?).unwrap_or_default(),
                        message: row.get(4)?,
                        attempts: row.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let next = conn.query_row("SELECT MIN(next_attempt_at) FROM notifications WHERE status = 'pending' AND next_attempt_at > ?1", [now], |r| r.get(0))?;
            Ok((due, next))
        })
        .await
    }

    /// Records the attempt the transport accepted. `last_error` keeps the error of the last failed attempt, if any,
    /// so an operator can see why the email came late. Only a pending notification changes: recording twice counts
    /// one attempt. A delivered approval request's body is dropped: it holds its link's token, which the store
    /// otherwise keeps only as a hash.
    pub async fn notification_sent(&self, id: String) -> Result<()> {
        self.write(move |tx| {
            let now = now_ms();
            tx.prepare_cached(
                "UPDATE notifications SET status = 'sent', attempts = attempts + 1, sent_at = ?2,
                 message = CASE WHEN kind = 'approval_request' THEN x'' ELSE message END WHERE id = ?1 AND status = 'pending'",
            )?
            .execute(params![id, now])?;
            Ok(())
        })
        .await
    }

    /// Records a failed attempt, its error (as the transport put it, with the server's answer), and when to try next.
    pub async fn notification_failed(
        &self,
        id: String,
        error: String,
        next_attempt_at: i64,
    ) -> Result<()> {
        self.write(move |tx| {
            tx.prepare_cached("UPDATE notifications SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3 WHERE id = ?1 AND status = 'pending'")?
                .execute(params![id, bounded(&error), next_attempt_at])?;
            Ok(())
        })
        .await
    }
}

pub(super) fn queue_notification(
    tx: &Transaction,
    incident: &str,
    n: NewNotification,
    now: i64,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO notifications (id, incident_id, kind, recipients, subject, message, status, next_attempt_at, created_at, mail_from)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?9, ?7, ?7, ?8)",
    )?
    .execute(params![
        super::new_id(),
        incident,
        n.kind,
        serde_json::to_string(&n.to).expect("addresses serialise"),
        n.subject,
        n.message,
        now,
        n.from,
        if n.held { "held" } else { "pending" }
    ])?;
    Ok(())
}

/// The detail of a step that was still running when its incident was ended from outside the runbook.
const INTERRUPTED_BY_ENDING: &str =
    "the incident ended while this step ran; its result was not recorded";

fn next_seq(tx: &Transaction, id: &str) -> Result<i64> {
    Ok(tx
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) + 1 FROM steps WHERE incident_id = ?1")?
        .query_row([id], |r| r.get(0))?)
}

/// Journals a step as started (`kind` on `server`) and moves the incident to `running` (`waiting` for a wait).
pub(super) fn insert_step(
    tx: &Transaction,
    id: &str,
    step: (ActionKind, &ServerName),
    command: &str,
    group: Option<&str>,
    counted: bool,
    now: i64,
) -> Result<i64> {
    let (kind, server) = step;
    let seq = next_seq(tx, id)?;
    tx.prepare_cached(
        "INSERT INTO steps (incident_id, seq, action, server, server_group, command, counted, started_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![id, seq, kind.as_str(), server.as_str(), group, command, counted, now])?;
    let state = if kind == ActionKind::Wait { State::Waiting } else { State::Running };
    tx.prepare_cached("UPDATE incidents SET state = ?2, updated_at = ?3 WHERE id = ?1")?
        .execute(params![id, state.as_str(), now])?;
    Ok(seq)
}

/// Keeps what an `ma_history` step found: on the step, and once each for the throttles.
fn record_ma_actions(
    tx: &Transaction,
    id: &str,
    seq: i64,
    actions: &[RecoveryAction],
) -> Result<()> {
    tx.prepare_cached("UPDATE steps SET ma_actions = ?3 WHERE incident_id = ?1 AND seq = ?2")?
        .execute(params![
            id,
            seq,
            serde_json::to_string(actions).expect("recovery actions serialise")
        ])?;
    let (server, group): (String, Option<String>) = tx
        .prepare_cached(
            "SELECT server, server_group FROM steps WHERE incident_id = ?1 AND seq = ?2",
        )?
        .query_row(params![id, seq], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO ma_actions (server, server_group, kind, action_id, resource, requestor, ended_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for action in actions {
        if let Some(kind) = action.counts_as() {
            insert.execute(params![
                server,
                group,
                kind.as_str(),
                action.id,
                action.resource,
                action.requestor,
                action.ended_at.timestamp_millis()
            ])?;
        }
    }
    Ok(())
}

/// The last time and the count since `since` of runs of `kind`: the responder's own, then Managed Availability's,
/// on one server (`column` = `server`) or in one group (`server_group`).
fn counted(
    tx: &Transaction,
    column: &str,
    kind: ActionKind,
    value: &str,
    since: i64,
) -> Result<(Option<i64>, u32, u32)> {
    let own = format!("SELECT MAX(started_at), COUNT(*) FROM steps WHERE counted = 1 AND action = ?1 AND {column} = ?2 AND started_at > ?3");
    let theirs = format!("SELECT MAX(ended_at), COUNT(*) FROM ma_actions WHERE kind = ?1 AND {column} = ?2 AND ended_at > ?3");
    let read = |sql: &str| -> Result<(Option<i64>, u32)> {
        Ok(tx.prepare_cached(sql)?.query_row(params![kind.as_str(), value, since], |r| {
            Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, u32>(1)?))
        })?)
    };
    let ((own_last, own_count), (their_last, their_count)) = (read(&own)?, read(&theirs)?);
    Ok((own_last.max(their_last), own_count + their_count, their_count))
}

/// The first of `rules` (an action kind, its throttle, and what a refusal means besides) that refuses a step on
/// `server` now, as its reason. Read in the transaction that journals the step, so that concurrent incidents
/// cannot both pass one limit.
pub(super) fn refusal<'r>(
    tx: &Transaction,
    incident: &str,
    server: &ServerName,
    group: Option<&str>,
    rules: impl IntoIterator<Item = (ActionKind, &'r Throttle, String)>,
    now: i64,
) -> Result<Option<String>> {
    for (kind, rule, consequence) in rules {
        let history = history(tx, incident, kind, server, group, now)?;
        if let Err(reason) = safety::check(
            kind,
            rule,
            server.as_str(),
            group.unwrap_or(server.as_str()),
            &history,
            now,
        ) {
            return Ok(Some(reason + &consequence));
        }
    }
    Ok(None)
}

/// Journals a step a throttle refused: finished at once, `throttled`, not counted.
pub(super) fn record_throttled(
    tx: &Transaction,
    id: &str,
    action: &Action,
    command: &str,
    group: Option<&str>,
    reason: &str,
    now: i64,
) -> Result<()> {
    let seq = insert_step(tx, id, (action.kind(), action.server()), command, group, false, now)?;
    finish_at_once(tx, id, seq, Outcome::Throttled, reason, now)
}

/// Records the result of a step that took no time (one that did not run, a request, a decision).
pub(super) fn finish_at_once(
    tx: &Transaction,
    id: &str,
    seq: i64,
    outcome: Outcome,
    detail: &str,
    now: i64,
) -> Result<()> {
    tx.prepare_cached("UPDATE steps SET finished_at = ?3, outcome = ?4, detail = ?5 WHERE incident_id = ?1 AND seq = ?2")?.execute(params![
        id,
        seq,
        now,
        outcome.as_str(),
        detail
    ])?;
    Ok(())
}

fn history(
    tx: &Transaction,
    incident: &str,
    kind: ActionKind,
    server: &ServerName,
    group: Option<&str>,
    now: i64,
) -> Result<History> {
    let since = safety::window_start(now);
    let (server_last, server_today, by_ma) = counted(tx, "server", kind, server.as_str(), since)?;
    let mut history =
        History { server_last, server_today, managed_availability: by_ma, ..History::default() };
    if let Some(group) = group {
        let (group_last, group_today, by_ma) = counted(tx, "server_group", kind, group, since)?;
        (history.group_last, history.group_today) = (group_last, group_today);
        history.managed_availability = history.managed_availability.max(by_ma);
        if kind == ActionKind::RestartServer {
            // A restart procedure is in flight from its failover (or the restart itself) until its incident ends.
            history.group_in_flight = tx
                .prepare_cached(concat!(
                    "SELECT COUNT(DISTINCT s.incident_id) FROM steps s JOIN incidents i ON i.id = s.incident_id
                         WHERE s.counted = 1 AND s.server_group = ?1 AND s.incident_id != ?2 AND s.action IN ('disable_activation', 'restart_server')
                           AND i.state IN ",
                    open_states!()
                ))?
                .query_row(params![group, incident], |r| r.get(0))?;
        }
    }
    Ok(history)
}

/// Keeps step details and errors to a size a page and an email can show.
pub(super) fn bounded(text: &str) -> String {
    const MAX: usize = 4000;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}... [truncated]", &text[..cut]),
        None => text.to_owned(),
    }
}

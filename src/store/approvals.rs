//! Approvals in the store: the request (throttles checked, the `approval` step, the token's hash and the email, in
//! one transaction), the one function that records a decision, and what the link page and the incident show.
//!
//! Invariant: a decision is recorded only for an incident that is `awaiting_approval`, on its one undecided
//! approval, before its deadline (or as its expiry). The `UPDATE ... WHERE decided_at IS NULL` makes the first
//! decision win, whoever comes second.

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use super::engine::{finish_at_once, insert_step, queue_notification, record_throttled, refusal};
use super::views::Stored;
use super::{new_id, now_ms, rfc3339, IncidentView, NewNotification, Result, Sqlite, StoreError};
use crate::approval::Via;
use crate::domain::ServerName;
use crate::incident::{ActionKind, Outcome, State};
use crate::journal::Action;
use crate::safety::Throttle;

/// An approval to ask for.
pub struct NewApproval {
    /// The steps it covers; the first is the one that would run next, journaled `throttled` when a throttle refuses.
    pub covers: Vec<Action>,
    /// The first step's own command, for its journal entry should it be refused.
    pub first_command: String,
    /// Every covered step's command, one per line: what the person approves.
    pub command: String,
    pub group: Option<String>,
    /// The throttles the covered steps must pass now, with what a refusal means besides.
    pub rules: Vec<(ActionKind, Throttle, String)>,
    pub token_sha256: [u8; 32],
    pub expires_at: i64,
    pub detail: String,
    pub notification: NewNotification,
}

/// What asking came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Requested {
    Asked,
    /// A throttle refused the first covered step: it is journaled `throttled` and nobody is asked.
    Throttled(String),
}

/// Which approval a decision is for.
pub enum Target {
    /// The incident's undecided approval (the page, the API, the CLI, the timeout).
    Incident(String),
    /// The approval whose link carries this token (by its SHA-256).
    Token([u8; 32]),
}

/// What deciding came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Decided {
    Recorded {
        incident_id: String,
    },
    /// Nothing waits for a decision there (decided already, expired, or not asked): why.
    Nothing(String),
}

/// A decision to record.
pub struct NewDecision {
    /// `approved`, `denied` or `expired`.
    pub outcome: Outcome,
    /// `None` for an expiry.
    pub via: Option<Via>,
    pub reason: Option<String>,
    /// The journal's words for it.
    pub detail: String,
}

/// An incident's latest approval, as the API and the pages show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApprovalView {
    pub server: String,
    /// The actions it covers.
    pub actions: Vec<String>,
    /// Their commands, one per line.
    pub command: String,
    pub requested_at: String,
    pub expires_at: String,
    /// `pending`, `approved`, `denied` or `expired`.
    pub status: String,
    pub decided_at: Option<String>,
    /// `link`, `page` or `api`; empty for an expiry.
    pub decided_via: Option<String>,
    pub reason: Option<String>,
}

/// The columns [`approval_view`] reads, in its order; the same on both backends.
pub(crate) const APPROVAL_COLUMNS: &str =
    "server, actions, command, requested_at, expires_at, decision, decided_at, decided_via, reason";

/// An approval as the API shows it (`pending` until decided), from [`APPROVAL_COLUMNS`].
pub(crate) fn approval_view<R: Stored>(row: &R) -> std::result::Result<ApprovalView, R::Error> {
    Ok(ApprovalView {
        server: row.at(0)?,
        actions: serde_json::from_str(&row.at::<String>(1)?).unwrap_or_default(),
        command: row.at(2)?,
        requested_at: rfc3339(row.at(3)?),
        expires_at: rfc3339(row.at(4)?),
        status: row.at::<Option<String>>(5)?.unwrap_or_else(|| "pending".to_owned()),
        decided_at: row.at::<Option<i64>>(6)?.map(rfc3339),
        decided_via: row.at(7)?,
        reason: row.at(8)?,
    })
}

/// An incident's latest approval, if it was ever asked for one.
pub(super) fn latest(conn: &Connection, incident_id: &str) -> Result<Option<ApprovalView>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE incident_id = ?1 ORDER BY requested_at DESC, id DESC LIMIT 1"
        ))?
        .query_row([incident_id], |row| approval_view(row))
        .optional()?)
}

impl Sqlite {
    /// Asks for an approval: unless a throttle refuses the covered steps now, journals the `approval` step
    /// `requested`, keeps the token's hash and deadline, sets the incident `awaiting_approval` and queues the email,
    /// all in one transaction.
    pub async fn request_approval(&self, id: String, approval: NewApproval) -> Result<Requested> {
        self.write(move |tx| {
            let now = now_ms();
            let first = &approval.covers[0];
            let server = first.server().clone();
            let group = approval.group.as_deref();
            let rules = approval.rules.iter().map(|(kind, rule, consequence)| (*kind, rule, consequence.clone()));
            if let Some(reason) = refusal(tx, &id, &server, group, rules, now)? {
                record_throttled(tx, &id, first, &approval.first_command, group, &reason, now)?;
                return Ok(Requested::Throttled(reason));
            }
            let seq = insert_step(tx, &id, (ActionKind::Approval, &server), &approval.command, group, false, now)?;
            finish_at_once(tx, &id, seq, Outcome::Requested, &approval.detail, now)?;
            let actions: Vec<&str> = approval.covers.iter().map(|a| a.kind().as_str()).collect();
            tx.prepare_cached(
                "INSERT INTO approvals (id, incident_id, seq, token_sha256, server, actions, command, requested_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                new_id(),
                id,
                seq,
                &approval.token_sha256[..],
                server.as_str(),
                serde_json::to_string(&actions).expect("names serialise"),
                approval.command,
                now,
                approval.expires_at
            ])?;
            set_state(tx, &id, State::AwaitingApproval, now)?;
            queue_notification(tx, &id, approval.notification, now)?;
            Ok(Requested::Asked)
        })
        .await
    }

    /// Records a decision on an approval: the one function every way of deciding uses. It journals an `approval`
    /// step with the decision and queues the incident for the engine, in one transaction; the first decision wins.
    pub async fn decide(&self, target: Target, decision: NewDecision) -> Result<Decided> {
        self.write(move |tx| {
            let now = now_ms();
            let Some(pending) = pending(tx, &target)? else {
                return Ok(Decided::Nothing(match &target {
                    Target::Token(_) => "this approval link is void: its approval was decided, expired, or never existed".to_owned(),
                    Target::Incident(id) => {
                        let state: String = tx
                            .prepare_cached("SELECT state FROM incidents WHERE id = ?1")?
                            .query_row([id], |r| r.get(0))
                            .optional()?
                            .ok_or_else(|| StoreError::NotFound(format!("incident {id}")))?;
                        format!("incident {id} is {state}, not awaiting_approval: there is nothing to decide")
                    }
                }));
            };
            if pending.state != State::AwaitingApproval.as_str() {
                return Ok(Decided::Nothing(format!(
                    "incident {} is {}, not awaiting_approval: there is nothing to decide",
                    pending.incident_id, pending.state
                )));
            }
            if decision.outcome != Outcome::Expired && pending.expires_at <= now {
                return Ok(Decided::Nothing(format!("the approval expired at {}; it can no longer be given", rfc3339(pending.expires_at))));
            }
            let changed = tx
                .prepare_cached("UPDATE approvals SET decided_at = ?2, decision = ?3, decided_via = ?4, reason = ?5 WHERE id = ?1 AND decided_at IS NULL")?
                .execute(params![pending.id, now, decision.outcome.as_str(), decision.via.map(Via::as_str), decision.reason])?;
            if changed == 0 {
                return Ok(Decided::Nothing("the approval was decided already".to_owned()));
            }
            let server = ServerName::parse(&pending.server).map_err(|e| StoreError::Conflict(format!("approval server: {e}")))?;
            let seq = insert_step(tx, &pending.incident_id, (ActionKind::Approval, &server), &pending.command, None, false, now)?;
            finish_at_once(tx, &pending.incident_id, seq, decision.outcome, &decision.detail, now)?;
            // Queued: the engine drives it again (after a pause, once resumed).
            set_state(tx, &pending.incident_id, State::Queued, now)?;
            Ok(Decided::Recorded { incident_id: pending.incident_id })
        })
        .await
    }

    /// The incident and its approval behind a link's token, while that approval can still be decided.
    pub async fn approval_for_token(
        &self,
        token_sha256: [u8; 32],
    ) -> Result<Option<(IncidentView, ApprovalView)>> {
        self.read(move |conn| {
            let incident_id: Option<String> = conn
                .prepare_cached(
                    "SELECT a.incident_id FROM approvals a JOIN incidents i ON i.id = a.incident_id
                     WHERE a.token_sha256 = ?1 AND a.decided_at IS NULL AND a.expires_at > ?2 AND i.state = 'awaiting_approval'",
                )?
                .query_row(params![&token_sha256[..], now_ms()], |r| r.get(0))
                .optional()?;
            let Some(incident_id) = incident_id else { return Ok(None) };
            let incident = super::views::incident(conn, &incident_id)?;
            let approval = latest(conn, &incident_id)?.ok_or_else(|| StoreError::NotFound(format!("the approval of incident {incident_id}")))?;
            Ok(Some((incident, approval)))
        })
        .await
    }

    /// Incidents whose approval passed its deadline undecided.
    pub async fn expired_approvals(&self) -> Result<Vec<String>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT a.incident_id FROM approvals a JOIN incidents i ON i.id = a.incident_id
                 WHERE a.decided_at IS NULL AND a.expires_at <= ?1 AND i.state = 'awaiting_approval' ORDER BY a.expires_at",
            )?;
            let rows = stmt.query_map([now_ms()], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(rows)
        })
        .await
    }
}

struct Pending {
    id: String,
    incident_id: String,
    state: String,
    server: String,
    command: String,
    expires_at: i64,
}

fn pending(tx: &Transaction, target: &Target) -> Result<Option<Pending>> {
    const COLUMNS: &str = "SELECT a.id, a.incident_id, i.state, a.server, a.command, a.expires_at FROM approvals a JOIN incidents i ON i.id = a.incident_id";
    let row = |r: &rusqlite::Row| {
        Ok(Pending {
            id: r.get(0)?,
            incident_id: r.get(1)?,
            state: r.get(2)?,
            server: r.get(3)?,
            command: r.get(4)?,
            expires_at: r.get(5)?,
        })
    };
    let found = match target {
        Target::Incident(id) => tx
            .prepare_cached(&format!("{COLUMNS} WHERE a.incident_id = ?1 AND a.decided_at IS NULL ORDER BY a.requested_at DESC LIMIT 1"))?
            .query_row([id], row),
        Target::Token(hash) => tx.prepare_cached(&format!("{COLUMNS} WHERE a.token_sha256 = ?1 AND a.decided_at IS NULL"))?.query_row([&hash[..]], row),
    };
    Ok(found.optional()?)
}

fn set_state(tx: &Transaction, id: &str, state: State, now: i64) -> Result<()> {
    tx.prepare_cached("UPDATE incidents SET state = ?2, updated_at = ?3 WHERE id = ?1")?
        .execute(params![id, state.as_str(), now])?;
    Ok(())
}

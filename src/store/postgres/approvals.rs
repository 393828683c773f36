//! Approvals on PostgreSQL: the SQLite store's `store/approvals.rs` (same calls, same answers), shared by every
//! instance.
//!
//! The request is a journal write of the instance driving the incident (fenced by its claim, throttles decided
//! under the same advisory locks as a step's). A decision may come through any instance (a link, the page, the
//! API, the timeout): it locks the incident's row, so two decisions arriving at two instances at once take turns
//! and the second finds the approval decided; and it gives up the driver's claim, so that whichever instance looks
//! first drives the incident on.

use tokio_postgres::types::ToSql;

use super::journal::{finish_at_once, journal_step, queue_notification, record_throttled, refusal};
use super::{Error, Postgres, Result};
use crate::approval::Via;
use crate::domain::ServerName;
use crate::incident::{ActionKind, Outcome, State};
use crate::store::{
    new_id, now_ms, rfc3339, ApprovalView, Decided, IncidentView, NewApproval, NewDecision,
    Requested, StoreError, Target,
};

impl Postgres {
    /// Asks for an approval: unless a throttle refuses the covered steps now, journals the `approval` step
    /// `requested`, keeps the token's hash and deadline, sets the incident `awaiting_approval` and queues the email,
    /// all in one transaction under this instance's claim.
    pub async fn request_approval(&self, id: String, approval: NewApproval) -> Result<Requested> {
        let mut client = self.client().await?;
        let tx = self.fenced(&mut client, &id).await?;
        let now = now_ms();
        let first = &approval.covers[0];
        let server = first.server();
        let group = approval.group.as_deref();
        let rules: Vec<_> = approval
            .rules
            .iter()
            .map(|(kind, rule, consequence)| (*kind, rule, consequence.clone()))
            .collect();
        if let Some(reason) = refusal(&tx, &id, server, group, &rules, now).await? {
            record_throttled(&tx, &id, first, &approval.first_command, group, &reason, now).await?;
            tx.commit().await?;
            return Ok(Requested::Throttled(reason));
        }
        let step = (ActionKind::Approval, server);
        let seq = journal_step(&tx, &id, step, &approval.command, group, false, now).await?;
        finish_at_once(&tx, &id, seq, Outcome::Requested, &approval.detail, now).await?;
        let actions: Vec<&str> = approval.covers.iter().map(|a| a.kind().as_str()).collect();
        let actions = serde_json::to_string(&actions).expect("names serialise");
        let insert = tx
            .prepare_cached(
                "INSERT INTO approvals (id, incident_id, seq, token_sha256, server, actions, command, requested_at,
                                        expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .await?;
        let token: &[u8] = &approval.token_sha256;
        let params: [&(dyn ToSql + Sync); 9] = [
            &new_id(),
            &id,
            &seq,
            &token,
            &server.as_str(),
            &actions,
            &approval.command,
            &now,
            &approval.expires_at,
        ];
        tx.execute(&insert, &params).await?;
        let waits = tx
            .prepare_cached("UPDATE incidents SET state = $2, updated_at = $3 WHERE id = $1")
            .await?;
        tx.execute(&waits, &[&id, &State::AwaitingApproval.as_str(), &now]).await?;
        queue_notification(&tx, &id, approval.notification, now).await?;
        tx.commit().await?;
        Ok(Requested::Asked)
    }

    /// Records a decision on an approval, through whichever instance it came: journals an `approval` step with
    /// the decision and queues the incident, unclaimed, for the instance that looks first; the first decision
    /// wins.
    pub async fn decide(&self, target: Target, decision: NewDecision) -> Result<Decided> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let now = now_ms();
        let found = match &target {
            Target::Incident(id) => {
                let statement =
                    tx.prepare_cached("SELECT id FROM incidents WHERE id = $1 FOR UPDATE").await?;
                if tx.query_opt(&statement, &[id]).await?.is_none() {
                    return Err(Error::NotFound(format!("incident {id}")));
                }
                let statement = tx
                    .prepare_cached(
                        "SELECT a.id, a.incident_id, i.state, a.server, a.command, a.expires_at
                         FROM approvals a JOIN incidents i ON i.id = a.incident_id
                         WHERE a.incident_id = $1 AND a.decided_at IS NULL ORDER BY a.requested_at DESC LIMIT 1",
                    )
                    .await?;
                tx.query_opt(&statement, &[id]).await?
            }
            Target::Token(hash) => {
                let statement = tx
                    .prepare_cached(
                        "SELECT a.id, a.incident_id, i.state, a.server, a.command, a.expires_at
                         FROM approvals a JOIN incidents i ON i.id = a.incident_id
                         WHERE a.token_sha256 = $1 AND a.decided_at IS NULL FOR UPDATE OF i",
                    )
                    .await?;
                tx.query_opt(&statement, &[&&hash[..]]).await?
            }
        };
        let Some(pending) = found else {
            return Ok(Decided::Nothing(match &target {
                Target::Token(_) => "this approval link is void: its approval was decided, expired, or never existed".to_owned(),
                Target::Incident(id) => {
                    let statement = tx.prepare_cached("SELECT state FROM incidents WHERE id = $1").await?;
                    let state: String = tx.query_one(&statement, &[id]).await?.get(0);
                    format!("incident {id} is {state}, not awaiting_approval: there is nothing to decide")
                }
            }));
        };
        let (approval, incident_id, state): (String, String, String) =
            (pending.get(0), pending.get(1), pending.get(2));
        let (server, command, expires_at): (String, String, i64) =
            (pending.get(3), pending.get(4), pending.get(5));
        if state != State::AwaitingApproval.as_str() {
            return Ok(Decided::Nothing(format!(
                "incident {incident_id} is {state}, not awaiting_approval: there is nothing to decide"
            )));
        }
        if decision.outcome != Outcome::Expired && expires_at <= now {
            return Ok(Decided::Nothing(format!(
                "the approval expired at {}; it can no longer be given",
                rfc3339(expires_at)
            )));
        }
        let record = tx
            .prepare_cached(
                "UPDATE approvals SET decided_at = $2, decision = $3, decided_via = $4, reason = $5
                 WHERE id = $1 AND decided_at IS NULL",
            )
            .await?;
        let via = decision.via.map(Via::as_str);
        let params: [&(dyn ToSql + Sync); 5] =
            [&approval, &now, &decision.outcome.as_str(), &via, &decision.reason];
        if tx.execute(&record, &params).await? == 0 {
            return Ok(Decided::Nothing("the approval was decided already".to_owned()));
        }
        let server = ServerName::parse(&server)
            .map_err(|e| Error::Store(StoreError::Conflict(format!("approval server: {e}"))))?;
        let step = (ActionKind::Approval, &server);
        let seq = journal_step(&tx, &incident_id, step, &command, None, false, now).await?;
        finish_at_once(&tx, &incident_id, seq, decision.outcome, &decision.detail, now).await?;
        // Queued, and free for any instance to claim: the one that heard the decision is woken at once.
        let queued = tx
            .prepare_cached(
                "UPDATE incidents SET state = $2, updated_at = $3, lease_owner = NULL, lease_until = NULL
                 WHERE id = $1",
            )
            .await?;
        tx.execute(&queued, &[&incident_id, &State::Queued.as_str(), &now]).await?;
        tx.commit().await?;
        self.claims().remove(&incident_id);
        Ok(Decided::Recorded { incident_id })
    }

    /// The incident and its approval behind a link's token, while that approval can still be decided.
    pub async fn approval_for_token(
        &self,
        token_sha256: [u8; 32],
    ) -> Result<Option<(IncidentView, ApprovalView)>> {
        let incident_id: Option<String> = {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(
                    "SELECT a.incident_id FROM approvals a JOIN incidents i ON i.id = a.incident_id
                     WHERE a.token_sha256 = $1 AND a.decided_at IS NULL AND a.expires_at > $2
                       AND i.state = 'awaiting_approval'",
                )
                .await?;
            let token: &[u8] = &token_sha256;
            client.query_opt(&statement, &[&token, &now_ms()]).await?.map(|row| row.get(0))
        };
        let Some(incident_id) = incident_id else { return Ok(None) };
        let incident = self.incident(incident_id.clone()).await?;
        let approval = incident
            .approval
            .clone()
            .ok_or_else(|| Error::NotFound(format!("the approval of incident {incident_id}")))?;
        Ok(Some((incident, approval)))
    }

    /// Incidents whose approval passed its deadline undecided.
    pub async fn expired_approvals(&self) -> Result<Vec<String>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT a.incident_id FROM approvals a JOIN incidents i ON i.id = a.incident_id
                 WHERE a.decided_at IS NULL AND a.expires_at <= $1 AND i.state = 'awaiting_approval'
                 ORDER BY a.expires_at",
            )
            .await?;
        Ok(client.query(&statement, &[&now_ms()]).await?.iter().map(|row| row.get(0)).collect())
    }
}

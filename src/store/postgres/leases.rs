//! Leases: which instance drives which incident, and the fence every journal write passes.
//!
//! An instance claims an open incident nobody holds (or whose lease ran out) for a while, and renews the lease while
//! it drives the incident. Every claim increments the incident's `lease_epoch`. A journal write runs in a
//! [`Fenced`] transaction, which first locks the incident's row and checks that the epoch and the owner are still
//! the writer's claim: an instance that stalled past its lease, while another claimed the incident, has its write
//! refused ([`Error::LostClaim`]) and writes nothing. Holding the row lock to the commit also keeps a claim from
//! taking the incident in the middle of the write.

use std::ops::Deref;
use std::time::Duration;

use deadpool_postgres::Transaction;

use super::{Error, Postgres, Result};

/// One instance's claim on one incident; `epoch` is the fencing token its writes carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub incident_id: String,
    pub instance: String,
    pub epoch: i64,
}

/// The states of an incident that an instance drives (as `Store::runnable` lists them); one awaiting approval is
/// claimed again once a decision moves it on.
macro_rules! driven_states {
    () => {
        "('queued', 'running', 'waiting')"
    };
}

/// [`driven_states`] for statements built with `format!`.
pub(super) const DRIVEN: &str = driven_states!();

fn until(now: i64, lease: Duration) -> i64 {
    now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
}

impl Postgres {
    /// Claims the oldest driven incident that nobody holds or whose lease ended by `now`, for `lease` from `now`.
    /// Incidents other instances are claiming at this moment are skipped, never waited for, so instances claiming
    /// at once get different incidents, or one of them none.
    pub async fn claim(&self, instance: &str, now: i64, lease: Duration) -> Result<Option<Claim>> {
        if instance.is_empty() {
            return Err(Error::Config("an instance claiming incidents needs a name".into()));
        }
        let client = self.client().await?;
        let statement = client
            .prepare_cached(concat!(
                "UPDATE incidents SET lease_owner = $1, lease_until = $3, lease_epoch = lease_epoch + 1
                 WHERE id = (SELECT id FROM incidents WHERE state IN ",
                driven_states!(),
                " AND (lease_until IS NULL OR lease_until <= $2)
                             ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING id, lease_epoch"
            ))
            .await?;
        let row = client.query_opt(&statement, &[&instance, &now, &until(now, lease)]).await?;
        Ok(row.map(|row| Claim {
            incident_id: row.get(0),
            instance: instance.to_owned(),
            epoch: row.get(1),
        }))
    }

    /// Extends `claim` to `lease` from `now` and returns the new end, unless the claim was lost: another instance
    /// claimed the incident since (its lease had run out), which this instance learns here. A lease that ended
    /// without anyone taking the incident over renews too: its epoch still fences every other instance out.
    pub async fn renew(&self, claim: &Claim, now: i64, lease: Duration) -> Result<i64> {
        let mut client = self.client().await?;
        let fenced = Fenced::begin(&mut client, claim).await?;
        let until = until(now, lease);
        let statement =
            fenced.prepare_cached("UPDATE incidents SET lease_until = $2 WHERE id = $1").await?;
        fenced.execute(&statement, &[&claim.incident_id, &until]).await?;
        fenced.commit().await?;
        Ok(until)
    }
}

/// A transaction in which the writer's claim on an incident was checked and the incident's row is locked: what a
/// journal write for a claimed incident runs in. Only [`Fenced::begin`] makes one, so no such write can skip the
/// check. Dropped without [`Fenced::commit`], it rolls back.
pub struct Fenced<'c> {
    tx: Transaction<'c>,
}

impl<'c> Fenced<'c> {
    /// Begins a transaction on `client`, locks the incident's row (`FOR UPDATE`) and checks that its lease epoch
    /// and owner are still `claim`'s; [`Error::LostClaim`] when they are not, [`Error::NotFound`] when the incident
    /// is gone.
    pub async fn begin(
        client: &'c mut deadpool_postgres::Client,
        claim: &Claim,
    ) -> Result<Fenced<'c>> {
        let tx = client.transaction().await?;
        let statement = tx
            .prepare_cached(
                "SELECT lease_epoch, lease_owner FROM incidents WHERE id = $1 FOR UPDATE",
            )
            .await?;
        let row = tx
            .query_opt(&statement, &[&claim.incident_id])
            .await?
            .ok_or_else(|| Error::NotFound(format!("incident {}", claim.incident_id)))?;
        let (epoch, owner): (i64, Option<String>) = (row.get(0), row.get(1));
        if epoch != claim.epoch || owner.as_deref() != Some(claim.instance.as_str()) {
            return Err(Error::LostClaim { claim: claim.clone(), holder: owner, epoch });
        }
        Ok(Fenced { tx })
    }

    pub async fn commit(self) -> Result<()> {
        Ok(self.tx.commit().await?)
    }
}

impl<'c> Deref for Fenced<'c> {
    type Target = Transaction<'c>;

    fn deref(&self) -> &Transaction<'c> {
        &self.tx
    }
}

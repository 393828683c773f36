//! What operators read and change, as `store/views.rs` has it, on PostgreSQL: so far the rejected deliveries, and
//! the silences and the pause switch, which every instance shares. A silence or a pause set through one instance is in the database, so the
//! next change any instance is about to make is checked against it.

use tokio_postgres::Row;

use super::{Error, Postgres, Result};
use crate::store::{new_id, now_ms, rfc3339, RejectedDelivery, Silence};

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

impl Postgres {
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
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {SILENCE_COLUMNS} FROM silences WHERE server = $1 AND until > $2 ORDER BY until DESC LIMIT 1"
            ))
            .await?;
        Ok(client.query_opt(&statement, &[&server, &now_ms()]).await?.as_ref().map(silence))
    }

    /// The pause switch: `Some(reason)` while automation is paused.
    pub async fn paused(&self) -> Result<Option<String>> {
        let client = self.client().await?;
        let statement =
            client.prepare_cached("SELECT value FROM settings WHERE key = 'paused'").await?;
        Ok(client.query_opt(&statement, &[]).await?.map(|row| row.get(0)))
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

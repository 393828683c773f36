//! Which alerts belong to which incidents, and the index that finds them, written behind intake.
//!
//! Intake records an alert's incident on the alert alone (`alerts.incident_id`, in the row it writes anyway). The
//! index that finds an incident's alerts (`incident_alerts`, by incident) is filled by the writer afterwards, about
//! once a second ([`LINK_EVERY`]), for every alert kept since, in incident order: a storm's alerts spread over many
//! open incidents, and linked one by one each would change a page of that index of its own in every commit, where
//! linked a second's worth at a time each incident's page is changed once.
//!
//! **Invariant:** every alert at or below `links_through` that has an incident is in `incident_alerts`, and every
//! alert above it is found through its own `incident_id`, so the view `links` (migration 8) always holds every
//! link, linked yet or not. Readers ask `links`, never `incident_alerts`. New alerts take rowids above the largest
//! there is, so the mark is kept at or below it when alerts are deleted ([`after_deleting_alerts`]).

use rusqlite::{params, Connection, Transaction};

/// How often the writer links what intake has kept since.
pub(super) const LINK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The most alerts one linking transaction takes, which bounds how long the writes behind it wait.
const LINK_AT_MOST: i64 = 50_000;

/// Whether alerts wait to be linked, as `conn` sees it.
pub(super) fn pending(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM alerts WHERE rowid > (SELECT alert_rowid FROM links_through))",
    )?
    .query_row([], |row| row.get(0))
}

/// Links up to `at_most` of the alerts kept since the last time to their incidents, in incident order, and moves
/// the mark past them. Returns how many alerts it went through. An alert whose incident is gone (pruned) is not
/// linked: there is nothing to link it to.
pub(super) fn link_pending(tx: &Transaction, at_most: Option<i64>) -> rusqlite::Result<usize> {
    let through: i64 = tx
        .prepare_cached("SELECT alert_rowid FROM links_through")?
        .query_row([], |row| row.get(0))?;
    let (upto, count): (Option<i64>, usize) = tx
        .prepare_cached(
            "SELECT MAX(rowid), COUNT(*) FROM (SELECT rowid FROM alerts WHERE rowid > ?1 ORDER BY rowid LIMIT ?2)",
        )?
        .query_row(params![through, at_most.unwrap_or(-1)], |row| Ok((row.get(0)?, row.get(1)?)))?;
    let Some(upto) = upto else { return Ok(0) };
    tx.prepare_cached(
        "INSERT OR IGNORE INTO incident_alerts (incident_id, alert_id, linked_at)
         SELECT a.incident_id, a.id, a.received_at FROM alerts a JOIN incidents i ON i.id = a.incident_id
         WHERE a.rowid > ?1 AND a.rowid <= ?2 ORDER BY a.incident_id, a.id",
    )?
    .execute(params![through, upto])?;
    tx.prepare_cached("UPDATE links_through SET alert_rowid = ?1")?.execute([upto])?;
    Ok(count)
}

/// Links the alerts waiting, in a transaction of its own: what the writer runs every [`LINK_EVERY`]. Returns whether
/// it committed anything. A failure (a full disk) is logged and changes nothing: the alerts stay found through
/// `links` until the next try.
pub(super) fn link_in_own_transaction(conn: &mut Connection) -> bool {
    let run = |conn: &mut Connection| -> rusqlite::Result<usize> {
        if !pending(conn)? {
            return Ok(0);
        }
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let linked = link_pending(&tx, Some(LINK_AT_MOST))?;
        tx.commit()?;
        Ok(linked)
    };
    match run(conn) {
        Ok(0) => false,
        Ok(linked) => {
            tracing::debug!(linked, "alerts linked to their incidents");
            true
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot link alerts to their incidents now; will try again");
            false
        }
    }
}

/// Keeps the mark at or below the largest rowid once alerts have been deleted, so that the next alert, which takes
/// the rowid after the largest left, is above it. Call in the transaction that deleted them, after linking.
pub(super) fn after_deleting_alerts(tx: &Transaction) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE links_through SET alert_rowid = MIN(alert_rowid, (SELECT COALESCE(MAX(rowid), 0) FROM alerts))",
    )?
    .execute([])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Format;
    use crate::store::Sqlite;

    /// Posts one native alert for `server` and returns its alert id and incident id.
    async fn post(store: &Sqlite, n: usize, server: &str) -> (String, String) {
        let answer =
            crate::store::intake::tests::post(store, n, server, &format!("probe failed {n}"))
                .await
                .unwrap();
        let item = answer.alerts.into_iter().next().unwrap();
        (item.alert_id, item.incident_id.expect("the alert opens or joins an incident"))
    }

    async fn link_all(store: &Sqlite) -> usize {
        store.write(|tx| Ok(link_pending(tx, None)?)).await.unwrap()
    }

    async fn indexed(store: &Sqlite) -> i64 {
        store
            .read(|conn| {
                Ok(conn.query_row("SELECT COUNT(*) FROM incident_alerts", [], |r| r.get(0))?)
            })
            .await
            .unwrap()
    }

    async fn alert_ids(store: &Sqlite, incident: &str) -> Vec<String> {
        store.incident(incident.to_owned()).await.unwrap().alert_ids
    }

    #[tokio::test]
    async fn an_incident_lists_its_alerts_before_and_after_they_are_linked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Sqlite::open(dir.path()).unwrap();
        let mut first = Vec::new();
        for n in 0..3 {
            first.push(post(&store, n, "cas01.contoso.com").await);
        }
        let other = post(&store, 3, "cas02.contoso.com").await;
        let incident = first[0].1.clone();
        assert!(
            first.iter().all(|(_, id)| id == &incident),
            "the alerts of one server join one incident"
        );
        let ids: Vec<String> = first.iter().map(|(alert, _)| alert.clone()).collect();

        assert_eq!(indexed(&store).await, 0, "intake writes no link of its own");
        assert_eq!(alert_ids(&store, &incident).await, ids);
        let listed: Vec<String> = store
            .incident_alerts(incident.clone())
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(listed, ids);
        assert_eq!(store.alert(other.0.clone()).await.unwrap().incident_ids, vec![other.1.clone()]);

        assert_eq!(link_all(&store).await, 4);
        assert_eq!(indexed(&store).await, 4);
        assert_eq!(
            alert_ids(&store, &incident).await,
            ids,
            "linked, the same alerts in the same order"
        );
        assert_eq!(alert_ids(&store, &other.1).await, vec![other.0.clone()]);
        assert_eq!(link_all(&store).await, 0, "nothing is linked twice");

        // A replay links a stored alert to a second incident, and an alert joining later is listed at once.
        store
            .write(|tx| {
                Ok(tx.execute("UPDATE incidents SET state = 'escalated', open_key = NULL", [])?)
            })
            .await
            .unwrap();
        let alert = store.alert(ids[0].clone()).await.unwrap();
        let parsed = crate::alert::parse(Format::Native, alert.raw_body.as_bytes()).unwrap();
        let replayed = store.replay(ids[0].clone(), parsed.alerts[0].clone(), false).await.unwrap();
        let (late, joined) = post(&store, 4, "cas01.contoso.com").await;
        assert_eq!(joined, replayed, "the late alert joins the replayed incident, open now");
        assert_eq!(alert_ids(&store, &replayed).await, vec![ids[0].clone(), late.clone()]);
        assert_eq!(
            store.alert(ids[0].clone()).await.unwrap().incident_ids,
            vec![incident.clone(), replayed.clone()]
        );
        link_all(&store).await;
        assert_eq!(alert_ids(&store, &replayed).await, vec![ids[0].clone(), late]);
        assert_eq!(alert_ids(&store, &incident).await, ids);
    }

    /// Rowids are handed out again once the newest alerts are deleted: the mark must follow, or a new alert would
    /// count as linked and be found by no incident.
    #[tokio::test]
    async fn an_alert_kept_after_retention_emptied_the_store_is_listed_with_its_incident() {
        let dir = tempfile::tempdir().unwrap();
        let store = Sqlite::open(dir.path()).unwrap();
        let (_, old) = post(&store, 0, "cas01.contoso.com").await;
        post(&store, 1, "cas01.contoso.com").await;
        store
            .write(move |tx| {
                Ok(tx.execute(
                    "UPDATE incidents SET state = 'escalated', open_key = NULL WHERE id = ?1",
                    [&old],
                )?)
            })
            .await
            .unwrap();
        let pruned = store.prune(crate::store::now_ms() + 3_600_000).await.unwrap();
        assert_eq!((pruned.incidents, pruned.alerts), (1, 2), "retention removed everything");

        let (alert, incident) = post(&store, 2, "cas01.contoso.com").await;
        assert_eq!(alert_ids(&store, &incident).await, vec![alert.clone()]);
        link_all(&store).await;
        assert_eq!(alert_ids(&store, &incident).await, vec![alert]);
        assert_eq!(indexed(&store).await, 1);
    }
}

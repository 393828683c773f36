//! Retention on PostgreSQL: what is older than the cutoff goes, except what an open incident or an unsent email
//! still needs.

use healthset_responder::store::{now_ms, Pruned};

use super::*;

const DAY_MS: i64 = 24 * 3_600_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_keeps_open_incidents_and_unsent_emails_and_removes_the_rest() {
    let url = database().await;
    let pg = Postgres::connect(&url, 2).await.unwrap();
    let db = connect(&url).await;
    let year_ago = now_ms() - 365 * DAY_MS;
    let mut incidents = HashMap::new();
    for server in ["cas01", "cas02", "cas03", "cas04"] {
        let answer =
            accept(&pg, None, &body(None, &format!("{server}.contoso.com"), "firing"), year_ago)
                .await;
        incidents.insert(server, answer.alerts[0].incident_id.clone().expect("an incident"));
    }
    // cas01 recovered with nothing to send; cas02 escalated, its email not sent yet; cas03 escalated and sent;
    // cas04 still queued.
    for (server, state) in [("cas01", "recovered"), ("cas02", "escalated"), ("cas03", "escalated")]
    {
        db.execute(
            "UPDATE incidents SET state = $2, open_key = NULL WHERE id = $1",
            &[&incidents[server], &state],
        )
        .await
        .unwrap();
    }
    for (server, status) in [("cas02", "pending"), ("cas03", "sent")] {
        db.execute(
            "INSERT INTO notifications (id, incident_id, kind, mail_from, recipients, subject, message, status, next_attempt_at, created_at)
             VALUES ($1, $2, 'escalation', 'responder@contoso.com', '[\"oncall@contoso.com\"]', 's', '\\x00', $3, $4, $4)",
            &[&format!("n-{server}"), &incidents[server], &status, &year_ago],
        )
        .await
        .unwrap();
    }
    pg.add_silence("mbx01.contoso.com".into(), year_ago, "ended long ago".into()).await.unwrap();
    let kept = pg
        .add_silence("mbx02.contoso.com".into(), now_ms() + DAY_MS, "patching".into())
        .await
        .unwrap();

    let pruned = pg.prune(now_ms() - 30 * DAY_MS).await.unwrap();
    assert_eq!(pruned, Pruned { incidents: 2, alerts: 2, deliveries: 2 });
    let left: BTreeSet<String> =
        column(&db, "SELECT id FROM incidents").await.into_iter().collect();
    assert_eq!(left, BTreeSet::from([incidents["cas02"].clone(), incidents["cas04"].clone()]));
    assert_eq!(
        count(&db, "SELECT count(*) FROM alerts").await,
        2,
        "the kept incidents keep their alerts"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM deliveries").await, 2, "and their deliveries");
    assert_eq!(
        count(&db, "SELECT count(*) FROM notifications WHERE status = 'pending'").await,
        1,
        "the unsent escalation is never deleted"
    );
    let silences: Vec<String> = pg.silences().await.unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(silences, [kept.id]);
    assert_eq!(count(&db, "SELECT count(*) FROM silences").await, 1, "the ended silence went");
    assert_eq!(pg.prune(now_ms() - 30 * DAY_MS).await.unwrap(), Pruned::default(), "nothing twice");
}

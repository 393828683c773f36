//! What operators change on PostgreSQL and every instance must see: silences and the pause switch, set through one
//! instance and read through another, and read the same as the SQLite store reads them.

use healthset_responder::store::{now_ms, Silence, StoreError};

use super::*;

const HOUR_MS: i64 = 3_600_000;

/// A PostgreSQL store on a fresh database and a SQLite store in a temporary directory (kept while the last value
/// lives), to be written the same and read alike.
async fn both_backends() -> (Postgres, Sqlite, tempfile::TempDir) {
    let pg = Postgres::connect(&database().await, 2).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Sqlite::open(dir.path()).unwrap();
    (pg, sqlite, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_or_a_pause_set_through_one_instance_holds_for_every_instance() {
    let url = database().await;
    let (a, b) = two_instances(&url).await;
    let now = now_ms();

    let silence = a
        .add_silence("mbx01.contoso.com".into(), now + HOUR_MS, "patching CU14".into())
        .await
        .unwrap();
    a.add_silence("mbx02.contoso.com".into(), now - 1, "already over".into()).await.unwrap();
    let seen = b.silenced("mbx01.contoso.com".into()).await.unwrap().expect("b sees a's silence");
    assert_eq!((seen.id.as_str(), seen.reason.as_str()), (silence.id.as_str(), "patching CU14"));
    assert!(b.silenced("cas01.contoso.com".into()).await.unwrap().is_none(), "only its server");
    assert!(b.silenced("mbx02.contoso.com".into()).await.unwrap().is_none(), "an ended one");
    let listed: Vec<String> = b.silences().await.unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(
        listed,
        std::slice::from_ref(&silence.id),
        "only silences that have not ended are listed"
    );

    b.delete_silence(silence.id.clone()).await.unwrap();
    assert!(a.silenced("mbx01.contoso.com".into()).await.unwrap().is_none(), "ended for a too");
    let again = a.delete_silence(silence.id.clone()).await.expect_err("it is gone");
    assert_eq!(StoreError::from(again).to_string(), format!("not found: silence {}", silence.id));

    a.set_paused(Some("change freeze until Monday".into())).await.unwrap();
    assert_eq!(b.paused().await.unwrap().as_deref(), Some("change freeze until Monday"));
    b.set_paused(Some("still frozen".into())).await.unwrap();
    assert_eq!(a.paused().await.unwrap().as_deref(), Some("still frozen"), "the latest reason");
    b.set_paused(None).await.unwrap();
    assert_eq!(a.paused().await.unwrap(), None, "resumed through b, resumed for a");
}

/// What a person reads of a silence: everything but the id and the moment it was made.
fn shown(silences: Vec<Silence>) -> Vec<(String, String, String)> {
    silences.into_iter().map(|s| (s.server, s.until, s.reason)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_and_the_pause_read_the_same_on_both_backends() {
    let (pg, sqlite, _dir) = both_backends().await;
    let now = now_ms();
    let writes = [
        ("cas01.contoso.com", now + 2 * HOUR_MS, "IIS maintenance"),
        ("mbx01.contoso.com", now + HOUR_MS, "patching"),
        ("mbx01.contoso.com", now + 3 * HOUR_MS, "patching, extended"),
        ("mbx03.contoso.com", now - HOUR_MS, "ended an hour ago"),
    ];
    for (server, until, reason) in writes {
        let ours = pg.add_silence(server.into(), until, reason.into()).await.unwrap();
        let theirs = sqlite.add_silence(server.into(), until, reason.into()).await.unwrap();
        assert_eq!(shown(vec![ours]), shown(vec![theirs]), "the answer to adding {reason:?}");
    }
    let (ours, theirs) = (pg.silences().await.unwrap(), sqlite.silences().await.unwrap());
    assert_eq!(ours.len(), 3, "{ours:?}");
    assert_eq!(shown(ours), shown(theirs), "the list, soonest to end first");
    let (ours, theirs) = (
        pg.silenced("mbx01.contoso.com".into()).await.unwrap(),
        sqlite.silenced("mbx01.contoso.com".into()).await.unwrap(),
    );
    assert_eq!(ours.as_ref().map(|s| s.reason.as_str()), Some("patching, extended"));
    assert_eq!(shown(ours.into_iter().collect()), shown(theirs.into_iter().collect()));

    pg.set_paused(Some("change freeze".into())).await.unwrap();
    sqlite.set_paused(Some("change freeze".into())).await.unwrap();
    assert_eq!(pg.paused().await.unwrap(), sqlite.paused().await.unwrap());
    let (ours, theirs) = (
        pg.delete_silence("no-such-silence".into()).await.map_err(StoreError::from),
        sqlite.delete_silence("no-such-silence".into()).await,
    );
    assert_eq!(
        ours.expect_err("postgres").to_string(),
        theirs.expect_err("sqlite").to_string(),
        "an unknown silence is named alike"
    );
}

/// What a person reads of a rejected delivery: everything but its id and when it came.
fn shown_rejected(
    rejected: Vec<healthset_responder::store::RejectedDelivery>,
) -> Vec<(String, String, Option<String>, String, String)> {
    rejected.into_iter().map(|r| (r.sender, r.format, r.webhook_id, r.error, r.raw_body)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_deliveries_are_kept_and_paged_the_same_on_both_backends() {
    let (pg, sqlite, _dir) = both_backends().await;
    let bodies: [(&str, Option<&str>, &[u8], &str); 3] = [
        ("scom", Some("msg_1"), br#"{"server": "cas01.contoso.com"}"#, "health_set is missing"),
        ("alertmanager", None, b"{\"alerts\": [{\"labels\": {}}]}", "alerts[0]: no server label"),
        ("scom", Some("msg_1"), b"\xff\xfe not UTF-8", "the body is not UTF-8 JSON"),
    ];
    for (sender, webhook_id, body, error) in bodies {
        let make = || NewDelivery {
            sender: sender.into(),
            format: Format::Native,
            webhook_id: webhook_id.map(Into::into),
            body: Bytes::copy_from_slice(body),
        };
        pg.reject(make(), error.into()).await.expect("postgres keeps it");
        sqlite.reject(make(), error.into()).await.expect("sqlite keeps it");
    }
    let (ours, theirs) =
        (pg.list_rejected(2, None).await.unwrap(), sqlite.list_rejected(2, None).await.unwrap());
    assert_eq!(ours[0].error, "the body is not UTF-8 JSON", "newest first: {ours:?}");
    assert!(ours[0].raw_body.contains('\u{fffd}'), "invalid UTF-8 shown replaced: {ours:?}");
    let next = (ours[1].id.clone(), theirs[1].id.clone());
    assert_eq!(shown_rejected(ours), shown_rejected(theirs), "the first page");
    let (ours, theirs) = (
        pg.list_rejected(2, Some(next.0)).await.unwrap(),
        sqlite.list_rejected(2, Some(next.1)).await.unwrap(),
    );
    assert_eq!(ours.len(), 1, "the rest: {ours:?}");
    assert_eq!(shown_rejected(ours), shown_rejected(theirs), "the next page");

    // A delivery rejected under a webhook id leaves that id free: the corrected one is accepted, not a duplicate.
    let fixed = body(None, "cas01.contoso.com", "firing");
    let answer = accept(&pg, Some("msg_1"), &fixed, now_ms()).await;
    assert_eq!(answer.alerts[0].disposition, Disposition::NewIncident, "{answer:?}");
}

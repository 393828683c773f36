//! What operators change on PostgreSQL and every instance must see: silences and the pause switch, set through one
//! instance and read through another, and read the same as the SQLite store reads them.

use healthset_responder::store::{now_ms, Silence, StoreError};

use super::*;

const HOUR_MS: i64 = 3_600_000;

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
    let url = database().await;
    let pg = Postgres::connect(&url, 2).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Sqlite::open(dir.path()).unwrap();
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

//! The PostgreSQL store against a real PostgreSQL server (a throwaway cluster, `postgres/cluster.rs`): two handles
//! on one database stand for two instances. What the tests look at is what an operator would: the rows that were
//! kept, the answers senders got, and who drives which incident.

pub mod cluster;
mod instances;
mod retention;
mod tls;
mod views;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bytes::Bytes;
use healthset_responder::alert::{self, Alert, Format};
use healthset_responder::domain::ServerName;
use healthset_responder::incident::Outcome;
use healthset_responder::journal::{Action, Report};
use healthset_responder::store::postgres::{self, Claim, Postgres, SCHEMA_VERSION};
use healthset_responder::store::{
    Answer, Disposition, NewDelivery, NewStep, Sqlite, Started, StoreError,
};

use cluster::{connect, database};

const WINDOW: Duration = Duration::from_secs(600);
const LEASE: Duration = Duration::from_secs(30);
/// A moment to start the tests' clock at (ms since the Unix epoch); the tests move it on themselves.
const T0: i64 = 1_800_000_000_000;

/// A native alert body for `server`, with the source's `id` if any.
fn body(id: Option<&str>, server: &str, status: &str) -> Vec<u8> {
    let mut body = serde_json::json!({"health_set": "ActiveSync", "server": server, "monitor": "ActiveSyncDeepTestMonitor", "message": "ActiveSyncDeepTestProbe failed", "status": status});
    if let Some(id) = id {
        body["id"] = id.into();
    }
    serde_json::to_vec(&body).unwrap()
}

/// A delivery of `body` from `sender`, and its alerts as the native parser reads them.
fn delivery(sender: &str, webhook_id: Option<&str>, body: &[u8]) -> (NewDelivery, Vec<Alert>) {
    let alerts = alert::parse(Format::Native, body).expect("a valid native alert").alerts;
    (
        NewDelivery {
            sender: sender.into(),
            format: Format::Native,
            webhook_id: webhook_id.map(Into::into),
            body: Bytes::copy_from_slice(body),
        },
        alerts,
    )
}

async fn accept(pg: &Postgres, webhook_id: Option<&str>, body: &[u8], now: i64) -> Answer {
    let (delivery, alerts) = delivery("scom", webhook_id, body);
    pg.accept_at(delivery, alerts, false, WINDOW, now).await.expect("the delivery is accepted")
}

async fn count(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e:?}")).get(0)
}

/// The first column of every row `sql` returns.
async fn column<T: for<'a> tokio_postgres::types::FromSql<'a>>(
    db: &tokio_postgres::Client,
    sql: &str,
) -> Vec<T> {
    db.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Two instances on one database, named `a` and `b`.
async fn two_instances(url: &str) -> (Postgres, Postgres) {
    (
        Postgres::connect_as(url, 4, "a", LEASE).await.expect("instance a connects"),
        Postgres::connect_as(url, 4, "b", LEASE).await.expect("instance b connects"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_starting_at_once_apply_each_migration_once() {
    let url = database().await;
    let (a, b) = tokio::join!(Postgres::connect(&url, 2), Postgres::connect(&url, 2));
    a.expect("the first instance starts");
    b.expect("the second instance starts, finding the schema applied");
    let db = connect(&url).await;
    let versions: Vec<i64> =
        column(&db, "SELECT version FROM schema_migrations ORDER BY version").await;
    assert_eq!(
        versions,
        (1..=SCHEMA_VERSION).collect::<Vec<_>>(),
        "each migration is recorded once"
    );
    let tables: BTreeSet<String> =
        column(&db, "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
            .await
            .into_iter()
            .collect();
    let expected = [
        "alerts",
        "approvals",
        "deliveries",
        "delivery_bodies",
        "incident_alerts",
        "incidents",
        "instances",
        "ma_actions",
        "notifications",
        "schema_migrations",
        "server_locks",
        "settings",
        "silences",
        "steps",
    ];
    assert_eq!(tables, expected.iter().map(|t| t.to_string()).collect(), "one set of tables");
    let applied_at: Vec<i64> =
        column(&db, "SELECT applied_at FROM schema_migrations ORDER BY version").await;
    Postgres::connect(&url, 1).await.expect("a restarted instance starts");
    let again: Vec<i64> =
        column(&db, "SELECT applied_at FROM schema_migrations ORDER BY version").await;
    assert_eq!(again, applied_at, "a restart applies nothing again");
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_build_is_refused_by_name() {
    let url = database().await;
    Postgres::connect(&url, 1).await.unwrap();
    connect(&url)
        .await
        .execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)",
            &[&(SCHEMA_VERSION + 1)],
        )
        .await
        .unwrap();
    let err =
        Postgres::connect(&url, 1).await.err().expect("a newer schema is refused").to_string();
    let name = url.rsplit('/').next().unwrap();
    assert!(err.contains(&format!("127.0.0.1:{}/{name}", cluster::cluster().port)), "{err}");
    assert!(
        err.contains(&format!(
            "schema version {}, newer than this build knows ({SCHEMA_VERSION})",
            SCHEMA_VERSION + 1
        )),
        "{err}"
    );
}

#[tokio::test]
async fn a_database_nobody_answers_at_is_named_with_the_reason() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = Postgres::connect(
        &format!("postgres://responder:a-db-password@127.0.0.1:{port}/healthset"),
        2,
    )
    .await
    .err()
    .expect("nothing listens there");
    let text = err.to_string();
    assert!(matches!(err, postgres::Error::Unavailable { .. }), "{text}");
    assert!(
        text.starts_with(&format!(
            "PostgreSQL at responder@127.0.0.1:{port}/healthset is unavailable: "
        )),
        "{text}"
    );
    assert!(text.contains("refused"), "the reason is given: {text}");
    assert!(!text.contains("a-db-password"), "never the password: {text}");
    // Through the storage interface it is a store to retry later (HTTP 503), with the same words.
    match StoreError::from(err) {
        StoreError::Unavailable(detail) => assert_eq!(detail, text),
        other => panic!("an unreachable database reached the interface as {other:?}"),
    }
    let err = Postgres::connect("postgres://127.0.0.1/x", 0).await.err().unwrap().to_string();
    assert!(err.contains("at least one connection"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_delivery_at_two_instances_at_once_is_kept_once() {
    let url = database().await;
    let (a, b) = two_instances(&url).await;
    for round in 0..8 {
        let server = format!("cas{round:02}.contoso.com");
        // With a webhook id (Standard Webhooks), and without one (the body within the window), alternately.
        let webhook_id = (round % 2 == 0).then(|| format!("msg_{round}"));
        let body = body(Some(&format!("alert-{round}")), &server, "firing");
        let (first, second) = tokio::join!(
            accept(&a, webhook_id.as_deref(), &body, T0),
            accept(&b, webhook_id.as_deref(), &body, T0)
        );
        let mut dispositions = [first.alerts[0].disposition, second.alerts[0].disposition];
        dispositions.sort_by_key(|d| d.as_str());
        assert_eq!(
            dispositions,
            [Disposition::Duplicate, Disposition::NewIncident],
            "round {round}: {first:?} {second:?}"
        );
        assert_eq!(
            first.alerts[0].alert_id, second.alerts[0].alert_id,
            "the duplicate names the alert that was kept"
        );
        assert_eq!(first.alerts[0].incident_id, second.alerts[0].incident_id);
    }
    let db = connect(&url).await;
    assert_eq!(count(&db, "SELECT count(*) FROM deliveries").await, 8, "one delivery row each");
    assert_eq!(count(&db, "SELECT count(*) FROM alerts").await, 8);
    assert_eq!(
        count(&db, "SELECT count(*) FROM incidents WHERE open_key IS NOT NULL").await,
        8,
        "one open incident per key"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM deliveries WHERE response IS NULL").await,
        0,
        "every kept delivery has its answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_of_one_key_at_two_instances_at_once_open_one_incident() {
    let url = database().await;
    let (a, b) = two_instances(&url).await;
    for round in 0..8 {
        let server = format!("cas{round:02}.contoso.com");
        let (one, other) = (
            body(Some(&format!("a-{round}")), &server, "firing"),
            body(Some(&format!("b-{round}")), &server, "firing"),
        );
        let (id_one, id_other) = (format!("msg_a{round}"), format!("msg_b{round}"));
        let (first, second) = tokio::join!(
            accept(&a, Some(&id_one), &one, T0),
            accept(&b, Some(&id_other), &other, T0)
        );
        let mut dispositions = [first.alerts[0].disposition, second.alerts[0].disposition];
        dispositions.sort_by_key(|d| d.as_str());
        assert_eq!(
            dispositions,
            [Disposition::Attached, Disposition::NewIncident],
            "round {round}: {first:?} {second:?}"
        );
        assert_eq!(
            first.alerts[0].incident_id, second.alerts[0].incident_id,
            "both alerts are in one incident"
        );
    }
    let db = connect(&url).await;
    assert_eq!(
        count(&db, "SELECT count(*) FROM deliveries").await,
        16,
        "both deliveries of each round are kept"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM incidents").await, 8, "one incident per key");
    assert_eq!(
        count(&db, "SELECT count(*) FROM incident_alerts").await,
        16,
        "each incident has both alerts"
    );
}

/// Ids as the order they first appear in, so that two stores' answers compare.
#[derive(Default)]
struct Names(HashMap<String, usize>);

impl Names {
    fn of(&mut self, id: &Option<String>) -> Option<usize> {
        let next = self.0.len();
        id.as_ref().map(|id| *self.0.entry(id.clone()).or_insert(next))
    }
}

#[tokio::test]
async fn postgres_answers_every_kind_of_delivery_as_sqlite_does() {
    let url = database().await;
    let pg = Postgres::connect(&url, 2).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Sqlite::open(dir.path()).unwrap();
    let (cas01, cas02, cas03) = ("cas01.contoso.com", "cas02.contoso.com", "cas03.contoso.com");
    let script: Vec<(&str, Option<&str>, Vec<u8>)> = vec![
        ("scom", Some("msg_1"), body(Some("a1"), cas01, "firing")),   // a new incident
        ("scom", Some("msg_1"), body(Some("a1"), cas01, "firing")),   // the same delivery id: duplicate
        ("scom", Some("msg_2"), body(Some("a2"), cas01, "firing")),   // another alert of the key: attached
        ("scom", Some("msg_3"), body(Some("a1"), cas01, "firing")),   // the same source alert id: duplicate
        ("scom", None, body(None, cas02, "firing")),                  // a new incident, told by its body
        ("scom", None, body(None, cas02, "firing")),                  // the same body within the window: duplicate
        ("other", None, body(None, cas02, "firing")),                 // another sender's: attached
        ("other", Some("msg_1"), body(Some("a1"), cas01, "firing")),  // another sender's ids are its own: attached
        ("scom", Some("msg_4"), body(Some("a1"), cas01, "resolved")), // resolves the open incident
        ("scom", Some("msg_5"), body(Some("c1"), cas03, "resolved")), // resolves nothing
        ("scom", Some("msg_6"), body(Some("a1"), cas01, "resolved")), // a resolved notice seen before: duplicate
        // JSON may carry NUL characters, which PostgreSQL's text cannot hold: the message is kept all the same.
        ("scom", Some("msg_7"), br#"{"id": "n\u0000ul", "health_set": "ActiveSync", "server": "cas04", "message": "probe\u0000failed"}"#.to_vec()),
        ("scom", Some("msg_8"), br#"{"id": "n\u0000ul", "health_set": "ActiveSync", "server": "cas04", "message": "again"}"#.to_vec()),
    ];
    let (mut sqlite_names, mut pg_names) = (Names::default(), Names::default());
    for (step, (sender, webhook_id, body)) in script.iter().enumerate() {
        let (d, alerts) = delivery(sender, *webhook_id, body);
        let theirs = sqlite.accept(d, alerts, false, WINDOW).await.unwrap();
        let (d, alerts) = delivery(sender, *webhook_id, body);
        let ours = pg.accept(d, alerts, false, WINDOW).await.unwrap();
        let shape = |answer: &Answer,
                     names: &mut Names|
         -> Vec<(Option<usize>, Option<usize>, Disposition)> {
            answer
                .alerts
                .iter()
                .map(|item| {
                    (
                        names.of(&Some(item.alert_id.clone())),
                        names.of(&item.incident_id),
                        item.disposition,
                    )
                })
                .collect()
        };
        assert_eq!(
            shape(&ours, &mut pg_names),
            shape(&theirs, &mut sqlite_names),
            "step {step}: postgres {ours:?}, sqlite {theirs:?}"
        );
    }
    let db = connect(&url).await;
    let sqlite_db = rusqlite::Connection::open(sqlite.path()).unwrap();
    // SQLite links alerts to incidents behind intake: its view `links` holds every link, linked yet or not.
    for (table, sqlite_table) in [
        ("deliveries", "deliveries"),
        ("alerts", "alerts"),
        ("incidents", "incidents"),
        ("incident_alerts", "links"),
    ] {
        let theirs: i64 = sqlite_db
            .query_row(&format!("SELECT count(*) FROM {sqlite_table}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            count(&db, &format!("SELECT count(*) FROM {table}")).await,
            theirs,
            "{table}: as many rows as SQLite keeps"
        );
    }
    let resolved = count(&db, "SELECT count(*) FROM incidents WHERE resolved_at IS NOT NULL AND server = 'cas01.contoso.com'").await;
    assert_eq!(resolved, 1, "the resolved notice marked its incident");
    let message: String = db
        .query_one("SELECT message FROM alerts WHERE server = 'cas04'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(message, "probe\u{FFFD}failed");
}

#[tokio::test]
async fn a_body_without_an_id_is_a_duplicate_within_the_window_only() {
    let url = database().await;
    let pg = Postgres::connect(&url, 2).await.unwrap();
    let body = body(None, "cas01.contoso.com", "firing");
    let first = accept(&pg, None, &body, T0).await;
    assert_eq!(first.alerts[0].disposition, Disposition::NewIncident);
    let within = accept(&pg, None, &body, T0 + WINDOW.as_millis() as i64 - 1).await;
    assert_eq!(within.alerts[0].disposition, Disposition::Duplicate);
    let after = accept(&pg, None, &body, T0 + WINDOW.as_millis() as i64 + 1).await;
    assert_eq!(
        after.alerts[0].disposition,
        Disposition::Attached,
        "past the window it is a new notice of the open incident"
    );
    assert_eq!(after.alerts[0].incident_id, first.alerts[0].incident_id);
    let (d, alerts) = delivery("scom", None, &body);
    let unwindowed = pg
        .accept_at(d, alerts, false, Duration::ZERO, T0 + WINDOW.as_millis() as i64 + 2)
        .await
        .unwrap();
    assert_eq!(
        unwindowed.alerts[0].disposition,
        Disposition::Attached,
        "with no window, a body is never a duplicate"
    );
    assert_eq!(count(&connect(&url).await, "SELECT count(*) FROM deliveries").await, 3);
}

#[tokio::test]
async fn a_batch_of_waiting_deliveries_commits_together_and_its_duplicates_fail_none() {
    let url = database().await;
    let pg = Postgres::connect(&url, 2).await.unwrap();
    // Forty deliveries queued at once: twenty, each twice. On this single-threaded runtime the writer runs only once
    // all of them wait in its queue.
    let mut waiting = tokio::task::JoinSet::new();
    for copy in 0..2 {
        for n in 0..20 {
            let pg = pg.clone();
            waiting.spawn(async move {
                let body =
                    body(Some(&format!("alert-{n}")), &format!("cas{n:02}.contoso.com"), "firing");
                (copy, n, accept(&pg, Some(&format!("msg_{n}")), &body, T0).await)
            });
        }
    }
    let mut kept = HashMap::new();
    let mut dispositions = Vec::new();
    while let Some(done) = waiting.join_next().await {
        let (_, n, answer) = done.unwrap();
        dispositions.push(answer.alerts[0].disposition);
        let incident = answer.alerts[0].incident_id.clone().expect("every alert is in an incident");
        assert_eq!(
            kept.entry(n).or_insert_with(|| incident.clone()),
            &incident,
            "both copies of delivery {n} name one incident"
        );
    }
    dispositions.sort_by_key(|d| d.as_str());
    assert_eq!(
        dispositions,
        [[Disposition::Duplicate; 20], [Disposition::NewIncident; 20]].concat()
    );
    let db = connect(&url).await;
    assert_eq!(count(&db, "SELECT count(*) FROM deliveries").await, 20);
    // Rows of one transaction share its commit time (the cluster tracks commit timestamps).
    let commits =
        count(&db, "SELECT count(DISTINCT pg_xact_commit_timestamp(xmin)) FROM deliveries").await;
    assert!(commits < 20, "the twenty deliveries took {commits} commits: one each, not batched");
}

async fn open_incidents(pg: &Postgres, servers: std::ops::Range<usize>) -> Vec<String> {
    let mut ids = Vec::new();
    for n in servers {
        let answer = accept(
            pg,
            Some(&format!("msg_{n}")),
            &body(Some(&format!("alert-{n}")), &format!("cas{n:02}.contoso.com"), "firing"),
            T0,
        )
        .await;
        ids.push(answer.alerts[0].incident_id.clone().unwrap());
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_claiming_at_once_never_get_the_same_incident() {
    let url = database().await;
    let (a, b) = two_instances(&url).await;
    let only = open_incidents(&a, 0..1).await;
    let (first, second) = tokio::join!(a.claim("a", T0, LEASE), b.claim("b", T0, LEASE));
    let claims: Vec<Claim> = [first.unwrap(), second.unwrap()].into_iter().flatten().collect();
    assert_eq!(claims.len(), 1, "one incident, one claim: {claims:?}");
    assert_eq!((claims[0].incident_id.as_str(), claims[0].epoch), (only[0].as_str(), 1));

    let more: BTreeSet<String> = open_incidents(&a, 1..31).await.into_iter().collect();
    let claim_all = |pg: Postgres, instance: &'static str| async move {
        let mut mine = Vec::new();
        while let Some(claim) = pg.claim(instance, T0, LEASE).await.unwrap() {
            mine.push(claim.incident_id);
        }
        mine
    };
    let (by_a, by_b) = tokio::join!(claim_all(a.clone(), "a"), claim_all(b.clone(), "b"));
    let (set_a, set_b): (BTreeSet<String>, BTreeSet<String>) =
        (by_a.iter().cloned().collect(), by_b.iter().cloned().collect());
    assert_eq!(
        set_a.len() + set_b.len(),
        by_a.len() + by_b.len(),
        "no instance claimed an incident twice"
    );
    assert!(
        set_a.is_disjoint(&set_b),
        "no incident was claimed by both: {:?}",
        set_a.intersection(&set_b).collect::<Vec<_>>()
    );
    assert_eq!(
        set_a.union(&set_b).cloned().collect::<BTreeSet<_>>(),
        more,
        "every unclaimed incident was claimed by one of them"
    );
    let db = connect(&url).await;
    assert_eq!(
        count(&db, "SELECT count(*) FROM incidents WHERE lease_epoch <> 1").await,
        0,
        "each incident was claimed exactly once"
    );
}

#[tokio::test]
async fn a_lease_holds_until_it_ends_and_renewing_extends_it() {
    let url = database().await;
    let (a, b) = two_instances(&url).await;
    let incident = open_incidents(&a, 0..1).await.remove(0);
    let claim = a.claim("a", T0, LEASE).await.unwrap().expect("a claims the open incident");
    assert_eq!(claim, Claim { incident_id: incident.clone(), instance: "a".into(), epoch: 1 });
    assert_eq!(b.claim("b", T0 + 29_999, LEASE).await.unwrap(), None, "held until the lease ends");
    assert_eq!(a.renew(&claim, T0 + 20_000, LEASE).await.unwrap(), T0 + 50_000);
    assert_eq!(
        b.claim("b", T0 + 45_000, LEASE).await.unwrap(),
        None,
        "the renewed lease holds past the first one's end"
    );
    let taken =
        b.claim("b", T0 + 50_000, LEASE).await.unwrap().expect("an ended lease is taken over");
    assert_eq!(taken, Claim { incident_id: incident, instance: "b".into(), epoch: 2 });
}

/// A read-only step on `server`, as the engine starts one.
fn probe_step(action: &Action) -> NewStep<'_> {
    NewStep {
        action,
        command: "Get-ServerComponentState".into(),
        group: None,
        throttle: None,
        commits_to: Vec::new(),
    }
}

#[tokio::test]
async fn a_write_under_a_lease_taken_over_is_refused_and_writes_nothing() {
    let url = database().await;
    let (a, b) = two_instances(&url).await;
    let incident = open_incidents(&a, 0..1).await.remove(0);
    let server = ServerName::parse("cas00.contoso.com").unwrap();
    let probe = Action::ComponentState { server: server.clone() };
    let driven = a.runnable(None).await.unwrap();
    assert_eq!(driven.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [incident.as_str()]);
    assert!(
        b.runnable(None).await.unwrap().is_empty(),
        "b finds nothing to drive while a holds it"
    );
    let started = a.start_step(incident.clone(), probe_step(&probe)).await.unwrap();
    assert!(matches!(started, Started::Run { seq: 1 }), "the holder journals: {started:?}");

    // a stalls past its lease; b takes the incident over.
    let db = connect(&url).await;
    db.execute("UPDATE incidents SET lease_until = lease_until - 31000", &[]).await.unwrap();
    let taken = b.runnable(None).await.unwrap();
    assert_eq!(taken.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [incident.as_str()]);
    let err =
        a.start_step(incident.clone(), probe_step(&probe)).await.expect_err("a's write is refused");
    assert!(matches!(err, postgres::Error::LostClaim { .. }), "{err}");
    let said = format!("incident {incident}: a no longer holds its claim of epoch 1; b holds it now, at epoch 2; nothing was written");
    assert_eq!(err.to_string(), said);
    // The engine hears it through the storage interface as a lost claim, with the same words.
    match StoreError::from(err) {
        StoreError::LostClaim(message) => assert_eq!(message, said),
        other => panic!("a lost claim reached the interface as {other:?}"),
    }
    // a has learnt it: it no longer drives the incident, and no later write of its tries.
    assert!(a.runnable(None).await.unwrap().is_empty(), "a no longer lists the incident");
    let err = a.finish_step(incident.clone(), 1, Report::new(Outcome::Done, "late")).await;
    assert!(matches!(err, Err(postgres::Error::Unclaimed(_))), "{err:?}");
    assert_eq!(count(&db, "SELECT count(*) FROM steps").await, 1, "a's refused step left nothing");
    assert_eq!(
        column::<Option<String>>(&db, "SELECT outcome FROM steps").await,
        [None],
        "a's late result left the step as it was"
    );
    let started = b.start_step(incident.clone(), probe_step(&probe)).await.unwrap();
    assert!(matches!(started, Started::Run { seq: 2 }), "the new holder journals on: {started:?}");
    let owners: Vec<String> = column(&db, "SELECT lease_owner FROM incidents").await;
    assert_eq!(owners, ["b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_never_holds_more_connections_than_its_pool() {
    let url = database().await;
    let pg = Postgres::connect(&url, 2).await.unwrap();
    open_incidents(&pg, 0..10).await;
    let mut busy = tokio::task::JoinSet::new();
    for n in 0..24 {
        let pg = pg.clone();
        busy.spawn(async move {
            match n % 2 {
                0 => drop(pg.claim(&format!("i{n}"), T0, LEASE).await.unwrap()),
                _ => drop(
                    accept(&pg, None, &body(None, &format!("mbx{n:02}.contoso.com"), "firing"), T0)
                        .await,
                ),
            }
        });
    }
    while let Some(done) = busy.join_next().await {
        done.unwrap();
    }
    let db = connect(&url).await;
    let name = url.rsplit('/').next().unwrap().to_owned();
    let connections: i64 =
        db.query_one("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'healthset-responder'", &[&name]).await.unwrap().get(0);
    assert!((1..=2).contains(&connections), "{connections} connections for a pool of 2");
}

//! What operators read and change on PostgreSQL, and every instance must see: alerts and incidents, read and paged
//! as the SQLite store reads them given the same deliveries; replays, refused while an incident is open; the
//! readiness probe's write; silences and the pause switch, set through one instance and read through another.

use healthset_responder::incident::State;
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

/// A view as JSON with what differs between two stores given the same deliveries made alike: every id becomes the
/// order it first appears in (so which alert is in which incident still compares), every time a mark.
fn comparable(view: &impl serde::Serialize, names: &mut Names) -> serde_json::Value {
    fn walk(value: &mut serde_json::Value, key: &str, names: &mut Names) {
        use serde_json::Value;
        let is_id =
            key == "id" || key.ends_with("_id") || key.ends_with("_ids") || key == "replay_of";
        match value {
            Value::String(id) if is_id => *value = names.of(&Some(id.clone())).into(),
            Value::String(_) if key.ends_with("_at") => *value = "a time".into(),
            Value::Array(items) => items.iter_mut().for_each(|item| walk(item, key, names)),
            Value::Object(fields) => {
                fields.iter_mut().for_each(|(key, item)| walk(item, key, names))
            }
            _ => {}
        }
    }
    let mut value = serde_json::to_value(view).expect("views serialise");
    walk(&mut value, "", names);
    value
}

/// A native alert body with its own message, and when the source raised it if that is known.
fn alert_body(
    id: &str,
    server: &str,
    monitor: &str,
    message: &str,
    raised_at: Option<&str>,
) -> Vec<u8> {
    let mut body = serde_json::json!({"id": id, "health_set": "ActiveSync", "server": server, "monitor": monitor, "message": message});
    if let Some(raised_at) = raised_at {
        body["raised_at"] = raised_at.into();
    }
    serde_json::to_vec(&body).unwrap()
}

/// Deliveries that open, join, resolve and duplicate incidents on three servers, one with a message long enough for
/// the SQLite store to read it back from the delivery's body (and naming a mailbox server).
fn deliveries() -> Vec<(Option<&'static str>, Vec<u8>)> {
    let long = "Error occurred: User: HealthMailbox7b3c4a1e@contoso.com _Cas:CAS01.contoso.com_Mbx:MBX01.contoso.com_Dc:DC01.contoso.com_";
    vec![
        (
            Some("msg_1"),
            alert_body("a1", "cas01.contoso.com", "ActiveSyncCTPMonitor", "probe failed", None),
        ),
        (
            Some("msg_2"),
            alert_body(
                "a2",
                "cas01.contoso.com",
                "ActiveSyncCTPMonitor",
                long,
                Some("2026-11-26T10:00:00Z"),
            ),
        ),
        (Some("msg_2"), alert_body("a2", "cas01.contoso.com", "ActiveSyncCTPMonitor", long, None)),
        (None, body(None, "cas02.contoso.com", "firing")),
        (
            Some("msg_3"),
            alert_body(
                "a3",
                "cas03.contoso.com",
                "OwaCTPMonitor",
                "Z\u{fc}rich \u{2713} \"quoted\"",
                None,
            ),
        ),
        (Some("msg_4"), body(Some("r2"), "cas02.contoso.com", "resolved")),
        (Some("msg_5"), alert_body("a5", "cas03.contoso.com", "OwaCTPMonitor", "again", None)),
    ]
}

/// Both backends, each given [`deliveries`] in order; the PostgreSQL database's URL too.
async fn both_given_deliveries() -> (Postgres, Sqlite, tempfile::TempDir, String) {
    let url = database().await;
    let pg = Postgres::connect(&url, 2).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Sqlite::open(dir.path()).unwrap();
    for (webhook_id, body) in deliveries() {
        let (d, alerts) = delivery("scom", webhook_id, &body);
        sqlite.accept(d, alerts, false, WINDOW).await.expect("sqlite accepts it");
        accept(&pg, webhook_id, &body, now_ms()).await;
    }
    (pg, sqlite, dir, url)
}

/// The same timeline, emails and approval for an incident of either backend: SQL both speak.
fn timeline(incident: &str) -> Vec<String> {
    vec![
        format!("INSERT INTO steps (incident_id, seq, action, server, command, started_at, finished_at, outcome, detail, ma_actions)
                 VALUES ('{incident}', 1, 'component_state', 'cas01.contoso.com', 'Get-ServerComponentState', 1000, 2000, 'ok', 'all active', NULL)"),
        format!("INSERT INTO steps (incident_id, seq, action, server, command, started_at, finished_at, outcome, detail, ma_actions)
                 VALUES ('{incident}', 2, 'ma_history', 'cas01.contoso.com', 'Get-WinEvent', 3000, NULL, NULL, '', 'not json')"),
        format!("INSERT INTO notifications (id, incident_id, kind, mail_from, recipients, subject, message, status, attempts, last_error, next_attempt_at, created_at, sent_at)
                 VALUES ('n2-{incident}', '{incident}', 'escalation', 'responder@contoso.com', '[\"ops@contoso.com\",\"oncall@contoso.com\"]', 'ActiveSync on cas01', 'mail', 'pending', 2, 'connection refused', 9000, 5000, NULL)"),
        format!("INSERT INTO notifications (id, incident_id, kind, mail_from, recipients, subject, message, status, attempts, last_error, next_attempt_at, created_at, sent_at)
                 VALUES ('n1-{incident}', '{incident}', 'approval', 'responder@contoso.com', '[\"ops@contoso.com\"]', 'Approve a restart', 'mail', 'sent', 1, NULL, 4000, 4000, 4500)"),
        format!("INSERT INTO approvals (id, incident_id, seq, token_sha256, server, actions, command, requested_at, expires_at, decided_at, decision, decided_via, reason)
                 VALUES ('p1-{incident}', '{incident}', 3, 'first', 'cas01.contoso.com', '[\"restart_app_pool\"]', 'Restart-WebAppPool', 4000, 8000, 6000, 'denied', 'page', 'not now')"),
        format!("INSERT INTO approvals (id, incident_id, seq, token_sha256, server, actions, command, requested_at, expires_at, decided_at, decision, decided_via, reason)
                 VALUES ('p2-{incident}', '{incident}', 4, 'second', 'cas01.contoso.com', '[\"restart_app_pool\",\"iis_reset\"]', 'Restart-WebAppPool\niisreset', 7000, 9000, NULL, NULL, NULL, NULL)"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_incidents_read_the_same_on_both_backends() {
    let (pg, sqlite, dir, url) = both_given_deliveries().await;
    let (mut ours_named, mut theirs_named) = (Names::default(), Names::default());
    let (ours, theirs) =
        (pg.list_alerts(100, None).await.unwrap(), sqlite.list_alerts(100, None).await.unwrap());
    assert_eq!(ours.len(), 6, "every alert that is not a duplicate: {ours:?}");
    assert!(ours[5].message.starts_with("probe failed"), "newest first: {ours:?}");
    assert!(ours.iter().any(|a| a.message.starts_with("Error occurred: User:")), "{ours:?}");
    assert_eq!(
        comparable(&ours, &mut ours_named),
        comparable(&theirs, &mut theirs_named),
        "the list of alerts"
    );
    for (our, their) in ours.iter().zip(&theirs) {
        let (detail, theirs) = (
            pg.alert(our.id.clone()).await.unwrap(),
            sqlite.alert(their.id.clone()).await.unwrap(),
        );
        assert_eq!(detail.raw_bytes, theirs.raw_bytes, "the body byte for byte");
        assert_eq!(
            comparable(&detail, &mut ours_named),
            comparable(&theirs, &mut theirs_named),
            "alert {}",
            our.message
        );
    }

    // The first incident's timeline, emails and approvals, written alike into both databases.
    let ours = pg.list_incidents(None, 100, None).await.unwrap();
    let theirs = sqlite.list_incidents(None, 100, None).await.unwrap();
    assert_eq!(ours.len(), 3, "{ours:?}");
    let (our_first, their_first) = (ours[2].id.clone(), theirs[2].id.clone());
    let db = connect(&url).await;
    for sql in timeline(&our_first) {
        db.execute(sql.as_str(), &[]).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
    let file =
        rusqlite::Connection::open(dir.path().join(healthset_responder::store::DB_FILE)).unwrap();
    for sql in timeline(&their_first) {
        file.execute(&sql, []).unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
    drop(file);

    let ours = pg.list_incidents(None, 100, None).await.unwrap();
    let theirs = sqlite.list_incidents(None, 100, None).await.unwrap();
    assert_eq!(
        ours[2].approval.as_ref().map(|a| (a.status.as_str(), a.command.as_str())),
        Some(("pending", "Restart-WebAppPool\niisreset")),
        "the latest approval, undecided: {ours:?}"
    );
    assert_eq!(ours[2].alert_ids.len(), 2, "both alerts of cas01: {ours:?}");
    assert_eq!(
        comparable(&ours, &mut ours_named),
        comparable(&theirs, &mut theirs_named),
        "the list of incidents"
    );
    for state in [State::Queued, State::Recovered] {
        let (ours, theirs) = (
            pg.list_incidents(Some(state), 100, None).await.unwrap(),
            sqlite.list_incidents(Some(state), 100, None).await.unwrap(),
        );
        assert_eq!(
            comparable(&ours, &mut ours_named),
            comparable(&theirs, &mut theirs_named),
            "the incidents {state:?}"
        );
    }
    for (our, their) in ours.iter().zip(&theirs) {
        let (view, theirs) = (
            pg.incident(our.id.clone()).await.unwrap(),
            sqlite.incident(their.id.clone()).await.unwrap(),
        );
        assert_eq!(
            comparable(&view, &mut ours_named),
            comparable(&theirs, &mut theirs_named),
            "incident on {}",
            our.server
        );
        let (alerts, theirs) = (
            pg.incident_alerts(our.id.clone()).await.unwrap(),
            sqlite.incident_alerts(their.id.clone()).await.unwrap(),
        );
        assert_eq!(
            alerts.iter().map(|a| &a.id).collect::<Vec<_>>(),
            view.alert_ids.iter().collect::<Vec<_>>()
        );
        assert_eq!(
            comparable(&alerts, &mut ours_named),
            comparable(&theirs, &mut theirs_named),
            "the alerts of the incident on {}",
            our.server
        );
    }
    let view = pg.incident(our_first).await.unwrap();
    let steps = view.steps.expect("a single incident shows its timeline");
    assert_eq!(
        steps.iter().map(|s| s.action.as_str()).collect::<Vec<_>>(),
        ["component_state", "ma_history"]
    );
    let emails = view.notifications.expect("and its emails");
    assert_eq!(
        emails.iter().map(|n| (n.kind.as_str(), n.to.len())).collect::<Vec<_>>(),
        [("approval", 1), ("escalation", 2)],
        "oldest first"
    );
    assert_eq!(
        view.mailbox_hint.as_deref(),
        Some("mbx01.contoso.com"),
        "the mailbox server a later alert named"
    );

    let (ours, theirs) = (
        pg.alert("no-such-alert".into()).await.map_err(StoreError::from),
        sqlite.alert("no-such-alert".into()).await,
    );
    assert_eq!(ours.expect_err("postgres").to_string(), theirs.expect_err("sqlite").to_string());
    let (ours, theirs) = (
        pg.incident("no-such-incident".into()).await.map_err(StoreError::from),
        sqlite.incident("no-such-incident".into()).await,
    );
    let ours = ours.expect_err("postgres");
    assert!(matches!(ours, StoreError::NotFound(_)), "{ours:?}");
    assert_eq!(ours.to_string(), theirs.expect_err("sqlite").to_string());
    assert_eq!(ours.to_string(), "not found: incident no-such-incident");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_incidents_page_from_before_the_same_on_both_backends() {
    let (pg, sqlite, _dir, _url) = both_given_deliveries().await;
    let (mut ours_named, mut theirs_named) = (Names::default(), Names::default());
    let (mut before, mut their_before) = (None, None);
    let mut seen = Vec::new();
    for page in 0..4 {
        let ours = pg.list_alerts(4, before.clone()).await.unwrap();
        let theirs = sqlite.list_alerts(4, their_before.clone()).await.unwrap();
        assert_eq!(ours.len(), [4, 2, 0, 0][page], "page {page}: {ours:?}");
        assert_eq!(
            comparable(&ours, &mut ours_named),
            comparable(&theirs, &mut theirs_named),
            "page {page} of alerts"
        );
        before = ours.last().map(|a| a.id.clone()).or(before);
        their_before = theirs.last().map(|a| a.id.clone()).or(their_before);
        seen.extend(ours.into_iter().map(|a| a.id));
    }
    let all: Vec<String> =
        pg.list_alerts(100, None).await.unwrap().into_iter().map(|a| a.id).collect();
    assert_eq!(seen, all, "the pages together are every alert once, newest first");

    let (mut before, mut their_before) = (None, None);
    let mut seen = Vec::new();
    for page in 0..3 {
        let ours = pg.list_incidents(Some(State::Queued), 2, before.clone()).await.unwrap();
        let theirs =
            sqlite.list_incidents(Some(State::Queued), 2, their_before.clone()).await.unwrap();
        assert_eq!(ours.len(), [2, 1, 0][page], "page {page}: {ours:?}");
        assert_eq!(
            comparable(&ours, &mut ours_named),
            comparable(&theirs, &mut theirs_named),
            "page {page} of incidents"
        );
        before = ours.last().map(|i| i.id.clone()).or(before);
        their_before = theirs.last().map(|i| i.id.clone()).or(their_before);
        seen.extend(ours.into_iter().map(|i| i.server));
    }
    assert_eq!(
        seen,
        ["cas03.contoso.com", "cas02.contoso.com", "cas01.contoso.com"],
        "newest first"
    );
    assert!(
        pg.list_incidents(Some(State::Escalated), 10, None).await.unwrap().is_empty(),
        "none in another state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_is_refused_while_its_key_is_open_and_opens_an_incident_once_it_is_not() {
    let url = database().await;
    let (a, b) = two_instances(&url).await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Sqlite::open(dir.path()).unwrap();
    let body = body(Some("a1"), "cas01.contoso.com", "firing");
    let (_, alerts) = delivery("scom", Some("msg_1"), &body);
    let first = accept(&a, Some("msg_1"), &body, now_ms()).await.alerts.remove(0);
    let (d, their_alerts) = delivery("scom", Some("msg_1"), &body);
    let theirs = sqlite.accept(d, their_alerts, false, WINDOW).await.unwrap().alerts.remove(0);
    let open = first.incident_id.clone().expect("the alert opened an incident");

    let refused = b
        .replay(first.alert_id.clone(), alerts[0].clone(), true)
        .await
        .map_err(StoreError::from)
        .expect_err("refused while the incident is open");
    assert!(matches!(&refused, StoreError::Conflict(id) if *id == open), "{refused:?}");
    let their_refusal = sqlite
        .replay(theirs.alert_id.clone(), alerts[0].clone(), true)
        .await
        .expect_err("sqlite refuses it too");
    assert!(matches!(their_refusal, StoreError::Conflict(_)), "{their_refusal:?}");
    let db = connect(&url).await;
    assert_eq!(
        count(&db, "SELECT count(*) FROM incidents").await,
        1,
        "a refused replay opens nothing"
    );

    // The incident ends; two instances replaying the alert at once open one incident between them.
    db.execute("UPDATE incidents SET state = 'recovered', open_key = NULL", &[]).await.unwrap();
    let (one, other) = tokio::join!(
        a.replay(first.alert_id.clone(), alerts[0].clone(), true),
        b.replay(first.alert_id.clone(), alerts[0].clone(), true)
    );
    let (replayed, refused) = match (one, other) {
        (Ok(id), Err(err)) | (Err(err), Ok(id)) => (id, StoreError::from(err)),
        other => panic!("one replay opens the incident, the other is refused: {other:?}"),
    };
    assert!(matches!(&refused, StoreError::Conflict(id) if *id == replayed), "{refused:?}");
    assert_eq!(refused.to_string(), replayed, "the refusal names the incident open now");

    let incident = a.incident(replayed.clone()).await.unwrap();
    assert_eq!(incident.replay_of.as_deref(), Some(first.alert_id.as_str()));
    assert!(incident.dry_run, "a dry run as asked");
    assert_eq!(incident.state, "queued");
    assert_eq!(
        incident.alert_ids,
        std::slice::from_ref(&first.alert_id),
        "the alert is linked to the replay"
    );
    let alert = b.alert(first.alert_id.clone()).await.unwrap();
    assert_eq!(alert.incident_ids, [open, replayed.clone()], "the alert names both incidents");
    assert_eq!(alert.summary.incident_id.as_deref(), first.incident_id.as_deref());
    let linked = b.incident_alerts(replayed).await.unwrap();
    assert_eq!(linked.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), [first.alert_id.as_str()]);
    assert_eq!(count(&db, "SELECT count(*) FROM incidents").await, 2);
}

#[tokio::test]
async fn the_readiness_probe_writes_as_much_as_the_largest_delivery() {
    let url = database().await;
    let pg = Postgres::connect(&url, 1).await.unwrap();
    let db = connect(&url).await;
    for bytes in [1 << 20, 16] {
        pg.check_writable(bytes).await.expect("the database takes writes");
        let length: i32 = db
            .query_one("SELECT length(value) FROM settings WHERE key = 'ready_check'", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            length, bytes as i32,
            "the probe wrote {bytes} bytes, and replaced the last one"
        );
    }
    assert_eq!(count(&db, "SELECT count(*) FROM settings").await, 1, "one probe row, nothing else");
    assert_eq!(pg.paused().await.unwrap(), None, "the probe is no pause");
}

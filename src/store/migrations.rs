//! Versioned schema migrations, tracked in `PRAGMA user_version`. Append new steps; never edit an applied one.

use rusqlite::{Connection, OptionalExtension};

const MIGRATIONS: &[&str] = &[
    // 1: deliveries, alerts, incidents and their journal, notifications, silences, settings.
    r#"
    CREATE TABLE deliveries (
        id          TEXT PRIMARY KEY,
        received_at INTEGER NOT NULL,
        sender      TEXT NOT NULL,
        format      TEXT NOT NULL,
        webhook_id  TEXT,
        body        BLOB NOT NULL,
        response    TEXT,
        error       TEXT
    );
    CREATE UNIQUE INDEX deliveries_by_webhook_id ON deliveries(sender, webhook_id)
        WHERE webhook_id IS NOT NULL AND error IS NULL;
    CREATE INDEX deliveries_rejected ON deliveries(received_at) WHERE error IS NOT NULL;

    CREATE TABLE incidents (
        id            TEXT PRIMARY KEY,
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL,
        state         TEXT NOT NULL,
        dry_run       INTEGER NOT NULL,
        health_set    TEXT NOT NULL,
        server        TEXT NOT NULL,
        monitor       TEXT,
        monitor_found INTEGER NOT NULL DEFAULT 0,
        mailbox_hint  TEXT,
        open_key      TEXT,
        reason        TEXT,
        resolved_at   INTEGER,
        replay_of     TEXT
    );
    CREATE UNIQUE INDEX incidents_open ON incidents(open_key) WHERE open_key IS NOT NULL;
    CREATE INDEX incidents_by_state ON incidents(state);

    CREATE TABLE alerts (
        id           TEXT PRIMARY KEY,
        delivery_id  TEXT NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
        position     INTEGER NOT NULL,
        received_at  INTEGER NOT NULL,
        sender       TEXT NOT NULL,
        format       TEXT NOT NULL,
        source_key   TEXT,
        health_set   TEXT NOT NULL,
        server       TEXT NOT NULL,
        monitor      TEXT,
        mailbox_hint TEXT,
        message      TEXT NOT NULL,
        status       TEXT NOT NULL,
        raised_at    TEXT,
        incident_id  TEXT,
        disposition  TEXT NOT NULL
    );
    CREATE UNIQUE INDEX alerts_by_source_key ON alerts(format, source_key) WHERE source_key IS NOT NULL;
    CREATE INDEX alerts_by_incident ON alerts(incident_id);

    CREATE TABLE incident_alerts (
        incident_id TEXT NOT NULL REFERENCES incidents(id) ON DELETE CASCADE,
        alert_id    TEXT NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
        linked_at   INTEGER NOT NULL,
        PRIMARY KEY (incident_id, alert_id)
    );
    CREATE INDEX incident_alerts_by_alert ON incident_alerts(alert_id);

    CREATE TABLE steps (
        incident_id  TEXT NOT NULL REFERENCES incidents(id) ON DELETE CASCADE,
        seq          INTEGER NOT NULL,
        action       TEXT NOT NULL,
        server       TEXT NOT NULL,
        server_group TEXT,
        command      TEXT NOT NULL,
        counted      INTEGER NOT NULL DEFAULT 0,
        started_at   INTEGER NOT NULL,
        finished_at  INTEGER,
        outcome      TEXT,
        detail       TEXT NOT NULL DEFAULT '',
        unhealthy    TEXT,
        PRIMARY KEY (incident_id, seq)
    );
    CREATE INDEX steps_by_server ON steps(action, server, started_at) WHERE counted = 1;
    CREATE INDEX steps_by_group ON steps(action, server_group, started_at) WHERE counted = 1;

    CREATE TABLE notifications (
        id              TEXT PRIMARY KEY,
        incident_id     TEXT NOT NULL REFERENCES incidents(id) ON DELETE CASCADE,
        kind            TEXT NOT NULL,
        mail_from       TEXT NOT NULL,
        recipients      TEXT NOT NULL,
        subject         TEXT NOT NULL,
        message         BLOB NOT NULL,
        status          TEXT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        last_error      TEXT,
        next_attempt_at INTEGER NOT NULL,
        created_at      INTEGER NOT NULL,
        sent_at         INTEGER
    );
    CREATE INDEX notifications_due ON notifications(next_attempt_at) WHERE status = 'pending';

    CREATE TABLE silences (
        id         TEXT PRIMARY KEY,
        server     TEXT NOT NULL,
        until      INTEGER NOT NULL,
        reason     TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );

    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    "#,
    // 2: locks on servers that outlive a driver (a pause, a restart), and whether a step found its change already
    // in place (activation an administrator had disabled).
    r#"
    CREATE TABLE server_locks (
        server      TEXT PRIMARY KEY,
        incident_id TEXT NOT NULL REFERENCES incidents(id) ON DELETE CASCADE,
        since       INTEGER NOT NULL
    );
    CREATE INDEX server_locks_by_incident ON server_locks(incident_id);
    ALTER TABLE steps ADD COLUMN already_in_place INTEGER NOT NULL DEFAULT 0;
    "#,
    // 3: deduplication per sender: a source alert id or fingerprint is one sender's; and the SHA-256 of each
    // accepted body, so that the same body from the same sender within intake.duplicate_window is a duplicate
    // (senders that carry no delivery id or source id have nothing else to tell a replay by).
    r#"
    DROP INDEX alerts_by_source_key;
    CREATE UNIQUE INDEX alerts_by_source_key ON alerts(sender, format, source_key) WHERE source_key IS NOT NULL;
    ALTER TABLE deliveries ADD COLUMN body_sha256 BLOB;
    CREATE INDEX deliveries_by_body ON deliveries(sender, body_sha256, received_at) WHERE body_sha256 IS NOT NULL AND error IS NULL;
    "#,
    // 4: an incident that made no progress is reported once.
    r#"
    ALTER TABLE incidents ADD COLUMN stall_notified INTEGER NOT NULL DEFAULT 0;
    "#,
    // 5: approvals. One row per request: the `approval` step that asked, what it covers, the SHA-256 of its link's
    // token (the token itself is never stored), its deadline, and once decided, the decision, how and why.
    r#"
    CREATE TABLE approvals (
        id           TEXT PRIMARY KEY,
        incident_id  TEXT NOT NULL REFERENCES incidents(id) ON DELETE CASCADE,
        seq          INTEGER NOT NULL,
        token_sha256 BLOB NOT NULL UNIQUE,
        server       TEXT NOT NULL,
        actions      TEXT NOT NULL,
        command      TEXT NOT NULL,
        requested_at INTEGER NOT NULL,
        expires_at   INTEGER NOT NULL,
        decided_at   INTEGER,
        decision     TEXT,
        decided_via  TEXT,
        reason       TEXT
    );
    CREATE INDEX approvals_by_incident ON approvals(incident_id, requested_at);
    CREATE INDEX approvals_pending ON approvals(expires_at) WHERE decided_at IS NULL;
    "#,
    // 6: Managed Availability's recovery actions an `ma_history` step found: on the step, for the planner and the
    // email, and once each (they are read again by later incidents) for the throttles, under the responder's action
    // kind they count as.
    r#"
    ALTER TABLE steps ADD COLUMN ma_actions TEXT;
    CREATE TABLE ma_actions (
        server       TEXT NOT NULL,
        server_group TEXT,
        kind         TEXT NOT NULL,
        action_id    TEXT NOT NULL,
        resource     TEXT NOT NULL,
        requestor    TEXT NOT NULL,
        ended_at     INTEGER NOT NULL,
        PRIMARY KEY (server, action_id, resource, ended_at)
    );
    CREATE INDEX ma_actions_by_group ON ma_actions(kind, server_group, ended_at);
    "#,
    // 7: intake writes each body once and keeps only the indexes a query uses. An alert whose message is found byte
    // for byte in its delivery's body refers to it there (`message_at`, a byte offset, and `message_len`) and keeps
    // an empty `message`, instead of a second copy. No query looks alerts up by incident (`incident_alerts` links
    // them), so `alerts_by_incident` goes. The same body is a duplicate only for a delivery without a delivery id,
    // so only those deliveries carry `body_sha256`, and only they are in the index that finds it. Rejected
    // deliveries are listed by id, newest first, not by when they arrived: their index is by id.
    r#"
    ALTER TABLE alerts ADD COLUMN message_at INTEGER;
    ALTER TABLE alerts ADD COLUMN message_len INTEGER;
    DROP INDEX alerts_by_incident;
    DROP INDEX deliveries_by_body;
    CREATE INDEX deliveries_by_body ON deliveries(sender, body_sha256, received_at)
        WHERE body_sha256 IS NOT NULL AND webhook_id IS NULL AND error IS NULL;
    DROP INDEX deliveries_rejected;
    CREATE INDEX deliveries_rejected ON deliveries(id) WHERE error IS NOT NULL;
    "#,
    // 8: intake records an alert's incident on the alert alone (`alerts.incident_id`); the writer links alerts to
    // their incidents in `incident_alerts` behind it, many at once in incident order (`links.rs`). `links_through` is
    // the last alert (by rowid) so linked; `links` is every link: those in `incident_alerts` and those of the alerts
    // after it. Every alert kept before this version was linked at intake.
    r#"
    CREATE TABLE links_through (alert_rowid INTEGER NOT NULL);
    INSERT INTO links_through (alert_rowid) SELECT COALESCE(MAX(rowid), 0) FROM alerts;
    CREATE VIEW links AS
        SELECT incident_id, alert_id, linked_at FROM incident_alerts
        UNION ALL
        SELECT a.incident_id, a.id, a.received_at FROM alerts a
        WHERE a.rowid > (SELECT alert_rowid FROM links_through) AND a.incident_id IS NOT NULL;
    "#,
    // 9: every foreign key's child column is indexed. Deleting a delivery finds the alerts that came in it (to
    // cascade) and deleting an incident its emails; without an index each of those is a scan of the whole child
    // table, once per row deleted, so that pruning a storm's deliveries held the writer, and intake, for an hour.
    r#"
    CREATE INDEX alerts_by_delivery ON alerts(delivery_id);
    CREATE INDEX notifications_by_incident ON notifications(incident_id);
    "#,
    // 10: intake checks every alert's server against the silences, which retention keeps for as long as the rest
    // (90 days by default): the check searches them by server instead of reading every silence ever set.
    r#"
    CREATE INDEX silences_by_server ON silences(server, until);
    "#,
    // 11: a delivery is kept under an integer key (`seq`, its rowid), and its alerts refer to it by that key
    // (`alerts.delivery_seq`). Its public id stays a column, indexed only for the rejected ones that are listed by
    // it. Every delivery used to be written twice, in its table and in the index of its text key, and every alert
    // once more in the index of that text key by delivery: in a storm's commits, those two indexes were a fifth of
    // what went to the WAL. Rowids are kept, so `links_through` still marks the same alerts. The tables are renamed
    // the legacy way, which leaves the view `links` (migration 8) naming `alerts` as it did: SQLite otherwise checks
    // every view when a table is renamed, and `links` names a table that is gone until the rename.
    r#"
    CREATE TABLE deliveries_by_seq (
        seq INTEGER PRIMARY KEY, id TEXT NOT NULL, received_at INTEGER NOT NULL,
        sender TEXT NOT NULL, format TEXT NOT NULL, webhook_id TEXT, body BLOB NOT NULL, body_sha256 BLOB,
        response TEXT, error TEXT
    );
    INSERT INTO deliveries_by_seq (seq, id, received_at, sender, format, webhook_id, body, response, error, body_sha256)
        SELECT rowid, id, received_at, sender, format, webhook_id, body, response, error, body_sha256 FROM deliveries;
    CREATE TABLE alerts_by_seq (
        id TEXT PRIMARY KEY,
        delivery_seq INTEGER NOT NULL REFERENCES deliveries(seq) ON DELETE CASCADE, position INTEGER NOT NULL,
        received_at INTEGER NOT NULL, sender TEXT NOT NULL, format TEXT NOT NULL, source_key TEXT,
        health_set TEXT NOT NULL, server TEXT NOT NULL, monitor TEXT, mailbox_hint TEXT,
        message TEXT NOT NULL, message_at INTEGER, message_len INTEGER,
        status TEXT NOT NULL, raised_at TEXT, incident_id TEXT, disposition TEXT NOT NULL
    );
    INSERT INTO alerts_by_seq (rowid, id, delivery_seq, position, received_at, sender, format, source_key, health_set,
            server, monitor, mailbox_hint, message, status, raised_at, incident_id, disposition, message_at, message_len)
        SELECT a.rowid, a.id, d.rowid, a.position, a.received_at, a.sender, a.format, a.source_key, a.health_set,
            a.server, a.monitor, a.mailbox_hint, a.message, a.status, a.raised_at, a.incident_id, a.disposition,
            a.message_at, a.message_len
        FROM alerts a JOIN deliveries d ON d.id = a.delivery_id ORDER BY a.rowid;
    DROP TABLE alerts;
    DROP TABLE deliveries;
    PRAGMA legacy_alter_table = ON;
    ALTER TABLE deliveries_by_seq RENAME TO deliveries;
    ALTER TABLE alerts_by_seq RENAME TO alerts;
    PRAGMA legacy_alter_table = OFF;
    CREATE UNIQUE INDEX deliveries_by_webhook_id ON deliveries(sender, webhook_id)
        WHERE webhook_id IS NOT NULL AND error IS NULL;
    CREATE INDEX deliveries_by_body ON deliveries(sender, body_sha256, received_at)
        WHERE body_sha256 IS NOT NULL AND webhook_id IS NULL AND error IS NULL;
    CREATE INDEX deliveries_rejected ON deliveries(id) WHERE error IS NOT NULL;
    CREATE UNIQUE INDEX alerts_by_source_key ON alerts(sender, format, source_key) WHERE source_key IS NOT NULL;
    CREATE INDEX alerts_by_delivery ON alerts(delivery_seq);
    "#,
    // 12: a delivery's body may be kept compressed; `body_encoding` says how (`sqlite/bodies.rs`). NULL, every body
    // kept before, is a body as it came.
    r#"
    ALTER TABLE deliveries ADD COLUMN body_encoding TEXT;
    "#,
];

pub fn apply(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > MIGRATIONS.len() {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "the database is at schema version {version}, newer than this build knows ({}); use a newer healthset-responder",
            MIGRATIONS.len()
        )));
    }
    migrate(conn, version, MIGRATIONS)
}

/// Applies `migrations` after the first `done`, each in a transaction of its own. Foreign keys are not enforced
/// while one runs, so that a table can be made again (a new table, the rows copied, the old one dropped and the new
/// one renamed) without its children being deleted with the old one; before it commits, every reference is checked
/// instead, and a migration that left one broken is rolled back with the first it found.
fn migrate(conn: &mut Connection, done: usize, migrations: &[&str]) -> rusqlite::Result<()> {
    if done >= migrations.len() {
        return Ok(());
    }
    let enforced: bool = conn.query_row("PRAGMA foreign_keys", [], |row| row.get(0))?;
    conn.pragma_update(None, "foreign_keys", false)?;
    let migrated = (done..migrations.len()).try_for_each(|index| {
        let tx = conn.transaction()?;
        tx.execute_batch(migrations[index])?;
        let broken = tx
            .query_row("SELECT \"table\", rowid, parent FROM pragma_foreign_key_check", [], |row| {
                Ok(format!(
                    "{} row {} refers to a missing {} row",
                    row.get::<_, String>(0)?,
                    row.get::<_, Option<i64>>(1)?.unwrap_or_default(),
                    row.get::<_, String>(2)?
                ))
            })
            .optional()?;
        if let Some(broken) = broken {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY),
                Some(format!(
                    "schema migration {} would break a reference ({broken}); nothing was changed",
                    index + 1
                )),
            ));
        }
        tx.pragma_update(None, "user_version", index + 1)?;
        tx.commit()
    });
    conn.pragma_update(None, "foreign_keys", enforced)?;
    migrated
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An empty store of the newest schema, in memory.
    pub(in crate::store) fn migrated() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        apply(&mut conn).unwrap();
        conn
    }

    /// How SQLite runs `sql` (its parameters unbound): each step's id, its parent's, and what it does.
    pub(in crate::store) fn query_plan(conn: &Connection, sql: &str) -> Vec<(i64, i64, String)> {
        let mut plan = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let unbound = vec![rusqlite::types::Null; plan.parameter_count()];
        let steps = plan
            .query_map(rusqlite::params_from_iter(unbound), |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(3)?))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        steps
    }

    fn strings(conn: &Connection, sql: &str, column: &str) -> Vec<String> {
        let mut statement = conn.prepare(sql).unwrap();
        let names = statement
            .query_map([], |row| row.get::<_, String>(column))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        names
    }

    /// A store kept before deliveries had integer keys: the same alerts, under the same rowids and ids, read the
    /// same messages back from the same bodies, and the links and the mark of what is linked are unchanged.
    #[test]
    fn deliveries_take_integer_keys_and_their_alerts_keep_everything_else() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        migrate(&mut conn, 0, &MIGRATIONS[..10]).unwrap();
        conn.execute_batch(
            "INSERT INTO deliveries (id, received_at, sender, format, webhook_id, body, response)
                 VALUES ('d-1', 1, 'scom', 'native', 'msg_1', CAST('{\"message\":\"Error occurred\"}' AS BLOB), '{}'),
                        ('d-2', 2, 'scom', 'native', NULL, x'7b7d', '{}');
             INSERT INTO deliveries (id, received_at, sender, format, body, error)
                 VALUES ('d-3', 3, 'scom', 'native', x'00', 'not JSON');
             INSERT INTO incidents (id, created_at, updated_at, state, dry_run, health_set, server)
                 VALUES ('i-1', 1, 1, 'queued', 0, 'ActiveSync', 'cas01.contoso.com');
             INSERT INTO alerts (rowid, id, delivery_id, position, received_at, sender, format, health_set, server,
                     message, status, incident_id, disposition, message_at, message_len)
                 VALUES (7, 'a-1', 'd-1', 0, 1, 'scom', 'native', 'ActiveSync', 'cas01.contoso.com', '', 'firing',
                         'i-1', 'new_incident', 12, 14),
                        (9, 'a-2', 'd-2', 0, 2, 'scom', 'native', 'ActiveSync', 'cas01.contoso.com', 'kept', 'firing',
                         'i-1', 'attached', NULL, NULL);
             INSERT INTO incident_alerts (incident_id, alert_id, linked_at) VALUES ('i-1', 'a-1', 1);
             UPDATE links_through SET alert_rowid = 7;",
        )
        .unwrap();
        migrate(&mut conn, 10, MIGRATIONS).unwrap();
        let rows: Vec<(i64, String, String, String)> = conn
            .prepare(
                "SELECT a.rowid, a.id, d.id,
                        CASE WHEN a.message_at IS NULL THEN a.message
                             ELSE CAST(substr(d.body, a.message_at + 1, a.message_len) AS TEXT) END
                 FROM alerts a JOIN deliveries d ON d.seq = a.delivery_seq ORDER BY a.rowid",
            )
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                (7, "a-1".to_owned(), "d-1".to_owned(), "Error occurred".to_owned()),
                (9, "a-2".to_owned(), "d-2".to_owned(), "kept".to_owned())
            ]
        );
        let links = strings(&conn, "SELECT alert_id FROM links ORDER BY alert_id", "alert_id");
        assert_eq!(links, ["a-1", "a-2"], "the linked alert and the one above the mark");
        let rejected = strings(&conn, "SELECT id FROM deliveries WHERE error IS NOT NULL", "id");
        assert_eq!(rejected, ["d-3"]);
        let enforced: bool = conn.query_row("PRAGMA foreign_keys", [], |row| row.get(0)).unwrap();
        assert!(enforced, "foreign keys are enforced again once the migrations ran");
        let orphan = conn.execute(
            "INSERT INTO alerts (id, delivery_seq, position, received_at, sender, format, health_set, server,
                 message, status, disposition) VALUES ('a-3', 99, 0, 3, 'scom', 'native', 'ActiveSync',
                 'cas01.contoso.com', 'm', 'firing', 'suppressed')",
            [],
        );
        assert!(orphan.is_err(), "an alert must refer to a delivery that is kept");
    }

    /// A migration that would leave a row referring to nothing is rolled back, and says which.
    #[test]
    fn a_migration_that_breaks_a_reference_changes_nothing() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, 0, MIGRATIONS).unwrap();
        let breaking = "INSERT INTO incident_alerts (incident_id, alert_id, linked_at) VALUES ('gone', 'gone', 1)";
        let err =
            migrate(&mut conn, MIGRATIONS.len(), &[MIGRATIONS, &[breaking]].concat()).unwrap_err();
        let expected = format!(
            "schema migration {} would break a reference (incident_alerts row 1",
            MIGRATIONS.len() + 1
        );
        assert!(err.to_string().contains(&expected), "{err}");
        let version: usize = conn.query_row("PRAGMA user_version", [], |row| row.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len());
        let links: i64 =
            conn.query_row("SELECT COUNT(*) FROM incident_alerts", [], |row| row.get(0)).unwrap();
        assert_eq!(links, 0);
    }

    /// Deleting a parent row looks up its children by the foreign key's columns, to cascade or to refuse; SQLite
    /// does not index them itself. Without an index that is a scan of the child table per row deleted.
    #[test]
    fn every_foreign_key_can_find_its_children_through_an_index() {
        let conn = migrated();
        let tables = strings(
            &conn,
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            "name",
        );
        let mut unindexed = Vec::new();
        for table in &tables {
            let keys = strings(
                &conn,
                &format!("SELECT \"from\" FROM pragma_foreign_key_list('{table}')"),
                "from",
            );
            let leading: Vec<String> =
                strings(&conn, &format!("SELECT name FROM pragma_index_list('{table}')"), "name")
                    .iter()
                    .flat_map(|index| {
                        strings(
                            &conn,
                            &format!(
                                "SELECT name FROM pragma_index_info('{index}') WHERE seqno = 0"
                            ),
                            "name",
                        )
                    })
                    .collect();
            unindexed.extend(
                keys.into_iter()
                    .filter(|key| !leading.contains(key))
                    .map(|key| format!("{table}.{key}")),
            );
        }
        assert!(tables.len() > 10, "the schema has its tables: {tables:?}");
        assert_eq!(
            unindexed,
            Vec::<String>::new(),
            "foreign keys whose children are found by a scan"
        );
    }
}

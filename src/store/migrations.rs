//! Versioned schema migrations, tracked in `PRAGMA user_version`. Append new steps; never edit an applied one.

use rusqlite::Connection;

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
];

pub fn apply(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > MIGRATIONS.len() {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "the database is at schema version {version}, newer than this build knows ({}); use a newer healthset-responder",
            MIGRATIONS.len()
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index + 1)?;
        tx.commit()?;
    }
    Ok(())
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

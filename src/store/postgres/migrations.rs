//! The PostgreSQL schema, as numbered steps recorded in `schema_migrations`. Append new steps; never edit an
//! applied one.
//!
//! The tables and their meaning are the SQLite store's (`store/migrations.rs`), in PostgreSQL's types: times are
//! `bigint` milliseconds since the Unix epoch, flags are `boolean`, bodies and hashes `bytea`. Deduplication is the
//! database's: the unique indexes below are what intake's `INSERT ... ON CONFLICT` statements name, so two instances
//! taking the same delivery at once cannot both keep it.
//!
//! Every instance applies the steps at start, all in one transaction that first takes a transaction-level advisory
//! lock: instances starting together apply them one after the other, and each after the first finds them applied.

use deadpool_postgres::Pool;

use super::{Error, Result};

/// The advisory lock that serialises migrations across instances: a fixed number of the responder's own (the ASCII
/// of "HSR sche"), which nothing else sharing the database should take.
const MIGRATION_LOCK: i64 = 0x4853_5220_7363_6865;

const MIGRATIONS: &[&str] = &[
    // 1: what intake writes: deliveries (and the bodies that tell a replay of a delivery without an id), alerts,
    // incidents and which alerts belong to which incident.
    r#"
    CREATE TABLE deliveries (
        id          text PRIMARY KEY,
        received_at bigint NOT NULL,
        sender      text NOT NULL,
        format      text NOT NULL,
        webhook_id  text,
        body        bytea NOT NULL,
        response    text,
        error       text,
        body_sha256 bytea
    );
    CREATE UNIQUE INDEX deliveries_by_webhook_id ON deliveries (sender, webhook_id) WHERE webhook_id IS NOT NULL AND error IS NULL;
    CREATE INDEX deliveries_rejected ON deliveries (received_at) WHERE error IS NOT NULL;

    -- The latest accepted delivery of each body from each sender. A delivery without a webhook id is a duplicate
    -- while the one recorded here is within the duplicate window; the primary key makes two instances that take
    -- the same body at once agree on which of them keeps it.
    CREATE TABLE delivery_bodies (
        sender      text NOT NULL,
        body_sha256 bytea NOT NULL,
        delivery_id text NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
        received_at bigint NOT NULL,
        PRIMARY KEY (sender, body_sha256)
    );
    CREATE INDEX delivery_bodies_by_delivery ON delivery_bodies (delivery_id);

    CREATE TABLE incidents (
        id             text PRIMARY KEY,
        created_at     bigint NOT NULL,
        updated_at     bigint NOT NULL,
        state          text NOT NULL,
        dry_run        boolean NOT NULL,
        health_set     text NOT NULL,
        server         text NOT NULL,
        monitor        text,
        monitor_found  boolean NOT NULL DEFAULT false,
        mailbox_hint   text,
        open_key       text,
        reason         text,
        resolved_at    bigint,
        replay_of      text,
        stall_notified boolean NOT NULL DEFAULT false
    );
    -- One open incident per server, health set and monitor: an ending sets open_key to NULL.
    CREATE UNIQUE INDEX incidents_open ON incidents (open_key) WHERE open_key IS NOT NULL;
    CREATE INDEX incidents_by_state ON incidents (state);

    CREATE TABLE alerts (
        id           text PRIMARY KEY,
        delivery_id  text NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
        position     bigint NOT NULL,
        received_at  bigint NOT NULL,
        sender       text NOT NULL,
        format       text NOT NULL,
        source_key   text,
        health_set   text NOT NULL,
        server       text NOT NULL,
        monitor      text,
        mailbox_hint text,
        message      text NOT NULL,
        status       text NOT NULL,
        raised_at    text,
        incident_id  text,
        disposition  text NOT NULL
    );
    CREATE UNIQUE INDEX alerts_by_source_key ON alerts (sender, format, source_key) WHERE source_key IS NOT NULL;
    CREATE INDEX alerts_by_incident ON alerts (incident_id);
    CREATE INDEX alerts_by_delivery ON alerts (delivery_id);

    CREATE TABLE incident_alerts (
        incident_id text NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
        alert_id    text NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
        linked_at   bigint NOT NULL,
        PRIMARY KEY (incident_id, alert_id)
    );
    CREATE INDEX incident_alerts_by_alert ON incident_alerts (alert_id);
    "#,
    // 2: the engine's journal of steps and what the instances share around it: the email outbox, silences, settings
    // (pause), the locks on servers that outlive a driver, approvals, and Managed Availability's own recovery actions.
    r#"
    CREATE TABLE steps (
        incident_id      text NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
        seq              bigint NOT NULL,
        action           text NOT NULL,
        server           text NOT NULL,
        server_group     text,
        command          text NOT NULL,
        counted          boolean NOT NULL DEFAULT false,
        started_at       bigint NOT NULL,
        finished_at      bigint,
        outcome          text,
        detail           text NOT NULL DEFAULT '',
        unhealthy        text,
        already_in_place boolean NOT NULL DEFAULT false,
        ma_actions       text,
        PRIMARY KEY (incident_id, seq)
    );
    CREATE INDEX steps_by_server ON steps (action, server, started_at) WHERE counted;
    CREATE INDEX steps_by_group ON steps (action, server_group, started_at) WHERE counted;

    CREATE TABLE notifications (
        id              text PRIMARY KEY,
        incident_id     text NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
        kind            text NOT NULL,
        mail_from       text NOT NULL,
        recipients      text NOT NULL,
        subject         text NOT NULL,
        message         bytea NOT NULL,
        status          text NOT NULL,
        attempts        bigint NOT NULL DEFAULT 0,
        last_error      text,
        next_attempt_at bigint NOT NULL,
        created_at      bigint NOT NULL,
        sent_at         bigint
    );
    CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE status = 'pending';
    CREATE INDEX notifications_by_incident ON notifications (incident_id);

    CREATE TABLE silences (
        id         text PRIMARY KEY,
        server     text NOT NULL,
        until      bigint NOT NULL,
        reason     text NOT NULL,
        created_at bigint NOT NULL
    );
    CREATE INDEX silences_by_server ON silences (server, until);

    CREATE TABLE settings (
        key   text PRIMARY KEY,
        value text NOT NULL
    );

    CREATE TABLE server_locks (
        server      text PRIMARY KEY,
        incident_id text NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
        since       bigint NOT NULL
    );
    CREATE INDEX server_locks_by_incident ON server_locks (incident_id);

    CREATE TABLE approvals (
        id           text PRIMARY KEY,
        incident_id  text NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
        seq          bigint NOT NULL,
        token_sha256 bytea NOT NULL UNIQUE,
        server       text NOT NULL,
        actions      text NOT NULL,
        command      text NOT NULL,
        requested_at bigint NOT NULL,
        expires_at   bigint NOT NULL,
        decided_at   bigint,
        decision     text,
        decided_via  text,
        reason       text
    );
    CREATE INDEX approvals_by_incident ON approvals (incident_id, requested_at);
    CREATE INDEX approvals_pending ON approvals (expires_at) WHERE decided_at IS NULL;

    CREATE TABLE ma_actions (
        server       text NOT NULL,
        server_group text,
        kind         text NOT NULL,
        action_id    text NOT NULL,
        resource     text NOT NULL,
        requestor    text NOT NULL,
        ended_at     bigint NOT NULL,
        PRIMARY KEY (server, action_id, resource, ended_at)
    );
    CREATE INDEX ma_actions_by_group ON ma_actions (kind, server_group, ended_at);
    "#,
    // 3: leases. The instance driving an incident (lease_owner) holds it until lease_until unless it renews; each
    // claim increments lease_epoch, the fencing token every journal write checks, so an instance whose lease ran
    // out and was taken over can no longer write for the incident.
    r#"
    ALTER TABLE incidents ADD COLUMN lease_owner text;
    ALTER TABLE incidents ADD COLUMN lease_until bigint;
    ALTER TABLE incidents ADD COLUMN lease_epoch bigint NOT NULL DEFAULT 0;
    CREATE INDEX incidents_claimable ON incidents (created_at, id) WHERE state IN ('queued', 'running', 'waiting');
    "#,
    // 4: the outbox, shared. Each instance renews its heartbeat in `instances` as it renews its leases; the
    // instance sending a notification claims it (claimed_by) until it records the attempt, and another instance
    // takes the notification over only once the claimer's heartbeat has ended, so a slow SMTP session is never
    // sent twice.
    r#"
    CREATE TABLE instances (
        name        text PRIMARY KEY,
        alive_until bigint NOT NULL
    );
    ALTER TABLE notifications ADD COLUMN claimed_by text;
    "#,
];

/// How many steps this build knows: the schema version it brings a database to.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database to [`VERSION`]: every step not yet recorded, in order, in one transaction under the
/// migration lock. Refuses a database a newer build has migrated further.
pub(super) async fn apply(pool: &Pool, target: &str) -> Result<()> {
    let mut client =
        pool.get().await.map_err(|e| Error::unavailable(target, super::pool_error(e)))?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_migrations (version bigint PRIMARY KEY, applied_at bigint NOT NULL)").await?;
    let applied: i64 =
        tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[]).await?.get(0);
    if applied > VERSION {
        return Err(Error::NewerSchema { target: target.into(), found: applied, known: VERSION });
    }
    for (version, sql) in (1_i64..).zip(MIGRATIONS).skip(applied as usize) {
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)", &[&version])
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

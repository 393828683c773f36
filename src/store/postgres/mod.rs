//! The PostgreSQL store, for several instances sharing one database (SPEC section 8), chosen by
//! `[store] backend = "postgres"`. It answers every call of the storage interface as the SQLite store does, file by
//! file (`intake.rs`, `journal.rs`, `outbox.rs`, `approvals.rs`, `views.rs`, `retention.rs`), and adds what several
//! writers need: this instance's name and the claims it holds on incidents (`leases.rs`), renewed in the
//! background, which every journal write proves.
//!
//! The SQLite store decides duplicates and the one open incident per key by reading before it writes, which is
//! right for one writer. Here several instances write at once, so every such decision is a unique index and an
//! `INSERT ... ON CONFLICT`: an instance taking a delivery that another is taking at the same moment waits on the
//! other's row, and finds it there once the other commits (or takes it, should the other roll back).
//!
//! Time is milliseconds since the Unix epoch, as the SQLite store keeps it. The low-level lease calls (`claim`,
//! `renew`) and intake's `accept_at` compare times the caller gives, so tests choose them; the other calls read the
//! clock as SQLite's do.

mod approvals;
mod intake;
mod journal;
mod leases;
mod migrations;
mod outbox;
mod retention;
mod tls;
mod views;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::mpsc;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::NoTls;

use super::StoreError;

pub use leases::Claim;
pub use migrations::VERSION as SCHEMA_VERSION;

/// What went wrong with the PostgreSQL store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection URL or the pool size cannot be used.
    #[error("{0}")]
    Config(String),
    /// No connection could be had: the server is down or unreachable, refused the login, or every pooled connection
    /// stayed busy. The caller should retry later.
    #[error("PostgreSQL at {target} is unavailable: {detail}")]
    Unavailable { target: Arc<str>, detail: String },
    /// The database was migrated by a newer build.
    #[error("the PostgreSQL database at {target} is at schema version {found}, newer than this build knows ({known}); use a newer healthset-responder")]
    NewerSchema { target: Arc<str>, found: i64, known: i64 },
    /// A write for an incident whose claim this instance no longer holds: its lease ran out and another instance
    /// claimed the incident (or it was never this claim). Nothing was written.
    #[error("{}", lost_claim(.claim, .holder.as_deref(), *.epoch))]
    LostClaim {
        claim: Claim,
        /// The instance holding the incident now, if any, and the epoch of its claim.
        holder: Option<String>,
        epoch: i64,
    },
    /// A journal write for an incident this instance holds no claim on (it never claimed it, or learnt that it
    /// lost the claim). Nothing was written.
    #[error("incident {0}: this instance holds no claim on it; nothing was written")]
    Unclaimed(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// A statement failed; the message is PostgreSQL's own.
    #[error("PostgreSQL: {}", describe(.0))]
    Sql(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    fn unavailable(target: &str, detail: impl std::fmt::Display) -> Error {
        Error::Unavailable { target: target.into(), detail: detail.to_string() }
    }

    /// A deadlock or serialization failure: PostgreSQL undid the statement so that another transaction could go
    /// on, and the same work tried again normally succeeds.
    fn is_retryable(&self) -> bool {
        use tokio_postgres::error::SqlState;
        matches!(self, Error::Sql(err) if err.code().is_some_and(|code| *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE))
    }
}

fn lost_claim(claim: &Claim, holder: Option<&str>, epoch: i64) -> String {
    let now = match holder {
        Some(holder) => format!("{holder} holds it now, at epoch {epoch}"),
        None => format!("nobody holds it now (epoch {epoch})"),
    };
    format!(
        "incident {}: {} no longer holds its claim of epoch {}; {now}; nothing was written",
        claim.incident_id, claim.instance, claim.epoch
    )
}

/// tokio-postgres's own text names only the kind of error ("db error"); the server's message, or the cause of a
/// connection failure, is its source.
fn describe(err: &tokio_postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        return db.to_string().replace('\n', "; ");
    }
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The shortest lease: renewed every third of it, a shorter one would leave too little room for a slow database.
pub const MIN_LEASE: Duration = Duration::from_secs(3);

/// A name for this instance that no other shares, now or later: the host's name, the process id and a random
/// suffix (a restarted process is a new instance, whose claims are its own).
pub fn instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_else(|| "host".to_owned());
    let random = &uuid::Uuid::now_v7().simple().to_string()[24..];
    format!("{host}:{}:{random}", std::process::id())
}

/// How long a caller waits for a pooled connection, and for a new one to be made, before the store is unavailable.
const POOL_WAIT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an instance's claim on an incident lasts unrenewed when `[store] lease` does not say.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The handle every part of an instance shares: a bounded pool, the queue of the intake writer that
/// group-commits deliveries, and the claims this instance holds. Cheap to clone; the writer and the renewal of the
/// claims stop when the last clone is dropped.
#[derive(Clone)]
pub struct Postgres {
    pool: Pool,
    intake: mpsc::Sender<intake::Queued>,
    /// Where the database is, without the password: what errors name.
    target: Arc<str>,
    /// This instance's name, as `lease_owner` records it, and how long its claims last unrenewed.
    instance: Arc<str>,
    lease: Duration,
    /// The incidents this instance has claimed and not yet ended or lost, by id.
    claims: Arc<Mutex<HashMap<String, Claim>>>,
}

impl Postgres {
    /// Connects as [`Postgres::connect_as`] does, under a name of its own ([`instance_name`]) and
    /// [`DEFAULT_LEASE`].
    pub async fn connect(url: &str, pool_size: usize) -> Result<Postgres> {
        Postgres::connect_as(url, pool_size, &instance_name(), DEFAULT_LEASE).await
    }

    /// Connects to the database at `url` (a `postgres://` URL or a `key=value` connection string) with at most
    /// `pool_size` connections, brings its schema to [`SCHEMA_VERSION`], starts the intake writer, and renews the
    /// claims `instance` takes for `lease` every third of it.
    pub async fn connect_as(
        url: &str,
        pool_size: usize,
        instance: &str,
        lease: Duration,
    ) -> Result<Postgres> {
        if instance.is_empty() {
            return Err(Error::Config("an instance sharing the database needs a name".into()));
        }
        if lease < MIN_LEASE {
            return Err(Error::Config(format!(
                "store.lease must be at least {}s: a claim renews every third of it",
                MIN_LEASE.as_secs()
            )));
        }
        if pool_size == 0 {
            return Err(Error::Config(
                "the PostgreSQL pool needs room for at least one connection".into(),
            ));
        }
        let (url, root_cert) = tls::split_root_cert(url);
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            Error::Config(format!("the PostgreSQL connection URL is not valid: {}", describe(&e)))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("healthset-responder");
        }
        let target: Arc<str> = target(&config).into();
        let recycling = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let manager = match tls_of(&config, root_cert).map_err(Error::Config)? {
            Some(root_cert) => Manager::from_config(config, tls::connector(&root_cert)?, recycling),
            None => Manager::from_config(config, NoTls, recycling),
        };
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the PostgreSQL pool: {e}")))?;
        migrations::apply(&pool, &target).await?;
        let intake = intake::start(pool.clone(), target.clone());
        let store = Postgres {
            pool,
            intake,
            target,
            instance: instance.into(),
            lease,
            claims: Arc::default(),
        };
        store.heartbeat(super::now_ms()).await?;
        journal::renew_claims(&store);
        Ok(store)
    }

    /// This instance's name, as the incidents it drives record it.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Where the database is (host, port, database and user; never the password).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// A connection from the pool, waiting at most [`POOL_WAIT`] for one.
    async fn client(&self) -> Result<deadpool_postgres::Client> {
        self.pool.get().await.map_err(|e| Error::unavailable(&self.target, pool_error(e)))
    }
}

fn pool_error(err: deadpool_postgres::PoolError) -> String {
    match err {
        deadpool_postgres::PoolError::Backend(err) => describe(&err),
        deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => {
            format!("no pooled connection became free within {}s", POOL_WAIT.as_secs())
        }
        deadpool_postgres::PoolError::Timeout(_) => {
            format!("the server did not answer within {}s", CONNECT_TIMEOUT.as_secs())
        }
        other => other.to_string(),
    }
}

/// The CA file a connection verifies the server against, when it asks for TLS; why the URL cannot be used, when
/// it asks for TLS without one or names one without asking.
fn tls_of(
    config: &tokio_postgres::Config,
    root_cert: Option<String>,
) -> std::result::Result<Option<String>, String> {
    match (config.get_ssl_mode(), root_cert) {
        (SslMode::Require, Some(root_cert)) => Ok(Some(root_cert)),
        (SslMode::Require, None) => Err("store.url: sslmode=require needs sslrootcert=FILE, the CA certificate (PEM) that signed the server's, so that the server is verified".into()),
        (_, Some(_)) => Err("store.url: sslrootcert is for sslmode=require; add it, or leave sslrootcert out for a plain connection".into()),
        _ => Ok(None),
    }
}

/// Where a connection URL points (`user@host:port/database`, never the password, and how it is secured), or why
/// it cannot be used.
pub fn describe_url(url: &str) -> std::result::Result<String, String> {
    let (url, root_cert) = tls::split_root_cert(url);
    let config = url.parse::<tokio_postgres::Config>().map_err(|_| {
        "store.url: is not a PostgreSQL connection URL like \"postgres://responder@db01/healthset\"".to_owned()
    })?;
    let tls = match tls_of(&config, root_cert)? {
        Some(ca) => format!(" over TLS, verified against {ca}"),
        None => String::new(),
    };
    Ok(format!("{}{tls}", target(&config)))
}

/// `user@host:port/database` of a connection configuration, for messages.
fn target(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(index, host)| {
            let port = config
                .get_ports()
                .get(index)
                .or(config.get_ports().first())
                .copied()
                .unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                #[cfg(unix)]
                Host::Unix(dir) => format!("{}:{port}", dir.display()),
            }
        })
        .collect();
    let hosts = if hosts.is_empty() { "localhost:5432".to_owned() } else { hosts.join(",") };
    let user = config.get_user().map(|user| format!("{user}@")).unwrap_or_default();
    let database = config.get_dbname().or(config.get_user()).unwrap_or("postgres");
    format!("{user}{hosts}/{database}")
}

//! The PostgreSQL store, for several instances sharing one database (SPEC section 8); not yet selectable in
//! `[store]`. What it holds today: a bounded connection pool, the schema and its migrations, intake, replays and
//! rejected deliveries, the readiness probe's write, the alerts and incidents operators read, the leases by which
//! one instance at a time drives an incident, with the fenced journal write that proves them, the silences and the
//! pause switch every instance shares, and retention.
//!
//! The SQLite store decides duplicates and the one open incident per key by reading before it writes, which is
//! right for one writer. Here several instances write at once, so every such decision is a unique index and an
//! `INSERT ... ON CONFLICT`: an instance taking a delivery that another is taking at the same moment waits on the
//! other's row, and finds it there once the other commits (or takes it, should the other roll back).
//!
//! Time is milliseconds since the Unix epoch, as the SQLite store keeps it. Leases and the duplicate window compare
//! times the caller gives, so tests choose them; the other calls read the clock as SQLite's do.

mod intake;
mod leases;
mod migrations;
mod retention;
mod views;

use std::sync::Arc;
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

/// How long a caller waits for a pooled connection, and for a new one to be made, before the store is unavailable.
const POOL_WAIT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The handle every part of an instance shares: a bounded pool, and the queue of the intake writer that
/// group-commits deliveries. Cheap to clone; the writer stops when the last clone is dropped.
#[derive(Clone)]
pub struct Postgres {
    pool: Pool,
    intake: mpsc::Sender<intake::Queued>,
    /// Where the database is, without the password: what errors name.
    target: Arc<str>,
}

impl Postgres {
    /// Connects to the database at `url` (a `postgres://` URL or a `key=value` connection string) with at most
    /// `pool_size` connections, brings its schema to [`SCHEMA_VERSION`] and starts the intake writer.
    pub async fn connect(url: &str, pool_size: usize) -> Result<Postgres> {
        if pool_size == 0 {
            return Err(Error::Config(
                "the PostgreSQL pool needs room for at least one connection".into(),
            ));
        }
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            Error::Config(format!("the PostgreSQL connection URL is not valid: {}", describe(&e)))
        })?;
        if config.get_ssl_mode() == SslMode::Require {
            return Err(Error::Config("the PostgreSQL connection URL asks for TLS (sslmode=require), which this build does not speak yet".into()));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("healthset-responder");
        }
        let target: Arc<str> = target(&config).into();
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
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
        Ok(Postgres { pool, intake, target })
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

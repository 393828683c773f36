//! The store: every alert, incident, step and email the service keeps, behind one interface, [`Store`], that
//! intake, the engine, the notifier and the admin API use. It is the only module that speaks SQL.
//!
//! [`Store`] hands every call to the backend it holds, by name, so a backend answers each call with the same
//! arguments and shapes: [`Sqlite`] (`sqlite.rs`), the embedded default, for one instance, or [`Postgres`]
//! (`postgres/`), for several instances sharing one database (SPEC section 8), chosen by `[store] backend`
//! (`settings.rs`).
//!
//! The submodules beside `sqlite.rs` hold, for one concern each (intake, the engine's journal, approvals, the
//! operator's views, retention), the shapes the interface speaks and the SQLite statements; `postgres/` mirrors
//! them file by file in PostgreSQL's, and adds the leases by which one instance at a time drives an incident.

mod approvals;
mod engine;
mod intake;
mod links;
mod migrations;
pub mod postgres;
mod retention;
mod settings;
mod sqlite;
mod views;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::alert::Alert;
use crate::domain::{Monitor, ServerName};
use crate::incident::{Outcome, State};
use crate::journal::{Action, Ending, Report};

pub use approvals::{ApprovalView, Decided, NewApproval, NewDecision, Requested, Target};
pub use engine::{
    EscalationHistory, IncidentRecord, NewNotification, NewStep, NotificationRow, Runnable,
    Started, StepRecord,
};
pub use intake::{Answer, AnswerItem, Disposition, NewDelivery};
pub use postgres::Postgres;
pub use retention::Pruned;
pub use settings::{Backend, BadStore, StoreConfig, StoreSettings};
pub use sqlite::Sqlite;
pub use views::{
    AlertDetail, AlertSummary, IncidentView, NotificationView, RejectedDelivery, Silence, StepView,
};

/// The name of the database file inside the data directory.
pub const DB_FILE: &str = "healthset-responder.sqlite3";

/// What went wrong with the store. `Unavailable` means the caller should retry later (HTTP 503).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The database file failed its integrity check, or is not a database at all.
    #[error("the store {} is damaged ({detail}); restore it from a backup, or move it aside to start with an empty store", path.display())]
    Damaged { path: PathBuf, detail: String },
    #[error("{0}")]
    Conflict(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("store error: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A write for an incident this instance no longer drives: its claim ran out and another instance took the
    /// incident over (SPEC section 8). Nothing was written; the message names who holds it now.
    #[error("{0}")]
    LostClaim(String),
    /// PostgreSQL refused a statement; the message is its own.
    #[error("{0}")]
    Postgres(String),
}

/// What the service hears of a PostgreSQL store's error: whether to retry later, what was not found, a lost claim,
/// or a statement that failed.
impl From<postgres::Error> for StoreError {
    fn from(err: postgres::Error) -> StoreError {
        match err {
            postgres::Error::Store(err) => err,
            postgres::Error::NotFound(what) => StoreError::NotFound(what),
            err @ (postgres::Error::LostClaim { .. } | postgres::Error::Unclaimed(_)) => {
                StoreError::LostClaim(err.to_string())
            }
            postgres::Error::Sql(sql) if sql.is_closed() || sql.as_db_error().is_none() => {
                StoreError::Unavailable(postgres::Error::Sql(sql).to_string())
            }
            err @ postgres::Error::Sql(_) => StoreError::Postgres(err.to_string()),
            err @ (postgres::Error::Config(_)
            | postgres::Error::Unavailable { .. }
            | postgres::Error::NewerSchema { .. }) => StoreError::Unavailable(err.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Milliseconds since the Unix epoch: how the store keeps time.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A new sortable id: UUID version 7 orders by creation time.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// RFC 3339 text for a store time.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The store the service runs on: one of the two backends, each answering every call below the same way.
#[derive(Clone)]
pub enum Store {
    Sqlite(Sqlite),
    Postgres(Postgres),
}

/// The most connections one instance holds to a PostgreSQL store: the engine's drivers, intake's writer and the
/// admin API share them.
pub const POSTGRES_POOL: usize = 16;

impl Store {
    /// Opens the embedded SQLite store in `data_dir` (see [`Sqlite::open`]).
    pub fn open(data_dir: &Path) -> Result<Store> {
        Sqlite::open(data_dir).map(Store::Sqlite)
    }

    /// Opens the store `[store]` names: the SQLite file in `data_dir`, or the PostgreSQL database, migrated, as
    /// an instance of its own.
    pub async fn connect(settings: &StoreSettings, data_dir: &Path) -> Result<Store> {
        match settings {
            StoreSettings::Sqlite => Store::open(data_dir),
            StoreSettings::Postgres { url, lease } => {
                let instance = postgres::instance_name();
                let store = Postgres::connect_as(url, POSTGRES_POOL, &instance, *lease).await?;
                Ok(Store::Postgres(store))
            }
        }
    }

    /// Where the store is, for the log: the SQLite file, or the PostgreSQL database and this instance's name.
    pub fn describe(&self) -> String {
        match self {
            Store::Sqlite(sqlite) => format!("SQLite {}", sqlite.path().display()),
            Store::Postgres(pg) => format!("PostgreSQL {} as {}", pg.target(), pg.instance()),
        }
    }
}

/// Writes the interface's methods, each handing the call to the backend the store holds, by the same name and
/// with the same arguments.
macro_rules! interface {
    ($($(#[$doc:meta])* fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ok:ty;)*) => {
        impl Store {
            $(
                $(#[$doc])*
                pub async fn $name(&self $(, $arg: $ty)*) -> Result<$ok> {
                    match self {
                        Store::Sqlite(backend) => backend.$name($($arg),*).await,
                        Store::Postgres(backend) => Ok(backend.$name($($arg),*).await?),
                    }
                }
            )*
        }
    };
}

interface! {
    // Intake (`intake.rs`).
    /// Commits a delivery and its alerts, grouping each into an incident; returns once the commit is on disk.
    fn accept(&self, delivery: NewDelivery, alerts: Vec<Alert>, dry_run: bool, duplicate_window: Duration) -> Answer;
    /// Keeps a delivery that was refused, with why; returns its id.
    fn reject(&self, delivery: NewDelivery, error: String) -> String;
    /// Replays a stored alert as a new one; returns the incident it went to.
    fn replay(&self, alert_id: String, alert: Alert, dry_run: bool) -> String;
    /// Whether writes commit, with a probe as large as the largest delivery: what `/readyz` asks.
    fn check_writable(&self, bytes: usize) -> ();

    // The engine's journal (`engine.rs`).
    /// Incidents that are not final (or the one named) that this instance may drive, oldest first. On PostgreSQL
    /// this claims them for this instance.
    fn runnable(&self, only: Option<String>) -> Vec<Runnable>;
    /// How many incidents are driven or waiting to be, by every instance.
    fn open_incidents(&self) -> usize;
    /// Gives up this instance's claims, once its drivers have stopped, so another instance takes over at once.
    fn release_claims(&self) -> ();
    /// An incident with its journal.
    fn load(&self, id: String) -> (IncidentRecord, Vec<StepRecord>);
    fn set_state(&self, id: String, state: State, reason: Option<String>) -> ();
    /// Records the monitor learnt from `Get-ServerHealth`.
    fn set_monitor(&self, id: String, monitor: Monitor) -> ();
    /// Journals a step as started, unless a throttle, the pause or a silence forbids it, decided in the same
    /// transaction.
    fn start_step(&self, id: String, step: NewStep<'_>) -> Started;
    /// Journals a step that did not run, finished at once.
    fn skip_step(&self, id: String, action: Action, command: String, outcome: Outcome, detail: String) -> ();
    /// Records a step's result.
    fn finish_step(&self, id: String, seq: i64, report: Report) -> ();
    /// Ends an incident, frees its key and its servers, and queues its notification in the same transaction.
    fn finish_incident(&self, id: String, ending: Ending, notification: Option<NewNotification>) -> ();
    /// The escalations already queued for the same server, health set and monitor.
    fn escalation_history(&self, incident_id: String) -> EscalationHistory;
    /// Open incidents not updated for `bound_ms` and not yet reported as making no progress.
    fn stalled(&self, bound_ms: i64) -> Vec<(String, i64)>;
    /// Queues the notice that an incident makes no progress, once.
    fn notify_stalled(&self, id: String, notification: NewNotification) -> ();
    /// Every server held by an incident that is not final, and by which incident.
    fn server_locks(&self) -> Vec<(ServerName, String)>;
    /// Takes `server` for `incident`, unless another open incident holds it: then its id.
    fn lock_server(&self, incident: String, server: ServerName) -> Option<String>;

    // The outbox (`engine.rs`).
    /// Notifications due for a delivery attempt, and when the next one falls due.
    fn due_notifications(&self) -> (Vec<NotificationRow>, Option<i64>);
    /// Records the attempt the transport accepted.
    fn notification_sent(&self, id: String) -> ();
    /// Records a failed attempt, its error, and when to try next.
    fn notification_failed(&self, id: String, error: String, next_attempt_at: i64) -> ();

    // Approvals (`approvals.rs`).
    /// Journals a request for a person's approval of the steps that hurt.
    fn request_approval(&self, id: String, approval: NewApproval) -> Requested;
    /// Records a decision on the approval an incident waits on.
    fn decide(&self, target: Target, decision: NewDecision) -> Decided;
    /// The approval an emailed link's token stands for, with its incident.
    fn approval_for_token(&self, token_sha256: [u8; 32]) -> Option<(IncidentView, ApprovalView)>;
    /// Incidents whose approval has expired undecided.
    fn expired_approvals(&self) -> Vec<String>;

    // What operators read and change (`views.rs`).
    fn list_alerts(&self, limit: u32, before: Option<String>) -> Vec<AlertSummary>;
    fn alert(&self, id: String) -> AlertDetail;
    fn list_rejected(&self, limit: u32, before: Option<String>) -> Vec<RejectedDelivery>;
    fn list_incidents(&self, state: Option<State>, limit: u32, before: Option<String>) -> Vec<IncidentView>;
    fn incident(&self, id: String) -> IncidentView;
    fn incident_alerts(&self, id: String) -> Vec<AlertSummary>;
    /// The silence covering `server` now, if any.
    fn silenced(&self, server: String) -> Option<Silence>;
    /// Why automation is paused, if it is.
    fn paused(&self) -> Option<String>;
    fn set_paused(&self, reason: Option<String>) -> ();
    fn add_silence(&self, server: String, until_ms: i64, reason: String) -> Silence;
    fn silences(&self) -> Vec<Silence>;
    fn delete_silence(&self, id: String) -> ();

    // Retention (`retention.rs`).
    /// Deletes what ended before `cutoff_ms`.
    fn prune(&self, cutoff_ms: i64) -> Pruned;
}

//! The SQLite store: the only module that speaks SQL.
//!
//! One writer thread owns the write connection and group-commits: it takes every write that is waiting, runs each
//! in its own savepoint inside one transaction, commits once (WAL, `synchronous=FULL`, so the commit is on disk),
//! and only then answers each caller. A failing write rolls back its savepoint alone. Reads run on a small pool of
//! read connections on the blocking thread pool, so SQLite never blocks an async worker.
//!
//! The submodules hold the statements of one concern each: intake, the engine's journal, the operator's views.

mod engine;
mod intake;
mod migrations;
mod retention;
mod views;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, Transaction};
use tokio::sync::oneshot;

pub use engine::{EscalationHistory, IncidentRecord, NewNotification, NewStep, NotificationRow, Runnable, Started, StepRecord};
pub use intake::{Answer, AnswerItem, Disposition, NewDelivery};
pub use retention::Pruned;
pub use views::{AlertDetail, AlertSummary, IncidentView, NotificationView, RejectedDelivery, Silence, StepView};

/// The name of the database file inside the data directory.
pub const DB_FILE: &str = "healthset-responder.sqlite3";

/// What went wrong with the store. `Unavailable` means the caller should retry later (HTTP 503).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Conflict(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("store error: {0}")]
    Sql(#[from] rusqlite::Error),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A write waiting for the next group commit.
trait Job: Send {
    fn apply(&mut self, tx: &Transaction);
    fn complete(self: Box<Self>, committed: std::result::Result<(), String>);
}

struct Pending<T, F> {
    work: Option<F>,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T: Send, F: FnOnce(&Transaction) -> Result<T> + Send> Job for Pending<T, F> {
    fn apply(&mut self, tx: &Transaction) {
        let work = self.work.take().expect("a job is applied once");
        // The savepoint statements run for every write, so they are prepared once, like the writes themselves.
        let run = |sql: &str| tx.prepare_cached(sql).and_then(|mut statement| statement.execute([])).map_err(StoreError::Sql);
        let result = run("SAVEPOINT job").and_then(|_| {
            let result = work(tx);
            if result.is_err() {
                run("ROLLBACK TO job")?;
            }
            run("RELEASE job")?;
            result
        });
        self.result = Some(result);
    }

    fn complete(self: Box<Self>, committed: std::result::Result<(), String>) {
        let result = match committed {
            Ok(()) => self.result.expect("a job is applied before it completes"),
            Err(err) => Err(StoreError::Unavailable(err)),
        };
        let _ = self.reply.send(result);
    }
}

/// The handle every part of the service shares.
#[derive(Clone)]
pub struct Store {
    writes: mpsc::SyncSender<Box<dyn Job>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: Arc<PathBuf>,
}

/// The most writes one transaction takes; enough to amortise the fsync, small enough to bound latency.
const MAX_BATCH: usize = 1024;

impl Store {
    /// Opens (creating if needed) the database in `data_dir`, applies migrations and starts the writer thread.
    pub fn open(data_dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", data_dir.display())))?;
        let path = data_dir.join(DB_FILE);
        let mut conn = Connection::open(&path)?;
        // FULL: a commit is on disk when it returns, which is what a 202 promises. A larger page cache keeps the
        // indexes that intake searches in memory.
        // The writer never checkpoints: a thread of its own copies the WAL back into the database, so that work is
        // off the path every acknowledged alert waits on.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000; PRAGMA cache_size=-16384; PRAGMA wal_autocheckpoint=0;",
        )?;
        migrations::apply(&mut conn)?;
        let checkpoints = Connection::open(&path)?;
        checkpoints.busy_timeout(std::time::Duration::from_secs(5))?;
        let (writes, queue) = mpsc::sync_channel::<Box<dyn Job>>(MAX_BATCH * 4);
        let stopped = Arc::new(AtomicBool::new(false));
        let writer_stopped = stopped.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                writer(conn, queue);
                writer_stopped.store(true, Ordering::Relaxed);
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || checkpointer(checkpoints, stopped))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Store { writes, readers: Arc::new(Mutex::new(Vec::new())), path: Arc::new(path) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` in the next group commit and returns its result once the commit is on disk.
    pub(crate) async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Pending { work: Some(work), result: None, reply });
        let writes = self.writes.clone();
        // The queue is bounded: when the disk falls behind, callers wait here instead of piling up in memory.
        match writes.try_send(job) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(job)) => tokio::task::spawn_blocking(move || writes.send(job))
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?
                .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?,
            Err(mpsc::TrySendError::Disconnected(_)) => return Err(StoreError::Unavailable("the writer has stopped".into())),
        }
        answer.await.map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?
    }

    /// Runs a read on a pooled read connection off the async workers.
    pub(crate) async fn read<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().expect("reader pool lock").pop();
            let conn = match pooled {
                Some(conn) => conn,
                None => {
                    let conn = Connection::open_with_flags(path.as_path(), OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
                    conn.busy_timeout(std::time::Duration::from_secs(5))?;
                    conn
                }
            };
            let result = work(&conn);
            readers.lock().expect("reader pool lock").push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }

    /// Whether a write commits: what `/readyz` asks.
    pub async fn check_writable(&self) -> Result<()> {
        self.write(|tx| {
            tx.execute("INSERT INTO settings(key, value) VALUES ('ready_check', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value", [now_ms()])?;
            Ok(())
        })
        .await
    }
}

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Copies committed WAL frames into the database (PASSIVE: never waits for the writer or readers) until the writer
/// has stopped, then once more in full.
fn checkpointer(conn: Connection, writer_stopped: Arc<AtomicBool>) {
    while !writer_stopped.load(Ordering::Relaxed) {
        std::thread::sleep(CHECKPOINT_EVERY);
        if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %err, "WAL checkpoint failed; will try again");
        }
    }
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

fn writer(mut conn: Connection, queue: mpsc::Receiver<Box<dyn Job>>) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = queue.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // IMMEDIATE takes the write lock up front, where the busy timeout applies, instead of upgrading a read
        // transaction later, which fails at once if the checkpointer has moved the WAL on meanwhile.
        let committed = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
            Ok(tx) => {
                for job in batch.iter_mut() {
                    job.apply(&tx);
                }
                tx.commit().map_err(|e| e.to_string())
            }
            Err(err) => Err(err.to_string()),
        };
        if let Err(err) = &committed {
            tracing::error!(error = %err, writes = batch.len(), "group commit failed");
        }
        for job in batch.drain(..) {
            job.complete(committed.clone());
        }
    }
}

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
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

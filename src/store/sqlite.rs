//! The SQLite store: the embedded backend, for one instance (the default, and what `demo` runs on).
//!
//! One writer thread owns the write connection and group-commits: it takes every write that is waiting, runs each
//! in its own savepoint inside one transaction (writes that may run again, intake's, share one: see
//! [`Sqlite::write_repeatable`]), takes in the writes that arrived meanwhile until none is waiting (up to
//! [`MAX_BATCH`]), commits once (WAL, `synchronous=FULL`, so the commit is on disk), and only then answers each
//! caller: the longer the queue, the more writes share one commit. A failing write rolls back alone. When SQLite
//! itself rolls the whole transaction back (a full disk, an I/O error), or the commit fails, every write of the
//! batch fails alike: none of them is half kept, and the writes after that point are not run at all. Reads run on a
//! small pool of read connections on the blocking thread pool, so SQLite never blocks an async worker.
//!
//! The database is checked (`PRAGMA quick_check`) when it is opened: a damaged file stops the service at start,
//! named, rather than failing alerts one by one later.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

use rusqlite::{Connection, OpenFlags, Transaction};
use tokio::sync::oneshot;

use super::{links, migrations, Result, StoreError, DB_FILE};

pub(super) mod bodies;
mod vfs;

/// A write waiting for the next group commit.
trait Job: Send {
    /// Runs the write in its own savepoint. Returns whether the transaction is still open afterwards: `false` when
    /// SQLite rolled the whole transaction back while the write ran.
    fn apply(&mut self, tx: &Transaction) -> bool;
    /// Whether the write may run more than once, its last run being the one that counts: such writes share one
    /// savepoint (see [`apply_shared`]).
    fn repeatable(&self) -> bool {
        false
    }
    /// Runs a repeatable write inside the savepoint it shares with others, and returns whether it succeeded.
    fn apply_shared(&mut self, _tx: &Transaction) -> bool {
        unreachable!("only a repeatable write shares a savepoint")
    }
    fn complete(self: Box<Self>, committed: std::result::Result<(), String>);
    /// Whether this is the readiness probe's own write, which says nothing about whether real writes commit.
    fn is_probe(&self) -> bool;
}

/// Runs `work` in a savepoint of its own, rolled back when it fails. The savepoint statements run for every write,
/// so they are prepared once, like the writes themselves.
fn in_savepoint<T>(tx: &Transaction, work: impl FnOnce(&Transaction) -> Result<T>) -> Result<T> {
    let run = |sql: &str| {
        tx.prepare_cached(sql)
            .and_then(|mut statement| statement.execute([]))
            .map_err(StoreError::Sql)
    };
    run("SAVEPOINT job").and_then(|_| {
        let result = work(tx);
        if result.is_err() {
            run("ROLLBACK TO job")?;
        }
        run("RELEASE job")?;
        result
    })
}

/// Answers a write's caller once its batch has committed, or failed to.
fn answer<T>(
    reply: oneshot::Sender<Result<T>>,
    result: Option<Result<T>>,
    committed: std::result::Result<(), String>,
) {
    let result = match committed {
        Ok(()) => result.expect("a job is applied before it completes"),
        Err(err) => Err(StoreError::Unavailable(err)),
    };
    let _ = reply.send(result);
}

struct Pending<T, F> {
    work: Option<F>,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
    probe: bool,
}

impl<T: Send, F: FnOnce(&Transaction) -> Result<T> + Send> Job for Pending<T, F> {
    fn apply(&mut self, tx: &Transaction) -> bool {
        let work = self.work.take().expect("a job is applied once");
        self.result = Some(in_savepoint(tx, work));
        !tx.is_autocommit()
    }

    fn complete(self: Box<Self>, committed: std::result::Result<(), String>) {
        answer(self.reply, self.result, committed);
    }

    fn is_probe(&self) -> bool {
        self.probe
    }
}

/// A write that may run more than once; its caller hears the last run's result.
struct Repeatable<T, F> {
    work: F,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T: Send, F: Fn(&Transaction) -> Result<T> + Send> Job for Repeatable<T, F> {
    fn apply(&mut self, tx: &Transaction) -> bool {
        self.result = Some(in_savepoint(tx, &self.work));
        !tx.is_autocommit()
    }

    fn repeatable(&self) -> bool {
        true
    }

    fn apply_shared(&mut self, tx: &Transaction) -> bool {
        let result = (self.work)(tx);
        let succeeded = result.is_ok();
        self.result = Some(result);
        succeeded
    }

    fn complete(self: Box<Self>, committed: std::result::Result<(), String>) {
        answer(self.reply, self.result, committed);
    }

    fn is_probe(&self) -> bool {
        false
    }
}

/// How the latest group commits went, as `/readyz` reports it.
#[derive(Debug, Default)]
struct CommitHealth {
    /// The last batch with a real write that committed.
    last_success: Option<std::time::Instant>,
    /// The last batch that failed, with why.
    last_failure: Option<(std::time::Instant, String)>,
}

/// How long a failed commit keeps the store unready when no real write has committed since (a quiet service has
/// nothing else to show that the disk has room again).
const FAILURE_HOLDS_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// The handle every part of the service shares.
#[derive(Clone)]
pub struct Sqlite {
    writes: mpsc::SyncSender<Box<dyn Job>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: Arc<PathBuf>,
    health: Arc<Mutex<CommitHealth>>,
}

/// The most writes one transaction takes; enough to amortise the fsync, small enough to bound latency.
const MAX_BATCH: usize = 1024;

impl Sqlite {
    /// Opens (creating if needed) the database in `data_dir`, applies migrations and starts the writer thread.
    pub fn open(data_dir: &Path) -> Result<Sqlite> {
        crate::private_files::private_dir(data_dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        let path = data_dir.join(DB_FILE);
        // SQLite creates the WAL and shared-memory files with the database file's mode, so a private database file
        // makes all three private; files from before this was enforced are made private too.
        let private = |file: &Path| -> std::io::Result<()> {
            if file == path {
                crate::private_files::create_private(file)?;
            }
            crate::private_files::make_private_if_present(file)
        };
        for suffix in ["", "-wal", "-shm"] {
            let file = PathBuf::from(format!("{}{suffix}", path.display()));
            private(&file).map_err(|e| {
                StoreError::Unavailable(format!("cannot make {} private: {e}", file.display()))
            })?;
        }
        let damaged = |err: rusqlite::Error| StoreError::Damaged {
            path: path.clone(),
            detail: err.to_string(),
        };
        // The writer alone writes the database and its WAL, through the VFS that hands each run of SQLite's writes
        // to the kernel in one call (`vfs.rs`).
        let mut conn =
            Connection::open_with_flags_and_vfs(&path, OpenFlags::default(), vfs::register()?)?;
        // FULL: a commit is on disk when it returns, which is what a 202 promises. A larger page cache keeps the
        // indexes that intake searches in memory.
        // The writer copies the WAL back into the database itself (see [`Upkeep`]), never inside a commit. Each
        // write's savepoint keeps the pages it changes in a statement journal; in memory, that is a copy, not a
        // temporary file written for every write.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000; PRAGMA cache_size=-16384;
             PRAGMA wal_autocheckpoint=0; PRAGMA temp_store=MEMORY;",
        )
        .map_err(damaged)?;
        let synchronous: i64 = conn.query_row("PRAGMA synchronous", [], |row| row.get(0))?;
        assert_eq!(
            synchronous, 2,
            "the writer commits with synchronous=FULL, which its VFS relies on"
        );
        integrity(&conn).map_err(|detail| StoreError::Damaged { path: path.clone(), detail })?;
        migrations::apply(&mut conn)?;
        bodies::register(&conn)?;
        let (writes, queue) = mpsc::sync_channel::<Box<dyn Job>>(MAX_BATCH * 4);
        let health = Arc::new(Mutex::new(CommitHealth::default()));
        let writer_health = health.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer(conn, queue, &writer_health))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(Sqlite {
            writes,
            readers: Arc::new(Mutex::new(Vec::new())),
            path: Arc::new(path),
            health,
        })
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
        self.submit(
            Box::new(Pending { work: Some(work), result: None, reply, probe: false }),
            answer,
        )
        .await
    }

    /// Like [`Sqlite::write`], for a write that may run more than once, only its last run counting: writes of this
    /// kind that are next to each other in a group commit share one savepoint instead of taking one each, and run
    /// again each in its own when one of them fails.
    pub(crate) async fn write_repeatable<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&Transaction) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.submit(Box::new(Repeatable { work, result: None, reply }), answer).await
    }

    async fn submit<T>(
        &self,
        job: Box<dyn Job>,
        answer: oneshot::Receiver<Result<T>>,
    ) -> Result<T> {
        let writes = self.writes.clone();
        // The queue is bounded: when the disk falls behind, callers wait here instead of piling up in memory.
        match writes.try_send(job) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(job)) => {
                tokio::task::spawn_blocking(move || writes.send(job))
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?
                    .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?
            }
            Err(mpsc::TrySendError::Disconnected(_)) => {
                return Err(StoreError::Unavailable("the writer has stopped".into()))
            }
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
                    let conn = Connection::open_with_flags(
                        path.as_path(),
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    conn.busy_timeout(std::time::Duration::from_secs(5))?;
                    bodies::register(&conn)?;
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

    /// Whether writes commit: what `/readyz` asks. Unready while the latest real write failed to commit (until a
    /// real write commits again, or for [`FAILURE_HOLDS_FOR`] when none is made), or when a probe write as large as
    /// the largest delivery (`bytes`) fails now. The probe alone is not enough: with the disk full it may still fit
    /// in WAL pages already on disk while every alert is refused.
    pub async fn check_writable(&self, bytes: usize) -> Result<()> {
        {
            let health = self.health.lock().expect("commit health lock");
            if let Some((failed_at, error)) = &health.last_failure {
                let recovered = health.last_success.is_some_and(|success| success > *failed_at);
                if !recovered && failed_at.elapsed() < FAILURE_HOLDS_FOR {
                    return Err(StoreError::Unavailable(format!(
                        "the latest commit failed: {error}"
                    )));
                }
            }
        }
        let work = move |tx: &Transaction| {
            tx.prepare_cached("INSERT INTO settings(key, value) VALUES ('ready_check', zeroblob(?1)) ON CONFLICT(key) DO UPDATE SET value = excluded.value")?
                .execute([bytes as i64])?;
            Ok(())
        };
        let (reply, answer) = oneshot::channel();
        self.submit(
            Box::new(Pending { work: Some(work), result: None, reply, probe: true }),
            answer,
        )
        .await
    }
}

/// `PRAGMA quick_check`: `Err` with SQLite's first findings when the file is damaged.
fn integrity(conn: &Connection) -> std::result::Result<(), String> {
    let mut statement = conn.prepare("PRAGMA quick_check").map_err(|e| e.to_string())?;
    let findings: Vec<String> = statement
        .query_map([], |row| row.get(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| e.to_string())?;
    match findings.as_slice() {
        [ok] if ok == "ok" => Ok(()),
        [] => Err("the integrity check returned nothing".into()),
        _ => Err(findings.iter().take(3).cloned().collect::<Vec<_>>().join("; ")),
    }
}

/// How often the writer copies the WAL back into the database file, when it has committed anything since.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// What the writer does besides group commits, between two of them, once the callers of the last have their
/// answers: link the alerts intake kept ([`links`]), and copy the WAL back into the database file. Only the writer
/// can do the copy so that it catches up with the last commit, which lets the next commit write the WAL from its
/// start again: a checkpoint beside a busy writer never catches up, and the WAL then grows for as long as a storm
/// lasts, every page written going to a new place in the file. So the WAL holds at most about
/// [`CHECKPOINT_EVERY`] of writes, and the writes that wait meanwhile share the next commit.
struct Upkeep {
    linked_at: std::time::Instant,
    checkpointed_at: std::time::Instant,
    written: bool,
}

impl Upkeep {
    fn new() -> Upkeep {
        let now = std::time::Instant::now();
        Upkeep { linked_at: now, checkpointed_at: now, written: false }
    }

    /// How long the writer may wait for a write before some upkeep is due.
    fn wait(&self) -> std::time::Duration {
        let link = links::LINK_EVERY.saturating_sub(self.linked_at.elapsed());
        if self.written {
            link.min(CHECKPOINT_EVERY.saturating_sub(self.checkpointed_at.elapsed()))
        } else {
            link
        }
    }

    /// Runs what is due. `wrote`: whether a batch has just committed.
    fn run(&mut self, conn: &mut Connection, wrote: bool) {
        self.written |= wrote;
        if self.linked_at.elapsed() >= links::LINK_EVERY {
            self.written |= links::link_in_own_transaction(conn);
            self.linked_at = std::time::Instant::now();
        }
        if self.written && self.checkpointed_at.elapsed() >= CHECKPOINT_EVERY {
            checkpoint(conn, "PASSIVE");
            self.written = false;
            self.checkpointed_at = std::time::Instant::now();
        }
    }
}

/// Copies the WAL back into the database file; a failure is logged, and the next checkpoint tries again.
fn checkpoint(conn: &Connection, mode: &str) {
    if let Err(err) = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(())) {
        tracing::warn!(error = %err, "WAL checkpoint failed; will try again");
    }
}

/// Runs every write in group commits, and the [`Upkeep`] between them, until every handle is gone; then links
/// what is left and copies the whole WAL back.
fn writer(mut conn: Connection, queue: mpsc::Receiver<Box<dyn Job>>, health: &Mutex<CommitHealth>) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    let mut upkeep = Upkeep::new();
    loop {
        let first = match queue.recv_timeout(upkeep.wait()) {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                upkeep.run(&mut conn, false);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        batch.push(first);
        // IMMEDIATE takes the write lock up front, where the busy timeout applies, instead of upgrading a read
        // transaction later, which fails at once if a checkpoint has moved the WAL on meanwhile.
        let committed =
            match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
                Ok(tx) => apply_all(tx, &queue, &mut batch),
                Err(err) => Err(err.to_string()),
            };
        {
            let mut health = health.lock().expect("commit health lock");
            match &committed {
                Err(err) => {
                    tracing::error!(error = %err, writes = batch.len(), "group commit failed");
                    health.last_failure = Some((std::time::Instant::now(), err.clone()));
                }
                Ok(()) if batch.iter().any(|job| !job.is_probe()) => {
                    health.last_success = Some(std::time::Instant::now())
                }
                Ok(()) => {}
            }
        }
        for job in batch.drain(..) {
            job.complete(committed.clone());
        }
        upkeep.run(&mut conn, committed.is_ok());
    }
    links::link_in_own_transaction(&mut conn);
    checkpoint(&conn, "TRUNCATE");
}

/// Runs a batch in one transaction and commits it: the writes in `batch`, then those that arrived while they ran,
/// and so on until none is waiting or the batch is full. When SQLite rolled the transaction back under a write (a
/// full disk or an I/O error does that), the writes before it are gone and the ones after it would each commit on
/// their own, outside the batch: so none of the rest is run, and the whole batch fails alike.
fn apply_all(
    tx: Transaction,
    queue: &mpsc::Receiver<Box<dyn Job>>,
    batch: &mut Vec<Box<dyn Job>>,
) -> std::result::Result<(), String> {
    let mut applied = 0;
    loop {
        batch.extend(std::iter::from_fn(|| queue.try_recv().ok()).take(MAX_BATCH - batch.len()));
        let taken = batch.len();
        if applied == taken {
            break;
        }
        while applied < taken {
            // Repeatable writes next to each other share a savepoint; any other write takes one of its own.
            let run =
                batch[applied..taken].iter().take_while(|job| job.repeatable()).count().max(1);
            let jobs = &mut batch[applied..applied + run];
            let kept = if run > 1 { apply_shared(&tx, jobs) } else { apply_each(&tx, jobs) };
            kept.map_err(|failure| match failure {
                Failure::RolledBack(at) => {
                    format!("SQLite rolled the transaction back at write {} of {taken}; no write of this batch was kept", applied + at + 1)
                }
                Failure::Savepoint(err) => format!("a savepoint could not be ended ({err}); no write of this batch was kept"),
            })?;
            applied += run;
        }
    }
    tx.commit().map_err(|e| e.to_string())
}

/// Why a batch cannot commit.
enum Failure {
    /// SQLite rolled the whole transaction back under the write at this index.
    RolledBack(usize),
    /// A shared savepoint could not be rolled back or released, so what the writes under it did is unknown.
    Savepoint(rusqlite::Error),
}

/// Runs writes each in its own savepoint.
fn apply_each(tx: &Transaction, jobs: &mut [Box<dyn Job>]) -> std::result::Result<(), Failure> {
    match jobs.iter_mut().position(|job| !job.apply(tx)) {
        Some(at) => Err(Failure::RolledBack(at)),
        None => Ok(()),
    }
}

/// Runs repeatable writes in one savepoint, which spares each a savepoint of its own (a savepoint copies every page
/// that is changed under it). When one of them fails, the savepoint is rolled back and each runs again in its own,
/// so that the failing write fails alone, as in [`apply_each`].
fn apply_shared(tx: &Transaction, jobs: &mut [Box<dyn Job>]) -> std::result::Result<(), Failure> {
    let run = |sql: &str| tx.prepare_cached(sql).and_then(|mut statement| statement.execute([]));
    if run("SAVEPOINT writes").is_err() {
        return apply_each(tx, jobs);
    }
    for (at, job) in jobs.iter_mut().enumerate() {
        let succeeded = job.apply_shared(tx);
        if tx.is_autocommit() {
            return Err(Failure::RolledBack(at));
        }
        if !succeeded {
            run("ROLLBACK TO writes")
                .and_then(|_| run("RELEASE writes"))
                .map_err(Failure::Savepoint)?;
            return apply_each(tx, jobs);
        }
    }
    run("RELEASE writes").map(|_| ()).map_err(Failure::Savepoint)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn settings_keys(path: &Path) -> Vec<String> {
        let conn = Connection::open(path).unwrap();
        let mut statement = conn.prepare("SELECT key FROM settings ORDER BY key").unwrap();
        let keys = statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<Vec<String>>>()
            .unwrap();
        keys
    }

    #[test]
    fn a_file_that_is_not_a_database_is_named_as_damaged() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DB_FILE), vec![0x5a; 64 * 1024]).unwrap();
        let err = Sqlite::open(dir.path()).err().expect("a damaged store is refused").to_string();
        assert!(
            err.starts_with(&format!(
                "the store {} is damaged",
                dir.path().join(DB_FILE).display()
            )),
            "{err}"
        );
        assert!(err.contains("restore it from a backup"), "{err}");
    }

    #[test]
    fn a_corrupted_page_is_found_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE filler (id INTEGER PRIMARY KEY, text TEXT); CREATE INDEX filler_text ON filler(text);").unwrap();
            for i in 0..400 {
                conn.execute("INSERT INTO filler (text) VALUES (?1)", [format!("{i:0>200}")])
                    .unwrap();
            }
        }
        // Overwrite the third page (a b-tree page of the table or its index) with junk, as a bad sector would.
        let mut bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() > 4 * 4096);
        bytes[2 * 4096..3 * 4096].fill(0xa5);
        std::fs::write(&path, bytes).unwrap();
        let err = Sqlite::open(dir.path()).err().expect("a damaged store is refused");
        assert!(matches!(err, StoreError::Damaged { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    }

    /// A migrated database in a temporary directory (kept while the first value lives), its path, and a
    /// connection for a writer of a test's own.
    fn migrated() -> (tempfile::TempDir, PathBuf, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let mut conn = Connection::open(&path).unwrap();
        migrations::apply(&mut conn).unwrap();
        (dir, path, conn)
    }

    #[test]
    fn a_transaction_rolled_back_by_sqlite_fails_every_write_of_its_batch() {
        let (_dir, path, conn) = migrated();
        let (writes, queue) = mpsc::sync_channel::<Box<dyn Job>>(8);
        let mut answers = Vec::new();
        let mut submit = |work: Box<dyn FnOnce(&Transaction) -> Result<()> + Send>| {
            let (reply, answer) = oneshot::channel();
            writes
                .send(Box::new(Pending { work: Some(work), result: None, reply, probe: false }))
                .unwrap();
            answers.push(answer);
        };
        let insert = |key: &'static str| -> Box<dyn FnOnce(&Transaction) -> Result<()> + Send> {
            Box::new(move |tx: &Transaction| {
                tx.execute("INSERT INTO settings (key, value) VALUES (?1, 'x')", [key])?;
                Ok(())
            })
        };
        submit(insert("before"));
        // What SQLite does on a full disk or an I/O error in the middle of a statement: the whole transaction goes.
        submit(Box::new(|tx: &Transaction| {
            tx.execute_batch("ROLLBACK")?;
            Ok(())
        }));
        submit(insert("after"));
        drop(writes);
        writer(conn, queue, &Mutex::default());
        for answer in answers {
            let result = answer.blocking_recv().unwrap();
            assert!(
                matches!(result, Err(StoreError::Unavailable(_))),
                "every write of the batch fails: {result:?}"
            );
        }
        assert!(
            settings_keys(&path).is_empty(),
            "no write of the batch was kept, not even the one after the rollback"
        );
    }

    /// A storm writes without pause: the WAL must still be copied back and begun again, not grow with the storm.
    #[tokio::test]
    async fn the_wal_stays_a_fraction_of_what_a_long_run_of_writes_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let store = Sqlite::open(dir.path()).unwrap();
        let wal = PathBuf::from(format!("{}-wal", store.path().display()));
        const BLOB: usize = 64 * 1024;
        let (started, mut written, mut largest) = (std::time::Instant::now(), 0usize, 0u64);
        // Long enough for several checkpoints, however fast the disk.
        while written < 64 << 20 || started.elapsed() < 8 * CHECKPOINT_EVERY {
            store
                .write(|tx| {
                    tx.execute("INSERT INTO settings(key, value) VALUES (lower(hex(randomblob(16))), zeroblob(?1))", [BLOB as i64])?;
                    Ok(())
                })
                .await
                .unwrap();
            written += BLOB;
            largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        }
        assert!(
            largest < (written / 3) as u64,
            "the WAL reached {largest} bytes while {written} bytes were written"
        );
    }

    #[test]
    fn a_batch_that_commits_keeps_every_write_but_the_failed_one() {
        let (_dir, path, conn) = migrated();
        let (writes, queue) = mpsc::sync_channel::<Box<dyn Job>>(8);
        let mut answers = Vec::new();
        for key in ["a", "a", "b"] {
            let (reply, answer) = oneshot::channel();
            let work = move |tx: &Transaction| -> Result<()> {
                tx.execute("INSERT INTO settings (key, value) VALUES (?1, 'x')", [key])?;
                Ok(())
            };
            writes
                .send(Box::new(Pending { work: Some(work), result: None, reply, probe: false }))
                .unwrap();
            answers.push(answer);
        }
        drop(writes);
        writer(conn, queue, &Mutex::default());
        let results: Vec<bool> =
            answers.into_iter().map(|a| a.blocking_recv().unwrap().is_ok()).collect();
        assert_eq!(results, [true, false, true], "the duplicate key fails alone");
        assert_eq!(settings_keys(&path), ["a", "b"]);
    }

    /// Runs the writer of a fresh database over `jobs`, in one batch, and returns the settings keys it kept.
    fn kept_after(jobs: Vec<Box<dyn Job>>) -> Vec<String> {
        let (_dir, path, conn) = migrated();
        let (writes, queue) = mpsc::sync_channel::<Box<dyn Job>>(jobs.len());
        jobs.into_iter().for_each(|job| writes.send(job).unwrap());
        drop(writes);
        writer(conn, queue, &Mutex::default());
        settings_keys(&path)
    }

    /// A write that inserts a settings key (`rollback` rolls the whole transaction back instead), counting its runs.
    fn insert(
        key: &'static str,
        repeatable: bool,
        runs: &Arc<AtomicUsize>,
    ) -> (Box<dyn Job>, oneshot::Receiver<Result<()>>) {
        let (reply, answer) = oneshot::channel();
        let runs = runs.clone();
        let work = move |tx: &Transaction| -> Result<()> {
            runs.fetch_add(1, Ordering::Relaxed);
            match key {
                "rollback" => tx.execute_batch("ROLLBACK")?,
                _ => _ = tx.execute("INSERT INTO settings (key, value) VALUES (?1, 'x')", [key])?,
            }
            Ok(())
        };
        let job: Box<dyn Job> = match repeatable {
            true => Box::new(Repeatable { work, result: None, reply }),
            false => Box::new(Pending { work: Some(work), result: None, reply, probe: false }),
        };
        (job, answer)
    }

    #[test]
    fn a_transaction_rolled_back_under_a_shared_savepoint_fails_every_write_of_its_batch() {
        let runs = Arc::new(AtomicUsize::new(0));
        let (jobs, answers): (Vec<_>, Vec<_>) =
            ["before", "rollback", "after"].into_iter().map(|key| insert(key, true, &runs)).unzip();
        assert!(kept_after(jobs).is_empty(), "no write of the batch was kept");
        for answer in answers {
            let result = answer.blocking_recv().unwrap();
            assert!(
                matches!(result, Err(StoreError::Unavailable(_))),
                "every write of the batch fails: {result:?}"
            );
        }
        assert_eq!(runs.load(Ordering::Relaxed), 2, "nothing runs after the rollback");
    }

    #[test]
    fn repeatable_writes_share_a_savepoint_and_a_failing_one_still_fails_alone() {
        let runs = Arc::new(AtomicUsize::new(0));
        // Two repeatable writes, a duplicate key among them, one that runs once, and one more repeatable one.
        let writes = [("a", true), ("b", true), ("a", true), ("c", false), ("d", true)];
        let (jobs, answers): (Vec<_>, Vec<_>) =
            writes.into_iter().map(|(key, repeatable)| insert(key, repeatable, &runs)).unzip();
        assert_eq!(kept_after(jobs), ["a", "b", "c", "d"]);
        let results: Vec<bool> =
            answers.into_iter().map(|a| a.blocking_recv().unwrap().is_ok()).collect();
        assert_eq!(results, [true, true, false, true, true], "the duplicate key fails alone");
        assert_eq!(
            runs.load(Ordering::Relaxed),
            3 + 3 + 1 + 1,
            "the first three ran together, then each again on its own"
        );
    }
}

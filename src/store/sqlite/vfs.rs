//! The VFS the writer opens the database through: SQLite's own, except that what SQLite writes to a file as a run of
//! calls, each continuing the one before, reaches the file in one.
//!
//! SQLite writes a WAL frame as two calls, its 24-byte header and then its page, so that a commit of 20 pages is 40
//! `pwrite`s, and a checkpoint copies the WAL back into the database a page per call. The kernel takes each call
//! through its whole write path for a page or two of its page cache. Here, writes to the WAL and to the database
//! file that continue the one before are gathered in memory and written together, in one call, before anything else
//! is done with the file: before it is synced (a commit, the end of a checkpoint), read, sized, truncated, locked,
//! controlled or closed, before a write elsewhere in it, and whenever [`GATHER_AT_MOST`] bytes wait. What reaches the
//! file, and in which order, is what SQLite wrote; only the number of calls changes. The other files (shared
//! memory, temporary files) are SQLite's own, untouched.
//!
//! **Invariant:** the connection runs with `synchronous=FULL`. SQLite then syncs the WAL at every commit before it
//! makes the commit visible in the shared memory (the WAL index), and the database file at the end of a checkpoint
//! before it records there how far the checkpoint went, so that no other connection ever reads bytes that wait here:
//! frames a transaction spills before its commit are seen only by its own connection, whose reads write what waits
//! first. With less than `FULL`, a commit would be visible to readers before its frames are in the file;
//! [`Sqlite::open`](super::Sqlite) sets `FULL` and checks that it is in force.
//!
//! A process that dies with writes waiting loses what a power cut would have lost of writes not yet synced, which
//! SQLite is built to recover from: nothing that was committed.

use std::ffi::{c_int, c_void, CStr};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The name the VFS is registered under.
const NAME: &CStr = c"healthset-gathered-writes";

/// The most bytes gathered before they are written anyway: the most SQLite's own VFS writes in one call (it drops
/// the bits above, `seekAndWriteFd`), the frames of a commit of about twenty alerts. SQLite's own writes are at most
/// a page and a frame header, so one always fits once what was gathered before it is written.
const GATHER_AT_MOST: usize = 0x1ffff;

/// Registers the VFS once per process (SQLite's default stays the default) and returns its name for
/// [`rusqlite::Connection::open_with_flags_and_vfs`].
pub(super) fn register() -> rusqlite::Result<&'static str> {
    static REGISTERED: OnceLock<std::result::Result<(), c_int>> = OnceLock::new();
    let registered = REGISTERED.get_or_init(|| {
        // SAFETY: `sqlite3_vfs_find(NULL)` returns the default VFS, which SQLite never frees. The copy made here is
        // leaked so that it lives as long as the process, as SQLite requires of a registered VFS. Every field but
        // the name, the file size and `xOpen` is the default VFS's own, so the calls SQLite makes through them reach
        // the default VFS's functions with a VFS that looks like it to them.
        unsafe {
            if ffi::sqlite3_initialize() != ffi::SQLITE_OK {
                return Err(ffi::SQLITE_ERROR);
            }
            let default = ffi::sqlite3_vfs_find(std::ptr::null());
            if default.is_null() {
                return Err(ffi::SQLITE_ERROR);
            }
            let mut vfs = std::ptr::read(default);
            vfs.pNext = std::ptr::null_mut();
            vfs.zName = NAME.as_ptr();
            vfs.szOsFile = (INNER_AT + (*default).szOsFile as usize) as c_int;
            vfs.xOpen = Some(open);
            DEFAULT.store(default, Ordering::Release);
            let rc = ffi::sqlite3_vfs_register(Box::into_raw(Box::new(vfs)), 0);
            if rc == ffi::SQLITE_OK {
                Ok(())
            } else {
                Err(rc)
            }
        }
    });
    match registered {
        Ok(()) => Ok(NAME.to_str().expect("the name is ASCII")),
        Err(rc) => Err(rusqlite::Error::SqliteFailure(
            ffi::Error::new(*rc),
            Some("cannot register the store's VFS".into()),
        )),
    }
}

/// The default VFS: set once, before the VFS that wraps it is registered.
static DEFAULT: AtomicPtr<ffi::sqlite3_vfs> = AtomicPtr::new(std::ptr::null_mut());

/// The WAL or the database file: SQLite's own file, and the writes gathered for it.
#[repr(C)]
struct Gathered {
    /// What SQLite sees: its methods are [`METHODS`].
    base: ffi::sqlite3_file,
    /// The default VFS's file, in the same allocation, [`INNER_AT`] bytes in.
    inner: *mut ffi::sqlite3_file,
    /// Where in the file the gathered bytes go.
    at: i64,
    bytes: Vec<u8>,
}

/// Where the default VFS's file starts in the allocation of a [`Gathered`], aligned for any field it may have.
const INNER_AT: usize = std::mem::size_of::<Gathered>().next_multiple_of(16);

/// Opens a file with the default VFS; the WAL and the database file with [`METHODS`] in front of them.
unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let default = DEFAULT.load(Ordering::Acquire);
    let default_open = (*default).xOpen.expect("the default VFS opens files");
    if flags & (ffi::SQLITE_OPEN_WAL | ffi::SQLITE_OPEN_MAIN_DB) == 0 {
        // The allocation is at least the default VFS's size: the file is its, with its methods, as if opened by it.
        return default_open(default, name, file, flags, out_flags);
    }
    let inner = file.cast::<u8>().add(INNER_AT).cast::<ffi::sqlite3_file>();
    (*inner).pMethods = std::ptr::null();
    let rc = default_open(default, name, inner, flags, out_flags);
    if rc != ffi::SQLITE_OK {
        if let Some(close) = (*inner).pMethods.as_ref().and_then(|methods| methods.xClose) {
            close(inner);
        }
        (*file).pMethods = std::ptr::null();
        return rc;
    }
    file.cast::<Gathered>().write(Gathered {
        base: ffi::sqlite3_file { pMethods: &METHODS },
        inner,
        at: 0,
        bytes: Vec::new(),
    });
    ffi::SQLITE_OK
}

/// The default VFS's file behind a gathered one, and its methods.
unsafe fn inner(
    file: *mut ffi::sqlite3_file,
) -> (*mut ffi::sqlite3_file, &'static ffi::sqlite3_io_methods) {
    let inner = (*file.cast::<Gathered>()).inner;
    (inner, &*(*inner).pMethods)
}

/// Writes what is gathered, in one call. What fails is dropped, as a failed write is: SQLite gives up the
/// transaction on the error.
unsafe fn flush(file: *mut ffi::sqlite3_file) -> c_int {
    let gathered = &mut *file.cast::<Gathered>();
    if gathered.bytes.is_empty() {
        return ffi::SQLITE_OK;
    }
    let (inner, methods) = inner(file);
    let write = methods.xWrite.expect("files are written");
    let rc =
        write(inner, gathered.bytes.as_ptr().cast(), gathered.bytes.len() as c_int, gathered.at);
    gathered.bytes.clear();
    rc
}

/// Flushes, then calls the default VFS's method: what every method that may look at the file's bytes, or let another
/// connection look at them, does.
macro_rules! after_flush {
    ($method:ident(file $(, $arg:ident: $ty:ty)*)) => {{
        #[allow(non_snake_case)]
        unsafe extern "C" fn $method(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            let rc = flush(file);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            let (inner, methods) = inner(file);
            methods.$method.expect("the default VFS has the method")(inner $(, $arg)*)
        }
        Some($method)
    }};
}

/// Calls the default VFS's method: for the methods that only describe the device, and the barrier, which orders
/// memory (the WAL index), not the file's bytes, and has no way to report a failed write.
macro_rules! passed_on {
    ($method:ident(file $(, $arg:ident: $ty:ty)*) -> $ret:ty) => {{
        #[allow(non_snake_case)]
        unsafe extern "C" fn $method(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> $ret {
            let (inner, methods) = inner(file);
            methods.$method.expect("the default VFS has the method")(inner $(, $arg)*)
        }
        Some($method)
    }};
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let flushed = flush(file);
    let (inner, methods) = inner(file);
    let closed = methods.xClose.map_or(ffi::SQLITE_OK, |close| close(inner));
    std::ptr::drop_in_place(&mut (*file.cast::<Gathered>()).bytes);
    (*file).pMethods = std::ptr::null();
    if flushed != ffi::SQLITE_OK {
        flushed
    } else {
        closed
    }
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    let gathered = &mut *file.cast::<Gathered>();
    let continues = gathered.at + gathered.bytes.len() as i64 == offset;
    if !gathered.bytes.is_empty()
        && (!continues || gathered.bytes.len() + amount as usize > GATHER_AT_MOST)
    {
        let rc = flush(file);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    let gathered = &mut *file.cast::<Gathered>();
    if gathered.bytes.is_empty() {
        gathered.at = offset;
    }
    gathered
        .bytes
        .extend_from_slice(std::slice::from_raw_parts(data.cast::<u8>(), amount as usize));
    ffi::SQLITE_OK
}

/// A gathered file's methods. SQLite calls them only with files [`open`] made, one call at a time per file.
static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: after_flush!(xRead(file, buffer: *mut c_void, amount: c_int, offset: i64)),
    xWrite: Some(write),
    xTruncate: after_flush!(xTruncate(file, size: i64)),
    xSync: after_flush!(xSync(file, flags: c_int)),
    xFileSize: after_flush!(xFileSize(file, size: *mut i64)),
    xLock: after_flush!(xLock(file, level: c_int)),
    xUnlock: after_flush!(xUnlock(file, level: c_int)),
    xCheckReservedLock: after_flush!(xCheckReservedLock(file, out: *mut c_int)),
    xFileControl: after_flush!(xFileControl(file, op: c_int, argument: *mut c_void)),
    xSectorSize: passed_on!(xSectorSize(file) -> c_int),
    xDeviceCharacteristics: passed_on!(xDeviceCharacteristics(file) -> c_int),
    xShmMap: after_flush!(xShmMap(file, region: c_int, size: c_int, extend: c_int, out: *mut *mut c_void)),
    xShmLock: after_flush!(xShmLock(file, offset: c_int, count: c_int, flags: c_int)),
    xShmBarrier: passed_on!(xShmBarrier(file) -> ()),
    xShmUnmap: after_flush!(xShmUnmap(file, delete: c_int)),
    xFetch: after_flush!(xFetch(file, offset: i64, amount: c_int, out: *mut *mut c_void)),
    xUnfetch: after_flush!(xUnfetch(file, offset: i64, page: *mut c_void)),
};

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, OpenFlags};

    /// A connection through the VFS as the writer opens it, with a page cache small enough that a large transaction
    /// spills pages to the WAL before it commits, and reads them back from there.
    fn writer(path: &std::path::Path) -> Connection {
        let conn = Connection::open_with_flags_and_vfs(
            path,
            OpenFlags::default(),
            super::register().unwrap(),
        )
        .unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA wal_autocheckpoint=0; PRAGMA cache_size=50;
             CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body BLOB NOT NULL);",
        )
        .unwrap();
        conn
    }

    fn commit(conn: &mut Connection, rows: usize, bytes: usize) {
        let tx = conn.transaction().unwrap();
        for _ in 0..rows {
            tx.execute("INSERT INTO t (body) VALUES (randomblob(?1))", [bytes as i64]).unwrap();
        }
        tx.commit().unwrap();
    }

    /// The write calls this thread has made so far (`pwrite` among them), as the kernel counts them.
    fn write_calls() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
        io.lines().find_map(|line| line.strip_prefix("syscw: ")).unwrap().parse().unwrap()
    }

    #[test]
    fn what_is_written_through_it_reads_back_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite3");
        let mut conn = writer(&path);
        for round in 0..100 {
            commit(&mut conn, 20, 100 + round * 7);
        }
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())).unwrap();
        // 3 MB in one transaction, sixty times the page cache: most of it spills before the commit.
        commit(&mut conn, 1500, 2000);
        commit(&mut conn, 5, 100);
        let reader = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let (rows, bytes): (i64, i64) = reader
            .query_row("SELECT COUNT(*), SUM(length(body)) FROM t", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .unwrap();
        assert_eq!((rows, bytes), (3505, 20 * (100 * 100 + 7 * 4950) + 1500 * 2000 + 500));
        drop(reader);
        // Closing the last connection copies the WAL back into the database, through the VFS, and removes it:
        // opened again with SQLite's own VFS, the file alone holds everything, whole.
        drop(conn);
        let reopened = Connection::open(&path).unwrap();
        let check: String =
            reopened.query_row("PRAGMA integrity_check", [], |row| row.get(0)).unwrap();
        assert_eq!(check, "ok");
        let rows: i64 = reopened.query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0)).unwrap();
        assert_eq!(rows, 3505);
    }

    #[test]
    fn a_commit_reaches_the_wal_and_a_checkpoint_the_database_in_few_writes() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = writer(&dir.path().join("store.sqlite3"));
        commit(&mut conn, 1, 10);
        // Twenty commits of ten rows a page each: 200 frames and more, which SQLite writes as two calls each.
        let before = write_calls();
        for _ in 0..20 {
            commit(&mut conn, 10, 3000);
        }
        let calls = write_calls() - before;
        assert!(calls <= 20, "{calls} write calls for 20 commits");
        // The checkpoint copies those 200 pages into the database file, where they follow each other: a page a call
        // in SQLite, as many calls as 128 KiB allow here.
        let before = write_calls();
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())).unwrap();
        let calls = write_calls() - before;
        assert!(calls <= 12, "{calls} write calls to copy 200 pages");
    }
}

//! A VFS in front of SQLite's default one that gathers the writes to a WAL file and
//! hands them on together when SQLite syncs it (or reads, sizes, truncates or closes
//! it), in pieces of 124 KiB. SQLite writes each frame of a commit in two calls (its
//! 24-byte header, then its page), so a batch of 25 turns, about 150 pages, was 300
//! `pwrite`s; gathered, it is five. Measured under load (`bench/store_writes.py`):
//! `pwrite` 11.9 → 2.3 per write, CPU per write 23 µs less (BENCHMARKS.md, "The durable
//! store's writes gathered").
//!
//! Durability is the default VFS's: a commit is durable when its `xSync` returns, and
//! every write SQLite made before it is handed on before the sync. Frames that were
//! gathered but never synced belong to a transaction that did not commit: SQLite makes a
//! WAL's frames part of the database only after the sync that follows them (`synchronous
//! = FULL`), so losing them with the process loses nothing that was committed. A write
//! handed on that fails is reported by the call that handed it on (the sync, for a
//! commit), which fails the commit as a failed write would have; the frames it held are
//! dropped, and SQLite writes them again with its next commit.
//!
//! Every other file (the database itself, temporary files) is the default VFS's own, with
//! no call in between.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::mem::size_of;
use std::ptr;
use std::sync::OnceLock;

use rusqlite::ffi;

/// The VFS's name, for `Connection::open_with_flags_and_vfs`.
pub(super) const NAME: &str = "text-session-api-wal";
const NAME_C: &CStr = c"text-session-api-wal";

/// The most the default VFS writes in one call (its `seekAndWrite` takes less than
/// 128 KiB); a whole number of pages.
const MAX_WRITE: usize = 124 << 10;

/// What is gathered is handed on past this size even without a sync (a transaction
/// larger than SQLite's page cache writes frames as it goes).
const MAX_GATHERED: usize = 8 << 20;

/// Registers the VFS with SQLite, once per process; an error if SQLite has no default
/// VFS to put it in front of.
pub(super) fn register() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            // SAFETY: `sqlite3_vfs_find` initialises SQLite if needed and returns the
            // default VFS, which lives as long as the process; the VFS made from it is
            // leaked, so it does too, as `sqlite3_vfs_register` requires.
            unsafe {
                let default = ffi::sqlite3_vfs_find(ptr::null());
                if default.is_null() {
                    return Err("SQLite has no default VFS".to_owned());
                }
                let vfs = Box::leak(Box::new(ffi::sqlite3_vfs {
                    szOsFile: c_int::try_from(INNER_AT)
                        .map_err(|e| e.to_string())?
                        .saturating_add((*default).szOsFile),
                    pNext: ptr::null_mut(),
                    zName: NAME_C.as_ptr(),
                    pAppData: default.cast::<c_void>(),
                    xOpen: Some(open),
                    ..*default
                }));
                match ffi::sqlite3_vfs_register(vfs, 0) {
                    ffi::SQLITE_OK => Ok(()),
                    code => Err(format!("registering SQLite's VFS failed ({code})")),
                }
            }
        })
        .clone()
}

/// A WAL file: SQLite's handle for it, then the default VFS's own handle (at `INNER_AT`,
/// in the room `szOsFile` leaves for it).
#[repr(C)]
struct WalFile {
    /// Its `pMethods` is `WAL_METHODS`; SQLite calls them with a pointer to this.
    handle: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    /// Written by `open`, dropped by `close` (SQLite owns the memory).
    gathered: Gathered,
}

/// Writes not yet handed on: `bytes`, to go at `at`.
struct Gathered {
    at: i64,
    bytes: Vec<u8>,
}

/// Where the default VFS's handle starts, after ours (aligned as SQLite aligns its own).
const INNER_AT: usize = size_of::<WalFile>().next_multiple_of(8);

static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    // Version 1: a WAL file is never mapped into memory nor given shared memory.
    iVersion: 1,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

/// Opens a file with the default VFS: in SQLite's handle itself for every file but a
/// WAL, behind a `WalFile` for a WAL.
unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite hands `file` with `szOsFile` bytes of room (`INNER_AT` and the
    // default VFS's own), and `pAppData` is the default VFS (`register`).
    unsafe {
        let default = (*vfs).pAppData.cast::<ffi::sqlite3_vfs>();
        let Some(open_default) = (*default).xOpen else {
            return ffi::SQLITE_ERROR;
        };
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            return open_default(default, name, file, flags, out_flags);
        }
        let wal = file.cast::<WalFile>();
        // Until the file is open, SQLite must not call its methods (nor close it).
        (*wal).handle.pMethods = ptr::null();
        let inner = file.cast::<u8>().add(INNER_AT).cast::<ffi::sqlite3_file>();
        let opened = open_default(default, name, inner, flags, out_flags);
        if opened != ffi::SQLITE_OK {
            return opened;
        }
        ptr::write(ptr::addr_of_mut!((*wal).inner), inner);
        ptr::write(
            ptr::addr_of_mut!((*wal).gathered),
            Gathered {
                at: 0,
                bytes: Vec::new(),
            },
        );
        (*wal).handle.pMethods = &WAL_METHODS;
        ffi::SQLITE_OK
    }
}

/// The parts of a `WalFile` SQLite hands to a method.
///
/// # Safety
/// `file` is a `WalFile` that `open` opened and `close` has not closed.
unsafe fn parts<'a>(file: *mut ffi::sqlite3_file) -> (*mut ffi::sqlite3_file, &'a mut Gathered) {
    // SAFETY: as the caller promises; SQLite calls a file's methods from one thread at a
    // time, so the gathered writes are borrowed by one call at a time.
    unsafe {
        let wal = file.cast::<WalFile>();
        ((*wal).inner, &mut (*wal).gathered)
    }
}

/// The default VFS's methods for the file.
///
/// # Safety
/// `inner` is an open file of the default VFS.
unsafe fn methods<'a>(inner: *mut ffi::sqlite3_file) -> &'a ffi::sqlite3_io_methods {
    // SAFETY: an open file's `pMethods` is set and lives as long as its VFS.
    unsafe { &*(*inner).pMethods }
}

/// Hands on what is gathered, in writes of `MAX_WRITE` at most; what was gathered is
/// dropped either way.
///
/// # Safety
/// `inner` is an open file of the default VFS.
unsafe fn hand_on(inner: *mut ffi::sqlite3_file, gathered: &mut Gathered) -> c_int {
    let mut at = gathered.at;
    let mut written = ffi::SQLITE_OK;
    for piece in gathered.bytes.chunks(MAX_WRITE) {
        #[cfg(test)]
        tests::HANDED_ON.with(|handed| handed.set(handed.get() + 1));
        // SAFETY: as the caller promises; `piece` is valid for its length, which fits.
        written = unsafe {
            match methods(inner).xWrite {
                Some(write) => write(
                    inner,
                    piece.as_ptr().cast::<c_void>(),
                    piece.len() as c_int,
                    at,
                ),
                None => ffi::SQLITE_IOERR_WRITE,
            }
        };
        if written != ffi::SQLITE_OK {
            break;
        }
        at += piece.len() as i64;
    }
    gathered.bytes.clear();
    written
}

/// Hands on what is gathered, then calls the default VFS's method (`passed_on`).
macro_rules! handed_on_then {
    ($file:expr, $method:ident $(, $arg:expr)*) => {{
        // SAFETY: SQLite calls this with a file `open` opened (`parts`).
        let handed = unsafe {
            let (inner, gathered) = parts($file);
            hand_on(inner, gathered)
        };
        if handed != ffi::SQLITE_OK {
            return handed;
        }
        passed_on!($file, $method or ffi::SQLITE_ERROR $(, $arg)*)
    }};
}

/// Calls the default VFS's method, with nothing to hand on first; `$missing` if the
/// default VFS has none.
macro_rules! passed_on {
    ($file:expr, $method:ident or $missing:expr $(, $arg:expr)*) => {{
        // SAFETY: SQLite calls this with a file `open` opened (`parts`).
        unsafe {
            let (inner, _) = parts($file);
            match methods(inner).$method {
                Some(method) => method(inner $(, $arg)*),
                None => $missing,
            }
        }
    }};
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite calls this with a file `open` opened and `amount` bytes at `data`.
    unsafe {
        let (inner, gathered) = parts(file);
        let Ok(len) = usize::try_from(amount) else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        let next = i64::try_from(gathered.bytes.len())
            .ok()
            .and_then(|gathered_len| gathered.at.checked_add(gathered_len));
        // Only a write that continues what is gathered joins it.
        if !gathered.bytes.is_empty() && next != Some(offset) {
            let handed = hand_on(inner, gathered);
            if handed != ffi::SQLITE_OK {
                return handed;
            }
        }
        if gathered.bytes.is_empty() {
            gathered.at = offset;
        }
        gathered
            .bytes
            .extend_from_slice(std::slice::from_raw_parts(data.cast::<u8>(), len));
        if gathered.bytes.len() >= MAX_GATHERED {
            return hand_on(inner, gathered);
        }
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    data: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    handed_on_then!(file, xRead, data, amount, offset)
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    handed_on_then!(file, xTruncate, size)
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    #[cfg(test)]
    tests::SYNCED.with(|synced| synced.set(synced.get() + 1));
    handed_on_then!(file, xSync, flags)
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    handed_on_then!(file, xFileSize, size)
}

unsafe extern "C" fn file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    handed_on_then!(file, xFileControl, op, arg)
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    passed_on!(file, xLock or ffi::SQLITE_ERROR, level)
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    passed_on!(file, xUnlock or ffi::SQLITE_ERROR, level)
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    passed_on!(file, xCheckReservedLock or ffi::SQLITE_ERROR, out)
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    passed_on!(file, xSectorSize or 4096)
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    passed_on!(file, xDeviceCharacteristics or 0)
}

/// Hands on what is gathered and closes the default VFS's file; SQLite frees the handle.
unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls this once, with a file `open` opened; the gathered writes
    // `open` wrote are not used after this.
    unsafe {
        let (inner, gathered) = parts(file);
        let handed = hand_on(inner, gathered);
        let closed = methods(inner)
            .xClose
            .map_or(ffi::SQLITE_OK, |method| method(inner));
        let wal = file.cast::<WalFile>();
        ptr::drop_in_place(ptr::addr_of_mut!((*wal).gathered));
        (*wal).handle.pMethods = ptr::null();
        if handed != ffi::SQLITE_OK {
            handed
        } else {
            closed
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use rusqlite::{Connection, OpenFlags, params};

    use super::*;
    use crate::store::sqlite::tests::TempFile;

    thread_local! {
        /// How many writes this thread handed on to the default VFS's WAL files.
        pub(super) static HANDED_ON: Cell<usize> = const { Cell::new(0) };
        /// How many times this thread synced a WAL file.
        pub(super) static SYNCED: Cell<usize> = const { Cell::new(0) };
    }

    fn counts() -> (usize, usize) {
        (HANDED_ON.get(), SYNCED.get())
    }

    fn open(path: &std::path::Path) -> Connection {
        register().unwrap();
        let conn = Connection::open_with_flags_and_vfs(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            NAME,
        )
        .unwrap();
        conn.execute_batch(
            "PRAGMA locking_mode = EXCLUSIVE;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
        )
        .unwrap();
        conn
    }

    fn insert(conn: &Connection, ids: std::ops::Range<i64>) {
        let tx = conn.unchecked_transaction().unwrap();
        for id in ids {
            tx.execute(
                "INSERT INTO rows (id, body) VALUES (?, ?)",
                params![id, format!("{id:>3000}")],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }

    fn stored(conn: &Connection) -> (i64, i64) {
        conn.query_row("SELECT count(*), sum(id) FROM rows", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .unwrap()
    }

    #[test]
    fn a_commit_of_many_pages_reaches_the_file_in_one_write_before_its_sync() {
        let file = TempFile::new();
        let conn = open(file.path().as_ref());
        insert(&conn, 0..1);
        let before = counts();
        // Twenty rows of 3,000 bytes: twenty pages and more, forty writes and more from
        // SQLite.
        insert(&conn, 1..21);
        let after = counts();
        assert_eq!(after.1 - before.1, 1, "one sync for the commit");
        assert_eq!(after.0 - before.0, 1, "one write handed on for the commit");
        assert_eq!(stored(&conn), (21, (0..21).sum()));
        // Past what the default VFS writes in one call: in pieces of that size.
        insert(&conn, 21..121);
        let pieces = (counts().0 - after.0, counts().1 - after.1);
        assert_eq!(pieces, (4, 1), "100 pages and more: four pieces, one sync");
        assert_eq!(stored(&conn), (121, (0..121).sum()));
    }

    #[test]
    fn what_was_committed_is_in_the_file_for_the_default_vfs() {
        let file = TempFile::new();
        {
            let conn = open(file.path().as_ref());
            for start in (0..500).step_by(50) {
                insert(&conn, start..start + 50);
            }
            // Read back within the same connection, pages from the WAL among them.
            assert_eq!(stored(&conn), (500, (0..500).sum()));
        }
        let conn = Connection::open(file.path()).unwrap();
        assert_eq!(stored(&conn), (500, (0..500).sum()));
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }

    /// A transaction larger than the page cache writes frames before it commits, and
    /// reads some of them back: the reads see what was gathered.
    #[test]
    fn a_transaction_larger_than_the_page_cache_reads_back_what_it_wrote() {
        let file = TempFile::new();
        {
            let conn = open(file.path().as_ref());
            conn.execute_batch("PRAGMA cache_size = 10;").unwrap();
            insert(&conn, 0..2000);
            conn.execute("UPDATE rows SET body = body || 'x' WHERE id % 7 = 0", [])
                .unwrap();
            assert_eq!(stored(&conn), (2000, (0..2000).sum()));
            let changed: i64 = conn
                .query_row(
                    "SELECT count(*) FROM rows WHERE body LIKE '%x'",
                    [],
                    |row| row.get(0),
                )
                .unwrap();
            assert_eq!(changed, (0..2000).filter(|id| id % 7 == 0).count() as i64);
            // Past a checkpoint, the WAL starts again from its beginning.
            conn.execute_batch("PRAGMA wal_checkpoint(RESTART);")
                .unwrap();
            insert(&conn, 2000..2100);
        }
        let conn = Connection::open(file.path()).unwrap();
        assert_eq!(stored(&conn), (2100, (0..2100).sum()));
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }
}

//! Every write to RocksDB goes through here.
//!
//! When a flush fails for lack of space, RocksDB stalls later writes until
//! the disk has room for a memtable again, which on a full disk is never. So
//! writes ask RocksDB to fail instead of stalling (`no_slowdown`), and a stall
//! after a background error on a (nearly) full disk becomes an error naming
//! the cause. Ordinary stalls (compaction catching up) are waited out.

use std::path::Path;
use std::time::Duration;

use rocksdb::{ErrorKind, WriteBatch, WriteOptions, DB};

use crate::{Result, StoreError};

/// Below this much free space a stall after a background error is taken as
/// a full disk: RocksDB resumes only once a memtable's worth (our column
/// families' write buffers add up to well under this) is free again.
const LOW_SPACE: u64 = 256 << 20;

#[derive(Clone, Copy)]
pub(crate) enum Durability {
    /// No WAL: chunk and tree data, made durable by the flush in `sync`.
    Buffered,
    /// WAL + fsync: refs, revisions and deletions.
    Synced,
}

pub(crate) fn write(db: &DB, batch: WriteBatch, durability: Durability) -> Result<()> {
    // A write that would stall consumes nothing, but the binding takes the
    // batch by value: keep its bytes to retry with.
    let saved = batch.data().to_vec();
    let mut first = Some(batch);
    write_built(db, durability, || first.take().unwrap_or_else(|| WriteBatch::from_data(&saved)))
}

/// [`write`] for a batch too large to copy for nothing (chunk data):
/// `build` makes it again in the rare case that a stall refused it.
pub(crate) fn write_built(db: &DB, durability: Durability, mut build: impl FnMut() -> WriteBatch) -> Result<()> {
    let mut opts = WriteOptions::default();
    match durability {
        Durability::Buffered => opts.disable_wal(true),
        Durability::Synced => opts.set_sync(true),
    }
    opts.set_no_slowdown(true);
    loop {
        match db.write_opt(build(), &opts) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Incomplete => {
                if stalled_for_space(db) {
                    return Err(out_of_space(db));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(db_error(db, e)),
        }
    }
}

/// A RocksDB error as the store reports it: a full disk named as such (once
/// RocksDB has failed a background write for lack of space it fails later
/// writes with that I/O error).
pub(crate) fn db_error(db: &DB, e: rocksdb::Error) -> StoreError {
    if e.kind() == ErrorKind::IOError && e.to_string().contains("No space left") {
        let free = free_bytes(db.path()).map_or(String::new(), |f| format!(": {f} bytes free"));
        StoreError::Io { path: db.path().to_owned(), error: std::io::Error::other(format!("No space left on device{free}; nothing was committed")) }
    } else {
        e.into()
    }
}

/// How many background (flush, compaction) errors RocksDB has seen.
pub(crate) fn background_errors(db: &DB) -> u64 {
    db.property_int_value("rocksdb.background-errors").ok().flatten().unwrap_or(0)
}

/// Whether RocksDB has stopped for lack of space: it has seen a background
/// error and the disk is (nearly) full, so it will not resume by itself.
pub(crate) fn stalled_for_space(db: &DB) -> bool {
    background_errors(db) > 0 && free_bytes(db.path()).is_some_and(|f| f < LOW_SPACE)
}

/// The error for data that could not be made durable in the background.
pub(crate) fn out_of_space(db: &DB) -> StoreError {
    let cause = match free_bytes(db.path()) {
        Some(free) if free < LOW_SPACE => format!("No space left on device: {free} bytes free"),
        _ => "see the store's LOG file".into(),
    };
    StoreError::Io {
        path: db.path().to_owned(),
        error: std::io::Error::other(format!("writing data failed in the background ({cause}); nothing was committed")),
    }
}

fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Flushes the memtables of the named column families to disk, atomically
/// (the database has `atomic_flush` on), and returns once they are there.
///
/// We wait for the flush ourselves rather than with `wait`: when a flush
/// fails for lack of space, RocksDB keeps retrying until space appears and a
/// waiting flush would never return. A failed flush shows up as a new
/// background error instead, and the caller's commit fails.
pub(crate) fn flush(db: &DB, names: &[&str]) -> Result<()> {
    let cfs: Vec<_> = names.iter().map(|n| db.cf_handle(n).expect("column family opened at start")).collect();
    let errors_before = background_errors(db);
    let mut opts = rocksdb::FlushOptions::default();
    opts.set_wait(false);
    // With many writers at once RocksDB may have stopped writes until a
    // flush catches up, and refuses a manual flush meanwhile ("try again"):
    // wait for it as writes do, unless the disk is full.
    while let Err(e) = db.flush_cfs_opt(&cfs, &opts) {
        if !matches!(e.kind(), ErrorKind::TryAgain | ErrorKind::Incomplete | ErrorKind::Busy) {
            return Err(db_error(db, e));
        }
        if background_errors(db) > errors_before || stalled_for_space(db) {
            return Err(out_of_space(db));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    loop {
        let mut pending = 0;
        for cf in &cfs {
            pending += db.property_int_value_cf(cf, "rocksdb.num-immutable-mem-table")?.unwrap_or(0);
        }
        if pending == 0 {
            return Ok(());
        }
        if background_errors(db) > errors_before || stalled_for_space(db) {
            return Err(out_of_space(db));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

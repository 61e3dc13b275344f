//! ferry-store: the durable side of ferry. File trees, revisions, branches
//! and the chunk index in one RocksDB database, chunk records behind a
//! [`ChunkBackend`] (by default in the same database), the streaming ingest
//! pipeline that fills them, and the readers, checks and collectors that
//! walk them. The layout and the backend contract are normative in
//! `protocol/store.md`.
//!
//! Architecture invariants:
//! - A chunk is stored only under the BLAKE3 of the bytes it decodes to, and
//!   every read re-checks that before returning a byte.
//! - A branch never points at a revision whose chunks and trees are not all
//!   durable: chunk and tree writes are flushed before the revision is
//!   written, and the revision and branch are written with a synced WAL.
//! - A branch moves only by compare-and-swap from the head its writer saw.
//! - Garbage collection and writers exclude each other (a writer holds a
//!   `WriteSession` for as long as it may reference chunks it has not yet
//!   published in a revision).
//! - An index entry never reaches disk before the record it names: records
//!   go to the backend first, and `sync` makes the backend durable before it
//!   flushes the index.

#![warn(missing_docs)]

mod backend;
mod bases;
mod check;
mod chunk_index;
mod cut;
mod error;
mod file_hashes;
mod import;
mod ingest;
mod journal;
mod marks;
pub mod pack;
mod pending;
mod read;
mod recover;
mod refs;
mod repack;
mod retention;
mod rocks_backend;
pub mod scan;
mod write;

pub use backend::{BackendError, ChunkBackend, Location, RecordVisitor, Recovered, RecoveryVisitor, RepackPolicy, VerifiedRecord};
pub use bases::DeltaBases;
pub use check::{abort_at, FsckReport, GcReport, PinHandle, Pins, Stats};
pub use chunk_index::IndexEntry;
pub use error::StoreError;
pub use file_hashes::Sha256;
pub use ingest::{list_files, CommitOptions, Committed, FoundFile, IngestProgress, Ingested, WriteSession};
pub use journal::{BranchMove, JournalEntry, MAX_JOURNAL_LEN, MAX_JOURNAL_REVISIONS};
pub use read::ReadProgress;
pub use refs::{is_tag, BranchUpdate, RepoInfo, RevisionSpec, TAG_PREFIX};
pub use retention::{keep, Candidate, KeepRules};
pub use rocks_backend::RocksBackend;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use chunk_index::ChunkIndex;
use ferry_core::{codec, Id};
use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, DB};
use write::{flush, write, Durability};

/// A chunk's raw bytes, and the chunks its record's delta chain went
/// through (its base, the base's base, ...; none if it decodes alone).
pub(crate) type Decoded = (Vec<u8>, Vec<Id>);

/// Delta bases read for decoding, by id, or why one could not be read.
pub(crate) type BaseBytes = HashMap<Id, Result<Decoded>>;

/// Decodes the stored record of chunk `id` (a delta against `base`, whose
/// bytes [`Store::read_bases`] put in `bases`) and verifies it against
/// `id`: a record of this store that does not is corrupt.
pub(crate) fn decode_stored(id: &Id, record: &[u8], base: Option<&Id>, bases: &BaseBytes) -> Result<Decoded> {
    let corrupt = |detail: String| StoreError::Corrupt { what: "chunk", id: *id, detail };
    let Some(b) = base else {
        return Ok((codec::decode_verified(id, record).map_err(|e| corrupt(e.to_string()))?, Vec::new()));
    };
    match bases.get(b) {
        None => Err(corrupt(format!("its delta chain is longer than {} records", codec::MAX_DELTA_CHAIN))),
        Some(Err(e)) => Err(corrupt(format!("its delta base {b} cannot be read: {e}"))),
        Some(Ok((base_raw, below))) => {
            let raw = codec::decode_delta_verified(id, record, base_raw).map_err(|e| corrupt(e.to_string()))?;
            Ok((raw, std::iter::once(*b).chain(below.iter().copied()).collect()))
        }
    }
}

/// A delta's chunk (`raw`) re-encoded as a record that decodes alone, as
/// byte planes of the delta's element width.
fn standalone(raw: &[u8], delta: &[u8]) -> Vec<u8> {
    crate::ingest::ENCODER.with_borrow_mut(|enc| enc.encode_hinted(raw, codec::element_width(delta)))
}

/// The store's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The store format this build reads and writes (`protocol/store.md`).
/// Version 1 stores are migrated on open: they lack at most the change feed
/// and the store id, which opening adds, and their index entries are
/// version 2 entries with an empty location.
pub const FORMAT_VERSION: u32 = 2;

pub(crate) const CF_META: &str = "meta";
pub(crate) const CF_CHUNK_INDEX: &str = "chunk_index";
pub(crate) const CF_CHUNKS: &str = "chunks";
pub(crate) const CF_TREES: &str = "trees";
pub(crate) const CF_REVISIONS: &str = "revisions";
pub(crate) const CF_BRANCHES: &str = "branches";
pub(crate) const CF_REPOS: &str = "repos";
/// The change feed: sequence number (u64 big-endian) -> repository whose
/// branches changed.
pub(crate) const CF_REF_LOG: &str = "ref_log";
/// Files' SHA-256 and the Git LFS objects of repositories (`file_hashes`).
pub(crate) const CF_FILE_SHA256: &str = "file_sha256";
/// Revisions each repository forgot (`retention`).
pub(crate) const CF_FORGOTTEN: &str = "forgotten";
const ALL_CFS: [&str; 10] = [CF_META, CF_CHUNK_INDEX, CF_CHUNKS, CF_TREES, CF_REVISIONS, CF_BRANCHES, CF_REPOS, CF_REF_LOG, CF_FILE_SHA256, CF_FORGOTTEN];

/// Makes a store's backend from its name and config (see
/// [`Store::open_with`]); None for a backend the caller does not know.
pub type MakeBackend<'a> = dyn Fn(&str, &str) -> Result<Option<Box<dyn ChunkBackend>>, BackendError> + 'a;

/// A ferry store: one RocksDB database in a directory, and a chunk backend.
pub struct Store {
    pub(crate) db: Arc<DB>,
    pub(crate) index: ChunkIndex,
    pub(crate) backend: Box<dyn ChunkBackend>,
    /// Entries and nodes waiting for a deferred backend's `sync` (None for
    /// the embedded backend).
    pending: Option<pending::Pending>,
    path: PathBuf,
    /// Writers share it; gc takes it exclusively.
    pub(crate) gc_guard: RwLock<()>,
    /// Writes that skip the WAL (records, index entries, tree nodes) share
    /// it; `sync` takes it exclusively, so nothing lands between its flush
    /// of the records and its flush of the entries and nodes (an entry or
    /// node made durable without the records it names).
    pub(crate) unlogged_writes: RwLock<()>,
    /// Serialises branch compare-and-swap within the process (RocksDB's own
    /// lock keeps other processes out of the store entirely).
    pub(crate) branch_lock: Mutex<()>,
    /// The change feed's latest sequence number.
    pub(crate) ref_seq: AtomicU64,
    /// Pins held by writers in this process (`Store::pin`); gc keeps them.
    pub(crate) live_pins: check::LivePins,
    /// Names this store in change-feed positions: a position means nothing
    /// to another store, or to this one recreated.
    id: [u8; 16],
}

fn cf_options(name: &str) -> Options {
    let mut o = Options::default();
    match name {
        CF_CHUNKS => {
            // Chunk records go to blob files, keeping the LSM tree small; they
            // are already compressed by ferry's codec.
            o.set_enable_blob_files(true);
            o.set_min_blob_size(1024);
            o.set_blob_file_size(256 << 20);
            o.set_enable_blob_gc(true);
            // Chunks are never overwritten, so blob files hold garbage only
            // after `gc` deletes chunks, and `gc` raises the cutoff for its
            // own compaction. Ordinary compactions must not relocate live
            // blobs: with the default cutoff (0.25) every L0 compaction
            // rewrites the oldest quarter of the chunk data.
            o.set_blob_gc_age_cutoff(0.0);
            // Memtables hold chunk records until a flush moves them to blob
            // files, so these two dominate a commit's memory: 2 x 32 MiB
            // keeps peak RSS near 210 MiB whatever the file size, and the
            // last flush a commit waits for stays short.
            o.set_write_buffer_size(32 << 20);
            o.set_max_write_buffer_number(2);
        }
        _ => {
            o.set_write_buffer_size(16 << 20);
        }
    }
    o
}

fn db_options(create: bool, direct_writes: bool) -> Options {
    let mut o = Options::default();
    o.create_if_missing(create);
    o.create_missing_column_families(create);
    // Chunk and tree writes skip the WAL and are made durable by a flush
    // before any revision references them; atomic flush keeps the chunk
    // index and the chunk records consistent with each other across a crash.
    o.set_atomic_flush(true);
    o.set_max_background_jobs(2);
    o.set_bytes_per_sync(8 << 20);
    o.set_max_total_wal_size(256 << 20);
    // Flushes write blob files with O_DIRECT where the file system allows
    // it: chunk data is written once and read back rarely, and copying it
    // through the page cache cost more CPU than anything but zstd.
    o.set_use_direct_io_for_flush_and_compaction(direct_writes);
    // Blob files are read mostly in the order they were written (push,
    // export, a hub serving a pull): let the kernel read ahead. RocksDB's
    // default advises random access, which turns readahead off.
    o.set_advise_random_on_open(false);
    // Every ferry command opens the store and RocksDB starts a new info log
    // each time; by default it keeps 1000 of them.
    o.set_keep_log_file_num(4);
    o.set_max_log_file_size(4 << 20);
    o
}

/// One batched lookup of `ids` in `cf`, answers in the order asked. RocksDB
/// wants the keys sorted (and then reads blob values in file order).
pub(crate) fn multi_get_in_order(db: &DB, cf: &rocksdb::ColumnFamily, ids: &[Id]) -> std::result::Result<Vec<Option<Vec<u8>>>, rocksdb::Error> {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| ids[i].as_bytes());
    let keys: Vec<&[u8]> = order.iter().map(|&i| ids[i].as_bytes().as_slice()).collect();
    let mut out = vec![None; ids.len()];
    for (slot, found) in order.into_iter().zip(db.batched_multi_get_cf(cf, keys, true)) {
        out[slot] = found?.map(|v| v.to_vec());
    }
    Ok(out)
}

/// Whether files in `dir` can be written with O_DIRECT (Linux only).
#[cfg(not(target_os = "linux"))]
fn direct_writes_work(_dir: &Path) -> bool {
    false
}

/// Whether files in `dir` can be written with O_DIRECT (not on every file
/// system: RocksDB's flushes would fail where it is refused).
#[cfg(target_os = "linux")]
fn direct_writes_work(dir: &Path) -> bool {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    const ALIGN: usize = 4096;
    let probe = dir.join(format!("direct-io-probe.{}.tmp", std::process::id()));
    let ok = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).custom_flags(libc::O_DIRECT).open(&probe)?;
        let layout = std::alloc::Layout::from_size_align(ALIGN, ALIGN).expect("valid layout");
        // SAFETY: the layout has a non-zero size; the memory is zeroed, used
        // as a byte slice of exactly that size, and freed below.
        let buf = unsafe { std::alloc::alloc_zeroed(layout) };
        if buf.is_null() {
            return Err(std::io::Error::other("out of memory"));
        }
        let res = f.write_all(unsafe { std::slice::from_raw_parts(buf, ALIGN) });
        unsafe { std::alloc::dealloc(buf, layout) };
        res
    })()
    .is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

impl Store {
    /// Whether `path` holds a store (without opening it: another process,
    /// such as a running hub, may hold it open).
    pub fn exists_at(path: &Path) -> bool {
        path.join("CURRENT").exists()
    }

    /// Creates a new, empty store at `path` (which must not hold one), with
    /// the embedded backend.
    pub fn init(path: &Path) -> Result<Store> {
        Self::init_with(path, None)
    }

    /// Creates a new, empty store at `path` whose chunk records live in
    /// `backend` (None: the embedded one). `config` is what `open_with`
    /// hands back to make the backend again (a bucket's address, say); it
    /// is kept in the store's metadata and never interpreted here.
    pub fn init_with(path: &Path, backend: Option<(Box<dyn ChunkBackend>, &str)>) -> Result<Store> {
        if Self::exists_at(path) {
            return Err(StoreError::AlreadyExists(path.to_owned()));
        }
        std::fs::create_dir_all(path).map_err(|e| StoreError::io(path, e))?;
        let mut store = Self::open_db(path, true)?;
        let config = match backend {
            Some((b, config)) => {
                store.use_backend(b);
                config
            }
            None => "",
        };
        let mut w = rocksdb::WriteOptions::default();
        w.set_sync(true);
        let meta = store.cf(CF_META);
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, b"backend", store.backend.name());
        batch.put_cf(meta, b"backend-config", config);
        batch.put_cf(meta, b"format", FORMAT_VERSION.to_le_bytes());
        store.db.write_opt(batch, &w)?;
        store.with_feed()
    }

    /// Opens an existing store with the embedded backend, checking its
    /// format version (a store on another backend is refused: see
    /// [`Store::open_with`]).
    pub fn open(path: &Path) -> Result<Store> {
        Self::open_with(path, &|_, _| Ok(None))
    }

    /// Opens an existing store; `make` is asked for the backend when the
    /// store's is not the embedded one, with the backend's name and the
    /// `config` given at init, and answers None for a backend it does not
    /// know. A store whose backend is the source of truth is brought up to
    /// date with it first (a crash between the backend's journal and the
    /// database's write).
    pub fn open_with(path: &Path, make: &MakeBackend<'_>) -> Result<Store> {
        if !Self::exists_at(path) {
            return Err(StoreError::NotAStore(path.to_owned()));
        }
        let mut store = Self::open_db(path, false)?;
        let meta = store.cf(CF_META);
        let found = store.db.get_cf(meta, b"format")?.and_then(|v| Some(u32::from_le_bytes(v.as_slice().try_into().ok()?)));
        let refuse = |found: String| Err(StoreError::UnknownFormat { path: path.to_owned(), found });
        match found {
            Some(FORMAT_VERSION) => {}
            Some(1) => {
                // Opening added what version 1 lacked; the backend of a
                // version 1 store is always the embedded one.
                let mut w = rocksdb::WriteOptions::default();
                w.set_sync(true);
                let mut batch = WriteBatch::default();
                batch.put_cf(meta, b"backend", store.backend.name());
                batch.put_cf(meta, b"format", FORMAT_VERSION.to_le_bytes());
                store.db.write_opt(batch, &w)?;
            }
            Some(v) => return refuse(v.to_string()),
            None => return refuse("none".into()),
        }
        let named = store.db.get_cf(meta, b"backend")?.map_or("none".into(), |b| String::from_utf8_lossy(&b).into_owned());
        if named != store.backend.name() {
            let config = store.db.get_cf(meta, b"backend-config")?.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
            match make(&named, &config)? {
                Some(b) if b.name() == named => store.use_backend(b),
                _ => return refuse(format!("{FORMAT_VERSION} with chunk backend {named:?}, which this ferry cannot open")),
            }
        }
        let store = store.with_feed()?;
        store.catch_up()?;
        Ok(store)
    }

    fn use_backend(&mut self, backend: Box<dyn ChunkBackend>) {
        self.pending = backend.deferred().map(pending::Pending::new);
        self.backend = backend;
    }

    /// Reads the change feed's position and the store's id, making the id
    /// on first use (stores made before the feed existed get one here).
    fn with_feed(mut self) -> Result<Store> {
        let last = self.db.iterator_cf(self.cf(CF_REF_LOG), IteratorMode::End).next().transpose()?;
        let seq = last.and_then(|(k, _)| k.as_ref().try_into().ok().map(u64::from_be_bytes)).unwrap_or(0);
        self.ref_seq = AtomicU64::new(seq);
        let stored = self.db.get_cf(self.cf(CF_META), b"id")?.and_then(|v| <[u8; 16]>::try_from(v.as_slice()).ok());
        self.id = match stored {
            Some(id) => id,
            None => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                let seed = format!("{}:{}:{}", self.path.display(), now.as_nanos(), std::process::id());
                let mut id = [0u8; 16];
                id.copy_from_slice(&blake3::hash(seed.as_bytes()).as_bytes()[..16]);
                let mut w = rocksdb::WriteOptions::default();
                w.set_sync(true);
                self.db.put_cf_opt(self.cf(CF_META), b"id", id, &w)?;
                id
            }
        };
        Ok(self)
    }

    /// This store's id, for change-feed positions.
    pub fn id(&self) -> [u8; 16] {
        self.id
    }

    fn open_db(path: &Path, create: bool) -> Result<Store> {
        // A ferry store from before a column family existed gains it; a
        // RocksDB database that is not a ferry store is left alone.
        let existing = DB::list_cf(&Options::default(), path).unwrap_or_default();
        let add_missing = create || existing.iter().any(|c| c == CF_META);
        let cfs = ALL_CFS.iter().map(|n| ColumnFamilyDescriptor::new(*n, cf_options(n)));
        let mut opts = db_options(create, direct_writes_work(path));
        opts.create_missing_column_families(add_missing);
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| {
            let msg = e.to_string();
            if msg.contains("lock") || msg.contains("Resource temporarily unavailable") {
                StoreError::Locked(path.to_owned())
            } else if msg.contains("Column families not opened") || msg.contains("Invalid column family") {
                StoreError::UnknownFormat { path: path.to_owned(), found: format!("unexpected layout ({msg})") }
            } else {
                StoreError::Db(e)
            }
        })?;
        let db = Arc::new(db);
        Ok(Store {
            index: ChunkIndex::new(db.clone()),
            backend: Box::new(RocksBackend::new(db.clone())),
            pending: None,
            db,
            path: path.to_owned(),
            gc_guard: RwLock::new(()),
            unlogged_writes: RwLock::new(()),
            branch_lock: Mutex::new(()),
            live_pins: Default::default(),
            ref_seq: AtomicU64::new(0),
            id: [0; 16],
        })
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column family opened at start")
    }

    /// The backend that holds chunk records.
    pub fn backend(&self) -> &dyn ChunkBackend {
        &*self.backend
    }

    /// For each id, whether its chunk is stored (one batched index lookup).
    pub fn has_chunks(&self, ids: &[Id]) -> Result<Vec<bool>> {
        Ok(self.index_entries(ids)?.into_iter().map(|e| e.is_some()).collect())
    }

    /// The index entry of each id (None where not stored): the database's,
    /// or one waiting for a deferred backend's `sync`.
    pub(crate) fn index_entries(&self, ids: &[Id]) -> Result<Vec<Option<IndexEntry>>> {
        let mut entries = self.index.entries(ids)?;
        if let Some(p) = &self.pending {
            for (e, id) in entries.iter_mut().zip(ids) {
                if e.is_none() {
                    *e = p.entry(id);
                }
            }
        }
        Ok(entries)
    }

    /// The records of chunks, in the order asked, as they travel on the
    /// wire (unverified here: whoever stores one verifies it). A delta
    /// record is sent as a record that decodes alone (its base may not be
    /// on the other side).
    pub fn chunk_records(&self, ids: &[Id]) -> Result<Vec<Option<Vec<u8>>>> {
        self.chunk_records_keeping(ids, &HashSet::new())
    }

    /// [`Store::chunk_records`], but a delta whose base is in `kept` (the
    /// receiver said it holds it) is sent as it is.
    pub fn chunk_records_keeping(&self, ids: &[Id], kept: &HashSet<Id>) -> Result<Vec<Option<Vec<u8>>>> {
        let mut records = self.stored_records(ids)?;
        // Deltas whose base the receiver may lack go re-encoded.
        let resend = |r: &Vec<u8>| r.first() == Some(&codec::CODEC_DELTA) && codec::delta_base(r).ok().flatten().is_none_or(|b| !kept.contains(&b));
        let deltas: Vec<usize> = (0..ids.len()).filter(|&i| records[i].as_ref().is_some_and(resend)).collect();
        if deltas.is_empty() {
            return Ok(records);
        }
        let delta_ids: Vec<Id> = deltas.iter().map(|&i| ids[i]).collect();
        let raws = self.chunks_verified(&delta_ids);
        for (&i, raw) in deltas.iter().zip(raws) {
            let raw = raw?;
            records[i] = records[i].as_deref().map(|delta| standalone(&raw, delta));
        }
        Ok(records)
    }

    /// For each chunk, the base its stored record is a delta against (None
    /// for a record that decodes alone, or a chunk not stored): one batched
    /// index lookup.
    pub fn chunk_bases(&self, ids: &[Id]) -> Result<Vec<Option<Id>>> {
        Ok(self.index_entries(ids)?.into_iter().map(|e| e.and_then(|e| e.base)).collect())
    }

    /// Verifies records that came from elsewhere: each must decode to bytes
    /// that hash to its id. A delta is decoded against this store's own copy
    /// of its base (which must be stored: the sender asked), and is kept as
    /// a delta only if its chain here stays within `MAX_DELTA_CHAIN`;
    /// otherwise it is stored as a record that decodes alone.
    pub fn verify_records(&self, records: Vec<(Id, Vec<u8>)>) -> Result<Vec<VerifiedRecord>> {
        let bases: Vec<Option<Id>> = records.iter().map(|(_, r)| codec::delta_base(r).ok().flatten()).collect();
        let base_bytes = self.read_bases(&bases, 0);
        let mut out = Vec::with_capacity(records.len());
        for ((id, record), base) in records.into_iter().zip(bases) {
            let Some(base) = base else {
                out.push(VerifiedRecord::verify(id, record)?);
                continue;
            };
            let (base_raw, chain) = match base_bytes.get(&base) {
                Some(Ok(b)) => (&b.0, b.1.len() + 1),
                Some(Err(StoreError::MissingChunk(_))) | None => {
                    return Err(
                        ferry_core::invalid("chunk record", format!("chunk {id} is a delta against chunk {base}, which this store does not hold")).into()
                    )
                }
                Some(Err(e)) => {
                    return Err(StoreError::Corrupt { what: "chunk", id: base, detail: format!("the base of an incoming delta cannot be read: {e}") })
                }
            };
            let raw = codec::decode_delta_verified(&id, &record, base_raw)?;
            let record = if chain < codec::MAX_DELTA_CHAIN { record } else { standalone(&raw, &record) };
            out.push(VerifiedRecord::encoded(id, record));
        }
        Ok(out)
    }

    /// The bytes of the distinct delta bases among `bases`, read `depth`
    /// links below the chunks a read asked for (none at all past the
    /// longest chain a reader follows, so deeper deltas fail to decode).
    pub(crate) fn read_bases(&self, bases: &[Option<Id>], depth: usize) -> BaseBytes {
        let mut ids: Vec<Id> = bases.iter().flatten().copied().collect();
        if ids.is_empty() || depth >= codec::MAX_DELTA_CHAIN {
            return HashMap::new();
        }
        ids.sort_unstable();
        ids.dedup();
        ids.iter().copied().zip(self.chunks_decoded(&ids, depth)).collect()
    }

    /// The records of chunks as stored, in the order asked.
    fn stored_records(&self, ids: &[Id]) -> Result<Vec<Option<Vec<u8>>>> {
        let entries = self.index_entries(ids)?;
        let wanted: Vec<(Id, &Location)> = ids.iter().zip(&entries).filter_map(|(id, e)| Some((*id, &e.as_ref()?.location))).collect();
        let mut found = self.backend.get_many(&wanted)?.into_iter();
        Ok(entries.iter().map(|e| e.as_ref().and_then(|_| found.next().flatten())).collect())
    }

    /// A chunk's raw bytes, verified against its id.
    pub fn chunk(&self, id: &Id) -> Result<Vec<u8>> {
        self.chunks_verified(std::slice::from_ref(id)).pop().expect("one answer per id")
    }

    /// The raw bytes of several chunks, each verified against its id: one
    /// batched index lookup and one backend read, decoded in parallel.
    pub fn chunks_verified(&self, ids: &[Id]) -> Vec<Result<Vec<u8>>> {
        self.chunks_decoded(ids, 0).into_iter().map(|r| r.map(|d| d.0)).collect()
    }

    /// The raw bytes of several chunks, each verified against its id, with
    /// the chunks its record's delta chain went through (its base, the
    /// base's base, ...; none for a record that decodes alone).
    /// The bases of delta records are read the same way, a batch per link,
    /// each verified against its own id before a delta is applied to it;
    /// `depth` is how many links above these chunks the read started.
    pub(crate) fn chunks_decoded(&self, ids: &[Id], depth: usize) -> Vec<Result<Decoded>> {
        use rayon::prelude::*;
        let records = match self.stored_records(ids) {
            Ok(r) => r,
            // Name the unreadable ones, one at a time.
            Err(_) if ids.len() > 1 => return ids.iter().map(|id| self.chunks_decoded(std::slice::from_ref(id), depth).pop().expect("one answer")).collect(),
            Err(e) => return ids.iter().map(|id| Err(StoreError::Corrupt { what: "chunk", id: *id, detail: format!("unreadable: {e}") })).collect(),
        };
        let bases: Vec<Option<Id>> = records.iter().map(|r| r.as_deref().and_then(|r| codec::delta_base(r).ok().flatten())).collect();
        let base_bytes = self.read_bases(&bases, depth + 1);
        ids.par_iter()
            .zip(records)
            .zip(&bases)
            .map(|((id, record), base)| decode_stored(id, &record.ok_or(StoreError::MissingChunk(*id))?, base.as_ref(), &base_bytes))
            .collect()
    }

    /// Stores verified records: the backend takes the bytes, then the index
    /// learns where they went. Durable after `sync`.
    pub(crate) fn put_chunk_records(&self, records: &[VerifiedRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.unlogged(|| {
            let locations = self.backend.put(records)?;
            let entries = records.iter().zip(locations).map(|(r, loc)| (r.id(), IndexEntry::of(r, loc)));
            match &self.pending {
                None => {
                    let mut batch = WriteBatch::default();
                    self.index.batch_put(&mut batch, entries);
                    write(&self.db, batch, Durability::Buffered)
                }
                Some(p) => {
                    p.add_entries(entries);
                    if p.full() {
                        self.settle(p, Some(&|loc: &Location| self.backend.durable(loc)))?;
                    }
                    Ok(())
                }
            }
        })
    }

    /// Stores tree nodes whose ids the caller computed from their bytes.
    /// Durable after `sync`.
    pub(crate) fn put_nodes(&self, nodes: Vec<(Id, Vec<u8>)>) -> Result<()> {
        if nodes.is_empty() {
            return Ok(());
        }
        self.unlogged(|| match &self.pending {
            None => {
                let trees = self.cf(CF_TREES);
                let mut batch = WriteBatch::default();
                for (id, enc) in &nodes {
                    batch.put_cf(trees, id.as_bytes(), enc);
                }
                write(&self.db, batch, Durability::Buffered)
            }
            Some(p) => {
                let at = self.backend.put_nodes(&nodes)?;
                p.add_nodes(nodes, at);
                Ok(())
            }
        })
    }

    /// Runs a write that skips the WAL (made durable by `sync`).
    pub(crate) fn unlogged<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let _shared = self.unlogged_writes.read().unwrap_or_else(|p| p.into_inner());
        f()
    }

    /// Writes the index entries and nodes that waited for a deferred
    /// backend: those whose records are durable by `only`, or (None) all,
    /// after making every record durable. The caller holds
    /// `unlogged_writes` (either way).
    fn settle(&self, p: &pending::Pending, only: pending::Filter<'_>) -> Result<()> {
        let _one = p.settling.lock().unwrap_or_else(|p| p.into_inner());
        let (entries, nodes) = p.snapshot(only);
        if entries.is_empty() && nodes.is_empty() {
            return Ok(());
        }
        if only.is_none() {
            self.backend.sync()?;
        }
        let mut batch = WriteBatch::default();
        self.index.batch_put(&mut batch, entries.iter().cloned());
        let trees = self.cf(CF_TREES);
        for (id, enc) in &nodes {
            batch.put_cf(trees, id.as_bytes(), enc);
        }
        write(&self.db, batch, Durability::Buffered)?;
        p.remove(&entries, &nodes);
        Ok(())
    }

    /// Makes every chunk and tree node written so far durable.
    pub fn sync(&self) -> Result<()> {
        let _alone = self.unlogged_writes.write().unwrap_or_else(|p| p.into_inner());
        // Records before the entries that name them.
        match &self.pending {
            None => self.backend.sync()?,
            Some(p) => self.settle(p, None)?,
        }
        flush(&self.db, &[CF_CHUNK_INDEX, CF_TREES])
    }

    /// Makes everything written durable, lets the backend give up what it
    /// holds for this store (a bucket's writer lease) and stops the
    /// database's background work, for a process that ends while others
    /// still hold the store (a hub's threads). Nothing is written after it.
    pub fn close(&self) -> Result<()> {
        self.sync()?;
        self.backend.close()?;
        // The process exits with the database still open: a flush or
        // compaction left running would meet RocksDB's statics torn down
        // (an abort at exit). Later writes fail instead.
        self.db.cancel_all_background_work(true);
        Ok(())
    }

    /// A node waiting for a deferred backend's `sync`.
    pub(crate) fn pending_node(&self, id: &Id) -> Option<Vec<u8>> {
        self.pending.as_ref()?.node(id)
    }
}

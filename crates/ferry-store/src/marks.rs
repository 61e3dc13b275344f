//! What a gc keeps, on disk: the ids of every reachable node and chunk go
//! into a scratch RocksDB database beside the store, not into memory, so
//! marking a store of billions of chunks takes tens of MiB of RAM (the
//! scratch database's memtable and the batch being written), not tens of
//! GB.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use ferry_core::Id;
use rocksdb::{BlockBasedOptions, DBCompressionType, Options, WriteBatch, WriteOptions, DB};

use crate::Result;

const NODE: u8 = b'n';
const CHUNK: u8 = b'c';
/// Ids gathered before they are written to the scratch database.
const BATCH: usize = 1 << 16;

/// The scratch directory's name inside the store's directory. A kill
/// leaves it behind; the next gc starts by removing it.
const DIR: &str = "gc-marks";

/// The set of kept nodes and chunks (and revisions, which are few), with
/// the chunks pinned by prefix.
pub(crate) struct Marks {
    db: Option<DB>,
    dir: PathBuf,
    /// Written to `batch` and not yet to `db`; lookups see them here.
    pending: HashSet<[u8; 33]>,
    batch: WriteBatch,
    pub(crate) revs: HashSet<Id>,
    pinned_chunks: HashSet<u64>,
}

fn key(kind: u8, id: &Id) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = kind;
    k[1..].copy_from_slice(id.as_bytes());
    k
}

impl Marks {
    /// An empty set in a fresh scratch database under `store_dir`.
    pub(crate) fn new(store_dir: &Path, pinned_chunks: HashSet<u64>) -> Result<Marks> {
        let dir = store_dir.join(DIR);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| crate::StoreError::io(&dir, e))?;
        }
        let mut opts = Options::default();
        opts.create_if_missing(true);
        // Random ids do not compress; lookups mostly miss in gc's sweep.
        opts.set_compression_type(DBCompressionType::None);
        opts.set_write_buffer_size(16 << 20);
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        opts.set_block_based_table_factory(&table);
        let db = DB::open(&opts, &dir)?;
        Ok(Marks { db: Some(db), dir, pending: HashSet::new(), batch: WriteBatch::default(), revs: HashSet::new(), pinned_chunks })
    }

    fn db(&self) -> &DB {
        self.db.as_ref().expect("open until dropped")
    }

    fn contains(&self, k: &[u8; 33]) -> Result<bool> {
        Ok(self.pending.contains(k) || self.db().get_pinned(k)?.is_some())
    }

    /// Adds a key; true if it was not there.
    fn insert(&mut self, k: [u8; 33]) -> Result<bool> {
        if self.contains(&k)? {
            return Ok(false);
        }
        self.batch.put(k, []);
        self.pending.insert(k);
        if self.pending.len() >= BATCH {
            // Scratch data: a crash discards it all, so no WAL.
            let mut no_wal = WriteOptions::default();
            no_wal.disable_wal(true);
            let batch = std::mem::take(&mut self.batch);
            self.db().write_opt(batch, &no_wal)?;
            self.pending.clear();
        }
        Ok(true)
    }

    /// Marks a node; true if it was not marked yet.
    pub(crate) fn insert_node(&mut self, id: &Id) -> Result<bool> {
        self.insert(key(NODE, id))
    }

    /// Marks a chunk; true if it was not marked yet.
    pub(crate) fn insert_chunk(&mut self, id: &Id) -> Result<bool> {
        self.insert(key(CHUNK, id))
    }

    /// Whether the node is kept.
    pub(crate) fn node(&self, id: &Id) -> Result<bool> {
        self.contains(&key(NODE, id))
    }

    /// Whether the chunk is kept (reached, a delta base of one, or pinned).
    pub(crate) fn chunk(&self, id: &Id) -> Result<bool> {
        Ok(self.pinned_chunks.contains(&crate::Pins::chunk_key(id)) || self.contains(&key(CHUNK, id))?)
    }
}

impl Drop for Marks {
    fn drop(&mut self) {
        drop(self.db.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

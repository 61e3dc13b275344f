//! What a gc keeps: the ids of every reachable node and chunk, gathered in
//! memory up to [`BATCH`] at a time and beyond that in a scratch RocksDB
//! database beside the store, so marking a store of billions of chunks
//! takes tens of MiB of RAM (the batch and the database's memtable), not
//! tens of GB, and a small store never touches the disk for it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use ferry_core::Id;
use rocksdb::{BlockBasedOptions, DBCompressionType, Options, WriteBatch, WriteOptions, DB};

use crate::Result;

const NODE: u8 = b'n';
const CHUNK: u8 = b'c';
/// Ids gathered in memory before they are written to the scratch
/// database (about 25 MiB of them).
const BATCH: usize = 1 << 19;

/// The scratch directory's name inside the store's directory. A kill
/// leaves it behind; the next gc starts by removing it.
const DIR: &str = "gc-marks";

/// The set of kept nodes and chunks (and revisions, which are few), with
/// the chunks pinned by prefix.
pub(crate) struct Marks {
    /// Opened once the first batch is full.
    db: Option<DB>,
    dir: PathBuf,
    /// Not yet written to `db`; lookups see them here.
    pending: HashSet<[u8; 33]>,
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
    /// An empty set, spilling into a scratch database under `store_dir`.
    pub(crate) fn new(store_dir: &Path, pinned_chunks: HashSet<u64>) -> Result<Marks> {
        let dir = store_dir.join(DIR);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| crate::StoreError::io(&dir, e))?;
        }
        Ok(Marks { db: None, dir, pending: HashSet::new(), revs: HashSet::new(), pinned_chunks })
    }

    fn open(dir: &Path) -> Result<DB> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        // Random ids do not compress; lookups mostly miss in gc's sweep.
        opts.set_compression_type(DBCompressionType::None);
        opts.set_write_buffer_size(16 << 20);
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        opts.set_block_based_table_factory(&table);
        Ok(DB::open(&opts, dir)?)
    }

    fn contains(&self, k: &[u8; 33]) -> Result<bool> {
        if self.pending.contains(k) {
            return Ok(true);
        }
        match &self.db {
            Some(db) => Ok(db.get_pinned(k)?.is_some()),
            None => Ok(false),
        }
    }

    /// Adds a key; true if it was not there.
    fn insert(&mut self, k: [u8; 33]) -> Result<bool> {
        if self.contains(&k)? {
            return Ok(false);
        }
        self.pending.insert(k);
        if self.pending.len() >= BATCH {
            if self.db.is_none() {
                self.db = Some(Self::open(&self.dir)?);
            }
            let mut batch = WriteBatch::default();
            for k in self.pending.drain() {
                batch.put(k, []);
            }
            // Scratch data: a crash discards it all, so no WAL.
            let mut no_wal = WriteOptions::default();
            no_wal.disable_wal(true);
            self.db.as_ref().expect("just opened").write_opt(batch, &no_wal)?;
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
        if self.db.take().is_some() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_beyond_one_batch_spill_to_disk_and_are_all_found() {
        let tmp = tempfile::tempdir().unwrap();
        let id = |i: usize| Id::of_chunk(&i.to_le_bytes());
        let mut marks = Marks::new(tmp.path(), HashSet::from([crate::Pins::chunk_key(&id(usize::MAX))])).unwrap();
        let n = BATCH + 1000;
        for i in 0..n {
            assert!(marks.insert_chunk(&id(i)).unwrap());
        }
        assert!(tmp.path().join(DIR).exists(), "a full batch goes to disk");
        assert!(!marks.insert_chunk(&id(0)).unwrap() && !marks.insert_chunk(&id(n - 1)).unwrap());
        assert!((0..n).step_by(997).all(|i| marks.chunk(&id(i)).unwrap()));
        assert!(marks.insert_node(&id(0)).unwrap() && marks.node(&id(0)).unwrap());
        assert!(!marks.chunk(&id(n)).unwrap() && !marks.node(&id(1)).unwrap());
        assert!(marks.chunk(&id(usize::MAX)).unwrap(), "pinned by prefix");
        drop(marks);
        assert!(!tmp.path().join(DIR).exists(), "the scratch database goes with the marks");
    }
}

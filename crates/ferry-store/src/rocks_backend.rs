//! The embedded backend: chunk records in a column family of the store's own
//! RocksDB database, with values in BlobDB blob files.

use std::sync::Arc;

use ferry_core::Id;
use rocksdb::{WriteBatch, DB};

use crate::backend::{BackendError, ChunkBackend, Location, RecordVisitor, VerifiedRecord};
use crate::write::{flush, write, write_built, Durability};
use crate::{multi_get_in_order, StoreError, CF_CHUNKS};

/// Chunk records keyed by id in the `chunks` column family. Its records and
/// the index entries naming them are flushed by the same atomic flush (the
/// database has `atomic_flush` on), so an entry never reaches disk without
/// its record: locations are empty.
pub struct RocksBackend {
    db: Arc<DB>,
}

impl RocksBackend {
    pub(crate) fn new(db: Arc<DB>) -> Self {
        RocksBackend { db }
    }

    fn cf(&self) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(CF_CHUNKS).expect("column family opened at start")
    }
}

/// A store error in the backend's terms: a full disk stays recognisable,
/// and the store's path (which a hub must not tell its clients) is left
/// out.
fn backend_error(e: StoreError) -> BackendError {
    let text = match e {
        StoreError::Io { error, .. } => error.to_string(),
        e => e.to_string(),
    };
    if text.contains("No space left") {
        BackendError::OutOfSpace(text)
    } else {
        BackendError::Other(text)
    }
}

impl ChunkBackend for RocksBackend {
    fn name(&self) -> &'static str {
        "rocksdb"
    }

    fn put(&self, records: &[VerifiedRecord]) -> Result<Vec<Location>, BackendError> {
        let bytes: usize = records.iter().map(|r| r.record().len() + 40).sum();
        let cf = self.cf();
        let batch = || {
            let mut batch = WriteBatch::with_capacity_bytes(bytes);
            for r in records {
                batch.put_cf(cf, r.id().as_bytes(), r.record());
            }
            batch
        };
        write_built(&self.db, Durability::Buffered, batch).map_err(backend_error)?;
        Ok(vec![Location::default(); records.len()])
    }

    fn sync(&self) -> Result<(), BackendError> {
        flush(&self.db, &[CF_CHUNKS]).map_err(backend_error)
    }

    fn get_many(&self, wanted: &[(Id, &Location)]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let ids: Vec<Id> = wanted.iter().map(|w| w.0).collect();
        multi_get_in_order(&self.db, self.cf(), &ids).map_err(|e| BackendError::Other(e.to_string()))
    }

    fn for_each(&self, visit: &mut RecordVisitor<'_>) -> Result<(), BackendError> {
        let here = Location::default();
        let mut it = self.db.raw_iterator_cf(self.cf());
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            // A key that is not an id names no chunk: the index check
            // reports what is missing.
            if let Some(id) = Id::from_slice(k) {
                visit(id, &here, v)?;
            }
            it.next();
        }
        it.status().map_err(|e| BackendError::Other(e.to_string()))
    }

    fn delete(&self, gone: &[(Id, Location)]) -> Result<(), BackendError> {
        let mut batch = WriteBatch::default();
        let cf = self.cf();
        for (id, _) in gone {
            batch.delete_cf(cf, id.as_bytes());
        }
        write(&self.db, batch, Durability::Synced).map_err(backend_error)
    }

    fn reclaim(&self) -> Result<(), BackendError> {
        // BlobDB rewrites blob files holding garbage only during compaction:
        // raise the cutoff for this one compaction so the space returns, then
        // restore it (ordinary compactions must not relocate live blobs).
        let cf = self.cf();
        let set = |age: &str, force: &str| {
            self.db
                .set_options_cf(cf, &[("blob_garbage_collection_age_cutoff", age), ("blob_garbage_collection_force_threshold", force)])
                .map_err(|e| BackendError::Other(e.to_string()))
        };
        set("1.0", "0.0")?;
        let mut opts = rocksdb::CompactOptions::default();
        opts.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        self.db.compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &opts);
        set("0.0", "1.0")
    }
}

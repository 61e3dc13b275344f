//! The chunk store: content-addressed, compressed chunk records behind a
//! trait, so that chunk data can later live in object storage while the
//! metadata stays here.

use std::sync::Arc;

use ferry_core::codec::{self, Encoder, RecordHeader};
use ferry_core::{FormatError, Id};
use rocksdb::{ErrorKind, WriteBatch, DB};

use crate::write::{background_errors, db_error, out_of_space, stalled_for_space, write, Durability};
use crate::{Result, StoreError, CF_CHUNKS, CF_CHUNK_INDEX, CF_TREES};

/// A chunk record whose decoded bytes are known to hash to `id`. The only
/// ways to make one check that, so a `ChunkStore` never stores unverified
/// data.
#[derive(Debug, Clone)]
pub struct VerifiedRecord {
    id: Id,
    header: RecordHeader,
    record: Vec<u8>,
}

impl VerifiedRecord {
    /// Hashes and encodes raw chunk bytes.
    pub fn encode(raw: &[u8], encoder: &mut Encoder) -> VerifiedRecord {
        Self::encode_with_id(Id::of_chunk(raw), raw, encoder)
    }

    /// Encodes raw bytes whose id the caller has just computed from them.
    pub(crate) fn encode_with_id(id: Id, raw: &[u8], encoder: &mut Encoder) -> VerifiedRecord {
        let record = encoder.encode(raw);
        let header = codec::read_header(&record).expect("encoder writes valid headers");
        VerifiedRecord { id, header, record }
    }

    /// Checks a record that came from outside: it must decode, within its
    /// limits, to bytes that hash to `id`.
    pub fn verify(id: Id, record: Vec<u8>) -> Result<VerifiedRecord, FormatError> {
        codec::decode_verified(&id, &record)?;
        let header = codec::read_header(&record)?;
        Ok(VerifiedRecord { id, header, record })
    }

    pub fn id(&self) -> Id {
        self.id
    }
    pub fn raw_len(&self) -> u64 {
        self.header.raw_len as u64
    }
    pub fn record(&self) -> &[u8] {
        &self.record
    }
}

/// What the index knows about a stored chunk without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub codec: u8,
    pub raw_len: u32,
    pub stored_len: u32,
}

impl IndexEntry {
    fn encode(&self) -> [u8; 9] {
        let mut b = [0u8; 9];
        b[0] = self.codec;
        b[1..5].copy_from_slice(&self.raw_len.to_le_bytes());
        b[5..9].copy_from_slice(&self.stored_len.to_le_bytes());
        b
    }
    pub(crate) fn decode(b: &[u8]) -> Option<IndexEntry> {
        if b.len() != 9 {
            return None;
        }
        Some(IndexEntry { codec: b[0], raw_len: u32::from_le_bytes(b[1..5].try_into().ok()?), stored_len: u32::from_le_bytes(b[5..9].try_into().ok()?) })
    }
}

/// Where chunk records live.
pub trait ChunkStore: Send + Sync {
    /// For each id, whether the chunk is stored. One batched lookup.
    fn contains(&self, ids: &[Id]) -> Result<Vec<bool>>;
    /// Stores records; they are durable only after `sync`.
    fn put(&self, records: &[VerifiedRecord]) -> Result<()>;
    /// Makes every record put so far durable.
    fn sync(&self) -> Result<()>;
    /// The stored record, unverified (for sending on as it is).
    fn get_record(&self, id: &Id) -> Result<Option<Vec<u8>>>;
    /// Several stored records at once, in the order asked (a backend can
    /// batch the reads; object storage, in one round trip).
    fn get_records(&self, ids: &[Id]) -> Result<Vec<Option<Vec<u8>>>> {
        ids.iter().map(|id| self.get_record(id)).collect()
    }
    /// Removes records (garbage collection).
    fn remove(&self, ids: &[Id]) -> Result<()>;

    /// The chunk's raw bytes, verified against its id.
    fn get(&self, id: &Id) -> Result<Vec<u8>> {
        let record = match self.get_record(id) {
            Ok(Some(r)) => r,
            Ok(None) => return Err(StoreError::MissingChunk(*id)),
            Err(e) => return Err(StoreError::Corrupt { what: "chunk", id: *id, detail: format!("unreadable: {e}") }),
        };
        codec::decode_verified(id, &record).map_err(|e| StoreError::Corrupt { what: "chunk", id: *id, detail: e.to_string() })
    }
}

/// The embedded chunk store: an index column family (small, in the LSM
/// tree) and a record column family (values in BlobDB blob files).
pub struct RocksChunkStore {
    db: Arc<DB>,
}

impl RocksChunkStore {
    pub(crate) fn new(db: Arc<DB>) -> Self {
        RocksChunkStore { db }
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column family opened at start")
    }

    /// Adds the puts for `records` to a batch (so callers can write trees in
    /// the same atomic batch).
    pub(crate) fn batch_put(&self, batch: &mut WriteBatch, records: &[VerifiedRecord]) {
        let (index, chunks) = (self.cf(CF_CHUNK_INDEX), self.cf(CF_CHUNKS));
        for r in records {
            let entry = IndexEntry { codec: r.header.codec, raw_len: r.header.raw_len, stored_len: r.record.len() as u32 };
            batch.put_cf(chunks, r.id.as_bytes(), &r.record);
            batch.put_cf(index, r.id.as_bytes(), entry.encode());
        }
    }

    /// The index entry of each id (None where not stored).
    pub fn index_entries(&self, ids: &[Id]) -> Result<Vec<Option<IndexEntry>>> {
        self.multi_get(CF_CHUNK_INDEX, ids, IndexEntry::decode)
    }

    /// One batched lookup in `cf`, results in the order of `ids`. RocksDB
    /// wants the keys sorted (and then reads blob values in file order).
    fn multi_get<T: Clone>(&self, cf: &str, ids: &[Id], f: impl Fn(&[u8]) -> Option<T>) -> Result<Vec<Option<T>>> {
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].as_bytes());
        let keys: Vec<&[u8]> = order.iter().map(|&i| ids[i].as_bytes().as_slice()).collect();
        let found = self.db.batched_multi_get_cf(self.cf(cf), keys, true);
        let mut out = vec![None; ids.len()];
        for (slot, res) in order.into_iter().zip(found) {
            out[slot] = res?.and_then(|v| f(&v));
        }
        Ok(out)
    }
}

impl ChunkStore for RocksChunkStore {
    fn contains(&self, ids: &[Id]) -> Result<Vec<bool>> {
        Ok(self.index_entries(ids)?.into_iter().map(|e| e.is_some()).collect())
    }

    fn put(&self, records: &[VerifiedRecord]) -> Result<()> {
        let mut batch = WriteBatch::default();
        self.batch_put(&mut batch, records);
        write(&self.db, batch, Durability::Buffered)?;
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        // One atomic flush of everything written without the WAL: chunk
        // index, chunk records and tree nodes land together or not at all.
        //
        // We wait for the flush ourselves rather than with `wait`: when a
        // flush fails for lack of space, RocksDB keeps retrying until space
        // appears and a waiting flush would never return. A failed flush
        // shows up as a new background error instead, and the commit fails.
        let cfs = [self.cf(CF_CHUNK_INDEX), self.cf(CF_CHUNKS), self.cf(CF_TREES)];
        let errors_before = background_errors(&self.db);
        let mut opts = rocksdb::FlushOptions::default();
        opts.set_wait(false);
        // With many writers at once RocksDB may have stopped writes until a
        // flush catches up, and refuses a manual flush meanwhile ("try
        // again"): wait for it as writes do, unless the disk is full.
        while let Err(e) = self.db.flush_cfs_opt(&cfs, &opts) {
            if !matches!(e.kind(), ErrorKind::TryAgain | ErrorKind::Incomplete | ErrorKind::Busy) {
                return Err(db_error(&self.db, e));
            }
            if background_errors(&self.db) > errors_before || stalled_for_space(&self.db) {
                return Err(out_of_space(&self.db));
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        loop {
            let mut pending = 0;
            for cf in cfs {
                pending += self.db.property_int_value_cf(cf, "rocksdb.num-immutable-mem-table")?.unwrap_or(0);
            }
            if pending == 0 {
                return Ok(());
            }
            if background_errors(&self.db) > errors_before || stalled_for_space(&self.db) {
                return Err(out_of_space(&self.db));
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    fn get_record(&self, id: &Id) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(CF_CHUNKS), id.as_bytes())?)
    }

    fn get_records(&self, ids: &[Id]) -> Result<Vec<Option<Vec<u8>>>> {
        self.multi_get(CF_CHUNKS, ids, |v| Some(v.to_vec()))
    }

    fn remove(&self, ids: &[Id]) -> Result<()> {
        let mut batch = WriteBatch::default();
        for id in ids {
            batch.delete_cf(self.cf(CF_CHUNKS), id.as_bytes());
            batch.delete_cf(self.cf(CF_CHUNK_INDEX), id.as_bytes());
        }
        write(&self.db, batch, Durability::Synced)?;
        Ok(())
    }
}

//! The chunk index: for every stored chunk, its codec, lengths and where its
//! backend keeps the record. It lives in the store's RocksDB database (column
//! family `chunk_index`, `protocol/store.md`) whatever the backend, so
//! "which of these chunks are stored" is one batched local lookup.

use std::sync::Arc;

use ferry_core::codec::CODEC_DELTA;
use ferry_core::Id;
use rocksdb::{IteratorMode, WriteBatch, DB};

use crate::backend::{Location, VerifiedRecord};
use crate::{multi_get_in_order, Result, CF_CHUNK_INDEX};

/// What the index knows about a stored chunk without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// The record's codec (`protocol/tree.md`).
    pub codec: u8,
    /// The chunk's length before encoding.
    pub raw_len: u32,
    /// The record's length as stored.
    pub stored_len: u32,
    /// For a delta record (codec 3), the chunk it is decoded against: gc
    /// keeps it as long as this chunk, without reading the record.
    pub base: Option<Id>,
    /// Where the backend keeps the record.
    pub location: Location,
}

/// Codec, raw length and stored length: the fixed part of an entry.
const FIXED: usize = 9;

impl IndexEntry {
    /// The entry for a record the backend stored at `location`.
    pub fn of(record: &VerifiedRecord, location: Location) -> IndexEntry {
        IndexEntry { codec: record.codec(), raw_len: record.raw_len() as u32, stored_len: record.record().len() as u32, base: record.base(), location }
    }

    /// The entry as stored (`protocol/store.md` §2).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(FIXED + self.location.as_bytes().len());
        b.push(self.codec);
        b.extend_from_slice(&self.raw_len.to_le_bytes());
        b.extend_from_slice(&self.stored_len.to_le_bytes());
        if let Some(base) = &self.base {
            b.extend_from_slice(base.as_bytes());
        }
        b.extend_from_slice(self.location.as_bytes());
        b
    }

    /// Decodes a stored entry; None if it is malformed. Entries written by
    /// format 1 are the fixed part alone: an empty location.
    pub fn decode(b: &[u8]) -> Option<IndexEntry> {
        if b.len() < FIXED {
            return None;
        }
        let (base, location) = if b[0] == CODEC_DELTA { (Some(Id::from_slice(b.get(FIXED..FIXED + 32)?)?), &b[FIXED + 32..]) } else { (None, &b[FIXED..]) };
        Some(IndexEntry {
            codec: b[0],
            raw_len: u32::from_le_bytes(b[1..5].try_into().ok()?),
            stored_len: u32::from_le_bytes(b[5..9].try_into().ok()?),
            base,
            location: Location::new(location)?,
        })
    }
}

/// One entry of the index, or the key of one that does not decode.
pub(crate) type IndexItem = std::result::Result<(Id, IndexEntry), Box<[u8]>>;

/// The chunk index column family.
pub(crate) struct ChunkIndex {
    db: Arc<DB>,
}

impl ChunkIndex {
    pub(crate) fn new(db: Arc<DB>) -> Self {
        ChunkIndex { db }
    }

    fn cf(&self) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(CF_CHUNK_INDEX).expect("column family opened at start")
    }

    /// Adds entries to a batch.
    pub(crate) fn batch_put(&self, batch: &mut WriteBatch, entries: impl IntoIterator<Item = (Id, IndexEntry)>) {
        let cf = self.cf();
        for (id, e) in entries {
            batch.put_cf(cf, id.as_bytes(), e.encode());
        }
    }

    /// Adds the removal of `ids` to a batch.
    pub(crate) fn batch_delete(&self, batch: &mut WriteBatch, ids: &[Id]) {
        let cf = self.cf();
        for id in ids {
            batch.delete_cf(cf, id.as_bytes());
        }
    }

    /// The entry of each id (None where not stored), in one batched lookup.
    pub(crate) fn entries(&self, ids: &[Id]) -> Result<Vec<Option<IndexEntry>>> {
        Ok(multi_get_in_order(&self.db, self.cf(), ids)?.into_iter().map(|v| IndexEntry::decode(&v?)).collect())
    }

    /// Every entry, in id order. A key that is not an id, or an entry that
    /// does not decode, comes as `Err(key)` so fsck can name it.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Result<IndexItem>> + '_ {
        self.db.iterator_cf(self.cf(), IteratorMode::Start).map(|item| {
            let (k, v) = item?;
            Ok(match (Id::from_slice(&k), IndexEntry::decode(&v)) {
                (Some(id), Some(e)) => Ok((id, e)),
                _ => Err(k),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_a_delta_names_its_base() {
        let loc = Location::new(b"pack-7").unwrap();
        let plain = IndexEntry { codec: 1, raw_len: 65536, stored_len: 40000, base: None, location: loc.clone() };
        assert_eq!(plain.encode().len(), FIXED + 6);
        assert_eq!(IndexEntry::decode(&plain.encode()), Some(plain));
        let delta = IndexEntry { codec: CODEC_DELTA, raw_len: 65536, stored_len: 9000, base: Some(Id::of_chunk(b"base")), location: loc };
        let enc = delta.encode();
        assert_eq!(&enc[FIXED..FIXED + 32], Id::of_chunk(b"base").as_bytes());
        assert_eq!(IndexEntry::decode(&enc), Some(delta));
        // A delta entry too short to hold its base is corrupt.
        assert_eq!(IndexEntry::decode(&enc[..FIXED + 31]), None);
    }
}

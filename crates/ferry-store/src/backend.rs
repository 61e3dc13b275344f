//! The seam between the store and wherever chunk records live.
//!
//! The store keeps the chunk index (id to codec, lengths and location) in
//! its own RocksDB database and hands the record bytes to a
//! [`ChunkBackend`]. The contract every backend keeps is normative in
//! `protocol/store.md`; [`RocksBackend`](crate::RocksBackend) is the embedded
//! default.

use ferry_core::codec::{self, Encoder, RecordHeader};
use ferry_core::{FormatError, Id};

use crate::chunk_index::IndexEntry;
use crate::journal::JournalEntry;
use crate::pack::{PackName, Retirement};

/// A chunk record whose decoded bytes are known to hash to `id`. The only
/// ways to make one check that, so a backend is never handed unverified
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
        Self::encode_with_id(Id::of_chunk(raw), raw, 0, encoder)
    }

    /// Encodes raw bytes whose id the caller has just computed from them;
    /// `width`: the chunker's element width hint (0 if none).
    pub(crate) fn encode_with_id(id: Id, raw: &[u8], width: u8, encoder: &mut Encoder) -> VerifiedRecord {
        let record = encoder.encode_hinted(raw, width);
        let header = codec::read_header(&record).expect("encoder writes valid headers");
        VerifiedRecord { id, header, record }
    }

    /// A record this process's encoder just made from raw bytes that hash
    /// to `id` (a delta among them, which decodes only against its base).
    pub(crate) fn encoded(id: Id, record: Vec<u8>) -> VerifiedRecord {
        let header = codec::read_header(&record).expect("encoder writes valid headers");
        VerifiedRecord { id, header, record }
    }

    /// Checks a record that came from outside: it must decode, within its
    /// limits, to bytes that hash to `id`. A delta record is refused (its
    /// base may not be here); senders send records that decode alone.
    pub fn verify(id: Id, record: Vec<u8>) -> Result<VerifiedRecord, FormatError> {
        codec::decode_verified(&id, &record)?;
        let header = codec::read_header(&record)?;
        Ok(VerifiedRecord { id, header, record })
    }

    /// The chunk's id: the BLAKE3 of its raw bytes.
    pub fn id(&self) -> Id {
        self.id
    }

    /// The chunk's length before encoding.
    pub fn raw_len(&self) -> u64 {
        self.header.raw_len as u64
    }

    /// For a delta record, the chunk it is decoded against.
    pub fn base(&self) -> Option<Id> {
        codec::delta_base(&self.record).ok().flatten()
    }

    /// The codec the record is encoded with (`protocol/tree.md`).
    pub fn codec(&self) -> u8 {
        self.header.codec
    }

    /// The encoded record, as stored and as sent on the wire.
    pub fn record(&self) -> &[u8] {
        &self.record
    }
}

/// Where a backend keeps one record, in the backend's own terms (a pack and
/// an offset, say). The embedded backend keys records by id and needs none:
/// its locations are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Location(Box<[u8]>);

impl Location {
    /// The longest location a backend may use (it is kept in every index
    /// entry, so it must stay small).
    pub const MAX_LEN: usize = 64;

    /// A location from the backend's bytes; None if longer than `MAX_LEN`.
    pub fn new(bytes: &[u8]) -> Option<Location> {
        (bytes.len() <= Self::MAX_LEN).then(|| Location(bytes.into()))
    }

    /// The backend's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// What went wrong in a backend. The store reports it with the chunk or
/// operation it concerned.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The medium is full: nothing of the failed call was made durable.
    #[error("no space left: {0}")]
    OutOfSpace(String),
    /// The backend cannot be reached or refused the request (worth a retry
    /// later).
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// Any other failure, in the backend's words.
    #[error("{0}")]
    Other(String),
}

/// Called with each stored record's id, location and bytes.
pub type RecordVisitor<'a> = dyn FnMut(Id, &Location, &[u8]) -> Result<(), BackendError> + 'a;

/// What a backend that is the source of truth hands back to rebuild a
/// store's database or bring it up to date (`journal_after`).
#[derive(Debug)]
pub enum Recovered {
    /// A stored chunk record: its index entry.
    Chunk(Id, IndexEntry),
    /// A tree node, encoded (`tree.md`); the store verifies it.
    Node(Id, Vec<u8>),
    /// A journal entry, in the order they were written.
    Journal(JournalEntry),
    /// Packs a gc retired: index entries still pointing into them are
    /// dropped, and so is whatever no branch reaches any more (a retired
    /// pack may be gone, taking tree nodes and chunks that revisions
    /// earlier in the journal named).
    Retired(Retirement),
}

/// How a backend that keeps records in shared packs is collected: packs
/// whose live bytes fall below `repack_below` of what they hold are
/// rewritten, and retired packs are deleted `grace` after their retirement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RepackPolicy {
    /// The live fraction (0 to 1) below which a pack is rewritten.
    pub repack_below: f64,
    /// How long a retired pack stays readable for readers that have not
    /// yet learnt of its retirement (a replica, a pull under way).
    pub grace: std::time::Duration,
}

/// Called with what a backend recovers.
pub type RecoveryVisitor<'a> = dyn FnMut(Recovered) -> Result<(), BackendError> + 'a;

/// Where chunk records live. The store calls these with batches (never a
/// round trip per chunk) and keeps the index itself: whether a chunk is
/// stored is the index's answer, one batched lookup, never a backend read.
/// See
/// `protocol/store.md` for the contract, in particular which writes must be
/// durable when.
pub trait ChunkBackend: Send + Sync {
    /// A short name for messages and for the store's metadata (`rocksdb`).
    fn name(&self) -> &'static str;

    /// Stores a batch of records and says where each went (in order).
    /// The records survive a crash no later than the index entries the store
    /// then writes for them without syncing (see `protocol/store.md`), and
    /// certainly once `sync` returns.
    fn put(&self, records: &[VerifiedRecord]) -> Result<Vec<Location>, BackendError>;

    /// Makes every record put so far durable.
    fn sync(&self) -> Result<(), BackendError>;

    /// The stored records, in the order asked; None where a record is not
    /// there. The bytes are not verified here: the store verifies before it
    /// returns raw data, and a peer verifies what it receives.
    fn get_many(&self, wanted: &[(Id, &Location)]) -> Result<Vec<Option<Vec<u8>>>, BackendError>;

    /// Calls `visit` with every stored record, in the backend's own order
    /// (its fastest full scan). Stops at the first error `visit` returns.
    fn for_each(&self, visit: &mut RecordVisitor<'_>) -> Result<(), BackendError>;

    /// Deletes records (garbage collection); deleting one that is not there
    /// is not an error. Durable when it returns.
    fn delete(&self, gone: &[(Id, Location)]) -> Result<(), BackendError>;

    /// Returns the space of deleted records to the medium (may take long;
    /// the store calls it outside any lock writers wait for).
    fn reclaim(&self) -> Result<(), BackendError>;

    /// None when a record is durable no later than the index entries the
    /// store writes after `put` (the embedded backend). Some(bytes) when
    /// records are durable only later (object storage, which uploads packs
    /// in the background and at `sync`): the store then keeps their index
    /// entries, and the tree nodes written with them, in memory until
    /// `durable` says their records are, checking once about that many
    /// bytes wait, and writes them all after `sync`.
    fn deferred(&self) -> Option<u64> {
        None
    }

    /// For a deferred backend: whether the record at `location` (or the
    /// nodes `put_nodes` placed there) survives a crash now. Once true for
    /// a location it stays true, and it is true for every location handed
    /// out before it, so what a durable node names is durable too.
    fn durable(&self, _location: &Location) -> bool {
        true
    }

    /// Keeps tree nodes beside the records, for a backend that is the
    /// source of truth, and says where (for `durable`); the store keeps its
    /// own copy in its database either way.
    fn put_nodes(&self, _nodes: &[(Id, Vec<u8>)]) -> Result<Location, BackendError> {
        Ok(Location::default())
    }

    /// Keeps a synced metadata write (revisions, a branch move) before the
    /// store makes it, for a backend that is the source of truth. Called
    /// under the store's branch lock, in order, after `sync` made
    /// everything the entry names durable; the store writes the entry
    /// itself only after this returns.
    fn journal(&self, _entry: &JournalEntry) -> Result<(), BackendError> {
        Ok(())
    }

    /// The store is done writing: the backend may give up what it holds
    /// for it (a bucket's writer lease). Later writes may fail.
    fn close(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// For a backend that keeps records in shared packs: how gc collects
    /// them (rewriting sparse packs, then retiring them). None: records
    /// are deleted one by one (`delete`).
    fn repack_policy(&self) -> Option<RepackPolicy> {
        None
    }

    /// The pack a record at `location` is in (a packing backend).
    fn pack_of(&self, _location: &Location) -> Option<PackName> {
        None
    }

    /// The ids of the tree nodes `pack` holds (a packing backend).
    fn pack_nodes(&self, _pack: &PackName) -> Result<Vec<Id>, BackendError> {
        Ok(Vec::new())
    }

    /// Journals that packs are retired: every record and node still needed
    /// from them is in packs announced before (`sync` returned). Needs the
    /// writer's lease.
    fn retire(&self, _retirement: &Retirement) -> Result<(), BackendError> {
        Err(BackendError::Other(format!("the {} backend keeps no packs", self.name())))
    }

    /// Deletes retired packs whose grace period has passed; deleting one
    /// that is gone already is not an error.
    fn delete_packs(&self, _packs: &[PackName]) -> Result<(), BackendError> {
        Err(BackendError::Other(format!("the {} backend keeps no packs", self.name())))
    }

    /// What the backend's journal holds after branch move `after_seq` (0:
    /// everything), in the order it was written: journal entries, each
    /// after the index entries and nodes it may name. What a store's
    /// database is rebuilt from, caught up with after a crash between the
    /// journal and the database, and followed by a read replica. A backend
    /// may skip what it handed over before (a replica asks again and
    /// again). One that is not the source of truth has nothing to give.
    fn journal_after(&self, _after_seq: u64, _visit: &mut RecoveryVisitor<'_>) -> Result<(), BackendError> {
        Ok(())
    }
}

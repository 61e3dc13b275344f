//! ferry-bucket: a chunk backend on S3-compatible object storage (any
//! store the `object_store` crate reaches, Garage and AWS S3 among them, or
//! a local directory). Chunk records and tree nodes go into packs that end
//! with their own index; revisions and branch moves go into a journal; so
//! the bucket alone is enough to rebuild a store (`Store::rebuild`), and the
//! local database is an index and a cache. The pack format and the bucket
//! layout are normative in `protocol/store.md` §7; the pack format itself is
//! `ferry_store::pack`.
//!
//! Architecture invariants:
//! - Nothing the store acknowledges exists only in memory: a pack is
//!   uploaded in `sync`, before the store writes the index entries and
//!   nodes that name it, and a journal entry is in the bucket before the
//!   store writes its revisions and branch move.
//! - One writer per bucket: the `writer` lease is taken at open and renewed;
//!   a store that loses it stops journaling.

mod backend;
mod config;

pub use backend::BucketBackend;
pub use config::{BucketConfig, DEFAULT_PACK_SIZE, PACK_SIZE_RANGE};

use ferry_store::{BackendError, ChunkBackend};

/// The backend for a store's recorded name and config, for
/// `Store::open_with`: None for a backend this crate does not provide.
/// `holder` names the writer (the store's directory, say): the same holder
/// takes its own lease back at once after a crash.
pub fn open_backend(name: &str, config: &str, holder: &str) -> Result<Option<Box<dyn ChunkBackend>>, BackendError> {
    if name != "bucket" {
        return Ok(None);
    }
    Ok(Some(Box::new(BucketBackend::open(&BucketConfig::parse(config)?, holder)?)))
}

//! Index entries and tree nodes waiting for a deferred backend to make
//! their records durable.
//!
//! An object-storage backend gathers records into packs and uploads a pack
//! at `sync`, so a record it has just taken may still be lost by a crash.
//! Nothing may reach the store's database before the records it names (an
//! entry or node on disk naming a lost record breaks "has node implies has
//! subtree" after a restart), so the store keeps such entries and nodes
//! here, answers lookups from here as well, and writes them to the database
//! only once the backend's `sync` has returned.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use ferry_core::Id;

use crate::chunk_index::IndexEntry;

#[derive(Default)]
pub(crate) struct Waiting {
    pub(crate) entries: HashMap<Id, IndexEntry>,
    pub(crate) nodes: HashMap<Id, Vec<u8>>,
    /// Stored bytes of the records put since the last settle.
    bytes: u64,
}

/// Waiting entries and nodes, copied out.
pub(crate) type Snapshot = (Vec<(Id, IndexEntry)>, Vec<(Id, Vec<u8>)>);

pub(crate) struct Pending {
    waiting: RwLock<Waiting>,
    /// One settle at a time: a second would upload nothing new.
    pub(crate) settling: Mutex<()>,
    /// Settle once this many record bytes wait (the backend's pack size).
    pub(crate) settle_at: u64,
}

impl Pending {
    pub(crate) fn new(settle_at: u64) -> Pending {
        Pending { waiting: RwLock::new(Waiting::default()), settling: Mutex::new(()), settle_at }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Waiting> {
        self.waiting.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Waiting> {
        self.waiting.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds entries; returns whether enough bytes wait to settle.
    pub(crate) fn add_entries(&self, entries: impl IntoIterator<Item = (Id, IndexEntry)>) -> bool {
        let mut w = self.write();
        for (id, e) in entries {
            w.bytes += e.stored_len as u64;
            w.entries.insert(id, e);
        }
        w.bytes >= self.settle_at
    }

    pub(crate) fn add_nodes(&self, nodes: &[(Id, Vec<u8>)]) {
        let mut w = self.write();
        for (id, enc) in nodes {
            w.bytes += enc.len() as u64;
            w.nodes.insert(*id, enc.clone());
        }
    }

    pub(crate) fn entry(&self, id: &Id) -> Option<IndexEntry> {
        self.read().entries.get(id).cloned()
    }

    pub(crate) fn node(&self, id: &Id) -> Option<Vec<u8>> {
        self.read().nodes.get(id).cloned()
    }

    /// What waits now (a copy: lookups keep answering from here until the
    /// database has it).
    pub(crate) fn snapshot(&self) -> Snapshot {
        let w = self.read();
        (w.entries.iter().map(|(k, v)| (*k, v.clone())).collect(), w.nodes.iter().map(|(k, v)| (*k, v.clone())).collect())
    }

    /// Forgets what a settle wrote to the database.
    pub(crate) fn remove(&self, entries: &[(Id, IndexEntry)], nodes: &[(Id, Vec<u8>)]) {
        let mut w = self.write();
        for (id, e) in entries {
            if w.entries.remove(id).is_some() {
                w.bytes = w.bytes.saturating_sub(e.stored_len as u64);
            }
        }
        for (id, enc) in nodes {
            if w.nodes.remove(id).is_some() {
                w.bytes = w.bytes.saturating_sub(enc.len() as u64);
            }
        }
    }
}

//! Index entries and tree nodes waiting for a deferred backend to make
//! their records durable.
//!
//! An object-storage backend gathers records into packs and uploads a pack
//! at `sync`, so a record it has just taken may still be lost by a crash.
//! Nothing may reach the store's database before the records it names (an
//! entry or node on disk naming a lost record breaks "has node implies has
//! subtree" after a restart), so the store keeps such entries and nodes
//! here, answers lookups from here as well, and writes them to the database
//! only once the backend says their records are durable (or `sync` has
//! returned).

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use ferry_core::Id;

use crate::backend::Location;
use crate::chunk_index::IndexEntry;

#[derive(Default)]
pub(crate) struct Waiting {
    pub(crate) entries: HashMap<Id, IndexEntry>,
    /// Nodes, and where the backend placed its copy of them.
    pub(crate) nodes: HashMap<Id, (Vec<u8>, Location)>,
    /// Stored bytes of the records put since the last settle.
    bytes: u64,
}

/// Waiting entries and nodes, copied out.
pub(crate) type Snapshot = (Vec<(Id, IndexEntry)>, Vec<(Id, Vec<u8>)>);

/// Which waiting entries and nodes to take: all, or those whose location
/// passes the test.
pub(crate) type Filter<'a> = Option<&'a dyn Fn(&Location) -> bool>;

pub(crate) struct Pending {
    waiting: RwLock<Waiting>,
    /// One settle at a time: a second would write the same again.
    pub(crate) settling: Mutex<()>,
    /// Look for durable records once this many bytes wait (the backend's
    /// pack size).
    settle_at: u64,
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

    pub(crate) fn add_entries(&self, entries: impl IntoIterator<Item = (Id, IndexEntry)>) {
        let mut w = self.write();
        for (id, e) in entries {
            w.bytes += e.stored_len as u64;
            w.entries.insert(id, e);
        }
    }

    pub(crate) fn add_nodes(&self, nodes: Vec<(Id, Vec<u8>)>, at: Location) {
        let mut w = self.write();
        for (id, enc) in nodes {
            w.bytes += enc.len() as u64;
            w.nodes.insert(id, (enc, at.clone()));
        }
    }

    /// Whether enough bytes wait to look for durable ones.
    pub(crate) fn full(&self) -> bool {
        self.read().bytes >= self.settle_at
    }

    pub(crate) fn entry(&self, id: &Id) -> Option<IndexEntry> {
        self.read().entries.get(id).cloned()
    }

    pub(crate) fn node(&self, id: &Id) -> Option<Vec<u8>> {
        self.read().nodes.get(id).map(|n| n.0.clone())
    }

    /// What waits now, or what of it passes `only` (a copy: lookups keep
    /// answering from here until the database has it).
    pub(crate) fn snapshot(&self, only: Filter<'_>) -> Snapshot {
        let w = self.read();
        let pass = |loc: &Location| only.is_none_or(|f| f(loc));
        let entries = w.entries.iter().filter(|(_, e)| pass(&e.location)).map(|(k, v)| (*k, v.clone())).collect();
        let nodes = w.nodes.iter().filter(|(_, n)| pass(&n.1)).map(|(k, n)| (*k, n.0.clone())).collect();
        (entries, nodes)
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

//! Index entries and tree nodes waiting for a deferred backend to make
//! their records durable.
//!
//! An object-storage backend gathers records into packs and uploads them
//! later (in the background, and at `sync`), so a record it has just taken
//! may still be lost by a crash.
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
struct Waiting {
    entries: HashMap<Id, IndexEntry>,
    /// Nodes, and where the backend placed its copy of them.
    nodes: HashMap<Id, (Vec<u8>, Location)>,
    /// Bytes of the records and nodes waiting.
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
        let mut guard = self.write();
        let w = &mut *guard;
        for (id, e) in entries {
            // The same chunk put twice (two writers at once) keeps its first
            // place: a node written after the first put may already be
            // durable, and only the first copy is sure to be durable with
            // it. The second copy is a record no entry names.
            if let std::collections::hash_map::Entry::Vacant(slot) = w.entries.entry(id) {
                w.bytes += e.stored_len as u64;
                slot.insert(e);
            }
        }
    }

    pub(crate) fn add_nodes(&self, nodes: Vec<(Id, Vec<u8>)>, at: Location) {
        let mut guard = self.write();
        let w = &mut *guard;
        for (id, enc) in nodes {
            if let std::collections::hash_map::Entry::Vacant(slot) = w.nodes.entry(id) {
                w.bytes += enc.len() as u64;
                slot.insert((enc, at.clone()));
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(pack: u8, len: u32) -> IndexEntry {
        IndexEntry { codec: 0, raw_len: len, stored_len: len, base: None, location: Location::new(&[pack]).unwrap() }
    }

    #[test]
    fn a_chunk_put_twice_keeps_its_first_place_and_counts_once() {
        let p = Pending::new(100);
        let id = Id::of_chunk(b"c");
        p.add_entries([(id, at(1, 60))]);
        p.add_entries([(id, at(2, 60))]);
        assert_eq!(p.entry(&id).unwrap().location.as_bytes(), [1]);
        assert!(!p.full(), "one chunk counted twice");
        let first = |loc: &Location| loc.as_bytes() == [1];
        let (entries, _) = p.snapshot(Some(&first));
        assert_eq!(entries.len(), 1);
        p.remove(&entries, &[]);
        assert!(p.entry(&id).is_none());
    }
}

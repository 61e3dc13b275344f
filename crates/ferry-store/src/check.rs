//! Whole-store walks: statistics, fsck and garbage collection.

use std::collections::HashSet;

use ferry_core::codec;
use ferry_core::revision::Revision;
use ferry_core::tree::{node_id, Node};
use ferry_core::Id;
use rayon::prelude::*;
use rocksdb::{IteratorMode, WriteBatch};

use crate::chunks::{ChunkStore, IndexEntry};
use crate::write::{write, Durability};
use crate::{Result, Store, CF_BRANCHES, CF_CHUNKS, CF_CHUNK_INDEX, CF_REVISIONS, CF_TREES};

/// What the store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub repositories: u64,
    pub branches: u64,
    pub revisions: u64,
    /// Sum of the sizes of every file of every revision: what a store without
    /// deduplication would hold.
    pub logical_bytes: u64,
    pub chunks: u64,
    /// Raw bytes of the unique chunks.
    pub unique_bytes: u64,
    /// Bytes of the unique chunks as stored (after compression).
    pub stored_bytes: u64,
    pub tree_nodes: u64,
    /// Size of the store directory on disk.
    pub disk_bytes: u64,
}

#[derive(Debug, Clone, Default)]
pub struct FsckReport {
    pub chunks_checked: u64,
    pub nodes_checked: u64,
    pub revisions_checked: u64,
    pub branches_checked: u64,
    /// One line per problem, naming the object.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub chunks_removed: u64,
    pub bytes_removed: u64,
    pub nodes_removed: u64,
    pub revisions_removed: u64,
    pub chunks_kept: u64,
}

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path).map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()).unwrap_or(0)
}

impl Store {
    pub fn stats(&self) -> Result<Stats> {
        let mut s = Stats::default();
        for item in self.db.iterator_cf(self.cf(CF_CHUNK_INDEX), IteratorMode::Start) {
            let (_, v) = item?;
            if let Some(e) = IndexEntry::decode(&v) {
                s.chunks += 1;
                s.unique_bytes += e.raw_len as u64;
                s.stored_bytes += e.stored_len as u64;
            }
        }
        for item in self.db.iterator_cf(self.cf(CF_REVISIONS), IteratorMode::Start) {
            let (_, v) = item?;
            s.revisions += 1;
            if let Ok(r) = Revision::decode(&v) {
                s.logical_bytes += r.size();
            }
        }
        s.tree_nodes = self.db.iterator_cf(self.cf(CF_TREES), IteratorMode::Start).count() as u64;
        s.branches = self.db.iterator_cf(self.cf(CF_BRANCHES), IteratorMode::Start).count() as u64;
        s.repositories = self.repos()?.len() as u64;
        s.disk_bytes = dir_size(self.path());
        Ok(s)
    }

    /// Re-hashes every chunk, node and revision and checks every reference.
    pub fn fsck(&self, progress: &dyn Fn(u64)) -> Result<FsckReport> {
        let mut rep = FsckReport::default();
        // Every indexed chunk has a record that decodes to bytes matching its
        // id and its index entry. Records are read one by one so that an
        // unreadable one is named rather than ending the check.
        let mut batch: Vec<(Id, Option<IndexEntry>)> = Vec::with_capacity(256);
        let check = |batch: &mut Vec<(Id, Option<IndexEntry>)>, rep: &mut FsckReport| {
            let results: Vec<(u64, Option<String>)> = batch
                .par_iter()
                .map(|(id, entry)| match self.chunks.get_record(id) {
                    Ok(Some(rec)) => {
                        let n = rec.len() as u64;
                        match codec::decode_verified(id, &rec) {
                            Ok(raw) => match entry {
                                Some(e) if e.raw_len as usize == raw.len() && e.stored_len as usize == rec.len() => (n, None),
                                _ => (n, Some(format!("chunk {id}: index entry disagrees with the record"))),
                            },
                            Err(e) => (n, Some(format!("chunk {id} is corrupt: {e}"))),
                        }
                    }
                    Ok(None) => (0, Some(format!("chunk {id} is missing: indexed but its record is gone"))),
                    Err(e) => (0, Some(format!("chunk {id} is unreadable: {e}"))),
                })
                .collect();
            rep.chunks_checked += batch.len() as u64;
            progress(results.iter().map(|r| r.0).sum());
            rep.problems.extend(results.into_iter().filter_map(|r| r.1));
            batch.clear();
        };
        for item in self.db.iterator_cf(self.cf(CF_CHUNK_INDEX), IteratorMode::Start) {
            let (k, v) = item?;
            match Id::from_slice(&k) {
                Some(id) => batch.push((id, IndexEntry::decode(&v))),
                None => rep.problems.push(format!("chunk index key {} is not an id", hex::encode(&k))),
            }
            if batch.len() == 256 {
                check(&mut batch, &mut rep);
            }
        }
        check(&mut batch, &mut rep);
        // Every node hashes to its id and its children exist.
        for item in self.db.iterator_cf(self.cf(CF_TREES), IteratorMode::Start) {
            let (k, v) = item?;
            rep.nodes_checked += 1;
            let id = Id::from_slice(&k).unwrap_or_default();
            if node_id(&v) != id {
                rep.problems.push(format!("tree node {} is corrupt: its bytes do not hash to its id", hex::encode(&k)));
                continue;
            }
            let node = match Node::decode(&v) {
                Ok(n) => n,
                Err(e) => {
                    rep.problems.push(format!("tree node {id} is corrupt: {e}"));
                    continue;
                }
            };
            let ids: Vec<Id> = node.children.iter().map(|c| c.id).collect();
            let present = if node.height == 1 { self.chunks.contains(&ids)? } else { self.has_nodes(&ids)? };
            for (c, ok) in ids.iter().zip(present) {
                if !ok {
                    let kind = if node.height == 1 { "chunk" } else { "tree node" };
                    rep.problems.push(format!("{kind} {c} is missing (referenced by tree node {id})"));
                }
            }
        }
        // Every revision hashes to its id, decodes, and names stored files
        // of the sizes it gives.
        for item in self.db.iterator_cf(self.cf(CF_REVISIONS), IteratorMode::Start) {
            let (k, v) = item?;
            rep.revisions_checked += 1;
            let id = Id::from_slice(&k).unwrap_or_default();
            if ferry_core::revision::revision_id(&v) != id {
                rep.problems.push(format!("revision {} is corrupt: its bytes do not hash to its id", hex::encode(&k)));
                continue;
            }
            match Revision::decode(&v) {
                Ok(rev) => {
                    let roots: Vec<Id> = rev.entries.iter().map(|e| e.file_id).collect();
                    for (e, ok) in rev.entries.iter().zip(self.has_nodes(&roots)?) {
                        if !ok {
                            rep.problems.push(format!("revision {id}: file {:?} has no tree ({} missing)", e.path, e.file_id));
                        }
                    }
                    // Writers check sizes; this finds a revision stored
                    // beneath them (or before they did).
                    if let Err(e) = self.check_entry_sizes(&rev) {
                        rep.problems.push(format!("revision {id}: {e}"));
                    }
                    for p in &rev.parents {
                        if !self.has_revision(p)? {
                            rep.problems.push(format!("revision {id}: parent {p} is missing"));
                        }
                    }
                }
                Err(e) => rep.problems.push(format!("revision {id} is corrupt: {e}")),
            }
        }
        for (repo, branch, head) in self.all_branches()? {
            rep.branches_checked += 1;
            if !self.has_revision(&head)? {
                rep.problems.push(format!("branch {repo}@{branch} points at missing revision {head}"));
            }
        }
        Ok(rep)
    }

    /// Removes every chunk, node and revision that no branch reaches. Waits
    /// for open write sessions and holds new ones off while it runs.
    pub fn gc(&self) -> Result<GcReport> {
        self.gc_keeping(Pins::default)
    }

    /// Like [`Store::gc`], but also keeps everything `pins` names and
    /// everything that reaches. `pins` is called once writers are held off,
    /// so a writer that pinned an object under its `WriteSession` is sure
    /// to find it afterwards.
    pub fn gc_keeping(&self, pins: impl FnOnce() -> Pins) -> Result<GcReport> {
        let exclusive = self.gc_guard.write().unwrap_or_else(|p| p.into_inner());
        let mut pins = pins();
        pins.extend(&self.live_pins.all());
        // Mark: every branch head and pinned revision with its ancestors and
        // trees, every pinned node with its subtree.
        let mut revs: HashSet<Id> = HashSet::new();
        let mut nodes: HashSet<Id> = HashSet::new();
        let mut chunks: HashSet<Id> = HashSet::new();
        let mut todo: Vec<Id> = self.all_branches()?.into_iter().map(|b| b.2).collect();
        todo.extend(pins.revisions.iter().copied());
        let mut stack: Vec<Id> = Vec::new();
        while let Some(rid) = todo.pop() {
            if !revs.insert(rid) {
                continue;
            }
            let rev = self.revision(&rid)?;
            todo.extend(rev.parents.iter().copied());
            stack.extend(rev.entries.iter().map(|e| e.file_id));
            self.mark_trees(&mut stack, &mut nodes, &mut chunks)?;
        }
        stack.extend(pins.nodes.iter().copied());
        self.mark_trees(&mut stack, &mut nodes, &mut chunks)?;
        // Sweep top-down: revisions and nodes in one synced batch, then
        // chunks. At every moment in between, and after a kill at any point,
        // each stored revision still has its trees and each stored node its
        // whole subtree (negotiation trusts "has node" to mean that).
        let mut rep = GcReport::default();
        let mut batch = WriteBatch::default();
        for item in self.db.iterator_cf(self.cf(CF_REVISIONS), IteratorMode::Start) {
            let (k, _) = item?;
            if !revs.contains(&Id::from_slice(&k).unwrap_or_default()) {
                batch.delete_cf(self.cf(CF_REVISIONS), &k);
                rep.revisions_removed += 1;
            }
        }
        for item in self.db.iterator_cf(self.cf(CF_TREES), IteratorMode::Start) {
            let (k, _) = item?;
            if !nodes.contains(&Id::from_slice(&k).unwrap_or_default()) {
                batch.delete_cf(self.cf(CF_TREES), &k);
                rep.nodes_removed += 1;
            }
        }
        write(&self.db, batch, Durability::Synced)?;
        crash_point("gc-after-nodes");
        let mut dead = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_CHUNK_INDEX), IteratorMode::Start) {
            let (k, v) = item?;
            let id = Id::from_slice(&k).unwrap_or_default();
            if chunks.contains(&id) || pins.chunks.contains(&Pins::chunk_key(&id)) {
                rep.chunks_kept += 1;
            } else {
                rep.chunks_removed += 1;
                rep.bytes_removed += IndexEntry::decode(&v).map_or(0, |e| e.stored_len as u64);
                dead.push(id);
                if dead.len() >= 4096 {
                    self.chunks.remove(&dead)?;
                    dead.clear();
                }
            }
        }
        self.chunks.remove(&dead)?;
        crash_point("gc-after-chunks");
        // What follows only returns the space: writers need not wait for it
        // (on a big store it takes longer than a client waits for an answer).
        drop(exclusive);
        // Compact so BlobDB rewrites blob files and the space returns.
        if rep.chunks_removed > 0 {
            let cf = self.cf(CF_CHUNKS);
            self.db.set_options_cf(cf, &[("blob_garbage_collection_age_cutoff", "1.0"), ("blob_garbage_collection_force_threshold", "0.0")])?;
            let mut opts = rocksdb::CompactOptions::default();
            opts.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
            self.db.compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &opts);
            self.db.compact_range_cf(self.cf(CF_CHUNK_INDEX), None::<&[u8]>, None::<&[u8]>);
            self.db.set_options_cf(cf, &[("blob_garbage_collection_age_cutoff", "0.0"), ("blob_garbage_collection_force_threshold", "1.0")])?;
        }
        Ok(rep)
    }

    /// Marks the nodes on `stack` and everything below them (emptying it).
    fn mark_trees(&self, stack: &mut Vec<Id>, nodes: &mut HashSet<Id>, chunks: &mut HashSet<Id>) -> Result<()> {
        while let Some(nid) = stack.pop() {
            if !nodes.insert(nid) {
                continue;
            }
            let node = self.node(&nid)?;
            for c in node.children {
                if node.height == 1 {
                    chunks.insert(c.id);
                } else {
                    stack.push(c.id);
                }
            }
        }
        Ok(())
    }
}

/// Pins held by writers in this process, by handle.
#[derive(Default)]
pub(crate) struct LivePins {
    next: std::sync::atomic::AtomicU64,
    open: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<u64, std::sync::Arc<std::sync::Mutex<Pins>>>>>,
}

impl LivePins {
    fn all(&self) -> Pins {
        let mut all = Pins::default();
        for p in self.open.lock().unwrap_or_else(|p| p.into_inner()).values() {
            all.extend(&p.lock().unwrap_or_else(|p| p.into_inner()));
        }
        all
    }
}

/// What a writer in this process relies on across several writes (a pull,
/// or a hub following another, moving chunks, then nodes, then the branch):
/// gc keeps it until the handle is cleared or dropped.
pub struct PinHandle {
    id: u64,
    pins: std::sync::Arc<std::sync::Mutex<Pins>>,
    open: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<u64, std::sync::Arc<std::sync::Mutex<Pins>>>>>,
}

impl PinHandle {
    pub fn with(&self, f: impl FnOnce(&mut Pins)) {
        f(&mut self.pins.lock().unwrap_or_else(|p| p.into_inner()))
    }
    /// Lets go of everything pinned so far (once a branch reaches it).
    pub fn clear(&self) {
        *self.pins.lock().unwrap_or_else(|p| p.into_inner()) = Pins::default();
    }
}

impl Drop for PinHandle {
    fn drop(&mut self) {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

impl Store {
    /// A handle whose pins every gc in this process keeps.
    pub fn pin(&self) -> PinHandle {
        let id = self.live_pins.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pins = std::sync::Arc::new(std::sync::Mutex::new(Pins::default()));
        self.live_pins.open.lock().unwrap_or_else(|p| p.into_inner()).insert(id, pins.clone());
        PinHandle { id, pins, open: self.live_pins.open.clone() }
    }
}

/// Objects gc must keep although no branch reaches them yet: a hub pins
/// what it told a pushing client it holds, or stored for it, until that
/// client's connection ends, so that a gc between a push's requests cannot
/// pull the ground from under its final branch update.
#[derive(Debug, Default, Clone)]
pub struct Pins {
    revisions: HashSet<Id>,
    nodes: HashSet<Id>,
    /// The first 8 bytes of each chunk id: a pushed terabyte pins 16 M
    /// chunks, and a collision only keeps a chunk one gc longer.
    chunks: HashSet<u64>,
}

impl Pins {
    fn chunk_key(id: &Id) -> u64 {
        u64::from_le_bytes(id.as_bytes()[..8].try_into().expect("ids are 32 bytes"))
    }
    /// Keeps a revision, its ancestors and their trees.
    pub fn revision(&mut self, id: Id) {
        self.revisions.insert(id);
    }
    /// Keeps a node and its whole subtree.
    pub fn node(&mut self, id: Id) {
        self.nodes.insert(id);
    }
    pub fn chunk(&mut self, id: &Id) {
        self.chunks.insert(Self::chunk_key(id));
    }
    pub fn extend(&mut self, other: &Pins) {
        self.revisions.extend(&other.revisions);
        self.nodes.extend(&other.nodes);
        self.chunks.extend(&other.chunks);
    }
    pub fn len(&self) -> usize {
        self.revisions.len() + self.nodes.len() + self.chunks.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// For the crash tests: `FERRY_CRASH_AT=<name>` makes the process abort
/// (as abruptly as `kill -9`) when it reaches the named point.
fn crash_point(name: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if AT.get_or_init(|| std::env::var("FERRY_CRASH_AT").ok()).as_deref() == Some(name) {
        std::process::abort();
    }
}

//! Whole-store walks: statistics, fsck and garbage collection.

use std::collections::HashSet;

use ferry_core::codec;
use ferry_core::revision::Revision;
use ferry_core::tree::{node_id, Node};
use ferry_core::Id;
use rayon::prelude::*;
use rocksdb::{IteratorMode, WriteBatch};

use crate::backend::{BackendError, Location};
use crate::marks::Marks;
use crate::write::{write, Durability};
use crate::{IndexEntry, Result, Store, StoreError, CF_BRANCHES, CF_META, CF_REVISIONS, CF_TREES};

/// In the metadata while a gc deletes chunks (`protocol/store.md`).
const SWEEP_MARKER: &[u8] = b"gc-sweeping";

/// A record as a backend scan hands it on: id, location, bytes.
type ScannedRecord = (Id, Location, Vec<u8>);

/// Chunks checked per batch by fsck: one index lookup, verified in parallel.
const FSCK_BATCH: usize = 256;

/// What the store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Repositories with at least one branch ever.
    pub repositories: u64,
    /// Branches, over all repositories.
    pub branches: u64,
    /// Stored revisions (reachable or not).
    pub revisions: u64,
    /// Sum of the sizes of every file of every revision: what a store without
    /// deduplication would hold.
    pub logical_bytes: u64,
    /// Unique chunks stored.
    pub chunks: u64,
    /// Raw bytes of the unique chunks.
    pub unique_bytes: u64,
    /// Bytes of the unique chunks as stored (after compression).
    pub stored_bytes: u64,
    /// Tree nodes stored.
    pub tree_nodes: u64,
    /// Size of the store directory on disk.
    pub disk_bytes: u64,
}

/// What `fsck` checked and found.
#[derive(Debug, Clone, Default)]
pub struct FsckReport {
    /// Indexed chunks whose record was read and verified.
    pub chunks_checked: u64,
    /// Tree nodes re-hashed and decoded.
    pub nodes_checked: u64,
    /// Revisions re-hashed and decoded.
    pub revisions_checked: u64,
    /// Branches whose head was looked up.
    pub branches_checked: u64,
    /// Records the backend holds that no index entry names: space a crash
    /// left behind, which the next gc reclaims (not a problem).
    pub unindexed_records: u64,
    /// One line per problem, naming the object.
    pub problems: Vec<String>,
}

/// What a garbage collection removed and kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Chunks no branch or pin reached.
    pub chunks_removed: u64,
    /// Their bytes as stored.
    pub bytes_removed: u64,
    /// Tree nodes removed.
    pub nodes_removed: u64,
    /// Revisions removed.
    pub revisions_removed: u64,
    /// Chunks still reachable.
    pub chunks_kept: u64,
    /// Packs rewritten and retired (a backend that keeps packs).
    pub packs_retired: u64,
    /// Bytes of live records copied out of them into new packs.
    pub bytes_copied: u64,
    /// Retired packs deleted once their grace period had passed.
    pub packs_deleted: u64,
}

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path).map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()).unwrap_or(0)
}

impl Store {
    /// Size of the store directory on disk (a walk of its files, no scan
    /// of the data).
    pub fn disk_bytes(&self) -> u64 {
        dir_size(self.path())
    }

    /// Counts what the store holds (walks the index and the metadata, not
    /// the records).
    pub fn stats(&self) -> Result<Stats> {
        let mut s = Stats::default();
        for item in self.index.iter() {
            if let Ok((_, e)) = item? {
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
        s.disk_bytes = self.disk_bytes();
        Ok(s)
    }

    /// Re-hashes every chunk, node and revision and checks every reference.
    pub fn fsck(&self, progress: &dyn Fn(u64)) -> Result<FsckReport> {
        let mut rep = FsckReport::default();
        self.check_chunks(&mut rep, progress)?;
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
            let present = if node.height == 1 { self.has_chunks(&ids)? } else { self.has_nodes(&ids)? };
            for (c, ok) in ids.iter().zip(present) {
                if !ok {
                    let kind = if node.height == 1 { "chunk" } else { "tree node" };
                    rep.problems.push(format!("{kind} {c} is missing (referenced by tree node {id})"));
                }
            }
        }
        // Every revision hashes to its id, decodes, and names stored files
        // of the sizes it gives (files a forgotten revision may have lost).
        let forgotten = self.forgotten_anywhere()?;
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
                    if !forgotten.contains(&id) {
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

    /// Every indexed chunk has a record that decodes to bytes matching its
    /// id and its index entry. One scan of the backend in its own order
    /// (verifying in parallel, looking entries up in batches); the index is
    /// walked again only to name entries whose record the scan did not meet,
    /// or, if the scan failed, to name each unreadable record.
    fn check_chunks(&self, rep: &mut FsckReport, progress: &dyn Fn(u64)) -> Result<()> {
        let mut indexed = 0u64;
        for item in self.index.iter() {
            match item? {
                Ok(_) => indexed += 1,
                Err(key) => rep.problems.push(format!("chunk index entry {} does not decode", hex::encode(&key))),
            }
        }
        let mut matched = 0u64;
        let scan = self.scan_records(|batch| {
            let ids: Vec<Id> = batch.iter().map(|b| b.0).collect();
            // A record the entry does not point at (a second copy a kill
            // left in another pack) is not the indexed one.
            let entries: Vec<Option<IndexEntry>> =
                self.index_entries(&ids)?.into_iter().zip(batch.iter()).map(|(e, b)| e.filter(|e| e.location == b.1)).collect();
            // Deltas are checked after the batch, their chains read and every
            // link verified.
            let is_delta = |rec: &[u8]| rec.first() == Some(&codec::CODEC_DELTA);
            let mut results: Vec<Option<String>> = batch
                .par_iter()
                .zip(&entries)
                .map(|((id, _, rec), entry)| {
                    let entry = entry.as_ref()?;
                    if is_delta(rec) {
                        let base = codec::delta_base(rec).ok().flatten();
                        return (entry.base != base || entry.stored_len as usize != rec.len())
                            .then(|| format!("chunk {id}: index entry disagrees with the delta record"));
                    }
                    match codec::decode_verified(id, rec) {
                        Ok(raw) if entry.raw_len as usize == raw.len() && entry.stored_len as usize == rec.len() => None,
                        Ok(_) => Some(format!("chunk {id}: index entry disagrees with the record")),
                        Err(e) => Some(format!("chunk {id} is corrupt: {e}")),
                    }
                })
                .collect();
            let deltas: Vec<(&Id, &[u8], u32)> =
                batch.iter().zip(&entries).filter_map(|((id, _, rec), e)| Some((id, &rec[..], e.as_ref().filter(|_| is_delta(rec))?.raw_len))).collect();
            if !deltas.is_empty() {
                let bases: Vec<Option<Id>> = deltas.iter().map(|d| codec::delta_base(d.1).ok().flatten()).collect();
                let base_bytes = self.read_bases(&bases, 1);
                for ((id, rec, raw_len), base) in deltas.iter().zip(&bases) {
                    results.push(match crate::decode_stored(id, rec, base.as_ref(), &base_bytes) {
                        Ok((raw, _)) if raw.len() == *raw_len as usize => None,
                        Ok(_) => Some(format!("chunk {id}: index entry disagrees with the record")),
                        Err(e) => Some(format!("chunk {id} is corrupt: {e}")),
                    });
                }
            }
            let present = entries.iter().filter(|e| e.is_some()).count() as u64;
            matched += present;
            rep.chunks_checked += present;
            rep.unindexed_records += batch.len() as u64 - present;
            progress(batch.iter().map(|b| b.2.len() as u64).sum());
            rep.problems.extend(results.into_iter().flatten());
            Ok(())
        })?;
        match scan {
            Ok(()) if matched == indexed => Ok(()),
            Ok(()) => self.name_missing_records(rep, false),
            Err(e) => {
                rep.problems.push(format!("reading the chunk records failed: {e}"));
                self.name_missing_records(rep, true)
            }
        }
    }

    /// Walks the index and names each entry whose record cannot be read (or,
    /// with `verify`, does not check out), a batch at a time.
    fn name_missing_records(&self, rep: &mut FsckReport, verify: bool) -> Result<()> {
        let mut ids = Vec::with_capacity(FSCK_BATCH);
        let name = |ids: &mut Vec<Id>, rep: &mut FsckReport| {
            for (id, got) in ids.iter().zip(self.chunks_verified(ids)) {
                match got {
                    Err(StoreError::MissingChunk(_)) => rep.problems.push(format!("chunk {id} is missing: indexed but its record is gone")),
                    Err(e) if verify => rep.problems.push(format!("chunk {id}: {e}")),
                    _ => {}
                }
            }
            ids.clear();
        };
        for item in self.index.iter() {
            if let Ok((id, _)) = item? {
                ids.push(id);
                if ids.len() == FSCK_BATCH {
                    name(&mut ids, rep);
                }
            }
        }
        name(&mut ids, rep);
        Ok(())
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
        let policy = self.backend.repack_policy();
        if policy.is_none() && self.db.get_cf(self.cf(CF_META), SWEEP_MARKER)?.is_some() {
            self.remove_unindexed_records()?;
            self.set_sweep_marker(false)?;
        }
        let mut pins = pins();
        pins.extend(&self.live_pins.all());
        let marks = self.mark(pins)?;
        let mut rep = GcReport::default();
        self.sweep_metadata(&marks, &mut rep)?;
        crash_point("gc-after-nodes");
        if let Some(policy) = policy {
            // Records sit in shared packs: sparse packs are rewritten and
            // retired instead, under the same exclusion.
            self.repack(&marks, policy, &mut rep)?;
            return Ok(rep);
        }
        // Index entries go before their records (an entry must never name a
        // missing record); a kill in between leaves records no entry names,
        // which the marker makes the next gc look for.
        self.set_sweep_marker(true)?;
        let mut dead: Vec<(Id, Location)> = Vec::new();
        for item in self.index.iter() {
            let Ok((id, entry)) = item? else { continue };
            if marks.chunk(&id)? {
                rep.chunks_kept += 1;
            } else {
                rep.chunks_removed += 1;
                rep.bytes_removed += entry.stored_len as u64;
                dead.push((id, entry.location));
                if dead.len() >= 4096 {
                    self.remove_chunks(&mut dead)?;
                }
            }
        }
        self.remove_chunks(&mut dead)?;
        self.set_sweep_marker(false)?;
        crash_point("gc-after-chunks");
        // What follows only returns the space: writers need not wait for it
        // (on a big store it takes longer than a client waits for an answer).
        drop(exclusive);
        if rep.chunks_removed > 0 {
            self.backend.reclaim()?;
            self.db.compact_range_cf(self.cf(crate::CF_CHUNK_INDEX), None::<&[u8]>, None::<&[u8]>);
        }
        Ok(rep)
    }

    /// Marks what is kept: every branch head and pinned revision with its
    /// ancestors and trees, every pinned node with its subtree, Git LFS
    /// objects, pinned chunks, and the bases of every kept delta.
    pub(crate) fn mark(&self, pins: Pins) -> Result<Marks> {
        let Pins { revisions, nodes, chunks } = pins;
        let mut marks = Marks::new(self.path(), chunks)?;
        // Each repository walks its own history: a revision it forgot keeps
        // its record but not its files, unless another repository (or a
        // pin) still holds it.
        let mut todo: Vec<(Option<String>, Id)> = self.all_branches()?.into_iter().map(|b| (Some(b.0), b.2)).collect();
        todo.extend(revisions.into_iter().map(|r| (None, r)));
        let mut walked: HashSet<(Option<String>, Id)> = HashSet::new();
        let mut with_files: HashSet<Id> = HashSet::new();
        let mut stack: Vec<Id> = Vec::new();
        while let Some((repo, rid)) = todo.pop() {
            if !walked.insert((repo.clone(), rid)) {
                continue;
            }
            marks.revs.insert(rid);
            let rev = self.revision(&rid)?;
            todo.extend(rev.parents.iter().map(|p| (repo.clone(), *p)));
            let forgotten = match &repo {
                Some(r) => self.is_forgotten(r, &rid)?,
                None => false,
            };
            if !forgotten && with_files.insert(rid) {
                stack.extend(rev.entries.iter().map(|e| e.file_id));
                self.mark_trees(&mut stack, &mut marks)?;
            }
        }
        stack.extend(nodes);
        // Git LFS objects are kept through their repositories.
        stack.extend(self.lfs_roots()?);
        self.mark_trees(&mut stack, &mut marks)?;
        self.mark_delta_bases(&mut marks)?;
        Ok(marks)
    }

    /// Removes the revisions and nodes `marks` does not keep, in one synced
    /// batch. At every moment, and after a kill at any point, each stored
    /// revision still has its trees and each stored node its whole subtree
    /// (negotiation trusts "has node" to mean that).
    pub(crate) fn sweep_metadata(&self, marks: &Marks, rep: &mut GcReport) -> Result<()> {
        let mut batch = WriteBatch::default();
        for item in self.db.iterator_cf(self.cf(CF_REVISIONS), IteratorMode::Start) {
            let (k, _) = item?;
            if !marks.revs.contains(&Id::from_slice(&k).unwrap_or_default()) {
                batch.delete_cf(self.cf(CF_REVISIONS), &k);
                rep.revisions_removed += 1;
            }
        }
        for item in self.db.iterator_cf(self.cf(CF_TREES), IteratorMode::Start) {
            let (k, _) = item?;
            if !marks.node(&Id::from_slice(&k).unwrap_or_default())? {
                batch.delete_cf(self.cf(CF_TREES), &k);
                rep.nodes_removed += 1;
            }
        }
        write(&self.db, batch, Durability::Synced)?;
        self.forget_hashes_of_removed(|f| marks.node(f))
    }

    /// Deletes chunks, index entries first (synced), then records; empties
    /// `dead`.
    fn remove_chunks(&self, dead: &mut Vec<(Id, Location)>) -> Result<()> {
        let ids: Vec<Id> = dead.iter().map(|d| d.0).collect();
        let mut batch = WriteBatch::default();
        self.index.batch_delete(&mut batch, &ids);
        write(&self.db, batch, Durability::Synced)?;
        crash_point("gc-mid-sweep");
        self.backend.delete(dead)?;
        dead.clear();
        Ok(())
    }

    /// Records, in the metadata, that a gc is between deleting index entries
    /// and deleting their records.
    fn set_sweep_marker(&self, on: bool) -> Result<()> {
        let mut batch = WriteBatch::default();
        match on {
            true => batch.put_cf(self.cf(CF_META), SWEEP_MARKER, []),
            false => batch.delete_cf(self.cf(CF_META), SWEEP_MARKER),
        }
        write(&self.db, batch, Durability::Synced)
    }

    /// After a gc was killed mid-sweep: deletes the records no index entry
    /// names. Reads every record once, so only then.
    fn remove_unindexed_records(&self) -> Result<()> {
        let scan = self.scan_records(|seen| {
            let ids: Vec<Id> = seen.iter().map(|s| s.0).collect();
            let entries = self.index_entries(&ids)?;
            let orphans: Vec<(Id, Location)> = seen.drain(..).zip(entries).filter(|(_, e)| e.is_none()).map(|(s, _)| (s.0, s.1)).collect();
            self.backend.delete(&orphans)?;
            Ok(())
        })?;
        Ok(scan?)
    }

    /// Scans the backend's records in its own order, handing them to
    /// `each` [`FSCK_BATCH`] at a time (the last batch may be shorter).
    /// Err: `each` failed, and the scan stopped there. Ok(Err): reading the
    /// records failed; the batches read before were handed on.
    fn scan_records(&self, mut each: impl FnMut(&mut Vec<ScannedRecord>) -> Result<()>) -> Result<std::result::Result<(), BackendError>> {
        let mut batch: Vec<ScannedRecord> = Vec::with_capacity(FSCK_BATCH);
        let mut failed = None;
        let scan = self.backend.for_each(&mut |id, location, record| {
            batch.push((id, location.clone(), record.to_vec()));
            if batch.len() == FSCK_BATCH {
                if let Err(e) = each(&mut batch) {
                    failed = Some(e);
                    return Err(BackendError::Other("stopped".into()));
                }
                batch.clear();
            }
            Ok(())
        });
        if let Some(e) = failed {
            return Err(e);
        }
        each(&mut batch)?;
        Ok(scan)
    }

    /// Adds to `chunks` the base of every kept delta record, and the bases
    /// of those, so a kept chunk can always be decoded.
    fn mark_delta_bases(&self, marks: &mut Marks) -> Result<()> {
        let mut frontier = Vec::new();
        for item in self.index.iter() {
            let Ok((id, entry)) = item? else { continue };
            if let Some(base) = entry.base {
                if marks.chunk(&id)? && marks.insert_chunk(&base)? {
                    frontier.push(base);
                }
            }
        }
        while !frontier.is_empty() {
            let bases: Vec<Id> = self.index_entries(&frontier)?.into_iter().flatten().filter_map(|e| e.base).collect();
            frontier.clear();
            for b in bases {
                if marks.insert_chunk(&b)? {
                    frontier.push(b);
                }
            }
        }
        Ok(())
    }

    /// Marks the nodes on `stack` and everything below them (emptying it).
    fn mark_trees(&self, stack: &mut Vec<Id>, marks: &mut Marks) -> Result<()> {
        while let Some(nid) = stack.pop() {
            if !marks.insert_node(&nid)? {
                continue;
            }
            let node = self.node(&nid)?;
            for c in node.children {
                if node.height == 1 {
                    marks.insert_chunk(&c.id)?;
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
    /// Adds to what this handle pins.
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
    pub(crate) fn chunk_key(id: &Id) -> u64 {
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
    /// Keeps a chunk.
    pub fn chunk(&mut self, id: &Id) {
        self.chunks.insert(Self::chunk_key(id));
    }
    /// Keeps everything `other` keeps too.
    pub fn extend(&mut self, other: &Pins) {
        self.revisions.extend(&other.revisions);
        self.nodes.extend(&other.nodes);
        self.chunks.extend(&other.chunks);
    }
    /// How many objects are pinned.
    pub fn len(&self) -> usize {
        self.revisions.len() + self.nodes.len() + self.chunks.len()
    }
    /// Whether nothing is pinned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The gc step at which this process aborts, for crash tests.
static CRASH_AT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// For crash tests: makes the process abort (as abruptly as `kill -9`) when
/// a gc reaches the named point (`gc-after-nodes`, `gc-mid-sweep`,
/// `gc-after-chunks`), or a branch move is in the backend's journal but
/// not yet in the database (`move-journaled`). Set once, by the program, before any gc.
#[doc(hidden)]
pub fn abort_at(point: String) {
    let _ = CRASH_AT.set(point);
}

pub(crate) fn crash_point(name: &str) {
    if CRASH_AT.get().is_some_and(|p| p == name) {
        std::process::abort();
    }
}

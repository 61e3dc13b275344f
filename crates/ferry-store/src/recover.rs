//! Rebuilding a store's database from a backend that is the source of
//! truth, and bringing it up to date after a crash between the backend's
//! journal and the database's write.

use std::path::Path;

use ferry_core::revision::{revision_id, Revision};
use ferry_core::tree::{node_id, Node};
use ferry_core::Id;
use rocksdb::WriteBatch;

use crate::backend::{BackendError, ChunkBackend, Recovered};
use crate::journal::JournalEntry;
use crate::write::{flush, write, Durability};
use crate::{Result, Store, StoreError, CF_CHUNK_INDEX, CF_TREES};

/// Index entries and nodes go to the database in batches of this many.
const BATCH: usize = 4096;

impl Store {
    /// Makes a new store at `path` (which must not hold one) from what
    /// `backend` holds alone: its whole journal, in order (index entries,
    /// nodes, revisions, branch moves, the change feed). Tokens and
    /// repository visibility are not in the backend.
    pub fn rebuild(path: &Path, backend: Box<dyn ChunkBackend>, config: &str) -> Result<Store> {
        let store = Store::init_with(path, Some((backend, config)))?;
        store.catch_up()?;
        Ok(store)
    }

    /// Brings the database up to date with a backend that is the source of
    /// truth: what its journal holds after this store's last branch move
    /// (after a crash between the backend's journal and the database's
    /// write, or, for a read replica, what the writer did since). Returns
    /// how many branch moves it applied.
    pub fn catch_up(&self) -> Result<u64> {
        if self.backend.deferred().is_none() {
            return Ok(0);
        }
        let before = self.ref_seq();
        let mut chunks: Vec<(Id, crate::IndexEntry)> = Vec::new();
        let mut nodes: Vec<(Id, Vec<u8>)> = Vec::new();
        let write_out = |chunks: &mut Vec<(Id, crate::IndexEntry)>, nodes: &mut Vec<(Id, Vec<u8>)>| -> Result<()> {
            if chunks.is_empty() && nodes.is_empty() {
                return Ok(());
            }
            let mut batch = WriteBatch::default();
            self.index.batch_put(&mut batch, chunks.drain(..));
            let trees = self.cf(CF_TREES);
            for (id, enc) in nodes.drain(..) {
                batch.put_cf(trees, id.as_bytes(), enc);
            }
            write(&self.db, batch, Durability::Buffered)?;
            // Durable before a journal entry that may name them.
            flush(&self.db, &[CF_CHUNK_INDEX, CF_TREES])
        };
        let mut failed = None;
        let mut retirements = Vec::new();
        // Revisions whose trees were not there when their entry was read:
        // fine if the trees came later (a gc copied them into a newer
        // pack), if a retirement took them and no branch reaches the
        // revision any more, or if a repository forgot it.
        let mut unrooted: Vec<(Id, Id)> = Vec::new();
        let scan = self.backend.journal_after(before, &mut |r| {
            let res = match r {
                Recovered::Chunk(id, entry) => {
                    chunks.push((id, entry));
                    if chunks.len() + nodes.len() >= BATCH {
                        write_out(&mut chunks, &mut nodes)
                    } else {
                        Ok(())
                    }
                }
                Recovered::Node(id, enc) => {
                    if node_id(&enc) != id || Node::decode(&enc).is_err() {
                        Err(StoreError::Corrupt { what: "tree node", id, detail: "the backend's copy does not hash to its id".into() })
                    } else {
                        nodes.push((id, enc));
                        if chunks.len() + nodes.len() >= BATCH {
                            write_out(&mut chunks, &mut nodes)
                        } else {
                            Ok(())
                        }
                    }
                }
                Recovered::Journal(e) => write_out(&mut chunks, &mut nodes).and_then(|()| self.apply_journal_entry(&e, &mut unrooted)),
                Recovered::Retired(r) => {
                    retirements.push(r);
                    Ok(())
                }
            };
            res.map_err(|e| stop(&mut failed, e))
        });
        finish(scan, failed)?;
        write_out(&mut chunks, &mut nodes)?;
        // A retirement read again (a writer reopening after its own gc) was
        // applied already if its packs are still remembered.
        let remembered: std::collections::HashSet<_> = self.retired_packs()?.into_iter().map(|x| x.0).collect();
        retirements.retain(|r| !r.packs.iter().all(|p| remembered.contains(p)));
        if !retirements.is_empty() {
            // What the retired packs took with them is unreachable: drop it
            // all, so that every stored node keeps its whole subtree.
            let _exclusive = self.gc_guard.write().unwrap_or_else(|p| p.into_inner());
            self.apply_retirements(&retirements, None)?;
            let marks = self.mark(crate::Pins::default())?;
            self.sweep_metadata(&marks, &mut crate::GcReport::default())?;
        }
        // A tree may have come later, copied into a newer pack by a gc; a
        // repository may have forgotten the revision later in the journal.
        let forgotten = if unrooted.is_empty() { Default::default() } else { self.forgotten_anywhere()? };
        for (rev, root) in unrooted {
            if self.has_revision(&rev)? && !forgotten.contains(&rev) && !self.has_nodes(&[root])?[0] {
                return Err(StoreError::MissingNode(root));
            }
        }
        Ok(self.ref_seq() - before)
    }

    /// Writes a journal entry from the backend after checking that its
    /// revisions decode, and whether their file trees are stored (unless a
    /// repository forgot the revision: an earlier entry marked it, and it
    /// came without its files);
    /// revisions whose trees are missing are added to `unrooted` (revision,
    /// missing root) for the caller to judge once the journal is read.
    fn apply_journal_entry(&self, e: &JournalEntry, unrooted: &mut Vec<(Id, Id)>) -> Result<()> {
        for (enc, id) in e.revisions.iter().zip(e.revision_ids()) {
            let rev = Revision::decode(enc)?;
            debug_assert_eq!(revision_id(enc), id);
            let roots: Vec<Id> = rev.entries.iter().map(|x| x.file_id).collect();
            if let Some((root, _)) = roots.iter().zip(self.has_nodes(&roots)?).find(|x| !x.1) {
                if !self.forgotten_anywhere()?.contains(&id) {
                    unrooted.push((id, *root));
                }
            }
        }
        self.write_journal_entry(e)
    }
}

/// Ends a backend's scan from inside its visitor with a store error, kept
/// in `failed` so the caller reports it rather than the backend's wrapping.
fn stop(failed: &mut Option<StoreError>, e: StoreError) -> BackendError {
    let text = e.to_string();
    *failed = Some(e);
    BackendError::Other(text)
}

fn finish(scan: std::result::Result<(), BackendError>, failed: Option<StoreError>) -> Result<()> {
    match failed {
        Some(e) => Err(e),
        None => Ok(scan?),
    }
}

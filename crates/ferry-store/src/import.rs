//! Accepting trees and revisions that were made elsewhere (a push to the
//! hub, a pull into a local store), keeping the store's invariants: a node
//! is stored only after its whole subtree, and a revision becomes visible
//! only once everything it references is durable.

use std::collections::HashSet;

use ferry_core::revision::Revision;
use ferry_core::tree::{node_id, Node};
use ferry_core::Id;

use crate::{Result, StoreError, WriteSession};

impl WriteSession<'_> {
    /// Stores encoded nodes, given children first. Each must hash to its id
    /// and every child must already be stored (or come earlier in `nodes`),
    /// so that "has node" always implies "has its whole subtree".
    pub fn put_nodes_checked(&self, nodes: &[Vec<u8>]) -> Result<Vec<Id>> {
        let store = self.store();
        let mut decoded = Vec::with_capacity(nodes.len());
        for enc in nodes {
            decoded.push((node_id(enc), Node::decode(enc)?));
        }
        let mut batch_ids: HashSet<Id> = HashSet::new();
        let mut chunk_children = Vec::new();
        let mut node_children = Vec::new();
        for (_, n) in &decoded {
            for c in &n.children {
                if n.height == 1 {
                    chunk_children.push(c.id)
                } else {
                    node_children.push(c.id)
                }
            }
        }
        for (id, ok) in chunk_children.iter().zip(store.has_chunks(&chunk_children)?) {
            if !ok {
                return Err(StoreError::MissingChunk(*id));
            }
        }
        let stored = store.has_nodes(&node_children)?;
        let stored: HashSet<Id> = node_children.iter().zip(stored).filter(|x| x.1).map(|x| *x.0).collect();
        let mut new = Vec::with_capacity(nodes.len());
        for ((id, n), enc) in decoded.iter().zip(nodes) {
            if n.height > 1 {
                for c in &n.children {
                    if !stored.contains(&c.id) && !batch_ids.contains(&c.id) {
                        return Err(StoreError::MissingNode(c.id));
                    }
                }
            }
            batch_ids.insert(*id);
            new.push((*id, enc.clone()));
        }
        store.put_nodes(new)?;
        Ok(decoded.into_iter().map(|x| x.0).collect())
    }

    /// Stores revisions that came from elsewhere without moving a branch
    /// (the first part of a history too long for one `publish`), with the
    /// same checks as `publish`: parents stored or earlier in the list,
    /// every file tree stored and of the size its entry says, all data
    /// durable first.
    pub fn put_revisions(&self, repo: &str, revisions: &[Revision]) -> Result<()> {
        let encoded = self.check_revisions(repo, revisions)?;
        let store = self.store();
        store.sync()?;
        store.store_revisions(encoded.into_iter().map(|(_, enc)| enc).collect())
    }

    /// Encodes revisions after checking that each one's parents are stored
    /// or come earlier, and that its file trees are stored and as large as
    /// its entries say (unless `repo` forgot it: then its files need not
    /// be here).
    fn check_revisions(&self, repo: &str, revisions: &[Revision]) -> Result<Vec<(Id, Vec<u8>)>> {
        let store = self.store();
        let mut known: HashSet<Id> = HashSet::new();
        let mut encoded = Vec::with_capacity(revisions.len());
        for rev in revisions {
            for p in &rev.parents {
                if !known.contains(p) && !store.has_revision(p)? {
                    return Err(StoreError::Incomplete(format!("parent {p} of a new revision is neither stored nor sent")));
                }
            }
            let enc = rev.encode();
            let id = ferry_core::revision::revision_id(&enc);
            if !store.is_forgotten(repo, &id)? {
                let roots: Vec<Id> = rev.entries.iter().map(|e| e.file_id).collect();
                for (e, ok) in rev.entries.iter().zip(store.has_nodes(&roots)?) {
                    if !ok {
                        return Err(StoreError::Incomplete(format!("file {:?} (tree {}) has not been stored", e.path, e.file_id.short())));
                    }
                }
                store.check_entry_sizes(rev)?;
            }
            known.insert(id);
            encoded.push((id, enc));
        }
        Ok(encoded)
    }

    /// Stores `revisions` (parents before children, or parents already
    /// stored) and moves `repo`'s `branch` from `expected` to `new` by
    /// compare-and-swap. Every file tree must be stored, of the size its
    /// entry says; all data is made durable before the revisions and the
    /// branch are written (synced).
    pub fn publish(&self, repo: &str, branch: &str, expected: Option<Id>, new: Id, revisions: &[Revision]) -> Result<()> {
        ferry_core::names::check_repo_name(repo)?;
        ferry_core::names::check_branch_name(branch)?;
        let store = self.store();
        let encoded = self.check_revisions(repo, revisions)?;
        if !encoded.iter().any(|(id, _)| *id == new) && !store.has_revision(&new)? {
            return Err(StoreError::Incomplete(format!("new head {new} of branch {branch:?} is neither stored nor sent")));
        }
        store.sync()?;
        let created = revisions.last().map_or(0, |r| r.time);
        store.swap_branch(encoded.into_iter().map(|(_, enc)| enc).collect(), repo, branch, expected, Some(new), created)
    }
}

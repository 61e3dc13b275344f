//! Working out what the other side lacks, without I/O.
//!
//! `TreeDiff` compares file trees top-down between a *source* that has the
//! trees and a *sink* that may lack parts of them: it asks whether the sink
//! has the roots, expands only the nodes the sink lacks, and asks about the
//! children of those, level by level, in batches. For a file of N chunks of
//! which k changed this costs about k·log(N) ids and one round trip per tree
//! level, not N.
//!
//! It relies on one invariant of every ferry store: a node is stored only
//! when its whole subtree is (chunks and nodes are written children first).
//! So "the sink has node X" means it has everything below X.
//!
//! Several steps may be in flight at once: `poll` hands out work until it
//! has none *right now* (`None`); answers may come back in any order, and
//! the comparison is over when `poll` has nothing and no answer is pending.
//! Missing chunks can be taken as they are found (`take_missing_chunks`), so
//! moving data need not wait for the whole comparison. A driver:
//!
//! ```text
//! while let Some(step) = diff.poll(batch) { start(step) }   // then, per answer:
//! AskNodes(ids)  => diff.nodes_known(&ids, &sink.have_nodes(&ids)),
//! Expand(ids)    => for id in ids { diff.expanded(id, &source.node(id)) },
//! AskChunks(ids) => diff.chunks_known(&ids, &sink.have_chunks(&ids)),
//! ```

use std::collections::{HashMap, HashSet};

use ferry_core::tree::Node;
use ferry_core::Id;

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Ask the sink which of these nodes it has; answer with `nodes_known`.
    AskNodes(Vec<Id>),
    /// Fetch these nodes from the source; hand each to `expanded`.
    Expand(Vec<Id>),
    /// Ask the sink which of these chunks it has; answer with `chunks_known`.
    AskChunks(Vec<Id>),
}

/// An answer that does not fit the questions asked: the peer (or the
/// driver) broke the protocol, and the comparison cannot go on.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DiffError {
    /// A bitmap's length differs from the number of ids asked.
    #[error("answer has {got} bits for {asked} ids")]
    AnswerLength {
        /// Ids in the question.
        asked: usize,
        /// Bits in the answer.
        got: usize,
    },
    /// An answer or an expansion names a node that is not outstanding
    /// (never asked about, or already answered).
    #[error("node {0} was not requested for expansion")]
    Unexpected(Id),
    /// An answer names a chunk that is not outstanding.
    #[error("chunk {0} was not asked about")]
    UnexpectedChunk(Id),
    /// A node's height is not the one its parent implies (a node of height
    /// 0 never is).
    #[error("node {id} has height {got}, its parent expects {want} (0: any height of at least 1)")]
    Height {
        /// The node.
        id: Id,
        /// The height its parent implies; 0 for a root (any height of at
        /// least 1).
        want: u8,
        /// The height it has.
        got: u8,
    },
}

/// Top-down tree comparison state. See the module documentation.
#[derive(Default)]
pub struct TreeDiff {
    seen_nodes: HashSet<Id>,
    seen_chunks: HashSet<Id>,
    ask_nodes: Vec<(Id, u8)>,
    expand: Vec<(Id, u8)>,
    /// Nodes handed out for expansion, with the height their parent expects.
    expanding: HashMap<Id, u8>,
    /// Nodes asked about, with the height their parent expects (0: a root).
    asking: HashMap<Id, u8>,
    ask_chunks: Vec<(Id, u64)>,
    /// Chunks asked about, with their sizes.
    asking_chunks: HashMap<Id, u64>,
    missing_nodes: Vec<(u8, Id)>,
    missing_chunks: Vec<(Id, u64)>,
    /// Ids sent to the sink in questions (for reporting negotiation cost).
    pub ids_asked: u64,
    /// Chunks under the nodes the sink lacks, found missing or not.
    pub chunks_seen: u64,
}

impl TreeDiff {
    /// Starts from file roots (their heights are learnt on expansion).
    pub fn new(roots: impl IntoIterator<Item = Id>) -> TreeDiff {
        let mut d = TreeDiff::default();
        for r in roots {
            if d.seen_nodes.insert(r) {
                d.ask_nodes.push((r, 0));
            }
        }
        d
    }

    /// The next thing to do, with at most `batch` ids; `None` when nothing
    /// can be done until an answer arrives (or the comparison is over).
    pub fn poll(&mut self, batch: usize) -> Option<Step> {
        fn take<T>(v: &mut Vec<T>, batch: usize) -> Vec<T> {
            let n = v.len().min(batch.max(1));
            v.drain(..n).collect()
        }
        if !self.ask_nodes.is_empty() {
            let items = take(&mut self.ask_nodes, batch);
            self.ids_asked += items.len() as u64;
            self.asking.extend(items.iter().copied());
            return Some(Step::AskNodes(items.into_iter().map(|x| x.0).collect()));
        }
        if !self.expand.is_empty() {
            let items = take(&mut self.expand, batch);
            self.expanding.extend(items.iter().copied());
            return Some(Step::Expand(items.into_iter().map(|x| x.0).collect()));
        }
        if !self.ask_chunks.is_empty() {
            let items = take(&mut self.ask_chunks, batch);
            self.ids_asked += items.len() as u64;
            self.asking_chunks.extend(items.iter().copied());
            return Some(Step::AskChunks(items.into_iter().map(|x| x.0).collect()));
        }
        None
    }

    /// Whether every step handed out has been answered and none is left.
    pub fn is_finished(&self) -> bool {
        self.ask_nodes.is_empty()
            && self.expand.is_empty()
            && self.ask_chunks.is_empty()
            && self.asking.is_empty()
            && self.expanding.is_empty()
            && self.asking_chunks.is_empty()
    }

    /// The sink's answer to `AskNodes(ids)`.
    pub fn nodes_known(&mut self, ids: &[Id], have: &[bool]) -> Result<(), DiffError> {
        if ids.len() != have.len() {
            return Err(DiffError::AnswerLength { asked: ids.len(), got: have.len() });
        }
        if let Some(id) = ids.iter().find(|id| !self.asking.contains_key(id)) {
            return Err(DiffError::Unexpected(*id));
        }
        for (id, has) in ids.iter().zip(have) {
            let h = self.asking.remove(id).unwrap_or(0);
            if !has {
                self.expand.push((*id, h));
            }
        }
        Ok(())
    }

    /// A node the sink lacks, fetched from the source (already verified
    /// against its id by the caller).
    pub fn expanded(&mut self, id: Id, node: &Node) -> Result<(), DiffError> {
        let Some(&want) = self.expanding.get(&id) else {
            return Err(DiffError::Unexpected(id));
        };
        if node.height == 0 || (want != 0 && want != node.height) {
            return Err(DiffError::Height { id, want, got: node.height });
        }
        self.expanding.remove(&id);
        self.missing_nodes.push((node.height, id));
        for c in &node.children {
            if node.height == 1 {
                self.chunks_seen += 1;
                if self.seen_chunks.insert(c.id) {
                    self.ask_chunks.push((c.id, c.size));
                }
            } else if self.seen_nodes.insert(c.id) {
                self.ask_nodes.push((c.id, node.height - 1));
            }
        }
        Ok(())
    }

    /// The sink's answer to `AskChunks(ids)`.
    pub fn chunks_known(&mut self, ids: &[Id], have: &[bool]) -> Result<(), DiffError> {
        if ids.len() != have.len() {
            return Err(DiffError::AnswerLength { asked: ids.len(), got: have.len() });
        }
        if let Some(id) = ids.iter().find(|id| !self.asking_chunks.contains_key(id)) {
            return Err(DiffError::UnexpectedChunk(*id));
        }
        for (id, has) in ids.iter().zip(have) {
            let size = self.asking_chunks.remove(id).unwrap_or(0);
            if !has {
                self.missing_chunks.push((*id, size));
            }
        }
        Ok(())
    }

    /// Chunks found missing since the last call, with their raw sizes, in
    /// discovery order.
    pub fn take_missing_chunks(&mut self) -> Vec<(Id, u64)> {
        std::mem::take(&mut self.missing_chunks)
    }

    /// Chunks found missing and not yet taken.
    pub fn missing_chunks(&self) -> &[(Id, u64)] {
        &self.missing_chunks
    }

    /// Nodes the sink lacks, lowest first: the order in which to store them
    /// so that every node arrives after its children.
    pub fn missing_nodes_bottom_up(&self) -> Vec<Id> {
        let mut v = self.missing_nodes.clone();
        v.sort_by_key(|x| x.0);
        v.into_iter().map(|x| x.1).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::tree::build;
    use std::collections::HashMap;

    /// Runs a diff where the source holds `src` nodes and the sink holds
    /// `sink_nodes`/`sink_chunks`; returns (missing chunks, ids asked).
    fn run(roots: &[Id], src: &HashMap<Id, Node>, sink_nodes: &HashSet<Id>, sink_chunks: &HashSet<Id>) -> (Vec<Id>, Vec<Id>, u64, usize) {
        let mut d = TreeDiff::new(roots.iter().copied());
        let mut trips = 0;
        while let Some(step) = d.poll(1024) {
            match step {
                Step::AskNodes(ids) => {
                    trips += 1;
                    let have: Vec<bool> = ids.iter().map(|i| sink_nodes.contains(i)).collect();
                    d.nodes_known(&ids, &have).unwrap();
                }
                Step::Expand(ids) => {
                    for id in ids {
                        d.expanded(id, &src[&id]).unwrap();
                    }
                }
                Step::AskChunks(ids) => {
                    trips += 1;
                    let have: Vec<bool> = ids.iter().map(|i| sink_chunks.contains(i)).collect();
                    d.chunks_known(&ids, &have).unwrap();
                }
            }
        }
        assert!(d.is_finished());
        (d.take_missing_chunks().into_iter().map(|c| c.0).collect(), d.missing_nodes_bottom_up(), d.ids_asked, trips)
    }

    fn leaves(n: u64, salt: u64) -> Vec<(Id, u64)> {
        (0..n).map(|i| (Id::of_chunk(&(i * 1000 + salt).to_le_bytes()), 65536)).collect()
    }

    #[test]
    fn a_few_changed_chunks_cost_a_few_paths() {
        let n = 100_000;
        let v1 = leaves(n, 0);
        let mut v2 = v1.clone();
        for k in [10u64, 50_000, 99_999] {
            v2[k as usize].0 = Id::of_chunk(&k.to_be_bytes());
        }
        let (_, n1) = build(&v1);
        let (r2, n2) = build(&v2);
        let sink_nodes: HashSet<Id> = n1.iter().map(|x| x.0).collect();
        let sink_chunks: HashSet<Id> = v1.iter().map(|x| x.0).collect();
        let src: HashMap<Id, Node> = n2.into_iter().collect();
        let (missing, nodes, asked, trips) = run(&[r2.id], &src, &sink_nodes, &sink_chunks);
        assert_eq!(missing.len(), 3);
        assert!(asked < 600, "{asked} ids asked for 3 changed chunks of {n}");
        assert!(trips <= 8, "{trips} round trips");
        // Bottom-up: every node comes after the nodes below it.
        let pos: HashMap<Id, usize> = nodes.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        for id in &nodes {
            for c in &src[id].children {
                if let Some(p) = pos.get(&c.id) {
                    assert!(*p < pos[id]);
                }
            }
        }
    }

    #[test]
    fn an_empty_sink_gets_everything_and_a_full_sink_nothing() {
        let v = leaves(5000, 7);
        let (r, nodes) = build(&v);
        let src: HashMap<Id, Node> = nodes.iter().cloned().collect();
        let (missing, missing_nodes, _, _) = run(&[r.id], &src, &HashSet::new(), &HashSet::new());
        assert_eq!(missing.len(), 5000);
        assert_eq!(missing_nodes.len(), nodes.len());
        let all_nodes: HashSet<Id> = nodes.iter().map(|x| x.0).collect();
        let (missing, _, asked, _) = run(&[r.id], &src, &all_nodes, &HashSet::new());
        assert!(missing.is_empty());
        assert_eq!(asked, 1);
    }

    #[test]
    fn mismatched_answers_are_errors() {
        let mut d = TreeDiff::new([Id::of_chunk(b"r")]);
        let Some(Step::AskNodes(ids)) = d.poll(10) else { panic!() };
        assert!(d.nodes_known(&ids, &[]).is_err());
        assert!(d.nodes_known(&[Id::of_chunk(b"x")], &[false]).is_err(), "an answer about a node not asked about");
        assert!(d.expanded(Id::of_chunk(b"x"), &Node { height: 1, children: vec![] }).is_err());
        // A root claimed to have height 0 (found by fuzzing: it underflowed).
        let root = Id::of_chunk(b"r");
        d.nodes_known(&ids, &[false]).unwrap();
        assert!(d.nodes_known(&ids, &[false]).is_err(), "the same answer twice");
        let Some(Step::Expand(_)) = d.poll(10) else { panic!() };
        assert!(d.expanded(root, &Node { height: 0, children: vec![ferry_core::tree::Child { id: root, size: 1 }] }).is_err());
        assert!(!d.is_finished(), "a refused expansion leaves the node pending");
        let leaf = ferry_core::tree::Child { id: Id::of_chunk(b"c"), size: 7 };
        d.expanded(root, &Node { height: 1, children: vec![leaf] }).unwrap();
        let Some(Step::AskChunks(c)) = d.poll(10) else { panic!() };
        assert!(d.chunks_known(&[Id::of_chunk(b"y")], &[false]).is_err(), "an answer about a chunk not asked about");
        d.chunks_known(&c, &[false]).unwrap();
        assert!(d.is_finished());
        assert_eq!(d.take_missing_chunks(), vec![(leaf.id, 7)]);
        assert!(d.take_missing_chunks().is_empty());
    }
}

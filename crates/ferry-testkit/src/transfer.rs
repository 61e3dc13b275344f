//! Two in-memory ends for the transfer state machine
//! (`ferry_proto::transfer::Transfer`): a [`MemoryEnd`] holds one store's
//! revisions, nodes and chunk ids; a [`MemoryLink`] answers the machine's
//! requests from a source end and a sink end, as the hub's ends would, and
//! counts what crossed.
//!
//! Chunks are ids only (no bytes), so an end of ten million chunks stays a
//! few hundred MiB.

use std::collections::{HashMap, HashSet, VecDeque};

use ferry_core::revision::{revision_id, Entry, Revision};
use ferry_core::tree::{build, node_id, Node};
use ferry_core::Id;
use ferry_proto::transfer::{Request, Response};

/// The encoded size every in-memory chunk counts as when moved: ferry's
/// average chunk size.
pub const CHUNK_BYTES: u64 = 64 * 1024;

/// The id of synthetic chunk number `n`: BLAKE3 of `n` as 8 little-endian
/// bytes. Distinct numbers give distinct ids, so numbering chunks is how
/// test files share or differ in content.
pub fn chunk_id(n: u64) -> Id {
    Id::of_chunk(&n.to_le_bytes())
}

/// One store's objects in memory: encoded revisions and tree nodes by id,
/// the ids of the chunks it holds, and the head of its one branch.
#[derive(Default, Clone, Debug)]
pub struct MemoryEnd {
    /// Encoded revisions by id.
    pub revisions: HashMap<Id, Vec<u8>>,
    /// Encoded tree nodes by id.
    pub nodes: HashMap<Id, Vec<u8>>,
    /// The chunks held (ids only).
    pub chunks: HashSet<Id>,
    /// The branch's head; `None` before the first commit.
    pub branch: Option<Id>,
    /// Revisions this end forgot: their records are here, their files
    /// need not be.
    pub forgotten: HashSet<Id>,
}

impl MemoryEnd {
    /// Stores a file given as its chunks `(id, size)`: the chunk ids and
    /// every node of its tree. Returns its (non-executable) entry.
    pub fn add_file(&mut self, path: impl Into<String>, chunks: &[(Id, u64)]) -> Entry {
        let (root, nodes) = build(chunks);
        for (id, node) in nodes {
            self.nodes.entry(id).or_insert_with(|| node.encode());
        }
        self.chunks.extend(chunks.iter().map(|c| c.0));
        Entry { path: path.into(), file_id: root.id, size: root.size, executable: false }
    }

    /// Stores a revision (without moving the branch); returns its id.
    pub fn add_revision(&mut self, revision: &Revision) -> Id {
        let encoded = revision.encode();
        let id = revision_id(&encoded);
        self.revisions.insert(id, encoded);
        id
    }

    /// Commits files given as chunk lists (named `f0`, `f1`, …) on top of
    /// `parents` and moves the branch to the new revision, whose id `salt`
    /// also varies (it is the time and the message). Returns its id.
    pub fn commit(&mut self, parents: Vec<Id>, files: &[Vec<(Id, u64)>], salt: u64) -> Id {
        let entries = files.iter().enumerate().map(|(i, chunks)| self.add_file(format!("f{i}"), chunks)).collect();
        let revision = Revision::new(parents, "t".into(), salt as i64, format!("r{salt}"), entries).expect("a valid test revision");
        let id = self.add_revision(&revision);
        self.branch = Some(id);
        id
    }

    /// A stored revision, decoded; panics if it is absent.
    pub fn revision(&self, id: &Id) -> Revision {
        let encoded = self.revisions.get(id).unwrap_or_else(|| panic!("revision {id} is not in this end"));
        Revision::decode(encoded).expect("stored revisions decode")
    }

    /// Encoded revisions breadth-first from `from` over parents, never
    /// returning or following one in `until`, at most `max` (what
    /// `Request::SourceHistory` asks).
    pub fn history(&self, from: &[Id], until: &[Id], max: u32) -> Vec<Vec<u8>> {
        let until: HashSet<&Id> = until.iter().collect();
        let mut seen = HashSet::new();
        let mut queue: VecDeque<Id> = from.iter().copied().collect();
        let mut out = Vec::new();
        while let Some(id) = queue.pop_front() {
            if out.len() >= max as usize || until.contains(&id) || !seen.insert(id) {
                continue;
            }
            let Some(encoded) = self.revisions.get(&id) else { continue };
            queue.extend(Revision::decode(encoded).expect("stored revisions decode").parents);
            out.push(encoded.clone());
        }
        out
    }

    /// Everything reachable from revision `head`: (revisions, nodes, chunks).
    pub fn reachable(&self, head: Id) -> (HashSet<Id>, HashSet<Id>, HashSet<Id>) {
        let (mut revisions, mut nodes, mut chunks) = (HashSet::new(), HashSet::new(), HashSet::new());
        let mut todo = vec![head];
        while let Some(r) = todo.pop() {
            if !revisions.insert(r) {
                continue;
            }
            let revision = self.revision(&r);
            todo.extend(revision.parents.iter().copied());
            let mut stack: Vec<Id> = revision.entries.iter().map(|e| e.file_id).collect();
            while let Some(n) = stack.pop() {
                if !nodes.insert(n) {
                    continue;
                }
                let node = Node::decode(&self.nodes[&n]).expect("stored nodes decode");
                for child in node.children {
                    if node.height == 1 {
                        chunks.insert(child.id);
                    } else {
                        stack.push(child.id);
                    }
                }
            }
        }
        (revisions, nodes, chunks)
    }
}

/// How a [`MemoryLink`] treats requests a correct transfer between honest
/// ends never makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkRules {
    /// Hold what a real store holds, and panic naming the breach: a node
    /// stored before its children, a revision before its parents or trees,
    /// a branch moved from another head than the sink's, a chunk moved that
    /// the sink already has or the source lacks, a node asked of the source
    /// that it lacks.
    Enforce,
    /// Store whatever arrives, and answer what the source lacks with empty
    /// bytes: for a fuzzer that damages answers, after which the machine may
    /// rightly ask for anything.
    Trust,
}

/// What crossed a [`MemoryLink`].
#[derive(Default, Clone, Debug)]
pub struct Tally {
    /// Every chunk moved, in the order moved.
    pub moved: Vec<Id>,
    /// Ids in the questions to the sink about nodes and chunks.
    pub ids_asked: u64,
    /// Bitmap answers as framed: a 4-byte count and a bit per id.
    pub bitmap_bytes: u64,
    /// Encoded nodes stored on the sink.
    pub node_bytes: u64,
    /// Encoded revisions from the source's history and stored on the sink.
    pub revision_bytes: u64,
}

/// Answers a transfer's requests from two in-memory ends, at once and in
/// whatever order the driver picks.
pub struct MemoryLink<'a> {
    /// Where the objects come from; never changed.
    pub source: &'a MemoryEnd,
    /// Where they go; stores what the transfer sends.
    pub sink: &'a mut MemoryEnd,
    /// What the link does with requests honest ends never see.
    pub rules: SinkRules,
    /// What crossed so far.
    pub tally: Tally,
}

impl<'a> MemoryLink<'a> {
    /// A link from `source` to `sink`, with nothing counted yet.
    pub fn new(source: &'a MemoryEnd, sink: &'a mut MemoryEnd, rules: SinkRules) -> MemoryLink<'a> {
        MemoryLink { source, sink, rules, tally: Tally::default() }
    }

    /// The answer an honest source and sink give to `request`, after the
    /// sink stored what it asks to store.
    pub fn answer(&mut self, request: Request) -> Response {
        let enforce = self.rules == SinkRules::Enforce;
        match request {
            Request::SourceHistory { from, until, max } => {
                let revisions = self.source.history(&from, &until, max);
                self.tally.revision_bytes += revisions.iter().map(|r| r.len() as u64).sum::<u64>();
                Response::Revisions(revisions)
            }
            Request::SourceHasRevisions(ids) => self.bitmap(&ids, |link, id| link.source.revisions.contains_key(id)),
            Request::SinkHasRevisions(ids) => self.bitmap(&ids, |link, id| link.sink.revisions.contains_key(id)),
            Request::SourceForgotten(ids) => self.bitmap(&ids, |link, id| link.source.forgotten.contains(id)),
            Request::SinkForget(ids) => {
                self.sink.forgotten.extend(ids);
                Response::Stored
            }
            Request::SinkHasNodes(ids) => {
                self.tally.ids_asked += ids.len() as u64;
                self.bitmap(&ids, |link, id| link.sink.nodes.contains_key(id))
            }
            Request::SinkHasChunks(ids) => {
                self.tally.ids_asked += ids.len() as u64;
                self.bitmap(&ids, |link, id| link.sink.chunks.contains(id))
            }
            Request::SourceNodes(ids) => Response::Nodes(
                ids.iter()
                    .map(|id| match self.source.nodes.get(id) {
                        Some(node) => node.clone(),
                        None if enforce => panic!("node {id} asked of a source that lacks it"),
                        None => Vec::new(),
                    })
                    .collect(),
            ),
            Request::MoveChunks(ids) => {
                for id in &ids {
                    if enforce {
                        assert!(self.source.chunks.contains(id), "moving chunk {id}, which the source lacks");
                        assert!(!self.sink.chunks.contains(id), "moving chunk {id}, which the sink has");
                    }
                    self.sink.chunks.insert(*id);
                }
                let stored_bytes = ids.len() as u64 * CHUNK_BYTES;
                self.tally.moved.extend(ids);
                Response::Moved { stored_bytes }
            }
            Request::SinkPutNodes(nodes) => {
                self.put_nodes(nodes);
                Response::Stored
            }
            Request::SinkPutRevisions(revisions) => {
                self.put_revisions(revisions);
                Response::Stored
            }
            Request::SinkUpdateBranch { expected, new, revisions } => {
                self.put_revisions(revisions);
                if enforce {
                    assert_eq!(self.sink.branch, expected, "compare-and-swap from the wrong head");
                    assert!(self.sink.revisions.contains_key(&new), "branch moved to revision {new}, which the sink lacks");
                }
                self.sink.branch = Some(new);
                Response::Stored
            }
        }
    }

    fn bitmap(&mut self, ids: &[Id], has: impl Fn(&Self, &Id) -> bool) -> Response {
        self.tally.bitmap_bytes += 4 + ids.len().div_ceil(8) as u64;
        Response::Bitmap(ids.iter().map(|id| has(self, id)).collect())
    }

    fn put_nodes(&mut self, nodes: Vec<Vec<u8>>) {
        for encoded in nodes {
            if self.rules == SinkRules::Enforce {
                let node = Node::decode(&encoded).expect("a node the transfer stores decodes");
                for child in &node.children {
                    let present = if node.height == 1 { self.sink.chunks.contains(&child.id) } else { self.sink.nodes.contains_key(&child.id) };
                    assert!(present, "node stored before its child {}", child.id);
                }
            }
            self.tally.node_bytes += encoded.len() as u64;
            self.sink.nodes.insert(node_id(&encoded), encoded);
        }
    }

    fn put_revisions(&mut self, revisions: Vec<Vec<u8>>) {
        for encoded in revisions {
            if self.rules == SinkRules::Enforce {
                let revision = Revision::decode(&encoded).expect("a revision the transfer stores decodes");
                for parent in &revision.parents {
                    assert!(self.sink.revisions.contains_key(parent), "revision stored before its parent {parent}");
                }
                let forgotten = self.sink.forgotten.contains(&revision_id(&encoded));
                for entry in revision.entries.iter().filter(|_| !forgotten) {
                    assert!(self.sink.nodes.contains_key(&entry.file_id), "revision stored before its tree {}", entry.file_id);
                }
            }
            self.tally.revision_bytes += encoded.len() as u64;
            self.sink.revisions.insert(revision_id(&encoded), encoded);
        }
    }
}

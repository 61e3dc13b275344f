//! Moving one branch from a *source* to a *sink*, without I/O.
//!
//! Push (local store → hub), pull (hub → local store) and mirror (hub →
//! hub) are the same procedure with different ends, so they share this
//! state machine; ferry-hub drives it against stores and connections, and
//! the fuzz targets drive it with arbitrary answers.
//!
//! 1. **History.** Fetch the source's revisions from its head breadth-first,
//!    stopping at the sink's head (`until`), and ask the sink which of them
//!    it already has. The sink's head must be an ancestor of the source's
//!    head: otherwise the histories diverged and nothing moves.
//! 2. **Trees.** Ask the source which of the revisions the sink lacks it
//!    forgot (their records stay, their files are gone: retention). Compare
//!    the file trees of the others, top-down ([`TreeDiff`]); chunks found
//!    missing start moving at once, several batches in flight, while the
//!    comparison goes on.
//! 3. **Nodes.** Store the nodes the sink lacked, children first, once all
//!    chunks are there (so the sink never has a node without its subtree).
//! 4. **Branch.** Tell the sink which revisions come without their files,
//!    store the revisions, parents first, and move the sink's branch from
//!    the head it had to the source's head by compare-and-swap.
//!
//! The driver loop: call [`Transfer::poll`] until it says `Wait`, start every
//! request it returned (concurrently, in any order), and hand each answer to
//! [`Transfer::answer`] with the request's tag; repeat until `Done`. Errors
//! from the ends themselves (a refused write, a lost connection) end the
//! transfer in the driver; this machine reports only answers that break the
//! protocol and histories that diverged.
//!
//! Everything that comes from the source is checked here before it can be
//! passed on: revisions and nodes must hash to the ids they were asked for,
//! decode within their limits, and only revisions that were asked for (or
//! are ancestors of those) are accepted. Chunks are verified by whichever
//! end stores them.
//!
//! The procedure, message by message, is `protocol/wire.md`, section 7.
//! `crates/ferry-proto/examples/` drives it between two ends in memory.

use std::collections::{HashMap, HashSet, VecDeque};

use ferry_core::revision::{revision_id, Revision};
use ferry_core::tree::{node_id, Node};
use ferry_core::{FormatError, Id};

use crate::message::{MAX_IDS, MAX_REVISIONS};
use crate::negotiate::{DiffError, Step, TreeDiff};

/// How much to ask and move at once. The defaults are those of
/// `protocol/wire.md`, section 7; tests use small ones so that every
/// splitting path runs.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Ids per negotiation question.
    pub ask_batch: usize,
    /// Negotiation questions in flight.
    pub asks_in_flight: usize,
    /// Raw bytes per chunk move (one request to each end).
    pub move_batch_bytes: u64,
    /// Chunks per chunk move.
    pub move_batch_chunks: usize,
    /// Chunk moves in flight: enough to fill a long fat link. Questions and
    /// moves together stay within the 16 streams a hub allows a connection.
    pub moves_in_flight: usize,
    /// Revisions per history request.
    pub history_batch: u32,
    /// Encoded bytes per request that carries nodes or revisions; below the
    /// frame limit, with room for the request's other fields.
    pub frame_budget: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            ask_batch: MAX_IDS,
            asks_in_flight: 8,
            move_batch_bytes: 4 << 20,
            move_batch_chunks: 64,
            moves_in_flight: 8,
            history_batch: 1024,
            frame_budget: crate::frame::BATCH_BYTES,
        }
    }
}

/// A pull of only some files of the source's head: the sink gets a new,
/// parentless revision holding just those files.
pub struct Partial {
    /// Which paths to keep.
    pub keep: Box<dyn Fn(&str) -> bool + Send + Sync>,
    /// Describes the selection in the new revision's message.
    pub description: String,
}

/// What to move: the two heads, and how.
pub struct Config {
    /// The revision the sink's branch should end at.
    pub source_head: Id,
    /// Where the sink's branch is now (None: it does not exist).
    pub sink_head: Option<Id>,
    /// Other revisions the sink is known to have (e.g. its other heads in
    /// the repository): a history walk for a new branch stops there.
    pub sink_hints: Vec<Id>,
    /// Move only some files of the source's head, as a new revision without
    /// parents (`None`: the whole history).
    pub partial: Option<Partial>,
    /// Batch sizes and requests in flight.
    pub limits: Limits,
}

/// A request to one of the ends. Each is answered with the [`Response`]
/// named in its documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Source: revisions breadth-first from `from` over parents, never
    /// returning or following one in `until`, at most `max` (→ `Revisions`).
    SourceHistory {
        /// Where the walk starts.
        from: Vec<Id>,
        /// Revisions the sink has: the walk stops at them.
        until: Vec<Id>,
        /// Most revisions to return.
        max: u32,
    },
    /// Source: which of these revisions it has (→ `Bitmap`).
    SourceHasRevisions(Vec<Id>),
    /// Source: which of these revisions it forgot, keeping their records
    /// but not their files (→ `Bitmap`).
    SourceForgotten(Vec<Id>),
    /// Source: these encoded nodes, in this order (→ `Nodes`).
    SourceNodes(Vec<Id>),
    /// Sink: which of these revisions it has (→ `Bitmap`).
    SinkHasRevisions(Vec<Id>),
    /// Sink: which of these nodes it has (→ `Bitmap`).
    SinkHasNodes(Vec<Id>),
    /// Sink: which of these chunks it has (→ `Bitmap`).
    SinkHasChunks(Vec<Id>),
    /// Copy these chunks from the source to the sink, verified by the
    /// sink before it stores them (→ `Moved`).
    MoveChunks(Vec<Id>),
    /// Sink: store these encoded nodes, each after its children (→ `Stored`).
    SinkPutNodes(Vec<Vec<u8>>),
    /// Sink: store these encoded revisions, parents first, without moving a
    /// branch (→ `Stored`).
    SinkPutRevisions(Vec<Vec<u8>>),
    /// Sink: the revisions about to be stored that the source forgot:
    /// store them without their files (→ `Stored`).
    SinkForget(Vec<Id>),
    /// Sink: store `revisions` (parents first) and move the branch from
    /// `expected` to `new` by compare-and-swap (→ `Stored`).
    SinkUpdateBranch {
        /// Where the sink's branch was when the transfer started (`None`:
        /// it did not exist).
        expected: Option<Id>,
        /// The branch's new head.
        new: Id,
        /// Encoded revisions to store first, parents first.
        revisions: Vec<Vec<u8>>,
    },
}

/// An end's answer to a [`Request`], handed to [`Transfer::answer`]. An
/// answer of the wrong kind or length ends the transfer with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Encoded revisions (to `SourceHistory`), in the order the source
    /// walked them.
    Revisions(Vec<Vec<u8>>),
    /// One bit per id asked, in order: `true` if the end has it (to the
    /// `SourceHas*` and `SinkHas*` requests).
    Bitmap(Vec<bool>),
    /// Encoded nodes, one per id asked, in order (to `SourceNodes`).
    Nodes(Vec<Vec<u8>>),
    /// The chunks are stored on the sink; `stored_bytes` is their encoded
    /// size (what crossed the wire).
    Moved {
        /// Encoded bytes of the chunks moved.
        stored_bytes: u64,
    },
    /// The sink stored what it was sent (to `SinkPut*` and
    /// `SinkUpdateBranch`).
    Stored,
}

/// What [`Transfer::poll`] says to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// Start this request; answer it with its tag.
    Request(u64, Request),
    /// Nothing to start until an answer arrives.
    Wait,
    /// The transfer is complete: see [`Transfer::report`].
    Done,
}

/// Why a transfer stopped. The sink's branch moves only with the last
/// request, so a transfer that stops before it leaves the branch where it
/// was; what the sink already stored stays, and a re-run skips it.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TransferError {
    /// The sink's branch is at a revision the source's head does not
    /// descend from: moving it would lose the sink's revisions.
    #[error("the histories diverged: the destination's branch is at {sink_head}, which the source's head does not contain")]
    Diverged {
        /// Where the sink's branch is.
        sink_head: Id,
        /// The sink already has the source's head: it is ahead (or the two
        /// branches were merged differently).
        sink_has_source_head: bool,
    },
    /// The source did not return a revision it was asked for (its head,
    /// or a parent of one it sent).
    #[error("the source does not have revision {0}")]
    MissingRevision(Id),
    /// An answer to an unknown request, of the wrong kind or length, or
    /// holding objects that were not asked for.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A revision or node from the source does not decode, or does not hash
    /// to the id asked for.
    #[error("{0}")]
    Format(#[from] FormatError),
    /// An answer does not fit the tree comparison's questions.
    #[error("{0}")]
    Diff(#[from] DiffError),
}

/// What a transfer did (or has done so far).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The sink branch's new head.
    pub head: Id,
    /// The sink's branch was already at the source's head: nothing moved.
    pub up_to_date: bool,
    /// Revisions sent to the sink.
    pub revisions: u64,
    /// Chunks copied to the sink.
    pub chunks_moved: u64,
    /// Encoded bytes of the chunks moved.
    pub chunk_bytes_moved: u64,
    /// Raw bytes of the chunks moved.
    pub raw_bytes_moved: u64,
    /// Raw bytes of the chunks found missing so far (what `raw_bytes_moved`
    /// will reach).
    pub raw_bytes_to_move: u64,
    /// Chunks of the compared files the sink already had.
    pub chunks_already_there: u64,
    /// Tree nodes stored on the sink.
    pub nodes_moved: u64,
    /// Ids sent in negotiation questions.
    pub ids_asked: u64,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Phase {
    History,
    /// Which revisions to send the source forgot.
    Forgotten,
    Trees,
    Nodes,
    Revisions,
    Done,
}

/// What an outstanding request was, to check and route its answer.
enum Pending {
    History { from: Vec<Id> },
    SourceHasHead,
    SinkHasSourceHead,
    SinkHasRevisions(Vec<Id>),
    SourceForgotten(Vec<Id>),
    Diff(Step),
    Move { ids: Vec<Id>, raw: u64 },
    Stored,
}

/// The state of one transfer: see the module documentation for the
/// procedure and the driver loop.
pub struct Transfer {
    cfg: Config,
    phase: Phase,
    next_tag: u64,
    pending: HashMap<u64, Pending>,
    // History.
    until: HashSet<Id>,
    /// Revisions to ask the source for.
    frontier: Vec<Id>,
    /// Revisions the source may send: asked for, or parents of those sent.
    may_receive: HashSet<Id>,
    received: HashMap<Id, (Vec<u8>, Revision)>,
    /// Received revisions not yet checked against the sink.
    unchecked: Vec<Id>,
    on_sink: HashSet<Id>,
    reached_sink_head: bool,
    source_has_sink_head: Option<bool>,
    /// Set once the source is known to lack the sink's head.
    diverged: bool,
    sink_has_source_head: Option<bool>,
    // Forgotten.
    /// The revisions to send, once the walk is over.
    to_send: Vec<Id>,
    /// Of those, the ones not yet asked about.
    forgotten_unasked: Vec<Id>,
    /// Of those, the ones the source forgot: sent without their files.
    forgotten: Vec<Id>,
    // Trees.
    diff: TreeDiff,
    /// Encoded nodes the sink lacks, as fetched from the source.
    nodes: HashMap<Id, Vec<u8>>,
    move_queue: VecDeque<(Id, u64)>,
    move_queue_bytes: u64,
    // Encoded nodes and revisions, in the order to store them.
    node_order: VecDeque<Vec<u8>>,
    revision_order: VecDeque<Vec<u8>>,
    new_head: Id,
    report: Report,
}

impl Transfer {
    /// A transfer that has asked nothing yet. If the sink is already at the
    /// source's head (and the transfer is not partial), it is done at once
    /// and its report says `up_to_date`.
    pub fn new(cfg: Config) -> Transfer {
        let head = cfg.source_head;
        let until: HashSet<Id> = if cfg.partial.is_some() {
            HashSet::new()
        } else {
            match cfg.sink_head {
                Some(h) => HashSet::from([h]),
                None => cfg.sink_hints.iter().copied().collect(),
            }
        };
        let mut t = Transfer {
            phase: Phase::History,
            next_tag: 0,
            pending: HashMap::new(),
            until,
            frontier: vec![head],
            may_receive: HashSet::from([head]),
            received: HashMap::new(),
            unchecked: Vec::new(),
            on_sink: HashSet::new(),
            reached_sink_head: false,
            source_has_sink_head: None,
            diverged: false,
            sink_has_source_head: None,
            to_send: Vec::new(),
            forgotten_unasked: Vec::new(),
            forgotten: Vec::new(),
            diff: TreeDiff::default(),
            nodes: HashMap::new(),
            move_queue: VecDeque::new(),
            move_queue_bytes: 0,
            node_order: VecDeque::new(),
            revision_order: VecDeque::new(),
            new_head: head,
            report: Report { head, ..Default::default() },
            cfg,
        };
        if t.cfg.partial.is_none() && t.cfg.sink_head == Some(head) {
            t.report.up_to_date = true;
            t.phase = Phase::Done;
        }
        t
    }

    /// What has been done so far (complete once `poll` says `Done`).
    pub fn report(&self) -> &Report {
        &self.report
    }

    fn issue(&mut self, pending: Pending, req: Request) -> Poll {
        let tag = self.next_tag;
        self.next_tag += 1;
        self.pending.insert(tag, pending);
        Poll::Request(tag, req)
    }

    fn in_flight(&self, f: impl Fn(&Pending) -> bool) -> usize {
        self.pending.values().filter(|p| f(p)).count()
    }

    /// The next request to start, `Wait` while answers are outstanding and
    /// nothing else can start, or `Done`. Call repeatedly until `Wait`.
    pub fn poll(&mut self) -> Result<Poll, TransferError> {
        loop {
            match self.phase {
                Phase::Done => return Ok(if self.pending.is_empty() { Poll::Done } else { Poll::Wait }),
                Phase::History => {
                    if let Some(p) = self.poll_history()? {
                        return Ok(p);
                    }
                    if !self.pending.is_empty() {
                        return Ok(Poll::Wait);
                    }
                    self.finish_history()?;
                }
                Phase::Forgotten => {
                    if !self.forgotten_unasked.is_empty() {
                        let n = self.forgotten_unasked.len().min(MAX_IDS);
                        let ids: Vec<Id> = self.forgotten_unasked.drain(..n).collect();
                        return Ok(self.issue(Pending::SourceForgotten(ids.clone()), Request::SourceForgotten(ids)));
                    }
                    if !self.pending.is_empty() {
                        return Ok(Poll::Wait);
                    }
                    self.start_trees();
                }
                Phase::Trees => {
                    if let Some(p) = self.poll_trees() {
                        return Ok(p);
                    }
                    if !self.pending.is_empty() {
                        return Ok(Poll::Wait);
                    }
                    let order = self.diff.missing_nodes_bottom_up();
                    self.node_order = order.iter().map(|id| self.nodes.remove(id).expect("fetched while comparing")).collect();
                    self.report.ids_asked = self.diff.ids_asked;
                    self.phase = Phase::Nodes;
                }
                Phase::Nodes => {
                    if !self.pending.is_empty() {
                        return Ok(Poll::Wait);
                    }
                    // One batch at a time: each may hold parents of the
                    // previous batch's nodes.
                    let batch = frame_of(&mut self.node_order, self.cfg.limits.frame_budget, MAX_IDS);
                    if !batch.is_empty() {
                        self.report.nodes_moved += batch.len() as u64;
                        return Ok(self.issue(Pending::Stored, Request::SinkPutNodes(batch)));
                    }
                    self.phase = Phase::Revisions;
                }
                Phase::Revisions => {
                    if !self.pending.is_empty() {
                        return Ok(Poll::Wait);
                    }
                    // The sink learns what the source forgot before it is
                    // sent those revisions without their files.
                    if !self.forgotten.is_empty() {
                        let n = self.forgotten.len().min(MAX_IDS);
                        let ids: Vec<Id> = self.forgotten.drain(..n).collect();
                        return Ok(self.issue(Pending::Stored, Request::SinkForget(ids)));
                    }
                    // Everything but the last frame's worth goes ahead on
                    // its own; the last batch moves the branch.
                    let batch = frame_of(&mut self.revision_order, self.cfg.limits.frame_budget, MAX_REVISIONS);
                    self.phase = if self.revision_order.is_empty() { Phase::Done } else { Phase::Revisions };
                    if self.phase == Phase::Revisions {
                        return Ok(self.issue(Pending::Stored, Request::SinkPutRevisions(batch)));
                    }
                    let req = Request::SinkUpdateBranch { expected: self.cfg.sink_head, new: self.new_head, revisions: batch };
                    return Ok(self.issue(Pending::Stored, req));
                }
            }
        }
    }

    fn poll_history(&mut self) -> Result<Option<Poll>, TransferError> {
        // Does the source know the sink's head at all? If not, the
        // histories diverged, and a walk of the whole history is spared.
        if let (Some(h), None, None) = (self.cfg.sink_head, self.source_has_sink_head, &self.cfg.partial) {
            if self.in_flight(|p| matches!(p, Pending::SourceHasHead)) == 0 {
                return Ok(Some(self.issue(Pending::SourceHasHead, Request::SourceHasRevisions(vec![h]))));
            }
        }
        if self.diverged {
            // Only to say whether the sink is ahead or the histories forked.
            if self.sink_has_source_head.is_none() && self.in_flight(|p| matches!(p, Pending::SinkHasSourceHead)) == 0 {
                let req = Request::SinkHasRevisions(vec![self.cfg.source_head]);
                return Ok(Some(self.issue(Pending::SinkHasSourceHead, req)));
            }
            return Ok(None);
        }
        if !self.unchecked.is_empty() && self.cfg.partial.is_none() {
            let n = self.unchecked.len().min(MAX_IDS);
            let ids: Vec<Id> = self.unchecked.drain(..n).collect();
            return Ok(Some(self.issue(Pending::SinkHasRevisions(ids.clone()), Request::SinkHasRevisions(ids))));
        }
        let walking = self.in_flight(|p| matches!(p, Pending::History { .. } | Pending::SinkHasRevisions(_)));
        if !self.frontier.is_empty() && walking == 0 {
            let max = if self.cfg.partial.is_some() { 1 } else { self.cfg.limits.history_batch.max(1) };
            // The source returns every `from` first, so ask for no more than `max`.
            let n = self.frontier.len().min(max as usize).min(MAX_IDS);
            let from: Vec<Id> = self.frontier.drain(..n).collect();
            let mut until: Vec<Id> = self.until.iter().copied().collect();
            until.truncate(MAX_IDS);
            let req = Request::SourceHistory { from: from.clone(), until, max };
            return Ok(Some(self.issue(Pending::History { from }, req)));
        }
        Ok(None)
    }

    /// Revisions received: accept only those that may come, verified.
    fn received_revisions(&mut self, from: &[Id], blobs: Vec<Vec<u8>>) -> Result<(), TransferError> {
        let max = if self.cfg.partial.is_some() { 1 } else { self.cfg.limits.history_batch as usize };
        if blobs.len() > max {
            return Err(TransferError::Protocol(format!("asked for at most {max} revisions, got {}", blobs.len())));
        }
        for bytes in blobs {
            let id = revision_id(&bytes);
            if !self.may_receive.contains(&id) || self.until.contains(&id) {
                return Err(TransferError::Protocol(format!("the source sent revision {id}, which was not asked for")));
            }
            if self.received.contains_key(&id) {
                continue;
            }
            let rev = Revision::decode(&bytes)?;
            for p in &rev.parents {
                if Some(*p) == self.cfg.sink_head {
                    self.reached_sink_head = true;
                }
                self.may_receive.insert(*p);
            }
            self.unchecked.push(id);
            self.received.insert(id, (bytes, rev));
        }
        if let Some(missing) = from.iter().find(|id| !self.received.contains_key(id)) {
            return Err(TransferError::MissingRevision(*missing));
        }
        if self.cfg.partial.is_some() {
            self.unchecked.clear();
        }
        Ok(())
    }

    /// The sink's answer about received revisions: follow the parents of
    /// those it lacks (and, while the sink's head has not been met, of all).
    fn sink_has_revisions(&mut self, ids: &[Id], have: &[bool]) {
        let need_ancestry = self.cfg.sink_head.is_some() && !self.reached_sink_head;
        let mut queued: HashSet<Id> = self.frontier.iter().copied().collect();
        for (id, has) in ids.iter().zip(have) {
            if *has {
                self.on_sink.insert(*id);
                if !need_ancestry {
                    continue;
                }
            }
            for p in &self.received[id].1.parents {
                if !self.received.contains_key(p) && !self.until.contains(p) && queued.insert(*p) {
                    self.frontier.push(*p);
                }
            }
        }
    }

    fn finish_history(&mut self) -> Result<(), TransferError> {
        let head = self.cfg.source_head;
        if let Some(partial) = &self.cfg.partial {
            let (_, rev) = &self.received[&head];
            let entries = rev.entries.iter().filter(|e| (partial.keep)(&e.path)).cloned().collect();
            let msg = format!("partial pull of {} ({})", head.to_hex(), partial.description);
            let new = Revision::new(vec![], rev.author.clone(), rev.time, msg, entries)?;
            self.diff = TreeDiff::new(new.entries.iter().map(|e| e.file_id));
            let enc = new.encode();
            self.new_head = revision_id(&enc);
            self.report.head = self.new_head;
            self.report.revisions = 1;
            self.revision_order.push_back(enc);
            self.phase = Phase::Trees;
            return Ok(());
        }
        if let Some(sink_head) = self.cfg.sink_head {
            if self.diverged || !self.reached_sink_head {
                let sink_has_source_head = self.sink_has_source_head.unwrap_or_else(|| self.on_sink.contains(&head));
                return Err(TransferError::Diverged { sink_head, sink_has_source_head });
            }
        }
        self.to_send = self.received.keys().filter(|id| !self.on_sink.contains(id)).copied().collect();
        self.forgotten_unasked = self.to_send.clone();
        self.phase = Phase::Forgotten;
        Ok(())
    }

    /// Compares the trees of the revisions to send, but for those the
    /// source forgot, and orders the revisions parents first.
    fn start_trees(&mut self) {
        let to_send = std::mem::take(&mut self.to_send);
        let forgotten: HashSet<Id> = self.forgotten.iter().copied().collect();
        let with_files = to_send.iter().filter(|id| !forgotten.contains(id));
        self.diff = TreeDiff::new(with_files.flat_map(|id| self.received[id].1.entries.iter().map(|e| e.file_id)));
        self.report.revisions = to_send.len() as u64;
        for id in parents_first(&to_send, |id| &self.received[id].1.parents) {
            let (bytes, _) = self.received.remove(&id).expect("received");
            self.revision_order.push_back(bytes);
        }
        self.received.clear();
        self.phase = Phase::Trees;
    }

    fn poll_trees(&mut self) -> Option<Poll> {
        let asking = |p: &Pending| matches!(p, Pending::Diff(_));
        if self.in_flight(asking) < self.cfg.limits.asks_in_flight {
            if let Some(step) = self.diff.poll(self.cfg.limits.ask_batch) {
                let req = match &step {
                    Step::AskNodes(ids) => Request::SinkHasNodes(ids.clone()),
                    Step::Expand(ids) => Request::SourceNodes(ids.clone()),
                    Step::AskChunks(ids) => Request::SinkHasChunks(ids.clone()),
                };
                return Some(self.issue(Pending::Diff(step), req));
            }
        }
        for (id, size) in self.diff.take_missing_chunks() {
            self.report.raw_bytes_to_move += size;
            self.move_queue_bytes += size;
            self.move_queue.push_back((id, size));
        }
        let limits = &self.cfg.limits;
        let full_batch = self.move_queue_bytes >= limits.move_batch_bytes || self.move_queue.len() >= limits.move_batch_chunks;
        // A partial batch waits for more unless the comparison is over.
        let comparing = !self.diff.is_finished();
        if !self.move_queue.is_empty() && (full_batch || !comparing) && self.in_flight(|p| matches!(p, Pending::Move { .. })) < limits.moves_in_flight {
            let (mut ids, mut raw) = (Vec::new(), 0);
            while let Some(&(id, size)) = self.move_queue.front() {
                if !ids.is_empty() && (raw + size > limits.move_batch_bytes || ids.len() == limits.move_batch_chunks) {
                    break;
                }
                self.move_queue.pop_front();
                raw += size;
                ids.push(id);
            }
            self.move_queue_bytes -= raw;
            return Some(self.issue(Pending::Move { ids: ids.clone(), raw }, Request::MoveChunks(ids)));
        }
        None
    }

    /// The answer to the request with this tag.
    pub fn answer(&mut self, tag: u64, response: Response) -> Result<(), TransferError> {
        let Some(pending) = self.pending.remove(&tag) else {
            return Err(TransferError::Protocol(format!("answer to unknown request {tag}")));
        };
        let mismatch = |what: &str| TransferError::Protocol(format!("expected {what} in answer to request {tag}"));
        let bitmap = |resp: Response, n: usize| match resp {
            Response::Bitmap(bits) if bits.len() == n => Ok(bits),
            Response::Bitmap(bits) => Err(TransferError::Diff(DiffError::AnswerLength { asked: n, got: bits.len() })),
            _ => Err(mismatch("a bitmap")),
        };
        match pending {
            Pending::History { from } => match response {
                // Once diverged, the walk is moot.
                Response::Revisions(_) if self.diverged => {}
                Response::Revisions(blobs) => self.received_revisions(&from, blobs)?,
                _ => return Err(mismatch("revisions")),
            },
            Pending::SourceHasHead => {
                let bits = bitmap(response, 1)?;
                self.source_has_sink_head = Some(bits[0]);
                self.diverged = !bits[0];
            }
            Pending::SinkHasSourceHead => self.sink_has_source_head = Some(bitmap(response, 1)?[0]),
            Pending::SinkHasRevisions(ids) => {
                let bits = bitmap(response, ids.len())?;
                if !self.diverged {
                    self.sink_has_revisions(&ids, &bits);
                }
            }
            Pending::SourceForgotten(ids) => {
                let bits = bitmap(response, ids.len())?;
                // The head is what the sink's branch will name: it must come whole.
                if ids.iter().zip(&bits).any(|(id, gone)| *gone && *id == self.cfg.source_head) {
                    return Err(TransferError::Protocol(format!("the source forgot its own head {}", self.cfg.source_head)));
                }
                self.forgotten.extend(ids.iter().zip(bits).filter(|x| x.1).map(|x| *x.0));
            }
            Pending::Diff(Step::AskNodes(ids)) => self.diff.nodes_known(&ids, &bitmap(response, ids.len())?)?,
            Pending::Diff(Step::AskChunks(ids)) => {
                let bits = bitmap(response, ids.len())?;
                self.report.chunks_already_there += bits.iter().filter(|b| **b).count() as u64;
                self.diff.chunks_known(&ids, &bits)?;
            }
            Pending::Diff(Step::Expand(ids)) => {
                let Response::Nodes(nodes) = response else { return Err(mismatch("nodes")) };
                if nodes.len() != ids.len() {
                    return Err(TransferError::Protocol(format!("asked for {} nodes, got {}", ids.len(), nodes.len())));
                }
                for (id, enc) in ids.into_iter().zip(nodes) {
                    let actual = node_id(&enc);
                    if actual != id {
                        return Err(FormatError::HashMismatch { what: "tree node", id, actual }.into());
                    }
                    self.diff.expanded(id, &Node::decode(&enc)?)?;
                    self.nodes.insert(id, enc);
                }
            }
            Pending::Move { ids, raw } => {
                let Response::Moved { stored_bytes } = response else { return Err(mismatch("a chunk move")) };
                self.report.chunks_moved += ids.len() as u64;
                self.report.raw_bytes_moved += raw;
                self.report.chunk_bytes_moved += stored_bytes;
            }
            Pending::Stored => {
                if response != Response::Stored {
                    return Err(mismatch("a stored acknowledgement"));
                }
            }
        }
        Ok(())
    }
}

/// Takes blobs off the front of `queue` while they fit in one frame of
/// `budget` bytes: at least one (if any), at most `max`.
fn frame_of(queue: &mut VecDeque<Vec<u8>>, budget: usize, max: usize) -> Vec<Vec<u8>> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    while let Some(b) = queue.front() {
        if !batch.is_empty() && (bytes + b.len() + 4 > budget || batch.len() == max) {
            break;
        }
        bytes += b.len() + 4;
        batch.push(queue.pop_front().expect("front exists"));
    }
    batch
}

/// Orders revisions so that each comes after its parents among them.
pub fn parents_first<'a>(ids: &[Id], parents: impl Fn(&Id) -> &'a [Id]) -> Vec<Id> {
    let set: HashSet<Id> = ids.iter().copied().collect();
    let mut children: HashMap<Id, Vec<Id>> = HashMap::new();
    let mut waiting: HashMap<Id, usize> = HashMap::new();
    for id in ids {
        let ps: HashSet<&Id> = parents(id).iter().filter(|p| set.contains(p)).collect();
        waiting.insert(*id, ps.len());
        for p in ps {
            children.entry(*p).or_default().push(*id);
        }
    }
    let mut ready: Vec<Id> = ids.iter().filter(|id| waiting[id] == 0).copied().collect();
    let mut out = Vec::with_capacity(ids.len());
    while let Some(id) = ready.pop() {
        out.push(id);
        for c in children.get(&id).map(Vec::as_slice).unwrap_or_default() {
            let w = waiting.get_mut(c).expect("child counted");
            *w -= 1;
            if *w == 0 {
                ready.push(*c);
            }
        }
    }
    // Ids are hashes of contents that name their parents, so a cycle cannot
    // be built; keep any leftovers rather than drop them.
    let placed: HashSet<Id> = out.iter().copied().collect();
    out.extend(ids.iter().filter(|id| !placed.contains(id)));
    out
}

//! Encodes and decodes a few `ferry/1` frames, then moves a branch between
//! two ends held in memory with `ferry_proto::transfer::Transfer`, the state
//! machine behind push, pull and mirror, and prints its report.
//!
//! Run with `cargo run --release -p ferry-proto --example transfer_in_memory`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::error::Error;

use ferry_core::chunking::chunk_all;
use ferry_core::codec::{decode_verified, Encoder, DEFAULT_ZSTD_LEVEL};
use ferry_core::revision::{revision_id, Entry, Revision};
use ferry_core::tree::{build, node_id, Node};
use ferry_core::Id;
use ferry_proto::transfer::{Config, Limits, Poll, Request, Response, Transfer};
use ferry_proto::{ErrorCode, FrameDecoder, Message};

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// One side of a transfer: what a store holds, in maps.
#[derive(Default)]
struct End {
    revisions: HashMap<Id, Vec<u8>>,
    nodes: HashMap<Id, Vec<u8>>,
    /// Chunk records (compressed when that pays), by chunk id.
    chunks: HashMap<Id, Vec<u8>>,
    branch: Option<Id>,
}

impl End {
    /// Stores the files and a revision of them on top of the branch.
    fn commit(&mut self, files: &[(&str, Vec<u8>)], message: &str) -> Result<Id> {
        let mut encoder = Encoder::new(DEFAULT_ZSTD_LEVEL);
        let mut entries = Vec::new();
        for (path, data) in files {
            let mut leaves = Vec::new();
            for (offset, len) in chunk_all(data) {
                let raw = &data[offset..offset + len];
                let id = Id::of_chunk(raw);
                self.chunks.entry(id).or_insert_with(|| encoder.encode(raw));
                leaves.push((id, len as u64));
            }
            let (root, nodes) = build(&leaves);
            for (id, node) in nodes {
                self.nodes.insert(id, node.encode());
            }
            entries.push(Entry { path: path.to_string(), file_id: root.id, size: root.size, executable: false });
        }
        let revision = Revision::new(self.branch.into_iter().collect(), "example".into(), 1_700_000_000, message.into(), entries)?;
        let encoded = revision.encode();
        let id = revision_id(&encoded);
        self.revisions.insert(id, encoded);
        self.branch = Some(id);
        Ok(id)
    }

    /// Revisions breadth-first from `from` over parents, stopping at `until`.
    fn history(&self, from: &[Id], until: &[Id], max: u32) -> Vec<Vec<u8>> {
        let mut seen: HashSet<Id> = until.iter().copied().collect();
        let mut queue: VecDeque<Id> = from.iter().copied().collect();
        let mut out = Vec::new();
        while let Some(id) = queue.pop_front() {
            if out.len() >= max as usize || !seen.insert(id) {
                continue;
            }
            if let Some(encoded) = self.revisions.get(&id) {
                queue.extend(Revision::decode(encoded).map(|r| r.parents).unwrap_or_default());
                out.push(encoded.clone());
            }
        }
        out
    }

    /// Stores nodes, refusing one whose children are not stored: the rule
    /// that lets "I have this node" mean "I have its whole subtree".
    fn put_nodes(&mut self, nodes: &[Vec<u8>]) -> Result<()> {
        for encoded in nodes {
            let node = Node::decode(encoded)?;
            for child in &node.children {
                let stored = if node.height == 1 { self.chunks.contains_key(&child.id) } else { self.nodes.contains_key(&child.id) };
                if !stored {
                    return Err(format!("node refused: child {} is missing", child.id).into());
                }
            }
            self.nodes.insert(node_id(encoded), encoded.clone());
        }
        Ok(())
    }

    fn put_revisions(&mut self, revisions: &[Vec<u8>]) {
        for encoded in revisions {
            self.revisions.insert(revision_id(encoded), encoded.clone());
        }
    }
}

/// Answers one request from the two ends.
fn answer(source: &End, sink: &mut End, request: Request) -> Result<Response> {
    let bitmap = |ids: &[Id], has: &dyn Fn(&Id) -> bool| Response::Bitmap(ids.iter().map(has).collect());
    Ok(match request {
        Request::SourceHistory { from, until, max } => Response::Revisions(source.history(&from, &until, max)),
        Request::SourceHasRevisions(ids) => bitmap(&ids, &|id| source.revisions.contains_key(id)),
        Request::SourceNodes(ids) => {
            Response::Nodes(ids.iter().map(|id| source.nodes.get(id).cloned().ok_or("node not on the source")).collect::<Result<_, _>>()?)
        }
        // These ends never forget a revision (retention), so every revision
        // comes with its files.
        Request::SourceForgotten(ids) => bitmap(&ids, &|_| false),
        Request::SinkForget(_) => return Err("the source forgot nothing".into()),
        Request::SinkHasRevisions(ids) => bitmap(&ids, &|id| sink.revisions.contains_key(id)),
        Request::SinkHasNodes(ids) => bitmap(&ids, &|id| sink.nodes.contains_key(id)),
        Request::SinkHasChunks(ids) => bitmap(&ids, &|id| sink.chunks.contains_key(id)),
        Request::MoveChunks(ids) => {
            let mut stored_bytes = 0;
            for id in ids {
                let record = source.chunks.get(&id).ok_or("chunk not on the source")?;
                // The sink verifies every record before it stores it.
                decode_verified(&id, record)?;
                stored_bytes += record.len() as u64;
                sink.chunks.insert(id, record.clone());
            }
            Response::Moved { stored_bytes }
        }
        Request::SinkPutNodes(nodes) => {
            sink.put_nodes(&nodes)?;
            Response::Stored
        }
        Request::SinkPutRevisions(revisions) => {
            sink.put_revisions(&revisions);
            Response::Stored
        }
        Request::SinkUpdateBranch { expected, new, revisions } => {
            sink.put_revisions(&revisions);
            if sink.branch != expected {
                return Err("the sink's branch moved meanwhile: conflict".into());
            }
            sink.branch = Some(new);
            Response::Stored
        }
    })
}

fn frames() -> Result<()> {
    let ask = Message::HaveChunks { repo: "org/model".into(), ids: vec![Id::of_chunk(b"a"), Id::of_chunk(b"b")] };
    let refusal = Message::Error { code: ErrorCode::Forbidden, message: "you may read org/model but not write to it".into() };
    let mut stream = ask.to_frame();
    refusal.encode(&mut stream);
    println!("two frames: {} bytes; the first header (type, then length LE): {:02x?}", stream.len(), &stream[..5]);
    // A transport hands over whatever arrived; the decoder reassembles frames.
    let mut decoder = FrameDecoder::new();
    for piece in stream.chunks(10) {
        decoder.push(piece);
        while let Some((kind, payload)) = decoder.next_frame()? {
            let message = Message::decode(kind, &payload)?;
            println!("frame {kind:#04x}, {} bytes: {message:?}", payload.len());
        }
    }
    decoder.finish()?;
    Ok(())
}

fn main() -> Result<()> {
    frames()?;

    // The sink has version 1; the source has version 1 and version 2, which
    // changes 16 bytes of the first file and adds a second one.
    let mut x = 7u64;
    let weights: Vec<u8> = (0..3_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    let (mut source, mut sink) = (End::default(), End::default());
    let files_v1 = [("model.bin", weights.clone())];
    source.commit(&files_v1, "version 1")?;
    sink.commit(&files_v1, "version 1")?;
    let mut tuned = weights;
    tuned[2_000_000..2_000_016].copy_from_slice(b"fine-tuned bytes");
    let head = source.commit(&[("model.bin", tuned), ("README.md", b"# A model\n".to_vec())], "version 2")?;

    let config = Config { source_head: head, sink_head: sink.branch, sink_hints: vec![], partial: None, limits: Limits::default() };
    let mut transfer = Transfer::new(config);
    // Start every request the machine allows, then answer them (a real
    // driver runs them concurrently and answers in any order).
    let mut outstanding = VecDeque::new();
    loop {
        match transfer.poll()? {
            Poll::Request(tag, request) => outstanding.push_back((tag, request)),
            Poll::Wait => {
                let (tag, request) = outstanding.pop_front().ok_or("the transfer waits with nothing outstanding")?;
                let response = answer(&source, &mut sink, request)?;
                transfer.answer(tag, response)?;
            }
            Poll::Done => break,
        }
    }
    println!();
    println!("{:#?}", transfer.report());
    if sink.branch != Some(head) {
        return Err("the sink's branch did not reach the source's head".into());
    }
    println!("the sink's branch is at {head}; it holds {} of the source's {} chunks", sink.chunks.len(), source.chunks.len());
    Ok(())
}

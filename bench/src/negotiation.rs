//! `ferry-negotiation`: what it costs two hubs to agree on what one lacks,
//! at hub scale, without the data.
//!
//! Two in-memory ends hold the chunk ids and content-defined trees of
//! `--files` files totalling `--chunks` chunks (64 KiB each, nominally).
//! The sink has revision R1; the source has R2, which differs from R1 in
//! `--changed` of its chunks, arranged as `--shape`:
//! - `files`: whole new files (a new shard, an appended dataset part);
//! - `runs`: contiguous runs of 64 chunks rewritten inside existing files
//!   (changed tensors: what fine-tunes do);
//! - `scattered`: single chunks replaced uniformly at random (the worst
//!   case for a tree comparison).
//!
//! The real transfer engine (`ferry_proto::transfer`) then runs between
//! them, every request answered at once, a round trip per wave of
//! requests. It prints one JSON line:
//! - `negotiation_bytes`: the questions (ids asked) and their answers
//!   (bitmaps), and the revision bodies;
//! - `tree_bytes`: the tree nodes the sink lacked, which it stores as part
//!   of the new revision whatever the method (a mirror relaying between two
//!   hubs carries them twice: in from the source, out to the sink);
//! - `round_trips`, chunks found missing, and the data they hold.

use std::collections::{HashMap, HashSet};

use anyhow::{ensure, Result};
use clap::{Parser, ValueEnum};
use ferry_core::revision::{revision_id, Entry, Revision};
use ferry_core::tree::build;
use ferry_core::Id;
use ferry_proto::transfer::{Config, Limits, Poll, Request, Response, Transfer};

#[derive(Clone, Copy, ValueEnum)]
enum Shape {
    Files,
    Runs,
    Scattered,
}

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 10_000_000)]
    chunks: u64,
    #[arg(long, default_value_t = 100)]
    files: u64,
    /// Fraction of the chunks that differ.
    #[arg(long, default_value_t = 0.01)]
    changed: f64,
    #[arg(long, value_enum, default_value = "runs")]
    shape: Shape,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

const CHUNK: u64 = 65536;

fn chunk_id(n: u64) -> Id {
    Id::of_chunk(&n.to_le_bytes())
}

#[derive(Default)]
struct End {
    nodes: HashMap<Id, Vec<u8>>,
    chunks: HashSet<Id>,
    revisions: HashMap<Id, Vec<u8>>,
}

impl End {
    /// Adds a file's chunks and tree; returns its entry.
    fn file(&mut self, path: String, chunks: &[(Id, u64)]) -> Entry {
        let (root, nodes) = build(chunks);
        for (id, n) in nodes {
            self.nodes.entry(id).or_insert_with(|| n.encode());
        }
        self.chunks.extend(chunks.iter().map(|c| c.0));
        Entry { path, file_id: root.id, size: root.size, executable: false }
    }
    fn revision(&mut self, parents: Vec<Id>, entries: Vec<Entry>) -> Result<Id> {
        let rev = Revision::new(parents, "bench".into(), 0, "r".into(), entries)?;
        let enc = rev.encode();
        let id = revision_id(&enc);
        self.revisions.insert(id, enc);
        Ok(id)
    }
}

/// xorshift64*.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn main() -> Result<()> {
    let a = Args::parse();
    ensure!(a.files > 0 && a.chunks >= a.files, "--chunks must be at least --files");
    let per_file = a.chunks / a.files;
    let changed = (a.chunks as f64 * a.changed).round() as u64;
    let mut rng = Rng(a.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut next_new = 1u64 << 40;
    let mut files: Vec<Vec<(Id, u64)>> = (0..a.files).map(|f| (0..per_file).map(|i| (chunk_id(f * per_file + i), CHUNK)).collect()).collect();
    // The sink: R1. The source: R1 and R2.
    let mut sink = End::default();
    let entries: Vec<Entry> = files.iter().enumerate().map(|(i, c)| sink.file(format!("shard-{i:05}"), c)).collect();
    let r1 = sink.revision(vec![], entries.clone())?;
    let mut source = End { nodes: sink.nodes.clone(), chunks: sink.chunks.clone(), revisions: sink.revisions.clone() };
    let mut new_files = Vec::new();
    match a.shape {
        Shape::Files => {
            let mut left = changed;
            while left > 0 {
                let n = left.min(per_file);
                new_files.push((0..n).map(|_| (chunk_id(inc(&mut next_new)), CHUNK)).collect::<Vec<_>>());
                left -= n;
            }
        }
        Shape::Runs | Shape::Scattered => {
            let run = if matches!(a.shape, Shape::Runs) { 64.min(per_file) } else { 1 };
            let mut left = changed;
            while left > 0 {
                let f = rng.below(a.files) as usize;
                let start = rng.below(per_file - run + 1) as usize;
                for c in &mut files[f][start..start + run as usize] {
                    *c = (chunk_id(inc(&mut next_new)), CHUNK);
                }
                left = left.saturating_sub(run);
            }
        }
    }
    let mut entries2: Vec<Entry> = files.iter().enumerate().map(|(i, c)| source.file(format!("shard-{i:05}"), c)).collect();
    for (i, c) in new_files.iter().enumerate() {
        entries2.push(source.file(format!("new-{i:05}"), c));
    }
    let r2 = source.revision(vec![r1], entries2)?;
    let missing_truth: u64 = source.chunks.iter().filter(|c| !sink.chunks.contains(c)).count() as u64;

    let mut t = Transfer::new(Config { source_head: r2, sink_head: Some(r1), sink_hints: vec![], partial: None, limits: Limits::default() });
    let (mut waves, mut ids_asked, mut bitmap_bytes, mut node_bytes, mut revision_bytes) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut missing = 0u64;
    loop {
        let mut wave = Vec::new();
        loop {
            match t.poll()? {
                Poll::Request(tag, req) => wave.push((tag, req)),
                Poll::Wait => break,
                Poll::Done => {
                    let raw = missing * CHUNK;
                    println!(
                        "{}",
                        serde_json::json!({
                            "chunks": a.chunks, "files": a.files, "changed": a.changed, "shape": a.shape.to_possible_value().map(|v| v.get_name().to_owned()),
                            "chunks_missing": missing, "chunks_missing_truth": missing_truth, "data_bytes": raw,
                            "ids_asked": ids_asked, "negotiation_bytes": ids_asked * 32 + bitmap_bytes + revision_bytes,
                            "tree_bytes": node_bytes, "round_trips": waves,
                            "negotiation_pct_of_data": 100.0 * (ids_asked * 32 + bitmap_bytes + revision_bytes) as f64 / raw.max(1) as f64,
                            "tree_pct_of_data": 100.0 * node_bytes as f64 / raw.max(1) as f64,
                        })
                    );
                    ensure!(missing == missing_truth, "the engine found {missing} missing chunks, truly {missing_truth}");
                    return Ok(());
                }
            }
        }
        // Moving chunks and storing are data, not negotiation: they do not
        // count as round trips here.
        if wave.iter().any(|(_, r)| !matches!(r, Request::MoveChunks(_) | Request::SinkPutNodes(_) | Request::SinkUpdateBranch { .. })) {
            waves += 1;
        }
        for (tag, req) in wave {
            let bits = |have: &dyn Fn(&Id) -> bool, ids: &[Id], bytes: &mut u64| {
                *bytes += 4 + ids.len().div_ceil(8) as u64;
                Response::Bitmap(ids.iter().map(have).collect())
            };
            let resp = match req {
                Request::SourceHistory { from, .. } => {
                    let revs: Vec<Vec<u8>> = from.iter().filter_map(|id| source.revisions.get(id).cloned()).collect();
                    revision_bytes += revs.iter().map(|r| r.len() as u64).sum::<u64>();
                    Response::Revisions(revs)
                }
                Request::SourceHasRevisions(ids) => bits(&|i| source.revisions.contains_key(i), &ids, &mut bitmap_bytes),
                Request::SinkHasRevisions(ids) => bits(&|i| sink.revisions.contains_key(i), &ids, &mut bitmap_bytes),
                Request::SinkHasNodes(ids) => {
                    ids_asked += ids.len() as u64;
                    bits(&|i| sink.nodes.contains_key(i), &ids, &mut bitmap_bytes)
                }
                Request::SinkHasChunks(ids) => {
                    ids_asked += ids.len() as u64;
                    bits(&|i| sink.chunks.contains(i), &ids, &mut bitmap_bytes)
                }
                Request::SourceNodes(ids) => Response::Nodes(ids.iter().map(|i| source.nodes[i].clone()).collect()),
                Request::MoveChunks(ids) => {
                    missing += ids.len() as u64;
                    Response::Moved { stored_bytes: ids.len() as u64 * CHUNK }
                }
                Request::SinkPutNodes(nodes) => {
                    node_bytes += nodes.iter().map(|n| n.len() as u64).sum::<u64>();
                    Response::Stored
                }
                Request::SinkPutRevisions(revs) | Request::SinkUpdateBranch { revisions: revs, .. } => {
                    revision_bytes += revs.iter().map(|r| r.len() as u64).sum::<u64>();
                    Response::Stored
                }
            };
            t.answer(tag, resp)?;
        }
    }
}

fn inc(n: &mut u64) -> u64 {
    *n += 1;
    *n
}

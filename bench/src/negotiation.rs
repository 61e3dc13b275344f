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

use anyhow::{ensure, Result};
use clap::{Parser, ValueEnum};
use ferry_core::revision::{Entry, Revision};
use ferry_core::Id;
use ferry_proto::transfer::{Config, Limits, Poll, Request, Transfer};
use ferry_testkit::transfer::{chunk_id, MemoryEnd, MemoryLink, SinkRules, CHUNK_BYTES as CHUNK};
use ferry_testkit::StarRng;

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

/// Stores a revision of `entries` on `end`; returns its id.
fn add_revision(end: &mut MemoryEnd, parents: Vec<Id>, entries: Vec<Entry>) -> Result<Id> {
    Ok(end.add_revision(&Revision::new(parents, "bench".into(), 0, "r".into(), entries)?))
}

fn main() -> Result<()> {
    let a = Args::parse();
    ensure!(a.files > 0 && a.chunks >= a.files, "--chunks must be at least --files");
    let per_file = a.chunks / a.files;
    let changed = (a.chunks as f64 * a.changed).round() as u64;
    let mut rng = StarRng::new(a.seed);
    let mut next_new = 1u64 << 40;
    let mut files: Vec<Vec<(Id, u64)>> = (0..a.files).map(|f| (0..per_file).map(|i| (chunk_id(f * per_file + i), CHUNK)).collect()).collect();
    // The sink: R1. The source: R1 and R2.
    let mut sink = MemoryEnd::default();
    let entries: Vec<Entry> = files.iter().enumerate().map(|(i, c)| sink.add_file(format!("shard-{i:05}"), c)).collect();
    let r1 = add_revision(&mut sink, vec![], entries)?;
    sink.branch = Some(r1);
    let mut source = sink.clone();
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
    let mut entries2: Vec<Entry> = files.iter().enumerate().map(|(i, c)| source.add_file(format!("shard-{i:05}"), c)).collect();
    for (i, c) in new_files.iter().enumerate() {
        entries2.push(source.add_file(format!("new-{i:05}"), c));
    }
    let r2 = add_revision(&mut source, vec![r1], entries2)?;
    let missing_truth: u64 = source.chunks.iter().filter(|c| !sink.chunks.contains(c)).count() as u64;

    let mut t = Transfer::new(Config { source_head: r2, sink_head: Some(r1), sink_hints: vec![], partial: None, limits: Limits::default() });
    let mut link = MemoryLink::new(&source, &mut sink, SinkRules::Enforce);
    let mut waves = 0u64;
    loop {
        let mut wave = Vec::new();
        loop {
            match t.poll()? {
                Poll::Request(tag, req) => wave.push((tag, req)),
                Poll::Wait => break,
                Poll::Done => {
                    let tally = &link.tally;
                    let (missing, ids_asked, node_bytes) = (tally.moved.len() as u64, tally.ids_asked, tally.node_bytes);
                    let negotiation_bytes = ids_asked * 32 + tally.bitmap_bytes + tally.revision_bytes;
                    let raw = missing * CHUNK;
                    println!(
                        "{}",
                        serde_json::json!({
                            "chunks": a.chunks, "files": a.files, "changed": a.changed, "shape": a.shape.to_possible_value().map(|v| v.get_name().to_owned()),
                            "chunks_missing": missing, "chunks_missing_truth": missing_truth, "data_bytes": raw,
                            "ids_asked": ids_asked, "negotiation_bytes": negotiation_bytes,
                            "tree_bytes": node_bytes, "round_trips": waves,
                            "negotiation_pct_of_data": 100.0 * negotiation_bytes as f64 / raw.max(1) as f64,
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
            t.answer(tag, link.answer(req))?;
        }
    }
}

fn inc(n: &mut u64) -> u64 {
    *n += 1;
    *n
}

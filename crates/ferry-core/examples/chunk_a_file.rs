//! Cuts a generated 8 MiB "weights" file into content-defined chunks, stores
//! each as a chunk record, builds the file's tree, and shows that editing a
//! few bytes changes only a few chunks and tree nodes.
//!
//! Run with `cargo run --release -p ferry-core --example chunk_a_file`.

use std::collections::HashSet;

use ferry_core::chunking::{self, MAX_CHUNK, MIN_CHUNK};
use ferry_core::codec::{self, Encoder, DEFAULT_ZSTD_LEVEL};
use ferry_core::tree::{Node, TreeBuilder};
use ferry_core::Id;

/// What ferry derives from one file's bytes.
struct Chunked {
    chunk_ids: Vec<Id>,
    chunk_sizes: Vec<usize>,
    record_bytes: usize,
    file_id: Id,
    node_ids: HashSet<Id>,
    height: u8,
}

/// Streams `data` through the chunker in 1 MiB reads (as ingest reads a
/// file), names and encodes each chunk, and feeds it to the tree builder.
fn chunk_file(data: &[u8]) -> Chunked {
    let mut encoder = Encoder::new(DEFAULT_ZSTD_LEVEL);
    let mut builder = TreeBuilder::new();
    let mut node_ids = HashSet::new();
    let mut height = 0;
    let mut keep_node = |node: &Node, id: Id| {
        node_ids.insert(id);
        height = height.max(node.height);
    };
    let (mut chunk_ids, mut chunk_sizes, mut record_bytes) = (Vec::new(), Vec::new(), 0);
    // `start` is where the unconsumed bytes begin, `read` how far we have read.
    let (mut start, mut read) = (0, 0);
    let mut chunker = chunking::Chunker::new(&data[..data.len().min(ferry_core::safetensors::LAYOUT_PREFIX)]);
    while start < data.len() {
        read = (read + (1 << 20)).min(data.len());
        let eof = read == data.len();
        let cuts = chunker.cut(&data[start..read], eof);
        let mut chunk_start = start;
        for end in cuts.ends {
            let raw = &data[chunk_start..start + end];
            let id = Id::of_chunk(raw);
            let record = encoder.encode(raw);
            // What a store or a peer does with a record it receives.
            let decoded = codec::decode_verified(&id, &record).expect("a record we just encoded decodes to its chunk");
            assert_eq!(decoded, raw);
            record_bytes += record.len();
            builder.push_chunk(id, raw.len() as u64, &mut keep_node);
            chunk_ids.push(id);
            chunk_sizes.push(raw.len());
            chunk_start = start + end;
        }
        start += cuts.consumed;
    }
    let root = builder.finish(&mut keep_node);
    Chunked { chunk_ids, chunk_sizes, record_bytes, file_id: root.id, node_ids, height }
}

/// Bytes shaped like bf16 weights: a random mantissa byte and an exponent
/// byte from a narrow range, so zstd has something to gain, as on real
/// models. The generator is the xorshift64 of `protocol/tree.md`.
fn generate(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let byte = (x >> 32) as u8;
            if i % 2 == 1 {
                0x3c + (byte & 3)
            } else {
                byte
            }
        })
        .collect()
}

fn main() {
    let data = generate(8 << 20, 42);
    let v1 = chunk_file(&data);
    let n = v1.chunk_sizes.len();
    let (smallest, largest) = (v1.chunk_sizes.iter().min().copied().unwrap_or(0), v1.chunk_sizes.iter().max().copied().unwrap_or(0));
    println!("file: {} bytes", data.len());
    println!("chunks: {n}, {} to {} bytes, {} on average (limits {MIN_CHUNK} to {MAX_CHUNK})", smallest, largest, data.len() / n.max(1));
    println!("records: {} bytes stored ({:.1}% of the file)", v1.record_bytes, 100.0 * v1.record_bytes as f64 / data.len() as f64);
    println!("tree: {} nodes, height {}", v1.node_ids.len(), v1.height);
    println!("file id: {}", v1.file_id);

    // An edit in place (8 bytes) and an insert (14 bytes) a few MiB apart.
    let mut edited = data.clone();
    edited[1_000_000..1_000_008].copy_from_slice(b"tweaked!");
    edited.splice(5_000_000..5_000_000, b"inserted bytes".iter().copied());
    let v2 = chunk_file(&edited);
    let old_chunks: HashSet<Id> = v1.chunk_ids.iter().copied().collect();
    let new_chunks = v2.chunk_ids.iter().filter(|id| !old_chunks.contains(id)).count();
    let new_nodes = v2.node_ids.difference(&v1.node_ids).count();
    println!();
    println!("after changing 8 bytes and inserting 14:");
    println!("chunks: {} of {} are new", new_chunks, v2.chunk_ids.len());
    println!("tree: {} of {} nodes are new", new_nodes, v2.node_ids.len());
    println!("file id: {}", v2.file_id);
    assert_ne!(v1.file_id, v2.file_id);
    // Each edit touches the chunk it lands in and at most the next one.
    assert!(new_chunks <= 4, "{new_chunks} new chunks");
}

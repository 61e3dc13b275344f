//! Naming a file without storing it: the ingest pipeline's reading and
//! cutting, then only hashing and building the tree. An upload learns what
//! a hub lacks from this and reads the chunks it must send back from the
//! file; a download finds the chunks a file on disk already holds.

use std::io::{self, Read};

use crossbeam_channel::bounded;
use ferry_core::tree::{Node, TreeBuilder};
use ferry_core::Id;
use rayon::prelude::*;

use crate::cut;
use crate::ingest::IngestProgress;

/// One chunk of a scanned file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScannedChunk {
    /// The chunk's id.
    pub id: Id,
    /// Where it begins in the file.
    pub offset: u64,
    /// Its length.
    pub len: u32,
    /// The element width the codec should assume (1: bytes).
    pub width: u8,
}

/// A file cut, hashed and named.
#[derive(Debug, Clone, Default)]
pub struct Scanned {
    /// The root of the file's tree: its id.
    pub file_id: Id,
    /// The file's length in bytes.
    pub size: u64,
    /// Its chunks, in file order.
    pub chunks: Vec<ScannedChunk>,
    /// Every node of its tree with its id, children before parents (the
    /// root last). Empty unless asked for.
    pub nodes: Vec<(Id, Vec<u8>)>,
}

/// Cuts and hashes everything `reader` yields (hashing on every core),
/// keeping the tree's encoded nodes if `keep_nodes`. Memory: two segments
/// in flight, plus about 50 bytes per chunk and 40 per chunk in nodes.
pub fn scan<R: Read + Send>(reader: R, keep_nodes: bool, progress: &dyn IngestProgress) -> io::Result<Scanned> {
    scan_each(reader, keep_nodes, progress, &mut |_, _| Ok(()))
}

/// [`scan`], handing each chunk with its bytes (which hash to its id) to
/// `each` as it goes, in file order.
pub fn scan_each<R: Read + Send>(
    reader: R,
    keep_nodes: bool,
    progress: &dyn IngestProgress,
    each: &mut dyn FnMut(&ScannedChunk, &[u8]) -> io::Result<()>,
) -> io::Result<Scanned> {
    let (free_tx, free_rx) = bounded::<Vec<u8>>(4);
    std::thread::scope(|s| {
        let segments = cut::segments(s, reader, free_rx);
        let mut out = Scanned::default();
        let mut builder = TreeBuilder::new();
        let mut keep = |n: &Node, id: Id| {
            if keep_nodes {
                out.nodes.push((id, n.encode()));
            }
        };
        let mut chunks = Vec::new();
        for seg in segments {
            let seg = seg?;
            let data = seg.data();
            let ids: Vec<Id> = seg.ranges().par_iter().map(|&(a, b)| Id::of_chunk(&data[a..b])).collect();
            let mut start = 0;
            for ((id, &end), &width) in ids.into_iter().zip(&seg.ends).zip(&seg.widths) {
                let len = end - start;
                builder.push_chunk(id, len as u64, &mut keep);
                let chunk = ScannedChunk { id, offset: seg.offset + start as u64, len: len as u32, width };
                each(&chunk, &data[start..end])?;
                chunks.push(chunk);
                start = end;
            }
            out.size += seg.len as u64;
            progress.advance(seg.len as u64, 0, 0);
            let _ = free_tx.try_send(seg.buf);
        }
        let root = builder.finish(&mut keep);
        out.file_id = root.id;
        out.chunks = chunks;
        Ok(out)
    })
}

/// The record a store writes for a chunk that decodes alone (byte planes
/// for a `width` of 2, 4 or 8, else zstd or raw), made with this thread's
/// encoder: what an upload sends for a scanned chunk.
pub fn encode_chunk(raw: &[u8], width: u8) -> Vec<u8> {
    crate::ingest::ENCODER.with_borrow_mut(|enc| enc.encode_hinted(raw, width))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_names_a_file_as_its_ingest_does() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::init(dir.path()).unwrap();
        let session = store.write_session();
        use ferry_testkit::{bf16_weights, noise, safetensors_file};
        let (a, b) = (bf16_weights(3 << 20, 1), bf16_weights(1000, 2));
        let weights = safetensors_file("scan", &[("a", &a), ("b", &b)]);
        for data in [noise(3 * cut::SEGMENT_LEN + 1234, 5), weights, Vec::new()] {
            let got = scan(&data[..], true, &()).unwrap();
            let ingested = session.ingest(&data[..], &()).unwrap();
            assert_eq!((got.file_id, got.size, got.chunks.len() as u64), (ingested.file_id, ingested.size, ingested.chunks));
            assert_eq!(got.nodes.last().map(|n| n.0), Some(got.file_id), "the root comes last");
            let mut at = 0;
            for c in &got.chunks {
                assert_eq!(c.offset, at);
                assert_eq!(c.id, Id::of_chunk(&data[at as usize..][..c.len as usize]));
                at += c.len as u64;
            }
            assert_eq!(at, data.len() as u64);
            for (id, node) in &got.nodes {
                assert_eq!(*id, ferry_core::tree::node_id(node));
                assert!(store.has_nodes(&[*id]).unwrap()[0], "the ingest stored the same node");
            }
        }
    }
}

//! Chunking: where a file's chunks begin and end.
//!
//! Most files are cut by content with FastCDC (2020), streaming over
//! buffers. A safetensors file is cut by its layout first
//! ([`crate::safetensors`]): every tensor of at least [`PIECE`] bytes is cut
//! into fixed pieces counted from the tensor's own start, so the same tensor
//! gives the same chunks wherever it sits (a grown header, another shard),
//! and the pieces of one version line up with the pieces of the next, which
//! is what the tensor codecs need. Everything else in the file (the header,
//! small tensors, gaps) is cut by FastCDC, run by run.
//!
//! The sizes live here and nowhere else. They were chosen by measurement
//! (see ARCHITECTURE.md, "Chunk sizes"): 64 KiB average keeps the per-chunk
//! overhead (an index entry, a tree leaf, a wire id) under 0.2% of the data
//! while still isolating a changed tensor or a shifted header to a chunk or
//! two; the 16 KiB minimum lets FastCDC skip hashing the first quarter of
//! every chunk; the 256 KiB maximum bounds every buffer that holds a chunk.
//!
//! The parameters and the exact algorithm (the `fastcdc` crate's
//! `v2020::FastCDC`, normalisation level 1, no seed, and the tensor rule)
//! are part of the format: `protocol/tree.md`, section 1. Changing any of
//! them changes file ids.

use crate::safetensors::Layout;

/// Smallest chunk FastCDC emits (except a run's last chunk), in bytes.
pub const MIN_CHUNK: usize = 16 * 1024;
/// The average chunk size FastCDC aims for, in bytes.
pub const AVG_CHUNK: usize = 64 * 1024;
/// Largest chunk, in bytes: a hard limit that every decoder enforces on a
/// chunk record's raw length (see [`crate::codec::MAX_RECORD_LEN`]).
pub const MAX_CHUNK: usize = 256 * 1024;
/// The piece a large tensor is cut into, counted from the tensor's start;
/// a last piece shorter than [`MIN_CHUNK`] joins the one before it.
pub const PIECE: usize = 64 * 1024;

/// Cut points found in one buffer, as returned by [`Chunker::cut`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cuts {
    /// Exclusive end offset of each final chunk, ascending, relative to the
    /// buffer start. The first chunk starts at 0.
    pub ends: Vec<usize>,
    /// For each chunk, the element width of the tensor it is a piece of
    /// (1, 2, 4 or 8), or 0 if it is not a piece of one tensor of a known
    /// dtype: a hint for the codec, not part of the chunk's identity.
    pub widths: Vec<u8>,
    /// Bytes of the buffer covered by `ends` (0 if none). The rest must be
    /// carried into the next call, followed by more data.
    pub consumed: usize,
}

/// A stretch of the file cut one way.
#[derive(Debug, Clone, Copy)]
struct Span {
    /// Exclusive end offset in the file (`u64::MAX` for the last span).
    end: u64,
    /// Where a large tensor starts, with its element width; None for a run
    /// cut by FastCDC.
    tensor: Option<(u64, u8)>,
}

/// Whether the rule cuts `tensor` into fixed pieces (a large tensor)
/// rather than leaving it to FastCDC with its neighbours.
pub fn cut_in_pieces(tensor: &crate::safetensors::Tensor) -> bool {
    tensor.len >= PIECE as u64
}

/// Cuts one file as it streams past, by the rule of `protocol/tree.md`.
#[derive(Debug, Clone)]
pub struct Chunker {
    layout: Option<Layout>,
    spans: Vec<Span>,
    span: usize,
    /// File offset of the next buffer's first byte.
    pos: u64,
}

impl Chunker {
    /// A chunker for the file that starts with `prefix`, which must be the
    /// first [`crate::safetensors::LAYOUT_PREFIX`] bytes of the file, or the
    /// whole file if it is shorter (the layout is decided from them).
    pub fn new(prefix: &[u8]) -> Chunker {
        let mut spans = Vec::new();
        let layout = Layout::parse(prefix);
        if let Some(layout) = &layout {
            let mut at = 0;
            for t in layout.tensors.iter().filter(|t| cut_in_pieces(t)) {
                if at < t.start {
                    spans.push(Span { end: t.start, tensor: None });
                }
                at = t.start + t.len;
                spans.push(Span { end: at, tensor: Some((t.start, t.width)) });
            }
        }
        spans.push(Span { end: u64::MAX, tensor: None });
        Chunker { layout, spans, span: 0, pos: 0 }
    }

    /// The file's safetensors layout, if it was cut by one.
    pub fn layout(&self) -> Option<&Layout> {
        self.layout.as_ref()
    }

    /// Finds the chunk boundaries in `buf`, which holds the file's bytes
    /// from the end of the last call's `consumed` on.
    ///
    /// A cut is final only when everything that could influence it was
    /// seen: a whole piece, at least `MAX_CHUNK` bytes from a FastCDC
    /// chunk's start, the end of its run, or the end of the file (`eof`).
    /// So the boundaries do not depend on how the file was split into
    /// buffers: feed the unconsumed tail again, followed by the next bytes.
    pub fn cut(&mut self, buf: &[u8], eof: bool) -> Cuts {
        let mut out = Cuts { ends: Vec::with_capacity(buf.len() / AVG_CHUNK + 1), widths: Vec::new(), consumed: 0 };
        let mut off = 0;
        loop {
            let span = self.spans[self.span];
            let at = self.pos + off as u64;
            let avail = (buf.len() - off) as u64;
            let left = span.end - at;
            match span.tensor {
                Some((start, width)) => {
                    // Every cut lands on a piece boundary of this tensor.
                    loop {
                        let at = self.pos + off as u64;
                        let rest = span.end - at;
                        let have = (buf.len() - off) as u64;
                        if rest == 0 || have == 0 {
                            break;
                        }
                        debug_assert_eq!((at - start) % PIECE as u64, 0);
                        let piece = if rest < (PIECE + MIN_CHUNK) as u64 { rest } else { PIECE as u64 };
                        // The file may end inside the tensor, whatever the header said.
                        let n = if piece <= have {
                            piece
                        } else if eof {
                            have
                        } else {
                            0
                        };
                        if n == 0 {
                            break;
                        }
                        off += n as usize;
                        out.ends.push(off);
                        out.widths.push(width);
                    }
                }
                None => {
                    let run = left.min(avail) as usize;
                    let c = cut_plain(&buf[off..off + run], eof || left <= avail);
                    out.ends.extend(c.ends.iter().map(|e| off + e));
                    out.widths.resize(out.ends.len(), 0);
                    off += c.consumed;
                }
            }
            if self.pos + off as u64 == span.end {
                self.span += 1;
            } else {
                break;
            }
        }
        out.consumed = off;
        self.pos += off as u64;
        out
    }
}

/// FastCDC over `buf`, which starts at a chunk boundary of a run; `end`:
/// the run (or the file) ends with `buf`.
fn cut_plain(buf: &[u8], end: bool) -> Cuts {
    let mut ends = Vec::with_capacity(buf.len() / AVG_CHUNK + 1);
    let mut consumed = 0;
    if !buf.is_empty() {
        let cdc = fastcdc::v2020::FastCDC::new(buf, MIN_CHUNK as u32, AVG_CHUNK as u32, MAX_CHUNK as u32);
        for chunk in cdc {
            if !end && buf.len() - chunk.offset < MAX_CHUNK {
                break;
            }
            consumed = chunk.offset + chunk.length;
            ends.push(consumed);
        }
    }
    Cuts { ends, widths: Vec::new(), consumed }
}

/// Chunks a whole in-memory file: (offset, length, element width) of each
/// chunk, in order, covering `data` exactly (none for an empty file). The
/// same boundaries as streaming the file through a [`Chunker`] in any
/// pieces.
pub fn chunk_all(data: &[u8]) -> Vec<(usize, usize)> {
    chunk_all_with_widths(data).into_iter().map(|(o, l, _)| (o, l)).collect()
}

/// [`chunk_all`] with each chunk's element width hint.
pub fn chunk_all_with_widths(data: &[u8]) -> Vec<(usize, usize, u8)> {
    let cuts = Chunker::new(data).cut(data, true);
    let mut start = 0;
    cuts.ends
        .into_iter()
        .zip(cuts.widths)
        .map(|(end, w)| {
            let r = (start, end - start, w);
            start = end;
            r
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_testkit::noise;
    use proptest::prelude::*;

    /// Streams `data` through `cut` in pieces of the given sizes.
    fn chunk_streaming(data: &[u8], piece: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut base = 0;
        let mut pos = 0;
        let mut chunker = Chunker::new(&data[..data.len().min(crate::safetensors::LAYOUT_PREFIX)]);
        loop {
            let next = (pos + piece).min(data.len());
            pending.extend_from_slice(&data[pos..next]);
            pos = next;
            let eof = pos == data.len();
            let cuts = chunker.cut(&pending, eof);
            let mut start = 0;
            for end in cuts.ends {
                out.push((base + start, end - start));
                start = end;
            }
            pending.drain(..cuts.consumed);
            base += cuts.consumed;
            if eof {
                assert!(pending.is_empty());
                return out;
            }
        }
    }

    #[test]
    fn chunks_respect_size_limits_and_cover_the_input() {
        let data = noise(5 * 1024 * 1024 + 17, 7);
        let chunks = chunk_all(&data);
        let mut next = 0;
        for (i, &(off, len)) in chunks.iter().enumerate() {
            assert_eq!(off, next);
            assert!(len <= MAX_CHUNK);
            if i + 1 < chunks.len() {
                assert!(len >= MIN_CHUNK);
            }
            next = off + len;
        }
        assert_eq!(next, data.len());
        let avg = data.len() / chunks.len();
        assert!((AVG_CHUNK / 2..AVG_CHUNK * 2).contains(&avg), "avg {avg}");
    }

    #[test]
    fn empty_input_has_no_chunks() {
        assert!(chunk_all(&[]).is_empty());
        assert_eq!(Chunker::new(&[]).cut(&[], false).consumed, 0);
    }

    #[test]
    fn an_insert_changes_only_nearby_chunks() {
        let data = noise(4 * 1024 * 1024, 3);
        let mut edited = data.clone();
        edited.splice(2_000_000..2_000_000, b"inserted bytes".iter().copied());
        let ids = |d: &[u8]| -> std::collections::HashSet<Vec<u8>> { chunk_all(d).iter().map(|&(o, l)| d[o..o + l].to_vec()).collect() };
        let (a, b) = (ids(&data), ids(&edited));
        let fresh = b.difference(&a).count();
        assert!(fresh <= 3, "{fresh} new chunks after a 14-byte insert");
    }

    /// A safetensors file of BF16 tensors (name, length, seed of its noise).
    fn safetensors(meta: &str, tensors: &[(&str, usize, u64)]) -> Vec<u8> {
        let data: Vec<Vec<u8>> = tensors.iter().map(|&(_, len, seed)| noise(len, seed)).collect();
        let named: Vec<(&str, &[u8])> = tensors.iter().zip(&data).map(|(t, d)| (t.0, &d[..])).collect();
        ferry_testkit::safetensors_file(meta, &named)
    }

    fn chunk_set(d: &[u8]) -> std::collections::HashSet<Vec<u8>> {
        chunk_all(d).iter().map(|&(o, l)| d[o..o + l].to_vec()).collect()
    }

    #[test]
    fn large_tensors_are_cut_into_pieces_from_their_own_start() {
        let f = safetensors("", &[("norm", 2048, 1), ("embed", 5 * PIECE + 10_000, 2), ("w", 3 * PIECE + MIN_CHUNK, 3), ("bias", 100, 4)]);
        let layout = Layout::parse(&f).expect("layout");
        let embed = &layout.tensors[1];
        let chunks = chunk_all_with_widths(&f);
        let inside: Vec<_> = chunks.iter().filter(|c| c.0 as u64 >= embed.start && ((c.0 + c.1) as u64) <= embed.start + embed.len).collect();
        // 5 pieces, the last with the 10 000-byte remainder
        assert_eq!(inside.iter().map(|c| c.1).collect::<Vec<_>>(), vec![PIECE, PIECE, PIECE, PIECE, PIECE + 10_000]);
        assert!(inside.iter().all(|c| c.2 == 2));
        let w = &layout.tensors[2];
        let lens: Vec<usize> = chunks.iter().filter(|c| c.0 as u64 >= w.start && ((c.0 + c.1) as u64) <= w.start + w.len).map(|c| c.1).collect();
        assert_eq!(lens, vec![PIECE, PIECE, PIECE, MIN_CHUNK]);
        assert!(chunks.iter().any(|c| c.0 as u64 == embed.start), "a cut at the tensor's start");
    }

    #[test]
    fn a_tensor_that_only_moved_keeps_its_chunks() {
        let t = [("a", 300_000, 1), ("small", 3000, 2), ("b", 1 << 20, 3), ("c", 200_000, 4)];
        let v0 = safetensors("", &t);
        // a longer header moves every tensor, another order (and shard) more
        let v1 = safetensors("license: mit, and more words", &[t[2], t[0], t[3]]);
        let (a, b) = (chunk_set(&v0), chunk_set(&v1));
        let new: usize = b.difference(&a).map(|c| c.len()).sum();
        assert!(new < 40_000, "{new} new bytes after moving three tensors");
    }

    #[test]
    fn a_header_whose_offsets_run_past_the_file_still_covers_the_file() {
        let mut f = safetensors("", &[("a", 500_000, 9)]);
        f.truncate(f.len() - 200_000);
        let chunks = chunk_all(&f);
        assert_eq!(chunks.iter().map(|c| c.1).sum::<usize>(), f.len());
        assert!(chunks.iter().all(|c| c.1 <= MAX_CHUNK));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn boundaries_do_not_depend_on_buffer_sizes(
            len in 0usize..1_500_000, seed in any::<u64>(), piece in 1usize..400_000
        ) {
            let data = noise(len, seed);
            prop_assert_eq!(chunk_streaming(&data, piece), chunk_all(&data));
        }

        #[test]
        fn safetensors_boundaries_do_not_depend_on_buffer_sizes(
            sizes in proptest::collection::vec(0usize..400_000, 1..6), cut_at in 0usize..2_000_000, seed in any::<u64>(), piece in 1usize..300_000
        ) {
            let names: Vec<String> = (0..sizes.len()).map(|i| format!("t{i}")).collect();
            let tensors: Vec<(&str, usize, u64)> = names.iter().zip(&sizes).map(|(n, &s)| (n.as_str(), s & !1, seed ^ s as u64)).collect();
            let mut f = safetensors("", &tensors);
            f.truncate(cut_at.max(8).min(f.len()));
            let chunks = chunk_all(&f);
            prop_assert_eq!(chunk_streaming(&f, piece), chunks.clone());
            prop_assert_eq!(chunks.iter().map(|c| c.1).sum::<usize>(), f.len());
            prop_assert!(chunks.iter().all(|c| c.1 <= MAX_CHUNK && c.1 > 0));
        }
    }
}

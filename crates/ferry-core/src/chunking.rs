//! Content-defined chunking with FastCDC (2020), streaming over buffers.
//!
//! The sizes live here and nowhere else. They were chosen by measurement
//! (see ARCHITECTURE.md, "Chunk sizes"): 64 KiB average keeps the per-chunk
//! overhead (an index entry, a tree leaf, a wire id) under 0.2% of the data
//! while still isolating a changed tensor or a shifted header to a chunk or
//! two; the 16 KiB minimum lets FastCDC skip hashing the first quarter of
//! every chunk; the 256 KiB maximum bounds every buffer that holds a chunk.
//!
//! The parameters and the exact algorithm (the `fastcdc` crate's
//! `v2020::FastCDC`, normalisation level 1, no seed) are part of the format:
//! `protocol/tree.md`, section 1. Changing any of them changes every file id.

/// Smallest chunk FastCDC emits (except a file's last chunk), in bytes.
pub const MIN_CHUNK: usize = 16 * 1024;
/// The average chunk size FastCDC aims for, in bytes.
pub const AVG_CHUNK: usize = 64 * 1024;
/// Largest chunk, in bytes: a hard limit that every decoder enforces on a
/// chunk record's raw length (see [`crate::codec::MAX_RECORD_LEN`]).
pub const MAX_CHUNK: usize = 256 * 1024;

/// Cut points found in one buffer, as returned by [`cut`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cuts {
    /// Exclusive end offset of each final chunk, ascending, relative to the
    /// buffer start. The first chunk starts at 0.
    pub ends: Vec<usize>,
    /// Bytes of the buffer covered by `ends` (0 if none). The rest must be
    /// carried into the next call, followed by more data.
    pub consumed: usize,
}

/// Finds the chunk boundaries in `buf`, which starts at a chunk boundary.
///
/// A cut is final only when FastCDC saw everything that could influence it:
/// at least `MAX_CHUNK` bytes from the chunk's start, or the end of the file
/// (`eof`). So the boundaries of a stream do not depend on how it was split
/// into buffers: feed the unconsumed tail again, followed by the next bytes.
pub fn cut(buf: &[u8], eof: bool) -> Cuts {
    let mut ends = Vec::with_capacity(buf.len() / AVG_CHUNK + 1);
    let mut consumed = 0;
    if !buf.is_empty() {
        let cdc = fastcdc::v2020::FastCDC::new(buf, MIN_CHUNK as u32, AVG_CHUNK as u32, MAX_CHUNK as u32);
        for chunk in cdc {
            if !eof && buf.len() - chunk.offset < MAX_CHUNK {
                break;
            }
            consumed = chunk.offset + chunk.length;
            ends.push(consumed);
        }
    }
    Cuts { ends, consumed }
}

/// Chunks a whole in-memory buffer: (offset, length) of each chunk, in
/// order, covering `data` exactly (none for an empty buffer). The same
/// boundaries as streaming the buffer through [`cut`] in any pieces.
pub fn chunk_all(data: &[u8]) -> Vec<(usize, usize)> {
    let mut start = 0;
    cut(data, true)
        .ends
        .into_iter()
        .map(|end| {
            let r = (start, end - start);
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
        loop {
            let next = (pos + piece).min(data.len());
            pending.extend_from_slice(&data[pos..next]);
            pos = next;
            let eof = pos == data.len();
            let cuts = cut(&pending, eof);
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
        assert_eq!(cut(&[], false).consumed, 0);
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn boundaries_do_not_depend_on_buffer_sizes(
            len in 0usize..1_500_000, seed in any::<u64>(), piece in 1usize..400_000
        ) {
            let data = noise(len, seed);
            prop_assert_eq!(chunk_streaming(&data, piece), chunk_all(&data));
        }
    }
}

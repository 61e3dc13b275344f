//! The first two stages of reading a file: read it in 8 MiB segments and
//! cut each into whole chunks (FastCDC, or by tensor for safetensors), on
//! two threads of their own. The ingest pipeline stores what comes out;
//! a scan only hashes it.
//!
//! Segment buffers are recycled from the consumer back to the reader, and
//! each starts with `MAX_CHUNK` bytes of headroom: the cutter moves the
//! unfinished tail of the previous segment (always shorter than
//! `MAX_CHUNK`) into that headroom instead of copying the new segment
//! after the tail.

use std::io::{self, Read};
use std::sync::Arc;
use std::thread::Scope;

use crossbeam_channel::{bounded, Receiver};
use ferry_core::chunking;
use ferry_core::safetensors::Layout;

/// Bytes read from a file at a time.
pub const SEGMENT_LEN: usize = 8 << 20;
// The first segment decides how the file is cut.
const _: () = assert!(SEGMENT_LEN >= ferry_core::safetensors::LAYOUT_PREFIX);

/// Bytes kept free in front of every segment buffer for the previous
/// segment's tail.
const HEADROOM: usize = chunking::MAX_CHUNK;

/// A run of whole chunks: `buf[start..start + len]`, with chunk ends
/// relative to `start`.
pub(crate) struct Segment {
    pub buf: Vec<u8>,
    pub start: usize,
    pub len: usize,
    pub ends: Vec<usize>,
    /// Each chunk's element width, for the codec.
    pub widths: Vec<u8>,
    /// File offset of `buf[start]`.
    pub offset: u64,
    /// The file's safetensors layout, if it was cut by one.
    pub layout: Option<Arc<Layout>>,
}

impl Segment {
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    /// Each chunk's range in [`Segment::data`].
    pub fn ranges(&self) -> Vec<(usize, usize)> {
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let r = (start, end);
                start = end;
                r
            })
            .collect()
    }
}

/// A buffer as the reader filled it: input bytes from `HEADROOM` on.
struct Raw {
    buf: Vec<u8>,
    eof: bool,
}

/// Appends up to `want` bytes from `r` to `buf`; true at end of input.
fn fill(r: &mut impl Read, buf: &mut Vec<u8>, want: usize) -> io::Result<bool> {
    let target = buf.len() + want;
    buf.reserve(want);
    while buf.len() < target {
        let n = r.by_ref().take((target - buf.len()) as u64).read_to_end(buf)?;
        if n == 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Starts the reader and the cutter in `scope`: `reader`'s bytes come out
/// as segments of whole chunks, in order, at most two ahead of the
/// consumer. Buffers sent back on `free` are reused.
pub(crate) fn segments<'s, R: Read + Send + 's>(scope: &'s Scope<'s, '_>, mut reader: R, free: Receiver<Vec<u8>>) -> Receiver<io::Result<Segment>> {
    let (raw_tx, raw_rx) = bounded::<io::Result<Raw>>(1);
    let (seg_tx, seg_rx) = bounded::<io::Result<Segment>>(2);
    scope.spawn(move || loop {
        let mut buf = free.try_recv().unwrap_or_else(|_| Vec::with_capacity(HEADROOM + SEGMENT_LEN));
        buf.clear();
        buf.resize(HEADROOM, 0);
        let res = fill(&mut reader, &mut buf, SEGMENT_LEN);
        let stop = !matches!(res, Ok(false));
        if raw_tx.send(res.map(|eof| Raw { buf, eof })).is_err() || stop {
            return;
        }
    });
    scope.spawn(move || {
        let mut tail: Vec<u8> = Vec::new();
        let mut chunker: Option<chunking::Chunker> = None;
        let mut layout = None;
        let mut offset = 0;
        for msg in raw_rx {
            let Raw { mut buf, eof } = match msg {
                Ok(x) => x,
                Err(e) => {
                    let _ = seg_tx.send(Err(e));
                    return;
                }
            };
            // Put the previous tail right in front of the new bytes.
            let start = if tail.len() <= HEADROOM {
                let start = HEADROOM - tail.len();
                buf[start..HEADROOM].copy_from_slice(&tail);
                start
            } else {
                tail.extend_from_slice(&buf[HEADROOM..]);
                buf = std::mem::take(&mut tail);
                0
            };
            // The first segment holds the file's first SEGMENT_LEN bytes (or all of it).
            let chunker = chunker.get_or_insert_with(|| {
                let c = chunking::Chunker::new(&buf[start..]);
                layout = c.layout().cloned().map(Arc::new);
                c
            });
            let cuts = chunker.cut(&buf[start..], eof);
            tail.clear();
            tail.extend_from_slice(&buf[start + cuts.consumed..]);
            let seg = Segment { buf, start, len: cuts.consumed, ends: cuts.ends, widths: cuts.widths, offset, layout: layout.clone() };
            offset += cuts.consumed as u64;
            if seg_tx.send(Ok(seg)).is_err() {
                return;
            }
        }
    });
    seg_rx
}

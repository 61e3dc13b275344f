//! Frames: `type:u8  len:u32 LE  payload[len]`, with `len <= MAX_FRAME_LEN`.
//!
//! The type byte is the message's tag ([`crate::message::tag`]); a receiver
//! refuses a length over the limit before reading the payload
//! (`protocol/wire.md`, section 2).

/// Largest payload of one frame. A frame of chunk records holds at most this
/// many bytes, so a receiver never buffers more than one frame per stream.
pub const MAX_FRAME_LEN: usize = 8 << 20;
/// Bytes of a frame header: the type and the u32 LE payload length.
pub const HEADER_LEN: usize = 5;

/// A byte stream that is not a sequence of frames.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// A header announced a payload over [`MAX_FRAME_LEN`].
    #[error("frame of {len} bytes exceeds the limit of {MAX_FRAME_LEN}")]
    TooLarge {
        /// The payload length announced, in bytes.
        len: u64,
    },
    /// The stream ended part-way through a frame.
    #[error("stream ended inside a frame ({have} of {need} bytes)")]
    Truncated {
        /// Bytes of the frame received (header included).
        have: usize,
        /// Bytes the frame needs (header included; just the header's 5
        /// while the header itself is incomplete).
        need: usize,
    },
}

/// Appends one frame to `out`.
///
/// # Panics
/// If `payload` is over [`MAX_FRAME_LEN`]: senders split their batches to
/// fit, so a larger payload is a bug in the caller.
pub fn encode_frame(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    assert!(payload.len() <= MAX_FRAME_LEN, "frame payload over MAX_FRAME_LEN");
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Parses the header of a frame: its type and payload length (checked
/// against [`MAX_FRAME_LEN`], so the caller may then read that many bytes).
pub fn decode_header(h: &[u8; HEADER_LEN]) -> Result<(u8, usize), FrameError> {
    let len = u32::from_le_bytes([h[1], h[2], h[3], h[4]]) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge { len: len as u64 });
    }
    Ok((h[0], len))
}

/// Incremental decoder for a byte stream of frames (for transports that
/// deliver arbitrary pieces, and for fuzzing).
#[derive(Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// A decoder that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes received.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame (type and payload), if one has arrived. An
    /// error if the next header announces a payload over the limit: the
    /// stream cannot be resynchronised, so the caller drops it.
    pub fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, FrameError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let header: [u8; HEADER_LEN] = self.buf[..HEADER_LEN].try_into().expect("5 bytes");
        let (kind, len) = decode_header(&header)?;
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let payload = self.buf[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.buf.drain(..HEADER_LEN + len);
        Ok(Some((kind, payload)))
    }

    /// Called at end of stream: leftover bytes mean a truncated frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            let need = if self.buf.len() >= HEADER_LEN {
                HEADER_LEN + u32::from_le_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize
            } else {
                HEADER_LEN
            };
            Err(FrameError::Truncated { have: self.buf.len(), need })
        }
    }
}

/// Bytes of items one data frame may carry: the frame limit less room for
/// the message's own fields (repository name, counts).
pub const BATCH_BYTES: usize = MAX_FRAME_LEN - (64 << 10);

/// What each item costs in a batch besides its own bytes: its id and
/// length prefix, rounded up.
const ITEM_OVERHEAD: usize = 40;

/// Groups items into batches that each fit one data frame ([`BATCH_BYTES`]),
/// handing out each batch as soon as it is full, so whoever streams an
/// answer holds one frame's worth at a time. The one packing rule for
/// every answer and request that carries many items.
pub struct Batcher<T> {
    cur: Vec<T>,
    bytes: usize,
    budget: usize,
}

impl<T> Default for Batcher<T> {
    fn default() -> Self {
        Batcher::with_budget(BATCH_BYTES)
    }
}

impl<T> Batcher<T> {
    /// Batches of at most `budget` bytes (each still holds at least one item).
    pub fn with_budget(budget: usize) -> Self {
        Batcher { cur: Vec::new(), bytes: 0, budget }
    }

    /// Adds an item of `size` bytes; returns the batch before it when the
    /// item does not fit there.
    pub fn push(&mut self, item: T, size: usize) -> Option<Vec<T>> {
        let size = size + ITEM_OVERHEAD;
        let full = (!self.cur.is_empty() && self.bytes + size > self.budget).then(|| {
            self.bytes = 0;
            std::mem::take(&mut self.cur)
        });
        self.bytes += size;
        self.cur.push(item);
        full
    }

    /// Whether an item of `size` bytes would still fit the current batch.
    pub fn fits(&self, size: usize) -> bool {
        self.cur.is_empty() || self.bytes + size + ITEM_OVERHEAD <= self.budget
    }

    /// Items in the current batch.
    pub fn len(&self) -> usize {
        self.cur.len()
    }

    /// Whether the current batch is empty.
    pub fn is_empty(&self) -> bool {
        self.cur.is_empty()
    }

    /// The last, partly filled batch (None if empty).
    pub fn finish(self) -> Option<Vec<T>> {
        (!self.cur.is_empty()).then_some(self.cur)
    }
}

/// Splits `items` (with their sizes) into batches that each fit a frame.
pub fn batches<T>(items: impl IntoIterator<Item = T>, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut b = Batcher::default();
    let mut out = Vec::new();
    for item in items {
        let s = size(&item);
        out.extend(b.push(item, s));
    }
    out.extend(b.finish());
    out
}

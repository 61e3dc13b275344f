//! Frames: `type:u8  len:u32 LE  payload[len]`, with `len <= MAX_FRAME_LEN`.

/// Largest payload of one frame. A frame of chunk records holds at most this
/// many bytes, so a receiver never buffers more than one frame per stream.
pub const MAX_FRAME_LEN: usize = 8 << 20;
pub const HEADER_LEN: usize = 5;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {MAX_FRAME_LEN}")]
    TooLarge { len: u64 },
    #[error("stream ended inside a frame ({have} of {need} bytes)")]
    Truncated { have: usize, need: usize },
}

/// Appends one frame to `out`.
pub fn encode_frame(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    assert!(payload.len() <= MAX_FRAME_LEN, "frame payload over MAX_FRAME_LEN");
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Parses the header of a frame: its type and payload length.
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
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes received.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if one has arrived.
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

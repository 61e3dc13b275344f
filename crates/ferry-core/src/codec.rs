//! The stored form of a chunk: a codec tag, the raw length, the payload.
//!
//! ```text
//! record := codec:u8  raw_len:u32 LE  payload
//! codec 0: payload is the raw bytes (raw_len of them)
//! codec 1: payload is one zstd frame that decompresses to raw_len bytes
//! ```
//! Codecs 2 (byte-grouped zstd for float tensors) and 3 (XOR delta against
//! a parent chunk) are reserved. The same record travels on the wire, so a
//! chunk is compressed once, by whoever first stores it.
//!
//! Decoding never allocates more than `MAX_CHUNK` bytes, whatever the record
//! claims, and [`decode_verified`] returns a chunk only after its BLAKE3
//! matches. Normative: `protocol/tree.md`, section 3.

use crate::chunking::MAX_CHUNK;
use crate::{invalid, FormatError, Id};

/// Codec tag: the payload is the raw bytes.
pub const CODEC_RAW: u8 = 0;
/// Codec tag: the payload is one zstd frame of exactly `raw_len` bytes.
pub const CODEC_ZSTD: u8 = 1;
/// Bytes before the payload: the codec tag and the u32 LE raw length.
pub const HEADER_LEN: usize = 5;
/// Largest record: a raw chunk of the maximum size plus its header. A zstd
/// frame that would be larger is stored raw instead.
pub const MAX_RECORD_LEN: usize = HEADER_LEN + MAX_CHUNK;

/// zstd level for new chunks: level 1 is the fastest level that still
/// Huffman-codes the skewed exponent bytes of bf16/fp16 weights.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

/// Compresses chunks, reusing one zstd context (one per thread).
///
/// Not `Sync`: each thread that encodes keeps its own.
pub struct Encoder {
    zstd: zstd::bulk::Compressor<'static>,
}

impl Encoder {
    /// An encoder at zstd `level` (new chunks use [`DEFAULT_ZSTD_LEVEL`]).
    ///
    /// # Panics
    /// If zstd cannot make a compression context at `level`.
    pub fn new(level: i32) -> Self {
        Encoder { zstd: zstd::bulk::Compressor::new(level).expect("valid zstd level") }
    }

    /// Encodes a raw chunk, compressed when that saves at least 1/32 of it
    /// (otherwise stored raw), so the record is at most [`MAX_RECORD_LEN`]
    /// bytes.
    ///
    /// # Panics
    /// If `raw` is longer than [`MAX_CHUNK`]: the chunker never makes such
    /// a chunk, so it is a caller's bug, not bad input.
    pub fn encode(&mut self, raw: &[u8]) -> Vec<u8> {
        assert!(raw.len() <= MAX_CHUNK, "chunk larger than MAX_CHUNK");
        let mut out = Vec::with_capacity(HEADER_LEN + raw.len());
        out.push(CODEC_ZSTD);
        out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
        let budget = raw.len() - raw.len() / 32;
        out.resize(HEADER_LEN + budget, 0);
        match self.zstd.compress_to_buffer(raw, &mut out[HEADER_LEN..]) {
            Ok(n) if n < budget && !raw.is_empty() => {
                out.truncate(HEADER_LEN + n);
            }
            _ => {
                out.truncate(HEADER_LEN);
                out[0] = CODEC_RAW;
                out.extend_from_slice(raw);
            }
        }
        out
    }
}

/// The header of a record, read without decoding the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// The codec tag ([`CODEC_RAW`], [`CODEC_ZSTD`]; others are refused by
    /// [`decode`], not by [`read_header`]).
    pub codec: u8,
    /// Bytes the payload decodes to; at most [`MAX_CHUNK`].
    pub raw_len: u32,
}

/// Reads a record's header, checking the record's length and the raw length
/// against their limits (so a store can index a record, or a receiver size a
/// buffer, without decompressing it).
pub fn read_header(record: &[u8]) -> Result<RecordHeader, FormatError> {
    if record.len() > MAX_RECORD_LEN {
        return Err(FormatError::TooLarge { what: "chunk record", len: record.len() as u64, limit: MAX_RECORD_LEN as u64 });
    }
    let mut r = crate::Reader::new("chunk record", record);
    let codec = r.u8()?;
    let raw_len = r.u32()?;
    if raw_len as usize > MAX_CHUNK {
        return Err(FormatError::TooLarge { what: "chunk raw length", len: raw_len as u64, limit: MAX_CHUNK as u64 });
    }
    Ok(RecordHeader { codec, raw_len })
}

thread_local! {
    // One decompression context per thread: creating one per chunk cost
    // about 4% of a hub's CPU while receiving a push.
    static DECOMPRESSOR: std::cell::RefCell<zstd::bulk::Decompressor<'static>> =
        std::cell::RefCell::new(zstd::bulk::Decompressor::new().expect("zstd decompression context"));
}

/// Decodes a record without checking its id (use [`decode_verified`] for
/// anything that came from outside). The output is never longer than the
/// header's raw length: a zstd payload that would decompress further is
/// refused, so a decompression bomb costs at most [`MAX_CHUNK`] bytes.
pub fn decode(record: &[u8]) -> Result<Vec<u8>, FormatError> {
    let h = read_header(record)?;
    let payload = &record[HEADER_LEN..];
    let raw = match h.codec {
        CODEC_RAW => payload.to_vec(),
        CODEC_ZSTD => DECOMPRESSOR
            .with(|d| one_zstd_frame(payload).and_then(|()| d.borrow_mut().decompress(payload, h.raw_len as usize)))
            .map_err(|e| invalid("chunk record", format!("zstd payload does not decode within {} bytes: {e}", h.raw_len)))?,
        other => return Err(invalid("chunk record", format!("codec {other} is not supported by this version of ferry"))),
    };
    if raw.len() != h.raw_len as usize {
        return Err(invalid("chunk record", format!("payload decodes to {} bytes, header says {}", raw.len(), h.raw_len)));
    }
    Ok(raw)
}

/// The magic number that opens a (non-skippable) zstd frame.
const ZSTD_MAGIC: u32 = 0xFD2F_B528;

/// A zstd payload must be exactly one zstd frame (`protocol/tree.md`): no
/// skippable frames, nothing after it. Otherwise one chunk would have
/// several encodings that all verify.
fn one_zstd_frame(payload: &[u8]) -> std::io::Result<()> {
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    if payload.get(..4).map(|m| u32::from_le_bytes([m[0], m[1], m[2], m[3]])) != Some(ZSTD_MAGIC) {
        return Err(bad("it is not one zstd frame (a skippable or unknown frame comes first)".into()));
    }
    match zstd::zstd_safe::find_frame_compressed_size(payload) {
        Ok(n) if n == payload.len() => Ok(()),
        Ok(n) => Err(bad(format!("it holds more than one zstd frame (the first is {n} of {} bytes)", payload.len()))),
        Err(_) => Err(bad("its zstd frame is malformed".into())),
    }
}

/// Decodes a record and checks that its bytes hash to `id`
/// ([`FormatError::HashMismatch`] if not).
pub fn decode_verified(id: &Id, record: &[u8]) -> Result<Vec<u8>, FormatError> {
    let raw = decode(record)?;
    let actual = Id::of_chunk(&raw);
    if actual != *id {
        return Err(FormatError::HashMismatch { what: "chunk", id: *id, actual });
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn compressible_chunks_are_stored_compressed() {
        let raw = vec![7u8; 100_000];
        let rec = Encoder::new(DEFAULT_ZSTD_LEVEL).encode(&raw);
        assert_eq!(rec[0], CODEC_ZSTD);
        assert!(rec.len() < 1000);
        assert_eq!(decode_verified(&Id::of_chunk(&raw), &rec).unwrap(), raw);
    }

    #[test]
    fn incompressible_chunks_are_stored_raw() {
        let raw = ferry_testkit::noise(50_000, 1);
        let rec = Encoder::new(DEFAULT_ZSTD_LEVEL).encode(&raw);
        assert_eq!(rec[0], CODEC_RAW);
        assert_eq!(decode(&rec).unwrap(), raw);
    }

    #[test]
    fn a_decompression_bomb_is_refused() {
        let bomb = zstd::bulk::compress(&vec![0u8; 10 * MAX_CHUNK], 3).unwrap();
        let mut rec = vec![CODEC_ZSTD];
        rec.extend_from_slice(&(MAX_CHUNK as u32).to_le_bytes());
        rec.extend_from_slice(&bomb);
        assert!(decode(&rec).is_err());
        let mut lying = vec![CODEC_ZSTD];
        lying.extend_from_slice(&(u32::MAX).to_le_bytes());
        assert!(matches!(read_header(&lying), Err(FormatError::TooLarge { .. })));
    }

    #[test]
    fn wrong_bytes_fail_verification() {
        let rec = Encoder::new(1).encode(b"hello");
        let err = decode_verified(&Id::of_chunk(b"other"), &rec).unwrap_err();
        assert!(err.to_string().contains("failed verification"), "{err}");
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips(raw in proptest::collection::vec(any::<u8>(), 0..70_000), rep in 0usize..4) {
            let raw: Vec<u8> = raw.iter().flat_map(|b| std::iter::repeat_n(*b, rep + 1)).take(MAX_CHUNK).collect();
            let rec = Encoder::new(DEFAULT_ZSTD_LEVEL).encode(&raw);
            prop_assert!(rec.len() <= MAX_RECORD_LEN);
            prop_assert_eq!(decode_verified(&Id::of_chunk(&raw), &rec).unwrap(), raw);
        }

        #[test]
        fn decode_never_panics(rec in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&rec);
        }
    }
}

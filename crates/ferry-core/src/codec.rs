//! The stored form of a chunk: a codec tag, the raw length, the payload.
//!
//! ```text
//! record := codec:u8  raw_len:u32 LE  payload
//! codec 0: payload is the raw bytes (raw_len of them)
//! codec 1: payload is one zstd frame that decompresses to raw_len bytes
//! codec 2: payload is width:u8, then byte planes (below): a piece of a
//!          tensor with its elements' bytes grouped by position
//! ```
//! Codec 3 (delta against a parent chunk) is reserved. The same record
//! travels on the wire, so a chunk is compressed once, by whoever first
//! stores it.
//!
//! Why byte planes: in a float tensor the byte that holds the sign and
//! most of the exponent takes few values, the low mantissa bytes are
//! nearly random. Interleaved, zstd sees one mixed stream; grouped (all
//! first bytes, then all second bytes, ...) each plane gets its own entropy
//! coder, and the low-entropy planes shrink to a fraction while the random
//! ones are stored as they are.
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
/// Codec tag: the payload is the chunk's byte planes (a tensor piece).
pub const CODEC_PLANES: u8 = 2;
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
    /// Scratch for byte planes, kept across chunks.
    planes: Vec<u8>,
}

impl Encoder {
    /// An encoder at zstd `level` (new chunks use [`DEFAULT_ZSTD_LEVEL`]).
    ///
    /// # Panics
    /// If zstd cannot make a compression context at `level`.
    pub fn new(level: i32) -> Self {
        Encoder { zstd: zstd::bulk::Compressor::new(level).expect("valid zstd level"), planes: Vec::new() }
    }

    /// Encodes a chunk whose bytes are elements `width` bytes wide (the
    /// chunker's hint): as byte planes for widths 2, 4 and 8, as
    /// [`Encoder::encode`] does otherwise; raw when encoding does not save
    /// 1/32 of the chunk.
    ///
    /// # Panics
    /// If `raw` is longer than [`MAX_CHUNK`].
    pub fn encode_hinted(&mut self, raw: &[u8], width: u8) -> Vec<u8> {
        if !matches!(width, 2 | 4 | 8) || raw.len() < 2 * width as usize {
            return self.encode(raw);
        }
        assert!(raw.len() <= MAX_CHUNK, "chunk larger than MAX_CHUNK");
        let w = width as usize;
        let n = raw.len() / w;
        let budget = raw.len() - raw.len() / 32;
        let mut out = Vec::with_capacity(HEADER_LEN + raw.len());
        out.push(CODEC_PLANES);
        out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
        out.push(width);
        split_planes(&raw[..n * w], w, &mut self.planes);
        for plane in self.planes.chunks_exact(n) {
            let at = out.len();
            out.push(PLANE_ZSTD);
            out.extend_from_slice(&[0; 4]);
            out.resize(at + PLANE_HEADER_LEN + n, 0);
            match self.zstd.compress_to_buffer(plane, &mut out[at + PLANE_HEADER_LEN..]) {
                Ok(len) if len < n => out.truncate(at + PLANE_HEADER_LEN + len),
                _ => {
                    out[at] = PLANE_RAW;
                    out[at + PLANE_HEADER_LEN..].copy_from_slice(plane);
                }
            }
            let len = (out.len() - at - PLANE_HEADER_LEN) as u32;
            out[at + 1..at + PLANE_HEADER_LEN].copy_from_slice(&len.to_le_bytes());
            if out.len() - HEADER_LEN >= budget {
                return self.raw_record(raw, out);
            }
        }
        out.extend_from_slice(&raw[n * w..]);
        if out.len() - HEADER_LEN >= budget {
            return self.raw_record(raw, out);
        }
        out
    }

    /// `raw` as a codec 0 record, reusing `out`'s allocation.
    fn raw_record(&self, raw: &[u8], mut out: Vec<u8>) -> Vec<u8> {
        out.clear();
        out.push(CODEC_RAW);
        out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
        out.extend_from_slice(raw);
        out
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
        CODEC_PLANES => decode_planes(payload, h.raw_len as usize)?,
        other => return Err(invalid("chunk record", format!("codec {other} is not supported by this version of ferry"))),
    };
    if raw.len() != h.raw_len as usize {
        return Err(invalid("chunk record", format!("payload decodes to {} bytes, header says {}", raw.len(), h.raw_len)));
    }
    Ok(raw)
}

/// Plane mode: the plane's bytes as they are.
const PLANE_RAW: u8 = 0;
/// Plane mode: one zstd frame of exactly the plane's length.
const PLANE_ZSTD: u8 = 1;
/// Bytes before each plane: its mode and its u32 LE encoded length.
const PLANE_HEADER_LEN: usize = 5;

/// Writes the `w` byte planes of `elems` (a whole number of `w`-byte
/// elements) into `planes`, one after another: byte 0 of every element,
/// then byte 1, and so on.
fn split_planes(elems: &[u8], w: usize, planes: &mut Vec<u8>) {
    let n = elems.len() / w;
    planes.clear();
    planes.resize(elems.len(), 0);
    match w {
        2 => {
            let (lo, hi) = planes.split_at_mut(n);
            for ((e, l), h) in elems.chunks_exact(2).zip(lo).zip(hi) {
                *l = e[0];
                *h = e[1];
            }
        }
        _ => {
            for (i, e) in elems.chunks_exact(w).enumerate() {
                for (j, &b) in e.iter().enumerate() {
                    planes[j * n + i] = b;
                }
            }
        }
    }
}

/// Interleaves `w` planes of `n` bytes each back into elements, appended
/// to `out`.
fn join_planes(planes: &[u8], w: usize, out: &mut Vec<u8>) {
    let n = planes.len() / w;
    let at = out.len();
    out.resize(at + planes.len(), 0);
    let elems = &mut out[at..];
    match w {
        2 => {
            let (lo, hi) = planes.split_at(n);
            for ((e, &l), &h) in elems.chunks_exact_mut(2).zip(lo).zip(hi) {
                e[0] = l;
                e[1] = h;
            }
        }
        _ => {
            for (i, e) in elems.chunks_exact_mut(w).enumerate() {
                for (j, b) in e.iter_mut().enumerate() {
                    *b = planes[j * n + i];
                }
            }
        }
    }
}

/// Decodes a codec 2 payload to exactly `raw_len` bytes.
fn decode_planes(payload: &[u8], raw_len: usize) -> Result<Vec<u8>, FormatError> {
    let bad = |m: String| invalid("chunk record", m);
    let mut r = crate::Reader::new("chunk record", payload);
    let w = r.u8()? as usize;
    if !matches!(w, 2 | 4 | 8) {
        return Err(bad(format!("byte planes of width {w} (2, 4 or 8 expected)")));
    }
    let n = raw_len / w;
    let mut planes = Vec::with_capacity(n * w);
    for j in 0..w {
        let mode = r.u8()?;
        let len = r.u32()? as usize;
        let bytes = r.take(len)?;
        match mode {
            PLANE_RAW if len == n => planes.extend_from_slice(bytes),
            PLANE_ZSTD => {
                let plane = DECOMPRESSOR
                    .with(|d| one_zstd_frame(bytes).and_then(|()| d.borrow_mut().decompress(bytes, n)))
                    .map_err(|e| bad(format!("byte plane {j} does not decode within {n} bytes: {e}")))?;
                if plane.len() != n {
                    return Err(bad(format!("byte plane {j} decodes to {} bytes, {n} expected", plane.len())));
                }
                planes.extend_from_slice(&plane);
            }
            _ => return Err(bad(format!("byte plane {j} has mode {mode} and {len} bytes (raw planes hold {n})"))),
        }
    }
    let tail = r.take(raw_len - n * w)?;
    r.finish()?;
    let mut raw = Vec::with_capacity(raw_len);
    join_planes(&planes, w, &mut raw);
    raw.extend_from_slice(tail);
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

    use ferry_testkit::bf16_weights as weights;

    #[test]
    fn byte_planes_shrink_float_weights_more_than_plain_zstd() {
        let raw = weights(32 * 1024, 3);
        let mut enc = Encoder::new(DEFAULT_ZSTD_LEVEL);
        let planes = enc.encode_hinted(&raw, 2);
        let plain = enc.encode(&raw);
        assert_eq!(planes[0], CODEC_PLANES);
        assert!(planes.len() * 100 < plain.len() * 92, "planes {} vs zstd {}", planes.len(), plain.len());
        assert!(planes.len() * 100 < raw.len() * 72, "planes {} of {}", planes.len(), raw.len());
        assert_eq!(decode_verified(&Id::of_chunk(&raw), &planes).unwrap(), raw);
    }

    #[test]
    fn malformed_byte_planes_are_refused() {
        let raw = weights(4096, 4);
        let good = Encoder::new(DEFAULT_ZSTD_LEVEL).encode_hinted(&raw, 2);
        assert!(decode(&good).is_ok());
        let mut width = good.clone();
        width[HEADER_LEN] = 3;
        assert!(decode(&width).unwrap_err().to_string().contains("width 3"));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode(&trailing).is_err());
        let mut mode = good.clone();
        mode[HEADER_LEN + 1] = 7;
        assert!(decode(&mode).is_err());
        // a raw plane of the wrong length
        let mut rec = vec![CODEC_PLANES, 8, 0, 0, 0, 2, PLANE_RAW, 3, 0, 0, 0, 1, 2, 3, PLANE_RAW, 4, 0, 0, 0, 1, 2, 3, 4];
        assert!(decode(&rec).is_err());
        rec.truncate(5);
        assert!(decode(&rec).is_err());
    }

    proptest! {
        #[test]
        fn byte_planes_round_trip_any_floats(
            words in proptest::collection::vec(any::<u64>(), 0..9000),
            specials in proptest::collection::vec((0usize..9000, 0usize..8), 0..64),
            width in prop_oneof![Just(2u8), Just(4), Just(8), Just(1), Just(0)],
            extra in 0usize..8,
        ) {
            let mut raw: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            // NaNs, infinities, denormals and negative zeros of every width
            let special: [u64; 8] = [0x7ff8_0000_0000_0001, 0xfff0_0000_0000_0000, 0x0000_0000_0000_0001, 0x8000_0000_0000_0000,
                                     0x7fc0_0001_7f80_0000, 0x8000_0000_0001_8000, 0x7e00_fc00_8000_0001, 0xffff_ffff_ffff_ffff];
            for (at, k) in specials {
                if at * 8 + 8 <= raw.len() {
                    raw[at * 8..at * 8 + 8].copy_from_slice(&special[k].to_le_bytes());
                }
            }
            raw.extend(std::iter::repeat_n(0x3c, extra));
            raw.truncate(MAX_CHUNK);
            let rec = Encoder::new(DEFAULT_ZSTD_LEVEL).encode_hinted(&raw, width);
            prop_assert!(rec.len() <= MAX_RECORD_LEN);
            prop_assert_eq!(decode_verified(&Id::of_chunk(&raw), &rec).unwrap(), raw.clone());
            let w = weights(raw.len() / 2, words.len() as u64);
            let rec = Encoder::new(DEFAULT_ZSTD_LEVEL).encode_hinted(&w, width);
            prop_assert_eq!(decode(&rec).unwrap(), w);
        }

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

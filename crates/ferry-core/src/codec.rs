//! The stored form of a chunk: a codec tag, the raw length, the payload.
//!
//! ```text
//! record := codec:u8  raw_len:u32 LE  payload
//! codec 0: payload is the raw bytes (raw_len of them)
//! codec 1: payload is one zstd frame that decompresses to raw_len bytes
//! codec 2: payload is width:u8, then byte planes (below): a piece of a
//!          tensor with its elements' bytes grouped by position
//! codec 3: payload is base:id, width:u8, then the byte planes of the
//!          piece's difference from the base chunk (a parent's piece)
//! ```
//! A record travels on the wire as it is stored, so a chunk is compressed
//! once, by whoever first stores it; a delta only to a receiver that holds
//! its base.
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
/// Codec tag: the payload names a base chunk and holds the byte planes of
/// the difference from it (a tensor piece against its parent's).
pub const CODEC_DELTA: u8 = 3;
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
    /// For byte planes: matches of at least 7 bytes only. A plane of
    /// exponents is mostly short repeats that Huffman coding alone covers;
    /// chasing them as matches costs time and bytes (on bf16 weights: a
    /// quarter faster and 7% smaller than zstd's default of 4 at level 1).
    planes_zstd: zstd::bulk::Compressor<'static>,
    /// Scratch for byte planes and deltas, kept across chunks.
    planes: Vec<u8>,
    delta: Vec<u8>,
}

impl Encoder {
    /// An encoder at zstd `level` (new chunks use [`DEFAULT_ZSTD_LEVEL`]).
    ///
    /// # Panics
    /// If zstd cannot make a compression context at `level`.
    pub fn new(level: i32) -> Self {
        let context = || zstd::bulk::Compressor::new(level).expect("valid zstd level");
        let mut planes_zstd = context();
        planes_zstd.set_parameter(zstd::stream::raw::CParameter::MinMatch(7)).expect("a valid zstd parameter");
        Encoder { zstd: context(), planes_zstd, planes: Vec::new(), delta: Vec::new() }
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
        let mut out = record_start(CODEC_PLANES, raw.len());
        out.push(width);
        let mut planes = std::mem::take(&mut self.planes);
        split_planes(&raw[..n * w], w, &mut planes);
        let fits = self.push_planes(&planes, n, raw.len(), &mut out);
        self.planes = planes;
        out.extend_from_slice(&raw[n * w..]);
        if !fits || out.len() - HEADER_LEN >= budget(raw.len()) {
            return raw_record(raw);
        }
        out
    }

    /// Encodes a tensor piece as its difference from `base`, the same piece
    /// of the parent tensor (codec 3): each element as the zigzag-coded
    /// difference of the two values taken as ordered integers, in byte
    /// planes. None when there is nothing to gain from a delta (the widths
    /// are not 2, 4 or 8, the lengths differ, or the delta is no smaller
    /// than `raw` stored alone would be).
    ///
    /// # Panics
    /// If `raw` is longer than [`MAX_CHUNK`].
    pub fn encode_delta(&mut self, raw: &[u8], width: u8, base_id: &Id, base: &[u8]) -> Option<Vec<u8>> {
        if !matches!(width, 2 | 4 | 8) || raw.len() < 2 * width as usize || base.len() != raw.len() {
            return None;
        }
        assert!(raw.len() <= MAX_CHUNK, "chunk larger than MAX_CHUNK");
        let w = width as usize;
        let n = raw.len() / w;
        let mut out = record_start(CODEC_DELTA, raw.len());
        out.extend_from_slice(base_id.as_bytes());
        out.push(width);
        let mut planes = std::mem::take(&mut self.planes);
        let mut delta = std::mem::take(&mut self.delta);
        delta_elements(&raw[..n * w], &base[..n * w], w, &mut delta);
        split_planes(&delta, w, &mut planes);
        let fits = self.push_planes(&planes, n, raw.len(), &mut out);
        (self.planes, self.delta) = (planes, delta);
        out.extend_from_slice(&raw[n * w..]);
        (fits && out.len() - HEADER_LEN < budget(raw.len())).then_some(out)
    }

    /// Appends `planes` (`n` bytes each) to `out`, each as a zstd frame or
    /// as it is, whichever is shorter. False, with `out` half written, as
    /// soon as the record is past the budget of a `raw_len`-byte chunk.
    fn push_planes(&mut self, planes: &[u8], n: usize, raw_len: usize, out: &mut Vec<u8>) -> bool {
        for plane in planes.chunks_exact(n) {
            let at = out.len();
            out.push(PLANE_ZSTD);
            out.extend_from_slice(&[0; 4]);
            out.resize(at + PLANE_HEADER_LEN + n, 0);
            match self.planes_zstd.compress_to_buffer(plane, &mut out[at + PLANE_HEADER_LEN..]) {
                Ok(len) if len < n => out.truncate(at + PLANE_HEADER_LEN + len),
                _ => {
                    out[at] = PLANE_RAW;
                    out[at + PLANE_HEADER_LEN..].copy_from_slice(plane);
                }
            }
            let len = (out.len() - at - PLANE_HEADER_LEN) as u32;
            out[at + 1..at + PLANE_HEADER_LEN].copy_from_slice(&len.to_le_bytes());
            if out.len() - HEADER_LEN >= budget(raw_len) {
                return false;
            }
        }
        true
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
        let mut out = record_start(CODEC_ZSTD, raw.len());
        let budget = budget(raw.len());
        out.resize(HEADER_LEN + budget, 0);
        match self.zstd.compress_to_buffer(raw, &mut out[HEADER_LEN..]) {
            Ok(n) if n < budget && !raw.is_empty() => {
                out.truncate(HEADER_LEN + n);
                out
            }
            _ => raw_record(raw),
        }
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
        CODEC_ZSTD => decompress_one_frame(payload, h.raw_len as usize)
            .map_err(|e| invalid("chunk record", format!("zstd payload does not decode within {} bytes: {e}", h.raw_len)))?,
        CODEC_PLANES => decode_planes(payload, h.raw_len as usize)?,
        CODEC_DELTA => {
            let base = delta_base(record)?.map(|b| b.to_hex()).unwrap_or_default();
            return Err(invalid("chunk record", format!("a delta record is decoded against its base (chunk {base}), not alone")));
        }
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

/// A record's first bytes: the codec tag and the raw length.
fn record_start(codec: u8, raw_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + raw_len);
    out.push(codec);
    out.extend_from_slice(&(raw_len as u32).to_le_bytes());
    out
}

/// `raw` as a codec 0 record.
fn raw_record(raw: &[u8]) -> Vec<u8> {
    let mut out = record_start(CODEC_RAW, raw.len());
    out.extend_from_slice(raw);
    out
}

/// The payload a `raw_len`-byte chunk's encoding must stay under to be
/// kept: it must save at least 1/32.
fn budget(raw_len: usize) -> usize {
    raw_len - raw_len / 32
}

/// Applies `f` to each `w`-byte little-endian element of `a` (with the
/// element of `b` at the same place) and writes the results to `out`.
macro_rules! per_element {
    ($w:expr, $a:expr, $b:expr, $out:expr, |$x:ident, $y:ident| $f:expr) => {{
        $out.clear();
        $out.resize($a.len(), 0);
        match $w {
            2 => {
                for ((p, q), o) in $a.chunks_exact(2).zip($b.chunks_exact(2)).zip($out.chunks_exact_mut(2)) {
                    let ($x, $y) = (u16::from_le_bytes([p[0], p[1]]), u16::from_le_bytes([q[0], q[1]]));
                    o.copy_from_slice(&($f).to_le_bytes());
                }
            }
            4 => {
                for ((p, q), o) in $a.chunks_exact(4).zip($b.chunks_exact(4)).zip($out.chunks_exact_mut(4)) {
                    let ($x, $y) = (u32::from_le_bytes(p.try_into().expect("4 bytes")), u32::from_le_bytes(q.try_into().expect("4 bytes")));
                    o.copy_from_slice(&($f).to_le_bytes());
                }
            }
            _ => {
                for ((p, q), o) in $a.chunks_exact(8).zip($b.chunks_exact(8)).zip($out.chunks_exact_mut(8)) {
                    let ($x, $y) = (u64::from_le_bytes(p.try_into().expect("8 bytes")), u64::from_le_bytes(q.try_into().expect("8 bytes")));
                    o.copy_from_slice(&($f).to_le_bytes());
                }
            }
        }
    }};
}

/// Float bit patterns as unsigned integers in the order of their values
/// (negative values reversed below positive ones): a bijection, so any bit
/// pattern (NaNs too) survives the round trip.
trait Ordered: Copy {
    fn ordered(self) -> Self;
    fn unordered(self) -> Self;
    fn zigzag(self) -> Self;
    fn unzigzag(self) -> Self;
}

macro_rules! ordered {
    ($u:ty, $i:ty) => {
        impl Ordered for $u {
            fn ordered(self) -> $u {
                const TOP: $u = 1 << (<$u>::BITS - 1);
                if self & TOP != 0 { !self } else { self | TOP }
            }
            fn unordered(self) -> $u {
                const TOP: $u = 1 << (<$u>::BITS - 1);
                if self & TOP != 0 { self ^ TOP } else { !self }
            }
            fn zigzag(self) -> $u {
                ((self << 1) ^ ((self as $i >> (<$u>::BITS - 1)) as $u))
            }
            fn unzigzag(self) -> $u {
                (self >> 1) ^ (self & 1).wrapping_neg()
            }
        }
    };
}
ordered!(u16, i16);
ordered!(u32, i32);
ordered!(u64, i64);

/// The delta elements of `new` against `base` (both whole elements).
fn delta_elements(new: &[u8], base: &[u8], w: usize, out: &mut Vec<u8>) {
    per_element!(w, new, base, out, |x, y| x.ordered().wrapping_sub(y.ordered()).zigzag());
}

/// The byte planes a delta record (codec 3) of `new` against `base` would
/// compress, one after another (`width` bytes per element; whole elements
/// only): for measuring what the codec works with.
pub fn delta_byte_planes(new: &[u8], base: &[u8], width: u8) -> Vec<u8> {
    let w = width as usize;
    assert!(matches!(w, 2 | 4 | 8), "delta widths are 2, 4 or 8");
    let n = new.len().min(base.len()) / w;
    let (mut delta, mut planes) = (Vec::new(), Vec::new());
    delta_elements(&new[..n * w], &base[..n * w], w, &mut delta);
    split_planes(&delta, w, &mut planes);
    planes
}

/// The inverse of [`delta_elements`]: `new` from the delta and the base.
fn undelta_elements(delta: &[u8], base: &[u8], w: usize, out: &mut Vec<u8>) {
    per_element!(w, delta, base, out, |d, y| y.ordered().wrapping_add(d.unzigzag()).unordered());
}

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

/// Reads the width, the byte planes and the tail of a codec 2 or 3
/// payload for a `raw_len`-byte chunk: (width, the planes one after
/// another, the tail).
fn read_planes<'a>(r: &mut crate::Reader<'a>, raw_len: usize) -> Result<(usize, Vec<u8>, &'a [u8]), FormatError> {
    let bad = |m: String| invalid("chunk record", m);
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
                let plane = decompress_one_frame(bytes, n).map_err(|e| bad(format!("byte plane {j} does not decode within {n} bytes: {e}")))?;
                if plane.len() != n {
                    return Err(bad(format!("byte plane {j} decodes to {} bytes, {n} expected", plane.len())));
                }
                planes.extend_from_slice(&plane);
            }
            _ => return Err(bad(format!("byte plane {j} has mode {mode} and {len} bytes (raw planes hold {n})"))),
        }
    }
    let tail = r.take(raw_len - n * w)?;
    Ok((w, planes, tail))
}

/// Decodes a codec 2 payload to exactly `raw_len` bytes.
fn decode_planes(payload: &[u8], raw_len: usize) -> Result<Vec<u8>, FormatError> {
    let mut r = crate::Reader::new("chunk record", payload);
    let (w, planes, tail) = read_planes(&mut r, raw_len)?;
    r.finish()?;
    let mut raw = Vec::with_capacity(raw_len);
    join_planes(&planes, w, &mut raw);
    raw.extend_from_slice(tail);
    Ok(raw)
}

/// The base a delta record (codec 3) is decoded against; None for a record
/// that decodes alone. Checks only the header and the base id's presence.
pub fn delta_base(record: &[u8]) -> Result<Option<Id>, FormatError> {
    let h = read_header(record)?;
    if h.codec != CODEC_DELTA {
        return Ok(None);
    }
    crate::Reader::new("chunk record", &record[HEADER_LEN..]).id().map(Some)
}

/// The element width a byte-plane or delta record (codec 2 or 3) was
/// encoded with, for re-encoding its chunk alone; 0 for other records.
pub fn element_width(record: &[u8]) -> u8 {
    let at = match record.first() {
        Some(&CODEC_PLANES) => HEADER_LEN,
        Some(&CODEC_DELTA) => HEADER_LEN + 32,
        _ => return 0,
    };
    record.get(at).copied().filter(|w| matches!(w, 2 | 4 | 8)).unwrap_or(0)
}

/// Proof that whoever sends it holds a chunk's bytes (not just its id):
/// BLAKE3 in derive-key mode over the raw bytes. A reader names the delta
/// bases it holds with these, and a hub sends deltas only against bases
/// so proven (`protocol/wire.md`, "Deltas"): a delta and the chunk's bytes
/// give away the base's bytes.
pub fn base_proof(raw: &[u8]) -> [u8; 32] {
    *blake3::Hasher::new_derive_key("ferry 2026-12 delta base proof v1").update(raw).finalize().as_bytes()
}

/// Longest chain of delta records a reader follows: a delta, its base, the
/// base's base, ... (`protocol/tree.md`, section 3).
pub const MAX_DELTA_CHAIN: usize = 8;

/// Decodes a delta record (codec 3) against `base`, the raw bytes of the
/// chunk it names (which the caller has verified against that id). The
/// result is not verified here: [`decode_delta_verified`] checks it against
/// the record's chunk id.
pub fn decode_delta(record: &[u8], base: &[u8]) -> Result<Vec<u8>, FormatError> {
    let h = read_header(record)?;
    let bad = |m: String| invalid("chunk record", m);
    if h.codec != CODEC_DELTA {
        return Err(bad(format!("codec {} is not a delta", h.codec)));
    }
    let raw_len = h.raw_len as usize;
    if base.len() != raw_len {
        return Err(bad(format!("the delta's base has {} bytes, the chunk {raw_len}", base.len())));
    }
    let mut r = crate::Reader::new("chunk record", &record[HEADER_LEN..]);
    r.id()?;
    let (w, planes, tail) = read_planes(&mut r, raw_len)?;
    r.finish()?;
    let n = raw_len / w;
    let mut delta = Vec::with_capacity(n * w);
    join_planes(&planes, w, &mut delta);
    let mut raw = Vec::with_capacity(raw_len);
    undelta_elements(&delta, &base[..n * w], w, &mut raw);
    raw.extend_from_slice(tail);
    Ok(raw)
}

/// Decompresses `payload`, which must be exactly one zstd frame, into at
/// most `limit` bytes (the caller checks the length it wanted).
fn decompress_one_frame(payload: &[u8], limit: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|d| one_zstd_frame(payload).and_then(|()| d.borrow_mut().decompress(payload, limit)))
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
    verified(id, decode(record)?)
}

/// [`decode_delta`], then checks that the bytes hash to `id`
/// ([`FormatError::HashMismatch`] if not).
pub fn decode_delta_verified(id: &Id, record: &[u8], base: &[u8]) -> Result<Vec<u8>, FormatError> {
    verified(id, decode_delta(record, base)?)
}

/// `raw` if it hashes to `id`.
fn verified(id: &Id, raw: Vec<u8>) -> Result<Vec<u8>, FormatError> {
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

    #[test]
    fn a_nudged_tensor_costs_less_as_a_delta_than_alone() {
        let base = weights(32 * 1024, 5);
        // A fine-tune's step: every value moves by about 16 bf16 steps.
        let step = weights(32 * 1024, 6);
        let new: Vec<u8> = base
            .chunks_exact(2)
            .zip(step.chunks_exact(2))
            .flat_map(|(b, s)| {
                let f = |c: &[u8]| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
                let v = f(b) + 0.1 * f(s);
                (((v.to_bits() + 0x8000) >> 16) as u16).to_le_bytes()
            })
            .collect();
        let mut enc = Encoder::new(DEFAULT_ZSTD_LEVEL);
        let alone = enc.encode_hinted(&new, 2);
        let base_id = Id::of_chunk(&base);
        let delta = enc.encode_delta(&new, 2, &base_id, &base).expect("a delta pays");
        assert_eq!(delta[0], CODEC_DELTA);
        assert!(delta.len() * 100 < alone.len() * 85, "delta {} vs alone {}", delta.len(), alone.len());
        assert_eq!(delta_base(&delta).unwrap(), Some(base_id));
        assert_eq!(decode_delta(&delta, &base).unwrap(), new);
        assert!(decode(&delta).unwrap_err().to_string().contains("against its base"));
        // The wrong base decodes to other bytes, which fail verification.
        let other = weights(32 * 1024, 7);
        assert_ne!(decode_delta(&delta, &other).unwrap(), new);
        assert!(decode_delta(&delta, &base[2..]).is_err());
        // Unrelated bytes gain nothing from a delta.
        assert!(enc.encode_delta(&ferry_testkit::noise(65536, 1), 2, &base_id, &ferry_testkit::noise(65536, 2)).is_none());
    }

    proptest! {
        #[test]
        fn deltas_round_trip_any_values(
            pairs in proptest::collection::vec((any::<u64>(), any::<u64>(), 0u8..4), 1..5000),
            width in prop_oneof![Just(2u8), Just(4), Just(8)],
            extra in 0usize..8,
        ) {
            // Pairs close together (a nudge), equal, or unrelated, with NaNs,
            // infinities, denormals and negative zeros among them.
            let special = [0x7ff8_0000_0000_0001u64, 0xfff0_0000_0000_0000, 1, 0x8000_0000_0000_0000, 0x7fc0_0001_7f80_0000, 0xffff_ffff_ffff_ffff];
            let (mut new, mut base) = (Vec::new(), Vec::new());
            for &(a, b, kind) in &pairs {
                let (x, y) = match kind {
                    0 => (a, a ^ (b & 0xff)),
                    1 => (a, a),
                    2 => (special[(a % 6) as usize], special[(b % 6) as usize]),
                    _ => (a, b),
                };
                new.extend_from_slice(&x.to_le_bytes());
                base.extend_from_slice(&y.to_le_bytes());
            }
            new.extend(std::iter::repeat_n(7, extra));
            base.extend(std::iter::repeat_n(9, extra));
            new.truncate(MAX_CHUNK);
            base.truncate(MAX_CHUNK);
            let id = Id::of_chunk(&base);
            if let Some(rec) = Encoder::new(DEFAULT_ZSTD_LEVEL).encode_delta(&new, width, &id, &base) {
                prop_assert!(rec.len() <= MAX_RECORD_LEN);
                prop_assert_eq!(decode_delta(&rec, &base).unwrap(), new.clone());
            }
            // The transform alone is a bijection for every bit pattern.
            let w = width as usize;
            let whole = new.len() / w * w;
            let (mut d, mut back) = (Vec::new(), Vec::new());
            delta_elements(&new[..whole], &base[..whole], w, &mut d);
            undelta_elements(&d, &base[..whole], w, &mut back);
            prop_assert_eq!(&back[..], &new[..whole]);
        }

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

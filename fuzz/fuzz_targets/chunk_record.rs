//! Stored/wire chunk records: `ferry_core::codec::decode` and `decode_verified`
//! (every codec, byte planes among them), and `decode_delta` against a base
//! taken from the input.
//!
//! Input: a chunk record. When the input is at least 32 bytes long its first
//! 32 bytes are also tried as the claimed id of the rest.
#![no_main]

use ferry_core::chunking::MAX_CHUNK;
use ferry_core::codec::{self, Encoder, DEFAULT_ZSTD_LEVEL, HEADER_LEN, MAX_RECORD_LEN};
use ferry_core::Id;
use libfuzzer_sys::fuzz_target;

fn check_record(rec: &[u8]) -> Option<Vec<u8>> {
    let header = codec::read_header(rec);
    let decoded = codec::decode(rec);
    match (&header, &decoded) {
        (Err(_), Ok(_)) => panic!("decode accepted a record whose header is refused"),
        (Ok(h), Ok(raw)) => {
            assert!(rec.len() <= MAX_RECORD_LEN);
            assert_eq!(raw.len(), h.raw_len as usize, "decoded length differs from the header");
            assert!(raw.len() <= MAX_CHUNK);
            match h.codec {
                codec::CODEC_RAW => assert_eq!(&raw[..], &rec[HEADER_LEN..], "raw codec must return the payload"),
                codec::CODEC_ZSTD | codec::CODEC_PLANES => {}
                codec::CODEC_DELTA => panic!("decode accepted a delta record without its base"),
                c => panic!("decode accepted unknown codec {c}"),
            }
            // The id of what was decoded verifies; any other id does not.
            let id = Id::of_chunk(raw);
            assert_eq!(codec::decode_verified(&id, rec).as_ref(), Ok(raw));
            let mut other = id;
            other.0[0] ^= 1;
            assert!(codec::decode_verified(&other, rec).is_err());
            // What we decoded we can store again, and read back.
            if raw.len() <= 64 * 1024 {
                for width in [0, 2, 4, 8] {
                    let again = Encoder::new(DEFAULT_ZSTD_LEVEL).encode_hinted(raw, width);
                    assert!(again.len() <= MAX_RECORD_LEN);
                    assert_eq!(codec::decode_verified(&id, &again).as_ref(), Ok(raw), "re-encoded chunk does not round-trip");
                }
            }
        }
        _ => {}
    }
    decoded.ok()
}

/// A delta record (codec 3) against a base of the input's choosing: it
/// decodes to its header's length or fails cleanly, and what it decodes to
/// encodes again as a delta against the same base.
fn check_delta(base: &[u8], rec: &[u8]) {
    if let Ok(raw) = codec::decode_delta(rec, base) {
        let h = codec::read_header(rec).expect("decode_delta checked the header");
        assert_eq!(h.codec, codec::CODEC_DELTA);
        assert_eq!(raw.len(), h.raw_len as usize);
        assert_eq!(raw.len(), base.len());
        let base_id = Id::of_chunk(base);
        for width in [2, 4, 8] {
            if let Some(again) = Encoder::new(DEFAULT_ZSTD_LEVEL).encode_delta(&raw, width, &base_id, base) {
                assert!(again.len() <= MAX_RECORD_LEN);
                assert_eq!(codec::delta_base(&again), Ok(Some(base_id)));
                assert_eq!(codec::decode_delta(&again, base).as_ref(), Ok(&raw), "re-encoded delta does not round-trip");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check_record(data);
    // First byte: where the base ends and the delta record starts.
    if let Some((&split, rest)) = data.split_first() {
        let at = (split as usize * 4).min(rest.len());
        check_delta(&rest[..at], &rest[at..]);
    }
    if data.len() >= 32 {
        let claimed = Id::from_slice(&data[..32]).expect("32 bytes");
        let rec = &data[32..];
        let plain = check_record(rec);
        match codec::decode_verified(&claimed, rec) {
            Ok(raw) => {
                assert_eq!(Some(&raw), plain.as_ref());
                assert_eq!(Id::of_chunk(&raw), claimed);
            }
            Err(_) => assert!(plain.is_none_or(|raw| Id::of_chunk(&raw) != claimed)),
        }
    }
});

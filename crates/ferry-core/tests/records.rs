//! Chunk records have one encoding per codec: a zstd payload is exactly one
//! zstd frame, as `protocol/tree.md` says.

use ferry_core::codec::{decode, Encoder};
use ferry_core::FormatError;

fn record(codec: u8, raw_len: u32, payload: &[u8]) -> Vec<u8> {
    let mut r = vec![codec];
    r.extend_from_slice(&raw_len.to_le_bytes());
    r.extend_from_slice(payload);
    r
}

fn refused(r: Result<Vec<u8>, FormatError>) -> String {
    match r {
        Err(e) => e.to_string(),
        Ok(raw) => panic!("accepted, decoding to {} bytes", raw.len()),
    }
}

#[test]
fn zstd_records_with_two_frames_or_a_skippable_frame_are_refused() {
    let raw = vec![7u8; 5000];
    let honest = Encoder::new(1).encode(&raw);
    assert_eq!(honest[0], 1, "5000 equal bytes compress");
    assert_eq!(decode(&honest).unwrap(), raw);
    let frame = &honest[5..];
    let half = zstd::bulk::compress(&raw[..2500], 1).unwrap();

    // The same bytes as two frames of half each.
    let two = [half.clone(), half].concat();
    assert!(refused(decode(&record(1, 5000, &two))).contains("more than one zstd frame"));

    // A skippable frame before the real one.
    let mut skippable = 0x184D_2A50u32.to_le_bytes().to_vec();
    skippable.extend_from_slice(&4u32.to_le_bytes());
    skippable.extend_from_slice(b"junk");
    let with_skippable = [skippable.clone(), frame.to_vec()].concat();
    assert!(refused(decode(&record(1, 5000, &with_skippable))).contains("skippable"));

    // ... or after it.
    let trailing = [frame.to_vec(), skippable].concat();
    assert!(refused(decode(&record(1, 5000, &trailing))).contains("more than one zstd frame"));
}

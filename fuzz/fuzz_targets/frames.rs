//! The wire: `ferry_proto::FrameDecoder` fed in pieces, and
//! `ferry_proto::Message::decode` on every frame.
//!
//! Input: `split:u8  stream...`. `split` seeds the sizes of the pieces the
//! stream is delivered in (1..=64 bytes, as a transport might).
#![no_main]

use ferry_proto::frame::HEADER_LEN;
use ferry_proto::{FrameDecoder, FrameError, Message, MAX_FRAME_LEN};
use libfuzzer_sys::fuzz_target;

/// A decoded frame: its kind and payload.
type Frame = (u8, Vec<u8>);

/// Every frame the decoder yields, and how the stream ended.
fn drain(d: &mut FrameDecoder, frames: &mut Vec<Frame>) -> Result<(), FrameError> {
    while let Some(f) = d.next_frame()? {
        assert!(f.1.len() <= MAX_FRAME_LEN);
        frames.push(f);
    }
    Ok(())
}

fn decode_stream(stream: &[u8], split: u8) -> (Vec<Frame>, Result<(), FrameError>) {
    let mut d = FrameDecoder::new();
    let mut frames = Vec::new();
    let mut x = split as u32 | 0x100;
    let mut rest = stream;
    while !rest.is_empty() {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = (((x >> 16) % 64) as usize + 1).min(rest.len());
        d.push(&rest[..n]);
        rest = &rest[n..];
        if let Err(e) = drain(&mut d, &mut frames) {
            return (frames, Err(e));
        }
    }
    let end = d.finish();
    (frames, end)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, stream)) = data.split_first() else { return };
    let (frames, end) = decode_stream(stream, split);

    // Pieces do not matter: delivering it all at once gives the same frames.
    let mut whole = FrameDecoder::new();
    whole.push(stream);
    let mut frames_whole = Vec::new();
    let end_whole = drain(&mut whole, &mut frames_whole).and_then(|_| whole.finish());
    assert_eq!(frames, frames_whole, "frames depend on how the stream was split");
    assert_eq!(end.is_ok(), end_whole.is_ok());

    // The frames are a prefix of the stream; a clean end means all of it.
    let mut reencoded = Vec::new();
    for (kind, payload) in &frames {
        ferry_proto::frame::encode_frame(*kind, payload, &mut reencoded);
    }
    assert!(stream.starts_with(&reencoded));
    if end.is_ok() {
        assert_eq!(reencoded.len(), stream.len());
    } else {
        assert!(reencoded.len() < stream.len());
        assert!(stream.len() - reencoded.len() >= 1);
    }

    for (kind, payload) in &frames {
        let Ok(msg) = Message::decode(*kind, payload) else { continue };
        // Round trip: the message re-encodes to exactly the frame received.
        assert_eq!(msg.tag(), *kind);
        assert_eq!(&msg.payload(), payload, "{msg:?} re-encodes differently");
        let frame = msg.to_frame();
        assert_eq!(frame.len(), HEADER_LEN + payload.len());
        assert_eq!(&frame[HEADER_LEN..], &payload[..]);
        assert_eq!(Message::decode(msg.tag(), &msg.payload()).as_ref(), Ok(&msg));
    }
});

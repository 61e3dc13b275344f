//! The chunking rule on hostile files: `ferry_core::safetensors::Layout::parse`
//! and `ferry_core::chunking::Chunker`.
//!
//! Input: a file. Its first byte picks a buffer size; when the rest does not
//! start like a safetensors file, it is wrapped in a header built from it,
//! so most inputs exercise the tensor rule with arbitrary offsets.
#![no_main]

use ferry_core::chunking::{chunk_all_with_widths, Chunker, MAX_CHUNK};
use ferry_core::safetensors::Layout;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else { return };
    let file: Vec<u8> = if rest.len() >= 8 && rest[8..].first() == Some(&b'{') {
        rest.to_vec()
    } else {
        // A header whose tensor offsets come from the input.
        let n = |i: usize| rest.get(i).copied().unwrap_or(0) as u64 * 4099;
        let header = format!(
            r#"{{"a":{{"dtype":"BF16","shape":[{}],"data_offsets":[{},{}]}},"b":{{"dtype":"X","shape":[],"data_offsets":[{},{}]}}}}"#,
            n(1) * 2 / 2,
            n(0),
            n(0) + n(1) * 2,
            n(2) + n(0) + n(1) * 2,
            n(3) * 64 + n(2) + n(0) + n(1) * 2
        );
        let mut f = (header.len() as u64).to_le_bytes().to_vec();
        f.extend_from_slice(header.as_bytes());
        f.extend_from_slice(rest);
        f
    };
    if let Some(l) = Layout::parse(&file) {
        assert!(l.tensors.windows(2).all(|w| w[0].start + w[0].len <= w[1].start));
        assert!(l.tensors.iter().all(|t| t.start >= l.data_start && t.len > 0));
    }
    let whole = chunk_all_with_widths(&file);
    let mut at = 0;
    for &(o, l, _) in &whole {
        assert_eq!(o, at);
        assert!(l > 0 && l <= MAX_CHUNK);
        at += l;
    }
    assert_eq!(at, file.len());
    // Streaming in pieces of any size gives the same cuts.
    let piece = 1 + step as usize * 997;
    let mut chunker = Chunker::new(&file);
    let (mut base, mut pos, mut streamed) = (0, 0, Vec::new());
    loop {
        pos = (pos + piece).min(file.len());
        let eof = pos == file.len();
        let cuts = chunker.cut(&file[base..pos], eof);
        let mut start = base;
        for (end, w) in cuts.ends.iter().zip(&cuts.widths) {
            streamed.push((start, base + end - start, *w));
            start = base + end;
        }
        base += cuts.consumed;
        if eof {
            break;
        }
    }
    assert_eq!(base, file.len());
    assert_eq!(streamed, whole);
});

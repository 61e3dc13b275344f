//! What a store reads back from a bucket: pack indexes
//! (`ferry_store::pack::decode_index`), journal entries
//! (`ferry_store::JournalEntry::decode`), pack announcements
//! (`ferry_store::pack::decode_announcement`) and retirements
//! (`ferry_store::pack::decode_retirement`). The first byte picks which.
#![no_main]

use ferry_store::pack::{
    decode_announcement, decode_index, decode_retirement, encode_announcement, encode_retirement, Kind, ENTRY_LEN, ENTRY_LEN_1, FOOTER_LEN, MAGIC, MAGIC_1,
};
use ferry_store::JournalEntry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, data)) = data.split_first() else { return };
    if which % 4 == 3 {
        let Ok(retirement) = decode_retirement(data) else { return };
        assert_eq!(encode_retirement(&retirement), data, "a decoded retirement does not re-encode to its bytes");
    } else if which % 4 == 2 {
        let Ok(packs) = decode_announcement(data) else { return };
        assert_eq!(encode_announcement(&packs), data, "a decoded announcement does not re-encode to its bytes");
    } else if which % 4 == 0 {
        let Ok(entries) = decode_index(data, data.len() as u64) else { return };
        // Every entry lies, in order, between the magic and the index; a
        // base goes with a delta record and only with one.
        let entry_len = if data.ends_with(MAGIC_1) { ENTRY_LEN_1 } else { ENTRY_LEN };
        let data_end = data.len() - entries.len() * entry_len - FOOTER_LEN;
        let mut next = MAGIC.len();
        for e in &entries {
            assert!(e.offset as usize >= next && e.offset as usize + e.len as usize <= data_end);
            assert!(matches!(e.kind, Kind::Record | Kind::Node));
            assert!(e.base.is_none() || (e.kind == Kind::Record && e.codec == ferry_core::codec::CODEC_DELTA));
            next = e.offset as usize + e.len as usize;
        }
    } else {
        let Ok(entry) = JournalEntry::decode(data) else { return };
        // One encoding per entry.
        assert_eq!(entry.encode(), data, "a decoded journal entry does not re-encode to its bytes");
    }
});

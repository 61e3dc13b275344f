//! Revisions: `ferry_core::revision::Revision::decode`.
#![no_main]

use std::collections::HashSet;

use ferry_core::revision::{revision_id, Revision};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(rev) = Revision::decode(data) else { return };
    // Canonical: re-encodes to the very same bytes, so ids agree.
    let enc = rev.encode();
    assert_eq!(enc, data, "decoded revision does not re-encode to its bytes");
    assert_eq!(rev.id(), revision_id(data));
    // Whatever the decoder accepts, the constructor accepts (and vice versa
    // for what it writes), with the same result.
    let built = Revision::new(rev.parents.clone(), rev.author.clone(), rev.time, rev.message.clone(), rev.entries.clone())
        .expect("Revision::new refuses a revision that decode accepted");
    assert_eq!(built, rev);
    for e in &rev.entries {
        assert_eq!(rev.entry(&e.path), Some(e), "entry lookup fails for {:?}", e.path);
    }
    let _ = rev.entries.iter().try_fold(0u64, |a, e| a.checked_add(e.size));
    // Checked apart from the decoder's own code: no two paths are one file,
    // or a file and a directory, on a case-insensitive file system.
    let files: HashSet<String> = rev.entries.iter().map(|e| e.path.to_ascii_lowercase()).collect();
    assert_eq!(files.len(), rev.entries.len(), "two paths differ only in case");
    for f in &files {
        let mut p = f.as_str();
        while let Some((dir, _)) = p.rsplit_once('/') {
            assert!(!files.contains(dir), "{dir:?} is a file and, ignoring case, the directory of {f:?}");
            p = dir;
        }
    }
});

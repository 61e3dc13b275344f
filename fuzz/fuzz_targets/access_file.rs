//! The hub's access file: `serde_json::from_slice::<AccessFile>` (what
//! `AccessFile::load` does with the file's bytes), then `check` with a
//! fuzzed token and the glob-based grants.
//!
//! Input: `n:u8  token[n]  json...` (the token is taken lossily as UTF-8).
#![no_main]

use ferry_service::{AccessFile, Grant, Scope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else { return };
    let n = (n as usize).min(rest.len());
    let token = String::from_utf8_lossy(&rest[..n]).into_owned();
    let json = &rest[n..];
    let Ok(access) = serde_json::from_slice::<AccessFile>(json) else { return };

    let repos = ["org/m", "org/llama", "a/b/c", "", token.as_str()];
    if let Some(rec) = access.check(&token, 0) {
        let rest = token.strip_prefix("fy_").expect("a valid token starts with fy_");
        let (id, secret) = rest.split_once('_').expect("a valid token has an id");
        assert_eq!(rec.id, id);
        assert_eq!(blake3::Hash::from_hex(&rec.hash).ok(), Some(blake3::hash(secret.as_bytes())));
        let grant = Grant::Token(rec.id.clone());
        for r in repos {
            if access.can_write(&grant, r) {
                assert!(rec.scope.covers(Scope::Write));
                assert!(access.can_read(&grant, r), "may write {r:?} but not read it");
            }
        }
    }
    let anonymous = Grant::Anonymous;
    for r in repos {
        assert_eq!(access.can_read(&anonymous, r), access.is_public(r));
        assert!(!access.can_write(&anonymous, r));
    }
    // What the hub saves, it can load again.
    let saved = serde_json::to_vec_pretty(&access).expect("serializable");
    let again: AccessFile = serde_json::from_slice(&saved).expect("saved access file does not load");
    assert_eq!(serde_json::to_vec_pretty(&again).unwrap(), saved);
});

//! Golden frames: protocol/vectors/wire.json holds one frame of every
//! message type in hex; each must decode to the described message and
//! re-encode to the same bytes. `FERRY_BLESS=1` rewrites the file.

use ferry_core::Id;
use ferry_proto::{ErrorCode, FrameDecoder, Message, RepoRefs};
use serde_json::{json, Value};

fn samples() -> Vec<(&'static str, Message)> {
    let a = Id::of_chunk(b"a");
    let b = Id::of_chunk(b"b");
    let rec_a = vec![0, 1, 0, 0, 0, b'a'];
    let node = vec![1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0]; // not a valid node: frames do not check contents
    vec![
        ("Hello: versions [1], token fy_x, client ferry/0.1", Message::Hello { versions: vec![1], token: "fy_x".into(), client: "ferry/0.1".into() }),
        ("Welcome: version 1, server hub", Message::Welcome { version: 1, server: "hub".into() }),
        ("Error: code 6 (Conflict), 'pull first'", Message::Error { code: ErrorCode::Conflict, message: "pull first".into() }),
        ("Done", Message::Done),
        ("ListRefs org/m", Message::ListRefs { repo: "org/m".into() }),
        ("Refs: public, main -> BLAKE3('a')", Message::Refs { public: true, branches: vec![("main".into(), a)] }),
        (
            "GetHistory org/m from [BLAKE3('a')] until [BLAKE3('b')] max 64",
            Message::GetHistory { repo: "org/m".into(), from: vec![a], until: vec![b], max: 64 },
        ),
        ("Revisions: one blob 'FRV1'", Message::Revisions { revisions: vec![b"FRV1".to_vec()] }),
        ("HaveRevisions org/m [BLAKE3('a')]", Message::HaveRevisions { repo: "org/m".into(), ids: vec![a] }),
        ("HaveNodes org/m [BLAKE3('b')]", Message::HaveNodes { repo: "org/m".into(), ids: vec![b] }),
        ("HaveChunks org/m [BLAKE3('a'), BLAKE3('b')]", Message::HaveChunks { repo: "org/m".into(), ids: vec![a, b] }),
        ("Bitmap [1,0,1,1,0,0,0,0,1]", Message::Bitmap { bits: vec![true, false, true, true, false, false, false, false, true] }),
        ("GetNodes org/m [BLAKE3('a')]", Message::GetNodes { repo: "org/m".into(), ids: vec![a] }),
        ("Nodes: one blob of 11 bytes", Message::Nodes { nodes: vec![node.clone()] }),
        ("PutNodes org/m: one blob of 11 bytes", Message::PutNodes { repo: "org/m".into(), nodes: vec![node] }),
        ("GetChunks org/m [BLAKE3('a')]", Message::GetChunks { repo: "org/m".into(), ids: vec![a] }),
        ("GetChunkBases org/m [BLAKE3('a'), BLAKE3('b')]", Message::GetChunkBases { repo: "org/m".into(), ids: vec![a, b] }),
        ("ChunkBases [none, BLAKE3('a')]", Message::ChunkBases { bases: vec![Id::default(), a] }),
        (
            "GetChunksAgainst org/m [BLAKE3('b')] held [BLAKE3('a') with proof base_proof('a')]",
            Message::GetChunksAgainst { repo: "org/m".into(), ids: vec![b], held: vec![(a, ferry_core::codec::base_proof(b"a"))] },
        ),
        ("Chunks: raw record of 'a'", Message::Chunks { chunks: vec![(a, rec_a.clone())] }),
        ("PutChunks org/m: raw record of 'a'", Message::PutChunks { repo: "org/m".into(), chunks: vec![(a, rec_a)] }),
        (
            "UpdateBranch org/m main expected BLAKE3('a') new BLAKE3('b'), no revisions",
            Message::UpdateBranch { repo: "org/m".into(), branch: "main".into(), expected: Some(a), new: b, revisions: vec![] },
        ),
        (
            "UpdateBranch org/m main, no expected head (a new branch), new BLAKE3('b'), one blob 'FRV1'",
            Message::UpdateBranch { repo: "org/m".into(), branch: "main".into(), expected: None, new: b, revisions: vec![b"FRV1".to_vec()] },
        ),
        (
            "ListRepos pattern org/* from the start, everything (since 0)",
            Message::ListRepos { pattern: "org/*".into(), after: String::new(), since: 0, hub: [0; 16], wait_ms: 0 },
        ),
        (
            "ListRepos pattern org/* after org/a, changes since 7 of hub 0x2a..., waiting up to 20 s",
            Message::ListRepos { pattern: "org/*".into(), after: "org/a".into(), since: 7, hub: [0x2a; 16], wait_ms: 20_000 },
        ),
        (
            "Repos: more follows; changes only, complete up to 9 of hub 0x2a...; org/m private, main -> BLAKE3('a')",
            Message::Repos {
                more: true,
                changes_only: true,
                hub: [0x2a; 16],
                seq: 9,
                repos: vec![RepoRefs { name: "org/m".into(), public: false, branches: vec![("main".into(), a)] }],
            },
        ),
        ("PutRevisions org/m: one blob 'FRV1'", Message::PutRevisions { repo: "org/m".into(), revisions: vec![b"FRV1".to_vec()] }),
        ("DeleteBranch org/m tags/v1 if at BLAKE3('a')", Message::DeleteBranch { repo: "org/m".into(), branch: "tags/v1".into(), expected: a }),
        ("DeleteRepo org/m", Message::DeleteRepo { repo: "org/m".into() }),
        ("GetForgotten org/m: BLAKE3('a'), BLAKE3('b')", Message::GetForgotten { repo: "org/m".into(), ids: vec![a, b] }),
        ("Forget org/m: BLAKE3('a')", Message::Forget { repo: "org/m".into(), ids: vec![a] }),
    ]
}

#[test]
fn golden_frames_decode_and_reencode() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../protocol/vectors/wire.json");
    if std::env::var_os("FERRY_BLESS").is_some() {
        let v: Vec<Value> = samples().iter().map(|(d, m)| json!({ "meaning": d, "hex": hex::encode(m.to_frame()) })).collect();
        std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
    }
    let stored: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(stored.len(), samples().len());
    let tags: std::collections::HashSet<u8> = samples().iter().map(|(_, m)| m.tag()).collect();
    assert_eq!(tags.len(), 29, "every message type has a golden frame");
    for (v, (meaning, m)) in stored.iter().zip(samples()) {
        assert_eq!(v["meaning"], meaning);
        let bytes = hex::decode(v["hex"].as_str().unwrap()).unwrap();
        let mut d = FrameDecoder::new();
        d.push(&bytes);
        let (kind, payload) = d.next_frame().unwrap().unwrap();
        let decoded = Message::decode(kind, &payload).unwrap();
        assert_eq!(decoded, m, "{meaning}");
        assert_eq!(decoded.to_frame(), bytes, "{meaning}");
    }
}

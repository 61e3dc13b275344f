//! Checks the golden vectors in protocol/vectors/store.json: a pack of a
//! chunk record, a delta record and a tree node, a journal entry, an announcement of
//! two packs and a retirement of one (`protocol/store.md` §6, §7), built from core.json's encodings.
//!
//! `FERRY_BLESS=1 cargo test -p ferry-store --test golden` rewrites the file
//! (only ever do that for a deliberate, versioned format change).

use ferry_core::Id;
use ferry_store::pack::{decode_announcement, decode_index, decode_retirement, encode_announcement, encode_retirement, Kind, PackWriter, Retirement};
use ferry_store::{BranchMove, JournalEntry};
use serde_json::{json, Value};

fn vectors_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../protocol/vectors")
}

fn core_encoding(name: &str) -> (Vec<u8>, Id) {
    let core: Value = serde_json::from_str(&std::fs::read_to_string(vectors_dir().join("core.json")).unwrap()).unwrap();
    let e = &core["encodings"][name];
    (hex::decode(e["hex"].as_str().unwrap()).unwrap(), e["id"].as_str().unwrap().parse().unwrap())
}

/// Two packs of one writer's run: its first and its second.
const ANNOUNCED: [[u8; 16]; 2] =
    [[0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0x07, 0x18, 0, 0, 0, 0, 0, 0, 0, 0], [0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0x07, 0x18, 0, 0, 0, 0, 0, 0, 0, 1]];

fn compute() -> Value {
    let (record, record_id) = core_encoding("chunk_record");
    let (node, node_id) = core_encoding("node");
    let (revision, revision_id) = core_encoding("revision");
    let mut pack = PackWriter::default();
    let header = ferry_core::codec::read_header(&record).unwrap();
    pack.add_record(record_id, &record, header.raw_len, header.codec, None);
    let (delta, delta_id) = core_encoding("delta_record");
    let delta_header = ferry_core::codec::read_header(&delta).unwrap();
    let base = ferry_core::codec::delta_base(&delta).unwrap();
    pack.add_record(delta_id, &delta, delta_header.raw_len, delta_header.codec, base);
    pack.add_node(node_id, node);
    let journal = JournalEntry {
        revisions: vec![revision],
        branch: Some(BranchMove { seq: 1, repo: "org/model".into(), branch: "main".into(), head: Some(revision_id), created: 1_767_225_600 }),
        forgotten: Vec::new(),
    };
    let forgot = JournalEntry { forgotten: vec![("org/model".into(), revision_id)], ..Default::default() };
    json!({
        "pack": { "record": record_id.to_hex(), "delta": delta_id.to_hex(), "base": base.unwrap().to_hex(), "node": node_id.to_hex(), "hex": hex::encode(pack.seal()) },
        "journal_entry": { "repo": "org/model", "branch": "main", "seq": 1, "head": revision_id.to_hex(), "hex": hex::encode(journal.encode()) },
        "journal_entry_forgotten": { "repo": "org/model", "revision": revision_id.to_hex(), "hex": hex::encode(forgot.encode()) },
        "announcement": { "packs": [hex::encode(ANNOUNCED[0]), hex::encode(ANNOUNCED[1])], "hex": hex::encode(encode_announcement(&ANNOUNCED)) },
        "retirement": { "at": 1_767_225_600u64, "packs": [hex::encode(ANNOUNCED[0])], "hex": hex::encode(encode_retirement(&Retirement { at: 1_767_225_600, packs: vec![ANNOUNCED[0]] })) },
    })
}

#[test]
fn golden_vectors_match() {
    let path = vectors_dir().join("store.json");
    let now = compute();
    if std::env::var_os("FERRY_BLESS").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&now).unwrap() + "\n").unwrap();
    }
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("protocol/vectors/store.json")).unwrap();
    assert_eq!(stored, now, "golden vectors changed: packs or journal entries no longer match protocol/vectors/store.json");
}

#[test]
fn golden_encodings_decode() {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(vectors_dir().join("store.json")).unwrap()).unwrap();
    let pack = hex::decode(v["pack"]["hex"].as_str().unwrap()).unwrap();
    let entries = decode_index(&pack, pack.len() as u64).unwrap();
    assert_eq!(
        entries.iter().map(|e| (e.kind, e.id.to_hex())).collect::<Vec<_>>(),
        [
            (Kind::Record, v["pack"]["record"].as_str().unwrap().to_owned()),
            (Kind::Record, v["pack"]["delta"].as_str().unwrap().to_owned()),
            (Kind::Node, v["pack"]["node"].as_str().unwrap().to_owned())
        ]
    );
    assert_eq!(entries[1].base.map(|b| b.to_hex()).as_deref(), v["pack"]["base"].as_str());
    let journal = hex::decode(v["journal_entry"]["hex"].as_str().unwrap()).unwrap();
    let entry = JournalEntry::decode(&journal).unwrap();
    assert_eq!(entry.encode(), journal);
    assert_eq!(entry.branch.unwrap().head.unwrap().to_hex(), v["journal_entry"]["head"].as_str().unwrap());
    let forgot = JournalEntry::decode(&hex::decode(v["journal_entry_forgotten"]["hex"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(forgot.forgotten[0].1.to_hex(), v["journal_entry_forgotten"]["revision"].as_str().unwrap());
    let announced = decode_announcement(&hex::decode(v["announcement"]["hex"].as_str().unwrap()).unwrap()).unwrap();
    let named: Vec<String> = v["announcement"]["packs"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect();
    assert_eq!(announced.iter().map(hex::encode).collect::<Vec<_>>(), named);
    let retired = decode_retirement(&hex::decode(v["retirement"]["hex"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(retired.at, v["retirement"]["at"].as_u64().unwrap());
    assert_eq!(hex::encode(retired.packs[0]), v["retirement"]["packs"][0].as_str().unwrap());
}

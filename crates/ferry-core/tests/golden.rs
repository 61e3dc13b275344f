//! Checks the golden vectors in protocol/vectors/core.json: chunk
//! boundaries, chunk ids, tree nodes and file ids for fixed inputs (a
//! safetensors file among them), and the encodings of a node, chunk records
//! (zstd and byte planes) and a revision.
//!
//! `FERRY_BLESS=1 cargo test -p ferry-core --test golden` rewrites the file
//! (only ever do that for a deliberate, versioned format change).

use ferry_core::chunking::{chunk_all, chunk_all_with_widths};
use ferry_core::revision::{Entry, Revision};
use ferry_core::tree::{build, Node};
use ferry_core::{codec, Id};
use ferry_testkit::xorshift64_bytes;
use serde_json::{json, Value};

fn chunk_vector(seed: u64, len: usize) -> Value {
    let data = xorshift64_bytes(len, seed);
    let chunks = chunk_all(&data);
    let leaves: Vec<(Id, u64)> = chunks.iter().map(|&(o, l)| (Id::of_chunk(&data[o..o + l]), l as u64)).collect();
    let (root, nodes) = build(&leaves);
    json!({
        "input": { "generator": "xorshift64", "seed": seed, "len": len },
        "chunks": chunks.iter().zip(&leaves).map(|(&(o, l), (id, _))| json!({ "offset": o, "len": l, "id": id.to_hex() })).collect::<Vec<_>>(),
        "nodes": nodes.iter().map(|(id, n)| json!({ "id": id.to_hex(), "height": n.height, "children": n.children.len() })).collect::<Vec<_>>(),
        "file_id": root.id.to_hex(),
        "size": root.size,
    })
}

/// The header of the safetensors vector; its data is xorshift64 bytes.
const SAFETENSORS_HEADER: &str = r#"{"__metadata__":{"format":"pt"},"embed":{"dtype":"BF16","shape":[100000],"data_offsets":[0,200000]},"norm":{"dtype":"F32","shape":[256],"data_offsets":[200000,201024]},"w":{"dtype":"BF16","shape":[65536],"data_offsets":[201024,332096]}}"#;

/// The safetensors vector's bytes: the header length, the header, then
/// 332 096 xorshift64 bytes (seed 7) of tensor data.
fn safetensors_file() -> Vec<u8> {
    let mut f = (SAFETENSORS_HEADER.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(SAFETENSORS_HEADER.as_bytes());
    f.extend_from_slice(&xorshift64_bytes(332_096, 7));
    f
}

fn safetensors_vector() -> Value {
    let data = safetensors_file();
    let chunks = chunk_all_with_widths(&data);
    let leaves: Vec<(Id, u64)> = chunks.iter().map(|&(o, l, _)| (Id::of_chunk(&data[o..o + l]), l as u64)).collect();
    let (root, _) = build(&leaves);
    json!({
        "input": { "header": SAFETENSORS_HEADER, "data": { "generator": "xorshift64", "seed": 7, "len": 332_096 } },
        "chunks": chunks.iter().zip(&leaves).map(|(&(o, l, w), (id, _))| json!({ "offset": o, "len": l, "width": w, "id": id.to_hex() })).collect::<Vec<_>>(),
        "file_id": root.id.to_hex(),
        "size": root.size,
    })
}

/// bf16-like bytes: a random low byte, a high byte of four values.
fn planes_input() -> Vec<u8> {
    xorshift64_bytes(512, 9).iter().enumerate().map(|(i, &b)| if i % 2 == 1 { 0x3c + (b & 3) } else { b }).collect()
}

fn tree_vector(n: u64) -> Value {
    // Leaves: chunk id BLAKE3(u64 LE i), size 65536.
    let leaves: Vec<(Id, u64)> = (0..n).map(|i| (Id::of_chunk(&i.to_le_bytes()), 65536)).collect();
    let (root, nodes) = build(&leaves);
    let top = &nodes.last().expect("a root").1;
    json!({
        "leaves": { "count": n, "id": "BLAKE3(u64 LE index)", "size": 65536 },
        "node_count": nodes.len(),
        "root_height": top.height,
        "root_children": top.children.len(),
        "file_id": root.id.to_hex(),
    })
}

fn encodings() -> Value {
    let node = Node {
        height: 1,
        children: vec![ferry_core::tree::Child { id: Id::of_chunk(b"a"), size: 1 }, ferry_core::tree::Child { id: Id::of_chunk(b"bc"), size: 2 }],
    };
    let raw = b"ferry ferry ferry ferry ferry ferry ferry ferry ferry ferry ferry ferry";
    let record = codec::Encoder::new(codec::DEFAULT_ZSTD_LEVEL).encode(raw);
    let planes_raw = planes_input();
    let planes = codec::Encoder::new(codec::DEFAULT_ZSTD_LEVEL).encode_hinted(&planes_raw, 2);
    // The same chunk a little changed: every 16th value's low byte plus one.
    let nudged: Vec<u8> = planes_raw.iter().enumerate().map(|(i, &b)| if i % 32 == 0 { b.wrapping_add(1) } else { b }).collect();
    let delta = codec::Encoder::new(codec::DEFAULT_ZSTD_LEVEL).encode_delta(&nudged, 2, &Id::of_chunk(&planes_raw), &planes_raw).expect("a delta pays");
    let rev = Revision::new(
        vec![],
        "ada".into(),
        1_767_225_600,
        "first".into(),
        vec![Entry { path: "model.safetensors".into(), file_id: node.id(), size: 3, executable: false }],
    )
    .expect("valid revision");
    json!({
        "node": { "hex": hex::encode(node.encode()), "id": node.id().to_hex() },
        "chunk_record": { "raw_utf8": std::str::from_utf8(raw).expect("ascii"), "id": Id::of_chunk(raw).to_hex(), "hex": hex::encode(&record) },
        "planes_record": {
            "raw": "512 xorshift64 bytes (seed 9), every odd-indexed byte b replaced by 0x3c + (b & 3)",
            "raw_hex": hex::encode(&planes_raw),
            "width": 2,
            "id": Id::of_chunk(&planes_raw).to_hex(),
            "hex": hex::encode(&planes),
        },
        "delta_record": {
            "raw": "the planes_record chunk with the byte at every index divisible by 32 plus one (wrapping); its base is that chunk",
            "raw_hex": hex::encode(&nudged),
            "base": Id::of_chunk(&planes_raw).to_hex(),
            "id": Id::of_chunk(&nudged).to_hex(),
            "hex": hex::encode(&delta),
        },
        "revision": { "hex": hex::encode(rev.encode()), "id": rev.id().to_hex() },
    })
}

fn compute() -> Value {
    json!({
        "chunking": { "min": ferry_core::chunking::MIN_CHUNK, "avg": ferry_core::chunking::AVG_CHUNK, "max": ferry_core::chunking::MAX_CHUNK },
        "files": [chunk_vector(1, 0), chunk_vector(1, 1000), chunk_vector(2, 300_000), chunk_vector(3, 1 << 20)],
        "safetensors": safetensors_vector(),
        "trees": [tree_vector(1), tree_vector(40), tree_vector(5000)],
        "encodings": encodings(),
    })
}

#[test]
fn golden_vectors_match() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../protocol/vectors/core.json");
    let now = compute();
    if std::env::var_os("FERRY_BLESS").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&now).unwrap() + "\n").unwrap();
    }
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("protocol/vectors/core.json")).unwrap();
    assert_eq!(stored, now, "golden vectors changed: chunking, tree or encodings no longer match protocol/vectors/core.json");
}

#[test]
fn golden_encodings_decode() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../protocol/vectors/core.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let e = &v["encodings"];
    let node = hex::decode(e["node"]["hex"].as_str().unwrap()).unwrap();
    assert_eq!(Node::decode(&node).unwrap().encode(), node);
    let rec = hex::decode(e["chunk_record"]["hex"].as_str().unwrap()).unwrap();
    let id: Id = e["chunk_record"]["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(codec::decode_verified(&id, &rec).unwrap(), e["chunk_record"]["raw_utf8"].as_str().unwrap().as_bytes());
    let rev = hex::decode(e["revision"]["hex"].as_str().unwrap()).unwrap();
    assert_eq!(Revision::decode(&rev).unwrap().encode(), rev);
    let planes = hex::decode(e["planes_record"]["hex"].as_str().unwrap()).unwrap();
    assert_eq!(planes[0], codec::CODEC_PLANES);
    let id: Id = e["planes_record"]["id"].as_str().unwrap().parse().unwrap();
    let base = hex::decode(e["planes_record"]["raw_hex"].as_str().unwrap()).unwrap();
    assert_eq!(codec::decode_verified(&id, &planes).unwrap(), base);
    let delta = hex::decode(e["delta_record"]["hex"].as_str().unwrap()).unwrap();
    assert_eq!(codec::delta_base(&delta).unwrap(), Some(id));
    let raw = codec::decode_delta(&delta, &base).unwrap();
    assert_eq!(raw, hex::decode(e["delta_record"]["raw_hex"].as_str().unwrap()).unwrap());
    assert_eq!(Id::of_chunk(&raw).to_hex(), e["delta_record"]["id"].as_str().unwrap());
}

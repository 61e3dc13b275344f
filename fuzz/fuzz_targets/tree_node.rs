//! Tree nodes: `ferry_core::tree::Node::decode`.
#![no_main]

use ferry_core::tree::{node_id, Node, CHILD_LEN, MAX_FANOUT, MAX_HEIGHT, MAX_NODE_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(node) = Node::decode(data) else { return };
    assert!(data.len() <= MAX_NODE_LEN);
    assert!((1..=MAX_HEIGHT).contains(&node.height));
    assert!(node.children.len() <= MAX_FANOUT);
    assert_eq!(data.len(), 3 + node.children.len() * CHILD_LEN);
    // The encoding is canonical: a decoded node re-encodes to the same bytes,
    // so its id is the id of the bytes received.
    let enc = node.encode();
    assert_eq!(enc, data, "decoded node does not re-encode to its bytes");
    assert_eq!(node.id(), node_id(data));
    assert_eq!(Node::decode(&enc).as_ref(), Ok(&node));
    // The decoder refuses sizes that overflow, so summing them cannot.
    let total = node.children.iter().try_fold(0u64, |a, c| a.checked_add(c.size));
    assert_eq!(total, Some(node.size()));
});

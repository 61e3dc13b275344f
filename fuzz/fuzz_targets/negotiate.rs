//! `ferry_proto::negotiate::TreeDiff` driven by a hostile peer: arbitrary
//! answers (including wrong lengths), arbitrary nodes (wrong heights,
//! repeated and cyclic children) and unrequested expansions. It must never
//! panic, must keep its bookkeeping consistent, and must terminate.
//!
//! Input: a tape of bytes consumed as decisions; once it runs out, every
//! answer is "have it".
#![no_main]

use std::collections::HashSet;

use ferry_core::tree::{Child, Node};
use ferry_core::Id;
use ferry_proto::negotiate::{DiffError, Step, TreeDiff};
use libfuzzer_sys::fuzz_target;

#[path = "tape.rs"]
mod tape;
use tape::Tape;

/// Ids come from a small space so that repeats, shared subtrees and cycles
/// happen often.
fn id(b: u8) -> Id {
    Id::of_chunk(&[b])
}

fuzz_target!(|data: &[u8]| {
    let mut t = Tape(data);
    let roots: Vec<Id> = (0..t.u8_or(1) % 5).map(|_| id(t.u8_or(0))).collect();
    let mut diff = TreeDiff::new(roots.iter().copied());

    let mut asked_nodes = HashSet::new();
    let mut asked_chunks = HashSet::new();
    let mut lacking_nodes = HashSet::new();
    let mut lacking_chunks = HashSet::new();
    let mut expanded = HashSet::new();
    // At most 256 distinct child ids per kind plus the roots can ever be
    // queued, and every non-final poll removes at least one queued item.
    let bound = 3 * (roots.len() + 2 * 256) + 1;
    let mut polls = 0;
    loop {
        polls += 1;
        assert!(polls <= bound, "negotiation does not terminate");
        let batch = 1 + (t.u8_or(255) as usize % 300);
        let Some(step) = diff.poll(batch) else { break };
        match step {
            Step::AskNodes(ids) => {
                assert!(!ids.is_empty() && ids.len() <= batch);
                for i in &ids {
                    assert!(asked_nodes.insert(*i), "node asked about twice");
                }
                let mut have: Vec<bool> = ids.iter().map(|_| t.byte().is_none_or(|b| b & 1 == 1)).collect();
                if t.u8_or(0) == 0xff {
                    // A peer answering with the wrong number of bits.
                    have.push(false);
                    assert_eq!(diff.nodes_known(&ids, &have), Err(DiffError::AnswerLength { asked: ids.len(), got: have.len() }));
                    have.pop();
                }
                for (i, h) in ids.iter().zip(&have) {
                    if !h {
                        lacking_nodes.insert(*i);
                    }
                }
                diff.nodes_known(&ids, &have).expect("a well-formed answer is accepted");
            }
            Step::Expand(ids) => {
                assert!(!ids.is_empty() && ids.len() <= batch);
                for i in ids {
                    assert!(lacking_nodes.contains(&i), "expanding a node the sink has");
                    assert!(expanded.insert(i), "node expanded twice");
                    match t.u8_or(0) {
                        // The source never delivers it.
                        0xfe => continue,
                        // A node nobody asked for.
                        0xff => {
                            let stray = id(t.u8_or(0)).0.map(|b| !b);
                            let n = Node { height: 1, children: vec![] };
                            assert_eq!(diff.expanded(Id(stray), &n), Err(DiffError::Unexpected(Id(stray))));
                        }
                        _ => {}
                    }
                    let height = match t.u8_or(1) {
                        h @ 0..=3 => h,
                        h => h % 64,
                    };
                    let children = (0..t.u8_or(0) % 17).map(|_| Child { id: id(t.u8_or(0)), size: u64::from(t.u8_or(0)) }).collect();
                    let node = Node { height, children };
                    let first = diff.expanded(i, &node);
                    match &first {
                        Ok(()) => {}
                        Err(DiffError::Height { id, got, .. }) => assert!(*id == i && *got == height),
                        Err(e) => panic!("unexpected error {e}"),
                    }
                    // Expanding twice is refused (a refused node stays refused).
                    let again = diff.expanded(i, &node);
                    if first.is_ok() {
                        assert_eq!(again, Err(DiffError::Unexpected(i)));
                    } else {
                        assert!(again.is_err());
                    }
                }
            }
            Step::AskChunks(ids) => {
                assert!(!ids.is_empty() && ids.len() <= batch);
                for i in &ids {
                    assert!(asked_chunks.insert(*i), "chunk asked about twice");
                }
                let mut have: Vec<bool> = ids.iter().map(|_| t.byte().is_none_or(|b| b & 1 == 1)).collect();
                if t.u8_or(0) == 0xff {
                    have.clear();
                    assert!(diff.chunks_known(&ids, &have).is_err() || ids.is_empty());
                    have = ids.iter().map(|_| true).collect();
                }
                for (i, h) in ids.iter().zip(&have) {
                    if !h {
                        lacking_chunks.insert(*i);
                    }
                }
                diff.chunks_known(&ids, &have).expect("a well-formed answer is accepted");
            }
        }
    }
    assert_eq!(diff.poll(1), None);
    assert_eq!(diff.ids_asked, (asked_nodes.len() + asked_chunks.len()) as u64);
    let taken = diff.take_missing_chunks();
    let missing: HashSet<Id> = taken.iter().map(|c| c.0).collect();
    assert_eq!(missing.len(), taken.len(), "a chunk reported missing twice");
    assert_eq!(missing, lacking_chunks);
    for n in diff.missing_nodes_bottom_up() {
        assert!(expanded.contains(&n));
    }
});

//! The transfer engine against two in-memory ends that enforce what a real
//! store enforces (a node only after its children, a revision only after its
//! parents and trees, a branch only by compare-and-swap), with answers
//! delivered in random order.

use std::collections::HashSet;

use ferry_core::tree::node_id;
use ferry_core::Id;
use ferry_proto::transfer::{Config, Limits, Partial, Poll, Report, Request, Response, Transfer, TransferError};
use ferry_testkit::transfer::{chunk_id, MemoryEnd as End, MemoryLink, SinkRules, Tally};
use proptest::prelude::*;

/// Runs a transfer to completion; `order` picks which outstanding request
/// is answered next.
fn run(src: &End, sink: &mut End, cfg: Config, order: &[u8]) -> (Result<Report, TransferError>, Tally) {
    let mut t = Transfer::new(cfg);
    let mut queue: Vec<(u64, Request)> = Vec::new();
    let mut link = MemoryLink::new(src, sink, SinkRules::Enforce);
    let mut pick = order.iter().cycle();
    loop {
        match t.poll() {
            Err(e) => return (Err(e), link.tally),
            Ok(Poll::Request(tag, req)) => queue.push((tag, req)),
            Ok(Poll::Done) => return (Ok(t.report().clone()), link.tally),
            Ok(Poll::Wait) => {
                assert!(!queue.is_empty(), "the engine waits with nothing outstanding");
                let i = *pick.next().unwrap_or(&0) as usize % queue.len();
                let (tag, req) = queue.swap_remove(i);
                let resp = link.answer(req);
                if let Err(e) = t.answer(tag, resp) {
                    return (Err(e), link.tally);
                }
            }
        }
    }
}

/// Runs a whole-history transfer from `src`'s branch to `sink`'s.
fn go(src: &End, sink: &mut End, order: &[u8]) -> (Result<Report, TransferError>, Tally) {
    let c = cfg(src, sink);
    run(src, sink, c, order)
}

fn cfg(src: &End, sink: &End) -> Config {
    Config { source_head: src.branch.unwrap(), sink_head: sink.branch, sink_hints: vec![], partial: None, limits: small_limits() }
}

/// Small batches, so that several requests are in flight and every
/// splitting path (history pages, node and revision batches) runs.
fn small_limits() -> Limits {
    Limits { ask_batch: 7, asks_in_flight: 3, move_batch_bytes: 5 << 16, move_batch_chunks: 4, moves_in_flight: 3, history_batch: 2, frame_budget: 3000 }
}

fn chunk(n: u64) -> (Id, u64) {
    (chunk_id(n), 1000 + n % 7)
}

/// A file of `len` chunks drawn from a small pool, so files share chunks.
fn file(seed: u64, len: u64, pool: u64) -> Vec<(Id, u64)> {
    (0..len).map(|i| chunk((seed.wrapping_mul(31).wrapping_add(i * 7)) % pool)).collect()
}

#[test]
fn a_second_version_moves_only_its_new_chunks() {
    let mut src = End::default();
    let v1: Vec<(Id, u64)> = (0..3000).map(chunk).collect();
    let r1 = src.commit(vec![], std::slice::from_ref(&v1), 1);
    let mut sink = End::default();
    let (rep, _) = go(&src, &mut sink, &[0]);
    let rep = rep.unwrap();
    assert_eq!((rep.revisions, rep.chunks_moved), (1, 3000));
    assert_eq!(sink.branch, Some(r1));

    let mut v2 = v1.clone();
    for k in [5usize, 1500, 2999] {
        v2[k] = chunk(100_000 + k as u64);
    }
    src.commit(vec![r1], &[v2], 2);
    let (rep, trace) = go(&src, &mut sink, &[3, 1, 4, 1, 5]);
    let rep = rep.unwrap();
    assert_eq!((rep.revisions, rep.chunks_moved), (1, 3));
    assert!(rep.ids_asked < 300, "{} ids asked for 3 changed chunks of 3000", rep.ids_asked);
    assert_eq!(sink.branch, src.branch);
    assert_eq!(trace.moved.len(), 3);
    let (rep, _) = go(&src, &mut sink, &[0]);
    assert!(rep.unwrap().up_to_date);
}

#[test]
fn revisions_the_source_forgot_travel_without_their_files_and_are_forgotten_on_the_sink() {
    let mut src = End::default();
    let files: Vec<Vec<(Id, u64)>> = (0..3).map(|k| (k * 1000..k * 1000 + 50).map(chunk).collect()).collect();
    let r1 = src.commit(vec![], std::slice::from_ref(&files[0]), 1);
    let r2 = src.commit(vec![r1], std::slice::from_ref(&files[1]), 2);
    src.commit(vec![r2], std::slice::from_ref(&files[2]), 3);
    // Retention forgot r1 and r2, and gc took their files.
    for r in [r1, r2] {
        for e in src.revision(&r).entries {
            src.nodes.remove(&e.file_id);
        }
        src.forgotten.insert(r);
    }
    for order in [&[0u8][..], &[2, 7, 1, 8]] {
        let mut sink = End::default();
        let (rep, tally) = go(&src, &mut sink, order);
        let rep = rep.unwrap();
        assert_eq!((rep.revisions, tally.moved.len()), (3, 50), "only the head's files move");
        assert_eq!(sink.forgotten, HashSet::from([r1, r2]));
        assert_eq!(sink.revisions.len(), 3);
    }
    // A source that claims to have forgotten its own head is refused.
    src.forgotten.insert(src.branch.unwrap());
    let (rep, _) = go(&src, &mut End::default(), &[0]);
    assert!(matches!(rep, Err(TransferError::Protocol(_))), "{rep:?}");
}

#[test]
fn a_sink_ahead_or_diverged_is_refused_and_nothing_moves() {
    let mut src = End::default();
    let r1 = src.commit(vec![], &[file(1, 50, 1000)], 1);
    let mut sink = src.clone();
    sink.commit(vec![r1], &[file(2, 50, 1000)], 2);
    // The sink is ahead: the source's head is an old revision of the sink.
    let (rep, trace) = run(&src, &mut sink.clone(), cfg(&src, &sink), &[0]);
    assert_eq!(rep.unwrap_err(), TransferError::Diverged { sink_head: sink.branch.unwrap(), sink_has_source_head: true });
    assert!(trace.moved.is_empty());
    // Diverged: each side has a revision the other lacks.
    src.commit(vec![r1], &[file(3, 50, 1000)], 3);
    let before = sink.clone();
    let (rep, trace) = go(&src, &mut sink, &[0]);
    assert!(matches!(rep, Err(TransferError::Diverged { sink_has_source_head: false, .. })));
    assert!(trace.moved.is_empty());
    assert_eq!(sink.branch, before.branch);
}

#[test]
fn a_partial_transfer_records_only_the_kept_files_as_a_new_revision() {
    let mut src = End::default();
    let r1 = src.commit(vec![], &[file(1, 40, 100), file(2, 40, 10_000)], 1);
    let files = [file(1, 40, 100), file(2, 40, 10_000), file(3, 30, 10_000)];
    src.commit(vec![r1], &files, 2);
    let mut sink = End::default();
    let mut c = cfg(&src, &sink);
    c.partial = Some(Partial { keep: Box::new(|p| p == "f1"), description: "include f1".into() });
    let (rep, _) = run(&src, &mut sink, c, &[2, 7]);
    let rep = rep.unwrap();
    let rev = sink.revision(&sink.branch.unwrap());
    assert_eq!(rev.entries.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(), ["f1"]);
    assert!(rev.parents.is_empty());
    assert!(rev.message.contains("include f1"), "{}", rev.message);
    let unique: HashSet<Id> = files[1].iter().map(|c| c.0).collect();
    assert_eq!(rep.chunks_moved, unique.len() as u64);
    assert_eq!(rep.head, sink.branch.unwrap());
}

#[test]
fn hostile_answers_are_refused() {
    let mut src = End::default();
    let r1 = src.commit(vec![], &[file(1, 100, 1000)], 1);
    let mut t = Transfer::new(Config { source_head: r1, sink_head: None, sink_hints: vec![], partial: None, limits: Limits::default() });
    let Ok(Poll::Request(tag, Request::SourceHistory { .. })) = t.poll() else { panic!() };
    // A revision nobody asked for.
    let mut other = End::default();
    let stray = other.commit(vec![], &[file(9, 3, 10)], 9);
    let err = t.answer(tag, Response::Revisions(vec![other.revisions[&stray].clone()])).unwrap_err();
    assert!(err.to_string().contains("not asked for"), "{err}");

    let mut t = Transfer::new(Config { source_head: r1, sink_head: None, sink_hints: vec![], partial: None, limits: Limits::default() });
    let Ok(Poll::Request(tag, _)) = t.poll() else { panic!() };
    assert_eq!(t.answer(tag, Response::Revisions(vec![])), Err(TransferError::MissingRevision(r1)));
    assert!(t.answer(tag, Response::Stored).is_err(), "an answer to a request already answered");

    // A node whose bytes do not match its id.
    let mut t = Transfer::new(Config { source_head: r1, sink_head: None, sink_hints: vec![], partial: None, limits: Limits::default() });
    let Ok(Poll::Request(tag, _)) = t.poll() else { panic!() };
    t.answer(tag, Response::Revisions(vec![src.revisions[&r1].clone()])).unwrap();
    let Ok(Poll::Request(tag, Request::SinkHasRevisions(ids))) = t.poll() else { panic!() };
    t.answer(tag, Response::Bitmap(vec![false; ids.len()])).unwrap();
    let Ok(Poll::Request(tag, Request::SourceForgotten(ids))) = t.poll() else { panic!() };
    t.answer(tag, Response::Bitmap(vec![false; ids.len()])).unwrap();
    let Ok(Poll::Request(tag, Request::SinkHasNodes(ids))) = t.poll() else { panic!() };
    assert!(t.answer(tag, Response::Bitmap(vec![false; ids.len() + 1])).is_err(), "wrong bitmap length");
    let mut t2 = Transfer::new(Config { source_head: r1, sink_head: None, sink_hints: vec![], partial: None, limits: Limits::default() });
    let Ok(Poll::Request(tag, _)) = t2.poll() else { panic!() };
    t2.answer(tag, Response::Revisions(vec![src.revisions[&r1].clone()])).unwrap();
    let Ok(Poll::Request(tag, _)) = t2.poll() else { panic!() };
    t2.answer(tag, Response::Bitmap(vec![false])).unwrap();
    let Ok(Poll::Request(tag, Request::SourceForgotten(_))) = t2.poll() else { panic!() };
    t2.answer(tag, Response::Bitmap(vec![false])).unwrap();
    let Ok(Poll::Request(tag, Request::SinkHasNodes(ids))) = t2.poll() else { panic!() };
    t2.answer(tag, Response::Bitmap(vec![false; ids.len()])).unwrap();
    let Ok(Poll::Request(tag, Request::SourceNodes(ids))) = t2.poll() else { panic!() };
    let wrong = src.nodes.values().find(|b| node_id(b) != ids[0]).unwrap().clone();
    let err = t2.answer(tag, Response::Nodes(vec![wrong])).unwrap_err();
    assert!(err.to_string().contains("failed verification"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the histories and the order of answers: the sink ends up
    /// with everything the source's head reaches, no chunk it had is moved,
    /// no chunk is moved twice, and the store rules hold throughout.
    #[test]
    fn the_sink_gets_exactly_what_it_lacks(
        sizes in proptest::collection::vec((0u64..300, 1usize..4), 1..6),
        sink_at in 0usize..6,
        merge in any::<bool>(),
        leftovers in 0u64..200,
        order in proptest::collection::vec(any::<u8>(), 1..32),
    ) {
        let mut src = End::default();
        let mut heads = vec![];
        for (i, (len, nfiles)) in sizes.iter().enumerate() {
            let files: Vec<_> = (0..*nfiles).map(|f| file(i as u64 * 10 + f as u64, len + f as u64, 600)).collect();
            let mut parents: Vec<Id> = heads.last().copied().into_iter().collect();
            if merge && i >= 2 {
                // A second line of history merged in.
                let side = src.commit(vec![heads[0]], &[file(99 + i as u64, 20, 5000)], 1000 + i as u64);
                parents.push(side);
            }
            heads.push(src.commit(parents, &files, i as u64));
        }
        let head = *heads.last().unwrap();
        // The sink holds the history up to some revision, plus stray chunks
        // and nodes from an interrupted earlier transfer.
        let mut sink = End::default();
        if sink_at > 0 {
            let at = heads[(sink_at - 1).min(heads.len() - 1)];
            let (revs, nodes, chunks) = src.reachable(at);
            for r in revs { sink.revisions.insert(r, src.revisions[&r].clone()); }
            for n in nodes { sink.nodes.insert(n, src.nodes[&n].clone()); }
            sink.chunks.extend(chunks);
            sink.branch = Some(at);
        }
        for k in 0..leftovers {
            let c = chunk(k * 3);
            if src.chunks.contains(&c.0) { sink.chunks.insert(c.0); }
        }
        let before = sink.clone();
        let (rep, trace) = run(&src, &mut sink, cfg(&src, &before), &order);
        let rep = rep.unwrap();
        prop_assert_eq!(sink.branch, Some(head));
        let (revs, nodes, chunks) = src.reachable(head);
        for r in &revs { prop_assert!(sink.revisions.contains_key(r)); }
        for n in &nodes { prop_assert!(sink.nodes.contains_key(n)); }
        for c in &chunks { prop_assert!(sink.chunks.contains(c)); }
        let moved: HashSet<Id> = trace.moved.iter().copied().collect();
        prop_assert_eq!(moved.len(), trace.moved.len(), "a chunk moved twice");
        let lacking: HashSet<Id> = chunks.iter().filter(|c| !before.chunks.contains(c)).copied().collect();
        prop_assert_eq!(&moved, &lacking);
        prop_assert_eq!(rep.chunks_moved, lacking.len() as u64);
        let new_revs = revs.iter().filter(|r| !before.revisions.contains_key(r)).count() as u64;
        prop_assert_eq!(rep.revisions, new_revs);
        prop_assert_eq!(rep.up_to_date, before.branch == Some(head));
    }
}

//! `ferry_proto::transfer::Transfer`, the state machine behind push, pull
//! and mirror, fed arbitrary frames. Each answer comes either from a small
//! honest world (a source and a sink built from the first bytes, so deep
//! states are reached) or from the tape: a frame decoded as the wire would
//! decode it (`Message::decode`), or an honest answer with bits flipped or
//! items dropped.
//!
//! Properties: no panic; the machine ends (done or refusing) within a
//! bounded number of steps; it never waits with nothing outstanding; every
//! request is well formed (non-empty id lists within the limits); and
//! nothing unverified is passed on: every node it asks the sink to store
//! hashes to an id it asked the source for, and every revision decodes.
#![no_main]

use std::collections::HashSet;

use ferry_core::revision::Revision;
use ferry_core::tree::{node_id, Node};
use ferry_core::Id;
use ferry_proto::message::MAX_IDS;
use ferry_proto::transfer::{Config, Limits, Partial, Poll, Request, Response, Transfer};
use ferry_proto::Message;
use ferry_testkit::transfer::{MemoryEnd, MemoryLink, SinkRules};
use libfuzzer_sys::fuzz_target;

#[path = "tape.rs"]
mod tape;
use tape::Tape;

/// Commits `files` (the second one executable, so the flag travels too) on
/// top of `parents`; returns the revision id.
fn commit(end: &mut MemoryEnd, parents: Vec<Id>, files: &[Vec<(Id, u64)>], salt: i64) -> Id {
    let entries = files
        .iter()
        .enumerate()
        .map(|(i, chunks)| {
            let mut entry = end.add_file(format!("f{i}"), chunks);
            entry.executable = i == 1;
            entry
        })
        .collect();
    end.add_revision(&Revision::new(parents, "f".into(), salt, "m".into(), entries).expect("valid revision"))
}

/// Files of chunks drawn from a small id space, so files share chunks.
fn files(t: &mut Tape, salt: u8) -> Vec<Vec<(Id, u64)>> {
    (0..1 + t.u8_or(1) % 3).map(|_| (0..t.u8_or(8) % 48).map(|_| (Id::of_chunk(&[t.u8_or(0) ^ salt, salt]), 1 + u64::from(t.u8_or(3)))).collect()).collect()
}

fuzz_target!(|data: &[u8]| {
    let mut t = Tape(data);
    // The world: the source has r1 <- r2; the sink has nothing, r1, or a
    // revision of its own on top of r1 (diverged).
    let mut src = MemoryEnd::default();
    let f1 = files(&mut t, 0);
    let r1 = commit(&mut src, vec![], &f1, 1);
    let f2 = files(&mut t, 1);
    let r2 = commit(&mut src, vec![r1], &f2, 2);
    let mut sink = MemoryEnd::default();
    let sink_head = match t.u8_or(0) % 4 {
        0 => None,
        1 => {
            sink = src.clone();
            sink.revisions.remove(&r2);
            Some(r1)
        }
        2 => {
            sink.revisions.insert(r1, src.revisions[&r1].clone());
            let mine = files(&mut t, 2);
            let mut s = MemoryEnd::default();
            let d = commit(&mut s, vec![r1], &mine, 3);
            sink.revisions.insert(d, s.revisions[&d].clone());
            Some(d)
        }
        _ => {
            // Stray chunks from an interrupted transfer.
            sink.chunks.extend(src.chunks.iter().take(usize::from(t.u8_or(4))));
            None
        }
    };
    let limits = Limits {
        ask_batch: 1 + usize::from(t.u8_or(7) % 16),
        asks_in_flight: 1 + usize::from(t.u8_or(1) % 4),
        move_batch_bytes: 1 + u64::from(t.u8_or(200)) * 8,
        move_batch_chunks: 1 + usize::from(t.u8_or(3) % 8),
        moves_in_flight: 1 + usize::from(t.u8_or(1) % 4),
        history_batch: 1 + u32::from(t.u8_or(0) % 3),
        frame_budget: 200 + usize::from(t.u8_or(0)) * 16,
    };
    let partial = (t.u8_or(0) % 5 == 0).then(|| Partial { keep: Box::new(|p: &str| p != "f1"), description: "not f1".into() });
    let mut m = Transfer::new(Config { source_head: r2, sink_head, sink_hints: vec![], partial, limits: limits.clone() });

    let mut link = MemoryLink::new(&src, &mut sink, SinkRules::Trust);
    let mut outstanding: Vec<(u64, Request)> = Vec::new();
    let mut nodes_fetched: HashSet<Id> = HashSet::new();
    for _ in 0..200_000 {
        let step = match m.poll() {
            Err(_) => return,
            Ok(s) => s,
        };
        match step {
            Poll::Done => {
                assert!(outstanding.is_empty(), "done with requests outstanding");
                return;
            }
            Poll::Request(tag, req) => {
                check(&req, &limits, &nodes_fetched);
                if let Request::SourceNodes(ids) = &req {
                    nodes_fetched.extend(ids.iter().copied());
                }
                outstanding.push((tag, req));
            }
            Poll::Wait => {
                assert!(!outstanding.is_empty(), "waiting with nothing outstanding");
                let (tag, req) = outstanding.swap_remove(usize::from(t.u8_or(0)) % outstanding.len());
                let honest = link.answer(req);
                let resp = match t.u8_or(0) {
                    0xf0..=0xf7 => from_frame(&mut t),
                    0xf8..=0xff => corrupt(&mut t, honest),
                    _ => honest,
                };
                if m.answer(tag, resp).is_err() {
                    return;
                }
            }
        }
    }
    panic!("the transfer did not end");
});

/// What the machine asks must be well formed and pass on only what it
/// verified.
fn check(req: &Request, limits: &Limits, nodes_fetched: &HashSet<Id>) {
    let ids = |v: &[Id], max: usize| assert!(!v.is_empty() && v.len() <= max.min(MAX_IDS), "{} ids (limit {max})", v.len());
    match req {
        Request::SourceHistory { from, max, .. } => {
            ids(from, MAX_IDS);
            assert!(from.len() <= *max as usize);
        }
        Request::SourceHasRevisions(v) | Request::SinkHasRevisions(v) | Request::SourceForgotten(v) | Request::SinkForget(v) => ids(v, MAX_IDS),
        Request::SinkHasNodes(v) | Request::SinkHasChunks(v) | Request::SourceNodes(v) => ids(v, limits.ask_batch),
        Request::MoveChunks(v) => ids(v, limits.move_batch_chunks),
        Request::SinkPutNodes(nodes) => {
            assert!(!nodes.is_empty());
            for n in nodes {
                assert!(nodes_fetched.contains(&node_id(n)), "storing a node that was never fetched and verified");
                Node::decode(n).expect("a stored node decodes");
            }
        }
        Request::SinkPutRevisions(revs) => {
            assert!(!revs.is_empty());
            for r in revs {
                Revision::decode(r).expect("a stored revision decodes");
            }
        }
        Request::SinkUpdateBranch { revisions, .. } => {
            for r in revisions {
                Revision::decode(r).expect("a stored revision decodes");
            }
        }
    }
}

/// A frame from the tape, decoded as the wire decodes it.
fn from_frame(t: &mut Tape) -> Response {
    let kind = t.u8_or(0);
    let len = usize::from(t.u8_or(0)) | usize::from(t.u8_or(0)) << 8;
    let payload = t.take(len).to_vec();
    match Message::decode(kind, &payload) {
        Ok(Message::Revisions { revisions }) => Response::Revisions(revisions),
        Ok(Message::Bitmap { bits }) => Response::Bitmap(bits),
        Ok(Message::Nodes { nodes }) => Response::Nodes(nodes),
        Ok(Message::Chunks { chunks }) => Response::Moved { stored_bytes: chunks.iter().map(|c| c.1.len() as u64).sum() },
        _ => Response::Stored,
    }
}

/// An honest answer, damaged.
fn corrupt(t: &mut Tape, honest: Response) -> Response {
    let how = t.u8_or(0);
    let flip = |mut v: Vec<u8>, at: u8| {
        if !v.is_empty() {
            let i = usize::from(at) % v.len();
            v[i] ^= 1 << (at % 8);
        }
        v
    };
    match honest {
        Response::Revisions(mut r) => {
            match how % 3 {
                0 => drop(r.pop()),
                1 => r.extend(r.first().cloned()),
                _ => r = r.into_iter().map(|b| flip(b, t.u8_or(0))).collect(),
            }
            Response::Revisions(r)
        }
        Response::Bitmap(mut b) => {
            match how % 3 {
                0 => drop(b.pop()),
                1 => b.push(true),
                _ => b.iter_mut().for_each(|x| *x = !*x),
            }
            Response::Bitmap(b)
        }
        Response::Nodes(mut n) => {
            match how % 3 {
                0 => drop(n.pop()),
                1 => n.reverse(),
                _ => n = n.into_iter().map(|b| flip(b, t.u8_or(0))).collect(),
            }
            Response::Nodes(n)
        }
        other => other,
    }
}

//! The transfer driver between two real stores (both ends local): long
//! histories that take several history pages and `PutRevisions` batches,
//! and a branch that diverged, refused without writing.

use std::io::Cursor;
use std::sync::Arc;

use ferry_core::revision::{Entry, Revision};
use ferry_core::Id;
use ferry_net::NetError;
use ferry_proto::transfer::Limits;
use ferry_proto::ErrorCode;
use ferry_store::Store;
use ferry_transfer::driver::{run, BranchPlan, Direction};
use ferry_transfer::{Error, Local};

fn commit(store: &Store, repo: &str, n: u64) -> Id {
    let s = store.write_session();
    let head = store.branch(repo, "main").unwrap();
    let got = s.ingest(Cursor::new(format!("revision {n}").into_bytes()), &()).unwrap();
    let e = Entry { path: "log.txt".into(), file_id: got.file_id, size: got.size, executable: false };
    let rev = Revision::new(head.into_iter().collect(), "t".into(), n as i64, format!("r{n}"), vec![e]).unwrap();
    s.commit(repo, "main", head, &rev).unwrap()
}

fn plan<'a>(src: &Store, dst: &Store, repo: &'a str) -> BranchPlan<'a> {
    BranchPlan {
        repo,
        branch: "main",
        source_head: src.branch(repo, "main").unwrap().unwrap(),
        sink_head: dst.branch(repo, "main").unwrap(),
        sink_hints: vec![],
        partial: None,
        limits: Limits::default(),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

#[test]
fn a_history_longer_than_a_page_and_a_frame_moves_whole_and_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Arc::new(Store::init(&tmp.path().join("a")).unwrap());
    let b = Arc::new(Store::init(&tmp.path().join("b")).unwrap());
    for n in 0..1100 {
        commit(&a, "org/log", n);
    }
    let report = rt().block_on(run(&Local::for_store(a.clone()), &Local::for_store(b.clone()), plan(&a, &b, "org/log"), Direction::Pull, &())).unwrap();
    assert_eq!(report.revisions, 1100);
    assert_eq!(b.branch("org/log", "main").unwrap(), a.branch("org/log", "main").unwrap());
    assert_eq!(b.log(b.branch("org/log", "main").unwrap().unwrap(), 2000).unwrap().len(), 1100);
    assert!(b.fsck(&|_| {}).unwrap().problems.is_empty());
    // 100 more: only those move.
    for n in 1100..1200 {
        commit(&a, "org/log", n);
    }
    let report = rt().block_on(run(&Local::for_store(a.clone()), &Local::for_store(b.clone()), plan(&a, &b, "org/log"), Direction::Pull, &())).unwrap();
    assert_eq!(report.revisions, 100);
    assert_eq!(b.branch("org/log", "main").unwrap(), a.branch("org/log", "main").unwrap());
}

#[test]
fn a_diverged_branch_is_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Arc::new(Store::init(&tmp.path().join("a")).unwrap());
    let b = Arc::new(Store::init(&tmp.path().join("b")).unwrap());
    commit(&a, "org/m", 1);
    rt().block_on(run(&Local::for_store(a.clone()), &Local::for_store(b.clone()), plan(&a, &b, "org/m"), Direction::Push, &())).unwrap();
    commit(&a, "org/m", 2);
    let theirs = commit(&b, "org/m", 3);
    let before = b.stats().unwrap();
    let err = rt().block_on(run(&Local::for_store(a.clone()), &Local::for_store(b.clone()), plan(&a, &b, "org/m"), Direction::Push, &())).unwrap_err();
    match err {
        Error::Net(NetError::Remote { code: ErrorCode::Conflict, message }) => assert!(message.contains("pull first"), "{message}"),
        other => panic!("expected a conflict, got {other}"),
    }
    assert_eq!(b.branch("org/m", "main").unwrap(), Some(theirs));
    assert_eq!(b.stats().unwrap(), before, "nothing was written");
}

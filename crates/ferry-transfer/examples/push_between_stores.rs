//! A transfer between two stores in this process: the driver and the
//! local ends that a push, pull or mirror uses, without a network.
//!
//! cargo run --release -p ferry-transfer --example push_between_stores

use std::io::Cursor;
use std::sync::Arc;

use ferry_core::revision::{Entry, Revision};
use ferry_proto::transfer::Limits;
use ferry_store::Store;
use ferry_transfer::driver::{run, BranchPlan, Direction};
use ferry_transfer::Local;

fn commit(store: &Store, bytes: Vec<u8>, message: &str) -> Result<ferry_core::Id, Box<dyn std::error::Error>> {
    let session = store.write_session();
    let parent = store.branch("org/model", "main")?;
    let file = session.ingest(Cursor::new(bytes), &())?;
    let entry = Entry { path: "model.bin".into(), file_id: file.file_id, size: file.size, executable: false };
    let rev = Revision::new(parent.into_iter().collect(), "demo".into(), 0, message.into(), vec![entry])?;
    Ok(session.commit("org/model", "main", parent, &rev)?)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (a_dir, b_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = Arc::new(Store::init(a_dir.path())?);
    let b = Arc::new(Store::init(b_dir.path())?);
    // 8 MiB of varied bytes, then the same with one MiB rewritten.
    let mut bytes: Vec<u8> = (0..8u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    for round in 0..2 {
        let head = commit(&a, bytes.clone(), &format!("version {}", round + 1))?;
        let plan = BranchPlan {
            repo: "org/model",
            branch: "main",
            source_head: head,
            sink_head: b.branch("org/model", "main")?,
            sink_hints: vec![],
            partial: None,
            limits: Limits::default(),
        };
        let report = run(&Local::for_store(a.clone()), &Local::for_store(b.clone()), plan, Direction::Push, &()).await?;
        println!(
            "version {}: moved {} chunks ({} raw bytes), {} already there, {} ids asked",
            round + 1,
            report.chunks_moved,
            report.raw_bytes_moved,
            report.chunks_already_there,
            report.ids_asked
        );
        bytes[3 << 20..4 << 20].iter_mut().for_each(|x| *x = x.wrapping_add(1));
    }
    Ok(())
}

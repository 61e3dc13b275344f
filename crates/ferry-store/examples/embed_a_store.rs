//! Embeds a ferry store in another program: creates one in a temporary
//! directory, commits a directory of "checkpoint" files, commits a second
//! version that changes one tensor's worth of bytes, reads a byte range
//! back, and checks the whole store.
//!
//! Run with `cargo run --release -p ferry-store --example embed_a_store`.

use std::path::Path;

use ferry_store::{CommitOptions, RevisionSpec, Store};
// Deterministic incompressible bytes: a stand-in for trained weights.
use ferry_testkit::noise as weights;

fn commit(store: &Store, dir: &Path, message: &str) -> Result<ferry_store::Committed, Box<dyn std::error::Error>> {
    let opts = CommitOptions { message: message.into(), author: "example".into(), time: 1_700_000_000, follow_symlinks: false, base: None };
    Ok(store.write_session().commit_dir("org/model", "main", dir, &opts, &())?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let store = Store::init(&tmp.path().join("store"))?;
    let ckpt = tmp.path().join("ckpt");
    std::fs::create_dir_all(&ckpt)?;

    let mut model = weights(32 << 20, 1);
    std::fs::write(ckpt.join("model.safetensors"), &model)?;
    std::fs::write(ckpt.join("config.json"), br#"{"layers": 4}"#)?;
    let first = commit(&store, &ckpt, "base")?;
    println!("base: revision {}, {} files, {} chunks stored", first.revision.short(), first.files, first.totals.new_chunks);

    // A fine-tune that touched one 1 MiB tensor: only its chunks are new.
    model[8 << 20..9 << 20].copy_from_slice(&weights(1 << 20, 2));
    std::fs::write(ckpt.join("model.safetensors"), &model)?;
    let second = commit(&store, &ckpt, "fine-tune")?;
    println!(
        "fine-tune: revision {}, {} of {} chunks new ({} KiB of {} MiB)",
        second.revision.short(),
        second.totals.new_chunks,
        second.totals.chunks,
        second.totals.new_bytes >> 10,
        second.totals.size >> 20
    );
    assert!(second.totals.new_bytes < 4 << 20, "an unchanged chunk was stored again");

    // Read bytes 8 MiB .. 8 MiB + 16 of the newest version.
    let (_, rev) = store.resolve(&RevisionSpec::parse("org/model@main")?)?;
    let entry = rev.entry("model.safetensors").ok_or("file missing")?;
    let mut range = Vec::new();
    store.read_range(&entry.file_id, entry.size, 8 << 20, (8 << 20) + 16, &mut range, &())?;
    assert_eq!(range, model[8 << 20..(8 << 20) + 16]);
    println!("read 16 bytes at 8 MiB: {:02x?}", range);

    let report = store.fsck(&|_| {})?;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let stats = store.stats()?;
    println!(
        "fsck: {} chunks verified, no problems; {} MiB logical in {} MiB stored (backend: {})",
        report.chunks_checked,
        stats.logical_bytes >> 20,
        stats.stored_bytes >> 20,
        store.backend().name()
    );
    Ok(())
}

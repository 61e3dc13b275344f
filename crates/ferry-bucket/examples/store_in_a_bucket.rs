//! A store whose chunks, trees and journal live in a bucket: here a local
//! directory (`file://`); an `s3://BUCKET/PREFIX?endpoint=...` address works
//! the same against S3, Garage or MinIO. Commits a checkpoint, loses the
//! store's directory, rebuilds it from the bucket alone, and reads the file
//! back.
//!
//! Run with `cargo run --release -p ferry-bucket --example store_in_a_bucket`.

use ferry_bucket::{BucketBackend, BucketConfig};
use ferry_store::{CommitOptions, RevisionSpec, Store};
use ferry_testkit::noise as weights;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    // Small packs, so that this small checkpoint makes several.
    let address = format!("file://{}?pack_size={}", tmp.path().join("bucket").display(), 4 << 20);
    let config = BucketConfig::parse(&address)?;

    let dir = tmp.path().join("store");
    let store = Store::init_with(&dir, Some((Box::new(BucketBackend::create(&config, "example")?), &address)))?;
    let ckpt = tmp.path().join("ckpt");
    std::fs::create_dir_all(&ckpt)?;
    let model = weights(24 << 20, 1);
    std::fs::write(ckpt.join("model.safetensors"), &model)?;
    let opts = CommitOptions { message: "step 1000".into(), author: "example".into(), time: 1_700_000_000, follow_symlinks: false, base: None };
    let committed = store.write_session().commit_dir("org/model", "main", &ckpt, &opts, &())?;
    println!("committed {} into the bucket: {} chunks", committed.revision.short(), committed.totals.new_chunks);
    drop(store);

    // The directory is gone; the bucket is enough.
    std::fs::remove_dir_all(&dir)?;
    let rebuilt = Store::rebuild(&dir, Box::new(BucketBackend::open(&config, "example")?), &address)?;
    let (head, rev) = rebuilt.resolve(&RevisionSpec::parse("org/model@main")?)?;
    assert_eq!(head, committed.revision);
    let entry = rev.entry("model.safetensors").ok_or("file missing")?;
    let mut bytes = Vec::new();
    rebuilt.read_range(&entry.file_id, entry.size, 0, entry.size, &mut bytes, &())?;
    assert_eq!(bytes, model);
    let packs = std::fs::read_dir(tmp.path().join("bucket/packs"))?.count();
    println!("rebuilt from {packs} packs: org/model@main is {}, {} bytes, byte-identical", head.short(), bytes.len());
    Ok(())
}

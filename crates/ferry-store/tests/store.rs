//! The store's library API against a real RocksDB in a temporary directory.

use std::io::Cursor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ferry_core::revision::{Entry, Revision};
use ferry_core::Id;
use ferry_store::{RevisionSpec, Store, StoreError};
use ferry_testkit::{noise, TempStore};

fn commit_bytes(store: &Store, repo: &str, files: &[(&str, &[u8])], msg: &str) -> Id {
    let s = store.write_session();
    let head = store.branch(repo, "main").unwrap();
    let entries = files
        .iter()
        .map(|(p, data)| {
            let got = s.ingest(Cursor::new(data.to_vec()), &()).unwrap();
            Entry { path: p.to_string(), file_id: got.file_id, size: got.size, executable: false }
        })
        .collect();
    let rev = Revision::new(head.into_iter().collect(), "t".into(), 1, msg.into(), entries).unwrap();
    s.commit(repo, "main", head, &rev).unwrap()
}

fn read_all(store: &Store, rev: &Id, path: &str) -> Vec<u8> {
    let rev = store.revision(rev).unwrap();
    let mut out = Vec::new();
    store.read_file(rev.entry(path).unwrap(), &mut out, &()).unwrap();
    out
}

#[test]
fn second_version_stores_only_changed_chunks_and_reads_back_exactly() {
    let store = TempStore::new();
    let v1 = noise(6 << 20, 1);
    let mut v2 = v1.clone();
    v2[3_000_000..3_000_100].copy_from_slice(&[0xAB; 100]);
    let s = store.write_session();
    let a = s.ingest(Cursor::new(v1.clone()), &()).unwrap();
    let b = s.ingest(Cursor::new(v2.clone()), &()).unwrap();
    assert_eq!(a.new_bytes, v1.len() as u64);
    assert!(b.new_chunks <= 2, "an in-place 100-byte edit stored {} new chunks", b.new_chunks);
    assert!(b.new_bytes < 600_000);
    // Tree nodes too: only the path above the changed chunk is new, and the
    // same bytes again write nothing at all.
    assert!(a.new_nodes >= 6 && b.new_nodes <= 4, "{} nodes for v1, {} for a one-chunk change", a.new_nodes, b.new_nodes);
    let again = s.ingest(Cursor::new(v1.clone()), &()).unwrap();
    assert_eq!((again.new_chunks, again.new_nodes), (0, 0));
    drop(s);
    let r1 = commit_bytes(&store, "org/m", &[("w.bin", &v1)], "v1");
    let r2 = commit_bytes(&store, "org/m", &[("w.bin", &v2)], "v2");
    assert_eq!(read_all(&store, &r1, "w.bin"), v1);
    assert_eq!(read_all(&store, &r2, "w.bin"), v2);
    assert_eq!(store.revision(&r2).unwrap().parents, vec![r1]);
}

#[test]
fn byte_ranges_read_only_what_is_asked() {
    let store = TempStore::new();
    let data = noise(3 << 20, 5);
    let r = commit_bytes(&store, "org/m", &[("f", &data)], "m");
    let e = store.revision(&r).unwrap().entry("f").unwrap().clone();
    for (a, b) in [(0u64, 8u64), (8, 4096), (65_000, 300_000), (0, data.len() as u64), (data.len() as u64 - 1, data.len() as u64), (77, 77)] {
        let mut out = Vec::new();
        store.read_range(&e.file_id, e.size, a, b, &mut out, &()).unwrap();
        assert_eq!(out, &data[a as usize..b as usize], "range {a}..{b}");
    }
}

#[test]
fn empty_and_tiny_files_round_trip() {
    let store = TempStore::new();
    let r = commit_bytes(&store, "org/m", &[("empty", b""), ("one", b"x")], "m");
    assert_eq!(read_all(&store, &r, "empty"), b"");
    assert_eq!(read_all(&store, &r, "one"), b"x");
}

#[test]
fn a_stale_branch_update_is_refused_and_loses_nothing() {
    let store = TempStore::new();
    let base = commit_bytes(&store, "org/m", &[("a", b"1")], "base");
    // Two writers start from the same head; the second to finish loses.
    let s = store.write_session();
    let f1 = s.ingest(Cursor::new(b"one".to_vec()), &()).unwrap();
    let f2 = s.ingest(Cursor::new(b"two".to_vec()), &()).unwrap();
    let rev = |f: ferry_store::Ingested, m: &str| {
        Revision::new(vec![base], "t".into(), 2, m.into(), vec![Entry { path: "a".into(), file_id: f.file_id, size: f.size, executable: false }]).unwrap()
    };
    let won = s.commit("org/m", "main", Some(base), &rev(f1, "first")).unwrap();
    let err = s.commit("org/m", "main", Some(base), &rev(f2, "second")).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("nothing was lost"));
    assert_eq!(store.branch("org/m", "main").unwrap(), Some(won));
}

#[test]
fn concurrent_commits_from_threads_never_lose_a_revision() {
    let store = Arc::new(TempStore::new());
    let mut handles = Vec::new();
    for t in 0..4u64 {
        let store = store.clone();
        handles.push(std::thread::spawn(move || {
            let mut mine = Vec::new();
            for i in 0..5u64 {
                loop {
                    let s = store.write_session();
                    let head = store.branch("org/m", "main").unwrap();
                    let f = s.ingest(Cursor::new(noise(1000, t * 100 + i + 1)), &()).unwrap();
                    let rev = Revision::new(
                        head.into_iter().collect(),
                        format!("w{t}"),
                        i as i64,
                        format!("{t}/{i}"),
                        vec![Entry { path: format!("f{t}"), file_id: f.file_id, size: f.size, executable: false }],
                    )
                    .unwrap();
                    match s.commit("org/m", "main", head, &rev) {
                        Ok(id) => {
                            mine.push(id);
                            break;
                        }
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            mine
        }));
    }
    let all: Vec<Id> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let head = store.branch("org/m", "main").unwrap().unwrap();
    let history: Vec<Id> = store.log(head, 1000).unwrap().into_iter().map(|x| x.0).collect();
    assert_eq!(history.len(), 20);
    for id in all {
        assert!(history.contains(&id), "revision {id} was lost");
    }
}

#[test]
fn gc_reclaims_unreachable_data_and_keeps_reachable_data() {
    let store = TempStore::new();
    let keep = noise(2 << 20, 7);
    let drop_me = noise(2 << 20, 8);
    let r = commit_bytes(&store, "org/keep", &[("k", &keep)], "keep");
    commit_bytes(&store, "org/gone", &[("g", &drop_me)], "gone");
    let before = store.stats().unwrap();
    let head = store.branch("org/gone", "main").unwrap();
    store.update_branch("org/gone", "main", head, None).unwrap();
    let rep = store.gc().unwrap();
    assert!(rep.chunks_removed > 0);
    assert!(rep.bytes_removed >= 2 << 20);
    assert_eq!(rep.revisions_removed, 1);
    let after = store.stats().unwrap();
    assert_eq!(after.chunks, before.chunks - rep.chunks_removed);
    assert_eq!(read_all(&store, &r, "k"), keep);
    assert!(store.fsck(&|_| {}).unwrap().problems.is_empty());
}

#[test]
fn gc_waits_for_an_open_write_session() {
    let store = Arc::new(TempStore::new());
    let data = noise(1 << 20, 9);
    let session = store.write_session();
    let f = session.ingest(Cursor::new(data.clone()), &()).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let gc = {
        let (store, done) = (store.clone(), done.clone());
        std::thread::spawn(move || {
            let r = store.gc().unwrap();
            done.store(true, Ordering::SeqCst);
            r
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!done.load(Ordering::SeqCst), "gc ran while a writer held unreferenced chunks");
    let rev = Revision::new(vec![], "t".into(), 1, "m".into(), vec![Entry { path: "f".into(), file_id: f.file_id, size: f.size, executable: false }]).unwrap();
    let id = session.commit("org/m", "main", None, &rev).unwrap();
    drop(session);
    let rep = gc.join().unwrap();
    assert_eq!(rep.chunks_removed, 0);
    assert_eq!(read_all(&store, &id, "f"), data);
}

#[test]
fn a_corrupt_record_is_never_returned() {
    let store = TempStore::new();
    let bad = ferry_store::VerifiedRecord::verify(Id::of_chunk(b"x"), vec![0, 1, 0, 0, 0, b'y']);
    assert!(bad.is_err(), "a record that does not hash to its id must not verify");
    assert!(matches!(store.chunk(&Id::of_chunk(b"nope")), Err(StoreError::MissingChunk(_))));
}

#[test]
fn revision_specs_resolve_branches_and_id_prefixes() {
    let store = TempStore::new();
    let r = commit_bytes(&store, "org/m", &[("a", b"1")], "m");
    let by = |s: &str| store.resolve(&RevisionSpec::parse(s).unwrap()).map(|x| x.0);
    assert_eq!(by("org/m").unwrap(), r);
    assert_eq!(by("org/m@main").unwrap(), r);
    assert_eq!(by(&format!("org/m@{}", &r.to_hex()[..10])).unwrap(), r);
    assert!(matches!(by("org/m@nope"), Err(StoreError::UnknownRevision(_))));
    assert!(matches!(by("org/other@main"), Err(StoreError::UnknownRepo(_))));
}

#[test]
fn opening_twice_reports_the_lock_and_unknown_dirs_are_not_stores() {
    let held = TempStore::new();
    assert!(matches!(Store::open(held.path()), Err(StoreError::Locked(_))));
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(Store::open(empty.path()), Err(StoreError::NotAStore(_))));
}

#[test]
fn the_change_feed_names_every_repository_whose_branches_moved() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let id = {
        let store = Store::init(&path).unwrap();
        assert_eq!(store.ref_seq(), 0);
        let a1 = commit_bytes(&store, "org/a", &[("f", b"one")], "a1");
        commit_bytes(&store, "org/b", &[("f", b"two")], "b1");
        assert_eq!(store.ref_seq(), 2);
        let (repos, upto) = store.ref_changes_since(0).unwrap().unwrap();
        assert_eq!((repos.into_iter().collect::<Vec<_>>(), upto), (vec!["org/a".to_string(), "org/b".to_string()], 2));
        // A branch made, a commit, and a branch deleted each count.
        store.update_branch("org/a", "dev", None, Some(a1)).unwrap();
        commit_bytes(&store, "org/a", &[("f", b"three")], "a2");
        store.update_branch("org/b", "main", store.branch("org/b", "main").unwrap(), None).unwrap();
        let (repos, upto) = store.ref_changes_since(2).unwrap().unwrap();
        assert_eq!((repos.into_iter().collect::<Vec<_>>(), upto), (vec!["org/a".to_string(), "org/b".to_string()], 5));
        assert!(store.ref_changes_since(5).unwrap().unwrap().0.is_empty());
        // A refused compare-and-swap changes nothing.
        assert!(store.update_branch("org/a", "main", None, Some(a1)).is_err());
        assert_eq!(store.ref_seq(), 5);
        store.id()
    };
    let store = Store::open(&path).unwrap();
    assert_eq!((store.ref_seq(), store.id()), (5, id), "the position and the id survive a reopen");
    commit_bytes(&store, "org/c", &[("f", b"four")], "c1");
    let (repos, upto) = store.ref_changes_since(4).unwrap().unwrap();
    assert_eq!((repos.into_iter().collect::<Vec<_>>(), upto), (vec!["org/b".to_string(), "org/c".to_string()], 6));
    let other = Store::init(&dir.path().join("t")).unwrap();
    assert_ne!(other.id(), id, "stores have their own ids");
}

/// Opens the column families of a closed store directly, to write what no
/// ferry API writes (an older format, a damaged index).
fn raw_db(path: &std::path::Path) -> rocksdb::DB {
    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), path).unwrap();
    rocksdb::DB::open_cf(&rocksdb::Options::default(), path, cfs).unwrap()
}

#[test]
fn a_version_1_store_is_migrated_on_open_and_unknown_formats_or_backends_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("s");
    let data = noise(1 << 20, 21);
    let rev = {
        let store = Store::init(&path).unwrap();
        commit_bytes(&store, "org/a", &[("f", &data)], "m")
    };
    // What a version 1 store holds: format 1 and no backend name.
    {
        let db = raw_db(&path);
        let meta = db.cf_handle("meta").unwrap();
        db.put_cf(meta, b"format", 1u32.to_le_bytes()).unwrap();
        db.delete_cf(meta, b"backend").unwrap();
    }
    {
        let store = Store::open(&path).unwrap();
        assert_eq!(read_all(&store, &rev, "f"), data);
        assert!(store.fsck(&|_| {}).unwrap().problems.is_empty());
    }
    {
        let db = raw_db(&path);
        let meta = db.cf_handle("meta").unwrap();
        assert_eq!(db.get_cf(meta, b"format").unwrap().unwrap(), ferry_store::FORMAT_VERSION.to_le_bytes());
        assert_eq!(db.get_cf(meta, b"backend").unwrap().unwrap(), b"rocksdb");
        db.put_cf(meta, b"backend", b"s3").unwrap();
    }
    let err = Store::open(&path).err().expect("a store of another backend opened").to_string();
    assert!(err.contains("\"s3\""), "{err}");
    {
        let db = raw_db(&path);
        let meta = db.cf_handle("meta").unwrap();
        db.put_cf(meta, b"backend", b"rocksdb").unwrap();
        db.put_cf(meta, b"format", 7u32.to_le_bytes()).unwrap();
    }
    let err = Store::open(&path).err().expect("a store of a newer format opened").to_string();
    assert!(err.contains("format version 7"), "{err}");
}

#[test]
fn fsck_names_an_index_entry_without_its_record_and_counts_records_without_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("s");
    {
        let store = Store::init(&path).unwrap();
        commit_bytes(&store, "org/a", &[("f", &noise(1 << 20, 22))], "m");
    }
    let (lost_record, lost_entry) = {
        let db = raw_db(&path);
        let (index, chunks) = (db.cf_handle("chunk_index").unwrap(), db.cf_handle("chunks").unwrap());
        let keys: Vec<Box<[u8]>> = db.iterator_cf(index, rocksdb::IteratorMode::Start).take(2).map(|kv| kv.unwrap().0).collect();
        db.delete_cf(chunks, &keys[0]).unwrap();
        db.delete_cf(index, &keys[1]).unwrap();
        (Id::from_slice(&keys[0]).unwrap(), Id::from_slice(&keys[1]).unwrap())
    };
    let store = Store::open(&path).unwrap();
    let rep = store.fsck(&|_| {}).unwrap();
    assert_eq!(rep.unindexed_records, 1);
    let problems = rep.problems.join("\n");
    assert!(problems.contains(&format!("chunk {lost_record} is missing")), "{problems}");
    // The chunk without an entry is missing to every reader: its tree node
    // names it.
    assert!(problems.contains(&format!("chunk {lost_entry} is missing (referenced by")), "{problems}");
    assert!(matches!(store.chunk(&lost_record), Err(StoreError::MissingChunk(_))));
}

#[test]
fn a_revision_that_lies_about_a_file_size_is_refused_and_fsck_finds_one_stored_anyway() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("s");
    let store = Store::init(&path).unwrap();
    let s = store.write_session();
    let six = s.ingest(Cursor::new(b"six by".to_vec()), &()).unwrap();
    let lie =
        Revision::new(vec![], "t".into(), 1, "m".into(), vec![Entry { path: "f".into(), file_id: six.file_id, size: 50_000_000, executable: false }]).unwrap();
    // Every writer refuses it, and none stores it or moves a branch.
    for (writer, res) in [
        ("commit", s.commit("org/m", "main", None, &lie).map(|_| ())),
        ("publish", s.publish("org/m", "main", None, lie.id(), std::slice::from_ref(&lie))),
        ("put_revisions", s.put_revisions("org/m", std::slice::from_ref(&lie))),
    ] {
        let err = res.expect_err(writer);
        assert!(matches!(err, StoreError::Format(_)), "{writer}: {err}");
        assert!(err.to_string().contains("50000000") && err.to_string().contains("holds 6 bytes"), "{writer}: {err}");
    }
    assert!(!store.has_revision(&lie.id()).unwrap());
    assert_eq!(store.branch("org/m", "main").unwrap(), None);
    assert!(store.fsck(&|_| {}).unwrap().problems.is_empty());
    // One stored beneath the checks (by a store from before them) is found
    // by fsck.
    store.sync().unwrap();
    drop(s);
    drop(store);
    let id = lie.id();
    {
        let db = raw_db(&path);
        db.put_cf(db.cf_handle("revisions").unwrap(), id.as_bytes(), lie.encode()).unwrap();
    }
    let store = Store::open(&path).unwrap();
    let problems = store.fsck(&|_| {}).unwrap().problems;
    assert!(matches!(&problems[..], [p] if p.contains(&id.to_hex()) && p.contains("50000000")), "{problems:?}");
}

#[test]
fn a_repository_or_branch_whose_name_differs_only_in_case_from_an_existing_one_is_refused() {
    let store = TempStore::new();
    let r = commit_bytes(&store, "org/m", &[("a", b"1")], "m");
    store.update_branch("org/m", "Dev", None, Some(r)).unwrap();
    for (repo, branch, existing) in [
        ("org/M", "main", "repository \"org/m\""),
        ("ORG/m", "x", "repository \"org/m\""),
        ("org/m", "MAIN", "branch \"main\""),
        ("org/m", "dev", "branch \"Dev\""),
    ] {
        let err = store.update_branch(repo, branch, None, Some(r)).expect_err(&format!("{repo}@{branch} beside {existing}"));
        assert!(err.to_string().contains("only in case") && err.to_string().contains(existing), "{repo}@{branch}: {err}");
        assert_eq!(store.branch(repo, branch).unwrap(), None);
    }
    assert_eq!(store.repos().unwrap().len(), 1, "a refused repository was created");
    // Names that differ in more than case are fine, and so is moving or
    // deleting an existing branch.
    store.update_branch("org/m2", "main", None, Some(r)).unwrap();
    store.update_branch("org/m", "dev2", None, Some(r)).unwrap();
    commit_bytes(&store, "org/m", &[("a", b"2")], "m2");
    store.update_branch("org/m", "Dev", Some(r), None).unwrap();
}

#[test]
fn a_safetensors_file_is_stored_as_byte_planes_and_its_moved_tensors_cost_nothing() {
    use ferry_testkit::{bf16_weights, safetensors_file};
    let store = TempStore::new();
    let (a, b, norm) = (bf16_weights(400_000, 1), bf16_weights(300_000, 2), bf16_weights(1024, 3));
    let v1 = safetensors_file("", &[("a", &a), ("norm", &norm), ("b", &b)]);
    // Another shard layout: a longer header, the tensors in another order.
    let v2 = safetensors_file("resharded", &[("b", &b), ("norm", &norm), ("a", &a)]);
    let s = store.write_session();
    let first = s.ingest(Cursor::new(v1.clone()), &()).unwrap();
    let moved = s.ingest(Cursor::new(v2.clone()), &()).unwrap();
    drop(s);
    // Byte planes: the exponent bytes shrink, the mantissa bytes do not.
    assert!(first.stored_bytes * 100 < first.size * 75, "stored {} of {}", first.stored_bytes, first.size);
    assert!(moved.new_bytes < 40_000, "moving two tensors stored {} new bytes", moved.new_bytes);
    let r1 = commit_bytes(&store, "org/m", &[("model.safetensors", &v1)], "v1");
    let r2 = commit_bytes(&store, "org/m", &[("model.safetensors", &v2)], "v2");
    assert_eq!(read_all(&store, &r1, "model.safetensors"), v1);
    assert_eq!(read_all(&store, &r2, "model.safetensors"), v2);
    assert!(store.fsck(&|_| {}).unwrap().problems.is_empty());
}

/// Commits `file` as `model.safetensors` from a directory, on `branch`,
/// with deltas against `base` (None: the branch's head).
fn commit_model(store: &Store, branch: &str, file: &[u8], base: Option<Id>) -> ferry_store::Committed {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.safetensors"), file).unwrap();
    let opts = ferry_store::CommitOptions { message: "m".into(), author: "t".into(), time: 1, follow_symlinks: false, base };
    store.write_session().commit_dir("org/m", branch, dir.path(), &opts, &()).unwrap()
}

/// A model of three BF16 tensors, each nudged by `step` from `prev`'s (or
/// drawn afresh).
fn model(prev: Option<&[Vec<u8>]>, step: f32, seed: u64) -> (Vec<u8>, Vec<Vec<u8>>) {
    use ferry_testkit::{bf16_nudged, bf16_weights, safetensors_file};
    let tensors: Vec<Vec<u8>> = match prev {
        None => [300_000, 200_000, 1000].iter().enumerate().map(|(i, &n)| bf16_weights(n, seed + i as u64)).collect(),
        Some(p) => p.iter().enumerate().map(|(i, t)| bf16_nudged(t, step, seed + i as u64)).collect(),
    };
    let file = safetensors_file("", &[("q", &tensors[0]), ("k", &tensors[1]), ("norm", &tensors[2])]);
    (file, tensors)
}

#[test]
fn a_fine_tune_is_stored_as_deltas_against_its_parent_and_reads_back_exactly() {
    let store = TempStore::new();
    let (v1, t1) = model(None, 0.0, 1);
    let (v2, _) = model(Some(&t1), 0.002, 10);
    let first = commit_model(&store, "main", &v1, None);
    let tuned = commit_model(&store, "main", &v2, None);
    // A fine-tune's step changes the low byte of nearly every value: byte
    // planes alone keep about 69% of the file, a delta well under that.
    assert!(tuned.totals.stored_bytes * 100 < tuned.totals.size * 60, "stored {} of {}", tuned.totals.stored_bytes, tuned.totals.size);
    assert!(tuned.totals.stored_bytes * 100 < first.totals.stored_bytes * 85);
    assert_eq!(read_all(&store, &first.revision, "model.safetensors"), v1);
    assert_eq!(read_all(&store, &tuned.revision, "model.safetensors"), v2);
    assert!(store.fsck(&|_| {}).unwrap().problems.is_empty());
    // What goes on the wire decodes alone, a delta's base being no
    // business of the receiver.
    let ids = ferry_testkit::chunks_of(&store, store.revision(&tuned.revision).unwrap().entries[0].file_id);
    for (id, rec) in ids.iter().zip(store.chunk_records(&ids).unwrap()) {
        ferry_core::codec::decode_verified(id, &rec.unwrap()).unwrap();
    }
}

#[test]
fn gc_keeps_the_bases_of_kept_deltas_and_chains_stay_short() {
    let store = TempStore::new();
    let (v0, mut tensors) = model(None, 0.0, 1);
    let base = commit_model(&store, "base", &v0, None);
    // Eleven small steps on main, the first against the base branch's model:
    // longer than any delta chain may be.
    let mut files = Vec::new();
    for k in 0..11 {
        let (f, t) = model(Some(&tensors), 0.0005, 100 + k);
        let c = commit_model(&store, "main", &f, (k == 0).then_some(base.revision));
        // v0 and steps 0..=6 make a chain of 8 records: step 7 is a delta
        // against the record half way down (four steps back, so larger),
        // never a whole record (about 69%).
        let percent = if k == 7 { 60 } else { 50 };
        assert!(c.totals.stored_bytes * 100 < c.totals.size * percent, "step {k} stored {} of {}", c.totals.stored_bytes, c.totals.size);
        files.push((c.revision, f));
        tensors = t;
    }
    // Without the base branch, nothing names v0's chunks but the deltas.
    store.update_branch("org/m", "base", Some(base.revision), None).unwrap();
    let rep = store.gc().unwrap();
    // Only v0's first chunk goes (its header and small tensor, no delta's
    // base); its tensor pieces are the first bases of every chain.
    assert_eq!(rep.chunks_removed, 1);
    for (rev, f) in &files {
        assert_eq!(&read_all(&store, rev, "model.safetensors"), f);
    }
    assert!(store.fsck(&|_| {}).unwrap().problems.is_empty());
}

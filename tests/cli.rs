//! The `ferry` command line end to end: real processes, real files, a real
//! RocksDB store in a temporary directory.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ferry_tests::*;

fn write(dir: &Path, rel: &str, data: &[u8]) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn init() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    ok(ferry(&store).arg("init"));
    (tmp, store)
}

#[test]
fn two_commits_dedup_and_export_byte_identical_files() {
    let (tmp, store) = init();
    let src = tmp.path().join("ckpt");
    let weights = noise(8 << 20, 1);
    write(&src, "model.safetensors", &weights);
    write(&src, "config.json", br#"{"layers": 4}"#);
    write(&src, "scripts/run.sh", b"#!/bin/sh\necho hi\n");
    std::fs::set_permissions(src.join("scripts/run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();

    let c1 = json(&ok(ferry(&store).args(["--json", "commit", "org/llama-ft"]).arg(&src).args(["-m", "step 1000"])));
    assert_eq!(c1["files"], 3);
    assert_eq!(c1["new_bytes"], c1["bytes"]);

    // Change 1 MiB in the middle of the weights: only that region is new.
    let mut w2 = weights.clone();
    w2[4 << 20..5 << 20].copy_from_slice(&noise(1 << 20, 2));
    write(&src, "model.safetensors", &w2);
    let c2 = json(&ok(ferry(&store).args(["--json", "commit", "org/llama-ft"]).arg(&src).args(["-m", "step 2000"])));
    let new = c2["new_bytes"].as_u64().unwrap();
    assert!((1 << 20..(1 << 20) + 600_000).contains(&new), "second commit stored {new} new bytes for a 1 MiB change");

    let log = json(&ok(ferry(&store).args(["--json", "log", "org/llama-ft"])));
    assert_eq!(log.as_array().unwrap().len(), 2);
    assert_eq!(log[0]["message"], "step 2000");
    assert_eq!(log[0]["parents"][0], c1["revision"]);

    let ls = json(&ok(ferry(&store).args(["--json", "ls", &format!("org/llama-ft@{}", &c1["revision"].as_str().unwrap()[..12])])));
    assert_eq!(ls.as_array().unwrap().len(), 3);
    assert_eq!(ls[2]["path"], "scripts/run.sh");
    assert_eq!(ls[2]["executable"], true);

    let out1 = tmp.path().join("out1");
    ok(ferry(&store).args(["export", &format!("org/llama-ft@{}", c1["revision"].as_str().unwrap())]).arg(&out1));
    let out2 = tmp.path().join("out2");
    ok(ferry(&store).args(["export", "org/llama-ft@main"]).arg(&out2));
    assert_eq!(read_tree(&out1)["model.safetensors"], weights);
    assert_eq!(read_tree(&out2), read_tree(&src));
    let mode = std::fs::metadata(out2.join("scripts/run.sh")).unwrap().permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "executable bit lost");

    let range = run(ferry(&store).args(["cat", "org/llama-ft@main", "model.safetensors", "--range", "8..4096"]));
    assert!(range.status.success());
    assert_eq!(range.stdout, &w2[8..4096]);
    let whole = run(ferry(&store).args(["cat", "org/llama-ft", "config.json"]));
    assert_eq!(whole.stdout, br#"{"layers": 4}"#);

    let stats = json(&ok(ferry(&store).args(["--json", "stats"])));
    assert_eq!(stats["revisions"], 2);
    assert!(stats["dedup_ratio"].as_f64().unwrap() > 1.7, "{stats}");
    assert_eq!(json(&ok(ferry(&store).args(["--json", "fsck"])))["ok"], true);
}

#[test]
fn deleting_a_branch_and_gc_reclaims_its_chunks() {
    let (tmp, store) = init();
    let a = tmp.path().join("a");
    write(&a, "f", &noise(3 << 20, 3));
    let b = tmp.path().join("b");
    write(&b, "g", &noise(3 << 20, 4));
    ok(ferry(&store).args(["commit", "org/a"]).arg(&a).args(["-m", "a"]));
    ok(ferry(&store).args(["commit", "org/b"]).arg(&b).args(["-m", "b"]));
    ok(ferry(&store).args(["branch", "delete", "org/b", "main"]));
    let gc = json(&ok(ferry(&store).args(["--json", "gc"])));
    assert!(gc["bytes_removed"].as_u64().unwrap() >= 3 << 20, "{gc}");
    let again = json(&ok(ferry(&store).args(["--json", "gc"])));
    assert_eq!(again["chunks_removed"], 0);
    assert_eq!(json(&ok(ferry(&store).args(["--json", "fsck"])))["ok"], true);
    let out = tmp.path().join("out");
    ok(ferry(&store).args(["export", "org/a"]).arg(&out));
    assert_eq!(read_tree(&out), read_tree(&a));
}

#[test]
fn a_tag_keeps_an_old_revision_from_gc_and_deleting_the_repository_reclaims_everything() {
    let (tmp, store) = init();
    let src = tmp.path().join("src");
    let v1 = noise(3 << 20, 5);
    write(&src, "w", &v1);
    ok(ferry(&store).args(["commit", "org/m"]).arg(&src).args(["-m", "v1"]));
    ok(ferry(&store).args(["tag", "create", "org/m", "v1"]));
    write(&src, "w", &noise(3 << 20, 6));
    ok(ferry(&store).args(["commit", "org/m"]).arg(&src).args(["-m", "v2"]));
    let branches = json(&ok(ferry(&store).args(["--json", "branch", "list", "org/m"])));
    assert_eq!(branches.as_array().unwrap().len(), 1, "a tag is listed as a branch: {branches}");
    assert_eq!(json(&ok(ferry(&store).args(["--json", "tag", "list", "org/m"])))[0]["tag"], "v1");
    // The tag is the only thing that keeps v1; the branch moved on.
    ok(ferry(&store).args(["branch", "create", "org/m", "tmp", "main"]));
    ok(ferry(&store).args(["branch", "delete", "org/m", "tmp"]));
    ok(ferry(&store).arg("gc"));
    assert_eq!(run(ferry(&store).args(["cat", "org/m@v1", "w"])).stdout, v1);
    assert_eq!(fails(ferry(&store).args(["tag", "create", "org/m", "v1"])).status.code(), Some(3));

    let deleted = json(&ok(ferry(&store).args(["--json", "repo", "delete", "org/m"])));
    assert_eq!(deleted["deleted"].as_array().unwrap().len(), 2, "{deleted}");
    assert_eq!(json(&ok(ferry(&store).args(["--json", "repos"]))).as_array().unwrap().len(), 0);
    let gc = json(&ok(ferry(&store).args(["--json", "gc"])));
    assert!(gc["bytes_removed"].as_u64().unwrap() >= 6 << 20, "{gc}");
    assert_eq!(fails(ferry(&store).args(["ls", "org/m"])).status.code(), Some(4));
    assert_eq!(json(&ok(ferry(&store).args(["--json", "fsck"])))["ok"], true);
}

#[test]
fn forget_keeps_what_its_rules_say_and_gc_reclaims_the_files_of_the_rest() {
    let (tmp, store) = init();
    let src = tmp.path().join("src");
    let mut steps = Vec::new();
    for i in 0..4 {
        steps.push(noise(2 << 20, 10 + i));
        write(&src, "w", steps.last().unwrap());
        ok(ferry(&store).args(["commit", "org/m"]).arg(&src).args(["-m", &format!("step {i}")]));
    }
    // A branch at the oldest revision keeps it whole.
    let log = json(&ok(ferry(&store).args(["--json", "log", "org/m"])));
    let oldest = log[3]["revision"].as_str().unwrap().to_owned();
    ok(ferry(&store).args(["branch", "create", "org/m", "keep", &oldest]));
    let dry = json(&ok(ferry(&store).args(["--json", "forget", "org/m", "--keep-last", "1", "--dry-run"])));
    assert_eq!(dry["forgotten"].as_array().unwrap().len(), 2, "a branch head is kept: {dry}");
    let gc = json(&ok(ferry(&store).args(["--json", "gc"])));
    assert_eq!(gc["chunks_removed"], 0, "a dry run forgot something: {gc}");
    ok(ferry(&store).args(["forget", "org/m", "--keep-last", "1"]));
    let gc = json(&ok(ferry(&store).args(["--json", "gc"])));
    assert!(gc["bytes_removed"].as_u64().unwrap() >= 4 << 20, "{gc}");
    assert_eq!(gc["revisions_removed"], 0, "the history stays whole");
    let flags: Vec<bool> =
        json(&ok(ferry(&store).args(["--json", "log", "org/m"]))).as_array().unwrap().iter().map(|e| e["forgotten"].as_bool().unwrap()).collect();
    assert_eq!(flags, [false, true, true, false]);
    assert_eq!(run(ferry(&store).args(["cat", "org/m@keep", "w"])).stdout, steps[0]);
    let gone = fails(ferry(&store).args(["cat", &format!("org/m@{}", log[1]["revision"].as_str().unwrap()), "w"]));
    assert_eq!(gone.status.code(), Some(4));
    assert!(stderr(&gone).contains("forgotten"), "{}", stderr(&gone));
    assert_eq!(json(&ok(ferry(&store).args(["--json", "fsck"])))["ok"], true);
}

#[test]
fn special_files_and_symlinks_are_refused_by_name() {
    let (tmp, store) = init();
    let src = tmp.path().join("src");
    write(&src, "ok.bin", b"data");
    let fifo = src.join("pipe");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let err = stderr(&fails(ferry(&store).args(["commit", "org/x"]).arg(&src).args(["-m", "m"])));
    assert!(err.contains("pipe") && err.contains("named pipe"), "{err}");
    std::fs::remove_file(&fifo).unwrap();

    let _sock = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    let err = stderr(&fails(ferry(&store).args(["commit", "org/x"]).arg(&src).args(["-m", "m"])));
    assert!(err.contains("a socket"), "{err}");
    std::fs::remove_file(src.join("sock")).unwrap();

    std::os::unix::fs::symlink(src.join("ok.bin"), src.join("link")).unwrap();
    let err = stderr(&fails(ferry(&store).args(["commit", "org/x"]).arg(&src).args(["-m", "m"])));
    assert!(err.contains("symbolic link") && err.contains("--follow-symlinks"), "{err}");
    ok(ferry(&store).args(["commit", "org/x", "--follow-symlinks"]).arg(&src).args(["-m", "m"]));
    let out = tmp.path().join("out");
    ok(ferry(&store).args(["export", "org/x"]).arg(&out));
    assert_eq!(std::fs::read(out.join("link")).unwrap(), b"data");
    // Nothing was committed by the refused attempts.
    assert_eq!(json(&ok(ferry(&store).args(["--json", "log", "org/x"]))).as_array().unwrap().len(), 1);
}

#[test]
fn files_whose_names_differ_only_in_case_are_refused_naming_both() {
    let (tmp, store) = init();
    let src = tmp.path().join("src");
    write(&src, "Model.safetensors", b"one");
    write(&src, "model.safetensors", b"two");
    let err = stderr(&fails(ferry(&store).args(["commit", "org/x"]).arg(&src).args(["-m", "m"])));
    assert!(err.contains("\"Model.safetensors\" and \"model.safetensors\" differ only in case"), "{err}");
    std::fs::remove_file(src.join("model.safetensors")).unwrap();
    write(&src, "MODEL.safetensors/part", b"two");
    let err = stderr(&fails(ferry(&store).args(["commit", "org/x"]).arg(&src).args(["-m", "m"])));
    assert!(err.contains("\"Model.safetensors\"") && err.contains("\"MODEL.safetensors\"") && err.contains("differ only in case"), "{err}");
    assert!(fails(ferry(&store).args(["log", "org/x"])).status.code().is_some(), "a refused commit created the repository");
}

#[test]
fn an_unreadable_file_fails_the_commit_naming_it() {
    let (tmp, store) = init();
    let src = tmp.path().join("src");
    write(&src, "secret.bin", b"no");
    std::fs::set_permissions(src.join("secret.bin"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut cmd = ferry(&store);
    if unsafe { libc::geteuid() } == 0 {
        // Root reads anything: run as nobody, on a store nobody may write.
        for p in [tmp.path(), &store, &src] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        std::fs::remove_dir_all(&store).unwrap();
        cmd = std::process::Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(ferry_bin()).arg("--store").arg(&store);
        ok(std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(ferry_bin())
            .arg("--store")
            .arg(&store)
            .arg("init"));
    }
    let err = stderr(&fails(cmd.args(["commit", "org/x"]).arg(&src).args(["-m", "m"])));
    assert!(err.contains("secret.bin") && err.contains("ermission denied"), "{err}");
}

#[test]
fn a_locked_store_and_a_foreign_format_are_reported_clearly() {
    let (tmp, store) = init();
    {
        let _held = ferry_store::Store::open(&store).unwrap();
        let err = stderr(&fails(ferry(&store).arg("stats")));
        assert!(err.contains("in use by another ferry process"), "{err}");
    }
    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &store).unwrap();
    {
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &store, cfs).unwrap();
        db.put_cf(db.cf_handle("meta").unwrap(), b"format", 99u32.to_le_bytes()).unwrap();
    }
    let err = stderr(&fails(ferry(&store).arg("stats")));
    assert!(err.contains("format version 99"), "{err}");
    let err = stderr(&fails(ferry(&tmp.path().join("nowhere")).arg("stats")));
    assert!(err.contains("no ferry store") && err.contains("ferry init"), "{err}");
}

#[test]
fn unknown_repositories_revisions_and_paths_are_named() {
    let (tmp, store) = init();
    let src = tmp.path().join("src");
    write(&src, "a", b"1");
    ok(ferry(&store).args(["commit", "org/x"]).arg(&src).args(["-m", "m"]));
    let err = stderr(&fails(ferry(&store).args(["ls", "org/nope"])));
    assert!(err.contains("unknown repository \"org/nope\""), "{err}");
    let err = stderr(&fails(ferry(&store).args(["ls", "org/x@deadbeefdead"])));
    assert!(err.contains("no such branch or revision"), "{err}");
    let err = stderr(&fails(ferry(&store).args(["cat", "org/x", "b"])));
    assert!(err.contains("no file \"b\""), "{err}");
    let err = stderr(&fails(ferry(&store).args(["cat", "org/x", "a", "--range", "0..9"])));
    assert!(err.contains("outside"), "{err}");
    let err = stderr(&fails(ferry(&store).args(["commit", "not-a-repo"]).arg(&src).args(["-m", "m"])));
    assert!(err.contains("owner/name"), "{err}");
}

#[test]
fn a_corrupted_chunk_is_named_by_fsck_and_never_exported() {
    let (tmp, store) = init();
    let src = tmp.path().join("src");
    write(&src, "w.bin", &noise(4 << 20, 11));
    ok(ferry(&store).args(["commit", "org/x"]).arg(&src).args(["-m", "m"]));
    // Flip bytes in the middle of every blob file.
    let mut hit = 0;
    for e in std::fs::read_dir(&store).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "blob") {
            let mut b = std::fs::read(&p).unwrap();
            let mid = b.len() / 2;
            for x in &mut b[mid..mid + 64] {
                *x ^= 0x5a;
            }
            std::fs::write(&p, b).unwrap();
            hit += 1;
        }
    }
    assert!(hit > 0, "no blob files: chunk records are not in BlobDB");
    let out = fails(ferry(&store).args(["--json", "fsck"]));
    let report = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(report["ok"], false);
    let problems = report["problems"].to_string();
    assert!(problems.contains("chunk "), "{problems}");
    let dest = tmp.path().join("out");
    let err = stderr(&fails(ferry(&store).args(["export", "org/x"]).arg(&dest)));
    assert!(err.contains("chunk") && err.contains("fsck"), "{err}");
    assert!(!dest.join("w.bin").exists(), "export wrote a file with wrong bytes");
    assert!(std::fs::read_dir(&dest).unwrap().next().is_none(), "export left a temporary file behind");
}

#[test]
fn export_refuses_to_write_through_a_planted_symlink() {
    let (tmp, store) = init();
    let src = tmp.path().join("src");
    write(&src, "sub/file", b"payload");
    ok(ferry(&store).args(["commit", "org/x"]).arg(&src).args(["-m", "m"]));
    let dest = tmp.path().join("dest");
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dest.join("sub")).unwrap();
    let err = stderr(&fails(ferry(&store).args(["export", "org/x"]).arg(&dest)));
    assert!(err.contains("refusing"), "{err}");
    assert!(!elsewhere.join("file").exists());
}

#[test]
fn a_full_disk_fails_the_commit_cleanly_and_keeps_earlier_revisions() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: mounting a small tmpfs needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let status = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"]).arg(&mnt).status().unwrap();
    assert!(status.success(), "mount tmpfs failed");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let store = mnt.join("store");
    ok(ferry(&store).arg("init"));
    let small = tmp.path().join("small-src");
    write(&small, "f", &noise(1 << 20, 1));
    let c1 = json(&ok(ferry(&store).args(["--json", "commit", "org/x"]).arg(&small).args(["-m", "fits"])));
    let big = tmp.path().join("big-src");
    write(&big, "f", &noise(64 << 20, 2));
    let err = stderr(&fails(ferry(&store).args(["commit", "org/x"]).arg(&big).args(["-m", "too big"])));
    assert!(err.contains("No space left") || err.contains("space"), "{err}");
    assert_eq!(json(&ok(ferry(&store).args(["--json", "fsck"])))["ok"], true);
    let log = json(&ok(ferry(&store).args(["--json", "log", "org/x"])));
    assert_eq!(log[0]["revision"], c1["revision"]);
    let out = tmp.path().join("out");
    ok(ferry(&store).args(["export", "org/x"]).arg(&out));
    assert_eq!(read_tree(&out), read_tree(&small));
}

#[test]
fn a_token_pattern_that_can_never_match_is_refused_with_the_one_meant() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    ok(ferry(&store).arg("init"));
    let out = fails(ferry(&store).args(["token", "create", "--repo", "*", "--scope", "read"]));
    assert!(stderr(&out).contains("did you mean \"*/*\""), "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(2));
    ok(ferry(&store).args(["token", "create", "--repo", "*/*", "--scope", "read"]));
}

#[test]
fn log_shows_human_times_and_takes_the_author_from_git() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    let gitconfig = tmp.path().join("gitconfig");
    std::fs::write(&gitconfig, "[user]\n\tname = Ada Lovelace\n\temail = ada@example.com\n").unwrap();
    ok(ferry(&store).arg("init"));
    ok(ferry(&store).args(["commit", "org/m"]).arg(&src).args(["-m", "one"]).env_remove("FERRY_AUTHOR").env("GIT_CONFIG_GLOBAL", &gitconfig));
    let text = ok(ferry(&store).args(["log", "org/m"]));
    assert!(text.contains("author   Ada Lovelace <ada@example.com>"), "{text}");
    let year = text.lines().find_map(|l| l.strip_prefix("time     ")).unwrap();
    assert!(year.ends_with(" UTC") && year.starts_with("20"), "{text}");
    let j = json(&ok(ferry(&store).args(["--json", "log", "org/m"])));
    assert!(j[0]["time"].is_i64(), "the JSON keeps Unix seconds: {j}");
}

#[test]
fn completions_and_man_pages_come_from_the_command_definitions() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(ferry(&store).args(["completions", shell]));
        assert!(script.contains("commit") && script.contains("--http"), "{shell}: {script}");
    }
    let man = tmp.path().join("man");
    ok(ferry(&store).arg("manpages").arg(&man));
    let serve = std::fs::read_to_string(man.join("ferry-serve.1")).unwrap();
    assert!(serve.contains("memory\\-budget\\-mib") || serve.contains("memory-budget-mib"), "{serve}");
    assert!(man.join("ferry.1").exists());
}

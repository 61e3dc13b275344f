//! Stores whose chunks, trees and journal live in a real Garage cluster on
//! loopback, driven through the `ferry` binary: commit, export, fsck; a hub
//! serving pushes, pulls and range reads (QUIC and HTTP) from the bucket,
//! and one following another hub into the bucket; a
//! store rebuilt from the bucket alone; a second writer refused; `kill -9`
//! of a commit or of the hub at any moment, and between the bucket's
//! journal and the local write; a bucket that is down or refuses the
//! credentials; a three-node cluster (factor 3) that keeps working with
//! a node down; and a read replica serving from the bucket while the
//! writer takes pushes; a fine-tune kept as deltas in the packs, whose
//! bases a store rebuilt from them still knows; gc rewriting sparse packs,
//! deleting them after the grace period, and killed at each of its steps.
//! FERRY_CRASH_ITERATIONS sets the kill loops' length.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferry_testkit::noise;
use ferry_testkit::Garage;
use ferry_tests::*;

/// A `ferry` command on `store` with the bucket's credentials.
fn ferry_on(garage: &Garage, store: &Path) -> Command {
    let mut c = ferry(store);
    c.env("AWS_ACCESS_KEY_ID", garage.access_key_id()).env("AWS_SECRET_ACCESS_KEY", garage.secret_access_key());
    c
}

/// `--backend` and its settings for `prefix` of the test bucket; small
/// packs so that a few MiB make several.
fn backend_args(garage: &Garage, prefix: &str) -> Vec<String> {
    vec![
        "--backend".into(),
        format!("s3://{}/{prefix}", garage.bucket()),
        "--s3-endpoint".into(),
        garage.endpoint(),
        "--s3-region".into(),
        garage.region().into(),
        "--pack-mib".into(),
        "2".into(),
    ]
}

/// `ferry serve` on a bucket store, with extra arguments.
fn serve_on(garage: &Garage, store: &Path, extra: &[&str]) -> Command {
    let mut c = ferry_on(garage, store);
    c.args(["--json", "serve", "--listen", "127.0.0.1:0"]).args(extra);
    c
}

fn version(dir: &Path, i: u64) -> PathBuf {
    let src = dir.join(format!("v{i}"));
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("base.bin"), noise(6 << 20, 1)).unwrap();
    std::fs::write(src.join("sub/new.bin"), noise(3 << 20, 100 + i)).unwrap();
    src
}

/// Commits `src` to org/model with `ferry` (a command on some store);
/// returns the revision.
fn commit_with(mut ferry: Command, src: &Path, msg: &str) -> String {
    let out = ok(ferry.args(["--json", "commit", "org/model"]).arg(src).args(["-m", msg]));
    json(out.lines().last().unwrap())["revision"].as_str().unwrap().to_owned()
}

fn commit(garage: &Garage, store: &Path, src: &Path, msg: &str) -> String {
    commit_with(ferry_on(garage, store), src, msg)
}

fn assert_exports(garage: &Garage, store: &Path, rev: &str, src: &Path) {
    let out = store.with_file_name(format!("export-{rev}"));
    let _ = std::fs::remove_dir_all(&out);
    ok(ferry_on(garage, store).args(["export", &format!("org/model@{rev}")]).arg(&out));
    assert!(read_tree(&out) == read_tree(src), "revision {rev} does not export as committed");
}

/// Runs fsck, asserts it found no problem, and returns its report.
fn fsck_ok(garage: &Garage, store: &Path) -> serde_json::Value {
    let out = ok(ferry_on(garage, store).args(["--json", "fsck"]));
    let report = json(out.lines().last().unwrap());
    assert_eq!(report["problems"].as_array().map_or(0, Vec::len), 0, "fsck: {report}");
    report
}

#[test]
fn a_store_on_garage_commits_serves_and_is_rebuilt_from_the_bucket_alone() {
    let garage = Garage::single().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    ok(ferry_on(&garage, &store).arg("init").args(backend_args(&garage, "hub")));
    // A second store cannot start a bucket that holds one.
    let other = tmp.path().join("other");
    let refused = fails(ferry_on(&garage, &other).arg("init").args(backend_args(&garage, "hub")));
    assert!(stderr(&refused).contains("already holds a ferry bucket"), "{}", stderr(&refused));

    let (v1, v2) = (version(tmp.path(), 1), version(tmp.path(), 2));
    let r1 = commit(&garage, &store, &v1, "one");
    let r2 = commit(&garage, &store, &v2, "two");
    assert_exports(&garage, &store, &r1, &v1);
    assert_exports(&garage, &store, &r2, &v2);
    fsck_ok(&garage, &store);
    let stats = json(&ok(ferry_on(&garage, &store).args(["--json", "stats"])));
    // The second version stored only its new file (and trees).
    assert!(stats["stored_bytes"].as_u64().unwrap() < (13 << 20), "{stats}");

    // A hub on the bucket: a push lands in the bucket, a pull reads it back.
    let laptop = tmp.path().join("laptop");
    ok(ferry(&laptop).arg("init"));
    let v3 = version(tmp.path(), 3);
    let mut hub = Hub::spawn(serve_on(&garage, &store, &["--http", "127.0.0.1:0"]), store.clone());
    let token = hub.token("org/*", "write");
    ok(client(&laptop, Some(&token)).args(["pull", &hub.addr, "org/model"]));
    let r3 = commit_with(ferry(&laptop), &v3, "three");
    ok(client(&laptop, Some(&token)).args(["push", &hub.addr, "org/model"]));
    let fresh = tmp.path().join("fresh");
    ok(ferry(&fresh).arg("init"));
    ok(client(&fresh, Some(&token)).args(["pull", &hub.addr, "org/model"]));
    // Range reads from the bucket, over QUIC and through the HTTP door.
    let base = std::fs::read(v3.join("base.bin")).unwrap();
    let range = run(client(&fresh, Some(&token)).args(["cat", "org/model@main", "base.bin", "--range", "1000..300000", "--hub", &hub.addr]));
    assert!(range.status.success() && range.stdout == base[1000..300000], "a ranged cat from the hub differs");
    let url = format!("http://{}/org/model/resolve/main/base.bin", hub.http.as_deref().unwrap());
    let curl = Command::new("curl").args(["-sf", "-H", &format!("Authorization: Bearer {token}"), "-r", "5000000-5999999", &url]).output().unwrap();
    assert!(curl.status.success() && curl.stdout == base[5_000_000..6_000_000], "a ranged GET through the HTTP door differs");
    let out = tmp.path().join("pulled");
    ok(ferry(&fresh).args(["export", &format!("org/model@{r3}")]).arg(&out));
    assert!(read_tree(&out) == read_tree(&v3));

    // While the hub writes the bucket, nobody else may.
    let rival = tmp.path().join("rival");
    let refused = fails(ferry_on(&garage, &rival).arg("rebuild").args(backend_args(&garage, "hub")));
    assert!(stderr(&refused).contains("another store writes this bucket"), "{}", stderr(&refused));
    hub.kill();

    // Retention: the oldest revision is forgotten, in the journal too.
    ok(ferry_on(&garage, &store).args(["forget", "org/model", "--keep-last", "2"]));
    // The store's directory is lost: the bucket alone makes it again.
    let log_before = ok(ferry_on(&garage, &store).args(["log", "org/model"]));
    assert!(log_before.contains("forgotten"), "{log_before}");
    std::fs::remove_dir_all(&store).unwrap();
    let rebuilt = tmp.path().join("rebuilt");
    ok(ferry_on(&garage, &rebuilt).arg("rebuild").args(backend_args(&garage, "hub")));
    assert_eq!(ok(ferry_on(&garage, &rebuilt).args(["log", "org/model"])), log_before);
    for (rev, src) in [(&r2, &v2), (&r3, &v3)] {
        assert_exports(&garage, &rebuilt, rev, src);
    }
    let forgotten = fails(ferry_on(&garage, &rebuilt).args(["export", &format!("org/model@{r1}")]).arg(tmp.path().join("old")));
    assert!(stderr(&forgotten).contains("forgotten"), "{}", stderr(&forgotten));
    fsck_ok(&garage, &rebuilt);
}

#[test]
fn a_fine_tune_on_a_bucket_is_kept_as_deltas_and_a_store_rebuilt_from_the_bucket_still_sends_them() {
    use ferry_testkit::{bf16_nudged, bf16_weights, safetensors_file};
    let garage = Garage::single().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    ok(ferry_on(&garage, &store).arg("init").args(backend_args(&garage, "deltas")));
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let base: Vec<Vec<u8>> = (0..3).map(|i| bf16_weights(1 << 20, i)).collect();
    let named = |t: &[Vec<u8>]| safetensors_file("", &[("a", &t[0]), ("b", &t[1]), ("c", &t[2])]);
    std::fs::write(src.join("model.safetensors"), named(&base)).unwrap();
    commit(&garage, &store, &src, "base");
    // A reader that holds the base.
    let reader = tmp.path().join("reader");
    ok(ferry(&reader).arg("init"));
    let mut hub = Hub::spawn(serve_on(&garage, &store, &[]), store.clone());
    let token = hub.token("org/*", "read");
    ok(client(&reader, Some(&token)).args(["pull", &hub.addr, "org/model"]));
    hub.kill();

    let tuned: Vec<Vec<u8>> = base.iter().enumerate().map(|(i, t)| bf16_nudged(t, 0.002, 10 + i as u64)).collect();
    std::fs::write(src.join("model.safetensors"), named(&tuned)).unwrap();
    let c = json(&ok(ferry_on(&garage, &store).args(["--json", "commit", "org/model"]).arg(&src).args(["-m", "tuned"])));
    let size = c["bytes"].as_u64().unwrap();
    // Deltas against the base, as on the embedded backend: well under the
    // ~69% byte planes alone leave.
    assert!(c["stored_bytes"].as_u64().unwrap() * 100 < size * 60, "{c}");

    // The store's directory is lost; the one rebuilt from the bucket knows
    // each delta's base from the packs, so the reader is sent deltas.
    std::fs::remove_dir_all(&store).unwrap();
    let rebuilt = tmp.path().join("rebuilt");
    ok(ferry_on(&garage, &rebuilt).arg("rebuild").args(backend_args(&garage, "deltas")));
    fsck_ok(&garage, &rebuilt);
    let mut hub = Hub::spawn(serve_on(&garage, &rebuilt, &[]), rebuilt.clone());
    let token = hub.token("org/*", "read");
    let pulled = json(&ok(client(&reader, Some(&token)).args(["--json", "pull", &hub.addr, "org/model"])));
    assert!(pulled["wire_bytes_received"].as_u64().unwrap() * 100 < size * 60, "{pulled}");
    hub.kill();
    let out = tmp.path().join("out");
    ok(ferry(&reader).args(["export", "org/model"]).arg(&out));
    assert_eq!(std::fs::read(out.join("model.safetensors")).unwrap(), named(&tuned));
}

#[test]
fn kill_9_of_a_commit_to_a_bucket_loses_nothing_acknowledged() {
    let garage = Garage::single().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    ok(ferry_on(&garage, &store).arg("init").args(backend_args(&garage, "crash")));
    let mut rng = Rng::new(0x00b0_c4e7);
    let mut committed: Vec<(String, PathBuf)> = Vec::new();
    let iterations = std::env::var("FERRY_CRASH_ITERATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(4u64);
    let mut killed = 0;
    for i in 0..iterations {
        let src = version(tmp.path(), 10 + i);
        let mut child = ferry_on(&garage, &store)
            .args(["--json", "commit", "org/model"])
            .arg(&src)
            .args(["-m", "step"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(300)));
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        match std::str::from_utf8(&out.stdout).ok().and_then(|s| s.lines().last()).map(json) {
            Some(report) if out.status.success() => committed.push((report["revision"].as_str().unwrap().to_owned(), src)),
            _ => killed += 1,
        }
        fsck_ok(&garage, &store);
        for (rev, src) in &committed {
            assert_exports(&garage, &store, rev, src);
        }
    }
    // Killed after the bucket's journal has the move, before the local
    // database does: the next open catches up from the bucket.
    let src = version(tmp.path(), 99);
    let aborted = run(ferry_on(&garage, &store).env("FERRY_CRASH_AT", "move-journaled").args(["commit", "org/model"]).arg(&src).args(["-m", "journaled"]));
    assert!(!aborted.status.success());
    let log = ok(ferry_on(&garage, &store).args(["log", "org/model"]));
    assert!(log.contains("journaled"), "the journaled move was not caught up: {log}");
    assert_exports(&garage, &store, "main", &src);
    fsck_ok(&garage, &store);
    report(
        "bucket-crash",
        &format!("{iterations} commits to Garage, {killed} killed; every acknowledged one intact, a move journaled before a kill caught up"),
    );
}

#[test]
fn a_three_node_garage_cluster_with_a_node_down_keeps_the_store_and_its_hub_working() {
    let mut garage = Garage::cluster(3).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    ok(ferry_on(&garage, &store).arg("init").args(backend_args(&garage, "eu")));
    let v1 = version(tmp.path(), 1);
    let r1 = commit(&garage, &store, &v1, "one");
    garage.kill_node(2);
    assert_exports(&garage, &store, &r1, &v1);
    let v2 = version(tmp.path(), 2);
    let r2 = commit(&garage, &store, &v2, "two");
    garage.restart_node(2).unwrap();

    // A node killed while a hub on the bucket takes a push: the push
    // completes (two of three nodes are a quorum), or fails clearly and a
    // re-run completes; a pull then gets it back whole.
    let mut hub = Hub::spawn(serve_on(&garage, &store, &[]), store.clone());
    let token = hub.token("org/*", "write");
    let laptop = tmp.path().join("laptop");
    ok(ferry(&laptop).arg("init"));
    ok(client(&laptop, Some(&token)).args(["pull", &hub.addr, "org/model"]));
    let v3 = tmp.path().join("v3");
    std::fs::create_dir_all(&v3).unwrap();
    std::fs::write(v3.join("big.bin"), noise(48 << 20, 3)).unwrap();
    let r3 = commit_with(ferry(&laptop), &v3, "three");
    let push = client(&laptop, Some(&token))
        .args(["push", &hub.addr, "org/model"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    garage.kill_node(1);
    let pushed = push.wait_with_output().unwrap();
    if !pushed.status.success() {
        ok(client(&laptop, Some(&token)).args(["push", &hub.addr, "org/model"]));
    }
    let fresh = tmp.path().join("fresh");
    ok(ferry(&fresh).arg("init"));
    ok(client(&fresh, Some(&token)).args(["pull", &hub.addr, "org/model"]));
    let out = tmp.path().join("pulled");
    ok(ferry(&fresh).args(["export", &format!("org/model@{r3}")]).arg(&out));
    assert!(read_tree(&out) == read_tree(&v3), "the push during a node's loss did not come back whole");
    hub.kill();
    garage.restart_node(1).unwrap();
    fsck_ok(&garage, &store);
    std::fs::remove_dir_all(&store).unwrap();
    let rebuilt = tmp.path().join("rebuilt");
    ok(ferry_on(&garage, &rebuilt).arg("rebuild").args(backend_args(&garage, "eu")));
    assert_exports(&garage, &rebuilt, &r1, &v1);
    assert_exports(&garage, &rebuilt, &r2, &v2);
    assert_exports(&garage, &rebuilt, &r3, &v3);
    fsck_ok(&garage, &rebuilt);
}

#[test]
fn a_bucket_that_is_down_or_refuses_the_credentials_fails_clearly_and_changes_nothing() {
    let mut garage = Garage::single().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    ok(ferry_on(&garage, &store).arg("init").args(backend_args(&garage, "down")));
    let (v1, v2) = (version(tmp.path(), 1), version(tmp.path(), 2));
    let r1 = commit(&garage, &store, &v1, "one");

    // Credentials the store refuses: a clear error, no store made.
    let other = tmp.path().join("other");
    let refused = fails(
        ferry(&other)
            .env("AWS_ACCESS_KEY_ID", garage.access_key_id())
            .env("AWS_SECRET_ACCESS_KEY", "0".repeat(64))
            .arg("init")
            .args(backend_args(&garage, "other")),
    );
    assert_eq!(refused.status.code(), Some(5), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("backend unavailable"), "{}", stderr(&refused));
    assert!(!other.exists(), "a store was made on a bucket that refused us");
    let refused = fails(
        ferry(&store)
            .env("AWS_ACCESS_KEY_ID", garage.access_key_id())
            .env("AWS_SECRET_ACCESS_KEY", "0".repeat(64))
            .args(["commit", "org/model"])
            .arg(&v2)
            .args(["-m", "two"]),
    );
    assert_eq!(refused.status.code(), Some(5), "{}", stderr(&refused));

    // The store is down: every command says so, as worth a retry.
    garage.kill_node(0);
    let started = std::time::Instant::now();
    for args in [&["commit", "org/model", v2.to_str().unwrap(), "-m", "two"][..], &["log", "org/model"], &["fsck"]] {
        let down = fails(ferry_on(&garage, &store).args(args));
        assert_eq!(down.status.code(), Some(5), "{args:?}: {}", stderr(&down));
        assert!(stderr(&down).contains("unavailable"), "{args:?}: {}", stderr(&down));
    }
    assert!(started.elapsed() < Duration::from_secs(150), "failing took {:?}", started.elapsed());

    // Back up: nothing was half-written, and the commit goes through.
    garage.restart_node(0).unwrap();
    fsck_ok(&garage, &store);
    assert_exports(&garage, &store, "main", &v1);
    let r2 = commit(&garage, &store, &v2, "two");
    assert_ne!(r1, r2);
    assert_exports(&garage, &store, &r2, &v2);
}

#[test]
fn kill_9_of_a_hub_on_a_bucket_during_pushes_loses_nothing_acknowledged() {
    let garage = Garage::single().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("hub");
    ok(ferry_on(&garage, &store).arg("init").args(backend_args(&garage, "hub-crash")));
    let serve = || Hub::spawn(serve_on(&garage, &store, &[]), store.clone());
    let laptop = tmp.path().join("laptop");
    ok(ferry(&laptop).arg("init"));
    let mut rng = Rng::new(0x00c4_a5e5);
    let mut token = None;
    let mut acknowledged: Vec<(String, PathBuf)> = Vec::new();
    let mut killed_mid_push = 0;
    let iterations = std::env::var("FERRY_CRASH_ITERATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(3u64);
    for i in 0..iterations {
        let src = version(tmp.path(), 20 + i);
        let rev = commit_with(ferry(&laptop), &src, "step");
        let mut hub = serve();
        let t = token.get_or_insert_with(|| hub.token("org/*", "write")).clone();
        let push = client(&laptop, Some(&t))
            .args(["push", &hub.addr, "org/model"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(300)));
        hub.kill();
        if !push.wait_with_output().unwrap().status.success() {
            killed_mid_push += 1;
        }
        // The killed hub's store: consistent, whatever the kill interrupted.
        fsck_ok(&garage, &store);
        // A new hub on the same directory takes the lease back at once, and
        // the push re-run completes.
        let mut hub = serve();
        ok(client(&laptop, Some(&t)).args(["push", &hub.addr, "org/model"]));
        hub.kill();
        acknowledged.push((rev, src));
        for (rev, src) in &acknowledged {
            assert_exports(&garage, &store, rev, src);
        }
    }
    fsck_ok(&garage, &store);
    report("bucket-hub-crash", &format!("a hub on Garage killed {iterations} times during pushes ({killed_mid_push} pushes cut short, all completed when re-run); every acknowledged revision intact, fsck clean"));
}

#[test]
fn a_hub_on_a_bucket_follows_another_hub_and_its_copy_survives_in_the_bucket() {
    let garage = Garage::single().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("eu")).unwrap();
    let src = Hub::start(&tmp.path().join("eu"));
    let (write, read) = (src.token("org/*", "write"), src.token("org/*", "read"));
    let store = tmp.path().join("us");
    ok(ferry_on(&garage, &store).arg("init").args(backend_args(&garage, "us")));
    let known = tmp.path().join("us.known_hubs");
    let mut follower = {
        let mut c = serve_on(&garage, &store, &["--mirror-of", &src.addr, "--repo", "org/*", "--mirror-interval", "1"]);
        c.env("FERRY_TOKEN", &read).env("FERRY_KNOWN_HUBS", &known);
        Hub::spawn(c, store.clone())
    };
    let laptop = tmp.path().join("laptop");
    ok(ferry(&laptop).arg("init"));
    let v1 = version(tmp.path(), 1);
    let rev = commit_with(ferry(&laptop), &v1, "one");
    ok(client(&laptop, Some(&write)).args(["push", &src.addr, "org/model"]));
    // The follower copies it into the bucket within a few intervals.
    let local = follower.token("org/*", "read");
    let reader = tmp.path().join("reader");
    ok(ferry(&reader).arg("init"));
    let start = std::time::Instant::now();
    loop {
        let out = run(client(&reader, Some(&local)).args(["--json", "pull", &follower.addr, "org/model"]));
        if out.status.success() && json(&String::from_utf8_lossy(&out.stdout))["head"] == rev.as_str() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the follower never got {rev}: {}", stderr(&out));
        std::thread::sleep(Duration::from_millis(300));
    }
    // Stopped as an operator would (SIGTERM): it gives its lease back, so
    // the rebuild need not wait the lease out.
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(follower.child.id() as i32, libc::SIGTERM) };
    assert!(follower.child.wait().unwrap().success());
    // The copy is in the bucket: a store rebuilt from it has the revision.
    let rebuilt = tmp.path().join("rebuilt");
    ok(ferry_on(&garage, &rebuilt).arg("rebuild").args(backend_args(&garage, "us")));
    assert_exports(&garage, &rebuilt, &rev, &v1);
}

#[test]
fn a_read_replica_on_the_bucket_serves_pulls_while_the_writer_takes_pushes_and_sends_pushes_to_the_writer() {
    let garage = Garage::single().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("writer");
    ok(ferry_on(&garage, &store).arg("init").args(backend_args(&garage, "shared")));
    let writer = Hub::spawn(serve_on(&garage, &store, &[]), store.clone());
    let write = writer.token("org/*", "write");
    let laptop = tmp.path().join("laptop");
    ok(ferry(&laptop).arg("init"));
    let v1 = version(tmp.path(), 1);
    let r1 = commit_with(ferry(&laptop), &v1, "one");
    ok(client(&laptop, Some(&write)).args(["push", &writer.addr, "org/model"]));

    // The replica's directory is made from the bucket at its first start;
    // from then on it reads the bucket's journal, never the writer.
    let replica_dir = tmp.path().join("replica");
    let mut args = vec!["--replica-of", writer.addr.as_str(), "--replica-interval", "200ms", "--http", "127.0.0.1:0"];
    let bucket = backend_args(&garage, "shared");
    args.extend(bucket.iter().map(String::as_str));
    let replica = Hub::spawn(serve_on(&garage, &replica_dir, &args), replica_dir.clone());
    let read = replica.token("org/*", "write");
    let reader = tmp.path().join("reader");
    ok(ferry(&reader).arg("init"));
    ok(client(&reader, Some(&read)).args(["pull", &replica.addr, "org/model"]));
    assert_exports(&garage, &reader, &r1, &v1);

    // The writer takes a push while the replica serves pulls: the replica
    // follows within a few intervals.
    let v2 = version(tmp.path(), 2);
    let r2 = commit_with(ferry(&laptop), &v2, "two");
    let mut push = client(&laptop, Some(&write)).args(["push", &writer.addr, "org/model"]).spawn().unwrap();
    let start = std::time::Instant::now();
    let mut pulls = 0;
    loop {
        let out = run(client(&reader, Some(&read)).args(["--json", "pull", &replica.addr, "org/model"]));
        assert!(out.status.success(), "a pull from the replica failed: {}", stderr(&out));
        pulls += 1;
        if json(&String::from_utf8_lossy(&out.stdout))["head"] == r2.as_str() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the replica never showed {r2}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(push.wait().unwrap().success());
    assert!(pulls > 0);
    assert_exports(&garage, &reader, &r2, &v2);
    // A range read through the replica's HTTP door comes from the bucket.
    let base = std::fs::read(v2.join("base.bin")).unwrap();
    let url = format!("http://{}/org/model/resolve/main/base.bin", replica.http.as_deref().unwrap());
    let curl = Command::new("curl").args(["-sf", "-H", &format!("Authorization: Bearer {read}"), "-r", "3000000-3999999", &url]).output().unwrap();
    assert!(curl.status.success() && curl.stdout == base[3_000_000..4_000_000], "a ranged GET through the replica's HTTP door differs");

    // A push to the replica is refused, naming the hub that writes.
    let v3 = version(tmp.path(), 3);
    commit_with(ferry(&laptop), &v3, "three");
    let refused = fails(client(&laptop, Some(&read)).args(["push", &replica.addr, "org/model"]));
    assert!(stderr(&refused).contains("read replica") && stderr(&refused).contains(&writer.addr), "{}", stderr(&refused));
    // The writer still holds the bucket: the replica took no lease.
    ok(client(&laptop, Some(&write)).args(["push", &writer.addr, "org/model"]));
}

/// Commits `bytes` of fresh noise as the only file of `repo`, then deletes
/// the repository: garbage for the next gc.
fn make_garbage(garage: &Garage, store: &Path, dir: &Path, repo: &str, seed: u64) {
    let src = dir.join(format!("garbage-{seed}"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("scratch.bin"), noise(5 << 20, seed)).unwrap();
    ok(ferry_on(garage, store).args(["commit", repo]).arg(&src).args(["-m", "scratch"]));
    ok(ferry_on(garage, store).args(["repo", "delete", repo]));
}

fn gc(garage: &Garage, store: &Path) -> serde_json::Value {
    json(ok(ferry_on(garage, store).args(["--json", "gc"])).lines().last().unwrap())
}

#[test]
fn gc_on_a_bucket_rewrites_sparse_packs_and_deletes_them_after_the_grace_period() {
    let garage = Garage::single().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // No grace: a retired pack goes at the next gc.
    let store = tmp.path().join("store");
    ok(ferry_on(&garage, &store).arg("init").args(backend_args(&garage, "gc?gc_grace=0")));
    let v1 = version(tmp.path(), 1);
    let r1 = commit(&garage, &store, &v1, "one");
    make_garbage(&garage, &store, tmp.path(), "org/scratch", 7);
    let before = json(&ok(ferry_on(&garage, &store).args(["--json", "stats"])));
    let first = gc(&garage, &store);
    assert!(first["packs_retired"].as_u64().unwrap() >= 2, "{first}");
    assert!(first["chunks_removed"].as_u64().unwrap() > 0 && first["revisions_removed"].as_u64().unwrap() >= 1, "{first}");
    assert_eq!(first["packs_deleted"], 0, "{first}");
    // Retired, not yet deleted: still in the bucket, named by no index entry.
    assert!(fsck_ok(&garage, &store)["unindexed_records"].as_u64().unwrap() > 0);
    assert_exports(&garage, &store, &r1, &v1);
    let second = gc(&garage, &store);
    assert_eq!(second["packs_deleted"], first["packs_retired"], "{second}");
    // fsck reads every pack in the bucket: none holds a record of the
    // scratch repository any more.
    assert_eq!(fsck_ok(&garage, &store)["unindexed_records"], 0);
    let after = json(&ok(ferry_on(&garage, &store).args(["--json", "stats"])));
    let (was, now) = (before["stored_bytes"].as_u64().unwrap(), after["stored_bytes"].as_u64().unwrap());
    assert!(now < (10 << 20) && was - now > (4 << 20), "stored {was} before gc, {now} after");
    assert_exports(&garage, &store, &r1, &v1);
    // A forgotten revision's own chunks share packs with kept ones: those
    // packs are rewritten, the kept records copied.
    let v2 = version(tmp.path(), 2);
    let r2 = commit(&garage, &store, &v2, "two");
    ok(ferry_on(&garage, &store).args(["forget", "org/model", "--keep-last", "1"]));
    let third = gc(&garage, &store);
    assert!(third["packs_retired"].as_u64().unwrap() >= 1 && third["chunks_removed"].as_u64().unwrap() > 0, "{third}");
    gc(&garage, &store);
    assert_eq!(fsck_ok(&garage, &store)["unindexed_records"], 0);
    assert_exports(&garage, &store, &r2, &v2);

    // The bucket alone makes the store again, without the scratch and the
    // forgotten files, with the history.
    let log = ok(ferry_on(&garage, &store).args(["log", "org/model"]));
    let rebuilt = tmp.path().join("rebuilt");
    ok(ferry_on(&garage, &rebuilt).arg("rebuild").args(backend_args(&garage, "gc?gc_grace=0")));
    assert_exports(&garage, &rebuilt, &r2, &v2);
    assert_eq!(ok(ferry_on(&garage, &rebuilt).args(["log", "org/model"])), log);
    assert_eq!(fsck_ok(&garage, &rebuilt)["unindexed_records"], 0);
    let repos = ok(ferry_on(&garage, &rebuilt).args(["repos"]));
    assert!(!repos.contains("org/scratch"), "{repos}");

    // With the default grace, retired packs stay for readers that may still
    // use them; a store rebuilt meanwhile reads past them.
    let slow = tmp.path().join("slow");
    ok(ferry_on(&garage, &slow).arg("init").args(backend_args(&garage, "gc-slow")));
    let r1 = commit(&garage, &slow, &v1, "one");
    make_garbage(&garage, &slow, tmp.path(), "org/scratch", 8);
    let first = gc(&garage, &slow);
    assert!(first["packs_retired"].as_u64().unwrap() >= 2, "{first}");
    assert_eq!(gc(&garage, &slow)["packs_deleted"], 0);
    assert!(fsck_ok(&garage, &slow)["unindexed_records"].as_u64().unwrap() > 0);
    let rebuilt = tmp.path().join("rebuilt-slow");
    ok(ferry_on(&garage, &rebuilt).arg("rebuild").args(backend_args(&garage, "gc-slow")));
    assert_exports(&garage, &rebuilt, &r1, &v1);
    fsck_ok(&garage, &rebuilt);
    assert!(!ok(ferry_on(&garage, &rebuilt).args(["repos"])).contains("org/scratch"));
}

#[test]
fn kill_9_of_gc_on_a_bucket_at_any_step_loses_nothing() {
    let garage = Garage::single().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    ok(ferry_on(&garage, &store).arg("init").args(backend_args(&garage, "gc-crash?gc_grace=0")));
    let v1 = version(tmp.path(), 1);
    let r1 = commit(&garage, &store, &v1, "one");
    // Each step of a gc in turn; the retired packs one run leaves are
    // deleted at the start of the next (no grace).
    let points = ["gc-after-nodes", "gc-copied", "gc-repointed", "gc-retired", "gc-deleted-packs"];
    for (i, point) in points.iter().enumerate() {
        make_garbage(&garage, &store, tmp.path(), &format!("org/scratch{i}"), 20 + i as u64);
        if *point == "gc-deleted-packs" {
            // Something retired for the killed run to delete.
            gc(&garage, &store);
        }
        let aborted = run(ferry_on(&garage, &store).env("FERRY_CRASH_AT", point).arg("gc"));
        assert!(!aborted.status.success(), "gc did not reach {point}");
        fsck_ok(&garage, &store);
        assert_exports(&garage, &store, &r1, &v1);
        // The next run finishes the job: it retires what the killed one
        // copied, or deletes what it retired.
        let done = gc(&garage, &store);
        let worked = done["packs_retired"].as_u64().unwrap() + done["packs_deleted"].as_u64().unwrap();
        assert!(worked > 0, "after a kill at {point}: {done}");
        fsck_ok(&garage, &store);
        assert_exports(&garage, &store, &r1, &v1);
    }
    // What every kill left is collected in the end, and the bucket alone
    // still makes the store.
    gc(&garage, &store);
    gc(&garage, &store);
    assert_eq!(fsck_ok(&garage, &store)["unindexed_records"], 0);
    let rebuilt = tmp.path().join("rebuilt");
    ok(ferry_on(&garage, &rebuilt).arg("rebuild").args(backend_args(&garage, "gc-crash?gc_grace=0")));
    assert_exports(&garage, &rebuilt, &r1, &v1);
    fsck_ok(&garage, &rebuilt);
    report(
        "bucket-gc-crash",
        &format!("gc on Garage killed at each of its {} steps; every revision intact, fsck clean, the rest collected by the next run", points.len()),
    );
}

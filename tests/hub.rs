//! The hub end to end: a real `ferry serve` process on loopback, real
//! `ferry push`/`pull` processes, QUIC and TLS over TCP.

use std::path::{Path, PathBuf};

use ferry_tests::*;

fn write(dir: &Path, rel: &str, data: &[u8]) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// A local store with `org/m` committed from `src`.
fn local_with(tmp: &Path, name: &str, src: &Path) -> PathBuf {
    let store = tmp.join(name);
    ok(ferry(&store).arg("init"));
    ok(ferry(&store).args(["commit", "org/m"]).arg(src).args(["-m", name]));
    store
}

#[test]
fn push_v1_push_v2_then_pull_into_an_empty_store_moves_only_what_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::start(tmp.path());
    let token = hub.token("org/*", "write");
    let src = tmp.path().join("src");
    let weights = noise(24 << 20, 1);
    write(&src, "model.safetensors", &weights);
    write(&src, "config.json", b"{}");
    let a = local_with(tmp.path(), "a", &src);

    let p1 = json(&ok(client(&a, Some(&token)).args(["--json", "push", &hub.addr, "org/m"])));
    assert_eq!(p1["transport"], "quic");
    assert!(p1["raw_bytes_moved"].as_u64().unwrap() >= 24 << 20);

    // Change 2 MiB in the middle: the second push sends about that.
    let mut w2 = weights.clone();
    w2[10 << 20..12 << 20].copy_from_slice(&noise(2 << 20, 2));
    write(&src, "model.safetensors", &w2);
    ok(ferry(&a).args(["commit", "org/m"]).arg(&src).args(["-m", "v2"]));
    let p2 = json(&ok(client(&a, Some(&token)).args(["--json", "push", &hub.addr, "org/m"])));
    let raw = p2["raw_bytes_moved"].as_u64().unwrap();
    assert!((2 << 20..(2 << 20) + 700_000).contains(&raw), "second push moved {raw} raw bytes for a 2 MiB change");
    let sent = p2["wire_bytes_sent"].as_u64().unwrap();
    assert!(sent < raw + 200_000, "wire bytes {sent} far above the chunk bytes {raw}");
    let again = json(&ok(client(&a, Some(&token)).args(["--json", "push", &hub.addr, "org/m"])));
    assert_eq!(again["up_to_date"], true);

    let b = tmp.path().join("b");
    ok(ferry(&b).arg("init"));
    let pulled = json(&ok(client(&b, Some(&token)).args(["--json", "pull", &hub.addr, "org/m"])));
    assert_eq!(pulled["revisions"], 2);
    assert_eq!(pulled["head"], p2["head"]);
    let out = tmp.path().join("out");
    ok(ferry(&b).args(["export", "org/m"]).arg(&out));
    assert_eq!(read_tree(&out), read_tree(&src));
    assert_eq!(json(&ok(ferry(&b).args(["--json", "fsck"])))["ok"], true);
    assert_eq!(json(&ok(ferry(&b).args(["--json", "log", "org/m"]))).as_array().unwrap().len(), 2);

    // A byte range straight from the hub.
    let r = run(client(&b, Some(&token)).args(["cat", "org/m@main", "model.safetensors", "--range", "100..5000", "--hub", &hub.addr]));
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(r.stdout, &w2[100..5000]);
}

#[test]
fn a_stale_push_is_refused_with_pull_first_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::start(tmp.path());
    let token = hub.token("org/*", "write");
    let src = tmp.path().join("src");
    write(&src, "f", b"base");
    let a = local_with(tmp.path(), "a", &src);
    ok(client(&a, Some(&token)).args(["push", &hub.addr, "org/m"]));
    // B pulls, commits and pushes first.
    let b = tmp.path().join("b");
    ok(ferry(&b).arg("init"));
    ok(client(&b, Some(&token)).args(["pull", &hub.addr, "org/m"]));
    write(&src, "f", b"from b");
    ok(ferry(&b).args(["commit", "org/m"]).arg(&src).args(["-m", "b"]));
    let pb = json(&ok(client(&b, Some(&token)).args(["--json", "push", &hub.addr, "org/m"])));
    // A commits on its stale base and pushes: refused.
    write(&src, "f", b"from a");
    ok(ferry(&a).args(["commit", "org/m"]).arg(&src).args(["-m", "a"]));
    let err = stderr(&fails(client(&a, Some(&token)).args(["push", &hub.addr, "org/m"])));
    assert!(err.contains("pull first"), "{err}");
    let c = tmp.path().join("c");
    ok(ferry(&c).arg("init"));
    let pc = json(&ok(client(&c, Some(&token)).args(["--json", "pull", &hub.addr, "org/m"])));
    assert_eq!(pc["head"], pb["head"], "B's revision was lost");
}

#[test]
fn tokens_scopes_and_private_repositories() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::start(tmp.path());
    let write_tok = hub.token("org/*", "write");
    let read_tok = hub.token("org/m", "read");
    let src = tmp.path().join("src");
    write(&src, "f", b"secret weights");
    let a = local_with(tmp.path(), "a", &src);
    ok(client(&a, Some(&write_tok)).args(["push", &hub.addr, "org/m"]));

    let b = tmp.path().join("b");
    ok(ferry(&b).arg("init"));
    // No token: a private repository looks exactly like a missing one.
    let private = stderr(&fails(client(&b, None).args(["pull", &hub.addr, "org/m"])));
    let missing = stderr(&fails(client(&b, None).args(["pull", &hub.addr, "org/none"])));
    assert!(private.contains("no access"), "{private}");
    let error_line = |s: &str| s.lines().find(|l| l.contains("error")).unwrap_or_default().to_owned();
    assert_eq!(error_line(&private).replace("org/m", "X"), error_line(&missing).replace("org/none", "X"));
    // A read token reads but cannot push.
    ok(client(&b, Some(&read_tok)).args(["pull", &hub.addr, "org/m"]));
    write(&src, "f", b"change");
    ok(ferry(&b).args(["commit", "org/m"]).arg(&src).args(["-m", "b"]));
    let err = stderr(&fails(client(&b, Some(&read_tok)).args(["push", &hub.addr, "org/m"])));
    assert!(err.contains("not write"), "{err}");
    // A wrong token is refused.
    let err = stderr(&fails(client(&b, Some("fy_0000000000000000_00")).args(["pull", &hub.addr, "org/m"])));
    assert!(err.contains("token is not valid"), "{err}");
    // Public: readable without a token.
    ok(ferry(&hub.store).args(["visibility", "org/m", "public"]));
    let c = tmp.path().join("c");
    ok(ferry(&c).arg("init"));
    ok(client(&c, None).args(["pull", &hub.addr, "org/m"]));
    // Repeated failures are rate-limited.
    let mut limited = false;
    for _ in 0..8 {
        let e = stderr(&fails(client(&c, Some("fy_1111111111111111_11")).args(["pull", &hub.addr, "org/m"])));
        limited |= e.contains("too many failed");
    }
    assert!(limited, "token guessing was never rate-limited");
}

#[test]
fn an_interrupted_push_resumes_sending_only_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::start(tmp.path());
    let token = hub.token("org/*", "write");
    let src = tmp.path().join("src");
    write(&src, "big.bin", &noise(96 << 20, 5));
    let a = local_with(tmp.path(), "a", &src);
    // Kill the client part-way (96 MiB take well over 150 ms to push here).
    let mut child = client(&a, Some(&token))
        .args(["--json", "push", &hub.addr, "org/m"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(150));
    if child.try_wait().unwrap().is_some() {
        return eprintln!("push finished within 150 ms; machine too fast to interrupt");
    }
    let _ = child.kill();
    let _ = child.wait();
    let total_chunks = json(&ok(ferry(&a).args(["--json", "stats"])))["chunks"].as_u64().unwrap();
    let resumed = json(&ok(client(&a, Some(&token)).args(["--json", "push", &hub.addr, "org/m"])));
    let moved = resumed["chunks_moved"].as_u64().unwrap();
    assert_eq!(moved + resumed["chunks_already_there"].as_u64().unwrap(), total_chunks);
    eprintln!("resumed push moved {moved} of {total_chunks} chunks");
    let b = tmp.path().join("b");
    ok(ferry(&b).arg("init"));
    ok(client(&b, Some(&token)).args(["pull", &hub.addr, "org/m"]));
    let out = tmp.path().join("out");
    ok(ferry(&b).args(["export", "org/m"]).arg(&out));
    assert_eq!(read_tree(&out), read_tree(&src));
}

#[test]
fn a_hub_that_dies_mid_pull_is_reported_and_a_rerun_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(tmp.path());
    let token = hub.token("org/*", "write");
    let src = tmp.path().join("src");
    write(&src, "big.bin", &noise(96 << 20, 6));
    let a = local_with(tmp.path(), "a", &src);
    ok(client(&a, Some(&token)).args(["push", &hub.addr, "org/m"]));
    let b = tmp.path().join("b");
    ok(ferry(&b).arg("init"));
    let child = client(&b, Some(&token))
        .args(["--json", "pull", &hub.addr, "org/m"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let listen = hub.addr.clone();
    hub.kill();
    let out = finish(child, "pull from a dying hub");
    if out.status.success() {
        eprintln!("pull finished before the hub died; nothing to resume");
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("re-run") || err.contains("connection") || err.contains("timed out") || err.contains("connect"), "{err}");
        assert_eq!(json(&ok(ferry(&b).args(["--json", "fsck"])))["ok"], true);
    }
    let hub = Hub::serve(hub.store.clone(), &listen);
    let resumed = json(&ok(client(&b, Some(&token)).args(["--json", "pull", &hub.addr, "org/m"])));
    eprintln!("resumed pull moved {} chunks, {} already there", resumed["chunks_moved"], resumed["chunks_already_there"]);
    let dest = tmp.path().join("out");
    ok(ferry(&b).args(["export", "org/m"]).arg(&dest));
    assert_eq!(read_tree(&dest), read_tree(&src));
}

#[test]
fn a_partial_pull_fetches_only_the_included_files() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::start(tmp.path());
    let token = hub.token("org/*", "write");
    let src = tmp.path().join("src");
    write(&src, "config.json", b"{\"a\": 1}");
    write(&src, "model-00001.safetensors", &noise(4 << 20, 7));
    write(&src, "model-00002.safetensors", &noise(4 << 20, 8));
    let a = local_with(tmp.path(), "a", &src);
    ok(client(&a, Some(&token)).args(["push", &hub.addr, "org/m"]));
    let b = tmp.path().join("b");
    ok(ferry(&b).arg("init"));
    let p = json(&ok(client(&b, Some(&token)).args(["--json", "pull", &hub.addr, "org/m", "--include", "*.json", "--include", "model-00001*"])));
    let raw = p["raw_bytes_moved"].as_u64().unwrap();
    assert!(raw < (4 << 20) + 100 && raw > 4 << 20, "partial pull moved {raw} bytes");
    let ls = json(&ok(ferry(&b).args(["--json", "ls", "org/m"])));
    let names: Vec<&str> = ls.as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(names, ["config.json", "model-00001.safetensors"]);
    assert_eq!(json(&ok(ferry(&b).args(["--json", "fsck"])))["ok"], true);
}

#[test]
fn blocked_udp_falls_back_to_tls_over_tcp() {
    if unsafe { libc::geteuid() } != 0 || std::process::Command::new("iptables").arg("-L").output().map(|o| !o.status.success()).unwrap_or(true) {
        panic!("this test blocks UDP with iptables and needs root and iptables (scripts/setup installs it)");
    }
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::start(tmp.path());
    let token = hub.token("org/*", "write");
    let port = hub.port().to_string();
    let rule = ["OUTPUT", "-o", "lo", "-p", "udp", "--dport", &port, "-j", "DROP"];
    assert!(std::process::Command::new("iptables").arg("-I").args(rule).status().unwrap().success());
    struct Unblock(Vec<String>);
    impl Drop for Unblock {
        fn drop(&mut self) {
            let _ = std::process::Command::new("iptables").arg("-D").args(&self.0).status();
        }
    }
    let _unblock = Unblock(rule.iter().map(|s| s.to_string()).collect());
    let src = tmp.path().join("src");
    write(&src, "f", &noise(3 << 20, 9));
    let a = local_with(tmp.path(), "a", &src);
    let err = stderr(&fails(client(&a, Some(&token)).args(["push", "--transport", "quic", &hub.addr, "org/m"])));
    assert!(err.contains("could not connect"), "{err}");
    let p = json(&ok(client(&a, Some(&token)).args(["--json", "push", &hub.addr, "org/m"])));
    assert_eq!(p["transport"], "tcp");
    let b = tmp.path().join("b");
    ok(ferry(&b).arg("init"));
    let q = json(&ok(client(&b, Some(&token)).args(["--json", "pull", "--transport", "tcp", &hub.addr, "org/m"])));
    assert_eq!(q["transport"], "tcp");
    let out = tmp.path().join("out");
    ok(ferry(&b).args(["export", "org/m"]).arg(&out));
    assert_eq!(read_tree(&out), read_tree(&src));
}

#[test]
fn a_changed_hub_certificate_is_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::start(tmp.path());
    let token = hub.token("org/*", "write");
    let src = tmp.path().join("src");
    write(&src, "f", b"x");
    let a = local_with(tmp.path(), "a", &src);
    ok(client(&a, Some(&token)).args(["push", &hub.addr, "org/m"]));
    let known = a.with_extension("known_hubs");
    let text = std::fs::read_to_string(&known).unwrap();
    assert!(text.contains(&hub.fingerprint));
    std::fs::write(&known, text.replace(&hub.fingerprint, "sha256:00")).unwrap();
    let err = stderr(&fails(client(&a, Some(&token)).args(["push", &hub.addr, "org/m"])));
    assert!(err.contains("presented certificate") && err.contains("pins sha256:00"), "{err}");
}

#[test]
fn a_push_that_does_not_fit_on_the_hub_fails_naming_the_lack_of_space_and_loses_nothing() {
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test mounts a small tmpfs for the hub's store and needs root");
    }
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let status = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "size=40m", "tmpfs"]).arg(&mnt).status().unwrap();
    assert!(status.success(), "mount tmpfs failed");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let mut hub = Hub::start(&mnt);
    let token = hub.token("org/*", "write");
    let src = tmp.path().join("src");
    write(&src, "config.json", b"{}");
    write(&src, "small.bin", &noise(2 << 20, 1));
    let a = local_with(tmp.path(), "a", &src);
    let fits = json(&ok(client(&a, Some(&token)).args(["--json", "push", &hub.addr, "org/m"])));
    // Far more than the hub's disk holds.
    write(&src, "big.bin", &noise(96 << 20, 2));
    ok(ferry(&a).args(["commit", "org/m"]).arg(&src).args(["-m", "too big"]));
    let err = stderr(&fails(client(&a, Some(&token)).args(["push", &hub.addr, "org/m"])));
    assert!(err.contains("No space left on device") && err.contains("nothing was committed"), "{err}");
    assert!(!err.contains(&mnt.display().to_string()), "the hub told a client its paths: {err}");
    eprintln!("{err}");
    // The hub still serves what it has.
    let b = tmp.path().join("b");
    ok(ferry(&b).arg("init"));
    let pulled = json(&ok(client(&b, Some(&token)).args(["--json", "pull", &hub.addr, "org/m"])));
    assert_eq!(pulled["head"], fits["head"]);
    let out = tmp.path().join("out");
    ok(ferry(&b).args(["export", "org/m"]).arg(&out));
    assert_eq!(read_tree(&out).len(), 2);
    assert_eq!(read_tree(&out)["small.bin"], noise(2 << 20, 1));
    // Stopped, its store is consistent and at the revision that fitted.
    hub.kill();
    assert_eq!(json(&ok(ferry(&hub.store).args(["--json", "fsck"])))["ok"], true);
    let log = json(&ok(ferry(&hub.store).args(["--json", "log", "org/m"])));
    assert_eq!(log.as_array().unwrap().len(), 1);
    assert_eq!(log[0]["revision"], fits["head"]);
}

#[test]
fn exit_codes_tell_a_conflict_from_not_found_from_a_hub_that_cannot_be_reached() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::start(tmp.path());
    let token = hub.token("org/*", "write");
    let code = |o: std::process::Output| o.status.code().unwrap();
    // Usage.
    let a = tmp.path().join("a");
    ok(ferry(&a).arg("init"));
    assert_eq!(code(fails(ferry(&a).arg("no-such-command"))), 2);
    // Not found, locally and on the hub (and forbidden reads the same).
    assert_eq!(code(fails(ferry(&a).args(["log", "org/none"]))), 4);
    assert_eq!(code(fails(client(&a, Some(&token)).args(["pull", &hub.addr, "org/none"]))), 4);
    let src = tmp.path().join("src");
    write(&src, "f.bin", &noise(100_000, 1));
    ok(ferry(&a).args(["commit", "org/m"]).arg(&src).args(["-m", "a"]));
    assert_eq!(code(fails(client(&a, Some(&token)).args(["push", &hub.addr, "other/m"]))), 4);
    // A conflict: two stores with diverging histories push the same branch.
    ok(client(&a, Some(&token)).args(["push", &hub.addr, "org/m"]));
    let b = tmp.path().join("b");
    ok(ferry(&b).arg("init"));
    write(&src, "f.bin", &noise(100_000, 2));
    ok(ferry(&b).args(["commit", "org/m"]).arg(&src).args(["-m", "b"]));
    let refused = fails(client(&b, Some(&token)).args(["push", &hub.addr, "org/m"]));
    assert_eq!(code(refused), 3);
    // Nothing listening: retried, then "try again later".
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let out = fails(client(&a, Some(&token)).args(["push", &closed, "org/m"]));
    assert!(stderr(&out).contains("retrying"), "{}", stderr(&out));
    assert_eq!(code(out), 5);
    // Anything else (here: no store there) is a plain failure.
    let broken = tmp.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    assert_eq!(code(fails(ferry(&broken).args(["fsck"]))), 1);
}

#[test]
fn a_fine_tune_travels_as_deltas_to_the_hub_and_to_a_reader_that_holds_its_base() {
    use ferry_testkit::{bf16_nudged, bf16_weights, safetensors_file};
    let tmp = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(tmp.path());
    let token = hub.token("org/*", "write");
    let src = tmp.path().join("src");
    let base: Vec<Vec<u8>> = (0..3).map(|i| bf16_weights(1 << 20, i)).collect();
    let named = |t: &[Vec<u8>]| safetensors_file("", &[("a", &t[0]), ("b", &t[1]), ("c", &t[2])]);
    write(&src, "model.safetensors", &named(&base));
    let a = local_with(tmp.path(), "a", &src);
    ok(client(&a, Some(&token)).args(["push", &hub.addr, "org/m"]));
    let b = tmp.path().join("b");
    ok(ferry(&b).arg("init"));
    ok(client(&b, Some(&token)).args(["pull", &hub.addr, "org/m"]));

    let tuned: Vec<Vec<u8>> = base.iter().enumerate().map(|(i, t)| bf16_nudged(t, 0.002, 10 + i as u64)).collect();
    write(&src, "model.safetensors", &named(&tuned));
    let c = json(&ok(ferry(&a).args(["--json", "commit", "org/m"]).arg(&src).args(["-m", "tuned"])));
    let size = c["bytes"].as_u64().unwrap();
    // Deltas against the first version: well under byte planes' ~69%.
    assert!(c["stored_bytes"].as_u64().unwrap() * 100 < size * 60, "{c}");
    // The hub holds the bases, so the deltas travel as they are.
    let p = json(&ok(client(&a, Some(&token)).args(["--json", "push", &hub.addr, "org/m"])));
    assert!(p["wire_bytes_sent"].as_u64().unwrap() * 100 < size * 60, "{p}");

    // A reader that holds the first version, and proves it, is sent the
    // deltas too.
    let pulled = json(&ok(client(&b, Some(&token)).args(["--json", "pull", &hub.addr, "org/m"])));
    assert!(pulled["wire_bytes_received"].as_u64().unwrap() * 100 < size * 60, "{pulled}");
    let out = tmp.path().join("out");
    ok(ferry(&b).args(["export", "org/m"]).arg(&out));
    assert_eq!(read_tree(&out), read_tree(&src));
    // One that starts from nothing gets records that decode alone.
    let c2 = tmp.path().join("c");
    ok(ferry(&c2).arg("init"));
    ok(client(&c2, Some(&token)).args(["pull", &hub.addr, "org/m"]));
    let out2 = tmp.path().join("out2");
    ok(ferry(&c2).args(["export", "org/m"]).arg(&out2));
    assert_eq!(read_tree(&out2), read_tree(&src));
    hub.kill();
    for store in [&a, &b, &c2, &hub.store] {
        assert_eq!(json(&ok(ferry(store).args(["--json", "fsck"])))["ok"], true);
    }
    // The hub stored the deltas it was sent.
    let stats = json(&ok(ferry(&hub.store).args(["--json", "stats"])));
    assert!(stats["stored_bytes"].as_u64().unwrap() * 100 < size * (69 + 60), "{stats}");
}

#[test]
fn tags_and_repository_deletion_need_the_right_scope_and_every_move_is_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::start(tmp.path());
    let named = |name: &str, scope: &str, extra: &[&str]| {
        ok(ferry(&hub.store).args(["token", "create", "--repo", "org/*", "--scope", scope, "--name", name]).args(extra)).trim().to_owned()
    };
    let writer = named("ci", "write", &["--expires", "1h"]);
    let admin = named("ops", "admin", &[]);
    let reader = named("reader", "read", &[]);
    let brief = named("brief", "read", &["--expires", "1s"]);
    let src = tmp.path().join("src");
    write(&src, "f", b"weights v1");
    let a = local_with(tmp.path(), "a", &src);
    ok(client(&a, Some(&writer)).args(["push", &hub.addr, "org/m"]));

    // A writer tags; the tag reads as a revision; it never moves.
    let tag = |tok: &str, args: &[&str]| client(&a, Some(tok)).arg("tag").args(args).args(["--hub", &hub.addr]).output().unwrap();
    assert!(tag(&writer, &["create", "org/m", "v1"]).status.success());
    let listed = json(&ok(client(&a, Some(&reader)).args(["--json", "tag", "list", "org/m", "--hub", &hub.addr])));
    assert_eq!(listed[0]["tag"], "v1");
    assert_eq!(ok(client(&a, Some(&reader)).args(["cat", "org/m@v1", "f", "--hub", &hub.addr])), "weights v1");
    assert_eq!(tag(&writer, &["create", "org/m", "v1"]).status.code(), Some(3), "a tag was created twice");
    // Deleting a tag or a repository takes an admin token.
    let refused = tag(&writer, &["delete", "org/m", "v1"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("admin"), "{}", String::from_utf8_lossy(&refused.stderr));
    assert_eq!(refused.status.code(), Some(4));
    let refused = fails(client(&a, Some(&writer)).args(["repo", "delete", "org/m", "--hub", &hub.addr]));
    assert!(stderr(&refused).contains("admin"), "{}", stderr(&refused));
    let unseen = stderr(&fails(client(&a, Some(&reader)).args(["repo", "delete", "org/m", "--hub", &hub.addr])));
    assert!(unseen.contains("may read") || unseen.contains("not write"), "{unseen}");
    assert!(tag(&admin, &["delete", "org/m", "v1"]).status.success());
    let gone = json(&ok(client(&a, Some(&admin)).args(["--json", "repo", "delete", "org/m", "--hub", &hub.addr])));
    assert_eq!(gone["deleted"][0]["branch"], "main");
    let b = tmp.path().join("b");
    ok(ferry(&b).arg("init"));
    assert_eq!(fails(client(&b, Some(&admin)).args(["pull", &hub.addr, "org/m"])).status.code(), Some(4));

    // Tokens are listed with names and last use, never with hashes; an
    // expired one is refused.
    let tokens = ok(ferry(&hub.store).args(["--json", "token", "list"]));
    assert!(!tokens.contains("hash"), "{tokens}");
    let tokens = json(&tokens);
    let ci = tokens.as_array().unwrap().iter().find(|t| t["name"] == "ci").unwrap();
    assert!(ci["last_used"].as_i64().is_some() && ci["expires"].as_i64().is_some(), "{ci}");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let expired = stderr(&fails(client(&b, Some(&brief)).args(["pull", &hub.addr, "org/x"])));
    assert!(expired.contains("token is not valid"), "{expired}");

    // The audit log names every move: who, from where, what.
    let audit = json(&ok(ferry(&hub.store).args(["--json", "audit", "--repo", "org/*"])));
    let rows: Vec<(String, String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["address"], "127.0.0.1", "{e}");
            (e["action"].as_str().unwrap().into(), e["branch"].as_str().unwrap().into(), e["token_name"].as_str().unwrap_or("?").into())
        })
        .collect();
    let want = [("move", "main", "ci"), ("move", "tags/v1", "ci"), ("delete", "tags/v1", "ops"), ("delete-repo", "main", "ops")];
    assert_eq!(rows, want.map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned())));
}

#[test]
fn forgetting_on_a_hub_takes_an_admin_token_and_forgotten_revisions_travel_without_their_files() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::start(tmp.path());
    let (writer, admin) = (hub.token("org/*", "write"), hub.token("org/*", "admin"));
    let commits = |store: &Path, repo: &str, n: u64| {
        ok(ferry(store).arg("init"));
        let src = tmp.path().join(format!("src-{repo}").replace('/', "-"));
        for i in 0..n {
            write(&src, "w", &ferry_testkit::noise(1 << 20, i + 40));
            ok(ferry(store).args(["commit", repo]).arg(&src).args(["-m", &format!("step {i}")]));
        }
    };
    let flags = |store: &Path, repo: &str| -> Vec<bool> {
        let log = json(&ok(ferry(store).args(["--json", "log", repo])));
        log.as_array().unwrap().iter().map(|e| e["forgotten"].as_bool().unwrap()).collect()
    };
    let a = tmp.path().join("a");
    commits(&a, "org/m", 4);
    ok(client(&a, Some(&writer)).args(["push", &hub.addr, "org/m"]));

    // Only an admin forgets what the hub holds.
    let refused = fails(client(&a, Some(&writer)).args(["forget", "org/m", "--keep-last", "1", "--hub", &hub.addr]));
    assert!(stderr(&refused).contains("admin"), "{}", stderr(&refused));
    let forgot = json(&ok(client(&a, Some(&admin)).args(["--json", "forget", "org/m", "--keep-last", "2", "--hub", &hub.addr])));
    assert_eq!((forgot["forgotten"].as_array().unwrap().len(), forgot["kept"].as_u64()), (2, Some(2)), "{forgot}");

    // A fresh pull gets the whole history; the forgotten revisions come
    // without their files.
    let b = tmp.path().join("b");
    ok(ferry(&b).arg("init"));
    let pulled = json(&ok(client(&b, Some(&admin)).args(["--json", "pull", &hub.addr, "org/m"])));
    assert!(pulled["raw_bytes_moved"].as_u64().unwrap() <= (2 << 20) + 4096, "{pulled}");
    assert_eq!(flags(&b, "org/m"), [false, false, true, true]);
    assert_eq!(json(&ok(ferry(&b).args(["--json", "fsck"])))["ok"], true);

    // What a local store forgot travels with a push, without its files.
    let c = tmp.path().join("c");
    commits(&c, "org/n", 3);
    ok(ferry(&c).args(["forget", "org/n", "--keep-last", "1"]));
    ok(ferry(&c).arg("gc"));
    ok(client(&c, Some(&writer)).args(["push", &hub.addr, "org/n"]));
    let d = tmp.path().join("d");
    ok(ferry(&d).arg("init"));
    ok(client(&d, Some(&writer)).args(["pull", &hub.addr, "org/n"]));
    assert_eq!(flags(&d, "org/n"), [false, true, true]);

    let audit = json(&ok(ferry(&hub.store).args(["--json", "audit"])));
    let forgets = audit.as_array().unwrap().iter().filter(|e| e["action"] == "forget").count();
    assert_eq!(forgets, 2, "only the admin's forgetting is audited: {audit}");
}

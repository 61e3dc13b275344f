//! Crash consistency with real processes, real RocksDB stores and real QUIC
//! on loopback.
//!
//! - `kill -9` of `ferry commit` and `ferry gc` (with garbage to sweep) at
//!   random moments: fsck passes and every revision a command reported as
//!   committed is still there, byte-identical.
//! - gc stopped at each of its named crash points (`FERRY_CRASH_AT`): what
//!   it had not removed yet is consistent, and the next gc finishes.
//! - `kill -9` of a pushing or pulling client, or of the hub (`ferry serve`)
//!   in the middle of a push or a pull: fsck passes on every store whose
//!   process was killed (the hub's with the hub stopped), the hub's branch is
//!   at the old or the new head, the interrupted command re-run completes and
//!   moves no more chunk bytes than it would have from scratch, and every
//!   revision a push reported is on the hub: pulled into other stores, it
//!   exports byte-identical to the directory it was committed from.
//!
//! - `kill -9` of `ferry mirror`, or of the source or destination hub in the
//!   middle of one: the killed hub's store passes fsck, the destination's
//!   branch is at the old or the new head with every revision mirrored before
//!   still there, and the mirror re-run completes, moving no more than a
//!   mirror from scratch; the destination then serves every version whole.
//!
//! FERRY_CRASH_ITERATIONS sets the number of iterations of each kill test
//! (default 10); each prints its counts (and `scripts/test` shows them).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_tests::*;

/// Iterations of each kill test: FERRY_CRASH_ITERATIONS, default 10.
fn iterations() -> u64 {
    std::env::var("FERRY_CRASH_ITERATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(10)
}

#[test]
fn kill_9_during_commit_or_gc_never_loses_a_committed_revision() {
    let iterations = iterations();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    ok(ferry(&store).arg("init"));
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    // (revision id, source directory) of every commit that reported success.
    let mut committed: Vec<(String, std::path::PathBuf)> = Vec::new();
    // Per operation: killed while it ran, or finished before its kill.
    let (mut killed, mut finished) = (std::collections::BTreeMap::<&str, u32>::new(), std::collections::BTreeMap::<&str, u32>::new());
    // How long an uninterrupted run of each takes (None: not measured yet,
    // so the next one runs uninterrupted and is measured).
    let (mut typical_commit, mut typical_gc): (Option<u64>, Option<u64>) = (None, None);
    for i in 0..iterations {
        let src = tmp.path().join(format!("src{i}"));
        std::fs::create_dir_all(&src).unwrap();
        // Part shared with earlier versions, part new, so kills land in dedup and in writes.
        std::fs::write(src.join("base.bin"), noise(16 << 20, 1)).unwrap();
        std::fs::write(src.join("new.bin"), noise(24 << 20, 100 + i)).unwrap();
        let gc_turn = i % 3 == 2;
        let op = if gc_turn { "gc" } else { "commit" };
        let mut child = if gc_turn {
            // Something for gc to sweep: this version, committed to a branch
            // that is then deleted (its new chunks, nodes and revision).
            ok(ferry(&store).args(["commit", "org/garbage"]).arg(&src).args(["-m", &format!("g{i}")]));
            ok(ferry(&store).args(["branch", "delete", "org/garbage", "main"]));
            ferry(&store).args(["--json", "gc"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap()
        } else {
            ferry(&store)
                .args(["--json", "commit", "org/crash"])
                .arg(&src)
                .args(["-m", &format!("v{i}")])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        };
        let typical = if gc_turn { &mut typical_gc } else { &mut typical_commit };
        // Within the typical run, but one commit in three is left to finish,
        // so that there are reported revisions for later kills to threaten.
        let spared = !gc_turn && rng.below(3) == 0;
        let delay = typical.filter(|_| !spared).map(|t| Duration::from_millis(rng.below(t * 3 / 4 + 1)));
        let start = Instant::now();
        let exited = exits_within(&mut child, delay.unwrap_or(COMMAND_DEADLINE));
        assert!(exited || delay.is_some(), "iteration {i}: an uninterrupted {op} did not end within {COMMAND_DEADLINE:?}");
        if typical.is_none() {
            *typical = Some(start.elapsed().as_millis() as u64 + 1);
        }
        if exited {
            *finished.entry(op).or_default() += 1;
        } else {
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            *killed.entry(op).or_default() += 1;
        }
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !gc_turn && out.status.success() {
            // The command reported the revision as committed.
            committed.push((json(&stdout)["revision"].as_str().unwrap().to_owned(), src.clone()));
        }
        // After every kill: the store opens, fsck passes, nothing reported is lost.
        fsck_ok(&store, &format!("iteration {i} ({op})"));
        if let Some((rev, src)) = committed.last() {
            let out = tmp.path().join(format!("out{i}"));
            ok(ferry(&store).args(["export", &format!("org/crash@{rev}")]).arg(&out));
            assert_eq!(read_tree(&out), read_tree(src), "revision {rev} does not export byte-identical");
            std::fs::remove_dir_all(&out).unwrap();
        }
    }
    // Every revision ever reported is still reachable from the branch.
    if !committed.is_empty() {
        let log = json(&ok(ferry(&store).args(["--json", "log", "org/crash", "-n", "1000"])));
        let ids: Vec<&str> = log.as_array().unwrap().iter().map(|r| r["revision"].as_str().unwrap()).collect();
        for (rev, _) in &committed {
            assert!(ids.contains(&rev.as_str()), "committed revision {rev} lost");
        }
    }
    let n = |m: &std::collections::BTreeMap<&str, u32>, k: &str| m.get(k).copied().unwrap_or(0);
    report(
        "crash",
        &format!(
            "commit and gc: {iterations} iterations; kill -9 landed mid-run in {} commits and {} gcs ({} commits and {} gcs ran to completion); \
             {} commits reported, all present and byte-identical, fsck clean after every kill",
            n(&killed, "commit"),
            n(&killed, "gc"),
            n(&finished, "commit"),
            n(&finished, "gc"),
            committed.len()
        ),
    );
}

#[test]
fn gc_stopped_at_any_point_leaves_every_stored_node_complete() {
    // The named crash points between gc's sweeps (FERRY_CRASH_AT aborts the
    // process there): whatever gc already removed, what remains is
    // consistent, and the next gc finishes the job.
    for point in ["gc-after-nodes", "gc-mid-sweep", "gc-after-chunks"] {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        ok(ferry(&store).arg("init"));
        let (keep, garbage) = (tmp.path().join("keep"), tmp.path().join("garbage"));
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::create_dir_all(&garbage).unwrap();
        std::fs::write(keep.join("shared.bin"), noise(2 << 20, 1)).unwrap();
        std::fs::write(garbage.join("shared.bin"), noise(2 << 20, 1)).unwrap();
        std::fs::write(garbage.join("own.bin"), noise(6 << 20, 2)).unwrap();
        ok(ferry(&store).args(["commit", "org/keep"]).arg(&keep).args(["-m", "keep"]));
        ok(ferry(&store).args(["commit", "org/garbage"]).arg(&garbage).args(["-m", "garbage"]));
        ok(ferry(&store).args(["branch", "delete", "org/garbage", "main"]));
        let out = run(ferry(&store).arg("gc").env("FERRY_CRASH_AT", point));
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&out.status), Some(libc::SIGABRT), "gc did not stop at {point}: {}", stderr(&out));
        fsck_ok(&store, point);
        let dest = tmp.path().join("out");
        ok(ferry(&store).args(["export", "org/keep"]).arg(&dest));
        assert_eq!(read_tree(&dest), read_tree(&keep), "after a gc stopped at {point}");
        ok(ferry(&store).arg("gc"));
        let fsck = fsck_ok(&store, &format!("the gc after one stopped at {point}"));
        assert_eq!(fsck["unindexed_records"], 0, "records left after a complete gc: {fsck}");
        let stats = json(&ok(ferry(&store).args(["--json", "stats"])));
        assert_eq!(stats["unique_bytes"], 2 << 20, "garbage left after a complete gc: {stats}");
    }
}

/// Shared by every version (dedup on both sides of the wire).
const BASE: usize = 16 << 20;
/// New in each version: what a push or pull of one version moves.
const NEW: usize = 24 << 20;
/// How long a client whose hub was killed under it gets to finish or give up
/// on its own before it is killed too: QUIC notices a vanished peer at the
/// 30 s idle timeout, or sooner if the restarted hub resets the connection.
const GRACE: Duration = Duration::from_secs(1);

/// Which process a round of the push and pull test kills (kills during a
/// mirror have their own test below).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Victim {
    PushClient,
    HubDuringPush,
    PullClient,
    HubDuringPull,
}

impl Victim {
    /// The rounds, in turn.
    const ROUNDS: [Victim; 4] = [Victim::PushClient, Victim::HubDuringPush, Victim::PullClient, Victim::HubDuringPull];
}

fn fsck_ok(store: &Path, after: &str) -> serde_json::Value {
    let fsck = json(&ok(ferry(store).args(["--json", "fsck"])));
    assert_eq!(fsck["ok"], true, "fsck of {} failed after {after}: {fsck}", store.display());
    fsck
}

/// The revisions of `org/m` in `store`, newest first.
fn history(store: &Path) -> Vec<String> {
    let log = json(&ok(ferry(store).args(["--json", "log", "org/m", "-n", "1000"])));
    log.as_array().unwrap().iter().map(|r| r["revision"].as_str().unwrap().to_owned()).collect()
}

/// Commits version `i` of `org/m` into `store`: `base`, shared with every
/// other version, and NEW bytes of its own drawn from `seed`. Returns its
/// files' directory (under `dir`), the revision, and the bytes it stored.
fn commit_version(store: &Path, dir: &Path, base: &[u8], i: u64, seed: u64) -> (PathBuf, String, u64) {
    let src = dir.join(format!("src{i}"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("base.bin"), base).unwrap();
    std::fs::write(src.join("new.bin"), noise(NEW, seed)).unwrap();
    let c = json(&ok(ferry(store).args(["--json", "commit", "org/m"]).arg(&src).args(["-m", &format!("v{i}")])));
    (src, c["revision"].as_str().unwrap().to_owned(), c["stored_bytes"].as_u64().unwrap())
}

/// Exports `org/m@rev` from `store` and compares it with `src`.
fn exports_identical(store: &Path, rev: &str, src: &Path, scratch: &Path, what: &str) {
    ok(ferry(store).args(["export", &format!("org/m@{rev}")]).arg(scratch));
    assert!(read_tree(scratch) == read_tree(src), "{what}: revision {rev} exported from {} differs from {}", store.display(), src.display());
    std::fs::remove_dir_all(scratch).unwrap();
}

/// Waits until `child` exits or `limit` passes; true if it exited.
fn exits_within(child: &mut std::process::Child, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn kill_9_during_push_or_pull_never_loses_an_acknowledged_revision() {
    let iterations = iterations();
    let tmp = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(tmp.path());
    let addr = hub.addr.clone();
    let token = hub.token("org/*", "write");
    // A commits and pushes; B pulls.
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(ferry(&a).arg("init"));
    ok(ferry(&b).arg("init"));
    // QUIC only: no silent fallback to TCP.
    let transfer = |store: &Path, verb: &str| -> Command {
        let mut c = client(store, Some(&token));
        c.args(["--json", verb, "--transport", "quic", &addr, "org/m"]);
        c
    };
    let mut rng = Rng::new(0x2545_f491_4f6c_dd1d);
    let base = noise(BASE, 1);
    // (revision, source directory) of every push that reported success.
    let mut acked: Vec<(String, PathBuf)> = Vec::new();
    let mut kills = std::collections::BTreeMap::<&str, u32>::new();
    let mut finished = 0;
    // Clients whose hub was killed: killed after GRACE, or that ended on their own.
    let (mut clients_killed_after_hub, mut clients_gave_up) = (0, 0);
    let mut waited_out_a_dead_hub = false;
    // Chunk bytes the re-runs after kills moved, and what they would have moved from scratch.
    let (mut rerun_bytes, mut scratch_bytes) = (0u64, 0u64);
    // How long an uninterrupted push or pull of one version takes (None:
    // not measured yet, so the next one runs uninterrupted and is measured).
    let (mut typical_push_ms, mut typical_pull_ms): (Option<u64>, Option<u64>) = (None, None);
    for i in 0..iterations {
        let victim = Victim::ROUNDS[(i % Victim::ROUNDS.len() as u64) as usize];
        let pulling = matches!(victim, Victim::PullClient | Victim::HubDuringPull);
        let hub_victim = matches!(victim, Victim::HubDuringPush | Victim::HubDuringPull);
        let (src, rev, from_scratch) = commit_version(&a, tmp.path(), &base, i, 100 + 2 * i);
        // The hub and B hold every earlier version, so a push or pull of this
        // one from scratch moves exactly the chunks the commit stored anew.
        if pulling {
            // The hub gets this version whole first, so that the pull has something to fetch.
            let t0 = Instant::now();
            let r = json(&ok(&mut transfer(&a, "push")));
            typical_push_ms = Some(t0.elapsed().as_millis() as u64 + 1);
            assert_eq!(r["head"].as_str(), Some(rev.as_str()));
            assert!(r["chunk_bytes_moved"].as_u64().unwrap() <= from_scratch, "round {i}: a push moved more than the new data: {r}");
            acked.push((rev.clone(), src.clone()));
        }
        let hub_head_before = acked.last().map(|x| x.0.clone());
        let b_head_before = if i == 0 { None } else { history(&b).first().cloned() };
        let acked_before = acked.len();

        let mut child = if pulling { transfer(&b, "pull") } else { transfer(&a, "push") }
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let typical = if pulling { typical_pull_ms } else { typical_push_ms };
        let start = Instant::now();
        let delay = typical.map(|t| Duration::from_millis(rng.below(t * 3 / 4 + 1)));
        let exited = exits_within(&mut child, delay.unwrap_or(COMMAND_DEADLINE));
        let what = format!("round {i} ({victim:?}, kill after {:?})", delay.unwrap_or_default());
        assert!(exited || delay.is_some(), "{what}: an uninterrupted run did not end within {COMMAND_DEADLINE:?}");
        let mut client_killed = false;
        if exited {
            finished += 1;
            if delay.is_none() {
                let ms = Some(start.elapsed().as_millis() as u64 + 1);
                if pulling {
                    typical_pull_ms = ms;
                } else {
                    typical_push_ms = ms;
                }
            }
        } else if hub_victim {
            *kills.entry(if pulling { "hub during pull" } else { "hub during push" }).or_default() += 1;
            hub.kill();
            // With the hub stopped: its store is consistent, its branch is at
            // the old or the new head, and no acknowledged revision is lost.
            fsck_ok(&hub.store, &what);
            let on_hub = history(&hub.store);
            assert!(
                on_hub.first() == hub_head_before.as_ref() || on_hub.first() == Some(&rev),
                "{what}: the hub's branch is at {:?}, neither the old head {hub_head_before:?} nor the new {rev}",
                on_hub.first()
            );
            for (r, _) in &acked[..acked_before] {
                assert!(on_hub.contains(r), "{what}: acknowledged revision {r} is not on the hub any more");
            }
            hub = Hub::serve(hub.store.clone(), &addr);
            if !exits_within(&mut child, GRACE) {
                if pulling && !waited_out_a_dead_hub {
                    // Once per run, let a puller find out on its own that
                    // its hub is gone (it keeps what arrived and exits).
                    waited_out_a_dead_hub = true;
                    clients_gave_up += 1;
                } else {
                    child.kill().unwrap();
                    client_killed = true;
                    clients_killed_after_hub += 1;
                }
            } else {
                clients_gave_up += 1;
            }
        } else {
            *kills.entry(if pulling { "pull client" } else { "push client" }).or_default() += 1;
            child.kill().unwrap();
            client_killed = true;
        }
        let out = finish(child, &what);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() {
            let r = json(&stdout);
            assert_eq!(r["head"].as_str(), Some(rev.as_str()), "{what}: {r}");
            if !pulling {
                acked.push((rev.clone(), src.clone()));
            }
        } else if !client_killed && !exited {
            eprintln!("{what}: the client ended on its own: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        if !exited {
            // The client's store is consistent, whether it was killed or gave up.
            let store = if pulling { &b } else { &a };
            fsck_ok(store, &what);
            if pulling {
                let head = history(&b).first().cloned();
                assert!(head == b_head_before || head.as_ref() == Some(&rev), "{what}: B's branch is at {head:?}, neither old nor new");
            }
        }

        // The interrupted command, re-run, completes and moves only what is
        // missing: at most what it would have moved from scratch.
        let r = json(&ok(&mut if pulling { transfer(&b, "pull") } else { transfer(&a, "push") }));
        assert_eq!(r["transport"], "quic", "{what}: {r}");
        assert_eq!(r["head"].as_str(), Some(rev.as_str()), "{what}: the re-run reported another head: {r}");
        let moved = r["chunk_bytes_moved"].as_u64().unwrap();
        assert!(moved <= from_scratch, "{what}: the re-run moved {moved} chunk bytes, more than the {from_scratch} of a transfer from scratch");
        if !exited {
            rerun_bytes += moved;
            scratch_bytes += from_scratch;
        }
        eprintln!(
            "{what}: typical {typical:?} ms, {}, ran {} ms; the re-run moved {moved} of {from_scratch} chunk bytes",
            if exited { "finished first" } else { "killed" },
            start.elapsed().as_millis()
        );
        if !pulling {
            if acked.last().map(|x| &x.0) != Some(&rev) {
                acked.push((rev.clone(), src.clone()));
            }
            // The pushed revision is on the hub: B pulls it whole (and this
            // uninterrupted pull of one version times the next kills of pulls).
            let t0 = Instant::now();
            let p = json(&ok(&mut transfer(&b, "pull")));
            typical_pull_ms = Some(t0.elapsed().as_millis() as u64 + 1);
            assert_eq!(p["head"].as_str(), Some(rev.as_str()), "{what}: B pulled another head: {p}");
            assert!(p["chunk_bytes_moved"].as_u64().unwrap() <= from_scratch, "{what}: a pull moved more than the new data: {p}");
        }
        assert_eq!(history(&b).first(), Some(&rev), "{what}: B is not at the new head");
        exports_identical(&b, &rev, &src, &tmp.path().join("out"), &what);
    }

    // Every acknowledged revision is on the hub, whole: the stopped hub's
    // store is consistent and names them all, and a fresh store pulls them
    // all, byte-identical.
    hub.kill();
    fsck_ok(&hub.store, "the last iteration");
    let on_hub = history(&hub.store);
    for (r, _) in &acked {
        assert!(on_hub.contains(r), "acknowledged revision {r} is not on the hub");
    }
    let hub = Hub::serve(hub.store.clone(), &addr);
    let c = tmp.path().join("c");
    ok(ferry(&c).arg("init"));
    if !acked.is_empty() {
        let p = json(&ok(&mut transfer(&c, "pull")));
        assert_eq!(p["head"].as_str(), Some(acked.last().unwrap().0.as_str()));
        fsck_ok(&c, "the final pull");
        for (r, src) in &acked {
            exports_identical(&c, r, src, &tmp.path().join("out"), "the final pull");
        }
    }
    drop(hub);
    let count = |k: &str| kills.get(k).copied().unwrap_or(0);
    report(
        "crash",
        &format!(
            "push and pull over QUIC: {iterations} iterations; kill -9 landed mid-run in {} push clients, {} hubs during push, {} pull clients, {} hubs during pull, \
         {finished} finished before the kill; of the clients whose hub died {clients_killed_after_hub} were killed after {GRACE:?}, {clients_gave_up} ended on their own; \
         re-runs moved {} of {} MiB; {} pushes acknowledged",
        count("push client"),
        count("hub during push"),
        count("pull client"),
        count("hub during pull"),
        rerun_bytes >> 20,
        scratch_bytes >> 20,
        acked.len()
        ),
    );
}

/// Which process a round of the mirror test kills.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum MirrorVictim {
    MirrorClient,
    Destination,
    Source,
}

#[test]
fn kill_9_during_mirror_never_loses_a_mirrored_revision() {
    let iterations = iterations();
    let tmp = tempfile::tempdir().unwrap();
    let (eu_dir, us_dir) = (tmp.path().join("eu"), tmp.path().join("us"));
    std::fs::create_dir_all(&eu_dir).unwrap();
    std::fs::create_dir_all(&us_dir).unwrap();
    let mut eu = Hub::start(&eu_dir);
    let mut us = Hub::start(&us_dir);
    let (eu_addr, us_addr) = (eu.addr.clone(), us.addr.clone());
    let (eu_token, us_token) = (eu.token("org/*", "write"), us.token("org/*", "write"));
    let known = tmp.path().join("mirror.known_hubs");
    // QUIC only: no silent fallback to TCP.
    let mirror = || -> Command {
        let mut c = ferry(&tmp.path().join("none"));
        c.env("FERRY_KNOWN_HUBS", &known).env("FERRY_FROM_TOKEN", &eu_token).env("FERRY_TO_TOKEN", &us_token).env_remove("FERRY_TOKEN");
        c.args(["--json", "mirror", "--transport", "quic", &eu_addr, &us_addr]);
        c
    };
    let a = tmp.path().join("a");
    ok(ferry(&a).arg("init"));
    let base = noise(BASE, 3);
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    // (revision, source directory) of every version a mirror reported done.
    let mut mirrored: Vec<(String, PathBuf)> = Vec::new();
    let mut kills = std::collections::BTreeMap::<&str, u32>::new();
    let (mut finished, mut rerun_bytes, mut scratch_bytes) = (0, 0u64, 0u64);
    let mut typical_ms: Option<u64> = None;
    const ROUNDS: [MirrorVictim; 3] = [MirrorVictim::MirrorClient, MirrorVictim::Destination, MirrorVictim::Source];
    for i in 0..iterations {
        let victim = ROUNDS[(i % 3) as usize];
        let (src, rev, from_scratch) = commit_version(&a, tmp.path(), &base, i, 1000 + 2 * i);
        ok(client(&a, Some(&eu_token)).args(["push", "--transport", "quic", &eu_addr, "org/m"]));
        let before = mirrored.last().map(|m| m.0.clone());

        let mut child = mirror().stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let start = Instant::now();
        let delay = typical_ms.map(|t| Duration::from_millis(rng.below(t * 3 / 4 + 1)));
        let exited = exits_within(&mut child, delay.unwrap_or(COMMAND_DEADLINE));
        let what = format!("mirror round {i} ({victim:?}, kill after {:?})", delay.unwrap_or_default());
        assert!(exited || delay.is_some(), "{what}: an uninterrupted mirror did not end within {COMMAND_DEADLINE:?}");
        if exited {
            finished += 1;
            if delay.is_none() {
                typical_ms = Some(start.elapsed().as_millis() as u64 + 1);
            }
        } else {
            *kills
                .entry(match victim {
                    MirrorVictim::MirrorClient => "mirror client",
                    MirrorVictim::Destination => "destination hub",
                    MirrorVictim::Source => "source hub",
                })
                .or_default() += 1;
            match victim {
                MirrorVictim::MirrorClient => child.kill().unwrap(),
                MirrorVictim::Destination => us.kill(),
                MirrorVictim::Source => eu.kill(),
            }
            if victim == MirrorVictim::Source {
                fsck_ok(&eu.store, &what);
                eu = Hub::serve(eu.store.clone(), &eu_addr);
            }
            // The mirror gives up once a hub is gone; if not soon, kill it too.
            if !exits_within(&mut child, GRACE) {
                let _ = child.kill();
            }
        }
        let out = finish(child, &what);
        if out.status.success() {
            let r = json(&String::from_utf8_lossy(&out.stdout));
            assert_eq!(r["changed"][0]["head"].as_str(), Some(rev.as_str()), "{what}: {r}");
        }
        // With the destination stopped: its store is consistent, its branch
        // is at the old or the new head, nothing mirrored before is lost.
        us.kill();
        fsck_ok(&us.store, &what);
        let on_us = if before.is_some() || out.status.success() { history(&us.store) } else { Vec::new() };
        assert!(
            on_us.first() == before.as_ref() || on_us.first() == Some(&rev),
            "{what}: the destination is at {:?}, neither {before:?} nor {rev}",
            on_us.first()
        );
        for (r, _) in &mirrored {
            assert!(on_us.contains(r), "{what}: mirrored revision {r} is gone from the destination");
        }
        us = Hub::serve(us.store.clone(), &us_addr);

        // The mirror, re-run, completes and moves at most what a mirror of
        // this version from scratch would.
        let r = json(&ok(&mut mirror()));
        let moved = r["chunk_bytes_moved"].as_u64().unwrap();
        assert!(moved <= from_scratch, "{what}: the re-run moved {moved} chunk bytes, more than {from_scratch} from scratch");
        if !exited {
            rerun_bytes += moved;
            scratch_bytes += from_scratch;
        }
        mirrored.push((rev.clone(), src.clone()));
        eprintln!("{what}: {}; the re-run moved {moved} of {from_scratch} chunk bytes", if exited { "finished first" } else { "killed" });
    }
    // The destination serves every mirrored version whole.
    let c = tmp.path().join("c");
    ok(ferry(&c).arg("init"));
    let p = json(&ok(client(&c, Some(&us_token)).args(["--json", "pull", "--transport", "quic", &us_addr, "org/m"])));
    assert_eq!(p["head"].as_str(), mirrored.last().map(|m| m.0.as_str()));
    fsck_ok(&c, "the final pull from the destination");
    for (r, src) in &mirrored {
        exports_identical(&c, r, src, &tmp.path().join("out"), "the final pull from the destination");
    }
    let count = |k: &str| kills.get(k).copied().unwrap_or(0);
    report(
        "crash",
        &format!(
            "mirror over QUIC: {iterations} iterations; kill -9 landed mid-run in {} mirror clients, {} destination hubs, {} source hubs, {finished} finished before the kill; \
             re-runs moved {} of {} MiB; {} versions mirrored, all pulled back whole",
            count("mirror client"),
            count("destination hub"),
            count("source hub"),
            rerun_bytes >> 20,
            scratch_bytes >> 20,
            mirrored.len()
        ),
    );
}

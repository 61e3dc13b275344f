//! Load: many real `ferry` clients against one real `ferry serve` on
//! loopback, QUIC and TLS over TCP, for a bounded time.
//!
//! `load_32_clients_push_and_pull_while_the_hub_collects_garbage`: 32 clients,
//! each with its own store, in 8 repositories (4 clients each). Every round
//! a client commits a new version of its own branch (a base every client
//! shares, a layer its repository shares, new bytes of its own) and pushes
//! it; every other round it pulls another client's branch and checks every
//! file byte for byte; every third round it pulls its repository's `main`,
//! commits on top and pushes, racing the other three. The hub runs gc every
//! few seconds throughout. Checks: no operation fails that should succeed
//! (a `main` push may lose its compare-and-swap, and then the hub's `main`
//! must have moved); every acknowledged revision is on the hub and pulls
//! back byte-identical; the hub's store passes fsck and, after a last gc,
//! holds exactly the unique chunks of what was acknowledged, each once; the
//! hub's peak memory stays bounded. Throughput and peak memory are reported.
//!
//! `a_hub_killed_under_load_loses_no_acknowledged_revision`: 8 clients push
//! and pull while the hub is killed (-9) and restarted on the same store
//! and port a few times. Operations in flight fail with an error that says
//! what happened (or complete); their re-runs complete and push no more
//! than the version's new bytes; fsck passes after every kill and no
//! acknowledged revision is lost.
//!
//! FERRY_LOAD_SECS sets how long the load runs (default 60; the long run
//! uses 300), FERRY_LOAD_KILLS how many times the hub is killed (default 2).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferry_core::Id;
use ferry_tests::*;

const WORKERS: usize = 32;
const REPOS: usize = 8;
/// Shared by every client and repository.
const BASE: usize = 4 << 20;
/// Shared by the clients of one repository.
const LAYER: usize = 2 << 20;
/// New in every version.
const OWN: usize = 1 << 20;

fn load_secs() -> u64 {
    std::env::var("FERRY_LOAD_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60)
}

/// What a version holds, recorded in its `version.json` so that whoever
/// pulls it can rebuild the expected bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Version {
    /// Client `worker`'s own branch, version `n`.
    Own { worker: usize, n: u64 },
    /// A commit on its repository's `main` by `worker`, its `n`th try.
    Main { worker: usize, n: u64 },
}

impl Version {
    fn worker(&self) -> usize {
        match *self {
            Version::Own { worker, .. } | Version::Main { worker, .. } => worker,
        }
    }
    fn meta(&self) -> String {
        match *self {
            Version::Own { worker, n } => format!("{{\"worker\":{worker},\"own\":{n}}}"),
            Version::Main { worker, n } => format!("{{\"worker\":{worker},\"main\":{n}}}"),
        }
    }
    fn parse(meta: &[u8]) -> Version {
        let v = json(std::str::from_utf8(meta).unwrap());
        let worker = v["worker"].as_u64().unwrap() as usize;
        match (v["own"].as_u64(), v["main"].as_u64()) {
            (Some(n), None) => Version::Own { worker, n },
            (None, Some(n)) => Version::Main { worker, n },
            _ => panic!("bad version.json {v}"),
        }
    }
    /// The bytes new in this version.
    fn new_bytes(&self) -> Vec<u8> {
        match *self {
            Version::Own { worker, n } => noise(OWN, 1_000_000 + worker as u64 * 100_000 + n),
            Version::Main { worker, n } => noise(OWN / 2, 5_000_000 + worker as u64 * 100_000 + n),
        }
    }
}

/// The base and the per-repository layers, made once.
struct Data {
    base: Vec<u8>,
    layers: Vec<Vec<u8>>,
}

impl Data {
    fn new(repos: usize) -> Data {
        Data { base: noise(BASE, 7), layers: (0..repos).map(|r| noise(LAYER, 1000 + r as u64)).collect() }
    }
    /// Every file of `v`, as committed.
    fn files(&self, v: Version, repos: usize) -> BTreeMap<String, Vec<u8>> {
        let new = match v {
            Version::Own { .. } => "own.bin",
            Version::Main { .. } => "main.bin",
        };
        BTreeMap::from([
            ("base.bin".to_owned(), self.base.clone()),
            ("layer.bin".to_owned(), self.layers[v.worker() % repos].clone()),
            (new.to_owned(), v.new_bytes()),
            ("version.json".to_owned(), v.meta().into_bytes()),
        ])
    }
    fn write(&self, v: Version, repos: usize, dir: &Path) {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        for (name, bytes) in self.files(v, repos) {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

fn repo_of(worker: usize, repos: usize) -> String {
    format!("load/r{}", worker % repos)
}

/// Runs a client command and returns its JSON answer, or its error text.
fn attempt(cmd: &mut std::process::Command) -> Result<serde_json::Value, String> {
    let out = run(cmd);
    if out.status.success() {
        Ok(json(&String::from_utf8_lossy(&out.stdout)))
    } else {
        Err(stderr(&out).trim().to_owned())
    }
}

/// Exports `repo@branch` from `store` and returns its version, checking
/// every file against what that version must hold.
fn check_export(store: &Path, repo: &str, branch: &str, data: &Data, repos: usize, scratch: &Path) -> Result<Version, String> {
    let _ = std::fs::remove_dir_all(scratch);
    let out = run(ferry(store).args(["export", &format!("{repo}@{branch}")]).arg(scratch));
    if !out.status.success() {
        return Err(format!("export of {repo}@{branch} failed: {}", stderr(&out)));
    }
    let got = read_tree(scratch);
    let v = Version::parse(got.get("version.json").ok_or("no version.json")?);
    if got != data.files(v, repos) {
        return Err(format!("{repo}@{branch} ({v:?}) does not export byte-identical"));
    }
    Ok(v)
}

/// The unique chunks of some files, as ferry cuts them.
fn chunk_ids(files: impl IntoIterator<Item = Vec<u8>>) -> HashSet<Id> {
    let mut ids = HashSet::new();
    for f in files {
        for (o, l) in ferry_core::chunking::chunk_all(&f) {
            ids.insert(Id::of_chunk(&f[o..o + l]));
        }
    }
    ids
}

#[derive(Default)]
struct Tally {
    pushes: u64,
    pulls: u64,
    main_pushes: u64,
    main_conflicts: u64,
    bytes_moved: u64,
    /// Operations that failed but should have succeeded.
    failures: Vec<String>,
    /// Acknowledged revisions: (repository, branch, revision, version).
    acked: Vec<(String, String, String, Version)>,
}

#[test]
fn load_32_clients_push_and_pull_while_the_hub_collects_garbage() {
    let secs = load_secs();
    let tmp = tempfile::tempdir().unwrap();
    let hub_store = tmp.path().join("hub-store");
    ok(ferry(&hub_store).arg("init"));
    let log = tmp.path().join("hub.log");
    let mut hub = Hub::serve_with(hub_store.clone(), "127.0.0.1:0", &["--gc-every", "2s"], Some(&log));
    let token = hub.token("load/*", "write");
    let addr = hub.addr.clone();
    let data = Data::new(REPOS);
    // The newest version each client has pushed (0: none yet), for pullers.
    let latest: Vec<AtomicU64> = (0..WORKERS).map(|_| AtomicU64::new(0)).collect();
    let tally = Mutex::new(Tally::default());
    let rss_samples = Mutex::new(Vec::<u64>::new());
    let done = AtomicBool::new(false);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let hub_pid = hub.child.id();
    let mut rng = Rng::new(0x4c0a_d000);
    let rngs: Vec<Mutex<Rng>> = (0..WORKERS).map(|_| Mutex::new(rng.fork())).collect();

    std::thread::scope(|s| {
        // Sample the hub's resident memory while the load runs.
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                if let Some(rss) = std::fs::read_to_string(format!("/proc/{hub_pid}/statm")).ok().and_then(|t| t.split_whitespace().nth(1)?.parse::<u64>().ok())
                {
                    rss_samples.lock().unwrap().push(rss * 4096);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (tmp, token, addr, data, latest, tally, rngs) = (tmp.path(), &token, &addr, &data, &latest, &tally, &rngs);
                s.spawn(move || {
                    let store = tmp.join(format!("w{w}"));
                    let probe = tmp.join(format!("w{w}-probe"));
                    let (src, scratch) = (tmp.join(format!("w{w}-src")), tmp.join(format!("w{w}-out")));
                    ok(ferry(&store).arg("init"));
                    ok(ferry(&probe).arg("init"));
                    let transport = if w % 4 == 3 { "tcp" } else { "quic" };
                    let repo = repo_of(w, REPOS);
                    let own = format!("w{w}");
                    let net = |store: &Path, verb: &str, repo: &str, branch: &str| {
                        let mut c = client(store, Some(token));
                        c.args(["--json", verb, "--transport", transport, addr, repo, "--branch", branch]);
                        c
                    };
                    let mut rng = rngs[w].lock().unwrap();
                    let fail = |what: String| tally.lock().unwrap().failures.push(format!("client {w}: {what}"));
                    let moved = |r: &serde_json::Value| r["chunk_bytes_moved"].as_u64().unwrap_or(0);
                    let (mut n, mut main_n) = (0u64, 0u64);
                    // At least one round, however long setting up took.
                    while n == 0 || Instant::now() < deadline {
                        n += 1;
                        // A new version of the client's own branch: pushed, it must land.
                        let v = Version::Own { worker: w, n };
                        data.write(v, REPOS, &src);
                        let c = json(&ok(ferry(&store).args(["--json", "commit", &repo, "--branch", &own]).arg(&src).args(["-m", &v.meta()])));
                        let rev = c["revision"].as_str().unwrap().to_owned();
                        match attempt(&mut net(&store, "push", &repo, &own)) {
                            Ok(r) if r["head"] == rev.as_str() => {
                                let mut t = tally.lock().unwrap();
                                t.pushes += 1;
                                t.bytes_moved += moved(&r);
                                t.acked.push((repo.clone(), own.clone(), rev, v));
                                latest[w].store(n, Ordering::Relaxed);
                            }
                            Ok(r) => fail(format!("push of {v:?} reported {r}")),
                            Err(e) => fail(format!("push of {v:?} failed: {e}")),
                        }
                        if n % 2 == 0 {
                            // Another client's branch, in any repository: byte-identical, and no older than it was.
                            let pushed: Vec<usize> = (0..WORKERS).filter(|&j| j != w && latest[j].load(Ordering::Relaxed) > 0).collect();
                            if !pushed.is_empty() {
                                let j = pushed[rng.below(pushed.len() as u64) as usize];
                                let at_least = latest[j].load(Ordering::Relaxed);
                                let (their_repo, theirs) = (repo_of(j, REPOS), format!("w{j}"));
                                match attempt(&mut net(&store, "pull", &their_repo, &theirs)) {
                                    Ok(r) => {
                                        let mut t = tally.lock().unwrap();
                                        t.pulls += 1;
                                        t.bytes_moved += moved(&r);
                                    }
                                    Err(e) => fail(format!("pull of {their_repo}@{theirs} failed: {e}")),
                                }
                                match check_export(&store, &their_repo, &theirs, data, REPOS, &scratch) {
                                    Ok(Version::Own { worker, n }) if worker == j && n >= at_least => {}
                                    Ok(v) => fail(format!("pulled {their_repo}@{theirs} is {v:?}, expected client {j}'s version {at_least} or newer")),
                                    Err(e) => fail(e),
                                }
                            }
                        }
                        if n % 3 == 0 {
                            // The repository's main, raced by its four clients.
                            main_n += 1;
                            let base = match attempt(&mut net(&store, "pull", &repo, "main")) {
                                Ok(r) => Some(r["head"].as_str().unwrap().to_owned()),
                                Err(e) if e.contains("has no branch") => None,
                                Err(e) => {
                                    fail(format!("pull of {repo}@main failed: {e}"));
                                    continue;
                                }
                            };
                            let v = Version::Main { worker: w, n: main_n };
                            data.write(v, REPOS, &src);
                            let c = json(&ok(ferry(&store).args(["--json", "commit", &repo, "--branch", "main"]).arg(&src).args(["-m", &v.meta()])));
                            let rev = c["revision"].as_str().unwrap().to_owned();
                            match attempt(&mut net(&store, "push", &repo, "main")) {
                                Ok(r) if r["head"] == rev.as_str() => {
                                    let mut t = tally.lock().unwrap();
                                    t.main_pushes += 1;
                                    t.bytes_moved += moved(&r);
                                    t.acked.push((repo.clone(), "main".into(), rev, v));
                                }
                                Ok(r) => fail(format!("push of {v:?} to main reported {r}")),
                                Err(e) if e.contains("pull first") => {
                                    // Lost the race: right only if main has moved past the base this commit was made on.
                                    match attempt(&mut net(&probe, "pull", &repo, "main")) {
                                        Ok(r) if r["head"].as_str() != base.as_deref() => tally.lock().unwrap().main_conflicts += 1,
                                        Ok(r) => fail(format!("push to main was refused ({e}) but main is still at {r}")),
                                        Err(e2) => fail(format!("push to main was refused ({e}), and so was a pull of it: {e2}")),
                                    }
                                    // Start the next try from the hub's main again.
                                    ok(ferry(&store).args(["branch", "delete", &repo, "main"]));
                                }
                                Err(e) => {
                                    fail(format!("push of {v:?} to main failed: {e}"));
                                    ok(ferry(&store).args(["branch", "delete", &repo, "main"]));
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
    });
    let wall = started.elapsed().as_secs_f64();
    let peak = peak_rss(hub_pid).unwrap_or(0);
    let samples = rss_samples.into_inner().unwrap();
    let tally = tally.into_inner().unwrap();
    assert!(tally.failures.is_empty(), "{} operations failed that should have succeeded:\n{}", tally.failures.len(), tally.failures.join("\n"));
    assert!(tally.pushes >= WORKERS as u64, "only {} pushes in {secs} s", tally.pushes);

    // Every branch's head on the hub is the last revision acknowledged on
    // it, and pulls back byte-identical into a fresh store.
    let fresh = tmp.path().join("fresh");
    ok(ferry(&fresh).arg("init"));
    let mut heads: BTreeMap<(String, String), (String, Version)> = BTreeMap::new();
    for (repo, branch, rev, v) in &tally.acked {
        heads.insert((repo.clone(), branch.clone()), (rev.clone(), *v));
    }
    for ((repo, branch), (rev, _)) in &heads {
        let r = json(&ok(client(&fresh, Some(&token)).args(["--json", "pull", &addr, repo, "--branch", branch])));
        if branch == "main" {
            // Pushes to main land in an order the clients do not record; its head is one of them.
            let head = r["head"].as_str().unwrap();
            assert!(tally.acked.iter().any(|a| &a.0 == repo && a.1 == "main" && a.2 == head), "{repo}@main is at {head}, which no push reported");
        } else {
            assert_eq!(r["head"].as_str(), Some(rev.as_str()), "{repo}@{branch} is not at its last acknowledged revision");
        }
        check_export(&fresh, repo, branch, &data, REPOS, &tmp.path().join("out")).unwrap();
    }

    // The hub's store, stopped: consistent, every acknowledged revision on
    // its branch, and after a last gc exactly the acknowledged data, each
    // chunk once.
    hub.kill();
    let gc_runs: Vec<serde_json::Value> = std::fs::read_to_string(&log).unwrap().lines().filter(|l| l.starts_with('{')).map(json).collect();
    let gc_failed: Vec<&serde_json::Value> = gc_runs.iter().filter(|g| g["gc"]["error"].is_string()).collect();
    assert!(gc_failed.is_empty(), "in-process gc failed: {gc_failed:?}");
    assert!(!gc_runs.is_empty(), "the hub never ran gc during the load");
    let fsck = json(&ok(ferry(&hub_store).args(["--json", "fsck"])));
    assert_eq!(fsck["ok"], true, "{fsck}");
    for (repo, branch) in heads.keys() {
        let log = json(&ok(ferry(&hub_store).args(["--json", "log", &format!("{repo}@{branch}"), "-n", "100000"])));
        let on_hub: HashSet<&str> = log.as_array().unwrap().iter().map(|r| r["revision"].as_str().unwrap()).collect();
        for (_, _, rev, v) in tally.acked.iter().filter(|a| &a.0 == repo && &a.1 == branch) {
            assert!(on_hub.contains(rev.as_str()), "acknowledged {v:?} ({rev}) is not in {repo}@{branch} on the hub");
        }
    }
    ok(ferry(&hub_store).arg("gc"));
    let stats = json(&ok(ferry(&hub_store).args(["--json", "stats"])));
    let versions: HashSet<Version> = tally.acked.iter().map(|a| a.3).collect();
    let expected = chunk_ids(
        [data.base.clone()].into_iter().chain(data.layers.iter().cloned()).chain(versions.iter().flat_map(|v| [v.new_bytes(), v.meta().into_bytes()])),
    );
    assert_eq!(stats["chunks"], expected.len(), "the hub holds {} chunks; the acknowledged revisions have {} unique chunks", stats["chunks"], expected.len());
    assert_eq!(stats["revisions"], tally.acked.len(), "{stats}");

    let gc_removed: u64 = gc_runs.iter().filter_map(|g| g["gc"]["chunks_removed"].as_u64()).sum();
    let mid_rss = samples.get(samples.len() / 3).copied().unwrap_or(0);
    let end_rss = samples.last().copied().unwrap_or(0);
    report(
        "load",
        &format!(
            "{WORKERS} clients ({} over TCP) for {wall:.0} s: {} pushes of own branches, {} pulls (every file checked), {} pushes to a contended main and {} \
             expected refusals; {:.1} MiB of chunks moved ({:.2} MiB/s, {:.1} operations/s); the hub ran gc {} times during the load ({gc_removed} chunks \
             removed), peak RSS {} MiB (RSS {} MiB a third of the way in, {} MiB at the end); after a last gc it holds exactly the {} unique chunks of the \
             {} acknowledged revisions",
            WORKERS / 4,
            tally.pushes,
            tally.pulls,
            tally.main_pushes,
            tally.main_conflicts,
            tally.bytes_moved as f64 / (1 << 20) as f64,
            tally.bytes_moved as f64 / (1 << 20) as f64 / wall,
            (tally.pushes + tally.pulls + tally.main_pushes + tally.main_conflicts) as f64 / wall,
            gc_runs.len(),
            peak >> 20,
            mid_rss >> 20,
            end_rss >> 20,
            expected.len(),
            tally.acked.len()
        ),
    );
    // Generous: the hub's own buffers are bounded by frames in flight, not by
    // how much has moved (see ARCHITECTURE.md).
    assert!(peak < 2 << 30, "the hub's peak RSS was {} MiB", peak >> 20);
}

/// What a client says when the hub vanished under it: the connection was
/// lost (re-run to resume), or could not be made, or timed out.
fn says_the_hub_went_away(e: &str) -> bool {
    ["connection lost", "could not connect", "timed out"].iter().any(|m| e.contains(m))
}

#[test]
fn a_hub_killed_under_load_loses_no_acknowledged_revision() {
    const CLIENTS: usize = 8;
    const REPOS: usize = 4;
    let kills: u32 = std::env::var("FERRY_LOAD_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let tmp = tempfile::tempdir().unwrap();
    let hub_store = tmp.path().join("hub-store");
    ok(ferry(&hub_store).arg("init"));
    let hub = Hub::serve_with(hub_store.clone(), "127.0.0.1:0", &[], None);
    let token = hub.token("load/*", "write");
    let addr = hub.addr.clone();
    let hub = Mutex::new(hub);
    let data = Data::new(REPOS);
    let mut rng = Rng::new(0x6b11_1ed0);
    let rngs: Vec<Mutex<Rng>> = (0..CLIENTS).map(|_| Mutex::new(rng.fork())).collect();
    let latest: Vec<AtomicU64> = (0..CLIENTS).map(|_| AtomicU64::new(0)).collect();
    let acked = Mutex::new(Vec::<(String, String, String, Version)>::new());
    let failures = Mutex::new(Vec::<String>::new());
    // Errors operations ended with because the hub died, and what their re-runs moved.
    let interrupted = Mutex::new(Vec::<String>::new());
    let (rerun_bytes, scratch_bytes) = (AtomicU64::new(0), AtomicU64::new(0));
    let stop = AtomicBool::new(false);
    let mut kill_log = Vec::new();

    std::thread::scope(|s| {
        for w in 0..CLIENTS {
            let (tmp, token, addr, data, latest, acked, failures, interrupted, stop, rngs) =
                (tmp.path(), &token, &addr, &data, &latest, &acked, &failures, &interrupted, &stop, &rngs);
            let (rerun_bytes, scratch_bytes) = (&rerun_bytes, &scratch_bytes);
            s.spawn(move || {
                let store = tmp.join(format!("w{w}"));
                let (src, scratch) = (tmp.join(format!("w{w}-src")), tmp.join(format!("w{w}-out")));
                ok(ferry(&store).arg("init"));
                let transport = if w % 2 == 1 { "tcp" } else { "quic" };
                let (repo, own) = (repo_of(w, REPOS), format!("w{w}"));
                let net = |verb: &str, repo: &str, branch: &str| {
                    let mut c = client(&store, Some(token));
                    c.args(["--json", verb, "--transport", transport, addr, repo, "--branch", branch]);
                    c
                };
                let fail = |what: String| failures.lock().unwrap().push(format!("client {w}: {what}"));
                // Runs an operation until it completes; failures must say the hub went away.
                let until_done = |what: &str, cmd: &dyn Fn() -> std::process::Command| -> Option<(serde_json::Value, bool)> {
                    let started = Instant::now();
                    let mut rerun = false;
                    loop {
                        match attempt(&mut cmd()) {
                            Ok(r) => return Some((r, rerun)),
                            Err(e) if says_the_hub_went_away(&e) && started.elapsed() < Duration::from_secs(150) => {
                                interrupted.lock().unwrap().push(e);
                                rerun = true;
                                std::thread::sleep(Duration::from_millis(200));
                            }
                            Err(e) => {
                                fail(format!("{what} failed: {e}"));
                                return None;
                            }
                        }
                    }
                };
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let v = Version::Own { worker: w, n };
                    data.write(v, REPOS, &src);
                    let c = json(&ok(ferry(&store).args(["--json", "commit", &repo, "--branch", &own]).arg(&src).args(["-m", &v.meta()])));
                    let rev = c["revision"].as_str().unwrap().to_owned();
                    let Some((r, rerun)) = until_done(&format!("push of {v:?}"), &|| net("push", &repo, &own)) else { return };
                    if r["head"] != rev.as_str() {
                        return fail(format!("push of {v:?} reported {r}"));
                    }
                    // The hub has every earlier version, so a push from scratch moves at most this version's new bytes.
                    let (moved, from_scratch) = (r["chunk_bytes_moved"].as_u64().unwrap(), c["stored_bytes"].as_u64().unwrap());
                    if moved > from_scratch {
                        fail(format!("push of {v:?} moved {moved} chunk bytes, more than the {from_scratch} new ones"));
                    }
                    if rerun {
                        rerun_bytes.fetch_add(moved, Ordering::Relaxed);
                        scratch_bytes.fetch_add(from_scratch, Ordering::Relaxed);
                    }
                    acked.lock().unwrap().push((repo.clone(), own.clone(), rev, v));
                    latest[w].store(n, Ordering::Relaxed);
                    if n % 2 == 0 {
                        let pushed: Vec<usize> = (0..CLIENTS).filter(|&j| j != w && latest[j].load(Ordering::Relaxed) > 0).collect();
                        if pushed.is_empty() {
                            continue;
                        }
                        let j = pushed[rngs[w].lock().unwrap().below(pushed.len() as u64) as usize];
                        let (their_repo, theirs) = (repo_of(j, REPOS), format!("w{j}"));
                        if until_done(&format!("pull of {their_repo}@{theirs}"), &|| net("pull", &their_repo, &theirs)).is_some() {
                            if let Err(e) = check_export(&store, &their_repo, &theirs, data, REPOS, &scratch) {
                                fail(e);
                            }
                        }
                    }
                }
            });
        }
        // Kill the hub at random moments once every client has pushed.
        let begin = Instant::now();
        while latest.iter().any(|l| l.load(Ordering::Relaxed) == 0) && begin.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(50));
        }
        for k in 0..kills {
            std::thread::sleep(Duration::from_millis(1000 + rng.below(3000)));
            let mut hub = hub.lock().unwrap();
            hub.kill();
            // Whatever a client was told before the kill is durable.
            let acked_now = acked.lock().unwrap().clone();
            let fsck = json(&ok(ferry(&hub_store).args(["--json", "fsck"])));
            assert_eq!(fsck["ok"], true, "kill {k}: {fsck}");
            for (repo, branch, rev, v) in &acked_now {
                let log = json(&ok(ferry(&hub_store).args(["--json", "log", &format!("{repo}@{branch}"), "-n", "100000"])));
                assert!(log.as_array().unwrap().iter().any(|r| r["revision"] == rev.as_str()), "kill {k}: acknowledged {v:?} ({rev}) lost");
            }
            kill_log.push(acked_now.len());
            *hub = Hub::serve_with(hub_store.clone(), &addr, &[], None);
        }
        // Give the interrupted operations time to complete their re-runs.
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{} operations failed that should have succeeded or said the hub went away:\n{}", failures.len(), failures.join("\n"));

    // Every client's branch on the hub is at its last acknowledged version
    // and pulls back byte-identical; the hub's store passes fsck.
    let acked = acked.into_inner().unwrap();
    let fresh = tmp.path().join("fresh");
    ok(ferry(&fresh).arg("init"));
    let mut heads: BTreeMap<(String, String), String> = BTreeMap::new();
    for (repo, branch, rev, _) in &acked {
        heads.insert((repo.clone(), branch.clone()), rev.clone());
    }
    for ((repo, branch), rev) in &heads {
        let r = json(&ok(client(&fresh, Some(&token)).args(["--json", "pull", &addr, repo, "--branch", branch])));
        assert_eq!(r["head"].as_str(), Some(rev.as_str()), "{repo}@{branch} is not at its last acknowledged revision");
        check_export(&fresh, repo, branch, &data, REPOS, &tmp.path().join("out")).unwrap();
    }
    hub.into_inner().unwrap().kill();
    let fsck = json(&ok(ferry(&hub_store).args(["--json", "fsck"])));
    assert_eq!(fsck["ok"], true, "{fsck}");
    let interrupted = interrupted.into_inner().unwrap();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &interrupted {
        let kind = ["connection lost", "could not connect", "timed out"].into_iter().find(|m| e.contains(m)).unwrap_or("other");
        *kinds.entry(kind).or_default() += 1;
    }
    report(
        "load",
        &format!(
            "hub killed under load: {CLIENTS} clients ({} over TCP), hub killed {kills} times (with {kill_log:?} revisions acknowledged), every acknowledged \
             revision kept, fsck clean after each; {} operations ended because the hub went away ({kinds:?}), all completed when re-run, the re-run pushes \
             moving {} KiB of the {} KiB their versions had new; {} revisions acknowledged in all",
            CLIENTS / 2,
            interrupted.len(),
            rerun_bytes.into_inner() >> 10,
            scratch_bytes.into_inner() >> 10,
            acked.len()
        ),
    );
}

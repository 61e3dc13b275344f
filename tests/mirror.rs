//! Mirroring end to end: two real hubs on loopback, real `ferry mirror`
//! and `ferry serve --mirror-of` processes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_tests::*;

fn write(dir: &Path, rel: &str, data: &[u8]) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// Two hubs in their own directories, and tokens: write on the source (to
/// push to it) and on the destination (to mirror into it).
struct Pair {
    tmp: tempfile::TempDir,
    src: Hub,
    dst: Hub,
    src_token: String,
    dst_token: String,
}

fn pair() -> Pair {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("eu")).unwrap();
    std::fs::create_dir_all(tmp.path().join("us")).unwrap();
    let src = Hub::start(&tmp.path().join("eu"));
    let dst = Hub::start(&tmp.path().join("us"));
    let src_token = src.token("org/*", "write");
    let dst_token = dst.token("org/*", "write");
    Pair { tmp, src, dst, src_token, dst_token }
}

impl Pair {
    fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// `ferry mirror src dst` with both tokens and a private known-hubs file.
    fn mirror(&self) -> Command {
        let mut c = ferry(&self.path().join("no-store"));
        c.env("FERRY_KNOWN_HUBS", self.path().join("mirror.known_hubs"))
            .env_remove("FERRY_TOKEN")
            .env("FERRY_FROM_TOKEN", &self.src_token)
            .env("FERRY_TO_TOKEN", &self.dst_token)
            .args(["--json", "mirror", &self.src.addr, &self.dst.addr]);
        c
    }

    /// A fresh local store with `repo` pulled from `hub`, exported.
    fn pull_export(&self, hub: &Hub, token: &str, repo: &str, name: &str) -> (PathBuf, PathBuf) {
        let store = self.path().join(name);
        ok(ferry(&store).arg("init"));
        ok(client(&store, Some(token)).args(["pull", &hub.addr, repo]));
        let out = self.path().join(format!("{name}-out"));
        ok(ferry(&store).args(["export", repo]).arg(&out));
        (store, out)
    }
}

/// Commits `src` as `repo` in a local store and pushes it to `hub`.
fn commit_push(store: &Path, hub: &Hub, token: &str, repo: &str, src: &Path, msg: &str) -> String {
    if !store.join("CURRENT").exists() {
        ok(ferry(store).arg("init"));
    }
    let c = json(&ok(ferry(store).args(["--json", "commit", repo]).arg(src).args(["-m", msg])));
    ok(client(store, Some(token)).args(["push", &hub.addr, repo]));
    c["revision"].as_str().unwrap().to_owned()
}

fn log_ids(store: &Path, repo: &str) -> Vec<String> {
    json(&ok(ferry(store).args(["--json", "log", repo]))).as_array().unwrap().iter().map(|r| r["revision"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn mirror_from_empty_then_incrementally_moves_only_the_difference() {
    let p = pair();
    let laptop = p.path().join("laptop");
    let (m, n) = (p.path().join("m"), p.path().join("n"));
    let weights = noise(12 << 20, 1);
    write(&m, "model.safetensors", &weights);
    write(&m, "config.json", b"{\"layers\": 4}");
    write(&n, "data.jsonl", &noise(3 << 20, 2));
    commit_push(&laptop, &p.src, &p.src_token, "org/m", &m, "v1");
    commit_push(&laptop, &p.src, &p.src_token, "org/n", &n, "n1");

    let first = json(&ok(&mut p.mirror()));
    assert_eq!((first["repositories"].as_u64(), first["branches_updated"].as_u64()), (Some(2), Some(2)), "{first}");
    assert!(first["raw_bytes_moved"].as_u64().unwrap() >= 15 << 20);
    let (copy, out) = p.pull_export(&p.dst, &p.dst_token, "org/m", "copy");
    assert_eq!(read_tree(&out), read_tree(&m));
    assert_eq!(log_ids(&copy, "org/m"), log_ids(&laptop, "org/m"), "revisions keep their ids");

    // A second version changes 1 MiB: the mirror moves about that, and
    // negotiates in proportion to the change, not to the hubs.
    let mut w2 = weights.clone();
    w2[5 << 20..6 << 20].copy_from_slice(&noise(1 << 20, 3));
    write(&m, "model.safetensors", &w2);
    commit_push(&laptop, &p.src, &p.src_token, "org/m", &m, "v2");
    let second = json(&ok(&mut p.mirror()));
    assert_eq!((second["branches_updated"].as_u64(), second["branches_up_to_date"].as_u64()), (Some(1), Some(1)), "{second}");
    let raw = second["raw_bytes_moved"].as_u64().unwrap();
    assert!((1 << 20..(1 << 20) + 600_000).contains(&raw), "moved {raw} raw bytes for a 1 MiB change");
    let negotiation = second["negotiation_bytes"].as_u64().unwrap();
    assert!(negotiation < 120_000, "{negotiation} bytes of negotiation for a 1 MiB change");
    let (copy2, out2) = p.pull_export(&p.dst, &p.dst_token, "org/m", "copy2");
    assert_eq!(read_tree(&out2), read_tree(&m));
    assert_eq!(log_ids(&copy2, "org/m"), log_ids(&laptop, "org/m"));

    let third = json(&ok(&mut p.mirror()));
    assert_eq!((third["branches_updated"].as_u64(), third["chunks_moved"].as_u64()), (Some(0), Some(0)), "{third}");
}

#[test]
fn only_matching_and_readable_repositories_are_mirrored() {
    let p = pair();
    let laptop = p.path().join("laptop");
    let src = p.path().join("src");
    write(&src, "f", &noise(100_000, 4));
    commit_push(&laptop, &p.src, &p.src_token, "org/a", &src, "a");
    commit_push(&laptop, &p.src, &p.src_token, "org/b", &src, "b");
    let other = p.src.token("team/*", "write");
    commit_push(&laptop, &p.src, &other, "team/secret", &src, "s");
    // The source token reads org/* only: team/secret is neither mirrored
    // nor named; --repo narrows further.
    let r = json(&ok(p.mirror().args(["--repo", "org/a", "--repo", "team/*"])));
    assert_eq!(r["repositories"], 1, "{r}");
    assert_eq!(r["changed"][0]["repo"], "org/a");
    assert!(!r.to_string().contains("secret"));
    let all = json(&ok(&mut p.mirror()));
    assert_eq!((all["repositories"].as_u64(), all["branches_updated"].as_u64()), (Some(2), Some(1)), "{all}");
    // A destination token that may not write a repository: refused there,
    // reported, the others still mirrored.
    let narrow = p.dst.token("org/a", "write");
    let third = p.src.token("org/*", "write");
    commit_push(&laptop, &p.src, &third, "org/c", &src, "c");
    let out = run(p.mirror().env("FERRY_TO_TOKEN", &narrow));
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("refused")).unwrap_or_else(|| panic!("no refusal reported: {text}"));
    assert!(line.contains("org/c"), "{line}");
}

#[test]
fn an_interrupted_mirror_resumes_moving_only_what_is_missing() {
    let p = pair();
    let laptop = p.path().join("laptop");
    let src = p.path().join("src");
    write(&src, "big.bin", &noise(96 << 20, 5));
    commit_push(&laptop, &p.src, &p.src_token, "org/m", &src, "v1");
    let total = json(&ok(ferry(&laptop).args(["--json", "stats"])))["chunks"].as_u64().unwrap();
    let mut child = p.mirror().stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    // Kill once the destination has flushed its first blob file (32 MiB of
    // chunk records), i.e. part-way through.
    let has_blob = || std::fs::read_dir(&p.dst.store).unwrap().flatten().any(|e| e.path().extension().is_some_and(|x| x == "blob"));
    let start = Instant::now();
    while !has_blob() && child.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let interrupted = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    let resumed = json(&ok(&mut p.mirror()));
    let moved = resumed["chunks_moved"].as_u64().unwrap();
    eprintln!("interrupted: {interrupted}; the re-run moved {moved} of {total} chunks");
    if interrupted {
        assert!(moved < total, "the re-run moved everything again");
    }
    let (_, out) = p.pull_export(&p.dst, &p.dst_token, "org/m", "copy");
    assert_eq!(read_tree(&out), read_tree(&src));
}

#[test]
fn diverged_histories_and_a_racing_push_are_conflicts_and_lose_nothing() {
    let p = pair();
    let laptop = p.path().join("laptop");
    let src = p.path().join("src");
    write(&src, "f", &noise(300_000, 6));
    let r1 = commit_push(&laptop, &p.src, &p.src_token, "org/m", &src, "r1");
    ok(&mut p.mirror());
    // Someone pushes r2' straight to the destination while the source gets r2.
    let other = p.path().join("other");
    ok(ferry(&other).arg("init"));
    ok(client(&other, Some(&p.dst_token)).args(["pull", &p.dst.addr, "org/m"]));
    write(&src, "f", &noise(300_000, 7));
    let r2 = commit_push(&laptop, &p.src, &p.src_token, "org/m", &src, "r2");
    let side = p.path().join("side");
    write(&side, "f", &noise(300_000, 8));
    let r2b = commit_push(&other, &p.dst, &p.dst_token, "org/m", &side, "r2 on the destination");
    let out = run(&mut p.mirror());
    assert!(!out.status.success(), "a diverged branch must not be overwritten");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("conflict") && text.contains("diverged"), "{text}");
    let (copy, _) = p.pull_export(&p.dst, &p.dst_token, "org/m", "copy");
    assert_eq!(log_ids(&copy, "org/m")[0], r2b, "the destination kept its own revision");
    assert!(log_ids(&copy, "org/m").contains(&r1));
    assert!(!log_ids(&copy, "org/m").contains(&r2));

    // A real race: a mirror and a push to the destination of the same
    // branch at once. Whoever loses gets a clear error; nothing is lost.
    let q = pair();
    let laptop = q.path().join("laptop");
    write(&src, "f", &noise(4 << 20, 9));
    commit_push(&laptop, &q.src, &q.src_token, "org/m", &src, "base");
    ok(&mut q.mirror());
    let pusher = q.path().join("pusher");
    ok(ferry(&pusher).arg("init"));
    ok(client(&pusher, Some(&q.dst_token)).args(["pull", &q.dst.addr, "org/m"]));
    write(&src, "f", &noise(4 << 20, 10));
    let from_source = commit_push(&laptop, &q.src, &q.src_token, "org/m", &src, "from the source");
    write(&side, "f", &noise(4 << 20, 11));
    let c = json(&ok(ferry(&pusher).args(["--json", "commit", "org/m"]).arg(&side).args(["-m", "pushed to the destination"])));
    let pushed = c["revision"].as_str().unwrap().to_owned();
    let mirror = q.mirror().stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let push = client(&pusher, Some(&q.dst_token))
        .args(["push", &q.dst.addr, "org/m"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (m, ps) = (finish(mirror, "mirror"), finish(push, "push"));
    let (copy, _) = q.pull_export(&q.dst, &q.dst_token, "org/m", "copy");
    let head = log_ids(&copy, "org/m")[0].clone();
    match (m.status.success(), ps.status.success()) {
        (true, false) => {
            assert_eq!(head, from_source);
            assert!(stderr(&ps).contains("pull first"), "{}", stderr(&ps));
        }
        (false, true) => {
            assert_eq!(head, pushed);
            assert!(String::from_utf8_lossy(&m.stdout).contains("conflict"), "{}", String::from_utf8_lossy(&m.stdout));
        }
        other => panic!("exactly one of the two must win, got {other:?}: mirror {} / push {}", String::from_utf8_lossy(&m.stdout), stderr(&ps)),
    }
    assert_eq!(json(&ok(ferry(&copy).args(["--json", "fsck"])))["ok"], true);
}

#[test]
fn a_hub_that_follows_another_picks_up_new_revisions() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("eu")).unwrap();
    let src = Hub::start(&tmp.path().join("eu"));
    let token = src.token("org/*", "write");
    let read = src.token("org/*", "read");
    let store = tmp.path().join("us-store");
    ok(ferry(&store).arg("init"));
    let known = tmp.path().join("us.known_hubs");
    let known = known.to_str().unwrap();
    let follower = Hub::serve_env(
        store.clone(),
        "127.0.0.1:0",
        &["--mirror-of", &src.addr, "--repo", "org/*", "--mirror-interval", "1"],
        &[("FERRY_TOKEN", &read), ("FERRY_KNOWN_HUBS", known)],
    );
    let local_token = follower.token("org/*", "read");
    let laptop = tmp.path().join("laptop");
    let dir = tmp.path().join("src");
    write(&dir, "model.bin", &noise(2 << 20, 12));
    let v1 = commit_push(&laptop, &src, &token, "org/m", &dir, "v1");
    let reader = tmp.path().join("reader");
    ok(ferry(&reader).arg("init"));
    let wait_for = |rev: &str| {
        let start = Instant::now();
        loop {
            let out = run(client(&reader, Some(&local_token)).args(["--json", "pull", &follower.addr, "org/m"]));
            if out.status.success() && json(&String::from_utf8_lossy(&out.stdout))["head"] == rev {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "the follower never got {rev}: {}", stderr(&out));
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    wait_for(&v1);
    write(&dir, "model.bin", &noise(2 << 20, 13));
    let v2 = commit_push(&laptop, &src, &token, "org/m", &dir, "v2");
    wait_for(&v2);
    let out = tmp.path().join("out");
    ok(ferry(&reader).args(["export", "org/m"]).arg(&out));
    assert_eq!(read_tree(&out), read_tree(&dir));
    assert_eq!(log_ids(&reader, "org/m"), log_ids(&laptop, "org/m"));
}

#[test]
fn a_watching_mirror_follows_only_what_changed() {
    use std::io::BufRead;
    let p = pair();
    let laptop = p.path().join("laptop");
    let (a, b) = (p.path().join("a"), p.path().join("b"));
    write(&a, "f", &noise(200_000, 20));
    write(&b, "f", &noise(200_000, 21));
    commit_push(&laptop, &p.src, &p.src_token, "org/a", &a, "a1");
    commit_push(&laptop, &p.src, &p.src_token, "org/b", &b, "b1");
    let mut watch = p.mirror().args(["--watch", "--interval", "5"]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).spawn().unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut lines = std::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let _guard = Kill(watch);
    let first = json(&lines.next().unwrap().unwrap());
    assert_eq!((first["repositories"].as_u64(), first["branches_updated"].as_u64()), (Some(2), Some(2)), "{first}");
    // A change to one repository: the next pass names only it.
    write(&a, "f", &noise(200_000, 22));
    let a2 = commit_push(&laptop, &p.src, &p.src_token, "org/a", &a, "a2");
    let pushed = Instant::now();
    let next = json(&lines.next().unwrap().unwrap());
    eprintln!("the watching mirror followed a new revision {:.2} s after its push", pushed.elapsed().as_secs_f64());
    assert_eq!((next["repositories"].as_u64(), next["branches_updated"].as_u64()), (Some(1), Some(1)), "{next}");
    assert_eq!(next["changed"][0]["repo"], "org/a");
    assert_eq!(next["changed"][0]["head"], a2.as_str());
    let (_, out) = p.pull_export(&p.dst, &p.dst_token, "org/a", "copy");
    assert_eq!(read_tree(&out), read_tree(&a));
}

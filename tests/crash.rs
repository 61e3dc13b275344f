//! Crash consistency: `kill -9` real `ferry commit` and `ferry gc` processes
//! at random moments, then check that fsck passes and that every revision a
//! command reported as committed is still there, byte-identical.
//!
//! FERRY_CRASH_ITERATIONS sets the number of kills (default 10).

use std::process::Stdio;
use std::time::{Duration, Instant};

use ferry_tests::*;

#[test]
fn kill_9_during_commit_or_gc_never_loses_a_committed_revision() {
    let iterations: u64 = std::env::var("FERRY_CRASH_ITERATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    ok(ferry(&store).arg("init"));
    let mut seed = Instant::now().elapsed().as_nanos() as u64 ^ std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    // (revision id, source directory) of every commit that reported success.
    let mut committed: Vec<(String, std::path::PathBuf)> = Vec::new();
    let (mut killed, mut finished) = (0, 0);
    // Kill within the time an uninterrupted commit takes, so most kills land mid-run.
    let mut typical_ms = 1000u64;
    for i in 0..iterations {
        let src = tmp.path().join(format!("src{i}"));
        std::fs::create_dir_all(&src).unwrap();
        // Part shared with earlier versions, part new, so kills land in dedup and in writes.
        std::fs::write(src.join("base.bin"), noise(16 << 20, 1)).unwrap();
        std::fs::write(src.join("new.bin"), noise(24 << 20, 100 + i)).unwrap();
        let gc_turn = i % 3 == 2;
        let mut child = if gc_turn {
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
        let delay = if i == 0 { Duration::from_secs(600) } else { Duration::from_millis(rand(typical_ms * 3 / 4 + 1)) };
        let start = Instant::now();
        let mut exited = None;
        while start.elapsed() < delay {
            if let Some(st) = child.try_wait().unwrap() {
                exited = Some(st);
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if i == 0 {
            typical_ms = start.elapsed().as_millis() as u64 + 1;
        }
        if exited.is_none() {
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            killed += 1;
        } else {
            finished += 1;
        }
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !gc_turn && out.status.success() {
            // The command reported the revision as committed.
            committed.push((json(&stdout)["revision"].as_str().unwrap().to_owned(), src.clone()));
        }
        // After every kill: the store opens, fsck passes, nothing reported is lost.
        let fsck = json(&ok(ferry(&store).args(["--json", "fsck"])));
        assert_eq!(fsck["ok"], true, "fsck failed after iteration {i}: {fsck}");
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
    eprintln!("crash test: {iterations} iterations, {killed} killed mid-run, {finished} finished, {} commits reported", committed.len());
}

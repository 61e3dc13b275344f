//! Crash consistency across the wire: `kill -9` a pushing or pulling client,
//! or the hub in the middle of a push or a pull, at random moments. After
//! each kill: fsck passes on the killed side's store, the interrupted command
//! re-run completes and sends no more than the version's new data, and at
//! the end every revision the hub acknowledged exports byte-identical from
//! the hub's store.
//!
//! FERRY_CRASH_ITERATIONS sets the number of rounds (default 8).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_tests::*;

const BASE: usize = 8 << 20;
const NEW: usize = 24 << 20;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Victim {
    PushClient,
    HubDuringPush,
    PullClient,
    HubDuringPull,
}

fn fsck_ok(store: &Path, after: &str) {
    let fsck = json(&ok(ferry(store).args(["--json", "fsck"])));
    assert_eq!(fsck["ok"], true, "fsck of {} failed after {after}: {fsck}", store.display());
}

#[test]
fn kill_9_during_push_or_pull_never_loses_an_acknowledged_revision() {
    let iterations: u64 = std::env::var("FERRY_CRASH_ITERATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    let tmp = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(tmp.path());
    let addr = hub.addr.clone();
    let token = hub.token("org/*", "write");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(ferry(&a).arg("init"));
    ok(ferry(&b).arg("init"));
    let push = |hub: &str| -> Command {
        let mut c = client(&a, Some(&token));
        c.args(["--json", "push", hub, "org/m"]);
        c
    };
    let pull = |hub: &str| -> Command {
        let mut c = client(&b, Some(&token));
        c.args(["--json", "pull", hub, "org/m"]);
        c
    };

    let mut seed = std::process::id() as u64 ^ 0x2545_f491_4f6c_dd1d ^ Instant::now().elapsed().as_nanos() as u64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n.max(1)
    };
    // (revision, source) of every push the hub acknowledged.
    let mut acked: Vec<(String, PathBuf)> = Vec::new();
    let mut counts = std::collections::BTreeMap::<String, u32>::new();
    // How long an uninterrupted transfer of one version takes; kills land within it.
    let mut typical_ms = 400u64;
    // Raw bytes of the versions the puller has not got yet (a pull fetches
    // the whole history it lacks).
    let mut unpulled = 0u64;
    for i in 0..iterations {
        let src = tmp.path().join(format!("src{i}"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("base.bin"), noise(BASE, 1)).unwrap();
        std::fs::write(src.join("new.bin"), noise(NEW, 100 + i)).unwrap();
        ok(ferry(&a).args(["commit", "org/m"]).arg(&src).args(["-m", &format!("v{i}")]));
        let added = (NEW + if i == 0 { BASE } else { 0 }) as u64;
        unpulled += added;
        let victim = [Victim::PushClient, Victim::HubDuringPush, Victim::PullClient, Victim::HubDuringPull][(i % 4) as usize];
        let pulling = matches!(victim, Victim::PullClient | Victim::HubDuringPull);
        if pulling {
            // The hub first gets this version whole, so the pull has something new.
            let r = json(&ok(&mut push(&addr)));
            acked.push((r["head"].as_str().unwrap().to_owned(), src.clone()));
        }
        let mut cmd = if pulling { pull(&addr) } else { push(&addr) };
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut child = Some(child);
        let delay = Duration::from_millis(rand(typical_ms));
        let start = Instant::now();
        let mut finished_alone = false;
        while start.elapsed() < delay {
            if child.as_mut().unwrap().try_wait().unwrap().is_some() {
                finished_alone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let what = format!("round {i} ({victim:?} after {} ms)", delay.as_millis());
        let hub_killed = !finished_alone && matches!(victim, Victim::HubDuringPush | Victim::HubDuringPull);
        if !finished_alone {
            if hub_killed {
                hub.kill();
            } else {
                unsafe { libc::kill(child.as_ref().unwrap().id() as i32, libc::SIGKILL) };
            }
        }
        let out = finish(child.take().unwrap(), &what);
        if out.status.success() && !pulling {
            let r = json(&String::from_utf8_lossy(&out.stdout));
            acked.push((r["head"].as_str().unwrap().to_owned(), src.clone()));
        }
        *counts.entry(if finished_alone { "finished".into() } else { format!("{victim:?}") }).or_default() += 1;

        // The killed side's store is consistent.
        if hub_killed {
            fsck_ok(&hub.store, &what);
            hub = Hub::serve(hub.store.clone(), &addr);
        } else if !finished_alone {
            fsck_ok(if pulling { &b } else { &a }, &what);
        }

        // The interrupted command, re-run, completes and moves at most what
        // this version added.
        let t0 = Instant::now();
        let r = json(&ok(&mut if pulling { pull(&addr) } else { push(&addr) }));
        if finished_alone || i == 0 {
            typical_ms = (t0.elapsed().as_millis() as u64).max(50);
        }
        let moved = r["raw_bytes_moved"].as_u64().unwrap();
        let limit = if pulling { unpulled } else { added };
        assert!(moved <= limit, "{what}: the re-run moved {moved} raw bytes, more than the {limit} it lacked");
        if !pulling {
            acked.push((r["head"].as_str().unwrap().to_owned(), src.clone()));
        } else {
            unpulled = 0;
            // The pulled store now holds this version, byte-identical.
            let out = tmp.path().join(format!("pulled{i}"));
            ok(ferry(&b).args(["export", "org/m"]).arg(&out));
            assert_eq!(read_tree(&out), read_tree(&src), "{what}: pulled files differ");
            std::fs::remove_dir_all(&out).unwrap();
        }
    }

    // Every acknowledged revision is on the hub, whole.
    hub.kill();
    fsck_ok(&hub.store, "the last round");
    for (rev, src) in &acked {
        let out = tmp.path().join(format!("hub-{rev}"));
        ok(ferry(&hub.store).args(["export", &format!("org/m@{rev}")]).arg(&out));
        assert_eq!(read_tree(&out), read_tree(src), "acknowledged revision {rev} does not export byte-identical from the hub");
        std::fs::remove_dir_all(&out).unwrap();
    }
    eprintln!("crash test over the wire: {iterations} rounds, {} acknowledged pushes, kills and finishes: {counts:?}", acked.len());
}

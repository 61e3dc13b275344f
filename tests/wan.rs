//! Hubs across an emulated long, lossy link (`wan-link`: 100 ms round
//! trip, 1% loss each way, jitter and reordering, 200 Mbit/s): a hub that
//! follows another, a one-shot mirror, a push across the link, and a pull
//! over the TCP fallback with UDP blocked. Real processes, real QUIC and
//! TCP through a relay of real IP packets.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_tests::*;

fn write(dir: &Path, rel: &str, data: &[u8]) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// A hub serving `store` inside namespace `ns` on `addr`.
fn hub_in(ns: &str, store: &Path, addr: &str, args: &[&str], envs: &[(&str, &str)]) -> Hub {
    if !store.join("CURRENT").exists() {
        ok(ferry(store).arg("init"));
    }
    let mut cmd = ferry(store);
    cmd.args(["--json", "serve", "--listen", addr]).args(args).envs(envs.iter().copied());
    Hub::spawn(in_netns(ns, &cmd), store.to_path_buf())
}

fn timed(cmd: &mut Command) -> (serde_json::Value, f64) {
    let start = Instant::now();
    let v = json(&ok(cmd));
    (v, start.elapsed().as_secs_f64())
}

#[test]
fn mirror_push_and_pull_across_a_long_lossy_link() {
    let link = ["--rate-mbit", "200", "--rtt-ms", "100", "--loss", "0.01", "--jitter-ms", "2", "--reorder", "0.005"];
    let Some(wan) = Wan::start(&format!("fw{}", std::process::id() % 100_000), &link) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // hub-eu in a, the laptop beside it; hub-us in b follows hub-eu.
    let eu = hub_in(&wan.a, &t.join("eu"), "10.77.0.1:0", &[], &[]);
    let token_eu = eu.token("org/*", "write");
    let known = t.join("known_hubs");
    let known = known.to_str().unwrap();
    let us = hub_in(
        &wan.b,
        &t.join("us"),
        "10.77.0.2:0",
        &["--mirror-of", &eu.addr, "--repo", "org/m", "--mirror-interval", "1"],
        &[("FERRY_TOKEN", &token_eu), ("FERRY_KNOWN_HUBS", known)],
    );
    let token_us = us.token("org/*", "write");

    let laptop = t.join("laptop");
    ok(ferry(&laptop).arg("init"));
    let src = t.join("src");
    write(&src, "model.safetensors", &noise(24 << 20, 1));
    write(&src, "config.json", b"{}");
    ok(ferry(&laptop).args(["commit", "org/m"]).arg(&src).args(["-m", "v1"]));
    ok(&mut in_netns(&wan.a, client(&laptop, Some(&token_eu)).args(["push", &eu.addr, "org/m"])));

    // The follower pulls org/m across the link.
    let reader = t.join("reader");
    ok(ferry(&reader).arg("init"));
    let head = json(&ok(ferry(&laptop).args(["--json", "log", "org/m"])))[0]["revision"].as_str().unwrap().to_owned();
    let start = Instant::now();
    loop {
        let out = run(&mut in_netns(&wan.b, client(&reader, Some(&token_us)).args(["--json", "pull", &us.addr, "org/m"])));
        if out.status.success() && json(&String::from_utf8_lossy(&out.stdout))["head"] == head.as_str() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "hub-us never followed org/m: {}", stderr(&out));
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("hub-us followed a 24 MiB revision across the link within {:.1} s", start.elapsed().as_secs_f64());
    let out = t.join("out");
    ok(ferry(&reader).args(["export", "org/m"]).arg(&out));
    assert_eq!(read_tree(&out), read_tree(&src));

    // A one-shot mirror of another repository, run beside hub-us.
    let other = t.join("other");
    write(&other, "data.bin", &noise(16 << 20, 2));
    ok(ferry(&laptop).args(["commit", "org/n"]).arg(&other).args(["-m", "n1"]));
    ok(&mut in_netns(&wan.a, client(&laptop, Some(&token_eu)).args(["push", &eu.addr, "org/n"])));
    let mut mirror = ferry(&t.join("none"));
    mirror.env("FERRY_KNOWN_HUBS", known).env("FERRY_FROM_TOKEN", &token_eu).env("FERRY_TO_TOKEN", &token_us);
    mirror.args(["--json", "mirror", &eu.addr, &us.addr, "--repo", "org/n"]);
    let (m, secs) = timed(&mut in_netns(&wan.b, &mirror));
    assert_eq!(m["branches_updated"], 1, "{m}");
    let bytes = m["wire_bytes"].as_u64().unwrap();
    eprintln!(
        "mirror of 16 MiB across the link: {secs:.1} s, {:.0} Mbit/s incl. start-up; {} B of negotiation",
        bytes as f64 * 8.0 / secs / 1e6,
        m["negotiation_bytes"]
    );

    // A push straight across the link over QUIC.
    let (p, secs) = timed(&mut in_netns(&wan.a, client(&laptop, Some(&token_us)).args(["--json", "push", &us.addr, "org/n", "--branch", "main"])));
    assert_eq!(p["up_to_date"], true, "the mirror already brought org/n: {p}");
    write(&other, "data.bin", &noise(16 << 20, 3));
    ok(ferry(&laptop).args(["commit", "org/n"]).arg(&other).args(["-m", "n2"]));
    let (p, secs2) = timed(&mut in_netns(&wan.a, client(&laptop, Some(&token_us)).args(["--json", "push", &us.addr, "org/n"])));
    assert_eq!(p["transport"], "quic");
    let sent = p["wire_bytes_sent"].as_u64().unwrap();
    eprintln!("push of 16 MiB across the link over QUIC: {secs2:.1} s ({secs:.1} s when up to date), {:.0} Mbit/s", sent as f64 * 8.0 / secs2 / 1e6);

    // With UDP blocked where the client runs, the same pull falls back to
    // TLS over TCP and still arrives whole.
    let status = Command::new("ip").args(["netns", "exec", &wan.a, "iptables", "-A", "OUTPUT", "-p", "udp", "-j", "DROP"]).status().unwrap();
    assert!(status.success(), "iptables in the namespace");
    let fresh = t.join("fresh");
    ok(ferry(&fresh).arg("init"));
    let (p, secs) = timed(&mut in_netns(&wan.a, client(&fresh, Some(&token_us)).args(["--json", "pull", &us.addr, "org/n"])));
    assert_eq!(p["transport"], "tcp");
    let got = p["wire_bytes_received"].as_u64().unwrap();
    eprintln!("pull of 16 MiB across the link over TCP: {secs:.1} s, {:.0} Mbit/s", got as f64 * 8.0 / secs / 1e6);
    let out = t.join("out-n");
    ok(ferry(&fresh).args(["export", "org/n"]).arg(&out));
    assert_eq!(read_tree(&out), read_tree(&other));
    assert_eq!(json(&ok(ferry(&fresh).args(["--json", "fsck"])))["ok"], true);
}

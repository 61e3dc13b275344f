//! `wan-link`: an emulated wide-area link for tests and benchmarks, for
//! kernels without netem.
//!
//! It makes two network namespaces, `<name>-a` (10.77.0.1) and `<name>-b`
//! (10.77.0.2), each with a TUN device, and relays IP packets between the
//! two devices through a model of a link, per direction: a rate limit (the
//! serialisation delay of each packet) behind a drop-tail queue, a
//! propagation delay of half the round trip, random jitter, random loss and
//! random reordering. Because it works on IP packets, QUIC over UDP and TCP
//! (ferry's fallback, rsync) both meet real loss, and each end's kernel
//! runs its own TCP congestion control as it would on a real path.
//!
//! ```text
//! wan-link --name w1 --rate-mbit 200 --rtt-ms 100 --loss 0.01 --seed 1
//! ip netns exec w1-b ferry serve --listen 10.77.0.2:4433 &
//! ip netns exec w1-a ferry push 10.77.0.2:4433 org/model
//! ```
//!
//! It prints one JSON line when the link is up, then relays until its
//! standard input closes (so it never outlives the test that started it),
//! deletes the namespaces, and prints a JSON line of counters. Needs root.

use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use ferry_testkit::StarRng;

#[derive(Parser, Clone)]
#[command(about = "An emulated wide-area link between two network namespaces")]
struct Args {
    /// Prefix of the namespaces (`<name>-a`, `<name>-b`); at most 10 characters.
    #[arg(long)]
    name: String,
    /// Link rate each way, in Mbit/s (0: unlimited).
    #[arg(long, default_value_t = 200.0)]
    rate_mbit: f64,
    /// Round-trip time, split evenly between the two directions.
    #[arg(long, default_value_t = 100.0)]
    rtt_ms: f64,
    /// Extra delay per packet, uniform in 0..jitter. Like a queue, it keeps
    /// packets in order (use --reorder for reordering).
    #[arg(long, default_value_t = 0.0)]
    jitter_ms: f64,
    /// Probability that a packet is lost, each way.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Probability that a packet is held back by --reorder-ms, so that the
    /// packets behind it overtake it.
    #[arg(long, default_value_t = 0.0)]
    reorder: f64,
    #[arg(long, default_value_t = 1.0)]
    reorder_ms: f64,
    /// Queue in front of the link, in KiB (default: 100 ms at the link rate,
    /// at least 64 KiB).
    #[arg(long)]
    queue_kib: Option<u64>,
    /// Seed for loss, jitter and reordering.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Per-direction counters.
#[derive(Default)]
struct Counters {
    packets: AtomicU64,
    bytes: AtomicU64,
    lost: AtomicU64,
    queue_drops: AtomicU64,
    delivered_bytes: AtomicU64,
}

/// A packet waiting in the delay line, ordered by delivery time.
struct Due {
    at: Instant,
    seq: u64,
    packet: Vec<u8>,
}
impl PartialEq for Due {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Due {
    // BinaryHeap is a max-heap: the earliest delivery must compare largest.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

struct DelayLine {
    heap: Mutex<BinaryHeap<Due>>,
    ready: Condvar,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip (iproute2)");
    if !out.status.success() {
        panic!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
}

/// Opens a TUN device (no packet information header) named `name`.
fn open_tun(name: &str) -> File {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    const IFF_TUN: libc::c_short = 0x0001;
    const IFF_NO_PI: libc::c_short = 0x1000;
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let f = std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun").expect("open /dev/net/tun (needs root)");
    let mut req = IfReq { name: [0; 16], flags: IFF_TUN | IFF_NO_PI, _pad: [0; 22] };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes an ifreq, which IfReq lays out.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF, &mut req) };
    assert!(rc == 0, "TUNSETIFF {name}: {}", std::io::Error::last_os_error());
    f
}

fn duplicate(f: &File) -> File {
    // SAFETY: dup returns a new descriptor we own, or -1.
    let fd = unsafe { libc::dup(f.as_raw_fd()) };
    assert!(fd >= 0, "dup: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    unsafe { File::from_raw_fd(fd) }
}

/// Reads packets from `input`, puts them through the link model, and hands
/// survivors to the delay line.
fn ingress(mut input: File, line: Arc<DelayLine>, args: Args, seed: u64, c: Arc<Counters>) {
    let rate = args.rate_mbit * 1e6 / 8.0; // bytes per second
    let one_way = Duration::from_secs_f64(args.rtt_ms / 2000.0);
    let jitter = args.jitter_ms / 1000.0;
    let hold_back = Duration::from_secs_f64(args.reorder_ms / 1000.0);
    // Jitter never lets a packet overtake the one before it.
    let mut last_due = Instant::now();
    let queue = args.queue_kib.map_or_else(|| (rate * 0.1).max(65536.0), |k| (k * 1024) as f64);
    let mut rng = StarRng::new(seed);
    let mut free_at = Instant::now();
    let mut seq = 0u64;
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let now = Instant::now();
        c.packets.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(n as u64, Ordering::Relaxed);
        if rng.unit() < args.loss {
            c.lost.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let mut done = now;
        if rate > 0.0 {
            let backlog = free_at.saturating_duration_since(now).as_secs_f64() * rate;
            if backlog + n as f64 > queue {
                c.queue_drops.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            free_at = free_at.max(now) + Duration::from_secs_f64(n as f64 / rate);
            done = free_at;
        }
        let mut at = (done + one_way + Duration::from_secs_f64(jitter * rng.unit())).max(last_due);
        last_due = at;
        if rng.unit() < args.reorder {
            at += hold_back;
        }
        seq += 1;
        let mut heap = line.heap.lock().unwrap();
        heap.push(Due { at, seq, packet: buf[..n].to_vec() });
        line.ready.notify_one();
    }
}

/// Delivers packets from the delay line when they are due.
fn egress(mut output: File, line: Arc<DelayLine>, c: Arc<Counters>) {
    let mut heap = line.heap.lock().unwrap();
    loop {
        let now = Instant::now();
        match heap.peek() {
            Some(d) if d.at <= now => {
                let d = heap.pop().expect("peeked");
                drop(heap);
                // A packet the far side cannot take (e.g. its device went
                // down) is lost, like on a wire.
                let _ = output.write(&d.packet);
                c.delivered_bytes.fetch_add(d.packet.len() as u64, Ordering::Relaxed);
                heap = line.heap.lock().unwrap();
            }
            Some(d) => {
                let wait = d.at - now;
                heap = line.ready.wait_timeout(heap, wait).unwrap().0;
            }
            None => heap = line.ready.wait(heap).unwrap(),
        }
    }
}

fn main() {
    let args = Args::parse();
    assert!(args.name.len() <= 10 && !args.name.is_empty(), "--name must be 1 to 10 characters");
    let (ns_a, ns_b) = (format!("{}-a", args.name), format!("{}-b", args.name));
    let (tun_a, tun_b) = (format!("{}ta", args.name), format!("{}tb", args.name));
    // A namespace left by a relay that was killed outright.
    for ns in [&ns_a, &ns_b] {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
    let (dev_a, dev_b) = (open_tun(&tun_a), open_tun(&tun_b));
    for (ns, tun, addr) in [(&ns_a, &tun_a, "10.77.0.1/24"), (&ns_b, &tun_b, "10.77.0.2/24")] {
        ip(&["netns", "add", ns]);
        ip(&["link", "set", tun, "netns", ns]);
        ip(&["-n", ns, "addr", "add", addr, "dev", tun]);
        ip(&["-n", ns, "link", "set", tun, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    let counters = [Arc::new(Counters::default()), Arc::new(Counters::default())];
    for (i, (from, to)) in [(&dev_a, &dev_b), (&dev_b, &dev_a)].into_iter().enumerate() {
        let line = Arc::new(DelayLine { heap: Mutex::new(BinaryHeap::new()), ready: Condvar::new() });
        let (input, output) = (duplicate(from), duplicate(to));
        let (a, l, c) = (args.clone(), line.clone(), counters[i].clone());
        std::thread::spawn(move || ingress(input, l, a, args.seed + i as u64, c));
        let c = counters[i].clone();
        std::thread::spawn(move || egress(output, line, c));
    }
    println!(
        "{}",
        serde_json::json!({ "a": { "netns": ns_a, "addr": "10.77.0.1" }, "b": { "netns": ns_b, "addr": "10.77.0.2" },
            "rate_mbit": args.rate_mbit, "rtt_ms": args.rtt_ms, "loss": args.loss, "jitter_ms": args.jitter_ms, "reorder": args.reorder })
    );
    let _ = std::io::stdout().flush();
    // Relay until whoever started us goes away.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    for ns in [&ns_a, &ns_b] {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
    let stat = |c: &Counters| {
        serde_json::json!({ "packets": c.packets.load(Ordering::Relaxed), "bytes": c.bytes.load(Ordering::Relaxed),
            "lost": c.lost.load(Ordering::Relaxed), "queue_drops": c.queue_drops.load(Ordering::Relaxed),
            "delivered_bytes": c.delivered_bytes.load(Ordering::Relaxed) })
    };
    // Whoever started us may have stopped listening.
    let _ = writeln!(std::io::stdout(), "{}", serde_json::json!({ "a_to_b": stat(&counters[0]), "b_to_a": stat(&counters[1]) }));
}

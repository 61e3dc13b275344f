//! Helpers for end-to-end tests: find the `ferry` binary, run it, make data.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// No single ferry command in these tests should take this long; one that
/// does has hung, and the test fails naming it instead of stalling the run.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(180);

/// The `ferry` binary built beside this test (`target/<profile>/ferry`).
pub fn ferry_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target profile directory");
    let bin = dir.join("ferry");
    assert!(bin.exists(), "{} not built: run `cargo build --release --workspace` first", bin.display());
    bin
}

/// A `ferry --store <store>` command.
pub fn ferry(store: &Path) -> Command {
    let mut c = Command::new(ferry_bin());
    c.arg("--store").arg(store).env_remove("FERRY_STORE").env("FERRY_AUTHOR", "tester");
    c
}

/// Runs to completion (stdin closed), killing it and failing the test if it
/// outlives [`COMMAND_DEADLINE`].
pub fn run(cmd: &mut Command) -> Output {
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run ferry");
    finish(child, &format!("{cmd:?}"))
}

/// Waits for a spawned command (stdout and stderr piped) like [`run`].
pub fn finish(mut child: Child, what: &str) -> Output {
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for ferry") {
            break status;
        }
        if start.elapsed() > COMMAND_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err.join().unwrap_or_default();
            panic!("{what} hung for {COMMAND_DEADLINE:?} and was killed; stderr: {}", String::from_utf8_lossy(&stderr));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() }
}

/// Runs and requires success; returns stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed:\nstdout: {}\nstderr: {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs and requires failure; returns the output.
pub fn fails(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(!out.status.success(), "{cmd:?} succeeded but should have failed: {}", String::from_utf8_lossy(&out.stdout));
    out
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

pub use ferry_testkit::noise;

/// A small deterministic generator (xorshift), seeded from the clock unless
/// FERRY_TEST_SEED is set, so that a failing run can be repeated.
pub struct Rng(ferry_testkit::Rng);

impl Rng {
    pub fn new(salt: u64) -> Rng {
        Rng(ferry_testkit::Rng::from_env(salt))
    }

    /// An independent generator for another thread, repeatable with this one's seed.
    pub fn fork(&mut self) -> Rng {
        Rng(self.0.fork())
    }

    /// A number in 0..n (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }
}

/// Prints a harness's figures and keeps them in `<target>/<profile>/ferry-reports/<name>.txt`,
/// which `scripts/test` shows at the end of a run (cargo hides a passing
/// test's output).
pub fn report(name: &str, text: &str) {
    eprintln!("{name}: {text}");
    let exe = std::env::current_exe().expect("test executable path");
    if let Some(dir) = exe.parent().and_then(|d| d.parent()).map(|d| d.join("ferry-reports")) {
        use std::io::Write;
        let _ = std::fs::create_dir_all(&dir);
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{name}.txt"))) {
            let _ = writeln!(f, "{text}");
        }
    }
}

/// A process's peak resident set size, in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmHWM:")
}

/// A process's resident set size now, in bytes.
pub fn rss(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmRSS:")
}

fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// Every regular file under `dir`, relative path -> bytes.
pub fn read_tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// A running `ferry serve` on loopback, killed when dropped.
pub struct Hub {
    pub child: std::process::Child,
    pub addr: String,
    pub store: PathBuf,
    pub fingerprint: String,
    /// The HTTP door's address, when started with `--http`.
    pub http: Option<String>,
}

impl Hub {
    /// Initialises a hub store in `dir` and starts serving it on a free port.
    pub fn start(dir: &Path) -> Hub {
        let store = dir.join("hub-store");
        if !store.join("CURRENT").exists() {
            ok(ferry(&store).arg("init"));
        }
        Self::serve(store, "127.0.0.1:0")
    }

    pub fn serve(store: PathBuf, listen: &str) -> Hub {
        Self::serve_with(store, listen, &[], None)
    }

    /// `ferry serve` with extra arguments (e.g. `--gc-every 2s`), its
    /// stderr appended to `log` if given.
    pub fn serve_with(store: PathBuf, listen: &str, extra: &[&str], log: Option<&Path>) -> Hub {
        let mut cmd = ferry(&store);
        cmd.args(["--json", "serve", "--listen", listen]).args(extra);
        Self::spawn_logged(cmd, store, log)
    }

    /// `ferry serve` with extra arguments and environment (e.g. a hub that
    /// follows another with `--mirror-of`, and the token it uses there).
    pub fn serve_env(store: PathBuf, listen: &str, args: &[&str], envs: &[(&str, &str)]) -> Hub {
        let mut cmd = ferry(&store);
        cmd.args(["--json", "serve", "--listen", listen]).args(args).envs(envs.iter().copied());
        Self::spawn(cmd, store)
    }

    /// Starts a prepared `ferry ... serve` command (e.g. inside a network
    /// namespace) and waits for its listening line.
    pub fn spawn(cmd: Command, store: PathBuf) -> Hub {
        Self::spawn_logged(cmd, store, None)
    }

    fn spawn_logged(mut cmd: Command, store: PathBuf, log: Option<&Path>) -> Hub {
        use std::io::BufRead;
        let stderr = match log {
            Some(p) => std::process::Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(p).expect("hub log file")),
            None => std::process::Stdio::inherit(),
        };
        let mut child = cmd.stdout(std::process::Stdio::piped()).stderr(stderr).spawn().expect("start ferry serve");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let v = json(&line);
        Hub {
            child,
            addr: v["listen"].as_str().unwrap().to_owned(),
            store,
            fingerprint: v["fingerprint"].as_str().unwrap().to_owned(),
            http: v["http"].as_str().map(str::to_owned),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Creates a token on the hub's store (works while it runs).
    pub fn token(&self, repo: &str, scope: &str) -> String {
        ok(ferry(&self.store).args(["token", "create", "--repo", repo, "--scope", scope])).trim().to_owned()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A client command: `ferry --store <store>` with a private known-hubs file
/// and the given token.
pub fn client(store: &Path, token: Option<&str>) -> Command {
    let mut c = ferry(store);
    c.env("FERRY_KNOWN_HUBS", store.with_extension("known_hubs"));
    match token {
        Some(t) => c.env("FERRY_TOKEN", t),
        None => c.env_remove("FERRY_TOKEN"),
    };
    c
}

/// The same command, run inside network namespace `ns` (`ip netns exec`),
/// with the same arguments and environment.
pub fn in_netns(ns: &str, cmd: &Command) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

/// An emulated wide-area link (`wan-link`) between namespaces `<name>-a`
/// (10.77.0.1) and `<name>-b` (10.77.0.2); torn down when dropped.
pub struct Wan {
    child: Child,
    pub a: String,
    pub b: String,
}

impl Wan {
    /// None (after saying why) where namespaces and TUN devices are not
    /// available: they need root.
    pub fn start(name: &str, link: &[&str]) -> Option<Wan> {
        use std::io::BufRead;
        if unsafe { libc::geteuid() } != 0 || !Path::new("/dev/net/tun").exists() {
            eprintln!("SKIPPED: an emulated link needs root and /dev/net/tun");
            return None;
        }
        let bin = ferry_bin().with_file_name("wan-link");
        let mut child = Command::new(&bin)
            .args(["--name", name])
            .args(link)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let v = json(&line);
        Some(Wan { child, a: v["a"]["netns"].as_str().unwrap().into(), b: v["b"]["netns"].as_str().unwrap().into() })
    }
}

impl Drop for Wan {
    fn drop(&mut self) {
        // Closing its stdin makes the relay delete the namespaces and exit.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// A small XFS filesystem (reflinks on) in an image file, mounted through a
/// loop device for the life of the value: where files can share bytes.
pub struct Reflinks {
    pub dir: PathBuf,
}

impl Reflinks {
    /// None (after saying why) where loop devices or mkfs.xfs are not
    /// available: they need root.
    pub fn mount(under: &Path) -> Option<Reflinks> {
        let mkfs = ["/usr/sbin/mkfs.xfs", "/sbin/mkfs.xfs"].into_iter().find(|p| Path::new(p).exists());
        if unsafe { libc::geteuid() } != 0 || !Path::new("/dev/loop-control").exists() || mkfs.is_none() {
            eprintln!("SKIPPED: a reflink filesystem needs root, loop devices and mkfs.xfs (xfsprogs)");
            return None;
        }
        let image = under.join("xfs.img");
        std::fs::File::create(&image).unwrap().set_len(512 << 20).unwrap();
        ok(Command::new(mkfs.unwrap()).args(["-q", "-m", "reflink=1"]).arg(&image));
        let dir = under.join("xfs");
        std::fs::create_dir_all(&dir).unwrap();
        let mount = run(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&dir));
        if !mount.status.success() {
            // A container may hold root without the right to mount.
            eprintln!("SKIPPED: mounting a loop device was refused: {}", stderr(&mount));
            return None;
        }
        Some(Reflinks { dir })
    }
}

impl Drop for Reflinks {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

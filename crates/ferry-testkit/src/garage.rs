//! A real Garage object store (S3-compatible, <https://garagehq.deuxfleurs.fr>)
//! on loopback: one node, or a cluster whose nodes can be killed and
//! restarted, each in a temporary directory that goes when it is dropped.
//!
//! The binary is `$FERRY_GARAGE`, else whatever `scripts/garage-bin` prints
//! (which builds Garage v2 once if none is found). A missing binary fails
//! the test: a test that skips itself proves nothing. curl is needed too:
//! the harness checks with it that every node serves the bucket.

use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};

use crate::Rng;

/// The bucket created at start, and the name of the key allowed on it.
const BUCKET: &str = "ferry-test";
/// The `s3_region` of every node: S3 requests must be signed for it.
const REGION: &str = "garage";
/// How long one `garage` command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long nodes may take to come up and see each other.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running Garage cluster of one or more nodes on 127.0.0.1, with a
/// bucket and a key that may read, write and own it. Nodes are killed
/// (SIGKILL) when this is dropped.
pub struct Garage {
    bin: &'static Binary,
    nodes: Vec<Node>,
    /// Every node's, claimed by [`claim_ports`] until this is dropped.
    ports: Vec<u16>,
    key_id: String,
    secret: String,
    admin_token: String,
    // Last, so that it is removed after the nodes are gone.
    dir: tempfile::TempDir,
}

struct Node {
    /// `<hex id>@127.0.0.1:<rpc port>`, known once the node has started.
    id: String,
    config: PathBuf,
    log: PathBuf,
    s3_port: u16,
    admin_port: u16,
    /// `None` while killed.
    child: Option<Child>,
}

struct Binary {
    path: PathBuf,
    /// `sqlite` where compiled in (the engine Garage's quick start uses),
    /// else `lmdb`.
    db_engine: &'static str,
}

impl Garage {
    /// One node with replication factor 1.
    pub fn single() -> Result<Garage> {
        Garage::cluster(1)
    }

    /// `nodes` nodes, each with its own RPC, S3 and admin ports, connected,
    /// given a role in the layout and seen up by every node before this
    /// returns. The replication factor is `nodes` up to 3, so with three
    /// nodes every object is on all of them and any two are a quorum.
    pub fn cluster(nodes: usize) -> Result<Garage> {
        ensure!(nodes > 0, "a Garage cluster needs at least one node");
        let bin = binary()?;
        let dir = tempfile::Builder::new().prefix("ferry-garage-").tempdir().context("create a temporary directory")?;
        let rpc_secret = random_secret()?;
        let admin_token = random_secret()?;
        let ports = claim_ports(3 * nodes)?;
        let mut garage = Garage { bin, nodes: Vec::with_capacity(nodes), ports: ports.clone(), key_id: String::new(), secret: String::new(), admin_token, dir };
        for (i, ports) in ports.chunks(3).enumerate() {
            let node_dir = garage.dir.path().join(format!("node{i}"));
            fs::create_dir(&node_dir).with_context(|| format!("create {}", node_dir.display()))?;
            let config = node_dir.join("garage.toml");
            let toml = format!(
                r#"metadata_dir = "{dir}/meta"
data_dir = "{dir}/data"
db_engine = "{engine}"
replication_factor = {replication}
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{rpc_secret}"

[s3_api]
api_bind_addr = "127.0.0.1:{s3}"
s3_region = "{REGION}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "{token}"
"#,
                dir = node_dir.display(),
                engine = bin.db_engine,
                replication = nodes.min(3),
                rpc = ports[0],
                s3 = ports[1],
                admin = ports[2],
                token = garage.admin_token,
            );
            fs::write(&config, toml).with_context(|| format!("write {}", config.display()))?;
            let log = node_dir.join("garage.log");
            garage.nodes.push(Node { id: String::new(), config, log, s3_port: ports[1], admin_port: ports[2], child: None });
            garage.spawn(i)?;
        }
        garage.configure().map_err(|e| garage.with_logs(e))?;
        Ok(garage)
    }

    /// The S3 endpoint of node 0, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.nodes[0].s3_port)
    }

    /// Every node's S3 endpoint, in node order.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| format!("http://127.0.0.1:{}", n.s3_port)).collect()
    }

    /// Every node's admin API endpoint (Garage's HTTP API for what the
    /// `garage` command does), in node order.
    pub fn admin_endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| format!("http://127.0.0.1:{}", n.admin_port)).collect()
    }

    /// The bearer token of the admin API.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The bucket created at start.
    pub fn bucket(&self) -> &str {
        BUCKET
    }

    /// The access key id of the key that may read, write and own
    /// [`bucket`](Self::bucket).
    pub fn access_key_id(&self) -> &str {
        &self.key_id
    }

    /// That key's secret.
    pub fn secret_access_key(&self) -> &str {
        &self.secret
    }

    /// The region requests must be signed for.
    pub fn region(&self) -> &str {
        REGION
    }

    /// Kills node `i` (SIGKILL: a crash, not a shutdown). Its data stays
    /// for [`restart_node`](Self::restart_node).
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again on its data and ports, and waits until every
    /// running node sees every running node up and serves the bucket.
    pub fn restart_node(&mut self, i: usize) -> Result<()> {
        ensure!(self.nodes[i].child.is_none(), "garage node {i} is running");
        self.spawn(i)?;
        self.rejoin(i).map_err(|e| self.with_logs(e))
    }

    /// Connects restarted node `i` to the running nodes, and waits as
    /// [`restart_node`](Self::restart_node) says.
    fn rejoin(&mut self, i: usize) -> Result<()> {
        for j in self.running().into_iter().filter(|&j| j != i) {
            self.link(i, j)?;
        }
        self.wait_all_up()?;
        self.wait_s3()
    }

    /// Connects nodes `a` and `b` both ways. A node counts a peer up only
    /// over a connection it opened itself, and left alone opens one only at
    /// its next retry: up to 30 s away once it has failed to reach a killed
    /// node, and a layout applied meanwhile reaches the peer only at the
    /// next exchange of status, 10 s later.
    fn link(&mut self, a: usize, b: usize) -> Result<()> {
        for (from, to) in [(a, b), (b, a)] {
            let peer = self.nodes[to].id.clone();
            self.retry(&format!("node {from} to connect to node {to} ({peer})"), |g| g.garage(from, &["node", "connect", &peer]))?;
        }
        Ok(())
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        // Appended to, so that a restarted node's log follows its first life.
        let log = File::options().create(true).append(true).open(&node.log).with_context(|| format!("open {}", node.log.display()))?;
        let child = self.bin.command(&node.config).arg("server").stdout(log.try_clone()?).stderr(log).spawn();
        node.child = Some(child.with_context(|| format!("start {}", self.bin.path.display()))?);
        Ok(())
    }

    /// Connects every node to every other, applies a layout with all of
    /// them, waits until they all see each other, then creates the bucket
    /// and the key and waits until every node serves it.
    fn configure(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            // The node writes its key file as it starts.
            self.nodes[i].id = self.retry(&format!("node {i} to write its id"), |g| g.garage(i, &["node", "id", "-q"]).map(|s| s.trim().to_owned()))?;
        }
        for i in 0..self.nodes.len() {
            (0..i).try_for_each(|j| self.link(i, j))?;
        }
        let hex_ids: Vec<String> = self.nodes.iter().map(|n| n.id.split_once('@').map_or(n.id.clone(), |(hex, _)| hex.to_owned())).collect();
        let mut assign = vec!["layout", "assign", "-z", "dc1", "-c", "1G"];
        assign.extend(hex_ids.iter().map(String::as_str));
        // Retried: a lone node has its id before it listens for commands.
        self.retry("node 0 to take the layout", |g| g.garage(0, &assign))?;
        self.garage(0, &["layout", "apply", "--version", "1"])?;
        self.wait_all_up()?;
        self.garage(0, &["bucket", "create", BUCKET])?;
        let created = self.garage(0, &["key", "create", BUCKET])?;
        self.key_id = field(&created, "Key ID:")?;
        self.secret = field(&created, "Secret key:")?;
        self.garage(0, &["bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", BUCKET])?;
        self.wait_s3()
    }

    /// Waits until every running node counts at least as many storage nodes
    /// up as are running (so it has the layout). At least: a node killed a
    /// moment ago may still count.
    fn wait_all_up(&mut self) -> Result<()> {
        let running = self.running();
        let want = running.len();
        for i in running {
            self.retry(&format!("node {i} to see {want} nodes up"), |g| {
                // Read whatever the exit status: `health` fails while too few
                // nodes are up for a quorum, as when all restart one by one.
                let (_, health, stderr) = g.run(i, &["health"])?;
                let up: usize = field(&health, "Storage nodes up:").context(stderr)?.parse()?;
                ensure!(up >= want, "{up} of {want} nodes up:\n{health}");
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Waits until every running node lets the key at the bucket over S3. A
    /// node checks S3 requests against its own copy of keys and buckets,
    /// which a write acknowledged by the others may not have reached yet.
    fn wait_s3(&mut self) -> Result<()> {
        for i in self.running() {
            let url = format!("http://127.0.0.1:{}/{BUCKET}", self.nodes[i].s3_port);
            self.retry(&format!("node {i} to serve the bucket"), |g| {
                // HeadBucket: answered from the node's own tables alone. Garage
                // requires the content hash header, which curl 7.88 does not send.
                let out = Command::new("curl")
                    .args(["--silent", "--show-error", "--fail", "--head", "--max-time", "5"])
                    .arg("--aws-sigv4")
                    .arg(format!("aws:amz:{REGION}:s3"))
                    .arg("--user")
                    .arg(format!("{}:{}", g.key_id, g.secret))
                    .args(["--header", "x-amz-content-sha256: UNSIGNED-PAYLOAD", &url])
                    .output()?;
                ensure!(out.status.success(), "HEAD {url}: {}", String::from_utf8_lossy(&out.stderr).trim());
                Ok(())
            })?;
        }
        Ok(())
    }

    /// The nodes not killed.
    fn running(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].child.is_some()).collect()
    }

    /// Runs `garage -c <node i's config> args`, which talks to node `i` over
    /// RPC; returns its stdout, or an error with its output.
    fn garage(&self, i: usize, args: &[&str]) -> Result<String> {
        let (status, stdout, stderr) = self.run(i, args)?;
        ensure!(status.success(), "garage {} ({status}): {}", args.join(" "), format!("{}\n{}", stderr.trim(), stdout.trim()).trim());
        Ok(stdout)
    }

    /// Runs `garage -c <node i's config> args` for at most
    /// [`COMMAND_TIMEOUT`]; returns its exit status, stdout and stderr.
    fn run(&self, i: usize, args: &[&str]) -> Result<(ExitStatus, String, String)> {
        let mut child = self
            .bin
            .command(&self.nodes[i].config)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {}", self.bin.path.display()))?;
        // Polled rather than waited on, to bound it; its output is small
        // enough for the pipes to hold meanwhile.
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("garage {} took over {COMMAND_TIMEOUT:?}", args.join(" "));
            }
            sleep(Duration::from_millis(5));
        };
        let (mut stdout, mut stderr) = (String::new(), String::new());
        child.stdout.take().context("stdout")?.read_to_string(&mut stdout)?;
        child.stderr.take().context("stderr")?.read_to_string(&mut stderr)?;
        Ok((status, stdout, stderr))
    }

    /// Tries `attempt` until it succeeds or [`READY_TIMEOUT`] has passed;
    /// fails at once if a node that should be running has exited.
    fn retry<T>(&mut self, what: &str, mut attempt: impl FnMut(&Garage) -> Result<T>) -> Result<T> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let error = match attempt(self) {
                Ok(t) => return Ok(t),
                Err(e) => e,
            };
            for (i, node) in self.nodes.iter_mut().enumerate() {
                if let Some(status) = node.child.as_mut().map(Child::try_wait).transpose()?.flatten() {
                    node.child = None;
                    bail!("garage node {i} exited ({status}) while waiting for {what}");
                }
            }
            if Instant::now() > deadline {
                return Err(error.context(format!("waited {READY_TIMEOUT:?} for {what}")));
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// `error` with the end of every node's log.
    fn with_logs(&self, error: anyhow::Error) -> anyhow::Error {
        let mut logs = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let text = fs::read_to_string(&node.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            // After a panic, its message rather than the backtrace that ends the log.
            let end = match lines.iter().rposition(|l| l.contains("==== PANIC")) {
                Some(p) => &lines[p..lines.len().min(p + 3)],
                None => &lines[lines.len().saturating_sub(15)..],
            };
            logs += &format!("\n--- node {i}\n{}", end.join("\n"));
        }
        error.context(format!("garage failed; the end of each node's log:{logs}"))
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
        for port in &self.ports {
            let _ = fs::remove_file(claims_dir().join(port.to_string()));
        }
    }
}

impl Binary {
    /// `garage -c config`, in an environment without `GARAGE_*` variables:
    /// they override the config, and `GARAGE_RPC_HOST` would send the
    /// commands to some other cluster.
    fn command(&self, config: &Path) -> Command {
        let mut command = Command::new(&self.path);
        command.arg("-c").arg(config).env("NO_COLOR", "1").stdin(Stdio::null());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("GARAGE_") {
                command.env_remove(name);
            }
        }
        command
    }
}

/// The garage binary and the metadata engine to use, found once per
/// process (which also checks that curl is there).
fn binary() -> Result<&'static Binary> {
    static BINARY: OnceLock<Binary> = OnceLock::new();
    if let Some(bin) = BINARY.get() {
        return Ok(bin);
    }
    let path = match std::env::var_os("FERRY_GARAGE") {
        Some(path) => PathBuf::from(path),
        None => {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/garage-bin");
            // Its stderr is the build's progress, if it has to build.
            let out = Command::new(&script).stderr(Stdio::inherit()).output().with_context(|| format!("run {}", script.display()))?;
            ensure!(out.status.success(), "{} found no garage binary and could not build one ({})", script.display(), out.status);
            PathBuf::from(String::from_utf8(out.stdout)?.trim())
        }
    };
    let out = Command::new(&path)
        .arg("--version")
        .output()
        .with_context(|| format!("run {} --version (set FERRY_GARAGE to a Garage v2 binary, or unset it)", path.display()))?;
    // "garage cargo:2.5.0 [features: k2v, lmdb, ...]", or "garage v2.5.0 [...]" from a release.
    let version = String::from_utf8_lossy(&out.stdout).into_owned();
    let number = version.split_whitespace().nth(1).unwrap_or_default();
    ensure!(
        out.status.success() && number.trim_start_matches("cargo:").trim_start_matches('v').starts_with("2."),
        "{} is not Garage v2: {version}",
        path.display()
    );
    Command::new("curl").arg("--version").output().context("run curl, which the Garage harness checks S3 with")?;
    let features = version.split("[features:").nth(1).unwrap_or_default();
    let db_engine = ["sqlite", "lmdb"]
        .into_iter()
        .find(|e| features.split(|c: char| !c.is_alphanumeric()).any(|f| f == *e))
        .ok_or_else(|| anyhow!("{} has neither sqlite nor lmdb: {version}", path.display()))?;
    Ok(BINARY.get_or_init(|| Binary { path, db_engine }))
}

/// The value after `label` on the first line that starts with it, as in
/// Garage's tables (`Key ID:   GK...`).
fn field(text: &str, label: &str) -> Result<String> {
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| anyhow!("no {label:?} in garage's output:\n{text}"))
}

/// Claims `n` distinct ports that are free on 127.0.0.1, for nodes to bind
/// a moment later. Each is claimed with a file in [`claims_dir`] that holds
/// the claiming process's id, so that harnesses in other tests and other
/// processes do not pick it, not even while its node is down between a kill
/// and a restart. Ports are drawn at random from 10000 up to the kernel's
/// range for the local ends of connections: any connection, such as a
/// `garage` command's, could take one from that range before its node
/// binds it.
fn claim_ports(n: usize) -> Result<Vec<u16>> {
    let range = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").context("read the kernel's port range")?;
    let ephemeral: u16 = range.split_whitespace().next().and_then(|p| p.parse().ok()).context("parse the kernel's port range")?;
    ensure!(ephemeral > 11_000, "the kernel's port range for connections starts at {ephemeral}: no room below it for garage's ports");
    let dir = claims_dir();
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let mut rng = Rng::new(u64::from_le_bytes(random_bytes::<8>()?));
    let mut ports = Vec::with_capacity(n);
    for _ in 0..100 * n {
        if ports.len() == n {
            break;
        }
        let port = 10_000 + rng.below(u64::from(ephemeral - 10_000)) as u16;
        if claim(&dir.join(port.to_string())) {
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                ports.push(port);
            } else {
                let _ = fs::remove_file(dir.join(port.to_string()));
            }
        }
    }
    ensure!(ports.len() == n, "found only {} of {n} free ports below {ephemeral}", ports.len());
    Ok(ports)
}

/// Where ports are claimed, one file per port.
fn claims_dir() -> PathBuf {
    std::env::temp_dir().join("ferry-garage-ports")
}

/// Creates the claim file `path` with this process's id; false if a live
/// process holds it. The claim of a process that has gone (killed before it
/// could drop its `Garage`) is taken over.
fn claim(path: &Path) -> bool {
    for _ in 0..2 {
        match File::options().write(true).create_new(true).open(path) {
            Ok(mut file) => return write!(file, "{}", std::process::id()).is_ok(),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                // Empty while its claimer is still writing it.
                let holder = fs::read_to_string(path).unwrap_or_default();
                if holder.is_empty() || Path::new("/proc").join(holder.trim()).exists() {
                    return false;
                }
                let _ = fs::remove_file(path);
            }
            Err(_) => return false,
        }
    }
    false
}

/// `N` random bytes from the kernel.
fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0; N];
    File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

/// 32 random bytes, in hex: a secret as Garage takes them.
fn random_secret() -> Result<String> {
    Ok(random_bytes::<32>()?.iter().map(|b| format!("{b:02x}")).collect())
}

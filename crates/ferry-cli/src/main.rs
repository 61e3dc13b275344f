//! `ferry`: the command line. It parses arguments, shows progress and
//! prints results; the work happens in the library crates.

mod progress;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use ferry_store::{RevisionSpec, Store};
use serde_json::json;

#[derive(Parser)]
#[command(name = "ferry", version, about = "Stores and moves large ML artifacts by content-defined chunks")]
struct Cli {
    /// The store directory (default: FERRY_STORE, else a per-user data directory).
    #[arg(long, global = true, env = "FERRY_STORE")]
    store: Option<PathBuf>,
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an empty store.
    Init,
    /// Record the files under a directory as a new revision of a repository.
    Commit {
        /// Repository, as owner/name.
        repo: String,
        /// Directory whose regular files are recorded.
        dir: PathBuf,
        #[arg(short, long)]
        message: String,
        #[arg(long, default_value = "main")]
        branch: String,
        /// Author recorded in the revision (default: FERRY_AUTHOR, else $USER).
        #[arg(long, env = "FERRY_AUTHOR")]
        author: Option<String>,
        /// Store the content of symlinked files instead of refusing symlinks.
        #[arg(long)]
        follow_symlinks: bool,
    },
    /// Show the history of a branch.
    Log {
        /// owner/name[@branch-or-revision]
        target: String,
        #[arg(short = 'n', long, default_value_t = 50)]
        limit: usize,
    },
    /// List the files of a revision.
    Ls { target: String },
    /// Write every file of a revision into a directory.
    Export { target: String, dir: PathBuf },
    /// Write one file, or a byte range of it, to stdout: `cat REPO@REV PATH`
    /// from the local store, or `cat HUB REPO@REV PATH` straight from a hub.
    Cat {
        /// REPO@REV, or HUB (host:port) when three arguments are given.
        first: String,
        second: String,
        third: Option<String>,
        /// Bytes START..END (END exclusive; either may be omitted).
        #[arg(long)]
        range: Option<String>,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Run a hub: serve this store over QUIC and TLS-over-TCP on one port.
    Serve {
        #[arg(long, default_value = "0.0.0.0:4433")]
        listen: std::net::SocketAddr,
        /// Follow another hub: mirror its repositories into this store,
        /// again every --mirror-interval seconds (--token, --transport,
        /// --known-hubs and --ca apply to that connection).
        #[arg(long, value_name = "HUB")]
        mirror_of: Option<String>,
        /// With --mirror-of: only repositories matching this glob (repeatable; default every one the token reads).
        #[arg(long = "repo", requires = "mirror_of")]
        repos: Vec<String>,
        /// With --mirror-of: the longest a pass waits for a change on the
        /// followed hub, and the wait before retrying a failed pass.
        #[arg(long, value_parser = parse_duration, default_value = "10s")]
        mirror_interval: std::time::Duration,
        #[command(flatten)]
        net: NetArgs,
        /// Reclaim unreachable data inside the hub this often (e.g. 30m, 6h;
        /// `ferry gc` cannot run while the hub holds the store). Pushes in
        /// progress keep what they rely on.
        #[arg(long, value_parser = parse_duration)]
        gc_every: Option<std::time::Duration>,
        /// Close connections that have had no request in progress for this long.
        #[arg(long, value_parser = parse_duration, default_value = "30s")]
        idle_timeout: std::time::Duration,
        /// Serve at most this many connections at once (QUIC and TCP; a TCP
        /// client opens one per request it has in flight, about 16 at most). Clients
        /// beyond it are told the hub is busy.
        #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
        max_connections: u32,
    },
    /// Copy the branches of one hub's repositories to another hub, moving
    /// only what the destination lacks; revisions keep their ids.
    Mirror {
        /// The hub to copy from (host:port).
        source: String,
        /// The hub to copy to (host:port).
        destination: String,
        /// Only repositories matching this glob (repeatable; default every one the source token reads).
        #[arg(long = "repo")]
        repos: Vec<String>,
        /// Keep following the source until stopped: each pass waits (up to
        /// --interval) for the source to change.
        #[arg(long)]
        watch: bool,
        #[arg(long, value_parser = parse_duration, default_value = "10s")]
        interval: std::time::Duration,
        /// Token for the source hub (read scope; default --token).
        #[arg(long, env = "FERRY_FROM_TOKEN", hide_env_values = true)]
        from_token: Option<String>,
        /// Token for the destination hub (write scope; default --token).
        #[arg(long, env = "FERRY_TO_TOKEN", hide_env_values = true)]
        to_token: Option<String>,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Send a local branch to a hub (only what the hub lacks).
    Push {
        hub: String,
        repo: String,
        #[arg(long, default_value = "main")]
        branch: String,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Fetch a hub's branch into the local store (only what is missing locally).
    Pull {
        hub: String,
        repo: String,
        #[arg(long, default_value = "main")]
        branch: String,
        /// Only files matching this glob (repeatable); records a partial local revision.
        #[arg(long)]
        include: Vec<String>,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Manage the hub's access tokens (works while the hub runs).
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Make repositories readable without a token, or private again.
    Visibility {
        /// Repository glob, e.g. org/llama or 'org/*'.
        pattern: String,
        #[arg(value_parser = ["public", "private"])]
        visibility: String,
    },
    /// Show what the store holds and how much deduplication saves.
    Stats,
    /// Re-hash everything and report missing or corrupt data.
    Fsck,
    /// Reclaim chunks, trees and revisions no branch reaches.
    Gc,
    /// List repositories.
    Repos,
    /// Manage branches.
    Branch {
        #[command(subcommand)]
        action: BranchAction,
    },
}

#[derive(clap::Args)]
struct NetArgs {
    /// Access token (from `ferry token create` on the hub).
    #[arg(long, env = "FERRY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// auto tries QUIC first and falls back to TLS over TCP.
    #[arg(long, default_value = "auto", value_parser = ["auto", "quic", "tcp"])]
    transport: String,
    /// Known-hubs file for pinning certificates (default ~/.config/ferry/known_hubs).
    #[arg(long, env = "FERRY_KNOWN_HUBS")]
    known_hubs: Option<PathBuf>,
    /// Trust hubs whose certificate chains to these CA certificates (PEM) instead of pinning.
    #[arg(long)]
    ca: Option<PathBuf>,
}

impl NetArgs {
    fn options(&self, hub: &str) -> ferry_net::ConnectOptions {
        let trust = match (&self.ca, &self.known_hubs) {
            (Some(ca), _) => ferry_net::tls::Trust::CaBundle(ca.clone()),
            (None, Some(f)) => ferry_net::tls::Trust::KnownHubs(f.clone()),
            (None, None) => ferry_net::tls::Trust::KnownHubs(dirs::config_dir().unwrap_or_else(|| PathBuf::from(".")).join("ferry").join("known_hubs")),
        };
        let transport = match self.transport.as_str() {
            "quic" => ferry_net::TransportChoice::Quic,
            "tcp" => ferry_net::TransportChoice::Tcp,
            _ => ferry_net::TransportChoice::Auto,
        };
        ferry_net::ConnectOptions { hub: hub.into(), token: self.token.clone(), transport, trust }
    }
}

/// Connects to a hub, telling the user when its certificate was pinned on
/// first use.
async fn connect(opts: &ferry_net::ConnectOptions) -> Result<ferry_net::Client, ferry_net::NetError> {
    let client = ferry_net::Client::connect(opts).await?;
    if let (Some(seen), ferry_net::tls::Trust::KnownHubs(file)) = (client.pinned(), &opts.trust) {
        eprintln_quiet(&format!("ferry: pinned {} with certificate {seen} in {}", opts.hub, file.display()));
    }
    Ok(client)
}

/// Writes a line to stderr, ignoring a closed stderr (a hub keeps serving).
fn eprintln_quiet(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

#[derive(Subcommand)]
enum TokenAction {
    /// Create a token; it is printed once and only its hash is kept.
    Create {
        /// Repository glob the token covers, e.g. 'org/*'.
        #[arg(long)]
        repo: String,
        #[arg(long, value_parser = ["read", "write"])]
        scope: String,
    },
    /// List tokens (ids, patterns, scopes; never secrets).
    List,
    /// Revoke a token by id.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum BranchAction {
    /// List the branches of a repository.
    List { repo: String },
    /// Create a branch at a revision.
    Create { repo: String, branch: String, from: String },
    /// Delete a branch (its data is reclaimed by the next gc).
    Delete { repo: String, branch: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("{e:#}");
            if json {
                println!("{}", json!({ "error": msg }));
            }
            eprintln!("ferry: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn store_path(cli: &Cli) -> Result<PathBuf> {
    match &cli.store {
        Some(p) => Ok(p.clone()),
        None => Ok(dirs::data_dir().context("no --store given and no per-user data directory")?.join("ferry")),
    }
}

fn print(json: bool, value: serde_json::Value, text: impl FnOnce() -> String) {
    if json {
        println!("{value}");
    } else {
        println!("{}", text());
    }
}

fn parse_range(s: &str, size: u64) -> Result<(u64, u64)> {
    let (a, b) = s.split_once("..").with_context(|| format!("--range {s:?} is not START..END"))?;
    let a: u64 = if a.is_empty() { 0 } else { a.parse().with_context(|| format!("--range start {a:?} is not a number"))? };
    let b: u64 = if b.is_empty() { size } else { b.parse().with_context(|| format!("--range end {b:?} is not a number"))? };
    Ok((a, b))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn transfer_summary(verb: &str, t: &ferry_transfer::Transfer, secs: f64) -> String {
    if t.up_to_date {
        return format!("already up to date at {}", &t.head[..12]);
    }
    format!(
        "{verb} {} revisions over {}: {} chunks ({} raw, {} on the wire), {} chunks already there; {} sent, {} received in {secs:.1}s; head {}",
        t.revisions,
        t.transport,
        t.chunks_moved,
        progress::bytes(t.raw_bytes_moved),
        progress::bytes(t.chunk_bytes_moved),
        t.chunks_already_there,
        progress::bytes(t.wire_bytes_sent),
        progress::bytes(t.wire_bytes_received),
        &t.head[..12]
    )
}

fn run(cli: Cli) -> Result<ExitCode> {
    let path = store_path(&cli)?;
    let json = cli.json;
    match cli.command {
        Command::Init => {
            Store::init(&path)?;
            print(json, json!({ "store": path }), || format!("initialised an empty ferry store in {}", path.display()));
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { action } => admin_token(&path, action, json),
        Command::Visibility { pattern, visibility } => admin_visibility(&path, &pattern, &visibility, json),
        Command::Cat { first, second, third: Some(file), range, net } => remote_cat(&first, &second, &file, range.as_deref(), &net),
        Command::Serve { listen, mirror_of, repos, mirror_interval, net, gc_every, idle_timeout, max_connections } => {
            let follow = mirror_of.map(|hub| Follow { options: net.options(&hub), hub, patterns: patterns(repos), interval: mirror_interval });
            let limits = Limits { idle_timeout, max_connections: max_connections as usize };
            serve(Arc::new(Store::open(&path)?), listen, follow, gc_every, limits, json)
        }
        Command::Mirror { source, destination, repos, watch, interval, from_token, to_token, net } => {
            let mut from = net.options(&source);
            let mut to = net.options(&destination);
            from.token = from_token.or(from.token);
            to.token = to_token.or(to.token);
            mirror(json, from, to, patterns(repos), watch.then_some(interval))
        }
        Command::Push { hub, repo, branch, net } => {
            let store = Arc::new(Store::open(&path)?);
            transfer(json, "pushed", &hub, &net, async |client, bar| {
                ferry_transfer::push(client, &store, &ferry_transfer::PushOptions { repo, branch }, bar).await
            })
        }
        Command::Pull { hub, repo, branch, include, net } => {
            let store = Arc::new(Store::open(&path)?);
            transfer(json, "pulled", &hub, &net, async |client, bar| {
                ferry_transfer::pull(client, &store, &ferry_transfer::PullOptions { repo, branch, include }, bar).await
            })
        }
        cmd => local(&Store::open(&path)?, cmd, json),
    }
}

fn admin_token(path: &std::path::Path, action: TokenAction, json: bool) -> Result<ExitCode> {
    use ferry_service::{AccessFile, Scope};
    match action {
        TokenAction::Create { repo, scope } => {
            let scope = if scope == "write" { Scope::Write } else { Scope::Read };
            let token = AccessFile::edit(path, |access| access.create_token(&repo, scope, now()))?;
            print(json, json!({ "token": token, "repo": repo, "scope": scope }), || token.clone());
        }
        TokenAction::List => {
            let access = AccessFile::of_store(path)?;
            if json {
                println!("{}", serde_json::to_value(&access.tokens)?);
            } else {
                for t in &access.tokens {
                    println!("{}  {:<5}  {}", t.id, if t.scope == Scope::Write { "write" } else { "read" }, t.repo);
                }
            }
        }
        TokenAction::Revoke { id } => {
            AccessFile::edit(path, |access| access.revoke(&id))?;
            print(json, json!({ "revoked": id }), || format!("revoked token {id}"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn admin_visibility(path: &std::path::Path, pattern: &str, visibility: &str, json: bool) -> Result<ExitCode> {
    ferry_service::AccessFile::edit(path, |access| {
        access.set_public(pattern, visibility == "public");
        Ok(())
    })?;
    print(json, json!({ "pattern": pattern, "visibility": visibility }), || format!("{pattern} is now {visibility}"));
    Ok(ExitCode::SUCCESS)
}

fn remote_cat(hub: &str, target: &str, file: &str, range: Option<&str>, net: &NetArgs) -> Result<ExitCode> {
    let (repo, rev) = target.split_once('@').unwrap_or((target, "main"));
    ferry_core::names::check_repo_name(repo)?;
    runtime()?.block_on(async {
        let client = connect(&net.options(hub)).await?;
        let range = match range {
            Some(r) => {
                // The size is known only after the revision is read: resolve open ends then.
                let (a, b) = r.split_once("..").with_context(|| format!("--range {r:?} is not START..END"))?;
                let a: u64 = if a.is_empty() { 0 } else { a.parse().with_context(|| format!("--range start {a:?} is not a number"))? };
                let b: Option<u64> = if b.is_empty() { None } else { Some(b.parse().with_context(|| format!("--range end {b:?} is not a number"))?) };
                Some((a, b))
            }
            None => None,
        };
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let read = ferry_transfer::read_range(&client, repo, rev, file, range, &mut out).await;
        client.close().await;
        read?;
        out.flush()?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The repository patterns given, or every repository.
fn patterns(repos: Vec<String>) -> Vec<String> {
    if repos.is_empty() {
        vec!["*/*".into()]
    } else {
        repos
    }
}

/// A hub this hub follows (`serve --mirror-of`).
struct Follow {
    hub: String,
    options: ferry_net::ConnectOptions,
    patterns: Vec<String>,
    interval: std::time::Duration,
}

/// `wire`: (negotiation bytes, all wire bytes), where known.
fn mirror_summary(r: &ferry_transfer::mirror::MirrorReport, wire: Option<(u64, u64)>, secs: f64) -> String {
    let mut s = format!(
        "mirrored {} repositories: {} branches updated ({} revisions, {} chunks, {} raw, {} on the wire), {} up to date",
        r.repositories,
        r.branches_updated,
        r.revisions,
        r.chunks_moved,
        progress::bytes(r.raw_bytes_moved),
        progress::bytes(r.chunk_bytes_moved),
        r.branches_up_to_date
    );
    if r.conflicts + r.refused > 0 {
        s.push_str(&format!(", {} conflicts, {} refused", r.conflicts, r.refused));
    }
    if let Some((negotiation, total)) = wire {
        s.push_str(&format!("; {} on the wire, {} of it negotiation, in {secs:.1}s", progress::bytes(total), progress::bytes(negotiation)));
    }
    for b in &r.changed {
        match &b.detail {
            Some(d) => s.push_str(&format!("\n  {}@{}: {}: {d}", b.repo, b.branch, b.status)),
            None => s.push_str(&format!("\n  {}@{}: {} ({} revisions, {} chunks)", b.repo, b.branch, b.status, b.revisions, b.chunks_moved)),
        }
    }
    s
}

/// Wire bytes in each direction of both connections, and how many of them
/// were chunk records (data, as opposed to negotiation and framing).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Wire {
    from: (u64, u64),
    to: (u64, u64),
    data: u64,
}

impl Wire {
    fn of(a: &ferry_net::Client, b: &ferry_net::Client) -> Wire {
        Wire { from: a.wire_bytes(), to: b.wire_bytes(), data: a.chunk_bytes() + b.chunk_bytes() }
    }
    fn since(self, before: Wire) -> Wire {
        let d = |x: u64, y: u64| x.saturating_sub(y);
        Wire {
            from: (d(self.from.0, before.from.0), d(self.from.1, before.from.1)),
            to: (d(self.to.0, before.to.0), d(self.to.1, before.to.1)),
            data: d(self.data, before.data),
        }
    }
    fn total(&self) -> u64 {
        self.from.0 + self.from.1 + self.to.0 + self.to.1
    }
}

/// Bytes on the wire that were not chunk data, and all of them.
fn negotiation(w: Wire) -> (u64, u64) {
    (w.total().saturating_sub(w.data), w.total())
}

fn mirror_json(r: &ferry_transfer::mirror::MirrorReport, w: Wire, secs: f64) -> serde_json::Value {
    let (negotiation_bytes, wire_bytes) = negotiation(w);
    let (from, to) = (w.from, w.to);
    let mut v = serde_json::to_value(r).unwrap_or_default();
    v["source_wire_bytes"] = json!({ "sent": from.0, "received": from.1 });
    v["destination_wire_bytes"] = json!({ "sent": to.0, "received": to.1 });
    v["wire_bytes"] = json!(wire_bytes);
    v["negotiation_bytes"] = json!(negotiation_bytes);
    v["seconds"] = json!(secs);
    v
}

fn mirror(
    json: bool,
    from: ferry_net::ConnectOptions,
    to: ferry_net::ConnectOptions,
    patterns: Vec<String>,
    watch: Option<std::time::Duration>,
) -> Result<ExitCode> {
    use ferry_transfer::mirror::{mirror_once, MirrorOptions, MirrorState};
    let opts = MirrorOptions { patterns, limits: Default::default() };
    runtime()?.block_on(async {
        let connect = async || -> Result<(ferry_net::Client, ferry_net::Client), ferry_transfer::Error> {
            let (a, b) = tokio::join!(connect(&from), connect(&to));
            Ok((a?, b?))
        };
        let bar = progress::Transfer::new(json);
        if let Some(interval) = watch {
            let mut last = Wire::default();
            let started = std::time::Instant::now();
            ferry_transfer::mirror::watch(connect, &opts, interval, &bar, |res, ends| {
                // Per pass: the bytes since the previous pass on these
                // connections (new connections start from zero).
                let now = ends.map(|(a, b)| Wire::of(a, b)).unwrap_or_default();
                let pass = if now >= last { now.since(last) } else { now };
                last = now;
                let secs = started.elapsed().as_secs_f64();
                match res {
                    Ok(r) if r.changed.is_empty() => {}
                    Ok(r) => print(json, mirror_json(r, pass, secs), || mirror_summary(r, Some(negotiation(pass)), secs)),
                    Err(e) => {
                        last = Wire::default();
                        print(json, json!({ "error": e.to_string() }), || format!("mirror pass failed: {e}; retrying"));
                    }
                }
            })
            .await;
            unreachable!("watching ends only when the process does");
        }
        let started = std::time::Instant::now();
        let (a, b) = connect().await?;
        let r = mirror_once(&a, &b, &opts, &mut MirrorState::default(), std::time::Duration::ZERO, &bar).await;
        tokio::join!(a.close(), b.close());
        bar.finish();
        let r = r?;
        let secs = started.elapsed().as_secs_f64();
        let w = Wire::of(&a, &b);
        print(json, mirror_json(&r, w, secs), || mirror_summary(&r, Some(negotiation(w)), secs));
        if !r.complete() {
            bail!("{} branches could not be mirrored (see above); nothing was overwritten", r.conflicts + r.refused);
        }
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

/// `90s`, `30m`, `6h`, `500ms` (a bare number is seconds).
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().map_err(|_| format!("{s:?} is not a duration like 90s, 30m or 6h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m, h or d)")),
    };
    if !(secs > 0.0 && secs < 1e9) {
        return Err(format!("{s:?} is not a positive duration"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// What one hub serves at most.
struct Limits {
    idle_timeout: std::time::Duration,
    max_connections: usize,
}

fn serve(
    store: Arc<Store>,
    listen: std::net::SocketAddr,
    follow: Option<Follow>,
    gc_every: Option<std::time::Duration>,
    limits: Limits,
    json: bool,
) -> Result<ExitCode> {
    let identity = ferry_net::tls::Identity::load_or_create(store.path())?;
    let fingerprint = identity.fingerprint.clone();
    let created = identity.created;
    // gc reports go to stderr: stdout carries only the listening line.
    let service = Arc::new(ferry_service::HubService::new(store.clone(), Arc::new(ferry_service::Access::for_store(store.path()))));
    // The access file must be readable before the hub starts.
    ferry_service::Access::for_store(store.path()).current()?;
    let gc = gc_every.map(|every| {
        let report = move |res: Result<ferry_store::GcReport, ferry_service::ServiceError>, took: std::time::Duration| match res {
            Ok(r) if json => eprintln!(
                "{}",
                json!({ "gc": { "chunks_removed": r.chunks_removed, "bytes_removed": r.bytes_removed, "tree_nodes_removed": r.nodes_removed,
                                "revisions_removed": r.revisions_removed, "chunks_kept": r.chunks_kept, "seconds": took.as_secs_f64() } })
            ),
            Ok(r) => eprintln!(
                "ferry: gc removed {} chunks ({}), {} tree nodes, {} revisions; kept {} chunks ({:.1}s)",
                r.chunks_removed,
                progress::bytes(r.bytes_removed),
                r.nodes_removed,
                r.revisions_removed,
                r.chunks_kept,
                took.as_secs_f64()
            ),
            Err(e) if json => eprintln!("{}", json!({ "gc": { "error": e.to_string() } })),
            Err(e) => eprintln!("ferry: gc failed: {e}"),
        };
        service.clone().collect_garbage_every(every, report)
    });
    runtime()?.block_on(async move {
        // Following another hub runs beside the accept loop, in this task.
        let follower = async {
            let Some(f) = follow else { return std::future::pending::<std::convert::Infallible>().await };
            use ferry_transfer::mirror::{watch, MirrorOptions};
            let opts = MirrorOptions { patterns: f.patterns, limits: Default::default() };
            let connect = async || Ok((connect(&f.options).await?, ferry_transfer::Local::new(&service)));
            let hub = f.hub;
            let interval = f.interval;
            watch(connect, &opts, f.interval, &(), |res, ends| match res {
                Ok(r) if r.changed.is_empty() => {}
                Ok(r) if json => eprintln_quiet(&json!({ "mirror_of": hub, "pass": r }).to_string()),
                Ok(r) => eprintln_quiet(&format!("ferry: mirror of {hub}: {}", mirror_summary(r, None, 0.0))),
                Err(e) if ends.is_none() => eprintln_quiet(&format!("ferry: mirror: {e}; retrying in {}s", interval.as_secs())),
                Err(e) => eprintln_quiet(&format!("ferry: mirror of {hub} failed: {e}; retrying")),
            })
            .await;
            unreachable!("watching ends only when the process does")
        };
        if let Some(gc) = gc {
            tokio::spawn(gc);
        }
        let opts = ferry_hub::ServeOptions { listen, idle_timeout: limits.idle_timeout, max_connections: limits.max_connections };
        let serving = ferry_hub::serve(service.clone(), &identity, opts, |addr| {
            print(json, json!({ "listen": addr.to_string(), "fingerprint": fingerprint, "new_identity": created }), || {
                format!(
                    "ferry hub listening on {addr} (QUIC and TLS over TCP)\ncertificate fingerprint: {fingerprint}{}",
                    if created { " (new: clients pin it on first use)" } else { "" }
                )
            });
            let _ = std::io::stdout().flush();
        });
        tokio::select! {
            served = serving => served?,
            never = follower => match never {},
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn transfer(
    json: bool,
    verb: &str,
    hub: &str,
    net: &NetArgs,
    op: impl AsyncFnOnce(&ferry_net::Client, &progress::Transfer) -> Result<ferry_transfer::Transfer, ferry_transfer::Error>,
) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let t = runtime()?.block_on(async {
        let client = connect(&net.options(hub)).await?;
        let bar = progress::Transfer::new(json);
        let t = op(&client, &bar).await;
        client.close().await;
        bar.finish();
        anyhow::Ok(t?)
    })?;
    let secs = started.elapsed().as_secs_f64();
    let mut v = serde_json::to_value(&t)?;
    v["seconds"] = json!(secs);
    print(json, v, || transfer_summary(verb, &t, secs));
    Ok(ExitCode::SUCCESS)
}

fn local(store: &Store, command: Command, json: bool) -> Result<ExitCode> {
    match command {
        Command::Commit { repo, dir, message, branch, author, follow_symlinks } => {
            let author = author.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "unknown".into());
            let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
            let opts = ferry_store::CommitOptions { message, author, time, follow_symlinks };
            let bar = progress::Ingest::new(json);
            let started = std::time::Instant::now();
            let c = store.write_session().commit_dir(&repo, &branch, &dir, &opts, &bar)?;
            bar.finish();
            let secs = started.elapsed().as_secs_f64();
            let t = &c.totals;
            print(
                json,
                json!({ "revision": c.revision.to_hex(), "repo": repo, "branch": branch, "files": c.files,
                        "bytes": t.size, "chunks": t.chunks, "new_chunks": t.new_chunks, "new_bytes": t.new_bytes,
                        "stored_bytes": t.stored_bytes, "new_tree_nodes": t.new_nodes, "seconds": secs }),
                || {
                    format!(
                        "{}\ncommitted {} files, {} to {repo}@{branch}: {} new ({} stored), {} already present",
                        c.revision,
                        c.files,
                        progress::bytes(t.size),
                        progress::bytes(t.new_bytes),
                        progress::bytes(t.stored_bytes),
                        progress::bytes(t.size - t.new_bytes)
                    )
                },
            );
        }
        Command::Log { target, limit } => {
            let (id, _) = store.resolve(&RevisionSpec::parse(&target)?)?;
            let log = store.log(id, limit)?;
            if json {
                let items: Vec<_> = log
                    .iter()
                    .map(|(id, r)| {
                        json!({ "revision": id.to_hex(), "parents": r.parents.iter().map(|p| p.to_hex()).collect::<Vec<_>>(),
                    "author": r.author, "time": r.time, "message": r.message, "files": r.entries.len(), "bytes": r.size() })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(items));
            } else {
                for (id, r) in log {
                    println!(
                        "revision {id}\nauthor   {}\ntime     {}\nfiles    {} ({})\n\n    {}\n",
                        r.author,
                        r.time,
                        r.entries.len(),
                        progress::bytes(r.size()),
                        r.message
                    );
                }
            }
        }
        Command::Ls { target } => {
            let (_, rev) = store.resolve(&RevisionSpec::parse(&target)?)?;
            if json {
                let items: Vec<_> =
                    rev.entries.iter().map(|e| json!({ "path": e.path, "size": e.size, "file_id": e.file_id.to_hex(), "executable": e.executable })).collect();
                println!("{}", serde_json::Value::Array(items));
            } else {
                for e in &rev.entries {
                    println!("{} {:>14} {}  {}", if e.executable { "x" } else { "-" }, e.size, e.file_id.short(), e.path);
                }
            }
        }
        Command::Export { target, dir } => {
            let (id, rev) = store.resolve(&RevisionSpec::parse(&target)?)?;
            let bar = progress::Read::new(json, rev.size());
            store.export(&rev, &dir, &bar)?;
            bar.finish();
            print(json, json!({ "revision": id.to_hex(), "files": rev.entries.len(), "bytes": rev.size(), "dir": dir }), || {
                format!("exported {} files ({}) of {} to {}", rev.entries.len(), progress::bytes(rev.size()), id.short(), dir.display())
            });
        }
        Command::Cat { first: target, second: path, third: None, range, .. } => {
            let (_, rev) = store.resolve(&RevisionSpec::parse(&target)?)?;
            let entry = rev.entry(&path).with_context(|| format!("{target} has no file {path:?}"))?;
            let (a, b) = match range {
                Some(r) => parse_range(&r, entry.size)?,
                None => (0, entry.size),
            };
            if a > b || b > entry.size {
                bail!(ferry_store::StoreError::BadRange { path, start: a, end: b, size: entry.size });
            }
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            if a == 0 && b == entry.size {
                store.read_file(entry, &mut out, &())?;
            } else {
                store.read_range(&entry.file_id, entry.size, a, b, &mut out, &())?;
            }
            out.flush()?;
        }
        Command::Stats => {
            let s = store.stats()?;
            let dedup = if s.unique_bytes > 0 { s.logical_bytes as f64 / s.unique_bytes as f64 } else { 1.0 };
            let compression = if s.stored_bytes > 0 { s.unique_bytes as f64 / s.stored_bytes as f64 } else { 1.0 };
            print(
                json,
                json!({ "repositories": s.repositories, "branches": s.branches, "revisions": s.revisions, "logical_bytes": s.logical_bytes,
                        "chunks": s.chunks, "unique_bytes": s.unique_bytes, "stored_bytes": s.stored_bytes, "tree_nodes": s.tree_nodes,
                        "disk_bytes": s.disk_bytes, "dedup_ratio": dedup, "compression_ratio": compression }),
                || {
                    format!(
                    "repositories   {}\nbranches       {}\nrevisions      {}\nlogical bytes  {}\nunique chunks  {} ({})\nstored bytes   {}\ntree nodes     {}\non disk        {}\ndedup ratio    {dedup:.2}x\ncompression    {compression:.2}x",
                    s.repositories, s.branches, s.revisions, progress::bytes(s.logical_bytes), s.chunks, progress::bytes(s.unique_bytes),
                    progress::bytes(s.stored_bytes), s.tree_nodes, progress::bytes(s.disk_bytes)
                )
                },
            );
        }
        Command::Fsck => {
            let bar = progress::Read::new(json, store.stats()?.stored_bytes);
            let rep = store.fsck(&|n| ferry_store::ReadProgress::advance(&bar, n))?;
            bar.finish();
            print(
                json,
                json!({ "ok": rep.problems.is_empty(), "chunks": rep.chunks_checked, "tree_nodes": rep.nodes_checked,
                        "revisions": rep.revisions_checked, "branches": rep.branches_checked, "problems": rep.problems }),
                || {
                    let mut s = format!(
                        "checked {} chunks, {} tree nodes, {} revisions, {} branches",
                        rep.chunks_checked, rep.nodes_checked, rep.revisions_checked, rep.branches_checked
                    );
                    for p in &rep.problems {
                        s.push_str(&format!("\nproblem: {p}"));
                    }
                    s.push_str(if rep.problems.is_empty() { "\nno problems found" } else { "\nthe store has problems" });
                    s
                },
            );
            if !rep.problems.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Gc => {
            let r = store.gc()?;
            print(
                json,
                json!({ "chunks_removed": r.chunks_removed, "bytes_removed": r.bytes_removed, "tree_nodes_removed": r.nodes_removed,
                        "revisions_removed": r.revisions_removed, "chunks_kept": r.chunks_kept }),
                || {
                    format!(
                        "removed {} chunks ({}), {} tree nodes, {} revisions; kept {} chunks",
                        r.chunks_removed,
                        progress::bytes(r.bytes_removed),
                        r.nodes_removed,
                        r.revisions_removed,
                        r.chunks_kept
                    )
                },
            );
        }
        Command::Repos => {
            let repos = store.repos()?;
            if json {
                println!("{}", serde_json::Value::Array(repos.iter().map(|r| json!({ "name": r.name, "created": r.created, "public": r.public })).collect()));
            } else {
                for r in repos {
                    println!("{}", r.name);
                }
            }
        }
        Command::Branch { action } => match action {
            BranchAction::List { repo } => {
                store.repo(&repo)?;
                let branches = store.branches(&repo)?;
                if json {
                    println!("{}", serde_json::Value::Array(branches.iter().map(|(b, id)| json!({ "branch": b, "revision": id.to_hex() })).collect()));
                } else {
                    for (b, id) in branches {
                        println!("{id}  {b}");
                    }
                }
            }
            BranchAction::Create { repo, branch, from } => {
                let (id, _) = store.resolve(&RevisionSpec { repo: repo.clone(), rev: from })?;
                store.update_branch(&repo, &branch, None, Some(id))?;
                print(json, json!({ "repo": repo, "branch": branch, "revision": id.to_hex() }), || format!("created {repo}@{branch} at {id}"));
            }
            BranchAction::Delete { repo, branch } => {
                let head = store.branch(&repo, &branch)?.with_context(|| format!("{repo} has no branch {branch:?}"))?;
                store.update_branch(&repo, &branch, Some(head), None)?;
                print(json, json!({ "repo": repo, "branch": branch, "deleted": head.to_hex() }), || format!("deleted {repo}@{branch} (was {head})"));
            }
        },
        Command::Init
        | Command::Token { .. }
        | Command::Visibility { .. }
        | Command::Serve { .. }
        | Command::Mirror { .. }
        | Command::Push { .. }
        | Command::Pull { .. }
        | Command::Cat { third: Some(_), .. } => {
            unreachable!("dispatched in run()")
        }
    }
    Ok(ExitCode::SUCCESS)
}

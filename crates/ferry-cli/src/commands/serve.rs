//! `ferry serve`: the hub, optionally following another hub and collecting
//! garbage on a schedule. Stdout carries only the listening line; what
//! happens later (gc runs, mirror passes) is reported on stderr.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use ferry_transfer::mirror::MirrorReport;
use serde::Serialize;

use super::gc::Collected;
use super::mirror::summary;
use crate::net::{connect, parse_duration, patterns, runtime, NetArgs};
use crate::output::{emit, emit_stderr, stderr_line, Report};

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on, for QUIC (UDP) and TLS over TCP alike.
    #[arg(long, default_value = "0.0.0.0:4433")]
    listen: SocketAddr,
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
    mirror_interval: Duration,
    /// Serve as a read replica of the store's bucket, whose writer is the
    /// hub HUB (where pushes are sent): pulls, range reads and the HTTP
    /// door read the bucket, and the bucket's journal is followed every
    /// --replica-interval. With --backend, a directory that holds no store
    /// yet is made from the bucket.
    #[arg(long, value_name = "HUB", conflicts_with_all = ["mirror_of", "gc_every"])]
    replica_of: Option<String>,
    /// With --replica-of: how often the bucket's journal is read for what
    /// the writer did.
    #[arg(long, value_parser = parse_duration, default_value = "1s", requires = "replica_of")]
    replica_interval: Duration,
    #[command(flatten)]
    backend: super::init::BackendArgs,
    #[command(flatten)]
    net: NetArgs,
    /// Reclaim unreachable data inside the hub this often (e.g. 30m, 6h;
    /// `ferry gc` cannot run while the hub holds the store). Pushes in
    /// progress keep what they rely on.
    #[arg(long, value_parser = parse_duration)]
    gc_every: Option<Duration>,
    /// Close connections that have had no request in progress for this long.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    idle_timeout: Duration,
    /// Serve at most this many connections at once (QUIC and TCP; a TCP
    /// client opens one per request it has in flight, about 16 at most). Clients
    /// beyond it are told the hub is busy.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Connections still in their handshake (before a valid Hello), at once,
    /// apart from --max-connections: strangers cannot take the places of
    /// authenticated clients. Past them connections are refused before TLS.
    #[arg(long, default_value_t = ferry_hub::DEFAULT_MAX_UNAUTHENTICATED as u32, value_parser = clap::value_parser!(u32).range(1..))]
    max_unauthenticated: u32,
    /// Memory, in MiB, that all connections together may make the hub hold
    /// for their QUIC windows, requests and answers in flight. Past it new
    /// connections and requests are told the hub is busy.
    #[arg(long, default_value_t = (ferry_hub::DEFAULT_MEMORY_BUDGET >> 20) as u32, value_parser = clap::value_parser!(u32).range((ferry_hub::budget::MIN_MEMORY_BUDGET >> 20) as i64..))]
    memory_budget_mib: u32,
    /// Also serve the HTTP door here (the Hugging Face Hub's file API:
    /// huggingface_hub and `hf download` work against it), with metrics
    /// at /metrics and health at /health.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// A certificate chain (PEM, leaf first) for both doors, from a
    /// certificate authority, in place of the hub's self-signed one.
    /// With --http, the HTTP door speaks HTTPS.
    #[arg(long, requires = "key", value_name = "PEM")]
    cert: Option<std::path::PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, requires = "cert", value_name = "PEM")]
    key: Option<std::path::PathBuf>,
    /// How the hub logs on stderr (requests of the HTTP door, failures):
    /// text, or json (one object per line). What is logged: FERRY_LOG, in
    /// tracing's filter syntax (default "info").
    #[arg(long, value_enum, default_value_t = crate::output::LogFormat::Text)]
    log: crate::output::LogFormat,
}

/// The first line: where the hub listens and which certificate it shows.
#[derive(Serialize)]
pub struct Listening {
    pub listen: String,
    /// The HTTP door's address, with --http.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    pub fingerprint: String,
    /// Whether the identity was created by this start.
    pub new_identity: bool,
}

impl Report for Listening {
    fn text(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "ferry hub listening on {} (QUIC and TLS over TCP)\ncertificate fingerprint: {}{}",
            self.listen,
            self.fingerprint,
            if self.new_identity { " (new: clients pin it on first use)" } else { "" }
        )];
        if let Some(http) = &self.http {
            lines.push(format!("HTTP door (Hugging Face Hub API, /metrics, /health) on {http}"));
        }
        lines
    }
}

/// A gc run inside the hub: `{"gc": {...}}`.
#[derive(Serialize)]
pub struct GcRun {
    pub gc: GcOutcome,
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum GcOutcome {
    Collected(Collected),
    Failed { error: String },
}

impl Report for GcRun {
    fn text(&self) -> Vec<String> {
        match &self.gc {
            GcOutcome::Collected(c) => vec![format!("ferry: gc {} ({:.1}s)", c.summary(), c.seconds.unwrap_or_default())],
            GcOutcome::Failed { error } => vec![format!("ferry: gc failed: {error}")],
        }
    }
}

/// A pass of following another hub that changed something.
#[derive(Serialize)]
pub struct FollowPass<'a> {
    pub mirror_of: &'a str,
    pub pass: &'a MirrorReport,
}

impl Report for FollowPass<'_> {
    fn text(&self) -> Vec<String> {
        vec![format!("ferry: mirror of {}: {}", self.mirror_of, summary(self.pass, None, 0.0))]
    }
}

/// A hub this hub follows (`--mirror-of`).
struct Follow {
    hub: String,
    options: ferry_net::ConnectOptions,
    patterns: Vec<String>,
    interval: Duration,
}

pub fn run(path: &Path, args: Args, json: bool) -> Result<ExitCode> {
    crate::output::start_logging(args.log, "info");
    if args.backend.backend.is_some() && args.replica_of.is_none() {
        anyhow::bail!("--backend: serve takes it only with --replica-of (a hub's own store names its bucket at init)");
    }
    let store = Arc::new(match &args.replica_of {
        Some(_) => super::init::open_replica(path, &args.backend)?,
        None => super::init::open(path)?,
    });
    let follow = match args.mirror_of {
        Some(hub) => Some(Follow { options: args.net.options(&hub)?, hub, patterns: patterns(args.repos), interval: args.mirror_interval }),
        None => None,
    };
    let identity = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => ferry_net::tls::Identity::from_pem(cert, key)?,
        _ => ferry_net::tls::Identity::load_or_create(store.path())?,
    };
    let access = Arc::new(ferry_service::Access::for_store(store.path()));
    // An unreadable access file stops the hub before it listens.
    access.current()?;
    // Pushed and mirrored files get the SHA-256 the HTTP door names them by.
    let service = ferry_service::HubService::new(store.clone(), access);
    let service = Arc::new(match &args.replica_of {
        Some(writer) => service.replica_of(writer.clone()),
        None => service.with_sha256_backfill(),
    });
    let listening = |addr: SocketAddr, http: Option<SocketAddr>| Listening {
        listen: addr.to_string(),
        http: http.map(|a| a.to_string()),
        fingerprint: identity.fingerprint.clone(),
        new_identity: identity.created,
    };
    let gc = args.gc_every.map(|every| {
        service.clone().collect_garbage_every(every, move |res, took| {
            let gc = match res {
                Ok(r) => GcOutcome::Collected(Collected::new(&r, Some(took))),
                Err(e) => GcOutcome::Failed { error: e.to_string() },
            };
            emit_stderr(json, &GcRun { gc });
        })
    });
    runtime()?.block_on(async {
        // Following another hub runs beside the accept loop, in this task.
        let follower = async {
            let Some(f) = follow else { return std::future::pending::<std::convert::Infallible>().await };
            let opts = ferry_transfer::mirror::MirrorOptions { patterns: f.patterns, limits: Default::default() };
            let connect = async || Ok((connect(&f.options).await?, ferry_transfer::Local::new(&service)));
            let (hub, interval) = (f.hub, f.interval);
            ferry_transfer::mirror::watch(connect, &opts, interval, &(), |res, ends| match res {
                Ok(r) if r.changed.is_empty() => {}
                Ok(r) => emit_stderr(json, &FollowPass { mirror_of: &hub, pass: r }),
                Err(e) if ends.is_none() => stderr_line(&format!("ferry: mirror: {e}; retrying in {}s", interval.as_secs())),
                Err(e) => stderr_line(&format!("ferry: mirror of {hub} failed: {e}; retrying")),
            })
            .await;
            unreachable!("watching ends only when the process does")
        };
        if let Some(gc) = gc {
            tokio::spawn(gc);
        }
        let opts = ferry_hub::ServeOptions {
            listen: args.listen,
            idle_timeout: args.idle_timeout,
            max_connections: args.max_connections as usize,
            max_unauthenticated: args.max_unauthenticated as usize,
            memory_budget: (args.memory_budget_mib as usize) << 20,
        };
        let http = match args.http {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("--http {addr}: {e}"))?;
                Some((listener.local_addr()?, listener))
            }
            None => None,
        };
        let http_addr = http.as_ref().map(|h| h.0);
        let serving = ferry_hub::serve(service.clone(), &identity, opts, |addr| {
            emit(json, &listening(addr, http_addr));
            let _ = std::io::stdout().flush();
        });
        // SIGTERM: the HTTP door stops accepting and finishes what is in
        // flight (up to its drain time); the store is crash-safe, so the
        // QUIC door's transfers in flight are simply cut.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let http_tls = if args.cert.is_some() { Some(identity.server_config()?) } else { None };
        let http_door = async {
            let Some((_, listener)) = http else { return std::future::pending::<std::io::Result<()>>().await };
            let opts = ferry_http::HttpOptions { listener, tls: http_tls, drain: Duration::from_secs(10) };
            ferry_http::serve(service.clone(), opts, async move { drop(stop_rx.await) }).await
        };
        let mut http_door = std::pin::pin!(http_door);
        // A replica reads what the writer did from the bucket's journal.
        let replicating = async {
            if args.replica_of.is_none() {
                return std::future::pending::<std::convert::Infallible>().await;
            }
            loop {
                tokio::time::sleep(args.replica_interval).await;
                let store = store.clone();
                match tokio::task::spawn_blocking(move || store.catch_up()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => stderr_line(&format!("ferry: reading the bucket's journal: {e}; retrying")),
                    Err(e) => stderr_line(&format!("ferry: reading the bucket's journal stopped: {e}; retrying")),
                }
            }
        };
        tokio::select! {
            served = serving => served?,
            never = follower => match never {},
            never = replicating => match never {},
            res = &mut http_door => res?,
            _ = term.recv() => {
                let _ = stop_tx.send(());
                if http_addr.is_some() {
                    http_door.await?;
                }
            }
        }
        anyhow::Ok(())
    })?;
    // Stopped cleanly: the service's own threads end first (so none closes
    // the store while the process exits), then the backend gives up what it
    // holds for this hub (a bucket's writer lease) for a successor.
    drop(service);
    store.close()?;
    Ok(ExitCode::SUCCESS)
}

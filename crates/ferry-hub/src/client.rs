//! The client side: connect (QUIC, or TLS over TCP where UDP is blocked),
//! push, pull and remote byte-range reads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::revision::{revision_id, Revision};
use ferry_core::tree::{node_id, Node};
use ferry_core::Id;
use ferry_proto::transfer::{Limits, Partial, Report};
use ferry_proto::{ErrorCode, Message};
use ferry_store::Store;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::ends::{Local, Source};
use crate::tls::{self, Trust};
use crate::transfer::{run, BranchPlan, Direction, TransferProgress};
use crate::wire::{read_message_patiently, write_message, Patience};
use crate::{HubError, Result};

/// Which transport to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportChoice {
    /// QUIC, falling back to TCP if QUIC does not connect quickly.
    Auto,
    Quic,
    Tcp,
}

#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `host:port`.
    pub hub: String,
    pub token: Option<String>,
    pub transport: TransportChoice,
    pub trust: Trust,
}

/// How long QUIC gets before `Auto` falls back to TCP.
const QUIC_HEAD_START: Duration = Duration::from_millis(1500);
/// How long a pooled TCP connection may sit unused before it is dropped
/// rather than reused: below the hub's default idle timeout (30 s).
const POOLED_IDLE: Duration = Duration::from_secs(20);
/// Chunks per GetChunks request of a range read.
const GET_BATCH: usize = 64;
/// The most a response may hold, whatever the hub sends: far above any
/// honest answer (1 024 revisions or 64 chunks), far below memory.
const MAX_RESPONSE_BYTES: u64 = 256 << 20;

/// What a push, pull or mirror of one branch did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Transfer {
    pub transport: String,
    pub head: String,
    pub up_to_date: bool,
    pub revisions: u64,
    /// Chunks the other side lacked, and their encoded and raw bytes.
    pub chunks_moved: u64,
    pub chunk_bytes_moved: u64,
    pub raw_bytes_moved: u64,
    /// Chunks of the transferred files the other side already had.
    pub chunks_already_there: u64,
    pub nodes_moved: u64,
    /// Ids sent in negotiation questions.
    pub ids_asked: u64,
    /// All bytes on the wire, both ways (frames, not counting TLS/QUIC overhead).
    pub wire_bytes_sent: u64,
    pub wire_bytes_received: u64,
}

enum Conn {
    Quic {
        conn: quinn::Connection,
        endpoint: quinn::Endpoint,
    },
    /// Connections not in use, with when each was last used.
    Tcp {
        pool: tokio::sync::Mutex<Vec<(TlsStream<TcpStream>, Instant)>>,
        addr: SocketAddr,
        tls: tokio_rustls::TlsConnector,
        name: rustls::pki_types::ServerName<'static>,
    },
}

/// A connection to a hub, authenticated.
pub struct Client {
    conn: Conn,
    token: String,
    hub: String,
    sent: AtomicU64,
    received: AtomicU64,
    /// Bytes of chunk records among them (sent or received).
    chunk_bytes: AtomicU64,
}

fn lost(e: impl std::fmt::Display) -> HubError {
    HubError::Lost(e.to_string())
}

impl Client {
    pub async fn connect(opts: &ConnectOptions) -> Result<Client> {
        let addr = tokio::net::lookup_host(&opts.hub)
            .await
            .map_err(|e| HubError::Connect { hub: opts.hub.clone(), detail: e.to_string() })?
            .next()
            .ok_or_else(|| HubError::Connect { hub: opts.hub.clone(), detail: "no address".into() })?;
        let host = opts.hub.rsplit_once(':').map_or(opts.hub.as_str(), |x| x.0).trim_matches(['[', ']']).to_owned();
        let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| HubError::Config(format!("{host}: {e}")))?;
        let (cfg, pin) = tls::client_config(&opts.trust, &opts.hub)?;
        let check_pin = |err: Option<String>| -> Result<()> {
            if let (Some(pin), Trust::KnownHubs(file)) = (&pin, &opts.trust) {
                let seen = pin.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
                match (&pin.expected, seen) {
                    (Some(want), Some(seen)) if *want != seen => {
                        return Err(HubError::FingerprintChanged { hub: opts.hub.clone(), seen, pinned: want.clone(), file: file.display().to_string() })
                    }
                    (None, Some(seen)) if err.is_none() => {
                        tls::remember(file, &opts.hub, &seen)?;
                        eprintln!("ferry: pinned {} with certificate {seen} in {}", opts.hub, file.display());
                    }
                    _ => {}
                }
            }
            match err {
                Some(detail) => Err(HubError::Connect { hub: opts.hub.clone(), detail }),
                None => Ok(()),
            }
        };
        let mut quic_err = None;
        if opts.transport != TransportChoice::Tcp {
            let attempt = connect_quic(addr, &host, cfg.clone());
            let res = if opts.transport == TransportChoice::Auto {
                tokio::time::timeout(QUIC_HEAD_START, attempt).await.unwrap_or_else(|_| Err("no QUIC answer within 1.5 s".into()))
            } else {
                attempt.await
            };
            match res {
                Ok((conn, endpoint)) => {
                    check_pin(None)?;
                    let client = Client {
                        conn: Conn::Quic { conn, endpoint },
                        token: opts.token.clone().unwrap_or_default(),
                        hub: opts.hub.clone(),
                        sent: 0.into(),
                        received: 0.into(),
                        chunk_bytes: 0.into(),
                    };
                    client.hello_quic().await?;
                    return Ok(client);
                }
                Err(e) => {
                    if opts.transport == TransportChoice::Quic {
                        check_pin(Some(e))?;
                        unreachable!("check_pin fails when given an error");
                    }
                    // A fingerprint mismatch is not a reason to try TCP.
                    check_pin(None)?;
                    quic_err = Some(e);
                }
            }
        }
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let client = Client {
            conn: Conn::Tcp { pool: tokio::sync::Mutex::new(Vec::new()), addr, tls, name: name.to_owned() },
            token: opts.token.clone().unwrap_or_default(),
            hub: opts.hub.clone(),
            sent: 0.into(),
            received: 0.into(),
            chunk_bytes: 0.into(),
        };
        match client.open_tcp().await {
            Ok(s) => {
                check_pin(None)?;
                if let Conn::Tcp { pool, .. } = &client.conn {
                    pool.lock().await.push((s, Instant::now()));
                }
                Ok(client)
            }
            Err(HubError::Connect { detail, .. }) | Err(HubError::Tls(detail)) => {
                check_pin(Some(match quic_err {
                    Some(q) => format!("QUIC: {q}; TCP: {detail}"),
                    None => detail,
                }))?;
                unreachable!("check_pin returns the error")
            }
            Err(e) => Err(e),
        }
    }

    /// Tells the hub this client is done, so that the hub frees its place
    /// now rather than after its idle timeout (a process that just exits
    /// leaves a QUIC connection open on the hub's side), and waits briefly
    /// for that to be sent. TCP connections end with the process.
    pub async fn close(&self) {
        if let Conn::Quic { conn, endpoint } = &self.conn {
            conn.close(0u32.into(), b"done");
            let _ = tokio::time::timeout(Duration::from_millis(250), endpoint.wait_idle()).await;
        }
    }

    /// "quic" or "tcp".
    pub fn transport(&self) -> &'static str {
        match self.conn {
            Conn::Quic { .. } => "quic",
            Conn::Tcp { .. } => "tcp",
        }
    }

    fn hello(&self) -> Message {
        Message::Hello { versions: vec![ferry_proto::VERSION], token: self.token.clone(), client: format!("ferry/{}", env!("CARGO_PKG_VERSION")) }
    }

    async fn hello_quic(&self) -> Result<()> {
        self.request(&self.hello()).await.map(drop)
    }

    async fn open_tcp(&self) -> Result<TlsStream<TcpStream>> {
        let Conn::Tcp { addr, tls, name, .. } = &self.conn else { unreachable!() };
        let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .map_err(|_| HubError::Connect { hub: self.hub.clone(), detail: "TCP connect timed out".into() })?
            .map_err(|e| HubError::Connect { hub: self.hub.clone(), detail: format!("TCP: {e}") })?;
        let _ = tcp.set_nodelay(true);
        crate::wire::tcp_liveness(&tcp);
        let mut s = tls.connect(name.clone(), tcp).await.map_err(|e| HubError::Connect { hub: self.hub.clone(), detail: format!("TLS: {e}") })?;
        self.tcp_exchange(&mut s, &self.hello()).await?;
        Ok(s)
    }

    /// One request on a TCP connection: the answer may take as long as the
    /// kernel still holds unacknowledged request bytes.
    async fn tcp_exchange(&self, s: &mut TlsStream<TcpStream>, req: &Message) -> Result<Vec<Message>> {
        struct Unsent(std::os::fd::RawFd);
        impl Patience for Unsent {
            fn still_sending(&self) -> bool {
                crate::wire::unacknowledged(self.0) > 0
            }
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(s.get_ref().0);
        let (mut r, mut w) = tokio::io::split(s);
        let n = write_message(&mut w, req).await?;
        self.sent.fetch_add(n, Ordering::Relaxed);
        w.flush().await.map_err(lost)?;
        self.read_response(&mut r, &Unsent(fd)).await
    }

    /// One request on its own QUIC stream: the answer may take as long as
    /// the hub has not acknowledged the whole request, or keeps sending on
    /// other streams (they may hold the link); silence beyond that is timed.
    async fn quic_exchange(&self, conn: &quinn::Connection, req: &Message) -> Result<Vec<Message>> {
        struct Acked(Arc<std::sync::atomic::AtomicBool>, crate::wire::StreamActivity);
        impl Patience for Acked {
            fn still_sending(&self) -> bool {
                // Evaluate both: the activity check keeps its count current.
                let active = self.1.still_sending();
                !self.0.load(Ordering::Relaxed) || active
            }
        }
        let (mut send, mut recv) = conn.open_bi().await.map_err(lost)?;
        let n = write_message(&mut send, req).await?;
        self.sent.fetch_add(n, Ordering::Relaxed);
        send.finish().map_err(lost)?;
        let acked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, stopped) = (acked.clone(), send.stopped());
        let watcher = tokio::spawn(async move {
            let _ = stopped.await;
            flag.store(true, Ordering::Relaxed);
        });
        let res = self.read_response(&mut recv, &Acked(acked, crate::wire::StreamActivity::new(conn))).await;
        watcher.abort();
        res
    }

    /// Sends one request and reads its response up to `Done`, waiting out
    /// silences while `patience` says the hub cannot have the request yet.
    async fn read_response<R: AsyncRead + Unpin>(&self, r: &mut R, patience: &dyn Patience) -> Result<Vec<Message>> {
        let mut out = Vec::new();
        let mut bytes = 0;
        loop {
            let m = read_message_patiently(r, patience).await?.ok_or_else(|| HubError::Lost("the hub closed the stream before answering".into()))?;
            let n = (m.payload().len() + 5) as u64;
            self.received.fetch_add(n, Ordering::Relaxed);
            bytes += n;
            if bytes > MAX_RESPONSE_BYTES {
                return Err(HubError::Protocol(format!("the hub's answer exceeds {MAX_RESPONSE_BYTES} bytes")));
            }
            match m {
                Message::Done => return Ok(out),
                Message::Error { code, message } => return Err(HubError::Remote { code, message }),
                m => out.push(m),
            }
        }
    }

    /// One request, one response, on its own stream (QUIC) or a pooled
    /// connection (TCP).
    pub async fn request(&self, req: &Message) -> Result<Vec<Message>> {
        match &self.conn {
            Conn::Quic { conn, .. } => self.quic_exchange(conn, req).await,
            Conn::Tcp { pool, .. } => {
                // A hub closes connections idle for 30 s (its default): do
                // not send a request down one it may have closed.
                let pooled = {
                    let mut p = pool.lock().await;
                    p.retain(|(_, used)| used.elapsed() < POOLED_IDLE);
                    p.pop().map(|(s, _)| s)
                };
                let mut s = match pooled {
                    Some(s) => s,
                    None => self.open_tcp().await?,
                };
                let res = self.tcp_exchange(&mut s, req).await;
                if res.is_ok() || matches!(res, Err(HubError::Remote { .. })) {
                    pool.lock().await.push((s, Instant::now()));
                }
                res
            }
        }
    }

    pub(crate) async fn bitmap(&self, req: Message, n: usize) -> Result<Vec<bool>> {
        match self.request(&req).await?.pop() {
            Some(Message::Bitmap { bits }) if bits.len() == n => Ok(bits),
            other => Err(HubError::Protocol(format!("expected a bitmap of {n} bits, got {other:?}"))),
        }
    }

    /// Frame bytes sent and received on this connection so far.
    pub fn wire_bytes(&self) -> (u64, u64) {
        (self.sent.load(Ordering::Relaxed), self.received.load(Ordering::Relaxed))
    }

    /// Bytes of chunk records among the wire bytes: what is data rather
    /// than negotiation.
    pub fn chunk_bytes(&self) -> u64 {
        self.chunk_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn count_chunk_bytes(&self, n: usize) {
        self.chunk_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The hub's branches of `repo`.
    pub async fn refs(&self, repo: &str) -> Result<Vec<(String, Id)>> {
        match self.request(&Message::ListRefs { repo: repo.into() }).await?.pop() {
            Some(Message::Refs { branches, .. }) => Ok(branches),
            other => Err(HubError::Protocol(format!("expected Refs, got {other:?}"))),
        }
    }

    /// The hub's branches of `repo`, or none if it has no such repository
    /// (or the token may not read it).
    pub async fn refs_if_any(&self, repo: &str) -> Result<Vec<(String, Id)>> {
        match self.refs(repo).await {
            Err(HubError::Remote { code: ErrorCode::NotFound, .. }) => Ok(vec![]),
            other => other,
        }
    }
}

async fn connect_quic(addr: SocketAddr, host: &str, cfg: rustls::ClientConfig) -> Result<(quinn::Connection, quinn::Endpoint), String> {
    let bind: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0".parse().expect("addr") } else { "[::]:0".parse().expect("addr") };
    let socket = crate::udp_socket(bind).map_err(|e| e.to_string())?;
    let mut endpoint = quinn::Endpoint::new(crate::endpoint_config(None), None, socket, Arc::new(quinn::TokioRuntime)).map_err(|e| e.to_string())?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(cfg).map_err(|e| e.to_string())?;
    let mut cc = quinn::ClientConfig::new(Arc::new(crypto));
    cc.transport_config(Arc::new(crate::transport_config()));
    endpoint.set_default_client_config(cc);
    let conn = endpoint.connect(addr, host).map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())?;
    Ok((conn, endpoint))
}

pub struct PushOptions {
    pub repo: String,
    pub branch: String,
}

pub struct PullOptions {
    pub repo: String,
    pub branch: String,
    /// Only files matching one of these globs (a partial pull).
    pub include: Vec<String>,
}

impl Transfer {
    /// The summary of one branch's transfer; wire bytes are the caller's.
    pub fn from_report(transport: &str, r: &Report) -> Transfer {
        Transfer {
            transport: transport.into(),
            head: r.head.to_hex(),
            up_to_date: r.up_to_date,
            revisions: r.revisions,
            chunks_moved: r.chunks_moved,
            chunk_bytes_moved: r.chunk_bytes_moved,
            raw_bytes_moved: r.raw_bytes_moved,
            chunks_already_there: r.chunks_already_there,
            nodes_moved: r.nodes_moved,
            ids_asked: r.ids_asked,
            wire_bytes_sent: 0,
            wire_bytes_received: 0,
        }
    }
}

impl Client {
    fn summary(&self, r: &Report) -> Transfer {
        let (sent, received) = self.wire_bytes();
        Transfer { wire_bytes_sent: sent, wire_bytes_received: received, ..Transfer::from_report(self.transport(), r) }
    }

    /// Sends the local branch to the hub: only revisions, nodes and chunks
    /// the hub lacks, then moves the hub's branch by compare-and-swap.
    pub async fn push(&self, store: &Arc<Store>, opts: &PushOptions, progress: &dyn TransferProgress) -> Result<Transfer> {
        let (repo, branch) = (&opts.repo, &opts.branch);
        let local = store.branch(repo, branch)?.ok_or_else(|| ferry_store::StoreError::UnknownRevision(format!("{repo} has no local branch {branch:?}")))?;
        let refs = self.refs_if_any(repo).await?;
        let plan = BranchPlan {
            repo,
            branch,
            source_head: local,
            sink_head: refs.iter().find(|b| &b.0 == branch).map(|b| b.1),
            sink_hints: refs.iter().map(|b| b.1).collect(),
            partial: None,
            limits: Limits::default(),
        };
        let report = run(&Local::new(store.clone()), self, plan, Direction::Push, progress).await?;
        Ok(self.summary(&report))
    }

    /// Fetches the hub's branch into the local store: revisions, then only
    /// the nodes and chunks missing locally, each verified; then moves the
    /// local branch by compare-and-swap. With `include`, only the matching
    /// files, recorded as a local revision of their own.
    pub async fn pull(&self, store: &Arc<Store>, opts: &PullOptions, progress: &dyn TransferProgress) -> Result<Transfer> {
        let (repo, branch) = (&opts.repo, &opts.branch);
        let head = self
            .refs_if_any(repo)
            .await?
            .into_iter()
            .find(|b| &b.0 == branch)
            .map(|b| b.1)
            .ok_or_else(|| HubError::Remote { code: ErrorCode::NotFound, message: format!("the hub has no branch {branch:?} in {repo} (or no access)") })?;
        let partial = if opts.include.is_empty() {
            None
        } else {
            let mut b = globset::GlobSetBuilder::new();
            for g in &opts.include {
                b.add(globset::Glob::new(g).map_err(|e| HubError::Config(format!("--include {g:?}: {e}")))?);
            }
            let set = b.build().map_err(|e| HubError::Config(e.to_string()))?;
            Some(Partial { keep: Box::new(move |p| set.is_match(p)), description: format!("include {}", opts.include.join(", ")) })
        };
        let local = store.branch(repo, branch).ok().flatten();
        let hints = store.branches(repo).unwrap_or_default().into_iter().map(|b| b.1).collect();
        let plan = BranchPlan { repo, branch, source_head: head, sink_head: local, sink_hints: hints, partial, limits: Limits::default() };
        let sink = Local::new(store.clone());
        let report = run(self, &sink, plan, Direction::Pull, progress).await;
        if report.is_err() {
            // Keep the chunks that did arrive, so that a re-run fetches
            // only the rest.
            let _ = tokio::task::block_in_place(|| ferry_store::ChunkStore::sync(store.chunk_store()));
        }
        Ok(self.summary(&report?))
    }

    /// A revision of `repo` by id, verified.
    async fn revision(&self, repo: &str, id: Id) -> Result<Revision> {
        let found = self.history(repo, vec![id], vec![], 1).await?;
        let bytes = found
            .into_iter()
            .find(|b| revision_id(b) == id)
            .ok_or_else(|| HubError::Remote { code: ErrorCode::NotFound, message: format!("no revision {id} in {repo}") })?;
        Ok(Revision::decode(&bytes)?)
    }

    /// Writes bytes `start..end` of `path` in `repo@rev` (a branch or a full
    /// revision id) to `out`, fetching only the nodes and chunks that cover
    /// the range. Returns the file's size.
    pub async fn read_range(&self, repo: &str, rev: &str, path: &str, range: Option<(u64, Option<u64>)>, out: &mut dyn std::io::Write) -> Result<u64> {
        let id = match self.refs(repo).await?.into_iter().find(|b| b.0 == rev) {
            Some((_, id)) => id,
            None => rev.parse::<Id>().map_err(|_| HubError::Remote {
                code: ErrorCode::NotFound,
                message: format!("{repo} has no branch {rev:?} (give a branch or a full 64-digit revision id)"),
            })?,
        };
        let revision = self.revision(repo, id).await?;
        let entry =
            revision.entry(path).ok_or_else(|| HubError::Remote { code: ErrorCode::NotFound, message: format!("{repo}@{rev} has no file {path:?}") })?;
        let (start, end) = range.map_or((0, entry.size), |(a, b)| (a, b.unwrap_or(entry.size)));
        if start > end || end > entry.size {
            return Err(HubError::Config(format!("range {start}..{end} is outside {path:?} ({} bytes)", entry.size)));
        }
        // Walk down level by level, keeping only children that overlap.
        let mut level: Vec<(Id, u64)> = vec![(entry.file_id, 0)];
        let mut chunks: Vec<(Id, u64, u64)> = Vec::new();
        while !level.is_empty() {
            let ids: Vec<Id> = level.iter().map(|x| x.0).collect();
            let nodes = self.nodes(repo, ids.clone()).await?;
            if nodes.len() != ids.len() {
                return Err(HubError::Protocol(format!("asked for {} nodes, got {}", ids.len(), nodes.len())));
            }
            let mut next = Vec::new();
            for ((id, base), bytes) in level.iter().zip(nodes) {
                let actual = node_id(&bytes);
                if actual != *id {
                    return Err(ferry_core::FormatError::HashMismatch { what: "tree node", id: *id, actual }.into());
                }
                let node = Node::decode(&bytes)?;
                let mut off = *base;
                for c in &node.children {
                    let (lo, hi) = (off, off + c.size);
                    off = hi;
                    if hi > start && lo < end || (start == end && lo == start) {
                        if node.height == 1 {
                            chunks.push((c.id, lo, c.size));
                        } else {
                            next.push((c.id, lo));
                        }
                    }
                }
            }
            level = next;
        }
        for batch in chunks.chunks(GET_BATCH) {
            let ids: Vec<Id> = batch.iter().map(|c| c.0).collect();
            let by_id: HashMap<Id, Vec<u8>> = self.records(repo, ids).await?.into_iter().collect();
            for (cid, lo, size) in batch {
                let raw = ferry_core::codec::decode_verified(cid, &by_id[cid])?;
                if raw.len() as u64 != *size {
                    return Err(HubError::Protocol(format!("chunk {cid} has {} bytes where its tree says {size}", raw.len())));
                }
                let a = start.saturating_sub(*lo) as usize;
                let b = (end.min(lo + size) - lo) as usize;
                out.write_all(&raw[a..b]).map_err(|e| HubError::Io(e.to_string()))?;
            }
        }
        Ok(entry.size)
    }
}

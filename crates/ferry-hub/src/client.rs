//! The client side: connect (QUIC, or TLS over TCP where UDP is blocked),
//! push, pull and remote byte-range reads.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry_core::revision::Revision;
use ferry_core::tree::{node_id, Node};
use ferry_core::Id;
use ferry_proto::negotiate::{Step, TreeDiff};
use ferry_proto::{ErrorCode, Message};
use ferry_store::{ChunkStore, Store, VerifiedRecord};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::tls::{self, Trust};
use crate::wire::{read_message, write_message};
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
/// Requests in flight at once when moving chunks.
const PARALLEL: usize = 8;
/// Bytes of chunk records per PutChunks request.
const PUT_BATCH_BYTES: usize = 4 << 20;
/// Chunks per GetChunks request.
const GET_BATCH: usize = 64;
/// Ids per negotiation request.
const ASK_BATCH: usize = 8192;

/// Told how many payload bytes have moved.
pub trait TransferProgress: Send + Sync {
    fn start(&self, _total_bytes: u64) {}
    fn advance(&self, _bytes: u64) {}
}
impl TransferProgress for () {}

/// What a push or pull did.
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
    Quic { conn: quinn::Connection, _endpoint: quinn::Endpoint },
    Tcp { pool: tokio::sync::Mutex<Vec<TlsStream<TcpStream>>>, addr: SocketAddr, tls: tokio_rustls::TlsConnector, name: rustls::pki_types::ServerName<'static> },
}

/// A connection to a hub, authenticated.
pub struct Client {
    conn: Conn,
    token: String,
    hub: String,
    sent: AtomicU64,
    received: AtomicU64,
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
                        conn: Conn::Quic { conn, _endpoint: endpoint },
                        token: opts.token.clone().unwrap_or_default(),
                        hub: opts.hub.clone(),
                        sent: 0.into(),
                        received: 0.into(),
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
        };
        match client.open_tcp().await {
            Ok(s) => {
                check_pin(None)?;
                if let Conn::Tcp { pool, .. } = &client.conn {
                    pool.lock().await.push(s);
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
        let Conn::Quic { conn, .. } = &self.conn else { unreachable!() };
        let (mut send, mut recv) = conn.open_bi().await.map_err(lost)?;
        self.exchange(&mut send, &mut recv, &self.hello(), true).await?;
        Ok(())
    }

    async fn open_tcp(&self) -> Result<TlsStream<TcpStream>> {
        let Conn::Tcp { addr, tls, name, .. } = &self.conn else { unreachable!() };
        let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .map_err(|_| HubError::Connect { hub: self.hub.clone(), detail: "TCP connect timed out".into() })?
            .map_err(|e| HubError::Connect { hub: self.hub.clone(), detail: format!("TCP: {e}") })?;
        let _ = tcp.set_nodelay(true);
        let mut s = tls.connect(name.clone(), tcp).await.map_err(|e| HubError::Connect { hub: self.hub.clone(), detail: format!("TLS: {e}") })?;
        let hello = self.hello();
        let (mut r, mut w) = tokio::io::split(&mut s);
        self.exchange(&mut w, &mut r, &hello, false).await?;
        Ok(s)
    }

    /// Sends one request and reads its response up to `Done`.
    async fn exchange<W: AsyncWrite + Unpin, R: AsyncRead + Unpin>(&self, w: &mut W, r: &mut R, req: &Message, finish: bool) -> Result<Vec<Message>> {
        let n = write_message(w, req).await?;
        self.sent.fetch_add(n, Ordering::Relaxed);
        w.flush().await.map_err(lost)?;
        if finish {
            w.shutdown().await.map_err(lost)?;
        }
        let mut out = Vec::new();
        loop {
            let m = read_message(r).await?.ok_or_else(|| HubError::Lost("the hub closed the stream before answering".into()))?;
            self.received.fetch_add((m.payload().len() + 5) as u64, Ordering::Relaxed);
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
            Conn::Quic { conn, .. } => {
                let (mut send, mut recv) = conn.open_bi().await.map_err(lost)?;
                self.exchange(&mut send, &mut recv, req, true).await
            }
            Conn::Tcp { pool, .. } => {
                let pooled = pool.lock().await.pop();
                let mut s = match pooled {
                    Some(s) => s,
                    None => self.open_tcp().await?,
                };
                let (mut r, mut w) = tokio::io::split(&mut s);
                let res = self.exchange(&mut w, &mut r, req, false).await;
                if res.is_ok() || matches!(res, Err(HubError::Remote { .. })) {
                    pool.lock().await.push(s);
                }
                res
            }
        }
    }

    async fn bitmap(&self, req: Message, n: usize) -> Result<Vec<bool>> {
        match self.request(&req).await?.pop() {
            Some(Message::Bitmap { bits }) if bits.len() == n => Ok(bits),
            other => Err(HubError::Protocol(format!("expected a bitmap of {n} bits, got {other:?}"))),
        }
    }

    pub fn wire_bytes(&self) -> (u64, u64) {
        (self.sent.load(Ordering::Relaxed), self.received.load(Ordering::Relaxed))
    }

    /// The hub's branches of `repo`.
    pub async fn refs(&self, repo: &str) -> Result<Vec<(String, Id)>> {
        match self.request(&Message::ListRefs { repo: repo.into() }).await?.pop() {
            Some(Message::Refs { branches, .. }) => Ok(branches),
            other => Err(HubError::Protocol(format!("expected Refs, got {other:?}"))),
        }
    }

    async fn branch_head(&self, repo: &str, branch: &str) -> Result<Option<Id>> {
        match self.refs(repo).await {
            Ok(b) => Ok(b.into_iter().find(|x| x.0 == branch).map(|x| x.1)),
            Err(HubError::Remote { code: ErrorCode::NotFound, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Fetches revisions (and their ancestors, up to `max`), verified.
    async fn history(&self, repo: &str, from: Vec<Id>, max: u32) -> Result<Vec<(Id, Revision)>> {
        let mut out = Vec::new();
        for m in self.request(&Message::GetHistory { repo: repo.into(), from, max }).await? {
            if let Message::Revisions { revisions } = m {
                for b in revisions {
                    let id = ferry_core::revision::revision_id(&b);
                    out.push((id, Revision::decode(&b)?));
                }
            }
        }
        Ok(out)
    }

    /// Nodes by id, each checked against the id asked for.
    async fn get_nodes(&self, repo: &str, ids: &[Id]) -> Result<Vec<(Vec<u8>, Node)>> {
        let mut got = Vec::with_capacity(ids.len());
        for m in self.request(&Message::GetNodes { repo: repo.into(), ids: ids.to_vec() }).await? {
            if let Message::Nodes { nodes } = m {
                got.extend(nodes);
            }
        }
        if got.len() != ids.len() {
            return Err(HubError::Protocol(format!("asked for {} nodes, got {}", ids.len(), got.len())));
        }
        ids.iter()
            .zip(got)
            .map(|(id, b)| {
                let actual = node_id(&b);
                if actual != *id {
                    return Err(ferry_core::FormatError::HashMismatch { what: "tree node", id: *id, actual }.into());
                }
                let n = Node::decode(&b)?;
                Ok((b, n))
            })
            .collect()
    }

    /// Chunk records by id, each decoded (bounded) and verified.
    async fn get_chunks(&self, repo: &str, ids: &[Id]) -> Result<Vec<VerifiedRecord>> {
        let mut out = Vec::with_capacity(ids.len());
        let want: HashSet<Id> = ids.iter().copied().collect();
        for m in self.request(&Message::GetChunks { repo: repo.into(), ids: ids.to_vec() }).await? {
            if let Message::Chunks { chunks } = m {
                for (id, rec) in chunks {
                    if !want.contains(&id) {
                        return Err(HubError::Protocol(format!("the hub sent chunk {id}, which was not asked for")));
                    }
                    out.push(VerifiedRecord::verify(id, rec)?);
                }
            }
        }
        if out.len() != ids.len() {
            return Err(HubError::Protocol(format!("asked for {} chunks, got {}", ids.len(), out.len())));
        }
        Ok(out)
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

/// Runs a tree comparison: `source_nodes` supplies nodes the sink lacks,
/// `ask_nodes`/`ask_chunks` ask the sink.
async fn run_diff<FN, FA, FC>(diff: &mut TreeDiff, mut source_nodes: FN, mut ask_nodes: FA, mut ask_chunks: FC) -> Result<()>
where
    FN: AsyncFnMut(Vec<Id>) -> Result<Vec<Node>>,
    FA: AsyncFnMut(Vec<Id>) -> Result<Vec<bool>>,
    FC: AsyncFnMut(Vec<Id>) -> Result<Vec<bool>>,
{
    let proto = |e: ferry_proto::negotiate::DiffError| HubError::Protocol(e.to_string());
    loop {
        match diff.poll(ASK_BATCH) {
            Step::AskNodes(ids) => {
                let have = ask_nodes(ids.clone()).await?;
                diff.nodes_known(&ids, &have).map_err(proto)?;
            }
            Step::Expand(ids) => {
                let nodes = source_nodes(ids.clone()).await?;
                for (id, n) in ids.into_iter().zip(nodes) {
                    diff.expanded(id, &n).map_err(proto)?;
                }
            }
            Step::AskChunks(ids) => {
                let have = ask_chunks(ids.clone()).await?;
                diff.chunks_known(&ids, &have).map_err(proto)?;
            }
            Step::Done => return Ok(()),
        }
    }
}

/// Orders revisions so that each comes after its parents among them.
fn parents_first(mut revs: Vec<(Id, Revision)>) -> Vec<(Id, Revision)> {
    let ids: HashSet<Id> = revs.iter().map(|r| r.0).collect();
    let mut placed: HashSet<Id> = HashSet::new();
    let mut out = Vec::with_capacity(revs.len());
    while !revs.is_empty() {
        let before = revs.len();
        revs.retain(|(id, r)| {
            if r.parents.iter().all(|p| !ids.contains(p) || placed.contains(p)) {
                placed.insert(*id);
                out.push((*id, r.clone()));
                false
            } else {
                true
            }
        });
        if revs.len() == before {
            out.append(&mut revs); // a cycle cannot happen with hashes; be safe
        }
    }
    out
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

impl Client {
    /// Sends the local branch to the hub: only revisions, nodes and chunks
    /// the hub lacks, then moves the hub's branch by compare-and-swap.
    pub async fn push(&self, store: &Arc<Store>, opts: &PushOptions, progress: &dyn TransferProgress) -> Result<Transfer> {
        let repo = &opts.repo;
        let local = store
            .branch(repo, &opts.branch)?
            .ok_or_else(|| ferry_store::StoreError::UnknownRevision(format!("{repo} has no local branch {:?}", opts.branch)))?;
        let mut t = Transfer { transport: self.transport().into(), head: local.to_hex(), ..Default::default() };
        let remote = self.branch_head(repo, &opts.branch).await?;
        if remote == Some(local) {
            t.up_to_date = true;
            return Ok(self.finish(t, None));
        }
        // Local history, newest first, until the hub knows a revision.
        let mut ancestors = Vec::new();
        let mut seen = HashSet::new();
        let mut queue = VecDeque::from([local]);
        while let Some(id) = queue.pop_front() {
            if seen.insert(id) {
                let rev = store.revision(&id)?;
                queue.extend(rev.parents.iter().copied());
                ancestors.push((id, rev));
            }
        }
        if let Some(h) = remote {
            if !seen.contains(&h) {
                return Err(HubError::Remote {
                    code: ErrorCode::Conflict,
                    message: format!("{repo}@{} on the hub is at {}, which your local branch does not contain: pull first", opts.branch, h.short()),
                });
            }
        }
        let mut on_hub = Vec::with_capacity(ancestors.len());
        for batch in ancestors.chunks(ASK_BATCH) {
            let ids: Vec<Id> = batch.iter().map(|x| x.0).collect();
            on_hub.extend(self.bitmap(Message::HaveRevisions { repo: repo.clone(), ids }, batch.len()).await?);
        }
        let to_send: Vec<(Id, Revision)> = ancestors.into_iter().zip(on_hub).filter(|x| !x.1).map(|x| x.0).collect();
        let to_send = parents_first(to_send);
        t.revisions = to_send.len() as u64;
        let mut diff = TreeDiff::new(to_send.iter().flat_map(|(_, r)| r.entries.iter().map(|e| e.file_id)));
        let total_chunks = Arc::new(AtomicU64::new(0));
        {
            let st = store.clone();
            let tc = total_chunks.clone();
            run_diff(
                &mut diff,
                async |ids: Vec<Id>| {
                    let nodes = ids.iter().map(|id| st.node(id)).collect::<Result<Vec<_>, _>>()?;
                    tc.fetch_add(nodes.iter().filter(|n| n.height == 1).map(|n| n.children.len() as u64).sum(), Ordering::Relaxed);
                    Ok(nodes)
                },
                async |ids: Vec<Id>| self.bitmap(Message::HaveNodes { repo: repo.clone(), ids: ids.clone() }, ids.len()).await,
                async |ids: Vec<Id>| self.bitmap(Message::HaveChunks { repo: repo.clone(), ids: ids.clone() }, ids.len()).await,
            )
            .await?;
        }
        let missing = diff.missing_chunks().to_vec();
        t.ids_asked = diff.ids_asked;
        t.chunks_moved = missing.len() as u64;
        t.chunks_already_there = total_chunks.load(Ordering::Relaxed).saturating_sub(missing.len() as u64);
        // Chunks, several requests in flight.
        let entries = store.chunk_store().index_entries(&missing)?;
        progress.start(entries.iter().flatten().map(|e| e.raw_len as u64).sum());
        let mut batches: Vec<Vec<Id>> = Vec::new();
        let (mut cur, mut bytes) = (Vec::new(), 0usize);
        for (id, e) in missing.iter().zip(&entries) {
            let e = e.ok_or(ferry_store::StoreError::MissingChunk(*id))?;
            if bytes + e.stored_len as usize > PUT_BATCH_BYTES && !cur.is_empty() {
                batches.push(std::mem::take(&mut cur));
                bytes = 0;
            }
            bytes += e.stored_len as usize;
            cur.push(*id);
        }
        if !cur.is_empty() {
            batches.push(cur);
        }
        let moved_bytes = AtomicU64::new(0);
        let raw_bytes = AtomicU64::new(0);
        let send_batch = async |ids: Vec<Id>| -> Result<()> {
            let mut chunks = Vec::with_capacity(ids.len());
            let mut raw = 0;
            for id in ids {
                let rec = store.chunk_store().get_record(&id)?.ok_or(ferry_store::StoreError::MissingChunk(id))?;
                raw += ferry_core::codec::read_header(&rec)?.raw_len as u64;
                moved_bytes.fetch_add(rec.len() as u64, Ordering::Relaxed);
                chunks.push((id, rec));
            }
            self.request(&Message::PutChunks { repo: repo.clone(), chunks }).await?;
            raw_bytes.fetch_add(raw, Ordering::Relaxed);
            progress.advance(raw);
            Ok(())
        };
        run_parallel(batches, PARALLEL, send_batch).await?;
        t.chunk_bytes_moved = moved_bytes.load(Ordering::Relaxed);
        t.raw_bytes_moved = raw_bytes.load(Ordering::Relaxed);
        // Nodes, children first, one batch after another.
        let nodes = diff.missing_nodes_bottom_up();
        t.nodes_moved = nodes.len() as u64;
        for batch in nodes.chunks(4096) {
            let enc = batch.iter().map(|id| store.node_bytes(id)?.ok_or(ferry_store::StoreError::MissingNode(*id))).collect::<Result<Vec<_>, _>>()?;
            self.request(&Message::PutNodes { repo: repo.clone(), nodes: enc }).await?;
        }
        let revisions = to_send.iter().map(|(_, r)| r.encode()).collect();
        self.request(&Message::UpdateBranch { repo: repo.clone(), branch: opts.branch.clone(), expected: remote, new: local, revisions }).await?;
        Ok(self.finish(t, None))
    }

    fn finish(&self, mut t: Transfer, _: Option<()>) -> Transfer {
        let (s, r) = self.wire_bytes();
        t.wire_bytes_sent = s;
        t.wire_bytes_received = r;
        t
    }

    /// Fetches the hub's branch into the local store: revisions, then only
    /// the nodes and chunks missing locally, each verified; then moves the
    /// local branch by compare-and-swap.
    pub async fn pull(&self, store: &Arc<Store>, opts: &PullOptions, progress: &dyn TransferProgress) -> Result<Transfer> {
        let repo = &opts.repo;
        let head = self.branch_head(repo, &opts.branch).await?.ok_or_else(|| HubError::Remote {
            code: ErrorCode::NotFound,
            message: format!("the hub has no branch {:?} in {repo} (or no access)", opts.branch),
        })?;
        let local = store.branch(repo, &opts.branch).ok().flatten();
        let mut t = Transfer { transport: self.transport().into(), head: head.to_hex(), ..Default::default() };
        let partial = !opts.include.is_empty();
        if local == Some(head) && !partial {
            t.up_to_date = true;
            return Ok(self.finish(t, None));
        }
        // Revisions the local store lacks.
        let mut fetched: HashMap<Id, Revision> = HashMap::new();
        let mut need: Vec<Id> = if store.has_revision(&head)? && !partial { vec![] } else { vec![head] };
        while !need.is_empty() {
            let got = self.history(repo, need.clone(), if partial { 1 } else { 1024 }).await?;
            if got.is_empty() {
                return Err(HubError::Protocol("the hub sent no revisions".into()));
            }
            need.clear();
            for (id, rev) in got {
                for p in &rev.parents {
                    if !partial && !fetched.contains_key(p) && !store.has_revision(p)? {
                        need.push(*p);
                    }
                }
                fetched.insert(id, rev);
            }
            need.retain(|p| !fetched.contains_key(p));
            need.dedup();
        }
        let head_rev = match fetched.get(&head) {
            Some(r) => r.clone(),
            None => store.revision(&head)?,
        };
        // The local branch must be an ancestor of the hub's head.
        if let (Some(l), false) = (local, partial) {
            let mut seen = HashSet::new();
            let mut queue = VecDeque::from([head]);
            let mut found = false;
            while let Some(id) = queue.pop_front() {
                if id == l {
                    found = true;
                    break;
                }
                if seen.insert(id) {
                    let rev = match fetched.get(&id) {
                        Some(r) => r.clone(),
                        None => store.revision(&id)?,
                    };
                    queue.extend(rev.parents);
                }
            }
            if !found {
                return Err(HubError::Remote {
                    code: ErrorCode::Conflict,
                    message: format!("your local {repo}@{} has revisions the hub lacks: push them first, or pull into another branch", opts.branch),
                });
            }
        }
        let matcher = if partial {
            let mut b = globset::GlobSetBuilder::new();
            for g in &opts.include {
                b.add(globset::Glob::new(g).map_err(|e| HubError::Config(format!("--include {g:?}: {e}")))?);
            }
            Some(b.build().map_err(|e| HubError::Config(e.to_string()))?)
        } else {
            None
        };
        let wanted = |path: &str| matcher.as_ref().is_none_or(|m| m.is_match(path));
        let roots: Vec<Id> = if partial {
            head_rev.entries.iter().filter(|e| wanted(&e.path)).map(|e| e.file_id).collect()
        } else {
            fetched.values().flat_map(|r| r.entries.iter().map(|e| e.file_id)).collect()
        };
        let mut diff = TreeDiff::new(roots);
        let node_bytes: std::sync::Mutex<HashMap<Id, Vec<u8>>> = Default::default();
        let total_chunks = AtomicU64::new(0);
        run_diff(
            &mut diff,
            async |ids: Vec<Id>| {
                let mut nodes = Vec::with_capacity(ids.len());
                for batch in ids.chunks(4096) {
                    for (id, (b, n)) in batch.iter().zip(self.get_nodes(repo, batch).await?) {
                        if n.height == 1 {
                            total_chunks.fetch_add(n.children.len() as u64, Ordering::Relaxed);
                        }
                        node_bytes.lock().unwrap_or_else(|p| p.into_inner()).insert(*id, b);
                        nodes.push(n);
                    }
                }
                Ok(nodes)
            },
            async |ids: Vec<Id>| Ok(store.has_nodes(&ids)?),
            async |ids: Vec<Id>| Ok(store.chunk_store().contains(&ids)?),
        )
        .await?;
        let missing = diff.missing_chunks().to_vec();
        t.chunks_moved = missing.len() as u64;
        t.chunks_already_there = total_chunks.load(Ordering::Relaxed).saturating_sub(missing.len() as u64);
        t.revisions = fetched.len() as u64;
        // Sizes are known from the nodes: progress in raw bytes.
        let sizes: HashMap<Id, u64> = node_bytes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter_map(|b| Node::decode(b).ok())
            .filter(|n| n.height == 1)
            .flat_map(|n| n.children.into_iter().map(|c| (c.id, c.size)))
            .collect();
        progress.start(missing.iter().map(|id| sizes.get(id).copied().unwrap_or(0)).sum());
        let moved = AtomicU64::new(0);
        let raw = AtomicU64::new(0);
        let session = store.write_session();
        let fetch = async |ids: Vec<Id>| -> Result<()> {
            let recs = self.get_chunks(repo, &ids).await?;
            let r: u64 = recs.iter().map(|r| r.raw_len()).sum();
            moved.fetch_add(recs.iter().map(|r| r.record().len() as u64).sum(), Ordering::Relaxed);
            tokio::task::block_in_place(|| session.put_records(&recs))?;
            raw.fetch_add(r, Ordering::Relaxed);
            progress.advance(r);
            Ok(())
        };
        let fetched_all = run_parallel(missing.chunks(GET_BATCH).map(|c| c.to_vec()).collect(), PARALLEL, fetch).await;
        if fetched_all.is_err() {
            // Keep what did arrive, so that a re-run fetches only the rest.
            let _ = tokio::task::block_in_place(|| store.chunk_store().sync());
        }
        fetched_all?;
        t.chunk_bytes_moved = moved.load(Ordering::Relaxed);
        t.raw_bytes_moved = raw.load(Ordering::Relaxed);
        let order = diff.missing_nodes_bottom_up();
        t.nodes_moved = order.len() as u64;
        t.ids_asked = diff.ids_asked;
        {
            let nb = node_bytes.lock().unwrap_or_else(|p| p.into_inner());
            for batch in order.chunks(4096) {
                let enc: Vec<Vec<u8>> = batch.iter().filter_map(|id| nb.get(id).cloned()).collect();
                tokio::task::block_in_place(|| session.put_nodes_checked(&enc))?;
            }
        }
        if partial {
            // A partial pull records only the included files, as a local
            // revision of its own (the hub's revision names files we lack).
            let entries = head_rev.entries.iter().filter(|e| wanted(&e.path)).cloned().collect();
            let msg = format!("partial pull of {} (include {})", head.to_hex(), opts.include.join(", "));
            let rev = Revision::new(vec![], head_rev.author.clone(), head_rev.time, msg, entries)?;
            let id = rev.id();
            tokio::task::block_in_place(|| session.publish(repo, &opts.branch, local, id, &[rev]))?;
            t.head = id.to_hex();
        } else {
            let revs = parents_first(fetched.into_iter().collect());
            let revs: Vec<Revision> = revs.into_iter().map(|x| x.1).collect();
            tokio::task::block_in_place(|| session.publish(repo, &opts.branch, local, head, &revs))?;
        }
        Ok(self.finish(t, None))
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
        let revs = self.history(repo, vec![id], 1).await?;
        let (_, revision) = revs
            .into_iter()
            .find(|r| r.0 == id)
            .ok_or_else(|| HubError::Remote { code: ErrorCode::NotFound, message: format!("no revision {id} in {repo}") })?;
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
            let nodes = self.get_nodes(repo, &ids).await?;
            let mut next = Vec::new();
            for ((_, base), (_, node)) in level.iter().zip(nodes) {
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
            let recs = self.get_chunks(repo, &ids).await?;
            let by_id: HashMap<Id, &VerifiedRecord> = recs.iter().map(|r| (r.id(), r)).collect();
            for (cid, lo, size) in batch {
                let raw = ferry_core::codec::decode(by_id[cid].record())?;
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

/// Runs `f` over `items` with at most `n` in flight; the first error wins.
async fn run_parallel<T, F>(items: Vec<T>, n: usize, f: F) -> Result<()>
where
    F: AsyncFn(T) -> Result<()>,
{
    use std::future::Future;
    use std::pin::Pin;
    let mut pending: Vec<Pin<Box<dyn Future<Output = Result<()>> + '_>>> = Vec::new();
    let mut items = items.into_iter();
    let f = &f;
    loop {
        while pending.len() < n {
            match items.next() {
                Some(it) => pending.push(Box::pin(f(it))),
                None => break,
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        let (res, _, rest) = futures_select_all(pending).await;
        pending = rest;
        res?;
    }
}

/// Waits for the first of several futures (a small `select_all`).
async fn futures_select_all<'a>(
    mut futs: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>>>,
) -> (Result<()>, usize, Vec<std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>>>) {
    std::future::poll_fn(move |cx| {
        for i in 0..futs.len() {
            if let std::task::Poll::Ready(r) = futs[i].as_mut().poll(cx) {
                drop(futs.swap_remove(i)); // finished: drop it, not poll it again
                return std::task::Poll::Ready((r, i, std::mem::take(&mut futs)));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

//! `ferry serve`: a hub on QUIC (UDP) and TLS over TCP, on the same port.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_core::revision::Revision;
use ferry_proto::{ErrorCode, Message, MAX_FRAME_LEN};
use ferry_store::{ChunkStore, Store, StoreError, VerifiedRecord};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::access::{Access, Grant};
use crate::tls::Identity;
use crate::wire::{read_message_patiently, write_message, Impatient, Patience};
use crate::{HubError, Result};

pub struct ServeOptions {
    pub listen: SocketAddr,
    /// Failed token attempts per address per minute before refusing.
    pub max_auth_failures: u32,
}

struct Hub {
    store: Arc<Store>,
    access: Access,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    max_failures: u32,
}

/// An error to send to the client as an `Error` frame.
struct Refusal(ErrorCode, String);

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Refusal {
        let code = match &e {
            StoreError::Conflict { .. } => ErrorCode::Conflict,
            StoreError::MissingChunk(_) | StoreError::MissingNode(_) | StoreError::Incomplete(_) => ErrorCode::Incomplete,
            StoreError::Format(_) => ErrorCode::BadRequest,
            StoreError::UnknownRevision(_) => ErrorCode::NotFound,
            _ => ErrorCode::Internal,
        };
        let msg = match &e {
            StoreError::Conflict { .. } => format!("{e} (pull first)"),
            _ => e.to_string(),
        };
        Refusal(code, msg)
    }
}

impl From<ferry_core::FormatError> for Refusal {
    fn from(e: ferry_core::FormatError) -> Refusal {
        match e {
            ferry_core::FormatError::HashMismatch { .. } => Refusal(ErrorCode::Corrupt, format!("{e}; nothing from this request was stored")),
            e => Refusal(ErrorCode::BadRequest, e.to_string()),
        }
    }
}

fn not_found(repo: &str) -> Refusal {
    Refusal(ErrorCode::NotFound, format!("repository {repo:?} not found (or your token does not grant access to it)"))
}

/// Runs a hub until the process ends. Prints nothing itself; the caller
/// reports the fingerprint.
pub async fn serve(store: Arc<Store>, identity: &Identity, opts: ServeOptions, ready: impl FnOnce(SocketAddr)) -> Result<()> {
    let access = Access::new(crate::access::access_path(store.path()));
    access.current()?;
    let hub = Arc::new(Hub { store, access, failures: Mutex::new(HashMap::new()), max_failures: opts.max_auth_failures });
    let tls = identity.server_config()?;
    let quic_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls.clone()).map_err(|e| HubError::Tls(e.to_string()))?;
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(quic_crypto));
    server_config.transport_config(Arc::new(crate::transport_config()));
    let tcp = tokio::net::TcpListener::bind(opts.listen).await.map_err(|e| HubError::Io(format!("listen on TCP {}: {e}", opts.listen)))?;
    let addr = tcp.local_addr().map_err(|e| HubError::Io(e.to_string()))?;
    let socket = crate::udp_socket(addr).map_err(|e| HubError::Io(format!("listen on UDP {addr}: {e}")))?;
    let endpoint = quinn::Endpoint::new(crate::endpoint_config(Some(identity.reset_key())), Some(server_config), socket, Arc::new(quinn::TokioRuntime))
        .map_err(|e| HubError::Io(e.to_string()))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    ready(addr);
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { return Ok(()) };
                let hub = hub.clone();
                tokio::spawn(async move {
                    if let Err(e) = quic_connection(hub, incoming).await {
                        tracing::debug!("QUIC connection ended: {e}");
                    }
                });
            }
            accepted = tcp.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                crate::wire::tcp_liveness(&stream);
                let (hub, acceptor) = (hub.clone(), acceptor.clone());
                tokio::spawn(async move {
                    if let Err(e) = tcp_connection(hub, acceptor, stream, peer.ip()).await {
                        tracing::debug!("TCP connection ended: {e}");
                    }
                });
            }
        }
    }
}

async fn quic_connection(hub: Arc<Hub>, incoming: quinn::Incoming) -> Result<()> {
    let conn = tokio::time::timeout(Duration::from_secs(10), incoming)
        .await
        .map_err(|_| HubError::Timeout("handshake".into()))?
        .map_err(|e| HubError::Lost(e.to_string()))?;
    let peer = conn.remote_address().ip();
    let (mut send, mut recv) = tokio::time::timeout(Duration::from_secs(10), conn.accept_bi())
        .await
        .map_err(|_| HubError::Timeout("hello".into()))?
        .map_err(|e| HubError::Lost(e.to_string()))?;
    let grant = handshake(&hub, peer, &mut recv, &mut send).await;
    let _ = send.finish();
    let Some(grant) = grant? else {
        // Let the Error frame reach the client before closing.
        tokio::time::sleep(Duration::from_millis(200)).await;
        conn.close(1u32.into(), b"unauthorized");
        return Ok(());
    };
    let grant = Arc::new(grant);
    loop {
        let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| HubError::Lost(e.to_string()))?;
        let (hub, grant) = (hub.clone(), grant.clone());
        let activity = crate::wire::StreamActivity::new(&conn);
        tokio::spawn(async move {
            if let Ok(Some(req)) = read_or_refuse(&mut recv, &mut send, &activity).await {
                let _ = respond(&hub, &grant, req, &mut send).await;
            }
            let _ = send.finish();
        });
    }
}

async fn tcp_connection(hub: Arc<Hub>, acceptor: tokio_rustls::TlsAcceptor, stream: tokio::net::TcpStream, peer: IpAddr) -> Result<()> {
    let tls = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
        .await
        .map_err(|_| HubError::Timeout("handshake".into()))?
        .map_err(|e| HubError::Tls(e.to_string()))?;
    let (mut r, mut w) = tokio::io::split(tls);
    let res = tcp_session(&hub, peer, &mut r, &mut w).await;
    // Close with close_notify so that a final Error frame is not lost.
    let _ = w.shutdown().await;
    res
}

async fn tcp_session<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(hub: &Arc<Hub>, peer: IpAddr, r: &mut R, w: &mut W) -> Result<()> {
    let Some(grant) = handshake(hub, peer, r, w).await? else { return Ok(()) };
    let grant = Arc::new(grant);
    // Requests follow one another on the connection.
    while let Some(req) = read_or_refuse(r, w, &Impatient).await? {
        respond(hub, &grant, req, w).await?;
    }
    Ok(())
}

/// Reads a frame; one that breaks the protocol is answered with an `Error`
/// frame naming what was wrong before the error is returned.
async fn read_or_refuse<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(r: &mut R, w: &mut W, patience: &dyn Patience) -> Result<Option<Message>> {
    match read_message_patiently(r, patience).await {
        Err(HubError::Protocol(msg)) => {
            let _ = write_message(w, &Message::Error { code: ErrorCode::BadRequest, message: msg.clone() }).await;
            let _ = w.flush().await;
            Err(HubError::Protocol(msg))
        }
        other => other,
    }
}

/// Reads `Hello`, checks version and token; answers `Welcome` (then `Done`)
/// or an `Error`. Returns None when the client was refused.
async fn handshake<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(hub: &Hub, peer: IpAddr, r: &mut R, w: &mut W) -> Result<Option<Grant>> {
    let refuse = |code, message: String| Message::Error { code, message };
    let reply = match read_or_refuse(r, w, &Impatient).await? {
        Some(Message::Hello { versions, token, .. }) => {
            if !versions.contains(&ferry_proto::VERSION) {
                Err(refuse(
                    ErrorCode::UnsupportedVersion,
                    format!("this hub speaks ferry protocol version {} only; you offered {versions:?}", ferry_proto::VERSION),
                ))
            } else if hub.rate_limited(peer) {
                Err(refuse(ErrorCode::RateLimited, "too many failed token attempts from your address; wait a minute".into()))
            } else if token.is_empty() {
                Ok(Grant { token: None })
            } else {
                let access = hub.access.current()?;
                match access.check(&token) {
                    Some(rec) => Ok(Grant { token: Some(rec.clone()) }),
                    None => {
                        hub.record_failure(peer);
                        // Slow down guessing.
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        Err(refuse(ErrorCode::Unauthorized, "the token is not valid for this hub".into()))
                    }
                }
            }
        }
        Some(_) => Err(refuse(ErrorCode::BadRequest, "the first frame must be Hello".into())),
        None => return Ok(None),
    };
    match reply {
        Ok(grant) => {
            write_message(w, &Message::Welcome { version: ferry_proto::VERSION, server: format!("ferry/{}", env!("CARGO_PKG_VERSION")) }).await?;
            write_message(w, &Message::Done).await?;
            w.flush().await.map_err(|e| HubError::Lost(e.to_string()))?;
            Ok(Some(grant))
        }
        Err(msg) => {
            write_message(w, &msg).await?;
            w.flush().await.map_err(|e| HubError::Lost(e.to_string()))?;
            Ok(None)
        }
    }
}

impl Hub {
    fn rate_limited(&self, peer: IpAddr) -> bool {
        let f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        f.get(&peer).is_some_and(|(n, since)| *n >= self.max_failures && since.elapsed() < Duration::from_secs(60))
    }
    fn record_failure(&self, peer: IpAddr) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let e = f.entry(peer).or_insert((0, Instant::now()));
        if e.1.elapsed() >= Duration::from_secs(60) {
            *e = (0, Instant::now());
        }
        e.0 += 1;
    }

    fn check_read(&self, grant: &Grant, repo: &str) -> Result<(), Refusal> {
        let access = self.access.current().map_err(|e| Refusal(ErrorCode::Internal, e.to_string()))?;
        if ferry_core::names::check_repo_name(repo).is_err() || !grant.can_read(&access, repo) {
            return Err(not_found(repo));
        }
        Ok(())
    }

    fn check_write(&self, grant: &Grant, repo: &str) -> Result<(), Refusal> {
        ferry_core::names::check_repo_name(repo).map_err(|e| Refusal(ErrorCode::BadRequest, e.to_string()))?;
        if grant.can_write(repo) {
            return Ok(());
        }
        let access = self.access.current().map_err(|e| Refusal(ErrorCode::Internal, e.to_string()))?;
        if grant.can_read(&access, repo) && self.store.repo(repo).is_ok() {
            return Err(Refusal(ErrorCode::Forbidden, format!("you may read {repo} but not write to it (a write token is needed)")));
        }
        Err(not_found(repo))
    }
}

/// Longest a `ListRepos` may wait for the change feed to move: well inside
/// the silence a client tolerates.
const LONGEST_POLL: Duration = Duration::from_secs(20);

/// Answers one request: zero or more data frames, then `Done` or `Error`.
async fn respond<W: AsyncWrite + Unpin>(hub: &Arc<Hub>, grant: &Arc<Grant>, req: Message, w: &mut W) -> Result<()> {
    if let Message::ListRepos { since, hub: feed, wait_ms, .. } = &req {
        // A long poll: a follower learns of a new revision at once, and an
        // idle one costs a request per wait, not a listing per interval.
        if *since > 0 && *feed == hub.store.id() {
            let deadline = Instant::now() + Duration::from_millis(u64::from(*wait_ms)).min(LONGEST_POLL);
            while hub.store.ref_seq() <= *since && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let frames = {
        let (hub, grant) = (hub.clone(), grant.clone());
        tokio::task::spawn_blocking(move || answer(&hub, &grant, req)).await.map_err(|e| HubError::Io(e.to_string()))?
    };
    let frames = match frames {
        Ok(mut f) => {
            f.push(Message::Done);
            f
        }
        Err(Refusal(code, message)) => vec![Message::Error { code, message }],
    };
    for f in &frames {
        write_message(w, f).await?;
    }
    w.flush().await.map_err(|e| HubError::Lost(e.to_string()))?;
    Ok(())
}

fn bitmap(v: Vec<bool>) -> Vec<Message> {
    vec![Message::Bitmap { bits: v }]
}

/// Splits blobs into frames that each stay under the frame limit.
fn pack<T>(items: Vec<T>, size: impl Fn(&T) -> usize, wrap: impl Fn(Vec<T>) -> Message) -> Vec<Message> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut bytes = 0;
    for it in items {
        let s = size(&it) + 40;
        if !cur.is_empty() && bytes + s > MAX_FRAME_LEN - 1024 {
            out.push(wrap(std::mem::take(&mut cur)));
            bytes = 0;
        }
        bytes += s;
        cur.push(it);
    }
    if !cur.is_empty() {
        out.push(wrap(cur));
    }
    out
}

fn answer(hub: &Hub, grant: &Grant, req: Message) -> Result<Vec<Message>, Refusal> {
    let store = &hub.store;
    match req {
        Message::ListRefs { repo } => {
            hub.check_read(grant, &repo)?;
            if store.repo(&repo).is_err() {
                return Err(not_found(&repo));
            }
            let access = hub.access.current().map_err(|e| Refusal(ErrorCode::Internal, e.to_string()))?;
            Ok(vec![Message::Refs { public: access.is_public(&repo), branches: store.branches(&repo)? }])
        }
        Message::GetHistory { repo, from, until, max } => {
            hub.check_read(grant, &repo)?;
            let max = (max as usize).min(ferry_proto::message::MAX_REVISIONS);
            let out = store.history(&from, &until, max)?;
            Ok(pack(out, |b| b.len(), |revisions| Message::Revisions { revisions }))
        }
        Message::ListRepos { pattern, after, since, hub: feed, wait_ms: _ } => {
            let glob = crate::ends::repo_glob(&pattern).map_err(|e| Refusal(ErrorCode::BadRequest, e.to_string()))?;
            let access = hub.access.current().map_err(|e| Refusal(ErrorCode::Internal, e.to_string()))?;
            // Every repository, or only those the change feed names since
            // the client's position (if it is this store's and still kept).
            let delta = if since > 0 && feed == store.id() { store.ref_changes_since(since)? } else { None };
            let changes_only = delta.is_some();
            let (names, seq): (Vec<String>, u64) = match delta {
                Some((repos, upto)) => (repos.into_iter().collect(), upto),
                None => {
                    // The position first: a change during the listing is
                    // listed again next time rather than missed.
                    let seq = store.ref_seq();
                    (store.repos()?.into_iter().map(|r| r.name).collect(), seq)
                }
            };
            // One page that fits a frame; a repository with more branches
            // than that still gets a page of its own.
            let mut repos = Vec::new();
            let mut bytes = 0;
            let mut more = false;
            for name in names {
                if name.as_str() <= after.as_str() || !glob.is_match(&name) || !grant.can_read(&access, &name) {
                    continue;
                }
                let branches = store.branches(&name)?;
                let size = 9 + name.len() + branches.iter().map(|b| 36 + b.0.len()).sum::<usize>();
                if !repos.is_empty() && (bytes + size > MAX_FRAME_LEN - 1024 || repos.len() == ferry_proto::message::MAX_REPOS) {
                    more = true;
                    break;
                }
                bytes += size;
                repos.push(ferry_proto::RepoRefs { public: access.is_public(&name), name, branches });
            }
            Ok(vec![Message::Repos { more, changes_only, hub: store.id(), seq, repos }])
        }
        Message::HaveRevisions { repo, ids } => {
            hub.check_read(grant, &repo)?;
            Ok(bitmap(ids.iter().map(|i| store.has_revision(i)).collect::<Result<_, _>>()?))
        }
        Message::HaveNodes { repo, ids } => {
            hub.check_write(grant, &repo)?;
            Ok(bitmap(store.has_nodes(&ids)?))
        }
        Message::HaveChunks { repo, ids } => {
            hub.check_write(grant, &repo)?;
            Ok(bitmap(store.chunk_store().contains(&ids)?))
        }
        Message::GetNodes { repo, ids } => {
            hub.check_read(grant, &repo)?;
            let mut nodes = Vec::with_capacity(ids.len());
            for id in &ids {
                nodes.push(store.node_bytes(id)?.ok_or_else(|| Refusal(ErrorCode::NotFound, format!("tree node {id} is not on this hub")))?);
            }
            Ok(pack(nodes, |n| n.len(), |nodes| Message::Nodes { nodes }))
        }
        Message::GetChunks { repo, ids } => {
            hub.check_read(grant, &repo)?;
            let mut chunks = Vec::with_capacity(ids.len());
            for id in ids {
                let rec = store.chunk_store().get_record(&id)?.ok_or_else(|| Refusal(ErrorCode::NotFound, format!("chunk {id} is not on this hub")))?;
                chunks.push((id, rec));
            }
            Ok(pack(chunks, |c| c.1.len(), |chunks| Message::Chunks { chunks }))
        }
        Message::PutChunks { repo, chunks } => {
            hub.check_write(grant, &repo)?;
            // Verify all before storing any: a bad chunk stores nothing.
            let mut verified = Vec::with_capacity(chunks.len());
            for (id, rec) in chunks {
                verified.push(VerifiedRecord::verify(id, rec)?);
            }
            store.write_session().put_records(&verified)?;
            Ok(vec![])
        }
        Message::PutNodes { repo, nodes } => {
            hub.check_write(grant, &repo)?;
            store.write_session().put_nodes_checked(&nodes)?;
            Ok(vec![])
        }
        Message::PutRevisions { repo, revisions } => {
            hub.check_write(grant, &repo)?;
            let revs = revisions.iter().map(|b| Revision::decode(b)).collect::<Result<Vec<_>, _>>()?;
            store.write_session().put_revisions(&revs)?;
            Ok(vec![])
        }
        Message::UpdateBranch { repo, branch, expected, new, revisions } => {
            hub.check_write(grant, &repo)?;
            let revs = revisions.iter().map(|b| Revision::decode(b)).collect::<Result<Vec<_>, _>>()?;
            store.write_session().publish(&repo, &branch, expected, new, &revs)?;
            Ok(vec![])
        }
        Message::Hello { .. } => Err(Refusal(ErrorCode::BadRequest, "Hello was already exchanged on this connection".into())),
        other => Err(Refusal(ErrorCode::BadRequest, format!("frame type {:#04x} is not a request", other.tag()))),
    }
}

//! `ferry serve`: the QUIC (UDP) and TLS-over-TCP door onto the hub
//! service, on one port. It admits connections, authenticates Hello,
//! decodes requests, asks the service, and encodes the answers; what a
//! request means is the service's business.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_net::tls::Identity;
use ferry_net::wire::{read_message_patiently, write_message, Impatient, Patience, StreamActivity};
use ferry_net::{NetError, Result};
use ferry_proto::{ErrorCode, Message};
use ferry_service::{HubService, ReposQuery, ServiceError, Session};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How the door runs.
pub struct ServeOptions {
    /// Where to listen (UDP for QUIC and TCP, the same port).
    pub listen: SocketAddr,
    /// A connection with no request in progress for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once (QUIC and TCP together); the hub's memory
    /// is bounded by this times what one connection may make it buffer.
    /// Beyond it a client is told the hub is busy.
    pub max_connections: usize,
}

struct Door {
    service: Arc<HubService>,
    idle_timeout: Duration,
    max_connections: usize,
    connections: Arc<Semaphore>,
    /// Connections over the limit that are being told so; past these few a
    /// connection is dropped without a word, so that a flood costs no TLS.
    refusing: Arc<Semaphore>,
}

/// A connection's place in the hub, held until the connection ends.
struct Admission {
    /// Over the limit: the handshake only answers that the hub is busy.
    full: bool,
    _slot: OwnedSemaphorePermit,
}

impl Door {
    /// One of `max_connections`, or else one of the few places for telling
    /// a client the hub is full; None when those are taken too.
    fn admit(&self) -> Option<Admission> {
        if let Ok(slot) = self.connections.clone().try_acquire_owned() {
            return Some(Admission { full: false, _slot: slot });
        }
        self.refusing.clone().try_acquire_owned().ok().map(|slot| Admission { full: true, _slot: slot })
    }
}

fn refusal(e: ServiceError) -> Message {
    if e.code == ErrorCode::Internal {
        tracing::warn!("request failed: {}", e.full_text());
    }
    Message::Error { code: e.code, message: e.message }
}

/// Serves `service` until the process ends. Prints nothing itself; the
/// caller reports the address (`ready`) and the fingerprint.
pub async fn serve(service: Arc<HubService>, identity: &Identity, opts: ServeOptions, ready: impl FnOnce(SocketAddr)) -> Result<()> {
    let hub = Arc::new(Door {
        service,
        idle_timeout: opts.idle_timeout,
        max_connections: opts.max_connections,
        connections: Arc::new(Semaphore::new(opts.max_connections)),
        refusing: Arc::new(Semaphore::new(REFUSING_AT_ONCE)),
    });
    let tls = identity.server_config()?;
    let quic_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls.clone()).map_err(|e| NetError::Tls(e.to_string()))?;
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(quic_crypto));
    server_config.transport_config(Arc::new(ferry_net::transport_config()));
    let tcp = tokio::net::TcpListener::bind(opts.listen).await.map_err(|e| NetError::Io(format!("listen on TCP {}: {e}", opts.listen)))?;
    let addr = tcp.local_addr().map_err(|e| NetError::Io(e.to_string()))?;
    let socket = ferry_net::udp_socket(addr).map_err(|e| NetError::Io(format!("listen on UDP {addr}: {e}")))?;
    let endpoint = quinn::Endpoint::new(ferry_net::endpoint_config(Some(identity.reset_key())), Some(server_config), socket, Arc::new(quinn::TokioRuntime))
        .map_err(|e| NetError::Io(e.to_string()))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    ready(addr);
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { return Ok(()) };
                let Some(admission) = hub.admit() else {
                    incoming.refuse();
                    continue;
                };
                let hub = hub.clone();
                tokio::spawn(async move {
                    if let Err(e) = quic_connection(hub, incoming, admission).await {
                        tracing::debug!("QUIC connection ended: {e}");
                    }
                });
            }
            accepted = tcp.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let Some(admission) = hub.admit() else { continue };
                let _ = stream.set_nodelay(true);
                ferry_net::wire::tcp_liveness(&stream);
                let (hub, acceptor) = (hub.clone(), acceptor.clone());
                tokio::spawn(async move {
                    if let Err(e) = tcp_connection(hub, acceptor, stream, peer.ip(), admission).await {
                        tracing::debug!("TCP connection ended: {e}");
                    }
                });
            }
        }
    }
}

async fn quic_connection(hub: Arc<Door>, incoming: quinn::Incoming, admission: Admission) -> Result<()> {
    let conn = tokio::time::timeout(Duration::from_secs(10), incoming)
        .await
        .map_err(|_| NetError::Timeout("handshake".into()))?
        .map_err(|e| NetError::Lost(e.to_string()))?;
    let peer = conn.remote_address().ip();
    let (mut send, mut recv) = tokio::time::timeout(Duration::from_secs(10), conn.accept_bi())
        .await
        .map_err(|_| NetError::Timeout("hello".into()))?
        .map_err(|e| NetError::Lost(e.to_string()))?;
    let full = admission.full;
    let grant = handshake(&hub, peer, full, &mut recv, &mut send).await;
    let _ = send.finish();
    let Some(grant) = grant? else {
        // Let the Error frame reach the client before closing.
        tokio::time::sleep(Duration::from_millis(200)).await;
        conn.close(1u32.into(), if full { &b"busy"[..] } else { b"unauthorized" });
        return Ok(());
    };
    let session = Arc::new(hub.service.session(grant));
    let activity = Arc::new(Activity::new());
    loop {
        // A client that keeps its connection alive but sends nothing holds
        // it only until the idle timeout (QUIC keep-alives alone would keep
        // it forever).
        let (mut send, mut recv) = match tokio::time::timeout(activity.idle_left(hub.idle_timeout), conn.accept_bi()).await {
            Ok(accepted) => accepted.map_err(|e| NetError::Lost(e.to_string()))?,
            Err(_) if activity.idle_left(hub.idle_timeout).is_zero() => {
                conn.close(2u32.into(), b"idle");
                return Ok(());
            }
            Err(_) => continue,
        };
        let (session, busy) = (session.clone(), activity.begin());
        // A request stream may wait while others use a slow link.
        let streams = StreamActivity::new(&conn);
        tokio::spawn(async move {
            if let Ok(Some(req)) = read_or_refuse(&mut recv, &mut send, &streams).await {
                if respond(&session, req, &mut send).await.is_err() {
                    // Drop what the peer left unread rather than keep it queued.
                    let _ = send.reset(0u32.into());
                }
            }
            let _ = send.finish();
            drop(busy);
        });
    }
}

/// Requests in progress on a QUIC connection, and when the last one ended.
struct Activity(Mutex<(usize, Instant)>);

impl Activity {
    fn new() -> Activity {
        Activity(Mutex::new((0, Instant::now())))
    }
    fn begin(self: &Arc<Self>) -> Busy {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).0 += 1;
        Busy(self.clone())
    }
    /// How much longer the connection may stay idle (all of `limit` while a
    /// request is in progress).
    fn idle_left(&self, limit: Duration) -> Duration {
        let (active, since) = *self.0.lock().unwrap_or_else(|p| p.into_inner());
        if active > 0 {
            limit
        } else {
            limit.saturating_sub(since.elapsed())
        }
    }
}

struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut a = self.0 .0.lock().unwrap_or_else(|p| p.into_inner());
        a.0 -= 1;
        a.1 = Instant::now();
    }
}

async fn tcp_connection(hub: Arc<Door>, acceptor: tokio_rustls::TlsAcceptor, stream: tokio::net::TcpStream, peer: IpAddr, admission: Admission) -> Result<()> {
    let tls = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
        .await
        .map_err(|_| NetError::Timeout("handshake".into()))?
        .map_err(|e| NetError::Tls(e.to_string()))?;
    let (mut r, mut w) = tokio::io::split(tls);
    let res = tcp_session(&hub, peer, admission.full, &mut r, &mut w).await;
    // Close with close_notify so that a final Error frame is not lost.
    let _ = w.shutdown().await;
    res
}

async fn tcp_session<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(hub: &Arc<Door>, peer: IpAddr, full: bool, r: &mut R, w: &mut W) -> Result<()> {
    let mut r = tokio::io::BufReader::new(r);
    let Some(grant) = handshake(hub, peer, full, &mut r, w).await? else { return Ok(()) };
    let session = Arc::new(hub.service.session(grant));
    // Requests follow one another on the connection; between them the
    // client may stay silent up to the idle timeout.
    loop {
        match tokio::time::timeout(hub.idle_timeout, r.fill_buf()).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) => return Err(NetError::Lost(e.to_string())),
            Ok(Ok([])) => return Ok(()),
            Ok(Ok(_)) => {}
        }
        let Some(req) = read_or_refuse(&mut r, w, &Impatient).await? else { return Ok(()) };
        respond(&session, req, w).await?;
    }
}

/// Reads a frame; one that breaks the protocol is answered with an `Error`
/// frame naming what was wrong before the error is returned.
async fn read_or_refuse<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(r: &mut R, w: &mut W, patience: &dyn Patience) -> Result<Option<Message>> {
    match read_message_patiently(r, patience).await {
        Err(NetError::Protocol(msg)) => {
            let _ = write_message(w, &Message::Error { code: ErrorCode::BadRequest, message: msg.clone() }).await;
            let _ = w.flush().await;
            Err(NetError::Protocol(msg))
        }
        other => other,
    }
}

/// Reads `Hello`, checks version and token; answers `Welcome` (then `Done`)
/// or an `Error`. Returns None when the client was refused. `full`: the hub
/// is at its connection limit, which is all this connection gets told.
async fn handshake<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    hub: &Door,
    peer: IpAddr,
    full: bool,
    r: &mut R,
    w: &mut W,
) -> Result<Option<ferry_service::Grant>> {
    let refuse = |code, message: String| Message::Error { code, message };
    let reply = match read_or_refuse(r, w, &Impatient).await? {
        Some(Message::Hello { versions, token, .. }) => {
            if !versions.contains(&ferry_proto::VERSION) {
                Err(refuse(
                    ErrorCode::UnsupportedVersion,
                    format!("this hub speaks ferry protocol version {} only; you offered {versions:?}", ferry_proto::VERSION),
                ))
            } else if full {
                Err(refuse(
                    ErrorCode::RateLimited,
                    format!("the hub is busy: it is serving its limit of {} connections; retry in a moment", hub.max_connections),
                ))
            } else {
                hub.service.authenticate(&token, peer).await.map_err(refusal)
            }
        }
        Some(_) => Err(refuse(ErrorCode::BadRequest, "the first frame must be Hello".into())),
        None => return Ok(None),
    };
    match reply {
        Ok(grant) => {
            write_message(w, &Message::Welcome { version: ferry_proto::VERSION, server: format!("ferry/{}", env!("CARGO_PKG_VERSION")) }).await?;
            write_message(w, &Message::Done).await?;
            w.flush().await.map_err(|e| NetError::Lost(e.to_string()))?;
            Ok(Some(grant))
        }
        Err(msg) => {
            write_message(w, &msg).await?;
            w.flush().await.map_err(|e| NetError::Lost(e.to_string()))?;
            Ok(None)
        }
    }
}

/// Connections over the limit told so at once (each costs a TLS handshake).
const REFUSING_AT_ONCE: usize = 16;

/// Answers one request: zero or more data frames, then `Done` or `Error`.
async fn respond<W: AsyncWrite + Unpin>(session: &Arc<Session>, req: Message, w: &mut W) -> Result<()> {
    if let Message::ListRepos { since, hub: feed, wait_ms, .. } = &req {
        session.wait_for_change(*feed, *since, Duration::from_millis(u64::from(*wait_ms))).await;
    }
    if matches!(req, Message::GetHistory { .. } | Message::GetNodes { .. } | Message::GetChunks { .. }) {
        return respond_a_frame_at_a_time(session, req, w).await;
    }
    let frames = {
        let session = session.clone();
        tokio::task::spawn_blocking(move || answer(&session, req)).await.map_err(|e| NetError::Io(e.to_string()))?
    };
    let frames = match frames {
        Ok(data) => data.into_iter().chain([Message::Done]).collect(),
        Err(e) => vec![refusal(e)],
    };
    for f in &frames {
        send(w, f).await?;
    }
    w.flush().await.map_err(|e| NetError::Lost(e.to_string()))?;
    Ok(())
}

/// How long a peer may leave an answer unread before the hub gives up on it.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

async fn send<W: AsyncWrite + Unpin>(w: &mut W, m: &Message) -> Result<()> {
    tokio::time::timeout(SEND_TIMEOUT, write_message(w, m)).await.map_err(|_| NetError::Timeout("the peer read nothing for 30 s".into()))??;
    Ok(())
}

/// Answers the requests whose answers may be large (16 384 chunks of
/// 256 KiB are 4 GiB) a frame at a time: a blocking task reads and packs,
/// and a channel holding one frame hands them to the writer. A request
/// then costs the hub about two frames of memory however much it asks for,
/// and a client that stops reading stalls only its own request, until
/// `SEND_TIMEOUT`.
async fn respond_a_frame_at_a_time<W: AsyncWrite + Unpin>(session: &Arc<Session>, req: Message, w: &mut W) -> Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(1);
    let session = session.clone();
    tokio::task::spawn_blocking(move || {
        let send = |m: Message| tx.blocking_send(m).map_err(|_| ServiceError::internal("the client stopped reading"));
        let res = match req {
            Message::GetHistory { repo, from, until, max } => {
                session.history(&repo, &from, &until, max as usize, &mut |revisions| send(Message::Revisions { revisions }))
            }
            Message::GetNodes { repo, ids } => session.nodes(&repo, &ids, &mut |nodes| send(Message::Nodes { nodes })),
            Message::GetChunks { repo, ids } => session.chunks(&repo, &ids, &mut |chunks| send(Message::Chunks { chunks })),
            other => Err(ServiceError::internal(format!("frame type {:#04x} is not answered a frame at a time", other.tag()))),
        };
        let _ = tx.blocking_send(match res {
            Ok(()) => Message::Done,
            Err(e) => refusal(e),
        });
    });
    while let Some(m) = rx.recv().await {
        send(w, &m).await?;
    }
    w.flush().await.map_err(|e| NetError::Lost(e.to_string()))?;
    Ok(())
}

/// Answers a request whose answer is at most one data frame.
fn answer(session: &Session, req: Message) -> Result<Option<Message>, ServiceError> {
    let bitmap = |bits: Vec<bool>| Message::Bitmap { bits };
    Ok(Some(match req {
        Message::ListRefs { repo } => {
            let refs = session.refs(&repo)?;
            Message::Refs { public: refs.public, branches: refs.branches }
        }
        Message::ListRepos { pattern, after, since, hub, wait_ms: _ } => {
            let page = session.list_repos(&ReposQuery { pattern, after, since: Some((hub, since)) })?;
            Message::Repos { more: page.more, changes_only: page.changes_only, hub: page.hub, seq: page.seq, repos: page.repos }
        }
        Message::HaveRevisions { repo, ids } => bitmap(session.have_revisions(&repo, &ids)?),
        Message::HaveNodes { repo, ids } => bitmap(session.have_nodes(&repo, &ids)?),
        Message::HaveChunks { repo, ids } => bitmap(session.have_chunks(&repo, &ids)?),
        Message::PutChunks { repo, chunks } => {
            session.put_chunks(&repo, chunks)?;
            return Ok(None);
        }
        Message::PutNodes { repo, nodes } => {
            session.put_nodes(&repo, &nodes)?;
            return Ok(None);
        }
        Message::PutRevisions { repo, revisions } => {
            session.put_revisions(&repo, &revisions)?;
            return Ok(None);
        }
        Message::UpdateBranch { repo, branch, expected, new, revisions } => {
            session.update_branch(&repo, &branch, expected, new, &revisions)?;
            return Ok(None);
        }
        Message::Hello { .. } => return Err(ServiceError::new(ErrorCode::BadRequest, "Hello was already exchanged on this connection")),
        other => return Err(ServiceError::new(ErrorCode::BadRequest, format!("frame type {:#04x} is not a request", other.tag()))),
    }))
}

//! `ferry serve`: the QUIC (UDP) and TLS-over-TCP door onto the hub
//! service, on one port. It admits connections, authenticates Hello,
//! decodes requests, asks the service, and encodes the answers; what a
//! request means is the service's business.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_net::tls::Identity;
use ferry_net::wire::{read_header, read_message_within, read_payload, write_message, Impatient, Patience, StreamActivity};
use ferry_net::{NetError, Result};
use ferry_proto::{ErrorCode, Message};
use ferry_service::{Grant, HubService, ReposQuery, ServiceError, Session};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::budget::{Budget, Held};

/// How the door runs.
pub struct ServeOptions {
    /// Where to listen (UDP for QUIC and TCP, the same port).
    pub listen: SocketAddr,
    /// A connection with no request in progress for this long is closed.
    pub idle_timeout: Duration,
    /// Authenticated connections served at once (QUIC and TCP together);
    /// one more is told the hub is busy.
    pub max_connections: usize,
    /// Connections that have not said Hello yet, at once: a stranger holds
    /// one of these (for at most [`HELLO_DEADLINE`]), never a place of an
    /// authenticated client. Past them a connection is refused before TLS.
    pub max_unauthenticated: usize,
    /// Bytes all connections together may make the hub hold for their
    /// windows, requests and answers (see [`crate::budget`]); past it a
    /// connection or request is told the hub is busy.
    pub memory_budget: usize,
}

/// The default of [`ServeOptions::max_unauthenticated`].
pub const DEFAULT_MAX_UNAUTHENTICATED: usize = 64;

/// From accepting a connection to a complete `Hello`: TLS, the first
/// stream and the frame all within this, however they trickle in.
pub const HELLO_DEADLINE: Duration = Duration::from_secs(10);

/// The largest `Hello` payload (an honest one is under 600 bytes).
pub const MAX_HELLO_LEN: usize = 1024;

/// What a QUIC peer may make the hub buffer before its Hello succeeds:
/// the connection's receive and send windows (its one stream included).
const HANDSHAKE_WINDOW: u32 = 16 << 10;

/// How often an open connection's token is checked again, so that a
/// revoked token's connections close within about this long.
const RECHECK_EVERY: Duration = Duration::from_secs(1);

/// QUIC application close codes (`protocol/wire.md` section 1).
mod close {
    pub const BUSY: u32 = 1;
    pub const IDLE: u32 = 2;
    pub const UNAUTHORIZED: u32 = 3;
    pub const UNSUPPORTED_VERSION: u32 = 4;
    pub const BAD_HELLO: u32 = 5;
    pub const REVOKED: u32 = 6;
}

/// The close code and reason that go with a refused Hello.
fn close_for(code: ErrorCode) -> (u32, &'static [u8]) {
    match code {
        ErrorCode::RateLimited => (close::BUSY, b"busy"),
        ErrorCode::Unauthorized => (close::UNAUTHORIZED, b"unauthorized"),
        ErrorCode::UnsupportedVersion => (close::UNSUPPORTED_VERSION, b"unsupported version"),
        _ => (close::BAD_HELLO, b"bad hello"),
    }
}

/// Connections from one address (an IPv4 address or an IPv6 /64) in their
/// handshake at once: one stranger cannot take every handshake place.
pub const MAX_HANDSHAKES_PER_ADDRESS: usize = 16;

struct Door {
    service: Arc<HubService>,
    idle_timeout: Duration,
    max_connections: usize,
    /// Places of authenticated connections.
    connections: Arc<Semaphore>,
    /// Places of connections still in their handshake.
    handshaking: Arc<Semaphore>,
    /// Handshakes in progress per address block.
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
    budget: Budget,
}

/// A connection's place while it says Hello: one of the door's handshake
/// places and one of its address's.
struct HandshakePlace {
    _place: OwnedSemaphorePermit,
    block: IpAddr,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for HandshakePlace {
    fn drop(&mut self) {
        let mut m = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.block) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.block);
            }
        }
    }
}

impl Door {
    /// A handshake place for a connection from `peer`, if one is free.
    fn admit(&self, peer: IpAddr) -> Option<HandshakePlace> {
        let block = ferry_service::address_block(peer);
        let mut m = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(block).or_insert(0);
        if *n >= MAX_HANDSHAKES_PER_ADDRESS {
            return None;
        }
        let place = self.handshaking.clone().try_acquire_owned().ok()?;
        *n += 1;
        Some(HandshakePlace { _place: place, block, per_address: self.per_address.clone() })
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
        handshaking: Arc::new(Semaphore::new(opts.max_unauthenticated)),
        per_address: Arc::default(),
        budget: Budget::new(opts.memory_budget, opts.max_connections),
    });
    let tls = identity.server_config()?;
    let quic_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls.clone()).map_err(|e| NetError::Tls(e.to_string()))?;
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(quic_crypto));
    server_config.transport_config(Arc::new(handshake_transport()));
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
                let Some(place) = hub.admit(incoming.remote_address().ip()) else {
                    incoming.refuse();
                    continue;
                };
                let hub = hub.clone();
                tokio::spawn(async move {
                    if let Err(e) = quic_connection(hub, incoming, place).await {
                        tracing::debug!("QUIC connection ended: {e}");
                    }
                });
            }
            accepted = tcp.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let Some(place) = hub.admit(peer.ip()) else { continue };
                let _ = stream.set_nodelay(true);
                ferry_net::wire::tcp_liveness(&stream);
                let (hub, acceptor) = (hub.clone(), acceptor.clone());
                tokio::spawn(async move {
                    if let Err(e) = tcp_connection(hub, acceptor, stream, peer.ip(), place).await {
                        tracing::debug!("TCP connection ended: {e}");
                    }
                });
            }
        }
    }
}

/// The transport a QUIC connection starts with: one stream and windows of
/// a few KiB until its Hello succeeds (then `open_up` widens them), so a
/// stranger cannot make the hub buffer more.
fn handshake_transport() -> quinn::TransportConfig {
    let mut t = ferry_net::transport_config();
    t.max_concurrent_bidi_streams(1u32.into());
    // The connection's window bounds every stream's together; a stream's
    // own window cannot be raised later, so it keeps its full size.
    t.receive_window(HANDSHAKE_WINDOW.into());
    t.send_window(HANDSHAKE_WINDOW.into());
    t
}

/// Gives an authenticated QUIC connection its streams and the windows the
/// memory budget affords it; the reservation lasts as long as `held`.
/// False: not even the smallest windows fit.
fn open_up(hub: &Door, conn: &quinn::Connection, held: &mut Option<OwnedSemaphorePermit>) -> bool {
    let others = hub.connections.available_permits();
    let Some((window, permit)) = hub.budget.windows(others) else { return false };
    *held = Some(permit);
    conn.set_max_concurrent_bi_streams(ferry_net::wire::MAX_STREAMS.into());
    conn.set_receive_window(window.into());
    conn.set_send_window(window.into());
    true
}

/// Why a handshake ended without a session: the frame to send, if any.
type Refused = Option<Message>;

/// After a refused handshake: the Error frame's code decides the QUIC
/// close code; the frame is given a moment to arrive.
async fn close_refused(conn: &quinn::Connection, refused: &Refused) {
    let code = match refused {
        Some(Message::Error { code, .. }) => *code,
        _ => ErrorCode::BadRequest,
    };
    if refused.is_some() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, reason) = close_for(code);
    conn.close(code.into(), reason);
}

async fn quic_connection(hub: Arc<Door>, incoming: quinn::Incoming, place: HandshakePlace) -> Result<()> {
    let started = Instant::now();
    let conn =
        tokio::time::timeout(HELLO_DEADLINE, incoming).await.map_err(|_| NetError::Timeout("handshake".into()))?.map_err(|e| NetError::Lost(e.to_string()))?;
    let peer = conn.remote_address().ip();
    let left = HELLO_DEADLINE.saturating_sub(started.elapsed());
    let (mut send, mut recv) = match tokio::time::timeout(left, conn.accept_bi()).await {
        Ok(accepted) => accepted.map_err(|e| NetError::Lost(e.to_string()))?,
        Err(_) => {
            close_refused(&conn, &None).await;
            return Err(NetError::Timeout("no Hello stream".into()));
        }
    };
    let mut windows = None;
    let outcome = handshake(&hub, peer, started, &mut recv, &mut send, || open_up(&hub, &conn, &mut windows)).await;
    let _ = send.finish();
    drop(place);
    let (grant, _slot, key) = match outcome {
        Ok(admitted) => admitted,
        Err(refused) => {
            close_refused(&conn, &refused).await;
            return Ok(());
        }
    };
    let session = Arc::new(open_session(&hub, grant, key, peer));
    let frames = Budget::connection();
    let activity = Arc::new(Activity::new());
    let revoked = {
        let session = session.clone();
        async move { session_revoked(&session).await }
    };
    tokio::pin!(revoked);
    loop {
        // A client that keeps its connection alive but sends nothing holds
        // it only until the idle timeout (QUIC keep-alives alone would keep
        // it forever).
        let accepted = tokio::select! {
            accepted = tokio::time::timeout(activity.idle_left(hub.idle_timeout), conn.accept_bi()) => accepted,
            () = &mut revoked => {
                conn.close(close::REVOKED.into(), b"revoked");
                return Ok(());
            }
        };
        let (mut send, mut recv) = match accepted {
            Ok(accepted) => accepted.map_err(|e| NetError::Lost(e.to_string()))?,
            Err(_) if activity.idle_left(hub.idle_timeout).is_zero() => {
                conn.close(close::IDLE.into(), b"idle");
                return Ok(());
            }
            Err(_) => continue,
        };
        let (hub, session, frames, busy) = (hub.clone(), session.clone(), frames.clone(), activity.begin());
        // A request stream may wait while others use a slow link.
        let streams = StreamActivity::new(&conn);
        tokio::spawn(async move {
            match read_request(&hub, &frames, &mut recv, &mut send, &streams).await {
                Ok(Request::Read(req, held)) => {
                    if respond(&session, req, &mut send).await.is_err() {
                        // Drop what the peer left unread rather than keep it queued.
                        let _ = send.reset(0u32.into());
                    }
                    drop(held);
                }
                Ok(Request::Ended) => {
                    let _ = send_error(&mut send, ErrorCode::BadRequest, "the request stream ended before a request").await;
                }
                Ok(Request::Busy(_)) => {
                    let _ = recv.stop(0u32.into());
                }
                Err(_) => {}
            }
            let _ = send.finish();
            drop(busy);
        });
    }
}

/// Resolves once the session's token no longer holds (revoked or
/// expired), checking every [`RECHECK_EVERY`].
async fn session_revoked(session: &Session) {
    loop {
        tokio::time::sleep(RECHECK_EVERY).await;
        if !session.still_valid() {
            return;
        }
    }
}

async fn send_error<W: AsyncWrite + Unpin>(w: &mut W, code: ErrorCode, message: &str) -> Result<()> {
    write_message(w, &Message::Error { code, message: message.into() }).await?;
    w.flush().await.map_err(|e| NetError::Lost(e.to_string()))
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

async fn tcp_connection(hub: Arc<Door>, acceptor: tokio_rustls::TlsAcceptor, stream: tokio::net::TcpStream, peer: IpAddr, place: HandshakePlace) -> Result<()> {
    let started = Instant::now();
    let tls = tokio::time::timeout(HELLO_DEADLINE, acceptor.accept(stream))
        .await
        .map_err(|_| NetError::Timeout("handshake".into()))?
        .map_err(|e| NetError::Tls(e.to_string()))?;
    if tls.get_ref().1.alpn_protocol() != Some(ferry_proto::ALPN) {
        return Err(NetError::Protocol("a TLS client that did not offer ALPN ferry/1".into()));
    }
    let (mut r, mut w) = tokio::io::split(tls);
    let res = tcp_session(&hub, peer, started, place, &mut r, &mut w).await;
    // Close with close_notify so that a final Error frame is not lost.
    let _ = w.shutdown().await;
    res
}

async fn tcp_session<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    hub: &Arc<Door>,
    peer: IpAddr,
    started: Instant,
    place: HandshakePlace,
    r: &mut R,
    w: &mut W,
) -> Result<()> {
    let mut r = tokio::io::BufReader::new(r);
    let outcome = handshake(hub, peer, started, &mut r, w, || true).await;
    drop(place);
    let Ok((grant, _slot, key)) = outcome else { return Ok(()) };
    let session = Arc::new(open_session(hub, grant, key, peer));
    let frames = Budget::connection();
    let revoked = session_revoked(&session);
    tokio::pin!(revoked);
    // Requests follow one another on the connection; between them the
    // client may stay silent up to the idle timeout.
    loop {
        tokio::select! {
            waited = tokio::time::timeout(hub.idle_timeout, r.fill_buf()) => match waited {
                Err(_) => return Ok(()),
                Ok(Err(e)) => return Err(NetError::Lost(e.to_string())),
                Ok(Ok([])) => return Ok(()),
                Ok(Ok(_)) => {}
            },
            () = &mut revoked => {
                let _ = send_error(w, ErrorCode::Unauthorized, "the token of this connection was revoked").await;
                return Ok(());
            }
        }
        match read_request(hub, &frames, &mut r, w, &Impatient).await? {
            Request::Read(req, _held) => respond(&session, req, w).await?,
            Request::Ended => return Ok(()),
            // The next frame starts after this one's payload.
            Request::Busy(len) => {
                tokio::io::copy(&mut (&mut r).take(len as u64), &mut tokio::io::sink()).await.map_err(|e| NetError::Lost(e.to_string()))?;
            }
        }
    }
}

/// What reading a request came to.
enum Request {
    /// A request, and what it holds of the memory budget until answered.
    Read(Message, Held),
    /// The stream ended cleanly before a frame.
    Ended,
    /// Out of memory budget: answered busy, the payload (of this many
    /// bytes) left unread.
    Busy(usize),
}

/// Reads a request's header, reserves what answering it may hold (see
/// [`crate::budget`]), then reads its payload. A frame that breaks the
/// protocol is answered with an `Error` frame naming what was wrong before
/// the error is returned.
async fn read_request<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    hub: &Door,
    connection: &Arc<Semaphore>,
    r: &mut R,
    w: &mut W,
    patience: &dyn Patience,
) -> Result<Request> {
    let read = async {
        let Some(header) = read_header(r, patience, ferry_proto::MAX_FRAME_LEN).await? else { return Ok(Request::Ended) };
        let Some(held) = hub.budget.request(connection, header).await else {
            let busy = "the hub is busy: its memory budget is spent; retry in a moment";
            send_error(w, ErrorCode::RateLimited, busy).await?;
            return Ok(Request::Busy(header.len));
        };
        Ok(Request::Read(read_payload(r, header, patience).await?, held))
    };
    match read.await {
        Err(NetError::Protocol(msg)) => {
            let _ = send_error(w, ErrorCode::BadRequest, &msg).await;
            Err(NetError::Protocol(msg))
        }
        other => other,
    }
}

/// Reads `Hello` (at most [`MAX_HELLO_LEN`] bytes, complete within
/// [`HELLO_DEADLINE`] of `started`), checks version and token, and takes a
/// place among the authenticated connections; answers `Welcome` (then
/// `Done`) or an `Error`. `admitted` runs just before `Welcome` is sent
/// (QUIC widens the connection's windows there, if the memory budget
/// affords them: false refuses the connection as busy). Err: refused, with
/// the frame that said so.
async fn handshake<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    hub: &Door,
    peer: IpAddr,
    started: Instant,
    r: &mut R,
    w: &mut W,
    admitted: impl FnOnce() -> bool,
) -> Result<(Grant, OwnedSemaphorePermit, Option<String>), Refused> {
    let refuse = |code, message: String| Message::Error { code, message };
    let left = HELLO_DEADLINE.saturating_sub(started.elapsed());
    let hello = match tokio::time::timeout(left, read_message_within(r, &Impatient, MAX_HELLO_LEN)).await {
        Err(_) => Err(refuse(ErrorCode::BadRequest, format!("no complete Hello within {} s", HELLO_DEADLINE.as_secs()))),
        Ok(Ok(Some(m))) => Ok(m),
        Ok(Ok(None)) => return Err(None),
        Ok(Err(NetError::Protocol(e))) => Err(refuse(ErrorCode::BadRequest, format!("the first frame must be a Hello: {e}"))),
        Ok(Err(_)) => return Err(None),
    };
    let reply = match hello {
        Ok(Message::Hello { versions, token, client }) => {
            if !versions.contains(&ferry_proto::VERSION) {
                Err(refuse(
                    ErrorCode::UnsupportedVersion,
                    format!("this hub speaks ferry protocol version {} only; you offered {versions:?}", ferry_proto::VERSION),
                ))
            } else {
                match hub.service.authenticate(&token, peer).await {
                    Err(e) => Err(refusal(e)),
                    Ok(grant) => match hub.connections.clone().try_acquire_owned() {
                        Ok(slot) if admitted() => Ok((grant, slot, session_key(&client))),
                        Ok(_) => Err(refuse(ErrorCode::RateLimited, "the hub is busy: its memory budget is spent; retry in a moment".into())),
                        Err(_) => Err(refuse(
                            ErrorCode::RateLimited,
                            format!("the hub is busy: it is serving its limit of {} connections; retry in a moment", hub.max_connections),
                        )),
                    },
                }
            }
        }
        Ok(_) => Err(refuse(ErrorCode::BadRequest, "the first frame must be Hello".into())),
        Err(refused) => Err(refused),
    };
    match reply {
        Ok(admission) => {
            let welcome = async {
                write_message(w, &Message::Welcome { version: ferry_proto::VERSION, server: format!("ferry/{}", env!("CARGO_PKG_VERSION")) }).await?;
                write_message(w, &Message::Done).await?;
                w.flush().await.map_err(|e| NetError::Lost(e.to_string()))
            };
            match welcome.await {
                Ok(()) => Ok(admission),
                Err(_) => Err(None),
            }
        }
        Err(msg) => {
            let _ = write_message(w, &msg).await;
            let _ = w.flush().await;
            Err(Some(msg))
        }
    }
}

/// The session a Hello names in its `client` text (`session=<hex>`, 16 to
/// 64 hex digits): the connections of one client share what they were
/// shown (wire.md §5).
fn session_key(client: &str) -> Option<String> {
    let key = client.split_whitespace().find_map(|w| w.strip_prefix("session="))?;
    ((16..=64).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_hexdigit())).then(|| key.to_owned())
}

fn open_session(hub: &Door, grant: Grant, key: Option<String>, peer: IpAddr) -> Session {
    match key {
        Some(k) => hub.service.shared_session(grant, &k),
        None => hub.service.session(grant),
    }
    .from_address(peer)
}

/// Answers one request: zero or more data frames, then `Done` or `Error`.
async fn respond<W: AsyncWrite + Unpin>(session: &Arc<Session>, req: Message, w: &mut W) -> Result<()> {
    if let Message::ListRepos { since, hub: feed, wait_ms, .. } = &req {
        // A failure shows in the listing that follows.
        let _ = session.wait_for_change(*feed, *since, Duration::from_millis(u64::from(*wait_ms))).await;
    }
    if matches!(req, Message::GetHistory { .. } | Message::GetNodes { .. } | Message::GetChunks { .. } | Message::GetChunksAgainst { .. }) {
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
/// then holds at most three frames (what the budget reserves for it) however much it asks for,
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
            Message::GetChunksAgainst { repo, ids, held } => session.chunks_against(&repo, &ids, &held, &mut |chunks| send(Message::Chunks { chunks })),
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
        Message::GetChunkBases { repo, ids } => {
            Message::ChunkBases { bases: session.chunk_bases(&repo, &ids)?.into_iter().map(Option::unwrap_or_default).collect() }
        }
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
        Message::DeleteBranch { repo, branch, expected } => {
            session.delete_branch(&repo, &branch, expected)?;
            return Ok(None);
        }
        Message::DeleteRepo { repo } => {
            session.delete_repo(&repo)?;
            return Ok(None);
        }
        Message::GetForgotten { repo, ids } => Message::Bitmap { bits: session.forgotten(&repo, &ids)? },
        Message::Forget { repo, ids } => {
            session.forget(&repo, &ids)?;
            return Ok(None);
        }
        Message::Hello { .. } => return Err(ServiceError::new(ErrorCode::BadRequest, "Hello was already exchanged on this connection")),
        other => return Err(ServiceError::new(ErrorCode::BadRequest, format!("frame type {:#04x} is not a request", other.tag()))),
    }))
}

//! `ferry serve`: a hub on QUIC (UDP) and TLS over TCP, on the same port.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ferry_core::revision::Revision;
use ferry_core::Id;
use ferry_proto::{ErrorCode, Message, MAX_FRAME_LEN};
use ferry_store::{ChunkStore, GcReport, Pins, Store, StoreError, VerifiedRecord};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::access::{Access, Grant};
use crate::tls::Identity;
use crate::wire::{read_message_patiently, write_message, Impatient, Patience};
use crate::{HubError, Result};

pub struct ServeOptions {
    pub listen: SocketAddr,
    /// Failed token attempts per address per minute before refusing.
    pub max_auth_failures: u32,
    /// A connection with no request in progress for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once (QUIC and TCP together); the hub's memory
    /// is bounded by this times what one connection may make it buffer.
    /// Beyond it a client is told the hub is busy.
    pub max_connections: usize,
    /// Collect garbage inside the hub this often (`ferry gc` cannot run
    /// while the hub holds the store).
    pub gc: Option<GcSchedule>,
}

pub struct GcSchedule {
    pub every: Duration,
    /// Told each run's outcome and how long it took.
    pub report: Box<dyn Fn(Result<GcReport, String>, Duration) + Send + Sync>,
}

struct Hub {
    store: Arc<Store>,
    access: Access,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    max_failures: u32,
    idle_timeout: Duration,
    pins: PinBoard,
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

impl Hub {
    /// One of `max_connections`, or else one of the few places for telling
    /// a client the hub is full; None when those are taken too.
    fn admit(&self) -> Option<Admission> {
        if let Ok(slot) = self.connections.clone().try_acquire_owned() {
            return Some(Admission { full: false, _slot: slot });
        }
        self.refusing.clone().try_acquire_owned().ok().map(|slot| Admission { full: true, _slot: slot })
    }
}

/// What each open connection has been told the hub holds, or has stored
/// through it: in-process gc keeps all of it (and what it reaches), so a
/// gc that runs between a push's requests cannot remove what the push
/// relies on. A connection's pins go when it closes.
#[derive(Default)]
struct PinBoard {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Weak<ConnPins>>>,
}

struct ConnPins {
    id: u64,
    board: Weak<Hub>,
    pins: Mutex<Pins>,
}

impl PinBoard {
    fn open(&self, hub: &Arc<Hub>) -> Arc<ConnPins> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let c = Arc::new(ConnPins { id, board: Arc::downgrade(hub), pins: Mutex::new(Pins::default()) });
        self.open.lock().unwrap_or_else(|p| p.into_inner()).insert(id, Arc::downgrade(&c));
        c
    }

    /// Everything pinned by open connections.
    fn all(&self) -> Pins {
        let mut all = Pins::default();
        for c in self.open.lock().unwrap_or_else(|p| p.into_inner()).values().filter_map(Weak::upgrade) {
            all.extend(&c.pins.lock().unwrap_or_else(|p| p.into_inner()));
        }
        all
    }
}

impl ConnPins {
    fn with(&self, f: impl FnOnce(&mut Pins)) {
        f(&mut self.pins.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for ConnPins {
    fn drop(&mut self) {
        if let Some(hub) = self.board.upgrade() {
            hub.pins.open.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
        }
    }
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
            // The hub's own paths are no business of its clients.
            StoreError::Io { source, .. } => source.to_string(),
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
    let hub = Arc::new(Hub {
        store,
        access,
        failures: Mutex::new(HashMap::new()),
        max_failures: opts.max_auth_failures,
        idle_timeout: opts.idle_timeout,
        pins: PinBoard::default(),
        max_connections: opts.max_connections,
        connections: Arc::new(Semaphore::new(opts.max_connections)),
        refusing: Arc::new(Semaphore::new(REFUSING_AT_ONCE)),
    });
    if let Some(gc) = opts.gc {
        tokio::spawn(collect_garbage(hub.clone(), gc));
    }
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
                crate::wire::tcp_liveness(&stream);
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

async fn quic_connection(hub: Arc<Hub>, incoming: quinn::Incoming, admission: Admission) -> Result<()> {
    let conn = tokio::time::timeout(Duration::from_secs(10), incoming)
        .await
        .map_err(|_| HubError::Timeout("handshake".into()))?
        .map_err(|e| HubError::Lost(e.to_string()))?;
    let peer = conn.remote_address().ip();
    let (mut send, mut recv) = tokio::time::timeout(Duration::from_secs(10), conn.accept_bi())
        .await
        .map_err(|_| HubError::Timeout("hello".into()))?
        .map_err(|e| HubError::Lost(e.to_string()))?;
    let full = admission.full;
    let grant = handshake(&hub, peer, full, &mut recv, &mut send).await;
    let _ = send.finish();
    let Some(grant) = grant? else {
        // Let the Error frame reach the client before closing.
        tokio::time::sleep(Duration::from_millis(200)).await;
        conn.close(1u32.into(), if full { &b"busy"[..] } else { b"unauthorized" });
        return Ok(());
    };
    let grant = Arc::new(grant);
    let pins = hub.pins.open(&hub);
    let activity = Arc::new(Activity::new());
    loop {
        // A client that keeps its connection alive but sends nothing holds
        // it only until the idle timeout (QUIC keep-alives alone would keep
        // it forever).
        let (mut send, mut recv) = match tokio::time::timeout(activity.idle_left(hub.idle_timeout), conn.accept_bi()).await {
            Ok(accepted) => accepted.map_err(|e| HubError::Lost(e.to_string()))?,
            Err(_) if activity.idle_left(hub.idle_timeout).is_zero() => {
                conn.close(2u32.into(), b"idle");
                return Ok(());
            }
            Err(_) => continue,
        };
        let (hub, grant, pins, busy) = (hub.clone(), grant.clone(), pins.clone(), activity.begin());
        // A request stream may wait while others use a slow link.
        let streams = crate::wire::StreamActivity::new(&conn);
        tokio::spawn(async move {
            if let Ok(Some(req)) = read_or_refuse(&mut recv, &mut send, &streams).await {
                if respond(&hub, &grant, &pins, req, &mut send).await.is_err() {
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

async fn tcp_connection(hub: Arc<Hub>, acceptor: tokio_rustls::TlsAcceptor, stream: tokio::net::TcpStream, peer: IpAddr, admission: Admission) -> Result<()> {
    let tls = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
        .await
        .map_err(|_| HubError::Timeout("handshake".into()))?
        .map_err(|e| HubError::Tls(e.to_string()))?;
    let (mut r, mut w) = tokio::io::split(tls);
    let res = tcp_session(&hub, peer, admission.full, &mut r, &mut w).await;
    // Close with close_notify so that a final Error frame is not lost.
    let _ = w.shutdown().await;
    res
}

async fn tcp_session<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(hub: &Arc<Hub>, peer: IpAddr, full: bool, r: &mut R, w: &mut W) -> Result<()> {
    let mut r = tokio::io::BufReader::new(r);
    let Some(grant) = handshake(hub, peer, full, &mut r, w).await? else { return Ok(()) };
    let grant = Arc::new(grant);
    let pins = hub.pins.open(hub);
    // Requests follow one another on the connection; between them the
    // client may stay silent up to the idle timeout.
    loop {
        match tokio::time::timeout(hub.idle_timeout, r.fill_buf()).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) => return Err(HubError::Lost(e.to_string())),
            Ok(Ok([])) => return Ok(()),
            Ok(Ok(_)) => {}
        }
        let Some(req) = read_or_refuse(&mut r, w, &Impatient).await? else { return Ok(()) };
        respond(hub, &grant, &pins, req, w).await?;
    }
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
/// or an `Error`. Returns None when the client was refused. `full`: the hub
/// is at its connection limit, which is all this connection gets told.
async fn handshake<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(hub: &Hub, peer: IpAddr, full: bool, r: &mut R, w: &mut W) -> Result<Option<Grant>> {
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

/// Whom failed tokens count against: an IPv4 address, or an IPv6 /64 (one
/// host commonly has a whole /64 to pick addresses from).
fn guesser(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

impl Hub {
    fn rate_limited(&self, peer: IpAddr) -> bool {
        let f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        f.get(&guesser(peer)).is_some_and(|(n, since)| *n >= self.max_failures && since.elapsed() < Duration::from_secs(60))
    }
    fn record_failure(&self, peer: IpAddr) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        // Forget expired windows before they add up (guessers can have many addresses).
        if f.len() >= 4096 {
            f.retain(|_, (_, since)| since.elapsed() < Duration::from_secs(60));
        }
        let e = f.entry(guesser(peer)).or_insert((0, Instant::now()));
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
/// Connections over the limit told so at once (each costs a TLS handshake).
const REFUSING_AT_ONCE: usize = 16;

const LONGEST_POLL: Duration = Duration::from_secs(20);

/// Answers one request: zero or more data frames, then `Done` or `Error`.
async fn respond<W: AsyncWrite + Unpin>(hub: &Arc<Hub>, grant: &Arc<Grant>, pins: &Arc<ConnPins>, req: Message, w: &mut W) -> Result<()> {
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
    if matches!(req, Message::GetHistory { .. } | Message::GetNodes { .. } | Message::GetChunks { .. }) {
        return respond_a_frame_at_a_time(hub, grant, req, w).await;
    }
    let frames = {
        let (hub, grant, pins) = (hub.clone(), grant.clone(), pins.clone());
        tokio::task::spawn_blocking(move || answer(&hub, &grant, &pins, req)).await.map_err(|e| HubError::Io(e.to_string()))?
    };
    let frames = match frames {
        Ok(mut f) => {
            f.push(Message::Done);
            f
        }
        Err(Refusal(code, message)) => vec![Message::Error { code, message }],
    };
    for f in &frames {
        send(w, f).await?;
    }
    w.flush().await.map_err(|e| HubError::Lost(e.to_string()))?;
    Ok(())
}

/// How long a peer may leave an answer unread before the hub gives up on it.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

async fn send<W: AsyncWrite + Unpin>(w: &mut W, m: &Message) -> Result<()> {
    tokio::time::timeout(SEND_TIMEOUT, write_message(w, m)).await.map_err(|_| HubError::Timeout("the peer read nothing for 30 s".into()))??;
    Ok(())
}

/// Answers the requests whose answers may be large (16 384 chunks of
/// 256 KiB are 4 GiB) a frame at a time: a blocking task reads and packs,
/// and a channel holding one frame hands them to the writer. A request
/// then costs the hub about two frames of memory however much it asks for,
/// and a client that stops reading stalls only its own request, until
/// `SEND_TIMEOUT`.
async fn respond_a_frame_at_a_time<W: AsyncWrite + Unpin>(hub: &Arc<Hub>, grant: &Arc<Grant>, req: Message, w: &mut W) -> Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(1);
    let (hub, grant) = (hub.clone(), grant.clone());
    tokio::task::spawn_blocking(move || {
        let mut emit = |m: Message| tx.blocking_send(m).map_err(|_| Refusal(ErrorCode::Internal, "the client stopped reading".into()));
        let end = match answer_large(&hub, &grant, req, &mut emit) {
            Ok(()) => Message::Done,
            Err(Refusal(code, message)) => Message::Error { code, message },
        };
        let _ = tx.blocking_send(end);
    });
    while let Some(m) = rx.recv().await {
        send(w, &m).await?;
    }
    w.flush().await.map_err(|e| HubError::Lost(e.to_string()))?;
    Ok(())
}

fn bitmap(v: Vec<bool>) -> Vec<Message> {
    vec![Message::Bitmap { bits: v }]
}

/// Answers requests. Those a push relies on later (that the hub holds
/// something, or stored it) run under a `WriteSession`, which in-process gc
/// waits for, and pin what they answered about before it ends.
fn answer(hub: &Hub, grant: &Grant, pins: &ConnPins, req: Message) -> Result<Vec<Message>, Refusal> {
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
            let _session = store.write_session();
            let have = ids.iter().map(|i| store.has_revision(i)).collect::<Result<Vec<_>, _>>()?;
            // Only a writer will rely on the answer.
            if grant.can_write(&repo) {
                pins.with(|p| ids.iter().zip(&have).filter(|x| *x.1).for_each(|x| p.revision(*x.0)));
            }
            Ok(bitmap(have))
        }
        Message::HaveNodes { repo, ids } => {
            hub.check_write(grant, &repo)?;
            let _session = store.write_session();
            let have = store.has_nodes(&ids)?;
            pins.with(|p| ids.iter().zip(&have).filter(|x| *x.1).for_each(|x| p.node(*x.0)));
            Ok(bitmap(have))
        }
        Message::HaveChunks { repo, ids } => {
            hub.check_write(grant, &repo)?;
            let _session = store.write_session();
            let have = store.chunk_store().contains(&ids)?;
            pins.with(|p| ids.iter().zip(&have).filter(|x| *x.1).for_each(|x| p.chunk(x.0)));
            Ok(bitmap(have))
        }
        Message::PutChunks { repo, chunks } => {
            hub.check_write(grant, &repo)?;
            // Verify all before storing any: a bad chunk stores nothing.
            let mut verified = Vec::with_capacity(chunks.len());
            for (id, rec) in chunks {
                verified.push(VerifiedRecord::verify(id, rec)?);
            }
            let session = store.write_session();
            // Another client may have sent the same chunks meanwhile: write
            // each chunk once.
            let ids: Vec<Id> = verified.iter().map(|r| r.id()).collect();
            let present = store.chunk_store().contains(&ids)?;
            let mut present = present.into_iter();
            verified.retain(|_| !present.next().unwrap_or(false));
            session.put_records(&verified)?;
            pins.with(|p| ids.iter().for_each(|id| p.chunk(id)));
            Ok(vec![])
        }
        Message::PutNodes { repo, nodes } => {
            hub.check_write(grant, &repo)?;
            let session = store.write_session();
            let ids = session.put_nodes_checked(&nodes)?;
            pins.with(|p| ids.into_iter().for_each(|id| p.node(id)));
            Ok(vec![])
        }
        Message::PutRevisions { repo, revisions } => {
            hub.check_write(grant, &repo)?;
            let revs = revisions.iter().map(|b| Revision::decode(b)).collect::<Result<Vec<_>, _>>()?;
            store.write_session().put_revisions(&revs)?;
            // Nothing reaches them until the branch moves: keep them till then.
            pins.with(|p| revisions.iter().for_each(|b| p.revision(ferry_core::revision::revision_id(b))));
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

/// Packs items into frames that each stay under the frame limit, handing
/// each full frame on as soon as it is full.
struct Packer<T, F: Fn(Vec<T>) -> Message> {
    cur: Vec<T>,
    bytes: usize,
    wrap: F,
}

type Emit<'a> = dyn FnMut(Message) -> Result<(), Refusal> + 'a;

impl<T, F: Fn(Vec<T>) -> Message> Packer<T, F> {
    fn new(wrap: F) -> Self {
        Packer { cur: Vec::new(), bytes: 0, wrap }
    }
    fn push(&mut self, item: T, size: usize, emit: &mut Emit) -> Result<(), Refusal> {
        let s = size + 40;
        if !self.cur.is_empty() && self.bytes + s > MAX_FRAME_LEN - 1024 {
            emit((self.wrap)(std::mem::take(&mut self.cur)))?;
            self.bytes = 0;
        }
        self.bytes += s;
        self.cur.push(item);
        Ok(())
    }
    fn finish(self, emit: &mut Emit) -> Result<(), Refusal> {
        if self.cur.is_empty() {
            return Ok(());
        }
        emit((self.wrap)(self.cur))
    }
}

/// The data frames of GetHistory, GetNodes and GetChunks, handed to `emit`
/// one at a time.
fn answer_large(hub: &Hub, grant: &Grant, req: Message, emit: &mut Emit) -> Result<(), Refusal> {
    let store = &hub.store;
    match req {
        Message::GetHistory { repo, from, until, max } => {
            hub.check_read(grant, &repo)?;
            let max = (max as usize).min(ferry_proto::message::MAX_REVISIONS);
            let mut out = Packer::new(|revisions| Message::Revisions { revisions });
            store.walk_history(&from, &until, max, |bytes| {
                let len = bytes.len();
                out.push(bytes, len, emit)
            })?;
            out.finish(emit)
        }
        Message::GetNodes { repo, ids } => {
            hub.check_read(grant, &repo)?;
            let mut out = Packer::new(|nodes| Message::Nodes { nodes });
            for id in &ids {
                let node = store.node_bytes(id)?.ok_or_else(|| Refusal(ErrorCode::NotFound, format!("tree node {id} is not on this hub")))?;
                let len = node.len();
                out.push(node, len, emit)?;
            }
            out.finish(emit)
        }
        Message::GetChunks { repo, ids } => {
            hub.check_read(grant, &repo)?;
            let mut out = Packer::new(|chunks| Message::Chunks { chunks });
            for id in ids {
                let rec = store.chunk_store().get_record(&id)?.ok_or_else(|| Refusal(ErrorCode::NotFound, format!("chunk {id} is not on this hub")))?;
                let len = rec.len();
                out.push((id, rec), len, emit)?;
            }
            out.finish(emit)
        }
        other => Err(Refusal(ErrorCode::Internal, format!("frame type {:#04x} is not answered a frame at a time", other.tag()))),
    }
}

/// Runs gc every `schedule.every`, keeping what open connections pinned.
async fn collect_garbage(hub: Arc<Hub>, schedule: GcSchedule) {
    loop {
        tokio::time::sleep(schedule.every).await;
        let h = hub.clone();
        let started = Instant::now();
        let res = tokio::task::spawn_blocking(move || h.store.gc_keeping(|| h.pins.all())).await;
        let res = match res {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(format!("gc stopped: {e}")),
        };
        (schedule.report)(res, started.elapsed());
    }
}

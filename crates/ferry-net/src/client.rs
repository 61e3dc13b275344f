//! A connection to a hub: QUIC, or TLS over TCP where UDP is blocked;
//! requests and their answers as frames.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::Id;
use ferry_proto::{ErrorCode, Message};
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::tls::{self, Trust};
use crate::wire::{read_message_patiently, write_message, Patience};
use crate::{NetError, Result};

/// Which transport to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportChoice {
    /// QUIC, falling back to TCP if QUIC does not connect quickly.
    Auto,
    /// QUIC only.
    Quic,
    /// TLS over TCP only.
    Tcp,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `host:port`.
    pub hub: String,
    /// The token presented in Hello (none: anonymous, public repositories only).
    pub token: Option<String>,
    /// QUIC, TLS over TCP, or QUIC falling back to TCP.
    pub transport: TransportChoice,
    /// How the hub's certificate is checked.
    pub trust: Trust,
}

/// How long QUIC gets before `Auto` falls back to TCP.
const QUIC_HEAD_START: Duration = Duration::from_millis(1500);
/// How long a pooled TCP connection may sit unused before it is dropped
/// rather than reused: below the hub's default idle timeout (30 s).
const POOLED_IDLE: Duration = Duration::from_secs(20);
/// The most a response may hold, whatever the hub sends: far above any
/// honest answer (1 024 revisions or 64 chunks), far below memory.
const MAX_RESPONSE_BYTES: u64 = 256 << 20;

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
    /// The certificate fingerprint this connect pinned on first use.
    pinned: Option<String>,
    /// Names this client's session in every Hello, so that the hub lets
    /// all its connections (a TCP pool) read what any of them was shown.
    session_key: String,
}

/// A random session name for a client's Hellos.
fn new_session_key() -> String {
    let mut k = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut k);
    hex::encode(k)
}

fn lost(e: impl std::fmt::Display) -> NetError {
    NetError::Lost(e.to_string())
}

impl Client {
    /// Connects and authenticates (Hello with the token).
    pub async fn connect(opts: &ConnectOptions) -> Result<Client> {
        let addr = tokio::net::lookup_host(&opts.hub)
            .await
            .map_err(|e| NetError::Connect { hub: opts.hub.clone(), detail: e.to_string() })?
            .next()
            .ok_or_else(|| NetError::Connect { hub: opts.hub.clone(), detail: "no address".into() })?;
        let host = opts.hub.rsplit_once(':').map_or(opts.hub.as_str(), |x| x.0).trim_matches(['[', ']']).to_owned();
        let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| NetError::Config(format!("{host}: {e}")))?;
        let (cfg, pin) = tls::client_config(&opts.trust, &opts.hub)?;
        let check_pin = |err: Option<String>| -> Result<Option<String>> {
            if let (Some(pin), Trust::KnownHubs(file)) = (&pin, &opts.trust) {
                let seen = pin.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
                match (&pin.expected, seen) {
                    (Some(want), Some(seen)) if *want != seen => {
                        return Err(NetError::FingerprintChanged { hub: opts.hub.clone(), seen, pinned: want.clone(), file: file.display().to_string() })
                    }
                    (None, Some(seen)) if err.is_none() => {
                        tls::remember(file, &opts.hub, &seen)?;
                        return Ok(Some(seen));
                    }
                    _ => {}
                }
            }
            match err {
                Some(detail) => Err(NetError::Connect { hub: opts.hub.clone(), detail }),
                None => Ok(None),
            }
        };
        let mut quic_err = None;
        let mut pinned_early = None;
        if opts.transport != TransportChoice::Tcp {
            let attempt = connect_quic(addr, &host, cfg.clone());
            let res = if opts.transport == TransportChoice::Auto {
                tokio::time::timeout(QUIC_HEAD_START, attempt).await.unwrap_or_else(|_| Err("no QUIC answer within 1.5 s".into()))
            } else {
                attempt.await
            };
            match res {
                Ok((conn, endpoint)) => {
                    let pinned = check_pin(None)?;
                    let client = Client {
                        conn: Conn::Quic { conn, endpoint },
                        token: opts.token.clone().unwrap_or_default(),
                        hub: opts.hub.clone(),
                        sent: 0.into(),
                        received: 0.into(),
                        chunk_bytes: 0.into(),
                        pinned,
                        session_key: new_session_key(),
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
                    pinned_early = check_pin(None)?;
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
            pinned: None,
            session_key: new_session_key(),
        };
        match client.open_tcp().await {
            Ok(s) => {
                let mut client = client;
                client.pinned = check_pin(None)?.or(pinned_early);
                if let Conn::Tcp { pool, .. } = &client.conn {
                    pool.lock().await.push((s, Instant::now()));
                }
                Ok(client)
            }
            Err(NetError::Connect { detail, .. }) | Err(NetError::Tls(detail)) => {
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
        let client = format!("ferry/{} session={}", env!("CARGO_PKG_VERSION"), self.session_key);
        Message::Hello { versions: vec![ferry_proto::VERSION], token: self.token.clone(), client }
    }

    async fn hello_quic(&self) -> Result<()> {
        self.request(&self.hello()).await.map(drop)
    }

    async fn open_tcp(&self) -> Result<TlsStream<TcpStream>> {
        let Conn::Tcp { addr, tls, name, .. } = &self.conn else { unreachable!() };
        let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .map_err(|_| NetError::Connect { hub: self.hub.clone(), detail: "TCP connect timed out".into() })?
            .map_err(|e| NetError::Connect { hub: self.hub.clone(), detail: format!("TCP: {e}") })?;
        let _ = tcp.set_nodelay(true);
        crate::wire::tcp_liveness(&tcp);
        let mut s = tls.connect(name.clone(), tcp).await.map_err(|e| NetError::Connect { hub: self.hub.clone(), detail: format!("TLS: {e}") })?;
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
            let m = read_message_patiently(r, patience).await?.ok_or_else(|| NetError::Lost("the hub closed the stream before answering".into()))?;
            let n = (m.payload().len() + 5) as u64;
            self.received.fetch_add(n, Ordering::Relaxed);
            bytes += n;
            if bytes > MAX_RESPONSE_BYTES {
                return Err(NetError::Protocol(format!("the hub's answer exceeds {MAX_RESPONSE_BYTES} bytes")));
            }
            match m {
                Message::Done => return Ok(out),
                Message::Error { code, message } => return Err(NetError::Remote { code, message }),
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
                if res.is_ok() || matches!(res, Err(NetError::Remote { .. })) {
                    pool.lock().await.push((s, Instant::now()));
                }
                res
            }
        }
    }

    /// The fingerprint of the hub's certificate if this connection pinned
    /// it on first use (the caller tells the user).
    pub fn pinned(&self) -> Option<&str> {
        self.pinned.as_deref()
    }

    /// The `host:port` this client connected to.
    pub fn hub(&self) -> &str {
        &self.hub
    }

    /// A request answered by one bitmap of `n` bits.
    pub async fn bitmap(&self, req: Message, n: usize) -> Result<Vec<bool>> {
        match self.request(&req).await?.pop() {
            Some(Message::Bitmap { bits }) if bits.len() == n => Ok(bits),
            other => Err(NetError::Protocol(format!("expected a bitmap of {n} bits, got {other:?}"))),
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

    /// Counts bytes of chunk records moved on this connection (by callers
    /// that know which frames carry chunk data).
    pub fn count_chunk_bytes(&self, n: usize) {
        self.chunk_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The hub's branches of `repo`.
    pub async fn refs(&self, repo: &str) -> Result<Vec<(String, Id)>> {
        match self.request(&Message::ListRefs { repo: repo.into() }).await?.pop() {
            Some(Message::Refs { branches, .. }) => Ok(branches),
            other => Err(NetError::Protocol(format!("expected Refs, got {other:?}"))),
        }
    }

    /// The hub's branches of `repo`, or none if it has no such repository
    /// (or the token may not read it).
    pub async fn refs_if_any(&self, repo: &str) -> Result<Vec<(String, Id)>> {
        match self.refs(repo).await {
            Err(NetError::Remote { code: ErrorCode::NotFound, .. }) => Ok(vec![]),
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

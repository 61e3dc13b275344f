//! ferry-net: the network layer of ferry. Connections to a hub over QUIC
//! (quinn), with TLS over TCP where UDP is blocked; the hub's certificate
//! (self-signed and pinned on first use, or from a CA bundle); frames on
//! streams with timeouts that measure silence.
//!
//! It moves `ferry_proto` messages and knows nothing of stores, access or
//! transfers: the hub service (ferry-service) gives requests their meaning,
//! the door (ferry-hub) and the transfer ends (ferry-transfer) sit above.
//! Architecture invariants:
//! - Every read from a peer has a timeout that measures silence; every
//!   buffer is bounded by the frame limit and the streams a connection may
//!   open.
//! - A client checks the hub's certificate before it sends its token.
//! - Nothing here prints or reads the environment: callers pass settings in.

#![warn(missing_docs)]

pub mod client;
pub mod tls;
pub mod wire;

pub use client::{Client, ConnectOptions, TransportChoice};

use ferry_proto::ErrorCode;

/// What went wrong talking to a hub.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A local I/O failure.
    #[error("{0}")]
    Io(String),
    /// The TLS layer refused (a bad certificate or key, a failed handshake).
    #[error("TLS: {0}")]
    Tls(String),
    /// A setting given by the caller is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The hub could not be reached.
    #[error("could not connect to {hub}: {detail}")]
    Connect {
        /// `host:port`.
        hub: String,
        /// Why.
        detail: String,
    },
    /// The hub's certificate is not the one pinned for it.
    #[error(
        "the hub at {hub} presented certificate {seen}, but {file} pins {pinned}. If the hub's key really changed, remove its line from that file and retry"
    )]
    FingerprintChanged {
        /// `host:port`.
        hub: String,
        /// The fingerprint presented.
        seen: String,
        /// The fingerprint pinned.
        pinned: String,
        /// The known-hubs file that pins it.
        file: String,
    },
    /// The hub answered with an error.
    #[error("{}", remote_text(*.code, .message))]
    Remote {
        /// What kind of refusal.
        code: ErrorCode,
        /// The hub's words.
        message: String,
    },
    /// The connection broke.
    #[error("connection lost: {0} (re-run the command to resume; only what is missing will be sent)")]
    Lost(String),
    /// The peer was silent for too long.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Bytes from the peer do not decode.
    #[error("{0}")]
    Format(#[from] ferry_core::FormatError),
}

fn remote_text(code: ErrorCode, message: &str) -> String {
    match code {
        ErrorCode::Conflict => format!("the hub refused: {message}"),
        _ => format!("the hub refused ({code:?}): {message}"),
    }
}

impl NetError {
    /// The error code of a refusal by the hub, if this is one.
    pub fn remote_code(&self) -> Option<ErrorCode> {
        match self {
            NetError::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A result whose error is a [`NetError`].
pub type Result<T, E = NetError> = std::result::Result<T, E>;

/// QUIC transport settings sized for long fat links: at 1 Gbit/s and 100 ms
/// RTT a connection needs about 12.5 MB in flight, so the windows are 4–5
/// times that; the hub bounds what one connection can make it buffer by the
/// connection window plus `MAX_STREAMS` frames.
pub fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(wire::MAX_STREAMS.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.stream_receive_window((16u32 << 20).into());
    t.receive_window((64u32 << 20).into());
    t.send_window(64 << 20);
    t.max_idle_timeout(Some(std::time::Duration::from_secs(30).try_into().expect("30 s is a valid idle timeout")));
    t.keep_alive_interval(Some(std::time::Duration::from_secs(5)));
    // Let path MTU discovery find jumbo frames (data centres, loopback):
    // per-packet work in user space is what limits QUIC on a fast path, and
    // on a 1500-byte path the probes above it are simply lost.
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(JUMBO_UDP_PAYLOAD);
    t.mtu_discovery_config(Some(mtu));
    // Streams carry whole batches; interleaving them buys nothing here and
    // costs more, smaller frames.
    t.send_fairness(false);
    // BBR paces by the measured bandwidth and round trip; the default
    // (Cubic, like NewReno) halves its window on every loss, which on a
    // long path with 1% random loss caps a connection near 1 Mbit/s.
    t.congestion_controller_factory(std::sync::Arc::new(quinn::congestion::BbrConfig::default()));
    t
}

/// The largest UDP payload in a 9000-byte jumbo frame over IPv6.
const JUMBO_UDP_PAYLOAD: u16 = 8952;

/// Endpoint settings for both ends. `reset_key` seeds stateless resets: a
/// hub derives it from its identity so that after a restart it can still
/// reset connections from before, and their clients fail at once instead
/// of at the idle timeout. Without one (clients) it is random.
pub fn endpoint_config(reset_key: Option<[u8; 32]>) -> quinn::EndpointConfig {
    let mut c = match reset_key {
        Some(k) => quinn::EndpointConfig::new(std::sync::Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &k))),
        None => quinn::EndpointConfig::default(),
    };
    // Accept datagrams as large as MTU discovery may find (the default,
    // 1472, also caps what the peer may send us).
    c.max_udp_payload_size(JUMBO_UDP_PAYLOAD).expect("a valid UDP payload size");
    c
}

/// A UDP socket with large kernel buffers (the defaults drop packets at
/// high rates), bound to `addr`.
pub fn udp_socket(addr: std::net::SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let domain = if addr.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(8 << 20);
    s.bind(&addr.into())?;
    Ok(s.into())
}

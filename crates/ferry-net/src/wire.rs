//! Reading and writing frames on async byte streams, with limits and
//! timeouts.
//!
//! Timeouts measure silence, not duration: a frame may take as long as it
//! takes on a slow link as long as bytes keep arriving. A peer that sends
//! nothing for [`READ_TIMEOUT`] is given up on, unless the caller knows it
//! cannot have answered yet ([`Patience`]).

use std::time::Duration;

use ferry_proto::frame::{decode_header, HEADER_LEN};
use ferry_proto::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{NetError, Result};

/// Streams one connection may have open at once.
pub const MAX_STREAMS: u32 = 16;
/// How long a peer may stay silent in the middle of a request or response.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a silent peer should still be waited for: a client whose request
/// has not yet fully reached the hub cannot expect an answer.
pub trait Patience: Sync {
    /// Whether the peer may still be busy with what we sent.
    fn still_sending(&self) -> bool;
}

/// Never patient: the plain silence timeout (the hub reading requests).
pub struct Impatient;
impl Patience for Impatient {
    fn still_sending(&self) -> bool {
        false
    }
}

/// Patient while a QUIC connection keeps carrying stream data on any
/// stream: many requests share one connection, and on a slow link one
/// stream may wait while others use it. Pings and acknowledgements do not
/// count, so a peer that is alive but never answers is still given up on.
pub struct StreamActivity {
    conn: quinn::Connection,
    seen: std::sync::Mutex<u64>,
}

impl StreamActivity {
    /// Watches `conn` from now on.
    pub fn new(conn: &quinn::Connection) -> StreamActivity {
        StreamActivity { seen: std::sync::Mutex::new(conn.stats().frame_rx.stream), conn: conn.clone() }
    }
}

impl Patience for StreamActivity {
    fn still_sending(&self) -> bool {
        let now = self.conn.stats().frame_rx.stream;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *seen, now) != now
    }
}

/// Reads some bytes, waiting out silences while `patience` says so.
async fn read_some<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8], patience: &dyn Patience) -> Result<usize> {
    loop {
        match tokio::time::timeout(READ_TIMEOUT, r.read(buf)).await {
            Ok(res) => return res.map_err(|e| NetError::Lost(e.to_string())),
            Err(_) if patience.still_sending() => continue,
            Err(_) => return Err(NetError::Timeout(format!("the peer sent nothing for {} s", READ_TIMEOUT.as_secs()))),
        }
    }
}

/// Appends up to `room` bytes to `buf`, waiting out silences like
/// `read_some`.
async fn read_into<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>, room: usize, patience: &dyn Patience) -> Result<usize> {
    loop {
        let mut limited = (&mut *r).take(room as u64);
        match tokio::time::timeout(READ_TIMEOUT, limited.read_buf(buf)).await {
            Ok(res) => return res.map_err(|e| NetError::Lost(e.to_string())),
            Err(_) if patience.still_sending() => continue,
            Err(_) => return Err(NetError::Timeout(format!("the peer sent nothing for {} s", READ_TIMEOUT.as_secs()))),
        }
    }
}

/// Reads one message; `None` at a clean end of stream.
pub async fn read_message_patiently<R: AsyncRead + Unpin>(r: &mut R, patience: &dyn Patience) -> Result<Option<Message>> {
    read_message_within(r, patience, ferry_proto::MAX_FRAME_LEN).await
}

/// Reads one message whose payload is at most `max_len` bytes (a longer
/// one is refused before its payload is read); `None` at a clean end of
/// stream.
pub async fn read_message_within<R: AsyncRead + Unpin>(r: &mut R, patience: &dyn Patience, max_len: usize) -> Result<Option<Message>> {
    match read_header(r, patience, max_len).await? {
        Some(header) => read_payload(r, header, patience).await.map(Some),
        None => Ok(None),
    }
}

/// A frame's type and payload length, read before its payload so that a
/// reader can decide what the payload may cost it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The frame type (`protocol/wire.md` section 3).
    pub kind: u8,
    /// The payload length, at most the limit the header was read with.
    pub len: usize,
}

/// Reads a frame header announcing at most `max_len` payload bytes; `None`
/// at a clean end of stream.
pub async fn read_header<R: AsyncRead + Unpin>(r: &mut R, patience: &dyn Patience, max_len: usize) -> Result<Option<Header>> {
    let mut h = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = read_some(r, &mut h[got..], patience).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(NetError::Protocol(format!("stream ended inside a frame header ({got} of {HEADER_LEN} bytes)")));
        }
        got += n;
    }
    let (kind, len) = decode_header(&h).map_err(|e| NetError::Protocol(e.to_string()))?;
    if len > max_len {
        return Err(NetError::Protocol(format!("a frame of {len} bytes where at most {max_len} are allowed")));
    }
    Ok(Some(Header { kind, len }))
}

/// Reads and decodes the payload of the frame whose header was just read.
pub async fn read_payload<R: AsyncRead + Unpin>(r: &mut R, header: Header, patience: &dyn Patience) -> Result<Message> {
    let len = header.len;
    // Grow as bytes arrive, reading straight into the payload (no copy
    // through a scratch buffer): a lying length costs the liar, not us.
    let mut payload: Vec<u8> = Vec::with_capacity(len.min(1 << 20));
    while payload.len() < len {
        if payload.capacity() == payload.len() {
            payload.reserve((len - payload.len()).min(1 << 20));
        }
        let room = (len - payload.len()).min(payload.capacity() - payload.len());
        let n = read_into(r, &mut payload, room, patience).await?;
        if n == 0 {
            return Err(NetError::Protocol(format!("stream ended inside a frame ({} of {len} payload bytes)", payload.len())));
        }
    }
    Message::decode(header.kind, &payload).map_err(|e| NetError::Protocol(e.to_string()))
}

/// Writes one message as a frame; returns the bytes written.
pub async fn write_message<W: AsyncWrite + Unpin>(w: &mut W, m: &Message) -> Result<u64> {
    let frame = m.to_frame();
    w.write_all(&frame).await.map_err(|e| NetError::Lost(e.to_string()))?;
    Ok(frame.len() as u64)
}

/// TCP keepalive and a user timeout, so that a peer that vanished without
/// a word is noticed within about a minute even mid-transfer; and BBR where
/// the kernel offers it, for the same reason QUIC uses it (loss-based
/// congestion control collapses on long lossy paths).
pub fn tcp_liveness(s: &tokio::net::TcpStream) {
    let sock = socket2::SockRef::from(s);
    let _ = sock.set_tcp_congestion(b"bbr");
    let ka = socket2::TcpKeepalive::new().with_time(Duration::from_secs(15)).with_interval(Duration::from_secs(5)).with_retries(4);
    let _ = sock.set_tcp_keepalive(&ka);
    #[cfg(target_os = "linux")]
    let _ = sock.set_tcp_user_timeout(Some(Duration::from_secs(60)));
}

/// Bytes written to a TCP socket (by descriptor) that the peer has not
/// acknowledged yet (Linux; elsewhere 0: unknown).
#[cfg(not(target_os = "linux"))]
pub fn unacknowledged(_fd: std::os::fd::RawFd) -> usize {
    0
}

/// Bytes written to a TCP socket (by descriptor) that the peer has not
/// acknowledged yet.
#[cfg(target_os = "linux")]
pub fn unacknowledged(fd: std::os::fd::RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one int, the size of the send queue;
    // on a closed or foreign descriptor it fails and we report 0.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
    if rc == 0 {
        n.max(0) as usize
    } else {
        0
    }
}

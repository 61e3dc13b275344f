//! Reading and writing frames on async byte streams, with limits and
//! timeouts.

use std::time::Duration;

use ferry_proto::frame::{decode_header, HEADER_LEN};
use ferry_proto::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{HubError, Result};

/// Streams one connection may have open at once.
pub const MAX_STREAMS: u32 = 16;
/// How long a peer may stay silent in the middle of a request or response.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads one message; `None` at a clean end of stream.
pub async fn read_message<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Message>> {
    tokio::time::timeout(READ_TIMEOUT, read_inner(r)).await.map_err(|_| HubError::Timeout("the peer sent nothing for 30 s".into()))?
}

async fn read_inner<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Message>> {
    let mut h = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = r.read(&mut h[got..]).await.map_err(|e| HubError::Lost(e.to_string()))?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(HubError::Protocol(format!("stream ended inside a frame header ({got} of {HEADER_LEN} bytes)")));
        }
        got += n;
    }
    let (kind, len) = decode_header(&h).map_err(|e| HubError::Protocol(e.to_string()))?;
    // Grow as bytes arrive: a lying length costs the liar, not us.
    let mut payload = Vec::with_capacity(len.min(1 << 20));
    let n = r.take(len as u64).read_to_end(&mut payload).await.map_err(|e| HubError::Lost(e.to_string()))?;
    if n < len {
        return Err(HubError::Protocol(format!("stream ended inside a frame ({n} of {len} payload bytes)")));
    }
    Message::decode(kind, &payload).map(Some).map_err(|e| HubError::Protocol(e.to_string()))
}

pub async fn write_message<W: AsyncWrite + Unpin>(w: &mut W, m: &Message) -> Result<u64> {
    let frame = m.to_frame();
    w.write_all(&frame).await.map_err(|e| HubError::Lost(e.to_string()))?;
    Ok(frame.len() as u64)
}

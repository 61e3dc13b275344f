//! ferry-proto: the `ferry/1` wire protocol, without I/O.
//!
//! Frames and messages (`frame`, `message`) and the negotiation logic that
//! decides what to ask and what to send (`negotiate`). The QUIC and TCP
//! transports in ferry-hub are thin drivers around this crate; tests and
//! fuzz targets drive it directly with byte slices.
//!
//! Architecture invariant: this crate does no I/O and reads no clock. Every
//! decoder bounds every length and count before allocating.
//! The normative description is `protocol/wire.md`.

pub mod frame;
pub mod message;
pub mod negotiate;
pub mod transfer;

pub use frame::{Batcher, FrameDecoder, FrameError, BATCH_BYTES, MAX_FRAME_LEN};
pub use message::{ErrorCode, Message, RepoRefs};

/// ALPN protocol id, and the only protocol version so far.
pub const ALPN: &[u8] = b"ferry/1";
pub const VERSION: u16 = 1;

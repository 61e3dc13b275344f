//! ferry-proto: the `ferry/1` wire protocol, without I/O.
//!
//! Frames and messages ([`frame`], [`message`]), the top-down tree
//! comparison that decides what to ask and what to send ([`negotiate`]),
//! and the whole procedure of moving a branch from a source to a sink
//! ([`transfer::Transfer`]). The QUIC and TCP transports in ferry-hub are
//! thin drivers around this crate; tests and fuzz targets drive it directly
//! with byte slices.
//!
//! Architecture invariant: this crate does no I/O and reads no clock. Every
//! decoder bounds every length and count before allocating.
//! The normative description is `protocol/wire.md`; its golden frames,
//! `protocol/vectors/wire.json`, are checked by this crate's tests.
//! `crates/ferry-proto/examples/` encodes frames and runs a transfer between
//! two ends in memory.

#![warn(missing_docs)]

pub mod frame;
pub mod message;
pub mod negotiate;
pub mod transfer;

pub use frame::{Batcher, FrameDecoder, FrameError, BATCH_BYTES, MAX_FRAME_LEN};
pub use message::{ErrorCode, Message, RepoRefs};

/// ALPN protocol id, for both QUIC and TLS over TCP.
pub const ALPN: &[u8] = b"ferry/1";
/// The only protocol version so far: what a client lists in
/// [`Message::Hello`] and a hub answers in [`Message::Welcome`].
pub const VERSION: u16 = 1;

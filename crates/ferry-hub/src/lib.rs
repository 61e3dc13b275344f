//! ferry-hub: the QUIC and TLS-over-TCP door of a hub. [`serve`] listens
//! on one port (UDP and TCP), admits connections up to a limit, checks
//! Hello, and hands every request to the hub service (ferry-service),
//! encoding its answers as `ferry/1` frames. What a request means, who may
//! ask it and what it stores are the service's; sockets, TLS and frames
//! are ferry-net's.
//!
//! Architecture invariants:
//! - A request costs the door about two frames of memory however much it
//!   asks for: large answers stream a frame at a time, and one left
//!   unread for 30 s is dropped.
//! - A connection with no request in progress is closed after the idle
//!   timeout; the door serves at most `max_connections` at once and tells
//!   one more that it is busy (past a few such answers a connection is
//!   refused before TLS).

#![warn(missing_docs)]

pub mod budget;
mod server;

pub use budget::DEFAULT_MEMORY_BUDGET;
pub use server::{serve, ServeOptions, DEFAULT_MAX_UNAUTHENTICATED, HELLO_DEADLINE, MAX_HANDSHAKES_PER_ADDRESS, MAX_HELLO_LEN};

//! ferry-transfer: moving branches between stores and hubs.
//!
//! A transfer has a [`Source`] and a [`Sink`]; a local store ([`Local`],
//! through the hub service with a trusted session) and a hub connection
//! (`ferry_net::Client`) are each both, so push (store → hub), pull (hub →
//! store) and mirror (hub → hub, or hub → this process's store) are one
//! procedure: [`driver::run`] drives `ferry_proto::transfer` against two
//! ends. [`ops`] holds push, pull and remote range reads, [`upload`] a
//! directory to a hub with no local store (the directory is the source),
//! [`mirror`] every branch of many repositories, once or following a
//! change feed.
//!
//! Architecture invariants:
//! - Whatever a sink stores it verifies itself: a local sink through the
//!   service (decoded, re-hashed), a hub on `PutChunks`. A source's records
//!   therefore pass through a relay (a mirror between two hubs) untouched.
//! - A sink's branch moves only by compare-and-swap from the head the
//!   transfer started from; a diverged branch is reported, never
//!   overwritten.
//! - Nothing here prints or reads the environment: progress and outcomes
//!   go to the caller.

#![warn(missing_docs)]

mod disk;
pub mod download;
pub mod driver;
pub mod ends;
mod error;
pub mod mirror;
pub mod ops;
pub mod upload;

pub use download::{download, DownloadOptions, Downloaded};
pub use driver::{Direction, TransferProgress};
pub use ends::{Listing, Local, RepoListing, Sink, Source};
pub use error::{Error, Result};
pub use ops::{create_tag, delete_branch, delete_repo, forget, pull, push, read_range, retention_candidates, PullOptions, PushOptions, Transfer};
pub use upload::{upload, Directory, UploadOptions};

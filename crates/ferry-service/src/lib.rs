//! ferry-service: the hub as a service without a transport.
//!
//! [`HubService`] holds a store and an [`Authorizer`]; a caller opens a
//! [`Session`] with the [`Grant`] it authenticated as, and asks typed
//! requests of it: list repositories and branches, walk history, read
//! nodes and chunks, answer which objects the hub holds, store chunks,
//! nodes and revisions, move a branch, wait on the change feed. The QUIC
//! and TCP door (ferry-hub) and the local end of a transfer
//! (ferry-transfer) are thin callers; an HTTP door is another.
//!
//! Architecture invariants:
//! - Every request is authorized when it is answered, against the grants
//!   in force then: a token revoked while a connection is open loses its
//!   rights at its next request.
//! - Missing and inaccessible repositories produce the same answer.
//! - Nothing a caller sends is stored before its hash is checked: chunk
//!   records are decoded (bounded) and re-hashed, nodes and revisions are
//!   re-hashed and decoded with every limit.
//! - Answers a writer relies on later ("I hold this", "stored") are given
//!   under a `WriteSession` and pinned to the session, so that a gc in this
//!   process cannot remove them before the writer's branch moves.
//! - An answer of any size is handed out in batches that fit a frame, so a
//!   request costs a bounded amount of memory however much it asks for.

#![warn(missing_docs)]

pub mod access;
mod admitted;
mod audit;
mod error;
mod files;
mod service;

pub use access::{Access, AccessFile, Authorizer, Grant, Scope, TokenRecord, TokenSpec, TokenUse};
pub use audit::{audit_path, read_audit_log, AuditEntry};
pub use error::ServiceError;
pub use files::StoredFile;
pub use service::{address_block, Counters, HubService, RepoPage, ReposQuery, Session};

//! Exit codes scripts can rely on (README.md, "Exit codes"): what kind of
//! failure ended a command, read off the error's chain.

use std::process::ExitCode;

use ferry_net::NetError;
use ferry_proto::ErrorCode;
use ferry_store::{BackendError, StoreError};

/// A failure not named below (a local I/O error, a store in use, ...).
pub const FAILURE: u8 = 1;
/// The command line or a configuration is wrong (clap uses 2 too).
pub const USAGE: u8 = 2;
/// A branch moved meanwhile, or the histories diverged: pull (or look)
/// before trying again.
pub const CONFLICT: u8 = 3;
/// A repository, branch, revision or file that does not exist, or that
/// the token may not see or change (a hub says the same for both).
pub const NOT_FOUND: u8 = 4;
/// The hub could not be reached, the connection broke, or the hub was
/// busy, even after retrying; or a store's bucket could not be reached:
/// worth trying again later.
pub const TRANSIENT: u8 = 5;
/// Data that fails verification (fsck found problems, a chunk or node
/// does not match its id).
pub const CORRUPT: u8 = 6;

/// The exit code for an error that ended a command.
pub fn of(e: &anyhow::Error) -> ExitCode {
    ExitCode::from(e.chain().find_map(kind).unwrap_or(FAILURE))
}

/// Whether a failure may pass if the command is tried again.
pub fn is_transient(e: &ferry_transfer::Error) -> bool {
    transfer(e) == Some(TRANSIENT)
}

fn kind(e: &(dyn std::error::Error + 'static)) -> Option<u8> {
    if let Some(e) = e.downcast_ref::<ferry_transfer::Error>() {
        return transfer(e);
    }
    if let Some(e) = e.downcast_ref::<NetError>() {
        return net(e);
    }
    if let Some(e) = e.downcast_ref::<ferry_service::ServiceError>() {
        return code(e.code);
    }
    if let Some(e) = e.downcast_ref::<StoreError>() {
        return store(e);
    }
    if let Some(e) = e.downcast_ref::<BackendError>() {
        return backend(e);
    }
    if e.downcast_ref::<ferry_core::FormatError>().is_some() {
        return Some(CORRUPT);
    }
    if e.downcast_ref::<crate::config::ConfigError>().is_some() {
        return Some(USAGE);
    }
    None
}

fn transfer(e: &ferry_transfer::Error) -> Option<u8> {
    use ferry_transfer::Error as E;
    match e {
        E::Net(n) => net(n),
        E::Local(s) => code(s.code),
        E::Store(s) => store(s),
        E::Format(_) => Some(CORRUPT),
        E::Config(_) => Some(USAGE),
        E::Protocol(_) | E::Io(_) => None,
    }
}

fn net(e: &NetError) -> Option<u8> {
    match e {
        NetError::Connect { .. } | NetError::Lost(_) | NetError::Timeout(_) => Some(TRANSIENT),
        NetError::Remote { code: c, .. } => code(*c),
        NetError::Config(_) => Some(USAGE),
        NetError::Format(_) => Some(CORRUPT),
        NetError::Io(_) | NetError::Tls(_) | NetError::Protocol(_) | NetError::FingerprintChanged { .. } => None,
    }
}

fn code(c: ErrorCode) -> Option<u8> {
    match c {
        ErrorCode::Conflict => Some(CONFLICT),
        ErrorCode::NotFound | ErrorCode::Forbidden | ErrorCode::Unauthorized => Some(NOT_FOUND),
        ErrorCode::RateLimited => Some(TRANSIENT),
        ErrorCode::Corrupt => Some(CORRUPT),
        ErrorCode::BadRequest => Some(USAGE),
        _ => None,
    }
}

fn store(e: &StoreError) -> Option<u8> {
    match e {
        StoreError::Conflict { .. } => Some(CONFLICT),
        StoreError::UnknownRepo(_) | StoreError::UnknownRevision(_) => Some(NOT_FOUND),
        StoreError::Corrupt { .. } | StoreError::Verify { .. } | StoreError::Format(_) => Some(CORRUPT),
        StoreError::BadRange { .. } | StoreError::CaseClash { .. } => Some(USAGE),
        StoreError::Backend(b) => backend(b),
        _ => None,
    }
}

fn backend(e: &BackendError) -> Option<u8> {
    matches!(e, BackendError::Unavailable(_)).then_some(TRANSIENT)
}

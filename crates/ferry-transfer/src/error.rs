//! What can end a transfer.

use ferry_net::NetError;
use ferry_proto::ErrorCode;
use ferry_service::ServiceError;
use ferry_store::StoreError;

/// Why a push, pull, mirror or remote read failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection to a hub failed, or the hub refused.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The local end refused (its store failed, or what arrived was bad).
    #[error("{}", .0.full_text())]
    Local(#[from] ServiceError),
    /// The local store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Bytes from the other end do not decode or verify.
    #[error("{0}")]
    Format(#[from] ferry_core::FormatError),
    /// The other end broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An option given by the caller is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// Writing the output failed.
    #[error("{0}")]
    Io(String),
}

impl Error {
    /// The refusal's error code, where an end refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Net(e) => e.remote_code(),
            Error::Local(e) => Some(e.code),
            _ => None,
        }
    }

    /// A refusal's own words, without the wording the error adds around
    /// them (for reports that say "refused" themselves).
    pub fn refusal_message(&self) -> String {
        match self {
            Error::Net(NetError::Remote { message, .. }) => message.clone(),
            Error::Local(e) => e.full_text().to_owned(),
            other => other.to_string(),
        }
    }

    /// A refusal worded for the user, as a hub's refusals are.
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> Error {
        Error::Net(NetError::Remote { code, message: message.into() })
    }
}

/// A result whose error is an [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

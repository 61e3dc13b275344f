//! The one error type of the service: a refusal with a wire error code and
//! a message for the caller.

use ferry_proto::ErrorCode;
use ferry_store::StoreError;

/// Why a request was refused, as every door reports it: a code (the wire's
/// error codes; an HTTP door maps them to statuses) and a message that
/// says what was wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ServiceError {
    /// What kind of refusal.
    pub code: ErrorCode,
    /// For the caller's user (a remote one: it names none of the hub's
    /// own paths).
    pub message: String,
    /// The whole story where `message` leaves some out (the hub's paths,
    /// the store's own words): for the hub's logs and for local callers.
    pub detail: Option<String>,
}

impl ServiceError {
    /// A refusal with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ServiceError {
        ServiceError { code, message: message.into(), detail: None }
    }

    /// The answer for a repository that does not exist or that the caller
    /// may not read: the same words for both.
    pub fn repo_not_found(repo: &str) -> ServiceError {
        ServiceError::new(ErrorCode::NotFound, format!("repository {repo:?} not found (or your token does not grant access to it)"))
    }

    /// The most precise account: `detail` where there is one.
    pub fn full_text(&self) -> &str {
        self.detail.as_deref().unwrap_or(&self.message)
    }

    /// A failure of the hub itself.
    pub fn internal(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorCode::Internal, message)
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> ServiceError {
        let code = match &e {
            StoreError::Conflict { .. } => ErrorCode::Conflict,
            StoreError::MissingChunk(_) | StoreError::MissingNode(_) | StoreError::Incomplete(_) => ErrorCode::Incomplete,
            StoreError::Format(_) | StoreError::CaseClash { .. } => ErrorCode::BadRequest,
            StoreError::UnknownRevision(_) => ErrorCode::NotFound,
            _ => ErrorCode::Internal,
        };
        let message = match &e {
            StoreError::Conflict { .. } => format!("{e} (pull first)"),
            // The hub's own paths are no business of its clients.
            StoreError::Io { error, .. } => error.to_string(),
            _ => e.to_string(),
        };
        let full = e.to_string();
        ServiceError { code, detail: (full != message).then_some(full), message }
    }
}

impl From<ferry_core::FormatError> for ServiceError {
    fn from(e: ferry_core::FormatError) -> ServiceError {
        match e {
            ferry_core::FormatError::HashMismatch { .. } => ServiceError::new(ErrorCode::Corrupt, format!("{e}; nothing from this request was stored")),
            e => ServiceError::new(ErrorCode::BadRequest, e.to_string()),
        }
    }
}

//! Refusals as HTTP answers: a status, the Hub's `X-Error-Code` and
//! `X-Error-Message` headers (which huggingface_hub turns into its own
//! exceptions), and a JSON body with a stable code.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ferry_proto::ErrorCode;
use ferry_service::ServiceError;

/// What was not found, in the Hub's words (`X-Error-Code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// The repository (or the caller may not read it: the same answer).
    Repo,
    /// The branch or revision.
    Revision,
    /// The file or directory.
    Entry,
}

/// A refusal on its way to the client.
#[derive(Debug)]
pub struct HttpError {
    status: StatusCode,
    /// The Hub's error code header, where the Hub has one.
    hub_code: Option<&'static str>,
    /// Ours: stable, snake_case, in the JSON body.
    code: &'static str,
    message: String,
}

impl HttpError {
    /// A refusal with a status, a stable code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> HttpError {
        HttpError { status, hub_code: None, code, message: message.into() }
    }

    /// Something asked for is not there (or not for this caller).
    pub fn missing(what: Missing, message: impl Into<String>) -> HttpError {
        let hub_code = match what {
            Missing::Repo => "RepoNotFound",
            Missing::Revision => "RevisionNotFound",
            Missing::Entry => "EntryNotFound",
        };
        HttpError { status: StatusCode::NOT_FOUND, hub_code: Some(hub_code), code: "not_found", message: message.into() }
    }

    /// A request the door cannot make sense of.
    pub fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// A service refusal, where a "not found" means `what`.
    pub fn from_service(e: ServiceError, what: Missing) -> HttpError {
        if e.code == ErrorCode::NotFound {
            return HttpError::missing(what, e.message);
        }
        let (status, code) = match e.code {
            ErrorCode::BadRequest | ErrorCode::UnsupportedVersion => (StatusCode::BAD_REQUEST, "bad_request"),
            ErrorCode::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ErrorCode::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorCode::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ErrorCode::Conflict => (StatusCode::CONFLICT, "conflict"),
            ErrorCode::Corrupt => (StatusCode::UNPROCESSABLE_ENTITY, "corrupt"),
            ErrorCode::Incomplete => (StatusCode::UNPROCESSABLE_ENTITY, "incomplete"),
            ErrorCode::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "busy"),
            ErrorCode::Internal | ErrorCode::Other(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::warn!("internal error: {}", e.full_text());
        }
        HttpError::new(status, code, e.message)
    }

    /// The status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

/// `map_err` for a service call, where a "not found" means `what`.
pub(crate) fn service_error(what: Missing) -> impl Fn(ServiceError) -> HttpError {
    move |e| HttpError::from_service(e, what)
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "code": self.code });
        let mut r = (self.status, axum::Json(body)).into_response();
        let h = r.headers_mut();
        if let Some(c) = self.hub_code {
            h.insert("x-error-code", HeaderValue::from_static(c));
        }
        // A header carries visible ASCII only.
        let printable: String = self.message.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect();
        if let Ok(v) = HeaderValue::from_str(&printable) {
            h.insert("x-error-message", v);
        }
        r
    }
}

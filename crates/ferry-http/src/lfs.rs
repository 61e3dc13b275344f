//! The Git LFS batch API with the basic transfer, at
//! `/[datasets/]{owner}/{name}.git/info/lfs`: what `git lfs push` and
//! `git lfs pull` use, and huggingface_hub for files too large to travel
//! inside a commit.
//!
//! An object is stored as any file is (cut into chunks, deduplicated
//! against everything the hub holds) while its SHA-256 is computed; a body
//! whose hash or length is not the one announced is refused and kept by
//! nothing. huggingface_hub sends an upload without its token, so every
//! upload and download URL the batch hands out carries its own credential:
//! an HMAC, under a key this door draws at start, of the operation, the
//! repository, the object, the token's id and an expiry.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use ferry_service::{Grant, Session};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{service_error, HttpError, Missing};
use crate::hf::{blocking, param, repo_of};
use crate::upload::{base_url, parse_sha256};
use crate::{Caller, Door};

const LFS_JSON: &str = "application/vnd.git-lfs+json";

/// How long a URL the batch hands out stays good.
const URL_LIFETIME: Duration = Duration::from_secs(3600);

/// Objects per batch request (git-lfs sends 100; huggingface_hub 256).
const MAX_OBJECTS: usize = 1000;

#[derive(Deserialize)]
pub(crate) struct Batch {
    operation: String,
    objects: Vec<Object>,
}

#[derive(Deserialize)]
struct Object {
    oid: String,
    size: u64,
}

fn lfs_json(status: StatusCode, v: Value) -> Response {
    (status, [(header::CONTENT_TYPE, LFS_JSON)], Json(v)).into_response()
}

/// The repository of an LFS route: `{name}` ends in `.git`.
fn lfs_repo(p: &[(String, String)]) -> Result<String, HttpError> {
    let name = param(p, "name").unwrap_or_default();
    let owner = param(p, "owner").unwrap_or_default();
    let bare = name.strip_suffix(".git").ok_or_else(|| HttpError::missing(Missing::Repo, "LFS lives under {owner}/{name}.git/info/lfs"))?;
    repo_of(&[("owner".into(), owner.into()), ("name".into(), bare.into())])
}

/// `POST .../info/lfs/objects/batch`.
pub(crate) async fn batch(
    State(door): State<Arc<Door>>,
    caller: Caller,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Path(p): Path<Vec<(String, String)>>,
    body: Bytes,
) -> Result<Response, HttpError> {
    let repo = lfs_repo(&p)?;
    let req: Batch = serde_json::from_slice(&body).map_err(|e| HttpError::bad_request(format!("a batch request: {e}")))?;
    if req.objects.len() > MAX_OBJECTS {
        return Err(HttpError::bad_request(format!("at most {MAX_OBJECTS} objects per batch")));
    }
    let upload = match req.operation.as_str() {
        "upload" => true,
        "download" => false,
        other => return Err(HttpError::bad_request(format!("operation {other:?} (upload or download)"))),
    };
    let session = caller.session(&door).await?;
    let objects_url = format!("{}{}", base_url(&door, &headers), uri.path().trim_end_matches("/batch"));
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let door2 = door.clone();
    let objects = blocking(move || {
        // A download is checked per object (a repository may hold LFS
        // objects and no revision yet).
        if upload {
            session.check_write(&repo).map_err(service_error(Missing::Repo))?;
        }
        let token_id = match session.grant() {
            Grant::Token(id) => id.clone(),
            _ => String::new(),
        };
        let expires = now() + URL_LIFETIME.as_secs();
        let action = |op: &str, oid: &str, size: u64| {
            let sig = door2.sign(op, &repo, oid, size, &token_id, expires);
            let mut a = json!({ "href": format!("{objects_url}/{oid}?size={size}&expires={expires}&token={token_id}&sig={sig}"), "expires_in": URL_LIFETIME.as_secs() });
            if let Some(auth) = &auth {
                a["header"] = json!({ "Authorization": auth });
            }
            a
        };
        let mut out = Vec::with_capacity(req.objects.len());
        for o in &req.objects {
            let Ok(sha) = parse_sha256(&o.oid) else {
                out.push(json!({ "oid": o.oid, "size": o.size, "error": { "code": 422, "message": "not a SHA-256" } }));
                continue;
            };
            if upload {
                if session.has_lfs_object(&repo, &sha, o.size).map_err(service_error(Missing::Repo))? {
                    out.push(json!({ "oid": o.oid, "size": o.size }));
                } else {
                    let mut verify = json!({ "href": format!("{objects_url}/verify") });
                    if let Some(auth) = &auth {
                        verify["header"] = json!({ "Authorization": auth });
                    }
                    out.push(json!({ "oid": o.oid, "size": o.size, "authenticated": true, "actions": { "upload": action("upload", &o.oid, o.size), "verify": verify } }));
                }
            } else {
                match session.lfs_object(&repo, &sha) {
                    Ok(e) if e.size == o.size => {
                        out.push(json!({ "oid": o.oid, "size": o.size, "authenticated": true, "actions": { "download": action("download", &o.oid, o.size) } }))
                    }
                    _ => out.push(json!({ "oid": o.oid, "size": o.size, "error": { "code": 404, "message": "object not found" } })),
                }
            }
        }
        Ok(out)
    })
    .await?;
    Ok(lfs_json(StatusCode::OK, json!({ "transfer": "basic", "objects": objects, "hash_algo": "sha256" })))
}

#[derive(Deserialize)]
pub(crate) struct Signed {
    size: u64,
    expires: u64,
    #[serde(default)]
    token: String,
    sig: String,
}

impl Door {
    fn sign(&self, op: &str, repo: &str, oid: &str, size: u64, token_id: &str, expires: u64) -> String {
        let msg = format!("{op}\0{repo}\0{oid}\0{size}\0{token_id}\0{expires}");
        hex::encode(ring::hmac::sign(&self.url_key, msg.as_bytes()).as_ref())
    }

    /// The session a signed URL stands for: the token's it was handed to
    /// (checked again now: a revoked token's URLs stop working).
    fn signed_session(&self, op: &str, repo: &str, oid: &str, s: &Signed) -> Result<Session, HttpError> {
        let msg = format!("{op}\0{repo}\0{oid}\0{}\0{}\0{}", s.size, s.token, s.expires);
        let sig = hex::decode(&s.sig).unwrap_or_default();
        if ring::hmac::verify(&self.url_key, msg.as_bytes(), &sig).is_err() || s.expires < now() {
            return Err(HttpError::new(StatusCode::UNAUTHORIZED, "unauthorized", "this transfer URL is not valid (or has expired): ask the batch API again"));
        }
        let grant = if s.token.is_empty() { Grant::Anonymous } else { Grant::Token(s.token.clone()) };
        let session = self.service.session(grant);
        if !session.still_valid() {
            return Err(HttpError::new(StatusCode::UNAUTHORIZED, "unauthorized", "the token this URL was made for is no longer valid"));
        }
        Ok(session)
    }
}

fn now() -> u64 {
    ferry_core::time::unix_now() as u64
}

/// `PUT .../info/lfs/objects/{oid}?...`: an object's bytes, stored as they
/// arrive and kept only if they hash to `oid` and are `size` long.
pub(crate) async fn put_object(
    State(door): State<Arc<Door>>,
    Path(p): Path<Vec<(String, String)>>,
    Query(s): Query<Signed>,
    body: Body,
) -> Result<Response, HttpError> {
    let repo = lfs_repo(&p)?;
    let oid = param(&p, "oid").unwrap_or_default().to_owned();
    let sha = parse_sha256(&oid)?;
    let session = Arc::new(door.signed_session("upload", &repo, &oid, &s)?);
    let stored = store_body(&door, &session, &repo, body).await?;
    if stored.sha256 != sha || stored.size != s.size {
        return Err(HttpError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "hash_mismatch",
            format!("the body ({} bytes, SHA-256 {}) is not object {oid} of {} bytes", stored.size, hex::encode(stored.sha256), s.size),
        ));
    }
    blocking(move || session.keep_lfs_object(&repo, &stored).map_err(service_error(Missing::Repo))).await?;
    Ok(StatusCode::OK.into_response())
}

/// Stores a request body as a file of `repo` as it arrives (a blocking
/// task reads it through a channel of a few pieces), with its SHA-256.
pub(crate) async fn store_body(door: &Arc<Door>, session: &Arc<Session>, repo: &str, body: Body) -> Result<ferry_service::StoredFile, HttpError> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Bytes, String>>(4);
    let reader = BodyReader { rx, piece: Bytes::new() };
    let transfer = door.transfer().await?;
    let storing = {
        let (session, repo) = (session.clone(), repo.to_owned());
        tokio::task::spawn_blocking(move || {
            let _transfer = transfer;
            session.store_file(&repo, reader)
        })
    };
    let mut stream = body.into_data_stream();
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|e| e.to_string());
        let failed = piece.is_err();
        if let Ok(p) = &piece {
            door.metrics.received(p.len() as u64);
        }
        let send = tx.clone();
        if tokio::task::spawn_blocking(move || send.send(piece)).await.map_or(true, |r| r.is_err()) || failed {
            break;
        }
    }
    drop(tx);
    let stored = storing.await.map_err(|e| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    stored.map_err(service_error(Missing::Repo))
}

/// `GET .../info/lfs/objects/{oid}?...`: an object's bytes.
pub(crate) async fn get_object(State(door): State<Arc<Door>>, Path(p): Path<Vec<(String, String)>>, Query(s): Query<Signed>) -> Result<Response, HttpError> {
    let repo = lfs_repo(&p)?;
    let oid = param(&p, "oid").unwrap_or_default().to_owned();
    let sha = parse_sha256(&oid)?;
    let session = Arc::new(door.signed_session("download", &repo, &oid, &s)?);
    let entry = {
        let session = session.clone();
        blocking(move || session.lfs_object(&repo, &sha).map_err(service_error(Missing::Entry))).await?
    };
    let size = entry.size;
    let body = crate::hf::stream_file(door, session, entry, 0, size).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream"), (header::CONTENT_LENGTH, &size.to_string())], body).into_response())
}

/// `POST .../info/lfs/objects/verify`: 200 once the object is kept.
pub(crate) async fn verify(State(door): State<Arc<Door>>, caller: Caller, Path(p): Path<Vec<(String, String)>>, body: Bytes) -> Result<Response, HttpError> {
    let repo = lfs_repo(&p)?;
    let o: Object = serde_json::from_slice(&body).map_err(|e| HttpError::bad_request(e.to_string()))?;
    let sha = parse_sha256(&o.oid)?;
    let session = caller.session(&door).await?;
    blocking(move || match session.lfs_object(&repo, &sha) {
        Ok(e) if e.size == o.size => Ok(lfs_json(StatusCode::OK, json!({}))),
        _ => Err(HttpError::missing(Missing::Entry, format!("object {} of {} bytes is not in {repo}", o.oid, o.size))),
    })
    .await
}

/// `POST .../info/lfs/locks/verify`: no locking here; git-lfs reads 501
/// as "this server does not lock" and carries on (on the same connection:
/// the body is read, as `upload::validate_yaml` says why).
pub(crate) async fn no_locks(_request: axum::body::Bytes) -> Response {
    lfs_json(StatusCode::NOT_IMPLEMENTED, json!({ "message": "this hub does not support LFS locks" }))
}

/// A request body handed from the async side to a blocking reader.
struct BodyReader {
    rx: std::sync::mpsc::Receiver<Result<Bytes, String>>,
    piece: Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.piece.is_empty() {
            match self.rx.recv() {
                Ok(Ok(p)) => self.piece = p,
                Ok(Err(e)) => return Err(std::io::Error::other(e)),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.piece.len());
        buf[..n].copy_from_slice(&self.piece.split_to(n));
        Ok(n)
    }
}

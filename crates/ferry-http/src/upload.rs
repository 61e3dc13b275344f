//! Uploads as huggingface_hub makes them (`create_repo`, `upload_file`,
//! `upload_folder`, `create_commit`, `create_branch`): create the
//! repository, ask how each file goes (`preupload`: small files inside the
//! commit, large ones through Git LFS, see [`crate::lfs`]), then the commit,
//! an NDJSON stream read a line at a time, which moves the branch by
//! compare-and-swap from the parent the client names.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use ferry_core::revision::Entry;
use ferry_service::Session;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{service_error, HttpError, Missing};
use crate::hf::{blocking, commit_id, param, repo_and_rev, repo_of, resolve};
use crate::{Caller, Door};

/// Files up to this size travel inside the commit (base64); larger ones
/// through Git LFS. huggingface_hub holds a regular file in memory, and
/// the door holds one commit line, so this bounds both.
pub const REGULAR_LIMIT: u64 = 10 << 20;

/// The longest commit line the door reads: a regular file of
/// `REGULAR_LIMIT` bytes in base64, and its JSON around it.
const MAX_LINE: usize = (REGULAR_LIMIT as usize / 3 + 1) * 4 + 64 * 1024;

/// `https://host` or `http://host`, as the client reached the door: what
/// the URLs handed back start with.
pub(crate) fn base_url(door: &Door, headers: &HeaderMap) -> String {
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    format!("{}://{host}", if door.tls { "https" } else { "http" })
}

/// The file a commit names by SHA-256 for `path`: an object uploaded to
/// `repo`, or a file of its history (422 if neither, or if it is not
/// `size` bytes long).
pub(crate) fn named_by_sha256(session: &Session, repo: &str, path: &str, oid: &str, size: Option<u64>) -> Result<Entry, HttpError> {
    let object = session
        .lfs_object(repo, &parse_sha256(oid)?)
        .map_err(|_| HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, "incomplete", format!("{path}: no file with SHA-256 {oid} was uploaded to {repo}")))?;
    if size.is_some_and(|s| s != object.size) {
        return Err(HttpError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "size_mismatch",
            format!("{path}: the file with SHA-256 {oid} has {} bytes, not {}", object.size, size.unwrap_or(0)),
        ));
    }
    Ok(Entry { path: path.to_owned(), file_id: object.file_id, size: object.size, executable: false })
}

#[derive(Deserialize)]
pub(crate) struct CreateRepo {
    name: String,
    #[serde(default)]
    organization: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// `POST /api/repos/create`: a repository with an empty first revision
/// on `main`. One that exists answers 409 with its URL, which
/// huggingface_hub's `exist_ok` reads.
pub(crate) async fn create_repo(State(door): State<Arc<Door>>, caller: Caller, headers: HeaderMap, Json(req): Json<CreateRepo>) -> Result<Response, HttpError> {
    let repo = match (&req.organization, req.name.contains('/')) {
        (_, true) => req.name.clone(),
        (Some(org), false) => format!("{org}/{}", req.name),
        (None, false) => return Err(HttpError::bad_request("name the repository as owner/name (ferry has no user namespaces)")),
    };
    ferry_core::names::check_repo_name(&repo).map_err(|e| HttpError::bad_request(e.to_string()))?;
    let prefix = if req.kind.as_deref() == Some("dataset") { "datasets/" } else { "" };
    let url = format!("{}/{prefix}{repo}", base_url(&door, &headers));
    let session = caller.session(&door).await?;
    blocking(move || {
        session.check_write(&repo).map_err(service_error(Missing::Repo))?;
        if session.refs(&repo).is_ok() {
            let body = json!({ "error": format!("{repo} already exists"), "url": url });
            return Ok((StatusCode::CONFLICT, Json(body)).into_response());
        }
        session.commit_files(&repo, "main", None, "Create repository", Vec::new()).map_err(service_error(Missing::Repo))?;
        Ok(Json(json!({ "url": url, "name": repo, "id": repo })).into_response())
    })
    .await
}

/// `POST /api/validate-yaml`: ferry keeps no model cards' metadata, so
/// every README is fine. The body is read all the same: one left unread
/// makes the server close the connection after answering, which a client
/// that pools connections finds out only by sending its next request on
/// it ("server disconnected").
pub(crate) async fn validate_yaml(_readme: axum::body::Bytes) -> Json<Value> {
    Json(json!({ "errors": [], "warnings": [] }))
}

/// `GET .../xet-write-token/{rev}`: huggingface_hub asks for it before
/// sending a large file by Xet, which this hub does not speak.
pub(crate) async fn no_xet() -> HttpError {
    HttpError::new(
        StatusCode::NOT_IMPLEMENTED,
        "xet_not_supported",
        format!("this hub takes files over {} MiB by Git LFS, not Xet: set HF_HUB_DISABLE_XET=1", REGULAR_LIMIT >> 20),
    )
}

#[derive(Deserialize)]
pub(crate) struct Preupload {
    files: Vec<PreuploadFile>,
}

#[derive(Deserialize)]
struct PreuploadFile {
    path: String,
    size: u64,
}

/// `POST /api/{models,datasets}/{owner}/{name}/preupload/{rev}`.
pub(crate) async fn preupload(
    State(door): State<Arc<Door>>,
    caller: Caller,
    Path(p): Path<Vec<(String, String)>>,
    Json(req): Json<Preupload>,
) -> Result<Response, HttpError> {
    let repo = repo_of(&p)?;
    let session = caller.session(&door).await?;
    blocking(move || session.check_write(&repo).map_err(service_error(Missing::Repo))).await?;
    let files: Vec<Value> = req
        .files
        .iter()
        .map(|f| json!({ "path": f.path, "uploadMode": if f.size > REGULAR_LIMIT { "lfs" } else { "regular" }, "shouldIgnore": false, "oid": null }))
        .collect();
    Ok(Json(json!({ "files": files })).into_response())
}

/// One line of a commit.
#[derive(Deserialize)]
#[serde(tag = "key", content = "value", rename_all = "camelCase")]
enum CommitLine {
    Header {
        summary: String,
        #[serde(default)]
        description: String,
        #[serde(default, rename = "parentCommit")]
        parent_commit: Option<String>,
    },
    File {
        path: String,
        content: String,
        #[serde(default)]
        encoding: Option<String>,
    },
    LfsFile {
        path: String,
        oid: String,
        #[serde(default)]
        size: Option<u64>,
    },
    DeletedFile {
        path: String,
    },
    DeletedFolder {
        path: String,
    },
}

/// `POST /api/{models,datasets}/{owner}/{name}/commit/{rev}`: NDJSON, a
/// header line first. Files are stored as their lines arrive; the branch
/// moves only if it is still at the parent (the one the header names, or
/// the head when the commit started).
pub(crate) async fn commit(
    State(door): State<Arc<Door>>,
    caller: Caller,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Path(p): Path<Vec<(String, String)>>,
    body: Body,
) -> Result<Response, HttpError> {
    let (repo, branch) = repo_and_rev(&p)?;
    let session = Arc::new(caller.session(&door).await?);
    let (parent, files) = {
        let (session, repo, branch) = (session.clone(), repo.clone(), branch.clone());
        blocking(move || {
            session.check_write(&repo).map_err(service_error(Missing::Repo))?;
            let head = session.store().branch(&repo, &branch).map_err(|e| HttpError::from_service(e.into(), Missing::Revision))?;
            let head =
                head.ok_or_else(|| HttpError::missing(Missing::Revision, format!("{repo} has no branch {branch:?} (commits go to an existing branch)")))?;
            let (id, rev) = resolve(&session, &repo, &head.to_hex())?;
            Ok((id, rev.entries.into_iter().map(|e| (e.path.clone(), e)).collect::<BTreeMap<String, Entry>>()))
        })
        .await?
    };
    let mut files = files;
    let mut header: Option<(String, Option<String>)> = None;
    let mut lines = Lines::new(body);
    while let Some(line) = lines.next().await? {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed: CommitLine = serde_json::from_slice(&line).map_err(|e| HttpError::bad_request(format!("a commit line: {e}")))?;
        drop(line);
        match parsed {
            CommitLine::Header { summary, description, parent_commit } => {
                let message = if description.is_empty() { summary } else { format!("{summary}\n\n{description}") };
                header = Some((message, parent_commit));
            }
            _ if header.is_none() => return Err(HttpError::bad_request("a commit starts with its header line")),
            CommitLine::File { path, content, encoding } => {
                if encoding.as_deref().is_some_and(|e| e != "base64") {
                    return Err(HttpError::bad_request(format!("{path}: encoding {encoding:?} (only base64)")));
                }
                let bytes = base64::engine::general_purpose::STANDARD.decode(content.as_bytes()).map_err(|e| HttpError::bad_request(format!("{path}: {e}")))?;
                door.metrics.received(bytes.len() as u64);
                let (session, repo) = (session.clone(), repo.clone());
                let stored = blocking(move || session.store_file(&repo, std::io::Cursor::new(bytes)).map_err(service_error(Missing::Repo))).await?;
                files.insert(path.clone(), Entry { path, file_id: stored.file_id, size: stored.size, executable: false });
            }
            CommitLine::LfsFile { path, oid, size } => {
                let (session, repo) = (session.clone(), repo.clone());
                let entry = blocking(move || named_by_sha256(&session, &repo, &path, &oid, size)).await?;
                files.insert(entry.path.clone(), entry);
            }
            CommitLine::DeletedFile { path } => {
                if files.remove(&path).is_none() {
                    return Err(HttpError::missing(Missing::Entry, format!("A file with this name doesn't exist: {path}")));
                }
            }
            CommitLine::DeletedFolder { path } => {
                let dir = format!("{}/", path.trim_end_matches('/'));
                files.retain(|p, _| !p.starts_with(&dir));
            }
        }
    }
    let (message, named_parent) = header.ok_or_else(|| HttpError::bad_request("an empty commit (no header line)"))?;
    if let Some(named) = named_parent.filter(|n| !n.is_empty()) {
        if !parent.to_hex().starts_with(&named.to_ascii_lowercase()) {
            return Err(HttpError::new(
                StatusCode::PRECONDITION_FAILED,
                "conflict",
                format!("{branch} of {repo} has moved on from {named} (it is at {}): update and try again", commit_id(&parent)),
            ));
        }
    }
    let url = base_url(&door, &headers);
    let (id, _) = {
        let (session, repo, branch) = (session.clone(), repo.clone(), branch.clone());
        blocking(move || {
            session.commit_files(&repo, &branch, Some(parent), &message, files.into_values().collect()).map_err(|e| match e.code {
                ferry_proto::ErrorCode::Conflict => HttpError::new(StatusCode::PRECONDITION_FAILED, "conflict", e.message),
                _ => HttpError::from_service(e, Missing::Repo),
            })
        })
        .await?
    };
    let kind = if uri.path().starts_with("/api/datasets/") { "datasets/" } else { "" };
    Ok(Json(json!({
        "success": true,
        "commitOid": commit_id(&id),
        "commitUrl": format!("{url}/{kind}{repo}/commit/{}", commit_id(&id)),
        "commitMessage": "",
        "hookOutput": "",
        "pullRequestUrl": null,
    }))
    .into_response())
}

#[derive(Deserialize, Default)]
pub(crate) struct NewBranch {
    #[serde(default, rename = "startingPoint")]
    starting_point: Option<String>,
}

/// `POST /api/{models,datasets}/{owner}/{name}/branch/{branch}`: a new
/// branch at `startingPoint` (default `main`); 409 if it exists.
pub(crate) async fn create_branch(
    State(door): State<Arc<Door>>,
    caller: Caller,
    Path(p): Path<Vec<(String, String)>>,
    body: axum::body::Bytes,
) -> Result<Response, HttpError> {
    let (repo, branch) = (repo_of(&p)?, param(&p, "branch").unwrap_or_default().to_owned());
    let req: NewBranch =
        if body.is_empty() { NewBranch::default() } else { serde_json::from_slice(&body).map_err(|e| HttpError::bad_request(e.to_string()))? };
    let session = caller.session(&door).await?;
    let from = req.starting_point.unwrap_or_else(|| "main".into());
    blocking(move || create_ref(&session, &repo, &branch, &from, &format!("a branch {branch:?}"))).await
}

/// Makes the branch `name` (a tag's is `tags/...`) of `repo` at the
/// revision `from` names; 409 naming `what` if it exists.
fn create_ref(session: &Session, repo: &str, name: &str, from: &str, what: &str) -> Result<Response, HttpError> {
    let (id, _) = resolve(session, repo, from)?;
    session.update_branch(repo, name, None, id, &[]).map_err(|e| match e.code {
        ferry_proto::ErrorCode::Conflict => HttpError::new(StatusCode::CONFLICT, "conflict", format!("{repo} already has {what}")),
        _ => HttpError::from_service(e, Missing::Repo),
    })?;
    Ok(Json(json!({})).into_response())
}

#[derive(Deserialize)]
pub(crate) struct NewTag {
    tag: String,
}

/// `POST /api/{models,datasets}/{owner}/{name}/tag/{rev}` `{"tag",
/// "message"?}`: tags a revision (`tags/<tag>`; 409 if the tag exists).
pub(crate) async fn create_tag(
    State(door): State<Arc<Door>>,
    caller: Caller,
    Path(p): Path<Vec<(String, String)>>,
    body: axum::body::Bytes,
) -> Result<Response, HttpError> {
    let (repo, rev) = repo_and_rev(&p)?;
    let req: NewTag = serde_json::from_slice(&body).map_err(|e| HttpError::bad_request(e.to_string()))?;
    let session = caller.session(&door).await?;
    let tag = format!("{}{}", ferry_store::TAG_PREFIX, req.tag);
    blocking(move || create_ref(&session, &repo, &tag, &rev, &format!("a tag {:?}", req.tag))).await
}

/// `DELETE /api/{models,datasets}/{owner}/{name}/tag/{tag}`: deletes a tag
/// (an admin token).
pub(crate) async fn delete_tag(State(door): State<Arc<Door>>, caller: Caller, Path(p): Path<Vec<(String, String)>>) -> Result<Response, HttpError> {
    let (repo, tag) = (repo_of(&p)?, format!("{}{}", ferry_store::TAG_PREFIX, param(&p, "rev").unwrap_or_default()));
    let session = caller.session(&door).await?;
    blocking(move || {
        let head = session.refs(&repo).map_err(service_error(Missing::Repo))?.branches.into_iter().find(|b| b.0 == tag).map(|b| b.1);
        let head = head.ok_or_else(|| HttpError::missing(Missing::Revision, format!("{repo} has no tag {:?}", &tag[ferry_store::TAG_PREFIX.len()..])))?;
        session.delete_branch(&repo, &tag, head).map_err(service_error(Missing::Revision))?;
        Ok(Json(json!({})).into_response())
    })
    .await
}

/// A hex SHA-256 (an LFS object id).
pub(crate) fn parse_sha256(oid: &str) -> Result<[u8; 32], HttpError> {
    let mut sha = [0u8; 32];
    hex::decode_to_slice(oid, &mut sha).map_err(|_| HttpError::bad_request(format!("{oid:?} is not a SHA-256 (64 hex digits)")))?;
    Ok(sha)
}

/// A request body split into lines, each at most `MAX_LINE` bytes.
struct Lines {
    body: axum::body::BodyDataStream,
    buf: Vec<u8>,
    done: bool,
}

impl Lines {
    fn new(body: Body) -> Lines {
        Lines { body: body.into_data_stream(), buf: Vec::new(), done: false }
    }

    async fn next(&mut self) -> Result<Option<Vec<u8>>, HttpError> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let rest = self.buf.split_off(i + 1);
                let mut line = std::mem::replace(&mut self.buf, rest);
                line.pop();
                return Ok(Some(line));
            }
            if self.buf.len() > MAX_LINE {
                return Err(HttpError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "line_too_long",
                    format!("a commit line is over {} MiB: send files over {} MiB by LFS", MAX_LINE >> 20, REGULAR_LIMIT >> 20),
                ));
            }
            if self.done {
                return Ok((!self.buf.is_empty()).then(|| std::mem::take(&mut self.buf)));
            }
            match self.body.next().await {
                Some(Ok(bytes)) => self.buf.extend_from_slice(&bytes),
                Some(Err(e)) => return Err(HttpError::bad_request(format!("reading the commit: {e}"))),
                None => self.done = true,
            }
        }
    }
}

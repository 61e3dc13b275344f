//! The Hugging Face Hub's file API, as huggingface_hub (`hf_hub_download`,
//! `snapshot_download`, `model_info`, `list_repo_files`, `list_repo_tree`)
//! calls it: resolve (GET and HEAD, byte ranges), repository info with
//! its files, tree listings.
//!
//! Names as the Hub's clients expect them: a revision's commit id is the
//! first 40 hex digits of its ferry id (the width of a git commit id,
//! which the client checks for; ferry resolves any unique prefix), and a
//! file's blob id the first 40 of its file id. Models and datasets share
//! ferry's one namespace of repositories: `datasets/org/x` is `org/x`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use ferry_core::revision::{Entry, Revision};
use ferry_core::Id;
use ferry_service::Session;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{service_error, HttpError, Missing};
use crate::{Caller, Door};

/// A revision's id as the Hub's clients see it.
pub fn commit_id(id: &Id) -> String {
    id.to_hex()[..40].to_owned()
}

fn blob_id(entry: &Entry) -> String {
    entry.file_id.to_hex()[..40].to_owned()
}

/// What the Hub says of a large file whose SHA-256 ferry knows: Git LFS's
/// name for it (the hex SHA-256) and the size of its pointer file.
struct LfsInfo {
    oid: String,
    size: u64,
    pointer_size: usize,
}

/// Files over the size that travels inside a commit are LFS files to the
/// Hub's clients, when their SHA-256 is known.
fn lfs_info(session: &Session, entry: &Entry) -> Option<LfsInfo> {
    if entry.size <= crate::upload::REGULAR_LIMIT {
        return None;
    }
    let oid = hex::encode(session.sha256_of(&entry.file_id).ok().flatten()?);
    let pointer_size = format!("version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {}\n", entry.size).len();
    Some(LfsInfo { oid, size: entry.size, pointer_size })
}

/// The repository, checked readable, and the revision `rev` names in it.
pub(crate) fn resolve(session: &Session, repo: &str, rev: &str) -> Result<(Id, Revision), HttpError> {
    session.refs(repo).map_err(service_error(Missing::Repo))?;
    session.resolve(repo, rev).map_err(service_error(Missing::Revision))
}

#[derive(Deserialize, Default)]
pub(crate) struct InfoQuery {
    /// `files_metadata=True` in the client: sizes and blob ids too.
    #[serde(default)]
    blobs: Option<String>,
}

/// `GET /api/{models,datasets}/{owner}/{name}[/revision/{rev}]`.
pub(crate) async fn repo_info(
    State(door): State<Arc<Door>>,
    caller: Caller,
    Path(p): Path<Vec<(String, String)>>,
    Query(q): Query<InfoQuery>,
) -> Result<Response, HttpError> {
    let (repo, rev) = repo_and_rev(&p)?;
    let session = caller.session(&door).await?;
    let with_blobs = q.blobs.as_deref().is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    let info = blocking(move || {
        let (id, revision) = resolve(&session, &repo, &rev)?;
        let public = session.refs(&repo).map(|r| r.public).unwrap_or(false);
        let siblings: Vec<Value> = revision
            .entries
            .iter()
            .map(|e| {
                if !with_blobs {
                    return json!({ "rfilename": e.path });
                }
                let mut v = json!({ "rfilename": e.path, "size": e.size, "blobId": blob_id(e) });
                if let Some(lfs) = lfs_info(&session, e) {
                    v["lfs"] = json!({ "sha256": lfs.oid, "size": lfs.size, "pointerSize": lfs.pointer_size });
                }
                v
            })
            .collect();
        let when = ferry_core::time::utc_iso8601(revision.time);
        let owner = repo.split('/').next().unwrap_or_default();
        Ok(json!({
            "_id": repo, "id": repo, "modelId": repo, "author": owner,
            "sha": commit_id(&id), "lastModified": when, "createdAt": when,
            "private": !public, "gated": false, "disabled": false,
            "tags": [], "downloads": 0, "likes": 0,
            "siblings": siblings,
        }))
    })
    .await?;
    Ok(Json(info).into_response())
}

/// `GET /api/{models,datasets}/{owner}/{name}/refs`: the branches (ferry
/// has no tags, converts or pull requests).
pub(crate) async fn refs(State(door): State<Arc<Door>>, caller: Caller, Path(p): Path<Vec<(String, String)>>) -> Result<Response, HttpError> {
    let repo = repo_of(&p)?;
    let session = caller.session(&door).await?;
    let refs = blocking(move || session.refs(&repo).map_err(service_error(Missing::Repo))).await?;
    let (mut branches, mut tags) = (Vec::new(), Vec::new());
    for (name, id) in &refs.branches {
        match name.strip_prefix(ferry_store::TAG_PREFIX) {
            Some(tag) => tags.push(json!({ "name": tag, "ref": format!("refs/tags/{tag}"), "targetCommit": commit_id(id) })),
            None => branches.push(json!({ "name": name, "ref": format!("refs/heads/{name}"), "targetCommit": commit_id(id) })),
        }
    }
    Ok(Json(json!({ "branches": branches, "converts": [], "tags": tags, "pullRequests": [] })).into_response())
}

#[derive(Deserialize, Default)]
pub(crate) struct TreeQuery {
    #[serde(default)]
    recursive: Option<String>,
}

/// `GET /api/{models,datasets}/{owner}/{name}/tree/{rev}[/{path}]`: the
/// files and directories directly under `path` (or all below it with
/// `recursive=true`).
pub(crate) async fn tree(
    State(door): State<Arc<Door>>,
    caller: Caller,
    Path(p): Path<Vec<(String, String)>>,
    Query(q): Query<TreeQuery>,
) -> Result<Response, HttpError> {
    let (repo, rev) = repo_and_rev(&p)?;
    let dir = param(&p, "path").unwrap_or("").trim_matches('/').to_owned();
    let recursive = q.recursive.as_deref().is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    let session = caller.session(&door).await?;
    let listing = blocking(move || {
        let (_, revision) = resolve(&session, &repo, &rev)?;
        let listing = list_tree(&revision, &dir, recursive, &|e| lfs_info(&session, e));
        if !dir.is_empty() && listing.is_empty() {
            return Err(HttpError::missing(Missing::Entry, format!("{repo}@{rev} has no directory {dir:?}")));
        }
        Ok(listing)
    })
    .await?;
    Ok(Json(listing).into_response())
}

/// Paths asked of one `paths-info` request, at most.
const MAX_PATHS_ASKED: usize = 10_000;

/// `POST /api/{models,datasets}/{owner}/{name}/paths-info/{rev}`, a form
/// of `paths` (repeated) and `expand` (huggingface_hub's
/// `get_paths_info`): each path asked that is a file or a directory of the
/// revision, as the tree listing gives it, in the order asked; other paths
/// are left out.
pub(crate) async fn paths_info(
    State(door): State<Arc<Door>>,
    caller: Caller,
    Path(p): Path<Vec<(String, String)>>,
    body: axum::body::Bytes,
) -> Result<Response, HttpError> {
    let (repo, rev) = repo_and_rev(&p)?;
    let asked: Vec<String> = form_urlencoded::parse(&body).filter(|(k, _)| k == "paths").map(|(_, v)| v.trim_matches('/').to_owned()).collect();
    if asked.len() > MAX_PATHS_ASKED {
        return Err(HttpError::bad_request(format!("{} paths asked; at most {MAX_PATHS_ASKED} at once", asked.len())));
    }
    let session = caller.session(&door).await?;
    let found = blocking(move || {
        let (_, revision) = resolve(&session, &repo, &rev)?;
        let mut out = Vec::new();
        for path in asked.iter().filter(|p| !p.is_empty()) {
            if let Some(e) = revision.entry(path) {
                out.push(file_json(e, lfs_info(&session, e)));
            } else if revision.entries.iter().any(|e| e.path.strip_prefix(path.as_str()).is_some_and(|r| r.starts_with('/'))) {
                out.push(directory_json(path));
            }
        }
        Ok(out)
    })
    .await?;
    Ok(Json(found).into_response())
}

/// A file as tree listings show it.
fn file_json(e: &Entry, lfs: Option<LfsInfo>) -> Value {
    let mut v = json!({ "type": "file", "oid": blob_id(e), "size": e.size, "path": e.path });
    if let Some(l) = lfs {
        v["lfs"] = json!({ "oid": l.oid, "size": l.size, "pointerSize": l.pointer_size });
    }
    v
}

/// A directory as tree listings show it.
fn directory_json(path: &str) -> Value {
    json!({ "type": "directory", "oid": commit_id(&Id::of_chunk(path.as_bytes())), "size": 0, "path": path })
}

/// Entries of a revision under `dir`, each directory listed once before
/// the first file below it.
fn list_tree(revision: &Revision, dir: &str, recursive: bool, lfs: &dyn Fn(&Entry) -> Option<LfsInfo>) -> Vec<Value> {
    let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
    let mut out = Vec::new();
    let mut listed = std::collections::HashSet::new();
    for e in revision.entries.iter().filter(|e| e.path.starts_with(&prefix)) {
        let rest = &e.path[prefix.len()..];
        // Every directory between `dir` and the file (only the first
        // level unless recursive), each once.
        let parts: Vec<&str> = rest.split('/').collect();
        let levels = if recursive { parts.len() - 1 } else { (parts.len() - 1).min(1) };
        for i in 1..=levels {
            let d = format!("{prefix}{}", parts[..i].join("/"));
            if !listed.contains(&d) {
                out.push(directory_json(&d));
                listed.insert(d);
            }
        }
        if parts.len() == 1 || recursive {
            out.push(file_json(e, lfs(e)));
        }
    }
    out
}

/// `HEAD` and `GET /[datasets/]{owner}/{name}/resolve/{rev}/{path}`: a
/// file's bytes (or a range of them), with the headers huggingface_hub
/// reads: `X-Repo-Commit`, `ETag`, the size.
pub(crate) async fn resolve_file(
    State(door): State<Arc<Door>>,
    caller: Caller,
    method: Method,
    headers: HeaderMap,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Response, HttpError> {
    let (repo, rev) = repo_and_rev(&p)?;
    let path = param(&p, "path").unwrap_or("").to_owned();
    let session = Arc::new(caller.session(&door).await?);
    let found = {
        let session = session.clone();
        blocking(move || {
            let (id, revision) = resolve(&session, &repo, &rev)?;
            let entry = revision.entry(&path).cloned();
            let lfs = entry.as_ref().and_then(|e| lfs_info(&session, e));
            Ok((id, entry.map(|e| (e, lfs)).ok_or_else(|| HttpError::missing(Missing::Entry, format!("{repo}@{rev} has no file {path:?}")))))
        })
        .await?
    };
    let (id, (entry, lfs)) = match found {
        (id, Err(e)) => return Ok(with_commit(e.into_response(), &id)),
        (id, Ok(found)) => (id, found),
    };
    let range = match headers.get(header::RANGE).map(|v| parse_range(v.to_str().unwrap_or(""), entry.size)) {
        None | Some(RangeAsk::Whole) => None,
        Some(RangeAsk::Part(a, b)) => Some((a, b)),
        Some(RangeAsk::Unsatisfiable) => {
            let mut r =
                HttpError::new(StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable", format!("the file has {} bytes", entry.size)).into_response();
            r.headers_mut().insert(header::CONTENT_RANGE, hv(&format!("bytes */{}", entry.size)));
            return Ok(r);
        }
    };
    let (start, end) = range.unwrap_or((0, entry.size));
    let mut builder = Response::builder()
        .status(if range.is_some() { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK })
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{}\"", blob_id(&entry)))
        .header("x-repo-commit", commit_id(&id));
    if let Some(lfs) = &lfs {
        // The Hub's clients name a large file's cached copy by its SHA-256.
        builder = builder.header("x-linked-etag", format!("\"{}\"", lfs.oid)).header("x-linked-size", lfs.size);
    }
    if range.is_some() {
        builder = builder.header(header::CONTENT_RANGE, format!("bytes {start}-{}/{}", end.saturating_sub(1), entry.size));
    }
    if method == Method::HEAD || start == end {
        return Ok(builder.body(Body::empty()).expect("valid headers"));
    }
    let body = stream_file(door.clone(), session, entry, start, end).await?;
    Ok(builder.body(body).expect("valid headers"))
}

/// Bytes handed to the client per body frame.
const PIECE: usize = 256 << 10;

/// The file's bytes `start..end` as a body: a blocking task reads (every
/// chunk verified) into a channel of a few pieces, so a slow client holds
/// the read back instead of the hub buffering the file.
pub(crate) async fn stream_file(door: Arc<Door>, session: Arc<Session>, entry: Entry, start: u64, end: u64) -> Result<Body, HttpError> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let transfer = door.transfer().await?;
    tokio::task::spawn_blocking(move || {
        let _transfer = transfer;
        let mut w = PieceWriter { tx: &tx, buf: Vec::with_capacity(PIECE), door: &door };
        let res = session.read_file(&entry, start, end, &mut w).map_err(|e| std::io::Error::other(e.message)).and_then(|()| w.flush_piece());
        if let Err(e) = res {
            tracing::warn!("reading {:?} for a download stopped: {e}", entry.path);
            // The body ends short of its length: the client sees it fail.
            let _ = tx.blocking_send(Err(e));
        }
    });
    Ok(Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })))
}

struct PieceWriter<'a> {
    tx: &'a tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
    door: &'a Door,
}

impl PieceWriter<'_> {
    fn flush_piece(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE));
        self.door.metrics.sent(piece.len() as u64);
        self.tx.blocking_send(Ok(Bytes::from(piece))).map_err(|_| std::io::Error::other("the client went away"))
    }
}

impl std::io::Write for PieceWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(PIECE - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == PIECE {
            self.flush_piece()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
enum RangeAsk {
    /// No range the door serves (several ranges, another unit): the whole file.
    Whole,
    /// Bytes `start..end`.
    Part(u64, u64),
    /// A range that starts past the end.
    Unsatisfiable,
}

fn parse_range(v: &str, size: u64) -> RangeAsk {
    let Some(spec) = v.trim().strip_prefix("bytes=") else { return RangeAsk::Whole };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return RangeAsk::Whole };
    let (a, b) = (a.trim(), b.trim());
    let parsed = |s: &str| s.parse::<u64>().ok();
    match (a.is_empty(), b.is_empty()) {
        // The last `n` bytes.
        (true, false) => match parsed(b) {
            Some(0) => RangeAsk::Unsatisfiable,
            Some(n) => RangeAsk::Part(size.saturating_sub(n), size),
            None => RangeAsk::Whole,
        },
        (false, _) => match (parsed(a), if b.is_empty() { Some(u64::MAX) } else { parsed(b) }) {
            (Some(start), Some(last)) if start <= last => {
                if start >= size {
                    RangeAsk::Unsatisfiable
                } else {
                    RangeAsk::Part(start, last.saturating_add(1).min(size))
                }
            }
            _ => RangeAsk::Whole,
        },
        (true, true) => RangeAsk::Whole,
    }
}

fn with_commit(mut r: Response, id: &Id) -> Response {
    r.headers_mut().insert("x-repo-commit", hv(&commit_id(id)));
    r
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("ASCII header")
}

/// The repository a route names (`owner` and `name`), checked as a name.
pub(crate) fn repo_of(p: &[(String, String)]) -> Result<String, HttpError> {
    let repo = format!("{}/{}", param(p, "owner").unwrap_or(""), param(p, "name").unwrap_or(""));
    ferry_core::names::check_repo_name(&repo).map_err(|_| HttpError::missing(Missing::Repo, format!("repository {repo:?} not found")))?;
    Ok(repo)
}

/// The repository a route names, and its revision (`main` if none).
pub(crate) fn repo_and_rev(p: &[(String, String)]) -> Result<(String, String), HttpError> {
    Ok((repo_of(p)?, param(p, "rev").unwrap_or("main").to_owned()))
}

pub(crate) fn param<'a>(p: &'a [(String, String)], name: &str) -> Option<&'a str> {
    p.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Runs store work on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, HttpError> + Send + 'static) -> Result<T, HttpError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_as_clients_send_them() {
        assert_eq!(parse_range("bytes=0-99", 1000), RangeAsk::Part(0, 100));
        assert_eq!(parse_range("bytes=100-", 1000), RangeAsk::Part(100, 1000));
        assert_eq!(parse_range("bytes=-10", 1000), RangeAsk::Part(990, 1000));
        assert_eq!(parse_range("bytes=-5000", 1000), RangeAsk::Part(0, 1000));
        assert_eq!(parse_range("bytes=900-5000", 1000), RangeAsk::Part(900, 1000));
        assert_eq!(parse_range("bytes=1000-", 1000), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 1000), RangeAsk::Whole);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), RangeAsk::Whole);
        assert_eq!(parse_range("items=0-1", 1000), RangeAsk::Whole);
        assert_eq!(parse_range("bytes=x-", 1000), RangeAsk::Whole);
    }

    #[test]
    fn a_tree_lists_each_directory_once_and_only_its_level_unless_recursive() {
        let f = |p: &str| Entry { path: p.into(), file_id: Id::of_chunk(p.as_bytes()), size: 1, executable: false };
        let rev = Revision {
            parents: vec![],
            author: String::new(),
            time: 0,
            message: String::new(),
            entries: vec![f("a/b/c.bin"), f("a/b/d.bin"), f("a/e.bin"), f("z.bin")],
        };
        let paths = |v: Vec<Value>| v.iter().map(|e| format!("{}:{}", e["type"].as_str().unwrap(), e["path"].as_str().unwrap())).collect::<Vec<_>>();
        let none = |_: &Entry| None;
        assert_eq!(paths(list_tree(&rev, "", false, &none)), ["directory:a", "file:z.bin"]);
        assert_eq!(paths(list_tree(&rev, "a", false, &none)), ["directory:a/b", "file:a/e.bin"]);
        assert_eq!(paths(list_tree(&rev, "", true, &none)), ["directory:a", "directory:a/b", "file:a/b/c.bin", "file:a/b/d.bin", "file:a/e.bin", "file:z.bin"]);
        assert!(list_tree(&rev, "nope", true, &none).is_empty());
    }
}

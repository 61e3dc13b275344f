//! ferry's own REST API, under `/v1`, for hub servers that keep their
//! repositories' bytes in ferry: list and follow repositories (long poll
//! or server-sent events), read revisions, history and files, stream files
//! in (cut and deduplicated as they arrive), commit a set of paths to a
//! branch from an expected head, delete a branch. JSON in and out; errors
//! as every route of the door has them (`protocol/http.md` §7).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry_core::revision::Revision;
use ferry_core::Id;
use ferry_service::{ReposQuery, Session};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{service_error, HttpError, Missing};
use crate::hf::{blocking, param, repo_and_rev, repo_of, resolve};
use crate::upload::named_by_sha256;
use crate::{Caller, Door};

fn revision_json(session: &Session, id: &Id, rev: &Revision) -> Value {
    let files: Vec<Value> = rev
        .entries
        .iter()
        .map(|e| {
            let sha = session.sha256_of(&e.file_id).ok().flatten().map(hex::encode);
            json!({ "path": e.path, "size": e.size, "file_id": e.file_id.to_hex(), "sha256": sha })
        })
        .collect();
    json!({
        "id": id.to_hex(), "parents": rev.parents.iter().map(Id::to_hex).collect::<Vec<_>>(),
        "author": rev.author, "time": rev.time, "message": rev.message, "files": files,
    })
}

#[derive(Deserialize, Default)]
pub(crate) struct ReposParams {
    #[serde(default)]
    pattern: Option<String>,
    /// A position from an earlier answer (`hub:seq`): only what changed since.
    #[serde(default)]
    since: Option<String>,
    /// With `since`: wait up to this many seconds (at most 20) for a change.
    #[serde(default)]
    wait: Option<u64>,
    #[serde(default)]
    after: Option<String>,
}

fn parse_position(p: &str) -> Result<([u8; 16], u64), HttpError> {
    let bad = || HttpError::bad_request(format!("position {p:?} (hub:seq, as an answer gave it)"));
    let (hub, seq) = p.split_once(':').ok_or_else(bad)?;
    let mut id = [0u8; 16];
    hex::decode_to_slice(hub, &mut id).map_err(|_| bad())?;
    Ok((id, seq.parse().map_err(|_| bad())?))
}

async fn page(session: &Arc<Session>, pattern: String, after: String, since: Option<([u8; 16], u64)>) -> Result<Value, HttpError> {
    let session = session.clone();
    blocking(move || {
        let p = session.list_repos(&ReposQuery { pattern, after, since }).map_err(service_error(Missing::Repo))?;
        let repos: Vec<Value> = p
            .repos
            .iter()
            .map(|r| {
                let branches: BTreeMap<&str, String> = r.branches.iter().map(|(b, id)| (b.as_str(), id.to_hex())).collect();
                json!({ "name": r.name, "public": r.public, "branches": branches })
            })
            .collect();
        Ok(json!({ "position": format!("{}:{}", hex::encode(p.hub), p.seq), "changes_only": p.changes_only, "more": p.more, "repos": repos }))
    })
    .await
}

/// `GET /v1/repos?pattern=&since=&wait=&after=`: the repositories the
/// caller may read with their branches; with `since`, only those changed
/// since, waiting up to `wait` seconds for one.
pub(crate) async fn repos(State(door): State<Arc<Door>>, caller: Caller, Query(q): Query<ReposParams>) -> Result<Response, HttpError> {
    let session = Arc::new(caller.session(&door).await?);
    let since = q.since.as_deref().map(parse_position).transpose()?;
    if let (Some((hub, seq)), Some(wait)) = (since, q.wait) {
        let _ = session.wait_for_change(hub, seq, Duration::from_secs(wait)).await;
    }
    let pattern = q.pattern.unwrap_or_else(|| "*/*".into());
    Ok(Json(page(&session, pattern, q.after.unwrap_or_default(), since).await?).into_response())
}

/// `GET /v1/events?pattern=&since=`: server-sent events, one `change`
/// event (the same JSON as `/v1/repos`) each time repositories the caller
/// may read change. A follower that reconnects passes the last position.
pub(crate) async fn events(State(door): State<Arc<Door>>, caller: Caller, Query(q): Query<ReposParams>) -> Result<Response, HttpError> {
    let session = Arc::new(caller.session(&door).await?);
    let pattern = q.pattern.unwrap_or_else(|| "*/*".into());
    let first = page(&session, pattern.clone(), String::new(), None).await?;
    let start = match q.since.as_deref().map(parse_position).transpose()? {
        Some(p) => p,
        None => parse_position(first["position"].as_str().unwrap_or_default())?,
    };
    let stream = futures_util::stream::unfold((session, pattern, start), |(session, pattern, (hub, seq))| async move {
        loop {
            // Each wait is bounded; a revoked token ends the stream.
            if !session.still_valid() {
                return None;
            }
            let _ = session.wait_for_change(hub, seq, Duration::from_secs(20)).await;
            let Ok(page) = page(&session, pattern.clone(), String::new(), Some((hub, seq))).await else { return None };
            let Ok(position) = parse_position(page["position"].as_str().unwrap_or_default()) else { return None };
            if position.1 != seq || !page["repos"].as_array().is_none_or(Vec::is_empty) {
                let event = Event::default().event("change").json_data(&page).unwrap_or_default();
                return Some((Ok::<_, Infallible>(event), (session, pattern, position)));
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// `GET /v1/repos/{owner}/{name}/revisions/{rev}`: a revision with its files.
pub(crate) async fn revision(State(door): State<Arc<Door>>, caller: Caller, Path(p): Path<Vec<(String, String)>>) -> Result<Response, HttpError> {
    let (repo, rev) = repo_and_rev(&p)?;
    let session = caller.session(&door).await?;
    let v = blocking(move || {
        let (id, revision) = resolve(&session, &repo, &rev)?;
        Ok(revision_json(&session, &id, &revision))
    })
    .await?;
    Ok(Json(v).into_response())
}

#[derive(Deserialize, Default)]
pub(crate) struct HistoryParams {
    #[serde(default)]
    max: Option<usize>,
}

/// `GET /v1/repos/{owner}/{name}/history/{rev}?max=`: revisions from `rev`
/// back, breadth-first over parents (newest first on a straight line).
pub(crate) async fn history(
    State(door): State<Arc<Door>>,
    caller: Caller,
    Path(p): Path<Vec<(String, String)>>,
    Query(q): Query<HistoryParams>,
) -> Result<Response, HttpError> {
    let (repo, rev) = repo_and_rev(&p)?;
    let max = q.max.unwrap_or(100).min(1000);
    let session = caller.session(&door).await?;
    let v = blocking(move || {
        let (id, _) = resolve(&session, &repo, &rev)?;
        let mut out = Vec::new();
        session
            .history(&repo, &[id], &[], max, &mut |batch| {
                for bytes in batch {
                    let rev = Revision::decode(&bytes).map_err(|e| ferry_service::ServiceError::internal(e.to_string()))?;
                    out.push(revision_json(&session, &ferry_core::revision::revision_id(&bytes), &rev));
                }
                Ok(())
            })
            .map_err(service_error(Missing::Revision))?;
        Ok(Value::Array(out))
    })
    .await?;
    Ok(Json(v).into_response())
}

/// `POST /v1/repos/{owner}/{name}/files`: a file's bytes, stored as they
/// arrive and kept (as an LFS object of the repository, so gc keeps it)
/// until a commit names it: `{"sha256", "size", "file_id", "new_chunks"}`.
pub(crate) async fn upload(State(door): State<Arc<Door>>, caller: Caller, Path(p): Path<Vec<(String, String)>>, body: Body) -> Result<Response, HttpError> {
    let repo = repo_of(&p)?;
    let session = Arc::new(caller.session(&door).await?);
    {
        let (session, repo) = (session.clone(), repo.clone());
        blocking(move || session.check_write(&repo).map_err(service_error(Missing::Repo))).await?;
    }
    let stored = crate::lfs::store_body(&door, &session, &repo, body).await?;
    blocking(move || session.keep_lfs_object(&repo, &stored).map_err(service_error(Missing::Repo)).map(|()| stored))
        .await
        .map(|s| Json(json!({ "sha256": hex::encode(s.sha256), "size": s.size, "file_id": s.file_id.to_hex(), "new_chunks": s.new_chunks })).into_response())
}

#[derive(Deserialize)]
pub(crate) struct CommitRequest {
    branch: String,
    /// The head the commit starts from (full or unique prefix); absent or
    /// null: the branch must not exist yet.
    #[serde(default)]
    expected: Option<String>,
    message: String,
    /// Path -> SHA-256 of a file uploaded to this repository (or of one in
    /// its history).
    #[serde(default)]
    files: BTreeMap<String, String>,
    /// Paths to remove.
    #[serde(default)]
    delete: Vec<String>,
}

/// `POST /v1/repos/{owner}/{name}/commits`: a revision of the expected
/// head's files with `files` set and `delete` removed, published by
/// compare-and-swap (409 if the branch is no longer at `expected`).
pub(crate) async fn commit(
    State(door): State<Arc<Door>>,
    caller: Caller,
    Path(p): Path<Vec<(String, String)>>,
    Json(req): Json<CommitRequest>,
) -> Result<Response, HttpError> {
    let repo = repo_of(&p)?;
    let session = caller.session(&door).await?;
    let v = blocking(move || {
        session.check_write(&repo).map_err(service_error(Missing::Repo))?;
        let (expected, mut files) = match &req.expected {
            Some(rev) => {
                let (id, revision) = resolve(&session, &repo, rev)?;
                (Some(id), revision.entries.into_iter().map(|e| (e.path.clone(), e)).collect::<BTreeMap<_, _>>())
            }
            None => (None, BTreeMap::new()),
        };
        for path in &req.delete {
            files.remove(path).ok_or_else(|| HttpError::missing(Missing::Entry, format!("no file {path:?} to delete")))?;
        }
        for (path, sha) in &req.files {
            files.insert(path.clone(), named_by_sha256(&session, &repo, path, sha, None)?);
        }
        let (id, revision) =
            session.commit_files(&repo, &req.branch, expected, &req.message, files.into_values().collect()).map_err(service_error(Missing::Repo))?;
        Ok(revision_json(&session, &id, &revision))
    })
    .await?;
    Ok(Json(v).into_response())
}

/// `DELETE /v1/repos/{owner}/{name}`: the repository with every branch and
/// tag (an admin token).
pub(crate) async fn delete_repo(State(door): State<Arc<Door>>, caller: Caller, Path(p): Path<Vec<(String, String)>>) -> Result<Response, HttpError> {
    let repo = repo_of(&p)?;
    let session = caller.session(&door).await?;
    blocking(move || {
        session.delete_repo(&repo).map_err(service_error(Missing::Repo))?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

#[derive(Deserialize)]
pub(crate) struct DeleteParams {
    expected: String,
}

/// `DELETE /v1/repos/{owner}/{name}/branches/{branch}?expected=`.
pub(crate) async fn delete_branch(
    State(door): State<Arc<Door>>,
    caller: Caller,
    Path(p): Path<Vec<(String, String)>>,
    Query(q): Query<DeleteParams>,
) -> Result<Response, HttpError> {
    let (repo, branch) = (repo_of(&p)?, param(&p, "branch").unwrap_or_default().to_owned());
    let session = caller.session(&door).await?;
    blocking(move || {
        let (expected, _) = resolve(&session, &repo, &q.expected)?;
        session.delete_branch(&repo, &branch, expected).map_err(service_error(Missing::Revision))?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

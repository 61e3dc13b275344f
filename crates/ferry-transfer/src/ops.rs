//! Push, pull and remote range reads: a local store and a hub connection
//! as the two ends of one transfer.

use std::collections::HashMap;
use std::sync::Arc;

use ferry_core::revision::{revision_id, Revision};
use ferry_core::tree::{node_id, Node};
use ferry_core::Id;
use ferry_net::Client;
use ferry_proto::transfer::{Limits, Partial, Report};
use ferry_proto::{ErrorCode, Message};
use ferry_store::Store;

use crate::driver::{run, BranchPlan, Direction, TransferProgress};
use crate::ends::{Local, Source};
use crate::{Error, Result};

/// Chunks per GetChunks request of a range read.
const GET_BATCH: usize = 64;

/// What a push, pull or mirror of one branch did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Transfer {
    /// "quic" or "tcp".
    pub transport: String,
    /// The branch's head afterwards, hex.
    pub head: String,
    /// Nothing needed to move.
    pub up_to_date: bool,
    /// Revisions the other side lacked.
    pub revisions: u64,
    /// Chunks the other side lacked.
    pub chunks_moved: u64,
    /// Their encoded bytes.
    pub chunk_bytes_moved: u64,
    /// Their raw bytes.
    pub raw_bytes_moved: u64,
    /// Chunks of the transferred files the other side already had.
    pub chunks_already_there: u64,
    /// Tree nodes the other side lacked.
    pub nodes_moved: u64,
    /// Ids sent in negotiation questions.
    pub ids_asked: u64,
    /// All bytes on the wire, both ways (frames, not counting TLS/QUIC overhead).
    pub wire_bytes_sent: u64,
    /// Frame bytes received.
    pub wire_bytes_received: u64,
    /// Upload only: of the chunks moved, those sent while the files were
    /// still being scanned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunks_sent_while_scanning: Option<u64>,
}

/// What to push.
pub struct PushOptions {
    /// The repository.
    pub repo: String,
    /// The branch (the same name locally and on the hub).
    pub branch: String,
}

/// What to pull.
pub struct PullOptions {
    /// The repository.
    pub repo: String,
    /// The branch (the same name on the hub and locally).
    pub branch: String,
    /// Only files matching one of these globs (a partial pull).
    pub include: Vec<String>,
}

impl Transfer {
    /// The summary of one branch's transfer; wire bytes are the caller's.
    pub fn from_report(transport: &str, r: &Report) -> Transfer {
        Transfer {
            transport: transport.into(),
            head: r.head.to_hex(),
            up_to_date: r.up_to_date,
            revisions: r.revisions,
            chunks_moved: r.chunks_moved,
            chunk_bytes_moved: r.chunk_bytes_moved,
            raw_bytes_moved: r.raw_bytes_moved,
            chunks_already_there: r.chunks_already_there,
            nodes_moved: r.nodes_moved,
            ids_asked: r.ids_asked,
            wire_bytes_sent: 0,
            wire_bytes_received: 0,
            chunks_sent_while_scanning: None,
        }
    }
}

pub(crate) fn summary(client: &Client, r: &Report) -> Transfer {
    let (sent, received) = client.wire_bytes();
    Transfer { wire_bytes_sent: sent, wire_bytes_received: received, ..Transfer::from_report(client.transport(), r) }
}

/// Sends the local branch to the hub: only revisions, nodes and chunks
/// the hub lacks, then moves the hub's branch by compare-and-swap.
pub async fn push(hub: &Client, store: &Arc<Store>, opts: &PushOptions, progress: &dyn TransferProgress) -> Result<Transfer> {
    let (repo, branch) = (&opts.repo, &opts.branch);
    let local = store.branch(repo, branch)?.ok_or_else(|| ferry_store::StoreError::UnknownRevision(format!("{repo} has no local branch {branch:?}")))?;
    let refs = hub.refs_if_any(repo).await?;
    let plan = BranchPlan {
        repo,
        branch,
        source_head: local,
        sink_head: refs.iter().find(|b| &b.0 == branch).map(|b| b.1),
        sink_hints: refs.iter().map(|b| b.1).collect(),
        partial: None,
        limits: Limits::default(),
    };
    let report = run(&Local::for_store(store.clone()), hub, plan, Direction::Push, progress).await?;
    Ok(summary(hub, &report))
}

/// Fetches the hub's branch into the local store: revisions, then only
/// the nodes and chunks missing locally, each verified; then moves the
/// local branch by compare-and-swap. With `include`, only the matching
/// files, recorded as a local revision of their own.
pub async fn pull(hub: &Client, store: &Arc<Store>, opts: &PullOptions, progress: &dyn TransferProgress) -> Result<Transfer> {
    let (repo, branch) = (&opts.repo, &opts.branch);
    let head = hub
        .refs_if_any(repo)
        .await?
        .into_iter()
        .find(|b| &b.0 == branch)
        .map(|b| b.1)
        .ok_or_else(|| Error::refused(ErrorCode::NotFound, format!("the hub has no branch {branch:?} in {repo} (or no access)")))?;
    let partial = if opts.include.is_empty() {
        None
    } else {
        let set = globs("--include", &opts.include)?;
        Some(Partial { keep: Box::new(move |p| set.is_match(p)), description: format!("include {}", opts.include.join(", ")) })
    };
    let local = store.branch(repo, branch).ok().flatten();
    let hints = store.branches(repo).unwrap_or_default().into_iter().map(|b| b.1).collect();
    let plan = BranchPlan { repo, branch, source_head: head, sink_head: local, sink_hints: hints, partial, limits: Limits::default() };
    let sink = Local::for_store(store.clone());
    let report = run(hub, &sink, plan, Direction::Pull, progress).await;
    if report.is_err() {
        // Keep the chunks that did arrive, so that a re-run fetches
        // only the rest.
        let _ = tokio::task::block_in_place(|| store.sync());
    }
    Ok(summary(hub, &report?))
}

/// The paths matching any of `patterns` (given with `flag`).
pub(crate) fn globs(flag: &str, patterns: &[String]) -> Result<globset::GlobSet> {
    let mut b = globset::GlobSetBuilder::new();
    for g in patterns {
        b.add(globset::Glob::new(g).map_err(|e| Error::Config(format!("{flag} {g:?}: {e}")))?);
    }
    b.build().map_err(|e| Error::Config(e.to_string()))
}

/// A revision of `repo` by id, verified.
pub(crate) async fn revision(hub: &Client, repo: &str, id: Id) -> Result<Revision> {
    let found = hub.history(repo, vec![id], vec![], 1).await?;
    let bytes = found.into_iter().find(|b| revision_id(b) == id).ok_or_else(|| Error::refused(ErrorCode::NotFound, format!("no revision {id} in {repo}")))?;
    Ok(Revision::decode(&bytes)?)
}

/// The revision `rev` names in `repo` on the hub: a branch, a tag (`v1`
/// for `tags/v1`), or a full revision id.
pub(crate) async fn resolve(hub: &Client, repo: &str, rev: &str) -> Result<Id> {
    let refs = hub.refs(repo).await?;
    let tag = format!("{}{rev}", ferry_store::TAG_PREFIX);
    match refs.iter().find(|b| b.0 == rev).or_else(|| refs.iter().find(|b| b.0 == tag)) {
        Some((_, id)) => Ok(*id),
        None => rev.parse::<Id>().map_err(|_| {
            Error::refused(ErrorCode::NotFound, format!("{repo} has no branch or tag {rev:?} (give a branch, a tag or a full 64-digit revision id)"))
        }),
    }
}

/// Creates tag `name` (the branch `tags/<name>`) of `repo` on the hub at
/// the revision `rev` names; returns that revision.
pub async fn create_tag(hub: &Client, repo: &str, rev: &str, name: &str) -> Result<Id> {
    let id = resolve(hub, repo, rev).await?;
    let tag = format!("{}{name}", ferry_store::TAG_PREFIX);
    hub.request(&Message::UpdateBranch { repo: repo.into(), branch: tag, expected: None, new: id, revisions: Vec::new() }).await?;
    Ok(id)
}

/// Deletes branch (or tag, `tags/...`) `branch` of `repo` on the hub,
/// wherever it is now; returns the head it had.
pub async fn delete_branch(hub: &Client, repo: &str, branch: &str) -> Result<Id> {
    let Some((_, head)) = hub.refs(repo).await?.into_iter().find(|b| b.0 == branch) else {
        return Err(Error::refused(ErrorCode::NotFound, format!("{repo} has no branch {branch:?}")));
    };
    hub.request(&Message::DeleteBranch { repo: repo.into(), branch: branch.into(), expected: head }).await?;
    Ok(head)
}

/// Each branch's and tag's history of `repo` on the hub as retention
/// judges it (`ferry_store::keep`): its head, then every revision it
/// reaches that the hub has not forgotten yet; with each revision's
/// message, for the report.
pub async fn retention_candidates(hub: &Client, repo: &str) -> Result<(Vec<Vec<ferry_store::Candidate>>, HashMap<Id, Revision>)> {
    use ferry_proto::message::{MAX_IDS, MAX_REVISIONS};
    // Branches and tags share most of their history: each revision is
    // fetched, and asked about, once.
    let mut revisions: HashMap<Id, Revision> = HashMap::new();
    let mut forgotten: HashMap<Id, bool> = HashMap::new();
    let mut histories = Vec::new();
    for (_, head) in hub.refs(repo).await? {
        let mut order = Vec::new();
        let mut seen = std::collections::HashSet::from([head]);
        let mut frontier = vec![head];
        while !frontier.is_empty() {
            let unknown: Vec<Id> = frontier.iter().filter(|id| !revisions.contains_key(id)).copied().collect();
            for from in unknown.chunks(MAX_IDS) {
                for bytes in hub.history(repo, from.to_vec(), Vec::new(), MAX_REVISIONS as u32).await? {
                    let id = revision_id(&bytes);
                    if let std::collections::hash_map::Entry::Vacant(slot) = revisions.entry(id) {
                        slot.insert(Revision::decode(&bytes)?);
                    }
                }
            }
            // What the hub did not send is not in its history: left out.
            for id in std::mem::take(&mut frontier) {
                let Some(rev) = revisions.get(&id) else { continue };
                order.push(id);
                frontier.extend(rev.parents.iter().filter(|p| seen.insert(**p)));
            }
        }
        let unasked: Vec<Id> = order.iter().filter(|id| !forgotten.contains_key(id)).copied().collect();
        for ids in unasked.chunks(MAX_IDS) {
            let bits = hub.bitmap(Message::GetForgotten { repo: repo.into(), ids: ids.to_vec() }, ids.len()).await?;
            forgotten.extend(ids.iter().copied().zip(bits));
        }
        let history = order.iter().filter(|id| !forgotten[id] || **id == head).map(|id| ferry_store::Candidate { id: *id, time: revisions[id].time });
        histories.push(history.collect());
    }
    Ok((histories, revisions))
}

/// Forgets revisions of `repo` on the hub (an admin token).
pub async fn forget(hub: &Client, repo: &str, ids: &[Id]) -> Result<()> {
    for batch in ids.chunks(ferry_proto::message::MAX_IDS) {
        hub.request(&Message::Forget { repo: repo.into(), ids: batch.to_vec() }).await?;
    }
    Ok(())
}

/// Deletes `repo` on the hub with every branch and tag; returns them as
/// they were.
pub async fn delete_repo(hub: &Client, repo: &str) -> Result<Vec<(String, Id)>> {
    let refs = hub.refs(repo).await?;
    hub.request(&Message::DeleteRepo { repo: repo.into() }).await?;
    Ok(refs)
}

/// The chunks of the file whose tree is `root` that hold some of bytes
/// `start..end`, each with the file offset it begins at and its size:
/// the tree walked down level by level, every node verified, only
/// children that overlap the range followed.
pub(crate) async fn chunks_in_range(hub: &Client, repo: &str, root: Id, start: u64, end: u64) -> Result<Vec<(Id, u64, u64)>> {
    let mut level: Vec<(Id, u64)> = vec![(root, 0)];
    let mut chunks: Vec<(Id, u64, u64)> = Vec::new();
    while !level.is_empty() {
        let ids: Vec<Id> = level.iter().map(|x| x.0).collect();
        let nodes = hub.nodes(repo, ids.clone()).await?;
        if nodes.len() != ids.len() {
            return Err(Error::Protocol(format!("asked for {} nodes, got {}", ids.len(), nodes.len())));
        }
        let mut next = Vec::new();
        for ((id, base), bytes) in level.iter().zip(nodes) {
            let actual = node_id(&bytes);
            if actual != *id {
                return Err(ferry_core::FormatError::HashMismatch { what: "tree node", id: *id, actual }.into());
            }
            let node = Node::decode(&bytes)?;
            for (c, lo) in node.children_in_range(*base, start, end) {
                if node.height == 1 {
                    chunks.push((c.id, lo, c.size));
                } else {
                    next.push((c.id, lo));
                }
            }
        }
        level = next;
    }
    Ok(chunks)
}

/// Writes bytes `start..end` of `path` in `repo@rev` (a branch or a full
/// revision id) to `out`, fetching only the nodes and chunks that cover
/// the range. Returns the file's size.
pub async fn read_range(hub: &Client, repo: &str, rev: &str, path: &str, range: Option<(u64, Option<u64>)>, out: &mut dyn std::io::Write) -> Result<u64> {
    let id = resolve(hub, repo, rev).await?;
    let revision = revision(hub, repo, id).await?;
    let entry = revision.entry(path).ok_or_else(|| Error::refused(ErrorCode::NotFound, format!("{repo}@{rev} has no file {path:?}")))?;
    let (start, end) = range.map_or((0, entry.size), |(a, b)| (a, b.unwrap_or(entry.size)));
    if start > end || end > entry.size {
        return Err(Error::Config(format!("range {start}..{end} is outside {path:?} ({} bytes)", entry.size)));
    }
    let chunks = chunks_in_range(hub, repo, entry.file_id, start, end).await?;
    for batch in chunks.chunks(GET_BATCH) {
        let ids: Vec<Id> = batch.iter().map(|c| c.0).collect();
        let by_id: HashMap<Id, Vec<u8>> = hub.records(repo, ids, Vec::new()).await?.into_iter().collect();
        for (cid, lo, size) in batch {
            let raw = ferry_core::codec::decode_verified(cid, &by_id[cid])?;
            if raw.len() as u64 != *size {
                return Err(Error::Protocol(format!("chunk {cid} has {} bytes where its tree says {size}", raw.len())));
            }
            let a = start.saturating_sub(*lo) as usize;
            let b = (end.min(lo + size) - lo) as usize;
            out.write_all(&raw[a..b]).map_err(|e| Error::Io(e.to_string()))?;
        }
    }
    Ok(entry.size)
}

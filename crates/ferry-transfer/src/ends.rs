//! The two ends of a transfer. A [`Source`] has a branch's revisions, trees
//! and chunks; a [`Sink`] receives what it lacks. A local store and a hub
//! connection are each both, so push (store → hub), pull (hub → store) and
//! mirror (hub → hub) are one procedure ([`crate::driver::run`]).
//!
//! Whatever a sink stores it verifies itself: a local sink decodes and
//! re-hashes every chunk record, a hub does the same on `PutChunks`. A
//! source's records therefore pass through a relay (a mirror between two
//! hubs) untouched.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ferry_core::Id;
use ferry_net::Client;
use ferry_proto::frame::batches;
use ferry_proto::{Message, RepoRefs};
use ferry_service::{Access, Grant, HubService, ReposQuery, ServiceError, Session};
use ferry_store::Store;

use crate::{Error, Result};

/// Where a transfer reads from.
pub trait Source: Sync {
    /// Encoded revisions breadth-first from `from`, stopping at `until`.
    fn history(&self, repo: &str, from: Vec<Id>, until: Vec<Id>, max: u32) -> impl Future<Output = Result<Vec<Vec<u8>>>> + Send;
    /// Which of these revisions the source holds.
    fn has_revisions(&self, repo: &str, ids: Vec<Id>) -> impl Future<Output = Result<Vec<bool>>> + Send;
    /// Which of these revisions the source forgot (their files are gone).
    /// A source that never forgets answers false for all.
    fn forgotten(&self, _repo: &str, ids: Vec<Id>) -> impl Future<Output = Result<Vec<bool>>> + Send {
        std::future::ready(Ok(vec![false; ids.len()]))
    }
    /// Encoded nodes, in the order asked.
    fn nodes(&self, repo: &str, ids: Vec<Id>) -> impl Future<Output = Result<Vec<Vec<u8>>>> + Send;
    /// Chunk records as stored (compressed), in the order asked; a delta
    /// goes as it is only if its base is in `held` (the sink holds it,
    /// with the sink's proof of that), otherwise as a record that decodes
    /// alone.
    fn records(&self, repo: &str, ids: Vec<Id>, held: Vec<(Id, [u8; 32])>) -> impl Future<Output = Result<Vec<(Id, Vec<u8>)>>> + Send;
    /// For each chunk, the base of its delta record (None: it decodes
    /// alone). A source that never sends deltas answers None for all.
    fn delta_bases(&self, _repo: &str, ids: Vec<Id>) -> impl Future<Output = Result<Vec<Option<Id>>>> + Send {
        std::future::ready(Ok(vec![None; ids.len()]))
    }
}

/// Where a transfer writes to.
pub trait Sink: Sync {
    /// Which of these revisions the sink holds.
    fn has_revisions(&self, repo: &str, ids: Vec<Id>) -> impl Future<Output = Result<Vec<bool>>> + Send;
    /// Which of these tree nodes (with their whole subtrees) the sink holds.
    fn has_nodes(&self, repo: &str, ids: Vec<Id>) -> impl Future<Output = Result<Vec<bool>>> + Send;
    /// Which of these chunks the sink holds.
    fn has_chunks(&self, repo: &str, ids: Vec<Id>) -> impl Future<Output = Result<Vec<bool>>> + Send;
    /// For chunks the sink holds, proofs that it does
    /// (`ferry_core::codec::base_proof`), for a source that sends deltas
    /// only against proven bases. A sink that cannot prove answers zeros
    /// (its source needs none: it is the one sending to a hub).
    fn base_proofs(&self, _repo: &str, ids: Vec<Id>) -> impl Future<Output = Result<Vec<[u8; 32]>>> + Send {
        std::future::ready(Ok(vec![[0; 32]; ids.len()]))
    }
    /// Verifies and stores chunk records; none is stored if one fails.
    fn put_records(&self, repo: &str, records: Vec<(Id, Vec<u8>)>) -> impl Future<Output = Result<()>> + Send;
    /// Stores encoded nodes, each after its children.
    fn put_nodes(&self, repo: &str, nodes: Vec<Vec<u8>>) -> impl Future<Output = Result<()>> + Send;
    /// Stores encoded revisions, parents first, without moving a branch.
    fn put_revisions(&self, repo: &str, revisions: Vec<Vec<u8>>) -> impl Future<Output = Result<()>> + Send;
    /// Marks revisions about to be stored as forgotten: they come without
    /// their files.
    fn forget(&self, repo: &str, ids: Vec<Id>) -> impl Future<Output = Result<()>> + Send;
    /// Where `branch` of `repo` is now (None: no such branch).
    fn branch_head(&self, repo: &str, branch: &str) -> impl Future<Output = Result<Option<Id>>> + Send;
    /// The transfers that relied on what this end holds are over (a mirror
    /// pass ended): anything it kept for them may go.
    fn release(&self) {}
    /// Stores revisions and moves `branch` from `expected` to `new` by
    /// compare-and-swap.
    fn update_branch(&self, repo: &str, branch: &str, expected: Option<Id>, new: Id, revisions: Vec<Vec<u8>>) -> impl Future<Output = Result<()>> + Send;
}

/// What an end holds, as of a change-feed position.
#[derive(Debug, Clone, Default)]
pub struct RepoListing {
    /// The store the position belongs to.
    pub hub: [u8; 16],
    /// The change-feed position the listing is complete up to.
    pub seq: u64,
    /// Only repositories whose branches changed since the position asked
    /// for (else every one).
    pub changes_only: bool,
    /// The repositories with their branch heads.
    pub repos: Vec<RepoRefs>,
}

/// Either end listing what it holds (for mirroring whole hubs).
pub trait Listing: Sync {
    /// Repositories matching a glob (`*` does not cross `/`) that this end
    /// may read, with their branch heads: every one, or with a position
    /// from an earlier listing only those changed since, waiting up to
    /// `wait` for a change.
    fn list_repos(&self, pattern: &str, since: Option<([u8; 16], u64)>, wait: Duration) -> impl Future<Output = Result<RepoListing>> + Send;
    /// One repository's branches (none if it does not exist).
    fn repo_refs(&self, repo: &str) -> impl Future<Output = Result<Vec<(String, Id)>>> + Send;
}

/// A store in this process, reached through the hub service with a
/// trusted session: the same code answers a local end and a hub's
/// clients. As a sink it pins what a transfer relies on (chunks and nodes
/// it has or was given, revisions stored ahead of the branch), so that a
/// gc running in this process (a hub that follows another) cannot collect
/// them before the branch moves.
#[derive(Clone)]
pub struct Local {
    session: Arc<Session>,
}

impl Local {
    /// The local end of the store behind `service`.
    pub fn new(service: &Arc<HubService>) -> Local {
        Local { session: Arc::new(service.session(Grant::Trusted)) }
    }

    /// The local end of `store`, with its own service.
    pub fn for_store(store: Arc<Store>) -> Local {
        let access = Arc::new(Access::for_store(store.path()));
        Local::new(&Arc::new(HubService::new(store, access)))
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        self.session.store()
    }
}

/// Runs store work off the async workers' backs.
fn blocking<T>(f: impl FnOnce() -> Result<T, ServiceError>) -> Result<T> {
    Ok(tokio::task::block_in_place(f)?)
}

/// Collects a streamed answer.
fn collect<T>(answer: impl FnOnce(&mut dyn FnMut(Vec<T>) -> Result<(), ServiceError>) -> Result<(), ServiceError>) -> Result<Vec<T>> {
    let mut out = Vec::new();
    blocking(|| {
        answer(&mut |batch| {
            out.extend(batch);
            Ok(())
        })
    })?;
    Ok(out)
}

impl Source for Local {
    async fn history(&self, repo: &str, from: Vec<Id>, until: Vec<Id>, max: u32) -> Result<Vec<Vec<u8>>> {
        collect(|emit| self.session.history(repo, &from, &until, max as usize, emit))
    }
    async fn has_revisions(&self, repo: &str, ids: Vec<Id>) -> Result<Vec<bool>> {
        blocking(|| self.session.have_revisions(repo, &ids))
    }
    async fn forgotten(&self, repo: &str, ids: Vec<Id>) -> Result<Vec<bool>> {
        blocking(|| self.session.forgotten(repo, &ids))
    }
    async fn nodes(&self, repo: &str, ids: Vec<Id>) -> Result<Vec<Vec<u8>>> {
        collect(|emit| self.session.nodes(repo, &ids, emit))
    }
    // Local records go to a hub, which decodes deltas against its own
    // bases: no proofs needed.
    async fn records(&self, repo: &str, ids: Vec<Id>, held: Vec<(Id, [u8; 32])>) -> Result<Vec<(Id, Vec<u8>)>> {
        let kept: HashSet<Id> = held.into_iter().map(|h| h.0).collect();
        collect(|emit| self.session.chunks_keeping(repo, &ids, &kept, emit))
    }
    async fn delta_bases(&self, repo: &str, ids: Vec<Id>) -> Result<Vec<Option<Id>>> {
        blocking(|| self.session.chunk_bases(repo, &ids))
    }
}

impl Sink for Local {
    async fn has_revisions(&self, repo: &str, ids: Vec<Id>) -> Result<Vec<bool>> {
        blocking(|| self.session.have_revisions(repo, &ids))
    }
    async fn has_nodes(&self, repo: &str, ids: Vec<Id>) -> Result<Vec<bool>> {
        blocking(|| self.session.have_nodes(repo, &ids))
    }
    async fn has_chunks(&self, repo: &str, ids: Vec<Id>) -> Result<Vec<bool>> {
        blocking(|| self.session.have_chunks(repo, &ids))
    }
    async fn base_proofs(&self, _repo: &str, ids: Vec<Id>) -> Result<Vec<[u8; 32]>> {
        let raws = tokio::task::block_in_place(|| self.store().chunks_verified(&ids));
        raws.into_iter().map(|raw| Ok(ferry_core::codec::base_proof(&raw?))).collect()
    }
    async fn put_records(&self, repo: &str, records: Vec<(Id, Vec<u8>)>) -> Result<()> {
        blocking(|| self.session.put_chunks(repo, records))
    }
    async fn put_nodes(&self, repo: &str, nodes: Vec<Vec<u8>>) -> Result<()> {
        blocking(|| self.session.put_nodes(repo, &nodes))
    }
    async fn put_revisions(&self, repo: &str, revisions: Vec<Vec<u8>>) -> Result<()> {
        blocking(|| self.session.put_revisions(repo, &revisions))
    }
    async fn forget(&self, repo: &str, ids: Vec<Id>) -> Result<()> {
        blocking(|| self.session.forget(repo, &ids))
    }
    async fn branch_head(&self, repo: &str, branch: &str) -> Result<Option<Id>> {
        Ok(tokio::task::block_in_place(|| self.store().branch(repo, branch))?)
    }
    fn release(&self) {
        self.session.release();
    }
    async fn update_branch(&self, repo: &str, branch: &str, expected: Option<Id>, new: Id, revisions: Vec<Vec<u8>>) -> Result<()> {
        blocking(|| self.session.update_branch(repo, branch, expected, new, &revisions))
    }
}

impl Listing for Local {
    async fn list_repos(&self, pattern: &str, since: Option<([u8; 16], u64)>, _wait: Duration) -> Result<RepoListing> {
        let mut query = ReposQuery { pattern: pattern.to_owned(), after: String::new(), since };
        let mut listing: Option<RepoListing> = None;
        loop {
            let page = blocking(|| self.session.list_repos(&query))?;
            let l = listing.get_or_insert(RepoListing { hub: page.hub, seq: page.seq, changes_only: page.changes_only, repos: Vec::new() });
            let last = page.repos.last().map(|r| r.name.clone());
            l.repos.extend(page.repos);
            match last {
                Some(name) if page.more => query.after = name,
                _ => return Ok(listing.expect("set above")),
            }
        }
    }
    async fn repo_refs(&self, repo: &str) -> Result<Vec<(String, Id)>> {
        Ok(tokio::task::block_in_place(|| self.store().branches(repo))?)
    }
}

impl Source for Client {
    async fn history(&self, repo: &str, from: Vec<Id>, until: Vec<Id>, max: u32) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for m in self.request(&Message::GetHistory { repo: repo.into(), from, until, max }).await? {
            match m {
                Message::Revisions { revisions } => out.extend(revisions),
                other => return Err(unexpected("Revisions", &other)),
            }
            // A hostile hub could stream revisions forever; the engine
            // refuses more than it asked for, so stop reading there.
            if out.len() > max as usize {
                break;
            }
        }
        Ok(out)
    }
    async fn has_revisions(&self, repo: &str, ids: Vec<Id>) -> Result<Vec<bool>> {
        let n = ids.len();
        Ok(self.bitmap(Message::HaveRevisions { repo: repo.into(), ids }, n).await?)
    }
    async fn forgotten(&self, repo: &str, ids: Vec<Id>) -> Result<Vec<bool>> {
        let n = ids.len();
        match self.bitmap(Message::GetForgotten { repo: repo.into(), ids }, n).await {
            // A hub from before retention knows no such request, and has
            // forgotten nothing.
            Err(ferry_net::NetError::Remote { code: ferry_proto::ErrorCode::BadRequest, .. }) => Ok(vec![false; n]),
            other => Ok(other?),
        }
    }
    async fn nodes(&self, repo: &str, ids: Vec<Id>) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(4096) {
            for m in self.request(&Message::GetNodes { repo: repo.into(), ids: batch.to_vec() }).await? {
                match m {
                    Message::Nodes { nodes } => out.extend(nodes),
                    other => return Err(unexpected("Nodes", &other)),
                }
                if out.len() > ids.len() {
                    break;
                }
            }
        }
        Ok(out)
    }
    async fn delta_bases(&self, repo: &str, ids: Vec<Id>) -> Result<Vec<Option<Id>>> {
        let mut out = Vec::with_capacity(ids.len());
        for m in self.request(&Message::GetChunkBases { repo: repo.into(), ids: ids.clone() }).await? {
            match m {
                Message::ChunkBases { bases } => out.extend(bases.into_iter().map(|b| Some(b).filter(|b| *b != Id::default()))),
                other => return Err(unexpected("ChunkBases", &other)),
            }
        }
        if out.len() != ids.len() {
            return Err(Error::Protocol(format!("asked for the bases of {} chunks, got {}", ids.len(), out.len())));
        }
        Ok(out)
    }
    async fn records(&self, repo: &str, ids: Vec<Id>, held: Vec<(Id, [u8; 32])>) -> Result<Vec<(Id, Vec<u8>)>> {
        let want: HashSet<Id> = ids.iter().copied().collect();
        let mut out = Vec::with_capacity(ids.len());
        let req = if held.is_empty() {
            Message::GetChunks { repo: repo.into(), ids: ids.clone() }
        } else {
            Message::GetChunksAgainst { repo: repo.into(), ids: ids.clone(), held }
        };
        for m in self.request(&req).await? {
            match m {
                Message::Chunks { chunks } => {
                    for (id, rec) in chunks {
                        if !want.contains(&id) {
                            return Err(Error::Protocol(format!("the hub sent chunk {id}, which was not asked for")));
                        }
                        self.count_chunk_bytes(rec.len());
                        out.push((id, rec));
                    }
                }
                other => return Err(unexpected("Chunks", &other)),
            }
            if out.len() > ids.len() {
                break;
            }
        }
        if out.len() != ids.len() {
            return Err(Error::Protocol(format!("asked for {} chunks, got {}", ids.len(), out.len())));
        }
        Ok(out)
    }
}

impl Sink for Client {
    async fn has_revisions(&self, repo: &str, ids: Vec<Id>) -> Result<Vec<bool>> {
        Source::has_revisions(self, repo, ids).await
    }
    async fn has_nodes(&self, repo: &str, ids: Vec<Id>) -> Result<Vec<bool>> {
        let n = ids.len();
        Ok(self.bitmap(Message::HaveNodes { repo: repo.into(), ids }, n).await?)
    }
    async fn has_chunks(&self, repo: &str, ids: Vec<Id>) -> Result<Vec<bool>> {
        let n = ids.len();
        Ok(self.bitmap(Message::HaveChunks { repo: repo.into(), ids }, n).await?)
    }
    async fn put_records(&self, repo: &str, records: Vec<(Id, Vec<u8>)>) -> Result<()> {
        for chunks in batches(records, |r| r.1.len()) {
            let bytes: usize = chunks.iter().map(|c| c.1.len()).sum();
            self.request(&Message::PutChunks { repo: repo.into(), chunks }).await?;
            self.count_chunk_bytes(bytes);
        }
        Ok(())
    }
    async fn put_nodes(&self, repo: &str, nodes: Vec<Vec<u8>>) -> Result<()> {
        self.request(&Message::PutNodes { repo: repo.into(), nodes }).await.map(drop).map_err(Error::from)
    }
    async fn put_revisions(&self, repo: &str, revisions: Vec<Vec<u8>>) -> Result<()> {
        self.request(&Message::PutRevisions { repo: repo.into(), revisions }).await.map(drop).map_err(Error::from)
    }
    async fn forget(&self, repo: &str, ids: Vec<Id>) -> Result<()> {
        self.request(&Message::Forget { repo: repo.into(), ids }).await.map(drop).map_err(Error::from)
    }
    async fn branch_head(&self, repo: &str, branch: &str) -> Result<Option<Id>> {
        Ok(self.refs_if_any(repo).await?.into_iter().find(|b| b.0 == branch).map(|b| b.1))
    }
    async fn update_branch(&self, repo: &str, branch: &str, expected: Option<Id>, new: Id, revisions: Vec<Vec<u8>>) -> Result<()> {
        self.request(&Message::UpdateBranch { repo: repo.into(), branch: branch.into(), expected, new, revisions }).await.map(drop).map_err(Error::from)
    }
}

impl Listing for Client {
    async fn list_repos(&self, pattern: &str, since: Option<([u8; 16], u64)>, wait: Duration) -> Result<RepoListing> {
        let (feed, since) = since.unwrap_or_default();
        let mut listing: Option<RepoListing> = None;
        loop {
            let after = listing.as_ref().and_then(|l| l.repos.last()).map(|r| r.name.clone()).unwrap_or_default();
            // Only the first page waits for a change.
            let wait_ms = if listing.is_none() { wait.as_millis().min(u32::MAX as u128) as u32 } else { 0 };
            let req = Message::ListRepos { pattern: pattern.into(), after: after.clone(), since, hub: feed, wait_ms };
            let mut page = None;
            for m in self.request(&req).await? {
                match m {
                    Message::Repos { more, changes_only, hub, seq, repos } if page.is_none() => page = Some((more, changes_only, hub, seq, repos)),
                    other => return Err(unexpected("one Repos", &other)),
                }
            }
            let Some((more, changes_only, hub, seq, repos)) = page else { return Err(Error::Protocol("ListRepos got no Repos".into())) };
            // Pages must move forward, or a hostile hub could loop us.
            if repos.iter().any(|r| r.name <= after && !after.is_empty()) {
                return Err(Error::Protocol("the hub listed repositories out of order".into()));
            }
            let progressed = !repos.is_empty();
            // The first page's position holds for the whole listing: a
            // change after it may be listed twice, never missed.
            let l = listing.get_or_insert(RepoListing { hub, seq, changes_only, repos: Vec::new() });
            l.repos.extend(repos);
            if !more || !progressed {
                return Ok(listing.expect("set above"));
            }
        }
    }
    async fn repo_refs(&self, repo: &str) -> Result<Vec<(String, Id)>> {
        Ok(self.refs_if_any(repo).await?)
    }
}

fn unexpected(want: &str, got: &Message) -> Error {
    Error::Protocol(format!("expected {want}, got a frame of type {:#04x}", got.tag()))
}

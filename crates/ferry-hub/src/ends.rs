//! The two ends of a transfer. A [`Source`] has a branch's revisions, trees
//! and chunks; a [`Sink`] receives what it lacks. A local store and a hub
//! connection are each both, so push (store → hub), pull (hub → store) and
//! mirror (hub → hub) are one procedure (`transfer::run`).
//!
//! Whatever a sink stores it verifies itself: a local sink decodes and
//! re-hashes every chunk record, a hub does the same on `PutChunks`. A
//! source's records therefore pass through a relay (a mirror between two
//! hubs) untouched.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ferry_core::revision::Revision;
use ferry_core::Id;
use ferry_proto::{Message, RepoRefs, MAX_FRAME_LEN};
use ferry_store::{ChunkStore, Store, StoreError, VerifiedRecord};

use crate::client::Client;
use crate::{HubError, Result};

/// Where a transfer reads from.
pub trait Source: Sync {
    /// Encoded revisions breadth-first from `from`, stopping at `until`.
    fn history(&self, repo: &str, from: Vec<Id>, until: Vec<Id>, max: u32) -> impl Future<Output = Result<Vec<Vec<u8>>>> + Send;
    fn has_revisions(&self, repo: &str, ids: Vec<Id>) -> impl Future<Output = Result<Vec<bool>>> + Send;
    /// Encoded nodes, in the order asked.
    fn nodes(&self, repo: &str, ids: Vec<Id>) -> impl Future<Output = Result<Vec<Vec<u8>>>> + Send;
    /// Chunk records as stored (compressed), in the order asked.
    fn records(&self, repo: &str, ids: Vec<Id>) -> impl Future<Output = Result<Vec<(Id, Vec<u8>)>>> + Send;
}

/// Where a transfer writes to.
pub trait Sink: Sync {
    fn has_revisions(&self, repo: &str, ids: Vec<Id>) -> impl Future<Output = Result<Vec<bool>>> + Send;
    fn has_nodes(&self, repo: &str, ids: Vec<Id>) -> impl Future<Output = Result<Vec<bool>>> + Send;
    fn has_chunks(&self, repo: &str, ids: Vec<Id>) -> impl Future<Output = Result<Vec<bool>>> + Send;
    /// Verifies and stores chunk records; none is stored if one fails.
    fn put_records(&self, repo: &str, records: Vec<(Id, Vec<u8>)>) -> impl Future<Output = Result<()>> + Send;
    /// Stores encoded nodes, each after its children.
    fn put_nodes(&self, repo: &str, nodes: Vec<Vec<u8>>) -> impl Future<Output = Result<()>> + Send;
    /// Stores encoded revisions, parents first, without moving a branch.
    fn put_revisions(&self, repo: &str, revisions: Vec<Vec<u8>>) -> impl Future<Output = Result<()>> + Send;
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

/// A store in this process. As a sink it pins what a transfer relies on
/// (chunks and nodes it has or was given, revisions stored ahead of the
/// branch), so that a gc running in this process (a hub that follows
/// another) cannot collect them before the branch moves.
#[derive(Clone)]
pub struct Local {
    pub store: Arc<Store>,
    pins: Arc<ferry_store::PinHandle>,
}

impl Local {
    pub fn new(store: Arc<Store>) -> Local {
        let pins = Arc::new(store.pin());
        Local { store, pins }
    }
}

fn decode_all(revisions: &[Vec<u8>]) -> Result<Vec<Revision>> {
    Ok(revisions.iter().map(|b| Revision::decode(b)).collect::<Result<_, _>>()?)
}

/// Runs store work off the async workers' backs.
fn blocking<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    tokio::task::block_in_place(f)
}

impl Source for Local {
    async fn history(&self, _repo: &str, from: Vec<Id>, until: Vec<Id>, max: u32) -> Result<Vec<Vec<u8>>> {
        blocking(|| Ok(self.store.history(&from, &until, max as usize)?))
    }
    async fn has_revisions(&self, _repo: &str, ids: Vec<Id>) -> Result<Vec<bool>> {
        blocking(|| ids.iter().map(|i| Ok(self.store.has_revision(i)?)).collect())
    }
    async fn nodes(&self, _repo: &str, ids: Vec<Id>) -> Result<Vec<Vec<u8>>> {
        blocking(|| ids.iter().map(|id| self.store.node_bytes(id)?.ok_or(HubError::Store(StoreError::MissingNode(*id)))).collect())
    }
    async fn records(&self, _repo: &str, ids: Vec<Id>) -> Result<Vec<(Id, Vec<u8>)>> {
        blocking(|| {
            let found = self.store.chunk_store().get_records(&ids)?;
            ids.into_iter().zip(found).map(|(id, rec)| Ok((id, rec.ok_or(StoreError::MissingChunk(id))?))).collect()
        })
    }
}

impl Sink for Local {
    // Answers a transfer relies on later are given under a write session
    // (which gc waits for) and pinned before it ends, as a hub does.
    async fn has_revisions(&self, _repo: &str, ids: Vec<Id>) -> Result<Vec<bool>> {
        blocking(|| {
            let _session = self.store.write_session();
            let have = ids.iter().map(|i| self.store.has_revision(i)).collect::<Result<Vec<_>, _>>()?;
            self.pins.with(|p| ids.iter().zip(&have).filter(|x| *x.1).for_each(|x| p.revision(*x.0)));
            Ok(have)
        })
    }
    async fn has_nodes(&self, _repo: &str, ids: Vec<Id>) -> Result<Vec<bool>> {
        blocking(|| {
            let _session = self.store.write_session();
            let have = self.store.has_nodes(&ids)?;
            self.pins.with(|p| ids.iter().zip(&have).filter(|x| *x.1).for_each(|x| p.node(*x.0)));
            Ok(have)
        })
    }
    async fn has_chunks(&self, _repo: &str, ids: Vec<Id>) -> Result<Vec<bool>> {
        blocking(|| {
            let _session = self.store.write_session();
            let have = self.store.chunk_store().contains(&ids)?;
            self.pins.with(|p| ids.iter().zip(&have).filter(|x| *x.1).for_each(|x| p.chunk(x.0)));
            Ok(have)
        })
    }
    async fn put_records(&self, _repo: &str, records: Vec<(Id, Vec<u8>)>) -> Result<()> {
        blocking(|| {
            let verified = records.into_iter().map(|(id, rec)| VerifiedRecord::verify(id, rec)).collect::<Result<Vec<_>, _>>()?;
            let session = self.store.write_session();
            session.put_records(&verified)?;
            self.pins.with(|p| verified.iter().for_each(|r| p.chunk(&r.id())));
            Ok(())
        })
    }
    async fn put_nodes(&self, _repo: &str, nodes: Vec<Vec<u8>>) -> Result<()> {
        blocking(|| {
            let session = self.store.write_session();
            let ids = session.put_nodes_checked(&nodes)?;
            self.pins.with(|p| ids.into_iter().for_each(|id| p.node(id)));
            Ok(())
        })
    }
    async fn put_revisions(&self, _repo: &str, revisions: Vec<Vec<u8>>) -> Result<()> {
        blocking(|| {
            let session = self.store.write_session();
            session.put_revisions(&decode_all(&revisions)?)?;
            self.pins.with(|p| revisions.iter().for_each(|b| p.revision(ferry_core::revision::revision_id(b))));
            Ok(())
        })
    }
    async fn branch_head(&self, repo: &str, branch: &str) -> Result<Option<Id>> {
        blocking(|| Ok(self.store.branch(repo, branch)?))
    }
    fn release(&self) {
        self.pins.clear();
    }
    async fn update_branch(&self, repo: &str, branch: &str, expected: Option<Id>, new: Id, revisions: Vec<Vec<u8>>) -> Result<()> {
        blocking(|| Ok(self.store.write_session().publish(repo, branch, expected, new, &decode_all(&revisions)?)?))
    }
}

impl Listing for Local {
    async fn list_repos(&self, pattern: &str, since: Option<([u8; 16], u64)>, _wait: Duration) -> Result<RepoListing> {
        let glob = repo_glob(pattern)?;
        let store = &self.store;
        blocking(|| {
            let delta = match since {
                Some((hub, seq)) if hub == store.id() && seq > 0 => store.ref_changes_since(seq)?,
                _ => None,
            };
            let changes_only = delta.is_some();
            let (names, seq) = match delta {
                Some((names, upto)) => (names.into_iter().collect(), upto),
                None => {
                    let seq = store.ref_seq();
                    (store.repos()?.into_iter().map(|r| r.name).collect::<Vec<_>>(), seq)
                }
            };
            let mut repos = Vec::new();
            for name in names.into_iter().filter(|n| glob.is_match(n)) {
                let public = store.repo(&name).is_ok_and(|r| r.public);
                repos.push(RepoRefs { branches: store.branches(&name)?, name, public });
            }
            Ok(RepoListing { hub: store.id(), seq, changes_only, repos })
        })
    }
    async fn repo_refs(&self, repo: &str) -> Result<Vec<(String, Id)>> {
        blocking(|| Ok(self.store.branches(repo)?))
    }
}

/// A repository glob as the hub reads them: `*` stays within one path
/// component, so `org/*` does not match `org/a/b`.
pub fn repo_glob(pattern: &str) -> Result<globset::GlobMatcher> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| HubError::Config(format!("repository pattern {pattern:?}: {e}")))
}

/// Splits records into requests that each fit in a frame.
fn frames_of(records: Vec<(Id, Vec<u8>)>) -> Vec<Vec<(Id, Vec<u8>)>> {
    let budget = MAX_FRAME_LEN - (64 << 10);
    let mut out = vec![];
    let (mut cur, mut bytes) = (Vec::new(), 0);
    for r in records {
        let size = r.1.len() + 36;
        if !cur.is_empty() && bytes + size > budget {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += size;
        cur.push(r);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
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
        self.bitmap(Message::HaveRevisions { repo: repo.into(), ids }, n).await
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
    async fn records(&self, repo: &str, ids: Vec<Id>) -> Result<Vec<(Id, Vec<u8>)>> {
        let want: HashSet<Id> = ids.iter().copied().collect();
        let mut out = Vec::with_capacity(ids.len());
        for m in self.request(&Message::GetChunks { repo: repo.into(), ids: ids.clone() }).await? {
            match m {
                Message::Chunks { chunks } => {
                    for (id, rec) in chunks {
                        if !want.contains(&id) {
                            return Err(HubError::Protocol(format!("the hub sent chunk {id}, which was not asked for")));
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
            return Err(HubError::Protocol(format!("asked for {} chunks, got {}", ids.len(), out.len())));
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
        self.bitmap(Message::HaveNodes { repo: repo.into(), ids }, n).await
    }
    async fn has_chunks(&self, repo: &str, ids: Vec<Id>) -> Result<Vec<bool>> {
        let n = ids.len();
        self.bitmap(Message::HaveChunks { repo: repo.into(), ids }, n).await
    }
    async fn put_records(&self, repo: &str, records: Vec<(Id, Vec<u8>)>) -> Result<()> {
        for chunks in frames_of(records) {
            let bytes: usize = chunks.iter().map(|c| c.1.len()).sum();
            self.request(&Message::PutChunks { repo: repo.into(), chunks }).await?;
            self.count_chunk_bytes(bytes);
        }
        Ok(())
    }
    async fn put_nodes(&self, repo: &str, nodes: Vec<Vec<u8>>) -> Result<()> {
        self.request(&Message::PutNodes { repo: repo.into(), nodes }).await.map(drop)
    }
    async fn put_revisions(&self, repo: &str, revisions: Vec<Vec<u8>>) -> Result<()> {
        self.request(&Message::PutRevisions { repo: repo.into(), revisions }).await.map(drop)
    }
    async fn branch_head(&self, repo: &str, branch: &str) -> Result<Option<Id>> {
        Ok(self.refs_if_any(repo).await?.into_iter().find(|b| b.0 == branch).map(|b| b.1))
    }
    async fn update_branch(&self, repo: &str, branch: &str, expected: Option<Id>, new: Id, revisions: Vec<Vec<u8>>) -> Result<()> {
        self.request(&Message::UpdateBranch { repo: repo.into(), branch: branch.into(), expected, new, revisions }).await.map(drop)
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
            let Some((more, changes_only, hub, seq, repos)) = page else { return Err(HubError::Protocol("ListRepos got no Repos".into())) };
            // Pages must move forward, or a hostile hub could loop us.
            if repos.iter().any(|r| r.name <= after && !after.is_empty()) {
                return Err(HubError::Protocol("the hub listed repositories out of order".into()));
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
        self.refs_if_any(repo).await
    }
}

fn unexpected(want: &str, got: &Message) -> HubError {
    HubError::Protocol(format!("expected {want}, got a frame of type {:#04x}", got.tag()))
}

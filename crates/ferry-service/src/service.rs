//! The hub service and the sessions of its callers.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_core::revision::{revision_id, Revision};
use ferry_core::Id;
use ferry_proto::frame::Batcher;
use ferry_proto::message::MAX_REPOS;
use ferry_proto::{ErrorCode, RepoRefs};
use ferry_store::{GcReport, PinHandle, Store};

use crate::access::{repo_glob, Authorizer, Grant};
use crate::admitted::Admitted;
use crate::audit::{AuditEntry, AuditLog};
use crate::ServiceError;

type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// Failed token attempts per address per minute before that address is
/// refused for the rest of the minute.
pub const DEFAULT_MAX_AUTH_FAILURES: u32 = 5;

/// Longest a change-feed wait may last: well inside the silence a client
/// tolerates.
pub const LONGEST_WAIT: Duration = Duration::from_secs(20);

/// A hub without a transport: a store, who may do what, and how failed
/// authentication is slowed down.
pub struct HubService {
    store: Arc<Store>,
    authorizer: Arc<dyn Authorizer>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    max_failures: u32,
    counters: Counters,
    /// What the sessions a client names in its Hellos were shown, shared
    /// by all its connections while any is open (by grant and session).
    shown: Mutex<HashMap<(String, String), SharedAdmitted>>,
    /// Files whose SHA-256 is still to be computed (`with_sha256_backfill`).
    backfill: Option<Backfill>,
    /// For a read replica: the hub that writes, where writers are sent.
    replica_of: Option<String>,
    /// The tensors of recently written repositories' `main` heads, which
    /// uploaded files are stored as deltas against (by repository).
    bases: Mutex<HashMap<String, (Id, ferry_store::DeltaBases)>>,
    /// Where branch moves through a door are recorded.
    audit: AuditLog,
}

/// The answer for a chunk the hub does not hold or the caller may not read.
fn chunk_not_here(id: &Id) -> ServiceError {
    ServiceError::new(ErrorCode::NotFound, format!("chunk {id} is not on this hub"))
}

/// Bases whose proofs are checked at a time (each decoded whole).
const PROOF_BATCH: usize = 16;

/// Repositories whose delta bases are kept between uploads.
const BASES_KEPT: usize = 16;

/// What one client's connections were shown, while any is open.
type SharedAdmitted = std::sync::Weak<Mutex<Admitted>>;

/// The SHA-256 backfill's queue and thread. Dropping it stops the thread
/// (within one read batch) and waits for it, so the store it holds is
/// closed before the process exits rather than beside it.
struct Backfill {
    queue: Mutex<Option<std::sync::mpsc::Sender<Id>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Backfill {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.queue.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the service has done since it started, for a door's metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Chunks callers sent that the hub did not hold (stored).
    pub chunks_stored: AtomicU64,
    /// Chunks callers sent that the hub already held (not stored again).
    pub chunks_deduplicated: AtomicU64,
    /// Garbage collections run.
    pub gc_runs: AtomicU64,
    /// Time spent in them, in milliseconds.
    pub gc_millis: AtomicU64,
}

impl Counters {
    /// Chunks a caller sent: `stored` new ones, `deduplicated` the hub held.
    pub(crate) fn chunks_received(&self, stored: u64, deduplicated: u64) {
        self.chunks_stored.fetch_add(stored, Ordering::Relaxed);
        self.chunks_deduplicated.fetch_add(deduplicated, Ordering::Relaxed);
    }
}

impl HubService {
    /// A service over `store`, deciding access with `authorizer`.
    pub fn new(store: Arc<Store>, authorizer: Arc<dyn Authorizer>) -> HubService {
        HubService {
            audit: AuditLog::new(store.path()),
            store,
            authorizer,
            failures: Mutex::new(HashMap::new()),
            max_failures: DEFAULT_MAX_AUTH_FAILURES,
            counters: Counters::default(),
            shown: Mutex::new(HashMap::new()),
            backfill: None,
            replica_of: None,
            bases: Mutex::new(HashMap::new()),
        }
    }

    /// What files uploaded to `repo` are stored as deltas against: the
    /// tensors of its `main` head (read once per head, kept for a few
    /// repositories).
    pub(crate) fn delta_bases(&self, repo: &str) -> Result<Option<ferry_store::DeltaBases>> {
        let Some(head) = self.store.branch(repo, "main")? else { return Ok(None) };
        let mut kept = self.bases.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((id, bases)) = kept.get(repo) {
            if *id == head {
                return Ok(Some(bases.clone()));
            }
        }
        let bases = self.store.delta_bases(&self.store.revision(&head)?)?;
        if kept.len() >= BASES_KEPT {
            kept.clear();
        }
        kept.insert(repo.to_owned(), (head, bases.clone()));
        Ok(Some(bases))
    }

    /// Makes this a read replica's service: every write is refused with
    /// the address of `writer`, the hub that writes the store's bucket.
    pub fn replica_of(mut self, writer: String) -> HubService {
        self.replica_of = Some(writer);
        self
    }

    /// Sets how many failed tokens an address may present per minute.
    pub fn with_max_auth_failures(mut self, n: u32) -> HubService {
        self.max_failures = n;
        self
    }

    /// The store it serves.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Checks a presented token (empty: anonymous). Failures are counted
    /// per address (an IPv4 address or an IPv6 /64) and answered slowly;
    /// past the limit the address is refused for a minute.
    pub async fn authenticate(&self, token: &str, peer: IpAddr) -> Result<Grant> {
        if self.rate_limited(peer) {
            return Err(ServiceError::new(ErrorCode::RateLimited, "too many failed token attempts from your address; wait a minute"));
        }
        match self.authorizer.authenticate(token)? {
            Some(grant) => Ok(grant),
            None => {
                self.record_failure(peer);
                // Slow down guessing.
                tokio::time::sleep(Duration::from_millis(250)).await;
                Err(ServiceError::new(ErrorCode::Unauthorized, "the token is not valid for this hub"))
            }
        }
    }

    /// A session for a caller that authenticated as `grant`. What the
    /// session pins stays safe from gc until it is dropped.
    pub fn session(self: &Arc<Self>, grant: Grant) -> Session {
        Session { pins: self.store.pin(), service: self.clone(), grant, admitted: Arc::new(Mutex::new(Admitted::default())), peer: None }
    }

    /// A session that shares what it is shown (what it may read by id)
    /// with the caller's other sessions of the same grant that name the
    /// same `key`: the connections of one client (a TCP client's pool).
    /// Sharing within a grant reveals nothing: every object admitted was
    /// reachable from a repository that grant may read.
    pub fn shared_session(self: &Arc<Self>, grant: Grant, key: &str) -> Session {
        let name = match &grant {
            Grant::Anonymous => String::new(),
            Grant::Token(id) => id.clone(),
            Grant::Trusted => return self.session(grant),
        };
        let mut shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
        shown.retain(|_, w| w.strong_count() > 0);
        let k = (name, key.to_owned());
        let admitted = match shown.get(&k).and_then(std::sync::Weak::upgrade) {
            Some(a) => a,
            None => {
                let a = Arc::new(Mutex::new(Admitted::default()));
                shown.insert(k, Arc::downgrade(&a));
                a
            }
        };
        Session { pins: self.store.pin(), service: self.clone(), grant, admitted, peer: None }
    }

    /// Computes, one file at a time on a thread of its own, the SHA-256 of
    /// every file a branch move publishes without one (pushed or mirrored
    /// files): the name the Hugging Face Hub and Git LFS give a file. A hub
    /// turns it on; a local store has no use for it.
    pub fn with_sha256_backfill(mut self) -> HubService {
        let (tx, rx) = std::sync::mpsc::channel::<Id>();
        let store = self.store.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let spawned = std::thread::Builder::new().name("sha256-backfill".into()).spawn(move || {
            lower_this_threads_priority();
            for file in rx {
                if let Err(e) = backfill_sha256(&store, &file, &stopped) {
                    tracing::debug!("no SHA-256 for file {file}: {e}");
                }
            }
        });
        if let Ok(thread) = spawned {
            self.backfill = Some(Backfill { queue: Mutex::new(Some(tx)), stop, thread: Some(thread) });
        }
        self
    }

    /// Queues the files of revision `id` that have no SHA-256 yet.
    fn queue_backfill(&self, id: &Id) {
        let Some(backfill) = &self.backfill else { return };
        let Ok(rev) = self.store.revision(id) else { return };
        let queue = backfill.queue.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = queue.as_ref() else { return };
        for e in rev.entries {
            if matches!(self.store.sha256_of(&e.file_id), Ok(None)) {
                let _ = tx.send(e.file_id);
            }
        }
    }

    /// What the service has done since it started.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Collects garbage now, keeping what open sessions pinned.
    pub fn collect_garbage(&self) -> Result<GcReport> {
        let started = Instant::now();
        let report = self.store.gc();
        self.counters.gc_runs.fetch_add(1, Ordering::Relaxed);
        self.counters.gc_millis.fetch_add(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        Ok(report?)
    }

    /// Collects garbage every `every`, telling `report` each outcome and
    /// how long it took. Runs until the task is dropped.
    pub async fn collect_garbage_every(self: Arc<Self>, every: Duration, report: impl Fn(Result<GcReport>, Duration) + Send + Sync) {
        loop {
            tokio::time::sleep(every).await;
            let service = self.clone();
            let started = Instant::now();
            let res = tokio::task::spawn_blocking(move || service.collect_garbage())
                .await
                .unwrap_or_else(|e| Err(ServiceError::internal(format!("gc stopped: {e}"))));
            report(res, started.elapsed());
        }
    }

    fn rate_limited(&self, peer: IpAddr) -> bool {
        let f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        f.get(&address_block(peer)).is_some_and(|(n, since)| *n >= self.max_failures && since.elapsed() < Duration::from_secs(60))
    }

    fn record_failure(&self, peer: IpAddr) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        // Forget expired windows before they add up (guessers can have many addresses).
        if f.len() >= 4096 {
            f.retain(|_, (_, since)| since.elapsed() < Duration::from_secs(60));
        }
        let e = f.entry(address_block(peer)).or_insert((0, Instant::now()));
        if e.1.elapsed() >= Duration::from_secs(60) {
            *e = (0, Instant::now());
        }
        e.0 += 1;
    }
}

/// Whom limits per address count against: an IPv4 address, or an IPv6 /64
/// (one host commonly has a whole /64 to pick addresses from).
pub fn address_block(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// A page of repositories, as of a change-feed position.
#[derive(Debug, Clone)]
pub struct ReposQuery {
    /// A repository glob (`*` does not cross `/`).
    pub pattern: String,
    /// List only names after this one (paging; empty: from the start).
    pub after: String,
    /// A change-feed position from an earlier listing: list only the
    /// repositories changed since (if it is this store's and still kept).
    pub since: Option<([u8; 16], u64)>,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct RepoPage {
    /// More repositories follow (ask again with `after` the last name).
    pub more: bool,
    /// Only repositories changed since the position asked for.
    pub changes_only: bool,
    /// The store the position belongs to.
    pub hub: [u8; 16],
    /// The change-feed position the listing is complete up to.
    pub seq: u64,
    /// The repositories, by name, with their branches.
    pub repos: Vec<RepoRefs>,
}

/// A caller's session: who it is, what it has been told the hub holds or
/// has stored for it (pinned against gc until the session ends), and
/// which objects it has been shown the way to (what it may read by id).
pub struct Session {
    pub(crate) service: Arc<HubService>,
    grant: Grant,
    pub(crate) pins: PinHandle,
    admitted: Arc<Mutex<Admitted>>,
    /// Where the caller connected from, for the audit log.
    peer: Option<IpAddr>,
}

impl Session {
    /// The session of a caller that connected from `peer`.
    pub fn from_address(mut self, peer: IpAddr) -> Session {
        self.peer = Some(peer);
        self
    }

    /// Records a change of `repo`'s refs made through a door in the audit
    /// log (this process's own, a pull's or a mirror's, are not).
    /// `changes` are (branch, old head, new head), written with one sync.
    pub(crate) fn audit(&self, action: &str, repo: &str, changes: &[(&str, Option<Id>, Option<Id>)]) -> Result<()> {
        if self.grant == Grant::Trusted || changes.is_empty() {
            return Ok(());
        }
        let (time, token, address) = (ferry_core::time::unix_now(), crate::audit::who(&self.grant), self.peer.map(|p| p.to_string()));
        let entries: Vec<AuditEntry> = changes
            .iter()
            .map(|(branch, old, new)| AuditEntry {
                time,
                action: action.into(),
                repo: repo.into(),
                branch: (*branch).into(),
                old: old.map(|i| i.to_string()),
                new: new.map(|i| i.to_string()),
                token: token.clone(),
                address: address.clone(),
            })
            .collect();
        self.service.audit.record(&entries)
    }

    /// Who the caller is.
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    /// The store behind the service.
    pub fn store(&self) -> &Arc<Store> {
        &self.service.store
    }

    /// Whether the caller's grant still holds. An access file that cannot
    /// be read now counts as holding: requests still check every right.
    pub fn still_valid(&self) -> bool {
        self.service.authorizer.is_valid(&self.grant).unwrap_or(true)
    }

    fn can_read(&self, repo: &str) -> Result<bool> {
        self.service.authorizer.can_read(&self.grant, repo)
    }

    fn can_write(&self, repo: &str) -> Result<bool> {
        self.service.authorizer.can_write(&self.grant, repo)
    }

    /// Refuses, as "not found", a repository the caller may not read.
    pub(crate) fn check_read(&self, repo: &str) -> Result<()> {
        if ferry_core::names::check_repo_name(repo).is_err() || !self.can_read(repo)? {
            return Err(ServiceError::repo_not_found(repo));
        }
        Ok(())
    }

    /// Refuses a repository the caller may not write: "forbidden" only to
    /// one who may read it and so knows it exists, else "not found".
    pub fn check_write(&self, repo: &str) -> Result<()> {
        ferry_core::names::check_repo_name(repo).map_err(|e| ServiceError::new(ErrorCode::BadRequest, e.to_string()))?;
        if self.can_write(repo)? {
            return match &self.service.replica_of {
                Some(writer) => Err(ServiceError::new(ErrorCode::Forbidden, format!("this hub is a read replica: push to {writer}, the hub that writes"))),
                None => Ok(()),
            };
        }
        if self.can_read(repo)? && self.store().repo(repo).is_ok() {
            return Err(ServiceError::new(ErrorCode::Forbidden, format!("you may read {repo} but not write to it (a write token is needed)")));
        }
        Err(ServiceError::repo_not_found(repo))
    }

    /// Refuses what only an admin may do in `repo` (delete it or its tags,
    /// move a tag): "forbidden" to one who may read it, else "not found".
    pub fn check_admin(&self, repo: &str, what: &str) -> Result<()> {
        self.check_write(repo)?;
        if self.service.authorizer.can_administer(&self.grant, repo)? {
            return Ok(());
        }
        Err(ServiceError::new(ErrorCode::Forbidden, format!("{what} in {repo} needs an admin token")))
    }

    /// A repository's branches, and whether it is public.
    pub fn refs(&self, repo: &str) -> Result<RepoRefs> {
        self.check_read(repo)?;
        if self.store().repo(repo).is_err() {
            return Err(ServiceError::repo_not_found(repo));
        }
        Ok(RepoRefs { public: self.service.authorizer.is_public(repo)?, name: repo.to_owned(), branches: self.store().branches(repo)? })
    }

    /// One page of the repositories matching the query that the caller
    /// may read, with their branches: every one, or with a position only
    /// those changed since. A page fits a frame; a repository with more
    /// branches than that still gets a page of its own.
    ///
    /// The position handed back is that of the newest change the caller
    /// may see (0: none known), so it never moves with repositories the
    /// caller may not read.
    pub fn list_repos(&self, q: &ReposQuery) -> Result<RepoPage> {
        let store = self.store();
        let glob = repo_glob(&q.pattern)?;
        let since = q.since.filter(|(feed, _)| *feed == store.id()).map(|(_, seq)| seq);
        let mut readable = Readable::new(self);
        // The position first: a change during the listing is listed again
        // next time rather than missed.
        let (names, seq, changes_only): (Vec<String>, u64, bool) = match since {
            Some(since) => {
                let (changed, newest, complete) = readable.changes_after(since)?;
                if complete {
                    (changed.into_iter().collect(), newest.unwrap_or(since), true)
                } else {
                    (store.repos()?.into_iter().map(|r| r.name).collect(), newest.unwrap_or(since), false)
                }
            }
            None => {
                let newest = readable.newest_change()?;
                (store.repos()?.into_iter().map(|r| r.name).collect(), newest.unwrap_or(0), false)
            }
        };
        let mut page = Batcher::default();
        let mut repos = Vec::new();
        let mut more = false;
        for name in names {
            if name.as_str() <= q.after.as_str() || !glob.is_match(&name) || !readable.check(&name)? {
                continue;
            }
            let branches = store.branches(&name)?;
            let size = name.len() + branches.iter().map(|b| 36 + b.0.len()).sum::<usize>();
            if !page.fits(size) || page.len() == MAX_REPOS {
                more = true;
                break;
            }
            page.push((), size);
            repos.push(RepoRefs { public: self.service.authorizer.is_public(&name)?, name, branches });
        }
        Ok(RepoPage { more, changes_only, hub: store.id(), seq, repos })
    }

    /// Waits until a repository the caller may read changes after position
    /// `since` of store `feed`, or `wait` (at most 20 s) passes.
    /// A follower learns of a new revision at once, and an idle one costs a
    /// request per wait; changes it may not see do not wake it.
    pub async fn wait_for_change(&self, feed: [u8; 16], since: u64, wait: Duration) -> Result<()> {
        let store = self.store();
        if feed != store.id() {
            return Ok(());
        }
        let deadline = Instant::now() + wait.min(LONGEST_WAIT);
        let mut readable = Readable::new(self);
        let mut checked = since;
        while Instant::now() < deadline {
            let now = store.ref_seq();
            if now > checked {
                if readable.changes_after(checked)?.1.is_some() {
                    return Ok(());
                }
                checked = now;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Which of these revisions the hub holds: for a writer of `repo`,
    /// anywhere on the hub (it may build on them); for a reader, in the
    /// history of `repo`. A writer relies on the answer, so what it names
    /// is pinned for it.
    pub fn have_revisions(&self, repo: &str, ids: &[Id]) -> Result<Vec<bool>> {
        self.check_read(repo)?;
        if !self.can_write(repo)? {
            return ids.iter().map(|id| self.admit_revision(repo, id)).collect();
        }
        self.answer_and_pin(ids, |store| ids.iter().map(|i| store.has_revision(i)).collect(), |p, id| p.revision(*id))
    }

    /// Which of these tree nodes (and so their whole subtrees) the hub holds.
    pub fn have_nodes(&self, repo: &str, ids: &[Id]) -> Result<Vec<bool>> {
        self.check_write(repo)?;
        self.answer_and_pin(ids, |store| store.has_nodes(ids), |p, id| p.node(*id))
    }

    /// Which of these chunks the hub holds.
    pub fn have_chunks(&self, repo: &str, ids: &[Id]) -> Result<Vec<bool>> {
        self.check_write(repo)?;
        self.answer_and_pin(ids, |store| store.has_chunks(ids), |p, id| p.chunk(id))
    }

    /// Answers which of `ids` the store holds under a write session (so
    /// never during a gc) and pins those it holds before the session ends:
    /// a writer that relies on the answer later finds them still there.
    fn answer_and_pin(
        &self,
        ids: &[Id],
        lookup: impl FnOnce(&Store) -> Result<Vec<bool>, ferry_store::StoreError>,
        pin: impl Fn(&mut ferry_store::Pins, &Id),
    ) -> Result<Vec<bool>> {
        let store = self.store();
        let _session = store.write_session();
        let have = lookup(store)?;
        self.pins.with(|p| ids.iter().zip(&have).filter(|x| *x.1).for_each(|x| pin(p, x.0)));
        Ok(have)
    }

    /// Verifies and stores chunk records: every one is verified before any
    /// is stored, so a bad chunk stores nothing; a chunk already stored is
    /// not written again.
    pub fn put_chunks(&self, repo: &str, chunks: Vec<(Id, Vec<u8>)>) -> Result<()> {
        self.check_write(repo)?;
        let store = self.store();
        // Held from verifying on: a delta's base must stay until it is stored.
        let session = store.write_session();
        // A record that fails to decode or verify is the sender's fault,
        // answered as the wire says (Corrupt for a hash mismatch).
        let mut verified = store.verify_records(chunks).map_err(|e| match e {
            ferry_store::StoreError::Format(f) => ServiceError::from(f),
            e => e.into(),
        })?;
        // Another caller may have sent the same chunks meanwhile.
        let ids: Vec<Id> = verified.iter().map(|r| r.id()).collect();
        let mut present = store.has_chunks(&ids)?.into_iter();
        verified.retain(|_| !present.next().unwrap_or(false));
        session.put_records(&verified)?;
        self.service.counters.chunks_received(verified.len() as u64, (ids.len() - verified.len()) as u64);
        self.pins.with(|p| ids.iter().for_each(|id| p.chunk(id)));
        Ok(())
    }

    /// Stores encoded tree nodes, each only if its children are stored.
    pub fn put_nodes(&self, repo: &str, nodes: &[Vec<u8>]) -> Result<()> {
        self.check_write(repo)?;
        let session = self.store().write_session();
        let ids = session.put_nodes_checked(nodes)?;
        self.pins.with(|p| ids.into_iter().for_each(|id| p.node(id)));
        Ok(())
    }

    /// Stores encoded revisions (parents first) without moving a branch.
    pub fn put_revisions(&self, repo: &str, revisions: &[Vec<u8>]) -> Result<()> {
        self.check_write(repo)?;
        let revs = decode_revisions(revisions)?;
        self.store().write_session().put_revisions(repo, &revs)?;
        // Nothing reaches them until the branch moves: keep them till then.
        self.pins.with(|p| revisions.iter().for_each(|b| p.revision(revision_id(b))));
        Ok(())
    }

    /// Stores `revisions` and moves `branch` from `expected` to `new` by
    /// compare-and-swap.
    pub fn update_branch(&self, repo: &str, branch: &str, expected: Option<Id>, new: Id, revisions: &[Vec<u8>]) -> Result<()> {
        if ferry_store::is_tag(branch) && expected.is_some() {
            self.check_admin(repo, "moving a tag")?;
        } else {
            self.check_write(repo)?;
        }
        let revs = decode_revisions(revisions)?;
        self.store().write_session().publish(repo, branch, expected, new, &revs)?;
        self.service.queue_backfill(&new);
        self.audit("move", repo, &[(branch, expected, Some(new))])
    }

    /// Encoded revisions breadth-first from `from`, stopping at `until`,
    /// at most `max`, handed to `emit` a batch at a time. Ids in `from`
    /// that are not in the history of `repo` are skipped, as unknown ones.
    pub fn history(&self, repo: &str, from: &[Id], until: &[Id], max: usize, emit: &mut dyn FnMut(Vec<Vec<u8>>) -> Result<()>) -> Result<()> {
        self.check_read(repo)?;
        let mut reachable = Vec::with_capacity(from.len());
        for id in from {
            if self.admit_revision(repo, id)? {
                reachable.push(*id);
            }
        }
        let max = max.min(ferry_proto::message::MAX_REVISIONS);
        let mut out = Batcher::default();
        self.store().walk_history(&reachable, until, max, |id, rev| {
            self.admit(|a| a.revision(&id, rev));
            let bytes = rev.encode();
            let len = bytes.len();
            out.push(bytes, len).map_or(Ok(()), &mut *emit)
        })?;
        out.finish().map_or(Ok(()), emit)
    }

    /// Encoded tree nodes in the order asked, a batch at a time. A node
    /// the session was not shown the way to is "not on this hub".
    pub fn nodes(&self, repo: &str, ids: &[Id], emit: &mut dyn FnMut(Vec<Vec<u8>>) -> Result<()>) -> Result<()> {
        self.check_read(repo)?;
        let mut out = Batcher::default();
        for id in ids {
            let missing = || ServiceError::new(ErrorCode::NotFound, format!("tree node {id} is not on this hub"));
            if !self.is_admitted(|a| a.has_node(id)) {
                return Err(missing());
            }
            let bytes = self.store().node_bytes(id)?.ok_or_else(missing)?;
            if self.checks_reads() {
                let node = ferry_core::tree::Node::decode(&bytes)?;
                self.admit(|a| a.node(&node));
            }
            let len = bytes.len();
            if let Some(batch) = out.push(bytes, len) {
                emit(batch)?;
            }
        }
        out.finish().map_or(Ok(()), emit)
    }

    /// Chunk records as stored (the receiver verifies them), in the order
    /// asked, a batch at a time. Records are read in batched lookups. A
    /// chunk the session was not shown the way to is "not on this hub".
    pub fn chunks(&self, repo: &str, ids: &[Id], emit: &mut dyn FnMut(Vec<(Id, Vec<u8>)>) -> Result<()>) -> Result<()> {
        self.chunks_keeping(repo, ids, &HashSet::new(), emit)
    }

    /// For each chunk, the base its record here is a delta against (None:
    /// it decodes alone), so a sender can ask a receiver for the bases.
    pub fn chunk_bases(&self, repo: &str, ids: &[Id]) -> Result<Vec<Option<Id>>> {
        self.check_chunks_readable(repo, ids)?;
        Ok(self.store().chunk_bases(ids)?)
    }

    /// The caller may read `repo` and was shown the way to every chunk of
    /// `ids`; a chunk it was not is "not on this hub".
    fn check_chunks_readable(&self, repo: &str, ids: &[Id]) -> Result<()> {
        self.check_read(repo)?;
        match ids.iter().find(|id| !self.is_admitted(|a| a.has_chunk(id))) {
            Some(id) => Err(chunk_not_here(id)),
            None => Ok(()),
        }
    }

    /// [`Session::chunks`] for a reader that holds some chunks: a delta is
    /// sent as it is when its base is among `held` with a proof that
    /// matches the hub's copy (`codec::base_proof`), since the reader can
    /// then learn nothing from it it does not know. A wrong proof only
    /// means records that decode alone.
    pub fn chunks_against(&self, repo: &str, ids: &[Id], held: &[(Id, [u8; 32])], emit: &mut dyn FnMut(Vec<(Id, Vec<u8>)>) -> Result<()>) -> Result<()> {
        self.check_chunks_readable(repo, ids)?;
        // Only the bases of the chunks asked for are worth checking, a few
        // at a time: a reader naming thousands of big chunks costs the hub
        // one small batch of memory.
        let bases: HashSet<Id> = self.store().chunk_bases(ids)?.into_iter().flatten().collect();
        let wanted: Vec<&(Id, [u8; 32])> = held.iter().filter(|h| bases.contains(&h.0)).collect();
        let mut kept = HashSet::new();
        for batch in wanted.chunks(PROOF_BATCH) {
            let ids: Vec<Id> = batch.iter().map(|h| h.0).collect();
            for ((id, proof), raw) in batch.iter().map(|h| (h.0, h.1)).zip(self.store().chunks_verified(&ids)) {
                if raw.is_ok_and(|raw| ferry_core::codec::base_proof(&raw) == proof) {
                    kept.insert(id);
                }
            }
        }
        self.chunks_keeping(repo, ids, &kept, emit)
    }

    /// [`Session::chunks`], sending as they are the deltas whose base is in
    /// `kept` (the receiver holds it).
    pub fn chunks_keeping(&self, repo: &str, ids: &[Id], kept: &HashSet<Id>, emit: &mut dyn FnMut(Vec<(Id, Vec<u8>)>) -> Result<()>) -> Result<()> {
        self.check_chunks_readable(repo, ids)?;
        let mut out = Batcher::default();
        for group in ids.chunks(READ_BATCH) {
            for (id, rec) in group.iter().zip(self.store().chunk_records_keeping(group, kept)?) {
                let rec = rec.ok_or_else(|| chunk_not_here(id))?;
                let len = rec.len();
                if let Some(batch) = out.push((*id, rec), len) {
                    emit(batch)?;
                }
            }
        }
        out.finish().map_or(Ok(()), emit)
    }

    /// Whether reads by id are checked against what the session was
    /// shown (every caller but this process's own writers).
    fn checks_reads(&self) -> bool {
        !matches!(self.grant, Grant::Trusted)
    }

    /// Records what the session was just shown (nothing to record for a
    /// trusted session, which may read everything).
    pub(crate) fn admit(&self, f: impl FnOnce(&mut Admitted)) {
        if self.checks_reads() {
            f(&mut self.admitted.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }

    /// Asks whether the session was shown the way to something (always
    /// yes for a trusted session).
    fn is_admitted(&self, f: impl FnOnce(&Admitted) -> bool) -> bool {
        !self.checks_reads() || f(&self.admitted.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether revision `id` is in the history of `repo` (admitting it if
    /// so). The first question about a revision not yet shown walks the
    /// history of the branches not walked before, admitting all of it.
    pub(crate) fn admit_revision(&self, repo: &str, id: &Id) -> Result<bool> {
        if self.is_admitted(|a| a.has_revision(id)) {
            return Ok(self.store().has_revision(id)?);
        }
        let heads: Vec<Id> = self.store().branches(repo)?.into_iter().map(|b| b.1).collect();
        if heads.contains(id) {
            self.admit(|a| a.head(id));
            return Ok(self.store().has_revision(id)?);
        }
        let unwalked = self.admitted.lock().unwrap_or_else(|p| p.into_inner()).unwalked(repo, &heads);
        if unwalked.is_empty() {
            return Ok(false);
        }
        self.store().walk_history(&unwalked, &[], usize::MAX, |rid, rev| {
            self.admit(|a| a.revision(&rid, rev));
            Ok::<_, ServiceError>(())
        })?;
        let mut a = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
        a.walked(repo, &unwalked);
        Ok(a.has_revision(id) && self.store().has_revision(id)?)
    }

    /// A revision of `repo` named by a branch, a full revision id or a
    /// unique prefix of one (at least 8 hex digits), if it is in the
    /// repository's history: what an HTTP door's `resolve/{rev}/` names.
    /// The revision's files may be read next with [`Session::read_file`].
    pub fn resolve(&self, repo: &str, rev: &str) -> Result<(Id, Revision)> {
        self.check_read(repo)?;
        let not_found = || ServiceError::new(ErrorCode::NotFound, format!("{repo} has no branch or revision {rev:?}"));
        let spec = ferry_store::RevisionSpec { repo: repo.to_owned(), rev: rev.to_owned() };
        let (id, revision) = match self.store().resolve(&spec) {
            Ok(found) => found,
            Err(ferry_store::StoreError::UnknownRevision(_)) => return Err(not_found()),
            Err(e) => return Err(e.into()),
        };
        if !self.admit_revision(repo, &id)? {
            return Err(not_found());
        }
        self.admit(|a| a.revision(&id, &revision));
        Ok((id, revision))
    }

    /// Writes bytes `start..end` of a file of a revision this session
    /// resolved, every chunk verified.
    pub fn read_file(&self, entry: &ferry_core::revision::Entry, start: u64, end: u64, out: &mut dyn std::io::Write) -> Result<()> {
        if !self.is_admitted(|a| a.has_node(&entry.file_id)) {
            return Err(ServiceError::new(ErrorCode::NotFound, format!("no file {:?} in a revision you resolved", entry.path)));
        }
        if start > end || end > entry.size {
            return Err(ServiceError::new(ErrorCode::BadRequest, format!("bytes {start}..{end} are outside {:?} ({} bytes)", entry.path, entry.size)));
        }
        Ok(self.store().read_range(&entry.file_id, entry.size, start, end, out, &())?)
    }

    /// Lets go of everything this session pinned (a transfer that relied
    /// on it is over).
    pub fn release(&self) {
        self.pins.clear();
    }
}

/// Which repositories a session may read, asked once per name.
struct Readable<'a> {
    session: &'a Session,
    known: HashMap<String, bool>,
}

/// Change-feed entries a full listing looks back through for the newest
/// change the caller may see.
const NEWEST_LOOKBACK: usize = 65_536;

impl<'a> Readable<'a> {
    fn new(session: &'a Session) -> Self {
        Readable { session, known: HashMap::new() }
    }

    fn check(&mut self, repo: &str) -> Result<bool> {
        if let Some(&r) = self.known.get(repo) {
            return Ok(r);
        }
        let r = self.session.can_read(repo)?;
        self.known.insert(repo.to_owned(), r);
        Ok(r)
    }

    /// The readable repositories changed after `since`, the newest such
    /// change, and whether the feed still reaches back to `since`.
    fn changes_after(&mut self, since: u64) -> Result<(std::collections::BTreeSet<String>, Option<u64>, bool)> {
        let (mut repos, mut newest, mut failed) = (std::collections::BTreeSet::new(), None, None);
        let complete = self.session.store().visit_ref_log(since, false, |seq, repo| match self.check(repo) {
            Ok(true) => {
                repos.insert(repo.to_owned());
                newest = Some(seq);
                true
            }
            Ok(false) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        })?;
        match failed {
            Some(e) => Err(e),
            None => Ok((repos, newest, complete)),
        }
    }

    /// The newest change the caller may see among the latest entries.
    fn newest_change(&mut self) -> Result<Option<u64>> {
        let (mut newest, mut failed, mut looked) = (None, None, 0);
        self.session.store().visit_ref_log(0, true, |seq, repo| {
            looked += 1;
            match self.check(repo) {
                Ok(true) => {
                    newest = Some(seq);
                    false
                }
                Ok(false) => looked < NEWEST_LOOKBACK,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        })?;
        match failed {
            Some(e) => Err(e),
            None => Ok(newest),
        }
    }
}

/// Hashing a file of terabytes takes minutes: the backfill yields the
/// processor to requests being answered (nice 19 on Linux, where a
/// thread's priority is its own).
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority only reads its arguments; gettid cannot fail.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
    }
}

/// Reads a stored file whole (every chunk verified) and records its
/// SHA-256, unless it has one.
fn backfill_sha256(store: &Store, file: &Id, stop: &AtomicBool) -> Result<(), ferry_store::StoreError> {
    if store.sha256_of(file)?.is_some() {
        return Ok(());
    }
    struct Hashing<'a>(ring::digest::Context, &'a AtomicBool);
    impl std::io::Write for Hashing<'_> {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if self.1.load(Ordering::Relaxed) {
                return Err(std::io::Error::other("the hub is stopping"));
            }
            self.0.update(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let size = store.node(file)?.size();
    let mut h = Hashing(ring::digest::Context::new(&ring::digest::SHA256), stop);
    store.read_range(file, size, 0, size, &mut h, &())?;
    let sha: ferry_store::Sha256 = h.0.finish().as_ref().try_into().expect("SHA-256 is 32 bytes");
    store.record_sha256(file, &sha)
}

/// Chunk records read from the store in one batched lookup: enough to keep
/// the reads sequential, few enough that a batch is a few MiB.
const READ_BATCH: usize = 32;

fn decode_revisions(revisions: &[Vec<u8>]) -> Result<Vec<Revision>> {
    Ok(revisions.iter().map(|b| Revision::decode(b)).collect::<Result<Vec<_>, _>>()?)
}

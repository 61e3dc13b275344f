//! Mirroring: every branch of every repository the source lets us read
//! (matching the patterns) is moved to the sink, as a push would, keeping
//! revision ids. Each branch moves by compare-and-swap; a branch whose
//! histories diverged is reported and left alone, never overwritten.
//!
//! Cost grows with the difference, not with either hub. A first pass lists
//! the branch heads of both sides; later passes (`--watch`, a following
//! hub) ask the source's change feed for the repositories changed since the
//! last pass (a long poll: the answer comes when something changes) and
//! look up only those on the sink. For each branch whose heads differ, the
//! transfer engine walks history only back to the sink's head and compares
//! trees top-down.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferry_core::Id;
use ferry_proto::transfer::{Limits, Report};
use ferry_proto::{ErrorCode, RepoRefs};
use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::driver::{run, BranchPlan, Direction, TransferProgress};
use crate::ends::{Listing, RepoListing, Sink, Source};
use crate::{Error, Result};

/// Branches moved at once: enough to hide round trips on a long link when
/// many small repositories changed; each still pipelines its own requests.
const PARALLEL_BRANCHES: usize = 4;

/// What to mirror.
pub struct MirrorOptions {
    /// Repository globs (`*` does not cross `/`); `*/*` is every repository.
    pub patterns: Vec<String>,
    /// How much each branch's transfer asks and moves at once.
    pub limits: Limits,
}

/// What happened to one branch.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BranchOutcome {
    /// The repository.
    pub repo: String,
    /// The branch.
    pub branch: String,
    /// `updated`, `up to date`, `conflict` or `refused`.
    pub status: &'static str,
    /// The sink's head afterwards.
    pub head: Option<String>,
    /// Revisions moved.
    pub revisions: u64,
    /// Chunks moved.
    pub chunks_moved: u64,
    /// Their encoded bytes.
    pub chunk_bytes_moved: u64,
    /// Their raw bytes.
    pub raw_bytes_moved: u64,
    /// Ids sent in negotiation questions.
    pub ids_asked: u64,
    /// Why a branch was not updated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What one mirror pass did, summed over its branches.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MirrorReport {
    /// Repositories listed on the source.
    pub repositories: u64,
    /// Branches looked at.
    pub branches_seen: u64,
    /// Branches moved on the sink.
    pub branches_updated: u64,
    /// Branches already where the source has them.
    pub branches_up_to_date: u64,
    /// Branches left alone because the histories diverged or moved meanwhile.
    pub conflicts: u64,
    /// Branches the sink refused (no access).
    pub refused: u64,
    /// Revisions moved.
    pub revisions: u64,
    /// Chunks moved.
    pub chunks_moved: u64,
    /// Their encoded bytes.
    pub chunk_bytes_moved: u64,
    /// Their raw bytes.
    pub raw_bytes_moved: u64,
    /// Ids sent in negotiation questions.
    pub ids_asked: u64,
    /// Branches that were not up to date, and why (updated ones too).
    pub changed: Vec<BranchOutcome>,
}

impl MirrorReport {
    /// Whether every branch now matches the source.
    pub fn complete(&self) -> bool {
        self.conflicts == 0 && self.refused == 0
    }
}

/// Sums the progress of the branches moving at once.
struct Combined<'a> {
    outer: &'a dyn TransferProgress,
    done: Mutex<Report>,
    running: Mutex<HashMap<usize, Report>>,
}

impl Combined<'_> {
    fn publish(&self) {
        let done = self.done.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mut sum = done;
        for r in running.values() {
            add(&mut sum, r);
        }
        self.outer.update(&sum);
    }
    fn finish(&self, slot: usize) {
        if let Some(r) = self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&slot) {
            add(&mut self.done.lock().unwrap_or_else(|p| p.into_inner()), &r);
        }
    }
}

fn add(sum: &mut Report, r: &Report) {
    sum.revisions += r.revisions;
    sum.chunks_moved += r.chunks_moved;
    sum.chunk_bytes_moved += r.chunk_bytes_moved;
    sum.raw_bytes_moved += r.raw_bytes_moved;
    sum.raw_bytes_to_move += r.raw_bytes_to_move;
    sum.chunks_already_there += r.chunks_already_there;
    sum.nodes_moved += r.nodes_moved;
    sum.ids_asked += r.ids_asked;
}

struct Slot<'a> {
    combined: &'a Combined<'a>,
    slot: usize,
}

impl TransferProgress for Slot<'_> {
    fn update(&self, r: &Report) {
        self.combined.running.lock().unwrap_or_else(|p| p.into_inner()).insert(self.slot, r.clone());
        self.combined.publish();
    }
}

/// A branch the sink does not have at the source's head.
struct Behind {
    repo: String,
    branch: String,
    head: Id,
    sink_head: Option<Id>,
    /// The sink's heads in the repository.
    hints: Vec<Id>,
}

/// How often a watching mirror lists everything again, to revisit
/// branches it left alone (conflicts) whose repositories did not change.
const FULL_PASS_EVERY: Duration = Duration::from_secs(600);

/// What a mirror remembers between passes.
#[derive(Debug, Clone, Default)]
pub struct MirrorState {
    /// The source's change-feed position after the last complete pass.
    source_position: Option<([u8; 16], u64)>,
    last_full_pass: Option<Instant>,
}

/// The source's repositories matching the patterns: every one, or (with a
/// position) those changed since it. The first pattern's request waits up
/// to `wait` for a change; the listing is complete up to the lowest
/// position any answer gave.
async fn source_listing(end: &impl Listing, patterns: &[String], since: Option<([u8; 16], u64)>, wait: Duration) -> Result<RepoListing> {
    let mut all: Option<RepoListing> = None;
    let mut repos = BTreeMap::new();
    for (i, p) in patterns.iter().enumerate() {
        let l = end.list_repos(p, since, if i == 0 { wait } else { Duration::ZERO }).await?;
        for r in &l.repos {
            repos.insert(r.name.clone(), r.clone());
        }
        let a = all.get_or_insert(RepoListing { repos: vec![], ..l.clone() });
        a.seq = a.seq.min(l.seq);
        a.changes_only &= l.changes_only;
        if a.hub != l.hub {
            return Err(Error::Protocol("the source changed identity during a listing".into()));
        }
    }
    let mut all = all.unwrap_or_default();
    all.repos = repos.into_values().collect();
    Ok(all)
}

/// The sink's branches of the given repositories (all matching ones for a
/// full pass, only the named ones for a pass over changes).
async fn sink_listing(end: &impl Listing, patterns: &[String], only: Option<Vec<String>>) -> Result<BTreeMap<String, RepoRefs>> {
    let mut out = BTreeMap::new();
    match only {
        None => {
            for p in patterns {
                for r in end.list_repos(p, None, Duration::ZERO).await?.repos {
                    out.insert(r.name.clone(), r);
                }
            }
        }
        Some(names) => {
            let mut lookups = FuturesUnordered::new();
            let mut names = names.into_iter();
            loop {
                while lookups.len() < 8 {
                    let Some(name) = names.next() else { break };
                    lookups.push(async move { (end.repo_refs(&name).await, name) });
                }
                let Some((branches, name)) = lookups.next().await else { break };
                out.insert(name.clone(), RepoRefs { name, public: false, branches: branches? });
            }
        }
    }
    Ok(out)
}

/// One pass: brings every matching branch of the sink up to the source
/// (with `state` from an earlier pass: every branch changed since, waiting
/// up to `wait` for a change). Branch-level refusals (diverged histories, a
/// branch moved meanwhile, a repository the sink's token may not write) are
/// reported in the result; anything else (a lost connection, a protocol
/// error) ends the pass, and a re-run resumes where it stopped.
pub async fn mirror_once<S, K>(
    source: &S,
    sink: &K,
    opts: &MirrorOptions,
    state: &mut MirrorState,
    wait: Duration,
    progress: &dyn TransferProgress,
) -> Result<MirrorReport>
where
    S: Source + Listing,
    K: Sink + Listing,
{
    let full_due = state.last_full_pass.is_none_or(|t| t.elapsed() >= FULL_PASS_EVERY);
    let since = if full_due { None } else { state.source_position };
    let listing = source_listing(source, &opts.patterns, since, if since.is_some() { wait } else { Duration::ZERO }).await?;
    let only = listing.changes_only.then(|| listing.repos.iter().map(|r| r.name.clone()).collect());
    let to = sink_listing(sink, &opts.patterns, only).await?;
    let from: BTreeMap<String, RepoRefs> = listing.repos.iter().map(|r| (r.name.clone(), r.clone())).collect();
    let mut report = MirrorReport { repositories: from.len() as u64, ..Default::default() };
    let mut todo: Vec<Behind> = Vec::new();
    for (name, repo) in &from {
        let sink_branches: HashMap<&str, Id> = to.get(name).map(|r| r.branches.iter().map(|(b, id)| (b.as_str(), *id)).collect()).unwrap_or_default();
        let hints: Vec<Id> = sink_branches.values().copied().collect();
        for (branch, head) in &repo.branches {
            report.branches_seen += 1;
            let sink_head = sink_branches.get(branch.as_str()).copied();
            if sink_head == Some(*head) {
                report.branches_up_to_date += 1;
            } else {
                todo.push(Behind { repo: name.clone(), branch: branch.clone(), head: *head, sink_head, hints: hints.clone() });
            }
        }
    }
    let combined = Combined { outer: progress, done: Mutex::new(Report::default()), running: Mutex::new(HashMap::new()) };
    let mut in_flight = FuturesUnordered::new();
    let mut queue = todo.into_iter().enumerate();
    let mut first_error = None;
    loop {
        while in_flight.len() < PARALLEL_BRANCHES && first_error.is_none() {
            let Some((slot, Behind { repo, branch, head, sink_head, hints })) = queue.next() else { break };
            let combined = &combined;
            let limits = opts.limits.clone();
            in_flight.push(async move {
                let plan = BranchPlan { repo: &repo, branch: &branch, source_head: head, sink_head, sink_hints: hints, partial: None, limits };
                let res = run(source, sink, plan, Direction::Mirror, &Slot { combined, slot }).await;
                combined.finish(slot);
                (repo, branch, res)
            });
        }
        let Some((repo, branch, res)) = in_flight.next().await else { break };
        match res {
            Ok(r) => {
                report.branches_updated += u64::from(!r.up_to_date);
                report.branches_up_to_date += u64::from(r.up_to_date);
                report.revisions += r.revisions;
                report.chunks_moved += r.chunks_moved;
                report.chunk_bytes_moved += r.chunk_bytes_moved;
                report.raw_bytes_moved += r.raw_bytes_moved;
                report.ids_asked += r.ids_asked;
                report.changed.push(outcome(repo, branch, if r.up_to_date { "up to date" } else { "updated" }, Some(r.head), &r, None));
            }
            Err(e) if matches!(e.code(), Some(ErrorCode::Conflict | ErrorCode::Forbidden | ErrorCode::NotFound)) => {
                let (code, message) = (e.code().unwrap_or(ErrorCode::Conflict), e.refusal_message());
                let status = if code == ErrorCode::Conflict { "conflict" } else { "refused" };
                report.conflicts += u64::from(code == ErrorCode::Conflict);
                report.refused += u64::from(code != ErrorCode::Conflict);
                report.changed.push(outcome(repo, branch, status, None, &Report::default(), Some(message)));
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    // Every transfer of this pass is over: what the sink kept for them may go.
    sink.release();
    match first_error {
        Some(e) => Err(e),
        None => {
            state.source_position = Some((listing.hub, listing.seq));
            if !listing.changes_only {
                state.last_full_pass = Some(Instant::now());
            }
            Ok(report)
        }
    }
}

fn outcome(repo: String, branch: String, status: &'static str, head: Option<Id>, r: &Report, detail: Option<String>) -> BranchOutcome {
    BranchOutcome {
        repo,
        branch,
        status,
        head: head.map(|h| h.to_hex()),
        revisions: r.revisions,
        chunks_moved: r.chunks_moved,
        chunk_bytes_moved: r.chunk_bytes_moved,
        raw_bytes_moved: r.raw_bytes_moved,
        ids_asked: r.ids_asked,
        detail,
    }
}

/// Mirrors again and again until the task is dropped: what `ferry mirror
/// --watch` and a hub following another run. Each pass after the first
/// waits (up to `interval`) for the source's change feed to move, so a new
/// revision is followed within a round trip. A failed pass is reported,
/// and the next one, `interval` later, reconnects (`connect` makes the
/// ends afresh) and resumes from the last complete pass; `on_pass` sees
/// every pass's outcome with the ends it ran on, and every failure to
/// connect (with no ends).
pub async fn watch<S, K>(
    mut connect: impl AsyncFnMut() -> Result<(S, K)>,
    opts: &MirrorOptions,
    interval: std::time::Duration,
    progress: &dyn TransferProgress,
    mut on_pass: impl FnMut(Result<&MirrorReport, &Error>, Option<(&S, &K)>),
) where
    S: Source + Listing,
    K: Sink + Listing,
{
    let mut ends: Option<(S, K)> = None;
    let mut state = MirrorState::default();
    loop {
        if ends.is_none() {
            match connect().await {
                Ok(e) => ends = Some(e),
                Err(e) => {
                    tracing::warn!("mirror: {e}");
                    on_pass(Err(&e), None);
                }
            }
        }
        if let Some((source, sink)) = &ends {
            let res = mirror_once(source, sink, opts, &mut state, interval, progress).await;
            on_pass(res.as_ref(), Some((source, sink)));
            match res {
                // The next pass waits on the source's feed itself. A hub
                // sink keeps what a connection relied on until it closes:
                // after a pass that moved anything, start afresh.
                Ok(r) if r.branches_updated == 0 => continue,
                Ok(_) => {
                    ends = None;
                    continue;
                }
                Err(_) => ends = None,
            }
        }
        tokio::time::sleep(interval).await;
    }
}

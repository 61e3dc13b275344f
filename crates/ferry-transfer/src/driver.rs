//! Drives `ferry_proto::transfer` against real ends: push, pull and mirror
//! are all [`run`] with a different source and sink.

use std::future::Future;
use std::pin::Pin;

use ferry_core::Id;
pub use ferry_proto::transfer::Report;
use ferry_proto::transfer::{Config, Limits, Partial, Poll, Request, Response, TransferError};
use ferry_proto::ErrorCode;
use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::ends::{Sink, Source};
use crate::{Error, Result};

/// Told how a transfer is going (after every answer).
pub trait TransferProgress: Send + Sync {
    /// The transfer's figures so far.
    fn update(&self, _report: &Report) {}
}
impl TransferProgress for () {}

/// One branch to move.
pub struct BranchPlan<'a> {
    /// The repository.
    pub repo: &'a str,
    /// The branch, the same name on both ends.
    pub branch: &'a str,
    /// Where the branch is on the source.
    pub source_head: Id,
    /// Where it is on the sink (None: a new branch there).
    pub sink_head: Option<Id>,
    /// Other revisions the sink has in this repository (where a walk of a
    /// new branch's history may stop).
    pub sink_hints: Vec<Id>,
    /// Move only some files, as a new revision of their own.
    pub partial: Option<Partial>,
    /// How much to ask and move at once.
    pub limits: Limits,
}

/// Which way the data goes, to word errors for the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// A local store to a hub.
    Push,
    /// A hub to a local store.
    Pull,
    /// A hub to another hub (or to this process's store, following a hub).
    Mirror,
}

/// Moves one branch from `source` to `sink`.
pub async fn run<S: Source, K: Sink>(source: &S, sink: &K, plan: BranchPlan<'_>, direction: Direction, progress: &dyn TransferProgress) -> Result<Report> {
    let (repo, branch) = (plan.repo, plan.branch);
    let mut machine = ferry_proto::transfer::Transfer::new(Config {
        source_head: plan.source_head,
        sink_head: plan.sink_head,
        sink_hints: plan.sink_hints,
        partial: plan.partial,
        limits: plan.limits,
    });
    type Answer = (u64, Result<Response>);
    let mut in_flight: FuturesUnordered<Pin<Box<dyn Future<Output = Answer> + Send + '_>>> = FuturesUnordered::new();
    let explain = |e: TransferError| diverged(e, repo, branch, direction);
    let result = loop {
        // Start everything the engine allows, then wait for one answer.
        match machine.poll().map_err(explain) {
            Err(e) => break Err(e),
            Ok(Poll::Request(tag, req)) => {
                in_flight.push(Box::pin(async move { (tag, execute(source, sink, repo, branch, req, direction).await) }));
                continue;
            }
            Ok(Poll::Done) => break Ok(machine.report().clone()),
            Ok(Poll::Wait) => {}
        }
        let Some((tag, answer)) = in_flight.next().await else {
            break Err(Error::Protocol("the transfer is waiting with nothing in flight".into()));
        };
        let answered = answer.and_then(|resp| machine.answer(tag, resp).map_err(explain));
        if let Err(e) = answered {
            break Err(e);
        }
        progress.update(machine.report());
    };
    // Let requests already sent finish (their data is kept), so that a
    // re-run finds it, rather than cutting them off mid-frame.
    while in_flight.next().await.is_some() {}
    result
}

async fn execute<S: Source, K: Sink>(source: &S, sink: &K, repo: &str, branch: &str, req: Request, direction: Direction) -> Result<Response> {
    Ok(match req {
        Request::SourceHistory { from, until, max } => Response::Revisions(source.history(repo, from, until, max).await?),
        Request::SourceHasRevisions(ids) => Response::Bitmap(source.has_revisions(repo, ids).await?),
        Request::SourceNodes(ids) => Response::Nodes(source.nodes(repo, ids).await?),
        Request::SinkHasRevisions(ids) => Response::Bitmap(sink.has_revisions(repo, ids).await?),
        Request::SinkHasNodes(ids) => Response::Bitmap(sink.has_nodes(repo, ids).await?),
        Request::SinkHasChunks(ids) => Response::Bitmap(sink.has_chunks(repo, ids).await?),
        Request::MoveChunks(ids) => {
            // Deltas travel as they are where the sink holds their base.
            let mut bases: Vec<Id> = source.delta_bases(repo, ids.clone()).await?.into_iter().flatten().collect();
            bases.sort_unstable();
            bases.dedup();
            let held = if bases.is_empty() {
                Vec::new()
            } else {
                let has = sink.has_chunks(repo, bases.clone()).await?;
                let kept: Vec<Id> = bases.into_iter().zip(has).filter(|b| b.1).map(|b| b.0).collect();
                let proofs = if kept.is_empty() { Vec::new() } else { sink.base_proofs(repo, kept.clone()).await? };
                kept.into_iter().zip(proofs).collect()
            };
            let records = source.records(repo, ids, held).await?;
            let stored_bytes = records.iter().map(|r| r.1.len() as u64).sum();
            sink.put_records(repo, records).await?;
            Response::Moved { stored_bytes }
        }
        Request::SinkPutNodes(nodes) => {
            sink.put_nodes(repo, nodes).await?;
            Response::Stored
        }
        Request::SinkPutRevisions(revisions) => {
            sink.put_revisions(repo, revisions).await?;
            Response::Stored
        }
        Request::SourceForgotten(ids) => Response::Bitmap(source.forgotten(repo, ids).await?),
        Request::SinkForget(ids) => {
            sink.forget(repo, ids).await?;
            Response::Stored
        }
        Request::SinkUpdateBranch { expected, new, revisions } => {
            match sink.update_branch(repo, branch, expected, new, revisions).await {
                // Someone moved the branch meanwhile: if to where we were
                // taking it, the work is done.
                Err(e) if e.code() == Some(ErrorCode::Conflict) && sink.branch_head(repo, branch).await? == Some(new) => {}
                Err(e) if e.code() == Some(ErrorCode::Conflict) && direction == Direction::Mirror => {
                    return Err(Error::refused(
                        ErrorCode::Conflict,
                        format!("{repo}@{branch} moved on the destination while mirroring ({}); left as it is", e.refusal_message()),
                    ));
                }
                res => res?,
            }
            Response::Stored
        }
    })
}

/// Words a divergence for the direction of travel; other engine errors are
/// protocol errors of the source.
fn diverged(e: TransferError, repo: &str, branch: &str, direction: Direction) -> Error {
    let TransferError::Diverged { sink_head, sink_has_source_head } = e else {
        return Error::Protocol(e.to_string());
    };
    let message = match (direction, sink_has_source_head) {
        (Direction::Push, _) => {
            format!("{repo}@{branch} on the hub is at {}, which your local branch does not contain: pull first", sink_head.short())
        }
        (Direction::Pull, true) => format!("your local {repo}@{branch} is ahead of the hub's: push it instead"),
        (Direction::Pull, false) => {
            format!("your local {repo}@{branch} has revisions the hub lacks: push them first, or pull into another branch")
        }
        (Direction::Mirror, true) => format!("{repo}@{branch} on the destination is ahead of the source (at {})", sink_head.short()),
        (Direction::Mirror, false) => {
            format!("{repo}@{branch} on the destination is at {}, which the source does not contain: the histories diverged", sink_head.short())
        }
    };
    Error::refused(ErrorCode::Conflict, message)
}

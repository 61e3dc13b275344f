//! `ferry push` and `ferry pull`: one branch between the local store and a hub.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use serde::Serialize;

use crate::net::{runtime, NetArgs};
use crate::output::Report;
use crate::progress;

#[derive(clap::Args)]
pub struct PushArgs {
    /// The hub (host:port).
    hub: String,
    /// Repository, as owner/name.
    repo: String,
    /// Branch to send.
    #[arg(long, default_value = "main")]
    branch: String,
    #[command(flatten)]
    net: NetArgs,
}

#[derive(clap::Args)]
pub struct PullArgs {
    /// The hub (host:port).
    hub: String,
    /// Repository, as owner/name.
    repo: String,
    /// Branch to fetch.
    #[arg(long, default_value = "main")]
    branch: String,
    /// Only files matching this glob (repeatable); records a partial local revision.
    #[arg(long)]
    include: Vec<String>,
    #[command(flatten)]
    net: NetArgs,
}

/// What a push or pull moved, and how long it took.
#[derive(Serialize)]
pub struct Transferred {
    #[serde(skip)]
    verb: &'static str,
    #[serde(flatten)]
    pub transfer: ferry_transfer::Transfer,
    pub seconds: f64,
}

impl Report for Transferred {
    fn text(&self) -> Vec<String> {
        let t = &self.transfer;
        let head = t.head.get(..12).unwrap_or(&t.head);
        if t.up_to_date {
            return vec![format!("already up to date at {head}")];
        }
        vec![format!(
            "{} {} revisions over {}: {} chunks ({} raw, {} on the wire), {} chunks already there; {} sent, {} received in {:.1}s; head {head}",
            self.verb,
            t.revisions,
            t.transport,
            t.chunks_moved,
            progress::bytes(t.raw_bytes_moved),
            progress::bytes(t.chunk_bytes_moved),
            t.chunks_already_there,
            progress::bytes(t.wire_bytes_sent),
            progress::bytes(t.wire_bytes_received),
            self.seconds
        )]
    }
}

pub fn push(store: &Path, args: PushArgs, json: bool) -> Result<Transferred> {
    let store = Arc::new(super::init::open(store)?);
    let PushArgs { hub, repo, branch, net } = args;
    let opts = ferry_transfer::PushOptions { repo, branch };
    transfer(json, "pushed", &hub, &net, async |client, bar| ferry_transfer::push(client, &store, &opts, bar).await)
}

pub fn pull(store: &Path, args: PullArgs, json: bool) -> Result<Transferred> {
    let store = Arc::new(super::init::open(store)?);
    let PullArgs { hub, repo, branch, include, net } = args;
    let opts = ferry_transfer::PullOptions { repo, branch, include };
    transfer(json, "pulled", &hub, &net, async |client, bar| ferry_transfer::pull(client, &store, &opts, bar).await)
}

/// Attempts at a push or pull that fails for a reason that may pass (the
/// hub unreachable or busy, the connection lost); each resumes where the
/// last stopped.
const ATTEMPTS: u32 = 3;

fn transfer(
    json: bool,
    verb: &'static str,
    hub: &str,
    net: &NetArgs,
    op: impl AsyncFn(&ferry_net::Client, &progress::Transfer) -> Result<ferry_transfer::Transfer, ferry_transfer::Error>,
) -> Result<Transferred> {
    let started = std::time::Instant::now();
    let transfer = runtime()?.block_on(async {
        let mut attempt = 1;
        loop {
            let res = async {
                let client = crate::net::connect(&net.options(hub)).await?;
                let bar = progress::Transfer::new(json);
                let t = op(&client, &bar).await;
                client.close().await;
                bar.finish();
                t
            }
            .await;
            match res {
                Err(e) if attempt < ATTEMPTS && crate::exit::is_transient(&e) => {
                    let wait = std::time::Duration::from_secs(1 << attempt);
                    crate::output::stderr_line(&format!("ferry: {e}; retrying in {}s (attempt {} of {ATTEMPTS})", wait.as_secs(), attempt + 1));
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                res => break res,
            }
        }
    })?;
    Ok(Transferred { verb, transfer, seconds: started.elapsed().as_secs_f64() })
}

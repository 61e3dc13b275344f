//! `ferry push` and `ferry pull`: one branch between the local store and a
//! hub; `ferry upload`: a directory to a hub's branch with no local store.

use std::path::{Path, PathBuf};
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

#[derive(clap::Args)]
pub struct UploadArgs {
    /// The hub (host:port).
    hub: String,
    /// Repository, as owner/name.
    repo: String,
    /// Directory whose regular files become the new revision.
    dir: PathBuf,
    /// Message recorded in the revision (default: "upload of DIR").
    #[arg(short, long)]
    message: Option<String>,
    /// Branch to move to the new revision (created if the hub has none).
    #[arg(long, default_value = "main")]
    branch: String,
    #[command(flatten)]
    source: super::commit::SourceArgs,
    #[command(flatten)]
    net: NetArgs,
}

#[derive(clap::Args)]
pub struct DownloadArgs {
    /// The hub (host:port).
    hub: String,
    /// Repository and revision: owner/name (the main branch), owner/name@BRANCH or owner/name@REVISION (full id).
    repo: String,
    /// Directory to write the files into (created if missing); chunks its files already hold are not fetched.
    dir: PathBuf,
    /// Another directory whose files of the same paths may hold chunks to reuse (repeatable).
    #[arg(long)]
    seed: Vec<PathBuf>,
    /// Only files matching this glob (repeatable).
    #[arg(long)]
    include: Vec<String>,
    /// Not files matching this glob (repeatable).
    #[arg(long)]
    exclude: Vec<String>,
    #[command(flatten)]
    net: NetArgs,
}

/// What a download wrote and fetched.
#[derive(Serialize)]
pub struct Downloaded {
    #[serde(flatten)]
    pub download: ferry_transfer::Downloaded,
    pub seconds: f64,
}

impl Report for Downloaded {
    fn text(&self) -> Vec<String> {
        let d = &self.download;
        vec![format!(
            "downloaded {} files ({}) of revision {}: fetched {} chunks ({} raw, {} as sent, {} as deltas), reused {} chunks ({}) from disk, {} files already whole; in {:.1}s",
            d.files,
            progress::bytes(d.bytes),
            d.revision.get(..12).unwrap_or(&d.revision),
            d.chunks_fetched,
            progress::bytes(d.raw_bytes_fetched),
            progress::bytes(d.record_bytes_fetched),
            d.deltas,
            d.chunks_reused,
            progress::bytes(d.bytes_reused),
            d.files_unchanged,
            self.seconds
        )]
    }
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

pub fn upload(args: UploadArgs, json: bool) -> Result<Transferred> {
    let UploadArgs { hub, repo, dir, message, branch, source, net } = args;
    let opts = ferry_transfer::UploadOptions {
        repo,
        branch,
        message: message.unwrap_or_else(|| format!("upload of {}", dir.display())),
        author: source.author()?,
        time: super::unix_now(),
    };
    // Scanned once, on the first connection (sending as it cuts); a retry
    // sends from the scan.
    let scanned = tokio::sync::OnceCell::new();
    let started = std::time::Instant::now();
    let transfer = with_retries(&hub, &net, async |client| {
        let scanned = scanned
            .get_or_try_init(async || {
                let scanning = progress::Ingest::new(json);
                let d = ferry_transfer::Directory::scan_sending(client, &opts.repo, &dir, source.follow_symlinks, &scanning).await;
                scanning.finish();
                d
            })
            .await?;
        let bar = progress::Transfer::new(json);
        let t = ferry_transfer::upload(client, scanned, &opts, &bar).await;
        bar.finish();
        t
    })?;
    Ok(Transferred { verb: "uploaded", transfer, seconds: started.elapsed().as_secs_f64() })
}

pub fn download(args: DownloadArgs, json: bool) -> Result<Downloaded> {
    let DownloadArgs { hub, repo, dir, seed, include, exclude, net } = args;
    let ferry_store::RevisionSpec { repo, rev } = ferry_store::RevisionSpec::parse(&repo)?;
    let opts = ferry_transfer::DownloadOptions { repo, rev, dest: dir, seeds: seed, include, exclude };
    let started = std::time::Instant::now();
    let download = with_retries(&hub, &net, async |client| {
        let bar = progress::Ingest::new(json);
        let d = ferry_transfer::download(client, &opts, &bar).await;
        bar.finish();
        d
    })?;
    Ok(Downloaded { download, seconds: started.elapsed().as_secs_f64() })
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
    let transfer = with_retries(hub, net, async |client| {
        let bar = progress::Transfer::new(json);
        let t = op(client, &bar).await;
        bar.finish();
        t
    })?;
    Ok(Transferred { verb, transfer, seconds: started.elapsed().as_secs_f64() })
}

/// Runs `op` on a connection to `hub`, again on a new connection after a
/// failure that may pass (up to [`ATTEMPTS`] in all, waiting 2 s, then 4 s).
fn with_retries<T>(hub: &str, net: &NetArgs, op: impl AsyncFn(&ferry_net::Client) -> Result<T, ferry_transfer::Error>) -> Result<T> {
    let options = net.options(hub)?;
    Ok(runtime()?.block_on(async {
        let mut attempt = 1;
        loop {
            let res = async {
                let client = crate::net::connect(&options).await?;
                let t = op(&client).await;
                client.close().await;
                t
            }
            .await;
            match res {
                Err(e) if attempt < ATTEMPTS && crate::exit::is_transient(&e) => {
                    let wait = std::time::Duration::from_secs(1 << attempt);
                    crate::output::note(&format!("ferry: {e}; retrying in {}s (attempt {} of {ATTEMPTS})", wait.as_secs(), attempt + 1));
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                res => break res,
            }
        }
    })?)
}

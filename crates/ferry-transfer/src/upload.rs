//! Upload: a directory straight to a hub's branch, with no store on the
//! client. The files are scanned once (cut and hashed as a commit cuts
//! them, nothing written), the revision and its trees are held in memory,
//! and the transfer's source is the directory itself: the hub is asked
//! what it lacks exactly as in a push, and the chunks it lacks are read
//! back from the files, checked against their ids and encoded on the way
//! out. A re-run after an interruption scans again and sends only what
//! the hub still lacks.
//!
//! The scan and the sending overlap: while a file is being cut, the hub is
//! asked which of the chunks cut so far it lacks, and those are sent, so
//! that when the scan ends the transfer finds them there and only the
//! trees and the revision are left to send. Sending early is only a head
//! start: if it fails, the scan goes on and the transfer sends the rest.
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use ferry_core::revision::{Entry, Revision};
use ferry_core::Id;
use ferry_net::Client;
use ferry_proto::transfer::Limits;
use ferry_store::scan::{encode_chunk, scan_each, ScannedChunk};
use ferry_store::IngestProgress;
use rayon::prelude::*;

use crate::disk::{read_checked, OnDisk, Unreadable};
use crate::driver::{run, BranchPlan, Direction, TransferProgress};
use crate::ends::{Sink, Source};
use crate::ops::{revision, summary, Transfer};
use crate::{Error, Result};

/// Where to upload, and as which revision.
pub struct UploadOptions {
    /// The repository.
    pub repo: String,
    /// The branch to move (created if the hub has none).
    pub branch: String,
    /// The revision's message.
    pub message: String,
    /// Who made it.
    pub author: String,
    /// Unix seconds.
    pub time: i64,
}

/// A scanned directory: its files' entries, their trees, and where each
/// chunk's bytes are. Scanned once; each attempt at sending it makes the
/// revision afresh on the branch's head of the moment.
pub struct Directory {
    entries: Vec<Entry>,
    nodes: HashMap<Id, Vec<u8>>,
    on_disk: OnDisk,
    sent: Sent,
}

/// What was sent while the scan ran.
#[derive(Clone, Copy, Debug, Default)]
struct Sent {
    chunks: u64,
    raw_bytes: u64,
    encoded_bytes: u64,
    ids_asked: u64,
}

/// Chunks just cut from one file, to ask the hub about.
struct Cut {
    file: Arc<(PathBuf, File)>,
    chunks: Vec<ScannedChunk>,
}

/// Bytes of cut chunks asked about at once while scanning: sending starts
/// soon after the scan reaches new data, and the batches in flight keep
/// every core encoding. Each byte in flight costs about three of memory
/// (read back, encoded, framed): 4 x 4 MiB keeps an upload near 120 MiB
/// resident, where 4 x 16 MiB took 270 MiB and was no faster.
const CUT_BATCH_BYTES: u64 = 4 << 20;
/// Batches of cut chunks waiting or being sent; the scan waits beyond.
const CUTS_IN_FLIGHT: usize = 4;

/// A directory as the source of a transfer: one revision over it, on
/// top of the hub's head.
struct DirectorySource<'a> {
    dir: &'a Directory,
    revision: (Id, Vec<u8>),
    /// The revision's parent: its history, which the hub holds.
    parent: Option<Id>,
}

/// How a file looked before it was scanned, to notice it changing.
fn stamp(f: &File) -> std::io::Result<(u64, Option<std::time::SystemTime>)> {
    let m = f.metadata()?;
    Ok((m.len(), m.modified().ok()))
}

fn changed(path: &std::path::Path) -> Error {
    Error::Io(format!("{}: the file changed while it was being uploaded; nothing was published (run the upload again)", path.display()))
}

impl Directory {
    /// Cuts and hashes the regular files under `path` (refusing symlinks
    /// unless `follow_symlinks`), writing nothing.
    pub fn scan(path: &std::path::Path, follow_symlinks: bool, progress: &dyn IngestProgress) -> Result<Directory> {
        Self::scan_cutting(path, follow_symlinks, progress, &mut |_| {})
    }

    /// [`Directory::scan`], sending `hub` the chunks of `repo` it lacks as
    /// they are cut (see the module's notes). Needs a multi-threaded
    /// runtime: the scan runs on a thread of its own meanwhile.
    pub async fn scan_sending(hub: &Client, repo: &str, path: &std::path::Path, follow_symlinks: bool, progress: &dyn IngestProgress) -> Result<Directory> {
        ferry_core::names::check_repo_name(repo)?;
        tracing::debug!(path = %path.display(), "scanning and sending");
        let (tx, rx) = tokio::sync::mpsc::channel::<Cut>(CUTS_IN_FLIGHT);
        let runtime = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| {
            std::thread::scope(|s| {
                let scan = s.spawn(move || {
                    // A closed channel means sending stopped: scan on.
                    Self::scan_cutting(path, follow_symlinks, progress, &mut |cut| drop(tx.blocking_send(cut)))
                });
                let sent = runtime.block_on(send_cuts(hub, repo, rx));
                tracing::debug!(chunks = sent.chunks, raw_bytes = sent.raw_bytes, "sending while scanning done");
                let mut dir = scan.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
                dir.sent = sent;
                Ok(dir)
            })
        })
    }

    /// The scan, handing `cuts` each file's chunks a batch at a time as
    /// they are cut.
    fn scan_cutting(path: &std::path::Path, follow_symlinks: bool, progress: &dyn IngestProgress, cuts: &mut dyn FnMut(Cut)) -> Result<Directory> {
        let found = ferry_store::list_files(path, follow_symlinks)?;
        progress.start(found.iter().map(|f| f.size).sum());
        let mut dir = Directory { entries: Vec::with_capacity(found.len()), nodes: HashMap::new(), on_disk: OnDisk::default(), sent: Sent::default() };
        for f in found {
            let io = |e: std::io::Error| Error::Io(format!("{}: {e}", f.full.display()));
            let file = Arc::new((f.full.clone(), File::open(&f.full).map_err(io)?));
            let before = stamp(&file.1).map_err(io)?;
            let (mut batch, mut batch_bytes) = (Vec::new(), 0);
            let scanned = scan_each(&file.1, true, progress, &mut |c, _| {
                batch.push(*c);
                batch_bytes += c.len as u64;
                if batch_bytes >= CUT_BATCH_BYTES || batch.len() == ferry_proto::message::MAX_IDS {
                    cuts(Cut { file: file.clone(), chunks: std::mem::take(&mut batch) });
                    batch_bytes = 0;
                }
                Ok(())
            })
            .map_err(io)?;
            if !batch.is_empty() {
                cuts(Cut { file: file.clone(), chunks: batch });
            }
            if stamp(&file.1).map_err(io)? != before || scanned.size != before.0 {
                return Err(changed(&f.full));
            }
            tracing::info!(path = %f.rel, bytes = scanned.size, chunks = scanned.chunks.len(), "scanned");
            let file = Arc::try_unwrap(file).map_or_else(|shared| shared.1.try_clone().map_err(io), |(_, file)| Ok(file))?;
            dir.on_disk.add(f.full, file, &scanned.chunks);
            dir.nodes.extend(scanned.nodes);
            dir.entries.push(Entry { path: f.rel, file_id: scanned.file_id, size: scanned.size, executable: f.executable });
        }
        Ok(dir)
    }

    /// Files scanned.
    pub fn files(&self) -> usize {
        self.entries.len()
    }

    /// Their bytes.
    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    /// A chunk's bytes read back from its file, checked against its id.
    fn chunk(&self, id: &Id) -> Result<Vec<u8>> {
        match self.on_disk.read(id) {
            None => Err(Error::Protocol(format!("the hub asked for chunk {id}, which is not in the upload"))),
            Some(read) => read.map_err(unreadable),
        }
    }
}

/// Why a chunk could not be read back from its file, as an upload says it.
fn unreadable(u: Unreadable) -> Error {
    match u {
        Unreadable::Io(path, e) => Error::Io(format!("{}: {e}", path.display())),
        Unreadable::Changed(path) => changed(path),
    }
}

/// Asks the hub which cut chunks it lacks and sends those, read back
/// from their files and checked, a few batches at a time. Stops at the
/// first failure (the transfer after the scan sends what is left) and
/// returns what was sent.
async fn send_cuts(hub: &Client, repo: &str, mut cuts: tokio::sync::mpsc::Receiver<Cut>) -> Sent {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let mut sent = Sent::default();
    let mut asked: HashSet<Id> = HashSet::new();
    let mut in_flight = FuturesUnordered::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            cut = cuts.recv(), if open && in_flight.len() < CUTS_IN_FLIGHT => match cut {
                Some(mut cut) => {
                    // A chunk repeated in the file is asked about once.
                    cut.chunks.retain(|c| asked.insert(c.id));
                    if !cut.chunks.is_empty() {
                        in_flight.push(send_cut(hub, repo, cut));
                    }
                }
                None => open = false,
            },
            Some(done) = in_flight.next() => match done {
                Ok(s) => {
                    sent.chunks += s.chunks;
                    sent.raw_bytes += s.raw_bytes;
                    sent.encoded_bytes += s.encoded_bytes;
                    sent.ids_asked += s.ids_asked;
                }
                Err(e) => {
                    tracing::info!(error = %e, "sending while scanning stopped; the transfer sends the rest");
                    // Dropping the receiver lets the scan run on unhindered.
                    break;
                }
            },
        }
    }
    sent
}

/// One batch: the question, then the chunks the hub lacks.
async fn send_cut(hub: &Client, repo: &str, cut: Cut) -> Result<Sent> {
    let ids: Vec<Id> = cut.chunks.iter().map(|c| c.id).collect();
    let have = hub.has_chunks(repo, ids).await?;
    let missing: Vec<ScannedChunk> = cut.chunks.iter().zip(have).filter(|c| !c.1).map(|c| *c.0).collect();
    let mut sent = Sent { ids_asked: cut.chunks.len() as u64, ..Sent::default() };
    if missing.is_empty() {
        return Ok(sent);
    }
    let file = cut.file.clone();
    let records = tokio::task::spawn_blocking(move || {
        missing
            .par_iter()
            .map(|c| {
                let raw = read_checked(&file.0, &file.1, c.offset, c.len, &c.id).map_err(unreadable)?;
                Ok((c.id, encode_chunk(&raw, c.width), raw.len() as u64))
            })
            .collect::<Result<Vec<_>>>()
    })
    .await
    .map_err(|e| Error::Io(format!("encoding chunks: {e}")))??;
    sent.chunks = records.len() as u64;
    sent.raw_bytes = records.iter().map(|r| r.2).sum();
    sent.encoded_bytes = records.iter().map(|r| r.1.len() as u64).sum();
    hub.put_records(repo, records.into_iter().map(|r| (r.0, r.1)).collect()).await?;
    tracing::debug!(asked = sent.ids_asked, sent = sent.chunks, raw_bytes = sent.raw_bytes, "sent while scanning");
    Ok(sent)
}

impl Source for DirectorySource<'_> {
    async fn history(&self, _repo: &str, from: Vec<Id>, _until: Vec<Id>, _max: u32) -> Result<Vec<Vec<u8>>> {
        Ok(if from.contains(&self.revision.0) { vec![self.revision.1.clone()] } else { Vec::new() })
    }
    // The parent counts as held: the branch only moves forward from it.
    async fn has_revisions(&self, _repo: &str, ids: Vec<Id>) -> Result<Vec<bool>> {
        Ok(ids.iter().map(|id| *id == self.revision.0 || Some(*id) == self.parent).collect())
    }
    async fn nodes(&self, _repo: &str, ids: Vec<Id>) -> Result<Vec<Vec<u8>>> {
        ids.iter()
            .map(|id| self.dir.nodes.get(id).cloned().ok_or_else(|| Error::Protocol(format!("the hub asked for node {id}, which is not in the upload"))))
            .collect()
    }
    async fn records(&self, _repo: &str, ids: Vec<Id>, _held: Vec<(Id, [u8; 32])>) -> Result<Vec<(Id, Vec<u8>)>> {
        tokio::task::block_in_place(|| {
            ids.par_iter()
                .map(|id| {
                    let raw = self.dir.chunk(id)?;
                    Ok((*id, encode_chunk(&raw, self.dir.on_disk.width(id).expect("read above"))))
                })
                .collect()
        })
    }
}

/// Makes a scanned directory the new head of the hub's branch, sending
/// only the chunks and trees the hub lacks; the branch moves by
/// compare-and-swap from where it was when this began. Nothing is written
/// on the client.
pub async fn upload(hub: &Client, dir: &Directory, opts: &UploadOptions, progress: &dyn TransferProgress) -> Result<Transfer> {
    let (repo, branch) = (opts.repo.as_str(), opts.branch.as_str());
    ferry_core::names::check_repo_name(repo)?;
    ferry_core::names::check_branch_name(branch)?;
    let refs = hub.refs_if_any(repo).await?;
    let head = refs.iter().find(|b| b.0 == branch).map(|b| b.1);
    if let Some(head) = head {
        if revision(hub, repo, head).await?.entries == dir.entries {
            return Ok(Transfer { up_to_date: true, head: head.to_hex(), chunks_sent_while_scanning: Some(0), ..summary(hub, &Default::default()) });
        }
    }
    let rev = Revision::new(head.into_iter().collect(), opts.author.clone(), opts.time, opts.message.clone(), dir.entries.clone())?;
    let bytes = rev.encode();
    let source = DirectorySource { dir, revision: (ferry_core::revision::revision_id(&bytes), bytes), parent: head };
    let plan = BranchPlan {
        repo,
        branch,
        source_head: source.revision.0,
        sink_head: head,
        sink_hints: refs.iter().map(|b| b.1).collect(),
        partial: None,
        limits: Limits::default(),
    };
    let mut report = run(&source, hub, plan, Direction::Push, progress).await?;
    // What went ahead while scanning counts as moved; the transfer found
    // those chunks already there.
    let sent = dir.sent;
    report.chunks_moved += sent.chunks;
    report.raw_bytes_moved += sent.raw_bytes;
    report.chunk_bytes_moved += sent.encoded_bytes;
    report.chunks_already_there = report.chunks_already_there.saturating_sub(sent.chunks);
    report.ids_asked += sent.ids_asked;
    Ok(Transfer { chunks_sent_while_scanning: Some(sent.chunks), ..summary(hub, &report) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_changes_after_its_scan_is_named_when_its_chunks_are_read() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("weights.bin");
        let data = ferry_testkit::noise(3_000_000, 1);
        std::fs::write(&path, &data).unwrap();
        let dir = Directory::scan(tmp.path(), false, &()).unwrap();
        assert_eq!((dir.files(), dir.bytes()), (1, data.len() as u64));
        let ids = dir.on_disk.ids();
        for id in &ids {
            assert_eq!(Id::of_chunk(&dir.chunk(id).unwrap()), *id);
        }
        let mut changed = data.clone();
        changed[1_000_000..1_000_100].fill(0);
        std::fs::write(&path, &changed).unwrap();
        let errors: Vec<String> = ids.iter().filter_map(|id| dir.chunk(id).err()).map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 1, "exactly the chunk that changed fails");
        assert!(errors[0].contains("weights.bin") && errors[0].contains("changed while it was being uploaded"), "{}", errors[0]);
    }
}

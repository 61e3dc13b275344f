//! Upload: a directory straight to a hub's branch, with no store on the
//! client. The files are scanned once (cut and hashed as a commit cuts
//! them, nothing written), the revision and its trees are held in memory,
//! and the transfer's source is the directory itself: the hub is asked
//! what it lacks exactly as in a push, and the chunks it lacks are read
//! back from the files, checked against their ids and encoded on the way
//! out. A re-run after an interruption scans again and sends only what
//! the hub still lacks.

use std::collections::HashMap;
use std::fs::File;

use ferry_core::revision::{Entry, Revision};
use ferry_core::Id;
use ferry_net::Client;
use ferry_proto::transfer::Limits;
use ferry_store::scan::{encode_chunk, scan};
use ferry_store::IngestProgress;
use rayon::prelude::*;

use crate::disk::{OnDisk, Unreadable};
use crate::driver::{run, BranchPlan, Direction, TransferProgress};
use crate::ends::Source;
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
}

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
        let found = ferry_store::list_files(path, follow_symlinks)?;
        progress.start(found.iter().map(|f| f.size).sum());
        let mut dir = Directory { entries: Vec::with_capacity(found.len()), nodes: HashMap::new(), on_disk: OnDisk::default() };
        for f in found {
            let io = |e: std::io::Error| Error::Io(format!("{}: {e}", f.full.display()));
            let file = File::open(&f.full).map_err(io)?;
            let before = stamp(&file).map_err(io)?;
            let scanned = scan(&file, true, progress).map_err(io)?;
            if stamp(&file).map_err(io)? != before || scanned.size != before.0 {
                return Err(changed(&f.full));
            }
            tracing::info!(path = %f.rel, bytes = scanned.size, chunks = scanned.chunks.len(), "scanned");
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
            Some(Ok(raw)) => Ok(raw),
            Some(Err(Unreadable::Io(path, e))) => Err(Error::Io(format!("{}: {e}", path.display()))),
            Some(Err(Unreadable::Changed(path))) => Err(changed(path)),
        }
    }
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
            return Ok(Transfer { up_to_date: true, head: head.to_hex(), ..summary(hub, &Default::default()) });
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
    let report = run(&source, hub, plan, Direction::Push, progress).await?;
    Ok(summary(hub, &report))
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

//! Download: a revision's files straight from a hub into a directory, with
//! no store on the client.
//!
//! Each file is built in a temporary file beside its final name and
//! renamed into place only when whole. Chunks whose bytes are
//! already on disk are copied, not fetched: the file of the same path in
//! the directory (the previous revision, typically) and in each seed
//! directory is cut as a commit would cut it, and every chunk read from
//! there is checked against its id before it is used. The hub is told
//! which of the remaining chunks' delta bases are on disk (with a proof
//! that they are) and sends those chunks as deltas. A temporary file left
//! by an interrupted download keeps the chunks already written: a re-run
//! checks them in place and fetches only the rest.
//!
//! Files are not forced to disk before their rename (as rsync, git and the
//! Hugging Face client do not): a kill leaves every file whole or under its
//! temporary name, and after a power loss a re-run finds any file that did
//! not reach the disk, since it re-hashes what it keeps.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use ferry_core::codec;
use ferry_core::revision::Entry;
use ferry_core::Id;
use ferry_net::Client;
use ferry_store::scan::{scan_each, ScannedChunk};
use ferry_store::IngestProgress;
use futures_util::stream::{self, StreamExt};
use rayon::prelude::*;

use crate::disk::{clone_file, read_at, write_at, OnDisk};
use crate::ends::Source;
use crate::ops::{chunks_in_range, globs, resolve, revision};
use crate::{Error, Result};

/// Raw bytes asked for in one request.
const FETCH_BYTES: u64 = 4 << 20;
/// Requests in flight at once, to keep the link busy across round trips.
const FETCHES_IN_FLIGHT: usize = 4;

/// What to download, and where.
pub struct DownloadOptions {
    /// The repository.
    pub repo: String,
    /// A branch or a full revision id.
    pub rev: String,
    /// The directory the files are written into (created if missing).
    pub dest: PathBuf,
    /// Other directories whose files of the same paths may hold chunks.
    pub seeds: Vec<PathBuf>,
    /// Only files matching one of these globs (none: every file).
    pub include: Vec<String>,
    /// Not the files matching one of these globs.
    pub exclude: Vec<String>,
}

/// What a download did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Downloaded {
    /// The revision written, hex.
    pub revision: String,
    /// Files of the revision selected.
    pub files: u64,
    /// Of those, files that were already whole on disk.
    pub files_unchanged: u64,
    /// Bytes of the selected files.
    pub bytes: u64,
    /// Chunks fetched from the hub.
    pub chunks_fetched: u64,
    /// Their raw bytes.
    pub raw_bytes_fetched: u64,
    /// Their bytes as they came (encoded).
    pub record_bytes_fetched: u64,
    /// Of the chunks fetched, those that came as deltas against bytes on disk.
    pub deltas: u64,
    /// Chunks copied from files on disk instead.
    pub chunks_reused: u64,
    /// Their bytes.
    pub bytes_reused: u64,
    /// Of those, bytes not copied at all: the new file shares them with
    /// the old one (a filesystem with reflinks).
    pub bytes_cloned: u64,
    /// Frame bytes sent.
    pub wire_bytes_sent: u64,
    /// Frame bytes received.
    pub wire_bytes_received: u64,
}

/// Files on disk that may hold chunks of the file being written.
#[derive(Default)]
struct Seeds(OnDisk);

impl Seeds {
    /// Cuts `path` and remembers where its chunks are, handing each chunk
    /// and its bytes to `each` on the way; returns the file's id.
    fn add(&mut self, path: &Path, each: &mut dyn FnMut(&ScannedChunk, &[u8]) -> std::io::Result<()>) -> Result<Id> {
        let io = |e: std::io::Error| Error::Io(format!("{}: {e}", path.display()));
        let file = File::open(path).map_err(io)?;
        let scanned = scan_each(&file, false, &(), each).map_err(io)?;
        self.0.add(path.to_owned(), file, &scanned.chunks);
        Ok(scanned.file_id)
    }

    /// A chunk's bytes from disk, if some file holds them still (checked
    /// against the id: a file that changed or rotted is not used).
    fn read(&self, id: &Id) -> Option<Vec<u8>> {
        self.0.read(id)?.ok()
    }
}

/// Writes the files of `repo@rev` under `opts.dest`, fetching only chunks
/// that no file on disk holds. `progress` hears the total bytes, then per
/// piece written its bytes, the raw bytes fetched for it and their
/// encoded size.
pub async fn download(hub: &Client, opts: &DownloadOptions, progress: &dyn IngestProgress) -> Result<Downloaded> {
    let repo = opts.repo.as_str();
    let id = resolve(hub, repo, &opts.rev).await?;
    let rev = revision(hub, repo, id).await?;
    let include = (!opts.include.is_empty()).then(|| globs("--include", &opts.include)).transpose()?;
    let exclude = globs("--exclude", &opts.exclude)?;
    let entries: Vec<&Entry> = rev.entries.iter().filter(|e| include.as_ref().is_none_or(|s| s.is_match(&e.path)) && !exclude.is_match(&e.path)).collect();
    let mut out = Downloaded { revision: id.to_hex(), files: entries.len() as u64, ..Default::default() };
    out.bytes = entries.iter().map(|e| e.size).sum();
    progress.start(out.bytes);
    std::fs::create_dir_all(&opts.dest).map_err(|e| Error::Io(format!("{}: {e}", opts.dest.display())))?;
    for entry in entries {
        download_file(hub, repo, entry, opts, &mut out, progress).await?;
    }
    let (sent, received) = hub.wire_bytes();
    out.wire_bytes_sent = sent;
    out.wire_bytes_received = received;
    Ok(out)
}

/// Where `path` (checked when its revision was decoded: relative, no `..`)
/// goes under `dest`, refusing to write through a symbolic link that
/// could lead outside it.
fn target_of(dest: &Path, path: &str) -> Result<PathBuf> {
    let mut at = dest.to_path_buf();
    let parts: Vec<&str> = path.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::Io(format!("{}: a symbolic link is in the way of {path:?}; move it aside", at.display())));
            }
            Ok(m) if i + 1 < parts.len() && !m.is_dir() => {
                return Err(Error::Io(format!("{}: not a directory, in the way of {path:?}", at.display())));
            }
            _ => {}
        }
    }
    Ok(at)
}

async fn download_file(hub: &Client, repo: &str, entry: &Entry, opts: &DownloadOptions, out: &mut Downloaded, progress: &dyn IngestProgress) -> Result<()> {
    let target = target_of(&opts.dest, &entry.path)?;
    let io = |path: &Path, e: std::io::Error| Error::Io(format!("{}: {e}", path.display()));
    let name = target.file_name().expect("a checked path has a file name").to_string_lossy();
    let partial = target.with_file_name(format!(".{name}.ferry-download"));
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    }
    let chunks = chunks_in_range(hub, repo, entry.file_id, 0, entry.size).await?;
    tracing::debug!(path = %entry.path, chunks = chunks.len(), "tree walked");
    // Where each distinct chunk goes, and what goes where.
    let mut places: HashMap<Id, (u64, Vec<u64>)> = HashMap::new();
    let mut at_offset: HashMap<u64, (Id, u64)> = HashMap::with_capacity(chunks.len());
    for &(id, offset, size) in &chunks {
        places.entry(id).or_insert((size, Vec::new())).1.push(offset);
        at_offset.insert(offset, (id, size));
    }
    let resumed = std::fs::metadata(&partial).is_ok_and(|m| m.is_file() && m.len() == entry.size);
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(!resumed).open(&partial).map_err(|e| io(&partial, e))?;
    // Where the filesystem shares bytes between files, the new file starts
    // as the old one: the chunks that stay in place cost nothing.
    let cloned = !resumed && target.is_file() && File::open(&target).is_ok_and(|old| clone_file(&old, &file));
    if !resumed {
        file.set_len(entry.size).map_err(|e| io(&partial, e))?;
    } else {
        // Chunks an interrupted run wrote already stay (checked in place,
        // on every core).
        let written: Vec<(Id, u64)> = tokio::task::block_in_place(|| {
            chunks
                .par_iter()
                .filter(|(id, at, size)| {
                    let mut raw = vec![0; *size as usize];
                    read_at(&file, &mut raw, *at).is_ok() && Id::of_chunk(&raw) == *id
                })
                .map(|&(id, at, _)| (id, at))
                .collect()
        });
        for (id, at) in written {
            let (size, offsets) = places.get_mut(&id).expect("listed");
            offsets.retain(|&o| o != at);
            progress.advance(*size, 0, 0);
        }
    }
    // Chunks on disk: the file at the target path (the old version), then
    // the same path in each seed directory. The scan hashes every chunk it
    // reads, so what it hands over is verified; wanted chunks are written
    // as they pass. The old file's chunks that sit where the new file wants
    // them are only noted: if the file turns out unchanged nothing is
    // written at all, else they are copied in bulk while the rest is
    // fetched (the copy is the kernel's work on one core, the fetch mostly
    // the network's and the decoder's), or not at all where the new file
    // began as a clone of the old.
    let mut seeds = Seeds::default();
    let mut in_place: Vec<(u64, u64)> = Vec::new();
    let mut copying = None;
    // Writes a chunk from disk everywhere the new file still wants it.
    let place = |places: &mut HashMap<Id, (u64, Vec<u64>)>, c: &ScannedChunk, bytes: &[u8], out: &mut Downloaded| -> std::io::Result<()> {
        let Some((size, offsets)) = places.get_mut(&c.id).filter(|p| !p.1.is_empty()) else { return Ok(()) };
        for at in offsets.drain(..) {
            write_at(&file, bytes, at)?;
            out.bytes_reused += *size;
            progress.advance(*size, 0, 0);
        }
        out.chunks_reused += 1;
        Ok(())
    };
    if target.is_file() {
        let file_id = tokio::task::block_in_place(|| {
            seeds.add(&target, &mut |c, bytes| {
                if at_offset.get(&c.offset) == Some(&(c.id, c.len as u64)) {
                    in_place.push((c.offset, c.len as u64));
                    return Ok(());
                }
                place(&mut places, c, bytes, out)
            })
        })?;
        if file_id == entry.file_id && executable(&target) == entry.executable {
            drop(file);
            let _ = std::fs::remove_file(&partial);
            tracing::info!(path = %entry.path, "already whole");
            out.files_unchanged += 1;
            out.chunks_reused += chunks.len() as u64;
            out.bytes_reused += entry.size;
            progress.advance(entry.size, 0, 0);
            return Ok(());
        }
        for &(at, size) in &in_place {
            let id = at_offset[&at].0;
            let offsets = &mut places.get_mut(&id).expect("listed").1;
            if let Some(i) = offsets.iter().position(|&o| o == at) {
                offsets.swap_remove(i);
                out.chunks_reused += 1;
                out.bytes_reused += size;
                progress.advance(size, 0, 0);
            }
        }
        if cloned {
            out.bytes_cloned += in_place.iter().map(|r| r.1).sum::<u64>();
        } else {
            let (from, to) = (target.clone(), file.try_clone().map_err(|e| io(&partial, e))?);
            let ranges = merge(&mut in_place);
            copying = Some(tokio::task::spawn_blocking(move || copy_ranges(&from, &to, &ranges)));
        }
    }
    for seed in opts.seeds.iter().map(|s| s.join(&entry.path)).filter(|p| p.is_file()) {
        tokio::task::block_in_place(|| seeds.add(&seed, &mut |c, bytes| place(&mut places, c, bytes, out)))?;
    }
    let mut wanted: Vec<(Id, u64)> = Vec::new();
    let mut fetch_at: HashMap<Id, Vec<u64>> = HashMap::new();
    for (id, (size, offsets)) in places {
        if !offsets.is_empty() {
            fetch_at.insert(id, offsets);
            wanted.push((id, size));
        }
    }
    tracing::debug!(path = %entry.path, chunks = wanted.len(), "fetching");
    // Fetch the rest, a few requests at a time, writing as they come.
    let mut batches: Vec<Vec<(Id, u64)>> = Vec::new();
    let mut bytes = 0;
    for w in wanted {
        if batches.is_empty() || bytes + w.1 > FETCH_BYTES {
            batches.push(Vec::new());
            bytes = 0;
        }
        bytes += w.1;
        batches.last_mut().expect("pushed").push(w);
    }
    let seeds = &seeds;
    let fetching = async {
        let mut fetched = stream::iter(batches).map(|batch| fetch(hub, repo, batch, seeds)).buffered(FETCHES_IN_FLIGHT);
        while let Some(got) = fetched.next().await {
            for (id, raw, record_len, delta) in got? {
                let offsets = &fetch_at[&id];
                tokio::task::block_in_place(|| offsets.iter().try_for_each(|&at| write_at(&file, &raw, at))).map_err(|e| io(&partial, e))?;
                let n = raw.len() as u64 * offsets.len() as u64;
                out.chunks_fetched += 1;
                out.raw_bytes_fetched += raw.len() as u64;
                out.record_bytes_fetched += record_len;
                out.deltas += delta as u64;
                progress.advance(n, raw.len() as u64, record_len);
            }
        }
        Ok::<_, Error>(())
    };
    let fetched = fetching.await;
    // The copy ends before anything else happens to the file, even after
    // a failed fetch.
    if let Some(copying) = copying {
        copying.await.map_err(|e| Error::Io(format!("{}: copying: {e}", partial.display())))?.map_err(|e| io(&target, e))?;
    }
    fetched?;
    tracing::info!(path = %entry.path, bytes = entry.size, fetched = fetch_at.len(), "file written; renaming into place");
    // Whole: give it its name.
    set_executable(&file, entry.executable).map_err(|e| io(&partial, e))?;
    drop(file);
    std::fs::rename(&partial, &target).map_err(|e| io(&target, e))
}

/// `ranges` sorted, with those that touch merged.
fn merge(ranges: &mut [(u64, u64)]) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for &(at, len) in ranges.iter() {
        match merged.last_mut() {
            Some(last) if last.0 + last.1 == at => last.1 += len,
            _ => merged.push((at, len)),
        }
    }
    merged
}

/// Copies the byte ranges `ranges` (chunks that sit in the old file where
/// the new one wants them, just verified by the scan) from `old` into the
/// same places of `to`. `io::copy` between files copies inside the kernel
/// where it can (copy_file_range), at page-cache speed with no copy
/// through this process.
fn copy_ranges(old: &Path, mut to: &File, ranges: &[(u64, u64)]) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut from = File::open(old)?;
    for &(at, len) in ranges {
        from.seek(SeekFrom::Start(at))?;
        to.seek(SeekFrom::Start(at))?;
        if std::io::copy(&mut (&mut from).take(len), &mut to)? != len {
            return Err(std::io::Error::other("the file changed while being read"));
        }
    }
    Ok(())
}

/// One request's chunks, decoded and verified: (id, raw bytes, bytes as
/// received, whether it came as a delta). Chunks whose delta base is on
/// disk are asked for against it.
async fn fetch(hub: &Client, repo: &str, batch: Vec<(Id, u64)>, seeds: &Seeds) -> Result<Vec<(Id, Vec<u8>, u64, bool)>> {
    let ids: Vec<Id> = batch.iter().map(|b| b.0).collect();
    let mut bases: HashMap<Id, Vec<u8>> = HashMap::new();
    for base in hub.delta_bases(repo, ids.clone()).await?.into_iter().flatten() {
        if let std::collections::hash_map::Entry::Vacant(slot) = bases.entry(base) {
            if let Some(raw) = tokio::task::block_in_place(|| seeds.read(&base)) {
                slot.insert(raw);
            }
        }
    }
    let held: Vec<(Id, [u8; 32])> = bases.iter().map(|(id, raw)| (*id, codec::base_proof(raw))).collect();
    let records = hub.records(repo, ids, held).await?;
    let sizes: HashMap<Id, u64> = batch.into_iter().collect();
    tokio::task::block_in_place(|| {
        records
            .into_par_iter()
            .map(|(id, record)| {
                let base = codec::delta_base(&record)?;
                let raw = match base {
                    Some(b) => {
                        let base =
                            bases.get(&b).ok_or_else(|| Error::Protocol(format!("the hub sent chunk {id} as a delta against {b}, which was not offered")))?;
                        codec::decode_delta_verified(&id, &record, base)?
                    }
                    None => codec::decode_verified(&id, &record)?,
                };
                if raw.len() as u64 != sizes[&id] {
                    return Err(Error::Protocol(format!("chunk {id} has {} bytes where its tree says {}", raw.len(), sizes[&id])));
                }
                Ok((id, raw, record.len() as u64, base.is_some()))
            })
            .collect()
    })
}

#[cfg(unix)]
fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

#[cfg(unix)]
fn set_executable(file: &File, on: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = file.metadata()?.permissions().mode();
    let mode = if on { mode | ((mode & 0o444) >> 2) } else { mode & !0o111 };
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn executable(_: &Path) -> bool {
    false
}

#[cfg(not(unix))]
fn set_executable(_: &File, _: bool) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_bytes_are_used_only_while_they_still_match_their_ids() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("old.bin");
        let data = ferry_testkit::noise(2_000_000, 1);
        std::fs::write(&path, &data).unwrap();
        let mut seeds = Seeds::default();
        seeds.add(&path, &mut |_, _| Ok(())).unwrap();
        let ids = seeds.0.ids();
        assert!(ids.len() > 3);
        assert!(ids.iter().all(|id| seeds.read(id).is_some_and(|raw| Id::of_chunk(&raw) == *id)));
        // Rot in one place after the scan: that chunk is fetched instead.
        let mut rotten = data.clone();
        rotten[500_000] ^= 1;
        std::fs::write(&path, &rotten).unwrap();
        assert_eq!(ids.iter().filter(|id| seeds.read(id).is_none()).count(), 1);
    }

    #[test]
    fn nothing_is_written_through_a_symbolic_link_in_the_destination() {
        let tmp = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), tmp.path().join("sub")).unwrap();
        let err = target_of(tmp.path(), "sub/model.bin").unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(target_of(tmp.path(), "a/b.bin").unwrap(), tmp.path().join("a/b.bin"));
    }
}

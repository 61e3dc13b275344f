//! Writing: the streaming ingest pipeline and revision commits.
//!
//! A file is read once, in 8 MiB segments, through four stages that run at
//! the same time: read → cut (`cut`, FastCDC or by tensor for
//! safetensors) → hash, look up, compress (rayon, on every core) → write
//! (RocksDB batch, tree building). Each stage holds at most two segments,
//! so memory is bounded whatever the file size.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::RwLockReadGuard;

use crossbeam_channel::bounded;
use ferry_core::codec::{Encoder, DEFAULT_ZSTD_LEVEL, MAX_DELTA_CHAIN};
use ferry_core::revision::{Entry, Revision};
use ferry_core::safetensors::Layout;
use ferry_core::tree::{Node, TreeBuilder};
use ferry_core::Id;
use rayon::prelude::*;

use crate::backend::VerifiedRecord;
use crate::bases::DeltaBases;
use crate::cut::{self, Segment};
use crate::{Result, Store, StoreError};

/// Rough size of one RocksDB write batch of chunk records.
const WRITE_BATCH_BYTES: usize = 1 << 20;

/// Told about ingest progress as segments are written.
pub trait IngestProgress: Sync {
    /// The total bytes about to be ingested, when known.
    fn start(&self, _total_bytes: u64) {}
    /// `bytes` of input were processed, of which `new_bytes` were new to the
    /// store and took `stored_bytes` once encoded.
    fn advance(&self, bytes: u64, new_bytes: u64, stored_bytes: u64);
}

impl IngestProgress for () {
    fn advance(&self, _: u64, _: u64, _: u64) {}
}

/// The result of ingesting one file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ingested {
    /// The root of the file's tree: its id.
    pub file_id: Id,
    /// The file's length in bytes.
    pub size: u64,
    /// Chunks the file was cut into.
    pub chunks: u64,
    /// Chunks that were not in the store before.
    pub new_chunks: u64,
    /// Raw bytes of those chunks.
    pub new_bytes: u64,
    /// Bytes those chunks take once encoded.
    pub stored_bytes: u64,
    /// Tree nodes that were not in the store before.
    pub new_nodes: u64,
}

impl Ingested {
    /// Adds another file's counts (the file id is left as it is).
    pub fn add(&mut self, o: &Ingested) {
        self.new_nodes += o.new_nodes;
        self.size += o.size;
        self.chunks += o.chunks;
        self.new_chunks += o.new_chunks;
        self.new_bytes += o.new_bytes;
        self.stored_bytes += o.stored_bytes;
    }
}

/// What a commit of a directory did.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The new revision.
    pub revision: Id,
    /// Files it records.
    pub files: u64,
    /// Their counts added up.
    pub totals: Ingested,
}

/// A writer's hold on the store. While any session is open, garbage
/// collection waits, so chunks a session found already stored cannot
/// disappear before the session's revision references them.
pub struct WriteSession<'a> {
    store: &'a Store,
    _guard: RwLockReadGuard<'a, ()>,
}

struct Hashed {
    ids: Vec<(Id, u64)>,
    records: Vec<VerifiedRecord>,
    bytes: u64,
}

impl Store {
    /// Starts writing. Holds off garbage collection until dropped.
    pub fn write_session(&self) -> WriteSession<'_> {
        let guard = self.gc_guard.read().unwrap_or_else(|p| p.into_inner());
        WriteSession { store: self, _guard: guard }
    }
}

impl WriteSession<'_> {
    /// The store this session writes to.
    pub fn store(&self) -> &Store {
        self.store
    }

    /// Chunks, hashes, compresses and stores everything `reader` yields, and
    /// returns the file id. Nothing is durable until a revision is committed.
    pub fn ingest<R: Read + Send>(&self, reader: R, progress: &dyn IngestProgress) -> Result<Ingested> {
        self.ingest_against(reader, None, progress)
    }

    /// [`WriteSession::ingest`], storing each new tensor piece as a delta
    /// against the same piece in `bases` where that is smaller (and the
    /// base's chain is short enough).
    pub fn ingest_against<R: Read + Send>(&self, reader: R, bases: Option<&mut DeltaBases>, progress: &dyn IngestProgress) -> Result<Ingested> {
        let mut bases = bases.filter(|b| !b.is_empty());
        let store = self.store;
        let (hashed_tx, hashed_rx) = bounded::<Result<Hashed>>(2);
        // Buffers the hash stage is done with, for the reader to refill.
        let (free_tx, free_rx) = bounded::<Vec<u8>>(8);
        std::thread::scope(|s| {
            let seg_rx = cut::segments(s, reader, free_rx);
            s.spawn(move || {
                for seg in seg_rx {
                    let res = seg.map_err(|e| StoreError::Io { path: PathBuf::from("<input>"), error: e }).and_then(|seg| {
                        let h = hash_and_encode(store, &seg, bases.as_deref_mut());
                        let _ = free_tx.try_send(seg.buf);
                        h
                    });
                    let failed = res.is_err();
                    if hashed_tx.send(res).is_err() || failed {
                        return;
                    }
                }
            });
            self.write_segments(hashed_rx, progress)
        })
    }

    fn write_segments(&self, hashed: crossbeam_channel::Receiver<Result<Hashed>>, progress: &dyn IngestProgress) -> Result<Ingested> {
        let mut builder = TreeBuilder::new();
        let mut out = Ingested::default();
        for h in hashed {
            let h = h?;
            // Records go in batches of about WRITE_BATCH_BYTES, each record
            // with its index entry; then the segment's tree nodes, after the
            // chunks they name. Keeping batches small matters for memory:
            // freeing a multi-MiB batch raises glibc's mmap threshold above
            // the size of RocksDB's memtable arena blocks, which then come
            // from the heap and fragment it (peak RSS crept up with file
            // size).
            let mut rest = &h.records[..];
            while !rest.is_empty() {
                let mut n = 0;
                let mut bytes = 0;
                while n < rest.len() && (n == 0 || bytes + rest[n].record().len() <= WRITE_BATCH_BYTES) {
                    bytes += rest[n].record().len();
                    n += 1;
                }
                self.store.put_chunk_records(&rest[..n])?;
                rest = &rest[n..];
            }
            let mut nodes = Vec::new();
            let mut sink = |n: &Node, id: Id| nodes.push((id, n.encode()));
            for &(id, size) in &h.ids {
                builder.push_chunk(id, size, &mut sink);
            }
            out.new_nodes += self.put_new_nodes(nodes)?;
            let new_bytes: u64 = h.records.iter().map(|r| r.raw_len()).sum();
            let stored: u64 = h.records.iter().map(|r| r.record().len() as u64).sum();
            out.chunks += h.ids.len() as u64;
            out.new_chunks += h.records.len() as u64;
            out.new_bytes += new_bytes;
            out.stored_bytes += stored;
            out.size += h.bytes;
            progress.advance(h.bytes, new_bytes, stored);
        }
        let mut nodes = Vec::new();
        let root = builder.finish(&mut |n: &Node, id: Id| nodes.push((id, n.encode())));
        out.new_nodes += self.put_new_nodes(nodes)?;
        out.file_id = root.id;
        debug_assert_eq!(root.size, out.size);
        Ok(out)
    }

    /// Writes the nodes not stored yet: committing a file again, or a new
    /// version of it, must not rewrite the tree nodes it shares (write
    /// amplification in proportion to the file, not to the change).
    /// Returns how many were new.
    fn put_new_nodes(&self, nodes: Vec<(Id, Vec<u8>)>) -> Result<u64> {
        if nodes.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Id> = nodes.iter().map(|n| n.0).collect();
        let stored = self.store.has_nodes(&ids)?;
        let new: Vec<(Id, Vec<u8>)> = nodes.into_iter().zip(stored).filter(|(_, stored)| !stored).map(|(n, _)| n).collect();
        let count = new.len() as u64;
        self.store.put_nodes(new)?;
        Ok(count)
    }

    /// Stores records that arrived verified from elsewhere (a push).
    pub fn put_records(&self, records: &[VerifiedRecord]) -> Result<()> {
        self.store.put_chunk_records(records)
    }

    /// Publishes `rev` as the new head of `repo`'s `branch`, if the branch
    /// is still at `expected` (None: the branch must not exist yet).
    ///
    /// Every file tree the revision names must be stored, of the size its
    /// entry says; everything written so far is made durable before the
    /// revision becomes visible.
    pub fn commit(&self, repo: &str, branch: &str, expected: Option<Id>, rev: &Revision) -> Result<Id> {
        ferry_core::names::check_repo_name(repo)?;
        ferry_core::names::check_branch_name(branch)?;
        let roots: Vec<Id> = rev.entries.iter().map(|e| e.file_id).collect();
        for (root, present) in roots.iter().zip(self.store.has_nodes(&roots)?) {
            if !present {
                return Err(StoreError::MissingNode(*root));
            }
        }
        self.store.check_entry_sizes(rev)?;
        for p in &rev.parents {
            self.store.revision(p)?;
        }
        self.store.sync()?;
        let enc = rev.encode();
        let id = ferry_core::revision::revision_id(&enc);
        self.store.swap_branch(vec![enc], repo, branch, expected, Some(id), rev.time)?;
        Ok(id)
    }

    /// Commits the regular files under `dir` as a new revision on `branch`.
    pub fn commit_dir(&self, repo: &str, branch: &str, dir: &Path, opts: &CommitOptions, progress: &dyn IngestProgress) -> Result<Committed> {
        ferry_core::names::check_repo_name(repo)?;
        ferry_core::names::check_branch_name(branch)?;
        let head = self.store.branch(repo, branch)?;
        let files = list_files(dir, opts.follow_symlinks)?;
        let mut bases = match opts.base.or(head) {
            Some(rev) => Some(self.store.delta_bases(&self.store.revision(&rev)?)?),
            _ => None,
        };
        progress.start(files.iter().map(|f| f.size).sum());
        let mut totals = Ingested::default();
        let mut entries = Vec::with_capacity(files.len());
        for f in &files {
            let file = File::open(&f.full).map_err(|e| StoreError::io(&f.full, e))?;
            let got = self.ingest_against(file, bases.as_mut(), progress).map_err(|e| match e {
                StoreError::Io { error, .. } => StoreError::io(&f.full, error),
                e => e,
            })?;
            if got.size != f.size {
                return Err(StoreError::io(&f.full, io::Error::other(format!("file changed while being read ({} bytes expected, {} read)", f.size, got.size))));
            }
            totals.add(&got);
            entries.push(Entry { path: f.rel.clone(), file_id: got.file_id, size: got.size, executable: f.executable });
        }
        let rev = Revision::new(head.into_iter().collect(), opts.author.clone(), opts.time, opts.message.clone(), entries)?;
        let revision = self.commit(repo, branch, head, &rev)?;
        Ok(Committed { revision, files: files.len() as u64, totals })
    }
}

/// How to record a directory.
#[derive(Debug, Clone)]
pub struct CommitOptions {
    /// The revision's message.
    pub message: String,
    /// Who made it.
    pub author: String,
    /// Unix seconds.
    pub time: i64,
    /// Store the content of symlinked files instead of refusing symlinks.
    pub follow_symlinks: bool,
    /// The revision whose tensors new tensor pieces are stored as deltas
    /// against (None: the branch's head, if it has one).
    pub base: Option<Id>,
}

thread_local! {
    /// One zstd context per thread, kept across segments and files.
    pub(crate) static ENCODER: std::cell::RefCell<Encoder> = std::cell::RefCell::new(Encoder::new(DEFAULT_ZSTD_LEVEL));
}

fn hash_and_encode(store: &Store, seg: &Segment, bases: Option<&mut DeltaBases>) -> Result<Hashed> {
    let data = seg.data();
    let ranges = seg.ranges();
    let ids: Vec<(Id, u64)> = ranges.par_iter().map(|&(a, b)| (Id::of_chunk(&data[a..b]), (b - a) as u64)).collect();
    let just_ids: Vec<Id> = ids.iter().map(|x| x.0).collect();
    let present = store.has_chunks(&just_ids)?;
    let mut seen = HashSet::new();
    let missing: Vec<usize> = (0..ids.len()).filter(|&i| !present[i] && seen.insert(ids[i].0)).collect();
    let base_of = match (bases, &seg.layout) {
        (Some(bases), Some(layout)) => find_bases(store, bases, layout, seg, &ranges, &missing)?,
        _ => HashMap::new(),
    };
    let records: Vec<VerifiedRecord> = missing
        .par_iter()
        .map(|&i| {
            let (a, b) = ranges[i];
            let (raw, width) = (&data[a..b], seg.widths[i]);
            ENCODER.with_borrow_mut(|enc| {
                if let Some((base_id, base)) = base_of.get(&i) {
                    if let Some(delta) = enc.encode_delta(raw, width, base_id, base) {
                        // Byte planes alone are tried only when the delta is
                        // not clearly better (they keep about 2/3 of weights).
                        if delta.len() <= raw.len() * 5 / 8 || delta.len() < enc.encode_hinted(raw, width).len() {
                            return VerifiedRecord::encoded(ids[i].0, delta);
                        }
                    }
                }
                VerifiedRecord::encode_with_id(ids[i].0, raw, width, enc)
            })
        })
        .collect();
    Ok(Hashed { ids, records, bytes: data.len() as u64 })
}

/// For each missing tensor piece of the segment that has a base whose
/// delta chain leaves room for one more link: the base's id and raw bytes
/// (read in one batch).
fn find_bases(
    store: &Store,
    bases: &mut DeltaBases,
    layout: &Layout,
    seg: &Segment,
    ranges: &[(usize, usize)],
    missing: &[usize],
) -> Result<HashMap<usize, (Id, Vec<u8>)>> {
    let mut wanted: Vec<(usize, Id)> = Vec::new();
    for &i in missing.iter().filter(|&&i| seg.widths[i] > 1) {
        let (a, b) = ranges[i];
        let at = seg.offset + a as u64;
        let Some(t) = layout.tensor_at(at) else { continue };
        if let Some(base) = bases.piece(store, &t.name, t.len, seg.widths[i], at - t.start, (b - a) as u64)? {
            wanted.push((i, base));
        }
    }
    let ids: Vec<Id> = wanted.iter().map(|w| w.1).collect();
    let mut out = HashMap::with_capacity(wanted.len());
    // A piece whose base's chain is full is stored against the record
    // half way down that chain: a few versions further back (a somewhat
    // larger delta), and a chain of half the limit again. Versions in a
    // row then cost a delta over one step, and one in every half-limit a
    // delta over a few, never a whole record.
    const HALF: usize = MAX_DELTA_CHAIN / 2;
    let mut rebased: Vec<(usize, Id)> = Vec::new();
    // A base that cannot be read only means this piece is stored whole.
    for ((i, id), got) in wanted.into_iter().zip(store.chunks_decoded(&ids, 0)) {
        if let Ok((raw, below)) = got {
            if below.len() + 1 < MAX_DELTA_CHAIN {
                out.insert(i, (id, raw));
            } else if below.len() >= HALF {
                rebased.push((i, below[below.len() - HALF]));
            }
        }
    }
    let further: Vec<Id> = rebased.iter().map(|r| r.1).collect();
    for ((i, id), got) in rebased.into_iter().zip(store.chunks_decoded(&further, 0)) {
        if let Ok((raw, below)) = got {
            if below.len() < HALF {
                out.insert(i, (id, raw));
            }
        }
    }
    Ok(out)
}

/// A file found under the directory being committed.
pub struct FoundFile {
    /// Where it is on disk.
    pub full: PathBuf,
    /// Its path in the revision (relative, `/`-separated, checked).
    pub rel: String,
    /// Its length when listed.
    pub size: u64,
    /// Whether any execute bit is set.
    pub executable: bool,
}

/// Lists the regular files under `dir`, sorted, refusing anything ferry
/// cannot store faithfully.
pub fn list_files(dir: &Path, follow_symlinks: bool) -> Result<Vec<FoundFile>> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let meta = std::fs::metadata(dir).map_err(|e| StoreError::io(dir, e))?;
    if !meta.is_dir() {
        return Err(StoreError::io(dir, io::Error::other("not a directory")));
    }
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((full, rel)) = stack.pop() {
        let rd = std::fs::read_dir(&full).map_err(|e| StoreError::io(&full, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| StoreError::io(&full, e))?;
            let path = entry.path();
            let name = entry.file_name().into_string().map_err(|_| StoreError::io(&path, io::Error::other("file name is not valid UTF-8")))?;
            let rel = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let mut meta = std::fs::symlink_metadata(&path).map_err(|e| StoreError::io(&path, e))?;
            if meta.file_type().is_symlink() {
                if !follow_symlinks {
                    return Err(StoreError::Unsupported { path, kind: "a symbolic link", hint: " (pass --follow-symlinks to store the file it points to)" });
                }
                meta = std::fs::metadata(&path).map_err(|e| StoreError::io(&path, e))?;
                if meta.is_dir() {
                    return Err(StoreError::Unsupported { path, kind: "a symbolic link to a directory", hint: " (only links to files are followed)" });
                }
            }
            let ft = meta.file_type();
            if ft.is_dir() {
                stack.push((path, rel));
            } else if ft.is_file() {
                ferry_core::names::check_path(&rel)?;
                out.push(FoundFile { full: path, rel, size: meta.len(), executable: meta.permissions().mode() & 0o111 != 0 });
            } else {
                let kind = if ft.is_socket() {
                    "a socket"
                } else if ft.is_fifo() {
                    "a named pipe"
                } else if ft.is_block_device() {
                    "a block device"
                } else if ft.is_char_device() {
                    "a character device"
                } else {
                    "a special file"
                };
                return Err(StoreError::Unsupported { path, kind, hint: "" });
            }
        }
    }
    out.sort_by(|a, b| a.rel.as_bytes().cmp(b.rel.as_bytes()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cut::SEGMENT_LEN;
    use ferry_core::chunking::chunk_all;

    /// Hands out at most `step` bytes per read, to exercise short reads.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = out.len().min(self.step).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn stream(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        // A run of zeros cut at MAX_CHUNK, straddling a segment boundary.
        let mid = SEGMENT_LEN - 300_000;
        data[mid..(mid + 900_000).min(len)].fill(0);
        data
    }

    #[test]
    fn streamed_ingest_cuts_exactly_like_the_whole_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::init(dir.path()).unwrap();
        let session = store.write_session();
        for (len, step) in [(3 * SEGMENT_LEN + 12_345, 1_000_003), (2 * SEGMENT_LEN, usize::MAX), (SEGMENT_LEN + 1, 4096)] {
            let data = stream(len, len as u64);
            let chunks: Vec<(Id, u64)> = chunk_all(&data).iter().map(|&(o, l)| (Id::of_chunk(&data[o..o + l]), l as u64)).collect();
            let (root, _) = ferry_core::tree::build(&chunks);
            let got = session.ingest(Trickle { data: &data, step }, &()).unwrap();
            assert_eq!(got.file_id, root.id, "len {len}");
            assert_eq!(got.size, len as u64);
            assert_eq!(got.chunks, chunks.len() as u64);
            let again = session.ingest(&data[..], &()).unwrap();
            assert_eq!(again.file_id, root.id);
            assert_eq!(again.new_chunks, 0);
        }
    }
}

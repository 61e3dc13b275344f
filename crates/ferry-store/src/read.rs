//! Reading files back: byte ranges and whole-revision export, every byte
//! verified through the file's tree before it is written anywhere.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use ferry_core::revision::{Entry, Revision};
use ferry_core::tree::TreeBuilder;
use ferry_core::Id;

use crate::{Result, Store, StoreError};

/// Told how many bytes have been written out.
pub trait ReadProgress: Sync {
    /// `bytes` more have been read.
    fn advance(&self, bytes: u64);
}

impl ReadProgress for () {
    fn advance(&self, _: u64) {}
}

/// A chunk to copy: id, size, and the part of it wanted.
struct Piece {
    id: Id,
    size: u64,
    skip: usize,
    take: usize,
}

/// Chunks fetched, decoded and verified in parallel per batch.
const BATCH: usize = 64;

impl Store {
    /// Writes bytes `start..end` of the file `root` (`size` bytes) to `out`.
    /// Only the chunks that cover the range are read; each is verified.
    pub fn read_range(&self, root: &Id, size: u64, start: u64, end: u64, out: &mut dyn Write, progress: &dyn ReadProgress) -> Result<()> {
        let mut pending = Vec::with_capacity(BATCH);
        let top = self.node(root)?;
        if top.size() != size {
            return Err(StoreError::Corrupt { what: "tree node", id: *root, detail: format!("covers {} bytes, the revision says {size}", top.size()) });
        }
        self.walk(&top, 0, start, end, &mut pending, out, progress, &mut None)?;
        self.flush_pieces(&mut pending, out, progress, &mut None)
    }

    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        node: &ferry_core::tree::Node,
        offset: u64,
        start: u64,
        end: u64,
        pending: &mut Vec<Piece>,
        out: &mut dyn Write,
        progress: &dyn ReadProgress,
        rebuild: &mut Option<TreeBuilder>,
    ) -> Result<()> {
        for (c, lo) in node.children_in_range(offset, start, end) {
            let hi = lo + c.size;
            if node.height == 1 {
                let skip = start.saturating_sub(lo) as usize;
                let take = (end.min(hi) - lo) as usize - skip;
                pending.push(Piece { id: c.id, size: c.size, skip, take });
                if pending.len() >= BATCH {
                    self.flush_pieces(pending, out, progress, rebuild)?;
                }
            } else {
                let child = self.node(&c.id)?;
                if child.height + 1 != node.height || child.size() != c.size {
                    return Err(StoreError::Corrupt { what: "tree node", id: c.id, detail: "height or size disagrees with its parent".into() });
                }
                self.walk(&child, lo, start, end, pending, out, progress, rebuild)?;
            }
        }
        Ok(())
    }

    fn flush_pieces(&self, pending: &mut Vec<Piece>, out: &mut dyn Write, progress: &dyn ReadProgress, rebuild: &mut Option<TreeBuilder>) -> Result<()> {
        let ids: Vec<Id> = pending.iter().map(|p| p.id).collect();
        let raws = self.chunks_verified(&ids);
        for (p, raw) in pending.drain(..).zip(raws) {
            let raw = raw?;
            if raw.len() as u64 != p.size {
                return Err(StoreError::Corrupt { what: "chunk", id: p.id, detail: format!("{} bytes where its tree says {}", raw.len(), p.size) });
            }
            if let Some(b) = rebuild {
                b.push_chunk(p.id, p.size, &mut |_, _| {});
            }
            out.write_all(&raw[p.skip..p.skip + p.take]).map_err(|e| StoreError::io(Path::new("<output>"), e))?;
            progress.advance(p.take as u64);
        }
        Ok(())
    }

    /// Writes one whole file to `out`, and checks that the chunks read
    /// rebuild exactly the tree named by the entry.
    pub fn read_file(&self, entry: &Entry, out: &mut dyn Write, progress: &dyn ReadProgress) -> Result<()> {
        let top = self.node(&entry.file_id)?;
        if top.size() != entry.size {
            return Err(StoreError::Verify { path: entry.path.clone(), detail: format!("tree covers {} bytes, revision says {}", top.size(), entry.size) });
        }
        let mut pending = Vec::with_capacity(BATCH);
        let mut rebuild = Some(TreeBuilder::new());
        self.walk(&top, 0, 0, entry.size, &mut pending, out, progress, &mut rebuild)?;
        self.flush_pieces(&mut pending, out, progress, &mut rebuild)?;
        let root = rebuild.take().expect("set above").finish(&mut |_, _| {});
        if root.id != entry.file_id {
            return Err(StoreError::Verify {
                path: entry.path.clone(),
                detail: format!("chunks rebuild file id {}, expected {}", root.id.short(), entry.file_id.short()),
            });
        }
        Ok(())
    }

    /// Writes every file of `rev` under `dir`. Each file goes to a temporary
    /// name first and is renamed into place only once all its bytes checked
    /// out; no path can leave `dir`.
    pub fn export(&self, rev: &Revision, dir: &Path, progress: &dyn ReadProgress) -> Result<()> {
        fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        for entry in &rev.entries {
            ferry_core::names::check_path(&entry.path)?;
            let target = safe_join(dir, &entry.path)?;
            let parent = target.parent().expect("joined path has a parent");
            let name = target.file_name().expect("joined path has a name").to_string_lossy();
            let tmp = parent.join(format!(".{name}.ferry-tmp"));
            let res = (|| {
                let file = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
                let mut w = io::BufWriter::with_capacity(1 << 20, file);
                self.read_file(entry, &mut w, progress)?;
                let file = w.into_inner().map_err(|e| StoreError::io(&tmp, e.into_error()))?;
                set_mode(&file, entry.executable).map_err(|e| StoreError::io(&tmp, e))?;
                file.sync_all().map_err(|e| StoreError::io(&tmp, e))?;
                fs::rename(&tmp, &target).map_err(|e| StoreError::io(&target, e))
            })();
            if res.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            res?;
        }
        Ok(())
    }
}

fn set_mode(file: &File, executable: bool) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(if executable { 0o755 } else { 0o644 }))
}

/// Joins a checked relative path to `dir`, creating directories, and refuses
/// to pass through anything under `dir` that is not a real directory (a
/// symlink planted there could otherwise redirect the write).
fn safe_join(dir: &Path, rel: &str) -> Result<PathBuf> {
    let mut p = dir.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        p.push(part);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(StoreError::io(&p, io::Error::other("exists and is not a directory; refusing to write through it"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&p).map_err(|e| StoreError::io(&p, e))?,
            Err(e) => return Err(StoreError::io(&p, e)),
        }
    }
    p.push(parts[parts.len() - 1]);
    if let Ok(m) = fs::symlink_metadata(&p) {
        if m.file_type().is_symlink() || m.is_dir() {
            return Err(StoreError::io(&p, io::Error::other("exists and is not a regular file; refusing to replace it")));
        }
    }
    Ok(p)
}

//! Chunks on disk: where a scan found each chunk in which file, read back
//! and checked against its id (an upload's source, a download's seeds),
//! and positioned reads and writes on every platform the client builds for.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use ferry_core::Id;
use ferry_store::scan::ScannedChunk;

/// Where a scanned chunk's bytes are.
#[derive(Clone, Copy)]
struct Place {
    file: u32,
    offset: u64,
    len: u32,
    width: u8,
}

/// Files that were scanned, and where each chunk they hold is (the first
/// place found).
#[derive(Default)]
pub(crate) struct OnDisk {
    files: Vec<(PathBuf, File)>,
    chunks: HashMap<Id, Place>,
}

/// Why a chunk could not be read back from its file.
pub(crate) enum Unreadable<'a> {
    /// Reading the file failed.
    Io(&'a Path, io::Error),
    /// Its bytes there no longer hash to its id: the file changed.
    Changed(&'a Path),
}

impl OnDisk {
    /// Remembers the chunks a scan of `file` (at `path`) found.
    pub fn add(&mut self, path: PathBuf, file: File, chunks: &[ScannedChunk]) {
        let index = self.files.len() as u32;
        for c in chunks {
            self.chunks.entry(c.id).or_insert(Place { file: index, offset: c.offset, len: c.len, width: c.width });
        }
        self.files.push((path, file));
    }

    /// The element width the scan gave a chunk (None: no file holds it).
    pub fn width(&self, id: &Id) -> Option<u8> {
        self.chunks.get(id).map(|p| p.width)
    }

    /// A chunk's bytes read back from its file and checked against its id
    /// (None: no file holds it).
    pub fn read(&self, id: &Id) -> Option<Result<Vec<u8>, Unreadable<'_>>> {
        let place = self.chunks.get(id)?;
        let (path, file) = &self.files[place.file as usize];
        Some(read_checked(path, file, place.offset, place.len, id))
    }

    /// The chunks known, for tests.
    #[cfg(test)]
    pub fn ids(&self) -> Vec<Id> {
        self.chunks.keys().copied().collect()
    }
}

/// The `len` bytes of `file` (at `path`) from `offset`, if they still hash
/// to `id`.
pub(crate) fn read_checked<'a>(path: &'a Path, file: &File, offset: u64, len: u32, id: &Id) -> Result<Vec<u8>, Unreadable<'a>> {
    let mut raw = vec![0; len as usize];
    match read_at(file, &mut raw, offset) {
        Err(e) => Err(Unreadable::Io(path, e)),
        Ok(()) if Id::of_chunk(&raw) != *id => Err(Unreadable::Changed(path)),
        Ok(()) => Ok(raw),
    }
}

/// Makes `to` share all of `from`'s bytes, where the filesystem can
/// (reflinks: XFS, Btrfs, bcachefs, ZFS): no byte is copied, and a later
/// write to `to` leaves `from` as it was. False where it cannot (ext4, or
/// another filesystem than `from`'s): nothing was changed then.
pub(crate) fn clone_file(from: &File, to: &File) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: both descriptors are open for the call; FICLONE reads
        // only the source descriptor it is given.
        unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (from, to);
        false
    }
}

/// Fills `buf` from `file` at `offset`.
#[cfg(unix)]
pub(crate) fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

/// Writes all of `buf` to `file` at `offset`.
#[cfg(unix)]
pub(crate) fn write_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

/// Fills `buf` from `file` at `offset`.
#[cfg(windows)]
pub(crate) fn read_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// Writes all of `buf` to `file` at `offset`.
#[cfg(windows)]
pub(crate) fn write_at(file: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_write(buf, offset)? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => {
                buf = &buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

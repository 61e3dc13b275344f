//! The SHA-256 of files, the name the Hugging Face Hub and Git LFS give
//! them, beside ferry's own (the root of the file's tree); and the Git LFS
//! objects each repository holds.
//!
//! One column family, three key spaces:
//! - `f` file id (32) -> SHA-256 (32)
//! - `s` SHA-256 (32) -> file id (32)
//! - `r` repository `\0` SHA-256 (32) -> file id (32): an LFS object
//!   uploaded to that repository. gc keeps these trees as it keeps a
//!   branch's, so an object stays readable through its repository whether
//!   or not a revision names it yet.
//!
//! A hash is recorded only after the file's bytes were hashed as they were
//! stored (never taken on a client's word).

use ferry_core::Id;
use rocksdb::{IteratorMode, WriteBatch};

use crate::write::{write, Durability};
use crate::{Result, Store, CF_FILE_SHA256};

/// A SHA-256 digest.
pub type Sha256 = [u8; 32];

fn key(space: u8, rest: &[&[u8]]) -> Vec<u8> {
    let mut k = vec![space];
    rest.iter().for_each(|r| k.extend_from_slice(r));
    k
}

fn lfs_key(repo: &str, sha: &Sha256) -> Vec<u8> {
    key(b'r', &[repo.as_bytes(), b"\0", sha])
}

impl Store {
    /// Records that the file `file_id` (stored) has this SHA-256.
    pub fn record_sha256(&self, file_id: &Id, sha: &Sha256) -> Result<()> {
        let cf = self.cf(CF_FILE_SHA256);
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, key(b'f', &[file_id.as_bytes()]), sha);
        batch.put_cf(cf, key(b's', &[sha]), file_id.as_bytes());
        write(&self.db, batch, Durability::Synced)
    }

    /// The SHA-256 of a file, if it was recorded.
    pub fn sha256_of(&self, file_id: &Id) -> Result<Option<Sha256>> {
        let v = self.db.get_pinned_cf(self.cf(CF_FILE_SHA256), key(b'f', &[file_id.as_bytes()]))?;
        Ok(v.and_then(|v| v.as_ref().try_into().ok()))
    }

    /// The stored file whose SHA-256 this is, if any.
    pub fn file_with_sha256(&self, sha: &Sha256) -> Result<Option<Id>> {
        let v = self.db.get_pinned_cf(self.cf(CF_FILE_SHA256), key(b's', &[sha]))?;
        let Some(id) = v.and_then(|v| Id::from_slice(&v)) else { return Ok(None) };
        // gc may have taken the file since.
        Ok(self.has_nodes(&[id])?.first().copied().unwrap_or(false).then_some(id))
    }

    /// Keeps the file `file_id` as Git LFS object `sha` of `repo` (synced:
    /// once this returns, an upload may be acknowledged). The file's data
    /// must already be durable (`Store::sync`).
    pub fn keep_lfs_object(&self, repo: &str, sha: &Sha256, file_id: &Id) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_FILE_SHA256), lfs_key(repo, sha), file_id.as_bytes());
        write(&self.db, batch, Durability::Synced)
    }

    /// The file that is Git LFS object `sha` of `repo`, if it was uploaded
    /// there.
    pub fn lfs_object(&self, repo: &str, sha: &Sha256) -> Result<Option<Id>> {
        let v = self.db.get_pinned_cf(self.cf(CF_FILE_SHA256), lfs_key(repo, sha))?;
        Ok(v.and_then(|v| Id::from_slice(&v)))
    }

    /// Lets go of every Git LFS object of `repo` (a deleted repository).
    pub(crate) fn forget_lfs_objects(&self, repo: &str) -> Result<()> {
        let prefix = key(b'r', &[repo.as_bytes(), b"\0"]);
        let cf = self.cf(CF_FILE_SHA256);
        let mut batch = WriteBatch::default();
        for item in self.db.prefix_iterator_cf(cf, &prefix) {
            let (k, _) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            batch.delete_cf(cf, &k);
        }
        write(&self.db, batch, Durability::Synced)
    }

    /// Every LFS object's file: roots for gc.
    pub(crate) fn lfs_roots(&self) -> Result<Vec<Id>> {
        let mut out = Vec::new();
        for item in self.db.prefix_iterator_cf(self.cf(CF_FILE_SHA256), b"r") {
            let (k, v) = item?;
            if !k.starts_with(b"r") {
                break;
            }
            out.extend(Id::from_slice(&v));
        }
        Ok(out)
    }

    /// Removes the hashes of files gc removed (`alive` says which remain).
    pub(crate) fn forget_hashes_of_removed(&self, alive: impl Fn(&Id) -> Result<bool>) -> Result<()> {
        let cf = self.cf(CF_FILE_SHA256);
        let mut batch = WriteBatch::default();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = item?;
            let file = match k.first() {
                Some(b'f') => Id::from_slice(&k[1..]),
                Some(b's') => Id::from_slice(&v),
                _ => continue,
            };
            if let Some(f) = file {
                if !alive(&f)? {
                    batch.delete_cf(cf, &k);
                }
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        write(&self.db, batch, Durability::Synced)
    }
}

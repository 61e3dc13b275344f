//! Files whole, as doors that speak HTTP move them: stored from a stream
//! (cut, deduplicated and hashed as they arrive), named by SHA-256 as Git
//! LFS and the Hugging Face Hub name them, and published as a revision.

use std::io::Read;

use ferry_core::revision::{revision_id, Entry, Revision};
use ferry_core::Id;
use ferry_proto::ErrorCode;
use ferry_store::Sha256;

use crate::{ServiceError, Session};

type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// A file stored from a stream.
#[derive(Debug, Clone, Copy)]
pub struct StoredFile {
    /// Its id (the root of its tree).
    pub file_id: Id,
    /// Its length.
    pub size: u64,
    /// Its SHA-256, computed from the bytes as they were stored.
    pub sha256: Sha256,
    /// Chunks the store did not hold before.
    pub new_chunks: u64,
}

/// Hashes what passes through it.
struct Sha256Reader<R> {
    inner: R,
    hash: ring::digest::Context,
}

impl<R: Read> Read for Sha256Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

impl Session {
    /// Stores a file read from `reader` for `repo` (which the caller must
    /// be able to write), keeping it from gc until the session ends, and
    /// records its SHA-256. Its tensors are stored as deltas against the
    /// same tensors of the repository's `main` head where that is smaller.
    pub fn store_file(&self, repo: &str, reader: impl Read + Send) -> Result<StoredFile> {
        self.check_write(repo)?;
        let store = self.store();
        let mut bases = self.service.delta_bases(repo)?;
        let session = store.write_session();
        let mut hashing = Sha256Reader { inner: reader, hash: ring::digest::Context::new(&ring::digest::SHA256) };
        let ingested = session.ingest_against(&mut hashing, bases.as_mut(), &())?;
        self.pins.with(|p| p.node(ingested.file_id));
        let sha256: Sha256 = hashing.hash.finish().as_ref().try_into().expect("SHA-256 is 32 bytes");
        drop(session);
        self.service.counters().chunks_received(ingested.new_chunks, ingested.chunks - ingested.new_chunks);
        store.record_sha256(&ingested.file_id, &sha256)?;
        self.admit(|a| a.file(&ingested.file_id));
        Ok(StoredFile { file_id: ingested.file_id, size: ingested.size, sha256, new_chunks: ingested.new_chunks })
    }

    /// Makes a file stored by this session Git LFS object `file.sha256` of
    /// `repo`, durably: once this returns the upload may be acknowledged.
    pub fn keep_lfs_object(&self, repo: &str, file: &StoredFile) -> Result<()> {
        self.check_write(repo)?;
        let store = self.store();
        store.sync()?;
        store.keep_lfs_object(repo, &file.sha256, &file.file_id)?;
        Ok(())
    }

    /// Whether `repo` holds LFS object `sha` of `size` bytes, for a writer
    /// about to upload it. An object the hub holds for another repository
    /// is added to this one without its bytes (writers learn what the hub
    /// holds, as with chunks: see the threat model).
    pub fn has_lfs_object(&self, repo: &str, sha: &Sha256, size: u64) -> Result<bool> {
        self.check_write(repo)?;
        let store = self.store();
        let _session = store.write_session();
        if let Some(file) = store.lfs_object(repo, sha)? {
            if store.has_nodes(&[file])?[0] {
                return Ok(self.file_size(&file)? == size);
            }
        }
        match store.file_with_sha256(sha)? {
            Some(file) if self.file_size(&file)? == size => {
                store.keep_lfs_object(repo, sha, &file)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// LFS object `sha` of `repo` for a reader: an object uploaded there,
    /// or a file of a revision in the repository's history with that
    /// SHA-256. The entry it returns may be read with `read_file`.
    pub fn lfs_object(&self, repo: &str, sha: &Sha256) -> Result<Entry> {
        self.check_read(repo)?;
        let store = self.store();
        let missing = || ServiceError::new(ErrorCode::NotFound, format!("{repo} has no object {}", hex::encode(sha)));
        let file = match store.lfs_object(repo, sha)? {
            Some(file) => file,
            None => {
                let file = store.file_with_sha256(sha)?.ok_or_else(missing)?;
                if !self.in_history(repo, &file)? {
                    return Err(missing());
                }
                file
            }
        };
        if !store.has_nodes(&[file])?[0] {
            return Err(missing());
        }
        self.admit(|a| a.file(&file));
        Ok(Entry { path: hex::encode(sha), file_id: file, size: self.file_size(&file)?, executable: false })
    }

    /// The SHA-256 of a file, if it is known (files stored through an
    /// HTTP door; pushed or mirrored ones once a hub's backfill hashed
    /// them).
    pub fn sha256_of(&self, file_id: &Id) -> Result<Option<Sha256>> {
        Ok(self.store().sha256_of(file_id)?)
    }

    /// Publishes a revision of `repo` on `branch` from `expected` (the
    /// parent) with `entries`, by compare-and-swap, authored by the
    /// caller's token; returns it with its id.
    pub fn commit_files(&self, repo: &str, branch: &str, expected: Option<Id>, message: &str, entries: Vec<Entry>) -> Result<(Id, Revision)> {
        let author = match self.grant() {
            crate::Grant::Token(id) => format!("token {id}"),
            crate::Grant::Anonymous => "anonymous".to_owned(),
            crate::Grant::Trusted => "hub".to_owned(),
        };
        let now = ferry_core::time::unix_now();
        let revision = Revision::new(expected.into_iter().collect(), author, now, message.to_owned(), entries)
            .map_err(|e| ServiceError::new(ErrorCode::BadRequest, e.to_string()))?;
        let bytes = revision.encode();
        let id = revision_id(&bytes);
        self.update_branch(repo, branch, expected, id, &[bytes])?;
        self.admit(|a| a.revision(&id, &revision));
        Ok((id, revision))
    }

    /// Deletes `branch` of `repo` if it is still at `expected` (a tag
    /// only with an admin token).
    pub fn delete_branch(&self, repo: &str, branch: &str, expected: Id) -> Result<()> {
        if ferry_store::is_tag(branch) {
            self.check_admin(repo, "deleting a tag")?;
        } else {
            self.check_write(repo)?;
        }
        self.store().update_branch(repo, branch, Some(expected), None)?;
        self.audit("delete", repo, &[(branch, Some(expected), None)])
    }

    /// Deletes `repo` with its branches and tags (admin only); returns the
    /// branches deleted with their heads.
    pub fn delete_repo(&self, repo: &str) -> Result<Vec<(String, Id)>> {
        self.check_admin(repo, "deleting the repository")?;
        let deleted = match self.store().delete_repo(repo) {
            Err(ferry_store::StoreError::UnknownRepo(_)) => return Err(ServiceError::repo_not_found(repo)),
            other => other?,
        };
        let changes: Vec<(&str, Option<Id>, Option<Id>)> = deleted.iter().map(|(b, head)| (b.as_str(), Some(*head), None)).collect();
        self.audit("delete-repo", repo, &changes)?;
        Ok(deleted)
    }

    /// Which of these revisions `repo` forgot; a revision outside the
    /// repository's history answers false, as one it never held.
    pub fn forgotten(&self, repo: &str, ids: &[Id]) -> Result<Vec<bool>> {
        self.check_read(repo)?;
        let gone = self.store().forgotten(repo, ids)?;
        ids.iter().zip(gone).map(|(id, gone)| Ok(gone && self.admit_revision(repo, id)?)).collect()
    }

    /// Forgets revisions of `repo`: their records stay, their files no
    /// longer keep data from gc. One in the repository's history needs an
    /// admin token, and a branch or tag head is never forgotten; a writer
    /// may name revisions it is about to send that its source forgot.
    pub fn forget(&self, repo: &str, ids: &[Id]) -> Result<()> {
        self.check_write(repo)?;
        let heads: Vec<Id> = self.store().branches(repo)?.into_iter().map(|b| b.1).collect();
        if let Some(head) = ids.iter().find(|id| heads.contains(id)) {
            return Err(ServiceError::new(ErrorCode::BadRequest, format!("{} is the head of a branch or tag of {repo}: delete that first", head.short())));
        }
        let mut in_history = Vec::new();
        for id in ids {
            if self.admit_revision(repo, id)? {
                in_history.push(*id);
            }
        }
        if !in_history.is_empty() {
            self.check_admin(repo, "forgetting revisions")?;
        }
        self.store().mark_forgotten(repo, ids)?;
        let changes: Vec<(&str, Option<Id>, Option<Id>)> = in_history.iter().map(|id| ("", Some(*id), None)).collect();
        self.audit("forget", repo, &changes)
    }

    fn file_size(&self, file: &Id) -> Result<u64> {
        Ok(self.store().node(file)?.size())
    }

    /// Whether a revision in the history of `repo` names `file`.
    fn in_history(&self, repo: &str, file: &Id) -> Result<bool> {
        let heads: Vec<Id> = self.store().branches(repo)?.into_iter().map(|b| b.1).collect();
        let mut found = false;
        self.store().walk_history(&heads, &[], usize::MAX, |_, rev| {
            found |= rev.entries.iter().any(|e| e.file_id == *file);
            Ok::<_, ServiceError>(())
        })?;
        Ok(found)
    }
}

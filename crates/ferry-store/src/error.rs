use std::path::PathBuf;

use ferry_core::{FormatError, Id};

/// Everything that can go wrong in the store, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no ferry store at {0} (create one with `ferry init`)")]
    NotAStore(PathBuf),
    #[error("a ferry store already exists at {0}")]
    AlreadyExists(PathBuf),
    #[error("the store at {0} is in use by another ferry process; wait for it to finish and retry")]
    Locked(PathBuf),
    #[error("the store at {path} has format version {found}; this ferry reads version {v} (use a matching ferry)", v = crate::FORMAT_VERSION)]
    UnknownFormat { path: PathBuf, found: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {kind}; ferry stores regular files only{hint}")]
    Unsupported { path: PathBuf, kind: &'static str, hint: &'static str },
    #[error("{0}")]
    Format(#[from] FormatError),
    #[error("unknown repository {0:?}")]
    UnknownRepo(String),
    #[error("{0}")]
    UnknownRevision(String),
    #[error("branch {branch:?} of {repo} moved to {actual} while this change was based on {expected}; nothing was lost — pull or re-run to base the change on the new head")]
    Conflict { repo: String, branch: String, expected: String, actual: String },
    #[error("{what} {name:?} differs only in case from the existing {what} {existing:?}; use that one or a name that differs in more than case")]
    CaseClash { what: &'static str, name: String, existing: String },
    #[error("chunk {0} is missing from the store (run `ferry fsck`)")]
    MissingChunk(Id),
    #[error("tree node {0} is missing from the store (run `ferry fsck`)")]
    MissingNode(Id),
    #[error("incomplete: {0}")]
    Incomplete(String),
    #[error("stored {what} {id} is corrupt: {detail} (run `ferry fsck`)")]
    Corrupt { what: &'static str, id: Id, detail: String },
    #[error("file {path:?} does not check out: {detail}; nothing was written")]
    Verify { path: String, detail: String },
    #[error("range {start}..{end} is outside {path:?} ({size} bytes)")]
    BadRange { path: String, start: u64, end: u64, size: u64 },
    #[error("database error: {0}")]
    Db(#[from] rocksdb::Error),
}

impl StoreError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        StoreError::Io { path: path.to_owned(), source }
    }
}

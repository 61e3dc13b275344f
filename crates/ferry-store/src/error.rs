use std::path::PathBuf;

use ferry_core::{FormatError, Id};

/// Everything that can go wrong in the store, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory holds no store.
    #[error("no ferry store at {0} (create one with `ferry init`)")]
    NotAStore(PathBuf),
    /// `init` found a store already there.
    #[error("a ferry store already exists at {0}")]
    AlreadyExists(PathBuf),
    /// Another process has the store open.
    #[error("the store at {0} is in use by another ferry process; wait for it to finish and retry")]
    Locked(PathBuf),
    /// The store has a format version or backend this build cannot open.
    #[error("the store at {path} has format version {found}; this ferry reads version {v} (use a matching ferry)", v = crate::FORMAT_VERSION)]
    UnknownFormat {
        /// The store's directory.
        path: PathBuf,
        /// What it holds instead.
        found: String,
    },
    /// Reading or writing a file outside the database failed. (The cause
    /// is in the message, not an error source, so that it is said once.)
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        error: std::io::Error,
    },
    /// A file of a kind ferry does not store (a device, a socket, a symlink).
    #[error("{path}: {kind}; ferry stores regular files only{hint}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What kind of file it is.
        kind: &'static str,
        /// What to do instead (may be empty).
        hint: &'static str,
    },
    /// An object failed to decode or to hash to its id.
    #[error("{0}")]
    Format(#[from] FormatError),
    /// No repository of that name.
    #[error("unknown repository {0:?}")]
    UnknownRepo(String),
    /// A revision spec named nothing, or more than one revision.
    #[error("{0}")]
    UnknownRevision(String),
    /// A branch moved since the writer read it (compare-and-swap failed).
    #[error("branch {branch:?} of {repo} moved to {actual} while this change was based on {expected}; nothing was lost — pull or re-run to base the change on the new head")]
    Conflict {
        /// The repository.
        repo: String,
        /// The branch.
        branch: String,
        /// The head the writer started from.
        expected: String,
        /// The head it found.
        actual: String,
    },
    /// A new repository or branch name equals an existing one but for case.
    #[error("{what} {name:?} differs only in case from the existing {what} {existing:?}; use that one or a name that differs in more than case")]
    CaseClash {
        /// `repository` or `branch`.
        what: &'static str,
        /// The name asked for.
        name: String,
        /// The name that exists.
        existing: String,
    },
    /// A chunk a tree names is not stored.
    #[error("chunk {0} is missing from the store (run `ferry fsck`)")]
    MissingChunk(Id),
    /// A tree node a revision or node names is not stored.
    #[error("tree node {0} is missing from the store (run `ferry fsck`)")]
    MissingNode(Id),
    /// Objects arrived without what they reference.
    #[error("incomplete: {0}")]
    Incomplete(String),
    /// A stored object failed its check on read.
    #[error("stored {what} {id} is corrupt: {detail} (run `ferry fsck`)")]
    Corrupt {
        /// The kind of object (chunk, tree node, revision).
        what: &'static str,
        /// Its id.
        id: Id,
        /// What failed.
        detail: String,
    },
    /// A file read back does not rebuild its tree.
    #[error("file {path:?} does not check out: {detail}; nothing was written")]
    Verify {
        /// The file's path in its revision.
        path: String,
        /// What disagreed.
        detail: String,
    },
    /// A byte range outside the file.
    #[error("range {start}..{end} is outside {path:?} ({size} bytes)")]
    BadRange {
        /// The file's path in its revision.
        path: String,
        /// First byte asked for.
        start: u64,
        /// One past the last byte asked for.
        end: u64,
        /// The file's size.
        size: u64,
    },
    /// The chunk backend failed (its message is part of this one, not a
    /// separate cause, so an error chain names it once).
    #[error("chunk backend: {0}")]
    Backend(crate::BackendError),
    /// RocksDB failed.
    #[error("database error: {0}")]
    Db(#[from] rocksdb::Error),
}

impl From<crate::BackendError> for StoreError {
    fn from(e: crate::BackendError) -> Self {
        StoreError::Backend(e)
    }
}

impl StoreError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        StoreError::Io { path: path.to_owned(), error: source }
    }
}

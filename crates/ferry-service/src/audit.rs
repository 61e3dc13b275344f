//! The hub's audit log: every branch and tag moved or deleted, every
//! repository deleted and every revision forgotten through a door, with
//! who did it (the token's id), from where and when. One JSON object per
//! line in `<store>/hub-audit.jsonl`, appended and synced after the change
//! and before the caller is told it happened; `ferry audit` reads it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::{Grant, ServiceError};

/// One change, as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Unix seconds.
    pub time: i64,
    /// `move` (a branch or tag created or moved), `delete` (one deleted),
    /// `delete-repo`, or `forget` (a revision, in `old`).
    pub action: String,
    /// The repository.
    pub repo: String,
    /// The branch or tag (`tags/...`); empty for `forget`.
    #[serde(default)]
    pub branch: String,
    /// The head before, hex (None: the branch was created).
    pub old: Option<String>,
    /// The head after, hex (None: deleted).
    pub new: Option<String>,
    /// Who: a token's id, or `anonymous`.
    pub token: String,
    /// The caller's address, if it came through a network door.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// Where a store keeps its audit log.
pub fn audit_path(store: &Path) -> PathBuf {
    store.join("hub-audit.jsonl")
}

/// Who a grant is, as the log names it.
pub(crate) fn who(grant: &Grant) -> String {
    match grant {
        Grant::Token(id) => id.clone(),
        Grant::Anonymous => "anonymous".into(),
        Grant::Trusted => "hub".into(),
    }
}

/// The log a hub appends to (opened at the first entry).
pub(crate) struct AuditLog {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
}

impl AuditLog {
    pub(crate) fn new(store: &Path) -> AuditLog {
        AuditLog { path: audit_path(store), file: Mutex::new(None) }
    }

    /// Appends `entries` and syncs them, once. A change already made is not
    /// undone if this fails; the caller is told the log could not be
    /// written.
    pub(crate) fn record(&self, entries: &[AuditEntry]) -> Result<(), ServiceError> {
        let fail = |e: std::io::Error| ServiceError::internal(format!("the change was made, but the audit log {} cannot be written: {e}", self.path.display()));
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if file.is_none() {
            use std::os::unix::fs::OpenOptionsExt;
            *file = Some(std::fs::OpenOptions::new().append(true).create(true).mode(0o600).open(&self.path).map_err(fail)?);
        }
        let f = file.as_mut().expect("opened above");
        let mut lines = Vec::new();
        for entry in entries {
            serde_json::to_writer(&mut lines, entry).expect("serializable");
            lines.push(b'\n');
        }
        f.write_all(&lines).map_err(fail)?;
        f.sync_data().map_err(fail)
    }
}

/// The entries of the store at `store`, oldest first (none yet: empty).
/// A line that does not parse (a torn last line after a crash) is skipped.
pub fn read_audit_log(store: &Path) -> Result<Vec<AuditEntry>, ServiceError> {
    let path = audit_path(store);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ServiceError::internal(format!("{}: {e}", path.display()))),
    };
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

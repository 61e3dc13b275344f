//! Journal entries: the store's synced metadata writes (revisions, branch
//! moves) as a backend that is the source of truth keeps them, so that a
//! store can be rebuilt from the backend alone. The encoding is normative in
//! `protocol/store.md` §6.

use ferry_core::revision::revision_id;
use ferry_core::{invalid, FormatError, Id, Reader};

/// A branch move: the head `branch` of `repo` moved to (None: deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchMove {
    /// The change feed's sequence number of this move.
    pub seq: u64,
    /// The repository.
    pub repo: String,
    /// The branch.
    pub branch: String,
    /// The new head; None when the branch was deleted.
    pub head: Option<Id>,
    /// When the repository was created, if this move created it (Unix
    /// seconds; 0 otherwise).
    pub created: i64,
}

/// One synced metadata write: revisions stored, and perhaps a branch moved
/// in the same write; or revisions forgotten (retention).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JournalEntry {
    /// Encoded revisions (`tree.md`), parents before children.
    pub revisions: Vec<Vec<u8>>,
    /// The branch move written with them, if any.
    pub branch: Option<BranchMove>,
    /// Revisions forgotten: (repository, revision).
    pub forgotten: Vec<(String, Id)>,
}

const MAGIC: &[u8; 4] = b"FJNL";
/// Version 1 has no forgotten revisions; an entry with none is written as
/// version 1, so that each entry has one encoding.
const VERSION: u8 = 1;
const VERSION_FORGOTTEN: u8 = 2;
/// Revisions in one entry (a push of a long history is split by the
/// sender long before this).
pub const MAX_JOURNAL_REVISIONS: usize = 1 << 16;
/// Bytes of one entry.
pub const MAX_JOURNAL_LEN: usize = 256 << 20;
/// Bytes of a repository or branch name in an entry (the naming rules
/// allow less).
const MAX_NAME_LEN: usize = 1024;

impl JournalEntry {
    /// The entry's bytes (`protocol/store.md` §6).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC);
        b.push(if self.forgotten.is_empty() { VERSION } else { VERSION_FORGOTTEN });
        match &self.branch {
            None => b.push(0),
            Some(m) => {
                b.push(1);
                b.extend_from_slice(&m.seq.to_le_bytes());
                for name in [&m.repo, &m.branch] {
                    b.extend_from_slice(&(name.len() as u32).to_le_bytes());
                    b.extend_from_slice(name.as_bytes());
                }
                match &m.head {
                    Some(id) => {
                        b.push(1);
                        b.extend_from_slice(id.as_bytes());
                    }
                    None => b.push(0),
                }
                b.extend_from_slice(&m.created.to_le_bytes());
            }
        }
        b.extend_from_slice(&(self.revisions.len() as u32).to_le_bytes());
        for r in &self.revisions {
            b.extend_from_slice(&(r.len() as u32).to_le_bytes());
            b.extend_from_slice(r);
        }
        if !self.forgotten.is_empty() {
            b.extend_from_slice(&(self.forgotten.len() as u32).to_le_bytes());
            for (repo, id) in &self.forgotten {
                b.extend_from_slice(&(repo.len() as u32).to_le_bytes());
                b.extend_from_slice(repo.as_bytes());
                b.extend_from_slice(id.as_bytes());
            }
        }
        b
    }

    /// Decodes an entry from untrusted bytes: every length is checked
    /// against its limit and what remains, names against ferry's naming
    /// rules; the revisions themselves are decoded and hashed by whoever
    /// stores them.
    pub fn decode(b: &[u8]) -> Result<JournalEntry, FormatError> {
        if b.len() > MAX_JOURNAL_LEN {
            return Err(FormatError::TooLarge { what: "journal entry", len: b.len() as u64, limit: MAX_JOURNAL_LEN as u64 });
        }
        let mut r = Reader::new("journal entry", b);
        if r.take(4)? != MAGIC {
            return Err(invalid("journal entry", "bad magic"));
        }
        let version = r.u8()?;
        if version != VERSION && version != VERSION_FORGOTTEN {
            return Err(invalid("journal entry", format!("version {version}, this ferry reads {VERSION} and {VERSION_FORGOTTEN}")));
        }
        let branch = match r.u8()? {
            0 => None,
            1 => {
                let seq = r.u64()?;
                let repo = r.string("repository name", MAX_NAME_LEN)?.to_owned();
                let branch = r.string("branch name", MAX_NAME_LEN)?.to_owned();
                ferry_core::names::check_repo_name(&repo)?;
                ferry_core::names::check_branch_name(&branch)?;
                let head = match r.u8()? {
                    0 => None,
                    1 => Some(r.id()?),
                    f => return Err(invalid("journal entry", format!("head flag {f}"))),
                };
                let created = r.i64()?;
                Some(BranchMove { seq, repo, branch, head, created })
            }
            f => return Err(invalid("journal entry", format!("branch flag {f}"))),
        };
        let count = r.u32()? as usize;
        if count > MAX_JOURNAL_REVISIONS || count > r.remaining() / 4 {
            return Err(FormatError::TooLarge { what: "journal revisions", len: count as u64, limit: MAX_JOURNAL_REVISIONS as u64 });
        }
        let mut revisions = Vec::with_capacity(count);
        for _ in 0..count {
            revisions.push(r.bytes("revision", MAX_JOURNAL_LEN)?.to_vec());
        }
        let mut forgotten = Vec::new();
        if version == VERSION_FORGOTTEN {
            let count = r.u32()? as usize;
            // At least one (else the entry is version 1), each at least a
            // length and an id.
            if count == 0 || count > MAX_JOURNAL_REVISIONS || count > r.remaining() / 36 {
                return Err(invalid("journal entry", format!("{count} forgotten revisions")));
            }
            for _ in 0..count {
                let repo = r.string("repository name", MAX_NAME_LEN)?.to_owned();
                ferry_core::names::check_repo_name(&repo)?;
                forgotten.push((repo, r.id()?));
            }
        }
        r.finish()?;
        Ok(JournalEntry { revisions, branch, forgotten })
    }

    /// The ids of the entry's revisions.
    pub fn revision_ids(&self) -> Vec<Id> {
        self.revisions.iter().map(|r| revision_id(r)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_every_truncation_is_refused() {
        let e = JournalEntry {
            forgotten: Vec::new(),
            revisions: vec![b"rev-a".to_vec(), Vec::new()],
            branch: Some(BranchMove { seq: 7, repo: "org/model".into(), branch: "main".into(), head: Some(Id::of_chunk(b"x")), created: 1_700_000_000 }),
        };
        let enc = e.encode();
        assert_eq!(JournalEntry::decode(&enc).unwrap(), e);
        for cut in 0..enc.len() {
            assert!(JournalEntry::decode(&enc[..cut]).is_err(), "a cut at {cut} decoded");
        }
        let mut long = enc.clone();
        long.push(0);
        assert!(JournalEntry::decode(&long).is_err());
        let plain = JournalEntry { revisions: vec![b"r".to_vec()], branch: None, forgotten: Vec::new() };
        assert_eq!(JournalEntry::decode(&plain.encode()).unwrap(), plain);
        let forgot = JournalEntry { forgotten: vec![("org/m".into(), Id::of_chunk(b"y"))], ..Default::default() };
        let enc = forgot.encode();
        assert_eq!((enc[4], JournalEntry::decode(&enc).unwrap()), (2, forgot));
        for cut in 0..enc.len() {
            assert!(JournalEntry::decode(&enc[..cut]).is_err(), "a cut at {cut} decoded");
        }
        // Version 2 with no forgotten revision is refused: one encoding each.
        let mut empty = plain.encode();
        empty[4] = 2;
        empty.extend_from_slice(&0u32.to_le_bytes());
        assert!(JournalEntry::decode(&empty).is_err());
    }
}

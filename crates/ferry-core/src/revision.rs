//! Revisions: a snapshot of a repository's files with its history.
//!
//! ```text
//! revision := "FRV1"
//!             parent_count:u8 (<= 16)  parent_id:32 * parent_count
//!             author:str  time:i64 LE (unix seconds)  message:str
//!             entry_count:u32 (<= 10,000,000)
//!             entry * entry_count, sorted by path bytes, no duplicates
//! entry    := path:str  file_id:32  size:u64 LE  mode:u8 (bit 0: executable)
//! str      := len:u32 LE  UTF-8 bytes
//! id       := BLAKE3 derive_key("ferry 2026-11 revision v1", revision)
//! ```
//!
//! Normative: `protocol/tree.md`, section 4 (which also states the path
//! rules that [`Revision::new`] and [`Revision::decode`] enforce).

use crate::names::{check_path, MAX_PATH_LEN};
use crate::{invalid, put_bytes, FormatError, Id, Reader};

const MAGIC: &[u8; 4] = b"FRV1";
const KEY_CONTEXT: &str = "ferry 2026-11 revision v1";
/// Most parents of one revision (a merge of up to 16 lines of history).
pub const MAX_PARENTS: usize = 16;
/// Longest author, in bytes.
pub const MAX_AUTHOR_LEN: usize = 1024;
/// Longest message, in bytes.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;
/// Most files in one revision. (One revision must also fit in one wire
/// frame to be pushed: see `ARCHITECTURE.md`, "Known limits".)
pub const MAX_ENTRIES: usize = 10_000_000;
/// The `mode` bit for an executable file; every other bit must be 0.
pub const MODE_EXECUTABLE: u8 = 1;

/// One file of a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where the file is, relative to the revision's root (the rules of
    /// [`check_path`]).
    pub path: String,
    /// The root of the file's content-defined tree.
    pub file_id: Id,
    /// The file's length in bytes (the size of its tree's root).
    pub size: u64,
    /// Whether the file is executable (mode bit 0).
    pub executable: bool,
}

/// A snapshot of a repository's files and the revisions it follows.
///
/// Its id is the hash of its encoding, so changing any field makes another
/// revision. Build one with [`Revision::new`] (or [`Revision::decode`]),
/// which check every rule of the format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// The revisions this one follows (none for a first revision, several
    /// for a merge); at most [`MAX_PARENTS`].
    pub parents: Vec<Id>,
    /// Who made it, free text of at most [`MAX_AUTHOR_LEN`] bytes.
    pub author: String,
    /// When it was made, in Unix seconds.
    pub time: i64,
    /// What changed and why, at most [`MAX_MESSAGE_LEN`] bytes.
    pub message: String,
    /// Sorted by path; `Revision::new` sorts and checks them.
    pub entries: Vec<Entry>,
}

impl Revision {
    /// Builds a revision, sorting its entries and checking every rule the
    /// decoder checks, so that what we write we can read back.
    pub fn new(parents: Vec<Id>, author: String, time: i64, message: String, mut entries: Vec<Entry>) -> Result<Revision, FormatError> {
        entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        let rev = Revision { parents, author, time, message, entries };
        rev.validate()?;
        Ok(rev)
    }

    fn validate(&self) -> Result<(), FormatError> {
        let limit = |what, len: usize, limit: usize| {
            if len > limit {
                Err(FormatError::TooLarge { what, len: len as u64, limit: limit as u64 })
            } else {
                Ok(())
            }
        };
        limit("revision parents", self.parents.len(), MAX_PARENTS)?;
        limit("revision author", self.author.len(), MAX_AUTHOR_LEN)?;
        limit("revision message", self.message.len(), MAX_MESSAGE_LEN)?;
        limit("revision entries", self.entries.len(), MAX_ENTRIES)?;
        let mut paths = std::collections::HashSet::with_capacity(self.entries.len());
        for (i, e) in self.entries.iter().enumerate() {
            check_path(&e.path)?;
            if i > 0 && self.entries[i - 1].path.as_bytes() >= e.path.as_bytes() {
                return Err(invalid("revision", format!("paths are not sorted and unique at {:?}", e.path)));
            }
            paths.insert(e.path.as_str());
        }
        // A path cannot be both a file and a directory.
        for e in &self.entries {
            let mut p = e.path.as_str();
            while let Some((dir, _)) = p.rsplit_once('/') {
                if paths.contains(dir) {
                    return Err(invalid("revision", format!("{dir:?} is both a file and the directory of {:?}", e.path)));
                }
                p = dir;
            }
        }
        self.check_case_clashes()
    }

    /// On a case-insensitive file system (macOS, Windows by default) paths
    /// that differ only in the case of ASCII letters name one file, and an
    /// export there would write one over the other: such a revision is
    /// refused, naming both paths. Only ASCII letters are folded, so that
    /// the rule cannot change with Unicode versions (see protocol/tree.md).
    fn check_case_clashes(&self) -> Result<(), FormatError> {
        use std::borrow::Cow;
        use std::collections::HashMap;
        if !self.entries.iter().any(|e| e.path.bytes().any(|b| b.is_ascii_uppercase())) {
            return Ok(()); // folding changes nothing; the exact checks above suffice
        }
        let clash = |a: &str, b: &str| invalid("revision", format!("{a:?} and {b:?} differ only in case: on a case-insensitive file system they are one file"));
        let mut files: HashMap<Cow<'_, str>, &str> = HashMap::with_capacity(self.entries.len());
        for e in &self.entries {
            if let Some(other) = files.insert(fold(&e.path), &e.path) {
                return Err(clash(other, &e.path));
            }
        }
        for e in &self.entries {
            let folded = fold(&e.path);
            let mut p: &str = &folded;
            while let Some((dir, _)) = p.rsplit_once('/') {
                if let Some(file) = files.get(dir) {
                    let dir_as_named = &e.path[..dir.len()];
                    return Err(invalid(
                        "revision",
                        format!(
                            "file {file:?} and directory {dir_as_named:?} (of {:?}) differ only in case: on a case-insensitive file system they clash",
                            e.path
                        ),
                    ));
                }
                p = dir;
            }
        }
        Ok(())
    }

    /// The canonical encoding (the bytes that are stored, sent and hashed).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.entries.len() * 96);
        out.extend_from_slice(MAGIC);
        out.push(self.parents.len() as u8);
        for p in &self.parents {
            out.extend_from_slice(p.as_bytes());
        }
        put_bytes(&mut out, self.author.as_bytes());
        out.extend_from_slice(&self.time.to_le_bytes());
        put_bytes(&mut out, self.message.as_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            put_bytes(&mut out, e.path.as_bytes());
            out.extend_from_slice(e.file_id.as_bytes());
            out.extend_from_slice(&e.size.to_le_bytes());
            out.push(if e.executable { MODE_EXECUTABLE } else { 0 });
        }
        out
    }

    /// The revision's id: [`revision_id`] of its encoding.
    pub fn id(&self) -> Id {
        revision_id(&self.encode())
    }

    /// Decodes an untrusted revision, enforcing every rule of the format.
    pub fn decode(bytes: &[u8]) -> Result<Revision, FormatError> {
        let mut r = Reader::new("revision", bytes);
        if r.take(4)? != MAGIC {
            return Err(invalid("revision", "does not start with FRV1"));
        }
        let n = r.u8()? as usize;
        if n > MAX_PARENTS {
            return Err(FormatError::TooLarge { what: "revision parents", len: n as u64, limit: MAX_PARENTS as u64 });
        }
        let parents = (0..n).map(|_| r.id()).collect::<Result<Vec<_>, _>>()?;
        let author = r.string("revision author", MAX_AUTHOR_LEN)?.to_owned();
        let time = r.i64()?;
        let message = r.string("revision message", MAX_MESSAGE_LEN)?.to_owned();
        let count = r.u32()? as usize;
        if count > MAX_ENTRIES {
            return Err(FormatError::TooLarge { what: "revision entries", len: count as u64, limit: MAX_ENTRIES as u64 });
        }
        // Each entry takes at least 46 bytes: never reserve more than the input can hold.
        let mut entries = Vec::with_capacity(count.min(r.remaining() / 46));
        for _ in 0..count {
            let path = r.string("path", MAX_PATH_LEN)?.to_owned();
            let file_id = r.id()?;
            let size = r.u64()?;
            let mode = r.u8()?;
            if mode & !MODE_EXECUTABLE != 0 {
                return Err(invalid("revision entry", format!("unknown mode bits {mode:#x} on {path:?}")));
            }
            entries.push(Entry { path, file_id, size, executable: mode & MODE_EXECUTABLE != 0 });
        }
        r.finish()?;
        let rev = Revision { parents, author, time, message, entries };
        rev.validate()?;
        Ok(rev)
    }

    /// Total bytes of all files.
    pub fn size(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    /// The file at exactly `path`, if the revision has one.
    pub fn entry(&self, path: &str) -> Option<&Entry> {
        self.entries.binary_search_by(|e| e.path.as_bytes().cmp(path.as_bytes())).ok().map(|i| &self.entries[i])
    }
}

/// `p` with ASCII letters lowercased (borrowed when that changes nothing).
fn fold(p: &str) -> std::borrow::Cow<'_, str> {
    if p.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(p.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(p)
    }
}

/// The id of an encoded revision: BLAKE3 in derive-key mode with the
/// context `"ferry 2026-11 revision v1"`, so it can never equal a chunk's or
/// a node's id. Used to verify a revision received as bytes before
/// decoding it.
pub fn revision_id(encoded: &[u8]) -> Id {
    let mut h = blake3::Hasher::new_derive_key(KEY_CONTEXT);
    h.update(encoded);
    Id(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> Entry {
        Entry { path: path.into(), file_id: Id::of_chunk(path.as_bytes()), size: 3, executable: path.ends_with(".sh") }
    }

    #[test]
    fn round_trip_sorts_entries_and_keeps_the_id() {
        let rev = Revision::new(vec![Id::of_chunk(b"p")], "ada".into(), 1_700_000_000, "step 1".into(), vec![entry("b/x.sh"), entry("a.json"), entry("b/y")])
            .unwrap();
        assert_eq!(rev.entries[0].path, "a.json");
        let enc = rev.encode();
        let back = Revision::decode(&enc).unwrap();
        assert_eq!(back, rev);
        assert_eq!(back.id(), rev.id());
        assert!(back.entry("b/x.sh").unwrap().executable);
    }

    #[test]
    fn hostile_revisions_are_refused() {
        assert!(Revision::new(vec![], "a".into(), 0, "m".into(), vec![entry("../etc/passwd")]).is_err());
        assert!(Revision::new(vec![], "a".into(), 0, "m".into(), vec![entry("a"), entry("a/b")]).is_err());
        assert!(Revision::new(vec![], "a".into(), 0, "m".into(), vec![entry("a"), entry("a")]).is_err());
        for bad in [["Model.bin", "model.bin"], ["README", "readme"], ["A/x", "a"], ["dir/Sub/f", "DIR/sub"]] {
            let err = Revision::new(vec![], "a".into(), 0, "m".into(), bad.iter().map(|p| entry(p)).collect()).unwrap_err().to_string();
            assert!(err.contains("differ only in case"), "{bad:?}: {err}");
        }
        // Different directories' files, and non-ASCII case, are not clashes.
        for good in [["A/x", "a/y"], ["É", "é"], ["a.bin", "b.BIN"]] {
            assert!(Revision::new(vec![], "a".into(), 0, "m".into(), good.iter().map(|p| entry(p)).collect()).is_ok(), "{good:?}");
        }
        let enc = Revision::new(vec![], "a".into(), 0, "m".into(), vec![entry("x")]).unwrap().encode();
        for cut in 0..enc.len() {
            assert!(Revision::decode(&enc[..cut]).is_err());
        }
        let mut lying = enc.clone();
        let count_at = enc.len() - (4 + 1 + 32 + 8 + 1) - 4;
        lying[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Revision::decode(&lying).is_err());
    }
}

//! Repositories, branches and revisions: the small, synced metadata.

use std::sync::atomic::Ordering;

use ferry_core::revision::Revision;
use ferry_core::tree::{node_id, Node};
use ferry_core::Id;
use rocksdb::{IteratorMode, WriteBatch};

use crate::journal::{BranchMove, JournalEntry};
use crate::write::{write, Durability};
use crate::{Result, Store, StoreError, CF_BRANCHES, CF_REF_LOG, CF_REPOS, CF_REVISIONS, CF_TREES};

/// Change-feed entries kept (about 50 bytes each).
const REF_LOG_KEEP: u64 = 1_000_000;
const REF_LOG_TRIM_EVERY: u64 = 4096;

/// Tags are branches under this prefix (`tags/v1.0`): they travel and
/// pin what they name as branches do; hubs let writers create them and only
/// admins move or delete them.
pub const TAG_PREFIX: &str = "tags/";

/// Whether a branch name is a tag's.
pub fn is_tag(branch: &str) -> bool {
    branch.starts_with(TAG_PREFIX)
}

/// Key of a branch: repository, NUL, branch name (neither may contain NUL).
pub(crate) fn branch_key(repo: &str, branch: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(repo.len() + 1 + branch.len());
    k.extend_from_slice(repo.as_bytes());
    k.push(0);
    k.extend_from_slice(branch.as_bytes());
    k
}

/// A repository's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoInfo {
    /// The repository's name (`org/name`).
    pub name: String,
    /// Unix seconds of its first revision.
    pub created: i64,
    /// Whether anyone may read it (set by the hub's access control).
    pub public: bool,
}

impl RepoInfo {
    /// Record layout: created:i64 LE, flags:u8 (bit 0: public).
    pub(crate) fn new_record(created: i64) -> Vec<u8> {
        let mut v = created.to_le_bytes().to_vec();
        v.push(0);
        v
    }
    fn decode(name: String, b: &[u8]) -> RepoInfo {
        let created = b.get(..8).and_then(|x| x.try_into().ok()).map_or(0, i64::from_le_bytes);
        RepoInfo { name, created, public: b.get(8).is_some_and(|f| f & 1 != 0) }
    }
}

/// What `repo@rev` names: a branch (default `main`), a tag (`v1` for
/// `tags/v1`), or a revision id or a unique prefix of one (at least 8 hex
/// digits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionSpec {
    /// The repository.
    pub repo: String,
    /// The branch, revision id or id prefix after `@` (`main` if none).
    pub rev: String,
}

impl RevisionSpec {
    /// Parses `repo` or `repo@rev`, checking the repository name.
    pub fn parse(s: &str) -> Result<RevisionSpec> {
        let (repo, rev) = s.split_once('@').unwrap_or((s, "main"));
        ferry_core::names::check_repo_name(repo)?;
        Ok(RevisionSpec { repo: repo.into(), rev: rev.into() })
    }
}

/// A branch compare-and-swap that did happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchUpdate {
    /// The head before (None: the branch was created).
    pub old: Option<Id>,
    /// The head after (None: the branch was deleted).
    pub new: Option<Id>,
}

impl Store {
    /// The head of a branch, if it exists.
    pub fn branch(&self, repo: &str, branch: &str) -> Result<Option<Id>> {
        let v = self.db.get_pinned_cf(self.cf(CF_BRANCHES), branch_key(repo, branch))?;
        Ok(v.and_then(|v| Id::from_slice(&v)))
    }

    /// The branches of a repository, by name.
    pub fn branches(&self, repo: &str) -> Result<Vec<(String, Id)>> {
        let prefix = branch_key(repo, "");
        let mut out = Vec::new();
        for item in self.db.prefix_iterator_cf(self.cf(CF_BRANCHES), &prefix) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            if let Some(id) = Id::from_slice(&v) {
                out.push((name, id));
            }
        }
        Ok(out)
    }

    /// Deletes a repository: every branch and tag (each a move to nothing,
    /// journaled and in the change feed), its Git LFS objects, and its
    /// record, which goes with its last branch. What only it reached is
    /// reclaimed by the next gc. Returns the branches deleted with their
    /// heads. A repository that gains a branch meanwhile survives with it.
    pub fn delete_repo(&self, repo: &str) -> Result<Vec<(String, Id)>> {
        self.repo(repo)?;
        let branches = self.branches(repo)?;
        self.forget_lfs_objects(repo)?;
        for (branch, head) in &branches {
            self.update_branch(repo, branch, Some(*head), None)?;
        }
        Ok(branches)
    }

    /// Every branch of every repository: (repo, branch, head).
    pub fn all_branches(&self) -> Result<Vec<(String, String, Id)>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_BRANCHES), IteratorMode::Start) {
            let (k, v) = item?;
            let Some(nul) = k.iter().position(|&b| b == 0) else { continue };
            if let Some(id) = Id::from_slice(&v) {
                out.push((String::from_utf8_lossy(&k[..nul]).into_owned(), String::from_utf8_lossy(&k[nul + 1..]).into_owned(), id));
            }
        }
        Ok(out)
    }

    /// Moves a branch from `expected` to `new` (None deletes it), atomically.
    pub fn update_branch(&self, repo: &str, branch: &str, expected: Option<Id>, new: Option<Id>) -> Result<BranchUpdate> {
        ferry_core::names::check_repo_name(repo)?;
        ferry_core::names::check_branch_name(branch)?;
        let created = match &new {
            Some(n) => self.revision(n)?.time,
            None => 0,
        };
        self.swap_branch(Vec::new(), repo, branch, expected, new, created)?;
        Ok(BranchUpdate { old: expected, new })
    }

    /// The one place a branch moves: under the branch lock, if the branch is
    /// still at `expected`, keeps the move in the backend's journal, then
    /// writes `revisions` (the ones it needs), the new head (None deletes
    /// the branch), the repository's record if it is new (created at
    /// `created`), and a change-feed entry, in one synced write. A new
    /// repository or branch may not differ only in case from an existing
    /// one.
    pub(crate) fn swap_branch(&self, revisions: Vec<Vec<u8>>, repo: &str, branch: &str, expected: Option<Id>, new: Option<Id>, created: i64) -> Result<()> {
        let _cas = self.branch_lock.lock().unwrap_or_else(|p| p.into_inner());
        let head = self.branch(repo, branch)?;
        if head != expected {
            return Err(StoreError::Conflict {
                repo: repo.into(),
                branch: branch.into(),
                expected: expected.map_or("no branch".into(), |i| i.short()),
                actual: head.map_or("deleted".into(), |i| i.short()),
            });
        }
        if new.is_some() && self.db.get_pinned_cf(self.cf(CF_REPOS), repo)?.is_none() {
            self.refuse_case_twin("repository", CF_REPOS, b"", repo)?;
        }
        if new.is_some() && head.is_none() {
            self.refuse_case_twin("branch", CF_BRANCHES, &branch_key(repo, ""), branch)?;
        }
        let seq = self.ref_seq.load(Ordering::SeqCst) + 1;
        let entry =
            JournalEntry { revisions, branch: Some(BranchMove { seq, repo: repo.into(), branch: branch.into(), head: new, created }), forgotten: Vec::new() };
        self.backend.journal(&entry)?;
        crate::check::crash_point("move-journaled");
        self.write_journal_entry(&entry)
    }

    /// Stores revisions without moving a branch, journaled like a move.
    pub(crate) fn store_revisions(&self, revisions: Vec<Vec<u8>>) -> Result<()> {
        self.journal_and_write(&JournalEntry { revisions, ..Default::default() })
    }

    /// Keeps an entry without a branch move in the backend's journal, then
    /// writes it, under the branch lock (so entries are journaled in the
    /// order they are written).
    pub(crate) fn journal_and_write(&self, entry: &JournalEntry) -> Result<()> {
        let _cas = self.branch_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.backend.journal(entry)?;
        self.write_journal_entry(entry)
    }

    /// Writes what a journal entry says in one synced batch: its revisions,
    /// and for a branch move the head, the repository's record if the
    /// repository is new, and the change-feed entry. Idempotent, so an
    /// entry replayed from the backend may already be here.
    pub(crate) fn write_journal_entry(&self, entry: &JournalEntry) -> Result<()> {
        let mut batch = WriteBatch::default();
        for (id, enc) in entry.revision_ids().iter().zip(&entry.revisions) {
            batch.put_cf(self.cf(CF_REVISIONS), id.as_bytes(), enc);
        }
        for (repo, id) in &entry.forgotten {
            batch.put_cf(self.cf(crate::CF_FORGOTTEN), crate::retention::forgotten_key(repo, id), []);
        }
        if let Some(m) = &entry.branch {
            let key = branch_key(&m.repo, &m.branch);
            match &m.head {
                Some(id) => batch.put_cf(self.cf(CF_BRANCHES), key, id.as_bytes()),
                None => batch.delete_cf(self.cf(CF_BRANCHES), key),
            }
            if m.head.is_some() && self.db.get_pinned_cf(self.cf(CF_REPOS), &m.repo)?.is_none() {
                batch.put_cf(self.cf(CF_REPOS), &m.repo, RepoInfo::new_record(m.created));
            }
            // A repository exists while it has a branch.
            if m.head.is_none() && self.branches(&m.repo)?.iter().all(|(b, _)| *b == m.branch) {
                batch.delete_cf(self.cf(CF_REPOS), &m.repo);
            }
            batch.put_cf(self.cf(CF_REF_LOG), m.seq.to_be_bytes(), m.repo.as_bytes());
        }
        write(&self.db, batch, Durability::Synced)?;
        if let Some(m) = &entry.branch {
            let seq = m.seq;
            self.ref_seq.fetch_max(seq, Ordering::SeqCst);
            if seq.is_multiple_of(REF_LOG_TRIM_EVERY) && seq > REF_LOG_KEEP {
                // Older entries only serve mirrors that fell far behind; they
                // fall back to a full listing.
                let _ = self.db.delete_range_cf(self.cf(CF_REF_LOG), 0u64.to_be_bytes(), (seq - REF_LOG_KEEP).to_be_bytes());
            }
        }
        Ok(())
    }

    /// Refuses to create `name` beside a name that differs from it only in
    /// the case of ASCII letters (`org/M` beside `org/m`, `MAIN` beside
    /// `main`): people take such names for one another, but a token for
    /// one does not cover the other. `cf`'s keys under `prefix` are the
    /// existing names. Called under the branch lock, so two such names
    /// cannot be created at once.
    fn refuse_case_twin(&self, what: &'static str, cf: &str, prefix: &[u8], name: &str) -> Result<()> {
        for item in self.db.prefix_iterator_cf(self.cf(cf), prefix) {
            let (k, _) = item?;
            let Some(existing) = k.strip_prefix(prefix) else { break };
            if existing.eq_ignore_ascii_case(name.as_bytes()) && existing != name.as_bytes() {
                return Err(StoreError::CaseClash { what, name: name.into(), existing: String::from_utf8_lossy(existing).into_owned() });
            }
        }
        Ok(())
    }

    /// The change feed's position: the sequence number of the latest branch
    /// change (0 before any).
    pub fn ref_seq(&self) -> u64 {
        self.ref_seq.load(Ordering::SeqCst)
    }

    /// Repositories whose branches changed after change `since`, and the
    /// position they are complete up to; None when the feed no longer
    /// reaches back that far (list everything instead).
    pub fn ref_changes_since(&self, since: u64) -> Result<Option<(std::collections::BTreeSet<String>, u64)>> {
        let upto = self.ref_seq();
        let mut repos = std::collections::BTreeSet::new();
        if since >= upto {
            return Ok(Some((repos, upto)));
        }
        let cf = self.cf(CF_REF_LOG);
        let mut first = true;
        for item in self.db.iterator_cf(cf, IteratorMode::From(&(since + 1).to_be_bytes(), rocksdb::Direction::Forward)) {
            let (k, v) = item?;
            let seq = k.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(u64::MAX);
            if first && seq != since + 1 {
                return Ok(None);
            }
            first = false;
            if seq > upto {
                break;
            }
            repos.insert(String::from_utf8_lossy(&v).into_owned());
        }
        Ok(Some((repos, upto)))
    }

    /// Visits the change feed's entries after position `after` (each a
    /// position and the repository whose branch moved), oldest first or
    /// newest first, until `visit` returns false. Returns whether the kept
    /// feed reaches back to `after + 1` (else older entries are forgotten).
    pub fn visit_ref_log(&self, after: u64, newest_first: bool, mut visit: impl FnMut(u64, &str) -> bool) -> Result<bool> {
        let cf = self.cf(CF_REF_LOG);
        let from = (after + 1).to_be_bytes();
        let mut complete = after >= self.ref_seq();
        let iter = if newest_first {
            self.db.iterator_cf(cf, IteratorMode::End)
        } else {
            self.db.iterator_cf(cf, IteratorMode::From(&from, rocksdb::Direction::Forward))
        };
        for item in iter {
            let (k, v) = item?;
            let seq = k.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(u64::MAX);
            if seq <= after {
                complete = true;
                break;
            }
            if seq == after + 1 {
                complete = true;
            }
            if !visit(seq, &String::from_utf8_lossy(&v)) {
                break;
            }
        }
        Ok(complete)
    }

    /// Every repository, in name order.
    pub fn repos(&self) -> Result<Vec<RepoInfo>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_REPOS), IteratorMode::Start) {
            let (k, v) = item?;
            out.push(RepoInfo::decode(String::from_utf8_lossy(&k).into_owned(), &v));
        }
        Ok(out)
    }

    /// One repository's record (`UnknownRepo` if it has none).
    pub fn repo(&self, name: &str) -> Result<RepoInfo> {
        let v = self.db.get_pinned_cf(self.cf(CF_REPOS), name)?;
        v.map(|v| RepoInfo::decode(name.into(), &v)).ok_or_else(|| StoreError::UnknownRepo(name.into()))
    }

    /// A stored revision, verified against its id.
    pub fn revision(&self, id: &Id) -> Result<Revision> {
        let v = self
            .db
            .get_pinned_cf(self.cf(CF_REVISIONS), id.as_bytes())?
            .ok_or_else(|| StoreError::UnknownRevision(format!("no revision {id} in the store")))?;
        let actual = ferry_core::revision::revision_id(&v);
        if actual != *id {
            return Err(StoreError::Corrupt { what: "revision", id: *id, detail: format!("its bytes hash to {actual}") });
        }
        Revision::decode(&v).map_err(|e| StoreError::Corrupt { what: "revision", id: *id, detail: e.to_string() })
    }

    /// Whether the revision is stored.
    pub fn has_revision(&self, id: &Id) -> Result<bool> {
        Ok(self.db.get_pinned_cf(self.cf(CF_REVISIONS), id.as_bytes())?.is_some())
    }

    /// Resolves `repo@rev` to a revision.
    pub fn resolve(&self, spec: &RevisionSpec) -> Result<(Id, Revision)> {
        let (id, rev) = self.resolve_record(spec)?;
        if self.is_forgotten(&spec.repo, &id)? {
            return Err(StoreError::UnknownRevision(format!(
                "{}@{}: revision {} was forgotten (retention): its files are gone",
                spec.repo,
                spec.rev,
                id.short()
            )));
        }
        Ok((id, rev))
    }

    /// The revision `spec` names, forgotten or not.
    fn resolve_record(&self, spec: &RevisionSpec) -> Result<(Id, Revision)> {
        self.repo(&spec.repo)?;
        if let Some(id) = self.branch(&spec.repo, &spec.rev)? {
            return Ok((id, self.revision(&id)?));
        }
        if let Some(id) = self.branch(&spec.repo, &format!("{TAG_PREFIX}{}", spec.rev))? {
            return Ok((id, self.revision(&id)?));
        }
        let hex = spec.rev.to_ascii_lowercase();
        if hex.len() >= 8 && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let lo = hex::decode(if hex.len().is_multiple_of(2) { hex.clone() } else { format!("{hex}0") }).unwrap_or_default();
            let mut found = Vec::new();
            for item in self.db.iterator_cf(self.cf(CF_REVISIONS), IteratorMode::From(&lo, rocksdb::Direction::Forward)) {
                let (k, _) = item?;
                if !hex::encode(&k).starts_with(&hex) {
                    break;
                }
                found.extend(Id::from_slice(&k));
                if found.len() > 1 {
                    return Err(StoreError::UnknownRevision(format!("{} is ambiguous: more than one revision starts with it", spec.rev)));
                }
            }
            if let Some(id) = found.pop() {
                return Ok((id, self.revision(&id)?));
            }
        }
        Err(StoreError::UnknownRevision(format!("{}@{}: no such branch or revision", spec.repo, spec.rev)))
    }

    /// Encoded revisions breadth-first from `from` over parents, never
    /// returning or following one in `until`, at most `max`: what a source
    /// sends when the other side has `until`. Unknown ids are skipped.
    pub fn history(&self, from: &[Id], until: &[Id], max: usize) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        self.walk_history(from, until, max, |_, rev| {
            out.push(rev.encode());
            Ok::<_, StoreError>(())
        })?;
        Ok(out)
    }

    /// Like `history`, handing each revision (its id and itself) to `f` as
    /// it is read (an answer need not hold them all).
    pub fn walk_history<E: From<StoreError>>(&self, from: &[Id], until: &[Id], max: usize, mut f: impl FnMut(Id, &Revision) -> Result<(), E>) -> Result<(), E> {
        let until: std::collections::HashSet<&Id> = until.iter().collect();
        let mut seen = std::collections::HashSet::new();
        let mut queue: std::collections::VecDeque<Id> = from.iter().copied().collect();
        let mut sent = 0;
        while let Some(id) = queue.pop_front() {
            if sent >= max {
                break;
            }
            if until.contains(&id) || !seen.insert(id) {
                continue;
            }
            let rev = match self.revision(&id) {
                Ok(r) => r,
                Err(StoreError::UnknownRevision(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            queue.extend(rev.parents.iter().copied());
            sent += 1;
            f(id, &rev)?;
        }
        Ok(())
    }

    /// History from `head`, following first parents, newest first.
    pub fn log(&self, head: Id, limit: usize) -> Result<Vec<(Id, Revision)>> {
        let mut out = Vec::new();
        let mut next = Some(head);
        while let Some(id) = next {
            if out.len() >= limit {
                break;
            }
            let rev = self.revision(&id)?;
            next = rev.parents.first().copied();
            out.push((id, rev));
        }
        Ok(out)
    }

    /// A tree node, verified against its id.
    pub fn node(&self, id: &Id) -> Result<Node> {
        let v = self.node_bytes(id)?.ok_or(StoreError::MissingNode(*id))?;
        let actual = node_id(&v);
        if actual != *id {
            return Err(StoreError::Corrupt { what: "tree node", id: *id, detail: format!("its bytes hash to {actual}") });
        }
        Node::decode(&v).map_err(|e| StoreError::Corrupt { what: "tree node", id: *id, detail: e.to_string() })
    }

    /// The encoded node as stored (for sending on).
    pub fn node_bytes(&self, id: &Id) -> Result<Option<Vec<u8>>> {
        match self.db.get_cf(self.cf(CF_TREES), id.as_bytes())? {
            Some(v) => Ok(Some(v)),
            None => Ok(self.pending_node(id)),
        }
    }

    /// Refuses a revision that says a file is larger or smaller than the
    /// tree it names: listings, progress and range reads go by the entry's
    /// size. Trees that are not stored are left to the callers' presence
    /// checks.
    pub(crate) fn check_entry_sizes(&self, rev: &Revision) -> Result<()> {
        for e in &rev.entries {
            let tree_size = match self.node(&e.file_id) {
                Ok(root) => root.size(),
                Err(StoreError::MissingNode(_)) => continue,
                Err(err) => return Err(err),
            };
            if tree_size != e.size {
                let detail = format!("{:?} is said to be {} bytes, but its tree {} holds {tree_size} bytes", e.path, e.size, e.file_id.short());
                return Err(ferry_core::invalid("file size", detail).into());
            }
        }
        Ok(())
    }

    /// For each id, whether the tree node (and so its whole subtree) is
    /// stored; one batched lookup.
    pub fn has_nodes(&self, ids: &[Id]) -> Result<Vec<bool>> {
        let cf = self.cf(CF_TREES);
        let found = self.db.multi_get_cf(ids.iter().map(|id| (cf, id.as_bytes())));
        found.into_iter().zip(ids).map(|(r, id)| Ok(r?.is_some() || self.pending_node(id).is_some())).collect()
    }
}

//! What a session may read by id.
//!
//! Chunks, nodes and revisions are stored once for the whole hub, so an id
//! alone does not say which repository an object belongs to. A session
//! may read an object by id only once the hub has shown it the way there
//! from a repository it may read: a revision reachable from one of that
//! repository's branches, a file root named by such a revision, a child
//! of a node it was served. A pull walks top-down, so it never asks for an
//! id it was not shown; someone who knows the id of a private chunk but
//! cannot read a revision that reaches it gets "not found", as for an id
//! the hub does not hold.
//!
//! Ids are kept by their first 8 bytes: passing for an admitted id means
//! finding a second preimage of 64 bits of BLAKE3 for an id one does not
//! choose, and a chunk costs the session about 16 bytes until it ends.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use ferry_core::revision::Revision;
use ferry_core::tree::Node;
use ferry_core::Id;

/// Ids are uniformly random: their first 8 bytes are already a hash.
#[derive(Default)]
struct IdPrefixHasher(u64);

impl Hasher for IdPrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type PrefixSet = HashSet<u64, BuildHasherDefault<IdPrefixHasher>>;

fn prefix(id: &Id) -> u64 {
    u64::from_le_bytes(id.as_bytes()[..8].try_into().expect("ids are 32 bytes"))
}

/// The ids a session has been shown the way to.
#[derive(Default)]
pub(crate) struct Admitted {
    revisions: PrefixSet,
    nodes: PrefixSet,
    chunks: PrefixSet,
    /// Per repository, the branch heads whose whole history has been
    /// admitted: a revision not admitted by then is not in that history.
    walked: HashMap<String, HashSet<Id>>,
}

impl Admitted {
    pub(crate) fn has_revision(&self, id: &Id) -> bool {
        self.revisions.contains(&prefix(id))
    }

    pub(crate) fn has_node(&self, id: &Id) -> bool {
        self.nodes.contains(&prefix(id))
    }

    pub(crate) fn has_chunk(&self, id: &Id) -> bool {
        self.chunks.contains(&prefix(id))
    }

    /// A file the session may read whole (an LFS object of a repository
    /// it may read).
    pub(crate) fn file(&mut self, file_id: &Id) {
        self.nodes.insert(prefix(file_id));
    }

    /// A branch head of a repository the session may read.
    pub(crate) fn head(&mut self, id: &Id) {
        self.revisions.insert(prefix(id));
    }

    /// A revision the session may read: it, its parents and its files'
    /// roots may be read next.
    pub(crate) fn revision(&mut self, id: &Id, rev: &Revision) {
        self.revisions.insert(prefix(id));
        self.revisions.extend(rev.parents.iter().map(prefix));
        self.nodes.extend(rev.entries.iter().map(|e| prefix(&e.file_id)));
    }

    /// A node served to the session: its children may be read next.
    pub(crate) fn node(&mut self, node: &Node) {
        let set = if node.height == 1 { &mut self.chunks } else { &mut self.nodes };
        set.extend(node.children.iter().map(|c| prefix(&c.id)));
    }

    /// The heads of `repo` whose history is not yet wholly admitted.
    pub(crate) fn unwalked(&self, repo: &str, heads: &[Id]) -> Vec<Id> {
        let walked = self.walked.get(repo);
        heads.iter().filter(|h| !walked.is_some_and(|w| w.contains(h))).copied().collect()
    }

    /// Records that the whole history below `heads` of `repo` is admitted.
    pub(crate) fn walked(&mut self, repo: &str, heads: &[Id]) {
        self.walked.entry(repo.to_owned()).or_default().extend(heads.iter().copied());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::revision::Entry;
    use ferry_core::tree::Child;

    fn id(s: &str) -> Id {
        Id::of_chunk(s.as_bytes())
    }

    #[test]
    fn a_revision_admits_its_parents_and_roots_and_a_node_its_children() {
        let mut a = Admitted::default();
        let rev = Revision {
            parents: vec![id("p")],
            author: String::new(),
            time: 0,
            message: String::new(),
            entries: vec![Entry { path: "f".into(), file_id: id("root"), size: 1, executable: false }],
        };
        assert!(!a.has_revision(&id("r")));
        a.revision(&id("r"), &rev);
        assert!(a.has_revision(&id("r")) && a.has_revision(&id("p")) && a.has_node(&id("root")));
        assert!(!a.has_node(&id("p")) && !a.has_chunk(&id("root")));
        a.node(&Node { height: 2, children: vec![Child { id: id("leaf"), size: 1 }] });
        a.node(&Node { height: 1, children: vec![Child { id: id("chunk"), size: 1 }] });
        assert!(a.has_node(&id("leaf")) && !a.has_chunk(&id("leaf")));
        assert!(a.has_chunk(&id("chunk")) && !a.has_node(&id("chunk")));
        assert!(!a.has_chunk(&id("other")));
    }

    #[test]
    fn heads_once_walked_are_not_walked_again() {
        let mut a = Admitted::default();
        assert_eq!(a.unwalked("o/r", &[id("h1"), id("h2")]), vec![id("h1"), id("h2")]);
        a.walked("o/r", &[id("h1")]);
        assert_eq!(a.unwalked("o/r", &[id("h1"), id("h2")]), vec![id("h2")]);
        assert_eq!(a.unwalked("o/other", &[id("h1")]), vec![id("h1")]);
    }
}

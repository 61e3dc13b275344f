//! The content-defined Merkle tree that names a file.
//!
//! A file's id is the root of a tree over its chunk ids. Where one node ends
//! and the next begins is decided by the child ids themselves (a child whose
//! id ends in four zero bits closes its node), so an edit changes only the
//! nodes on the paths above the changed chunks: O(log n) nodes, and two
//! versions of a file share almost every node. The rule, byte by byte, is
//! specified in `protocol/tree.md`; the golden vectors there are checked by
//! this crate's tests.

use crate::{invalid, FormatError, Id, Reader};

/// A node closes after a child whose id's last byte has these bits clear
/// (probability 1/16, so the mean fan-out is about 17).
pub const BOUNDARY_MASK: u8 = 0x0f;
/// A node never has fewer than this many children because of the boundary
/// rule (only the last node of a level can be smaller).
pub const MIN_FANOUT: usize = 2;
/// Hard cap on children per node: a node is closed when it has this many.
pub const MAX_FANOUT: usize = 64;
/// Deepest tree a decoder accepts (2^48 chunks is far beyond any file).
pub const MAX_HEIGHT: u8 = 48;
/// Bytes of one encoded child: id and size.
pub const CHILD_LEN: usize = 40;
/// Largest encoded node, in bytes (2 563): height, count and
/// [`MAX_FANOUT`] children.
pub const MAX_NODE_LEN: usize = 3 + MAX_FANOUT * CHILD_LEN;

const NODE_KEY_CONTEXT: &str = "ferry 2026-11 tree node v1";

/// One child of a node: a chunk (height 1) or a node (height > 1), with the
/// number of file bytes below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Child {
    /// The chunk's or node's id. For the root a [`TreeBuilder`] returns,
    /// the file id.
    pub id: Id,
    /// Bytes of the file below this child (a chunk's raw length).
    pub size: u64,
}

/// A tree node. `height` 1 means the children are chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// 1 when the children are chunks, else one more than the children's
    /// height; at most [`MAX_HEIGHT`].
    pub height: u8,
    /// The children, in file order; at most [`MAX_FANOUT`]. Empty only in
    /// the root of an empty file.
    pub children: Vec<Child>,
}

impl Node {
    /// Canonical encoding: height u8, count u16 LE, then per child its 32-byte
    /// id and u64 LE size.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(3 + self.children.len() * CHILD_LEN);
        out.push(self.height);
        out.extend_from_slice(&(self.children.len() as u16).to_le_bytes());
        for c in &self.children {
            out.extend_from_slice(c.id.as_bytes());
            out.extend_from_slice(&c.size.to_le_bytes());
        }
        out
    }

    /// Decodes an untrusted node, enforcing every limit of the format.
    pub fn decode(bytes: &[u8]) -> Result<Node, FormatError> {
        if bytes.len() > MAX_NODE_LEN {
            return Err(FormatError::TooLarge { what: "tree node", len: bytes.len() as u64, limit: MAX_NODE_LEN as u64 });
        }
        let mut r = Reader::new("tree node", bytes);
        let height = r.u8()?;
        if height == 0 || height > MAX_HEIGHT {
            return Err(invalid("tree node", format!("height {height} is outside 1..={MAX_HEIGHT}")));
        }
        let count = r.u16()? as usize;
        if count > MAX_FANOUT {
            return Err(FormatError::TooLarge { what: "tree node fan-out", len: count as u64, limit: MAX_FANOUT as u64 });
        }
        if r.remaining() != count * CHILD_LEN {
            return Err(invalid("tree node", format!("{count} children need {} bytes, found {}", count * CHILD_LEN, r.remaining())));
        }
        let mut children = Vec::with_capacity(count);
        let mut total: u64 = 0;
        for _ in 0..count {
            let id = r.id()?;
            let size = r.u64()?;
            total = total.checked_add(size).ok_or_else(|| invalid("tree node", "sizes overflow 64 bits"))?;
            children.push(Child { id, size });
        }
        r.finish()?;
        Ok(Node { height, children })
    }

    /// The node's id: BLAKE3 in derive-key mode over its encoding.
    pub fn id(&self) -> Id {
        node_id(&self.encode())
    }

    /// Bytes of file content below this node.
    pub fn size(&self) -> u64 {
        self.children.iter().map(|c| c.size).sum()
    }

    /// The children that hold some of bytes `start..end` of the file, with
    /// the file offset each begins at, given that this node begins at
    /// `offset`. Reading a range walks down through these alone.
    pub fn children_in_range(&self, offset: u64, start: u64, end: u64) -> impl Iterator<Item = (&Child, u64)> {
        self.children
            .iter()
            .scan(offset, |next, c| {
                let lo = *next;
                *next += c.size;
                Some((c, lo))
            })
            .take_while(move |(_, lo)| *lo < end)
            .filter(move |(c, lo)| lo + c.size > start)
    }
}

/// The id of an encoded node: BLAKE3 in derive-key mode with the context
/// `"ferry 2026-11 tree node v1"`, so a chunk whose bytes equal a node's
/// encoding still has a different id. Used to verify a node received as
/// bytes before decoding it.
pub fn node_id(encoded: &[u8]) -> Id {
    let mut h = blake3::Hasher::new_derive_key(NODE_KEY_CONTEXT);
    h.update(encoded);
    Id(*h.finalize().as_bytes())
}

/// Whether `child` closes the node that currently holds `len` children
/// (including `child`): the grouping rule of `protocol/tree.md`, section 2
/// (`len` is 1-based).
pub fn closes_node(child: &Id, len: usize) -> bool {
    len >= MAX_FANOUT || (len >= MIN_FANOUT && child.0[31] & BOUNDARY_MASK == 0)
}

#[derive(Default)]
struct Level {
    pending: Vec<Child>,
    emitted: u64,
    last: Option<Child>,
}

/// Builds a file's tree while its chunks stream by, holding at most
/// `MAX_FANOUT` children per level in memory. Every finished node is handed
/// to the sink (to be stored) before any node that references it.
#[derive(Default)]
pub struct TreeBuilder {
    levels: Vec<Level>,
}

impl TreeBuilder {
    /// A builder for a file with no chunks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next chunk of the file (its id and raw length); `sink`
    /// receives every node this closes, with its id.
    pub fn push_chunk(&mut self, id: Id, size: u64, sink: &mut impl FnMut(&Node, Id)) {
        self.push(0, Child { id, size }, sink);
    }

    fn push(&mut self, level: usize, child: Child, sink: &mut impl FnMut(&Node, Id)) {
        if self.levels.len() <= level {
            self.levels.push(Level::default());
        }
        let l = &mut self.levels[level];
        l.pending.push(child);
        if closes_node(&child.id, l.pending.len()) {
            self.emit(level, sink);
        }
    }

    fn emit(&mut self, level: usize, sink: &mut impl FnMut(&Node, Id)) {
        let l = &mut self.levels[level];
        let node = Node { height: level as u8 + 1, children: std::mem::take(&mut l.pending) };
        let id = node.id();
        sink(&node, id);
        let child = Child { id, size: node.size() };
        l.emitted += 1;
        l.last = Some(child);
        self.push(level + 1, child, sink);
    }

    /// Closes every level and returns the root: the file id and its size.
    /// The root is handed to `sink` too. A file without chunks gets the
    /// empty height-1 node as its root.
    pub fn finish(mut self, sink: &mut impl FnMut(&Node, Id)) -> Child {
        if self.levels.is_empty() {
            self.levels.push(Level::default());
        }
        let mut level = 0;
        loop {
            let l = &self.levels[level];
            if !l.pending.is_empty() || l.emitted == 0 {
                self.emit(level, sink);
            }
            let l = &self.levels[level];
            if l.emitted == 1 {
                return l.last.expect("one node was emitted");
            }
            level += 1;
        }
    }
}

/// Builds the tree over a whole list of chunks: the root and every node,
/// children before parents.
pub fn build(chunks: &[(Id, u64)]) -> (Child, Vec<(Id, Node)>) {
    let mut nodes = Vec::new();
    let mut sink = |n: &Node, id: Id| nodes.push((id, n.clone()));
    let mut b = TreeBuilder::new();
    for &(id, size) in chunks {
        b.push_chunk(id, size, &mut sink);
    }
    let root = b.finish(&mut sink);
    (root, nodes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: usize, salt: u64) -> Vec<(Id, u64)> {
        (0..n as u64).map(|i| (Id::of_chunk(&(i ^ salt).to_le_bytes()), 1000 + i % 7)).collect()
    }

    /// The reference definition: group whole levels until one node is left.
    fn build_by_levels(chunks: &[(Id, u64)]) -> Child {
        let mut level: Vec<Child> = chunks.iter().map(|&(id, size)| Child { id, size }).collect();
        let mut height = 1u8;
        loop {
            let mut next = Vec::new();
            let mut group = Vec::new();
            for c in &level {
                group.push(*c);
                if closes_node(&c.id, group.len()) {
                    next.push(std::mem::take(&mut group));
                }
            }
            if !group.is_empty() || next.is_empty() {
                next.push(group);
            }
            let nodes: Vec<Child> = next
                .into_iter()
                .map(|children| {
                    let n = Node { height, children };
                    Child { id: n.id(), size: n.size() }
                })
                .collect();
            if nodes.len() == 1 {
                return nodes[0];
            }
            level = nodes;
            height += 1;
        }
    }

    #[test]
    fn empty_file_is_one_empty_node() {
        let (root, nodes) = build(&[]);
        assert_eq!(root.size, 0);
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].1, Node { height: 1, children: vec![] });
    }

    #[test]
    fn one_chunk_file_id_differs_from_its_chunk_id() {
        let l = leaves(1, 0);
        let (root, nodes) = build(&l);
        assert_ne!(root.id, l[0].0);
        assert_eq!(nodes.len(), 1);
    }

    #[test]
    fn changing_one_chunk_changes_few_nodes() {
        let a = leaves(20_000, 0);
        let mut b = a.clone();
        b[12_345].0 = Id::of_chunk(b"changed");
        let (ra, na) = build(&a);
        let (rb, nb) = build(&b);
        assert_ne!(ra.id, rb.id);
        let old: std::collections::HashSet<Id> = na.iter().map(|n| n.0).collect();
        let fresh = nb.iter().filter(|n| !old.contains(&n.0)).count();
        let height = nb.last().unwrap().1.height as usize;
        assert!(fresh <= 2 * height, "{fresh} new nodes, height {height}");
    }

    #[test]
    fn nodes_round_trip_and_reject_garbage() {
        let (_, nodes) = build(&leaves(500, 9));
        for (id, n) in &nodes {
            let enc = n.encode();
            assert_eq!(&Node::decode(&enc).unwrap(), n);
            assert_eq!(node_id(&enc), *id);
            assert!(Node::decode(&enc[..enc.len() - 1]).is_err());
        }
        assert!(Node::decode(&[0, 0, 0]).is_err(), "height 0");
        assert!(Node::decode(&[1, 65, 0]).is_err(), "fan-out 65");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn streaming_builder_matches_level_by_level_definition(n in 0usize..3000, salt in any::<u64>()) {
            let l = leaves(n, salt);
            let (root, nodes) = build(&l);
            if n > 0 {
                prop_assert_eq!(root, build_by_levels(&l));
            }
            prop_assert_eq!(root.size, l.iter().map(|x| x.1).sum::<u64>());
            for (_, node) in &nodes {
                prop_assert!(node.children.len() <= MAX_FANOUT);
            }
        }
    }
}

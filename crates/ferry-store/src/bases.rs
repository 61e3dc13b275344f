//! Choosing the base of a delta record: the same piece of the same tensor
//! in a parent revision.
//!
//! A tensor's base is the tensor of the same name, byte length and element
//! width in any safetensors file of the parent revision (so a re-sharded
//! model still finds its bases). Tensor pieces are cut from each tensor's
//! start (`protocol/tree.md` §1), so piece k of a tensor lines up with piece
//! k of its base; the base chunk is found by walking the parent file's tree
//! to that offset.

use std::collections::HashMap;
use std::sync::Arc;

use ferry_core::chunking::cut_in_pieces;
use ferry_core::revision::Revision;
use ferry_core::safetensors::{Layout, LAYOUT_PREFIX};
use ferry_core::tree::Child;
use ferry_core::Id;

use crate::{Result, Store};

/// A tensor of the parent revision, where its bytes are.
#[derive(Debug, Clone, Copy)]
struct BaseTensor {
    /// The file that holds it.
    file: Id,
    /// Its offset in that file.
    start: u64,
    len: u64,
    width: u8,
}

/// The tensors of a parent revision that new tensor pieces may be stored
/// against, by name.
///
/// Cheap to clone: clones share the tensors, each keeps its own place in
/// the trees.
#[derive(Debug, Default, Clone)]
pub struct DeltaBases {
    tensors: Arc<HashMap<String, BaseTensor>>,
    /// The last leaf node visited: a tensor's pieces are looked up in order,
    /// so most lookups land in the same leaf as the one before.
    leaf: Option<Leaf>,
}

/// A height-1 node's chunks with their file offsets.
#[derive(Debug, Clone)]
struct Leaf {
    file: Id,
    chunks: Vec<(Child, u64)>,
}

impl DeltaBases {
    /// True when there is no tensor to store a delta against.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The chunk holding bytes `rel..rel + len` of the base of tensor
    /// `name` (of `tensor_len` bytes, `width`-byte elements), if it has
    /// one and that piece is exactly one chunk.
    pub(crate) fn piece(&mut self, store: &Store, name: &str, tensor_len: u64, width: u8, rel: u64, len: u64) -> Result<Option<Id>> {
        let Some(t) = self.tensors.get(name).copied() else { return Ok(None) };
        if t.len != tensor_len || t.width != width {
            return Ok(None);
        }
        let at = t.start + rel;
        let hit =
            |leaf: &Leaf| leaf.file == t.file && leaf.chunks.first().is_some_and(|c| c.1 <= at) && leaf.chunks.last().is_some_and(|c| at < c.1 + c.0.size);
        if !self.leaf.as_ref().is_some_and(hit) {
            self.leaf = store.leaf_at(&t.file, at)?;
        }
        Ok(self.leaf.as_ref().and_then(|l| l.chunks.iter().find(|c| c.1 == at && c.0.size == len)).map(|c| c.0.id))
    }
}

impl Store {
    /// The tensors of `rev`'s safetensors files (by path suffix), as bases
    /// for the pieces of a new version. Reads each file's header only.
    pub fn delta_bases(&self, rev: &Revision) -> Result<DeltaBases> {
        let mut tensors = HashMap::new();
        for e in rev.entries.iter().filter(|e| e.path.ends_with(".safetensors") && e.size >= 8) {
            let mut len = Vec::with_capacity(8);
            self.read_range(&e.file_id, e.size, 0, 8, &mut len, &())?;
            let header_len = u64::from_le_bytes(len.try_into().expect("8 bytes read"));
            let prefix_len = header_len.saturating_add(8).min(e.size);
            if prefix_len > LAYOUT_PREFIX as u64 {
                continue;
            }
            let mut prefix = Vec::with_capacity(prefix_len as usize);
            self.read_range(&e.file_id, e.size, 0, prefix_len, &mut prefix, &())?;
            let Some(layout) = Layout::parse(&prefix) else { continue };
            for t in layout.tensors {
                if cut_in_pieces(&t) && matches!(t.width, 2 | 4 | 8) && t.start + t.len <= e.size {
                    tensors.entry(t.name).or_insert(BaseTensor { file: e.file_id, start: t.start, len: t.len, width: t.width });
                }
            }
        }
        Ok(DeltaBases { tensors: Arc::new(tensors), leaf: None })
    }

    /// The leaf node of file `root` that holds byte `at`, with its chunks'
    /// offsets; None past the end.
    fn leaf_at(&self, root: &Id, at: u64) -> Result<Option<Leaf>> {
        let mut node = self.node(root)?;
        let mut offset = 0;
        loop {
            let mut lo = offset;
            let mut next = None;
            let mut chunks = Vec::new();
            for c in &node.children {
                if node.height == 1 {
                    chunks.push((*c, lo));
                } else if lo <= at && at < lo + c.size {
                    next = Some((c.id, lo));
                    break;
                }
                lo += c.size;
            }
            if node.height == 1 {
                return Ok(Some(Leaf { file: *root, chunks }).filter(|l| l.chunks.iter().any(|c| c.1 <= at && at < c.1 + c.0.size)));
            }
            let Some((id, lo)) = next else { return Ok(None) };
            node = self.node(&id)?;
            offset = lo;
        }
    }
}

//! 32-byte BLAKE3 ids for chunks, tree nodes and revisions.

use std::fmt;
use std::str::FromStr;

/// A 32-byte BLAKE3 digest. Chunk ids are the plain BLAKE3 of the chunk's
/// raw bytes; tree nodes and revisions use derived keys (see
/// [`tree::node_id`](crate::tree::node_id) and
/// [`revision::revision_id`](crate::revision::revision_id)) so that ids of
/// different kinds never collide by construction (`protocol/tree.md`).
///
/// Shown as 64 lowercase hex digits (`Display`, [`Id::to_hex`]) and parsed
/// back from them (`FromStr`); `Debug` shows the short form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// The id of a chunk: BLAKE3 of its raw bytes.
    pub fn of_chunk(raw: &[u8]) -> Id {
        Id(*blake3::hash(raw).as_bytes())
    }
    /// The 32 digest bytes, as they are encoded in every format.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// All 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// The first 12 hex digits, for messages meant for people.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
    /// The id in `b`, or `None` unless `b` is exactly 32 bytes long.
    pub fn from_slice(b: &[u8]) -> Option<Id> {
        Some(Id(b.try_into().ok()?))
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl FromStr for Id {
    type Err = crate::FormatError;
    fn from_str(s: &str) -> Result<Id, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| crate::invalid("id", format!("{s:?} is not 64 hex digits: {e}")))?;
        Ok(Id(out))
    }
}

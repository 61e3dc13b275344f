//! ferry-core: the pure parts of ferry — ids, content-defined chunking, the
//! content-defined Merkle tree that names files, the stored-chunk codec,
//! revisions and the names users type.
//!
//! Architecture invariant: nothing in this crate touches the disk, the
//! network or the clock. Every decoder here takes untrusted bytes and is
//! bounded; the fuzz targets drive them directly.
//!
//! The formats are specified byte by byte in `protocol/tree.md` (normative);
//! `protocol/vectors/core.json` holds golden vectors that this crate's tests
//! check. A file's journey through the crate:
//!
//! 1. a [`chunking::Chunker`] (or [`chunking::chunk_all`]) finds its chunk
//!    boundaries, by content, or by tensor for a safetensors file
//!    ([`safetensors`]);
//! 2. [`Id::of_chunk`] names each chunk, and [`codec::Encoder`] turns it into
//!    the record that is stored and sent;
//! 3. [`tree::TreeBuilder`] (or [`tree::build`]) groups the chunk ids into
//!    the tree whose root is the file id;
//! 4. a [`revision::Revision`] maps paths (checked by [`names`]) to file ids.
//!
//! `crates/ferry-core/examples/chunk_a_file.rs` runs these steps on a
//! generated buffer.

#![warn(missing_docs)]

pub mod chunking;
pub mod codec;
pub mod id;
pub mod names;
pub mod revision;
pub mod safetensors;
pub mod time;
pub mod tree;

pub use id::Id;

/// Errors from decoding or validating data that came from outside.
///
/// Every variant names `what` was being read (a format or a field, such as
/// `"tree node"` or `"revision author"`), so the message says which object
/// was wrong, not just that something was.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    /// The input ended before the object did.
    #[error("{what}: truncated (needed {needed} more bytes)")]
    Truncated {
        /// The object or field being read.
        what: &'static str,
        /// How many more bytes it needed at least.
        needed: usize,
    },
    /// The bytes break a rule of the format (bad magic, unknown codec,
    /// unsorted paths, trailing bytes, ...).
    #[error("{what}: {detail}")]
    Invalid {
        /// The object or field being read.
        what: &'static str,
        /// Which rule was broken, for people.
        detail: String,
    },
    /// A length or count is over its limit; refused before allocating.
    #[error("{what}: {len} exceeds the limit of {limit}")]
    TooLarge {
        /// The object or field being read.
        what: &'static str,
        /// The length or count found (bytes or items, as `what` implies).
        len: u64,
        /// The largest the format allows, in the same unit.
        limit: u64,
    },
    /// The object decoded, but its bytes do not hash to the id it was
    /// stored or asked for under.
    #[error("{what} {id} failed verification: its bytes hash to {actual}")]
    HashMismatch {
        /// The kind of object (`"chunk"`, `"tree node"`, ...).
        what: &'static str,
        /// The id it was expected to have.
        id: Id,
        /// The id its bytes actually have.
        actual: Id,
    },
}

/// Shorthand for [`FormatError::Invalid`].
pub fn invalid(what: &'static str, detail: impl Into<String>) -> FormatError {
    FormatError::Invalid { what, detail: detail.into() }
}

/// A bounded little-endian reader over untrusted bytes (shared with the
/// wire protocol).
///
/// Every read checks the bytes left first and fails with
/// [`FormatError::Truncated`] rather than panicking; [`Reader::finish`]
/// refuses trailing bytes, so each object has exactly one encoding.
pub struct Reader<'a> {
    what: &'static str,
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads `buf`; `what` names the object in errors.
    pub fn new(what: &'static str, buf: &'a [u8]) -> Self {
        Reader { what, buf }
    }
    /// The next `n` bytes, borrowed from the input.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.buf.len() < n {
            return Err(FormatError::Truncated { what: self.what, needed: n - self.buf.len() });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    /// The next byte.
    pub fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }
    /// The next little-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    /// The next little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    /// The next little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    /// The next little-endian `i64` (two's complement).
    pub fn i64(&mut self) -> Result<i64, FormatError> {
        Ok(self.u64()? as i64)
    }
    /// The next 32 bytes as an [`Id`].
    pub fn id(&mut self) -> Result<Id, FormatError> {
        Ok(Id(self.take(32)?.try_into().expect("32 bytes")))
    }
    /// A u32-length-prefixed byte string of at most `limit` bytes; `field`
    /// names it if the length is over the limit.
    pub fn bytes(&mut self, field: &'static str, limit: usize) -> Result<&'a [u8], FormatError> {
        let len = self.u32()? as usize;
        if len > limit {
            return Err(FormatError::TooLarge { what: field, len: len as u64, limit: limit as u64 });
        }
        self.take(len)
    }
    /// Like [`Reader::bytes`], and the bytes must be UTF-8.
    pub fn string(&mut self, field: &'static str, limit: usize) -> Result<&'a str, FormatError> {
        std::str::from_utf8(self.bytes(field, limit)?).map_err(|_| invalid(field, "not UTF-8"))
    }
    /// Bytes not read yet. Decoders compare counts against it so that a
    /// lying count cannot make them reserve memory the input cannot fill.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }
    /// Ends the read: an error if any bytes are left.
    pub fn finish(self) -> Result<(), FormatError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(invalid(self.what, format!("{} trailing bytes", self.buf.len())))
        }
    }
}

/// Appends `b` with its u32 LE length in front: the inverse of
/// [`Reader::bytes`]. The caller keeps `b` within its format's limit.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

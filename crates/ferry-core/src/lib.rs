//! ferry-core: the pure parts of ferry — ids, content-defined chunking, the
//! content-defined Merkle tree that names files, the stored-chunk codec,
//! revisions and the names users type.
//!
//! Architecture invariant: nothing in this crate touches the disk, the
//! network or the clock. Every decoder here takes untrusted bytes and is
//! bounded; the fuzz targets drive them directly.

pub mod chunking;
pub mod codec;
pub mod id;
pub mod names;
pub mod revision;
pub mod tree;

pub use id::Id;

/// Errors from decoding or validating data that came from outside.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("{what}: truncated (needed {needed} more bytes)")]
    Truncated { what: &'static str, needed: usize },
    #[error("{what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    #[error("{what}: {len} exceeds the limit of {limit}")]
    TooLarge { what: &'static str, len: u64, limit: u64 },
    #[error("{what} {id} failed verification: its bytes hash to {actual}")]
    HashMismatch { what: &'static str, id: Id, actual: Id },
}

pub fn invalid(what: &'static str, detail: impl Into<String>) -> FormatError {
    FormatError::Invalid { what, detail: detail.into() }
}

/// A bounded little-endian reader over untrusted bytes (shared with the
/// wire protocol).
pub struct Reader<'a> {
    what: &'static str,
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(what: &'static str, buf: &'a [u8]) -> Self {
        Reader { what, buf }
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.buf.len() < n {
            return Err(FormatError::Truncated { what: self.what, needed: n - self.buf.len() });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    pub fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    pub fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    pub fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    pub fn i64(&mut self) -> Result<i64, FormatError> {
        Ok(self.u64()? as i64)
    }
    pub fn id(&mut self) -> Result<Id, FormatError> {
        Ok(Id(self.take(32)?.try_into().expect("32 bytes")))
    }
    /// A u32-length-prefixed byte string of at most `limit` bytes.
    pub fn bytes(&mut self, field: &'static str, limit: usize) -> Result<&'a [u8], FormatError> {
        let len = self.u32()? as usize;
        if len > limit {
            return Err(FormatError::TooLarge { what: field, len: len as u64, limit: limit as u64 });
        }
        self.take(len)
    }
    pub fn string(&mut self, field: &'static str, limit: usize) -> Result<&'a str, FormatError> {
        std::str::from_utf8(self.bytes(field, limit)?).map_err(|_| invalid(field, "not UTF-8"))
    }
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }
    pub fn finish(self) -> Result<(), FormatError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(invalid(self.what, format!("{} trailing bytes", self.buf.len())))
        }
    }
}

pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

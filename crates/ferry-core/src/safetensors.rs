//! The layout of a safetensors file, read from its first bytes for the
//! tensor-aware chunking rule (`protocol/tree.md`, section 1).
//!
//! ```text
//! file := header_len:u64 LE  header:JSON (header_len bytes)  data
//! header := { "__metadata__": {...}?, NAME: {"dtype", "shape", "data_offsets": [begin, end]}, ... }
//! ```
//! Offsets are relative to the start of `data`. The parser is bounded and
//! trusts nothing: a header that is too long, not JSON, or whose tensors
//! overlap, overflow or disagree with their dtype and shape makes the file
//! "not safetensors", and it is chunked like any other file. Offsets past
//! the end of the file are not an error here: the chunking rule stops where
//! the file stops, so the file is still stored exactly.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

/// Longest JSON header the rule reads. A longer one makes the file plain.
/// Real headers are tens to hundreds of KiB (one entry per tensor).
pub const MAX_HEADER_LEN: usize = 4 << 20;

/// Bytes from the start of a file that decide its layout: whoever chunks a
/// file must hand [`Layout::parse`] at least this many (or the whole file).
pub const LAYOUT_PREFIX: usize = 8 + MAX_HEADER_LEN;

/// One tensor's bytes in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    /// Its name in the header.
    pub name: String,
    /// Offset of its first byte from the start of the file.
    pub start: u64,
    /// Its length in bytes.
    pub len: u64,
    /// Bytes per element (1, 2, 4 or 8), or 0 for a dtype this version does
    /// not know (or a sub-byte one).
    pub width: u8,
}

/// Where a safetensors file's tensors are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the data section: 8 + the header's length.
    pub data_start: u64,
    /// The non-empty tensors, in file order, none overlapping.
    pub tensors: Vec<Tensor>,
}

/// Bytes per element of a safetensors dtype; 0 if unknown or sub-byte.
pub fn dtype_width(dtype: &str) -> u8 {
    match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" | "C64" => 8,
        _ => 0,
    }
}

impl Layout {
    /// The tensor whose bytes include file offset `at`.
    pub fn tensor_at(&self, at: u64) -> Option<&Tensor> {
        let i = self.tensors.partition_point(|t| t.start <= at).checked_sub(1)?;
        Some(&self.tensors[i]).filter(|t| at < t.start + t.len)
    }

    /// The layout of the file that starts with `prefix`, or None if the
    /// file is not (a believable) safetensors file. `prefix` must hold the
    /// first [`LAYOUT_PREFIX`] bytes of the file, or all of it if shorter.
    pub fn parse(prefix: &[u8]) -> Option<Layout> {
        let len_bytes: [u8; 8] = prefix.get(..8)?.try_into().ok()?;
        let header_len = u64::from_le_bytes(len_bytes);
        if !(2..=MAX_HEADER_LEN as u64).contains(&header_len) {
            return None;
        }
        let header = prefix.get(8..8 + header_len as usize)?;
        if header[0] != b'{' {
            return None;
        }
        let Header(entries) = serde_json::from_slice(header).ok()?;
        let data_start = 8 + header_len;
        let mut tensors = Vec::with_capacity(entries.len());
        for e in entries {
            let [begin, end] = e.data_offsets;
            if begin > end {
                return None;
            }
            let len = end - begin;
            let width = dtype_width(&e.dtype);
            if width > 0 {
                let elements = e.shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))?;
                if elements.checked_mul(width as u64)? != len {
                    return None;
                }
            }
            let start = data_start.checked_add(begin)?;
            start.checked_add(len)?;
            if len > 0 {
                tensors.push(Tensor { name: e.name, start, len, width });
            }
        }
        tensors.sort_unstable_by_key(|t| t.start);
        if tensors.windows(2).any(|w| w[0].start + w[0].len > w[1].start) {
            return None;
        }
        Some(Layout { data_start, tensors })
    }
}

/// One tensor's entry, as the header gives it.
struct Entry {
    name: String,
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

#[derive(serde::Deserialize)]
struct EntryFields {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// The header's tensor entries; `__metadata__` is skipped unread, so the
/// memory a header costs is bounded by its tensors, not its metadata.
struct Header(Vec<Entry>);

impl<'de> Deserialize<'de> for Header {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Header;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a safetensors header object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Header, A::Error> {
                let mut out = Vec::new();
                let mut names = std::collections::HashSet::new();
                while let Some(name) = map.next_key::<String>()? {
                    if name == "__metadata__" {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                    let f: EntryFields = map.next_value()?;
                    if !names.insert(name.clone()) {
                        return Err(de::Error::custom("a tensor is named twice"));
                    }
                    out.push(Entry { name, dtype: f.dtype, shape: f.shape, data_offsets: f.data_offsets });
                }
                Ok(Header(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors prefix with the given header JSON.
    fn file(header: &str, data: usize) -> Vec<u8> {
        let mut f = (header.len() as u64).to_le_bytes().to_vec();
        f.extend_from_slice(header.as_bytes());
        f.resize(f.len() + data, 0);
        f
    }

    #[test]
    fn a_header_gives_the_tensors_in_file_order() {
        let h = r#"{"__metadata__":{"format":"pt"},"b":{"dtype":"BF16","shape":[4,2],"data_offsets":[8,24]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"z":{"dtype":"F32","shape":[0],"data_offsets":[24,24]}}  "#;
        let l = Layout::parse(&file(h, 24)).expect("a safetensors file");
        let d = 8 + h.len() as u64;
        assert_eq!(l.data_start, d);
        assert_eq!(l.tensors, vec![Tensor { name: "a".into(), start: d, len: 8, width: 4 }, Tensor { name: "b".into(), start: d + 8, len: 16, width: 2 }]);
    }

    #[test]
    fn headers_that_lie_make_the_file_plain() {
        let bad = [
            // overlapping tensors
            r#"{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[8],"data_offsets":[4,12]}}"#,
            // size disagrees with dtype and shape
            r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            // begin after end
            r#"{"a":{"dtype":"X","shape":[],"data_offsets":[9,8]}}"#,
            // offsets that overflow
            r#"{"a":{"dtype":"X","shape":[],"data_offsets":[18446744073709551000,18446744073709551615]}}"#,
            // shape whose product overflows
            r#"{"a":{"dtype":"U8","shape":[4294967296,4294967296,2],"data_offsets":[0,0]}}"#,
            // a tensor named twice
            r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#,
            // not JSON, not an object, missing fields
            r#"{"a":"#,
            r#"{"a":{"dtype":"U8"}}"#,
        ];
        for h in bad {
            assert_eq!(Layout::parse(&file(h, 16)), None, "{h}");
        }
        // a length larger than the prefix, or than the limit, or too small
        let mut f = file(r#"{}"#, 0);
        f[..8].copy_from_slice(&1000u64.to_le_bytes());
        assert_eq!(Layout::parse(&f), None);
        f[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(Layout::parse(&f), None);
        assert_eq!(Layout::parse(&[1, 0, 0, 0, 0, 0, 0, 0, b'{']), None);
        assert_eq!(Layout::parse(b"short"), None);
        // non-UTF-8 names
        let mut f = file(r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#, 1);
        f[10] = 0xff;
        assert_eq!(Layout::parse(&f), None);
    }

    #[test]
    fn offsets_past_the_end_of_the_file_are_left_to_the_chunker() {
        let h = r#"{"a":{"dtype":"U8","shape":[1000],"data_offsets":[0,1000]}}"#;
        let l = Layout::parse(&file(h, 10)).expect("layout");
        assert_eq!(l.tensors[0].len, 1000);
    }
}

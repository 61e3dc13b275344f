//! Packs: many chunk records and tree nodes in one object, ending with an
//! index of what the pack holds, so a store's chunk index and trees can be
//! rebuilt from the packs alone (the bucket backend keeps them in object
//! storage). Normative in `protocol/store.md` §7.
//!
//! ```text
//! "FRYPACK2"                      8 bytes
//! chunk records, back to back     (tree.md encoding)
//! tree nodes, back to back        (tree.md encoding)
//! index: one entry per object     ENTRY_LEN bytes each, in offset order
//!   kind u8 (0 record, 1 node) | id [32] | offset u32 | len u32 | raw_len u32 | codec u8 | base [32]
//! footer                          FOOTER_LEN bytes
//!   count u32 | BLAKE3 of the index [32] | "FRYPACK2"
//! ```
//! Integers are little-endian; offsets count from the pack's first byte.
//! `base` is the chunk a delta record (codec 3) decodes against, so that an
//! index rebuilt from the packs keeps every delta's base alive; zeros for
//! every other entry. Format 1 (`FRYPACK1`) has no `base` (its entries are
//! 46 bytes) and is still read.

use ferry_core::codec::{CODEC_DELTA, MAX_RECORD_LEN};
use ferry_core::tree::MAX_NODE_LEN;
use ferry_core::{invalid, FormatError, Id, Reader};

/// The first and last eight bytes of every pack written.
pub const MAGIC: &[u8; 8] = b"FRYPACK2";
/// Bytes of one index entry.
pub const ENTRY_LEN: usize = 78;
/// The magic of format 1, whose entries have no base.
pub const MAGIC_1: &[u8; 8] = b"FRYPACK1";
/// Bytes of one index entry of format 1.
pub const ENTRY_LEN_1: usize = 46;
/// Bytes of the footer.
pub const FOOTER_LEN: usize = 44;
/// The largest pack this format allows (offsets are u32).
pub const MAX_PACK_LEN: u64 = u32::MAX as u64;

/// What an index entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A chunk record.
    Record = 0,
    /// A tree node.
    Node = 1,
}

/// One object in a pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Record or node.
    pub kind: Kind,
    /// The object's id.
    pub id: Id,
    /// Where it starts, from the pack's first byte.
    pub offset: u32,
    /// Its length.
    pub len: u32,
    /// For records, the chunk's length before encoding; 0 for nodes.
    pub raw_len: u32,
    /// For records, the codec; 0 for nodes.
    pub codec: u8,
    /// For a delta record, the chunk it decodes against.
    pub base: Option<Id>,
}

/// A pack being filled: records as they come (their offsets are final at
/// once, so a location can be handed out), nodes kept apart and placed
/// after the records when the pack is sealed.
pub struct PackWriter {
    data: Vec<u8>,
    entries: Vec<Entry>,
    nodes: Vec<(Id, Vec<u8>)>,
    node_bytes: usize,
}

impl Default for PackWriter {
    fn default() -> Self {
        PackWriter { data: MAGIC.to_vec(), entries: Vec::new(), nodes: Vec::new(), node_bytes: 0 }
    }
}

impl PackWriter {
    /// Adds a record (with its base, if it is a delta); returns its
    /// offset and length.
    pub fn add_record(&mut self, id: Id, record: &[u8], raw_len: u32, codec: u8, base: Option<Id>) -> (u32, u32) {
        let offset = self.data.len() as u32;
        self.data.extend_from_slice(record);
        let len = record.len() as u32;
        self.entries.push(Entry { kind: Kind::Record, id, offset, len, raw_len, codec, base });
        (offset, len)
    }

    /// Adds a tree node (placed after the records when sealed).
    pub fn add_node(&mut self, id: Id, enc: Vec<u8>) {
        self.node_bytes += enc.len();
        self.nodes.push((id, enc));
    }

    /// Bytes the sealed pack would have, near enough.
    pub fn len(&self) -> usize {
        self.data.len() + self.node_bytes + (self.entries.len() + self.nodes.len()) * ENTRY_LEN + FOOTER_LEN
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.nodes.is_empty()
    }

    /// The pack's bytes so far: its records at their final offsets (for
    /// reads of records not uploaded yet).
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// The whole pack.
    pub fn seal(mut self) -> Vec<u8> {
        for (id, enc) in std::mem::take(&mut self.nodes) {
            let offset = self.data.len() as u32;
            self.data.extend_from_slice(&enc);
            self.entries.push(Entry { kind: Kind::Node, id, offset, len: enc.len() as u32, raw_len: 0, codec: 0, base: None });
        }
        let index_start = self.data.len();
        for e in &self.entries {
            self.data.push(e.kind as u8);
            self.data.extend_from_slice(e.id.as_bytes());
            self.data.extend_from_slice(&e.offset.to_le_bytes());
            self.data.extend_from_slice(&e.len.to_le_bytes());
            self.data.extend_from_slice(&e.raw_len.to_le_bytes());
            self.data.push(e.codec);
            self.data.extend_from_slice(e.base.as_ref().map_or(&[0; 32], |b| b.as_bytes()));
        }
        let hash = blake3::hash(&self.data[index_start..]);
        self.data.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        self.data.extend_from_slice(hash.as_bytes());
        self.data.extend_from_slice(MAGIC);
        self.data
    }
}

/// The format a footer names: its entries' length.
fn entry_len(footer: &[u8]) -> Result<usize, FormatError> {
    match footer.get(36..) {
        Some(m) if footer.len() == FOOTER_LEN && m == MAGIC => Ok(ENTRY_LEN),
        Some(m) if footer.len() == FOOTER_LEN && m == MAGIC_1 => Ok(ENTRY_LEN_1),
        _ => Err(invalid("pack", "no pack footer")),
    }
}

/// The bytes of the index before the footer. `footer` is the last
/// `FOOTER_LEN` bytes of a pack of `pack_len` bytes.
pub fn index_len(footer: &[u8], pack_len: u64) -> Result<usize, FormatError> {
    let entry_len = entry_len(footer)?;
    let count = u32::from_le_bytes(footer[..4].try_into().expect("4 bytes")) as u64;
    let room = pack_len.saturating_sub((MAGIC.len() + FOOTER_LEN) as u64) / entry_len as u64;
    if count > room {
        return Err(FormatError::TooLarge { what: "pack index", len: count, limit: room });
    }
    Ok(count as usize * entry_len)
}

/// Decodes a pack's index from its tail: `tail` holds at least the index
/// and the footer (the last `index_len + FOOTER_LEN` bytes of a pack of
/// `pack_len` bytes). Every entry must lie inside the data before the
/// index, in offset order without overlap, within the format's limits;
/// a base only on a delta record.
pub fn decode_index(tail: &[u8], pack_len: u64) -> Result<Vec<Entry>, FormatError> {
    if tail.len() < FOOTER_LEN || tail.len() as u64 > pack_len {
        return Err(invalid("pack", "tail shorter than a footer or longer than the pack"));
    }
    let footer = &tail[tail.len() - FOOTER_LEN..];
    let len = index_len(footer, pack_len)?;
    let entry_len = entry_len(footer)?;
    if tail.len() < len + FOOTER_LEN {
        return Err(invalid("pack", "tail shorter than the index"));
    }
    let index = &tail[tail.len() - FOOTER_LEN - len..tail.len() - FOOTER_LEN];
    if blake3::hash(index).as_bytes() != &footer[4..36] {
        return Err(invalid("pack", "index does not match its hash"));
    }
    let data_end = pack_len - (len + FOOTER_LEN) as u64;
    let mut r = Reader::new("pack index", index);
    let mut next = MAGIC.len() as u64;
    let mut out = Vec::with_capacity(len / entry_len);
    for _ in 0..len / entry_len {
        let kind = match r.u8()? {
            0 => Kind::Record,
            1 => Kind::Node,
            k => return Err(invalid("pack index", format!("kind {k}"))),
        };
        let mut e = Entry { kind, id: r.id()?, offset: r.u32()?, len: r.u32()?, raw_len: r.u32()?, codec: r.u8()?, base: None };
        let is_delta = kind == Kind::Record && e.codec == CODEC_DELTA;
        if entry_len == ENTRY_LEN {
            let base = r.id()?;
            match (is_delta, base == Id([0; 32])) {
                (true, false) => e.base = Some(base),
                (false, true) => {}
                _ => return Err(invalid("pack index", format!("entry {}: a base must go with a delta record, and only with one", e.id.short()))),
            }
        }
        let limit = match kind {
            Kind::Record => MAX_RECORD_LEN,
            Kind::Node => MAX_NODE_LEN,
        };
        if e.len as usize > limit || (e.offset as u64) < next || e.offset as u64 + e.len as u64 > data_end {
            return Err(invalid("pack index", format!("entry {} at {}+{} out of place", e.id.short(), e.offset, e.len)));
        }
        next = e.offset as u64 + e.len as u64;
        out.push(e);
    }
    r.finish()?;
    Ok(out)
}

/// A pack's name: 8 bytes naming the writer's run, then its pack count
/// (u64 big-endian).
pub type PackName = [u8; 16];

/// Starts an announcement (a journal object, not a journal entry).
pub const ANNOUNCE_MAGIC: &[u8; 4] = b"FPKS";
const ANNOUNCE_VERSION: u8 = 1;
/// Packs named by one announcement (a `sync` after a long push names a few
/// hundred at most; a writer announces as packs reach the bucket).
pub const MAX_ANNOUNCED: usize = 1 << 16;

/// The journal object that names packs now in the bucket, in the order
/// they were filled: readers of the journal (a replica, `rebuild`, a writer
/// catching up) learn of a pack's records and nodes from it, so no one
/// lists the bucket's packs.
///
/// ```text
/// "FPKS" | version u8 (1) | count u32 | pack name [16] x count
/// ```
pub fn encode_announcement(packs: &[PackName]) -> Vec<u8> {
    let mut b = Vec::with_capacity(9 + packs.len() * 16);
    b.extend_from_slice(ANNOUNCE_MAGIC);
    b.push(ANNOUNCE_VERSION);
    put_pack_names(&mut b, packs);
    b
}

/// Decodes an announcement from untrusted bytes.
pub fn decode_announcement(b: &[u8]) -> Result<Vec<PackName>, FormatError> {
    let mut r = Reader::new("pack announcement", b);
    if r.take(4)? != ANNOUNCE_MAGIC || r.u8()? != ANNOUNCE_VERSION {
        return Err(invalid("pack announcement", "not an announcement of format 1"));
    }
    take_pack_names(r, "pack announcement")
}

/// Starts a retirement (a journal object, like an announcement).
pub const RETIRE_MAGIC: &[u8; 4] = b"FPKR";
const RETIRE_VERSION: u8 = 1;

/// Packs a gc retired, and when (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retirement {
    /// Unix seconds at which the packs were retired: they may be deleted
    /// from the bucket once the grace period has passed since.
    pub at: u64,
    /// The packs, in no particular order.
    pub packs: Vec<PackName>,
}

/// The journal object that retires packs: everything a branch still
/// reaches in them was copied into packs announced before it, so readers
/// of the journal drop the index entries that still point into them (and
/// do not mind if a pack is gone by the time they read its announcement).
///
/// ```text
/// "FPKR" | version u8 (1) | at u64 | count u32 | pack name [16] x count
/// ```
pub fn encode_retirement(r: &Retirement) -> Vec<u8> {
    let mut b = Vec::with_capacity(17 + r.packs.len() * 16);
    b.extend_from_slice(RETIRE_MAGIC);
    b.push(RETIRE_VERSION);
    b.extend_from_slice(&r.at.to_le_bytes());
    put_pack_names(&mut b, &r.packs);
    b
}

/// Decodes a retirement from untrusted bytes.
pub fn decode_retirement(b: &[u8]) -> Result<Retirement, FormatError> {
    let mut r = Reader::new("pack retirement", b);
    if r.take(4)? != RETIRE_MAGIC || r.u8()? != RETIRE_VERSION {
        return Err(invalid("pack retirement", "not a retirement of format 1"));
    }
    let at = r.u64()?;
    Ok(Retirement { at, packs: take_pack_names(r, "pack retirement")? })
}

/// The tail of an announcement or a retirement: a count and the names.
fn put_pack_names(b: &mut Vec<u8>, packs: &[PackName]) {
    b.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in packs {
        b.extend_from_slice(p);
    }
}

/// Reads what `put_pack_names` wrote, which must end the object.
fn take_pack_names(mut r: Reader<'_>, what: &'static str) -> Result<Vec<PackName>, FormatError> {
    let count = r.u32()? as usize;
    if count > MAX_ANNOUNCED || count * 16 != r.remaining() {
        return Err(invalid(what, format!("{count} packs in {} bytes", r.remaining())));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(r.take(16)?.try_into().expect("16 bytes"));
    }
    r.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<u8>, Vec<Entry>) {
        let mut w = PackWriter::default();
        w.add_record(Id::of_chunk(b"a"), b"record-a", 100, 1, None);
        w.add_node(Id::of_chunk(b"n"), b"node".to_vec());
        w.add_record(Id::of_chunk(b"b"), b"rec-b", 5, CODEC_DELTA, Some(Id::of_chunk(b"a")));
        let pack = w.seal();
        let entries = decode_index(&pack, pack.len() as u64).unwrap();
        (pack, entries)
    }

    #[test]
    fn an_announcement_round_trips_and_refuses_any_other_length() {
        let names = [[1u8; 16], [2u8; 16]];
        let b = encode_announcement(&names);
        assert_eq!(decode_announcement(&b).unwrap(), names);
        for cut in 0..b.len() {
            assert!(decode_announcement(&b[..cut]).is_err());
        }
        let mut longer = b.clone();
        longer.push(0);
        assert!(decode_announcement(&longer).is_err());
        assert!(decode_announcement(&encode_announcement(&[])).unwrap().is_empty());
    }

    #[test]
    fn a_sealed_pack_lists_its_records_then_its_nodes() {
        let (pack, entries) = sample();
        let kinds: Vec<Kind> = entries.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [Kind::Record, Kind::Record, Kind::Node]);
        let body = |e: &Entry| &pack[e.offset as usize..(e.offset + e.len) as usize];
        assert_eq!(body(&entries[0]), b"record-a");
        assert_eq!(body(&entries[1]), b"rec-b");
        assert_eq!(body(&entries[2]), b"node");
        assert_eq!((entries[0].raw_len, entries[0].codec, entries[0].base), (100, 1, None));
        assert_eq!((entries[1].codec, entries[1].base), (CODEC_DELTA, Some(Id::of_chunk(b"a"))), "a delta's base is in the index");
    }

    /// A format 1 pack of `sample`'s objects, as writers before bases wrote it.
    fn format_1(pack: &[u8], entries: &[Entry]) -> Vec<u8> {
        let data_end = entries.last().map_or(MAGIC.len(), |e| (e.offset + e.len) as usize);
        let mut b = MAGIC_1.to_vec();
        b.extend_from_slice(&pack[MAGIC.len()..data_end]);
        let index_start = b.len();
        for e in entries {
            b.push(e.kind as u8);
            b.extend_from_slice(e.id.as_bytes());
            for n in [e.offset, e.len, e.raw_len] {
                b.extend_from_slice(&n.to_le_bytes());
            }
            b.push(e.codec);
        }
        let hash = blake3::hash(&b[index_start..]);
        b.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        b.extend_from_slice(hash.as_bytes());
        b.extend_from_slice(MAGIC_1);
        b
    }

    #[test]
    fn a_format_1_pack_is_still_read_without_bases() {
        let (pack, entries) = sample();
        let old = format_1(&pack, &entries);
        let got = decode_index(&old, old.len() as u64).unwrap();
        let unbased: Vec<Entry> = entries.iter().map(|e| Entry { base: None, ..e.clone() }).collect();
        assert_eq!(got, unbased);
    }

    #[test]
    fn a_base_is_refused_on_anything_but_a_delta_record_and_required_on_one() {
        for (codec, base) in [(1, Some(Id::of_chunk(b"x"))), (CODEC_DELTA, None)] {
            let mut w = PackWriter::default();
            w.add_record(Id::of_chunk(b"a"), b"record-a", 100, codec, base);
            let pack = w.seal();
            let err = decode_index(&pack, pack.len() as u64).unwrap_err().to_string();
            assert!(err.contains("base"), "{err}");
        }
    }

    #[test]
    fn a_damaged_or_cut_tail_is_refused() {
        let (pack, _) = sample();
        for cut in 1..pack.len() {
            let tail = &pack[cut..];
            assert!(decode_index(tail, pack.len() as u64 - cut as u64).is_err(), "a pack cut at {cut} decoded");
        }
        for i in 0..pack.len() {
            let mut bad = pack.clone();
            bad[i] ^= 0x40;
            if let Ok(entries) = decode_index(&bad, bad.len() as u64) {
                // Only the data may change unnoticed here: records are
                // verified against their ids when read.
                assert!(i < pack.len() - FOOTER_LEN - 3 * ENTRY_LEN, "a flip at {i} went unnoticed");
                assert_eq!(entries.len(), 3);
            }
        }
    }
}

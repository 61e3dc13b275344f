//! Garbage collection where records sit in shared packs (object storage):
//! sparse packs are rewritten and retired, and retired packs deleted once
//! nobody can still be reading them. Normative in `protocol/store.md` §7.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ferry_core::{codec, Id};
use rocksdb::WriteBatch;

use crate::backend::{RepackPolicy, VerifiedRecord};
use crate::check::{crash_point, GcReport};
use crate::marks::Marks;
use crate::pack::{PackName, Retirement};
use crate::write::{write, Durability};
use crate::{multi_get_in_order, IndexEntry, Result, Store, StoreError, CF_META, CF_TREES};

/// In the metadata: the packs retired and not yet deleted, each its name
/// and the Unix second it was retired at (16 + 8 bytes, little-endian).
const RETIRED: &[u8] = b"retired-packs";

/// Live bytes one gc copies at most; packs left over wait for the next
/// run (writers are held off while it copies).
const COPY_PER_RUN: u64 = 1 << 30;

/// Packs one gc retires at most (the ids of their unreachable chunks are
/// held until then: about 16 KiB per 32 MiB pack).
const PACKS_PER_RUN: usize = 4096;

/// Packs rewritten between two syncs: their live records' index entries
/// wait in memory until the new packs are durable.
const GROUP: usize = 16;

/// Records read and written per batch while copying.
const BATCH: usize = 256;

/// The index entries of one group of packs being rewritten.
#[derive(Default)]
struct Group {
    /// Reachable chunks, to copy.
    live: Vec<(Id, IndexEntry)>,
    /// Unreachable chunks, whose entries go with the packs.
    dead: Vec<Id>,
}

impl Store {
    /// Deletes retired packs whose grace has passed, then rewrites the
    /// sparsest packs (live bytes below the policy's fraction), up to
    /// [`COPY_PER_RUN`] live bytes and [`PACKS_PER_RUN`] packs: live records and nodes are copied into
    /// new packs, made durable, the index pointed at them, the old packs
    /// retired in the journal and their dead entries dropped. A kill at
    /// any point leaves every kept chunk and node in a pack the journal
    /// announces and no index entry pointing into a deleted pack.
    pub(crate) fn repack(&self, marks: &Marks, policy: RepackPolicy, rep: &mut GcReport) -> Result<()> {
        self.delete_expired_packs(policy.grace, rep)?;
        // Live and total stored bytes per pack: the index keeps entries of
        // dead chunks until their pack is retired, so it knows both.
        let mut usage: HashMap<PackName, (u64, u64)> = HashMap::new();
        for item in self.index.iter() {
            let Ok((id, entry)) = item? else { continue };
            let Some(pack) = self.backend.pack_of(&entry.location) else { continue };
            let u = usage.entry(pack).or_default();
            u.1 += entry.stored_len as u64;
            if marks.chunk(&id)? {
                u.0 += entry.stored_len as u64;
                rep.chunks_kept += 1;
            }
        }
        let mut sparse: Vec<(PackName, u64)> =
            usage.into_iter().filter(|(_, (live, total))| (*live as f64) < policy.repack_below * *total as f64).map(|(p, (live, _))| (p, live)).collect();
        sparse.sort_unstable_by_key(|&(p, live)| (live, p));
        let mut budget = COPY_PER_RUN;
        let chosen: Vec<PackName> = sparse
            .into_iter()
            .take_while(|&(_, live)| {
                let fits = live <= budget;
                budget = budget.saturating_sub(live);
                fits
            })
            .take(PACKS_PER_RUN)
            .map(|(p, _)| p)
            .collect();
        // One more walk of the index sorts the chosen packs' entries into
        // their groups: live ones to copy, dead ones to drop.
        let group_of: HashMap<PackName, usize> = chosen.iter().enumerate().map(|(i, p)| (*p, i / GROUP)).collect();
        let mut groups: Vec<Group> = (0..chosen.len().div_ceil(GROUP)).map(|_| Group::default()).collect();
        for item in self.index.iter() {
            let Ok((id, entry)) = item? else { continue };
            let Some(&g) = self.backend.pack_of(&entry.location).and_then(|p| group_of.get(&p)) else { continue };
            if marks.chunk(&id)? {
                groups[g].live.push((id, entry));
            } else {
                rep.chunks_removed += 1;
                rep.bytes_removed += entry.stored_len as u64;
                groups[g].dead.push(id);
            }
        }
        for (packs, group) in chosen.chunks(GROUP).zip(groups) {
            self.rewrite_packs(packs, group, marks, rep)?;
        }
        Ok(())
    }

    /// Copies the group's live records, and the nodes `marks` keeps in
    /// `packs`, into new packs, then retires them (dropping the dead
    /// chunks' entries).
    fn rewrite_packs(&self, packs: &[PackName], group: Group, marks: &Marks, rep: &mut GcReport) -> Result<()> {
        let mut moved: Vec<(Id, IndexEntry)> = Vec::with_capacity(group.live.len());
        for batch in group.live.chunks(BATCH) {
            let records = self.copyable_records(batch)?;
            rep.bytes_copied += records.iter().map(|r| r.record().len() as u64).sum::<u64>();
            let locations = self.backend.put(&records)?;
            moved.extend(records.iter().zip(locations).map(|(r, loc)| (r.id(), IndexEntry::of(r, loc))));
        }
        // The kept nodes in these packs go along: a store rebuilt from the
        // bucket finds its nodes in packs only.
        for pack in packs {
            let mut ids: Vec<Id> = Vec::new();
            for id in self.backend.pack_nodes(pack)? {
                if marks.node(&id)? {
                    ids.push(id);
                }
            }
            let encoded = multi_get_in_order(&self.db, self.cf(CF_TREES), &ids)?;
            let mut nodes = Vec::with_capacity(ids.len());
            for (id, enc) in ids.iter().zip(encoded) {
                nodes.push((*id, enc.ok_or(StoreError::MissingNode(*id))?));
            }
            if !nodes.is_empty() {
                self.backend.put_nodes(&nodes)?;
            }
        }
        self.backend.sync()?;
        crash_point("gc-copied");
        let mut batch = WriteBatch::default();
        self.index.batch_put(&mut batch, moved);
        write(&self.db, batch, Durability::Synced)?;
        crash_point("gc-repointed");
        let retirement = Retirement { at: ferry_core::time::unix_now().max(0) as u64, packs: packs.to_vec() };
        self.backend.retire(&retirement)?;
        crash_point("gc-retired");
        self.apply_retirements(std::slice::from_ref(&retirement), Some(group.dead))?;
        rep.packs_retired += packs.len() as u64;
        Ok(())
    }

    /// Reads live records to copy, verified: a record must decode to bytes
    /// that hash to its id (a delta against its base, which is kept too).
    fn copyable_records(&self, batch: &[(Id, IndexEntry)]) -> Result<Vec<VerifiedRecord>> {
        let wanted: Vec<(Id, &crate::Location)> = batch.iter().map(|(id, e)| (*id, &e.location)).collect();
        let records = self.backend.get_many(&wanted)?;
        let bases: Vec<Option<Id>> = batch.iter().map(|(_, e)| e.base).collect();
        let base_bytes = self.read_bases(&bases, 1);
        let mut out = Vec::with_capacity(batch.len());
        for (((id, _), record), base) in batch.iter().zip(records).zip(&bases) {
            let record = record.ok_or(StoreError::MissingChunk(*id))?;
            let (raw, _) = crate::decode_stored(id, &record, base.as_ref(), &base_bytes)?;
            debug_assert_eq!(codec::read_header(&record).map(|h| h.raw_len as usize).ok(), Some(raw.len()));
            out.push(VerifiedRecord::encoded(*id, record));
        }
        Ok(out)
    }

    /// Applies retirements to the database: drops the index entries that
    /// still point into the retired packs (`dead` when the caller knows
    /// them, else found by a walk of the index) and remembers the packs
    /// for deletion after the grace period. Idempotent.
    pub(crate) fn apply_retirements(&self, retirements: &[Retirement], dead: Option<Vec<Id>>) -> Result<()> {
        let retired: HashSet<&PackName> = retirements.iter().flat_map(|r| &r.packs).collect();
        let dead = match dead {
            Some(d) => d,
            None => {
                let mut d = Vec::new();
                for item in self.index.iter() {
                    let Ok((id, entry)) = item? else { continue };
                    if self.backend.pack_of(&entry.location).is_some_and(|p| retired.contains(&p)) {
                        d.push(id);
                    }
                }
                d
            }
        };
        let mut list = self.retired_packs()?;
        let mut known: HashSet<PackName> = list.iter().map(|x| x.0).collect();
        for r in retirements {
            list.extend(r.packs.iter().filter(|p| known.insert(**p)).map(|p| (*p, r.at)));
        }
        let mut batch = WriteBatch::default();
        self.index.batch_delete(&mut batch, &dead);
        batch.put_cf(self.cf(CF_META), RETIRED, encode_retired(&list));
        write(&self.db, batch, Durability::Synced)
    }

    /// Deletes the retired packs whose grace has passed, then forgets them.
    fn delete_expired_packs(&self, grace: Duration, rep: &mut GcReport) -> Result<()> {
        let list = self.retired_packs()?;
        let now = ferry_core::time::unix_now().max(0) as u64;
        let (expired, waiting): (Vec<_>, Vec<_>) = list.into_iter().partition(|(_, at)| at.saturating_add(grace.as_secs()) <= now);
        if expired.is_empty() {
            return Ok(());
        }
        let names: Vec<PackName> = expired.iter().map(|x| x.0).collect();
        self.backend.delete_packs(&names)?;
        crash_point("gc-deleted-packs");
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META), RETIRED, encode_retired(&waiting));
        write(&self.db, batch, Durability::Synced)?;
        rep.packs_deleted += names.len() as u64;
        Ok(())
    }

    /// The packs retired and not yet deleted, with when.
    pub(crate) fn retired_packs(&self) -> Result<Vec<(PackName, u64)>> {
        let Some(v) = self.db.get_cf(self.cf(CF_META), RETIRED)? else { return Ok(Vec::new()) };
        Ok(v.chunks_exact(24).map(|c| (c[..16].try_into().expect("16 bytes"), u64::from_le_bytes(c[16..].try_into().expect("8 bytes")))).collect())
    }
}

fn encode_retired(list: &[(PackName, u64)]) -> Vec<u8> {
    let mut b = Vec::with_capacity(list.len() * 24);
    for (name, at) in list {
        b.extend_from_slice(name);
        b.extend_from_slice(&at.to_le_bytes());
    }
    b
}

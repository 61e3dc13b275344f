//! Retention: which revisions of a repository to keep, by rules like
//! restic's (the last N, the newest of each of the last N hours, days,
//! weeks or months, everything within a span), and forgetting the rest.
//!
//! A forgotten revision keeps its record, so the history stays whole and
//! every id in it verifiable; what it loses is its hold on its files: gc
//! no longer keeps their trees and chunks for it, and reading its files
//! answers "forgotten". Marks are per repository (`forgotten` column
//! family: repository, NUL, revision id; journaled like a branch move),
//! because a revision may be in the history of several repositories and
//! only the one that forgot it lets go. Every branch and tag head is
//! always kept.

use std::collections::{BTreeSet, HashSet};

use crate::journal::{JournalEntry, MAX_JOURNAL_REVISIONS};
use crate::{Result, Store, CF_FORGOTTEN};
use ferry_core::Id;

/// Which revisions to keep (a revision any rule keeps is kept). Each count
/// is per branch or tag, over its history newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeepRules {
    /// The newest N.
    pub last: Option<usize>,
    /// The newest of each of the last N hours that have one.
    pub hourly: Option<usize>,
    /// The newest of each of the last N days that have one.
    pub daily: Option<usize>,
    /// The newest of each of the last N weeks (Monday to Sunday, UTC).
    pub weekly: Option<usize>,
    /// The newest of each of the last N calendar months (UTC).
    pub monthly: Option<usize>,
    /// Everything newer than this many seconds before now.
    pub within: Option<i64>,
}

/// A revision as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The revision.
    pub id: Id,
    /// Its time (Unix seconds).
    pub time: i64,
}

/// The revisions `rules` keep among `histories`: one list per branch or
/// tag, its head first, then what its head reaches (each once, children
/// before parents). Heads are always kept. Pure, so that a hub's history
/// fetched over the network is judged exactly as a local one.
pub fn keep(histories: &[Vec<Candidate>], rules: &KeepRules, now: i64) -> HashSet<Id> {
    let mut kept = HashSet::new();
    for history in histories {
        let Some(head) = history.first() else { continue };
        kept.insert(head.id);
        // Stable: revisions of the same second keep the history's order,
        // children before parents.
        let mut newest_first = history.clone();
        newest_first.sort_by_key(|c| std::cmp::Reverse(c.time));
        if let Some(n) = rules.last {
            kept.extend(newest_first.iter().take(n).map(|c| c.id));
        }
        if let Some(span) = rules.within {
            kept.extend(newest_first.iter().filter(|c| c.time > now.saturating_sub(span)).map(|c| c.id));
        }
        let days = |t: i64| t.div_euclid(86_400);
        type Bucket<'a> = &'a dyn Fn(i64) -> i64;
        let buckets: [(Option<usize>, Bucket); 4] = [
            (rules.hourly, &|t| t.div_euclid(3600)),
            (rules.daily, &days),
            // 1970-01-01 was a Thursday: shifting by 3 days starts weeks on Monday.
            (rules.weekly, &|t| (days(t) + 3).div_euclid(7)),
            (rules.monthly, &|t| {
                let (y, m, _) = ferry_core::time::civil_from_days(days(t));
                y * 12 + i64::from(m)
            }),
        ];
        for (count, bucket) in buckets {
            let Some(n) = count else { continue };
            let mut seen = BTreeSet::new();
            for c in &newest_first {
                if seen.len() == n {
                    break;
                }
                if seen.insert(bucket(c.time)) {
                    kept.insert(c.id);
                }
            }
        }
    }
    kept
}

/// A mark's key: repository, NUL, revision id.
pub(crate) fn forgotten_key(repo: &str, id: &Id) -> Vec<u8> {
    let mut k = Vec::with_capacity(repo.len() + 33);
    k.extend_from_slice(repo.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

impl Store {
    /// For each id, whether `repo` forgot that revision; one batched lookup.
    pub fn forgotten(&self, repo: &str, ids: &[Id]) -> Result<Vec<bool>> {
        let cf = self.cf(CF_FORGOTTEN);
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| forgotten_key(repo, id)).collect();
        self.db.multi_get_cf(keys.iter().map(|k| (cf, k))).into_iter().map(|r| Ok(r?.is_some())).collect()
    }

    /// Whether `repo` forgot revision `id`.
    pub fn is_forgotten(&self, repo: &str, id: &Id) -> Result<bool> {
        Ok(self.db.get_pinned_cf(self.cf(CF_FORGOTTEN), forgotten_key(repo, id))?.is_some())
    }

    /// Every revision id some repository forgot.
    pub(crate) fn forgotten_anywhere(&self) -> Result<HashSet<Id>> {
        let mut out = HashSet::new();
        for item in self.db.iterator_cf(self.cf(CF_FORGOTTEN), rocksdb::IteratorMode::Start) {
            let (k, _) = item?;
            out.extend(k.len().checked_sub(32).and_then(|at| Id::from_slice(&k[at..])));
        }
        Ok(out)
    }

    /// Marks revisions of `repo` forgotten, journaled (so a store rebuilt
    /// from its bucket has them) and synced. A revision need not be stored
    /// yet: a transfer marks the forgotten revisions of a history before
    /// it stores them.
    pub fn mark_forgotten(&self, repo: &str, ids: &[Id]) -> Result<()> {
        ferry_core::names::check_repo_name(repo)?;
        for batch in ids.chunks(MAX_JOURNAL_REVISIONS) {
            let entry = JournalEntry { forgotten: batch.iter().map(|id| (repo.to_owned(), *id)).collect(), ..Default::default() };
            self.journal_and_write(&entry)?;
        }
        Ok(())
    }

    /// Each branch's and tag's history in `repo` as the rules judge it: its
    /// head, then every revision it reaches that is not forgotten yet.
    pub fn retention_candidates(&self, repo: &str) -> Result<Vec<Vec<Candidate>>> {
        self.repo(repo)?;
        let mut out = Vec::new();
        for (_, head) in self.branches(repo)? {
            let mut history = Vec::new();
            self.walk_history(&[head], &[], usize::MAX, |id, rev| {
                history.push(Candidate { id, time: rev.time });
                Ok::<_, crate::StoreError>(())
            })?;
            let gone = self.forgotten(repo, &history.iter().map(|c| c.id).collect::<Vec<_>>())?;
            let mut gone = gone.into_iter();
            history.retain(|c| !gone.next().unwrap_or(false) || c.id == head);
            out.push(history);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(n: u8, time: i64) -> Candidate {
        Candidate { id: Id::of_chunk(&[n]), time }
    }

    #[test]
    fn rules_keep_the_head_the_last_n_and_the_newest_of_each_period() {
        const DAY: i64 = 86_400;
        let now = 100 * DAY;
        // A checkpoint every 6 hours for 10 days, newest first.
        let history: Vec<Candidate> = (0..40u8).map(|i| c(i, now - i64::from(i) * DAY / 4)).collect();
        let ids = |set: &HashSet<Id>| {
            let mut v: Vec<u8> = (0..40u8).filter(|&i| set.contains(&Id::of_chunk(&[i]))).collect();
            v.sort();
            v
        };
        let rules = |r: KeepRules| ids(&keep(std::slice::from_ref(&history), &r, now));
        assert_eq!(rules(KeepRules::default()), [0], "the head is always kept");
        assert_eq!(rules(KeepRules { last: Some(3), ..Default::default() }), [0, 1, 2]);
        // Day 100 holds 0 alone; day 99 holds 1..=4 (newest 1); and so on.
        assert_eq!(rules(KeepRules { daily: Some(3), ..Default::default() }), [0, 1, 5]);
        assert_eq!(rules(KeepRules { within: Some(DAY), ..Default::default() }), [0, 1, 2, 3]);
        assert_eq!(rules(KeepRules { last: Some(1), weekly: Some(2), ..Default::default() }).len(), 2);
        // A second branch keeps its own.
        let other = vec![c(39, now - 39 * DAY / 4)];
        assert!(keep(&[history.clone(), other], &KeepRules::default(), now).contains(&Id::of_chunk(&[39])));
    }
}

//! The newest log entries, kept decoded. openraft's core reads every committed entry back from
//! the log to hand it to the state machine, and its replication tasks read what they send; all
//! of it was appended moments before. Served from here, those reads cost a reference count
//! instead of a RocksDB read and a JSON decode on the core's one task.
//!
//! The cache always holds an exact suffix of the log (contiguous indexes up to the last
//! appended entry), so a read that starts inside it is answered whole from it; anything older
//! comes from RocksDB.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::Entry;

use crate::TypeConfig;

/// How many entries are kept: enough to cover what is appended and not yet applied or sent.
pub const RECENT_ENTRIES: usize = 256;

/// Shared by the log store and every clone of its reader.
#[derive(Clone, Default)]
pub struct RecentEntries {
    entries: Arc<Mutex<VecDeque<Entry<TypeConfig>>>>,
}

impl RecentEntries {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Entry<TypeConfig>>> {
        // Nothing below panics while holding the lock, so a poisoned one (a panic elsewhere in
        // the thread that held it) still guards a consistent deque.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps appended entries (in index order).
    pub fn appended(&self, appended: Vec<Entry<TypeConfig>>) {
        let mut entries = self.lock();
        for entry in appended {
            if entries.back().is_some_and(|last| last.log_id.index + 1 != entry.log_id.index) {
                entries.clear();
            }
            entries.push_back(entry);
            if entries.len() > RECENT_ENTRIES {
                entries.pop_front();
            }
        }
    }

    /// Forgets the entries from `index` on (the log was truncated there).
    pub fn truncated(&self, index: u64) {
        let mut entries = self.lock();
        while entries.back().is_some_and(|last| last.log_id.index >= index) {
            entries.pop_back();
        }
    }

    /// Forgets the entries up to and including `index` (purged from the log).
    pub fn purged(&self, index: u64) {
        let mut entries = self.lock();
        while entries.front().is_some_and(|first| first.log_id.index <= index) {
            entries.pop_front();
        }
    }

    /// The entries `start..end` (`end` open when `None`) if the cache covers `start`, else
    /// `None`: the caller reads the log.
    pub fn get(&self, start: u64, end: Option<u64>) -> Option<Vec<Entry<TypeConfig>>> {
        let entries = self.lock();
        let first = entries.front()?.log_id.index;
        if start < first {
            return None;
        }
        let from = usize::try_from(start - first).ok()?;
        Some(
            entries
                .iter()
                .skip(from)
                .take_while(|entry| end.is_none_or(|end| entry.log_id.index < end))
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    use super::*;

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry { log_id: LogId::new(CommittedLeaderId::new(term, 1), index), payload: EntryPayload::Blank }
    }

    fn indexes(entries: Option<Vec<Entry<TypeConfig>>>) -> Option<Vec<(u64, u64)>> {
        entries.map(|e| e.iter().map(|e| (e.log_id.leader_id.term, e.log_id.index)).collect())
    }

    #[test]
    fn serves_a_suffix_of_the_log_and_nothing_before_it() {
        let cache = RecentEntries::default();
        assert_eq!(indexes(cache.get(1, None)), None, "empty");
        cache.appended(vec![entry(1, 5), entry(1, 6), entry(1, 7)]);
        assert_eq!(indexes(cache.get(6, Some(8))), Some(vec![(1, 6), (1, 7)]));
        assert_eq!(indexes(cache.get(6, Some(7))), Some(vec![(1, 6)]));
        assert_eq!(indexes(cache.get(8, None)), Some(vec![]), "nothing past the last entry");
        assert_eq!(indexes(cache.get(4, None)), None, "older than the cache: read the log");
    }

    #[test]
    fn follows_truncation_purge_and_gaps() {
        let cache = RecentEntries::default();
        cache.appended(vec![entry(1, 1), entry(1, 2), entry(1, 3)]);
        cache.truncated(2);
        cache.appended(vec![entry(2, 2)]);
        assert_eq!(indexes(cache.get(1, None)), Some(vec![(1, 1), (2, 2)]), "the new leader's entry replaces the old");
        cache.purged(1);
        assert_eq!(indexes(cache.get(1, None)), None);
        assert_eq!(indexes(cache.get(2, None)), Some(vec![(2, 2)]));
        cache.appended(vec![entry(3, 10)]);
        assert_eq!(indexes(cache.get(2, None)), None, "a gap (a snapshot installed) starts over");
        assert_eq!(indexes(cache.get(10, None)), Some(vec![(3, 10)]));
    }

    #[test]
    fn keeps_only_the_newest() {
        let cache = RecentEntries::default();
        let all: Vec<_> = (1..=RECENT_ENTRIES as u64 + 10).map(|i| entry(1, i)).collect();
        cache.appended(all);
        assert_eq!(cache.get(10, None), None);
        assert_eq!(cache.get(11, None).map(|e| e.len()), Some(RECENT_ENTRIES));
    }
}

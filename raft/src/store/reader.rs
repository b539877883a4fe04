//! [`StateReader`]: the read side of the state machine. The REST API reads through it while
//! Raft applies; every applied batch is one atomic RocksDB write, so a read never sees half a
//! batch. It is also the base the state machine's [`crate::kv::Overlay`] reads through.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::LogId;
use rocksdb::{Direction, IteratorMode, ReadOptions};

use super::db::{Db, DbError, CF_SM, CF_SM_META, LAST_APPLIED_KEY};
use crate::kv::{KvRead, StoreError, Visit};
use crate::NodeId;

/// A cheap, cloneable read handle on the applied state.
#[derive(Clone)]
pub struct StateReader {
    db: Db,
    /// The last applied index plus one; 0 when nothing was applied.
    applied: Arc<AtomicU64>,
}

impl StateReader {
    pub(crate) fn new(db: Db) -> Result<Self, DbError> {
        let reader = StateReader { db, applied: Arc::new(AtomicU64::new(0)) };
        reader.set_last_applied(read_last_applied(&reader.db)?);
        Ok(reader)
    }

    /// The index of the last log entry whose effects this reader sees (at least).
    pub fn last_applied_index(&self) -> Option<u64> {
        self.applied.load(Ordering::Acquire).checked_sub(1)
    }

    /// Called after the state up to `last` has been written.
    pub(crate) fn set_last_applied(&self, last: Option<LogId<NodeId>>) {
        let encoded = last.map_or(0, |id| id.index.saturating_add(1));
        self.applied.store(encoded, Ordering::Release);
    }
}

/// The `last_applied` recorded in `sm_meta`.
pub(crate) fn read_last_applied(db: &Db) -> Result<Option<LogId<NodeId>>, DbError> {
    Ok(db.get_json::<Option<LogId<NodeId>>>(CF_SM_META, LAST_APPLIED_KEY)?.flatten())
}

impl KvRead for StateReader {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let cf = self.db.cf(CF_SM)?;
        Ok(self.db.raw().get_cf(cf, key).map_err(DbError::from)?)
    }

    fn scan(&self, prefix: &[u8], visit: Visit<'_>) -> Result<(), StoreError> {
        self.scan_from(prefix, prefix, visit)
    }

    fn scan_after(&self, prefix: &[u8], after: &[u8], visit: Visit<'_>) -> Result<(), StoreError> {
        let mut start = after.to_vec();
        start.push(0);
        self.scan_from(prefix, &start, visit)
    }
}

impl StateReader {
    /// Visits the entries under `prefix` from the first key ≥ `start`. The iterator is bounded
    /// above by the prefix's end: without the bound, a scan of an empty or exhausted range would
    /// walk every tombstone up to the next live key of some other range (the queue's, the
    /// status index's), which made small scans cost thousands of steps.
    fn scan_from(&self, prefix: &[u8], start: &[u8], visit: Visit<'_>) -> Result<(), StoreError> {
        let cf = self.db.cf(CF_SM)?;
        let mut options = ReadOptions::default();
        if let Some(end) = prefix_end(prefix) {
            options.set_iterate_upper_bound(end);
        }
        let mode = IteratorMode::From(start, Direction::Forward);
        for item in self.db.raw().iterator_cf_opt(cf, options, mode) {
            let (key, value) = item.map_err(DbError::from)?;
            if !key.starts_with(prefix) || visit(&key, &value).is_break() {
                break;
            }
        }
        Ok(())
    }
}

/// The smallest key greater than every key starting with `prefix` (`None`: no such key).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod prefix_tests {
    #[test]
    fn prefix_end_is_the_next_key_after_the_range() {
        assert_eq!(super::prefix_end(b"q/"), Some(b"q0".to_vec()));
        assert_eq!(super::prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(super::prefix_end(b"\xff\xff"), None);
        assert_eq!(super::prefix_end(b""), None);
    }
}

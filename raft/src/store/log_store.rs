//! openraft's log storage over the `log` and `raft_meta` column families: the durable record of
//! what this node has accepted. Votes are written synced; appends are written unsynced and
//! acknowledged by the [`Flusher`] once a group fsync covers them.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};

use super::db::{
    decode_json, encode_json, log_key, Db, DbError, CF_LOG, CF_RAFT_META, COMMITTED_KEY, LAST_PURGED_KEY, VOTE_KEY,
};
use super::flusher::Flusher;
use super::recent::RecentEntries;
use crate::{NodeId, TypeConfig};

/// Reads the log; cheap to clone, shared with openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    db: Db,
    recent: RecentEntries,
}

/// The log store openraft drives. Owns the flusher thread; dropping the store stops it.
pub struct LogStore {
    reader: LogReader,
    flusher: Flusher,
}

impl LogStore {
    pub(crate) fn new(db: Db) -> io::Result<Self> {
        let flush_db = db.clone();
        let flusher = Flusher::spawn(move || flush_db.sync_wal().map_err(io::Error::other))?;
        Ok(LogStore { reader: LogReader { db, recent: RecentEntries::default() }, flusher })
    }

    fn db(&self) -> &Db {
        &self.reader.db
    }

    /// A reader of the log that outlives the store's hand-over to openraft.
    pub fn reader(&self) -> LogReader {
        self.reader.clone()
    }
}

impl LogReader {
    /// The id of the last entry this node holds (appended, not necessarily flushed or
    /// committed), or of the last purged one when the log is empty: what Raft compares to
    /// decide whose log is more up to date.
    pub fn last_log_id(&self) -> Result<Option<LogId<NodeId>>, DbError> {
        let db = &self.db;
        let mut last = db.raw().iterator_cf(db.cf(CF_LOG)?, IteratorMode::End);
        match last.next().transpose()? {
            Some((key, value)) => Ok(Some(decode_json::<Entry<TypeConfig>>(CF_LOG, &key, &value)?.log_id)),
            None => self.last_purged(),
        }
    }

    /// The last index this node knows to be committed, as openraft last saved it (before
    /// applying up to it).
    pub fn committed(&self) -> Result<Option<LogId<NodeId>>, DbError> {
        let committed: Option<Option<LogId<NodeId>>> = self.db.get_json(CF_RAFT_META, COMMITTED_KEY)?;
        Ok(committed.flatten())
    }

    fn last_purged(&self) -> Result<Option<LogId<NodeId>>, DbError> {
        self.db.get_json(CF_RAFT_META, LAST_PURGED_KEY)
    }

    fn entries(&self, start: u64, end: Option<u64>) -> Result<Vec<Entry<TypeConfig>>, DbError> {
        if let Some(recent) = self.recent.get(start, end) {
            return Ok(recent);
        }
        let mut opts = ReadOptions::default();
        if let Some(end) = end {
            opts.set_iterate_upper_bound(log_key(end));
        }
        let first = log_key(start);
        let iter =
            self.db.raw().iterator_cf_opt(self.db.cf(CF_LOG)?, opts, IteratorMode::From(&first, Direction::Forward));
        iter.map(|item| {
            let (key, value) = item?;
            decode_json(CF_LOG, &key, &value)
        })
        .collect()
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => Some(i),
            Bound::Excluded(&i) => i.checked_add(1),
            Bound::Unbounded => Some(0),
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.checked_add(1),
            Bound::Excluded(&i) => Some(i),
            Bound::Unbounded => None,
        };
        match start {
            None => Ok(Vec::new()),
            Some(start) => self.entries(start, end).map_err(|e| StorageIOError::read_logs(&e).into()),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        self.reader.try_get_log_entries(range).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let read = || -> Result<_, DbError> {
            Ok(LogState { last_purged_log_id: self.reader.last_purged()?, last_log_id: self.reader.last_log_id()? })
        };
        read().map_err(|e| StorageIOError::read_logs(&e).into())
    }

    async fn get_log_reader(&mut self) -> LogReader {
        self.reader.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.db().put_json(CF_RAFT_META, VOTE_KEY, vote, true).map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.db().get_json(CF_RAFT_META, VOTE_KEY).map_err(|e| StorageIOError::read_vote(&e).into())
    }

    /// Not synced: a `committed` lost in a crash only means fewer entries are re-applied at
    /// startup, and the shared WAL never lets it outlive the entries it points at.
    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError<NodeId>> {
        self.db().put_json(CF_RAFT_META, COMMITTED_KEY, &committed, false).map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        self.reader.committed().map_err(|e| StorageIOError::read(&e).into())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = std::time::Instant::now();
        let entries: Vec<_> = entries.into_iter().collect();
        let write = || -> Result<(), DbError> {
            let cf = self.db().cf(CF_LOG)?;
            let mut batch = WriteBatch::default();
            for entry in &entries {
                let key = log_key(entry.log_id.index);
                batch.put_cf(cf, key, encode_json(CF_LOG, &key, entry)?);
            }
            self.db().write(batch, false)
        };
        write().map_err(|e| StorageIOError::write_logs(&e))?;
        self.reader.recent.appended(entries);
        metrics::histogram!("jcs_raft_log_append_seconds").record(started.elapsed().as_secs_f64());
        self.flusher
            .submit(Box::new(move |result| callback.log_io_completed(result)))
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    /// Synced, like [`Self::purge`]: both are rare, and a synced write also settles every
    /// append before it.
    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let write = || -> Result<(), DbError> {
            let cf = self.db().cf(CF_LOG)?;
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(cf, log_key(log_id.index), log_key(u64::MAX));
            batch.delete_cf(cf, log_key(u64::MAX));
            self.db().write(batch, true)
        };
        write().map_err(|e| StorageIOError::write_logs(&e))?;
        self.reader.recent.truncated(log_id.index);
        Ok(())
    }

    /// Deletes the entries and records `last_purged_log_id` in one batch, so the log state
    /// read back after a crash is always one of before or after.
    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let write = || -> Result<(), DbError> {
            let cf = self.db().cf(CF_LOG)?;
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(cf, log_key(0), log_key(log_id.index));
            batch.delete_cf(cf, log_key(log_id.index));
            batch.put_cf(
                self.db().cf(CF_RAFT_META)?,
                LAST_PURGED_KEY,
                encode_json(CF_RAFT_META, LAST_PURGED_KEY, &log_id)?,
            );
            self.db().write(batch, true)
        };
        write().map_err(|e| StorageIOError::write_logs(&e))?;
        self.reader.recent.purged(log_id.index);
        Ok(())
    }
}

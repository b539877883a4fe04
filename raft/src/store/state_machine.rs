//! openraft's state machine over the `sm` and `sm_meta` column families: runs the pure
//! [`crate::apply::apply`] over committed entries and writes each batch's effects together with
//! `last_applied` in one atomic write; builds and installs snapshots.

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot, StorageError, StorageIOError,
    StoredMembership,
};
use rocksdb::{ColumnFamily, IteratorMode, WriteBatch};

use super::db::{decode_json, encode_json, Db, DbError, CF_SM, CF_SM_META, LAST_APPLIED_KEY, MEMBERSHIP_KEY};
use super::reader::{read_last_applied, StateReader};
use super::snapshot::{decode_data, DataEncoder, Meta, SnapshotFiles};
use crate::command::{Proposal, ProposalResult};
use crate::kv::{Kv, Overlay, StoreError};
use crate::{apply, NodeId, NodeInfo, TypeConfig};

type Membership = StoredMembership<NodeId, NodeInfo>;

/// The state machine openraft drives.
pub struct StateMachine {
    db: Db,
    reader: StateReader,
    snapshots: Arc<SnapshotFiles>,
}

/// Builds a snapshot from a consistent point-in-time view, concurrently with apply.
pub struct SnapshotBuilder {
    db: Db,
    snapshots: Arc<SnapshotFiles>,
}

impl StateMachine {
    pub(crate) fn new(db: Db, reader: StateReader, snapshots: Arc<SnapshotFiles>) -> Self {
        StateMachine { db, reader, snapshots }
    }

    /// Writes one applied batch: the data, `last_applied` and (if it changed) the membership,
    /// atomically.
    ///
    /// Not synced, on purpose: the Raft log is the durable record. All column families share
    /// one WAL, so these writes can never become durable before the log entries they apply;
    /// after an OS crash that loses them, `last_applied` is older too and openraft re-applies
    /// the log from `last_applied + 1` (up to the persisted `committed`), reproducing the same
    /// state because apply is deterministic. A process crash loses nothing: RocksDB has
    /// already handed the WAL write to the OS.
    fn commit(
        &self,
        writes: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
        last_applied: LogId<NodeId>,
        membership: Option<&Membership>,
    ) -> Result<(), DbError> {
        let (sm, meta) = (self.db.cf(CF_SM)?, self.db.cf(CF_SM_META)?);
        let mut batch = WriteBatch::default();
        for (key, value) in writes {
            match value {
                Some(value) => batch.put_cf(sm, key, value),
                None => batch.delete_cf(sm, key),
            }
        }
        put_applied_state(&mut batch, meta, Some(last_applied), membership)?;
        self.db.write(batch, false)
    }

    fn applied_state(&self) -> Result<(Option<LogId<NodeId>>, Membership), DbError> {
        let membership = self.db.get_json(CF_SM_META, MEMBERSHIP_KEY)?.unwrap_or_default();
        Ok((read_last_applied(&self.db)?, membership))
    }
}

fn put_applied_state(
    batch: &mut WriteBatch,
    meta: &ColumnFamily,
    last_applied: Option<LogId<NodeId>>,
    membership: Option<&Membership>,
) -> Result<(), DbError> {
    batch.put_cf(meta, LAST_APPLIED_KEY, encode_json(CF_SM_META, LAST_APPLIED_KEY, &last_applied)?);
    if let Some(membership) = membership {
        batch.put_cf(meta, MEMBERSHIP_KEY, encode_json(CF_SM_META, MEMBERSHIP_KEY, membership)?);
    }
    Ok(())
}

/// Applies every command of a proposal at the proposer's clock.
fn run(kv: &mut impl Kv, proposal: &Proposal) -> Result<ProposalResult, StoreError> {
    let results =
        proposal.commands.iter().map(|command| apply::apply(kv, command, proposal.at_ms)).collect::<Result<_, _>>()?;
    Ok(ProposalResult { results })
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, Membership), StorageError<NodeId>> {
        StateMachine::applied_state(self).map_err(|e| StorageIOError::read_state_machine(&e).into())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ProposalResult>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = std::time::Instant::now();
        let mut overlay = Overlay::new(&self.reader);
        let mut results = Vec::new();
        let mut last_applied = None;
        let mut membership = None;
        for entry in entries {
            let result = match entry.payload {
                EntryPayload::Blank => ProposalResult::default(),
                EntryPayload::Normal(proposal) => {
                    run(&mut overlay, &proposal).map_err(|e| StorageIOError::apply(entry.log_id, &e))?
                }
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m));
                    ProposalResult::default()
                }
            };
            results.push(result);
            last_applied = Some(entry.log_id);
        }
        let Some(last_applied) = last_applied else { return Ok(results) };
        self.commit(overlay.into_writes(), last_applied, membership.as_ref())
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
        self.reader.set_last_applied(Some(last_applied));
        metrics::histogram!("jcs_raft_apply_batch").record(results.len() as f64);
        metrics::histogram!("jcs_raft_apply_seconds").record(started.elapsed().as_secs_f64());
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder { db: self.db.clone(), snapshots: self.snapshots.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let (db, files, owned_meta) = (self.db.clone(), self.snapshots.clone(), meta.clone());
        blocking(move || install(&db, &files, &owned_meta, snapshot.into_inner()))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.reader.set_last_applied(meta.last_log_id);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let files = self.snapshots.clone();
        let current = blocking(move || files.load()).await.map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(current.map(|(meta, data)| Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (db, files) = (self.db.clone(), self.snapshots.clone());
        let (meta, data) =
            blocking(move || build(&db, &files)).await.map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

/// Reads the data and the applied state through one RocksDB snapshot, then persists it.
fn build(db: &Db, files: &SnapshotFiles) -> Result<(Meta, Vec<u8>), DbError> {
    let view = db.raw().snapshot();
    // Everything the view holds was written before this sync: the snapshot never claims state
    // that a crash could still take back.
    db.sync_wal()?;
    let meta_cf = db.cf(CF_SM_META)?;
    let last_applied: Option<LogId<NodeId>> = match view.get_cf(meta_cf, LAST_APPLIED_KEY)? {
        Some(bytes) => decode_json(CF_SM_META, LAST_APPLIED_KEY, &bytes)?,
        None => None,
    };
    let last_membership: Membership = match view.get_cf(meta_cf, MEMBERSHIP_KEY)? {
        Some(bytes) => decode_json(CF_SM_META, MEMBERSHIP_KEY, &bytes)?,
        None => Membership::default(),
    };
    let mut data = DataEncoder::new();
    for item in view.iterator_cf(db.cf(CF_SM)?, IteratorMode::Start) {
        let (key, value) = item?;
        data.push(&key, &value);
    }
    let meta = Meta { snapshot_id: files.next_id(last_applied.as_ref()), last_log_id: last_applied, last_membership };
    let data = data.finish();
    files.save(&meta, &data)?;
    Ok((meta, data))
}

/// Replaces the whole state with the snapshot's, synced: openraft purges the log up to the
/// snapshot next, after which the state machine is the only copy of that history.
fn install(db: &Db, files: &SnapshotFiles, meta: &Meta, data: Vec<u8>) -> Result<(), DbError> {
    let sm = db.cf(CF_SM)?;
    let mut batch = WriteBatch::default();
    clear(db, sm, &mut batch)?;
    decode_data(&data, |key, value| batch.put_cf(sm, key, value))?;
    put_applied_state(&mut batch, db.cf(CF_SM_META)?, meta.last_log_id, Some(&meta.last_membership))?;
    db.write(batch, true)?;
    files.save(meta, &data)
}

/// Adds to `batch` a range deletion of everything currently in `cf`.
fn clear(db: &Db, cf: &ColumnFamily, batch: &mut WriteBatch) -> Result<(), DbError> {
    let first = db.raw().iterator_cf(cf, IteratorMode::Start).next().transpose()?;
    let last = db.raw().iterator_cf(cf, IteratorMode::End).next().transpose()?;
    if let (Some((first, _)), Some((last, _))) = (first, last) {
        // The range end is exclusive; `last` followed by a zero byte is the next possible key.
        let mut end = last.into_vec();
        end.push(0);
        batch.delete_range_cf(cf, first, end.into_boxed_slice());
    }
    Ok(())
}

/// Runs storage work off the async runtime's worker threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T, DbError> + Send + 'static) -> Result<T, DbError> {
    tokio::task::spawn_blocking(work).await?
}

//! The node's one RocksDB instance and its column families. Log, Raft metadata, state-machine
//! data and state-machine metadata share a single write-ahead log, so a write to one is never
//! durable before the writes that preceded it in another — the ordering the log store and the
//! state machine both lean on.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Options, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::kv::StoreError;

/// Log entries: big-endian `u64` index → JSON `openraft::Entry<TypeConfig>`.
pub(crate) const CF_LOG: &str = "log";
/// Raft's own durable state: [`VOTE_KEY`], [`COMMITTED_KEY`], [`LAST_PURGED_KEY`].
pub(crate) const CF_RAFT_META: &str = "raft_meta";
/// The state machine's data: exactly what [`crate::apply::apply`] writes through `Kv`.
pub(crate) const CF_SM: &str = "sm";
/// What the state machine has applied: [`LAST_APPLIED_KEY`], [`MEMBERSHIP_KEY`].
pub(crate) const CF_SM_META: &str = "sm_meta";

pub(crate) const VOTE_KEY: &[u8] = b"vote";
pub(crate) const COMMITTED_KEY: &[u8] = b"committed";
pub(crate) const LAST_PURGED_KEY: &[u8] = b"last_purged";
pub(crate) const LAST_APPLIED_KEY: &[u8] = b"last_applied";
pub(crate) const MEMBERSHIP_KEY: &[u8] = b"membership";

const COLUMN_FAMILIES: [&str; 4] = [CF_LOG, CF_RAFT_META, CF_SM, CF_SM_META];

/// A fault in the store below openraft: RocksDB, the file system, or bytes that do not decode.
#[derive(Debug, Error)]
pub enum DbError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("column family '{0}' is missing")]
    MissingColumnFamily(&'static str),
    #[error("cannot encode {what}: {source}")]
    Encode { what: String, source: serde_json::Error },
    #[error("corrupt {what}: {reason}")]
    Corrupt { what: String, reason: String },
}

impl DbError {
    pub(crate) fn corrupt(what: impl Into<String>, reason: impl ToString) -> Self {
        DbError::Corrupt { what: what.into(), reason: reason.to_string() }
    }
}

impl From<DbError> for StoreError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Corrupt { what, reason } => StoreError::Corrupt { key: what, reason },
            other => StoreError::Io(other.to_string()),
        }
    }
}

/// A shared handle on the node's RocksDB.
#[derive(Clone)]
pub(crate) struct Db(Arc<DB>);

impl Db {
    /// Opens (creating if needed) the database at `path` with all four column families.
    pub(crate) fn open(path: &Path) -> Result<Self, DbError> {
        let mut opts = cf_options();
        // Flushes and compactions write their files out a megabyte at a time instead of
        // leaving it all to the kernel's writeback: a burst of dirty pages made the WAL's
        // fsync, which every acknowledged write waits for, stall for 100 ms and more.
        opts.set_bytes_per_sync(1 << 20);
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = COLUMN_FAMILIES.map(|name| ColumnFamilyDescriptor::new(name, cf_options()));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(Db(Arc::new(db)))
    }

    pub(crate) fn raw(&self) -> &DB {
        &self.0
    }

    pub(crate) fn cf(&self, name: &'static str) -> Result<&ColumnFamily, DbError> {
        self.0.cf_handle(name).ok_or(DbError::MissingColumnFamily(name))
    }

    /// Reads and decodes a JSON value.
    pub(crate) fn get_json<T: DeserializeOwned>(&self, cf: &'static str, key: &[u8]) -> Result<Option<T>, DbError> {
        match self.0.get_cf(self.cf(cf)?, key)? {
            None => Ok(None),
            Some(bytes) => decode_json(cf, key, &bytes).map(Some),
        }
    }

    /// Writes one JSON value on its own, synced to disk when `sync`.
    pub(crate) fn put_json<T: Serialize>(
        &self,
        cf: &'static str,
        key: &[u8],
        value: &T,
        sync: bool,
    ) -> Result<(), DbError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(cf)?, key, encode_json(cf, key, value)?);
        self.write(batch, sync)
    }

    /// Writes a batch atomically; `sync` fsyncs the WAL before returning.
    pub(crate) fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), DbError> {
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        Ok(self.0.write_opt(batch, &opts)?)
    }

    /// Makes every write so far durable.
    pub(crate) fn sync_wal(&self) -> Result<(), DbError> {
        Ok(self.0.flush_wal(true)?)
    }
}

/// RocksDB here is built without compression libraries: say so rather than rely on defaults.
fn cf_options() -> Options {
    let mut opts = Options::default();
    opts.set_compression_type(DBCompressionType::None);
    opts
}

pub(crate) fn encode_json<T: Serialize>(cf: &str, key: &[u8], value: &T) -> Result<Vec<u8>, DbError> {
    serde_json::to_vec(value).map_err(|source| DbError::Encode { what: describe(cf, key), source })
}

pub(crate) fn decode_json<T: DeserializeOwned>(cf: &str, key: &[u8], bytes: &[u8]) -> Result<T, DbError> {
    serde_json::from_slice(bytes).map_err(|e| DbError::corrupt(describe(cf, key), e))
}

fn describe(cf: &str, key: &[u8]) -> String {
    format!("{cf}/{}", String::from_utf8_lossy(key))
}

/// The key of log entry `index`: big-endian, so key order is index order.
pub(crate) fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

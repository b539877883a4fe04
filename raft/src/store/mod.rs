//! The durable side of jcs's Raft: one RocksDB per node holding the log, Raft's vote and
//! pointers, and the applied state, plus a snapshot file.
//!
//! * [`open`] — opens everything under a node's data directory.
//! * [`LogStore`] / [`LogReader`] — openraft's log storage, with group-committed appends and
//!   the newest entries kept decoded (`recent`).
//! * [`StateMachine`] / [`SnapshotBuilder`] — openraft's state machine over [`crate::apply`].
//! * [`StateReader`] — concurrent reads of the applied state for the API.
//!
//! Layout: `<dir>/db` (RocksDB: column families `log`, `raft_meta`, `sm`, `sm_meta`) and
//! `<dir>/snapshot/current`.

mod db;
mod flusher;
mod log_store;
mod reader;
mod recent;
mod snapshot;
mod state_machine;

use std::path::Path;
use std::sync::Arc;

pub use db::DbError;
pub use log_store::{LogReader, LogStore};
pub use reader::StateReader;
pub use state_machine::{SnapshotBuilder, StateMachine};

/// Opens (creating as needed) the store of one node under `dir`.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachine, StateReader), DbError> {
    std::fs::create_dir_all(dir)?;
    let db = db::Db::open(&dir.join("db"))?;
    let snapshots = Arc::new(snapshot::SnapshotFiles::open(dir.join("snapshot"))?);
    let reader = StateReader::new(db.clone())?;
    let log = LogStore::new(db.clone())?;
    let state_machine = StateMachine::new(db, reader.clone(), snapshots);
    Ok((log, state_machine, reader))
}

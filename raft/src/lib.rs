//! jcs's replicated store. Everything that must survive a node — the catalog, the job queue,
//! every placement — is a [`command::Command`] in a Raft log (openraft) and is applied by the
//! pure [`apply::apply`] to a sorted key-value state that lives in RocksDB.
//!
//! * [`command`] — the command set, its results and refusals.
//! * [`kv`] — the state as a key-value map (in memory for tests, RocksDB in production).
//! * [`tables`] — the key layout and typed reads.
//! * [`apply`] — the transition function.
//! * [`store`] — the RocksDB log store and state machine openraft drives.
//! * [`schedule`] — the scheduler's pure scoring core: strategies, normalization, ranking.

pub mod apply;
pub mod command;
pub mod kv;
pub mod schedule;
pub mod store;
pub mod tables;

use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// How to reach a member: its peer (Raft gRPC) address and its REST address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub raft_addr: String,
    pub http_addr: String,
}

impl std::fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "raft={} http={}", self.raft_addr, self.http_addr)
    }
}

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// openraft's type configuration for jcs.
    pub TypeConfig:
        D = command::Proposal,
        R = command::ProposalResult,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;

//! The cluster's status as `GET /admin/cluster` and `jcs cluster status` show it: the members,
//! the leader and term, and each member's own log indices as it reports them (members that do
//! not answer are listed as unreachable), with its lag behind the answering node, and the
//! center shards.

use jcs_raft::kv::StoreError;
use jcs_raft::store::{LogReader, StateReader};
use jcs_raft::{tables, NodeId, Raft};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Cluster, PeerReply, PeerRequest};

/// One node's own Raft view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub node_id: NodeId,
    /// leader, follower, candidate or learner.
    pub state: String,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_log_index: u64,
    /// Highest index this node knows to be committed (on a majority).
    pub committed_index: u64,
    /// Highest index this node applied (the committed entries it has seen, applied).
    pub applied_index: u64,
    /// Index of the last snapshot this node built or installed.
    pub snapshot_index: u64,
    /// Index of the last log entry purged behind a snapshot: a member that needs an earlier
    /// entry is caught up by snapshot.
    #[serde(default)]
    pub purged_index: u64,
}

/// One member in the cluster's status.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub node_id: NodeId,
    pub raft_addr: String,
    pub http_addr: String,
    /// voter or learner.
    pub role: String,
    /// The node's own report; absent when it did not answer.
    pub status: Option<NodeStatus>,
    /// Entries the node has yet to apply to reach the reporting node's applied index.
    pub lag: Option<u64>,
    /// Why the node's report is missing.
    pub error: Option<String>,
}

/// `GET /admin/cluster`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The cluster's id, made by its first leader; every name jcs gives a center carries it.
    /// Absent until that leader has written it.
    pub cluster_id: Option<String>,
    /// The node that answered.
    pub node_id: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub members: Vec<MemberStatus>,
    /// Which member drives each center (as this node has applied it).
    pub shards: Vec<Shard>,
}

/// One center's owner.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Shard {
    pub center_id: String,
    pub node_id: Option<NodeId>,
    /// Bumped at every change of owner; writes from an older epoch are refused.
    pub epoch: u64,
}

/// This node's view, from openraft's metrics and its log (the commit index openraft saved).
pub fn local(raft: &Raft, log: &LogReader) -> NodeStatus {
    let m = raft.metrics().borrow().clone();
    let state = if m.current_leader == Some(m.id) {
        "leader"
    } else if !m.membership_config.membership().voter_ids().any(|v| v == m.id) {
        "learner"
    } else if m.state == openraft::ServerState::Candidate {
        "candidate"
    } else {
        "follower"
    };
    NodeStatus {
        node_id: m.id,
        state: state.into(),
        term: m.current_term,
        leader: m.current_leader,
        last_log_index: m.last_log_index.unwrap_or(0),
        // openraft saves the commit id at every commit, but not when a snapshot moves it.
        committed_index: log.committed().ok().flatten().max(m.last_applied).map_or(0, |l| l.index),
        applied_index: m.last_applied.map_or(0, |l| l.index),
        snapshot_index: m.snapshot.map_or(0, |l| l.index),
        purged_index: m.purged.map_or(0, |l| l.index),
    }
}

impl Cluster {
    /// Asks every member for its view (concurrently, each with the forward timeout).
    pub async fn status(&self, reader: &StateReader) -> Result<ClusterStatus, StoreError> {
        let shards = tables::center_owners(reader)?
            .into_iter()
            .map(|(center_id, owner)| Shard { center_id, node_id: owner.node, epoch: owner.epoch })
            .collect();
        let me = local(&self.raft, &self.log);
        let asks = self.members().into_iter().map(|(id, (info, voter))| {
            let me = me.clone();
            async move {
                let report = if id == me.node_id {
                    Ok(me.clone())
                } else {
                    match self
                        .peers
                        .forward(&info.raft_addr, &PeerRequest::LocalStatus, self.timing.forward_timeout)
                        .await
                    {
                        Ok(PeerReply::LocalStatus(status)) => Ok(status),
                        Ok(other) => Err(format!("unexpected answer: {other:?}")),
                        Err(e) => Err(e.to_string()),
                    }
                };
                let (status, error) = match report {
                    Ok(status) => (Some(status), None),
                    Err(error) => (None, Some(error)),
                };
                MemberStatus {
                    node_id: id,
                    raft_addr: info.raft_addr,
                    http_addr: info.http_addr,
                    role: if voter { "voter" } else { "learner" }.into(),
                    lag: status.as_ref().map(|s| me.applied_index.saturating_sub(s.applied_index)),
                    status,
                    error,
                }
            }
        });
        let members = futures::future::join_all(asks).await;
        let cluster_id = tables::cluster_id(reader)?;
        Ok(ClusterStatus { cluster_id, node_id: me.node_id, leader: me.leader, term: me.term, members, shards })
    }
}

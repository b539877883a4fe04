//! What makes several nodes one cluster: the requests nodes make of each other over the peer
//! channel ([`PeerRequest`]), the leader's side of them, membership (bootstrap, join, add,
//! remove), the cluster's status, and the center shards.
//!
//! * Writes: a follower's proposer forwards its batch to the leader as
//!   [`PeerRequest::Commands`]; the leader commits them through its own proposer, so the
//!   answer means "durable on a majority".
//! * Linearizable reads: a follower asks the leader for a read index
//!   ([`PeerRequest::ReadIndex`]: the leader confirms its leadership with a quorum — openraft's
//!   ReadIndex, no clock lease) and waits until it has applied that index.
//! * Membership changes run on the leader, one at a time.
//!
//! * [`election`] — when a voter stands for leader (a pre-vote round before openraft's vote).
//! * [`membership`] — bootstrap, join, add, remove.
//! * [`status`] — `GET /admin/cluster`.
//! * [`shards`] — which node drives which center.

pub mod election;
pub mod membership;
pub mod shards;
pub mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jcs_raft::command::{Command, CommandResult};
use jcs_raft::store::LogReader;
use jcs_raft::{NodeId, NodeInfo, Raft};
use serde::{Deserialize, Serialize};

use self::election::Elections;
use crate::peer::client::PeerCallError;
use crate::peer::{Liveness, Peers};
use crate::proposer::{ProposeError, Proposer};
use crate::signals::Kicks;

/// What one node asks of another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Leader: commit these commands; one result per command, in order.
    Commands(Vec<Command>),
    /// Leader: confirm leadership with a quorum; answer the index a linearizable read must see.
    ReadIndex,
    /// Leader: add the node as a learner, wait until it has caught up, then (if `voter`) make
    /// it a voter. Idempotent: a member already in that role is left as it is.
    AddMember { node_id: NodeId, info: NodeInfo, voter: bool },
    /// Leader: take the node out of the cluster (voter or learner).
    RemoveMember { node_id: NodeId },
    /// Leader: a member's addresses changed (it restarted on other ports). Only a node sends
    /// this, about itself.
    UpdateMember { node_id: NodeId, info: NodeInfo },
    /// Any node: its own Raft view.
    LocalStatus,
    /// Any voter: would it vote for this candidate now? (see [`election`]).
    PreVote(election::Ballot),
}

/// The answer to a [`PeerRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerReply {
    Results(Vec<Result<CommandResult, ProposeError>>),
    ReadIndex(u64),
    MembershipChanged,
    LocalStatus(status::NodeStatus),
    PreVote(bool),
    Failed(ClusterError),
}

/// Why a cluster request failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum ClusterError {
    /// Asked of a node that is not the leader; `leader` is the one it knows of.
    #[error("this node is not the leader (leader: {})", leader.as_ref().map_or("unknown".to_string(), |(id, _)| id.to_string()))]
    NotLeader { leader: Option<(NodeId, NodeInfo)> },
    /// The leader could not be reached.
    #[error("{0}")]
    Unreachable(String),
    /// The request makes no sense (removing the last voter …).
    #[error("{0}")]
    Invalid(String),
    /// The request names a node that is not a member.
    #[error("node {0} is not a member")]
    NotMember(NodeId),
    /// The membership cannot change so now: another change is under way, the node is a member
    /// at another address, or the node to make a voter has not caught up.
    #[error("{0}")]
    Conflict(String),
    /// Raft refused or failed.
    #[error("{0}")]
    Raft(String),
}

impl From<PeerCallError> for ClusterError {
    fn from(err: PeerCallError) -> Self {
        ClusterError::Unreachable(err.to_string())
    }
}

/// The leader `raft` knows of, with its addresses — `None` until it also knows where the
/// leader listens (a new member may hear from the leader before it has the membership that
/// names it).
pub fn known_leader(raft: &Raft) -> Option<(NodeId, NodeInfo)> {
    let m = raft.metrics().borrow().clone();
    let id = m.current_leader?;
    let info = m.membership_config.membership().get_node(&id).cloned()?;
    (!info.raft_addr.is_empty()).then_some((id, info))
}

/// Timing of cluster duties, from the node's configuration.
#[derive(Debug, Clone)]
pub struct Timing {
    /// How long a forwarded request or a read-index round may take.
    pub forward_timeout: Duration,
    /// A member not heard from this long loses its centers to others.
    pub owner_timeout: Duration,
    /// When a voter stands for leader.
    pub election: election::ElectionTiming,
}

/// The cluster side of a node; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    pub raft: Raft,
    pub proposer: Proposer,
    pub peers: Peers,
    pub liveness: Liveness,
    pub timing: Timing,
    /// Wakes this node's scheduler when forwarded writes commit here (on the leader).
    pub kicks: Kicks,
    /// This node's log, read for its last and committed log ids.
    pub log: LogReader,
    pub elections: Elections,
    /// Serialises membership changes (openraft refuses concurrent ones).
    membership_lock: Arc<tokio::sync::Mutex<()>>,
}

impl Cluster {
    pub fn new(
        raft: Raft,
        proposer: Proposer,
        peers: Peers,
        liveness: Liveness,
        timing: Timing,
        kicks: Kicks,
        log: LogReader,
    ) -> Cluster {
        let elections = Elections::new(log.clone(), timing.election);
        Cluster { raft, proposer, peers, liveness, timing, kicks, log, elections, membership_lock: Arc::default() }
    }

    pub fn node_id(&self) -> NodeId {
        self.raft.metrics().borrow().id
    }

    /// The leader this node knows of, with its addresses.
    pub fn leader(&self) -> Option<(NodeId, NodeInfo)> {
        known_leader(&self.raft)
    }

    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        m.current_leader == Some(m.id)
    }

    /// Serves a request a peer sent (never forwarded further: a node that is not the leader
    /// answers `NotLeader` with the leader it knows, and the caller follows that).
    pub async fn serve(&self, request: PeerRequest) -> PeerReply {
        let outcome = match request {
            PeerRequest::Commands(commands) => return PeerReply::Results(self.commit_here(commands).await),
            PeerRequest::LocalStatus => return PeerReply::LocalStatus(status::local(&self.raft, &self.log)),
            PeerRequest::PreVote(ballot) => {
                return PeerReply::PreVote(self.elections.answer(
                    &self.raft,
                    self.liveness.since_leader_contact(),
                    &ballot,
                ))
            }
            PeerRequest::ReadIndex => self.read_index_here().await.map(PeerReply::ReadIndex),
            PeerRequest::AddMember { node_id, info, voter } => {
                self.add_member_here(node_id, info, voter).await.map(|()| PeerReply::MembershipChanged)
            }
            PeerRequest::RemoveMember { node_id } => {
                self.remove_member_here(node_id).await.map(|()| PeerReply::MembershipChanged)
            }
            PeerRequest::UpdateMember { node_id, info } => {
                self.update_member_here(node_id, info).await.map(|()| PeerReply::MembershipChanged)
            }
        };
        outcome.unwrap_or_else(PeerReply::Failed)
    }

    /// Runs `request` on the leader: here if this node leads, else forwarded to the leader
    /// this node knows of.
    pub async fn on_leader(&self, request: PeerRequest) -> Result<PeerReply, ClusterError> {
        let reply = match self.leader() {
            Some((id, _)) if id == self.node_id() => self.serve(request).await,
            Some((_, info)) => self.peers.forward(&info.raft_addr, &request, self.timing.forward_timeout).await?,
            None => return Err(ClusterError::NotLeader { leader: None }),
        };
        match reply {
            PeerReply::Failed(err) => Err(err),
            reply => Ok(reply),
        }
    }

    async fn commit_here(&self, commands: Vec<Command>) -> Vec<Result<CommandResult, ProposeError>> {
        if !self.is_leader() {
            let refusal = ProposeError::NotLeader { leader: self.leader() };
            return commands.iter().map(|_| Err(refusal.clone())).collect();
        }
        let commits = commands.into_iter().map(|command| async move {
            let submit = matches!(command, Command::SubmitJob { .. });
            let result = self.proposer.propose_here(command).await;
            if result.as_ref().is_ok_and(Result::is_ok) {
                self.kicks.after_commit(submit);
            }
            result
        });
        futures::future::join_all(commits).await
    }

    async fn read_index_here(&self) -> Result<u64, ClusterError> {
        let (read, _) = self.raft.get_read_log_id().await.map_err(|e| match e {
            openraft::error::RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f)) => {
                ClusterError::NotLeader { leader: f.leader_id.zip(f.leader_node) }
            }
            other => ClusterError::Raft(other.to_string()),
        })?;
        Ok(read.map_or(0, |l| l.index))
    }

    /// Waits until this node has applied every write acknowledged before the call: the leader
    /// confirms its leadership with a quorum (here, or asked over the peer channel) and names
    /// its commit index; this node then waits to have applied it. Returns the index.
    pub async fn linearizable_barrier(&self) -> Result<u64, ClusterError> {
        let index = match self.on_leader(PeerRequest::ReadIndex).await? {
            PeerReply::ReadIndex(index) => index,
            other => return Err(ClusterError::Raft(format!("unexpected answer to a read index: {other:?}"))),
        };
        self.raft
            .wait(Some(self.timing.forward_timeout))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map_err(|e| ClusterError::Raft(format!("not caught up to index {index}: {e}")))?;
        Ok(index)
    }

    /// The members as the applied membership config has them: id → (addresses, voter).
    pub fn members(&self) -> BTreeMap<NodeId, (NodeInfo, bool)> {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        membership.nodes().map(|(id, info)| (*id, (info.clone(), voters.contains(id)))).collect()
    }
}

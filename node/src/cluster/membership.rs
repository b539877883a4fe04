//! Membership: bootstrapping a new cluster, joining one, adding and removing members, and
//! keeping each member's REST address current. Every change runs on the leader under one lock,
//! because openraft allows one membership change at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jcs_raft::{NodeId, NodeInfo, Raft};
use openraft::error::{ClientWriteError, RaftError};
use openraft::ChangeMembers;

use super::{Cluster, ClusterError, PeerReply, PeerRequest};

/// How long a node keeps trying to join before it gives up and says so.
const JOIN_DEADLINE: Duration = Duration::from_secs(120);
/// Pause between attempts to join or to publish this node's addresses.
const RETRY_EVERY: Duration = Duration::from_millis(300);

/// Initialises a fresh node. With no `initial_members`, a one-member cluster of this node; with
/// them, every listed node initialises the same membership — peer addresses only — (openraft
/// accepts that and the first election settles it); every member then publishes its REST
/// address itself.
pub async fn bootstrap(
    raft: &Raft,
    me: NodeId,
    my_info: &NodeInfo,
    initial_members: &BTreeMap<NodeId, String>,
) -> anyhow::Result<()> {
    let members: BTreeMap<NodeId, NodeInfo> = if initial_members.is_empty() {
        BTreeMap::from([(me, my_info.clone())])
    } else {
        initial_members
            .iter()
            .map(|(id, raft_addr)| (*id, NodeInfo { raft_addr: raft_addr.clone(), http_addr: String::new() }))
            .collect()
    };
    match raft.initialize(members.clone()).await {
        Ok(()) => {
            tracing::info!(node_id = me, members = ?members.keys().collect::<Vec<_>>(), "initialised a new cluster")
        }
        // Another member's initialisation reached this node first: the same cluster.
        Err(openraft::error::RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => {}
        Err(e) => return Err(anyhow::anyhow!("cannot initialise the cluster: {e}")),
    }
    Ok(())
}

impl Cluster {
    /// Asks the cluster reachable at `seed` (any member's peer address) to add this node, and
    /// follows the answer to the leader. Runs until it succeeds or [`JOIN_DEADLINE`] passes.
    pub async fn join(&self, seed: String, my_info: NodeInfo) -> Result<(), ClusterError> {
        let me = self.node_id();
        let request = PeerRequest::AddMember { node_id: me, info: my_info, voter: true };
        let deadline = tokio::time::Instant::now() + JOIN_DEADLINE;
        let mut target = seed.clone();
        loop {
            let outcome = self.peers.forward(&target, &request, JOIN_DEADLINE).await.map_err(ClusterError::from);
            let error = match outcome {
                Ok(PeerReply::MembershipChanged) => {
                    tracing::info!(node_id = me, via = %target, "joined the cluster");
                    return Ok(());
                }
                Ok(PeerReply::Failed(ClusterError::NotLeader { leader: Some((_, leader)) })) => {
                    target = leader.raft_addr;
                    continue;
                }
                Ok(PeerReply::Failed(err)) => err,
                Ok(other) => ClusterError::Raft(format!("unexpected answer to a join: {other:?}")),
                Err(err) => err,
            };
            tracing::warn!(node_id = me, via = %target, error = %error, "join attempt failed; retrying");
            target = seed.clone();
            if tokio::time::Instant::now() >= deadline {
                return Err(error);
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    /// Keeps this node's entry in the membership equal to `my_info`: after a restart on other
    /// ports, or when the bootstrap only knew its peer address. Runs as long as the node (the
    /// membership a node has applied may still be replaced by the leader's log).
    pub async fn publish_addresses(&self, my_info: NodeInfo) {
        let me = self.node_id();
        loop {
            let listed = self.members().get(&me).map(|(info, _)| info.clone());
            match listed {
                Some(info) if info == my_info => {}
                // Not a member (yet): a joining node is added with its addresses.
                None => {}
                Some(_) => {
                    let request = PeerRequest::UpdateMember { node_id: me, info: my_info.clone() };
                    match self.on_leader(request).await {
                        Ok(_) => tracing::info!(node_id = me, info = %my_info, "published this node's addresses"),
                        Err(e) => tracing::debug!(error = %e, "cannot publish this node's addresses yet"),
                    }
                }
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    pub(super) async fn add_member_here(&self, id: NodeId, info: NodeInfo, voter: bool) -> Result<(), ClusterError> {
        let _serial = self.membership_lock.lock().await;
        self.ensure_leader()?;
        let members = self.members();
        // Two members at one address: the leader would replicate to itself, and openraft 0.9
        // panics on that (its engine then stops for good).
        if let Some((other, _)) =
            members.iter().find(|(other, (known, _))| **other != id && known.raft_addr == info.raft_addr)
        {
            return Err(ClusterError::Conflict(format!("node {other} is already a member at {}", info.raft_addr)));
        }
        match members.get(&id) {
            Some((known, _)) if known.raft_addr != info.raft_addr => {
                return Err(ClusterError::Conflict(format!(
                    "node {id} is already a member at {}; remove it before adding it at {}",
                    known.raft_addr, info.raft_addr
                )))
            }
            Some((_, is_voter)) if *is_voter || !voter => return Ok(()),
            Some(_) => {}
            None => {
                tracing::info!(node_id = id, info = %info, "adding a learner");
                self.raft.add_learner(id, info, false).await.map_err(raft_error)?;
            }
        }
        if voter {
            // openraft 0.9 makes any learner a voter, caught up or not: a node that cannot be
            // reached would become a voter that never answers, and could cost the quorum.
            self.wait_caught_up(id).await?;
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(raft_error)?;
            tracing::info!(node_id = id, "member is now a voter");
        }
        Ok(())
    }

    pub(super) async fn remove_member_here(&self, id: NodeId) -> Result<(), ClusterError> {
        let _serial = self.membership_lock.lock().await;
        self.ensure_leader()?;
        let members = self.members();
        let Some((_, voter)) = members.get(&id) else {
            return Err(ClusterError::NotMember(id));
        };
        if *voter {
            if members.values().filter(|(_, v)| *v).count() == 1 {
                return Err(ClusterError::Invalid(format!("node {id} is the last voter; a cluster needs one")));
            }
            self.raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
                .map_err(raft_error)?;
        } else {
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await
                .map_err(raft_error)?;
        }
        tracing::info!(node_id = id, "member removed");
        Ok(())
    }

    pub(super) async fn update_member_here(&self, id: NodeId, info: NodeInfo) -> Result<(), ClusterError> {
        let _serial = self.membership_lock.lock().await;
        self.ensure_leader()?;
        match self.members().get(&id) {
            None => return Err(ClusterError::NotMember(id)),
            Some((known, _)) if *known == info => return Ok(()),
            Some(_) => {}
        }
        self.raft
            .change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, info)])), true)
            .await
            .map_err(raft_error)?;
        Ok(())
    }

    fn ensure_leader(&self) -> Result<(), ClusterError> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(ClusterError::NotLeader { leader: self.leader() })
        }
    }

    /// Waits until learner `id` has replicated the leader's log as it was at the call: at most
    /// half the forwarding timeout, so that a request forwarded from a follower is answered
    /// before the follower gives up on it.
    async fn wait_caught_up(&self, id: NodeId) -> Result<(), ClusterError> {
        let wait = self.timing.forward_timeout / 2;
        let target = self.raft.metrics().borrow().last_log_index.unwrap_or(0);
        let caught_up = move |m: &openraft::RaftMetrics<NodeId, NodeInfo>| {
            let matched = m.replication.as_ref().and_then(|r| r.get(&id).copied().flatten());
            matched.is_some_and(|log| log.index >= target)
        };
        if self.raft.wait(Some(wait)).metrics(caught_up, "learner caught up").await.is_ok() {
            return Ok(());
        }
        self.ensure_leader()?;
        Err(ClusterError::Conflict(format!(
            "node {id} has not caught up to index {target} within {} ms: it stays a learner; is it running, \
             and is its raft address reachable from the leader?",
            wait.as_millis()
        )))
    }
}

/// Raft's answer to a membership change, as the client should see it.
fn raft_error(err: openraft::error::RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>) -> ClusterError {
    match err {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            ClusterError::NotLeader { leader: f.leader_id.zip(f.leader_node) }
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => ClusterError::Conflict(e.to_string()),
        other => ClusterError::Raft(other.to_string()),
    }
}

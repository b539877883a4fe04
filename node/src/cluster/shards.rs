//! Center shards: the leader gives every center with an adapter to one healthy member —
//! followers and learners first, the leader itself only when it is alone — by rendezvous
//! hashing, so a member joining or leaving moves only the centers it gains or loses. The
//! assignment is committed as `AssignOwners` (term-fenced; each change of owner bumps the
//! center's epoch, fencing the former owner's writes).
//!
//! A member is healthy while it answers the leader's Raft RPCs (heartbeats every
//! `heartbeat_interval_ms`) within `owner_timeout`. An owner that stops hearing from the
//! leader for a third of that stops driving its centers ([`Cluster::holds_owner_lease`]) well
//! before the leader hands them to someone else, so two nodes never drive one center at once.

use std::collections::BTreeMap;
use std::time::Duration;

use jcs_api::model::{Center, ObjectKind};
use jcs_raft::command::Command;
use jcs_raft::store::StateReader;
use jcs_raft::{tables, NodeId};
use tokio::sync::watch;

use super::Cluster;

/// How often the leader checks the assignment.
pub const ASSIGN_EVERY: Duration = Duration::from_millis(250);

/// The owner of each center among `candidates` (rendezvous hashing: the candidate with the
/// highest `hash(center, node)` wins). Empty candidates: no owners.
pub fn assign<'a>(centers: impl IntoIterator<Item = &'a str>, candidates: &[NodeId]) -> BTreeMap<String, NodeId> {
    centers
        .into_iter()
        .filter_map(|center| {
            let owner = candidates.iter().copied().max_by_key(|node| (weight(center, *node), *node))?;
            Some((center.to_string(), owner))
        })
        .collect()
}

/// FNV-1a over the center id and the node id: stable across processes, versions and platforms.
fn weight(center: &str, node: NodeId) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in center.as_bytes().iter().chain(&node.to_le_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV's low bits mix poorly for short inputs; finish with a 64-bit avalanche.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ (hash >> 33)
}

/// The members that may own centers: the healthy ones other than the leader, or the leader
/// alone when no other is healthy.
pub fn candidates(leader: NodeId, members: &[NodeId], healthy: impl Fn(NodeId) -> bool) -> Vec<NodeId> {
    let others: Vec<NodeId> = members.iter().copied().filter(|m| *m != leader && healthy(*m)).collect();
    if others.is_empty() {
        vec![leader]
    } else {
        others
    }
}

impl Cluster {
    /// Whether this node may drive the centers it owns: a leader reached it within a third of
    /// the owner timeout, or it leads and a majority of the voters answered it that recently
    /// (a leader cut off from the others believes it leads until it hears otherwise).
    pub fn holds_owner_lease(&self) -> bool {
        let lease = self.timing.owner_timeout / 3;
        if !self.is_leader() {
            return self.liveness.leader_reached_us_within(lease);
        }
        let me = self.node_id();
        let voters: Vec<NodeId> =
            self.members().into_iter().filter(|(_, (_, voter))| *voter).map(|(id, _)| id).collect();
        let reached = voters.iter().filter(|v| **v == me || self.liveness.answered_within(**v, lease)).count();
        reached * 2 > voters.len()
    }

    /// The leader's loop: keeps the committed assignment equal to [`assign`] over the current
    /// centers and healthy members. Runs until `stop` changes.
    pub async fn run_shards(self, reader: StateReader, mut stop: watch::Receiver<()>) {
        let mut tick = tokio::time::interval(ASSIGN_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The term whose leadership started less than an owner timeout ago: peers not heard
        // from yet may be healthy, so they keep their centers until the timeout has passed.
        let mut leading_since: Option<(u64, tokio::time::Instant)> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let m = self.raft.metrics().borrow().clone();
            if m.current_leader != Some(m.id) {
                leading_since = None;
                continue;
            }
            let since = match leading_since {
                Some((term, since)) if term == m.current_term => since,
                _ => leading_since.insert((m.current_term, tokio::time::Instant::now())).1,
            };
            let settled = since.elapsed() >= self.timing.owner_timeout;
            if let Err(e) = self.name_cluster(&reader).await {
                tracing::warn!(error = %e, "cannot name the cluster");
                continue;
            }
            if let Err(e) = self.reassign(&reader, m.id, m.current_term, settled).await {
                tracing::warn!(error = %e, "cannot assign center owners");
            }
        }
    }

    /// Names a cluster that has no id yet (its first leader does, once). Center workers wait
    /// for the id: every name they give a center carries it.
    async fn name_cluster(&self, reader: &StateReader) -> anyhow::Result<()> {
        if tables::cluster_id(reader)?.is_some() {
            return Ok(());
        }
        let cluster_id = fresh_cluster_id();
        let named = self.proposer.propose_here(Command::NameCluster { cluster_id }).await??;
        tracing::info!(outcome = ?named, "cluster named");
        Ok(())
    }

    async fn reassign(&self, reader: &StateReader, me: NodeId, term: u64, settled: bool) -> anyhow::Result<()> {
        let centers = tables::all::<Center>(reader, ObjectKind::Center)?;
        let driven: Vec<&str> =
            centers.iter().filter(|c| !c.adapter.kind.is_empty()).map(|c| c.ai_center_id.as_str()).collect();
        let members: Vec<NodeId> = self.members().into_keys().collect();
        let current = tables::center_owners(reader)?;
        let healthy = |node: NodeId| {
            let owns_some = current.values().any(|o| o.node == Some(node));
            self.liveness.answered_within(node, self.timing.owner_timeout) || (!settled && owns_some)
        };
        let wanted = assign(driven.iter().copied(), &candidates(me, &members, healthy));
        let changes: BTreeMap<String, NodeId> = wanted
            .into_iter()
            .filter(|(center, node)| current.get(center).and_then(|o| o.node) != Some(*node))
            .collect();
        if changes.is_empty() {
            return Ok(());
        }
        tracing::info!(term, changes = ?changes, "assigning center owners");
        self.proposer.propose_here(Command::AssignOwners { term, owners: changes }).await??;
        metrics::counter!("jcs_owner_assignments_total").increment(1);
        Ok(())
    }
}

/// A new cluster id: 16 hex digits from the process's random hasher keys (the OS's
/// randomness), mixed with the time and the process id.
fn fresh_cluster_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fresh_cluster_ids_are_valid_and_differ() {
        let (a, b) = (fresh_cluster_id(), fresh_cluster_id());
        assert_ne!(a, b);
        for id in [a, b] {
            jcs_api::validate::cluster_id("cluster_id", &id).unwrap();
        }
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("center-{i}")).collect()
    }

    #[test]
    fn the_leader_owns_only_when_alone() {
        assert_eq!(candidates(1, &[1, 2, 3], |_| true), vec![2, 3]);
        assert_eq!(candidates(1, &[1, 2, 3], |n| n == 3), vec![3]);
        assert_eq!(candidates(1, &[1, 2, 3], |_| false), vec![1]);
        assert_eq!(candidates(1, &[1], |_| true), vec![1]);
    }

    #[test]
    fn centers_spread_over_the_candidates() {
        let centers = names(300);
        let owners = assign(centers.iter().map(String::as_str), &[2, 3, 4]);
        for node in [2, 3, 4] {
            let share = owners.values().filter(|o| **o == node).count();
            assert!((60..=140).contains(&share), "node {node} owns {share} of 300");
        }
    }

    proptest! {
        /// Rendezvous hashing: removing a candidate moves only its own centers; adding one
        /// moves centers only to the newcomer.
        #[test]
        fn membership_changes_move_only_the_centers_they_must(n in 1usize..60, gone in 0usize..4) {
            let centers = names(n);
            let all = [1u64, 2, 3, 4];
            let before = assign(centers.iter().map(String::as_str), &all);
            let fewer: Vec<u64> = all.iter().copied().filter(|m| *m != all[gone]).collect();
            let after = assign(centers.iter().map(String::as_str), &fewer);
            for center in &centers {
                if before[center] != all[gone] {
                    prop_assert_eq!(before[center], after[center]);
                } else {
                    prop_assert_ne!(after[center], all[gone]);
                }
            }
            // And back: adding the node again restores the first assignment exactly.
            prop_assert_eq!(assign(centers.iter().map(String::as_str), &all), before);
        }
    }
}

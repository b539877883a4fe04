//! When a voter stands for leader: openraft's election timer is off (`enable_elect = false`)
//! and this loop decides, after a pre-vote round.
//!
//! Why: openraft 0.9 has no pre-vote. When a leader dies under load, a survivor whose log is a
//! few entries behind may stand first. The others refuse it for its log, but it has already
//! voted for itself in that term, so it refuses the up-to-date survivor's candidacy in the same
//! term, and the cluster waits out another election timeout — sometimes several. That was the
//! whole tail of `jcs bench failover`.
//!
//! How a voter stands:
//! 1. No leader has reached it for the leader lease (`election_timeout_max`: how long
//!    openraft's voters refuse other candidates after a leader's last message) plus a random
//!    jitter, and it has not just promised another candidate to stay out of the way.
//! 2. It asks every voter whether it *would* vote for it ([`PeerRequest::PreVote`]). A member
//!    says yes when no leader has reached it for the lease either and the candidate's log is at
//!    least as up to date as its own — Raft's vote rule, changing no Raft state. Saying yes
//!    also promises not to stand itself, nor to say yes to another candidate, for an election
//!    timeout; a voter also says no while it runs its own round. So two up-to-date survivors do
//!    not split the vote: at most one gets its majority, the other asks again later.
//! 3. With a majority (of each config, during a joint change) and no promise made meanwhile, it
//!    calls openraft's `elect()`: the real vote, which alone decides safety, exactly as before.
//!    Without one it asks again 10–50 ms later (at random); after a real candidacy it waits a
//!    random election timeout.
//!
//! A node that has not heard from a leader since it started counts its silence from its start:
//! openraft treats the vote it loaded as fresh, so it would refuse a real vote for a lease.
//!
//! A voter alone in its config stands at once.
//!
//! [`PeerRequest::PreVote`]: super::PeerRequest::PreVote

use std::collections::hash_map::RandomState;
use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use jcs_raft::store::LogReader;
use jcs_raft::{NodeId, Raft};
use openraft::{LogId, ServerState};
use serde::{Deserialize, Serialize};

use super::{Cluster, PeerReply, PeerRequest};

/// A candidate's question in a pre-vote round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ballot {
    pub candidate: NodeId,
    pub last_log_id: Option<LogId<NodeId>>,
}

/// Election timing, from the node's Raft settings.
#[derive(Debug, Clone, Copy)]
pub struct ElectionTiming {
    /// How long voters refuse other candidates after a leader's last message (openraft's
    /// leader lease: `election_timeout_max`).
    pub lease: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
    /// How often the loop looks, and how soon a refused pre-vote is asked again.
    pub tick: Duration,
}

impl ElectionTiming {
    /// The timing a node's configuration describes.
    pub fn of(config: &crate::config::Config) -> ElectionTiming {
        ElectionTiming {
            lease: Duration::from_millis(config.election_timeout_max_ms),
            election_min: Duration::from_millis(config.election_timeout_min_ms),
            election_max: Duration::from_millis(config.election_timeout_max_ms),
            tick: Duration::from_millis((config.heartbeat_interval_ms / 5).clamp(1, 10)),
        }
    }
}

/// What a member answers a pre-vote: yes when it does not lead, no leader has reached it for
/// the lease, and the candidate's log is at least as up to date as its own.
pub fn would_vote(
    ballot: &Ballot,
    my_last_log_id: Option<&LogId<NodeId>>,
    i_lead: bool,
    since_leader: Option<Duration>,
    lease: Duration,
) -> bool {
    !i_lead && since_leader.is_none_or(|silence| silence >= lease) && ballot.last_log_id.as_ref() >= my_last_log_id
}

/// Whether `granted` holds a majority of every config of a (possibly joint) membership.
pub fn majority_of_each(configs: &[BTreeSet<NodeId>], granted: &BTreeSet<NodeId>) -> bool {
    configs.iter().all(|config| 2 * config.intersection(granted).count() > config.len())
}

/// A random duration in `[low, high]`.
fn random_between(low: Duration, high: Duration) -> Duration {
    let spread = high.saturating_sub(low).as_micros() as u64;
    let draw = RandomState::new().hash_one(Instant::now());
    low + Duration::from_micros(if spread == 0 { 0 } else { draw % (spread + 1) })
}

/// This node's side of elections; cheap to clone.
#[derive(Clone)]
pub struct Elections {
    log: LogReader,
    timing: ElectionTiming,
    started: Instant,
    state: Arc<Mutex<ElectionState>>,
}

#[derive(Default)]
struct ElectionState {
    /// The candidate this node said yes to, and until when it stays out of its way.
    promised: Option<(NodeId, Instant)>,
    /// This node is asking for pre-votes itself.
    canvassing: bool,
}

impl Elections {
    pub fn new(log: LogReader, timing: ElectionTiming) -> Elections {
        Elections { log, timing, started: Instant::now(), state: Arc::default() }
    }

    fn last_log_id(&self) -> Option<LogId<NodeId>> {
        self.log.last_log_id().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the last log id; judging as if the log were empty");
            None
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ElectionState> {
        self.state.lock().expect("election lock")
    }

    /// Whether this node promised another candidate to stay out of its way.
    fn promised(&self) -> bool {
        self.lock().promised.is_some_and(|(_, until)| Instant::now() < until)
    }

    fn canvass(&self, canvassing: bool) {
        self.lock().canvassing = canvassing;
    }

    /// Answers another member's pre-vote (see [`would_vote`]): no while this node canvasses
    /// itself or has promised another candidate; a yes is a promise to stay out of the way for
    /// an election timeout.
    pub fn answer(&self, raft: &Raft, since_leader: Option<Duration>, ballot: &Ballot) -> bool {
        let i_lead = raft.metrics().borrow().state == ServerState::Leader;
        let mine = self.last_log_id();
        let silence = since_leader.unwrap_or_else(|| self.started.elapsed());
        let now = Instant::now();
        let mut state = self.lock();
        let taken =
            state.canvassing || state.promised.is_some_and(|(other, until)| other != ballot.candidate && now < until);
        let yes = !taken && would_vote(ballot, mine.as_ref(), i_lead, Some(silence), self.timing.lease);
        if yes {
            state.promised = Some((ballot.candidate, now + self.timing.election_max));
        }
        tracing::debug!(candidate = ballot.candidate, yes, "pre-vote answered");
        yes
    }
}

impl Cluster {
    /// Stands for leader when the leader has gone quiet and a majority would vote for this node
    /// (see the module docs). Runs as long as the node.
    pub async fn run_elections(self) {
        let elections = self.elections.clone();
        let timing = elections.timing;
        let mut leader_seen = elections.started;
        let mut patience = random_between(timing.lease, timing.lease + timing.election_min / 2);
        let mut next_try = Instant::now();
        loop {
            tokio::time::sleep(timing.tick).await;
            let m = self.raft.metrics().borrow().clone();
            let now = Instant::now();
            if m.state == ServerState::Leader {
                leader_seen = now;
                continue;
            }
            if let Some(since) = self.liveness.since_leader_contact() {
                leader_seen = leader_seen.max(now - since);
            }
            let configs = m.membership_config.membership().get_joint_config().clone();
            let alone = configs.iter().all(|config| config.len() == 1 && config.contains(&m.id));
            if !configs.iter().any(|config| config.contains(&m.id)) || now < next_try {
                continue;
            }
            if !alone && (now.duration_since(leader_seen) < patience || elections.promised()) {
                continue;
            }
            let ballot = Ballot { candidate: m.id, last_log_id: elections.last_log_id() };
            if !alone {
                elections.canvass(true);
                let won = self.pre_vote(&ballot, &configs, &m).await;
                elections.canvass(false);
                if !won || elections.promised() {
                    next_try = Instant::now() + random_between(timing.tick, timing.election_min / 4);
                    continue;
                }
            }
            tracing::info!(term = m.current_term, last_log = ?ballot.last_log_id, "standing for leader");
            metrics::counter!("jcs_raft_candidacies_total").increment(1);
            if self.raft.trigger().elect().await.is_err() {
                return; // Raft stopped.
            }
            next_try = Instant::now() + random_between(timing.election_min, timing.election_max);
            patience = random_between(timing.lease, timing.lease + timing.election_min / 2);
        }
    }

    /// Asks every other voter; true once a majority of each config (this node included) would
    /// vote for `ballot`.
    async fn pre_vote(
        &self,
        ballot: &Ballot,
        configs: &[BTreeSet<NodeId>],
        m: &openraft::RaftMetrics<NodeId, jcs_raft::NodeInfo>,
    ) -> bool {
        let mut granted = BTreeSet::from([m.id]);
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = configs.iter().flatten().copied().filter(|id| *id != m.id).collect();
        let mut answers: FuturesUnordered<_> = voters
            .into_iter()
            .filter_map(|id| membership.get_node(&id).map(|info| (id, info.raft_addr.clone())))
            .map(|(id, addr)| async move {
                let request = PeerRequest::PreVote(ballot.clone());
                let reply = self.peers.forward(&addr, &request, self.elections.timing.election_min).await;
                (id, matches!(reply, Ok(PeerReply::PreVote(true))))
            })
            .collect();
        while let Some((id, yes)) = answers.next().await {
            if yes {
                granted.insert(id);
            }
            if majority_of_each(configs, &granted) {
                return true;
            }
        }
        tracing::debug!(granted = ?granted, "pre-vote without a majority");
        false
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    const LEASE: Duration = Duration::from_millis(400);

    fn log_id(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn ballot(last: Option<LogId<NodeId>>) -> Ballot {
        Ballot { candidate: 2, last_log_id: last }
    }

    #[test]
    fn a_member_votes_for_a_log_at_least_as_up_to_date_once_its_leader_is_quiet() {
        let quiet = Some(LEASE);
        assert!(would_vote(&ballot(Some(log_id(3, 10))), Some(&log_id(3, 10)), false, quiet, LEASE));
        assert!(would_vote(&ballot(Some(log_id(3, 11))), Some(&log_id(3, 10)), false, quiet, LEASE));
        assert!(would_vote(&ballot(Some(log_id(4, 2))), Some(&log_id(3, 10)), false, quiet, LEASE), "term first");
        assert!(!would_vote(&ballot(Some(log_id(3, 9))), Some(&log_id(3, 10)), false, quiet, LEASE), "behind");
        assert!(!would_vote(&ballot(Some(log_id(2, 50))), Some(&log_id(3, 10)), false, quiet, LEASE), "older term");
        assert!(!would_vote(&ballot(None), Some(&log_id(1, 1)), false, quiet, LEASE), "empty log");
        assert!(would_vote(&ballot(None), None, false, None, LEASE), "fresh nodes");
    }

    #[test]
    fn a_member_that_leads_or_heard_its_leader_within_the_lease_says_no() {
        let last = Some(log_id(3, 10));
        assert!(!would_vote(&ballot(last), last.as_ref(), true, None, LEASE), "leads");
        let recent = Some(LEASE - Duration::from_millis(1));
        assert!(!would_vote(&ballot(last), last.as_ref(), false, recent, LEASE), "leader heard recently");
        assert!(would_vote(&ballot(last), last.as_ref(), false, None, LEASE), "no leader since start");
    }

    #[test]
    fn a_majority_is_needed_in_every_config() {
        let config = |ids: &[NodeId]| ids.iter().copied().collect::<BTreeSet<_>>();
        let three = [config(&[1, 2, 3])];
        assert!(!majority_of_each(&three, &config(&[1])));
        assert!(majority_of_each(&three, &config(&[1, 3])));
        let four = [config(&[1, 2, 3, 4])];
        assert!(!majority_of_each(&four, &config(&[1, 2])), "half is not a majority");
        let joint = [config(&[1, 2, 3]), config(&[3, 4, 5])];
        assert!(!majority_of_each(&joint, &config(&[1, 2])), "old config only");
        assert!(majority_of_each(&joint, &config(&[2, 3, 4])));
        assert!(majority_of_each(&[config(&[1])], &config(&[1])), "alone");
    }

    #[test]
    fn random_durations_stay_in_their_bounds() {
        let (low, high) = (Duration::from_millis(400), Duration::from_millis(500));
        for _ in 0..1000 {
            let d = random_between(low, high);
            assert!(low <= d && d <= high, "{d:?}");
        }
        assert_eq!(random_between(low, low), low);
    }
}

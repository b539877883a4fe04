//! The simulated platform's state: every replica it was given, the shared `Pool` for capacity
//! and queue, and the pending ends of runs. Time is evaluated lazily: each call first replays,
//! in time order, the ends that happened since the last call — starting queued replicas at the
//! very moment capacity freed — so the outcome does not depend on how often the node polls,
//! and an idle center costs nothing. The state round-trips through a JSON snapshot, so a new
//! `SimCenter` on the same work dir carries on where the old one stopped.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use jcs_api::model::{FailureCategory, ReplicaKey};
use jcs_api::quantity::ResourceAmounts;
use serde::{Deserialize, Serialize};

use crate::pool::Pool;
use crate::{NativeState, ResourceReport, Result};

/// What a replica will do once started (from its command, see `script`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Plan {
    pub runtime_us: u64,
    pub exit_code: i32,
    /// Lines its `echo`s print.
    pub output: Vec<String>,
}

/// One replica the platform accepted. Times are µs since the Unix epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SimReplica {
    seq: u64,
    key: ReplicaKey,
    demand: ResourceAmounts,
    plan: Plan,
    started_us: Option<u64>,
    stopped_us: Option<u64>,
}

impl SimReplica {
    fn end_us(&self) -> Option<u64> {
        self.started_us.map(|start| start.saturating_add(self.plan.runtime_us))
    }

    fn ran_out(&self, now: u64) -> bool {
        self.stopped_us.is_none() && self.end_us().is_some_and(|end| end <= now)
    }

    pub(super) fn state(&self, now: u64) -> NativeState {
        if self.stopped_us.is_some() {
            return NativeState::Failed {
                exit_code: None,
                category: FailureCategory::Stopped,
                reason: "stopped".to_string(),
            };
        }
        match self.plan.exit_code {
            _ if self.started_us.is_none() => NativeState::Queued,
            _ if !self.ran_out(now) => NativeState::Running,
            0 => NativeState::Succeeded,
            code => NativeState::Failed {
                exit_code: Some(code),
                category: FailureCategory::Application,
                reason: format!("exit code {code}"),
            },
        }
    }

    pub(super) fn has_ended(&self, now: u64) -> bool {
        self.stopped_us.is_some() || self.ran_out(now)
    }

    /// The log as it stands at `now`: a start line, the echoed output, a progress line per tenth
    /// of the runtime elapsed, and how it ended. A log at a later time extends an earlier one.
    pub(super) fn log(&self, center: &str, now: u64) -> String {
        let Some(start) = self.started_us else {
            return if self.stopped_us.is_some() { "[sim] stopped before it started\n".into() } else { String::new() };
        };
        let mut log = format!("[sim] {} started on {center}\n", self.key);
        for line in &self.plan.output {
            log.push_str(line);
            log.push('\n');
        }
        let seen = now.min(self.stopped_us.unwrap_or(u64::MAX)).min(self.end_us().unwrap_or(u64::MAX));
        let (elapsed, runtime) = (u128::from(seen.saturating_sub(start)), u128::from(self.plan.runtime_us));
        for tenth in (1..=9).take_while(|t| runtime > 0 && elapsed * 10 >= t * runtime) {
            log.push_str(&format!("[sim] progress {}%\n", tenth * 10));
        }
        if self.stopped_us.is_some() {
            log.push_str("[sim] stopped\n");
        } else if self.ran_out(now) {
            log.push_str(&format!("[sim] exit code {}\n", self.plan.exit_code));
        }
        log
    }
}

/// The persisted form: `R` is `&SimReplica` when saving, `SimReplica` when loading.
#[derive(Serialize, Deserialize)]
struct Snapshot<R> {
    /// Every end up to this time had been replayed.
    saved_us: u64,
    next_seq: u64,
    replicas: Vec<R>,
}

#[derive(Debug)]
pub(super) struct SimState {
    pool: Pool<u64>,
    replicas: BTreeMap<u64, SimReplica>,
    by_key: HashMap<ReplicaKey, u64>,
    /// `(end, seq)` of started runs, earliest first; stale once the replica was stopped.
    ends: BinaryHeap<Reverse<(u64, u64)>>,
    next_seq: u64,
    /// The time the state has been advanced to.
    now_us: u64,
}

impl SimState {
    pub(super) fn new(pool: Pool<u64>) -> Self {
        SimState {
            pool,
            replicas: BTreeMap::new(),
            by_key: HashMap::new(),
            ends: BinaryHeap::new(),
            next_seq: 1,
            now_us: 0,
        }
    }

    /// Rebuilds the state from a snapshot; runs that ended before it was taken stay ended.
    pub(super) fn load(snapshot: &[u8], pool: Pool<u64>) -> serde_json::Result<Self> {
        let snapshot: Snapshot<SimReplica> = serde_json::from_slice(snapshot)?;
        let mut state = SimState { next_seq: snapshot.next_seq, now_us: snapshot.saved_us, ..SimState::new(pool) };
        for replica in snapshot.replicas {
            let (seq, key, demand) = (replica.seq, replica.key.clone(), replica.demand.clone());
            match replica.end_us() {
                _ if replica.stopped_us.is_some() => {}
                None => state.pool.enqueue(seq, key.clone(), demand),
                Some(end) if end > snapshot.saved_us => {
                    state.pool.insert_running(seq, key.clone(), demand);
                    state.ends.push(Reverse((end, seq)));
                }
                Some(_) => {}
            }
            state.by_key.insert(key, seq);
            state.replicas.insert(seq, replica);
        }
        Ok(state)
    }

    pub(super) fn snapshot(&self) -> Vec<u8> {
        let snapshot =
            Snapshot { saved_us: self.now_us, next_seq: self.next_seq, replicas: self.replicas.values().collect() };
        serde_json::to_vec(&snapshot).expect("the state serializes")
    }

    /// The time the state has been advanced to.
    pub(super) fn now(&self) -> u64 {
        self.now_us
    }

    /// Replays everything up to `now`; returns whether a queued replica started.
    pub(super) fn advance(&mut self, now: u64) -> bool {
        // The wall clock may step back; simulated time does not.
        self.now_us = self.now_us.max(now);
        let mut started = self.admit(self.now_us);
        while let Some(&Reverse((end, seq))) = self.ends.peek() {
            if end > self.now_us {
                break;
            }
            self.ends.pop();
            if self.pool.release(&seq) {
                started |= self.admit(end);
            }
        }
        started
    }

    /// Starts queue heads at `at` while they fit.
    fn admit(&mut self, at: u64) -> bool {
        let admitted = self.pool.admit();
        for seq in &admitted {
            let replica = self.replicas.get_mut(seq).expect("the pool holds known replicas");
            replica.started_us = Some(at);
            self.ends.push(Reverse((replica.end_us().expect("just started"), *seq)));
        }
        !admitted.is_empty()
    }

    pub(super) fn find(&self, key: &ReplicaKey) -> Option<u64> {
        self.by_key.get(key).copied()
    }

    pub(super) fn get(&self, seq: u64) -> Option<&SimReplica> {
        self.replicas.get(&seq)
    }

    pub(super) fn check_admissible(&self, demand: &ResourceAmounts) -> Result<()> {
        self.pool.check_admissible(demand)
    }

    /// Queues a new replica (it starts at once if it fits) and returns its sequence number.
    pub(super) fn submit(&mut self, key: ReplicaKey, demand: ResourceAmounts, plan: Plan, now: u64) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pool.enqueue(seq, key.clone(), demand.clone());
        self.by_key.insert(key.clone(), seq);
        self.replicas.insert(seq, SimReplica { seq, key, demand, plan, started_us: None, stopped_us: None });
        self.advance(now);
        seq
    }

    /// Stops a queued or running replica; false when there was nothing to stop.
    pub(super) fn stop(&mut self, seq: u64, now: u64) -> bool {
        self.advance(now);
        let now = self.now_us;
        let Some(replica) = self.replicas.get_mut(&seq) else { return false };
        if replica.has_ended(now) {
            return false;
        }
        replica.stopped_us = Some(now);
        self.pool.release(&seq);
        self.advance(now);
        true
    }

    pub(super) fn report(&self) -> ResourceReport {
        self.pool.report()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    fn key(job: &str) -> ReplicaKey {
        ReplicaKey { job_id: job.to_string(), task: 0, replica: 0, attempt: 0 }
    }

    fn plan(secs: u64, exit_code: i32) -> Plan {
        Plan { runtime_us: secs * S, exit_code, output: vec!["hi".into()] }
    }

    fn one_cpu() -> ResourceAmounts {
        ResourceAmounts { cpu: 1.0, ..Default::default() }
    }

    fn state() -> SimState {
        SimState::new(Pool::new("sim1", one_cpu()))
    }

    #[test]
    fn queued_replicas_start_exactly_when_capacity_frees() {
        let mut st = state();
        let a = st.submit(key("a"), one_cpu(), plan(10, 0), 100 * S);
        let b = st.submit(key("b"), one_cpu(), plan(5, 2), 101 * S);
        assert_eq!(st.get(b).unwrap().state(101 * S), NativeState::Queued);
        // Polled late: b started at 110 s when a ended, and ended at 115 s.
        st.advance(200 * S);
        assert_eq!(st.get(a).unwrap().state(200 * S), NativeState::Succeeded);
        assert_eq!(st.get(b).unwrap().started_us, Some(110 * S));
        assert!(matches!(st.get(b).unwrap().state(200 * S), NativeState::Failed { exit_code: Some(2), .. }));
        assert_eq!(st.report().metrics.running_task_num, 0);
    }

    #[test]
    fn stop_frees_capacity_and_is_final() {
        let mut st = state();
        let a = st.submit(key("a"), one_cpu(), plan(10, 0), 100 * S);
        let b = st.submit(key("b"), one_cpu(), plan(10, 0), 100 * S);
        assert!(st.stop(a, 102 * S));
        assert!(!st.stop(a, 103 * S), "stopping twice changes nothing");
        assert_eq!(st.get(b).unwrap().started_us, Some(102 * S));
        st.advance(500 * S);
        assert!(matches!(
            st.get(a).unwrap().state(500 * S),
            NativeState::Failed { category: FailureCategory::Stopped, .. }
        ));
        assert!(!st.stop(b, 500 * S), "an ended replica is not stopped");
        assert_eq!(st.get(b).unwrap().state(500 * S), NativeState::Succeeded);
    }

    #[test]
    fn logs_grow_with_time_and_end_with_the_outcome() {
        let mut st = state();
        let a = st.submit(key("a"), one_cpu(), plan(10, 3), 100 * S);
        let r = st.get(a).unwrap().clone();
        assert_eq!(r.log("sim1", 100 * S), "[sim] a.t0.r0.a0 started on sim1\nhi\n");
        let mid = r.log("sim1", 105 * S);
        assert!(mid.ends_with("[sim] progress 50%\n") && mid.starts_with(&r.log("sim1", 101 * S)), "{mid}");
        let end = r.log("sim1", 111 * S);
        assert!(end.starts_with(&mid) && end.ends_with("[sim] progress 90%\n[sim] exit code 3\n"), "{end}");
        assert_eq!(r.log("sim1", 999 * S), end);
    }

    #[test]
    fn snapshots_round_trip_mid_run() {
        let mut st = state();
        let a = st.submit(key("a"), one_cpu(), plan(10, 0), 100 * S);
        let b = st.submit(key("b"), one_cpu(), plan(10, 0), 100 * S);
        let c = st.submit(key("c"), one_cpu(), plan(10, 0), 100 * S);
        st.stop(c, 101 * S);
        let mut loaded = SimState::load(&st.snapshot(), Pool::new("sim1", one_cpu())).unwrap();
        assert_eq!(loaded.find(&key("b")), Some(b));
        assert_eq!(loaded.report().metrics.confirmed_replicas, st.report().metrics.confirmed_replicas);
        loaded.advance(115 * S);
        assert_eq!(loaded.get(a).unwrap().state(115 * S), NativeState::Succeeded);
        assert_eq!(loaded.get(b).unwrap().started_us, Some(110 * S));
        assert!(matches!(loaded.get(c).unwrap().state(115 * S), NativeState::Failed { .. }));
        assert_eq!(loaded.submit(key("d"), one_cpu(), plan(1, 0), 115 * S), c + 1, "sequence numbers go on");
    }
}

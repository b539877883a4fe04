//! The simulated platform's state: every replica it was given, the shared `Pool` for capacity
//! and queue, and the pending ends of runs. Time is evaluated lazily: each call first replays,
//! in time order, the ends that happened since the last call — starting queued replicas at the
//! very moment capacity freed — so the outcome does not depend on how often the node polls,
//! and an idle center costs nothing.
//!
//! The state remembers which replicas changed (submitted, started from the queue, stopped) so
//! that saving costs the size of the change, not of the state (see `journal`). A whole
//! snapshot and the changes saved after it have one form — the replicas they hold as of a
//! time — and [`Recovery`] merges any sequence of them back into a state. A replica's record
//! only ever gains facts (a start, a stop), so merging is insensitive to repetition: replaying
//! changes a newer snapshot already holds leaves it as it is.

use std::cmp::Reverse;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

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

/// The saved form, of the whole state (a snapshot) or of one change (the replicas it touched):
/// the replicas as of `saved_us`. `R` is `&SimReplica` when saving, `SimReplica` when loading.
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
    /// Replicas submitted, started or stopped since the last [`SimState::take_changes`].
    changed: BTreeSet<u64>,
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
            changed: BTreeSet::new(),
        }
    }

    /// The whole state, saved.
    pub(super) fn snapshot(&self) -> Vec<u8> {
        self.encode(self.replicas.values().collect())
    }

    /// The replicas that changed since the last call, saved (one change for [`Recovery::merge`]);
    /// `None` when none did.
    pub(super) fn take_changes(&mut self) -> Option<Vec<u8>> {
        if self.changed.is_empty() {
            return None;
        }
        let changed = std::mem::take(&mut self.changed);
        Some(self.encode(changed.iter().map(|seq| &self.replicas[seq]).collect()))
    }

    fn encode(&self, replicas: Vec<&SimReplica>) -> Vec<u8> {
        let saved = Snapshot { saved_us: self.now_us, next_seq: self.next_seq, replicas };
        serde_json::to_vec(&saved).expect("the state serializes")
    }

    /// The time the state has been advanced to.
    pub(super) fn now(&self) -> u64 {
        self.now_us
    }

    /// Replays everything up to `now`.
    pub(super) fn advance(&mut self, now: u64) {
        // The wall clock may step back; simulated time does not.
        self.now_us = self.now_us.max(now);
        self.admit(self.now_us);
        while let Some(&Reverse((end, seq))) = self.ends.peek() {
            if end > self.now_us {
                break;
            }
            self.ends.pop();
            if self.pool.release(&seq) {
                self.admit(end);
            }
        }
    }

    /// Starts queue heads at `at` while they fit.
    fn admit(&mut self, at: u64) {
        for seq in self.pool.admit() {
            let replica = self.replicas.get_mut(&seq).expect("the pool holds known replicas");
            replica.started_us = Some(at);
            self.ends.push(Reverse((replica.end_us().expect("just started"), seq)));
            self.changed.insert(seq);
        }
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
        self.changed.insert(seq);
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
        self.changed.insert(seq);
        self.pool.release(&seq);
        self.advance(now);
        true
    }

    pub(super) fn report(&self) -> ResourceReport {
        self.pool.report()
    }
}

/// Rebuilds a state from saved snapshots and changes, merged in the order they were saved.
pub(super) struct Recovery {
    saved_us: u64,
    next_seq: u64,
    replicas: BTreeMap<u64, SimReplica>,
}

impl Recovery {
    pub(super) fn new() -> Self {
        Recovery { saved_us: 0, next_seq: 1, replicas: BTreeMap::new() }
    }

    /// Merges a snapshot or a change. A replica already known only gains the start and stop the
    /// record holds; a record of another key under a known sequence number (two instances saving
    /// into one work dir at once) is ignored.
    pub(super) fn merge(&mut self, saved: &[u8]) -> serde_json::Result<()> {
        let saved: Snapshot<SimReplica> = serde_json::from_slice(saved)?;
        self.saved_us = self.saved_us.max(saved.saved_us);
        self.next_seq = self.next_seq.max(saved.next_seq);
        for replica in saved.replicas {
            match self.replicas.entry(replica.seq) {
                Entry::Vacant(slot) => {
                    slot.insert(replica);
                }
                Entry::Occupied(mut slot) if slot.get().key == replica.key => {
                    let known = slot.get_mut();
                    known.started_us = known.started_us.or(replica.started_us);
                    known.stopped_us = known.stopped_us.or(replica.stopped_us);
                }
                Entry::Occupied(slot) => {
                    tracing::warn!(seq = replica.seq, kept = %slot.get().key, ignored = %replica.key,
                        "two simulated replicas were saved under one sequence number");
                }
            }
        }
        Ok(())
    }

    /// The state as of the latest time saved; runs that had ended by then stay ended.
    pub(super) fn finish(self, pool: Pool<u64>) -> SimState {
        let mut state = SimState { next_seq: self.next_seq, now_us: self.saved_us, ..SimState::new(pool) };
        for (seq, replica) in self.replicas {
            let (key, demand) = (replica.key.clone(), replica.demand.clone());
            match replica.end_us() {
                _ if replica.stopped_us.is_some() => {}
                None => state.pool.enqueue(seq, key.clone(), demand),
                Some(end) if end > self.saved_us => {
                    state.pool.insert_running(seq, key.clone(), demand);
                    state.ends.push(Reverse((end, seq)));
                }
                Some(_) => {}
            }
            state.by_key.insert(key, seq);
            state.replicas.insert(seq, replica);
        }
        state
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

    fn recover(saved: &[&[u8]]) -> SimState {
        let mut recovery = Recovery::new();
        for bytes in saved {
            recovery.merge(bytes).unwrap();
        }
        recovery.finish(Pool::new("sim1", one_cpu()))
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
        let mut loaded = recover(&[&st.snapshot()]);
        assert_eq!(loaded.find(&key("b")), Some(b));
        assert_eq!(loaded.report().metrics.confirmed_replicas, st.report().metrics.confirmed_replicas);
        loaded.advance(115 * S);
        assert_eq!(loaded.get(a).unwrap().state(115 * S), NativeState::Succeeded);
        assert_eq!(loaded.get(b).unwrap().started_us, Some(110 * S));
        assert!(matches!(loaded.get(c).unwrap().state(115 * S), NativeState::Failed { .. }));
        assert_eq!(loaded.submit(key("d"), one_cpu(), plan(1, 0), 115 * S), c + 1, "sequence numbers go on");
    }

    #[test]
    fn a_snapshot_and_the_changes_saved_after_it_rebuild_the_state() {
        let mut st = state();
        let a = st.submit(key("a"), one_cpu(), plan(10, 0), 100 * S);
        let before_snapshot = st.take_changes().unwrap();
        let snapshot = st.snapshot();
        st.submit(key("b"), one_cpu(), plan(10, 0), 101 * S);
        let c = st.submit(key("c"), one_cpu(), plan(10, 0), 102 * S);
        let mut changes = vec![st.take_changes().unwrap()];
        assert!(st.take_changes().is_none(), "nothing changed since");
        st.advance(111 * S);
        changes.push(st.take_changes().expect("b started from the queue at 110 s"));
        assert!(st.stop(c, 112 * S));
        changes.push(st.take_changes().unwrap());
        let saved: Vec<&[u8]> = [&snapshot].into_iter().chain(&changes).map(Vec::as_slice).collect();
        let loaded = recover(&saved);
        assert_eq!(loaded.snapshot(), st.snapshot());
        assert_eq!(loaded.report(), st.report());

        // Changes a newer snapshot holds, replayed over it (a crash came between writing the
        // snapshot and emptying the journal), change nothing.
        let newer = st.snapshot();
        let stale: Vec<&[u8]> = [&newer, &before_snapshot].into_iter().chain(&changes).map(Vec::as_slice).collect();
        assert_eq!(recover(&stale).snapshot(), newer);

        // Another instance's replica under a known sequence number is ignored.
        let mut other = state();
        other.submit(key("x"), one_cpu(), plan(10, 0), 100 * S);
        let clash = recover(&[&newer, &other.take_changes().unwrap()]);
        assert_eq!((clash.find(&key("a")), clash.find(&key("x"))), (Some(a), None));
        assert_eq!(clash.snapshot(), newer);
    }
}

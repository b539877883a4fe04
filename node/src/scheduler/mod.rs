//! The scheduling loop (standard figure 6) around the pure solver. On the leader only: every
//! `schedule_interval_ms`, and at once when kicked (a job arrived, a center reported), it reads
//! the queue and catalog from the applied state, calls `solve`, and commits the batch's
//! decisions as one fenced `Place` command. Followers' loops idle; a new leader's loop resumes
//! as soon as it leads, after a ReadIndex round has brought its state up to every committed entry
//! (a deposed leader's placements included).
//!
//! A cycle leaves a [`Resume`] mark: until capacity-relevant state changes (a report, a catalog
//! edit, a stop — anything but a new job or the cycle's own placements, which only take
//! capacity) or the period comes round, the next cycles decide only the jobs that arrived after
//! the mark, since the earlier ones would be blocked again. The periodic cycle always decides
//! the queue from its head (ledger entries also expire with time).
//!
//! Cycles overlap ([`cycle`]): while one cycle's batch commits, the next plans the jobs that
//! arrived meanwhile on the state that batch will leave, and proposes once it is accepted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jcs_api::model::PolicyMode;
use jcs_raft::schedule::state::CatalogCache;
use jcs_raft::schedule::{RegionLinks, SolverConfig};
use jcs_raft::store::StateReader;
use jcs_raft::Raft;
use tokio::sync::{oneshot, watch};

use crate::proposer::Proposer;
use crate::signals::{Kicks, OrderSignal};

mod cycle;

use cycle::Flight;

/// The scheduler's settings, from the node's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub interval: Duration,
    pub batch: usize,
    pub stale_after_ms: i64,
    pub ledger_ttl_ms: i64,
    pub data_move_limit_mb: i64,
    pub default_policy: PolicyMode,
    /// The links between regions (shared with every cycle's solver config).
    pub region_links: Arc<RegionLinks>,
    /// Place on centers without an adapter (`place_without_adapter`: placement benchmarks).
    pub place_without_adapter: bool,
}

/// A.1 requests waiting on the leader for their job's first decision, each woken by the cycle
/// that decides its job — not by every cycle or applied entry, which with many requests in
/// flight made every waiter re-read its job many times over. A leader that steps down wakes
/// them all as [`Woke::Deposed`]: the next leader decides their jobs, and they go on waiting as
/// a follower's requests do.
#[derive(Clone, Default)]
pub struct DecisionWaiters {
    waiting: Arc<Mutex<HashMap<String, Vec<oneshot::Sender<Woke>>>>>,
}

/// Why a [`DecisionWait`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woke {
    /// A committed cycle of this leader decided the job.
    Decided,
    /// This node stopped leading before its cycles decided the job.
    Deposed,
    /// The deadline passed.
    TimedOut,
}

/// One request's wait for a job's decision; leaves the registry when dropped.
pub struct DecisionWait {
    waiters: DecisionWaiters,
    job_id: String,
    woken: oneshot::Receiver<Woke>,
}

impl DecisionWaiters {
    /// Registers a wait for `job_id`'s next decision. Register before reading the job (and
    /// before checking leadership): a cycle that decides it after the registration wakes the
    /// wait, one before it is seen by the read.
    pub fn register(&self, job_id: &str) -> DecisionWait {
        let (sender, woken) = oneshot::channel();
        self.lock().entry(job_id.to_string()).or_default().push(sender);
        DecisionWait { waiters: self.clone(), job_id: job_id.to_string(), woken }
    }

    /// Wakes every wait on these jobs: a committed cycle decided them.
    fn decided<'a>(&self, job_ids: impl IntoIterator<Item = &'a str>) {
        let mut waiting = self.lock();
        if waiting.is_empty() {
            return;
        }
        for job_id in job_ids {
            for sender in waiting.remove(job_id).into_iter().flatten() {
                let _ = sender.send(Woke::Decided);
            }
        }
    }

    /// Wakes every wait: this node no longer leads.
    fn deposed(&self) {
        let waiting = std::mem::take(&mut *self.lock());
        for sender in waiting.into_values().flatten() {
            let _ = sender.send(Woke::Deposed);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<oneshot::Sender<Woke>>>> {
        self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl DecisionWait {
    /// Resolves when a cycle decided the job, this node stopped leading, or at `deadline`.
    pub async fn until(&mut self, deadline: tokio::time::Instant) -> Woke {
        match tokio::time::timeout_at(deadline, &mut self.woken).await {
            Ok(Ok(woke)) => woke,
            // The registry went away with the node: nothing will decide here any more.
            Ok(Err(_)) => Woke::Deposed,
            Err(_) => Woke::TimedOut,
        }
    }
}

impl Drop for DecisionWait {
    fn drop(&mut self) {
        // Closed first, so that this wait's own sender counts as gone below.
        self.woken.close();
        let mut waiting = self.waiters.lock();
        if let Some(senders) = waiting.get_mut(&self.job_id) {
            senders.retain(|sender| !sender.is_closed());
            if senders.is_empty() {
                waiting.remove(&self.job_id);
            }
        }
    }
}

/// Handle to the loop: kick it, or wait for a job's decision.
#[derive(Clone)]
pub struct Scheduler {
    pub kicks: Kicks,
    /// Requests waiting for their job's decision (on the leader).
    pub waiters: DecisionWaiters,
    pub settings: Settings,
    /// Told which centers each committed batch placed on, so their workers dispatch at once.
    orders: OrderSignal,
}

impl Scheduler {
    /// Starts the loop; it runs until `stop` is sent (or dropped), then releases the store.
    pub fn start(
        raft: Raft,
        proposer: Proposer,
        reader: StateReader,
        settings: Settings,
        kicks: Kicks,
        orders: OrderSignal,
        stop: watch::Receiver<()>,
    ) -> (Scheduler, tokio::task::JoinHandle<()>) {
        let scheduler = Scheduler { kicks, waiters: DecisionWaiters::default(), settings, orders };
        let task = tokio::spawn(run(raft, proposer, reader, scheduler.clone(), stop));
        (scheduler, task)
    }

    /// Asks for a cycle now: new jobs arrived.
    pub fn kick(&self) {
        self.kicks.kick();
    }

    /// The solver settings for a cycle (or a dry-run) at `now_ms`.
    pub fn solver_config(&self, now_ms: i64, term: u64, snapshot_version: u64) -> SolverConfig {
        SolverConfig {
            now_ms,
            stale_after_ms: self.settings.stale_after_ms,
            data_move_limit_mb: self.settings.data_move_limit_mb,
            default_policy: self.settings.default_policy,
            term,
            snapshot_version,
            blocked_ahead: None,
            region_links: self.settings.region_links.clone(),
            assumed: Vec::new(),
            place_without_adapter: self.settings.place_without_adapter,
        }
    }
}

/// Where the next cycle may resume: after `after`, while the placement version and the
/// capacity epoch are still those the mark was taken at.
#[derive(Debug, Clone)]
pub(super) struct Resume {
    after: String,
    version: u64,
    epoch: u64,
    blocked_ahead: Option<(String, PolicyMode)>,
}

async fn run(raft: Raft, proposer: Proposer, reader: StateReader, scheduler: Scheduler, mut stop: watch::Receiver<()>) {
    let mut resume: Option<Resume> = None;
    let mut flight: Option<Flight> = None;
    let mut catalog_cache = CatalogCache::default();
    let mut metrics = raft.metrics();
    let mut led_last_cycle = false;
    loop {
        let periodic = tokio::select! {
            _ = scheduler.kicks.kicked() => false,
            _ = tokio::time::sleep(scheduler.settings.interval) => true,
            // A new leader resumes the cycles at once, from the head of the queue; a deposed
            // one lets its waiting requests go at once.
            _ = leadership(&mut metrics, !led_last_cycle) => true,
            _ = stop.changed() => return,
        };
        let (leader, term) = {
            let m = raft.metrics().borrow().clone();
            (m.current_leader == Some(m.id), m.current_term)
        };
        led_last_cycle = leader;
        if !leader {
            if let Some(flight) = flight.take() {
                flight.settle().await;
            }
            resume = None;
            scheduler.waiters.deposed();
            continue;
        }
        if let Err(e) = raft.ensure_linearizable().await {
            tracing::debug!(error = %e, term, "no scheduling cycle: not a confirmed leader");
            continue;
        }
        // A cycle plans ahead of the batch in flight only for jobs that arrived since; one
        // that must start from the head of the queue (the period came round, capacity may have
        // been freed) waits for it.
        let epoch = scheduler.kicks.capacity_epoch();
        if flight.as_ref().is_some_and(|f| periodic || f.resume.epoch != epoch || f.is_answered()) {
            resume = flight.take().expect("checked").settle().await;
        }
        let from = resume.take().filter(|_| !periodic);
        let plan = match cycle::plan(&reader, &scheduler, &mut catalog_cache, term, epoch, from, flight.as_ref()) {
            Ok(plan) => plan,
            Err(e) => {
                tracing::warn!(error = %e, term, "scheduling cycle failed");
                continue;
            }
        };
        if let Some(before) = flight.take() {
            if before.settle().await.is_none() {
                // Planned on a batch that was refused: plan again from the head.
                scheduler.kicks.kick();
                continue;
            }
        }
        // More may be queued than one batch took: go again at once.
        if plan.decided >= scheduler.settings.batch {
            scheduler.kicks.kick();
        }
        match cycle::launch(&proposer, &scheduler, plan) {
            Ok(launched) => flight = Some(launched),
            Err(mark) => resume = mark,
        }
    }
}

/// Resolves when this node leads (`leading`), or does not (at once if that is already so).
async fn leadership(
    metrics: &mut watch::Receiver<openraft::RaftMetrics<jcs_raft::NodeId, jcs_raft::NodeInfo>>,
    leading: bool,
) {
    loop {
        {
            let m = metrics.borrow_and_update();
            if (m.current_leader == Some(m.id)) == leading {
                return;
            }
        }
        if metrics.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::{DecisionWaiters, Woke};

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn a_decision_wakes_every_wait_on_that_job_and_no_other() {
        let waiters = DecisionWaiters::default();
        let (mut first, mut second) = (waiters.register("job-1"), waiters.register("job-1"));
        let mut other = waiters.register("job-2");
        waiters.decided(["job-1", "job-3"]);
        assert_eq!(first.until(soon()).await, Woke::Decided);
        assert_eq!(second.until(soon()).await, Woke::Decided);
        let later = Instant::now() + Duration::from_millis(10);
        assert_eq!(other.until(later).await, Woke::TimedOut, "job-2 was not decided");
    }

    #[tokio::test]
    async fn a_deposed_leader_lets_every_wait_go() {
        let waiters = DecisionWaiters::default();
        let (mut first, mut second) = (waiters.register("job-1"), waiters.register("job-2"));
        waiters.deposed();
        assert_eq!(first.until(soon()).await, Woke::Deposed);
        assert_eq!(second.until(soon()).await, Woke::Deposed);
        assert!(waiters.lock().is_empty());
    }

    #[tokio::test]
    async fn a_wait_leaves_the_registry_when_dropped() {
        let waiters = DecisionWaiters::default();
        let kept = waiters.register("job-1");
        drop(waiters.register("job-1"));
        drop(waiters.register("job-2"));
        assert_eq!(waiters.lock().get("job-1").map(Vec::len), Some(1));
        assert!(!waiters.lock().contains_key("job-2"));
        drop(kept);
        assert!(waiters.lock().is_empty());
    }
}

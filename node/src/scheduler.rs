//! The scheduling loop (standard figure 6) around the pure solver. On the leader only: every
//! `schedule_interval_ms`, and at once when kicked (a job arrived, a center reported), it reads
//! the queue and catalog from the applied state, calls `solve`, and commits the batch's
//! decisions as one fenced `Place` command. Followers' loops idle; a new leader's loop resumes
//! as soon as it leads, after a ReadIndex round has brought its state up to every committed entry
//! (a deposed leader's placements included).
//!
//! A cycle that placed nothing leaves a [`Resume`] mark: until capacity-relevant state changes
//! (a report, a catalog edit, a stop, a placement — anything but a new job) or the period comes
//! round, the next cycles decide only the jobs that arrived after the mark, since the earlier
//! ones would be blocked again. The periodic cycle always decides the queue from its head
//! (ledger entries also expire with time).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jcs_api::model::{DecisionOutcome, Job, PolicyMode, RejectCode};
use jcs_raft::command::{Command, Outcome, PlacementBatch, PlacementDecision};
use jcs_raft::schedule::solve::first_blocked;
use jcs_raft::schedule::state::{load_queue, CatalogCache};
use jcs_raft::schedule::{solve, RegionLinks, SolverConfig};
use jcs_raft::store::StateReader;
use jcs_raft::tables::sched_fence;
use jcs_raft::Raft;
use tokio::sync::{oneshot, watch, Notify};

use crate::proposer::Proposer;

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
}

/// Wakes the scheduling loop. Shared by everything that commits writes on this node: the
/// REST API, and on the leader the requests followers forward (their clients' writes and their
/// center workers' reports), so that the leader's loop hears of every change at once.
#[derive(Clone, Default)]
pub struct Kicks {
    notify: Arc<Notify>,
    /// Bumped by every write that can change capacity or eligibility (not by new jobs).
    capacity_epoch: Arc<AtomicU64>,
}

impl Kicks {
    /// Asks for a cycle now: new jobs arrived.
    pub fn kick(&self) {
        self.notify.notify_one();
    }

    /// Asks for a cycle from the head of the queue: something that can unblock jobs changed.
    pub fn capacity_changed(&self) {
        self.capacity_epoch.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_one();
    }

    /// After a command committed: a new job (`new_job`) asks for a cycle; any other change
    /// may unblock queued jobs, so it asks for a cycle from the head of the queue.
    pub fn after_commit(&self, new_job: bool) {
        if new_job {
            self.kick();
        } else {
            self.capacity_changed();
        }
    }
}

/// A.1 requests waiting on the leader for their job's first decision, each woken by the cycle
/// that decides its job — not by every cycle or applied entry, which with many requests in
/// flight made every waiter re-read its job many times over.
#[derive(Clone, Default)]
pub struct DecisionWaiters {
    waiting: Arc<Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>>,
}

/// One request's wait for a job's decision; leaves the registry when dropped.
pub struct DecisionWait {
    waiters: DecisionWaiters,
    job_id: String,
    decided: oneshot::Receiver<()>,
}

impl DecisionWaiters {
    /// Registers a wait for `job_id`'s next decision. Register before reading the job: a cycle
    /// that decides it after the registration wakes the wait, one before it is seen by the read.
    pub fn register(&self, job_id: &str) -> DecisionWait {
        let (sender, decided) = oneshot::channel();
        self.lock().entry(job_id.to_string()).or_default().push(sender);
        DecisionWait { waiters: self.clone(), job_id: job_id.to_string(), decided }
    }

    /// Wakes every wait on these jobs: a committed cycle decided them.
    fn decided<'a>(&self, job_ids: impl IntoIterator<Item = &'a str>) {
        let mut waiting = self.lock();
        if waiting.is_empty() {
            return;
        }
        for job_id in job_ids {
            for sender in waiting.remove(job_id).into_iter().flatten() {
                let _ = sender.send(());
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<oneshot::Sender<()>>>> {
        self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl DecisionWait {
    /// Resolves when a cycle decided the job, or at `deadline`; says which.
    pub async fn until(&mut self, deadline: tokio::time::Instant) -> bool {
        tokio::time::timeout_at(deadline, &mut self.decided).await.is_ok_and(|r| r.is_ok())
    }
}

impl Drop for DecisionWait {
    fn drop(&mut self) {
        // Closed first, so that this wait's own sender counts as gone below.
        self.decided.close();
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
    orders: crate::centers::OrderSignal,
}

impl Scheduler {
    /// Starts the loop; it runs until `stop` is sent (or dropped), then releases the store.
    pub fn start(
        raft: Raft,
        proposer: Proposer,
        reader: StateReader,
        settings: Settings,
        kicks: Kicks,
        orders: crate::centers::OrderSignal,
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
        }
    }
}

/// Where the next cycle may resume: after `after`, while the placement version and the
/// capacity epoch are still those the mark was taken at.
#[derive(Debug, Clone)]
struct Resume {
    after: String,
    version: u64,
    epoch: u64,
    blocked_ahead: Option<(String, PolicyMode)>,
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

async fn run(raft: Raft, proposer: Proposer, reader: StateReader, scheduler: Scheduler, mut stop: watch::Receiver<()>) {
    let mut resume: Option<Resume> = None;
    let mut catalog_cache = CatalogCache::default();
    let mut metrics = raft.metrics();
    let mut led_last_cycle = false;
    loop {
        let periodic = tokio::select! {
            _ = scheduler.kicks.notify.notified() => false,
            _ = tokio::time::sleep(scheduler.settings.interval) => true,
            // A new leader resumes the cycles at once, from the head of the queue.
            _ = became_leader(&mut metrics), if !led_last_cycle => true,
            _ = stop.changed() => return,
        };
        let (leader, term) = {
            let m = raft.metrics().borrow().clone();
            (m.current_leader == Some(m.id), m.current_term)
        };
        led_last_cycle = leader;
        if !leader {
            resume = None;
            continue;
        }
        if let Err(e) = raft.ensure_linearizable().await {
            tracing::debug!(error = %e, term, "no scheduling cycle: not a confirmed leader");
            continue;
        }
        let from = resume.take().filter(|_| !periodic);
        match cycle(&proposer, &reader, &scheduler, &mut catalog_cache, term, from).await {
            Ok(report) => {
                resume = report.resume;
                // More may be queued than one batch took: go again at once.
                if report.decided >= scheduler.settings.batch {
                    scheduler.kicks.kick();
                }
            }
            Err(e) => tracing::warn!(error = %e, term, "scheduling cycle failed"),
        }
    }
}

/// Resolves when this node leads (at once if it already does).
async fn became_leader(metrics: &mut watch::Receiver<openraft::RaftMetrics<jcs_raft::NodeId, jcs_raft::NodeInfo>>) {
    loop {
        {
            let m = metrics.borrow_and_update();
            if m.current_leader == Some(m.id) {
                return;
            }
        }
        if metrics.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

struct CycleReport {
    decided: usize,
    resume: Option<Resume>,
}

/// Whether a decision is worth a Raft write: it places something, or the job's pending reason
/// changed. Unchanged pending jobs cost nothing per cycle.
fn worth_writing(decision: &PlacementDecision, job: &Job) -> bool {
    decision.places_something() || decision.explain.reason != job.status_reason
}

async fn cycle(
    proposer: &Proposer,
    reader: &StateReader,
    scheduler: &Scheduler,
    catalog_cache: &mut CatalogCache,
    term: u64,
    from: Option<Resume>,
) -> anyhow::Result<CycleReport> {
    let started = Instant::now();
    let settings = &scheduler.settings;
    let epoch = scheduler.kicks.capacity_epoch.load(Ordering::Acquire);
    let fence = sched_fence(reader)?;
    let from = from.filter(|r| r.version == fence.version && r.epoch == epoch);
    let queue = load_queue(reader, from.as_ref().map(|r| r.after.as_str()), settings.batch)?;
    if from.is_none() {
        metrics::gauge!("jcs_schedule_queue_depth").set(queue.len() as f64);
    }
    let Some(last) = queue.last().map(|job| job.id.clone()) else {
        return Ok(CycleReport { decided: 0, resume: from });
    };
    let now = now_ms();
    let catalog = catalog_cache.load(reader)?;
    let mut config = scheduler.solver_config(now, term, fence.version);
    config.blocked_ahead = from.as_ref().and_then(|r| r.blocked_ahead.clone());
    let decisions = solve(catalog, &queue, &config);
    let solved = started.elapsed();
    let blocked_ahead = config.blocked_ahead.clone().or_else(|| first_blocked(&decisions));
    let mut pending_by_reason: std::collections::BTreeMap<&'static str, u64> = Default::default();
    let mut placed_jobs = Vec::new();
    let mut writes = Vec::new();
    for (decision, job) in decisions.into_iter().zip(&queue) {
        match decision.explain.outcome {
            DecisionOutcome::Placed => placed_jobs.push(job.created_at),
            _ => *pending_by_reason.entry(pending_code(&decision.explain.reason)).or_default() += 1,
        }
        if worth_writing(&decision, job) {
            writes.push(decision);
        }
    }
    if from.is_none() {
        for (reason, count) in &pending_by_reason {
            metrics::gauge!("jcs_schedule_pending_jobs", "reason" => *reason).set(*count as f64);
        }
    }
    metrics::histogram!("jcs_schedule_batch_jobs").record(queue.len() as f64);
    let placed_nothing = !writes.iter().any(PlacementDecision::places_something);
    let mut version = fence.version;
    if !writes.is_empty() {
        let placed_on: std::collections::BTreeSet<String> =
            writes.iter().flat_map(|d| d.placements.iter().flatten().flatten().cloned()).collect();
        let batch = PlacementBatch {
            term,
            snapshot_version: fence.version,
            ledger_ttl_ms: settings.ledger_ttl_ms,
            decisions: writes,
        };
        match proposer.propose_here(Command::Place(Box::new(batch))).await? {
            Ok(Outcome::Placed { applied, skipped }) => {
                version += 1;
                scheduler.orders.raise(&placed_on);
                let committed = now_ms();
                for created_at in placed_jobs {
                    // Request received → placed. T of §6.7 ends at dispatch: the job's `dispatchedAt`.
                    metrics::histogram!("jcs_schedule_time_seconds")
                        .record((committed - created_at).max(0) as f64 / 1000.0);
                }
                metrics::counter!("jcs_schedule_decisions_applied_total").increment(applied.len() as u64);
                metrics::counter!("jcs_schedule_decisions_skipped_total").increment(skipped.len() as u64);
                tracing::debug!(
                    term,
                    applied = applied.len(),
                    skipped = skipped.len(),
                    solve_ms = solved.as_millis() as u64,
                    "scheduling cycle committed"
                );
            }
            Ok(other) => anyhow::bail!("unexpected outcome of a placement batch: {other:?}"),
            Err(refusal) => {
                metrics::counter!("jcs_schedule_stale_batches_total").increment(1);
                tracing::info!(%refusal, term, "placement batch refused; the next cycle recomputes");
                return Ok(CycleReport { decided: queue.len(), resume: None });
            }
        }
    }
    metrics::histogram!("jcs_schedule_cycle_seconds").record(started.elapsed().as_secs_f64());
    scheduler.waiters.decided(queue.iter().map(|job| job.id.as_str()));
    let resume = placed_nothing.then_some(Resume { after: last, version, epoch, blocked_ahead });
    Ok(CycleReport { decided: queue.len(), resume })
}

/// The leading reason code of a pending job's one-line reason, as a metric label.
fn pending_code(reason: &str) -> &'static str {
    if reason.starts_with("fcfs") {
        return "fcfs";
    }
    // Every job is rejected by centers that do not offer its spec (or that it is not pinned
    // to); the label is the first other code the reason names, else one of those.
    let structural = [RejectCode::SpecNotOffered, RejectCode::NotPinned];
    let named = |code: &RejectCode| reason.contains(code.as_str());
    RejectCode::ALL
        .iter()
        .filter(|code| !structural.contains(code))
        .chain(&structural)
        .find(|code| named(code))
        .map_or("other", |code| code.as_str())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::DecisionWaiters;

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn a_decision_wakes_every_wait_on_that_job_and_no_other() {
        let waiters = DecisionWaiters::default();
        let (mut first, mut second) = (waiters.register("job-1"), waiters.register("job-1"));
        let mut other = waiters.register("job-2");
        waiters.decided(["job-1", "job-3"]);
        assert!(first.until(soon()).await);
        assert!(second.until(soon()).await);
        assert!(!other.until(Instant::now() + Duration::from_millis(10)).await, "job-2 was not decided");
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

//! One scheduling cycle in two steps: [`plan`] reads the queue and the catalog and runs the
//! pure solver; [`launch`] proposes the resulting `Place` batch and, once it is answered,
//! records the metrics, wakes the requests waiting on its jobs and the centers it placed on.
//!
//! The steps are apart so that cycles overlap: while one batch commits (log fsync, apply), the
//! next cycle plans the jobs that arrived meanwhile, assuming the batch in flight (its
//! placements deducted, its version the one it will produce). That next batch is proposed only
//! once the first is accepted; if the first is refused, the plan built on it is dropped. The
//! state machine's fence (term and placement version) holds either way: a plan whose
//! assumption does not hold is refused as stale, never applied.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use jcs_api::model::{DecisionOutcome, Job, RejectCode};
use jcs_raft::command::{Command, Outcome, PlacementBatch};
use jcs_raft::schedule::problem::Capacity;
use jcs_raft::schedule::solve;
use jcs_raft::schedule::solve::{first_blocked, placed_demands};
use jcs_raft::schedule::state::{load_queue, CatalogCache};
use jcs_raft::schedule::JobDecision;
use jcs_raft::store::StateReader;
use jcs_raft::tables::sched_fence;
use tokio::task::JoinHandle;

use super::{Resume, Scheduler};
use crate::proposer::Proposer;
use crate::signals::now_ms;

/// A batch proposed and not yet answered, with what a cycle planned meanwhile must assume.
pub(super) struct Flight {
    /// Resolves once the batch is answered: whether it was accepted.
    answered: JoinHandle<bool>,
    /// Its placements, replica by replica.
    assumed: Vec<(String, Capacity)>,
    /// Where the next cycle resumes once the batch applies (its version the batch's plus one).
    pub(super) resume: Resume,
}

impl Flight {
    pub(super) fn is_answered(&self) -> bool {
        self.answered.is_finished()
    }

    /// Waits for the answer; the resume mark holds only if the batch was accepted.
    pub(super) async fn settle(self) -> Option<Resume> {
        let accepted = self.answered.await.unwrap_or(false);
        accepted.then_some(self.resume)
    }
}

/// A cycle's decisions, ready to be proposed.
pub(super) struct Plan {
    /// The jobs decided (all of them wait for the batch, or for nothing if it writes nothing).
    job_ids: Vec<String>,
    /// Creation times of the jobs placed, for the scheduling-time metric.
    placed_created_at: Vec<i64>,
    /// The decisions worth a write, if any: the batch to propose.
    writes: Vec<JobDecision>,
    /// The placement version the batch must find.
    version: u64,
    term: u64,
    assumed: Vec<(String, Capacity)>,
    /// Where a next cycle may resume after this one.
    resume: Option<Resume>,
    started: Instant,
    pub(super) decided: usize,
}

/// Whether a decision is worth a Raft write: it places something, or the job's pending reason
/// changed. Unchanged pending jobs cost nothing per cycle.
fn worth_writing(decision: &JobDecision, job: &Job) -> bool {
    decision.places_something() || decision.explain.reason != job.status_reason
}

/// Plans a cycle: the queue from its head, or after `from`'s mark while it holds; with a batch
/// in flight, only the jobs after that batch's, on the state as it will be once it applies.
/// `epoch` is the capacity epoch the caller checked the marks against: the plan's own mark
/// carries it, so that a change after that check still sends the next cycle to the head.
pub(super) fn plan(
    reader: &StateReader,
    scheduler: &Scheduler,
    catalog_cache: &mut CatalogCache,
    term: u64,
    epoch: u64,
    from: Option<Resume>,
    in_flight: Option<&Flight>,
) -> anyhow::Result<Plan> {
    let started = Instant::now();
    let settings = &scheduler.settings;
    let fence = loop {
        let fence = sched_fence(reader)?;
        catalog_cache.load(reader)?;
        // The batch in flight may apply while the catalog is read: read again until the
        // version before and after agree on whether it has.
        if sched_fence(reader)?.version == fence.version {
            break fence;
        }
    };
    let catalog = catalog_cache.catalog();
    let assumed = in_flight.filter(|flight| flight.resume.version == fence.version + 1).map(|f| f.assumed.clone());
    // The version this cycle's batch must find: the current one, or the one the batch in
    // flight will leave.
    let version = fence.version + u64::from(assumed.is_some());
    let from = match in_flight {
        Some(flight) => Some(flight.resume.clone()),
        None => from.filter(|r| r.version == version && r.epoch == epoch),
    };
    let queue = load_queue(reader, from.as_ref().map(|r| r.after.as_str()), settings.batch)?;
    if from.is_none() {
        metrics::gauge!("jcs_schedule_queue_depth").set(queue.len() as f64);
    }
    let Some(last) = queue.last().map(|job| job.id.clone()) else {
        return Ok(Plan {
            job_ids: Vec::new(),
            placed_created_at: Vec::new(),
            writes: Vec::new(),
            version,
            term,
            assumed: Vec::new(),
            resume: from,
            started,
            decided: 0,
        });
    };
    let mut config = scheduler.solver_config(now_ms(), term, version);
    config.blocked_ahead = from.as_ref().and_then(|r| r.blocked_ahead.clone());
    config.assumed = assumed.unwrap_or_default();
    let decisions = solve(catalog, &queue, &config);
    let blocked_ahead = config.blocked_ahead.clone().or_else(|| first_blocked(&decisions));
    let placed = placed_demands(catalog, &queue, &decisions);
    let mut pending_by_reason: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut placed_created_at = Vec::new();
    let mut writes = Vec::new();
    for (decision, job) in decisions.into_iter().zip(&queue) {
        match decision.explain.outcome {
            DecisionOutcome::Placed => placed_created_at.push(job.created_at),
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
    metrics::histogram!("jcs_schedule_solve_seconds").record(started.elapsed().as_secs_f64());
    let places = writes.iter().any(JobDecision::places_something);
    // After this cycle, its own placements aside, nothing made room for the jobs it left
    // pending: the next cycle may start after them, at the version this one leaves.
    let resume = Resume { after: last, version: version + u64::from(!writes.is_empty()), epoch, blocked_ahead };
    Ok(Plan {
        job_ids: queue.iter().map(|job| job.id.clone()).collect(),
        placed_created_at,
        decided: queue.len(),
        writes,
        version,
        term,
        assumed: if places { placed } else { Vec::new() },
        resume: Some(resume),
        started,
    })
}

/// Proposes a plan's batch, if it has one, in a task of its own; without a batch its jobs are
/// decided at once. Returns the flight, or the resume mark when nothing is in flight.
pub(super) fn launch(proposer: &Proposer, scheduler: &Scheduler, plan: Plan) -> Result<Flight, Option<Resume>> {
    let Plan { job_ids, placed_created_at, writes, version, term, assumed, resume, started, .. } = plan;
    // (A plan with writes always has a mark: it decided jobs.)
    let resume = match resume {
        Some(resume) if !writes.is_empty() => resume,
        resume => {
            metrics::histogram!("jcs_schedule_cycle_seconds").record(started.elapsed().as_secs_f64());
            scheduler.waiters.decided(job_ids.iter().map(String::as_str));
            return Err(resume);
        }
    };
    let (proposer, scheduler) = (proposer.clone(), scheduler.clone());
    let placed_on: BTreeSet<String> =
        writes.iter().flat_map(|d| d.placements.iter().flatten().flatten().cloned()).collect();
    let answered = tokio::spawn(async move {
        // Serializing the explain records here, not in `plan`, leaves the scheduling loop free
        // to plan the next cycle meanwhile.
        let batch = PlacementBatch {
            term,
            snapshot_version: version,
            ledger_ttl_ms: scheduler.settings.ledger_ttl_ms,
            decisions: writes.into_iter().map(JobDecision::into_command).collect(),
        };
        let proposed = Instant::now();
        let answer = proposer.propose_here(Command::Place(Box::new(batch))).await;
        metrics::histogram!("jcs_schedule_commit_seconds").record(proposed.elapsed().as_secs_f64());
        let accepted = match answer {
            Ok(Ok(Outcome::Placed { applied, skipped })) => {
                scheduler.orders.raise(&placed_on);
                let committed = now_ms();
                for created_at in placed_created_at {
                    // Request received → placed. T of §6.7 ends at dispatch: the job's `dispatchedAt`.
                    metrics::histogram!("jcs_schedule_time_seconds")
                        .record((committed - created_at).max(0) as f64 / 1000.0);
                }
                metrics::counter!("jcs_schedule_decisions_applied_total").increment(applied.len() as u64);
                metrics::counter!("jcs_schedule_decisions_skipped_total").increment(skipped.len() as u64);
                tracing::debug!(term, applied = applied.len(), skipped = skipped.len(), "scheduling cycle committed");
                true
            }
            Ok(Ok(other)) => {
                tracing::warn!(term, ?other, "unexpected outcome of a placement batch");
                false
            }
            Ok(Err(refusal)) => {
                metrics::counter!("jcs_schedule_stale_batches_total").increment(1);
                tracing::info!(%refusal, term, "placement batch refused; the next cycle recomputes");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, term, "placement batch not committed");
                false
            }
        };
        metrics::histogram!("jcs_schedule_cycle_seconds").record(started.elapsed().as_secs_f64());
        // A refused batch decided nothing: its jobs wait for the cycle that plans them again
        // (or for this node to step down).
        if accepted {
            scheduler.waiters.decided(job_ids.iter().map(String::as_str));
        }
        accepted
    });
    Ok(Flight { answered, assumed, resume })
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

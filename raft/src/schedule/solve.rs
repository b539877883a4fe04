//! One scheduling cycle as a pure function: `solve(catalog, queue, config) -> decisions`.
//!
//! Jobs are taken in queue order. Each replica is filtered against every center offering its
//! spec, scored by the strategies under the job's policy, and placed on the best; the capacity
//! it takes is deducted at once, so later replicas and later jobs of the same cycle see it.
//! Gang tasks of a job are placed together or not at all (their deductions are undone); a task
//! that opted out of gang placement stands alone. Under FCFS no job overtakes a blocked one.
//! Every decision carries its explain record.

use std::collections::{BTreeMap, HashSet};

use jcs_api::model::{
    CenterScore, DecisionOutcome, Explain, Job, MigrationPlan, PolicyMode, RejectCode, ReplicaExplain, StrategyScore,
    TaskExplain, EXPLAIN_LIMIT,
};

use crate::command::PlacementDecision;
use crate::schedule::evaluate::{score_table, WeightedSum};
use crate::schedule::filter::{check, JobNeeds, TaskNeeds};
use crate::schedule::migration::rank_sources;
use crate::schedule::policy::{resolve, Policy};
use crate::schedule::problem::{Capacity, Catalog, SolverConfig};
use crate::schedule::snapshot::{CandidateCenter, DataLocation, JobContext, Snapshot, DEFAULT_DURATION_SECS};

/// The cycle's decision for one job: the placement command's own type, so a cycle's output
/// goes into a `Place` batch as it is.
pub type JobDecision = PlacementDecision;

/// Capacity and workload left at each center as the cycle goes.
struct Ledger {
    free: BTreeMap<String, Capacity>,
    load: BTreeMap<String, i64>,
}

impl Ledger {
    fn new(catalog: &Catalog) -> Ledger {
        let mut free = BTreeMap::new();
        let mut load = BTreeMap::new();
        for (id, state) in &catalog.centers {
            let mut capacity = state.metrics.as_ref().map(Capacity::free_in).unwrap_or_default();
            capacity.sub(&state.in_flight.capacity);
            free.insert(id.clone(), capacity);
            let running = state.metrics.as_ref().map_or(0, |m| m.running_task_num);
            load.insert(id.clone(), running.saturating_add(state.in_flight.replicas));
        }
        Ledger { free, load }
    }

    fn take(&mut self, center: &str, demand: &Capacity) {
        if let Some(free) = self.free.get_mut(center) {
            free.sub(demand);
        }
        *self.load.entry(center.to_string()).or_default() += 1;
    }

    fn give_back(&mut self, center: &str, demand: &Capacity) {
        if let Some(free) = self.free.get_mut(center) {
            free.add(demand);
        }
        *self.load.entry(center.to_string()).or_default() -= 1;
    }
}

/// The first job of `decisions` left (partly) unplaced, with its mode.
pub fn first_blocked(decisions: &[JobDecision]) -> Option<(String, PolicyMode)> {
    decisions
        .iter()
        .find(|d| d.explain.outcome != DecisionOutcome::Placed)
        .map(|d| (d.job_id.clone(), d.explain.policy))
}

/// Decides every job of `queue` (in order) against `catalog`.
pub fn solve(catalog: &Catalog, queue: &[Job], config: &SolverConfig) -> Vec<JobDecision> {
    let mut ledger = Ledger::new(catalog);
    let mut first_blocked: Option<(String, PolicyMode)> = config.blocked_ahead.clone();
    let mut decisions = Vec::with_capacity(queue.len());
    for job in queue {
        let policy = match resolve(&job.options, config.default_policy) {
            Ok(policy) => policy,
            Err(reason) => {
                let policy = Policy { mode: config.default_policy, weights: Default::default() };
                decisions.push(pending(job, &policy, config, reason, Vec::new()));
                continue;
            }
        };
        let barrier =
            first_blocked.as_ref().filter(|(_, mode)| *mode == PolicyMode::Fcfs || policy.mode == PolicyMode::Fcfs);
        if let Some((blocker, _)) = barrier {
            let reason = format!("fcfs: waits behind blocked job {blocker}");
            decisions.push(pending(job, &policy, config, reason, Vec::new()));
            continue;
        }
        let decision = decide_job(catalog, &mut ledger, job, &policy, config);
        if decision.explain.outcome != DecisionOutcome::Placed && first_blocked.is_none() {
            first_blocked = Some((job.id.clone(), policy.mode));
        }
        decisions.push(decision);
    }
    decisions
}

fn weights_map(policy: &Policy) -> BTreeMap<String, u32> {
    policy.weights.iter().filter(|(_, w)| *w > 0).map(|(s, w)| (s.id().to_string(), w)).collect()
}

fn pending(job: &Job, policy: &Policy, config: &SolverConfig, reason: String, tasks: Vec<TaskExplain>) -> JobDecision {
    JobDecision {
        job_id: job.id.clone(),
        placements: vec![None; job.tasks.len()],
        explain: Explain {
            job_id: job.id.clone(),
            at: config.now_ms,
            term: config.term,
            snapshot_version: config.snapshot_version,
            policy: policy.mode,
            weights: weights_map(policy),
            outcome: DecisionOutcome::Pending,
            reason,
            tasks,
        },
    }
}

/// The groups placed all-or-nothing: every gang task together, then each non-gang task alone.
/// Tasks placed by an earlier cycle are left out.
fn groups(job: &Job) -> Vec<Vec<usize>> {
    let open = |i: &usize| !job.tasks[*i].is_placed();
    let gang: Vec<usize> = (0..job.tasks.len()).filter(|i| job.tasks[*i].gang).filter(open).collect();
    let mut groups = if gang.is_empty() { Vec::new() } else { vec![gang] };
    groups.extend((0..job.tasks.len()).filter(|i| !job.tasks[*i].gang).filter(open).map(|i| vec![i]));
    groups
}

fn decide_job(
    catalog: &Catalog,
    ledger: &mut Ledger,
    job: &Job,
    policy: &Policy,
    config: &SolverConfig,
) -> JobDecision {
    let needs = JobNeeds {
        mode: policy.mode,
        security_grade: job.options.security_grade.unwrap_or(0),
        dataset: job.options.dataset_id.as_ref().and_then(|id| catalog.datasets.get(id)),
        qos: job.options.qos.as_ref(),
        duration_secs: job.options.duration_secs.map_or(DEFAULT_DURATION_SECS, |s| s as f64),
    };
    let mut placements = vec![None; job.tasks.len()];
    let mut explains: Vec<Option<TaskExplain>> = vec![None; job.tasks.len()];
    let mut blocked: Option<String> = None;
    for group in groups(job) {
        let mut taken: Vec<(String, Capacity)> = Vec::new();
        let mut group_failure = None;
        let mut chosen = Vec::new();
        for &index in &group {
            let (explain, centers, failure) =
                decide_task(catalog, ledger, &needs, job, index, policy, config, &mut taken);
            explains[index] = Some(explain);
            match failure {
                Some(reason) => {
                    group_failure = Some(reason);
                    break;
                }
                None => chosen.push((index, centers)),
            }
        }
        match group_failure {
            Some(reason) => {
                for (center, demand) in taken.iter().rev() {
                    ledger.give_back(center, demand);
                }
                for (index, _) in &chosen {
                    if let Some(explain) = explains[*index].as_mut() {
                        explain.center_ids.clear();
                        explain.migrations.clear();
                    }
                }
                blocked.get_or_insert(reason);
            }
            None => chosen.into_iter().for_each(|(index, centers)| placements[index] = Some(centers)),
        }
    }
    let tasks: Vec<TaskExplain> = explains.into_iter().flatten().collect();
    let all_placed = job.tasks.iter().zip(&placements).all(|(task, now)| task.is_placed() || now.is_some());
    let (outcome, reason) = match (all_placed, blocked) {
        (true, _) => (DecisionOutcome::Placed, placed_reason(job, &placements)),
        (false, Some(reason)) if placements.iter().any(Option::is_some) => (DecisionOutcome::PartlyPlaced, reason),
        (false, reason) => (DecisionOutcome::Pending, reason.unwrap_or_else(|| "no task could be placed".into())),
    };
    let mut decision = pending(job, policy, config, reason, tasks);
    decision.explain.outcome = outcome;
    decision.placements = placements;
    decision
}

fn placed_reason(job: &Job, placements: &[Option<Vec<String>>]) -> String {
    let parts: Vec<String> = job
        .tasks
        .iter()
        .zip(placements)
        .filter_map(|(task, centers)| centers.as_ref().map(|c| format!("{} → {}", task.name, c.join(","))))
        .collect();
    let mut line = format!("placed: {}", parts.join("; "));
    if line.chars().count() > 120 {
        line = line.chars().take(119).collect::<String>() + "…";
    }
    line
}

/// Centers that hold the task's image by name in a version fitting its spec.
fn image_centers<'a>(catalog: &'a Catalog, image_name: &str, spec_id: &str) -> HashSet<&'a str> {
    catalog
        .images_by_name
        .get(image_name)
        .into_iter()
        .flatten()
        .filter(|image| {
            let fits = image.specs();
            fits.is_empty() || fits.iter().any(|s| s == spec_id)
        })
        .map(|image| image.ai_center_id.as_str())
        .collect()
}

/// Places every replica of one task; on failure returns the reason and leaves the replicas
/// placed so far in `taken` for the caller to undo.
#[allow(clippy::too_many_arguments)]
fn decide_task(
    catalog: &Catalog,
    ledger: &mut Ledger,
    needs: &JobNeeds,
    job: &Job,
    index: usize,
    policy: &Policy,
    config: &SolverConfig,
    taken: &mut Vec<(String, Capacity)>,
) -> (TaskExplain, Vec<String>, Option<String>) {
    let task = &job.tasks[index];
    let mut explain = TaskExplain {
        name: task.name.clone(),
        gang: task.gang,
        center_ids: Vec::new(),
        replicas: Vec::new(),
        migrations: Vec::new(),
    };
    let spec_and_image = catalog.specs.get(&task.resource_spec_id).zip(catalog.images.get(&task.image_id));
    let Some((spec, image)) = spec_and_image else {
        let reason = format!("task '{}': its spec or image no longer exists", task.name);
        return (explain, Vec::new(), Some(reason));
    };
    let task_needs = TaskNeeds {
        spec,
        image_centers: image_centers(catalog, &image.name, &spec.spec.resource_spec_id),
        image_name: &image.name,
    };
    let mut context = JobContext::new(spec.demand.clone(), task.replica_number);
    context.duration_secs = needs.duration_secs;
    context.data = needs.dataset.map(|d| DataLocation {
        center_ids: d.location.iter().map(|l| l.ai_center_id.clone()).collect(),
        size_mb: d.size_mb as f64,
    });
    let mut centers = Vec::new();
    for replica in 0..task.replica_number as usize {
        let (replica_explain, winner) =
            decide_replica(catalog, ledger, needs, &task_needs, task, replica, policy, config, &context);
        explain.replicas.push(replica_explain);
        let Some(winner) = winner else {
            let counts = &explain.replicas[replica].rejected_count;
            let summary: Vec<String> = counts.iter().map(|(code, n)| format!("{code} {n}")).collect();
            let reason = format!("task '{}' replica {replica}: no feasible center ({})", task.name, summary.join(", "));
            return (explain, centers, Some(reason));
        };
        ledger.take(&winner, &spec.capacity);
        taken.push((winner.clone(), spec.capacity));
        context.sibling_centers.push(winner.clone());
        if let Some(dataset) = needs.dataset.filter(|_| !needs.data_at(&winner)) {
            if !explain.migrations.iter().any(|m| m.to_center == winner) {
                explain.migrations.push(MigrationPlan {
                    dataset_id: dataset.dataset_id(),
                    to_center: winner.clone(),
                    sources: rank_sources(dataset),
                    size_mb: dataset.size_mb,
                });
            }
        }
        centers.push(winner);
    }
    explain.center_ids = centers.clone();
    (explain, centers, None)
}

#[allow(clippy::too_many_arguments)]
fn decide_replica(
    catalog: &Catalog,
    ledger: &Ledger,
    needs: &JobNeeds,
    task_needs: &TaskNeeds,
    task: &jcs_api::model::Task,
    replica: usize,
    policy: &Policy,
    config: &SolverConfig,
    context: &JobContext,
) -> (ReplicaExplain, Option<String>) {
    let mut explain = ReplicaExplain {
        replica: replica as u32,
        winner: None,
        rejected_count: BTreeMap::new(),
        rejections: Vec::new(),
        scores: Vec::new(),
        feasible: 0,
    };
    let (considered, skipped_code): (Vec<&String>, RejectCode) = match task.pinned_center(replica) {
        Some(pin) => (task_needs.spec.offered.iter().filter(|c| *c == pin).collect(), RejectCode::NotPinned),
        None => (task_needs.spec.offered.iter().collect(), RejectCode::SpecNotOffered),
    };
    let skipped = catalog.centers.len().saturating_sub(considered.len());
    if skipped > 0 {
        explain.rejected_count.insert(skipped_code.as_str().to_string(), skipped as u32);
    }
    if let Some(pin) = task.pinned_center(replica).filter(|_| considered.is_empty()) {
        *explain.rejected_count.entry(RejectCode::SpecNotOffered.as_str().to_string()).or_default() += 1;
        explain.rejections.push(jcs_api::model::Rejection {
            center_id: pin.to_string(),
            code: RejectCode::SpecNotOffered,
            detail: format!("spec '{}' is not offered at the pinned center", task_needs.spec.spec.resource_spec_id),
        });
    }
    let mut candidates = Vec::new();
    for center_id in considered {
        let (Some(state), Some(free)) = (catalog.centers.get(center_id), ledger.free.get(center_id)) else { continue };
        match check(state, free, needs, task_needs, config) {
            Ok(()) => {
                // Strategies count this task's own earlier replicas through `sibling_centers`,
                // so they see capacity and load as they were before them.
                let siblings = context.siblings_at(center_id);
                let mut scoring_free = *free;
                (0..siblings).for_each(|_| scoring_free.add(&task_needs.spec.capacity));
                let mut metrics = state.metrics.clone();
                if let Some(m) = metrics.as_mut() {
                    m.running_task_num = ledger.load.get(center_id).copied().unwrap_or(0) - siblings as i64;
                }
                let mut candidate = CandidateCenter::new(state.center.clone(), metrics, &task_needs.spec.spec);
                candidate.free = scoring_free.to_amounts();
                candidates.push(candidate);
            }
            Err(rejection) => {
                *explain.rejected_count.entry(rejection.code.as_str().to_string()).or_default() += 1;
                if explain.rejections.len() < EXPLAIN_LIMIT {
                    explain.rejections.push(rejection);
                }
            }
        }
    }
    explain.feasible = candidates.len() as u32;
    if candidates.is_empty() {
        return (explain, None);
    }
    let mut snapshot = Snapshot::bare(candidates);
    for holder in context.data.iter().flat_map(|d| &d.center_ids).chain(&context.sibling_centers) {
        if let Some(state) = catalog.centers.get(holder) {
            snapshot = snapshot.with_location_of(&state.center);
        }
    }
    let table = score_table(&WeightedSum, &policy.weights, context, &snapshot, EXPLAIN_LIMIT);
    let winner = table.first().map(|best| best.center_id.clone());
    explain.scores = table
        .into_iter()
        .map(|scored| CenterScore {
            center_id: scored.center_id,
            total: scored.total,
            strategies: scored
                .strategies
                .into_iter()
                .map(|(strategy, raw, normalized)| {
                    let weight = policy.weights.get(strategy);
                    StrategyScore {
                        algorithm_id: strategy.id().to_string(),
                        raw,
                        normalized,
                        weight,
                        weighted: u64::from(normalized) * u64::from(weight),
                    }
                })
                .collect(),
        })
        .collect();
    explain.winner = winner.clone();
    (explain, winner)
}

#[cfg(test)]
#[path = "solve_tests.rs"]
mod tests;

//! One scheduling cycle as a pure function: `solve(catalog, queue, config) -> decisions`.
//!
//! Jobs are taken in queue order. Each replica is filtered against every center offering its
//! spec, scored by the strategies under the job's policy, and placed on the best; the capacity
//! it takes is deducted at once, so later replicas and later jobs of the same cycle see it.
//! Gang tasks of a job are placed together or not at all (their deductions are undone); a task
//! that opted out of gang placement stands alone. Under FCFS no job overtakes a blocked one.
//! Every decision carries its explain record.
//!
//! Between two replicas of a cycle only the last winner's capacity and workload change, so the
//! filters that do not read capacity, and the factors that read neither capacity nor workload,
//! are evaluated once per cycle for each job class (spec, image, grade, data, QoS, duration,
//! data policy, user region) and kept by center; a replica then reads only free capacity and
//! workload afresh and re-normalizes over the cached raw factors. A replica with no pin and no
//! sibling re-reads them only at the centers changed since its class's last such replica
//! ([`board`]). Its decision is exactly the one the per-replica filter-and-score of
//! [`crate::schedule::filter::check`] and [`crate::schedule::evaluate::score_table`] gives (a
//! property test holds the two equal).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};

use jcs_api::model::{
    Dataset, DecisionOutcome, Explain, Image, Job, MigrationPlan, PolicyMode, RejectCode, Rejection, ReplicaExplain,
    ScoreTable, Task, TaskExplain,
};

use crate::command::PlacementDecision;
use crate::schedule::filter::{check_fixed, JobNeeds, TaskNeeds};
use crate::schedule::migration::rank_sources;
use crate::schedule::policy::{resolve, Policy};
use crate::schedule::problem::{Capacity, Catalog, CenterState, SolverConfig, SpecInfo};
use crate::schedule::snapshot::{CandidateCenter, DataLocation, JobContext, Snapshot, DEFAULT_DURATION_SECS};
use crate::schedule::strategy::{raw, Strategy};

mod board;
mod cycle_cache;

use board::Board;
use cycle_cache::{
    strategy_slot, Class, ClassKey, Ledger, Taken, Verdict, CLASS_LIMIT, FIXED_SCORE_SLOTS, FIXED_STRATEGIES,
};

/// The cycle's decision for one job, with its explain record.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDecision {
    pub job_id: String,
    /// Per task: one center per replica if placed by this decision; `None` when the task stays
    /// unplaced (or was placed by an earlier cycle).
    pub placements: Vec<Option<Vec<String>>>,
    pub explain: Explain,
}

impl JobDecision {
    /// Whether this decision places at least one task.
    pub fn places_something(&self) -> bool {
        self.placements.iter().any(Option::is_some)
    }

    /// The decision as it goes into a `Place` batch (its explain record serialized).
    pub fn into_command(self) -> PlacementDecision {
        PlacementDecision::new(self.job_id, self.placements, &self.explain)
    }
}

/// A test-only way to decide a replica (the straightforward reference computation).
#[cfg(test)]
type DecideReplica = for<'a, 'b> fn(&Cycle<'a>, &ReplicaInput<'a, 'b>) -> (ReplicaExplain, Option<usize>);

/// What one cycle carries from replica to replica.
struct Cycle<'a> {
    catalog: &'a Catalog,
    config: &'a SolverConfig,
    /// By position (id order).
    centers: Vec<&'a CenterState>,
    positions: HashMap<&'a str, usize>,
    ledger: Ledger,
    class_ids: HashMap<ClassKey, usize>,
    classes: Vec<Class>,
    /// Replicas of the task being placed so far, per center position.
    siblings: Vec<u32>,
    #[cfg(test)]
    reference: Option<DecideReplica>,
}

impl<'a> Cycle<'a> {
    fn new(catalog: &'a Catalog, config: &'a SolverConfig) -> Cycle<'a> {
        let centers: Vec<&CenterState> = catalog.centers.values().collect();
        let positions: HashMap<&str, usize> =
            catalog.centers.keys().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
        Cycle {
            catalog,
            config,
            siblings: vec![0; centers.len()],
            ledger: Ledger::new(catalog, &positions, &config.assumed),
            centers,
            positions,
            class_ids: HashMap::new(),
            classes: Vec::new(),
            #[cfg(test)]
            reference: None,
        }
    }

    fn id(&self, position: usize) -> &'a str {
        &self.centers[position].center.ai_center_id
    }

    /// The class of a task of this job (built at the class's first task in the cycle, or again
    /// after a flush).
    fn class_of(&mut self, needs: &JobNeeds, spec: &'a SpecInfo, image: &'a Image, context: &JobContext) -> usize {
        let key = ClassKey {
            spec: spec.spec.resource_spec_id.clone(),
            image_name: image.name.clone(),
            security_grade: needs.security_grade,
            dataset: needs.dataset.map(Dataset::dataset_id),
            qos: needs.qos.map(|q| (q.max_latency_ms.map(f64::to_bits), q.deadline_secs)),
            duration_bits: needs.duration_secs.to_bits(),
            data_mode: needs.mode == PolicyMode::Data,
            origin: needs.origin.map(str::to_string),
        };
        if let Some(&class) = self.class_ids.get(&key) {
            return class;
        }
        if self.classes.len() >= CLASS_LIMIT {
            // A class is only used by the task it was looked up for, so all may go.
            self.classes.clear();
            self.class_ids.clear();
        }
        let task_needs = TaskNeeds {
            spec,
            image_centers: image_centers(self.catalog, &image.name, &spec.spec.resource_spec_id),
            image_name: &image.name,
        };
        let mut open = Vec::new();
        let mut verdicts: Vec<Verdict> = spec
            .offered
            .iter()
            .map(|id| {
                let Some(&position) = self.positions.get(id.as_str()) else { return Verdict::Unknown };
                match check_fixed(self.centers[position], needs, &task_needs, self.config) {
                    Err(rejection) => Verdict::Rejected(rejection),
                    Ok(()) => {
                        open.push(position);
                        Verdict::Open { position, fixed: [None; 9] }
                    }
                }
            })
            .collect();
        // The fixed factors, computed once by the strategies themselves over the open centers.
        let candidates = open
            .iter()
            .map(|&p| CandidateCenter::new(self.centers[p].center.clone(), self.centers[p].metrics.clone(), &spec.spec))
            .collect();
        let mut snapshot = Snapshot::bare(candidates).with_links(self.config.region_links.clone());
        for holder in context.data.iter().flat_map(|d| &d.center_ids) {
            if let Some(state) = self.catalog.centers.get(holder) {
                snapshot = snapshot.with_location_of(&state.center);
            }
        }
        let alone = JobContext { sibling_centers: Vec::new(), ..context.clone() };
        for strategy in FIXED_STRATEGIES {
            let slot = strategy_slot(strategy);
            let mut values = raw(strategy, &alone, &snapshot).into_iter();
            for verdict in &mut verdicts {
                if let Verdict::Open { fixed, .. } = verdict {
                    fixed[slot] = values.next().flatten();
                }
            }
        }
        self.classes.push(Class { verdicts, fixed_scores: RefCell::new(Vec::new()), boards: RefCell::new(Vec::new()) });
        self.class_ids.insert(key, self.classes.len() - 1);
        self.classes.len() - 1
    }
}

/// The first job of `decisions` left (partly) unplaced, with its mode.
pub fn first_blocked(decisions: &[JobDecision]) -> Option<(String, PolicyMode)> {
    decisions
        .iter()
        .find(|d| d.explain.outcome != DecisionOutcome::Placed)
        .map(|d| (d.job_id.clone(), d.explain.policy))
}

/// What `decisions` place, replica by replica: `(center id, demand)`, for a cycle that must
/// assume them before they apply ([`SolverConfig::assumed`]).
pub fn placed_demands(catalog: &Catalog, queue: &[Job], decisions: &[JobDecision]) -> Vec<(String, Capacity)> {
    let mut placed = Vec::new();
    for (job, decision) in queue.iter().zip(decisions) {
        for (task, centers) in job.tasks.iter().zip(&decision.placements) {
            let (Some(centers), Some(spec)) = (centers, catalog.specs.get(&task.resource_spec_id)) else { continue };
            // An empty entry is a replica this decision leaves where it is.
            let new = centers.iter().filter(|center| !center.is_empty());
            placed.extend(new.map(|center| (center.clone(), spec.capacity)));
        }
    }
    placed
}

/// Decides every job of `queue` (in order) against `catalog`.
pub fn solve(catalog: &Catalog, queue: &[Job], config: &SolverConfig) -> Vec<JobDecision> {
    solve_in(Cycle::new(catalog, config), queue)
}

fn solve_in(mut cycle: Cycle, queue: &[Job]) -> Vec<JobDecision> {
    let config = cycle.config;
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
        let decision = decide_job(&mut cycle, job, &policy);
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
            user_region: job.options.user_region.clone(),
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

/// The region `dataset` is copied from, by its holders in the catalog.
fn data_region<'c>(catalog: &'c Catalog, dataset: Option<&Dataset>) -> Option<&'c str> {
    let holders = dataset?.location.iter().filter_map(|l| catalog.centers.get(&l.ai_center_id));
    crate::schedule::links::data_region(holders.map(|state| &*state.center))
}

fn decide_job(cycle: &mut Cycle, job: &Job, policy: &Policy) -> JobDecision {
    let needs = JobNeeds {
        mode: policy.mode,
        security_grade: job.options.security_grade.unwrap_or(0),
        dataset: job.options.dataset_id.as_ref().and_then(|id| cycle.catalog.datasets.get(id)),
        qos: job.options.qos.as_ref(),
        duration_secs: job.options.duration_secs.map_or(DEFAULT_DURATION_SECS, |s| s as f64),
        origin: job.options.user_region.as_deref(),
        data_region: data_region(
            cycle.catalog,
            job.options.dataset_id.as_ref().and_then(|id| cycle.catalog.datasets.get(id)),
        ),
    };
    let mut placements = vec![None; job.tasks.len()];
    let mut explains: Vec<Option<TaskExplain>> = vec![None; job.tasks.len()];
    let mut blocked: Option<String> = None;
    for group in groups(job) {
        let mut taken: Vec<Taken> = Vec::new();
        let mut group_failure = None;
        let mut chosen = Vec::new();
        for &index in &group {
            let (explain, centers, failure) = decide_task(cycle, &needs, job, index, policy, &mut taken);
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
                for taken in taken.iter().rev() {
                    cycle.ledger.give_back(taken);
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
    let mut decision = pending(job, policy, cycle.config, reason, tasks);
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

/// What deciding one replica reads (the reference computation of the tests reads all of it).
#[cfg_attr(not(test), allow(dead_code))]
struct ReplicaInput<'a, 'b> {
    needs: &'b JobNeeds<'b>,
    spec: &'a SpecInfo,
    image: &'a Image,
    class: usize,
    task: &'b Task,
    replica: usize,
    policy: &'b Policy,
    context: &'b JobContext,
    /// Positions of the task's replicas placed so far, in order.
    sibling_positions: &'b [usize],
}

/// Places every replica of one task; on failure returns the reason and leaves the replicas
/// placed so far in `taken` for the caller to undo.
fn decide_task<'a>(
    cycle: &mut Cycle<'a>,
    needs: &JobNeeds,
    job: &Job,
    index: usize,
    policy: &Policy,
    taken: &mut Vec<Taken>,
) -> (TaskExplain, Vec<String>, Option<String>) {
    let task = &job.tasks[index];
    let mut explain = TaskExplain {
        name: task.name.clone(),
        gang: task.gang,
        center_ids: Vec::new(),
        replicas: Vec::new(),
        migrations: Vec::new(),
    };
    let catalog = cycle.catalog;
    let spec_and_image = catalog.specs.get(&task.resource_spec_id).zip(catalog.images.get(&task.image_id));
    let Some((spec, image)) = spec_and_image else {
        let reason = format!("task '{}': its spec or image no longer exists", task.name);
        return (explain, Vec::new(), Some(reason));
    };
    let mut context = JobContext::new(spec.demand.clone(), task.replica_number);
    context.duration_secs = needs.duration_secs;
    // The network path is judged from the user's region, else from the data's (its first
    // holder's region): the QoS latency bound stays the user's alone.
    context.origin = needs.origin.or(needs.data_region).map(str::to_string);
    context.data = needs.dataset.map(|d| DataLocation {
        center_ids: d.location.iter().map(|l| l.ai_center_id.clone()).collect(),
        size_mb: d.size_mb as f64,
        region: needs.data_region.map(str::to_string),
    });
    let class = cycle.class_of(needs, spec, image, &context);
    // Per replica: the center this decision places it on (empty for one it leaves as it is),
    // and the center the explain record shows (where every replica is).
    let mut centers = Vec::new();
    let mut shown = Vec::new();
    let mut sibling_positions = Vec::new();
    let mut failure = None;
    for replica in 0..task.replica_number as usize {
        if !task.placing(replica) {
            let kept = task.kept_center(replica);
            // Outlived a center fault where it is (or ended before it was placed again): not
            // placed, but a sibling of those that are; it holds its capacity in its center's
            // own report. The decision leaves its entry empty.
            explain.replicas.push(ReplicaExplain {
                replica: replica as u32,
                winner: kept.map(str::to_string),
                rejected_count: BTreeMap::new(),
                rejections: Vec::new(),
                scores: ScoreTable::default(),
                feasible: 0,
            });
            if let Some(kept) = kept {
                if let Some(&position) = cycle.positions.get(kept) {
                    cycle.siblings[position] += 1;
                    sibling_positions.push(position);
                }
                context.sibling_centers.push(kept.to_string());
            }
            shown.push(kept.unwrap_or_default().to_string());
            centers.push(String::new());
            continue;
        }
        let input = ReplicaInput {
            needs,
            spec,
            image,
            class,
            task,
            replica,
            policy,
            context: &context,
            sibling_positions: &sibling_positions,
        };
        #[cfg(test)]
        let (replica_explain, winner) = match cycle.reference {
            Some(reference) => reference(cycle, &input),
            None => decide_replica(cycle, &input),
        };
        #[cfg(not(test))]
        let (replica_explain, winner) = decide_replica(cycle, &input);
        explain.replicas.push(replica_explain);
        let Some(position) = winner else {
            let counts = &explain.replicas[replica].rejected_count;
            let summary: Vec<String> = counts.iter().map(|(code, n)| format!("{code} {n}")).collect();
            failure =
                Some(format!("task '{}' replica {replica}: no feasible center ({})", task.name, summary.join(", ")));
            break;
        };
        taken.push(cycle.ledger.take(position, &spec.capacity));
        cycle.siblings[position] += 1;
        sibling_positions.push(position);
        let winner = cycle.id(position).to_string();
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
        shown.push(winner.clone());
        centers.push(winner);
    }
    for position in sibling_positions {
        cycle.siblings[position] = 0;
    }
    if failure.is_none() {
        explain.center_ids = shown;
    }
    (explain, centers, failure)
}

/// The rejection counts of a replica that considers `considered` of the spec's centers (the
/// pinned one, or all it lists): the rest count as skipped.
fn skipped_counts(cycle: &Cycle, input: &ReplicaInput, considered: usize) -> ReplicaExplain {
    let mut explain = ReplicaExplain {
        replica: input.replica as u32,
        winner: None,
        rejected_count: BTreeMap::new(),
        rejections: Vec::new(),
        scores: ScoreTable::default(),
        feasible: 0,
    };
    let pin = input.task.pinned_center(input.replica);
    let skipped_code = if pin.is_some() { RejectCode::NotPinned } else { RejectCode::SpecNotOffered };
    let skipped = cycle.centers.len().saturating_sub(considered);
    if skipped > 0 {
        explain.rejected_count.insert(skipped_code.as_str().to_string(), skipped as u32);
    }
    if let Some(pin) = pin.filter(|_| considered == 0) {
        *explain.rejected_count.entry(RejectCode::SpecNotOffered.as_str().to_string()).or_default() += 1;
        explain.rejections.push(Rejection {
            center_id: pin.to_string(),
            code: RejectCode::SpecNotOffered,
            detail: format!("spec '{}' is not offered at the pinned center", input.spec.spec.resource_spec_id),
        });
    }
    explain
}

/// Filters and scores one replica from its class's cached verdicts and fixed factors; only free
/// capacity and workload (which the cycle's placements change) are read afresh, and a replica
/// with no pin and no sibling only where they changed since its class's last such replica.
fn decide_replica(cycle: &Cycle, input: &ReplicaInput) -> (ReplicaExplain, Option<usize>) {
    let class = &cycle.classes[input.class];
    let weights: Vec<(Strategy, u32)> =
        Strategy::ALL.into_iter().map(|s| (s, input.policy.weights.get(s))).filter(|(_, w)| *w > 0).collect();
    if input.task.pinned_center(input.replica).is_some() || !input.sibling_positions.is_empty() {
        return Board::build(cycle, class, input, weights).decide(cycle, class, input.replica);
    }
    let mut boards = class.boards.borrow_mut();
    let index = match boards.iter().position(|board| board.weights == weights) {
        Some(index) => {
            if !boards[index].sync(cycle, input.spec) {
                boards[index] = Board::build(cycle, class, input, weights);
            }
            index
        }
        None => {
            if boards.len() >= FIXED_SCORE_SLOTS {
                boards.remove(0);
            }
            boards.push(Board::build(cycle, class, input, weights));
            boards.len() - 1
        }
    };
    boards[index].decide(cycle, class, input.replica)
}

#[cfg(test)]
#[path = "solve_tests.rs"]
mod tests;

//! The solver on crafted catalogs (every filter, gang, FCFS, pins, each policy mode, the ledger)
//! and as properties over arbitrary ones (capacity never exceeded, gang all-or-nothing, same
//! inputs → same decisions).

use std::collections::BTreeMap;
use std::sync::Arc;

use jcs_api::model::{
    Center, CenterMetrics, CenterScore, CreateTask, CreateTrainJob, Dataset, DecisionOutcome, Image, Job, NodeFree,
    PolicyMode, QosTarget, ResourceSpec, EXPLAIN_LIMIT,
};
use proptest::prelude::*;
use proptest::strategy::Strategy;
use serde_json::json;

use super::*;
use crate::schedule::fixtures::arb_links;
use crate::schedule::links::RegionLinks;
use crate::schedule::problem::{Capacity, InFlight};

const NOW: i64 = 1_000_000;

fn center(id: &str, gpus: i64) -> (Center, Option<CenterMetrics>) {
    let center: Center = serde_json::from_value(json!({"ai_center_id": id, "name": id, "region": "r1", "status": 1,
        "network": {"bandwidth_mbps": 1000.0}, "adapter": {"kind": "sim"}}))
    .unwrap();
    let metrics =
        CenterMetrics { gpu_free: gpus, cpu_free: 64, memory_free: 1_000_000, reported_at: NOW, ..Default::default() };
    (center, Some(metrics))
}

fn spec_at(centers: &[&str]) -> ResourceSpec {
    serde_json::from_value(json!({"resource_spec_id": "g1", "resource_spec_name": "g1",
        "resource_quantity": {"gpu": "1", "cpu": "1"}, "price": 10, "computing_center_list": centers.join(",")}))
    .unwrap()
}

fn image_at(centers: &[&str]) -> Vec<Image> {
    centers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            serde_json::from_value(json!({"image_id": format!("img-{i}"), "name": "pytorch", "ai_center_id": c}))
                .unwrap()
        })
        .collect()
}

#[derive(Debug, Clone)]
struct World {
    centers: Vec<(Center, Option<CenterMetrics>)>,
    specs: Vec<ResourceSpec>,
    images: Vec<Image>,
    datasets: Vec<Dataset>,
    in_flight: BTreeMap<String, InFlight>,
    links: Arc<RegionLinks>,
}

impl World {
    /// Centers with the given free GPUs, all offering spec `g1` and holding image `pytorch`.
    fn new(gpus: &[(&str, i64)]) -> World {
        let ids: Vec<&str> = gpus.iter().map(|(id, _)| *id).collect();
        World {
            centers: gpus.iter().map(|(id, n)| center(id, *n)).collect(),
            specs: vec![spec_at(&ids)],
            images: image_at(&ids),
            datasets: Vec::new(),
            in_flight: BTreeMap::new(),
            links: Arc::default(),
        }
    }

    fn edit(mut self, id: &str, change: impl FnOnce(&mut Center, &mut Option<CenterMetrics>)) -> World {
        let (center, metrics) = self.centers.iter_mut().find(|(c, _)| c.ai_center_id == id).unwrap();
        change(center, metrics);
        self
    }

    fn catalog(&self) -> Catalog {
        let images = self.images.clone();
        Catalog::new(self.centers.clone(), self.specs.clone(), images, self.datasets.clone(), &self.in_flight)
    }

    /// The solver settings with this world's links between regions.
    fn config(&self) -> SolverConfig {
        SolverConfig { region_links: self.links.clone(), ..config() }
    }

    fn solve(&self, jobs: &[Job]) -> Vec<JobDecision> {
        solve(&self.catalog(), jobs, &self.config())
    }
}

fn config() -> SolverConfig {
    SolverConfig { now_ms: NOW, stale_after_ms: 60_000, ..Default::default() }
}

fn job_with(id: &str, replicas: &[i64], edit: impl FnOnce(&mut CreateTrainJob)) -> Job {
    let mut request = CreateTrainJob {
        name: id.into(),
        tasks: replicas
            .iter()
            .enumerate()
            .map(|(i, n)| CreateTask {
                name: format!("t{i}"),
                command: "run".into(),
                image_id: "img-0".into(),
                resource_spec_id: "g1".into(),
                replica_number: *n,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    edit(&mut request);
    Job::from_request(id.into(), &request, None, NOW)
}

/// `replicas` of spec `g1` (1 GPU, 1 CPU) held in flight.
fn held(replicas: i64) -> InFlight {
    let mut in_flight = InFlight::default();
    (0..replicas).for_each(|_| in_flight.adjust(&Capacity([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]), 1));
    in_flight
}

/// A center's `gpus` as nodes: `0` not reported (the totals decide), `1` one node with them
/// all, `2` a node per GPU where every other node has no CPU left (so only half of them can
/// take a replica of `g1`).
fn nodes_of(gpus: i64, split: u8) -> Vec<NodeFree> {
    let node = |count, cpu_free, gpu_free| NodeFree {
        count,
        cpu_free,
        gpu_free,
        memory_free: 1_000_000,
        ..NodeFree::default()
    };
    match split {
        0 => Vec::new(),
        1 => vec![node(1, 64, gpus)],
        _ => [node((gpus + 1) / 2, 1, 1), node(gpus / 2, 0, 1)].into_iter().filter(|n| n.count > 0).collect(),
    }
}

/// How many replicas of `g1` the nodes can hold (one GPU and one CPU each, on one node).
fn node_room(nodes: &[NodeFree]) -> i64 {
    nodes.iter().map(|n| n.count * n.gpu_free.min(n.cpu_free)).sum()
}

fn job(id: &str, replicas: i64) -> Job {
    job_with(id, &[replicas], |_| {})
}

fn placed(decision: &JobDecision) -> Vec<Vec<String>> {
    decision.placements.iter().flatten().cloned().collect()
}

fn rejections(decision: &JobDecision) -> BTreeMap<String, u32> {
    decision.explain.tasks[0].replicas[0].rejected_count.clone()
}

#[test]
fn replicas_and_later_jobs_see_the_capacity_taken_before_them() {
    let world = World::new(&[("a", 2), ("b", 1)]);
    let decisions = world.solve(&[job("j1", 2), job("j2", 1), job("j3", 1)]);
    let mut used: BTreeMap<String, i64> = BTreeMap::new();
    for center in decisions.iter().flat_map(placed).flatten() {
        *used.entry(center).or_default() += 1;
    }
    assert_eq!(used, BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 1)]));
    assert_eq!(decisions[2].explain.outcome, DecisionOutcome::Pending);
    assert_eq!(rejections(&decisions[2])["INSUFFICIENT_CAPACITY"], 2);
    assert!(decisions[2].explain.reason.contains("INSUFFICIENT_CAPACITY 2"), "{}", decisions[2].explain.reason);
}

#[test]
fn every_filter_rejects_with_its_code() {
    let world = World::new(&[("ok", 4), ("down", 4), ("stale", 4), ("silent", 4), ("lowgrade", 4), ("noimage", 4)])
        .edit("down", |c, _| c.status = 0)
        .edit("stale", |_, m| m.as_mut().unwrap().reported_at = NOW - 120_000)
        .edit("silent", |_, m| *m = None)
        .edit("lowgrade", |c, _| c.security_grade = 1)
        .edit("ok", |c, _| c.security_grade = 5);
    let mut world = world;
    world.images.retain(|i| i.ai_center_id != "noimage");
    world.centers.push(center("elsewhere", 4));
    for (_, m) in world.centers.iter_mut().filter(|(c, _)| c.ai_center_id != "ok") {
        if let Some(m) = m.as_mut() {
            m.security_grade = 0;
        }
    }
    world = world.edit("noimage", |c, _| c.security_grade = 9).edit("stale", |c, _| c.security_grade = 9);
    let decision = &world.solve(&[job_with("j", &[1], |r| r.security_grade = Some(3))])[0];
    let codes = rejections(decision);
    for code in [
        "CENTER_UNAVAILABLE",
        "MONITORING_STALE",
        "MONITORING_MISSING",
        "SECURITY_GRADE_TOO_LOW",
        "IMAGE_NOT_AT_CENTER",
        "SPEC_NOT_OFFERED",
    ] {
        assert_eq!(codes.get(code), Some(&1), "{code}: {codes:?}");
    }
    assert_eq!(placed(decision), vec![vec!["ok".to_string()]]);
}

#[test]
fn in_flight_capacity_is_deducted_and_counts_as_load() {
    let mut world = World::new(&[("a", 1), ("b", 1)]);
    world.in_flight = BTreeMap::from([("a".to_string(), held(1))]);
    let decisions = world.solve(&[job("j1", 1), job("j2", 1)]);
    assert_eq!(placed(&decisions[0]), vec![vec!["b".to_string()]], "a's only GPU is in flight");
    assert_eq!(decisions[1].explain.outcome, DecisionOutcome::Pending);
    let detail = &decisions[1].explain.tasks[0].replicas[0].rejections[0].detail;
    assert!(detail.contains("1 in flight"), "{detail}");
}

#[test]
fn a_batch_still_in_flight_is_assumed_before_the_cycle() {
    let world = World::new(&[("a", 3), ("b", 0)]);
    let first = world.solve(&[job("j1", 2)]);
    let assumed = placed_demands(&world.catalog(), &[job("j1", 2)], &first);
    assert_eq!(assumed.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(), ["a", "a"]);
    let next = SolverConfig { assumed, ..config() };
    let decisions = solve(&world.catalog(), &[job("j2", 2), job("j3", 1)], &next);
    assert_eq!(decisions[0].explain.outcome, DecisionOutcome::Pending, "j1 holds two of a's three GPUs");
    assert_eq!(placed(&decisions[1]), vec![vec!["a".to_string()]]);
    let gone =
        SolverConfig { assumed: vec![("gone".into(), Capacity([0.0, 9.0, 0.0, 0.0, 0.0, 0.0, 0.0]))], ..config() };
    assert_eq!(
        placed(&solve(&world.catalog(), &[job("j2", 2)], &gone)[0]),
        vec![vec!["a".to_string(), "a".to_string()]]
    );
}

#[test]
fn gang_tasks_are_placed_together_or_not_at_all_and_give_capacity_back() {
    let world = World::new(&[("a", 2)]);
    let decisions = world.solve(&[job_with("big", &[1, 2], |_| {}), job("small", 2)]);
    assert_eq!(decisions[0].explain.outcome, DecisionOutcome::Pending);
    assert!(placed(&decisions[0]).is_empty());
    assert!(decisions[0].explain.tasks[0].center_ids.is_empty(), "the rolled-back task shows no centers");
    assert_eq!(placed(&decisions[1]), vec![vec!["a".to_string(), "a".to_string()]]);
}

#[test]
fn a_task_that_opts_out_of_gang_is_placed_alone() {
    let world = World::new(&[("a", 2)]);
    let decision = &world.solve(&[job_with("j", &[2, 3], |r| r.tasks[0].gang = Some(false))])[0];
    assert_eq!(decision.explain.outcome, DecisionOutcome::PartlyPlaced);
    assert_eq!(decision.placements[0], Some(vec!["a".to_string(), "a".to_string()]));
    assert_eq!(decision.placements[1], None);
}

#[test]
fn under_fcfs_no_job_overtakes_a_blocked_one() {
    let world = World::new(&[("a", 1)]);
    let fcfs = |id: &str, n| job_with(id, &[n], |r| r.policy = Some(PolicyMode::Fcfs));
    let decisions = world.solve(&[fcfs("blocked", 2), fcfs("fits", 1), job("balanced", 1)]);
    assert_eq!(decisions[1].explain.outcome, DecisionOutcome::Pending);
    assert_eq!(decisions[1].explain.reason, "fcfs: waits behind blocked job blocked");
    assert_eq!(decisions[2].explain.outcome, DecisionOutcome::Pending, "an FCFS blocker holds every later job");
    let decisions = world.solve(&[job("blocked", 2), job("fits", 1)]);
    assert_eq!(decisions[1].explain.outcome, DecisionOutcome::Placed, "without FCFS a small job may pass");
    assert_eq!(first_blocked(&decisions), Some(("blocked".to_string(), PolicyMode::Balanced)));
    // Deciding only later arrivals, a blocked FCFS job ahead still holds them.
    let ahead = SolverConfig { blocked_ahead: Some(("earlier".into(), PolicyMode::Fcfs)), ..config() };
    let decisions = solve(&world.catalog(), &[job("late", 1)], &ahead);
    assert_eq!(decisions[0].explain.reason, "fcfs: waits behind blocked job earlier");
}

#[test]
fn manual_pins_are_respected_or_the_job_waits_with_the_reason() {
    let world = World::new(&[("a", 4), ("b", 0)]);
    let pinned = |center: &str| {
        let center = center.to_string();
        job_with("j", &[1], move |r| {
            r.policy = Some(PolicyMode::Manual);
            r.tasks[0].center_ids = vec![center];
        })
    };
    assert_eq!(placed(&world.solve(&[pinned("a")])[0]), vec![vec!["a".to_string()]]);
    let decision = &world.solve(&[pinned("b")])[0];
    assert_eq!(decision.explain.outcome, DecisionOutcome::Pending, "never silently elsewhere");
    assert_eq!(rejections(decision).get("INSUFFICIENT_CAPACITY"), Some(&1));
    assert_eq!(rejections(decision).get("NOT_PINNED"), Some(&1));
}

fn winner_under(world: &World, edit: impl FnOnce(&mut CreateTrainJob)) -> String {
    let decision = &world.solve(&[job_with("j", &[1], edit)])[0];
    assert_eq!(decision.explain.outcome, DecisionOutcome::Placed, "{}", decision.explain.reason);
    decision.placements[0].as_ref().unwrap()[0].clone()
}

#[test]
fn each_policy_mode_picks_what_its_factor_says() {
    let policy = |mode| move |r: &mut CreateTrainJob| r.policy = Some(mode);
    let mut world = World::new(&[("cheap", 4), ("green", 4), ("fast", 4), ("empty", 4)]);
    world.specs[0].center_prices = BTreeMap::from([("cheap".to_string(), 1)]);
    let world = world
        .edit("green", |c, _| {
            c.power.device_watts.insert("gpu".into(), 10.0);
        })
        .edit("cheap", |c, _| _ = c.power.device_watts.insert("gpu".into(), 500.0))
        .edit("fast", |c, _| {
            c.power.device_watts.insert("gpu".into(), 500.0);
            c.network = serde_json::from_value(json!({"bandwidth_mbps": 100000.0, "latency_ms": 1.0})).unwrap();
        })
        .edit("empty", |c, _| _ = c.power.device_watts.insert("gpu".into(), 500.0));
    let loaded = |m: &mut Option<CenterMetrics>| m.as_mut().unwrap().running_task_num = 50;
    let world = world.edit("cheap", |_, m| loaded(m)).edit("green", |_, m| loaded(m)).edit("fast", |_, m| loaded(m));
    assert_eq!(winner_under(&world, policy(PolicyMode::Price)), "cheap");
    assert_eq!(winner_under(&world, policy(PolicyMode::Energy)), "green");
    assert_eq!(winner_under(&world, policy(PolicyMode::Network)), "fast");
    assert_eq!(winner_under(&world, policy(PolicyMode::Load)), "empty");
    let qos = |r: &mut CreateTrainJob| {
        r.policy = Some(PolicyMode::Qos);
        r.qos = Some(QosTarget { max_latency_ms: Some(5.0), deadline_secs: None });
    };
    assert_eq!(winner_under(&world, qos), "fast", "only 'fast' meets the latency bound");
    let job_weights = |r: &mut CreateTrainJob| r.weights = BTreeMap::from([("lowest_price".to_string(), 1000)]);
    assert_eq!(winner_under(&world, job_weights), "cheap", "a job's own weights count");
}

#[test]
fn qos_deadline_is_a_hard_constraint() {
    let world =
        World::new(&[("slow", 4), ("quick", 4)]).edit("quick", |c, _| _ = c.performance.insert("gpu".into(), 2.0));
    let deadline = |r: &mut CreateTrainJob| {
        r.policy = Some(PolicyMode::Qos);
        r.duration_secs = Some(3000);
        r.qos = Some(QosTarget { max_latency_ms: None, deadline_secs: Some(2000) });
    };
    let decision = &world.solve(&[job_with("j", &[1], deadline)])[0];
    assert_eq!(placed(decision), vec![vec!["quick".to_string()]]);
    assert_eq!(rejections(decision).get("QOS_DEADLINE"), Some(&1));
}

fn dataset(holder: &str, size_mb: i64, private: bool) -> Dataset {
    serde_json::from_value(json!({"data_name": "d", "data_version": "v1", "size_mb": size_mb, "private": private,
        "location": [{"dataset_url": "s3://d", "access": "r", "ai_center_id": holder}]}))
    .unwrap()
}

#[test]
fn data_aware_moves_small_data_and_sends_large_or_private_jobs_to_the_data() {
    let mut world =
        World::new(&[("holder", 4), ("idle", 4)]).edit("holder", |_, m| m.as_mut().unwrap().running_task_num = 90);
    let data_job = |r: &mut CreateTrainJob| {
        r.policy = Some(PolicyMode::Data);
        r.dataset_id = Some("d@v1".into());
        r.weights = BTreeMap::from([("data_affinity".to_string(), 0)]);
    };
    world.datasets = vec![dataset("holder", 10, false)];
    let decision = &world.solve(&[job_with("j", &[1], data_job)])[0];
    assert_eq!(
        placed(decision),
        vec![vec!["idle".to_string()]],
        "small data moves to the best center: {:#?}",
        decision.explain
    );
    let plan = &decision.explain.tasks[0].migrations[0];
    assert_eq!((plan.to_center.as_str(), plan.sources.clone()), ("idle", vec!["holder".to_string()]));
    world.datasets = vec![dataset("holder", 1_000_000, false)];
    assert_eq!(winner_under(&world, data_job), "holder", "large data stays; the job goes to it");
    world.datasets = vec![dataset("holder", 10, true)];
    let balanced = |r: &mut CreateTrainJob| r.dataset_id = Some("d@v1".into());
    assert_eq!(winner_under(&world, balanced), "holder", "private data never leaves, under any policy");
}

/// The straightforward per-replica computation the cached solver must agree with: every
/// considered center filtered afresh, a snapshot of the feasible ones built, and
/// [`score_table`] run over it.
fn reference_replica<'a>(cycle: &Cycle<'a>, input: &ReplicaInput<'a, '_>) -> (ReplicaExplain, Option<usize>) {
    use crate::schedule::evaluate::{score_table, WeightedSum};
    use crate::schedule::filter::check;
    let (catalog, task, spec, policy, context) = (cycle.catalog, input.task, input.spec, input.policy, input.context);
    let task_needs = TaskNeeds {
        spec,
        image_centers: image_centers(catalog, &input.image.name, &spec.spec.resource_spec_id),
        image_name: &input.image.name,
    };
    let considered: Vec<&String> = match task.pinned_center(input.replica) {
        Some(pin) => spec.offered.iter().filter(|c| *c == pin).collect(),
        None => spec.offered.iter().collect(),
    };
    let mut explain = skipped_counts(cycle, input, considered.len());
    let mut candidates = Vec::new();
    for center_id in considered {
        let Some(&position) = cycle.positions.get(center_id.as_str()) else { continue };
        let (state, free, nodes) =
            (cycle.centers[position], &cycle.ledger.free[position], cycle.ledger.nodes[position].as_ref());
        match check(state, free, nodes, input.needs, &task_needs, cycle.config) {
            Ok(()) => {
                let siblings = context.siblings_at(center_id);
                let mut scoring_free = *free;
                (0..siblings).for_each(|_| scoring_free.add(&spec.capacity));
                let mut metrics = state.metrics.clone();
                if let Some(m) = metrics.as_mut() {
                    m.running_task_num = cycle.ledger.load[position] - siblings as i64;
                }
                let mut candidate = CandidateCenter::new(state.center.clone(), metrics, &spec.spec);
                candidate.free = scoring_free.to_amounts();
                candidate.node_room = nodes.and_then(|nodes| nodes.room(&spec.capacity));
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
    let mut snapshot = Snapshot::bare(candidates).with_links(cycle.config.region_links.clone());
    for holder in context.data.iter().flat_map(|d| &d.center_ids).chain(&context.sibling_centers) {
        if let Some(state) = catalog.centers.get(holder) {
            snapshot = snapshot.with_location_of(&state.center);
        }
    }
    let table = score_table(&WeightedSum, &policy.weights, context, &snapshot, EXPLAIN_LIMIT);
    let winner = table.first().map(|best| cycle.positions[best.center_id.as_str()]);
    let columns: Vec<_> = table.first().map(|row| row.strategies.iter().map(|s| s.0).collect()).unwrap_or_default();
    let weights: Vec<u32> = columns.iter().map(|strategy| policy.weights.get(*strategy)).collect();
    let centers = table
        .into_iter()
        .map(|row| {
            let columns = row.strategies.into_iter().map(|(_, raw, normalized)| (raw, normalized));
            CenterScore::new(&row.center_id, row.total, columns, &weights)
        })
        .collect();
    let algorithms = columns.iter().map(|strategy| strategy.id().to_string()).collect();
    explain.scores = ScoreTable { algorithms, weights, centers };
    explain.winner = winner.map(|p| cycle.id(p).to_string());
    (explain, winner)
}

fn solve_reference(catalog: &Catalog, queue: &[Job], config: &SolverConfig) -> Vec<JobDecision> {
    let mut cycle = Cycle::new(catalog, config);
    cycle.reference = Some(reference_replica);
    solve_in(cycle, queue)
}

fn arb_world() -> impl Strategy<Value = (World, Vec<Job>)> {
    let centers = proptest::collection::vec((0i64..5, 0i64..3, 0u8..3), 1..6);
    let jobs =
        proptest::collection::vec((proptest::collection::vec(1i64..4, 1..3), any::<bool>(), any::<bool>()), 1..8);
    (centers, jobs).prop_map(|(capacity, jobs)| {
        let named: Vec<(String, i64)> = capacity.iter().enumerate().map(|(i, (n, ..))| (format!("c{i}"), *n)).collect();
        let refs: Vec<(&str, i64)> = named.iter().map(|(id, n)| (id.as_str(), *n)).collect();
        let mut world = World::new(&refs);
        for (i, (gpus, in_flight, split)) in capacity.iter().enumerate() {
            if *in_flight > 0 {
                world.in_flight.insert(format!("c{i}"), held(*in_flight));
            }
            world = world.edit(&format!("c{i}"), |_, m| m.as_mut().unwrap().node_free = nodes_of(*gpus, *split));
        }
        let jobs = jobs
            .into_iter()
            .enumerate()
            .map(|(i, (replicas, fcfs, loose))| {
                job_with(&format!("j{i}"), &replicas, |r| {
                    r.policy = fcfs.then_some(PolicyMode::Fcfs);
                    r.tasks[0].gang = loose.then_some(false);
                })
            })
            .collect();
        (world, jobs)
    })
}

proptest! {
    #[test]
    fn never_places_beyond_free_capacity_less_in_flight((world, jobs) in arb_world()) {
        let decisions = world.solve(&jobs);
        let mut used: BTreeMap<String, i64> = BTreeMap::new();
        for center in decisions.iter().flat_map(placed).flatten() {
            *used.entry(center).or_default() += 1;
        }
        for (center, metrics) in &world.centers {
            let metrics = metrics.as_ref().unwrap();
            let held = world.in_flight.get(&center.ai_center_id).map_or(0, |f| f.replicas);
            let used = used.get(&center.ai_center_id).copied().unwrap_or(0);
            prop_assert!(used <= (metrics.gpu_free - held).max(0), "beyond the totals at {}", center.ai_center_id);
            if !metrics.node_free.is_empty() {
                let room = node_room(&metrics.node_free);
                prop_assert!(used + held.min(room) <= room, "beyond its nodes at {}", center.ai_center_id);
            }
        }
    }

    #[test]
    fn gang_groups_are_all_or_nothing_and_placements_cover_every_replica((world, jobs) in arb_world()) {
        for (job, decision) in jobs.iter().zip(world.solve(&jobs)) {
            let gang: Vec<usize> = (0..job.tasks.len()).filter(|i| job.tasks[*i].gang).collect();
            let placed_gang = gang.iter().filter(|i| decision.placements[**i].is_some()).count();
            prop_assert!(placed_gang == 0 || placed_gang == gang.len());
            for (task, centers) in job.tasks.iter().zip(&decision.placements) {
                if let Some(centers) = centers {
                    prop_assert_eq!(centers.len(), task.replica_number as usize);
                }
            }
        }
    }

    #[test]
    fn same_inputs_same_decisions((world, jobs) in arb_world()) {
        prop_assert_eq!(world.solve(&jobs), world.solve(&jobs));
    }

    #[test]
    fn fcfs_jobs_never_pass_a_blocked_earlier_job((world, jobs) in arb_world()) {
        let decisions = world.solve(&jobs);
        let first_blocked = decisions.iter().position(|d| d.explain.outcome != DecisionOutcome::Placed);
        if let Some(blocked) = first_blocked {
            for (job, decision) in jobs.iter().zip(&decisions).skip(blocked + 1) {
                if job.options.policy == Some(PolicyMode::Fcfs) {
                    prop_assert!(!decision.places_something(), "{} overtook {}", job.id, jobs[blocked].id);
                }
            }
        }
    }
}

/// A varied catalog (every filter can reject, factors differ, a second spec and image, data,
/// links between regions) and a queue of `jobs` mixing policies, weights, pins, data, QoS, user
/// regions (twin jobs alike but for theirs), gang and multi-replica tasks.
fn arb_varied_world(jobs: std::ops::Range<usize>) -> impl Strategy<Value = (World, Vec<Job>)> {
    let center = (
        (0i64..5, 0i64..3, 0u8..12, 0i32..4, 0u8..4, 0u8..3, 0i64..5, 0u8..3),
        (0u32..4, 0u32..40, 1u32..30, 0u32..600, 0i64..40, any::<bool>(), any::<bool>()),
    );
    let task = (1i64..4, 0u8..2, any::<bool>(), prop::option::of(prop::collection::vec(0usize..8, 1..3)));
    let job = (
        prop::collection::vec(task, 1..3),
        0usize..PolicyMode::ALL.len(),
        prop::option::of(0u32..50),
        (0i32..3, any::<bool>(), prop::option::of((prop::option::of(0u32..40), prop::option::of(1000u64..8000)))),
        prop::option::of(1000u64..6000),
        (prop::option::of(0u8..4), any::<bool>()),
    );
    let data = (prop::collection::vec(0usize..8, 1..3), 0i64..30_000, any::<bool>());
    (prop::collection::vec(center, 1..9), prop::collection::vec(job, jobs), data, arb_links()).prop_map(
        |(centers, mut jobs, (holders, size_mb, private), links)| {
            let ids: Vec<String> = (0..centers.len()).map(|i| format!("c{i}")).collect();
            let refs: Vec<(&str, i64)> = ids.iter().zip(&centers).map(|(id, ((n, ..), _))| (id.as_str(), *n)).collect();
            let mut world = World::new(&refs);
            let mut offered: Vec<&str> = vec!["ghost"];
            for (i, ((gpus, in_flight, state, grade, site, region, running, split), net)) in centers.iter().enumerate()
            {
                let (bandwidth, latency, speed, watts, price, has_image, offers_big) = *net;
                let id = &ids[i];
                if *in_flight > 0 {
                    world.in_flight.insert(id.clone(), held(*in_flight));
                }
                world = world.edit(id, |c, m| {
                    if let Some(m) = m.as_mut() {
                        m.node_free = nodes_of(*gpus, *split);
                    }
                    c.security_grade = *grade;
                    c.network.site = if *site == 0 { String::new() } else { format!("s{site}") };
                    c.region = format!("r{region}");
                    c.network.bandwidth_mbps = f64::from(bandwidth) * 500.0;
                    c.network.latency_ms = f64::from(latency);
                    c.performance.insert("gpu".into(), f64::from(speed) / 10.0);
                    c.power.device_watts.insert("gpu".into(), f64::from(watts));
                    c.power.static_watts = f64::from(watts) * 3.0;
                    match state {
                        0 => c.status = 0,
                        1 => *m = None,
                        2 => m.as_mut().unwrap().reported_at = NOW - 120_000,
                        _ => m.as_mut().unwrap().running_task_num = *running * (*state as i64),
                    }
                });
                world.specs[0].center_prices.insert(id.clone(), price);
                if !has_image {
                    world.images.retain(|image| image.ai_center_id != *id);
                }
                if offers_big {
                    offered.push(id);
                }
            }
            let mut big = spec_at(&offered);
            big.resource_spec_id = "g2".into();
            big.resource_quantity = [("gpu".to_string(), "2".to_string()), ("cpu".to_string(), "4".to_string())].into();
            world.specs.push(big);
            world.images.push(
                serde_json::from_value(json!({"image_id": "img-tf", "name": "tf", "ai_center_id": "c0",
                    "resource_spec": "g2"}))
                .unwrap(),
            );
            let mut data = dataset(&format!("c{}", holders[0]), size_mb, private);
            for holder in &holders[1..] {
                let mut location = data.location[0].clone();
                location.ai_center_id = format!("c{holder}");
                data.location.push(location);
            }
            world.datasets = vec![data];
            world.links = Arc::new(links);
            // A twin repeats the job before it from its own region: one class but for the origin.
            for i in 1..jobs.len() {
                let (region, twin) = jobs[i].5;
                if twin {
                    jobs[i] = jobs[i - 1].clone();
                    jobs[i].5 = (region, twin);
                }
            }
            let jobs = jobs
                .into_iter()
                .enumerate()
                .map(|(i, (tasks, mode, weight, (grade, with_data, qos), duration, (region, _)))| {
                    let replicas: Vec<i64> = tasks.iter().map(|t| t.0).collect();
                    job_with(&format!("j{i}"), &replicas, |r| {
                        r.policy = Some(PolicyMode::ALL[mode]);
                        if let Some(weight) = weight {
                            r.weights.insert("data_affinity".into(), weight);
                        }
                        r.security_grade = Some(grade);
                        r.dataset_id = with_data.then(|| "d@v1".to_string());
                        r.qos = qos.map(|(latency, deadline)| QosTarget {
                            max_latency_ms: latency.map(f64::from),
                            deadline_secs: deadline,
                        });
                        r.duration_secs = duration;
                        r.user_region = region.map(|n| format!("r{n}"));
                        for (task, (_, kind, loose, pins)) in r.tasks.iter_mut().zip(&tasks) {
                            if *kind == 1 {
                                task.resource_spec_id = "g2".into();
                                task.image_id = if *loose { "img-tf".into() } else { "img-0".into() };
                            }
                            task.gang = loose.then_some(false);
                            task.center_ids = pins.iter().flatten().map(|p| format!("c{p}")).collect();
                        }
                    })
                })
                .collect();
            (world, jobs)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn cached_decisions_equal_the_per_replica_reference((world, jobs) in arb_varied_world(1..8)) {
        let (catalog, config) = (world.catalog(), world.config());
        prop_assert_eq!(solve(&catalog, &jobs, &config), solve_reference(&catalog, &jobs, &config));
    }

    #[test]
    fn boards_over_long_varied_queues_equal_the_per_replica_reference((world, jobs) in arb_varied_world(8..40)) {
        let (catalog, config) = (world.catalog(), world.config());
        prop_assert_eq!(solve(&catalog, &jobs, &config), solve_reference(&catalog, &jobs, &config));
    }

    #[test]
    fn cached_decisions_equal_the_reference_on_the_plain_worlds((world, jobs) in arb_world()) {
        let catalog = world.catalog();
        prop_assert_eq!(solve(&catalog, &jobs, &config()), solve_reference(&catalog, &jobs, &config()));
    }
}

#[path = "solve_tests_regions.rs"]
mod regions;

#[path = "solve_tests_nodes.rs"]
mod nodes;

#[path = "solve_tests_boards.rs"]
mod boards;

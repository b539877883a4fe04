//! Per-node fit in a cycle: a center whose totals would hold a replica but none of whose nodes
//! can is rejected with `NO_NODE_FITS`; replicas of a cycle and those in flight each take a node.

use jcs_api::model::NodeFree;

use super::*;

/// Spec `c10`: 10 CPUs, offered wherever `g1` is.
fn with_ten_cpu_spec(mut world: World) -> World {
    let mut spec = world.specs[0].clone();
    spec.resource_spec_id = "c10".into();
    spec.resource_quantity = [("cpu".to_string(), "10".to_string())].into();
    world.specs.push(spec);
    world
}

fn cpu_nodes(count: i64, cpu_free: i64) -> NodeFree {
    NodeFree { count, cpu_free, memory_free: 64_000, ..NodeFree::default() }
}

/// A center whose CPUs are `nodes`, the totals their sum.
fn cpus_as(nodes: Vec<NodeFree>) -> impl FnOnce(&mut Center, &mut Option<CenterMetrics>) {
    move |_, metrics| {
        let m = metrics.as_mut().unwrap();
        m.cpu_free = nodes.iter().map(|n| n.count * n.cpu_free).sum();
        m.node_free = nodes;
    }
}

fn ten_cpus(id: &str, replicas: i64) -> Job {
    job_with(id, &[replicas], |r| r.tasks[0].resource_spec_id = "c10".into())
}

#[test]
fn a_replica_goes_where_one_node_can_hold_it_not_where_the_totals_look_best() {
    // `wide` has 80 free CPUs on ten 8-CPU nodes; `narrow` 16 on one node.
    let world = with_ten_cpu_spec(World::new(&[("narrow", 0), ("wide", 0)]))
        .edit("wide", cpus_as(vec![cpu_nodes(10, 8)]))
        .edit("narrow", cpus_as(vec![cpu_nodes(1, 16)]));
    let decision = &world.solve(&[ten_cpus("j", 1)])[0];
    assert_eq!(placed(decision), vec![vec!["narrow".to_string()]]);
    let rejection = &decision.explain.tasks[0].replicas[0].rejections[0];
    assert_eq!((rejection.center_id.as_str(), rejection.code), ("wide", RejectCode::NoNodeFits));
    assert_eq!(
        rejection.detail, "no node has cpu 10 free; closest: cpu 8 (10 of 10 nodes) (0 in flight)",
        "the explain record says why the totals were not enough"
    );
    // Without a node report the totals decide, and `wide` wins on free capacity.
    let hidden = world.edit("wide", |_, m| m.as_mut().unwrap().node_free.clear());
    assert_eq!(placed(&hidden.solve(&[ten_cpus("j", 1)])[0]), vec![vec!["wide".to_string()]]);
}

#[test]
fn replicas_of_a_cycle_take_a_node_each_and_a_failed_gang_gives_them_back() {
    // Two 16-CPU nodes: 32 CPUs, enough for three 10-CPU replicas by the totals, two by nodes.
    let world = with_ten_cpu_spec(World::new(&[("a", 0)])).edit("a", cpus_as(vec![cpu_nodes(2, 16)]));
    let decisions = world.solve(&[ten_cpus("three", 3), ten_cpus("two", 2), ten_cpus("one-more", 1)]);
    assert_eq!(decisions[0].explain.outcome, DecisionOutcome::Pending);
    let third = &decisions[0].explain.tasks[0].replicas[2];
    assert_eq!(third.rejected_count.get("NO_NODE_FITS"), Some(&1), "{third:?}");
    assert_eq!(placed(&decisions[1]), vec![vec!["a".to_string(), "a".to_string()]], "the gang's nodes came back");
    assert_eq!(decisions[2].explain.outcome, DecisionOutcome::Pending, "both nodes now hold a replica");
}

#[test]
fn in_flight_replicas_hold_a_node_each() {
    let mut world = with_ten_cpu_spec(World::new(&[("a", 0)])).edit("a", cpus_as(vec![cpu_nodes(2, 16)]));
    let mut in_flight = InFlight::default();
    in_flight.adjust(&world.catalog().specs["c10"].capacity, 1);
    world.in_flight.insert("a".into(), in_flight);
    let decisions = world.solve(&[ten_cpus("first", 1), ten_cpus("second", 1)]);
    assert_eq!(placed(&decisions[0]), vec![vec!["a".to_string()]], "the other node is free");
    assert_eq!(decisions[1].explain.outcome, DecisionOutcome::Pending, "22 CPUs left in all, 6 on each node");
    let rejection = &decisions[1].explain.tasks[0].replicas[0].rejections[0];
    assert_eq!(rejection.code, RejectCode::NoNodeFits, "{rejection:?}");
}

#[test]
fn best_fit_leaves_the_large_node_for_the_large_replica() {
    // A 10-CPU node and a 20-CPU node: a 10-CPU replica takes the small one, so a later
    // 20-CPU replica still fits.
    let mut world =
        with_ten_cpu_spec(World::new(&[("a", 0)])).edit("a", cpus_as(vec![cpu_nodes(1, 10), cpu_nodes(1, 20)]));
    let mut big = world.specs[1].clone();
    big.resource_spec_id = "c20".into();
    big.resource_quantity = [("cpu".to_string(), "20".to_string())].into();
    world.specs.push(big);
    let twenty = job_with("big", &[1], |r| r.tasks[0].resource_spec_id = "c20".into());
    let decisions = world.solve(&[ten_cpus("small", 1), twenty]);
    assert!(decisions.iter().all(|d| d.explain.outcome == DecisionOutcome::Placed), "{decisions:?}");
}

#[test]
fn most_free_capacity_counts_what_the_nodes_hold() {
    // 152 CPUs on eight 19-CPU nodes hold eight 10-CPU replicas; 140 on fourteen 10-CPU nodes
    // hold fourteen, though their total is smaller.
    let world = with_ten_cpu_spec(World::new(&[("big-nodes", 0), ("many-nodes", 0)]))
        .edit("big-nodes", cpus_as(vec![cpu_nodes(8, 19)]))
        .edit("many-nodes", cpus_as(vec![cpu_nodes(14, 10)]));
    let by_free_capacity = |id: &str| {
        job_with(id, &[1], |r| {
            r.tasks[0].resource_spec_id = "c10".into();
            r.policy = Some(PolicyMode::Load);
        })
    };
    let decision = &world.solve(&[by_free_capacity("j")])[0];
    assert_eq!(placed(decision), vec![vec!["many-nodes".to_string()]]);
    let scores = &decision.explain.tasks[0].replicas[0].scores;
    let column = scores.algorithms.iter().position(|id| id == "most_free_capacity").unwrap();
    let raw: Vec<(String, Option<f64>)> = scores.centers.iter().map(|c| (c.center_id.clone(), c.raw[column])).collect();
    assert_eq!(raw, [("many-nodes".to_string(), Some(14.0)), ("big-nodes".to_string(), Some(8.0))]);
    let hidden = world.edit("many-nodes", |_, m| m.as_mut().unwrap().node_free.clear()).edit("big-nodes", |_, m| {
        m.as_mut().unwrap().node_free.clear();
    });
    assert_eq!(placed(&hidden.solve(&[by_free_capacity("j")])[0]), vec![vec!["big-nodes".to_string()]], "by totals");
}

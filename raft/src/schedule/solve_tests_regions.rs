//! The network-aware modes on a three-region catalog: paths from the user's or the data's
//! region over the configured links, in the `network` policy and the QoS latency filter.

use std::collections::BTreeMap;
use std::sync::Arc;

use jcs_api::model::{CreateTrainJob, PolicyMode, QosTarget};

use super::*;
use crate::schedule::links::{Link, RegionLinks};

/// Three centers in three regions: `east-1` with a modest uplink, `west-1` and `south-1` with
/// fast ones; east reaches west over a slow, distant link and south over a fast, near one.
fn three_regions() -> World {
    let net = |mbps: f64, latency: f64| serde_json::from_value(json!({"bandwidth_mbps": mbps, "latency_ms": latency}));
    let world = World::new(&[("east-1", 4), ("west-1", 4), ("south-1", 4)])
        .edit("east-1", |c, _| (c.region, c.network) = ("east".into(), net(1_000.0, 5.0).unwrap()))
        .edit("west-1", |c, _| (c.region, c.network) = ("west".into(), net(10_000.0, 1.0).unwrap()))
        .edit("south-1", |c, _| (c.region, c.network) = ("south".into(), net(10_000.0, 2.0).unwrap()));
    let link = |to: &str, mbps: f64, latency: f64| Link {
        from: "east".into(),
        to: to.into(),
        bandwidth_mbps: mbps,
        latency_ms: latency,
        jitter_ms: 0.0,
        loss_pct: 0.0,
    };
    let links = RegionLinks::new(&[link("west", 1_000.0, 40.0), link("south", 10_000.0, 8.0)]).unwrap();
    World { links: Arc::new(links), ..world }
}

fn from_region(mode: PolicyMode, region: Option<&str>) -> impl FnOnce(&mut CreateTrainJob) {
    let region = region.map(str::to_string);
    move |r: &mut CreateTrainJob| {
        r.policy = Some(mode);
        r.user_region = region;
    }
}

#[test]
fn network_policy_judges_the_path_from_the_users_region() {
    let world = three_regions();
    assert_eq!(winner_under(&world, from_region(PolicyMode::Network, None)), "west-1", "no region: by uplink");
    assert_eq!(
        winner_under(&world, from_region(PolicyMode::Network, Some("east"))),
        "south-1",
        "from east, the fast near link to south beats west's distant one and east's own modest uplink"
    );
    assert_eq!(winner_under(&world, from_region(PolicyMode::Network, Some("west"))), "west-1", "its own region");
    let decision = &world.solve(&[job_with("j", &[1], from_region(PolicyMode::Network, Some("east")))])[0];
    assert_eq!(decision.explain.user_region.as_deref(), Some("east"));
    let raw_of = |center: &str| {
        let scores = &decision.explain.tasks[0].replicas[0].scores;
        let column = scores.algorithms.iter().position(|id| id == "network_quality").unwrap();
        scores.centers.iter().find(|s| s.center_id == center).unwrap().raw[column].unwrap()
    };
    // west: min(1000, 10000) Mbit/s over 40 + 1 ms; south: 10000 over 8 + 2 ms; east: its uplink.
    assert!((raw_of("west-1") - 1_000.0 / 5.1).abs() < 1e-6, "{}", raw_of("west-1"));
    assert!((raw_of("south-1") - 10_000.0 / 2.0).abs() < 1e-6, "{}", raw_of("south-1"));
    assert!((raw_of("east-1") - 1_000.0 / 1.5).abs() < 1e-6, "{}", raw_of("east-1"));
    let without = &world.solve(&[job_with("j", &[1], from_region(PolicyMode::Network, None))])[0];
    assert_eq!(without.explain.user_region, None);
}

/// The raw `network_quality` of each center in a decision's first replica.
fn network_raws(decision: &JobDecision) -> BTreeMap<String, Option<f64>> {
    let scores = &decision.explain.tasks[0].replicas[0].scores;
    let column = scores.algorithms.iter().position(|id| id == "network_quality").unwrap();
    scores.centers.iter().map(|row| (row.center_id.clone(), row.raw[column])).collect()
}

#[test]
fn without_a_user_region_the_network_path_is_judged_from_the_datas_region() {
    let mut world = three_regions();
    world.datasets = vec![dataset("east-1", 10, false)];
    let with_data = |user_region: Option<&str>| {
        let user_region = user_region.map(str::to_string);
        move |r: &mut CreateTrainJob| {
            r.policy = Some(PolicyMode::Network);
            r.dataset_id = Some("d@v1".into());
            r.user_region = user_region;
        }
    };
    let from_data = &world.solve(&[job_with("j", &[1], with_data(None))])[0];
    let from_east = &world.solve(&[job_with("j", &[1], from_region(PolicyMode::Network, Some("east")))])[0];
    assert_eq!(network_raws(from_data), network_raws(from_east), "the data sits in east");
    let from_west = &world.solve(&[job_with("j", &[1], with_data(Some("west")))])[0];
    let west_raws = network_raws(from_west);
    assert_eq!(west_raws["west-1"], Some(10_000.0 / 1.1), "a user region wins over the data's: {west_raws:?}");
}

#[test]
fn jobs_alike_but_for_their_user_region_are_judged_apart_in_one_cycle() {
    let world = three_regions();
    let jobs = [
        job_with("from-east", &[1], from_region(PolicyMode::Network, Some("east"))),
        job_with("from-west", &[1], from_region(PolicyMode::Network, Some("west"))),
        job_with("from-nowhere", &[1], from_region(PolicyMode::Network, None)),
    ];
    let decisions = world.solve(&jobs);
    let winners: Vec<Vec<Vec<String>>> = decisions.iter().map(placed).collect();
    let one = |id: &str| vec![vec![id.to_string()]];
    assert_eq!(winners, vec![one("south-1"), one("west-1"), one("west-1")]);
    let (catalog, config) = (world.catalog(), world.config());
    assert_eq!(decisions, solve_reference(&catalog, &jobs, &config), "the cached path agrees");
}

#[test]
fn qos_latency_is_judged_from_the_users_region() {
    let world = three_regions();
    let qos = |region: Option<&str>| {
        let region = region.map(str::to_string);
        move |r: &mut CreateTrainJob| {
            from_region(PolicyMode::Qos, region.as_deref())(r);
            r.qos = Some(QosTarget { max_latency_ms: Some(30.0), deadline_secs: None });
        }
    };
    let decision = &world.solve(&[job_with("j", &[1], qos(Some("east")))])[0];
    assert_eq!(rejections(decision).get("QOS_LATENCY"), Some(&1), "{:#?}", decision.explain);
    let rejection = &decision.explain.tasks[0].replicas[0].rejections[0];
    assert_eq!(
        (rejection.center_id.as_str(), rejection.detail.as_str()),
        ("west-1", "latency 41 ms from region east > 30 ms")
    );
    assert_eq!(decision.explain.tasks[0].replicas[0].feasible, 2, "east-1 (5 ms) and south-1 (8 + 2 ms) qualify");
    let decision = &world.solve(&[job_with("j", &[1], qos(None))])[0];
    assert_eq!(rejections(decision).get("QOS_LATENCY"), None, "without a region every uplink is within 30 ms");
    assert_eq!(decision.explain.tasks[0].replicas[0].feasible, 3);
}

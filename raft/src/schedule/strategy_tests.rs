//! Each strategy picks what its factor says on crafted catalogs; normalization properties hold
//! on arbitrary ones.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::schedule::fixtures::{
    arb_job, arb_snapshot, arb_snapshot_and_reordering, candidate, center, demand, gpu_job,
};
use crate::schedule::snapshot::{CandidateCenter, DataLocation};
use crate::schedule::strategy::Strategy;

fn scores(strategy: Strategy, job: &JobContext, snapshot: &Snapshot) -> BTreeMap<String, u32> {
    let ids = snapshot.candidates.iter().map(|c| c.id().to_string());
    ids.zip(score(strategy, job, snapshot)).collect()
}

fn winner(strategy: Strategy, job: &JobContext, candidates: Vec<CandidateCenter>) -> String {
    let snapshot = Snapshot::new(candidates);
    let by_center = scores(strategy, job, &snapshot);
    let best = by_center.iter().filter(|(_, s)| **s == 100).map(|(id, _)| id.clone()).collect::<Vec<_>>();
    assert_eq!(best.len(), 1, "{strategy}: expected one winner, got {by_center:?}");
    best[0].clone()
}

fn with(id: &str, change: impl FnOnce(&mut CandidateCenter)) -> CandidateCenter {
    let mut c = candidate(id);
    change(&mut c);
    c
}

fn running(id: &str, tasks: i64) -> CandidateCenter {
    with(id, |c| c.metrics.as_mut().map_or((), |m| m.running_task_num = tasks))
}

#[test]
fn least_workload_picks_the_least_loaded() {
    let snapshot = Snapshot::new(vec![running("a", 5), running("b", 1), running("c", 3)]);
    let by_center = scores(Strategy::LeastWorkload, &gpu_job(), &snapshot);
    assert_eq!((by_center["a"], by_center["b"], by_center["c"]), (0, 100, 50));
}

#[test]
fn most_free_capacity_picks_most_room_for_the_demanded_kinds() {
    let free = |id: &str, cpu: f64, gpu: f64| with(id, |c| (c.free.cpu, c.free.gpu) = (cpu, gpu));
    // c has the most GPUs but only CPU for two replicas; unreported d scores 0.
    let unreported = with("d", |c| c.metrics = None);
    let candidates = vec![free("a", 100.0, 2.0), free("b", 100.0, 8.0), free("c", 8.0, 16.0), unreported];
    let snapshot = Snapshot::new(candidates.clone());
    assert_eq!(scores(Strategy::MostFreeCapacity, &gpu_job(), &snapshot)["d"], 0);
    assert_eq!(winner(Strategy::MostFreeCapacity, &gpu_job(), candidates), "b");
}

#[test]
fn data_affinity_picks_the_center_holding_the_data_then_its_site_then_its_region() {
    let placed = |id: &str, site: &str, region: &str| {
        with(id, |c| {
            let center = std::sync::Arc::make_mut(&mut c.center);
            (center.network.site, center.region) = (site.into(), region.into())
        })
    };
    let snapshot = Snapshot::new(vec![
        placed("far", "s9", "r9"),
        placed("region", "s2", "r1"),
        placed("site", "s1", "r1"),
        placed("holder", "s1", "r1"),
    ]);
    let mut job = gpu_job();
    job.data = Some(DataLocation { center_ids: vec!["holder".into()], size_mb: 10.0, region: None });
    let by_center = scores(Strategy::DataAffinity, &job, &snapshot);
    assert_eq!(by_center["holder"], 100);
    assert!(by_center["site"] > by_center["region"] && by_center["region"] > by_center["far"], "{by_center:?}");
}

#[test]
fn data_affinity_knows_non_candidate_holders_and_prefers_sibling_centers() {
    let mut store = center("store");
    store.network.site = "s1".into();
    let near = with("near", |c| std::sync::Arc::make_mut(&mut c.center).network.site = "s1".into());
    let snapshot = Snapshot::new(vec![candidate("other"), near]).with_location_of(&store);
    let mut job = gpu_job();
    job.data = Some(DataLocation { center_ids: vec!["store".into()], size_mb: 10.0, region: None });
    assert_eq!(scores(Strategy::DataAffinity, &job, &snapshot)["near"], 100);

    let mut siblings = gpu_job();
    siblings.sibling_centers = vec!["other".into()];
    assert_eq!(winner(Strategy::DataAffinity, &siblings, vec![candidate("other"), candidate("x")]), "other");
}

#[test]
fn lowest_price_picks_the_cheapest() {
    let priced = |id: &str, price: i64| with(id, |c| c.price = price);
    let snapshot = Snapshot::new(vec![priced("a", 10), priced("b", 3), priced("c", 7)]);
    let by_center = scores(Strategy::LowestPrice, &gpu_job(), &snapshot);
    assert_eq!((by_center["a"], by_center["b"], by_center["c"]), (0, 100, 43));
}

#[test]
fn lowest_energy_follows_formula_1_and_picks_the_greenest() {
    let powered = |id: &str, gpu_watts: f64, bandwidth: f64| {
        with(id, |c| {
            let center = std::sync::Arc::make_mut(&mut c.center);
            center.power.static_watts = 100.0;
            center.power.device_watts.insert("gpu".into(), gpu_watts);
            center.network.bandwidth_mbps = bandwidth;
        })
    };
    let mut job = gpu_job();
    job.data = Some(DataLocation { center_ids: vec!["holder".into()], size_mb: 1000.0, region: None });
    // holder: 400 W × 3600 s; frugal: 100 W × 80 s copy + 200 W × 3600 s; cut off: no bandwidth.
    let candidates = vec![powered("holder", 400.0, 0.0), powered("frugal", 200.0, 100.0), powered("cut", 1.0, 0.0)];
    let snapshot = Snapshot::new(candidates.clone());
    assert_eq!(raw(Strategy::LowestEnergy, &job, &snapshot), vec![Some(1_440_000.0), Some(728_000.0), None]);
    assert_eq!(scores(Strategy::LowestEnergy, &job, &snapshot)["cut"], 0);
    assert_eq!(winner(Strategy::LowestEnergy, &job, candidates), "frugal");
}

#[test]
fn highest_performance_picks_the_fastest_for_the_dominant_kind() {
    let speed = |id: &str, kind: &str, factor: f64| {
        with(id, |c| _ = std::sync::Arc::make_mut(&mut c.center).performance.insert(kind.into(), factor))
    };
    let candidates = vec![speed("a", "gpu", 1.2), speed("b", "gpu", 1.5), speed("c", "cpu", 9.0), candidate("d")];
    assert_eq!(winner(Strategy::HighestPerformance, &gpu_job(), candidates.clone()), "b");
    let cpu_job = JobContext::new(demand(&[("cpu", 2.0)]), 1);
    assert_eq!(winner(Strategy::HighestPerformance, &cpu_job, candidates), "c");
}

#[test]
fn highest_security_picks_the_highest_declared_or_reported_grade() {
    let declared = with("declared", |c| std::sync::Arc::make_mut(&mut c.center).security_grade = 5);
    let reported = with("reported", |c| c.metrics.as_mut().map_or((), |m| m.security_grade = 7));
    let candidates =
        vec![declared, reported, with("low", |c| std::sync::Arc::make_mut(&mut c.center).security_grade = 2)];
    assert_eq!(winner(Strategy::HighestSecurity, &gpu_job(), candidates), "reported");
}

#[test]
fn network_quality_picks_the_widest_cleanest_path() {
    let link = |id: &str, mbps: f64, latency: f64, loss: f64| {
        with(id, |c| {
            let net = &mut std::sync::Arc::make_mut(&mut c.center).network;
            (net.bandwidth_mbps, net.latency_ms, net.loss_pct) = (mbps, latency, loss);
        })
    };
    let candidates =
        vec![link("far", 10_000.0, 40.0, 0.0), link("near", 10_000.0, 2.0, 0.0), link("lossy", 10_000.0, 2.0, 50.0)];
    assert_eq!(winner(Strategy::NetworkQuality, &gpu_job(), candidates.clone()), "near");
    let snapshot = Snapshot::new(vec![candidate("unknown"), link("known", 100.0, 1.0, 0.0)]);
    assert_eq!(raw(Strategy::NetworkQuality, &gpu_job(), &snapshot)[0], None);
}

#[test]
fn network_quality_judges_the_path_from_the_jobs_origin_region() {
    use crate::schedule::links::{Link, RegionLinks};
    let at = |id: &str, region: &str, mbps: f64| {
        with(id, |c| {
            let center = std::sync::Arc::make_mut(&mut c.center);
            (center.region, center.network.bandwidth_mbps, center.network.latency_ms) = (region.into(), mbps, 1.0);
        })
    };
    let candidates = vec![at("home", "east", 1_000.0), at("away", "west", 10_000.0)];
    let slow = Link {
        from: "west".into(),
        to: "east".into(),
        bandwidth_mbps: 500.0,
        latency_ms: 30.0,
        jitter_ms: 0.0,
        loss_pct: 0.0,
    };
    let links = std::sync::Arc::new(RegionLinks::new(&[slow]).unwrap());
    let snapshot = Snapshot::new(candidates).with_links(links);
    let close = |job: &JobContext, expected: [f64; 2]| {
        let got = raw(Strategy::NetworkQuality, job, &snapshot);
        let near = got.iter().zip(expected).all(|(g, e)| g.is_some_and(|g| (g - e).abs() < 1e-9));
        assert!(near, "{got:?} vs {expected:?}");
    };
    let mut job = gpu_job();
    close(&job, [1_000.0 / 1.1, 10_000.0 / 1.1]);
    job.origin = Some("east".into());
    // east → west: the link (reverse of the one given) then away's uplink.
    close(&job, [1_000.0 / 1.1, 500.0 / 4.1]);
    job.origin = Some("north".into());
    assert_eq!(scores(Strategy::NetworkQuality, &job, &snapshot)["away"], 100, "no link: uplinks alone");
}

#[test]
fn load_fairness_picks_the_lowest_resulting_variance_counting_siblings() {
    let candidates = vec![running("a", 4), running("b", 0), running("c", 2)];
    assert_eq!(winner(Strategy::LoadFairness, &gpu_job(), candidates.clone()), "b");
    let mut job = gpu_job();
    job.sibling_centers = vec!["b".into(); 3];
    assert_eq!(winner(Strategy::LoadFairness, &job, candidates), "c");
}

#[test]
fn absurd_workloads_do_not_overflow() {
    let snapshot = Snapshot::new(vec![running("a", i64::MAX), running("b", i64::MAX), running("c", 0)]);
    let mut job = gpu_job();
    job.sibling_centers = vec!["a".into()];
    for strategy in [Strategy::LeastWorkload, Strategy::LoadFairness] {
        assert_eq!(score(strategy, &job, &snapshot).len(), 3);
    }
}

#[test]
fn normalize_handles_ties_gaps_and_direction() {
    assert_eq!(normalize(&[Some(2.0), Some(2.0)], true), vec![100, 100]);
    assert_eq!(normalize(&[Some(1.0), None, Some(f64::NAN), Some(3.0)], true), vec![0, 0, 0, 100]);
    assert_eq!(normalize(&[Some(1.0), Some(f64::INFINITY), Some(3.0)], false), vec![100, 0, 0]);
    assert_eq!(normalize(&[None, None], true), vec![0, 0]);
    assert_eq!(normalize(&[Some(f64::MIN), Some(0.0), Some(f64::MAX)], true), vec![0, 50, 100]);
    assert!(normalize(&[], true).is_empty());
}

#[test]
fn loads_are_normalized_exactly_rounding_half_up() {
    assert_eq!(normalize_loads(&[Some(0), Some(1), Some(2)]), vec![100, 50, 0]);
    assert_eq!(normalize_loads(&[Some(7), Some(7), None]), vec![100, 100, 0]);
    // 100 × 199 / 200 = 99.5 and 100 × 1 / 200 = 0.5: both round up.
    assert_eq!(normalize_loads(&[Some(0), Some(1), Some(199), Some(200)]), vec![100, 100, 1, 0]);
    assert_eq!(normalize_loads(&[Some(i64::MIN), Some(0), Some(i64::MAX)]), vec![100, 50, 0]);
    assert_eq!(normalize_loads(&[None]), vec![0]);
}

#[test]
fn fairness_scores_as_workload_does_and_shows_the_variance() {
    let snapshot = Snapshot::new(vec![running("a", 4), running("b", 0), running("c", 3)]);
    let job = gpu_job();
    let (raw, scores) = raw_and_scores(Strategy::LoadFairness, &job, &snapshot);
    assert_eq!(scores, score(Strategy::LeastWorkload, &job, &snapshot));
    assert_eq!(scores, vec![0, 100, 25]);
    // Loads 4, 0, 3 (sum 7, squares 25); one more at `b`: n²·variance = 3 × 26 - 8² = 14.
    assert_eq!(raw[1], Some(-14.0 / 9.0));
}

#[test]
fn ids_are_stable_and_round_trip() {
    let ids: Vec<_> = Strategy::ALL.iter().map(|s| s.id()).collect();
    assert_eq!(ids[0], "least_workload");
    assert_eq!(ids[7], "load_fairness");
    for strategy in Strategy::ALL {
        assert_eq!(Strategy::from_id(strategy.id()), Some(strategy));
        assert_eq!(serde_json::to_value(strategy).ok(), Some(serde_json::json!(strategy.id())));
    }
    assert_eq!(Strategy::from_id("fastest"), None);
}

proptest! {
    #[test]
    fn scores_are_within_range_and_the_best_raw_gets_100(snapshot in arb_snapshot(), job in arb_job()) {
        for strategy in Strategy::ALL {
            let raws = raw(strategy, &job, &snapshot);
            let normalized = score(strategy, &job, &snapshot);
            prop_assert_eq!(normalized.len(), snapshot.candidates.len());
            prop_assert!(normalized.iter().all(|s| *s <= 100));
            let finite = raws.iter().enumerate().filter_map(|(i, r)| r.filter(|v| v.is_finite()).map(|v| (i, v)));
            let best = if strategy.higher_is_better() {
                finite.max_by(|a, b| a.1.total_cmp(&b.1))
            } else {
                finite.min_by(|a, b| a.1.total_cmp(&b.1))
            };
            if let Some((index, _)) = best {
                prop_assert_eq!(normalized[index], 100, "{} {:?}", strategy, raws);
            }
            prop_assert_eq!(&normalized, &score(strategy, &job, &snapshot));
        }
    }

    /// A range that says it still holds after one value changed scores every value as the
    /// range of the new values does.
    #[test]
    fn a_range_that_holds_scores_as_a_fresh_one(
        values in prop::collection::vec(prop::option::of(-4i32..8), 1..12),
        at in any::<prop::sample::Index>(),
        new in prop::option::of(-4i32..8),
        halves in any::<bool>(),
        higher_is_better in any::<bool>(),
    ) {
        let scale = if halves { 0.5 } else { 3.0 };
        let mut raw: Vec<Option<f64>> = values.iter().map(|v| v.map(|v| f64::from(v) * scale)).collect();
        let i = at.index(raw.len());
        let new = new.map(|v| f64::from(v) * scale);
        if let Some(range) = MinMax::of(&raw).filter(|range| range.holds_after(raw[i], new)) {
            raw[i] = new;
            let kept: Vec<u32> = raw.iter().map(|v| range.score(*v, higher_is_better)).collect();
            prop_assert_eq!(kept, normalize(&raw, higher_is_better));
        }
        let mut loads: Vec<Option<i64>> = values.iter().map(|v| Some(i64::from(v.unwrap_or(0)))).collect();
        let new = i64::from(new.map_or(0, |v| (v / scale) as i32));
        let range = LoadRange::of(loads.iter().flatten().copied()).unwrap();
        if range.holds_after(loads[i].unwrap(), new) {
            loads[i] = Some(new);
            let kept: Vec<u32> = loads.iter().flatten().map(|load| range.score(*load)).collect();
            prop_assert_eq!(kept, normalize_loads(&loads));
        }
    }

    #[test]
    fn a_score_follows_its_center_when_candidates_are_reordered(
        (snapshot, reordered) in arb_snapshot_and_reordering(),
        job in arb_job(),
    ) {
        for strategy in Strategy::ALL {
            prop_assert_eq!(scores(strategy, &job, &snapshot), scores(strategy, &job, &reordered));
        }
    }
}

//! Small catalogs for the scheduling tests, and proptest generators of arbitrary ones.

use std::collections::BTreeMap;

use jcs_api::model::{
    center_status, AdapterEndpoint, Center, CenterMetrics, NetworkPosition, PowerModel, ResourceSpec,
};
use jcs_api::quantity::ResourceAmounts;
use proptest::prelude::*;

use crate::schedule::links::{Link, RegionLinks};
use crate::schedule::snapshot::{CandidateCenter, DataLocation, JobContext, Snapshot};

/// An available center in region `r1`, driven by a (simulated) adapter, with no other
/// extensions set.
pub fn center(id: &str) -> Center {
    Center {
        ai_center_id: id.into(),
        name: id.into(),
        region: "r1".into(),
        status: center_status::AVAILABLE,
        geometry: [0.0, 0.0],
        created_at: 0,
        updated_at: 0,
        adapter: AdapterEndpoint { kind: "sim".into(), ..AdapterEndpoint::default() },
        security_grade: 0,
        power: PowerModel::default(),
        network: NetworkPosition::default(),
        performance: BTreeMap::new(),
    }
}

pub fn spec(price: i64) -> ResourceSpec {
    ResourceSpec {
        resource_spec_id: "s1".into(),
        resource_spec_name: "s1".into(),
        resource_quantity: [("gpu".to_string(), "1".to_string())].into(),
        service_type: Default::default(),
        price,
        computing_center_list: String::new(),
        center_prices: BTreeMap::new(),
        created_at: 0,
        updated_at: 0,
    }
}

/// A demand from `(kind, amount)` pairs: `cpu`, `gpu`, `npu`, `mlu`, `memory` (MB), `storage` (GB).
pub fn demand(pairs: &[(&str, f64)]) -> ResourceAmounts {
    let mut demand = ResourceAmounts::default();
    for (kind, amount) in pairs {
        match *kind {
            "cpu" => demand.cpu = *amount,
            "gpu" => demand.gpu = *amount,
            "npu" => demand.npu = *amount,
            "mlu" => demand.mlu = *amount,
            "memory" => demand.memory_mb = *amount,
            "storage" => demand.storage_gb = *amount,
            other => panic!("unknown kind {other}"),
        }
    }
    demand
}

/// A candidate that reported an empty Table 4 (nothing running, nothing free), price 0.
pub fn candidate(id: &str) -> CandidateCenter {
    CandidateCenter::new(center(id), Some(CenterMetrics::default()), &spec(0))
}

/// A one-GPU replica with no data and nothing placed yet.
pub fn gpu_job() -> JobContext {
    JobContext::new(demand(&[("cpu", 4.0), ("gpu", 1.0)]), 1)
}

prop_compose! {
    fn arb_candidate(index: usize)(
        reported in any::<bool>(),
        running in 0i64..50,
        cpu_free in 0i64..64,
        gpu_free in 0i64..16,
        price in 0i64..1000,
        grade in 0i32..=10,
        static_watts in 0u32..2000,
        gpu_watts in 0u32..800,
        bandwidth in 0u32..10_000,
        gpu_speed in 1u32..30,
        site in 0u8..3,
        region in 0u8..2,
    ) -> CandidateCenter {
        let mut c = center(&format!("c{index}"));
        c.security_grade = grade;
        c.power.static_watts = static_watts.into();
        c.power.device_watts.insert("gpu".into(), gpu_watts.into());
        c.network = NetworkPosition { site: format!("s{site}"), bandwidth_mbps: bandwidth.into(), latency_ms: 0.0, ..Default::default() };
        c.region = format!("r{region}");
        c.performance.insert("gpu".into(), f64::from(gpu_speed) / 10.0);
        let metrics = reported.then(|| CenterMetrics {
            running_task_num: running, cpu_free, gpu_free, ..Default::default()
        });
        CandidateCenter::new(c, metrics, &spec(price))
    }
}

/// Links between regions `r0`, `r1` and `r2`: each pair linked or not, with some bandwidth
/// (possibly unset) and latency.
pub fn arb_links() -> impl Strategy<Value = RegionLinks> {
    let pairs = [("r0", "r1"), ("r0", "r2"), ("r1", "r2")];
    prop::collection::vec(prop::option::of((0u32..4, 0u32..30, 0u32..5)), 3).prop_map(move |chosen| {
        let links: Vec<Link> = pairs
            .iter()
            .zip(chosen)
            .filter_map(|((from, to), link)| {
                let (bandwidth, latency, loss) = link?;
                Some(Link {
                    from: (*from).into(),
                    to: (*to).into(),
                    bandwidth_mbps: f64::from(bandwidth) * 2_500.0,
                    latency_ms: latency.into(),
                    jitter_ms: f64::from(latency) / 10.0,
                    loss_pct: loss.into(),
                })
            })
            .collect();
        RegionLinks::new(&links).expect("generated links are valid")
    })
}

/// A snapshot of 1–6 candidates with ids `c0`, `c1`, …, and links between their regions.
pub fn arb_snapshot() -> impl Strategy<Value = Snapshot> {
    let candidates = (1usize..=6).prop_flat_map(|n| (0..n).map(arb_candidate).collect::<Vec<_>>());
    (candidates, arb_links()).prop_map(|(candidates, links)| Snapshot::new(candidates).with_links(links.into()))
}

/// A job that may have data at some of `c0`..`c5`, siblings already placed, and a user region
/// (`r2` has no centers).
pub fn arb_job() -> impl Strategy<Value = JobContext> {
    (
        1u32..8,
        0u32..8,
        prop::option::of((prop::collection::vec(0usize..6, 0..3), 0u32..100_000)),
        prop::collection::vec(0usize..6, 0..3),
        prop::option::of(0u8..3),
    )
        .prop_map(|(cpu, gpu, data, siblings, origin)| {
            let mut job = JobContext::new(demand(&[("cpu", cpu.into()), ("gpu", gpu.into())]), 1);
            job.data = data.map(|(holders, size)| DataLocation {
                center_ids: holders.iter().map(|i| format!("c{i}")).collect(),
                size_mb: size.into(),
                region: origin.map(|r| format!("r{r}")),
            });
            job.sibling_centers = siblings.iter().map(|i| format!("c{i}")).collect();
            job.origin = origin.map(|r| format!("r{r}"));
            job
        })
}

/// A snapshot and the same candidates in another order.
pub fn arb_snapshot_and_reordering() -> impl Strategy<Value = (Snapshot, Snapshot)> {
    arb_snapshot().prop_flat_map(|snapshot| {
        let candidates = snapshot.candidates.clone();
        let (locations, links) = (snapshot.locations.clone(), snapshot.links.clone());
        (
            Just(snapshot),
            Just(candidates).prop_shuffle().prop_map(move |candidates| Snapshot {
                candidates,
                locations: locations.clone(),
                links: links.clone(),
            }),
        )
    })
}

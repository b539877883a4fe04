//! The scheduler's pure core at the scale the issue sets: 1,000 centers, 9 strategies.
//!
//! `cargo bench -p jcs-raft --bench solve`
//!
//! * `score/1000_centers` — one replica scored by every weighted strategy over 1,000 feasible
//!   candidates, the best 8 detailed (throughput in center evaluations).
//! * `solve/1_job` — one cycle of one job: filters, scoring and choice over 1,000 centers.
//! * `solve/10000_jobs` — one cycle deciding a 10,000-job batch over 1,000 centers, capacity
//!   deducted as it goes (throughput in jobs).
//! * `solve/10000_jobs_nodes` — the same with every center reporting its nodes (three shapes,
//!   100 nodes each), so that every replica is also fitted to a node.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use jcs_api::model::{Center, CenterMetrics, CreateTrainJob, Image, Job, NodeFree, ResourceSpec};
use jcs_raft::schedule::snapshot::{CandidateCenter, JobContext, Snapshot};
use jcs_raft::schedule::{score_table, solve, Catalog, SolverConfig, WeightedSum, Weights};
use serde_json::json;

const CENTERS: usize = 1000;
const NOW: i64 = 1_000_000;

fn center(i: usize) -> (Center, Option<CenterMetrics>) {
    let center: Center = serde_json::from_value(json!({
        "ai_center_id": format!("c{i:04}"), "name": format!("center {i}"), "region": format!("r{}", i % 7),
        "status": 1, "security_grade": i % 5, "adapter": {"kind": "sim"},
        "power": {"static_watts": 1000.0 + (i % 13) as f64 * 100.0, "device_watts": {"gpu": 250.0 + (i % 11) as f64 * 10.0}},
        "network": {"site": format!("s{}", i % 31), "bandwidth_mbps": 1000.0 * (1 + i % 9) as f64, "latency_ms": (i % 40) as f64},
        "performance": {"gpu": 0.8 + (i % 6) as f64 * 0.1}
    }))
    .expect("center");
    let metrics = CenterMetrics {
        running_task_num: (i % 50) as i64,
        gpu_free: 10_000,
        cpu_free: 100_000,
        memory_free: 100_000_000,
        reported_at: NOW,
        ..Default::default()
    };
    (center, Some(metrics))
}

fn make_catalog(with_nodes: bool) -> Catalog {
    let mut centers: Vec<_> = (0..CENTERS).map(center).collect();
    if with_nodes {
        let shape = |gpu_free, cpu_free| NodeFree {
            count: 100,
            cpu_free,
            gpu_free,
            memory_free: 1_000_000,
            ..NodeFree::default()
        };
        for (_, metrics) in &mut centers {
            metrics.as_mut().expect("reported").node_free = vec![shape(8, 128), shape(4, 64), shape(0, 64)];
        }
    }
    let ids: Vec<String> = centers.iter().map(|(c, _)| c.ai_center_id.clone()).collect();
    let prices: BTreeMap<String, i64> =
        ids.iter().enumerate().map(|(i, id)| (id.clone(), 10 + (i % 17) as i64)).collect();
    let spec: ResourceSpec = serde_json::from_value(json!({"resource_spec_id": "gpu-1x", "resource_spec_name": "gpu",
        "resource_quantity": {"gpu": "1", "cpu": "8", "memory": "64Gi"}, "price": 20,
        "computing_center_list": ids.join(","), "center_prices": prices}))
    .expect("spec");
    let images: Vec<Image> = ids
        .iter()
        .map(|id| {
            serde_json::from_value(json!({"image_id": format!("img-{id}"), "name": "pytorch", "ai_center_id": id}))
                .expect("image")
        })
        .collect();
    Catalog::new(centers, vec![spec], images, vec![], &BTreeMap::new())
}

fn job(i: usize) -> Job {
    let request: CreateTrainJob = serde_json::from_value(json!({"name": format!("j{i}"), "tasks": [{"name": "t",
        "command": "train", "imageId": "img-c0000", "resourceSpecId": "gpu-1x", "replicaNumber": 1}]}))
    .expect("job");
    Job::from_request(format!("job-{i:012}"), &request, None, NOW)
}

fn config() -> SolverConfig {
    SolverConfig { now_ms: NOW, stale_after_ms: 60_000, ..Default::default() }
}

fn bench(c: &mut Criterion) {
    let catalog = make_catalog(false);
    let spec = &catalog.specs["gpu-1x"];
    let candidates: Vec<CandidateCenter> = catalog
        .centers
        .values()
        .map(|state| CandidateCenter::new(state.center.clone(), state.metrics.clone(), &spec.spec))
        .collect();
    let snapshot = Snapshot::new(candidates);
    let context = JobContext::new(spec.demand.clone(), 1);
    let weights = Weights::default();

    let mut group = c.benchmark_group("score");
    group.throughput(Throughput::Elements(CENTERS as u64));
    group.bench_function("1000_centers", |b| {
        b.iter(|| black_box(score_table(&WeightedSum, &weights, &context, &snapshot, 8)))
    });
    group.finish();

    let one = vec![job(0)];
    let mut group = c.benchmark_group("solve");
    group.throughput(Throughput::Elements(1));
    group.bench_function("1_job", |b| b.iter(|| black_box(solve(&catalog, &one, &config()))));
    let batch: Vec<Job> = (0..10_000).map(job).collect();
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.sample_size(10);
    group.bench_function("10000_jobs", |b| b.iter(|| black_box(solve(&catalog, &batch, &config()))));
    let with_nodes = make_catalog(true);
    group.bench_function("10000_jobs_nodes", |b| b.iter(|| black_box(solve(&with_nodes, &batch, &config()))));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! What the Slurm adapter costs against the project's single-host Slurm (deploy/slurm): the
//! latency of a submit (find by name, node check, `POST /job/submit`), of a status poll of the
//! jobs in flight, of a monitoring poll, and the time from submit until Slurm reports a
//! replica running and until it reports it completed.
//!
//! ```sh
//! deploy/slurm/jcs-slurm start
//! cargo run --release -p jcs-adapters --example slurm_bench -- 200
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use jcs_adapters::slurm::local_cluster::LocalSlurm;
use jcs_adapters::slurm::SlurmCenter;
use jcs_adapters::{Adapter, AdapterContext, NativeState, ReplicaLaunch};
use jcs_api::model::ReplicaKey;
use jcs_api::quantity::ResourceAmounts;

fn percentiles(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0;
    println!(
        "{name:<28} n={:<5} p50 {:>8.1} ms  p90 {:>8.1} ms  p99 {:>8.1} ms  max {:>8.1} ms",
        samples.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let jobs: usize = std::env::args().nth(1).map_or(100, |n| n.parse().expect("a job count"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/slurm/jcs-slurm");
    let cluster = LocalSlurm::start(&script).unwrap_or_else(|e| panic!("Slurm: {e}"));
    let mut config = cluster.center_config();
    let run = format!("bench-{}", std::process::id());
    config["job_name_prefix"] = run.clone().into();
    config["log_dir"] = cluster.dir.join("jobs").join(&run).display().to_string().into();
    let ctx = AdapterContext::new(cluster.dir.join("work"), "bench");
    let adapter = SlurmCenter::new("bench", &config, &ctx).expect("config");

    let (mut submits, mut polls, mut resources) = (Vec::new(), Vec::new(), Vec::new());
    let mut pending = Vec::new();
    let started = Instant::now();
    for i in 0..jobs {
        let key = ReplicaKey { job_id: format!("job-{i:06}"), task: 0, replica: 0, attempt: 0 };
        let launch = ReplicaLaunch {
            key,
            command: "true".into(),
            image: String::new(),
            demand: ResourceAmounts { cpu: 1.0, memory_mb: 64.0, ..ResourceAmounts::default() },
            env: BTreeMap::new(),
            duration_hint: None,
        };
        let at = Instant::now();
        let id = adapter.submit(&launch).await.expect("submit");
        submits.push(at.elapsed());
        pending.push((id, at, None::<Duration>));
    }
    let (mut running, mut completed) = (Vec::new(), Vec::new());
    while !pending.is_empty() {
        let ids: Vec<_> = pending.iter().map(|(id, _, _)| id.clone()).collect();
        let at = Instant::now();
        let states = adapter.status(&ids).await.expect("status");
        polls.push(at.elapsed());
        let at = Instant::now();
        adapter.resources().await.expect("resources");
        resources.push(at.elapsed());
        let mut left = Vec::new();
        for ((id, submitted, ran), state) in pending.into_iter().zip(states) {
            let ran = ran.or_else(|| (state != NativeState::Queued).then(|| submitted.elapsed()));
            match state {
                NativeState::Succeeded => {
                    running.push(ran.unwrap_or_default());
                    completed.push(submitted.elapsed());
                }
                NativeState::Queued | NativeState::Running => left.push((id, submitted, ran)),
                other => panic!("{id}: {other:?}"),
            }
        }
        pending = left;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "slurm adapter, {jobs} one-CPU `true` jobs submitted one after another, Slurm 22.05 on {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    percentiles("submit", submits);
    percentiles("status poll (jobs in flight)", polls);
    percentiles("resources poll", resources);
    percentiles("submit -> seen running", running);
    percentiles("submit -> seen completed", completed);
    println!("{jobs} jobs through in {elapsed:.1} s: {:.1} jobs/s", jobs as f64 / elapsed);
    println!("command: cargo run --release -p jcs-adapters --example slurm_bench -- {jobs}");
}

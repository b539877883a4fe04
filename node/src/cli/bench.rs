//! `jcs bench submit`: N concurrent clients submit M valid A.1 jobs to a node and the run
//! reports durable submissions per second (every success is acknowledged after its Raft commit),
//! latency percentiles, errors by code, and the command line that repeats the run.
//!
//! The client is kept out of the measurement: all request bodies are serialized before the clock
//! starts, the clients are tasks of the multi-threaded runtime sharing one connection pool with
//! room for every client, answers are checked without being decoded into objects, and each
//! client records into its own histogram, merged at the end. Requests are not retried: a failed
//! submission is counted under its error code (`TRANSPORT` when no answer came) and makes the
//! command exit non-zero after the report.
//!
//! With several servers (`--server URL1,URL2,…`) the clients are spread evenly over them; a
//! follower forwards its submissions to the leader, so every success is still durable on a
//! majority.
//!
//! Jobs use the demo catalog (`jcs serve --demo`): image `pytorch-hunan-univ`, spec `gpu-1x`,
//! one replica; each has a unique name and its own `Idempotency-Key`. With `--centers N` the
//! run first registers N bench centers (each with an image, a large monitoring report, and the
//! spec `bench-gpu` offered at all of them; without `--sim` they name no adapter, so the node
//! must run with `--place-without-adapter`) and submits to those: A.1 then answers after the
//! scheduler placed the job, so the latency is the scheduling time T of §6.7 seen by a client,
//! and `placed/s` is the throughput R. The run then also reads T and R from the jobs'
//! replicated timestamps (`placedAt - createdAt`, [`stamps`]), which do not depend on how the
//! clients wait (see there for measuring R over a backlog). `--rate` paces submissions (open
//! loop) instead of sending as fast as answers come back. With `--sim` the bench centers are
//! simulated platforms (`sim` adapter): jobs are really dispatched, and the run also waits for
//! every measured job's last replica to be submitted and reports the standard's T
//! (`dispatchedAt - createdAt`) and the dispatch rate.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use jcs_api::model::{CreateTask, CreateTrainJob};
use reqwest::{Method, Url};
use serde::de::IgnoredAny;
use serde::Serialize;

use super::client::{self, Client};
use super::ClientOpts;
use stamps::Milestone;

mod etcd;
mod failover;
mod stamps;

/// Highest latency the histogram tells apart, in microseconds (above the client's timeout).
const MAX_LATENCY_US: u64 = 60_000_000;

/// `jcs bench`.
#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    client: ClientOpts,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand)]
enum Workload {
    /// Submit A.1 jobs (demo catalog) from concurrent clients; report submissions/s and latency.
    Submit(SubmitArgs),
    /// Start a local cluster, load it, kill its leader again and again; report how long until a
    /// new leader, the first commit and the first placement (ignores `--server`).
    Failover(failover::FailoverArgs),
    /// The submit workload's shape against an etcd cluster (puts through its JSON gateway), to
    /// compare with (ignores `--server`).
    Etcd(etcd::EtcdArgs),
}

#[derive(Args)]
struct SubmitArgs {
    /// Concurrent clients, sharing one connection pool.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    clients: u32,
    /// Jobs to submit and measure, over all clients.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    jobs: u64,
    /// Jobs submitted first and left out of the figures (opens connections, warms caches).
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// Register this many bench centers first and submit to them (see the module docs).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    centers: Option<u32>,
    /// Submissions per second over all clients (default: as fast as answers return).
    #[arg(long)]
    rate: Option<f64>,
    /// With `--centers`: make them simulated platforms, dispatch to them, and report the time
    /// from submission to dispatch.
    #[arg(long, requires = "centers")]
    sim: bool,
}

/// What bench jobs ask for: the image and spec ids.
struct Target {
    image: String,
    spec: String,
}

impl Target {
    fn demo() -> Target {
        Target { image: "pytorch-hunan-univ".into(), spec: "gpu-1x".into() }
    }
}

/// How many bench centers are registered at once.
const SETUP_CONCURRENCY: usize = 64;

/// Registers `count` bench centers with room for every job of a run; an object left by an
/// earlier run (`ALREADY_EXISTS`) is reused.
async fn setup_centers(client: &Client, count: u32, sim: bool) -> anyhow::Result<Target> {
    use futures::StreamExt;
    let ids: Vec<String> = (0..count).map(|i| format!("bench-c{i:05}")).collect();
    let post = |path: &'static str, body: serde_json::Value| {
        let client = client.clone();
        async move {
            match client.send_json::<IgnoredAny>(Method::POST, client.url(&[path], &[]), &body, None).await {
                Err(err) if err.code() != "ALREADY_EXISTS" => Err(anyhow::anyhow!("creating a bench {path}: {err}")),
                _ => Ok(()),
            }
        }
    };
    let centers = ids.iter().enumerate().map(|(i, id)| {
        let mut center = serde_json::json!({"ai_center_id": id, "name": id, "region": format!("bench-r{}", i % 4),
            "status": 1, "security_grade": i % 5,
            "power": {"static_watts": 1000 + (i % 13) * 100, "device_watts": {"gpu": 250 + (i % 11) * 10}},
            "network": {"site": format!("bench-s{}", i % 16), "bandwidth_mbps": 1000 * (1 + i % 9), "latency_ms": i % 40}});
        if sim {
            // A remote platform 5 ms away, with room for every job of a run, running each for an hour.
            center["adapter"] = serde_json::json!({"kind": "sim", "config": {"latency_ms": 5, "default_duration_secs": 3600,
                "capacity": {"gpu": "1000000", "cpu": "8000000", "memory": "64000000Gi", "storage": "1000000G"}}});
        }
        post("centers", center)
    });
    futures::stream::iter(centers)
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<()>>()?;
    post("resourcespecs", serde_json::json!({"resource_spec_id": "bench-gpu", "resource_spec_name": "bench 1 GPU",
        "resource_quantity": {"gpu": "1", "cpu": "8", "memory": "64Gi"}, "price": 20, "computing_center_list": ids.join(",")}))
    .await?;
    let rest = ids.iter().enumerate().flat_map(|(i, id)| {
        let image = post(
            "images",
            serde_json::json!({"image_id": format!("bench-img-{id}"), "name": "bench-pytorch",
            "ai_center_id": id, "resource_spec": "bench-gpu"}),
        );
        let metrics = {
            let client = client.clone();
            let url = client.url(&["centers", id, "metrics"], &[]);
            let body = serde_json::json!({"running_task_num": i % 50, "gpu_free": 1_000_000, "cpu_free": 8_000_000,
                "memory_free": 64_000_000_000_i64, "storage_free": 1_000_000});
            async move {
                client
                    .send_json::<IgnoredAny>(Method::PUT, url, &body, None)
                    .await
                    .map(drop)
                    .map_err(|e| anyhow::anyhow!("bench metrics: {e}"))
            }
        };
        // Simulated centers report their own monitoring.
        let metrics = (!sim).then_some(metrics);
        [Some(futures::future::Either::Left(image)), metrics.map(futures::future::Either::Right)].into_iter().flatten()
    });
    futures::stream::iter(rest)
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<()>>()?;
    Ok(Target { image: format!("bench-img-{}", ids[0]), spec: "bench-gpu".into() })
}

/// The part of an A.1 answer the bench reads: did every task get its centers?
#[derive(serde::Deserialize)]
struct Placement {
    #[serde(rename = "taskInfos")]
    task_infos: Vec<PlacedTask>,
}

#[derive(serde::Deserialize)]
struct PlacedTask {
    #[serde(rename = "centerIDs")]
    center_ids: Vec<IgnoredAny>,
}

/// One prepared submission: its body and its key.
struct Submission {
    body: Bytes,
    key: String,
}

/// What one phase produced.
struct Tally {
    /// Latency of successful submissions, in microseconds.
    latency_us: Histogram<u64>,
    succeeded: u64,
    /// Successful submissions answered with every task placed.
    placed: u64,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Tally {
        let latency_us = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds");
        Tally { latency_us, succeeded: 0, placed: 0, errors: BTreeMap::new() }
    }

    fn merge(&mut self, other: Tally) {
        self.latency_us.add(&other.latency_us).expect("histograms share their bounds");
        self.succeeded += other.succeeded;
        self.placed += other.placed;
        for (code, count) in other.errors {
            *self.errors.entry(code).or_default() += count;
        }
    }

    fn failed(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The figures of a run, as printed (`--output json` prints this object).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    command: String,
    clients: u32,
    jobs: u64,
    warmup: u64,
    succeeded: u64,
    /// Answered with every task placed (the A.1 wait saw the placement).
    placed: u64,
    failed: u64,
    errors: BTreeMap<String, u64>,
    elapsed_seconds: f64,
    submissions_per_second: f64,
    placed_per_second: f64,
    latency_ms: Latency,
    /// With `--centers`: submission to placement (and with `--sim`, to dispatch), from the
    /// jobs' replicated timestamps.
    stamps: Vec<stamps::Figures>,
}

#[derive(Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl Latency {
    /// Percentiles in ms of a histogram in µs.
    fn of(histogram: &Histogram<u64>) -> Latency {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Latency {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
        }
    }
}

/// Runs a benchmark and prints its report; fails if any measured submission failed.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let submit = match args.workload {
        Workload::Submit(submit) => submit,
        Workload::Failover(failover) => return failover::run(failover, args.client.output).await,
        Workload::Etcd(etcd) => return etcd::run(etcd, args.client.output).await,
    };
    let client = Client::new(&args.client.server, submit.clients as usize, 1)?;
    let url = client.url(&["trainjob"], &[]);
    let target = match submit.centers {
        Some(count) => setup_centers(&client, count, submit.sim).await?,
        None => Target::demo(),
    };
    let tag = run_tag();
    let submissions: Arc<[Submission]> = prepare(submit.warmup, submit.jobs, &target, tag).into();
    let warmup_end = submit.warmup as usize;

    let warmup = phase(&client, &url, &submissions, 0..warmup_end, submit.clients, submit.rate).await;
    if warmup.failed() > 0 {
        eprintln!(
            "warning: {} of {} warmup submissions failed: {}",
            warmup.failed(),
            submit.warmup,
            summary(&warmup.errors)
        );
    }
    let started = Instant::now();
    let measured = phase(&client, &url, &submissions, warmup_end..submissions.len(), submit.clients, submit.rate).await;
    let elapsed = started.elapsed();

    let mut report = report(&args.client.server, &submit, &measured, elapsed);
    if submit.centers.is_some() {
        let milestones: &[Milestone] =
            if submit.sim { &[Milestone::Placed, Milestone::Dispatched] } else { &[Milestone::Placed] };
        for &milestone in milestones {
            report.stamps.push(stamps::measure(&client, &measured_user(tag), measured.succeeded, milestone).await?);
        }
    }
    super::show(args.client.output, &report, render)?;
    if report.failed > 0 {
        anyhow::bail!("{} of {} submissions failed", report.failed, report.jobs);
    }
    Ok(())
}

/// A short random tag that keeps job names and users of different runs apart (and within
/// A.1's 32 characters).
fn run_tag() -> u32 {
    std::collections::hash_map::RandomState::new().hash_one(client::unique_key("bench")) as u32
}

/// The user the measured jobs of run `tag` are submitted as (warmup jobs use another).
fn measured_user(tag: u32) -> String {
    format!("bench-{tag:08x}")
}

/// Serializes every body and key up front, so the clients only send bytes.
fn prepare(warmup: u64, jobs: u64, target: &Target, tag: u32) -> Vec<Submission> {
    let run_key = client::unique_key("bench");
    (0..warmup + jobs)
        .map(|i| {
            let user = if i < warmup { format!("bench-w{tag:08x}") } else { measured_user(tag) };
            let job = CreateTrainJob {
                name: format!("bench-{tag:08x}-{i}"),
                tasks: vec![CreateTask {
                    name: "train".into(),
                    command: "python train.py --epochs 1".into(),
                    image_id: target.image.clone(),
                    resource_spec_id: target.spec.clone(),
                    replica_number: 1,
                    ..Default::default()
                }],
                user_name: Some(user),
                ..Default::default()
            };
            let body = Bytes::from(serde_json::to_vec(&job).expect("API types serialize to JSON"));
            Submission { body, key: format!("{run_key}-{i}") }
        })
        .collect()
}

/// Submits `submissions[range]` from `clients` concurrent tasks, each taking the next
/// unsent submission until none is left; with a `rate`, submission `i` waits for its slot
/// `i / rate` seconds after the phase starts.
async fn phase(
    client: &Client,
    url: &Url,
    submissions: &Arc<[Submission]>,
    range: std::ops::Range<usize>,
    clients: u32,
    rate: Option<f64>,
) -> Tally {
    let next = Arc::new(AtomicUsize::new(range.start));
    let start = tokio::time::Instant::now();
    let first = range.start;
    let tasks: Vec<_> = (0..clients)
        .map(|n| {
            let client = client.starting_at(n as usize);
            let (url, submissions, next) = (url.clone(), submissions.clone(), next.clone());
            let end = range.end;
            tokio::spawn(async move {
                let mut tally = Tally::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        break;
                    }
                    if let Some(rate) = rate.filter(|r| *r > 0.0) {
                        tokio::time::sleep_until(start + Duration::from_secs_f64((i - first) as f64 / rate)).await;
                    }
                    let submission = &submissions[i];
                    let sent = Instant::now();
                    let body = Some(submission.body.clone());
                    match client.call::<Placement>(Method::POST, url.clone(), body, Some(&submission.key)).await {
                        Ok(placement) => {
                            let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                            tally.latency_us.saturating_record(micros.max(1));
                            tally.succeeded += 1;
                            if placement.task_infos.iter().all(|t| !t.center_ids.is_empty()) {
                                tally.placed += 1;
                            }
                        }
                        Err(err) => *tally.errors.entry(err.code().to_string()).or_default() += 1,
                    }
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::new();
    for task in futures::future::join_all(tasks).await {
        total.merge(task.expect("bench client task panicked"));
    }
    total
}

fn report(server: &str, submit: &SubmitArgs, tally: &Tally, elapsed: Duration) -> Report {
    let seconds = elapsed.as_secs_f64();
    let mut command = format!(
        "jcs bench submit --server {server} --clients {} --jobs {} --warmup {}",
        submit.clients, submit.jobs, submit.warmup
    );
    if let Some(centers) = submit.centers {
        command.push_str(&format!(" --centers {centers}"));
    }
    if let Some(rate) = submit.rate {
        command.push_str(&format!(" --rate {rate}"));
    }
    if submit.sim {
        command.push_str(" --sim");
    }
    let per_second = |n: u64| if seconds > 0.0 { n as f64 / seconds } else { 0.0 };
    Report {
        command,
        clients: submit.clients,
        jobs: submit.jobs,
        warmup: submit.warmup,
        succeeded: tally.succeeded,
        placed: tally.placed,
        failed: tally.failed(),
        errors: tally.errors.clone(),
        elapsed_seconds: seconds,
        submissions_per_second: per_second(tally.succeeded),
        placed_per_second: per_second(tally.placed),
        stamps: Vec::new(),
        latency_ms: Latency::of(&tally.latency_us),
    }
}

fn summary(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "none".into();
    }
    errors.iter().map(|(code, count)| format!("{code} {count}")).collect::<Vec<_>>().join(", ")
}

fn render(r: &Report) -> String {
    let l = &r.latency_ms;
    [
        format!(
            "submitted {} jobs from {} clients in {:.3} s (after {} warmup)",
            r.jobs, r.clients, r.elapsed_seconds, r.warmup
        ),
        format!("submissions/s: {:.1} (durable: each acknowledged after its Raft commit)", r.submissions_per_second),
        format!("placed/s: {:.1} ({} of {} answered with their centers)", r.placed_per_second, r.placed, r.succeeded),
        format!("latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}", l.p50, l.p90, l.p99, l.max),
        format!("errors: {} of {} ({})", r.failed, r.jobs, summary(&r.errors)),
    ]
    .into_iter()
    .chain(r.stamps.iter().map(stamps::render))
    .chain([format!("reproduce: {}", r.command)])
    .collect::<Vec<_>>()
    .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepared_jobs_are_valid_unique_and_keyed() {
        let submissions = prepare(1, 2, &Target::demo(), 7);
        let mut names = std::collections::BTreeSet::new();
        for s in &submissions {
            let job: CreateTrainJob = serde_json::from_slice(&s.body).unwrap();
            job.validate().unwrap();
            assert!(names.insert(job.name));
        }
        assert_ne!(submissions[0].key, submissions[1].key);
    }

    #[test]
    fn the_report_names_every_figure() {
        let mut tally = Tally::new();
        tally.latency_us.record(1500).unwrap();
        tally.succeeded = 1;
        tally.errors.insert("TIMEOUT".into(), 2);
        let submit = SubmitArgs { clients: 4, jobs: 3, warmup: 0, centers: Some(10), rate: Some(50.0), sim: true };
        let text = render(&report("http://h:1", &submit, &tally, Duration::from_secs(1)));
        for expected in [
            "submissions/s: 1.0",
            "p50 1.50",
            "errors: 2 of 3 (TIMEOUT 2)",
            "--jobs 3 --warmup 0 --centers 10 --rate 50 --sim",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }
}

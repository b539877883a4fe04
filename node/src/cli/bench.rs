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
//! Jobs use the demo catalog (`jcs serve --demo`): image `pytorch-hunan-univ`, spec `gpu-1x`,
//! one replica; each has a unique name and its own `Idempotency-Key`.

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
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Tally {
        let latency_us = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds");
        Tally { latency_us, succeeded: 0, errors: BTreeMap::new() }
    }

    fn merge(&mut self, other: Tally) {
        self.latency_us.add(&other.latency_us).expect("histograms share their bounds");
        self.succeeded += other.succeeded;
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
    failed: u64,
    errors: BTreeMap<String, u64>,
    elapsed_seconds: f64,
    submissions_per_second: f64,
    latency_ms: Latency,
}

#[derive(Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

/// Runs a benchmark and prints its report; fails if any measured submission failed.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let Workload::Submit(submit) = args.workload;
    let client = Client::new(&args.client.server, submit.clients as usize, 1)?;
    let url = client.url(&["trainjob"], &[]);
    let submissions: Arc<[Submission]> = prepare(submit.warmup + submit.jobs).into();
    let warmup_end = submit.warmup as usize;

    let warmup = phase(&client, &url, &submissions, 0..warmup_end, submit.clients).await;
    if warmup.failed() > 0 {
        eprintln!(
            "warning: {} of {} warmup submissions failed: {}",
            warmup.failed(),
            submit.warmup,
            summary(&warmup.errors)
        );
    }
    let started = Instant::now();
    let measured = phase(&client, &url, &submissions, warmup_end..submissions.len(), submit.clients).await;
    let elapsed = started.elapsed();

    let report = report(&args.client.server, &submit, &measured, elapsed);
    super::show(args.client.output, &report, render)?;
    if report.failed > 0 {
        anyhow::bail!("{} of {} submissions failed", report.failed, report.jobs);
    }
    Ok(())
}

/// Serializes every body and key up front, so the clients only send bytes.
fn prepare(count: u64) -> Vec<Submission> {
    let run_key = client::unique_key("bench");
    // A short random tag keeps job names of different runs apart and within A.1's 32 characters.
    let tag = std::collections::hash_map::RandomState::new().hash_one(&run_key) as u32;
    (0..count)
        .map(|i| {
            let job = CreateTrainJob {
                name: format!("bench-{tag:08x}-{i}"),
                tasks: vec![CreateTask {
                    name: "train".into(),
                    command: "python train.py --epochs 1".into(),
                    image_id: "pytorch-hunan-univ".into(),
                    resource_spec_id: "gpu-1x".into(),
                    replica_number: 1,
                    ..Default::default()
                }],
                user_name: Some("bench".into()),
                ..Default::default()
            };
            let body = Bytes::from(serde_json::to_vec(&job).expect("API types serialize to JSON"));
            Submission { body, key: format!("{run_key}-{i}") }
        })
        .collect()
}

/// Submits `submissions[range]` from `clients` concurrent tasks, each taking the next
/// unsent submission until none is left.
async fn phase(
    client: &Client,
    url: &Url,
    submissions: &Arc<[Submission]>,
    range: std::ops::Range<usize>,
    clients: u32,
) -> Tally {
    let next = Arc::new(AtomicUsize::new(range.start));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, url, submissions, next) = (client.clone(), url.clone(), submissions.clone(), next.clone());
            let end = range.end;
            tokio::spawn(async move {
                let mut tally = Tally::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        break;
                    }
                    let submission = &submissions[i];
                    let sent = Instant::now();
                    let body = Some(submission.body.clone());
                    match client.call::<IgnoredAny>(Method::POST, url.clone(), body, Some(&submission.key)).await {
                        Ok(_) => {
                            let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                            tally.latency_us.saturating_record(micros.max(1));
                            tally.succeeded += 1;
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
    let ms = |micros: u64| micros as f64 / 1000.0;
    let seconds = elapsed.as_secs_f64();
    Report {
        command: format!(
            "jcs bench submit --server {server} --clients {} --jobs {} --warmup {}",
            submit.clients, submit.jobs, submit.warmup
        ),
        clients: submit.clients,
        jobs: submit.jobs,
        warmup: submit.warmup,
        succeeded: tally.succeeded,
        failed: tally.failed(),
        errors: tally.errors.clone(),
        elapsed_seconds: seconds,
        submissions_per_second: if seconds > 0.0 { tally.succeeded as f64 / seconds } else { 0.0 },
        latency_ms: Latency {
            p50: ms(tally.latency_us.value_at_quantile(0.50)),
            p90: ms(tally.latency_us.value_at_quantile(0.90)),
            p99: ms(tally.latency_us.value_at_quantile(0.99)),
            max: ms(tally.latency_us.max()),
        },
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
        format!("latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}", l.p50, l.p90, l.p99, l.max),
        format!("errors: {} of {} ({})", r.failed, r.jobs, summary(&r.errors)),
        format!("reproduce: {}", r.command),
    ]
    .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepared_jobs_are_valid_unique_and_keyed() {
        let submissions = prepare(3);
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
        let submit = SubmitArgs { clients: 4, jobs: 3, warmup: 0 };
        let text = render(&report("http://h:1", &submit, &tally, Duration::from_secs(1)));
        for expected in
            ["submissions/s: 1.0", "p50 1.50", "errors: 2 of 3 (TIMEOUT 2)", "--clients 4 --jobs 3 --warmup 0"]
        {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }
}

//! `jcs bench etcd`: the same closed-loop load as `jcs bench submit` — N clients, each sending
//! its next write when the last is acknowledged, spread over the members — against an etcd
//! cluster's HTTP/JSON gateway (`POST /v3/kv/put`), so that jcs's durable submissions/s can be
//! set beside a 3-member etcd on the same machine. Each put carries a value the size of a jcs
//! A.1 body; etcd acknowledges a put once a majority has it in its WAL, as jcs does a job.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use clap::Args;
use serde::Serialize;

use super::{Latency, Tally};

#[derive(Args)]
pub struct EtcdArgs {
    /// The etcd members' client URLs, comma-separated.
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    endpoints: String,
    /// Concurrent clients, spread over the members.
    #[arg(long, default_value_t = 64)]
    clients: u32,
    /// Puts to send, over all clients.
    #[arg(long, default_value_t = 20_000)]
    puts: u64,
    /// Bytes per value (a jcs A.1 body is about 300).
    #[arg(long, default_value_t = 300)]
    value_bytes: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    command: String,
    puts: u64,
    succeeded: u64,
    failed: u64,
    elapsed_seconds: f64,
    puts_per_second: f64,
    latency_ms: Latency,
}

pub async fn run(args: EtcdArgs, output: crate::cli::Output) -> anyhow::Result<()> {
    let endpoints: Vec<String> =
        args.endpoints.split(',').map(|e| e.trim().trim_end_matches('/').to_string()).collect();
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.clients as usize).build()?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let value = b64.encode(vec![b'x'; args.value_bytes]);
    let bodies: Arc<[String]> = (0..args.puts)
        .map(|i| serde_json::json!({"key": b64.encode(format!("bench/{i:012}")), "value": value}).to_string())
        .collect();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.clients as usize)
        .map(|n| {
            let (http, bodies, next) = (http.clone(), bodies.clone(), next.clone());
            let url = format!("{}/v3/kv/put", endpoints[n % endpoints.len()]);
            tokio::spawn(async move {
                let mut tally = Tally::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= bodies.len() {
                        return tally;
                    }
                    let sent = Instant::now();
                    let answer = match http.post(&url).body(bodies[i].clone()).send().await {
                        Ok(response) => {
                            let status = response.status();
                            response.bytes().await.map(|_| status)
                        }
                        Err(e) => Err(e),
                    };
                    match answer {
                        Ok(status) if status.is_success() => {
                            tally.latency_us.saturating_record(sent.elapsed().as_micros().max(1) as u64);
                            tally.succeeded += 1;
                        }
                        Ok(status) => *tally.errors.entry(status.to_string()).or_default() += 1,
                        Err(_) => *tally.errors.entry("TRANSPORT".into()).or_default() += 1,
                    }
                }
            })
        })
        .collect();
    let mut total = Tally::new();
    for task in futures::future::join_all(tasks).await {
        total.merge(task?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let report = Report {
        command: format!(
            "jcs bench etcd --endpoints {} --clients {} --puts {} --value-bytes {}",
            args.endpoints, args.clients, args.puts, args.value_bytes
        ),
        puts: args.puts,
        succeeded: total.succeeded,
        failed: total.failed(),
        elapsed_seconds: elapsed,
        puts_per_second: total.succeeded as f64 / elapsed.max(f64::EPSILON),
        latency_ms: Latency::of(&total.latency_us),
    };
    crate::cli::show(output, &report, |r| {
        let l = &r.latency_ms;
        format!(
            "etcd: {} puts from {} clients in {:.3} s\nputs/s: {:.1} (durable: each acknowledged after a majority has it)\nlatency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}\nerrors: {} of {}\nreproduce: {}",
            r.puts, args.clients, r.elapsed_seconds, r.puts_per_second, l.p50, l.p90, l.p99, l.max, r.failed, r.puts, r.command
        )
    })?;
    anyhow::ensure!(report.failed == 0, "{} of {} puts failed", report.failed, report.puts);
    Ok(())
}

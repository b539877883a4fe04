//! `jcs bench failover`: starts a local cluster (`jcs up`'s way: real processes on loopback),
//! keeps clients submitting jobs through every node, and takes the leader out again and again,
//! in each of three ways (`--faults`):
//! * **kill** — SIGKILL; the node is restarted on its data dir afterwards;
//! * **pause** — SIGSTOP, as a long GC pause, a frozen VM or a swapped-out process would; it is
//!   resumed (SIGCONT) afterwards and finds itself deposed;
//! * **cut** — its peer traffic dropped both ways (the nodes run with `--fault-injection`,
//!   `POST /admin/fault`); healed afterwards. It still answers its own clients meanwhile.
//!
//! Each round measures, from the fault:
//! * **elected** — until a surviving node names a new leader (polled every 5 ms);
//! * **first commit** — until a write through a survivor is acknowledged (a monitoring report
//!   for a passive center, sent every 5 ms; acknowledged = committed on a majority);
//! * **scheduling resumed** — until a job submitted after the fault is placed, by the job's
//!   replicated `placedAt` (the new leader's clock; same machine).
//!
//! The node is brought back and caught up (it has applied what the others had when it came
//! back) before the next round. Reported per fault: p50/p99/max of each, and the load's
//! acknowledged submissions and errors.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use reqwest::Method;
use serde::de::IgnoredAny;
use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::client::Client;
use crate::cli::up::{stop_all, wait_ready, LocalCluster, Member};

/// How a round takes the leader out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// SIGKILL, then a restart on the data dir.
    Kill,
    /// SIGSTOP, then SIGCONT.
    Pause,
    /// Peer traffic cut both ways, then healed.
    Cut,
}

impl Fault {
    fn describe(self) -> &'static str {
        match self {
            Fault::Kill => "leader kills (SIGKILL)",
            Fault::Pause => "leader pauses (SIGSTOP)",
            Fault::Cut => "leader cuts (peer traffic dropped)",
        }
    }
}

#[derive(Args)]
pub struct FailoverArgs {
    /// Rounds of each fault.
    #[arg(long, default_value_t = 20)]
    rounds: u32,
    /// The faults to run, each for `--rounds` rounds.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Fault::Kill, Fault::Pause, Fault::Cut])]
    faults: Vec<Fault>,
    /// Cluster size.
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Concurrent clients submitting jobs throughout.
    #[arg(long, default_value_t = 16)]
    clients: u32,
    /// Keep the nodes' data and logs here (default: a temporary directory, removed after).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Extra `jcs serve` flags for every node (e.g. `--serve-arg=--election-timeout-min-ms=300`).
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    serve_args: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Figures {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FaultFigures {
    fault: Fault,
    elected: Figures,
    first_commit: Figures,
    scheduling_resumed: Figures,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    command: String,
    rounds: u32,
    faults: Vec<FaultFigures>,
    load_acknowledged: u64,
    load_errors: u64,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The center, spec and image the load and the probes use: a passive center (monitoring written
/// by the probe) and a big simulated one (jobs run there for a second).
async fn catalog(client: &Client) -> anyhow::Result<()> {
    let posts = [
        ("centers", json!({"ai_center_id": "probe", "name": "probe", "region": "r", "status": 1})),
        (
            "centers",
            json!({"ai_center_id": "big", "name": "big", "region": "r", "status": 1,
            "adapter": {"kind": "sim", "config": {"latency_ms": 1, "default_duration_secs": 3600,
                "capacity": {"cpu": "10000000", "memory": "10000000Gi"}}}}),
        ),
        (
            "resourcespecs",
            json!({"resource_spec_id": "one", "resource_spec_name": "one", "price": 1,
            "resource_quantity": {"cpu": "1", "memory": "1Gi"}, "computing_center_list": "big"}),
        ),
        ("images", json!({"image_id": "img", "name": "img", "ai_center_id": "big", "resource_spec": "one"})),
    ];
    for (path, body) in posts {
        client.send_json::<IgnoredAny>(Method::POST, client.url(&[path], &[]), &body, None).await?;
    }
    Ok(())
}

fn job(name: String) -> Value {
    json!({"name": name, "tasks": [{"name": "t", "command": "train", "imageId": "img", "resourceSpecId": "one",
        "replicaNumber": 1}]})
}

/// Submits jobs from `clients` tasks until `stop`; counts acknowledgements and errors.
fn start_load(client: &Client, clients: u32, stop: Arc<AtomicBool>, acked: Arc<AtomicU64>, errors: Arc<AtomicU64>) {
    for n in 0..clients {
        let client = client.starting_at(n as usize);
        let (stop, acked, errors) = (stop.clone(), acked.clone(), errors.clone());
        tokio::spawn(async move {
            let url = client.url(&["trainjob"], &[]);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = crate::cli::client::unique_key("failover");
                let body = job(format!("load-{n}-{i}"));
                match client.send_json::<IgnoredAny>(Method::POST, url.clone(), &body, Some(&key)).await {
                    Ok(_) => acked.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
                i += 1;
            }
        });
    }
}

/// Polls `probe` every 5 ms until it yields; the time since `from`.
async fn until<F, Fut, T>(from: Instant, mut probe: F) -> (Duration, T)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    loop {
        if let Some(value) = probe().await {
            return (from.elapsed(), value);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends the member a signal (SIGSTOP, SIGCONT).
fn signal(member: &Member, signal: libc::c_int) -> anyhow::Result<()> {
    let pid = member.child.id().context("the member has exited")?;
    // SAFETY: kill(2) has no memory-safety preconditions.
    anyhow::ensure!(unsafe { libc::kill(pid as i32, signal) } == 0, "kill({pid}, {signal}) failed");
    Ok(())
}

/// Cuts the member off from its peers, or heals it.
async fn isolate(member: &Member, isolated: bool) -> anyhow::Result<()> {
    let client = Client::new(&format!("http://{}", member.http), 1, 3)?;
    let url = client.path_url(&["admin", "fault"], &[]);
    client.send_json::<IgnoredAny>(Method::POST, url, &json!({ "isolated": isolated }), None).await?;
    Ok(())
}

/// One round: take the leader out by `fault`, measure, bring it back, wait until it has caught
/// up.
async fn round(
    local: &LocalCluster,
    members: &mut [Member],
    ports: &[(u16, u16)],
    fault: Fault,
    round: u32,
) -> anyhow::Result<(Duration, Duration, Duration)> {
    let all: Vec<String> = members.iter().map(|m| format!("http://{}", m.http)).collect();
    let status = wait_ready(&all.join(",")).await?;
    let leader = status.leader.context("no leader")? as u16;
    let survivors: Vec<String> =
        members.iter().filter(|m| m.id != leader).map(|m| format!("http://{}", m.http)).collect();
    let probe = Client::with_timeout(&survivors.join(","), 4, 1, Duration::from_millis(500))?;
    let victim = members.iter_mut().find(|m| m.id == leader).context("the leader is a member")?;
    let killed_at_ms = now_ms();
    let killed = Instant::now();
    match fault {
        Fault::Kill => {
            victim.child.start_kill()?;
            victim.child.wait().await?;
        }
        Fault::Pause => signal(victim, libc::SIGSTOP)?,
        Fault::Cut => isolate(victim, true).await?,
    }

    let elected = until(killed, || async {
        let ready: Option<Value> = probe.get(probe.path_url(&["readyz"], &[])).await.ok();
        let new = ready.and_then(|r| r["leader"].as_u64()).filter(|l| *l != u64::from(leader));
        probe.rotate();
        new
    });
    let committed = until(killed, || async {
        let report = json!({"running_task_num": round, "cpu_free": 1});
        let url = probe.url(&["centers", "probe", "metrics"], &[]);
        let ok = probe.send_json::<IgnoredAny>(Method::PUT, url, &report, None).await.is_ok();
        probe.rotate();
        ok.then_some(())
    });
    let scheduled = async {
        let (_, id) = until(killed, || async {
            let key = crate::cli::client::unique_key("probe");
            let created: Option<Value> = probe
                .send_json(Method::POST, probe.url(&["trainjob"], &[]), &job(format!("probe-{round}")), Some(&key))
                .await
                .ok();
            probe.rotate();
            created.and_then(|c| c["jobId"].as_str().map(String::from))
        })
        .await;
        let (_, placed_at) = until(killed, || async {
            let info: Option<Value> = probe.get(probe.url(&["trainjob", &id], &[])).await.ok();
            info.and_then(|j| j["placedAt"].as_i64()).filter(|at| *at > 0)
        })
        .await;
        Duration::from_millis((placed_at - killed_at_ms).max(0) as u64)
    };
    let ((elected, _), (committed, ()), scheduled) = tokio::join!(elected, committed, scheduled);

    let index = members.iter().position(|m| m.id == leader).expect("found above");
    match fault {
        Fault::Kill => {
            let (http, raft) = ports[index];
            members[index] = local.spawn(leader, http, raft)?;
        }
        Fault::Pause => signal(&members[index], libc::SIGCONT)?,
        Fault::Cut => isolate(&members[index], false).await?,
    }
    wait_ready(&all.join(",")).await?;
    caught_up(&all.join(","), leader).await?;
    Ok((elected, committed, scheduled))
}

/// Waits until the restarted node has applied everything the cluster had applied when it came
/// back: one still replaying would lose the next election to its own stale log, which is not
/// what a failover under load measures.
async fn caught_up(servers: &str, restarted: u16) -> anyhow::Result<()> {
    let client = Client::new(servers, 1, 3)?;
    let applied = |status: &crate::cluster::status::ClusterStatus, node: Option<u16>| {
        status
            .members
            .iter()
            .filter(|m| node.is_none_or(|n| m.node_id == u64::from(n)))
            .filter_map(|m| m.status.as_ref().map(|s| s.applied_index))
            .max()
            .unwrap_or(0)
    };
    let url = client.path_url(&["admin", "cluster"], &[]);
    let target = applied(&client.get(url.clone()).await?, None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while applied(&client.get(url.clone()).await?, Some(restarted)) < target {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "node {restarted} did not catch up in 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

pub async fn run(args: FailoverArgs, output: crate::cli::Output) -> anyhow::Result<()> {
    anyhow::ensure!((3..=9).contains(&args.nodes), "--nodes must be between 3 and 9");
    let dir =
        args.dir.clone().unwrap_or_else(|| std::env::temp_dir().join(crate::cli::client::unique_key("jcs-failover")));
    let ports: Vec<(u16, u16)> =
        (0..args.nodes).map(|_| Ok((free_port()?, free_port()?))).collect::<anyhow::Result<_>>()?;
    let local = LocalCluster {
        exe: std::env::current_exe().context("cannot find the jcs binary")?,
        dir: dir.clone(),
        initial: ports
            .iter()
            .enumerate()
            .map(|(i, (_, raft))| format!("{}=127.0.0.1:{raft}", i + 1))
            .collect::<Vec<_>>()
            .join(","),
        // The cut is the fault switch's (`POST /admin/fault`).
        flags: std::iter::once("--fault-injection".to_string()).chain(args.serve_args.iter().cloned()).collect(),
    };
    let mut members = Vec::new();
    for (i, (http, raft)) in ports.iter().enumerate() {
        members.push(local.spawn(i as u16 + 1, *http, *raft)?);
    }
    let servers: Vec<String> = members.iter().map(|m| format!("http://{}", m.http)).collect();
    let outcome = async {
        wait_ready(&servers.join(",")).await?;
        let client = Client::new(&servers.join(","), args.clients as usize, 20)?;
        catalog(&client).await?;
        let (stop, acked, errors) = (Arc::new(AtomicBool::new(false)), Arc::default(), Arc::default());
        start_load(&client, args.clients, stop.clone(), Arc::clone(&acked), Arc::clone(&errors));
        let mut faults = Vec::new();
        for &fault in &args.faults {
            let mut figures = [histogram(), histogram(), histogram()];
            for n in 0..args.rounds {
                let (elected, committed, scheduled) = round(&local, &mut members, &ports, fault, n).await?;
                for (histogram, took) in figures.iter_mut().zip([elected, committed, scheduled]) {
                    histogram.saturating_record(took.as_micros().max(1) as u64);
                }
                eprintln!(
                    "{fault:?} round {}: elected {:.0} ms, first commit {:.0} ms, scheduling resumed {:.0} ms",
                    n + 1,
                    elected.as_secs_f64() * 1e3,
                    committed.as_secs_f64() * 1e3,
                    scheduled.as_secs_f64() * 1e3
                );
            }
            let [elected, first_commit, scheduling_resumed] = figures.map(|h| summarize(&h));
            faults.push(FaultFigures { fault, elected, first_commit, scheduling_resumed });
        }
        stop.store(true, Ordering::Relaxed);
        let names: Vec<String> = args.faults.iter().map(|f| format!("{f:?}").to_lowercase()).collect();
        let mut command = format!(
            "jcs bench failover --rounds {} --faults {} --nodes {} --clients {}",
            args.rounds,
            names.join(","),
            args.nodes,
            args.clients
        );
        for flag in &args.serve_args {
            command.push_str(&format!(" --serve-arg={flag}"));
        }
        anyhow::Ok(Report {
            command,
            rounds: args.rounds,
            faults,
            load_acknowledged: acked.load(Ordering::Relaxed),
            load_errors: errors.load(Ordering::Relaxed),
        })
    }
    .await;
    stop_all(&mut members).await;
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    crate::cli::show(output, &outcome?, render)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn summarize(h: &Histogram<u64>) -> Figures {
    let ms = |us: u64| us as f64 / 1000.0;
    Figures { p50_ms: ms(h.value_at_quantile(0.5)), p99_ms: ms(h.value_at_quantile(0.99)), max_ms: ms(h.max()) }
}

fn render(r: &Report) -> String {
    let line = |what: &str, f: &Figures| {
        format!("{what:<26} p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms", f.p50_ms, f.p99_ms, f.max_ms)
    };
    let mut lines = Vec::new();
    for fault in &r.faults {
        lines.push(format!("{} {} under load", r.rounds, fault.fault.describe()));
        lines.push(line("fault → new leader", &fault.elected));
        lines.push(line("fault → first commit", &fault.first_commit));
        lines.push(line("fault → scheduling resumed", &fault.scheduling_resumed));
    }
    lines.push(format!(
        "load: {} submissions acknowledged, {} failed after retries",
        r.load_acknowledged, r.load_errors
    ));
    lines.push(format!("reproduce: {}", r.command));
    lines.join("\n")
}

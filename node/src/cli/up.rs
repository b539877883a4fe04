//! `jcs up`: a whole cluster on this machine in one command — N `jcs serve` processes on
//! loopback ports, data under one directory, the demo catalog loaded once — for trying jcs and
//! for the chaos tests' by-hand cousins. Prints the endpoints and the leader, and on Ctrl-C
//! stops every node (SIGTERM, then waits).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::process::{Child, Command};

use super::client::Client;
use crate::cluster::status::ClusterStatus;

/// `jcs up`.
#[derive(Args)]
pub struct UpArgs {
    /// How many nodes (voters).
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// Directory holding every node's data (`node-N/`) and log (`node-N/jcs.log`). Started
    /// again on the same directory, the cluster resumes with everything it held.
    #[arg(long, default_value = "jcs-up")]
    pub dir: PathBuf,
    /// REST port of node 1; node N listens on this + N - 1.
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// Peer (Raft gRPC) port of node 1; node N listens on this + N - 1.
    #[arg(long, default_value_t = 9080)]
    pub raft_port: u16,
    /// Leave out the demo catalog.
    #[arg(long)]
    pub no_demo: bool,
    /// Make the demo's Hangzhou HPC center B the Slurm cluster that `deploy/slurm/jcs-slurm
    /// start` described in ENV_FILE.
    #[arg(long, value_name = "ENV_FILE", num_args = 0..=1, default_missing_value = "/tmp/jcs-slurm/env")]
    pub demo_slurm: Option<PathBuf>,
    /// Extra `jcs serve` flags for every node (e.g. `--serve-arg=--poll-interval-ms=200`).
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    pub serve_args: Vec<String>,
}

pub(crate) struct Member {
    pub id: u16,
    /// REST address, `127.0.0.1:PORT`.
    pub http: String,
    pub child: Child,
}

/// What every node of a local cluster shares.
pub(crate) struct LocalCluster {
    pub exe: PathBuf,
    pub dir: PathBuf,
    /// `ID=PEER_ADDR,…` of the founding members.
    pub initial: String,
    /// Extra `jcs serve` flags for every node.
    pub flags: Vec<String>,
}

impl LocalCluster {
    /// Starts (or starts again, on its data dir) node `id`; its output goes to `node-ID/jcs.log`.
    pub fn spawn(&self, id: u16, http_port: u16, raft_port: u16) -> anyhow::Result<Member> {
        let dir = self.dir.join(format!("node-{id}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("jcs.log"))
            .context("cannot open the node's log")?;
        let http = format!("127.0.0.1:{http_port}");
        let child = Command::new(&self.exe)
            .args(["serve", "--node-id", &id.to_string(), "--http", &http])
            .args(["--raft", &format!("127.0.0.1:{raft_port}")])
            .arg("--data-dir")
            .arg(&dir)
            .args(["--initial-members", &self.initial])
            .args(&self.flags)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a node")?;
        Ok(Member { id, http, child })
    }
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    anyhow::ensure!((1..=9).contains(&args.nodes), "--nodes must be between 1 and 9");
    let mut flags = args.serve_args.clone();
    if !args.no_demo {
        flags.push("--demo".into());
        let shared = std::path::absolute(args.dir.join("centers")).context("cannot resolve --dir")?;
        flags.extend(["--demo-shared-dir".to_string(), shared.display().to_string()]);
        if let Some(env) = &args.demo_slurm {
            flags.extend(["--demo-slurm".to_string(), env.display().to_string()]);
        }
    }
    let ids = 1..=args.nodes;
    let local = LocalCluster {
        exe: std::env::current_exe().context("cannot find the jcs binary")?,
        dir: args.dir.clone(),
        initial: ids.clone().map(|i| format!("{i}=127.0.0.1:{}", args.raft_port + i - 1)).collect::<Vec<_>>().join(","),
        flags,
    };
    let mut members = Vec::new();
    for id in ids {
        members.push(local.spawn(id, args.http_port + id - 1, args.raft_port + id - 1)?);
    }
    let servers: Vec<String> = members.iter().map(|m| format!("http://{}", m.http)).collect();
    let all_servers = servers.join(",");
    let outcome = tokio::select! {
        ready = wait_ready(&all_servers) => ready,
        exited = first_exit(&mut members) => Err(exited),
    };
    match outcome {
        Ok(status) => {
            for member in &members {
                println!(
                    "node {}: http://{}   log {}",
                    member.id,
                    member.http,
                    args.dir.join(format!("node-{}/jcs.log", member.id)).display()
                );
            }
            let leader = status.leader.map_or("none yet".to_string(), |l| format!("node {l}"));
            println!("leader: {leader}, term {}", status.term);
            println!("try:    jcs cluster status --server {}", servers.join(","));
            println!("Ctrl-C stops the cluster");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                exited = first_exit(&mut members) => eprintln!("{exited:#}"),
            }
        }
        Err(e) => eprintln!("the cluster did not come up: {e:#}"),
    }
    stop_all(&mut members).await;
    Ok(())
}

/// Waits until every node is ready and they agree on a leader; returns the cluster's status.
pub(crate) async fn wait_ready(servers: &str) -> anyhow::Result<ClusterStatus> {
    let client = Client::new(servers, 1, 1)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(status) = client.get::<ClusterStatus>(client.path_url(&["admin", "cluster"], &[])).await {
            let all_up = status.members.iter().all(|m| m.status.as_ref().is_some_and(|s| s.leader.is_some()));
            if status.leader.is_some() && all_up {
                return Ok(status);
            }
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no leader after 60 s; see the nodes' logs");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Resolves when any node exits, with which one and how.
async fn first_exit(members: &mut [Member]) -> anyhow::Error {
    let waits = members.iter_mut().map(|m| {
        let id = m.id;
        Box::pin(async move { (id, m.child.wait().await) })
    });
    let ((id, status), _, _) = futures::future::select_all(waits).await;
    anyhow::anyhow!("node {id} exited: {status:?}; see its log")
}

pub(crate) async fn stop_all(members: &mut [Member]) {
    for member in members.iter() {
        if let Some(pid) = member.child.id() {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
    }
    for member in members.iter_mut() {
        let stopped = tokio::time::timeout(Duration::from_secs(15), member.child.wait()).await;
        if stopped.is_err() {
            let _ = member.child.kill().await;
        }
        println!("node {} stopped", member.id);
    }
}

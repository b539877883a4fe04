//! A cluster of real `jcs serve` processes on loopback for the multi-node tests: each node on
//! free ports with its own data dir under one temp dir, small Raft timeouts, the fault switch
//! on. Nodes can be SIGKILLed, stopped, restarted on their data dir, cut off and healed.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use super::eventually;

/// Ports handed to test nodes: below Linux's ephemeral range (32768 and up), so that no
/// outgoing connection of a test running beside this one takes a port between the moment it is
/// found free and the moment the node binds it (an OS-assigned port is from that range).
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A free loopback port for a node process to bind: the next in [`TEST_PORTS`] that binds now,
/// from a start that differs per test process.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let offset = (start + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) % span;
        let port = TEST_PORTS.start + offset as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {TEST_PORTS:?}");
}

pub struct ProcNode {
    pub id: u64,
    pub http: u16,
    pub raft: u16,
    pub data: PathBuf,
    child: Mutex<Option<Child>>,
}

impl ProcNode {
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    pub fn running(&self) -> bool {
        self.child.lock().unwrap().is_some()
    }

    fn take(&self) -> Option<Child> {
        self.child.lock().unwrap().take()
    }
}

pub struct ProcCluster {
    pub nodes: Vec<ProcNode>,
    pub client: reqwest::Client,
    initial: String,
    extra: Vec<String>,
    pub dir: tempfile::TempDir,
}

/// Flags every test node gets besides Raft's timing (`jcs_chaos::CLUSTER_TIMING_FLAGS`).
const TEST_FLAGS: &[&str] = &[
    "--poll-interval-ms",
    "100",
    "--placement-wait-ms",
    "500",
    // Cycles come from kicks (a job arrived, through any node) and from a new leader taking
    // over, not from the period: the tests see that both reach the leader.
    "--schedule-interval-ms",
    "30000",
    "--fault-injection",
    "--log",
    "warn",
];

impl ProcCluster {
    /// Starts `n` founding members (with the demo catalog, loaded by node 1) and waits until
    /// every node is ready. `extra` flags go to every node.
    pub async fn start(n: u64, extra: &[&str]) -> ProcCluster {
        let dir = tempfile::tempdir().unwrap();
        let nodes: Vec<ProcNode> = (1..=n)
            .map(|id| ProcNode {
                id,
                http: free_port(),
                raft: free_port(),
                data: dir.path().join(format!("node-{id}")),
                child: Mutex::new(None),
            })
            .collect();
        let initial = nodes.iter().map(|n| format!("{}=127.0.0.1:{}", n.id, n.raft)).collect::<Vec<_>>().join(",");
        let cluster = ProcCluster {
            nodes,
            client: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap(),
            initial,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir,
        };
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i, &["--demo", "--initial-members", &cluster.initial.clone()]);
        }
        for node in &cluster.nodes {
            cluster.wait_ready(node.id).await;
        }
        cluster
    }

    fn index(&self, id: u64) -> usize {
        self.nodes.iter().position(|n| n.id == id).expect("a node of this cluster")
    }

    pub fn node(&self, id: u64) -> &ProcNode {
        &self.nodes[self.index(id)]
    }

    pub fn base(&self, id: u64) -> String {
        self.node(id).base()
    }

    fn spawn(&self, i: usize, flags: &[&str]) {
        let node = &self.nodes[i];
        std::fs::create_dir_all(&node.data).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(node.data.join("jcs.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_jcs"))
            .args(["serve", "--node-id", &node.id.to_string()])
            .args(["--http", &format!("127.0.0.1:{}", node.http), "--raft", &format!("127.0.0.1:{}", node.raft)])
            .arg("--data-dir")
            .arg(&node.data)
            .args(jcs_chaos::CLUSTER_TIMING_FLAGS)
            .args(TEST_FLAGS)
            .args(&self.extra)
            .args(flags)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("jcs binary starts");
        *self.nodes[i].child.lock().unwrap() = Some(child);
    }

    /// Room for one more node (not started); returns its id.
    pub fn add_node(&mut self) -> u64 {
        let id = self.nodes.iter().map(|n| n.id).max().unwrap() + 1;
        self.nodes.push(ProcNode {
            id,
            http: free_port(),
            raft: free_port(),
            data: self.dir.path().join(format!("node-{id}")),
            child: Mutex::new(None),
        });
        id
    }

    /// Starts node `id` (from [`Self::add_node`]) on an empty data dir, joining through `seed`
    /// (or, with `None`, waiting to be added).
    pub fn join(&self, id: u64, seed: Option<u64>) {
        let seed_addr = seed.map_or("wait".to_string(), |seed| format!("127.0.0.1:{}", self.node(seed).raft));
        self.spawn(self.index(id), &["--join", &seed_addr]);
    }

    /// SIGKILL: no shutdown at all.
    pub fn kill(&self, id: u64) {
        if let Some(mut child) = self.node(id).take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&self, id: u64) {
        if let Some(mut child) = self.node(id).take() {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            child.wait().unwrap();
        }
    }

    /// SIGSTOP (`paused`) or SIGCONT: the process freezes as in a long GC pause or a frozen
    /// VM, its sockets open and silent.
    pub fn pause(&self, id: u64, paused: bool) {
        let child = self.node(id).child.lock().unwrap();
        let pid = child.as_ref().expect("node runs").id() as i32;
        let signal = if paused { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: kill(2) has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "signal {signal} to node {id}");
    }

    /// Starts a stopped node again on its data dir and waits until it is ready.
    pub async fn restart(&self, id: u64) {
        self.start_again(id);
        self.wait_ready(id).await;
    }

    /// Starts a stopped node again on its data dir.
    pub fn start_again(&self, id: u64) {
        let i = self.index(id);
        assert!(!self.nodes[i].running(), "node {id} still runs");
        self.spawn(i, &[]);
    }

    pub async fn wait_ready(&self, id: u64) {
        let url = format!("{}/readyz", self.base(id));
        eventually(&format!("node {id} ready"), || async {
            self.client.get(&url).send().await.is_ok_and(|r| r.status() == 200)
        })
        .await;
    }

    /// Sends a request to node `id`; `(status, envelope)`, or `(0, Null)` on a transport error.
    pub async fn call(&self, id: u64, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        jcs_chaos::call(&self.client, method, &format!("{}{path}", self.base(id)), body).await
    }

    pub async fn get(&self, id: u64, path: &str) -> (u16, Value) {
        self.call(id, "GET", path, None).await
    }

    /// `GET /admin/cluster` on node `id`.
    pub async fn status(&self, id: u64) -> Value {
        let (code, status) = self.get(id, "/admin/cluster").await;
        assert_eq!(code, 200, "{status}");
        status["data"].clone()
    }

    /// The leader that the running nodes agree on, once they do.
    pub async fn leader(&self) -> u64 {
        let agreed = std::cell::Cell::new(0);
        eventually("the running nodes agree on a running leader", || async {
            let mut seen = std::collections::BTreeSet::new();
            for node in self.nodes.iter().filter(|n| n.running()) {
                let (code, ready) = self.get(node.id, "/readyz").await;
                if code != 200 {
                    return false;
                }
                seen.insert(ready["data"]["leader"].as_u64().unwrap_or(0));
            }
            let leader = seen.iter().next().copied().unwrap_or(0);
            agreed.set(leader);
            seen.len() == 1 && self.nodes.iter().any(|n| n.id == leader && n.running())
        })
        .await;
        agreed.get()
    }

    /// Cuts node `id` off from its peers (or heals it).
    pub async fn isolate(&self, id: u64, isolated: bool) {
        let body = serde_json::json!({ "isolated": isolated });
        let (code, answer) = self.call(id, "POST", "/admin/fault", Some(&body)).await;
        assert_eq!(code, 200, "{answer}");
    }

    /// The running nodes other than `id`.
    pub fn others(&self, id: u64) -> Vec<u64> {
        self.nodes.iter().filter(|n| n.id != id && n.running()).map(|n| n.id).collect()
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            if let Some(mut child) = node.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

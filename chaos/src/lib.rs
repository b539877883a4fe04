//! The chaos harness: a jcs cluster of Docker containers, one `jcs serve` each, run from the
//! `jcs` binary Cargo built for this workspace. Every cluster gets two private networks:
//! * the **peer** network carries Raft and forwarding (`--raft` binds there) — cutting a node
//!   off it (`docker network disconnect`) is a real partition, packets simply stop;
//! * the **client** network carries the REST API the test drives, so a cut-off node can still
//!   be asked what it answers.
//!
//! Nodes are killed with `docker kill` (SIGKILL) and started again on their data with
//! `docker start`. The image is the binary and the shared libraries it links, nothing else
//! (`docker import`: the machine has no registry to pull a base image from).
//!
//! Without a Docker engine the tests print `SKIPPED` and pass, unless `JCS_REQUIRE_DOCKER` is
//! set (CI sets it), in which case they fail.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a condition may take to come true before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Raft's timing in every multi-node test (here and the node crate's loopback clusters):
/// small enough for tests, large enough for five nodes on a loaded 2-core machine.
pub const CLUSTER_TIMING_FLAGS: &[&str] = &[
    "--heartbeat-interval-ms",
    "50",
    "--election-timeout-min-ms",
    "400",
    "--election-timeout-max-ms",
    "800",
    "--owner-timeout-ms",
    "2400",
];

/// Flags every containerised node gets besides the timing: writes give up quickly so a
/// cut-off node answers within a test.
const NODE_FLAGS: &[&str] = &["--write-timeout-ms", "2000", "--placement-wait-ms", "0", "--log", "info"];

/// Runs a command; its stdout, or a panic that says what failed.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(out.status.success(), "{program} {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn docker(args: &[&str]) -> String {
    run("docker", args)
}

fn docker_ok(args: &[&str]) -> bool {
    Command::new("docker").args(args).output().is_ok_and(|out| out.status.success())
}

/// True when the test should return at once: no Docker engine here, and none required.
pub fn skip_without_docker(test: &str) -> bool {
    if docker_ok(&["info"]) {
        return false;
    }
    assert!(
        std::env::var_os("JCS_REQUIRE_DOCKER").is_none(),
        "{test}: JCS_REQUIRE_DOCKER is set but `docker info` fails"
    );
    eprintln!("SKIPPED {test}: needs a Docker engine (`docker info` fails)");
    true
}

fn random() -> u64 {
    RandomState::new().hash_one(Instant::now())
}

/// The `jcs` binary of this workspace (`JCS_BIN` overrides): `cargo nextest run --workspace`
/// builds it for the node crate's tests.
fn jcs_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("JCS_BIN") {
        return bin.into();
    }
    let target = option_env!("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/jcs");
    assert!(bin.exists(), "{} is missing: build it first (`cargo build --workspace --tests`)", bin.display());
    bin
}

/// The image for `binary`, imported once per build of it: `/jcs`, its shared libraries, an
/// empty `/data`.
fn image(binary: &Path) -> String {
    let meta = std::fs::metadata(binary).expect("the jcs binary");
    let modified = meta.modified().expect("mtime").duration_since(std::time::UNIX_EPOCH).expect("after 1970");
    let tag = format!("jcs-chaos:{:x}", modified.as_nanos() as u64 ^ meta.len());
    if docker_ok(&["image", "inspect", &tag]) {
        return tag;
    }
    let root = tempfile::tempdir().expect("a temp dir");
    let copy = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to.parent().expect("has a parent")).expect("mkdir");
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    };
    copy(binary, &root.path().join("jcs"));
    let libraries = run("ldd", &[binary.to_str().expect("utf-8 path")]);
    for library in libraries.split_whitespace().filter(|word| word.starts_with('/')) {
        copy(Path::new(library), &root.path().join(library.trim_start_matches('/')));
    }
    for dir in ["data", "tmp"] {
        std::fs::create_dir_all(root.path().join(dir)).expect("mkdir");
    }
    let tar = root.path().with_extension("tar");
    run("tar", &["-C", root.path().to_str().expect("utf-8"), "-cf", tar.to_str().expect("utf-8"), "."]);
    docker(&["import", tar.to_str().expect("utf-8"), &tag]);
    let _ = std::fs::remove_file(tar);
    // Images of earlier builds (one in use by another test is kept: docker refuses).
    for old in docker(&["images", "jcs-chaos", "--format", "{{.Repository}}:{{.Tag}}"]).lines() {
        if old != tag {
            let _ = Command::new("docker").args(["rmi", old]).output();
        }
    }
    tag
}

/// The label on every container and network a test process makes: its pid.
const OWNER_LABEL: &str = "jcs-chaos.pid";

fn owner_label() -> String {
    format!("{OWNER_LABEL}={}", std::process::id())
}

/// Removes the containers and networks of test processes that are gone (killed by a timeout
/// before their clean-up ran), so they do not load the machine under later tests.
fn remove_orphans() {
    let filter = format!("label={OWNER_LABEL}");
    let format = format!("{{{{.ID}}}} {{{{.Label \"{OWNER_LABEL}\"}}}}");
    let orphans = |listing: String| -> Vec<String> {
        listing
            .lines()
            .filter_map(|line| line.split_once(' '))
            .filter(|(_, pid)| !Path::new("/proc").join(pid).exists())
            .map(|(id, _)| id.to_string())
            .collect()
    };
    for id in orphans(docker(&["ps", "-a", "--filter", &filter, "--format", &format])) {
        let _ = Command::new("docker").args(["rm", "-f", &id]).output();
    }
    for id in orphans(docker(&["network", "ls", "--filter", &filter, "--format", &format])) {
        let _ = Command::new("docker").args(["network", "rm", &id]).output();
    }
}

/// A network with a subnet of its own, chosen at random among 10.160–249.x.0/24 (retried
/// when it overlaps another); returns its name and the subnet's first three octets.
fn network(name: &str) -> (String, String) {
    for _ in 0..20 {
        let draw = random();
        let prefix = format!("10.{}.{}", 160 + draw % 90, (draw >> 8) % 256);
        let subnet = format!("{prefix}.0/24");
        if docker_ok(&["network", "create", "--label", &owner_label(), "--subnet", &subnet, name]) {
            return (name.to_string(), prefix);
        }
    }
    panic!("no free subnet for network {name}");
}

/// One containerised node.
pub struct DockerNode {
    pub id: u64,
    pub region: String,
    pub container: String,
    pub peer_ip: String,
    pub client_ip: String,
}

/// A cluster of containerised nodes; removed (containers and networks) when dropped.
pub struct DockerCluster {
    pub nodes: Vec<DockerNode>,
    peer_net: String,
    client_net: String,
    client: reqwest::Client,
}

impl DockerCluster {
    /// Starts one node per `(region, count)` entry's count, all founding members, and waits
    /// until they agree on a leader.
    pub async fn start(regions: &[(&str, u64)]) -> DockerCluster {
        remove_orphans();
        let image = image(&jcs_binary());
        let prefix = format!("jcs-chaos-{}-{:x}", std::process::id(), random() % 0xffff);
        let (peer_net, peer) = network(&format!("{prefix}-peer"));
        let (client_net, client) = network(&format!("{prefix}-client"));
        let mut nodes = Vec::new();
        for (region, count) in regions {
            for _ in 0..*count {
                let id = nodes.len() as u64 + 1;
                nodes.push(DockerNode {
                    id,
                    region: region.to_string(),
                    container: format!("{prefix}-{id}"),
                    peer_ip: format!("{peer}.{}", 10 + id),
                    client_ip: format!("{client}.{}", 10 + id),
                });
            }
        }
        let cluster = DockerCluster {
            nodes,
            peer_net,
            client_net,
            client: reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("http client"),
        };
        let members: Vec<String> = cluster.nodes.iter().map(|n| format!("{}={}:9080", n.id, n.peer_ip)).collect();
        for node in &cluster.nodes {
            let (id, raft) = (node.id.to_string(), format!("{}:9080", node.peer_ip));
            let label = owner_label();
            let mut args = vec!["create", "--label", &label, "--name", &node.container, "--network", &cluster.peer_net];
            args.push("--ip");
            args.extend([node.peer_ip.as_str(), &image, "/jcs", "serve", "--node-id", &id]);
            args.extend(["--http", "0.0.0.0:8080", "--raft", &raft, "--data-dir", "/data"]);
            let initial = members.join(",");
            args.extend(["--initial-members", &initial]);
            args.extend(CLUSTER_TIMING_FLAGS);
            args.extend(NODE_FLAGS);
            docker(&args);
            docker(&["network", "connect", "--ip", &node.client_ip, &cluster.client_net, &node.container]);
        }
        for node in &cluster.nodes {
            docker(&["start", &node.container]);
        }
        let all: Vec<u64> = cluster.nodes.iter().map(|n| n.id).collect();
        cluster.leader_of(&all).await;
        cluster
    }

    pub fn node(&self, id: u64) -> &DockerNode {
        self.nodes.iter().find(|n| n.id == id).unwrap_or_else(|| panic!("no node {id}"))
    }

    /// The ids of the nodes in `region`.
    pub fn region(&self, region: &str) -> Vec<u64> {
        self.nodes.iter().filter(|n| n.region == region).map(|n| n.id).collect()
    }

    /// Sends a request to node `id`'s REST API: `(status, envelope)`, or `(0, Null)` when the
    /// node does not answer at all.
    pub async fn call(&self, id: u64, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        call(&self.client, method, &format!("http://{}:8080{path}", self.node(id).client_ip), body).await
    }

    /// The leader `nodes` all name (each answering `/readyz`), once they agree on one of them.
    pub async fn leader_of(&self, nodes: &[u64]) -> u64 {
        let agreed = std::cell::Cell::new(0);
        eventually(&format!("nodes {nodes:?} agree on a leader among them"), || async {
            let mut seen = std::collections::BTreeSet::new();
            for id in nodes {
                let (code, ready) = self.call(*id, "GET", "/readyz", None).await;
                seen.insert(if code == 200 { ready["data"]["leader"].as_u64().unwrap_or(0) } else { 0 });
            }
            let leader = seen.first().copied().unwrap_or(0);
            agreed.set(leader);
            seen.len() == 1 && nodes.contains(&leader)
        })
        .await;
        agreed.get()
    }

    /// SIGKILL.
    pub fn kill(&self, id: u64) {
        docker(&["kill", &self.node(id).container]);
    }

    /// Starts a killed node again on its data.
    pub fn start_again(&self, id: u64) {
        docker(&["start", &self.node(id).container]);
    }

    /// Cuts node `id` off the peer network: a real partition from every other node.
    pub fn cut_off(&self, id: u64) {
        docker(&["network", "disconnect", &self.peer_net, &self.node(id).container]);
    }

    /// Puts node `id` back on the peer network, at its address.
    pub fn heal(&self, id: u64) {
        let node = self.node(id);
        docker(&["network", "connect", "--ip", &node.peer_ip, &self.peer_net, &node.container]);
    }
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            if std::thread::panicking() {
                let logs = Command::new("docker").args(["logs", "--tail", "40", &node.container]).output();
                if let Ok(out) = logs {
                    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
                    eprintln!("--- node {} ({}) ---\n{stdout}{stderr}", node.id, node.container);
                }
            }
            let _ = Command::new("docker").args(["rm", "-f", &node.container]).output();
        }
        for net in [&self.peer_net, &self.client_net] {
            let _ = Command::new("docker").args(["network", "rm", net]).output();
        }
    }
}

/// Sends a request to a jcs REST API: `(status, envelope)`, or `(0, Null)` when nothing
/// answers. Shared with the node crate's multi-process tests.
pub async fn call(client: &reqwest::Client, method: &str, url: &str, body: Option<&Value>) -> (u16, Value) {
    let mut request = client.request(method.parse().expect("a method"), url);
    if let Some(body) = body {
        request = request.json(body);
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// Waits until `check` holds, polling; fails the test after [`PATIENCE`].
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_within(PATIENCE, what, check, || async { String::new() }).await
}

/// The one deadline wait of the project's tests (the chaos tests and the node tests): polls
/// `check` every 25 ms until it holds; after `within`, fails the test naming `what` and what
/// `explain` finds (the state that did not change, recent events).
pub async fn eventually_within<F, Fut, E, EFut>(within: Duration, what: &str, mut check: F, explain: E)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
    E: FnOnce() -> EFut,
    EFut: Future<Output = String>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        if Instant::now() >= deadline {
            panic!("timed out waiting until {what}\n{}", explain().await);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

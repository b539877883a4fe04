//! Starting real nodes for tests: in-process nodes on loopback port 0 with their own temp data
//! dirs (parallel-safe), and helpers to call the REST API.

#![allow(dead_code)]

pub mod procs;

use std::time::Duration;

use jcs_node::config::Config;
use jcs_node::node::Node;
use serde_json::Value;
use tokio::sync::oneshot;

pub struct TestNode {
    pub base: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    node: Option<Node>,
    pub dir: tempfile::TempDir,
}

/// A configuration with small timeouts for tests.
pub fn test_config(dir: &std::path::Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        http: "127.0.0.1:0".parse().unwrap(),
        raft: "127.0.0.1:0".parse().unwrap(),
        heartbeat_interval_ms: 50,
        owner_timeout_ms: 1_000,
        election_timeout_min_ms: 150,
        election_timeout_max_ms: 300,
        max_body_bytes: 64 * 1024,
        poll_interval_ms: 100,
        failed_polls_before_unavailable: 2,
        stop_grace_ms: 500,
        demo: true,
        ..Config::default()
    }
}

impl TestNode {
    /// A fresh one-member cluster with the demo catalog, ready to serve.
    pub async fn start() -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(dir.path());
        Self::start_with(config, dir).await
    }

    pub async fn start_with(config: Config, dir: tempfile::TempDir) -> TestNode {
        let (stop, stopped) = oneshot::channel::<()>();
        let node = Node::start(config, async move {
            let _ = stopped.await;
        })
        .await
        .expect("node starts");
        let base = format!("http://{}", node.http_addr);
        let node = TestNode { base, client: reqwest::Client::new(), stop: Some(stop), node: Some(node), dir };
        node.wait_ready().await;
        node.wait_monitored().await;
        node
    }

    /// Waits until every center has a monitoring report from its poller (the demo's arrive
    /// within one poll of the start).
    pub async fn wait_monitored(&self) {
        self.wait_for("every center monitored", || async {
            let (_, centers) = self.get("/openapi/v1/centers?pageSize=1000").await;
            let ids: Vec<String> = centers["data"]["items"]
                .as_array()
                .map(|a| a.iter().filter_map(|c| c["ai_center_id"].as_str().map(String::from)).collect())
                .unwrap_or_default();
            for id in ids {
                if self.get(&format!("/openapi/v1/centers/{id}/metrics")).await.0 != 200 {
                    return false;
                }
            }
            true
        })
        .await;
    }

    /// Polls `check` until it holds, failing the test after 20 s.
    pub async fn wait_for<F, Fut>(&self, what: &str, check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        eventually(what, check).await
    }

    /// Polls `/readyz` until it answers 200, with a deadline.
    pub async fn wait_ready(&self) {
        let ready = || async {
            let answer = self.client.get(format!("{}/readyz", self.base)).send().await;
            answer.is_ok_and(|r| r.status() == 200)
        };
        eventually("node ready", ready).await;
    }

    /// The node's Raft handle.
    pub fn raft(&self) -> &jcs_raft::Raft {
        &self.node.as_ref().expect("a running node").raft
    }

    /// Stops the node and returns its data dir for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        let _ = self.stop.take().unwrap().send(());
        self.node.take().unwrap().wait().await.unwrap();
        self.dir
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request and returns `(http status, envelope)`.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.client.request(method.parse().unwrap(), self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let envelope: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not an envelope: {text}"));
        (status, envelope)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body)).await
    }
}

/// A valid A.1 body against the demo catalog.
pub fn job_body(name: &str) -> Value {
    serde_json::json!({
        "name": name,
        "tasks": [{"name": "train", "command": "sleep 60", "imageId": "pytorch-hunan-univ",
                   "resourceSpecId": "gpu-1x", "replicaNumber": 2}]
    })
}

/// How long a node test waits for a condition.
const PATIENCE: Duration = Duration::from_secs(20);

/// Polls `check` until it holds, failing the test after 20 s (`jcs_chaos::eventually_within`,
/// the project's one deadline wait).
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    jcs_chaos::eventually_within(PATIENCE, what, check, || async { String::new() }).await
}

/// [`eventually`], and on timeout the failure also says what `explain` finds (the state that
/// did not change, recent events).
pub async fn eventually_explained<F, Fut, E, EFut>(what: &str, check: F, explain: E)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
    E: FnOnce() -> EFut,
    EFut: std::future::Future<Output = String>,
{
    jcs_chaos::eventually_within(PATIENCE, what, check, explain).await
}

/// Submits an A.1 body; returns the job id.
pub async fn submit(node: &TestNode, body: Value) -> String {
    let (status, created) = node.post("/openapi/v1/trainjob", body).await;
    assert_eq!(status, 200, "{created}");
    created["data"]["jobId"].as_str().unwrap().to_string()
}

/// A.3: the job's info.
pub async fn job(node: &TestNode, id: &str) -> Value {
    let (status, info) = node.get(&format!("/openapi/v1/trainjob/{id}")).await;
    assert_eq!(status, 200, "{info}");
    info["data"].clone()
}

pub async fn wait_status(node: &TestNode, id: &str, want: &str) -> Value {
    let explain = || async {
        let (_, events) = node.get("/openapi/v1/events").await;
        format!("job: {:#}\nevents: {:#}", job(node, id).await, events["data"]["items"])
    };
    eventually_explained(&format!("job {id} {want}"), || async { job(node, id).await["status"] == want }, explain)
        .await;
    job(node, id).await
}

/// Every replica of the job is in `phase`.
pub async fn wait_phase(node: &TestNode, id: &str, phase: &str) {
    node.wait_for(&format!("job {id} replicas {phase}"), || async {
        let info = job(node, id).await;
        info["taskInfos"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["replicas"].as_array().unwrap().iter().all(|r| r["phase"] == phase))
    })
    .await;
}

/// Downloads a replica's log through A.4's `logUrl`.
pub async fn log_of(node: &TestNode, id: &str, task: u32, replica: u32) -> String {
    let (status, location) = node.get(&format!("/openapi/v1/trainjob/{id}/task/{task}/replica/{replica}/log")).await;
    assert_eq!(status, 200, "{location}");
    let url = location["data"]["logUrl"].as_str().unwrap().to_string();
    node.client.get(url).send().await.unwrap().text().await.unwrap()
}

//! Every acknowledged write survives `kill -9`: a real `jcs` process takes a stream of
//! concurrent submissions, is SIGKILLed mid-stream, restarts on the same data dir, and must
//! still hold every job it acknowledged — with its content — and nothing twice. And replicas
//! running on its `local` center outlive the kill: the restarted node re-adopts them and starts
//! none of them a second time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

mod common;

use common::procs::free_port;

fn spawn_node(dir: &Path, port: u16, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_jcs"))
        .args(["serve", "--demo", "--data-dir"])
        .arg(dir)
        .args(["--http", &format!("127.0.0.1:{port}"), "--raft", &format!("127.0.0.1:{}", free_port())])
        .args(["--log", "warn", "--poll-interval-ms", "100"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("jcs binary starts")
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let ready = || async { client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == 200) };
    jcs_chaos::eventually_within(Duration::from_secs(30), &format!("node at {base} ready"), ready, || async {
        String::new()
    })
    .await;
}

fn job(name: &str, replicas: u32) -> Value {
    json!({"name": name, "tasks": [{"name": "t", "command": format!("echo {name}"), "imageId": "pytorch-hunan-univ",
        "resourceSpecId": "gpu-1x", "replicaNumber": replicas}]})
}

/// Sends a request and decodes the envelope.
async fn envelope(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

async fn all_jobs(client: &reqwest::Client, base: &str) -> Vec<Value> {
    let mut jobs = Vec::new();
    for page in 1.. {
        let body = envelope(client.get(format!("{base}/openapi/v1/trainjob?page={page}&pageSize=1000"))).await;
        let items = body["data"]["items"].as_array().unwrap().clone();
        if items.is_empty() {
            break;
        }
        jobs.extend(items);
    }
    jobs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_jobs_survive_sigkill() {
    acknowledged_jobs_survive_sigkill_of_a_node_with(&[]).await;
}

/// The same with a snapshot after every 20 entries and no log kept behind it: openraft purges
/// the log as it goes, so what the node recovers must be the snapshots' and the state's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_jobs_survive_sigkill_after_snapshots_purged_the_log() {
    let frequent_snapshots = ["--snapshot-after-logs", "20", "--logs-kept-after-snapshot", "0"];
    let dir = acknowledged_jobs_survive_sigkill_of_a_node_with(&frequent_snapshots).await;
    let snapshot = dir.path().join("snapshot").join("current");
    assert!(snapshot.exists(), "no snapshot was built: the run did not test what it should");
}

/// Submits from 16 clients until 400 jobs are acknowledged, kills the node, restarts it and
/// checks every acknowledged job; returns the node's data dir.
async fn acknowledged_jobs_survive_sigkill_of_a_node_with(extra: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut child = spawn_node(dir.path(), port, extra);
    wait_ready(&client, &base).await;

    const CLIENTS: usize = 16;
    const KILL_AFTER_ACKS: usize = 400;
    let acked: Arc<Mutex<BTreeMap<String, (String, u32)>>> = Arc::default();
    let ack_count = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (client, base, acked, ack_count) = (client.clone(), base.clone(), acked.clone(), ack_count.clone());
        clients.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("c{c}-{i}");
                let replicas = 1 + (i % 3) as u32;
                let sent = client
                    .post(format!("{base}/openapi/v1/trainjob"))
                    .header("Idempotency-Key", &name)
                    .json(&job(&name, replicas))
                    .send()
                    .await;
                let Ok(response) = sent else { return };
                let Ok(body) = response.json::<Value>().await else { return };
                assert_eq!(body["code"], "OK", "{body}");
                let job_id = body["data"]["jobId"].as_str().unwrap().to_string();
                acked.lock().unwrap().insert(job_id, (name, replicas));
                ack_count.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let acked_enough = || async { ack_count.load(Ordering::SeqCst) >= KILL_AFTER_ACKS };
    jcs_chaos::eventually_within(Duration::from_secs(60), "submissions acknowledged", acked_enough, || async {
        String::new()
    })
    .await;
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    for handle in clients {
        handle.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= KILL_AFTER_ACKS);

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = spawn_node(dir.path(), port, extra);
    wait_ready(&client, &base).await;
    let jobs = all_jobs(&client, &base).await;
    let by_id: BTreeMap<String, &Value> = jobs.iter().map(|j| (j["jobId"].as_str().unwrap().to_string(), j)).collect();
    for (job_id, (name, replicas)) in &acked {
        let stored = by_id.get(job_id).unwrap_or_else(|| panic!("acknowledged job {job_id} lost"));
        assert_eq!(stored["name"], name.as_str());
        assert_eq!(stored["taskInfos"][0]["replicaNumber"], *replicas);
        assert_eq!(stored["taskInfos"][0]["command"], format!("echo {name}"));
    }
    let names: Vec<&str> = jobs.iter().map(|j| j["name"].as_str().unwrap()).collect();
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(names.len(), unique.len(), "a submission appeared twice");

    // A retry of an acknowledged submission after the crash still maps to the same job.
    let (some_id, (name, replicas)) = acked.iter().next().unwrap();
    let request = client.post(format!("{base}/openapi/v1/trainjob")).header("Idempotency-Key", name);
    let retry = envelope(request.json(&job(name, *replicas))).await;
    assert_eq!(retry["data"]["jobId"], some_id.as_str());
    child.kill().unwrap();
    child.wait().unwrap();
    dir
}

async fn job_info(client: &reqwest::Client, base: &str, id: &str) -> Value {
    envelope(client.get(format!("{base}/openapi/v1/trainjob/{id}"))).await["data"].clone()
}

async fn wait_job(client: &reqwest::Client, base: &str, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    common::eventually(&format!("job {id} {what}"), || async { done(&job_info(client, base, id).await) }).await;
    job_info(client, base, id).await
}

#[tokio::test]
async fn running_replicas_survive_a_sigkill_of_the_node_and_are_not_started_twice() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("starts.log");
    let client = reqwest::Client::new();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = spawn_node(dir.path(), port, &[]);
    wait_ready(&client, &base).await;
    let command = format!("echo $JCS_REPLICA_INDEX >> {}; sleep 2; echo finished", marker.display());
    let body = json!({"name": "survivor", "retry": {"maxRetries": 0}, "tasks": [{"name": "t", "command": command,
        "imageId": "pytorch-hunan-univ", "resourceSpecId": "cpu-4c8g", "replicaNumber": 2, "centerIDs": ["hunan-univ"]}]});
    let created = envelope(client.post(format!("{base}/openapi/v1/trainjob")).json(&body)).await;
    let id = created["data"]["jobId"].as_str().unwrap().to_string();
    wait_job(&client, &base, &id, "running", |j| j["taskInfos"][0]["replicaStatus"] == json!(["running", "running"]))
        .await;
    child.kill().expect("SIGKILL");
    child.wait().unwrap();

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = spawn_node(dir.path(), port, &[]);
    wait_ready(&client, &base).await;
    let info = wait_job(&client, &base, &id, "completed", |j| j["status"] == "completed").await;
    assert_eq!(info["taskInfos"][0]["replicaStatus"], json!(["completed", "completed"]));
    let starts = std::fs::read_to_string(&marker).unwrap();
    assert_eq!(starts.lines().count(), 2, "each replica started exactly once: {starts:?}");
    let log = client.get(format!("{base}/openapi/v1/logs/{id}/0/0")).send().await.unwrap().text().await.unwrap();
    assert!(log.contains("finished"), "{log}");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Adds spec `one-cpu` (1 CPU, 1 GiB, offered by the local center `hunan-univ`) and image
/// `tiny` there: sixteen replicas fit the center at once.
async fn add_one_cpu_spec(client: &reqwest::Client, base: &str) {
    let spec = json!({"resource_spec_id": "one-cpu", "resource_spec_name": "1 CPU", "price": 1,
        "resource_quantity": {"cpu": "1", "memory": "1Gi"}, "computing_center_list": "hunan-univ"});
    let image = json!({"image_id": "tiny", "name": "tiny", "ai_center_id": "hunan-univ", "resource_spec": "one-cpu"});
    for (path, body) in [("resourcespecs", spec), ("images", image)] {
        let created = envelope(client.post(format!("{base}/openapi/v1/{path}")).json(&body)).await;
        assert_eq!(created["code"], "OK", "{created}");
    }
}

fn local_job(name: &str, command: &str, spec: &str, image: &str, replicas: u32) -> Value {
    json!({"name": name, "retry": {"maxRetries": 0}, "tasks": [{"name": "t", "command": command, "imageId": image,
        "resourceSpecId": spec, "replicaNumber": replicas, "centerIDs": ["hunan-univ"]}]})
}

/// `kill -9` of the node right after A.1 answered for a 16-replica job, round after round (the
/// kill falls at a different point of the starts each time), then a restart on the same data
/// dir: every replica runs exactly once, as attempt 0. A start the kill cut short is the node's
/// doubt, settled replica by replica — never a center fault that reschedules the task.
#[tokio::test]
async fn a_kill_during_a_many_replica_start_runs_every_replica_exactly_once() {
    const ROUNDS: u64 = 6;
    const REPLICAS: u32 = 16;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("starts.log");
    let client = reqwest::Client::new();
    let mut base = String::new();
    let mut child: Option<Child> = None;
    let mut jobs = Vec::new();
    for round in 0..ROUNDS {
        if child.is_none() {
            let port = free_port();
            base = format!("http://127.0.0.1:{port}");
            child = Some(spawn_node(dir.path(), port, &[]));
            wait_ready(&client, &base).await;
        }
        if round == 0 {
            add_one_cpu_spec(&client, &base).await;
        }
        // The center reports all its CPUs free (the last round's replicas have ended).
        let metrics = format!("{base}/openapi/v1/centers/hunan-univ/metrics");
        common::eventually("the local center reports 16 CPUs free", || async {
            envelope(client.get(&metrics)).await["data"]["cpu_free"].as_f64() == Some(16.0)
        })
        .await;
        let command = format!("echo $JCS_JOB_ID $JCS_REPLICA_INDEX $JCS_ATTEMPT >> {}; sleep 0.2", marker.display());
        let body = local_job(&format!("burst-{round}"), &command, "one-cpu", "tiny", REPLICAS);
        let created = envelope(client.post(format!("{base}/openapi/v1/trainjob")).json(&body)).await;
        assert_eq!(created["code"], "OK", "{created}");
        let id = created["data"]["jobId"].as_str().unwrap().to_string();
        if created["data"]["taskInfos"][0]["centerIDs"][0] != "hunan-univ" {
            let explain = envelope(client.get(format!("{base}/openapi/v1/trainjob/{id}/explain"))).await;
            panic!("round {round}: not placed before the answer: {created}\n{explain:#}");
        }
        // The kill falls at a different point of the starts each round: once this round's
        // `3 × round` replicas have begun (0 in the first round: at A.1's answer).
        let begun = (round * 3) as usize;
        common::eventually(&format!("{begun} replicas of {id} begun"), || async {
            let starts = std::fs::read_to_string(&marker).unwrap_or_default();
            starts.lines().filter(|line| line.starts_with(&format!("{id} "))).count() >= begun
        })
        .await;
        jobs.push(id);
        let mut killed = child.take().unwrap();
        killed.kill().expect("SIGKILL");
        killed.wait().unwrap();

        let port = free_port();
        base = format!("http://127.0.0.1:{port}");
        child = Some(spawn_node(dir.path(), port, &[]));
        wait_ready(&client, &base).await;
        let id = jobs.last().unwrap();
        let info =
            wait_job(&client, &base, id, "final", |j| j["status"] == "completed" || j["status"] == "failed").await;
        assert_eq!(info["status"], "completed", "{info:#}");
    }
    let starts = std::fs::read_to_string(&marker).unwrap();
    let mut runs: BTreeMap<(String, u32), Vec<u32>> = BTreeMap::new();
    for line in starts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        runs.entry((fields[0].to_string(), fields[1].parse().unwrap())).or_default().push(fields[2].parse().unwrap());
    }
    for id in &jobs {
        for replica in 0..REPLICAS {
            let attempts = runs.get(&(id.clone(), replica)).cloned().unwrap_or_default();
            assert_eq!(attempts, vec![0], "{id} replica {replica} must run once, as attempt 0; all starts:\n{starts}");
        }
    }
    let mut last = child.unwrap();
    last.kill().unwrap();
    last.wait().unwrap();
}

/// Two clusters, one after the other, on fresh data dirs but sharing the centers' work dirs
/// (`--demo-shared-dir`): both call their first job `job-000000000001`, and the second must run
/// its own, not take the first cluster's finished replica for it.
#[tokio::test]
async fn a_cluster_created_afresh_never_adopts_an_earlier_clusters_replicas() {
    let shared = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut logs = Vec::new();
    for name in ["first-cluster", "second-cluster"] {
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let shared_dir = shared.path().display().to_string();
        let mut child = spawn_node(data.path(), port, &["--demo-shared-dir", &shared_dir]);
        wait_ready(&client, &base).await;
        let body = local_job(name, &format!("echo ran in the {name}"), "cpu-4c8g", "pytorch-hunan-univ", 1);
        let created = envelope(client.post(format!("{base}/openapi/v1/trainjob")).json(&body)).await;
        let id = created["data"]["jobId"].as_str().unwrap().to_string();
        assert_eq!(id, "job-000000000001", "{created}");
        let info =
            wait_job(&client, &base, &id, "final", |j| j["status"] == "completed" || j["status"] == "failed").await;
        assert_eq!(info["status"], "completed", "{info:#}");
        let log = client.get(format!("{base}/openapi/v1/logs/{id}/0/0")).send().await.unwrap().text().await.unwrap();
        logs.push(log);
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert!(logs[0].contains("ran in the first-cluster"), "{logs:?}");
    assert!(logs[1].contains("ran in the second-cluster"), "the second cluster ran its own job: {logs:?}");
}

//! Jobs that really run (issue: centers for real): real processes on the demo's `local` center,
//! simulated platforms for outages — through the REST API of a real node. Every wait is for a
//! condition with a deadline.

mod common;

use std::path::{Path, PathBuf};

use common::{job, log_of, submit, wait_phase, wait_status, TestNode};
use serde_json::{json, Value};

/// A job pinned to the local center, one task per command, `replicas` each.
fn local_job(name: &str, commands: &[&str], replicas: u32, retry: Value) -> Value {
    let tasks: Vec<Value> = commands
        .iter()
        .enumerate()
        .map(|(i, command)| {
            json!({"name": format!("t{i}"), "command": command, "imageId": "pytorch-hunan-univ",
                   "resourceSpecId": "cpu-4c8g", "replicaNumber": replicas, "centerIDs": ["hunan-univ"]})
        })
        .collect();
    json!({"name": name, "tasks": tasks, "retry": retry})
}

/// The local center's replica directories of this node's cluster (`replicas/{cluster id}`).
fn local_center_dir(node: &TestNode) -> PathBuf {
    let replicas = node.dir.path().join("centers").join("hunan-univ").join("replicas");
    let mut clusters: Vec<PathBuf> =
        std::fs::read_dir(&replicas).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(clusters.len() <= 1, "one cluster's replicas: {clusters:?}");
    clusters.pop().unwrap_or(replicas)
}

/// Processes of the local center still alive (by their recorded pid).
fn live_processes(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("pid")).ok())
        .filter_map(|text| text.split_whitespace().next()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|stat| !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .count()
}

#[tokio::test]
async fn a_two_task_two_replica_job_of_real_processes_runs_and_its_logs_download() {
    let node = TestNode::start().await;
    let progress =
        "for i in 1 2 3; do echo \"$JCS_TASK replica $JCS_REPLICA_INDEX of $JCS_REPLICAS step $i\"; sleep 0.05; done";
    let id = submit(&node, local_job("real", &[progress, progress], 2, json!({"maxRetries": 0}))).await;
    let info = wait_status(&node, &id, "completed").await;
    for task in info["taskInfos"].as_array().unwrap() {
        assert_eq!(task["replicaStatus"], json!(["completed", "completed"]), "{info}");
        assert_eq!(task["centerIDs"], json!(["hunan-univ", "hunan-univ"]));
    }
    let log = log_of(&node, &id, 1, 1).await;
    assert!(log.contains("t1 replica 1 of 2 step 3"), "log: {log}");
    node.stop().await;
}

#[tokio::test]
async fn a_failing_replica_is_retried_then_the_job_fails_with_the_reason() {
    let node = TestNode::start().await;
    let id = submit(
        &node,
        local_job("fails", &["echo attempt $JCS_ATTEMPT; exit 3"], 1, json!({"maxRetries": 2, "backoffMs": 20})),
    )
    .await;
    let info = wait_status(&node, &id, "failed").await;
    let replica = &info["taskInfos"][0]["replicas"][0];
    assert_eq!((replica["retries"].as_u64(), replica["attempt"].as_u64()), (Some(2), Some(2)), "{info}");
    assert_eq!(replica["exitCode"], 3);
    let reason = info["statusReason"].as_str().unwrap();
    assert!(reason.contains("exit code 3") && reason.contains("no retries left"), "{reason}");
    assert!(log_of(&node, &id, 0, 0).await.contains("attempt 2"));
    let (_, events) = node.get("/openapi/v1/events?kind=retried&centerId=hunan-univ").await;
    assert_eq!(events["data"]["total"], 2, "{events}");
    node.stop().await;
}

#[tokio::test]
async fn stop_mid_run_kills_every_process() {
    let node = TestNode::start().await;
    let trap = "trap '' TERM; sleep 60";
    let id = submit(&node, local_job("long", &["sleep 60", trap], 2, json!({}))).await;
    wait_phase(&node, &id, "running").await;
    let dir = local_center_dir(&node);
    assert_eq!(live_processes(&dir), 4);
    let (status, stopped) = node.post(&format!("/openapi/v1/trainjob/{id}/stop"), json!({})).await;
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["data"]["status"], "failed");
    wait_phase(&node, &id, "failed").await;
    node.wait_for("no process left", || async { live_processes(&dir) == 0 }).await;
    // Stop is idempotent.
    let (status, again) = node.post(&format!("/openapi/v1/trainjob/{id}/stop"), json!({})).await;
    assert_eq!((status, again["data"]["status"].as_str()), (200, Some("failed")));
    node.stop().await;
}

#[tokio::test]
async fn a_node_restart_mid_run_readopts_replicas_without_starting_them_twice() {
    let node = TestNode::start().await;
    let marker = node.dir.path().join("starts.log");
    let command = format!("echo $JCS_REPLICA_INDEX >> {}; sleep 1.5; echo finished", marker.display());
    let id = submit(&node, local_job("survivor", &[&command], 2, json!({"maxRetries": 0}))).await;
    wait_phase(&node, &id, "running").await;
    let dir = node.stop().await;
    let config = common::test_config(dir.path());
    let node = TestNode::start_with(config, dir).await;
    let info = wait_status(&node, &id, "completed").await;
    assert_eq!(info["taskInfos"][0]["replicaStatus"], json!(["completed", "completed"]));
    let starts = std::fs::read_to_string(&marker).unwrap();
    assert_eq!(starts.lines().count(), 2, "each replica started exactly once: {starts:?}");
    assert!(log_of(&node, &id, 0, 1).await.contains("finished"));
    node.stop().await;
}

#[tokio::test]
async fn a_center_that_stops_answering_turns_unavailable_and_its_jobs_move() {
    let node = TestNode::start().await;
    for id in ["sim-x", "sim-y"] {
        let center = json!({"ai_center_id": id, "name": id, "region": "test",
            "adapter": {"kind": "sim", "config": {"latency_ms": 0, "capacity": {"cpu": "64", "memory": "256Gi"}}}});
        let (status, body) = node.post("/openapi/v1/centers", center).await;
        assert_eq!(status, 200, "{body}");
        let image = json!({"image_id": format!("img-{id}"), "name": "sim-image", "ai_center_id": id});
        assert_eq!(node.post("/openapi/v1/images", image).await.0, 200);
    }
    let spec = json!({"resource_spec_id": "sim-cpu", "resource_spec_name": "sim", "resource_quantity": {"cpu": "2"},
                      "computing_center_list": "sim-x,sim-y"});
    assert_eq!(node.post("/openapi/v1/resourcespecs", spec).await.0, 200);
    node.wait_monitored().await;
    let body = json!({"name": "mover", "durationSecs": 600, "tasks": [{"name": "t", "command": "train",
        "imageId": "img-sim-x", "resourceSpecId": "sim-cpu", "replicaNumber": 1}]});
    let id = submit(&node, body).await;
    wait_phase(&node, &id, "running").await;
    let first = job(&node, &id).await["taskInfos"][0]["centerIDs"][0].as_str().unwrap().to_string();
    let other = if first == "sim-x" { "sim-y" } else { "sim-x" };

    std::fs::write(node.dir.path().join("centers").join(&first).join("OUTAGE"), b"").unwrap();
    node.wait_for("center unavailable", || async {
        node.get(&format!("/openapi/v1/centers/{first}")).await.1["data"]["status"] == 0
    })
    .await;
    node.wait_for("job moved", || async {
        let info = job(&node, &id).await;
        info["taskInfos"][0]["centerIDs"] == json!([other]) && info["taskInfos"][0]["replicas"][0]["phase"] == "running"
    })
    .await;
    let replica = job(&node, &id).await["taskInfos"][0]["replicas"][0].clone();
    assert_eq!((replica["retries"].as_u64(), replica["reschedules"].as_u64()), (Some(0), Some(1)), "{replica}");
    let (_, events) = node.get(&format!("/openapi/v1/events?centerId={first}")).await;
    let kinds: Vec<&str> =
        events["data"]["items"].as_array().unwrap().iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(kinds.contains(&"center_down") && kinds.contains(&"rescheduled"), "{kinds:?}");

    // Recovery: the center answers again and is available.
    std::fs::remove_file(node.dir.path().join("centers").join(&first).join("OUTAGE")).unwrap();
    node.wait_for("center available again", || async {
        node.get(&format!("/openapi/v1/centers/{first}")).await.1["data"]["status"] == 1
    })
    .await;
    node.stop().await;
}

/// Whether a process runs (a zombie does not count).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

#[tokio::test]
async fn a_stop_waiting_out_its_grace_holds_up_no_other_dispatch_to_the_center() {
    let dir = tempfile::tempdir().unwrap();
    let config = jcs_node::config::Config { stop_grace_ms: 5_000, ..common::test_config(dir.path()) };
    let node = TestNode::start_with(config, dir).await;
    let pid_file = node.dir.path().join("stubborn.pid");
    let stubborn = format!("echo $$ > {}; trap '' TERM; sleep 60", pid_file.display());
    let a = submit(&node, local_job("stubborn", &[&stubborn], 1, json!({"maxRetries": 0}))).await;
    wait_phase(&node, &a, "running").await;
    node.wait_for("the stubborn replica wrote its pid", || async { pid_file.exists() }).await;
    let pid: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    let (status, stopped) = node.post(&format!("/openapi/v1/trainjob/{a}/stop"), json!({})).await;
    assert_eq!(status, 200, "{stopped}");

    // The stop now waits 5 s for SIGTERM to work before it sends SIGKILL. Meanwhile a job for
    // the same center is dispatched, runs and completes.
    let b = submit(&node, local_job("meanwhile", &["echo meanwhile"], 1, json!({"maxRetries": 0}))).await;
    wait_status(&node, &b, "completed").await;
    assert!(alive(pid), "the next job waited for the stop's grace period to end");
    node.wait_for("the stubborn replica is killed once its grace is over", || async { !alive(pid) }).await;
    node.stop().await;
}

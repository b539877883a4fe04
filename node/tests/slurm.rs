//! Jobs on a real Slurm center, through the REST API of a real node (issue: a real Slurm
//! center). The cluster is the project's single-host Slurm (`deploy/slurm/jcs-slurm`), started
//! here if it is not running; without Slurm the tests say they are skipped, and CI, which sets
//! `JCS_REQUIRE_SLURM`, fails them instead. Their names start with `slurm_`: the nextest group
//! `slurm` runs them one at a time with the adapter's own Slurm tests.

mod common;

use std::path::Path;

use common::{eventually_explained, job, log_of, submit, wait_phase, TestNode};
use jcs_adapters::slurm::local_cluster::{self, LocalSlurm};
use serde_json::{json, Value};

const CENTER: &str = "slurm-hpc";

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/slurm/jcs-slurm")
}

/// A demo node with the Slurm cluster registered as center `slurm-hpc`, offering spec
/// `slurm-1c` (1 CPU, 256 MiB) and image `shell-slurm`. Jobs are named with a prefix of this
/// node's own, and their output goes to a directory of its own.
async fn node_with_slurm(test: &str) -> Option<(TestNode, LocalSlurm)> {
    node_with_slurm_named(test, None).await
}

/// [`node_with_slurm`], with the jobs' name prefix and log directory given (`naming`) rather
/// than the node's own.
async fn node_with_slurm_named(test: &str, naming: Option<(&str, &Path)>) -> Option<(TestNode, LocalSlurm)> {
    let cluster = local_cluster::for_tests(&script(), test)?;
    let node = TestNode::start().await;
    let mut config = cluster.center_config();
    let nonce = node.dir.path().file_name().unwrap().to_string_lossy().replace('.', "");
    let own_log_dir = cluster.dir.join("jobs").join(&nonce);
    let own_prefix = format!("jcs-test-{nonce}");
    let (prefix, log_dir) = naming.unwrap_or((&own_prefix, &own_log_dir));
    config["job_name_prefix"] = json!(prefix);
    config["log_dir"] = json!(log_dir);
    config["request_timeout_ms"] = json!(2000);
    let center = json!({"ai_center_id": CENTER, "name": "Slurm HPC", "region": "hunan",
        "adapter": {"kind": "slurm", "endpoint": cluster.url, "config": config}, "security_grade": 3});
    let (status, body) = node.post("/openapi/v1/centers", center).await;
    assert_eq!(status, 200, "{body}");
    let spec = json!({"resource_spec_id": "slurm-1c", "resource_spec_name": "1 CPU on Slurm",
        "resource_quantity": {"cpu": "1", "memory": "256Mi"}, "computing_center_list": CENTER});
    assert_eq!(node.post("/openapi/v1/resourcespecs", spec).await.0, 200);
    let image =
        json!({"image_id": "shell-slurm", "name": "shell", "ai_center_id": CENTER, "resource_spec": "slurm-1c"});
    assert_eq!(node.post("/openapi/v1/images", image).await.0, 200);
    node.wait_monitored().await;
    Some((node, cluster))
}

fn slurm_job(name: &str, command: &str, replicas: u32, retry: Value) -> Value {
    json!({"name": name, "retry": retry, "tasks": [{"name": "t0", "command": command, "imageId": "shell-slurm",
        "resourceSpecId": "slurm-1c", "replicaNumber": replicas, "centerIDs": [CENTER]}]})
}

/// Waits for the job's A.3 status; a timeout shows the job, the center's monitoring and
/// events, and the cluster's queue.
async fn wait_status(node: &TestNode, cluster: &LocalSlurm, id: &str, want: &str) -> Value {
    let explain = || async {
        let (_, metrics) = node.get(&format!("/openapi/v1/centers/{CENTER}/metrics")).await;
        let (_, events) = node.get("/openapi/v1/events").await;
        let squeue = cluster.command("squeue").args(["-t", "all", "-o", "%i %j %T %r %C"]).output().unwrap();
        format!(
            "job: {:#}\nmetrics: {:#}\nevents: {:#}\nsqueue:\n{}",
            job(node, id).await,
            metrics["data"],
            events["data"]["items"],
            String::from_utf8_lossy(&squeue.stdout)
        )
    };
    eventually_explained(&format!("job {id} {want}"), || async { job(node, id).await["status"] == want }, explain)
        .await;
    job(node, id).await
}

/// The Slurm job ids of a job's replicas (a native id is `<slurm job id>:<replica key>`).
async fn native_ids(node: &TestNode, id: &str) -> Vec<String> {
    let info = job(node, id).await;
    let replicas = info["taskInfos"][0]["replicas"].as_array().unwrap().clone();
    let slurm_id = |r: &Value| r["nativeId"].as_str().and_then(|id| id.split_once(':')).map(|(id, _)| id.to_string());
    replicas.iter().map(|r| slurm_id(r).unwrap_or_default()).collect()
}

/// `squeue`'s state for a Slurm job (`-t all` lists ended jobs slurmctld still holds).
fn squeue_state(cluster: &LocalSlurm, slurm_id: &str) -> String {
    let output = cluster.command("squeue").args(["-h", "-t", "all", "-j", slurm_id, "-o", "%T"]).output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_job_runs_completes_and_its_log_downloads() {
    let Some((node, cluster)) = node_with_slurm("slurm_job_runs_completes_and_its_log_downloads").await else { return };
    let command = "echo \"replica $JCS_REPLICA_INDEX of $JCS_REPLICAS is slurm job $SLURM_JOB_ID\"";
    let id = submit(&node, slurm_job("on-slurm", command, 2, json!({"maxRetries": 0}))).await;
    let info = wait_status(&node, &cluster, &id, "completed").await;
    assert_eq!(info["taskInfos"][0]["centerIDs"], json!([CENTER, CENTER]), "{info}");
    let slurm_ids = native_ids(&node, &id).await;
    for slurm_id in &slurm_ids {
        assert_eq!(squeue_state(&cluster, slurm_id), "COMPLETED", "slurm job {slurm_id}");
    }
    let log = log_of(&node, &id, 0, 1).await;
    assert_eq!(log.trim(), format!("replica 1 of 2 is slurm job {}", slurm_ids[1]));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_failing_job_is_retried_per_policy_then_fails() {
    let Some((node, cluster)) = node_with_slurm("slurm_failing_job_is_retried_per_policy_then_fails").await else {
        return;
    };
    let command = "echo attempt $JCS_ATTEMPT; exit 3";
    let id = submit(&node, slurm_job("fails", command, 1, json!({"maxRetries": 1, "backoffMs": 20}))).await;
    let info = wait_status(&node, &cluster, &id, "failed").await;
    let replica = &info["taskInfos"][0]["replicas"][0];
    assert_eq!((replica["retries"].as_u64(), replica["attempt"].as_u64()), (Some(1), Some(1)), "{info}");
    assert_eq!(replica["exitCode"], 3, "{info}");
    assert!(log_of(&node, &id, 0, 0).await.contains("attempt 1"));
    let (_, events) = node.get(&format!("/openapi/v1/events?kind=retried&centerId={CENTER}")).await;
    assert_eq!(events["data"]["total"], 1, "{events}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_stop_cancels_the_running_job() {
    let Some((node, cluster)) = node_with_slurm("slurm_stop_cancels_the_running_job").await else { return };
    let id = submit(&node, slurm_job("long", "sleep 120", 1, json!({}))).await;
    wait_phase(&node, &id, "running").await;
    let slurm_id = native_ids(&node, &id).await.remove(0);
    assert_eq!(squeue_state(&cluster, &slurm_id), "RUNNING");
    let (status, stopped) = node.post(&format!("/openapi/v1/trainjob/{id}/stop"), json!({})).await;
    assert_eq!(status, 200, "{stopped}");
    wait_phase(&node, &id, "failed").await;
    node.wait_for("squeue shows the job cancelled", || async { squeue_state(&cluster, &slurm_id) == "CANCELLED" })
        .await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_controller_killed_makes_the_center_unavailable_until_it_returns() {
    let test = "slurm_controller_killed_makes_the_center_unavailable_until_it_returns";
    let Some((node, cluster)) = node_with_slurm(test).await else { return };
    let pid = std::fs::read_to_string(cluster.dir.join("slurmctld.pid")).unwrap();
    assert!(std::process::Command::new("kill").args([pid.trim()]).status().unwrap().success());
    let status_of_center =
        || async { node.get(&format!("/openapi/v1/centers/{CENTER}")).await.1["data"]["status"].clone() };
    node.wait_for("center unavailable", || async { status_of_center().await == 0 }).await;
    let (_, events) = node.get(&format!("/openapi/v1/events?centerId={CENTER}")).await;
    let events = events["data"]["items"].as_array().unwrap().clone();
    let said = |kind: &str, text: &str| {
        events.iter().any(|e| e["kind"] == kind && e["message"].as_str().unwrap().contains(text))
    };
    assert!(said("center_down", ""), "a center_down event: {events:?}");
    assert!(said("poll_failed", "slurmrestd"), "poll failures name slurmrestd: {events:?}");
    LocalSlurm::start(&script()).expect("slurmctld restarts");
    node.wait_for("center available again", || async { status_of_center().await == 1 }).await;
    let id = submit(&node, slurm_job("after", "echo back", 1, json!({"maxRetries": 0}))).await;
    wait_status(&node, &cluster, &id, "completed").await;
    node.stop().await;
}

/// Two jcs clusters, one after the other, against the same Slurm with the same job name prefix
/// and log directory (as the demo's `--demo-slurm` does): both call their first job
/// `job-000000000001`, and the second must run its own rather than find the first's Slurm job
/// and log under the same key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_a_cluster_created_afresh_never_adopts_an_earlier_clusters_jobs() {
    let test = "slurm_a_cluster_created_afresh_never_adopts_an_earlier_clusters_jobs";
    let shared_logs = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for name in ["first-cluster", "second-cluster"] {
        let naming = Some(("jcs-shared", shared_logs.path()));
        let Some((node, cluster)) = node_with_slurm_named(test, naming).await else { return };
        let id = submit(&node, slurm_job(name, &format!("echo ran in the {name}"), 1, json!({"maxRetries": 0}))).await;
        assert_eq!(id, "job-000000000001");
        wait_status(&node, &cluster, &id, "completed").await;
        runs.push((native_ids(&node, &id).await.remove(0), log_of(&node, &id, 0, 0).await));
        node.stop().await;
    }
    assert_ne!(runs[0].0, runs[1].0, "the second cluster submitted its own Slurm job: {runs:?}");
    assert!(runs[1].1.contains("ran in the second-cluster"), "{runs:?}");
}

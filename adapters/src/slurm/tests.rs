//! The Slurm adapter against a real Slurm 22.05 started by `deploy/slurm/jcs-slurm` (skipped,
//! saying so, where Slurm cannot be started; CI sets `JCS_REQUIRE_SLURM` so that it cannot be
//! skipped there). These tests share one cluster: the nextest group `slurm` runs them one at a
//! time, since one of them stops slurmctld.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jcs_api::model::{FailureCategory, ReplicaKey};
use jcs_api::quantity::ResourceAmounts;
use tokio::time::Instant;

use super::local_cluster::{self, LocalSlurm};
use super::SlurmCenter;
use crate::conformance::{self, wait_until};
use crate::{Adapter, AdapterContext, AdapterError, NativeId, NativeState, ReplicaLaunch};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/slurm/jcs-slurm")
}

fn cluster(test: &str) -> Option<LocalSlurm> {
    local_cluster::for_tests(&script(), test)
}

fn center(cluster: &LocalSlurm, extra: serde_json::Value) -> SlurmCenter {
    let mut config = cluster.center_config();
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        config[k] = v;
    }
    let ctx = AdapterContext::new(cluster.dir.join("work"), "c0");
    SlurmCenter::new("slurm-test", &config, &ctx).expect("slurm center config")
}

fn launch(job: &str, command: &str, demand: ResourceAmounts) -> ReplicaLaunch {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let key = ReplicaKey { job_id: format!("{job}-{nanos:x}"), task: 0, replica: 0, attempt: 0 };
    let env = BTreeMap::from([("JCS_JOB_ID".to_string(), key.job_id.clone())]);
    ReplicaLaunch { key, command: command.into(), image: String::new(), demand, env, duration_hint: None }
}

fn cpu(n: f64) -> ResourceAmounts {
    ResourceAmounts { cpu: n, memory_mb: 64.0, ..ResourceAmounts::default() }
}

/// Waits, with a deadline, until `resources` succeeds.
async fn resources_answer(adapter: &SlurmCenter, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = adapter.resources().await {
        assert!(Instant::now() < deadline, "resources still failing {when}: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn whole_log(adapter: &dyn Adapter, id: &NativeId) -> String {
    let chunk = adapter.read_log(id, 0, 1 << 20).await.expect("read_log");
    assert!(chunk.complete, "an ended job's log is complete");
    String::from_utf8_lossy(&chunk.data).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_passes_the_conformance_suite() {
    let Some(cluster) = cluster("slurm_passes_the_conformance_suite") else { return };
    conformance::run_all(|| Arc::new(center(&cluster, serde_json::json!({}))) as Arc<dyn Adapter>).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_gpu_demand_is_allocated_and_counted() {
    let Some(cluster) = cluster("slurm_gpu_demand_is_allocated_and_counted") else { return };
    let adapter = center(&cluster, serde_json::json!({}));
    let demand = ResourceAmounts { gpu: 2.0, ..cpu(1.0) };
    let job = launch("gpu", "echo gpus=$SLURM_JOB_GPUS; sleep 30", demand);
    let id = adapter.submit(&job).await.expect("submit");
    wait_until(&adapter, &id, |s| *s == NativeState::Running).await;
    let report = adapter.resources().await.expect("resources");
    assert!(report.capacity.gpu >= 2.0, "the cluster's GPUs are its capacity: {:?}", report.capacity);
    assert!(report.metrics.gpu_used >= 2, "two GPUs are in use: {:?}", report.metrics);
    let nodes = &report.metrics.node_free;
    assert!(!nodes.is_empty(), "the real Slurm's nodes are reported by shape: {:?}", report.metrics);
    let node_sum =
        |amount: fn(&jcs_api::model::NodeFree) -> i64| nodes.iter().map(|n| n.count * amount(n)).sum::<i64>();
    assert_eq!(
        (node_sum(|n| n.gpu_free), node_sum(|n| n.cpu_free)),
        (report.metrics.gpu_free, report.metrics.cpu_free),
        "the usable nodes' free resources add up to the totals: {nodes:?}"
    );
    let squeue = cluster.command("squeue").args(["-h", "-j", &id.0, "-o", "%b"]).output().unwrap();
    assert!(String::from_utf8_lossy(&squeue.stdout).contains("gpu:2"), "squeue: {squeue:?}");
    adapter.stop(&id, Duration::from_secs(1)).await.expect("stop");
    let state = wait_until(&adapter, &id, |s| matches!(s, NativeState::Failed { .. })).await;
    assert!(matches!(state, NativeState::Failed { category: FailureCategory::Stopped, .. }), "{state:?}");
    let too_many = launch("gpu-huge", "true", ResourceAmounts { gpu: 64.0, ..cpu(1.0) });
    let refused = adapter.submit(&too_many).await;
    assert!(matches!(refused, Err(AdapterError::Rejected(ref m)) if m.contains("gres")), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_images_are_environments() {
    let Some(cluster) = cluster("slurm_images_are_environments") else { return };
    let images = serde_json::json!({ "images": { "greeter": { "prelude": ["export GREETING=hello-from-prelude"] } } });
    let adapter = center(&cluster, images);
    assert_eq!(adapter.images().await.unwrap().iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), vec!["greeter"]);
    let mut job = launch("img", "echo \"$GREETING $JCS_JOB_ID\"", cpu(1.0));
    job.image = "greeter".into();
    let id = adapter.submit(&job).await.expect("submit");
    wait_until(&adapter, &id, |s| *s == NativeState::Succeeded).await;
    assert_eq!(whole_log(&adapter, &id).await.trim(), format!("hello-from-prelude {}", job.key.job_id));
    job.image = "no-such-image".into();
    let refused = adapter.submit(&job).await;
    assert!(matches!(refused, Err(AdapterError::Rejected(ref m)) if m.contains("no-such-image")), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_jobs_forgotten_by_slurmctld_are_read_from_the_log_dir() {
    let Some(cluster) = cluster("slurm_jobs_forgotten_by_slurmctld_are_read_from_the_log_dir") else { return };
    let adapter = center(&cluster, serde_json::json!({}));
    // What a job purged after MinJobAge leaves: its output and exit files, under an id
    // slurmctld no longer knows.
    let key = launch("purged", "", cpu(1.0)).key;
    let forgotten = 4_000_000_000u64 + (std::process::id() as u64);
    let jobs = cluster.dir.join("jobs");
    // Job names carry the prefix and the cluster's id (`c0` here).
    std::fs::write(jobs.join(format!("jcs.c0.{key}.{forgotten}.out")), "last words\n").unwrap();
    std::fs::write(jobs.join(format!("jcs.c0.{key}.{forgotten}.exit")), "7\n").unwrap();
    let id = NativeId(format!("{forgotten}:{key}"));
    assert_eq!(adapter.find(&key).await.unwrap(), Some(id.clone()), "found by the files' names");
    let state = adapter.status(std::slice::from_ref(&id)).await.unwrap().remove(0);
    assert!(matches!(state, NativeState::Failed { exit_code: Some(7), category: FailureCategory::Application, .. }));
    assert_eq!(whole_log(&adapter, &id).await, "last words\n");
    let again = adapter.submit(&launch("purged", "true", cpu(1.0))).await.unwrap();
    assert_ne!(again, id, "another key is a new job");
    let resubmit = ReplicaLaunch { key: key.clone(), ..launch("purged", "true", cpu(1.0)) };
    assert_eq!(adapter.submit(&resubmit).await.unwrap(), id, "a key with files is never submitted again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_job_ids_taken_over_by_another_job_are_not_the_replicas() {
    let Some(cluster) = cluster("slurm_job_ids_taken_over_by_another_job_are_not_the_replicas") else { return };
    let adapter = center(&cluster, serde_json::json!({}));
    let other = adapter.submit(&launch("other", "sleep 30", cpu(1.0))).await.expect("submit");
    wait_until(&adapter, &other, |s| *s == NativeState::Running).await;
    // What a slurmctld that lost its state in a crash does: the replica's id now names another
    // job. The replica is gone, and stopping it must not cancel the other job.
    let slurm_id = other.0.split_once(':').unwrap().0;
    let lost = NativeId(format!("{slurm_id}:{}", launch("lost", "", cpu(1.0)).key));
    assert_eq!(adapter.status(std::slice::from_ref(&lost)).await.unwrap(), vec![NativeState::Missing]);
    adapter.stop(&lost, Duration::from_secs(1)).await.expect("stop of a lost replica");
    assert!(matches!(adapter.read_log(&lost, 0, 10).await, Err(AdapterError::NotFound(_))));
    assert_eq!(adapter.status(std::slice::from_ref(&other)).await.unwrap(), vec![NativeState::Running]);
    adapter.stop(&other, Duration::from_secs(1)).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_controller_down_is_unavailable_until_it_returns() {
    let Some(cluster) = cluster("slurm_controller_down_is_unavailable_until_it_returns") else { return };
    let adapter = center(&cluster, serde_json::json!({ "request_timeout_ms": 30000 }));
    adapter.resources().await.expect("resources while slurmctld runs");
    let pid = std::fs::read_to_string(cluster.dir.join("slurmctld.pid")).unwrap();
    let killed = std::process::Command::new("kill").args([pid.trim()]).status().unwrap();
    assert!(killed.success());
    let result = adapter.resources().await;
    assert!(matches!(result, Err(AdapterError::Unavailable(_))), "with slurmctld killed: {result:?}");
    let submit = adapter.submit(&launch("down", "true", cpu(1.0))).await;
    assert!(matches!(submit, Err(AdapterError::Unavailable(_))), "submit with slurmctld killed: {submit:?}");
    LocalSlurm::start(&script()).expect("slurmctld restarts");
    resources_answer(&adapter, "after slurmctld restarted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_refused_tokens_are_reported_and_a_refreshed_one_is_picked_up() {
    let Some(cluster) = cluster("slurm_refused_tokens_are_reported_and_a_refreshed_one_is_picked_up") else { return };
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "SLURM_JWT=not-a-token\n").unwrap();
    let mut config = cluster.center_config();
    config.as_object_mut().unwrap().remove("token_command");
    config["token_file"] = token_file.display().to_string().into();
    let adapter = SlurmCenter::new("slurm-test", &config, &AdapterContext::new(dir.path(), "c0")).unwrap();
    let refused = adapter.resources().await;
    assert!(matches!(refused, Err(AdapterError::Unavailable(ref m)) if m.contains("token")), "{refused:?}");
    // An operator (or a cron job) writes a fresh token: the next refusal re-reads the file.
    let fresh = std::process::Command::new("sh").arg("-c").arg(&cluster.token_command).output().unwrap();
    assert!(fresh.status.success(), "{fresh:?}");
    std::fs::write(&token_file, &fresh.stdout).unwrap();
    resources_answer(&adapter, "with the refreshed token").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_config_mistakes_are_named() {
    let ctx = AdapterContext::new(std::env::temp_dir(), "c0");
    let dir = tempfile::tempdir().unwrap();
    let base = serde_json::json!({ "url": "http://127.0.0.1:1", "log_dir": dir.path() });
    let mut two_tokens = base.clone();
    two_tokens["token"] = "a".into();
    two_tokens["token_command"] = "b".into();
    let mut typo = base.clone();
    typo["token"] = "a".into();
    typo["partiton"] = "x".into();
    for (config, expected) in [(base.clone(), "exactly one"), (two_tokens, "exactly one"), (typo, "partiton")] {
        let error = SlurmCenter::new("c", &config, &ctx).err().expect("config must be refused");
        assert!(matches!(&error, AdapterError::Config(m) if m.contains(expected)), "{error}");
    }
    let mut unreachable = base;
    unreachable["token"] = "a".into();
    let adapter = SlurmCenter::new("c", &unreachable, &ctx).unwrap();
    assert!(matches!(adapter.resources().await, Err(AdapterError::Unavailable(_))));
}

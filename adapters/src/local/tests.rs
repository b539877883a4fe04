//! The local center against the conformance suite, and what is particular to it: pids, the
//! queue on disk, signals, configuration.

use std::path::Path;
use std::sync::Arc;

use jcs_api::model::FailureCategory;
use jcs_api::quantity::ResourceAmounts;
use serde_json::json;
use tokio::time::Instant;

use super::process::ProcessRecord;
use super::*;
use crate::conformance::{self, state_of as state, wait_until};

fn context(dir: &Path) -> AdapterContext {
    AdapterContext::new(dir, "c0")
}

fn center(dir: &Path, config: serde_json::Value) -> LocalCenter {
    LocalCenter::new("local1", &config, &context(dir)).expect("valid config")
}

fn launch(job: &str, command: &str, cpu: f64) -> ReplicaLaunch {
    ReplicaLaunch {
        key: ReplicaKey { job_id: job.to_string(), task: 0, replica: 1, attempt: 0 },
        command: command.to_string(),
        image: "default".to_string(),
        demand: ResourceAmounts { cpu, memory_mb: 10.0, ..Default::default() },
        env: BTreeMap::from([("GREETING".to_string(), "hi from env".to_string())]),
        duration_hint: None,
    }
}

async fn log_of(center: &LocalCenter, id: &NativeId) -> String {
    String::from_utf8(center.read_log(id, 0, 1 << 20).await.unwrap().data).unwrap()
}

/// Live (non-zombie) processes in group `pgid`, read straight from /proc.
fn live_members(pgid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
            let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..].split_whitespace().collect();
            fields[2] == pgid.to_string() && fields[0] != "Z"
        })
        .collect()
}

fn process_of(center: &LocalCenter, id: &NativeId) -> ProcessRecord {
    center.dir_of(id).unwrap().process().expect("a started replica has a pid file")
}

#[tokio::test]
async fn passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"capacity": {"cpu": "16", "memory": "8Gi"}});
    let ctx = context(dir.path());
    conformance::run_all(|| Arc::new(LocalCenter::new("local1", &config, &ctx).unwrap()) as Arc<dyn Adapter>).await;
}

#[tokio::test]
async fn runs_in_its_work_dir_with_the_launch_env() {
    let dir = tempfile::tempdir().unwrap();
    let c = center(dir.path(), serde_json::Value::Null);
    let id = c.submit(&launch("env", "echo \"$GREETING\" from $(basename \"$PWD\"); exit 0", 1.0)).await.unwrap();
    assert_eq!(id.0, "env.t0.r1.a0", "the native id is the replica key");
    wait_until(&c, &id, |s| *s == NativeState::Succeeded).await;
    assert_eq!(log_of(&c, &id).await, "hi from env from work\n");
}

#[tokio::test]
async fn a_reused_pid_is_not_the_replica() {
    let dir = tempfile::tempdir().unwrap();
    let c = center(dir.path(), serde_json::Value::Null);
    let l = launch("reused", "sleep 30", 1.0);
    // Forge a started replica whose pid is now this test process.
    let replica = c.dir(&l.key);
    assert!(replica.create(&l, &dir.path().join("staging")).unwrap());
    std::fs::create_dir(replica.path().join("work")).unwrap();
    let pid = std::process::id() as i32;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start_time: u64 = stat[stat.rfind(')').unwrap() + 1..].split_whitespace().nth(19).unwrap().parse().unwrap();
    let id = NativeId(l.key.to_string());

    std::fs::write(replica.path().join("pid"), ProcessRecord { pid, start_time }.render()).unwrap();
    assert_eq!(state(&c, &id).await, NativeState::Running, "same pid and start time: it is the replica");

    std::fs::write(replica.path().join("pid"), ProcessRecord { pid, start_time: start_time + 1 }.render()).unwrap();
    let s = state(&c, &id).await;
    assert_eq!(
        s,
        NativeState::Failed { exit_code: None, category: FailureCategory::Center, reason: "process vanished".into() },
        "another start time: the replica is gone and the pid reused"
    );
    // Stopping it must not signal whatever now has the pid (this test, were it a group leader).
    c.stop(&id, Duration::from_millis(100)).await.unwrap();
    assert_eq!(state(&c, &id).await, s, "nothing ran, so nothing was stopped");
}

#[tokio::test]
async fn queued_replicas_start_in_order_when_capacity_frees_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"capacity": {"cpu": "1", "memory": "1Gi"}});
    let c = center(dir.path(), config.clone());
    let a = c.submit(&launch("qa", "sleep 30", 1.0)).await.unwrap();
    let b = c.submit(&launch("qb", "echo b-ran; sleep 30", 1.0)).await.unwrap();
    let d = c.submit(&launch("qc", "echo c-ran", 1.0)).await.unwrap();
    wait_until(&c, &a, |s| *s == NativeState::Running).await;
    assert_eq!((state(&c, &b).await, state(&c, &d).await), (NativeState::Queued, NativeState::Queued));
    let metrics = c.resources().await.unwrap().metrics;
    assert_eq!((metrics.running_task_num, metrics.waiting_task_num, metrics.cpu_free), (1, 2, 0));
    assert_eq!(metrics.confirmed_replicas, vec!["qa/0/1", "qb/0/1", "qc/0/1"]);
    let one_node = &metrics.node_free;
    assert_eq!(
        (one_node.len(), one_node[0].count, one_node[0].cpu_free, one_node[0].memory_free),
        (1, 1, 0, metrics.memory_free),
        "the local center is one node holding all that is free"
    );

    // A restarted node keeps the queue and its order.
    drop(c);
    let c = center(dir.path(), config);
    assert_eq!(c.resources().await.unwrap().metrics.waiting_task_num, 2);
    c.stop(&a, Duration::from_secs(1)).await.unwrap();
    wait_until(&c, &b, |s| *s == NativeState::Running).await;
    assert_eq!(state(&c, &d).await, NativeState::Queued, "FIFO: qc waits for qb");
    c.stop(&b, Duration::from_secs(1)).await.unwrap();
    wait_until(&c, &d, |s| *s == NativeState::Succeeded).await;
    assert_eq!(log_of(&c, &d).await, "c-ran\n");
}

#[tokio::test]
async fn stopping_a_queued_replica_never_starts_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = center(dir.path(), json!({"capacity": {"cpu": "1", "memory": "1Gi"}}));
    let a = c.submit(&launch("sqa", "sleep 30", 1.0)).await.unwrap();
    let b = c.submit(&launch("sqb", "sleep 30", 1.0)).await.unwrap();
    c.stop(&b, Duration::from_secs(1)).await.unwrap();
    c.stop(&a, Duration::from_secs(1)).await.unwrap();
    let metrics = c.resources().await.unwrap().metrics;
    assert_eq!((metrics.running_task_num, metrics.waiting_task_num), (0, 0));
    assert!(matches!(state(&c, &b).await, NativeState::Failed { category: FailureCategory::Stopped, .. }));
    assert!(!c.dir_of(&b).unwrap().was_started());
}

#[tokio::test]
async fn sigkill_follows_the_grace_period_and_leaves_no_process() {
    let dir = tempfile::tempdir().unwrap();
    // The center grants at most 300 ms, whatever the caller asks.
    let c = center(dir.path(), json!({"stop_grace_ms": 300}));
    let id = c.submit(&launch("trap", "trap '' TERM; sleep 30 & sleep 30; wait", 1.0)).await.unwrap();
    wait_until(&c, &id, |s| *s == NativeState::Running).await;
    let process = process_of(&c, &id);
    let deadline = Instant::now() + Duration::from_secs(5);
    while live_members(process.pid).len() < 3 {
        assert!(Instant::now() < deadline, "the wrapper, the shell and two sleeps should run");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    c.stop(&id, Duration::from_secs(60)).await.unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "SIGKILL came before the grace period: {took:?}");
    assert!(took < Duration::from_secs(3), "the center's stop_grace_ms must cap the grace: {took:?}");
    assert_eq!(live_members(process.pid), Vec::<i32>::new(), "processes survived the stop");
    assert!(matches!(state(&c, &id).await, NativeState::Failed { category: FailureCategory::Stopped, .. }));
}

#[tokio::test]
async fn stopped_processes_are_gone_and_the_wrapper_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let c = center(dir.path(), serde_json::Value::Null);
    let id = c.submit(&launch("gone", "sleep 30 & sleep 31; wait", 1.0)).await.unwrap();
    wait_until(&c, &id, |s| *s == NativeState::Running).await;
    let process = process_of(&c, &id);
    let started = Instant::now();
    c.stop(&id, Duration::from_secs(5)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "sleep dies of SIGTERM at once");
    assert_eq!(live_members(process.pid), Vec::<i32>::new());
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{}", process.pid)).exists() {
        assert!(Instant::now() < deadline, "the wrapper {} was not reaped (zombie)", process.pid);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!process.is_alive());
}

#[tokio::test]
async fn a_restart_finishes_a_stop_left_undone() {
    let dir = tempfile::tempdir().unwrap();
    let c = center(dir.path(), serde_json::Value::Null);
    let id = c.submit(&launch("half", "sleep 30", 1.0)).await.unwrap();
    wait_until(&c, &id, |s| *s == NativeState::Running).await;
    let process = process_of(&c, &id);
    // The node wrote the marker, then died before signalling.
    c.dir_of(&id).unwrap().mark_stopped().unwrap();
    let c = center(dir.path(), serde_json::Value::Null);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !live_members(process.pid).is_empty() {
        assert!(Instant::now() < deadline, "the new instance must kill the half-stopped replica");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(c.resources().await.unwrap().metrics.running_task_num, 0);
}

#[tokio::test]
async fn submit_checks_images_and_keeps_failed_starts_final() {
    let dir = tempfile::tempdir().unwrap();
    let c = center(dir.path(), json!({"images": ["pytorch:2"]}));
    let mut l = launch("img", "exit 0", 1.0);
    let err = c.submit(&l).await.unwrap_err();
    assert!(matches!(&err, AdapterError::Rejected(m) if m.contains("'default'")), "{err}");
    assert_eq!(c.find(&l.key).await.unwrap(), None);
    l.image = String::new();
    let id = c.submit(&l).await.unwrap();
    wait_until(&c, &id, |s| *s == NativeState::Succeeded).await;
    assert_eq!(c.images().await.unwrap()[0].name, "pytorch:2");
    let chunk = c.read_log(&id, 0, 10).await.unwrap();
    assert!(chunk.complete && chunk.data.is_empty());
}

#[test]
fn bad_configs_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let err = |config: serde_json::Value| match LocalCenter::new("c9", &config, &context(dir.path())) {
        Err(AdapterError::Config(message)) => message,
        Err(other) => panic!("{config}: not a config error: {other}"),
        Ok(_) => panic!("{config}: accepted"),
    };
    let m = err(json!({"capcity": {"cpu": "1"}}));
    assert!(m.contains("center 'c9'") && m.contains("unknown field `capcity`"), "{m}");
    let m = err(json!({"capacity": {"cpu": "4", "memory": "lots"}}));
    assert!(m.contains("capacity.memory") && m.contains("'lots'"), "{m}");
    let m = err(json!({"stop_grace_ms": "soon"}));
    assert!(m.contains("at 'stop_grace_ms'") && m.contains("invalid type"), "{m}");
    let m = err(json!({"images": "default"}));
    assert!(m.contains("at 'images'"), "{m}");
    let m = err(json!(["cpu"]));
    assert!(m.contains("local adapter config"), "{m}");

    let defaults = LocalCenter::new("c9", &serde_json::Value::Null, &context(dir.path())).unwrap();
    let cpus = std::thread::available_parallelism().unwrap().get() as f64;
    assert_eq!(defaults.lock().report().capacity.cpu, cpus);
    assert_eq!(defaults.max_grace, Duration::from_millis(5000));
}

#[tokio::test]
async fn storage_stays_inside_its_root() {
    let dir = tempfile::tempdir().unwrap();
    let c = center(dir.path(), serde_json::Value::Null);
    let store = c.storage().unwrap();
    store.put("data/x.bin", b"12345").await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("storage/data/x.bin")).unwrap(), b"12345");
    assert!(matches!(store.get("../replicas", 0, 10).await, Err(AdapterError::Rejected(_))));
    let fresh = center(dir.path(), serde_json::Value::Null);
    assert_eq!(fresh.storage().unwrap().list("da").await.unwrap(), vec![("data/x.bin".to_string(), 5)]);
}

#[tokio::test]
async fn announces_the_exit_of_every_replica_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let c = center(dir.path(), json!({}));
    let mut exits = c.events().expect("the local center pushes exit events");
    let id = c.submit(&launch("job-000000000061", "exit 0", 1.0)).await.unwrap();
    let announced = tokio::time::timeout(std::time::Duration::from_secs(10), exits.recv()).await;
    assert_eq!(announced.expect("announced in time").unwrap(), id);
    assert_eq!(state(&c, &id).await, NativeState::Succeeded);
}

/// A launch that notes each start of its command in `starts` and then runs `then`.
fn counted_launch(job: &str, starts: &Path, then: &str) -> ReplicaLaunch {
    launch(job, &format!("echo started >> '{}'; {then}", starts.display()), 1.0)
}

fn starts_in(starts: &Path) -> usize {
    std::fs::read_to_string(starts).map_or(0, |text| text.lines().count())
}

/// A submitted replica whose start the node's crash cut short right after `work/` was made.
fn forge_interrupted_start(c: &LocalCenter, launch: &ReplicaLaunch) -> ReplicaDir {
    let dir = c.dir(&launch.key);
    assert!(dir.create(launch, &c.staging_dir()).unwrap());
    std::fs::create_dir(dir.path().join("work")).unwrap();
    dir
}

#[tokio::test]
async fn a_start_cut_short_before_the_spawn_starts_that_replica_once() {
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("starts");
    // Forged behind the first instance's back: only the restarted one can start it.
    let config = json!({"capacity": {"cpu": "1", "memory": "1Gi"}});
    let c = center(dir.path(), config.clone());
    let l = counted_launch("never", &starts, "exit 0");
    forge_interrupted_start(&c, &l);
    drop(c);
    let c = center(dir.path(), config);
    let id = NativeId(l.key.to_string());
    wait_until(&c, &id, |s| *s == NativeState::Succeeded).await;
    assert_eq!(starts_in(&starts), 1, "the replica that never ran is started once, and is no center fault");
}

#[tokio::test]
async fn a_start_cut_short_after_the_spawn_adopts_the_running_replica() {
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("starts");
    let config = json!({"capacity": {"cpu": "1", "memory": "1Gi"}});
    let c = center(dir.path(), config.clone());
    let l = counted_launch("spawned", &starts, "sleep 1; exit 0");
    let replica = forge_interrupted_start(&c, &l);
    // The wrapper was spawned; the node died before it wrote the pid file.
    std::fs::remove_dir(replica.path().join("work")).unwrap();
    let spawned = replica.start(&l, || {}).unwrap();
    std::fs::remove_file(replica.path().join("pid")).unwrap();
    drop(c);
    let c = center(dir.path(), config);
    let id = NativeId(l.key.to_string());
    assert_eq!(state(&c, &id).await, NativeState::Running, "adopted, not a center fault");
    assert_eq!(process_of(&c, &id), spawned, "the pid file names the wrapper found");
    assert_eq!(c.resources().await.unwrap().metrics.cpu_free, 0, "the adopted replica holds its capacity");
    wait_until(&c, &id, |s| *s == NativeState::Succeeded).await;
    assert_eq!(starts_in(&starts), 1, "never started a second time");
}

#[tokio::test]
async fn a_start_whose_process_ran_and_vanished_is_a_center_fault_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let c = center(dir.path(), serde_json::Value::Null);
    let l = launch("vanished", "sleep 30", 1.0);
    let replica = forge_interrupted_start(&c, &l);
    std::fs::write(replica.log(), "partial output\n").unwrap();
    drop(c);
    let c = center(dir.path(), serde_json::Value::Null);
    match state(&c, &NativeId(l.key.to_string())).await {
        NativeState::Failed { category: FailureCategory::Center, reason, .. } => {
            assert!(reason.contains("ended without an exit status"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_cluster_never_adopts_another_clusters_replicas_in_a_shared_work_dir() {
    let dir = tempfile::tempdir().unwrap();
    let first =
        LocalCenter::new("local1", &serde_json::Value::Null, &AdapterContext::new(dir.path(), "first")).unwrap();
    let l = launch("job-000000000001", "exit 0", 1.0);
    let id = first.submit(&l).await.unwrap();
    wait_until(&first, &id, |s| *s == NativeState::Succeeded).await;
    let second =
        LocalCenter::new("local1", &serde_json::Value::Null, &AdapterContext::new(dir.path(), "second")).unwrap();
    assert_eq!(second.find(&l.key).await.unwrap(), None, "the first cluster's replica is not the second's");
    assert_eq!(state(&second, &id).await, NativeState::Missing);
}

#[tokio::test]
async fn a_start_under_way_in_another_instance_is_left_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = center(dir.path(), serde_json::Value::Null);
    let l = launch("underway", "exit 0", 1.0);
    let replica = forge_interrupted_start(&c, &l);
    // Another live instance holds the start lock: it is between `work/` and the pid file.
    let held = replica.start_lock(false).unwrap().expect("free");
    assert_eq!(replica.resolve_interrupted_start().unwrap(), super::replica::InterruptedStart::UnderWay);
    assert!(replica.was_started(), "left as it is");
    drop(held);
    assert_eq!(replica.resolve_interrupted_start().unwrap(), super::replica::InterruptedStart::NeverStarted);
}

#[tokio::test]
async fn a_start_that_failed_is_never_tried_again_by_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("starts");
    let c = center(dir.path(), serde_json::Value::Null);
    let l = counted_launch("failed-start", &starts, "exit 0");
    let replica = forge_interrupted_start(&c, &l);
    replica.record_start_error(&std::io::Error::other("no such interpreter"));
    drop(c);
    let c = center(dir.path(), serde_json::Value::Null);
    let id = NativeId(l.key.to_string());
    assert!(matches!(state(&c, &id).await, NativeState::Failed { category: FailureCategory::Center, .. }));
    c.resources().await.unwrap();
    assert_eq!(starts_in(&starts), 0, "a start that failed stays failed");
}

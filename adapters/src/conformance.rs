//! The conformance suite: the [`Adapter`] contract as executable checks, shared so that every
//! adapter — the built-in ones here, and Slurm, Kubernetes or vendor adapters elsewhere — is
//! held to the same behaviour the node relies on (idempotent submit, re-adoption after a
//! restart, final states with the right failure category, stop, logs, resources, storage).
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use jcs_adapters::{conformance, sim::SimCenter, Adapter, AdapterContext};
//! # async fn check(ctx: AdapterContext) {
//! let config = serde_json::json!({ "latency_ms": 1 });
//! conformance::run_all(|| Arc::new(SimCenter::new("sim1", &config, &ctx).unwrap()) as Arc<dyn Adapter>).await;
//! # }
//! ```
//!
//! `make` returns a *fresh* adapter instance on the *same* center (same work dir, same
//! cluster): checks build a second instance to play a restarted node. The center must run `sh`
//! commands (`echo`, `sleep`, `exit`) or read them like the simulator does, start a replica of
//! 1 CPU and 64 MB within seconds, and have room for a few at once. Each check uses its own
//! job ids and stops what it started, so checks may run against a center that is in use.
//! Failures panic with a message saying what the adapter did wrong.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jcs_api::model::{FailureCategory, ReplicaKey};
use jcs_api::quantity::ResourceAmounts;
use tokio::time::Instant;

use crate::{Adapter, AdapterError, NativeId, NativeState, ReplicaLaunch};

/// How a check gets adapter instances for the center under test.
pub type Make<'a> = &'a dyn Fn() -> Arc<dyn Adapter>;

/// Interval between polls while waiting for a state.
const POLL: Duration = Duration::from_millis(25);
/// Bound on waiting for a replica to start or to end on its own.
const WITHIN: Duration = Duration::from_secs(20);
/// Bound on a stopped replica to report `Stopped`.
const STOP_WITHIN: Duration = Duration::from_secs(5);
/// Grace given to stops.
const GRACE: Duration = Duration::from_secs(2);

/// Runs every check, one after the other.
pub async fn run_all(make: impl Fn() -> Arc<dyn Adapter>) {
    let make: Make<'_> = &make;
    submit_is_idempotent(make).await;
    unknown_keys_and_ids(make).await;
    success_with_log(make).await;
    exit_code_is_an_application_failure(make).await;
    stop_is_final_and_idempotent(make).await;
    impossible_demand_is_rejected(make).await;
    resources_count_running_replicas(make).await;
    fresh_instance_readopts_running_replica(make).await;
    storage_round_trip(make).await;
}

/// Submit → find returns the same id; submitting the key again, from this instance or a fresh
/// one, returns that id and does not run the command twice.
pub async fn submit_is_idempotent(make: Make<'_>) {
    let first = make();
    let launch = launch_for(&*first, "idem", "echo once-idem; sleep 0.3").await;
    let id = first.submit(&launch).await.expect("submit failed");
    let found = first.find(&launch.key).await.expect("find failed");
    assert_eq!(found, Some(id.clone()), "find after submit must return the submitted id");
    let again = first.submit(&launch).await.expect("second submit of the same key failed");
    assert_eq!(again, id, "a second submit of the same key must return the existing id");
    let second = make();
    assert_eq!(second.find(&launch.key).await.expect("find failed"), Some(id.clone()), "fresh instance: find");
    let again = second.submit(&launch).await.expect("fresh instance: submit of the same key failed");
    assert_eq!(again, id, "fresh instance: a submit of the same key must return the existing id");
    wait_for(&*second, &id, "idempotent submit", WITHIN, |s| *s == NativeState::Succeeded).await;
    let log = read_whole_log(&*second, &id, 64).await;
    assert_eq!(log.matches("once-idem").count(), 1, "the command must run exactly once; log: {log:?}");
}

/// Unknown keys are not found; unknown ids are `Missing`, stop as a no-op and have no log.
pub async fn unknown_keys_and_ids(make: Make<'_>) {
    let adapter = make();
    let key = key("unknown");
    assert_eq!(adapter.find(&key).await.expect("find failed"), None, "find of a never-submitted key");
    for id in [NativeId(key.to_string()), NativeId(format!("conformance-no-such-id-{}", nonce()))] {
        let states = adapter.status(std::slice::from_ref(&id)).await.expect("status of an unknown id failed");
        assert_eq!(states, vec![NativeState::Missing], "status of unknown id {id}");
        adapter.stop(&id, GRACE).await.unwrap_or_else(|e| panic!("stop of unknown id {id} must succeed: {e}"));
        let log = adapter.read_log(&id, 0, 100).await;
        assert!(matches!(log, Err(AdapterError::NotFound(_))), "read_log of unknown id {id}: {log:?}");
    }
}

/// A command that prints and sleeps succeeds; its log, read in small chunks, holds the output
/// and ends `complete`; status answers in the order asked.
pub async fn success_with_log(make: Make<'_>) {
    let adapter = make();
    let launch = launch_for(&*adapter, "ok", "echo hello-conformance; sleep 0.3").await;
    let id = adapter.submit(&launch).await.expect("submit failed");
    wait_for(&*adapter, &id, "echo; sleep 0.3", WITHIN, |s| *s == NativeState::Succeeded).await;
    let unknown = NativeId(key("ok-unknown").to_string());
    let states = adapter.status(&[id.clone(), unknown, id.clone()]).await.expect("status failed");
    assert_eq!(
        states,
        vec![NativeState::Succeeded, NativeState::Missing, NativeState::Succeeded],
        "status must answer each id in the order asked"
    );
    let log = read_whole_log(&*adapter, &id, 7).await;
    assert!(log.contains("hello-conformance"), "the log must hold the command's output; log: {log:?}");
}

/// `exit 3` fails with exit code 3, the application's fault.
pub async fn exit_code_is_an_application_failure(make: Make<'_>) {
    let adapter = make();
    let launch = launch_for(&*adapter, "exit", "exit 3").await;
    let id = adapter.submit(&launch).await.expect("submit failed");
    let state = wait_for(&*adapter, &id, "exit 3", WITHIN, NativeState::is_final).await;
    assert!(
        matches!(state, NativeState::Failed { exit_code: Some(3), category: FailureCategory::Application, .. }),
        "exit 3 must be Failed {{ exit_code: Some(3), category: Application }}, got {state:?}"
    );
}

/// A running replica stops within seconds and reports `Stopped`; stopping it again, or an
/// unknown id, succeeds.
pub async fn stop_is_final_and_idempotent(make: Make<'_>) {
    let adapter = make();
    let launch = launch_for(&*adapter, "stop", "sleep 30").await;
    let id = adapter.submit(&launch).await.expect("submit failed");
    wait_for(&*adapter, &id, "sleep 30 starting", WITHIN, |s| *s == NativeState::Running).await;
    adapter.stop(&id, GRACE).await.expect("stop failed");
    wait_for(&*adapter, &id, "stopped replica", STOP_WITHIN, is_stopped).await;
    adapter.stop(&id, GRACE).await.expect("a second stop must succeed");
    adapter.stop(&NativeId(key("stop-unknown").to_string()), GRACE).await.expect("stop of an unknown id must succeed");
    let state = status_of(&*adapter, &id).await;
    assert!(is_stopped(&state), "a stopped replica must stay stopped, got {state:?}");
    read_whole_log(&*adapter, &id, 1024).await;
}

/// A demand larger than the whole center is rejected, and nothing is recorded under its key.
pub async fn impossible_demand_is_rejected(make: Make<'_>) {
    let adapter = make();
    let mut launch = launch_for(&*adapter, "huge", "sleep 1").await;
    launch.demand.cpu = 1e12;
    let result = adapter.submit(&launch).await;
    assert!(matches!(result, Err(AdapterError::Rejected(_))), "a 1e12-CPU demand must be rejected, got {result:?}");
    assert_eq!(adapter.find(&launch.key).await.expect("find failed"), None, "a rejected submit leaves nothing");
}

/// While a replica runs, the resource report counts and confirms it; after it ends, it does not.
pub async fn resources_count_running_replicas(make: Make<'_>) {
    let adapter = make();
    let launch = launch_for(&*adapter, "res", "sleep 30").await;
    let id = adapter.submit(&launch).await.expect("submit failed");
    wait_for(&*adapter, &id, "sleep 30 starting", WITHIN, |s| *s == NativeState::Running).await;
    let confirmed = replica_ref(&launch.key);
    let report = adapter.resources().await.expect("resources failed");
    let metrics = &report.metrics;
    assert!(metrics.confirmed_replicas.contains(&confirmed), "running {confirmed} not confirmed: {metrics:?}");
    assert!(metrics.running_task_num >= 1, "running_task_num must count the running replica: {metrics:?}");
    assert!(metrics.cpu_used > 0, "cpu_used must count the running replica's CPU: {metrics:?}");
    assert!(report.capacity.cpu >= launch.demand.cpu, "capacity must cover what runs: {:?}", report.capacity);
    adapter.stop(&id, GRACE).await.expect("stop failed");
    wait_for(&*adapter, &id, "stopped replica", STOP_WITHIN, is_stopped).await;
    let metrics = adapter.resources().await.expect("resources failed").metrics;
    assert!(!metrics.confirmed_replicas.contains(&confirmed), "ended {confirmed} still confirmed: {metrics:?}");
}

/// A replica started through one instance is found, reported running, counted and stopped by a
/// fresh instance — a restarted node re-adopts what its predecessor started.
pub async fn fresh_instance_readopts_running_replica(make: Make<'_>) {
    let first = make();
    let launch = launch_for(&*first, "adopt", "sleep 30").await;
    let id = first.submit(&launch).await.expect("submit failed");
    wait_for(&*first, &id, "sleep 30 starting", WITHIN, |s| *s == NativeState::Running).await;
    let second = make();
    assert_eq!(second.find(&launch.key).await.expect("find failed"), Some(id.clone()), "fresh instance: find");
    assert_eq!(status_of(&*second, &id).await, NativeState::Running, "fresh instance: status of the running replica");
    let metrics = second.resources().await.expect("resources failed").metrics;
    let confirmed = replica_ref(&launch.key);
    assert!(metrics.confirmed_replicas.contains(&confirmed), "fresh instance must confirm {confirmed}: {metrics:?}");
    second.stop(&id, GRACE).await.expect("fresh instance: stop failed");
    wait_for(&*second, &id, "replica stopped by a fresh instance", STOP_WITHIN, is_stopped).await;
}

/// put/get/list/delete round trip and path checks, when the adapter offers storage.
pub async fn storage_round_trip(make: Make<'_>) {
    let adapter = make();
    if !adapter.capabilities().storage {
        assert!(adapter.storage().is_none(), "storage() must be None without the storage capability");
        return;
    }
    let store = adapter.storage().expect("capabilities().storage is true but storage() is None");
    let dir = format!("conformance-{}", nonce());
    let (a, b) = (format!("{dir}/a.txt"), format!("{dir}/sub/b.bin"));
    store.put(&a, b"hello conformance").await.expect("put failed");
    store.put(&b, &[0, 1, 2, 255]).await.expect("put of a nested path failed");
    assert_eq!(store.get(&a, 0, 1000).await.expect("get failed"), b"hello conformance");
    assert_eq!(store.get(&a, 6, 5).await.expect("get of a range failed"), b"confo");
    assert_eq!(store.get(&a, 1000, 5).await.expect("get past the end failed"), b"");
    let listed = store.list(&format!("{dir}/")).await.expect("list failed");
    assert_eq!(listed, vec![(a.clone(), 17), (b.clone(), 4)], "list must give paths and sizes");
    assert_eq!(store.list(&format!("{dir}/sub/")).await.expect("list failed"), vec![(b.clone(), 4)]);
    store.put(&a, b"v2").await.expect("overwrite failed");
    assert_eq!(store.get(&a, 0, 1000).await.expect("get failed"), b"v2", "put must replace");
    store.delete(&a).await.expect("delete failed");
    store.delete(&a).await.expect("delete of a deleted path must succeed");
    assert!(matches!(store.get(&a, 0, 10).await, Err(AdapterError::NotFound(_))), "get of a deleted path");
    assert_eq!(store.list(&format!("{dir}/")).await.expect("list failed"), vec![(b.clone(), 4)]);
    for bad in [String::new(), "/etc/passwd".into(), "../x".into(), format!("{dir}//x"), format!("{dir}/../../x")] {
        let put = store.put(&bad, b"x").await;
        assert!(matches!(put, Err(AdapterError::Rejected(_))), "put to {bad:?} must be rejected, got {put:?}");
    }
    store.delete(&b).await.expect("delete failed");
}

/// A job id no other check, run or process uses.
fn nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}-{:x}", std::process::id(), nanos.wrapping_add(n))
}

fn key(check: &str) -> ReplicaKey {
    ReplicaKey { job_id: format!("cf-{check}-{}", nonce()), task: 0, replica: 0, attempt: 0 }
}

/// `jobId/task/replica`, as `confirmed_replicas` lists it.
fn replica_ref(key: &ReplicaKey) -> String {
    format!("{}/{}/{}", key.job_id, key.task, key.replica)
}

/// A launch of 1 CPU and 64 MB, on the center's first image when it has images.
async fn launch_for(adapter: &dyn Adapter, check: &str, command: &str) -> ReplicaLaunch {
    let image = if adapter.capabilities().images {
        let images = adapter.images().await.expect("images failed");
        images.first().map(|image| image.reference.clone()).unwrap_or_default()
    } else {
        String::new()
    };
    let key = key(check);
    let env = BTreeMap::from([
        ("JCS_JOB_ID".to_string(), key.job_id.clone()),
        ("JCS_TASK".to_string(), key.task.to_string()),
        ("JCS_REPLICA_INDEX".to_string(), key.replica.to_string()),
        ("JCS_REPLICAS".to_string(), "1".to_string()),
    ]);
    ReplicaLaunch {
        key,
        command: command.to_string(),
        image,
        demand: ResourceAmounts { cpu: 1.0, memory_mb: 64.0, ..ResourceAmounts::default() },
        env,
        duration_hint: None,
    }
}

fn is_stopped(state: &NativeState) -> bool {
    matches!(state, NativeState::Failed { category: FailureCategory::Stopped, .. })
}

/// The state of one replica; a transient error is retried for a while.
async fn status_of(adapter: &dyn Adapter, id: &NativeId) -> NativeState {
    wait_for(adapter, id, "status", WITHIN, |_| true).await
}

/// The state of one replica (for the adapters' own tests too).
#[cfg(test)]
pub(crate) async fn state_of(adapter: &dyn Adapter, id: &NativeId) -> NativeState {
    status_of(adapter, id).await
}

/// Polls `id` until `done` holds, within the suite's bound (for the adapters' own tests too).
#[cfg(test)]
pub(crate) async fn wait_until(
    adapter: &dyn Adapter,
    id: &NativeId,
    done: impl Fn(&NativeState) -> bool,
) -> NativeState {
    wait_for(adapter, id, "wait", WITHIN, done).await
}

/// Polls `id` until `done` holds; panics after `within` with the last state seen.
async fn wait_for(
    adapter: &dyn Adapter,
    id: &NativeId,
    what: &str,
    within: Duration,
    done: impl Fn(&NativeState) -> bool,
) -> NativeState {
    let deadline = Instant::now() + within;
    loop {
        let last = match adapter.status(std::slice::from_ref(id)).await {
            Ok(states) => {
                assert_eq!(states.len(), 1, "{what}: status of one id returned {states:?}");
                let state = states.into_iter().next().expect("one state");
                if done(&state) {
                    return state;
                }
                format!("{state:?}")
            }
            Err(AdapterError::Unavailable(why)) => format!("unavailable ({why})"),
            Err(e) => panic!("{what}: status of {id} failed: {e}"),
        };
        assert!(Instant::now() < deadline, "{what}: {id} is still {last} after {within:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// Reads an ended replica's log in chunks of `chunk` bytes until `complete`.
async fn read_whole_log(adapter: &dyn Adapter, id: &NativeId, chunk: usize) -> String {
    let deadline = Instant::now() + WITHIN;
    let (mut log, mut offset) = (Vec::new(), 0u64);
    loop {
        let piece = adapter.read_log(id, offset, chunk).await.unwrap_or_else(|e| panic!("read_log of {id}: {e}"));
        assert!(piece.data.len() <= chunk, "read_log returned {} bytes, more than the {chunk} asked", piece.data.len());
        assert_eq!(piece.next_offset, offset + piece.data.len() as u64, "next_offset must follow the data read");
        offset = piece.next_offset;
        log.extend_from_slice(&piece.data);
        if piece.complete {
            break;
        }
        if piece.data.is_empty() {
            assert!(Instant::now() < deadline, "the log of ended replica {id} is not complete after {WITHIN:?}");
            tokio::time::sleep(POLL).await;
        }
    }
    let tail = adapter.read_log(id, offset, chunk).await.unwrap_or_else(|e| panic!("read_log of {id}: {e}"));
    assert!(tail.data.is_empty() && tail.complete, "reading past a complete log must give nothing, complete: {tail:?}");
    String::from_utf8_lossy(&log).into_owned()
}

//! The simulated center against the conformance suite, and its failure injection, outage
//! failpoint, persistence (snapshot and journal) and command language.

use std::path::Path;
use std::sync::Arc;

use jcs_api::model::FailureCategory;
use jcs_api::quantity::ResourceAmounts;
use serde_json::json;
use tokio::time::Instant;

use super::*;
use crate::conformance::{self, state_of as state, wait_until};

fn context(dir: &Path) -> AdapterContext {
    // No cluster id: the platform's files are right in `dir`.
    AdapterContext::new(dir, "")
}

fn sim(dir: &Path, config: serde_json::Value) -> SimCenter {
    SimCenter::new("sim1", &config, &context(dir)).expect("valid config")
}

fn launch(job: &str, command: &str) -> ReplicaLaunch {
    ReplicaLaunch {
        key: ReplicaKey { job_id: job.to_string(), task: 2, replica: 0, attempt: 1 },
        command: command.to_string(),
        image: "default".to_string(),
        demand: ResourceAmounts { cpu: 1.0, memory_mb: 100.0, ..Default::default() },
        env: BTreeMap::new(),
        duration_hint: None,
    }
}

#[tokio::test]
async fn passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"latency_ms": 1});
    let ctx = context(dir.path());
    conformance::run_all(|| Arc::new(SimCenter::new("sim1", &config, &ctx).unwrap()) as Arc<dyn Adapter>).await;
}

#[tokio::test]
async fn commands_set_runtime_exit_code_and_output() {
    let dir = tempfile::tempdir().unwrap();
    let s = sim(dir.path(), json!({"latency_ms": 0}));
    let started = Instant::now();
    let ok = s.submit(&launch("echo", "echo hi; sleep 0.2")).await.unwrap();
    let failed = s.submit(&launch("exit", "exit 3")).await.unwrap();
    assert_eq!(
        state(&s, &failed).await,
        NativeState::Failed {
            exit_code: Some(3),
            category: FailureCategory::Application,
            reason: "exit code 3".into()
        },
        "exit 3 fails at once"
    );
    assert_eq!(state(&s, &ok).await, NativeState::Running);
    wait_until(&s, &ok, |st| *st == NativeState::Succeeded).await;
    assert!(started.elapsed() >= Duration::from_millis(200), "sleep 0.2 lasts 0.2 s");
    let log = String::from_utf8(s.read_log(&ok, 0, 4096).await.unwrap().data).unwrap();
    assert_eq!(
        log,
        "[sim] echo.t2.r0.a1 started on sim1\nhi\n[sim] progress 10%\n[sim] progress 20%\n[sim] progress 30%\n\
         [sim] progress 40%\n[sim] progress 50%\n[sim] progress 60%\n[sim] progress 70%\n[sim] progress 80%\n\
         [sim] progress 90%\n[sim] exit code 0\n"
    );
}

#[tokio::test]
async fn without_sleep_or_exit_the_hint_or_default_duration_applies_scaled() {
    let dir = tempfile::tempdir().unwrap();
    let s = sim(dir.path(), json!({"latency_ms": 0, "default_duration_secs": 30, "time_scale": 300}));
    let started = Instant::now();
    let default = s.submit(&launch("default", "python train.py")).await.unwrap();
    let hinted = ReplicaLaunch { duration_hint: Some(Duration::from_secs(60)), ..launch("hint", "python train.py") };
    let hinted = s.submit(&hinted).await.unwrap();
    assert_eq!(
        s.status(&[default.clone(), hinted.clone()]).await.unwrap(),
        [NativeState::Running, NativeState::Running]
    );
    wait_until(&s, &default, |st| *st == NativeState::Succeeded).await;
    assert!(started.elapsed() >= Duration::from_millis(100), "30 s at 300x lasts 0.1 s");
    wait_until(&s, &hinted, |st| *st == NativeState::Succeeded).await;
    assert!(started.elapsed() >= Duration::from_millis(200), "a 60 s hint at 300x lasts 0.2 s");
}

#[tokio::test]
async fn native_queue_and_capacity_accounting() {
    let dir = tempfile::tempdir().unwrap();
    let s = sim(dir.path(), json!({"latency_ms": 0, "capacity": {"cpu": "1", "memory": "1Gi"}}));
    let a = s.submit(&launch("qa", "sleep 30")).await.unwrap();
    let b = s.submit(&launch("qb", "sleep 0")).await.unwrap();
    assert_eq!(state(&s, &b).await, NativeState::Queued);
    let report = s.resources().await.unwrap();
    let m = &report.metrics;
    assert_eq!((m.center_name.as_str(), m.running_task_num, m.waiting_task_num), ("sim1", 1, 1));
    assert_eq!((m.cpu_used, m.cpu_free, m.memory_used), (1, 0, 100));
    assert_eq!(m.confirmed_replicas, vec!["qa/2/0", "qb/2/0"]);
    let mut huge = launch("huge", "sleep 1");
    huge.demand.gpu = 1.0;
    assert!(matches!(s.submit(&huge).await, Err(AdapterError::Rejected(_))), "no gpu at all here");
    s.stop(&a, Duration::ZERO).await.unwrap();
    assert_eq!(state(&s, &b).await, NativeState::Succeeded, "b ran as soon as a freed the cpu");
    assert_eq!(s.resources().await.unwrap().metrics.confirmed_replicas, Vec::<String>::new());
}

#[tokio::test]
async fn transient_errors_follow_the_rate_and_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let outcomes = |seed: u64| {
        let s = sim(dir.path(), json!({"latency_ms": 0, "transient_error_pct": 30, "seed": seed}));
        async move {
            let mut pattern = Vec::new();
            for _ in 0..400 {
                pattern.push(s.resources().await.is_err());
            }
            pattern
        }
    };
    let first = outcomes(7).await;
    assert_eq!(first, outcomes(7).await, "the same seed fails the same calls");
    assert_ne!(first, outcomes(8).await, "another seed fails others");
    let failures = first.iter().filter(|f| **f).count();
    assert!((80..=160).contains(&failures), "{failures} of 400 calls failed at 30%");
}

#[tokio::test]
async fn a_failed_submit_may_have_taken_effect() {
    let dir = tempfile::tempdir().unwrap();
    let flaky = sim(dir.path(), json!({"latency_ms": 0, "transient_error_pct": 100}));
    let launches: Vec<_> = (0..40).map(|i| launch(&format!("lost{i}"), "sleep 30")).collect();
    for l in &launches {
        assert_eq!(flaky.submit(l).await, Err(transient()));
    }
    let healthy = sim(dir.path(), json!({"latency_ms": 0}));
    let mut applied = 0;
    for l in &launches {
        applied += usize::from(healthy.find(&l.key).await.unwrap().is_some());
    }
    assert!((8..=32).contains(&applied), "{applied} of 40 failed submits took effect; about half should");
}

#[tokio::test]
async fn failure_injection_is_deterministic_per_key_and_seed() {
    let outcomes = |seed: u64| async move {
        let dir = tempfile::tempdir().unwrap();
        let s = sim(dir.path(), json!({"latency_ms": 0, "failure_pct": 40, "seed": seed}));
        let mut failed = Vec::new();
        for i in 0..60 {
            let id = s.submit(&launch(&format!("f{i}"), "sleep 0")).await.unwrap();
            let st = state(&s, &id).await;
            assert!(matches!(st, NativeState::Succeeded | NativeState::Failed { exit_code: Some(1), .. }), "{st:?}");
            failed.push(st != NativeState::Succeeded);
        }
        let explicit = s.submit(&launch("explicit", "exit 0")).await.unwrap();
        assert_eq!(state(&s, &explicit).await, NativeState::Succeeded, "an explicit exit is never overridden");
        failed
    };
    let first = outcomes(3).await;
    assert_eq!(first, outcomes(3).await);
    assert_ne!(first, outcomes(4).await);
    let n = first.iter().filter(|f| **f).count();
    assert!((12..=36).contains(&n), "{n} of 60 failed at 40%");
}

#[tokio::test]
async fn the_outage_file_makes_every_call_fail_until_removed() {
    let dir = tempfile::tempdir().unwrap();
    let s = sim(dir.path(), json!({"latency_ms": 0}));
    let id = s.submit(&launch("outage", "sleep 30")).await.unwrap();
    std::fs::write(dir.path().join("OUTAGE"), b"").unwrap();
    let outage = AdapterError::Unavailable("simulated outage".into());
    assert_eq!(s.resources().await.unwrap_err(), outage);
    assert_eq!(s.status(std::slice::from_ref(&id)).await.unwrap_err(), outage);
    assert_eq!(s.submit(&launch("during", "sleep 1")).await.unwrap_err(), outage);
    assert_eq!(s.stop(&id, Duration::ZERO).await.unwrap_err(), outage);
    std::fs::remove_file(dir.path().join("OUTAGE")).unwrap();
    assert_eq!(state(&s, &id).await, NativeState::Running, "service is back and the replica ran on");
    assert_eq!(s.find(&launch("during", "").key).await.unwrap(), None);
}

#[tokio::test]
async fn state_survives_a_new_instance() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"latency_ms": 0, "capacity": {"cpu": "1", "memory": "1Gi"}});
    let s = sim(dir.path(), config.clone());
    let done = s.submit(&launch("done", "exit 2")).await.unwrap();
    let running = s.submit(&launch("keep", "sleep 30")).await.unwrap();
    let queued = s.submit(&launch("wait", "sleep 0.05")).await.unwrap();
    drop(s);
    let s = sim(dir.path(), config.clone());
    assert_eq!(s.find(&launch("keep", "").key).await.unwrap(), Some(running.clone()));
    let states = s.status(&[running.clone(), queued.clone(), done.clone()]).await.unwrap();
    assert_eq!(states[..2], [NativeState::Running, NativeState::Queued]);
    assert!(matches!(states[2], NativeState::Failed { exit_code: Some(2), .. }), "{states:?}");
    s.stop(&running, Duration::ZERO).await.unwrap();
    wait_until(&s, &queued, |st| *st == NativeState::Succeeded).await;
    let s = sim(dir.path(), config);
    assert!(matches!(state(&s, &running).await, NativeState::Failed { category: FailureCategory::Stopped, .. }));
    assert_eq!(state(&s, &queued).await, NativeState::Succeeded);
    let next = s.submit(&launch("next", "exit 0")).await.unwrap();
    assert!(![&running, &queued, &done].contains(&&next), "ids are never reused: {next}");
}

#[tokio::test]
async fn native_ids_are_not_keys() {
    let dir = tempfile::tempdir().unwrap();
    let s = sim(dir.path(), json!({"latency_ms": 0}));
    let l = launch("ids", "exit 0");
    let id = s.submit(&l).await.unwrap();
    assert!(id.0.starts_with("sim-"), "{id}");
    assert_eq!(state(&s, &NativeId(l.key.to_string())).await, NativeState::Missing);
}

#[test]
fn bad_configs_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let err = |config: serde_json::Value| match SimCenter::new("s9", &config, &context(dir.path())) {
        Err(AdapterError::Config(message)) => message,
        Err(other) => panic!("{config}: not a config error: {other}"),
        Ok(_) => panic!("{config}: accepted"),
    };
    let m = err(json!({"latency": 5}));
    assert!(m.contains("center 's9'") && m.contains("unknown field `latency`"), "{m}");
    assert!(err(json!({"transient_error_pct": 101})).contains("transient_error_pct is 101, must be between 0 and 100"));
    assert!(err(json!({"failure_pct": 200})).contains("failure_pct is 200"));
    assert!(err(json!({"time_scale": 0.0})).contains("time_scale is 0"));
    assert!(err(json!({"default_duration_secs": -1.0})).contains("default_duration_secs is -1"));
    assert!(err(json!({"capacity": {"gpu": "two"}})).contains("capacity.gpu"));
    assert!(err(json!({"seed": "x"})).contains("at 'seed'"));
    std::fs::write(dir.path().join("sim-state.json"), b"{not json").unwrap();
    assert!(err(serde_json::Value::Null).contains("corrupt simulator state"));
}

/// The whole saved form of an instance's state, to compare instances exactly.
fn saved(s: &SimCenter) -> Vec<u8> {
    s.lock().state.snapshot()
}

fn compact(s: &SimCenter) {
    let inner = &mut *s.lock();
    inner.journal.compact(&inner.state).unwrap();
}

fn file_len(dir: &Path, name: &str) -> u64 {
    std::fs::metadata(dir.join(name)).map_or(0, |m| m.len())
}

#[tokio::test]
async fn a_snapshot_and_the_journal_after_it_recover_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"latency_ms": 0, "capacity": {"cpu": "1", "memory": "1Gi"}});
    let s = sim(dir.path(), config.clone());
    let first = s.submit(&launch("first", "sleep 30")).await.unwrap();
    let queued = s.submit(&launch("queued", "sleep 30")).await.unwrap();
    compact(&s);
    let last = s.submit(&launch("last", "sleep 30")).await.unwrap();
    s.stop(&first, Duration::ZERO).await.unwrap();
    assert!(file_len(dir.path(), "sim-state.json") > 0 && file_len(dir.path(), "sim-journal.jsonl") > 0);
    let expected = saved(&s);
    drop(s);

    let s = sim(dir.path(), config);
    assert_eq!(saved(&s), expected);
    assert_eq!(s.find(&launch("queued", "").key).await.unwrap(), Some(queued.clone()));
    let states = s.status(&[first, queued, last]).await.unwrap();
    assert!(matches!(states[0], NativeState::Failed { category: FailureCategory::Stopped, .. }), "{states:?}");
    assert_eq!(states[1..], [NativeState::Running, NativeState::Queued], "started from the queue when first stopped");
}

#[tokio::test]
async fn a_torn_final_journal_line_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"latency_ms": 0});
    let s = sim(dir.path(), config.clone());
    let kept = s.submit(&launch("kept", "sleep 30")).await.unwrap();
    let expected = saved(&s);
    drop(s);
    let journal = dir.path().join("sim-journal.jsonl");
    let mut file = std::fs::OpenOptions::new().append(true).open(&journal).unwrap();
    std::io::Write::write_all(&mut file, br#"{"saved_us":1,"next_seq":3,"replicas":[{"seq":2,"key":"#).unwrap();

    let s = sim(dir.path(), config.clone());
    assert_eq!(saved(&s), expected, "the torn change is lost, nothing else");
    assert_eq!(file_len(dir.path(), "sim-journal.jsonl"), 0, "the fragment is compacted away at once");
    let next = s.submit(&launch("next", "sleep 30")).await.unwrap();
    let expected = saved(&s);
    drop(s);
    let s = sim(dir.path(), config);
    assert_eq!(saved(&s), expected);
    assert_eq!(s.status(&[kept, next]).await.unwrap(), [NativeState::Running, NativeState::Running]);
}

#[tokio::test]
async fn compaction_keeps_the_state_and_changes_after_it_reload_alike() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"latency_ms": 0, "capacity": {"cpu": "1", "memory": "1Gi"}});
    let s = sim(dir.path(), config.clone());
    let running = s.submit(&launch("running", "sleep 30")).await.unwrap();
    s.submit(&launch("waiting", "sleep 30")).await.unwrap();
    let before = saved(&s);
    compact(&s);
    assert_eq!(file_len(dir.path(), "sim-journal.jsonl"), 0);
    assert_eq!(saved(&sim(dir.path(), config.clone())), before, "the snapshot alone holds the state");

    s.stop(&running, Duration::ZERO).await.unwrap();
    s.submit(&launch("later", "sleep 30")).await.unwrap();
    assert_eq!(saved(&sim(dir.path(), config.clone())), saved(&s), "snapshot and journal hold the state");

    // Enough changes to outgrow the minimum journal size: it is compacted on its own.
    for i in 0..1_500 {
        s.submit(&launch(&format!("many{i}"), "sleep 30")).await.unwrap();
    }
    let lines = std::fs::read(dir.path().join("sim-journal.jsonl")).unwrap().split(|&b| b == b'\n').count();
    assert!(lines < 1_500, "{lines} journal lines after 1,500 submits: never compacted");
    assert_eq!(saved(&sim(dir.path(), config)), saved(&s));
}

#[tokio::test]
async fn instances_saving_into_one_work_dir_leave_the_last_writers_state() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"latency_ms": 0});
    let old = sim(dir.path(), config.clone());
    old.submit(&launch("before", "sleep 30")).await.unwrap();
    let new = sim(dir.path(), config.clone());
    new.submit(&launch("new", "sleep 30")).await.unwrap();
    old.submit(&launch("old", "sleep 30")).await.unwrap();
    let s = sim(dir.path(), config);
    assert_eq!(saved(&s), saved(&old), "the old instance saw another's line and saved its whole state");
    assert_eq!(s.find(&launch("new", "").key).await.unwrap(), None);
}

#[tokio::test]
async fn a_cluster_finds_only_its_own_submissions_on_a_shared_platform() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"latency_ms": 0});
    let first = SimCenter::new("s1", &config, &AdapterContext::new(dir.path(), "first")).unwrap();
    let l = launch("job-000000000001", "sleep 1");
    let key = l.key.clone();
    let submitted = first.submit(&l).await.unwrap();
    assert_eq!(first.find(&key).await.unwrap(), Some(submitted));
    let second = SimCenter::new("s1", &config, &AdapterContext::new(dir.path(), "second")).unwrap();
    assert_eq!(second.find(&key).await.unwrap(), None, "another cluster's job under the same key is not ours");
}

//! Replicas after placement: dispatch recorded at most once, reports from the center, retries
//! on the same center, reschedules after center faults, stops, the status policies, events —
//! and a property test that random interleavings keep the work lists true to the phases.

use jcs_api::model::{
    EventKind, FailureCategory, Observed, ReplicaKey, ReplicaPhase, ReplicaReport, RetryPolicy, StatusPolicy,
};
use proptest::prelude::*;

use super::*;
use crate::command::{PlacementBatch, PlacementDecision};
use crate::tables::{StopOrder, WorkList};

/// Centers `c1`, `c2` (both offer `s1`, both hold an image named like `img1`), a job of
/// `tasks` tasks × `replicas` placed on `c1`, retry policy `retry`.
fn placed_job(tasks: usize, replicas: i64, retry: RetryPolicy, policy: StatusPolicy) -> (MemKv, String) {
    let mut kv = MemKv::default();
    ok(&mut kv, put_center(center("c1"), Create));
    ok(&mut kv, put_center(center("c2"), Create));
    ok(&mut kv, put_spec(spec("s1", &["c1", "c2"]), Create));
    ok(&mut kv, put_image(image("img1", "c1", &[]), Create));
    let mut request = job_request("img1", "s1", replicas);
    request.tasks =
        (0..tasks).map(|i| jcs_api::model::CreateTask { name: format!("t{i}"), ..request.tasks[0].clone() }).collect();
    request.retry = Some(retry);
    request.status_policy = Some(policy);
    let job = submitted(&mut kv, request);
    let decision = PlacementDecision::new(
        job.id.clone(),
        vec![Some(vec!["c1".to_string(); replicas as usize]); tasks],
        &placed_explain(&job.id),
    );
    let batch = PlacementBatch { term: 1, snapshot_version: 0, ledger_ttl_ms: 600_000, decisions: vec![decision] };
    ok(&mut kv, Command::Place(Box::new(batch)));
    (kv, job.id)
}

fn placed_explain(job_id: &str) -> jcs_api::model::Explain {
    super::placement::explain(job_id, jcs_api::model::DecisionOutcome::Placed, "placed")
}

fn key(job: &str, task: u32, replica: u32, attempt: u32) -> ReplicaKey {
    ReplicaKey { job_id: job.into(), task, replica, attempt }
}

fn dispatched(kv: &mut MemKv, k: &ReplicaKey) -> Outcome {
    let command =
        Command::Dispatched { center_id: "c1".into(), owner_epoch: 0, key: k.clone(), native_id: k.to_string() };
    ok(kv, command)
}

fn report(kv: &mut MemKv, center: &str, k: &ReplicaKey, observed: Observed) {
    let reports = vec![ReplicaReport { key: k.clone(), observed }];
    ok(kv, Command::ReportReplicas { center_id: center.into(), owner_epoch: 0, reports });
}

fn failed(category: FailureCategory, code: Option<i32>) -> Observed {
    Observed::Failed { exit_code: code, category, reason: format!("exit code {}", code.unwrap_or(-1)) }
}

fn job_of(kv: &MemKv, id: &str) -> Job {
    stored(kv, JOB, id).unwrap()
}

fn phases(kv: &MemKv, id: &str) -> Vec<ReplicaPhase> {
    job_of(kv, id).tasks.iter().flat_map(|t| t.replicas.iter().map(|r| r.phase)).collect()
}

fn events(kv: &MemKv) -> Vec<EventKind> {
    tables::values_under::<jcs_api::model::CenterEvent>(kv, tables::EVENT_PREFIX)
        .unwrap()
        .iter()
        .map(|e| e.kind)
        .collect()
}

/// Dispatches and starts every replica of the job.
fn run_all(kv: &mut MemKv, id: &str) {
    let job = job_of(kv, id);
    for (t, task) in job.tasks.iter().enumerate() {
        for (r, replica) in task.replicas.iter().enumerate() {
            let k = key(id, t as u32, r as u32, replica.attempt);
            dispatched(kv, &k);
            report(kv, &task.center_ids[r], &k, Observed::Running);
        }
    }
}

#[test]
fn placement_orders_dispatch_and_dispatch_moves_the_replica_to_its_center() {
    let (mut kv, id) = placed_job(1, 2, RetryPolicy::default(), StatusPolicy::AllSucceed);
    assert_eq!(phases(&kv, &id), vec![ReplicaPhase::Dispatching; 2]);
    assert_eq!(tables::work_list::<tables::DispatchOrder>(&kv, WorkList::Dispatch, "c1").unwrap().len(), 2);
    let k = key(&id, 0, 0, 0);
    assert_eq!(dispatched(&mut kv, &k), Outcome::Dispatch { accepted: true });
    // A replay of the same dispatch (the owner was in doubt) is accepted and changes nothing.
    let before = kv.clone();
    assert_eq!(dispatched(&mut kv, &k), Outcome::Dispatch { accepted: true });
    assert_eq!(tables::work_list::<tables::OnCenter>(&kv, WorkList::OnCenter, "c1").unwrap().len(), 1);
    assert_eq!(before.map.len(), kv.map.len());
    report(&mut kv, "c1", &k, Observed::Running);
    assert_eq!(job_of(&kv, &id).status, RunState::Running);
    check_invariants(&kv).unwrap();
}

#[test]
fn a_dispatch_nobody_wants_becomes_a_stop_order() {
    let (mut kv, id) = placed_job(1, 1, RetryPolicy::default(), StatusPolicy::AllSucceed);
    ok(&mut kv, stop(&id));
    let k = key(&id, 0, 0, 0);
    assert_eq!(dispatched(&mut kv, &k), Outcome::Dispatch { accepted: false });
    let orders = tables::stop_orders(&kv, "c1").unwrap();
    assert_eq!(
        orders,
        vec![(k.clone(), StopOrder { native_id: k.to_string(), reason: "dispatched but no longer wanted".into() })]
    );
    ok(&mut kv, Command::StopsDone { center_id: "c1".into(), owner_epoch: 0, keys: vec![k] });
    assert!(tables::stop_orders(&kv, "c1").unwrap().is_empty());
    check_invariants(&kv).unwrap();
}

#[test]
fn all_replicas_completing_completes_the_job_and_frees_the_ledger() {
    let (mut kv, id) = placed_job(2, 2, RetryPolicy::default(), StatusPolicy::AllSucceed);
    run_all(&mut kv, &id);
    for (t, r) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
        assert_eq!(job_of(&kv, &id).status, RunState::Running);
        report(&mut kv, "c1", &key(&id, t, r, 0), Observed::Completed);
    }
    let job = job_of(&kv, &id);
    assert_eq!((job.status, job.status_reason.as_str()), (RunState::Completed, "completed"));
    assert_eq!(count_under(&kv, "l/") + count_under(&kv, "on/") + count_under(&kv, "dq/"), 0);
    check_invariants(&kv).unwrap();
}

#[test]
fn an_application_failure_is_retried_on_the_same_center_with_backoff_then_fails_the_job() {
    let retry = RetryPolicy { max_retries: 2, backoff_ms: 100 };
    let (mut kv, id) = placed_job(1, 2, retry, StatusPolicy::AllSucceed);
    run_all(&mut kv, &id);
    for attempt in 0..2 {
        report(&mut kv, "c1", &key(&id, 0, 1, attempt), failed(FailureCategory::Application, Some(3)));
        let replica = job_of(&kv, &id).tasks[0].replicas[1].clone();
        assert_eq!(
            (replica.phase, replica.attempt, replica.retries),
            (ReplicaPhase::Dispatching, attempt + 1, attempt + 1)
        );
        assert_eq!(replica.not_before, T0 + 100 * (1 << attempt), "backoff doubles");
        assert_eq!(job_of(&kv, &id).tasks[0].center_ids, vec!["c1", "c1"], "retried where it ran");
        check_invariants(&kv).unwrap();
        let k = key(&id, 0, 1, attempt + 1);
        dispatched(&mut kv, &k);
        report(&mut kv, "c1", &k, Observed::Running);
    }
    report(&mut kv, "c1", &key(&id, 0, 1, 2), failed(FailureCategory::Application, Some(3)));
    let job = job_of(&kv, &id);
    assert_eq!(job.status, RunState::Failed);
    assert!(job.status_reason.contains("no retries left"), "{}", job.status_reason);
    // The surviving replica is stopped, not left running.
    assert_eq!(job.tasks[0].replicas[0].phase, ReplicaPhase::Stopping);
    assert_eq!(tables::stop_orders(&kv, "c1").unwrap().len(), 1);
    assert_eq!(events(&kv), vec![EventKind::Retried, EventKind::Retried]);
    check_invariants(&kv).unwrap();
}

#[test]
fn a_center_fault_reschedules_the_lost_replica_alone_without_spending_a_retry() {
    let (mut kv, id) = placed_job(1, 3, RetryPolicy::default(), StatusPolicy::AllSucceed);
    run_all(&mut kv, &id);
    report(&mut kv, "c1", &key(&id, 0, 0, 0), Observed::Completed);
    report(&mut kv, "c1", &key(&id, 0, 2, 0), failed(FailureCategory::Center, None));
    let job = job_of(&kv, &id);
    let task = &job.tasks[0];
    assert_eq!(task.center_ids, vec!["c1", "c1", ""], "only the lost replica leaves its center");
    let attempts: Vec<(ReplicaPhase, u32, u32)> =
        task.replicas.iter().map(|r| (r.phase, r.attempt, r.retries)).collect();
    assert_eq!(
        attempts,
        vec![(ReplicaPhase::Completed, 0, 0), (ReplicaPhase::Running, 0, 0), (ReplicaPhase::Unplaced, 1, 0)],
        "the finished and the running sibling are untouched; no retry is spent"
    );
    assert_eq!(queue_len(&kv), 1, "back in the scheduling queue for its empty slot");
    // Only the lost replica gets a stop order (the center may still hold it).
    let orders: Vec<ReplicaKey> = tables::stop_orders(&kv, "c1").unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(orders, vec![key(&id, 0, 2, 0)]);
    assert_eq!(events(&kv), vec![EventKind::Rescheduled]);
    check_invariants(&kv).unwrap();

    // Placed again: the slot takes the decision's center; the siblings keep theirs and are not
    // dispatched again, whatever the decision says for them.
    let version = tables::sched_fence(&kv).unwrap().version;
    let centers = vec!["c2".to_string(); 3];
    let decision = PlacementDecision::new(id.clone(), vec![Some(centers)], &placed_explain(&id));
    let batch =
        PlacementBatch { term: 1, snapshot_version: version, ledger_ttl_ms: 600_000, decisions: vec![decision] };
    ok(&mut kv, Command::Place(Box::new(batch)));
    let job = job_of(&kv, &id);
    assert_eq!(job.tasks[0].center_ids, vec!["c1", "c1", "c2"]);
    assert_eq!(phases(&kv, &id), vec![ReplicaPhase::Completed, ReplicaPhase::Running, ReplicaPhase::Dispatching]);
    let orders = |c: &str| tables::work_list::<tables::DispatchOrder>(&kv, WorkList::Dispatch, c).unwrap();
    assert!(orders("c1").is_empty());
    assert_eq!(orders("c2").len(), 1);
    assert_eq!(orders("c2")[0].3.attempt, 1);
    assert_eq!(queue_len(&kv), 0);
    check_invariants(&kv).unwrap();
}

#[test]
fn a_center_going_down_moves_its_replicas_and_coming_back_is_an_event() {
    let (mut kv, id) = placed_job(1, 1, RetryPolicy::default(), StatusPolicy::AllSucceed);
    run_all(&mut kv, &id);
    let down = Command::SetCenterHealth {
        center_id: "c1".into(),
        owner_epoch: 0,
        available: false,
        reason: "3 polls failed".into(),
    };
    ok(&mut kv, down.clone());
    assert_eq!(stored::<Center>(&kv, CENTER, "c1").unwrap().status, 0);
    assert_eq!(phases(&kv, &id), vec![ReplicaPhase::Unplaced]);
    // Idempotent: a second verdict changes nothing.
    let before = kv.clone();
    ok(&mut kv, down);
    assert_eq!(kv, before);
    ok(
        &mut kv,
        Command::SetCenterHealth { center_id: "c1".into(), owner_epoch: 0, available: true, reason: "ok".into() },
    );
    assert_eq!(events(&kv), vec![EventKind::CenterDown, EventKind::Rescheduled, EventKind::CenterUp]);
    check_invariants(&kv).unwrap();
}

#[test]
fn stop_ends_the_job_at_once_and_orders_every_replica_stopped() {
    let (mut kv, id) = placed_job(2, 1, RetryPolicy::default(), StatusPolicy::AllSucceed);
    let k = key(&id, 0, 0, 0);
    dispatched(&mut kv, &k);
    let (job, _) = job_outcome(ok(&mut kv, stop(&id)));
    assert_eq!(job.status, RunState::Failed);
    assert_eq!(phases(&kv, &id), vec![ReplicaPhase::Stopping, ReplicaPhase::Failed]);
    assert_eq!(count_under(&kv, "dq/"), 0);
    ok(&mut kv, Command::StopsDone { center_id: "c1".into(), owner_epoch: 0, keys: vec![k] });
    assert_eq!(phases(&kv, &id), vec![ReplicaPhase::Failed; 2]);
    assert_eq!(job_of(&kv, &id).status_reason, "stopped by user");
    check_invariants(&kv).unwrap();
}

#[test]
fn status_policy_any_succeeds_completes_on_the_first_task_and_stops_the_rest() {
    let (mut kv, id) = placed_job(2, 1, RetryPolicy::default(), StatusPolicy::AnySucceeds);
    run_all(&mut kv, &id);
    report(&mut kv, "c1", &key(&id, 1, 0, 0), Observed::Completed);
    assert_eq!(job_of(&kv, &id).status, RunState::Completed);
    assert_eq!(phases(&kv, &id), vec![ReplicaPhase::Stopping, ReplicaPhase::Completed]);
    check_invariants(&kv).unwrap();
}

#[test]
fn writes_from_a_former_owner_or_about_another_center_are_ignored_or_refused() {
    let (mut kv, id) = placed_job(1, 1, RetryPolicy::default(), StatusPolicy::AllSucceed);
    crate::kv::put_json(&mut kv, tables::owner_epoch_key("c1"), &tables::CenterOwner { node: Some(7), epoch: 3 });
    let k = key(&id, 0, 0, 0);
    let stale = Command::Dispatched { center_id: "c1".into(), owner_epoch: 2, key: k.clone(), native_id: "n".into() };
    assert!(matches!(refused(&mut kv, stale), Refusal::StaleOwner { epoch: 2, current: 3, .. }));
    // A report from a center the replica is not on changes nothing.
    let before = kv.clone();
    let reports = vec![ReplicaReport { key: k, observed: Observed::Completed }];
    ok(&mut kv, Command::ReportReplicas { center_id: "c2".into(), owner_epoch: 0, reports });
    assert_eq!(phases(&kv, &id), phases(&before, &id));
}

#[derive(Debug, Clone)]
enum Step {
    Dispatch(u32, u32),
    Report(u32, u32, u8),
    StopsDone,
    Health(bool),
    Stop,
    /// Place whatever is unplaced on c1 or c2.
    Place(bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..2u32, 0..2u32).prop_map(|(t, r)| Step::Dispatch(t, r)),
        (0..2u32, 0..2u32, 0..5u8).prop_map(|(t, r, o)| Step::Report(t, r, o)),
        Just(Step::StopsDone),
        any::<bool>().prop_map(Step::Health),
        Just(Step::Stop),
        any::<bool>().prop_map(Step::Place),
    ]
}

proptest! {
    /// Whatever the owner reports and in whatever order, the work lists stay true to the
    /// replicas' phases, and a final job never becomes unfinished again.
    #[test]
    fn work_lists_follow_the_phases(steps in prop::collection::vec(step(), 1..40)) {
        let (mut kv, id) = placed_job(2, 2, RetryPolicy { max_retries: 1, backoff_ms: 0 }, StatusPolicy::AllSucceed);
        let mut was_final = false;
        for step in steps {
            let job = job_of(&kv, &id);
            let attempt = |t: u32, r: u32| job.tasks[t as usize].replicas[r as usize].attempt;
            let center = |t: u32, r: u32| job.tasks[t as usize].center_ids.get(r as usize).cloned().unwrap_or("c1".into());
            let command = match step {
                Step::Dispatch(t, r) => {
                    let k = key(&id, t, r, attempt(t, r));
                    Command::Dispatched { center_id: center(t, r), owner_epoch: 0, native_id: k.to_string(), key: k }
                }
                Step::Report(t, r, o) => {
                    let observed = match o {
                        0 => Observed::Running,
                        1 => Observed::Completed,
                        2 => failed(FailureCategory::Application, Some(1)),
                        3 => failed(FailureCategory::Center, None),
                        _ => failed(FailureCategory::Stopped, None),
                    };
                    let reports = vec![ReplicaReport { key: key(&id, t, r, attempt(t, r)), observed }];
                    Command::ReportReplicas { center_id: center(t, r), owner_epoch: 0, reports }
                }
                Step::StopsDone => {
                    let keys = tables::stop_orders(&kv, "c1").unwrap().into_iter().map(|(k, _)| k).collect();
                    Command::StopsDone { center_id: "c1".into(), owner_epoch: 0, keys }
                }
                Step::Health(up) => Command::SetCenterHealth { center_id: "c1".into(), owner_epoch: 0, available: up, reason: "test".into() },
                Step::Stop => stop(&id),
                Step::Place(on_c2) => {
                    let c = if on_c2 { "c2" } else { "c1" };
                    let placements = job.tasks.iter().map(|t| (!t.is_placed()).then(|| vec![c.to_string(); 2])).collect();
                    let version = tables::sched_fence(&kv).unwrap().version;
                    let decision = PlacementDecision::new(id.clone(), placements, &placed_explain(&id));
                    Command::Place(Box::new(PlacementBatch { term: 1, snapshot_version: version, ledger_ttl_ms: 600_000, decisions: vec![decision] }))
                }
            };
            let _ = apply_at(&mut kv, command, T1);
            check_invariants(&kv).map_err(TestCaseError::fail)?;
            let status = job_of(&kv, &id).status;
            prop_assert!(!was_final || status.is_final(), "a final job became {status:?}");
            was_final = status.is_final();
        }
    }
}

#[test]
fn a_withdrawn_dispatch_leaves_a_stop_order_to_resolve_by_key() {
    let (mut kv, id) = placed_job(1, 1, RetryPolicy::default(), StatusPolicy::AllSucceed);
    ok(&mut kv, stop(&id));
    // The owner may have submitted it with the answer lost: it must ask the center by key.
    let orders = tables::stop_orders(&kv, "c1").unwrap();
    assert_eq!(orders.len(), 1);
    assert_eq!((orders[0].0.clone(), orders[0].1.native_id.as_str()), (key(&id, 0, 0, 0), ""));
    check_invariants(&kv).unwrap();
}

#[test]
fn a_placement_on_a_center_marked_down_since_the_snapshot_is_skipped() {
    let mut kv = MemKv::default();
    ok(&mut kv, put_center(center("c1"), Create));
    ok(&mut kv, put_spec(spec("s1", &["c1"]), Create));
    ok(&mut kv, put_image(image("img1", "c1", &[]), Create));
    let job = submitted(&mut kv, job_request("img1", "s1", 1));
    let down =
        Command::SetCenterHealth { center_id: "c1".into(), owner_epoch: 0, available: false, reason: "x".into() };
    ok(&mut kv, down);
    let decision = PlacementDecision::new(job.id.clone(), vec![Some(vec!["c1".into()])], &placed_explain(&job.id));
    let batch = PlacementBatch { term: 1, snapshot_version: 0, ledger_ttl_ms: 600_000, decisions: vec![decision] };
    assert_eq!(
        ok(&mut kv, Command::Place(Box::new(batch))),
        Outcome::Placed { applied: vec![], skipped: vec![job.id] }
    );
    assert_eq!(count_under(&kv, "dq/"), 0);
}

#[test]
fn a_center_with_replicas_to_poll_or_stop_cannot_be_deleted() {
    let (mut kv, id) = placed_job(1, 1, RetryPolicy::default(), StatusPolicy::AllSucceed);
    dispatched(&mut kv, &key(&id, 0, 0, 0));
    ok(&mut kv, stop(&id));
    // The job is final, but its replica still has to be stopped on c1.
    assert!(matches!(refused(&mut kv, Command::DeleteCenter { id: "c1".into() }), Refusal::StillReferenced { .. }));
    ok(&mut kv, Command::StopsDone { center_id: "c1".into(), owner_epoch: 0, keys: vec![key(&id, 0, 0, 0)] });
    assert_eq!(count_under(&kv, "so/") + count_under(&kv, "on/"), 0);
}

#[test]
fn a_failed_task_stops_its_other_replicas_even_when_the_job_goes_on() {
    let (mut kv, id) = placed_job(2, 2, RetryPolicy { max_retries: 0, backoff_ms: 0 }, StatusPolicy::AnySucceeds);
    run_all(&mut kv, &id);
    report(&mut kv, "c1", &key(&id, 0, 0, 0), failed(FailureCategory::Application, Some(1)));
    let job = job_of(&kv, &id);
    assert_eq!(job.status, RunState::Running, "another task may still succeed");
    let task0: Vec<ReplicaPhase> = job.tasks[0].replicas.iter().map(|r| r.phase).collect();
    assert_eq!(task0, vec![ReplicaPhase::Failed, ReplicaPhase::Stopping]);
    assert_eq!(job.tasks[1].replicas[0].phase, ReplicaPhase::Running);
    check_invariants(&kv).unwrap();
}

/// What the proposer sends again after a forward's leader vanished must change nothing when
/// the first send had in fact committed.
#[test]
fn commands_safe_to_repeat_change_nothing_the_second_time() {
    let (mut kv, id) = placed_job(1, 2, RetryPolicy::default(), StatusPolicy::AllSucceed);
    let (k0, k1) = (key(&id, 0, 0, 0), key(&id, 0, 1, 0));
    let report = |k: &ReplicaKey, observed: Observed| Command::ReportReplicas {
        center_id: "c1".into(),
        owner_epoch: 0,
        reports: vec![ReplicaReport { key: k.clone(), observed }],
    };
    let health = |available| Command::SetCenterHealth {
        center_id: "c2".into(),
        owner_epoch: 0,
        available,
        reason: "test".into(),
    };
    let commands = vec![
        Command::Dispatched { center_id: "c1".into(), owner_epoch: 0, key: k0.clone(), native_id: k0.to_string() },
        report(&k0, Observed::Running),
        report(&k0, failed(FailureCategory::Application, Some(1))),
        report(&k1, failed(FailureCategory::Center, None)),
        health(false),
        health(true),
        submit_with_key(job_request("img1", "s1", 1), "key-1"),
        stop(&id),
    ];
    for command in commands {
        assert!(command.safe_to_repeat(), "{command:?}");
        let _ = apply_at(&mut kv, command.clone(), T1);
        let once = kv.clone();
        let _ = apply_at(&mut kv, command.clone(), T1);
        assert_eq!(kv, once, "{command:?} changed the state a second time");
        check_invariants(&kv).unwrap();
    }
    // A report or a replacement again: the same object stored (only the change counter that
    // tells the scheduler to read the catalog or the center again moves).
    let report_metrics = Command::ReportMetrics { center_id: "c1".into(), metrics: metrics(1) };
    let replace = put_center(center("c2"), Replace);
    for (command, key) in [(report_metrics, tables::metrics_key("c1")), (replace, tables::object_key(CENTER, "c2"))] {
        assert!(command.safe_to_repeat(), "{command:?}");
        let _ = apply_at(&mut kv, command.clone(), T1);
        let once = kv.get(&key).unwrap();
        let _ = apply_at(&mut kv, command, T1);
        assert_eq!(kv.get(&key).unwrap(), once);
    }
    let stops: Vec<ReplicaKey> = tables::stop_orders(&kv, "c1").unwrap().into_iter().map(|(k, _)| k).collect();
    let done = Command::StopsDone { center_id: "c1".into(), owner_epoch: 0, keys: stops };
    let _ = apply_at(&mut kv, done.clone(), T1);
    let once = kv.clone();
    let _ = apply_at(&mut kv, done, T1);
    assert_eq!(kv, once);
    for unsafe_command in [
        submit(job_request("img1", "s1", 1)),
        put_center(center("c3"), Create),
        Command::DeleteSpec { id: "s1".into() },
        Command::RecordEvent { center_id: "c1".into(), kind: EventKind::PollFailed, job_id: None, message: "x".into() },
    ] {
        assert!(!unsafe_command.safe_to_repeat(), "{unsafe_command:?}");
    }
}

#[test]
fn a_rescheduled_replica_its_task_fails_before_it_is_placed_again_leaves_the_queue() {
    let retry = RetryPolicy { max_retries: 0, backoff_ms: 0 };
    let (mut kv, id) = placed_job(2, 2, retry, StatusPolicy::AnySucceeds);
    run_all(&mut kv, &id);
    report(&mut kv, "c1", &key(&id, 0, 1, 0), failed(FailureCategory::Center, None));
    assert_eq!(queue_len(&kv), 1);
    // Task 0 fails for good while its replica 1 waits for a center; task 1 still runs.
    report(&mut kv, "c1", &key(&id, 0, 0, 0), failed(FailureCategory::Application, Some(2)));
    let job = job_of(&kv, &id);
    assert_eq!(job.status, RunState::Running);
    assert_eq!(job.tasks[0].replicas[1].phase, ReplicaPhase::Failed);
    assert!(job.is_placed(), "nothing waits for a center");
    assert_eq!(queue_len(&kv), 0);
    check_invariants(&kv).unwrap();
}

#[test]
fn a_decision_made_before_a_replica_left_its_center_is_skipped() {
    let (mut kv, id) = placed_job(1, 2, RetryPolicy::default(), StatusPolicy::AllSucceed);
    run_all(&mut kv, &id);
    let version = tables::sched_fence(&kv).unwrap().version;
    // Decided while replica 1 still had its center: the decision leaves its entry empty.
    let stale = PlacementDecision::new(id.clone(), vec![Some(vec![String::new(); 2])], &placed_explain(&id));
    report(&mut kv, "c1", &key(&id, 0, 1, 0), failed(FailureCategory::Center, None));
    let batch = PlacementBatch { term: 1, snapshot_version: version, ledger_ttl_ms: 600_000, decisions: vec![stale] };
    assert_eq!(
        ok(&mut kv, Command::Place(Box::new(batch))),
        Outcome::Placed { applied: vec![], skipped: vec![id.clone()] }
    );
    assert_eq!(job_of(&kv, &id).tasks[0].center_ids, vec!["c1", ""]);
    check_invariants(&kv).unwrap();
}

#[test]
fn the_first_name_of_a_cluster_stays_and_an_upgraded_one_with_replicas_out_keeps_its_names() {
    let name = |id: &str| Command::NameCluster { cluster_id: id.into() };
    let (mut kv, _) = placed_job(1, 1, RetryPolicy::default(), StatusPolicy::AllSucceed);
    assert_eq!(ok(&mut kv, name("first")), Outcome::ClusterNamed { cluster_id: "first".into() });
    assert_eq!(ok(&mut kv, name("second")), Outcome::ClusterNamed { cluster_id: "first".into() });
    assert!(matches!(refused(&mut kv, name("Not Valid")), Refusal::Invalid(_)));

    // A cluster that already has a replica on a center (it ran before clusters had ids).
    let (mut kv, id) = placed_job(1, 1, RetryPolicy::default(), StatusPolicy::AllSucceed);
    run_all(&mut kv, &id);
    assert_eq!(ok(&mut kv, name("fresh")), Outcome::ClusterNamed { cluster_id: String::new() });
    assert_eq!(tables::cluster_id(&kv).unwrap(), Some(String::new()));
}

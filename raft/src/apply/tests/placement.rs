//! Applying scheduling batches: fencing by term and placement version, the ledger written and
//! released, decisions re-checked against the state as it is now.

use jcs_api::model::{DecisionOutcome, Explain, PolicyMode};

use super::*;
use crate::command::{PlacementBatch, PlacementDecision};
use crate::schedule::problem::LedgerEntry;
use crate::tables::{sched_fence, SchedulerFence};

pub(super) fn explain(job_id: &str, outcome: DecisionOutcome, reason: &str) -> Explain {
    Explain {
        job_id: job_id.into(),
        at: T0,
        term: 1,
        snapshot_version: 0,
        policy: PolicyMode::Balanced,
        weights: BTreeMap::new(),
        user_region: None,
        outcome,
        reason: reason.into(),
        tasks: Vec::new(),
    }
}

fn batch(term: u64, version: u64, decisions: Vec<PlacementDecision>) -> Command {
    Command::Place(Box::new(PlacementBatch { term, snapshot_version: version, ledger_ttl_ms: 60_000, decisions }))
}

fn placed_on(job_id: &str, centers: &[&str]) -> PlacementDecision {
    PlacementDecision::new(
        job_id.into(),
        vec![Some(centers.iter().map(|c| c.to_string()).collect())],
        &explain(job_id, DecisionOutcome::Placed, "placed"),
    )
}

fn ledger(kv: &MemKv) -> Vec<LedgerEntry> {
    crate::apply::ledger::entries(kv).unwrap()
}

fn in_flight(kv: &MemKv, center: &str) -> i64 {
    crate::apply::ledger::totals(kv).unwrap().get(center).map_or(0, |t| t.replicas)
}

#[test]
fn a_placement_sets_centers_writes_the_ledger_and_leaves_the_queue() {
    let mut kv = catalog();
    let job = submitted(&mut kv, job_request("img1", "s1", 2));
    assert_eq!(queue_len(&kv), 1);
    let outcome = ok_at(&mut kv, batch(3, 0, vec![placed_on(&job.id, &["c1", "c1"])]), T1);
    assert_eq!(outcome, Outcome::Placed { applied: vec![job.id.clone()], skipped: vec![] });
    let stored: Job = stored(&kv, JOB, &job.id).unwrap();
    assert_eq!(stored.tasks[0].center_ids, vec!["c1", "c1"]);
    assert_eq!((stored.placed_at, stored.status), (Some(T1), RunState::Pending));
    assert_eq!(queue_len(&kv), 0);
    assert_eq!(ledger(&kv).len(), 2);
    assert_eq!(ledger(&kv)[0].demand.gpu, 1.0);
    assert_eq!(in_flight(&kv, "c1"), 2);
    assert_eq!(crate::apply::ledger::totals(&kv).unwrap()["c1"].capacity.0[1], 2.0);
    assert!(kv.get(&tables::explain_key(&job.id)).unwrap().is_some());
    assert_eq!(sched_fence(&kv).unwrap(), SchedulerFence { term: 3, version: 1 });
}

#[test]
fn stale_terms_and_versions_are_refused_whole() {
    let mut kv = catalog();
    let job = submitted(&mut kv, job_request("img1", "s1", 1));
    ok(&mut kv, batch(5, 0, vec![]));
    let old_term = refused(&mut kv, batch(4, 1, vec![placed_on(&job.id, &["c1"])]));
    assert!(matches!(old_term, Refusal::StalePlacement(ref why) if why.contains("term 4")), "{old_term:?}");
    let old_version = refused(&mut kv, batch(5, 0, vec![placed_on(&job.id, &["c1"])]));
    assert!(matches!(old_version, Refusal::StalePlacement(ref why) if why.contains("version 0")), "{old_version:?}");
    ok(&mut kv, batch(6, 1, vec![placed_on(&job.id, &["c1"])]));
    assert_eq!(sched_fence(&kv).unwrap(), SchedulerFence { term: 6, version: 2 });
}

#[test]
fn decisions_that_no_longer_fit_the_state_are_skipped() {
    let mut kv = catalog();
    let stopped = submitted(&mut kv, job_request("img1", "s1", 1));
    ok(&mut kv, stop(&stopped.id));
    let wrong_count = submitted(&mut kv, job_request("img1", "s1", 2));
    let gone_center = submitted(&mut kv, job_request("img1", "s1", 1));
    let decisions = vec![
        placed_on(&stopped.id, &["c1"]),
        placed_on(&wrong_count.id, &["c1"]),
        placed_on(&gone_center.id, &["nowhere"]),
        placed_on("job-999999999999", &["c1"]),
    ];
    let outcome = ok(&mut kv, batch(1, 0, decisions));
    let Outcome::Placed { applied, skipped } = outcome else { panic!("{outcome:?}") };
    assert!(applied.is_empty());
    assert_eq!(skipped.len(), 4);
    assert!(ledger(&kv).is_empty());
}

#[test]
fn a_pending_decision_records_the_reason_and_keeps_the_job_queued() {
    let mut kv = catalog();
    let job = submitted(&mut kv, job_request("img1", "s1", 1));
    let decision = PlacementDecision::new(
        job.id.clone(),
        vec![None],
        &explain(&job.id, DecisionOutcome::Pending, "task 't0' replica 0: no feasible center"),
    );
    ok(&mut kv, batch(1, 0, vec![decision]));
    let stored: Job = stored(&kv, JOB, &job.id).unwrap();
    assert_eq!(stored.status_reason, "task 't0' replica 0: no feasible center");
    assert_eq!(queue_len(&kv), 1);
}

#[test]
fn stop_and_expiry_release_the_ledger() {
    let mut kv = catalog();
    let a = submitted(&mut kv, job_request("img1", "s1", 1));
    let b = submitted(&mut kv, job_request("img1", "s1", 1));
    ok_at(&mut kv, batch(1, 0, vec![placed_on(&a.id, &["c1"])]), T0);
    ok_at(&mut kv, batch(1, 1, vec![placed_on(&b.id, &["c1"])]), T0 + 50_000);
    assert_eq!(ledger(&kv).len(), 2);
    assert_eq!(in_flight(&kv, "c1"), 2);
    ok(&mut kv, stop(&b.id));
    assert_eq!(ledger(&kv).iter().map(|e| e.job_id.clone()).collect::<Vec<_>>(), vec![a.id.clone()]);
    assert_eq!(in_flight(&kv, "c1"), 1);
    ok_at(&mut kv, batch(1, 2, vec![]), T0 + 61_000);
    assert!(ledger(&kv).is_empty(), "a's entry expired");
    assert_eq!(count_under(&kv, "lt/") + count_under(&kv, "lc/"), 0, "expiry leaves no index or totals behind");
}

#[test]
fn jobs_are_refused_for_unknown_weights_datasets_and_pinned_centers() {
    let mut kv = catalog();
    let mut bad_weight = job_request("img1", "s1", 1);
    bad_weight.weights = BTreeMap::from([("fastest".to_string(), 1)]);
    assert!(matches!(refused(&mut kv, submit(bad_weight)), Refusal::Invalid(ref m) if m.contains("fastest")));
    let mut bad_data = job_request("img1", "s1", 1);
    bad_data.dataset_id = Some("nope@v1".into());
    assert!(
        matches!(refused(&mut kv, submit(bad_data)), Refusal::UnknownReference { ref field, .. } if field == "datasetId")
    );
    let mut bad_pin = job_request("img1", "s1", 1);
    bad_pin.tasks[0].center_ids = vec!["c9".into()];
    let refusal = refused(&mut kv, submit(bad_pin));
    assert!(
        matches!(refusal, Refusal::UnknownReference { ref field, .. } if field == "tasks[0].centerIDs"),
        "{refusal:?}"
    );
}

#[test]
fn a_center_report_confirming_a_replica_releases_its_entry() {
    let mut kv = catalog();
    let job = submitted(&mut kv, job_request("img1", "s1", 2));
    ok(&mut kv, batch(1, 0, vec![placed_on(&job.id, &["c1", "c1"])]));
    let mut report = metrics(1);
    report.confirmed_replicas = vec![format!("{}/0/1", job.id), "job-000000000999/0/0".into()];
    ok(&mut kv, Command::ReportMetrics { center_id: "c1".into(), metrics: report });
    let left: Vec<u32> = ledger(&kv).iter().map(|e| e.replica).collect();
    assert_eq!(left, vec![0], "replica 1 is confirmed; an unknown one is ignored");
    assert_eq!(in_flight(&kv, "c1"), 1);
    let stored: CenterMetrics = get_json(&kv, &tables::metrics_key("c1")).unwrap().unwrap();
    assert!(stored.confirmed_replicas.is_empty(), "confirmations are not stored with the report");
    let mut bad = metrics(1);
    bad.confirmed_replicas = vec!["job-1/zero/0".into()];
    let refusal = refused(&mut kv, Command::ReportMetrics { center_id: "c1".into(), metrics: bad });
    assert!(matches!(refusal, Refusal::Invalid(ref m) if m.starts_with("confirmed_replicas[0]")), "{refusal:?}");
}

#[test]
fn a_decision_carries_its_explain_record_as_the_text_that_is_stored() {
    let mut kv = catalog();
    let job = submitted(&mut kv, job_request("img1", "s1", 1));
    let record = explain(&job.id, DecisionOutcome::Placed, "placed: t0 → c1");
    let decision = PlacementDecision::new(job.id.clone(), vec![Some(vec!["c1".into()])], &record);
    let command = batch(1, 0, vec![decision]);
    let entry = serde_json::to_string(&command).unwrap();
    assert_eq!(serde_json::from_str::<Command>(&entry).unwrap(), command, "the log entry reads back as written");
    ok(&mut kv, command);
    assert_stored_as(&kv, &record);
}

/// The job holds the record's reason, and the state the record itself.
fn assert_stored_as(kv: &MemKv, record: &Explain) {
    assert_eq!(stored::<Job>(kv, JOB, &record.job_id).unwrap().status_reason, record.reason);
    let text = kv.get(&tables::explain_key(&record.job_id)).unwrap().unwrap();
    assert_eq!(&serde_json::from_slice::<Explain>(&text).unwrap(), record);
}

#[test]
fn an_entry_written_before_the_reason_was_carried_apart_applies_with_the_records_reason() {
    let mut kv = catalog();
    let job = submitted(&mut kv, job_request("img1", "s1", 1));
    let record = explain(&job.id, DecisionOutcome::Pending, "task 't0' replica 0: no feasible center");
    // As an older build wrote it: the record as an object, and no reason beside it.
    let decision = serde_json::json!({"job_id": job.id, "placements": [null], "explain": record});
    let entry = serde_json::json!({"Place": {"term": 1, "snapshot_version": 0, "ledger_ttl_ms": 60_000,
        "decisions": [decision]}});
    let command: Command = serde_json::from_str(&entry.to_string()).unwrap();
    ok(&mut kv, command);
    assert_stored_as(&kv, &record);
}

#[test]
fn a_batch_adds_to_each_centers_totals_once_with_one_change_note() {
    let mut kv = catalog();
    let first = submitted(&mut kv, job_request("img1", "s1", 2));
    let second = submitted(&mut kv, job_request("img1", "s1", 1));
    let generation = |kv: &MemKv| tables::generation(kv, tables::LEDGER_CHANGES.generation).unwrap();
    let before = generation(&kv);
    let decisions = vec![placed_on(&first.id, &["c1", "c1"]), placed_on(&second.id, &["c1"])];
    ok(&mut kv, batch(1, 0, decisions));
    assert_eq!(in_flight(&kv, "c1"), 3);
    assert_eq!(crate::apply::ledger::totals(&kv).unwrap()["c1"].capacity.0[1], 3.0, "three replicas of one GPU");
    assert_eq!(ledger(&kv).len(), 3);
    assert_eq!(generation(&kv), before + 1, "one note for c1, however many replicas went there");
    assert_eq!(tables::LEDGER_CHANGES.changed_since(&kv, before).unwrap(), vec!["c1".to_string()]);
}

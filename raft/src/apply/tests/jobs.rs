//! Jobs: submission, idempotency keys, stopping, and paging with `tables::jobs_page`.

use jcs_api::model::Window;

use super::*;

#[test]
fn submitted_jobs_get_sequential_zero_padded_ids() {
    let mut kv = catalog();
    let ids: Vec<String> = (0..3).map(|_| submitted(&mut kv, job_request("img1", "s1", 1)).id).collect();
    assert_eq!(ids, ["job-000000000001", "job-000000000002", "job-000000000003"]);
    assert_eq!(job_seq(&kv), Some(3));
    assert_eq!(tables::job_ids_in(&kv, RunState::Pending).unwrap(), ids, "the queue is in submission order");
}

#[test]
fn a_submitted_job_is_pending_with_every_replica_pending_and_indexed() {
    let mut kv = catalog();
    let job = submitted(&mut kv, job_request("img1", "s1", 3));
    assert_eq!(job.status, RunState::Pending);
    assert_eq!(job.tasks[0].replica_status(), vec![RunState::Pending; 3]);
    assert!(job.tasks[0].center_ids.is_empty(), "not placed yet");
    assert_eq!((job.created_at, job.updated_at), (T0, T0));
    assert_eq!(job.user_name, "default");
    assert_eq!(stored::<Job>(&kv, JOB, &job.id), Some(job.clone()));
    assert!(kv.get(format!("x/pending/{}", job.id).as_bytes()).unwrap().is_some());
    assert_eq!(tables::job_ids_in(&kv, RunState::Pending).unwrap(), vec![job.id.clone()]);
    for state in [RunState::Running, RunState::Completed, RunState::Failed] {
        assert!(tables::job_ids_in(&kv, state).unwrap().is_empty());
    }
}

#[test]
fn same_idempotency_key_and_request_replays_the_job() {
    let mut kv = catalog();
    let (first, replayed) = job_outcome(ok(&mut kv, submit_with_key(job_request("img1", "s1", 2), "key-1")));
    assert!(!replayed);
    assert_eq!(first.idempotency_key.as_deref(), Some("key-1"));
    let before = kv.clone();
    let (again, replayed) = job_outcome(ok_at(&mut kv, submit_with_key(job_request("img1", "s1", 2), "key-1"), T1));
    assert!(replayed);
    assert_eq!(again, first, "the stored job, created_at and all");
    assert_eq!(kv, before, "a replay writes nothing: same job count, same sequence");
    assert_eq!(count_under(&kv, "j/"), 1);
    assert_eq!(job_seq(&kv), Some(1));
}

#[test]
fn same_idempotency_key_with_a_different_request_is_refused() {
    let mut kv = catalog();
    let job = submitted_with_key(&mut kv, job_request("img1", "s1", 2), "key-1");
    assert_eq!(
        refused(&mut kv, submit_with_key(job_request("img1", "s1", 3), "key-1")),
        Refusal::IdempotencyKeyReused { key: "key-1".into(), job_id: job.id }
    );
}

#[test]
fn different_idempotency_keys_create_different_jobs() {
    let mut kv = catalog();
    let a = submitted_with_key(&mut kv, job_request("img1", "s1", 1), "key-a");
    let b = submitted_with_key(&mut kv, job_request("img1", "s1", 1), "key-b");
    assert_ne!(a.id, b.id);
    assert_eq!(get_json::<String>(&kv, &tables::idempotency_key("key-b")).unwrap(), Some(b.id));
}

#[test]
fn a_retry_after_the_job_was_stopped_still_replays_it() {
    let mut kv = catalog();
    let job = submitted_with_key(&mut kv, job_request("img1", "s1", 1), "key-1");
    ok(&mut kv, stop(&job.id));
    let (again, replayed) = job_outcome(ok(&mut kv, submit_with_key(job_request("img1", "s1", 1), "key-1")));
    assert!(replayed);
    assert_eq!((again.id, again.status), (job.id, RunState::Failed));
}

fn submitted_with_key(kv: &mut MemKv, request: CreateTrainJob, key: &str) -> Job {
    match job_outcome(ok(kv, submit_with_key(request, key))) {
        (job, false) => job,
        (_, true) => panic!("expected a new job"),
    }
}

#[test]
fn stopping_a_job_fails_it_with_the_reason_and_moves_its_index() {
    let mut kv = catalog();
    let job = submitted(&mut kv, job_request("img1", "s1", 2));
    let (stopped, replayed) = job_outcome(ok_at(&mut kv, stop(&job.id), T1));
    assert!(!replayed);
    assert_eq!(stopped.status, RunState::Failed);
    assert_eq!(stopped.status_reason, "stopped by user");
    assert_eq!(stopped.tasks[0].replica_status(), vec![RunState::Failed; 2]);
    assert_eq!((stopped.created_at, stopped.updated_at), (T0, T1));
    assert_eq!(stored::<Job>(&kv, JOB, &job.id), Some(stopped));
    assert!(tables::job_ids_in(&kv, RunState::Pending).unwrap().is_empty());
    assert_eq!(tables::job_ids_in(&kv, RunState::Failed).unwrap(), vec![job.id.clone()]);
    assert!(kv.get(format!("x/failed/{}", job.id).as_bytes()).unwrap().is_some());
}

#[test]
fn stopping_a_running_job_keeps_finished_replicas_and_fails_the_rest() {
    let mut kv = catalog();
    let job = submitted(&mut kv, job_request("img1", "s1", 2));
    force_status(&mut kv, &job.id, RunState::Running);
    let mut running: Job = stored(&kv, JOB, &job.id).unwrap();
    running.tasks[0].replicas[0].phase = jcs_api::model::ReplicaPhase::Completed;
    crate::kv::put_json(&mut kv, tables::object_key(JOB, &job.id), &running);
    let (stopped, _) = job_outcome(ok(&mut kv, stop(&job.id)));
    assert_eq!(stopped.tasks[0].replica_status(), vec![RunState::Completed, RunState::Failed]);
    assert!(tables::job_ids_in(&kv, RunState::Running).unwrap().is_empty());
    assert_eq!(tables::job_ids_in(&kv, RunState::Failed).unwrap(), vec![job.id]);
}

#[test]
fn stopping_a_stopped_job_changes_nothing() {
    let mut kv = catalog();
    let job = submitted(&mut kv, job_request("img1", "s1", 1));
    let (stopped, _) = job_outcome(ok_at(&mut kv, stop(&job.id), T0 + 1));
    let before = kv.clone();
    let (again, replayed) = job_outcome(ok_at(&mut kv, stop(&job.id), T1));
    assert!(replayed);
    assert_eq!(again, stopped);
    assert_eq!(kv, before);
}

#[test]
fn stopping_a_completed_job_changes_nothing() {
    let mut kv = catalog();
    let job = submitted(&mut kv, job_request("img1", "s1", 1));
    force_status(&mut kv, &job.id, RunState::Completed);
    let before = kv.clone();
    let (again, replayed) = job_outcome(ok(&mut kv, stop(&job.id)));
    assert!(replayed);
    assert_eq!(again.status, RunState::Completed);
    assert_eq!(kv, before);
}

#[test]
fn stopping_an_unknown_job_is_not_found() {
    let mut kv = catalog();
    assert_eq!(
        refused(&mut kv, stop("job-000000000009")),
        Refusal::NotFound { kind: JOB, id: "job-000000000009".into() }
    );
}

// ---------------------------------------------------------------------------------------------
// tables::jobs_page
// ---------------------------------------------------------------------------------------------

/// Five jobs: 1 alice, 2 bob, 3 alice, 4 bob, 5 alice; jobs 2 and 3 stopped.
pub(super) fn five_jobs() -> MemKv {
    let mut kv = catalog();
    for user in ["alice", "bob", "alice", "bob", "alice"] {
        submitted(&mut kv, job_request_of(user, "img1", "s1"));
    }
    ok(&mut kv, stop(&tables::job_id(2)));
    ok(&mut kv, stop(&tables::job_id(3)));
    kv
}

fn window(page: u32, page_size: u32) -> Window {
    Window { page, page_size, offset: u64::from(page - 1) * u64::from(page_size) }
}

fn page_ids(kv: &MemKv, status: Option<RunState>, user: Option<&str>, page: u32, size: u32) -> (u64, Vec<String>) {
    let page = tables::jobs_page(kv, status, user, window(page, size)).unwrap();
    (page.total, page.items.into_iter().map(|j| j.id).collect())
}

fn ids(seqs: &[u64]) -> Vec<String> {
    seqs.iter().map(|&s| tables::job_id(s)).collect()
}

#[test]
fn jobs_page_counts_every_job_and_returns_the_requested_page() {
    let kv = five_jobs();
    assert_eq!(page_ids(&kv, None, None, 1, 2), (5, ids(&[1, 2])));
    assert_eq!(page_ids(&kv, None, None, 2, 2), (5, ids(&[3, 4])));
    assert_eq!(page_ids(&kv, None, None, 3, 2), (5, ids(&[5])));
    assert_eq!(page_ids(&kv, None, None, 4, 2), (5, ids(&[])));
    let page = tables::jobs_page(&kv, None, None, window(2, 2)).unwrap();
    assert_eq!((page.page, page.page_size, page.offset, page.next_offset), (2, 2, 2, Some(4)));
    let from_offset = Window { page: 2, page_size: 2, offset: 3 };
    let page = tables::jobs_page(&kv, None, None, from_offset).unwrap();
    assert_eq!(page.items.iter().map(|j| j.id.clone()).collect::<Vec<_>>(), ids(&[4, 5]));
    assert_eq!(page.next_offset, None, "the last page says so");
}

#[test]
fn jobs_page_filters_by_status() {
    let kv = five_jobs();
    assert_eq!(page_ids(&kv, Some(RunState::Pending), None, 1, 10), (3, ids(&[1, 4, 5])));
    assert_eq!(page_ids(&kv, Some(RunState::Failed), None, 1, 10), (2, ids(&[2, 3])));
    assert_eq!(page_ids(&kv, Some(RunState::Pending), None, 2, 2), (3, ids(&[5])));
    assert_eq!(page_ids(&kv, Some(RunState::Running), None, 1, 10), (0, ids(&[])));
}

#[test]
fn jobs_page_filters_by_user() {
    let kv = five_jobs();
    assert_eq!(page_ids(&kv, None, Some("alice"), 1, 10), (3, ids(&[1, 3, 5])));
    assert_eq!(page_ids(&kv, None, Some("alice"), 2, 2), (3, ids(&[5])));
    assert_eq!(page_ids(&kv, None, Some("bob"), 1, 1), (2, ids(&[2])));
    assert_eq!(page_ids(&kv, None, Some("carol"), 1, 10), (0, ids(&[])));
}

#[test]
fn jobs_page_combines_status_and_user_filters() {
    let kv = five_jobs();
    assert_eq!(page_ids(&kv, Some(RunState::Pending), Some("alice"), 1, 10), (2, ids(&[1, 5])));
    assert_eq!(page_ids(&kv, Some(RunState::Failed), Some("bob"), 1, 10), (1, ids(&[2])));
}

//! Tests of the pure transition function, run against [`MemKv`]: no disk, no network, no
//! runtime. Unit tests first (one behaviour each), then property tests over random command
//! sequences drawn from a small id alphabet so that commands collide and refer to each other.
//! This module holds the shared builders, runners and invariant checker; the tests live in the
//! submodules, one per section.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use jcs_api::model::{Center, CenterMetrics, CreateTrainJob, Dataset, Image, Job, ObjectKind, ResourceSpec, RunState};
use serde_json::json;

use super::apply;
use crate::command::{Command, CommandResult, Outcome, Refusal, WriteMode};
use crate::kv::{get_json, Kv, KvRead, MemKv};
use crate::tables;

use ObjectKind::{Center as CENTER, Dataset as DATASET, Image as IMAGE, Job as JOB, ResourceSpec as SPEC};
use WriteMode::{Create, Replace};

mod catalog;
mod deletes;
mod jobs;
mod lifecycle;
mod metrics;
mod owners;
mod placement;
mod props;
mod references;

/// The proposer's clock in unit tests.
const T0: i64 = 1_700_000_000_000;
/// A later clock, for replaces and stops.
const T1: i64 = T0 + 60_000;

// ---------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------

/// A valid center. Built from JSON so that extension fields keep their serde defaults.
fn center(id: &str) -> Center {
    serde_json::from_value(json!({
        "ai_center_id": id, "name": format!("center {id}"), "region": "hunan",
        "status": 1, "geometry": [112.9, 28.2], "adapter": {"kind": "sim"},
    }))
    .expect("center fixture")
}

/// A valid spec offered by `centers`.
fn spec(id: &str, centers: &[&str]) -> ResourceSpec {
    serde_json::from_value(json!({
        "resource_spec_id": id, "resource_spec_name": format!("spec {id}"),
        "resource_quantity": {"cpu": "8", "memory": "64Gi", "gpu": "1"},
        "price": 3, "computing_center_list": centers.join(","),
    }))
    .expect("spec fixture")
}

/// A valid image held by `center` that fits `specs` (no specs: fits every spec).
fn image(id: &str, center: &str, specs: &[&str]) -> Image {
    serde_json::from_value(json!({
        "image_id": id, "name": format!("image {id}"), "ai_center_id": center,
        "framework": "PyTorch", "resource_spec": specs.join(","), "reference": "pytorch:2.3",
    }))
    .expect("image fixture")
}

/// A valid dataset `name@v1` with one read-only replica at each of `centers`.
fn dataset(name: &str, centers: &[&str]) -> Dataset {
    let location: Vec<_> = centers
        .iter()
        .map(|c| json!({"dataset_url": format!("s3://{c}/{name}"), "access": "r", "ai_center_id": c}))
        .collect();
    serde_json::from_value(json!({"data_name": name, "data_version": "v1", "location": location}))
        .expect("dataset fixture")
}

/// A valid one-task job request.
fn job_request(image: &str, spec: &str, replicas: i64) -> CreateTrainJob {
    serde_json::from_value(json!({
        "name": "resnet",
        "tasks": [{"name": "t0", "command": "python train.py", "imageId": image,
                   "resourceSpecId": spec, "replicaNumber": replicas}],
    }))
    .expect("job fixture")
}

/// `job_request` for a given user.
fn job_request_of(user: &str, image: &str, spec: &str) -> CreateTrainJob {
    CreateTrainJob { user_name: Some(user.into()), ..job_request(image, spec, 1) }
}

fn metrics(running: i64) -> CenterMetrics {
    CenterMetrics { running_task_num: running, gpu_free: 8, memory_free: 512_000, ..CenterMetrics::default() }
}

fn put_center(center: Center, mode: WriteMode) -> Command {
    Command::PutCenter { center, mode }
}
fn put_spec(spec: ResourceSpec, mode: WriteMode) -> Command {
    Command::PutSpec { spec, mode }
}
fn put_image(image: Image, mode: WriteMode) -> Command {
    Command::PutImage { image, mode }
}
fn put_dataset(dataset: Dataset, mode: WriteMode) -> Command {
    Command::PutDataset { dataset, mode }
}
fn submit(request: CreateTrainJob) -> Command {
    Command::SubmitJob { request, idempotency_key: None }
}
fn submit_with_key(request: CreateTrainJob, key: &str) -> Command {
    Command::SubmitJob { request, idempotency_key: Some(key.into()) }
}
fn stop(job_id: &str) -> Command {
    Command::StopJob { job_id: job_id.into(), reason: "stopped by user".into() }
}

// ---------------------------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------------------------

/// Applies at `at_ms`; a `MemKv` never has a storage fault.
fn apply_at(kv: &mut MemKv, command: Command, at_ms: i64) -> CommandResult {
    apply(kv, &command, at_ms).expect("MemKv never faults")
}

/// Applies at `T0` and expects success.
fn ok(kv: &mut MemKv, command: Command) -> Outcome {
    ok_at(kv, command, T0)
}

fn ok_at(kv: &mut MemKv, command: Command, at_ms: i64) -> Outcome {
    apply_at(kv, command, at_ms).unwrap_or_else(|refusal| panic!("unexpected refusal: {refusal}"))
}

/// Applies at `T1`, expects a refusal, and checks that the state did not change at all.
fn refused(kv: &mut MemKv, command: Command) -> Refusal {
    let before = kv.clone();
    let refusal = apply_at(kv, command, T1).expect_err("expected a refusal");
    assert_eq!(*kv, before, "a refused command must not change the state ({refusal})");
    refusal
}

/// Submits a job and returns it as stored.
fn submitted(kv: &mut MemKv, request: CreateTrainJob) -> Job {
    match ok(kv, submit(request)) {
        Outcome::Job { job, replayed: false } => *job,
        other => panic!("expected a new job, got {other:?}"),
    }
}

fn job_outcome(outcome: Outcome) -> (Job, bool) {
    match outcome {
        Outcome::Job { job, replayed } => (*job, replayed),
        other => panic!("expected a job, got {other:?}"),
    }
}

fn stored<T: serde::de::DeserializeOwned>(kv: &MemKv, kind: ObjectKind, id: &str) -> Option<T> {
    tables::get(kv, kind, id).expect("decodes")
}

fn job_seq(kv: &MemKv) -> Option<u64> {
    get_json(kv, tables::JOB_SEQ_KEY).expect("decodes")
}

/// How many jobs the scheduling queue holds (both of its parts).
fn queue_len(kv: &MemKv) -> usize {
    tables::queued_job_ids(kv, None, usize::MAX).expect("queue").len()
}

fn count_under(kv: &MemKv, prefix: &str) -> usize {
    kv.map.keys().filter(|k| k.starts_with(prefix.as_bytes())).count()
}

/// Centers `c1`, `c2`; spec `s1` at `c1`; image `img1` at `c1` fitting `s1`.
fn catalog() -> MemKv {
    let mut kv = MemKv::default();
    ok(&mut kv, put_center(center("c1"), Create));
    ok(&mut kv, put_center(center("c2"), Create));
    ok(&mut kv, put_spec(spec("s1", &["c1"]), Create));
    ok(&mut kv, put_image(image("img1", "c1", &["s1"]), Create));
    kv
}

/// Moves a job to `state` behind apply's back (no command does this yet: placement and
/// progress reports will), keeping the status index consistent.
fn force_status(kv: &mut MemKv, job_id: &str, state: RunState) {
    let mut job: Job = stored(kv, JOB, job_id).expect("job exists");
    kv.delete(tables::status_key(job.status, job_id));
    job.status = state;
    let phase = match state {
        RunState::Pending => jcs_api::model::ReplicaPhase::Unplaced,
        RunState::Running => jcs_api::model::ReplicaPhase::Running,
        RunState::Completed => jcs_api::model::ReplicaPhase::Completed,
        RunState::Failed => jcs_api::model::ReplicaPhase::Failed,
    };
    for task in &mut job.tasks {
        task.replicas.iter_mut().for_each(|r| r.phase = phase);
    }
    kv.put(tables::status_key(state, job_id), Vec::new());
    crate::kv::put_json(kv, tables::object_key(JOB, job_id), &job);
}

// ---------------------------------------------------------------------------------------------
// Invariants, checked by the property tests
// ---------------------------------------------------------------------------------------------

fn entries(kv: &MemKv, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    kv.scan(prefix.as_bytes(), &mut |k, v| {
        out.push((String::from_utf8_lossy(&k[prefix.len()..]).into_owned(), v.to_vec()));
        ControlFlow::Continue(())
    })
    .unwrap();
    out
}

/// Every consistency rule the state must keep after any sequence of commands.
fn check_invariants(kv: &MemKv) -> Result<(), String> {
    let centers: BTreeSet<String> = entries(kv, "c/").into_iter().map(|(id, _)| id).collect();
    let specs: BTreeSet<String> = entries(kv, "s/").into_iter().map(|(id, _)| id).collect();
    let images: BTreeSet<String> = entries(kv, "i/").into_iter().map(|(id, _)| id).collect();
    let fail = |msg: String| Err::<(), String>(msg);

    for center in tables::all::<Center>(kv, CENTER).map_err(|e| e.to_string())? {
        if !centers.contains(&center.ai_center_id) {
            return fail(format!("center {} stored under another key", center.ai_center_id));
        }
    }
    for spec in tables::all::<ResourceSpec>(kv, SPEC).map_err(|e| e.to_string())? {
        for (_, center) in spec.references() {
            if !centers.contains(&center) {
                return fail(format!("spec {} names missing center {center}", spec.resource_spec_id));
            }
        }
    }
    for image in tables::all::<Image>(kv, IMAGE).map_err(|e| e.to_string())? {
        if !centers.contains(&image.ai_center_id) {
            return fail(format!("image {} is held by missing center {}", image.image_id, image.ai_center_id));
        }
        for spec in image.specs() {
            if !specs.contains(&spec) {
                return fail(format!("image {} fits missing spec {spec}", image.image_id));
            }
        }
    }
    for dataset in tables::all::<Dataset>(kv, DATASET).map_err(|e| e.to_string())? {
        for (_, center) in dataset.references() {
            if !centers.contains(&center) {
                return fail(format!("dataset {} is at missing center {center}", dataset.dataset_id()));
            }
        }
    }
    for (center, _) in entries(kv, "m/") {
        if !centers.contains(&center) {
            return fail(format!("metrics of missing center {center}"));
        }
    }

    // Jobs and the status index.
    let mut jobs = BTreeMap::new();
    for (id, bytes) in entries(kv, "j/") {
        let job: Job = serde_json::from_slice(&bytes).map_err(|e| format!("job {id}: {e}"))?;
        if job.id != id {
            return fail(format!("job {} stored under j/{id}", job.id));
        }
        let indexed: Vec<RunState> =
            RunState::ALL.into_iter().filter(|s| kv.map.contains_key(&tables::status_key(*s, &id))).collect();
        if indexed != [job.status] {
            return fail(format!("job {id} is {:?} but indexed under {indexed:?}", job.status));
        }
        if !job.status.is_final() {
            for task in &job.tasks {
                if !images.contains(&task.image_id) || !specs.contains(&task.resource_spec_id) {
                    return fail(format!("unfinished job {id} refers to a missing image or spec"));
                }
            }
        }
        jobs.insert(id, job);
    }
    for (rest, _) in entries(kv, "x/") {
        let Some((status, id)) = rest.split_once('/') else { return fail(format!("bad index key x/{rest}")) };
        let Some(state) = RunState::parse(status) else { return fail(format!("bad index status x/{rest}")) };
        match jobs.get(id) {
            Some(job) if job.status == state => {}
            Some(job) => return fail(format!("x/{rest} but job is {:?}", job.status)),
            None => return fail(format!("x/{rest} names a missing job")),
        }
    }
    check_work_lists(kv, &jobs)?;
    check_queue(kv, &jobs)?;
    let seq = job_seq(kv).unwrap_or(0);
    if jobs.len() as u64 > seq || jobs.keys().any(|id| *id > tables::job_id(seq)) {
        return fail(format!("job sequence {seq} is behind the jobs {:?}", jobs.keys()));
    }
    for (key, bytes) in entries(kv, "k/") {
        let id: String = serde_json::from_slice(&bytes).map_err(|e| format!("k/{key}: {e}"))?;
        match jobs.get(&id) {
            Some(job) if job.idempotency_key.as_deref() == Some(key.as_str()) => {}
            _ => return fail(format!("idempotency key {key} names job {id} which does not carry it")),
        }
    }
    Ok(())
}

/// The queue holds exactly the unfinished jobs with a task still unplaced, each under one key:
/// in the held part at or below the floor, or above it.
fn check_queue(kv: &MemKv, jobs: &BTreeMap<String, Job>) -> Result<(), String> {
    let expected: BTreeSet<String> =
        jobs.values().filter(|j| !j.status.is_final() && !j.is_placed()).map(|j| j.id.clone()).collect();
    let held: Vec<String> = entries(kv, "qh/").into_iter().map(|(k, _)| k).collect();
    let above: Vec<String> = entries(kv, "q/").into_iter().map(|(k, _)| k).collect();
    let floor = kv.get(tables::QUEUE_FLOOR_KEY).unwrap().unwrap_or_default();
    if let Some(job) = held.iter().find(|j| tables::queue_key(j) > floor) {
        return Err(format!("held job {job} is above the floor"));
    }
    if let Some(job) = above.iter().find(|j| tables::queue_key(j) <= floor) {
        return Err(format!("queued job {job} is at or below the floor, outside the held part"));
    }
    let queued: BTreeSet<String> = held.iter().chain(&above).cloned().collect();
    if queued.len() != held.len() + above.len() || queued != expected {
        return Err(format!("queue holds {held:?} + {above:?}, expected {expected:?}"));
    }
    Ok(())
}

/// The per-center work lists match the replicas' phases exactly: a dispatch order for every
/// replica being dispatched, an on-center entry for every replica submitted and not final.
fn check_work_lists(kv: &MemKv, jobs: &BTreeMap<String, Job>) -> Result<(), String> {
    use jcs_api::model::ReplicaPhase;
    let mut expected_dq = BTreeSet::new();
    let mut expected_on = BTreeSet::new();
    for job in jobs.values() {
        for (t, task) in job.tasks.iter().enumerate() {
            for (r, replica) in task.replicas.iter().enumerate() {
                let Some(center) = task.center_ids.get(r) else {
                    if replica.phase != ReplicaPhase::Unplaced && !replica.phase.is_final() {
                        return Err(format!(
                            "job {} task {t} replica {r} is {:?} without a center",
                            job.id, replica.phase
                        ));
                    }
                    continue;
                };
                let entry = format!("{center}/{}/{t}/{r}", job.id);
                match replica.phase {
                    ReplicaPhase::Dispatching => {
                        expected_dq.insert(entry);
                    }
                    ReplicaPhase::Queued | ReplicaPhase::Running | ReplicaPhase::Stopping => {
                        expected_on.insert(entry);
                    }
                    _ => {}
                }
            }
        }
    }
    let dq: BTreeSet<String> = entries(kv, "dq/").into_iter().map(|(k, _)| k).collect();
    let on: BTreeSet<String> = entries(kv, "on/").into_iter().map(|(k, _)| k).collect();
    if dq != expected_dq {
        return Err(format!("dispatch orders {dq:?} but replicas being dispatched {expected_dq:?}"));
    }
    if on != expected_on {
        return Err(format!("on-center entries {on:?} but replicas on centers {expected_on:?}"));
    }
    Ok(())
}

#[test]
fn the_fixtures_satisfy_the_invariants() {
    check_invariants(&catalog()).unwrap();
    check_invariants(&jobs::five_jobs()).unwrap();
}

//! Tests of the pure transition function, run against [`MemKv`]: no disk, no network, no
//! runtime. Unit tests first (one behaviour each), then property tests over random command
//! sequences drawn from a small id alphabet so that commands collide and refer to each other.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use jcs_api::model::{Center, CenterMetrics, CreateTrainJob, Dataset, Image, Job, ObjectKind, ResourceSpec, RunState};
use proptest::prelude::*;
use serde_json::json;

use super::apply;
use crate::command::{Command, CommandResult, Outcome, Refusal, WriteMode};
use crate::kv::{get_json, Kv, KvRead, MemKv, Overlay};
use crate::tables;

use ObjectKind::{Center as CENTER, Dataset as DATASET, Image as IMAGE, Job as JOB, ResourceSpec as SPEC};
use WriteMode::{Create, Replace};

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
        "status": 1, "geometry": [112.9, 28.2],
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
    for task in &mut job.tasks {
        task.replica_status = vec![state; task.replica_number as usize];
    }
    kv.put(tables::status_key(state, job_id), Vec::new());
    crate::kv::put_json(kv, tables::object_key(JOB, job_id), &job);
}

// ---------------------------------------------------------------------------------------------
// Catalog: create, replace, validation
// ---------------------------------------------------------------------------------------------

#[test]
fn creating_a_center_stamps_created_and_updated_at_with_the_proposal_time() {
    let mut kv = MemKv::default();
    let Outcome::Center(c) = ok_at(&mut kv, put_center(center("c1"), Create), T0) else { panic!() };
    assert_eq!((c.created_at, c.updated_at), (T0, T0));
    assert_eq!(stored::<Center>(&kv, CENTER, "c1"), Some(c));
}

#[test]
fn creating_a_spec_stamps_both_timestamps() {
    let mut kv = catalog();
    let Outcome::Spec(s) = ok_at(&mut kv, put_spec(spec("s2", &["c1", "c2"]), Create), T1) else { panic!() };
    assert_eq!((s.created_at, s.updated_at), (T1, T1));
    assert_eq!(stored::<ResourceSpec>(&kv, SPEC, "s2"), Some(s));
}

#[test]
fn creating_an_image_stamps_both_timestamps() {
    let mut kv = catalog();
    let Outcome::Image(i) = ok_at(&mut kv, put_image(image("img2", "c2", &[]), Create), T1) else { panic!() };
    assert_eq!((i.created_at, i.updated_at), (T1, T1));
    assert_eq!(stored::<Image>(&kv, IMAGE, "img2"), Some(i));
}

#[test]
fn creating_a_dataset_stamps_both_timestamps_and_stores_it_under_name_at_version() {
    let mut kv = catalog();
    let Outcome::Dataset(d) = ok_at(&mut kv, put_dataset(dataset("imagenet", &["c1", "c2"]), Create), T1) else {
        panic!()
    };
    assert_eq!((d.created_at, d.updated_at), (T1, T1));
    assert_eq!(stored::<Dataset>(&kv, DATASET, "imagenet@v1"), Some(d));
}

#[test]
fn client_supplied_timestamps_are_ignored() {
    let mut kv = MemKv::default();
    let c = Center { created_at: 1, updated_at: 2, ..center("c1") };
    let Outcome::Center(c) = ok_at(&mut kv, put_center(c, Create), T0) else { panic!() };
    assert_eq!((c.created_at, c.updated_at), (T0, T0));
}

#[test]
fn creating_an_existing_object_is_already_exists() {
    let mut kv = catalog();
    ok(&mut kv, put_dataset(dataset("imagenet", &["c1"]), Create));
    let cases = [
        (put_center(center("c1"), Create), CENTER, "c1"),
        (put_spec(spec("s1", &["c1"]), Create), SPEC, "s1"),
        (put_image(image("img1", "c1", &["s1"]), Create), IMAGE, "img1"),
        (put_dataset(dataset("imagenet", &["c1"]), Create), DATASET, "imagenet@v1"),
    ];
    for (command, kind, id) in cases {
        assert_eq!(refused(&mut kv, command), Refusal::AlreadyExists { kind, id: id.into() });
    }
}

#[test]
fn replacing_a_missing_object_is_not_found() {
    let mut kv = catalog();
    let cases = [
        (put_center(center("c9"), Replace), CENTER, "c9"),
        (put_spec(spec("s9", &["c1"]), Replace), SPEC, "s9"),
        (put_image(image("img9", "c1", &[]), Replace), IMAGE, "img9"),
        (put_dataset(dataset("mnist", &["c1"]), Replace), DATASET, "mnist@v1"),
    ];
    for (command, kind, id) in cases {
        assert_eq!(refused(&mut kv, command), Refusal::NotFound { kind, id: id.into() });
    }
}

#[test]
fn replacing_a_center_keeps_created_at_and_bumps_updated_at() {
    let mut kv = catalog();
    let renamed = Center { name: "renamed".into(), ..center("c1") };
    let Outcome::Center(c) = ok_at(&mut kv, put_center(renamed, Replace), T1) else { panic!() };
    assert_eq!((c.created_at, c.updated_at), (T0, T1));
    let stored = stored::<Center>(&kv, CENTER, "c1").unwrap();
    assert_eq!((stored.name.as_str(), stored.created_at, stored.updated_at), ("renamed", T0, T1));
}

#[test]
fn replacing_a_spec_image_or_dataset_keeps_created_at_and_bumps_updated_at() {
    let mut kv = catalog();
    ok(&mut kv, put_dataset(dataset("imagenet", &["c1"]), Create));
    let Outcome::Spec(s) = ok_at(&mut kv, put_spec(spec("s1", &["c1", "c2"]), Replace), T1) else { panic!() };
    assert_eq!((s.created_at, s.updated_at, s.computing_center_list.as_str()), (T0, T1, "c1,c2"));
    let Outcome::Image(i) = ok_at(&mut kv, put_image(image("img1", "c2", &[]), Replace), T1) else { panic!() };
    assert_eq!((i.created_at, i.updated_at, i.ai_center_id.as_str()), (T0, T1, "c2"));
    let Outcome::Dataset(d) = ok_at(&mut kv, put_dataset(dataset("imagenet", &["c2"]), Replace), T1) else { panic!() };
    assert_eq!((d.created_at, d.updated_at), (T0, T1));
    assert_eq!(stored::<Dataset>(&kv, DATASET, "imagenet@v1"), Some(d));
}

#[test]
fn invalid_payloads_are_refused_naming_the_field_and_change_nothing() {
    let mut kv = catalog();
    let quantity = |key: &str, value: &str| {
        let mut s = spec("s2", &["c1"]);
        s.resource_quantity.insert(key.into(), value.into());
        s
    };
    let cases: Vec<(Command, &str)> = vec![
        (put_center(center("../x"), Create), "ai_center_id"),
        (put_center(Center { name: String::new(), ..center("c3") }, Create), "name"),
        (put_center(Center { geometry: [200.0, 0.0], ..center("c3") }, Create), "geometry[0]"),
        (put_center(Center { name: String::new(), ..center("c1") }, Replace), "name"),
        (put_spec(spec("a/b", &["c1"]), Create), "resource_spec_id"),
        (put_spec(quantity("memory", "lots"), Create), "resource_quantity.memory"),
        (put_spec(quantity("cpu", "-1"), Create), "resource_quantity.cpu"),
        (put_spec(spec("s2", &["c1", "c1"]), Create), "computing_center_list"),
        (
            put_spec(ResourceSpec { resource_quantity: BTreeMap::new(), ..spec("s2", &["c1"]) }, Create),
            "resource_quantity",
        ),
        (put_image(image("img2", "../c1", &[]), Create), "ai_center_id"),
        (put_image(image("", "c1", &[]), Create), "image_id"),
        (put_dataset(dataset("../etc", &["c1"]), Create), "data_name"),
        (
            put_dataset(
                {
                    let mut d = dataset("imagenet", &["c1"]);
                    d.location[0].access = "w".into();
                    d
                },
                Create,
            ),
            "location[0].access",
        ),
        (submit(job_request("img1", "s1", 0)), "tasks[0].replicaNumber"),
        (submit(job_request("../img1", "s1", 1)), "tasks[0].imageId"),
        (submit(CreateTrainJob { tasks: vec![], ..job_request("img1", "s1", 1) }), "tasks"),
    ];
    for (command, field) in cases {
        match refused(&mut kv, command.clone()) {
            Refusal::Invalid(message) => {
                assert!(message.starts_with(&format!("{field}: ")), "{message:?} should name {field}")
            }
            other => panic!("{command:?}: expected Invalid naming {field}, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// References
// ---------------------------------------------------------------------------------------------

#[test]
fn spec_offered_by_an_unknown_center_is_unknown_reference() {
    let mut kv = catalog();
    assert_eq!(
        refused(&mut kv, put_spec(spec("s2", &["c1", "c9"]), Create)),
        Refusal::UnknownReference { field: "computing_center_list".into(), kind: CENTER, id: "c9".into() }
    );
}

/// A spec's `center_prices` keys are center references too; the refusal must point at the
/// field that holds the bad id.
#[test]
fn spec_pricing_an_unknown_center_is_unknown_reference_naming_center_prices() {
    let mut kv = catalog();
    let mut s = spec("s2", &["c1"]);
    s.center_prices.insert("c9".into(), 5);
    assert_eq!(
        refused(&mut kv, put_spec(s, Create)),
        Refusal::UnknownReference { field: "center_prices".into(), kind: CENTER, id: "c9".into() }
    );
}

#[test]
fn image_at_an_unknown_center_is_unknown_reference() {
    let mut kv = catalog();
    assert_eq!(
        refused(&mut kv, put_image(image("img2", "c9", &["s1"]), Create)),
        Refusal::UnknownReference { field: "ai_center_id".into(), kind: CENTER, id: "c9".into() }
    );
}

#[test]
fn image_fitting_an_unknown_spec_is_unknown_reference() {
    let mut kv = catalog();
    assert_eq!(
        refused(&mut kv, put_image(image("img2", "c1", &["s1", "s9"]), Create)),
        Refusal::UnknownReference { field: "resource_spec".into(), kind: SPEC, id: "s9".into() }
    );
}

#[test]
fn replacing_an_image_onto_an_unknown_center_is_unknown_reference() {
    let mut kv = catalog();
    assert!(matches!(
        refused(&mut kv, put_image(image("img1", "c9", &[]), Replace)),
        Refusal::UnknownReference { kind: CENTER, .. }
    ));
}

#[test]
fn dataset_located_at_an_unknown_center_is_unknown_reference() {
    let mut kv = catalog();
    match refused(&mut kv, put_dataset(dataset("imagenet", &["c1", "c9"]), Create)) {
        Refusal::UnknownReference { field, kind: CENTER, id } => {
            assert!(field.starts_with("location"), "{field}");
            assert_eq!(id, "c9");
        }
        other => panic!("expected UnknownReference, got {other:?}"),
    }
}

#[test]
fn job_with_an_unknown_image_names_the_tasks_image_id() {
    let mut kv = catalog();
    let mut request = job_request("img1", "s1", 1);
    let mut second = request.tasks[0].clone();
    second.name = "t1".into();
    second.image_id = "img9".into();
    request.tasks.push(second);
    assert_eq!(
        refused(&mut kv, submit(request)),
        Refusal::UnknownReference { field: "tasks[1].imageId".into(), kind: IMAGE, id: "img9".into() }
    );
}

#[test]
fn job_with_an_unknown_spec_names_the_tasks_resource_spec_id() {
    let mut kv = catalog();
    assert_eq!(
        refused(&mut kv, submit(job_request("img1", "s9", 1))),
        Refusal::UnknownReference { field: "tasks[0].resourceSpecId".into(), kind: SPEC, id: "s9".into() }
    );
}

#[test]
fn job_whose_image_does_not_fit_its_spec_is_invalid() {
    let mut kv = catalog();
    ok(&mut kv, put_spec(spec("s2", &["c1"]), Create));
    match refused(&mut kv, submit(job_request("img1", "s2", 1))) {
        Refusal::Invalid(message) => assert!(message.starts_with("tasks[0].imageId: "), "{message}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn image_without_a_spec_list_fits_every_spec() {
    let mut kv = catalog();
    ok(&mut kv, put_spec(spec("s2", &["c1"]), Create));
    ok(&mut kv, put_image(image("img2", "c1", &[]), Create));
    submitted(&mut kv, job_request("img2", "s2", 1));
}

#[test]
fn refused_job_consumes_no_sequence_number() {
    let mut kv = catalog();
    refused(&mut kv, submit(job_request("img9", "s1", 1)));
    assert_eq!(job_seq(&kv), None);
    assert_eq!(submitted(&mut kv, job_request("img1", "s1", 1)).id, "job-000000000001");
}

// ---------------------------------------------------------------------------------------------
// Deletes
// ---------------------------------------------------------------------------------------------

fn still_referenced(kind: ObjectKind, id: &str, by_kind: ObjectKind, by_id: &str) -> Refusal {
    Refusal::StillReferenced { kind, id: id.into(), by_kind, by_id: by_id.into() }
}

#[test]
fn deleting_a_center_offered_by_a_spec_is_still_referenced_by_the_spec() {
    let mut kv = catalog();
    assert_eq!(refused(&mut kv, Command::DeleteCenter { id: "c1".into() }), still_referenced(CENTER, "c1", SPEC, "s1"));
}

#[test]
fn deleting_a_center_priced_by_a_spec_is_still_referenced_by_the_spec() {
    let mut kv = catalog();
    let mut s = spec("s2", &["c1"]);
    s.center_prices.insert("c2".into(), 7);
    ok(&mut kv, put_spec(s, Create));
    assert_eq!(refused(&mut kv, Command::DeleteCenter { id: "c2".into() }), still_referenced(CENTER, "c2", SPEC, "s2"));
}

#[test]
fn deleting_a_center_holding_an_image_is_still_referenced_by_the_image() {
    let mut kv = catalog();
    ok(&mut kv, put_image(image("img2", "c2", &[]), Create));
    assert_eq!(
        refused(&mut kv, Command::DeleteCenter { id: "c2".into() }),
        still_referenced(CENTER, "c2", IMAGE, "img2")
    );
}

#[test]
fn deleting_a_center_holding_a_dataset_replica_is_still_referenced_by_the_dataset() {
    let mut kv = catalog();
    ok(&mut kv, put_dataset(dataset("imagenet", &["c2"]), Create));
    assert_eq!(
        refused(&mut kv, Command::DeleteCenter { id: "c2".into() }),
        still_referenced(CENTER, "c2", DATASET, "imagenet@v1")
    );
}

#[test]
fn deleting_a_spec_fitted_by_an_image_is_still_referenced_by_the_image() {
    let mut kv = catalog();
    assert_eq!(refused(&mut kv, Command::DeleteSpec { id: "s1".into() }), still_referenced(SPEC, "s1", IMAGE, "img1"));
}

#[test]
fn deleting_an_image_used_by_a_pending_job_is_still_referenced_by_the_job() {
    let mut kv = catalog();
    let job = submitted(&mut kv, job_request("img1", "s1", 1));
    assert_eq!(
        refused(&mut kv, Command::DeleteImage { id: "img1".into() }),
        still_referenced(IMAGE, "img1", JOB, &job.id)
    );
}

#[test]
fn deleting_a_spec_used_by_a_pending_job_is_still_referenced_by_the_job() {
    let mut kv = catalog();
    ok(&mut kv, put_spec(spec("s2", &["c1"]), Create));
    ok(&mut kv, put_image(image("img2", "c1", &[]), Create));
    let job = submitted(&mut kv, job_request("img2", "s2", 1));
    assert_eq!(refused(&mut kv, Command::DeleteSpec { id: "s2".into() }), still_referenced(SPEC, "s2", JOB, &job.id));
}

#[test]
fn a_running_job_also_holds_its_image() {
    let mut kv = catalog();
    let job = submitted(&mut kv, job_request("img1", "s1", 1));
    force_status(&mut kv, &job.id, RunState::Running);
    assert_eq!(
        refused(&mut kv, Command::DeleteImage { id: "img1".into() }),
        still_referenced(IMAGE, "img1", JOB, &job.id)
    );
}

#[test]
fn a_stopped_job_releases_its_image_and_spec() {
    let mut kv = catalog();
    ok(&mut kv, put_spec(spec("s2", &["c1"]), Create));
    ok(&mut kv, put_image(image("img2", "c1", &[]), Create));
    let job = submitted(&mut kv, job_request("img2", "s2", 2));
    ok(&mut kv, stop(&job.id));
    assert_eq!(ok(&mut kv, Command::DeleteImage { id: "img2".into() }), Outcome::Deleted);
    assert_eq!(ok(&mut kv, Command::DeleteSpec { id: "s2".into() }), Outcome::Deleted);
    assert!(!tables::exists(&kv, IMAGE, "img2").unwrap());
    assert!(!tables::exists(&kv, SPEC, "s2").unwrap());
    assert!(stored::<Job>(&kv, JOB, &job.id).is_some(), "the finished job keeps its history");
}

#[test]
fn deleting_an_unreferenced_object_removes_it() {
    let mut kv = catalog();
    ok(&mut kv, put_dataset(dataset("imagenet", &["c2"]), Create));
    for command in [
        Command::DeleteDataset { id: "imagenet@v1".into() },
        Command::DeleteCenter { id: "c2".into() },
        Command::DeleteImage { id: "img1".into() },
        Command::DeleteSpec { id: "s1".into() },
        Command::DeleteCenter { id: "c1".into() },
    ] {
        assert_eq!(ok(&mut kv, command), Outcome::Deleted);
    }
    assert_eq!(kv, MemKv::default());
}

#[test]
fn deleting_a_missing_object_is_not_found() {
    let mut kv = catalog();
    let cases = [
        (Command::DeleteCenter { id: "c9".into() }, CENTER, "c9"),
        (Command::DeleteSpec { id: "s9".into() }, SPEC, "s9"),
        (Command::DeleteImage { id: "img9".into() }, IMAGE, "img9"),
        (Command::DeleteDataset { id: "mnist@v1".into() }, DATASET, "mnist@v1"),
    ];
    for (command, kind, id) in cases {
        assert_eq!(refused(&mut kv, command), Refusal::NotFound { kind, id: id.into() });
    }
}

#[test]
fn deleting_a_center_also_deletes_its_metrics() {
    let mut kv = catalog();
    ok(&mut kv, Command::ReportMetrics { center_id: "c2".into(), metrics: metrics(1) });
    ok(&mut kv, Command::ReportMetrics { center_id: "c1".into(), metrics: metrics(1) });
    ok(&mut kv, Command::DeleteCenter { id: "c2".into() });
    assert_eq!(kv.get(&tables::metrics_key("c2")).unwrap(), None);
    assert!(kv.get(&tables::metrics_key("c1")).unwrap().is_some(), "other centers keep theirs");
}

// ---------------------------------------------------------------------------------------------
// ReportMetrics
// ---------------------------------------------------------------------------------------------

#[test]
fn metrics_for_an_unknown_center_are_not_found() {
    let mut kv = catalog();
    assert_eq!(
        refused(&mut kv, Command::ReportMetrics { center_id: "c9".into(), metrics: metrics(1) }),
        Refusal::NotFound { kind: CENTER, id: "c9".into() }
    );
}

#[test]
fn metrics_are_stamped_with_reported_at_and_stored_per_center() {
    let mut kv = catalog();
    let reported = CenterMetrics { reported_at: 42, ..metrics(3) };
    let outcome = ok_at(&mut kv, Command::ReportMetrics { center_id: "c1".into(), metrics: reported }, T1);
    let expected = CenterMetrics { reported_at: T1, ..metrics(3) };
    assert_eq!(outcome, Outcome::Metrics(expected.clone()));
    assert_eq!(get_json::<CenterMetrics>(&kv, &tables::metrics_key("c1")).unwrap(), Some(expected));
}

#[test]
fn a_new_report_replaces_the_previous_one() {
    let mut kv = catalog();
    ok_at(&mut kv, Command::ReportMetrics { center_id: "c1".into(), metrics: metrics(3) }, T0);
    ok_at(&mut kv, Command::ReportMetrics { center_id: "c1".into(), metrics: metrics(5) }, T1);
    let now: CenterMetrics = get_json(&kv, &tables::metrics_key("c1")).unwrap().unwrap();
    assert_eq!((now.running_task_num, now.reported_at), (5, T1));
}

#[test]
fn negative_metric_counters_are_invalid() {
    let mut kv = catalog();
    let cases = [
        (metrics(-1), "running_task_num"),
        (CenterMetrics { gpu_free: -8, ..metrics(0) }, "gpu_free"),
        (CenterMetrics { storage_used: i64::MIN, ..metrics(0) }, "storage_used"),
    ];
    for (m, field) in cases {
        match refused(&mut kv, Command::ReportMetrics { center_id: "c1".into(), metrics: m }) {
            Refusal::Invalid(message) => assert!(message.starts_with(&format!("{field}: ")), "{message}"),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }
}

#[test]
fn metrics_for_a_malformed_center_id_are_invalid() {
    let mut kv = catalog();
    match refused(&mut kv, Command::ReportMetrics { center_id: "../c1".into(), metrics: metrics(0) }) {
        Refusal::Invalid(message) => assert!(message.starts_with("ai_center_id: "), "{message}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Jobs
// ---------------------------------------------------------------------------------------------

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
    assert_eq!(job.tasks[0].replica_status, vec![RunState::Pending; 3]);
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
    assert_eq!(stopped.tasks[0].replica_status, vec![RunState::Failed; 2]);
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
    running.tasks[0].replica_status = vec![RunState::Completed, RunState::Running];
    crate::kv::put_json(&mut kv, tables::object_key(JOB, &job.id), &running);
    let (stopped, _) = job_outcome(ok(&mut kv, stop(&job.id)));
    assert_eq!(stopped.tasks[0].replica_status, vec![RunState::Completed, RunState::Failed]);
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
fn five_jobs() -> MemKv {
    let mut kv = catalog();
    for user in ["alice", "bob", "alice", "bob", "alice"] {
        submitted(&mut kv, job_request_of(user, "img1", "s1"));
    }
    ok(&mut kv, stop(&tables::job_id(2)));
    ok(&mut kv, stop(&tables::job_id(3)));
    kv
}

fn page_ids(kv: &MemKv, status: Option<RunState>, user: Option<&str>, page: u32, size: u32) -> (u64, Vec<String>) {
    let page = tables::jobs_page(kv, status, user, page, size).unwrap();
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
    let page = tables::jobs_page(&kv, None, None, 2, 2).unwrap();
    assert_eq!((page.page, page.page_size), (2, 2));
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

#[test]
fn the_fixtures_satisfy_the_invariants() {
    check_invariants(&catalog()).unwrap();
    check_invariants(&five_jobs()).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------------

const CENTERS: &[&str] = &["c1", "c2", "c3"];
const SPECS: &[&str] = &["s1", "s2"];
const IMAGES: &[&str] = &["i1", "i2"];
const DATASETS: &[&str] = &["d1", "d2"];
const KEYS: &[&str] = &["k1", "k2"];
const USERS: &[&str] = &["alice", "bob"];

fn pick(ids: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(ids).prop_map(String::from)
}

fn some_of(ids: &'static [&'static str]) -> impl Strategy<Value = Vec<&'static str>> {
    proptest::sample::subsequence(ids, 0..=ids.len())
}

fn write_mode() -> impl Strategy<Value = WriteMode> {
    prop_oneof![3 => Just(Create), 1 => Just(Replace)]
}

fn request_strategy() -> impl Strategy<Value = CreateTrainJob> {
    (proptest::collection::vec((pick(IMAGES), pick(SPECS), 1i64..3), 1..3), pick(USERS)).prop_map(|(tasks, user)| {
        let mut request = CreateTrainJob { user_name: Some(user), ..job_request("x", "x", 1) };
        request.tasks = tasks
            .into_iter()
            .enumerate()
            .map(|(i, (image, spec, replicas))| {
                let mut task = job_request(&image, &spec, replicas).tasks.remove(0);
                task.name = format!("t{i}");
                task
            })
            .collect();
        request
    })
}

/// Commands over a small id alphabet: they collide (Create twice, Replace missing) and refer
/// to each other (specs to centers, images to specs, jobs to images), so most paths of apply
/// are taken.
fn related_command() -> BoxedStrategy<Command> {
    prop_oneof![
        4 => (pick(CENTERS), write_mode()).prop_map(|(c, mode)| put_center(center(&c), mode)),
        1 => pick(CENTERS).prop_map(|id| Command::DeleteCenter { id }),
        3 => (pick(SPECS), some_of(CENTERS), write_mode()).prop_map(|(s, cs, mode)| put_spec(spec(&s, &cs), mode)),
        1 => pick(SPECS).prop_map(|id| Command::DeleteSpec { id }),
        3 => (pick(IMAGES), pick(CENTERS), some_of(SPECS), write_mode())
            .prop_map(|(i, c, ss, mode)| put_image(image(&i, &c, &ss), mode)),
        1 => pick(IMAGES).prop_map(|id| Command::DeleteImage { id }),
        2 => (pick(DATASETS), some_of(CENTERS), write_mode()).prop_map(|(d, cs, mode)| put_dataset(dataset(&d, &cs), mode)),
        1 => pick(DATASETS).prop_map(|d| Command::DeleteDataset { id: format!("{d}@v1") }),
        2 => (pick(CENTERS), -1i64..4).prop_map(|(center_id, n)| Command::ReportMetrics { center_id, metrics: metrics(n) }),
        5 => (request_strategy(), proptest::option::of(pick(KEYS)))
            .prop_map(|(request, idempotency_key)| Command::SubmitJob { request, idempotency_key }),
        // Retries from a tiny set of keyed requests: replays and reused keys.
        2 => (pick(KEYS), pick(USERS)).prop_map(|(key, user)| submit_with_key(job_request_of(&user, "i1", "s1"), &key)),
        2 => (1u64..6).prop_map(|n| stop(&tables::job_id(n))),
    ]
    .boxed()
}

/// A catalog in which most generated jobs are accepted: `i1` fits `s1` only, `i2` fits all.
fn seed_commands() -> Vec<Command> {
    vec![
        put_center(center("c1"), Create),
        put_center(center("c2"), Create),
        put_center(center("c3"), Create),
        put_spec(spec("s1", &["c1", "c2"]), Create),
        put_spec(spec("s2", &["c3"]), Create),
        put_image(image("i1", "c1", &["s1"]), Create),
        put_image(image("i2", "c3", &[]), Create),
        put_dataset(dataset("d1", &["c1"]), Create),
    ]
}

/// A command sequence, half the time starting from the seeded catalog, half from nothing.
fn sequence(command: BoxedStrategy<Command>, max_len: usize) -> impl Strategy<Value = Vec<Command>> {
    (any::<bool>(), proptest::collection::vec(command, 0..max_len)).prop_map(|(seeded, rest)| {
        let mut commands = if seeded { seed_commands() } else { Vec::new() };
        commands.extend(rest);
        commands
    })
}

/// Anything at all: arbitrary ids, numbers (NaN and infinities included), quantities and
/// lists, mixed with related commands so that the state is not always empty.
fn wild_command() -> BoxedStrategy<Command> {
    let text = || prop_oneof![pick(&["c1", "s1", "i1", "d1@v1", "job-000000000001", ""]), "\\PC{0,8}"];
    let number = || prop_oneof![-3i64..3, any::<i64>()];
    prop_oneof![
        4 => related_command(),
        1 => (text(), text(), any::<f64>(), any::<f64>(), any::<i32>(), write_mode()).prop_map(
            |(id, name, lon, lat, status, mode)| {
                put_center(Center { name, geometry: [lon, lat], status, ..center(&id) }, mode)
            }
        ),
        1 => (text(), text(), text(), text(), number(), write_mode()).prop_map(|(id, list, key, quantity, price, mode)| {
            let mut s = spec(&id, &[]);
            s.computing_center_list = list;
            s.resource_quantity.insert(key, quantity);
            s.price = price;
            put_spec(s, mode)
        }),
        1 => (text(), text(), text(), write_mode()).prop_map(|(id, c, specs, mode)| {
            put_image(Image { resource_spec: specs, ..image(&id, &c, &[]) }, mode)
        }),
        1 => (text(), text(), text(), number(), write_mode()).prop_map(|(name, version, c, size, mode)| {
            let mut d = dataset(&name, &[]);
            d.data_version = version;
            d.size_mb = size;
            d.location = dataset("x", &["c1"]).location;
            d.location[0].ai_center_id = c;
            put_dataset(d, mode)
        }),
        1 => (0usize..4, text()).prop_map(|(kind, id)| match kind {
            0 => Command::DeleteCenter { id },
            1 => Command::DeleteSpec { id },
            2 => Command::DeleteImage { id },
            _ => Command::DeleteDataset { id },
        }),
        1 => (text(), number(), number()).prop_map(|(center_id, running, gpu)| Command::ReportMetrics {
            center_id,
            metrics: CenterMetrics { gpu_free: gpu, ..metrics(running) },
        }),
        1 => (text(), text(), text(), -2i64..1100, 0usize..3, proptest::option::of(text())).prop_map(
            |(name, image, spec, replicas, tasks, idempotency_key)| {
                let mut request = job_request(&image, &spec, replicas);
                request.name = name;
                request.tasks = request.tasks.iter().cycle().take(tasks).cloned().collect();
                Command::SubmitJob { request, idempotency_key }
            }
        ),
        1 => (text(), text()).prop_map(|(job_id, reason)| Command::StopJob { job_id, reason }),
    ]
    .boxed()
}

/// Applies commands one by one, at `T0 + i`.
fn apply_each(kv: &mut MemKv, commands: &[Command]) -> Vec<CommandResult> {
    commands.iter().enumerate().map(|(i, c)| apply_at(kv, c.clone(), T0 + i as i64)).collect()
}

proptest! {
    /// The RocksDB state machine applies a batch through one `Overlay` and writes its writes
    /// atomically; that must be indistinguishable from applying the commands one by one.
    #[test]
    fn applying_batches_through_an_overlay_equals_applying_one_by_one(
        commands in sequence(related_command(), 50),
        cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..6),
    ) {
        let mut direct = MemKv::default();
        let expected = apply_each(&mut direct, &commands);

        let mut bounds: BTreeSet<usize> = cuts.iter().map(|c| c.index(commands.len() + 1)).collect();
        bounds.extend([0, commands.len()]);
        let bounds: Vec<usize> = bounds.into_iter().collect();
        let mut batched = MemKv::default();
        let mut results = Vec::new();
        for window in bounds.windows(2) {
            let mut overlay = Overlay::new(&batched);
            for (i, command) in commands.iter().enumerate().take(window[1]).skip(window[0]) {
                results.push(apply(&mut overlay, command, T0 + i as i64).expect("MemKv never faults"));
            }
            for (key, value) in overlay.into_writes() {
                match value {
                    Some(value) => batched.put(key, value),
                    None => batched.delete(key),
                }
            }
        }
        prop_assert_eq!(results, expected);
        prop_assert_eq!(batched, direct);
    }

    /// The status index, references and bookkeeping stay consistent after any sequence.
    #[test]
    fn invariants_hold_after_any_sequence(commands in sequence(related_command(), 60)) {
        let mut kv = MemKv::default();
        for (i, command) in commands.iter().enumerate() {
            let _ = apply_at(&mut kv, command.clone(), T0 + i as i64);
            if let Err(broken) = check_invariants(&kv) {
                prop_assert!(false, "after command {i} ({command:?}): {broken}");
            }
        }
    }

    /// Apply never panics and never reports a storage fault over state it wrote itself, however
    /// malformed the commands; refusals change nothing and the invariants still hold.
    #[test]
    fn apply_never_panics_on_arbitrary_commands(commands in sequence(wild_command(), 40)) {
        let mut kv = MemKv::default();
        for (i, command) in commands.iter().enumerate() {
            let before = kv.clone();
            let result = apply(&mut kv, command, T0 + i as i64);
            prop_assert!(result.is_ok(), "storage fault on {command:?}: {result:?}");
            if let Ok(Err(_)) = result {
                prop_assert_eq!(&kv, &before, "refused {:?} but changed the state", command);
            }
            if let Err(broken) = check_invariants(&kv) {
                prop_assert!(false, "after command {i} ({command:?}): {broken}");
            }
        }
    }

    /// Same log, same state, same results.
    #[test]
    fn applying_the_same_sequence_twice_gives_identical_state(
        commands in sequence(prop_oneof![3 => related_command(), 1 => wild_command()].boxed(), 40),
    ) {
        let (mut first, mut second) = (MemKv::default(), MemKv::default());
        let results_first = apply_each(&mut first, &commands);
        let results_second = apply_each(&mut second, &commands);
        prop_assert_eq!(results_first, results_second);
        prop_assert_eq!(first.map, second.map);
    }
}

//! The state machine's transition function: `apply(state, command) -> result`, a plain
//! function over a [`Kv`]. No clock, no randomness, no I/O beyond the map: the same log gives
//! the same state everywhere.

use jcs_api::model::{CenterMetrics, Dataset, Image, Job, ObjectKind, ReplicaRef, ResourceSpec, RunState};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::command::{Command, CommandResult, Outcome, Refusal, WriteMode};
use crate::kv::{get_json, put_json, Kv, StoreError};
use crate::tables::{self, all, exists, get, idempotency_key, metrics_key, object_key, status_key, JOB_SEQ_KEY};

pub mod ledger;
pub mod lifecycle;
pub mod owners;
pub mod place;
pub mod queue;

/// Applies one command at time `at_ms`. `Err` is a storage fault (fatal); a refused command is
/// `Ok(Err(refusal))` and changes nothing.
pub fn apply(kv: &mut impl Kv, command: &Command, at_ms: i64) -> Result<CommandResult, StoreError> {
    if let Err(err) = validate(command) {
        return Ok(Err(err.into()));
    }
    if let Some((center_id, epoch)) = command.owner_stamp() {
        if let Some(refusal) = lifecycle::check_owner(kv, center_id, epoch)? {
            return Ok(Err(refusal));
        }
    }
    let result = apply_checked(kv, command, at_ms)?;
    if result.is_ok() {
        bump_generations(kv, command)?;
    }
    Ok(result)
}

/// Counts changes to what a scheduling cycle reads, so that the scheduler reads the catalog
/// again only when it changed.
fn bump_generations(kv: &mut impl Kv, command: &Command) -> Result<(), StoreError> {
    let key = match command {
        Command::PutCenter { .. }
        | Command::DeleteCenter { .. }
        | Command::PutSpec { .. }
        | Command::DeleteSpec { .. }
        | Command::PutImage { .. }
        | Command::DeleteImage { .. }
        | Command::PutDataset { .. }
        | Command::DeleteDataset { .. } => tables::CATALOG_GEN_KEY,
        Command::ReportMetrics { center_id, .. } => return note_change(kv, &tables::METRICS_CHANGES, center_id),
        // A center's health bumps the catalog's generation itself, when its status changes.
        _ => return Ok(()),
    };
    bump_generation(kv, key).map(drop)
}

/// Adds one to a generation counter; returns the new generation.
pub(crate) fn bump_generation(kv: &mut impl Kv, key: &[u8]) -> Result<u64, StoreError> {
    let generation = tables::generation(kv, key)? + 1;
    put_json(kv, key.to_vec(), &generation);
    Ok(generation)
}

/// Notes that `center_id` changed, at a new generation of `notes`, and forgets its older note:
/// the scheduler re-reads only the centers changed since its last cycle, not all of them.
pub(crate) fn note_change(kv: &mut impl Kv, notes: &tables::ChangeNotes, center_id: &str) -> Result<(), StoreError> {
    let generation = bump_generation(kv, notes.generation)?;
    let latest = notes.latest_key(center_id);
    if let Some(previous) = get_json::<u64>(kv, &latest)? {
        kv.delete(notes.note_key(previous, center_id));
    }
    kv.put(notes.note_key(generation, center_id), Vec::new());
    put_json(kv, latest, &generation);
    Ok(())
}

/// Drops `center_id`'s change note, if it has one.
fn forget_changes(kv: &mut impl Kv, notes: &tables::ChangeNotes, center_id: &str) -> Result<(), StoreError> {
    let latest = notes.latest_key(center_id);
    if let Some(generation) = get_json::<u64>(kv, &latest)? {
        kv.delete(notes.note_key(generation, center_id));
        kv.delete(latest);
    }
    Ok(())
}

fn apply_checked(kv: &mut impl Kv, command: &Command, at_ms: i64) -> Result<CommandResult, StoreError> {
    match command {
        Command::PutCenter { center, mode } => {
            let mut center = center.clone();
            put_object(kv, ObjectKind::Center, &center.ai_center_id.clone(), *mode, at_ms, &mut center, |c, t| {
                (c.created_at, c.updated_at) = t
            })
            .map(|r| r.map(|()| Outcome::Center(center)))
        }
        Command::PutSpec { spec, mode } => {
            let listed = spec.centers().into_iter().map(|c| (ObjectKind::Center, c)).collect();
            let priced = spec.center_prices.keys().map(|c| (ObjectKind::Center, c.clone())).collect();
            let missing = match missing_reference(kv, "computing_center_list", listed)? {
                Some(refusal) => Some(refusal),
                None => missing_reference(kv, "center_prices", priced)?,
            };
            if let Some(refusal) = missing {
                return Ok(Err(refusal));
            }
            let mut spec = spec.clone();
            put_object(kv, ObjectKind::ResourceSpec, &spec.resource_spec_id.clone(), *mode, at_ms, &mut spec, |s, t| {
                (s.created_at, s.updated_at) = t
            })
            .map(|r| r.map(|()| Outcome::Spec(spec)))
        }
        Command::PutImage { image, mode } => {
            let field = |kind| if kind == ObjectKind::Center { "ai_center_id" } else { "resource_spec" };
            for (kind, id) in image.references() {
                if !exists(kv, kind, &id)? {
                    return Ok(Err(Refusal::UnknownReference { field: field(kind).into(), kind, id }));
                }
            }
            let mut image = image.clone();
            put_object(kv, ObjectKind::Image, &image.image_id.clone(), *mode, at_ms, &mut image, |i, t| {
                (i.created_at, i.updated_at) = t
            })
            .map(|r| r.map(|()| Outcome::Image(image)))
        }
        Command::PutDataset { dataset, mode } => {
            for (i, location) in dataset.location.iter().enumerate() {
                let field = format!("location[{i}].ai_center_id");
                let center = vec![(ObjectKind::Center, location.ai_center_id.clone())];
                if let Some(refusal) = missing_reference(kv, &field, center)? {
                    return Ok(Err(refusal));
                }
            }
            let mut dataset = dataset.clone();
            put_object(kv, ObjectKind::Dataset, &dataset.dataset_id(), *mode, at_ms, &mut dataset, |d, t| {
                (d.created_at, d.updated_at) = t
            })
            .map(|r| r.map(|()| Outcome::Dataset(dataset)))
        }
        Command::DeleteCenter { id } => delete(kv, ObjectKind::Center, id),
        Command::DeleteSpec { id } => delete(kv, ObjectKind::ResourceSpec, id),
        Command::DeleteImage { id } => delete(kv, ObjectKind::Image, id),
        Command::DeleteDataset { id } => delete(kv, ObjectKind::Dataset, id),
        Command::ReportMetrics { center_id, metrics } => {
            if !exists(kv, ObjectKind::Center, center_id)? {
                return Ok(Err(Refusal::NotFound { kind: ObjectKind::Center, id: center_id.clone() }));
            }
            let mut metrics = CenterMetrics { reported_at: at_ms, ..metrics.clone() };
            for replica in std::mem::take(&mut metrics.confirmed_replicas).iter().filter_map(|r| ReplicaRef::parse(r)) {
                ledger::release(kv, center_id, &replica.job_id, replica.task, replica.replica)?;
            }
            put_json(kv, metrics_key(center_id), &metrics);
            Ok(Ok(Outcome::Metrics(metrics)))
        }
        Command::SubmitJob { request, idempotency_key: key } => submit_job(kv, request, key.as_deref(), at_ms),
        Command::StopJob { job_id, reason } => lifecycle::stop_job(kv, job_id, reason, at_ms),
        Command::Place(batch) => place::place(kv, batch, at_ms),
        Command::Dispatched { center_id, key, native_id, .. } => {
            lifecycle::dispatched(kv, center_id, key, native_id, at_ms)
        }
        Command::ReportReplicas { center_id, reports, .. } => lifecycle::report_replicas(kv, center_id, reports, at_ms),
        Command::StopsDone { center_id, keys, .. } => lifecycle::stops_done(kv, center_id, keys, at_ms),
        Command::SetCenterHealth { center_id, available, reason, .. } => {
            lifecycle::set_center_health(kv, center_id, *available, reason, at_ms)
        }
        Command::RecordEvent { center_id, kind, job_id, message } => {
            if !exists(kv, ObjectKind::Center, center_id)? {
                return Ok(Err(Refusal::NotFound { kind: ObjectKind::Center, id: center_id.clone() }));
            }
            lifecycle::record_event(kv, center_id, *kind, job_id.as_deref(), message, at_ms)?;
            Ok(Ok(Outcome::Recorded))
        }
        Command::AssignOwners { term, owners } => owners::assign(kv, *term, owners),
        Command::NameCluster { cluster_id } => {
            let named = match tables::cluster_id(kv)? {
                Some(named) => named,
                None => {
                    // A cluster upgraded with replicas on its centers keeps the unscoped names
                    // it gave them: renaming would orphan every one of them. (A new cluster
                    // has none: its workers wait for the name.)
                    let named = if tables::replicas_on_centers(kv)? { String::new() } else { cluster_id.clone() };
                    put_json(kv, tables::CLUSTER_ID_KEY.to_vec(), &named);
                    named
                }
            };
            Ok(Ok(Outcome::ClusterNamed { cluster_id: named }))
        }
    }
}

/// The field rules of the command's payload. The API edge checks them too, but the state
/// machine is the authority: no command, however it was proposed, stores an invalid object.
fn validate(command: &Command) -> Result<(), jcs_api::ApiError> {
    use jcs_api::validate::{id, MAX_ID_LEN};
    match command {
        Command::PutCenter { center, .. } => center.validate(),
        Command::PutSpec { spec, .. } => spec.validate().map(drop),
        Command::PutImage { image, .. } => image.validate(),
        Command::PutDataset { dataset, .. } => dataset.validate(),
        Command::ReportMetrics { center_id, metrics } => {
            id("ai_center_id", center_id, MAX_ID_LEN)?;
            metrics.validate()
        }
        Command::SubmitJob { request, idempotency_key } => {
            if let Some(key) = idempotency_key {
                jcs_api::validate::text("Idempotency-Key", key, jcs_api::validate::MAX_IDEMPOTENCY_KEY_LEN)?;
            }
            request.validate()
        }
        Command::StopJob { reason, .. } => {
            jcs_api::validate::optional_text("reason", reason, jcs_api::validate::MAX_DESC_LEN)
        }
        Command::Dispatched { native_id, .. } => jcs_api::validate::text("native_id", native_id, MAX_ID_LEN * 4),
        Command::RecordEvent { message, .. } | Command::SetCenterHealth { reason: message, .. } => {
            jcs_api::validate::optional_text("message", message, jcs_api::validate::MAX_DESC_LEN * 8)
        }
        Command::ReportReplicas { .. } | Command::StopsDone { .. } => Ok(()),
        Command::NameCluster { cluster_id } => jcs_api::validate::cluster_id("cluster_id", cluster_id),
        Command::Place(_)
        | Command::AssignOwners { .. }
        | Command::DeleteCenter { .. }
        | Command::DeleteSpec { .. }
        | Command::DeleteImage { .. }
        | Command::DeleteDataset { .. } => Ok(()),
    }
}

/// Writes a catalog object under `mode`, stamping `(created_at, updated_at)`.
fn put_object<T: Serialize + DeserializeOwned>(
    kv: &mut impl Kv,
    kind: ObjectKind,
    id: &str,
    mode: WriteMode,
    at_ms: i64,
    object: &mut T,
    stamp: impl Fn(&mut T, (i64, i64)),
) -> Result<Result<(), Refusal>, StoreError> {
    let key = object_key(kind, id);
    let existing: Option<serde_json::Value> = get_json(kv, &key)?;
    let created_at = match (mode, &existing) {
        (WriteMode::Create, Some(_)) => return Ok(Err(Refusal::AlreadyExists { kind, id: id.into() })),
        (WriteMode::Replace, None) => return Ok(Err(Refusal::NotFound { kind, id: id.into() })),
        (WriteMode::Create, None) => at_ms,
        (WriteMode::Replace, Some(old)) => old.get("created_at").and_then(|v| v.as_i64()).unwrap_or(at_ms),
    };
    stamp(object, (created_at, at_ms));
    put_json(kv, key, object);
    Ok(Ok(()))
}

fn missing_reference(
    kv: &impl Kv,
    field: &str,
    refs: Vec<(ObjectKind, String)>,
) -> Result<Option<Refusal>, StoreError> {
    for (kind, id) in refs {
        if !exists(kv, kind, &id)? {
            return Ok(Some(Refusal::UnknownReference { field: field.into(), kind, id }));
        }
    }
    Ok(None)
}

/// Deletes a catalog object unless something still points at it.
fn delete(kv: &mut impl Kv, kind: ObjectKind, id: &str) -> Result<CommandResult, StoreError> {
    if !exists(kv, kind, id)? {
        return Ok(Err(Refusal::NotFound { kind, id: id.into() }));
    }
    if let Some((by_kind, by_id)) = first_referrer(kv, kind, id)? {
        return Ok(Err(Refusal::StillReferenced { kind, id: id.into(), by_kind, by_id }));
    }
    kv.delete(object_key(kind, id));
    if kind == ObjectKind::Center {
        kv.delete(metrics_key(id));
        // Deleting a center bumps the catalog's generation, which makes the scheduler read
        // every center again: its change notes are of no more use.
        forget_changes(kv, &tables::METRICS_CHANGES, id)?;
        forget_changes(kv, &tables::LEDGER_CHANGES, id)?;
    }
    Ok(Ok(Outcome::Deleted))
}

/// The first object that refers to `(kind, id)`: catalog objects, then unfinished jobs
/// (finished jobs keep their history but hold nothing).
fn first_referrer(kv: &impl Kv, kind: ObjectKind, id: &str) -> Result<Option<(ObjectKind, String)>, StoreError> {
    if kind == ObjectKind::Center {
        // Replicas still to submit, poll or stop there: deleting the center would orphan them.
        if let Some(job) = lifecycle::first_job_with_work_at(kv, id)? {
            return Ok(Some((ObjectKind::Job, job)));
        }
    }
    let target = (kind, id.to_string());
    for spec in all::<ResourceSpec>(kv, ObjectKind::ResourceSpec)? {
        if spec.references().contains(&target) {
            return Ok(Some((ObjectKind::ResourceSpec, spec.resource_spec_id)));
        }
    }
    for image in all::<Image>(kv, ObjectKind::Image)? {
        if image.references().contains(&target) {
            return Ok(Some((ObjectKind::Image, image.image_id)));
        }
    }
    for dataset in all::<Dataset>(kv, ObjectKind::Dataset)? {
        if dataset.references().contains(&target) {
            return Ok(Some((ObjectKind::Dataset, dataset.dataset_id())));
        }
    }
    for state in [RunState::Pending, RunState::Running] {
        for job_id in tables::job_ids_in(kv, state)? {
            let Some(job) = get::<Job>(kv, ObjectKind::Job, &job_id)? else { continue };
            let placed_here =
                kind == ObjectKind::Center && job.tasks.iter().any(|t| t.center_ids.iter().any(|c| c == id));
            if placed_here || job.references().contains(&target) {
                return Ok(Some((ObjectKind::Job, job_id)));
            }
        }
    }
    Ok(None)
}

fn submit_job(
    kv: &mut impl Kv,
    request: &jcs_api::model::CreateTrainJob,
    key: Option<&str>,
    at_ms: i64,
) -> Result<CommandResult, StoreError> {
    if let Some(key) = key {
        if let Some(job_id) = get_json::<String>(kv, &idempotency_key(key))? {
            let job: Job = get(kv, ObjectKind::Job, &job_id)?.ok_or_else(|| StoreError::Corrupt {
                key: format!("k/{key}"),
                reason: format!("names missing job {job_id}"),
            })?;
            if !job.matches_request(request) {
                return Ok(Err(Refusal::IdempotencyKeyReused { key: key.into(), job_id }));
            }
            return Ok(Ok(Outcome::Job { job: Box::new(job), replayed: true }));
        }
    }
    for (i, task) in request.tasks.iter().enumerate() {
        let Some(image) = get::<Image>(kv, ObjectKind::Image, &task.image_id)? else {
            return Ok(Err(Refusal::UnknownReference {
                field: format!("tasks[{i}].imageId"),
                kind: ObjectKind::Image,
                id: task.image_id.clone(),
            }));
        };
        if !exists(kv, ObjectKind::ResourceSpec, &task.resource_spec_id)? {
            return Ok(Err(Refusal::UnknownReference {
                field: format!("tasks[{i}].resourceSpecId"),
                kind: ObjectKind::ResourceSpec,
                id: task.resource_spec_id.clone(),
            }));
        }
        let fits = image.specs();
        if !fits.is_empty() && !fits.contains(&task.resource_spec_id) {
            return Ok(Err(Refusal::Invalid(format!(
                "tasks[{i}].imageId: image '{}' does not fit spec '{}'",
                image.image_id, task.resource_spec_id
            ))));
        }
    }
    if let Some(refusal) = scheduling_refusal(kv, request)? {
        return Ok(Err(refusal));
    }
    let seq = get_json::<u64>(kv, JOB_SEQ_KEY)?.unwrap_or(0) + 1;
    put_json(kv, JOB_SEQ_KEY.to_vec(), &seq);
    let job = Job::from_request(tables::job_id(seq), request, key.map(String::from), at_ms);
    put_json(kv, object_key(ObjectKind::Job, &job.id), &job);
    kv.put(status_key(job.status, &job.id), Vec::new());
    queue::enqueue(kv, &job.id)?;
    if let Some(key) = key {
        put_json(kv, idempotency_key(key), &job.id);
    }
    Ok(Ok(Outcome::Job { job: Box::new(job), replayed: false }))
}

/// The references of the scheduling extension fields: strategy ids in `weights`, the dataset,
/// pinned centers.
fn scheduling_refusal(kv: &impl Kv, request: &jcs_api::model::CreateTrainJob) -> Result<Option<Refusal>, StoreError> {
    if let Err(why) = crate::schedule::policy::resolve(&request.scheduling_options(), Default::default()) {
        return Ok(Some(Refusal::Invalid(why)));
    }
    if let Some(dataset) = &request.dataset_id {
        let dataset = vec![(ObjectKind::Dataset, dataset.clone())];
        if let Some(refusal) = missing_reference(kv, "datasetId", dataset)? {
            return Ok(Some(refusal));
        }
    }
    for (i, task) in request.tasks.iter().enumerate() {
        let pins = task.center_ids.iter().map(|c| (ObjectKind::Center, c.clone())).collect();
        if let Some(refusal) = missing_reference(kv, &format!("tasks[{i}].centerIDs"), pins)? {
            return Ok(Some(refusal));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;

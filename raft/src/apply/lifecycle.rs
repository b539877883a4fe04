//! Replicas after placement (standard §6.4, figure 5): dispatch recorded, what the centers
//! report, retries and reschedules, stops, center health and events — and the roll-up of it
//! all into the job's status. The center's owner observes; these functions decide.
//!
//! Three per-center work lists tell each owner what to do (see [`crate::tables`]): `dq/`
//! (submit these), `on/` (poll these), `so/` (stop these). Every transition keeps them in step
//! with the replicas' phases, so an owner — the current one or the next — needs nothing else.
//! In particular, a dispatch order withdrawn before its `Dispatched` arrived becomes a stop
//! order without a native id: the submit may have reached the center with its answer lost, so
//! the owner asks the center by key and stops whatever it finds.

use std::collections::{BTreeMap, BTreeSet};

use jcs_api::model::{
    center_status, roll_up, Center, CenterEvent, EventKind, FailureCategory, Job, ObjectKind, Observed, ReplicaKey,
    ReplicaPhase, ReplicaReport, RunState, MAX_RESCHEDULES,
};

use super::{ledger, queue};
use crate::command::{CommandResult, Outcome, Refusal};
use crate::kv::{get_json, put_json, Kv, StoreError};
use crate::schedule::problem::{LedgerEntry, SpecInfo};
use crate::tables::{
    self, center_owner, get, object_key, status_key, DispatchOrder, OnCenter, StopOrder, WorkList, EVENT_SEQ_KEY,
    MAX_EVENTS,
};

/// Refuses a write from an owner whose epoch has passed.
pub fn check_owner(kv: &impl Kv, center_id: &str, epoch: u64) -> Result<Option<Refusal>, StoreError> {
    if !tables::exists(kv, ObjectKind::Center, center_id)? {
        return Ok(Some(Refusal::NotFound { kind: ObjectKind::Center, id: center_id.into() }));
    }
    let current = center_owner(kv, center_id)?.epoch;
    Ok((epoch < current).then(|| Refusal::StaleOwner { center_id: center_id.into(), epoch, current }))
}

/// The jobs one command touches, loaded once and written back once.
/// Each job is kept with its stored form, so that a report that changes nothing (a replay, an
/// owner re-reporting after a restart) writes nothing.
struct Touched {
    jobs: BTreeMap<String, (Job, Job)>,
}

impl Touched {
    fn new() -> Self {
        Touched { jobs: BTreeMap::new() }
    }

    fn job<'a>(&'a mut self, kv: &impl Kv, id: &str) -> Result<Option<&'a mut Job>, StoreError> {
        if !self.jobs.contains_key(id) {
            let Some(job) = get::<Job>(kv, ObjectKind::Job, id)? else { return Ok(None) };
            self.jobs.insert(id.to_string(), (job.clone(), job));
        }
        Ok(self.jobs.get_mut(id).map(|(job, _)| job))
    }

    /// Rolls every touched job up and stores those that changed.
    fn store(self, kv: &mut impl Kv, at_ms: i64) -> Result<Vec<Job>, StoreError> {
        let mut out = Vec::new();
        for (_, (mut job, stored)) in self.jobs {
            settle(kv, &mut job, at_ms)?;
            if job != stored {
                job.updated_at = at_ms;
                if job.status != stored.status {
                    kv.delete(status_key(stored.status, &job.id));
                    kv.put(status_key(job.status, &job.id), Vec::new());
                }
                put_json(kv, object_key(ObjectKind::Job, &job.id), &job);
            }
            out.push(job);
        }
        Ok(out)
    }
}

/// Marks the replicas of a placed task that wait for a center for dispatch (all of them at
/// the first placement; after a reschedule only those it moved).
pub fn order_dispatch(kv: &mut impl Kv, job: &mut Job, task: usize, at_ms: i64) {
    let centers = job.tasks[task].center_ids.clone();
    for (r, replica) in job.tasks[task].replicas.iter_mut().enumerate() {
        if replica.phase != ReplicaPhase::Unplaced {
            continue;
        }
        replica.phase = ReplicaPhase::Dispatching;
        replica.changed_at = at_ms;
        let order = DispatchOrder { attempt: replica.attempt, not_before: replica.not_before };
        put_json(kv, WorkList::Dispatch.key(&centers[r], &job.id, task as u32, r as u32), &order);
    }
}

/// The owner submitted `key` to `center_id` and got `native_id`. A dispatch nobody wants any
/// more (stopped, rescheduled, retried meanwhile) becomes a stop order: nothing runs unowned.
pub fn dispatched(
    kv: &mut impl Kv,
    center_id: &str,
    key: &ReplicaKey,
    native_id: &str,
    at_ms: i64,
) -> Result<CommandResult, StoreError> {
    let mut touched = Touched::new();
    let mut accepted = false;
    if let Some(job) = touched.job(kv, &key.job_id)? {
        if let Some((center, replica)) = replica_mut(job, key) {
            if center == center_id && replica.attempt == key.attempt {
                match replica.phase {
                    ReplicaPhase::Dispatching => {
                        replica.phase = ReplicaPhase::Queued;
                        replica.native_id = Some(native_id.to_string());
                        replica.changed_at = at_ms;
                        kv.delete(WorkList::Dispatch.key(center_id, &key.job_id, key.task, key.replica));
                        let on = OnCenter { attempt: key.attempt, native_id: native_id.to_string() };
                        put_json(kv, WorkList::OnCenter.key(center_id, &key.job_id, key.task, key.replica), &on);
                        accepted = true;
                        let waiting = |p: ReplicaPhase| matches!(p, ReplicaPhase::Unplaced | ReplicaPhase::Dispatching);
                        if !job.tasks.iter().flat_map(|t| &t.replicas).any(|r| waiting(r.phase)) {
                            job.dispatched_at = Some(at_ms);
                        }
                    }
                    // A replay of a dispatch already recorded.
                    _ => accepted = replica.native_id.as_deref() == Some(native_id),
                }
            }
        }
    }
    if !accepted {
        let order = StopOrder { native_id: native_id.to_string(), reason: "dispatched but no longer wanted".into() };
        put_json(kv, tables::stop_order_key(center_id, key), &order);
    }
    touched.store(kv, at_ms)?;
    Ok(Ok(Outcome::Dispatch { accepted }))
}

/// The center's replica and its center for `key`'s job, task and replica (any attempt).
fn replica_mut<'a>(job: &'a mut Job, key: &ReplicaKey) -> Option<(String, &'a mut jcs_api::model::Replica)> {
    let task = job.tasks.get_mut(key.task as usize)?;
    let center = task.center_ids.get(key.replica as usize)?.clone();
    task.replicas.get_mut(key.replica as usize).map(|r| (center, r))
}

/// The owner's observations of replicas on its center.
pub fn report_replicas(
    kv: &mut impl Kv,
    center_id: &str,
    reports: &[ReplicaReport],
    at_ms: i64,
) -> Result<CommandResult, StoreError> {
    let mut touched = Touched::new();
    for report in reports {
        let key = &report.key;
        let Some(job) = touched.job(kv, &key.job_id)? else { continue };
        let Some((center, replica)) = replica_mut(job, key) else { continue };
        // A replica still being dispatched can only have been refused by the center.
        let refused = replica.phase == ReplicaPhase::Dispatching && matches!(report.observed, Observed::Failed { .. });
        if center != center_id || replica.attempt != key.attempt || !(replica.phase.is_on_center() || refused) {
            continue;
        }
        match &report.observed {
            Observed::Queued => {}
            Observed::Running => {
                if replica.phase == ReplicaPhase::Queued {
                    replica.phase = ReplicaPhase::Running;
                    replica.changed_at = at_ms;
                }
            }
            Observed::Completed => {
                leave_center(kv, center_id, key, replica.phase)?;
                replica.phase = ReplicaPhase::Completed;
                replica.exit_code = Some(0);
                replica.changed_at = at_ms;
            }
            Observed::Failed { exit_code, category, reason } => {
                replica.exit_code = *exit_code;
                // A refusal is the center's answer to the submit: nothing of it runs there.
                leave_center(kv, center_id, key, if refused { ReplicaPhase::Queued } else { replica.phase })?;
                let stopping = replica.phase == ReplicaPhase::Stopping;
                match category {
                    _ if stopping => fail(replica, replica.reason.clone(), at_ms),
                    FailureCategory::Stopped => fail(replica, format!("stopped at the center: {reason}"), at_ms),
                    FailureCategory::Application => retry_or_fail(kv, job, key, center_id, reason, at_ms)?,
                    FailureCategory::Center => {
                        let lost = BTreeSet::from([key.replica as usize]);
                        reschedule_replicas(kv, job, key.task as usize, &lost, center_id, reason, at_ms)?
                    }
                }
            }
        }
    }
    touched.store(kv, at_ms)?;
    Ok(Ok(Outcome::Recorded))
}

fn fail(replica: &mut jcs_api::model::Replica, reason: String, at_ms: i64) {
    replica.phase = ReplicaPhase::Failed;
    replica.reason = reason;
    replica.changed_at = at_ms;
}

/// Drops a replica attempt from its center's lists and the in-flight ledger. An attempt still
/// being dispatched may have been submitted already: it gets a stop order to be resolved by key.
fn leave_center(kv: &mut impl Kv, center_id: &str, key: &ReplicaKey, phase: ReplicaPhase) -> Result<(), StoreError> {
    kv.delete(WorkList::OnCenter.key(center_id, &key.job_id, key.task, key.replica));
    kv.delete(WorkList::Dispatch.key(center_id, &key.job_id, key.task, key.replica));
    if phase == ReplicaPhase::Dispatching {
        let order = StopOrder { native_id: String::new(), reason: "withdrawn before its dispatch was recorded".into() };
        put_json(kv, tables::stop_order_key(center_id, key), &order);
    }
    ledger::release(kv, center_id, &key.job_id, key.task, key.replica)
}

/// An application failure: retry on the same center after the backoff while retries remain.
fn retry_or_fail(
    kv: &mut impl Kv,
    job: &mut Job,
    key: &ReplicaKey,
    center_id: &str,
    reason: &str,
    at_ms: i64,
) -> Result<(), StoreError> {
    let policy = job.retry.clone();
    let spec_id = job.tasks[key.task as usize].resource_spec_id.clone();
    let replica = &mut job.tasks[key.task as usize].replicas[key.replica as usize];
    if replica.retries >= policy.max_retries {
        let why = format!("{reason} (no retries left: {} of {} spent)", replica.retries, policy.max_retries);
        fail(replica, why, at_ms);
        return Ok(());
    }
    replica.retries += 1;
    replica.attempt += 1;
    replica.native_id = None;
    replica.not_before = at_ms.saturating_add(policy.backoff(replica.retries) as i64);
    replica.phase = ReplicaPhase::Dispatching;
    replica.reason = format!("retry {} of {} after: {reason}", replica.retries, policy.max_retries);
    replica.changed_at = at_ms;
    let order = DispatchOrder { attempt: replica.attempt, not_before: replica.not_before };
    let message = replica.reason.clone();
    put_json(kv, WorkList::Dispatch.key(center_id, &key.job_id, key.task, key.replica), &order);
    hold_capacity(kv, center_id, &key.job_id, key.task, key.replica, &spec_id, at_ms)?;
    record_event(kv, center_id, EventKind::Retried, Some(&key.job_id), &message, at_ms)?;
    Ok(())
}

/// Deducts a replica's demand from its center until the center confirms it.
fn hold_capacity(
    kv: &mut impl Kv,
    center_id: &str,
    job_id: &str,
    task: u32,
    replica: u32,
    spec_id: &str,
    at_ms: i64,
) -> Result<(), StoreError> {
    let demand = get(kv, ObjectKind::ResourceSpec, spec_id)?.map(SpecInfo::new).map(|s| s.demand).unwrap_or_default();
    let entry =
        LedgerEntry { center_id: center_id.into(), job_id: job_id.into(), task, replica, demand, placed_at: at_ms };
    ledger::hold(kv, &entry)
}

/// A center fault: the replicas it cost (`lost`) leave their centers and the task re-enters the
/// queue for them alone, spending no application retry. Their siblings keep their centers and
/// their state — running, queued or finished — for a reschedule never restarts a replica the
/// fault did not touch (the scheduler places only the task's empty slots). After
/// [`MAX_RESCHEDULES`] the lost replicas fail instead, and the status policy decides the rest.
fn reschedule_replicas(
    kv: &mut impl Kv,
    job: &mut Job,
    task_index: usize,
    lost: &BTreeSet<usize>,
    failed_center: &str,
    reason: &str,
    at_ms: i64,
) -> Result<(), StoreError> {
    let job_id = job.id.clone();
    let task = &mut job.tasks[task_index];
    let reschedules = task.replicas.iter().map(|r| r.reschedules).max().unwrap_or(0) + 1;
    let give_up = reschedules > MAX_RESCHEDULES;
    let mut moved = Vec::new();
    for &r in lost {
        let Some(center) = task.kept_center(r).map(str::to_string) else { continue };
        let replica = &mut task.replicas[r];
        // One being stopped or already over is not run again anywhere: its stop order waits
        // for the center.
        if replica.phase == ReplicaPhase::Stopping || replica.phase.is_final() {
            continue;
        }
        let key =
            ReplicaKey { job_id: job_id.clone(), task: task_index as u32, replica: r as u32, attempt: replica.attempt };
        if replica.phase.is_on_center() {
            if let Some(native_id) = replica.native_id.clone() {
                let order = StopOrder { native_id, reason: format!("replica rescheduled: {reason}") };
                put_json(kv, tables::stop_order_key(&center, &key), &order);
            }
        }
        leave_center(kv, &center, &key, replica.phase)?;
        if give_up {
            if !replica.phase.is_final() {
                fail(replica, format!("{reason} (gave up after {MAX_RESCHEDULES} reschedules)"), at_ms);
            }
            continue;
        }
        replica.attempt += 1;
        replica.reschedules = reschedules;
        replica.native_id = None;
        replica.exit_code = None;
        replica.not_before = 0;
        replica.phase = ReplicaPhase::Unplaced;
        replica.reason = format!("rescheduled after a center fault: {reason}");
        replica.changed_at = at_ms;
        task.center_ids[r] = String::new();
        moved.push(format!("{r}@{center}"));
    }
    if moved.is_empty() {
        return Ok(());
    }
    job.placed_at = None;
    job.dispatched_at = None;
    queue::enqueue(kv, &job.id)?;
    let message = format!("task {task_index} replicas {} taken off: {reason}", moved.join(","));
    record_event(kv, failed_center, EventKind::Rescheduled, Some(&job.id), &message, at_ms)?;
    Ok(())
}

/// The owner stopped these native jobs.
pub fn stops_done(
    kv: &mut impl Kv,
    center_id: &str,
    keys: &[ReplicaKey],
    at_ms: i64,
) -> Result<CommandResult, StoreError> {
    let mut touched = Touched::new();
    for key in keys {
        kv.delete(tables::stop_order_key(center_id, key));
        let Some(job) = touched.job(kv, &key.job_id)? else { continue };
        let Some((center, replica)) = replica_mut(job, key) else { continue };
        if center == center_id && replica.attempt == key.attempt && replica.phase == ReplicaPhase::Stopping {
            let reason = replica.reason.clone();
            fail(replica, reason, at_ms);
            leave_center(kv, center_id, key, ReplicaPhase::Stopping)?;
        }
    }
    touched.store(kv, at_ms)?;
    Ok(Ok(Outcome::Recorded))
}

/// A.2: the job ends at once (failed, with the reason); its replicas on centers get stop orders.
pub fn stop_job(kv: &mut impl Kv, job_id: &str, reason: &str, at_ms: i64) -> Result<CommandResult, StoreError> {
    let Some(job) = get::<Job>(kv, ObjectKind::Job, job_id)? else {
        return Ok(Err(Refusal::NotFound { kind: ObjectKind::Job, id: job_id.into() }));
    };
    if job.status.is_final() {
        return Ok(Ok(Outcome::Job { job: Box::new(job), replayed: true }));
    }
    let mut touched = Touched::new();
    let job = touched.job(kv, job_id)?.expect("loaded above");
    job.status_reason = reason.into();
    end_replicas(kv, job, reason, at_ms)?;
    job.status = RunState::Failed;
    let job = touched.store(kv, at_ms)?.remove(0);
    Ok(Ok(Outcome::Job { job: Box::new(job), replayed: false }))
}

/// Ends every unfinished replica of a job that is over, and releases the job's queue entry and
/// ledger holds.
fn end_replicas(kv: &mut impl Kv, job: &mut Job, reason: &str, at_ms: i64) -> Result<(), StoreError> {
    queue::dequeue(kv, &job.id)?;
    ledger::release_job(kv, job)?;
    for t in 0..job.tasks.len() {
        end_task(kv, job, t, reason, at_ms)?;
    }
    Ok(())
}

/// Ends a task's unfinished replicas: stop orders for those on centers (and for those whose
/// dispatch may have happened), the rest fail unstarted.
fn end_task(kv: &mut impl Kv, job: &mut Job, t: usize, reason: &str, at_ms: i64) -> Result<(), StoreError> {
    let waited_for_a_center = !job.is_placed();
    let job_id = job.id.clone();
    let task = &mut job.tasks[t];
    for (r, replica) in task.replicas.iter_mut().enumerate() {
        let key = ReplicaKey { job_id: job_id.clone(), task: t as u32, replica: r as u32, attempt: replica.attempt };
        let center = task.center_ids.get(r).cloned();
        match (replica.phase, center) {
            (ReplicaPhase::Queued | ReplicaPhase::Running, Some(center)) => {
                let native_id = replica.native_id.clone().unwrap_or_default();
                put_json(kv, tables::stop_order_key(&center, &key), &StopOrder { native_id, reason: reason.into() });
                replica.phase = ReplicaPhase::Stopping;
                replica.reason = reason.into();
                replica.changed_at = at_ms;
            }
            (ReplicaPhase::Dispatching, Some(center)) => {
                leave_center(kv, &center, &key, ReplicaPhase::Dispatching)?;
                fail(replica, format!("not started: {reason}"), at_ms);
            }
            (ReplicaPhase::Stopping, _) => {}
            (phase, _) if !phase.is_final() => fail(replica, format!("not started: {reason}"), at_ms),
            _ => {}
        }
    }
    // Its rescheduled replicas ended before they were placed again: nothing waits for the
    // scheduler any more.
    if waited_for_a_center && job.is_placed() && !job.status.is_final() {
        queue::dequeue(kv, &job.id)?;
    }
    Ok(())
}

/// Rolls the replicas up under the job's status policy; a job that turns final ends its
/// remaining replicas.
fn settle(kv: &mut impl Kv, job: &mut Job, at_ms: i64) -> Result<(), StoreError> {
    if job.status.is_final() {
        return Ok(());
    }
    let states: Vec<Vec<RunState>> = job.tasks.iter().map(|t| t.replica_status()).collect();
    let status = roll_up(job.status_policy, &states);
    if !status.is_final() {
        // A failed task cannot go on with a replica missing: its others are stopped even when
        // the policy keeps the job open.
        for (t, replicas) in states.iter().enumerate() {
            let unfinished = replicas.iter().any(|s| !s.is_final());
            if replicas.contains(&RunState::Failed) && unfinished {
                let why = format!("task {} failed", job.tasks[t].name);
                end_task(kv, job, t, &why, at_ms)?;
            }
        }
    }
    if status.is_final() {
        let why = first_failure(job).unwrap_or_default();
        job.status_reason = match status {
            RunState::Failed => format!("failed: {why}"),
            _ => "completed".into(),
        };
        let ending = format!("job {} under policy {}", status.as_str(), job.status_policy.as_str());
        end_replicas(kv, job, &ending, at_ms)?;
    }
    job.status = status;
    Ok(())
}

/// The reason of the first failed replica, `task[r]: reason`.
fn first_failure(job: &Job) -> Option<String> {
    job.tasks.iter().find_map(|t| {
        let r = t.replicas.iter().position(|r| r.phase == ReplicaPhase::Failed)?;
        Some(format!("{}[{r}]: {}", t.name, t.replicas[r].reason))
    })
}

/// The owner's verdict on a center's health. Going down takes every replica off it: their
/// tasks are rescheduled elsewhere and stop orders wait for the center's return.
pub fn set_center_health(
    kv: &mut impl Kv,
    center_id: &str,
    available: bool,
    reason: &str,
    at_ms: i64,
) -> Result<CommandResult, StoreError> {
    let Some(mut center) = get::<Center>(kv, ObjectKind::Center, center_id)? else {
        return Ok(Err(Refusal::NotFound { kind: ObjectKind::Center, id: center_id.into() }));
    };
    let status = if available { center_status::AVAILABLE } else { center_status::UNAVAILABLE };
    if center.status == status {
        return Ok(Ok(Outcome::Center(center)));
    }
    center.status = status;
    center.updated_at = at_ms;
    put_json(kv, object_key(ObjectKind::Center, center_id), &center);
    super::bump_generation(kv, tables::CATALOG_GEN_KEY)?;
    let kind = if available { EventKind::CenterUp } else { EventKind::CenterDown };
    record_event(kv, center_id, kind, None, reason, at_ms)?;
    if !available {
        let mut reports = Vec::new();
        for (job_id, task, replica, order) in tables::work_list::<DispatchOrder>(kv, WorkList::Dispatch, center_id)? {
            reports.push((ReplicaKey { job_id, task, replica, attempt: order.attempt }, String::new()));
        }
        for (job_id, task, replica, on) in tables::work_list::<OnCenter>(kv, WorkList::OnCenter, center_id)? {
            reports.push((ReplicaKey { job_id, task, replica, attempt: on.attempt }, on.native_id));
        }
        let mut touched = Touched::new();
        // Every replica on the center, by task: each task is rescheduled once for them all.
        let mut lost: BTreeMap<(String, u32), BTreeSet<usize>> = BTreeMap::new();
        for (key, _) in reports {
            let Some(job) = touched.job(kv, &key.job_id)? else { continue };
            let still_here = replica_mut(job, &key).is_some_and(|(c, r)| c == center_id && r.attempt == key.attempt);
            if still_here && !job.status.is_final() {
                lost.entry((key.job_id.clone(), key.task)).or_default().insert(key.replica as usize);
            }
        }
        let why = format!("center {center_id} unavailable: {reason}");
        for ((job_id, task), replicas) in lost {
            let job = touched.job(kv, &job_id)?.expect("loaded above");
            reschedule_replicas(kv, job, task as usize, &replicas, center_id, &why, at_ms)?;
        }
        touched.store(kv, at_ms)?;
    }
    Ok(Ok(Outcome::Center(center)))
}

/// A job with a replica to submit to, poll at or stop at `center_id`, if any.
pub fn first_job_with_work_at(kv: &impl Kv, center_id: &str) -> Result<Option<String>, StoreError> {
    if let Some((key, _)) = tables::stop_orders(kv, center_id)?.into_iter().next() {
        return Ok(Some(key.job_id));
    }
    for list in [WorkList::OnCenter, WorkList::Dispatch] {
        let entries: Vec<(String, u32, u32, serde_json::Value)> = tables::work_list(kv, list, center_id)?;
        if let Some((job, ..)) = entries.into_iter().next() {
            return Ok(Some(job));
        }
    }
    Ok(None)
}

/// Appends an event, dropping the oldest beyond [`MAX_EVENTS`].
pub fn record_event(
    kv: &mut impl Kv,
    center_id: &str,
    kind: EventKind,
    job_id: Option<&str>,
    message: &str,
    at_ms: i64,
) -> Result<(), StoreError> {
    let seq = get_json::<u64>(kv, EVENT_SEQ_KEY)?.unwrap_or(0) + 1;
    put_json(kv, EVENT_SEQ_KEY.to_vec(), &seq);
    let event = CenterEvent {
        seq,
        at: at_ms,
        center_id: center_id.into(),
        kind,
        job_id: job_id.map(String::from),
        message: message.chars().take(jcs_api::validate::MAX_DESC_LEN).collect(),
    };
    put_json(kv, tables::event_key(seq), &event);
    if seq > MAX_EVENTS {
        kv.delete(tables::event_key(seq - MAX_EVENTS));
    }
    Ok(())
}

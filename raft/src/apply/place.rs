//! Applying a scheduling cycle's [`PlacementBatch`]: fence check, ledger expiry, then each job's
//! decision — re-checked against the state as it is now, since jobs may have been stopped or
//! centers deleted after the leader took its snapshot.

use std::collections::HashMap;

use jcs_api::model::{center_status, Center, Job, ObjectKind};
use jcs_api::quantity::ResourceAmounts;

use crate::apply::{ledger, lifecycle, queue};
use crate::command::{CommandResult, Outcome, PlacementBatch, PlacementDecision, Refusal};
use crate::kv::{put_json, Kv, StoreError};
use crate::schedule::problem::{LedgerEntry, SpecInfo};
use crate::tables::{explain_key, get, object_key, sched_fence, SchedulerFence, SCHED_FENCE_KEY};

pub fn place(kv: &mut impl Kv, batch: &PlacementBatch, at_ms: i64) -> Result<CommandResult, StoreError> {
    let fence = sched_fence(kv)?;
    if batch.term < fence.term {
        let why = format!("term {} is older than the scheduling term {}", batch.term, fence.term);
        return Ok(Err(Refusal::StalePlacement(why)));
    }
    if batch.snapshot_version != fence.version {
        let why = format!("computed on placement version {}, now {}", batch.snapshot_version, fence.version);
        return Ok(Err(Refusal::StalePlacement(why)));
    }
    ledger::release_placed_before(kv, at_ms.saturating_sub(batch.ledger_ttl_ms))?;
    let mut applied = Vec::new();
    let mut skipped = Vec::new();
    let mut demands = HashMap::new();
    for decision in &batch.decisions {
        if apply_decision(kv, decision, at_ms, &mut demands)? {
            applied.push(decision.job_id.clone());
        } else {
            skipped.push(decision.job_id.clone());
        }
    }
    if let Some(highest) = applied.iter().max() {
        queue::raise_floor(kv, highest)?;
    }
    put_json(kv, SCHED_FENCE_KEY.to_vec(), &SchedulerFence { term: batch.term, version: fence.version + 1 });
    Ok(Ok(Outcome::Placed { applied, skipped }))
}

/// Applies one job's decision if it still fits the state; `false` when skipped.
/// `demands` caches each spec's parsed demand over the batch (a spec offered by many centers is
/// a large value to decode once per placement).
fn apply_decision(
    kv: &mut impl Kv,
    decision: &PlacementDecision,
    at_ms: i64,
    demands: &mut HashMap<String, ResourceAmounts>,
) -> Result<bool, StoreError> {
    let Some(mut job) = get::<Job>(kv, ObjectKind::Job, &decision.job_id)? else { return Ok(false) };
    if job.status.is_final() || job.is_placed() || decision.placements.len() != job.tasks.len() {
        return Ok(false);
    }
    for (task, placement) in job.tasks.iter().zip(&decision.placements) {
        let Some(centers) = placement else { continue };
        if task.is_placed() || centers.len() != task.replica_number as usize {
            return Ok(false);
        }
        for center in centers {
            // Gone, or marked down since the snapshot: nothing would dispatch there.
            match get::<Center>(kv, ObjectKind::Center, center)? {
                Some(c) if c.status != center_status::UNAVAILABLE => {}
                _ => return Ok(false),
            }
        }
    }
    for (task_index, placement) in decision.placements.iter().enumerate() {
        let Some(centers) = placement else { continue };
        let task = &mut job.tasks[task_index];
        let demand = match demands.get(&task.resource_spec_id) {
            Some(demand) => demand.clone(),
            None => {
                let spec = get(kv, ObjectKind::ResourceSpec, &task.resource_spec_id)?.map(SpecInfo::new);
                let demand = spec.map(|s| s.demand).unwrap_or_default();
                demands.insert(task.resource_spec_id.clone(), demand.clone());
                demand
            }
        };
        for (replica, center) in centers.iter().enumerate() {
            let entry = LedgerEntry {
                center_id: center.clone(),
                job_id: job.id.clone(),
                task: task_index as u32,
                replica: replica as u32,
                demand: demand.clone(),
                placed_at: at_ms,
            };
            ledger::hold(kv, &entry)?;
        }
        task.center_ids = centers.clone();
        lifecycle::order_dispatch(kv, &mut job, task_index, at_ms);
    }
    job.status_reason = decision.explain.reason.clone();
    job.updated_at = at_ms;
    if job.is_placed() {
        job.placed_at = Some(at_ms);
        queue::dequeue(kv, &job.id)?;
    }
    put_json(kv, object_key(ObjectKind::Job, &job.id), &job);
    put_json(kv, explain_key(&job.id), &decision.explain);
    Ok(true)
}

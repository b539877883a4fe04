//! Applying a scheduling cycle's [`PlacementBatch`]: fence check, ledger expiry, then each job's
//! decision — re-checked against the state as it is now, since jobs may have been stopped or
//! centers deleted after the leader took its snapshot.

use std::collections::HashMap;

use jcs_api::model::{center_status, Job, ObjectKind};
use jcs_api::quantity::ResourceAmounts;
use serde::Deserialize;

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
    let mut reads = BatchReads::default();
    let mut holds = ledger::BatchHolds::default();
    for decision in &batch.decisions {
        if apply_decision(kv, decision, at_ms, &mut reads, &mut holds)? {
            applied.push(decision.job_id.clone());
        } else {
            skipped.push(decision.job_id.clone());
        }
    }
    holds.finish(kv)?;
    if let Some(highest) = applied.iter().max() {
        queue::raise_floor(kv, highest)?;
    }
    put_json(kv, SCHED_FENCE_KEY.to_vec(), &SchedulerFence { term: batch.term, version: fence.version + 1 });
    Ok(Ok(Outcome::Placed { applied, skipped }))
}

/// What a batch reads over and over and never changes: each spec's demand (a spec offered by
/// many centers is a large value to decode), each center's availability (only its status is
/// decoded).
#[derive(Default)]
struct BatchReads {
    demands: HashMap<String, ResourceAmounts>,
    available: HashMap<String, bool>,
}

impl BatchReads {
    fn demand(&mut self, kv: &impl Kv, spec_id: &str) -> Result<ResourceAmounts, StoreError> {
        if let Some(demand) = self.demands.get(spec_id) {
            return Ok(demand.clone());
        }
        let spec = get(kv, ObjectKind::ResourceSpec, spec_id)?.map(SpecInfo::new);
        let demand = spec.map(|s| s.demand).unwrap_or_default();
        self.demands.insert(spec_id.to_string(), demand.clone());
        Ok(demand)
    }

    /// Whether the center exists and is not marked down.
    fn available(&mut self, kv: &impl Kv, center_id: &str) -> Result<bool, StoreError> {
        /// The one field of a center that a placement reads.
        #[derive(Deserialize)]
        struct Status {
            status: Option<i32>,
        }
        if let Some(available) = self.available.get(center_id) {
            return Ok(*available);
        }
        let status = get::<Status>(kv, ObjectKind::Center, center_id)?;
        let available = status.is_some_and(|s| s.status != Some(center_status::UNAVAILABLE));
        self.available.insert(center_id.to_string(), available);
        Ok(available)
    }
}

/// Applies one job's decision if it still fits the state; `false` when skipped.
fn apply_decision(
    kv: &mut impl Kv,
    decision: &PlacementDecision,
    at_ms: i64,
    reads: &mut BatchReads,
    holds: &mut ledger::BatchHolds,
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
        for (replica, center) in centers.iter().enumerate() {
            match (task.placing(replica), center.is_empty()) {
                (false, _) => {}
                // The replica left its center after the decision was made: the decision does
                // not know it needs one.
                (true, true) => return Ok(false),
                // Gone, or marked down since the snapshot: nothing would dispatch there.
                (true, false) if !reads.available(kv, center)? => return Ok(false),
                (true, false) => {}
            }
        }
    }
    for (task_index, placement) in decision.placements.iter().enumerate() {
        let Some(centers) = placement else { continue };
        let task = &mut job.tasks[task_index];
        let demand = reads.demand(kv, &task.resource_spec_id)?;
        // Replicas that outlived a center fault where they are keep their centers (and those
        // that ended meanwhile their empty slot): only the replicas waiting for a center take
        // the decision's.
        let mut placed = centers.clone();
        for (replica, center) in placed.iter_mut().enumerate() {
            if !task.placing(replica) {
                *center = task.kept_center(replica).unwrap_or_default().to_string();
                continue;
            }
            let entry = LedgerEntry {
                center_id: center.clone(),
                job_id: job.id.clone(),
                task: task_index as u32,
                replica: replica as u32,
                demand: demand.clone(),
                placed_at: at_ms,
            };
            holds.hold(kv, &entry);
        }
        task.center_ids = placed;
        lifecycle::order_dispatch(kv, &mut job, task_index, at_ms);
    }
    job.status_reason = decision.reason().map_err(|e| StoreError::Corrupt {
        key: format!("placement of {}", job.id),
        reason: format!("undecodable explain record: {e}"),
    })?;
    job.updated_at = at_ms;
    if job.is_placed() {
        job.placed_at = Some(at_ms);
        queue::dequeue(kv, &job.id)?;
    }
    put_json(kv, object_key(ObjectKind::Job, &job.id), &job);
    kv.put(explain_key(&job.id), decision.explain.as_bytes().to_vec());
    Ok(true)
}

//! What a center is told to run for one replica attempt (Table 9 plus context), read from the
//! replicated state: the task's command, the image as that center has it, the spec's demand,
//! and the `JCS_*` environment every replica gets.

use std::collections::BTreeMap;
use std::time::Duration;

use jcs_adapters::ReplicaLaunch;
use jcs_api::model::{Image, Job, ObjectKind, ReplicaKey, ReplicaPhase, ResourceSpec};
use jcs_api::quantity::ResourceAmounts;
use jcs_raft::kv::{KvRead, StoreError};
use jcs_raft::tables;

/// First port of the rendezvous range handed to distributed tasks.
const RENDEZVOUS_BASE_PORT: u32 = 29_500;
const RENDEZVOUS_PORTS: u32 = 20_000;

/// The launch for `key` on `center_id`; `None` when the replica no longer waits for dispatch.
pub fn build(kv: &impl KvRead, center_id: &str, key: &ReplicaKey) -> Result<Option<ReplicaLaunch>, StoreError> {
    let Some(job) = tables::get::<Job>(kv, ObjectKind::Job, &key.job_id)? else { return Ok(None) };
    let Some(task) = job.tasks.get(key.task as usize) else { return Ok(None) };
    let Some(replica) = task.replicas.get(key.replica as usize) else { return Ok(None) };
    let placed_here = task.center_ids.get(key.replica as usize).map(String::as_str) == Some(center_id);
    if !placed_here || replica.attempt != key.attempt || replica.phase != ReplicaPhase::Dispatching {
        return Ok(None);
    }
    let demand = tables::get::<ResourceSpec>(kv, ObjectKind::ResourceSpec, &task.resource_spec_id)?
        .and_then(|spec| ResourceAmounts::from_quantities(&spec.resource_quantity).ok())
        .unwrap_or_default();
    let image = image_at(kv, &task.image_id, center_id)?;
    let mut env = BTreeMap::from([
        ("JCS_JOB_ID".to_string(), job.id.clone()),
        ("JCS_TASK".to_string(), task.name.clone()),
        ("JCS_TASK_INDEX".to_string(), key.task.to_string()),
        ("JCS_REPLICA_INDEX".to_string(), key.replica.to_string()),
        ("JCS_REPLICAS".to_string(), task.replica_number.to_string()),
        ("JCS_CENTER".to_string(), center_id.to_string()),
        ("JCS_ATTEMPT".to_string(), key.attempt.to_string()),
    ]);
    if task.replica_number > 1 {
        // Replica 0 hosts the rendezvous (the PyTorch/NCCL master) on a port fixed per task.
        let port = RENDEZVOUS_BASE_PORT + stable_hash(&format!("{}/{}", job.id, key.task)) % RENDEZVOUS_PORTS;
        env.insert("JCS_RENDEZVOUS".into(), format!("{}:{port}", task.center_ids[0]));
    }
    Ok(Some(ReplicaLaunch {
        key: key.clone(),
        command: task.command.clone(),
        image,
        demand,
        env,
        duration_hint: job.options.duration_secs.map(Duration::from_secs),
    }))
}

/// The task's image as `center_id` holds it: the image of the same name registered for that
/// center (the solver placed the replica there because one exists), its `reference` if set.
fn image_at(kv: &impl KvRead, image_id: &str, center_id: &str) -> Result<String, StoreError> {
    let Some(image) = tables::get::<Image>(kv, ObjectKind::Image, image_id)? else { return Ok(image_id.to_string()) };
    let local = if image.ai_center_id == center_id {
        Some(image.clone())
    } else {
        tables::all::<Image>(kv, ObjectKind::Image)?
            .into_iter()
            .find(|i| i.name == image.name && i.ai_center_id == center_id)
    };
    let chosen = local.unwrap_or(image);
    Ok(if chosen.reference.is_empty() { chosen.name } else { chosen.reference })
}

/// FNV-1a: stable across processes and releases (unlike `DefaultHasher`).
fn stable_hash(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

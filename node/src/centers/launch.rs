//! What a center is told to run for one replica attempt (Table 9 plus context), read from the
//! replicated state: the task's command, the image as that center has it, the spec's demand,
//! and the `JCS_*` environment every replica gets.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
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
pub fn build(
    kv: &impl KvRead,
    center_id: &str,
    key: &ReplicaKey,
    images: &ImagesAt,
) -> Result<Option<ReplicaLaunch>, StoreError> {
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
    let image = images.reference(kv, &task.image_id)?;
    let mut env = BTreeMap::from([
        ("JCS_JOB_ID".to_string(), job.id.clone()),
        ("JCS_TASK".to_string(), task.name.clone()),
        ("JCS_TASK_INDEX".to_string(), key.task.to_string()),
        ("JCS_REPLICA_INDEX".to_string(), key.replica.to_string()),
        ("JCS_REPLICAS".to_string(), task.replica_number.to_string()),
        ("JCS_CENTER".to_string(), center_id.to_string()),
        ("JCS_ATTEMPT".to_string(), key.attempt.to_string()),
    ]);
    // Replica 0 hosts the rendezvous (the PyTorch/NCCL master) on a port fixed per task; while
    // it waits to be placed again after a center fault, its center is not known.
    if let Some(host) = task.kept_center(0).filter(|_| task.replica_number > 1) {
        let port = RENDEZVOUS_BASE_PORT + stable_hash(&format!("{}/{}", job.id, key.task)) % RENDEZVOUS_PORTS;
        env.insert("JCS_RENDEZVOUS".into(), format!("{host}:{port}"));
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

/// The images one center holds, by name (name → reference), read from the catalog when a job
/// names an image not seen yet and after each [`ImagesAt::forget`] (every poll) — not once
/// per replica.
pub struct ImagesAt {
    center_id: String,
    by_name: Mutex<HashMap<String, String>>,
}

impl ImagesAt {
    pub fn new(center_id: &str) -> Self {
        ImagesAt { center_id: center_id.to_string(), by_name: Mutex::new(HashMap::new()) }
    }

    /// Drops what was read, so that the next launch sees catalog changes.
    pub fn forget(&self) {
        self.by_name.lock().expect("image cache lock").clear();
    }

    /// The task's image as this center holds it: the image of the same name registered for the
    /// center (the solver placed the replica here because one exists), its `reference` if set.
    fn reference(&self, kv: &impl KvRead, image_id: &str) -> Result<String, StoreError> {
        let Some(image) = tables::get::<Image>(kv, ObjectKind::Image, image_id)? else {
            return Ok(image_id.to_string());
        };
        if let Some(reference) = self.by_name.lock().expect("image cache lock").get(&image.name) {
            return Ok(reference.clone());
        }
        let here: HashMap<String, String> = tables::all::<Image>(kv, ObjectKind::Image)?
            .into_iter()
            .filter(|i| i.ai_center_id == self.center_id)
            .map(|i| {
                let reference = if i.reference.is_empty() { i.name.clone() } else { i.reference };
                (i.name, reference)
            })
            .collect();
        let fallback = if image.reference.is_empty() { image.name.clone() } else { image.reference.clone() };
        let found = here.get(&image.name).cloned().unwrap_or(fallback);
        *self.by_name.lock().expect("image cache lock") = here;
        Ok(found)
    }
}

/// FNV-1a: stable across processes and releases (unlike `DefaultHasher`).
fn stable_hash(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

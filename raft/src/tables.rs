//! The key layout of the replicated state and the typed reads over it. Both the state machine
//! (through [`crate::apply`]) and the API's read path use these, so the layout lives here once.
//!
//! | prefix | value |
//! |---|---|
//! | `c/{center}` | `Center` |
//! | `m/{center}` | `CenterMetrics` |
//! | `s/{spec}` | `ResourceSpec` |
//! | `i/{image}` | `Image` |
//! | `d/{name@version}` | `Dataset` |
//! | `j/{job}` | `Job` (job ids sort in submission order) |
//! | `x/{status}/{job}` | empty: the status index (`x/pending/` is the queue) |
//! | `k/{idempotency key}` | job id |
//! | `q/{job}` | empty: the scheduling queue — jobs with a task still unplaced, in order — above its floor |
//! | `qh/{job}` | empty: the queue's held part, at or below its floor: jobs a placement batch passed over (see `apply::queue`) |
//! | `e/{job}` | `Explain`: the job's latest scheduling decision |
//! | `l/{center}/{job}/{task}/{replica}` | `LedgerEntry`: placed, not yet confirmed |
//! | `lt/{placed_at}/{center}/{job}/{task}/{replica}` | empty: the ledger by age, for expiry |
//! | `lc/{center}` | `InFlight`: the center's ledger totals |
//! | `dq/{center}/{job}/{task}/{replica}` | `DispatchOrder`: placed, to be submitted by the center's owner |
//! | `on/{center}/{job}/{task}/{replica}` | `OnCenter`: submitted, not yet final — what the owner polls |
//! | `so/{center}/{job}/{task}/{replica}/{attempt}` | `StopOrder`: a native job the owner must stop |
//! | `oe/{center}` | `CenterOwner`: the node that drives the center and its epoch; owner writes from an older epoch are refused |
//! | `ev/{seq}` | `CenterEvent`, the newest `MAX_EVENTS` kept |
//! | `meta/event_seq` | last event sequence number |
//! | `meta/catalog_gen` | bumped by every change to centers, specs, images, datasets |
//! | `meta/metrics_gen` | bumped by every monitoring report |
//! | `meta/job_seq` | last job sequence number |
//! | `meta/sched_fence` | `SchedulerFence`: highest scheduling term and placement version |
//! | `meta/owner_term` | highest leader term that assigned center owners |
//! | `mx/{generation}/{center}` | empty: the center whose latest report has this metrics generation |
//! | `mxc/{center}` | the metrics generation of the center's latest report |
//! | `lx/{generation}/{center}` | empty: the center whose ledger totals changed last at this ledger generation |
//! | `lxc/{center}` | the ledger generation of the center's latest totals change |
//! | `meta/ledger_gen` | bumped by every change to a center's ledger totals |
//! | `meta/cluster_id` | the cluster's id (`NameCluster`), in every name jcs gives a center |
//! | `meta/queue_floor` | the `q/` key of the highest job a placement batch placed: the queue is `qh/`, then `q/` above it (see `apply::queue`) |

use std::ops::ControlFlow;

use jcs_api::model::{Job, ObjectKind, Page, RunState, Window};
use serde::de::DeserializeOwned;

use crate::kv::{decode, get_json, KvRead, StoreError};

pub const JOB_SEQ_KEY: &[u8] = b"meta/job_seq";
pub const SCHED_FENCE_KEY: &[u8] = b"meta/sched_fence";
pub const OWNER_TERM_KEY: &[u8] = b"meta/owner_term";
pub const QUEUE_FLOOR_KEY: &[u8] = b"meta/queue_floor";
pub const CLUSTER_ID_KEY: &[u8] = b"meta/cluster_id";

/// The cluster's id, once its first leader has named it (empty for a cluster that ran
/// replicas before clusters had ids: its names stay unscoped).
pub fn cluster_id(kv: &impl KvRead) -> Result<Option<String>, StoreError> {
    get_json(kv, CLUSTER_ID_KEY)
}

/// Whether any replica is on a center (`on/`) or waits to be stopped there (`so/`).
pub fn replicas_on_centers(kv: &impl KvRead) -> Result<bool, StoreError> {
    let mut found = false;
    for prefix in [&b"on/"[..], &b"so/"[..]] {
        kv.scan(prefix, &mut |_, _| {
            found = true;
            ControlFlow::Break(())
        })?;
    }
    Ok(found)
}

/// Notes of which centers changed since a generation, kept for what a scheduling cycle caches
/// per center (monitoring reports, ledger totals): `{notes}{generation:020}/{center}` → empty,
/// one note per center (its latest), and `{latest}{center}` → the generation of that note.
pub struct ChangeNotes {
    /// The generation counter, bumped once per noted change.
    pub generation: &'static [u8],
    notes: &'static str,
    latest: &'static str,
}

/// Monitoring reports (`mx/`, `mxc/`), counted by `meta/metrics_gen`.
pub const METRICS_CHANGES: ChangeNotes = ChangeNotes { generation: METRICS_GEN_KEY, notes: "mx/", latest: "mxc/" };
/// Ledger totals (`lx/`, `lxc/`), counted by `meta/ledger_gen`.
pub const LEDGER_CHANGES: ChangeNotes = ChangeNotes { generation: LEDGER_GEN_KEY, notes: "lx/", latest: "lxc/" };

impl ChangeNotes {
    pub fn note_key(&self, generation: u64, center_id: &str) -> Vec<u8> {
        format!("{}{generation:020}/{center_id}", self.notes).into_bytes()
    }

    pub fn latest_key(&self, center_id: &str) -> Vec<u8> {
        format!("{}{center_id}", self.latest).into_bytes()
    }

    /// The centers that changed after generation `since`, in change order.
    pub fn changed_since(&self, kv: &(impl KvRead + ?Sized), since: u64) -> Result<Vec<String>, StoreError> {
        let prefix = self.notes.as_bytes();
        let mut after = self.note_key(since, "");
        after.push(u8::MAX);
        let mut centers = Vec::new();
        kv.scan_after(prefix, &after, &mut |k, _| {
            let tail = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            if let Some((_, center)) = tail.split_once('/') {
                centers.push(center.to_string());
            }
            ControlFlow::Continue(())
        })?;
        Ok(centers)
    }
}

pub const OWNER_PREFIX: &[u8] = b"oe/";
pub const QUEUE_PREFIX: &[u8] = b"q/";
pub const QUEUE_HELD_PREFIX: &[u8] = b"qh/";
pub const LEDGER_PREFIX: &[u8] = b"l/";
pub const EVENT_SEQ_KEY: &[u8] = b"meta/event_seq";
pub const CATALOG_GEN_KEY: &[u8] = b"meta/catalog_gen";
pub const METRICS_GEN_KEY: &[u8] = b"meta/metrics_gen";
pub const LEDGER_GEN_KEY: &[u8] = b"meta/ledger_gen";
pub const EVENT_PREFIX: &[u8] = b"ev/";
/// Events kept; older ones are dropped as new ones arrive.
pub const MAX_EVENTS: u64 = 10_000;

/// A placed replica attempt waiting to be submitted to its center.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DispatchOrder {
    pub attempt: u32,
    /// Not before this Unix ms (retry backoff).
    pub not_before: i64,
}

/// A submitted replica attempt that is not final yet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OnCenter {
    pub attempt: u32,
    pub native_id: String,
}

/// A native job the center's owner must stop.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StopOrder {
    pub native_id: String,
    pub reason: String,
}

/// Per-center work lists, keyed `{prefix}{center}/{job}/{task}/{replica}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkList {
    Dispatch,
    OnCenter,
}

impl WorkList {
    pub fn prefix(self, center: &str) -> Vec<u8> {
        let tag = match self {
            WorkList::Dispatch => "dq",
            WorkList::OnCenter => "on",
        };
        format!("{tag}/{center}/").into_bytes()
    }

    pub fn key(self, center: &str, job: &str, task: u32, replica: u32) -> Vec<u8> {
        let mut key = self.prefix(center);
        key.extend_from_slice(format!("{job}/{task}/{replica}").as_bytes());
        key
    }
}

/// Parses the `{job}/{task}/{replica}` tail of a work-list key.
fn replica_of(tail: &str) -> Option<(String, u32, u32)> {
    let mut parts = tail.split('/');
    let job = parts.next()?.to_string();
    let task = parts.next()?.parse().ok()?;
    let replica = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((job, task, replica))
}

/// The entries of one center's work list: `(job, task, replica, value)`.
pub fn work_list<T: DeserializeOwned>(
    kv: &(impl KvRead + ?Sized),
    list: WorkList,
    center: &str,
) -> Result<Vec<(String, u32, u32, T)>, StoreError> {
    let entries = keyed_values_under(kv, &list.prefix(center), replica_of)?;
    Ok(entries.into_iter().map(|((job, task, replica), value)| (job, task, replica, value)).collect())
}

pub fn stop_order_prefix(center: &str) -> Vec<u8> {
    format!("so/{center}/").into_bytes()
}

pub fn stop_order_key(center: &str, key: &jcs_api::model::ReplicaKey) -> Vec<u8> {
    format!("so/{center}/{}/{}/{}/{}", key.job_id, key.task, key.replica, key.attempt).into_bytes()
}

/// One center's stop orders.
pub fn stop_orders(
    kv: &(impl KvRead + ?Sized),
    center: &str,
) -> Result<Vec<(jcs_api::model::ReplicaKey, StopOrder)>, StoreError> {
    keyed_values_under(kv, &stop_order_prefix(center), |tail| {
        let (replica, attempt) = tail.rsplit_once('/')?;
        let (job_id, task, replica) = replica_of(replica)?;
        Some(jcs_api::model::ReplicaKey { job_id, task, replica, attempt: attempt.parse().ok()? })
    })
}

pub fn owner_epoch_key(center: &str) -> Vec<u8> {
    format!("oe/{center}").into_bytes()
}

/// Which node drives a center, and since which epoch. Every change of owner bumps the epoch,
/// so writes from a former owner (stamped with its older epoch) are refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CenterOwner {
    /// `None` until the leader first assigns the center.
    pub node: Option<u64>,
    pub epoch: u64,
}

/// A center's owner (unassigned, epoch 0, if none was ever assigned).
pub fn center_owner(kv: &(impl KvRead + ?Sized), center: &str) -> Result<CenterOwner, StoreError> {
    Ok(get_json(kv, &owner_epoch_key(center))?.unwrap_or_default())
}

/// Every assigned center's owner.
pub fn center_owners(
    kv: &(impl KvRead + ?Sized),
) -> Result<std::collections::BTreeMap<String, CenterOwner>, StoreError> {
    Ok(keyed_values_under(kv, OWNER_PREFIX, |center| Some(center.to_string()))?.into_iter().collect())
}

pub fn event_key(seq: u64) -> Vec<u8> {
    format!("ev/{seq:020}").into_bytes()
}

/// Fences placements: a batch must come from the current (or a newer) scheduling term and be
/// computed on the current placement version, else it was decided on a stale view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SchedulerFence {
    pub term: u64,
    pub version: u64,
}

pub fn queue_key(job_id: &str) -> Vec<u8> {
    format!("q/{job_id}").into_bytes()
}

pub fn held_queue_key(job_id: &str) -> Vec<u8> {
    format!("qh/{job_id}").into_bytes()
}

pub fn explain_key(job_id: &str) -> Vec<u8> {
    format!("e/{job_id}").into_bytes()
}

/// The scheduling fence (zero before the first placement).
pub fn sched_fence(kv: &(impl KvRead + ?Sized)) -> Result<SchedulerFence, StoreError> {
    Ok(get_json(kv, SCHED_FENCE_KEY)?.unwrap_or_default())
}

/// Every value under `prefix`, decoded, in key order.
pub fn values_under<T: DeserializeOwned>(kv: &(impl KvRead + ?Sized), prefix: &[u8]) -> Result<Vec<T>, StoreError> {
    Ok(keyed_values_under(kv, prefix, |_| Some(()))?.into_iter().map(|((), value)| value).collect())
}

/// Every entry under `prefix` whose key tail `key` parses, with its value decoded, in key
/// order; entries whose tail does not parse are skipped.
pub fn keyed_values_under<K, T: DeserializeOwned>(
    kv: &(impl KvRead + ?Sized),
    prefix: &[u8],
    key: impl Fn(&str) -> Option<K>,
) -> Result<Vec<(K, T)>, StoreError> {
    let mut out = Vec::new();
    let mut failure = None;
    kv.scan(prefix, &mut |k, v| {
        let Some(parsed) = std::str::from_utf8(&k[prefix.len()..]).ok().and_then(&key) else {
            return ControlFlow::Continue(());
        };
        match decode(k, v) {
            Ok(value) => {
                out.push((parsed, value));
                ControlFlow::Continue(())
            }
            Err(e) => {
                failure = Some(e);
                ControlFlow::Break(())
            }
        }
    })?;
    failure.map_or(Ok(out), Err)
}

/// The first `limit` queued job ids, in queue order, after job `after` when given: the held
/// part, then the rest from the floor up (so placed jobs' tombstones below it are never stepped
/// over).
pub fn queued_job_ids(
    kv: &(impl KvRead + ?Sized),
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let mut ids = Vec::new();
    let floor = kv.get(QUEUE_FLOOR_KEY)?;
    for (prefix, start) in
        [(QUEUE_HELD_PREFIX, after.map(held_queue_key)), (QUEUE_PREFIX, after.map(queue_key).max(floor))]
    {
        if ids.len() >= limit {
            break;
        }
        let mut visit = |k: &[u8], _: &[u8]| {
            ids.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
            if ids.len() >= limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        match start {
            Some(start) => kv.scan_after(prefix, &start, &mut visit)?,
            None => kv.scan(prefix, &mut visit)?,
        }
    }
    Ok(ids)
}

/// A generation counter (0 before the first bump).
pub fn generation(kv: &(impl KvRead + ?Sized), key: &[u8]) -> Result<u64, StoreError> {
    Ok(get_json(kv, key)?.unwrap_or(0))
}

/// The key prefix of a catalog kind.
pub fn prefix(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Center => "c/",
        ObjectKind::ResourceSpec => "s/",
        ObjectKind::Image => "i/",
        ObjectKind::Dataset => "d/",
        ObjectKind::Job => "j/",
    }
}

pub fn object_key(kind: ObjectKind, id: &str) -> Vec<u8> {
    format!("{}{id}", prefix(kind)).into_bytes()
}

pub fn metrics_key(center_id: &str) -> Vec<u8> {
    format!("m/{center_id}").into_bytes()
}

pub fn status_key(state: RunState, job_id: &str) -> Vec<u8> {
    format!("x/{}/{job_id}", state.as_str()).into_bytes()
}

pub fn status_prefix(state: RunState) -> Vec<u8> {
    format!("x/{}/", state.as_str()).into_bytes()
}

pub fn idempotency_key(key: &str) -> Vec<u8> {
    format!("k/{key}").into_bytes()
}

/// Job ids are zero-padded so that key order is submission order.
pub fn job_id(seq: u64) -> String {
    format!("job-{seq:012}")
}

/// Reads one catalog object or job.
pub fn get<T: DeserializeOwned>(
    kv: &(impl KvRead + ?Sized),
    kind: ObjectKind,
    id: &str,
) -> Result<Option<T>, StoreError> {
    get_json(kv, &object_key(kind, id))
}

/// Whether an object exists.
pub fn exists(kv: &(impl KvRead + ?Sized), kind: ObjectKind, id: &str) -> Result<bool, StoreError> {
    Ok(kv.get(&object_key(kind, id))?.is_some())
}

/// Every object of a kind, decoded (catalog kinds only: they are small).
pub fn all<T: DeserializeOwned>(kv: &(impl KvRead + ?Sized), kind: ObjectKind) -> Result<Vec<T>, StoreError> {
    values_under(kv, prefix(kind).as_bytes())
}

/// One page of a kind, in id order.
pub fn page<T: DeserializeOwned>(
    kv: &(impl KvRead + ?Sized),
    kind: ObjectKind,
    window: Window,
) -> Result<Page<T>, StoreError> {
    paged(kv, prefix(kind).as_bytes(), window, |k, v| decode(k, v).map(Some))
}

/// Pages over the entries under `prefix`; `select` decodes an entry or skips it (`None`).
fn paged<T>(
    kv: &(impl KvRead + ?Sized),
    prefix: &[u8],
    window: Window,
    mut select: impl FnMut(&[u8], &[u8]) -> Result<Option<T>, StoreError>,
) -> Result<Page<T>, StoreError> {
    let mut total = 0u64;
    let mut items = Vec::new();
    let mut failure = None;
    kv.scan(prefix, &mut |k, v| match select(k, v) {
        Ok(Some(item)) => {
            if total >= window.offset && items.len() < window.page_size as usize {
                items.push(item);
            }
            total += 1;
            ControlFlow::Continue(())
        }
        Ok(None) => ControlFlow::Continue(()),
        Err(e) => {
            failure = Some(e);
            ControlFlow::Break(())
        }
    })?;
    match failure {
        Some(e) => Err(e),
        None => Ok(Page::new(window, total, items)),
    }
}

/// Jobs in submission order, optionally of one status and one user.
pub fn jobs_page(
    kv: &(impl KvRead + ?Sized),
    status: Option<RunState>,
    user: Option<&str>,
    window: Window,
) -> Result<Page<Job>, StoreError> {
    let keep = |job: Job| -> Option<Job> { user.is_none_or(|u| job.user_name == u).then_some(job) };
    match status {
        None => paged(kv, b"j/", window, |k, v| Ok(keep(decode(k, v)?))),
        Some(state) => {
            let index = status_prefix(state);
            paged(kv, &index, window, |k, _| {
                let id = std::str::from_utf8(&k[index.len()..]).map_err(|e| StoreError::Corrupt {
                    key: String::from_utf8_lossy(k).into_owned(),
                    reason: e.to_string(),
                })?;
                let job: Job = get(kv, ObjectKind::Job, id)?.ok_or_else(|| StoreError::Corrupt {
                    key: String::from_utf8_lossy(k).into_owned(),
                    reason: "status index names a missing job".into(),
                })?;
                Ok(keep(job))
            })
        }
    }
}

/// Ids of the jobs in a status, in submission order (for `pending`: the queue).
pub fn job_ids_in(kv: &(impl KvRead + ?Sized), state: RunState) -> Result<Vec<String>, StoreError> {
    let index = status_prefix(state);
    let mut ids = Vec::new();
    kv.scan(&index, &mut |k, _| {
        ids.push(String::from_utf8_lossy(&k[index.len()..]).into_owned());
        ControlFlow::Continue(())
    })?;
    Ok(ids)
}

//! Centers behind one interface (standard figure 4). Each AI computing center speaks its own
//! native API — a process table, Slurm's slurmrestd, Kubernetes, a vendor platform; an
//! [`Adapter`] hides it behind the few operations jcs needs: what the center has (resources,
//! monitoring, images), submit a replica under an idempotency key, the status of what was
//! submitted, stop, logs, and storage for data migration.
//!
//! Adapters hold no replicated state: the node that owns a center drives its adapter and writes
//! what it learns through Raft. Every adapter passes the shared [`conformance`] suite.
//!
//! Idempotency is the adapter's first duty: [`Adapter::find`] must find a replica submitted
//! under a key by *any* earlier process (a node that crashed after submitting), so that a
//! dispatcher in doubt asks before it submits again — dispatch is at most once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use jcs_api::model::{CenterMetrics, FailureCategory, ReplicaKey};
use jcs_api::quantity::ResourceAmounts;
use serde::{Deserialize, Serialize};

mod config;
pub mod conformance;
pub mod local;
mod logfile;
mod pool;
mod registry;
pub mod sim;
pub mod slurm;

pub use registry::{Builder, Registry};
mod storage;

/// Why an adapter call failed. `Unavailable` is transient (retry later, count towards the
/// center's failed polls); the others are definite answers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdapterError {
    /// The center did not answer or answered with a transient error.
    #[error("center unavailable: {0}")]
    Unavailable(String),
    /// The center refused the request (bad spec, unknown image, quota): retrying will not help.
    #[error("rejected by the center: {0}")]
    Rejected(String),
    /// The native id is unknown to the center.
    #[error("no such native job: {0}")]
    NotFound(String),
    /// The adapter's configuration is wrong (in the center's `adapter.config`).
    #[error("adapter misconfigured: {0}")]
    Config(String),
    /// The adapter does not offer this operation (see [`Capabilities`]).
    #[error("not supported by the {0} adapter")]
    Unsupported(&'static str),
}

pub type Result<T, E = AdapterError> = std::result::Result<T, E>;

/// What an adapter can do beyond the required operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Capabilities {
    /// `read_log` works while the replica runs (live tails), not only after it ends.
    pub live_logs: bool,
    /// [`Adapter::storage`] returns a store.
    pub storage: bool,
    /// [`Adapter::images`] lists the center's images.
    pub images: bool,
    /// Replicas survive a restart of the jcs node (they run outside the node's process).
    pub survives_node_restart: bool,
}

/// The center's id for a submitted replica.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NativeId(pub String);

impl std::fmt::Display for NativeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything a center needs to start one replica (Table 9 plus the placement context).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaLaunch {
    /// The idempotency key: one native job per key, ever.
    pub key: ReplicaKey,
    /// Shell command (`sh -c`).
    pub command: String,
    /// The image's `reference` (or name when it has none); adapters without images ignore it.
    pub image: String,
    /// The spec's demand, per device kind (Table 2 units).
    pub demand: ResourceAmounts,
    /// Environment: `JCS_JOB_ID`, `JCS_TASK`, `JCS_REPLICA_INDEX`, `JCS_REPLICAS`, `JCS_CENTER`,
    /// `JCS_RENDEZVOUS` for distributed tasks, set by the dispatcher.
    pub env: BTreeMap<String, String>,
    /// Estimated run time (the job's `durationSecs`), for simulated centers.
    pub duration_hint: Option<Duration>,
}

/// A native job's state as the center reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NativeState {
    /// Accepted, waiting in the center's own queue.
    Queued,
    Running,
    Succeeded,
    Failed {
        exit_code: Option<i32>,
        category: FailureCategory,
        reason: String,
    },
    /// The center has no record of it (lost with a node, purged): a center fault.
    Missing,
}

impl NativeState {
    /// Succeeded or failed: the replica will not change any more.
    pub fn is_final(&self) -> bool {
        matches!(self, NativeState::Succeeded | NativeState::Failed { .. })
    }
}

/// A center's resources and monitoring (Tables 2 and 4) as one poll sees them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResourceReport {
    /// Table 4; `confirmed_replicas` lists the replicas (`jobId/task/replica`) whose usage the
    /// counters include, so that jcs releases their in-flight ledger entries.
    pub metrics: CenterMetrics,
    /// Table 2: the center's total capacity per device kind.
    pub capacity: ResourceAmounts,
}

/// An image the center holds (Table 5 fields the center knows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NativeImage {
    pub name: String,
    pub reference: String,
}

/// A piece of a replica's log.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogChunk {
    pub data: Vec<u8>,
    /// Where the next read starts.
    pub next_offset: u64,
    /// The replica has ended and `next_offset` is the end of its log: nothing more will come.
    pub complete: bool,
}

/// One center's native platform.
#[async_trait]
pub trait Adapter: Send + Sync {
    /// The adapter type (`local`, `sim`, `slurm`, …).
    fn kind(&self) -> &'static str;

    fn capabilities(&self) -> Capabilities;

    /// Current resources and monitoring.
    async fn resources(&self) -> Result<ResourceReport>;

    /// Images present at the center.
    async fn images(&self) -> Result<Vec<NativeImage>>;

    /// Starts a replica. Submitting a key that already exists returns the existing native id
    /// where the platform can tell; callers in doubt use [`Adapter::find`] first regardless.
    async fn submit(&self, launch: &ReplicaLaunch) -> Result<NativeId>;

    /// The native job submitted under `key`, by any process, if there is one.
    async fn find(&self, key: &ReplicaKey) -> Result<Option<NativeId>>;

    /// The states of native jobs, in the order asked.
    async fn status(&self, ids: &[NativeId]) -> Result<Vec<NativeState>>;

    /// Stops a native job: a polite signal, then force after `grace`. Stopping an ended or
    /// unknown job succeeds (stop is idempotent).
    async fn stop(&self, id: &NativeId, grace: Duration) -> Result<()>;

    /// Up to `max` bytes of the replica's combined stdout/stderr from `offset`.
    async fn read_log(&self, id: &NativeId, offset: u64, max: usize) -> Result<LogChunk>;

    /// The center's storage, for data migration; `None` when the adapter has none.
    fn storage(&self) -> Option<&dyn Storage> {
        None
    }

    /// Native ids whose state changed, announced by platforms that push events (`None`: the
    /// platform is only polled). The local center announces every exit of a replica it
    /// started. An announcement carries no state: the owner asks [`Adapter::status`] at once
    /// instead of at its next poll, so a lost or lagging announcement costs only latency.
    fn events(&self) -> Option<tokio::sync::broadcast::Receiver<NativeId>> {
        None
    }
}

/// A center's object storage, as the data-migration work uses it: paths are `/`-separated and
/// relative to the center's storage root.
#[async_trait]
pub trait Storage: Send + Sync {
    async fn put(&self, path: &str, data: &[u8]) -> Result<()>;
    /// Up to `max` bytes from `offset`.
    async fn get(&self, path: &str, offset: u64, max: usize) -> Result<Vec<u8>>;
    /// Paths under `prefix`, with sizes in bytes.
    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>>;
    async fn delete(&self, path: &str) -> Result<()>;
}

/// What adapters may use of the node they run in.
#[derive(Debug, Clone)]
pub struct AdapterContext {
    /// A directory owned by this center's adapter on this node (working dirs, logs, state).
    pub work_dir: PathBuf,
    /// The jcs cluster's id (replicated, made by its first leader). Every name an adapter
    /// gives the center — native job names, directories — carries it, and an adapter never
    /// adopts what another cluster left: two clusters pointed at one center (a cluster created
    /// afresh after an earlier one) both start with `job-000000000001`. Empty for a cluster
    /// that ran replicas before clusters had ids: its names stay as they were.
    pub cluster_id: String,
}

impl AdapterContext {
    pub fn new(work_dir: impl Into<PathBuf>, cluster_id: impl Into<String>) -> Self {
        AdapterContext { work_dir: work_dir.into(), cluster_id: cluster_id.into() }
    }

    /// `dir`'s part for this cluster: `dir/{cluster_id}`.
    pub fn scoped(&self, dir: &std::path::Path) -> PathBuf {
        dir.join(&self.cluster_id)
    }
}

//! The replicated command set: every change to jcs's state is one of these, committed through
//! Raft and applied by [`crate::apply`]. Commands carry everything apply needs (the proposer's
//! clock included), so applying the same log gives the same state on every node.

use std::sync::Arc;

use jcs_api::model::{
    Center, CenterMetrics, CreateTrainJob, Dataset, EventKind, Explain, Image, Job, ObjectKind, ReplicaKey,
    ReplicaReport, ResourceSpec,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Create refuses an existing id; Replace refuses a missing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteMode {
    Create,
    Replace,
}

/// One state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    PutCenter {
        center: Center,
        mode: WriteMode,
    },
    DeleteCenter {
        id: String,
    },
    PutSpec {
        spec: ResourceSpec,
        mode: WriteMode,
    },
    DeleteSpec {
        id: String,
    },
    PutImage {
        image: Image,
        mode: WriteMode,
    },
    DeleteImage {
        id: String,
    },
    PutDataset {
        dataset: Dataset,
        mode: WriteMode,
    },
    DeleteDataset {
        id: String,
    },
    /// A Table 4 monitoring report for a center.
    ReportMetrics {
        center_id: String,
        metrics: CenterMetrics,
    },
    /// A.1: queue a new job; a repeated `idempotency_key` returns the job it created.
    SubmitJob {
        request: CreateTrainJob,
        idempotency_key: Option<String>,
    },
    /// A.2: stop a job; stopping a finished job is a no-op.
    StopJob {
        job_id: String,
        reason: String,
    },
    /// One scheduling cycle's decisions, committed together.
    Place(Box<PlacementBatch>),
    /// A center's owner submitted a replica attempt and got the center's id for it.
    Dispatched {
        center_id: String,
        owner_epoch: u64,
        key: ReplicaKey,
        native_id: String,
    },
    /// A center's owner reports what changed for replicas on its center.
    ReportReplicas {
        center_id: String,
        owner_epoch: u64,
        reports: Vec<ReplicaReport>,
    },
    /// A center's owner carried out stop orders.
    StopsDone {
        center_id: String,
        owner_epoch: u64,
        keys: Vec<ReplicaKey>,
    },
    /// A center's owner marks it available or unavailable after its polls.
    SetCenterHealth {
        center_id: String,
        owner_epoch: u64,
        available: bool,
        reason: String,
    },
    /// Something worth an operator's attention happened at a center.
    RecordEvent {
        center_id: String,
        kind: EventKind,
        job_id: Option<String>,
        message: String,
    },
    /// The leader's center shards: which node drives each listed center. Fenced by term like
    /// placements; a center whose owner changes gets a new epoch.
    AssignOwners {
        term: u64,
        owners: std::collections::BTreeMap<String, u64>,
    },
    /// Names the cluster once, at its first leader: the id scopes every name jcs gives a center
    /// (idempotency keys, native job names, work directories), so that a cluster created
    /// afresh never takes another cluster's submissions for its own. The first name committed
    /// stays; later ones are no-ops.
    NameCluster {
        cluster_id: String,
    },
}

impl Command {
    /// Whether committing the command a second time leaves the state, and its answer, as one
    /// commit did: a keyed submission is recognised as a replay, an owner's report or a stop
    /// of what already changed is ignored, a placement batch is fenced. A forward whose leader
    /// vanished may have committed; only these are sent again.
    pub fn safe_to_repeat(&self) -> bool {
        match self {
            Command::SubmitJob { idempotency_key, .. } => idempotency_key.is_some(),
            Command::PutCenter { mode, .. }
            | Command::PutSpec { mode, .. }
            | Command::PutImage { mode, .. }
            | Command::PutDataset { mode, .. } => *mode == WriteMode::Replace,
            // A second delete answers "not found"; a second event is a second line.
            Command::DeleteCenter { .. }
            | Command::DeleteSpec { .. }
            | Command::DeleteImage { .. }
            | Command::DeleteDataset { .. }
            | Command::RecordEvent { .. } => false,
            Command::ReportMetrics { .. }
            | Command::StopJob { .. }
            | Command::Place(_)
            | Command::Dispatched { .. }
            | Command::ReportReplicas { .. }
            | Command::StopsDone { .. }
            | Command::SetCenterHealth { .. }
            | Command::AssignOwners { .. }
            | Command::NameCluster { .. } => true,
        }
    }

    /// The center and owner epoch of a write only a center's owner may make.
    pub fn owner_stamp(&self) -> Option<(&str, u64)> {
        match self {
            Command::Dispatched { center_id, owner_epoch, .. }
            | Command::ReportReplicas { center_id, owner_epoch, .. }
            | Command::StopsDone { center_id, owner_epoch, .. }
            | Command::SetCenterHealth { center_id, owner_epoch, .. } => Some((center_id, *owner_epoch)),
            _ => None,
        }
    }
}

/// The decisions of one scheduling cycle. Fenced: refused whole unless `term` is at least the
/// highest scheduling term seen and `snapshot_version` is the current placement version — a
/// deposed leader's batch, or one computed before another batch landed, changes nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacementBatch {
    /// The proposing leader's term.
    pub term: u64,
    /// The placement version of the state the batch was computed on.
    pub snapshot_version: u64,
    /// In-flight ledger entries older than this (ms) are released while applying.
    pub ledger_ttl_ms: i64,
    pub decisions: Vec<PlacementDecision>,
}

/// One job's decision: the centers of each task placed now, and the explain record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacementDecision {
    pub job_id: String,
    /// Per task: one center per replica if placed by this decision; `None` when the task stays
    /// unplaced (or was placed by an earlier cycle).
    pub placements: Vec<Option<Vec<String>>>,
    /// The explain record's one-line `reason`, which apply stores on the job. Absent from
    /// entries written before it was carried apart; apply reads it from the record then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    pub explain: ExplainJson,
}

impl PlacementDecision {
    /// Serializes `explain` once, here: the log entry and the stored record are its bytes.
    pub fn new(job_id: String, placements: Vec<Option<Vec<String>>>, explain: &Explain) -> Self {
        PlacementDecision {
            job_id,
            placements,
            reason: Some(explain.reason.clone()),
            explain: ExplainJson::of(explain),
        }
    }

    /// The explain record's one-line reason.
    pub fn reason(&self) -> Result<String, serde_json::Error> {
        #[derive(Deserialize)]
        struct ReasonOnly {
            reason: String,
        }
        match &self.reason {
            Some(reason) => Ok(reason.clone()),
            None => serde_json::from_str::<ReasonOnly>(self.explain.0.get()).map(|r| r.reason),
        }
    }
}

/// An [`Explain`] record as JSON text. The scheduler serializes it once; appending the entry
/// to the log, replicating it and applying it copy the text and never encode it again (a node
/// that decodes the entry only checks where the text ends; it builds no `Explain`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExplainJson(Box<serde_json::value::RawValue>);

impl ExplainJson {
    pub fn of(explain: &Explain) -> Self {
        ExplainJson(serde_json::value::to_raw_value(explain).expect("explain records serialize"))
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.get().as_bytes()
    }
}

impl PartialEq for ExplainJson {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

/// The Raft log's application payload: a batch of commands stamped with the proposer's clock.
/// Batching many client requests into one entry is jcs's group commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// Unix ms at the proposer; used for every timestamp the commands set.
    pub at_ms: i64,
    /// Shared, not copied, when openraft clones the entry (the log keeps the newest entries
    /// decoded and hands out clones).
    pub commands: Arc<[Command]>,
}

impl std::fmt::Display for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proposal({} commands @{})", self.commands.len(), self.at_ms)
    }
}

/// What a successful command produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Center(Center),
    Spec(ResourceSpec),
    Image(Image),
    Dataset(Dataset),
    Metrics(CenterMetrics),
    /// The job as stored; `replayed` when an idempotent retry returned an existing job.
    Job {
        job: Box<Job>,
        replayed: bool,
    },
    Deleted,
    /// A placement batch was applied: jobs whose decision took effect, and those skipped
    /// because they changed since the snapshot (stopped, already placed, center gone).
    Placed {
        applied: Vec<String>,
        skipped: Vec<String>,
    },
    /// A dispatch was recorded; `accepted: false` when the replica was no longer wanted and
    /// a stop order was written for the native job instead.
    Dispatch {
        accepted: bool,
    },
    /// An owner's report or an event was recorded.
    Recorded,
    /// Owners assigned: the centers whose owner changed, with their new epoch.
    OwnersAssigned {
        changed: std::collections::BTreeMap<String, u64>,
    },
    /// The cluster's id as stored (the first one named).
    ClusterNamed {
        cluster_id: String,
    },
}

/// Why a command was refused. Refusals are ordinary results, replicated like successes:
/// every node refuses the same command the same way.
#[derive(Debug, Clone, PartialEq, Error, Serialize, Deserialize)]
pub enum Refusal {
    /// A field rule failed; the message names the field.
    #[error("{0}")]
    Invalid(String),
    #[error("{kind} '{id}' not found")]
    NotFound { kind: ObjectKind, id: String },
    #[error("{kind} '{id}' already exists")]
    AlreadyExists { kind: ObjectKind, id: String },
    #[error("{field}: {kind} '{id}' does not exist")]
    UnknownReference { field: String, kind: ObjectKind, id: String },
    #[error("{kind} '{id}' is still referenced by {by_kind} '{by_id}'")]
    StillReferenced { kind: ObjectKind, id: String, by_kind: ObjectKind, by_id: String },
    #[error("Idempotency-Key '{key}' was used for a different request (job '{job_id}')")]
    IdempotencyKeyReused { key: String, job_id: String },
    /// A placement batch from an old term or computed on an old placement version.
    #[error("stale placement: {0}")]
    StalePlacement(String),
    /// An owner assignment from a deposed leader's term.
    #[error("stale owner assignment: term {term} is older than {current}")]
    StaleAssignment { term: u64, current: u64 },
    /// A center-owner write from an owner whose epoch has passed.
    #[error("center '{center_id}': owner epoch {epoch} is older than the current {current}")]
    StaleOwner { center_id: String, epoch: u64, current: u64 },
}

impl From<jcs_api::ApiError> for Refusal {
    fn from(err: jcs_api::ApiError) -> Self {
        Refusal::Invalid(err.message)
    }
}

/// The result of one command.
pub type CommandResult = Result<Outcome, Refusal>;

/// The Raft log's application response: one result per command of the proposal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProposalResult {
    pub results: Vec<CommandResult>,
}

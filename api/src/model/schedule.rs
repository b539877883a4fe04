//! The scheduling contract: the A.1 extension fields that steer placement (policy mode, weights,
//! security grade, input data, duration, QoS target, the user's region), and the explain record
//! that says why a job went where it went — or why it is still pending.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::validate::{self, MAX_ID_LEN};

/// The policy modes of standard §5 f. A mode is a named weight profile plus its own semantics
/// (see `jcs_raft::schedule::policy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    /// Every strategy at its default weight.
    #[default]
    Balanced,
    /// 1: the user names the center of every task; infeasible means pending, never elsewhere.
    Manual,
    /// 2: strict queue order: no job is placed while an earlier one is blocked.
    Fcfs,
    /// 3: least loaded, most free capacity, fairest spread.
    Load,
    /// 4: least energy by formula (1).
    Energy,
    /// 5: cheapest spec price.
    Price,
    /// 6: best network path (bandwidth, latency, jitter, loss) and nearest to the data.
    Network,
    /// 7: small data moves to the best center; large or private data keeps the job at the data.
    Data,
    /// 8: the job's QoS target is a hard constraint, then network and speed together.
    Qos,
}

impl PolicyMode {
    pub const ALL: [PolicyMode; 9] = [
        PolicyMode::Balanced,
        PolicyMode::Manual,
        PolicyMode::Fcfs,
        PolicyMode::Load,
        PolicyMode::Energy,
        PolicyMode::Price,
        PolicyMode::Network,
        PolicyMode::Data,
        PolicyMode::Qos,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::Balanced => "balanced",
            PolicyMode::Manual => "manual",
            PolicyMode::Fcfs => "fcfs",
            PolicyMode::Load => "load",
            PolicyMode::Energy => "energy",
            PolicyMode::Price => "price",
            PolicyMode::Network => "network",
            PolicyMode::Data => "data",
            PolicyMode::Qos => "qos",
        }
    }

    pub fn parse(text: &str) -> Option<PolicyMode> {
        PolicyMode::ALL.into_iter().find(|m| m.as_str() == text)
    }
}

/// A job's quality-of-service target (policy mode 8). Each bound is a hard constraint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QosTarget {
    /// Highest acceptable network latency to the center, in ms: from the job's `userRegion`
    /// (configured link plus the center's own latency) when it names one.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1000000)]
    pub max_latency_ms: Option<f64>,
    /// The job must be able to finish (data copy + run at the center's speed) within this many
    /// seconds of placement (at most 366 days).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 31622400)]
    pub deadline_secs: Option<u64>,
}

/// Everything on a job, beyond its tasks, that steers its placement. All optional: a body with
/// only the standard's fields is scheduled with the operator's default policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingOptions {
    /// The policy mode; the operator's default when absent.
    #[serde(default)]
    pub policy: Option<PolicyMode>,
    /// Per-strategy weight overrides (`algorithmId` → weight) over the mode's profile.
    #[serde(default)]
    #[schema(schema_with = super::patterns::weights_schema)]
    pub weights: BTreeMap<String, u32>,
    /// Lowest acceptable center security grade (0..=10).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 10)]
    pub security_grade: Option<i32>,
    /// The input dataset, `data_name@data_version`.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}@[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}$")]
    pub dataset_id: Option<String>,
    /// Estimated run time in seconds (energy and deadline estimates; 3600 when absent).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 31622400)]
    pub duration_secs: Option<u64>,
    #[serde(default)]
    pub qos: Option<QosTarget>,
    /// The region the job's user is in: network paths and the QoS latency are judged from it
    /// (through the operator's configured links between regions); absent, from each center's
    /// own uplink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        max_length = 63,
        pattern = "^[\\t\\n \\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*\
        [^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]\
        [^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$"
    )]
    pub user_region: Option<String>,
}

/// Largest accepted weight of one strategy.
pub const MAX_WEIGHT: u32 = 1000;
/// Longest accepted duration estimate: one year.
pub const MAX_DURATION_SECS: u64 = 366 * 24 * 3600;

impl SchedulingOptions {
    /// The field rules that need no catalog (strategy ids are checked by the state machine).
    pub fn validate(&self) -> Result<(), ApiError> {
        for (id, weight) in &self.weights {
            validate::id("weights", id, MAX_ID_LEN)?;
            validate::range(&format!("weights.{id}"), (*weight).into(), 0, MAX_WEIGHT.into())?;
        }
        if let Some(grade) = self.security_grade {
            validate::range("securityGrade", grade.into(), 0, 10)?;
        }
        if let Some(dataset) = &self.dataset_id {
            validate::text("datasetId", dataset, 2 * MAX_ID_LEN + 1)?;
            if dataset.split_once('@').is_none_or(|(n, v)| n.is_empty() || v.is_empty()) {
                return Err(ApiError::invalid("datasetId", "must be data_name@data_version"));
            }
        }
        if let Some(region) = &self.user_region {
            validate::text("userRegion", region, MAX_ID_LEN)?;
        }
        if let Some(secs) = self.duration_secs {
            validate::range("durationSecs", secs.min(i64::MAX as u64) as i64, 1, MAX_DURATION_SECS as i64)?;
        }
        if let Some(qos) = &self.qos {
            if let Some(latency) = qos.max_latency_ms {
                if !latency.is_finite() || !(0.0..=1e6).contains(&latency) {
                    return Err(ApiError::invalid("qos.maxLatencyMs", format!("is {latency}, must be 0..=1000000")));
                }
            }
            if let Some(deadline) = qos.deadline_secs {
                let deadline = deadline.min(i64::MAX as u64) as i64;
                validate::range("qos.deadlineSecs", deadline, 1, MAX_DURATION_SECS as i64)?;
            }
            if self.policy == Some(PolicyMode::Qos) && qos.max_latency_ms.is_none() && qos.deadline_secs.is_none() {
                return Err(ApiError::invalid("qos", "policy qos needs maxLatencyMs or deadlineSecs"));
            }
        } else if self.policy == Some(PolicyMode::Qos) {
            return Err(ApiError::invalid("qos", "is required by policy qos"));
        }
        Ok(())
    }
}

/// Why a filter rejected a center for a replica. Every rejection carries one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RejectCode {
    /// The center names no adapter: nothing can run there (it is known only through the
    /// monitoring written to the API).
    NoAdapter,
    /// The spec's `computing_center_list` does not name the center.
    SpecNotOffered,
    /// The center's status is unavailable.
    CenterUnavailable,
    /// The center has never reported monitoring data.
    MonitoringMissing,
    /// The center's last report is older than the staleness bound.
    MonitoringStale,
    /// Free capacity (less in-flight placements) is short of one replica's demand.
    InsufficientCapacity,
    /// The center's totals would hold the replica, but none of its nodes alone can.
    NoNodeFits,
    /// No image of that name fitting the spec is registered at the center.
    ImageNotAtCenter,
    /// The center's security grade is below the job's.
    SecurityGradeTooLow,
    /// The task is pinned to other centers.
    NotPinned,
    /// The job's data is private and held elsewhere.
    PrivateDataElsewhere,
    /// The job's data is too large to move and held elsewhere (policy data).
    DataTooLargeToMove,
    /// The center's latency exceeds the QoS bound.
    QosLatency,
    /// The job could not finish at the center before its QoS deadline.
    QosDeadline,
}

impl RejectCode {
    pub const ALL: [RejectCode; 14] = [
        RejectCode::NoAdapter,
        RejectCode::SpecNotOffered,
        RejectCode::CenterUnavailable,
        RejectCode::MonitoringMissing,
        RejectCode::MonitoringStale,
        RejectCode::InsufficientCapacity,
        RejectCode::NoNodeFits,
        RejectCode::ImageNotAtCenter,
        RejectCode::SecurityGradeTooLow,
        RejectCode::NotPinned,
        RejectCode::PrivateDataElsewhere,
        RejectCode::DataTooLargeToMove,
        RejectCode::QosLatency,
        RejectCode::QosDeadline,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::NoAdapter => "NO_ADAPTER",
            RejectCode::SpecNotOffered => "SPEC_NOT_OFFERED",
            RejectCode::CenterUnavailable => "CENTER_UNAVAILABLE",
            RejectCode::MonitoringMissing => "MONITORING_MISSING",
            RejectCode::MonitoringStale => "MONITORING_STALE",
            RejectCode::InsufficientCapacity => "INSUFFICIENT_CAPACITY",
            RejectCode::NoNodeFits => "NO_NODE_FITS",
            RejectCode::ImageNotAtCenter => "IMAGE_NOT_AT_CENTER",
            RejectCode::SecurityGradeTooLow => "SECURITY_GRADE_TOO_LOW",
            RejectCode::NotPinned => "NOT_PINNED",
            RejectCode::PrivateDataElsewhere => "PRIVATE_DATA_ELSEWHERE",
            RejectCode::DataTooLargeToMove => "DATA_TOO_LARGE_TO_MOVE",
            RejectCode::QosLatency => "QOS_LATENCY",
            RejectCode::QosDeadline => "QOS_DEADLINE",
        }
    }
}

/// One center rejected for one replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    pub center_id: String,
    pub code: RejectCode,
    /// The numbers behind the code, e.g. `gpu: needs 1, free 0 (in flight 2)`.
    pub detail: String,
}

/// The best-scoring feasible centers for one replica, as a table: a column per strategy in
/// force, a row per center. (A table, not a list of strategy objects per center: the record is
/// replicated for every decision, and the names and weights repeated in every row made it
/// five times larger.)
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScoreTable {
    /// The strategies scored (`algorithmId`), in column order.
    pub algorithms: Vec<String>,
    /// Each column's weight.
    pub weights: Vec<u32>,
    /// The best-scoring feasible centers, best first (at most [`EXPLAIN_LIMIT`]).
    pub centers: Vec<CenterScore>,
}

/// One feasible center's scores for one replica: per column of its [`ScoreTable`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CenterScore {
    pub center_id: String,
    /// The raw factor in its own unit (tasks, joules, price …); null when it cannot be judged.
    pub raw: Vec<Option<f64>>,
    /// 0..=100, the best candidate 100.
    pub normalized: Vec<u32>,
    /// `normalized × weight`: the strategy's share of the weighted sum before it is divided by
    /// the total weight.
    pub weighted: Vec<u64>,
    /// The evaluation model's total, 0..=100.
    pub total: u32,
}

impl CenterScore {
    /// A center's row: `(raw, normalized)` per column, weighted by `weights`.
    pub fn new(
        center_id: &str,
        total: u32,
        columns: impl IntoIterator<Item = (Option<f64>, u32)>,
        weights: &[u32],
    ) -> Self {
        let (raw, normalized): (Vec<_>, Vec<_>) = columns.into_iter().unzip();
        let weighted = normalized.iter().zip(weights).map(|(n, w)| u64::from(*n) * u64::from(*w)).collect();
        CenterScore { center_id: center_id.to_string(), raw, normalized, weighted, total }
    }
}

/// How one replica was decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaExplain {
    pub replica: u32,
    /// The chosen center; absent when no center passed the filters.
    pub winner: Option<String>,
    /// Rejections by code over every center considered.
    pub rejected_count: BTreeMap<String, u32>,
    /// The first rejections (at most [`EXPLAIN_LIMIT`] per replica).
    pub rejections: Vec<Rejection>,
    /// The best-scoring feasible centers with each strategy's scores.
    pub scores: ScoreTable,
    /// How many centers passed the filters.
    pub feasible: u32,
}

/// How many rejections and scored centers an explain record keeps per replica, so that a
/// record stays small with a thousand centers.
pub const EXPLAIN_LIMIT: usize = 8;

/// The data-migration plan of §6.3.2: the job's data must be copied to the chosen center.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationPlan {
    pub dataset_id: String,
    pub to_center: String,
    /// Centers holding a readable copy, best source first.
    pub sources: Vec<String>,
    pub size_mb: i64,
}

/// How one task was decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskExplain {
    pub name: String,
    /// Whether the task is placed together with the job's other gang tasks.
    pub gang: bool,
    /// One center per replica when placed; empty otherwise.
    #[serde(rename = "centerIDs")]
    pub center_ids: Vec<String>,
    pub replicas: Vec<ReplicaExplain>,
    #[serde(default)]
    pub migrations: Vec<MigrationPlan>,
}

/// Whether a decision placed the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecisionOutcome {
    Placed,
    /// Some tasks placed (tasks that opted out of gang placement), others still pending.
    PartlyPlaced,
    Pending,
}

/// A scheduling decision, stored (replicated) with the job: `GET /openapi/v1/trainjob/{id}/explain`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Explain {
    pub job_id: String,
    /// Unix ms of the cycle's snapshot.
    pub at: i64,
    /// The leader term that decided.
    pub term: u64,
    /// The placement version of the snapshot the decision was computed on.
    pub snapshot_version: u64,
    pub policy: PolicyMode,
    /// The weights in force (`algorithmId` → weight).
    pub weights: BTreeMap<String, u32>,
    /// The job's `userRegion`: where network paths and QoS latency were judged from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_region: Option<String>,
    pub outcome: DecisionOutcome,
    /// One line: why pending, or where placed.
    pub reason: String,
    pub tasks: Vec<TaskExplain>,
}

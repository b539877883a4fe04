//! Jobs and tasks (Tables 7–9) and the Appendix A.1–A.4 bodies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::lifecycle::{Replica, ReplicaKey, ReplicaPhase, RetryPolicy, StatusPolicy};
use super::schedule::{PolicyMode, QosTarget, SchedulingOptions};
use super::ObjectKind;
use crate::error::ApiError;
use crate::validate::{self, MAX_A1_FIELD_LEN, MAX_COMMAND_LEN, MAX_DESC_LEN, MAX_ID_LEN, MAX_REPLICAS, MAX_TASKS};

/// Job and replica states as Appendix A.3 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Pending,
    Running,
    Completed,
    Failed,
}

impl RunState {
    pub const ALL: [RunState; 4] = [RunState::Pending, RunState::Running, RunState::Completed, RunState::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Running => "running",
            RunState::Completed => "completed",
            RunState::Failed => "failed",
        }
    }

    /// Completed and failed jobs never change again.
    pub fn is_final(self) -> bool {
        matches!(self, RunState::Completed | RunState::Failed)
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// A.1 request body: create a training job. After the standard's `name` and `tasks` come
/// jcs's optional extension fields; a body with only the standard's fields is complete. The
/// scheduling fields repeat [`SchedulingOptions`] rather than flattening it, because serde
/// cannot combine `flatten` with `deny_unknown_fields`, and a misspelt field must be an error.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTrainJob {
    /// Job name, at most 32 characters.
    #[schema(
        max_length = 32,
        pattern = "^[\\t\\n \\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*\
        [^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]\
        [^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: String,
    /// 1 to 64 tasks, their names unique.
    #[schema(min_items = 1, max_items = 64)]
    pub tasks: Vec<CreateTask>,
    /// Extension: the submitting user (Table 7 `user_name`), an id; `default` when absent.
    #[serde(default)]
    #[schema(max_length = 63, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$")]
    pub user_name: Option<String>,
    /// Extension: Table 7 `desc`, at most 127 characters.
    #[serde(default)]
    #[schema(max_length = 127, pattern = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$")]
    pub desc: Option<String>,
    /// Extension: the policy mode (§5 f); the operator's default when absent.
    #[serde(default)]
    pub policy: Option<PolicyMode>,
    /// Extension: per-strategy weight overrides (`algorithmId` → weight).
    #[serde(default)]
    #[schema(schema_with = super::patterns::weights_schema)]
    pub weights: BTreeMap<String, u32>,
    /// Extension: lowest acceptable center security grade (0..=10).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 10)]
    pub security_grade: Option<i32>,
    /// Extension: the input dataset, `data_name@data_version`.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}@[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}$")]
    pub dataset_id: Option<String>,
    /// Extension: estimated run time, seconds (at most 366 days).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 31622400)]
    pub duration_secs: Option<u64>,
    /// Extension: QoS target (policy `qos`).
    #[serde(default)]
    pub qos: Option<QosTarget>,
    /// Extension: the region the job's user is in (a center's `region`, at most 63 characters).
    /// Policies `network` and `qos` then judge the path from that region to each center.
    #[serde(default)]
    #[schema(
        max_length = 63,
        pattern = "^[\\t\\n \\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*\
        [^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]\
        [^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$"
    )]
    pub user_region: Option<String>,
    /// Extension: how replica outcomes roll up to the job's status (§6.4 a–d).
    #[serde(default)]
    pub status_policy: Option<StatusPolicy>,
    /// Extension: retries after a failed replica (§6.4 retry policy).
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
}

/// A.1 task (Table 8 plus `replicaNumber`), with jcs's placement extensions.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTask {
    /// At most 32 characters, unique in the job.
    #[schema(
        max_length = 32,
        pattern = "^[\\t\\n \\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*\
        [^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]\
        [^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: String,
    /// At most 16384 characters.
    #[schema(
        max_length = 16384,
        pattern = "^[\\t\\n \\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*\
        [^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]\
        [^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$"
    )]
    pub command: String,
    #[schema(max_length = 63, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$")]
    pub image_id: String,
    #[schema(max_length = 63, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$")]
    pub resource_spec_id: String,
    #[schema(minimum = 1, maximum = 1024)]
    pub replica_number: i64,
    /// Extension: pin the task — one center for every replica, or one per replica. This is how
    /// a plan from `POST /openapi/v1/trainjob/plan` is confirmed.
    #[serde(default, rename = "centerIDs")]
    #[schema(max_items = 1024, max_length = 63, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$")]
    pub center_ids: Vec<String>,
    /// Extension: `false` lets this task be placed apart from the job's other tasks (default
    /// `true`: all gang tasks of a job are placed together or none is).
    #[serde(default)]
    pub gang: Option<bool>,
}

/// The user a job belongs to when the request names none.
pub const DEFAULT_USER: &str = "default";

impl CreateTrainJob {
    /// The scheduling extension fields as one value.
    pub fn scheduling_options(&self) -> SchedulingOptions {
        SchedulingOptions {
            policy: self.policy,
            weights: self.weights.clone(),
            security_grade: self.security_grade,
            dataset_id: self.dataset_id.clone(),
            duration_secs: self.duration_secs,
            qos: self.qos.clone(),
            user_region: self.user_region.clone(),
        }
    }

    /// The replicas of every task together.
    pub fn replica_total(&self) -> i64 {
        self.tasks.iter().map(|t| t.replica_number.max(0)).sum()
    }

    /// Checks every field rule, and that the job has at most `max_replicas` replicas in all
    /// (the node's `max_job_replicas`); the error names the first offending field.
    pub fn validate_within(&self, max_replicas: u32) -> Result<(), ApiError> {
        self.validate()?;
        let total = self.replica_total();
        if total > i64::from(max_replicas) {
            let why = format!("ask for {total} replicas in all, at most {max_replicas} per job allowed");
            return Err(ApiError::invalid("tasks[].replicaNumber", why));
        }
        Ok(())
    }

    /// Checks every field rule; the error names the first offending field.
    pub fn validate(&self) -> Result<(), ApiError> {
        validate::text("name", &self.name, MAX_A1_FIELD_LEN)?;
        if let Some(user) = &self.user_name {
            validate::id("userName", user, MAX_ID_LEN)?;
        }
        if let Some(desc) = &self.desc {
            validate::optional_text("desc", desc, MAX_DESC_LEN)?;
        }
        if self.tasks.is_empty() {
            return Err(ApiError::invalid("tasks", "must contain at least one task"));
        }
        if self.tasks.len() > MAX_TASKS {
            return Err(ApiError::invalid(
                "tasks",
                format!("has {} tasks, at most {MAX_TASKS} allowed", self.tasks.len()),
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, task) in self.tasks.iter().enumerate() {
            let field = |name: &str| format!("tasks[{i}].{name}");
            validate::text(&field("name"), &task.name, MAX_A1_FIELD_LEN)?;
            if !names.insert(task.name.as_str()) {
                return Err(ApiError::invalid(&field("name"), format!("'{}' is used by another task", task.name)));
            }
            validate::text(&field("command"), &task.command, MAX_COMMAND_LEN)?;
            // The catalog's id limit, not A.1's 32: an image or spec the catalog holds can be used.
            validate::id(&field("imageId"), &task.image_id, MAX_ID_LEN)?;
            validate::id(&field("resourceSpecId"), &task.resource_spec_id, MAX_ID_LEN)?;
            validate::range(&field("replicaNumber"), task.replica_number, 1, MAX_REPLICAS)?;
            let pins = task.center_ids.len();
            if pins > 1 && pins as i64 != task.replica_number {
                let why = format!("has {pins} centers; give one for all replicas or one per replica");
                return Err(ApiError::invalid(&field("centerIDs"), why));
            }
            for center in &task.center_ids {
                validate::id(&field("centerIDs"), center, MAX_ID_LEN)?;
            }
        }
        if let Some(retry) = &self.retry {
            retry.validate()?;
        }
        let options = self.scheduling_options();
        options.validate()?;
        if options.policy == Some(PolicyMode::Manual) {
            if let Some(i) = self.tasks.iter().position(|t| t.center_ids.is_empty()) {
                return Err(ApiError::invalid(&format!("tasks[{i}].centerIDs"), "is required by policy manual"));
            }
        }
        Ok(())
    }
}

/// A task as stored: the request's fields plus where and how its replicas run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Task {
    pub name: String,
    pub command: String,
    pub image_id: String,
    pub resource_spec_id: String,
    pub replica_number: u32,
    /// Center of each replica; empty while the task is unplaced. After a center fault took
    /// some replicas off, theirs are empty strings until the scheduler places them again; the
    /// others keep their centers (a reschedule never restarts a replica it did not lose).
    pub center_ids: Vec<String>,
    /// Each replica's life on its center.
    pub replicas: Vec<Replica>,
    /// Centers the user pinned the task to (one for all replicas, or one per replica).
    #[serde(default)]
    pub pin: Vec<String>,
    /// Placed together with the job's other gang tasks.
    #[serde(default = "yes")]
    pub gang: bool,
}

fn yes() -> bool {
    true
}

impl Task {
    /// The center pinned for `replica`, if the task is pinned.
    pub fn pinned_center(&self, replica: usize) -> Option<&str> {
        match self.pin.len() {
            0 => None,
            1 => Some(&self.pin[0]),
            _ => self.pin.get(replica).map(String::as_str),
        }
    }

    /// No replica waits for a center: each has one, or ended without (a rescheduled replica
    /// failed by its task before it was placed again).
    pub fn is_placed(&self) -> bool {
        !self.center_ids.is_empty() && (0..self.replicas.len()).all(|r| !self.placing(r))
    }

    /// Whether `replica` waits for the scheduler to give it a center.
    pub fn placing(&self, replica: usize) -> bool {
        self.kept_center(replica).is_none() && self.replicas.get(replica).is_some_and(|r| !r.phase.is_final())
    }

    /// The center `replica` is on, if it has one (a rescheduled replica has none until it is
    /// placed again).
    pub fn kept_center(&self, replica: usize) -> Option<&str> {
        self.center_ids.get(replica).map(String::as_str).filter(|c| !c.is_empty())
    }

    /// A.3's per-replica status.
    pub fn replica_status(&self) -> Vec<RunState> {
        self.replicas.iter().map(|r| r.phase.run_state()).collect()
    }
}

/// A job as stored in the replicated state (Table 7).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Job {
    pub id: String,
    pub name: String,
    pub user_name: String,
    pub desc: String,
    pub created_user: String,
    pub tasks: Vec<Task>,
    pub status: RunState,
    /// Why the job is in its status (e.g. `stopped by user`); empty when there is nothing to say.
    pub status_reason: String,
    pub idempotency_key: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// What steers the job's placement.
    #[serde(default)]
    pub options: SchedulingOptions,
    /// Unix ms when the last task was placed; `None` while the job waits in the queue.
    #[serde(default)]
    pub placed_at: Option<i64>,
    #[serde(default)]
    pub status_policy: StatusPolicy,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Unix ms when the last replica was submitted to its center (§6.7's `ts`); `None` until
    /// then, and again while a rescheduled task waits.
    #[serde(default)]
    pub dispatched_at: Option<i64>,
}

impl Job {
    /// Whether every task has its centers.
    pub fn is_placed(&self) -> bool {
        self.tasks.iter().all(Task::is_placed)
    }

    /// Builds a pending job from a validated request.
    pub fn from_request(id: String, req: &CreateTrainJob, idempotency_key: Option<String>, now_ms: i64) -> Job {
        let user = req.user_name.clone().unwrap_or_else(|| DEFAULT_USER.to_string());
        Job {
            id,
            name: req.name.clone(),
            user_name: user.clone(),
            desc: req.desc.clone().unwrap_or_default(),
            created_user: user,
            tasks: req
                .tasks
                .iter()
                .map(|t| Task {
                    name: t.name.clone(),
                    command: t.command.clone(),
                    image_id: t.image_id.clone(),
                    resource_spec_id: t.resource_spec_id.clone(),
                    replica_number: t.replica_number as u32,
                    center_ids: Vec::new(),
                    replicas: vec![Replica::default(); t.replica_number as usize],
                    pin: t.center_ids.clone(),
                    gang: t.gang.unwrap_or(true),
                })
                .collect(),
            status: RunState::Pending,
            status_reason: String::new(),
            idempotency_key,
            created_at: now_ms,
            updated_at: now_ms,
            options: req.scheduling_options(),
            placed_at: None,
            status_policy: req.status_policy.unwrap_or_default(),
            retry: req.retry.clone().unwrap_or_default(),
            dispatched_at: None,
        }
    }

    /// Whether `req` asks for exactly this job (an idempotent retry).
    pub fn matches_request(&self, req: &CreateTrainJob) -> bool {
        self.name == req.name
            && self.user_name == req.user_name.as_deref().unwrap_or(DEFAULT_USER)
            && self.desc == req.desc.as_deref().unwrap_or_default()
            && self.options == req.scheduling_options()
            && self.status_policy == req.status_policy.unwrap_or_default()
            && self.retry == req.retry.clone().unwrap_or_default()
            && self.tasks.len() == req.tasks.len()
            && self.tasks.iter().zip(&req.tasks).all(|(t, r)| {
                t.name == r.name
                    && t.command == r.command
                    && t.image_id == r.image_id
                    && t.resource_spec_id == r.resource_spec_id
                    && i64::from(t.replica_number) == r.replica_number
                    && t.pin == r.center_ids
                    && t.gang == r.gang.unwrap_or(true)
            })
    }

    /// The catalog objects this job's tasks point at.
    pub fn references(&self) -> Vec<(ObjectKind, String)> {
        let mut refs: Vec<(ObjectKind, String)> = self
            .tasks
            .iter()
            .flat_map(|t| {
                let pins = t.pin.iter().map(|c| (ObjectKind::Center, c.clone()));
                [(ObjectKind::Image, t.image_id.clone()), (ObjectKind::ResourceSpec, t.resource_spec_id.clone())]
                    .into_iter()
                    .chain(pins)
            })
            .collect();
        refs.extend(self.options.dataset_id.iter().map(|d| (ObjectKind::Dataset, d.clone())));
        refs
    }
}

/// A.1 `taskInfos` item.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskPlacement {
    pub name: String,
    #[serde(rename = "centerIDs")]
    pub center_ids: Vec<String>,
}

/// A.1 response data.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CreateTrainJobResponse {
    pub job_id: String,
    pub task_infos: Vec<TaskPlacement>,
}

impl From<&Job> for CreateTrainJobResponse {
    fn from(job: &Job) -> Self {
        CreateTrainJobResponse {
            job_id: job.id.clone(),
            task_infos: job
                .tasks
                .iter()
                .map(|t| TaskPlacement { name: t.name.clone(), center_ids: t.center_ids.clone() })
                .collect(),
        }
    }
}

/// A.3 `taskInfos` item.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskInfo {
    pub name: String,
    pub command: String,
    pub image_id: String,
    pub resource_spec_id: String,
    pub replica_number: u32,
    #[serde(rename = "centerIDs")]
    pub center_ids: Vec<String>,
    pub replica_status: Vec<RunState>,
    /// Extension: each replica's internal phase, attempts and last failure or stop reason.
    #[serde(default)]
    pub replicas: Vec<ReplicaInfo>,
}

/// Extension of A.3: one replica in detail — Table 9's dispatched-task record (`name`,
/// `imageId`, `resourceSpecId`; the command is the task's) and the replica's life on its center.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaInfo {
    /// The name the replica's current attempt carries on its center (Table 9 `name`):
    /// `{jobId}.t{task}.r{replica}.a{attempt}`. (Defaults: a client may read a node from
    /// before these fields.)
    #[serde(default)]
    pub name: String,
    /// Table 9 `image_id`.
    #[serde(default)]
    pub image_id: String,
    /// Table 9 `resourcespec_id`.
    #[serde(default)]
    pub resource_spec_id: String,
    pub phase: ReplicaPhase,
    pub attempt: u32,
    pub retries: u32,
    pub reschedules: u32,
    pub native_id: Option<String>,
    pub exit_code: Option<i32>,
    pub reason: String,
}

impl ReplicaInfo {
    /// Replica `replica` of task `task` of `job`.
    fn of(job: &Job, task: usize, replica: usize) -> Self {
        let t = &job.tasks[task];
        let r = &t.replicas[replica];
        let key = ReplicaKey { job_id: job.id.clone(), task: task as u32, replica: replica as u32, attempt: r.attempt };
        ReplicaInfo {
            name: key.to_string(),
            image_id: t.image_id.clone(),
            resource_spec_id: t.resource_spec_id.clone(),
            phase: r.phase,
            attempt: r.attempt,
            retries: r.retries,
            reschedules: r.reschedules,
            native_id: r.native_id.clone(),
            exit_code: r.exit_code,
            reason: r.reason.clone(),
        }
    }
}

/// A.3 response data, plus extension fields after the standard's.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobInfo {
    pub job_id: String,
    pub name: String,
    pub status: RunState,
    pub task_infos: Vec<TaskInfo>,
    /// Extension: why the job is in its status.
    pub status_reason: String,
    pub user_name: String,
    pub desc: String,
    /// Table 7 `created_user`: who submitted the job.
    #[serde(default)]
    pub created_user: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// Extension: when the scheduler placed the last task (Unix ms).
    #[serde(default)]
    pub placed_at: Option<i64>,
    /// Extension: when the last replica was submitted to its center (Unix ms); the standard's
    /// scheduling time is `dispatchedAt - createdAt`.
    #[serde(default)]
    pub dispatched_at: Option<i64>,
}

impl From<&Job> for JobInfo {
    fn from(job: &Job) -> Self {
        JobInfo {
            job_id: job.id.clone(),
            name: job.name.clone(),
            status: job.status,
            task_infos: job
                .tasks
                .iter()
                .enumerate()
                .map(|(i, t)| TaskInfo {
                    name: t.name.clone(),
                    command: t.command.clone(),
                    image_id: t.image_id.clone(),
                    resource_spec_id: t.resource_spec_id.clone(),
                    replica_number: t.replica_number,
                    center_ids: t.center_ids.clone(),
                    replica_status: t.replica_status(),
                    replicas: (0..t.replicas.len()).map(|r| ReplicaInfo::of(job, i, r)).collect(),
                })
                .collect(),
            status_reason: job.status_reason.clone(),
            user_name: job.user_name.clone(),
            desc: job.desc.clone(),
            created_user: job.created_user.clone(),
            created_at: job.created_at,
            updated_at: job.updated_at,
            placed_at: job.placed_at,
            dispatched_at: job.dispatched_at,
        }
    }
}

/// A.4 response data.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LogLocation {
    pub log_url: String,
}

/// Filters of `GET /openapi/v1/trainjob`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams, PartialEq)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct JobFilter {
    /// Only jobs in this status (pending, running, completed, failed).
    #[param(value_type = Option<RunState>, inline)]
    pub status: Option<String>,
    /// Only jobs of this user.
    #[param(max_length = 63, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$")]
    pub user: Option<String>,
}

impl JobFilter {
    /// The parsed status filter; an unknown status is an error, not an empty page.
    pub fn state(&self) -> Result<Option<RunState>, ApiError> {
        match &self.status {
            None => Ok(None),
            Some(text) => RunState::parse(text).map(Some).ok_or_else(|| {
                ApiError::invalid("status", format!("'{text}' is not one of pending, running, completed, failed"))
            }),
        }
    }
}

#[cfg(test)]
#[path = "job_tests.rs"]
mod tests;

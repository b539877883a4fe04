//! The life of a placed replica (standard §6.4, figure 5): its internal phases, how a failure is
//! classified, and the per-job status and retry policies that roll replicas up into A.3's four
//! job states. Shared by the state machine (which applies transitions) and the adapters (which
//! report native states).

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::job::RunState;
use crate::error::ApiError;

/// Where a replica is in its life. A.3 shows only the standard's four states
/// ([`ReplicaPhase::run_state`]); the internal ones say what jcs is doing about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaPhase {
    /// Waiting for the scheduler to give it a center.
    #[default]
    Unplaced,
    /// Placed; the center's owner is to submit it (after `not_before`).
    Dispatching,
    /// Submitted; queued on the center's native scheduler.
    Queued,
    Running,
    /// A stop was ordered; the owner is stopping it on the center.
    Stopping,
    Completed,
    Failed,
}

impl ReplicaPhase {
    pub fn run_state(self) -> RunState {
        match self {
            ReplicaPhase::Unplaced | ReplicaPhase::Dispatching | ReplicaPhase::Queued => RunState::Pending,
            ReplicaPhase::Running | ReplicaPhase::Stopping => RunState::Running,
            ReplicaPhase::Completed => RunState::Completed,
            ReplicaPhase::Failed => RunState::Failed,
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, ReplicaPhase::Completed | ReplicaPhase::Failed)
    }

    /// Whether a native job may exist on the center for the current attempt.
    pub fn is_on_center(self) -> bool {
        matches!(self, ReplicaPhase::Queued | ReplicaPhase::Running | ReplicaPhase::Stopping)
    }
}

/// Who is to blame for a failure; it decides what a retry costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureCategory {
    /// The program failed (non-zero exit, out of memory, time limit): spends an application
    /// retry, and is retried on the same center.
    Application,
    /// The center failed (lost node, center unreachable, replica vanished): the task is
    /// rescheduled elsewhere without spending an application retry.
    Center,
    /// Stopped on request (A.2); never retried.
    Stopped,
}

/// The identity of one attempt of one replica, unique across jcs's life: the idempotency key
/// of a dispatch. Rendered `job-000000000042.t0.r1.a2` — safe as a file name, a Slurm job name
/// and a Kubernetes label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReplicaKey {
    pub job_id: String,
    pub task: u32,
    pub replica: u32,
    pub attempt: u32,
}

impl fmt::Display for ReplicaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.t{}.r{}.a{}", self.job_id, self.task, self.replica, self.attempt)
    }
}

impl ReplicaKey {
    /// Parses the rendering of [`fmt::Display`].
    pub fn parse(text: &str) -> Option<ReplicaKey> {
        let mut parts = text.rsplitn(4, '.');
        let attempt = parts.next()?.strip_prefix('a')?.parse().ok()?;
        let replica = parts.next()?.strip_prefix('r')?.parse().ok()?;
        let task = parts.next()?.strip_prefix('t')?.parse().ok()?;
        let job_id = parts.next()?;
        crate::validate::id("jobId", job_id, crate::validate::MAX_ID_LEN).ok()?;
        Some(ReplicaKey { job_id: job_id.to_string(), task, replica, attempt })
    }
}

/// How replica outcomes roll up into the job's status (§6.4 a–d). Whatever the policy, a job is
/// final only when no replica is still pending or running, or when the policy's outcome can
/// no longer change (then the remaining replicas are stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum StatusPolicy {
    /// (a)+(d), the default: completed when every task succeeds; failed as soon as one fails.
    #[default]
    AllSucceed,
    /// (b): completed as soon as any task succeeds; failed when all have failed.
    AnySucceeds,
    /// (c): failed only when every task has failed; otherwise completed once all are final.
    AllFail,
}

impl StatusPolicy {
    /// The policy as the API spells it (`all_succeed`, `any_succeeds`, `all_fail`).
    pub fn as_str(self) -> &'static str {
        match self {
            StatusPolicy::AllSucceed => "all_succeed",
            StatusPolicy::AnySucceeds => "any_succeeds",
            StatusPolicy::AllFail => "all_fail",
        }
    }
}

/// What happens after a failed replica (§6.4 retry policy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Application retries per replica (0..=10). Center faults do not spend them.
    #[serde(default = "default_max_retries")]
    #[schema(minimum = 0, maximum = 10)]
    pub max_retries: u32,
    /// Delay before the first retry, ms (0..=600000); doubled for each further one (capped at
    /// 10 minutes).
    #[serde(default = "default_backoff_ms")]
    #[schema(minimum = 0, maximum = 600000)]
    pub backoff_ms: u64,
}

pub const MAX_RETRIES: u32 = 10;
/// Reschedules after center faults before a task is failed (a job cannot bounce forever).
pub const MAX_RESCHEDULES: u32 = 5;
const MAX_BACKOFF_MS: u64 = 600_000;

fn default_max_retries() -> u32 {
    2
}

fn default_backoff_ms() -> u64 {
    1000
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_retries: default_max_retries(), backoff_ms: default_backoff_ms() }
    }
}

impl RetryPolicy {
    pub fn validate(&self) -> Result<(), ApiError> {
        crate::validate::range("retry.maxRetries", self.max_retries.into(), 0, MAX_RETRIES.into())?;
        crate::validate::range("retry.backoffMs", self.backoff_ms as i64, 0, MAX_BACKOFF_MS as i64)
    }

    /// The delay before retry number `retry` (1-based).
    pub fn backoff(&self, retry: u32) -> u64 {
        let doublings = retry.saturating_sub(1).min(20);
        self.backoff_ms.saturating_mul(1 << doublings).min(MAX_BACKOFF_MS)
    }
}

/// One replica's record in the stored job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Replica {
    pub phase: ReplicaPhase,
    /// Counts every dispatch of this replica; part of the idempotency key.
    pub attempt: u32,
    /// Application retries spent.
    pub retries: u32,
    /// Reschedules after center faults.
    pub reschedules: u32,
    /// The center's id for the current attempt, once dispatched.
    pub native_id: Option<String>,
    /// Dispatch no earlier than this (Unix ms): retry backoff.
    pub not_before: i64,
    pub exit_code: Option<i32>,
    /// Why the replica is in its phase (failure reason, stop reason).
    pub reason: String,
    /// Unix ms of the last phase change.
    pub changed_at: i64,
}

/// What a center's owner observed about one replica attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Observed {
    Queued,
    Running,
    Completed,
    Failed { exit_code: Option<i32>, category: FailureCategory, reason: String },
}

/// One observation, for the attempt `key` names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaReport {
    pub key: ReplicaKey,
    pub observed: Observed,
}

/// What happened at a center: the field report's alarms, served at `GET /openapi/v1/events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The center stopped answering and was marked unavailable.
    CenterDown,
    /// The center answers again and was marked available.
    CenterUp,
    /// A monitoring or status poll failed.
    PollFailed,
    /// The center reports more in use than its capacity.
    OverCommitted,
    /// A dispatch was refused by the center.
    DispatchFailed,
    /// A task was taken off a failed center and queued for another.
    Rescheduled,
    /// A replica failed and will be retried.
    Retried,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::CenterDown,
        EventKind::CenterUp,
        EventKind::PollFailed,
        EventKind::OverCommitted,
        EventKind::DispatchFailed,
        EventKind::Rescheduled,
        EventKind::Retried,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::CenterDown => "center_down",
            EventKind::CenterUp => "center_up",
            EventKind::PollFailed => "poll_failed",
            EventKind::OverCommitted => "over_committed",
            EventKind::DispatchFailed => "dispatch_failed",
            EventKind::Rescheduled => "rescheduled",
            EventKind::Retried => "retried",
        }
    }

    pub fn parse(text: &str) -> Option<EventKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CenterEvent {
    /// Increasing with time; events are listed newest first.
    pub seq: u64,
    /// Unix ms.
    pub at: i64,
    pub center_id: String,
    pub kind: EventKind,
    /// The job concerned, if any.
    pub job_id: Option<String>,
    pub message: String,
}

/// Rolls replica outcomes up to the job's status under `policy`. `tasks` gives, per task, its
/// replicas' A.3 states. A task succeeds when all its replicas complete and fails when one
/// fails.
pub fn roll_up(policy: StatusPolicy, tasks: &[Vec<RunState>]) -> RunState {
    let task_state = |replicas: &Vec<RunState>| {
        if replicas.contains(&RunState::Failed) {
            RunState::Failed
        } else if replicas.iter().all(|s| *s == RunState::Completed) {
            RunState::Completed
        } else if replicas.iter().any(|s| *s == RunState::Running || *s == RunState::Completed) {
            RunState::Running
        } else {
            RunState::Pending
        }
    };
    let states: Vec<RunState> = tasks.iter().map(task_state).collect();
    let all = |s| states.iter().all(|x| *x == s);
    let any = |s| states.contains(&s);
    let all_final = states.iter().all(|s| s.is_final());
    let verdict = match policy {
        StatusPolicy::AllSucceed if any(RunState::Failed) => Some(RunState::Failed),
        StatusPolicy::AllSucceed if all(RunState::Completed) => Some(RunState::Completed),
        StatusPolicy::AnySucceeds if any(RunState::Completed) => Some(RunState::Completed),
        StatusPolicy::AnySucceeds if all(RunState::Failed) => Some(RunState::Failed),
        StatusPolicy::AllFail if all(RunState::Failed) => Some(RunState::Failed),
        StatusPolicy::AllFail if all_final => Some(RunState::Completed),
        _ => None,
    };
    verdict.unwrap_or(if any(RunState::Running) || any(RunState::Completed) || any(RunState::Failed) {
        RunState::Running
    } else {
        RunState::Pending
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use RunState::*;

    #[test]
    fn replica_keys_round_trip_and_reject_garbage() {
        let key = ReplicaKey { job_id: "job-000000000042".into(), task: 3, replica: 1, attempt: 2 };
        assert_eq!(key.to_string(), "job-000000000042.t3.r1.a2");
        assert_eq!(ReplicaKey::parse(&key.to_string()), Some(key));
        for bad in ["", "job.t1.r1", "job.t1.r1.ax", "job.tx.r1.a1", ".t1.r1.a1", "a/b.t1.r1.a1"] {
            assert_eq!(ReplicaKey::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_standard_policies() {
        let t = |s: &[RunState]| s.to_vec();
        let one_failed = [t(&[Completed, Completed]), t(&[Failed, Running])];
        assert_eq!(roll_up(StatusPolicy::AllSucceed, &one_failed), Failed);
        assert_eq!(roll_up(StatusPolicy::AnySucceeds, &one_failed), Completed);
        for policy in [StatusPolicy::AllSucceed, StatusPolicy::AnySucceeds, StatusPolicy::AllFail] {
            let json = serde_json::to_value(policy).unwrap();
            assert_eq!(json.as_str(), Some(policy.as_str()), "the reason text names the policy as the API does");
        }
        assert_eq!(roll_up(StatusPolicy::AllFail, &one_failed), Completed, "every task is final");
        let done = [t(&[Completed]), t(&[Failed])];
        assert_eq!(roll_up(StatusPolicy::AllFail, &done), Completed);
        assert_eq!(roll_up(StatusPolicy::AllFail, &[t(&[Failed]), t(&[Failed])]), Failed);
        assert_eq!(roll_up(StatusPolicy::AllSucceed, &[t(&[Completed]), t(&[Completed])]), Completed);
        assert_eq!(roll_up(StatusPolicy::AllSucceed, &[t(&[Pending]), t(&[Pending])]), Pending);
        assert_eq!(roll_up(StatusPolicy::AllSucceed, &[t(&[Completed]), t(&[Pending])]), Running);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = RetryPolicy { max_retries: 3, backoff_ms: 1000 };
        assert_eq!((policy.backoff(1), policy.backoff(2), policy.backoff(3)), (1000, 2000, 4000));
        assert_eq!(RetryPolicy { max_retries: 3, backoff_ms: 500_000 }.backoff(5), MAX_BACKOFF_MS);
        assert!(RetryPolicy { max_retries: 11, backoff_ms: 0 }.validate().is_err());
    }

    fn state() -> impl Strategy<Value = RunState> {
        prop::sample::select(RunState::ALL.to_vec())
    }

    proptest! {
        /// No policy calls a job final while a task is still pending or running, unless the
        /// outcome can no longer change.
        #[test]
        fn a_final_verdict_cannot_be_overturned(tasks in prop::collection::vec(prop::collection::vec(state(), 1..4), 1..5),
                                                policy in prop::sample::select(vec![StatusPolicy::AllSucceed, StatusPolicy::AnySucceeds, StatusPolicy::AllFail])) {
            let verdict = roll_up(policy, &tasks);
            if verdict.is_final() {
                // Finish every unfinished replica either way: the verdict must stand.
                for fill in [Completed, Failed] {
                    let finished: Vec<Vec<RunState>> = tasks.iter()
                        .map(|t| t.iter().map(|s| if s.is_final() { *s } else { fill }).collect()).collect();
                    prop_assert_eq!(roll_up(policy, &finished), verdict);
                }
            }
        }
    }
}

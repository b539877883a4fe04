//! slurmrestd's `openapi/v0.0.38` answers as plain data, and what they mean to jcs: job states
//! and exit statuses as [`NativeState`]s, GRES strings as counts, node states as usable or not.
//! Pure functions, tested on answers recorded from a real Slurm 22.05.

use jcs_api::model::{FailureCategory, ReplicaKey};
use serde::{Deserialize, Deserializer};

use crate::NativeState;

/// The job name carrying `key`: `<prefix>.<key>`, the prefix naming the jcs cluster.
pub(crate) fn job_name(prefix: &str, key: &ReplicaKey) -> String {
    format!("{prefix}.{key}")
}

/// The replica a job name carries, if this jcs cluster (`prefix`) submitted the job.
pub(crate) fn key_of(prefix: &str, name: &str) -> Option<ReplicaKey> {
    ReplicaKey::parse(name.strip_prefix(prefix)?.strip_prefix('.')?)
}

/// One entry of an answer's `errors` array. The number comes as `error_number`, `error_code` or
/// `errno` depending on the endpoint.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub(crate) struct SlurmError {
    #[serde(default, deserialize_with = "lenient")]
    pub error: String,
    #[serde(default, deserialize_with = "lenient")]
    pub description: String,
    #[serde(default, alias = "error_code", alias = "errno", deserialize_with = "lenient")]
    pub error_number: i64,
}

impl std::fmt::Display for SlurmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.error.is_empty(), self.description.is_empty()) {
            (false, false) => write!(f, "{} ({}, slurm error {})", self.description, self.error, self.error_number),
            (true, false) => write!(f, "{} (slurm error {})", self.description, self.error_number),
            _ => write!(f, "{} (slurm error {})", self.error, self.error_number),
        }
    }
}

/// Slurm error numbers the adapter acts on.
pub(crate) mod errno {
    /// `ESLURM_INVALID_JOB_ID`: no such job.
    pub const INVALID_JOB_ID: i64 = 2017;
    /// `ESLURM_ALREADY_DONE`: the job has already ended.
    pub const ALREADY_DONE: i64 = 2021;
    /// `SLURM_COMMUNICATIONS_CONNECTION_ERROR` and friends (1000s): slurmctld unreachable.
    pub fn is_communication(number: i64) -> bool {
        (1000..2000).contains(&number)
    }
}

/// A job as `GET /jobs` lists it (the fields jcs reads).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub(crate) struct Job {
    pub job_id: u64,
    #[serde(default, deserialize_with = "lenient")]
    pub name: String,
    #[serde(default, deserialize_with = "lenient")]
    pub job_state: String,
    #[serde(default, deserialize_with = "lenient")]
    pub state_reason: String,
    /// The raw wait status (`exit 3` is 768, SIGTERM is 15).
    #[serde(default, deserialize_with = "lenient")]
    pub exit_code: i64,
    #[serde(default, deserialize_with = "lenient")]
    pub partition: String,
    /// As submitted: `%j` still stands for the job id.
    #[serde(default, deserialize_with = "lenient")]
    pub standard_output: String,
}

impl Job {
    pub fn state(&self) -> NativeState {
        native_state(&self.job_state, self.exit_code, &self.state_reason)
    }

    /// The job's output file as the compute node sees it.
    pub fn output_path(&self) -> String {
        self.standard_output.replace("%j", &self.job_id.to_string())
    }
}

/// A node as `GET /nodes` lists it (the fields jcs reads).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub(crate) struct Node {
    #[serde(default, deserialize_with = "lenient")]
    pub name: String,
    /// The base state in lower case: `idle`, `mixed`, `allocated`, `down`, `future`, …
    #[serde(default, deserialize_with = "lenient")]
    pub state: String,
    /// `DRAIN`, `NOT_RESPONDING`, `MAINTENANCE`, …
    #[serde(default, deserialize_with = "lenient")]
    pub state_flags: Vec<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub partitions: Vec<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub cpus: i64,
    #[serde(default, deserialize_with = "lenient")]
    pub alloc_cpus: i64,
    /// MB.
    #[serde(default, deserialize_with = "lenient")]
    pub real_memory: i64,
    #[serde(default, deserialize_with = "lenient")]
    pub alloc_memory: i64,
    /// Configured GRES, e.g. `gpu:a100:4(S:0-1)`; `(null)` when none.
    #[serde(default, deserialize_with = "lenient")]
    pub gres: String,
    /// GRES in use, e.g. `gpu:a100:1(IDX:0),mps:0`.
    #[serde(default, deserialize_with = "lenient")]
    pub gres_used: String,
}

impl Node {
    /// Whether the node can run new work: up and neither drained, failing nor unreachable.
    pub fn usable(&self) -> bool {
        const UP: [&str; 4] = ["idle", "mixed", "allocated", "completing"];
        const BLOCKING: [&str; 9] = [
            "DRAIN",
            "DRAINING",
            "DRAINED",
            "FAIL",
            "NOT_RESPONDING",
            "MAINTENANCE",
            "POWERED_DOWN",
            "POWERING_DOWN",
            "REBOOT_REQUESTED",
        ];
        UP.contains(&self.state.to_ascii_lowercase().as_str())
            && !self.state_flags.iter().any(|flag| BLOCKING.contains(&flag.to_ascii_uppercase().as_str()))
    }

    pub fn in_any(&self, partitions: &[String]) -> bool {
        self.partitions.iter().any(|p| partitions.contains(p))
    }
}

/// A null, or a value of another shape than documented, reads as the default: one odd field of
/// one node must not make a whole poll fail.
fn lenient<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + serde::de::DeserializeOwned,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).unwrap_or_default())
}

/// `(name, count)` of each entry of a GRES string: `gpu:4`, `gpu:a100:2(S:0-1),gpu:v100:1`,
/// `gpu:1(IDX:0),mps:0`. `(null)`, `N/A` and the empty string have none; an entry without a
/// count (`gpu:a100`) counts one.
pub(crate) fn split_gres(gres: &str) -> impl Iterator<Item = (&str, f64)> {
    let mut entries = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    // Commas inside parentheses (`(IDX:0,2)`) do not separate entries.
    for (i, c) in gres.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                entries.push(&gres[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    entries.push(&gres[start..]);
    entries.into_iter().filter_map(|entry| {
        let entry = entry.split('(').next().unwrap_or_default().trim();
        if entry.is_empty() || entry == "N/A" {
            return None;
        }
        let mut parts = entry.split(':');
        let name = parts.next()?;
        let count = match parts.next_back() {
            None => 1.0,
            Some(last) => last.parse::<f64>().unwrap_or(1.0),
        };
        Some((name, count))
    })
}

/// A Slurm job state as a jcs replica state.
///
/// - PENDING, CONFIGURING (nodes booting), REQUEUED: waiting in the center's queue.
/// - RUNNING, COMPLETING (ending, still holding its nodes), SUSPENDED and STOPPED (processes
///   paused on their nodes, resumed by the center), RESIZING, SIGNALING, STAGE_OUT: running.
/// - COMPLETED: succeeded.
/// - FAILED, TIMEOUT, OUT_OF_MEMORY, DEADLINE, SPECIAL_EXIT: the job's own doing — an
///   application failure, retried under the job's retry policy. A FAILED whose reason is a
///   launch or node problem is the center's.
/// - NODE_FAIL, BOOT_FAIL, PREEMPTED, REVOKED: the center's fault — the task is rescheduled
///   without spending a retry.
/// - CANCELLED: stopped (jcs cancels what it stops; an operator's `scancel` reads the same).
pub(crate) fn native_state(job_state: &str, raw_exit: i64, reason: &str) -> NativeState {
    let failed = |category, what: &str| NativeState::Failed {
        exit_code: exit_code(raw_exit),
        category,
        reason: with_reason(what, reason, raw_exit),
    };
    match job_state.to_ascii_uppercase().as_str() {
        "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESV_DEL_HOLD" => {
            NativeState::Queued
        }
        "RUNNING" | "COMPLETING" | "SUSPENDED" | "STOPPED" | "RESIZING" | "SIGNALING" | "STAGE_OUT" => {
            NativeState::Running
        }
        "COMPLETED" if raw_exit == 0 => NativeState::Succeeded,
        "COMPLETED" | "SPECIAL_EXIT" => failed(FailureCategory::Application, "ended with a failure"),
        "FAILED" if CENTER_REASONS.contains(&reason) => failed(FailureCategory::Center, "failed to launch"),
        "FAILED" => failed(FailureCategory::Application, "failed"),
        "TIMEOUT" => failed(FailureCategory::Application, "reached its time limit"),
        "OUT_OF_MEMORY" => failed(FailureCategory::Application, "ran out of memory"),
        "DEADLINE" => failed(FailureCategory::Application, "missed its deadline"),
        "NODE_FAIL" => failed(FailureCategory::Center, "lost its node"),
        "BOOT_FAIL" => failed(FailureCategory::Center, "its node failed to boot"),
        "PREEMPTED" => failed(FailureCategory::Center, "was preempted"),
        "REVOKED" => failed(FailureCategory::Center, "was revoked by its federation"),
        "CANCELLED" => failed(FailureCategory::Stopped, "was cancelled"),
        other => failed(FailureCategory::Center, &format!("is in unknown state {other}")),
    }
}

/// FAILED reasons that blame the center, not the job.
const CENTER_REASONS: [&str; 5] = ["JobLaunchFailure", "NodeDown", "SystemFailure", "NodeBootFailure", "Prolog"];

/// The exit status a raw wait status stands for: the exit code, or 128 + the signal (the
/// shell's convention) when a signal ended the job.
pub(crate) fn exit_code(raw: i64) -> Option<i32> {
    let signal = raw & 0x7f;
    let code = if signal != 0 { 128 + signal } else { (raw >> 8) & 0xff };
    i32::try_from(code).ok()
}

fn with_reason(what: &str, reason: &str, raw_exit: i64) -> String {
    let signal = raw_exit & 0x7f;
    let mut text = format!("slurm job {what}");
    if !reason.is_empty() && reason != "None" {
        text.push_str(&format!(" ({reason})"));
    }
    if signal != 0 {
        text.push_str(&format!(", killed by signal {signal}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gres_count(gres: &str, name: &str) -> f64 {
        split_gres(gres).filter(|(entry, _)| *entry == name).map(|(_, count)| count).sum()
    }

    #[test]
    fn every_documented_state_maps() {
        use FailureCategory::*;
        let category = |state: &str| match native_state(state, 0, "None") {
            NativeState::Failed { category, .. } => Some(category),
            _ => None,
        };
        for state in ["PENDING", "CONFIGURING", "REQUEUED"] {
            assert_eq!(native_state(state, 0, "None"), NativeState::Queued, "{state}");
        }
        for state in ["RUNNING", "COMPLETING", "SUSPENDED"] {
            assert_eq!(native_state(state, 0, "None"), NativeState::Running, "{state}");
        }
        assert_eq!(native_state("COMPLETED", 0, "None"), NativeState::Succeeded);
        for (state, expected) in [
            ("FAILED", Application),
            ("TIMEOUT", Application),
            ("OUT_OF_MEMORY", Application),
            ("DEADLINE", Application),
            ("NODE_FAIL", Center),
            ("BOOT_FAIL", Center),
            ("PREEMPTED", Center),
            ("CANCELLED", Stopped),
            ("SOMETHING_NEW", Center),
        ] {
            assert_eq!(category(state), Some(expected), "{state}");
        }
    }

    #[test]
    fn exit_statuses_decode() {
        // Recorded from Slurm 22.05: `exit 3` is FAILED with 768; a cancelled `sleep` is 15.
        assert_eq!(
            native_state("FAILED", 768, "NonZeroExitCode"),
            NativeState::Failed {
                exit_code: Some(3),
                category: FailureCategory::Application,
                reason: "slurm job failed (NonZeroExitCode)".into()
            }
        );
        match native_state("CANCELLED", 15, "None") {
            NativeState::Failed { exit_code, category, reason } => {
                assert_eq!((exit_code, category), (Some(143), FailureCategory::Stopped));
                assert!(reason.contains("signal 15"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let launch = native_state("FAILED", 0, "JobLaunchFailure");
        assert!(matches!(launch, NativeState::Failed { category: FailureCategory::Center, .. }), "{launch:?}");
    }

    #[test]
    fn gres_strings_parse() {
        for (gres, gpus) in [
            ("gpu:4", 4.0),
            ("(null)", 0.0),
            ("", 0.0),
            ("N/A", 0.0),
            ("gpu:1(IDX:0)", 1.0),
            ("gpu:a100:4(S:0-1)", 4.0),
            ("gpu:a100:2(IDX:0,2),gpu:v100:1(IDX:3),mps:400", 3.0),
            ("gpu:a100", 1.0),
            ("gpu:0", 0.0),
            ("mps:100", 0.0),
        ] {
            assert_eq!(gres_count(gres, "gpu"), gpus, "{gres}");
        }
        assert_eq!(gres_count("gpu:2,mps:400(S:0)", "mps"), 400.0);
    }

    #[test]
    fn recorded_answers_parse() {
        let nodes: serde_json::Value = serde_json::from_str(include_str!("testdata/nodes.json")).unwrap();
        let node: Node = serde_json::from_value(nodes["nodes"][0].clone()).unwrap();
        assert_eq!((node.cpus, node.alloc_cpus, node.real_memory, node.alloc_memory), (2, 1, 24105, 64));
        assert_eq!((gres_count(&node.gres, "gpu"), gres_count(&node.gres_used, "gpu")), (4.0, 1.0));
        assert!(node.usable());
        let jobs: serde_json::Value = serde_json::from_str(include_str!("testdata/jobs.json")).unwrap();
        let jobs: Vec<Job> = serde_json::from_value(jobs["jobs"].clone()).unwrap();
        let states: Vec<_> = jobs.iter().map(|j| (j.job_id, j.job_state.as_str(), j.exit_code)).collect();
        assert_eq!(states, vec![(1, "RUNNING", 0), (2, "FAILED", 768), (3, "CANCELLED", 15), (4, "COMPLETED", 0)]);
        assert_eq!(jobs[1].output_path(), "/tmp/jcs-slurm/jobs/e3.2.out");
        let error: SlurmError = serde_json::from_value(
            serde_json::json!({"error_code": 1800, "error": "Unable to contact slurm controller"}),
        )
        .unwrap();
        assert!(errno::is_communication(error.error_number));
    }

    #[test]
    fn odd_fields_do_not_break_a_node() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "name": "n1", "state": "idle", "state_flags": null, "cpus": "many", "gres": null, "partitions": ["p"]
        }))
        .unwrap();
        assert_eq!((node.cpus, node.gres.as_str()), (0, ""));
        let drained = Node { state: "idle".into(), state_flags: vec!["DRAIN".into()], ..node.clone() };
        assert!(node.usable() && !drained.usable());
        assert!(!Node { state: "down".into(), ..node }.usable());
    }

    #[test]
    fn names_carry_keys() {
        let key = ReplicaKey { job_id: "job-1".into(), task: 2, replica: 3, attempt: 1 };
        assert_eq!(job_name("jcs", &key), "jcs.job-1.t2.r3.a1");
        assert_eq!(key_of("jcs", &job_name("jcs", &key)), Some(key.clone()));
        assert_eq!(key_of("jcs-staging", &job_name("jcs", &key)), None, "another cluster's job");
        assert_eq!(key_of("jcs", "x"), None);
        assert_eq!(key_of("jcs", "jcs.nope"), None);
    }
}

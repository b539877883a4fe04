//! Figures of `jcs bench submit` read from the jobs' replicated timestamps rather than from the
//! clients' clocks: after the measured submissions, wait until every measured job has reached a
//! milestone — placed (`placedAt`, the commit of its `Place` batch) or, with `--sim`, dispatched
//! (`dispatchedAt`, the commit of its last `Dispatched`) — then read the standard's time
//! T = ts − tr (§6.7) from `createdAt` (the submission's commit) to that milestone, and the rate
//! R = N / T_total from the first submission to the last milestone.
//!
//! These do not depend on how the clients wait: with the node started with
//! `--placement-wait-ms 0`, A.1 answers at its commit, the clients submit as fast as Raft takes
//! them, and the placement rate is the scheduler's throughput over that backlog.

use std::time::Duration;

use hdrhistogram::Histogram;
use jcs_api::model::{JobInfo, Page};
use serde::Serialize;

use super::super::client::Client;

/// How long to wait for the last milestone after the last submission.
const SETTLE: Duration = Duration::from_secs(300);
/// How long to go on waiting while no further job reaches the milestone (a job the scheduler
/// keeps pending never will).
const STALL: Duration = Duration::from_secs(30);
const PAGE_SIZE: u32 = 1000;

/// A point in a job's life that the replicated state stamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Milestone {
    Placed,
    Dispatched,
}

impl Milestone {
    fn stamp(self, job: &JobInfo) -> Option<i64> {
        match self {
            Milestone::Placed => job.placed_at,
            Milestone::Dispatched => job.dispatched_at,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Milestone::Placed => "placed",
            Milestone::Dispatched => "dispatched",
        }
    }
}

/// Submission → milestone, over the measured jobs.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Figures {
    pub milestone: Milestone,
    pub jobs: u64,
    /// Measured jobs that had not reached the milestone when the wait ended.
    pub missing: u64,
    /// Jobs that reached the milestone, per second, from the first submission to the last of
    /// them reaching it.
    pub per_second: f64,
    pub t_p50_ms: f64,
    pub t_p99_ms: f64,
    pub t_max_ms: f64,
}

/// Waits for `expected` jobs of `user` to reach `milestone` and measures those that did: all of
/// them, or as many as had when [`SETTLE`] passed or [`STALL`] went by without one more.
pub async fn measure(client: &Client, user: &str, expected: u64, milestone: Milestone) -> anyhow::Result<Figures> {
    let deadline = tokio::time::Instant::now() + SETTLE;
    let (mut reached, mut progressed) = (0, tokio::time::Instant::now());
    loop {
        let jobs = jobs_of(client, user).await?;
        let done: Vec<(i64, i64)> =
            jobs.iter().filter_map(|j| milestone.stamp(j).map(|at| (j.created_at, at))).collect();
        let now = tokio::time::Instant::now();
        if done.len() > reached {
            (reached, progressed) = (done.len(), now);
        }
        if done.len() as u64 >= expected || now > deadline || now.duration_since(progressed) > STALL {
            return Ok(figures(milestone, &done, expected));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn jobs_of(client: &Client, user: &str) -> anyhow::Result<Vec<JobInfo>> {
    let mut jobs = Vec::new();
    for page in 1.. {
        let query = [("user", user.to_string()), ("page", page.to_string()), ("pageSize", PAGE_SIZE.to_string())];
        let listing: Page<JobInfo> = client.get(client.url(&["trainjob"], &query)).await?;
        let last = listing.items.len() < PAGE_SIZE as usize;
        jobs.extend(listing.items);
        if last {
            break;
        }
    }
    Ok(jobs)
}

/// T per job and the rate, from the `(createdAt, milestone)` pairs of the `expected` jobs that
/// reached it.
fn figures(milestone: Milestone, done: &[(i64, i64)], expected: u64) -> Figures {
    let mut t = Histogram::<u64>::new_with_bounds(1, 3_600_000, 3).expect("valid histogram bounds");
    for (created, reached) in done {
        t.saturating_record((reached - created).max(1) as u64);
    }
    let first = done.iter().map(|(c, _)| *c).min().unwrap_or(0);
    let last = done.iter().map(|(_, d)| *d).max().unwrap_or(0);
    let span = (last - first).max(1) as f64 / 1000.0;
    Figures {
        milestone,
        jobs: done.len() as u64,
        missing: expected.saturating_sub(done.len() as u64),
        per_second: done.len() as f64 / span,
        t_p50_ms: t.value_at_quantile(0.50) as f64,
        t_p99_ms: t.value_at_quantile(0.99) as f64,
        t_max_ms: t.max() as f64,
    }
}

pub fn render(f: &Figures) -> String {
    let name = f.milestone.name();
    let missing = match f.missing {
        0 => String::new(),
        n => format!("; WARNING: {n} measured jobs not {name}, left out"),
    };
    format!(
        "{name}/s (replicated stamps): {:.1} ({} jobs, first submission to last {name}{missing})\nT submission→{name} ms: p50 {:.0}  p99 {:.0}  max {:.0}",
        f.per_second, f.jobs, f.t_p50_ms, f.t_p99_ms, f.t_max_ms
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_and_the_rate_come_from_the_timestamps() {
        let done: Vec<(i64, i64)> = (0..100).map(|i| (i * 10, i * 10 + 5 + i)).collect();
        let f = figures(Milestone::Dispatched, &done, 100);
        assert_eq!((f.jobs, f.missing), (100, 0));
        assert_eq!(f.t_max_ms, 104.0);
        assert!((f.per_second - 100.0 / 1.094).abs() < 0.5, "{f:?}");
        let text = render(&f);
        assert!(text.contains("dispatched/s (replicated stamps): 91.4") && text.contains("p99"), "{text}");
        assert!(!text.contains("WARNING"), "{text}");
    }

    #[test]
    fn jobs_that_never_reached_the_milestone_are_counted_and_named() {
        let f = figures(Milestone::Placed, &[(0, 10), (0, 20)], 5);
        assert_eq!((f.jobs, f.missing), (2, 3));
        let text = render(&f);
        assert!(text.contains("WARNING: 3 measured jobs not placed, left out"), "{text}");
    }

    #[test]
    fn each_milestone_reads_its_own_stamp() {
        let job: JobInfo = serde_json::from_value(serde_json::json!({"jobId": "j", "name": "n", "status": "pending",
            "taskInfos": [], "statusReason": "", "userName": "u", "desc": "", "createdAt": 1, "updatedAt": 1,
            "placedAt": 5}))
        .unwrap();
        assert_eq!(Milestone::Placed.stamp(&job), Some(5));
        assert_eq!(Milestone::Dispatched.stamp(&job), None);
    }
}

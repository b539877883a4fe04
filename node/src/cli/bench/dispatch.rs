//! The dispatch figures of `jcs bench submit --sim`: after the measured submissions, wait until
//! every measured job's last replica has been submitted to its center, then read the standard's
//! scheduling time T = ts − tr (§6.7) from each job's replicated timestamps — `createdAt` (the
//! submission's commit) and `dispatchedAt` (the commit of the last `Dispatched`) — and the
//! sustained dispatch rate over the whole run.

use std::time::Duration;

use hdrhistogram::Histogram;
use jcs_api::model::{JobInfo, Page};
use serde::Serialize;

use super::super::client::Client;

/// How long to wait for the last dispatch after the last submission.
const SETTLE: Duration = Duration::from_secs(300);
const PAGE_SIZE: u32 = 1000;

/// Submission → dispatch, over the measured jobs.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Figures {
    pub dispatched: u64,
    /// Jobs whose replicas were all submitted, per second, from the first submission to the
    /// last dispatch.
    pub dispatched_per_second: f64,
    pub t_p50_ms: f64,
    pub t_p99_ms: f64,
    pub t_max_ms: f64,
}

/// Waits for `expected` jobs of `user` to be dispatched and measures them.
pub async fn measure(client: &Client, user: &str, expected: u64) -> anyhow::Result<Figures> {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let jobs = jobs_of(client, user).await?;
        let done: Vec<(i64, i64)> = jobs.iter().filter_map(|j| j.dispatched_at.map(|d| (j.created_at, d))).collect();
        if done.len() as u64 >= expected {
            return Ok(figures(&done));
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("only {} of {expected} jobs were dispatched within {SETTLE:?}", done.len());
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

/// T per job and the rate, from `(createdAt, dispatchedAt)` pairs.
fn figures(done: &[(i64, i64)]) -> Figures {
    let mut t = Histogram::<u64>::new_with_bounds(1, 3_600_000, 3).expect("valid histogram bounds");
    for (created, dispatched) in done {
        t.saturating_record((dispatched - created).max(1) as u64);
    }
    let first = done.iter().map(|(c, _)| *c).min().unwrap_or(0);
    let last = done.iter().map(|(_, d)| *d).max().unwrap_or(0);
    let span = (last - first).max(1) as f64 / 1000.0;
    Figures {
        dispatched: done.len() as u64,
        dispatched_per_second: done.len() as f64 / span,
        t_p50_ms: t.value_at_quantile(0.50) as f64,
        t_p99_ms: t.value_at_quantile(0.99) as f64,
        t_max_ms: t.max() as f64,
    }
}

pub fn render(f: &Figures) -> String {
    format!(
        "dispatched/s: {:.1} ({} jobs, first submission to last dispatch)\nT submission→dispatch ms: p50 {:.0}  p99 {:.0}  max {:.0}",
        f.dispatched_per_second, f.dispatched, f.t_p50_ms, f.t_p99_ms, f.t_max_ms
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_and_the_rate_come_from_the_timestamps() {
        let done: Vec<(i64, i64)> = (0..100).map(|i| (i * 10, i * 10 + 5 + i)).collect();
        let f = figures(&done);
        assert_eq!(f.dispatched, 100);
        assert_eq!(f.t_max_ms, 104.0);
        assert!((f.dispatched_per_second - 100.0 / 1.094).abs() < 0.5, "{f:?}");
        assert!(render(&f).contains("p99"));
    }
}

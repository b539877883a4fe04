//! Data-migration source selection (§6.3.2, figure 3): when a job is placed where its data is
//! not, the copies it could be fetched from are filtered and ranked, and the ranked list goes
//! with the placement to the storage layer.
//!
//! Filter: the copy is readable and its concurrency limit is not reached. Evaluators, in order
//! of precedence: (a) least loaded (`current_downloads / concurrency_limit`), (b) least mean
//! download time, (d) best history (success rate), (e) highest rate limit (0 = unlimited, best);
//! the center id breaks the remaining ties.

use jcs_api::model::{Dataset, DatasetLocation};

/// Fraction of the copy's download slots in use (0 when unlimited).
fn load(location: &DatasetLocation) -> f64 {
    if location.concurrency_limit <= 0 {
        return 0.0;
    }
    location.current_downloads as f64 / location.concurrency_limit as f64
}

/// Share of past downloads that succeeded (1 with no history).
fn success_rate(location: &DatasetLocation) -> f64 {
    let total = location.download_state.len();
    if total == 0 {
        return 1.0;
    }
    location.download_state.iter().filter(|r| r.outcome == "success").count() as f64 / total as f64
}

/// The rate limit as a rank: unlimited first, then the highest.
fn rate_rank(location: &DatasetLocation) -> i64 {
    if location.download_rate_limit <= 0 {
        i64::MAX
    } else {
        location.download_rate_limit
    }
}

/// The centers to copy `dataset` from, best first.
pub fn rank_sources(dataset: &Dataset) -> Vec<String> {
    let mut usable: Vec<&DatasetLocation> = dataset
        .location
        .iter()
        .filter(|l| l.access == "r" || l.access == "rw")
        .filter(|l| l.concurrency_limit <= 0 || l.current_downloads < l.concurrency_limit)
        .collect();
    usable.sort_by(|a, b| {
        load(a)
            .total_cmp(&load(b))
            .then(a.download_cost.total_cmp(&b.download_cost))
            .then(success_rate(b).total_cmp(&success_rate(a)))
            .then(rate_rank(b).cmp(&rate_rank(a)))
            .then(a.ai_center_id.cmp(&b.ai_center_id))
    });
    usable.into_iter().map(|l| l.ai_center_id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn saturated_copies_are_filtered_and_the_rest_ranked_by_load_then_time() {
        let dataset: Dataset = serde_json::from_value(json!({"data_name": "d", "data_version": "v1", "location": [
            {"dataset_url": "u", "access": "r", "ai_center_id": "full", "concurrency_limit": 2, "current_downloads": 2},
            {"dataset_url": "u", "access": "r", "ai_center_id": "busy", "concurrency_limit": 4, "current_downloads": 3},
            {"dataset_url": "u", "access": "r", "ai_center_id": "slow", "download_cost": 90.0},
            {"dataset_url": "u", "access": "rw", "ai_center_id": "fast", "download_cost": 10.0}
        ]}))
        .unwrap();
        assert_eq!(rank_sources(&dataset), vec!["fast", "slow", "busy"]);
    }

    #[test]
    fn history_breaks_ties_of_load_and_time() {
        let dataset: Dataset = serde_json::from_value(json!({"data_name": "d", "data_version": "v1", "location": [
            {"dataset_url": "u", "access": "r", "ai_center_id": "flaky",
             "download_state": [{"at": 1, "outcome": "failed"}, {"at": 2, "outcome": "success"}]},
            {"dataset_url": "u", "access": "r", "ai_center_id": "steady",
             "download_state": [{"at": 1, "outcome": "success"}]}
        ]}))
        .unwrap();
        assert_eq!(rank_sources(&dataset), vec!["steady", "flaky"]);
    }
}

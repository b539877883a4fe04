//! The eight scheduling strategies of §6.6.2 (and jcs's network-quality extension), each turning its raw factor (see [`factors`]) into
//! a normalized score per candidate: an integer 0..=100, higher is better, so the evaluation
//! model can weigh strategies with different units against each other. The string ids are the
//! `algorithmId`s of the A.5 and A.6 endpoints.

use serde::{Deserialize, Serialize};

use crate::schedule::factors;
use crate::schedule::snapshot::{JobContext, Snapshot};

/// A strategy of §6.6.2 (a)–(h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// (a) Fewest running tasks.
    LeastWorkload,
    /// (b) Most free capacity of the demanded device kinds.
    MostFreeCapacity,
    /// (c) Nearest to the job's data and to its other replicas.
    DataAffinity,
    /// (d) Cheapest spec price.
    LowestPrice,
    /// (e) Least energy by formula (1).
    LowestEnergy,
    /// (f) Fastest for the dominant demanded device kind.
    HighestPerformance,
    /// (g) Highest security grade.
    HighestSecurity,
    /// (h) Least spread of workload across centers after placement.
    LoadFairness,
    /// jcs extension for policy modes 6 and 8: best network path (bandwidth, latency, jitter,
    /// loss).
    NetworkQuality,
}

impl Strategy {
    pub const ALL: [Strategy; 9] = [
        Strategy::LeastWorkload,
        Strategy::MostFreeCapacity,
        Strategy::DataAffinity,
        Strategy::LowestPrice,
        Strategy::LowestEnergy,
        Strategy::HighestPerformance,
        Strategy::HighestSecurity,
        Strategy::LoadFairness,
        Strategy::NetworkQuality,
    ];

    /// The stable `algorithmId`.
    pub fn id(self) -> &'static str {
        match self {
            Strategy::LeastWorkload => "least_workload",
            Strategy::MostFreeCapacity => "most_free_capacity",
            Strategy::DataAffinity => "data_affinity",
            Strategy::LowestPrice => "lowest_price",
            Strategy::LowestEnergy => "lowest_energy",
            Strategy::HighestPerformance => "highest_performance",
            Strategy::HighestSecurity => "highest_security",
            Strategy::LoadFairness => "load_fairness",
            Strategy::NetworkQuality => "network_quality",
        }
    }

    pub fn from_id(id: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|s| s.id() == id)
    }

    /// Whether a larger raw factor is better (price, energy and workload are not).
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Strategy::LeastWorkload | Strategy::LowestPrice | Strategy::LowestEnergy)
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

/// The strategy's raw factor per candidate, in snapshot order (for explanations).
pub fn raw(strategy: Strategy, job: &JobContext, snapshot: &Snapshot) -> Vec<Option<f64>> {
    match strategy {
        Strategy::LeastWorkload => factors::workload_per_candidate(job, snapshot),
        Strategy::MostFreeCapacity => factors::replicas_that_fit(job, snapshot),
        Strategy::DataAffinity => factors::affinity(job, snapshot),
        Strategy::LowestPrice => factors::price(snapshot),
        Strategy::LowestEnergy => factors::energy(job, snapshot),
        Strategy::HighestPerformance => factors::performance(job, snapshot),
        Strategy::HighestSecurity => factors::security_grade(snapshot),
        Strategy::LoadFairness => factors::negative_workload_variance(job, snapshot),
        Strategy::NetworkQuality => factors::network_quality(job, snapshot),
    }
}

/// The strategy's normalized score per candidate, in snapshot order.
pub fn score(strategy: Strategy, job: &JobContext, snapshot: &Snapshot) -> Vec<u32> {
    normalize(&raw(strategy, job, snapshot), strategy.higher_is_better())
}

/// Min-max normalization to 0..=100 with the best raw value at 100. All-equal values all get
/// 100; a missing or non-finite value gets 0.
pub fn normalize(raw: &[Option<f64>], higher_is_better: bool) -> Vec<u32> {
    let (mut min, mut max) = (None::<f64>, None::<f64>);
    for v in raw.iter().flatten().copied().filter(|v| v.is_finite()) {
        min = Some(min.map_or(v, |m| m.min(v)));
        max = Some(max.map_or(v, |m| m.max(v)));
    }
    let (Some(min), Some(max)) = (min, max) else {
        return vec![0; raw.len()];
    };
    // Halved first, so that even a range spanning all of f64 stays finite.
    let (low, high) = (min / 2.0, max / 2.0);
    let span = high - low;
    // Multiplying by the scale is cheaper than dividing by the span, unless the span is so
    // small that the scale overflows.
    let scale = 100.0 / span;
    let percent = |from_worst: f64| if scale.is_finite() { from_worst * scale } else { from_worst / span * 100.0 };
    raw.iter()
        .map(|value| match value {
            Some(v) if v.is_finite() && max == min => 100,
            Some(v) if v.is_finite() => {
                let from_worst = if higher_is_better { v / 2.0 - low } else { high - v / 2.0 };
                // Rounded half up by truncation (the score is never negative once clamped):
                // `f64::round` is a library call, and this runs per candidate per strategy.
                (percent(from_worst).clamp(0.0, 100.0) + 0.5) as u32
            }
            _ => 0,
        })
        .collect()
}

#[cfg(test)]
#[path = "strategy_tests.rs"]
mod tests;

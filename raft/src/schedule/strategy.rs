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

/// The strategy's raw factor and normalized score per candidate, in snapshot order.
///
/// (h)'s variance after placement is an increasing affine function of the candidate's own
/// workload (the others' workloads and their count are the same whichever candidate is scored),
/// so its min-max score is exactly (a)'s; both are computed from the integer workloads, without
/// rounding. The variance itself is the raw factor an explanation shows.
pub fn raw_and_scores(strategy: Strategy, job: &JobContext, snapshot: &Snapshot) -> (Vec<Option<f64>>, Vec<u32>) {
    let raw = raw(strategy, job, snapshot);
    let scores = match strategy {
        Strategy::LeastWorkload | Strategy::LoadFairness => normalize_loads(&factors::workloads(job, snapshot)),
        _ => normalize(&raw, strategy.higher_is_better()),
    };
    (raw, scores)
}

/// The strategy's normalized score per candidate, in snapshot order.
pub fn score(strategy: Strategy, job: &JobContext, snapshot: &Snapshot) -> Vec<u32> {
    raw_and_scores(strategy, job, snapshot).1
}

/// Min-max normalization to 0..=100 with the best raw value at 100. All-equal values all get
/// 100; a missing or non-finite value gets 0.
pub fn normalize(raw: &[Option<f64>], higher_is_better: bool) -> Vec<u32> {
    match MinMax::of(raw) {
        Some(range) => raw.iter().map(|v| range.score(*v, higher_is_better)).collect(),
        None => vec![0; raw.len()],
    }
}

/// The range of a factor's finite raw values over the candidates. Min-max normalization reads
/// only this and the candidate's own value, so a candidate whose value changes within the range
/// is scored again alone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinMax {
    min: f64,
    max: f64,
    /// Halved first, so that even a range spanning all of f64 stays finite.
    low: f64,
    high: f64,
    span: f64,
    /// `100 / span`: multiplying by it is cheaper than dividing by the span, unless the span is
    /// so small that it overflows.
    scale: f64,
}

impl MinMax {
    /// The range of the finite values, if there is one.
    pub fn of<'v>(raw: impl IntoIterator<Item = &'v Option<f64>>) -> Option<MinMax> {
        let (mut min, mut max) = (None::<f64>, None::<f64>);
        for v in raw.into_iter().flatten().copied().filter(|v| v.is_finite()) {
            min = Some(min.map_or(v, |m| m.min(v)));
            max = Some(max.map_or(v, |m| m.max(v)));
        }
        let (min, max) = (min?, max?);
        let (low, high) = (min / 2.0, max / 2.0);
        let span = high - low;
        Some(MinMax { min, max, low, high, span, scale: 100.0 / span })
    }

    /// Whether this is still the range after one value changed from `old` to `new` (`false`
    /// when it cannot tell without looking at the other values).
    pub fn holds_after(&self, old: Option<f64>, new: Option<f64>) -> bool {
        let inside = |v: Option<f64>| v.is_some_and(|v| v.is_finite() && self.min < v && v < self.max);
        let unchanged = old.map(f64::to_bits) == new.map(f64::to_bits);
        unchanged || (inside(old) && (inside(new) || new.is_some_and(|v| v == self.min || v == self.max)))
    }

    /// One value's score in this range.
    pub fn score(&self, value: Option<f64>, higher_is_better: bool) -> u32 {
        let Some(v) = value.filter(|v| v.is_finite()) else { return 0 };
        if self.max == self.min {
            return 100;
        }
        let from_worst = if higher_is_better { v / 2.0 - self.low } else { self.high - v / 2.0 };
        let percent = if self.scale.is_finite() { from_worst * self.scale } else { from_worst / self.span * 100.0 };
        // Rounded half up by truncation (the score is never negative once clamped):
        // `f64::round` is a library call, and this runs per candidate per strategy.
        (percent.clamp(0.0, 100.0) + 0.5) as u32
    }
}

/// Min-max normalization of workloads (lower is better), exactly, in integers: the score is
/// `100 × (max - load) / (max - min)` rounded half up. All-equal loads all get 100; a candidate
/// without a load gets 0.
pub fn normalize_loads(loads: &[Option<i64>]) -> Vec<u32> {
    match LoadRange::of(loads.iter().flatten().copied()) {
        Some(range) => loads.iter().map(|load| load.map_or(0, |load| range.score(load))).collect(),
        None => vec![0; loads.len()],
    }
}

/// The range of the candidates' workloads, which [`normalize_loads`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadRange {
    min: i64,
    max: i64,
}

impl LoadRange {
    pub fn of(loads: impl Iterator<Item = i64>) -> Option<LoadRange> {
        loads.fold(None, |range, load| match range {
            None => Some(LoadRange { min: load, max: load }),
            Some(LoadRange { min, max }) => Some(LoadRange { min: min.min(load), max: max.max(load) }),
        })
    }

    /// Whether this is still the range after one load changed from `old` to `new` (`false`
    /// when it cannot tell without looking at the other loads).
    pub fn holds_after(&self, old: i64, new: i64) -> bool {
        old == new || (self.min < old && old < self.max && self.min <= new && new <= self.max)
    }

    /// One load's score in this range.
    pub fn score(&self, load: i64) -> u32 {
        let span = i128::from(self.max) - i128::from(self.min);
        if span == 0 {
            return 100;
        }
        let from_worst = (i128::from(self.max) - i128::from(load)).clamp(0, span);
        // In 64 bits when the span allows (a 128-bit division is a library call).
        match (u64::try_from(span), u64::try_from(from_worst)) {
            (Ok(span), Ok(from_worst)) if span < 1 << 56 => ((200 * from_worst + span) / (2 * span)) as u32,
            _ => ((200 * from_worst + span) / (2 * span)) as u32,
        }
    }
}

#[cfg(test)]
#[path = "strategy_tests.rs"]
mod tests;

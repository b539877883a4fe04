//! The evaluation model of §6.6.3: strategy scores for one center are combined into a total,
//! and the candidates are ranked by it. The default model is the standard's weighted sum
//! `Score_k = Σ w_i · s_ik`; the model is a trait so that another can be plugged in. Also the
//! A.6 computation, which combines caller-supplied strategy scores with the default weights.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::schedule::snapshot::{JobContext, Snapshot};
use crate::schedule::strategy::{raw_and_scores, Strategy};

/// How much each strategy counts. A strategy not listed counts 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Weights(BTreeMap<Strategy, u32>);

impl Default for Weights {
    /// Load and capacity lead (20 each), since a replica that does not fit or waits behind a
    /// queue gains nothing elsewhere; data affinity, price, energy, performance and fairness at
    /// 10; security 5, because a job's required grade is a filter, not a preference; network
    /// quality 5. The weights sum to 100, so a weight reads as a percentage.
    fn default() -> Self {
        Weights::from_pairs([
            (Strategy::LeastWorkload, 20),
            (Strategy::MostFreeCapacity, 20),
            (Strategy::DataAffinity, 10),
            (Strategy::LowestPrice, 10),
            (Strategy::LowestEnergy, 10),
            (Strategy::HighestPerformance, 10),
            (Strategy::HighestSecurity, 5),
            (Strategy::LoadFairness, 10),
            (Strategy::NetworkQuality, 5),
        ])
    }
}

impl Weights {
    pub fn from_pairs(pairs: impl IntoIterator<Item = (Strategy, u32)>) -> Self {
        Weights(pairs.into_iter().collect())
    }

    /// Only this strategy counts (a single-factor policy).
    pub fn only(strategy: Strategy) -> Self {
        Weights::from_pairs([(strategy, 1)])
    }

    /// These weights with `strategy` set to `weight`.
    pub fn with(mut self, strategy: Strategy, weight: u32) -> Self {
        self.0.insert(strategy, weight);
        self
    }

    pub fn get(&self, strategy: Strategy) -> u32 {
        self.0.get(&strategy).copied().unwrap_or(0)
    }

    pub fn iter(&self) -> impl Iterator<Item = (Strategy, u32)> + '_ {
        self.0.iter().map(|(s, w)| (*s, *w))
    }
}

/// Combines one center's strategy scores (each 0..=100) into its total (0..=100).
pub trait EvaluationModel {
    fn combine(&self, scores: &[(Strategy, u32)], weights: &Weights) -> u32;
}

/// The standard's weighted sum, divided by the total weight so the result stays 0..=100 and
/// rounded to the nearest integer. Scores above 100 count as 100; no weight at all gives 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WeightedSum;

impl EvaluationModel for WeightedSum {
    fn combine(&self, scores: &[(Strategy, u32)], weights: &Weights) -> u32 {
        let (weighted, total_weight) = scores.iter().fold((0u64, 0u64), |(sum, total), (strategy, s)| {
            let weight = u64::from(weights.get(*strategy));
            (sum + weight * u64::from((*s).min(100)), total + weight)
        });
        if total_weight == 0 {
            return 0;
        }
        u32::try_from((weighted + total_weight / 2) / total_weight).unwrap_or(100)
    }
}

/// One candidate's scores: per weighted strategy `(strategy, raw, normalized)`, and the total.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredCenter {
    pub center_id: String,
    pub strategies: Vec<(Strategy, Option<f64>, u32)>,
    pub total: u32,
}

/// The best `limit` candidates scored under `model`, best first; equal totals in ascending
/// center id. Strategies of weight 0 are skipped: they cannot change a total. Totals are
/// computed for every candidate; the per-strategy detail only for the ones returned.
pub fn score_table(
    model: &dyn EvaluationModel,
    weights: &Weights,
    job: &JobContext,
    snapshot: &Snapshot,
    limit: usize,
) -> Vec<ScoredCenter> {
    let per_strategy: Vec<(Strategy, Vec<Option<f64>>, Vec<u32>)> = Strategy::ALL
        .into_iter()
        .filter(|s| weights.get(*s) > 0)
        .map(|s| {
            let (raw, normalized) = raw_and_scores(s, job, snapshot);
            (s, raw, normalized)
        })
        .collect();
    let mut scores: Vec<(Strategy, u32)> = Vec::with_capacity(per_strategy.len());
    let mut totals: Vec<(u32, usize)> = (0..snapshot.candidates.len())
        .map(|index| {
            scores.clear();
            scores.extend(per_strategy.iter().map(|(s, _, normalized)| (*s, normalized[index])));
            (model.combine(&scores, weights), index)
        })
        .collect();
    let id = |index: usize| snapshot.candidates[index].id();
    totals.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| id(a.1).cmp(id(b.1))));
    totals
        .into_iter()
        .take(limit)
        .map(|(total, index)| ScoredCenter {
            center_id: id(index).to_string(),
            total,
            strategies: per_strategy.iter().map(|(s, raw, normalized)| (*s, raw[index], normalized[index])).collect(),
        })
        .collect()
}

/// Every candidate's total under `model`, best first; equal totals in ascending center id.
pub fn rank(
    model: &dyn EvaluationModel,
    weights: &Weights,
    job: &JobContext,
    snapshot: &Snapshot,
) -> Vec<(String, u32)> {
    score_table(model, weights, job, snapshot, usize::MAX).into_iter().map(|s| (s.center_id, s.total)).collect()
}

/// Why an A.6 request's scores cannot be combined.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScoreError {
    #[error("algorithmIds has {ids} entries but algorithmScores has {scores}")]
    LengthMismatch { ids: usize, scores: usize },
    #[error("unknown algorithmId '{0}'")]
    UnknownAlgorithm(String),
    #[error("algorithm score {0} is outside 0..=100")]
    ScoreOutOfRange(i64),
    #[error("algorithmIds names no algorithm")]
    NoAlgorithm,
    #[error("algorithmId '{0}' is given twice")]
    DuplicateAlgorithm(String),
}

/// A.6: the combined score of the given per-strategy scores under the default weights and the
/// weighted sum. Each id at most once, and at least one.
pub fn combine_algorithm_scores(algorithm_ids: &[String], algorithm_scores: &[i64]) -> Result<u32, ScoreError> {
    if algorithm_ids.len() != algorithm_scores.len() {
        return Err(ScoreError::LengthMismatch { ids: algorithm_ids.len(), scores: algorithm_scores.len() });
    }
    if algorithm_ids.is_empty() {
        return Err(ScoreError::NoAlgorithm);
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = algorithm_ids.iter().find(|id| !seen.insert(id.as_str())) {
        return Err(ScoreError::DuplicateAlgorithm(twice.clone()));
    }
    let scores = algorithm_ids
        .iter()
        .zip(algorithm_scores)
        .map(|(id, score)| {
            let strategy = Strategy::from_id(id).ok_or_else(|| ScoreError::UnknownAlgorithm(id.clone()))?;
            let score = u32::try_from(*score).ok().filter(|s| *s <= 100).ok_or(ScoreError::ScoreOutOfRange(*score))?;
            Ok((strategy, score))
        })
        .collect::<Result<Vec<_>, ScoreError>>()?;
    Ok(WeightedSum.combine(&scores, &Weights::default()))
}

#[cfg(test)]
#[path = "evaluate_tests.rs"]
mod tests;

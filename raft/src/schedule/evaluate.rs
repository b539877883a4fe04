//! The evaluation model of §6.6.3: strategy scores for one center are combined into a total,
//! and the candidates are ranked by it. The default model is the standard's weighted sum
//! `Score_k = Σ w_i · s_ik`; the model is a trait so that another can be plugged in. Also the
//! A.6 computation, which combines caller-supplied strategy scores with the default weights.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::schedule::snapshot::{JobContext, Snapshot};
use crate::schedule::strategy::{score, Strategy};

/// How much each strategy counts. A strategy not listed counts 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Weights(BTreeMap<Strategy, u32>);

impl Default for Weights {
    /// Load and capacity lead (20 each), since a replica that does not fit or waits behind a
    /// queue gains nothing elsewhere; data affinity next (15); price, energy, performance and
    /// fairness at 10; security 5, because a job's required grade is a filter, not a preference.
    /// The weights sum to 100, so a weight reads as a percentage.
    fn default() -> Self {
        Weights::from_pairs([
            (Strategy::LeastWorkload, 20),
            (Strategy::MostFreeCapacity, 20),
            (Strategy::DataAffinity, 15),
            (Strategy::LowestPrice, 10),
            (Strategy::LowestEnergy, 10),
            (Strategy::HighestPerformance, 10),
            (Strategy::HighestSecurity, 5),
            (Strategy::LoadFairness, 10),
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

/// Every candidate's total under `model`, best first; equal totals in ascending center id.
pub fn rank(
    model: &dyn EvaluationModel,
    weights: &Weights,
    job: &JobContext,
    snapshot: &Snapshot,
) -> Vec<(String, u32)> {
    let per_strategy: Vec<(Strategy, Vec<u32>)> =
        Strategy::ALL.into_iter().map(|s| (s, score(s, job, snapshot))).collect();
    let mut ranked: Vec<(String, u32)> = snapshot
        .candidates
        .iter()
        .enumerate()
        .map(|(index, candidate)| {
            let center_scores: Vec<(Strategy, u32)> =
                per_strategy.iter().map(|(strategy, scores)| (*strategy, scores[index])).collect();
            (candidate.id().to_string(), model.combine(&center_scores, weights))
        })
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked
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
}

/// A.6: the combined score of the given per-strategy scores under the default weights and the
/// weighted sum. An id given twice counts twice.
pub fn combine_algorithm_scores(algorithm_ids: &[String], algorithm_scores: &[i64]) -> Result<u32, ScoreError> {
    if algorithm_ids.len() != algorithm_scores.len() {
        return Err(ScoreError::LengthMismatch { ids: algorithm_ids.len(), scores: algorithm_scores.len() });
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

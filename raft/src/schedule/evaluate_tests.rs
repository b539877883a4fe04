//! The weighted sum, ranking and the A.6 computation, on examples and as properties.

use proptest::prelude::*;

use super::*;
use crate::schedule::fixtures::{arb_job, arb_snapshot_and_reordering, candidate, gpu_job};
use crate::schedule::strategy::Strategy;

fn ids(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[test]
fn default_weights_cover_every_strategy_and_sum_to_100() {
    let weights = Weights::default();
    assert!(Strategy::ALL.iter().all(|s| weights.get(*s) > 0));
    assert_eq!(weights.iter().map(|(_, w)| w).sum::<u32>(), 100);
}

#[test]
fn weighted_sum_divides_by_the_weights_present_and_rounds() {
    let scores = [(Strategy::LeastWorkload, 100), (Strategy::LowestPrice, 0)];
    // (20·100 + 10·0) / 30 = 66.7
    assert_eq!(WeightedSum.combine(&scores, &Weights::default()), 67);
    assert_eq!(WeightedSum.combine(&scores, &Weights::only(Strategy::HighestSecurity)), 0);
    assert_eq!(WeightedSum.combine(&[(Strategy::LowestPrice, 500)], &Weights::default()), 100);
    assert_eq!(WeightedSum.combine(&[], &Weights::default()), 0);
}

#[test]
fn rank_puts_the_best_first_and_breaks_ties_by_center_id() {
    let priced = |id: &str, price: i64| {
        let mut c = candidate(id);
        c.price = price;
        c
    };
    let snapshot = Snapshot::new(vec![priced("b", 1), priced("c", 9), priced("a", 1)]);
    let ranked = rank(&WeightedSum, &Weights::only(Strategy::LowestPrice), &gpu_job(), &snapshot);
    assert_eq!(ranked, vec![("a".to_string(), 100), ("b".to_string(), 100), ("c".to_string(), 0)]);
}

#[test]
fn algorithm_scores_combine_with_the_default_weights() {
    assert_eq!(combine_algorithm_scores(&ids(&["least_workload", "lowest_price"]), &[100, 0]), Ok(67));
    assert_eq!(combine_algorithm_scores(&[], &[]), Err(ScoreError::NoAlgorithm));
    assert_eq!(
        combine_algorithm_scores(&ids(&["lowest_price", "least_workload", "lowest_price"]), &[1, 2, 3]),
        Err(ScoreError::DuplicateAlgorithm("lowest_price".into()))
    );
    assert_eq!(
        combine_algorithm_scores(&ids(&["least_workload"]), &[1, 2]),
        Err(ScoreError::LengthMismatch { ids: 1, scores: 2 })
    );
    assert_eq!(combine_algorithm_scores(&ids(&["fastest"]), &[5]), Err(ScoreError::UnknownAlgorithm("fastest".into())));
    assert_eq!(combine_algorithm_scores(&ids(&["lowest_price"]), &[101]), Err(ScoreError::ScoreOutOfRange(101)));
    assert_eq!(combine_algorithm_scores(&ids(&["lowest_price"]), &[-1]), Err(ScoreError::ScoreOutOfRange(-1)));
}

fn arb_strategy() -> impl proptest::strategy::Strategy<Value = Strategy> {
    prop::sample::select(Strategy::ALL.to_vec())
}

proptest! {
    #[test]
    fn weighted_sum_stays_within_0_to_100(
        scores in prop::collection::vec((arb_strategy(), 0u32..=100), 0..12),
        weights in prop::collection::btree_map(arb_strategy(), 0u32..1_000_000, 0..8),
    ) {
        let total = WeightedSum.combine(&scores, &Weights::from_pairs(weights));
        prop_assert!(total <= 100);
        let (min, max) = (scores.iter().map(|s| s.1).min(), scores.iter().map(|s| s.1).max());
        if let (Some(min), Some(max), true) = (min, max, total > 0) {
            prop_assert!(min <= total && total <= max, "{} not within {}..={}", total, min, max);
        }
    }

    #[test]
    fn rank_is_sorted_complete_deterministic_and_order_free(
        (snapshot, reordered) in arb_snapshot_and_reordering(),
        job in arb_job(),
    ) {
        let weights = Weights::default();
        let ranked = rank(&WeightedSum, &weights, &job, &snapshot);
        prop_assert_eq!(ranked.len(), snapshot.candidates.len());
        prop_assert!(ranked.windows(2).all(|w| w[0].1 > w[1].1 || (w[0].1 == w[1].1 && w[0].0 < w[1].0)));
        prop_assert!(ranked.iter().all(|(_, total)| *total <= 100));
        prop_assert_eq!(&ranked, &rank(&WeightedSum, &weights, &job, &snapshot));
        prop_assert_eq!(&ranked, &rank(&WeightedSum, &weights, &job, &reordered));
    }

    #[test]
    fn valid_algorithm_scores_always_combine(pairs in prop::collection::btree_map(arb_strategy(), 0i64..=100, 1..10)) {
        let ids: Vec<String> = pairs.keys().map(|s| s.id().to_string()).collect();
        let scores: Vec<i64> = pairs.values().copied().collect();
        let total = combine_algorithm_scores(&ids, &scores);
        prop_assert!(matches!(total, Ok(t) if t <= 100), "{:?}", total);
    }
}

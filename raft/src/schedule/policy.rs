//! Policy modes (§5 f 1–8) as weight profiles. A mode's own semantics — manual pins, FCFS
//! order, data that must not move, QoS bounds — live in [`crate::schedule::filter`] and
//! [`crate::schedule::solve`](fn@crate::schedule::solve); here is only how much each strategy counts under it, and how a
//! job's own weights override that.

use jcs_api::model::{PolicyMode, SchedulingOptions};

use crate::schedule::evaluate::Weights;
use crate::schedule::strategy::Strategy;

/// The weight profile of a mode. Single-factor modes give their factor 80 and keep a little load
/// and capacity, so that among equally cheap (green …) centers the emptier one wins.
pub fn profile(mode: PolicyMode) -> Weights {
    use Strategy::*;
    let pairs: &[(Strategy, u32)] = match mode {
        PolicyMode::Balanced | PolicyMode::Manual | PolicyMode::Fcfs => return Weights::default(),
        PolicyMode::Load => &[(LeastWorkload, 40), (MostFreeCapacity, 30), (LoadFairness, 30)],
        PolicyMode::Energy => &[(LowestEnergy, 80), (LeastWorkload, 10), (MostFreeCapacity, 10)],
        PolicyMode::Price => &[(LowestPrice, 80), (LeastWorkload, 10), (MostFreeCapacity, 10)],
        PolicyMode::Network => &[(NetworkQuality, 50), (DataAffinity, 30), (LeastWorkload, 10), (MostFreeCapacity, 10)],
        PolicyMode::Data => &[
            (DataAffinity, 50),
            (LeastWorkload, 15),
            (MostFreeCapacity, 15),
            (HighestPerformance, 10),
            (LowestEnergy, 5),
            (LowestPrice, 5),
        ],
        PolicyMode::Qos => {
            &[(NetworkQuality, 40), (HighestPerformance, 40), (LeastWorkload, 10), (MostFreeCapacity, 10)]
        }
    };
    Weights::from_pairs(pairs.iter().copied())
}

/// The mode and weights a job is scheduled under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: PolicyMode,
    pub weights: Weights,
}

/// The job's mode (or the operator's default) with the job's weight overrides applied.
/// Fails on a weight for an unknown strategy, naming it.
pub fn resolve(options: &SchedulingOptions, default_mode: PolicyMode) -> Result<Policy, String> {
    let mode = options.policy.unwrap_or(default_mode);
    let mut weights = profile(mode);
    for (id, weight) in &options.weights {
        let strategy = Strategy::from_id(id).ok_or_else(|| format!("weights: unknown algorithmId '{id}'"))?;
        weights = weights.with(strategy, *weight);
    }
    Ok(Policy { mode, weights })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_has_a_profile_with_some_weight() {
        for mode in PolicyMode::ALL {
            assert!(profile(mode).iter().any(|(_, w)| w > 0), "{mode:?}");
        }
        assert_eq!(profile(PolicyMode::Price).get(Strategy::LowestPrice), 80);
    }

    #[test]
    fn job_weights_override_the_profile_and_unknown_ids_are_refused() {
        let options = SchedulingOptions {
            policy: Some(PolicyMode::Price),
            weights: [("lowest_energy".to_string(), 7), ("lowest_price".to_string(), 0)].into(),
            ..Default::default()
        };
        let policy = resolve(&options, PolicyMode::Balanced).unwrap();
        assert_eq!(policy.mode, PolicyMode::Price);
        assert_eq!(policy.weights.get(Strategy::LowestEnergy), 7);
        assert_eq!(policy.weights.get(Strategy::LowestPrice), 0);
        let bad = SchedulingOptions { weights: [("fastest".to_string(), 1)].into(), ..Default::default() };
        assert_eq!(resolve(&bad, PolicyMode::Load).unwrap_err(), "weights: unknown algorithmId 'fastest'");
        assert_eq!(resolve(&SchedulingOptions::default(), PolicyMode::Load).unwrap().mode, PolicyMode::Load);
    }
}

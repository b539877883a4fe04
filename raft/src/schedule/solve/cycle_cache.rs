//! The per-cycle caches of [`super::solve`]: capacity and workload by center position, and per
//! job class the verdict of the filters that do not read capacity, the raw factors of the
//! strategies that read neither capacity nor workload, and their normalized scores per
//! candidate set. Everything here lives for one cycle.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use jcs_api::model::Rejection;

use super::board::Board;
use crate::schedule::filter::{shortfall, Shortfall};
use crate::schedule::nodes::{NodeHold, NodePool};
use crate::schedule::problem::{Capacity, Catalog};
use crate::schedule::strategy::{normalize, Strategy};

/// Capacity and workload left at each center as the cycle goes, by the center's position in
/// the catalog (id order); for centers that report their nodes, what each node has left.
pub(super) struct Ledger {
    pub(super) free: Vec<Capacity>,
    pub(super) load: Vec<i64>,
    pub(super) nodes: Vec<Option<NodePool>>,
    /// The position of every take and give-back, in order: a [`super::board::Board`] re-reads
    /// the centers changed since it was last used.
    pub(super) changed: Vec<usize>,
}

/// One replica's deduction, for [`Ledger::give_back`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Taken {
    center: usize,
    demand: Capacity,
    node: Option<NodeHold>,
}

impl Ledger {
    /// The ledger at the cycle's start: reported free capacity less in flight, and less the
    /// `assumed` placements of a batch not yet applied (centers gone since are skipped).
    pub(super) fn new(catalog: &Catalog, positions: &HashMap<&str, usize>, assumed: &[(String, Capacity)]) -> Ledger {
        let mut ledger = Ledger { free: Vec::new(), load: Vec::new(), nodes: Vec::new(), changed: Vec::new() };
        for state in catalog.centers.values() {
            let mut capacity = state.metrics.as_ref().map(Capacity::free_in).unwrap_or_default();
            capacity.sub(&state.in_flight.capacity);
            let running = state.metrics.as_ref().map_or(0, |m| m.running_task_num);
            ledger.free.push(capacity);
            ledger.load.push(running.saturating_add(state.in_flight.replicas));
            ledger.nodes.push(state.nodes.clone());
        }
        for (center, demand) in assumed {
            if let Some(&position) = positions.get(center.as_str()) {
                ledger.take(position, demand);
            }
        }
        ledger
    }

    /// Why one more replica of `demand` does not fit at `center`, if it does not.
    pub(super) fn shortfall(&self, center: usize, demand: &Capacity) -> Option<Shortfall<'_>> {
        shortfall(&self.free[center], self.nodes[center].as_ref(), demand)
    }

    pub(super) fn take(&mut self, center: usize, demand: &Capacity) -> Taken {
        self.free[center].sub(demand);
        self.load[center] += 1;
        self.changed.push(center);
        let node = self.nodes[center].as_mut().and_then(|pool| pool.hold(demand));
        Taken { center, demand: *demand, node }
    }

    /// Undoes a [`Ledger::take`]; takes are given back last first.
    pub(super) fn give_back(&mut self, taken: &Taken) {
        self.free[taken.center].add(&taken.demand);
        self.load[taken.center] -= 1;
        self.changed.push(taken.center);
        if let (Some(pool), Some(hold)) = (self.nodes[taken.center].as_mut(), taken.node) {
            pool.undo(hold);
        }
    }
}

/// The strategies whose raw factor does not change within a cycle for a given job class: they
/// read only the center, its report, the spec, the job's data, duration and user region (and the
/// cycle's links between regions).
pub(super) const FIXED_STRATEGIES: [Strategy; 6] = [
    Strategy::DataAffinity,
    Strategy::LowestPrice,
    Strategy::LowestEnergy,
    Strategy::HighestPerformance,
    Strategy::HighestSecurity,
    Strategy::NetworkQuality,
];

/// Everything about a task that decides which centers pass the filters other than capacity, and
/// the raw factors of [`FIXED_STRATEGIES`]: tasks of one class share one [`Class`] per cycle.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct ClassKey {
    pub(super) spec: String,
    pub(super) image_name: String,
    pub(super) security_grade: i32,
    pub(super) dataset: Option<String>,
    /// `(max_latency_ms bits, deadline_secs)`.
    pub(super) qos: Option<(Option<u64>, Option<u64>)>,
    pub(super) duration_bits: u64,
    pub(super) data_mode: bool,
    /// The job's user region: paths and QoS latency are judged from it.
    pub(super) origin: Option<String>,
}

/// A center the spec lists, as a class sees it for the whole cycle.
#[derive(Debug)]
pub(super) enum Verdict {
    /// Not in the catalog: not considered.
    Unknown,
    /// Rejected by a filter that does not depend on capacity.
    Rejected(Rejection),
    /// Passes every filter but capacity; the raw factors of [`FIXED_STRATEGIES`] by the
    /// strategy's position in [`Strategy::ALL`].
    Open { position: usize, fixed: [Option<f64>; 9] },
}

/// One job class's view of the cycle: a verdict per center of the spec's list, in its order.
pub(super) struct Class {
    pub(super) verdicts: Vec<Verdict>,
    /// The fixed strategies' scores over the last few candidate sets and weights seen.
    pub(super) fixed_scores: RefCell<Vec<Rc<FixedScores>>>,
    /// The boards of the class's replicas with no pin and no sibling, one per weight profile
    /// (the last [`FIXED_SCORE_SLOTS`] seen).
    pub(super) boards: RefCell<Vec<Board>>,
}

/// Fixed strategies normalized over one candidate set: they stay valid until a center of the
/// set runs out of capacity (min-max normalization reads the whole set).
pub(super) struct FixedScores {
    /// The weighted fixed strategies, in [`Strategy::ALL`] order.
    pub(super) weights: Vec<(Strategy, u32)>,
    /// The candidate set, by center position, in the spec's order.
    pub(super) positions: Vec<usize>,
    /// Per strategy of `weights`, per candidate.
    pub(super) normalized: Vec<Vec<u32>>,
    /// Per candidate, the weighted sum of these strategies' scores.
    pub(super) partial: Vec<u64>,
}

impl FixedScores {
    /// Scores over no candidates.
    pub(super) fn none(weights: Vec<(Strategy, u32)>) -> FixedScores {
        FixedScores { normalized: vec![Vec::new(); weights.len()], weights, positions: Vec::new(), partial: Vec::new() }
    }
}

/// How many classes a cycle keeps at once (each holds a verdict per center of its spec), so a
/// queue of all-different jobs cannot grow the cache without bound (small in tests, so that the
/// property tests flush it too).
pub(super) const CLASS_LIMIT: usize = if cfg!(test) { 3 } else { 64 };

/// How many candidate sets and weight profiles a class keeps scores for.
pub(super) const FIXED_SCORE_SLOTS: usize = 4;

/// The factors of a center not open to a class: none.
const NO_FACTORS: [Option<f64>; 9] = [None; 9];

impl Class {
    /// The raw factors of [`FIXED_STRATEGIES`] at the spec's `index`-th center (none unless it
    /// is open to the class).
    pub(super) fn factors(&self, index: usize) -> &[Option<f64>; 9] {
        match self.verdicts.get(index) {
            Some(Verdict::Open { fixed, .. }) => fixed,
            _ => &NO_FACTORS,
        }
    }

    /// The fixed strategies' scores over `candidates` (computed again only when the candidate
    /// set or the weights changed).
    pub(super) fn fixed_scores(
        &self,
        weights: &[(Strategy, u32)],
        candidates: &[(usize, &[Option<f64>; 9])],
    ) -> Rc<FixedScores> {
        let mut cache = self.fixed_scores.borrow_mut();
        let same_set = |f: &FixedScores| {
            f.positions.len() == candidates.len() && f.positions.iter().zip(candidates).all(|(p, c)| *p == c.0)
        };
        if let Some(found) = cache.iter().find(|f| f.weights == weights && same_set(f)) {
            return found.clone();
        }
        let normalized: Vec<Vec<u32>> = weights
            .iter()
            .map(|&(strategy, _)| {
                let slot = strategy_slot(strategy);
                let raw: Vec<Option<f64>> = candidates.iter().map(|(_, fixed)| fixed[slot]).collect();
                normalize(&raw, strategy.higher_is_better())
            })
            .collect();
        let partial = (0..candidates.len())
            .map(|i| weights.iter().zip(&normalized).map(|((_, w), n)| u64::from(*w) * u64::from(n[i].min(100))).sum())
            .collect();
        let positions = candidates.iter().map(|c| c.0).collect();
        let scores = Rc::new(FixedScores { weights: weights.to_vec(), positions, normalized, partial });
        cache.retain(|f| f.weights != weights);
        if cache.len() >= FIXED_SCORE_SLOTS {
            cache.remove(0);
        }
        cache.push(scores.clone());
        scores
    }
}

/// A strategy's position in [`Strategy::ALL`].
pub(super) fn strategy_slot(strategy: Strategy) -> usize {
    Strategy::ALL.iter().position(|s| *s == strategy).unwrap_or(0)
}

//! One replica's filter-and-score over its class's candidates, kept as a board that the class's
//! later replicas bring up to date instead of scoring every candidate afresh.
//!
//! Between two replicas of a cycle only the centers the cycle took capacity from (or gave it
//! back to) change: [`Ledger::changed`] lists them. A replica with no pin and no sibling placed
//! before it starts from the board its class last used under the same weights, and re-reads
//! the workload and free capacity of those centers alone. Min-max normalization reads only a
//! candidate's own value and the range of all values, so a strategy scores every candidate
//! again only when its range moved, and otherwise scores the changed ones. A change to the
//! candidate set, or at a center already short of capacity (whose rejection quotes what is
//! free), builds the board again. Building is the straightforward computation: what a board
//! decides is exactly what a board built for that replica decides (a property test holds
//! solving through boards equal to the per-replica reference).
//!
//! [`Ledger::changed`]: super::cycle_cache::Ledger::changed

use std::rc::Rc;

use jcs_api::model::{CenterScore, RejectCode, ReplicaExplain, ScoreTable, EXPLAIN_LIMIT};

use super::cycle_cache::{strategy_slot, Class, FixedScores, Verdict};
use super::{skipped_counts, Cycle, ReplicaInput};
use crate::schedule::factors::{closeness_to, demanded_kinds, replicas_fitting, LoadSums};
use crate::schedule::filter::capacity_rejection;
use crate::schedule::problem::SpecInfo;
use crate::schedule::snapshot::{DeviceKind, Location};
use crate::schedule::strategy::{LoadRange, MinMax, Strategy};

/// A replica's filter outcome and every candidate's scores under one weight profile.
pub(super) struct Board {
    /// The weighted strategies, in [`Strategy::ALL`] order.
    pub(super) weights: Vec<(Strategy, u32)>,
    /// The weighted strategies that read the ledger, scored here rather than by the class.
    fresh: Vec<(Strategy, u32)>,
    total_weight: u64,
    /// The filters' counts and first rejections, and how many centers passed.
    filtered: ReplicaExplain,
    /// Per candidate: its center's position and its verdict's index in the class, in the
    /// spec's order.
    candidates: Vec<(usize, usize)>,
    /// Per center position: where the center stands.
    standing: Vec<Standing>,
    /// Whether a later replica may bring this board up to date (no pin, no sibling, no center
    /// listed twice, workloads small enough for exact running sums).
    reusable: bool,
    fixed: Rc<FixedScores>,
    /// Per candidate: its workload, which (a) and (h) are scored by.
    loads: Vec<i64>,
    load_range: Option<LoadRange>,
    load_scores: Vec<u32>,
    /// The workloads' sums, for (h)'s raw variance (when (h) is weighted).
    sums: Option<LoadSums>,
    /// The fresh strategies with a real-valued factor.
    columns: Vec<Column>,
    demanded: Vec<(DeviceKind, f64)>,
    /// Per candidate: the weighted total.
    totals: Vec<u32>,
    /// How much of [`super::cycle_cache::Ledger::changed`] this board has seen.
    synced: usize,
}

/// Where a center stands on a board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// Not considered, or rejected by a filter that does not read capacity.
    Elsewhere,
    /// The candidate at this index.
    Candidate(u32),
    /// Passes every filter but capacity.
    Short,
}

/// A fresh strategy whose factor is real-valued: free capacity, and affinity to the task's
/// replicas placed before.
struct Column {
    strategy: Strategy,
    values: Vec<Option<f64>>,
    range: Option<MinMax>,
    scores: Vec<u32>,
}

impl Column {
    fn new(strategy: Strategy, values: Vec<Option<f64>>) -> Column {
        let mut column = Column { strategy, range: MinMax::of(&values), scores: vec![0; values.len()], values };
        column.rescore_all();
        column
    }

    fn rescore(&mut self, i: usize) {
        let higher_is_better = self.strategy.higher_is_better();
        self.scores[i] = self.range.map_or(0, |range| range.score(self.values[i], higher_is_better));
    }

    fn rescore_all(&mut self) {
        (0..self.values.len()).for_each(|i| self.rescore(i));
    }

    /// Sets one candidate's value; `true` when the range moved (every score must be redone).
    fn set(&mut self, i: usize, value: Option<f64>) -> bool {
        let old = std::mem::replace(&mut self.values[i], value);
        if self.range.is_some_and(|range| range.holds_after(old, value)) {
            return false;
        }
        let range = MinMax::of(&self.values);
        std::mem::replace(&mut self.range, range) != range
    }
}

/// Workloads this small keep the running sums of (h) exact (see [`LoadSums::replaced`]).
fn small(load: i64) -> bool {
    load.unsigned_abs() < 1 << 31
}

/// Whether a strategy's factor reads the ledger (so the class cannot score it once per cycle);
/// affinity does once the task has replicas placed.
fn reads_ledger(strategy: Strategy, alone: bool) -> bool {
    matches!(strategy, Strategy::LeastWorkload | Strategy::MostFreeCapacity | Strategy::LoadFairness)
        || (strategy == Strategy::DataAffinity && !alone)
}

/// (b) at `position`: the replicas of the spec that fit, counting this task's replicas placed
/// there as free (strategies see capacity as it was before them).
fn fit_at(cycle: &Cycle, spec: &SpecInfo, demanded: &[(DeviceKind, f64)], position: usize) -> f64 {
    let siblings = cycle.siblings[position];
    let mut free = cycle.ledger.free[position];
    (0..siblings).for_each(|_| free.add(&spec.capacity));
    let room = cycle.ledger.nodes[position].as_ref().and_then(|nodes| nodes.room(&spec.capacity));
    replicas_fitting(demanded, |kind| free.amount(kind), f64::from(siblings), room)
}

impl Board {
    /// Filters and scores one replica over the class's cached verdicts and fixed factors,
    /// reading free capacity and workload from the ledger.
    pub(super) fn build(cycle: &Cycle, class: &Class, input: &ReplicaInput, weights: Vec<(Strategy, u32)>) -> Board {
        let spec = input.spec;
        let pin = input.task.pinned_center(input.replica);
        let considered = match pin {
            Some(pin) => spec.offered.iter().filter(|c| *c == pin).count(),
            None => spec.offered.len(),
        };
        let mut filtered = skipped_counts(cycle, input, considered);
        let mut counts: Vec<(RejectCode, u32)> = Vec::new();
        let mut candidates = Vec::new();
        let mut standing = vec![Standing::Elsewhere; cycle.centers.len()];
        let alone = input.sibling_positions.is_empty();
        let mut reusable = pin.is_none() && alone;
        for (index, (id, verdict)) in spec.offered.iter().zip(&class.verdicts).enumerate() {
            if pin.is_some_and(|pin| pin != id) {
                continue;
            }
            let code = match verdict {
                Verdict::Unknown => continue,
                Verdict::Rejected(rejection) => {
                    if filtered.rejections.len() < EXPLAIN_LIMIT {
                        filtered.rejections.push(rejection.clone());
                    }
                    rejection.code
                }
                Verdict::Open { position, .. } => {
                    let position = *position;
                    reusable &= standing[position] == Standing::Elsewhere;
                    match cycle.ledger.shortfall(position, &spec.capacity) {
                        None => {
                            standing[position] = Standing::Candidate(candidates.len() as u32);
                            candidates.push((position, index));
                            continue;
                        }
                        Some(shortfall) => {
                            standing[position] = Standing::Short;
                            let code = shortfall.code();
                            if filtered.rejections.len() < EXPLAIN_LIMIT {
                                filtered.rejections.push(capacity_rejection(cycle.centers[position], shortfall));
                            }
                            code
                        }
                    }
                }
            };
            match counts.iter_mut().find(|(c, _)| *c == code) {
                Some((_, n)) => *n += 1,
                None => counts.push((code, 1)),
            }
        }
        for (code, n) in counts {
            *filtered.rejected_count.entry(code.as_str().to_string()).or_default() += n;
        }
        filtered.feasible = candidates.len() as u32;

        // Strategies count this task's own earlier replicas as siblings, so they see capacity
        // and load as they were before them.
        let loads: Vec<i64> = candidates
            .iter()
            .map(|&(p, _)| {
                let siblings = i64::from(cycle.siblings[p]);
                (cycle.ledger.load[p] - siblings).saturating_add(siblings)
            })
            .collect();
        reusable &= loads.iter().all(|load| small(*load));
        let load_range = LoadRange::of(loads.iter().copied());
        let load_scores = loads.iter().map(|load| load_range.map_or(0, |range| range.score(*load))).collect();
        let (fresh, fixed_weights): (Vec<_>, Vec<_>) = weights.iter().partition(|(s, _)| reads_ledger(*s, alone));
        let sums = fresh
            .iter()
            .any(|(s, _)| *s == Strategy::LoadFairness)
            .then(|| LoadSums::of(loads.iter().map(|load| i128::from(*load))));
        let demanded = demanded_kinds(&spec.demand);
        let columns = fresh
            .iter()
            .filter_map(|&(strategy, _)| match strategy {
                Strategy::MostFreeCapacity => {
                    let values = candidates.iter().map(|&(p, _)| Some(fit_at(cycle, spec, &demanded, p))).collect();
                    Some(Column::new(strategy, values))
                }
                Strategy::DataAffinity => {
                    let placed: Vec<(&str, Location)> = input
                        .sibling_positions
                        .iter()
                        .map(|&s| (cycle.id(s), Location::of(&cycle.centers[s].center)))
                        .collect();
                    let slot = strategy_slot(strategy);
                    let values = candidates
                        .iter()
                        .map(|&(p, index)| {
                            let center = &cycle.centers[p].center;
                            let sum: f64 = placed.iter().map(|(id, at)| closeness_to(center, id, Some(at))).sum();
                            class.factors(index)[slot].map(|data_part| data_part + sum / placed.len() as f64)
                        })
                        .collect();
                    Some(Column::new(strategy, values))
                }
                _ => None,
            })
            .collect();
        let with_factors: Vec<_> = candidates.iter().map(|&(p, index)| (p, class.factors(index))).collect();
        let fixed = match with_factors.is_empty() {
            true => Rc::new(FixedScores::none(fixed_weights)),
            false => class.fixed_scores(&fixed_weights, &with_factors),
        };
        let mut board = Board {
            total_weight: weights.iter().map(|(_, w)| u64::from(*w)).sum(),
            weights,
            fresh,
            filtered,
            totals: vec![0; candidates.len()],
            candidates,
            standing,
            reusable,
            fixed,
            loads,
            load_range,
            load_scores,
            sums,
            columns,
            demanded,
            synced: cycle.ledger.changed.len(),
        };
        (0..board.totals.len()).for_each(|i| board.totals[i] = board.total(i));
        board
    }

    /// Brings a reusable board up to date with the ledger; `false` when it must be built again.
    pub(super) fn sync(&mut self, cycle: &Cycle, spec: &SpecInfo) -> bool {
        let changed = &cycle.ledger.changed[self.synced..];
        self.synced = cycle.ledger.changed.len();
        if !self.reusable || changed.len() > self.candidates.len() / 4 + EXPLAIN_LIMIT {
            return false;
        }
        let mut touched = Vec::with_capacity(changed.len());
        let (mut loads_moved, mut columns_moved) = (false, vec![false; self.columns.len()]);
        for &position in changed {
            let i = match self.standing[position] {
                Standing::Elsewhere => continue,
                Standing::Short => return false,
                Standing::Candidate(i) => i as usize,
            };
            let load = cycle.ledger.load[position];
            if cycle.ledger.shortfall(position, &spec.capacity).is_some() || !small(load) {
                return false;
            }
            let old = std::mem::replace(&mut self.loads[i], load);
            if let Some(sums) = self.sums.as_mut() {
                *sums = sums.replaced(old, load);
            }
            if !self.load_range.is_some_and(|range| range.holds_after(old, load)) {
                let range = LoadRange::of(self.loads.iter().copied());
                loads_moved |= std::mem::replace(&mut self.load_range, range) != range;
            }
            for (column, moved) in self.columns.iter_mut().zip(&mut columns_moved) {
                if column.strategy != Strategy::MostFreeCapacity {
                    return false;
                }
                *moved |= column.set(i, Some(fit_at(cycle, spec, &self.demanded, position)));
            }
            touched.push(i);
        }
        let everything = loads_moved || columns_moved.contains(&true);
        let all: Vec<usize> = if everything { (0..self.candidates.len()).collect() } else { Vec::new() };
        for &i in if loads_moved { &all } else { &touched } {
            self.load_scores[i] = self.load_range.map_or(0, |range| range.score(self.loads[i]));
        }
        for (column, moved) in self.columns.iter_mut().zip(&columns_moved) {
            match moved {
                true => column.rescore_all(),
                false => touched.iter().for_each(|&i| column.rescore(i)),
            }
        }
        for &i in if everything { &all } else { &touched } {
            self.totals[i] = self.total(i);
        }
        true
    }

    /// The replica's explanation and winner: the best [`EXPLAIN_LIMIT`] candidates by total,
    /// equal totals in id (position) order.
    pub(super) fn decide(&self, cycle: &Cycle, class: &Class, replica: usize) -> (ReplicaExplain, Option<usize>) {
        let mut explain = self.filtered.clone();
        explain.replica = replica as u32;
        let position = |i: usize| self.candidates[i].0;
        let better = |a: (u32, usize), b: (u32, usize)| a.0 > b.0 || (a.0 == b.0 && position(a.1) < position(b.1));
        let mut best: Vec<(u32, usize)> = Vec::with_capacity(EXPLAIN_LIMIT + 1);
        for (i, &total) in self.totals.iter().enumerate() {
            if best.len() == EXPLAIN_LIMIT && !better((total, i), best[EXPLAIN_LIMIT - 1]) {
                continue;
            }
            let at = best.iter().position(|&b| better((total, i), b)).unwrap_or(best.len());
            best.insert(at, (total, i));
            best.truncate(EXPLAIN_LIMIT);
        }
        let Some(&(_, first)) = best.first() else { return (explain, None) };
        let weights: Vec<u32> = self.weights.iter().map(|&(_, weight)| weight).collect();
        let centers = best
            .iter()
            .map(|&(total, i)| {
                let columns = self.weights.iter().map(|&(strategy, _)| self.cell(class, strategy, i));
                CenterScore::new(cycle.id(position(i)), total, columns, &weights)
            })
            .collect();
        let algorithms = self.weights.iter().map(|&(strategy, _)| strategy.id().to_string()).collect();
        explain.scores = ScoreTable { algorithms, weights, centers };
        explain.winner = Some(cycle.id(position(first)).to_string());
        (explain, Some(position(first)))
    }

    /// One strategy's raw factor and score at candidate `i`.
    fn cell(&self, class: &Class, strategy: Strategy, i: usize) -> (Option<f64>, u32) {
        let load = self.loads[i];
        match strategy {
            Strategy::LeastWorkload => (Some(load as f64), self.load_scores[i]),
            Strategy::LoadFairness => {
                (self.sums.map(|sums| sums.negative_variance_after(i128::from(load))), self.load_scores[i])
            }
            _ => match self.columns.iter().find(|c| c.strategy == strategy) {
                Some(column) => (column.values[i], column.scores[i]),
                None => {
                    let k = self.fixed.weights.iter().position(|f| f.0 == strategy).unwrap_or(0);
                    (class.factors(self.candidates[i].1)[strategy_slot(strategy)], self.fixed.normalized[k][i])
                }
            },
        }
    }

    /// Candidate `i`'s weighted total, 0..=100.
    fn total(&self, i: usize) -> u32 {
        let total_weight = self.total_weight;
        if total_weight == 0 {
            return 0;
        }
        let score = |strategy: Strategy| match strategy {
            Strategy::LeastWorkload | Strategy::LoadFairness => self.load_scores[i],
            _ => self.columns.iter().find(|c| c.strategy == strategy).map_or(0, |c| c.scores[i]),
        };
        let fresh: u64 = self.fresh.iter().map(|&(s, w)| u64::from(w) * u64::from(score(s).min(100))).sum();
        let sum = self.fixed.partial[i] + fresh;
        u32::try_from((sum + total_weight / 2) / total_weight).unwrap_or(100)
    }
}

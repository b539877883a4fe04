//! The raw factor behind each strategy of §6.6.2, one value per candidate in snapshot order, in
//! the factor's own unit (tasks, joules, price, …) so an explanation can show it. `None` means
//! the factor cannot be judged for that candidate (no monitoring report, data that cannot reach
//! it); such a candidate scores 0 for that strategy.

use jcs_api::model::Center;
use jcs_api::quantity::ResourceAmounts;

use crate::schedule::links::{copy_secs, path_to};
use crate::schedule::snapshot::{CandidateCenter, DeviceKind, JobContext, Location, Snapshot};

/// Tasks at the candidate: its last report plus this job's replicas already placed there.
fn workload(job: &JobContext, candidate: &CandidateCenter) -> Option<i64> {
    let siblings = i64::try_from(job.siblings_at(candidate.id())).unwrap_or(i64::MAX);
    candidate.running_tasks().map(|running| running.saturating_add(siblings))
}

/// (a) Tasks running at each candidate; lower is better.
pub fn workload_per_candidate(job: &JobContext, snapshot: &Snapshot) -> Vec<Option<f64>> {
    workloads(job, snapshot).into_iter().map(|n| n.map(|n| n as f64)).collect()
}

/// The workload of each candidate, as the integers (a) and (h) are normalized over.
pub fn workloads(job: &JobContext, snapshot: &Snapshot) -> Vec<Option<i64>> {
    snapshot.candidates.iter().map(|c| workload(job, c)).collect()
}

/// (b) How many more replicas fit at each candidate: the smallest ratio of free capacity (less
/// this job's replicas already placed there) to demand over the demanded kinds, and no more
/// than its nodes hold when it reports them. A demand of nothing fits everywhere equally.
pub fn replicas_that_fit(job: &JobContext, snapshot: &Snapshot) -> Vec<Option<f64>> {
    let demanded = demanded_kinds(&job.demand);
    snapshot
        .candidates
        .iter()
        .map(|c| {
            c.metrics.as_ref()?;
            let taken = job.siblings_at(c.id()) as f64;
            Some(replicas_fitting(&demanded, |kind| kind.amount(&c.free), taken, c.node_room))
        })
        .collect()
}

/// The device kinds `demand` asks for, with the amounts.
pub fn demanded_kinds(demand: &ResourceAmounts) -> Vec<(DeviceKind, f64)> {
    DeviceKind::ALL.into_iter().map(|kind| (kind, kind.amount(demand))).filter(|(_, amount)| *amount > 0.0).collect()
}

/// (b) for one candidate: how many replicas of `demanded` fit in what `free` says is free, less
/// the `taken` already placed there, and no more than `node_room` when its nodes are known.
pub fn replicas_fitting(
    demanded: &[(DeviceKind, f64)],
    free: impl Fn(DeviceKind) -> f64,
    taken: f64,
    node_room: Option<f64>,
) -> f64 {
    let fits = demanded.iter().map(|(kind, amount)| free(*kind) / amount - taken);
    let fit = fits.fold(None, |least: Option<f64>, fit| Some(least.map_or(fit, |l| l.min(fit)))).unwrap_or(0.0);
    node_room.map_or(fit, |room| fit.min(room))
}

/// How close a candidate is to another center: 3 the same center, 2 the same site, 1 the same
/// region, 0 apart (or the other center's location is unknown).
fn closeness(snapshot: &Snapshot, candidate: &CandidateCenter, other_id: &str) -> f64 {
    closeness_to(&candidate.center, other_id, snapshot.locations.get(other_id))
}

/// [`closeness`] of `center` to the center `other_id`, located at `other` when known.
pub fn closeness_to(center: &Center, other_id: &str, other: Option<&Location>) -> f64 {
    if center.ai_center_id == other_id {
        return 3.0;
    }
    let Some(other) = other else { return 0.0 };
    let (site, region) = (&center.network.site, &center.region);
    if !site.is_empty() && *site == other.site {
        2.0
    } else if !region.is_empty() && *region == other.region {
        1.0
    } else {
        0.0
    }
}

/// (c) Affinity: closeness to the nearest copy of the job's data plus the mean closeness to the
/// job's replicas already placed (each part 0..=3); higher is better.
pub fn affinity(job: &JobContext, snapshot: &Snapshot) -> Vec<Option<f64>> {
    snapshot
        .candidates
        .iter()
        .map(|c| {
            let to_data = job.data.iter().flat_map(|d| &d.center_ids).map(|holder| closeness(snapshot, c, holder));
            let data_part = to_data.fold(0.0, f64::max);
            let siblings = &job.sibling_centers;
            let sibling_sum: f64 = siblings.iter().map(|s| closeness(snapshot, c, s)).sum();
            let sibling_part = if siblings.is_empty() { 0.0 } else { sibling_sum / siblings.len() as f64 };
            Some(data_part + sibling_part)
        })
        .collect()
}

/// (d) The spec's price at each candidate; lower is better.
pub fn price(snapshot: &Snapshot) -> Vec<Option<f64>> {
    snapshot.candidates.iter().map(|c| Some(c.price as f64)).collect()
}

/// Seconds to copy the job's data to the candidate ([`copy_secs`]; 0 without data).
pub fn data_copy_secs(job: &JobContext, snapshot: &Snapshot, candidate: &CandidateCenter) -> Option<f64> {
    let Some(data) = &job.data else { return Some(0.0) };
    let held_here = data.center_ids.iter().any(|holder| holder == candidate.id());
    copy_secs(data.size_mb, held_here, &snapshot.links, data.region.as_deref(), &candidate.center)
}

/// (e) Energy of one replica by formula (1), in joules: `P_static × copy time + P_exe ×
/// duration`, with `P_exe = Σ device_watts[kind] × demanded(kind)`; lower is better.
pub fn energy(job: &JobContext, snapshot: &Snapshot) -> Vec<Option<f64>> {
    snapshot
        .candidates
        .iter()
        .map(|c| {
            let copy_secs = data_copy_secs(job, snapshot, c)?;
            let power = &c.center.power;
            let exe_watts: f64 = DeviceKind::ALL
                .into_iter()
                .map(|kind| power.device_watts.get(kind.key()).copied().unwrap_or(0.0) * kind.amount(&job.demand))
                .sum();
            Some(power.static_watts * copy_secs + exe_watts * job.duration_secs)
        })
        .collect()
}

/// (f) The candidate's performance factor for the demand's dominant device kind (1.0 when
/// unset); higher is better.
pub fn performance(job: &JobContext, snapshot: &Snapshot) -> Vec<Option<f64>> {
    let kind = DeviceKind::dominant(&job.demand);
    snapshot.candidates.iter().map(|c| Some(c.center.performance.get(kind.key()).copied().unwrap_or(1.0))).collect()
}

/// (g) The stricter of declared and reported security grade; higher is better.
pub fn security_grade(snapshot: &Snapshot) -> Vec<Option<f64>> {
    snapshot.candidates.iter().map(|c| Some(f64::from(c.security_grade()))).collect()
}

/// (h) Minus the variance of workload over the reporting candidates if this replica went to
/// each one; higher (less spread) is better. Computed in integers, so candidate order cannot
/// change the result (saturating, so absurd reported counts cannot overflow).
pub fn negative_workload_variance(job: &JobContext, snapshot: &Snapshot) -> Vec<Option<f64>> {
    let loads: Vec<Option<i128>> = snapshot.candidates.iter().map(|c| workload(job, c).map(i128::from)).collect();
    let sums = LoadSums::of(loads.iter().flatten().copied());
    loads.iter().map(|load| Some(sums.negative_variance_after((*load)?))).collect()
}

/// The count, sum and sum of squares of the reporting candidates' workloads (saturating).
#[derive(Debug, Clone, Copy)]
pub struct LoadSums {
    reporting: i128,
    sum: i128,
    sum_of_squares: i128,
    /// The three in 64 bits when they fit: most workloads do, and 128-bit multiplication is
    /// a library call while this runs per candidate.
    narrow: Option<(i64, i64, i64)>,
    /// `reporting²` as a float, the variance's denominator.
    denominator: f64,
}

impl LoadSums {
    pub fn of(loads: impl Iterator<Item = i128> + Clone) -> LoadSums {
        let reporting = loads.clone().count() as i128;
        let sum = loads.clone().fold(0i128, |acc, x| acc.saturating_add(x));
        let sum_of_squares = loads.fold(0i128, |acc, x| acc.saturating_add(x.saturating_mul(x)));
        LoadSums::from_sums(reporting, sum, sum_of_squares)
    }

    fn from_sums(reporting: i128, sum: i128, sum_of_squares: i128) -> LoadSums {
        let narrow =
            (|| Some((i64::try_from(reporting).ok()?, i64::try_from(sum).ok()?, i64::try_from(sum_of_squares).ok()?)))(
            );
        LoadSums { reporting, sum, sum_of_squares, narrow, denominator: (reporting * reporting) as f64 }
    }

    /// The sums after one load changed from `old` to `new`: the same as [`LoadSums::of`] the
    /// new loads as long as no sum saturated, which loads below 2³¹ in magnitude (and fewer
    /// than 2³² of them) guarantee.
    pub fn replaced(&self, old: i64, new: i64) -> LoadSums {
        let (old, new) = (i128::from(old), i128::from(new));
        let sum = self.sum - old + new;
        LoadSums::from_sums(self.reporting, sum, self.sum_of_squares - old * old + new * new)
    }

    /// (h) for a candidate of workload `x`: minus the variance if the replica went there.
    pub fn negative_variance_after(&self, x: i128) -> f64 {
        let LoadSums { reporting, sum, sum_of_squares, narrow, denominator } = *self;
        // Placing here turns x into x + 1: Σx grows by 1, Σx² by 2x + 1. In 64 bits while
        // nothing overflows (the exact same integer, so the same float), else in 128.
        let in_64_bits = |(n, s, q): (i64, i64, i64)| {
            let x = i64::try_from(x).ok()?;
            let s = s.checked_add(1)?;
            let q = q.checked_add(x.checked_mul(2)?)?.checked_add(1)?;
            n.checked_mul(q)?.checked_sub(s.checked_mul(s)?)
        };
        if let Some(n_squared_variance) = narrow.and_then(in_64_bits) {
            return -(n_squared_variance as f64) / denominator;
        }
        let s = sum.saturating_add(1);
        let q = sum_of_squares.saturating_add(x.saturating_mul(2)).saturating_add(1);
        let n_squared_variance = reporting.saturating_mul(q).saturating_sub(s.saturating_mul(s));
        -(n_squared_variance as f64) / denominator
    }
}

/// (extension) Effective bandwidth of the path to each candidate: Mbit/s less the loss rate,
/// divided by `1 + (latency + 2 × jitter) / 10 ms`; higher is better. The path is the configured
/// link from the job's origin region to the candidate's region followed by the candidate's
/// uplink, or the uplink alone (no origin, same region, no link: see
/// [`crate::schedule::links::path_to`]). A path with no bandwidth known cannot be judged.
pub fn network_quality(job: &JobContext, snapshot: &Snapshot) -> Vec<Option<f64>> {
    let origin = job.origin.as_deref();
    snapshot.candidates.iter().map(|c| path_to(&snapshot.links, origin, &c.center).effective_mbps()).collect()
}

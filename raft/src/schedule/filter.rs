//! The filters: whether one replica may go to one center at all, before any scoring. Each
//! rejection carries a [`RejectCode`] and the numbers behind it, so that "why pending" always
//! has an answer.

use std::collections::HashSet;

use jcs_api::model::{center_status, Dataset, PolicyMode, QosTarget, RejectCode, Rejection};

use crate::schedule::links::{copy_secs, path_to};
use crate::schedule::nodes::NodePool;
use crate::schedule::problem::{Capacity, CenterState, SolverConfig, SpecInfo};
use crate::schedule::snapshot::DeviceKind;

/// What a job asks of every center, whatever the task.
#[derive(Debug, Clone)]
pub struct JobNeeds<'a> {
    pub mode: PolicyMode,
    pub security_grade: i32,
    pub dataset: Option<&'a Dataset>,
    pub qos: Option<&'a QosTarget>,
    pub duration_secs: f64,
    /// The region the job's user is in (`userRegion`): QoS latency is judged from there.
    pub origin: Option<&'a str>,
    /// The region the job's data is copied from.
    pub data_region: Option<&'a str>,
}

impl JobNeeds<'_> {
    /// Whether `center_id` holds a copy of the job's data (trivially true without data).
    pub fn data_at(&self, center_id: &str) -> bool {
        self.dataset.is_none_or(|d| d.location.iter().any(|l| l.ai_center_id == center_id))
    }

    pub fn data_size_mb(&self) -> f64 {
        self.dataset.map_or(0.0, |d| d.size_mb as f64)
    }
}

/// What one task asks of a center.
#[derive(Debug, Clone)]
pub struct TaskNeeds<'a> {
    pub spec: &'a SpecInfo,
    /// Centers holding the task's image (by name) in a version that fits the spec.
    pub image_centers: HashSet<&'a str>,
    pub image_name: &'a str,
}

fn reject(center_id: &str, code: RejectCode, detail: String) -> Rejection {
    Rejection { center_id: center_id.to_string(), code, detail }
}

/// Runs every filter for one replica of `task` at the center; `free` is its capacity left in
/// this cycle (reported free, less in-flight and this cycle's earlier placements), `nodes` what
/// its nodes have left, when it reports them.
pub fn check(
    state: &CenterState,
    free: &Capacity,
    nodes: Option<&NodePool>,
    job: &JobNeeds,
    task: &TaskNeeds,
    config: &SolverConfig,
) -> Result<(), Rejection> {
    check_fixed(state, job, task, config)?;
    match shortfall(free, nodes, &task.spec.capacity) {
        Some(short) => Err(capacity_rejection(state, short)),
        None => Ok(()),
    }
}

/// The filters that do not depend on free capacity (every one but the last), in the order
/// [`check`] runs them: their verdict holds for a whole cycle.
pub fn check_fixed(
    state: &CenterState,
    job: &JobNeeds,
    task: &TaskNeeds,
    config: &SolverConfig,
) -> Result<(), Rejection> {
    let id = state.center.ai_center_id.as_str();
    if state.center.adapter.kind.is_empty() && !config.place_without_adapter {
        return Err(reject(id, RejectCode::NoAdapter, "the center names no adapter: nothing can run there".into()));
    }
    if state.center.status == center_status::UNAVAILABLE {
        return Err(reject(id, RejectCode::CenterUnavailable, "center status is 0 (unavailable)".into()));
    }
    let Some(metrics) = &state.metrics else {
        return Err(reject(id, RejectCode::MonitoringMissing, "no monitoring report yet".into()));
    };
    let age = config.now_ms.saturating_sub(metrics.reported_at);
    if config.stale_after_ms > 0 && age > config.stale_after_ms {
        let detail = format!("last report {}s old, bound {}s", age / 1000, config.stale_after_ms / 1000);
        return Err(reject(id, RejectCode::MonitoringStale, detail));
    }
    let grade = state.center.security_grade.max(metrics.security_grade);
    if grade < job.security_grade {
        let detail = format!("grade {grade} < required {}", job.security_grade);
        return Err(reject(id, RejectCode::SecurityGradeTooLow, detail));
    }
    if !task.image_centers.contains(id) {
        let detail = format!("no image '{}' fitting spec '{}'", task.image_name, task.spec.spec.resource_spec_id);
        return Err(reject(id, RejectCode::ImageNotAtCenter, detail));
    }
    if let Some(dataset) = job.dataset.filter(|_| !job.data_at(id)) {
        if dataset.private {
            let detail = format!("dataset '{}' is private", dataset.dataset_id());
            return Err(reject(id, RejectCode::PrivateDataElsewhere, detail));
        }
        if job.mode == PolicyMode::Data && dataset.size_mb > config.data_move_limit_mb {
            let detail = format!("{} MB > move limit {} MB", dataset.size_mb, config.data_move_limit_mb);
            return Err(reject(id, RejectCode::DataTooLargeToMove, detail));
        }
    }
    if let Some(qos) = job.qos {
        check_qos(state, job, qos, task, config)?;
    }
    Ok(())
}

/// Why one more replica does not fit a center.
#[derive(Debug, Clone, PartialEq)]
pub enum Shortfall<'a> {
    /// The totals are short: `(kind, needed, available)` from [`Capacity::shortfall`].
    Total(&'static str, f64, f64),
    /// The totals would do, but no node of the pool alone can hold the demand.
    NoNode(&'a NodePool, Capacity),
}

impl Shortfall<'_> {
    pub fn code(&self) -> RejectCode {
        match self {
            Shortfall::Total(..) => RejectCode::InsufficientCapacity,
            Shortfall::NoNode(..) => RejectCode::NoNodeFits,
        }
    }
}

/// The last filter: whether one more replica of `demand` fits in `free` and on one node.
pub fn shortfall<'a>(free: &Capacity, nodes: Option<&'a NodePool>, demand: &Capacity) -> Option<Shortfall<'a>> {
    // `covers` first: most candidates fit, and then no answer needs building.
    if !free.covers(demand) {
        if let Some((kind, needed, available)) = free.shortfall(demand) {
            return Some(Shortfall::Total(kind, needed, available));
        }
    }
    nodes.filter(|nodes| !nodes.fits(demand)).map(|nodes| Shortfall::NoNode(nodes, *demand))
}

/// The rejection of a center short of capacity.
pub fn capacity_rejection(state: &CenterState, shortfall: Shortfall) -> Rejection {
    let id = &state.center.ai_center_id;
    let in_flight = state.in_flight.replicas;
    match shortfall {
        Shortfall::Total(kind, needed, available) => {
            let detail = format!("{kind}: needs {needed}, free {available} ({in_flight} in flight)");
            reject(id, RejectCode::InsufficientCapacity, detail)
        }
        Shortfall::NoNode(nodes, demand) => {
            let why = nodes.describe_misfit(&demand);
            reject(id, RejectCode::NoNodeFits, format!("{why} ({in_flight} in flight)"))
        }
    }
}

/// The QoS bounds. Latency is the path's from the job's user region when it names one (the
/// configured link plus the center's own latency), else the center's own.
fn check_qos(
    state: &CenterState,
    job: &JobNeeds,
    qos: &QosTarget,
    task: &TaskNeeds,
    config: &SolverConfig,
) -> Result<(), Rejection> {
    let id = state.center.ai_center_id.as_str();
    let latency = path_to(&config.region_links, job.origin, &state.center).latency_ms;
    if let Some(bound) = qos.max_latency_ms.filter(|bound| latency > *bound) {
        let from = job.origin.map(|region| format!(" from region {region}")).unwrap_or_default();
        return Err(reject(id, RejectCode::QosLatency, format!("latency {latency} ms{from} > {bound} ms")));
    }
    if let Some(deadline) = qos.deadline_secs {
        let kind = DeviceKind::dominant(&task.spec.demand);
        let speed = state.center.performance.get(kind.key()).copied().unwrap_or(1.0);
        let held_here = job.data_at(id);
        let copy = copy_secs(job.data_size_mb(), held_here, &config.region_links, job.data_region, &state.center);
        let finish = match copy {
            Some(copy) if speed > 0.0 => copy + job.duration_secs / speed,
            _ => f64::INFINITY,
        };
        if finish > deadline as f64 {
            return Err(reject(
                id,
                RejectCode::QosDeadline,
                format!("finishes in {finish:.0}s > deadline {deadline}s"),
            ));
        }
    }
    Ok(())
}

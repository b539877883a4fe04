//! The inputs of one scoring pass: the candidate centers as a scheduling cycle saw them (catalog
//! plus latest monitoring), and what one replica of a job needs. Strategies read only these, so a
//! decision depends on nothing that is not written down here.

use std::collections::BTreeMap;
use std::sync::Arc;

use jcs_api::model::{Center, CenterMetrics, ResourceSpec};
use jcs_api::quantity::ResourceAmounts;

use crate::schedule::links::RegionLinks;

/// How long a job is assumed to run when nobody says (formula 1's execution window), seconds.
pub const DEFAULT_DURATION_SECS: f64 = 3600.0;

/// A device kind of Table 2 that a demand and a monitoring report both count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeviceKind {
    Cpu,
    Gpu,
    Npu,
    Mlu,
    /// MB.
    Memory,
    /// GB.
    Storage,
}

impl DeviceKind {
    pub const ALL: [DeviceKind; 6] =
        [DeviceKind::Cpu, DeviceKind::Gpu, DeviceKind::Npu, DeviceKind::Mlu, DeviceKind::Memory, DeviceKind::Storage];

    /// The accelerators, in the order that breaks ties when picking a demand's dominant kind.
    pub const ACCELERATORS: [DeviceKind; 3] = [DeviceKind::Gpu, DeviceKind::Npu, DeviceKind::Mlu];

    /// The key used in `Center::performance` and `PowerModel::device_watts`.
    pub fn key(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Gpu => "gpu",
            DeviceKind::Npu => "npu",
            DeviceKind::Mlu => "mlu",
            DeviceKind::Memory => "memory",
            DeviceKind::Storage => "storage",
        }
    }

    /// How much of this kind `amounts` holds (a replica's demand, a center's free capacity).
    pub fn amount(self, amounts: &ResourceAmounts) -> f64 {
        match self {
            DeviceKind::Cpu => amounts.cpu,
            DeviceKind::Gpu => amounts.gpu,
            DeviceKind::Npu => amounts.npu,
            DeviceKind::Mlu => amounts.mlu,
            DeviceKind::Memory => amounts.memory_mb,
            DeviceKind::Storage => amounts.storage_gb,
        }
    }

    /// The kind whose speed decides how fast a replica runs: the most-demanded accelerator,
    /// else the CPU.
    pub fn dominant(demand: &ResourceAmounts) -> DeviceKind {
        DeviceKind::ACCELERATORS
            .into_iter()
            .filter(|kind| kind.amount(demand) > 0.0)
            .fold(None, |best: Option<DeviceKind>, kind| match best {
                Some(b) if b.amount(demand) >= kind.amount(demand) => Some(b),
                _ => Some(kind),
            })
            .unwrap_or(DeviceKind::Cpu)
    }
}

/// Free capacity per device kind, in Table 2's units, from a Table 4 report's `*_free` counters.
pub fn free_capacity(metrics: &CenterMetrics) -> ResourceAmounts {
    ResourceAmounts {
        cpu: metrics.cpu_free as f64,
        gpu: metrics.gpu_free as f64,
        npu: metrics.npu_free as f64,
        mlu: metrics.mlu_free as f64,
        memory_mb: metrics.memory_free as f64,
        storage_gb: metrics.storage_free as f64,
        user_define: Default::default(),
    }
}

/// One center a replica could go to, as the cycle's snapshot saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateCenter {
    /// Shared: a cycle builds many candidates of one center.
    pub center: Arc<Center>,
    /// The latest monitoring report; `None` when the center has not reported.
    pub metrics: Option<CenterMetrics>,
    /// The spec's price at this center (`center_prices` override, else `price`).
    pub price: i64,
    /// Free capacity from `metrics` (all zero without a report).
    pub free: ResourceAmounts,
    /// How many replicas of the scored demand the center's nodes hold, each on one node, for a
    /// center that reports its nodes ([`crate::schedule::nodes::NodePool::room`]); strategy (b)
    /// counts the smaller of this and what the totals hold.
    pub node_room: Option<f64>,
}

impl CandidateCenter {
    pub fn new(center: impl Into<Arc<Center>>, metrics: Option<CenterMetrics>, spec: &ResourceSpec) -> Self {
        let center = center.into();
        let price = spec.center_prices.get(&center.ai_center_id).copied().unwrap_or(spec.price);
        let free = metrics.as_ref().map(free_capacity).unwrap_or_default();
        CandidateCenter { center, metrics, price, free, node_room: None }
    }

    pub fn id(&self) -> &str {
        &self.center.ai_center_id
    }

    /// Tasks running at the center by its last report.
    pub fn running_tasks(&self) -> Option<i64> {
        self.metrics.as_ref().map(|m| m.running_task_num)
    }

    /// The stricter of the declared and the reported security grade.
    pub fn security_grade(&self) -> i32 {
        let reported = self.metrics.as_ref().map_or(0, |m| m.security_grade);
        self.center.security_grade.max(reported)
    }
}

/// Where a center sits: its site (centers on one site share an internal network) and region.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    pub site: String,
    pub region: String,
}

impl Location {
    pub fn of(center: &Center) -> Self {
        Location { site: center.network.site.clone(), region: center.region.clone() }
    }
}

/// The consistent view one scheduling cycle scores against.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub candidates: Vec<CandidateCenter>,
    /// Site and region of the centers that candidates are judged close to or far from: data
    /// holders and centers of sibling replicas (candidates carry their own location).
    pub locations: BTreeMap<String, Location>,
    /// The configured links between regions (none by default: every path is a center's uplink).
    pub links: Arc<RegionLinks>,
}

impl Snapshot {
    /// A snapshot of these candidates, with their locations recorded too (so that any of them
    /// can be a sibling's or the data's center).
    pub fn new(candidates: Vec<CandidateCenter>) -> Self {
        let locations = candidates.iter().map(|c| (c.id().to_string(), Location::of(&c.center))).collect();
        Snapshot { candidates, locations, links: Arc::default() }
    }

    /// A snapshot of these candidates that records no locations yet (see
    /// [`Snapshot::with_location_of`]): cheaper when only a few centers matter for affinity.
    pub fn bare(candidates: Vec<CandidateCenter>) -> Self {
        Snapshot { candidates, locations: BTreeMap::new(), links: Arc::default() }
    }

    /// Records where a center sits, so affinity to it can be judged.
    pub fn with_location_of(mut self, center: &Center) -> Self {
        self.locations.insert(center.ai_center_id.clone(), Location::of(center));
        self
    }

    /// Judges network paths over these links between regions.
    pub fn with_links(mut self, links: Arc<RegionLinks>) -> Self {
        self.links = links;
        self
    }
}

/// Where a job's input data lives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DataLocation {
    /// Centers holding a replica of the data.
    pub center_ids: Vec<String>,
    pub size_mb: f64,
    /// The region copies come from (the first holder's that names one).
    pub region: Option<String>,
}

/// What one replica being placed needs, and what its job has placed already.
#[derive(Debug, Clone, PartialEq)]
pub struct JobContext {
    pub replicas: u32,
    /// Per replica, in Table 2's units.
    pub demand: ResourceAmounts,
    pub data: Option<DataLocation>,
    pub duration_secs: f64,
    /// Centers already chosen for this job's earlier replicas in this cycle. They are not in the
    /// snapshot yet, so strategies count them: +1 workload and −demand free capacity each.
    pub sibling_centers: Vec<String>,
    /// The region the job's traffic comes from — its user's (`userRegion`); none when unknown.
    /// The data's location counts through affinity and copy time, not here.
    pub origin: Option<String>,
}

impl JobContext {
    /// A job with no data, no siblings placed yet, no origin, and the default duration.
    pub fn new(demand: ResourceAmounts, replicas: u32) -> Self {
        JobContext {
            replicas,
            demand,
            data: None,
            duration_secs: DEFAULT_DURATION_SECS,
            sibling_centers: Vec::new(),
            origin: None,
        }
    }

    /// Replicas of this job already placed at `center_id` in this cycle.
    pub fn siblings_at(&self, center_id: &str) -> usize {
        self.sibling_centers.iter().filter(|c| c.as_str() == center_id).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::fixtures::{center, demand, spec};

    #[test]
    fn price_uses_the_center_override_else_the_default() {
        let mut s = spec(10);
        s.center_prices.insert("b".into(), 4);
        assert_eq!(CandidateCenter::new(center("a"), None, &s).price, 10);
        assert_eq!(CandidateCenter::new(center("b"), None, &s).price, 4);
    }

    #[test]
    fn free_capacity_reads_table_4_in_table_2_units() {
        let metrics = CenterMetrics { gpu_free: 3, memory_free: 2048, storage_free: 7, ..Default::default() };
        let candidate = CandidateCenter::new(center("a"), Some(metrics), &spec(1));
        assert_eq!(DeviceKind::Gpu.amount(&candidate.free), 3.0);
        assert_eq!(DeviceKind::Memory.amount(&candidate.free), 2048.0);
        assert_eq!(DeviceKind::Storage.amount(&candidate.free), 7.0);
        assert_eq!(CandidateCenter::new(center("a"), None, &spec(1)).free, ResourceAmounts::default());
    }

    #[test]
    fn dominant_kind_is_the_most_demanded_accelerator_else_cpu() {
        assert_eq!(DeviceKind::dominant(&demand(&[("cpu", 8.0)])), DeviceKind::Cpu);
        assert_eq!(DeviceKind::dominant(&demand(&[("cpu", 8.0), ("npu", 2.0), ("gpu", 1.0)])), DeviceKind::Npu);
        assert_eq!(DeviceKind::dominant(&demand(&[("mlu", 1.0), ("gpu", 1.0)])), DeviceKind::Gpu);
    }

    #[test]
    fn security_grade_is_the_stricter_of_declared_and_reported() {
        let mut c = center("a");
        c.security_grade = 3;
        let reported = CenterMetrics { security_grade: 5, ..Default::default() };
        assert_eq!(CandidateCenter::new(c.clone(), Some(reported), &spec(1)).security_grade(), 5);
        assert_eq!(CandidateCenter::new(c, None, &spec(1)).security_grade(), 3);
    }
}

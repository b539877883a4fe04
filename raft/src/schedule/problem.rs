//! What one scheduling cycle decides over: the catalog and latest monitoring as one consistent
//! read, the in-flight ledger, and the solver's settings. Built from the replicated state by
//! [`crate::schedule::state::load_catalog`], or by hand in tests and benchmarks.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use jcs_api::model::{Center, CenterMetrics, Dataset, Image, PolicyMode, ResourceSpec};
use jcs_api::quantity::ResourceAmounts;
use serde::{Deserialize, Serialize};

use crate::schedule::links::RegionLinks;
use crate::schedule::nodes::NodePool;
use crate::schedule::snapshot::DeviceKind;

/// A replica placed but not yet confirmed by its center. Its demand is deducted from the
/// center's reported free capacity until the center confirms it, the job ends, or the entry
/// expires (`ledger_ttl_secs`) — so a cycle never over-commits on monitoring that predates its
/// own placements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub center_id: String,
    pub job_id: String,
    pub task: u32,
    pub replica: u32,
    pub demand: ResourceAmounts,
    /// Unix ms of the placement.
    pub placed_at: i64,
}

/// Amounts per device kind (Table 2 order) plus the user-defined pool, as plain numbers so that
/// the solver's arithmetic allocates nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Capacity(pub [f64; 7]);

/// What a center's live ledger entries hold in total (kept up to date by the state machine, so
/// a cycle reads one value per center, not every entry).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InFlight {
    pub capacity: Capacity,
    pub replicas: i64,
    /// The held replicas by demand (one line per spec shape, in the order first held), so that
    /// a cycle can deduct each from a node of a center that reports its nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shapes: Vec<HeldShape>,
}

/// Replicas of one demand held in flight at a center.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeldShape {
    pub demand: Capacity,
    pub replicas: i64,
}

impl InFlight {
    /// Adds (`sign` 1) or removes (`sign` -1) one replica of `demand`.
    pub fn adjust(&mut self, demand: &Capacity, sign: i64) {
        let mut signed = *demand;
        signed.0.iter_mut().for_each(|v| *v *= sign as f64);
        self.capacity.add(&signed);
        self.replicas += sign;
        match self.shapes.iter().position(|shape| shape.demand.same_as(demand)) {
            Some(i) => {
                self.shapes[i].replicas += sign;
                if self.shapes[i].replicas <= 0 {
                    self.shapes.remove(i);
                }
            }
            None if sign > 0 => self.shapes.push(HeldShape { demand: *demand, replicas: sign }),
            None => {}
        }
    }
}

/// The slack for rounding when amounts are compared (quantities parsed from text, sums and
/// differences of floats).
pub const ROUNDING: f64 = 1e-9;

/// Whether `wanted` of one kind fits in `free` (wanting none always fits): the one rule for
/// centers' totals and single nodes alike.
pub fn amount_fits(free: f64, wanted: f64) -> bool {
    wanted <= 0.0 || wanted <= free + ROUNDING
}

/// The names of [`Capacity`]'s slots, for explanations.
pub const CAPACITY_KINDS: [&str; 7] = ["cpu", "gpu", "npu", "mlu", "memory", "storage", "user_define"];

impl Capacity {
    pub fn of_demand(amounts: &ResourceAmounts) -> Capacity {
        let mut slots = [0.0; 7];
        for (slot, kind) in slots.iter_mut().zip(DeviceKind::ALL) {
            *slot = kind.amount(amounts);
        }
        slots[6] = amounts.user_define.values().sum();
        Capacity(slots)
    }

    /// The free counters of a Table 4 report.
    pub fn free_in(metrics: &CenterMetrics) -> Capacity {
        let m = metrics;
        Capacity(
            [m.cpu_free, m.gpu_free, m.npu_free, m.mlu_free, m.memory_free, m.storage_free, m.defineres_free]
                .map(|v| v as f64),
        )
    }

    pub fn add(&mut self, other: &Capacity) {
        self.0.iter_mut().zip(other.0).for_each(|(a, b)| *a += b);
    }

    pub fn sub(&mut self, other: &Capacity) {
        self.0.iter_mut().zip(other.0).for_each(|(a, b)| *a -= b);
    }

    /// The amount of one device kind (the slots follow [`DeviceKind::ALL`]).
    pub fn amount(&self, kind: DeviceKind) -> f64 {
        self.0[kind as usize]
    }

    /// Whether two amounts are the same up to rounding (a demand that went through JSON and
    /// back may differ in its last bit).
    pub fn same_as(&self, other: &Capacity) -> bool {
        self.0.iter().zip(&other.0).all(|(a, b)| (a - b).abs() <= ROUNDING * a.abs().max(b.abs()).max(1.0))
    }

    /// Whether `demand` fits in what is here: [`Capacity::shortfall`] is `None` (checked for
    /// every candidate of every replica, so without building the answer).
    pub fn covers(&self, demand: &Capacity) -> bool {
        self.0.iter().zip(&demand.0).fold(true, |fits, (here, wanted)| fits & amount_fits(*here, *wanted))
    }

    /// The first kind where `demand` exceeds what is here: `(kind, needed, available)`.
    pub fn shortfall(&self, demand: &Capacity) -> Option<(&'static str, f64, f64)> {
        (0..7).find(|&i| !amount_fits(self.0[i], demand.0[i])).map(|i| (CAPACITY_KINDS[i], demand.0[i], self.0[i]))
    }

    /// As [`ResourceAmounts`] (user-defined pooled under `user_define`), for the strategies.
    pub fn to_amounts(self) -> ResourceAmounts {
        let [cpu, gpu, npu, mlu, memory_mb, storage_gb, user] = self.0;
        let user_define = if user > 0.0 { [("user_define".to_string(), user)].into() } else { BTreeMap::new() };
        ResourceAmounts { cpu, gpu, npu, mlu, memory_mb, storage_gb, user_define }
    }
}

/// A center as the cycle sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct CenterState {
    pub center: Arc<Center>,
    pub metrics: Option<CenterMetrics>,
    /// What this center's live ledger entries hold.
    pub in_flight: InFlight,
    /// What its nodes have free once the in-flight replicas took theirs, when it reports its
    /// nodes (kept with the state, so that a cycle does not place every in-flight replica
    /// again; [`CenterState::refresh_nodes`] after a change of `metrics` or `in_flight`).
    pub nodes: Option<NodePool>,
}

impl CenterState {
    pub fn new(center: Arc<Center>, metrics: Option<CenterMetrics>, in_flight: InFlight) -> CenterState {
        let mut state = CenterState { center, metrics, in_flight, nodes: None };
        state.refresh_nodes();
        state
    }

    /// Recomputes `nodes`: the reported nodes, each in-flight replica on its best-fitting one
    /// (one that no node could hold any more is counted in the totals alone).
    pub fn refresh_nodes(&mut self) {
        self.nodes = self.metrics.as_ref().and_then(|m| NodePool::from_report(&m.node_free)).map(|mut pool| {
            for shape in &self.in_flight.shapes {
                // Once no node holds one more of a shape, none holds the rest: the pool only shrinks.
                for _ in 0..shape.replicas {
                    if pool.hold(&shape.demand).is_none() {
                        break;
                    }
                }
            }
            pool
        });
    }
}

/// A spec with its demand parsed once.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecInfo {
    pub spec: ResourceSpec,
    pub demand: ResourceAmounts,
    pub capacity: Capacity,
    pub offered: Vec<String>,
}

impl SpecInfo {
    pub fn new(spec: ResourceSpec) -> SpecInfo {
        let demand = demand_of(&spec);
        let offered = spec.centers();
        SpecInfo { capacity: Capacity::of_demand(&demand), demand, offered, spec }
    }
}

/// What one replica of `spec` asks for (nothing, for a quantity that does not parse: the API
/// refuses those before they are stored).
pub fn demand_of(spec: &ResourceSpec) -> ResourceAmounts {
    ResourceAmounts::from_quantities(&spec.resource_quantity).unwrap_or_default()
}

/// The consistent read a cycle decides over.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    /// By id, so iteration (and every tie) is in id order.
    pub centers: BTreeMap<String, CenterState>,
    pub specs: HashMap<String, SpecInfo>,
    pub images: HashMap<String, Image>,
    /// Images by name: a center "has" an image when an image of the same name is registered
    /// there (each center registers its own copy under its own id).
    pub images_by_name: HashMap<String, Vec<Image>>,
    /// By `data_name@data_version`.
    pub datasets: HashMap<String, Dataset>,
}

impl Catalog {
    /// Assembles a catalog; `in_flight` holds each center's live ledger totals.
    pub fn new(
        centers: Vec<(Center, Option<CenterMetrics>)>,
        specs: Vec<ResourceSpec>,
        images: Vec<Image>,
        datasets: Vec<Dataset>,
        in_flight: &BTreeMap<String, InFlight>,
    ) -> Catalog {
        let centers: BTreeMap<String, CenterState> = centers
            .into_iter()
            .map(|(center, metrics)| {
                let in_flight = in_flight.get(&center.ai_center_id).cloned().unwrap_or_default();
                let state = CenterState::new(Arc::new(center), metrics, in_flight);
                (state.center.ai_center_id.clone(), state)
            })
            .collect();
        let mut images_by_name: HashMap<String, Vec<Image>> = HashMap::new();
        for image in &images {
            images_by_name.entry(image.name.clone()).or_default().push(image.clone());
        }
        Catalog {
            centers,
            specs: specs.into_iter().map(|s| (s.resource_spec_id.clone(), SpecInfo::new(s))).collect(),
            images: images.into_iter().map(|i| (i.image_id.clone(), i)).collect(),
            images_by_name,
            datasets: datasets.into_iter().map(|d| (d.dataset_id(), d)).collect(),
        }
    }
}

/// The solver's settings and the cycle's identity.
#[derive(Debug, Clone, PartialEq)]
pub struct SolverConfig {
    /// The cycle's clock, Unix ms.
    pub now_ms: i64,
    /// Monitoring older than this is stale (ms); 0 never goes stale.
    pub stale_after_ms: i64,
    /// Data larger than this (MB) is not moved under policy `data`: the job goes to the data.
    pub data_move_limit_mb: i64,
    /// The mode of jobs that name none.
    pub default_policy: PolicyMode,
    /// The leader term deciding, recorded in every explain record.
    pub term: u64,
    /// The placement version of the state read.
    pub snapshot_version: u64,
    /// The first blocked job ahead of the queue slice being decided, with its policy mode
    /// (when a cycle decides only the jobs that arrived since the last one): FCFS holds for it.
    pub blocked_ahead: Option<(String, PolicyMode)>,
    /// The configured links between regions, by which paths from a job's user region are
    /// judged (shared: a config is cloned every cycle).
    pub region_links: Arc<RegionLinks>,
    /// Placements of a batch proposed but not yet applied, replica by replica (center id,
    /// demand): a cycle computed while its predecessor commits deducts them first, as the
    /// state will once that batch applies.
    pub assumed: Vec<(String, Capacity)>,
    /// Place replicas on centers that name no adapter (nothing dispatches them; they wait in
    /// `dispatching`): only for benchmarks that measure placement alone. Off, such centers
    /// are rejected with `NO_ADAPTER`.
    pub place_without_adapter: bool,
}

impl Default for SolverConfig {
    fn default() -> Self {
        SolverConfig {
            now_ms: 0,
            stale_after_ms: 0,
            data_move_limit_mb: 10_240,
            default_policy: PolicyMode::Balanced,
            term: 0,
            snapshot_version: 0,
            blocked_ahead: None,
            region_links: Arc::default(),
            assumed: Vec::new(),
            place_without_adapter: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_shortfall_names_the_first_short_kind() {
        let free = Capacity([8.0, 1.0, 0.0, 0.0, 1000.0, 0.0, 0.0]);
        let demand = Capacity([4.0, 2.0, 0.0, 0.0, 2000.0, 0.0, 0.0]);
        assert_eq!(free.shortfall(&demand), Some(("gpu", 2.0, 1.0)));
        assert_eq!(free.shortfall(&Capacity([8.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])), None);
        assert!(!free.covers(&demand) && free.covers(&Capacity([8.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])));
    }

    #[test]
    fn in_flight_keeps_totals_and_shapes_in_step() {
        let (one_gpu, eight_cpus) = (Capacity([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]), Capacity([8.0; 7]));
        let mut held = InFlight::default();
        held.adjust(&one_gpu, 1);
        held.adjust(&eight_cpus, 1);
        held.adjust(&one_gpu, 1);
        assert_eq!((held.replicas, held.capacity.0[1]), (3, 10.0));
        assert_eq!(
            held.shapes,
            vec![HeldShape { demand: one_gpu, replicas: 2 }, HeldShape { demand: eight_cpus, replicas: 1 }]
        );
        let mut nearly = eight_cpus;
        nearly.0[6] += 1e-12;
        held.adjust(&nearly, -1);
        assert_eq!((held.replicas, held.capacity.0[0]), (2, 2.0));
        assert_eq!(held.shapes, vec![HeldShape { demand: one_gpu, replicas: 2 }], "an emptied shape goes");
    }
}

//! Per-node fit. A replica runs on one node, so a center can take it only if one of its nodes
//! has the replica's whole demand free: ten nodes with 8 free CPUs each hold 80 CPUs between
//! them and still cannot run a 12-CPU replica (the over-commit Karmada users hit, #521). A
//! center that reports its nodes' free resources (`node_free`) gets this check on top of its
//! totals; one that does not (a platform that hides its nodes) is judged on its totals alone.
//!
//! Which node a replica lands on is the center's own scheduler's choice; the cycle models it
//! as best fit (the node left with the fewest accelerators, then CPUs, then memory), so that
//! small replicas do not fragment the nodes a large one needs — the packing Slurm and
//! Kubernetes bin-packing aim for. The model decides only what the cycle deducts, never where
//! the replica runs.

use jcs_api::model::NodeFree;

use crate::schedule::problem::{amount_fits, Capacity, ROUNDING};

/// The per-node device kinds, as [`Capacity`] slots: cpu, gpu, npu, mlu, memory. Storage and
/// user-defined resources are pooled at the center (shared file systems, licences).
const NODE_SLOTS: usize = 5;

/// Nodes with the same free resources.
#[derive(Debug, Clone, PartialEq)]
struct NodeGroup {
    free: [f64; NODE_SLOTS],
    count: u32,
}

/// What a center's nodes have free, by shape, as a cycle goes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodePool {
    groups: Vec<NodeGroup>,
}

/// What [`NodePool::hold`] changed, so that [`NodePool::undo`] can put it back (undone in the
/// reverse order of the holds, as a gang's failed placement is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeHold {
    from: usize,
    to: usize,
    created: bool,
}

fn node_demand(demand: &Capacity) -> [f64; NODE_SLOTS] {
    std::array::from_fn(|slot| demand.0[slot])
}

fn holds(free: &[f64; NODE_SLOTS], demand: &[f64; NODE_SLOTS]) -> bool {
    free.iter().zip(demand).all(|(free, wanted)| amount_fits(*free, *wanted))
}

/// Best fit's preference: the least left on the node, accelerators first, then CPUs, memory.
fn leftover_key(free: &[f64; NODE_SLOTS], demand: &[f64; NODE_SLOTS]) -> (f64, f64, f64) {
    let left = |slot: usize| free[slot] - demand[slot];
    (left(1) + left(2) + left(3), left(0), left(4))
}

impl NodePool {
    /// The pool a report describes; `None` when the center does not report its nodes.
    pub fn from_report(node_free: &[NodeFree]) -> Option<NodePool> {
        if node_free.is_empty() {
            return None;
        }
        let groups = node_free
            .iter()
            .filter(|group| group.count > 0)
            .map(|group| NodeGroup {
                free: [group.cpu_free, group.gpu_free, group.npu_free, group.mlu_free, group.memory_free]
                    .map(|v| v.max(0) as f64),
                count: u32::try_from(group.count).unwrap_or(u32::MAX),
            })
            .collect();
        Some(NodePool { groups })
    }

    /// Whether one node can hold `demand`.
    pub fn fits(&self, demand: &Capacity) -> bool {
        let demand = node_demand(demand);
        self.groups.iter().any(|group| group.count > 0 && holds(&group.free, &demand))
    }

    /// How many replicas of `demand` the nodes hold, each on one node (strategy (b) on a
    /// center that reports its nodes); `None` when the demand asks for no per-node kind.
    pub fn room(&self, demand: &Capacity) -> Option<f64> {
        let wanted = node_demand(demand);
        if wanted.iter().all(|amount| *amount <= 0.0) {
            return None;
        }
        let per_node = |free: &[f64; NODE_SLOTS]| {
            (0..NODE_SLOTS)
                .filter(|&slot| wanted[slot] > 0.0)
                // Truncation is the floor here (nothing is negative), without a library call.
                .map(|slot| ((free[slot] + ROUNDING) / wanted[slot]) as i64 as f64)
                .fold(f64::INFINITY, f64::min)
        };
        Some(
            self.groups
                .iter()
                .filter(|group| group.count > 0)
                .map(|group| f64::from(group.count) * per_node(&group.free))
                .sum(),
        )
    }

    /// Deducts `demand` from the best-fitting node; `None` (and nothing deducted) when no node
    /// can hold it.
    pub fn hold(&mut self, demand: &Capacity) -> Option<NodeHold> {
        let wanted = node_demand(demand);
        let from = (0..self.groups.len())
            .filter(|&i| self.groups[i].count > 0 && holds(&self.groups[i].free, &wanted))
            .min_by(|&a, &b| {
                let (ka, kb) =
                    (leftover_key(&self.groups[a].free, &wanted), leftover_key(&self.groups[b].free, &wanted));
                ka.partial_cmp(&kb).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b))
            })?;
        let mut left = self.groups[from].free;
        left.iter_mut().zip(wanted).for_each(|(free, wanted)| *free -= wanted.max(0.0));
        self.groups[from].count -= 1;
        let (to, created) = match self.groups.iter().position(|group| group.free == left) {
            Some(to) => (to, false),
            None => {
                self.groups.push(NodeGroup { free: left, count: 0 });
                (self.groups.len() - 1, true)
            }
        };
        self.groups[to].count += 1;
        Some(NodeHold { from, to, created })
    }

    /// Puts back what `hold` took; holds are undone last first.
    pub fn undo(&mut self, hold: NodeHold) {
        self.groups[hold.to].count -= 1;
        if hold.created {
            debug_assert_eq!(hold.to, self.groups.len() - 1, "node holds are undone last first");
            self.groups.pop();
        }
        self.groups[hold.from].count += 1;
    }

    /// Why no node holds `demand`, naming the node closest to holding it.
    pub fn describe_misfit(&self, demand: &Capacity) -> String {
        const NAMES: [&str; NODE_SLOTS] = ["cpu", "gpu", "npu", "mlu", "memory"];
        let wanted = node_demand(demand);
        let closeness = |free: &[f64; NODE_SLOTS]| {
            (0..NODE_SLOTS)
                .filter(|&slot| wanted[slot] > 0.0)
                .map(|slot| free[slot] / wanted[slot])
                .fold(f64::INFINITY, f64::min)
        };
        let describe = |amounts: &[f64; NODE_SLOTS]| {
            let parts: Vec<String> = (0..NODE_SLOTS)
                .filter(|&slot| wanted[slot] > 0.0)
                .map(|slot| format!("{} {}", NAMES[slot], amounts[slot]))
                .collect();
            parts.join(", ")
        };
        let nodes: u32 = self.groups.iter().map(|group| group.count).sum();
        let closest =
            self.groups.iter().filter(|group| group.count > 0).max_by(|a, b| {
                closeness(&a.free).partial_cmp(&closeness(&b.free)).unwrap_or(std::cmp::Ordering::Equal)
            });
        match closest {
            Some(group) => format!(
                "no node has {} free; closest: {} ({} of {nodes} nodes)",
                describe(&wanted),
                describe(&group.free),
                group.count
            ),
            None => format!("no node has {} free; no usable node", describe(&wanted)),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn shape(count: i64, cpu_free: i64, gpu_free: i64) -> NodeFree {
        NodeFree { count, cpu_free, gpu_free, memory_free: 64_000, ..NodeFree::default() }
    }

    fn demand(cpu: f64, gpu: f64) -> Capacity {
        Capacity([cpu, gpu, 0.0, 0.0, 1_000.0, 0.0, 0.0])
    }

    #[test]
    fn ten_nodes_of_eight_cpus_cannot_hold_twelve() {
        let pool = NodePool::from_report(&[shape(10, 8, 0)]).unwrap();
        assert!(pool.fits(&demand(8.0, 0.0)));
        assert!(!pool.fits(&demand(12.0, 0.0)), "80 CPUs in all, but no node has 12");
        assert_eq!(
            pool.describe_misfit(&demand(12.0, 0.0)),
            "no node has cpu 12, memory 1000 free; closest: cpu 8, memory 64000 (10 of 10 nodes)"
        );
        assert_eq!(NodePool::from_report(&[]), None, "no node report: the totals decide");
        assert_eq!(pool.room(&demand(4.0, 0.0)), Some(20.0), "two 4-CPU replicas on each of ten nodes");
        assert_eq!(pool.room(&demand(12.0, 0.0)), Some(0.0));
        assert_eq!(pool.room(&Capacity([0.0, 0.0, 0.0, 0.0, 0.0, 5.0, 0.0])), None, "storage is not per node");
    }

    #[test]
    fn best_fit_keeps_the_big_node_free() {
        let mut pool = NodePool::from_report(&[shape(1, 64, 8), shape(1, 16, 2)]).unwrap();
        pool.hold(&demand(4.0, 2.0)).unwrap();
        assert!(pool.fits(&demand(32.0, 8.0)), "the 2-GPU replica went to the 2-GPU node");
        pool.hold(&demand(32.0, 8.0)).unwrap();
        assert!(!pool.fits(&demand(1.0, 1.0)), "both nodes are out of GPUs");
        assert!(pool.fits(&demand(12.0, 0.0)), "the 2-GPU node keeps 12 CPUs");
    }

    #[test]
    fn holds_of_one_shape_share_a_group() {
        let mut pool = NodePool::from_report(&[shape(4, 8, 0)]).unwrap();
        for _ in 0..8 {
            pool.hold(&demand(4.0, 0.0)).unwrap();
        }
        assert!(pool.hold(&demand(1.0, 0.0)).is_none(), "four 8-CPU nodes hold eight 4-CPU replicas, no more");
        assert!(pool.groups.len() <= 3, "groups merge by shape: {:?}", pool.groups);
    }

    proptest! {
        /// Undoing holds last first restores the pool exactly, and a pool never holds more of
        /// a shape than its nodes have room for.
        #[test]
        fn undo_restores_and_holds_never_exceed_a_node(
            shapes in proptest::collection::vec((1i64..4, 0i64..16, 0i64..4), 1..4),
            demands in proptest::collection::vec((0.0f64..10.0, 0.0f64..3.0), 1..20),
        ) {
            let report: Vec<NodeFree> = shapes.iter().map(|&(n, cpu, gpu)| shape(n, cpu, gpu)).collect();
            let original = NodePool::from_report(&report).unwrap();
            let mut pool = original.clone();
            let mut held = Vec::new();
            for (cpu, gpu) in demands {
                let demand = demand(cpu.floor(), gpu.floor());
                let fitted = pool.fits(&demand);
                match pool.hold(&demand) {
                    Some(hold) => held.push(hold),
                    None => prop_assert!(!fitted),
                }
                for group in &pool.groups {
                    prop_assert!(group.free.iter().all(|v| *v >= -1e-9), "a node went negative: {:?}", pool.groups);
                }
                let nodes: u32 = pool.groups.iter().map(|g| g.count).sum();
                let before: u32 = original.groups.iter().map(|g| g.count).sum();
                prop_assert_eq!(nodes, before, "holds move nodes between shapes, never add or drop one");
            }
            for hold in held.into_iter().rev() {
                pool.undo(hold);
            }
            prop_assert_eq!(pool, original);
        }
    }
}

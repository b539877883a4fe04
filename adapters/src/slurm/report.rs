//! What a Slurm center has and uses (Tables 2 and 4), computed from `/nodes` and `/jobs`: the
//! nodes of the center's partitions make its capacity; their allocations its usage; only usable
//! nodes (not down, drained or unreachable) count towards what is free. GRES named `gpu`, `npu`
//! and `mlu` are those device kinds; any other GRES is a user-defined kind of the same name.
//! What each usable node has free is reported too (`node_free`, grouped by shape): a replica
//! runs on one node, so the scheduler checks that one node can hold it, not only the totals.

use jcs_api::model::{CenterMetrics, NodeFree};
use jcs_api::quantity::ResourceAmounts;

use super::native::{key_of, split_gres, Job, Node};
use crate::{AdapterError, NativeState, ResourceReport, Result};

/// The center's resources and monitoring from one look at its nodes and jobs.
/// `prefix` names the jcs cluster's jobs, whose replicas the report confirms.
pub(crate) fn resource_report(
    center: &str,
    prefix: &str,
    partitions: &[String],
    nodes: &[Node],
    jobs: &[Job],
) -> ResourceReport {
    let nodes: Vec<&Node> = nodes.iter().filter(|n| n.in_any(partitions)).collect();
    let mut capacity = ResourceAmounts::default();
    let (mut used, mut free) = (ResourceAmounts::default(), ResourceAmounts::default());
    let mut node_free = Vec::new();
    for node in &nodes {
        let total = node_amounts(node.cpus, node.real_memory, &node.gres);
        let taken = node_amounts(node.alloc_cpus, node.alloc_memory, &node.gres_used);
        capacity.add_scaled(&total, 1.0);
        used.add_scaled(&taken, 1.0);
        if node.usable() {
            let mut left = total.clone();
            left.add_scaled(&taken, -1.0);
            node_free.push([left.cpu, left.gpu, left.npu, left.mlu, left.memory_mb].map(|v| v.floor() as i64));
            free.add_scaled(&left, 1.0);
        }
    }
    let mut metrics = CenterMetrics {
        center_name: center.to_string(),
        node_free: NodeFree::group(node_free),
        ..CenterMetrics::default()
    };
    for job in jobs.iter().filter(|job| job.partition.split(',').any(|p| partitions.iter().any(|q| q == p))) {
        let state = job.state();
        match state {
            NativeState::Running => metrics.running_task_num += 1,
            NativeState::Queued => metrics.waiting_task_num += 1,
            _ => continue,
        }
        if let Some(key) = key_of(prefix, &job.name) {
            metrics.confirmed_replicas.push(format!("{}/{}/{}", key.job_id, key.task, key.replica));
        }
    }
    let count = |v: f64| v.max(0.0).round() as i64;
    (metrics.cpu_used, metrics.cpu_free) = (count(used.cpu), count(free.cpu));
    (metrics.gpu_used, metrics.gpu_free) = (count(used.gpu), count(free.gpu));
    (metrics.npu_used, metrics.npu_free) = (count(used.npu), count(free.npu));
    (metrics.mlu_used, metrics.mlu_free) = (count(used.mlu), count(free.mlu));
    (metrics.memory_used, metrics.memory_free) = (count(used.memory_mb), count(free.memory_mb));
    metrics.defineres_used = count(used.user_define.values().sum());
    metrics.defineres_free = count(free.user_define.values().map(|v| v.max(0.0)).sum());
    ResourceReport { metrics, capacity }
}

/// Rejects a replica no single node of the partitions could ever hold (a replica runs on one
/// node): Slurm itself would accept it and leave it pending forever.
pub(crate) fn check_fits_a_node(partitions: &[String], nodes: &[Node], demand: &ResourceAmounts) -> Result<()> {
    let candidates: Vec<&Node> = nodes.iter().filter(|n| n.in_any(partitions)).collect();
    if candidates.is_empty() {
        return Err(AdapterError::Unavailable(format!("no nodes in partitions {partitions:?}")));
    }
    let fits = |node: &&Node| {
        let has = node_amounts(node.cpus, node.real_memory, &node.gres);
        // Storage is not a Slurm resource: not checked.
        let mut demanded = demand.kinds().filter(|(kind, wanted)| *kind != "storage" && *wanted > 0.0);
        demanded.all(|(kind, wanted)| wanted <= has.amount(kind) + 1e-9)
    };
    if candidates.iter().any(fits) {
        return Ok(());
    }
    let largest: Vec<String> = candidates
        .iter()
        .map(|n| format!("{} (cpu={}, memory={}MB, gres={})", n.name, n.cpus, n.real_memory, n.gres))
        .collect();
    Err(AdapterError::Rejected(format!(
        "no node in partitions {partitions:?} can hold cpu={}, memory={}MB, gres={:?}; nodes: {}",
        demand.cpu,
        demand.memory_mb,
        gres_demand(demand),
        largest.join(", ")
    )))
}

/// The GRES a demand asks for, as `(name, count)`: GPUs, NPUs, MLUs and user-defined kinds.
pub(crate) fn gres_demand(demand: &ResourceAmounts) -> Vec<(String, u64)> {
    let devices = [("gpu", demand.gpu), ("npu", demand.npu), ("mlu", demand.mlu)];
    let named = devices.into_iter().map(|(name, v)| (name.to_string(), v));
    named
        .chain(demand.user_define.iter().map(|(name, v)| (name.clone(), *v)))
        .filter(|(_, v)| *v > 0.0)
        .map(|(name, v)| (name, v.ceil() as u64))
        .collect()
}

fn node_amounts(cpus: i64, memory_mb: i64, gres: &str) -> ResourceAmounts {
    let mut amounts = ResourceAmounts { cpu: cpus as f64, memory_mb: memory_mb as f64, ..ResourceAmounts::default() };
    for (name, count) in split_gres(gres) {
        match name {
            "gpu" => amounts.gpu += count,
            "npu" => amounts.npu += count,
            "mlu" => amounts.mlu += count,
            other => *amounts.user_define.entry(other.to_string()).or_default() += count,
        }
    }
    amounts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, state: &str, cpus: i64, alloc: i64, gres: &str, gres_used: &str) -> Node {
        Node {
            name: name.into(),
            state: state.into(),
            partitions: vec!["p".into()],
            cpus,
            alloc_cpus: alloc,
            real_memory: 1000,
            alloc_memory: 100 * alloc,
            gres: gres.into(),
            gres_used: gres_used.into(),
            ..Node::default()
        }
    }

    fn job(id: u64, name: &str, state: &str) -> Job {
        Job { job_id: id, name: name.into(), job_state: state.into(), partition: "p".into(), ..Job::default() }
    }

    #[test]
    fn usage_counts_every_node_and_free_only_usable_ones() {
        let p = vec!["p".to_string()];
        let mut drained = node("n3", "idle", 8, 0, "gpu:a100:4(S:0)", "gpu:a100:0");
        drained.state_flags = vec!["DRAIN".into()];
        let mut elsewhere = node("n4", "idle", 64, 0, "", "");
        elsewhere.partitions = vec!["other".into()];
        let nodes = vec![
            node("n1", "mixed", 8, 2, "gpu:4", "gpu:1(IDX:0)"),
            node("n2", "idle", 8, 0, "(null)", "(null)"),
            drained,
            elsewhere,
        ];
        let jobs = vec![
            job(1, "jcs.job-1.t0.r1.a0", "RUNNING"),
            job(2, "someone-else", "RUNNING"),
            job(3, "jcs.job-2.t0.r0.a0", "PENDING"),
            job(4, "jcs.job-3.t0.r0.a0", "COMPLETED"),
            Job { partition: "other".into(), ..job(5, "x", "RUNNING") },
        ];
        let report = resource_report("c", "jcs", &p, &nodes, &jobs);
        assert_eq!((report.capacity.cpu, report.capacity.gpu, report.capacity.memory_mb), (24.0, 8.0, 3000.0));
        let m = &report.metrics;
        assert_eq!((m.cpu_used, m.cpu_free), (2, 14), "the drained node's CPUs are not free");
        assert_eq!((m.gpu_used, m.gpu_free), (1, 3));
        assert_eq!((m.memory_used, m.memory_free), (200, 1800));
        assert_eq!((m.running_task_num, m.waiting_task_num), (2, 1));
        assert_eq!(m.confirmed_replicas, vec!["job-1/0/1".to_string(), "job-2/0/0".to_string()]);
        let shape = |count, cpu_free, gpu_free, memory_free| NodeFree {
            count,
            cpu_free,
            gpu_free,
            memory_free,
            ..NodeFree::default()
        };
        assert_eq!(
            m.node_free,
            vec![shape(1, 6, 3, 800), shape(1, 8, 0, 1000)],
            "each usable node's own free resources, by shape; the drained node has none"
        );
    }

    #[test]
    fn identical_nodes_are_one_shape() {
        let p = vec!["p".to_string()];
        let nodes: Vec<Node> = (0..10).map(|i| node(&format!("n{i}"), "idle", 8, 0, "", "")).collect();
        let m = resource_report("c", "jcs", &p, &nodes, &[]).metrics;
        assert_eq!(m.cpu_free, 80);
        assert_eq!(m.node_free, vec![NodeFree { count: 10, cpu_free: 8, memory_free: 1000, ..NodeFree::default() }]);
    }

    #[test]
    fn a_replica_must_fit_one_node() {
        let p = vec!["p".to_string()];
        let nodes = vec![node("n1", "idle", 8, 0, "gpu:2", ""), node("n2", "down", 4, 0, "gpu:4", "")];
        let demand = |cpu: f64, gpu: f64| ResourceAmounts { cpu, gpu, memory_mb: 500.0, ..ResourceAmounts::default() };
        assert!(check_fits_a_node(&p, &nodes, &demand(8.0, 2.0)).is_ok());
        assert!(check_fits_a_node(&p, &nodes, &demand(4.0, 4.0)).is_ok(), "a down node may come back");
        assert!(matches!(check_fits_a_node(&p, &nodes, &demand(8.0, 4.0)), Err(AdapterError::Rejected(_))));
        assert!(matches!(check_fits_a_node(&p, &nodes, &demand(1e12, 0.0)), Err(AdapterError::Rejected(_))));
        let mut ib = demand(1.0, 0.0);
        ib.user_define.insert("ib".into(), 1.0);
        assert!(matches!(check_fits_a_node(&p, &nodes, &ib), Err(AdapterError::Rejected(_))));
        assert!(matches!(check_fits_a_node(&["q".into()], &nodes, &ib), Err(AdapterError::Unavailable(_))));
        assert_eq!(gres_demand(&ib), vec![("ib".to_string(), 1)]);
        assert_eq!(gres_demand(&demand(1.0, 1.5)), vec![("gpu".to_string(), 2)]);
    }
}

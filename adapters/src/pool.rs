//! Capacity accounting and the native FIFO queue, shared by the local and simulated centers.
//!
//! A center declares its total capacity. A submitted replica whose demand could never fit is
//! rejected; any other joins the queue, and the queue starts its head whenever the head fits
//! in what running replicas leave free (strict FIFO, no backfill, like a plain batch
//! scheduler). The pool also renders what it accounts as a Table 4 monitoring report, so both
//! centers count usage the same way. It knows nothing about processes or clocks: the adapters
//! tell it when a replica ends and start whatever [`Pool::admit`] hands back.

use std::collections::{BTreeMap, VecDeque};

use jcs_api::model::{CenterMetrics, ReplicaKey};
use jcs_api::quantity::ResourceAmounts;

use crate::{AdapterError, ResourceReport, Result};

/// Slack for float comparisons of amounts (sums of fractional cores and MB).
const EPSILON: f64 = 1e-9;

/// One center's capacity, its running replicas and its queue; `K` is the adapter's handle for
/// a replica.
#[derive(Debug)]
pub(crate) struct Pool<K: Ord + Clone> {
    center: String,
    total: ResourceAmounts,
    used: ResourceAmounts,
    entries: BTreeMap<K, Entry>,
    queue: VecDeque<K>,
}

#[derive(Debug)]
struct Entry {
    key: ReplicaKey,
    demand: ResourceAmounts,
    running: bool,
}

impl<K: Ord + Clone> Pool<K> {
    pub(crate) fn new(center: &str, total: ResourceAmounts) -> Self {
        Pool {
            center: center.to_string(),
            total,
            used: ResourceAmounts::default(),
            entries: BTreeMap::new(),
            queue: VecDeque::new(),
        }
    }

    /// Rejects a demand larger than the center's total capacity in some kind: it would wait
    /// forever.
    pub(crate) fn check_admissible(&self, demand: &ResourceAmounts) -> Result<()> {
        for (kind, wanted) in demand.kinds() {
            let total = self.total.amount(kind);
            if wanted > total + EPSILON {
                return Err(AdapterError::Rejected(format!(
                    "demand {kind}={wanted} exceeds the total capacity of center '{}' ({total})",
                    self.center
                )));
            }
        }
        Ok(())
    }

    /// Appends a replica to the queue; [`Pool::admit`] starts it when its turn comes.
    pub(crate) fn enqueue(&mut self, id: K, key: ReplicaKey, demand: ResourceAmounts) {
        self.entries.insert(id.clone(), Entry { key, demand, running: false });
        self.queue.push_back(id);
    }

    /// Accounts a replica found running (re-adoption after a restart), whether or not it fits.
    pub(crate) fn insert_running(&mut self, id: K, key: ReplicaKey, demand: ResourceAmounts) {
        self.used.add_scaled(&demand, 1.0);
        self.entries.insert(id, Entry { key, demand, running: true });
    }

    /// Moves queue heads to running while they fit; returns them in start order.
    pub(crate) fn admit(&mut self) -> Vec<K> {
        let mut started = Vec::new();
        while let Some(head) = self.queue.front() {
            let entry = self.entries.get_mut(head).expect("every queued id has an entry");
            if !fits(&self.total, &self.used, &entry.demand) {
                break;
            }
            entry.running = true;
            self.used.add_scaled(&entry.demand, 1.0);
            started.push(self.queue.pop_front().expect("the head exists"));
        }
        started
    }

    /// Forgets a replica (ended, stopped, failed to start), freeing what it held. Returns
    /// whether the pool knew it.
    pub(crate) fn release(&mut self, id: &K) -> bool {
        let Some(entry) = self.entries.remove(id) else { return false };
        if entry.running {
            self.used.add_scaled(&entry.demand, -1.0);
        } else {
            self.queue.retain(|queued| queued != id);
        }
        true
    }

    pub(crate) fn is_queued(&self, id: &K) -> bool {
        self.entries.get(id).is_some_and(|e| !e.running)
    }

    /// The running replicas.
    pub(crate) fn running(&self) -> impl Iterator<Item = &K> {
        self.entries.iter().filter(|(_, e)| e.running).map(|(id, _)| id)
    }

    /// Table 4 as the pool accounts it, plus the declared capacity.
    pub(crate) fn report(&self) -> ResourceReport {
        let (total, used) = (&self.total, &self.used);
        let running = self.entries.values().filter(|e| e.running).count();
        let mut metrics = CenterMetrics {
            center_name: self.center.clone(),
            running_task_num: running as i64,
            waiting_task_num: self.queue.len() as i64,
            confirmed_replicas: self
                .entries
                .values()
                .map(|e| format!("{}/{}/{}", e.key.job_id, e.key.task, e.key.replica))
                .collect(),
            ..CenterMetrics::default()
        };
        (metrics.cpu_used, metrics.cpu_free) = used_free(total.cpu, used.cpu);
        (metrics.gpu_used, metrics.gpu_free) = used_free(total.gpu, used.gpu);
        (metrics.npu_used, metrics.npu_free) = used_free(total.npu, used.npu);
        (metrics.mlu_used, metrics.mlu_free) = used_free(total.mlu, used.mlu);
        (metrics.memory_used, metrics.memory_free) = used_free(total.memory_mb, used.memory_mb);
        (metrics.storage_used, metrics.storage_free) = used_free(total.storage_gb, used.storage_gb);
        (metrics.defineres_used, metrics.defineres_free) =
            used_free(total.user_define.values().sum(), used.user_define.values().sum());
        ResourceReport { metrics, capacity: total.clone() }
    }
}

/// Table 4's integer counters: usage rounded up, what is left rounded down.
fn used_free(total: f64, used: f64) -> (i64, i64) {
    let used = (used - EPSILON).max(0.0).ceil();
    (used as i64, (total - used + EPSILON).max(0.0).floor() as i64)
}

fn fits(total: &ResourceAmounts, used: &ResourceAmounts, demand: &ResourceAmounts) -> bool {
    demand.kinds().all(|(kind, wanted)| wanted <= total.amount(kind) - used.amount(kind) + EPSILON)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(job: &str) -> ReplicaKey {
        ReplicaKey { job_id: job.to_string(), task: 1, replica: 2, attempt: 0 }
    }

    fn cpus(n: f64) -> ResourceAmounts {
        ResourceAmounts { cpu: n, memory_mb: 100.0 * n, ..ResourceAmounts::default() }
    }

    #[test]
    fn queue_is_strict_fifo_and_frees_on_release() {
        let mut pool = Pool::new("c1", cpus(4.0));
        pool.enqueue(1, key("a"), cpus(3.0));
        pool.enqueue(2, key("b"), cpus(2.0));
        pool.enqueue(3, key("c"), cpus(1.0));
        // `c` would fit beside `a`, but waits behind `b`.
        assert_eq!(pool.admit(), vec![1]);
        assert!(pool.is_queued(&2) && pool.is_queued(&3));
        assert!(pool.release(&1));
        assert_eq!(pool.admit(), vec![2, 3]);
        assert!(!pool.release(&1));
        assert_eq!(pool.running().copied().collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn oversized_demands_are_rejected_naming_the_kind() {
        let pool: Pool<u32> = Pool::new("c1", cpus(4.0));
        assert!(pool.check_admissible(&cpus(4.0)).is_ok());
        let err = pool.check_admissible(&cpus(5.0)).unwrap_err();
        assert!(matches!(&err, AdapterError::Rejected(m) if m.contains("cpu=5")), "{err}");
        let mut exotic = cpus(1.0);
        exotic.user_define.insert("ib".into(), 1.0);
        assert!(matches!(pool.check_admissible(&exotic), Err(AdapterError::Rejected(m)) if m.contains("ib=1")));
    }

    #[test]
    fn report_counts_running_and_confirms_running_and_queued() {
        let mut total = cpus(4.0);
        total.user_define.insert("ib".into(), 2.0);
        let mut pool = Pool::new("c1", total);
        let mut half = cpus(0.5);
        half.user_define.insert("ib".into(), 1.0);
        pool.enqueue(1, key("a"), half);
        pool.enqueue(2, key("b"), cpus(4.0));
        pool.admit();
        let r = pool.report().metrics;
        assert_eq!((r.running_task_num, r.waiting_task_num), (1, 1));
        assert_eq!((r.cpu_used, r.cpu_free), (1, 3));
        assert_eq!((r.memory_used, r.memory_free), (50, 350));
        assert_eq!((r.defineres_used, r.defineres_free), (1, 1));
        assert_eq!(r.confirmed_replicas, vec!["a/1/2".to_string(), "b/1/2".to_string()]);
        pool.release(&1);
        pool.release(&2);
        let r = pool.report().metrics;
        assert_eq!((r.cpu_used, r.cpu_free, r.running_task_num), (0, 4, 0));
        assert!(r.confirmed_replicas.is_empty());
    }
}

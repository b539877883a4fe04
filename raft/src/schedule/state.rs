//! Builds the scheduler's inputs from the replicated state: a cycle's [`Catalog`], and the
//! [`Snapshot`] of the centers offering one spec (for A.5).

use jcs_api::model::{Center, CenterMetrics, Job, ObjectKind, ResourceSpec};

use super::nodes::NodePool;
use super::problem::{demand_of, Capacity, Catalog};
use super::snapshot::{CandidateCenter, Snapshot};
use crate::apply::ledger;
use crate::kv::{get_json, KvRead, StoreError};
use crate::tables;

/// Everything a cycle decides over, read at once: centers with their latest reports, specs,
/// images, datasets, and each center's in-flight ledger totals.
pub fn load_catalog(kv: &(impl KvRead + ?Sized)) -> Result<Catalog, StoreError> {
    let mut centers = Vec::new();
    for center in tables::all::<Center>(kv, ObjectKind::Center)? {
        let metrics: Option<CenterMetrics> = get_json(kv, &tables::metrics_key(&center.ai_center_id))?;
        centers.push((center, metrics));
    }
    Ok(Catalog::new(
        centers,
        tables::all(kv, ObjectKind::ResourceSpec)?,
        tables::all(kv, ObjectKind::Image)?,
        tables::all(kv, ObjectKind::Dataset)?,
        &ledger::totals(kv)?,
    ))
}

/// A catalog kept from cycle to cycle: the catalog objects are read again only when their
/// generation changed, a center's monitoring report and in-flight ledger totals only when they
/// changed (`mx/` and `lx/` name the centers that changed since a generation).
#[derive(Default)]
pub struct CatalogCache {
    /// The catalog, metrics and ledger generations the cached catalog reflects.
    generations: Option<(u64, u64, u64)>,
    catalog: Catalog,
}

impl CatalogCache {
    pub fn load(&mut self, kv: &(impl KvRead + ?Sized)) -> Result<&Catalog, StoreError> {
        let objects = tables::generation(kv, tables::CATALOG_GEN_KEY)?;
        let metrics = tables::generation(kv, tables::METRICS_GEN_KEY)?;
        let ledger = tables::generation(kv, tables::LEDGER_GEN_KEY)?;
        match self.generations {
            Some((o, _, _)) if o != objects => self.catalog = load_catalog(kv)?,
            None => self.catalog = load_catalog(kv)?,
            Some((_, m, l)) => {
                if m != metrics {
                    for id in tables::METRICS_CHANGES.changed_since(kv, m)? {
                        if let Some(state) = self.catalog.centers.get_mut(&id) {
                            state.metrics = get_json(kv, &tables::metrics_key(&id))?;
                            state.refresh_nodes();
                        }
                    }
                }
                if l != ledger {
                    for id in tables::LEDGER_CHANGES.changed_since(kv, l)? {
                        if let Some(state) = self.catalog.centers.get_mut(&id) {
                            state.in_flight = ledger::center_totals(kv, &id)?;
                            state.refresh_nodes();
                        }
                    }
                }
            }
        }
        self.generations = Some((objects, metrics, ledger));
        Ok(&self.catalog)
    }

    /// The catalog as the last [`CatalogCache::load`] left it.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }
}

/// The first `limit` jobs of the scheduling queue, in order, after job `after` when given.
pub fn load_queue(kv: &(impl KvRead + ?Sized), after: Option<&str>, limit: usize) -> Result<Vec<Job>, StoreError> {
    let mut jobs = Vec::new();
    for id in tables::queued_job_ids(kv, after, limit)? {
        let job = tables::get::<Job>(kv, ObjectKind::Job, &id)?.ok_or_else(|| StoreError::Corrupt {
            key: String::from_utf8_lossy(&tables::queue_key(&id)).into_owned(),
            reason: "queue names a missing job".into(),
        })?;
        jobs.push(job);
    }
    Ok(jobs)
}

/// The candidates for `spec`: every center in its `computing_center_list` that exists. Every
/// other center is still known by location, for data and sibling affinity.
pub fn snapshot_for_spec(kv: &(impl KvRead + ?Sized), spec: &ResourceSpec) -> Result<Snapshot, StoreError> {
    let offered = spec.centers();
    let demand = Capacity::of_demand(&demand_of(spec));
    let centers: Vec<Center> = tables::all(kv, ObjectKind::Center)?;
    let mut candidates = Vec::new();
    for center in &centers {
        if offered.contains(&center.ai_center_id) {
            let metrics: Option<CenterMetrics> = get_json(kv, &tables::metrics_key(&center.ai_center_id))?;
            let nodes = metrics.as_ref().and_then(|m| NodePool::from_report(&m.node_free));
            let mut candidate = CandidateCenter::new(center.clone(), metrics, spec);
            candidate.node_room = nodes.and_then(|nodes| nodes.room(&demand));
            candidates.push(candidate);
        }
    }
    Ok(centers.iter().fold(Snapshot::new(candidates), |snapshot, center| snapshot.with_location_of(center)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::apply;
    use crate::command::{Command, WriteMode};
    use crate::kv::MemKv;
    use serde_json::json;

    #[test]
    fn the_cached_catalog_follows_every_change_a_fresh_read_sees() {
        let mut kv = MemKv::default();
        let mut cache = CatalogCache::default();
        let center = |id: &str| serde_json::from_value(json!({"ai_center_id": id, "name": id, "region": "r"})).unwrap();
        let steps: Vec<Command> = vec![
            Command::PutCenter { center: center("a"), mode: WriteMode::Create },
            Command::ReportMetrics {
                center_id: "a".into(),
                metrics: serde_json::from_value(json!({"cpu_free": 3})).unwrap(),
            },
            Command::PutCenter { center: center("b"), mode: WriteMode::Create },
            Command::SetCenterHealth { center_id: "b".into(), owner_epoch: 0, available: false, reason: "x".into() },
            Command::ReportMetrics {
                center_id: "a".into(),
                metrics: serde_json::from_value(json!({"cpu_free": 1})).unwrap(),
            },
            Command::DeleteCenter { id: "b".into() },
        ];
        for (i, command) in steps.iter().enumerate() {
            apply(&mut kv, command, i as i64 + 1).unwrap().unwrap();
            let cached = cache.load(&kv).unwrap().clone();
            assert_eq!(cached, load_catalog(&kv).unwrap(), "after step {i}");
        }
    }

    /// A state with centers `a`, `b` and `c`.
    fn centers_abc() -> MemKv {
        let mut kv = MemKv::default();
        for id in ["a", "b", "c"] {
            let center = serde_json::from_value(json!({"ai_center_id": id, "name": id, "region": "r"})).unwrap();
            apply(&mut kv, &Command::PutCenter { center, mode: WriteMode::Create }, 1).unwrap().unwrap();
        }
        kv
    }

    #[test]
    fn the_cached_catalog_rereads_every_report_made_between_two_cycles() {
        let mut kv = centers_abc();
        let mut cache = CatalogCache::default();
        let report = |center: &str, cpu: u32| Command::ReportMetrics {
            center_id: center.into(),
            metrics: serde_json::from_value(json!({"cpu_free": cpu})).unwrap(),
        };
        for id in ["a", "b", "c"] {
            apply(&mut kv, &report(id, 1), 1).unwrap().unwrap();
        }
        cache.load(&kv).unwrap();
        for (i, step) in [report("c", 2), report("a", 3), report("c", 4)].iter().enumerate() {
            apply(&mut kv, step, 2 + i as i64).unwrap().unwrap();
        }
        assert_eq!(*cache.load(&kv).unwrap(), load_catalog(&kv).unwrap());
        assert_eq!(
            tables::METRICS_CHANGES.changed_since(&kv, 0).unwrap(),
            ["b", "a", "c"],
            "one note per center, its latest"
        );
        apply(&mut kv, &Command::DeleteCenter { id: "b".into() }, 9).unwrap().unwrap();
        assert_eq!(tables::METRICS_CHANGES.changed_since(&kv, 0).unwrap(), ["a", "c"], "a deleted center's note goes");
        assert_eq!(kv.get(&tables::METRICS_CHANGES.latest_key("b")).unwrap(), None);
        assert_eq!(*cache.load(&kv).unwrap(), load_catalog(&kv).unwrap(), "after the deletion");
    }

    #[test]
    fn the_cached_catalog_follows_every_ledger_change_between_two_cycles() {
        use crate::schedule::problem::LedgerEntry;
        let mut kv = centers_abc();
        let mut cache = CatalogCache::default();
        let entry = |center: &str, job: &str, gpu: f64| LedgerEntry {
            center_id: center.into(),
            job_id: job.into(),
            task: 0,
            replica: 0,
            demand: jcs_api::quantity::ResourceAmounts { gpu, ..Default::default() },
            placed_at: 1,
        };
        // Center c reports its nodes: the cached pool must follow its in-flight replicas.
        let nodes = serde_json::from_value(json!({"gpu_free": 8, "node_free": [{"count": 2, "gpu_free": 4}]})).unwrap();
        apply(&mut kv, &Command::ReportMetrics { center_id: "c".into(), metrics: nodes }, 1).unwrap().unwrap();
        cache.load(&kv).unwrap();
        ledger::hold(&mut kv, &entry("a", "j1", 1.0)).unwrap();
        ledger::hold(&mut kv, &entry("b", "j2", 2.0)).unwrap();
        assert_eq!(*cache.load(&kv).unwrap(), load_catalog(&kv).unwrap(), "after two holds");
        ledger::hold(&mut kv, &entry("c", "j3", 1.0)).unwrap();
        ledger::release(&mut kv, "a", "j1", 0, 0).unwrap();
        ledger::hold(&mut kv, &entry("c", "j4", 4.0)).unwrap();
        ledger::release(&mut kv, "b", "j2", 0, 0).unwrap();
        let cached = cache.load(&kv).unwrap().clone();
        assert_eq!(cached, load_catalog(&kv).unwrap(), "after holds and releases");
        assert_eq!(cached.centers["c"].in_flight.replicas, 2);
        assert_eq!(cached.centers["a"].in_flight.replicas, 0);
        let pool = cached.centers["c"].nodes.as_ref().expect("c reports its nodes");
        let gpus = |n: f64| crate::schedule::problem::Capacity([0.0, n, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert!(pool.fits(&gpus(3.0)) && !pool.fits(&gpus(4.0)), "j3 and j4 took a node each: {pool:?}");
        assert_eq!(
            tables::LEDGER_CHANGES.changed_since(&kv, 2).unwrap(),
            ["a", "c", "b"],
            "the latest change per center"
        );
    }

    #[test]
    fn candidates_are_the_centers_offering_the_spec_with_their_metrics_and_price() {
        let mut kv = centers_abc();
        let metrics = serde_json::from_value(json!({"running_task_num": 7, "cpu_free": 3})).unwrap();
        apply(&mut kv, &Command::ReportMetrics { center_id: "b".into(), metrics }, 2).unwrap().unwrap();
        let spec: ResourceSpec = serde_json::from_value(json!({"resource_spec_id": "s", "resource_spec_name": "s",
            "resource_quantity": {"cpu": "1"}, "price": 5, "computing_center_list": "a,b", "center_prices": {"b": 3}}))
        .unwrap();
        let snapshot = snapshot_for_spec(&kv, &spec).unwrap();
        let ids: Vec<_> = snapshot.candidates.iter().map(|c| c.id().to_string()).collect();
        assert_eq!(ids, vec!["a", "b"]);
        assert_eq!(snapshot.candidates[1].running_tasks(), Some(7));
        assert_eq!((snapshot.candidates[0].price, snapshot.candidates[1].price), (5, 3));
        assert!(snapshot.locations.contains_key("c"), "non-candidates are still located");
    }
}

//! Builds a scheduling [`Snapshot`] from the replicated state: the centers offering a spec, each
//! with its latest monitoring report and its price for that spec.

use jcs_api::model::{Center, CenterMetrics, ObjectKind, ResourceSpec};

use super::snapshot::{CandidateCenter, Snapshot};
use crate::kv::{get_json, KvRead, StoreError};
use crate::tables;

/// The candidates for `spec`: every center in its `computing_center_list` that exists. Every
/// other center is still known by location, for data and sibling affinity.
pub fn snapshot_for_spec(kv: &(impl KvRead + ?Sized), spec: &ResourceSpec) -> Result<Snapshot, StoreError> {
    let offered = spec.centers();
    let centers: Vec<Center> = tables::all(kv, ObjectKind::Center)?;
    let mut candidates = Vec::new();
    for center in &centers {
        if offered.contains(&center.ai_center_id) {
            let metrics: Option<CenterMetrics> = get_json(kv, &tables::metrics_key(&center.ai_center_id))?;
            candidates.push(CandidateCenter::new(center.clone(), metrics, spec));
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
    fn candidates_are_the_centers_offering_the_spec_with_their_metrics_and_price() {
        let mut kv = MemKv::default();
        for id in ["a", "b", "c"] {
            let center = serde_json::from_value(json!({"ai_center_id": id, "name": id, "region": "r"})).unwrap();
            apply(&mut kv, &Command::PutCenter { center, mode: WriteMode::Create }, 1).unwrap().unwrap();
        }
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

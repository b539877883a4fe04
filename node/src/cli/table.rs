//! Table rendering for `--output table`: one row per object in listings (columns chosen per
//! kind through [`Row`]), and a field/value table for a single object.

use std::collections::BTreeSet;

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};
use jcs_api::model::{
    center_status, Center, CenterEvent, Dataset, Explain, Image, JobInfo, Page, ResourceSpec, TaskInfo,
};
use serde_json::Value;

/// How an object appears as a row of a listing.
pub trait Row {
    /// Column titles.
    const HEADER: &'static [&'static str];
    /// One cell per column, in [`Row::HEADER`] order.
    fn cells(&self) -> Vec<String>;
}

fn new_table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY).set_content_arrangement(ContentArrangement::Dynamic).set_header(header);
    table
}

/// A listing of `items`, one row each.
pub fn rows<R: Row>(items: &[R]) -> String {
    let mut table = new_table(R::HEADER);
    for item in items {
        table.add_row(item.cells());
    }
    table.to_string()
}

/// A page of a listing and a line saying where it sits among all pages.
pub fn page<R: Row>(page: &Page<R>) -> String {
    let pages = page.total.div_ceil(u64::from(page.page_size.max(1))).max(1);
    let mut summary = format!("{}\npage {} of {}, {} in total", rows(&page.items), page.page, pages, page.total);
    let full_page_end = page.offset + u64::from(page.page_size);
    if let Some(next) = page.next_offset.filter(|&next| next < full_page_end) {
        summary.push_str(&format!(" (cut short by the node's page byte limit; the next item is #{})", next + 1));
    }
    summary
}

/// One object as FIELD / VALUE rows. Nested objects and lists of objects are spelled out one
/// leaf per row (`power.device_watts.gpu`, `location[1].ai_center_id`) so the table stays narrow.
pub fn detail(object: &Value) -> String {
    let mut table = new_table(&["FIELD", "VALUE"]);
    let mut leaves = Vec::new();
    flatten(String::new(), object, &mut leaves);
    for (field, value) in leaves {
        table.add_row([field, value]);
    }
    table.to_string()
}

fn flatten(path: String, value: &Value, leaves: &mut Vec<(String, String)>) {
    match value {
        Value::Object(fields) if !fields.is_empty() => {
            for (name, value) in fields {
                let path = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
                flatten(path, value, leaves);
            }
        }
        Value::Array(items) if items.iter().any(|item| item.is_object() || item.is_array()) => {
            for (i, item) in items.iter().enumerate() {
                flatten(format!("{path}[{i}]"), item, leaves);
            }
        }
        leaf => leaves.push((path, scalar(leaf))),
    }
}

/// A job: its fields, then one row per task.
pub fn job(job: &JobInfo) -> String {
    let mut fields = serde_json::to_value(job).expect("API types serialize to JSON");
    if let Value::Object(map) = &mut fields {
        map.remove("taskInfos");
    }
    format!("{}\n{}", detail(&fields), rows(&job.task_infos))
}

/// A scheduling decision: the outcome line, then per task and replica the rejections by code
/// and a table of the best centers' scores (one column per weighted strategy:
/// `normalized (raw)`).
pub fn explain(explain: &Explain) -> String {
    let weights: Vec<String> = explain.weights.iter().map(|(id, w)| format!("{id}={w}")).collect();
    let from = explain.user_region.as_ref().map(|region| format!(" · user region {region}")).unwrap_or_default();
    let mut out = format!(
        "{:?} — {}\npolicy {} · weights {}{from} · term {} · version {}\n",
        explain.outcome,
        explain.reason,
        explain.policy.as_str(),
        weights.join(" "),
        explain.term,
        explain.snapshot_version
    );
    for task in &explain.tasks {
        out.push_str(&format!("\ntask {} → {}\n", task.name, joined(task.center_ids.iter().map(String::as_str))));
        for replica in &task.replicas {
            let rejected: Vec<String> = replica.rejected_count.iter().map(|(c, n)| format!("{c}×{n}")).collect();
            out.push_str(&format!(
                "  replica {}: winner {} · {} feasible · rejected {}\n",
                replica.replica,
                replica.winner.as_deref().unwrap_or("-"),
                replica.feasible,
                joined(rejected.iter().map(String::as_str))
            ));
            for rejection in &replica.rejections {
                out.push_str(&format!(
                    "    ✗ {} {}: {}\n",
                    rejection.center_id,
                    rejection.code.as_str(),
                    rejection.detail
                ));
            }
            let scores = &replica.scores;
            if scores.centers.is_empty() {
                continue;
            }
            let mut header = vec!["CENTER".to_string(), "TOTAL".to_string()];
            let columns = scores.algorithms.iter().zip(&scores.weights);
            header.extend(columns.map(|(algorithm, weight)| format!("{algorithm} (w{weight})")));
            let header: Vec<&str> = header.iter().map(String::as_str).collect();
            let mut table = new_table(&header);
            for scored in &scores.centers {
                let mut cells = vec![scored.center_id.clone(), scored.total.to_string()];
                cells.extend(scored.normalized.iter().zip(&scored.raw).map(|(normalized, raw)| match raw {
                    Some(raw) => format!("{normalized} ({raw:.3})"),
                    None => format!("{normalized} (-)"),
                }));
                table.add_row(cells);
            }
            out.push_str(&format!("{table}\n"));
        }
        for plan in &task.migrations {
            let sources = joined(plan.sources.iter().map(String::as_str));
            out.push_str(&format!(
                "  migrate {} ({} MB) → {} from {sources}\n",
                plan.dataset_id, plan.size_mb, plan.to_center
            ));
        }
    }
    out
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(text) => or_dash(text),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text.to_string()
    }
}

fn joined<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    or_dash(&items.into_iter().collect::<Vec<_>>().join(","))
}

impl Row for Center {
    const HEADER: &'static [&'static str] = &["ID", "NAME", "REGION", "STATUS", "ADAPTER", "SECURITY"];
    fn cells(&self) -> Vec<String> {
        let status = match self.status {
            center_status::AVAILABLE => "available",
            center_status::UNAVAILABLE => "unavailable",
            _ => "unknown",
        };
        vec![
            self.ai_center_id.clone(),
            self.name.clone(),
            self.region.clone(),
            status.into(),
            or_dash(&self.adapter.kind),
            self.security_grade.to_string(),
        ]
    }
}

impl Row for ResourceSpec {
    const HEADER: &'static [&'static str] = &["ID", "NAME", "RESOURCES", "SERVICE", "PRICE", "CENTERS"];
    fn cells(&self) -> Vec<String> {
        let resources: Vec<String> = self.resource_quantity.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let service = serde_json::to_value(self.service_type).expect("API types serialize to JSON");
        vec![
            self.resource_spec_id.clone(),
            self.resource_spec_name.clone(),
            resources.join(","),
            scalar(&service),
            self.price.to_string(),
            or_dash(&self.computing_center_list),
        ]
    }
}

impl Row for Image {
    const HEADER: &'static [&'static str] = &["ID", "NAME", "CENTER", "FRAMEWORK", "BASE OS", "CUDA", "SPECS"];
    fn cells(&self) -> Vec<String> {
        vec![
            self.image_id.clone(),
            self.name.clone(),
            self.ai_center_id.clone(),
            or_dash(&self.framework),
            or_dash(&self.base_os.base_os),
            or_dash(&self.base_os.cuda_version),
            or_dash(&self.resource_spec),
        ]
    }
}

impl Row for Dataset {
    const HEADER: &'static [&'static str] = &["ID", "OWNER", "SIZE MB", "PRIVATE", "CENTERS"];
    fn cells(&self) -> Vec<String> {
        vec![
            self.dataset_id(),
            or_dash(&self.created_user),
            self.size_mb.to_string(),
            self.private.to_string(),
            joined(self.location.iter().map(|l| l.ai_center_id.as_str())),
        ]
    }
}

impl Row for JobInfo {
    const HEADER: &'static [&'static str] = &["JOB ID", "NAME", "USER", "STATUS", "TASKS", "CENTERS"];
    fn cells(&self) -> Vec<String> {
        let centers: BTreeSet<&str> =
            self.task_infos.iter().flat_map(|t| t.center_ids.iter().map(String::as_str)).collect();
        vec![
            self.job_id.clone(),
            self.name.clone(),
            self.user_name.clone(),
            self.status.as_str().into(),
            self.task_infos.len().to_string(),
            joined(centers),
        ]
    }
}

impl Row for CenterEvent {
    const HEADER: &'static [&'static str] = &["SEQ", "AT (ms)", "CENTER", "KIND", "JOB", "MESSAGE"];
    fn cells(&self) -> Vec<String> {
        vec![
            self.seq.to_string(),
            self.at.to_string(),
            self.center_id.clone(),
            self.kind.as_str().into(),
            self.job_id.clone().unwrap_or_else(|| "-".into()),
            self.message.clone(),
        ]
    }
}

impl Row for TaskInfo {
    const HEADER: &'static [&'static str] = &["TASK", "IMAGE", "SPEC", "REPLICAS", "CENTERS", "REPLICA STATUS"];
    fn cells(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.image_id.clone(),
            self.resource_spec_id.clone(),
            self.replica_number.to_string(),
            joined(self.center_ids.iter().map(String::as_str)),
            joined(self.replica_status.iter().map(|s| s.as_str())),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jcs_api::model::Window;
    use serde_json::json;

    #[test]
    fn listings_and_details_show_the_fields() {
        let job: JobInfo = serde_json::from_value(json!({
            "jobId": "job-1", "name": "resnet", "status": "pending", "statusReason": "", "userName": "alice",
            "desc": "", "createdAt": 1, "updatedAt": 1,
            "taskInfos": [{"name": "train", "command": "python train.py", "imageId": "img", "resourceSpecId": "gpu-1x",
                           "replicaNumber": 2, "centerIDs": ["a", "b"], "replicaStatus": ["pending", "running"]}]
        }))
        .unwrap();
        let listing = page(&Page::new(Window { page: 1, page_size: 2, offset: 0 }, 3, vec![job.clone()]));
        for text in ["JOB ID", "job-1", "alice", "pending", "a,b", "page 1 of 2, 3 in total"] {
            assert!(listing.contains(text), "{text} missing from\n{listing}");
        }
        let shown = super::job(&job);
        for text in ["FIELD", "userName", "REPLICA STATUS", "pending,running", "gpu-1x"] {
            assert!(shown.contains(text), "{text} missing from\n{shown}");
        }
        assert!(!shown.contains("taskInfos"));
    }

    #[test]
    fn details_spell_out_nested_values_one_leaf_per_row() {
        let object = json!({"id": "c", "geometry": [1.5, 2.0], "power": {"device_watts": {"gpu": 300}}, "config": {},
                            "location": [{"ai_center_id": "a"}, {"ai_center_id": "b"}], "reason": ""});
        let mut leaves = Vec::new();
        flatten(String::new(), &object, &mut leaves);
        let mut leaves: Vec<(&str, &str)> = leaves.iter().map(|(f, v)| (f.as_str(), v.as_str())).collect();
        leaves.sort();
        assert_eq!(
            leaves,
            vec![
                ("config", "{}"),
                ("geometry", "[1.5,2.0]"),
                ("id", "c"),
                ("location[0].ai_center_id", "a"),
                ("location[1].ai_center_id", "b"),
                ("power.device_watts.gpu", "300"),
                ("reason", "-"),
            ]
        );
    }
}

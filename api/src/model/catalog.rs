//! Catalog objects: centers (Table 1), resource specs (Table 3), monitoring (Table 4),
//! images (Table 5) and datasets (Table 6), with jcs's extension fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::ObjectKind;
use crate::error::ApiError;
use crate::quantity::ResourceAmounts;
use crate::validate::{self, MAX_ID_LEN, MAX_TEXT_LEN};

/// A center's availability (Table 1 `status`).
pub mod center_status {
    pub const UNAVAILABLE: i32 = 0;
    pub const AVAILABLE: i32 = 1;
    pub const UNKNOWN: i32 = 2;
}

/// An AI computing center (Table 1) and how jcs reaches and judges it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Center {
    /// Unique id, `[A-Za-z0-9._-]`, < 64 bytes.
    pub ai_center_id: String,
    pub name: String,
    pub region: String,
    /// 0 unavailable, 1 available, 2 unknown (the default until monitoring reports).
    #[serde(default = "default_center_status")]
    pub status: i32,
    /// `[longitude, latitude]` in degrees.
    #[serde(default)]
    pub geometry: [f64; 2],
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub updated_at: i64,
    /// Extension: the adapter that fronts this center's native platform.
    #[serde(default)]
    pub adapter: AdapterEndpoint,
    /// Extension: declared security grade (higher is stricter); monitoring may update it.
    #[serde(default)]
    pub security_grade: i32,
    /// Extension: power model used by the energy strategy (standard formula 1).
    #[serde(default)]
    pub power: PowerModel,
    /// Extension: where the center sits in the network.
    #[serde(default)]
    pub network: NetworkPosition,
    /// Extension: relative speed per device kind (`{"gpu": 1.3}`), 1.0 when absent.
    #[serde(default)]
    pub performance: BTreeMap<String, f64>,
}

fn default_center_status() -> i32 {
    center_status::UNKNOWN
}

/// Extension: which adapter serves a center and where it is.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdapterEndpoint {
    /// Adapter type: `local`, `sim`, `slurm`, `kubernetes`, … (empty: none configured yet).
    #[serde(default)]
    pub kind: String,
    /// How to reach the native API (URL or address).
    #[serde(default)]
    pub endpoint: String,
    /// Adapter-specific settings.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
}

/// Extension: a center's power draw, in watts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PowerModel {
    /// Static power while the job's data is copied in (formula 1, `P_static`).
    #[serde(default)]
    pub static_watts: f64,
    /// Execution power per device while running (formula 1, `P_exe`), e.g. `{"gpu": 300}`.
    #[serde(default)]
    pub device_watts: BTreeMap<String, f64>,
}

/// Extension: a center's network position.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkPosition {
    /// Site or availability zone; centers on one site reach each other over internal IP.
    #[serde(default)]
    pub site: String,
    /// Uplink bandwidth in Mbit/s.
    #[serde(default)]
    pub bandwidth_mbps: f64,
    /// Typical latency to the scheduler in ms.
    #[serde(default)]
    pub latency_ms: f64,
    /// Latency jitter in ms.
    #[serde(default)]
    pub jitter_ms: f64,
    /// Packet loss, percent (0..=100).
    #[serde(default)]
    pub loss_pct: f64,
}

fn check_number(field: &str, value: f64, min: f64, max: f64) -> Result<(), ApiError> {
    if !value.is_finite() || value < min || value > max {
        return Err(ApiError::invalid(field, format!("is {value}, must be between {min} and {max}")));
    }
    Ok(())
}

impl Center {
    pub fn validate(&self) -> Result<(), ApiError> {
        validate::id("ai_center_id", &self.ai_center_id, MAX_ID_LEN)?;
        validate::text("name", &self.name, MAX_ID_LEN)?;
        validate::text("region", &self.region, MAX_ID_LEN)?;
        validate::range("status", self.status.into(), 0, 2)?;
        check_number("geometry[0]", self.geometry[0], -180.0, 180.0)?;
        check_number("geometry[1]", self.geometry[1], -90.0, 90.0)?;
        validate::optional_text("adapter.kind", &self.adapter.kind, MAX_ID_LEN)?;
        validate::optional_text("adapter.endpoint", &self.adapter.endpoint, MAX_TEXT_LEN)?;
        validate::range("security_grade", self.security_grade.into(), 0, 10)?;
        check_number("power.static_watts", self.power.static_watts, 0.0, 1e9)?;
        for (device, watts) in &self.power.device_watts {
            check_number(&format!("power.device_watts.{device}"), *watts, 0.0, 1e9)?;
        }
        validate::optional_text("network.site", &self.network.site, MAX_ID_LEN)?;
        check_number("network.bandwidth_mbps", self.network.bandwidth_mbps, 0.0, 1e9)?;
        check_number("network.latency_ms", self.network.latency_ms, 0.0, 1e6)?;
        check_number("network.jitter_ms", self.network.jitter_ms, 0.0, 1e6)?;
        check_number("network.loss_pct", self.network.loss_pct, 0.0, 100.0)?;
        for (device, factor) in &self.performance {
            check_number(&format!("performance.{device}"), *factor, 0.0, 1e3)?;
        }
        Ok(())
    }
}

/// `service_type` of a resource spec (Table 3).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ServiceType {
    Interactive,
    #[default]
    Batch,
    Streaming,
}

/// A resource spec (Table 3): a bundle users request by id.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    pub resource_spec_id: String,
    pub resource_spec_name: String,
    /// Kubernetes-style quantities: `{"cpu":"8","memory":"64Gi","gpu":"1"}`.
    pub resource_quantity: BTreeMap<String, String>,
    #[serde(default)]
    pub service_type: ServiceType,
    /// Default price (per hour, in the operator's unit).
    #[serde(default)]
    pub price: i64,
    /// Centers offering this spec: the standard's comma-separated string (an array is
    /// accepted too).
    #[serde(deserialize_with = "comma_list_or_array")]
    pub computing_center_list: String,
    /// Extension: per-center price overriding `price`.
    #[serde(default)]
    pub center_prices: BTreeMap<String, i64>,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub updated_at: i64,
}

fn comma_list_or_array<'de, D: Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        Text(String),
    }
    Ok(match ListOrString::deserialize(de)? {
        ListOrString::Text(text) => text,
        ListOrString::List(items) => items.join(","),
    })
}

impl ResourceSpec {
    pub fn validate(&self) -> Result<ResourceAmounts, ApiError> {
        validate::id("resource_spec_id", &self.resource_spec_id, MAX_ID_LEN)?;
        validate::text("resource_spec_name", &self.resource_spec_name, MAX_ID_LEN)?;
        if self.resource_quantity.is_empty() {
            return Err(ApiError::invalid("resource_quantity", "must name at least one resource"));
        }
        validate::range("price", self.price, 0, i64::MAX)?;
        validate::id_list("computing_center_list", &self.computing_center_list)?;
        for (center, price) in &self.center_prices {
            validate::id("center_prices", center, MAX_ID_LEN)?;
            validate::range(&format!("center_prices.{center}"), *price, 0, i64::MAX)?;
        }
        ResourceAmounts::from_quantities(&self.resource_quantity)
            .map_err(|(key, err)| ApiError::invalid(&format!("resource_quantity.{key}"), err))
    }

    /// The centers offering this spec.
    pub fn centers(&self) -> Vec<String> {
        validate::split_list(&self.computing_center_list)
    }

    /// The catalog objects this spec points at.
    pub fn references(&self) -> Vec<(ObjectKind, String)> {
        let mut refs: Vec<_> = self.centers().into_iter().map(|c| (ObjectKind::Center, c)).collect();
        refs.extend(self.center_prices.keys().map(|c| (ObjectKind::Center, c.clone())));
        refs
    }
}

/// `base_os` of an image (Table 5).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BaseOs {
    #[serde(default)]
    pub base_os: String,
    #[serde(default)]
    pub cuda_version: String,
}

/// An image (Table 5), held by one center.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Image {
    pub image_id: String,
    pub name: String,
    /// The center that holds the image.
    pub ai_center_id: String,
    #[serde(default)]
    pub base_os: BaseOs,
    /// Frameworks, e.g. `"TensorFlow,PyTorch"`.
    #[serde(default)]
    pub framework: String,
    /// Specs the image fits: comma-separated spec ids (an array is accepted too).
    #[serde(default, deserialize_with = "comma_list_or_array")]
    pub resource_spec: String,
    /// Extension: the native reference (container image, module list, conda env).
    #[serde(default)]
    pub reference: String,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub updated_at: i64,
}

impl Image {
    pub fn validate(&self) -> Result<(), ApiError> {
        validate::id("image_id", &self.image_id, MAX_ID_LEN)?;
        validate::text("name", &self.name, MAX_ID_LEN)?;
        validate::id("ai_center_id", &self.ai_center_id, MAX_ID_LEN)?;
        validate::optional_text("base_os.base_os", &self.base_os.base_os, MAX_ID_LEN)?;
        validate::optional_text("base_os.cuda_version", &self.base_os.cuda_version, MAX_ID_LEN)?;
        validate::optional_text("framework", &self.framework, MAX_TEXT_LEN)?;
        validate::id_list("resource_spec", &self.resource_spec)?;
        validate::optional_text("reference", &self.reference, MAX_TEXT_LEN)?;
        Ok(())
    }

    /// Spec ids this image fits.
    pub fn specs(&self) -> Vec<String> {
        validate::split_list(&self.resource_spec)
    }

    /// The catalog objects this image points at.
    pub fn references(&self) -> Vec<(ObjectKind, String)> {
        let mut refs = vec![(ObjectKind::Center, self.ai_center_id.clone())];
        refs.extend(self.specs().into_iter().map(|s| (ObjectKind::ResourceSpec, s)));
        refs
    }
}

/// One past download of a dataset replica (Table 6 `download_state`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DownloadRecord {
    /// Unix ms when the download ended.
    pub at: i64,
    /// `success`, `interrupted` or `failed`.
    pub outcome: String,
    #[serde(default)]
    pub duration_ms: i64,
}

/// A replica of a dataset at one center (Table 6 `location`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatasetLocation {
    pub dataset_url: String,
    /// `r` or `rw`.
    pub access: String,
    pub ai_center_id: String,
    #[serde(default)]
    pub download_state: Vec<DownloadRecord>,
    /// Bytes/s, 0 = unlimited.
    #[serde(default)]
    pub download_rate_limit: i64,
    /// 0 = unlimited.
    #[serde(default)]
    pub concurrency_limit: i64,
    #[serde(default)]
    pub current_downloads: i64,
    #[serde(default)]
    pub network_topology: String,
    /// Historical mean download time, seconds.
    #[serde(default)]
    pub download_cost: f64,
}

/// A dataset version and its replicas (Table 6). Its id is `data_name@data_version`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    pub data_name: String,
    pub data_version: String,
    #[serde(default)]
    pub created_user: String,
    #[serde(default)]
    pub location: Vec<DatasetLocation>,
    /// Extension: size in MB (data-aware scheduling moves small data, not large).
    #[serde(default)]
    pub size_mb: i64,
    /// Extension: private data never leaves the centers that hold it.
    #[serde(default)]
    pub private: bool,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub updated_at: i64,
}

impl Dataset {
    /// The path id: `data_name@data_version`.
    pub fn dataset_id(&self) -> String {
        format!("{}@{}", self.data_name, self.data_version)
    }

    pub fn validate(&self) -> Result<(), ApiError> {
        validate::id("data_name", &self.data_name, MAX_ID_LEN)?;
        validate::id("data_version", &self.data_version, MAX_ID_LEN)?;
        validate::optional_text("created_user", &self.created_user, MAX_ID_LEN)?;
        validate::range("size_mb", self.size_mb, 0, i64::MAX)?;
        for (i, loc) in self.location.iter().enumerate() {
            let field = |name: &str| format!("location[{i}].{name}");
            validate::text(&field("dataset_url"), &loc.dataset_url, MAX_TEXT_LEN)?;
            if loc.access != "r" && loc.access != "rw" {
                return Err(ApiError::invalid(&field("access"), "must be \"r\" or \"rw\""));
            }
            validate::id(&field("ai_center_id"), &loc.ai_center_id, MAX_ID_LEN)?;
            validate::range(&field("download_rate_limit"), loc.download_rate_limit, 0, i64::MAX)?;
            validate::range(&field("concurrency_limit"), loc.concurrency_limit, 0, i64::MAX)?;
            validate::range(&field("current_downloads"), loc.current_downloads, 0, i64::MAX)?;
            validate::optional_text(&field("network_topology"), &loc.network_topology, MAX_TEXT_LEN)?;
            check_number(&field("download_cost"), loc.download_cost, 0.0, f64::MAX)?;
            for (j, rec) in loc.download_state.iter().enumerate() {
                if !["success", "interrupted", "failed"].contains(&rec.outcome.as_str()) {
                    return Err(ApiError::invalid(
                        &field(&format!("download_state[{j}].outcome")),
                        "must be success, interrupted or failed",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The catalog objects this dataset points at.
    pub fn references(&self) -> Vec<(ObjectKind, String)> {
        self.location.iter().map(|l| (ObjectKind::Center, l.ai_center_id.clone())).collect()
    }
}

/// Most replicas one report may confirm.
pub const MAX_CONFIRMED_REPLICAS: usize = 100_000;

/// A center's monitoring report (Table 4). Units follow Table 2: memory in MB, storage in GB.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CenterMetrics {
    #[serde(default)]
    pub center_name: String,
    #[serde(default)]
    pub running_task_num: i64,
    #[serde(default)]
    pub waiting_task_num: i64,
    #[serde(default)]
    pub cpu_used: i64,
    #[serde(default)]
    pub cpu_free: i64,
    #[serde(default)]
    pub npu_used: i64,
    #[serde(default)]
    pub npu_free: i64,
    #[serde(default)]
    pub gpu_used: i64,
    #[serde(default)]
    pub gpu_free: i64,
    #[serde(default)]
    pub mlu_used: i64,
    #[serde(default)]
    pub mlu_free: i64,
    #[serde(default)]
    pub memory_used: i64,
    #[serde(default)]
    pub memory_free: i64,
    #[serde(default)]
    pub storage_used: i64,
    #[serde(default)]
    pub storage_free: i64,
    #[serde(default)]
    pub defineres_used: i64,
    #[serde(default)]
    pub defineres_free: i64,
    #[serde(default)]
    pub security_grade: i32,
    /// Set by jcs: Unix ms when the report was committed.
    #[serde(default)]
    pub reported_at: i64,
    /// Extension: replicas the center now runs or queues, as `jobId/taskIndex/replicaIndex`.
    /// Their in-flight ledger entries are released: this report's counters include them.
    /// Not stored with the report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confirmed_replicas: Vec<String>,
    /// Extension: what the center's nodes have free, grouped by shape — what one replica can
    /// get on one node. A replica fits a center only if one node can hold it, not merely the
    /// totals (ten nodes with 8 free CPUs each cannot run a 12-CPU replica). Empty when the
    /// center does not expose its nodes (a cloud or vendor platform): then the totals decide.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_free: Vec<NodeFree>,
}

/// Most node shapes one report may list.
pub const MAX_NODE_GROUPS: usize = 4096;

/// A group of a center's nodes that have the same resources free (per node; memory in MB).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct NodeFree {
    /// How many nodes have exactly this free.
    pub count: i64,
    #[serde(default)]
    pub cpu_free: i64,
    #[serde(default)]
    pub gpu_free: i64,
    #[serde(default)]
    pub npu_free: i64,
    #[serde(default)]
    pub mlu_free: i64,
    #[serde(default)]
    pub memory_free: i64,
}

impl NodeFree {
    /// Groups per-node free amounts `[cpu, gpu, npu, mlu, memory]` by shape, in shape order, so
    /// that an adapter reports a thousand identical nodes as one line. Nodes whose free memory
    /// differs by a few MB would each be a shape of their own: past [`MAX_NODE_GROUPS`] shapes,
    /// free memory is rounded down to ever coarser steps (1 GiB, 2 GiB, …) until they fit, and
    /// if even 1 TiB steps do not, no shapes are given and the totals decide.
    pub fn group(nodes: impl IntoIterator<Item = [i64; 5]>) -> Vec<NodeFree> {
        let nodes: Vec<[i64; 5]> = nodes.into_iter().map(|node| node.map(|v| v.max(0))).collect();
        let mut step = 1;
        loop {
            let mut counts: BTreeMap<[i64; 5], i64> = BTreeMap::new();
            for node in &nodes {
                let mut shape = *node;
                shape[4] -= shape[4] % step;
                *counts.entry(shape).or_default() += 1;
            }
            if counts.len() <= MAX_NODE_GROUPS {
                return NodeFree::from_counts(counts);
            }
            if step >= 1 << 20 {
                return Vec::new();
            }
            step = if step == 1 { 1024 } else { step * 2 };
        }
    }

    fn from_counts(counts: BTreeMap<[i64; 5], i64>) -> Vec<NodeFree> {
        counts
            .into_iter()
            .map(|([cpu_free, gpu_free, npu_free, mlu_free, memory_free], count)| NodeFree {
                count,
                cpu_free,
                gpu_free,
                npu_free,
                mlu_free,
                memory_free,
            })
            .collect()
    }
}

/// A replica named in `confirmed_replicas`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRef {
    pub job_id: String,
    pub task: u32,
    pub replica: u32,
}

impl ReplicaRef {
    /// Parses `jobId/taskIndex/replicaIndex`.
    pub fn parse(text: &str) -> Option<ReplicaRef> {
        let mut parts = text.split('/');
        let (job_id, task, replica) = (parts.next()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
        (parts.next().is_none() && validate::id("jobId", job_id, MAX_ID_LEN).is_ok()).then(|| ReplicaRef {
            job_id: job_id.to_string(),
            task,
            replica,
        })
    }
}

impl CenterMetrics {
    pub fn validate(&self) -> Result<(), ApiError> {
        validate::optional_text("center_name", &self.center_name, MAX_ID_LEN)?;
        let counters = [
            ("running_task_num", self.running_task_num),
            ("waiting_task_num", self.waiting_task_num),
            ("cpu_used", self.cpu_used),
            ("cpu_free", self.cpu_free),
            ("npu_used", self.npu_used),
            ("npu_free", self.npu_free),
            ("gpu_used", self.gpu_used),
            ("gpu_free", self.gpu_free),
            ("mlu_used", self.mlu_used),
            ("mlu_free", self.mlu_free),
            ("memory_used", self.memory_used),
            ("memory_free", self.memory_free),
            ("storage_used", self.storage_used),
            ("storage_free", self.storage_free),
            ("defineres_used", self.defineres_used),
            ("defineres_free", self.defineres_free),
        ];
        validate::non_negative("", counters)?;
        validate::range("security_grade", self.security_grade.into(), 0, 10)?;
        if self.confirmed_replicas.len() > MAX_CONFIRMED_REPLICAS {
            let why = format!("lists {} replicas, at most {MAX_CONFIRMED_REPLICAS}", self.confirmed_replicas.len());
            return Err(ApiError::invalid("confirmed_replicas", why));
        }
        for (i, replica) in self.confirmed_replicas.iter().enumerate() {
            if ReplicaRef::parse(replica).is_none() {
                return Err(ApiError::invalid(
                    &format!("confirmed_replicas[{i}]"),
                    "must be jobId/taskIndex/replicaIndex",
                ));
            }
        }
        if self.node_free.len() > MAX_NODE_GROUPS {
            let why = format!("lists {} node shapes, at most {MAX_NODE_GROUPS}", self.node_free.len());
            return Err(ApiError::invalid("node_free", why));
        }
        for (i, group) in self.node_free.iter().enumerate() {
            validate::range(&format!("node_free[{i}].count"), group.count, 1, 1_000_000)?;
            let amounts = [
                ("cpu_free", group.cpu_free),
                ("gpu_free", group.gpu_free),
                ("npu_free", group.npu_free),
                ("mlu_free", group.mlu_free),
                ("memory_free", group.memory_free),
            ];
            validate::non_negative(&format!("node_free[{i}]."), amounts)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spec_accepts_the_standard_comma_string_and_an_array() {
        let base = json!({"resource_spec_id":"s1","resource_spec_name":"gpu-1",
            "resource_quantity":{"cpu":"8","memory":"64Gi","gpu":"1"},"price":3,
            "computing_center_list":"c1, c2"});
        let spec: ResourceSpec = serde_json::from_value(base.clone()).unwrap();
        assert_eq!(spec.centers(), vec!["c1", "c2"]);
        spec.validate().unwrap();
        let mut arr = base;
        arr["computing_center_list"] = json!(["c1", "c2"]);
        let spec: ResourceSpec = serde_json::from_value(arr).unwrap();
        assert_eq!(spec.computing_center_list, "c1,c2");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_value::<Center>(json!({"ai_center_id":"c","name":"n",
            "region":"r","statsu":1}))
        .unwrap_err();
        assert!(err.to_string().contains("statsu"), "{err}");
    }

    #[test]
    fn center_validation_names_the_field() {
        let mut c: Center = serde_json::from_value(json!({"ai_center_id":"c","name":"n","region":"r"})).unwrap();
        assert_eq!(c.status, center_status::UNKNOWN);
        c.validate().unwrap();
        c.geometry = [200.0, 0.0];
        assert!(c.validate().unwrap_err().message.starts_with("geometry[0]"));
        c.geometry = [0.0, 0.0];
        c.status = 7;
        assert!(c.validate().unwrap_err().message.starts_with("status"));
    }

    #[test]
    fn dataset_id_and_access_rule() {
        let mut d: Dataset = serde_json::from_value(json!({"data_name":"imagenet","data_version":"v1",
            "location":[{"dataset_url":"s3://x","access":"r","ai_center_id":"c1"}]}))
        .unwrap();
        assert_eq!(d.dataset_id(), "imagenet@v1");
        d.validate().unwrap();
        d.location[0].access = "w".into();
        assert!(d.validate().unwrap_err().message.starts_with("location[0].access"));
    }

    #[test]
    fn node_shapes_are_validated_and_grouped() {
        let mut m: CenterMetrics = serde_json::from_value(json!({"cpu_free": 16,
            "node_free": [{"count": 2, "cpu_free": 8, "memory_free": 32000}]}))
        .unwrap();
        m.validate().unwrap();
        assert_eq!(m.node_free[0].gpu_free, 0, "omitted kinds are 0");
        m.node_free[0].count = 0;
        assert_eq!(m.validate().unwrap_err().message, "node_free[0].count: is 0, must be between 1 and 1000000");
        m.node_free[0].count = 1;
        m.node_free[0].gpu_free = -1;
        assert!(m.validate().unwrap_err().message.starts_with("node_free[0].gpu_free"));
        m.node_free = vec![NodeFree { count: 1, ..NodeFree::default() }; MAX_NODE_GROUPS + 1];
        assert!(m.validate().unwrap_err().message.starts_with("node_free: lists 4097"));
        let err = serde_json::from_value::<CenterMetrics>(json!({"node_free": [{"count": 1, "cpus": 8}]})).unwrap_err();
        assert!(err.to_string().contains("cpus"), "{err}");
        assert_eq!(
            NodeFree::group([[8, 0, 0, 0, 100], [4, 1, 0, 0, 50], [8, 0, 0, 0, 100], [-2, 0, 0, 0, 0]]),
            vec![
                NodeFree { count: 1, ..NodeFree::default() },
                NodeFree { count: 1, cpu_free: 4, gpu_free: 1, memory_free: 50, ..NodeFree::default() },
                NodeFree { count: 2, cpu_free: 8, memory_free: 100, ..NodeFree::default() },
            ],
            "by shape, negative amounts as none"
        );
        // 5,000 nodes whose free memory differs by a MB each: rounded down to whole GiB.
        let ragged = NodeFree::group((0..5000).map(|i| [4, 0, 0, 0, 10_000 + i]));
        assert!(ragged.len() <= MAX_NODE_GROUPS && ragged.len() > 1, "{}", ragged.len());
        assert_eq!(ragged.iter().map(|n| n.count).sum::<i64>(), 5000, "no node is lost");
        assert!(ragged.iter().all(|n| n.memory_free % 1024 == 0 && n.memory_free >= 9 * 1024), "{ragged:?}");
        // Shapes that differ in CPUs cannot be merged by memory: past the cap, none are given.
        assert!(NodeFree::group((0..5000).map(|i| [i, 0, 0, 0, 0])).is_empty());
    }
}

//! Catalog objects: centers (Table 1), resource specs (Table 3), images (Table 5) and datasets
//! (Table 6), with jcs's extension fields. A center's monitoring (Table 4) is in
//! [`super::metrics`].

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
    /// Unique id, `[A-Za-z0-9._-]` not starting with `.`, < 64 bytes.
    #[schema(max_length = 63, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$")]
    pub ai_center_id: String,
    /// At most 63 characters.
    #[schema(
        max_length = 63,
        pattern = "^[\\t\\n \\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*\
        [^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]\
        [^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: String,
    /// At most 63 characters.
    #[schema(
        max_length = 63,
        pattern = "^[\\t\\n \\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*\
        [^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]\
        [^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$"
    )]
    pub region: String,
    /// 0 unavailable, 1 available, 2 unknown (the default until monitoring reports).
    #[serde(default = "default_center_status")]
    #[schema(minimum = 0, maximum = 2)]
    pub status: i32,
    /// `[longitude, latitude]` in degrees.
    #[serde(default)]
    #[schema(schema_with = super::patterns::geometry_schema)]
    pub geometry: [f64; 2],
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub updated_at: i64,
    /// Extension: the adapter that fronts this center's native platform.
    #[serde(default)]
    pub adapter: AdapterEndpoint,
    /// Extension: declared security grade, 0..=10 (higher is stricter); monitoring may update it.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 10)]
    pub security_grade: i32,
    /// Extension: power model used by the energy strategy (standard formula 1).
    #[serde(default)]
    pub power: PowerModel,
    /// Extension: where the center sits in the network.
    #[serde(default)]
    pub network: NetworkPosition,
    /// Extension: relative speed per device kind (`{"gpu": 1.3}`), 1.0 when absent.
    #[serde(default)]
    #[schema(schema_with = super::patterns::performance_schema)]
    pub performance: BTreeMap<String, f64>,
}

fn default_center_status() -> i32 {
    center_status::UNKNOWN
}

/// Extension: which adapter serves a center and where it is.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdapterEndpoint {
    /// Adapter type: `local`, `sim` or `slurm`; empty: none, and the scheduler places nothing here.
    #[serde(default)]
    #[schema(value_type = super::patterns::AdapterKind, inline)]
    pub kind: String,
    /// How to reach the native API (URL or address), at most 1024 characters.
    #[serde(default)]
    #[schema(max_length = 1024, pattern = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$")]
    pub endpoint: String,
    /// Adapter-specific settings: an object (`{}` when there are none; null reads as `{}`).
    #[serde(default = "empty_object", deserialize_with = "object_or_null", serialize_with = "as_object")]
    #[schema(value_type = Object, nullable)]
    pub config: serde_json::Value,
}

impl Default for AdapterEndpoint {
    fn default() -> Self {
        AdapterEndpoint { kind: String::new(), endpoint: String::new(), config: empty_object() }
    }
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// An adapter config is an object; null (and a value stored before this rule) reads as `{}`.
fn object_or_null<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<serde_json::Value, D::Error> {
    match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::Null => Ok(empty_object()),
        object @ serde_json::Value::Object(_) => Ok(object),
        other => Err(serde::de::Error::custom(format!("must be an object, not {other}"))),
    }
}

/// Writes a config that is not an object (a null stored before [`object_or_null`]) as `{}`.
fn as_object<S: serde::Serializer>(config: &serde_json::Value, serializer: S) -> Result<S::Ok, S::Error> {
    match config {
        serde_json::Value::Object(_) => config.serialize(serializer),
        _ => empty_object().serialize(serializer),
    }
}

/// Extension: a center's power draw, in watts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PowerModel {
    /// Static power while the job's data is copied in (formula 1, `P_static`), 0..=1e9.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1000000000)]
    pub static_watts: f64,
    /// Execution power per device while running (formula 1, `P_exe`), e.g. `{"gpu": 300}`.
    #[serde(default)]
    #[schema(schema_with = super::patterns::device_watts_schema)]
    pub device_watts: BTreeMap<String, f64>,
}

/// Extension: a center's network position.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkPosition {
    /// Site or availability zone; centers on one site reach each other over internal IP.
    #[serde(default)]
    #[schema(max_length = 63, pattern = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$")]
    pub site: String,
    /// Uplink bandwidth in Mbit/s (0..=1e9).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1000000000)]
    pub bandwidth_mbps: f64,
    /// Typical latency to the scheduler in ms (0..=1e6).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1000000)]
    pub latency_ms: f64,
    /// Latency jitter in ms (0..=1e6).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1000000)]
    pub jitter_ms: f64,
    /// Packet loss, percent (0..=100).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 100)]
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
    #[schema(max_length = 63, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$")]
    pub resource_spec_id: String,
    /// At most 63 characters.
    #[schema(
        max_length = 63,
        pattern = "^[\\t\\n \\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*\
        [^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]\
        [^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$"
    )]
    pub resource_spec_name: String,
    /// Kubernetes-style quantities: `{"cpu":"8","memory":"64Gi","gpu":"1"}`.
    #[schema(schema_with = super::patterns::resource_quantity_schema)]
    pub resource_quantity: BTreeMap<String, String>,
    #[serde(default)]
    pub service_type: ServiceType,
    /// Default price (per hour, in the operator's unit), at least 0.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub price: i64,
    /// Centers offering this spec: the standard's comma-separated string (an array is
    /// accepted too).
    #[serde(deserialize_with = "comma_list_or_array")]
    #[schema(schema_with = super::patterns::id_list_schema)]
    pub computing_center_list: String,
    /// Extension: per-center price overriding `price`.
    #[serde(default)]
    #[schema(schema_with = super::patterns::center_prices_schema)]
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
    #[schema(max_length = 63, pattern = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$")]
    pub base_os: String,
    #[serde(default)]
    #[schema(max_length = 63, pattern = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$")]
    pub cuda_version: String,
}

/// An image (Table 5), held by one center.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Image {
    #[schema(max_length = 63, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$")]
    pub image_id: String,
    /// At most 63 characters.
    #[schema(
        max_length = 63,
        pattern = "^[\\t\\n \\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*\
        [^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]\
        [^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: String,
    /// The center that holds the image.
    #[schema(max_length = 63, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$")]
    pub ai_center_id: String,
    #[serde(default)]
    pub base_os: BaseOs,
    /// Frameworks, e.g. `"TensorFlow,PyTorch"`.
    #[serde(default)]
    #[schema(max_length = 1024, pattern = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$")]
    pub framework: String,
    /// Specs the image fits: comma-separated spec ids (an array is accepted too).
    #[serde(default, deserialize_with = "comma_list_or_array")]
    #[schema(schema_with = super::patterns::id_list_schema)]
    pub resource_spec: String,
    /// Extension: the native reference (container image, module list, conda env).
    #[serde(default)]
    #[schema(max_length = 1024, pattern = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$")]
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
    #[schema(value_type = super::patterns::DownloadOutcome, inline)]
    pub outcome: String,
    #[serde(default)]
    pub duration_ms: i64,
}

/// A replica of a dataset at one center (Table 6 `location`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatasetLocation {
    /// At most 1024 characters.
    #[schema(
        max_length = 1024,
        pattern = "^[\\t\\n \\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*\
        [^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]\
        [^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$"
    )]
    pub dataset_url: String,
    /// `r` or `rw`.
    #[schema(value_type = super::patterns::DatasetAccess, inline)]
    pub access: String,
    #[schema(max_length = 63, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$")]
    pub ai_center_id: String,
    #[serde(default)]
    pub download_state: Vec<DownloadRecord>,
    /// Bytes/s, 0 = unlimited.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub download_rate_limit: i64,
    /// 0 = unlimited.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub concurrency_limit: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub current_downloads: i64,
    #[serde(default)]
    #[schema(max_length = 1024, pattern = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$")]
    pub network_topology: String,
    /// Historical mean download time, seconds.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub download_cost: f64,
}

/// A dataset version and its replicas (Table 6). Its id is `data_name@data_version`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    #[schema(max_length = 63, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$")]
    pub data_name: String,
    #[schema(max_length = 63, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$")]
    pub data_version: String,
    #[serde(default)]
    #[schema(max_length = 63, pattern = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$")]
    pub created_user: String,
    #[serde(default)]
    pub location: Vec<DatasetLocation>,
    /// Extension: size in MB (data-aware scheduling moves small data, not large), at least 0.
    #[serde(default)]
    #[schema(minimum = 0)]
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

#[cfg(test)]
#[path = "catalog_tests.rs"]
mod tests;

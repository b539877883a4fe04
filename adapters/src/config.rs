//! Configuration shared by the built-in adapters. A center's `adapter.config` is free-form JSON;
//! each adapter declares a typed, `deny_unknown_fields` struct and parses it here so that every
//! mistake comes back as one precise [`AdapterError::Config`] naming the field. Capacities are
//! written as the standard's quantity strings and images as a list of names, the same way for
//! every adapter.

use std::collections::BTreeMap;

use jcs_api::quantity::ResourceAmounts;
use serde::de::DeserializeOwned;

use crate::{AdapterError, NativeImage, Result};

/// Parses `value` (absent or `null`: every field takes its default) into `T`; the error names
/// the center, the adapter and the path of the offending field.
pub(crate) fn parse<T: DeserializeOwned>(kind: &str, center: &str, value: &serde_json::Value) -> Result<T> {
    let value = if value.is_null() { serde_json::Value::Object(Default::default()) } else { value.clone() };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." { String::new() } else { format!(" at '{path}'") };
        AdapterError::Config(format!("center '{center}': {kind} adapter config{at}: {}", e.inner()))
    })
}

/// Converts a `capacity` map of quantities (`{"cpu":"8","memory":"16Gi"}`) to Table 2 units.
pub(crate) fn capacity(center: &str, quantities: &BTreeMap<String, String>) -> Result<ResourceAmounts> {
    ResourceAmounts::from_quantities(quantities)
        .map_err(|(key, e)| AdapterError::Config(format!("center '{center}': capacity.{key}: {e}")))
}

/// Builds a quantity map from literal pairs (for config defaults).
pub(crate) fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The images a center declares in its config. Without a list the center takes any image: the
/// catalog's Table 5 (which the scheduler checks) is then the only record of what it holds.
#[derive(Debug, Clone)]
pub(crate) struct Images(Option<Vec<String>>);

impl Images {
    pub(crate) fn new(names: Option<Vec<String>>) -> Self {
        Images(names)
    }

    /// The images as the adapter reports them (the name is also the reference).
    pub(crate) fn native(&self) -> Vec<NativeImage> {
        let names = self.0.iter().flatten();
        names.map(|name| NativeImage { name: name.clone(), reference: name.clone() }).collect()
    }

    /// A launch may name no image (empty), or any image when the center lists none, or one
    /// of those it lists.
    pub(crate) fn check(&self, image: &str) -> Result<()> {
        match &self.0 {
            Some(names) if !image.is_empty() && !names.iter().any(|name| name == image) => {
                Err(AdapterError::Rejected(format!("image '{image}' is not present at this center (it has {names:?})")))
            }
            _ => Ok(()),
        }
    }
}

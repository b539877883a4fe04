//! Which adapter serves which `adapter.kind`: a table of builders, so that a new center kind
//! (a Docker engine, an out-of-process adapter) plugs in by registering one entry, without
//! touching the others.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use jcs_api::model::Center;

use crate::{local, sim, slurm, Adapter, AdapterContext, AdapterError, Result};

/// Builds a center's adapter from the center's id, its `adapter.config` and the cluster's
/// context.
pub type Builder = fn(&str, &serde_json::Value, &AdapterContext) -> Result<Arc<dyn Adapter>>;

/// The adapter kinds a node can drive, each with its builder.
pub struct Registry {
    builders: BTreeMap<&'static str, Builder>,
}

static BUILTIN: LazyLock<Registry> = LazyLock::new(|| {
    let mut registry = Registry::empty();
    registry.register("local", |id, config, context| Ok(Arc::new(local::LocalCenter::new(id, config, context)?)));
    registry.register("sim", |id, config, context| Ok(Arc::new(sim::SimCenter::new(id, config, context)?)));
    registry.register("slurm", |id, config, context| Ok(Arc::new(slurm::SlurmCenter::new(id, config, context)?)));
    registry
});

impl Registry {
    /// A registry that knows no kind.
    pub fn empty() -> Self {
        Registry { builders: BTreeMap::new() }
    }

    /// The kinds built into jcs: `local`, `sim`, `slurm`.
    pub fn builtin() -> &'static Registry {
        &BUILTIN
    }

    /// Registers `kind` (a later registration of the same kind replaces the earlier).
    pub fn register(&mut self, kind: &'static str, builder: Builder) {
        self.builders.insert(kind, builder);
    }

    /// The registered kinds, in name order.
    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.builders.keys().copied()
    }

    /// Whether `kind` is registered.
    pub fn knows(&self, kind: &str) -> bool {
        self.builders.contains_key(kind)
    }

    /// Builds the adapter a center's `adapter` field names.
    pub fn build(&self, center: &Center, context: &AdapterContext) -> Result<Arc<dyn Adapter>> {
        let endpoint = &center.adapter;
        match self.builders.get(endpoint.kind.as_str()) {
            Some(builder) => builder(&center.ai_center_id, &endpoint.config, context),
            None if endpoint.kind.is_empty() => {
                Err(AdapterError::Config(format!("center '{}' names no adapter", center.ai_center_id)))
            }
            None => {
                let known: Vec<&str> = self.kinds().collect();
                Err(AdapterError::Config(format!(
                    "unknown adapter type '{}', not one of {}",
                    endpoint.kind,
                    known.join(", ")
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn center(kind: &str) -> Center {
        serde_json::from_value(serde_json::json!({"ai_center_id": "c1", "name": "c1", "region": "r",
            "adapter": {"kind": kind, "config": {}}}))
        .unwrap()
    }

    #[test]
    fn a_kind_builds_only_once_registered() {
        let dir = tempfile::tempdir().unwrap();
        let context = AdapterContext::new(dir.path(), "test");
        assert_eq!(Registry::builtin().kinds().collect::<Vec<_>>(), ["local", "sim", "slurm"]);
        let built = Registry::builtin().build(&center("sim"), &context).map(|_| ());
        assert!(built.is_ok(), "{built:?}");
        let mut registry = Registry::empty();
        let unknown = registry.build(&center("sim"), &context).map(|_| ()).unwrap_err();
        assert!(unknown.to_string().contains("unknown adapter type 'sim'"), "{unknown}");
        registry.register("sim", |id, config, context| Ok(Arc::new(sim::SimCenter::new(id, config, context)?)));
        assert!(registry.knows("sim") && !registry.knows("docker"));
        assert!(registry.build(&center("sim"), &context).is_ok());
        let none = registry.build(&center(""), &context).map(|_| ()).unwrap_err();
        assert!(none.to_string().contains("names no adapter"), "{none}");
    }
}

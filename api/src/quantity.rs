//! Kubernetes-style resource quantities, as the standard's Table 3 writes them
//! (`{"cpu":"1","memory":"2Gi","gpu":"1"}`), and their conversion to Table 2's units.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a quantity string was rejected.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum QuantityError {
    #[error("empty quantity")]
    Empty,
    #[error("'{0}' is not a number with an optional unit suffix (m, k, M, G, T, Ki, Mi, Gi, Ti)")]
    Malformed(String),
    #[error("'{0}' is negative")]
    Negative(String),
}

/// Parses a quantity into its value in base units (`"2Gi"` → 2147483648, `"500m"` → 0.5).
pub fn parse_quantity(text: &str) -> Result<f64, QuantityError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(QuantityError::Empty);
    }
    let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let multiplier = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        _ => return Err(QuantityError::Malformed(text.into())),
    };
    let value: f64 = number.parse().map_err(|_| QuantityError::Malformed(text.into()))?;
    if !value.is_finite() {
        return Err(QuantityError::Malformed(text.into()));
    }
    if value < 0.0 {
        return Err(QuantityError::Negative(text.into()));
    }
    Ok(value * multiplier)
}

/// Amounts per device kind in Table 2's units — a spec's demand or a center's free capacity:
/// cores and device counts as numbers, memory in MB, storage in GB, anything else under its own
/// name (`user_define`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceAmounts {
    pub cpu: f64,
    pub gpu: f64,
    pub npu: f64,
    pub mlu: f64,
    pub memory_mb: f64,
    pub storage_gb: f64,
    pub user_define: BTreeMap<String, f64>,
}

impl ResourceAmounts {
    /// Every kind these amounts name (`cpu`, `gpu`, `npu`, `mlu`, `memory`, `storage`, then the
    /// user-defined ones), with its amount.
    pub fn kinds(&self) -> impl Iterator<Item = (&str, f64)> + '_ {
        let fixed = [("cpu", self.cpu), ("gpu", self.gpu), ("npu", self.npu), ("mlu", self.mlu)];
        let fixed = fixed.into_iter().chain([("memory", self.memory_mb), ("storage", self.storage_gb)]);
        fixed.chain(self.user_define.iter().map(|(kind, v)| (kind.as_str(), *v)))
    }

    /// The amount of one kind, as [`ResourceAmounts::kinds`] names them (0 when absent).
    pub fn amount(&self, kind: &str) -> f64 {
        match kind {
            "cpu" => self.cpu,
            "gpu" => self.gpu,
            "npu" => self.npu,
            "mlu" => self.mlu,
            "memory" => self.memory_mb,
            "storage" => self.storage_gb,
            other => self.user_define.get(other).copied().unwrap_or(0.0),
        }
    }

    /// `self += factor × other`, kind by kind.
    pub fn add_scaled(&mut self, other: &ResourceAmounts, factor: f64) {
        self.cpu += factor * other.cpu;
        self.gpu += factor * other.gpu;
        self.npu += factor * other.npu;
        self.mlu += factor * other.mlu;
        self.memory_mb += factor * other.memory_mb;
        self.storage_gb += factor * other.storage_gb;
        for (kind, v) in &other.user_define {
            *self.user_define.entry(kind.clone()).or_default() += factor * v;
        }
    }

    /// Converts a spec's `resource_quantity` map; the error names the offending key.
    pub fn from_quantities(map: &BTreeMap<String, String>) -> Result<Self, (String, QuantityError)> {
        let mut demand = ResourceAmounts::default();
        for (key, text) in map {
            let value = parse_quantity(text).map_err(|e| (key.clone(), e))?;
            match key.as_str() {
                "cpu" => demand.cpu = value,
                "gpu" | "nvidia.com/gpu" => demand.gpu = value,
                "npu" | "huawei.com/Ascend910" => demand.npu = value,
                "mlu" | "cambricon.com/mlu" => demand.mlu = value,
                "memory" => demand.memory_mb = value / 1e6,
                "storage" | "ephemeral-storage" => demand.storage_gb = value / 1e9,
                other => {
                    demand.user_define.insert(other.to_string(), value);
                }
            }
        }
        Ok(demand)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_add_and_name_their_kinds() {
        let mut a = ResourceAmounts { cpu: 2.0, memory_mb: 100.0, ..ResourceAmounts::default() };
        let mut b = ResourceAmounts { cpu: 1.0, gpu: 1.0, ..ResourceAmounts::default() };
        b.user_define.insert("ib".into(), 2.0);
        a.add_scaled(&b, -1.0);
        assert_eq!((a.amount("cpu"), a.amount("gpu"), a.amount("ib"), a.amount("memory")), (1.0, -1.0, -2.0, 100.0));
        let kinds: Vec<&str> = a.kinds().map(|(kind, _)| kind).collect();
        assert_eq!(kinds, ["cpu", "gpu", "npu", "mlu", "memory", "storage", "ib"]);
        assert_eq!(a.amount("unknown"), 0.0);
    }
    use proptest::prelude::*;

    #[test]
    fn parses_the_standard_examples() {
        assert_eq!(parse_quantity("1").unwrap(), 1.0);
        assert_eq!(parse_quantity("2Gi").unwrap(), 2.0 * 1024.0 * 1024.0 * 1024.0);
        assert_eq!(parse_quantity("500m").unwrap(), 0.5);
        assert_eq!(parse_quantity("1.5k").unwrap(), 1500.0);
        assert!(matches!(parse_quantity("2Xi"), Err(QuantityError::Malformed(_))));
        assert!(matches!(parse_quantity("Gi"), Err(QuantityError::Malformed(_))));
        assert!(matches!(parse_quantity("-1"), Err(QuantityError::Negative(_))));
        assert!(matches!(parse_quantity(" "), Err(QuantityError::Empty)));
        assert!(parse_quantity("inf").is_err());
    }

    #[test]
    fn demand_converts_to_table_2_units() {
        let map: BTreeMap<String, String> = [("cpu", "8"), ("memory", "64G"), ("gpu", "1"), ("ib", "2")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let d = ResourceAmounts::from_quantities(&map).unwrap();
        assert_eq!((d.cpu, d.gpu, d.memory_mb), (8.0, 1.0, 64_000.0));
        assert_eq!(d.user_define["ib"], 2.0);
        let bad: BTreeMap<String, String> = [("memory".to_string(), "lots".to_string())].into();
        assert_eq!(ResourceAmounts::from_quantities(&bad).unwrap_err().0, "memory");
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,12}") { let _ = parse_quantity(&s); }

        #[test]
        fn integers_with_binary_suffixes_round_trip(n in 0u32..100_000, i in 0usize..4) {
            let (suffix, mult) = [("", 1.0), ("Ki", 1024.0), ("Mi", 1048576.0), ("Gi", 1073741824.0)][i];
            prop_assert_eq!(parse_quantity(&format!("{n}{suffix}")).unwrap(), n as f64 * mult);
        }
    }
}

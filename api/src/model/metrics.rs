//! A center's monitoring report (Table 4), with jcs's extensions: the replicas it confirms and
//! what its nodes have free.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::validate::{self, MAX_ID_LEN};

/// Most replicas one report may confirm.
pub const MAX_CONFIRMED_REPLICAS: usize = 100_000;

/// A center's monitoring report (Table 4). Units follow Table 2: memory in MB, storage in GB.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CenterMetrics {
    #[serde(default)]
    #[schema(max_length = 63, pattern = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$")]
    pub center_name: String,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub running_task_num: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub waiting_task_num: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub cpu_used: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub cpu_free: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub npu_used: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub npu_free: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub gpu_used: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub gpu_free: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub mlu_used: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub mlu_free: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub memory_used: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub memory_free: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub storage_used: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub storage_free: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub defineres_used: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub defineres_free: i64,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 10)]
    pub security_grade: i32,
    /// Set by jcs: Unix ms when the report was committed.
    #[serde(default)]
    pub reported_at: i64,
    /// Extension: replicas the center now runs or queues, as `jobId/taskIndex/replicaIndex`.
    /// Their in-flight ledger entries are released: this report's counters include them.
    /// Not stored with the report. At most 100000.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(
        max_items = 100000,
        pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}\
        /\\+?0*(?:[0-9]{1,9}|[1-3][0-9]{9}|4[01][0-9]{8}|42[0-8][0-9]{7}|429[0-3][0-9]{6}|4294[0-8][0-9]{5}\
        |42949[0-5][0-9]{4}|429496[0-6][0-9]{3}|4294967[01][0-9]{2}|42949672[0-8][0-9]|429496729[0-5])\
        /\\+?0*(?:[0-9]{1,9}|[1-3][0-9]{9}|4[01][0-9]{8}|42[0-8][0-9]{7}|429[0-3][0-9]{6}|4294[0-8][0-9]{5}\
        |42949[0-5][0-9]{4}|429496[0-6][0-9]{3}|4294967[01][0-9]{2}|42949672[0-8][0-9]|429496729[0-5])$"
    )]
    pub confirmed_replicas: Vec<String>,
    /// Extension: what the center's nodes have free, grouped by shape — what one replica can
    /// get on one node. A replica fits a center only if one node can hold it, not merely the
    /// totals (ten nodes with 8 free CPUs each cannot run a 12-CPU replica). Empty when the
    /// center does not expose its nodes (a cloud or vendor platform): then the totals decide.
    /// At most 4096 shapes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 4096)]
    pub node_free: Vec<NodeFree>,
}

/// Most node shapes one report may list.
pub const MAX_NODE_GROUPS: usize = 4096;

/// A group of a center's nodes that have the same resources free (per node; memory in MB).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct NodeFree {
    /// How many nodes have exactly this free (1..=1000000).
    #[schema(minimum = 1, maximum = 1000000)]
    pub count: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub cpu_free: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub gpu_free: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub npu_free: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub mlu_free: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
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
    use serde_json::json;

    use super::*;

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

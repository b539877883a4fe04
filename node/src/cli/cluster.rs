//! `jcs cluster status|add|remove`: the members, leader, term and each member's indices and
//! lag; adding a member (learner, caught up, then voter) and removing one. Any node answers;
//! changes are carried out by the leader, one at a time.

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::json;

use super::client::Client;
use super::table::Row;
use super::{show, ClientOpts, ATTEMPTS};
use crate::cluster::status::{ClusterStatus, MemberStatus};

/// `jcs cluster`.
#[derive(Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    client: ClientOpts,
    #[command(subcommand)]
    action: ClusterAction,
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Members, leader, term, and every member's log indices and lag.
    Status,
    /// Add a node (started with `jcs serve --node-id ID --raft ADDR --join wait` on an empty
    /// data dir) as a learner, wait until it has caught up, then make it a voter.
    Add {
        node_id: u64,
        /// The node's peer (Raft gRPC) address.
        raft_addr: String,
        /// Keep it a learner: it replicates and may own centers but does not vote.
        #[arg(long)]
        learner: bool,
    },
    /// Remove a node from the cluster.
    Remove { node_id: u64 },
}

impl Row for MemberStatus {
    const HEADER: &'static [&'static str] =
        &["NODE", "ROLE", "STATE", "TERM", "LAST LOG", "COMMITTED", "APPLIED", "LAG", "RAFT", "HTTP"];

    fn cells(&self) -> Vec<String> {
        let dash = || "-".to_string();
        let status = self.status.as_ref();
        vec![
            self.node_id.to_string(),
            self.role.clone(),
            status
                .map_or_else(|| format!("unreachable: {}", self.error.as_deref().unwrap_or("?")), |s| s.state.clone()),
            status.map_or_else(dash, |s| s.term.to_string()),
            status.map_or_else(dash, |s| s.last_log_index.to_string()),
            status.map_or_else(dash, |s| s.committed_index.to_string()),
            status.map_or_else(dash, |s| s.applied_index.to_string()),
            self.lag.map_or_else(dash, |l| l.to_string()),
            self.raft_addr.clone(),
            if self.http_addr.is_empty() { dash() } else { self.http_addr.clone() },
        ]
    }
}

fn render(status: &ClusterStatus) -> String {
    let leader = status.leader.map_or("none".to_string(), |l| l.to_string());
    let shards: Vec<String> = status
        .shards
        .iter()
        .map(|s| format!("{}→{}#{}", s.center_id, s.node_id.map_or("-".to_string(), |n| n.to_string()), s.epoch))
        .collect();
    format!(
        "{}\ncluster {}, leader {leader}, term {} (as seen by node {})\ncenter owners (center→node#epoch): {}",
        super::table::rows(&status.members),
        match status.cluster_id.as_deref() {
            None => "(not yet named)",
            Some("") => "(unscoped: it ran replicas before clusters had ids)",
            Some(id) => id,
        },
        status.term,
        status.node_id,
        if shards.is_empty() { "none".to_string() } else { shards.join("  ") }
    )
}

pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client.server, 1, ATTEMPTS)?;
    let members = |tail: &[&str]| {
        let mut path = vec!["admin", "cluster", "members"];
        path.extend_from_slice(tail);
        client.path_url(&path, &[])
    };
    let status: ClusterStatus = match args.action {
        ClusterAction::Status => client.get(client.path_url(&["admin", "cluster"], &[])).await?,
        ClusterAction::Add { node_id, raft_addr, learner } => {
            let body = json!({"nodeId": node_id, "raftAddr": raft_addr, "learner": learner});
            client.send_json(Method::POST, members(&[]), &body, None).await?
        }
        ClusterAction::Remove { node_id } => {
            client.call(Method::DELETE, members(&[&node_id.to_string()]), None, None).await?
        }
    };
    show(args.client.output, &status, render)
}

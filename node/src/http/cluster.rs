//! Cluster administration: `GET /admin/cluster` (members, leader, term, each member's indices
//! and lag), `POST /admin/cluster/members` and `DELETE /admin/cluster/members/{nodeId}`
//! (served by the leader; any node forwards them), and `POST /admin/fault` (only with
//! `fault_injection`).

use axum::extract::{Path, State};
use jcs_api::validate::host_port;
use jcs_api::{ApiError, Envelope, ErrorCode};
use jcs_raft::NodeInfo;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ok, HttpResult};
use super::extract::Body;
use super::state::AppState;
use crate::cluster::status::ClusterStatus;
use crate::cluster::PeerRequest;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(cluster_status))
        .routes(routes!(add_member))
        .routes(routes!(remove_member))
        .routes(routes!(set_fault))
}

/// The largest node id: the document's int64 bound.
const MAX_NODE_ID: u64 = i64::MAX as u64;

/// `POST /admin/cluster/members`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddMember {
    /// The new member's node id (1 to 2^63 - 1, unused in the cluster).
    #[schema(minimum = 1, maximum = 9223372036854775807i64)]
    pub node_id: u64,
    /// The peer (Raft gRPC) address the new member listens on: `HOST:PORT`, at most 255 bytes.
    #[schema(
        max_length = 255,
        pattern = "^(?:[^:]|:)+:\\+?0*(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}\
        |65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"
    )]
    pub raft_addr: String,
    /// Its REST address, if known (the member publishes it itself once it runs): `HOST:PORT`,
    /// at most 255 bytes, or empty.
    #[serde(default)]
    #[schema(
        max_length = 255,
        pattern = "^(?:(?:[^:]|:)+:\\+?0*(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}\
        |65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?$"
    )]
    pub http_addr: String,
    /// Add it as a learner only (it replicates and may own centers, but does not vote).
    #[serde(default)]
    pub learner: bool,
}

/// `POST /admin/fault`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultSwitch {
    /// Cut this node off from its peers (true) or reconnect it (false).
    pub isolated: bool,
}

/// The members, leader and term, and every member's own report.
#[utoipa::path(get, path = "/admin/cluster", tag = "cluster", responses((status = 200, body = Envelope<ClusterStatus>)))]
async fn cluster_status(State(state): State<AppState>) -> HttpResult<ClusterStatus> {
    ok(state.cluster.status(&state.reader).await?)
}

/// Adds a member: as a learner, caught up, then a voter (unless `learner`). Returns when done.
#[utoipa::path(post, path = "/admin/cluster/members", tag = "cluster", request_body = AddMember,
    responses((status = 200, body = Envelope<ClusterStatus>)))]
async fn add_member(State(state): State<AppState>, Body(add): Body<AddMember>) -> HttpResult<ClusterStatus> {
    if !(1..=MAX_NODE_ID).contains(&add.node_id) {
        return Err(
            ApiError::invalid("nodeId", format!("is {}, must be between 1 and {MAX_NODE_ID}", add.node_id)).into()
        );
    }
    host_port("raftAddr", &add.raft_addr)?;
    if !add.http_addr.is_empty() {
        host_port("httpAddr", &add.http_addr)?;
    }
    let info = NodeInfo { raft_addr: add.raft_addr, http_addr: add.http_addr };
    state.cluster.on_leader(PeerRequest::AddMember { node_id: add.node_id, info, voter: !add.learner }).await?;
    ok(state.cluster.status(&state.reader).await?)
}

/// Removes a member (voter or learner).
#[utoipa::path(delete, path = "/admin/cluster/members/{nodeId}", tag = "cluster",
    params(("nodeId" = u64, Path, minimum = 1, maximum = 9223372036854775807i64)),
    responses((status = 200, body = Envelope<ClusterStatus>)))]
async fn remove_member(State(state): State<AppState>, Path(node_id): Path<String>) -> HttpResult<ClusterStatus> {
    let node_id: u64 = node_id
        .parse()
        .ok()
        .filter(|id| (1..=MAX_NODE_ID).contains(id))
        .ok_or_else(|| ApiError::invalid("nodeId", format!("'{node_id}' is not a node id (1 to {MAX_NODE_ID})")))?;
    state.cluster.on_leader(PeerRequest::RemoveMember { node_id }).await?;
    ok(state.cluster.status(&state.reader).await?)
}

/// Cuts this node off from its peers, or reconnects it (chaos tests; needs `fault_injection`).
#[utoipa::path(post, path = "/admin/fault", tag = "cluster", request_body = FaultSwitch,
    responses((status = 200, body = Envelope<FaultSwitch>), (status = 404, body = Envelope<Object>)))]
async fn set_fault(State(state): State<AppState>, Body(switch): Body<FaultSwitch>) -> HttpResult<FaultSwitch> {
    let Some(fault) = &state.fault else {
        return Err(
            ApiError::new(ErrorCode::RouteNotFound, "fault injection is off on this node (fault_injection)").into()
        );
    };
    fault.set_isolated(switch.isolated);
    ok(switch)
}

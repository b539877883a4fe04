//! Operator endpoints: liveness, readiness, Prometheus metrics.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use jcs_api::{ApiError, Envelope, ErrorCode};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ok, HttpResult};
use super::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz)).routes(routes!(prometheus))
}

/// What `/readyz` reports.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    pub node_id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub last_applied: u64,
    /// The index this node had to apply after start before serving.
    pub ready_index: u64,
}

/// Liveness: the process serves HTTP and its consensus engine runs (an engine that stopped —
/// a panic inside openraft — never runs again: the node must be restarted).
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Envelope<String>)))]
async fn healthz(State(state): State<AppState>) -> HttpResult<&'static str> {
    engine_runs(&state)?;
    ok("alive")
}

/// An error unless the Raft engine still runs.
fn engine_runs(state: &AppState) -> Result<(), ApiError> {
    match &state.raft.metrics().borrow().running_state {
        Ok(()) => Ok(()),
        Err(fatal) => Err(ApiError::new(ErrorCode::Internal, format!("the consensus engine stopped: {fatal}"))),
    }
}

/// Readiness: the node knows a leader and has applied its log up to where it was at start.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Envelope<Readiness>)))]
async fn readyz(State(state): State<AppState>) -> HttpResult<Readiness> {
    engine_runs(&state)?;
    let metrics = state.raft.metrics().borrow().clone();
    let readiness = Readiness {
        node_id: metrics.id,
        leader: metrics.current_leader,
        term: metrics.current_term,
        last_applied: metrics.last_applied.map_or(0, |l| l.index),
        ready_index: state.ready_index,
    };
    if readiness.leader.is_none() || state.cluster.leader().is_none() {
        return Err(ApiError::new(ErrorCode::NoLeader, "not ready: no leader known (or not where it listens)").into());
    }
    if readiness.last_applied < readiness.ready_index {
        let message = format!("not ready: applied {} of {}", readiness.last_applied, readiness.ready_index);
        return Err(ApiError::new(ErrorCode::NoLeader, message).into());
    }
    ok(readiness)
}

/// Prometheus text exposition of every metric the node records.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, content_type = "text/plain", body = String)))]
async fn prometheus(State(state): State<AppState>) -> impl IntoResponse {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.prometheus.render())
}

//! What every handler shares: the Raft handle, the proposer, the state reader, and the read
//! path's consistency rule: linearizable by default (a ReadIndex round through the leader, see
//! [`crate::cluster`]), or `?consistency=stale` from this node's applied state.

use std::ops::Deref;
use std::sync::Arc;

use jcs_api::{ApiError, ErrorCode};
use jcs_raft::command::{Command, Outcome};
use jcs_raft::store::StateReader;
use jcs_raft::Raft;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::error::HttpError;
use crate::proposer::Proposer;
use crate::scheduler::Scheduler;

/// What handlers share, behind one reference count: axum clones the state for every request.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    /// The adapters of the centers this node drives (for logs).
    pub adapters: crate::centers::Adapters,
    pub raft: Raft,
    pub proposer: Proposer,
    pub scheduler: Scheduler,
    pub cluster: crate::cluster::Cluster,
    /// The fault-injection switch, when the node serves it (`fault_injection`).
    pub fault: Option<crate::peer::Fault>,
    pub reader: StateReader,
    pub prometheus: PrometheusHandle,
    /// The log index this node must have applied, after a restart, before it is ready.
    pub ready_index: u64,
    /// How long A.1 waits for the placement.
    pub placement_wait: std::time::Duration,
    /// How much one request may create or return.
    pub limits: Limits,
}

/// Bounds on the work and the answer of one request (`max_job_replicas`, `max_page_bytes`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_job_replicas: u32,
    pub max_page_bytes: usize,
}

/// `?consistency=` on reads.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadOptions {
    /// `linearizable` (default): the read sees every write acknowledged before it, by any
    /// client. `stale`: served from this node's state as applied (see `X-Jcs-Applied-Index`).
    #[param(value_type = Option<Consistency>, inline)]
    pub consistency: Option<String>,
}

/// The values of `?consistency=`, for the OpenAPI document ([`AppState::read`] reads the text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    Linearizable,
    Stale,
}

impl AppState {
    /// Commits a command; a refusal becomes the matching client error. A new job asks the
    /// scheduler for a cycle; any other change may unblock queued jobs, so it asks for a cycle
    /// from the head of the queue.
    pub async fn write(&self, command: Command) -> Result<Outcome, HttpError> {
        let new_job = matches!(command, Command::SubmitJob { .. });
        let outcome = self.proposer.propose(command).await??;
        self.scheduler.kicks.after_commit(new_job);
        Ok(outcome)
    }

    /// Makes the local state fit for a read under `options`, and returns the reader.
    pub async fn read(&self, options: &ReadOptions) -> Result<&StateReader, HttpError> {
        match options.consistency.as_deref() {
            None | Some("linearizable") => {
                self.cluster.linearizable_barrier().await.map_err(|e| {
                    ApiError::new(ErrorCode::NoLeader, format!("cannot serve a linearizable read: {e}"))
                })?;
            }
            Some("stale") => {}
            Some(other) => {
                return Err(ApiError::invalid("consistency", format!("'{other}' is not linearizable or stale")).into())
            }
        }
        Ok(&self.reader)
    }
}

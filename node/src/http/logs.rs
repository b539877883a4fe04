//! Replica logs and center events. A.4's `logUrl` points here: jcs streams the log from the
//! replica's center through its adapter (`?follow=true` keeps the stream open while the replica
//! runs), so users never need access to the centers themselves. Events are the field report's
//! alarms: centers down and up, failed polls, over-commitment, refused dispatches, retries.
//!
//! Only a center's owner holds its adapter (and, for a `local` center, the files): A.4 on
//! another node hands out the owner's `logUrl`, and a log request that reaches another node is
//! redirected (307) to the owner.

use std::time::Duration;

use axum::body::Body as HttpBody;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use jcs_adapters::{Adapter, NativeId};
use jcs_api::model::{CenterEvent, EventKind, Job, ObjectKind, Page, PageQuery};
use jcs_api::validate::{self, MAX_ID_LEN};
use jcs_api::{ApiError, Envelope, ErrorCode};
use jcs_raft::tables;
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ok, HttpError, HttpResult};
use super::extract::Params;
use super::state::{AppState, ReadOptions};

const CHUNK_BYTES: usize = 64 * 1024;
const FOLLOW_POLL: Duration = Duration::from_millis(250);

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(replica_log)).routes(routes!(list_events))
}

/// The path of a replica's log on this API, which A.4 hands out.
pub fn log_path(job_id: &str, task: usize, replica: usize) -> String {
    format!("/openapi/v1/logs/{job_id}/{task}/{replica}")
}

/// The absolute `logUrl` for a request that arrived with `headers`: on this node, or on the
/// center's owner when another node drives it.
pub fn log_url(headers: &HeaderMap, located: &Located, job_id: &str, task: usize, replica: usize) -> String {
    let host = match located {
        Located::Here(..) => headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost"),
        Located::Owner(http) => http,
    };
    format!("http://{host}{}", log_path(job_id, task, replica))
}

/// `?follow=`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogOptions {
    /// Keep streaming while the replica runs (a live tail); default false.
    pub follow: Option<bool>,
}

/// Where a replica's log can be read.
pub enum Located {
    /// On this node, through the center's adapter.
    Here(Arc<dyn Adapter>, NativeId),
    /// On the center's owner, at this REST address.
    Owner(String),
}

/// Where the log of a replica's current attempt is, or why there is none.
pub fn locate(state: &AppState, job: &Job, task: usize, replica: usize) -> Result<Located, HttpError> {
    let not_found = |m: String| HttpError::from(ApiError::new(ErrorCode::NotFound, m));
    let t = job
        .tasks
        .get(task)
        .ok_or_else(|| not_found(format!("taskIndex: job '{}' has {} tasks", job.id, job.tasks.len())))?;
    let r = t
        .replicas
        .get(replica)
        .ok_or_else(|| not_found(format!("replicaIndex: task {task} has {} replicas", t.replica_number)))?;
    let (Some(center), Some(native)) = (t.center_ids.get(replica), r.native_id.clone()) else {
        let message = format!("replica {replica} of task {task} of job '{}' has not run yet", job.id);
        return Err(ApiError::new(ErrorCode::LogNotAvailable, message).into());
    };
    if let Some(adapter) = state.adapters.get(center) {
        return Ok(Located::Here(adapter, NativeId(native)));
    }
    let owner = tables::center_owner(&state.reader, center)?.node;
    let members = state.cluster.members();
    match owner.and_then(|node| members.get(&node)).map(|(info, _)| info.http_addr.clone()) {
        Some(http) if !http.is_empty() && owner != Some(state.cluster.node_id()) => Ok(Located::Owner(http)),
        _ => Err(ApiError::new(ErrorCode::CenterUnavailable, format!("center '{center}' has no owner driving it now"))
            .into()),
    }
}

/// Streams a replica's log (stdout and stderr) from its center, as plain text.
#[utoipa::path(get, path = "/openapi/v1/logs/{jobId}/{taskIndex}/{replicaIndex}", tag = "jobs",
    params(
        ("jobId" = String, Path, max_length = 63, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$"),
        ("taskIndex" = u32, Path),
        ("replicaIndex" = u32, Path),
        LogOptions
    ),
    responses((status = 200, content_type = "text/plain", body = String), (status = 404, body = Envelope<Object>)))]
async fn replica_log(
    State(state): State<AppState>,
    Path((job_id, task, replica)): Path<(String, String, String)>,
    Params(options): Params<LogOptions>,
) -> Result<Response, HttpError> {
    validate::id("jobId", &job_id, MAX_ID_LEN)?;
    let task = super::jobs::parse_index("taskIndex", &task)?;
    let replica = super::jobs::parse_index("replicaIndex", &replica)?;
    let reader = state.read(&ReadOptions::default()).await?;
    let job: Job = tables::get(reader, ObjectKind::Job, &job_id)?.ok_or_else(|| ApiError::not_found("job", &job_id))?;
    let (adapter, native) = match locate(&state, &job, task, replica)? {
        Located::Here(adapter, native) => (adapter, native),
        Located::Owner(http) => {
            let query = if options.follow.unwrap_or(false) { "?follow=true" } else { "" };
            let url = format!("http://{http}{}{query}", log_path(&job_id, task, replica));
            return Ok(axum::response::Redirect::temporary(&url).into_response());
        }
    };
    // The first chunk is read before answering, so that an unreachable center is an error
    // envelope rather than an empty log.
    let first = adapter.read_log(&native, 0, CHUNK_BYTES).await.map_err(|e| {
        ApiError::new(ErrorCode::CenterUnavailable, format!("cannot read the log from the center: {e}"))
    })?;
    let follow = options.follow.unwrap_or(false);
    // State: the offset to read from, whether the log is complete, a chunk already read.
    let stream = futures::stream::unfold((0u64, false, Some(first)), move |(mut offset, finished, mut pending)| {
        let adapter = adapter.clone();
        let native = native.clone();
        async move {
            if finished {
                return None;
            }
            loop {
                let chunk = match pending.take() {
                    Some(chunk) => chunk,
                    None => match adapter.read_log(&native, offset, CHUNK_BYTES).await {
                        Ok(chunk) => chunk,
                        Err(e) => {
                            tracing::warn!(native_id = %native, error = %e, "log stream cut short");
                            return None;
                        }
                    },
                };
                offset = chunk.next_offset;
                if !chunk.data.is_empty() {
                    let data = bytes::Bytes::from(chunk.data);
                    return Some((Ok::<_, std::io::Error>(data), (offset, chunk.complete, None)));
                }
                if chunk.complete || !follow {
                    return None;
                }
                tokio::time::sleep(FOLLOW_POLL).await;
            }
        }
    });
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], HttpBody::from_stream(stream)).into_response())
}

/// Filters of `GET /openapi/v1/events`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct EventFilter {
    /// Only events of this center.
    #[param(max_length = 63, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$")]
    pub center_id: Option<String>,
    /// Only events of this kind: center_down, center_up, poll_failed, over_committed,
    /// dispatch_failed, rescheduled, retried.
    #[param(value_type = Option<EventKind>, inline)]
    pub kind: Option<String>,
}

/// Center events, newest first.
#[utoipa::path(get, path = "/openapi/v1/events", tag = "centers",
    params(EventFilter, PageQuery, ReadOptions),
    responses((status = 200, body = Envelope<Page<CenterEvent>>)))]
async fn list_events(
    State(state): State<AppState>,
    Params(filter): Params<EventFilter>,
    Params(paging): Params<PageQuery>,
    Params(options): Params<ReadOptions>,
) -> HttpResult<Page<CenterEvent>> {
    let window = paging.resolve()?;
    if let Some(center) = &filter.center_id {
        validate::id("centerId", center, MAX_ID_LEN)?;
    }
    let kind = match &filter.kind {
        None => None,
        Some(text) => Some(EventKind::parse(text).ok_or_else(|| {
            let kinds: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
            ApiError::invalid("kind", format!("'{text}' is not one of {}", kinds.join(", ")))
        })?),
    };
    let reader = state.read(&options).await?;
    let mut events: Vec<CenterEvent> = tables::values_under(reader, tables::EVENT_PREFIX)?;
    events.retain(|e| filter.center_id.as_ref().is_none_or(|c| *c == e.center_id) && kind.is_none_or(|k| k == e.kind));
    events.reverse();
    let total = events.len() as u64;
    let skip = usize::try_from(window.offset).unwrap_or(usize::MAX);
    let items = events.into_iter().skip(skip).take(window.page_size as usize).collect();
    ok(Page::new(window, total, items).within_bytes(state.limits.max_page_bytes))
}

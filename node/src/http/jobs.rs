//! Appendix A job endpoints: A.1 create, A.2 stop, A.3 info, A.4 log, and the job listing.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use jcs_api::model::{
    CreateTrainJob, CreateTrainJobResponse, Explain, Job, JobFilter, JobInfo, LogLocation, ObjectKind, Page, PageQuery,
};
use jcs_api::validate::{self, MAX_IDEMPOTENCY_KEY_LEN, MAX_ID_LEN};
use jcs_api::{ApiError, Envelope, ErrorCode};
use jcs_raft::command::{Command, Outcome};
use jcs_raft::kv::{get_json, Overlay};
use jcs_raft::schedule::solve;
use jcs_raft::schedule::state::load_catalog;
use jcs_raft::tables;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ok, HttpError, HttpResult};
use super::extract::{Body, Params};
use super::state::{AppState, ReadOptions};
use crate::scheduler::Woke;

pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_job, list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(stop_job))
        .routes(routes!(job_log))
        .routes(routes!(explain_job))
        .routes(routes!(plan_job))
}

fn job_outcome(outcome: Outcome) -> Result<Job, HttpError> {
    match outcome {
        Outcome::Job { job, .. } => Ok(*job),
        other => Err(ApiError::new(ErrorCode::Internal, format!("unexpected outcome {other:?}")).into()),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, HttpError> {
    let mut values = headers.get_all(IDEMPOTENCY_HEADER).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(ApiError::invalid("Idempotency-Key", "is given more than once").into());
    }
    let key = value.to_str().map_err(|_| ApiError::invalid("Idempotency-Key", "must be visible ASCII"))?.to_string();
    validate::text("Idempotency-Key", &key, MAX_IDEMPOTENCY_KEY_LEN)?;
    Ok(Some(key))
}

/// A.1 — submit a training job to the replicated queue.
#[utoipa::path(post, path = "/openapi/v1/trainjob", tag = "jobs",
    params(("Idempotency-Key" = Option<String>, Header, max_length = 128, pattern = "^[!-~](?:[\\t -~]*[!-~])?$",
        description = "Retries with the same key return the same job and create nothing (at most 128 visible ASCII \
                       characters, not blank)")),
    request_body = CreateTrainJob,
    responses((status = 200, body = Envelope<CreateTrainJobResponse>)))]
async fn create_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(request): Body<CreateTrainJob>,
) -> HttpResult<CreateTrainJobResponse> {
    let key = idempotency_key(&headers)?;
    request.validate_within(state.limits.max_job_replicas)?;
    let job = job_outcome(state.write(Command::SubmitJob { request, idempotency_key: key }).await?)?;
    metrics::counter!("jcs_jobs_submitted_total").increment(1);
    tracing::debug!(job_id = %job.id, "job queued");
    let job = await_placement(&state, job).await?;
    ok(CreateTrainJobResponse::from(&job))
}

/// Waits up to the configured bound for the scheduler to place `job`; returns it as it then is
/// (still pending, with empty `centerIDs`, if it stays pending or the bound passed). On the
/// leader the cycle that decides the job wakes the wait; on a follower (whose scheduler idles),
/// or once the leader steps down, each applied entry is a moment to look for the decision.
async fn await_placement(state: &AppState, job: Job) -> Result<Job, HttpError> {
    // A node told not to wait answers at the submission's commit: the scheduler was kicked by
    // the write, and the job is as the submission left it.
    if decided(&job) || state.placement_wait.is_zero() {
        return Ok(job);
    }
    let deadline = tokio::time::Instant::now() + state.placement_wait;
    let mut applied = state.raft.metrics();
    // Registered before leadership is checked: a leader that steps down after the check wakes
    // the wait, and one that had already stepped down is seen by the check.
    let mut wait = state.scheduler.waiters.register(&job.id);
    let leading = {
        let metrics = applied.borrow_and_update();
        metrics.current_leader == Some(metrics.id)
    };
    let mut current = job;
    if leading {
        state.scheduler.kick();
        // A cycle may have decided the job before the registration.
        current = read_current(state, current)?;
        if decided(&current) {
            return Ok(current);
        }
        match wait.until(deadline).await {
            Woke::TimedOut => return Ok(current),
            // Decided: the job is placed or has its pending reason, unless the decision did
            // not survive (then it is looked for as entries apply, as below).
            Woke::Decided | Woke::Deposed => current = read_current(state, current)?,
        }
    }
    drop(wait);
    while !decided(&current) {
        if !matches!(tokio::time::timeout_at(deadline, applied.changed()).await, Ok(Ok(()))) {
            break;
        }
        current = read_current(state, current)?;
    }
    Ok(current)
}

/// Whether the scheduler is done with `job` for A.1: placed, finished, or decided pending (the
/// scheduler stored why).
fn decided(job: &Job) -> bool {
    job.is_placed() || job.status.is_final() || !job.status_reason.is_empty()
}

/// `job` as this node's state holds it now.
fn read_current(state: &AppState, job: Job) -> Result<Job, HttpError> {
    Ok(tables::get::<Job>(&state.reader, ObjectKind::Job, &job.id)?.unwrap_or(job))
}

/// Why a job went where it went, or why it is still pending: the stored decision record —
/// every filter's rejections with their reason codes, each strategy's raw, normalized and
/// weighted scores per center, the totals and the winner.
#[utoipa::path(get, path = "/openapi/v1/trainjob/{id}/explain", tag = "jobs",
    params(("id" = String, Path, max_length = 63, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$"), ReadOptions),
    responses((status = 200, body = Envelope<Explain>)))]
async fn explain_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Params(options): Params<ReadOptions>,
) -> HttpResult<Explain> {
    let job = read_job(&state, &options, &id).await?;
    let explain: Option<Explain> = get_json(&state.reader, &tables::explain_key(&job.id))?;
    let message = format!("job '{}' has not been through a scheduling cycle yet", job.id);
    ok(explain.ok_or_else(|| ApiError::new(ErrorCode::NotFound, message))?)
}

/// Dry-run: where an A.1 body would be placed now, with its explain record; nothing is
/// committed. Confirm by submitting the body with each task's `centerIDs` set to the plan's.
#[utoipa::path(post, path = "/openapi/v1/trainjob/plan", tag = "jobs",
    request_body = CreateTrainJob,
    responses((status = 200, body = Envelope<Explain>)))]
async fn plan_job(State(state): State<AppState>, Body(request): Body<CreateTrainJob>) -> HttpResult<Explain> {
    request.validate_within(state.limits.max_job_replicas)?;
    let reader = state.read(&ReadOptions::default()).await?;
    // The same checks as a submission, applied to a throw-away overlay of the current state.
    let mut overlay = Overlay::new(reader);
    let command = Command::SubmitJob { request, idempotency_key: None };
    let now = crate::signals::now_ms();
    let job = job_outcome(jcs_raft::apply::apply(&mut overlay, &command, now)??)?;
    let catalog = load_catalog(reader)?;
    let term = state.raft.metrics().borrow().current_term;
    let fence = tables::sched_fence(reader)?;
    let decision = solve(&catalog, &[job], &state.scheduler.solver_config(now, term, fence.version));
    let mut explain = decision
        .into_iter()
        .next()
        .map(|d| d.explain)
        .ok_or_else(|| HttpError::from(ApiError::new(ErrorCode::Internal, "the solver returned no decision")))?;
    explain.job_id = String::new();
    ok(explain)
}

/// A.2 — stop a job (idempotent).
#[utoipa::path(post, path = "/openapi/v1/trainjob/{jobId}/stop", tag = "jobs",
    params(("jobId" = String, Path, max_length = 63, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$")),
    responses((status = 200, body = Envelope<JobInfo>)))]
async fn stop_job(State(state): State<AppState>, Path(job_id): Path<String>) -> HttpResult<JobInfo> {
    validate::id("jobId", &job_id, MAX_ID_LEN)?;
    let command = Command::StopJob { job_id, reason: "stopped by user".into() };
    let job = job_outcome(state.write(command).await?)?;
    tracing::info!(job_id = %job.id, "job stopped");
    ok(JobInfo::from(&job))
}

async fn read_job(state: &AppState, options: &ReadOptions, id: &str) -> Result<Job, HttpError> {
    validate::id("id", id, MAX_ID_LEN)?;
    let reader = state.read(options).await?;
    tables::get(reader, ObjectKind::Job, id)?.ok_or_else(|| ApiError::not_found("job", id).into())
}

/// A.3 — a job's status and each replica's.
#[utoipa::path(get, path = "/openapi/v1/trainjob/{id}", tag = "jobs",
    params(("id" = String, Path, max_length = 63, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$"), ReadOptions),
    responses((status = 200, body = Envelope<JobInfo>)))]
async fn get_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Params(options): Params<ReadOptions>,
) -> HttpResult<JobInfo> {
    ok(JobInfo::from(&read_job(&state, &options, &id).await?))
}

/// Lists jobs in submission order, paged, optionally by status and user.
#[utoipa::path(get, path = "/openapi/v1/trainjob", tag = "jobs",
    params(PageQuery, JobFilter, ReadOptions),
    responses((status = 200, body = Envelope<Page<JobInfo>>)))]
async fn list_jobs(
    State(state): State<AppState>,
    Params(paging): Params<PageQuery>,
    Params(filter): Params<JobFilter>,
    Params(options): Params<ReadOptions>,
) -> HttpResult<Page<JobInfo>> {
    let window = paging.resolve()?;
    let status = filter.state()?;
    if let Some(user) = &filter.user {
        validate::id("user", user, MAX_ID_LEN)?;
    }
    let reader = state.read(&options).await?;
    let jobs = tables::jobs_page(reader, status, filter.user.as_deref(), window)?;
    ok(jobs.map(|job| JobInfo::from(&job)).within_bytes(state.limits.max_page_bytes))
}

pub(super) fn parse_index(field: &str, text: &str) -> Result<usize, HttpError> {
    text.parse::<usize>()
        .map_err(|_| ApiError::invalid(field, format!("'{text}' is not a non-negative integer")).into())
}

/// A.4 — where to download a replica's log: a URL on this API that streams it from the center
/// (add `?follow=true` for a live tail).
#[utoipa::path(get, path = "/openapi/v1/trainjob/{id}/task/{taskIndex}/replica/{replicaIndex}/log", tag = "jobs",
    params(
        ("id" = String, Path, max_length = 63, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$"),
        ("taskIndex" = u32, Path),
        ("replicaIndex" = u32, Path),
        ReadOptions
    ),
    responses((status = 200, body = Envelope<LogLocation>)))]
async fn job_log(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, task_index, replica_index)): Path<(String, String, String)>,
    Params(options): Params<ReadOptions>,
) -> HttpResult<LogLocation> {
    let task_index = parse_index("taskIndex", &task_index)?;
    let replica_index = parse_index("replicaIndex", &replica_index)?;
    let job = read_job(&state, &options, &id).await?;
    let located = super::logs::locate(&state, &job, task_index, replica_index)?;
    ok(LogLocation { log_url: super::logs::log_url(&headers, &located, &job.id, task_index, replica_index) })
}

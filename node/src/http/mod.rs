//! The REST API (axum): Appendix A's job endpoints, the catalog, and operator endpoints, every
//! answer in the envelope. The router is built through utoipa so that `/openapi.json` lists
//! exactly the routes that exist.

mod catalog;
mod cluster;
pub mod error;
mod extract;
mod jobs;
mod logs;
mod openapi;
mod ops;
mod scheduler;
mod serve;
pub mod state;

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use jcs_api::{ApiError, ErrorCode};
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use self::error::HttpError;
pub use self::jobs::IDEMPOTENCY_HEADER;
pub use self::serve::{serve, ServeLimits};
pub use self::state::{AppState, Shared};

#[derive(OpenApi)]
#[openapi(info(
    title = "jcs — JointCloud scheduler",
    description = "T/AI 123.6 Appendix A and the jcs catalog. Every response is the envelope {status, code, errorMsg, data}."
))]
struct ApiDoc;

/// The routes and their OpenAPI description, built together.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (routes, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(jobs::routes())
        .merge(catalog::routes())
        .merge(scheduler::routes())
        .merge(logs::routes())
        .merge(ops::routes())
        .merge(cluster::routes())
        .split_for_parts();
    openapi::add_error_responses(&mut doc);
    (routes, doc)
}

/// The complete HTTP service.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let (routes, openapi) = api();
    routes
        .route("/openapi.json", get(move || async move { Json(openapi) }))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

/// A panic in a handler is a bug; the client still gets the envelope, and the log gets the cause.
fn panic_response(cause: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let cause = cause
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| cause.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(cause, "handler panicked");
    HttpError(ApiError::new(ErrorCode::Internal, "internal error while serving the request")).into_response()
}

async fn route_not_found(request: Request) -> HttpError {
    ApiError::new(ErrorCode::RouteNotFound, format!("no route for {}", request.uri().path())).into()
}

async fn method_not_allowed(request: Request) -> HttpError {
    let message = format!("{} is not allowed on {}", request.method(), request.uri().path());
    ApiError::new(ErrorCode::MethodNotAllowed, message).into()
}

/// Records per-route metrics and stamps how fresh this node's state is.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().to_string();
    let started = Instant::now();
    let mut response = next.run(request).await.into_response();
    let status = response.status().as_u16().to_string();
    metrics::histogram!("jcs_http_request_seconds", "route" => route.clone()).record(started.elapsed().as_secs_f64());
    metrics::counter!("jcs_http_requests_total", "route" => route, "method" => method, "status" => status).increment(1);
    let applied = state.reader.last_applied_index().unwrap_or(0);
    response.headers_mut().insert("x-jcs-applied-index", applied.into());
    response
}

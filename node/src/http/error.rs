//! The one mapping from every internal error to the client-visible envelope. Handlers return
//! `Result<_, HttpError>`; nothing else builds error responses.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jcs_api::{ApiError, Envelope, ErrorCode};
use jcs_raft::command::Refusal;
use jcs_raft::kv::StoreError;

use crate::cluster::ClusterError;
use crate::proposer::ProposeError;

/// An error on its way to the client.
#[derive(Debug)]
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(err: ApiError) -> Self {
        HttpError(err)
    }
}

impl From<Refusal> for HttpError {
    fn from(refusal: Refusal) -> Self {
        let code = match &refusal {
            Refusal::Invalid(_) => ErrorCode::InvalidArgument,
            Refusal::NotFound { .. } => ErrorCode::NotFound,
            Refusal::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            Refusal::UnknownReference { .. } => ErrorCode::UnknownReference,
            Refusal::StillReferenced { .. } => ErrorCode::StillReferenced,
            Refusal::IdempotencyKeyReused { .. } => ErrorCode::IdempotencyKeyReused,
            // Only the scheduler and center owners make these writes; a client never sees them.
            Refusal::StalePlacement(_) | Refusal::StaleOwner { .. } | Refusal::StaleAssignment { .. } => {
                ErrorCode::Internal
            }
        };
        HttpError(ApiError::new(code, refusal.to_string()))
    }
}

impl From<ProposeError> for HttpError {
    fn from(err: ProposeError) -> Self {
        let code = match &err {
            ProposeError::NotLeader { .. } => ErrorCode::NoLeader,
            ProposeError::Timeout(_) => ErrorCode::Timeout,
            ProposeError::Fatal(_) => ErrorCode::Internal,
        };
        HttpError(ApiError::new(code, err.to_string()))
    }
}

impl From<ClusterError> for HttpError {
    fn from(err: ClusterError) -> Self {
        let code = match &err {
            ClusterError::NotLeader { .. } | ClusterError::Unreachable(_) => ErrorCode::NoLeader,
            ClusterError::Invalid(_) => ErrorCode::InvalidArgument,
            ClusterError::NotMember(_) => ErrorCode::NotFound,
            ClusterError::Conflict(_) => ErrorCode::MembershipConflict,
            ClusterError::Raft(_) => ErrorCode::Internal,
        };
        HttpError(ApiError::new(code, err.to_string()))
    }
}

impl From<StoreError> for HttpError {
    fn from(err: StoreError) -> Self {
        tracing::error!(error = %err, "state read failed");
        HttpError(ApiError::new(ErrorCode::Internal, err.to_string()))
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(Envelope::error(&self.0))).into_response();
        if self.0.code == ErrorCode::NoLeader {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Handler result type.
pub type HttpResult<T> = Result<Json<Envelope<T>>, HttpError>;

/// Wraps data in a success envelope.
pub fn ok<T>(data: T) -> HttpResult<T> {
    Ok(Json(Envelope::ok(data)))
}

//! Request extractors that turn every kind of bad input into an envelope with a precise
//! `errorMsg`: wrong content type, oversized or malformed bodies, wrong types (with the JSON
//! path of the offending field), bad query strings and path ids.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::StatusCode;
use jcs_api::{ApiError, ErrorCode};
use serde::de::DeserializeOwned;

use super::error::HttpError;

/// A JSON body deserialized into `T`.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, HttpError> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(
                ApiError::new(ErrorCode::UnsupportedMediaType, "body: Content-Type must be application/json").into()
            );
        }
        let bytes = Bytes::from_request(req, state).await.map_err(body_rejection)?;
        parse_json(&bytes).map(Body)
    }
}

/// A JSON body deserialized into `T` for a replacement (PUT), with the top-level fields the
/// body named: a field left out must not silently lose its stored value.
pub struct Replacement<T> {
    pub object: T,
    pub given: Vec<String>,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Replacement<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, HttpError> {
        let Body(document) = Body::<serde_json::Value>::from_request(req, state).await?;
        let given = document.as_object().map(|fields| fields.keys().cloned().collect()).unwrap_or_default();
        Ok(Replacement { object: jcs_api::json::from_value(document)?, given })
    }
}

fn body_rejection(rejection: BytesRejection) -> HttpError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(ErrorCode::PayloadTooLarge, "body: larger than the configured max_body_bytes").into()
    } else {
        ApiError::new(ErrorCode::MalformedRequest, format!("body: {}", rejection.body_text())).into()
    }
}

/// Parses JSON (integral floats read as integers), naming the path of the offending field on
/// error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, HttpError> {
    Ok(jcs_api::json::from_slice(bytes)?)
}

/// A query string deserialized into `T`.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, HttpError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Params(q.0))
            .map_err(|e| ApiError::new(ErrorCode::InvalidArgument, format!("query: {}", e.body_text())).into())
    }
}

//! The finishing pass over the generated OpenAPI document: every operation lists every error
//! status it can answer, each with the error envelope as its schema, so that a client
//! generated from `/openapi.json` knows every answer it can get (docs/ERRORS.md says which
//! code means what; the rules below say which route can answer which).

use jcs_api::error::MAX_ERROR_MSG_CHARS;
use jcs_api::ErrorCode;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};

/// The name of the error envelope's schema among the document's components.
const ERROR_SCHEMA: &str = "ErrorEnvelope";

/// Adds the error envelope schema and every operation's error responses to `doc`.
pub fn add_error_responses(doc: &mut OpenApi) {
    doc.components.get_or_insert_with(Default::default).schemas.insert(ERROR_SCHEMA.into(), error_envelope());
    for (path, item) in doc.paths.paths.iter_mut() {
        let operations = [
            (Method::Get, &mut item.get),
            (Method::Put, &mut item.put),
            (Method::Post, &mut item.post),
            (Method::Delete, &mut item.delete),
        ];
        for (method, operation) in operations {
            if let Some(operation) = operation {
                add_to(operation, &error_codes(method, path, operation.request_body.is_some()));
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Put,
    Post,
    Delete,
}

/// The error codes an operation can answer.
fn error_codes(method: Method, path: &str, has_body: bool) -> Vec<ErrorCode> {
    use ErrorCode::*;
    // Any request: bad query or body values, the HTTP edge's own refusals, no leader for a
    // linearizable read or a write, a full node, a fault inside jcs.
    let mut codes = vec![
        MalformedRequest,
        InvalidArgument,
        RequestTimeout,
        UriTooLong,
        HeadersTooLarge,
        Internal,
        NoLeader,
        TooManyConnections,
    ];
    if path.contains('{') {
        codes.push(NotFound);
    }
    if has_body {
        codes.extend([PayloadTooLarge, UnsupportedMediaType]);
    }
    if method != Method::Get {
        codes.extend([NotFound, AlreadyExists, StillReferenced, IdempotencyKeyReused, UnknownReference, Timeout]);
    }
    if path.starts_with("/openapi/v1/logs/") || path.ends_with("/log") {
        codes.extend([LogNotAvailable, CenterUnavailable]);
    }
    if path.starts_with("/scheduler/") {
        codes.push(UnknownReference);
    }
    if method == Method::Put && path.starts_with("/openapi/v1/") && !path.ends_with("/metrics") {
        codes.push(FieldWouldBeLost);
    }
    if path.starts_with("/admin/cluster") && method != Method::Get {
        codes.push(MembershipConflict);
    }
    codes.sort_by_key(|code| (code.http_status(), code.as_str()));
    codes.dedup();
    codes
}

/// One response per status, its description listing the codes it carries.
fn add_to(operation: &mut Operation, codes: &[ErrorCode]) {
    let mut by_status: std::collections::BTreeMap<u16, Vec<ErrorCode>> = Default::default();
    for code in codes {
        by_status.entry(code.http_status()).or_default().push(*code);
    }
    for (status, codes) in by_status {
        let description: Vec<String> = codes.iter().map(|c| format!("`{}`: {}", c.as_str(), c.meaning())).collect();
        let content = ContentBuilder::new().schema(Some(Ref::from_schema_name(ERROR_SCHEMA))).build();
        let response = ResponseBuilder::new().description(description.join(" ")).content("application/json", content);
        operation.responses.responses.entry(status.to_string()).or_insert_with(|| RefOr::T(response.build()));
    }
}

/// `{status, code, errorMsg, data: null}`, as every error answers.
fn error_envelope() -> RefOr<Schema> {
    let codes: Vec<&str> = ErrorCode::ALL.iter().filter(|c| **c != ErrorCode::Ok).map(|c| c.as_str()).collect();
    let schema = ObjectBuilder::new()
        .description(Some("The envelope of every error (docs/ERRORS.md)."))
        .property("status", ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(400)).maximum(Some(599)))
        .property("code", ObjectBuilder::new().schema_type(Type::String).enum_values(Some(codes)))
        .property("errorMsg", ObjectBuilder::new().schema_type(Type::String).max_length(Some(MAX_ERROR_MSG_CHARS)))
        .property("data", ObjectBuilder::new().schema_type(Type::Null))
        .required("status")
        .required("code")
        .required("errorMsg")
        .required("data")
        .build();
    RefOr::T(Schema::Object(schema))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_answer_the_errors_their_routes_can_raise() {
        let read = error_codes(Method::Get, "/openapi/v1/trainjob", false);
        assert!(read.contains(&ErrorCode::NoLeader) && read.contains(&ErrorCode::UriTooLong));
        assert!(!read.contains(&ErrorCode::PayloadTooLarge) && !read.contains(&ErrorCode::NotFound));
        let write = error_codes(Method::Post, "/openapi/v1/trainjob", true);
        for code in [ErrorCode::PayloadTooLarge, ErrorCode::UnknownReference, ErrorCode::Timeout] {
            assert!(write.contains(&code), "{code:?}");
        }
        let log = error_codes(Method::Get, "/openapi/v1/logs/{jobId}/{taskIndex}/{replicaIndex}", false);
        assert!(log.contains(&ErrorCode::CenterUnavailable) && log.contains(&ErrorCode::LogNotAvailable));
    }
}

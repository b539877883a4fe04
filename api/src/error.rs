//! The one table of error codes. Every failure a client can see maps to exactly one row here;
//! the API edge turns it into an HTTP status and an envelope, nothing else invents codes.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Maximum length of `errorMsg`, in characters (Appendix A).
pub const MAX_ERROR_MSG_CHARS: usize = 128;

/// The fewest characters of a field path an error message keeps, however long its reason.
const MIN_FIELD_CHARS: usize = 24;

macro_rules! error_codes {
    ($( $variant:ident => ($text:literal, $status:literal, $meaning:literal), )*) => {
        /// Stable, documented error identifiers (`code` in the envelope).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum ErrorCode { $( #[doc = $meaning] $variant, )* }

        impl ErrorCode {
            /// Every code, in table order (used to render the documentation table).
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The UPPER_SNAKE identifier sent as `code`.
            pub fn as_str(self) -> &'static str { match self { $(ErrorCode::$variant => $text,)* } }

            /// The HTTP status this code is answered with.
            pub fn http_status(self) -> u16 { match self { $(ErrorCode::$variant => $status,)* } }

            /// What the code means, for the documentation table.
            pub fn meaning(self) -> &'static str { match self { $(ErrorCode::$variant => $meaning,)* } }
        }
    };
}

error_codes! {
    Ok => ("OK", 200, "Success."),
    MalformedRequest => ("MALFORMED_REQUEST", 400, "The body is not valid JSON, or a value has the wrong type."),
    InvalidArgument => ("INVALID_ARGUMENT", 400, "A field is missing, empty, too long, out of range or otherwise invalid."),
    UnknownReference => ("UNKNOWN_REFERENCE", 422, "The request names a spec, image, center or dataset that does not exist."),
    NotFound => ("NOT_FOUND", 404, "The object does not exist."),
    RouteNotFound => ("ROUTE_NOT_FOUND", 404, "No route has this path."),
    MethodNotAllowed => ("METHOD_NOT_ALLOWED", 405, "The route exists but not with this method."),
    AlreadyExists => ("ALREADY_EXISTS", 409, "An object with this id already exists."),
    StillReferenced => ("STILL_REFERENCED", 409, "The object is still referenced by another and cannot be deleted."),
    MembershipConflict => ("MEMBERSHIP_CONFLICT", 409, "The cluster's membership cannot change so now: another change is under way, the node is a member at another address, or the node to make a voter has not caught up with the leader; retry once it has."),
    FieldWouldBeLost => ("FIELD_WOULD_BE_LOST", 409, "A `PUT` leaves out a field whose stored value the replacement would lose; send the field (its empty value to clear it)."),
    IdempotencyKeyReused => ("IDEMPOTENCY_KEY_REUSED", 409, "The `Idempotency-Key` was already used for a different request."),
    RequestTimeout => ("REQUEST_TIMEOUT", 408, "The request's body did not arrive within the configured time (a head that does not arrive in time closes the connection)."),
    PayloadTooLarge => ("PAYLOAD_TOO_LARGE", 413, "The body is larger than the configured limit."),
    UriTooLong => ("URI_TOO_LONG", 414, "The request's path and query are longer than the server reads."),
    UnsupportedMediaType => ("UNSUPPORTED_MEDIA_TYPE", 415, "The body is not `application/json`."),
    HeadersTooLarge => ("HEADERS_TOO_LARGE", 431, "The request's head (its line and headers) is larger than the server reads."),
    LogNotAvailable => ("LOG_NOT_AVAILABLE", 404, "The replica has produced no log yet."),
    CenterUnavailable => ("CENTER_UNAVAILABLE", 502, "The center did not answer or this node does not drive it; retry later."),
    NoLeader => ("NO_LEADER", 503, "No leader answered in time (an election, a cut, a leader that died mid-request). A write's outcome is unknown, as with `TIMEOUT`: it may have committed; retry with the same `Idempotency-Key` (see `Retry-After`)."),
    TooManyConnections => ("TOO_MANY_CONNECTIONS", 503, "The node holds as many connections as it is configured to; retry later or on another node (see `Retry-After`)."),
    Timeout => ("TIMEOUT", 504, "The write was not committed within the deadline; its outcome is unknown, retry with the same `Idempotency-Key`."),
    Internal => ("INTERNAL", 500, "A fault inside jcs (storage, consensus). Never caused by input."),
}

/// A client-visible error: a code from the table and a message naming the field and why.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    /// Builds an error; the message is cut to [`MAX_ERROR_MSG_CHARS`] characters.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message: String = message.into();
        if message.chars().count() > MAX_ERROR_MSG_CHARS {
            message = message.chars().take(MAX_ERROR_MSG_CHARS - 1).collect::<String>() + "…";
        }
        ApiError { code, message }
    }

    /// `INVALID_ARGUMENT` naming `field`.
    pub fn invalid(field: &str, why: impl std::fmt::Display) -> Self {
        Self::at(ErrorCode::InvalidArgument, field, why)
    }

    /// `{field}: {why}`, where a field path too long to leave room for the reason (a value deep
    /// in nested JSON) is shortened in its middle, so that the message always says why.
    pub fn at(code: ErrorCode, field: &str, why: impl std::fmt::Display) -> Self {
        let why = why.to_string();
        let room = MAX_ERROR_MSG_CHARS.saturating_sub(why.chars().count() + 2).max(MIN_FIELD_CHARS);
        let chars: Vec<char> = field.chars().collect();
        let field = if chars.len() <= room {
            field.to_string()
        } else {
            let head = room / 3;
            let tail = room - head - 1;
            let head: String = chars[..head].iter().collect();
            let tail: String = chars[chars.len() - tail..].iter().collect();
            format!("{head}…{tail}")
        };
        Self::new(code, format!("{field}: {why}"))
    }

    /// `NOT_FOUND` for `kind` `id`.
    pub fn not_found(kind: &str, id: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{kind} '{id}' not found"))
    }
}

/// Renders the error-code table as Markdown (kept in docs/ERRORS.md, checked by a test).
pub fn error_table_markdown() -> String {
    let mut out = String::from("| code | HTTP status | meaning |\n|---|---|---|\n");
    for code in ErrorCode::ALL {
        out.push_str(&format!("| `{}` | {} | {} |\n", code.as_str(), code.http_status(), code.meaning()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_upper_snake_and_statuses_match_classes() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "duplicate code {s}");
            assert!(s.chars().all(|c| c.is_ascii_uppercase() || c == '_'), "{s}");
            assert!(s.len() <= 256);
            let serde_name = serde_json::to_value(code).unwrap();
            assert_eq!(serde_name, s);
        }
        assert_eq!(ErrorCode::Ok.http_status(), 200);
        assert!(ErrorCode::ALL.iter().filter(|c| c.http_status() >= 500).all(|c| matches!(
            c,
            ErrorCode::Internal
                | ErrorCode::NoLeader
                | ErrorCode::TooManyConnections
                | ErrorCode::Timeout
                | ErrorCode::CenterUnavailable
        )));
    }

    #[test]
    fn docs_errors_md_shows_the_table() {
        let doc = include_str!("../../docs/ERRORS.md");
        let table = error_table_markdown();
        assert!(doc.contains(&table), "docs/ERRORS.md is out of date; its table must be:\n{table}");
    }

    #[test]
    fn a_deep_field_path_is_shortened_so_the_reason_survives() {
        let path = format!("tasks[0]{}.name", "[0]".repeat(60));
        let e = ApiError::at(ErrorCode::MalformedRequest, &path, "invalid type: integer `1`, expected a string");
        assert!(e.message.chars().count() <= MAX_ERROR_MSG_CHARS, "{}", e.message);
        assert!(e.message.starts_with("tasks[0]"), "{}", e.message);
        assert!(e.message.ends_with("[0].name: invalid type: integer `1`, expected a string"), "{}", e.message);
        assert!(e.message.contains('…'));
        let short = ApiError::at(ErrorCode::InvalidArgument, "tasks[0].name", "is required");
        assert_eq!(short.message, "tasks[0].name: is required");
    }

    #[test]
    fn long_messages_are_cut_to_128_chars() {
        let e = ApiError::new(ErrorCode::InvalidArgument, "x".repeat(500));
        assert_eq!(e.message.chars().count(), MAX_ERROR_MSG_CHARS);
        let e = ApiError::new(ErrorCode::InvalidArgument, "é".repeat(200));
        assert_eq!(e.message.chars().count(), MAX_ERROR_MSG_CHARS);
    }
}

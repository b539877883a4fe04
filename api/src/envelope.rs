//! The response envelope of Appendix A: `{"status", "code", "errorMsg", "data"}`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorCode};

/// Every REST response body. `status` repeats the HTTP status code; `code` is a stable
/// UPPER_SNAKE identifier (`OK` on success); `errorMsg` is empty on success and at most 128
/// characters otherwise.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Envelope<T> {
    pub status: u16,
    pub code: String,
    #[serde(rename = "errorMsg")]
    pub error_msg: String,
    pub data: Option<T>,
}

impl<T> Envelope<T> {
    /// A success envelope around `data`.
    pub fn ok(data: T) -> Self {
        Envelope { status: 200, code: "OK".into(), error_msg: String::new(), data: Some(data) }
    }
}

impl Envelope<()> {
    /// An error envelope; `data` is null.
    pub fn error(err: &ApiError) -> Self {
        Envelope {
            status: err.code.http_status(),
            code: err.code.as_str().into(),
            error_msg: err.message.clone(),
            data: None,
        }
    }

    /// Whether this envelope reports success.
    pub fn is_ok(&self) -> bool {
        self.code == ErrorCode::Ok.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_envelope_uses_the_standard_field_names() {
        let v = serde_json::to_value(Envelope::ok(serde_json::json!({"jobId": "j"}))).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["code"], "OK");
        assert_eq!(v["errorMsg"], "");
        assert_eq!(v["data"]["jobId"], "j");
    }

    #[test]
    fn error_envelope_has_null_data_and_the_http_status() {
        let err = ApiError::new(ErrorCode::NotFound, "job 'x' not found");
        let v = serde_json::to_value(Envelope::error(&err)).unwrap();
        assert_eq!(v["status"], 404);
        assert_eq!(v["code"], "NOT_FOUND");
        assert_eq!(v["errorMsg"], "job 'x' not found");
        assert!(v["data"].is_null());
    }
}

//! The jcs contract: everything two parties must agree on, and nothing that does I/O.
//!
//! * [`model`] — the standard's tables (T/AI 123.6 Tables 1–9) with their field names, plus the
//!   extension fields jcs adds, and the Appendix A request/response shapes.
//! * [`envelope`] — the response envelope every REST answer is wrapped in.
//! * [`error`] — the one table of stable error codes and their HTTP statuses.
//! * [`validate`] — length limits, required fields and value rules, as pure functions.
//! * [`quantity`] — Kubernetes-style resource quantities (`"2Gi"`, `"500m"`).
//! * [`proto`] — the peer-to-peer gRPC contract, generated at build time.

pub mod envelope;
pub mod error;
pub mod json;
pub mod model;
pub mod quantity;
pub mod validate;

/// Generated gRPC/protobuf code for the peer service (see `proto/jcs.proto`).
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("jcs.v1");
}

pub use envelope::Envelope;
pub use error::{ApiError, ErrorCode};

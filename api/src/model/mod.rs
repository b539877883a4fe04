//! The standard's data model (Tables 1–9) and the Appendix A shapes.
//!
//! Catalog objects use the tables' snake_case names; Appendix A bodies use its camelCase
//! names. Timestamps are Unix milliseconds, set by the replicated state machine.

pub mod catalog;
pub mod job;
pub mod lifecycle;
pub mod schedule;

pub use catalog::*;
pub use job::*;
pub use lifecycle::*;
pub use schedule::*;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// One page of a listing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    /// How many items match, over all pages.
    pub total: u64,
    /// 1-based page number.
    pub page: u32,
    pub page_size: u32,
    pub items: Vec<T>,
}

/// `?page=&pageSize=` on list endpoints.
#[derive(Debug, Clone, Copy, Deserialize, IntoParams, PartialEq)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct PageQuery {
    /// 1-based page number (default 1).
    pub page: Option<u32>,
    /// Items per page, 1..=1000 (default 50).
    pub page_size: Option<u32>,
}

/// Largest accepted `pageSize`.
pub const MAX_PAGE_SIZE: u32 = 1000;

impl PageQuery {
    /// The validated `(page, page_size)`, with defaults applied.
    pub fn resolve(&self) -> Result<(u32, u32), crate::ApiError> {
        let page = self.page.unwrap_or(1);
        let size = self.page_size.unwrap_or(50);
        crate::validate::range("page", page.into(), 1, u32::MAX.into())?;
        crate::validate::range("pageSize", size.into(), 1, MAX_PAGE_SIZE.into())?;
        Ok((page, size))
    }
}

/// Kinds of catalog object, used in messages and references.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    Center,
    ResourceSpec,
    Image,
    Dataset,
    Job,
}

impl ObjectKind {
    /// The human name used in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Center => "center",
            ObjectKind::ResourceSpec => "resource spec",
            ObjectKind::Image => "image",
            ObjectKind::Dataset => "dataset",
            ObjectKind::Job => "job",
        }
    }
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

//! The standard's data model (Tables 1–9) and the Appendix A shapes.
//!
//! Catalog objects use the tables' snake_case names; Appendix A bodies use its camelCase
//! names. Timestamps are Unix milliseconds, set by the replicated state machine.

pub mod catalog;
pub mod job;
pub mod lifecycle;
pub mod metrics;
pub mod patterns;
pub mod schedule;

#[cfg(test)]
mod schema_tests;

pub use catalog::*;
pub use job::*;
pub use lifecycle::*;
pub use metrics::*;
pub use schedule::*;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// One page of a listing. A page holds at most `pageSize` items and at most the node's byte
/// budget of them (at least one item always); `nextOffset` says where the next page starts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    /// How many items match, over all pages.
    pub total: u64,
    /// 1-based page number (with `?offset=`, the page that offset falls in).
    pub page: u32,
    pub page_size: u32,
    /// 0-based position of the first item in the whole listing.
    #[serde(default)]
    pub offset: u64,
    /// Where the next page starts (`?offset=`), or null when this page is the last. A page
    /// cut short by the byte budget ends before `offset + pageSize`.
    #[serde(default)]
    pub next_offset: Option<u64>,
    pub items: Vec<T>,
}

impl<T> Page<T> {
    /// The page of `window` holding `items`, out of `total` matches.
    pub fn new(window: Window, total: u64, items: Vec<T>) -> Self {
        let mut page = Page {
            total,
            page: window.page,
            page_size: window.page_size,
            offset: window.offset,
            next_offset: None,
            items,
        };
        page.set_next_offset();
        page
    }

    /// The same page with each item converted.
    pub fn map<U>(self, convert: impl FnMut(T) -> U) -> Page<U> {
        Page {
            total: self.total,
            page: self.page,
            page_size: self.page_size,
            offset: self.offset,
            next_offset: self.next_offset,
            items: self.items.into_iter().map(convert).collect(),
        }
    }

    fn set_next_offset(&mut self) {
        let next = self.offset.saturating_add(self.items.len() as u64);
        self.next_offset = (next < self.total).then_some(next);
    }
}

impl<T: Serialize> Page<T> {
    /// The page cut to the items whose JSON fits in `max_bytes` (the first item always stays,
    /// however large: a listing must move forward).
    pub fn within_bytes(mut self, max_bytes: usize) -> Self {
        let mut used = 0usize;
        let mut keep = 0usize;
        for item in &self.items {
            let size = serde_json::to_vec(item).map_or(0, |json| json.len()) + 1;
            if keep > 0 && used + size > max_bytes {
                break;
            }
            used += size;
            keep += 1;
        }
        if keep < self.items.len() {
            self.items.truncate(keep);
            self.set_next_offset();
        }
        self
    }
}

/// `?page=&pageSize=` or `?offset=&pageSize=` on list endpoints.
#[derive(Debug, Clone, Copy, Deserialize, IntoParams, PartialEq)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct PageQuery {
    /// 1-based page number (default 1).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 4294967295i64)]
    pub page: Option<u32>,
    /// 0-based position of the first item, as a page's `nextOffset` gives it; it wins over `page`.
    #[param(minimum = 0, maximum = 9223372036854775807i64)]
    pub offset: Option<u64>,
    /// Items per page (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub page_size: Option<u32>,
}

/// Largest accepted `offset` (the document's int64 bound).
pub const MAX_OFFSET: i64 = i64::MAX;

/// Largest accepted `pageSize`.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Which items a page holds: `page_size` of them from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub page: u32,
    pub page_size: u32,
    pub offset: u64,
}

impl PageQuery {
    /// The validated window, with defaults applied.
    pub fn resolve(&self) -> Result<Window, crate::ApiError> {
        let page_size = self.page_size.unwrap_or(50);
        crate::validate::range("pageSize", page_size.into(), 1, MAX_PAGE_SIZE.into())?;
        let page = self.page.unwrap_or(1);
        crate::validate::range("page", page.into(), 1, u32::MAX.into())?;
        if let Some(offset) = self.offset.filter(|&offset| offset > MAX_OFFSET as u64) {
            return Err(crate::ApiError::invalid("offset", format!("is {offset}, at most {MAX_OFFSET} allowed")));
        }
        match self.offset {
            // An offset wins over a page: it is where a byte-cut page said the next starts.
            Some(offset) => {
                let page = u32::try_from(offset / u64::from(page_size) + 1).unwrap_or(u32::MAX);
                Ok(Window { page, page_size, offset })
            }
            None => Ok(Window { page, page_size, offset: u64::from(page - 1) * u64::from(page_size) }),
        }
    }
}

#[cfg(test)]
mod page_tests {
    use super::*;

    fn window(page: Option<u32>, offset: Option<u64>, size: u32) -> Result<Window, crate::ApiError> {
        PageQuery { page, offset, page_size: Some(size) }.resolve()
    }

    #[test]
    fn a_page_or_an_offset_picks_the_window() {
        assert_eq!(window(None, None, 10).unwrap(), Window { page: 1, page_size: 10, offset: 0 });
        assert_eq!(window(Some(3), None, 10).unwrap(), Window { page: 3, page_size: 10, offset: 20 });
        assert_eq!(window(None, Some(25), 10).unwrap(), Window { page: 3, page_size: 10, offset: 25 });
        assert_eq!(window(Some(1), Some(25), 10).unwrap(), Window { page: 3, page_size: 10, offset: 25 });
        assert!(window(Some(0), Some(25), 10).unwrap_err().message.starts_with("page: "));
        assert!(window(None, Some(1 << 63), 10).unwrap_err().message.starts_with("offset: "));
        assert!(window(Some(0), None, 10).unwrap_err().message.starts_with("page: "));
        assert!(window(None, None, 1001).unwrap_err().message.starts_with("pageSize: "));
    }

    #[test]
    fn the_byte_budget_cuts_a_page_and_says_where_the_next_starts() {
        let items: Vec<String> = (0..10).map(|i| format!("{i:0>98}")).collect();
        let full = Page::new(Window { page: 1, page_size: 10, offset: 0 }, 25, items);
        assert_eq!(full.next_offset, Some(10));
        let cut = full.clone().within_bytes(350);
        assert_eq!(cut.items.len(), 3, "each item is 101 bytes");
        assert_eq!(cut.next_offset, Some(3));
        let one = full.clone().within_bytes(1);
        assert_eq!(one.items.len(), 1, "a page always moves forward");
        assert_eq!(full.clone().within_bytes(1 << 20), full);
        let last = Page::new(Window { page: 3, page_size: 10, offset: 20 }, 25, vec![1, 2, 3, 4, 5]);
        assert_eq!(last.next_offset, None);
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

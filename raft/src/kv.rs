//! The state machine's storage seen as a sorted key-value map, so that [`crate::apply`] is a
//! plain function over plain state: [`MemKv`] in unit tests, RocksDB in production, and an
//! [`Overlay`] that lets the commands of one applied batch see each other's writes before the
//! batch is written atomically.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

/// A storage fault under the state machine. Always fatal for the node: Raft cannot go on
/// applying on top of state it could not read or write.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum StoreError {
    #[error("storage I/O error: {0}")]
    Io(String),
    #[error("corrupt value at key {key}: {reason}")]
    Corrupt { key: String, reason: String },
}

/// Called for each entry of a scan, in key order; `Break` stops the scan.
pub type Visit<'a> = &'a mut dyn FnMut(&[u8], &[u8]) -> ControlFlow<()>;

/// Read access to a sorted key-value map.
pub trait KvRead {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Visits every entry whose key starts with `prefix`, in key order, until `visit` breaks.
    fn scan(&self, prefix: &[u8], visit: Visit<'_>) -> Result<(), StoreError>;

    /// As [`KvRead::scan`], from the first key after `after` (which starts with `prefix`).
    /// Stores that can seek override this; the default walks past the earlier keys.
    fn scan_after(&self, prefix: &[u8], after: &[u8], visit: Visit<'_>) -> Result<(), StoreError> {
        self.scan(prefix, &mut |k, v| if k <= after { ControlFlow::Continue(()) } else { visit(k, v) })
    }
}

/// Write access; writes become visible to later reads through the same handle.
pub trait Kv: KvRead {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>);
    fn delete(&mut self, key: Vec<u8>);
}

/// Reads and decodes a JSON value.
pub fn get_json<T: DeserializeOwned>(kv: &(impl KvRead + ?Sized), key: &[u8]) -> Result<Option<T>, StoreError> {
    match kv.get(key)? {
        None => Ok(None),
        Some(bytes) => decode(key, &bytes).map(Some),
    }
}

/// Decodes a JSON value read at `key`.
pub fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt { key: String::from_utf8_lossy(key).into_owned(), reason: e.to_string() })
}

/// Encodes and writes a JSON value.
pub fn put_json<T: Serialize>(kv: &mut (impl Kv + ?Sized), key: Vec<u8>, value: &T) {
    let bytes = serde_json::to_vec(value).expect("state values always serialize");
    kv.put(key, bytes);
}

/// An in-memory map: the state of unit tests and property tests.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MemKv {
    pub map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl KvRead for MemKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map.get(key).cloned())
    }

    fn scan(&self, prefix: &[u8], visit: Visit<'_>) -> Result<(), StoreError> {
        for (k, v) in self.map.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) || visit(k, v).is_break() {
                break;
            }
        }
        Ok(())
    }
}

impl Kv for MemKv {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.map.insert(key, value);
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.map.remove(&key);
    }
}

/// Pending writes over a read-only base. Reads see the pending writes; [`Overlay::into_writes`]
/// hands them over to be written in one atomic batch.
pub struct Overlay<'a, B: KvRead + ?Sized> {
    base: &'a B,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a, B: KvRead + ?Sized> Overlay<'a, B> {
    pub fn new(base: &'a B) -> Self {
        Overlay { base, writes: BTreeMap::new() }
    }

    /// The pending writes in key order: `Some(value)` to put, `None` to delete.
    pub fn into_writes(self) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        self.writes
    }
}

impl<B: KvRead + ?Sized> KvRead for Overlay<'_, B> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.writes.get(key) {
            Some(pending) => Ok(pending.clone()),
            None => self.base.get(key),
        }
    }

    fn scan(&self, prefix: &[u8], visit: Visit<'_>) -> Result<(), StoreError> {
        self.merged_scan(prefix, None, visit)
    }

    fn scan_after(&self, prefix: &[u8], after: &[u8], visit: Visit<'_>) -> Result<(), StoreError> {
        self.merged_scan(prefix, Some(after), visit)
    }
}

impl<B: KvRead + ?Sized> Overlay<'_, B> {
    /// The base's entries under `prefix` (after `after` when given) merged with the pending
    /// writes, streamed: the base is walked once and never copied, so a scan that stops early
    /// (the queue's first jobs) costs what it visits, however large the range.
    fn merged_scan(&self, prefix: &[u8], after: Option<&[u8]>, visit: Visit<'_>) -> Result<(), StoreError> {
        use std::ops::Bound;
        let start = after.map_or(Bound::Included(prefix.to_vec()), |a| Bound::Excluded(a.to_vec()));
        let mut pending =
            self.writes.range((start, Bound::Unbounded)).take_while(|(k, _)| k.starts_with(prefix)).peekable();
        if pending.peek().is_none() {
            return match after {
                Some(after) => self.base.scan_after(prefix, after, visit),
                None => self.base.scan(prefix, visit),
            };
        }
        let mut stopped = false;
        let mut merge = |k: &[u8], v: &[u8]| {
            // Pending writes that sort before this base key come first; one on this key wins.
            while let Some((pk, pv)) = pending.next_if(|(pk, _)| pk.as_slice() <= k) {
                let shadows = pk.as_slice() == k;
                if let Some(pv) = pv {
                    if visit(pk, pv).is_break() {
                        stopped = true;
                        return ControlFlow::Break(());
                    }
                }
                if shadows {
                    return ControlFlow::Continue(());
                }
            }
            if visit(k, v).is_break() {
                stopped = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        };
        match after {
            Some(after) => self.base.scan_after(prefix, after, &mut merge)?,
            None => self.base.scan(prefix, &mut merge)?,
        }
        if stopped {
            return Ok(());
        }
        for (k, v) in pending {
            if let Some(v) = v {
                if visit(k, v).is_break() {
                    break;
                }
            }
        }
        Ok(())
    }
}

impl<B: KvRead + ?Sized> Kv for Overlay<'_, B> {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn collect(kv: &impl KvRead, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        kv.scan(prefix, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            ControlFlow::Continue(())
        })
        .unwrap();
        out
    }

    /// The first `limit` entries under `prefix` after `after` (all of them when `None`).
    fn first_after(kv: &impl KvRead, prefix: &[u8], after: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        kv.scan_after(prefix, after, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            if out.len() >= limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
        out
    }

    proptest! {
        /// An overlay over a base reads exactly like the base with the writes applied.
        #[test]
        fn overlay_equals_applied_writes(
            base in proptest::collection::btree_map("[ab]/[0-9]{1,2}", "[x-z]", 0..20),
            ops in proptest::collection::vec(("[ab]/[0-9]{1,2}", proptest::option::of("[x-z]")), 0..20),
            prefix in "[ab]?/?",
            after in "[ab]/[0-9]{0,2}",
            limit in 1usize..6,
        ) {
            let base = MemKv { map: base.into_iter().map(|(k, v)| (k.into_bytes(), v.into_bytes())).collect() };
            let mut expected = base.clone();
            let mut overlay = Overlay::new(&base);
            for (k, v) in ops {
                match v {
                    Some(v) => { overlay.put(k.clone().into_bytes(), v.clone().into_bytes()); expected.put(k.into_bytes(), v.into_bytes()); }
                    None => { overlay.delete(k.clone().into_bytes()); expected.delete(k.into_bytes()); }
                }
            }
            prop_assert_eq!(collect(&overlay, prefix.as_bytes()), collect(&expected, prefix.as_bytes()));
            if after.starts_with(&prefix) {
                let (prefix, after) = (prefix.as_bytes(), after.as_bytes());
                prop_assert_eq!(first_after(&overlay, prefix, after, limit), first_after(&expected, prefix, after, limit));
                prop_assert_eq!(first_after(&overlay, prefix, after, 99), first_after(&expected, prefix, after, 99));
            }
            for k in expected.map.keys() {
                prop_assert_eq!(overlay.get(k).unwrap(), expected.get(k).unwrap());
            }
        }
    }
}

//! The in-flight ledger in the replicated state. Three views of one set of entries, kept in
//! step by the only functions that touch them:
//!
//! * `l/{center}/{job}/{task}/{replica}` → [`LedgerEntry`] — release by replica (stop, confirm);
//! * `lt/{placed_at:020}/{center}/{job}/{task}/{replica}` → empty — expiry scans only what is due;
//! * `lc/{center}` → [`InFlight`] — the per-center totals a scheduling cycle reads;
//!
//! and every change of a center's totals is noted by ledger generation (`lx/`, one note per
//! center, its latest), so that the scheduler re-reads only the totals that changed.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use jcs_api::model::Job;

use crate::kv::{get_json, put_json, Kv, KvRead, StoreError};
use crate::schedule::problem::{Capacity, InFlight, LedgerEntry};
use crate::tables;

const BY_TIME_PREFIX: &[u8] = b"lt/";
const TOTALS_PREFIX: &[u8] = b"lc/";

fn entry_key(center: &str, job: &str, task: u32, replica: u32) -> Vec<u8> {
    format!("l/{center}/{job}/{task}/{replica}").into_bytes()
}

fn by_time_key(entry: &LedgerEntry) -> Vec<u8> {
    let placed_at = entry.placed_at.max(0);
    format!("lt/{placed_at:020}/{}/{}/{}/{}", entry.center_id, entry.job_id, entry.task, entry.replica).into_bytes()
}

fn totals_key(center: &str) -> Vec<u8> {
    format!("lc/{center}").into_bytes()
}

/// Adds `sign` × one replica of each demand, in order, to `center`'s totals.
fn adjust_totals(kv: &mut impl Kv, center: &str, demands: &[Capacity], sign: i64) -> Result<(), StoreError> {
    let key = totals_key(center);
    let mut totals: InFlight = get_json(kv, &key)?.unwrap_or_default();
    for demand in demands {
        totals.adjust(demand, sign);
    }
    if totals.replicas <= 0 {
        kv.delete(key);
    } else {
        put_json(kv, key, &totals);
    }
    crate::apply::note_change(kv, &tables::LEDGER_CHANGES, center)
}

fn write_entry(kv: &mut impl Kv, entry: &LedgerEntry) {
    put_json(kv, entry_key(&entry.center_id, &entry.job_id, entry.task, entry.replica), entry);
    kv.put(by_time_key(entry), Vec::new());
}

/// One center's in-flight totals.
pub fn center_totals(kv: &(impl KvRead + ?Sized), center: &str) -> Result<InFlight, StoreError> {
    Ok(get_json(kv, &totals_key(center))?.unwrap_or_default())
}

/// Records a placed replica.
pub fn hold(kv: &mut impl Kv, entry: &LedgerEntry) -> Result<(), StoreError> {
    write_entry(kv, entry);
    adjust_totals(kv, &entry.center_id, &[Capacity::of_demand(&entry.demand)], 1)
}

/// The replicas one placement batch holds. Each entry is written at once; each center's totals
/// and change note once, by [`BatchHolds::finish`], however many replicas the batch put there.
#[derive(Default)]
pub struct BatchHolds {
    by_center: BTreeMap<String, Vec<Capacity>>,
}

impl BatchHolds {
    /// Records a placed replica; its center's totals wait for [`BatchHolds::finish`].
    pub fn hold(&mut self, kv: &mut impl Kv, entry: &LedgerEntry) {
        write_entry(kv, entry);
        self.by_center.entry(entry.center_id.clone()).or_default().push(Capacity::of_demand(&entry.demand));
    }

    /// Adds the batch's replicas to their centers' totals.
    pub fn finish(self, kv: &mut impl Kv) -> Result<(), StoreError> {
        for (center, demands) in &self.by_center {
            adjust_totals(kv, center, demands, 1)?;
        }
        Ok(())
    }
}

/// Releases one replica's entry, if it is held.
pub fn release(kv: &mut impl Kv, center: &str, job: &str, task: u32, replica: u32) -> Result<(), StoreError> {
    let key = entry_key(center, job, task, replica);
    let Some(entry) = get_json::<LedgerEntry>(kv, &key)? else { return Ok(()) };
    kv.delete(key);
    kv.delete(by_time_key(&entry));
    adjust_totals(kv, &entry.center_id, &[Capacity::of_demand(&entry.demand)], -1)
}

/// Releases every entry of a job (stopped or finished).
pub fn release_job(kv: &mut impl Kv, job: &Job) -> Result<(), StoreError> {
    for (task, placed) in job.tasks.iter().enumerate() {
        for (replica, center) in placed.center_ids.iter().enumerate() {
            release(kv, center, &job.id, task as u32, replica as u32)?;
        }
    }
    Ok(())
}

/// Releases every entry placed at or before `cutoff_ms`, reading only those.
pub fn release_placed_before(kv: &mut impl Kv, cutoff_ms: i64) -> Result<(), StoreError> {
    let mut due = Vec::new();
    kv.scan(BY_TIME_PREFIX, &mut |k, _| {
        let text = String::from_utf8_lossy(&k[BY_TIME_PREFIX.len()..]).into_owned();
        let mut parts = text.splitn(5, '/');
        let placed_at: i64 = parts.next().and_then(|t| t.parse().ok()).unwrap_or(i64::MAX);
        if placed_at > cutoff_ms {
            return ControlFlow::Break(());
        }
        let (center, job, task, replica) = (parts.next(), parts.next(), parts.next(), parts.next());
        if let (Some(c), Some(j), Some(Ok(t)), Some(Ok(r))) =
            (center, job, task.map(str::parse), replica.map(str::parse))
        {
            due.push((c.to_string(), j.to_string(), t, r));
        }
        ControlFlow::Continue(())
    })?;
    for (center, job, task, replica) in due {
        release(kv, &center, &job, task, replica)?;
    }
    Ok(())
}

/// Every center's in-flight totals.
pub fn totals(kv: &(impl KvRead + ?Sized)) -> Result<BTreeMap<String, InFlight>, StoreError> {
    Ok(tables::keyed_values_under(kv, TOTALS_PREFIX, |center| Some(center.to_string()))?.into_iter().collect())
}

/// Every entry, in key order.
pub fn entries(kv: &(impl KvRead + ?Sized)) -> Result<Vec<LedgerEntry>, StoreError> {
    tables::values_under(kv, tables::LEDGER_PREFIX)
}

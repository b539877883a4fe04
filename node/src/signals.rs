//! The signals the node's loops send each other, apart from the loops themselves: the scheduler
//! tells the center supervisor which centers got dispatch orders, the center workers and the
//! REST API ask the scheduler for a cycle. Neither loop's module imports the other's.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

/// The wall clock in Unix ms, as the replicated timestamps use it.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Wakes the scheduling loop. Shared by everything that commits writes on this node: the
/// REST API, and on the leader the requests followers forward (their clients' writes and their
/// center workers' reports), so that the leader's loop hears of every change at once.
#[derive(Clone, Default)]
pub struct Kicks {
    notify: Arc<Notify>,
    /// Bumped by every write that can change capacity or eligibility (not by new jobs).
    capacity_epoch: Arc<AtomicU64>,
}

impl Kicks {
    /// Asks for a cycle now: new jobs arrived.
    pub fn kick(&self) {
        self.notify.notify_one();
    }

    /// Asks for a cycle from the head of the queue: something that can unblock jobs changed.
    pub fn capacity_changed(&self) {
        self.capacity_epoch.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_one();
    }

    /// After a command committed: a new job (`new_job`) asks for a cycle; any other change
    /// may unblock queued jobs, so it asks for a cycle from the head of the queue.
    pub fn after_commit(&self, new_job: bool) {
        if new_job {
            self.kick();
        } else {
            self.capacity_changed();
        }
    }

    /// Resolves at the next kick (or at once, if one came since the last wait).
    pub async fn kicked(&self) {
        self.notify.notified().await
    }

    /// How many capacity changes have been signalled so far.
    pub fn capacity_epoch(&self) -> u64 {
        self.capacity_epoch.load(Ordering::Acquire)
    }
}

/// Tells the center supervisor which centers just got dispatch orders (from this node's
/// scheduler).
#[derive(Clone, Default)]
pub struct OrderSignal {
    centers: Arc<Mutex<BTreeSet<String>>>,
    notify: Arc<Notify>,
}

impl OrderSignal {
    pub fn raise<'a>(&self, centers: impl IntoIterator<Item = &'a String>) {
        self.centers.lock().expect("order signal lock").extend(centers.into_iter().cloned());
        self.notify.notify_one();
    }

    /// Resolves once centers have been raised since the last [`OrderSignal::take`].
    pub async fn raised(&self) {
        self.notify.notified().await
    }

    /// The centers raised since the last call.
    pub fn take(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.centers.lock().expect("order signal lock"))
    }
}

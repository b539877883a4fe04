//! One owned center's loop: poll monitoring and replica status every period, carry out stop
//! orders and submit placed replicas whenever the supervisor says there are some.
//!
//! Dispatch is at most once. A key this worker has not itself just seen appear — one already
//! waiting when the worker started (a restart, a new owner), or one whose submit or record
//! failed — is *in doubt*: the worker asks the center for it by key before submitting.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use jcs_adapters::{Adapter, AdapterError, NativeId, NativeState};
use jcs_api::model::{
    center_status, Center, CenterMetrics, EventKind, FailureCategory, ObjectKind, Observed, ReplicaKey, ReplicaReport,
};
use jcs_raft::command::{Command, Outcome, Refusal};
use jcs_raft::tables::{self, DispatchOrder, OnCenter, WorkList};
use tokio::sync::{broadcast, watch, Notify};

use super::{launch, Shared};
use crate::scheduler::now_ms;

pub struct Worker {
    center_id: String,
    epoch: u64,
    adapter: Arc<dyn Adapter>,
    shared: Shared,
    wake: Arc<Notify>,
    /// Keys to ask the center about before submitting.
    doubt: HashSet<ReplicaKey>,
    /// Whether the first scan of the dispatch list is still to come.
    first_scan: bool,
    failed_polls: u32,
    last_metrics: Option<(CenterMetrics, Instant)>,
    over_committed: bool,
    /// What was last reported per replica attempt: only changes are written.
    observed: HashMap<ReplicaKey, Observed>,
    images: launch::ImagesAt,
    /// When the earliest order held back by its retry backoff falls due.
    next_due: Option<tokio::time::Instant>,
    /// After a submit, find or stop failed, orders wait for the next poll rather than being
    /// retried at every wake-up.
    quiet_until: Option<tokio::time::Instant>,
    /// Set when a write was refused for a stale owner epoch: the center has a new owner, so
    /// this worker submits nothing more and ends.
    fenced: std::sync::atomic::AtomicBool,
}

impl Worker {
    pub fn new(center_id: String, epoch: u64, adapter: Arc<dyn Adapter>, shared: Shared, wake: Arc<Notify>) -> Self {
        Worker {
            epoch,
            adapter,
            shared,
            wake,
            doubt: HashSet::new(),
            first_scan: true,
            failed_polls: 0,
            last_metrics: None,
            over_committed: false,
            observed: HashMap::new(),
            images: launch::ImagesAt::new(&center_id),
            center_id,
            next_due: None,
            quiet_until: None,
            fenced: Default::default(),
        }
    }

    fn fenced(&self) -> bool {
        self.fenced.load(std::sync::atomic::Ordering::Acquire)
    }

    pub async fn run(mut self, mut stop: watch::Receiver<()>) {
        let mut next_poll = tokio::time::Instant::now();
        let mut announcements = self.adapter.events();
        loop {
            let far = tokio::time::Instant::now() + Duration::from_secs(3600);
            let announced = tokio::select! {
                _ = self.wake.notified() => false,
                _ = tokio::time::sleep_until(next_poll) => false,
                _ = tokio::time::sleep_until(self.next_due.unwrap_or(far)) => false,
                () = next_announcement(&mut announcements) => true,
                _ = stop.changed() => return,
            };
            let now = tokio::time::Instant::now();
            let polled = now >= next_poll;
            if polled {
                self.poll().await;
                next_poll = tokio::time::Instant::now() + self.shared.settings.poll_interval;
            } else if announced {
                // A replica's state changed: read it now rather than at the next poll (a
                // failure here is the next poll's to count).
                let _ = self.poll_replicas().await;
            }
            if polled || self.quiet_until.is_none_or(|until| now >= until) {
                let failed = self.carry_out_stops().await | self.dispatch_due().await;
                self.quiet_until = failed.then(|| tokio::time::Instant::now() + self.shared.settings.poll_interval);
            }
            if self.fenced() {
                tracing::info!(center_id = %self.center_id, owner_epoch = self.epoch, "center has a new owner; worker ends");
                return;
            }
        }
    }

    async fn propose(&self, command: Command) -> Option<Outcome> {
        match self.shared.proposer.propose(command).await {
            Ok(Ok(outcome)) => Some(outcome),
            Ok(Err(refusal @ Refusal::StaleOwner { .. })) => {
                tracing::debug!(center_id = %self.center_id, %refusal, "center write fenced");
                self.fenced.store(true, std::sync::atomic::Ordering::Release);
                None
            }
            Ok(Err(refusal)) => {
                tracing::warn!(center_id = %self.center_id, %refusal, "center write refused");
                None
            }
            Err(e) => {
                tracing::warn!(center_id = %self.center_id, error = %e, "center write not committed");
                None
            }
        }
    }

    async fn event(&self, kind: EventKind, job_id: Option<String>, message: String) {
        tracing::info!(center_id = %self.center_id, kind = kind.as_str(), job_id = ?job_id, %message, "center event");
        let command = Command::RecordEvent { center_id: self.center_id.clone(), kind, job_id, message };
        self.propose(command).await;
    }

    fn center(&self) -> Option<Center> {
        tables::get(&self.shared.reader, ObjectKind::Center, &self.center_id).ok().flatten()
    }

    /// Monitoring and status, then the center's health verdict.
    async fn poll(&mut self) {
        self.images.forget();
        let result = match self.adapter.resources().await {
            Ok(report) => {
                self.write_metrics(report).await;
                self.poll_replicas().await
            }
            Err(e) => Err(e),
        };
        let status = self.center().map(|c| c.status);
        let available = status.map(|s| s == center_status::AVAILABLE);
        match result {
            Ok(()) => {
                self.failed_polls = 0;
                if status.is_some_and(|s| s != center_status::AVAILABLE) {
                    self.set_health(true, "the center answers its polls".into()).await;
                }
            }
            Err(e) => {
                self.failed_polls += 1;
                metrics::counter!("jcs_center_poll_failures_total", "center" => self.center_id.clone()).increment(1);
                if self.failed_polls == 1 {
                    self.event(EventKind::PollFailed, None, e.to_string()).await;
                }
                if self.failed_polls >= self.shared.settings.failed_polls_before_unavailable && available != Some(false)
                {
                    let why = format!("{} consecutive polls failed, last: {e}", self.failed_polls);
                    self.set_health(false, why).await;
                }
            }
        }
    }

    async fn set_health(&self, available: bool, reason: String) {
        tracing::warn!(center_id = %self.center_id, available, %reason, "center health changes");
        let command =
            Command::SetCenterHealth { center_id: self.center_id.clone(), owner_epoch: self.epoch, available, reason };
        if self.propose(command).await.is_some() {
            self.shared.scheduler.kicks.capacity_changed();
        }
    }

    /// Writes Table 4 when it changed, or when the last write is getting old.
    async fn write_metrics(&mut self, report: jcs_adapters::ResourceReport) {
        let metrics = report.metrics;
        let over = metrics.cpu_free < 0 || metrics.memory_free < 0 || metrics.gpu_free < 0;
        if over && !self.over_committed {
            self.event(EventKind::OverCommitted, None, format!("free capacity below zero: {metrics:?}")).await;
        }
        self.over_committed = over;
        let unchanged = self
            .last_metrics
            .as_ref()
            .is_some_and(|(last, at)| *last == metrics && at.elapsed() < self.shared.settings.metrics_refresh);
        if unchanged {
            return;
        }
        let command = Command::ReportMetrics { center_id: self.center_id.clone(), metrics: metrics.clone() };
        if self.propose(command).await.is_some() {
            self.last_metrics = Some((metrics, Instant::now()));
            self.shared.scheduler.kicks.capacity_changed();
        }
    }

    /// Asks the center about every replica it should have and reports what changed.
    async fn poll_replicas(&mut self) -> Result<(), AdapterError> {
        let on: Vec<(String, u32, u32, OnCenter)> =
            tables::work_list(&self.shared.reader, WorkList::OnCenter, &self.center_id).unwrap_or_default();
        if on.is_empty() {
            self.observed.clear();
            return Ok(());
        }
        let ids: Vec<NativeId> = on.iter().map(|(.., o)| NativeId(o.native_id.clone())).collect();
        let states = self.adapter.status(&ids).await?;
        let mut reports = Vec::new();
        let mut live = HashMap::new();
        for ((job_id, task, replica, o), state) in on.into_iter().zip(states) {
            let key = ReplicaKey { job_id, task, replica, attempt: o.attempt };
            let observed = observe(state);
            if self.observed.get(&key) != Some(&observed) {
                reports.push(ReplicaReport { key: key.clone(), observed: observed.clone() });
            }
            live.insert(key, observed);
        }
        self.observed = live;
        if !reports.is_empty() {
            let finished = reports.iter().any(|r| matches!(r.observed, Observed::Completed | Observed::Failed { .. }));
            let command =
                Command::ReportReplicas { center_id: self.center_id.clone(), owner_epoch: self.epoch, reports };
            if self.propose(command).await.is_none() {
                self.observed.clear();
            } else if finished {
                self.shared.scheduler.kicks.capacity_changed();
            }
        }
        Ok(())
    }

    /// Carries out the center's stop orders; `true` when one failed (it stays for later). An
    /// order without a native id is for a submit whose answer may have been lost: whatever the
    /// center has under the key is stopped.
    async fn carry_out_stops(&mut self) -> bool {
        let orders = tables::stop_orders(&self.shared.reader, &self.center_id).unwrap_or_default();
        if orders.is_empty() {
            return false;
        }
        let grace = self.shared.settings.stop_grace;
        let adapter = self.adapter.clone();
        let results: Vec<(ReplicaKey, bool)> = stream::iter(orders)
            .map(|(key, order)| {
                let adapter = adapter.clone();
                async move {
                    let native = match order.native_id.as_str() {
                        "" => adapter.find(&key).await,
                        id => Ok(Some(NativeId(id.to_string()))),
                    };
                    let stopped = match native {
                        Ok(Some(id)) => adapter.stop(&id, grace).await,
                        Ok(None) => Ok(()),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = &stopped {
                        tracing::warn!(replica = %key, error = %e, "stop failed; will retry");
                    }
                    (key, stopped.is_ok())
                }
            })
            .buffer_unordered(self.shared.settings.dispatch_concurrency)
            .collect()
            .await;
        let failed = results.iter().any(|(_, ok)| !ok);
        let done: Vec<ReplicaKey> = results.into_iter().filter_map(|(key, ok)| ok.then_some(key)).collect();
        if !done.is_empty() {
            let command = Command::StopsDone { center_id: self.center_id.clone(), owner_epoch: self.epoch, keys: done };
            self.propose(command).await;
        }
        failed
    }

    /// Submits every due dispatch order, a few at a time; `true` when one failed.
    async fn dispatch_due(&mut self) -> bool {
        let orders: Vec<(String, u32, u32, DispatchOrder)> =
            tables::work_list(&self.shared.reader, WorkList::Dispatch, &self.center_id).unwrap_or_default();
        let now = now_ms();
        let mut due = Vec::new();
        let mut next_due: Option<i64> = None;
        for (job_id, task, replica, order) in orders {
            let key = ReplicaKey { job_id, task, replica, attempt: order.attempt };
            if self.first_scan {
                self.doubt.insert(key.clone());
            }
            if order.not_before > now {
                next_due = Some(next_due.map_or(order.not_before, |n| n.min(order.not_before)));
                continue;
            }
            let in_doubt = self.doubt.contains(&key);
            due.push((key, in_doubt));
        }
        self.first_scan = false;
        self.next_due =
            next_due.map(|at| tokio::time::Instant::now() + Duration::from_millis((at - now).max(1) as u64));
        let this = &*self;
        let results: Vec<(ReplicaKey, bool)> = stream::iter(due)
            .map(|(key, in_doubt)| async move {
                let ok = this.dispatch_one(&key, in_doubt).await;
                (key, ok)
            })
            .buffer_unordered(self.shared.settings.dispatch_concurrency)
            .collect()
            .await;
        let failed = results.iter().any(|(_, ok)| !ok);
        for (key, ok) in results {
            if ok {
                self.doubt.remove(&key);
            } else {
                self.doubt.insert(key);
            }
        }
        failed
    }

    /// Submits one replica attempt and records it; `false` leaves the key in doubt.
    async fn dispatch_one(&self, key: &ReplicaKey, in_doubt: bool) -> bool {
        if self.fenced() {
            return false;
        }
        let started = Instant::now();
        let launch = match launch::build(&self.shared.reader, &self.center_id, key, &self.images) {
            Ok(Some(launch)) => launch,
            Ok(None) => return true, // the order went away meanwhile
            Err(e) => {
                tracing::error!(replica = %key, error = %e, "cannot build the launch");
                return false;
            }
        };
        let existing = if in_doubt {
            match self.adapter.find(key).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(center_id = %self.center_id, replica = %key, error = %e, "cannot ask the center about a replica in doubt");
                    return false;
                }
            }
        } else {
            None
        };
        let native = match existing {
            Some(native) => {
                tracing::info!(center_id = %self.center_id, replica = %key, native_id = %native, "found a replica submitted before: not submitting again");
                native
            }
            None => match self.adapter.submit(&launch).await {
                Ok(native) => native,
                Err(AdapterError::Unavailable(why)) => {
                    tracing::warn!(center_id = %self.center_id, replica = %key, %why, "submit failed; will ask before retrying");
                    return false;
                }
                Err(refused) => {
                    self.refused(key, refused.to_string()).await;
                    return true;
                }
            },
        };
        let command = Command::Dispatched {
            center_id: self.center_id.clone(),
            owner_epoch: self.epoch,
            key: key.clone(),
            native_id: native.0.clone(),
        };
        let recorded = self.propose(command).await.is_some();
        if recorded {
            metrics::histogram!("jcs_dispatch_seconds").record(started.elapsed().as_secs_f64());
            metrics::counter!("jcs_replicas_dispatched_total").increment(1);
            tracing::debug!(center_id = %self.center_id, replica = %key, native_id = %native, "replica dispatched");
        }
        recorded
    }

    /// The center refused a replica: it goes elsewhere (a center fault, not the program's).
    async fn refused(&self, key: &ReplicaKey, why: String) {
        self.event(EventKind::DispatchFailed, Some(key.job_id.clone()), format!("{key}: {why}")).await;
        let observed = Observed::Failed { exit_code: None, category: FailureCategory::Center, reason: why };
        let reports = vec![ReplicaReport { key: key.clone(), observed }];
        let command = Command::ReportReplicas { center_id: self.center_id.clone(), owner_epoch: self.epoch, reports };
        if self.propose(command).await.is_some() {
            self.shared.scheduler.kick();
        }
    }
}

/// Waits for the platform's next announcement, taking every one already queued with it (one
/// status read answers them all); never returns for a platform that does not push.
async fn next_announcement(announcements: &mut Option<broadcast::Receiver<NativeId>>) {
    let Some(receiver) = announcements else { return std::future::pending().await };
    match receiver.recv().await {
        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
            while !matches!(
                receiver.try_recv(),
                Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed)
            ) {}
        }
        Err(broadcast::error::RecvError::Closed) => {
            *announcements = None;
            std::future::pending::<()>().await
        }
    }
}

/// A native state as jcs records it: a job the center forgot is a center fault.
fn observe(state: NativeState) -> Observed {
    match state {
        NativeState::Queued => Observed::Queued,
        NativeState::Running => Observed::Running,
        NativeState::Succeeded => Observed::Completed,
        NativeState::Failed { exit_code, category, reason } => Observed::Failed { exit_code, category, reason },
        NativeState::Missing => Observed::Failed {
            exit_code: None,
            category: FailureCategory::Center,
            reason: "the center has no record of the replica".into(),
        },
    }
}

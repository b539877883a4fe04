//! One owned center's loop: poll monitoring and replica status every period, carry out stop
//! orders and submit placed replicas whenever the supervisor says there are some.
//!
//! Dispatch is at most once. A key this worker has not itself just seen appear — one already
//! waiting when the worker started (a restart, a new owner), or one whose submit or record
//! failed — is *in doubt*: the worker asks the center for it by key before submitting.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jcs_adapters::{Adapter, AdapterError, NativeId, NativeState};
use jcs_api::model::{
    center_status, Center, CenterMetrics, EventKind, FailureCategory, ObjectKind, Observed, ReplicaKey, ReplicaReport,
};
use jcs_raft::command::{Command, Outcome, Refusal};
use jcs_raft::tables::{self, DispatchOrder, OnCenter, StopOrder, WorkList};
use tokio::sync::{broadcast, watch, Notify, Semaphore};
use tokio::task::JoinSet;

use super::{launch, Shared};
use crate::signals::now_ms;

/// What the worker's stop and dispatch tasks share with it: the center, the owner's epoch and
/// the way to write.
struct CenterLink {
    center_id: String,
    epoch: u64,
    adapter: Arc<dyn Adapter>,
    shared: Shared,
    images: launch::ImagesAt,
    /// Set when a write was refused for a stale owner epoch: the center has a new owner, so
    /// this worker submits nothing more and ends.
    fenced: AtomicBool,
}

/// What a worker's task does.
#[derive(Debug, Clone, Copy)]
enum Work {
    Stop,
    Dispatch,
}

/// A stop or a dispatch that ended, and whether it succeeded.
struct Done {
    work: Work,
    key: ReplicaKey,
    ok: bool,
}

pub struct Worker {
    link: Arc<CenterLink>,
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
    /// When the earliest order held back by its retry backoff falls due.
    next_due: Option<tokio::time::Instant>,
    /// After a submit, find or stop failed, orders wait for the next poll rather than being
    /// retried at every wake-up.
    quiet_until: Option<tokio::time::Instant>,
    /// Stops and submissions under way. Each runs as a task of its own, at most
    /// `dispatch_concurrency` of each kind at once, so that a slow one — a replica that ignores
    /// SIGTERM for the whole grace period, a slow submit — holds up neither the others nor the
    /// polls. Dropped with the worker: a new owner redoes what was cut short (in doubt).
    tasks: JoinSet<Done>,
    /// What each task is doing, so that one that panicked is booked too.
    task_work: HashMap<tokio::task::Id, (Work, ReplicaKey)>,
    stopping: HashSet<ReplicaKey>,
    dispatching: HashSet<ReplicaKey>,
    stop_slots: Arc<Semaphore>,
    dispatch_slots: Arc<Semaphore>,
}

impl Worker {
    pub fn new(center_id: String, epoch: u64, adapter: Arc<dyn Adapter>, shared: Shared, wake: Arc<Notify>) -> Self {
        let concurrency = shared.settings.dispatch_concurrency.max(1);
        Worker {
            link: Arc::new(CenterLink {
                epoch,
                adapter,
                shared,
                images: launch::ImagesAt::new(&center_id),
                center_id,
                fenced: AtomicBool::new(false),
            }),
            wake,
            doubt: HashSet::new(),
            first_scan: true,
            failed_polls: 0,
            last_metrics: None,
            over_committed: false,
            observed: HashMap::new(),
            next_due: None,
            quiet_until: None,
            tasks: JoinSet::new(),
            task_work: HashMap::new(),
            stopping: HashSet::new(),
            dispatching: HashSet::new(),
            stop_slots: Arc::new(Semaphore::new(concurrency)),
            dispatch_slots: Arc::new(Semaphore::new(concurrency)),
        }
    }

    pub async fn run(mut self, mut stop: watch::Receiver<()>) {
        let mut next_poll = tokio::time::Instant::now();
        let mut announcements = self.link.adapter.events();
        loop {
            let far = tokio::time::Instant::now() + Duration::from_secs(3600);
            let mut announced = false;
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(next_poll) => {}
                _ = tokio::time::sleep_until(self.next_due.unwrap_or(far)) => {}
                () = next_announcement(&mut announcements) => announced = true,
                Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    // Bookkeeping only: the lists are read again at the next wake-up or poll,
                    // not once per finished task.
                    self.finished(done);
                    if self.superseded() {
                        return;
                    }
                    continue;
                }
                _ = stop.changed() => return,
            }
            let now = tokio::time::Instant::now();
            let polled = now >= next_poll;
            if polled {
                self.poll().await;
                next_poll = tokio::time::Instant::now() + self.link.shared.settings.poll_interval;
            } else if announced {
                // A replica's state changed: read it now rather than at the next poll (a
                // failure here is the next poll's to count).
                let _ = self.poll_replicas().await;
            }
            if polled || self.quiet_until.is_none_or(|until| now >= until) {
                self.quiet_until = None;
                self.start_stops();
                self.start_dispatches();
            }
            if self.superseded() {
                return;
            }
        }
    }

    /// Whether the center has a new owner (a write of this worker was fenced): it then ends.
    fn superseded(&self) -> bool {
        let fenced = self.link.fenced();
        if fenced {
            tracing::info!(center_id = %self.link.center_id, owner_epoch = self.link.epoch, "center has a new owner; worker ends");
        }
        fenced
    }

    /// Books a stop or dispatch task's end: a failure leaves its key in doubt and quiets the
    /// orders until the next poll.
    fn finished(&mut self, done: Result<(tokio::task::Id, Done), tokio::task::JoinError>) {
        let Done { work, key, ok } = match done {
            Ok((id, done)) => {
                self.task_work.remove(&id);
                done
            }
            Err(e) => {
                tracing::error!(center_id = %self.link.center_id, error = %e, "a stop or dispatch task failed");
                // Booked as failed: the order stays, and is taken up again after the quiet.
                let Some((work, key)) = self.task_work.remove(&e.id()) else { return };
                Done { work, key, ok: false }
            }
        };
        let key = match work {
            Work::Stop => {
                self.stopping.remove(&key);
                None
            }
            Work::Dispatch => {
                self.dispatching.remove(&key);
                Some(key)
            }
        };
        match key {
            Some(key) if ok => {
                self.doubt.remove(&key);
            }
            Some(key) => {
                self.doubt.insert(key);
            }
            None => {}
        }
        if !ok {
            self.quiet_until = Some(tokio::time::Instant::now() + self.link.shared.settings.poll_interval);
        }
    }

    /// Monitoring and status, then the center's health verdict.
    async fn poll(&mut self) {
        self.link.images.forget();
        let result = match self.link.adapter.resources().await {
            Ok(report) => {
                self.write_metrics(report).await;
                self.poll_replicas().await
            }
            Err(e) => Err(e),
        };
        let link = &self.link;
        let status = link.center().map(|c| c.status);
        let available = status.map(|s| s == center_status::AVAILABLE);
        match result {
            Ok(()) => {
                self.failed_polls = 0;
                if status.is_some_and(|s| s != center_status::AVAILABLE) {
                    link.set_health(true, "the center answers its polls".into()).await;
                }
            }
            Err(e) => {
                self.failed_polls += 1;
                metrics::counter!("jcs_center_poll_failures_total", "center" => link.center_id.clone()).increment(1);
                if self.failed_polls == 1 {
                    link.event(EventKind::PollFailed, None, e.to_string()).await;
                }
                if self.failed_polls >= link.shared.settings.failed_polls_before_unavailable && available != Some(false)
                {
                    let why = format!("{} consecutive polls failed, last: {e}", self.failed_polls);
                    link.set_health(false, why).await;
                }
            }
        }
    }

    /// Writes Table 4 when it changed, or when the last write is getting old.
    async fn write_metrics(&mut self, report: jcs_adapters::ResourceReport) {
        let metrics = report.metrics;
        let over = metrics.cpu_free < 0 || metrics.memory_free < 0 || metrics.gpu_free < 0;
        if over && !self.over_committed {
            self.link.event(EventKind::OverCommitted, None, format!("free capacity below zero: {metrics:?}")).await;
        }
        self.over_committed = over;
        let unchanged = self
            .last_metrics
            .as_ref()
            .is_some_and(|(last, at)| *last == metrics && at.elapsed() < self.link.shared.settings.metrics_refresh);
        if unchanged {
            return;
        }
        let command = Command::ReportMetrics { center_id: self.link.center_id.clone(), metrics: metrics.clone() };
        if self.link.propose(command).await.is_some() {
            self.last_metrics = Some((metrics, Instant::now()));
            self.link.shared.kicks.capacity_changed();
        }
    }

    /// Asks the center about every replica it should have and reports what changed.
    async fn poll_replicas(&mut self) -> Result<(), AdapterError> {
        let link = &self.link;
        let on: Vec<(String, u32, u32, OnCenter)> =
            tables::work_list(&link.shared.reader, WorkList::OnCenter, &link.center_id).unwrap_or_default();
        if on.is_empty() {
            self.observed.clear();
            return Ok(());
        }
        let ids: Vec<NativeId> = on.iter().map(|(.., o)| NativeId(o.native_id.clone())).collect();
        let states = link.adapter.status(&ids).await?;
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
                Command::ReportReplicas { center_id: link.center_id.clone(), owner_epoch: link.epoch, reports };
            if link.propose(command).await.is_none() {
                self.observed.clear();
            } else if finished {
                link.shared.kicks.capacity_changed();
            }
        }
        Ok(())
    }

    /// Starts a task for every stop order not already under way.
    fn start_stops(&mut self) {
        let orders = tables::stop_orders(&self.link.shared.reader, &self.link.center_id).unwrap_or_default();
        for (key, order) in orders {
            // A stop by key waits for a submission of that key under way: asked before the
            // submission lands, the center would answer that it has nothing to stop.
            let after_submit = order.native_id.is_empty() && self.dispatching.contains(&key);
            if after_submit || !self.stopping.insert(key.clone()) {
                continue;
            }
            let (link, stopped) = (self.link.clone(), key.clone());
            self.spawn(Work::Stop, key, async move { link.stop_one(&stopped, order).await });
        }
    }

    /// Runs one stop or submission as a task of its own, once one of its kind's slots is free.
    fn spawn(&mut self, work: Work, key: ReplicaKey, run: impl Future<Output = bool> + Send + 'static) {
        let slots = match work {
            Work::Stop => self.stop_slots.clone(),
            Work::Dispatch => self.dispatch_slots.clone(),
        };
        let done_key = key.clone();
        let task = self.tasks.spawn(async move {
            let ok = match slots.acquire_owned().await {
                Ok(_slot) => run.await,
                Err(_) => false,
            };
            Done { work, key: done_key, ok }
        });
        self.task_work.insert(task.id(), (work, key));
    }

    /// Starts a task for every due dispatch order not already under way.
    fn start_dispatches(&mut self) {
        let orders: Vec<(String, u32, u32, DispatchOrder)> =
            tables::work_list(&self.link.shared.reader, WorkList::Dispatch, &self.link.center_id).unwrap_or_default();
        let now = now_ms();
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
            if !self.dispatching.insert(key.clone()) {
                continue;
            }
            let in_doubt = self.doubt.contains(&key);
            let (link, submitted) = (self.link.clone(), key.clone());
            self.spawn(Work::Dispatch, key, async move { link.dispatch_one(&submitted, in_doubt).await });
        }
        self.first_scan = false;
        self.next_due =
            next_due.map(|at| tokio::time::Instant::now() + Duration::from_millis((at - now).max(1) as u64));
    }
}

impl CenterLink {
    fn fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    async fn propose(&self, command: Command) -> Option<Outcome> {
        match self.shared.proposer.propose(command).await {
            Ok(Ok(outcome)) => Some(outcome),
            Ok(Err(refusal @ Refusal::StaleOwner { .. })) => {
                tracing::debug!(center_id = %self.center_id, %refusal, "center write fenced");
                self.fenced.store(true, Ordering::Release);
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

    async fn set_health(&self, available: bool, reason: String) {
        tracing::warn!(center_id = %self.center_id, available, %reason, "center health changes");
        let command =
            Command::SetCenterHealth { center_id: self.center_id.clone(), owner_epoch: self.epoch, available, reason };
        if self.propose(command).await.is_some() {
            self.shared.kicks.capacity_changed();
        }
    }

    /// Carries out one stop order and records it; `false` when it failed (the order stays for
    /// later). An order without a native id is for a submit whose answer may have been lost:
    /// whatever the center has under the key is stopped.
    async fn stop_one(&self, key: &ReplicaKey, order: StopOrder) -> bool {
        let native = match order.native_id.as_str() {
            "" => self.adapter.find(key).await,
            id => Ok(Some(NativeId(id.to_string()))),
        };
        let stopped = match native {
            Ok(Some(id)) => self.adapter.stop(&id, self.shared.settings.stop_grace).await,
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = &stopped {
            tracing::warn!(center_id = %self.center_id, replica = %key, error = %e, "stop failed; will retry");
            return false;
        }
        let command =
            Command::StopsDone { center_id: self.center_id.clone(), owner_epoch: self.epoch, keys: vec![key.clone()] };
        self.propose(command).await;
        true
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
            self.shared.kicks.kick();
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

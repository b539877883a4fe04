//! The perception and dispatch engines (field report; standard §6.1.3, §6.4): the only part of
//! jcs that talks to centers. For every center this node owns, a [`worker`] polls monitoring
//! and replica status, carries out stop orders and submits placed replicas, writing what it
//! learns through Raft. Which centers a node owns is [`Ownership`]'s answer: the committed
//! center shards (see [`crate::cluster::shards`]), while this node holds its owner lease. The
//! owner epoch in every write fences a former owner.
//!
//! A supervisor keeps one worker per owned center, rebuilding a center's adapter when its
//! `adapter` field changes, and wakes the workers that have new dispatch or stop orders: at
//! once for the centers the local scheduler just placed on ([`OrderSignal`]), and by scanning
//! the order lists at most every [`ORDER_SCAN_EVERY`] while entries apply (orders written by
//! anyone else: stops, retries, another node's scheduler). Scanning on every applied entry
//! would walk the tombstones of every order already carried out, many times a second.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jcs_adapters::{Adapter, AdapterContext};
use jcs_api::model::{Center, ObjectKind};
use jcs_raft::store::StateReader;
use jcs_raft::tables;
use jcs_raft::Raft;
use tokio::sync::{watch, Notify};

use crate::cluster::Cluster;
use crate::proposer::Proposer;
use crate::signals::{Kicks, OrderSignal};

mod launch;
mod worker;

/// How the center workers behave, from the node's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where adapters keep their per-center files (`{dir}/{center}`).
    pub dir: std::path::PathBuf,
    pub poll_interval: Duration,
    /// Consecutive failed polls before a center is marked unavailable.
    pub failed_polls_before_unavailable: u32,
    /// Submissions in flight per center.
    pub dispatch_concurrency: usize,
    pub stop_grace: Duration,
    /// How often the supervisor checks which centers this node owns.
    pub ownership_check: Duration,
    /// Unchanged monitoring is still rewritten this often, so that it never looks stale.
    pub metrics_refresh: Duration,
}

/// How often the supervisor may scan the order lists while entries apply.
pub const ORDER_SCAN_EVERY: Duration = Duration::from_millis(100);

/// Which centers this node drives: those the committed shards give it, while it holds its
/// owner lease (a node cut off from the leader lets its centers go before the leader hands
/// them to another member).
#[derive(Clone)]
pub struct Ownership {
    cluster: Cluster,
}

impl Ownership {
    /// The centers this node owns, with its owner epoch for each.
    pub fn owned(&self, reader: &StateReader) -> Result<BTreeMap<String, u64>, jcs_raft::kv::StoreError> {
        if !self.cluster.holds_owner_lease() {
            return Ok(BTreeMap::new());
        }
        let me = self.cluster.node_id();
        Ok(tables::center_owners(reader)?
            .into_iter()
            .filter(|(_, owner)| owner.node == Some(me))
            .map(|(center, owner)| (center, owner.epoch))
            .collect())
    }
}

/// A built adapter with the center's `adapter` field it was built from.
type BuiltAdapter = (serde_json::Value, Arc<dyn Adapter>);

/// The adapters of the centers this node has built, for the workers and the log endpoint.
#[derive(Clone, Default)]
pub struct Adapters {
    inner: Arc<Mutex<HashMap<String, BuiltAdapter>>>,
}

impl Adapters {
    pub fn get(&self, center: &str) -> Option<Arc<dyn Adapter>> {
        self.inner.lock().expect("adapters lock").get(center).map(|(_, a)| a.clone())
    }

    /// Whether `center`'s `adapter` field differs from the one its adapter was built from.
    fn changed(&self, center: &Center) -> bool {
        let fingerprint = serde_json::to_value(&center.adapter).unwrap_or_default();
        let map = self.inner.lock().expect("adapters lock");
        map.get(&center.ai_center_id).is_none_or(|(seen, _)| *seen != fingerprint)
    }

    /// The adapter for `center`, built if there is none (a changed one is forgotten first).
    fn ensure(
        &self,
        center: &Center,
        dir: &std::path::Path,
        cluster_id: &str,
    ) -> Result<Arc<dyn Adapter>, jcs_adapters::AdapterError> {
        let mut map = self.inner.lock().expect("adapters lock");
        if let Some((_, adapter)) = map.get(&center.ai_center_id) {
            return Ok(adapter.clone());
        }
        let context = AdapterContext::new(dir.join(&center.ai_center_id), cluster_id);
        let adapter = jcs_adapters::Registry::builtin().build(center, &context)?;
        let fingerprint = serde_json::to_value(&center.adapter).unwrap_or_default();
        map.insert(center.ai_center_id.clone(), (fingerprint, adapter.clone()));
        Ok(adapter)
    }

    fn forget(&self, center: &str) {
        self.inner.lock().expect("adapters lock").remove(center);
    }
}

/// What the workers share.
#[derive(Clone)]
struct Shared {
    proposer: Proposer,
    reader: StateReader,
    /// Asks the scheduler for a cycle when a center's capacity changes.
    kicks: Kicks,
    settings: Settings,
}

/// Starts the supervisor; it runs until `stop` changes.
pub fn start(
    cluster: Cluster,
    reader: StateReader,
    kicks: Kicks,
    settings: Settings,
    adapters: Adapters,
    orders: OrderSignal,
    stop: watch::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    let raft = cluster.raft.clone();
    let shared = Shared { proposer: cluster.proposer.clone(), reader, kicks, settings };
    tokio::spawn(supervise(Ownership { cluster }, raft, shared, adapters, orders, stop))
}

struct Running {
    /// The owner epoch the worker writes with.
    epoch: u64,
    wake: Arc<Notify>,
    stop: watch::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn supervise(
    ownership: Ownership,
    raft: Raft,
    shared: Shared,
    adapters: Adapters,
    orders: OrderSignal,
    mut stop: watch::Receiver<()>,
) {
    let mut workers: BTreeMap<String, Running> = BTreeMap::new();
    let mut applied = raft.metrics();
    let mut refresh = tokio::time::interval(shared.settings.ownership_check);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut scan = tokio::time::interval(ORDER_SCAN_EVERY);
    scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut changed_since_scan = true;
    loop {
        tokio::select! {
            _ = refresh.tick() => {
                reconcile_workers(&ownership, &shared, &adapters, &mut workers).await;
                changed_since_scan = true;
            }
            _ = orders.raised() => {
                for center in orders.take() {
                    if let Some(running) = workers.get(&center) {
                        running.wake.notify_one();
                    }
                }
            }
            changed = applied.changed() => {
                if changed.is_err() {
                    break;
                }
                changed_since_scan = true;
            }
            _ = scan.tick() => {
                if std::mem::take(&mut changed_since_scan) {
                    wake_workers_with_orders(&shared.reader, &workers);
                }
            }
            _ = stop.changed() => break,
        }
    }
    for (_, running) in std::mem::take(&mut workers) {
        let _ = running.stop.send(());
        let _ = running.task.await;
    }
}

/// Starts a worker for each owned center, stops those of centers gone or no longer owned, and
/// restarts a worker whose adapter changed. A worker is stopped — and waited for — before its
/// center's adapter is built again, so that two instances never drive one center at once (the
/// new one re-reads what the old one left on the center).
async fn reconcile_workers(
    ownership: &Ownership,
    shared: &Shared,
    adapters: &Adapters,
    workers: &mut BTreeMap<String, Running>,
) {
    let read = tables::all::<Center>(&shared.reader, ObjectKind::Center)
        .and_then(|centers| Ok((centers, ownership.owned(&shared.reader)?, tables::cluster_id(&shared.reader)?)));
    let (centers, epochs, cluster_id) = match read {
        Ok(read) => read,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the centers and their owners");
            return;
        }
    };
    // Every name a worker gives its center carries the cluster's id: none is driven before
    // the first leader has named the cluster.
    let Some(cluster_id) = cluster_id else {
        tracing::debug!("the cluster has no id yet: centers wait");
        return;
    };
    // A center with no adapter is known only through monitoring written to the API.
    let owned: BTreeMap<String, (u64, Center)> = centers
        .into_iter()
        .filter(|center| !center.adapter.kind.is_empty())
        .filter_map(|center| Some((center.ai_center_id.clone(), (*epochs.get(&center.ai_center_id)?, center))))
        .collect();
    let ending: Vec<String> = workers
        .iter()
        .filter(|(id, running)| {
            running.task.is_finished()
                || owned.get(*id).is_none_or(|(epoch, center)| *epoch != running.epoch || adapters.changed(center))
        })
        .map(|(id, _)| id.clone())
        .collect();
    for id in ending {
        let running = workers.remove(&id).expect("listed above");
        let _ = running.stop.send(());
        let _ = running.task.await;
        adapters.forget(&id);
        tracing::info!(center_id = %id, "center worker stopped");
    }
    for (center_id, (epoch, center)) in owned {
        if workers.contains_key(&center_id) {
            continue;
        }
        let adapter = match adapters.ensure(&center, &shared.settings.dir, &cluster_id) {
            Ok(adapter) => adapter,
            Err(e) => {
                tracing::warn!(center_id = %center_id, error = %e, "center has no usable adapter");
                continue;
            }
        };
        let wake = Arc::new(Notify::new());
        let (stop, stopped) = watch::channel(());
        let worker = worker::Worker::new(center_id.clone(), epoch, adapter, shared.clone(), wake.clone());
        let task = tokio::spawn(worker.run(stopped));
        tracing::info!(center_id = %center_id, owner_epoch = epoch, "center worker started");
        workers.insert(center_id, Running { epoch, wake, stop, task });
    }
}

/// Wakes the workers whose centers have dispatch or stop orders. One seek per center with
/// orders, however many orders wait: after a center's first key the scan jumps past the
/// center's whole range.
fn wake_workers_with_orders(reader: &StateReader, workers: &BTreeMap<String, Running>) {
    use jcs_raft::kv::KvRead;
    for prefix in [&b"dq/"[..], &b"so/"[..]] {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let mut center: Option<Vec<u8>> = None;
            let mut first = |k: &[u8], _: &[u8]| {
                let tail = &k[prefix.len()..];
                center = Some(tail.split(|b| *b == b'/').next().unwrap_or_default().to_vec());
                std::ops::ControlFlow::Break(())
            };
            let scanned = match &after {
                None => reader.scan(prefix, &mut first),
                Some(after) => reader.scan_after(prefix, after, &mut first),
            };
            let (Ok(()), Some(center)) = (scanned, center) else { break };
            if let Some(running) = workers.get(String::from_utf8_lossy(&center).as_ref()) {
                running.wake.notify_one();
            }
            // Past every key of this center: `{prefix}{center}/` then the byte after `/`.
            let mut next = prefix.to_vec();
            next.extend_from_slice(&center);
            next.push(b'/' + 1);
            after = Some(next);
        }
    }
}

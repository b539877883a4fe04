//! The local center: replicas run as real processes on this host — for single-machine
//! deployments, development, and end-to-end tests of jcs with real commands.
//!
//! Everything the center knows is on disk under its work dir (see `replica` for the layout),
//! and replicas run in their own process groups outside the node's process, so a node that is
//! killed and restarted re-adopts its running replicas with a fresh `LocalCenter`. The declared
//! capacity is accounted by the shared `Pool`; what does not fit waits in a FIFO queue that
//! every `submit`, `status` and `resources` call advances (the node polls, so that suffices).

mod process;
mod replica;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use jcs_api::model::{NodeFree, ReplicaKey};
use serde::Deserialize;

use self::replica::ReplicaDir;
use crate::config::{self, Images};
use crate::pool::Pool;
use crate::storage::FsStorage;
use crate::{
    logfile, Adapter, AdapterContext, AdapterError, Capabilities, LogChunk, NativeId, NativeImage, NativeState,
    ReplicaLaunch, ResourceReport, Result, Storage,
};

/// `adapter.config` of a `local` center.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// Declared capacity as quantities per device kind (`{"cpu":"8","memory":"16Gi","gpu":"0"}`);
    /// replicas start only while their demands fit in it, and a kind it does not name has none.
    /// Default: this host's CPU count and 16Gi of memory.
    #[serde(default = "default_capacity")]
    pub capacity: BTreeMap<String, String>,
    /// The longest grace, in ms, between SIGTERM and SIGKILL when a replica is stopped; a
    /// longer grace asked by the caller is cut to it. Default 5000.
    #[serde(default = "default_stop_grace_ms")]
    pub stop_grace_ms: u64,
    /// Names of the images the center has; a launch naming another image is rejected (an
    /// empty image name always passes). Absent: any image (the catalog says what it holds).
    #[serde(default)]
    pub images: Option<Vec<String>>,
    /// Where the center keeps its replicas, logs and storage. Default: a directory under the
    /// owner node's data dir. Set it to a directory every node that may own the center can
    /// reach (one host, or a shared file system): a new owner then re-adopts the replicas a
    /// former owner started instead of losing track of them.
    #[serde(default)]
    pub work_dir: Option<PathBuf>,
}

fn default_capacity() -> BTreeMap<String, String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()).to_string();
    config::quantities(&[("cpu", &cpus), ("memory", "16Gi")])
}

fn default_stop_grace_ms() -> u64 {
    5000
}

/// A center whose replicas are processes on this host.
pub struct LocalCenter {
    id: String,
    /// `work_dir/replicas/{cluster_id}`: one directory per replica.
    replicas: PathBuf,
    images: Images,
    max_grace: Duration,
    /// Running and queued replicas; the lock also orders every look at and change to the
    /// replica directories.
    pool: Mutex<Pool<ReplicaKey>>,
    storage: FsStorage,
    /// Announces the exit of every replica this instance started ([`Adapter::events`]).
    exits: tokio::sync::broadcast::Sender<NativeId>,
}

/// Exit announcements kept for a slow listener before it lags (it then just polls).
const EXIT_BACKLOG: usize = 1024;

/// Numbers staging directories, process-wide: instances on one work dir never share one.
static STAGED: AtomicU64 = AtomicU64::new(0);

impl LocalCenter {
    /// Reads the config and re-adopts every replica found under `ctx.work_dir`.
    pub fn new(center_id: &str, config: &serde_json::Value, ctx: &AdapterContext) -> Result<Self> {
        let config: LocalConfig = config::parse("local", center_id, config)?;
        let capacity = config::capacity(center_id, &config.capacity)?;
        let work_dir = config.work_dir.clone().unwrap_or_else(|| ctx.work_dir.clone());
        // Each cluster has its own part of a shared work dir: it never adopts another's.
        let replicas = ctx.scoped(&work_dir.join("replicas"));
        let unusable = |e: std::io::Error| {
            AdapterError::Config(format!("center '{center_id}': work dir {}: {e}", replicas.display()))
        };
        std::fs::create_dir_all(&replicas).map_err(unusable)?;
        let mut pool = Pool::new(center_id, capacity);
        adopt(center_id, &replicas, &mut pool).map_err(unusable)?;
        Ok(LocalCenter {
            id: center_id.to_string(),
            replicas,
            images: Images::new(config.images),
            max_grace: Duration::from_millis(config.stop_grace_ms),
            pool: Mutex::new(pool),
            storage: FsStorage::new(work_dir.join("storage"), work_dir.join("storage.tmp")),
            exits: tokio::sync::broadcast::channel(EXIT_BACKLOG).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Pool<ReplicaKey>> {
        self.pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn dir(&self, key: &ReplicaKey) -> ReplicaDir {
        ReplicaDir::new(&self.replicas, key)
    }

    /// The directory a native id names; `None` for ids this center never hands out.
    fn dir_of(&self, id: &NativeId) -> Option<ReplicaDir> {
        ReplicaKey::parse(&id.0).map(|key| self.dir(&key))
    }

    /// Forgets replicas whose wrapper has ended and starts queued ones while they fit.
    fn advance(&self, pool: &mut Pool<ReplicaKey>) {
        let ended: Vec<ReplicaKey> =
            pool.running().filter(|key| !self.dir(key).process().is_some_and(|p| p.is_alive())).cloned().collect();
        for key in ended {
            pool.release(&key);
            tracing::debug!(center = %self.id, replica = %key, "replica ended");
        }
        loop {
            let admitted = pool.admit();
            if admitted.is_empty() {
                break;
            }
            for key in admitted {
                self.start(pool, key);
            }
        }
    }

    /// Starts a replica the queue admitted; a replica that cannot start leaves the pool.
    fn start(&self, pool: &mut Pool<ReplicaKey>, key: ReplicaKey) {
        let dir = self.dir(&key);
        if dir.is_stopped() {
            pool.release(&key);
            return;
        }
        let (exits, id) = (self.exits.clone(), NativeId(key.to_string()));
        let announce = move || {
            let _ = exits.send(id);
        };
        match dir.launch().and_then(|launch| dir.start(&launch, announce)) {
            Ok(process) => tracing::info!(center = %self.id, replica = %key, pid = process.pid, "replica started"),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                // Another instance on this work dir started it: account it while it runs.
                if !dir.process().is_some_and(|p| p.is_alive()) {
                    pool.release(&key);
                }
            }
            Err(e) => {
                tracing::error!(center = %self.id, replica = %key, error = %e, "replica could not be started");
                dir.record_start_error(&e);
                pool.release(&key);
            }
        }
    }

    fn staging_dir(&self) -> PathBuf {
        let n = STAGED.fetch_add(1, Ordering::Relaxed);
        self.replicas.join(format!("{}{n}", staging_prefix()))
    }
}

/// Staging directories of this process are named `.staging-PID-N`.
fn staging_prefix() -> String {
    format!(".staging-{}-", std::process::id())
}

/// Accounts the replicas a previous node left: running ones as running, queued ones in their
/// submission order. A stop the previous node did not finish is finished with SIGKILL; a start
/// it did not finish is settled replica by replica ([`ReplicaDir::resolve_interrupted_start`]).
fn adopt(center: &str, replicas: &Path, pool: &mut Pool<ReplicaKey>) -> std::io::Result<()> {
    let mut queued = Vec::new();
    for entry in std::fs::read_dir(replicas)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(".staging-") && !name.starts_with(&staging_prefix()) {
            // A submission interrupted by a crash.
            let _ = std::fs::remove_dir_all(entry.path());
            continue;
        }
        let Some(key) = ReplicaKey::parse(name) else { continue };
        let dir = ReplicaDir::new(replicas, &key);
        if dir.has_exit_code() {
            continue;
        }
        if dir.start_cut_short() {
            match dir.resolve_interrupted_start() {
                Ok(outcome) => {
                    tracing::info!(center, replica = %key, ?outcome, "settled a start the node's crash cut short")
                }
                Err(e) => {
                    // Unsettled, it would look queued for ever: it becomes a center fault.
                    tracing::warn!(center, replica = %key, error = %e, "cannot settle an interrupted start");
                    dir.record_start_error(&e);
                }
            }
        }
        match dir.process() {
            Some(process) if dir.is_stopped() && process.group_alive() => {
                tracing::info!(center, replica = %key, pid = process.pid, "finishing an interrupted stop");
                process.kill();
            }
            Some(process) if process.is_alive() => {
                let demand = dir.launch().map(|l| l.demand).unwrap_or_else(|e| {
                    tracing::warn!(center, replica = %key, error = %e, "running replica has no readable launch.json");
                    Default::default()
                });
                tracing::info!(center, replica = %key, pid = process.pid, "re-adopted a running replica");
                pool.insert_running(key.clone(), key, demand);
            }
            Some(_) => {}
            None if dir.is_stopped() || dir.was_started() => {}
            None => match dir.submission() {
                Ok((submitted_ns, launch)) => queued.push((submitted_ns, key, launch.demand)),
                Err(e) => {
                    tracing::warn!(center, replica = %key, error = %e, "queued replica has no readable launch.json")
                }
            },
        }
    }
    queued.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    for (_, key, demand) in queued {
        pool.enqueue(key.clone(), key, demand);
    }
    Ok(())
}

#[async_trait]
impl Adapter for LocalCenter {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { live_logs: true, storage: true, images: true, survives_node_restart: true }
    }

    async fn resources(&self) -> Result<ResourceReport> {
        let mut pool = self.lock();
        self.advance(&mut pool);
        let mut report = pool.report();
        // The local center is one machine: one node, holding all that is free.
        let m = &report.metrics;
        report.metrics.node_free = NodeFree::group([[m.cpu_free, m.gpu_free, m.npu_free, m.mlu_free, m.memory_free]]);
        Ok(report)
    }

    async fn images(&self) -> Result<Vec<NativeImage>> {
        Ok(self.images.native())
    }

    async fn submit(&self, launch: &ReplicaLaunch) -> Result<NativeId> {
        let key = &launch.key;
        let id = NativeId(key.to_string());
        if ReplicaKey::parse(&id.0).as_ref() != Some(key) {
            return Err(AdapterError::Rejected(format!("replica key '{id}' is not a valid file name")));
        }
        let mut pool = self.lock();
        self.advance(&mut pool);
        let dir = self.dir(key);
        if dir.exists() {
            tracing::debug!(center = %self.id, replica = %key, "already submitted");
            return Ok(id);
        }
        self.images.check(&launch.image)?;
        pool.check_admissible(&launch.demand)?;
        let created = dir
            .create(launch, &self.staging_dir())
            .map_err(|e| AdapterError::Unavailable(format!("cannot record replica {id}: {e}")))?;
        if created {
            pool.enqueue(key.clone(), key.clone(), launch.demand.clone());
            self.advance(&mut pool);
            tracing::info!(center = %self.id, replica = %key, queued = pool.is_queued(key), "replica submitted");
        }
        Ok(id)
    }

    async fn find(&self, key: &ReplicaKey) -> Result<Option<NativeId>> {
        let id = NativeId(key.to_string());
        Ok(self.dir_of(&id).filter(ReplicaDir::exists).map(|_| id))
    }

    async fn status(&self, ids: &[NativeId]) -> Result<Vec<NativeState>> {
        let mut pool = self.lock();
        self.advance(&mut pool);
        Ok(ids.iter().map(|id| self.dir_of(id).map_or(NativeState::Missing, |dir| dir.state())).collect())
    }

    async fn stop(&self, id: &NativeId, grace: Duration) -> Result<()> {
        let Some(key) = ReplicaKey::parse(&id.0) else { return Ok(()) };
        let dir = self.dir(&key);
        let process = {
            let mut pool = self.lock();
            if !dir.exists() || dir.has_exit_code() {
                return Ok(());
            }
            let running = match dir.process() {
                // Stragglers of a group whose wrapper died still need stopping.
                Some(process) if process.group_alive() => Some(process),
                // Ended without an exit status, or its start failed: nothing runs.
                Some(_) => return Ok(()),
                None if dir.was_started() => return Ok(()),
                None => None,
            };
            dir.mark_stopped()
                .map_err(|e| AdapterError::Unavailable(format!("cannot record the stop of {id}: {e}")))?;
            // A running replica keeps its capacity until its processes are gone (`advance`).
            if running.is_none() && pool.release(&key) {
                tracing::info!(center = %self.id, replica = %key, "queued replica stopped");
            }
            running
        };
        if let Some(process) = process {
            let grace = grace.min(self.max_grace);
            tracing::info!(center = %self.id, replica = %key, pid = process.pid, ?grace, "stopping replica");
            process.terminate(grace).await.map_err(AdapterError::Unavailable)?;
            tracing::info!(center = %self.id, replica = %key, "replica stopped");
            self.advance(&mut self.lock());
        }
        Ok(())
    }

    async fn read_log(&self, id: &NativeId, offset: u64, max: usize) -> Result<LogChunk> {
        let not_found = || AdapterError::NotFound(id.to_string());
        let dir = self.dir_of(id).ok_or_else(not_found)?;
        // Whether it has ended is decided before reading, so the read sees the final log.
        let ended = {
            let _pool = self.lock();
            if !dir.exists() {
                return Err(not_found());
            }
            dir.has_ended()
        };
        logfile::read_chunk(&dir.log(), offset, max, ended).await
    }

    fn storage(&self) -> Option<&dyn Storage> {
        Some(&self.storage)
    }

    fn events(&self) -> Option<tokio::sync::broadcast::Receiver<NativeId>> {
        Some(self.exits.subscribe())
    }
}

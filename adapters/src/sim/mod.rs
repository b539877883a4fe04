//! The simulated center: a remote platform that runs nothing, for tests, demos and benchmarks
//! (hundreds are registered at once, so one costs a mutex and a few maps — no task per
//! replica, time evaluated lazily, see `state`).
//!
//! It reads a replica's command with a tiny language (`script`: `sleep N`, `exit N`, `echo`)
//! so that the commands used against local centers behave alike here; all durations are
//! divided by `time_scale`, and a stop takes effect at once (no grace). It can misbehave on
//! purpose: every call takes `latency_ms`; a share of calls fail with `Unavailable`
//! (deterministic for a seed, and for `submit`/`stop` half of them after the request took
//! effect, as when an answer is lost); a share of replicas fail with exit code 1; and while the
//! file `OUTAGE` exists in its work dir, every call fails as if the center were unreachable.
//! Its state survives a node restart: every change (a submit, a stop, a start from the queue)
//! is saved before the call returns, as one line appended to a journal that is compacted into
//! a snapshot now and then, so that saving costs the change and not the whole history (see
//! `journal`). Its storage is in memory, does not survive, and ignores latency and faults.

mod chance;
mod journal;
mod script;
mod state;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use jcs_api::model::ReplicaKey;
use serde::Deserialize;

use self::chance::Rng;
use self::journal::Journal;
use self::script::Script;
use self::state::{Plan, SimState};
use crate::config::{self, Images};
use crate::pool::Pool;
use crate::storage::MemStorage;
use crate::{
    Adapter, AdapterContext, AdapterError, Capabilities, LogChunk, NativeId, NativeImage, NativeState, ReplicaLaunch,
    ResourceReport, Result, Storage,
};

/// `adapter.config` of a `sim` center.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Declared capacity as quantities per device kind; a kind it does not name has none.
    /// Default `{"cpu":"64","memory":"256Gi","gpu":"8"}`.
    #[serde(default = "default_capacity")]
    pub capacity: BTreeMap<String, String>,
    /// Delay of every call, in ms. Default 2.
    #[serde(default = "default_latency_ms")]
    pub latency_ms: u64,
    /// Percentage (0..=100) of calls that fail with `Unavailable`; for `submit` and `stop`, half
    /// of those fail after the request took effect. Default 0.
    #[serde(default)]
    pub transient_error_pct: u32,
    /// Percentage (0..=100) of replicas that fail with exit code 1 at the end of their run
    /// (unless their command has an `exit`), chosen by a hash of the replica key and the seed.
    /// Default 0.
    #[serde(default)]
    pub failure_pct: u32,
    /// Seed of the transient errors and of the failure choice. Default 1.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Runtime of a replica whose command has no `sleep`/`exit` and whose launch has no
    /// duration hint, in seconds. Default 30.
    #[serde(default = "default_duration_secs")]
    pub default_duration_secs: f64,
    /// Speed-up of simulated time: a run lasts its duration divided by this. Default 1.0.
    #[serde(default = "default_time_scale")]
    pub time_scale: f64,
    /// Names of the images the center has; a launch naming another is rejected. Absent: any
    /// image (the catalog says what it holds).
    #[serde(default)]
    pub images: Option<Vec<String>>,
    /// Where the simulated platform keeps its state (its journal). Default: a directory under
    /// the owner node's data dir. Nodes that share a directory (nodes on one machine) share
    /// one platform, as a real remote platform would be: a center that moves to another owner
    /// keeps its queue and its running replicas.
    #[serde(default)]
    pub work_dir: Option<PathBuf>,
}

fn default_capacity() -> BTreeMap<String, String> {
    config::quantities(&[("cpu", "64"), ("memory", "256Gi"), ("gpu", "8")])
}

fn default_latency_ms() -> u64 {
    2
}

fn default_seed() -> u64 {
    1
}

fn default_duration_secs() -> f64 {
    30.0
}

fn default_time_scale() -> f64 {
    1.0
}

impl SimConfig {
    fn validate(&self, center: &str) -> Result<()> {
        let bad = |what: String| Err(AdapterError::Config(format!("center '{center}': sim adapter config: {what}")));
        for (field, pct) in [("transient_error_pct", self.transient_error_pct), ("failure_pct", self.failure_pct)] {
            if pct > 100 {
                return bad(format!("{field} is {pct}, must be between 0 and 100"));
            }
        }
        if !(self.time_scale.is_finite() && self.time_scale > 0.0) {
            return bad(format!("time_scale is {}, must be a positive number", self.time_scale));
        }
        if !(self.default_duration_secs.is_finite() && self.default_duration_secs >= 0.0) {
            return bad(format!("default_duration_secs is {}, must be 0 or more", self.default_duration_secs));
        }
        Ok(())
    }
}

/// A simulated center.
pub struct SimCenter {
    id: String,
    config: SimConfig,
    images: Images,
    /// While this file exists, the center is unreachable.
    outage: PathBuf,
    inner: Mutex<Inner>,
    storage: MemStorage,
}

struct Inner {
    state: SimState,
    rng: Rng,
    journal: Journal,
}

impl Inner {
    /// Replays time up to now, saving the replicas that started from the queue.
    fn advance(&mut self) -> Result<()> {
        self.state.advance(now_us());
        self.save()
    }

    /// Saves what changed since the last save.
    fn save(&mut self) -> Result<()> {
        self.journal.save(&mut self.state).map_err(|e| AdapterError::Unavailable(e.to_string()))
    }
}

/// What the simulated platform does with one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Serve,
    Fail,
    /// Do it, then fail as if the answer were lost.
    LoseAnswer,
}

impl Fate {
    /// For calls that change nothing, a lost answer is just a failure.
    fn serve(self) -> Result<()> {
        if self == Fate::Serve {
            Ok(())
        } else {
            Err(transient())
        }
    }
}

fn transient() -> AdapterError {
    AdapterError::Unavailable("simulated transient error".to_string())
}

fn native_id(seq: u64) -> NativeId {
    NativeId(format!("sim-{seq}"))
}

fn parse_native_id(id: &NativeId) -> Option<u64> {
    id.0.strip_prefix("sim-")?.parse().ok()
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

impl SimCenter {
    /// Reads the config and the state a previous instance saved in `ctx.work_dir`.
    pub fn new(center_id: &str, config: &serde_json::Value, ctx: &AdapterContext) -> Result<Self> {
        let config: SimConfig = config::parse("sim", center_id, config)?;
        config.validate(center_id)?;
        let pool = Pool::new(center_id, config::capacity(center_id, &config.capacity)?);
        let unusable = |what: String| AdapterError::Config(format!("center '{center_id}': {what}"));
        let platform_dir = config.work_dir.clone().unwrap_or_else(|| ctx.work_dir.clone());
        // Each cluster keeps its own journal in a shared work dir: what another cluster
        // submitted under the same keys is never taken for its own.
        let work_dir = ctx.scoped(&platform_dir);
        std::fs::create_dir_all(&work_dir).map_err(|e| unusable(format!("work dir {}: {e}", work_dir.display())))?;
        let (journal, state) = Journal::open(&work_dir, pool).map_err(|e| unusable(e.to_string()))?;
        Ok(SimCenter {
            id: center_id.to_string(),
            images: Images::new(config.images.clone()),
            // An outage is the platform's, whichever cluster drives it.
            outage: platform_dir.join("OUTAGE"),
            inner: Mutex::new(Inner { state, rng: Rng::new(config.seed), journal }),
            storage: MemStorage::default(),
            config,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every call's way in: latency, the outage failpoint, then the transient-error draw.
    async fn enter(&self) -> Result<Fate> {
        if self.config.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.config.latency_ms)).await;
        }
        if self.outage.exists() {
            return Err(AdapterError::Unavailable("simulated outage".to_string()));
        }
        if self.config.transient_error_pct == 0 {
            return Ok(Fate::Serve);
        }
        let draw = self.lock().rng.next_u64();
        Ok(match draw % 100 < u64::from(self.config.transient_error_pct) {
            false => Fate::Serve,
            true if draw >> 63 == 1 => Fate::LoseAnswer,
            true => Fate::Fail,
        })
    }

    /// What a launch will do.
    fn plan(&self, launch: &ReplicaLaunch) -> Plan {
        let script = Script::parse(&launch.command, &launch.env);
        let secs = script
            .runtime_secs
            .or(launch.duration_hint.map(|d| d.as_secs_f64()))
            .unwrap_or(self.config.default_duration_secs);
        let unlucky =
            chance::percentile(&launch.key.to_string(), self.config.seed) < u64::from(self.config.failure_pct);
        Plan {
            // Float-to-int `as` saturates: absurd durations become "forever".
            runtime_us: (secs / self.config.time_scale * 1e6).round() as u64,
            exit_code: script.exit_code.unwrap_or(if unlucky { 1 } else { 0 }),
            output: script.output,
        }
    }
}

#[async_trait]
impl Adapter for SimCenter {
    fn kind(&self) -> &'static str {
        "sim"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { live_logs: true, storage: true, images: true, survives_node_restart: true }
    }

    async fn resources(&self) -> Result<ResourceReport> {
        self.enter().await?.serve()?;
        let mut inner = self.lock();
        inner.advance()?;
        Ok(inner.state.report())
    }

    async fn images(&self) -> Result<Vec<NativeImage>> {
        self.enter().await?.serve()?;
        Ok(self.images.native())
    }

    async fn submit(&self, launch: &ReplicaLaunch) -> Result<NativeId> {
        let fate = self.enter().await?;
        if fate == Fate::Fail {
            return Err(transient());
        }
        let mut inner = self.lock();
        inner.advance()?;
        let seq = match inner.state.find(&launch.key) {
            Some(seq) => seq,
            None => {
                self.images.check(&launch.image)?;
                inner.state.check_admissible(&launch.demand)?;
                let now = inner.state.now();
                let seq = inner.state.submit(launch.key.clone(), launch.demand.clone(), self.plan(launch), now);
                inner.save()?;
                tracing::info!(center = %self.id, replica = %launch.key, id = %native_id(seq), "replica submitted");
                seq
            }
        };
        if fate == Fate::LoseAnswer {
            return Err(transient());
        }
        Ok(native_id(seq))
    }

    async fn find(&self, key: &ReplicaKey) -> Result<Option<NativeId>> {
        self.enter().await?.serve()?;
        Ok(self.lock().state.find(key).map(native_id))
    }

    async fn status(&self, ids: &[NativeId]) -> Result<Vec<NativeState>> {
        self.enter().await?.serve()?;
        let mut inner = self.lock();
        inner.advance()?;
        let (state, now) = (&inner.state, inner.state.now());
        Ok(ids
            .iter()
            .map(|id| parse_native_id(id).and_then(|seq| state.get(seq)).map_or(NativeState::Missing, |r| r.state(now)))
            .collect())
    }

    async fn stop(&self, id: &NativeId, _grace: Duration) -> Result<()> {
        let fate = self.enter().await?;
        if fate == Fate::Fail {
            return Err(transient());
        }
        if let Some(seq) = parse_native_id(id) {
            let mut inner = self.lock();
            let stopped = inner.state.stop(seq, now_us());
            inner.save()?;
            if stopped {
                tracing::info!(center = %self.id, %id, "replica stopped");
            }
        }
        if fate == Fate::LoseAnswer {
            return Err(transient());
        }
        Ok(())
    }

    async fn read_log(&self, id: &NativeId, offset: u64, max: usize) -> Result<LogChunk> {
        self.enter().await?.serve()?;
        let mut inner = self.lock();
        inner.advance()?;
        let now = inner.state.now();
        let replica = parse_native_id(id)
            .and_then(|seq| inner.state.get(seq))
            .ok_or_else(|| AdapterError::NotFound(id.to_string()))?;
        let log = replica.log(&self.id, now).into_bytes();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(log.len());
        let end = start.saturating_add(max).min(log.len());
        let next_offset = offset + (end - start) as u64;
        Ok(LogChunk {
            data: log[start..end].to_vec(),
            next_offset,
            complete: replica.has_ended(now) && next_offset >= log.len() as u64,
        })
    }

    fn storage(&self) -> Option<&dyn Storage> {
        Some(&self.storage)
    }
}

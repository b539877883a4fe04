//! Node configuration: built-in defaults, overridden by a TOML file (`--config`), overridden by
//! `JCS_*` environment variables and command-line flags (clap reads both). Every field is
//! documented here and in `examples/config.toml`, which a test parses.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use jcs_raft::schedule::{Link, RegionLinks};
use serde::Deserialize;

/// The longest timeout or wait a node takes (a day, in ms).
const MAX_DURATION_MS: u64 = 86_400_000;
/// The most connections a node can be told to serve at once.
const MAX_CONNECTIONS: usize = 1 << 20;

/// Everything a node needs to run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's Raft id, unique in the cluster.
    pub node_id: u64,
    /// Where the node keeps its RocksDB files (log and state) and snapshots.
    pub data_dir: PathBuf,
    /// REST API listen address.
    pub http: SocketAddr,
    /// Peer (Raft gRPC) address other members reach this node on.
    pub raft: SocketAddr,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// REST connections served at once; past the cap a connection is answered 503 and closed.
    pub max_connections: usize,
    /// A request head, or an idle keep-alive connection's next one, must arrive within this (ms).
    pub header_read_timeout_ms: u64,
    /// A request body must arrive within this after its head, or the request is answered 408;
    /// and a client that takes none of an answer's bytes for this long is cut off (ms).
    pub body_read_timeout_ms: u64,
    /// How long a write waits for its commit before answering TIMEOUT (ms).
    pub write_timeout_ms: u64,
    /// Most commands the proposer packs into one Raft entry (group commit).
    pub max_batch: usize,
    /// Raft entries the proposer keeps in flight at once.
    pub max_inflight_batches: usize,
    /// Raft heartbeat interval (ms). LAN default; across regions keep it well above the RTT.
    pub heartbeat_interval_ms: u64,
    /// Raft election timeout range (ms): at least 10× the peer RTT and the log-append latency.
    /// A follower that stops hearing from its leader starts an election after the leader's
    /// lease (`election_timeout_max_ms`) plus a random timeout in this range, so the defaults
    /// elect a new leader 0.6–0.8 s after the old one died (on a LAN).
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot (and allow log purging) after this many applied entries.
    pub snapshot_after_logs: u64,
    /// Entries kept in the log behind a snapshot, so lagging followers catch up without one.
    pub logs_kept_after_snapshot: u64,
    /// First start of a new cluster: the founding members as `ID=PEER_ADDR,…`, the same on
    /// each. Empty: a one-member cluster (unless `join`). Ignored once the data dir holds one.
    pub initial_members: String,
    /// First start of a node joining a running cluster: any member's peer address; or
    /// [`JOIN_WAIT`] (`wait`): found nothing, ask nothing, wait to be added (`jcs cluster add`).
    pub join: Option<String>,
    /// A member silent towards the leader this long loses its centers (ms).
    pub owner_timeout_ms: u64,
    /// Serve `POST /admin/fault` (cut this node off from its peers), for chaos tests.
    pub fault_injection: bool,
    /// Period of the leader's scheduling cycle (ms); a cycle also runs whenever jobs arrive.
    pub schedule_interval_ms: u64,
    /// Most queued jobs one cycle decides (they commit as one Raft entry).
    pub schedule_batch: usize,
    /// How long A.1 waits for the placement before answering with the job still pending (ms).
    pub placement_wait_ms: u64,
    /// Most replicas one job may have over all its tasks: a job's size bounds the work and
    /// the state one request can create (its A.3 answer grows with it).
    pub max_job_replicas: u32,
    /// Most bytes of items one listing page holds (at least one item always); a page cut
    /// short says where the next starts (`nextOffset`).
    pub max_page_bytes: usize,
    /// Place replicas on centers that name no adapter, where nothing dispatches them (they wait
    /// in `dispatching`): only for benchmarks that measure placement alone. Off (the default),
    /// the scheduler rejects such centers with `NO_ADAPTER`. The leader's setting decides: set
    /// it on every node.
    pub place_without_adapter: bool,
    /// A center whose last monitoring report is older than this is not scheduled on (s; 0: never
    /// stale).
    pub monitoring_stale_after_secs: u64,
    /// Placed-but-unconfirmed capacity is held this long at most, then returned (s).
    pub ledger_ttl_secs: u64,
    /// Under policy `data`, data larger than this (MB) is not moved: the job goes to the data.
    pub data_move_limit_mb: i64,
    /// Policy mode of jobs that name none: balanced, fcfs, load, energy, price, network, data
    /// or qos.
    pub default_policy: String,
    /// Links between regions (`[[region_links]]` tables: `from`, `to`, `bandwidth_mbps`,
    /// `latency_ms`, `jitter_ms`, `loss_pct`), by which policies `network` and `qos` judge the
    /// path from a job's `userRegion` to a center. A link serves both directions unless the
    /// reverse is given too. From the file only (no flag or variable); empty with `demo`: the
    /// demo catalog's links.
    pub region_links: Vec<Link>,
    /// How often each owned center is polled for monitoring and replica status (ms).
    pub poll_interval_ms: u64,
    /// Consecutive failed polls after which a center is marked unavailable and its replicas
    /// are rescheduled elsewhere.
    pub failed_polls_before_unavailable: u32,
    /// Replica submissions (and stops) in flight at once per center.
    pub dispatch_concurrency: usize,
    /// A stopped replica gets SIGTERM (or its platform's polite stop), then is killed after this
    /// long (ms).
    pub stop_grace_ms: u64,
    /// On the first start of a cluster, load the demo catalog (four centers in two regions).
    pub demo: bool,
    /// With `demo`: the environment file of a Slurm cluster started by
    /// `deploy/slurm/jcs-slurm start` (it writes `/tmp/jcs-slurm/env`); the demo's Hangzhou HPC
    /// center B is then that real Slurm cluster instead of a simulated one.
    pub demo_slurm: Option<PathBuf>,
    /// With `demo`: a directory shared by nodes on one machine (`jcs up` sets it) under which
    /// the demo's `local` and `sim` centers keep their state, one subdirectory each: whichever
    /// node owns a center then finds the replicas another started. Default: under the owner's
    /// data dir.
    pub demo_shared_dir: Option<PathBuf>,
    /// Log filter in `tracing_subscriber::EnvFilter` syntax (`RUST_LOG` overrides it).
    pub log: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 1,
            data_dir: PathBuf::from("jcs-data"),
            http: "127.0.0.1:8080".parse().expect("valid default"),
            raft: "127.0.0.1:9080".parse().expect("valid default"),
            max_body_bytes: 1024 * 1024,
            max_connections: 4_096,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            write_timeout_ms: 5_000,
            max_batch: 1024,
            max_inflight_batches: 2,
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 200,
            election_timeout_max_ms: 400,
            snapshot_after_logs: 20_000,
            logs_kept_after_snapshot: 5_000,
            initial_members: String::new(),
            join: None,
            owner_timeout_ms: 3_000,
            fault_injection: false,
            schedule_interval_ms: 1_000,
            schedule_batch: 10_000,
            placement_wait_ms: 1_000,
            max_job_replicas: 1_024,
            max_page_bytes: 4 * 1024 * 1024,
            place_without_adapter: false,
            monitoring_stale_after_secs: 300,
            ledger_ttl_secs: 300,
            data_move_limit_mb: 10_240,
            default_policy: "balanced".into(),
            region_links: Vec::new(),
            poll_interval_ms: 1_000,
            failed_polls_before_unavailable: 3,
            dispatch_concurrency: 16,
            stop_grace_ms: 5_000,
            demo: false,
            demo_slurm: None,
            demo_shared_dir: None,
            log: "info,openraft=warn".into(),
        }
    }
}

/// `jcs serve` flags; each also reads its `JCS_*` variable. Unset flags keep the file's value.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "JCS_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long, env = "JCS_NODE_ID")]
    pub node_id: Option<u64>,
    #[arg(long, env = "JCS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[arg(long, env = "JCS_HTTP")]
    pub http: Option<SocketAddr>,
    #[arg(long, env = "JCS_RAFT")]
    pub raft: Option<SocketAddr>,
    #[arg(long, env = "JCS_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    #[arg(long, env = "JCS_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    #[arg(long, env = "JCS_HEADER_READ_TIMEOUT_MS")]
    pub header_read_timeout_ms: Option<u64>,
    #[arg(long, env = "JCS_BODY_READ_TIMEOUT_MS")]
    pub body_read_timeout_ms: Option<u64>,
    #[arg(long, env = "JCS_WRITE_TIMEOUT_MS")]
    pub write_timeout_ms: Option<u64>,
    #[arg(long, env = "JCS_MAX_BATCH")]
    pub max_batch: Option<usize>,
    #[arg(long, env = "JCS_MAX_INFLIGHT_BATCHES")]
    pub max_inflight_batches: Option<usize>,
    #[arg(long, env = "JCS_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u64>,
    #[arg(long, env = "JCS_ELECTION_TIMEOUT_MIN_MS")]
    pub election_timeout_min_ms: Option<u64>,
    #[arg(long, env = "JCS_ELECTION_TIMEOUT_MAX_MS")]
    pub election_timeout_max_ms: Option<u64>,
    #[arg(long, env = "JCS_SNAPSHOT_AFTER_LOGS")]
    pub snapshot_after_logs: Option<u64>,
    #[arg(long, env = "JCS_LOGS_KEPT_AFTER_SNAPSHOT")]
    pub logs_kept_after_snapshot: Option<u64>,
    /// New cluster: its founding members, `ID=PEER_ADDR,…` (the same on each).
    #[arg(long, env = "JCS_INITIAL_MEMBERS")]
    pub initial_members: Option<String>,
    /// New node: join the cluster one of whose members listens at this peer address (`wait`:
    /// wait to be added with `jcs cluster add`).
    #[arg(long, env = "JCS_JOIN")]
    pub join: Option<String>,
    #[arg(long, env = "JCS_OWNER_TIMEOUT_MS")]
    pub owner_timeout_ms: Option<u64>,
    /// Serve the fault-injection endpoint (chaos tests only).
    #[arg(long, env = "JCS_FAULT_INJECTION")]
    pub fault_injection: bool,
    #[arg(long, env = "JCS_SCHEDULE_INTERVAL_MS")]
    pub schedule_interval_ms: Option<u64>,
    #[arg(long, env = "JCS_SCHEDULE_BATCH")]
    pub schedule_batch: Option<usize>,
    #[arg(long, env = "JCS_PLACEMENT_WAIT_MS")]
    pub placement_wait_ms: Option<u64>,
    #[arg(long, env = "JCS_MAX_JOB_REPLICAS")]
    pub max_job_replicas: Option<u32>,
    #[arg(long, env = "JCS_MAX_PAGE_BYTES")]
    pub max_page_bytes: Option<usize>,
    /// Place on centers without an adapter (placement benchmarks only).
    #[arg(long, env = "JCS_PLACE_WITHOUT_ADAPTER")]
    pub place_without_adapter: bool,
    #[arg(long, env = "JCS_MONITORING_STALE_AFTER_SECS")]
    pub monitoring_stale_after_secs: Option<u64>,
    #[arg(long, env = "JCS_LEDGER_TTL_SECS")]
    pub ledger_ttl_secs: Option<u64>,
    #[arg(long, env = "JCS_DATA_MOVE_LIMIT_MB")]
    pub data_move_limit_mb: Option<i64>,
    #[arg(long, env = "JCS_DEFAULT_POLICY")]
    pub default_policy: Option<String>,
    #[arg(long, env = "JCS_POLL_INTERVAL_MS")]
    pub poll_interval_ms: Option<u64>,
    #[arg(long, env = "JCS_FAILED_POLLS_BEFORE_UNAVAILABLE")]
    pub failed_polls_before_unavailable: Option<u32>,
    #[arg(long, env = "JCS_DISPATCH_CONCURRENCY")]
    pub dispatch_concurrency: Option<usize>,
    #[arg(long, env = "JCS_STOP_GRACE_MS")]
    pub stop_grace_ms: Option<u64>,
    /// Load the demo catalog on the first start.
    #[arg(long, env = "JCS_DEMO")]
    pub demo: bool,
    /// With --demo: make Hangzhou HPC center B the Slurm cluster that `deploy/slurm/jcs-slurm
    /// start` described in ENV_FILE.
    #[arg(long, env = "JCS_DEMO_SLURM", value_name = "ENV_FILE", num_args = 0..=1, default_missing_value = "/tmp/jcs-slurm/env")]
    pub demo_slurm: Option<PathBuf>,
    /// With --demo: where the demo's local and simulated centers keep their state, shared by
    /// nodes on one machine.
    #[arg(long, env = "JCS_DEMO_SHARED_DIR")]
    pub demo_shared_dir: Option<PathBuf>,
    #[arg(long, env = "JCS_LOG")]
    pub log: Option<String>,
}

/// `join = "wait"`: a new node that waits to be added rather than asking to join.
pub const JOIN_WAIT: &str = "wait";

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Parses a TOML document.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.into(), source: Box::new(e) })
    }

    /// Defaults ← file ← environment and flags.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let mut config = match &args.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
                Config::from_toml(&text, path)?
            }
            None => Config::default(),
        };
        macro_rules! overlay { ($($field:ident),*) => { $( if let Some(v) = &args.$field { config.$field = v.clone(); } )* } }
        overlay!(
            node_id,
            data_dir,
            http,
            raft,
            max_body_bytes,
            max_connections,
            header_read_timeout_ms,
            body_read_timeout_ms,
            write_timeout_ms,
            max_batch,
            max_inflight_batches,
            heartbeat_interval_ms,
            election_timeout_min_ms,
            election_timeout_max_ms,
            snapshot_after_logs,
            logs_kept_after_snapshot,
            initial_members,
            owner_timeout_ms,
            schedule_interval_ms,
            schedule_batch,
            placement_wait_ms,
            max_job_replicas,
            max_page_bytes,
            monitoring_stale_after_secs,
            ledger_ttl_secs,
            data_move_limit_mb,
            default_policy,
            poll_interval_ms,
            failed_polls_before_unavailable,
            dispatch_concurrency,
            stop_grace_ms,
            log
        );
        if let Some(seed) = &args.join {
            config.join = Some(seed.clone());
        }
        config.fault_injection |= args.fault_injection;
        config.place_without_adapter |= args.place_without_adapter;
        if let Some(path) = &args.demo_slurm {
            config.demo_slurm = Some(path.clone());
        }
        if let Some(path) = &args.demo_shared_dir {
            config.demo_shared_dir = Some(path.clone());
        }
        config.demo |= args.demo;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let fail = |m: &str| Err(ConfigError::Invalid(m.into()));
        if self.node_id == 0 {
            return fail("node_id must be at least 1");
        }
        if self.max_batch == 0 || self.max_inflight_batches == 0 {
            return fail("max_batch and max_inflight_batches must be at least 1");
        }
        if self.max_connections == 0 || self.header_read_timeout_ms == 0 || self.body_read_timeout_ms == 0 {
            return fail("max_connections, header_read_timeout_ms and body_read_timeout_ms must be at least 1");
        }
        // Bounds that keep deadlines (now + a duration) and permit counts from overflowing.
        let durations = [
            self.header_read_timeout_ms,
            self.body_read_timeout_ms,
            self.write_timeout_ms,
            self.placement_wait_ms,
            self.stop_grace_ms,
        ];
        if durations.iter().any(|&ms| ms > MAX_DURATION_MS) || self.max_connections > MAX_CONNECTIONS {
            return Err(ConfigError::Invalid(format!(
                "header_read_timeout_ms, body_read_timeout_ms, write_timeout_ms, placement_wait_ms and \
                 stop_grace_ms must be at most {MAX_DURATION_MS} (a day), max_connections at most {MAX_CONNECTIONS}"
            )));
        }
        if self.election_timeout_min_ms <= self.heartbeat_interval_ms
            || self.election_timeout_max_ms <= self.election_timeout_min_ms
        {
            return fail("need heartbeat_interval_ms < election_timeout_min_ms < election_timeout_max_ms");
        }
        if self.max_job_replicas == 0 || self.max_page_bytes == 0 {
            return fail("max_job_replicas and max_page_bytes must be at least 1");
        }
        if self.schedule_interval_ms == 0 || self.schedule_batch == 0 || self.ledger_ttl_secs == 0 {
            return fail("schedule_interval_ms, schedule_batch and ledger_ttl_secs must be at least 1");
        }
        if self.poll_interval_ms == 0 || self.failed_polls_before_unavailable == 0 || self.dispatch_concurrency == 0 {
            return fail(
                "poll_interval_ms, failed_polls_before_unavailable and dispatch_concurrency must be at least 1",
            );
        }
        self.members()?;
        if !self.initial_members.is_empty() && self.join.is_some() {
            return fail("initial_members and join exclude each other: found a cluster or join one");
        }
        if self.owner_timeout_ms < 3 * self.election_timeout_max_ms {
            return fail("owner_timeout_ms must be at least 3 × election_timeout_max_ms");
        }
        if self.data_move_limit_mb < 0 {
            return fail("data_move_limit_mb must not be negative");
        }
        self.policy()?;
        self.links()?;
        Ok(())
    }

    /// The configured links between regions, checked and indexed.
    pub fn links(&self) -> Result<RegionLinks, ConfigError> {
        RegionLinks::new(&self.region_links).map_err(|e| ConfigError::Invalid(format!("region_links: {e}")))
    }

    /// The default policy mode.
    pub fn policy(&self) -> Result<jcs_api::model::PolicyMode, ConfigError> {
        jcs_api::model::PolicyMode::parse(&self.default_policy)
            .filter(|mode| *mode != jcs_api::model::PolicyMode::Manual && *mode != jcs_api::model::PolicyMode::Qos)
            .ok_or_else(|| {
                ConfigError::Invalid(format!("default_policy '{}' is not a default mode", self.default_policy))
            })
    }

    /// The founding members `initial_members` lists (empty when it lists none); this node
    /// must be one of them.
    pub fn members(&self) -> Result<std::collections::BTreeMap<u64, String>, ConfigError> {
        let mut members = std::collections::BTreeMap::new();
        for item in self.initial_members.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let bad = || ConfigError::Invalid(format!("initial_members: '{item}' is not ID=PEER_ADDR"));
            let (id, addr) = item.split_once('=').ok_or_else(bad)?;
            let id: u64 = id.trim().parse().map_err(|_| bad())?;
            let addr = addr.trim();
            if id == 0 || jcs_api::validate::host_port("initial_members", addr).is_err() {
                return Err(bad());
            }
            if members.insert(id, addr.to_string()).is_some() {
                return Err(ConfigError::Invalid(format!("initial_members: node {id} is listed twice")));
            }
        }
        if !members.is_empty() && !members.contains_key(&self.node_id) {
            return Err(ConfigError::Invalid(format!(
                "initial_members does not list this node (node_id {})",
                self.node_id
            )));
        }
        Ok(members)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    /// The openraft configuration these settings describe.
    pub fn raft_config(&self) -> Result<openraft::Config, ConfigError> {
        openraft::Config {
            cluster_name: "jcs".into(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_after_logs),
            max_in_snapshot_log_to_keep: self.logs_kept_after_snapshot,
            // Elections are decided by `cluster::election`, with a pre-vote round.
            enable_elect: false,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ConfigError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;

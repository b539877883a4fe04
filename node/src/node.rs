//! A running jcs node: opens the RocksDB store, starts Raft and its peer channel, bootstraps or
//! joins a cluster on a fresh data dir, starts the proposer, the scheduler (which acts only on
//! the leader), the center shards and workers, and the REST API, and shuts them down in order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use jcs_raft::schedule::RegionLinks;
use jcs_raft::{NodeInfo, Raft};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::centers::{self, Adapters};
use crate::cluster::{self, membership, Cluster};
use crate::config::Config;
use crate::http::{self, AppState, Shared};
use crate::peer::{Fault, Liveness, Network, Peers};
use crate::proposer::{Proposer, ProposerSettings};
use crate::scheduler::{Scheduler, Settings};
use crate::signals::{Kicks, OrderSignal};

/// The process-wide Prometheus recorder (installed once, shared by every node in the process).
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder().handle())
        })
        .clone()
}

/// A node whose services run in the background.
pub struct Node {
    pub raft: Raft,
    pub proposer: Proposer,
    pub scheduler: Scheduler,
    pub cluster: Cluster,
    /// The bound REST address (useful when configured with port 0).
    pub http_addr: SocketAddr,
    /// The bound peer (Raft gRPC) address.
    pub raft_addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
    peer_server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    stop: tokio::sync::watch::Sender<()>,
    /// Tasks that end when `stop` is sent.
    stoppable: Vec<tokio::task::JoinHandle<()>>,
    /// Tasks that run as long as the node (joining, publishing addresses, metrics): aborted.
    helpers: Vec<tokio::task::JoinHandle<()>>,
}

impl Node {
    /// Starts every service; returns once the REST API and the peer channel are listening.
    pub async fn start(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<Node> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
        let (log_store, state_machine, reader) = jcs_raft::store::open(&config.data_dir)
            .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
        let listener =
            TcpListener::bind(config.http).await.with_context(|| format!("cannot listen on {}", config.http))?;
        let http_addr = listener.local_addr()?;
        let peer_listener =
            TcpListener::bind(config.raft).await.with_context(|| format!("cannot listen on {}", config.raft))?;
        let raft_addr = peer_listener.local_addr()?;
        let me = NodeInfo { raft_addr: raft_addr.to_string(), http_addr: http_addr.to_string() };

        let fault = Fault::default();
        let liveness = Liveness::default();
        let peers = Peers::new(fault.clone());
        let network = Network { peers: peers.clone(), liveness: liveness.clone() };
        let raft_config = Arc::new(config.raft_config()?);
        let log = log_store.reader();
        let raft = Raft::new(config.node_id, raft_config, network, log_store, state_machine).await?;
        // Judged before the peer channel opens: a peer's first vote request would make the
        // data dir look initialised.
        let fresh = !raft.is_initialized().await?;
        let proposer = Proposer::start(
            raft.clone(),
            peers.clone(),
            ProposerSettings {
                max_batch: config.max_batch,
                max_inflight: config.max_inflight_batches,
                timeout: config.write_timeout(),
                leader_wait: Duration::from_millis(config.election_timeout_max_ms * 2),
            },
        );
        let timing = cluster::Timing {
            forward_timeout: config.write_timeout(),
            owner_timeout: Duration::from_millis(config.owner_timeout_ms),
            election: crate::cluster::election::ElectionTiming::of(&config),
        };
        let kicks = Kicks::default();
        let cluster = Cluster::new(raft.clone(), proposer.clone(), peers, liveness, timing, kicks.clone(), log);
        let (stop, stopped) = tokio::sync::watch::channel(());
        let peer_shutdown = {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.changed().await;
            }
        };
        let peer_server = tokio::spawn(crate::peer::server::serve(
            peer_listener,
            raft.clone(),
            cluster.clone(),
            fault.clone(),
            peer_shutdown,
        ));

        let members = config.members()?;
        let mut helpers = Vec::new();
        match (config.join.as_deref(), fresh) {
            // Neither found nor join: an operator adds the node (`jcs cluster add`).
            (Some(crate::config::JOIN_WAIT), true) => tracing::info!("waiting to be added to a cluster"),
            (Some(seed), true) => {
                let (cluster, seed, me) = (cluster.clone(), seed.to_string(), me.clone());
                helpers.push(tokio::spawn(async move {
                    if let Err(e) = cluster.join(seed.clone(), me).await {
                        tracing::error!(%seed, error = %e, "could not join the cluster");
                    }
                }));
            }
            (None, true) => membership::bootstrap(&raft, config.node_id, &me, &members).await?,
            (_, false) => {}
        }
        helpers.push(tokio::spawn({
            let (cluster, me) = (cluster.clone(), me.clone());
            async move { cluster.publish_addresses(me).await }
        }));
        helpers.push(tokio::spawn(cluster.clone().run_elections()));
        let ready_index = raft.metrics().borrow().last_log_index.unwrap_or(0);
        helpers.push(tokio::spawn(export_raft_metrics(raft.clone())));

        // The demo catalog is loaded once, by the founding member with the lowest id.
        let founder = members.keys().next().is_none_or(|first| *first == config.node_id);
        if fresh && config.demo && config.join.is_none() && founder {
            raft.wait(Some(Duration::from_secs(30)))
                .metrics(|m| m.current_leader.is_some(), "a leader is elected")
                .await?;
            crate::demo::load(&proposer, config.demo_slurm.as_deref(), config.demo_shared_dir.as_deref()).await?;
        }

        let orders = OrderSignal::default();
        let (scheduler, scheduler_task) = Scheduler::start(
            raft.clone(),
            proposer.clone(),
            reader.clone(),
            scheduler_settings(&config)?,
            kicks,
            orders.clone(),
            stopped.clone(),
        );
        let mut stoppable = vec![scheduler_task];
        stoppable.push(tokio::spawn(cluster.clone().run_shards(reader.clone(), stopped.clone())));
        let adapters = Adapters::default();
        stoppable.push(centers::start(
            cluster.clone(),
            reader.clone(),
            scheduler.kicks.clone(),
            center_settings(&config),
            adapters.clone(),
            orders,
            stopped.clone(),
        ));
        let state = AppState::new(Shared {
            adapters,
            raft: raft.clone(),
            proposer: proposer.clone(),
            scheduler: scheduler.clone(),
            cluster: cluster.clone(),
            fault: config.fault_injection.then_some(fault),
            reader,
            prometheus: prometheus(),
            ready_index,
            placement_wait: Duration::from_millis(config.placement_wait_ms),
            limits: http::state::Limits {
                max_job_replicas: config.max_job_replicas,
                max_page_bytes: config.max_page_bytes,
            },
        });
        let app = http::router(state, config.max_body_bytes);
        let limits = http::ServeLimits {
            max_connections: config.max_connections,
            header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(config.body_read_timeout_ms),
            // As long as the longest request that ends (a write's commit, then A.1's wait for
            // its placement), and a second more.
            shutdown_grace: config.write_timeout() + Duration::from_millis(config.placement_wait_ms + 1_000),
        };
        let server = tokio::spawn(http::serve(listener, app, limits, shutdown));
        tracing::info!(node_id = config.node_id, %http_addr, %raft_addr, data_dir = %config.data_dir.display(), "jcs node serving");
        Ok(Node {
            raft,
            proposer,
            scheduler,
            cluster,
            http_addr,
            raft_addr,
            server,
            peer_server,
            stop,
            stoppable,
            helpers,
        })
    }

    /// Waits for the REST API to stop (after the shutdown signal), then stops the scheduler, the
    /// center workers, the peer channel and Raft.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.server.await?;
        let _ = self.stop.send(());
        for task in self.stoppable {
            task.await?;
        }
        for task in self.helpers {
            task.abort();
        }
        self.raft.shutdown().await.map_err(|e| anyhow::anyhow!("raft shutdown: {e}"))?;
        let _ = self.peer_server.await;
        tracing::info!("jcs node stopped");
        Ok(())
    }
}

fn center_settings(config: &Config) -> centers::Settings {
    let stale_after = Duration::from_secs(config.monitoring_stale_after_secs);
    let poll = Duration::from_millis(config.poll_interval_ms);
    centers::Settings {
        dir: config.data_dir.join("centers"),
        poll_interval: poll,
        failed_polls_before_unavailable: config.failed_polls_before_unavailable,
        dispatch_concurrency: config.dispatch_concurrency,
        stop_grace: Duration::from_millis(config.stop_grace_ms),
        // Often enough that an owner whose lease lapsed stops its workers well before the
        // leader gives its centers to another member.
        ownership_check: poll.min(Duration::from_millis(config.owner_timeout_ms / 6)),
        // Rewritten well before it would look stale (never more often than it is polled).
        metrics_refresh: if stale_after.is_zero() { Duration::from_secs(60) } else { (stale_after / 3).max(poll) },
    }
}

fn scheduler_settings(config: &Config) -> anyhow::Result<Settings> {
    let stale_after_secs = config.monitoring_stale_after_secs;
    Ok(Settings {
        interval: Duration::from_millis(config.schedule_interval_ms),
        batch: config.schedule_batch,
        stale_after_ms: (stale_after_secs as i64).saturating_mul(1000),
        ledger_ttl_ms: (config.ledger_ttl_secs as i64).saturating_mul(1000),
        data_move_limit_mb: config.data_move_limit_mb,
        default_policy: config.policy()?,
        region_links: Arc::new(region_links(config)?),
        place_without_adapter: config.place_without_adapter,
    })
}

/// The configured links between regions; with `demo` and none configured, the demo's.
fn region_links(config: &Config) -> anyhow::Result<RegionLinks> {
    if config.demo && config.region_links.is_empty() {
        return Ok(RegionLinks::new(&crate::demo::region_links()?)?);
    }
    Ok(config.links()?)
}

/// Mirrors Raft's own metrics into Prometheus gauges as they change.
async fn export_raft_metrics(raft: Raft) {
    let mut watch = raft.metrics();
    loop {
        {
            let m = watch.borrow_and_update();
            metrics::gauge!("jcs_raft_term").set(m.current_term as f64);
            metrics::gauge!("jcs_raft_last_log_index").set(m.last_log_index.unwrap_or(0) as f64);
            metrics::gauge!("jcs_raft_last_applied_index").set(m.last_applied.map_or(0, |l| l.index) as f64);
            metrics::gauge!("jcs_raft_is_leader").set(if m.current_leader == Some(m.id) { 1.0 } else { 0.0 });
        }
        if watch.changed().await.is_err() {
            return;
        }
    }
}

//! A running jcs node: opens the RocksDB store, starts Raft (initialising a one-member cluster
//! on a fresh data dir), the proposer, and the REST API, and shuts them down in order.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use jcs_raft::{NodeInfo, Raft};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::centers::{self, Adapters};
use crate::config::Config;
use crate::http::{self, AppState};
use crate::network::NoPeers;
use crate::proposer::Proposer;
use crate::scheduler::{Scheduler, Settings};

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
    /// The bound REST address (useful when configured with port 0).
    pub http_addr: SocketAddr,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    stop_scheduler: tokio::sync::watch::Sender<()>,
    scheduler_task: tokio::task::JoinHandle<()>,
    centers_task: tokio::task::JoinHandle<()>,
}

impl Node {
    /// Starts every service; returns once the REST API is listening.
    pub async fn start(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<Node> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
        let (log_store, state_machine, reader) = jcs_raft::store::open(&config.data_dir)
            .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
        let raft_config = Arc::new(config.raft_config()?);
        let raft = Raft::new(config.node_id, raft_config, NoPeers, log_store, state_machine).await?;

        let listener =
            TcpListener::bind(config.http).await.with_context(|| format!("cannot listen on {}", config.http))?;
        let http_addr = listener.local_addr()?;
        let fresh = !raft.is_initialized().await?;
        if fresh {
            let me = NodeInfo { raft_addr: config.raft.to_string(), http_addr: http_addr.to_string() };
            raft.initialize(BTreeMap::from([(config.node_id, me)])).await?;
            tracing::info!(node_id = config.node_id, "initialised a new one-member cluster");
        }
        let ready_index = raft.metrics().borrow().last_log_index.unwrap_or(0);
        let proposer =
            Proposer::start(raft.clone(), config.max_batch, config.max_inflight_batches, config.write_timeout());
        tokio::spawn(export_raft_metrics(raft.clone()));

        if fresh && config.demo {
            raft.wait(Some(Duration::from_secs(10))).current_leader(config.node_id, "leader after initialise").await?;
            crate::demo::load(&proposer, config.demo_slurm.as_deref()).await?;
        }

        let (stop_scheduler, stop) = tokio::sync::watch::channel(());
        let orders = centers::OrderSignal::default();
        let (scheduler, scheduler_task) = Scheduler::start(
            raft.clone(),
            proposer.clone(),
            reader.clone(),
            scheduler_settings(&config)?,
            orders.clone(),
            stop.clone(),
        );
        let adapters = Adapters::default();
        let centers_task = centers::start(
            raft.clone(),
            proposer.clone(),
            reader.clone(),
            scheduler.clone(),
            center_settings(&config),
            adapters.clone(),
            orders,
            stop.clone(),
        );
        let state = AppState {
            adapters,
            raft: raft.clone(),
            proposer: proposer.clone(),
            scheduler: scheduler.clone(),
            reader,
            prometheus: prometheus(),
            ready_index,
            placement_wait: Duration::from_millis(config.placement_wait_ms),
        };
        let app = http::router(state, config.max_body_bytes);
        let server = tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(shutdown).await });
        tracing::info!(node_id = config.node_id, %http_addr, data_dir = %config.data_dir.display(), "jcs node serving");
        Ok(Node { raft, proposer, scheduler, http_addr, server, stop_scheduler, scheduler_task, centers_task })
    }

    /// Waits for the REST API to stop (after the shutdown signal), then stops the scheduler, the
    /// center workers and Raft.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.server.await??;
        let _ = self.stop_scheduler.send(());
        self.scheduler_task.await?;
        self.centers_task.await?;
        self.raft.shutdown().await.map_err(|e| anyhow::anyhow!("raft shutdown: {e}"))?;
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
    })
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

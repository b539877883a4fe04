//! Group commit in front of Raft. Concurrent API writes queue here; a loop takes whatever has
//! queued (up to `max_batch`) and proposes it as ONE Raft entry, keeping up to
//! `max_inflight` entries in flight. Under load, one log append and one fsync carry hundreds of
//! submissions; idle, a lone write goes out at once.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jcs_raft::command::{Command, CommandResult, Proposal};
use jcs_raft::{NodeId, NodeInfo, Raft};
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Why a command got no result.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ProposeError {
    /// This node is not the leader (and forwarding arrives with the multi-node work).
    #[error("this node is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<(NodeId, NodeInfo)> },
    /// Not committed within the deadline: the outcome is unknown.
    #[error("the write was not committed within {0:?}")]
    Timeout(Duration),
    /// Raft stopped: a storage fault or shutdown.
    #[error("consensus unavailable: {0}")]
    Fatal(String),
}

struct Pending {
    command: Command,
    reply: oneshot::Sender<Result<CommandResult, ProposeError>>,
}

/// Handle to the proposer loop; cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::Sender<Pending>,
    timeout: Duration,
}

impl Proposer {
    /// Starts the loop on the current runtime.
    pub fn start(raft: Raft, max_batch: usize, max_inflight: usize, timeout: Duration) -> Proposer {
        let (queue, rx) = mpsc::channel(max_batch * max_inflight * 2);
        tokio::spawn(run(raft, rx, max_batch, max_inflight));
        Proposer { queue, timeout }
    }

    /// Commits `command` and returns its result once applied.
    pub async fn propose(&self, command: Command) -> Result<CommandResult, ProposeError> {
        let (reply, result) = oneshot::channel();
        let send = self.queue.send(Pending { command, reply });
        let outcome = tokio::time::timeout(self.timeout, async {
            send.await.map_err(|_| ProposeError::Fatal("proposer stopped".into()))?;
            result.await.map_err(|_| ProposeError::Fatal("proposer dropped the write".into()))?
        })
        .await;
        outcome.unwrap_or(Err(ProposeError::Timeout(self.timeout)))
    }
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Pending>, max_batch: usize, max_inflight: usize) {
    let inflight = Arc::new(Semaphore::new(max_inflight));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = inflight.clone().acquire_owned().await else { return };
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        metrics::histogram!("jcs_proposer_batch_commands").record(batch.len() as f64);
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, batch).await;
            drop(permit);
        });
    }
}

async fn commit(raft: &Raft, batch: Vec<Pending>) {
    let (commands, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.command, p.reply)).unzip();
    let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let started = std::time::Instant::now();
    let outcome = raft.client_write(Proposal { at_ms, commands }).await;
    metrics::histogram!("jcs_proposer_commit_seconds").record(started.elapsed().as_secs_f64());
    match outcome {
        Ok(response) => {
            let mut results = response.data.results.into_iter();
            for reply in replies {
                let result =
                    results.next().ok_or_else(|| ProposeError::Fatal("state machine returned too few results".into()));
                let _ = reply.send(result);
            }
        }
        Err(err) => {
            let err = match err {
                RaftError::APIError(ClientWriteError::ForwardToLeader(fwd)) => {
                    ProposeError::NotLeader { leader: fwd.leader_id.zip(fwd.leader_node) }
                }
                other => {
                    tracing::error!(error = %other, "raft write failed");
                    ProposeError::Fatal(other.to_string())
                }
            };
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}

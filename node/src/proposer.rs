//! Group commit in front of Raft. Concurrent API writes queue here; a loop takes whatever has
//! queued (up to `max_batch`) and proposes it as ONE Raft entry, keeping up to
//! `max_inflight` entries in flight. Under load, one log append and one fsync carry hundreds of
//! submissions; idle, a lone write goes out at once.
//!
//! On a follower the same batch travels to the leader as one forwarded request over the peer
//! channel (one hop: the leader commits it through its own proposer and never forwards
//! again). With no leader known, a batch waits up to `leader_wait` for an election to end
//! before it is answered `NotLeader`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jcs_raft::command::{Command, CommandResult, Proposal};
use jcs_raft::{NodeId, NodeInfo, Raft};
use openraft::error::{ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::cluster::{PeerReply, PeerRequest};
use crate::peer::Peers;

/// Why a command got no result.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Serialize, Deserialize)]
pub enum ProposeError {
    /// No leader could take the write: none is known (an election is under way), the one
    /// known could not be reached, or this node is shutting down. The write was not committed,
    /// or its outcome is unknown.
    #[error("no leader took the write (leader known: {})", leader.as_ref().map_or("none".to_string(), |(id, info)| format!("{id} at {}", info.raft_addr)))]
    NotLeader { leader: Option<(NodeId, NodeInfo)> },
    /// Not committed within the deadline: the outcome is unknown.
    #[error("the write was not committed within {0:?}")]
    Timeout(Duration),
    /// Raft stopped: a storage fault or shutdown.
    #[error("consensus unavailable: {0}")]
    Fatal(String),
}

/// How many times one batch is sent (to a leader, or again to a new one) before its callers
/// are told no leader took it.
const MAX_ROUNDS: usize = 4;

struct Pending {
    command: Command,
    reply: Reply,
}

/// Where a command's result goes.
struct Reply {
    /// Whether this node may forward the command to the leader (not for commands a follower
    /// forwarded here: one hop only).
    may_forward: bool,
    /// When the caller stops waiting: a forwarded batch may take no longer than its latest.
    deadline: tokio::time::Instant,
    to: oneshot::Sender<Result<CommandResult, ProposeError>>,
}

/// How the proposer batches and where it sends what it cannot commit itself.
#[derive(Clone)]
pub struct ProposerSettings {
    pub max_batch: usize,
    pub max_inflight: usize,
    /// How long a write may wait for its commit.
    pub timeout: Duration,
    /// How long a batch waits for a leader to be elected when none is known.
    pub leader_wait: Duration,
}

/// Handle to the proposer loop; cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::Sender<Pending>,
    timeout: Duration,
}

impl Proposer {
    /// Starts the loop on the current runtime.
    pub fn start(raft: Raft, peers: Peers, settings: ProposerSettings) -> Proposer {
        let (queue, rx) = mpsc::channel(settings.max_batch * settings.max_inflight * 2);
        let timeout = settings.timeout;
        tokio::spawn(run(Committer { raft, peers, settings: settings.clone() }, rx));
        Proposer { queue, timeout }
    }

    /// Commits `command` (through the leader, wherever it is) and returns its result once
    /// applied.
    pub async fn propose(&self, command: Command) -> Result<CommandResult, ProposeError> {
        self.enqueue(command, true).await
    }

    /// Commits `command` only if this node leads: for commands forwarded here, and for
    /// duties of the leader's own (center shards).
    pub async fn propose_here(&self, command: Command) -> Result<CommandResult, ProposeError> {
        self.enqueue(command, false).await
    }

    async fn enqueue(&self, command: Command, may_forward: bool) -> Result<CommandResult, ProposeError> {
        let (to, result) = oneshot::channel();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let send = self.queue.send(Pending { command, reply: Reply { may_forward, deadline, to } });
        let outcome = tokio::time::timeout(self.timeout, async {
            send.await.map_err(|_| ProposeError::Fatal("proposer stopped".into()))?;
            result.await.map_err(|_| ProposeError::Fatal("proposer dropped the write".into()))?
        })
        .await;
        outcome.unwrap_or(Err(ProposeError::Timeout(self.timeout)))
    }
}

/// What a batch needs to be committed.
#[derive(Clone)]
struct Committer {
    raft: Raft,
    peers: Peers,
    settings: ProposerSettings,
}

async fn run(committer: Committer, mut rx: mpsc::Receiver<Pending>) {
    let (max_batch, max_inflight) = (committer.settings.max_batch, committer.settings.max_inflight);
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
        let committer = committer.clone();
        tokio::spawn(async move {
            committer.commit(batch).await;
            drop(permit);
        });
    }
}

impl Committer {
    /// Commits the batch here if this node leads; else forwards what may be forwarded. A
    /// forward is re-sent at once to a new leader when the one it went to loses the
    /// leadership meanwhile (paused, cut off, dead): the forward's connection would only tell
    /// much later. Every wait ends by the callers' deadline.
    async fn commit(&self, batch: Vec<Pending>) {
        let (mut commands, mut replies): (Vec<Command>, Vec<Reply>) =
            batch.into_iter().map(|p| (p.command, p.reply)).unzip();
        let mut waited_for_leader = false;
        for _ in 0..MAX_ROUNDS {
            (commands, replies) = drop_abandoned(commands, replies);
            if commands.is_empty() {
                return;
            }
            let within = longest_wait(&replies);
            let leader = self.leader();
            if leader.as_ref().is_some_and(|(id, _)| *id == self.raft.metrics().borrow().id) {
                return deliver(replies, self.commit_here(commands, within).await);
            }
            // Not the leader: refuse what must not travel further, forward the rest.
            let not_leader = ProposeError::NotLeader { leader: leader.clone() };
            let (forward, refuse): (Vec<_>, Vec<_>) =
                commands.into_iter().zip(replies).partition(|(_, r)| r.may_forward);
            deliver(refuse.into_iter().map(|(_, r)| r).collect(), Err(not_leader.clone()));
            (commands, replies) = forward.into_iter().unzip();
            if commands.is_empty() {
                return;
            }
            match leader {
                // No longer than the last caller waits: past that, the leader would commit
                // writes nobody is waiting for (as with commands dropped before sending).
                Some(leader) => match self.forward_while_it_leads(leader, &commands, within).await {
                    Some(results) => return deliver(replies, results),
                    None => {
                        // The old leader may have committed the batch before it went: only what
                        // is safe to commit twice is sent again; the rest has an unknown outcome.
                        let (again, unknown): (Vec<_>, Vec<_>) =
                            commands.into_iter().zip(replies).partition(|(c, _)| c.safe_to_repeat());
                        let unknown: Vec<Reply> = unknown.into_iter().map(|(_, r)| r).collect();
                        deliver(unknown, Err(ProposeError::NotLeader { leader: None }));
                        (commands, replies) = again.into_iter().unzip();
                        metrics::counter!("jcs_proposer_forwards_resent_total").increment(1);
                        waited_for_leader = false;
                    }
                },
                // An election is under way: wait for its outcome once, then try again.
                None if !waited_for_leader => {
                    waited_for_leader = true;
                    let wait = self.settings.leader_wait.min(within);
                    let _ =
                        self.raft.wait(Some(wait)).metrics(|m| m.current_leader.is_some(), "a leader is elected").await;
                }
                None => return deliver(replies, Err(not_leader)),
            }
        }
        deliver(replies, Err(ProposeError::NotLeader { leader: self.leader() }));
    }

    fn leader(&self) -> Option<(NodeId, NodeInfo)> {
        crate::cluster::known_leader(&self.raft)
    }

    /// Proposes the batch to this node's Raft and waits for its results, at most `within`.
    ///
    /// The wait must be bounded: openraft 0.9 never answers a `client_write` whose entry a
    /// snapshot install replaced (a cut-off leader that catches up by snapshot: only a
    /// conflict truncation answers pending writes, and the install purges without one;
    /// fixed upstream for 0.10). Unbounded, such a wait held its in-flight slot for good, and
    /// once every slot was held nothing this node proposed ever reached Raft again.
    async fn commit_here(
        &self,
        commands: Vec<Command>,
        within: Duration,
    ) -> Result<Vec<Result<CommandResult, ProposeError>>, ProposeError> {
        let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let started = std::time::Instant::now();
        let write = self.raft.client_write(Proposal { at_ms, commands: commands.into() });
        let Ok(outcome) = tokio::time::timeout(within, write).await else {
            metrics::counter!("jcs_proposer_writes_unanswered_total").increment(1);
            tracing::warn!(waited = ?within, "raft did not answer a write in time; its outcome is unknown");
            return Err(ProposeError::Timeout(within));
        };
        metrics::histogram!("jcs_proposer_commit_seconds").record(started.elapsed().as_secs_f64());
        match outcome {
            Ok(response) => Ok(response.data.results.into_iter().map(Ok).collect()),
            // Leadership moved between the check and the write: nothing was committed.
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(fwd))) => {
                Err(ProposeError::NotLeader { leader: fwd.leader_id.zip(fwd.leader_node) })
            }
            // This node is shutting down: the write may still commit under the next leader, so
            // the client retries elsewhere (with its Idempotency-Key), as with no leader.
            Err(RaftError::Fatal(openraft::error::Fatal::Stopped)) => Err(ProposeError::NotLeader { leader: None }),
            Err(other) => {
                tracing::error!(error = %other, "raft write failed");
                Err(ProposeError::Fatal(other.to_string()))
            }
        }
    }

    /// Forwards the batch to `leader` unless this node learns first that `leader` no longer
    /// leads: `None` then (the batch is to be sent again, to whoever leads now).
    async fn forward_while_it_leads(
        &self,
        leader: (NodeId, NodeInfo),
        commands: &[Command],
        within: Duration,
    ) -> Option<Result<Vec<Result<CommandResult, ProposeError>>, ProposeError>> {
        let leader_id = leader.0;
        let mut metrics = self.raft.metrics();
        let deposed = async move {
            // Ends when this node's view of the leader moves off `leader_id` (or Raft stops).
            let _ = metrics.wait_for(|m| m.current_leader != Some(leader_id)).await;
        };
        tokio::select! {
            results = self.forward(leader, commands.to_vec(), within) => Some(results),
            () = deposed => {
                tracing::info!(leader = leader_id, "the leader a write was forwarded to lost the leadership; sending it again");
                None
            }
        }
    }

    /// Sends the batch to the leader as one request; its per-command results come back.
    async fn forward(
        &self,
        leader: (NodeId, NodeInfo),
        commands: Vec<Command>,
        within: Duration,
    ) -> Result<Vec<Result<CommandResult, ProposeError>>, ProposeError> {
        metrics::counter!("jcs_proposer_forwarded_commands_total").increment(commands.len() as u64);
        let request = PeerRequest::Commands(commands);
        match self.peers.forward(&leader.1.raft_addr, &request, within).await {
            Ok(PeerReply::Results(results)) => Ok(results),
            Ok(other) => Err(ProposeError::Fatal(format!("the leader answered a forwarded write with {other:?}"))),
            Err(e) => {
                tracing::warn!(leader = leader.0, error = %e, "forwarding to the leader failed");
                Err(ProposeError::NotLeader { leader: Some(leader) })
            }
        }
    }
}

/// Drops the commands whose caller has stopped waiting (its deadline passed while the command
/// queued, or while no leader was known): the caller was answered that the outcome is unknown,
/// and a write that commits long after that answer, under another leader, is one nobody is
/// waiting for. A command already handed to Raft is not recalled.
fn drop_abandoned(commands: Vec<Command>, replies: Vec<Reply>) -> (Vec<Command>, Vec<Reply>) {
    let before = commands.len();
    let kept: (Vec<Command>, Vec<Reply>) = commands.into_iter().zip(replies).filter(|(_, r)| !r.to.is_closed()).unzip();
    if kept.0.len() < before {
        metrics::counter!("jcs_proposer_abandoned_commands_total").increment((before - kept.0.len()) as u64);
    }
    kept
}

/// How much longer the last of `replies`' callers waits.
fn longest_wait(replies: &[Reply]) -> Duration {
    let latest = replies.iter().map(|r| r.deadline).max();
    latest.map_or(Duration::ZERO, |at| at.saturating_duration_since(tokio::time::Instant::now()))
}

/// Hands each reply its result (or the batch's common failure).
fn deliver(replies: Vec<Reply>, results: Result<Vec<Result<CommandResult, ProposeError>>, ProposeError>) {
    match results {
        Ok(results) => {
            let mut results = results.into_iter();
            for reply in replies {
                let result = results
                    .next()
                    .unwrap_or_else(|| Err(ProposeError::Fatal("the state machine returned too few results".into())));
                let _ = reply.to.send(result);
            }
        }
        Err(err) => {
            for reply in replies {
                let _ = reply.to.send(Err(err.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending_for(
        id: &str,
        wait: Duration,
    ) -> (Command, Reply, oneshot::Receiver<Result<CommandResult, ProposeError>>) {
        let (to, rx) = oneshot::channel();
        let deadline = tokio::time::Instant::now() + wait;
        (Command::DeleteCenter { id: id.into() }, Reply { may_forward: true, deadline, to }, rx)
    }

    fn pending(id: &str) -> (Command, Reply, oneshot::Receiver<Result<CommandResult, ProposeError>>) {
        pending_for(id, Duration::from_secs(5))
    }

    #[test]
    fn a_forwarded_batch_takes_no_longer_than_its_last_caller_waits() {
        let replies: Vec<Reply> = [1, 30, 2].map(|s| pending_for("c", Duration::from_secs(s)).1).into();
        let wait = longest_wait(&replies);
        assert!(wait <= Duration::from_secs(30) && wait > Duration::from_secs(29), "{wait:?}");
        let gone: Vec<Reply> = vec![pending_for("c", Duration::ZERO).1];
        assert_eq!(longest_wait(&gone), Duration::ZERO);
        assert_eq!(longest_wait(&[]), Duration::ZERO);
    }

    #[test]
    fn commands_whose_caller_stopped_waiting_are_not_sent() {
        let (a, reply_a, _waiting) = pending("a");
        let (b, reply_b, gave_up) = pending("b");
        drop(gave_up);
        let (commands, replies) = drop_abandoned(vec![a, b], vec![reply_a, reply_b]);
        assert_eq!(commands.len(), 1);
        assert!(matches!(&commands[0], Command::DeleteCenter { id } if id == "a"));
        assert_eq!(replies.len(), 1);
        assert!(!replies[0].to.is_closed());
    }
}

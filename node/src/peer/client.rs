//! The calling side of the peer channel: openraft's [`RaftNetwork`] over gRPC, and the
//! [`Peers`] pool of channels (one lazily connected HTTP/2 channel per peer address, shared by
//! Raft replication and forwarded requests).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jcs_api::proto::raft_peer_client::RaftPeerClient;
use jcs_api::proto::{ForwardRequest, RaftRequest, SnapshotChunk};
use jcs_raft::{NodeId, NodeInfo, TypeConfig};
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, SnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{Snapshot, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use super::{Fault, Liveness};
use crate::cluster::{PeerReply, PeerRequest};

/// Snapshot bytes per streamed chunk.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// How long connecting to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How often an HTTP/2 ping checks a peer connection, and how long its answer may take.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a peer call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum PeerCallError {
    /// The peer could not be reached (refused, reset, timed out, or cut off by the fault switch).
    #[error("peer {addr} unreachable: {detail}")]
    Unreachable { addr: String, detail: String },
    /// The peer answered something this node cannot decode (version skew).
    #[error("peer {addr} answered garbage: {detail}")]
    Decode { addr: String, detail: String },
}

/// gRPC channels to peers, by peer address.
#[derive(Clone, Default)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, RaftPeerClient<Channel>>>>,
    fault: Fault,
}

impl Peers {
    pub fn new(fault: Fault) -> Peers {
        Peers { channels: Arc::default(), fault }
    }

    /// The client for `addr` (connected on first use, reconnected after failures).
    fn client(&self, addr: &str) -> Result<RaftPeerClient<Channel>, PeerCallError> {
        if self.fault.isolated() {
            return Err(PeerCallError::Unreachable { addr: addr.into(), detail: "isolated by fault injection".into() });
        }
        let mut channels = self.channels.lock().expect("peer channels lock");
        if let Some(client) = channels.get(addr) {
            return Ok(client.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| PeerCallError::Unreachable { addr: addr.into(), detail: e.to_string() })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            // A connection whose peer vanished (a partition, a dead host) is dropped within
            // seconds and dialled afresh, instead of waiting out TCP's retransmissions.
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let client = RaftPeerClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        channels.insert(addr.to_string(), client.clone());
        Ok(client)
    }

    /// Sends `request` to the peer at `addr` and waits up to `timeout` for its reply.
    pub async fn forward(
        &self,
        addr: &str,
        request: &PeerRequest,
        timeout: Duration,
    ) -> Result<PeerReply, PeerCallError> {
        let mut client = self.client(addr)?;
        let payload = serde_json::to_vec(request).expect("peer requests serialize");
        let mut call = tonic::Request::new(ForwardRequest { payload });
        call.set_timeout(timeout);
        let reply = client.forward(call).await.map_err(|status| unreachable(addr, status))?.into_inner();
        decode(addr, &reply.payload)
    }
}

fn unreachable(addr: &str, status: tonic::Status) -> PeerCallError {
    PeerCallError::Unreachable { addr: addr.into(), detail: format!("{}: {}", status.code(), status.message()) }
}

fn decode<T: DeserializeOwned>(addr: &str, payload: &[u8]) -> Result<T, PeerCallError> {
    serde_json::from_slice(payload).map_err(|e| PeerCallError::Decode { addr: addr.into(), detail: e.to_string() })
}

/// openraft's network factory: one [`PeerConnection`] per replication target.
#[derive(Clone)]
pub struct Network {
    pub peers: Peers,
    pub liveness: Liveness,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerConnection {
        PeerConnection {
            target,
            addr: node.raft_addr.clone(),
            peers: self.peers.clone(),
            liveness: self.liveness.clone(),
        }
    }
}

/// The connection to one peer.
pub struct PeerConnection {
    target: NodeId,
    addr: String,
    peers: Peers,
    liveness: Liveness,
}

type RpcResult<T, E = RaftError<NodeId>> = Result<T, RPCError<NodeId, NodeInfo, E>>;

impl PeerConnection {
    /// One unary Raft call: JSON out, JSON `Result<reply, RaftError>` back.
    async fn call<Req, Resp, E, F, Fut>(&self, request: &Req, option: &RPCOption, send: F) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        F: FnOnce(RaftPeerClient<Channel>, tonic::Request<RaftRequest>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<jcs_api::proto::RaftReply>, tonic::Status>>,
    {
        let client = self.peers.client(&self.addr).map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let payload = serde_json::to_vec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut call = tonic::Request::new(RaftRequest { payload });
        call.set_timeout(option.hard_ttl());
        let reply = send(client, call).await.map_err(|status| status_error(&self.addr, status))?.into_inner();
        let decoded: Result<Resp, E> =
            decode(&self.addr, &reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.liveness.answered(self.target);
        decoded.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// A refused connection means the peer is down: back off. Anything else: retry soon.
fn status_error<E: std::error::Error>(addr: &str, status: tonic::Status) -> RPCError<NodeId, NodeInfo, E> {
    let error = unreachable(addr, status);
    RPCError::Unreachable(Unreachable::new(&error))
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        self.call(&rpc, &option, |mut c, r| async move { c.append_entries(r).await }).await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        self.call(&rpc, &option, |mut c, r| async move { c.vote(r).await }).await
    }

    /// Never called: [`Self::full_snapshot`] streams whole snapshots in one gRPC call.
    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        let why = std::io::Error::other("jcs sends snapshots with full_snapshot, not by openraft's chunk RPC");
        Err(RPCError::Network(NetworkError::new(&why)))
    }

    /// Streams the snapshot as one client-streaming call: the first chunk carries the vote and
    /// the snapshot's meta, every chunk up to [`SNAPSHOT_CHUNK_BYTES`] of data.
    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let mut client =
            self.peers.client(&self.addr).map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?;
        let data = snapshot.snapshot.into_inner();
        let timeout = snapshot_timeout(data.len()).max(option.hard_ttl());
        let chunks = snapshot_chunks(&vote, &snapshot.meta, data);
        tracing::info!(target_node = self.target, chunks = chunks.len(), ?timeout, "streaming a snapshot");
        let started = std::time::Instant::now();
        let mut call = tonic::Request::new(futures::stream::iter(chunks));
        call.set_timeout(timeout);
        let reply = tokio::select! {
            reply = client.install_snapshot(call) => reply,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        let reply = reply.map_err(|status| {
            tracing::warn!(target_node = self.target, elapsed = ?started.elapsed(), %status, "snapshot stream failed");
            StreamingError::Unreachable(Unreachable::new(&unreachable(&self.addr, status)))
        })?;
        let decoded: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> = decode(&self.addr, &reply.into_inner().payload)
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        self.liveness.answered(self.target);
        decoded.map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// A peer that is down is retried every 200 ms (openraft's default is 500 ms), so a
    /// restarted node is caught up quickly.
    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}

/// How long streaming and installing a snapshot of `bytes` may take: 5 s, plus a second per
/// 8 MiB (a slow link's pace). A stream that stalls is cut and retried rather than holding up
/// replication to its follower for long.
fn snapshot_timeout(bytes: usize) -> Duration {
    Duration::from_secs(5 + (bytes / (8 * 1024 * 1024)) as u64)
}

/// Cuts a snapshot into the chunks of one `InstallSnapshot` stream (at least one chunk, the
/// last marked `done`).
pub fn snapshot_chunks(
    vote: &Vote<NodeId>,
    meta: &openraft::SnapshotMeta<NodeId, NodeInfo>,
    data: Vec<u8>,
) -> Vec<SnapshotChunk> {
    let pieces: Vec<&[u8]> =
        if data.is_empty() { vec![&data[..]] } else { data.chunks(SNAPSHOT_CHUNK_BYTES).collect() };
    let count = pieces.len();
    let mut offset = 0u64;
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, piece)| {
            let first = i == 0;
            let chunk = SnapshotChunk {
                vote: if first { serde_json::to_vec(vote).expect("votes serialize") } else { Vec::new() },
                meta: if first { serde_json::to_vec(meta).expect("snapshot metas serialize") } else { Vec::new() },
                offset,
                data: piece.to_vec(),
                done: i + 1 == count,
            };
            offset += piece.len() as u64;
            chunk
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> openraft::SnapshotMeta<NodeId, NodeInfo> {
        openraft::SnapshotMeta { last_log_id: None, last_membership: Default::default(), snapshot_id: "s".into() }
    }

    #[test]
    fn a_snapshot_is_cut_into_offset_chunks_the_first_naming_vote_and_meta() {
        let vote = Vote::new(3, 1);
        let data: Vec<u8> = (0..SNAPSHOT_CHUNK_BYTES * 2 + 10).map(|i| i as u8).collect();
        let chunks = snapshot_chunks(&vote, &meta(), data.clone());
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks.iter().map(|c| c.offset).collect::<Vec<_>>(), vec![0, 1 << 20, 2 << 20]);
        assert_eq!(chunks.iter().map(|c| c.done).collect::<Vec<_>>(), vec![false, false, true]);
        assert_eq!(serde_json::from_slice::<Vote<NodeId>>(&chunks[0].vote).unwrap(), vote);
        assert!(chunks[1].vote.is_empty() && chunks[1].meta.is_empty());
        assert_eq!(chunks.iter().flat_map(|c| c.data.clone()).collect::<Vec<_>>(), data);
        // An empty snapshot is still one (final) chunk.
        let empty = snapshot_chunks(&vote, &meta(), Vec::new());
        assert_eq!((empty.len(), empty[0].done), (1, true));
    }

    #[test]
    fn snapshot_streams_get_time_for_their_size() {
        assert_eq!(snapshot_timeout(1024), Duration::from_secs(5));
        assert_eq!(snapshot_timeout(80 * 1024 * 1024), Duration::from_secs(15));
    }
}

//! The answering side of the peer channel: Raft's RPCs go to openraft, forwarded requests to
//! the [`Cluster`]. Runs on the `--raft` listener only.

use std::io::Cursor;

use jcs_api::proto::raft_peer_server::{RaftPeer, RaftPeerServer};
use jcs_api::proto::{ForwardReply, ForwardRequest, RaftReply, RaftRequest, SnapshotChunk};
use jcs_raft::{NodeId, NodeInfo, Raft};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest};
use openraft::{Snapshot, SnapshotMeta, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, Streaming};

use super::{Fault, Liveness};
use crate::cluster::{Cluster, PeerRequest};

/// The peer service of one node.
pub struct PeerService {
    raft: Raft,
    cluster: Cluster,
    liveness: Liveness,
    fault: Fault,
}

/// Serves the peer channel on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    raft: Raft,
    cluster: Cluster,
    fault: Fault,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let liveness = cluster.liveness.clone();
    let service = RaftPeerServer::new(PeerService { raft, cluster, liveness, fault })
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder().add_service(service).serve_with_incoming_shutdown(incoming, shutdown).await
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(bytes).map_err(|e| Status::invalid_argument(format!("undecodable peer message: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(value).map_err(|e| Status::internal(format!("cannot encode a reply: {e}")))
}

impl PeerService {
    fn check_reachable(&self) -> Result<(), Status> {
        if self.fault.isolated() {
            Err(Status::unavailable("isolated by fault injection"))
        } else {
            Ok(())
        }
    }
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        self.check_reachable()?;
        let rpc: AppendEntriesRequest<jcs_raft::TypeConfig> = decode(&request.into_inner().payload)?;
        let result = self.raft.append_entries(rpc).await;
        if matches!(&result, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
            self.liveness.leader_reached_us();
        }
        Ok(Response::new(RaftReply { payload: encode(&result)? }))
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        self.check_reachable()?;
        let rpc: VoteRequest<NodeId> = decode(&request.into_inner().payload)?;
        let result = self.raft.vote(rpc).await;
        Ok(Response::new(RaftReply { payload: encode(&result)? }))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftReply>, Status> {
        self.check_reachable()?;
        let mut stream = request.into_inner();
        let mut header: Option<(Vote<NodeId>, SnapshotMeta<NodeId, NodeInfo>)> = None;
        let mut data = Vec::new();
        while let Some(chunk) = stream.message().await? {
            self.check_reachable()?;
            // Only a leader sends snapshots: a follower taking a long one has a leader.
            self.liveness.leader_reached_us();
            if header.is_none() {
                header = Some((decode(&chunk.vote)?, decode(&chunk.meta)?));
            }
            if chunk.offset != data.len() as u64 {
                return Err(Status::invalid_argument(format!(
                    "snapshot chunk at offset {} after {} bytes",
                    chunk.offset,
                    data.len()
                )));
            }
            data.extend_from_slice(&chunk.data);
            if chunk.done {
                let (vote, meta) = header.take().expect("set by the first chunk");
                tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "installing a streamed snapshot");
                let snapshot = Snapshot { meta, snapshot: Box::new(Cursor::new(data)) };
                let result = self.raft.install_full_snapshot(vote, snapshot).await;
                metrics::counter!("jcs_raft_snapshots_installed_total").increment(1);
                return Ok(Response::new(RaftReply { payload: encode(&result)? }));
            }
        }
        Err(Status::invalid_argument("the snapshot stream ended before its last chunk"))
    }

    async fn forward(&self, request: Request<ForwardRequest>) -> Result<Response<ForwardReply>, Status> {
        self.check_reachable()?;
        let request: PeerRequest = decode(&request.into_inner().payload)?;
        let reply = self.cluster.serve(request).await;
        Ok(Response::new(ForwardReply { payload: encode(&reply)? }))
    }
}

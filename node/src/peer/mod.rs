//! The peer channel between jcs nodes: tonic gRPC over `api/proto/jcs.proto`, on its own
//! listener (`--raft`), apart from the REST API.
//!
//! * [`client`] — openraft's network (AppendEntries, Vote, snapshots streamed in chunks) and
//!   the [`Peers`] pool through which a node forwards requests to another.
//! * [`server`] — the service a node answers its peers with.
//! * [`Liveness`] — who was heard from when: the leader's view of which members answer (center
//!   shards go only to those), and a follower's view of when the leader last reached it (the
//!   owner lease).
//! * [`Fault`] — the fault-injection switch the chaos tests cut a node off with.
//!
//! Raft's messages cross the wire as serde-JSON of openraft's own types, so openraft owns their
//! shape and the proto only fixes which calls exist.

pub mod client;
pub mod server;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jcs_raft::NodeId;

pub use self::client::{Network, Peers};

/// When peers were last heard from.
#[derive(Clone, Default)]
pub struct Liveness {
    inner: Arc<Mutex<LivenessState>>,
}

#[derive(Default)]
struct LivenessState {
    /// Last successful Raft RPC this node made to each peer.
    answered: HashMap<NodeId, Instant>,
    /// Last AppendEntries (heartbeat or entries) this node accepted from a leader.
    leader_contact: Option<Instant>,
}

impl Liveness {
    fn answered(&self, peer: NodeId) {
        self.inner.lock().expect("liveness lock").answered.insert(peer, Instant::now());
    }

    fn leader_reached_us(&self) {
        self.inner.lock().expect("liveness lock").leader_contact = Some(Instant::now());
    }

    /// Whether `peer` answered a Raft RPC of this node within `within`.
    pub fn answered_within(&self, peer: NodeId, within: Duration) -> bool {
        let state = self.inner.lock().expect("liveness lock");
        state.answered.get(&peer).is_some_and(|at| at.elapsed() <= within)
    }

    /// How long ago a leader last reached this node; `None` if none has since it started.
    pub fn since_leader_contact(&self) -> Option<Duration> {
        self.inner.lock().expect("liveness lock").leader_contact.map(|at| at.elapsed())
    }

    /// Whether a leader reached this node within `within`.
    pub fn leader_reached_us_within(&self, within: Duration) -> bool {
        let state = self.inner.lock().expect("liveness lock");
        state.leader_contact.is_some_and(|at| at.elapsed() <= within)
    }
}

/// The fault-injection switch: while set, this node neither sends to nor answers its peers, as
/// if its network were cut. Only reachable through the admin API when the node runs with
/// `fault_injection`.
#[derive(Clone, Default)]
pub struct Fault {
    isolated: Arc<AtomicBool>,
}

impl Fault {
    pub fn set_isolated(&self, isolated: bool) {
        self.isolated.store(isolated, Ordering::Release);
        tracing::warn!(isolated, "fault injection: peer network switched");
    }

    pub fn isolated(&self) -> bool {
        self.isolated.load(Ordering::Acquire)
    }
}

//! The jcs node: runtime, REST API and command-line client around the replicated store.
//!
//! * [`config`] — settings from defaults, TOML, `JCS_*` and flags.
//! * [`node`] — starting and stopping a node's services.
//! * [`proposer`] — group commit of API writes into Raft entries.
//! * [`scheduler`] — the leader's scheduling cycles around the pure solver.
//! * [`http`] — the REST API.
//! * [`peer`] — the peer channel: Raft over gRPC, forwarded requests.
//! * [`cluster`] — membership, forwarding, linearizable reads, center shards.
//! * [`demo`] — the demo catalog.
//! * [`logging`] — the node's log, with openraft's peer-down noise rate-limited.
//! * [`cli`] — the command-line client and benchmark (`jcs center|spec|image|dataset|job|bench`).

pub mod centers;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod http;
pub mod logging;
pub mod node;
pub mod peer;
pub mod proposer;
pub mod scheduler;
pub mod signals;

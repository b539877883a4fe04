//! The scheduling engine's scoring core (standard T/AI 123.6 §6.5–6.6): given one consistent
//! [`Snapshot`] of the candidate centers and a replica's [`JobContext`], every [`Strategy`] of
//! §6.6.2 scores each candidate 0..=100 and an [`EvaluationModel`] (§6.6.3) combines those scores
//! into one ranking.
//!
//! Everything here is a pure function of its arguments — no I/O, clock, randomness or async — so
//! every node computes the same ranking from the same inputs, and a decision can be replayed and
//! explained later.
//!
//! * [`snapshot`] — what a cycle scores against: candidates, their free capacity, the job.
//! * [`strategy`] — the eight strategies, their ids, and min-max normalization.
//! * [`factors`] — each strategy's raw factor per candidate.
//! * [`links`] — the configured links between regions and the path from a job's user region.
//! * [`evaluate`] — weights, the weighted-sum model, ranking, and the A.6 combined score.
//! * [`state`] — a snapshot and a cycle's catalog built from the replicated state.
//! * [`problem`] — what a cycle decides over: catalog, monitoring, in-flight ledger, settings.
//! * [`policy`] — the policy modes of §5 f as weight profiles.
//! * [`filter`] — whether a replica may go to a center at all, with a reason code when not.
//! * [`nodes`] — per-node fit: whether one node of a center can hold a replica.
//! * [`migration`] — ranking the copies a job's data could be fetched from (§6.3.2).
//! * [`solve`](fn@solve) — one cycle: queue in, placements and explain records out.

pub mod evaluate;
pub mod factors;
pub mod filter;
pub mod links;
pub mod migration;
pub mod nodes;
pub mod policy;
pub mod problem;
pub mod snapshot;
pub mod solve;
pub mod state;
pub mod strategy;

#[cfg(test)]
mod fixtures;

pub use evaluate::{combine_algorithm_scores, rank, score_table, EvaluationModel, ScoreError, WeightedSum, Weights};
pub use links::{data_region, Link, LinkError, RegionLinks};
pub use problem::{Catalog, InFlight, LedgerEntry, SolverConfig};
pub use snapshot::{free_capacity, CandidateCenter, DataLocation, DeviceKind, JobContext, Location, Snapshot};
pub use solve::{solve, JobDecision};
pub use strategy::{normalize, raw, score, Strategy};

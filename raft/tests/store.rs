//! The RocksDB store across reopen, apply, snapshot transfer and startup replay.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::path::Path;

use jcs_api::model::{Job, ObjectKind, RunState};
use jcs_raft::command::{Command, Outcome, Proposal, WriteMode};
use jcs_raft::kv::KvRead;
use jcs_raft::store::{self, LogStore, StateMachine, StateReader};
use jcs_raft::{tables, NodeId, NodeInfo, TypeConfig};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader, RaftSnapshotBuilder, StorageHelper,
    StoredMembership, Vote,
};
use serde_json::json;
use tempfile::TempDir;

fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn membership() -> Membership<NodeId, NodeInfo> {
    let node = NodeInfo { raft_addr: "127.0.0.1:7001".into(), http_addr: "127.0.0.1:8001".into() };
    Membership::new(vec![BTreeSet::from([1])], BTreeMap::from([(1, node)]))
}

fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry<TypeConfig> {
    Entry { log_id: log_id(1, index), payload }
}

/// A center, a spec, an image and a job that uses them.
fn catalog_and_job() -> Proposal {
    let commands = vec![
        Command::PutCenter {
            center: serde_json::from_value(json!({"ai_center_id": "c1", "name": "Center 1", "region": "east"}))
                .unwrap(),
            mode: WriteMode::Create,
        },
        Command::PutSpec {
            spec: serde_json::from_value(json!({
                "resource_spec_id": "s1", "resource_spec_name": "small",
                "resource_quantity": {"cpu": "8"}, "computing_center_list": "c1"
            }))
            .unwrap(),
            mode: WriteMode::Create,
        },
        Command::PutImage {
            image: serde_json::from_value(json!({
                "image_id": "img1", "name": "pytorch", "ai_center_id": "c1", "resource_spec": "s1"
            }))
            .unwrap(),
            mode: WriteMode::Create,
        },
        Command::SubmitJob {
            request: serde_json::from_value(json!({
                "name": "train",
                "tasks": [{"name": "t1", "command": "python train.py", "imageId": "img1",
                           "resourceSpecId": "s1", "replicaNumber": 2}]
            }))
            .unwrap(),
            idempotency_key: Some("key-1".into()),
        },
    ];
    Proposal { at_ms: 1_700_000_000_000, commands: commands.into() }
}

/// Like openraft's, the log starts at index 0.
fn history() -> Vec<Entry<TypeConfig>> {
    vec![
        entry(0, EntryPayload::Blank),
        entry(1, EntryPayload::Blank),
        entry(2, EntryPayload::Membership(membership())),
        entry(3, EntryPayload::Normal(catalog_and_job())),
    ]
}

/// Every key-value pair of the applied state.
fn contents(reader: &StateReader) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut pairs = Vec::new();
    reader
        .scan(b"", &mut |k, v| {
            pairs.push((k.to_vec(), v.to_vec()));
            ControlFlow::Continue(())
        })
        .unwrap();
    pairs
}

fn first_job(reader: &StateReader) -> Option<Job> {
    tables::get(reader, ObjectKind::Job, &tables::job_id(1)).unwrap()
}

fn as_json(entries: &[Entry<TypeConfig>]) -> serde_json::Value {
    serde_json::to_value(entries).unwrap()
}

fn open(dir: &Path) -> (LogStore, StateMachine, StateReader) {
    store::open(dir).unwrap()
}

#[tokio::test]
async fn log_vote_and_committed_survive_reopen() {
    let dir = TempDir::new().unwrap();
    let vote = Vote::new_committed(3, 1);
    {
        let (mut log, _sm, _reader) = open(dir.path());
        log.save_vote(&vote).await.unwrap();
        log.blocking_append(history()).await.unwrap();
        log.save_committed(Some(log_id(1, 2))).await.unwrap();
    }
    let (mut log, _sm, _reader) = open(dir.path());
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 2)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id), (None, Some(log_id(1, 3))));
    let mut reader = log.get_log_reader().await;
    assert_eq!(as_json(&reader.try_get_log_entries(..).await.unwrap()), as_json(&history()));
    assert_eq!(as_json(&reader.try_get_log_entries(2..=2).await.unwrap()), as_json(&history()[2..3]));
}

#[tokio::test]
async fn truncate_and_purge_survive_reopen() {
    let dir = TempDir::new().unwrap();
    {
        let (mut log, _sm, _reader) = open(dir.path());
        let entries: Vec<_> = (1..=10).map(|i| entry(i, EntryPayload::Blank)).collect();
        log.blocking_append(entries).await.unwrap();
        log.truncate(log_id(1, 8)).await.unwrap();
        log.purge(log_id(1, 3)).await.unwrap();
    }
    let (mut log, _sm, _reader) = open(dir.path());
    let state = log.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(log_id(1, 3)), Some(log_id(1, 7))));
    let indexes: Vec<u64> = log.try_get_log_entries(..).await.unwrap().iter().map(|e| e.log_id.index).collect();
    assert_eq!(indexes, vec![4, 5, 6, 7]);
}

#[tokio::test]
async fn applied_job_survives_reopen() {
    let dir = TempDir::new().unwrap();
    {
        let (_log, mut sm, reader) = open(dir.path());
        let results = sm.apply(history()).await.unwrap();
        assert_eq!(results.len(), 4);
        assert!(results[..3].iter().all(|r| r.results.is_empty()));
        let outcomes: Vec<_> = results[3].results.iter().map(|r| r.as_ref().expect("command accepted")).collect();
        let Outcome::Job { job, replayed: false } = outcomes[3] else { panic!("not a new job: {:?}", outcomes[3]) };
        assert_eq!(job.status, RunState::Pending);
        assert_eq!(reader.last_applied_index(), Some(3));
    }
    let (_log, mut sm, reader) = open(dir.path());
    let (applied, members) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 3)));
    assert_eq!(members, StoredMembership::new(Some(log_id(1, 2)), membership()));
    assert_eq!(reader.last_applied_index(), Some(3));
    let job = first_job(&reader).expect("job survives");
    assert_eq!((job.name.as_str(), job.idempotency_key.as_deref()), ("train", Some("key-1")));
    assert_eq!(tables::job_ids_in(&reader, RunState::Pending).unwrap(), vec![job.id]);
}

#[tokio::test]
async fn a_refused_command_is_a_result_not_an_error() {
    let dir = TempDir::new().unwrap();
    let (_log, mut sm, reader) = open(dir.path());
    let stop =
        Proposal { at_ms: 1, commands: vec![Command::StopJob { job_id: "job-x".into(), reason: "no".into() }].into() };
    let results = sm.apply([entry(1, EntryPayload::Normal(stop))]).await.unwrap();
    assert!(results[0].results[0].is_err());
    assert_eq!(reader.last_applied_index(), Some(1));
    assert!(contents(&reader).is_empty());
}

#[tokio::test]
async fn startup_replays_committed_entries_the_state_machine_lacks() {
    let dir = TempDir::new().unwrap();
    {
        let (mut log, mut sm, _reader) = open(dir.path());
        log.blocking_append(history()).await.unwrap();
        log.save_committed(Some(log_id(1, 3))).await.unwrap();
        sm.apply(history().into_iter().take(2)).await.unwrap();
    }
    let (mut log, mut sm, reader) = open(dir.path());
    assert_eq!(reader.last_applied_index(), Some(1));
    StorageHelper::new(&mut log, &mut sm).get_initial_state().await.unwrap();
    assert_eq!(reader.last_applied_index(), Some(3));
    assert!(first_job(&reader).is_some());
}

#[tokio::test]
async fn snapshot_installs_identical_state() {
    let (leader_dir, follower_dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let (_leader_log, mut leader, leader_reader) = open(leader_dir.path());
    leader.apply(history()).await.unwrap();
    let built = leader.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_eq!(built.meta.last_log_id, Some(log_id(1, 3)));
    let current = leader.get_current_snapshot().await.unwrap().expect("snapshot persisted");
    assert_eq!(current.meta, built.meta);
    assert_eq!(current.snapshot.get_ref(), built.snapshot.get_ref());

    {
        let (_log, mut follower, follower_reader) = open(follower_dir.path());
        let other = Proposal {
            at_ms: 5,
            commands: vec![Command::PutCenter {
                center: serde_json::from_value(json!({"ai_center_id": "stale", "name": "Stale", "region": "west"}))
                    .unwrap(),
                mode: WriteMode::Create,
            }]
            .into(),
        };
        follower.apply([entry(1, EntryPayload::Normal(other))]).await.unwrap();
        let mut received = follower.begin_receiving_snapshot().await.unwrap();
        *received = *current.snapshot;
        follower.install_snapshot(&current.meta, received).await.unwrap();
        assert_eq!(follower_reader.last_applied_index(), Some(3));
        assert_eq!(contents(&follower_reader), contents(&leader_reader));
    }
    let (_log, mut follower, follower_reader) = open(follower_dir.path());
    assert_eq!(contents(&follower_reader), contents(&leader_reader));
    assert!(!contents(&follower_reader).iter().any(|(k, _)| k.starts_with(b"c/stale")));
    assert_eq!(follower.applied_state().await.unwrap(), leader.applied_state().await.unwrap());
    assert_eq!(follower.get_current_snapshot().await.unwrap().expect("installed snapshot kept").meta, current.meta);
}

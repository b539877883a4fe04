//! Real partitions and region losses, with jcs nodes in Docker containers (see the harness in
//! `chaos/src/lib.rs`): every acknowledged job survives, a node that cannot reach a majority
//! acknowledges nothing but still answers, and after healing every node holds the same jobs.

use std::collections::BTreeSet;

use jcs_chaos::{eventually, skip_without_docker, DockerCluster};
use serde_json::{json, Value};

/// A passive center (nobody polls it) with a spec and an image: jobs are accepted and queue.
async fn catalog(cluster: &DockerCluster, via: u64) {
    let posts = [
        ("centers", json!({"ai_center_id": "changsha", "name": "Changsha AI Center", "region": "hunan", "status": 1})),
        (
            "resourcespecs",
            json!({"resource_spec_id": "gpu-1", "resource_spec_name": "one GPU", "price": 1,
                "resource_quantity": {"cpu": "8", "memory": "32Gi", "gpu": "1"}, "computing_center_list": "changsha"}),
        ),
        (
            "images",
            json!({"image_id": "torch", "name": "pytorch", "ai_center_id": "changsha", "resource_spec": "gpu-1"}),
        ),
    ];
    for (path, body) in posts {
        let (code, answer) = cluster.call(via, "POST", &format!("/openapi/v1/{path}"), Some(&body)).await;
        assert_eq!(code, 200, "{path}: {answer}");
    }
}

fn job(name: &str) -> Value {
    json!({"name": name, "tasks": [{"name": "train", "command": "python train.py", "imageId": "torch",
        "resourceSpecId": "gpu-1", "replicaNumber": 1}]})
}

/// Submits a job through `via`: its id once acknowledged (durable on a majority), or the
/// status and envelope of the refusal.
async fn submit(cluster: &DockerCluster, via: u64, name: &str) -> Result<String, (u16, Value)> {
    let (code, answer) = cluster.call(via, "POST", "/openapi/v1/trainjob", Some(&job(name))).await;
    match answer["data"]["jobId"].as_str() {
        Some(id) if code == 200 => Ok(id.to_string()),
        _ => Err((code, answer)),
    }
}

/// Submits `count` jobs through each of `via`, each retried (through the next node) until
/// acknowledged; adds their ids to `acked`.
async fn submit_through(cluster: &DockerCluster, via: &[u64], count: usize, acked: &mut BTreeSet<String>) {
    for i in 0..count {
        for (n, node) in via.iter().enumerate() {
            let name = format!("job-{node}-{i}-{}", acked.len());
            let (id, attempt) = (std::cell::RefCell::new(None), std::cell::Cell::new(n));
            eventually(&format!("{name} is acknowledged (through any of {via:?})"), || async {
                let through = via[attempt.get() % via.len()];
                attempt.set(attempt.get() + 1);
                *id.borrow_mut() = submit(cluster, through, &name).await.ok();
                id.borrow().is_some()
            })
            .await;
            let id = id.into_inner().expect("acknowledged");
            acked.insert(id);
        }
    }
}

/// The ids of every job node `id` holds, read from its local state.
async fn jobs_on(cluster: &DockerCluster, id: u64) -> Option<BTreeSet<String>> {
    let mut ids = BTreeSet::new();
    for page in 1.. {
        let path = format!("/openapi/v1/trainjob?consistency=stale&pageSize=1000&page={page}");
        let (code, answer) = cluster.call(id, "GET", &path, None).await;
        if code != 200 {
            return None;
        }
        let items = answer["data"]["items"].as_array()?.clone();
        ids.extend(items.iter().filter_map(|job| job["jobId"].as_str().map(String::from)));
        if items.is_empty() || ids.len() as u64 >= answer["data"]["total"].as_u64()? {
            break;
        }
    }
    Some(ids)
}

/// Waits until every node of `nodes` holds the same jobs, every acknowledged one among them.
async fn converged(cluster: &DockerCluster, nodes: &[u64], acked: &BTreeSet<String>) {
    eventually(&format!("nodes {nodes:?} hold the same jobs, all {} acknowledged ones", acked.len()), || async {
        let mut sets = Vec::new();
        for id in nodes {
            match jobs_on(cluster, *id).await {
                Some(jobs) if jobs.is_superset(acked) => sets.push(jobs),
                _ => return false,
            }
        }
        sets.windows(2).all(|pair| pair[0] == pair[1])
    })
    .await;
}

/// A node that cannot reach a majority refuses a write with the envelope: 503 (no leader) or
/// 504 (a deposed leader's write that could not commit), never a hang or a 500.
async fn refuses_writes(cluster: &DockerCluster, id: u64) {
    match submit(cluster, id, "cut-off").await {
        Ok(job) => panic!("node {id} acknowledged {job} without a majority"),
        Err((code, answer)) => {
            assert!(code == 503 || code == 504, "node {id}: {code} {answer}");
            assert!(!answer["errorMsg"].as_str().unwrap_or("").is_empty(), "{answer}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_by_a_partition_is_replaced_and_rejoins_without_divergence() {
    if skip_without_docker("a_leader_cut_off_by_a_partition_is_replaced_and_rejoins_without_divergence") {
        return;
    }
    let cluster = DockerCluster::start(&[("hunan", 3)]).await;
    let all = cluster.region("hunan");
    let leader = cluster.leader_of(&all).await;
    let majority: Vec<u64> = all.iter().copied().filter(|id| *id != leader).collect();
    catalog(&cluster, majority[0]).await;
    let mut acked = BTreeSet::new();
    submit_through(&cluster, &all, 10, &mut acked).await;

    cluster.cut_off(leader);
    let successor = cluster.leader_of(&majority).await;
    assert_ne!(successor, leader);
    submit_through(&cluster, &majority, 10, &mut acked).await;
    refuses_writes(&cluster, leader).await;
    let some_job = acked.first().expect("jobs were acknowledged").clone();
    let (code, answer) = cluster.call(leader, "GET", &format!("/openapi/v1/trainjob/{some_job}"), None).await;
    assert!(code == 503 || code == 504, "a linearizable read on the cut-off node: {code} {answer}");

    cluster.heal(leader);
    cluster.leader_of(&all).await;
    submit_through(&cluster, &all, 5, &mut acked).await;
    converged(&cluster, &all, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_region_keeps_every_acknowledged_job_and_the_api_answering() {
    if skip_without_docker("losing_a_region_keeps_every_acknowledged_job_and_the_api_answering") {
        return;
    }
    let cluster = DockerCluster::start(&[("east", 3), ("west", 2)]).await;
    let (east, west) = (cluster.region("east"), cluster.region("west"));
    let all: Vec<u64> = east.iter().chain(&west).copied().collect();
    catalog(&cluster, west[0]).await;
    let mut acked = BTreeSet::new();
    submit_through(&cluster, &all, 4, &mut acked).await;

    // The minority region is lost: the east majority goes on (electing a leader if it was west's).
    for id in &west {
        cluster.kill(*id);
    }
    cluster.leader_of(&east).await;
    submit_through(&cluster, &east, 5, &mut acked).await;
    for id in &west {
        cluster.start_again(*id);
    }
    converged(&cluster, &all, &acked).await;

    // The majority region is lost: the west nodes still answer, but acknowledge nothing.
    for id in &east {
        cluster.kill(*id);
    }
    for id in &west {
        refuses_writes(&cluster, *id).await;
        let (code, _) = cluster.call(*id, "GET", "/readyz", None).await;
        assert_ne!(code, 0, "node {id} answers its REST API");
    }

    // The east comes back: writes through the west are acknowledged again, nothing was lost.
    for id in &east {
        cluster.start_again(*id);
    }
    cluster.leader_of(&all).await;
    submit_through(&cluster, &west, 5, &mut acked).await;
    converged(&cluster, &all, &acked).await;
}

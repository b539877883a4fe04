//! Multi-node behaviour with real `jcs serve` processes on loopback: forwarding and
//! read-your-writes across nodes, losing the leader mid-stream, losing a center's owner,
//! cutting the leader off, membership changes and rolling restarts under load.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

mod common;

use common::procs::ProcCluster;
use common::{eventually, eventually_explained};
use jcs_node::cli::client::Client;

/// A job for the big simulated center [`add_sim_center`] registers: it runs for a second.
fn sim_job(name: &str) -> Value {
    json!({"name": name, "tasks": [{"name": "t", "command": "train", "imageId": "img-big",
        "resourceSpecId": "small", "replicaNumber": 1}]})
}

/// Creates a center (with a spec `spec` and an image `image` for it) through node `via`.
async fn add_center(cluster: &ProcCluster, via: u64, center: Value, spec: &str, image: &str) {
    let id = center["ai_center_id"].as_str().unwrap().to_string();
    let spec = json!({"resource_spec_id": spec, "resource_spec_name": spec, "resource_quantity": {"cpu": "1", "memory": "1Gi"},
        "price": 1, "computing_center_list": id});
    let image = json!({"image_id": image, "name": image, "ai_center_id": id, "framework": "PyTorch",
        "resource_spec": spec["resource_spec_id"], "reference": "none"});
    for (path, body) in [("centers", center), ("resourcespecs", spec), ("images", image)] {
        let (code, answer) = cluster.call(via, "POST", &format!("/openapi/v1/{path}"), Some(&body)).await;
        assert_eq!(code, 200, "{path}: {answer}");
    }
}

/// A simulated center big enough for every job of a test, whose replicas run for a second.
async fn add_sim_center(cluster: &ProcCluster, via: u64) {
    let center = json!({"ai_center_id": "sim-big", "name": "big simulated center", "region": "hunan", "status": 1,
        "adapter": {"kind": "sim", "endpoint": "sim://big", "config": {"capacity": {"cpu": "100000", "memory": "100000Gi"},
            "latency_ms": 1, "default_duration_secs": 1}}});
    add_center(cluster, via, center, "small", "img-big").await;
}

/// The node that owns `center`, once one does.
async fn owner_of(cluster: &ProcCluster, via: u64, center: &str) -> u64 {
    owner_other_than(cluster, via, center, 0).await
}

/// The node that owns `center`, once one other than `former` does.
async fn owner_other_than(cluster: &ProcCluster, via: u64, center: &str, former: u64) -> u64 {
    let owner = std::cell::Cell::new(0);
    eventually(&format!("{center} has an owner other than node {former}"), || async {
        let status = cluster.status(via).await;
        let shard = status["shards"].as_array().unwrap().iter().find(|s| s["centerId"] == center).cloned();
        owner.set(shard.and_then(|s| s["nodeId"].as_u64()).unwrap_or(0));
        owner.get() != 0 && owner.get() != former
    })
    .await;
    owner.get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_any_node_are_read_from_any_other() {
    let mut cluster = ProcCluster::start(3, &[]).await;
    let leader = cluster.leader().await;
    let followers = cluster.others(leader);
    add_sim_center(&cluster, followers[1]).await;
    let status = cluster.status(followers[0]).await;
    assert_eq!(status["leader"], leader);
    let roles: Vec<&str> = status["members"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, vec!["voter"; 3], "{status:#}");
    eventually("every member reports applied and committed indices", || async {
        let status = cluster.status(followers[0]).await;
        status["members"].as_array().unwrap().iter().all(|member| {
            let index = |field: &str| member["status"][field].as_u64().unwrap_or(0);
            index("appliedIndex") > 0 && index("committedIndex") >= index("appliedIndex")
        })
    })
    .await;

    // A catalog write through one follower, read at once from the other.
    let spec = json!({"resource_spec_id": "tiny", "resource_spec_name": "tiny", "resource_quantity": {"cpu": "1"},
        "price": 1, "computing_center_list": "hunan-telecom"});
    let (code, created) = cluster.call(followers[0], "POST", "/openapi/v1/resourcespecs", Some(&spec)).await;
    assert_eq!(code, 200, "{created}");
    let (code, read) = cluster.get(followers[1], "/openapi/v1/resourcespecs/tiny").await;
    assert_eq!(code, 200, "read-your-writes across nodes: {read}");

    // Jobs submitted to every node are visible on every node, at once.
    for (i, node) in [leader, followers[0], followers[1]].into_iter().enumerate() {
        let (code, created) =
            cluster.call(node, "POST", "/openapi/v1/trainjob", Some(&sim_job(&format!("j{i}")))).await;
        assert_eq!(code, 200, "{created}");
        let id = created["data"]["jobId"].as_str().unwrap().to_string();
        for reader in [leader, followers[0], followers[1]] {
            let (code, job) = cluster.get(reader, &format!("/openapi/v1/trainjob/{id}")).await;
            assert_eq!(code, 200, "job {id} written through {node}, read from {reader}: {job}");
        }
    }

    // A stale read is served locally and says how fresh it is.
    let response = cluster
        .client
        .get(format!("{}/openapi/v1/trainjob?consistency=stale", cluster.base(followers[1])))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let applied: u64 = response.headers()["x-jcs-applied-index"].to_str().unwrap().parse().unwrap();
    assert!(applied > 0);

    // The CLI shows the same, through any node and past a dead address.
    let servers = format!("http://127.0.0.1:1,{}", cluster.base(followers[0]));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_jcs"))
        .args(["cluster", "status", "--server", &servers])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("leader {leader}, term")) && text.matches("voter").count() == 3, "{text}");

    // Centers are driven by the followers, not the leader.
    eventually("every demo center has an owner", || async {
        let shards = cluster.status(leader).await["shards"].as_array().cloned().unwrap_or_default();
        shards.len() == 5 && shards.iter().all(|s| followers.contains(&s["nodeId"].as_u64().unwrap_or(0)))
    })
    .await;

    // A node that waits to be added is added by the CLI, and then serves what the others hold.
    let added = cluster.add_node();
    cluster.join(added, None);
    let raft_addr = format!("127.0.0.1:{}", cluster.node(added).raft);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_jcs"))
        .args(["cluster", "add", &added.to_string(), &raft_addr, "--server", &cluster.base(followers[1])])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    cluster.wait_ready(added).await;
    let (code, read) = cluster.get(added, "/openapi/v1/resourcespecs/tiny").await;
    assert_eq!(code, 200, "{read}");
}

/// Submits `total` jobs from `clients` concurrent clients spread over `nodes`, each with its
/// own Idempotency-Key (`{prefix}-{n}`), retrying on other nodes until acknowledged; `on_ack(count)` runs after
/// every acknowledgement. Returns key → job id.
async fn submit_stream(
    cluster: &ProcCluster,
    prefix: &str,
    nodes: &[u64],
    total: usize,
    clients: usize,
    on_ack: impl Fn(usize) + Send + Sync,
) -> BTreeMap<String, String> {
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let next = AtomicUsize::new(0);
    let servers: Vec<String> = nodes.iter().map(|n| cluster.base(*n)).collect();
    let retrying = Client::new(&servers.join(","), clients, 40).unwrap();
    let worker = |client: usize| {
        let (acked, next, retrying, on_ack) = (acked.clone(), &next, &retrying, &on_ack);
        async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return;
                }
                let key = format!("{prefix}-{i}");
                // The CLI's client: retries with backoff, moving to the next node on a transport
                // error or NO_LEADER, with the same Idempotency-Key every time.
                let client = retrying.starting_at(client + i);
                let body = sim_job(&format!("s{i}"));
                let created: Value = client
                    .send_json(reqwest::Method::POST, client.url(&["trainjob"], &[]), &body, Some(&key))
                    .await
                    .unwrap_or_else(|e| panic!("submission {key} never acknowledged: {e}"));
                let id = created["jobId"].as_str().unwrap().to_string();
                let count = {
                    let mut acked = acked.lock().unwrap();
                    acked.insert(key.clone(), id);
                    acked.len()
                };
                on_ack(count);
            }
        }
    };
    futures::future::join_all((0..clients).map(worker)).await;
    Arc::try_unwrap(acked).unwrap().into_inner().unwrap()
}

/// Every job on node `id`, by its id.
async fn all_jobs(cluster: &ProcCluster, id: u64) -> BTreeMap<String, Value> {
    let mut jobs = BTreeMap::new();
    for page in 1.. {
        let (code, body) = cluster.get(id, &format!("/openapi/v1/trainjob?page={page}&pageSize=1000")).await;
        assert_eq!(code, 200, "{body}");
        let items = body["data"]["items"].as_array().unwrap().clone();
        if items.is_empty() {
            break;
        }
        jobs.extend(items.into_iter().map(|j| (j["jobId"].as_str().unwrap().to_string(), j)));
    }
    jobs
}

/// Every acknowledged job is on `node`, each key made exactly one job, and every job got
/// placed (one center per replica).
async fn assert_all_present_and_placed(cluster: &ProcCluster, node: u64, acked: &BTreeMap<String, String>) {
    let ids: BTreeSet<&String> = acked.values().collect();
    assert_eq!(ids.len(), acked.len(), "two keys made one job, or a retry made a second job");
    eventually(&format!("every acknowledged job placed, as node {node} sees it"), || async {
        let jobs = all_jobs(cluster, node).await;
        acked.values().all(|id| {
            jobs.get(id).is_some_and(|job| job["taskInfos"][0]["centerIDs"].as_array().is_some_and(|c| c.len() == 1))
        })
    })
    .await;
    let jobs = all_jobs(cluster, node).await;
    for id in acked.values() {
        assert!(jobs.contains_key(id), "acknowledged job {id} is missing on node {node}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_mid_stream_loses_no_acknowledged_job() {
    let cluster = ProcCluster::start(3, &[]).await;
    let leader = cluster.leader().await;
    add_sim_center(&cluster, leader).await;
    let all: Vec<u64> = cluster.nodes.iter().map(|n| n.id).collect();
    let killed = std::sync::atomic::AtomicBool::new(false);
    let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
    let kill_tx = Mutex::new(Some(kill_tx));
    let submissions = submit_stream(&cluster, "k", &all, 1200, 16, |count| {
        if count >= 300 && !killed.swap(true, Ordering::Relaxed) {
            if let Some(tx) = kill_tx.lock().unwrap().take() {
                let _ = tx.send(());
            }
        }
    });
    // The kill happens while the stream runs: SIGKILL when 300 are acknowledged.
    let killer = async {
        if kill_rx.await.is_ok() {
            cluster.kill(leader);
        }
    };
    let (acked, ()) = tokio::join!(submissions, killer);
    assert_eq!(acked.len(), 1200);
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    for survivor in cluster.others(leader) {
        assert_all_present_and_placed(&cluster, survivor, &acked).await;
    }
    // Scheduling goes on under the new leader.
    let (code, created) = cluster.call(new_leader, "POST", "/openapi/v1/trainjob", Some(&sim_job("after"))).await;
    assert_eq!(code, 200, "{created}");
    let id = created["data"]["jobId"].as_str().unwrap().to_string();
    eventually("a job submitted after the failover is placed", || async {
        let (_, job) = cluster.get(new_leader, &format!("/openapi/v1/trainjob/{id}")).await;
        job["data"]["taskInfos"][0]["centerIDs"].as_array().is_some_and(|c| c.len() == 1)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owners_centers_move_and_no_replica_starts_twice() {
    let cluster = ProcCluster::start(3, &[]).await;
    let leader = cluster.leader().await;
    // A local center whose files every node can reach (they share this host).
    let shared = cluster.dir.path().join("shared-center");
    let starts = cluster.dir.path().join("starts.log");
    let center = json!({"ai_center_id": "shared", "name": "shared local center", "region": "hunan", "status": 1,
        "adapter": {"kind": "local", "endpoint": "local://shared", "config": {"capacity": {"cpu": "8", "memory": "8Gi"},
            "work_dir": shared}}});
    add_center(&cluster, leader, center, "one-cpu", "img-shared").await;
    let owner = owner_of(&cluster, leader, "shared").await;
    assert_ne!(owner, leader, "followers drive the centers");

    // Four replicas that record their start, then run for a while.
    let command =
        format!("echo $JCS_JOB_ID.$JCS_TASK_INDEX.$JCS_REPLICA_INDEX.$JCS_ATTEMPT >> {}; sleep 6", starts.display());
    let body = json!({"name": "long", "tasks": [{"name": "t", "command": command, "imageId": "img-shared",
        "resourceSpecId": "one-cpu", "replicaNumber": 4}]});
    let (code, created) = cluster.call(leader, "POST", "/openapi/v1/trainjob", Some(&body)).await;
    assert_eq!(code, 200, "{created}");
    let id = created["data"]["jobId"].as_str().unwrap().to_string();
    let started = || std::fs::read_to_string(&starts).unwrap_or_default().lines().map(String::from).collect::<Vec<_>>();
    eventually("all four replicas started", || async { started().len() == 4 }).await;

    cluster.kill(owner);
    let survivor = cluster.others(owner)[0];
    eventually("the center moves to a running node", || async {
        let status = cluster.status(survivor).await;
        let shard = status["shards"].as_array().unwrap().iter().find(|s| s["centerId"] == "shared").cloned();
        shard.is_some_and(|s| s["nodeId"].as_u64().is_some_and(|n| n != owner))
    })
    .await;
    // The new owner adopts the running replicas: the job completes with no second start.
    eventually("the job completes under the new owner", || async {
        let (_, job) = cluster.get(survivor, &format!("/openapi/v1/trainjob/{id}")).await;
        job["data"]["status"] == "completed"
    })
    .await;
    let lines = started();
    let unique: BTreeSet<&String> = lines.iter().collect();
    assert_eq!((lines.len(), unique.len()), (4, 4), "every replica attempt started once: {lines:?}");
}

/// The native ids of a job's replicas, once every one has one.
async fn native_ids(cluster: &ProcCluster, via: u64, job: &str) -> Vec<String> {
    let ids = std::cell::RefCell::new(Vec::new());
    eventually(&format!("every replica of {job} is on its center"), || async {
        let (_, info) = cluster.get(via, &format!("/openapi/v1/trainjob/{job}")).await;
        let replicas = info["data"]["taskInfos"][0]["replicas"].as_array().cloned().unwrap_or_default();
        *ids.borrow_mut() = replicas.iter().filter_map(|r| r["nativeId"].as_str().map(String::from)).collect();
        !replicas.is_empty() && ids.borrow().len() == replicas.len()
    })
    .await;
    ids.into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_center_keeps_its_replicas_when_its_owner_dies() {
    let cluster = ProcCluster::start(3, &[]).await;
    let leader = cluster.leader().await;
    // A simulated platform whose state every node can reach, as a remote platform would be.
    let center = json!({"ai_center_id": "remote", "name": "simulated remote platform", "region": "hunan", "status": 1,
        "adapter": {"kind": "sim", "endpoint": "sim://remote", "config": {"capacity": {"cpu": "64", "memory": "64Gi"},
            "latency_ms": 1, "work_dir": cluster.dir.path().join("remote-platform")}}});
    add_center(&cluster, leader, center, "one-cpu", "img-remote").await;
    let owner = owner_of(&cluster, leader, "remote").await;
    let body = json!({"name": "long", "tasks": [{"name": "t", "command": "sleep 10", "imageId": "img-remote",
        "resourceSpecId": "one-cpu", "replicaNumber": 4}]});
    let (code, created) = cluster.call(leader, "POST", "/openapi/v1/trainjob", Some(&body)).await;
    assert_eq!(code, 200, "{created}");
    let id = created["data"]["jobId"].as_str().unwrap().to_string();
    let before = native_ids(&cluster, leader, &id).await;

    cluster.kill(owner);
    let survivor = cluster.others(owner)[0];
    owner_other_than(&cluster, survivor, "remote", owner).await;
    let (_, job) = cluster.get(survivor, &format!("/openapi/v1/trainjob/{id}")).await;
    let in_flight = ["pending", "running"].contains(&job["data"]["status"].as_str().unwrap_or(""));
    assert!(in_flight, "the replicas are still in flight when their center moves: {job}");
    // The new owner finds the same replicas on the platform: none lost, none submitted again.
    eventually("the job completes under the new owner", || async {
        let (_, job) = cluster.get(survivor, &format!("/openapi/v1/trainjob/{id}")).await;
        job["data"]["status"] == "completed"
    })
    .await;
    let (_, job) = cluster.get(survivor, &format!("/openapi/v1/trainjob/{id}")).await;
    let replicas = job["data"]["taskInfos"][0]["replicas"].as_array().unwrap().clone();
    let after: Vec<String> = replicas.iter().map(|r| r["nativeId"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(after, before, "the same platform jobs ran to the end: {replicas:?}");
    assert!(replicas.iter().all(|r| r["reschedules"] == 0 && r["retries"] == 0), "{replicas:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_stops_acknowledging_and_catches_up_after_healing() {
    let cluster = ProcCluster::start(3, &[]).await;
    let old = cluster.leader().await;
    add_sim_center(&cluster, old).await;
    cluster.isolate(old, true).await;

    // The majority elects a new leader and keeps taking writes.
    let majority = cluster.others(old);
    let new = std::cell::Cell::new(0);
    eventually("the majority elects another leader", || async {
        let (code, ready) = cluster.get(majority[0], "/readyz").await;
        new.set(ready["data"]["leader"].as_u64().unwrap_or(0));
        code == 200 && new.get() != 0 && new.get() != old
    })
    .await;
    let (code, created) = cluster.call(majority[0], "POST", "/openapi/v1/trainjob", Some(&sim_job("majority"))).await;
    assert_eq!(code, 200, "{created}");
    let id = created["data"]["jobId"].as_str().unwrap().to_string();

    // The cut-off node acknowledges nothing, and will not serve a linearizable read.
    // (503 NO_LEADER once it knows it lost, else 504 TIMEOUT: its entries never commit.) Four
    // at once: more than the proposer keeps in flight.
    let bodies: Vec<Value> = (0..4).map(|i| sim_job(&format!("minority{i}"))).collect();
    let minority = futures::future::join_all(
        bodies.iter().map(|body| cluster.call(old, "POST", "/openapi/v1/trainjob", Some(body))),
    )
    .await;
    for (code, refused) in minority {
        assert!(code == 503 || code == 504, "a cut-off node must not acknowledge a write: {code} {refused}");
    }
    let (code, _) = cluster.get(old, &format!("/openapi/v1/trainjob/{id}")).await;
    assert_eq!(code, 503);

    cluster.isolate(old, false).await;
    eventually("the old leader follows the new one and has the majority's write", || async {
        let (code, job) = cluster.get(old, &format!("/openapi/v1/trainjob/{id}?consistency=stale")).await;
        let (_, ready) = cluster.get(old, "/readyz").await;
        code == 200 && job["data"]["jobId"] == id.as_str() && ready["data"]["leader"] == new.get()
    })
    .await;
    // The old leader takes writes again (forwarding them): nothing it had in flight while cut
    // off is left holding up its proposer.
    eventually("the healed node acknowledges writes", || async {
        cluster.call(old, "POST", "/openapi/v1/trainjob", Some(&sim_job("healed"))).await.0 == 200
    })
    .await;
    // Nothing diverged: every node holds the same jobs (the nodes' lists are read concurrently,
    // not at one instant, so agreement is waited for), and none of the writes the cut-off node refused was committed later: those it had
    // not yet handed to Raft were dropped once their callers stopped waiting.
    eventually("every node holds the same jobs", || async {
        let jobs: Vec<BTreeMap<String, Value>> =
            futures::future::join_all(cluster.nodes.iter().map(|n| all_jobs(&cluster, n.id))).await;
        jobs.windows(2).all(|w| w[0].keys().eq(w[1].keys()))
    })
    .await;
    let names: BTreeSet<String> =
        all_jobs(&cluster, old).await.values().map(|j| j["name"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(names, BTreeSet::from(["majority".to_string(), "healed".to_string()]), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_and_leave_and_restart_one_by_one_under_load() {
    // Small snapshots and no log kept behind them, so that the joining node catches up from one.
    let mut cluster = ProcCluster::start(3, &["--snapshot-after-logs", "20", "--logs-kept-after-snapshot", "0"]).await;
    let leader = cluster.leader().await;
    add_sim_center(&cluster, leader).await;
    let first: Vec<u64> = cluster.nodes.iter().map(|n| n.id).collect();
    // Enough entries (one client: one submission per entry) that the log behind the snapshots
    // is purged before anyone joins.
    let mut acked = submit_stream(&cluster, "zero", &first, 100, 1, |_| {}).await;
    // openraft purges behind a snapshot in the background: join once it has.
    eventually("the leader purged its log behind a snapshot", || async {
        let status = cluster.status(leader).await;
        let me = status["members"].as_array().unwrap().iter().find(|m| m["nodeId"] == leader).cloned();
        me.is_some_and(|me| me["status"]["purgedIndex"].as_u64() > Some(0))
    })
    .await;
    let joiner = cluster.add_node();
    let leaving = cluster.others(leader)[0];

    // Under load: a fourth node joins through a follower, is caught up by snapshot and becomes
    // a voter; then one of the founders leaves.
    let membership = async {
        cluster.join(joiner, Some(cluster.others(leader)[1]));
        cluster.wait_ready(joiner).await;
        eventually("the fourth node knows itself a voter", || async {
            let status = cluster.status(joiner).await;
            let me = status["members"].as_array().unwrap().iter().find(|m| m["nodeId"] == joiner).cloned();
            me.is_some_and(|me| me["role"] == "voter")
        })
        .await;
        // Its log and membership arrive before the snapshot's install returns (the state is
        // written in the background): the count is waited for.
        let installed = || async {
            let metrics = cluster.client.get(format!("{}/metrics", cluster.base(joiner))).send().await.unwrap();
            let metrics = metrics.text().await.unwrap();
            let installed = metrics
                .lines()
                .find_map(|l| l.strip_prefix("jcs_raft_snapshots_installed_total ")?.trim().parse::<f64>().ok());
            (installed >= Some(1.0), metrics)
        };
        eventually_explained(
            "caught up by a streamed snapshot",
            || async { installed().await.0 },
            || async { installed().await.1 },
        )
        .await;
        let (code, answer) = cluster.call(joiner, "DELETE", &format!("/admin/cluster/members/{leaving}"), None).await;
        assert_eq!(code, 200, "{answer}");
        eventually("the removal reaches every member", || async {
            let mut gone = true;
            for node in cluster.others(leaving) {
                let members = cluster.status(node).await["members"].as_array().cloned().unwrap_or_default();
                gone &= !members.iter().any(|m| m["nodeId"] == leaving);
            }
            gone
        })
        .await;
    };
    // The stream only uses the founders that stay (the leaving one is stopped below).
    let staying: Vec<u64> = first.iter().copied().filter(|n| *n != leaving).collect();
    let (more, ()) = tokio::join!(submit_stream(&cluster, "first", &staying, 400, 8, |_| {}), membership);
    acked.extend(more);
    cluster.stop(leaving);

    // Rolling restart of the remaining three, one by one, while clients keep submitting.
    let remaining: Vec<u64> = cluster.nodes.iter().filter(|n| n.running()).map(|n| n.id).collect();
    let restarts = async {
        for node in &remaining {
            cluster.stop(*node);
            cluster.restart(*node).await;
            cluster.leader().await;
        }
    };
    let (more, ()) = tokio::join!(submit_stream(&cluster, "second", &remaining, 300, 8, |_| {}), restarts);
    acked.extend(more);
    for node in &remaining {
        assert_all_present_and_placed(&cluster, *node, &acked).await;
    }

    // The whole cluster restarted keeps everything.
    for node in &remaining {
        cluster.stop(*node);
    }
    for node in &remaining {
        cluster.start_again(*node);
    }
    for node in &remaining {
        cluster.wait_ready(*node).await;
    }
    cluster.leader().await;
    assert_all_present_and_placed(&cluster, remaining[0], &acked).await;
}

/// Node `id` takes a write (a job submission) within the deadline.
async fn takes_writes(cluster: &ProcCluster, id: u64, name: &str) {
    eventually(&format!("node {id} acknowledges a write"), || async {
        cluster.call(id, "POST", "/openapi/v1/trainjob", Some(&sim_job(name))).await.0 == 200
    })
    .await;
}

/// A leader cut off with writes in flight, healed only after the others snapshotted and purged
/// their log past it, catches up by a snapshot install, which openraft 0.9 does without
/// answering the writes it had in flight. Its proposer must not wait for those answers forever:
/// the node takes writes again, and once it leads again, writes commit through every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_healed_past_a_snapshot_takes_writes_and_can_lead_again() {
    let snapshots = ["--snapshot-after-logs", "20", "--logs-kept-after-snapshot", "0", "--write-timeout-ms", "2000"];
    let cluster = ProcCluster::start(3, &snapshots).await;
    let old = cluster.leader().await;
    add_sim_center(&cluster, old).await;
    cluster.isolate(old, true).await;
    // Writes in flight on the cut-off leader: appended to its log, never committed. More than
    // the proposer keeps in flight.
    let bodies: Vec<Value> = (0..4).map(|i| sim_job(&format!("stranded{i}"))).collect();
    let stranded = futures::future::join_all(
        bodies.iter().map(|body| cluster.call(old, "POST", "/openapi/v1/trainjob", Some(body))),
    );
    // Meanwhile the majority elects a leader and writes well past a snapshot.
    let majority = cluster.others(old);
    let majority_writes = async {
        for i in 0..50 {
            takes_writes(&cluster, majority[i % 2], &format!("majority{i}")).await;
        }
    };
    let (stranded, ()) = tokio::join!(stranded, majority_writes);
    for (code, refused) in stranded {
        assert!(code == 503 || code == 504, "a cut-off node must not acknowledge a write: {code} {refused}");
    }
    let purged = |status: &Value| {
        status["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["nodeId"].as_u64() == Some(old) || m["status"]["snapshotIndex"].as_u64().unwrap_or(0) > 20)
    };
    let status = cluster.status(majority[0]).await;
    assert!(purged(&status), "the majority snapshotted past the cut-off node: {status:#}");

    cluster.isolate(old, false).await;
    takes_writes(&cluster, old, "healed").await;
    // Lead again: take the leader out until the healed node wins an election.
    let mut rounds = 0;
    loop {
        let leader = cluster.leader().await;
        if leader == old {
            break;
        }
        rounds += 1;
        assert!(rounds <= 12, "node {old} never led again");
        cluster.kill(leader);
        eventually("a new leader among the rest", || async {
            let (code, ready) = cluster.get(old, "/readyz").await;
            code == 200 && ready["data"]["leader"].as_u64().is_some_and(|l| l != leader && l != 0)
        })
        .await;
        cluster.restart(leader).await;
    }
    for node in cluster.nodes.iter().map(|n| n.id).collect::<Vec<_>>() {
        takes_writes(&cluster, node, &format!("led-again-via-{node}")).await;
    }
}

/// A paused leader (SIGSTOP) holds up writes through the other nodes only until they have
/// elected another: a forward to the paused leader is sent again to the new one as soon as the
/// node learns of it, not when the connection's keep-alive gives up (1 s pings, 2 s to answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_holds_up_writes_only_until_a_new_one_is_elected() {
    let cluster = ProcCluster::start(3, &[]).await;
    let old = cluster.leader().await;
    let probe = json!({"ai_center_id": "probe", "name": "probe", "region": "r", "status": 1});
    let (code, created) = cluster.call(old, "POST", "/openapi/v1/centers", Some(&probe)).await;
    assert_eq!(code, 200, "{created}");
    let followers = cluster.others(old);
    let paused_at = std::time::Instant::now();
    cluster.pause(old, true);
    // Writers through both followers, one after the other, from the pause on: the first
    // acknowledgement ends the gap.
    let first_ack = Arc::new(Mutex::new(None::<std::time::Duration>));
    let writers = (0..4).map(|w| {
        let (cluster, first_ack, via) = (&cluster, first_ack.clone(), followers[w % 2]);
        async move {
            for i in 0.. {
                if first_ack.lock().unwrap().is_some() || paused_at.elapsed().as_secs() > 15 {
                    return;
                }
                let report = json!({"running_task_num": i, "cpu_free": 1});
                let (code, _) = cluster.call(via, "PUT", "/openapi/v1/centers/probe/metrics", Some(&report)).await;
                if code == 200 {
                    first_ack.lock().unwrap().get_or_insert(paused_at.elapsed());
                }
            }
        }
    });
    futures::future::join_all(writers).await;
    cluster.pause(old, false);
    let gap = first_ack.lock().unwrap().expect("a write was acknowledged within 15 s");
    // The election takes the leader lease (800 ms here) plus up to 200 ms of jitter; waiting
    // for the keep-alive took 2–3 s.
    assert!(gap < std::time::Duration::from_millis(2_200), "writes resumed {gap:?} after the pause");
    eprintln!("writes resumed {gap:?} after the leader was paused");
}

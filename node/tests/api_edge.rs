//! The API edge's bounds and exact fields (issue 25): bounded jobs and pages, integers written
//! as floats, errors deep in JSON, adapterless centers, replacements that would drop fields,
//! and the standard's `created_user` and Table 9 records in A.3.

mod common;

use common::{job_body, test_config, TestNode};
use serde_json::{json, Value};

/// A one-member demo cluster whose limits `tune` sets.
async fn node_with(tune: impl FnOnce(&mut jcs_node::config::Config)) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    tune(&mut config);
    TestNode::start_with(config, dir).await
}

fn refusal(answer: &(u16, Value)) -> (u16, &str, &str) {
    let (status, body) = answer;
    (*status, body["code"].as_str().unwrap_or(""), body["errorMsg"].as_str().unwrap_or(""))
}

#[tokio::test]
async fn a3_returns_created_user_and_each_replicas_table_9_record() {
    let node = TestNode::start().await;
    let mut body = job_body("named");
    body["userName"] = json!("alice");
    let (status, created) = node.post("/openapi/v1/trainjob", body).await;
    assert_eq!(status, 200, "{created}");
    let id = created["data"]["jobId"].as_str().unwrap().to_string();
    let (_, info) = node.get(&format!("/openapi/v1/trainjob/{id}")).await;
    assert_eq!(info["data"]["createdUser"], "alice", "{info}");
    let replicas = info["data"]["taskInfos"][0]["replicas"].as_array().unwrap().clone();
    assert_eq!(replicas.len(), 2);
    for (i, replica) in replicas.iter().enumerate() {
        assert_eq!(replica["name"], format!("{id}.t0.r{i}.a0").as_str(), "{replica}");
        assert_eq!(replica["imageId"], "pytorch-hunan-univ");
        assert_eq!(replica["resourceSpecId"], "gpu-1x");
    }
    node.stop().await;
}

#[tokio::test]
async fn integers_written_as_floats_are_integers_and_fractions_are_refused() {
    let node = TestNode::start().await;
    let mut body = job_body("floats");
    body["tasks"][0]["replicaNumber"] = json!(2.0);
    let (status, created) = node.post("/openapi/v1/trainjob", body.clone()).await;
    assert_eq!(status, 200, "{created}");
    body["tasks"][0]["replicaNumber"] = json!(2.5);
    let answer = node.post("/openapi/v1/trainjob", body).await;
    let (status, code, message) = refusal(&answer);
    assert_eq!((status, code), (400, "MALFORMED_REQUEST"), "{message}");
    assert!(message.starts_with("tasks[0].replicaNumber: invalid type: floating point `2.5`"), "{message}");
    node.stop().await;
}

#[tokio::test]
async fn an_error_deep_in_nested_json_keeps_its_reason() {
    let node = TestNode::start().await;
    let deep = format!("{}\"x\"{}", "[".repeat(100), "]".repeat(100));
    let raw = format!(
        r#"{{"name": "n", "tasks": [{{"name": "t", "command": "c", "imageId": "i",
        "resourceSpecId": "s", "replicaNumber": 1, "centerIDs": [{deep}]}}]}}"#
    );
    let answer = raw_post(&node, &raw).await;
    let (status, code, message) = refusal(&answer);
    assert_eq!((status, code), (400, "MALFORMED_REQUEST"), "{message}");
    assert!(message.starts_with("tasks[0].centerIDs[0]: invalid type: sequence, expected a string"), "{message}");
    let too_deep = format!("{{\"name\": {}1{}}}", "[".repeat(200), "]".repeat(200));
    let answer = raw_post(&node, &too_deep).await;
    let (status, code, message) = refusal(&answer);
    assert_eq!((status, code), (400, "MALFORMED_REQUEST"), "{message}");
    assert!(message.starts_with("body: recursion limit exceeded"), "{message}");
    node.stop().await;
}

async fn raw_post(node: &TestNode, raw: &str) -> (u16, Value) {
    let response = node
        .client
        .post(node.url("/openapi/v1/trainjob"))
        .header("content-type", "application/json")
        .body(raw.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn a_job_is_bounded_in_replicas_by_the_node_limit() {
    let node = node_with(|config| config.max_job_replicas = 3).await;
    let mut body = job_body("big");
    body["tasks"][0]["replicaNumber"] = json!(4);
    let before = node.get("/openapi/v1/trainjob").await.1["data"]["total"].clone();
    for path in ["/openapi/v1/trainjob", "/openapi/v1/trainjob/plan"] {
        let answer = node.post(path, body.clone()).await;
        let (status, code, message) = refusal(&answer);
        assert_eq!((status, code), (400, "INVALID_ARGUMENT"), "{path}: {message}");
        assert!(message.contains("ask for 4 replicas in all, at most 3 per job allowed"), "{message}");
    }
    assert_eq!(node.get("/openapi/v1/trainjob").await.1["data"]["total"], before, "nothing was created");
    body["tasks"][0]["replicaNumber"] = json!(3);
    assert_eq!(node.post("/openapi/v1/trainjob", body).await.0, 200);
    node.stop().await;
}

#[tokio::test]
async fn a_listing_page_is_bounded_in_bytes_and_says_where_the_next_starts() {
    let node = node_with(|config| config.max_page_bytes = 1_200).await;
    let (_, first) = node.get("/openapi/v1/centers?pageSize=1000").await;
    let total = first["data"]["total"].as_u64().unwrap();
    let items = first["data"]["items"].as_array().unwrap().len() as u64;
    assert!(items >= 1 && items < total, "the demo's {total} centers do not fit 1,200 bytes: {items} did");
    assert_eq!(first["data"]["nextOffset"], json!(items));
    // Following `nextOffset` walks every center once, in order.
    let mut seen: Vec<String> = Vec::new();
    let mut next = Some(0u64);
    while let Some(offset) = next {
        let (status, page) = node.get(&format!("/openapi/v1/centers?offset={offset}&pageSize=1000")).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["data"]["offset"], json!(offset));
        let ids = page["data"]["items"].as_array().unwrap().iter().map(|c| c["ai_center_id"].as_str().unwrap().into());
        seen.extend(ids);
        next = page["data"]["nextOffset"].as_u64();
        assert!(seen.len() as u64 <= total, "the walk ends");
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!((seen.len() as u64, sorted), (total, seen));
    let (_, both) = node.get("/openapi/v1/centers?offset=1&page=1").await;
    assert_eq!(both["data"]["offset"], 1, "an offset wins over a page: {both}");
    node.stop().await;
}

#[tokio::test]
async fn a_center_without_an_adapter_is_filtered_out_and_a_put_drops_nothing_silently() {
    let node = TestNode::start().await;
    let (_, center) = node.get("/openapi/v1/centers/hangzhou-a").await;
    let mut center = center["data"].clone();
    assert!(!center["adapter"]["kind"].as_str().unwrap().is_empty(), "{center}");
    // Left out, the adapter would be lost: refused, naming it.
    let mut without = center.clone();
    without.as_object_mut().unwrap().remove("adapter");
    let answer = node.call("PUT", "/openapi/v1/centers/hangzhou-a", Some(without)).await;
    let (status, code, message) = refusal(&answer);
    assert_eq!((status, code), (409, "FIELD_WOULD_BE_LOST"), "{message}");
    assert!(message.starts_with("adapter: is left out"), "{message}");
    // An unknown kind is refused; an empty adapter, sent as such, removes it.
    center["adapter"] = json!({"kind": "kubernetes"});
    let answer = node.call("PUT", "/openapi/v1/centers/hangzhou-a", Some(center.clone())).await;
    assert!(refusal(&answer).2.starts_with("adapter.kind: 'kubernetes' is not one of local, sim, slurm"), "{answer:?}");
    center["adapter"] = json!({});
    let (status, replaced) = node.call("PUT", "/openapi/v1/centers/hangzhou-a", Some(center)).await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["data"]["adapter"], json!({"kind": "", "endpoint": "", "config": {}}));
    // The scheduler does not choose it, and says why.
    let mut body = job_body("nowhere");
    body["tasks"][0]["centerIDs"] = json!(["hangzhou-a"]);
    let (status, plan) = node.post("/openapi/v1/trainjob/plan", body).await;
    assert_eq!(status, 200, "{plan}");
    let rejections = plan["data"]["tasks"][0]["replicas"][0]["rejections"].as_array().unwrap();
    let hangzhou = rejections.iter().find(|r| r["centerId"] == "hangzhou-a").expect("hangzhou-a is judged");
    assert_eq!(hangzhou["code"], "NO_ADAPTER", "{plan}");
    node.stop().await;
}

#[tokio::test]
async fn every_operation_documents_its_errors_with_the_envelope() {
    let node = TestNode::start().await;
    let (status, doc) = node.get("/openapi.json").await;
    assert_eq!(status, 200);
    let envelope = &doc["components"]["schemas"]["ErrorEnvelope"];
    assert_eq!(envelope["required"], json!(["status", "code", "errorMsg", "data"]), "{envelope}");
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            let responses = operation["responses"].as_object().unwrap();
            for status in ["400", "414", "500", "503"] {
                let schema = &responses.get(status).unwrap_or_else(|| panic!("{method} {path} lacks {status}"))
                    ["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(schema, "#/components/schemas/ErrorEnvelope", "{method} {path} {status}");
            }
            if operation.get("requestBody").is_some() {
                assert!(responses.contains_key("413") && responses.contains_key("415"), "{method} {path}");
            }
        }
    }
    assert!(operations > 30, "{operations} operations");
    // A response matches its own schema: an adapter's config is an object, never null.
    let (_, centers) = node.get("/openapi/v1/centers?pageSize=1000").await;
    for center in centers["data"]["items"].as_array().unwrap() {
        assert!(center["adapter"]["config"].is_object(), "{center}");
    }
    node.stop().await;
}

#[tokio::test]
async fn a_member_that_cannot_catch_up_stays_a_learner_and_the_cluster_serves() {
    let node = TestNode::start().await;
    // Nothing listens on port 1: the learner never catches up.
    let unreachable = json!({"nodeId": 7, "raftAddr": "127.0.0.1:1"});
    let answer = node.post("/admin/cluster/members", unreachable).await;
    let (status, code, message) = refusal(&answer);
    assert_eq!((status, code), (409, "MEMBERSHIP_CONFLICT"), "{message}");
    assert!(message.contains("node 7 has not caught up"), "{message}");
    let (_, cluster) = node.get("/admin/cluster").await;
    let members = cluster["data"]["members"].as_array().unwrap();
    let seven = members.iter().find(|m| m["nodeId"] == 7).expect("node 7 is listed");
    assert_eq!(seven["role"], "learner", "{cluster}");
    // The one voter still has its quorum: a linearizable read and a write go through.
    assert_eq!(node.get("/openapi/v1/centers").await.0, 200);
    assert_eq!(node.post("/openapi/v1/trainjob", job_body("after")).await.0, 200);
    // A second member at the leader's own address would make it replicate to itself.
    let own = members.iter().find(|m| m["nodeId"] == 1).unwrap()["raftAddr"].clone();
    let answer = node.post("/admin/cluster/members", json!({"nodeId": 2, "raftAddr": own, "learner": true})).await;
    let (status, code, message) = refusal(&answer);
    assert_eq!((status, code), (409, "MEMBERSHIP_CONFLICT"), "{message}");
    assert_eq!(node.get("/openapi/v1/centers").await.0, 200, "consensus still runs");
    let answer = node.call("DELETE", "/admin/cluster/members/9", None).await;
    assert_eq!(refusal(&answer).0, 404, "{answer:?}");
    assert_eq!(node.call("DELETE", "/admin/cluster/members/7", None).await.0, 200);
    node.stop().await;
}

#[tokio::test]
async fn a_node_whose_consensus_engine_stopped_is_neither_live_nor_ready() {
    let node = TestNode::start().await;
    assert_eq!(node.get("/healthz").await.0, 200);
    // What a panic inside openraft leaves: an engine that never runs again.
    node.raft().shutdown().await.unwrap();
    for path in ["/healthz", "/readyz"] {
        let answer = node.get(path).await;
        let (status, code, message) = refusal(&answer);
        assert_eq!((status, code), (500, "INTERNAL"), "{path}: {message}");
        assert!(message.starts_with("the consensus engine stopped"), "{path}: {message}");
    }
}

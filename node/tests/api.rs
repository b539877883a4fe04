//! The REST API end to end against a real one-member node (RocksDB on a temp dir, Raft,
//! axum on loopback): Appendix A, the catalog, idempotency, bad input, operator endpoints.

mod common;

use common::{job_body, TestNode};
use serde_json::{json, Value};

async fn snapshot_state(node: &TestNode) -> Vec<Value> {
    let mut state = Vec::new();
    for path in [
        "/openapi/v1/trainjob",
        "/openapi/v1/centers",
        "/openapi/v1/resourcespecs",
        "/openapi/v1/images",
        "/openapi/v1/datasets",
    ] {
        let (status, body) = node.get(&format!("{path}?pageSize=1000")).await;
        assert_eq!(status, 200, "{body}");
        state.push(body["data"].clone());
    }
    state
}

#[tokio::test]
async fn a1_to_a4_follow_the_standard() {
    let node = TestNode::start().await;
    let (status, created) = node.post("/openapi/v1/trainjob", job_body("resnet")).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(
        (created["status"].clone(), created["code"].clone(), created["errorMsg"].clone()),
        (json!(200), json!("OK"), json!(""))
    );
    let job_id = created["data"]["jobId"].as_str().unwrap().to_string();
    // The demo catalog has room: A.1 waits for the scheduling cycle and returns the placement.
    let placed = created["data"]["taskInfos"][0]["centerIDs"].clone();
    assert_eq!(placed.as_array().map(Vec::len), Some(2), "{created}");

    let (status, info) = node.get(&format!("/openapi/v1/trainjob/{job_id}")).await;
    assert_eq!(status, 200);
    let data = &info["data"];
    assert_eq!(data["jobId"], job_id.as_str());
    assert_eq!(data["name"], "resnet");
    // Pending while its replicas are being submitted, running once the center says so.
    assert!(data["status"] == "pending" || data["status"] == "running", "{data}");
    let task = &data["taskInfos"][0];
    assert_eq!(task["command"], "sleep 60");
    assert_eq!(task["imageId"], "pytorch-hunan-univ");
    assert_eq!(task["resourceSpecId"], "gpu-1x");
    assert_eq!(task["replicaNumber"], 2);
    for state in task["replicaStatus"].as_array().unwrap() {
        assert!(state == "pending" || state == "running", "{task}");
    }
    assert_eq!(task["centerIDs"], placed);

    // A.4: once the replica is on its center, a logUrl on jcs that streams its log.
    let log_path = format!("/openapi/v1/trainjob/{job_id}/task/0/replica/1/log");
    node.wait_for("log available", || async { node.get(&log_path).await.0 == 200 }).await;
    let (_, log) = node.get(&log_path).await;
    let url = log["data"]["logUrl"].as_str().unwrap();
    assert!(url.starts_with("http://") && url.ends_with(&format!("/openapi/v1/logs/{job_id}/0/1")), "{log}");
    let text = node.client.get(url).send().await.unwrap().text().await.unwrap();
    assert!(!text.is_empty(), "the replica's log streams from its center");
    // A job that never runs has no log yet.
    let mut strict = job_body("never");
    strict["securityGrade"] = json!(9);
    let (_, never) = node.post("/openapi/v1/trainjob", strict).await;
    let never = never["data"]["jobId"].as_str().unwrap();
    let (status, log) = node.get(&format!("/openapi/v1/trainjob/{never}/task/0/replica/0/log")).await;
    assert_eq!((status, log["code"].as_str()), (404, Some("LOG_NOT_AVAILABLE")), "{log}");
    let (status, log) = node.get(&format!("/openapi/v1/trainjob/{job_id}/task/0/replica/2/log")).await;
    assert_eq!((status, log["code"].as_str()), (404, Some("NOT_FOUND")), "{log}");

    let (status, stopped) = node.post(&format!("/openapi/v1/trainjob/{job_id}/stop"), json!({})).await;
    assert_eq!(status, 200, "{stopped}");
    let (_, info) = node.get(&format!("/openapi/v1/trainjob/{job_id}")).await;
    assert_eq!(info["data"]["status"], "failed");
    assert_eq!(info["data"]["statusReason"], "stopped by user");
    let (status, again) = node.post(&format!("/openapi/v1/trainjob/{job_id}/stop"), json!({})).await;
    assert_eq!(status, 200, "stop is idempotent: {again}");
    let (status, missing) = node.post("/openapi/v1/trainjob/job-999/stop", json!({})).await;
    assert_eq!((status, missing["code"].as_str()), (404, Some("NOT_FOUND")));
    node.stop().await;
}

#[tokio::test]
async fn listing_pages_and_filters_jobs() {
    let node = TestNode::start().await;
    for i in 0..5 {
        let mut body = job_body(&format!("j{i}"));
        body["userName"] = json!(if i % 2 == 0 { "alice" } else { "bob" });
        // No center is this secure: the jobs stay pending, whatever the timing.
        body["securityGrade"] = json!(9);
        assert_eq!(node.post("/openapi/v1/trainjob", body).await.0, 200);
    }
    let (_, page) = node.get("/openapi/v1/trainjob?page=2&pageSize=2").await;
    assert_eq!(page["data"]["total"], 5);
    let names: Vec<_> = page["data"]["items"].as_array().unwrap().iter().map(|j| j["name"].clone()).collect();
    assert_eq!(names, vec![json!("j2"), json!("j3")]);
    let (_, alice) = node.get("/openapi/v1/trainjob?user=alice&status=pending").await;
    assert_eq!(alice["data"]["total"], 3);
    let (_, failed) = node.get("/openapi/v1/trainjob?status=failed").await;
    assert_eq!(failed["data"]["total"], 0);
    let (status, stale) = node.get("/openapi/v1/trainjob?consistency=stale").await;
    assert_eq!((status, stale["data"]["total"].clone()), (200, json!(5)));
    node.stop().await;
}

#[tokio::test]
async fn idempotency_key_makes_retries_safe() {
    let node = TestNode::start().await;
    let submit = |body: Value| {
        node.client.post(node.url("/openapi/v1/trainjob")).header("Idempotency-Key", "retry-1").json(&body).send()
    };
    let first: Value = submit(job_body("a")).await.unwrap().json().await.unwrap();
    let second: Value = submit(job_body("a")).await.unwrap().json().await.unwrap();
    assert_eq!(first["data"]["jobId"], second["data"]["jobId"]);
    let (_, list) = node.get("/openapi/v1/trainjob").await;
    assert_eq!(list["data"]["total"], 1, "a retry creates nothing");
    let reused = submit(job_body("b")).await.unwrap();
    assert_eq!(reused.status(), 409);
    let reused: Value = reused.json().await.unwrap();
    assert_eq!(reused["code"], "IDEMPOTENCY_KEY_REUSED");
    node.stop().await;
}

#[tokio::test]
async fn catalog_crud_and_references() {
    let node = TestNode::start().await;
    let center = json!({"ai_center_id": "wuhan-1", "name": "Wuhan AI", "region": "hubei", "geometry": [114.3, 30.6]});
    let (status, created) = node.post("/openapi/v1/centers", center.clone()).await;
    assert_eq!(status, 200, "{created}");
    assert!(created["data"]["created_at"].as_i64().unwrap() > 0);
    assert_eq!(node.post("/openapi/v1/centers", center.clone()).await.1["code"], "ALREADY_EXISTS");

    let mut renamed = center.clone();
    renamed["name"] = json!("Wuhan AI Center");
    let (status, replaced) = node.call("PUT", "/openapi/v1/centers/wuhan-1", Some(renamed)).await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["data"]["created_at"], created["data"]["created_at"]);
    let (_, got) = node.get("/openapi/v1/centers/wuhan-1").await;
    assert_eq!(got["data"]["name"], "Wuhan AI Center");

    let image = json!({"image_id": "img-wuhan", "name": "pytorch", "ai_center_id": "nowhere"});
    let (status, refused) = node.post("/openapi/v1/images", image.clone()).await;
    assert_eq!((status, refused["code"].as_str()), (422, Some("UNKNOWN_REFERENCE")), "{refused}");
    assert!(refused["errorMsg"].as_str().unwrap().contains("ai_center_id"), "{refused}");
    let mut image = image;
    image["ai_center_id"] = json!("wuhan-1");
    assert_eq!(node.post("/openapi/v1/images", image).await.0, 200);

    let (status, busy) = node.call("DELETE", "/openapi/v1/centers/wuhan-1", None).await;
    assert_eq!((status, busy["code"].as_str()), (409, Some("STILL_REFERENCED")), "{busy}");
    assert_eq!(node.call("DELETE", "/openapi/v1/images/img-wuhan", None).await.0, 200);
    assert_eq!(node.call("DELETE", "/openapi/v1/centers/wuhan-1", None).await.0, 200);
    assert_eq!(node.get("/openapi/v1/centers/wuhan-1").await.0, 404);

    let metrics = json!({"cpu_free": 10, "gpu_free": 2, "running_task_num": 1,
        "node_free": [{"count": 2, "cpu_free": 5, "gpu_free": 1}]});
    let (status, reported) = node.call("PUT", "/openapi/v1/centers/hangzhou-a/metrics", Some(metrics)).await;
    assert_eq!(status, 200, "{reported}");
    let (_, read) = node.get("/openapi/v1/centers/hangzhou-a/metrics").await;
    assert_eq!(read["data"]["gpu_free"], 2);
    assert_eq!(
        read["data"]["node_free"],
        json!([{"count": 2, "cpu_free": 5, "gpu_free": 1, "npu_free": 0, "mlu_free": 0, "memory_free": 0}])
    );

    let (_, specs) = node.get("/openapi/v1/resourcespecs").await;
    assert_eq!(specs["data"]["total"], 4);
    let (_, dataset) = node.get("/openapi/v1/datasets/imagenet@2012").await;
    assert_eq!(dataset["data"]["location"].as_array().unwrap().len(), 2);
    node.stop().await;
}

/// Every kind of bad input: a 4xx envelope with a precise message, and no state change.
#[tokio::test]
async fn bad_input_is_refused_precisely_and_changes_nothing() {
    let node = TestNode::start().await;
    let before = snapshot_state(&node).await;
    let with_task = |field: &str, value: Value| {
        let mut body = job_body("bad");
        body["tasks"][0][field] = value;
        body
    };
    let mut no_name = job_body("x");
    no_name.as_object_mut().unwrap().remove("name");
    let mut null_name = job_body("x");
    null_name["name"] = Value::Null;
    let mut unknown_field = job_body("x");
    unknown_field["tasks"][0]["replicaNumbr"] = json!(1);
    let mut long_region = job_body("x");
    long_region["userRegion"] = json!("r".repeat(64));
    // (method, path, content type, raw body, status, code, errorMsg contains)
    let cases: Vec<(&str, &str, &str, String, u16, &str, &str)> = vec![
        ("POST", "/openapi/v1/trainjob", "application/json", "{not json".into(), 400, "MALFORMED_REQUEST", "body:"),
        ("POST", "/openapi/v1/trainjob", "text/plain", job_body("x").to_string(), 415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type"),
        ("POST", "/openapi/v1/trainjob", "application/json", no_name.to_string(), 400, "MALFORMED_REQUEST", "missing field `name`"),
        ("POST", "/openapi/v1/trainjob", "application/json", null_name.to_string(), 400, "MALFORMED_REQUEST", "name: invalid type: null"),
        ("POST", "/openapi/v1/trainjob", "application/json", job_body(&"n".repeat(33)).to_string(), 400, "INVALID_ARGUMENT", "name: is 33 characters"),
        ("POST", "/openapi/v1/trainjob", "application/json", long_region.to_string(), 400, "INVALID_ARGUMENT", "userRegion: is 64 characters"),
        ("POST", "/openapi/v1/trainjob", "application/json", with_task("replicaNumber", json!(0)).to_string(), 400, "INVALID_ARGUMENT", "tasks[0].replicaNumber"),
        ("POST", "/openapi/v1/trainjob", "application/json", with_task("replicaNumber", json!(10_000_000)).to_string(), 400, "INVALID_ARGUMENT", "tasks[0].replicaNumber"),
        ("POST", "/openapi/v1/trainjob", "application/json", with_task("replicaNumber", json!("two")).to_string(), 400, "MALFORMED_REQUEST", "tasks[0].replicaNumber: invalid type"),
        ("POST", "/openapi/v1/trainjob", "application/json", with_task("imageId", json!("i".repeat(64))).to_string(), 400, "INVALID_ARGUMENT", "tasks[0].imageId: is 64"),
        ("POST", "/openapi/v1/trainjob", "application/json", with_task("imageId", json!("no-such-image")).to_string(), 422, "UNKNOWN_REFERENCE", "tasks[0].imageId: image 'no-such-image'"),
        ("POST", "/openapi/v1/trainjob", "application/json", with_task("resourceSpecId", json!("no-such-spec")).to_string(), 422, "UNKNOWN_REFERENCE", "tasks[0].resourceSpecId"),
        ("POST", "/openapi/v1/trainjob", "application/json", with_task("resourceSpecId", json!("npu-8x")).to_string(), 400, "INVALID_ARGUMENT", "does not fit spec"),
        ("POST", "/openapi/v1/trainjob", "application/json", unknown_field.to_string(), 400, "MALFORMED_REQUEST", "replicaNumbr"),
        ("POST", "/openapi/v1/trainjob", "application/json", json!({"name": "x", "tasks": []}).to_string(), 400, "INVALID_ARGUMENT", "tasks: must contain"),
        ("POST", "/openapi/v1/trainjob", "application/json", format!("{{\"name\":\"{}\"}}", "x".repeat(100_000)), 413, "PAYLOAD_TOO_LARGE", "max_body_bytes"),
        ("POST", "/openapi/v1/trainjob", "application/json", "[1,2]".into(), 400, "MALFORMED_REQUEST", "invalid type: integer"),
        ("GET", "/openapi/v1/trainjob?status=bogus", "", String::new(), 400, "INVALID_ARGUMENT", "status: 'bogus'"),
        ("GET", "/openapi/v1/trainjob?pageSize=0", "", String::new(), 400, "INVALID_ARGUMENT", "pageSize"),
        ("GET", "/openapi/v1/trainjob?page=abc", "", String::new(), 400, "INVALID_ARGUMENT", "query:"),
        ("GET", "/openapi/v1/trainjob?consistency=eventual", "", String::new(), 400, "INVALID_ARGUMENT", "consistency"),
        ("GET", "/openapi/v1/trainjob/..%2F..%2Fetc", "", String::new(), 400, "INVALID_ARGUMENT", "id:"),
        ("GET", "/openapi/v1/trainjob/job-1/task/x/replica/0/log", "", String::new(), 400, "INVALID_ARGUMENT", "taskIndex"),
        ("GET", "/openapi/v1/nothing-here", "", String::new(), 404, "ROUTE_NOT_FOUND", "/openapi/v1/nothing-here"),
        ("DELETE", "/openapi/v1/trainjob", "", String::new(), 405, "METHOD_NOT_ALLOWED", "DELETE"),
        ("POST", "/openapi/v1/centers", "application/json", json!({"ai_center_id": "a/b", "name": "n", "region": "r"}).to_string(), 400, "INVALID_ARGUMENT", "ai_center_id"),
        ("POST", "/openapi/v1/resourcespecs", "application/json", json!({"resource_spec_id": "s", "resource_spec_name": "s", "resource_quantity": {"memory": "lots"}, "computing_center_list": "hunan-univ"}).to_string(), 400, "INVALID_ARGUMENT", "resource_quantity.memory"),
        ("POST", "/openapi/v1/resourcespecs", "application/json", json!({"resource_spec_id": "s", "resource_spec_name": "s", "resource_quantity": {"cpu": "1"}, "computing_center_list": "mars"}).to_string(), 422, "UNKNOWN_REFERENCE", "computing_center_list"),
        ("PUT", "/openapi/v1/centers/hunan-univ", "application/json", json!({"ai_center_id": "other", "name": "n", "region": "r"}).to_string(), 400, "INVALID_ARGUMENT", "path names 'hunan-univ'"),
        ("PUT", "/openapi/v1/centers/nope/metrics", "application/json", json!({"cpu_free": -1}).to_string(), 400, "INVALID_ARGUMENT", "cpu_free"),
        ("PUT", "/openapi/v1/centers/nope/metrics", "application/json", json!({"cpu_free": 1}).to_string(), 404, "NOT_FOUND", "center 'nope'"),
        ("PUT", "/openapi/v1/centers/hunan-univ/metrics", "application/json", json!({"node_free": [{"count": 0}]}).to_string(), 400, "INVALID_ARGUMENT", "node_free[0].count: is 0"),
        ("DELETE", "/openapi/v1/resourcespecs/gpu-1x", "", String::new(), 409, "STILL_REFERENCED", "gpu-1x"),
        ("DELETE", "/openapi/v1/images/ghost", "", String::new(), 404, "NOT_FOUND", "image 'ghost'"),
    ];
    for (method, path, content_type, body, status, code, message) in cases {
        let mut request = node.client.request(method.parse().unwrap(), node.url(path));
        if !content_type.is_empty() {
            request = request.header("content-type", content_type).body(body.clone());
        }
        let response = request.send().await.unwrap();
        let got_status = response.status().as_u16();
        let envelope: Value = response.json().await.unwrap_or_else(|e| panic!("{method} {path}: not an envelope: {e}"));
        let case = format!("{method} {path} {}", &body.chars().take(80).collect::<String>());
        assert_eq!(got_status, status, "{case}: {envelope}");
        assert_eq!(envelope["status"], status, "{case}: {envelope}");
        assert_eq!(envelope["code"], code, "{case}: {envelope}");
        let error_msg = envelope["errorMsg"].as_str().unwrap();
        assert!(error_msg.contains(message), "{case}: {error_msg:?} should mention {message:?}");
        assert!(error_msg.chars().count() <= 128, "{case}: errorMsg too long");
        assert!(envelope["data"].is_null(), "{case}");
    }
    let long_key = node
        .client
        .post(node.url("/openapi/v1/trainjob"))
        .header("Idempotency-Key", "k".repeat(200))
        .json(&job_body("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(long_key.status(), 400);
    let two_keys = node
        .client
        .post(node.url("/openapi/v1/trainjob"))
        .header("Idempotency-Key", "first")
        .header("Idempotency-Key", "second")
        .json(&job_body("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(two_keys.status(), 400);
    let refused: Value = two_keys.json().await.unwrap();
    assert_eq!(refused["errorMsg"], "Idempotency-Key: is given more than once", "{refused}");
    assert_eq!(snapshot_state(&node).await, before, "refused input must not change state");
    node.stop().await;
}

#[tokio::test]
async fn openapi_lists_every_route_and_ops_endpoints_answer() {
    let node = TestNode::start().await;
    let spec: Value = node.client.get(node.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let paths = spec["paths"].as_object().unwrap();
    let expected = [
        ("post", "/openapi/v1/trainjob"),
        ("get", "/openapi/v1/trainjob"),
        ("get", "/openapi/v1/trainjob/{id}"),
        ("post", "/openapi/v1/trainjob/{jobId}/stop"),
        ("get", "/openapi/v1/trainjob/{id}/task/{taskIndex}/replica/{replicaIndex}/log"),
        ("post", "/openapi/v1/centers"),
        ("get", "/openapi/v1/centers"),
        ("get", "/openapi/v1/centers/{id}"),
        ("put", "/openapi/v1/centers/{id}"),
        ("delete", "/openapi/v1/centers/{id}"),
        ("put", "/openapi/v1/centers/{id}/metrics"),
        ("get", "/openapi/v1/centers/{id}/metrics"),
        ("post", "/openapi/v1/resourcespecs"),
        ("get", "/openapi/v1/resourcespecs/{id}"),
        ("post", "/openapi/v1/images"),
        ("delete", "/openapi/v1/images/{id}"),
        ("post", "/openapi/v1/datasets"),
        ("put", "/openapi/v1/datasets/{id}"),
        ("get", "/scheduler/algorithms"),
        ("get", "/scheduler/algorithm/{algorithmId}/score/{centerId}"),
        ("get", "/scheduler/evaluate/score/{centerId}"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
    ];
    for (method, path) in expected {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} missing from /openapi.json");
    }
    // And the other way round: every documented operation is served (never ROUTE_NOT_FOUND).
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            let concrete = path
                .replace("{id}", "x")
                .replace("{jobId}", "x")
                .replace("{taskIndex}", "0")
                .replace("{replicaIndex}", "0")
                .replace("{algorithmId}", "x")
                .replace("{centerId}", "x");
            let response =
                node.client.request(method.to_uppercase().parse().unwrap(), node.url(&concrete)).send().await.unwrap();
            assert_ne!(response.status().as_u16(), 405, "{method} {path}");
            if response.headers().get("content-type").is_some_and(|c| c.to_str().unwrap().contains("json")) {
                let envelope: Value = response.json().await.unwrap();
                assert_ne!(envelope["code"], "ROUTE_NOT_FOUND", "{method} {path}");
            }
        }
    }
    assert_eq!(node.get("/healthz").await.0, 200);
    let (status, ready) = node.get("/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(ready["data"]["leader"], 1);
    let metrics = node.client.get(node.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("jcs_http_requests_total"), "{metrics}");
    assert!(metrics.contains("jcs_raft_term"), "{metrics}");
    node.stop().await;
}

#[tokio::test]
async fn a_restarted_node_keeps_everything() {
    let node = TestNode::start().await;
    let (_, created) = node.post("/openapi/v1/trainjob", job_body("persist")).await;
    let job_id = created["data"]["jobId"].as_str().unwrap().to_string();
    // Compare once the job's replicas run: a restart must change nothing from there.
    node.wait_for("replicas running", || async {
        let (_, info) = node.get(&format!("/openapi/v1/trainjob/{job_id}")).await;
        info["data"]["taskInfos"][0]["replicaStatus"] == json!(["running", "running"])
    })
    .await;
    let before = snapshot_state(&node).await;
    let dir = node.stop().await;
    let config = common::test_config(dir.path());
    let node = TestNode::start_with(config, dir).await;
    assert_eq!(snapshot_state(&node).await, before);
    let (status, info) = node.get(&format!("/openapi/v1/trainjob/{job_id}")).await;
    assert_eq!((status, info["data"]["name"].as_str()), (200, Some("persist")));
    node.stop().await;
}

#[tokio::test]
async fn a5_and_a6_score_centers_from_the_replicated_state() {
    let node = TestNode::start().await;
    let (_, algorithms) = node.get("/scheduler/algorithms").await;
    assert_eq!(algorithms["data"].as_array().unwrap().len(), 9, "{algorithms}");

    // gpu-1x costs 18 at hangzhou-a and 20 at hunan-univ (demo catalog).
    let (status, cheap) = node.get("/scheduler/algorithm/lowest_price/score/hangzhou-a?resourceSpecId=gpu-1x").await;
    assert_eq!((status, cheap["data"]["score"].clone()), (200, json!(100)), "{cheap}");
    let (_, dear) = node.get("/scheduler/algorithm/lowest_price/score/hunan-univ?resourceSpecId=gpu-1x").await;
    // jobId scores the job's demand: its first task asks for gpu-1x.
    let (_, created) = node.post("/openapi/v1/trainjob", job_body("scored")).await;
    let job_id = created["data"]["jobId"].as_str().unwrap().to_string();
    let (status, by_job) =
        node.get(&format!("/scheduler/algorithm/lowest_price/score/hangzhou-a?jobId={job_id}")).await;
    assert_eq!((status, by_job["data"]["score"].clone()), (200, json!(100)), "{by_job}");
    let both = format!("/scheduler/algorithm/lowest_price/score/hangzhou-a?jobId={job_id}&resourceSpecId=gpu-1x");
    assert_eq!(node.get(&both).await.0, 400);
    assert_eq!(dear["data"]["score"], 0);
    // Without a spec, every center is a candidate: hangzhou-a has the highest grade (4), hunan-telecom the lowest (2).
    let (_, secure) = node.get("/scheduler/algorithm/highest_security/score/hangzhou-a").await;
    assert_eq!(secure["data"]["score"], 100);
    let (_, lax) = node.get("/scheduler/algorithm/highest_security/score/hunan-telecom").await;
    assert_eq!(lax["data"]["score"], 0);
    // userRegion judges the network path from there (the demo links hunan and zhejiang).
    let network = |center: &str, region: &str| {
        let query = if region.is_empty() { String::new() } else { format!("?userRegion={region}") };
        format!("/scheduler/algorithm/network_quality/score/{center}{query}")
    };
    let mut scores = Vec::new();
    for region in ["zhejiang", "hunan", ""] {
        let (status, score) = node.get(&network("hangzhou-a", region)).await;
        assert_eq!(status, 200, "{score}");
        scores.push(score["data"]["score"].as_u64().unwrap());
    }
    assert_eq!(scores[..2], [100, 0], "hangzhou-a is best from its own region, worst across the link");
    assert!(scores[2] > 0 && scores[2] < 100, "without a region, by uplinks alone: {}", scores[2]);
    let (status, bad) = node.get(&network("hangzhou-a", &"r".repeat(64))).await;
    assert_eq!(
        (status, bad["errorMsg"].as_str()),
        (400, Some("userRegion: is 64 characters, at most 63 allowed")),
        "{bad}"
    );

    let refusals = [
        ("/scheduler/algorithm/coin_flip/score/hangzhou-a", 404, "NOT_FOUND"),
        ("/scheduler/algorithm/lowest_price/score/nowhere", 404, "NOT_FOUND"),
        ("/scheduler/algorithm/lowest_price/score/hangzhou-b?resourceSpecId=gpu-1x", 400, "INVALID_ARGUMENT"),
        ("/scheduler/algorithm/lowest_price/score/hangzhou-a?resourceSpecId=ghost", 422, "UNKNOWN_REFERENCE"),
        (
            "/scheduler/evaluate/score/hangzhou-a?algorithmIds=least_workload&algorithmScores=1,2",
            400,
            "INVALID_ARGUMENT",
        ),
        ("/scheduler/evaluate/score/hangzhou-a?algorithmIds=coin_flip&algorithmScores=1", 400, "INVALID_ARGUMENT"),
        (
            "/scheduler/evaluate/score/hangzhou-a?algorithmIds=least_workload&algorithmScores=101",
            400,
            "INVALID_ARGUMENT",
        ),
        ("/scheduler/evaluate/score/hangzhou-a?algorithmIds=least_workload&algorithmScores=x", 400, "INVALID_ARGUMENT"),
        ("/scheduler/evaluate/score/hangzhou-a", 400, "INVALID_ARGUMENT"),
        ("/scheduler/evaluate/score/hangzhou-a?algorithmIds=&algorithmScores=", 400, "INVALID_ARGUMENT"),
        (
            "/scheduler/evaluate/score/hangzhou-a?algorithmIds=lowest_price,lowest_price&algorithmScores=1,2",
            400,
            "INVALID_ARGUMENT",
        ),
        ("/scheduler/evaluate/score/nowhere?algorithmIds=least_workload&algorithmScores=1", 404, "NOT_FOUND"),
    ];
    for (path, status, code) in refusals {
        let (got, body) = node.get(path).await;
        assert_eq!((got, body["code"].as_str()), (status, Some(code)), "{path}: {body}");
    }

    // Default weights: least_workload 20, lowest_price 10 → (80·20 + 20·10) / 30 = 60.
    let (status, combined) = node
        .get("/scheduler/evaluate/score/hangzhou-a?algorithmIds=least_workload,lowest_price&algorithmScores=80,20")
        .await;
    assert_eq!((status, combined["data"]["score"].clone()), (200, json!(60)), "{combined}");
    node.stop().await;
}

#[tokio::test]
async fn decisions_are_explained_and_a_plan_can_be_confirmed() {
    let node = TestNode::start().await;
    // No demo center has grade 9: the job stays pending, and A.3 and explain say why.
    let mut strict = job_body("strict");
    strict["securityGrade"] = json!(9);
    let (status, created) = node.post("/openapi/v1/trainjob", strict).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["data"]["taskInfos"][0]["centerIDs"], json!([]));
    let job_id = created["data"]["jobId"].as_str().unwrap().to_string();
    let (_, info) = node.get(&format!("/openapi/v1/trainjob/{job_id}")).await;
    assert_eq!(info["data"]["status"], "pending");
    let reason = info["data"]["statusReason"].as_str().unwrap();
    assert!(reason.contains("SECURITY_GRADE_TOO_LOW"), "{reason}");
    let (status, explain) = node.get(&format!("/openapi/v1/trainjob/{job_id}/explain")).await;
    assert_eq!(status, 200, "{explain}");
    assert_eq!(explain["data"]["outcome"], "pending");
    let replica = &explain["data"]["tasks"][0]["replicas"][0];
    assert_eq!(replica["rejectedCount"]["SECURITY_GRADE_TOO_LOW"], 2, "{explain}");
    assert_eq!(replica["rejections"][0]["code"], "SECURITY_GRADE_TOO_LOW");

    // Dry-run: a plan with scores, and nothing committed.
    let (_, before) = node.get("/openapi/v1/trainjob").await;
    let mut cheap = job_body("cheap");
    cheap["policy"] = json!("price");
    let (status, plan) = node.post("/openapi/v1/trainjob/plan", cheap.clone()).await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["data"]["outcome"], "placed");
    let planned = plan["data"]["tasks"][0]["centerIDs"].clone();
    assert_eq!(planned, json!(["hangzhou-a", "hangzhou-a"]), "gpu-1x is cheapest at hangzhou-a: {plan}");
    let scores = &plan["data"]["tasks"][0]["replicas"][0]["scores"];
    assert_eq!(scores["centers"][0]["centerId"], "hangzhou-a");
    let algorithms = scores["algorithms"].as_array().unwrap();
    assert!(algorithms.iter().any(|id| id == "lowest_price"));
    for row in scores["centers"].as_array().unwrap() {
        for (column, weight) in scores["weights"].as_array().unwrap().iter().enumerate() {
            let normalized = row["normalized"][column].as_u64().unwrap();
            assert_eq!(row["weighted"][column].as_u64(), Some(normalized * weight.as_u64().unwrap()), "{row}");
        }
    }
    let (_, after) = node.get("/openapi/v1/trainjob").await;
    assert_eq!(before["data"]["total"], after["data"]["total"], "a plan commits nothing");

    // From the user's region: the demo's hunan ↔ zhejiang link (20 ms) plus hangzhou-a's own
    // 25 ms exceed a 30 ms bound; the explain record names the region.
    let mut near = job_body("near");
    near["policy"] = json!("qos");
    near["qos"] = json!({"maxLatencyMs": 30.0});
    near["userRegion"] = json!("hunan");
    let (status, plan) = node.post("/openapi/v1/trainjob/plan", near).await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["data"]["userRegion"], "hunan", "{plan}");
    let rejections = plan["data"]["tasks"][0]["replicas"][0]["rejections"].as_array().unwrap();
    let far = rejections.iter().find(|r| r["centerId"] == "hangzhou-a").expect("hangzhou-a is too far");
    assert_eq!(
        (far["code"].as_str(), far["detail"].as_str()),
        (Some("QOS_LATENCY"), Some("latency 45 ms from region hunan > 30 ms"))
    );

    // Confirm: submit with the plan's centers pinned.
    cheap["tasks"][0]["centerIDs"] = planned.clone();
    let (status, confirmed) = node.post("/openapi/v1/trainjob", cheap).await;
    assert_eq!(status, 200, "{confirmed}");
    assert_eq!(confirmed["data"]["taskInfos"][0]["centerIDs"], planned);

    // Unknown references and weights in the extension fields are client errors.
    let mut bad = job_body("bad");
    bad["weights"] = json!({"fastest": 3});
    let (status, body) = node.post("/openapi/v1/trainjob/plan", bad).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("INVALID_ARGUMENT")), "{body}");
    let mut bad = job_body("bad");
    bad["tasks"][0]["centerIDs"] = json!(["atlantis"]);
    let (status, body) = node.post("/openapi/v1/trainjob", bad).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("UNKNOWN_REFERENCE")), "{body}");
    let (status, body) = node.get("/openapi/v1/trainjob/job-999999999999/explain").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("NOT_FOUND")), "{body}");
    node.stop().await;
}

/// Every parameter the document declares `in: path` names a `{segment}` of its path, and the
/// query options are declared `in: query`: a client generated from the document can call
/// every operation (A.6 included).
#[tokio::test]
async fn openapi_declares_query_parameters_in_the_query() {
    let node = TestNode::start().await;
    let spec: Value = node.client.get(node.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let mut query_names = std::collections::BTreeSet::new();
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let name = parameter["name"].as_str().unwrap();
                match parameter["in"].as_str().unwrap() {
                    "path" => {
                        assert!(path.contains(&format!("{{{name}}}")), "{method} {path}: '{name}' is no path segment")
                    }
                    "query" => {
                        query_names.insert(name.to_string());
                    }
                    _ => {}
                }
            }
        }
    }
    for name in [
        "page",
        "pageSize",
        "consistency",
        "status",
        "user",
        "follow",
        "centerId",
        "kind",
        "jobId",
        "resourceSpecId",
        "userRegion",
        "algorithmIds",
        "algorithmScores",
    ] {
        assert!(query_names.contains(name), "'{name}' is not declared as a query parameter: {query_names:?}");
    }
}

//! The `jcs` command-line client end to end: the real binary against a real in-process node,
//! driven with the files in `examples/`, plus a smoke run of `jcs bench submit`.

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::TestNode;
use serde_json::Value;

fn example(name: &str) -> String {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "examples", name].iter().collect();
    path.to_str().unwrap().to_string()
}

/// Runs `jcs ARGS --server SERVER` without blocking the runtime the node serves on.
async fn jcs(server: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_jcs"))
        .args(args)
        .args(["--server", server])
        .env_remove("JCS_SERVER")
        .output()
        .await
        .expect("jcs runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a command that must succeed and returns its stdout.
async fn ok(node: &TestNode, args: &[&str]) -> String {
    let out = jcs(&node.base, args).await;
    assert!(out.status.success(), "jcs {args:?} failed:\n{}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// Runs a command with `--output json` that must succeed and returns the parsed output.
async fn json(node: &TestNode, args: &[&str]) -> Value {
    let stdout = ok(node, &[args, &["--output", "json"]].concat()).await;
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("jcs {args:?} printed no JSON ({e}):\n{stdout}"))
}

/// Runs a command that must fail and returns its stderr.
async fn fails(server: &str, args: &[&str]) -> String {
    let out = jcs(server, args).await;
    assert!(!out.status.success(), "jcs {args:?} should fail:\n{}", text(&out.stdout));
    text(&out.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_and_job_commands_work_against_a_node() {
    let node = TestNode::start().await;

    let created = [
        ("center", "center.yaml", "wuhan-ai", "ai_center_id"),
        ("spec", "spec.yaml", "gpu-4x", "resource_spec_id"),
        ("image", "image.yaml", "pytorch-wuhan-ai", "image_id"),
        ("dataset", "dataset.yaml", "coco@2017", "data_name"),
    ];
    for (kind, file, id, _) in created {
        let stdout = ok(&node, &[kind, "create", "-f", &example(file)]).await;
        assert!(stdout.contains(&format!("{kind} {id} created")), "{stdout}");
    }
    for (kind, _, id, id_field) in created {
        let listing = ok(&node, &[kind, "ls"]).await;
        assert!(listing.contains(id), "{kind} ls misses {id}:\n{listing}");
        let object = json(&node, &[kind, "get", id]).await;
        assert_eq!(object[id_field], id.split('@').next().unwrap(), "{object}");
        assert!(object["created_at"].as_i64().unwrap() > 0, "{object}");
        let table = ok(&node, &[kind, "get", id]).await;
        assert!(table.contains("FIELD") && table.contains(id.split('@').next().unwrap()), "{table}");
    }
    let listing = ok(&node, &["center", "ls"]).await;
    for column in ["ID", "NAME", "REGION", "STATUS", "ADAPTER", "hubei", "available", "sim"] {
        assert!(listing.contains(column), "{column} missing:\n{listing}");
    }
    let page = json(&node, &["center", "ls", "--page", "2", "--page-size", "2"]).await;
    assert_eq!((page["total"].as_u64(), page["items"].as_array().unwrap().len()), (Some(5), 2), "{page}");
    let updated = ok(&node, &["center", "update", "-f", &example("center.yaml")]).await;
    assert!(updated.contains("center wuhan-ai updated"), "{updated}");
    let again = fails(&node.base, &["center", "create", "-f", &example("center.yaml")]).await;
    assert!(again.starts_with("error: ALREADY_EXISTS (HTTP 409): "), "{again}");

    let submitted = ok(&node, &["job", "submit", "-f", &example("job.yaml")]).await;
    assert!(submitted.starts_with("job ") && submitted.contains(" submitted"), "{submitted}");
    let created = json(&node, &["job", "submit", "-f", &example("job.yaml"), "--idempotency-key", "cli-test-1"]).await;
    let job_id = created["jobId"].as_str().expect("a job id").to_string();
    assert!(!submitted.contains(&job_id), "a fresh key per command makes a new job");
    let retried = json(&node, &["job", "submit", "-f", &example("job.yaml"), "--idempotency-key", "cli-test-1"]).await;
    assert_eq!(retried["jobId"], job_id.as_str(), "the same key returns the same job");

    let shown = ok(&node, &["job", "get", &job_id]).await;
    for expected in [job_id.as_str(), "resnet50-imagenet", "pytorch-hunan-univ", "REPLICA STATUS"] {
        assert!(shown.contains(expected), "{expected} missing:\n{shown}");
    }
    // Pending until the center runs it, then running: the listing filters by user only.
    assert!(shown.contains("pending") || shown.contains("running"), "{shown}");
    let listed = ok(&node, &["job", "ls", "--user", "alice"]).await;
    for column in ["JOB ID", "NAME", "USER", "STATUS", "TASKS", "CENTERS", job_id.as_str(), "page 1 of 1, 2 in total"] {
        assert!(listed.contains(column), "{column} missing:\n{listed}");
    }
    let explained = ok(&node, &["job", "explain", &job_id]).await;
    for expected in ["policy balanced", "task ", "replica 0: winner", "CENTER", "TOTAL", "least_workload (w20)"] {
        assert!(explained.contains(expected), "{expected} missing:\n{explained}");
    }
    let plan = json(&node, &["job", "plan", "-f", &example("job.yaml")]).await;
    assert_eq!(plan["outcome"], "placed", "{plan}");
    let near_data = json(&node, &["job", "plan", "-f", &example("job-data.yaml")]).await;
    let centers = near_data["tasks"][0]["centerIDs"].as_array().unwrap().clone();
    assert!(!centers.is_empty(), "{near_data}");
    for center in centers {
        assert!(center == "hunan-univ" || center == "hangzhou-a", "large data keeps the job at the data: {near_data}");
    }
    let stopped = ok(&node, &["job", "stop", &job_id]).await;
    assert!(stopped.contains(&job_id) && stopped.contains("failed"), "{stopped}");
    let info = json(&node, &["job", "get", &job_id]).await;
    assert_eq!((info["status"].as_str(), info["statusReason"].as_str()), (Some("failed"), Some("stopped by user")));
    let failed = json(&node, &["job", "ls", "--status", "failed"]).await;
    assert_eq!(failed["total"], 1, "{failed}");
    let bad_status = fails(&node.base, &["job", "ls", "--status", "sleeping"]).await;
    assert!(bad_status.starts_with("error: INVALID_ARGUMENT (HTTP 400): status"), "{bad_status}");

    let removed = ok(&node, &["dataset", "rm", "coco@2017"]).await;
    assert!(removed.contains("dataset coco@2017 deleted"), "{removed}");
    let referenced = fails(&node.base, &["center", "rm", "wuhan-ai"]).await;
    assert!(referenced.starts_with("error: STILL_REFERENCED (HTTP 409): "), "{referenced}");

    let missing = fails(&node.base, &["dataset", "get", "coco@2017"]).await;
    assert!(missing.starts_with("error: NOT_FOUND (HTTP 404): "), "{missing}");
    let missing = fails(&node.base, &["job", "get", "job-999999"]).await;
    assert!(missing.contains("NOT_FOUND"), "{missing}");
    let bad_file = fails(&node.base, &["center", "create", "-f", &example("job.yaml")]).await;
    assert!(bad_file.starts_with("error: invalid ") && bad_file.contains("job.yaml"), "{bad_file}");
    node.stop().await;
}

#[tokio::test]
async fn an_unreachable_server_is_reported_after_retries() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let stderr = fails(&server, &["center", "ls"]).await;
    assert!(stderr.starts_with("error: cannot reach http://127.0.0.1:"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bench_submit_reports_throughput_and_latency() {
    let node = TestNode::start().await;
    let stdout = ok(&node, &["bench", "submit", "--clients", "4", "--jobs", "50", "--warmup", "5"]).await;
    println!("{stdout}");
    for expected in
        ["submissions/s: ", "latency ms: p50 ", "errors: 0 of 50 (none)", "reproduce: jcs bench submit --server "]
    {
        assert!(stdout.contains(expected), "{expected} missing:\n{stdout}");
    }
    let report = json(&node, &["bench", "submit", "--clients", "2", "--jobs", "10"]).await;
    assert_eq!((report["succeeded"].as_u64(), report["failed"].as_u64()), (Some(10), Some(0)), "{report}");
    let (_, jobs) = node.get("/openapi/v1/trainjob?pageSize=1").await;
    assert_eq!(jobs["data"]["total"], 65, "warmup and measured jobs were all committed");
    node.stop().await;
}

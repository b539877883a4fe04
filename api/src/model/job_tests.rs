//! Tests of the Appendix A job bodies: their names, rules and conversions.

use super::*;
use serde_json::json;

fn request() -> CreateTrainJob {
    serde_json::from_value(json!({"name":"resnet","tasks":[{"name":"t0","command":"python train.py",
        "imageId":"img1","resourceSpecId":"spec1","replicaNumber":2}]}))
    .unwrap()
}

#[test]
fn a1_request_uses_the_standard_names_and_validates() {
    let req = request();
    req.validate().unwrap();
    let job = Job::from_request("job-1".into(), &req, None, 5);
    assert!(job.matches_request(&req));
    assert_eq!(job.tasks[0].replica_status(), vec![RunState::Pending; 2]);
    let resp = serde_json::to_value(CreateTrainJobResponse::from(&job)).unwrap();
    assert_eq!(resp, json!({"jobId":"job-1","taskInfos":[{"name":"t0","centerIDs":[]}]}));
    let info = serde_json::to_value(JobInfo::from(&job)).unwrap();
    assert_eq!(info["status"], "pending");
    assert_eq!(info["taskInfos"][0]["replicaStatus"], json!(["pending", "pending"]));
    assert_eq!(info["taskInfos"][0]["resourceSpecId"], "spec1");
}

#[test]
fn a1_rules() {
    type Mutation = fn(&mut CreateTrainJob);
    let cases: Vec<(Mutation, &str)> = vec![
        (|r| r.name = "x".repeat(33), "name: is 33"),
        (|r| r.tasks.clear(), "tasks: must contain"),
        (|r| r.tasks[0].replica_number = 0, "tasks[0].replicaNumber"),
        (|r| r.tasks[0].replica_number = 1_000_000, "tasks[0].replicaNumber"),
        (|r| r.tasks[0].image_id = "../x".into(), "tasks[0].imageId"),
        (|r| r.tasks[0].command = " ".into(), "tasks[0].command"),
        (|r| r.user_region = Some(" ".into()), "userRegion: is required"),
        (|r| r.user_region = Some("r".repeat(65)), "userRegion: is 65 characters"),
        (|r| r.user_region = Some("east\u{7}".into()), "userRegion: must not contain control"),
        (
            |r| {
                let t = r.tasks[0].clone();
                r.tasks.push(t)
            },
            "tasks[1].name",
        ),
    ];
    for (mutate, expected) in cases {
        let mut req = request();
        mutate(&mut req);
        let err = req.validate().unwrap_err();
        assert!(err.message.starts_with(expected), "{} vs {expected}", err.message);
    }
}

#[test]
fn a_job_is_bounded_in_replicas_over_all_its_tasks() {
    let mut req = request();
    let mut second = req.tasks[0].clone();
    second.name = "t1".into();
    second.replica_number = 3;
    req.tasks.push(second);
    req.validate_within(5).unwrap();
    let err = req.validate_within(4).unwrap_err();
    assert_eq!(err.message, "tasks[].replicaNumber: ask for 5 replicas in all, at most 4 per job allowed");
}

#[test]
fn a3_returns_created_user_and_table_9_per_replica() {
    let mut req = request();
    req.user_name = Some("alice".into());
    let job = Job::from_request("job-1".into(), &req, None, 5);
    let info = serde_json::to_value(JobInfo::from(&job)).unwrap();
    assert_eq!(info["createdUser"], "alice");
    let replica = &info["taskInfos"][0]["replicas"][1];
    assert_eq!(replica["name"], "job-1.t0.r1.a0");
    assert_eq!(replica["imageId"], "img1");
    assert_eq!(replica["resourceSpecId"], "spec1");
}

#[test]
fn catalog_length_ids_are_accepted_in_a1() {
    let mut req = request();
    req.tasks[0].image_id = "i".repeat(MAX_ID_LEN);
    req.tasks[0].resource_spec_id = "s".repeat(MAX_ID_LEN);
    req.validate().unwrap();
    req.tasks[0].image_id = "i".repeat(MAX_ID_LEN + 1);
    assert!(req.validate().unwrap_err().message.starts_with("tasks[0].imageId: is 64 characters"));
}

#[test]
fn the_user_region_is_kept_on_the_job_and_optional() {
    let options = Job::from_request("job-1".into(), &request(), None, 5).options;
    assert_eq!(options.user_region, None);
    let stored = serde_json::to_value(options).unwrap();
    assert!(stored.get("userRegion").is_none(), "a job without it is stored as before: {stored}");
    let req: CreateTrainJob =
        serde_json::from_value(json!({"name":"n","tasks":[{"name":"t0","command":"c","imageId":"i",
        "resourceSpecId":"s","replicaNumber":1}],"userRegion":"zhejiang"}))
        .unwrap();
    req.validate().unwrap();
    let job = Job::from_request("job-1".into(), &req, None, 5);
    assert_eq!(job.options.user_region.as_deref(), Some("zhejiang"));
    assert!(job.matches_request(&req));
}

#[test]
fn a_different_request_is_not_a_retry() {
    let req = request();
    let job = Job::from_request("job-1".into(), &req, Some("k".into()), 5);
    let mut other = req.clone();
    other.tasks[0].replica_number = 3;
    assert!(!job.matches_request(&other));
}

//! Deletes: refused while still referenced, otherwise removed along with metrics.

use super::*;

fn still_referenced(kind: ObjectKind, id: &str, by_kind: ObjectKind, by_id: &str) -> Refusal {
    Refusal::StillReferenced { kind, id: id.into(), by_kind, by_id: by_id.into() }
}

#[test]
fn deleting_a_center_offered_by_a_spec_is_still_referenced_by_the_spec() {
    let mut kv = catalog();
    assert_eq!(refused(&mut kv, Command::DeleteCenter { id: "c1".into() }), still_referenced(CENTER, "c1", SPEC, "s1"));
}

#[test]
fn deleting_a_center_priced_by_a_spec_is_still_referenced_by_the_spec() {
    let mut kv = catalog();
    let mut s = spec("s2", &["c1"]);
    s.center_prices.insert("c2".into(), 7);
    ok(&mut kv, put_spec(s, Create));
    assert_eq!(refused(&mut kv, Command::DeleteCenter { id: "c2".into() }), still_referenced(CENTER, "c2", SPEC, "s2"));
}

#[test]
fn deleting_a_center_holding_an_image_is_still_referenced_by_the_image() {
    let mut kv = catalog();
    ok(&mut kv, put_image(image("img2", "c2", &[]), Create));
    assert_eq!(
        refused(&mut kv, Command::DeleteCenter { id: "c2".into() }),
        still_referenced(CENTER, "c2", IMAGE, "img2")
    );
}

#[test]
fn deleting_a_center_holding_a_dataset_replica_is_still_referenced_by_the_dataset() {
    let mut kv = catalog();
    ok(&mut kv, put_dataset(dataset("imagenet", &["c2"]), Create));
    assert_eq!(
        refused(&mut kv, Command::DeleteCenter { id: "c2".into() }),
        still_referenced(CENTER, "c2", DATASET, "imagenet@v1")
    );
}

#[test]
fn deleting_a_spec_fitted_by_an_image_is_still_referenced_by_the_image() {
    let mut kv = catalog();
    assert_eq!(refused(&mut kv, Command::DeleteSpec { id: "s1".into() }), still_referenced(SPEC, "s1", IMAGE, "img1"));
}

#[test]
fn deleting_an_image_used_by_a_pending_job_is_still_referenced_by_the_job() {
    let mut kv = catalog();
    let job = submitted(&mut kv, job_request("img1", "s1", 1));
    assert_eq!(
        refused(&mut kv, Command::DeleteImage { id: "img1".into() }),
        still_referenced(IMAGE, "img1", JOB, &job.id)
    );
}

#[test]
fn deleting_a_spec_used_by_a_pending_job_is_still_referenced_by_the_job() {
    let mut kv = catalog();
    ok(&mut kv, put_spec(spec("s2", &["c1"]), Create));
    ok(&mut kv, put_image(image("img2", "c1", &[]), Create));
    let job = submitted(&mut kv, job_request("img2", "s2", 1));
    assert_eq!(refused(&mut kv, Command::DeleteSpec { id: "s2".into() }), still_referenced(SPEC, "s2", JOB, &job.id));
}

#[test]
fn a_running_job_also_holds_its_image() {
    let mut kv = catalog();
    let job = submitted(&mut kv, job_request("img1", "s1", 1));
    force_status(&mut kv, &job.id, RunState::Running);
    assert_eq!(
        refused(&mut kv, Command::DeleteImage { id: "img1".into() }),
        still_referenced(IMAGE, "img1", JOB, &job.id)
    );
}

#[test]
fn a_stopped_job_releases_its_image_and_spec() {
    let mut kv = catalog();
    ok(&mut kv, put_spec(spec("s2", &["c1"]), Create));
    ok(&mut kv, put_image(image("img2", "c1", &[]), Create));
    let job = submitted(&mut kv, job_request("img2", "s2", 2));
    ok(&mut kv, stop(&job.id));
    assert_eq!(ok(&mut kv, Command::DeleteImage { id: "img2".into() }), Outcome::Deleted);
    assert_eq!(ok(&mut kv, Command::DeleteSpec { id: "s2".into() }), Outcome::Deleted);
    assert!(!tables::exists(&kv, IMAGE, "img2").unwrap());
    assert!(!tables::exists(&kv, SPEC, "s2").unwrap());
    assert!(stored::<Job>(&kv, JOB, &job.id).is_some(), "the finished job keeps its history");
}

#[test]
fn deleting_an_unreferenced_object_removes_it() {
    let mut kv = catalog();
    ok(&mut kv, put_dataset(dataset("imagenet", &["c2"]), Create));
    for command in [
        Command::DeleteDataset { id: "imagenet@v1".into() },
        Command::DeleteCenter { id: "c2".into() },
        Command::DeleteImage { id: "img1".into() },
        Command::DeleteSpec { id: "s1".into() },
        Command::DeleteCenter { id: "c1".into() },
    ] {
        assert_eq!(ok(&mut kv, command), Outcome::Deleted);
    }
    // Nothing is left but the catalog's generation counter.
    let left: Vec<&[u8]> = kv.map.keys().map(Vec::as_slice).collect();
    assert_eq!(left, vec![tables::CATALOG_GEN_KEY]);
}

#[test]
fn deleting_a_missing_object_is_not_found() {
    let mut kv = catalog();
    let cases = [
        (Command::DeleteCenter { id: "c9".into() }, CENTER, "c9"),
        (Command::DeleteSpec { id: "s9".into() }, SPEC, "s9"),
        (Command::DeleteImage { id: "img9".into() }, IMAGE, "img9"),
        (Command::DeleteDataset { id: "mnist@v1".into() }, DATASET, "mnist@v1"),
    ];
    for (command, kind, id) in cases {
        assert_eq!(refused(&mut kv, command), Refusal::NotFound { kind, id: id.into() });
    }
}

#[test]
fn deleting_a_center_also_deletes_its_metrics() {
    let mut kv = catalog();
    ok(&mut kv, Command::ReportMetrics { center_id: "c2".into(), metrics: metrics(1) });
    ok(&mut kv, Command::ReportMetrics { center_id: "c1".into(), metrics: metrics(1) });
    ok(&mut kv, Command::DeleteCenter { id: "c2".into() });
    assert_eq!(kv.get(&tables::metrics_key("c2")).unwrap(), None);
    assert!(kv.get(&tables::metrics_key("c1")).unwrap().is_some(), "other centers keep theirs");
}

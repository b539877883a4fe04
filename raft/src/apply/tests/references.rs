//! Reference checks: objects and jobs naming unknown centers, specs or images.

use super::*;

#[test]
fn spec_offered_by_an_unknown_center_is_unknown_reference() {
    let mut kv = catalog();
    assert_eq!(
        refused(&mut kv, put_spec(spec("s2", &["c1", "c9"]), Create)),
        Refusal::UnknownReference { field: "computing_center_list".into(), kind: CENTER, id: "c9".into() }
    );
}

/// A spec's `center_prices` keys are center references too; the refusal must point at the
/// field that holds the bad id.
#[test]
fn spec_pricing_an_unknown_center_is_unknown_reference_naming_center_prices() {
    let mut kv = catalog();
    let mut s = spec("s2", &["c1"]);
    s.center_prices.insert("c9".into(), 5);
    assert_eq!(
        refused(&mut kv, put_spec(s, Create)),
        Refusal::UnknownReference { field: "center_prices".into(), kind: CENTER, id: "c9".into() }
    );
}

#[test]
fn image_at_an_unknown_center_is_unknown_reference() {
    let mut kv = catalog();
    assert_eq!(
        refused(&mut kv, put_image(image("img2", "c9", &["s1"]), Create)),
        Refusal::UnknownReference { field: "ai_center_id".into(), kind: CENTER, id: "c9".into() }
    );
}

#[test]
fn image_fitting_an_unknown_spec_is_unknown_reference() {
    let mut kv = catalog();
    assert_eq!(
        refused(&mut kv, put_image(image("img2", "c1", &["s1", "s9"]), Create)),
        Refusal::UnknownReference { field: "resource_spec".into(), kind: SPEC, id: "s9".into() }
    );
}

#[test]
fn replacing_an_image_onto_an_unknown_center_is_unknown_reference() {
    let mut kv = catalog();
    assert!(matches!(
        refused(&mut kv, put_image(image("img1", "c9", &[]), Replace)),
        Refusal::UnknownReference { kind: CENTER, .. }
    ));
}

#[test]
fn dataset_located_at_an_unknown_center_is_unknown_reference() {
    let mut kv = catalog();
    match refused(&mut kv, put_dataset(dataset("imagenet", &["c1", "c9"]), Create)) {
        Refusal::UnknownReference { field, kind: CENTER, id } => {
            assert!(field.starts_with("location"), "{field}");
            assert_eq!(id, "c9");
        }
        other => panic!("expected UnknownReference, got {other:?}"),
    }
}

#[test]
fn job_with_an_unknown_image_names_the_tasks_image_id() {
    let mut kv = catalog();
    let mut request = job_request("img1", "s1", 1);
    let mut second = request.tasks[0].clone();
    second.name = "t1".into();
    second.image_id = "img9".into();
    request.tasks.push(second);
    assert_eq!(
        refused(&mut kv, submit(request)),
        Refusal::UnknownReference { field: "tasks[1].imageId".into(), kind: IMAGE, id: "img9".into() }
    );
}

#[test]
fn job_with_an_unknown_spec_names_the_tasks_resource_spec_id() {
    let mut kv = catalog();
    assert_eq!(
        refused(&mut kv, submit(job_request("img1", "s9", 1))),
        Refusal::UnknownReference { field: "tasks[0].resourceSpecId".into(), kind: SPEC, id: "s9".into() }
    );
}

#[test]
fn job_whose_image_does_not_fit_its_spec_is_invalid() {
    let mut kv = catalog();
    ok(&mut kv, put_spec(spec("s2", &["c1"]), Create));
    match refused(&mut kv, submit(job_request("img1", "s2", 1))) {
        Refusal::Invalid(message) => assert!(message.starts_with("tasks[0].imageId: "), "{message}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn image_without_a_spec_list_fits_every_spec() {
    let mut kv = catalog();
    ok(&mut kv, put_spec(spec("s2", &["c1"]), Create));
    ok(&mut kv, put_image(image("img2", "c1", &[]), Create));
    submitted(&mut kv, job_request("img2", "s2", 1));
}

#[test]
fn refused_job_consumes_no_sequence_number() {
    let mut kv = catalog();
    refused(&mut kv, submit(job_request("img9", "s1", 1)));
    assert_eq!(job_seq(&kv), None);
    assert_eq!(submitted(&mut kv, job_request("img1", "s1", 1)).id, "job-000000000001");
}

//! Catalog writes: create and replace of every kind, timestamps, payload validation.

use super::*;

#[test]
fn creating_a_center_stamps_created_and_updated_at_with_the_proposal_time() {
    let mut kv = MemKv::default();
    let Outcome::Center(c) = ok_at(&mut kv, put_center(center("c1"), Create), T0) else { panic!() };
    assert_eq!((c.created_at, c.updated_at), (T0, T0));
    assert_eq!(stored::<Center>(&kv, CENTER, "c1"), Some(c));
}

#[test]
fn creating_a_spec_stamps_both_timestamps() {
    let mut kv = catalog();
    let Outcome::Spec(s) = ok_at(&mut kv, put_spec(spec("s2", &["c1", "c2"]), Create), T1) else { panic!() };
    assert_eq!((s.created_at, s.updated_at), (T1, T1));
    assert_eq!(stored::<ResourceSpec>(&kv, SPEC, "s2"), Some(s));
}

#[test]
fn creating_an_image_stamps_both_timestamps() {
    let mut kv = catalog();
    let Outcome::Image(i) = ok_at(&mut kv, put_image(image("img2", "c2", &[]), Create), T1) else { panic!() };
    assert_eq!((i.created_at, i.updated_at), (T1, T1));
    assert_eq!(stored::<Image>(&kv, IMAGE, "img2"), Some(i));
}

#[test]
fn creating_a_dataset_stamps_both_timestamps_and_stores_it_under_name_at_version() {
    let mut kv = catalog();
    let Outcome::Dataset(d) = ok_at(&mut kv, put_dataset(dataset("imagenet", &["c1", "c2"]), Create), T1) else {
        panic!()
    };
    assert_eq!((d.created_at, d.updated_at), (T1, T1));
    assert_eq!(stored::<Dataset>(&kv, DATASET, "imagenet@v1"), Some(d));
}

#[test]
fn client_supplied_timestamps_are_ignored() {
    let mut kv = MemKv::default();
    let c = Center { created_at: 1, updated_at: 2, ..center("c1") };
    let Outcome::Center(c) = ok_at(&mut kv, put_center(c, Create), T0) else { panic!() };
    assert_eq!((c.created_at, c.updated_at), (T0, T0));
}

#[test]
fn creating_an_existing_object_is_already_exists() {
    let mut kv = catalog();
    ok(&mut kv, put_dataset(dataset("imagenet", &["c1"]), Create));
    let cases = [
        (put_center(center("c1"), Create), CENTER, "c1"),
        (put_spec(spec("s1", &["c1"]), Create), SPEC, "s1"),
        (put_image(image("img1", "c1", &["s1"]), Create), IMAGE, "img1"),
        (put_dataset(dataset("imagenet", &["c1"]), Create), DATASET, "imagenet@v1"),
    ];
    for (command, kind, id) in cases {
        assert_eq!(refused(&mut kv, command), Refusal::AlreadyExists { kind, id: id.into() });
    }
}

#[test]
fn replacing_a_missing_object_is_not_found() {
    let mut kv = catalog();
    let cases = [
        (put_center(center("c9"), Replace), CENTER, "c9"),
        (put_spec(spec("s9", &["c1"]), Replace), SPEC, "s9"),
        (put_image(image("img9", "c1", &[]), Replace), IMAGE, "img9"),
        (put_dataset(dataset("mnist", &["c1"]), Replace), DATASET, "mnist@v1"),
    ];
    for (command, kind, id) in cases {
        assert_eq!(refused(&mut kv, command), Refusal::NotFound { kind, id: id.into() });
    }
}

#[test]
fn replacing_a_center_keeps_created_at_and_bumps_updated_at() {
    let mut kv = catalog();
    let renamed = Center { name: "renamed".into(), ..center("c1") };
    let Outcome::Center(c) = ok_at(&mut kv, put_center(renamed, Replace), T1) else { panic!() };
    assert_eq!((c.created_at, c.updated_at), (T0, T1));
    let stored = stored::<Center>(&kv, CENTER, "c1").unwrap();
    assert_eq!((stored.name.as_str(), stored.created_at, stored.updated_at), ("renamed", T0, T1));
}

#[test]
fn replacing_a_spec_image_or_dataset_keeps_created_at_and_bumps_updated_at() {
    let mut kv = catalog();
    ok(&mut kv, put_dataset(dataset("imagenet", &["c1"]), Create));
    let Outcome::Spec(s) = ok_at(&mut kv, put_spec(spec("s1", &["c1", "c2"]), Replace), T1) else { panic!() };
    assert_eq!((s.created_at, s.updated_at, s.computing_center_list.as_str()), (T0, T1, "c1,c2"));
    let Outcome::Image(i) = ok_at(&mut kv, put_image(image("img1", "c2", &[]), Replace), T1) else { panic!() };
    assert_eq!((i.created_at, i.updated_at, i.ai_center_id.as_str()), (T0, T1, "c2"));
    let Outcome::Dataset(d) = ok_at(&mut kv, put_dataset(dataset("imagenet", &["c2"]), Replace), T1) else { panic!() };
    assert_eq!((d.created_at, d.updated_at), (T0, T1));
    assert_eq!(stored::<Dataset>(&kv, DATASET, "imagenet@v1"), Some(d));
}

#[test]
fn invalid_payloads_are_refused_naming_the_field_and_change_nothing() {
    let mut kv = catalog();
    let quantity = |key: &str, value: &str| {
        let mut s = spec("s2", &["c1"]);
        s.resource_quantity.insert(key.into(), value.into());
        s
    };
    let cases: Vec<(Command, &str)> = vec![
        (put_center(center("../x"), Create), "ai_center_id"),
        (put_center(Center { name: String::new(), ..center("c3") }, Create), "name"),
        (put_center(Center { geometry: [200.0, 0.0], ..center("c3") }, Create), "geometry[0]"),
        (put_center(Center { name: String::new(), ..center("c1") }, Replace), "name"),
        (put_spec(spec("a/b", &["c1"]), Create), "resource_spec_id"),
        (put_spec(quantity("memory", "lots"), Create), "resource_quantity.memory"),
        (put_spec(quantity("cpu", "-1"), Create), "resource_quantity.cpu"),
        (put_spec(spec("s2", &["c1", "c1"]), Create), "computing_center_list"),
        (
            put_spec(ResourceSpec { resource_quantity: BTreeMap::new(), ..spec("s2", &["c1"]) }, Create),
            "resource_quantity",
        ),
        (put_image(image("img2", "../c1", &[]), Create), "ai_center_id"),
        (put_image(image("", "c1", &[]), Create), "image_id"),
        (put_dataset(dataset("../etc", &["c1"]), Create), "data_name"),
        (
            put_dataset(
                {
                    let mut d = dataset("imagenet", &["c1"]);
                    d.location[0].access = "w".into();
                    d
                },
                Create,
            ),
            "location[0].access",
        ),
        (submit(job_request("img1", "s1", 0)), "tasks[0].replicaNumber"),
        (submit(job_request("../img1", "s1", 1)), "tasks[0].imageId"),
        (submit(CreateTrainJob { tasks: vec![], ..job_request("img1", "s1", 1) }), "tasks"),
    ];
    for (command, field) in cases {
        match refused(&mut kv, command.clone()) {
            Refusal::Invalid(message) => {
                assert!(message.starts_with(&format!("{field}: ")), "{message:?} should name {field}")
            }
            other => panic!("{command:?}: expected Invalid naming {field}, got {other:?}"),
        }
    }
}

//! Tests of the catalog objects' rules and shapes.

use serde_json::json;

use super::*;

#[test]
fn an_adapter_config_is_always_an_object() {
    let center: Center =
        serde_json::from_value(serde_json::json!({"ai_center_id": "c", "name": "c", "region": "r"})).unwrap();
    assert_eq!(serde_json::to_value(&center).unwrap()["adapter"]["config"], serde_json::json!({}));
    let null: AdapterEndpoint = serde_json::from_value(serde_json::json!({"kind": "sim", "config": null})).unwrap();
    assert_eq!(null.config, serde_json::json!({}));
    let err = serde_json::from_value::<AdapterEndpoint>(serde_json::json!({"config": [1]})).unwrap_err();
    assert!(err.to_string().contains("must be an object"), "{err}");
    let stored_null = AdapterEndpoint { config: serde_json::Value::Null, ..AdapterEndpoint::default() };
    assert_eq!(serde_json::to_value(stored_null).unwrap()["config"], serde_json::json!({}));
}

#[test]
fn spec_accepts_the_standard_comma_string_and_an_array() {
    let base = json!({"resource_spec_id":"s1","resource_spec_name":"gpu-1",
        "resource_quantity":{"cpu":"8","memory":"64Gi","gpu":"1"},"price":3,
        "computing_center_list":"c1, c2"});
    let spec: ResourceSpec = serde_json::from_value(base.clone()).unwrap();
    assert_eq!(spec.centers(), vec!["c1", "c2"]);
    spec.validate().unwrap();
    let mut arr = base;
    arr["computing_center_list"] = json!(["c1", "c2"]);
    let spec: ResourceSpec = serde_json::from_value(arr).unwrap();
    assert_eq!(spec.computing_center_list, "c1,c2");
}

#[test]
fn unknown_fields_are_rejected() {
    let err = serde_json::from_value::<Center>(json!({"ai_center_id":"c","name":"n",
        "region":"r","statsu":1}))
    .unwrap_err();
    assert!(err.to_string().contains("statsu"), "{err}");
}

#[test]
fn center_validation_names_the_field() {
    let mut c: Center = serde_json::from_value(json!({"ai_center_id":"c","name":"n","region":"r"})).unwrap();
    assert_eq!(c.status, center_status::UNKNOWN);
    c.validate().unwrap();
    c.geometry = [200.0, 0.0];
    assert!(c.validate().unwrap_err().message.starts_with("geometry[0]"));
    c.geometry = [0.0, 0.0];
    c.status = 7;
    assert!(c.validate().unwrap_err().message.starts_with("status"));
}

#[test]
fn dataset_id_and_access_rule() {
    let mut d: Dataset = serde_json::from_value(json!({"data_name":"imagenet","data_version":"v1",
        "location":[{"dataset_url":"s3://x","access":"r","ai_center_id":"c1"}]}))
    .unwrap();
    assert_eq!(d.dataset_id(), "imagenet@v1");
    d.validate().unwrap();
    d.location[0].access = "w".into();
    assert!(d.validate().unwrap_err().message.starts_with("location[0].access"));
}

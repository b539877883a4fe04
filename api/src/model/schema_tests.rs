//! The OpenAPI schemas say what validation enforces (issue 25): the bounds are in them, every
//! pattern in them is one of [`patterns`], and each pattern accepts exactly the strings its
//! field rule accepts.

use proptest::prelude::*;
use regex::Regex;
use serde_json::{json, Value};
use utoipa::openapi::path::ParameterIn;
use utoipa::{IntoParams, PartialSchema};

use super::patterns::{self, DATASET_ID, HOST_PORT, ID, ID_LIST, OPTIONAL_TEXT, QUANTITY, REPLICA_REF, TEXT};
use super::*;
use crate::quantity::parse_quantity;
use crate::validate::{self, MAX_ID_LEN};

fn schema<T: PartialSchema>() -> Value {
    serde_json::to_value(T::schema()).unwrap()
}

fn params<T: IntoParams>() -> Value {
    serde_json::to_value(T::into_params(|| Some(ParameterIn::Query))).unwrap()
}

/// The allowed values of a string field (inlined enums come wrapped in a one-item `oneOf`).
fn enum_of(field: &Value) -> &Value {
    field.get("enum").unwrap_or(&field["oneOf"][0]["enum"])
}

fn matches(pattern: &str, text: &str) -> bool {
    Regex::new(pattern).unwrap().is_match(text)
}

/// The schemas of every request body, its parts and the query parameters.
fn request_schemas() -> Vec<(&'static str, Value)> {
    vec![
        ("CreateTrainJob", schema::<CreateTrainJob>()),
        ("CreateTask", schema::<CreateTask>()),
        ("QosTarget", schema::<QosTarget>()),
        ("RetryPolicy", schema::<RetryPolicy>()),
        ("SchedulingOptions", schema::<SchedulingOptions>()),
        ("Center", schema::<Center>()),
        ("AdapterEndpoint", schema::<AdapterEndpoint>()),
        ("PowerModel", schema::<PowerModel>()),
        ("NetworkPosition", schema::<NetworkPosition>()),
        ("ResourceSpec", schema::<ResourceSpec>()),
        ("BaseOs", schema::<BaseOs>()),
        ("Image", schema::<Image>()),
        ("DownloadRecord", schema::<DownloadRecord>()),
        ("DatasetLocation", schema::<DatasetLocation>()),
        ("Dataset", schema::<Dataset>()),
        ("CenterMetrics", schema::<CenterMetrics>()),
        ("NodeFree", schema::<NodeFree>()),
        ("PageQuery", params::<PageQuery>()),
        ("JobFilter", params::<JobFilter>()),
    ]
}

fn collect_patterns<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(fields) => {
            if let Some(Value::String(pattern)) = fields.get("pattern") {
                found.push(pattern);
            }
            fields.values().for_each(|v| collect_patterns(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_patterns(v, found)),
        _ => {}
    }
}

#[test]
fn a1_bounds_are_in_the_schema() {
    let job = schema::<CreateTrainJob>();
    let fields = &job["properties"];
    assert_eq!((&fields["tasks"]["minItems"], &fields["tasks"]["maxItems"]), (&json!(1), &json!(64)));
    assert_eq!((&fields["name"]["maxLength"], &fields["name"]["pattern"]), (&json!(32), &json!(TEXT)));
    assert_eq!((&fields["userName"]["maxLength"], &fields["userName"]["pattern"]), (&json!(63), &json!(ID)));
    assert_eq!(fields["desc"]["pattern"], OPTIONAL_TEXT);
    assert_eq!(fields["datasetId"]["pattern"], DATASET_ID);
    assert_eq!((&fields["securityGrade"]["minimum"], &fields["securityGrade"]["maximum"]), (&json!(0), &json!(10)));
    assert_eq!(fields["durationSecs"]["maximum"], MAX_DURATION_SECS);
    assert_eq!(fields["weights"]["propertyNames"]["enum"], json!(patterns::ALGORITHM_IDS));
    assert_eq!(fields["weights"]["additionalProperties"]["maximum"], MAX_WEIGHT);
    assert_eq!(job["additionalProperties"], false, "unknown fields are refused");
    assert_eq!(job["required"], json!(["name", "tasks"]));

    let task = schema::<CreateTask>();
    let fields = &task["properties"];
    let replicas = &fields["replicaNumber"];
    assert_eq!((&replicas["minimum"], &replicas["maximum"]), (&json!(1), &json!(validate::MAX_REPLICAS)));
    for id in ["imageId", "resourceSpecId"] {
        assert_eq!((&fields[id]["maxLength"], &fields[id]["pattern"]), (&json!(MAX_ID_LEN), &json!(ID)), "{id}");
    }
    assert_eq!(fields["name"]["maxLength"], validate::MAX_A1_FIELD_LEN);
    assert_eq!(fields["command"]["maxLength"], validate::MAX_COMMAND_LEN);
    let pins = &fields["centerIDs"];
    assert_eq!((&pins["maxItems"], &pins["items"]["pattern"]), (&json!(1024), &json!(ID)));
    assert_eq!(pins["items"]["maxLength"], MAX_ID_LEN);

    let retry = &schema::<RetryPolicy>()["properties"];
    assert_eq!((&retry["maxRetries"]["maximum"], &retry["backoffMs"]["maximum"]), (&json!(10), &json!(600_000)));
    let qos = &schema::<QosTarget>()["properties"];
    assert_eq!((&qos["maxLatencyMs"]["maximum"], &qos["deadlineSecs"]["minimum"]), (&json!(1_000_000), &json!(1)));
}

#[test]
fn catalog_bounds_are_in_the_schema() {
    let center = schema::<Center>();
    let fields = &center["properties"];
    assert_eq!((&fields["ai_center_id"]["maxLength"], &fields["ai_center_id"]["pattern"]), (&json!(63), &json!(ID)));
    assert_eq!((&fields["name"]["maxLength"], &fields["name"]["pattern"]), (&json!(63), &json!(TEXT)));
    assert_eq!((&fields["status"]["minimum"], &fields["status"]["maximum"]), (&json!(0), &json!(2)));
    let geometry = &fields["geometry"];
    assert_eq!(
        (&geometry["minItems"], &geometry["maxItems"], &geometry["items"]),
        (&json!(2), &json!(2), &json!(false))
    );
    assert_eq!(geometry["prefixItems"][1]["maximum"], 90.0);
    assert_eq!(fields["performance"]["additionalProperties"]["maximum"], 1000.0);
    let adapter = &schema::<AdapterEndpoint>()["properties"];
    assert_eq!(enum_of(&adapter["kind"]), &json!(["", "local", "sim", "slurm"]));
    let kinds: Vec<&str> = enum_of(&adapter["kind"]).as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(kinds[1..], patterns::ADAPTER_KINDS);
    assert!(adapter["config"]["type"].as_array().unwrap().contains(&json!("null")), "null reads as {{}}");

    let spec = &schema::<ResourceSpec>()["properties"];
    assert_eq!(spec["resource_quantity"]["minProperties"], 1);
    assert_eq!(spec["resource_quantity"]["additionalProperties"]["pattern"], QUANTITY);
    let list = &spec["computing_center_list"]["oneOf"];
    assert_eq!((&list[0]["pattern"], &list[1]["items"]["pattern"]), (&json!(ID_LIST), &json!(ID_LIST)));
    assert_eq!(spec["center_prices"]["propertyNames"]["pattern"], ID);
    assert_eq!(spec["price"]["minimum"], 0);

    let location = &schema::<DatasetLocation>()["properties"];
    assert_eq!(enum_of(&location["access"]), &json!(["r", "rw"]));
    let outcome = &schema::<DownloadRecord>()["properties"]["outcome"];
    assert_eq!(enum_of(outcome), &json!(["success", "interrupted", "failed"]));
    let metrics = &schema::<CenterMetrics>()["properties"];
    assert_eq!(metrics["gpu_free"]["minimum"], 0);
    let confirmed = &metrics["confirmed_replicas"];
    assert_eq!((&confirmed["maxItems"], &confirmed["items"]["pattern"]), (&json!(100_000), &json!(REPLICA_REF)));
    assert_eq!(metrics["node_free"]["maxItems"], MAX_NODE_GROUPS);
    assert_eq!(schema::<NodeFree>()["properties"]["count"]["maximum"], 1_000_000);
}

#[test]
fn listings_bound_their_query() {
    let paging = params::<PageQuery>();
    let by_name = |name: &str| paging.as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()["schema"].clone();
    assert_eq!(by_name("page")["minimum"], 1);
    assert_eq!(by_name("page")["maximum"], u32::MAX, "the server takes every u32, not only int32");
    assert_eq!(
        by_name("offset")["maximum"],
        super::MAX_OFFSET,
        "the document's int64 bound, which the server holds too"
    );
    assert_eq!((&by_name("pageSize")["minimum"], &by_name("pageSize")["maximum"]), (&json!(1), &json!(MAX_PAGE_SIZE)));
    let filter = params::<JobFilter>().to_string();
    assert!(filter.contains(r#"["pending","running","completed","failed"]"#), "{filter}");
}

#[test]
fn every_pattern_is_a_known_one_and_compiles() {
    for pattern in patterns::ALL {
        Regex::new(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
    }
    for (name, schema) in request_schemas() {
        let mut found = Vec::new();
        collect_patterns(&schema, &mut found);
        for pattern in found {
            assert!(patterns::ALL.contains(&pattern), "{name} has a pattern not in `patterns`: {pattern}");
        }
    }
}

#[test]
fn the_scheduler_lists_accept_what_a6_accepts() {
    let ids = patterns::ALGORITHM_ID_LIST;
    for good in ["least_workload", " least_workload , lowest_price ", ",network_quality,,", "load_fairness\u{3000}"] {
        assert!(matches(ids, good), "{good:?}");
    }
    for bad in ["", " , ", "fastest", "least_workload,fastest", "least_workload lowest_price"] {
        assert!(!matches(ids, bad), "{bad:?}");
    }
    let scores = patterns::SCORE_LIST;
    for good in ["80,20", " +080 , -0 ,", "100", "000"] {
        assert!(matches(scores, good), "{good:?}");
    }
    for bad in ["", ",", "101", "-1", "1.5", "8 0"] {
        assert!(!matches(scores, bad), "{bad:?}");
    }
    for good in ["a", "key 1 \t2", "k".repeat(128).as_str()] {
        assert!(matches(patterns::IDEMPOTENCY_KEY, good), "{good:?}");
    }
    for bad in ["", " \t", " a", "a ", "key\t", "é", "a\u{7f}"] {
        assert!(!matches(patterns::IDEMPOTENCY_KEY, bad), "{bad:?}");
    }
}

#[test]
fn boundary_values_meet_the_field_rules() {
    let max_u32 = format!("j/{}/+0{}", u32::MAX, u32::MAX);
    assert!(matches(REPLICA_REF, &max_u32) && ReplicaRef::parse(&max_u32).is_some());
    let past = format!("j/0/{}", u64::from(u32::MAX) + 1);
    assert!(!matches(REPLICA_REF, &past) && ReplicaRef::parse(&past).is_none());
    let long_host = format!("{}:80", "h".repeat(253));
    assert!(matches(HOST_PORT, &long_host) && validate::host_port("a", &long_host).is_err(), "maxLength 255 says it");
    let dataset = format!("{}@{}", "n".repeat(63), "v".repeat(63));
    assert!(matches(DATASET_ID, &dataset) && !matches(DATASET_ID, &format!("{dataset}v")));
    let options = SchedulingOptions { dataset_id: Some(dataset), ..SchedulingOptions::default() };
    options.validate().unwrap();
}

/// Strings over `alphabet`, up to `max` characters.
fn strings(alphabet: &'static str, max: usize) -> impl Strategy<Value = String> {
    let chars: Vec<char> = alphabet.chars().collect();
    prop::collection::vec(prop::sample::select(chars), 0..=max).prop_map(|c| c.into_iter().collect())
}

/// Letters, every kind of white space Rust trims and some it does not (U+200B, U+FEFF), and
/// control characters of both ranges.
const TEXT_ALPHABET: &str =
    "aé. \t\n\r\u{b}\u{c}\u{85}\u{a0}\u{1680}\u{2000}\u{200a}\u{200b}\u{2028}\u{202f}\u{3000}\u{feff}\u{0}\u{7}\u{1f}\u{7f}\u{9f}";

proptest! {
    #[test]
    fn the_id_pattern_is_the_id_rule(s in strings("aZ09._-/@é ", 66)) {
        let schema_ok = matches(ID, &s) && s.chars().count() <= MAX_ID_LEN;
        prop_assert_eq!(validate::id("id", &s, MAX_ID_LEN).is_ok(), schema_ok);
    }

    #[test]
    fn the_text_patterns_are_the_text_rules(s in strings(TEXT_ALPHABET, 12)) {
        let fits = s.chars().count() <= 10;
        prop_assert_eq!(validate::text("t", &s, 10).is_ok(), matches(TEXT, &s) && fits);
        prop_assert_eq!(validate::optional_text("t", &s, 10).is_ok(), matches(OPTIONAL_TEXT, &s) && fits);
    }

    #[test]
    fn the_id_list_pattern_is_the_list_rule(s in strings("ab.-_, \t\n\u{a0}\u{3000}\u{85}\u{7}/", 14)) {
        match validate::id_list("l", &s) {
            Ok(_) => prop_assert!(matches(ID_LIST, &s)),
            // Duplicates are not a pattern's business.
            Err(e) => prop_assert!(!matches(ID_LIST, &s) || e.message.contains("twice"), "{}", e.message),
        }
    }

    #[test]
    fn the_quantity_pattern_is_the_parser(s in strings("0123456789.+-mkMGTPKie \t\u{85}\u{a0}x", 8)) {
        prop_assert_eq!(parse_quantity(&s).is_ok(), matches(QUANTITY, &s));
    }

    #[test]
    fn the_address_pattern_is_the_address_rule(s in strings("h:0123456789+[]. \n", 12)) {
        prop_assert_eq!(validate::host_port("a", &s).is_ok(), matches(HOST_PORT, &s));
        let optional = s.is_empty() || validate::host_port("a", &s).is_ok();
        prop_assert_eq!(optional, matches(patterns::OPTIONAL_HOST_PORT, &s));
    }

    #[test]
    fn the_replica_pattern_is_the_replica_parser(s in strings("ab-.0123456789+/", 14)) {
        prop_assert_eq!(ReplicaRef::parse(&s).is_some(), matches(REPLICA_REF, &s));
    }

    #[test]
    fn the_dataset_pattern_is_the_path_rule(s in strings("ab.-_@/ ", 10)) {
        let path_ok = s.split_once('@').is_some_and(|(name, version)| {
            validate::id("id", name, MAX_ID_LEN).is_ok() && validate::id("id", version, MAX_ID_LEN).is_ok()
        });
        prop_assert_eq!(path_ok, matches(DATASET_ID, &s));
        if path_ok {
            let options = SchedulingOptions { dataset_id: Some(s.clone()), ..SchedulingOptions::default() };
            prop_assert!(options.validate().is_ok(), "A.1 takes every dataset id the catalog can hold");
        }
    }
}

//! ReportMetrics: stamping, per-center storage, replacement and validation.

use super::*;

#[test]
fn metrics_for_an_unknown_center_are_not_found() {
    let mut kv = catalog();
    assert_eq!(
        refused(&mut kv, Command::ReportMetrics { center_id: "c9".into(), metrics: metrics(1) }),
        Refusal::NotFound { kind: CENTER, id: "c9".into() }
    );
}

#[test]
fn metrics_are_stamped_with_reported_at_and_stored_per_center() {
    let mut kv = catalog();
    let reported = CenterMetrics { reported_at: 42, ..metrics(3) };
    let outcome = ok_at(&mut kv, Command::ReportMetrics { center_id: "c1".into(), metrics: reported }, T1);
    let expected = CenterMetrics { reported_at: T1, ..metrics(3) };
    assert_eq!(outcome, Outcome::Metrics(expected.clone()));
    assert_eq!(get_json::<CenterMetrics>(&kv, &tables::metrics_key("c1")).unwrap(), Some(expected));
}

#[test]
fn a_new_report_replaces_the_previous_one() {
    let mut kv = catalog();
    ok_at(&mut kv, Command::ReportMetrics { center_id: "c1".into(), metrics: metrics(3) }, T0);
    ok_at(&mut kv, Command::ReportMetrics { center_id: "c1".into(), metrics: metrics(5) }, T1);
    let now: CenterMetrics = get_json(&kv, &tables::metrics_key("c1")).unwrap().unwrap();
    assert_eq!((now.running_task_num, now.reported_at), (5, T1));
}

#[test]
fn negative_metric_counters_are_invalid() {
    let mut kv = catalog();
    let cases = [
        (metrics(-1), "running_task_num"),
        (CenterMetrics { gpu_free: -8, ..metrics(0) }, "gpu_free"),
        (CenterMetrics { storage_used: i64::MIN, ..metrics(0) }, "storage_used"),
    ];
    for (m, field) in cases {
        match refused(&mut kv, Command::ReportMetrics { center_id: "c1".into(), metrics: m }) {
            Refusal::Invalid(message) => assert!(message.starts_with(&format!("{field}: ")), "{message}"),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }
}

#[test]
fn metrics_for_a_malformed_center_id_are_invalid() {
    let mut kv = catalog();
    match refused(&mut kv, Command::ReportMetrics { center_id: "../c1".into(), metrics: metrics(0) }) {
        Refusal::Invalid(message) => assert!(message.starts_with("ai_center_id: "), "{message}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

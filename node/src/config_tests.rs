//! Tests of the node configuration: the template, flags, files and checks.

use super::*;

const TEMPLATE: &str = include_str!("../../examples/config.toml");

#[test]
fn the_committed_template_parses_and_documents_the_defaults() {
    let parsed = Config::from_toml(TEMPLATE, Path::new("examples/config.toml")).unwrap();
    assert_eq!(parsed, Config::default(), "examples/config.toml must show the defaults");
    parsed.raft_config().unwrap();
}

#[test]
fn every_field_is_in_the_template() {
    let fields: toml::Table = toml::from_str(TEMPLATE).unwrap();
    for name in [
        "node_id",
        "data_dir",
        "http",
        "raft",
        "max_body_bytes",
        "max_connections",
        "header_read_timeout_ms",
        "body_read_timeout_ms",
        "write_timeout_ms",
        "max_batch",
        "max_inflight_batches",
        "heartbeat_interval_ms",
        "election_timeout_min_ms",
        "election_timeout_max_ms",
        "snapshot_after_logs",
        "logs_kept_after_snapshot",
        "initial_members",
        "owner_timeout_ms",
        "fault_injection",
        "schedule_interval_ms",
        "schedule_batch",
        "placement_wait_ms",
        "max_job_replicas",
        "max_page_bytes",
        "place_without_adapter",
        "monitoring_stale_after_secs",
        "ledger_ttl_secs",
        "data_move_limit_mb",
        "default_policy",
        "demo",
        "log",
    ] {
        assert!(fields.contains_key(name), "{name} missing from examples/config.toml");
    }
    // Optional fields have no default to show: the template shows them commented out.
    for name in ["demo_slurm", "demo_shared_dir", "join"] {
        assert!(TEMPLATE.contains(&format!("\n# {name} = ")), "{name} missing from examples/config.toml");
    }
    assert!(TEMPLATE.contains("\n# [[region_links]]\n"), "region_links missing from examples/config.toml");
}

#[test]
fn every_option_has_a_flag() {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let cli = <Cli as clap::Parser>::try_parse_from([
        "jcs",
        "--node-id",
        "3",
        "--data-dir",
        "d",
        "--http",
        "127.0.0.1:1",
        "--raft",
        "127.0.0.1:2",
        "--max-body-bytes",
        "10",
        "--max-connections",
        "31",
        "--header-read-timeout-ms",
        "32",
        "--body-read-timeout-ms",
        "33",
        "--write-timeout-ms",
        "11",
        "--max-batch",
        "12",
        "--max-inflight-batches",
        "13",
        "--heartbeat-interval-ms",
        "14",
        "--election-timeout-min-ms",
        "15",
        "--election-timeout-max-ms",
        "16",
        "--snapshot-after-logs",
        "17",
        "--logs-kept-after-snapshot",
        "18",
        "--initial-members",
        "3=127.0.0.1:2, 4=127.0.0.1:5",
        "--owner-timeout-ms",
        "3000",
        "--fault-injection",
        "--schedule-interval-ms",
        "19",
        "--schedule-batch",
        "20",
        "--placement-wait-ms",
        "21",
        "--max-job-replicas",
        "29",
        "--max-page-bytes",
        "30",
        "--place-without-adapter",
        "--monitoring-stale-after-secs",
        "22",
        "--ledger-ttl-secs",
        "23",
        "--data-move-limit-mb",
        "24",
        "--default-policy",
        "price",
        "--poll-interval-ms",
        "25",
        "--failed-polls-before-unavailable",
        "26",
        "--dispatch-concurrency",
        "27",
        "--stop-grace-ms",
        "28",
        "--demo",
        "--demo-slurm",
        "--demo-shared-dir",
        "/srv/jcs/centers",
        "--log",
        "debug",
    ])
    .unwrap();
    let config = Config::load(&cli.serve).unwrap();
    let expected = Config {
        node_id: 3,
        data_dir: "d".into(),
        http: "127.0.0.1:1".parse().unwrap(),
        raft: "127.0.0.1:2".parse().unwrap(),
        max_body_bytes: 10,
        max_connections: 31,
        header_read_timeout_ms: 32,
        body_read_timeout_ms: 33,
        write_timeout_ms: 11,
        max_batch: 12,
        max_inflight_batches: 13,
        heartbeat_interval_ms: 14,
        election_timeout_min_ms: 15,
        election_timeout_max_ms: 16,
        snapshot_after_logs: 17,
        logs_kept_after_snapshot: 18,
        initial_members: "3=127.0.0.1:2, 4=127.0.0.1:5".into(),
        join: None,
        owner_timeout_ms: 3000,
        fault_injection: true,
        schedule_interval_ms: 19,
        schedule_batch: 20,
        placement_wait_ms: 21,
        max_job_replicas: 29,
        max_page_bytes: 30,
        place_without_adapter: true,
        monitoring_stale_after_secs: 22,
        ledger_ttl_secs: 23,
        data_move_limit_mb: 24,
        poll_interval_ms: 25,
        failed_polls_before_unavailable: 26,
        dispatch_concurrency: 27,
        stop_grace_ms: 28,
        default_policy: "price".into(),
        region_links: Vec::new(),
        demo: true,
        demo_slurm: Some("/tmp/jcs-slurm/env".into()),
        demo_shared_dir: Some("/srv/jcs/centers".into()),
        log: "debug".into(),
    };
    assert_eq!(config, expected);
}

#[test]
fn flags_override_the_file_and_bad_values_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "node_id = 7\nhttp = \"127.0.0.1:1\"\n").unwrap();
    let args =
        ServeArgs { config: Some(path.clone()), http: Some("127.0.0.1:2".parse().unwrap()), ..Default::default() };
    let config = Config::load(&args).unwrap();
    assert_eq!((config.node_id, config.http.port()), (7, 2));
    std::fs::write(&path, "nodeid = 7\n").unwrap();
    assert!(matches!(Config::load(&args), Err(ConfigError::Parse { .. })));
    std::fs::write(&path, "node_id = 0\n").unwrap();
    assert!(matches!(Config::load(&args), Err(ConfigError::Invalid(_))));
    // Values that would overflow a deadline or the connection permits are refused at start.
    for overflow in ["body_read_timeout_ms = 86400001", "max_connections = 1048577"] {
        std::fs::write(&path, format!("{overflow}\n")).unwrap();
        assert!(matches!(Config::load(&args), Err(ConfigError::Invalid(_))), "{overflow}");
    }
}

#[test]
fn region_links_come_from_the_file_and_are_checked() {
    let path = Path::new("c.toml");
    // The template's commented example, uncommented, is a valid configuration.
    let example: String = TEMPLATE
        .lines()
        .skip_while(|line| *line != "# [[region_links]]")
        .map(|line| line.strip_prefix("# ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n");
    let config = Config::from_toml(&example, path).unwrap();
    config.check().unwrap();
    let links = config.links().unwrap();
    let link = links.path("zhejiang", "hunan").expect("a link serves both ways");
    assert!(link.latency_ms > 0.0 && link.bandwidth_mbps > 0.0, "{link:?}");
    let link = |fields: &str| format!("[[region_links]]\nfrom = \"a\"\nto = \"b\"\n{fields}\n");
    for (text, why) in [
        (link("latency_ms = -1.0"), "latency_ms is -1"),
        (link("bandwidth_mbps = nan"), "bandwidth_mbps is NaN"),
        (link("loss_pct = 100.5"), "loss_pct is 100.5"),
        ("[[region_links]]\nfrom = \"\"\nto = \"b\"\n".to_string(), "must name regions"),
        (link("") + &link("latency_ms = 2.0"), "a → b is given twice"),
    ] {
        let config = Config::from_toml(&text, path).unwrap();
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains("region_links: ") && err.contains(why), "{text}: {err}");
    }
    assert!(matches!(Config::from_toml(&link("latency = 2.0"), path), Err(ConfigError::Parse { .. })));
}

#[test]
fn initial_members_are_parsed_and_checked() {
    let config = |members: &str, node_id: u64| Config { initial_members: members.into(), node_id, ..Config::default() };
    let members = config("1=127.0.0.1:9081, 2=10.0.0.2:9080", 2).members().unwrap();
    assert_eq!(
        members.into_iter().collect::<Vec<_>>(),
        vec![(1, "127.0.0.1:9081".into()), (2, "10.0.0.2:9080".into())]
    );
    assert!(config("", 1).members().unwrap().is_empty());
    for (bad, why) in [
        ("1=127.0.0.1:9081,2=127.0.0.1:9082", "does not list this node"),
        ("3=127.0.0.1:9081,3=127.0.0.1:9082", "listed twice"),
        ("3:127.0.0.1:9081", "is not ID=PEER_ADDR"),
        ("x=127.0.0.1:9081", "is not ID=PEER_ADDR"),
    ] {
        let err = config(bad, 3).members().unwrap_err().to_string();
        assert!(err.contains(why), "{bad}: {err}");
    }
    let both = Config { join: Some("127.0.0.1:9081".into()), ..config("1=127.0.0.1:9081", 1) };
    assert!(both.check().unwrap_err().to_string().contains("exclude each other"));
}

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::value::{Dict, Value};
use figment::{Figment, Provider};

use broker::edge::Limits;
use broker::options::{DEFAULT_TOML, RaftOptions, RetentionOptions, TestingOptions, TopicDefaults};
use broker::queue::SendBatchLimits;
use broker::store::StoreOptions;

use super::*;

fn env(vars: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    vars.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))).collect()
}

/// Loads `text` as a file, under `vars` as the environment.
fn load_text(text: &str, vars: &[(&str, &str)]) -> anyhow::Result<BrokerOptions> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("broker.toml");
    std::fs::write(&path, text)?;
    load_from(Some(&path), env(vars))
}

fn load_err(text: &str, vars: &[(&str, &str)]) -> String {
    match load_text(text, vars) {
        Ok(config) => panic!("expected an error, loaded {config:?}"),
        Err(e) => format!("{e:#}"),
    }
}

/// The keys of the problems loading `text` finds: a value that is not of its key's form, or
/// what validation refuses.
fn invalid_keys(text: &str) -> Vec<String> {
    let figment = Figment::from(Toml::string(text));
    let options: BrokerOptions = match figment.extract() {
        Ok(options) => options,
        Err(e) => return e.into_iter().map(|e| e.path.join(".")).collect(),
    };
    match resolve(options, figment.find_value("id").is_ok()) {
        Ok(config) => panic!("{text:?} is valid: {config:?}"),
        Err(problems) => problems.into_iter().map(|p| p.key).collect(),
    }
}

#[test]
fn defaults_are_the_documented_values() -> anyhow::Result<()> {
    let config = load_text("id = 7", &[])?;
    let expected = BrokerOptions {
        id: 7,
        data_dir: PathBuf::from("./raftmq-data"),
        listen: "127.0.0.1:8081".parse()?,
        advertise: "127.0.0.1:8081".to_owned(),
        peer_listen: "127.0.0.1:9081".parse()?,
        peer_advertise: "127.0.0.1:9081".to_owned(),
        metrics_listen: None,
        controllers: vec!["7@127.0.0.1:9081".to_owned()],
        labels: Default::default(),
        raft: RaftOptions {
            heartbeat_interval_ms: 500,
            election_timeout_min_ms: 1500,
            election_timeout_max_ms: 3000,
            hibernate_after_ms: 10_000,
            meta_snapshot_every_entries: 1024,
            meta_snapshot_keep_entries: 256,
        },
        limits: Limits {
            body_bytes_max: 4_194_304,
            properties_bytes_max: 16_384,
            name_chars_max: 127,
            messages_per_send_max: 256,
            keys_per_message_max: 64,
            tag_bytes_max: 1024,
            fetch_wait_ms_max: 30_000,
            in_flight_requests_per_connection: 1024,
            in_flight_request_bytes_max: 256 << 20,
            consumer_groups_per_queue_max: 1024,
        },
        send: SendBatchLimits {
            wait_max: std::time::Duration::from_micros(1000),
            messages_max: 256,
            entry_bytes_max: 8_388_608,
            in_flight_messages_max: 4096,
            entries_in_flight_max: 8,
        },
        topic_defaults: TopicDefaults { queue_count: 4, replication_factor: 3, checkpoint_interval_entries: 4096 },
        retention: RetentionOptions {
            max_age_ms: 259_200_000,
            max_log_entries: 0,
            check_interval_ms: 60_000,
            checkpoint_interval_ms: 60_000,
        },
        log: raft_log::LogOptions {
            segment_bytes: 64 << 20,
            max_record_bytes: 16 << 20,
            reclaim_after_segments: 4,
            rewrite_chunk_bytes: 1 << 20,
            ..Default::default()
        },
        store: StoreOptions { flush_interval_ms: 30_000, memtable_bytes: 64 << 20 },
        testing: TestingOptions {
            power_loss: false,
            ack_before_fsync_ms: 0,
            fsync_delay_file: false,
            torn_pages: false,
            store_flush_file: false,
        },
    };
    assert_eq!(config, expected);
    Ok(())
}

/// Every key path of a nested dictionary, sections included.
fn key_paths(dict: &Dict, prefix: &str, out: &mut BTreeSet<String>) {
    for (k, v) in dict {
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        if let Value::Dict(_, inner) = v {
            key_paths(inner, &path, out);
        }
        out.insert(path);
    }
}

#[test]
fn default_file_is_the_defaults() -> anyhow::Result<()> {
    let from_doc: BrokerOptions = Figment::from(Toml::string(DEFAULT_TOML)).extract()?;
    assert_eq!(from_doc, BrokerOptions { id: 1, ..BrokerOptions::default() });

    // Equal values could hide a key missing from the document (it would take its default), so
    // the document must also name every key the code has, and no other.
    let mut documented = BTreeSet::new();
    let doc_data = Toml::string(DEFAULT_TOML).data()?;
    key_paths(&doc_data[&Profile::Default], "", &mut documented);
    let mut coded = BTreeSet::new();
    let defaults = Value::serialize(BrokerOptions { id: 1, ..BrokerOptions::default() })?;
    key_paths(defaults.as_dict().ok_or_else(|| anyhow::anyhow!("defaults are not a table"))?, "", &mut coded);
    assert_eq!(documented, coded);
    Ok(())
}

#[test]
fn every_key_can_be_set_in_the_file() -> anyhow::Result<()> {
    let config = load_text(
        r#"
        id = 9223372036854775807
        data_dir = "/var/lib/raftmq"
        listen = "0.0.0.0:7001"
        advertise = "broker-1.example.com:7001"
        peer_listen = "[::]:7101"
        peer_advertise = "broker-1.example.com:7101"
        metrics_listen = "127.0.0.1:7201"
        controllers = ["1@b1:7101", "2@b2:7101", "3@[::1]:7101"]
        [raft]
        heartbeat_interval_ms = 100
        election_timeout_min_ms = 300
        election_timeout_max_ms = 600
        [limits]
        body_bytes_max = 1000
        properties_bytes_max = 1001
        name_chars_max = 1002
        messages_per_send_max = 1003
        keys_per_message_max = 1004
        tag_bytes_max = 1005
        fetch_wait_ms_max = 1006
        in_flight_requests_per_connection = 1007
        [send]
        batch_wait_us = 0
        batch_messages_max = 2001
        entry_bytes_max = 2002002
        in_flight_messages_per_group = 2003
        [topic_defaults]
        queue_count = 16
        replication_factor = 5
        "#,
        &[],
    )?;
    assert_eq!(config.id, (1 << 63) - 1);
    assert_eq!(config.data_dir, PathBuf::from("/var/lib/raftmq"));
    assert_eq!(config.listen, "0.0.0.0:7001".parse()?);
    assert_eq!(config.advertise, "broker-1.example.com:7001");
    assert_eq!(config.peer_listen, "[::]:7101".parse()?);
    assert_eq!(config.peer_advertise, "broker-1.example.com:7101");
    assert_eq!(config.metrics_listen, Some("127.0.0.1:7201".parse()?));
    assert_eq!(config.controller_voters(""), vec![(1, "b1:7101".to_owned()), (2, "b2:7101".to_owned()), (3, "[::1]:7101".to_owned())]);
    assert_eq!(
        config.raft,
        RaftOptions {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            hibernate_after_ms: 10_000,
            ..RaftOptions::default()
        }
    );
    let l = &config.limits;
    assert_eq!(
        [l.body_bytes_max, l.properties_bytes_max, l.name_chars_max, l.messages_per_send_max, l.keys_per_message_max, l.tag_bytes_max],
        [1000, 1001, 1002, 1003, 1004, 1005]
    );
    assert_eq!((l.fetch_wait_ms_max, l.in_flight_requests_per_connection), (1006, 1007));
    assert_eq!(
        config.send,
        SendBatchLimits {
            wait_max: std::time::Duration::ZERO,
            messages_max: 2001,
            entry_bytes_max: 2002002,
            in_flight_messages_max: 2003,
            entries_in_flight_max: 8
        }
    );
    assert_eq!(config.topic_defaults, TopicDefaults { queue_count: 16, replication_factor: 5, checkpoint_interval_entries: 4096 });
    Ok(())
}

#[test]
fn a_section_can_be_partly_set() -> anyhow::Result<()> {
    let config = load_text("id = 2\n[raft]\nheartbeat_interval_ms = 200\n", &[])?;
    assert_eq!(config.raft, RaftOptions { heartbeat_interval_ms: 200, ..RaftOptions::default() });
    assert_eq!(config.limits, Limits::default());
    Ok(())
}

#[test]
fn environment_overrides_the_file() -> anyhow::Result<()> {
    let config = load_text(
        "id = 1\ndata_dir = \"/from/file\"\n[raft]\nheartbeat_interval_ms = 200\n",
        &[
            ("RAFTMQ_ID", "4"),
            ("RAFTMQ_DATA_DIR", "/from/env"),
            ("RAFTMQ_LISTEN", "127.0.0.1:7001"),
            ("RAFTMQ_ADVERTISE", "b4.example.com:7001"),
            ("RAFTMQ_CONTROLLERS", "1@b1:9081, 2@b2:9081,3@b3:9081"),
            ("RAFTMQ_RAFT__ELECTION_TIMEOUT_MIN_MS", "900"),
            ("RAFTMQ_SEND__BATCH_WAIT_US", "0"),
            ("RAFTMQ_TOPIC_DEFAULTS__REPLICATION_FACTOR", "1"),
        ],
    )?;
    assert_eq!(config.id, 4);
    assert_eq!(config.data_dir, PathBuf::from("/from/env"));
    assert_eq!(config.listen, "127.0.0.1:7001".parse()?);
    assert_eq!(config.advertise, "b4.example.com:7001");
    assert_eq!(config.controller_voters("").iter().map(|(id, _)| *id).collect::<Vec<_>>(), [1, 2, 3]);
    // The file's value in the same section stays.
    assert_eq!(
        config.raft,
        RaftOptions { heartbeat_interval_ms: 200, election_timeout_min_ms: 900, election_timeout_max_ms: 3000, ..RaftOptions::default() }
    );
    assert_eq!(config.send.wait_max, std::time::Duration::ZERO);
    assert_eq!(config.topic_defaults.replication_factor, 1);
    Ok(())
}

#[test]
fn environment_alone_is_enough() -> anyhow::Result<()> {
    let config = load_from(None, env(&[("RAFTMQ_ID", "3"), ("RAFTMQ_METRICS_LISTEN", "127.0.0.1:9300")]))?;
    assert_eq!((config.id, config.metrics_listen), (3, Some("127.0.0.1:9300".parse()?)));
    Ok(())
}

#[test]
fn a_string_key_takes_the_variable_as_it_is() -> anyhow::Result<()> {
    // A value that would parse as a number or a boolean stays a path.
    let config = load_text("id = 1", &[("RAFTMQ_DATA_DIR", "1234"), ("RAFTMQ_PEER_ADVERTISE", "")])?;
    assert_eq!(config.data_dir, PathBuf::from("1234"));
    assert_eq!(config.peer_advertise, "127.0.0.1:9081");
    Ok(())
}

#[test]
fn unrelated_raftmq_variables_are_ignored() -> anyhow::Result<()> {
    let config = load_text("id = 1", &[("RAFTMQ_PORT", "tcp://10.0.0.1:8081"), ("RAFTMQ_ENDPOINT", "x"), ("OTHER_ID", "5")])?;
    assert_eq!(config.id, 1);
    Ok(())
}

#[test]
fn unknown_keys_are_named() {
    let e = load_err("id = 1\nlisten_addr = \"127.0.0.1:1\"\n", &[]);
    assert!(e.contains("listen_addr: unknown key"), "{e}");
    assert!(e.contains("broker.toml"), "the file is named: {e}");

    let e = load_err("id = 1\n[raft]\nheartbeat_ms = 100\n", &[]);
    assert!(e.contains("raft.heartbeat_ms: unknown key"), "{e}");

    let e = load_err("id = 1\n[replication]\nfactor = 3\n", &[]);
    assert!(e.contains("replication: unknown key"), "{e}");

    let e = load_err("id = 1", &[("RAFTMQ_RAFT__HEARTBEAT_MS", "100")]);
    assert!(e.contains("raft.heartbeat_ms: unknown key"), "{e}");
    assert!(e.contains("environment variable RAFTMQ_RAFT__HEARTBEAT_MS"), "the variable is named: {e}");
}

#[test]
fn wrong_types_are_named_with_their_source() {
    let e = load_err("id = 1\n[raft]\nheartbeat_interval_ms = \"fast\"\n", &[]);
    assert!(e.contains("raft.heartbeat_interval_ms"), "{e}");
    let e = load_err("id = 1", &[("RAFTMQ_LIMITS__BODY_BYTES_MAX", "big")]);
    assert!(e.contains("limits.body_bytes_max") && e.contains("RAFTMQ_LIMITS__BODY_BYTES_MAX"), "{e}");
    let e = load_err("id = -1", &[]);
    assert!(e.contains("id"), "{e}");
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let e = match load_from(Some(Path::new("/nonexistent/broker.toml")), env(&[])) {
        Ok(c) => panic!("loaded {c:?}"),
        Err(e) => format!("{e:#}"),
    };
    assert!(e.contains("/nonexistent/broker.toml"), "{e}");
}

#[test]
fn a_toml_syntax_error_names_the_file() {
    let e = load_err("id = 1\nlisten = \n", &[]);
    assert!(e.contains("broker.toml"), "{e}");
}

#[test]
fn validation_errors_name_the_key() {
    let cases: &[(&str, &str)] = &[
        ("", "id"),
        ("id = 0", "id"),
        ("id = 1\nlisten = \"localhost:8081\"", "listen"),
        ("id = 1\nlisten = \"127.0.0.1\"", "listen"),
        ("id = 1\nlisten = \"127.0.0.1:0\"", "listen"),
        ("id = 1\npeer_listen = \"nope\"", "peer_listen"),
        ("id = 1\nmetrics_listen = \"127.0.0.1:99999\"", "metrics_listen"),
        ("id = 1\nadvertise = \"b1.example.com\"", "advertise"),
        ("id = 1\nadvertise = \"b1 example:80\"", "advertise"),
        ("id = 1\nadvertise = \"::1:8081\"", "advertise"),
        ("id = 1\npeer_advertise = \"b1:0\"", "peer_advertise"),
        ("id = 1\ncontrollers = [\"1@b1:9081\", \"b2:9081\"]", "controllers[1]"),
        ("id = 1\ncontrollers = [\"0@b1:9081\"]", "controllers[0]"),
        ("id = 1\ncontrollers = [\"x@b1:9081\"]", "controllers[0]"),
        ("id = 1\ncontrollers = [\"1@b1\"]", "controllers[0]"),
        ("id = 1\ncontrollers = [\"1@b1:9081\", \"1@b2:9081\"]", "controllers[1]"),
        ("id = 1\ncontrollers = [\"1@a:1\",\"2@a:2\",\"3@a:3\",\"4@a:4\",\"5@a:5\",\"6@a:6\",\"7@a:7\",\"8@a:8\"]", "controllers"),
        ("id = 1\n[raft]\nheartbeat_interval_ms = 0", "raft.heartbeat_interval_ms"),
        ("id = 1\n[raft]\nelection_timeout_min_ms = 500", "raft.election_timeout_min_ms"),
        ("id = 1\n[raft]\nelection_timeout_max_ms = 1500", "raft.election_timeout_max_ms"),
        ("id = 1\n[limits]\nbody_bytes_max = 0", "limits.body_bytes_max"),
        ("id = 1\n[limits]\nproperties_bytes_max = 0", "limits.properties_bytes_max"),
        ("id = 1\n[limits]\nname_chars_max = 0", "limits.name_chars_max"),
        ("id = 1\n[limits]\nmessages_per_send_max = 0", "limits.messages_per_send_max"),
        ("id = 1\n[limits]\nkeys_per_message_max = 0", "limits.keys_per_message_max"),
        ("id = 1\n[limits]\ntag_bytes_max = 0", "limits.tag_bytes_max"),
        ("id = 1\n[limits]\nfetch_wait_ms_max = 0", "limits.fetch_wait_ms_max"),
        ("id = 1\n[limits]\nin_flight_requests_per_connection = 0", "limits.in_flight_requests_per_connection"),
        ("id = 1\n[limits]\nin_flight_request_bytes_max = 0", "limits.in_flight_request_bytes_max"),
        ("id = 1\n[limits]\nin_flight_request_bytes_max = 1048576", "limits.in_flight_request_bytes_max"),
        ("id = 1\n[send]\nbatch_messages_max = 0", "send.batch_messages_max"),
        ("id = 1\n[send]\nin_flight_messages_per_group = 0", "send.in_flight_messages_per_group"),
        ("id = 1\n[send]\nentry_bytes_max = 4194303", "send.entry_bytes_max"),
        ("id = 1\n[topic_defaults]\nqueue_count = 0", "topic_defaults.queue_count"),
        ("id = 1\n[topic_defaults]\nreplication_factor = 0", "topic_defaults.replication_factor"),
        ("id = 1\n[topic_defaults]\ncheckpoint_interval_entries = 0", "topic_defaults.checkpoint_interval_entries"),
        ("id = 1\n[store]\nflush_interval_ms = 0", "store.flush_interval_ms"),
        ("id = 1\n[topic_defaults]\ncheckpoint_interval_entries = 1048577", "topic_defaults.checkpoint_interval_entries"),
    ];
    for (text, key) in cases {
        assert_eq!(invalid_keys(text), vec![key.to_string()], "for {text:?}");
    }
}

/// `send.entry_bytes_max` holds exactly the largest message the limits admit, or the broker
/// refuses to start, naming it; an entry too large for one log record is refused the same way.
#[test]
fn an_entry_must_hold_the_largest_admitted_message_and_fit_one_record() -> anyhow::Result<()> {
    let largest = broker::size_limits::message_bytes_max(&broker::edge::Limits::default());
    assert!(load_text(&format!("id = 1\n[send]\nentry_bytes_max = {largest}"), &[]).is_ok());
    let e = load_err(&format!("id = 1\n[send]\nentry_bytes_max = {}", largest - 1), &[]);
    assert!(e.contains("send.entry_bytes_max") && e.contains("largest message"), "{e}");
    let record = raft_log::LogOptions::default().max_payload_bytes();
    let e = load_err(&format!("id = 1\n[send]\nentry_bytes_max = {record}"), &[]);
    assert!(e.contains("send.entry_bytes_max") && e.contains("largest record"), "{e}");
    Ok(())
}

/// The budget of request bytes in flight holds exactly the largest request the broker takes
/// (`send.entry_bytes_max` plus 1 MiB), or the broker refuses to start, naming the key; the
/// key's former name still sets it.
#[test]
fn the_request_budget_must_hold_the_largest_request() -> anyhow::Result<()> {
    let entry = 8 << 20;
    let largest =
        broker::size_limits::client_request_bytes_max(&broker::queue::SendBatchLimits { entry_bytes_max: entry, ..Default::default() });
    assert_eq!(largest, entry + (1 << 20));
    let exact = load_text(&format!("id = 1\n[send]\nentry_bytes_max = {entry}\n[limits]\nin_flight_request_bytes_max = {largest}"), &[])?;
    assert_eq!(exact.limits.in_flight_request_bytes_max, largest);
    let e = load_err(&format!("id = 1\n[limits]\nin_flight_request_bytes_max = {}", largest - 1), &[]);
    assert!(
        e.contains("limits.in_flight_request_bytes_max") && e.contains(&format!("largest request the broker takes ({largest} bytes")),
        "{e}"
    );

    let former = load_text(&format!("id = 1\n[limits]\nin_flight_send_bytes_max = {largest}"), &[])?;
    assert_eq!(former.limits.in_flight_request_bytes_max, largest);
    let from_env = load_text("id = 1", &[("RAFTMQ_LIMITS__IN_FLIGHT_SEND_BYTES_MAX", &(largest + 1).to_string())])?;
    assert_eq!(from_env.limits.in_flight_request_bytes_max, largest + 1);
    let e = load_err("id = 1", &[("RAFTMQ_LIMITS__IN_FLIGHT_REQUEST_BYTES_MAX", &(largest - 1).to_string())]);
    assert!(e.contains("limits.in_flight_request_bytes_max") && e.contains("RAFTMQ_LIMITS__IN_FLIGHT_REQUEST_BYTES_MAX"), "{e}");
    Ok(())
}

#[test]
fn the_id_may_reach_two_to_the_63_from_the_environment() -> anyhow::Result<()> {
    assert_eq!(load_text("", &[("RAFTMQ_ID", "9223372036854775808")])?.id, 1 << 63);
    let e = load_err("", &[("RAFTMQ_ID", "9223372036854775809")]);
    assert!(e.contains("id: 9223372036854775809 is out of range") && e.contains("RAFTMQ_ID"), "{e}");
    Ok(())
}

#[test]
fn every_problem_is_reported_at_once_with_its_source() {
    let e = load_err("id = 0\n[raft]\nheartbeat_interval_ms = 0\n", &[("RAFTMQ_LIMITS__TAG_BYTES_MAX", "0")]);
    assert!(e.contains("id: 0 is out of range") && e.contains("broker.toml"), "{e}");
    assert!(e.contains("raft.heartbeat_interval_ms: must be above 0"), "{e}");
    assert!(e.contains("limits.tag_bytes_max: must be above 0 (from environment variable RAFTMQ_LIMITS__TAG_BYTES_MAX)"), "{e}");
}

#[test]
fn a_broker_may_be_outside_an_even_metadata_group() -> anyhow::Result<()> {
    let config = load_text("id = 5\ncontrollers = [\"1@b1:9081\", \"2@b2:9081\", \"3@b3:9081\", \"4@b4:9081\"]", &[])?;
    assert_eq!(config.controllers.len(), 4);
    assert!(config.controller_voters("").iter().all(|(id, _)| *id != 5));
    Ok(())
}

#[test]
fn a_checkpoint_interval_by_time_of_zero_is_refused() {
    let e = load_err("id = 1\n[retention]\ncheckpoint_interval_ms = 0\n", &[]);
    assert!(e.contains("retention.checkpoint_interval_ms: must be above 0"), "{e}");
    let config = load_text("id = 1\n[retention]\ncheckpoint_interval_ms = 1\n", &[]).expect("1 ms is allowed");
    assert_eq!(config.retention.checkpoint_interval_ms, 1);
}

#[test]
fn consumer_groups_per_queue_stay_within_what_a_checkpoint_holds() -> anyhow::Result<()> {
    let at = load_text("id = 1\n[limits]\nconsumer_groups_per_queue_max = 16383\n", &[])?;
    assert_eq!(at.limits.consumer_groups_per_queue_max, 16_383);
    let e = load_err("id = 1\n[limits]\nconsumer_groups_per_queue_max = 16384\n", &[]);
    assert!(e.contains("limits.consumer_groups_per_queue_max: 16384 is not within 1..=16383"), "{e}");
    let e = load_err("id = 1", &[("RAFTMQ_LIMITS__CONSUMER_GROUPS_PER_QUEUE_MAX", "0")]);
    assert!(e.contains("limits.consumer_groups_per_queue_max: 0 is not within") && e.contains("RAFTMQ_LIMITS__CONSUMER"), "{e}");
    Ok(())
}

#[test]
fn a_log_segment_must_hold_the_largest_entry() -> anyhow::Result<()> {
    let e = load_err("id = 1\n[log]\nsegment_bytes = 4194304\n", &[]);
    assert!(e.contains("send.entry_bytes_max: 8388608 plus 1024 bytes of entry framing is above the log's largest record"), "{e}");
    let e = load_err("id = 1\n[log]\nsegment_bytes = 1048575\n", &[]);
    assert!(e.contains("log.segment_bytes: 1048575 is below 1048576"), "{e}");
    let small = "id = 1\n[log]\nsegment_bytes = 4194304\n[send]\nentry_bytes_max = 2097152\n[limits]\nbody_bytes_max = 1048576\n";
    assert_eq!(load_text(small, &[])?.log.segment_bytes, 4 << 20);
    Ok(())
}

/// Keys the file could not set before the broker owned its options: labels (from the file and
/// the environment, as strings whatever they look like), the store's memtable, the log's
/// segments and reclaim, the metadata group's snapshots.
#[test]
fn labels_store_log_and_metadata_snapshot_keys_can_be_set() -> anyhow::Result<()> {
    let config = load_text(
        "id = 1\n[labels]\nzone = \"a\"\n[store]\nmemtable_bytes = 1048576\n[log]\nsegment_bytes = 33554432\nreclaim_after_segments = 8\n\
         [raft]\nmeta_snapshot_every_entries = 64\nmeta_snapshot_keep_entries = 8\n",
        &[("RAFTMQ_LABELS__RACK", "7")],
    )?;
    let labels: Vec<(&str, &str)> = config.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(labels, [("rack", "7"), ("zone", "a")]);
    assert_eq!(config.store.memtable_bytes, 1 << 20);
    assert_eq!((config.log.segment_bytes, config.log.reclaim_after_segments), (32 << 20, 8));
    assert_eq!((config.raft.meta_snapshot_every_entries, config.raft.meta_snapshot_keep_entries), (64, 8));
    let e = load_err("id = 1\n[store]\nmemtable_bytes = 0\n", &[]);
    assert!(e.contains("store.memtable_bytes: must be above 0"), "{e}");
    let e = load_err("id = 1\n[log]\nreclaim_after_segments = 0\n", &[]);
    assert!(e.contains("log.reclaim_after_segments: must be at least 1"), "{e}");
    Ok(())
}

/// The jepsen harness writes the broker's test-mode control files by name: the names must be
/// the broker's.
#[test]
fn the_harness_names_the_brokers_test_mode_files() {
    assert_eq!(jepsen::cluster::FSYNC_DELAY_FILE, broker::options::FSYNC_DELAY_FILE);
    assert_eq!(jepsen::cluster::STORE_FLUSH_FILE, broker::options::STORE_FLUSH_FILE);
    assert_eq!(jepsen::cluster::STORE_FLUSHED_FILE, broker::options::STORE_FLUSHED_FILE);
}

/// An address that is not `IP:PORT` is named with its key, its value and the form wanted.
#[test]
fn a_listening_address_that_does_not_parse_shows_the_form() {
    let e = load_err("id = 1\nlisten = \"localhost:8081\"\n", &[]);
    assert!(e.contains("listen: \"localhost:8081\" is not an IP address and port (127.0.0.1:8081, [::1]:8081)"), "{e}");
    let e = load_err("id = 1", &[("RAFTMQ_METRICS_LISTEN", "nope")]);
    assert!(e.contains("metrics_listen: \"nope\" is not an IP address and port") && e.contains("RAFTMQ_METRICS_LISTEN"), "{e}");
}

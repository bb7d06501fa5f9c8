//! The broker's configuration: a TOML file (`broker.toml`) under `RAFTMQ_*` environment overrides.
//!
//! Layers, lowest first: the defaults (documented in [`BrokerConfig::default_toml`]), the file,
//! then one environment variable per key: `RAFTMQ_DATA_DIR`, `RAFTMQ_RAFT__HEARTBEAT_INTERVAL_MS`
//! (`__` separates a section from its key). String keys take a variable's value as it is,
//! `controllers` takes a comma-separated list, numbers are parsed.
//!
//! Only variables whose first part names a top-level key are read, so unrelated `RAFTMQ_*`
//! variables (a client's settings, or the `RAFTMQ_PORT` that Kubernetes sets for a service named
//! raftmq) cannot stop a broker; inside a known section an unknown key is an error, as it is in
//! the file. Every error names the key and where its value came from.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use controller::GroupOptions;
use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "RAFTMQ_";

/// Largest broker id: the documented range of ids is 1..=2^63.
const ID_MAX: u64 = 1 << 63;

/// Most voters of the metadata group: 7 survive 3 failures, and more would only slow every
/// metadata commit, which waits for a majority of them.
const CONTROLLERS_MAX: usize = 7;

/// A broker's configuration, loaded by [`BrokerConfig::load`] and validated: addresses are
/// parsed, unset advertised addresses and an empty `controllers` are replaced by their defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Unique in the cluster, 1..=2^63 (the file can only say up to 2^63 - 1: TOML integers are i64).
    pub id: u64,
    /// `log/`, `store/` and `meta/` go under it. A relative path is relative to the working directory.
    pub data_dir: PathBuf,
    /// Client gRPC (QueueService, AdminService).
    pub listen: SocketAddr,
    /// What clients are told to connect to: `host:port`, the host may be a name. `listen` when unset.
    pub advertise: String,
    /// Raft transport and broker-to-broker calls.
    pub peer_listen: SocketAddr,
    /// What other brokers are told: `host:port`. `peer_listen` when unset.
    pub peer_advertise: String,
    /// Prometheus `/metrics` over HTTP; `None` when off.
    pub metrics_listen: Option<SocketAddr>,
    /// The metadata group's voters as (broker id, peer `host:port`), 1..=7 with distinct ids.
    /// This broker alone (`[(id, peer_advertise)]`) when the file leaves it empty. This broker
    /// need not be one of them.
    pub controllers: Vec<(u64, String)>,
    pub raft: RaftConfig,
    pub limits: LimitsConfig,
    pub send: SendConfig,
    pub topic_defaults: TopicDefaults,
    pub retention: RetentionConfig,
    pub log: LogConfig,
    pub store: StoreConfig,
    pub testing: TestingConfig,
}

/// Timing of every Raft group the broker hosts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    /// Default 500.
    pub heartbeat_interval_ms: u64,
    /// Greater than `heartbeat_interval_ms`. Default 1500.
    pub election_timeout_min_ms: u64,
    /// Greater than `election_timeout_min_ms`. Default 3000.
    pub election_timeout_max_ms: u64,
    /// A queue group with no new entry for this long hibernates: no heartbeats, no election
    /// timer, until it is written again or its leader's broker stops answering. 0: never.
    /// Default 10000.
    pub hibernate_after_ms: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        Self { heartbeat_interval_ms: 500, election_timeout_min_ms: 1500, election_timeout_max_ms: 3000, hibernate_after_ms: 10_000 }
    }
}

/// Limits on client requests, enforced at the edge before anything is proposed. All > 0.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Default 4 MiB.
    pub body_bytes_max: usize,
    /// Keys and values of one message's properties, UTF-8 bytes. Default 16 KiB.
    pub properties_bytes_max: usize,
    /// Topic and consumer group names. Default 127.
    pub name_chars_max: usize,
    /// Default 256.
    pub messages_per_send_max: usize,
    /// Default 64.
    pub keys_per_message_max: usize,
    /// A tag or a key. Default 1 KiB.
    pub tag_bytes_max: usize,
    /// Longest a fetch may wait for messages. Default 30000.
    pub fetch_wait_ms_max: u64,
    /// Default 1024.
    pub in_flight_requests_per_connection: usize,
    /// Bytes of client requests (every RPC, each body counted whole as it arrives, before it is
    /// decoded) read, decoded or served at once on this broker, over all connections. A request
    /// that finds no room waits, unread (HTTP/2 flow control holds its client back), until there
    /// is, or until just before its deadline: then RESOURCE_EXHAUSTED, nothing done. At least
    /// the largest request (`send.entry_bytes_max` plus 1 MiB). Formerly
    /// `in_flight_send_bytes_max` (sends only, counted once decoded, BUSY when full), still read
    /// under that name. Default 256 MiB.
    #[serde(alias = "in_flight_send_bytes_max")]
    pub in_flight_request_bytes_max: usize,
    /// Consumer groups one queue takes offset commits from; a commit under one more name is
    /// RESOURCE_EXHAUSTED. 1..=16383 (with the queue's own offset, what one checkpoint holds).
    /// Default 1024.
    pub consumer_groups_per_queue_max: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            body_bytes_max: 4 << 20,
            properties_bytes_max: 16 << 10,
            name_chars_max: 127,
            messages_per_send_max: 256,
            keys_per_message_max: 64,
            tag_bytes_max: 1 << 10,
            fetch_wait_ms_max: 30_000,
            in_flight_requests_per_connection: 1024,
            in_flight_request_bytes_max: broker::server::IN_FLIGHT_REQUEST_BYTES_DEFAULT,
            consumer_groups_per_queue_max: broker::server::CONSUMER_GROUPS_PER_QUEUE_DEFAULT,
        }
    }
}

/// The leader's send path: concurrent sends to one group are batched into one Raft entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SendConfig {
    /// Longest a send waits for others to share its entry; 0 sends at once. Default 1000.
    pub batch_wait_us: u64,
    /// Default 256.
    pub batch_messages_max: usize,
    /// Bytes of messages in one entry, each counted whole (body, keys, properties, tag, id). At
    /// least the largest message the limits admit (`limits.body_bytes_max` plus up to 338 KiB at
    /// the default limits), and with 1 KiB of framing at most the log's 16 MiB record. Default
    /// 8 MiB.
    pub entry_bytes_max: usize,
    /// Messages accepted but not yet committed, per group; more are answered BUSY. Default 4096.
    pub in_flight_messages_per_group: usize,
    /// Entries of one group proposed and not yet applied (the pipeline's depth). Default 8.
    pub entries_in_flight_per_group: usize,
}

impl Default for SendConfig {
    fn default() -> Self {
        Self {
            batch_wait_us: 1000,
            batch_messages_max: 256,
            entry_bytes_max: 8 << 20,
            in_flight_messages_per_group: 4096,
            entries_in_flight_per_group: 8,
        }
    }
}

impl LimitsConfig {
    /// The edge's limits these keys set.
    pub fn edge_limits(&self) -> broker::edge::Limits {
        broker::edge::Limits {
            body_bytes_max: self.body_bytes_max,
            properties_bytes_max: self.properties_bytes_max,
            name_chars_max: self.name_chars_max,
            messages_per_send_max: self.messages_per_send_max,
            keys_per_message_max: self.keys_per_message_max,
            tag_bytes_max: self.tag_bytes_max,
        }
    }
}

impl SendConfig {
    /// The send batcher's bounds these keys set.
    pub fn batch_limits(&self) -> broker::queue::SendBatchLimits {
        broker::queue::SendBatchLimits {
            messages_max: self.batch_messages_max,
            entry_bytes_max: self.entry_bytes_max,
            wait_max: std::time::Duration::from_micros(self.batch_wait_us),
            in_flight_messages_max: self.in_flight_messages_per_group,
            entries_in_flight_max: self.entries_in_flight_per_group,
        }
    }
}

/// What CreateTopic uses when a request leaves a setting at zero.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicDefaults {
    /// Default 4.
    pub queue_count: u32,
    /// Replicas of each queue group, at least 1. Default 3.
    pub replication_factor: u32,
    /// Each queue group records a checkpoint (a possible trim point and snapshot) every this
    /// many Raft entries, within 1..=1,048,576; fixed for a topic when it is created. Default
    /// 4096.
    pub checkpoint_interval_entries: u64,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        Self { queue_count: 4, replication_factor: 3, checkpoint_interval_entries: GroupOptions::DEFAULT.checkpoint_interval_entries }
    }
}

/// What each queue group keeps. Messages are removed a checkpoint at a time (every
/// `checkpoint_interval_entries` Raft entries of the group), so a group keeps somewhat more than
/// the limits say.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Messages older than this may be removed. Default 72 h (RocketMQ's default).
    pub max_age_ms: u64,
    /// Raft entries a group keeps at most; 0: no limit. Default 0.
    pub max_log_entries: u64,
    /// How often each group is checked. Default 60000.
    pub check_interval_ms: u64,
    /// A group with entries since its newest checkpoint and no checkpoint by entries for this
    /// long gets one by time, so a quiet group trims too. Above 0. Default 60000.
    pub checkpoint_interval_ms: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self { max_age_ms: 72 * 60 * 60 * 1000, max_log_entries: 0, check_interval_ms: 60_000, checkpoint_interval_ms: 60_000 }
    }
}

/// The Raft log shared by every group (`DATA_DIR/log`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Size of each segment file, preallocated. Disk is reclaimed a whole segment at a time, so
    /// this is also the granularity of reclaim. It must hold the largest record
    /// (`send.entry_bytes_max` and 1 KiB of framing), and at least 1 MiB. Default 64 MiB.
    pub segment_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { segment_bytes: raft_log::LogOptions::default().segment_bytes }
    }
}

/// The queue store (RocksDB).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// How often the store is flushed to disk, above 0. Its WAL is off: after a crash, a group
    /// re-applies its Raft log from the last flush, so this bounds restart time. Default 30000.
    pub flush_interval_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { flush_interval_ms: 30_000 }
    }
}

/// **Test only**: modes that break durability on purpose, for the jepsen harness (`raftmq jepsen
/// run --power-loss`, and the proof that its checker catches lost writes). Never set in a real
/// deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TestingConfig {
    /// The raft log keeps writes not yet fdatasynced in memory, so a SIGKILL loses what a power
    /// cut would. Default false.
    pub power_loss: bool,
    /// Acknowledge sends before fdatasync and sync only every this many ms: acknowledged
    /// messages can be lost. 0: off (the default).
    pub ack_before_fsync_ms: u64,
    /// Every fdatasync of the raft log first waits for the milliseconds written in
    /// `DATA_DIR/testing-fsync-delay-ms` (absent: none), for the slow-fsync nemesis; `fail` in
    /// it makes every fdatasync fail (a dead disk). Default false.
    pub fsync_delay_file: bool,
    /// With `power_loss`, a power cut also tears the last page written of each raft log file:
    /// a prefix of what was written there since the last sync survives, the rest is garbage or
    /// zeros. Default false.
    pub torn_pages: bool,
    /// Flush the queue store whenever `DATA_DIR/testing-store-flush` holds a new number, then
    /// write it to `DATA_DIR/testing-store-flushed`, for the store-loss nemesis. Default false.
    pub store_flush_file: bool,
}

/// The file as written: every key optional, addresses still text.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct ConfigFile {
    id: Option<u64>,
    data_dir: PathBuf,
    listen: String,
    advertise: String,
    peer_listen: String,
    peer_advertise: String,
    metrics_listen: String,
    controllers: Vec<String>,
    raft: RaftConfig,
    limits: LimitsConfig,
    send: SendConfig,
    topic_defaults: TopicDefaults,
    retention: RetentionConfig,
    log: LogConfig,
    store: StoreConfig,
    testing: TestingConfig,
}

impl Default for ConfigFile {
    fn default() -> Self {
        Self {
            id: None,
            data_dir: PathBuf::from("./raftmq-data"),
            listen: "127.0.0.1:8081".to_owned(),
            advertise: String::new(),
            peer_listen: "127.0.0.1:9081".to_owned(),
            peer_advertise: String::new(),
            metrics_listen: String::new(),
            controllers: Vec::new(),
            raft: RaftConfig::default(),
            limits: LimitsConfig::default(),
            send: SendConfig::default(),
            topic_defaults: TopicDefaults::default(),
            retention: RetentionConfig::default(),
            log: LogConfig::default(),
            store: StoreConfig::default(),
            testing: TestingConfig::default(),
        }
    }
}

/// The documented default file; `default_file_is_the_defaults` keeps it equal to the code.
const DEFAULT_TOML: &str = r#"# raftmq broker configuration.
#
# Every key but `id` is optional; the values here are the defaults. Unknown keys are an error.
# An environment variable RAFTMQ_<KEY> overrides a key, with `__` between a section and its key:
# RAFTMQ_DATA_DIR=/var/lib/raftmq, RAFTMQ_RAFT__HEARTBEAT_INTERVAL_MS=250,
# RAFTMQ_CONTROLLERS=1@10.0.0.1:9081,2@10.0.0.2:9081,3@10.0.0.3:9081.

# This broker's id, unique in the cluster: 1 to 2^63 - 1. Required.
id = 1
# The broker's directory: log/, store/ and meta/ go under it. A relative path is relative to the
# broker's working directory.
data_dir = "./raftmq-data"
# Client gRPC (QueueService, AdminService).
listen = "127.0.0.1:8081"
# What clients are told to connect to, host:port (the host may be a name). Empty: `listen`.
advertise = ""
# Raft transport and broker-to-broker calls.
peer_listen = "127.0.0.1:9081"
# What other brokers are told to connect to, host:port. Empty: `peer_listen`.
peer_advertise = ""
# Prometheus /metrics over HTTP, host:port. Empty: off.
metrics_listen = ""
# The metadata group's voters, "ID@PEER_HOST:PORT", 1 to 7 with distinct ids; every broker of a
# cluster lists the same ones. This broker need not be among them: it then only follows the
# group. An even count is allowed but tolerates no more failures than one voter fewer (4 voters
# survive 1 failure, like 3). Empty: this broker alone, a cluster of one.
controllers = []

# Timing of every Raft group on this broker.
[raft]
heartbeat_interval_ms = 500
# Must exceed heartbeat_interval_ms.
election_timeout_min_ms = 1500
# Must exceed election_timeout_min_ms.
election_timeout_max_ms = 3000
# A queue group with no new entry for this long hibernates: no heartbeats, no election timer,
# until it is written again or its leader's broker stops answering. 0: never.
hibernate_after_ms = 10000

# Limits on client requests, checked before anything is proposed. Each must be above 0.
[limits]
body_bytes_max = 4194304
# Keys and values of one message's properties, UTF-8 bytes.
properties_bytes_max = 16384
# Topic and consumer group names.
name_chars_max = 127
messages_per_send_max = 256
keys_per_message_max = 64
# One tag or one key.
tag_bytes_max = 1024
# Longest a fetch may wait for messages to arrive.
fetch_wait_ms_max = 30000
in_flight_requests_per_connection = 1024
# Bytes of client requests (every RPC, each body counted as it arrives, before it is decoded)
# read, decoded or served at once on this broker, over all connections. A request that finds no
# room waits unread (flow control holds its client back) until there is, or until just before
# its deadline: then RESOURCE_EXHAUSTED, nothing done. So memory stays bounded however much
# clients offer. At least the largest request: send.entry_bytes_max plus 1 MiB of framing.
# Formerly in_flight_send_bytes_max, still read under that name.
in_flight_request_bytes_max = 268435456
# Consumer groups one queue takes offset commits from; a commit under one more name is refused
# (RESOURCE_EXHAUSTED). 1..=16383: with the queue's own offset, what one checkpoint holds, and
# a queue group that could record no checkpoint could never trim.
consumer_groups_per_queue_max = 1024

# The leader batches concurrent sends to one queue group into one Raft entry.
[send]
# Longest a send waits for others to share its entry; 0 sends at once.
batch_wait_us = 1000
batch_messages_max = 256
# Bytes of messages per entry, each counted whole (body, keys, properties, tag). Must hold the
# largest message the [limits] admit (body_bytes_max plus up to 338 KiB at the defaults), and
# fit one 16 MiB log record with 1 KiB of framing.
entry_bytes_max = 8388608
# Messages accepted but not yet committed, per group; more are answered BUSY.
in_flight_messages_per_group = 4096
# Entries of one group proposed and not yet applied: the depth of the send pipeline. While it is
# full, the next entry keeps gathering sends.
entries_in_flight_per_group = 8

# What CreateTopic uses for a setting left at zero.
[topic_defaults]
queue_count = 4
# Replicas of each queue group, at least 1; a topic needs at least this many brokers.
replication_factor = 3
# Each queue group records a checkpoint (a possible trim point and snapshot) every this many Raft
# entries, 1..=1048576; fixed for a topic when it is created. Retention frees messages a
# checkpoint at a time.
checkpoint_interval_entries = 4096

# What each queue group keeps. Messages are removed a checkpoint at a time (every
# checkpoint_interval_entries Raft entries of a group), so a group keeps somewhat more than these say.
[retention]
# Messages older than this may be removed (72 hours).
max_age_ms = 259200000
# Raft entries a group keeps at most; 0: no limit.
max_log_entries = 0
# How often each group is checked.
check_interval_ms = 60000
# A group that had entries since its newest checkpoint, and reached none by entries for this
# long, gets a checkpoint by time: a quiet group trims too. Must be above 0.
checkpoint_interval_ms = 60000

# The Raft log shared by every group.
[log]
# Size of each segment file, preallocated; disk is reclaimed a whole segment at a time. Must hold
# the largest record (send.entry_bytes_max plus 1 KiB of framing), and at least 1 MiB.
segment_bytes = 67108864

# The queue store (RocksDB).
[store]
# How often the store is flushed to disk. Its WAL is off: after a crash, a group re-applies its
# Raft log from the last flush, so this bounds restart time. Must be above 0.
flush_interval_ms = 30000

# TEST ONLY: modes that break durability on purpose, for the jepsen harness. Never set them in a
# real deployment.
[testing]
# The raft log keeps writes not yet fdatasynced in memory: a SIGKILL loses what a power cut would.
power_loss = false
# Acknowledge sends before fdatasync, syncing only every this many ms: acknowledged messages can
# be lost. 0: off.
ack_before_fsync_ms = 0
# Every fdatasync of the raft log first waits for the milliseconds written in
# DATA_DIR/testing-fsync-delay-ms (absent: no wait); "fail" there makes every fdatasync fail.
fsync_delay_file = false
# With power_loss: a power cut also tears the last page written of each raft log file.
torn_pages = false
# Flush the queue store whenever DATA_DIR/testing-store-flush holds a new number, then write it
# to DATA_DIR/testing-store-flushed.
store_flush_file = false
"#;

/// One configuration key that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct InvalidKey {
    /// The key's path in the file: `raft.election_timeout_min_ms`, `controllers[1]`.
    pub key: String,
    pub reason: String,
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> InvalidKey {
    InvalidKey { key: key.into(), reason: reason.into() }
}

impl BrokerConfig {
    /// Loads the file at `path` (none: defaults and environment only), applies the `RAFTMQ_*`
    /// variables of this process, and validates. The error lists every problem with its key.
    pub fn load(path: Option<&Path>) -> anyhow::Result<BrokerConfig> {
        Self::load_from(path, std::env::vars_os())
    }

    /// The documented default configuration file (`raftmq broker --print-default-config`).
    pub fn default_toml() -> &'static str {
        DEFAULT_TOML
    }

    /// [`BrokerConfig::load`] with the environment given (tests pass their own).
    pub(crate) fn load_from(path: Option<&Path>, env: impl IntoIterator<Item = (OsString, OsString)>) -> anyhow::Result<BrokerConfig> {
        let text = match path {
            Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading broker config {}", p.display()))?),
            None => None,
        };
        let env = env_overrides(env).map_err(|problems| anyhow::anyhow!("{}", problems.join("\n")))?;
        let sources = Sources { file: path, env: &env };
        let mut figment = Figment::new();
        if let Some(text) = &text {
            figment = figment.merge(Toml::string(text));
        }
        for var in &env {
            figment = figment.merge(var);
        }
        let file: ConfigFile = figment.extract().map_err(|e| anyhow::anyhow!("invalid broker config:\n{}", sources.describe(e)))?;
        file.resolve().map_err(|problems| {
            let lines: Vec<String> = problems.iter().map(|p| format!("  {p} ({})", sources.origin(&p.key))).collect();
            anyhow::anyhow!("invalid broker config:\n{}", lines.join("\n"))
        })
    }
}

impl ConfigFile {
    /// Validates and fills in the defaults that depend on other keys.
    fn resolve(self) -> Result<BrokerConfig, Vec<InvalidKey>> {
        let mut problems = Vec::new();
        let id = match self.id {
            None => {
                problems.push(invalid("id", "missing: every broker needs its own id, 1 to 2^63"));
                0
            }
            Some(id) if id == 0 || id > ID_MAX => {
                problems.push(invalid("id", format!("{id} is out of range: must be 1 to 2^63")));
                0
            }
            Some(id) => id,
        };
        let listen = socket_addr("listen", &self.listen, &mut problems);
        let peer_listen = socket_addr("peer_listen", &self.peer_listen, &mut problems);
        let metrics_listen =
            if self.metrics_listen.is_empty() { None } else { socket_addr("metrics_listen", &self.metrics_listen, &mut problems) };
        let advertise = advertised("advertise", &self.advertise, listen, &mut problems);
        let peer_advertise = advertised("peer_advertise", &self.peer_advertise, peer_listen, &mut problems);
        let controllers = controllers(&self.controllers, &mut problems);
        check_raft(&self.raft, &mut problems);
        if self.log.segment_bytes < LOG_SEGMENT_BYTES_MIN {
            problems.push(invalid("log.segment_bytes", format!("{} is below {LOG_SEGMENT_BYTES_MIN} (1 MiB)", self.log.segment_bytes)));
        }
        check_limits(&self.limits, &self.send, &self.log, &mut problems);
        if self.topic_defaults.queue_count == 0 {
            problems.push(invalid("topic_defaults.queue_count", "must be at least 1"));
        }
        if self.topic_defaults.replication_factor == 0 {
            problems.push(invalid("topic_defaults.replication_factor", "must be at least 1"));
        }
        let group_options = GroupOptions { checkpoint_interval_entries: self.topic_defaults.checkpoint_interval_entries };
        if let Err(e) = group_options.check() {
            problems.push(invalid("topic_defaults.checkpoint_interval_entries", e));
        }
        if self.retention.max_age_ms == 0 {
            problems.push(invalid("retention.max_age_ms", "must be above 0 (messages would be removed as they arrive)"));
        }
        if self.retention.check_interval_ms == 0 {
            problems.push(invalid("retention.check_interval_ms", "must be above 0"));
        }
        if self.retention.checkpoint_interval_ms == 0 {
            problems.push(invalid("retention.checkpoint_interval_ms", "must be above 0 (every check would add an entry)"));
        }
        if self.store.flush_interval_ms == 0 {
            problems.push(invalid("store.flush_interval_ms", "must be above 0"));
        }
        match (listen, peer_listen, problems.is_empty()) {
            (Some(listen), Some(peer_listen), true) => {
                let controllers = if controllers.is_empty() { vec![(id, peer_advertise.clone())] } else { controllers };
                Ok(BrokerConfig {
                    id,
                    data_dir: self.data_dir,
                    listen,
                    advertise,
                    peer_listen,
                    peer_advertise,
                    metrics_listen,
                    controllers,
                    raft: self.raft,
                    limits: self.limits,
                    send: self.send,
                    topic_defaults: self.topic_defaults,
                    retention: self.retention,
                    log: self.log,
                    store: self.store,
                    testing: self.testing,
                })
            }
            _ => Err(problems),
        }
    }
}

fn socket_addr(key: &str, text: &str, problems: &mut Vec<InvalidKey>) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        // Port 0 would bind a random port that no client or peer can be told in advance.
        Ok(addr) if addr.port() == 0 => {
            problems.push(invalid(key, format!("{text:?}: port 0 is not allowed")));
            None
        }
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.push(invalid(key, format!("{text:?} is not an IP address and port (127.0.0.1:8081, [::1]:8081)")));
            None
        }
    }
}

/// An advertised address: `host:port` as given, or the listening address when empty.
fn advertised(key: &str, text: &str, listen: Option<SocketAddr>, problems: &mut Vec<InvalidKey>) -> String {
    if text.is_empty() {
        return listen.map(|a| a.to_string()).unwrap_or_default();
    }
    if let Err(reason) = check_host_port(text) {
        problems.push(invalid(key, reason));
    }
    text.to_owned()
}

/// Accepts `IP:PORT`, `[IPv6]:PORT` and `NAME:PORT` with a port above 0.
fn check_host_port(text: &str) -> Result<(), String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return if addr.port() == 0 { Err(format!("{text:?}: port 0 is not allowed")) } else { Ok(()) };
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("{text:?} has no port: write host:port"));
    };
    let host_ok = !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !host_ok {
        return Err(format!("{text:?}: {host:?} is not a host name or IP address (an IPv6 address needs brackets)"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("{text:?}: {port:?} is not a port (1 to 65535)")),
    }
}

/// Parses `ID@HOST:PORT` entries: distinct ids, 1 to [`CONTROLLERS_MAX`] of them (or none).
fn controllers(entries: &[String], problems: &mut Vec<InvalidKey>) -> Vec<(u64, String)> {
    if entries.len() > CONTROLLERS_MAX {
        problems.push(invalid("controllers", format!("{} voters; at most {CONTROLLERS_MAX}", entries.len())));
    }
    let mut parsed: Vec<(u64, String)> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let key = format!("controllers[{i}]");
        match parse_controller(entry) {
            Ok((id, _)) if parsed.iter().any(|(seen, _)| *seen == id) => problems.push(invalid(key, format!("id {id} is listed twice"))),
            Ok(voter) => parsed.push(voter),
            Err(reason) => problems.push(invalid(key, reason)),
        }
    }
    parsed
}

fn parse_controller(entry: &str) -> Result<(u64, String), String> {
    let Some((id, addr)) = entry.split_once('@') else {
        return Err(format!("{entry:?} is not ID@HOST:PORT"));
    };
    match id.parse::<u64>() {
        Ok(id) if id > 0 && id <= ID_MAX => {
            check_host_port(addr).map_err(|reason| format!("in {entry:?}: {reason}"))?;
            Ok((id, addr.to_owned()))
        }
        _ => Err(format!("{entry:?}: {id:?} is not a broker id (1 to 2^63)")),
    }
}

fn check_raft(raft: &RaftConfig, problems: &mut Vec<InvalidKey>) {
    if raft.heartbeat_interval_ms == 0 {
        problems.push(invalid("raft.heartbeat_interval_ms", "must be above 0"));
    }
    // A follower that times out before a heartbeat can arrive starts elections against a live leader.
    if raft.election_timeout_min_ms <= raft.heartbeat_interval_ms {
        problems.push(invalid(
            "raft.election_timeout_min_ms",
            format!("{} must exceed raft.heartbeat_interval_ms ({})", raft.election_timeout_min_ms, raft.heartbeat_interval_ms),
        ));
    }
    // Randomising in an empty range would make candidates collide on every election.
    if raft.election_timeout_max_ms <= raft.election_timeout_min_ms {
        problems.push(invalid(
            "raft.election_timeout_max_ms",
            format!("{} must exceed raft.election_timeout_min_ms ({})", raft.election_timeout_max_ms, raft.election_timeout_min_ms),
        ));
    }
}

/// Smallest log segment: a segment per few entries would spend more on rolls than on writes.
const LOG_SEGMENT_BYTES_MIN: u64 = 1 << 20;

fn check_limits(limits: &LimitsConfig, send: &SendConfig, log: &LogConfig, problems: &mut Vec<InvalidKey>) {
    let problems_before = problems.len();
    let positive: [(&str, u64); 13] = [
        ("limits.body_bytes_max", limits.body_bytes_max as u64),
        ("limits.properties_bytes_max", limits.properties_bytes_max as u64),
        ("limits.name_chars_max", limits.name_chars_max as u64),
        ("limits.messages_per_send_max", limits.messages_per_send_max as u64),
        ("limits.keys_per_message_max", limits.keys_per_message_max as u64),
        ("limits.tag_bytes_max", limits.tag_bytes_max as u64),
        ("limits.fetch_wait_ms_max", limits.fetch_wait_ms_max),
        ("limits.in_flight_requests_per_connection", limits.in_flight_requests_per_connection as u64),
        ("limits.in_flight_request_bytes_max", limits.in_flight_request_bytes_max as u64),
        ("send.batch_messages_max", send.batch_messages_max as u64),
        ("send.entry_bytes_max", send.entry_bytes_max as u64),
        ("send.in_flight_messages_per_group", send.in_flight_messages_per_group as u64),
        ("send.entries_in_flight_per_group", send.entries_in_flight_per_group as u64),
    ];
    for (key, value) in positive {
        if value == 0 {
            problems.push(invalid(key, "must be above 0"));
        }
    }
    // The chain edge → entry → log record → transport (broker::size_limits): whatever the edge
    // admits must be storable and replicable, or a group stops at the first such message; and
    // the budget of request bytes must hold the largest request, or it would wait for ever.
    if problems.len() == problems_before {
        let log = raft_log::LogOptions { segment_bytes: log.segment_bytes, ..raft_log::LogOptions::default() };
        for p in broker::size_limits::check(&limits.edge_limits(), &send.batch_limits(), &log, limits.in_flight_request_bytes_max) {
            problems.push(invalid(p.key, p.reason));
        }
    }
    let consumer_groups_max = broker::queue::CONSUMER_GROUPS_PER_QUEUE_MAX;
    if !(1..=consumer_groups_max).contains(&limits.consumer_groups_per_queue_max) {
        problems.push(invalid(
            "limits.consumer_groups_per_queue_max",
            format!(
                "{} is not within 1..={consumer_groups_max} (a checkpoint holds {} offsets: the queue's and its consumer groups')",
                limits.consumer_groups_per_queue_max,
                broker::store::CHECKPOINT_ITEMS_MAX
            ),
        ));
    }
}

/// One `RAFTMQ_*` variable as a layer of its own, so that errors can name the variable.
#[derive(Debug, Clone)]
struct EnvOverride {
    var: String,
    /// Dotted key path: `raft.heartbeat_interval_ms`.
    key: String,
    value: Value,
}

impl Provider for EnvOverride {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("environment variable {}", self.var))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        match figment::util::nest(&self.key, self.value.clone()).into_dict() {
            Some(dict) => Ok(Profile::Default.collect(dict)),
            None => Err(figment::Error::from(format!("{} does not name a key", self.var))),
        }
    }
}

/// The `RAFTMQ_*` variables that name a key, typed by the key's default: strings as they are,
/// lists split at commas, anything else parsed (numbers).
fn env_overrides(env: impl IntoIterator<Item = (OsString, OsString)>) -> Result<Vec<EnvOverride>, Vec<String>> {
    let defaults = Value::serialize(ConfigFile::default()).unwrap_or_else(|_| Value::from(Dict::new()));
    let mut top_level: BTreeSet<String> = defaults.as_dict().map(|d| d.keys().cloned().collect()).unwrap_or_default();
    top_level.insert("id".to_owned());
    let mut overrides = Vec::new();
    let mut problems = Vec::new();
    for (name, value) in env {
        let Some(var) = name.to_str() else { continue };
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else { continue };
        let parts: Vec<String> = rest.to_ascii_lowercase().split("__").map(str::to_owned).collect();
        if !top_level.contains(&parts[0]) {
            continue;
        }
        if parts.iter().any(String::is_empty) {
            problems.push(format!("{var}: an empty part in the key; write RAFTMQ_SECTION__KEY"));
            continue;
        }
        let Some(text) = value.to_str() else {
            problems.push(format!("{var}: the value is not UTF-8"));
            continue;
        };
        let key = parts.join(".");
        let value = match defaults.find_ref(&key) {
            Some(Value::String(..)) => Value::from(text.to_owned()),
            Some(Value::Array(..)) => {
                let items: Vec<String> = text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
                Value::from(items)
            }
            _ => text.parse::<Value>().unwrap_or_else(|never: Infallible| match never {}),
        };
        overrides.push(EnvOverride { var: var.to_owned(), key, value });
    }
    // The order of the environment is arbitrary; sorting makes every run layer them the same way.
    overrides.sort_by(|a, b| a.var.cmp(&b.var));
    if problems.is_empty() { Ok(overrides) } else { Err(problems) }
}

/// Where the values came from, to say in an error which one to fix.
struct Sources<'a> {
    file: Option<&'a Path>,
    env: &'a [EnvOverride],
}

impl Sources<'_> {
    /// The variable that set `key` (or a section holding it), else the file, else the defaults.
    fn origin(&self, key: &str) -> String {
        let base = key.split('[').next().unwrap_or(key);
        let from_env = self.env.iter().find(|v| base == v.key || base.starts_with(&format!("{}.", v.key)));
        match (from_env, self.file) {
            (Some(v), _) => format!("from environment variable {}", v.var),
            (None, Some(file)) => format!("from {}", file.display()),
            (None, None) => "from the defaults".to_owned(),
        }
    }

    /// One line per error of figment's chain, each naming the key and its source.
    fn describe(&self, error: figment::Error) -> String {
        let mut lines = Vec::new();
        for e in error {
            // For an unknown field, figment's path already ends with the field.
            let what = match &e.kind {
                figment::error::Kind::UnknownField(_, expected) => format!("unknown key; expected one of: {}", expected.join(", ")),
                kind => kind.to_string(),
            };
            let key = e.path.join(".");
            if key.is_empty() {
                let source = self.file.map(|f| f.display().to_string()).unwrap_or_else(|| "the environment".to_owned());
                lines.push(format!("  {source}: {what}"));
            } else {
                lines.push(format!("  {key}: {what} ({})", self.origin(&key)));
            }
        }
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests;

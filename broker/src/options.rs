//! The broker's options, in one place: every key of a broker's configuration file, with its
//! default, and the one [`BrokerOptions::validate`] that the `raftmq broker` binary and a
//! library caller both get. The binary only layers a file and the environment over these
//! (`raftmq/src/config.rs`); it mirrors no field.
//!
//! The sections are the types of the layers that use them, so a key is declared once: `[limits]`
//! is the edge's [`Limits`], `[send]` the send batcher's [`SendBatchLimits`], `[log]` raft-log's
//! [`LogOptions`], `[store]` the queue store's [`StoreOptions`]. [`DEFAULT_TOML`] documents
//! every key; a test keeps it equal to the code's defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use controller::GroupOptions;
use raft_log::LogOptions;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

use crate::edge::Limits;
use crate::queue::SendBatchLimits;
use crate::raft::BrokerId;
use crate::retention::RetentionPolicy;
use crate::store::StoreOptions;

/// Largest broker id: the documented range of ids is 1..=2^63.
pub const BROKER_ID_MAX: u64 = 1 << 63;
/// Most voters of the metadata group: 7 survive 3 failures, and more would only slow every
/// metadata commit, which waits for a majority of them.
pub const CONTROLLERS_MAX: usize = 7;
/// Smallest log segment a broker runs with: a segment per few entries would spend more on rolls
/// than on writes.
pub const LOG_SEGMENT_BYTES_MIN: u64 = 1 << 20;

/// Under the data directory, with `[testing] fsync_delay_file`: the milliseconds every
/// fdatasync of the raft log first waits (jepsen's slow-fsync nemesis writes it).
pub const FSYNC_DELAY_FILE: &str = "testing-fsync-delay-ms";
/// Under the data directory, with `[testing] store_flush_file`: a new number here asks for a
/// store flush (jepsen's store-loss nemesis)...
pub const STORE_FLUSH_FILE: &str = "testing-store-flush";
/// ...and the broker writes the number here once the flush is done.
pub const STORE_FLUSHED_FILE: &str = "testing-store-flushed";

/// The documented default configuration file (`raftmq broker --print-default-config`).
pub const DEFAULT_TOML: &str = include_str!("options/default.toml");

/// Everything a broker is configured with: the keys of its configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerOptions {
    /// Unique in the cluster, 1..=2^63. No default: 0 is refused.
    pub id: BrokerId,
    /// `log/`, `store/` and `meta/` go under it. Default `./raftmq-data`.
    pub data_dir: PathBuf,
    /// Client gRPC (QueueService, AdminService). Port 0 picks a free one (tests; the binary
    /// refuses it). Default 127.0.0.1:8081.
    #[serde(with = "socket_addr")]
    pub listen: SocketAddr,
    /// What clients are told to connect to, `host:port` (the host may be a name); empty: the
    /// address `listen` bound.
    pub advertise: String,
    /// Raft transport and broker-to-broker calls. Default 127.0.0.1:9081.
    #[serde(with = "socket_addr")]
    pub peer_listen: SocketAddr,
    /// What other brokers are told, `host:port`; empty: the address `peer_listen` bound.
    pub peer_advertise: String,
    /// Prometheus `/metrics` over HTTP; `None` (empty in the file): off.
    #[serde(with = "empty_is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// The metadata group's voters, `ID@PEER_HOST:PORT`, 1..=7 with distinct ids; empty: this
    /// broker alone. See [`Self::controller_voters`].
    pub controllers: Vec<String>,
    /// Labels of this broker (`zone = "a"`), recorded when it registers, for placement.
    pub labels: BTreeMap<String, String>,
    pub raft: RaftOptions,
    pub limits: Limits,
    pub send: SendBatchLimits,
    pub topic_defaults: TopicDefaults,
    pub retention: RetentionOptions,
    pub log: LogOptions,
    pub store: StoreOptions,
    pub testing: TestingOptions,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        Self {
            id: 0,
            data_dir: PathBuf::from("./raftmq-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            advertise: String::new(),
            peer_listen: SocketAddr::from(([127, 0, 0, 1], 9081)),
            peer_advertise: String::new(),
            metrics_listen: None,
            controllers: Vec::new(),
            labels: BTreeMap::new(),
            raft: RaftOptions::default(),
            limits: Limits::default(),
            send: SendBatchLimits::default(),
            topic_defaults: TopicDefaults::default(),
            retention: RetentionOptions::default(),
            log: LogOptions::default(),
            store: StoreOptions::default(),
            testing: TestingOptions::default(),
        }
    }
}

/// Timing of every Raft group the broker hosts, and the metadata group's snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, SmartDefault)]
#[serde(default, deny_unknown_fields)]
pub struct RaftOptions {
    #[default(500)]
    pub heartbeat_interval_ms: u64,
    /// Greater than `heartbeat_interval_ms`.
    #[default(1500)]
    pub election_timeout_min_ms: u64,
    /// Greater than `election_timeout_min_ms`.
    #[default(3000)]
    pub election_timeout_max_ms: u64,
    /// A queue group with no new entry for this long hibernates: no heartbeats, no election
    /// timer, until it is written again or its leader's broker stops answering. 0: never.
    #[default(10_000)]
    pub hibernate_after_ms: u64,
    /// The metadata group snapshots once this many entries were committed since its last
    /// snapshot, and purges its log below it: its state is the whole cluster map, so without
    /// it its first entries would pin the log's first segment for ever.
    #[default(1024)]
    pub meta_snapshot_every_entries: u64,
    /// Entries kept below the metadata group's snapshot when purging, so a learner a little
    /// behind catches up from the log rather than by a snapshot.
    #[default(256)]
    pub meta_snapshot_keep_entries: u64,
}

impl RaftOptions {
    /// openraft's options for a queue group: these timings; snapshots and purges are the
    /// broker's decision (retention), never a log-size policy.
    pub fn queue_group_config(&self) -> openraft::Config {
        openraft::Config {
            cluster_name: "raftmq".into(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: 0,
            // A restarted leader must win an election before it serves. openraft 0.10 otherwise
            // restores leadership at once, which is unsafe when the state machine is not flushed
            // on apply and the committed log id is not persisted at once (both true here:
            // RocksDB's WAL is off, and raft-log saves `committed` with the next round): the
            // restored leader's commit index can lag what was committed, so a read index answers
            // from stale state. jepsen found it: after a coordinated power loss, a consumer
            // offset read returned 7142 after a commit of 7149 had been acknowledged.
            enable_leader_restore: Some(false),
            ..Default::default()
        }
    }

    /// openraft's options for the metadata group: a queue group's, snapshotting by log length.
    pub fn meta_group_config(&self) -> openraft::Config {
        openraft::Config {
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.meta_snapshot_every_entries.max(1)),
            max_in_snapshot_log_to_keep: self.meta_snapshot_keep_entries,
            ..self.queue_group_config()
        }
    }

    /// How long a queue group stays quiet before it hibernates; `None`: never.
    pub fn hibernate_after(&self) -> Option<Duration> {
        Some(Duration::from_millis(self.hibernate_after_ms)).filter(|d| !d.is_zero())
    }
}

/// What CreateTopic uses when a request leaves a setting at zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicDefaults {
    /// Default 4.
    pub queue_count: u32,
    /// Replicas of each queue group, at least 1; a topic needs at least this many live brokers.
    /// Default 3.
    pub replication_factor: u32,
    /// Each queue group records a checkpoint (a possible trim point and snapshot) every this
    /// many Raft entries, within 1..=1,048,576; fixed for a topic when it is created. Default
    /// [`GroupOptions::DEFAULT`]'s (4,096 entries).
    pub checkpoint_interval_entries: u64,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        Self { queue_count: 4, replication_factor: 3, checkpoint_interval_entries: GroupOptions::DEFAULT.checkpoint_interval_entries }
    }
}

/// What each queue group keeps, and how often that is checked. Messages are removed a
/// checkpoint at a time, so a group keeps somewhat more than the limits say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionOptions {
    /// Messages older than this may be removed. Default 72 h (RocketMQ's default).
    pub max_age_ms: u64,
    /// Raft entries a group keeps at most; 0: no limit. Default 0.
    pub max_log_entries: u64,
    /// How often each group led here is checked. Default 60000.
    pub check_interval_ms: u64,
    /// A group led here, with entries since its newest checkpoint and none reached by entries
    /// for this long, gets a checkpoint by time, so a quiet group trims too. Above 0. Default
    /// 60000: a quiet group's messages become trimmable within about two check intervals of
    /// their last entry, for at most one entry per quiet group per minute (1,000 groups: under
    /// 17 entries a second, and only while they take entries).
    pub checkpoint_interval_ms: u64,
}

impl Default for RetentionOptions {
    fn default() -> Self {
        let policy = RetentionPolicy::default();
        Self { max_age_ms: policy.max_age_ms, max_log_entries: 0, check_interval_ms: 60_000, checkpoint_interval_ms: 60_000 }
    }
}

impl RetentionOptions {
    /// The trim decision's policy these keys set.
    pub fn policy(&self) -> RetentionPolicy {
        RetentionPolicy {
            max_age_ms: self.max_age_ms,
            max_log_entries: if self.max_log_entries == 0 { u64::MAX } else { self.max_log_entries },
        }
    }

    pub fn check_interval(&self) -> Duration {
        Duration::from_millis(self.check_interval_ms)
    }

    pub fn checkpoint_interval(&self) -> Duration {
        Duration::from_millis(self.checkpoint_interval_ms)
    }
}

/// **Test only**: modes that break durability on purpose, for the jepsen harness (`raftmq
/// jepsen run --power-loss`, and the proof that its checker catches lost writes). Never set in
/// a real deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TestingOptions {
    /// The raft log keeps writes not yet fdatasynced in process memory
    /// (`raft_log::fault::PowerLossFileSystem`), so a SIGKILL loses exactly what a power cut
    /// would. Default false.
    pub power_loss: bool,
    /// Acknowledge sends before fdatasync and sync only every this many ms: acknowledged
    /// messages can be lost. 0: off (the default).
    pub ack_before_fsync_ms: u64,
    /// Every fdatasync of the raft log first waits for the milliseconds written in
    /// `DATA_DIR/`[`FSYNC_DELAY_FILE`] (absent: none), read every 100 ms; `fail` in it makes
    /// every fdatasync fail (a dead disk). Default false.
    pub fsync_delay_file: bool,
    /// With `power_loss`, a power cut also tears the last page written of each raft log file.
    /// Default false.
    pub torn_pages: bool,
    /// Flush the queue store whenever `DATA_DIR/`[`STORE_FLUSH_FILE`] holds a new number, then
    /// write it to `DATA_DIR/`[`STORE_FLUSHED_FILE`]. Default false.
    pub store_flush_file: bool,
}

/// One option that failed validation.
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

impl BrokerOptions {
    /// Every key at its default, with this id and data directory, listening on loopback ports
    /// the system picks (what tests and embedded brokers want).
    pub fn on_loopback(id: BrokerId, data_dir: impl Into<PathBuf>) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self { id, data_dir: data_dir.into(), listen: any, peer_listen: any, ..Self::default() }
    }

    /// Every problem of these options, each naming its key; the broker does not start with any.
    pub fn validate(&self) -> Result<(), Vec<InvalidKey>> {
        let mut problems = Vec::new();
        if self.id == 0 || self.id > BROKER_ID_MAX {
            problems.push(invalid("id", format!("{} is out of range: must be 1 to 2^63", self.id)));
        }
        for (key, text) in [("advertise", &self.advertise), ("peer_advertise", &self.peer_advertise)] {
            if !text.is_empty()
                && let Err(reason) = check_host_port(text)
            {
                problems.push(invalid(key, reason));
            }
        }
        self.check_controllers(&mut problems);
        self.check_raft(&mut problems);
        self.check_limits(&mut problems);
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
        if self.store.memtable_bytes == 0 {
            problems.push(invalid("store.memtable_bytes", "must be above 0"));
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }

    /// The metadata group's voters as (broker id, peer `host:port`): `controllers` parsed, or
    /// this broker alone at `peer_advertise` when it is empty. Entries that do not parse are
    /// left out ([`Self::validate`] names them).
    pub fn controller_voters(&self, own_peer_addr: &str) -> Vec<(BrokerId, String)> {
        if self.controllers.is_empty() {
            return vec![(self.id, own_peer_addr.to_owned())];
        }
        self.controllers.iter().filter_map(|c| parse_controller(c).ok()).collect()
    }

    /// The raft log's options: `[log]`, with the test-only acknowledgement mode of `[testing]`.
    pub fn log_options(&self) -> LogOptions {
        let ack_before_sync = Some(Duration::from_millis(self.testing.ack_before_fsync_ms)).filter(|d| !d.is_zero());
        LogOptions { ack_before_sync, ..self.log.clone() }
    }

    /// Where a test mode's control file of this broker is.
    pub fn testing_file(&self, name: &str) -> PathBuf {
        self.data_dir.join(name)
    }

    /// The directory of the metadata group's state.
    pub fn meta_dir(&self) -> PathBuf {
        self.data_dir.join("meta")
    }

    fn check_controllers(&self, problems: &mut Vec<InvalidKey>) {
        if self.controllers.len() > CONTROLLERS_MAX {
            problems.push(invalid("controllers", format!("{} voters; at most {CONTROLLERS_MAX}", self.controllers.len())));
        }
        let mut seen: Vec<BrokerId> = Vec::with_capacity(self.controllers.len());
        for (i, entry) in self.controllers.iter().enumerate() {
            let key = format!("controllers[{i}]");
            match parse_controller(entry) {
                Ok((id, _)) if seen.contains(&id) => problems.push(invalid(key, format!("id {id} is listed twice"))),
                Ok((id, _)) => seen.push(id),
                Err(reason) => problems.push(invalid(key, reason)),
            }
        }
    }

    fn check_raft(&self, problems: &mut Vec<InvalidKey>) {
        let raft = &self.raft;
        if raft.heartbeat_interval_ms == 0 {
            problems.push(invalid("raft.heartbeat_interval_ms", "must be above 0"));
        }
        // A follower that times out before a heartbeat can arrive starts elections against a
        // live leader.
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
        if raft.meta_snapshot_every_entries == 0 {
            problems.push(invalid("raft.meta_snapshot_every_entries", "must be above 0"));
        }
    }

    fn check_limits(&self, problems: &mut Vec<InvalidKey>) {
        let (limits, send) = (&self.limits, &self.send);
        let problems_before = problems.len();
        if self.log.segment_bytes < LOG_SEGMENT_BYTES_MIN {
            problems.push(invalid("log.segment_bytes", format!("{} is below {LOG_SEGMENT_BYTES_MIN} (1 MiB)", self.log.segment_bytes)));
        }
        // The broker's smallest segment is far above raft-log's, so raft-log's own complaint
        // about the segment size would only repeat the one above.
        for (field, reason) in self.log.problems().into_iter().filter(|(field, _)| *field != "segment_bytes") {
            problems.push(invalid(format!("log.{field}"), reason));
        }
        for (field, reason) in limits.problems() {
            problems.push(invalid(format!("limits.{field}"), reason));
        }
        for (field, reason) in send.problems() {
            problems.push(invalid(format!("send.{field}"), reason));
        }
        // The chain edge → entry → log record → transport (crate::size_limits): whatever the
        // edge admits must be storable and replicable, or a group stops at the first such
        // message; and the budget of request bytes must hold the largest request, or it would
        // wait for ever.
        if problems.len() == problems_before {
            for p in crate::size_limits::check(limits, send, &self.log) {
                problems.push(invalid(p.key, p.reason));
            }
        }
        let consumer_groups_max = crate::queue::CONSUMER_GROUPS_PER_QUEUE_MAX;
        if !(1..=consumer_groups_max).contains(&limits.consumer_groups_per_queue_max) {
            problems.push(invalid(
                "limits.consumer_groups_per_queue_max",
                format!(
                    "{} is not within 1..={consumer_groups_max} (a checkpoint holds {} offsets: the queue's and its consumer groups')",
                    limits.consumer_groups_per_queue_max,
                    crate::store::CHECKPOINT_ITEMS_MAX
                ),
            ));
        }
    }
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

/// `ID@HOST:PORT` as (id, `HOST:PORT`).
fn parse_controller(entry: &str) -> Result<(BrokerId, String), String> {
    let Some((id, addr)) = entry.split_once('@') else {
        return Err(format!("{entry:?} is not ID@HOST:PORT"));
    };
    match id.parse::<u64>() {
        Ok(id) if id > 0 && id <= BROKER_ID_MAX => {
            check_host_port(addr).map_err(|reason| format!("in {entry:?}: {reason}"))?;
            Ok((id, addr.to_owned()))
        }
        _ => Err(format!("{entry:?}: {id:?} is not a broker id (1 to 2^63)")),
    }
}

/// An address as the file writes it, `IP:PORT`, with an error that shows the form.
mod socket_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(addr: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(addr)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }

    pub(super) fn parse(text: &str) -> Result<SocketAddr, String> {
        text.parse().map_err(|_| format!("{text:?} is not an IP address and port (127.0.0.1:8081, [::1]:8081)"))
    }
}

/// An optional address as the file writes it: an empty string for none.
mod empty_is_none {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(addr: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&addr.map(|a| a.to_string()).unwrap_or_default())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(None);
        }
        super::socket_addr::parse(&text).map(Some).map_err(serde::de::Error::custom)
    }
}

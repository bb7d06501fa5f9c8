//! The broker's Prometheus metrics, served as OpenMetrics text on `GET /metrics`.
//!
//! Two kinds, by where the number lives:
//! - **Recorded as it happens**, in metrics this module owns: the send path
//!   ([`SendPathMetrics`], defined beside the send batcher; broker-wide, no per-group label so the series count does not grow with
//!   the groups), the client gRPC requests ([`RequestMetricsLayer`], by method) and the
//!   budget of their bytes in flight ([`RequestBudgetMetrics`]).
//! - **Read at scrape time** from the state that already holds it (a [`MetricsSource`]): the log
//!   engine's [`EngineStats`] and each hosted replica's Raft metrics. Nothing is copied between
//!   scrapes, so these can never drift from what the engine and openraft report.
//!
//! Every name starts with `raftmq_` and ends with its unit, then `_total` for counters.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use openraft::{RaftMetrics, RaftTypeConfig, ServerState};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use raft_log::engine::{EngineStats, SYNC_LATENCY_BOUNDS_NANOS};

pub use crate::queue::send_metrics::SendPathMetrics;
use crate::queue::send_metrics::{LATENCY_BUCKETS_SECONDS, ReasonLabel};
use crate::raft::{BrokerId, GroupId};

/// What a scrape is answered with.
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The client gRPC methods counted by name; any other path is counted as `other`, so a client
/// cannot grow the label set.
const KNOWN_METHODS: [&str; 27] = [
    "/raftmq.v1.QueueService/Send",
    "/raftmq.v1.QueueService/Fetch",
    "/raftmq.v1.QueueService/CommitOffset",
    "/raftmq.v1.QueueService/GetOffset",
    "/raftmq.v1.AdminService/CreateTopic",
    "/raftmq.v1.AdminService/ListTopics",
    "/raftmq.v1.AdminService/DescribeTopic",
    "/raftmq.v1.AdminService/ClusterStatus",
    "/raftmq.v1.AdminService/GroupChecksum",
    "/raftmq.v1.AdminService/MoveLeader",
    "/apache.rocketmq.v2.MessagingService/QueryRoute",
    "/apache.rocketmq.v2.MessagingService/Heartbeat",
    "/apache.rocketmq.v2.MessagingService/SendMessage",
    "/apache.rocketmq.v2.MessagingService/QueryAssignment",
    "/apache.rocketmq.v2.MessagingService/ReceiveMessage",
    "/apache.rocketmq.v2.MessagingService/AckMessage",
    "/apache.rocketmq.v2.MessagingService/ForwardMessageToDeadLetterQueue",
    "/apache.rocketmq.v2.MessagingService/PullMessage",
    "/apache.rocketmq.v2.MessagingService/UpdateOffset",
    "/apache.rocketmq.v2.MessagingService/GetOffset",
    "/apache.rocketmq.v2.MessagingService/QueryOffset",
    "/apache.rocketmq.v2.MessagingService/EndTransaction",
    // A stream: its time is the client's session, not a request's latency.
    "/apache.rocketmq.v2.MessagingService/Telemetry",
    "/apache.rocketmq.v2.MessagingService/NotifyClientTermination",
    "/apache.rocketmq.v2.MessagingService/ChangeInvisibleDuration",
    "/apache.rocketmq.v2.MessagingService/RecallMessage",
    "/apache.rocketmq.v2.MessagingService/SyncLiteSubscription",
];

/// Every metric of one broker, in one registry.
#[derive(Debug)]
pub struct BrokerMetrics {
    registry: Registry,
    send: Arc<SendPathMetrics>,
    commits: Arc<OffsetCommitMetrics>,
    requests: RequestMetrics,
    budget: Arc<RequestBudgetMetrics>,
}

impl Default for BrokerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl BrokerMetrics {
    /// The recorded metrics, registered; add the scrape-time ones with [`Self::collect_from`].
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let send = Arc::new(SendPathMetrics::new());
        send.register(&mut registry);
        let commits = Arc::new(OffsetCommitMetrics::new());
        commits.register(&mut registry);
        let requests = RequestMetrics::new();
        requests.register(&mut registry);
        let budget = Arc::new(RequestBudgetMetrics::new());
        budget.register(&mut registry);
        Self { registry, send, commits, requests, budget }
    }

    /// The handle the client server's budget of request bytes records into.
    pub fn request_budget(&self) -> Arc<RequestBudgetMetrics> {
        self.budget.clone()
    }

    /// The handle the offset commits record into.
    pub fn offset_commits(&self) -> Arc<OffsetCommitMetrics> {
        self.commits.clone()
    }

    /// The handle every group's send path records into.
    pub fn send_path(&self) -> Arc<SendPathMetrics> {
        self.send.clone()
    }

    /// A tower layer counting the requests of the server it wraps.
    pub fn request_layer(&self) -> RequestMetricsLayer {
        RequestMetricsLayer { metrics: self.requests.clone() }
    }

    /// Reads the log engine and the hosted replicas from `source` at each scrape. Weak, so
    /// serving metrics keeps no broker state alive; once `source` is gone these are omitted.
    pub fn collect_from(&mut self, source: Weak<impl MetricsSource>) {
        let source: Weak<dyn MetricsSource> = source;
        self.registry.register_collector(Box::new(ScrapeCollector { source }));
    }

    /// Every metric in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Offset commits that reached a leader's group and were answered with an error, by reason.
#[derive(Debug)]
pub struct OffsetCommitMetrics {
    refused: Family<ReasonLabel, Counter>,
}

/// The `reason` labels of a refused commit, each exported from 0: `limit_reached` (a bound on
/// consumer groups or offsets, RESOURCE_EXHAUSTED), `rejected` (backwards or past the end,
/// INVALID_ARGUMENT), `not_leader`, `unknown` (OUTCOME_UNKNOWN), `other`.
const COMMIT_REFUSAL_REASONS: [&str; 5] = ["limit_reached", "rejected", "not_leader", "unknown", "other"];

impl OffsetCommitMetrics {
    fn new() -> Self {
        let refused = Family::default();
        for reason in COMMIT_REFUSAL_REASONS {
            let _ = refused.get_or_create(&ReasonLabel { reason });
        }
        Self { refused }
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "raftmq_offset_commit_refused",
            "Offset commits answered with an error by the group's leader, by reason",
            self.refused.clone(),
        );
    }

    /// One commit's answer; OK is not counted.
    pub(crate) fn record(&self, status: Option<&proto::raftmq::v1::Status>) {
        use proto::raftmq::v1::status::Code;
        let reason = match Code::try_from(status.map_or(0, |s| s.code)) {
            Ok(Code::Ok) => return,
            Ok(Code::ResourceExhausted) => "limit_reached",
            Ok(Code::InvalidArgument) => "rejected",
            Ok(Code::NotLeader) => "not_leader",
            Ok(Code::OutcomeUnknown) => "unknown",
            _ => "other",
        };
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

/// The `method` label of a request path: a known method, or `other`.
fn method_label(path: &str) -> &'static str {
    KNOWN_METHODS.iter().find(|m| **m == path).copied().unwrap_or("other")
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Requests to the client gRPC server, by method. Cheap to clone.
#[derive(Debug, Clone)]
struct RequestMetrics {
    received: Family<MethodLabel, Counter>,
    seconds: HistogramFamily<MethodLabel>,
}

impl RequestMetrics {
    fn new() -> Self {
        Self { received: Family::default(), seconds: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS_SECONDS)) }
    }

    fn register(&self, r: &mut Registry) {
        r.register("raftmq_grpc_requests", "Client gRPC requests received, by method path", self.received.clone());
        r.register_with_unit(
            "raftmq_grpc_request_duration",
            "Time from a client gRPC request's arrival to its response headers, by method path",
            Unit::Seconds,
            self.seconds.clone(),
        );
    }
}

/// The client server's budget of request bytes in flight (`server::request_bytes`).
#[derive(Debug)]
pub struct RequestBudgetMetrics {
    /// Bytes of client requests held against the budget: read, decoding or being served.
    pub(crate) in_flight_bytes: Gauge,
    /// The budget itself, so that a dashboard can show how full it is.
    pub(crate) budget_bytes: Gauge,
    /// How long each request that found the budget full waited for room.
    wait_seconds: Histogram,
    /// Requests refused because no room came before their deadline.
    refused: Counter,
}

impl RequestBudgetMetrics {
    fn new() -> Self {
        Self {
            in_flight_bytes: Gauge::default(),
            budget_bytes: Gauge::default(),
            wait_seconds: Histogram::new(LATENCY_BUCKETS_SECONDS),
            refused: Counter::default(),
        }
    }

    fn register(&self, r: &mut Registry) {
        r.register_with_unit(
            "raftmq_grpc_request_in_flight",
            "Bytes of client gRPC requests held against the broker's budget: being read, decoded or served",
            Unit::Bytes,
            self.in_flight_bytes.clone(),
        );
        r.register_with_unit(
            "raftmq_grpc_request_budget",
            "The broker's budget of client request bytes in flight (limits.in_flight_request_bytes_max)",
            Unit::Bytes,
            self.budget_bytes.clone(),
        );
        r.register_with_unit(
            "raftmq_grpc_request_budget_wait_duration",
            "Time a client request that found the budget of request bytes full waited for room",
            Unit::Seconds,
            self.wait_seconds.clone(),
        );
        r.register(
            "raftmq_grpc_request_budget_refused",
            "Client requests refused (RESOURCE_EXHAUSTED) because the budget had no room before their deadline",
            self.refused.clone(),
        );
    }

    /// A request waited `waited` for room in the budget; `admitted` when it got it.
    pub(crate) fn record_wait(&self, waited: Duration, admitted: bool) {
        self.wait_seconds.observe(waited.as_secs_f64());
        if !admitted {
            self.refused.inc();
        }
    }
}

/// Counts each request when it arrives and times it until its response (for a unary call, until
/// the handler has answered). A request the client abandons is counted but not timed.
#[derive(Debug, Clone)]
pub struct RequestMetricsLayer {
    metrics: RequestMetrics,
}

impl<S> tower_layer::Layer<S> for RequestMetricsLayer {
    type Service = RequestMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestMetricsService { inner, metrics: self.metrics.clone() }
    }
}

/// See [`RequestMetricsLayer`].
#[derive(Debug, Clone)]
pub struct RequestMetricsService<S> {
    inner: S,
    metrics: RequestMetrics,
}

impl<S, B> tower_service::Service<axum::http::Request<B>> for RequestMetricsService<S>
where
    S: tower_service::Service<axum::http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let label = MethodLabel { method: method_label(request.uri().path()) };
        self.metrics.received.get_or_create(&label).inc();
        let seconds = self.metrics.seconds.clone();
        let started = Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await;
            seconds.get_or_create(&label).observe(started.elapsed().as_secs_f64());
            response
        })
    }
}

/// One hosted replica as its Raft metrics describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaState {
    pub group: GroupId,
    pub role: ServerState,
    pub term: u64,
    pub last_log_index: u64,
    pub committed_index: u64,
    pub applied_index: u64,
    /// This broker: the replica these metrics are of.
    pub broker: BrokerId,
    pub leader: Option<BrokerId>,
    pub snapshot_index: u64,
    pub purged_index: u64,
    /// On the leader, every replica (itself included), the last index it holds and whether it
    /// votes; empty elsewhere.
    pub replication: Vec<ReplicaProgress>,
    /// Parked: the group is quiet (no heartbeats, no election timer).
    pub hibernating: bool,
    /// For a queue group: the applied index its store holds durably (flushed); a restart
    /// re-applies the log after it.
    pub durable_applied_index: Option<u64>,
}

/// One replica of a group as its leader tracks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaProgress {
    pub broker: BrokerId,
    pub matched_index: u64,
    pub voter: bool,
}

impl ReplicaState {
    pub fn from_raft<C>(group: GroupId, m: &RaftMetrics<C>) -> Self
    where
        C: RaftTypeConfig<NodeId = BrokerId>,
        C::Term: Into<u64> + Copy,
    {
        let index = |l: &Option<openraft::alias::LogIdOf<C>>| l.as_ref().map_or(0, |l| l.index());
        let voters: Vec<BrokerId> = m.membership_config.membership().voter_ids().collect();
        let replication = m
            .replication
            .iter()
            .flatten()
            .map(|(id, matched)| ReplicaProgress { broker: *id, matched_index: index(matched), voter: voters.contains(id) })
            .collect();
        Self {
            group,
            role: m.state,
            term: m.current_term.into(),
            broker: m.id,
            leader: m.current_leader,
            last_log_index: m.last_log_index.unwrap_or(0),
            committed_index: index(&m.local_committed),
            applied_index: index(&m.last_applied),
            snapshot_index: index(&m.snapshot),
            purged_index: index(&m.purged),
            replication,
            hibernating: false,
            durable_applied_index: None,
        }
    }

    /// On the leader, each other replica and how many entries it is behind the leader's last.
    pub fn follower_lag(&self) -> impl Iterator<Item = (BrokerId, u64)> + '_ {
        self.replication.iter().filter(|p| p.broker != self.broker).map(|p| (p.broker, self.last_log_index.saturating_sub(p.matched_index)))
    }
}

/// What the scrape-time metrics are read from: the broker's state, never a copy of it.
pub trait MetricsSource: Send + Sync + 'static {
    fn log_stats(&self) -> &EngineStats;
    /// Every replica hosted here, the metadata group's included.
    fn replicas(&self) -> Vec<ReplicaState>;
}

struct ScrapeCollector {
    source: Weak<dyn MetricsSource>,
}

impl std::fmt::Debug for ScrapeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrapeCollector").field("source_alive", &(self.source.strong_count() > 0)).finish()
    }
}

impl Collector for ScrapeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(source) = self.source.upgrade() else { return Ok(()) };
        encode_log_stats(&mut encoder, source.log_stats())?;
        encode_replicas(&mut encoder, &source.replicas())
    }
}

fn encode_log_stats(encoder: &mut DescriptorEncoder, stats: &EngineStats) -> Result<(), std::fmt::Error> {
    use std::sync::atomic::Ordering::Relaxed;
    let counters: [(&str, &str, Option<Unit>, u64); 9] = [
        ("raftmq_log_records_appended", "Records written to the log, of every group and kind.", None, stats.records_appended.load(Relaxed)),
        ("raftmq_log_appended", "Bytes of records written to the log.", Some(Unit::Bytes), stats.bytes_appended.load(Relaxed)),
        ("raftmq_log_sync_rounds", "Group-commit rounds that ran an fdatasync.", None, stats.sync_rounds.load(Relaxed)),
        ("raftmq_log_seal_syncs", "fdatasyncs that sealed a full segment.", None, stats.seal_syncs.load(Relaxed)),
        (
            "raftmq_log_appends_made_durable",
            "Append callbacks answered by group-commit rounds.",
            None,
            stats.appends_made_durable.load(Relaxed),
        ),
        ("raftmq_log_segments_created", "Segments installed since the log was opened.", None, stats.segments_created.load(Relaxed)),
        ("raftmq_log_segments_deleted", "Segments deleted since the log was opened.", None, stats.segments_deleted.load(Relaxed)),
        (
            "raftmq_log_rewritten_entries",
            "Live entries copied forward by reclaim so their old segment could be deleted.",
            None,
            stats.entries_rewritten.load(Relaxed),
        ),
        ("raftmq_log_rewritten", "Bytes of records copied forward by reclaim.", Some(Unit::Bytes), stats.bytes_rewritten.load(Relaxed)),
    ];
    for (name, help, unit, value) in counters {
        let counter = ConstCounter::new(value);
        counter.encode(encoder.encode_descriptor(name, help, unit.as_ref(), counter.metric_type())?)?;
    }
    let gauges: [(&str, &str, Option<Unit>, u64); 2] = [
        (
            "raftmq_log_segments",
            "Segment files the log uses (each of the configured segment size).",
            None,
            stats.segments_in_use.load(Relaxed),
        ),
        (
            "raftmq_log_live",
            "Bytes of the entry records some group still holds (not purged or truncated): what reclaim keeps.",
            Some(Unit::Bytes),
            stats.live_entry_bytes.load(Relaxed),
        ),
    ];
    for (name, help, unit, value) in gauges {
        let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
        gauge.encode(encoder.encode_descriptor(name, help, unit.as_ref(), gauge.metric_type())?)?;
    }
    let fsync = stats.fsync_latency();
    let bounds = SYNC_LATENCY_BOUNDS_NANOS.iter().map(|&n| n as f64 / 1e9).chain(std::iter::once(f64::INFINITY));
    let buckets: Vec<(f64, u64)> = bounds.zip(fsync.buckets).collect();
    encoder
        .encode_descriptor(
            "raftmq_log_fsync_duration",
            "Duration of each fdatasync of a group-commit round or a segment seal.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(fsync.sum_nanos as f64 / 1e9, fsync.count(), &buckets, None)
}

fn role_label(role: ServerState) -> &'static str {
    match role {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

/// A per-replica gauge: name, help, and how to read it.
type ReplicaGauge = (&'static str, &'static str, fn(&ReplicaState) -> u64);

fn encode_replicas(encoder: &mut DescriptorEncoder, replicas: &[ReplicaState]) -> Result<(), std::fmt::Error> {
    let mut roles = encoder.encode_descriptor(
        "raftmq_raft_role",
        "1 for each hosted replica, labeled with its current Raft role (leader, follower, candidate, learner, shutdown).",
        None,
        MetricType::Gauge,
    )?;
    for r in replicas {
        roles.encode_family(&([("group", r.group)], [("role", role_label(r.role))]))?.encode_gauge(&1i64)?;
    }
    let gauges: [ReplicaGauge; 5] = [
        ("raftmq_raft_term", "Current Raft term of each hosted replica.", |r| r.term),
        ("raftmq_raft_last_log_index", "Index of the last entry in each hosted replica's log.", |r| r.last_log_index),
        ("raftmq_raft_committed_index", "Index of the last entry each hosted replica knows committed.", |r| r.committed_index),
        ("raftmq_raft_applied_index", "Index of the last entry each hosted replica applied.", |r| r.applied_index),
        (
            "raftmq_raft_hibernating",
            "1 for each hosted replica of a quiet group that hibernates (no heartbeats, no election timer).",
            |r| u64::from(r.hibernating),
        ),
    ];
    for (name, help, value) in gauges {
        let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for r in replicas {
            metric.encode_family(&[("group", r.group)])?.encode_gauge(&value(r))?;
        }
    }
    let mut durable = encoder.encode_descriptor(
        "raftmq_store_durable_applied_index",
        "For each hosted queue group, the applied index its store holds flushed to disk: a restart re-applies the log after it.",
        None,
        MetricType::Gauge,
    )?;
    for r in replicas {
        if let Some(index) = r.durable_applied_index {
            durable.encode_family(&[("group", r.group)])?.encode_gauge(&index)?;
        }
    }
    let mut lag = encoder.encode_descriptor(
        "raftmq_raft_follower_lag_entries",
        "On a group's leader, how many entries each other replica is behind the leader's last entry.",
        None,
        MetricType::Gauge,
    )?;
    for r in replicas {
        for (peer, behind) in r.follower_lag() {
            lag.encode_family(&[("group", r.group), ("peer", peer)])?.encode_gauge(&behind)?;
        }
    }
    Ok(())
}

/// How long [`MetricsServer::shutdown`] waits for scrapes in progress.
const METRICS_STOP_WAIT: Duration = Duration::from_secs(2);

/// A bound listener for [`MetricsServer::start`]: binding comes first, so a broker that cannot
/// listen fails before it starts anything.
pub struct MetricsListener {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

/// The HTTP server of `GET /metrics`.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// Binds `listen`; port 0 picks a free one.
    pub async fn bind(listen: SocketAddr) -> std::io::Result<MetricsListener> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        Ok(MetricsListener { listener, addr })
    }

    /// Serves `metrics` on `listener` until [`Self::shutdown`].
    pub fn start(listener: MetricsListener, metrics: BrokerMetrics) -> Self {
        let MetricsListener { listener, addr } = listener;
        let app = axum::Router::new().route("/metrics", axum::routing::get(scrape)).with_state(Arc::new(metrics));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stopped = async {
                let _ = stopped.await;
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
                tracing::error!(error = %e, "metrics server stopped");
            }
        });
        Self { addr, stop, task }
    }

    /// Where the server listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets scrapes in progress finish for at most `METRICS_STOP_WAIT`, then
    /// cuts off what is left (an idle keep-alive connection, a stuck client).
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(METRICS_STOP_WAIT, &mut task).await.is_err() {
            tracing::warn!("metrics server did not stop within {METRICS_STOP_WAIT:?}; cutting it off");
            task.abort();
        }
    }
}

async fn scrape(State(metrics): State<Arc<BrokerMetrics>>) -> Response {
    match metrics.encode() {
        Ok(body) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "encoding metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::SendError;

    /// The method paths of `service` (in `package`) in a .proto file: its `rpc` lines up to the
    /// line that closes the service.
    fn rpcs(proto: &str, package: &str, service: &str) -> Vec<String> {
        let body = proto.split(&format!("service {service} {{")).nth(1).unwrap_or_default();
        body.lines()
            .take_while(|l| l.trim() != "}")
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .filter_map(|l| l.split('(').next())
            .map(|name| format!("/{package}.{service}/{}", name.trim()))
            .collect()
    }

    #[test]
    fn known_methods_are_exactly_the_client_services_rpcs() {
        let mut expected = rpcs(include_str!("../../proto/proto/raftmq/v1/queue.proto"), "raftmq.v1", "QueueService");
        expected.extend(rpcs(include_str!("../../proto/proto/raftmq/v1/admin.proto"), "raftmq.v1", "AdminService"));
        let rocketmq = include_str!("../../proto/proto/apache/rocketmq/v2/service.proto");
        expected.extend(rpcs(rocketmq, "apache.rocketmq.v2", "MessagingService"));
        assert_eq!(KNOWN_METHODS.to_vec(), expected);
    }

    #[test]
    fn unknown_paths_share_one_label() {
        assert_eq!(method_label("/raftmq.v1.QueueService/Send"), "/raftmq.v1.QueueService/Send");
        assert_eq!(method_label("/raftmq.v1.QueueService/Whatever"), "other");
        assert_eq!(method_label("/"), "other");
    }

    #[test]
    fn send_metrics_encode_with_units_last() {
        let m = BrokerMetrics::new();
        let send = m.send_path();
        send.record_send(&Ok(vec![(0, 0), (0, 1)]), 10);
        send.record_send(&Err(SendError::Busy { in_flight_max: 1 }), 5);
        send.record_entry(2, 10, Duration::from_millis(3));
        send.record_abandoned();
        let text = m.encode().unwrap();
        for line in [
            "raftmq_send_messages_total 2",
            "raftmq_send_bytes_total 10",
            "raftmq_send_refused_total{reason=\"busy\"} 1",
            "raftmq_send_refused_total{reason=\"not_leader\"} 0",
            "raftmq_send_refused_total{reason=\"abandoned\"} 1",
            "raftmq_send_entry_messages_count 1",
            "raftmq_send_entry_bytes_sum 10.0",
            "raftmq_send_commit_duration_seconds_count 1",
            "raftmq_send_in_flight_messages 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}

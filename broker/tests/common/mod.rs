//! What the broker's multi-replica tests share.

// Not every test binary that includes this module uses every piece of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use broker::options::{BrokerOptions, RaftOptions};
use broker::raft::BrokerId;
use openraft::{Config, SnapshotPolicy};
use proto::raftmq::v1::admin_service_client::AdminServiceClient;
use proto::raftmq::v1::queue_service_client::QueueServiceClient;
use proto::raftmq::v1::status::Code;
use proto::raftmq::v1::{ClusterStatusRequest, CreateTopicRequest, SendReply, SendRequest, Status, Topic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

/// The longest any wait of these tests lasts before it fails.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// The most of a `/metrics` response a test reads.
const SCRAPE_BYTES_MAX: u64 = 4 << 20;

/// The status code of a reply (`Unspecified` for one the client does not know).
pub fn code(s: &Option<Status>) -> Code {
    Code::try_from(s.as_ref().map_or(0, |s| s.code)).unwrap_or(Code::Unspecified)
}

/// A channel to a broker's client or peer address.
pub async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
}

/// Polls `f` until it returns `Some`, failing the test at [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET /metrics` over one HTTP/1.1 connection; returns the content type and the body.
pub async fn scrape(addr: SocketAddr) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut raw = String::new();
    tokio::time::timeout(DEADLINE, stream.take(SCRAPE_BYTES_MAX).read_to_string(&mut raw)).await.expect("scrape timed out").unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_default();
    (content_type, body.to_string())
}

/// The value of the sample named exactly `series` (name and labels as exposed).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' '))).map(|v| v.trim().parse().unwrap())
}

/// Raft timing for tests on loopback: elections in well under a second.
pub fn fast_raft() -> RaftOptions {
    RaftOptions { heartbeat_interval_ms: 100, election_timeout_min_ms: 400, election_timeout_max_ms: 800, ..RaftOptions::default() }
}

/// openraft's options with [`fast_raft`]'s timing, for groups a test runs by hand. Snapshots (and
/// the purges after them) only when a test asks for one.
pub fn fast_raft_config() -> Config {
    let r = fast_raft();
    Config {
        heartbeat_interval: r.heartbeat_interval_ms,
        election_timeout_min: r.election_timeout_min_ms,
        election_timeout_max: r.election_timeout_max_ms,
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 0,
        ..Default::default()
    }
}

/// A broker (or a bare host) on loopback: the Raft transport on `listen` (port 0 for any), the
/// client port on any, with [`fast_raft`].
pub fn host_options(id: BrokerId, dir: &std::path::Path, listen: SocketAddr) -> BrokerOptions {
    BrokerOptions { peer_listen: listen, raft: fast_raft(), ..BrokerOptions::on_loopback(id, dir) }
}

/// Metadata voters as the options write them: `ID@HOST:PORT`.
pub fn voters(controllers: &[(BrokerId, String)]) -> Vec<String> {
    controllers.iter().map(|(id, addr)| format!("{id}@{addr}")).collect()
}

/// Waits until the cluster that `admin` asks has at least `brokers` registered brokers alive.
pub async fn registered(admin: &AdminServiceClient<Channel>, brokers: usize) {
    eventually("the brokers to register", || {
        let mut admin = admin.clone();
        async move {
            let r = admin.cluster_status(ClusterStatusRequest {}).await.ok()?.into_inner();
            (code(&r.status) == Code::Ok && r.brokers.iter().filter(|b| b.alive).count() >= brokers).then_some(())
        }
    })
    .await;
}

/// Creates topic `name` of one queue with one replica, once a broker is registered.
pub async fn create_one_queue_topic(admin: &mut AdminServiceClient<Channel>, name: &str) {
    registered(admin, 1).await;
    let topic = Topic { name: name.into(), queue_count: 1, replication_factor: 1, message_type: 0, checkpoint_interval_entries: 0 };
    let created = admin.create_topic(CreateTopicRequest { topic: Some(topic) }).await.unwrap().into_inner();
    assert_eq!(code(&created.status), Code::Ok, "{:?}", created.status);
}

/// Sends `req` until it is stored. A group may still be electing its first leader
/// (UNAVAILABLE, OUTCOME_UNKNOWN, NOT_LEADER, BUSY); any other refusal fails the test.
pub async fn send_stored(queue: &QueueServiceClient<Channel>, req: SendRequest) -> SendReply {
    eventually("a send to be stored", || {
        let (mut queue, req) = (queue.clone(), req.clone());
        async move {
            let r = queue.send(req).await.ok()?.into_inner();
            match code(&r.status) {
                Code::Ok => Some(r),
                Code::Unavailable | Code::OutcomeUnknown | Code::NotLeader | Code::Busy => None,
                other => panic!("send failed: {other:?} {:?}", r.status),
            }
        }
    })
    .await
}

/// Waits up to `within` until `raft` knows a leader that is one of `ids`, and returns it.
pub async fn leader_known_to<C, SM>(raft: &openraft::Raft<C, SM>, ids: &[BrokerId], within: Duration) -> BrokerId
where
    C: openraft::RaftTypeConfig<NodeId = BrokerId>,
    SM: openraft::storage::RaftStateMachine<C>,
{
    let m = raft
        .wait(Some(within))
        .metrics(|m| m.current_leader.is_some_and(|l| ids.contains(&l)), "a leader among the given brokers")
        .await
        .expect("leader elected");
    m.current_leader.expect("leader")
}

//! Three replicas of one queue group over the real Raft transport (loopback gRPC), each with
//! its own raft-log engine and its own RocksDB queue store under `QueueStateMachine`: sends and
//! offset commits written on the leader are answered with dense offsets, every replica's store
//! ends with the same index entries, next offsets and consumer offsets, and a replica that
//! joins after the log was purged catches up by snapshot (a store export) to the same state.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use broker::queue::{GroupCommand, GroupReply, NewMessage, QueueGroupConfig, QueueGroupOptions, QueueStateMachine};
use broker::raft::network::{GroupNetworkFactory, PeerChannels};
use broker::raft::registry::GroupRegistry;
use broker::raft::service::RaftTransportService;
use broker::raft::{BrokerId, BrokerNode};
use broker::store::{IndexEntry, QueueStore, StoreOptions};
use openraft::{Config, Raft};
use proto::raftmq::v1::raft_transport_server::RaftTransportServer;
use raft_log::{LogEngine, LogOptions, RaftLogStore};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

const GROUP: u64 = 11;
const QUEUES: u32 = 4;
const WAIT: Duration = Duration::from_secs(20);
/// A checkpoint every 8 entries, so the test can trim after a few dozen.
const OPTIONS: QueueGroupOptions = QueueGroupOptions { checkpoint_interval_entries: 8 };

struct TestBroker {
    id: BrokerId,
    addr: SocketAddr,
    raft: Raft<QueueGroupConfig, QueueStateMachine>,
    store: Arc<QueueStore>,
    _server: tokio::task::JoinHandle<()>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn config() -> Arc<Config> {
    Arc::new(common::fast_raft_config().validate().expect("valid raft config"))
}

async fn start_broker(id: BrokerId) -> TestBroker {
    let (log_dir, store_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (engine, _) = LogEngine::open(log_dir.path(), LogOptions { segment_bytes: 1 << 20, ..LogOptions::default() }).unwrap();
    let store = Arc::new(QueueStore::open(store_dir.path(), &StoreOptions::default()).unwrap().0);
    let sm = QueueStateMachine::with_options(store.clone(), GROUP, OPTIONS).with_log(engine.group(GROUP));
    let network = GroupNetworkFactory::new(GROUP, PeerChannels::new());
    let raft = Raft::new(id, config(), network, RaftLogStore::new(engine.group(GROUP)), sm).await.unwrap();
    let registry = GroupRegistry::default();
    registry.insert(GROUP, raft.clone());
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap().with_nodelay(Some(true));
    let addr = incoming.local_addr().unwrap();
    let service = RaftTransportServer::new(RaftTransportService::new(id, registry));
    let server = tokio::spawn(async move {
        let _ = Server::builder().add_service(service).serve_with_incoming(incoming).await;
    });
    TestBroker { id, addr, raft, store, _server: server, _dirs: (log_dir, store_dir) }
}

fn members(brokers: &[&TestBroker]) -> BTreeMap<BrokerId, BrokerNode> {
    brokers.iter().map(|b| (b.id, BrokerNode { raft_addr: b.addr.to_string() })).collect()
}

async fn leader_among<'a>(brokers: &[&'a TestBroker]) -> &'a TestBroker {
    let ids: Vec<BrokerId> = brokers.iter().map(|b| b.id).collect();
    let id = common::leader_known_to(&brokers[0].raft, &ids, WAIT).await;
    let leader = brokers.iter().find(|b| b.id == id).expect("leader is one of them");
    // openraft 0.10 refuses writes on a new leader until a quorum acknowledged it.
    leader.raft.wait(Some(WAIT)).metrics(|m| m.last_quorum_acked.is_some(), "leader lease held").await.expect("lease");
    leader
}

/// Writes `command` through `leader`; returns the reply and the entry's log index.
async fn write(leader: &TestBroker, command: GroupCommand) -> (GroupReply, u64) {
    let resp = leader.raft.client_write(command).await.expect("client_write");
    (resp.response().clone(), resp.log_id().index)
}

/// `n` messages spread over the queues: message `i` goes to queue `i * 7 % QUEUES`.
fn send(first: usize, n: usize) -> GroupCommand {
    let messages = (first..first + n)
        .map(|i| NewMessage {
            queue: (i * 7) as u32 % QUEUES,
            message_id: format!("msg-{i}"),
            tag: (i % 2 == 0).then(|| format!("tag-{}", i % 3)),
            keys: vec![format!("key-{i}")],
            properties: vec![("n".into(), i.to_string())],
            body: vec![i as u8; i % 50],
            ..NewMessage::default()
        })
        .collect();
    GroupCommand::Send { store_time_ms: 1_764_000_000_000 + first as u64, messages }
}

/// Every read of the group on one replica.
#[derive(Debug, PartialEq)]
struct GroupState {
    index: Vec<Vec<(u64, IndexEntry)>>,
    next_offsets: Vec<u64>,
    start_offsets: Vec<u64>,
    consumer_offsets: Vec<Option<u64>>,
    trim_point: Option<u64>,
}

fn state(store: &QueueStore) -> GroupState {
    GroupState {
        index: (0..QUEUES).map(|q| store.index_range(GROUP, q, 0, usize::MAX).unwrap()).collect(),
        next_offsets: (0..QUEUES).map(|q| store.next_offset(GROUP, q).unwrap()).collect(),
        start_offsets: (0..QUEUES).map(|q| store.start_offset(GROUP, q).unwrap()).collect(),
        consumer_offsets: (0..QUEUES).map(|q| store.consumer_offset(GROUP, "cg", q).unwrap()).collect(),
        trim_point: store.trim_point(GROUP).unwrap(),
    }
}

async fn wait_applied(b: &TestBroker, index: u64) {
    b.raft.wait(Some(WAIT)).applied_index_at_least(Some(index), "applied").await.expect("applied in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_apply_sends_and_commits_to_identical_stores_and_a_fourth_catches_up_by_snapshot() {
    let (b1, b2, b3) = (start_broker(1).await, start_broker(2).await, start_broker(3).await);
    let all = [&b1, &b2, &b3];
    b1.raft.initialize(members(&all)).await.expect("initialize");
    let leader = leader_among(&all).await;

    // 20 entries of 1..=20 messages: 210 messages over 4 queues, offsets dense per queue.
    let mut expected_next = [0u64; QUEUES as usize];
    let mut sent = 0;
    let mut last = 0;
    for n in 1..=20 {
        let (reply, index) = write(leader, send(sent, n)).await;
        let want: Vec<(u32, u64)> = (sent..sent + n)
            .map(|i| {
                let q = (i * 7) as u32 % QUEUES;
                expected_next[q as usize] += 1;
                (q, expected_next[q as usize] - 1)
            })
            .collect();
        assert_eq!(reply, GroupReply::Sent { offsets: want }, "entry {index}");
        sent += n;
        last = index;
    }
    // Consumer progress: forward is applied, backward is refused the same way everywhere.
    let commit = |queue, offset| GroupCommand::CommitOffset { consumer_group: "cg".into(), queue, offset };
    assert_eq!(write(leader, commit(1, 10)).await.0, GroupReply::OffsetCommitted);
    assert!(matches!(write(leader, commit(1, 9)).await.0, GroupReply::Rejected { .. }));
    let (reply, index) = write(leader, commit(2, expected_next[2])).await;
    assert_eq!(reply, GroupReply::OffsetCommitted);
    last = last.max(index);

    for b in all {
        wait_applied(b, last).await;
    }
    let reference = state(&leader.store);
    assert_eq!(reference.next_offsets, expected_next.to_vec());
    assert_eq!(reference.index.iter().map(Vec::len).sum::<usize>(), sent);
    assert_eq!(reference.consumer_offsets, vec![None, Some(10), Some(expected_next[2]), None]);
    for (q, entries) in reference.index.iter().enumerate() {
        assert!(entries.iter().enumerate().all(|(i, (o, _))| *o == i as u64), "queue {q} offsets are dense from 0");
    }
    for b in all {
        assert_eq!(state(&b.store), reference, "replica {} holds the same queue state", b.id);
        assert_eq!(b.store.applied_index(GROUP), Some(last));
    }

    // Trim at the newest checkpoint, snapshot, purge the log, and add a fourth replica: it can
    // only catch up by snapshot.
    let k = last / OPTIONS.checkpoint_interval_entries * OPTIONS.checkpoint_interval_entries;
    let (reply, trim_index) = write(leader, GroupCommand::Trim { up_to_log_index: k }).await;
    assert_eq!(reply, GroupReply::Trimmed { up_to_log_index: k });
    for b in all {
        wait_applied(b, trim_index).await;
    }
    let reference = state(&leader.store);
    assert_eq!(reference.trim_point, Some(k));
    assert!(reference.index.iter().flatten().all(|(_, e)| e.log_index > k), "nothing up to the trim point is held");
    assert!(reference.start_offsets.iter().zip(&reference.next_offsets).all(|(s, n)| s <= n && *s > 0));
    for b in all {
        assert_eq!(state(&b.store), reference, "replica {} trimmed the same", b.id);
    }
    leader.raft.trigger().snapshot().await.expect("snapshot");
    leader.raft.wait(Some(WAIT)).metrics(|m| m.snapshot.is_some_and(|s| s.index == k), "snapshot built").await.expect("snapshot");
    leader.raft.trigger().purge_log(trim_index).await.expect("purge");
    let m = leader.raft.wait(Some(WAIT)).metrics(|m| m.purged.is_some_and(|p| p.index >= k), "log purged").await.expect("purged");
    assert_eq!(m.purged.map(|p| p.index), Some(k), "purged up to the snapshot, not past it");
    let b4 = start_broker(4).await;
    leader.raft.add_learner(4, BrokerNode { raft_addr: b4.addr.to_string() }, true).await.expect("learner caught up");
    wait_applied(&b4, trim_index).await;
    let m = b4.raft.wait(Some(WAIT)).metrics(|m| m.snapshot.is_some(), "snapshot installed").await.expect("metrics");
    assert_eq!(m.snapshot.map(|s| s.index), Some(k), "it came by snapshot, not by log");
    assert_eq!(state(&b4.store), reference, "the learner's store equals the leader's");

    // And it keeps applying new entries like the others.
    let (reply, index) = write(leader, send(sent, 3)).await;
    assert!(matches!(reply, GroupReply::Sent { .. }));
    for b in [&b1, &b2, &b3, &b4] {
        wait_applied(b, index).await;
    }
    let reference = state(&leader.store);
    for b in [&b1, &b2, &b3, &b4] {
        assert_eq!(state(&b.store), reference, "replica {} after the snapshot", b.id);
    }
}

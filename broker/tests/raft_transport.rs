//! Three Raft replicas of one group, each with its own raft-log engine and its own gRPC server
//! on loopback, talking only through `raftmq.v1.RaftTransport`: they elect a leader, replicate
//! and apply every write on all replicas, elect a new leader when the old one's server dies,
//! and catch a replica up by snapshot after the log it lacks has been purged.
//!
//! In-process (one tokio runtime) to test the transport itself; the multi-process cluster tests
//! of the broker come with the broker binary.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use broker::raft::network::{GroupNetworkFactory, PeerChannels};
use broker::raft::registry::GroupRegistry;
use broker::raft::service::RaftTransportService;
use broker::raft::{BrokerId, BrokerNode};
use openraft::type_config::async_runtime::watch::WatchReceiver;
use openraft::{Config, Raft};
use proto::raftmq::v1::raft_transport_server::RaftTransportServer;
use raft_log::testing::MapStateMachine;
use raft_log::{LogEngine, LogOptions, RaftLogStore};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

broker::group_types!(pub TestGroup: String => String);

type Sm = MapStateMachine<TestGroup>;
const GROUP: u64 = 7;
const WAIT: Duration = Duration::from_secs(20);

struct TestBroker {
    id: BrokerId,
    addr: SocketAddr,
    raft: Raft<TestGroup, Sm>,
    sm: Sm,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

fn config() -> Arc<Config> {
    Arc::new(common::fast_raft_config().validate().expect("valid raft config"))
}

async fn start_broker(id: BrokerId) -> TestBroker {
    start_broker_decoding(id, None).await
}

/// A broker whose transport server decodes messages of at most `decoding_max` bytes (tonic's
/// 4 MiB default when `None`).
async fn start_broker_decoding(id: BrokerId, decoding_max: Option<usize>) -> TestBroker {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = LogEngine::open(dir.path(), LogOptions { segment_bytes: 1 << 20, ..LogOptions::default() }).unwrap();
    let sm = Sm::default();
    let network = GroupNetworkFactory::new(GROUP, PeerChannels::new());
    let raft = Raft::new(id, config(), network, RaftLogStore::new(engine.group(GROUP)), sm.clone()).await.unwrap();
    let registry = GroupRegistry::default();
    registry.insert(GROUP, raft.clone());
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap().with_nodelay(Some(true));
    let addr = incoming.local_addr().unwrap();
    let mut service = RaftTransportServer::new(RaftTransportService::new(id, registry));
    if let Some(max) = decoding_max {
        service = service.max_decoding_message_size(max);
    }
    let server = tokio::spawn(async move {
        let _ = Server::builder().add_service(service).serve_with_incoming(incoming).await;
    });
    TestBroker { id, addr, raft, sm, server, _dir: dir }
}

fn members(brokers: &[&TestBroker]) -> BTreeMap<BrokerId, BrokerNode> {
    brokers.iter().map(|b| (b.id, BrokerNode { raft_addr: b.addr.to_string() })).collect()
}

async fn leader_among(brokers: &[&TestBroker]) -> BrokerId {
    let ids: Vec<BrokerId> = brokers.iter().map(|b| b.id).collect();
    common::leader_known_to(&brokers[0].raft, &ids, WAIT).await
}

/// Writes through `leader` once it holds a leader lease (a quorum acknowledged it): before
/// that, openraft 0.10 refuses writes with `LeaseExpired`, as a new leader should.
async fn write(leader: &TestBroker, values: impl IntoIterator<Item = String>) -> u64 {
    leader.raft.wait(Some(WAIT)).metrics(|m| m.last_quorum_acked.is_some(), "leader lease held").await.expect("lease");
    let mut last = 0;
    for v in values {
        let resp = match leader.raft.client_write(v.clone()).await {
            Ok(r) => r,
            Err(e) => {
                let m = leader.raft.metrics().borrow_watched().clone();
                panic!(
                    "client_write {v}: {e}; last_quorum_acked {:?} heartbeat {:?} replication {:?}",
                    m.last_quorum_acked, m.heartbeat, m.replication
                );
            }
        };
        assert_eq!(resp.response(), &v, "the state machine answers with the command");
        last = resp.log_id().index;
    }
    last
}

async fn wait_applied(b: &TestBroker, index: u64) {
    b.raft.wait(Some(WAIT)).applied_index_at_least(Some(index), "applied").await.expect("applied in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_over_grpc_elect_replicate_fail_over_and_catch_up_by_snapshot() {
    let b1 = start_broker(1).await;
    let b2 = start_broker(2).await;
    let b3 = start_broker(3).await;
    b1.raft.initialize(members(&[&b1, &b2, &b3])).await.expect("initialize");

    let all = [&b1, &b2, &b3];
    let leader_id = leader_among(&all).await;
    let leader = all.iter().find(|b| b.id == leader_id).unwrap();
    // The new leader's first entry (a blank one) committed and applied everywhere: replication
    // over the transport works before any client write.
    let first =
        leader.raft.wait(Some(WAIT)).metrics(|m| m.last_applied.is_some(), "leader applied its first entry").await.expect("applied");
    for b in all {
        wait_applied(b, first.last_applied.unwrap().index).await;
    }
    let last = write(leader, (0..100).map(|i| format!("v{i}"))).await;
    for b in all {
        wait_applied(b, last).await;
    }
    let reference = b1.sm.data().await;
    assert_eq!(reference.len(), 100);
    for b in all {
        assert_eq!(b.sm.data().await, reference, "replica {} applied the same commands", b.id);
    }

    // The leader's server dies: the other two elect a new leader and go on.
    let (dead, alive): (Vec<&TestBroker>, Vec<&TestBroker>) = all.iter().partition(|b| b.id == leader_id);
    dead[0].server.abort();
    dead[0].raft.shutdown().await.expect("shutdown");
    let new_leader_id = leader_among(&alive).await;
    assert_ne!(new_leader_id, leader_id);
    let new_leader = alive.iter().find(|b| b.id == new_leader_id).unwrap();
    let last = write(new_leader, (100..150).map(|i| format!("v{i}"))).await;
    for b in &alive {
        wait_applied(b, last).await;
        assert_eq!(b.sm.data().await.len(), 150);
    }

    // A new replica joins after the log it lacks is purged: it can only catch up by snapshot.
    new_leader.raft.trigger().snapshot().await.expect("snapshot");
    new_leader.raft.wait(Some(WAIT)).metrics(|m| m.snapshot.is_some_and(|s| s.index >= last), "snapshot built").await.expect("snapshot");
    new_leader.raft.trigger().purge_log(last).await.expect("purge");
    new_leader.raft.wait(Some(WAIT)).metrics(|m| m.purged.is_some_and(|p| p.index >= last), "log purged").await.expect("purged");
    let b4 = start_broker(4).await;
    new_leader.raft.add_learner(4, BrokerNode { raft_addr: b4.addr.to_string() }, true).await.expect("learner caught up");
    wait_applied(&b4, last).await;
    let expected = new_leader.sm.data().await;
    assert_eq!(b4.sm.data().await, expected, "the learner installed the leader's snapshot");
    let m = b4.raft.wait(Some(WAIT)).metrics(|m| m.snapshot.is_some(), "snapshot installed").await.expect("metrics");
    assert!(m.snapshot.is_some_and(|s| s.index >= last), "it came by snapshot, not by log");
}

/// A peer that refuses an AppendEntries for its size gets the same entries in smaller parts,
/// never the same payload again: a learner whose server decodes at most 100 KiB catches up on
/// 800 KiB of 40 KiB entries, which the leader would otherwise send as one payload forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_refused_for_its_size_is_split_not_retried() {
    const ENTRY_BYTES: usize = 40 << 10;
    let b1 = start_broker(1).await;
    let b2 = start_broker(2).await;
    b1.raft.initialize(members(&[&b1, &b2])).await.expect("initialize");
    let leader_id = leader_among(&[&b1, &b2]).await;
    let leader = [&b1, &b2].into_iter().find(|b| b.id == leader_id).unwrap();
    let last = write(leader, (0..20).map(|i| format!("{i:02}").repeat(ENTRY_BYTES / 2))).await;

    let small = start_broker_decoding(3, Some(100 << 10)).await;
    let joined = tokio::time::timeout(WAIT, leader.raft.add_learner(3, BrokerNode { raft_addr: small.addr.to_string() }, true)).await;
    assert!(matches!(joined, Ok(Ok(_))), "the learner never caught up: {joined:?}");
    wait_applied(&small, last).await;
    assert_eq!(small.sm.data().await, leader.sm.data().await, "the learner holds every entry");
}

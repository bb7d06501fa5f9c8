//! `MetaStateMachine` under a real one-node openraft `Raft` over raft-log's `RaftLogStore`:
//! replies reach the proposer, a change is visible to subscribers by the time its reply
//! arrives, and a restart after a snapshot and a log purge comes back to the same map (the
//! snapshot file, then the log above it re-applied).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use controller::{ClusterMap, META_GROUP_ID, MessageType, MetaCommand, MetaReply, MetaStateMachine};
use futures::Future;
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::type_config::async_runtime::watch::WatchReceiver;
use openraft::{AnyError, BasicNode, Config, OptionalSend, Raft, ServerState, SnapshotPolicy};
use raft_log::{LogEngine, LogOptions, RaftLogStore};
use tokio::sync::watch;

openraft::declare_raft_types!(
    pub MetaConfig:
        D = MetaCommand,
        R = MetaReply,
);

type MetaRaft = Raft<MetaConfig, MetaStateMachine<MetaConfig>>;

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

/// The network of a one-node cluster: there is never anyone to call.
struct NoPeers;

impl RaftNetworkFactory<MetaConfig> for NoPeers {
    type Network = NoPeers;

    async fn new_client(&mut self, _target: u64, _node: &BasicNode) -> NoPeers {
        NoPeers
    }
}

fn unreachable() -> Unreachable<MetaConfig> {
    Unreachable::new(&AnyError::error("a one-node cluster has no peers"))
}

impl RaftNetworkV2<MetaConfig> for NoPeers {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<MetaConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<MetaConfig>, RPCError<MetaConfig>> {
        Err(RPCError::Unreachable(unreachable()))
    }

    async fn vote(&mut self, _rpc: VoteRequest<MetaConfig>, _option: RPCOption) -> Result<VoteResponse<MetaConfig>, RPCError<MetaConfig>> {
        Err(RPCError::Unreachable(unreachable()))
    }

    async fn full_snapshot(
        &mut self,
        _vote: VoteOf<MetaConfig>,
        _snapshot: SnapshotOf<MetaConfig, Cursor<Vec<u8>>>,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<MetaConfig>, StreamingError<MetaConfig>> {
        Err(StreamingError::Unreachable(unreachable()))
    }
}

/// Starts node 1 over `dir/log` and `dir/meta`; snapshots only when triggered.
async fn start(dir: &Path) -> (MetaRaft, watch::Receiver<Arc<ClusterMap>>) {
    // Small segments: the engine preallocates one ahead.
    let (engine, _) = LogEngine::open(dir.join("log"), LogOptions { segment_bytes: 1 << 20, ..LogOptions::default() }).unwrap();
    let sm = MetaStateMachine::<MetaConfig>::open(&dir.join("meta")).unwrap();
    let map = sm.subscribe();
    let config = Config {
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 0,
        ..Config::default()
    };
    let raft =
        Raft::new(1, Arc::new(config.validate().unwrap()), NoPeers, RaftLogStore::new(engine.group(META_GROUP_ID)), sm).await.unwrap();
    (raft, map)
}

async fn write(raft: &MetaRaft, cmd: MetaCommand) -> MetaReply {
    raft.client_write(cmd).await.unwrap().data
}

fn create(name: &str) -> MetaCommand {
    MetaCommand::CreateTopic {
        name: name.into(),
        queue_count: 3,
        replication_factor: 2,
        message_type: MessageType::Normal,
        group_options: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_snapshot_and_purge_restores_the_map() {
    let dir = tempfile::tempdir().unwrap();
    let (raft, map) = start(dir.path()).await;
    raft.initialize(BTreeMap::from([(1, BasicNode::default())])).await.unwrap();
    raft.wait(WAIT).state(ServerState::Leader, "leader").await.unwrap();

    for id in 1..=3 {
        let cmd = MetaCommand::RegisterBroker {
            id,
            peer_addr: format!("b{id}:7000"),
            client_addr: format!("b{id}:8081"),
            labels: BTreeMap::new(),
        };
        assert_eq!(write(&raft, cmd).await, MetaReply::BrokerRegistered);
    }
    let MetaReply::TopicCreated(topic) = write(&raft, create("t")).await else { panic!("not created") };
    // Published before the reply was sent.
    assert_eq!(map.borrow().topics.get("t"), Some(&topic));
    assert_eq!(write(&raft, create("t")).await, MetaReply::TopicExists(topic.clone()));

    raft.trigger().snapshot().await.unwrap();
    let snapshot_at = raft.wait(WAIT).metrics(|m| m.snapshot.is_some(), "snapshot").await.unwrap().snapshot.unwrap();
    raft.trigger().purge_log(snapshot_at.index).await.unwrap();
    raft.wait(WAIT).purged(Some(snapshot_at), "purged").await.unwrap();

    // Above the snapshot: only in the log.
    assert!(matches!(write(&raft, create("after")).await, MetaReply::TopicCreated(_)));
    let group = topic.groups[1];
    assert_eq!(write(&raft, MetaCommand::MarkGroupBootstrapped { group }).await, MetaReply::GroupBootstrapped);
    let before = map.borrow().clone();
    let last_applied = raft.metrics().borrow_watched().last_applied.unwrap();
    raft.shutdown().await.unwrap();
    drop(raft);

    let (raft, map) = start(dir.path()).await;
    raft.wait(WAIT).applied_index_at_least(Some(last_applied.index), "re-applied").await.unwrap();
    assert_eq!(raft.metrics().borrow_watched().purged, Some(snapshot_at), "the log below the snapshot is gone");
    assert_eq!(*map.borrow(), before);
    assert!(map.borrow().groups[&group].bootstrapped);
    assert_eq!(map.borrow().topics.keys().collect::<BTreeSet<_>>(), BTreeSet::from([&"after".to_string(), &"t".to_string()]));
    raft.shutdown().await.unwrap();
}

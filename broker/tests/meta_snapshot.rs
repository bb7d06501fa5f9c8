//! The metadata group snapshots and purges its log (its first entries would otherwise pin the
//! log's first segment for ever), and the cluster map survives it: a restarted broker reopens
//! it from the snapshot file and the log above it, and a broker that joins after the purge gets
//! it by installing the snapshot.

mod common;

use std::path::Path;

use broker::meta::MetaGroupConfig;
use broker::options::BrokerOptions;
use broker::server::BrokerServer;
use common::{code, eventually};
use controller::{META_GROUP_ID, MetaStateMachine};
use proto::raftmq::v1::admin_service_client::AdminServiceClient;
use proto::raftmq::v1::status::Code;
use proto::raftmq::v1::{ClusterStatusRequest, CreateTopicRequest, DescribeTopicRequest, Topic};
use tonic::transport::Channel;

const EVERY: u64 = 16;
const KEEP: u64 = 4;

fn options(id: u64, dir: &Path, controllers: Vec<(u64, String)>) -> BrokerOptions {
    let mut o = common::host_options(id, dir, "127.0.0.1:0".parse().unwrap());
    (o.raft.meta_snapshot_every_entries, o.raft.meta_snapshot_keep_entries) = (EVERY, KEEP);
    o.controllers = common::voters(&controllers);
    o.topic_defaults.replication_factor = 1;
    o
}

async fn admin(b: &BrokerServer) -> AdminServiceClient<Channel> {
    AdminServiceClient::new(Channel::from_shared(format!("http://{}", b.client_addr())).unwrap().connect().await.unwrap())
}

/// The metadata group's purge point in the log under `data_dir`, read as `raftmq log verify`
/// reads it.
fn meta_purged(data_dir: &Path) -> Option<u64> {
    let report = raft_log::verify::verify_dir(&data_dir.join("log")).ok()?;
    report.groups.iter().find(|g| g.group == META_GROUP_ID).and_then(|g| g.purged_index)
}

fn topic(name: &str) -> Topic {
    Topic { name: name.into(), queue_count: 1, replication_factor: 1, message_type: 0, checkpoint_interval_entries: 0 }
}

async fn create(admin: &mut AdminServiceClient<Channel>, name: &str) -> Code {
    let reply = admin.create_topic(CreateTopicRequest { topic: Some(topic(name)) }).await.unwrap().into_inner();
    code(&reply.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_metadata_group_purges_its_log_and_keeps_the_map() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let b1 = BrokerServer::start(options(1, dirs[0].path(), vec![])).await.unwrap();
    let mut a1 = admin(&b1).await;
    eventually("broker 1 registered", || {
        let mut a1 = a1.clone();
        async move { (a1.cluster_status(ClusterStatusRequest {}).await.ok()?.into_inner().brokers.len() == 1).then_some(()) }
    })
    .await;
    assert_eq!(create(&mut a1, "kept").await, Code::Ok);
    // Each repeated create is a metadata command through Raft, answered "exists".
    for _ in 0..(4 * EVERY) {
        assert_eq!(create(&mut a1, "kept").await, Code::AlreadyExists);
    }
    let purged = eventually("the metadata log purged", || async { meta_purged(dirs[0].path()).filter(|p| *p >= 2 * EVERY) }).await;
    println!("metadata group purged to {purged}");

    // A broker that joins now cannot catch up from the log: it installs the snapshot.
    let b2 = BrokerServer::start(options(2, dirs[1].path(), vec![(1, b1.node().raft_addr)])).await.unwrap();
    eventually("broker 2 registered", || {
        let mut a1 = a1.clone();
        async move { (a1.cluster_status(ClusterStatusRequest {}).await.ok()?.into_inner().brokers.len() == 2).then_some(()) }
    })
    .await;
    eventually("broker 2 holds the map", || async { meta_purged(dirs[1].path()).filter(|p| *p >= purged) }).await;
    b2.shutdown().await.unwrap();
    let sm = MetaStateMachine::<MetaGroupConfig>::open(&dirs[1].path().join("meta")).unwrap();
    let map = sm.subscribe().borrow().clone();
    assert!(map.topics.contains_key("kept"), "broker 2's installed map: {map:?}");
    assert!(map.brokers.contains_key(&1));

    // A restart reopens the map from the snapshot file and the log above it.
    b1.shutdown().await.unwrap();
    let b1 = BrokerServer::start(options(1, dirs[0].path(), vec![])).await.unwrap();
    let mut a1 = admin(&b1).await;
    let described = eventually("the topic after a restart", || {
        let mut a1 = a1.clone();
        async move {
            let r = a1.describe_topic(DescribeTopicRequest { name: "kept".into() }).await.ok()?.into_inner();
            (code(&r.status) == Code::Ok).then_some(r)
        }
    })
    .await;
    assert_eq!(described.topic.map(|t| t.queue_count), Some(1));
    assert_eq!(create(&mut a1, "kept").await, Code::AlreadyExists);
    b1.shutdown().await.unwrap();
}

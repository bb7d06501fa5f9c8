//! Retention through a real broker (in process, real gRPC, real disks): a quiet group, with far
//! fewer entries than its checkpoint interval, still gets checkpoints (by time) and trims.

mod common;

use std::time::Duration;

use broker::options::BrokerOptions;
use broker::server::BrokerServer;
use common::{code, connect, eventually};
use proto::raftmq::v1::admin_service_client::AdminServiceClient;
use proto::raftmq::v1::queue_service_client::QueueServiceClient;
use proto::raftmq::v1::send_request::Target;
use proto::raftmq::v1::status::Code;
use proto::raftmq::v1::{ClusterStatusRequest, FetchRequest, Message, SendRequest};
use tonic::transport::Channel;

/// One broker, its own metadata group, retention checked every 100 ms, keeping messages 1 ms,
/// a checkpoint by time after 200 ms.
fn quick_retention(dir: &std::path::Path) -> BrokerOptions {
    let mut o = common::host_options(1, dir, "127.0.0.1:0".parse().unwrap());
    o.retention.check_interval_ms = 100;
    o.retention.max_age_ms = 1;
    o.retention.checkpoint_interval_ms = 200;
    o
}

/// Creates `name` (one queue, one replica) once the broker is registered.
async fn create(admin: &mut AdminServiceClient<Channel>, name: &str) {
    common::create_one_queue_topic(admin, name).await;
}

/// A group with three sends and the default checkpoint interval (4,096 entries) reaches no
/// checkpoint by entries; it trims once a checkpoint by time is taken and its messages are older
/// than the retention's age. Before time checkpoints it never trimmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_group_trims_at_a_checkpoint_taken_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerServer::start(quick_retention(dir.path())).await.unwrap();
    let mut admin = AdminServiceClient::new(connect(broker.client_addr()).await);
    create(&mut admin, "quiet").await;
    let queue = QueueServiceClient::new(connect(broker.client_addr()).await);
    for i in 0..3 {
        let req = SendRequest {
            topic: "quiet".into(),
            target: Some(Target::QueueId(0)),
            messages: vec![Message { body: format!("m{i}").into_bytes().into(), ..Default::default() }],
            producer_id: String::new(),
        };
        common::send_stored(&queue, req).await;
    }
    let fetched = eventually("the quiet group to trim its three messages", || {
        let mut queue = queue.clone();
        async move {
            let r = queue.fetch(FetchRequest { topic: "quiet".into(), queue_id: 0, ..Default::default() }).await.ok()?.into_inner();
            assert_eq!(code(&r.status), Code::Ok, "{:?}", r.status);
            (r.start_offset == 3).then_some(r)
        }
    })
    .await;
    assert!(fetched.messages.is_empty());
    assert_eq!(fetched.end_offset, 3, "offsets go on where they were");

    // The trim's own entry is followed by one more checkpoint by time, which holds no message
    // and so becomes the trim point: the whole log is purged. Then the group is left alone.
    let group = |r: &proto::raftmq::v1::ClusterStatusReply| r.groups.iter().find(|g| g.group_id != 0).cloned();
    let settled = eventually("the log purged up to the last entry", || {
        let mut admin = admin.clone();
        async move {
            let g = group(&admin.cluster_status(ClusterStatusRequest {}).await.ok()?.into_inner())?;
            let r = g.replicas.first()?;
            (r.purged_index > 0 && r.purged_index == r.applied_index).then_some(g)
        }
    })
    .await;
    // Not a wait for anything: an observation window of ten checkpoint intervals in which an
    // idle group must not be given more entries (each would wake it from hibernation).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = group(&admin.cluster_status(ClusterStatusRequest {}).await.unwrap().into_inner()).unwrap();
    assert_eq!(later.applied_index, settled.applied_index, "an idle group gets no more checkpoints");
    broker.shutdown().await.unwrap();
}

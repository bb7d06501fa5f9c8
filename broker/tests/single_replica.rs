//! A topic of one replica, through a real broker (in process, real gRPC, real disk): its group's
//! only voter is its leader, with no quorum to renew a leader lease with.

mod common;

use std::time::Duration;

use broker::server::BrokerServer;
use common::{code, connect};
use proto::raftmq::v1::admin_service_client::AdminServiceClient;
use proto::raftmq::v1::queue_service_client::QueueServiceClient;
use proto::raftmq::v1::send_request::Target;
use proto::raftmq::v1::status::Code;
use proto::raftmq::v1::{Message, SendRequest};

fn send(topic: &str, body: &str) -> SendRequest {
    SendRequest {
        topic: topic.into(),
        target: Some(Target::QueueId(0)),
        messages: vec![Message { body: body.as_bytes().to_vec().into(), ..Default::default() }],
        producer_id: String::new(),
    }
}

/// After a quiet spell longer than a leader's lease (the election timeout), a group of one
/// replica takes the next send at once: no one else could lead, so it never waits for a quorum
/// to renew its lease (before, every send was refused UNAVAILABLE for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_replica_group_takes_sends_after_a_quiet_spell_longer_than_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let options = common::host_options(1, dir.path(), "127.0.0.1:0".parse().unwrap());
    let quiet = Duration::from_millis(options.raft.election_timeout_max_ms * 3);
    let broker = BrokerServer::start(options).await.unwrap();
    let mut admin = AdminServiceClient::new(connect(broker.client_addr()).await);
    common::create_one_queue_topic(&mut admin, "alone").await;
    let queue = QueueServiceClient::new(connect(broker.client_addr()).await);
    common::send_stored(&queue, send("alone", "first")).await;
    for round in 0..2 {
        // The quiet spell is the subject here, not a wait for something to happen.
        tokio::time::sleep(quiet).await;
        let r = queue.clone().send(send("alone", &format!("after quiet {round}"))).await.unwrap().into_inner();
        assert_eq!(code(&r.status), Code::Ok, "round {round}: {:?}", r.status);
        assert_eq!(r.results[0].offset, round + 1);
    }
}

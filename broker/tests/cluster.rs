//! Three brokers in one process over real gRPC and real disks: the metadata group, topic
//! creation and placement, the client services and forwarding between brokers.

mod common;

use broker::options::BrokerOptions;
use broker::server::BrokerServer;
use common::{code, connect, eventually};
use proto::raftmq::v1::admin_service_client::AdminServiceClient;
use proto::raftmq::v1::queue_service_client::QueueServiceClient;
use proto::raftmq::v1::send_request::Target;
use proto::raftmq::v1::status::Code;
use proto::raftmq::v1::{
    ClusterStatusRequest, CommitOffsetRequest, CreateTopicRequest, DescribeTopicRequest, FetchRequest, GetOffsetRequest,
    GroupChecksumRequest, Message, SendRequest, Topic,
};

fn options(id: u64, dir: &std::path::Path, controllers: Vec<(u64, String)>) -> BrokerOptions {
    let mut o = common::host_options(id, dir, "127.0.0.1:0".parse().unwrap());
    o.controllers = common::voters(&controllers);
    o
}

fn message(body: String) -> Message {
    Message { body: body.into_bytes().into(), ..Default::default() }
}

/// Starts three brokers in `dirs` (broker 1 the metadata group's only voter) and waits until
/// every one is registered and alive.
async fn start_three(dirs: &[tempfile::TempDir]) -> (BrokerServer, BrokerServer, BrokerServer) {
    let b1 = BrokerServer::start(options(1, dirs[0].path(), vec![])).await.unwrap();
    let controllers = vec![(1, b1.node().raft_addr)];
    let b2 = BrokerServer::start(options(2, dirs[1].path(), controllers.clone())).await.unwrap();
    let b3 = BrokerServer::start(options(3, dirs[2].path(), controllers)).await.unwrap();
    let admin = AdminServiceClient::new(connect(b1.client_addr()).await);
    eventually("three registered brokers", || {
        let mut admin = admin.clone();
        async move {
            let r = admin.cluster_status(ClusterStatusRequest {}).await.ok()?.into_inner();
            (code(&r.status) == Code::Ok && r.brokers.len() == 3 && r.brokers.iter().all(|b| b.alive)).then_some(())
        }
    })
    .await;
    (b1, b2, b3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_brokers_create_send_fetch_commit_and_agree() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (b1, b2, b3) = start_three(&dirs).await;
    let brokers = [&b1, &b2, &b3];

    let mut admin = AdminServiceClient::new(connect(b2.client_addr()).await);

    let topic = Topic { name: "orders".into(), queue_count: 2, replication_factor: 3, message_type: 0, checkpoint_interval_entries: 0 };
    let created = admin.create_topic(CreateTopicRequest { topic: Some(topic.clone()) }).await.unwrap().into_inner();
    assert_eq!(code(&created.status), Code::Ok, "{:?}", created.status);
    let again = admin.create_topic(CreateTopicRequest { topic: Some(topic) }).await.unwrap().into_inner();
    assert_eq!(code(&again.status), Code::AlreadyExists);

    // Sends through every broker, to both queues: leaders forward or serve, offsets are dense.
    let mut sent: Vec<Vec<String>> = vec![vec![], vec![]];
    for round in 0..10 {
        for (i, b) in brokers.iter().enumerate() {
            let queue = QueueServiceClient::new(connect(b.client_addr()).await);
            for q in 0..2u32 {
                let bodies: Vec<String> = (0..5).map(|k| format!("r{round}-b{i}-q{q}-{k}")).collect();
                let req = SendRequest {
                    topic: "orders".into(),
                    target: Some(Target::QueueId(q)),
                    messages: bodies.iter().cloned().map(message).collect(),
                    producer_id: String::new(),
                };
                let reply = common::send_stored(&queue, req).await;
                let offsets: Vec<u64> = reply.results.iter().map(|r| r.offset).collect();
                let first = sent[q as usize].len() as u64;
                assert_eq!(offsets, (first..first + 5).collect::<Vec<_>>(), "dense offsets on queue {q}");
                assert!(reply.results.iter().all(|r| r.queue_id == q));
                sent[q as usize].extend(bodies);
            }
        }
    }

    // Every replica serves the same committed messages; a broker forwards if it has none.
    for b in brokers {
        let queue = QueueServiceClient::new(connect(b.client_addr()).await);
        for q in 0..2u32 {
            let expected = sent[q as usize].clone();
            let got = eventually("a replica to catch up", || {
                let mut queue = queue.clone();
                let expected = expected.clone();
                async move {
                    let r = queue
                        .fetch(FetchRequest { topic: "orders".into(), queue_id: q, offset: 0, max_messages: 1000, ..Default::default() })
                        .await
                        .ok()?
                        .into_inner();
                    assert_eq!(code(&r.status), Code::Ok, "{:?}", r.status);
                    (r.messages.len() == expected.len()).then_some(r)
                }
            })
            .await;
            let bodies: Vec<String> =
                got.messages.iter().map(|m| String::from_utf8(m.message.as_ref().unwrap().body.to_vec()).unwrap()).collect();
            assert_eq!(bodies, expected);
            assert_eq!(got.messages.iter().map(|m| m.offset).collect::<Vec<_>>(), (0..expected.len() as u64).collect::<Vec<_>>());
            assert_eq!(got.next_offset, expected.len() as u64);
        }
    }

    // A long poll at the end returns empty once its wait is over.
    let mut queue = QueueServiceClient::new(connect(b3.client_addr()).await);
    let end = sent[0].len() as u64;
    let idle = queue
        .fetch(FetchRequest { topic: "orders".into(), queue_id: 0, offset: end, wait_ms: 200, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&idle.status), Code::Ok);
    assert!(idle.messages.is_empty());
    assert_eq!(idle.next_offset, end);

    // Consumer offsets: linearizable, forward only.
    let commit = |offset| CommitOffsetRequest { consumer_group: "billing".into(), topic: "orders".into(), queue_id: 1, offset };
    let get = GetOffsetRequest { consumer_group: "billing".into(), topic: "orders".into(), queue_id: 1 };
    assert_eq!(queue.get_offset(get.clone()).await.unwrap().into_inner().offset, None);
    let c = queue.commit_offset(commit(7)).await.unwrap().into_inner();
    assert_eq!(code(&c.status), Code::Ok, "{:?}", c.status);
    for b in brokers {
        let mut q = QueueServiceClient::new(connect(b.client_addr()).await);
        assert_eq!(q.get_offset(get.clone()).await.unwrap().into_inner().offset, Some(7), "read through broker {}", b.id());
    }
    let back = queue.commit_offset(commit(3)).await.unwrap().into_inner();
    assert_eq!(code(&back.status), Code::InvalidArgument);
    assert_eq!(back.status.unwrap().field, "offset");

    // Bad input is refused at the edge, naming the field.
    let one_message = |topic: &str, queue_id: u32| SendRequest {
        topic: topic.into(),
        target: Some(Target::QueueId(queue_id)),
        messages: vec![message("x".into())],
        ..Default::default()
    };
    let bad = queue.send(one_message("no such!", 0)).await.unwrap().into_inner();
    assert_eq!(code(&bad.status), Code::InvalidArgument);
    assert_eq!(bad.status.unwrap().field, "topic");
    let missing = queue.send(one_message("nope", 0)).await.unwrap().into_inner();
    assert_eq!(code(&missing.status), Code::NotFound);
    let out_of_range = queue.send(one_message("orders", 2)).await.unwrap().into_inner();
    assert_eq!(out_of_range.status.unwrap().field, "queue_id");

    // Every replica of every group holds the same messages.
    let described = admin.describe_topic(DescribeTopicRequest { name: "orders".into() }).await.unwrap().into_inner();
    assert_eq!(code(&described.status), Code::Ok);
    assert_eq!(described.queues.len(), 2);
    for q in &described.queues {
        assert_eq!(q.replica_broker_ids.len(), 3);
        assert_eq!(q.end_offset, sent[q.queue_id as usize].len() as u64);
        let sum = admin.group_checksum(GroupChecksumRequest { group_id: q.group_id, applied_index: 0 }).await.unwrap().into_inner();
        assert_eq!(code(&sum.status), Code::Ok);
        assert_eq!(sum.replicas.len(), 3);
        assert!(sum.replicas.iter().all(|r| r.error.is_none() && r.digest.len() == 32), "{:?}", sum.replicas);
        assert!(sum.replicas.windows(2).all(|w| w[0].digest == w[1].digest), "replicas of group {} differ", q.group_id);
    }

    for b in [b3, b2, b1] {
        b.shutdown().await.unwrap();
    }
}

/// A `local_only` fetch is answered by the broker's own replica, follower or leader, and
/// refused (NOT_FOUND) by a broker that hosts none, where a plain fetch is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_local_only_fetch_reads_this_brokers_replica_or_is_refused() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (b1, b2, b3) = start_three(&dirs).await;
    let brokers = [&b1, &b2, &b3];
    let mut admin = AdminServiceClient::new(connect(b1.client_addr()).await);
    // Two replicas on three brokers: one broker hosts none.
    let topic = Topic { name: "pinned".into(), queue_count: 1, replication_factor: 2, message_type: 0, checkpoint_interval_entries: 0 };
    let created = admin.create_topic(CreateTopicRequest { topic: Some(topic) }).await.unwrap().into_inner();
    assert_eq!(code(&created.status), Code::Ok, "{:?}", created.status);
    let queue = QueueServiceClient::new(connect(b1.client_addr()).await);
    let req = SendRequest {
        topic: "pinned".into(),
        target: Some(Target::QueueId(0)),
        messages: (0..3).map(|i| message(format!("m{i}"))).collect(),
        producer_id: String::new(),
    };
    common::send_stored(&queue, req).await;
    let described = admin.describe_topic(DescribeTopicRequest { name: "pinned".into() }).await.unwrap().into_inner();
    let q = &described.queues[0];
    assert_eq!(q.replica_broker_ids.len(), 2);
    let outsider = brokers.iter().find(|b| !q.replica_broker_ids.contains(&b.id())).unwrap();
    let fetch = |local_only| FetchRequest { topic: "pinned".into(), queue_id: 0, max_messages: 100, local_only, ..Default::default() };

    for id in &q.replica_broker_ids {
        let b = brokers.iter().find(|b| b.id() == *id).unwrap();
        let queue = QueueServiceClient::new(connect(b.client_addr()).await);
        let role = if *id == q.leader_broker_id { "leader" } else { "follower" };
        let got = eventually("the replica to apply the send", || {
            let mut queue = queue.clone();
            async move {
                let r = queue.fetch(fetch(true)).await.ok()?.into_inner();
                assert_eq!(code(&r.status), Code::Ok, "{role} {id}: {:?}", r.status);
                (r.messages.len() == 3).then_some(r)
            }
        })
        .await;
        let bodies: Vec<Vec<u8>> = got.messages.iter().map(|m| m.message.as_ref().unwrap().body.to_vec()).collect();
        assert_eq!(bodies, vec![b"m0".to_vec(), b"m1".to_vec(), b"m2".to_vec()], "{role} {id}");
    }

    let mut outside = QueueServiceClient::new(connect(outsider.client_addr()).await);
    let forwarded = outside.fetch(fetch(false)).await.unwrap().into_inner();
    assert_eq!((code(&forwarded.status), forwarded.messages.len()), (Code::Ok, 3), "a plain fetch is forwarded: {:?}", forwarded.status);
    let refused = outside.fetch(fetch(true)).await.unwrap().into_inner();
    assert_eq!(code(&refused.status), Code::NotFound, "{:?}", refused.status);
    assert!(refused.messages.is_empty());
    let why = refused.status.unwrap().message;
    assert!(why.contains(&format!("broker {} hosts no replica of group {}", outsider.id(), q.group_id)), "{why}");

    for b in [b3, b2, b1] {
        b.shutdown().await.unwrap();
    }
}

/// A topic that exists is answered ALREADY_EXISTS whoever is alive: with a broker down, a
/// retried create of a three-replica topic used to be refused as if the cluster could not
/// place it (FAILED_PRECONDITION), which says nothing of the topic the client asked about.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn creating_an_existing_topic_with_a_broker_down_answers_already_exists() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (b1, b2, b3) = start_three(&dirs).await;
    let mut admin = AdminServiceClient::new(connect(b1.client_addr()).await);
    let topic = Topic { name: "placed".into(), queue_count: 1, replication_factor: 3, message_type: 0, checkpoint_interval_entries: 0 };
    let created = admin.create_topic(CreateTopicRequest { topic: Some(topic.clone()) }).await.unwrap().into_inner();
    assert_eq!(code(&created.status), Code::Ok, "{:?}", created.status);
    b3.shutdown().await.unwrap();
    let again = admin.create_topic(CreateTopicRequest { topic: Some(topic.clone()) }).await.unwrap().into_inner();
    assert_eq!(code(&again.status), Code::AlreadyExists, "{:?}", again.status);
    let other = Topic { name: "unplaceable".into(), ..topic };
    let refused = admin.create_topic(CreateTopicRequest { topic: Some(other) }).await.unwrap().into_inner();
    assert_eq!(code(&refused.status), Code::FailedPrecondition, "a new topic still needs its live brokers: {:?}", refused.status);
    for b in [b1, b2] {
        b.shutdown().await.unwrap();
    }
}

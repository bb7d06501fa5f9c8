//! Shared by the RocketMQ tests: a cluster with topics, raw `MessagingService` clients and
//! requests, for what the official clients would check themselves or cannot do.

use std::collections::HashMap;
use std::time::Duration;

use proto::apache::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use proto::apache::rocketmq::v2::{
    self as v2, Encoding, MessageQueue, MessageType, ReceiveMessageRequest, Resource, SystemProperties, receive_message_response,
};
use proto::raftmq::v1::Topic;
use tonic::transport::Channel;

use super::Cluster;

pub const FAST_RAFT: &str = "[raft]\nheartbeat_interval_ms = 100\nelection_timeout_min_ms = 500\nelection_timeout_max_ms = 1000\n";
/// raftmq.v1's topic types: what `raftmq admin topic create --type` stores.
pub const NORMAL: i32 = 1;
pub const FIFO: i32 = 2;
pub const DELAY: i32 = 3;

pub fn topic(name: &str, queue_count: u32, message_type: i32) -> Topic {
    Topic { name: name.into(), queue_count, replication_factor: 3, message_type, checkpoint_interval_entries: 0 }
}

/// Three brokers with `topics` created.
pub async fn cluster_with(topics: &[Topic]) -> Cluster {
    let cluster = Cluster::start(3, FAST_RAFT).await;
    for t in topics {
        cluster.create_topic(t.clone()).await;
    }
    cluster
}

pub async fn raw_client(cluster: &Cluster, broker: usize) -> MessagingServiceClient<Channel> {
    let channel =
        Channel::from_shared(format!("http://{}", cluster.brokers[broker].client_addr())).expect("uri").connect().await.expect("connect");
    MessagingServiceClient::new(channel).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20)
}

pub fn resource(name: &str) -> Option<Resource> {
    Some(Resource { resource_namespace: String::new(), name: name.into() })
}

pub fn raw_message(topic: &str, id: &str, body: Vec<u8>) -> v2::Message {
    v2::Message {
        topic: resource(topic),
        user_properties: HashMap::new(),
        system_properties: Some(SystemProperties {
            message_id: id.into(),
            body_encoding: Encoding::Identity as i32,
            message_type: MessageType::Normal as i32,
            ..Default::default()
        }),
        body: body.into(),
    }
}

pub fn message_queue(topic: &str, id: i32) -> Option<MessageQueue> {
    Some(MessageQueue { topic: resource(topic), id, ..Default::default() })
}

/// A receive's stream, by raw gRPC: its last status code and the messages.
pub async fn receive(client: &mut MessagingServiceClient<Channel>, req: ReceiveMessageRequest) -> (i32, Vec<v2::Message>) {
    try_receive(client, req).await.expect("receive")
}

/// [`receive`], with a failed call returned (a broker killed under it).
pub async fn try_receive(
    client: &mut MessagingServiceClient<Channel>,
    req: ReceiveMessageRequest,
) -> Result<(i32, Vec<v2::Message>), tonic::Status> {
    let mut stream = client.receive_message(req).await?.into_inner();
    let (mut code, mut messages) = (0, vec![]);
    while let Some(item) = stream.message().await? {
        match item.content.expect("content") {
            receive_message_response::Content::Status(s) => code = s.code,
            receive_message_response::Content::Message(m) => messages.push(m),
            receive_message_response::Content::DeliveryTimestamp(_) => {}
        }
    }
    Ok((code, messages))
}

/// A receive of queue 0 of `topic` for `group`, 16 messages at most.
pub fn receive_request(topic: &str, group: &str, invisible: Option<Duration>, long_poll: Duration) -> ReceiveMessageRequest {
    let d = |d: Duration| prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 };
    ReceiveMessageRequest {
        group: resource(group),
        message_queue: message_queue(topic, 0),
        filter_expression: None,
        batch_size: 16,
        invisible_duration: invisible.map(d),
        auto_renew: false,
        long_polling_timeout: Some(d(long_poll)),
        attempt_id: None,
    }
}

/// The receipt handle a delivered message carries.
pub fn handle(m: &v2::Message) -> String {
    m.system_properties.as_ref().and_then(|p| p.receipt_handle.clone()).expect("a receipt handle")
}

/// An ack of one receipt handle: its code (the entry's and the whole's, which must agree).
pub async fn ack_code(client: &mut MessagingServiceClient<Channel>, topic: &str, group: &str, receipt_handle: &str) -> i32 {
    try_ack(client, topic, group, receipt_handle).await.expect("ack")
}

/// [`ack_code`], with a failed call returned.
pub async fn try_ack(
    client: &mut MessagingServiceClient<Channel>,
    topic: &str,
    group: &str,
    receipt_handle: &str,
) -> Result<i32, tonic::Status> {
    let entries = vec![v2::AckMessageEntry { message_id: "id".into(), receipt_handle: receipt_handle.into(), lite_topic: None }];
    let r = client.ack_message(v2::AckMessageRequest { group: resource(group), topic: resource(topic), entries }).await?.into_inner();
    assert_eq!(r.entries.len(), 1);
    assert_eq!(r.entries[0].status.as_ref().map(|s| s.code), r.status.as_ref().map(|s| s.code), "entry and whole agree");
    Ok(r.status.map_or(0, |s| s.code))
}

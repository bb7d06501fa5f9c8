//! Dead letters: a message delivered its maximum attempts
//! ([`super::telemetry::MAX_DELIVERY_ATTEMPTS`], RocketMQ's default: the first and 16 retries)
//! goes to its consumer group's dead-letter queue, `%DLQ%<consumer group>`: a normal topic of
//! one queue, created the first time it is needed, that any consumer can read.
//!
//! The hand-off has two durable steps: the message is appended to the dead-letter topic
//! through the protocol's own send path (acknowledged once a majority has it fsynced), then its
//! delivery is acknowledged in the source queue's group. Until then no receive delivers it again
//! (the `Receive` command's `max_attempts`), and a failure between the steps leaves it exhausted
//! in flight, so the next receive of the group hands it over again: never lost, at least once (a
//! failover between the two steps can append it twice, with its message id both times).

use controller::{GroupRecord, MessageType as TopicType};
use proto::apache::rocketmq::v2::{Code, MessageType, Resource, SendMessageRequest, Status};
use proto::raftmq::v1::Topic;
use tonic::Request;

use super::message::{Delivery, delivered};
use super::send::{SendState, send_message};
use super::{codes, status};
use crate::host::QueueRaft;
use crate::serve::Received;
use crate::server::Core;
use crate::service::admin_service::{Created, create_topic};

/// How RocketMQ names a consumer group's dead-letter topic: this prefix and the group.
pub(super) const DEAD_LETTER_PREFIX: &str = "%DLQ%";

/// The dead-letter topic of `consumer_group` (raftmq's name, with its namespace).
pub(super) fn dead_letter_topic(consumer_group: &str) -> String {
    format!("{DEAD_LETTER_PREFIX}{consumer_group}")
}

/// Creates `topic`, a dead-letter topic, unless it exists: one queue, the broker's default
/// replication, normal messages.
async fn ensure_topic(core: &Core, topic: &str) -> Result<(), Status> {
    if core.map_with_topic(topic).await.is_ok() {
        return Ok(());
    }
    let wanted = Topic {
        name: topic.to_owned(),
        queue_count: 1,
        replication_factor: 0,
        message_type: proto::raftmq::v1::MessageType::Normal as i32,
        checkpoint_interval_entries: 0,
    };
    match create_topic(core, wanted).await {
        Ok(Created::New(_) | Created::Exists(_)) => Ok(()),
        Err(s) => Err(codes::from_native(&s)),
    }
}

/// Hands `exhausted` (in flight for `consumer_group` on `group`'s queue, led here through
/// `raft`) to the group's dead-letter queue: each appended there, then acknowledged here.
/// Stops at the first failure, with its status; what was not handed over stays exhausted.
pub(super) async fn hand_over(
    core: &Core,
    send: &SendState,
    consumer_group: &str,
    (group, raft): (&GroupRecord, &QueueRaft),
    exhausted: Vec<Received>,
    due: Option<tokio::time::Instant>,
) -> Result<(), Status> {
    let topic = dead_letter_topic(consumer_group);
    ensure_topic(core, &topic).await?;
    // raftmq's name, namespace included: no header resolves it again.
    let resource = Resource { resource_namespace: String::new(), name: topic.clone() };
    let store_host = core.client_endpoint(core.id).unwrap_or_default();
    let mut handed = Vec::with_capacity(exhausted.len());
    for Received { message, delivery } in exhausted {
        let attempt = i32::try_from(delivery.attempt).unwrap_or(i32::MAX);
        let mut dead =
            delivered(&resource, TopicType::Normal, &store_host, message, Delivery { attempt, receipt_handle: None, invisible: None });
        if let Some(p) = dead.system_properties.as_mut() {
            // A normal message in its new topic: no FIFO group, no delivery time, the one queue.
            p.message_type = MessageType::Normal as i32;
            p.message_group = None;
            p.delivery_timestamp = None;
            p.queue_id = 0;
        }
        let mut request = Request::new(SendMessageRequest { messages: vec![dead] });
        if let Some(left) = crate::edge::left(due) {
            request.set_timeout(left);
        }
        let answer = send_message(core, send, request).await;
        let code = answer.status.as_ref().map_or(Code::InternalServerError as i32, |s| s.code);
        if code != Code::Ok as i32 {
            let why = answer.status.map(|s| s.message).unwrap_or_default();
            tracing::warn!(%topic, offset = delivery.offset, code, %why, "dead-lettering a message failed; it stays in flight");
            return Err(status(Code::try_from(code).unwrap_or(Code::InternalServerError), format!("dead-lettering to {topic:?}: {why}")));
        }
        handed.push((delivery.offset, delivery.version));
    }
    core.ack_here(raft, group, consumer_group, handed, due).await.map(|_| ()).map_err(|s| codes::from_native(&s))
}

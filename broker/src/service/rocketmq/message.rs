//! A stored message as a RocketMQ client receives it, with every system property the official
//! clients read (`../shared/rocketmq-clients.md`, 16-21): an MD5 body digest in upper-case hex
//! (Node fails a receive without one, and both clients mark a mismatch corrupted), the body's
//! encoding (Python refuses ENCODING_UNSPECIFIED), the producer's message id, the delivery
//! attempt (1 on the first delivery), and the bare topic name with its namespace beside it.

use std::time::Duration;

use controller::MessageType as TopicType;
use md5::{Digest as _, Md5};
use proto::apache::rocketmq::v2::{Digest, DigestType, Encoding, Message, Resource, SystemProperties};

use super::route::message_type;
use super::telemetry::duration;
use crate::host::StoredMessage;

/// How one delivery of a message goes out: its attempt, and for a receive (not a pull) the
/// receipt handle that names it and how long it stays invisible.
pub(super) struct Delivery {
    pub attempt: i32,
    pub receipt_handle: Option<String>,
    pub invisible: Option<Duration>,
}

pub(super) fn delivered(topic: &Resource, topic_type: TopicType, store_host: &str, stored: StoredMessage, delivery: Delivery) -> Message {
    let m = stored.message;
    let properties = SystemProperties {
        tag: m.tag,
        keys: m.keys,
        message_id: m.message_id,
        body_digest: Some(Digest { r#type: DigestType::Md5 as i32, checksum: md5_hex(&m.body) }),
        body_encoding: if m.body_gzip { Encoding::Gzip } else { Encoding::Identity } as i32,
        message_type: message_type(topic_type) as i32,
        born_timestamp: Some(timestamp(m.born_timestamp_ms)),
        born_host: m.born_host,
        store_timestamp: Some(timestamp(stored.store_time_ms)),
        store_host: store_host.to_owned(),
        delivery_timestamp: m.deliver_at_ms.map(timestamp),
        receipt_handle: delivery.receipt_handle,
        queue_id: i32::try_from(m.queue).unwrap_or(i32::MAX),
        queue_offset: Some(i64::try_from(stored.offset).unwrap_or(i64::MAX)),
        invisible_duration: delivery.invisible.map(duration),
        delivery_attempt: Some(delivery.attempt),
        message_group: m.message_group,
        trace_context: m.trace_context,
        ..SystemProperties::default()
    };
    Message {
        topic: Some(topic.clone()),
        user_properties: m.properties.into_iter().collect(),
        system_properties: Some(properties),
        body: m.body.into(),
    }
}

/// The MD5 of `body` in upper-case hex, as the Apache proxy sends it.
pub(super) fn md5_hex(body: &[u8]) -> String {
    Md5::digest(body).iter().map(|b| format!("{b:02X}")).collect()
}

fn timestamp(ms: u64) -> prost_types::Timestamp {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    prost_types::Timestamp { seconds: ms / 1000, nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0) }
}

//! How the size limits along one message's path fit together, and the check that they do.
//!
//! A message crosses four bounds on its way to every replica, each at least as large as the one
//! before, so that whatever the edge admits can always be stored and replicated:
//!
//! 1. the edge ([`Limits`]): body, properties, keys and tag of one message; the largest message
//!    it admits encodes to at most [`message_bytes_max`];
//! 2. the entry ([`SendBatchLimits::entry_bytes_max`]): the send batcher counts every message
//!    whole (its encoded size: body, keys, properties, tag, id) and never builds an entry above
//!    it, so one largest message must fit: `message_bytes_max ≤ entry_bytes_max`;
//! 3. the log record ([`LogOptions::max_payload_bytes`]): an entry encodes to at most
//!    `entry_bytes_max + ENTRY_OVERHEAD_BYTES_MAX`, which must fit in one record — an append
//!    above it is a storage error that stops the group's Raft core;
//! 4. the transport ([`TRANSPORT_MESSAGE_BYTES_MAX`]): one AppendEntries carries one entry plus
//!    up to [`PAYLOAD_BYTES_MAX`] of further entries, with framing; every internal gRPC channel
//!    (Raft transport, peer service, forwarded client calls) accepts at least that.
//!
//! Client requests are bounded beside the chain: the client server decodes a request of at most
//! [`client_request_bytes_max`] (one full entry's messages with their framing), and every
//! request's bytes are held against one broker-wide budget before they are decoded
//! (`server::request_bytes`), which must hold the largest request or it would wait for ever.
//!
//! [`check`] refuses options that break the chain, naming the key to change; the broker will
//! not start with them.

use raft_log::LogOptions;
use raft_log::PAYLOAD_BYTES_MAX;

use crate::edge::Limits;
use crate::queue::SendBatchLimits;

/// The largest message any internal gRPC channel (Raft transport, peer service) decodes or
/// encodes, and the bound of decoding one Raft message. Fixed, not configured: peers must agree.
pub const TRANSPORT_MESSAGE_BYTES_MAX: usize = 64 << 20;
/// Bytes an encoded queue-group entry holds beyond the encoded messages of its command: the log
/// id, the payload and command tags, the store time and the message count (measured: under
/// 100; see the test).
pub const ENTRY_OVERHEAD_BYTES_MAX: usize = 1 << 10;
/// Bytes of an AppendEntries beyond its entries: the vote, the previous and committed log ids,
/// the entry count and the `RaftRequest` envelope.
pub const APPEND_ENTRIES_FRAMING_BYTES_MAX: usize = 64 << 10;
/// Longest message id the broker assigns or accepts.
pub const MESSAGE_ID_BYTES_MAX: usize = 128;
/// Longest message group, producer host and trace context a message carries (RocketMQ's
/// message-group bound; the other two hold a host name and a W3C trace context).
pub const MESSAGE_GROUP_BYTES_MAX: usize = 64;
pub const BORN_HOST_BYTES_MAX: usize = 255;
pub const TRACE_CONTEXT_BYTES_MAX: usize = 1024;

/// Room in a send request for its protobuf framing and message fields beyond what its messages
/// count in an entry.
pub const REQUEST_OVERHEAD_BYTES: usize = 1 << 20;
/// gRPC's framing of one message in a request body: a compression flag and a 4-byte length.
pub const GRPC_MESSAGE_HEADER_BYTES: usize = 5;

/// The largest client request body the broker takes, gRPC framing included: one full entry's
/// messages with their framing. The client server decodes messages of at most this minus
/// [`GRPC_MESSAGE_HEADER_BYTES`]; a longer body is refused before more of it is read.
pub fn client_request_bytes_max(send: &SendBatchLimits) -> usize {
    send.entry_bytes_max.saturating_add(REQUEST_OVERHEAD_BYTES)
}

/// bincode's length prefix of a string, a sequence or a map.
const LEN_PREFIX: usize = 8;

/// The most bytes one message the edge admits under `limits` encodes to in an entry (see
/// [`crate::queue::NewMessage::encoded_bytes`]): an upper bound, not an estimate.
pub fn message_bytes_max(limits: &Limits) -> usize {
    let queue = 4;
    let message_id = LEN_PREFIX + MESSAGE_ID_BYTES_MAX;
    let tag = 1 + LEN_PREFIX + limits.tag_bytes_max;
    let keys = LEN_PREFIX + limits.keys_per_message_max * (LEN_PREFIX + limits.tag_bytes_max);
    // Each property has a non-empty name, so there are at most `properties_bytes_max` of them,
    // each with two length prefixes.
    let properties = LEN_PREFIX + limits.properties_bytes_max * (1 + 2 * LEN_PREFIX);
    let body = LEN_PREFIX + limits.body_bytes_max;
    // message_group, born_host, born_timestamp_ms, deliver_at_ms, trace_context, body_gzip.
    let rocketmq_fields = (1 + LEN_PREFIX + MESSAGE_GROUP_BYTES_MAX)
        + (LEN_PREFIX + BORN_HOST_BYTES_MAX)
        + 8
        + (1 + 8)
        + (1 + LEN_PREFIX + TRACE_CONTEXT_BYTES_MAX)
        + 1;
    queue + message_id + tag + keys + properties + body + rocketmq_fields
}

/// One option that does not fit with the others.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct SizeLimitProblem {
    /// The configuration key to change.
    pub key: &'static str,
    pub reason: String,
}

/// Every way `limits` (the budget of request bytes in flight among them), `send` and `log` break
/// the chain of the module documentation; empty when they fit.
pub fn check(limits: &Limits, send: &SendBatchLimits, log: &LogOptions) -> Vec<SizeLimitProblem> {
    let mut problems = Vec::new();
    let in_flight_request_bytes_max = limits.in_flight_request_bytes_max;
    let request_max = client_request_bytes_max(send);
    if in_flight_request_bytes_max < request_max {
        problems.push(SizeLimitProblem {
            key: "limits.in_flight_request_bytes_max",
            reason: format!(
                "{in_flight_request_bytes_max} is below the largest request the broker takes ({request_max} bytes: send.entry_bytes_max {} \
                 plus {REQUEST_OVERHEAD_BYTES} of framing): such a request would wait for ever",
                send.entry_bytes_max
            ),
        });
    }

    let message_max = message_bytes_max(limits);
    if message_max > send.entry_bytes_max {
        problems.push(SizeLimitProblem {
            key: "send.entry_bytes_max",
            reason: format!(
                "{} is below the largest message the edge admits ({message_max} bytes: limits.body_bytes_max {} plus up to {} \
                 of keys, properties, tag and id): such a message could never be stored",
                send.entry_bytes_max,
                limits.body_bytes_max,
                message_max - limits.body_bytes_max,
            ),
        });
    }
    let record_max = usize::try_from(log.max_payload_bytes()).unwrap_or(usize::MAX);
    let entry_max = send.entry_bytes_max.saturating_add(ENTRY_OVERHEAD_BYTES_MAX);
    if entry_max > record_max {
        problems.push(SizeLimitProblem {
            key: "send.entry_bytes_max",
            reason: format!(
                "{} plus {ENTRY_OVERHEAD_BYTES_MAX} bytes of entry framing is above the log's largest record ({record_max} bytes): \
                 a full entry would stop its group's Raft core",
                send.entry_bytes_max
            ),
        });
    }
    let append_max = record_max.saturating_add(PAYLOAD_BYTES_MAX).saturating_add(APPEND_ENTRIES_FRAMING_BYTES_MAX);
    if append_max > TRANSPORT_MESSAGE_BYTES_MAX {
        problems.push(SizeLimitProblem {
            key: "log.max_record_bytes",
            reason: format!(
                "{record_max} bytes per record makes an AppendEntries of up to {append_max} bytes, above the transport's \
                 {TRANSPORT_MESSAGE_BYTES_MAX}"
            ),
        });
    }
    problems
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;
    use openraft::vote::RaftLeaderId;
    use proptest::prelude::*;

    use super::*;
    use crate::edge::{MessageParts, check_message};
    use crate::queue::{GroupCommand, NewMessage, QueueGroupConfig};

    #[test]
    fn the_defaults_fit() {
        assert_eq!(check(&Limits::default(), &SendBatchLimits::default(), &LogOptions::default()), vec![]);
    }

    #[test]
    fn each_broken_link_names_its_key() {
        let limits = Limits::default();
        let small_entry = SendBatchLimits { entry_bytes_max: limits.body_bytes_max, ..SendBatchLimits::default() };
        let problems = check(&limits, &small_entry, &LogOptions::default());
        assert_eq!(problems.iter().map(|p| p.key).collect::<Vec<_>>(), ["send.entry_bytes_max"], "{problems:?}");
        assert!(problems[0].reason.contains("largest message"), "{}", problems[0]);

        // An entry the size of a whole record leaves no room for its framing.
        let log = LogOptions::default();
        let full = SendBatchLimits { entry_bytes_max: log.max_payload_bytes() as usize, ..SendBatchLimits::default() };
        let problems = check(&limits, &full, &log);
        assert_eq!(problems.iter().map(|p| p.key).collect::<Vec<_>>(), ["send.entry_bytes_max"], "{problems:?}");
        assert!(problems[0].reason.contains("Raft core"), "{}", problems[0]);

        let huge_records = LogOptions { max_record_bytes: 62 << 20, segment_bytes: 256 << 20, ..LogOptions::default() };
        let problems = check(&limits, &SendBatchLimits::default(), &huge_records);
        assert_eq!(problems.iter().map(|p| p.key).collect::<Vec<_>>(), ["log.max_record_bytes"], "{problems:?}");
    }

    /// A budget of exactly the largest request fits; one byte less would leave that request
    /// waiting for ever, and is refused naming the key.
    #[test]
    fn the_request_budget_holds_the_largest_request() {
        let (limits, send, log) = (Limits::default(), SendBatchLimits::default(), LogOptions::default());
        let largest = client_request_bytes_max(&send);
        assert_eq!(largest, send.entry_bytes_max + REQUEST_OVERHEAD_BYTES);
        let budget = |bytes| Limits { in_flight_request_bytes_max: bytes, ..limits.clone() };
        assert_eq!(check(&budget(largest), &send, &log), vec![]);
        let problems = check(&budget(largest - 1), &send, &log);
        assert_eq!(problems.iter().map(|p| p.key).collect::<Vec<_>>(), ["limits.in_flight_request_bytes_max"], "{problems:?}");
        assert!(problems[0].reason.contains(&format!("largest request the broker takes ({largest} bytes")), "{}", problems[0]);
    }

    #[test]
    fn an_entry_holds_at_most_its_overhead_beyond_its_messages() {
        let messages: Vec<NewMessage> = (0..256)
            .map(|i| NewMessage {
                queue: i,
                message_id: "X".repeat(MESSAGE_ID_BYTES_MAX),
                tag: Some("t".into()),
                keys: vec!["k".into()],
                properties: vec![("p".into(), "v".into())],
                body: vec![1; 10],
                ..NewMessage::default()
            })
            .collect();
        let message_bytes: usize = messages.iter().map(NewMessage::encoded_bytes).sum();
        let command = GroupCommand::Send { store_time_ms: u64::MAX, messages };
        let leader = <openraft::alias::LeaderIdOf<QueueGroupConfig> as RaftLeaderId>::new(u64::MAX, u64::MAX);
        let log_id = openraft::alias::LogIdOf::<QueueGroupConfig>::new(leader.to_committed(), u64::MAX);
        let entry = <QueueGroupConfig as openraft::RaftTypeConfig>::Entry::new_normal(log_id, command);
        let entry_bytes = bincode::serialized_size(&entry).expect("size") as usize;
        assert!(entry_bytes > message_bytes);
        assert!(entry_bytes - message_bytes <= ENTRY_OVERHEAD_BYTES_MAX, "{} bytes of overhead", entry_bytes - message_bytes);
    }

    fn edge_valid_message(limits: Limits) -> impl Strategy<Value = NewMessage> {
        let key = || proptest::string::string_regex(&format!("[a-z]{{1,{}}}", limits.tag_bytes_max)).expect("regex");
        let keys = proptest::collection::vec(key(), 0..=limits.keys_per_message_max);
        // Many tiny properties cost the most framing per byte of the limit.
        let properties = proptest::collection::vec(("[a-z]{1,2}", "[a-z]{0,2}"), 0..=limits.properties_bytes_max / 2);
        let body = proptest::collection::vec(any::<u8>(), 0..=limits.body_bytes_max);
        (proptest::option::of(key()), keys, properties, body).prop_map(|(tag, keys, properties, body)| NewMessage {
            queue: u32::MAX,
            message_id: "X".repeat(MESSAGE_ID_BYTES_MAX),
            tag,
            keys,
            properties,
            body,
            ..NewMessage::default()
        })
    }

    proptest! {
        /// Every message the edge admits encodes within `message_bytes_max`.
        #[test]
        fn message_bytes_max_bounds_every_admitted_message(m in edge_valid_message(Limits {
            body_bytes_max: 64, properties_bytes_max: 48, keys_per_message_max: 4, tag_bytes_max: 8, ..Limits::default()
        })) {
            let limits = Limits { body_bytes_max: 64, properties_bytes_max: 48, keys_per_message_max: 4, tag_bytes_max: 8, ..Limits::default() };
            let parts = MessageParts { body: &m.body, properties: &m.properties, tag: m.tag.as_deref(), keys: &m.keys };
            prop_assume!(check_message("m", &parts, &limits).is_ok());
            prop_assert!(m.encoded_bytes() <= message_bytes_max(&limits), "{} > {}", m.encoded_bytes(), message_bytes_max(&limits));
        }
    }

    #[test]
    fn the_widest_default_message_is_within_the_bound() {
        let limits = Limits::default();
        let widest = NewMessage {
            queue: u32::MAX,
            message_id: "X".repeat(MESSAGE_ID_BYTES_MAX),
            tag: Some("t".repeat(limits.tag_bytes_max)),
            keys: vec!["k".repeat(limits.tag_bytes_max); limits.keys_per_message_max],
            properties: (0..limits.properties_bytes_max).map(|i| (char::from(b'a' + (i % 26) as u8).to_string(), String::new())).collect(),
            body: vec![0; limits.body_bytes_max],
            message_group: Some("g".repeat(MESSAGE_GROUP_BYTES_MAX)),
            born_host: "h".repeat(BORN_HOST_BYTES_MAX),
            born_timestamp_ms: u64::MAX,
            deliver_at_ms: Some(u64::MAX),
            trace_context: Some("t".repeat(TRACE_CONTEXT_BYTES_MAX)),
            body_gzip: true,
        };
        let parts = MessageParts { body: &widest.body, properties: &widest.properties, tag: widest.tag.as_deref(), keys: &widest.keys };
        assert_eq!(check_message("m", &parts, &limits), Ok(()));
        assert!(widest.encoded_bytes() <= message_bytes_max(&limits));
        // And the bound is not loose by more than the id's slack.
        assert!(message_bytes_max(&limits) - widest.encoded_bytes() < 1024);
    }
}

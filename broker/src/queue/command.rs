//! The Raft command of a queue group and the state machine's reply to it: the `D` and `R` of
//! [`QueueGroupConfig`]. Both travel in Raft entries and RPCs as bincode (serde), so a field
//! once released is never reordered or retyped; new commands go at the end of the enum.

use std::fmt;

use serde::{Deserialize, Serialize};

crate::group_types!(
    /// The openraft types of one queue group.
    pub QueueGroupConfig: GroupCommand => GroupReply
);

/// One message of a [`GroupCommand::Send`], as the edge validated it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMessage {
    /// The queue of the group the message goes to.
    pub queue: u32,
    pub message_id: String,
    pub tag: Option<String>,
    pub keys: Vec<String>,
    pub properties: Vec<(String, String)>,
    /// Encoded as one byte string, not a sequence of u8 values: the same bincode bytes, but
    /// copied at once instead of one element at a time (a 64 KiB body was 64 Ki calls).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// FIFO topics: the messages of one group are delivered in send order.
    pub message_group: Option<String>,
    /// Where and when the producer made the message, as it said (RocketMQ's born host and
    /// timestamp); empty and 0 when it did not say.
    pub born_host: String,
    pub born_timestamp_ms: u64,
    /// Delay topics: not delivered before this time (ms since the epoch).
    pub deliver_at_ms: Option<u64>,
    /// The producer's trace context, passed through to consumers.
    pub trace_context: Option<String>,
    /// The producer compressed the body with gzip (RocketMQ's body encoding): stored and
    /// delivered as it came.
    pub body_gzip: bool,
}

impl NewMessage {
    /// The bytes this message takes in an entry (its bincode encoding): what every size bound
    /// of the send path counts, so keys, properties and tag count as much as the body.
    pub fn encoded_bytes(&self) -> usize {
        // Walks the fields without copying them (the body is one byte string); it cannot fail
        // for these types, and a failure would count as too large, never as small.
        bincode::serialized_size(self).map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
    }
}

/// A change to a queue group's state, proposed by the group's leader through Raft and applied by
/// every replica in log order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupCommand {
    /// Released entries of [`GroupCommand::Send`], written before messages had RocketMQ's fields:
    /// decoded with those fields empty; never proposed any more.
    SendV1 {
        store_time_ms: u64,
        #[serde(with = "send_v1")]
        messages: Vec<NewMessage>,
    },
    /// Moves `consumer_group`'s committed offset on `queue` to `offset` (the next offset it
    /// will consume). Refused if it would move backwards (invariant 3).
    CommitOffset { consumer_group: String, queue: u32, offset: u64 },
    /// Retention: deletes every message of the log entries up to `up_to_log_index`, on every
    /// replica, so the log may then be purged up to it. Refused unless the group holds a
    /// checkpoint at exactly that index above its trim point (see [`super::apply`]). Each
    /// queue's start offset becomes the checkpoint's next offset of the queue.
    Trim { up_to_log_index: u64 },
    /// Records a checkpoint at this entry's own log index, as an entry at a multiple of the
    /// checkpoint interval does. The leader's retention proposes it for a group that had entries
    /// since its newest checkpoint but none for a while, so a group too quiet to reach the next
    /// multiple of its interval still gets a trim point (see [`crate::retention::time_checkpoint_due`]).
    Checkpoint,
    /// [`GroupCommand::CommitOffset`] with the bound on consumer groups that the proposing
    /// leader was configured with, so every replica refuses the same commits whatever its own
    /// configuration: a commit that would give `queue` more than `consumer_groups_max`
    /// consumer groups is answered [`GroupReply::LimitReached`]. Leaders propose only this
    /// form; `CommitOffset` stays for the entries already in logs.
    CommitOffsetBounded { consumer_group: String, queue: u32, offset: u64, consumer_groups_max: u32 },
    /// Appends `messages` to their queues, in order. `store_time_ms` is stamped by the leader
    /// before proposing, so every replica applies the same value (a replica's own clock would
    /// make replicas differ).
    Send { store_time_ms: u64, messages: Vec<NewMessage> },
    // The receive state below is applied, stored and carried by checkpoints (so snapshots),
    // proposed at the queue's leader by `serve/receive.rs` (docs/ARCHITECTURE.md, "Consumer state").
    /// Delivers messages of `queue` to `consumer_group` (RocketMQ's receive): first those in
    /// flight whose invisibility ended by `now_ms` (attempt and version + 1), oldest first, then
    /// new ones from the group's receive cursor; at most `max_messages`, and never more than
    /// `in_flight_max` in flight for the group on the queue. Each stays invisible for
    /// `invisible_ms`. `now_ms` is the leader's clock, stamped when proposing. A message
    /// delivered `max_attempts` times already is not delivered again (0: no bound): it waits,
    /// in flight, for the leader to hand it to the group's dead-letter queue and settle it.
    /// `fifo` (FIFO topics): a message is delivered only once every earlier one of the queue
    /// was acknowledged or dead-lettered; a redelivery waits behind every earlier one in flight.
    Receive {
        consumer_group: String,
        queue: u32,
        now_ms: u64,
        invisible_ms: u64,
        max_messages: u32,
        in_flight_max: u32,
        max_attempts: u32,
        fifo: bool,
    },
    /// Settles deliveries of `consumer_group` on `queue`, each `(offset, version)`; one whose
    /// version is not the message's current one (it was delivered again since) changes nothing.
    Ack { consumer_group: String, queue: u32, deliveries: Vec<(u64, u32)> },
    /// Makes the delivery `(offset, version)` invisible until `now_ms + invisible_ms`, as a new
    /// version (a new receipt handle); a stale version changes nothing.
    ChangeInvisibility { consumer_group: String, queue: u32, offset: u64, version: u32, now_ms: u64, invisible_ms: u64 },
}

/// One message a `Receive` delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub offset: u64,
    /// 1 on the first delivery.
    pub attempt: u32,
    /// What the receipt handle of this delivery names.
    pub version: u32,
    pub invisible_until_ms: u64,
}

/// The layout of [`GroupCommand::SendV1`]'s messages: [`NewMessage`] without the fields after
/// `body`. A message with any of them set cannot be written so (they would be lost): an error.
mod send_v1 {
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::NewMessage;

    #[derive(Serialize)]
    struct Written<'a> {
        queue: u32,
        message_id: &'a str,
        tag: &'a Option<String>,
        keys: &'a [String],
        properties: &'a [(String, String)],
        #[serde(with = "serde_bytes")]
        body: &'a [u8],
    }

    #[derive(Deserialize)]
    struct Read {
        queue: u32,
        message_id: String,
        tag: Option<String>,
        keys: Vec<String>,
        properties: Vec<(String, String)>,
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    }

    pub fn serialize<S: Serializer>(messages: &[NewMessage], s: S) -> Result<S::Ok, S::Error> {
        let mut written = Vec::with_capacity(messages.len());
        for m in messages {
            let without_later_fields = NewMessage {
                message_group: None,
                born_host: String::new(),
                born_timestamp_ms: 0,
                deliver_at_ms: None,
                trace_context: None,
                body_gzip: false,
                ..m.clone()
            };
            if &without_later_fields != m {
                return Err(S::Error::custom("a message with RocketMQ fields cannot be written as a SendV1 entry"));
            }
            let (keys, properties, body) = (&m.keys, &m.properties, &m.body);
            written.push(Written { queue: m.queue, message_id: &m.message_id, tag: &m.tag, keys, properties, body });
        }
        written.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<NewMessage>, D::Error> {
        let read = Vec::<Read>::deserialize(d)?;
        Ok(read
            .into_iter()
            .map(|m| NewMessage {
                queue: m.queue,
                message_id: m.message_id,
                tag: m.tag,
                keys: m.keys,
                properties: m.properties,
                body: m.body,
                ..NewMessage::default()
            })
            .collect())
    }
}

impl GroupCommand {
    /// The leader's store time and the messages, for a command that appends messages.
    pub fn appended(&self) -> Option<(u64, &[NewMessage])> {
        match self {
            GroupCommand::Send { store_time_ms, messages } | GroupCommand::SendV1 { store_time_ms, messages } => {
                Some((*store_time_ms, messages))
            }
            _ => None,
        }
    }
}

/// The state machine's answer to one applied Raft entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupReply {
    /// The messages of a `Send` were stored: `(queue, offset)` of each, in the command's order.
    Sent { offsets: Vec<(u32, u64)> },
    /// A `CommitOffset` was applied (or was already at that offset).
    OffsetCommitted,
    /// The command is a valid Raft entry that the state machine refused, the same way on every
    /// replica; nothing of it was applied (the entry still advances the applied log id).
    Rejected { reason: String },
    /// The entry carried no command (a leader's blank entry, a membership change): nothing to do
    /// beyond advancing the applied log id and membership.
    NoCommand,
    /// A `Trim` was applied: the group's trim point (and snapshot) is now `up_to_log_index`.
    Trimmed { up_to_log_index: u64 },
    /// A `Checkpoint` was applied: the group holds a checkpoint at `log_index`, the entry's own.
    Checkpointed { log_index: u64 },
    /// The command would pass a bound on what the group stores (consumer groups per queue,
    /// offsets per group); refused on every replica alike, nothing applied.
    LimitReached { reason: String },
    /// What a `Receive` delivered, by offset: redeliveries first, then new messages.
    Received { deliveries: Vec<Delivery> },
    /// For each delivery of an `Ack`: whether it was settled (false: stale or unknown).
    Acked { settled: Vec<bool> },
    /// The new version of a `ChangeInvisibility`'s delivery; `None` when its version was stale.
    InvisibilityChanged { version: Option<u32> },
}

/// openraft logs commands; a body is never printed, only counted.
impl fmt::Display for GroupCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupCommand::Send { store_time_ms, messages } | GroupCommand::SendV1 { store_time_ms, messages } => {
                let bytes: usize = messages.iter().map(|m| m.body.len()).sum();
                write!(f, "send {} messages ({bytes} body bytes) at {store_time_ms} ms", messages.len())
            }
            GroupCommand::CommitOffset { consumer_group, queue, offset } => {
                write!(f, "commit offset {offset} of {consumer_group:?} on queue {queue}")
            }
            GroupCommand::Trim { up_to_log_index } => write!(f, "trim up to log index {up_to_log_index}"),
            GroupCommand::Checkpoint => write!(f, "checkpoint"),
            GroupCommand::Receive { consumer_group, queue, now_ms, invisible_ms, max_messages, in_flight_max, max_attempts, fifo } => {
                write!(
                    f,
                    "receive up to {max_messages} of queue {queue} for {consumer_group:?} at {now_ms} ms, invisible {invisible_ms} ms \
                     (at most {in_flight_max} in flight, {max_attempts} attempts{})",
                    if *fifo { ", in order" } else { "" }
                )
            }
            GroupCommand::Ack { consumer_group, queue, deliveries } => {
                write!(f, "ack {} deliveries of queue {queue} for {consumer_group:?}", deliveries.len())
            }
            GroupCommand::ChangeInvisibility { consumer_group, queue, offset, version, now_ms, invisible_ms } => write!(
                f,
                "make offset {offset} (version {version}) of queue {queue} invisible to {consumer_group:?} for {invisible_ms} ms from {now_ms} ms"
            ),
            GroupCommand::CommitOffsetBounded { consumer_group, queue, offset, consumer_groups_max } => {
                write!(f, "commit offset {offset} of {consumer_group:?} on queue {queue} (at most {consumer_groups_max} consumer groups)")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_replies_round_trip_through_bincode() {
        let commands = [
            GroupCommand::Send {
                store_time_ms: 1_764_000_000_000,
                messages: vec![NewMessage {
                    queue: 3,
                    message_id: "m-1".into(),
                    tag: Some("TagA".into()),
                    keys: vec!["k1".into(), "k2".into()],
                    properties: vec![("a".into(), "b".into())],
                    body: vec![0, 1, 2, 255],
                    ..NewMessage::default()
                }],
            },
            GroupCommand::Send { store_time_ms: 0, messages: vec![] },
            GroupCommand::CommitOffset { consumer_group: "cg".into(), queue: u32::MAX, offset: u64::MAX },
            GroupCommand::Trim { up_to_log_index: 4096 },
            GroupCommand::Checkpoint,
            GroupCommand::CommitOffsetBounded { consumer_group: "cg".into(), queue: 2, offset: 9, consumer_groups_max: 1024 },
            GroupCommand::Receive {
                consumer_group: "cg".into(),
                queue: 1,
                now_ms: 5,
                invisible_ms: 30_000,
                max_messages: 32,
                in_flight_max: 4096,
                max_attempts: 17,
                fifo: true,
            },
            GroupCommand::Ack { consumer_group: "cg".into(), queue: 1, deliveries: vec![(7, 2), (8, 1)] },
            GroupCommand::ChangeInvisibility { consumer_group: "cg".into(), queue: 1, offset: 7, version: 2, now_ms: 9, invisible_ms: 10 },
        ];
        for c in commands {
            assert_eq!(bincode::deserialize::<GroupCommand>(&bincode::serialize(&c).unwrap()).unwrap(), c);
        }
        let replies = [
            GroupReply::Sent { offsets: vec![(1, 2), (1, 3)] },
            GroupReply::OffsetCommitted,
            GroupReply::Rejected { reason: "no".into() },
            GroupReply::NoCommand,
            GroupReply::Trimmed { up_to_log_index: 8192 },
            GroupReply::Checkpointed { log_index: 9 },
            GroupReply::LimitReached { reason: "full".into() },
            GroupReply::Received { deliveries: vec![Delivery { offset: 7, attempt: 2, version: 3, invisible_until_ms: 40 }] },
            GroupReply::Acked { settled: vec![true, false] },
            GroupReply::InvisibilityChanged { version: Some(4) },
        ];
        for r in replies {
            assert_eq!(bincode::deserialize::<GroupReply>(&bincode::serialize(&r).unwrap()).unwrap(), r);
        }
    }

    /// Entries already in logs must decode as they did: a command's bincode is its variant's
    /// index (u32 LE) and its fields, so new variants only ever go at the end.
    #[test]
    fn released_commands_keep_their_encoding() {
        let trim = bincode::serialize(&GroupCommand::Trim { up_to_log_index: 7 }).unwrap();
        assert_eq!(trim, [&2u32.to_le_bytes()[..], &7u64.to_le_bytes()[..]].concat());
        assert_eq!(bincode::serialize(&GroupCommand::Checkpoint).unwrap(), 3u32.to_le_bytes());
        let commit = GroupCommand::CommitOffset { consumer_group: "g".into(), queue: 1, offset: 2 };
        assert_eq!(bincode::serialize(&commit).unwrap()[..4], 1u32.to_le_bytes());
        let ack = GroupCommand::Ack { consumer_group: "g".into(), queue: 1, deliveries: vec![] };
        assert_eq!(bincode::serialize(&ack).unwrap()[..4], 7u32.to_le_bytes(), "the consumer state commands follow Send");
    }

    /// A `Send` entry written before messages had RocketMQ's fields (variant 0, the fields up to
    /// `body`) decodes as [`GroupCommand::SendV1`] with those fields empty; the new `Send` keeps them.
    #[test]
    fn send_entries_of_both_layouts_decode() {
        // The released layout, spelled out as a tuple (bincode writes a struct as its fields in
        // order): queue, message id, tag, keys, properties, body.
        let released = (1u32, "m", Some("t"), vec!["k"], vec![("p", "v")], serde_bytes::Bytes::new(b"body"));
        let bytes = [&0u32.to_le_bytes()[..], &bincode::serialize(&(7u64, vec![released])).unwrap()].concat();
        let expected = NewMessage {
            queue: 1,
            message_id: "m".into(),
            tag: Some("t".into()),
            keys: vec!["k".into()],
            properties: vec![("p".into(), "v".into())],
            body: b"body".to_vec(),
            ..NewMessage::default()
        };
        let decoded: GroupCommand = bincode::deserialize(&bytes).unwrap();
        assert_eq!(decoded, GroupCommand::SendV1 { store_time_ms: 7, messages: vec![expected.clone()] });
        assert_eq!(bincode::serialize(&decoded).unwrap(), bytes, "written back as it was");

        let full = NewMessage {
            message_group: Some("order-1".into()),
            born_host: "10.0.0.1".into(),
            born_timestamp_ms: 5,
            deliver_at_ms: Some(9),
            trace_context: Some("00-ab".into()),
            body_gzip: true,
            ..expected
        };
        let send = GroupCommand::Send { store_time_ms: 7, messages: vec![full.clone()] };
        assert_eq!(bincode::deserialize::<GroupCommand>(&bincode::serialize(&send).unwrap()).unwrap(), send);
        let lossy = GroupCommand::SendV1 { store_time_ms: 7, messages: vec![full] };
        assert!(bincode::serialize(&lossy).is_err(), "RocketMQ fields are never dropped silently");
    }

    #[test]
    fn display_counts_bodies_without_printing_them() {
        let c = GroupCommand::Send {
            store_time_ms: 5,
            messages: vec![NewMessage {
                queue: 0,
                message_id: "m".into(),
                tag: None,
                keys: vec![],
                properties: vec![],
                body: b"secret".to_vec(),
                ..NewMessage::default()
            }],
        };
        let shown = c.to_string();
        assert_eq!(shown, "send 1 messages (6 body bytes) at 5 ms");
        assert_eq!(GroupCommand::Trim { up_to_log_index: 7 }.to_string(), "trim up to log index 7");
    }
}

//! Encoding and parsing of the store's keys; the byte layout is in the [`super`] module doc.

use std::fmt;

use super::GroupId;

/// Length of the group id every key starts with.
pub(crate) const GROUP_LEN: usize = 8;

/// Longest consumer group name a key can hold: its length is one byte.
pub const CONSUMER_GROUP_BYTES_MAX: usize = 255;

/// The byte after the group id: which kind of item a key names. Keys sort by it, so each kind is
/// one contiguous range of a group. The byte is the variant's position (0x00 for `Importing`);
/// released keys are on disk, so a new kind goes at the end and none moves
/// (`kind_bytes_are_the_released_ones`).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Importing,
    Applied,
    NextOffset,
    ConsumerOffset,
    Index,
    RaftState,
    StartOffset,
    TrimPoint,
    Checkpoint,
    PopCursor,
    InFlight,
    ReceiveFloor,
    ReceiveItems,
    InFlightTally,
}

impl Kind {
    const ALL: [Kind; 14] = [
        Kind::Importing,
        Kind::Applied,
        Kind::NextOffset,
        Kind::ConsumerOffset,
        Kind::Index,
        Kind::RaftState,
        Kind::StartOffset,
        Kind::TrimPoint,
        Kind::Checkpoint,
        Kind::PopCursor,
        Kind::InFlight,
        Kind::ReceiveFloor,
        Kind::ReceiveItems,
        Kind::InFlightTally,
    ];

    fn from_byte(b: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u8 == b)
    }
}

/// Above every kind byte: `group ++ [GROUP_END]` sorts after every key of the group and before
/// every key of the next one, so it bounds a group's range without computing `group + 1`
/// (which would overflow for `u64::MAX`).
const GROUP_END: u8 = 0xFF;

/// What one key names inside a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    /// The group is being replaced by an import that has not finished.
    Importing,
    /// The group's applied Raft log index.
    Applied,
    /// The offset the next message of a queue will get.
    NextOffset { queue: u32 },
    /// A consumer group's committed offset on a queue.
    ConsumerOffset { consumer_group: String, queue: u32 },
    /// One consume-queue index entry.
    Index { queue: u32, offset: u64 },
    /// What openraft needs to restart the group's state machine (last applied log id and
    /// membership), opaque to the store.
    RaftState,
    /// The first offset of a queue still held (everything below was trimmed).
    StartOffset { queue: u32 },
    /// The Raft log index of the group's last trim: the checkpoint its snapshot is.
    TrimPoint,
    /// The group's state as of one Raft log index: see [`super::Checkpoint`].
    Checkpoint { log_index: u64 },
    /// The next offset of `queue` never yet delivered to `consumer_group` by a receive.
    PopCursor { consumer_group: String, queue: u32 },
    /// A message received by `consumer_group` and not yet acknowledged: see [`super::InFlight`].
    InFlight { consumer_group: String, queue: u32, offset: u64 },
    /// No in-flight record of `consumer_group` on `queue` is below this offset: where scans of
    /// them start, so they skip what acknowledgements deleted. Derived (a receive keeps it),
    /// never in a checkpoint: absent means 0.
    ReceiveFloor { consumer_group: String, queue: u32 },
    /// How many receive cursors and in-flight records the group holds: its receive state's
    /// size without a scan. Derived, never in a checkpoint: absent means "count them".
    ReceiveItems,
    /// How many messages `consumer_group` has in flight on `queue`, and a time before which
    /// none becomes visible again: see [`super::InFlightTally`]. Derived (receives, acks and
    /// invisibility changes keep it), never in a checkpoint: absent means "read the records".
    InFlightTally { consumer_group: String, queue: u32 },
}

impl Item {
    /// The key of this item in `group`.
    pub(crate) fn key(&self, group: GroupId) -> Vec<u8> {
        let mut k = Vec::with_capacity(GROUP_LEN + 1 + 12);
        k.extend_from_slice(&group.to_be_bytes());
        self.encode_suffix(&mut k);
        k
    }

    /// Appends the part of the key after the group id.
    fn encode_suffix(&self, k: &mut Vec<u8>) {
        k.push(self.kind() as u8);
        match self {
            Item::Importing | Item::Applied | Item::RaftState | Item::TrimPoint | Item::ReceiveItems => {}
            Item::NextOffset { queue } | Item::StartOffset { queue } => k.extend_from_slice(&queue.to_be_bytes()),
            Item::ConsumerOffset { consumer_group, queue }
            | Item::PopCursor { consumer_group, queue }
            | Item::ReceiveFloor { consumer_group, queue }
            | Item::InFlightTally { consumer_group, queue } => {
                push_consumer_group(k, consumer_group);
                k.extend_from_slice(&queue.to_be_bytes());
            }
            Item::InFlight { consumer_group, queue, offset } => {
                push_consumer_group(k, consumer_group);
                k.extend_from_slice(&queue.to_be_bytes());
                k.extend_from_slice(&offset.to_be_bytes());
            }
            Item::Index { queue, offset } => {
                k.extend_from_slice(&queue.to_be_bytes());
                k.extend_from_slice(&offset.to_be_bytes());
            }
            Item::Checkpoint { log_index } => k.extend_from_slice(&log_index.to_be_bytes()),
        }
    }

    /// The kind byte of this item's keys.
    fn kind(&self) -> Kind {
        match self {
            Item::Importing => Kind::Importing,
            Item::Applied => Kind::Applied,
            Item::NextOffset { .. } => Kind::NextOffset,
            Item::ConsumerOffset { .. } => Kind::ConsumerOffset,
            Item::Index { .. } => Kind::Index,
            Item::RaftState => Kind::RaftState,
            Item::StartOffset { .. } => Kind::StartOffset,
            Item::TrimPoint => Kind::TrimPoint,
            Item::Checkpoint { .. } => Kind::Checkpoint,
            Item::PopCursor { .. } => Kind::PopCursor,
            Item::InFlight { .. } => Kind::InFlight,
            Item::ReceiveFloor { .. } => Kind::ReceiveFloor,
            Item::ReceiveItems => Kind::ReceiveItems,
            Item::InFlightTally { .. } => Kind::InFlightTally,
        }
    }

    /// Parses the part of a key after the group id.
    pub(crate) fn parse_suffix(s: &[u8]) -> Result<Self, String> {
        let (&byte, rest) = s.split_first().ok_or("key ends after the group id")?;
        let kind = Kind::from_byte(byte).ok_or_else(|| format!("unknown kind {byte:#04x}"))?;
        let exact = |n: usize| {
            if rest.len() == n { Ok(()) } else { Err(format!("kind {byte:#04x} needs {n} bytes after it, found {}", rest.len())) }
        };
        match kind {
            Kind::Importing => exact(0).map(|_| Item::Importing),
            Kind::Applied => exact(0).map(|_| Item::Applied),
            Kind::NextOffset => exact(4).map(|_| Item::NextOffset { queue: be_u32(rest) }),
            Kind::ConsumerOffset => {
                let (consumer_group, rest) = split_consumer_group(rest, 4)?;
                Ok(Item::ConsumerOffset { consumer_group, queue: be_u32(rest) })
            }
            Kind::Index => exact(12).map(|_| Item::Index { queue: be_u32(&rest[..4]), offset: be_u64(&rest[4..]) }),
            Kind::RaftState => exact(0).map(|_| Item::RaftState),
            Kind::StartOffset => exact(4).map(|_| Item::StartOffset { queue: be_u32(rest) }),
            Kind::TrimPoint => exact(0).map(|_| Item::TrimPoint),
            Kind::Checkpoint => exact(8).map(|_| Item::Checkpoint { log_index: be_u64(rest) }),
            Kind::PopCursor => {
                let (consumer_group, rest) = split_consumer_group(rest, 4)?;
                Ok(Item::PopCursor { consumer_group, queue: be_u32(rest) })
            }
            Kind::InFlight => {
                let (consumer_group, rest) = split_consumer_group(rest, 12)?;
                Ok(Item::InFlight { consumer_group, queue: be_u32(&rest[..4]), offset: be_u64(&rest[4..]) })
            }
            Kind::ReceiveFloor => {
                let (consumer_group, rest) = split_consumer_group(rest, 4)?;
                Ok(Item::ReceiveFloor { consumer_group, queue: be_u32(rest) })
            }
            Kind::ReceiveItems => exact(0).map(|_| Item::ReceiveItems),
            Kind::InFlightTally => {
                let (consumer_group, rest) = split_consumer_group(rest, 4)?;
                Ok(Item::InFlightTally { consumer_group, queue: be_u32(rest) })
            }
        }
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Importing => write!(f, "import marker"),
            Item::Applied => write!(f, "applied index"),
            Item::NextOffset { queue } => write!(f, "next offset of queue {queue}"),
            Item::ConsumerOffset { consumer_group, queue } => write!(f, "offset of consumer group {consumer_group:?} on queue {queue}"),
            Item::Index { queue, offset } => write!(f, "index entry queue {queue} offset {offset}"),
            Item::RaftState => write!(f, "raft state"),
            Item::StartOffset { queue } => write!(f, "start offset of queue {queue}"),
            Item::TrimPoint => write!(f, "trim point"),
            Item::Checkpoint { log_index } => write!(f, "checkpoint at log index {log_index}"),
            Item::PopCursor { consumer_group, queue } => write!(f, "receive cursor of consumer group {consumer_group:?} on queue {queue}"),
            Item::InFlight { consumer_group, queue, offset } => {
                write!(f, "in-flight record of consumer group {consumer_group:?} on queue {queue} offset {offset}")
            }
            Item::ReceiveFloor { consumer_group, queue } => {
                write!(f, "in-flight floor of consumer group {consumer_group:?} on queue {queue}")
            }
            Item::ReceiveItems => write!(f, "receive item count"),
            Item::InFlightTally { consumer_group, queue } => {
                write!(f, "in-flight tally of consumer group {consumer_group:?} on queue {queue}")
            }
        }
    }
}

/// Appends a consumer group name as keys hold it: its length in one byte, then its bytes.
fn push_consumer_group(k: &mut Vec<u8>, consumer_group: &str) {
    // Callers check the length first (`check_consumer_group`); the assert keeps a longer name
    // from being cut silently into another name's key.
    assert!(consumer_group.len() <= CONSUMER_GROUP_BYTES_MAX, "consumer group name over {CONSUMER_GROUP_BYTES_MAX} bytes");
    k.push(consumer_group.len() as u8);
    k.extend_from_slice(consumer_group.as_bytes());
}

/// A key's consumer group name and the `after` bytes that must follow it.
fn split_consumer_group(rest: &[u8], after: usize) -> Result<(String, &[u8]), String> {
    let (&len, rest) = rest.split_first().ok_or("consumer group key has no name length")?;
    let len = usize::from(len);
    if len == 0 || rest.len() != len + after {
        return Err(format!("consumer group key: name length {len} with {} bytes after it", rest.len()));
    }
    let name = std::str::from_utf8(&rest[..len]).map_err(|_| "consumer group name is not UTF-8".to_string())?;
    Ok((name.to_string(), &rest[len..]))
}

/// Names a stored key for an error message: what it is when it parses, its bytes otherwise.
pub(crate) fn describe(key: &[u8]) -> String {
    match parse(key) {
        Ok((group, item)) => format!("group {group} {item}"),
        Err(_) => format!("key {}", hex(key)),
    }
}

/// Splits a stored key into its group and item.
pub(crate) fn parse(key: &[u8]) -> Result<(GroupId, Item), String> {
    if key.len() < GROUP_LEN {
        return Err(format!("key of {} bytes is shorter than a group id", key.len()));
    }
    let (group, suffix) = key.split_at(GROUP_LEN);
    Ok((be_u64(group), Item::parse_suffix(suffix)?))
}

/// The group id a stored key starts with.
pub(crate) fn group_of(key: &[u8]) -> Option<GroupId> {
    key.get(..GROUP_LEN).map(be_u64)
}

/// The first key of a group's range.
pub(crate) fn group_start(group: GroupId) -> [u8; GROUP_LEN] {
    group.to_be_bytes()
}

/// Just past the last key of a group's range (exclusive bound).
pub(crate) fn group_end(group: GroupId) -> Vec<u8> {
    let mut k = group.to_be_bytes().to_vec();
    k.push(GROUP_END);
    k
}

/// Just past the last index key of one queue (exclusive bound): index keys are exactly
/// `GROUP_LEN + 13` bytes long, so one more byte after the largest offset is past them all.
pub(crate) fn queue_index_end(group: GroupId, queue: u32) -> Vec<u8> {
    let mut k = Item::Index { queue, offset: u64::MAX }.key(group);
    k.push(0);
    k
}

/// The first key of one kind's range in a group: every key of that kind starts with it.
pub(crate) fn kind_start(group: GroupId, item: &Item) -> Vec<u8> {
    let mut k = Item::Importing.key(group);
    k[GROUP_LEN] = item.kind() as u8;
    k
}

/// Just past the last key of one kind in a group (exclusive bound): the next kind's first key.
pub(crate) fn kind_end(group: GroupId, item: &Item) -> Vec<u8> {
    let mut k = kind_start(group, item);
    // Every kind is below GROUP_END, so this stays inside the group's range.
    k[GROUP_LEN] += 1;
    k
}

/// A consumer group name must fit a key: 1 to [`CONSUMER_GROUP_BYTES_MAX`] bytes.
pub(crate) fn check_consumer_group(name: &str) -> Result<(), super::StoreError> {
    if name.is_empty() || name.len() > CONSUMER_GROUP_BYTES_MAX {
        return Err(super::StoreError::InvalidName { len: name.len(), max: CONSUMER_GROUP_BYTES_MAX });
    }
    Ok(())
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes(leading(b))
}

fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(leading(b))
}

/// The first `N` bytes of `b`, which callers have checked holds at least that many.
pub(crate) fn leading<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_items() -> Vec<Item> {
        vec![
            Item::Importing,
            Item::Applied,
            Item::NextOffset { queue: 7 },
            Item::ConsumerOffset { consumer_group: "cg-1".into(), queue: 3 },
            Item::Index { queue: 7, offset: 1 << 40 },
            Item::RaftState,
            Item::StartOffset { queue: 7 },
            Item::TrimPoint,
            Item::Checkpoint { log_index: 1 << 40 },
            Item::PopCursor { consumer_group: "cg-1".into(), queue: 3 },
            Item::InFlight { consumer_group: "cg-1".into(), queue: 3, offset: 1 << 40 },
            Item::ReceiveFloor { consumer_group: "cg-1".into(), queue: 3 },
            Item::ReceiveItems,
            Item::InFlightTally { consumer_group: "cg-1".into(), queue: 3 },
        ]
    }

    #[test]
    fn every_item_round_trips_through_its_key() {
        for group in [0, 1, u64::MAX] {
            for item in all_items() {
                let key = item.key(group);
                assert_eq!(parse(&key).unwrap(), (group, item.clone()));
                assert!(key.as_slice() >= group_start(group).as_slice() && key < group_end(group), "{item} outside its group's range");
            }
        }
    }

    #[test]
    fn index_keys_sort_by_queue_then_numeric_offset() {
        let k = |queue, offset| Item::Index { queue, offset }.key(9);
        assert!(k(1, 255) < k(1, 256));
        assert!(k(1, u64::MAX) < k(2, 0));
        assert!(k(1, u64::MAX) < queue_index_end(9, 1));
        assert!(queue_index_end(9, 1) <= k(2, 0));
        assert!(queue_index_end(9, u32::MAX) < group_end(9));
    }

    #[test]
    fn kind_ranges_hold_exactly_their_kind() {
        for item in all_items() {
            let (start, end) = (kind_start(9, &item), kind_end(9, &item));
            for other in all_items() {
                let key = other.key(9);
                let inside = key >= start && key < end;
                assert_eq!(inside, other.kind() == item.kind(), "{other} against the range of {item}");
            }
            assert!(end <= group_end(9));
        }
        let k = |log_index| Item::Checkpoint { log_index }.key(9);
        assert!(k(255) < k(256), "checkpoints sort by numeric log index");
    }

    #[test]
    fn groups_do_not_overlap() {
        assert!(group_end(1).as_slice() < group_start(2).as_slice());
        assert!(Item::Index { queue: u32::MAX, offset: u64::MAX }.key(1) < group_end(1));
    }

    #[test]
    fn kind_bytes_are_the_released_ones() {
        assert_eq!(Kind::ALL.map(|k| k as u8), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
        assert!(Kind::ALL.iter().all(|k| Kind::from_byte(*k as u8) == Some(*k)));
    }

    #[test]
    fn malformed_keys_are_refused() {
        let g = 5u64.to_be_bytes();
        let with = |rest: &[u8]| [g.as_slice(), rest].concat();
        assert!(parse(&g[..7]).is_err());
        assert!(parse(&g).is_err());
        assert!(parse(&with(&[0x0E])).is_err());
        assert!(parse(&with(&[Kind::PopCursor as u8, 1, b'g', 0, 0, 0])).is_err());
        assert!(parse(&with(&[Kind::InFlight as u8, 1, b'g', 0, 0, 0, 1])).is_err());
        assert!(parse(&with(&[Kind::Applied as u8, 0])).is_err());
        assert!(parse(&with(&[Kind::RaftState as u8, 0])).is_err());
        assert!(parse(&with(&[Kind::TrimPoint as u8, 0])).is_err());
        assert!(parse(&with(&[Kind::StartOffset as u8, 0, 0, 1])).is_err());
        assert!(parse(&with(&[Kind::Checkpoint as u8, 0, 0, 0, 0, 0, 0, 1])).is_err());
        assert!(parse(&with(&[Kind::Index as u8, 0, 0, 0, 1])).is_err());
        assert!(parse(&with(&[Kind::ConsumerOffset as u8, 0, 0, 0, 0, 1])).is_err());
        assert!(parse(&with(&[Kind::ConsumerOffset as u8, 2, b'a', 0, 0, 0, 1])).is_err());
        assert!(parse(&with(&[Kind::ConsumerOffset as u8, 1, 0xFF, 0, 0, 0, 1])).is_err());
        assert!(describe(&with(&[0x0D])).starts_with("key 0000000000000005"));
    }

    #[test]
    fn consumer_group_names_are_bounded() {
        assert!(check_consumer_group("").is_err());
        assert!(check_consumer_group(&"x".repeat(CONSUMER_GROUP_BYTES_MAX)).is_ok());
        assert!(check_consumer_group(&"x".repeat(CONSUMER_GROUP_BYTES_MAX + 1)).is_err());
    }
}

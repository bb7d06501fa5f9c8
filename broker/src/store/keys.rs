//! Encoding and parsing of the store's keys; the byte layout is in the [`super`] module doc.

use std::fmt;

use super::GroupId;

/// Length of the group id every key starts with.
pub(crate) const GROUP_LEN: usize = 8;

/// Longest consumer group name a key can hold: its length is one byte.
pub const CONSUMER_GROUP_BYTES_MAX: usize = 255;

const IMPORTING: u8 = 0x00;
const APPLIED: u8 = 0x01;
const NEXT_OFFSET: u8 = 0x02;
const CONSUMER_OFFSET: u8 = 0x03;
const INDEX: u8 = 0x04;
const RAFT_STATE: u8 = 0x05;
const START_OFFSET: u8 = 0x06;
const TRIM_POINT: u8 = 0x07;
const CHECKPOINT: u8 = 0x08;
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
        match self {
            Item::Importing => k.push(IMPORTING),
            Item::Applied => k.push(APPLIED),
            Item::NextOffset { queue } => {
                k.push(NEXT_OFFSET);
                k.extend_from_slice(&queue.to_be_bytes());
            }
            Item::ConsumerOffset { consumer_group, queue } => {
                // Callers check the length first (`check_consumer_group`); the assert keeps a
                // longer name from being cut silently into another name's key.
                assert!(consumer_group.len() <= CONSUMER_GROUP_BYTES_MAX, "consumer group name over {CONSUMER_GROUP_BYTES_MAX} bytes");
                k.push(CONSUMER_OFFSET);
                k.push(consumer_group.len() as u8);
                k.extend_from_slice(consumer_group.as_bytes());
                k.extend_from_slice(&queue.to_be_bytes());
            }
            Item::Index { queue, offset } => {
                k.push(INDEX);
                k.extend_from_slice(&queue.to_be_bytes());
                k.extend_from_slice(&offset.to_be_bytes());
            }
            Item::RaftState => k.push(RAFT_STATE),
            Item::StartOffset { queue } => {
                k.push(START_OFFSET);
                k.extend_from_slice(&queue.to_be_bytes());
            }
            Item::TrimPoint => k.push(TRIM_POINT),
            Item::Checkpoint { log_index } => {
                k.push(CHECKPOINT);
                k.extend_from_slice(&log_index.to_be_bytes());
            }
        }
    }

    /// The kind byte of this item's keys.
    fn kind(&self) -> u8 {
        match self {
            Item::Importing => IMPORTING,
            Item::Applied => APPLIED,
            Item::NextOffset { .. } => NEXT_OFFSET,
            Item::ConsumerOffset { .. } => CONSUMER_OFFSET,
            Item::Index { .. } => INDEX,
            Item::RaftState => RAFT_STATE,
            Item::StartOffset { .. } => START_OFFSET,
            Item::TrimPoint => TRIM_POINT,
            Item::Checkpoint { .. } => CHECKPOINT,
        }
    }

    /// Parses the part of a key after the group id.
    pub(crate) fn parse_suffix(s: &[u8]) -> Result<Self, String> {
        let (&kind, rest) = s.split_first().ok_or("key ends after the group id")?;
        let exact = |n: usize| {
            if rest.len() == n { Ok(()) } else { Err(format!("kind {kind:#04x} needs {n} bytes after it, found {}", rest.len())) }
        };
        match kind {
            IMPORTING => exact(0).map(|_| Item::Importing),
            APPLIED => exact(0).map(|_| Item::Applied),
            NEXT_OFFSET => {
                exact(4)?;
                Ok(Item::NextOffset { queue: be_u32(rest) })
            }
            CONSUMER_OFFSET => {
                let (&len, rest) = rest.split_first().ok_or("consumer offset key has no name length")?;
                let len = usize::from(len);
                if len == 0 || rest.len() != len + 4 {
                    return Err(format!("consumer offset key: name length {len} with {} bytes after it", rest.len()));
                }
                let name = std::str::from_utf8(&rest[..len]).map_err(|_| "consumer group name is not UTF-8".to_string())?;
                Ok(Item::ConsumerOffset { consumer_group: name.to_string(), queue: be_u32(&rest[len..]) })
            }
            INDEX => {
                exact(12)?;
                Ok(Item::Index { queue: be_u32(&rest[..4]), offset: be_u64(&rest[4..]) })
            }
            RAFT_STATE => exact(0).map(|_| Item::RaftState),
            START_OFFSET => {
                exact(4)?;
                Ok(Item::StartOffset { queue: be_u32(rest) })
            }
            TRIM_POINT => exact(0).map(|_| Item::TrimPoint),
            CHECKPOINT => {
                exact(8)?;
                Ok(Item::Checkpoint { log_index: be_u64(rest) })
            }
            other => Err(format!("unknown kind {other:#04x}")),
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
        }
    }
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
    k[GROUP_LEN] = item.kind();
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
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
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
    fn malformed_keys_are_refused() {
        let g = 5u64.to_be_bytes();
        let with = |rest: &[u8]| [g.as_slice(), rest].concat();
        assert!(parse(&g[..7]).is_err());
        assert!(parse(&g).is_err());
        assert!(parse(&with(&[0x09])).is_err());
        assert!(parse(&with(&[APPLIED, 0])).is_err());
        assert!(parse(&with(&[RAFT_STATE, 0])).is_err());
        assert!(parse(&with(&[TRIM_POINT, 0])).is_err());
        assert!(parse(&with(&[START_OFFSET, 0, 0, 1])).is_err());
        assert!(parse(&with(&[CHECKPOINT, 0, 0, 0, 0, 0, 0, 1])).is_err());
        assert!(parse(&with(&[INDEX, 0, 0, 0, 1])).is_err());
        assert!(parse(&with(&[CONSUMER_OFFSET, 0, 0, 0, 0, 1])).is_err());
        assert!(parse(&with(&[CONSUMER_OFFSET, 2, b'a', 0, 0, 0, 1])).is_err());
        assert!(parse(&with(&[CONSUMER_OFFSET, 1, 0xFF, 0, 0, 0, 1])).is_err());
        assert!(describe(&with(&[0x09])).starts_with("key 0000000000000005"));
    }

    #[test]
    fn consumer_group_names_are_bounded() {
        assert!(check_consumer_group("").is_err());
        assert!(check_consumer_group(&"x".repeat(CONSUMER_GROUP_BYTES_MAX)).is_ok());
        assert!(check_consumer_group(&"x".repeat(CONSUMER_GROUP_BYTES_MAX + 1)).is_err());
    }
}

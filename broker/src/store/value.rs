//! Encoding of the store's values: a format byte, a payload (fixed-size little-endian numbers,
//! or for the raft state a bounded opaque blob) and a CRC32C of both, so that a damaged or
//! truncated value is refused instead of decoded.

use super::keys::leading;

/// The only value format so far.
const FORMAT_V1: u8 = 1;
const CRC_LEN: usize = 4;

/// Where the message stored at one queue offset lives in the Raft log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexEntry {
    /// Index of the Raft log entry that holds the message.
    pub log_index: u64,
    /// Ordinal of the message within that entry's command (0 for its first message).
    pub position: u32,
    /// Length of the message in bytes.
    pub size: u32,
    /// Hash of the message's tag, for server-side tag filtering.
    pub tag_hash: u64,
    /// When the leader stored the message (milliseconds since the Unix epoch).
    pub store_time_ms: u64,
}

const INDEX_PAYLOAD_LEN: usize = 8 + 4 + 4 + 8 + 8;

impl IndexEntry {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(INDEX_PAYLOAD_LEN);
        p.extend_from_slice(&self.log_index.to_le_bytes());
        p.extend_from_slice(&self.position.to_le_bytes());
        p.extend_from_slice(&self.size.to_le_bytes());
        p.extend_from_slice(&self.tag_hash.to_le_bytes());
        p.extend_from_slice(&self.store_time_ms.to_le_bytes());
        seal(&p)
    }

    pub(crate) fn decode(value: &[u8]) -> Result<Self, String> {
        let p = unseal(value, INDEX_PAYLOAD_LEN)?;
        Ok(Self {
            log_index: le_u64(&p[0..8]),
            position: le_u32(&p[8..12]),
            size: le_u32(&p[12..16]),
            tag_hash: le_u64(&p[16..24]),
            store_time_ms: le_u64(&p[24..32]),
        })
    }
}

/// One delivered, unacknowledged message of a consumer group (a receive's in-flight record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InFlight {
    /// The message is invisible to the consumer group until then (ms since the Unix epoch, the
    /// leader's time stamped in the commands): then it is delivered again.
    pub invisible_until_ms: u64,
    /// Deliveries so far: 1 after the first.
    pub attempt: u32,
    /// Which delivery the current receipt handle names: a handle of an older one is stale.
    pub version: u32,
}

const IN_FLIGHT_PAYLOAD_LEN: usize = 8 + 4 + 4;

impl InFlight {
    pub(crate) fn encode(&self) -> Vec<u8> {
        seal(&[&self.invisible_until_ms.to_le_bytes()[..], &self.attempt.to_le_bytes(), &self.version.to_le_bytes()].concat())
    }

    pub(crate) fn decode(value: &[u8]) -> Result<Self, String> {
        let p = unseal(value, IN_FLIGHT_PAYLOAD_LEN)?;
        Ok(Self { invisible_until_ms: le_u64(&p[0..8]), attempt: le_u32(&p[8..12]), version: le_u32(&p[12..16]) })
    }
}

/// What a consumer group has in flight on one queue, kept beside its in-flight records so that
/// a receive with nothing due reads none of them: how many there are, and a time before which
/// none becomes visible again. The time is a lower bound, not the earliest: an ack leaves it
/// where it was (the record it settled may have been the earliest), and a receive that reads
/// the records makes it exact again. Only how much a receive reads depends on it, never what
/// it decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlightTally {
    /// The consumer group's in-flight records on the queue.
    pub count: u32,
    /// No record becomes visible again before this (ms since the Unix epoch); `u64::MAX` when
    /// none is in flight.
    pub due_from_ms: u64,
}

impl InFlightTally {
    /// Nothing in flight.
    pub const EMPTY: Self = Self { count: 0, due_from_ms: u64::MAX };

    /// Whether a record may be visible again at `now_ms`.
    pub fn may_be_due(&self, now_ms: u64) -> bool {
        self.due_from_ms <= now_ms
    }
}

const IN_FLIGHT_TALLY_PAYLOAD_LEN: usize = 4 + 8;

impl InFlightTally {
    pub(crate) fn encode(&self) -> Vec<u8> {
        seal(&[&self.count.to_le_bytes()[..], &self.due_from_ms.to_le_bytes()].concat())
    }

    pub(crate) fn decode(value: &[u8]) -> Result<Self, String> {
        let p = unseal(value, IN_FLIGHT_TALLY_PAYLOAD_LEN)?;
        Ok(Self { count: le_u32(&p[0..4]), due_from_ms: le_u64(&p[4..12]) })
    }
}

/// A single number: an applied index, a next offset or a consumer offset.
pub(crate) fn encode_u64(v: u64) -> Vec<u8> {
    seal(&v.to_le_bytes())
}

pub(crate) fn decode_u64(value: &[u8]) -> Result<u64, String> {
    unseal(value, 8).map(le_u64)
}

/// The value of the import marker: no payload.
pub(crate) fn encode_marker() -> Vec<u8> {
    seal(&[])
}

pub(crate) fn decode_marker(value: &[u8]) -> Result<(), String> {
    unseal(value, 0).map(|_| ())
}

/// Largest raft state blob a value may hold (see [`super::QueueStore::raft_state`]).
pub const RAFT_STATE_BYTES_MAX: usize = 64 << 10;

/// The raft state: an opaque blob of at most [`RAFT_STATE_BYTES_MAX`] bytes (callers check the
/// length first).
pub(crate) fn encode_blob(blob: &[u8]) -> Vec<u8> {
    seal(blob)
}

pub(crate) fn decode_blob(value: &[u8]) -> Result<Vec<u8>, String> {
    // The length bound comes first: a value claiming more is damage, never decoded.
    let payload_len =
        value.len().checked_sub(1 + CRC_LEN).ok_or_else(|| format!("value has {} bytes, shorter than format and checksum", value.len()))?;
    if payload_len > RAFT_STATE_BYTES_MAX {
        return Err(format!("raft state of {payload_len} bytes is over the limit of {RAFT_STATE_BYTES_MAX}"));
    }
    unseal(value, payload_len).map(<[u8]>::to_vec)
}

/// Most queue and consumer offsets (together) one [`Checkpoint`] holds.
pub const CHECKPOINT_ITEMS_MAX: usize = 16_384;

/// Most receive cursors and in-flight records (together) one [`Checkpoint`] holds: a group's
/// consumers never have more in flight (the receive that would pass it is refused).
pub const CHECKPOINT_RECEIVE_ITEMS_MAX: usize = 8_192;

/// Largest checkpoint payload: its fixed fields, a raft state and the most items, each consumer
/// offset, cursor and in-flight record with the longest name.
const CHECKPOINT_PAYLOAD_BYTES_MAX: usize = 8
    + 4
    + RAFT_STATE_BYTES_MAX
    + 4
    + 4
    + CHECKPOINT_ITEMS_MAX * (1 + super::CONSUMER_GROUP_BYTES_MAX + 4 + 8)
    + 4
    + 4
    + CHECKPOINT_RECEIVE_ITEMS_MAX * (1 + super::CONSUMER_GROUP_BYTES_MAX + 4 + 8 + IN_FLIGHT_PAYLOAD_LEN);

/// A group's state as of one applied Raft log index, small enough to copy every few thousand
/// entries: what a snapshot at that index needs besides the messages (which a trim at the index
/// removes), so no log entry at or below it is ever needed again.
///
/// Encoded (all integers little-endian): log index u64; raft state length u32 and bytes; number
/// of next offsets u32, each queue u32 and offset u64 by ascending queue; number of consumer
/// offsets u32, each name length u8, name, queue u32 and offset u64 by ascending (name, queue).
/// Then, only when the group has receive state (so a checkpoint without it keeps the bytes it
/// always had): number of receive cursors u32, each name, queue u32 and cursor u64 by ascending
/// (name, queue); number of in-flight records u32, each name, queue u32, offset u64 and the
/// record (invisible-until u64, attempt u32, version u32) by ascending (name, queue, offset).
/// The ascending order makes the encoding canonical: one state, one byte string.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// The Raft log index the state is as of (after applying that entry).
    pub log_index: u64,
    /// The group's raft state as of `log_index`, opaque to the store (see
    /// [`super::QueueStore::raft_state`]); at most [`RAFT_STATE_BYTES_MAX`] bytes.
    pub raft_state: Vec<u8>,
    /// `(queue, next offset)` of every queue ever written, by ascending queue.
    pub next_offsets: Vec<(u32, u64)>,
    /// `(consumer group, queue, committed offset)` of every committed offset, by ascending
    /// consumer group and queue.
    pub consumer_offsets: Vec<(String, u32, u64)>,
    /// `(consumer group, queue, cursor)` of every receive cursor, by ascending consumer group
    /// and queue.
    pub pop_cursors: Vec<(String, u32, u64)>,
    /// `(consumer group, queue, offset, record)` of every message in flight, by ascending
    /// consumer group, queue and offset.
    pub in_flight: Vec<(String, u32, u64, InFlight)>,
}

impl Checkpoint {
    /// Whether the checkpoint can be stored: bounded sizes, valid names, ascending order.
    pub fn check(&self) -> Result<(), String> {
        if self.raft_state.len() > RAFT_STATE_BYTES_MAX {
            return Err(format!("raft state of {} bytes, at most {RAFT_STATE_BYTES_MAX}", self.raft_state.len()));
        }
        let items = self.next_offsets.len() + self.consumer_offsets.len();
        if items > CHECKPOINT_ITEMS_MAX {
            return Err(format!("{items} offsets, at most {CHECKPOINT_ITEMS_MAX}"));
        }
        if !self.next_offsets.windows(2).all(|w| w[0].0 < w[1].0) {
            return Err("next offsets not by strictly ascending queue".into());
        }
        for (name, _, _) in &self.consumer_offsets {
            if name.is_empty() || name.len() > super::CONSUMER_GROUP_BYTES_MAX {
                return Err(format!("consumer group name of {} bytes", name.len()));
            }
        }
        if !self.consumer_offsets.windows(2).all(|w| (&w[0].0, w[0].1) < (&w[1].0, w[1].1)) {
            return Err("consumer offsets not by strictly ascending consumer group and queue".into());
        }
        let receive_items = self.pop_cursors.len() + self.in_flight.len();
        if receive_items > CHECKPOINT_RECEIVE_ITEMS_MAX {
            return Err(format!("{receive_items} receive cursors and in-flight records, at most {CHECKPOINT_RECEIVE_ITEMS_MAX}"));
        }
        let names = self.pop_cursors.iter().map(|c| &c.0).chain(self.in_flight.iter().map(|r| &r.0));
        if let Some(name) = names.into_iter().find(|n| n.is_empty() || n.len() > super::CONSUMER_GROUP_BYTES_MAX) {
            return Err(format!("consumer group name of {} bytes", name.len()));
        }
        if !self.pop_cursors.windows(2).all(|w| (&w[0].0, w[0].1) < (&w[1].0, w[1].1)) {
            return Err("receive cursors not by strictly ascending consumer group and queue".into());
        }
        if !self.in_flight.windows(2).all(|w| (&w[0].0, w[0].1, w[0].2) < (&w[1].0, w[1].1, w[1].2)) {
            return Err("in-flight records not by strictly ascending consumer group, queue and offset".into());
        }
        Ok(())
    }

    /// The sealed value; the caller has checked it with [`Self::check`].
    pub(crate) fn encode(&self) -> Vec<u8> {
        debug_assert!(self.check().is_ok(), "{:?}", self.check());
        let mut p = Vec::with_capacity(8 + 4 + self.raft_state.len() + 8 + self.next_offsets.len() * 12 + self.consumer_offsets.len() * 32);
        p.extend_from_slice(&self.log_index.to_le_bytes());
        // The lengths and counts fit u32 (and the name length u8): `check` bounds them.
        p.extend_from_slice(&(self.raft_state.len() as u32).to_le_bytes());
        p.extend_from_slice(&self.raft_state);
        p.extend_from_slice(&(self.next_offsets.len() as u32).to_le_bytes());
        for (queue, next) in &self.next_offsets {
            p.extend_from_slice(&queue.to_le_bytes());
            p.extend_from_slice(&next.to_le_bytes());
        }
        p.extend_from_slice(&(self.consumer_offsets.len() as u32).to_le_bytes());
        for (name, queue, offset) in &self.consumer_offsets {
            push_named(&mut p, name, *queue, *offset);
        }
        if !self.pop_cursors.is_empty() || !self.in_flight.is_empty() {
            p.extend_from_slice(&(self.pop_cursors.len() as u32).to_le_bytes());
            for (name, queue, cursor) in &self.pop_cursors {
                push_named(&mut p, name, *queue, *cursor);
            }
            p.extend_from_slice(&(self.in_flight.len() as u32).to_le_bytes());
            for (name, queue, offset, record) in &self.in_flight {
                push_named(&mut p, name, *queue, *offset);
                p.extend_from_slice(&record.invisible_until_ms.to_le_bytes());
                p.extend_from_slice(&record.attempt.to_le_bytes());
                p.extend_from_slice(&record.version.to_le_bytes());
            }
        }
        seal(&p)
    }

    pub(crate) fn decode(value: &[u8]) -> Result<Self, String> {
        // The length bound comes first: a value claiming more is damage, never decoded.
        let payload_len = value
            .len()
            .checked_sub(1 + CRC_LEN)
            .ok_or_else(|| format!("value has {} bytes, shorter than format and checksum", value.len()))?;
        if payload_len > CHECKPOINT_PAYLOAD_BYTES_MAX {
            return Err(format!("checkpoint of {payload_len} bytes is over the limit of {CHECKPOINT_PAYLOAD_BYTES_MAX}"));
        }
        let mut r = Reader(unseal(value, payload_len)?);
        let log_index = r.u64()?;
        let state_len = r.u32()? as usize;
        if state_len > RAFT_STATE_BYTES_MAX {
            return Err(format!("raft state of {state_len} bytes, at most {RAFT_STATE_BYTES_MAX}"));
        }
        let raft_state = r.take(state_len)?.to_vec();
        let n = r.count()?;
        let mut next_offsets = Vec::with_capacity(n);
        for _ in 0..n {
            next_offsets.push((r.u32()?, r.u64()?));
        }
        let n = r.count()?;
        let mut consumer_offsets = Vec::with_capacity(n);
        for _ in 0..n {
            consumer_offsets.push(r.named()?);
        }
        let (mut pop_cursors, mut in_flight) = (Vec::new(), Vec::new());
        // The receive section is there only when the group had receive state.
        if !r.0.is_empty() {
            let mut section = || -> Result<(), String> {
                for _ in 0..r.count()? {
                    pop_cursors.push(r.named()?);
                }
                for _ in 0..r.count()? {
                    let (name, queue, offset) = r.named()?;
                    let record = InFlight { invisible_until_ms: r.u64()?, attempt: r.u32()?, version: r.u32()? };
                    in_flight.push((name, queue, offset, record));
                }
                Ok(())
            };
            section().map_err(|e| format!("receive section after the last consumer offset: {e}"))?;
            if pop_cursors.is_empty() && in_flight.is_empty() {
                return Err("an empty receive section (a checkpoint without receive state has none)".into());
            }
        }
        if !r.0.is_empty() {
            return Err(format!("{} bytes after the last consumer offset", r.0.len()));
        }
        let checkpoint = Self { log_index, raft_state, next_offsets, consumer_offsets, pop_cursors, in_flight };
        checkpoint.check()?;
        Ok(checkpoint)
    }
}

/// Appends a consumer group's name (length u8 and bytes), a queue and a number.
fn push_named(p: &mut Vec<u8>, name: &str, queue: u32, number: u64) {
    // Fits: `check` bounds the name to CONSUMER_GROUP_BYTES_MAX (255).
    p.push(name.len() as u8);
    p.extend_from_slice(name.as_bytes());
    p.extend_from_slice(&queue.to_le_bytes());
    p.extend_from_slice(&number.to_le_bytes());
}

/// Reads a checkpoint payload front to back; every read checks the bytes are there.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let (head, rest) = self.0.split_at_checked(n).ok_or_else(|| format!("{n} bytes past the end"))?;
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, String> {
        self.take(4).map(le_u32)
    }

    fn u64(&mut self) -> Result<u64, String> {
        self.take(8).map(le_u64)
    }

    /// What [`push_named`] wrote.
    fn named(&mut self) -> Result<(String, u32, u64), String> {
        let len = usize::from(self.take(1)?[0]);
        let name = std::str::from_utf8(self.take(len)?).map_err(|_| "consumer group name is not UTF-8".to_string())?;
        Ok((name.to_string(), self.u32()?, self.u64()?))
    }

    /// A count of items, bounded before anything is allocated for them.
    fn count(&mut self) -> Result<usize, String> {
        let n = self.u32()? as usize;
        if n > CHECKPOINT_ITEMS_MAX {
            return Err(format!("{n} items, at most {CHECKPOINT_ITEMS_MAX}"));
        }
        Ok(n)
    }
}

fn seal(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + payload.len() + CRC_LEN);
    v.push(FORMAT_V1);
    v.extend_from_slice(payload);
    let crc = crc32c::crc32c(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

/// The payload of a sealed value, once its length, format and checksum are right.
fn unseal(value: &[u8], payload_len: usize) -> Result<&[u8], String> {
    let want = 1 + payload_len + CRC_LEN;
    if value.len() != want {
        return Err(format!("value has {} bytes, expected {want}", value.len()));
    }
    if value[0] != FORMAT_V1 {
        return Err(format!("unknown value format {}", value[0]));
    }
    let (body, crc) = value.split_at(want - CRC_LEN);
    let stored = le_u32(crc);
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(format!("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"));
    }
    Ok(&body[1..])
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(leading(b))
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(leading(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> IndexEntry {
        IndexEntry { log_index: 1 << 33, position: 4096, size: 1234, tag_hash: 0xDEAD_BEEF_0BAD_F00D, store_time_ms: 1_764_000_000_000 }
    }

    #[test]
    fn values_round_trip() {
        assert_eq!(IndexEntry::decode(&entry().encode()).unwrap(), entry());
        assert_eq!(IndexEntry::decode(&IndexEntry::default().encode()).unwrap(), IndexEntry::default());
        for v in [0, 1, u64::MAX] {
            assert_eq!(decode_u64(&encode_u64(v)).unwrap(), v);
        }
        decode_marker(&encode_marker()).unwrap();
        for blob in [vec![], vec![7u8; 300], vec![1u8; RAFT_STATE_BYTES_MAX]] {
            assert_eq!(decode_blob(&encode_blob(&blob)).unwrap(), blob);
        }
    }

    #[test]
    fn a_damaged_or_oversized_blob_is_refused() {
        let good = encode_blob(b"raft state");
        for bit in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_blob(&bad).is_err(), "bit {bit} flipped went unnoticed");
        }
        assert!(decode_blob(&good[..good.len() - 1]).is_err(), "truncated");
        assert!(decode_blob(&[1, 0, 0, 0]).is_err(), "shorter than format and checksum");
        assert!(decode_blob(&encode_blob(&vec![0; RAFT_STATE_BYTES_MAX + 1])).unwrap_err().contains("limit"));
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            log_index: 4096,
            raft_state: b"applied 4096".to_vec(),
            next_offsets: vec![(0, 17), (3, 1 << 40)],
            consumer_offsets: vec![("cg-a".into(), 0, 5), ("cg-a".into(), 3, 0), ("cg-b".into(), 0, 17)],
            ..Checkpoint::default()
        }
    }

    fn with_receive_state() -> Checkpoint {
        let record = |version| InFlight { invisible_until_ms: 1_764_000_000_000, attempt: version, version };
        Checkpoint {
            pop_cursors: vec![("cg-a".into(), 0, 9), ("cg-b".into(), 0, 4)],
            in_flight: vec![("cg-a".into(), 0, 7, record(1)), ("cg-a".into(), 0, 8, record(3)), ("cg-b".into(), 0, 2, record(1))],
            ..checkpoint()
        }
    }

    /// A checkpoint without receive state keeps the bytes checkpoints always had (no receive
    /// section), so those already stored decode as before; one with it round-trips whole.
    #[test]
    fn receive_state_is_an_optional_last_section() {
        let plain = checkpoint();
        let full = with_receive_state();
        assert!(full.encode().len() > plain.encode().len());
        assert_eq!(Checkpoint::decode(&full.encode()).unwrap(), full);
        let only_cursors = Checkpoint { in_flight: vec![], ..with_receive_state() };
        assert_eq!(Checkpoint::decode(&only_cursors.encode()).unwrap(), only_cursors);
        // An empty section is not the canonical encoding of "no receive state": refused.
        let sealed = |payload: &[u8]| seal(payload);
        let empty_section = [&plain.encode()[1..plain.encode().len() - CRC_LEN], &0u32.to_le_bytes(), &0u32.to_le_bytes()].concat();
        assert!(Checkpoint::decode(&sealed(&empty_section)).unwrap_err().contains("empty receive section"));
        assert_every_bit_flip_refused(&full.encode(), |b| Checkpoint::decode(b).is_err());
        let mut unordered = with_receive_state();
        unordered.in_flight.swap(0, 1);
        assert!(unordered.check().unwrap_err().contains("in-flight"));
        let mut unnamed = with_receive_state();
        unnamed.pop_cursors[0].0.clear();
        assert!(unnamed.check().is_err());
        let record = InFlight::default();
        let too_many = Checkpoint {
            in_flight: (0..=CHECKPOINT_RECEIVE_ITEMS_MAX as u64).map(|o| ("cg".to_string(), 0, o, record)).collect(),
            ..Checkpoint::default()
        };
        assert!(too_many.check().unwrap_err().contains("at most"));
    }

    #[test]
    fn checkpoints_round_trip() {
        for c in [checkpoint(), Checkpoint::default()] {
            assert_eq!(Checkpoint::decode(&c.encode()).unwrap(), c);
        }
        let largest = Checkpoint {
            log_index: u64::MAX,
            raft_state: vec![7; RAFT_STATE_BYTES_MAX],
            next_offsets: vec![],
            consumer_offsets: (0..CHECKPOINT_ITEMS_MAX).map(|i| (format!("{i:0>255}"), 0, i as u64)).collect(),
            pop_cursors: vec![],
            in_flight: (0..CHECKPOINT_RECEIVE_ITEMS_MAX)
                .map(|i| {
                    (format!("{i:0>255}"), u32::MAX, u64::MAX, InFlight { invisible_until_ms: u64::MAX, attempt: u32::MAX, version: 1 })
                })
                .collect(),
        };
        assert_eq!(Checkpoint::decode(&largest.encode()).unwrap(), largest);
    }

    #[test]
    fn a_damaged_or_malformed_checkpoint_is_refused() {
        let good = checkpoint().encode();
        assert_every_bit_flip_refused(&good, |b| Checkpoint::decode(b).is_err());
        for len in 0..good.len() {
            assert!(Checkpoint::decode(&good[..len]).is_err(), "truncated to {len}");
        }
        // Well-sealed payloads that are not a checkpoint.
        let sealed = |payload: &[u8]| seal(payload);
        assert!(Checkpoint::decode(&sealed(&[0; 7])).unwrap_err().contains("past the end"));
        let huge_count = [&5u64.to_le_bytes()[..], &0u32.to_le_bytes(), &u32::MAX.to_le_bytes()].concat();
        assert!(Checkpoint::decode(&sealed(&huge_count)).unwrap_err().contains("at most"));
        let trailing = [&checkpoint().encode()[1..good.len() - CRC_LEN], &[0][..]].concat();
        assert!(Checkpoint::decode(&sealed(&trailing)).unwrap_err().contains("after the last"));
        let mut unordered = checkpoint();
        unordered.next_offsets.reverse();
        assert!(unordered.check().is_err());
        let mut unnamed = checkpoint();
        unnamed.consumer_offsets[0].0.clear();
        assert!(unnamed.check().is_err());
        let too_many = Checkpoint { next_offsets: (0..=CHECKPOINT_ITEMS_MAX as u32).map(|q| (q, 0)).collect(), ..Checkpoint::default() };
        assert!(too_many.check().unwrap_err().contains("at most"));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        assert_every_bit_flip_refused(&entry().encode(), |b| IndexEntry::decode(b).is_err());
    }

    /// Flips each bit of `good` in turn; `refused` must say no to every damaged copy.
    fn assert_every_bit_flip_refused(good: &[u8], refused: impl Fn(&[u8]) -> bool) {
        for bit in 0..good.len() * 8 {
            let mut bad = good.to_vec();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(refused(&bad), "bit {bit} flipped went unnoticed");
        }
    }

    #[test]
    fn in_flight_records_round_trip_and_damage_is_detected() {
        let record = InFlight { invisible_until_ms: 1_764_000_000_123, attempt: 3, version: u32::MAX };
        assert_eq!(InFlight::decode(&record.encode()), Ok(record));
        assert_every_bit_flip_refused(&record.encode(), |b| InFlight::decode(b).is_err());
        assert!(InFlight::decode(&encode_u64(5)).is_err(), "a number where a record belongs is a length mismatch");
    }

    #[test]
    fn in_flight_tallies_round_trip_and_damage_is_detected() {
        for tally in [InFlightTally::EMPTY, InFlightTally { count: 4096, due_from_ms: 1_764_000_000_123 }] {
            assert_eq!(InFlightTally::decode(&tally.encode()), Ok(tally));
            assert_every_bit_flip_refused(&tally.encode(), |b| InFlightTally::decode(b).is_err());
        }
        assert!(InFlightTally::decode(&InFlight::default().encode()).is_err(), "a record where a tally belongs");
    }

    #[test]
    fn wrong_length_or_format_is_refused() {
        let good = entry().encode();
        assert!(IndexEntry::decode(&good[..good.len() - 1]).is_err());
        assert!(IndexEntry::decode(&[good.as_slice(), &[0]].concat()).is_err());
        assert!(IndexEntry::decode(&[]).is_err());
        // A u64 value where an index entry belongs (and the reverse) is a length mismatch.
        assert!(IndexEntry::decode(&encode_u64(5)).is_err());
        assert!(decode_u64(&good).is_err());
        let mut v2 = encode_u64(5);
        v2[0] = 2;
        let crc = crc32c::crc32c(&v2[..9]);
        v2[9..].copy_from_slice(&crc.to_le_bytes());
        assert!(decode_u64(&v2).unwrap_err().contains("format"));
    }
}

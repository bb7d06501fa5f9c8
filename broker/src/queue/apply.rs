//! What one entry does to a queue group, decided without IO: given a view of the group's
//! current state and one Raft entry's command, [`apply_command`] returns the entry's effects
//! (index entries, offsets, trims) and the reply, and [`record_checkpoint`] adds the checkpoint
//! an entry at a checkpoint index records. The state machine reads the view from the store and
//! writes the effects in one batch; tests drive both with tables and models.
//!
//! Every decision here must depend only on the command, the view and the group's
//! [`QueueGroupOptions`] (the same on every replica), never on a clock, a random seed or a
//! limit that differs between replicas: replicas applying the same log must reach the same
//! state (invariant 2).
//!
//! # Checkpoints and trims
//!
//! Every `checkpoint_interval_entries` entries (entry `K` with `K % interval == 0`) the group
//! records a [`Checkpoint`]: its queue and consumer offsets and raft state as of `K`, a few
//! hundred bytes. [`GroupCommand::Trim`] at a checkpoint `K` deletes every index entry of the
//! log entries up to `K` (per queue, the offsets below the checkpoint's next offset, which
//! becomes the queue's start offset), makes `K` the trim point and drops the checkpoints below
//! it. From then on nothing in the store points at a log entry at or below `K`, so the log may
//! be purged up to `K` and the checkpoint at `K` is the group's snapshot.
//!
//! A checkpoint at which the group holds no message at all (every queue's start offset equals
//! its next offset, e.g. a group never sent to) becomes the trim point at once: a trim that
//! removes nothing, so idle groups still get snapshots (and the log of their membership changes
//! can be purged).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use super::command::{Delivery, GroupCommand, GroupReply, NewMessage};
use crate::store::{
    ApplyBatch, CHECKPOINT_ITEMS_MAX, CHECKPOINT_RECEIVE_ITEMS_MAX, CHECKPOINTS_MAX, CONSUMER_GROUP_BYTES_MAX, Checkpoint, GroupOffsets,
    InFlight, InFlightTally, IndexEntry, OffsetCounts, ReceiveState, StoreError,
};

/// The most messages in flight for one consumer group on one queue, whatever a leader stamps:
/// a receive that may find one due again reads every in-flight record of the group on the queue.
pub const IN_FLIGHT_PER_CONSUMER_GROUP_MAX: u32 = 4096;

/// The most consumer groups a queue may have, whatever a leader stamps: with the queue's own
/// next offset, a group of one queue (as every topic's is) then holds at most
/// [`CHECKPOINT_ITEMS_MAX`] offsets, all of which a checkpoint copies.
pub const CONSUMER_GROUPS_PER_QUEUE_MAX: u32 = CHECKPOINT_ITEMS_MAX as u32 - 1;

/// The options of a queue group that decide replicated state. Every replica of a group must use
/// the same values: a replica recording checkpoints at other indexes would accept other trims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueGroupOptions {
    /// A checkpoint is recorded at every log index that is a multiple of this (at least 1).
    /// Default 4096 ([`controller::GroupOptions::DEFAULT`]).
    pub checkpoint_interval_entries: u64,
}

impl Default for QueueGroupOptions {
    fn default() -> Self {
        controller::GroupOptions::DEFAULT.into()
    }
}

/// A group's options as its record in the cluster map carries them.
impl From<controller::GroupOptions> for QueueGroupOptions {
    fn from(o: controller::GroupOptions) -> Self {
        Self { checkpoint_interval_entries: o.checkpoint_interval_entries }
    }
}

impl QueueGroupOptions {
    /// Whether the entry at `log_index` records a checkpoint by its index. An interval of 0
    /// counts as 1.
    pub fn checkpoint_due(&self, log_index: u64) -> bool {
        log_index.is_multiple_of(self.checkpoint_interval_entries.max(1))
    }

    /// Whether the entry at `log_index`, holding `command` (none: a blank or membership entry),
    /// records a checkpoint: at a multiple of the interval, or when it is a
    /// [`GroupCommand::Checkpoint`]. Both depend only on the log, so every replica agrees.
    pub fn records_checkpoint(&self, log_index: u64, command: Option<&GroupCommand>) -> bool {
        self.checkpoint_due(log_index) || matches!(command, Some(GroupCommand::Checkpoint))
    }
}

/// The group state a command reads: as of the end of the previous entry.
pub trait GroupView {
    /// The offset the next message of `queue` will get (0 for a queue never written).
    fn next_offset(&self, queue: u32) -> Result<u64, StoreError>;
    /// `consumer_group`'s committed offset on `queue`, if it ever committed one.
    fn consumer_offset(&self, consumer_group: &str, queue: u32) -> Result<Option<u64>, StoreError>;
    /// The first offset of `queue` still held (0 for a queue never trimmed).
    fn start_offset(&self, queue: u32) -> Result<u64, StoreError>;
    /// The log index of the group's last trim, if any.
    fn trim_point(&self) -> Result<Option<u64>, StoreError>;
    /// The checkpoint at `log_index`, if the group holds one.
    fn checkpoint(&self, log_index: u64) -> Result<Option<Checkpoint>, StoreError>;
    /// The log indexes of the group's checkpoints, ascending (at most [`CHECKPOINTS_MAX`] + 1).
    fn checkpoint_indexes(&self) -> Result<Vec<u64>, StoreError>;
    /// Every next, start and consumer offset, or `None` past `items_max` next and consumer
    /// offsets.
    fn group_offsets(&self, items_max: usize) -> Result<Option<GroupOffsets>, StoreError>;
    /// How many offsets the group holds (consumer groups counted on `queue`); the counting may
    /// stop past `items_max` offsets.
    fn offset_counts(&self, queue: u32, items_max: usize) -> Result<OffsetCounts, StoreError>;
    /// The next offset of `queue` never yet delivered to `consumer_group` by a receive.
    fn pop_cursor(&self, consumer_group: &str, queue: u32) -> Result<Option<u64>, StoreError>;
    /// Up to `max` in-flight records of `consumer_group` on `queue` at `offsets`, by offset.
    fn in_flight(&self, consumer_group: &str, queue: u32, offsets: Range<u64>, max: usize) -> Result<Vec<(u64, InFlight)>, StoreError>;
    /// `consumer_group`'s in-flight tally on `queue`, if the group's applies keep one.
    fn in_flight_tally(&self, consumer_group: &str, queue: u32) -> Result<Option<InFlightTally>, StoreError>;
    /// The offset below which `consumer_group` holds no in-flight record on `queue`, as receives
    /// last set it (0 if never): a scan from it skips what acknowledgements deleted.
    fn receive_floor(&self, consumer_group: &str, queue: u32) -> Result<u64, StoreError>;
    /// How many receive cursors and in-flight records the group holds (the counting may stop
    /// just past `items_max`).
    fn receive_items(&self, items_max: usize) -> Result<usize, StoreError>;
    /// The in-flight record of `offset`, if the message is in flight for `consumer_group`.
    fn in_flight_record(&self, consumer_group: &str, queue: u32, offset: u64) -> Result<Option<InFlight>, StoreError>;
    /// Every receive cursor and in-flight record, or `None` past `items_max` of them.
    fn receive_state(&self, items_max: usize) -> Result<Option<ReceiveState>, StoreError>;
}

/// Everything one entry changes in its group, in a deterministic order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryEffects {
    /// `(queue, offset, entry)` of each stored message, in the command's order.
    pub index: Vec<(u32, u64, IndexEntry)>,
    /// `(queue, next offset)` of each queue written, by ascending queue.
    pub next_offsets: Vec<(u32, u64)>,
    /// `(consumer group, queue, offset)` of each committed offset that moved.
    pub consumer_offsets: Vec<(String, u32, u64)>,
    /// `(queue, offset)` of each queue trimmed: its index entries below `offset` are deleted.
    pub trimmed_index: Vec<(u32, u64)>,
    /// `(queue, start offset)` of each queue whose start offset moved, by ascending queue.
    pub start_offsets: Vec<(u32, u64)>,
    /// The group's new trim point, if it moved.
    pub trim_point: Option<u64>,
    /// Checkpoints recorded by this entry.
    pub checkpoints: Vec<Checkpoint>,
    /// Log indexes of the checkpoints this entry drops, ascending.
    pub dropped_checkpoints: Vec<u64>,
    /// `(consumer group, queue, cursor)` of each receive cursor that moved.
    pub pop_cursors: Vec<(String, u32, u64)>,
    /// `(consumer group, queue, offset, record)`: in-flight records set (`Some`) or settled
    /// (`None`), in order.
    pub in_flight: Vec<(String, u32, u64, Option<InFlight>)>,
    /// `(consumer group, queue, floor)` of each receive floor that moved.
    pub receive_floors: Vec<(String, u32, u64)>,
    /// The group's new count of receive cursors and in-flight records, if it changed.
    pub receive_items: Option<u64>,
    /// `(consumer group, queue, tally)` of each in-flight tally that changed.
    pub in_flight_tallies: Vec<(String, u32, InFlightTally)>,
}

impl EntryEffects {
    /// Operations counted against [`ApplyBatch::OPS_MAX`] (checkpoint operations have their
    /// own bound, [`ApplyBatch::CHECKPOINT_OPS_MAX`]).
    fn ops(&self) -> usize {
        let counts = [
            self.index.len(),
            self.next_offsets.len(),
            self.consumer_offsets.len(),
            self.trimmed_index.len(),
            self.start_offsets.len(),
            self.pop_cursors.len(),
            self.in_flight.len(),
            self.receive_floors.len(),
            self.in_flight_tallies.len(),
        ];
        counts.iter().sum()
    }

    fn checkpoint_ops(&self) -> usize {
        self.checkpoints.len() + self.dropped_checkpoints.len()
    }

    /// Invariant 2, where offsets are made: per queue, the messages of one entry take
    /// consecutive offsets and the queue's next offset is just past the last of them. A gap or
    /// an overlap would leave an offset naming no message, or two, for ever: a loud stop here,
    /// never a store write.
    fn assert_dense_offsets(&self) {
        let mut last: BTreeMap<u32, u64> = BTreeMap::new();
        for &(queue, offset, _) in &self.index {
            if let Some(&previous) = last.get(&queue) {
                assert_eq!(Some(offset), previous.checked_add(1), "queue {queue}: offset {offset} follows {previous} in one entry");
            }
            last.insert(queue, offset);
        }
        for &(queue, next) in &self.next_offsets {
            if let Some(&l) = last.get(&queue) {
                assert_eq!(Some(next), l.checked_add(1), "queue {queue}: next offset {next} after indexing offset {l}");
            }
        }
    }

    /// The store batch of Raft entry `log_index` holding these effects. Cannot fail for effects
    /// made by [`apply_command`] and [`record_checkpoint`], which refuse commands (and skip
    /// checkpoints) whose effects a batch cannot hold.
    pub fn into_batch(self, log_index: u64) -> Result<ApplyBatch, StoreError> {
        self.assert_dense_offsets();
        let mut batch = ApplyBatch::new(log_index);
        for (queue, offset, entry) in self.index {
            batch.put_index(queue, offset, entry)?;
        }
        for (queue, next) in self.next_offsets {
            batch.set_next_offset(queue, next)?;
        }
        for (consumer_group, queue, offset) in self.consumer_offsets {
            batch.set_consumer_offset(&consumer_group, queue, offset)?;
        }
        for (queue, offset) in self.trimmed_index {
            batch.trim_index(queue, offset)?;
        }
        for (queue, offset) in self.start_offsets {
            batch.set_start_offset(queue, offset)?;
        }
        if let Some(trim_point) = self.trim_point {
            batch.set_trim_point(trim_point);
        }
        for checkpoint in self.checkpoints {
            batch.put_checkpoint(checkpoint)?;
        }
        for log_index in self.dropped_checkpoints {
            batch.drop_checkpoint(log_index)?;
        }
        for (consumer_group, queue, cursor) in self.pop_cursors {
            batch.set_pop_cursor(&consumer_group, queue, cursor)?;
        }
        for (consumer_group, queue, offset, record) in self.in_flight {
            match record {
                Some(r) => batch.put_in_flight(&consumer_group, queue, offset, r)?,
                None => batch.settle(&consumer_group, queue, offset)?,
            }
        }
        for (consumer_group, queue, floor) in self.receive_floors {
            batch.set_receive_floor(&consumer_group, queue, floor)?;
        }
        if let Some(count) = self.receive_items {
            batch.set_receive_items(count);
        }
        for (consumer_group, queue, tally) in self.in_flight_tallies {
            batch.set_in_flight_tally(&consumer_group, queue, tally)?;
        }
        Ok(batch)
    }
}

/// Why a command was not applied: a refusal is a deterministic answer, a read error is not.
enum Outcome {
    Refused(String),
    /// A bound on what the group stores: [`GroupReply::LimitReached`].
    Full(String),
    Read(StoreError),
}

impl From<StoreError> for Outcome {
    fn from(e: StoreError) -> Self {
        Outcome::Read(e)
    }
}

/// The effects and reply of `command`, held by the Raft entry at `log_index`, on a group in
/// state `view`. A refused command has no effects and a [`GroupReply::Rejected`] reply; only a
/// failed read is an error (the caller must stop applying: going on would diverge).
pub fn apply_command(view: &impl GroupView, log_index: u64, command: &GroupCommand) -> Result<(EntryEffects, GroupReply), StoreError> {
    let result = match command {
        GroupCommand::Send { store_time_ms, messages } | GroupCommand::SendV1 { store_time_ms, messages } => {
            send(view, log_index, *store_time_ms, messages)
        }
        // Entries from before the bound: only what a checkpoint holds limits them.
        GroupCommand::CommitOffset { consumer_group, queue, offset } => {
            commit_offset(view, consumer_group, *queue, *offset, CONSUMER_GROUPS_PER_QUEUE_MAX)
        }
        GroupCommand::CommitOffsetBounded { consumer_group, queue, offset, consumer_groups_max } => {
            commit_offset(view, consumer_group, *queue, *offset, (*consumer_groups_max).min(CONSUMER_GROUPS_PER_QUEUE_MAX))
        }
        GroupCommand::Trim { up_to_log_index } => trim(view, *up_to_log_index),
        GroupCommand::Receive { consumer_group, queue, now_ms, invisible_ms, max_messages, in_flight_max, max_attempts, fifo } => {
            let in_flight_max = (*in_flight_max).min(IN_FLIGHT_PER_CONSUMER_GROUP_MAX);
            let bounds = ReceiveBounds { max_messages: *max_messages, in_flight_max, max_attempts: *max_attempts, fifo: *fifo };
            receive(view, consumer_group, *queue, *now_ms, *invisible_ms, bounds)
        }
        GroupCommand::Ack { consumer_group, queue, deliveries } => ack(view, consumer_group, *queue, deliveries),
        GroupCommand::ChangeInvisibility { consumer_group, queue, offset, version, now_ms, invisible_ms } => {
            change_invisibility(view, consumer_group, *queue, (*offset, *version), now_ms.saturating_add(*invisible_ms))
        }
        // The checkpoint itself is recorded with the entry (`records_checkpoint`), as at an
        // interval index: nothing else changes.
        GroupCommand::Checkpoint => Ok((EntryEffects::default(), GroupReply::Checkpointed { log_index })),
    };
    match result {
        Ok(done) => Ok(done),
        Err(Outcome::Refused(reason)) => Ok((EntryEffects::default(), GroupReply::Rejected { reason })),
        Err(Outcome::Full(reason)) => Ok((EntryEffects::default(), GroupReply::LimitReached { reason })),
        Err(Outcome::Read(e)) => Err(e),
    }
}

fn send(view: &impl GroupView, log_index: u64, store_time_ms: u64, messages: &[NewMessage]) -> Result<(EntryEffects, GroupReply), Outcome> {
    // Checked before any work: at most one index entry and one next offset per message.
    if messages.len() > ApplyBatch::OPS_MAX / 2 {
        return Err(Outcome::Refused(format!("{} messages in one entry, at most {}", messages.len(), ApplyBatch::OPS_MAX / 2)));
    }
    // Next offsets of the queues this entry touches, read once each (at most one per message).
    let mut next: BTreeMap<u32, u64> = BTreeMap::new();
    let mut effects = EntryEffects::default();
    let mut offsets = Vec::with_capacity(messages.len());
    let mut new_queues = 0usize;
    for (ordinal, m) in messages.iter().enumerate() {
        let offset = match next.get(&m.queue) {
            Some(&o) => o,
            None => {
                let o = view.next_offset(m.queue)?;
                // A next offset is written only after a message: 0 is a queue never written.
                new_queues += usize::from(o == 0);
                o
            }
        };
        let after = offset.checked_add(1).ok_or_else(|| Outcome::Refused(format!("queue {} is full", m.queue)))?;
        let size =
            u32::try_from(m.body.len()).map_err(|_| Outcome::Refused(format!("message {ordinal} body of {} bytes", m.body.len())))?;
        // Fits: the count is bounded above.
        let position = ordinal as u32;
        let entry = IndexEntry { log_index, position, size, tag_hash: tag_hash(m.tag.as_deref()), store_time_ms };
        effects.index.push((m.queue, offset, entry));
        offsets.push((m.queue, offset));
        next.insert(m.queue, after);
    }
    if new_queues > 0 {
        check_checkpoint_room(view, 0, new_queues)?;
    }
    effects.next_offsets = next.into_iter().collect();
    debug_assert!(effects.ops() <= ApplyBatch::OPS_MAX);
    Ok((effects, GroupReply::Sent { offsets }))
}

/// Refuses `adding` more offsets to a group that would then hold more than a checkpoint copies
/// ([`CHECKPOINT_ITEMS_MAX`]): past that it could record no checkpoint, so never trim again.
/// Returns the counts, `queue` the one whose consumer groups are counted.
fn check_checkpoint_room(view: &impl GroupView, queue: u32, adding: usize) -> Result<OffsetCounts, Outcome> {
    let counts = view.offset_counts(queue, CHECKPOINT_ITEMS_MAX)?;
    if counts.checkpoint_items() + adding > CHECKPOINT_ITEMS_MAX {
        return Err(Outcome::Full(format!(
            "the group holds {} queue and consumer offsets; {adding} more would pass the {CHECKPOINT_ITEMS_MAX} a checkpoint holds",
            counts.checkpoint_items()
        )));
    }
    Ok(counts)
}

fn commit_offset(
    view: &impl GroupView,
    consumer_group: &str,
    queue: u32,
    offset: u64,
    consumer_groups_max: u32,
) -> Result<(EntryEffects, GroupReply), Outcome> {
    if consumer_group.is_empty() || consumer_group.len() > CONSUMER_GROUP_BYTES_MAX {
        return Err(Outcome::Refused(format!(
            "consumer group name of {} bytes: must be 1 to {CONSUMER_GROUP_BYTES_MAX}",
            consumer_group.len()
        )));
    }
    // An offset names the next message to consume: past the queue's end it would name a
    // message not stored yet, and skip it once stored.
    let end = view.next_offset(queue)?;
    if offset > end {
        return Err(Outcome::Refused(format!("offset {offset} is past the end {end} of queue {queue}")));
    }
    let mut effects = EntryEffects::default();
    match view.consumer_offset(consumer_group, queue)? {
        // Invariant 3: consumer progress only moves forward.
        Some(current) if offset < current => {
            return Err(Outcome::Refused(format!(
                "offset {offset} of {consumer_group:?} on queue {queue} is behind its committed offset {current}"
            )));
        }
        Some(current) if offset == current => {}
        Some(_) => effects.consumer_offsets.push((consumer_group.to_string(), queue, offset)),
        // A consumer group new to the queue: the one case that adds an offset to the group.
        None => {
            let counts = check_checkpoint_room(view, queue, 1)?;
            if counts.consumer_groups_on_queue >= consumer_groups_max as usize {
                return Err(Outcome::Full(format!(
                    "queue {queue} has {} consumer groups, at most {consumer_groups_max}: {consumer_group:?} would be one more",
                    counts.consumer_groups_on_queue
                )));
            }
            effects.consumer_offsets.push((consumer_group.to_string(), queue, offset));
        }
    }
    Ok((effects, GroupReply::OffsetCommitted))
}

/// How much one receive may deliver.
struct ReceiveBounds {
    max_messages: u32,
    in_flight_max: u32,
    /// 0: no bound.
    max_attempts: u32,
    fifo: bool,
}

impl ReceiveBounds {
    /// Whether a message delivered `attempt` times may be delivered again.
    fn may_deliver_again(&self, attempt: u32) -> bool {
        self.max_attempts == 0 || attempt < self.max_attempts
    }
}

fn check_consumer_group(consumer_group: &str) -> Result<(), Outcome> {
    if consumer_group.is_empty() || consumer_group.len() > CONSUMER_GROUP_BYTES_MAX {
        return Err(Outcome::Refused(format!(
            "consumer group name of {} bytes: must be 1 to {CONSUMER_GROUP_BYTES_MAX}",
            consumer_group.len()
        )));
    }
    Ok(())
}

/// The in-flight records of one consumer group on one queue that a receive at `now_ms` reads,
/// with the derived state it read them by.
struct Held {
    /// The consumer group's receive floor on the queue, as stored.
    floor: u64,
    /// The consumer group's in-flight tally on the queue, as stored.
    tally: Option<InFlightTally>,
    /// By offset: every record from the floor on; or, when the tally says none is visible
    /// again yet, only those below the start offset (trimmed, to be settled) and the lowest one
    /// above it (the new floor), since none of the others can be delivered.
    records: Vec<(u64, InFlight)>,
    /// How many are in flight, `records` or not.
    count: usize,
    /// The tally's time, when `records` is not every record: none is visible again before it.
    due_from_ms: Option<u64>,
}

impl Held {
    fn read(view: &impl GroupView, consumer_group: &str, queue: u32, now_ms: u64) -> Result<Self, StoreError> {
        let floor = view.receive_floor(consumer_group, queue)?;
        // Receives keep at most this many in flight (whatever a request allows), so this reads all.
        let all = IN_FLIGHT_PER_CONSUMER_GROUP_MAX as usize;
        let tally = view.in_flight_tally(consumer_group, queue)?;
        match tally {
            Some(t) if !t.may_be_due(now_ms) => {
                let start = view.start_offset(queue)?.max(floor);
                let mut records = view.in_flight(consumer_group, queue, floor..start, all)?;
                records.extend(view.in_flight(consumer_group, queue, start..u64::MAX, 1)?);
                Ok(Self { floor, tally, records, count: t.count as usize, due_from_ms: Some(t.due_from_ms) })
            }
            _ => {
                let records = view.in_flight(consumer_group, queue, floor..u64::MAX, all)?;
                Ok(Self { floor, tally, count: records.len(), records, due_from_ms: None })
            }
        }
    }
}

/// See [`GroupCommand::Receive`]. A message trimmed while in flight is settled: it can never be
/// delivered again. A new consumer group starts at the queue's first message still held.
fn receive(
    view: &impl GroupView,
    consumer_group: &str,
    queue: u32,
    now_ms: u64,
    invisible_ms: u64,
    bounds: ReceiveBounds,
) -> Result<(EntryEffects, GroupReply), Outcome> {
    check_consumer_group(consumer_group)?;
    let (start, end) = (view.start_offset(queue)?, view.next_offset(queue)?);
    let invisible_until_ms = now_ms.saturating_add(invisible_ms);
    let max = bounds.max_messages as usize;
    let mut effects = EntryEffects::default();
    let mut deliveries = Vec::new();
    let held = Held::read(view, consumer_group, queue, now_ms)?;
    let (floor, tally_before) = (held.floor, held.tally);
    let mut in_flight = held.count;
    let mut settled = 0usize;
    // The lowest offset still in flight once this entry is applied.
    let mut lowest_kept = None;
    // No record kept in flight becomes visible again before this (the earliest, when all were read).
    let mut earliest_due = held.due_from_ms.unwrap_or(u64::MAX);
    // FIFO: a message waits behind every earlier one still in flight.
    let mut blocked = false;
    for (offset, record) in held.records {
        if offset < start {
            effects.in_flight.push((consumer_group.to_owned(), queue, offset, None));
            in_flight -= 1;
            settled += 1;
            continue;
        }
        lowest_kept.get_or_insert(offset);
        let due = record.invisible_until_ms <= now_ms && bounds.may_deliver_again(record.attempt);
        if due && !blocked && deliveries.len() < max {
            let again = InFlight { invisible_until_ms, attempt: record.attempt.saturating_add(1), version: record.version.wrapping_add(1) };
            effects.in_flight.push((consumer_group.to_owned(), queue, offset, Some(again)));
            deliveries.push(Delivery { offset, attempt: again.attempt, version: again.version, invisible_until_ms });
            earliest_due = earliest_due.min(invisible_until_ms);
        } else {
            blocked = bounds.fifo;
            earliest_due = earliest_due.min(record.invisible_until_ms);
        }
    }
    let held_in_group = view.receive_items(CHECKPOINT_RECEIVE_ITEMS_MAX)?;
    let mut receive_state = ReceiveStateChange { consumer_group, queue, floor, lowest_kept, held_in_group, settled, added: 0 };
    let mut tally = TallyChange { consumer_group, queue, before: tally_before, earliest_due };
    // FIFO: nothing new while anything is in flight (a queue holds whole message groups, so
    // this keeps each group's order, as RocketMQ's orderly pop does per queue).
    if bounds.fifo && in_flight > 0 {
        receive_state.record(&mut effects, None);
        tally.record(&mut effects, in_flight);
        debug_assert!(effects.ops() <= ApplyBatch::OPS_MAX);
        return Ok((effects, GroupReply::Received { deliveries }));
    }
    let stored_cursor = view.pop_cursor(consumer_group, queue)?;
    let mut cursor = stored_cursor.unwrap_or(start).max(start);
    // The group's whole receive state must fit a checkpoint: new deliveries (and a new cursor)
    // only within what is left of CHECKPOINT_RECEIVE_ITEMS_MAX.
    let room = CHECKPOINT_RECEIVE_ITEMS_MAX.saturating_sub(held_in_group + usize::from(stored_cursor.is_none()));
    let mut added = 0usize;
    let first_new = cursor;
    if room == 0 && deliveries.is_empty() && cursor < end {
        return Err(Outcome::Full(format!(
            "the group holds {held_in_group} receive cursors and in-flight records, at most {CHECKPOINT_RECEIVE_ITEMS_MAX}: \
             acknowledge messages before receiving more"
        )));
    }
    while deliveries.len() < max && in_flight < bounds.in_flight_max as usize && cursor < end && added < room {
        added += 1;
        let first = InFlight { invisible_until_ms, attempt: 1, version: 1 };
        effects.in_flight.push((consumer_group.to_owned(), queue, cursor, Some(first)));
        deliveries.push(Delivery { offset: cursor, attempt: 1, version: 1, invisible_until_ms });
        tally.earliest_due = tally.earliest_due.min(invisible_until_ms);
        in_flight += 1;
        cursor += 1;
    }
    if stored_cursor != Some(cursor) && (stored_cursor.is_some() || cursor > start) {
        effects.pop_cursors.push((consumer_group.to_owned(), queue, cursor));
        receive_state.added += usize::from(stored_cursor.is_none());
    }
    receive_state.added += added;
    receive_state.record(&mut effects, Some(first_new));
    tally.record(&mut effects, in_flight);
    debug_assert!(effects.ops() <= ApplyBatch::OPS_MAX);
    Ok((effects, GroupReply::Received { deliveries }))
}

/// What one receive changes in the derived receive state: the group's count of receive items
/// and the consumer group's floor on the queue.
struct ReceiveStateChange<'a> {
    consumer_group: &'a str,
    queue: u32,
    /// The floor as stored.
    floor: u64,
    /// The lowest offset that stays in flight.
    lowest_kept: Option<u64>,
    /// The group's receive items before the entry.
    held_in_group: usize,
    /// In-flight records settled.
    settled: usize,
    /// In-flight records and receive cursors created.
    added: usize,
}

impl ReceiveStateChange<'_> {
    /// Adds the changes to `effects`; `first_new`: the receive cursor before new deliveries
    /// (each record they create is at or above it), if the receive got that far.
    fn record(&self, effects: &mut EntryEffects, first_new: Option<u64>) {
        let lowest = match (self.lowest_kept, first_new) {
            (Some(kept), Some(c)) => Some(kept.min(c)),
            (kept, c) => kept.or(c),
        };
        if let Some(floor) = lowest
            && floor != self.floor
        {
            effects.receive_floors.push((self.consumer_group.to_owned(), self.queue, floor));
        }
        if self.added != self.settled {
            let count = (self.held_in_group + self.added)
                .checked_sub(self.settled)
                .unwrap_or_else(|| panic!("settled {} of {} receive items", self.settled, self.held_in_group));
            effects.receive_items = Some(count as u64);
        }
    }
}

/// What one receive changes in the consumer group's in-flight tally on the queue.
struct TallyChange<'a> {
    consumer_group: &'a str,
    queue: u32,
    before: Option<InFlightTally>,
    /// No record in flight once the entry is applied becomes visible before this.
    earliest_due: u64,
}

impl TallyChange<'_> {
    /// Adds the tally of `in_flight` records to `effects`, if it changed.
    fn record(&self, effects: &mut EntryEffects, in_flight: usize) {
        debug_assert!(in_flight <= IN_FLIGHT_PER_CONSUMER_GROUP_MAX as usize, "{in_flight} in flight");
        let after = match u32::try_from(in_flight) {
            Ok(0) => InFlightTally::EMPTY,
            Ok(count) => InFlightTally { count, due_from_ms: self.earliest_due },
            Err(_) => panic!("{in_flight} messages in flight for one consumer group on one queue"),
        };
        if self.before != Some(after) {
            effects.in_flight_tallies.push((self.consumer_group.to_owned(), self.queue, after));
        }
    }
}

/// What a [`GroupCommand::Receive`] proposed now would find on a group in state `view`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiveOutlook {
    /// Messages visible again that were delivered `max_attempts` times (at most
    /// [`EXHAUSTED_LISTED_MAX`]): no receive delivers them again; they are due for the consumer
    /// group's dead-letter queue.
    Exhausted(Vec<Delivery>),
    /// At least one message would be delivered.
    Deliverable,
    /// Nothing now; a message in flight becomes visible again at this time (`None`: none will
    /// without a new message or an acknowledgement).
    NothingUntil(Option<u64>),
    /// The receive would be refused ([`GroupReply::LimitReached`] or `Rejected`), for this reason.
    Refused(String),
}

/// The most exhausted deliveries one [`receive_outlook`] lists.
pub const EXHAUSTED_LISTED_MAX: usize = 32;

/// What a receive of `consumer_group` on `queue` at `now_ms` would find, judged on `view`
/// without proposing anything: a leader long-polling for messages proposes a `Receive` only
/// when it delivers something, so an idle consumer costs no Raft entries, and hands exhausted
/// messages to the dead-letter queue first. The same decision as [`apply_command`]'s (it runs
/// it), so the two never disagree on the same state.
pub fn receive_outlook(
    view: &impl GroupView,
    consumer_group: &str,
    queue: u32,
    now_ms: u64,
    (in_flight_max, max_attempts, fifo): (u32, u32, bool),
) -> Result<ReceiveOutlook, StoreError> {
    let in_flight_max = in_flight_max.min(IN_FLIGHT_PER_CONSUMER_GROUP_MAX);
    let bounds = ReceiveBounds { max_messages: 1, in_flight_max, max_attempts, fifo };
    let held = match check_consumer_group(consumer_group) {
        Ok(()) => Some(Held::read(view, consumer_group, queue, now_ms)?),
        Err(_) => None,
    };
    let next_due = match &held {
        Some(Held { count, due_from_ms: Some(t), .. }) => (*count > 0).then_some(*t),
        Some(Held { records, .. }) => records.iter().map(|(_, r)| r.invisible_until_ms).filter(|&t| t > now_ms).min(),
        None => None,
    };
    // A message trimmed meanwhile is no one's to dead-letter: the next receive settles it.
    let start = view.start_offset(queue)?;
    let exhausted: Vec<Delivery> = held
        .iter()
        .flat_map(|h| &h.records)
        .filter(|(offset, r)| *offset >= start && r.invisible_until_ms <= now_ms && !bounds.may_deliver_again(r.attempt))
        .take(EXHAUSTED_LISTED_MAX)
        .map(|&(offset, r)| Delivery { offset, attempt: r.attempt, version: r.version, invisible_until_ms: r.invisible_until_ms })
        .collect();
    if !exhausted.is_empty() {
        return Ok(ReceiveOutlook::Exhausted(exhausted));
    }
    match receive(view, consumer_group, queue, now_ms, 0, bounds) {
        Ok((_, GroupReply::Received { deliveries })) if !deliveries.is_empty() => Ok(ReceiveOutlook::Deliverable),
        Ok(_) => Ok(ReceiveOutlook::NothingUntil(next_due)),
        Err(Outcome::Refused(reason) | Outcome::Full(reason)) => Ok(ReceiveOutlook::Refused(reason)),
        Err(Outcome::Read(e)) => Err(e),
    }
}

/// See [`GroupCommand::Ack`]: a delivery is settled only while its version is the message's
/// current one, so an ack of a delivery that was since redelivered changes nothing.
fn ack(view: &impl GroupView, consumer_group: &str, queue: u32, deliveries: &[(u64, u32)]) -> Result<(EntryEffects, GroupReply), Outcome> {
    check_consumer_group(consumer_group)?;
    if deliveries.len() > ApplyBatch::OPS_MAX {
        return Err(Outcome::Refused(format!("{} deliveries in one ack, at most {}", deliveries.len(), ApplyBatch::OPS_MAX)));
    }
    let mut effects = EntryEffects::default();
    let mut settled = Vec::with_capacity(deliveries.len());
    let mut done = BTreeSet::new();
    for &(offset, version) in deliveries {
        let current = view.in_flight_record(consumer_group, queue, offset)?;
        let ok = current.is_some_and(|r| r.version == version) && done.insert(offset);
        if ok {
            effects.in_flight.push((consumer_group.to_owned(), queue, offset, None));
        }
        settled.push(ok);
    }
    if !done.is_empty() {
        let held = view.receive_items(CHECKPOINT_RECEIVE_ITEMS_MAX)?;
        let count = held.checked_sub(done.len()).unwrap_or_else(|| panic!("acknowledged {} of {held} receive items", done.len()));
        effects.receive_items = Some(count as u64);
        // The time stays: the record settled may have been the earliest, so it is still a lower bound.
        if let Some(tally) = view.in_flight_tally(consumer_group, queue)? {
            let count = usize::try_from(tally.count).ok().and_then(|c| c.checked_sub(done.len()));
            let count = count.unwrap_or_else(|| panic!("acknowledged {} of {} in flight", done.len(), tally.count));
            let after = if count == 0 { InFlightTally::EMPTY } else { InFlightTally { count: count as u32, ..tally } };
            effects.in_flight_tallies.push((consumer_group.to_owned(), queue, after));
        }
    }
    Ok((effects, GroupReply::Acked { settled }))
}

/// See [`GroupCommand::ChangeInvisibility`].
fn change_invisibility(
    view: &impl GroupView,
    consumer_group: &str,
    queue: u32,
    (offset, version): (u64, u32),
    invisible_until_ms: u64,
) -> Result<(EntryEffects, GroupReply), Outcome> {
    check_consumer_group(consumer_group)?;
    let mut effects = EntryEffects::default();
    let changed = match view.in_flight_record(consumer_group, queue, offset)? {
        Some(r) if r.version == version => {
            let next = InFlight { invisible_until_ms, attempt: r.attempt, version: r.version.wrapping_add(1) };
            effects.in_flight.push((consumer_group.to_owned(), queue, offset, Some(next)));
            // Made visible sooner, the record moves the tally's time back.
            if let Some(tally) = view.in_flight_tally(consumer_group, queue)?
                && invisible_until_ms < tally.due_from_ms
            {
                effects.in_flight_tallies.push((
                    consumer_group.to_owned(),
                    queue,
                    InFlightTally { due_from_ms: invisible_until_ms, ..tally },
                ));
            }
            Some(next.version)
        }
        _ => None,
    };
    Ok((effects, GroupReply::InvisibilityChanged { version: changed }))
}

/// Trims the group at its checkpoint `up_to`: refused unless a checkpoint is there and it is
/// above the trim point. A commit offset below the new start offset is left as it is: it still
/// says how far the consumer got (a consumer reading from it is served from the start offset).
fn trim(view: &impl GroupView, up_to: u64) -> Result<(EntryEffects, GroupReply), Outcome> {
    if let Some(trim_point) = view.trim_point()?
        && up_to <= trim_point
    {
        return Err(Outcome::Refused(format!("log index {up_to} is not above the trim point {trim_point}")));
    }
    let Some(checkpoint) = view.checkpoint(up_to)? else {
        return Err(Outcome::Refused(format!("no checkpoint at log index {up_to}")));
    };
    let mut effects = EntryEffects::default();
    for &(queue, next) in &checkpoint.next_offsets {
        // Offsets are assigned in log order, so the messages of entries up to the checkpoint
        // are exactly the offsets below its next offset.
        if view.start_offset(queue)? < next {
            effects.trimmed_index.push((queue, next));
            effects.start_offsets.push((queue, next));
        }
    }
    effects.trim_point = Some(up_to);
    effects.dropped_checkpoints = view.checkpoint_indexes()?.into_iter().filter(|&i| i < up_to).collect();
    // Bounded: a checkpoint holds at most CHECKPOINT_ITEMS_MAX queues, a group at most
    // CHECKPOINTS_MAX + 1 checkpoints.
    debug_assert!(effects.ops() <= ApplyBatch::OPS_MAX && effects.checkpoint_ops() <= ApplyBatch::CHECKPOINT_OPS_MAX);
    Ok((effects, GroupReply::Trimmed { up_to_log_index: up_to }))
}

/// Adds to `effects` (those of the entry at `log_index`, on a group in state `view` before it)
/// the checkpoint as of that entry, with `raft_state` (the group's raft state as of the
/// entry), and the checkpoints it drops: the oldest beyond [`CHECKPOINTS_MAX`] above the trim
/// point; or, when the group holds no message at the checkpoint, every checkpoint below it, as
/// the checkpoint becomes the trim point.
///
/// # Panics
///
/// If the group holds more than [`CHECKPOINT_ITEMS_MAX`] queue and consumer offsets: the
/// commands that add offsets refuse to pass that bound, so more is a broken invariant (a group
/// without checkpoints could never trim again), which stops the group loudly.
pub fn record_checkpoint(view: &impl GroupView, log_index: u64, raft_state: Vec<u8>, effects: &mut EntryEffects) -> Result<(), StoreError> {
    let before = view.group_offsets(CHECKPOINT_ITEMS_MAX)?;
    let before = before.unwrap_or_else(|| panic!("a group holds more than {CHECKPOINT_ITEMS_MAX} offsets at log index {log_index}"));
    // The state as of the entry: the view overlaid with the entry's own effects.
    let mut next: BTreeMap<u32, u64> = before.next.into_iter().collect();
    next.extend(effects.next_offsets.iter().copied());
    let mut start: BTreeMap<u32, u64> = before.start.into_iter().collect();
    start.extend(effects.start_offsets.iter().copied());
    let mut consumers: BTreeMap<(String, u32), u64> = before.consumers.into_iter().map(|(cg, q, o)| ((cg, q), o)).collect();
    consumers.extend(effects.consumer_offsets.iter().map(|(cg, q, o)| ((cg.clone(), *q), *o)));
    assert!(
        next.len() + consumers.len() <= CHECKPOINT_ITEMS_MAX,
        "entry {log_index} leaves its group with {} offsets, over the {CHECKPOINT_ITEMS_MAX} a checkpoint holds",
        next.len() + consumers.len()
    );
    let holds_nothing = next.iter().all(|(q, n)| start.get(q).copied().unwrap_or(0) == *n);
    // The receive state as of the entry, likewise; receives refuse to pass its bound.
    let receive = view.receive_state(CHECKPOINT_RECEIVE_ITEMS_MAX)?;
    let receive =
        receive.unwrap_or_else(|| panic!("a group holds more than {CHECKPOINT_RECEIVE_ITEMS_MAX} receive items at log index {log_index}"));
    let mut cursors: BTreeMap<(String, u32), u64> = receive.cursors.into_iter().map(|(cg, q, c)| ((cg, q), c)).collect();
    cursors.extend(effects.pop_cursors.iter().map(|(cg, q, c)| ((cg.clone(), *q), *c)));
    let mut in_flight: BTreeMap<(String, u32, u64), InFlight> =
        receive.in_flight.into_iter().map(|(cg, q, o, r)| ((cg, q, o), r)).collect();
    for (cg, q, o, record) in &effects.in_flight {
        match record {
            Some(r) => in_flight.insert((cg.clone(), *q, *o), *r),
            None => in_flight.remove(&(cg.clone(), *q, *o)),
        };
    }
    let counted = match effects.receive_items {
        Some(count) => usize::try_from(count).unwrap_or(usize::MAX),
        None => view.receive_items(CHECKPOINT_RECEIVE_ITEMS_MAX)?,
    };
    assert_eq!(
        counted,
        cursors.len() + in_flight.len(),
        "entry {log_index}: the group's count of receive items disagrees with what it holds"
    );
    assert!(
        cursors.len() + in_flight.len() <= CHECKPOINT_RECEIVE_ITEMS_MAX,
        "entry {log_index} leaves its group with {} receive items, over the {CHECKPOINT_RECEIVE_ITEMS_MAX} a checkpoint holds",
        cursors.len() + in_flight.len()
    );
    let checkpoint = Checkpoint {
        log_index,
        raft_state,
        next_offsets: next.into_iter().collect(),
        consumer_offsets: consumers.into_iter().map(|((cg, q), o)| (cg, q, o)).collect(),
        pop_cursors: cursors.into_iter().map(|((cg, q), c)| (cg, q, c)).collect(),
        in_flight: in_flight.into_iter().map(|((cg, q, o), r)| (cg, q, o, r)).collect(),
    };

    let dropped: BTreeSet<u64> = effects.dropped_checkpoints.iter().copied().collect();
    let held: Vec<u64> = view.checkpoint_indexes()?.into_iter().filter(|i| !dropped.contains(i)).collect();
    let mut newly_dropped = Vec::new();
    if holds_nothing {
        newly_dropped.extend(held.iter().copied().filter(|&i| i < log_index));
        effects.trim_point = Some(log_index);
    } else {
        let trim_point = match effects.trim_point {
            Some(t) => Some(t),
            None => view.trim_point()?,
        };
        // The one at the trim point is the group's snapshot: never dropped for room.
        let rolling: Vec<u64> = held.into_iter().filter(|&i| trim_point.is_none_or(|t| i > t)).collect();
        let excess = (rolling.len() + 1).saturating_sub(CHECKPOINTS_MAX);
        newly_dropped.extend(rolling.into_iter().take(excess));
    }
    effects.dropped_checkpoints.extend(newly_dropped);
    effects.dropped_checkpoints.sort_unstable();
    effects.checkpoints.push(checkpoint);
    // A trim drops the checkpoints below its own and this one only those below itself, so
    // together at most every checkpoint held (CHECKPOINTS_MAX + 1) and this one.
    debug_assert!(effects.checkpoint_ops() <= ApplyBatch::CHECKPOINT_OPS_MAX);
    Ok(())
}

/// The tag hash of the index: 64-bit FNV-1a of the tag's UTF-8 bytes, 0 for no tag. Stable
/// across processes, versions and machines (unlike std's `RandomState`), since replicas and
/// consumers must compute the same value. A tag that hashes to 0 only costs a false match,
/// which tag filtering resolves by checking the tag itself.
pub fn tag_hash(tag: Option<&str>) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    match tag {
        None => 0,
        Some(t) => t.bytes().fold(OFFSET_BASIS, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME)),
    }
}

#[cfg(test)]
mod tests;

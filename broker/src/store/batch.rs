use super::keys::{self, Item};
use super::value::{self, Checkpoint, InFlight, InFlightTally, IndexEntry, RAFT_STATE_BYTES_MAX};
use super::{GroupId, StoreError};

/// Everything one applied Raft entry (or a run of consecutive entries) changes in one group,
/// written by [`super::QueueStore::apply`] in one RocksDB write batch together with the
/// group's applied index, so the store never holds part of an entry's effects.
#[derive(Debug, Clone)]
pub struct ApplyBatch {
    applied_index: u64,
    index: Vec<(u32, u64, IndexEntry)>,
    next_offsets: Vec<(u32, u64)>,
    consumer_offsets: Vec<(String, u32, u64)>,
    raft_state: Option<Vec<u8>>,
    /// `(queue, offset)`: the queue's index entries below `offset` are deleted.
    trimmed_index: Vec<(u32, u64)>,
    start_offsets: Vec<(u32, u64)>,
    trim_point: Option<u64>,
    checkpoints: Vec<Checkpoint>,
    dropped_checkpoints: Vec<u64>,
    pop_cursors: Vec<(String, u32, u64)>,
    /// In-flight records set (`Some`) and settled (`None`), in the order the entries did it: a
    /// run of entries may deliver a message and settle it, and the last change must win.
    in_flight: Vec<(String, u32, u64, Option<InFlight>)>,
    receive_floors: Vec<(String, u32, u64)>,
    receive_items: Option<u64>,
    /// In the order the entries set them: the last one wins.
    in_flight_tallies: Vec<(String, u32, InFlightTally)>,
}

impl ApplyBatch {
    /// Most operations one batch may hold. A Raft entry is at most 8 MiB and a send batch at
    /// most 256 messages, so a run of entries stays far below this; the bound keeps one write
    /// batch (built in memory) from growing without limit.
    pub const OPS_MAX: usize = 65_536;

    /// Most checkpoint operations (recorded and dropped) one batch may hold, besides
    /// [`Self::OPS_MAX`]: an entry records at most one checkpoint and drops at most every other
    /// one, so a full send batch can still record its checkpoint.
    pub const CHECKPOINT_OPS_MAX: usize = super::CHECKPOINTS_MAX + 2;

    /// A batch whose entries end at Raft log index `applied_index`.
    pub fn new(applied_index: u64) -> Self {
        Self {
            applied_index,
            index: Vec::new(),
            next_offsets: Vec::new(),
            consumer_offsets: Vec::new(),
            raft_state: None,
            trimmed_index: Vec::new(),
            start_offsets: Vec::new(),
            trim_point: None,
            checkpoints: Vec::new(),
            dropped_checkpoints: Vec::new(),
            pop_cursors: Vec::new(),
            in_flight: Vec::new(),
            receive_floors: Vec::new(),
            receive_items: None,
            in_flight_tallies: Vec::new(),
        }
    }

    /// The Raft log index the group has applied once this batch is written.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Operations in the batch, not counting the applied index, the raft state, the trim point
    /// and checkpoint operations; at most [`Self::OPS_MAX`].
    pub fn len(&self) -> usize {
        self.index.len()
            + self.next_offsets.len()
            + self.consumer_offsets.len()
            + self.trimmed_index.len()
            + self.start_offsets.len()
            + self.pop_cursors.len()
            + self.in_flight.len()
            + self.receive_floors.len()
            + self.in_flight_tallies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores the consume-queue index entry of `offset` in `queue`.
    pub fn put_index(&mut self, queue: u32, offset: u64, entry: IndexEntry) -> Result<(), StoreError> {
        self.check_room()?;
        self.index.push((queue, offset, entry));
        Ok(())
    }

    /// Sets the offset the next message of `queue` will get.
    pub fn set_next_offset(&mut self, queue: u32, next_offset: u64) -> Result<(), StoreError> {
        self.check_room()?;
        self.next_offsets.push((queue, next_offset));
        Ok(())
    }

    /// Sets `consumer_group`'s committed offset on `queue`.
    pub fn set_consumer_offset(&mut self, consumer_group: &str, queue: u32, offset: u64) -> Result<(), StoreError> {
        keys::check_consumer_group(consumer_group)?;
        self.check_room()?;
        self.consumer_offsets.push((consumer_group.to_string(), queue, offset));
        Ok(())
    }

    /// Sets the next offset of `queue` never yet delivered to `consumer_group` by a receive.
    pub fn set_pop_cursor(&mut self, consumer_group: &str, queue: u32, offset: u64) -> Result<(), StoreError> {
        keys::check_consumer_group(consumer_group)?;
        self.check_room()?;
        self.pop_cursors.push((consumer_group.to_string(), queue, offset));
        Ok(())
    }

    /// Records `offset` of `queue` as delivered to `consumer_group` and not yet acknowledged.
    pub fn put_in_flight(&mut self, consumer_group: &str, queue: u32, offset: u64, record: InFlight) -> Result<(), StoreError> {
        keys::check_consumer_group(consumer_group)?;
        self.check_room()?;
        self.in_flight.push((consumer_group.to_string(), queue, offset, Some(record)));
        Ok(())
    }

    /// Deletes the in-flight record of `offset` of `queue` for `consumer_group`: acknowledged,
    /// or no longer deliverable.
    pub fn settle(&mut self, consumer_group: &str, queue: u32, offset: u64) -> Result<(), StoreError> {
        keys::check_consumer_group(consumer_group)?;
        self.check_room()?;
        self.in_flight.push((consumer_group.to_string(), queue, offset, None));
        Ok(())
    }

    /// Sets the offset below which `consumer_group` has no in-flight record on `queue` (see
    /// [`super::QueueStore::receive_floor`]).
    pub fn set_receive_floor(&mut self, consumer_group: &str, queue: u32, offset: u64) -> Result<(), StoreError> {
        keys::check_consumer_group(consumer_group)?;
        self.check_room()?;
        self.receive_floors.push((consumer_group.to_string(), queue, offset));
        Ok(())
    }

    /// Sets `consumer_group`'s in-flight tally on `queue` (see [`super::QueueStore::in_flight_tally`]).
    pub fn set_in_flight_tally(&mut self, consumer_group: &str, queue: u32, tally: InFlightTally) -> Result<(), StoreError> {
        keys::check_consumer_group(consumer_group)?;
        self.check_room()?;
        self.in_flight_tallies.push((consumer_group.to_string(), queue, tally));
        Ok(())
    }

    /// Sets how many receive cursors and in-flight records the group holds (see
    /// [`super::QueueStore::receive_items`]).
    pub fn set_receive_items(&mut self, count: u64) {
        self.receive_items = Some(count);
    }

    /// Sets the group's raft state (see [`super::QueueStore::raft_state`]), written in the same
    /// write batch as the entry effects it describes. Refuses a state over
    /// [`RAFT_STATE_BYTES_MAX`] bytes.
    pub fn set_raft_state(&mut self, state: Vec<u8>) -> Result<(), StoreError> {
        if state.len() > RAFT_STATE_BYTES_MAX {
            return Err(StoreError::RaftStateTooLarge { len: state.len(), max: RAFT_STATE_BYTES_MAX });
        }
        self.raft_state = Some(state);
        Ok(())
    }

    /// Deletes `queue`'s index entries below `offset` (a trim), with one range deletion.
    pub fn trim_index(&mut self, queue: u32, offset: u64) -> Result<(), StoreError> {
        self.check_room()?;
        self.trimmed_index.push((queue, offset));
        Ok(())
    }

    /// Sets the first offset of `queue` still held.
    pub fn set_start_offset(&mut self, queue: u32, offset: u64) -> Result<(), StoreError> {
        self.check_room()?;
        self.start_offsets.push((queue, offset));
        Ok(())
    }

    /// Sets the group's trim point. The caller keeps the checkpoint at that index (and writes
    /// it, if new, in the same batch): the trim point names the group's snapshot.
    pub fn set_trim_point(&mut self, log_index: u64) {
        self.trim_point = Some(log_index);
    }

    /// Stores `checkpoint` under its log index. Refuses one over its bounds or out of order.
    pub fn put_checkpoint(&mut self, checkpoint: Checkpoint) -> Result<(), StoreError> {
        checkpoint.check().map_err(|reason| StoreError::InvalidCheckpoint { log_index: checkpoint.log_index, reason })?;
        self.check_checkpoint_room()?;
        self.checkpoints.push(checkpoint);
        Ok(())
    }

    /// Deletes the checkpoint at `log_index`.
    pub fn drop_checkpoint(&mut self, log_index: u64) -> Result<(), StoreError> {
        self.check_checkpoint_room()?;
        self.dropped_checkpoints.push(log_index);
        Ok(())
    }

    fn check_room(&self) -> Result<(), StoreError> {
        if self.len() >= Self::OPS_MAX {
            return Err(StoreError::BatchFull { limit: Self::OPS_MAX });
        }
        Ok(())
    }

    fn check_checkpoint_room(&self) -> Result<(), StoreError> {
        if self.checkpoints.len() + self.dropped_checkpoints.len() >= Self::CHECKPOINT_OPS_MAX {
            return Err(StoreError::BatchFull { limit: Self::CHECKPOINT_OPS_MAX });
        }
        Ok(())
    }

    /// The RocksDB write batch for `group`; operations on the same key keep the last value.
    /// Deletions go first, so a key deleted and written in one batch ends written.
    pub(crate) fn to_write_batch(&self, group: GroupId) -> rocksdb::WriteBatch {
        let mut wb = rocksdb::WriteBatch::default();
        for (queue, offset) in &self.trimmed_index {
            wb.delete_range(Item::Index { queue: *queue, offset: 0 }.key(group), Item::Index { queue: *queue, offset: *offset }.key(group));
        }
        for log_index in &self.dropped_checkpoints {
            wb.delete(Item::Checkpoint { log_index: *log_index }.key(group));
        }
        // In order: RocksDB applies a write batch's operations in sequence, the last one wins.
        for (consumer_group, queue, offset, record) in &self.in_flight {
            let key = Item::InFlight { consumer_group: consumer_group.clone(), queue: *queue, offset: *offset }.key(group);
            match record {
                Some(r) => wb.put(key, r.encode()),
                None => wb.delete(key),
            }
        }
        for (consumer_group, queue, offset) in &self.pop_cursors {
            wb.put(Item::PopCursor { consumer_group: consumer_group.clone(), queue: *queue }.key(group), value::encode_u64(*offset));
        }
        for (consumer_group, queue, offset) in &self.receive_floors {
            wb.put(Item::ReceiveFloor { consumer_group: consumer_group.clone(), queue: *queue }.key(group), value::encode_u64(*offset));
        }
        if let Some(count) = self.receive_items {
            wb.put(Item::ReceiveItems.key(group), value::encode_u64(count));
        }
        for (consumer_group, queue, tally) in &self.in_flight_tallies {
            wb.put(Item::InFlightTally { consumer_group: consumer_group.clone(), queue: *queue }.key(group), tally.encode());
        }
        for (queue, offset, entry) in &self.index {
            wb.put(Item::Index { queue: *queue, offset: *offset }.key(group), entry.encode());
        }
        for (queue, next) in &self.next_offsets {
            wb.put(Item::NextOffset { queue: *queue }.key(group), value::encode_u64(*next));
        }
        for (consumer_group, queue, offset) in &self.consumer_offsets {
            wb.put(Item::ConsumerOffset { consumer_group: consumer_group.clone(), queue: *queue }.key(group), value::encode_u64(*offset));
        }
        if let Some(state) = &self.raft_state {
            wb.put(Item::RaftState.key(group), value::encode_blob(state));
        }
        for (queue, offset) in &self.start_offsets {
            wb.put(Item::StartOffset { queue: *queue }.key(group), value::encode_u64(*offset));
        }
        for checkpoint in &self.checkpoints {
            wb.put(Item::Checkpoint { log_index: checkpoint.log_index }.key(group), checkpoint.encode());
        }
        if let Some(trim_point) = self.trim_point {
            wb.put(Item::TrimPoint.key(group), value::encode_u64(trim_point));
        }
        wb.put(Item::Applied.key(group), value::encode_u64(self.applied_index));
        wb
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_refuses_operations_past_its_limit() {
        let mut b = ApplyBatch::new(1);
        for i in 0..ApplyBatch::OPS_MAX {
            b.set_next_offset(0, i as u64).unwrap();
        }
        assert!(matches!(b.put_index(0, 0, IndexEntry::default()), Err(StoreError::BatchFull { .. })));
        assert!(matches!(b.set_consumer_offset("cg", 0, 0), Err(StoreError::BatchFull { .. })));
        assert_eq!(b.len(), ApplyBatch::OPS_MAX);
    }

    #[test]
    fn a_batch_refuses_a_raft_state_over_its_limit() {
        let mut b = ApplyBatch::new(1);
        b.set_raft_state(vec![0; RAFT_STATE_BYTES_MAX]).unwrap();
        assert!(matches!(b.set_raft_state(vec![0; RAFT_STATE_BYTES_MAX + 1]), Err(StoreError::RaftStateTooLarge { .. })));
    }

    #[test]
    fn a_batch_refuses_a_checkpoint_it_cannot_store() {
        let mut b = ApplyBatch::new(1);
        let unordered = Checkpoint { log_index: 1, next_offsets: vec![(2, 0), (1, 0)], ..Checkpoint::default() };
        assert!(matches!(b.put_checkpoint(unordered), Err(StoreError::InvalidCheckpoint { log_index: 1, .. })));
        assert!(b.is_empty());
    }

    #[test]
    fn a_batch_refuses_a_consumer_group_name_keys_cannot_hold() {
        let mut b = ApplyBatch::new(1);
        assert!(matches!(b.set_consumer_offset("", 0, 0), Err(StoreError::InvalidName { .. })));
        assert!(matches!(b.set_consumer_offset(&"x".repeat(256), 0, 0), Err(StoreError::InvalidName { .. })));
        assert!(b.is_empty());
    }
}

use super::keys::{self, Item};
use super::value::{self, IndexEntry, RAFT_STATE_BYTES_MAX};
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
}

impl ApplyBatch {
    /// Most operations one batch may hold. A Raft entry is at most 8 MiB and a send batch at
    /// most 256 messages, so a run of entries stays far below this; the bound keeps one write
    /// batch (built in memory) from growing without limit.
    pub const OPS_MAX: usize = 65_536;

    /// A batch whose entries end at Raft log index `applied_index`.
    pub fn new(applied_index: u64) -> Self {
        Self { applied_index, index: Vec::new(), next_offsets: Vec::new(), consumer_offsets: Vec::new(), raft_state: None }
    }

    /// The Raft log index the group has applied once this batch is written.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Operations in the batch, not counting the applied index and the raft state.
    pub fn len(&self) -> usize {
        self.index.len() + self.next_offsets.len() + self.consumer_offsets.len()
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

    fn check_room(&self) -> Result<(), StoreError> {
        if self.len() >= Self::OPS_MAX {
            return Err(StoreError::BatchFull { limit: Self::OPS_MAX });
        }
        Ok(())
    }

    /// The RocksDB write batch for `group`; operations on the same key keep the last value.
    pub(crate) fn to_write_batch(&self, group: GroupId) -> rocksdb::WriteBatch {
        let mut wb = rocksdb::WriteBatch::default();
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
    fn a_batch_refuses_a_consumer_group_name_keys_cannot_hold() {
        let mut b = ApplyBatch::new(1);
        assert!(matches!(b.set_consumer_offset("", 0, 0), Err(StoreError::InvalidName { .. })));
        assert!(matches!(b.set_consumer_offset(&"x".repeat(256), 0, 0), Err(StoreError::InvalidName { .. })));
        assert!(b.is_empty());
    }
}

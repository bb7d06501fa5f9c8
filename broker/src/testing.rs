//! Test support, for this crate's tests and (with the `testing` feature) other crates' and the
//! integration tests: a queue group's state held in memory.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::queue::{EntryEffects, GroupView};
use crate::store::{Checkpoint, GroupOffsets, InFlight, InFlightTally, IndexEntry, OffsetCounts, ReceiveState, StoreError};

/// A queue group's state in memory, kept by writing each entry's effects as the store does: the
/// model the store must agree with.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MemoryGroup {
    pub next: BTreeMap<u32, u64>,
    pub consumers: BTreeMap<(String, u32), u64>,
    pub index: BTreeMap<(u32, u64), IndexEntry>,
    pub start: BTreeMap<u32, u64>,
    pub trim_point: Option<u64>,
    pub checkpoints: BTreeMap<u64, Checkpoint>,
    /// Receive cursors by (consumer group, queue).
    pub pop_cursors: BTreeMap<(String, u32), u64>,
    /// In-flight records by (consumer group, queue, offset).
    pub in_flight: BTreeMap<(String, u32, u64), InFlight>,
    /// Receive floors by (consumer group, queue).
    pub receive_floors: BTreeMap<(String, u32), u64>,
    /// The count of receive items the applies keep, once one changed it.
    pub receive_items: Option<u64>,
    /// In-flight tallies by (consumer group, queue), once one was written.
    pub in_flight_tallies: BTreeMap<(String, u32), InFlightTally>,
}

impl GroupView for MemoryGroup {
    fn next_offset(&self, queue: u32) -> Result<u64, StoreError> {
        Ok(self.next.get(&queue).copied().unwrap_or(0))
    }
    fn consumer_offset(&self, consumer_group: &str, queue: u32) -> Result<Option<u64>, StoreError> {
        Ok(self.consumers.get(&(consumer_group.to_string(), queue)).copied())
    }
    fn start_offset(&self, queue: u32) -> Result<u64, StoreError> {
        Ok(self.start.get(&queue).copied().unwrap_or(0))
    }
    fn trim_point(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.trim_point)
    }
    fn checkpoint(&self, log_index: u64) -> Result<Option<Checkpoint>, StoreError> {
        Ok(self.checkpoints.get(&log_index).cloned())
    }
    fn checkpoint_indexes(&self) -> Result<Vec<u64>, StoreError> {
        Ok(self.checkpoints.keys().copied().collect())
    }
    fn group_offsets(&self, items_max: usize) -> Result<Option<GroupOffsets>, StoreError> {
        if self.next.len() + self.consumers.len() > items_max {
            return Ok(None);
        }
        Ok(Some(GroupOffsets {
            next: self.next.iter().map(|(q, n)| (*q, *n)).collect(),
            start: self.start.iter().map(|(q, s)| (*q, *s)).collect(),
            consumers: self.consumers.iter().map(|((cg, q), o)| (cg.clone(), *q, *o)).collect(),
        }))
    }
    fn offset_counts(&self, queue: u32, _: usize) -> Result<OffsetCounts, StoreError> {
        Ok(OffsetCounts {
            queues: self.next.len(),
            consumer_offsets: self.consumers.len(),
            consumer_groups_on_queue: self.consumers.keys().filter(|(_, q)| *q == queue).count(),
        })
    }
    fn pop_cursor(&self, consumer_group: &str, queue: u32) -> Result<Option<u64>, StoreError> {
        Ok(self.pop_cursors.get(&(consumer_group.to_string(), queue)).copied())
    }
    fn in_flight(&self, consumer_group: &str, queue: u32, offsets: Range<u64>, max: usize) -> Result<Vec<(u64, InFlight)>, StoreError> {
        let from = (consumer_group.to_string(), queue, offsets.start);
        let to = (consumer_group.to_string(), queue, offsets.end);
        Ok(self.in_flight.range(from..to).take(max).map(|((_, _, o), r)| (*o, *r)).collect())
    }
    fn in_flight_tally(&self, consumer_group: &str, queue: u32) -> Result<Option<InFlightTally>, StoreError> {
        Ok(self.in_flight_tallies.get(&(consumer_group.to_string(), queue)).copied())
    }
    fn in_flight_record(&self, consumer_group: &str, queue: u32, offset: u64) -> Result<Option<InFlight>, StoreError> {
        Ok(self.in_flight.get(&(consumer_group.to_string(), queue, offset)).copied())
    }
    fn receive_floor(&self, consumer_group: &str, queue: u32) -> Result<u64, StoreError> {
        Ok(self.receive_floors.get(&(consumer_group.to_string(), queue)).copied().unwrap_or(0))
    }
    fn receive_items(&self, _: usize) -> Result<usize, StoreError> {
        Ok(self.receive_items.map_or(self.pop_cursors.len() + self.in_flight.len(), |c| c as usize))
    }
    fn receive_state(&self, items_max: usize) -> Result<Option<ReceiveState>, StoreError> {
        if self.pop_cursors.len() + self.in_flight.len() > items_max {
            return Ok(None);
        }
        Ok(Some(ReceiveState {
            cursors: self.pop_cursors.iter().map(|((cg, q), c)| (cg.clone(), *q, *c)).collect(),
            in_flight: self.in_flight.iter().map(|((cg, q, o), r)| (cg.clone(), *q, *o, *r)).collect(),
        }))
    }
}

impl MemoryGroup {
    /// Writes one entry's effects, asserting none overwrites what it must not.
    pub fn write(&mut self, effects: &EntryEffects) {
        for (q, below) in &effects.trimmed_index {
            self.index.retain(|(iq, io), _| iq != q || io >= below);
        }
        for i in &effects.dropped_checkpoints {
            assert!(self.checkpoints.remove(i).is_some(), "dropped checkpoint {i} not held");
        }
        for (q, o, e) in &effects.index {
            assert!(self.index.insert((*q, *o), *e).is_none(), "offset {o} of queue {q} written twice");
        }
        self.next.extend(effects.next_offsets.iter().copied());
        for (cg, q, o) in &effects.consumer_offsets {
            self.consumers.insert((cg.clone(), *q), *o);
        }
        self.start.extend(effects.start_offsets.iter().copied());
        self.trim_point = effects.trim_point.or(self.trim_point);
        for c in &effects.checkpoints {
            assert!(self.checkpoints.insert(c.log_index, c.clone()).is_none(), "checkpoint {} recorded twice", c.log_index);
        }
        for (cg, q, cursor) in &effects.pop_cursors {
            self.pop_cursors.insert((cg.clone(), *q), *cursor);
        }
        for (cg, q, o, record) in &effects.in_flight {
            match record {
                Some(r) => self.in_flight.insert((cg.clone(), *q, *o), *r),
                None => self.in_flight.remove(&(cg.clone(), *q, *o)),
            };
        }
        for (cg, q, floor) in &effects.receive_floors {
            self.receive_floors.insert((cg.clone(), *q), *floor);
        }
        self.receive_items = effects.receive_items.or(self.receive_items);
        // The derived state agrees with what it is derived from.
        if let Some(count) = self.receive_items {
            assert_eq!(count as usize, self.pop_cursors.len() + self.in_flight.len(), "count of receive items");
        }
        for (cg, q, tally) in &effects.in_flight_tallies {
            self.in_flight_tallies.insert((cg.clone(), *q), *tally);
        }
        for (cg, q, o) in self.in_flight.keys() {
            let floor = self.receive_floors.get(&(cg.clone(), *q)).copied().unwrap_or(0);
            assert!(*o >= floor, "in-flight offset {o} of {cg:?} on queue {q} below its floor {floor}");
        }
        // A tally counts exactly what is in flight, and nothing is visible again before its time.
        for ((cg, q), tally) in &self.in_flight_tallies {
            let held = self.in_flight.range((cg.clone(), *q, 0)..=(cg.clone(), *q, u64::MAX)).map(|(_, r)| r);
            let (count, earliest) = held.fold((0u32, u64::MAX), |(n, t), r| (n + 1, t.min(r.invisible_until_ms)));
            assert_eq!(tally.count, count, "in-flight tally of {cg:?} on queue {q}");
            assert!(
                tally.due_from_ms <= earliest,
                "{cg:?} on queue {q}: a record visible at {earliest}, tally says none before {}",
                tally.due_from_ms
            );
        }
    }
}

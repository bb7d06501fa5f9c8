//! The broker's queue store: the derived state of every Raft group (queue group) the broker
//! hosts, in one RocksDB per process.
//!
//! # Durability contract
//!
//! The Raft log (`raft-log`) is the source of truth; this store is derived from it.
//! - Every write goes with RocksDB's WAL disabled: nothing is fsynced when a call returns. A
//!   crash loses everything written since the last flush (RocksDB's own, or [`QueueStore::flush`]),
//!   and each group then re-applies its Raft log from the applied index the store still holds.
//! - Each [`QueueStore::apply`] is one RocksDB write batch holding an entry's effects and the
//!   group's applied index, so after a crash a group's data is exactly that of some applied
//!   index, never part of an entry.
//! - [`QueueStore::durable_applied_index`] is the applied index the last [`QueueStore::flush`]
//!   made durable: a crash leaves the group at it or later (later when RocksDB flushed on its
//!   own since). The broker must never purge a group's Raft log past it.
//! - The group's raft state (openraft's last applied log id and membership, as an opaque blob:
//!   [`ApplyBatch::set_raft_state`]) goes in the same write batch as the effects it describes,
//!   so [`QueueStore::raft_state`] always names exactly the entry the data is at.
//! - Dropping the store flushes (RocksDB flushes memtables on close when the WAL is off).
//!
//! # Layout: one column family, kinds inside the key
//!
//! All groups share RocksDB's default column family. One column family and not one per kind
//! (e.g. `index`, `state`): with the WAL disabled, column families stay consistent with each
//! other only if every flush covers all of them at once. `atomic_flush = true` does that for
//! RocksDB's own flushes, but the C API of RocksDB 7.8 (the Debian 12 library this crate links)
//! has no manual flush of several column families (`rocksdb_flush_cfs` is not in it), and a
//! manual flush of one column family flushes only that one, even with `atomic_flush`. Flushing
//! `index` and then `state` would leave, after a crash between the two, a group's index from
//! one point and its applied index from another (and a deleted or re-imported group half
//! replaced). With one column family every flush is a cut at one point in the write order.
//! `atomic_flush` is still set, so that RocksDB's own flushes stay all-or-nothing should a
//! second column family be added (which needs a RocksDB with `rocksdb_flush_cfs` first).
//!
//! # Keys
//!
//! Every key starts with the group id, so a group's data is one contiguous range that can be
//! iterated, exported and deleted by prefix, and a kind byte (all below `0xFF`, so
//! `group ++ [0xFF]` bounds the range). Integers in keys are big-endian (they sort
//! numerically).
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | group id, u64 BE |
//! | 8 | kind |
//!
//! followed by, per kind:
//!
//! | kind | name | rest of the key | value payload |
//! |---|---|---|---|
//! | `0x00` | import marker | nothing | nothing |
//! | `0x01` | applied index | nothing | applied Raft log index, u64 |
//! | `0x02` | next offset | 9..13 queue id, u32 BE | next offset of the queue, u64 |
//! | `0x03` | consumer offset | 9 name length n (1..=255), 10..10+n consumer group name (UTF-8), 10+n..14+n queue id, u32 BE | committed offset, u64 |
//! | `0x04` | index entry | 9..13 queue id, u32 BE; 13..21 queue offset, u64 BE | [`IndexEntry`]: log index u64, position u32, size u32, tag hash u64, store time ms u64 |
//! | `0x05` | raft state | nothing | variable length, 0..=[`RAFT_STATE_BYTES_MAX`] (64 KiB) bytes, opaque to the store: the state machine's bincode of its last applied log id and membership |
//! | `0x06` | start offset | 9..13 queue id, u32 BE | first offset of the queue still held (a trim deleted the index entries below it); absent: 0 |
//! | `0x07` | trim point | nothing | Raft log index of the group's last trim, u64; a checkpoint at that index is always present |
//! | `0x08` | checkpoint | 9..17 Raft log index, u64 BE | [`Checkpoint`]: the group's offsets and raft state as of that index, variable length, at most [`CHECKPOINT_ITEMS_MAX`] offsets and a raft state; at most [`CHECKPOINTS_MAX`] + 1 per group |
//! | `0x09` | receive cursor | 9 name length n, 10..10+n consumer group name, 10+n..14+n queue id, u32 BE | next offset of the queue never yet delivered to the consumer group by a receive, u64 |
//! | `0x0A` | in-flight record | as the receive cursor's, then 14+n..22+n queue offset, u64 BE | [`InFlight`]: invisible until (ms) u64, attempt u32, version u32 |
//! | `0x0B` | receive floor | as the receive cursor's | no in-flight record of the consumer group on the queue is below this offset, u64; derived; absent: 0 |
//! | `0x0C` | receive item count | nothing | receive cursors and in-flight records the group holds, u64; derived; absent: count them |
//! | `0x0D` | in-flight tally | as the receive cursor's | [`InFlightTally`]: count u32, due-from (ms) u64; derived; absent: read the records |
//!
//! The derived kinds (`0x0B` to `0x0D`) are kept by the applies and never carried by a
//! checkpoint, so a group installed from one has none until its receives write them; they
//! decide only how much a receive reads, never what it decides.
//!
//! A group's messages are its index entries; their bodies are in the Raft log. Retention
//! deletes index entries (a trim, by range per queue) and records how far in the start offset
//! and the trim point; the checkpoint at the trim point is the group's Raft snapshot, and no
//! index entry held points at a log entry at or below the trim point, so the log may be purged
//! up to it (see `crate::queue::apply`).
//! # Values
//!
//! | bytes | field |
//! |---|---|
//! | 0 | format, 1 |
//! | 1..1+n | payload, fixed length per kind (above; the raft state's and a checkpoint's are variable and bounded), integers little-endian |
//! | 1+n..5+n | CRC32C of bytes 0..1+n, u32 LE |
//!
//! A value of the wrong length, an unknown format or a checksum mismatch is
//! [`StoreError::Corrupt`] naming the key, never decoded.
//!
//! # Group settings
//!
//! A second column family, `group_settings`, holds per group (key: the group id, u64 BE) the
//! checkpoint interval its replica applies with (value: u64, sealed as above). It is written
//! once, when the replica is first opened, with the WAL on and synced: unlike the group's
//! derived state, it cannot be rebuilt from the Raft log, and it must be known before the log is
//! applied. It lives outside the group's key range, so imports and deletions of the group's
//! data leave it alone.
//!
//! # Import marker
//!
//! A group's import ([`QueueStore::begin_import`]) may span several write batches. Its first
//! batch deletes the group's range and writes the marker; its last writes the applied index and
//! deletes the marker. A group found with the marker on open was cut off by a crash mid-import:
//! it is deleted and listed in [`OpenReport::interrupted_imports`].

mod batch;
mod error;
mod group_snapshot;
mod keys;
mod value;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rocksdb::{ColumnFamily, DB, DEFAULT_COLUMN_FAMILY_NAME, FlushOptions, Options, ReadOptions, WriteBatch, WriteOptions};

pub use batch::ApplyBatch;
pub use error::StoreError;
pub use group_snapshot::{EXPORT_PAGE_BYTES_MAX, ExportPage, GroupExport, GroupImport, GroupRecord, checkpoint_export};
pub use keys::CONSUMER_GROUP_BYTES_MAX;
pub use value::{
    CHECKPOINT_ITEMS_MAX, CHECKPOINT_RECEIVE_ITEMS_MAX, Checkpoint, InFlight, InFlightTally, IndexEntry, RAFT_STATE_BYTES_MAX,
};

use keys::Item;

/// Identifies a Raft group; the same number as `raft_log::GroupId`.
pub type GroupId = u64;

/// Tunables of the store (the `[store]` section of a broker's options), each with its default.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreOptions {
    /// Size of one RocksDB memtable. Default 64 MiB. RocksDB flushes on its own when one fills;
    /// at most a few are kept in memory.
    pub memtable_bytes: usize,
    /// How often the store's memtables are flushed, above 0. Its WAL is off, so what it has not
    /// flushed is rebuilt from the Raft log after a crash: this bounds how much of each group's
    /// log a restart re-applies. Default 30000.
    pub flush_interval_ms: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { memtable_bytes: 64 << 20, flush_interval_ms: 30_000 }
    }
}

impl StoreOptions {
    pub fn flush_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.flush_interval_ms)
    }
}

/// What opening the store found and did.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    /// Groups with state in the store.
    pub groups: usize,
    /// Groups whose import a crash cut off: their partial data was deleted, and they must be
    /// given a snapshot again.
    pub interrupted_imports: Vec<GroupId>,
}

/// The column family of per-group settings (see "Group settings" above).
const GROUP_SETTINGS_CF: &str = "group_settings";

/// Most index entries one [`QueueStore::index_range`] call returns.
pub const INDEX_RANGE_MAX: usize = 4096;

/// Most checkpoints a group keeps above its trim point (the state machine drops the oldest
/// beyond it); with the one at the trim point, a group holds at most `CHECKPOINTS_MAX + 1`.
pub const CHECKPOINTS_MAX: usize = 64;

/// Every queue and consumer offset of a group: what a checkpoint copies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupOffsets {
    /// `(queue, next offset)` by ascending queue.
    pub next: Vec<(u32, u64)>,
    /// `(queue, start offset)` by ascending queue, for the queues ever trimmed.
    pub start: Vec<(u32, u64)>,
    /// `(consumer group, queue, committed offset)` in key order (by name length, name, queue).
    pub consumers: Vec<(String, u32, u64)>,
}

/// Every receive cursor and in-flight record of a group: what a checkpoint copies of its
/// consumers' receives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiveState {
    /// `(consumer group, queue, cursor)` in key order.
    pub cursors: Vec<(String, u32, u64)>,
    /// `(consumer group, queue, offset, record)` in key order.
    pub in_flight: Vec<(String, u32, u64, InFlight)>,
}

/// How many offsets a group holds: what the bounds on queues and consumer groups count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OffsetCounts {
    /// Queues with a next offset.
    pub queues: usize,
    /// `(consumer group, queue)` pairs with a committed offset.
    pub consumer_offsets: usize,
    /// Consumer groups with a committed offset on the queue asked about.
    pub consumer_groups_on_queue: usize,
}

impl OffsetCounts {
    /// The offsets a checkpoint of the group copies: next and consumer offsets.
    pub fn checkpoint_items(&self) -> usize {
        self.queues + self.consumer_offsets
    }
}

/// What the store knows of each group beyond RocksDB's contents.
#[derive(Default)]
struct Progress {
    /// Each group's applied index, as written (possibly not yet flushed).
    applied: HashMap<GroupId, u64>,
    /// Each group's applied index as of the last flush: what a crash would leave.
    durable: HashMap<GroupId, u64>,
    /// Groups with an import begun and not finished.
    importing: HashSet<GroupId>,
}

/// The derived state of every group on this broker, over one RocksDB. Shared by reference
/// across threads; calls for one group must come from one place at a time (its state machine),
/// calls for different groups may run concurrently.
pub struct QueueStore {
    db: DB,
    /// WAL disabled: the Raft log is the store's log.
    write_options: WriteOptions,
    /// `write_options`, failing a write at once where RocksDB would stall it.
    write_options_no_stall: WriteOptions,
    /// Held across every write so that `flush` sees, for each group, an applied index whose
    /// write has completed (RocksDB writes are serialised internally anyway, and take
    /// microseconds with the WAL off).
    progress: Mutex<Progress>,
    /// One flush at a time, so the durable indexes only move forward.
    flushing: Mutex<()>,
}

impl std::fmt::Debug for QueueStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueStore").field("path", &self.db.path()).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data consistent before any call that can panic.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl QueueStore {
    /// Opens (or creates) the store in `dir`. Each group's applied index (and durable applied
    /// index) is what RocksDB holds; groups whose import was cut off by a crash are deleted.
    pub fn open(dir: impl AsRef<Path>, options: &StoreOptions) -> Result<(Self, OpenReport), StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_atomic_flush(true);
        opts.set_write_buffer_size(options.memtable_bytes);
        // RocksDB's info LOG files: keep a bounded number of them.
        opts.set_keep_log_file_num(4);
        opts.create_missing_column_families(true);
        let db = DB::open_cf(&opts, dir.as_ref(), [DEFAULT_COLUMN_FAMILY_NAME, GROUP_SETTINGS_CF]).map_err(StoreError::db("open"))?;
        let mut write_options = WriteOptions::default();
        write_options.disable_wal(true);
        let mut write_options_no_stall = WriteOptions::default();
        write_options_no_stall.disable_wal(true);
        write_options_no_stall.set_no_slowdown(true);
        let store = Self { db, write_options, write_options_no_stall, progress: Mutex::new(Progress::default()), flushing: Mutex::new(()) };
        let report = store.recover()?;
        Ok((store, report))
    }

    /// Reads every group's applied index and import marker: two seeks per group, however much
    /// data the group holds.
    fn recover(&self) -> Result<OpenReport, StoreError> {
        let mut report = OpenReport::default();
        let mut interrupted = Vec::new();
        let mut progress = lock(&self.progress);
        let mut it = self.db.raw_iterator();
        it.seek_to_first();
        // Each pass moves past one group's range, so this ends after the last group.
        while let Some(first) = it.key() {
            let Some(group) = keys::group_of(first) else {
                return Err(StoreError::Corrupt { key: keys::describe(first), reason: "key shorter than a group id".into() });
            };
            let first_key = first.to_vec();
            it.seek(Item::Importing.key(group));
            let importing = it.key() == Some(Item::Importing.key(group).as_slice());
            it.seek(Item::Applied.key(group));
            let applied = match it.item() {
                Some((k, v)) if k == Item::Applied.key(group).as_slice() => Some(decode_at(k, v, value::decode_u64)?),
                _ => None,
            };
            match (importing, applied) {
                (true, _) => interrupted.push(group),
                (false, Some(a)) => {
                    progress.applied.insert(group, a);
                    progress.durable.insert(group, a);
                }
                (false, None) => {
                    return Err(StoreError::Corrupt {
                        key: keys::describe(&first_key),
                        reason: format!("group {group} has data but no applied index"),
                    });
                }
            }
            it.seek(keys::group_end(group));
        }
        it.status().map_err(StoreError::db("scan groups"))?;
        drop(it);
        for &group in &interrupted {
            tracing::warn!(group, "deleting a group whose import a crash cut off");
            let mut wb = WriteBatch::default();
            wb.delete_range(keys::group_start(group).to_vec(), keys::group_end(group));
            self.db.write_opt(wb, &self.write_options).map_err(StoreError::db("delete interrupted import"))?;
        }
        report.groups = progress.applied.len();
        report.interrupted_imports = interrupted;
        Ok(report)
    }

    /// Writes `batch`, the effects of `group`'s entries up to `batch.applied_index()`, in one
    /// write batch with the new applied index. Not durable until the next flush.
    pub fn apply(&self, group: GroupId, batch: &ApplyBatch) -> Result<(), StoreError> {
        self.apply_with(group, batch, &self.write_options).map(|_| ())
    }

    /// [`Self::apply`], unless RocksDB would make the write wait (a write stall while flushes
    /// or compactions catch up): then nothing is written and this returns `false`, at once, so
    /// an async caller can do it on a blocking thread instead.
    pub fn apply_unless_stalled(&self, group: GroupId, batch: &ApplyBatch) -> Result<bool, StoreError> {
        self.apply_with(group, batch, &self.write_options_no_stall)
    }

    fn apply_with(&self, group: GroupId, batch: &ApplyBatch, options: &WriteOptions) -> Result<bool, StoreError> {
        let wb = batch.to_write_batch(group);
        let mut progress = lock(&self.progress);
        if progress.importing.contains(&group) {
            return Err(StoreError::Importing { group });
        }
        if let Some(&applied) = progress.applied.get(&group)
            && batch.applied_index() <= applied
        {
            return Err(StoreError::NotAfterApplied { group, applied, index: batch.applied_index() });
        }
        match self.db.write_opt(wb, options) {
            Ok(()) => {}
            Err(e) if e.kind() == rocksdb::ErrorKind::Incomplete => return Ok(false),
            Err(e) => return Err(StoreError::db("apply")(e)),
        }
        progress.applied.insert(group, batch.applied_index());
        Ok(true)
    }

    /// Up to `max` (at most [`INDEX_RANGE_MAX`]) consecutive index entries of `queue`, from
    /// `from_offset` on, with their offsets.
    pub fn index_range(&self, group: GroupId, queue: u32, from_offset: u64, max: usize) -> Result<Vec<(u64, IndexEntry)>, StoreError> {
        let range = (Item::Index { queue, offset: from_offset }.key(group), keys::queue_index_end(group, queue));
        self.read_run(group, range, max, IndexEntry::decode, |item| match item {
            Item::Index { queue: q, offset } if q == queue => Some(offset),
            _ => None,
        })
        .map_err(|e| e.or_found_in(format!("the index range of group {group} queue {queue}")))
    }

    /// Up to `max` (at most [`INDEX_RANGE_MAX`]) values of the keys of `group` in `range`
    /// (first key, exclusive end), with the offset `offset_of` reads off each key; a key it
    /// names no offset of is corruption.
    fn read_run<T>(
        &self,
        group: GroupId,
        (from, until): (Vec<u8>, Vec<u8>),
        max: usize,
        decode: impl Fn(&[u8]) -> Result<T, String>,
        offset_of: impl Fn(Item) -> Option<u64>,
    ) -> Result<Vec<(u64, T)>, RunError> {
        let max = max.min(INDEX_RANGE_MAX);
        let mut out = Vec::with_capacity(max.min(256));
        if max == 0 {
            return Ok(out);
        }
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(until);
        let mut it = self.db.raw_iterator_opt(ro);
        it.seek(from);
        while out.len() < max {
            let Some((k, v)) = it.item() else { break };
            let offset = match keys::parse(k) {
                Ok((g, item)) if g == group => offset_of(item),
                _ => None,
            };
            let Some(offset) = offset else { return Err(RunError::Misplaced(keys::describe(k))) };
            out.push((offset, decode_at(k, v, &decode)?));
            it.next();
        }
        it.status().map_err(StoreError::db("read a run of keys"))?;
        Ok(out)
    }

    /// The offset the next message of `queue` will get: 0 for a queue never written.
    pub fn next_offset(&self, group: GroupId, queue: u32) -> Result<u64, StoreError> {
        Ok(self.get_u64(&Item::NextOffset { queue }.key(group))?.unwrap_or(0))
    }

    /// The first offset of `queue` still held: everything below it was trimmed (0 for a queue
    /// never trimmed). Reads below it find nothing.
    pub fn start_offset(&self, group: GroupId, queue: u32) -> Result<u64, StoreError> {
        Ok(self.get_u64(&Item::StartOffset { queue }.key(group))?.unwrap_or(0))
    }

    /// The index entry of `offset` in `queue`, if held.
    pub fn index_entry(&self, group: GroupId, queue: u32, offset: u64) -> Result<Option<IndexEntry>, StoreError> {
        let key = Item::Index { queue, offset }.key(group);
        self.get(&key, IndexEntry::decode)
    }

    /// The Raft log index of the group's last trim, if it was ever trimmed.
    pub fn trim_point(&self, group: GroupId) -> Result<Option<u64>, StoreError> {
        self.get_u64(&Item::TrimPoint.key(group))
    }

    /// The group's checkpoint at `log_index`, if it holds one.
    pub fn checkpoint(&self, group: GroupId, log_index: u64) -> Result<Option<Checkpoint>, StoreError> {
        let key = Item::Checkpoint { log_index }.key(group);
        self.get(&key, |v| decode_checkpoint(log_index, v))
    }

    /// The log indexes of the group's checkpoints, ascending. More than
    /// [`CHECKPOINTS_MAX`] + 1 is damage (the state machine never keeps more).
    pub fn checkpoint_indexes(&self, group: GroupId) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::new();
        let kind = Item::Checkpoint { log_index: 0 };
        self.scan_kind(group, &kind, |key, item, _| match item {
            Item::Checkpoint { .. } if out.len() > CHECKPOINTS_MAX => {
                Err(StoreError::Corrupt { key: keys::describe(key), reason: format!("more than {} checkpoints", CHECKPOINTS_MAX + 1) })
            }
            Item::Checkpoint { log_index } => {
                out.push(log_index);
                Ok(true)
            }
            _ => Err(StoreError::Corrupt { key: keys::describe(key), reason: "found among checkpoints".into() }),
        })?;
        Ok(out)
    }

    /// The checkpoint at the group's trim point (the group's snapshot), read with the trim point
    /// through one RocksDB snapshot, so a trim applied meanwhile cannot pair one trim point with
    /// another's checkpoint. `None` if the group was never trimmed.
    pub fn trim_checkpoint(&self, group: GroupId) -> Result<Option<Checkpoint>, StoreError> {
        let snapshot = self.db.snapshot();
        let key = Item::TrimPoint.key(group);
        let Some(v) = snapshot.get_pinned(&key).map_err(StoreError::db("get"))? else {
            return Ok(None);
        };
        let log_index = decode_at(&key, &v, value::decode_u64)?;
        let key = Item::Checkpoint { log_index }.key(group);
        match snapshot.get_pinned(&key).map_err(StoreError::db("get"))? {
            Some(v) => decode_at(&key, &v, |v| decode_checkpoint(log_index, v)).map(Some),
            None => Err(StoreError::Corrupt { key: keys::describe(&key), reason: "missing: the group's trim point names it".into() }),
        }
    }

    /// Every next, start and consumer offset of the group, or `None` if it holds more than
    /// `items_max` next and consumer offsets together (the scan stops there).
    pub fn group_offsets(&self, group: GroupId, items_max: usize) -> Result<Option<GroupOffsets>, StoreError> {
        let mut out = GroupOffsets::default();
        let mut items = 0usize;
        let room = |items: &mut usize| {
            *items += 1;
            *items <= items_max
        };
        let complete =
            self.scan_kind(group, &Item::NextOffset { queue: 0 }, |key, item, v| match item {
                Item::NextOffset { queue } => {
                    out.next.push((queue, decode_at(key, v, value::decode_u64)?));
                    Ok(room(&mut items))
                }
                _ => Err(StoreError::Corrupt { key: keys::describe(key), reason: "found among next offsets".into() }),
            })? && self.scan_kind(group, &Item::ConsumerOffset { consumer_group: String::new(), queue: 0 }, |key, item, v| match item {
                Item::ConsumerOffset { consumer_group, queue } => {
                    out.consumers.push((consumer_group, queue, decode_at(key, v, value::decode_u64)?));
                    Ok(room(&mut items))
                }
                _ => Err(StoreError::Corrupt { key: keys::describe(key), reason: "found among consumer offsets".into() }),
            })?;
        if !complete {
            return Ok(None);
        }
        // At most one start offset per queue with a next offset, so bounded by the above.
        self.scan_kind(group, &Item::StartOffset { queue: 0 }, |key, item, v| match item {
            Item::StartOffset { queue } if out.start.len() < out.next.len() => {
                out.start.push((queue, decode_at(key, v, value::decode_u64)?));
                Ok(true)
            }
            _ => Err(StoreError::Corrupt { key: keys::describe(key), reason: "more start offsets than queues".into() }),
        })?;
        Ok(Some(out))
    }

    /// The group's [`OffsetCounts`], `queue` the one whose consumer groups are counted. The scan
    /// stops past `items_max` offsets (the counts are then at least that), so its cost is
    /// bounded whatever the store holds.
    pub fn offset_counts(&self, group: GroupId, queue: u32, items_max: usize) -> Result<OffsetCounts, StoreError> {
        let mut out = OffsetCounts::default();
        self.scan_kind(group, &Item::NextOffset { queue: 0 }, |_, _, _| {
            out.queues += 1;
            Ok(out.checkpoint_items() <= items_max)
        })?;
        self.scan_kind(group, &Item::ConsumerOffset { consumer_group: String::new(), queue: 0 }, |_, item, _| {
            out.consumer_offsets += 1;
            if matches!(item, Item::ConsumerOffset { queue: q, .. } if q == queue) {
                out.consumer_groups_on_queue += 1;
            }
            Ok(out.checkpoint_items() <= items_max)
        })?;
        Ok(out)
    }

    /// Calls `each` with every key of `group` of `kind`'s kind, in key order, while it returns
    /// `true`; returns whether the scan reached the end of the kind's range.
    fn scan_kind(
        &self,
        group: GroupId,
        kind: &Item,
        mut each: impl FnMut(&[u8], Item, &[u8]) -> Result<bool, StoreError>,
    ) -> Result<bool, StoreError> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(keys::kind_end(group, kind));
        let mut it = self.db.raw_iterator_opt(ro);
        it.seek(keys::kind_start(group, kind));
        // Ends at the kind's upper bound, or when `each` says stop.
        while let Some((k, v)) = it.item() {
            let item = match keys::parse(k) {
                Ok((g, item)) if g == group => item,
                Ok(_) => return Err(StoreError::Corrupt { key: keys::describe(k), reason: format!("found inside group {group}'s range") }),
                Err(reason) => return Err(StoreError::Corrupt { key: keys::describe(k), reason }),
            };
            if !each(k, item, v)? {
                return Ok(false);
            }
            it.next();
        }
        it.status().map_err(StoreError::db("scan"))?;
        Ok(true)
    }

    /// Every receive cursor and in-flight record of `group`, or `None` if it holds more than
    /// `items_max` of them together (the scan stops there).
    pub fn receive_state(&self, group: GroupId, items_max: usize) -> Result<Option<ReceiveState>, StoreError> {
        let mut out = ReceiveState::default();
        let room = |out: &ReceiveState| out.cursors.len() + out.in_flight.len() <= items_max;
        let complete = self.scan_kind(group, &Item::PopCursor { consumer_group: String::new(), queue: 0 }, |key, item, v| match item {
            Item::PopCursor { consumer_group, queue } => {
                out.cursors.push((consumer_group, queue, decode_at(key, v, value::decode_u64)?));
                Ok(room(&out))
            }
            _ => Err(StoreError::Corrupt { key: keys::describe(key), reason: "found among receive cursors".into() }),
        })? && self.scan_kind(
            group,
            &Item::InFlight { consumer_group: String::new(), queue: 0, offset: 0 },
            |key, item, v| match item {
                Item::InFlight { consumer_group, queue, offset } => {
                    out.in_flight.push((consumer_group, queue, offset, decode_at(key, v, InFlight::decode)?));
                    Ok(room(&out))
                }
                _ => Err(StoreError::Corrupt { key: keys::describe(key), reason: "found among in-flight records".into() }),
            },
        )?;
        Ok(complete.then_some(out))
    }

    /// How many receive cursors and in-flight records `group` holds: the count its applies keep
    /// ([`ApplyBatch::set_receive_items`]), or, for a group that never kept one (one installed
    /// from a checkpoint), counted, the counting stopping just past `items_max`.
    pub fn receive_items(&self, group: GroupId, items_max: usize) -> Result<usize, StoreError> {
        if let Some(count) = self.get_u64(&Item::ReceiveItems.key(group))? {
            return Ok(usize::try_from(count).unwrap_or(usize::MAX));
        }
        let mut count = 0usize;
        let mut counting = |_: &[u8], _: Item, _: &[u8]| {
            count += 1;
            Ok(count <= items_max)
        };
        if self.scan_kind(group, &Item::PopCursor { consumer_group: String::new(), queue: 0 }, &mut counting)? {
            self.scan_kind(group, &Item::InFlight { consumer_group: String::new(), queue: 0, offset: 0 }, &mut counting)?;
        }
        Ok(count)
    }

    /// The offset below which `consumer_group` has no in-flight record on `queue` (0 if never
    /// set): where scans of its in-flight records start, past what acknowledgements deleted.
    pub fn receive_floor(&self, group: GroupId, consumer_group: &str, queue: u32) -> Result<u64, StoreError> {
        keys::check_consumer_group(consumer_group)?;
        Ok(self.get_u64(&Item::ReceiveFloor { consumer_group: consumer_group.to_string(), queue }.key(group))?.unwrap_or(0))
    }

    /// `consumer_group`'s committed offset on `queue`, if it ever committed one.
    pub fn consumer_offset(&self, group: GroupId, consumer_group: &str, queue: u32) -> Result<Option<u64>, StoreError> {
        keys::check_consumer_group(consumer_group)?;
        self.get_u64(&Item::ConsumerOffset { consumer_group: consumer_group.to_string(), queue }.key(group))
    }

    /// The next offset of `queue` never yet delivered to `consumer_group` by a receive, if a
    /// receive of the group ever delivered one.
    pub fn pop_cursor(&self, group: GroupId, consumer_group: &str, queue: u32) -> Result<Option<u64>, StoreError> {
        keys::check_consumer_group(consumer_group)?;
        self.get_u64(&Item::PopCursor { consumer_group: consumer_group.to_string(), queue }.key(group))
    }

    /// Up to `max` (at most [`INDEX_RANGE_MAX`]) in-flight records of `consumer_group` on
    /// `queue` at `offsets`, by offset.
    pub fn in_flight(
        &self,
        group: GroupId,
        consumer_group: &str,
        queue: u32,
        offsets: Range<u64>,
        max: usize,
    ) -> Result<Vec<(u64, InFlight)>, StoreError> {
        keys::check_consumer_group(consumer_group)?;
        let item = |offset| Item::InFlight { consumer_group: consumer_group.to_string(), queue, offset };
        self.read_run(group, (item(offsets.start).key(group), item(offsets.end).key(group)), max, InFlight::decode, |found| match found {
            Item::InFlight { consumer_group: cg, queue: q, offset } if q == queue && cg == consumer_group => Some(offset),
            _ => None,
        })
        .map_err(|e| e.or_found_in(format!("the in-flight records of {consumer_group:?} on group {group} queue {queue}")))
    }

    /// `consumer_group`'s in-flight tally on `queue`, if its applies keep one (see
    /// [`InFlightTally`]; a group installed from a checkpoint has none until a receive).
    pub fn in_flight_tally(&self, group: GroupId, consumer_group: &str, queue: u32) -> Result<Option<InFlightTally>, StoreError> {
        keys::check_consumer_group(consumer_group)?;
        let key = Item::InFlightTally { consumer_group: consumer_group.to_string(), queue }.key(group);
        self.get(&key, InFlightTally::decode)
    }

    /// The in-flight record of `consumer_group` for `offset` of `queue`, if the message is in flight.
    pub fn in_flight_record(&self, group: GroupId, consumer_group: &str, queue: u32, offset: u64) -> Result<Option<InFlight>, StoreError> {
        keys::check_consumer_group(consumer_group)?;
        let key = Item::InFlight { consumer_group: consumer_group.to_string(), queue, offset }.key(group);
        self.get(&key, InFlight::decode)
    }

    /// The raft state last set for `group` with [`ApplyBatch::set_raft_state`] (or imported),
    /// written in the same batch as the effects it describes; `None` if none was ever set.
    pub fn raft_state(&self, group: GroupId) -> Result<Option<Vec<u8>>, StoreError> {
        let key = Item::RaftState.key(group);
        self.get(&key, value::decode_blob)
    }

    /// The last Raft log index applied to `group` (written, maybe not yet flushed).
    pub fn applied_index(&self, group: GroupId) -> Option<u64> {
        lock(&self.progress).applied.get(&group).copied()
    }

    /// The applied index of `group` that the last [`Self::flush`] made durable (or that open
    /// found): a crash now leaves the group at it or later. A group deleted or being imported
    /// keeps it until the next flush, since a crash before then brings the flushed group back.
    /// The group's Raft log may be purged up to it, never past.
    pub fn durable_applied_index(&self, group: GroupId) -> Option<u64> {
        lock(&self.progress).durable.get(&group).copied()
    }

    /// The groups with state in the store (an applied index), in ascending order.
    pub fn groups(&self) -> Vec<GroupId> {
        let mut ids: Vec<_> = lock(&self.progress).applied.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Flushes everything written so far to SST files (synced) and, once done, makes each
    /// group's durable applied index the applied index it had when the flush began. A group
    /// deleted before the flush began has none any more.
    pub fn flush(&self) -> Result<(), StoreError> {
        let _one_at_a_time = lock(&self.flushing);
        // Taken before the flush: every write it counts has completed, so the flush covers it.
        let applied = lock(&self.progress).applied.clone();
        let mut fo = FlushOptions::default();
        fo.set_wait(true);
        self.db.flush_opt(&fo).map_err(StoreError::db("flush"))?;
        lock(&self.progress).durable = applied;
        Ok(())
    }

    /// Deletes all of `group`'s data in one write batch. Durable with the next flush; until
    /// then a crash brings the group back as it was flushed.
    pub fn delete_group(&self, group: GroupId) -> Result<(), StoreError> {
        let mut wb = WriteBatch::default();
        wb.delete_range(keys::group_start(group).to_vec(), keys::group_end(group));
        let mut progress = lock(&self.progress);
        self.db.write_opt(wb, &self.write_options).map_err(StoreError::db("delete group"))?;
        progress.applied.remove(&group);
        progress.importing.remove(&group);
        Ok(())
    }

    /// The checkpoint interval recorded for `group` by [`Self::record_checkpoint_interval`], if
    /// any.
    pub fn checkpoint_interval(&self, group: GroupId) -> Result<Option<u64>, StoreError> {
        let key = group.to_be_bytes();
        match self.db.get_pinned_cf(self.settings_cf()?, key).map_err(StoreError::db("get group settings"))? {
            None => Ok(None),
            Some(v) => decode_at(&key, &v, value::decode_u64).map(Some),
        }
    }

    /// Records, durably before returning (a synced WAL write), the checkpoint interval of each
    /// listed group, replacing what was recorded.
    pub fn record_checkpoint_interval(&self, intervals: &[(GroupId, u64)]) -> Result<(), StoreError> {
        let cf = self.settings_cf()?;
        let mut wb = WriteBatch::default();
        for (group, interval) in intervals {
            wb.put_cf(cf, group.to_be_bytes(), value::encode_u64(*interval));
        }
        let mut synced = WriteOptions::default();
        synced.set_sync(true);
        self.db.write_opt(wb, &synced).map_err(StoreError::db("record group settings"))
    }

    fn settings_cf(&self) -> Result<&ColumnFamily, StoreError> {
        self.db
            .cf_handle(GROUP_SETTINGS_CF)
            .ok_or_else(|| StoreError::Corrupt { key: GROUP_SETTINGS_CF.into(), reason: "column family missing".into() })
    }

    fn get_u64(&self, key: &[u8]) -> Result<Option<u64>, StoreError> {
        self.get(key, value::decode_u64)
    }

    /// The value at `key` (default column family), decoded; a value `decode` refuses is corrupt.
    fn get<T>(&self, key: &[u8], decode: impl FnOnce(&[u8]) -> Result<T, String>) -> Result<Option<T>, StoreError> {
        match self.db.get_pinned(key).map_err(StoreError::db("get"))? {
            None => Ok(None),
            Some(v) => decode_at(key, &v, decode).map(Some),
        }
    }
}

/// Why [`QueueStore::read_run`] failed: the store's error, or a key inside the run that is not
/// one of its kind (the caller names the run).
enum RunError {
    Store(StoreError),
    Misplaced(String),
}

impl From<StoreError> for RunError {
    fn from(e: StoreError) -> Self {
        RunError::Store(e)
    }
}

impl RunError {
    fn or_found_in(self, run: String) -> StoreError {
        match self {
            RunError::Store(e) => e,
            RunError::Misplaced(key) => StoreError::Corrupt { key, reason: format!("found inside {run}") },
        }
    }
}

/// A checkpoint value stored under `log_index`: its own log index must be the key's.
pub(crate) fn decode_checkpoint(log_index: u64, value: &[u8]) -> Result<Checkpoint, String> {
    let checkpoint = Checkpoint::decode(value)?;
    if checkpoint.log_index != log_index {
        return Err(format!("holds the checkpoint at log index {}", checkpoint.log_index));
    }
    Ok(checkpoint)
}

/// Decodes a stored value, naming its key when it is damaged.
fn decode_at<T>(key: &[u8], value: &[u8], decode: impl FnOnce(&[u8]) -> Result<T, String>) -> Result<T, StoreError> {
    decode(value).map_err(|reason| StoreError::Corrupt { key: keys::describe(key), reason })
}

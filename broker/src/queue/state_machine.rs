//! openraft's state machine for one queue group, over the broker's [`QueueStore`].
//!
//! # Guarantees
//!
//! - Each applied entry (command, blank or membership) is one store write batch holding its
//!   effects and the group's raft state (its log id and the membership as of it), so the store
//!   is always exactly at some applied entry, and [`RaftStateMachine::applied_state`] names it.
//! - A write is durable only with the store's next flush (the store's WAL is off). After a crash
//!   the group reports the flushed point, or a later one, and openraft re-applies the rest of
//!   the committed log from there (`RaftLogStore` persists the committed log id).
//! - Building or installing a snapshot flushes the store: openraft purges the Raft log up to a
//!   snapshot's index, and the entries above the store's durable point must still be in the
//!   log after a crash.
//!
//! # Snapshots: the checkpoint at the trim point
//!
//! Message bodies live only in the Raft log, so a snapshot must never need a log entry at or
//! below its own index: openraft purges the log up to a snapshot and replicates only the entries
//! after it to a replica that installs it. A snapshot of the applied state would carry index
//! entries pointing into the purged log. The group's snapshot is therefore the checkpoint at its
//! trim point `K` (see [`super::apply`]): after the trim, nothing in the store points at an entry
//! at or below `K`, and the checkpoint is the group's exact queue offsets, consumer offsets and
//! raft state as of `K`. Its meta names `K` (and the membership as of `K`), below the applied
//! index; openraft accepts that (a snapshot need only be at or below the applied log id, and a
//! log is purged only up to a snapshot).
//!
//! - [`RaftSnapshotBuilder::build_snapshot`] reads the trim point's checkpoint, then flushes the
//!   store (in that order: the flush makes the trim durable before openraft purges up to it), and
//!   returns it. A group never trimmed has no snapshot yet: the builder returns an empty one
//!   (no last log id), which openraft ignores, and `try_create_snapshot_builder(false)` declines.
//! - [`RaftStateMachine::get_current_snapshot`] is the same checkpoint, read from the store: it
//!   survives restarts and is always the one the store's data goes with.
//! - Installing replaces the group's data with the checkpoint's records
//!   ([`crate::store::checkpoint_export`]: offsets, start offsets at the next offsets, raft state,
//!   trim point, the checkpoint) through the store's crash-atomic import, then flushes. The
//!   installer then applies the entries after `K` from replication, assigning the same offsets
//!   (they follow from the next offsets at `K`) and making the same decisions on commits
//!   (consumer offsets at `K` are exact). It lacks what the trim that made `K` the trim point
//!   removes anyway (the messages up to `K`, the checkpoints below `K`), so it answers that
//!   trim, when it replays it, with `Rejected` where the leader trimmed: both end in the same
//!   state.
//!
//! Buffer layout (the transport's `Cursor<Vec<u8>>`):
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `RMQGSNP1` |
//! | 8..12 | meta length m, u32 LE, at most [`RAFT_STATE_BYTES_MAX`] |
//! | 12..12+m | meta, bincode |
//! | … | records, each: key length u32 LE, value length u32 LE, key (without the group id), value (as stored, with its own checksum) |
//! | last 4 | CRC32C of every byte before it |
//!
//! The meta is decoded from the checkpoint's own raft state, so it describes exactly the data.
//! A checkpoint is bounded ([`crate::store::CHECKPOINT_ITEMS_MAX`] offsets), so a snapshot is a
//! few MiB at most, whatever the number of messages held.

use std::io::{self, Cursor};
use std::ops::Range;
use std::sync::Arc;

use futures::{FutureExt, Stream, TryStreamExt};
use openraft::alias::{EntryOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use raft_log::GroupLog;
use serde::{Deserialize, Serialize};

use super::apply::{EntryEffects, GroupView, QueueGroupOptions, apply_command, record_checkpoint};
use super::command::{GroupReply, NewMessage, QueueGroupConfig};
use crate::raft::service::SNAPSHOT_BYTES_MAX;
use crate::store::{
    Checkpoint, EXPORT_PAGE_BYTES_MAX, ExportPage, GroupId, GroupOffsets, GroupRecord, InFlight, InFlightTally, OffsetCounts, QueueStore,
    RAFT_STATE_BYTES_MAX, ReceiveState, StoreError, checkpoint_export,
};

type C = QueueGroupConfig;
type LogId = LogIdOf<C>;
type Membership = StoredMembershipOf<C>;
type Meta = SnapshotMetaOf<C>;
type Snapshot = SnapshotOf<C, Cursor<Vec<u8>>>;

const MAGIC: &[u8; 8] = b"RMQGSNP1";
/// Entries applied by one blocking task at most, and bytes of their messages (roughly one
/// largest entry): bounds what one task holds and how long the next batch waits.
const APPLY_BATCH_ENTRIES_MAX: usize = 64;
const APPLY_BATCH_BYTES_MAX: usize = 8 << 20;

/// How [`QueueStateMachine::write`] writes.
#[derive(Debug, Clone, Copy)]
enum Write {
    /// Whatever it takes (on a blocking thread).
    Always,
    /// Only if RocksDB would not stall the write (on an async worker).
    UnlessStalled,
}

/// The bytes of an entry's messages, each counted whole; 0 for anything else.
fn command_bytes(entry: &EntryOf<C>) -> usize {
    match &entry.payload {
        EntryPayload::Normal(command) => command.appended().map_or(0, |(_, messages)| messages.iter().map(NewMessage::encoded_bytes).sum()),
        _ => 0,
    }
}
/// Bytes of a snapshot imported per write batch.
const PAGE_BYTES: usize = 4 << 20;

/// What can go wrong in the state machine; openraft sees it as an `io::Error` and stops the
/// group (going on after a failed apply would let replicas diverge).
#[derive(Debug, thiserror::Error)]
pub enum StateMachineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store's raft state of the group does not decode, or disagrees with its applied index.
    #[error("group {group}: bad raft state: {reason}")]
    RaftState { group: GroupId, reason: String },
    /// A snapshot buffer that is not one this module built, or that disagrees with its meta.
    #[error("group {group}: bad snapshot: {reason}")]
    Snapshot { group: GroupId, reason: String },
    /// The snapshot does not fit one buffer.
    #[error("group {group}: snapshot over {max} bytes")]
    SnapshotTooLarge { group: GroupId, max: u64 },
    #[error("group {group}: blocking task failed: {reason}")]
    Task { group: GroupId, reason: String },
}

impl From<StateMachineError> for io::Error {
    fn from(e: StateMachineError) -> Self {
        let kind = match e {
            StateMachineError::RaftState { .. } | StateMachineError::Snapshot { .. } => io::ErrorKind::InvalidData,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// The group's raft state as stored (see [`QueueStore::raft_state`]).
#[derive(Debug, Serialize, Deserialize)]
struct RaftState {
    applied: LogId,
    membership: Membership,
}

fn encode_bounded<T: Serialize>(value: &T, group: GroupId, what: &str) -> Result<Vec<u8>, StateMachineError> {
    let bytes = bincode::serialize(value).map_err(|e| StateMachineError::RaftState { group, reason: format!("encoding {what}: {e}") })?;
    if bytes.len() > RAFT_STATE_BYTES_MAX {
        return Err(StateMachineError::RaftState {
            group,
            reason: format!("{what} of {} bytes, at most {RAFT_STATE_BYTES_MAX}", bytes.len()),
        });
    }
    Ok(bytes)
}

fn decode_bounded<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    use bincode::Options;
    // The limit keeps a damaged length prefix from allocating without bound.
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(RAFT_STATE_BYTES_MAX as u64)
        .deserialize(bytes)
        .map_err(|e| e.to_string())
}

/// The state machine of one queue group. Clones share the group (a clone is the snapshot
/// builder); every state, the current snapshot included, is in the store.
#[derive(Clone)]
pub struct QueueStateMachine {
    store: Arc<QueueStore>,
    group: GroupId,
    options: QueueGroupOptions,
    /// The group's log in this process: an entry is applied only once it is durable there.
    log: Option<GroupLog>,
}

/// One record of a snapshot buffer: key (without the group id) and value.
type Record<'a> = (&'a [u8], &'a [u8]);

/// Reads of the group's state for [`apply_command`], straight from the store: every entry is
/// written before the next one is decided, so the store is the state as of the previous entry.
/// Also what a leader reads to judge a receive before proposing it ([`super::receive_outlook`]).
pub struct StoreView<'a> {
    store: &'a QueueStore,
    group: GroupId,
}

impl<'a> StoreView<'a> {
    pub fn new(store: &'a QueueStore, group: GroupId) -> Self {
        Self { store, group }
    }
}

impl GroupView for StoreView<'_> {
    fn next_offset(&self, queue: u32) -> Result<u64, StoreError> {
        self.store.next_offset(self.group, queue)
    }

    fn consumer_offset(&self, consumer_group: &str, queue: u32) -> Result<Option<u64>, StoreError> {
        self.store.consumer_offset(self.group, consumer_group, queue)
    }

    fn pop_cursor(&self, consumer_group: &str, queue: u32) -> Result<Option<u64>, StoreError> {
        self.store.pop_cursor(self.group, consumer_group, queue)
    }

    fn in_flight(&self, consumer_group: &str, queue: u32, offsets: Range<u64>, max: usize) -> Result<Vec<(u64, InFlight)>, StoreError> {
        self.store.in_flight(self.group, consumer_group, queue, offsets, max)
    }

    fn in_flight_tally(&self, consumer_group: &str, queue: u32) -> Result<Option<InFlightTally>, StoreError> {
        self.store.in_flight_tally(self.group, consumer_group, queue)
    }

    fn receive_floor(&self, consumer_group: &str, queue: u32) -> Result<u64, StoreError> {
        self.store.receive_floor(self.group, consumer_group, queue)
    }

    fn receive_items(&self, items_max: usize) -> Result<usize, StoreError> {
        self.store.receive_items(self.group, items_max)
    }

    fn in_flight_record(&self, consumer_group: &str, queue: u32, offset: u64) -> Result<Option<InFlight>, StoreError> {
        self.store.in_flight_record(self.group, consumer_group, queue, offset)
    }

    fn receive_state(&self, items_max: usize) -> Result<Option<ReceiveState>, StoreError> {
        self.store.receive_state(self.group, items_max)
    }

    fn start_offset(&self, queue: u32) -> Result<u64, StoreError> {
        self.store.start_offset(self.group, queue)
    }

    fn trim_point(&self) -> Result<Option<u64>, StoreError> {
        self.store.trim_point(self.group)
    }

    fn checkpoint(&self, log_index: u64) -> Result<Option<Checkpoint>, StoreError> {
        self.store.checkpoint(self.group, log_index)
    }

    fn checkpoint_indexes(&self) -> Result<Vec<u64>, StoreError> {
        self.store.checkpoint_indexes(self.group)
    }

    fn group_offsets(&self, items_max: usize) -> Result<Option<GroupOffsets>, StoreError> {
        self.store.group_offsets(self.group, items_max)
    }

    fn offset_counts(&self, queue: u32, items_max: usize) -> Result<OffsetCounts, StoreError> {
        self.store.offset_counts(self.group, queue, items_max)
    }
}

impl QueueStateMachine {
    /// The state machine of `group` over `store` with the default [`QueueGroupOptions`]; it
    /// takes up where the store's raft state of the group is.
    pub fn new(store: Arc<QueueStore>, group: GroupId) -> Self {
        Self::with_options(store, group, QueueGroupOptions::default())
    }

    /// [`Self::new`] with `options`, which every replica of the group must share.
    pub fn with_options(store: Arc<QueueStore>, group: GroupId, options: QueueGroupOptions) -> Self {
        Self { store, group, options, log: None }
    }

    /// Applies each entry only once `log` (the group's Raft log in this process) has it durable.
    ///
    /// openraft applies what the cluster committed and this replica accepted, which can be ahead
    /// of what this replica fsynced; the store becomes durable on its own schedule (its periodic
    /// flush, a memtable flush), so without this a power cut could leave the store at an applied
    /// index the log no longer has, and openraft would then purge the log up to it on restart:
    /// every message body of this replica gone. A state machine without a log applies at once
    /// (unit tests over a log that is not a raft-log).
    pub fn with_log(mut self, log: GroupLog) -> Self {
        self.log = Some(log);
        self
    }

    pub fn store(&self) -> &Arc<QueueStore> {
        &self.store
    }

    fn raft_state(&self) -> Result<Option<RaftState>, StateMachineError> {
        let group = self.group;
        let Some(bytes) = self.store.raft_state(group)? else {
            if let Some(applied) = self.store.applied_index(group) {
                return Err(StateMachineError::RaftState { group, reason: format!("applied index {applied} but no raft state") });
            }
            return Ok(None);
        };
        let state: RaftState = decode_bounded(&bytes).map_err(|reason| StateMachineError::RaftState { group, reason })?;
        let applied = self.store.applied_index(group);
        if applied != Some(state.applied.index) {
            return Err(StateMachineError::RaftState {
                group,
                reason: format!("raft state at {} but applied index {applied:?}", state.applied),
            });
        }
        Ok(Some(state))
    }

    /// Applies one entry in one store write and returns its reply; `membership` is the group's
    /// membership before the entry, and after it on return. With `Write::UnlessStalled`, an entry
    /// whose write RocksDB would stall is not applied (`None`, nothing changed).
    fn apply_entry(&self, entry: &EntryOf<C>, membership: &mut Membership, write: Write) -> Result<Option<GroupReply>, StateMachineError> {
        let log_id = entry.log_id;
        let mut after = None;
        let (effects, reply, checkpoint) = match &entry.payload {
            EntryPayload::Blank => (EntryEffects::default(), GroupReply::NoCommand, self.options.records_checkpoint(log_id.index, None)),
            EntryPayload::Normal(command) => {
                let view = StoreView { store: &self.store, group: self.group };
                let (effects, reply) = apply_command(&view, log_id.index, command)?;
                (effects, reply, self.options.records_checkpoint(log_id.index, Some(command)))
            }
            EntryPayload::Membership(m) => {
                after = Some(Membership::new(Some(log_id), m.clone()));
                (EntryEffects::default(), GroupReply::NoCommand, self.options.records_checkpoint(log_id.index, None))
            }
        };
        let state = RaftState { applied: log_id, membership: after.clone().unwrap_or_else(|| membership.clone()) };
        if !self.write(effects, &state, checkpoint, write)? {
            return Ok(None);
        }
        if let Some(m) = after {
            *membership = m;
        }
        Ok(Some(reply))
    }

    /// Writes one entry's effects, the checkpoint it records (when `checkpoint`:
    /// [`QueueGroupOptions::records_checkpoint`]) and the raft state as of the entry, in one
    /// store write. `false`: `write` was `UnlessStalled` and RocksDB would have stalled it.
    fn write(&self, mut effects: EntryEffects, state: &RaftState, checkpoint: bool, write: Write) -> Result<bool, StateMachineError> {
        let index = state.applied.index;
        let state_bytes = encode_bounded(state, self.group, "raft state")?;
        if checkpoint {
            let view = StoreView { store: &self.store, group: self.group };
            record_checkpoint(&view, index, state_bytes.clone(), &mut effects)?;
        }
        let mut batch = effects.into_batch(index)?;
        batch.set_raft_state(state_bytes)?;
        Ok(match write {
            Write::Always => {
                self.store.apply(self.group, &batch)?;
                true
            }
            Write::UnlessStalled => self.store.apply_unless_stalled(self.group, &batch)?,
        })
    }

    /// Runs store work that may take long (export, import, flush) off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&QueueStateMachine) -> Result<T, StateMachineError> + Send + 'static,
    ) -> Result<T, StateMachineError> {
        let sm = self.clone();
        let group = self.group;
        tokio::task::spawn_blocking(move || f(&sm)).await.map_err(|e| StateMachineError::Task { group, reason: e.to_string() })?
    }

    /// The snapshot of the checkpoint at the trim point (see the module doc), or `None` when the
    /// group was never trimmed. Reads only; see [`Self::build`] for what must follow.
    fn current_snapshot(&self) -> Result<Option<(Meta, Vec<u8>)>, StateMachineError> {
        let group = self.group;
        let Some(checkpoint) = self.store.trim_checkpoint(group)? else {
            return Ok(None);
        };
        let state: RaftState = decode_bounded(&checkpoint.raft_state).map_err(|reason| StateMachineError::RaftState { group, reason })?;
        if state.applied.index != checkpoint.log_index {
            return Err(StateMachineError::RaftState {
                group,
                reason: format!("checkpoint at {} holds the raft state at {}", checkpoint.log_index, state.applied),
            });
        }
        let meta = Meta { last_log_id: Some(state.applied), last_membership: state.membership };
        let mut writer = SnapshotWriter::new(group, &meta)?;
        writer.push_page(&checkpoint_export(&checkpoint))?;
        Ok(Some((meta, writer.finish())))
    }

    /// The current snapshot, made durable: openraft purges the log up to a snapshot it built.
    fn build(&self) -> Result<(Meta, Vec<u8>), StateMachineError> {
        // Read first, then flush: the flush then covers the trim that made this checkpoint the
        // trim point (and everything applied before it). Flushing first would let a trim
        // applied in between be returned, and the log purged up to it, before it is durable;
        // a crash would then bring back a store that needs the purged entries.
        let snapshot = self.current_snapshot()?;
        self.store.flush()?;
        match snapshot {
            Some(s) => Ok(s),
            // Never trimmed: nothing the log may be purged up to. openraft ignores an empty
            // snapshot (it is not newer than any it has).
            None => Ok((Meta::default(), SnapshotWriter::new(self.group, &Meta::default())?.finish())),
        }
    }

    /// Replaces the group's data with a snapshot's, then flushes the store.
    fn install(&self, meta: &Meta, data: &[u8]) -> Result<(), StateMachineError> {
        let group = self.group;
        let bad = |reason: String| StateMachineError::Snapshot { group, reason };
        let (file_meta, mut records) = decode_snapshot(data).map_err(bad)?;
        if &file_meta != meta {
            return Err(bad(format!("its meta {file_meta} is not the one given, {meta}")));
        }
        if meta.last_log_id.is_none() {
            // A snapshot of a group that had applied nothing.
            if records.next().is_some() {
                return Err(bad("records without a last log id".into()));
            }
            self.store.delete_group(group)?;
        } else {
            let mut import = self.store.begin_import(group)?;
            let mut page = ExportPage::default();
            // Ends with the buffer; each write batch holds at most PAGE_BYTES (or one record).
            for record in records {
                let (key, value) = record.map_err(bad)?;
                if !page.records.is_empty() && page.bytes() + key.len() + value.len() > PAGE_BYTES.min(EXPORT_PAGE_BYTES_MAX) {
                    import.write_page(&std::mem::take(&mut page))?;
                }
                page.records.push(GroupRecord { key: key.to_vec(), value: value.to_vec() });
            }
            import.write_page(&page)?;
            import.finish()?;
            let state = self.raft_state()?;
            if state.as_ref().map(|s| Some(&s.applied)) != Some(meta.last_log_id.as_ref()) {
                return Err(bad(format!("its data is at {:?}, its meta at {meta}", state.map(|s| s.applied))));
            }
            // The snapshot is the checkpoint at a trim point: it must install as one, so the
            // installer serves the same snapshot and holds nothing below it.
            let trim_point = self.store.trim_point(group)?;
            if trim_point != meta.last_log_id.as_ref().map(|l| l.index) {
                return Err(bad(format!("its trim point {trim_point:?} is not its last log id, {meta}")));
            }
        }
        self.store.flush()?;
        Ok(())
    }
}

/// Writes a snapshot buffer (layout in the module doc), refusing to grow it past
/// [`SNAPSHOT_BYTES_MAX`].
struct SnapshotWriter {
    group: GroupId,
    out: Vec<u8>,
    /// [`SNAPSHOT_BYTES_MAX`]; smaller in tests.
    bytes_max: u64,
}

impl SnapshotWriter {
    fn new(group: GroupId, meta: &Meta) -> Result<Self, StateMachineError> {
        let meta_bytes = encode_bounded(meta, group, "snapshot meta")?;
        let mut out = Vec::with_capacity(MAGIC.len() + 4 + meta_bytes.len() + 4);
        out.extend_from_slice(MAGIC);
        // Fits: at most RAFT_STATE_BYTES_MAX.
        out.extend_from_slice(&(meta_bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&meta_bytes);
        Ok(Self { group, out, bytes_max: SNAPSHOT_BYTES_MAX })
    }

    fn push_page(&mut self, page: &ExportPage) -> Result<(), StateMachineError> {
        let grown = self.out.len() + page.bytes() + 8 * page.records.len() + 4;
        if grown as u64 > self.bytes_max {
            return Err(StateMachineError::SnapshotTooLarge { group: self.group, max: self.bytes_max });
        }
        for r in &page.records {
            // Fit u32: the buffer is at most SNAPSHOT_BYTES_MAX (1 GiB).
            self.out.extend_from_slice(&(r.key.len() as u32).to_le_bytes());
            self.out.extend_from_slice(&(r.value.len() as u32).to_le_bytes());
            self.out.extend_from_slice(&r.key);
            self.out.extend_from_slice(&r.value);
        }
        Ok(())
    }

    fn finish(mut self) -> Vec<u8> {
        let crc = crc32c::crc32c(&self.out);
        self.out.extend_from_slice(&crc.to_le_bytes());
        self.out
    }
}

/// The meta of a snapshot buffer and its records, once its size and checksum are right.
fn decode_snapshot(data: &[u8]) -> Result<(Meta, SnapshotRecords<'_>), String> {
    if data.len() as u64 > SNAPSHOT_BYTES_MAX {
        return Err(format!("{} bytes, over the limit of {SNAPSHOT_BYTES_MAX}", data.len()));
    }
    let body_len = data.len().checked_sub(4).ok_or("shorter than a checksum")?;
    let (body, crc) = data.split_at(body_len);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32c::crc32c(body) != stored {
        return Err("checksum mismatch".into());
    }
    let rest = body.strip_prefix(MAGIC.as_slice()).ok_or("no snapshot magic")?;
    let (meta_bytes, rest) = take_len_prefixed(rest, RAFT_STATE_BYTES_MAX).map_err(|e| format!("meta: {e}"))?;
    let meta: Meta = decode_bounded(meta_bytes).map_err(|e| format!("meta: {e}"))?;
    Ok((meta, SnapshotRecords { rest, n: 0 }))
}

/// The records of a snapshot buffer, read one at a time (no index of them is built).
struct SnapshotRecords<'a> {
    /// The bytes after the last record read; empty at the end or after an error.
    rest: &'a [u8],
    n: usize,
}

impl<'a> Iterator for SnapshotRecords<'a> {
    type Item = Result<Record<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.rest);
        let n = self.n;
        self.n += 1;
        let read = || {
            let (lens, after) = rest.split_at_checked(8).ok_or_else(|| format!("record {n}: truncated lengths"))?;
            let key_len = u32::from_le_bytes([lens[0], lens[1], lens[2], lens[3]]) as usize;
            let value_len = u32::from_le_bytes([lens[4], lens[5], lens[6], lens[7]]) as usize;
            let (key, after) = after.split_at_checked(key_len).ok_or_else(|| format!("record {n}: key of {key_len} bytes past the end"))?;
            let (value, after) =
                after.split_at_checked(value_len).ok_or_else(|| format!("record {n}: value of {value_len} bytes past the end"))?;
            Ok(((key, value), after))
        };
        // Each record consumes at least 8 bytes, so the iteration ends with the buffer.
        Some(read().map(|(record, after)| {
            self.rest = after;
            record
        }))
    }
}

fn take_len_prefixed(data: &[u8], max: usize) -> Result<(&[u8], &[u8]), String> {
    let (len, rest) = data.split_at_checked(4).ok_or("truncated length")?;
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len > max {
        return Err(format!("length {len} over the limit of {max}"));
    }
    rest.split_at_checked(len).ok_or_else(|| format!("{len} bytes past the end"))
}

impl RaftSnapshotBuilder<C> for QueueStateMachine {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let (meta, data) = self.blocking(|sm| sm.build()).await?;
        Ok(Snapshot { meta, snapshot: Cursor::new(data) })
    }
}

impl RaftStateMachine<C> for QueueStateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), io::Error> {
        let state = self.blocking(|sm| sm.raft_state()).await?;
        Ok(match state {
            Some(s) => (Some(s.applied), s.membership),
            None => (None, Membership::default()),
        })
    }

    /// One store write per entry; each responder is answered once its entry is written. Each
    /// entry is applied only once this replica's log has it durable (see [`Self::with_log`]).
    ///
    /// An entry is applied on the async worker unless RocksDB would stall its write (a memtable
    /// write otherwise takes microseconds, and a hop to a blocking thread per entry cost a
    /// quarter of the throughput at c=64 on 2 cores); from the first entry that would stall,
    /// what openraft has ready (at most 64 entries or 8 MiB of messages) goes to one blocking
    /// task. The reads an entry's decision makes are point reads of the group's own recent keys.
    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + OptionalSend,
    {
        let mut membership: Option<Membership> = None;
        while let Some(first) = entries.try_next().await? {
            let mut bytes = command_bytes(&first.0);
            let mut batch = vec![first];
            while batch.len() < APPLY_BATCH_ENTRIES_MAX && bytes < APPLY_BATCH_BYTES_MAX {
                match entries.try_next().now_or_never() {
                    Some(Ok(Some(next))) => {
                        bytes = bytes.saturating_add(command_bytes(&next.0));
                        batch.push(next);
                    }
                    Some(Err(e)) => return Err(e),
                    Some(Ok(None)) | None => break,
                }
            }
            // openraft hands entries over in log order, each once: a gap or a repeat would skip a
            // command or apply it twice on this replica alone.
            for pair in batch.windows(2) {
                let (a, b) = (pair[0].0.log_id.index, pair[1].0.log_id.index);
                assert_eq!(Some(b), a.checked_add(1), "group {}: entry {b} applied after {a}", self.group);
            }
            let last = batch.last().map_or(0, |(e, _)| e.log_id.index);
            if let Some(log) = &self.log {
                // Entries are contiguous and durability is a prefix: the last one covers all.
                let durable = log.durable(last);
                if !durable.is_ready() {
                    tracing::trace!(target: "raftmq::hop", hop = "apply_waits_for_log", index = last);
                }
                durable.wait().await.map_err(io::Error::from)?;
            }
            let mut current = match membership.take() {
                Some(m) => m,
                None => self.raft_state()?.map(|s| s.membership).unwrap_or_default(),
            };
            let (entries_of_batch, responders): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let mut replies = Vec::with_capacity(entries_of_batch.len());
            let mut failed = None;
            for entry in &entries_of_batch {
                tracing::trace!(target: "raftmq::hop", hop = "apply", index = entry.log_id.index);
                match self.apply_entry(entry, &mut current, Write::UnlessStalled) {
                    Ok(Some(reply)) => replies.push(reply),
                    Ok(None) => break,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if failed.is_none() && replies.len() < entries_of_batch.len() {
                let done = replies.len();
                let (more, error, after) = self
                    .blocking(move |sm| {
                        let mut membership = current;
                        let mut replies = Vec::new();
                        for entry in &entries_of_batch[done..] {
                            match sm.apply_entry(entry, &mut membership, Write::Always) {
                                Ok(reply) => replies.push(reply.expect("an unconditional write is always made")),
                                // The entries before it are written: answer them, then stop.
                                Err(e) => return Ok((replies, Some(e), membership)),
                            }
                        }
                        Ok((replies, None, membership))
                    })
                    .await?;
                replies.extend(more);
                failed = error;
                current = after;
            }
            membership = Some(current);
            for (reply, responder) in replies.into_iter().zip(responders) {
                if let Some(r) = responder {
                    r.send(reply);
                }
            }
            if let Some(e) = failed {
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Declines a policy-triggered build of a group never trimmed: it has no snapshot to make.
    async fn try_create_snapshot_builder(&mut self, force: bool) -> Option<Self> {
        if !force && matches!(self.store.trim_point(self.group), Ok(None)) {
            return None;
        }
        Some(self.clone())
    }

    async fn get_snapshot_builder(&mut self) -> Self {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &Meta, snapshot: Cursor<Vec<u8>>) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let m = meta.clone();
        self.blocking(move |sm| sm.install(&m, &data)).await?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let snapshot = self.blocking(|sm| sm.current_snapshot()).await?;
        Ok(snapshot.map(|(meta, data)| Snapshot { meta, snapshot: Cursor::new(data) }))
    }
}

#[cfg(test)]
mod tests;

//! The log engine: one directory of segments shared by every Raft group of a process.
//!
//! All groups append to the same active segment, so one `fdatasync` makes the pending appends of
//! every group durable at once: a broker hosting 1,000 groups pays one fsync round per batch,
//! not one per group (the idea of TiKV's raft-engine). A flusher thread runs the rounds (group
//! commit): each round takes every append that has been written, syncs once, and then calls
//! their callbacks. A second thread prepares the next segment (zero-filled, synced) ahead of the
//! writer.
//!
//! Durability contract:
//! - [`GroupLog::append`] returns once the records are written (readable) and calls its callback
//!   once they are durable. A crash may lose any record whose callback has not been called, and
//!   then loses a suffix: what survives of a group is always a prefix of what was appended.
//! - [`GroupLog::save_vote`] returns once the vote is durable.
//! - `save_committed`, `purge` and `truncate_from` are durable with the next round; a crash
//!   before it may undo them, which Raft tolerates (the purged entries are covered by a
//!   snapshot, a truncated suffix is truncated again by the leader).
//! - After any failed write or sync the engine refuses all further writes.
//!
//! Reclaim: a third thread copies the live entries of the oldest segment forward (as
//! [`RecordKind::Rewrite`] records, which replay never reads as an overwrite) once the log holds
//! more than [`LogOptions::reclaim_after_segments`] segments and half its bytes are dead, so a
//! group that never purges cannot pin every later segment. The copy changes no durability
//! promise: the old segment is deleted only after the round that makes the copies durable.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::LogError;
use crate::durable_index::{DurableAt, DurableIndex};
use crate::fs::{FileSystem, LogFile, StdFileSystem, join};
use crate::group_index::{EntryLocation, GroupIndex};
use crate::record::{self, HEADER_LEN, RecordKind};
use crate::segment::{self, SEGMENT_HEADER_LEN, SPARE_NAME, SegmentEnd};

/// Identifies a Raft group within one engine.
pub type GroupId = u64;

/// Called once appended records are durable, or with the error that stopped the engine.
pub type OnDurable = Box<dyn FnOnce(Result<(), LogError>) + Send>;

/// Tunables of the engine, each with its default.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Size of each segment file, preallocated. Default 64 MiB.
    pub segment_bytes: u64,
    /// Largest payload of one record. Default 16 MiB; at most what fits in one segment.
    pub max_record_bytes: u64,
    /// **Test only, never in production.** Acknowledge appended entries as soon as they are
    /// written, and sync only every this often: a power loss then loses acknowledged entries.
    /// It exists so that jepsen's checker can be shown to catch exactly that. `None` (the
    /// default): an append is acknowledged once fdatasynced.
    pub ack_before_sync: Option<std::time::Duration>,
    /// Reclaim: once the log holds more than this many segments and at least half of their
    /// bytes are dead, the live entries of the oldest segment are rewritten into the active one
    /// so that segment can be deleted (see [`crate::engine`]). Default 4; at least 1.
    pub reclaim_after_segments: usize,
    /// Reclaim: the most entry bytes rewritten under one hold of the writer lock, which bounds
    /// how long a rewrite stalls every group's appends. Default 1 MiB.
    pub rewrite_chunk_bytes: u64,
    /// Reclaim runs on its own thread whenever the condition may hold (default). Off, it runs
    /// only when [`LogEngine::reclaim_oldest`] is called: tests that must decide when.
    pub reclaim_in_background: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            max_record_bytes: 16 << 20,
            ack_before_sync: None,
            reclaim_after_segments: 4,
            rewrite_chunk_bytes: 1 << 20,
            reclaim_in_background: true,
        }
    }
}

impl LogOptions {
    /// The largest payload an append accepts: `max_record_bytes`, or less when a record that
    /// large would not fit in one segment, rounded down to the record alignment.
    pub fn max_payload_bytes(&self) -> u64 {
        let fits = self.segment_bytes.saturating_sub(SEGMENT_HEADER_LEN + HEADER_LEN as u64);
        self.max_record_bytes.min(fits) / record::ALIGN * record::ALIGN
    }
}

/// A place in the log: segment and byte offset. Ordered as the log is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// One entry as the log stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub index: u64,
    pub term: u64,
    pub payload: Vec<u8>,
}

/// What opening the log found and did.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: u64,
    pub groups: usize,
    /// A torn tail that was cut off: the file and the offset it was cut at.
    pub torn_tail: Option<(PathBuf, u64)>,
}

/// Counters a user watches; all monotonic.
#[derive(Debug, Default)]
pub struct EngineStats {
    pub records_appended: AtomicU64,
    pub bytes_appended: AtomicU64,
    /// Group-commit rounds that ran an `fdatasync`.
    pub sync_rounds: AtomicU64,
    /// `fdatasync`s that sealed a full segment before the next one took records.
    pub seal_syncs: AtomicU64,
    /// Time spent in the `fdatasync`s of group-commit rounds (not seals).
    pub sync_nanos_total: AtomicU64,
    pub appends_made_durable: AtomicU64,
    pub segments_created: AtomicU64,
    pub segments_deleted: AtomicU64,
    /// Entries copied forward by reclaim, and their record bytes (headers and padding included).
    pub entries_rewritten: AtomicU64,
    pub bytes_rewritten: AtomicU64,
    /// Gauge: segments in use (a deleted one leaves this count before its file is removed,
    /// after the next sync round).
    pub segments_in_use: AtomicU64,
    /// Gauge: record bytes of the entries present in some group's index (live, not yet purged
    /// or truncated): what reclaim must keep.
    pub live_entry_bytes: AtomicU64,
    /// Latency of every `fdatasync` of a group-commit round or a seal that succeeded.
    pub fsync_latency: SyncLatencyHistogram,
}

impl EngineStats {
    /// A copy of [`Self::fsync_latency`] as it is now.
    pub fn fsync_latency(&self) -> SyncLatencySnapshot {
        self.fsync_latency.snapshot()
    }
}

/// Upper bounds, inclusive, of the finite buckets of [`SyncLatencyHistogram`], in nanoseconds:
/// 50 µs to 1 s. A last bucket holds everything slower.
pub const SYNC_LATENCY_BOUNDS_NANOS: [u64; 13] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
];

/// Buckets of [`SyncLatencyHistogram`]: one per bound and the unbounded one.
pub const SYNC_LATENCY_BUCKETS: usize = SYNC_LATENCY_BOUNDS_NANOS.len() + 1;

/// A latency histogram with fixed buckets, updated with relaxed atomics (no lock on the sync
/// path). Readers see each counter exactly but not all of them at one instant: a snapshot taken
/// while a sync is being recorded may count it in the buckets and not yet in the sum.
#[derive(Debug, Default)]
pub struct SyncLatencyHistogram {
    /// Observations per bucket (not cumulative); see [`SYNC_LATENCY_BOUNDS_NANOS`].
    buckets: [AtomicU64; SYNC_LATENCY_BUCKETS],
    sum_nanos: AtomicU64,
}

impl SyncLatencyHistogram {
    pub fn record(&self, elapsed: std::time::Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[sync_latency_bucket(nanos)].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> SyncLatencySnapshot {
        SyncLatencySnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_nanos: self.sum_nanos.load(Ordering::Relaxed),
        }
    }
}

/// The bucket of a latency: the first whose bound is at least `nanos`, else the last.
fn sync_latency_bucket(nanos: u64) -> usize {
    SYNC_LATENCY_BOUNDS_NANOS.partition_point(|&bound| bound < nanos)
}

/// What a [`SyncLatencyHistogram`] held when read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncLatencySnapshot {
    /// Observations per bucket, not cumulative: `buckets[i]` counts latencies in
    /// `(SYNC_LATENCY_BOUNDS_NANOS[i - 1], SYNC_LATENCY_BOUNDS_NANOS[i]]`, the last one those
    /// above every bound.
    pub buckets: [u64; SYNC_LATENCY_BUCKETS],
    pub sum_nanos: u64,
}

impl SyncLatencySnapshot {
    /// Number of observations: the sum of the buckets, so the two always agree.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

struct ActiveSegment {
    seq: u64,
    file: Arc<dyn LogFile>,
    write_offset: u64,
    capacity: u64,
}

struct SegmentMeta {
    file: Arc<dyn LogFile>,
    /// Entries in this segment still present in some group's index, and their record bytes.
    live_entries: u64,
    live_bytes: u64,
}

/// Bytes an entry's record takes in its segment.
fn entry_bytes(l: &EntryLocation) -> u64 {
    record::record_len(l.payload_len as usize)
}

struct WriterState {
    active: ActiveSegment,
    segments: BTreeMap<u64, SegmentMeta>,
    groups: HashMap<GroupId, GroupIndex>,
    /// Everything before this position is durable.
    durable: Position,
    scratch: Vec<u8>,
}

impl WriterState {
    /// Whether `bytes` more of records fit in the active segment after what is buffered.
    fn fits(&self, bytes: u64) -> bool {
        self.active.write_offset + self.scratch.len() as u64 + bytes <= self.active.capacity
    }
}

#[derive(Default)]
struct FlushQueue {
    waiters: Vec<OnDurable>,
    /// Segments to delete once the log up to the position is durable.
    deletions: Vec<(Position, u64)>,
    shutdown: bool,
}

#[derive(Default)]
struct ReclaimState {
    /// Something changed that may make the reclaim condition hold.
    wanted: bool,
    shutdown: bool,
}

#[derive(Default)]
struct SpareState {
    /// `spare.tmp` is zero-filled to the segment size and synced.
    ready: bool,
    /// Preparing failed; rolls use growing files from then on.
    error: Option<String>,
    shutdown: bool,
}

pub(crate) struct Shared {
    dir: PathBuf,
    fs: Arc<dyn FileSystem>,
    options: LogOptions,
    writer: Mutex<WriterState>,
    flush: Mutex<FlushQueue>,
    flush_wakeup: Condvar,
    spare: Mutex<SpareState>,
    spare_changed: Condvar,
    reclaim: Mutex<ReclaimState>,
    reclaim_wakeup: Condvar,
    failed: Mutex<Option<String>>,
    /// Set once `failed` is: lets the write path check without taking that lock.
    has_failed: AtomicBool,
    closed: AtomicBool,
    stats: EngineStats,
    /// Each group's durable progress by index, shared by its `GroupLog`s.
    durable_indexes: Mutex<HashMap<GroupId, Arc<DurableIndex>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data consistent before any call that can panic.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Stops the engine's threads when the last handle goes away.
struct ThreadsGuard {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for ThreadsGuard {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        lock(&self.shared.flush).shutdown = true;
        self.shared.flush_wakeup.notify_all();
        lock(&self.shared.spare).shutdown = true;
        self.shared.spare_changed.notify_all();
        lock(&self.shared.reclaim).shutdown = true;
        self.shared.reclaim_wakeup.notify_all();
        let me = std::thread::current().id();
        for t in lock(&self.threads).drain(..) {
            // The last handle may be dropped by a callback on one of these threads.
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }
}

/// A handle to an open log directory; cheap to clone. The engine stops when the last handle
/// (including every [`GroupLog`]) is dropped, after a final sync round.
#[derive(Clone)]
pub struct LogEngine {
    shared: Arc<Shared>,
    _threads: Arc<ThreadsGuard>,
}

impl std::fmt::Debug for LogEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogEngine").field("dir", &self.shared.dir).finish()
    }
}

impl LogEngine {
    /// Opens (or creates) the log in `dir` on the real file system.
    pub fn open(dir: impl AsRef<Path>, options: LogOptions) -> Result<(Self, RecoveryReport), LogError> {
        Self::open_with(dir, options, Arc::new(StdFileSystem))
    }

    /// Opens (or creates) the log in `dir` through `fs`, verifying every record (see
    /// [`crate::segment::scan`]): a torn tail is cut off, any other damage refuses to open.
    pub fn open_with(dir: impl AsRef<Path>, options: LogOptions, fs: Arc<dyn FileSystem>) -> Result<(Self, RecoveryReport), LogError> {
        let dir = dir.as_ref().to_path_buf();
        if options.segment_bytes < SEGMENT_HEADER_LEN + HEADER_LEN as u64 + record::ALIGN {
            return Err(LogError::Invalid(format!("segment_bytes {} is too small", options.segment_bytes)));
        }
        if options.reclaim_after_segments == 0 {
            return Err(LogError::Invalid("reclaim_after_segments must be at least 1".into()));
        }
        fs.create_dir_all(&dir).map_err(|e| LogError::io(&dir, e))?;
        let (writer, report) = recover(&dir, &options, &*fs)?;
        let shared = Arc::new(Shared {
            dir,
            fs,
            options,
            writer: Mutex::new(writer),
            flush: Mutex::new(FlushQueue::default()),
            flush_wakeup: Condvar::new(),
            spare: Mutex::new(SpareState::default()),
            spare_changed: Condvar::new(),
            reclaim: Mutex::new(ReclaimState { wanted: true, shutdown: false }),
            reclaim_wakeup: Condvar::new(),
            failed: Mutex::new(None),
            has_failed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            stats: EngineStats::default(),
            durable_indexes: Mutex::new(HashMap::new()),
        });
        let spawn = |name: &str, f: fn(Arc<Shared>)| {
            let s = shared.clone();
            std::thread::Builder::new().name(name.into()).spawn(move || f(s)).map_err(|e| LogError::io(&shared.dir, e))
        };
        shared.publish_gauges(&lock(&shared.writer));
        let mut threads = vec![spawn("raft-log-flush", flusher_loop)?, spawn("raft-log-prealloc", preallocator_loop)?];
        if shared.options.reclaim_in_background {
            threads.push(spawn("raft-log-reclaim", reclaimer_loop)?);
        }
        let guard = Arc::new(ThreadsGuard { shared: shared.clone(), threads: Mutex::new(threads) });
        Ok((Self { shared, _threads: guard }, report))
    }

    /// The log of one group; created empty on first use.
    pub fn group(&self, id: GroupId) -> GroupLog {
        // Until a first `GroupLog` of the group exists nothing is appended to it in this process,
        // so what it holds then was recovered, and recovery synced it.
        let recovered_until = {
            let w = lock(&self.shared.writer);
            w.groups.get(&id).and_then(|g| g.last_index()).map_or(0, |last| last + 1)
        };
        let durable = lock(&self.shared.durable_indexes).entry(id).or_insert_with(|| DurableIndex::new(recovered_until)).clone();
        GroupLog { engine: self.clone(), id, durable }
    }

    /// The groups that have any record in the log.
    pub fn group_ids(&self) -> Vec<GroupId> {
        let mut ids: Vec<_> = lock(&self.shared.writer).groups.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Blocks until everything written so far is durable.
    pub fn sync(&self) -> Result<(), LogError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.shared.enqueue_waiter(Box::new(move |r| {
            let _ = tx.send(r);
        }))?;
        rx.recv().map_err(|_| LogError::Closed)?
    }

    pub fn stats(&self) -> &EngineStats {
        &self.shared.stats
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Number of segment files the log currently uses.
    pub fn segment_count(&self) -> usize {
        lock(&self.shared.writer).segments.len()
    }

    /// One reclaim step, on the caller's thread: when the reclaim condition holds, rewrites the
    /// live entries of the oldest segment forward and schedules its deletion (after the next
    /// sync round). Returns whether it did. The background reclaimer runs the same steps.
    pub fn reclaim_oldest(&self) -> Result<bool, LogError> {
        self.shared.check_usable()?;
        let Some((seq, file)) = reclaim_target(&self.shared.options, &lock(&self.shared.writer)) else { return Ok(false) };
        self.shared.rewrite_segment(seq, &file)?;
        Ok(true)
    }
}

/// The log of one Raft group inside a [`LogEngine`]; cheap to clone.
#[derive(Clone, Debug)]
pub struct GroupLog {
    engine: LogEngine,
    id: GroupId,
    durable: Arc<DurableIndex>,
}

/// A group's log state, as `get_log_state` needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupState {
    pub first_index: Option<u64>,
    pub last_index: Option<u64>,
    pub purged: Option<(u64, Vec<u8>)>,
    pub vote: Option<Vec<u8>>,
    pub committed: Option<(u64, Vec<u8>)>,
}

impl GroupLog {
    pub fn id(&self) -> GroupId {
        self.id
    }

    pub fn engine(&self) -> &LogEngine {
        &self.engine
    }

    /// Writes `entries` (term, index, payload), consecutive, after the group's last entry or
    /// replacing a suffix; `on_durable` is called once all of them are durable. When this
    /// returns they are readable.
    pub fn append<'a>(&self, entries: impl IntoIterator<Item = (u64, u64, &'a [u8])>, on_durable: OnDurable) -> Result<(), LogError> {
        match self.append_with(entries, on_durable, Wait::Always)? {
            None => Ok(()),
            Some(_) => unreachable!("an append that may wait is always made"),
        }
    }

    /// [`Self::append`] if it can be done now without waiting for anything but a write into the
    /// page cache: the writer lock is free and the entries fit in the active segment (no roll,
    /// whose fdatasync runs under the lock). Otherwise nothing is written and `on_durable` comes
    /// back, for the caller to append from a thread that may block.
    pub fn try_append_now(&self, entries: &[(u64, u64, &[u8])], on_durable: OnDurable) -> Result<Option<OnDurable>, LogError> {
        self.append_with(entries.iter().copied(), on_durable, Wait::Never)
    }

    fn append_with<'a>(
        &self,
        entries: impl IntoIterator<Item = (u64, u64, &'a [u8])>,
        on_durable: OnDurable,
        wait: Wait,
    ) -> Result<Option<OnDurable>, LogError> {
        let shared = &self.engine.shared;
        let batch = {
            let Some(mut w) = shared.writable_with(wait)? else { return Ok(Some(on_durable)) };
            let mut expected: Option<u64> = None;
            let mut buffered: Vec<(u64, u64, &[u8])> = Vec::new();
            let max = shared.max_payload();
            for (term, index, payload) in entries {
                if let Some(e) = expected
                    && index != e
                {
                    return Err(LogError::Invalid(format!("entries not consecutive: {index} after {}", e - 1)));
                }
                if payload.len() as u64 > max {
                    return Err(LogError::Invalid(format!("entry {index} has {} bytes, over the limit of {max}", payload.len())));
                }
                expected = Some(index + 1);
                buffered.push((term, index, payload));
            }
            let (Some(&(_, first, _)), Some(&(_, last, _))) = (buffered.first(), buffered.last()) else {
                drop(w);
                return shared.enqueue_waiter(on_durable).map(|_| None);
            };
            if matches!(wait, Wait::Never) {
                let needed: u64 = buffered.iter().map(|(_, _, p)| record::record_len(p.len())).sum();
                if !w.fits(needed) {
                    return Ok(Some(on_durable));
                }
            }
            w.groups.entry(self.id).or_default().check_append(first).map_err(LogError::Invalid)?;
            let mut locations = Vec::with_capacity(buffered.len());
            for (term, index, payload) in buffered {
                locations.push((index, shared.write_record(&mut w, RecordKind::Entry, self.id, term, index, payload)?));
            }
            shared.write_out(&mut w)?;
            // The index learns of the entries only once their bytes are written.
            let w = &mut *w;
            for (index, location) in locations {
                let removed = w.groups.entry(self.id).or_default().push(index, location);
                shared.note_removed(&mut w.segments, &removed);
                shared.note_added(&mut w.segments, &location);
            }
            self.durable.appended(first, last)
        };
        let durable = self.durable.clone();
        // The caller hears first: whoever waits on the group's durable index may rely on it.
        let on_durable: OnDurable = Box::new(move |r| {
            let outcome = r.as_ref().map(|_| ()).map_err(|e| LogError::Failed(e.to_string()));
            on_durable(r);
            durable.completed(batch, &outcome);
        });
        if shared.options.ack_before_sync.is_some() {
            // The broken test mode: acknowledged before it is durable (see `LogOptions`).
            on_durable(Ok(()));
            return Ok(None);
        }
        shared.enqueue_waiter(on_durable).inspect_err(|e| self.durable.completed(batch, &Err(LogError::Failed(e.to_string()))))?;
        Ok(None)
    }

    /// Resolves once the entry at `index` is durable in this log (or purged): a state machine
    /// applies an entry only then, so it is never ahead of its own log after a power cut (the
    /// apply-versus-durable rule, `docs/ARCHITECTURE.md`). An entry not yet appended is waited
    /// for too.
    pub fn durable(&self, index: u64) -> DurableAt {
        self.durable.wait(index)
    }

    /// Saves the vote; returns once it is durable.
    pub fn save_vote(&self, vote: &[u8]) -> Result<(), LogError> {
        self.save_vote_then(vote, None)?.wait()
    }

    /// Saves the vote; the returned [`DurableWait`] resolves once it is durable. `notify` (if
    /// given) is called instead when it is.
    pub fn save_vote_then(&self, vote: &[u8], notify: Option<OnDurable>) -> Result<DurableWait, LogError> {
        let shared = &self.engine.shared;
        {
            let mut w = shared.writable()?;
            let loc = shared.write_record(&mut w, RecordKind::Vote, self.id, 0, 0, vote)?;
            shared.write_out(&mut w)?;
            let g = w.groups.entry(self.id).or_default();
            g.vote = Some(vote.to_vec());
            g.state_segments.vote = Some(loc.segment);
        }
        DurableWait::enqueue(shared, notify)
    }

    /// Saves the committed index (with the caller's encoding of its log id); durable with the
    /// next sync round.
    pub fn save_committed(&self, index: u64, log_id: &[u8]) -> Result<(), LogError> {
        self.save_committed_with(index, log_id, Wait::Always).map(|_| ())
    }

    /// [`Self::save_committed`] if it can be done now (see [`Self::try_append_now`]); `false`:
    /// nothing was written.
    pub fn try_save_committed_now(&self, index: u64, log_id: &[u8]) -> Result<bool, LogError> {
        self.save_committed_with(index, log_id, Wait::Never)
    }

    fn save_committed_with(&self, index: u64, log_id: &[u8], wait: Wait) -> Result<bool, LogError> {
        let shared = &self.engine.shared;
        let Some(mut w) = shared.writable_with(wait)? else { return Ok(false) };
        if matches!(wait, Wait::Never) && !w.fits(record::record_len(log_id.len())) {
            return Ok(false);
        }
        let loc = shared.write_record(&mut w, RecordKind::Committed, self.id, 0, index, log_id)?;
        shared.write_out(&mut w)?;
        let g = w.groups.entry(self.id).or_default();
        g.committed = Some((index, log_id.to_vec()));
        g.state_segments.committed = Some(loc.segment);
        Ok(true)
    }

    /// Drops the entries from `index` on. Durable with the next sync round.
    pub fn truncate_from(&self, index: u64) -> Result<(), LogError> {
        let shared = &self.engine.shared;
        let mut w = shared.writable()?;
        if w.groups.get(&self.id).and_then(|g| g.last_index()).is_none_or(|last| index > last) {
            return Ok(());
        }
        if let Some(p) = w.groups.get(&self.id).and_then(|g| g.purged_index())
            && index <= p
        {
            return Err(LogError::Invalid(format!("truncate from {index} at or below the purge point {p}")));
        }
        shared.write_record(&mut w, RecordKind::Truncate, self.id, 0, index, &[])?;
        shared.write_out(&mut w)?;
        let w = &mut *w;
        let removed = w.groups.entry(self.id).or_default().truncate_from(index);
        self.durable.truncated_from(index);
        shared.note_removed(&mut w.segments, &removed);
        shared.collect_garbage(w)?;
        shared.want_reclaim();
        Ok(())
    }

    /// Drops the entries up to and including `index` and records the purge point (with the
    /// caller's encoding of its log id). Durable with the next sync round; segments that no
    /// longer hold a live entry are deleted once that round is done.
    pub fn purge(&self, index: u64, log_id: &[u8]) -> Result<(), LogError> {
        let shared = &self.engine.shared;
        let mut w = shared.writable()?;
        if w.groups.get(&self.id).and_then(|g| g.purged_index()).is_some_and(|p| p >= index) {
            return Ok(());
        }
        let loc = shared.write_record(&mut w, RecordKind::Purge, self.id, 0, index, log_id)?;
        shared.write_out(&mut w)?;
        let w = &mut *w;
        let g = w.groups.entry(self.id).or_default();
        let removed = g.purge_upto(index, log_id.to_vec());
        g.state_segments.purge = Some(loc.segment);
        self.durable.purged_upto(index);
        shared.note_removed(&mut w.segments, &removed);
        shared.collect_garbage(w)?;
        shared.want_reclaim();
        Ok(())
    }

    /// The group's log state.
    pub fn state(&self) -> GroupState {
        let w = lock(&self.engine.shared.writer);
        match w.groups.get(&self.id) {
            None => GroupState::default(),
            Some(g) => GroupState {
                first_index: g.first_index(),
                last_index: g.last_index(),
                purged: g.purged.clone(),
                vote: g.vote.clone(),
                committed: g.committed.clone(),
            },
        }
    }

    /// The term of the entry at `index`, if present.
    pub fn term_of(&self, index: u64) -> Option<u64> {
        lock(&self.engine.shared.writer).groups.get(&self.id)?.location(index).map(|l| l.term)
    }

    /// Reads the entries in `[from, to)` that are present, verifying each checksum. Present
    /// entries are consecutive, so the result is too.
    pub fn read(&self, from: u64, to: u64) -> Result<Vec<StoredEntry>, LogError> {
        self.read_with(from, to, Wait::Always).map(|r| r.unwrap_or_default())
    }

    /// [`Self::read`] if it can be done now: the writer lock is free and every entry is in the
    /// active segment, written moments ago and so in the page cache. `None`: nothing was read.
    pub fn try_read_now(&self, from: u64, to: u64) -> Result<Option<Vec<StoredEntry>>, LogError> {
        self.read_with(from, to, Wait::Never)
    }

    fn read_with(&self, from: u64, to: u64, wait: Wait) -> Result<Option<Vec<StoredEntry>>, LogError> {
        let shared = &self.engine.shared;
        let (locations, files) = {
            let Some(w) = shared.writer_with(wait) else { return Ok(None) };
            let Some(g) = w.groups.get(&self.id) else { return Ok(Some(Vec::new())) };
            let locations = g.locations(from, to);
            if matches!(wait, Wait::Never) && locations.iter().any(|(_, l)| l.segment != w.active.seq) {
                return Ok(None);
            }
            let mut files: HashMap<u64, Arc<dyn LogFile>> = HashMap::new();
            for (_, l) in &locations {
                if let std::collections::hash_map::Entry::Vacant(v) = files.entry(l.segment) {
                    let meta = w
                        .segments
                        .get(&l.segment)
                        .ok_or_else(|| LogError::Failed(format!("segment {} of a live entry is gone", l.segment)))?;
                    v.insert(meta.file.clone());
                }
            }
            (locations, files)
        };
        // Records never move or change once written, so they can be read without the lock.
        let mut out = Vec::with_capacity(locations.len());
        let mut run_start = 0;
        while run_start < locations.len() {
            let mut run_end = run_start + 1;
            while run_end < locations.len() && is_next_record(&locations[run_end - 1].1, &locations[run_end].1) {
                run_end += 1;
            }
            let run = &locations[run_start..run_end];
            let first = run[0].1;
            let last = run[run.len() - 1].1;
            let end = last.offset + record::record_len(last.payload_len as usize);
            let mut buf = vec![0u8; (end - first.offset) as usize];
            let path = join(&shared.dir, &segment::segment_name(first.segment));
            files[&first.segment].read_exact_at(&mut buf, first.offset).map_err(|e| LogError::io(&path, e))?;
            for (index, l) in run {
                let at = (l.offset - first.offset) as usize;
                out.push(decode_entry(&buf[at..], *index, l, &path)?);
            }
            run_start = run_end;
        }
        Ok(Some(out))
    }
}

/// Whether a call may wait for the writer lock (and what its holder does under it: a segment
/// roll's fdatasync), or must be done at once or not at all (on an async worker).
#[derive(Debug, Clone, Copy)]
enum Wait {
    Always,
    Never,
}

fn is_next_record(a: &EntryLocation, b: &EntryLocation) -> bool {
    a.segment == b.segment && a.offset + record::record_len(a.payload_len as usize) == b.offset
}

fn decode_entry(bytes: &[u8], index: u64, l: &EntryLocation, path: &Path) -> Result<StoredEntry, LogError> {
    let corrupt = |reason: String| LogError::Corrupt { file: path.to_path_buf(), offset: l.offset, reason };
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(&bytes[..HEADER_LEN]);
    let header = record::parse_header(&h, bytes.len() as u64).map_err(|e| corrupt(e.to_string()))?;
    let payload = &bytes[HEADER_LEN..HEADER_LEN + header.payload_len as usize];
    record::check(&h, &header, payload).map_err(|e| corrupt(e.to_string()))?;
    if header.index != index || !matches!(header.kind, RecordKind::Entry | RecordKind::Rewrite) {
        return Err(corrupt(format!("expected entry {index}, found {:?} {}", header.kind, header.index)));
    }
    Ok(StoredEntry { index, term: header.term, payload: payload.to_vec() })
}

/// Waits for a sync round; see [`GroupLog::save_vote_then`].
pub struct DurableWait(Option<std::sync::mpsc::Receiver<Result<(), LogError>>>);

impl DurableWait {
    fn enqueue(shared: &Shared, notify: Option<OnDurable>) -> Result<Self, LogError> {
        match notify {
            Some(cb) => {
                shared.enqueue_waiter(cb)?;
                Ok(Self(None))
            }
            None => {
                let (tx, rx) = std::sync::mpsc::channel();
                shared.enqueue_waiter(Box::new(move |r| {
                    let _ = tx.send(r);
                }))?;
                Ok(Self(Some(rx)))
            }
        }
    }

    /// Blocks until durable (returns at once if a callback was given instead).
    pub fn wait(self) -> Result<(), LogError> {
        match self.0 {
            None => Ok(()),
            Some(rx) => rx.recv().map_err(|_| LogError::Closed)?,
        }
    }
}

impl Shared {
    fn max_payload(&self) -> u64 {
        self.options.max_payload_bytes()
    }

    /// Counts an entry now present at `l` as live in its segment.
    fn note_added(&self, segments: &mut BTreeMap<u64, SegmentMeta>, l: &EntryLocation) {
        if let Some(meta) = segments.get_mut(&l.segment) {
            meta.live_entries += 1;
            meta.live_bytes += entry_bytes(l);
            self.stats.live_entry_bytes.fetch_add(entry_bytes(l), Ordering::Relaxed);
        }
    }

    /// Counts entries no longer present (truncated, purged, replaced, or moved by a rewrite)
    /// out of their segments.
    fn note_removed(&self, segments: &mut BTreeMap<u64, SegmentMeta>, removed: &[EntryLocation]) {
        for l in removed {
            if let Some(meta) = segments.get_mut(&l.segment) {
                debug_assert!(meta.live_entries > 0, "live entry count of segment {} underflows", l.segment);
                meta.live_entries = meta.live_entries.saturating_sub(1);
                meta.live_bytes = meta.live_bytes.saturating_sub(entry_bytes(l));
                // Every change to the live counts happens under the writer lock.
                self.stats.live_entry_bytes.fetch_sub(entry_bytes(l), Ordering::Relaxed);
            }
        }
    }

    fn publish_gauges(&self, w: &WriterState) {
        self.stats.segments_in_use.store(w.segments.len() as u64, Ordering::Relaxed);
        self.stats.live_entry_bytes.store(w.segments.values().map(|m| m.live_bytes).sum(), Ordering::Relaxed);
    }

    /// Wakes the reclaimer to check its condition again.
    fn want_reclaim(&self) {
        lock(&self.reclaim).wanted = true;
        self.reclaim_wakeup.notify_one();
    }

    fn check_usable(&self) -> Result<(), LogError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        if self.has_failed.load(Ordering::Acquire) {
            return Err(LogError::Failed(lock(&self.failed).clone().unwrap_or_default()));
        }
        Ok(())
    }

    fn writable(&self) -> Result<MutexGuard<'_, WriterState>, LogError> {
        self.check_usable()?;
        Ok(lock(&self.writer))
    }

    /// [`Self::writable`], or `None` at once when `wait` is `Never` and the lock is held.
    fn writable_with(&self, wait: Wait) -> Result<Option<MutexGuard<'_, WriterState>>, LogError> {
        self.check_usable()?;
        Ok(self.writer_with(wait))
    }

    /// The writer lock, or `None` at once when `wait` is `Never` and it is held.
    fn writer_with(&self, wait: Wait) -> Option<MutexGuard<'_, WriterState>> {
        match wait {
            Wait::Always => Some(lock(&self.writer)),
            Wait::Never => match self.writer.try_lock() {
                Ok(w) => Some(w),
                Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            },
        }
    }

    fn fail(&self, what: String) -> LogError {
        tracing::error!(error = %what, "raft-log stops accepting writes");
        let msg = lock(&self.failed).get_or_insert(what).clone();
        self.has_failed.store(true, Ordering::Release);
        LogError::Failed(msg)
    }

    fn enqueue_waiter(&self, cb: OnDurable) -> Result<(), LogError> {
        self.check_usable()?;
        lock(&self.flush).waiters.push(cb);
        self.flush_wakeup.notify_one();
        Ok(())
    }

    /// Encodes one record at the end of the active segment into the write buffer, rolling to a
    /// new segment first when it does not fit. Returns where it goes. The caller writes the
    /// buffer out with [`Self::write_out`] before it releases the writer lock, so a batch
    /// costs one `pwrite` per segment it touches.
    fn write_record(
        &self,
        w: &mut WriterState,
        kind: RecordKind,
        group: GroupId,
        term: u64,
        index: u64,
        payload: &[u8],
    ) -> Result<EntryLocation, LogError> {
        let len = record::record_len(payload.len());
        if len > self.options.segment_bytes - SEGMENT_HEADER_LEN {
            // Drop the batch encoded so far: nothing of a rejected call reaches the disk.
            w.scratch.clear();
            return Err(LogError::Invalid(format!("a {kind:?} record of {} payload bytes does not fit in a segment", payload.len())));
        }
        if !w.fits(len) {
            self.write_out(w)?;
            self.roll(w)?;
        }
        let payload_len = u32::try_from(payload.len()).map_err(|_| LogError::Invalid("payload over 4 GiB".into()))?;
        let durable_offset = if w.durable.segment == w.active.seq { w.durable.offset } else { SEGMENT_HEADER_LEN };
        let offset = w.active.write_offset + w.scratch.len() as u64;
        record::encode(&mut w.scratch, kind, group, term, index, durable_offset, payload);
        self.stats.records_appended.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_appended.fetch_add(len, Ordering::Relaxed);
        Ok(EntryLocation { segment: w.active.seq, offset, payload_len, term })
    }

    /// Writes the buffered records at the end of the active segment (into the page cache).
    fn write_out(&self, w: &mut WriterState) -> Result<(), LogError> {
        if w.scratch.is_empty() {
            return Ok(());
        }
        let offset = w.active.write_offset;
        if let Err(e) = w.active.file.write_all_at(&w.scratch, offset) {
            w.scratch.clear();
            return Err(self.fail(format!("write to segment {} at {offset}: {e}", w.active.seq)));
        }
        w.active.write_offset += w.scratch.len() as u64;
        w.scratch.clear();
        Ok(())
    }

    /// Seals the active segment and makes the prepared spare the next one.
    fn roll(&self, w: &mut WriterState) -> Result<(), LogError> {
        // The whole old segment must be durable before the new one receives a record: only the
        // newest segment may then have a torn tail, which is what recovery relies on.
        let started = Instant::now();
        if let Err(e) = w.active.file.sync_data() {
            return Err(self.fail(format!("sync of segment {} before rolling: {e}", w.active.seq)));
        }
        self.stats.seal_syncs.fetch_add(1, Ordering::Relaxed);
        self.stats.fsync_latency.record(started.elapsed());
        w.durable = Position { segment: w.active.seq, offset: w.active.write_offset };
        let next = w.active.seq + 1;
        // Never wait for the preallocator: without a spare ready, the next segment is a new,
        // growing file (slower to sync, but no stall for every group).
        let file = {
            // Held until the spare is renamed: once the preallocator sees `ready` false it
            // starts a new spare by removing `spare.tmp`, which must not be this one.
            let mut spare = lock(&self.spare);
            let use_spare = std::mem::take(&mut spare.ready);
            if !use_spare {
                tracing::debug!(segment = next, "no preallocated segment ready; rolling onto a growing file");
            }
            install_segment(&*self.fs, &self.dir, next, use_spare).map_err(|e| self.fail(format!("installing segment {next}: {e}")))?
        };
        self.spare_changed.notify_all();
        w.segments.insert(next, SegmentMeta { file: file.clone(), live_entries: 0, live_bytes: 0 });
        w.active = ActiveSegment { seq: next, file, write_offset: SEGMENT_HEADER_LEN, capacity: self.options.segment_bytes };
        self.stats.segments_created.fetch_add(1, Ordering::Relaxed);
        self.stats.segments_in_use.store(w.segments.len() as u64, Ordering::Relaxed);
        self.want_reclaim();
        tracing::debug!(segment = next, "rolled to a new segment");
        Ok(())
    }

    /// Deletes the oldest segments once no live entry is left in them. The newest vote,
    /// committed and purge records of each group are written again first when they lie in such a
    /// segment, and the file is removed only after that rewrite is durable.
    fn collect_garbage(&self, w: &mut WriterState) -> Result<(), LogError> {
        loop {
            let Some((&seq, meta)) = w.segments.first_key_value() else { return Ok(()) };
            if seq == w.active.seq || meta.live_entries > 0 {
                return Ok(());
            }
            let holders: Vec<GroupId> = w
                .groups
                .iter()
                .filter(|(_, g)| [g.state_segments.vote, g.state_segments.committed, g.state_segments.purge].contains(&Some(seq)))
                .map(|(id, _)| *id)
                .collect();
            for id in holders {
                self.rewrite_state(w, id, seq)?;
            }
            self.write_out(w)?;
            w.segments.remove(&seq);
            self.stats.segments_in_use.store(w.segments.len() as u64, Ordering::Relaxed);
            let after = Position { segment: w.active.seq, offset: w.active.write_offset };
            lock(&self.flush).deletions.push((after, seq));
            self.flush_wakeup.notify_one();
        }
    }

    fn rewrite_state(&self, w: &mut WriterState, id: GroupId, seq: u64) -> Result<(), LogError> {
        let Some(g) = w.groups.get(&id).cloned() else { return Ok(()) };
        let mut segs = g.state_segments;
        if segs.vote == Some(seq)
            && let Some(v) = &g.vote
        {
            segs.vote = Some(self.write_record(w, RecordKind::Vote, id, 0, 0, v)?.segment);
        }
        if segs.committed == Some(seq)
            && let Some((i, c)) = &g.committed
        {
            segs.committed = Some(self.write_record(w, RecordKind::Committed, id, 0, *i, c)?.segment);
        }
        if segs.purge == Some(seq)
            && let Some((i, p)) = &g.purged
        {
            segs.purge = Some(self.write_record(w, RecordKind::Purge, id, 0, *i, p)?.segment);
        }
        if let Some(g) = w.groups.get_mut(&id) {
            g.state_segments = segs;
        }
        Ok(())
    }
}

/// The oldest segment, when the reclaim condition holds: more than
/// [`LogOptions::reclaim_after_segments`] segments, at least half of their bytes dead.
fn reclaim_target(options: &LogOptions, w: &WriterState) -> Option<(u64, Arc<dyn LogFile>)> {
    let (&seq, meta) = w.segments.first_key_value()?;
    let live: u64 = w.segments.values().map(|m| m.live_bytes).sum();
    let held = w.segments.len() as u64 * options.segment_bytes;
    let wanted = w.segments.len() > options.reclaim_after_segments && held >= live.saturating_mul(2);
    (wanted && seq != w.active.seq && meta.live_entries > 0).then(|| (seq, meta.file.clone()))
}

/// Rewrites the live entries of the oldest segments forward while the reclaim condition holds;
/// waits for a roll, purge or truncation to check it again.
fn reclaimer_loop(shared: Arc<Shared>) {
    loop {
        {
            let mut r = lock(&shared.reclaim);
            while !r.wanted && !r.shutdown {
                r = shared.reclaim_wakeup.wait(r).unwrap_or_else(|p| p.into_inner());
            }
            if r.shutdown {
                return;
            }
            r.wanted = false;
        }
        loop {
            if shared.check_usable().is_err() {
                return;
            }
            let Some((seq, file)) = reclaim_target(&shared.options, &lock(&shared.writer)) else { break };
            if let Err(e) = shared.rewrite_segment(seq, &file) {
                if !matches!(e, LogError::Closed | LogError::Failed(_)) {
                    // A sealed segment that does not read back is corruption: never skip it. The
                    // log keeps serving what it can; the next open refuses it, naming the file
                    // and offset.
                    tracing::error!(segment = seq, error = %e, "reclaim stopped: cannot rewrite the oldest segment");
                }
                return;
            }
            tracing::debug!(segment = seq, "reclaimed the oldest segment");
        }
    }
}

impl Shared {
    /// Copies every live entry of sealed segment `seq` into the active segment as a rewrite
    /// record, at most [`LogOptions::rewrite_chunk_bytes`] per hold of the writer lock, then
    /// lets [`Self::collect_garbage`] delete it (after the round that makes the copies durable).
    ///
    /// The segment is read without the lock: its records never change. Under the lock each
    /// entry is copied only if its location is still this record; an entry truncated, purged
    /// or replaced meanwhile is left dead. Readers that took the old location before the move
    /// read the old file, which stays readable through their handle after it is removed.
    fn rewrite_segment(&self, seq: u64, file: &Arc<dyn LogFile>) -> Result<(), LogError> {
        let path = join(&self.dir, &segment::segment_name(seq));
        let bytes = segment::read_all(file, &path)?;
        let scan = segment::scan_bytes(&bytes, &path, seq, false, false)?;
        let candidates: Vec<&segment::ScannedRecord> =
            scan.records.iter().filter(|r| matches!(r.header.kind, RecordKind::Entry | RecordKind::Rewrite)).collect();
        let chunk_max = self.options.rewrite_chunk_bytes.max(1);
        let mut next = 0;
        while next < candidates.len() {
            let mut w = self.writable()?;
            let w = &mut *w;
            let mut moved = Vec::new();
            let mut chunk_bytes = 0;
            while next < candidates.len() && chunk_bytes < chunk_max {
                let r = candidates[next];
                next += 1;
                let h = &r.header;
                let from = EntryLocation { segment: seq, offset: r.offset, payload_len: h.payload_len, term: h.term };
                if w.groups.get(&h.group).and_then(|g| g.location(h.index)) != Some(from) {
                    continue;
                }
                let start = (r.offset as usize) + HEADER_LEN;
                let payload = &bytes[start..start + h.payload_len as usize];
                let to = self.write_record(w, RecordKind::Rewrite, h.group, h.term, h.index, payload)?;
                chunk_bytes += entry_bytes(&to);
                moved.push((h.group, h.index, from, to));
            }
            self.write_out(w)?;
            // The index learns of the copies only once their bytes are written.
            for (group, index, from, to) in moved {
                if let Some(g) = w.groups.get_mut(&group)
                    && g.relocate(index, from, to)
                {
                    self.note_removed(&mut w.segments, &[from]);
                    self.note_added(&mut w.segments, &to);
                    self.stats.entries_rewritten.fetch_add(1, Ordering::Relaxed);
                    self.stats.bytes_rewritten.fetch_add(entry_bytes(&to), Ordering::Relaxed);
                }
            }
        }
        let mut w = self.writable()?;
        let left = w.segments.get(&seq).map_or(0, |m| m.live_entries);
        if left > 0 {
            return Err(LogError::Invalid(format!("segment {seq} still holds {left} live entries after its rewrite")));
        }
        self.collect_garbage(&mut w)
    }
}

/// The group-commit loop: each round syncs the active segment once for every append that was
/// written before the round started, then answers all of them.
fn flusher_loop(shared: Arc<Shared>) {
    loop {
        let (waiters, deletions, shutdown) = {
            let mut q = lock(&shared.flush);
            while q.waiters.is_empty() && q.deletions.is_empty() && !q.shutdown {
                match shared.options.ack_before_sync {
                    None => q = shared.flush_wakeup.wait(q).unwrap_or_else(|p| p.into_inner()),
                    // Appends wait for no round in this test mode: sync on a timer instead.
                    Some(every) => {
                        let (guard, waited) = shared.flush_wakeup.wait_timeout(q, every).unwrap_or_else(|p| p.into_inner());
                        q = guard;
                        if waited.timed_out() {
                            break;
                        }
                    }
                }
            }
            (std::mem::take(&mut q.waiters), std::mem::take(&mut q.deletions), q.shutdown)
        };
        let result = sync_round(&shared);
        let result = result.and_then(|target| delete_segments(&shared, deletions, target));
        let n = waiters.len() as u64;
        for cb in waiters {
            cb(result.as_ref().map(|_| ()).map_err(|e| LogError::Failed(e.to_string())));
        }
        shared.stats.appends_made_durable.fetch_add(n, Ordering::Relaxed);
        if shutdown {
            let q = lock(&shared.flush);
            if q.waiters.is_empty() && q.deletions.is_empty() {
                return;
            }
        }
    }
}

/// Syncs the active segment up to what has been written; returns the position now durable.
fn sync_round(shared: &Shared) -> Result<Position, LogError> {
    shared.check_usable().or_else(|e| if matches!(e, LogError::Closed) { Ok(()) } else { Err(e) })?;
    let (target, file, durable) = {
        let w = lock(&shared.writer);
        (Position { segment: w.active.seq, offset: w.active.write_offset }, w.active.file.clone(), w.durable)
    };
    if target <= durable {
        return Ok(durable);
    }
    let started = Instant::now();
    // One fdatasync covers every record written to the segment before it began (and earlier
    // segments were synced when they were sealed).
    if let Err(e) = file.sync_data() {
        return Err(shared.fail(format!("fdatasync of segment {}: {e}", target.segment)));
    }
    let elapsed = started.elapsed();
    shared.stats.sync_rounds.fetch_add(1, Ordering::Relaxed);
    shared.stats.sync_nanos_total.fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    shared.stats.fsync_latency.record(elapsed);
    let mut w = lock(&shared.writer);
    if target > w.durable {
        w.durable = target;
    }
    Ok(target)
}

fn delete_segments(shared: &Shared, deletions: Vec<(Position, u64)>, durable: Position) -> Result<Position, LogError> {
    if deletions.is_empty() {
        return Ok(durable);
    }
    let mut later = Vec::new();
    let mut removed = false;
    for (after, seq) in deletions {
        if after > durable {
            later.push((after, seq));
            continue;
        }
        let path = join(&shared.dir, &segment::segment_name(seq));
        if let Err(e) = shared.fs.remove(&path) {
            return Err(shared.fail(format!("removing {}: {e}", path.display())));
        }
        removed = true;
        shared.stats.segments_deleted.fetch_add(1, Ordering::Relaxed);
    }
    if removed {
        // Removals must be durable in order too: a crash must never bring back an old segment
        // without the ones after it, which the contiguity check on open would refuse.
        if let Err(e) = shared.fs.sync_dir(&shared.dir) {
            return Err(shared.fail(format!("syncing {}: {e}", shared.dir.display())));
        }
    }
    if !later.is_empty() {
        lock(&shared.flush).deletions.extend(later);
    }
    Ok(durable)
}

/// Keeps one zero-filled, synced file ready for the writer to roll onto.
fn preallocator_loop(shared: Arc<Shared>) {
    loop {
        {
            let mut spare = lock(&shared.spare);
            while !spare.shutdown && (spare.ready || spare.error.is_some()) {
                spare = shared.spare_changed.wait(spare).unwrap_or_else(|p| p.into_inner());
            }
            if spare.shutdown {
                return;
            }
        }
        let result = prepare_spare(&*shared.fs, &shared.dir, shared.options.segment_bytes);
        let mut spare = lock(&shared.spare);
        match result {
            Ok(()) => spare.ready = true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot preallocate segments; new segments will grow as they are written");
                spare.error = Some(e.to_string());
            }
        }
    }
}

/// Writes `spare.tmp` in `dir`: `size` zero bytes, synced, its directory entry synced.
fn prepare_spare(fs: &dyn FileSystem, dir: &Path, size: u64) -> Result<(), LogError> {
    const ZEROS: usize = 1 << 20;
    let path = join(dir, SPARE_NAME);
    let io = |e| LogError::io(&path, e);
    match fs.remove(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    let file = fs.open(&path, true).map_err(io)?;
    let zeros = vec![0u8; ZEROS];
    let mut at = 0u64;
    while at < size {
        let n = (size - at).min(ZEROS as u64) as usize;
        file.write_all_at(&zeros[..n], at).map_err(io)?;
        at += n as u64;
    }
    file.sync_data().map_err(io)?;
    fs.sync_dir(dir).map_err(io)?;
    Ok(())
}

/// Makes segment `seq` exist, from the prepared spare or as a new growing file, with its header
/// written and synced before any record can go in: a segment file whose header is not valid was
/// never used (see [`scan_dir`]).
fn install_segment(fs: &dyn FileSystem, dir: &Path, seq: u64, use_spare: bool) -> Result<Arc<dyn LogFile>, LogError> {
    let path = join(dir, &segment::segment_name(seq));
    let io = |e| LogError::io(&path, e);
    if use_spare {
        fs.rename(&join(dir, SPARE_NAME), &path).map_err(io)?;
    }
    let file = fs.open(&path, true).map_err(io)?;
    file.write_all_at(&segment::encode_segment_header(seq), 0).map_err(io)?;
    file.sync_data().map_err(io)?;
    fs.sync_dir(dir).map_err(io)?;
    Ok(file)
}

/// What reading a whole log directory found: each segment's scan and the groups it replays to.
pub(crate) struct DirScan {
    pub segments: Vec<ScannedSegment>,
    pub groups: HashMap<GroupId, GroupIndex>,
    /// The newest segment file, when it was created but its header never became durable: no
    /// record was ever written to it. Not in `segments`; opening the log removes it.
    pub never_used: Option<PathBuf>,
}

pub(crate) struct ScannedSegment {
    pub path: PathBuf,
    pub file: Arc<dyn LogFile>,
    pub scan: segment::SegmentScan,
    pub live_entries: u64,
    pub live_bytes: u64,
}

/// Reads every segment of `dir` and replays its records, changing nothing on disk. Fails, with
/// the file and offset, on damage that is not a torn tail, on a missing segment, and when a
/// group's committed entries are not all present.
pub(crate) fn scan_dir(dir: &Path, fs: &dyn FileSystem, writable: bool) -> Result<DirScan, LogError> {
    let names = fs.list(dir).map_err(|e| LogError::io(dir, e))?;
    let mut seqs: Vec<u64> = names.iter().filter_map(|n| segment::parse_segment_name(n)).collect();
    seqs.sort_unstable();
    for pair in seqs.windows(2) {
        if pair[1] != pair[0] + 1 {
            let missing = join(dir, &segment::segment_name(pair[0] + 1));
            return Err(LogError::Corrupt { file: missing, offset: 0, reason: "segment file missing between its neighbours".into() });
        }
    }
    let mut groups: HashMap<GroupId, GroupIndex> = HashMap::new();
    let mut live: BTreeMap<u64, Live> = BTreeMap::new();
    let mut segments = Vec::with_capacity(seqs.len());
    let open = |path: &Path| if writable { fs.open(path, false) } else { fs.open_read_only(path) }.map_err(|e| LogError::io(path, e));
    let mut never_used = None;
    if let Some(&last) = seqs.last() {
        let path = join(dir, &segment::segment_name(last));
        if segment::header_never_written(&open(&path)?).map_err(|e| LogError::io(&path, e))? {
            never_used = Some(path);
            seqs.pop();
        }
    }
    for (i, &seq) in seqs.iter().enumerate() {
        let path = join(dir, &segment::segment_name(seq));
        let file = open(&path)?;
        let scan = segment::scan(&file, &path, seq, i + 1 == seqs.len(), false)?;
        segments.push(ScannedSegment { path, file, scan, live_entries: 0, live_bytes: 0 });
    }
    for s in &segments {
        let seq = s.scan.seq;
        live.insert(seq, Live::default());
        for r in &s.scan.records {
            replay(&mut groups, &mut live, seq, r).map_err(|reason| LogError::Corrupt {
                file: s.path.clone(),
                offset: r.offset,
                reason,
            })?;
        }
    }
    for s in &mut segments {
        let l = live.get(&s.scan.seq).copied().unwrap_or_default();
        (s.live_entries, s.live_bytes) = (l.entries, l.bytes);
    }
    if let Some(last) = segments.last() {
        let end = match last.scan.end {
            SegmentEnd::Clean { offset } | SegmentEnd::TornTail { offset, .. } => offset,
        };
        let mut ids: Vec<_> = groups.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let g = &groups[&id];
            g.finish_replay().map_err(|reason| LogError::Corrupt {
                file: last.path.clone(),
                offset: end,
                reason: format!("group {id}: {reason}"),
            })?;
            if let Some((c, _)) = &g.committed
                && g.last_index().is_none_or(|l| l < *c)
            {
                return Err(LogError::Corrupt {
                    file: last.path.clone(),
                    offset: end,
                    reason: format!(
                        "group {id}: committed index {c} is past the last entry {:?}: committed entries are missing",
                        g.last_index()
                    ),
                });
            }
        }
    }
    Ok(DirScan { segments, groups, never_used })
}

/// Opens the segments in `dir`, replays every record into the group indexes and cuts a torn
/// tail; creates the first segment of an empty log.
fn recover(dir: &Path, options: &LogOptions, fs: &dyn FileSystem) -> Result<(WriterState, RecoveryReport), LogError> {
    let names = fs.list(dir).map_err(|e| LogError::io(dir, e))?;
    if names.iter().any(|n| n == SPARE_NAME) {
        fs.remove(&join(dir, SPARE_NAME)).map_err(|e| LogError::io(dir, e))?;
    }
    let scan = scan_dir(dir, fs, true)?;
    if let Some(unused) = &scan.never_used {
        tracing::info!(file = %unused.display(), "removing a segment file that was created but never used");
        fs.remove(unused).map_err(|e| LogError::io(unused, e))?;
        fs.sync_dir(dir).map_err(|e| LogError::io(dir, e))?;
    }
    let DirScan { segments: mut scanned, groups, .. } = scan;
    if scanned.is_empty() {
        let seq = 1;
        prepare_spare(fs, dir, options.segment_bytes)?;
        let path = join(dir, &segment::segment_name(seq));
        let file = install_segment(fs, dir, seq, true)?;
        let file_len = file.len().map_err(|e| LogError::io(&path, e))?;
        let scan = segment::SegmentScan { seq, file_len, records: Vec::new(), end: SegmentEnd::Clean { offset: SEGMENT_HEADER_LEN } };
        scanned.push(ScannedSegment { path, file, scan, live_entries: 0, live_bytes: 0 });
    }
    let mut report = RecoveryReport { segments: scanned.len(), groups: groups.len(), ..Default::default() };
    let mut segments = BTreeMap::new();
    let mut active = None;
    let count = scanned.len();
    for (i, s) in scanned.into_iter().enumerate() {
        report.records += s.scan.records.len() as u64;
        let end = match s.scan.end {
            SegmentEnd::Clean { offset } => offset,
            SegmentEnd::TornTail { offset, reason } => {
                tracing::warn!(file = %s.path.display(), offset, %reason, "cutting a torn tail");
                // Zero the torn bytes so they can never be mistaken for records again.
                let zeros = vec![0u8; (s.scan.file_len - offset) as usize];
                s.file.write_all_at(&zeros, offset).and_then(|_| s.file.sync_data()).map_err(|e| LogError::io(&s.path, e))?;
                report.torn_tail = Some((s.path.clone(), offset));
                offset
            }
        };
        segments.insert(s.scan.seq, SegmentMeta { file: s.file.clone(), live_entries: s.live_entries, live_bytes: s.live_bytes });
        if i + 1 == count {
            // A segment made when no spare was ready grows as it is written, up to the segment size.
            let capacity = s.scan.file_len.max(options.segment_bytes);
            active = Some(ActiveSegment { seq: s.scan.seq, file: s.file, write_offset: end, capacity });
        }
    }
    let active = active.ok_or_else(|| LogError::Invalid("no segment".into()))?;
    // What was read may be in the page cache only: written by a process that died before its
    // fdatasync. The log is about to vouch for it (openraft acknowledges it to the leader as
    // stored), so it must be durable first, or a later power cut takes what was acknowledged.
    for (seq, meta) in &segments {
        meta.file.sync_data().map_err(|e| LogError::io(&join(dir, &segment::segment_name(*seq)), e))?;
    }
    fs.sync_dir(dir).map_err(|e| LogError::io(dir, e))?;
    let durable = Position { segment: active.seq, offset: active.write_offset };
    Ok((WriterState { active, segments, groups, durable, scratch: Vec::new() }, report))
}

/// Live entries of one segment while replaying: their count and record bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Live {
    entries: u64,
    bytes: u64,
}

fn replay(
    groups: &mut HashMap<GroupId, GroupIndex>,
    live: &mut BTreeMap<u64, Live>,
    seq: u64,
    r: &segment::ScannedRecord,
) -> Result<(), String> {
    let h = &r.header;
    let g = groups.entry(h.group).or_default();
    let here = EntryLocation { segment: seq, offset: r.offset, payload_len: h.payload_len, term: h.term };
    let mut removed = Vec::new();
    match h.kind {
        RecordKind::Entry => {
            removed = g.replay_entry(h.index, here)?;
            add_live(live, &here);
        }
        RecordKind::Rewrite => {
            removed.extend(g.replay_rewrite(h.index, here)?);
            add_live(live, &here);
        }
        RecordKind::Truncate => removed = g.truncate_from(h.index),
        RecordKind::Purge => {
            removed = g.purge_upto(h.index, r.payload.clone());
            g.state_segments.purge = Some(seq);
        }
        RecordKind::Vote => {
            g.vote = Some(r.payload.clone());
            g.state_segments.vote = Some(seq);
        }
        RecordKind::Committed => {
            g.committed = Some((h.index, r.payload.clone()));
            g.state_segments.committed = Some(seq);
        }
    }
    for l in removed {
        if let Some(n) = live.get_mut(&l.segment) {
            n.entries -= 1;
            n.bytes -= entry_bytes(&l);
        }
    }
    Ok(())
}

fn add_live(live: &mut BTreeMap<u64, Live>, l: &EntryLocation) {
    let n = live.entry(l.segment).or_default();
    n.entries += 1;
    n.bytes += entry_bytes(l);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn sync_latency_buckets_are_upper_inclusive() {
        let cases = [
            (0, 0),
            (50_000, 0),
            (50_001, 1),
            (100_000, 1),
            (999_999, 4),
            (1_000_000, 4),
            (2_500_001, 6),
            (999_999_999, 12),
            (1_000_000_000, 12),
            (1_000_000_001, 13),
            (u64::MAX, 13),
        ];
        for (nanos, bucket) in cases {
            assert_eq!(sync_latency_bucket(nanos), bucket, "{nanos} ns");
        }
    }

    #[test]
    fn sync_latency_snapshot_counts_and_sums() {
        let h = SyncLatencyHistogram::default();
        for micros in [10, 50, 70, 3_000, 2_000_000] {
            h.record(Duration::from_micros(micros));
        }
        let s = h.snapshot();
        let mut expected = [0; SYNC_LATENCY_BUCKETS];
        expected[0] = 2;
        expected[1] = 1;
        expected[6] = 1;
        expected[13] = 1;
        assert_eq!(s.buckets, expected);
        assert_eq!(s.count(), 5);
        assert_eq!(s.sum_nanos, 2_003_130_000);
    }
}

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
//!
//! One file per concern: [`group`] (a group's calls), `writer` (the active segment and the
//! indexes under the writer lock), `flusher` (group commit), `spare` (preallocation), `reclaim`,
//! `recovery` (opening a directory), [`stats`].

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

mod flusher;
pub mod group;
mod reclaim;
mod recovery;
mod spare;
pub mod stats;
mod writer;

use flusher::{FlushQueue, flusher_loop};
pub use group::{DurableWait, GroupLog, GroupState};
use reclaim::{ReclaimState, reclaim_target, reclaimer_loop};
use recovery::recover;
pub(crate) use recovery::scan_dir;
use spare::{SpareState, install_segment, preallocator_loop, prepare_spare};
pub use stats::{EngineStats, SYNC_LATENCY_BOUNDS_NANOS, SYNC_LATENCY_BUCKETS, SyncLatencyHistogram, SyncLatencySnapshot};
use writer::{ActiveSegment, SegmentMeta, Wait, WriterState, entry_bytes};

/// Identifies a Raft group within one engine.
pub type GroupId = u64;

/// Called once appended records are durable, or with the error that stopped the engine.
pub type OnDurable = Box<dyn FnOnce(Result<(), LogError>) + Send>;

/// Tunables of the engine, each with its default. The keys a deployment sets are read from
/// serde (the broker's `[log]` section); the test-only ones are not.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogOptions {
    /// Size of each segment file, preallocated. Default 64 MiB.
    pub segment_bytes: u64,
    /// Largest payload of one record. Default 16 MiB; at most what fits in one segment.
    pub max_record_bytes: u64,
    /// **Test only, never in production.** Acknowledge appended entries as soon as they are
    /// written, and sync only every this often: a power loss then loses acknowledged entries.
    /// It exists so that jepsen's checker can be shown to catch exactly that. `None` (the
    /// default): an append is acknowledged once fdatasynced.
    #[serde(skip)]
    pub ack_before_sync: Option<std::time::Duration>,
    /// Reclaim: once the log holds more than this many segments and at least half of their
    /// bytes are dead, the live entries of the oldest segment are rewritten into the active one
    /// so that segment can be deleted (see [`crate::engine`]). Default 4; at least 1.
    pub reclaim_after_segments: usize,
    /// Reclaim: the most entry bytes rewritten under one hold of the writer lock, which bounds
    /// how long a rewrite stalls every group's appends. Default 1 MiB; at least 1.
    pub rewrite_chunk_bytes: u64,
    /// Reclaim runs on its own thread whenever the condition may hold (default). Off, it runs
    /// only when [`LogEngine::reclaim_oldest`] is called: tests that must decide when.
    #[serde(skip)]
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

    /// What is wrong with these options, each as (field, reason); empty when the engine can
    /// open with them. [`LogEngine::open`] refuses any.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        let smallest = SEGMENT_HEADER_LEN + HEADER_LEN as u64 + record::ALIGN;
        if self.segment_bytes < smallest {
            problems.push(("segment_bytes", format!("{} is too small: a segment holds at least {smallest} bytes", self.segment_bytes)));
        }
        if self.max_record_bytes == 0 {
            problems.push(("max_record_bytes", "must be above 0".to_owned()));
        }
        if self.reclaim_after_segments == 0 {
            problems.push(("reclaim_after_segments", "must be at least 1".to_owned()));
        }
        if self.rewrite_chunk_bytes == 0 {
            problems.push(("rewrite_chunk_bytes", "must be above 0".to_owned()));
        }
        problems
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
        if let Some((field, reason)) = options.problems().into_iter().next() {
            return Err(LogError::Invalid(format!("{field}: {reason}")));
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

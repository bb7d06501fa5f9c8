//! `RaftLogStore` never blocks the async worker that calls it (issue #10 item 8).
//!
//! An append that fills the active segment rolls to the next one, and a roll fdatasyncs the
//! sealed segment under the engine's writer lock. On a slow disk that is seconds. Run on an async
//! worker, it stopped every other task of that worker (heartbeats of groups whose disk is fine
//! included) until the sync returned. Here the disk holds every sync until the test releases it,
//! a roll is made to happen inside `append`, and another task on the same single-threaded
//! runtime must keep running meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use raft_log::fault::{HOLD_SYNCS, SlowSyncFileSystem};
use raft_log::fs::StdFileSystem;
use raft_log::{LogEngine, LogOptions, RaftLogStore};

openraft::declare_raft_types!(
    pub TestConfig:
        D = String,
        R = String,
);

type Entry = openraft::alias::EntryOf<TestConfig>;

fn entry(index: u64, data: &str) -> Entry {
    Entry::new_normal(openraft::testing::log_id::<TestConfig>(1, 1, index), data.to_string())
}

/// How long the watchdog gives the ticker before it lets the disk go and reports a stall.
const STALL: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "current_thread")]
async fn a_segment_roll_on_a_held_disk_does_not_stop_other_tasks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = SlowSyncFileSystem::new(Arc::new(StdFileSystem));
    let delay = disk.delay_ms();
    let options = LogOptions { segment_bytes: 16 << 10, ..LogOptions::default() };
    let (engine, _) = LogEngine::open_with(dir.path(), options, Arc::new(disk)).expect("open");
    let mut store = RaftLogStore::<TestConfig>::new(engine.group(1));

    // Nearly fill the first segment; the next append must roll.
    let filler = "x".repeat(15 << 10);
    store.append([entry(0, &filler)], IOFlushed::noop()).await.expect("append filler");
    engine.sync().expect("sync");
    assert_eq!(engine.segment_count(), 1);

    delay.store(HOLD_SYNCS, Ordering::SeqCst);
    // The watchdog: an OS thread, so it runs even if the runtime's only thread is blocked.
    let ticks = Arc::new(AtomicU64::new(0));
    let stalled = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (ticks, stalled, delay) = (ticks.clone(), stalled.clone(), delay.clone());
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + STALL;
            while ticks.load(Ordering::SeqCst) < 20 {
                if std::time::Instant::now() > deadline {
                    stalled.store(true, Ordering::SeqCst);
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            // Let the disk catch up either way, so the test ends.
            delay.store(0, Ordering::SeqCst);
        })
    };
    let ticker = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                ticks.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    store.append([entry(1, &filler)], IOFlushed::noop()).await.expect("append that rolls");
    watchdog.join().expect("watchdog");
    ticker.abort();
    assert!(!stalled.load(Ordering::SeqCst), "other tasks stopped for {STALL:?} while an append waited for a segment roll's fsync");
    assert_eq!(engine.segment_count(), 2, "the second append rolled to a new segment");
}

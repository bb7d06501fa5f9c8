//! `GroupLog::durable`: what a state machine waits for before it applies an entry. It resolves
//! once the entry's sync round is over, never before, and follows truncations, purges, reopens
//! and a failing disk.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use raft_log::fault::{FAIL_SYNCS, HOLD_SYNCS, SlowSyncFileSystem};
use raft_log::fs::StdFileSystem;
use raft_log::{DurableAt, LogEngine, LogError, LogOptions};

fn options() -> LogOptions {
    LogOptions { segment_bytes: 64 << 10, ..LogOptions::default() }
}

fn append(engine: &LogEngine, indexes: std::ops::RangeInclusive<u64>, term: u64) {
    let payload = b"entry".as_slice();
    engine.group(1).append(indexes.map(|i| (term, i, payload)), Box::new(|_| {})).expect("append");
}

/// A log on a disk whose syncs can be held, with entries 0..=`last` (term 1) durable.
async fn durable_up_to(dir: &std::path::Path, last: u64) -> (LogEngine, SlowSyncFileSystem) {
    let disk = SlowSyncFileSystem::new(Arc::new(StdFileSystem));
    let (engine, _) = LogEngine::open_with(dir, options(), Arc::new(disk.clone())).expect("open");
    append(&engine, 0..=last, 1);
    engine.group(1).durable(last).wait().await.expect("durable");
    (engine, disk)
}

#[tokio::test]
async fn an_entry_is_durable_only_after_its_sync_round() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, disk) = durable_up_to(dir.path(), 2).await;

    // A slow disk: the next entries are written (readable) but not durable.
    disk.delay_ms().store(HOLD_SYNCS, Ordering::SeqCst);
    append(&engine, 3..=4, 1);
    assert_eq!(engine.group(1).read(3, 5).expect("read").len(), 2, "written entries are readable at once");
    assert!(engine.group(1).durable(2).is_ready(), "entries synced before stay durable");
    let pending = engine.group(1).durable(4);
    assert!(!pending.is_ready(), "entry 4 is not synced yet");
    // Not appended yet: waited for too.
    assert!(!engine.group(1).durable(5).is_ready());
    disk.delay_ms().store(0, Ordering::SeqCst);
    pending.wait().await.expect("durable once the disk catches up");
}

#[tokio::test]
async fn a_truncated_entry_is_durable_again_only_once_its_replacement_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, disk) = durable_up_to(dir.path(), 5).await;

    disk.delay_ms().store(HOLD_SYNCS, Ordering::SeqCst);
    // A new leader's entries replace 3..: by an explicit truncation, and by an overlapping append.
    engine.group(1).truncate_from(4).expect("truncate");
    assert!(!engine.group(1).durable(4).is_ready(), "entry 4 was dropped; its replacement is not written yet");
    append(&engine, 3..=4, 2);
    assert!(engine.group(1).durable(2).is_ready());
    assert!(!engine.group(1).durable(3).is_ready(), "the durable entry 3 of term 1 was replaced by an unsynced one");
    let replaced = engine.group(1).durable(4);
    disk.delay_ms().store(0, Ordering::SeqCst);
    replaced.wait().await.expect("durable");
}

#[tokio::test]
async fn purged_and_recovered_entries_are_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (engine, _) = LogEngine::open(dir.path(), options()).expect("open");
        append(&engine, 0..=9, 1);
        engine.group(1).durable(9).wait().await.expect("durable");
        engine.group(1).purge(4, b"log id 4").expect("purge");
        assert!(engine.group(1).durable(3).is_ready(), "a purged entry needs no wait");
    }
    // Recovery syncs what it read before serving, so a reopened log knows its entries durable.
    let (engine, _) = LogEngine::open(dir.path(), options()).expect("reopen");
    assert!(engine.group(1).durable(9).is_ready());
    assert!(!engine.group(1).durable(10).is_ready());
}

#[tokio::test]
async fn a_failed_sync_fails_the_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = SlowSyncFileSystem::new(Arc::new(StdFileSystem));
    let (engine, _) = LogEngine::open_with(dir.path(), options(), Arc::new(disk.clone())).expect("open");
    disk.delay_ms().store(FAIL_SYNCS, Ordering::SeqCst);
    append(&engine, 0..=0, 1);
    let result = engine.group(1).durable(0).wait().await;
    assert!(matches!(result, Err(LogError::Failed(_))), "{result:?}");
    assert!(matches!(engine.group(1).durable(0), DurableAt::Ready(Err(_))), "a failed log answers every later wait at once");
}

//! Recovery makes durable what it accepts. A process that dies after appending, before its
//! fdatasync, leaves its records in the page cache: the restarted log reads them back and its
//! group then vouches for them (openraft acknowledges them to the leader as stored). A power cut
//! after that must not take them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use raft_log::fault::{FAIL_SYNCS, PowerLossFileSystem, SlowSyncFileSystem};
use raft_log::fs::StdFileSystem;
use raft_log::{LogEngine, LogOptions};

fn indexes(engine: &LogEngine) -> Vec<u64> {
    engine.group(1).read(0, u64::MAX).expect("read").iter().map(|e| e.index).collect()
}

#[test]
fn records_recovery_read_from_the_page_cache_survive_a_later_power_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    // What the machine's disk and page cache hold, across processes.
    let machine = PowerLossFileSystem::new(Arc::new(StdFileSystem));
    let options = LogOptions { segment_bytes: 64 << 10, ..LogOptions::default() };

    // The first process: entry 1 is made durable; then its fdatasyncs fail, so entry 2 reaches
    // the page cache only, and the process dies.
    {
        let disk = SlowSyncFileSystem::new(Arc::new(machine.clone()));
        let (engine, _) = LogEngine::open_with(dir.path(), options.clone(), Arc::new(disk.clone())).expect("open");
        engine.group(1).append([(1, 1, b"durable".as_slice())], Box::new(|_| {})).expect("append 1");
        engine.sync().expect("sync");
        disk.delay_ms().store(FAIL_SYNCS, Ordering::Relaxed);
        engine.group(1).append([(1, 2, b"in the page cache".as_slice())], Box::new(|_| {})).expect("append 2");
        assert!(engine.sync().is_err(), "the failing disk syncs nothing more");
    }

    // The restarted process reads both back: from here on its group treats entry 2 as stored.
    {
        let (engine, _) = LogEngine::open_with(dir.path(), options.clone(), Arc::new(machine.clone())).expect("reopen");
        assert_eq!(indexes(&engine), [1, 2], "the page cache holds entry 2");
        // Then the power fails while it runs.
        machine.crash().expect("crash");
    }
    machine.power_on();
    let (engine, _) = LogEngine::open_with(dir.path(), options, Arc::new(machine)).expect("reopen after power loss");
    assert_eq!(indexes(&engine), [1, 2], "an entry the restarted log served was lost to a later power cut");
}

//! A power cut that tears the last page written (`PowerLossFileSystem::with_torn_pages`):
//! recovery finds the torn record by its checksum, cuts it (reporting where), and keeps every
//! entry that was made durable; the log then takes appends again and keeps them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use raft_log::fault::{PowerLossFileSystem, SlowSyncFileSystem};
use raft_log::fs::{FileSystem, StdFileSystem};
use raft_log::{LogEngine, LogOptions};

/// Small segments, so that preparing the next one costs little.
fn options() -> LogOptions {
    LogOptions { segment_bytes: 1 << 20, ..LogOptions::default() }
}

fn payload(index: u64) -> Vec<u8> {
    format!("entry {index} ").repeat(40).into_bytes()
}

#[test]
fn a_torn_last_page_is_cut_at_its_checksum_and_durable_entries_survive() {
    let mut torn = 0;
    for seed in 0..24 {
        let dir = tempfile::tempdir().unwrap();
        let power = PowerLossFileSystem::with_torn_pages(Arc::new(StdFileSystem), seed);
        // Slow syncs keep the last appends unsynced when the power goes.
        let slow = SlowSyncFileSystem::new(Arc::new(power.clone()));
        let (engine, _) = LogEngine::open_with(dir.path(), options(), Arc::new(slow.clone()) as Arc<dyn FileSystem>).unwrap();
        let group = engine.group(1);
        let entries: Vec<(u64, u64, Vec<u8>)> = (1..=20).map(|i| (1, i, payload(i))).collect();
        group.append(entries.iter().map(|(t, i, p)| (*t, *i, p.as_slice())), Box::new(|_| {})).unwrap();
        engine.sync().unwrap();
        slow.delay_ms().store(300, Ordering::Relaxed);
        // Unsynced: a stretch that ends somewhere in a page.
        let more: Vec<(u64, u64, Vec<u8>)> = (21..=20 + 3 + seed % 7).map(|i| (1, i, payload(i))).collect();
        group.append(more.iter().map(|(t, i, p)| (*t, *i, p.as_slice())), Box::new(|_| {})).unwrap();
        power.crash().unwrap();
        slow.delay_ms().store(0, Ordering::Relaxed);
        drop(group);
        drop(engine);
        power.power_on();

        let (engine, report) = LogEngine::open_with(dir.path(), options(), Arc::new(power.clone())).unwrap_or_else(|e| {
            panic!("seed {seed}: the log does not open after a torn power cut: {e}");
        });
        if report.torn_tail.is_some() {
            torn += 1;
        }
        let got = engine.group(1).read(0, u64::MAX).unwrap();
        assert!(got.len() >= 20, "seed {seed}: durable entries lost: {} left", got.len());
        for (k, e) in got.iter().enumerate() {
            let index = k as u64 + 1;
            assert_eq!((e.index, e.term, &e.payload), (index, 1, &payload(index)), "seed {seed}");
        }
        // The cut log takes appends after what it kept, and keeps them.
        let next = got.len() as u64 + 1;
        let p = payload(next);
        engine.group(1).append([(2, next, p.as_slice())], Box::new(|_| {})).unwrap();
        engine.sync().unwrap();
        power.crash().unwrap();
        drop(engine);
        power.power_on();
        let (engine, _) = LogEngine::open_with(dir.path(), options(), Arc::new(power.clone())).unwrap();
        let last = engine.group(1).read(next, next + 1).unwrap();
        assert_eq!(last.len(), 1, "seed {seed}");
        assert_eq!((last[0].term, &last[0].payload), (2, &p), "seed {seed}");
    }
    // Most cuts land inside a record: its checksum fails and recovery reports the torn tail.
    assert!(torn >= 12, "only {torn} of 24 power cuts left a torn tail");
}

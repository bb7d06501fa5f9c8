//! Many writers, many groups, one power cut: every append acknowledged as durable before the
//! cut is there afterwards, byte for byte, and each group holds a gap-free prefix of what was
//! appended to it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use raft_log::fault::PowerLossFileSystem;
use raft_log::fs::StdFileSystem;
use raft_log::{LogEngine, LogOptions};

const GROUPS: u64 = 32;
const APPENDS_PER_GROUP_MAX: u64 = 2_000;
const ACKED_BEFORE_CRASH: u64 = 3_000;

fn payload(group: u64, index: u64) -> Vec<u8> {
    let len = 16 + ((group * 7 + index * 13) % 700) as usize;
    (0..len).map(|i| (group as usize * 31 + index as usize * 17 + i) as u8).collect()
}

#[test]
fn every_acknowledged_append_survives_a_power_cut() {
    let dir = tempfile::tempdir().unwrap();
    let fs = PowerLossFileSystem::new(Arc::new(StdFileSystem));
    let options = LogOptions { segment_bytes: 64 * 1024, ..LogOptions::default() };
    let (engine, _) = LogEngine::open_with(dir.path(), options.clone(), Arc::new(fs.clone())).unwrap();

    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..GROUPS).map(|_| AtomicU64::new(0)).collect());
    let writers: Vec<_> = (0..GROUPS)
        .map(|g| {
            let log = engine.group(g);
            let acked = acked.clone();
            std::thread::spawn(move || {
                for i in 1..=APPENDS_PER_GROUP_MAX {
                    let (tx, rx) = mpsc::channel();
                    let data = payload(g, i);
                    let appended = log.append(
                        [(1, i, data.as_slice())],
                        Box::new(move |r| {
                            let _ = tx.send(r);
                        }),
                    );
                    if appended.is_err() {
                        return;
                    }
                    match rx.recv_timeout(Duration::from_secs(10)) {
                        // Acknowledge only after the durable callback, as Raft does.
                        Ok(Ok(())) => acked[g as usize].store(i, Ordering::SeqCst),
                        _ => return,
                    }
                }
            })
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(20);
    let total = || acked.iter().map(|a| a.load(Ordering::SeqCst)).sum::<u64>();
    while total() < ACKED_BEFORE_CRASH && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Cut the power while the writers are still going.
    fs.crash().unwrap();
    let acked_at_crash: Vec<u64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    for w in writers {
        w.join().unwrap();
    }
    assert!(acked_at_crash.iter().sum::<u64>() >= ACKED_BEFORE_CRASH, "writers made too little progress before the deadline");
    drop(engine);
    fs.power_on();

    let (engine, _) = LogEngine::open_with(dir.path(), options, Arc::new(fs.clone())).unwrap();
    for g in 0..GROUPS {
        let entries = engine.group(g).read(0, u64::MAX).unwrap();
        let acked = acked_at_crash[g as usize];
        assert!(entries.len() as u64 >= acked, "group {g}: {} entries after the cut, {acked} were acknowledged", entries.len());
        for (n, e) in entries.iter().enumerate() {
            assert_eq!(e.index, n as u64 + 1, "group {g}: gap-free from 1");
            assert_eq!(e.payload, payload(g, e.index), "group {g} entry {}: same bytes", e.index);
        }
    }
}

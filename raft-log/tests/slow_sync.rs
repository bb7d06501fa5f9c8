//! `SlowSyncFileSystem` makes every sync wait the delay it is given, changeable while the log
//! runs: an acknowledged append has waited at least that long.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use raft_log::fault::SlowSyncFileSystem;
use raft_log::fs::StdFileSystem;
use raft_log::{LogEngine, LogOptions};

#[test]
fn acknowledgements_wait_for_the_slow_sync() {
    let dir = tempfile::tempdir().unwrap();
    let fs = SlowSyncFileSystem::new(Arc::new(StdFileSystem));
    let delay = fs.delay_ms();
    let (engine, _) = LogEngine::open_with(dir.path(), LogOptions::default(), Arc::new(fs)).unwrap();
    let group = engine.group(1);
    let append = |index: u64| {
        let (tx, rx) = mpsc::channel();
        let started = Instant::now();
        group.append([(1, index, b"payload".as_slice())], Box::new(move |r| tx.send(r.is_ok()).unwrap())).unwrap();
        assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), "append {index} failed");
        started.elapsed()
    };
    delay.store(300, Ordering::Relaxed);
    let slow = append(1);
    assert!(slow >= Duration::from_millis(300), "acknowledged after {slow:?}, before the 300 ms sync");
    delay.store(0, Ordering::Relaxed);
    append(2);
    assert_eq!(group.state().last_index, Some(2));
}

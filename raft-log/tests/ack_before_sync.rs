//! The broken test mode `LogOptions::ack_before_sync` does what jepsen's checker must catch:
//! appends are acknowledged before they are durable, and a power loss then loses acknowledged
//! entries. The same appends in the normal mode survive the same power loss.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use raft_log::fault::PowerLossFileSystem;
use raft_log::fs::StdFileSystem;
use raft_log::{LogEngine, LogOptions};

/// Appends entries 1..=10 to group 1, waits for all ten acknowledgements, cuts the power, and
/// returns the last index the reopened log holds.
fn last_index_after_power_loss(options: LogOptions) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let fs = PowerLossFileSystem::new(Arc::new(StdFileSystem));
    let (engine, _) = LogEngine::open_with(dir.path(), options.clone(), Arc::new(fs.clone())).unwrap();
    let group = engine.group(1);
    let (acked, acks) = mpsc::channel();
    for index in 1..=10u64 {
        let payload = vec![index as u8; 100];
        let acked = acked.clone();
        group.append([(1, index, payload.as_slice())], Box::new(move |r| acked.send((index, r.is_ok())).unwrap())).unwrap();
    }
    for _ in 1..=10 {
        let (index, ok) = acks.recv_timeout(Duration::from_secs(10)).expect("every append is acknowledged");
        assert!(ok, "append {index} failed");
    }
    fs.crash().unwrap();
    drop(group);
    drop(engine);
    fs.power_on();
    let (engine, _) = LogEngine::open_with(dir.path(), options, Arc::new(fs)).unwrap();
    engine.group(1).state().last_index.unwrap_or(0)
}

#[test]
fn acknowledged_appends_survive_power_loss_unless_acknowledged_before_sync() {
    assert_eq!(last_index_after_power_loss(LogOptions::default()), 10, "acknowledged means durable");
    let broken = LogOptions { ack_before_sync: Some(Duration::from_secs(3600)), ..LogOptions::default() };
    assert_eq!(last_index_after_power_loss(broken), 0, "acknowledged before the sync, lost with the power");
}

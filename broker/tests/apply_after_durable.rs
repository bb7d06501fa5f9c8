//! The apply-versus-durable rule (`docs/ARCHITECTURE.md`): a queue group's state machine never
//! gets ahead of its own replica's durable log.
//!
//! openraft applies what the cluster committed and this replica accepted, which can be more than
//! this replica has fsynced: a follower whose disk is slow gets the leader's commit index with
//! the entries themselves. The queue store becomes durable on its own schedule (the periodic
//! flush, a memtable flush). If it held an applied index the log lost to a power cut, openraft
//! would purge the log up to that index on restart, and every message body of the replica would
//! be gone. Here one replica's log syncs slowly, the entries are applied as openraft would apply
//! them, the store is flushed, and the power goes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use broker::queue::{GroupCommand, NewMessage, QueueGroupConfig, QueueGroupOptions, QueueStateMachine};
use broker::store::{QueueStore, StoreOptions};
use openraft::alias::{CommittedLeaderIdOf, EntryPayloadOf};
use openraft::storage::RaftStateMachine;
use openraft::{Entry, EntryPayload};
use raft_log::fault::{PowerLossFileSystem, SlowSyncFileSystem};
use raft_log::fs::{FileSystem, StdFileSystem};
use raft_log::{LogEngine, LogOptions};

type C = QueueGroupConfig;
type LogEntry = Entry<CommittedLeaderIdOf<C>, EntryPayloadOf<C>>;

const GROUP: u64 = 5;
/// Long enough that, without the rule, apply, flush and power cut all happen inside one sync.
const SLOW_SYNC_MS: u64 = 2_000;

fn entry(index: u64, payload: EntryPayloadOf<C>) -> LogEntry {
    Entry { log_id: openraft::testing::log_id::<C>(1, 1, index), payload }
}

fn send(index: u64) -> LogEntry {
    let message = NewMessage {
        queue: 0,
        message_id: format!("m{index}"),
        tag: None,
        keys: vec![],
        properties: vec![],
        body: vec![index as u8; 100],
        ..NewMessage::default()
    };
    entry(index, EntryPayload::Normal(GroupCommand::Send { store_time_ms: 1, messages: vec![message] }))
}

/// Appends `entries` to the group's log as `RaftLogStore` does; the flag is set once they are
/// durable.
fn append(engine: &LogEngine, entries: &[LogEntry]) -> Arc<AtomicBool> {
    let encoded: Vec<(u64, u64, Vec<u8>)> =
        entries.iter().map(|e| (1, e.log_id.index, bincode::serialize(e).expect("encode entry"))).collect();
    let durable = Arc::new(AtomicBool::new(false));
    let flag = durable.clone();
    engine
        .group(GROUP)
        .append(encoded.iter().map(|(t, i, p)| (*t, *i, p.as_slice())), Box::new(move |r| flag.store(r.is_ok(), Ordering::SeqCst)))
        .expect("append");
    durable
}

async fn apply(sm: &mut QueueStateMachine, entries: Vec<LogEntry>) {
    sm.apply(futures::stream::iter(entries.into_iter().map(|e| Ok((e, None))))).await.expect("apply");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_flush_and_power_cut_never_leave_the_store_ahead_of_the_log() {
    let (log_dir, store_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let power = PowerLossFileSystem::new(Arc::new(StdFileSystem));
    let slow = SlowSyncFileSystem::new(Arc::new(power.clone()));
    let delay = slow.delay_ms();
    let fs: Arc<dyn FileSystem> = Arc::new(slow);
    let (engine, _) = LogEngine::open_with(log_dir.path(), LogOptions { segment_bytes: 1 << 20, ..LogOptions::default() }, fs).unwrap();
    let store = Arc::new(QueueStore::open(store_dir.path(), &StoreOptions::default()).unwrap().0);
    let mut sm = QueueStateMachine::with_options(store.clone(), GROUP, QueueGroupOptions::default()).with_log(engine.group(GROUP));

    // Entry 0 on a healthy disk.
    let first = vec![entry(0, EntryPayload::Blank)];
    append(&engine, &first);
    apply(&mut sm, first).await;

    // The disk slows down; entries 1..=3 are written, committed by the other replicas, applied.
    delay.store(SLOW_SYNC_MS, Ordering::SeqCst);
    let batch: Vec<LogEntry> = (1..=3).map(send).collect();
    let durable = append(&engine, &batch);
    apply(&mut sm, batch).await;
    let durable_when_applied = durable.load(Ordering::SeqCst);
    // The broker's periodic store flush, then the power goes.
    store.flush().unwrap();
    let store_applied = store.durable_applied_index(GROUP);
    power.crash().unwrap();
    delay.store(0, Ordering::SeqCst);
    drop(sm);
    drop(engine);
    power.power_on();

    let (engine, _) =
        LogEngine::open_with(log_dir.path(), LogOptions { segment_bytes: 1 << 20, ..LogOptions::default() }, Arc::new(power)).unwrap();
    let log_last = engine.group(GROUP).state().last_index;
    assert!(
        store_applied <= log_last,
        "after the power cut the store is applied to {store_applied:?} but the log ends at {log_last:?}: openraft would purge \
         the log up to the store's index and the message bodies would be gone"
    );
    assert!(durable_when_applied, "entries were applied before this replica's log had them durable");
    assert_eq!(log_last, Some(3));
}

/// A replica that applies ahead of a slow disk waits for it, and only for it: entries already
/// durable are known to be, without a sync round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_waits_for_the_sync_of_its_own_entries_only() {
    let (log_dir, store_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let slow = SlowSyncFileSystem::new(Arc::new(StdFileSystem));
    let delay = slow.delay_ms();
    let (engine, _) =
        LogEngine::open_with(log_dir.path(), LogOptions { segment_bytes: 1 << 20, ..LogOptions::default() }, Arc::new(slow)).unwrap();
    let store = Arc::new(QueueStore::open(store_dir.path(), &StoreOptions::default()).unwrap().0);
    let mut sm = QueueStateMachine::with_options(store.clone(), GROUP, QueueGroupOptions::default()).with_log(engine.group(GROUP));

    let first: Vec<LogEntry> = vec![entry(0, EntryPayload::Blank), send(1)];
    let durable = append(&engine, &first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !durable.load(Ordering::SeqCst) {
        assert!(tokio::time::Instant::now() < deadline, "entries 0 and 1 never became durable");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    delay.store(SLOW_SYNC_MS, Ordering::SeqCst);
    // Durable already: known without a sync round, so applied at once.
    assert!(engine.group(GROUP).durable(1).is_ready(), "entry 1 is durable, yet applying it would wait for a sync round");
    apply(&mut sm, first).await;
    assert_eq!(store.applied_index(GROUP), Some(1));

    let second = vec![send(2)];
    let durable = append(&engine, &second);
    apply(&mut sm, second).await;
    assert!(durable.load(Ordering::SeqCst), "entry 2 was applied before it was durable");
    assert_eq!(store.applied_index(GROUP), Some(2));
}

//! openraft's own storage conformance suite, run against the broker's real pair: `RaftLogStore`
//! of the queue group's type config over a `raft-log` engine, and `QueueStateMachine` over a
//! RocksDB `QueueStore`, each case in fresh directories.
//!
//! The suite expects a snapshot built after applying some entries to be at the applied log id
//! (`snapshot_meta`, `transfer_snapshot`). The queue state machine's snapshot is the checkpoint
//! at its trim point, and a checkpoint at which the group holds no message becomes the trim
//! point at once. The suite applies only blank and membership entries (it cannot build a
//! `GroupCommand`), so with a checkpoint at every entry (interval 1) every applied entry is
//! such a checkpoint and the snapshot is at the applied log id, as the suite asserts. With the
//! default interval the snapshot would be at the last multiple of 4096, which the suite does not
//! expect; with messages held it stays at the last trim (tested in `queue_replication.rs` and
//! the state machine's own tests).

use std::io;
use std::sync::Arc;

use broker::queue::{QueueGroupConfig, QueueGroupOptions, QueueStateMachine};
use broker::store::{QueueStore, StoreOptions};
use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use raft_log::{LogEngine, LogOptions, RaftLogStore};
use tempfile::TempDir;

const GROUP: u64 = 1;

struct DirStoreBuilder;

fn read_err(e: impl Into<io::Error>) -> StorageError<QueueGroupConfig> {
    StorageError::read(QueueGroupConfig::err_from_error(&e.into()))
}

impl StoreBuilder<QueueGroupConfig, RaftLogStore<QueueGroupConfig>, QueueStateMachine, (TempDir, TempDir)> for DirStoreBuilder {
    async fn build(
        &self,
    ) -> Result<((TempDir, TempDir), RaftLogStore<QueueGroupConfig>, QueueStateMachine), StorageError<QueueGroupConfig>> {
        let (log_dir, store_dir) = (tempfile::tempdir().map_err(read_err)?, tempfile::tempdir().map_err(read_err)?);
        // Small segments, so the cases also cross segment boundaries.
        let options = LogOptions { segment_bytes: 4096, ..LogOptions::default() };
        let (engine, _) = LogEngine::open(log_dir.path(), options).map_err(read_err)?;
        let (store, _) = QueueStore::open(store_dir.path(), &StoreOptions::default()).map_err(|e| read_err(io::Error::other(e)))?;
        let sm = QueueStateMachine::with_options(Arc::new(store), GROUP, QueueGroupOptions { checkpoint_interval_entries: 1 });
        Ok(((log_dir, store_dir), RaftLogStore::new(engine.group(GROUP)), sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes_with_the_queue_state_machine() {
    Suite::test_all(DirStoreBuilder).await.expect("openraft storage suite");
}

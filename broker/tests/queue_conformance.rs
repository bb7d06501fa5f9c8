//! openraft's own storage conformance suite, run against the broker's real pair: `RaftLogStore`
//! of the queue group's type config over a `raft-log` engine, and `QueueStateMachine` over a
//! RocksDB `QueueStore`, each case in fresh directories.

use std::io;
use std::sync::Arc;

use broker::queue::{QueueGroupConfig, QueueStateMachine};
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
        let sm = QueueStateMachine::new(Arc::new(store), GROUP);
        Ok(((log_dir, store_dir), RaftLogStore::new(engine.group(GROUP)), sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes_with_the_queue_state_machine() {
    Suite::test_all(DirStoreBuilder).await.expect("openraft storage suite");
}

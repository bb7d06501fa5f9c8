//! openraft's own storage conformance suite, run against `RaftLogStore` on a real directory.
//!
//! The suite needs a state machine beside the log: `raft_log::testing::MapStateMachine`, a
//! minimal in-memory map standing in only for tests (raft-log knows nothing of state machines).

use std::io;

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use raft_log::{LogEngine, LogOptions, RaftLogStore};

openraft::declare_raft_types!(
    pub TestConfig:
        D = String,
        R = String,
);

type MapStateMachine = raft_log::testing::MapStateMachine<TestConfig>;

/// Each suite case gets a fresh engine in a fresh directory, with small segments so that the
/// cases also cross segment boundaries.
struct DirStoreBuilder;

impl StoreBuilder<TestConfig, RaftLogStore<TestConfig>, MapStateMachine, tempfile::TempDir> for DirStoreBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, RaftLogStore<TestConfig>, MapStateMachine), StorageError<TestConfig>> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::read(TestConfig::err_from_error(&e)))?;
        let options = LogOptions { segment_bytes: 4096, ..LogOptions::default() };
        let (engine, _) =
            LogEngine::open(dir.path(), options).map_err(|e| StorageError::read(TestConfig::err_from_error(&io::Error::from(e))))?;
        Ok((dir, RaftLogStore::new(engine.group(1)), MapStateMachine::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes() {
    Suite::test_all(DirStoreBuilder).await.expect("openraft storage suite");
}

//! openraft's storage conformance suite, run with `MetaStateMachine` as the state machine beside
//! raft-log's `RaftLogStore`, each on a real directory. The suite drives the state machine with
//! blank and membership entries, builds snapshots and installs them into another one.

use std::io;

use controller::{MetaCommand, MetaReply, MetaStateMachine};
use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use raft_log::{LogEngine, LogOptions, RaftLogStore};

openraft::declare_raft_types!(
    pub TestConfig:
        D = MetaCommand,
        R = MetaReply,
);

struct DirStoreBuilder;

fn storage_error(e: impl std::error::Error + 'static) -> StorageError<TestConfig> {
    StorageError::read(TestConfig::err_from_error(&e))
}

impl StoreBuilder<TestConfig, RaftLogStore<TestConfig>, MetaStateMachine<TestConfig>, tempfile::TempDir> for DirStoreBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, RaftLogStore<TestConfig>, MetaStateMachine<TestConfig>), StorageError<TestConfig>> {
        let dir = tempfile::tempdir().map_err(storage_error)?;
        let (engine, _) = LogEngine::open(dir.path().join("log"), LogOptions { segment_bytes: 1 << 20, ..LogOptions::default() })
            .map_err(|e| storage_error(io::Error::from(e)))?;
        let sm = MetaStateMachine::open(&dir.path().join("meta")).map_err(storage_error)?;
        Ok((dir, RaftLogStore::new(engine.group(controller::META_GROUP_ID)), sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes() {
    Suite::test_all(DirStoreBuilder).await.expect("openraft storage suite");
}

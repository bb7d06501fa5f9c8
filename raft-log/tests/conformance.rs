//! openraft's own storage conformance suite, run against `RaftLogStore` on a real directory.
//!
//! The suite needs a state machine beside the log; the one here is a minimal in-memory map,
//! standing in only for this test (raft-log knows nothing of state machines).

use std::collections::BTreeMap;
use std::io::{self, Cursor};
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageError};
use raft_log::{LogEngine, LogOptions, RaftLogStore};
use tokio::sync::Mutex;

openraft::declare_raft_types!(
    pub TestConfig:
        D = String,
        R = String,
);

#[derive(Default)]
struct SmState {
    applied: Option<LogIdOf<TestConfig>>,
    membership: StoredMembershipOf<TestConfig>,
    data: BTreeMap<u64, String>,
    snapshot: Option<(SnapshotMetaOf<TestConfig>, Vec<u8>)>,
}

#[derive(Clone, Default)]
struct MapStateMachine(Arc<Mutex<SmState>>);

impl RaftSnapshotBuilder<TestConfig> for MapStateMachine {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TestConfig, Cursor<Vec<u8>>>, io::Error> {
        let mut s = self.0.lock().await;
        let data = serde_json::to_vec(&s.data).map_err(io::Error::other)?;
        let meta = SnapshotMetaOf::<TestConfig> { last_log_id: s.applied, last_membership: s.membership.clone() };
        s.snapshot = Some((meta.clone(), data.clone()));
        Ok(SnapshotOf::<TestConfig, Cursor<Vec<u8>>> { meta, snapshot: Cursor::new(data) })
    }
}

impl RaftStateMachine<TestConfig> for MapStateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogIdOf<TestConfig>>, StoredMembershipOf<TestConfig>), io::Error> {
        let s = self.0.lock().await;
        Ok((s.applied, s.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where S: Stream<Item = Result<EntryResponder<TestConfig>, io::Error>> + Unpin + OptionalSend {
        let mut s = self.0.lock().await;
        while let Some((entry, responder)) = entries.try_next().await? {
            s.applied = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => String::new(),
                EntryPayload::Normal(v) => {
                    s.data.insert(entry.log_id.index, v.clone());
                    v
                }
                EntryPayload::Membership(m) => {
                    s.membership = StoredMembershipOf::<TestConfig>::new(Some(entry.log_id), m);
                    String::new()
                }
            };
            if let Some(r) = responder {
                r.send(reply);
            }
        }
        Ok(())
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMetaOf<TestConfig>, snapshot: Cursor<Vec<u8>>) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let mut s = self.0.lock().await;
        s.data = serde_json::from_slice(&data).map_err(io::Error::other)?;
        s.applied = meta.last_log_id;
        s.membership = meta.last_membership.clone();
        s.snapshot = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<TestConfig, Cursor<Vec<u8>>>>, io::Error> {
        let s = self.0.lock().await;
        Ok(s.snapshot.as_ref().map(|(meta, data)| SnapshotOf::<TestConfig, Cursor<Vec<u8>>> { meta: meta.clone(), snapshot: Cursor::new(data.clone()) }))
    }

    async fn get_snapshot_builder(&mut self) -> Self {
        self.clone()
    }
}

/// Each suite case gets a fresh engine in a fresh directory, with small segments so that the
/// cases also cross segment boundaries.
struct DirStoreBuilder;

impl StoreBuilder<TestConfig, RaftLogStore<TestConfig>, MapStateMachine, tempfile::TempDir> for DirStoreBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, RaftLogStore<TestConfig>, MapStateMachine), StorageError<TestConfig>> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::read(TestConfig::err_from_error(&e)))?;
        let options = LogOptions { segment_bytes: 4096, ..LogOptions::default() };
        let (engine, _) = LogEngine::open(dir.path(), options).map_err(|e| StorageError::read(TestConfig::err_from_error(&io::Error::from(e))))?;
        Ok((dir, RaftLogStore::new(engine.group(1)), MapStateMachine::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes() {
    Suite::test_all(DirStoreBuilder).await.expect("openraft storage suite");
}

//! Test support, behind the `testing` feature: a small in-memory state machine that openraft
//! needs beside a log store, for tests of the log and of the Raft transport. Never a stand-in
//! for the product's state machine.

use std::collections::BTreeMap;
use std::io::{self, Cursor};
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, RaftTypeConfig};
use tokio::sync::Mutex;

struct MapState<C: RaftTypeConfig> {
    applied: Option<LogIdOf<C>>,
    membership: StoredMembershipOf<C>,
    /// Each applied normal entry's string, by log index.
    data: BTreeMap<u64, String>,
    snapshot: Option<(SnapshotMetaOf<C>, Vec<u8>)>,
}

/// Applies `String` commands into a map of log index to command, and answers each with the
/// command itself. Snapshots are the map, serialized.
pub struct MapStateMachine<C: RaftTypeConfig>(Arc<Mutex<MapState<C>>>);

impl<C: RaftTypeConfig> Clone for MapStateMachine<C> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<C: RaftTypeConfig> Default for MapStateMachine<C> {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(MapState {
            applied: None,
            membership: StoredMembershipOf::<C>::default(),
            data: BTreeMap::new(),
            snapshot: None,
        })))
    }
}

impl<C: RaftTypeConfig> MapStateMachine<C> {
    /// The applied commands, by log index.
    pub async fn data(&self) -> BTreeMap<u64, String> {
        self.0.lock().await.data.clone()
    }
}

impl<C> RaftSnapshotBuilder<C> for MapStateMachine<C>
where
    C: RaftTypeConfig<D = String, R = String, Entry = openraft::alias::DefaultEntryOf<C>, Payload = openraft::alias::EntryPayloadOf<C>>,
{
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, Cursor<Vec<u8>>>, io::Error> {
        let mut s = self.0.lock().await;
        let data = bincode::serialize(&s.data).map_err(io::Error::other)?;
        let meta = SnapshotMetaOf::<C> { last_log_id: s.applied.clone(), last_membership: s.membership.clone() };
        s.snapshot = Some((meta.clone(), data.clone()));
        Ok(SnapshotOf::<C, Cursor<Vec<u8>>> { meta, snapshot: Cursor::new(data) })
    }
}

impl<C> RaftStateMachine<C> for MapStateMachine<C>
where
    C: RaftTypeConfig<D = String, R = String, Entry = openraft::alias::DefaultEntryOf<C>, Payload = openraft::alias::EntryPayloadOf<C>>,
{
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogIdOf<C>>, StoredMembershipOf<C>), io::Error> {
        let s = self.0.lock().await;
        Ok((s.applied.clone(), s.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + OptionalSend,
    {
        let mut s = self.0.lock().await;
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id.clone();
            s.applied = Some(log_id.clone());
            let reply = match entry.payload {
                EntryPayload::Blank => String::new(),
                EntryPayload::Normal(v) => {
                    s.data.insert(log_id.index, v.clone());
                    v
                }
                EntryPayload::Membership(m) => {
                    s.membership = StoredMembershipOf::<C>::new(Some(log_id), m);
                    String::new()
                }
            };
            if let Some(r) = responder {
                r.send(reply);
            }
        }
        Ok(())
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMetaOf<C>, snapshot: Cursor<Vec<u8>>) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let mut s = self.0.lock().await;
        s.data = bincode::deserialize(&data).map_err(io::Error::other)?;
        s.applied = meta.last_log_id.clone();
        s.membership = meta.last_membership.clone();
        s.snapshot = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<C, Cursor<Vec<u8>>>>, io::Error> {
        let s = self.0.lock().await;
        Ok(s.snapshot
            .as_ref()
            .map(|(meta, data)| SnapshotOf::<C, Cursor<Vec<u8>>> { meta: meta.clone(), snapshot: Cursor::new(data.clone()) }))
    }

    async fn get_snapshot_builder(&mut self) -> Self {
        self.clone()
    }
}

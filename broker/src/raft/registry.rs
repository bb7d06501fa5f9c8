//! The Raft groups this broker hosts, by group id: what the transport routes requests to.
//!
//! Groups of different kinds (queue groups, the metadata group) have different openraft type
//! configs, so the registry holds each as a [`GroupEndpoint`]: the group's Raft behind an
//! interface of encoded requests and replies, which is all the transport needs.

use std::collections::HashMap;
use std::future::Future;
use std::io::Cursor;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use openraft::entry::RaftEntry;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::storage::RaftStateMachine;
use openraft::type_config::alias::{SnapshotMetaOf, VoteOf};
use openraft::{Raft, RaftTypeConfig, Snapshot};
use proto::raftmq::v1::raft_error::Kind as ErrorKind;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::codec;
use super::{BrokerId, BrokerNode, GroupId};

/// Why a group could not answer a transport request: the kind the wire reply carries, and a
/// message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointError {
    pub kind: ErrorKind,
    pub message: String,
}

impl EndpointError {
    fn new(kind: ErrorKind, message: impl ToString) -> Self {
        Self { kind, message: message.to_string() }
    }
}

/// An encoded reply payload, or why there is none.
pub type EndpointResult = Result<Vec<u8>, EndpointError>;
type EndpointFuture<'a> = Pin<Box<dyn Future<Output = EndpointResult> + Send + 'a>>;

/// One hosted group as the transport sees it: each method decodes an openraft request
/// (bincode, [`codec`]), calls the group's Raft and encodes its answer.
pub trait GroupEndpoint: Send + Sync {
    fn append_entries(&self, payload: &[u8]) -> EndpointFuture<'_>;
    fn vote(&self, payload: &[u8]) -> EndpointFuture<'_>;
    fn transfer_leader(&self, payload: &[u8]) -> EndpointFuture<'_>;
    /// `meta` is the encoded `(vote, snapshot meta)` of the stream's first chunk; `data` the
    /// whole snapshot.
    fn install_snapshot(&self, meta: &[u8], data: Vec<u8>) -> EndpointFuture<'_>;
    /// Starts or parks the group's ticker, which drives its heartbeats (as leader) and its
    /// election timer (as follower); see [`GroupRegistry::park`].
    fn set_ticking(&self, on: bool);
    /// Whether an encoded AppendEntries request carries log entries (a heartbeat carries none).
    fn carries_entries(&self, payload: &[u8]) -> bool;
}

fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, EndpointError> {
    codec::decode(payload).map_err(|e| EndpointError::new(ErrorKind::BadPayload, e))
}

fn answer<T: Serialize, E: std::fmt::Display>(result: Result<T, E>) -> EndpointResult {
    let value = result.map_err(|e| EndpointError::new(ErrorKind::Raft, e))?;
    codec::encode(&value).map_err(|e| EndpointError::new(ErrorKind::BadPayload, e))
}

impl<C, SM> GroupEndpoint for Raft<C, SM>
where
    C: RaftTypeConfig<NodeId = BrokerId, Node = BrokerNode>,
    SM: RaftStateMachine<C, SnapshotData = Cursor<Vec<u8>>>,
    AppendEntriesRequest<C>: DeserializeOwned,
    AppendEntriesResponse<C>: Serialize,
    VoteRequest<C>: DeserializeOwned,
    VoteResponse<C>: Serialize,
    VoteOf<C>: DeserializeOwned,
    SnapshotMetaOf<C>: DeserializeOwned,
    SnapshotResponse<C>: Serialize,
    TransferLeaderRequest<C>: DeserializeOwned,
    TransferLeaderResponse<C>: Serialize,
{
    fn append_entries(&self, payload: &[u8]) -> EndpointFuture<'_> {
        let rpc = decode::<AppendEntriesRequest<C>>(payload);
        Box::pin(async move {
            let rpc = rpc?;
            let last = rpc.entries.last().map(|e| e.log_id().index);
            if let Some(index) = last {
                tracing::trace!(target: "raftmq::hop", hop = "follower_received", index);
            }
            let reply = answer(self.append_entries(rpc).await);
            if let Some(index) = last {
                tracing::trace!(target: "raftmq::hop", hop = "follower_replied", index);
            }
            reply
        })
    }

    fn vote(&self, payload: &[u8]) -> EndpointFuture<'_> {
        let rpc = decode::<VoteRequest<C>>(payload);
        Box::pin(async move { answer(self.vote(rpc?).await) })
    }

    fn transfer_leader(&self, payload: &[u8]) -> EndpointFuture<'_> {
        let rpc = decode::<TransferLeaderRequest<C>>(payload);
        Box::pin(async move { answer(self.handle_transfer_leader(rpc?).await) })
    }

    fn install_snapshot(&self, meta: &[u8], data: Vec<u8>) -> EndpointFuture<'_> {
        let meta = decode::<(VoteOf<C>, SnapshotMetaOf<C>)>(meta);
        Box::pin(async move {
            let (vote, meta) = meta?;
            answer(self.install_full_snapshot(vote, Snapshot { meta, snapshot: Cursor::new(data) }).await)
        })
    }

    fn set_ticking(&self, on: bool) {
        self.runtime_config().tick(on);
    }

    fn carries_entries(&self, payload: &[u8]) -> bool {
        // Undecodable counts as carrying entries: waking is always safe, sleeping through
        // replication is not.
        decode::<AppendEntriesRequest<C>>(payload).map_or(true, |rpc| !rpc.entries.is_empty())
    }
}

/// See the module documentation. Cheap to clone.
///
/// It also knows which groups are *parked* (hibernating): their ticker stopped, so they send
/// no heartbeats and run no election timer, and cost nothing while nothing happens. A parked
/// group still answers every request; the transport wakes it (starts its ticker) when a request
/// shows the group is active again: an AppendEntries carrying entries (a new leader's first
/// entry, or replication) or a vote request. The broker parks and wakes groups by its own rules
/// (`crate::server::hibernation`).
#[derive(Clone, Default)]
pub struct GroupRegistry {
    groups: Arc<RwLock<HashMap<GroupId, Arc<dyn GroupEndpoint>>>>,
    parked: Arc<std::sync::Mutex<std::collections::HashSet<GroupId>>>,
}

impl GroupRegistry {
    /// Routes `group`'s requests to `endpoint` (usually a `Raft`), replacing any before.
    pub fn insert(&self, group: GroupId, endpoint: impl GroupEndpoint + 'static) {
        self.groups.write().unwrap_or_else(|p| p.into_inner()).insert(group, Arc::new(endpoint));
    }

    /// Stops routing to `group`; returns whether it was routed.
    pub fn remove(&self, group: GroupId) -> bool {
        self.parked_set().remove(&group);
        self.groups.write().unwrap_or_else(|p| p.into_inner()).remove(&group).is_some()
    }

    /// Parks `group`'s ticker; returns whether it was awake (and routed) before.
    pub fn park(&self, group: GroupId) -> bool {
        let Some(endpoint) = self.get(group) else { return false };
        // Under the lock, so a concurrent wake cannot be undone by this park.
        let mut parked = self.parked_set();
        let was_awake = parked.insert(group);
        if was_awake {
            endpoint.set_ticking(false);
        }
        was_awake
    }

    /// Starts `group`'s ticker again if it was parked; returns whether it was.
    pub fn wake(&self, group: GroupId) -> bool {
        let mut parked = self.parked_set();
        let was_parked = parked.remove(&group);
        if was_parked && let Some(endpoint) = self.get(group) {
            endpoint.set_ticking(true);
        }
        was_parked
    }

    pub fn is_parked(&self, group: GroupId) -> bool {
        self.parked_set().contains(&group)
    }

    /// The parked groups, in ascending order.
    pub fn parked(&self) -> Vec<GroupId> {
        let mut ids: Vec<_> = self.parked_set().iter().copied().collect();
        ids.sort_unstable();
        ids
    }

    fn parked_set(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<GroupId>> {
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, group: GroupId) -> Option<Arc<dyn GroupEndpoint>> {
        self.groups.read().unwrap_or_else(|p| p.into_inner()).get(&group).cloned()
    }

    pub fn ids(&self) -> Vec<GroupId> {
        let mut ids: Vec<_> = self.groups.read().unwrap_or_else(|p| p.into_inner()).keys().copied().collect();
        ids.sort_unstable();
        ids
    }
}

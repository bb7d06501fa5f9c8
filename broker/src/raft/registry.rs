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
}

/// See the module documentation. Cheap to clone.
#[derive(Clone, Default)]
pub struct GroupRegistry {
    groups: Arc<RwLock<HashMap<GroupId, Arc<dyn GroupEndpoint>>>>,
}

impl GroupRegistry {
    /// Routes `group`'s requests to `endpoint` (usually a `Raft`), replacing any before.
    pub fn insert(&self, group: GroupId, endpoint: impl GroupEndpoint + 'static) {
        self.groups.write().unwrap_or_else(|p| p.into_inner()).insert(group, Arc::new(endpoint));
    }

    /// Stops routing to `group`; returns whether it was routed.
    pub fn remove(&self, group: GroupId) -> bool {
        self.groups.write().unwrap_or_else(|p| p.into_inner()).remove(&group).is_some()
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

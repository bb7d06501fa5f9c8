//! The server side of the Raft transport: decodes each request, finds its group in the
//! [`GroupRegistry`] and hands it to that group's Raft.

use std::io::Cursor;

use futures::StreamExt;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::storage::RaftStateMachine;
use openraft::type_config::alias::{SnapshotMetaOf, VoteOf};
use openraft::{RaftTypeConfig, Snapshot};
use proto::raftmq::v1::raft_error::Kind as ErrorKind;
use proto::raftmq::v1::raft_reply::Result as ReplyResult;
use proto::raftmq::v1::raft_transport_server::RaftTransport;
use proto::raftmq::v1::{HeartbeatBatch, HeartbeatBatchReply, RaftError, RaftReply, RaftRequest, SnapshotChunk};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status, Streaming};

use super::codec;
use super::registry::GroupRegistry;
use super::{BrokerId, BrokerNode, GroupId};

/// Largest snapshot accepted from a peer, in bytes; a bigger one is refused (and the limit
/// logged) rather than buffered without bound.
pub const SNAPSHOT_BYTES_MAX: u64 = 1 << 30;
/// Most requests in one heartbeat batch.
pub const BATCH_ENTRIES_MAX: usize = 10_000;

/// See the module documentation.
pub struct RaftTransportService<C: RaftTypeConfig, SM: RaftStateMachine<C>> {
    me: BrokerId,
    groups: GroupRegistry<C, SM>,
}

impl<C: RaftTypeConfig, SM: RaftStateMachine<C>> RaftTransportService<C, SM> {
    pub fn new(me: BrokerId, groups: GroupRegistry<C, SM>) -> Self {
        Self { me, groups }
    }
}

fn error_reply(group: GroupId, kind: ErrorKind, message: impl Into<String>) -> RaftReply {
    RaftReply {
        group_id: group,
        result: Some(ReplyResult::Error(RaftError { kind: kind as i32, message: message.into(), payload: Default::default() })),
    }
}

fn payload_reply<T: Serialize>(group: GroupId, value: &T) -> RaftReply {
    match codec::encode(value) {
        Ok(p) => RaftReply { group_id: group, result: Some(ReplyResult::Payload(p.into())) },
        Err(e) => error_reply(group, ErrorKind::BadPayload, e.to_string()),
    }
}

impl<C, SM> RaftTransportService<C, SM>
where
    C: RaftTypeConfig<NodeId = BrokerId, Node = BrokerNode>,
    SM: RaftStateMachine<C, SnapshotData = Cursor<Vec<u8>>>,
{
    /// The group's Raft, if this request is for this broker and the group is hosted here.
    fn route(&self, group: GroupId, target: BrokerId) -> Result<openraft::Raft<C, SM>, RaftReply> {
        if target != self.me {
            return Err(error_reply(group, ErrorKind::WrongNode, format!("this is broker {}, not {target}", self.me)));
        }
        self.groups
            .get(group)
            .ok_or_else(|| error_reply(group, ErrorKind::GroupNotFound, format!("group {group} is not hosted on broker {}", self.me)))
    }

    /// Decodes a request for a group's Raft, calls it, and encodes its answer.
    async fn call<Req, Resp, E, F, Fut>(&self, req: RaftRequest, f: F) -> RaftReply
    where
        Req: DeserializeOwned,
        Resp: Serialize,
        E: std::fmt::Display,
        F: FnOnce(openraft::Raft<C, SM>, Req) -> Fut,
        Fut: std::future::Future<Output = Result<Resp, E>>,
    {
        let group = req.group_id;
        let raft = match self.route(group, req.target_node_id) {
            Ok(r) => r,
            Err(reply) => return reply,
        };
        let rpc: Req = match codec::decode(&req.payload) {
            Ok(r) => r,
            Err(e) => return error_reply(group, ErrorKind::BadPayload, e.to_string()),
        };
        match f(raft, rpc).await {
            Ok(resp) => payload_reply(group, &resp),
            Err(e) => error_reply(group, ErrorKind::Raft, e.to_string()),
        }
    }

    async fn append(&self, req: RaftRequest) -> RaftReply {
        self.call(req, |raft, rpc: AppendEntriesRequest<C>| async move { raft.append_entries(rpc).await }).await
    }
}

#[tonic::async_trait]
impl<C, SM> RaftTransport for RaftTransportService<C, SM>
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
    #[tracing::instrument(level = "trace", skip_all, fields(group = request.get_ref().group_id))]
    async fn append_entries(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        Ok(Response::new(self.append(request.into_inner()).await))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(group = request.get_ref().group_id))]
    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let reply = self.call(request.into_inner(), |raft, rpc: VoteRequest<C>| async move { raft.vote(rpc).await }).await;
        Ok(Response::new(reply))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(group = request.get_ref().group_id))]
    async fn transfer_leader(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let reply = self
            .call(request.into_inner(), |raft, rpc: TransferLeaderRequest<C>| async move { raft.handle_transfer_leader(rpc).await })
            .await;
        Ok(Response::new(reply))
    }

    #[tracing::instrument(level = "info", skip_all)]
    async fn install_snapshot(&self, request: Request<Streaming<SnapshotChunk>>) -> Result<Response<RaftReply>, Status> {
        let mut stream = request.into_inner();
        let first = stream.next().await.ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let group = first.group_id;
        let raft = match self.route(group, first.target_node_id) {
            Ok(r) => r,
            Err(reply) => return Ok(Response::new(reply)),
        };
        let (vote, meta): (VoteOf<C>, SnapshotMetaOf<C>) = match codec::decode(&first.meta) {
            Ok(m) => m,
            Err(e) => return Ok(Response::new(error_reply(group, ErrorKind::BadPayload, e.to_string()))),
        };
        let mut data = Vec::new();
        let mut chunk = first;
        loop {
            if chunk.group_id != group || chunk.offset != data.len() as u64 {
                return Err(Status::invalid_argument(format!(
                    "snapshot chunk for group {} at offset {} out of sequence",
                    chunk.group_id, chunk.offset
                )));
            }
            if (data.len() + chunk.data.len()) as u64 > SNAPSHOT_BYTES_MAX {
                return Err(Status::resource_exhausted(format!("snapshot of group {group} exceeds {SNAPSHOT_BYTES_MAX} bytes")));
            }
            data.extend_from_slice(&chunk.data);
            if chunk.done {
                break;
            }
            chunk = stream.next().await.ok_or_else(|| Status::invalid_argument("snapshot stream ended before its last chunk"))??;
        }
        let snapshot = Snapshot { meta, snapshot: Cursor::new(data) };
        let reply = match raft.install_full_snapshot(vote, snapshot).await {
            Ok(resp) => payload_reply(group, &resp),
            Err(e) => error_reply(group, ErrorKind::Raft, e.to_string()),
        };
        Ok(Response::new(reply))
    }

    async fn batch(&self, request: Request<HeartbeatBatch>) -> Result<Response<HeartbeatBatchReply>, Status> {
        let entries = request.into_inner().entries;
        if entries.len() > BATCH_ENTRIES_MAX {
            return Err(Status::invalid_argument(format!("{} requests in one batch, over {BATCH_ENTRIES_MAX}", entries.len())));
        }
        let replies = futures::future::join_all(entries.into_iter().map(|req| self.append(req))).await;
        Ok(Response::new(HeartbeatBatchReply { replies }))
    }
}

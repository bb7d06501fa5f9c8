//! The server side of the Raft transport: finds each request's group in the
//! [`GroupRegistry`] and hands the encoded request to it.

use std::sync::Arc;

use futures::StreamExt;
use proto::raftmq::v1::raft_error::Kind as ErrorKind;
use proto::raftmq::v1::raft_reply::Result as ReplyResult;
use proto::raftmq::v1::raft_transport_server::RaftTransport;
use proto::raftmq::v1::{HeartbeatBatch, HeartbeatBatchReply, RaftError, RaftReply, RaftRequest, SnapshotChunk};
use tonic::{Request, Response, Status, Streaming};

use super::registry::{EndpointResult, GroupEndpoint, GroupRegistry};
use super::{BrokerId, GroupId};

/// Largest snapshot accepted from a peer, in bytes; a bigger one is refused (and the limit
/// logged) rather than buffered without bound.
pub const SNAPSHOT_BYTES_MAX: u64 = 1 << 30;
/// Most requests in one heartbeat batch.
pub const BATCH_ENTRIES_MAX: usize = 10_000;

/// See the module documentation.
pub struct RaftTransportService {
    me: BrokerId,
    groups: GroupRegistry,
}

impl RaftTransportService {
    pub fn new(me: BrokerId, groups: GroupRegistry) -> Self {
        Self { me, groups }
    }

    /// The group's endpoint, if this request is for this broker and the group is hosted here.
    fn route(&self, group: GroupId, target: BrokerId) -> Result<Arc<dyn GroupEndpoint>, RaftReply> {
        if target != self.me {
            return Err(error_reply(group, ErrorKind::WrongNode, format!("this is broker {}, not {target}", self.me)));
        }
        self.groups
            .get(group)
            .ok_or_else(|| error_reply(group, ErrorKind::GroupNotFound, format!("group {group} is not hosted on broker {}", self.me)))
    }

    async fn append(&self, req: RaftRequest) -> RaftReply {
        match self.route(req.group_id, req.target_node_id) {
            Ok(endpoint) => {
                // A parked follower wakes when its group is written to again; heartbeats alone
                // (a leader woken for a read) leave it parked.
                if self.groups.is_parked(req.group_id) && endpoint.carries_entries(&req.payload) {
                    self.groups.wake(req.group_id);
                }
                reply(req.group_id, endpoint.append_entries(&req.payload).await)
            }
            Err(reply) => reply,
        }
    }
}

fn error_reply(group: GroupId, kind: ErrorKind, message: impl Into<String>) -> RaftReply {
    RaftReply {
        group_id: group,
        result: Some(ReplyResult::Error(RaftError { kind: kind as i32, message: message.into(), payload: Default::default() })),
    }
}

fn reply(group: GroupId, result: EndpointResult) -> RaftReply {
    match result {
        Ok(payload) => RaftReply { group_id: group, result: Some(ReplyResult::Payload(payload.into())) },
        Err(e) => error_reply(group, e.kind, e.message),
    }
}

#[tonic::async_trait]
impl RaftTransport for RaftTransportService {
    #[tracing::instrument(level = "trace", skip_all, fields(group = request.get_ref().group_id))]
    async fn append_entries(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        Ok(Response::new(self.append(request.into_inner()).await))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(group = request.get_ref().group_id))]
    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = request.into_inner();
        Ok(Response::new(match self.route(req.group_id, req.target_node_id) {
            Ok(endpoint) => {
                // Someone campaigns: the group is active, and this replica may need to as well.
                self.groups.wake(req.group_id);
                reply(req.group_id, endpoint.vote(&req.payload).await)
            }
            Err(reply) => reply,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(group = request.get_ref().group_id))]
    async fn transfer_leader(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = request.into_inner();
        Ok(Response::new(match self.route(req.group_id, req.target_node_id) {
            Ok(endpoint) => {
                // The leader hands this group over (to this replica or another): either way it
                // stopped heartbeating, so a parked replica here must tick again.
                self.groups.wake(req.group_id);
                reply(req.group_id, endpoint.transfer_leader(&req.payload).await)
            }
            Err(reply) => reply,
        }))
    }

    #[tracing::instrument(level = "info", skip_all)]
    async fn install_snapshot(&self, request: Request<Streaming<SnapshotChunk>>) -> Result<Response<RaftReply>, Status> {
        let mut stream = request.into_inner();
        let first = stream.next().await.ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let group = first.group_id;
        let endpoint = match self.route(group, first.target_node_id) {
            Ok(r) => r,
            Err(reply) => return Ok(Response::new(reply)),
        };
        let meta = first.meta.clone();
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
        Ok(Response::new(reply(group, endpoint.install_snapshot(&meta, data).await)))
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

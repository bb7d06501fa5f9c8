//! The client side of the Raft transport: openraft's `RaftNetworkV2` over
//! `raftmq.v1.RaftTransport`.
//!
//! One HTTP/2 connection (tonic `Channel`) per peer broker carries the traffic of every group
//! the two brokers share: a broker with 1,000 groups keeps one connection per peer, not 1,000.
//! Every socket has `TCP_NODELAY` set (Raft messages are small and latency-bound).

use std::collections::HashMap;
use std::io::Cursor;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Future;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse};
use openraft::type_config::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::{AnyError, RaftTypeConfig};
use proto::raftmq::v1::raft_error::Kind as ErrorKind;
use proto::raftmq::v1::raft_reply::Result as ReplyResult;
use proto::raftmq::v1::raft_transport_client::RaftTransportClient;
use proto::raftmq::v1::{RaftReply, RaftRequest, SnapshotChunk};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};

use super::codec::{self, CodecError};
use super::{BrokerId, BrokerNode, GroupId};

/// Bytes of snapshot data per chunk on the wire.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// How long connecting to a peer may take before the RPC counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings keep an idle connection known alive (and notice a dead one) between beats.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// One lazily connected channel per peer broker address, shared by all groups.
#[derive(Default)]
pub struct PeerChannels {
    channels: Mutex<HashMap<String, Channel>>,
}

impl PeerChannels {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The channel to `addr` (`host:port`), made on first use; it connects, and reconnects
    /// after a failure, by itself.
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_while_idle(true)
            .connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

/// Makes the connections of one group to its peers.
pub struct GroupNetworkFactory {
    group: GroupId,
    peers: Arc<PeerChannels>,
}

impl GroupNetworkFactory {
    pub fn new(group: GroupId, peers: Arc<PeerChannels>) -> Self {
        Self { group, peers }
    }
}

impl<C> RaftNetworkFactory<C> for GroupNetworkFactory
where
    C: RaftTypeConfig<NodeId = BrokerId, Node = BrokerNode>,
    AppendEntriesRequest<C>: Serialize,
    AppendEntriesResponse<C>: DeserializeOwned,
    VoteRequest<C>: Serialize,
    VoteResponse<C>: DeserializeOwned,
    VoteOf<C>: Serialize,
    SnapshotMetaOf<C>: Serialize,
    SnapshotResponse<C>: DeserializeOwned,
    TransferLeaderRequest<C>: Serialize,
    TransferLeaderResponse<C>: DeserializeOwned,
{
    type Network = PeerConnection<C>;

    async fn new_client(&mut self, target: BrokerId, node: &BrokerNode) -> PeerConnection<C> {
        let client = self.peers.channel(&node.raft_addr).map(RaftTransportClient::new).map_err(|e| format!("bad address {:?}: {e}", node.raft_addr));
        PeerConnection { group: self.group, target, client, _config: PhantomData }
    }
}

/// One group's connection to one peer replica.
pub struct PeerConnection<C> {
    group: GroupId,
    target: BrokerId,
    client: Result<RaftTransportClient<Channel>, String>,
    _config: PhantomData<fn() -> C>,
}

fn unreachable<C: RaftTypeConfig>(msg: impl std::fmt::Display) -> Unreachable<C> {
    Unreachable::new(&AnyError::error(msg.to_string()))
}

fn network<C: RaftTypeConfig>(msg: impl std::fmt::Display) -> NetworkError<C> {
    NetworkError::new(&AnyError::error(msg.to_string()))
}

impl<C: RaftTypeConfig> PeerConnection<C> {
    fn client(&self) -> Result<RaftTransportClient<Channel>, Unreachable<C>> {
        self.client.clone().map_err(unreachable)
    }

    fn request<T: Serialize>(&self, rpc: &T) -> Result<RaftRequest, CodecError> {
        Ok(RaftRequest { group_id: self.group, target_node_id: self.target, payload: codec::encode(rpc)?.into() })
    }

    /// Turns a reply into openraft's result: a payload decodes to `R`; a transport-level error
    /// makes the peer unreachable for now (openraft backs off and retries).
    fn reply<R: DeserializeOwned>(&self, reply: Result<tonic::Response<RaftReply>, tonic::Status>) -> Result<R, RPCError<C>> {
        let reply = reply.map_err(|s| RPCError::Unreachable(unreachable(format!("broker {} group {}: {s}", self.target, self.group))))?.into_inner();
        match reply.result {
            Some(ReplyResult::Payload(p)) => codec::decode(&p).map_err(|e| RPCError::Network(network(e))),
            Some(ReplyResult::Error(e)) => {
                let kind = ErrorKind::try_from(e.kind).unwrap_or(ErrorKind::Unspecified);
                Err(RPCError::Unreachable(unreachable(format!("broker {} group {}: {kind:?}: {}", self.target, self.group, e.message))))
            }
            None => Err(RPCError::Network(network("empty reply"))),
        }
    }
}

fn with_deadline<T>(msg: T, option: &RPCOption) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(option.hard_ttl());
    req
}

impl<C> RaftNetworkV2<C> for PeerConnection<C>
where
    C: RaftTypeConfig<NodeId = BrokerId, Node = BrokerNode>,
    AppendEntriesRequest<C>: Serialize,
    AppendEntriesResponse<C>: DeserializeOwned,
    VoteRequest<C>: Serialize,
    VoteResponse<C>: DeserializeOwned,
    VoteOf<C>: Serialize,
    SnapshotMetaOf<C>: Serialize,
    SnapshotResponse<C>: DeserializeOwned,
    TransferLeaderRequest<C>: Serialize,
    TransferLeaderResponse<C>: DeserializeOwned,
{
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(&mut self, rpc: AppendEntriesRequest<C>, option: RPCOption) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        let req = self.request(&rpc).map_err(|e| RPCError::Network(network(e)))?;
        let reply = self.client()?.append_entries(with_deadline(req, &option)).await;
        self.reply(reply)
    }

    async fn vote(&mut self, rpc: VoteRequest<C>, option: RPCOption) -> Result<VoteResponse<C>, RPCError<C>> {
        let req = self.request(&rpc).map_err(|e| RPCError::Network(network(e)))?;
        let reply = self.client()?.vote(with_deadline(req, &option)).await;
        self.reply(reply)
    }

    async fn transfer_leader(&mut self, rpc: TransferLeaderRequest<C>, option: RPCOption) -> Result<TransferLeaderResponse<C>, RPCError<C>> {
        let req = self.request(&rpc).map_err(|e| RPCError::Network(network(e)))?;
        let reply = self.client()?.transfer_leader(with_deadline(req, &option)).await;
        self.reply(reply)
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, Cursor<Vec<u8>>>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let meta = codec::encode(&(vote, snapshot.meta)).map_err(|e| StreamingError::Network(network(e)))?;
        let data = snapshot.snapshot.into_inner();
        let (group_id, target_node_id) = (self.group, self.target);
        // Chunks are made as the stream is read, so at most one is in flight in memory twice.
        let chunk_count = data.len().div_ceil(SNAPSHOT_CHUNK_BYTES).max(1);
        let chunks = futures::stream::iter((0..chunk_count).map(move |i| {
            let start = i * SNAPSHOT_CHUNK_BYTES;
            let end = (start + SNAPSHOT_CHUNK_BYTES).min(data.len());
            SnapshotChunk {
                group_id,
                target_node_id,
                meta: if i == 0 { meta.clone().into() } else { Default::default() },
                offset: start as u64,
                data: data[start..end].to_vec().into(),
                done: i + 1 == chunk_count,
            }
        }));
        let mut client = self.client()?;
        let mut req = tonic::Request::new(chunks);
        req.set_timeout(option.hard_ttl());
        let send = client.install_snapshot(req);
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            reply = send => self.reply(reply).map_err(|e| match e {
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                RPCError::Network(n) => StreamingError::Network(n),
                RPCError::Timeout(t) => StreamingError::Timeout(t),
                RPCError::RemoteError(r) => StreamingError::Network(network(r)),
            }),
        }
    }
}

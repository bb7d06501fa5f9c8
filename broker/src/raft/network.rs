//! The client side of the Raft transport: openraft's `RaftNetworkV2` over
//! `raftmq.v1.RaftTransport`.
//!
//! One HTTP/2 connection (tonic `Channel`) per peer broker carries the traffic of every group
//! the two brokers share: a broker with 1,000 groups keeps one connection per peer, not 1,000.
//! Every socket has `TCP_NODELAY` set (Raft messages are small and latency-bound).
//!
//! Heartbeats (openraft's heartbeat client) of all groups to one peer are coalesced: a per-peer
//! batcher gathers them for up to a short window and sends them in one `Batch` call, so an idle
//! broker with 1,000 groups makes a few calls per peer per interval instead of one per group.

use std::collections::HashMap;
use std::io::Cursor;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Future;
use openraft::entry::RaftEntry;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::{AnyError, RaftTypeConfig};
use proto::raftmq::v1::raft_error::Kind as ErrorKind;
use proto::raftmq::v1::raft_reply::Result as ReplyResult;
use proto::raftmq::v1::raft_transport_client::RaftTransportClient;
use proto::raftmq::v1::{HeartbeatBatch, RaftReply, RaftRequest, SnapshotChunk};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};

use super::codec::{self, CodecError};
use super::{BrokerId, BrokerNode, GroupId};
use crate::size_limits::TRANSPORT_MESSAGE_BYTES_MAX;

/// Bytes of snapshot data per chunk on the wire.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// How long connecting to a peer may take before the RPC counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings keep an idle connection known alive (and notice a dead one) between beats.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// How long the heartbeat batcher of a peer waits for more heartbeats after the first one:
/// the most a heartbeat (a leader-lease renewal, a read-index probe) is delayed.
pub const HEARTBEAT_BATCH_WINDOW_DEFAULT: Duration = Duration::from_millis(10);
/// Heartbeats waiting for one peer's batcher; past this a heartbeat goes out on its own.
const HEARTBEAT_QUEUE_MAX: usize = 4096;
/// Most heartbeats in one `Batch` call (the server refuses more than `BATCH_ENTRIES_MAX`).
const HEARTBEAT_BATCH_MAX: usize = 1024;
/// Deadline of one `Batch` call.
const HEARTBEAT_BATCH_TIMEOUT: Duration = Duration::from_secs(5);

type HeartbeatReply = Result<RaftReply, tonic::Status>;
type PendingHeartbeat = (RaftRequest, tokio::sync::oneshot::Sender<HeartbeatReply>);

#[derive(Clone)]
struct Peer {
    channel: Channel,
    heartbeats: tokio::sync::mpsc::Sender<PendingHeartbeat>,
}

/// One lazily connected channel per peer broker address, shared by all groups, and the
/// heartbeat batcher of each peer.
pub struct PeerChannels {
    peers: Mutex<HashMap<String, Peer>>,
    heartbeat_window: Duration,
    /// The address outgoing connections are made from, when the broker listens on one
    /// address: then its peers (and firewall rules) see its calls come from that address.
    local_address: Option<std::net::IpAddr>,
}

impl PeerChannels {
    pub fn new() -> Arc<Self> {
        Self::with_heartbeat_window(HEARTBEAT_BATCH_WINDOW_DEFAULT)
    }

    pub fn with_heartbeat_window(heartbeat_window: Duration) -> Arc<Self> {
        Arc::new(Self { peers: Mutex::new(HashMap::new()), heartbeat_window, local_address: None })
    }

    /// Channels whose connections are made from `local_address` (none: the system's choice).
    pub fn from_address(local_address: Option<std::net::IpAddr>) -> Arc<Self> {
        Arc::new(Self { peers: Mutex::new(HashMap::new()), heartbeat_window: HEARTBEAT_BATCH_WINDOW_DEFAULT, local_address })
    }

    pub fn local_address(&self) -> Option<std::net::IpAddr> {
        self.local_address
    }

    /// The channel to `addr` (`host:port`), made on first use; it connects, and reconnects
    /// after a failure, by itself.
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        Ok(self.peer(addr)?.channel)
    }

    /// Must be called within a tokio runtime: the first call for a peer starts its batcher.
    fn peer(&self, addr: &str) -> Result<Peer, tonic::transport::Error> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = peers.get(addr) {
            return Ok(p.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .local_address(self.local_address)
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_while_idle(true)
            .connect_lazy();
        let (tx, rx) = tokio::sync::mpsc::channel(HEARTBEAT_QUEUE_MAX);
        tokio::spawn(heartbeat_batcher(transport_client(channel.clone()), rx, self.heartbeat_window));
        let peer = Peer { channel, heartbeats: tx };
        peers.insert(addr.to_string(), peer.clone());
        Ok(peer)
    }
}

/// A Raft transport client that sends and receives messages up to the transport's bound, which
/// every AppendEntries fits in (tonic's default, 4 MiB, is below one largest entry).
fn transport_client(channel: Channel) -> RaftTransportClient<Channel> {
    RaftTransportClient::new(channel)
        .max_decoding_message_size(TRANSPORT_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(TRANSPORT_MESSAGE_BYTES_MAX)
}

/// Gathers heartbeats for one peer for up to `window` after the first, sends them in one
/// `Batch` call and hands each its reply. Ends when every sender is gone.
async fn heartbeat_batcher(
    mut client: RaftTransportClient<Channel>,
    mut rx: tokio::sync::mpsc::Receiver<PendingHeartbeat>,
    window: Duration,
) {
    while let Some(first) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + window;
        let mut batch = vec![first];
        while batch.len() < HEARTBEAT_BATCH_MAX {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(next)) => batch.push(next),
                _ => break,
            }
        }
        let (requests, replies): (Vec<RaftRequest>, Vec<_>) = batch.into_iter().unzip();
        let n = requests.len();
        let mut req = tonic::Request::new(HeartbeatBatch { entries: requests });
        req.set_timeout(HEARTBEAT_BATCH_TIMEOUT);
        match client.batch(req).await {
            Ok(resp) => {
                let results = resp.into_inner().replies;
                if results.len() == n {
                    for (tx, reply) in replies.into_iter().zip(results) {
                        let _ = tx.send(Ok(reply));
                    }
                } else {
                    let status = tonic::Status::internal(format!("batch of {n} heartbeats answered with {} replies", results.len()));
                    for tx in replies {
                        let _ = tx.send(Err(status.clone()));
                    }
                }
            }
            Err(status) => {
                for tx in replies {
                    let _ = tx.send(Err(status.clone()));
                }
            }
        }
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
    PeerConnection<C>: RaftNetworkV2<C>,
{
    type Network = PeerConnection<C>;

    async fn new_client(&mut self, target: BrokerId, node: &BrokerNode) -> PeerConnection<C> {
        let client =
            self.peers.channel(&node.raft_addr).map(transport_client).map_err(|e| format!("bad address {:?}: {e}", node.raft_addr));
        PeerConnection { group: self.group, target, client, heartbeats: None, _config: PhantomData }
    }

    /// Heartbeats go through the peer's batcher.
    async fn new_heartbeat_client(&mut self, target: BrokerId, node: &BrokerNode) -> PeerConnection<C> {
        let peer = self.peers.peer(&node.raft_addr).map_err(|e| format!("bad address {:?}: {e}", node.raft_addr));
        let heartbeats = peer.as_ref().ok().map(|p| p.heartbeats.clone());
        let client = peer.map(|p| transport_client(p.channel));
        PeerConnection { group: self.group, target, client, heartbeats, _config: PhantomData }
    }
}

/// One group's connection to one peer replica.
pub struct PeerConnection<C> {
    group: GroupId,
    target: BrokerId,
    client: Result<RaftTransportClient<Channel>, String>,
    /// Set on heartbeat connections: their AppendEntries go through the peer's batcher.
    heartbeats: Option<tokio::sync::mpsc::Sender<PendingHeartbeat>>,
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
        let reply = reply
            .map_err(|s| RPCError::Unreachable(unreachable(format!("broker {} group {}: {s}", self.target, self.group))))?
            .into_inner();
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

/// Whether `status` says the peer (or this side's encoder) refused a message for its size:
/// tonic answers `OUT_OF_RANGE` for a message over its decoding or encoding limit, and
/// `RESOURCE_EXHAUSTED` is what other limits (a proxy, a smaller server) answer.
fn refused_for_size(status: &tonic::Status) -> bool {
    matches!(status.code(), tonic::Code::OutOfRange | tonic::Code::ResourceExhausted)
}

impl<C> PeerConnection<C>
where
    C: RaftTypeConfig<NodeId = BrokerId, Node = BrokerNode>,
    AppendEntriesRequest<C>: Serialize,
    AppendEntriesResponse<C>: DeserializeOwned,
{
    /// Sends `rpc` (encoded as `req`); when the peer refuses it for its size, sends the first
    /// half of its entries instead, and so on, and reports the prefix that was accepted as
    /// [`AppendEntriesResponse::PartialSuccess`]: openraft then continues from there, so a
    /// payload too large is never retried unchanged. The halvings are bounded by the entry
    /// count's logarithm. One entry refused on its own cannot be split: that is reported
    /// loudly (it means the peers' limits differ; [`crate::size_limits`] makes every entry fit
    /// the transport of peers built alike).
    async fn append_longest_prefix(
        &self,
        mut rpc: AppendEntriesRequest<C>,
        mut req: RaftRequest,
        option: &RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        let mut split = false;
        loop {
            let refusal = if req.payload.len() > TRANSPORT_MESSAGE_BYTES_MAX {
                format!("{} bytes, over the transport's {TRANSPORT_MESSAGE_BYTES_MAX}", req.payload.len())
            } else {
                match self.client()?.append_entries(with_deadline(req, option)).await {
                    Err(status) if refused_for_size(&status) => status.message().to_string(),
                    reply => {
                        let response = self.reply(reply)?;
                        return Ok(match response {
                            AppendEntriesResponse::Success if split => {
                                AppendEntriesResponse::PartialSuccess(rpc.entries.last().map(|e| e.log_id()))
                            }
                            other => other,
                        });
                    }
                }
            };
            let entries = rpc.entries.len();
            let first = rpc.entries.first().map(|e| e.log_id().index);
            if entries <= 1 {
                tracing::error!(
                    group = self.group,
                    peer = self.target,
                    index = ?first,
                    reason = %refusal,
                    "a peer refuses a single Raft entry for its size: it cannot be replicated to this peer"
                );
                return Err(RPCError::Unreachable(unreachable(format!(
                    "broker {} group {}: entry {first:?} refused for its size: {refusal}",
                    self.target, self.group
                ))));
            }
            tracing::warn!(
                group = self.group,
                peer = self.target,
                entries,
                from_index = ?first,
                reason = %refusal,
                "AppendEntries refused for its size; sending the first half of its entries"
            );
            rpc.entries.truncate(entries / 2);
            split = true;
            req = self.request(&rpc).map_err(|e| RPCError::Network(network(e)))?;
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
        if let Some(e) = rpc.entries.last() {
            tracing::trace!(target: "raftmq::hop", hop = "leader_sent", index = e.log_id().index);
        }
        let req = self.request(&rpc).map_err(|e| RPCError::Network(network(e)))?;
        if let Some(heartbeats) = &self.heartbeats {
            let (tx, rx) = tokio::sync::oneshot::channel();
            match heartbeats.try_send((req, tx)) {
                Ok(()) => {
                    let reply = tokio::time::timeout(option.hard_ttl(), rx).await;
                    let reply = match reply {
                        Ok(Ok(r)) => r.map(tonic::Response::new),
                        Ok(Err(_)) => Err(tonic::Status::unavailable("heartbeat batcher stopped")),
                        Err(_) => Err(tonic::Status::deadline_exceeded("heartbeat batch")),
                    };
                    return self.reply(reply);
                }
                // A full queue means the peer is slow: this heartbeat goes on its own.
                Err(tokio::sync::mpsc::error::TrySendError::Full((req, _)) | tokio::sync::mpsc::error::TrySendError::Closed((req, _))) => {
                    let reply = self.client()?.append_entries(with_deadline(req, &option)).await;
                    return self.reply(reply);
                }
            }
        }
        self.append_longest_prefix(rpc, req, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<C>, option: RPCOption) -> Result<VoteResponse<C>, RPCError<C>> {
        let req = self.request(&rpc).map_err(|e| RPCError::Network(network(e)))?;
        let reply = self.client()?.vote(with_deadline(req, &option)).await;
        self.reply(reply)
    }

    async fn transfer_leader(
        &mut self,
        rpc: TransferLeaderRequest<C>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<C>, RPCError<C>> {
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

//! Calls this broker makes to others: peer-service calls on the peer port (metadata, status,
//! digests) and client calls forwarded to a group's leader on its client port.
//!
//! A forwarded client request carries the [`FORWARDED_HEADER`]: the receiver serves it or
//! answers NOT_LEADER, never forwards it again, so a request crosses at most one extra hop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use controller::{ClusterMap, MetaCommand, MetaReply};
use proto::apache::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use proto::raftmq::v1::admin_service_client::AdminServiceClient;
use proto::raftmq::v1::peer_service_client::PeerServiceClient;
use proto::raftmq::v1::queue_service_client::QueueServiceClient;
use proto::raftmq::v1::status::Code;
use proto::raftmq::v1::{
    GroupDigestReply, GroupDigestRequest, HibernateReply, HibernateRequest, LocalStatusReply, LocalStatusRequest, MetaRequest, PingReply,
    PingRequest,
};
use tonic::transport::{Channel, Endpoint};

use crate::raft::network::PeerChannels;
use crate::raft::{BrokerId, codec};
use crate::size_limits::TRANSPORT_MESSAGE_BYTES_MAX;

/// gRPC metadata key marking a client request forwarded by a broker; its value is that broker's id.
pub const FORWARDED_HEADER: &str = "raftmq-forwarded-by";
/// Deadline of one call to a peer.
const PEER_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of one forwarded client call (a send waits for a commit; a fetch may long-poll, and
/// adds its own wait on top).
pub(crate) const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting to another broker's client port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Client channels kept; beyond it the cache is cleared (brokers are few, addresses rarely change).
const CLIENT_CHANNELS_MAX: usize = 1024;

#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum PeerCallError {
    /// The peer is not the leader; it named the one it knows, `(id, peer address)`.
    #[error("not the leader")]
    NotLeader(Option<(BrokerId, String)>),
    #[error("{0}")]
    Failed(String),
}

/// See the module documentation.
/// A client protocol whose requests a broker forwards to a group's leader.
pub(crate) trait ForwardClient {
    /// A client over `channel` that sends and accepts messages of up to `message_bytes_max`.
    fn new(channel: Channel, message_bytes_max: usize) -> Self;
}

impl ForwardClient for QueueServiceClient<Channel> {
    fn new(channel: Channel, message_bytes_max: usize) -> Self {
        QueueServiceClient::new(channel).max_decoding_message_size(message_bytes_max).max_encoding_message_size(message_bytes_max)
    }
}

impl ForwardClient for AdminServiceClient<Channel> {
    fn new(channel: Channel, message_bytes_max: usize) -> Self {
        AdminServiceClient::new(channel).max_decoding_message_size(message_bytes_max).max_encoding_message_size(message_bytes_max)
    }
}

impl ForwardClient for MessagingServiceClient<Channel> {
    fn new(channel: Channel, message_bytes_max: usize) -> Self {
        MessagingServiceClient::new(channel).max_decoding_message_size(message_bytes_max).max_encoding_message_size(message_bytes_max)
    }
}

pub struct ForwardClients {
    peers: Arc<PeerChannels>,
    clients: Mutex<HashMap<String, Channel>>,
    /// The largest forwarded request or reply: what this broker's own client service accepts
    /// and answers, so a request it admits is never refused on the hop to the leader.
    client_message_bytes_max: usize,
}

impl ForwardClients {
    pub(crate) fn new(peers: Arc<PeerChannels>, client_message_bytes_max: usize) -> Self {
        Self { peers, clients: Mutex::new(HashMap::new()), client_message_bytes_max }
    }

    /// Peer-service replies (a cluster map, the status of every hosted group) are bounded by
    /// the transport's limit, not tonic's 4 MiB default.
    fn peer(&self, addr: &str) -> Result<PeerServiceClient<Channel>, PeerCallError> {
        let channel = self.peers.channel(addr).map_err(|e| PeerCallError::Failed(format!("peer address {addr:?}: {e}")))?;
        Ok(PeerServiceClient::new(channel)
            .max_decoding_message_size(TRANSPORT_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(TRANSPORT_MESSAGE_BYTES_MAX))
    }

    /// A channel to another broker's client endpoint, shared by every forward there.
    fn client_channel(&self, endpoint: &str) -> Result<Channel, String> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(endpoint) {
            return Ok(c.clone());
        }
        if clients.len() >= CLIENT_CHANNELS_MAX {
            clients.clear();
        }
        let channel = Endpoint::from_shared(format!("http://{endpoint}"))
            .map_err(|e| format!("endpoint {endpoint:?}: {e}"))?
            .local_address(self.peers.local_address())
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_lazy();
        clients.insert(endpoint.to_string(), channel.clone());
        Ok(channel)
    }

    /// A client of `C`'s protocol for another broker's client endpoint.
    pub(crate) fn client<C: ForwardClient>(&self, endpoint: &str) -> Result<C, String> {
        Ok(C::new(self.client_channel(endpoint)?, self.client_message_bytes_max))
    }

    pub(crate) async fn propose_meta(&self, addr: &str, cmd: &MetaCommand) -> Result<MetaReply, PeerCallError> {
        let payload = codec::encode(cmd).map_err(|e| PeerCallError::Failed(e.to_string()))?;
        let mut req = tonic::Request::new(MetaRequest { payload: payload.into() });
        req.set_timeout(PEER_CALL_TIMEOUT);
        let reply = self.peer(addr)?.propose_meta(req).await.map_err(|s| PeerCallError::Failed(s.to_string()))?.into_inner();
        check(reply.status)?;
        codec::decode(&reply.payload).map_err(|e| PeerCallError::Failed(format!("metadata reply: {e}")))
    }

    pub(crate) async fn read_meta(&self, addr: &str) -> Result<ClusterMap, PeerCallError> {
        let mut req = tonic::Request::new(MetaRequest::default());
        req.set_timeout(PEER_CALL_TIMEOUT);
        let reply = self.peer(addr)?.read_meta(req).await.map_err(|s| PeerCallError::Failed(s.to_string()))?.into_inner();
        check(reply.status)?;
        codec::decode(&reply.payload).map_err(|e| PeerCallError::Failed(format!("cluster map: {e}")))
    }

    pub(crate) async fn local_status(&self, addr: &str, group_ids: Vec<u64>, timeout: Duration) -> Result<LocalStatusReply, PeerCallError> {
        let mut req = tonic::Request::new(LocalStatusRequest { group_ids });
        req.set_timeout(timeout);
        let reply = self.peer(addr)?.local_status(req).await.map_err(|s| PeerCallError::Failed(s.to_string()))?.into_inner();
        check(reply.status.clone())?;
        Ok(reply)
    }

    pub(crate) async fn hibernate(&self, addr: &str, request: HibernateRequest) -> Result<HibernateReply, PeerCallError> {
        let mut req = tonic::Request::new(request);
        req.set_timeout(PEER_CALL_TIMEOUT);
        let reply = self.peer(addr)?.hibernate(req).await.map_err(|s| PeerCallError::Failed(s.to_string()))?.into_inner();
        check(reply.status.clone())?;
        Ok(reply)
    }

    /// Whether the broker at `addr` answers within `timeout`, as broker `from`.
    pub(crate) async fn ping(&self, addr: &str, from: u64, timeout: Duration) -> Result<PingReply, PeerCallError> {
        let mut req = tonic::Request::new(PingRequest { from_broker_id: from });
        req.set_timeout(timeout);
        Ok(self.peer(addr)?.ping(req).await.map_err(|s| PeerCallError::Failed(s.to_string()))?.into_inner())
    }

    pub(crate) async fn group_digest(&self, addr: &str, request: GroupDigestRequest) -> Result<GroupDigestReply, PeerCallError> {
        let mut req = tonic::Request::new(request);
        req.set_timeout(PEER_CALL_TIMEOUT + Duration::from_millis(u64::from(req.get_ref().wait_ms)));
        let reply = self.peer(addr)?.group_digest(req).await.map_err(|s| PeerCallError::Failed(s.to_string()))?.into_inner();
        Ok(reply)
    }
}

fn check(status: Option<proto::raftmq::v1::Status>) -> Result<(), PeerCallError> {
    let status = status.unwrap_or_default();
    match Code::try_from(status.code) {
        Ok(Code::Ok) => Ok(()),
        Ok(Code::NotLeader) => {
            Err(PeerCallError::NotLeader(status.leader_hint.filter(|h| h.broker_id != 0).map(|h| (h.broker_id, h.endpoint))))
        }
        _ => Err(PeerCallError::Failed(format!("status {}: {}", status.code, status.message))),
    }
}

//! `raftmq.v1.QueueService`, the native client API: an adapter. Each RPC checks its request at
//! the edge, takes it to the right broker ([`crate::routing`]), calls what the queue group serves
//! there ([`crate::serve`]) and maps the outcome to a reply.
//!
//! - **Send** goes to the queue group's leader. A broker that does not lead the group forwards
//!   the request once to the leader it knows (its own replica's view, else the group's preferred
//!   leader); a forwarded request is never forwarded again, but answered NOT_LEADER with a hint.
//!   A forward that could not connect (nothing was sent) is tried once more, at the leader its
//!   replica names next ([`crate::routing`]).
//! - **Fetch** is served by any replica: a replica applies only committed entries, so every
//!   message it returns is committed; a broker without a replica forwards, unless the request
//!   is `local_only` (then it answers NOT_FOUND: jepsen reads each replica so). Long polling waits
//!   on the group's Raft metrics (they change when an entry is applied), bounded by the
//!   configured maximum.
//! - **CommitOffset** and **GetOffset** run on the leader (forwarded there like Send); GetOffset
//!   first confirms leadership with a read index, so it never answers from a stale replica
//!   (invariant 6).
//! - **Deadlines**: Send, CommitOffset and GetOffset answer before the client's `grpc-timeout`
//!   runs out ([`crate::edge::deadline`]), forward with what is left of it, and say what the lateness
//!   means: a write not committed in time is OUTCOME_UNKNOWN, a leader not ready in time is
//!   UNAVAILABLE.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use controller::GroupRecord;
use proto::raftmq::v1::queue_service_client::QueueServiceClient;
use proto::raftmq::v1::queue_service_server::QueueService;
use proto::raftmq::v1::send_request::Target;
use proto::raftmq::v1::{
    CommitOffsetReply, CommitOffsetRequest, FetchReply, FetchRequest, GetOffsetReply, GetOffsetRequest, Message, SendReply, SendRequest,
    SendResult, Status, StoredMessage,
};
use tonic::transport::Channel;
use tonic::{Request, Response};

use super::status;
use crate::edge::{self, MessageParts};
use crate::edge::{answer_by, left};
use crate::host::READ_MESSAGES_MAX;
use crate::queue::{NewMessage, QueueRaft};
use crate::routing::forward::FORWARD_TIMEOUT;
use crate::routing::{AtLeader, Effect, at_leader, forward_request, is_forwarded};
use crate::server::Core;

/// Messages per fetch when the request leaves it at 0.
const FETCH_MESSAGES_DEFAULT: usize = 256;
/// Bytes per fetch when the request leaves it at 0; also the most a request may ask for.
const FETCH_BYTES_DEFAULT: usize = 16 << 20;
const FETCH_BYTES_MAX: usize = 64 << 20;

pub(crate) struct QueueSvc {
    core: Arc<Core>,
    /// Start of this process (ms since the epoch) and a counter: with the broker id, a message
    /// id unique in the cluster.
    started_ms: u64,
    next_id: AtomicU64,
}

impl QueueSvc {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        let started_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Self { core, started_ms, next_id: AtomicU64::new(0) }
    }

    fn message_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{:04X}{:012X}{:012X}", self.core.id & 0xFFFF, self.started_ms & 0xFFFF_FFFF_FFFF, n)
    }
}

fn new_message(m: &Message, message_id: String, queue: u32) -> NewMessage {
    let mut properties: Vec<(String, String)> = m.properties.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    // Sorted, so that every replica stores the same bytes whatever order the map arrived in.
    properties.sort();
    NewMessage { queue, message_id, tag: m.tag.clone(), keys: m.keys.clone(), properties, body: m.body.to_vec(), ..NewMessage::default() }
}

impl QueueSvc {
    async fn send_inner(&self, request: Request<SendRequest>) -> SendReply {
        let refuse = |status: Status| SendReply { status: Some(status), results: vec![] };
        let core = &self.core;
        let forwarded = is_forwarded(&request);
        let due = answer_by(&request);
        // Its bytes are held against the broker's request budget until this reply
        // (`super::request_bytes`): here, in the batcher, or while forwarded.
        let req = request.into_inner();
        let limits = &core.options.limits;
        if let Err(e) = edge::check_name("topic", &req.topic, limits).and_then(|_| edge::check_message_count(req.messages.len(), limits)) {
            return refuse(e.into());
        }
        for (i, m) in req.messages.iter().enumerate() {
            let properties: Vec<(String, String)> = m.properties.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let parts = MessageParts { body: &m.body, properties: &properties, tag: m.tag.as_deref(), keys: &m.keys };
            if let Err(e) = edge::check_message(&format!("messages[{i}]"), &parts, limits) {
                return refuse(e.into());
            }
        }
        let (queue, key) = match &req.target {
            Some(Target::QueueId(q)) => (Some(*q), None),
            Some(Target::RoutingKey(k)) => (None, Some(k.as_str())),
            None => (None, None),
        };
        let group = match core.route(&req.topic, queue, key).await {
            Ok(g) => g,
            Err(s) => return refuse(s),
        };
        let serve = core.leader_target(&group, forwarded, left(due)).await;
        let call = |mut client: QueueServiceClient<Channel>, within| {
            let forward = forward_request(core, req.clone(), within);
            async move { client.send(forward).await }
        };
        match at_leader(core, &group, serve, forwarded, due, Effect::Write, call).await {
            AtLeader::Here(_) => {}
            AtLeader::Answered(reply) => return reply,
            AtLeader::Refused(s) => return refuse(s),
        }
        let messages: Vec<NewMessage> = req.messages.iter().map(|m| new_message(m, self.message_id(), group.queue)).collect();
        let ids: Vec<String> = messages.iter().map(|m| m.message_id.clone()).collect();
        match core.send_here(&group, messages, due).await {
            Ok(offsets) => SendReply {
                status: Some(status::ok()),
                results: ids
                    .into_iter()
                    .zip(offsets)
                    .map(|(message_id, (queue_id, offset))| SendResult { message_id, queue_id, offset })
                    .collect(),
            },
            Err(s) => refuse(s),
        }
    }

    async fn fetch_inner(&self, request: Request<FetchRequest>) -> FetchReply {
        let refuse = |status: Status| FetchReply { status: Some(status), ..Default::default() };
        let core = &self.core;
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        if let Err(e) = edge::check_name("topic", &req.topic, &core.options.limits) {
            return refuse(e.into());
        }
        let group = match core.route(&req.topic, Some(req.queue_id), None).await {
            Ok(g) => g,
            Err(s) => return refuse(s),
        };
        let Some(raft) = core.group(group.id) else {
            if req.local_only {
                return refuse(no_local_replica(core, &group));
            }
            let preferred = group.replicas.first().and_then(|&b| core.endpoint_of(b));
            return match preferred {
                Some((_, endpoint)) if !forwarded => {
                    let mut client: QueueServiceClient<Channel> = match core.forward.client(&endpoint) {
                        Ok(c) => c,
                        Err(e) => return refuse(status::unavailable(e)),
                    };
                    let wait = Duration::from_millis(u64::from(req.wait_ms));
                    let mut fwd = forward_request(core, req, None);
                    fwd.set_timeout(FORWARD_TIMEOUT + wait);
                    match client.fetch(fwd).await {
                        Ok(r) => r.into_inner(),
                        Err(e) => refuse(status::unavailable(format!("forwarded to {endpoint}: {e}"))),
                    }
                }
                hint => refuse(status::not_leader(hint, format!("group {} has no replica on broker {}", group.id, core.id))),
            };
        };
        let max_messages = match req.max_messages as usize {
            0 => FETCH_MESSAGES_DEFAULT,
            n => n.min(READ_MESSAGES_MAX),
        };
        let max_bytes = match req.max_bytes as usize {
            0 => FETCH_BYTES_DEFAULT,
            n => n.min(FETCH_BYTES_MAX),
        };
        let wait = Duration::from_millis(u64::from(req.wait_ms));
        match core.read_here(&group, &raft, req.offset, max_messages, max_bytes, wait).await {
            Ok(read) => FetchReply {
                status: Some(status::ok()),
                // Bounded by max_bytes of whole messages in the read itself; the first message
                // goes out even when larger, so a consumer always makes progress.
                messages: read.messages.into_iter().map(stored_message).collect(),
                next_offset: read.next_offset,
                end_offset: read.end_offset,
                start_offset: read.start_offset,
            },
            Err(s) => refuse(s),
        }
    }

    async fn commit_offset_inner(&self, request: Request<CommitOffsetRequest>) -> CommitOffsetReply {
        let refuse = |status: Status| CommitOffsetReply { status: Some(status), committed_offset: 0 };
        let forward = |mut client: QueueServiceClient<Channel>, r| async move { client.commit_offset(r).await };
        let (req, group, raft, due) = match self.at_offset_leader(request, Effect::Write, refuse, forward).await {
            Ok(here) => here,
            Err(reply) => return reply,
        };
        match self.core.commit_offset_here(&raft, &group, &req.consumer_group, req.offset, due).await {
            Ok(()) => CommitOffsetReply { status: Some(status::ok()), committed_offset: req.offset },
            Err(s) => refuse(s),
        }
    }

    async fn get_offset_inner(&self, request: Request<GetOffsetRequest>) -> GetOffsetReply {
        let refuse = |status: Status| GetOffsetReply { status: Some(status), offset: None };
        let forward = |mut client: QueueServiceClient<Channel>, r| async move { client.get_offset(r).await };
        let (req, group, raft, due) = match self.at_offset_leader(request, Effect::Read, refuse, forward).await {
            Ok(here) => here,
            Err(reply) => return reply,
        };
        match self.core.consumer_offset_here(&raft, &group, &req.consumer_group, due).await {
            Ok(offset) => GetOffsetReply { status: Some(status::ok()), offset },
            Err(s) => refuse(s),
        }
    }

    /// Takes a consumer-offset request to its queue's leader: names checked, queue routed, then
    /// served here (`Ok`: the request, its group, the group's Raft and when the answer is due)
    /// or forwarded with `forward` (`Err`: the leader's reply, or `refuse`'s of why not).
    async fn at_offset_leader<Req, R, F, Fut>(
        &self,
        request: Request<Req>,
        effect: Effect,
        refuse: impl Fn(Status) -> R,
        mut forward: F,
    ) -> Result<(Req, GroupRecord, QueueRaft, Option<tokio::time::Instant>), R>
    where
        Req: OffsetRequest,
        F: FnMut(QueueServiceClient<Channel>, Request<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<R>, tonic::Status>>,
    {
        let core = &self.core;
        let (forwarded, due) = (is_forwarded(&request), answer_by(&request));
        let req = request.into_inner();
        let (consumer_group, topic, queue) = req.names();
        let (group, serve) = core.consumer_offset_target(consumer_group, topic, queue, forwarded, left(due)).await.map_err(&refuse)?;
        let call = |client, within| forward(client, forward_request(core, req.clone(), within));
        match at_leader(core, &group, serve, forwarded, due, effect, call).await {
            AtLeader::Here(raft) => Ok((req, group, raft, due)),
            AtLeader::Answered(reply) => Err(reply),
            AtLeader::Refused(s) => Err(refuse(s)),
        }
    }
}

/// The consumer-offset requests: a consumer group's offset of one queue of a topic.
trait OffsetRequest: Clone {
    /// (consumer group, topic, queue id).
    fn names(&self) -> (&str, &str, u32);
}

impl OffsetRequest for CommitOffsetRequest {
    fn names(&self) -> (&str, &str, u32) {
        (&self.consumer_group, &self.topic, self.queue_id)
    }
}

impl OffsetRequest for GetOffsetRequest {
    fn names(&self) -> (&str, &str, u32) {
        (&self.consumer_group, &self.topic, self.queue_id)
    }
}

/// The answer to a `local_only` fetch at a broker without a replica of `group`: it asked for this
/// broker's replica, so another broker's answer would not do.
fn no_local_replica(core: &Core, group: &GroupRecord) -> Status {
    status::not_found(format!("broker {} hosts no replica of group {}; a local_only fetch is not forwarded", core.id, group.id))
}

fn stored_message(m: crate::host::StoredMessage) -> StoredMessage {
    let n = m.message;
    StoredMessage {
        offset: m.offset,
        message_id: n.message_id,
        store_time_ms: i64::try_from(m.store_time_ms).unwrap_or(i64::MAX),
        message: Some(Message {
            body: n.body.into(),
            properties: n.properties.into_iter().collect(),
            tag: n.tag,
            keys: n.keys,
            message_group: n.message_group,
            sequence: 0,
        }),
    }
}

#[tonic::async_trait]
impl QueueService for QueueSvc {
    #[tracing::instrument(level = "debug", skip_all, fields(topic = %request.get_ref().topic, messages = request.get_ref().messages.len()))]
    async fn send(&self, request: Request<SendRequest>) -> Result<Response<SendReply>, tonic::Status> {
        tracing::trace!(target: "raftmq::hop", hop = "send_received");
        let reply = self.send_inner(request).await;
        tracing::trace!(target: "raftmq::hop", hop = "send_replied");
        Ok(Response::new(reply))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(topic = %request.get_ref().topic, queue = request.get_ref().queue_id))]
    async fn fetch(&self, request: Request<FetchRequest>) -> Result<Response<FetchReply>, tonic::Status> {
        Ok(Response::new(self.fetch_inner(request).await))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(topic = %request.get_ref().topic, queue = request.get_ref().queue_id))]
    async fn commit_offset(&self, request: Request<CommitOffsetRequest>) -> Result<Response<CommitOffsetReply>, tonic::Status> {
        Ok(Response::new(self.commit_offset_inner(request).await))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(topic = %request.get_ref().topic, queue = request.get_ref().queue_id))]
    async fn get_offset(&self, request: Request<GetOffsetRequest>) -> Result<Response<GetOffsetReply>, tonic::Status> {
        Ok(Response::new(self.get_offset_inner(request).await))
    }
}

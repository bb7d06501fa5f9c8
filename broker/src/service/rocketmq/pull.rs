//! What a pull consumer uses: `PullMessage` (a queue's messages from an offset, long-polling when
//! there are none), and its consumer group's offsets (`UpdateOffset`, `GetOffset`) and the
//! queue's own (`QueryOffset`). The same steps as the native `Fetch`, `CommitOffset` and
//! `GetOffset` ([`crate::serve`]): a pull is served by any replica of the queue (each applies only
//! committed entries) and filtered there ([`crate::filter`]), offsets at the leader, and `GetOffset` and `QueryOffset` only after the
//! leader confirmed it still leads (invariant 6).
//!
//! A pull's stream is its status, then the messages, then the offset the next pull starts at.

use std::time::Duration;

use controller::{GroupRecord, TopicRecord};
use proto::apache::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use proto::apache::rocketmq::v2::{
    Code, FilterExpression, FilterType, GetOffsetRequest, GetOffsetResponse, MessageQueue, PullMessageRequest, PullMessageResponse,
    QueryOffsetPolicy, QueryOffsetRequest, QueryOffsetResponse, ReceiveMessageRequest, Resource, Status, UpdateOffsetRequest,
    UpdateOffsetResponse, pull_message_response::Content,
};
use tonic::transport::Channel;
use tonic::{Request, Response};

use super::message::{Delivery, delivered};
use super::telemetry::duration;
use super::{check_group, codes, long_poll_end, ok, resolve, status, topic_record};
use crate::edge::{answer_by, left};
use crate::filter::Filter;
use crate::host::{QueueRaft, READ_MESSAGES_MAX};
use crate::routing::forward::FORWARD_TIMEOUT;
use crate::routing::{AtLeader, Effect, Serve, at_leader, forward_request, is_forwarded};
use crate::server::Core;

/// Messages per pull when the request leaves it at 0, and bytes per pull.
const PULL_MESSAGES_DEFAULT: usize = 32;
const PULL_BYTES_MAX: usize = 16 << 20;

/// A pull's queue, named as raftmq names it.
pub(super) struct QueueNames {
    pub resource: Resource,
    pub topic: String,
    pub queue: u32,
}

pub(super) fn queue_names<T>(message_queue: Option<&MessageQueue>, request: &Request<T>) -> Result<QueueNames, Status> {
    let Some(mq) = message_queue else { return Err(status(Code::BadRequest, "message_queue is missing")) };
    let (resource, topic) = resolve(mq.topic.as_ref(), request);
    let queue = u32::try_from(mq.id).map_err(|_| status(Code::BadRequest, format!("queue id {} is negative", mq.id)))?;
    Ok(QueueNames { resource, topic, queue })
}

/// The topic of `names` and the group of its queue, its names checked.
pub(super) async fn queue_group(core: &Core, names: &QueueNames) -> Result<(TopicRecord, GroupRecord), Status> {
    let (map, record) = topic_record(core, &names.topic).await?;
    let group = map.route(&names.topic, names.queue).cloned().ok_or_else(|| {
        status(Code::BadRequest, format!("queue {} is out of range; topic {:?} has {}", names.queue, names.topic, record.queue_count))
    })?;
    Ok((record, group))
}

pub(super) async fn pull(core: &Core, request: Request<PullMessageRequest>) -> Vec<PullMessageResponse> {
    let refuse = |s: Status| vec![PullMessageResponse { content: Some(Content::Status(s)) }];
    let (consumer_group, resolved) = resolve_consumer_queue(request);
    let Resolved { names, req, forwarded, due } = match resolved {
        Ok(resolved) => resolved,
        Err(s) => return refuse(s),
    };
    let (record, group) = match queue_group(core, &names).await {
        Ok(found) => found,
        Err(s) => return refuse(s),
    };
    let mut ask = match check_group(core, &consumer_group).and_then(|()| PullAsk::of(&req)) {
        Ok(ask) => ask,
        Err(s) => return refuse(s),
    };
    // The long poll ends in time to answer before the client's deadline.
    ask.wait = long_poll_end(core, ask.wait, due).saturating_duration_since(tokio::time::Instant::now());
    // Any replica serves a pull; a broker without one takes it to the group's leader.
    let raft = match core.group(group.id) {
        Some(raft) => raft,
        None => {
            let serve = core.leader_target(&group, forwarded, left(due)).await;
            let call = |mut client: MessagingServiceClient<Channel>, within: Option<Duration>| {
                let polling = PullMessageRequest { long_polling_timeout: Some(duration(ask.wait)), ..req.clone() };
                let mut forward = forward_request(core, polling, None);
                // A pull that waits for messages takes as long as it waits, as the native fetch.
                forward.set_timeout(within.unwrap_or(FORWARD_TIMEOUT + ask.wait));
                async move { client.pull_message(forward).await }
            };
            return match at_leader(core, &group, serve, forwarded, due, Effect::Read, call).await {
                AtLeader::Here(raft) => serve_pull(core, &names, &record, &group, &raft, &ask).await,
                AtLeader::Answered(mut stream) => {
                    let mut items = Vec::new();
                    // A pull answers at most READ_MESSAGES_MAX messages, a status and an offset.
                    while items.len() < READ_MESSAGES_MAX + 2 {
                        match stream.message().await {
                            Ok(Some(item)) => items.push(item),
                            Ok(None) => break,
                            Err(e) => return refuse(status(Code::HaNotAvailable, format!("forwarded pull: {e}"))),
                        }
                    }
                    items
                }
                AtLeader::Refused(s) => refuse(codes::from_native(&s)),
            };
        }
    };
    serve_pull(core, &names, &record, &group, &raft, &ask).await
}

/// What a pull asks for, read off its request once.
struct PullAsk {
    offset: u64,
    batch: usize,
    /// How long it waits at the end of its queue (0 when the request does not say).
    wait: Duration,
    filter: Filter,
}

impl PullAsk {
    fn of(req: &PullMessageRequest) -> Result<Self, Status> {
        let filter = filter_of(req.filter_expression.as_ref())?;
        let offset = u64::try_from(req.offset).map_err(|_| status(Code::IllegalOffset, format!("offset {} is negative", req.offset)))?;
        let batch = match usize::try_from(req.batch_size) {
            Ok(0) | Err(_) => PULL_MESSAGES_DEFAULT,
            Ok(n) => n.min(READ_MESSAGES_MAX),
        };
        let wait = req.long_polling_timeout.as_ref().and_then(duration_of).unwrap_or(Duration::ZERO);
        Ok(Self { offset, batch, wait, filter })
    }
}

async fn serve_pull(
    core: &Core,
    names: &QueueNames,
    record: &TopicRecord,
    group: &GroupRecord,
    raft: &QueueRaft,
    ask: &PullAsk,
) -> Vec<PullMessageResponse> {
    let read = match core.read_here(group, raft, ask.offset, ask.batch, PULL_BYTES_MAX, ask.wait).await {
        Ok(r) => r,
        Err(s) => return vec![PullMessageResponse { content: Some(Content::Status(codes::from_native(&s))) }],
    };
    let store_host = core.client_endpoint(core.id).unwrap_or_default();
    let mut out = vec![PullMessageResponse { content: Some(Content::Status(ok())) }];
    for m in read.messages.into_iter().filter(|m| ask.filter.matches(m.message.tag.as_deref(), &m.message.properties)) {
        let delivery = Delivery { attempt: 1, receipt_handle: None, invisible: None };
        let message = delivered(&names.resource, record.message_type, &store_host, m, delivery);
        out.push(PullMessageResponse { content: Some(Content::Message(message)) });
    }
    let next = i64::try_from(read.next_offset).unwrap_or(i64::MAX);
    out.push(PullMessageResponse { content: Some(Content::NextOffset(next)) });
    out
}

/// A protobuf duration as std's; `None` when a part is negative.
pub(super) fn duration_of(d: &prost_types::Duration) -> Option<Duration> {
    Some(Duration::from_secs(u64::try_from(d.seconds).ok()?) + Duration::from_nanos(u64::try_from(d.nanos).ok()?))
}

/// The filter of a receive or pull: a tag expression or SQL92 ([`crate::filter`]), refused
/// with `ILLEGAL_FILTER_EXPRESSION` when it does not parse.
pub(super) fn filter_of(expression: Option<&FilterExpression>) -> Result<Filter, Status> {
    let Some(e) = expression else { return Ok(Filter::All) };
    let parsed = match FilterType::try_from(e.r#type) {
        Ok(FilterType::Tag | FilterType::Unspecified) => Filter::tags(&e.expression),
        Ok(FilterType::Sql) => Filter::sql(&e.expression),
        Err(_) => return Err(status(Code::IllegalFilterExpression, format!("unknown filter type {}", e.r#type))),
    };
    parsed.map_err(|e| status(Code::IllegalFilterExpression, e.to_string()))
}

/// The leader of the queue `names` names, with its group, when it is here; else the forwarded
/// answer (`Err(Ok)`) of `req` sent there by `forward`, or a refusal (`Err(Err)`).
pub(super) async fn at_named_queue_leader<Req, R, F, Fut>(
    core: &Core,
    names: &QueueNames,
    (forwarded, due): (bool, Option<tokio::time::Instant>),
    effect: Effect,
    req: Req,
    forward: F,
) -> Result<(GroupRecord, QueueRaft), Result<R, Status>>
where
    Req: Clone,
    F: Fn(MessagingServiceClient<Channel>, Request<Req>) -> Fut,
    Fut: std::future::Future<Output = Result<Response<R>, tonic::Status>>,
{
    let (_, group) = queue_group(core, names).await.map_err(Err)?;
    let serve: Serve = core.leader_target(&group, forwarded, left(due)).await;
    let call = |client, within| forward(client, forward_request(core, req.clone(), within));
    match at_leader(core, &group, serve, forwarded, due, effect, call).await {
        AtLeader::Here(raft) => Ok((group, raft)),
        AtLeader::Answered(reply) => Err(Ok(reply)),
        AtLeader::Refused(s) => Err(Err(codes::from_native(&s))),
    }
}

/// A request for one queue, whose names a forward must carry resolved: the leader does not see
/// the client's headers (`x-mq-namespace`).
pub(super) trait QueueRequest: Clone {
    fn message_queue(&self) -> Option<&MessageQueue>;
    fn message_queue_mut(&mut self) -> Option<&mut MessageQueue>;
}

/// A consumer group's request for one queue.
pub(super) trait ConsumerQueueRequest: QueueRequest {
    fn group(&self) -> Option<&Resource>;
    fn set_group(&mut self, group: Resource);
}

macro_rules! queue_request {
    ($($req:ty),*) => {
        $(impl QueueRequest for $req {
            fn message_queue(&self) -> Option<&MessageQueue> {
                self.message_queue.as_ref()
            }
            fn message_queue_mut(&mut self) -> Option<&mut MessageQueue> {
                self.message_queue.as_mut()
            }
        })*
    };
}
queue_request!(UpdateOffsetRequest, GetOffsetRequest, QueryOffsetRequest, PullMessageRequest, ReceiveMessageRequest);

macro_rules! consumer_queue_request {
    ($($req:ty),*) => {
        $(impl ConsumerQueueRequest for $req {
            fn group(&self) -> Option<&Resource> {
                self.group.as_ref()
            }
            fn set_group(&mut self, group: Resource) {
                self.group = Some(group);
            }
        })*
    };
}
consumer_queue_request!(UpdateOffsetRequest, GetOffsetRequest, PullMessageRequest, ReceiveMessageRequest);

/// A request for one queue, its queue's names resolved and written into it (so a forward
/// carries the namespace the `x-mq-namespace` header gave), and what its metadata said.
pub(super) struct Resolved<Req> {
    pub(super) names: QueueNames,
    pub(super) req: Req,
    pub(super) forwarded: bool,
    pub(super) due: Option<tokio::time::Instant>,
}

pub(super) fn resolve_queue<Req: QueueRequest>(request: Request<Req>) -> Result<Resolved<Req>, Status> {
    let (forwarded, due) = (is_forwarded(&request), answer_by(&request));
    let names = queue_names(request.get_ref().message_queue(), &request)?;
    let mut req = request.into_inner();
    if let Some(mq) = req.message_queue_mut() {
        mq.topic = Some(names.resource.clone());
    }
    Ok(Resolved { names, req, forwarded, due })
}

/// [`resolve_queue`] for a consumer group's request, its group resolved and written in too; the
/// group's raftmq name (namespace included) is returned whether or not the queue's names were
/// refused, so each caller checks the two in its own order.
pub(super) fn resolve_consumer_queue<Req: ConsumerQueueRequest>(request: Request<Req>) -> (String, Result<Resolved<Req>, Status>) {
    let (group_resource, consumer_group) = resolve(request.get_ref().group(), &request);
    let resolved = resolve_queue(request).map(|mut r| {
        r.req.set_group(group_resource);
        r
    });
    (consumer_group, resolved)
}

/// Where a request for one queue is served: the queue's group and this broker's replica of it
/// when it leads, else the forwarded answer (`Err`). `req` is forwarded as it is: its names
/// must be resolved already (the leader does not see this request's headers).
async fn at_queue_leader<Req, R, F, Fut>(
    core: &Core,
    names: &QueueNames,
    (forwarded, due): (bool, Option<tokio::time::Instant>),
    req: Req,
    effect: Effect,
    refuse: impl Fn(Status) -> R,
    forward: F,
) -> Result<(Req, GroupRecord, QueueRaft), R>
where
    Req: QueueRequest,
    F: Fn(MessagingServiceClient<Channel>, Request<Req>) -> Fut,
    Fut: std::future::Future<Output = Result<Response<R>, tonic::Status>>,
{
    match at_named_queue_leader(core, names, (forwarded, due), effect, req.clone(), forward).await {
        Ok((group, raft)) => Ok((req, group, raft)),
        Err(Ok(answered)) => Err(answered),
        Err(Err(s)) => Err(refuse(s)),
    }
}

/// [`at_queue_leader`] for a consumer group's offset request, its names resolved and its
/// group's checked first and returned (raftmq's name, with its namespace).
async fn at_consumer_offset_leader<Req, R, F, Fut>(
    core: &Core,
    request: Request<Req>,
    effect: Effect,
    refuse: impl Fn(Status) -> R,
    forward: F,
) -> Result<(String, Req, GroupRecord, QueueRaft, Option<tokio::time::Instant>), R>
where
    Req: ConsumerQueueRequest,
    F: Fn(MessagingServiceClient<Channel>, Request<Req>) -> Fut,
    Fut: std::future::Future<Output = Result<Response<R>, tonic::Status>>,
{
    let (consumer_group, resolved) = resolve_consumer_queue(request);
    check_group(core, &consumer_group).map_err(&refuse)?;
    let Resolved { names, req, forwarded, due } = resolved.map_err(&refuse)?;
    let (req, group, raft) = at_queue_leader(core, &names, (forwarded, due), req, effect, refuse, forward).await?;
    Ok((consumer_group, req, group, raft, due))
}

pub(super) async fn update_offset(core: &Core, request: Request<UpdateOffsetRequest>) -> UpdateOffsetResponse {
    let refuse = |s: Status| UpdateOffsetResponse { status: Some(s) };
    let forward = |mut client: MessagingServiceClient<Channel>, req| async move { client.update_offset(req).await };
    let (consumer_group, req, group, raft, due) = match at_consumer_offset_leader(core, request, Effect::Write, refuse, forward).await {
        Ok(here) => here,
        Err(answer) => return answer,
    };
    let Ok(offset) = u64::try_from(req.offset) else {
        return refuse(status(Code::IllegalOffset, format!("offset {} is negative", req.offset)));
    };
    match core.commit_offset_here(&raft, &group, &consumer_group, offset, due).await {
        Ok(()) => UpdateOffsetResponse { status: Some(ok()) },
        Err(s) => refuse(codes::from_native(&s)),
    }
}

pub(super) async fn get_offset(core: &Core, request: Request<GetOffsetRequest>) -> GetOffsetResponse {
    let refuse = |s: Status| GetOffsetResponse { status: Some(s), offset: 0 };
    let forward = |mut client: MessagingServiceClient<Channel>, req| async move { client.get_offset(req).await };
    let (consumer_group, _, group, raft, due) = match at_consumer_offset_leader(core, request, Effect::Read, refuse, forward).await {
        Ok(here) => here,
        Err(answer) => return answer,
    };
    match core.consumer_offset_here(&raft, &group, &consumer_group, due).await {
        Ok(Some(offset)) => GetOffsetResponse { status: Some(ok()), offset: i64::try_from(offset).unwrap_or(i64::MAX) },
        Ok(None) => refuse(status(Code::OffsetNotFound, format!("consumer group {consumer_group:?} has no offset on this queue"))),
        Err(s) => refuse(codes::from_native(&s)),
    }
}

pub(super) async fn query_offset(core: &Core, request: Request<QueryOffsetRequest>) -> QueryOffsetResponse {
    let refuse = |s: Status| QueryOffsetResponse { status: Some(s), offset: 0 };
    let forward = |mut client: MessagingServiceClient<Channel>, req| async move { client.query_offset(req).await };
    let Resolved { names, req, forwarded, due } = match resolve_queue(request) {
        Ok(resolved) => resolved,
        Err(s) => return refuse(s),
    };
    let (req, group, raft) = match at_queue_leader(core, &names, (forwarded, due), req, Effect::Read, refuse, forward).await {
        Ok(here) => here,
        Err(answer) => return answer,
    };
    let found = match QueryOffsetPolicy::try_from(req.query_offset_policy) {
        Ok(QueryOffsetPolicy::Beginning) => core.queue_offsets_here(&raft, &group, due).await.map(|(start, _)| start),
        Ok(QueryOffsetPolicy::End) => core.queue_offsets_here(&raft, &group, due).await.map(|(_, end)| end),
        Ok(QueryOffsetPolicy::Timestamp) => {
            let Some(at) = req.timestamp.as_ref() else {
                return refuse(status(Code::BadRequest, "a TIMESTAMP query needs its timestamp"));
            };
            let at_ms = at.seconds.saturating_mul(1000).saturating_add(i64::from(at.nanos / 1_000_000));
            core.queue_offset_at_time_here(&raft, &group, u64::try_from(at_ms).unwrap_or(0), due).await
        }
        Err(_) => return refuse(status(Code::BadRequest, format!("unknown offset policy {}", req.query_offset_policy))),
    };
    match found {
        Ok(offset) => QueryOffsetResponse { status: Some(ok()), offset: i64::try_from(offset).unwrap_or(i64::MAX) },
        Err(s) => refuse(codes::from_native(&s)),
    }
}

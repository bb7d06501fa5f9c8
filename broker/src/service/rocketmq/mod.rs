//! `apache.rocketmq.v2.MessagingService`, RocketMQ 5's client protocol, served on every broker's
//! client port beside the native API so that the official clients work unchanged: an adapter.
//! Each RPC checks its request at the edge ([`crate::edge`]), takes it to the queue's leader
//! ([`crate::routing`]), calls what the queue group serves there ([`crate::serve`]) and answers
//! with the protocol's own [`Code`] ([`codes`]).
//!
//! - [`route`]: `QueryRoute`: every queue of a topic, on the broker that leads it; and
//!   `QueryAssignment`, the same queues for a push consumer.
//! - [`telemetry`]: the settings handshake clients wait for before they send or receive.
//! - [`send`]: `SendMessage`: normal and FIFO messages; the broker, never the client, picks a
//!   FIFO message's queue from its message group.
//! - [`pull`]: `PullMessage`, `UpdateOffset`, `GetOffset`, `QueryOffset`: pull consumers, over
//!   the native API's reads and consumer offsets; delivered messages in [`message`].
//! - [`receive`]: `ReceiveMessage`, `AckMessage`, `ChangeInvisibleDuration`,
//!   `ForwardMessageToDeadLetterQueue`: simple and push consumers, over the queue group's receive
//!   state ([`crate::serve`]), by the receipt handles of [`receipt`]; messages out of attempts go
//!   to their consumer group's dead-letter queue ([`dead_letter`]).
//! - `Heartbeat` and `NotifyClientTermination` are answered OK: a client's liveness decides
//!   nothing yet. Every other RPC is answered `NOT_IMPLEMENTED` (a clear refusal, never an
//!   empty success) until it lands.
//!
//! Resources: a topic named `name` in namespace `ns` is raftmq's topic `ns%name` (RocketMQ's
//! own spelling, and `%DLQ%ns%group` for a group's dead-letter topic); an empty
//! `resource_namespace` takes the `x-mq-namespace` header's.

mod codes;
mod dead_letter;
mod message;
mod pull;
mod receipt;
mod receive;
mod route;
mod send;
mod telemetry;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use controller::{ClusterMap, TopicRecord};
use futures::Stream;
use proto::apache::rocketmq::v2::messaging_service_server::MessagingService;
use proto::apache::rocketmq::v2::{
    AckMessageRequest, AckMessageResponse, ChangeInvisibleDurationRequest, ChangeInvisibleDurationResponse, Code, EndTransactionRequest,
    EndTransactionResponse, ForwardMessageToDeadLetterQueueRequest, ForwardMessageToDeadLetterQueueResponse, GetOffsetRequest,
    GetOffsetResponse, HeartbeatRequest, HeartbeatResponse, NotifyClientTerminationRequest, NotifyClientTerminationResponse,
    PullMessageRequest, PullMessageResponse, QueryAssignmentRequest, QueryAssignmentResponse, QueryOffsetRequest, QueryOffsetResponse,
    QueryRouteRequest, QueryRouteResponse, RecallMessageRequest, RecallMessageResponse, ReceiveMessageRequest, ReceiveMessageResponse,
    Resource, SendMessageRequest, SendMessageResponse, Status, SyncLiteSubscriptionRequest, SyncLiteSubscriptionResponse, TelemetryCommand,
    UpdateOffsetRequest, UpdateOffsetResponse,
};
use tokio::time::Instant;
use tonic::{Request, Response, Streaming};

use crate::edge;
use crate::server::Core;

/// Topics named after a consumer group: its dead-letter and retry topics.
const SYSTEM_PREFIXES: [&str; 2] = [dead_letter::DEAD_LETTER_PREFIX, "%RETRY%"];

/// The header a client names its namespace in when a resource leaves it empty.
const NAMESPACE_HEADER: &str = "x-mq-namespace";

pub(crate) struct MessagingSvc {
    core: Arc<Core>,
    send: send::SendState,
}

impl MessagingSvc {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        Self { core, send: send::SendState::default() }
    }
}

/// A status with `code` and `message`.
fn status(code: Code, message: impl Into<String>) -> Status {
    Status { code: code as i32, message: message.into() }
}

fn ok() -> Status {
    status(Code::Ok, "OK")
}

fn not_implemented(rpc: &str) -> Status {
    status(Code::NotImplemented, format!("{rpc} is not served by this raftmq release"))
}

/// A RocketMQ resource with its namespace resolved (the request header's when the resource
/// has none), and raftmq's name of it: `namespace%name`, or `name` without a namespace.
fn resolve<T>(resource: Option<&Resource>, request: &Request<T>) -> (Resource, String) {
    let Some(r) = resource else { return (Resource::default(), String::new()) };
    let namespace = if r.resource_namespace.is_empty() {
        request.metadata().get(NAMESPACE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default()
    } else {
        r.resource_namespace.as_str()
    };
    let name = match SYSTEM_PREFIXES.iter().find_map(|p| Some((*p, r.name.strip_prefix(p)?))) {
        _ if namespace.is_empty() => r.name.clone(),
        // RocketMQ's spelling: the namespace goes after a dead-letter or retry prefix.
        Some((prefix, group)) => format!("{prefix}{namespace}%{group}"),
        None => format!("{namespace}%{}", r.name),
    };
    (Resource { resource_namespace: namespace.to_owned(), name: r.name.clone() }, name)
}

/// `topic` (raftmq's name) and a cluster map that holds it, its name checked:
/// `ILLEGAL_TOPIC`, `TOPIC_NOT_FOUND`.
async fn topic_record(core: &Core, topic: &str) -> Result<(Arc<ClusterMap>, TopicRecord), Status> {
    edge::check_name("topic", topic, &core.options.limits).map_err(|e| codes::invalid(&e))?;
    core.map_with_topic(topic).await.map_err(|s| codes::from_native(&s))
}

/// A consumer group's name checked: `ILLEGAL_CONSUMER_GROUP`.
fn check_group(core: &Core, name: &str) -> Result<(), Status> {
    edge::check_name("group", name, &core.options.limits).map_err(|e| codes::invalid(&e))
}

/// A long poll ends this long before the client's deadline, so its answer arrives in time.
const LONG_POLL_MARGIN_MAX: Duration = Duration::from_millis(500);

/// When a long poll of `wait` ends: at most the broker's fetch wait, and early enough before
/// `due` to answer in time.
fn long_poll_end(core: &Core, wait: Duration, due: Option<Instant>) -> Instant {
    let now = Instant::now();
    let mut until = now + wait.min(core.options.limits.fetch_wait_max());
    if let Some(due) = due {
        let left = due.saturating_duration_since(now);
        until = until.min(now + left.saturating_sub((left / 10).min(LONG_POLL_MARGIN_MAX)));
    }
    until
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;

/// A server stream of `items`, answered whole.
fn stream_of<T: Send + 'static>(items: Vec<T>) -> ResponseStream<T> {
    Box::pin(futures::stream::iter(items.into_iter().map(Ok)))
}

#[tonic::async_trait]
impl MessagingService for MessagingSvc {
    #[tracing::instrument(level = "debug", skip_all, fields(topic))]
    async fn query_route(&self, request: Request<QueryRouteRequest>) -> Result<Response<QueryRouteResponse>, tonic::Status> {
        let (resource, topic) = resolve(request.get_ref().topic.as_ref(), &request);
        tracing::Span::current().record("topic", topic.as_str());
        Ok(Response::new(route::query_route(&self.core, &resource, &topic).await))
    }

    async fn heartbeat(&self, _request: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, tonic::Status> {
        Ok(Response::new(HeartbeatResponse { status: Some(ok()) }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(messages = request.get_ref().messages.len()))]
    async fn send_message(&self, request: Request<SendMessageRequest>) -> Result<Response<SendMessageResponse>, tonic::Status> {
        Ok(Response::new(send::send_message(&self.core, &self.send, request).await))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn query_assignment(&self, request: Request<QueryAssignmentRequest>) -> Result<Response<QueryAssignmentResponse>, tonic::Status> {
        let (resource, topic) = resolve(request.get_ref().topic.as_ref(), &request);
        let (_, group) = resolve(request.get_ref().group.as_ref(), &request);
        Ok(Response::new(route::query_assignment(&self.core, &resource, &topic, &group).await))
    }

    type ReceiveMessageStream = ResponseStream<ReceiveMessageResponse>;

    #[tracing::instrument(level = "debug", skip_all)]
    async fn receive_message(
        &self,
        request: Request<ReceiveMessageRequest>,
    ) -> Result<Response<Self::ReceiveMessageStream>, tonic::Status> {
        Ok(Response::new(stream_of(receive::receive(&self.core, &self.send, request).await)))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(entries = request.get_ref().entries.len()))]
    async fn ack_message(&self, request: Request<AckMessageRequest>) -> Result<Response<AckMessageResponse>, tonic::Status> {
        Ok(Response::new(receive::ack(&self.core, request).await))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn forward_message_to_dead_letter_queue(
        &self,
        request: Request<ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<ForwardMessageToDeadLetterQueueResponse>, tonic::Status> {
        Ok(Response::new(receive::forward_to_dead_letter_queue(&self.core, &self.send, request).await))
    }

    type PullMessageStream = ResponseStream<PullMessageResponse>;

    #[tracing::instrument(level = "debug", skip_all)]
    async fn pull_message(&self, request: Request<PullMessageRequest>) -> Result<Response<Self::PullMessageStream>, tonic::Status> {
        Ok(Response::new(stream_of(pull::pull(&self.core, request).await)))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn update_offset(&self, request: Request<UpdateOffsetRequest>) -> Result<Response<UpdateOffsetResponse>, tonic::Status> {
        Ok(Response::new(pull::update_offset(&self.core, request).await))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn get_offset(&self, request: Request<GetOffsetRequest>) -> Result<Response<GetOffsetResponse>, tonic::Status> {
        Ok(Response::new(pull::get_offset(&self.core, request).await))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn query_offset(&self, request: Request<QueryOffsetRequest>) -> Result<Response<QueryOffsetResponse>, tonic::Status> {
        Ok(Response::new(pull::query_offset(&self.core, request).await))
    }

    async fn end_transaction(&self, _request: Request<EndTransactionRequest>) -> Result<Response<EndTransactionResponse>, tonic::Status> {
        Ok(Response::new(EndTransactionResponse { status: Some(not_implemented("EndTransaction")) }))
    }

    type TelemetryStream = ResponseStream<TelemetryCommand>;

    async fn telemetry(&self, request: Request<Streaming<TelemetryCommand>>) -> Result<Response<Self::TelemetryStream>, tonic::Status> {
        Ok(Response::new(telemetry::serve(&self.core, request.into_inner())))
    }

    async fn notify_client_termination(
        &self,
        _request: Request<NotifyClientTerminationRequest>,
    ) -> Result<Response<NotifyClientTerminationResponse>, tonic::Status> {
        Ok(Response::new(NotifyClientTerminationResponse { status: Some(ok()) }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn change_invisible_duration(
        &self,
        request: Request<ChangeInvisibleDurationRequest>,
    ) -> Result<Response<ChangeInvisibleDurationResponse>, tonic::Status> {
        Ok(Response::new(receive::change_invisible_duration(&self.core, request).await))
    }

    async fn recall_message(&self, _request: Request<RecallMessageRequest>) -> Result<Response<RecallMessageResponse>, tonic::Status> {
        Ok(Response::new(RecallMessageResponse { status: Some(not_implemented("RecallMessage")), message_id: String::new() }))
    }

    async fn sync_lite_subscription(
        &self,
        _request: Request<SyncLiteSubscriptionRequest>,
    ) -> Result<Response<SyncLiteSubscriptionResponse>, tonic::Status> {
        Ok(Response::new(SyncLiteSubscriptionResponse { status: Some(not_implemented("SyncLiteSubscription")) }))
    }
}

#[cfg(test)]
mod tests;

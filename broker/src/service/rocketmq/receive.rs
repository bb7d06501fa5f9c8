//! What simple and push consumers use: `ReceiveMessage` (messages of a queue for a consumer
//! group, each invisible to the group for a while, long-polling when there are none),
//! `AckMessage` and `ChangeInvisibleDuration`, each by the receipt handle a delivery carries
//! ([`receipt`]). All three are served at the queue's leader ([`crate::serve`]'s receive
//! state), so a request at another broker is forwarded once.
//!
//! A receive's stream is the delivery time, the messages and a last status (`OK`); or one
//! `MESSAGE_NOT_FOUND` status when nothing came before the long poll ended
//! (`../shared/rocketmq-clients.md`, 24).

use std::time::Duration;

use controller::GroupRecord;
use openraft::type_config::async_runtime::watch::WatchReceiver;
use proto::apache::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use proto::apache::rocketmq::v2::{
    AckMessageRequest, AckMessageResponse, AckMessageResultEntry, ChangeInvisibleDurationRequest, ChangeInvisibleDurationResponse, Code,
    ForwardMessageToDeadLetterQueueRequest, ForwardMessageToDeadLetterQueueResponse, ReceiveMessageRequest, ReceiveMessageResponse,
    Resource, Status, receive_message_response::Content,
};
use tokio::time::Instant;
use tonic::Request;
use tonic::transport::Channel;

use super::dead_letter;
use super::message::{Delivery, delivered};
use super::pull::{QueueNames, Resolved, at_named_queue_leader, duration_of, filter_of, queue_group, resolve_consumer_queue};
use super::receipt::Receipt;
use super::send::SendState;
use super::telemetry::{MAX_DELIVERY_ATTEMPTS, RECEIVE_BATCH_SIZE, duration};
use super::{check_group, codes, long_poll_end, ok, resolve, status, topic_record};
use crate::edge::{answer_by, left};
use crate::host::{QueueRaft, READ_MESSAGES_MAX};
use crate::routing::forward::FORWARD_TIMEOUT;
use crate::routing::{AtLeader, Effect, at_leader, forward_request, is_forwarded};
use crate::serve::{Found, ReceiveAsk, Received};
use crate::server::Core;

/// The most messages one receive delivers; a larger batch size gets at most this many. Each
/// is read whole into memory (up to the largest message), so this bounds a receive's memory.
pub(super) const RECEIVE_BATCH_MAX: u32 = 32;
/// The longest a message may stay invisible, as in RocketMQ.
const INVISIBLE_MAX: Duration = Duration::from_secs(12 * 3600);
/// How long a message stays invisible to a push consumer, which asks for renewal
/// (`auto_renew`) instead of naming a duration (`../shared/rocketmq-clients.md`, 29).
const AUTO_RENEW_INVISIBLE: Duration = Duration::from_secs(60);

/// An invisible duration as asked: `ILLEGAL_INVISIBLE_TIME` when negative or over
/// [`INVISIBLE_MAX`]. Tiny durations are taken as they are (Node's push consumer asks ms for s,
/// and refusing makes it retry for ever: `../shared/rocketmq-clients.md`, 30).
fn invisible_of(d: &prost_types::Duration) -> Result<Duration, Status> {
    match duration_of(d) {
        Some(v) if v <= INVISIBLE_MAX => Ok(v),
        _ => Err(status(
            Code::IllegalInvisibleTime,
            format!("invisible duration {}s {}ns: must be 0 to {} s", d.seconds, d.nanos, INVISIBLE_MAX.as_secs()),
        )),
    }
}

/// What a receive asks, read off its request once.
fn receive_ask(core: &Core, consumer_group: String, req: &ReceiveMessageRequest) -> Result<(ReceiveAsk, Duration), Status> {
    check_group(core, &consumer_group)?;
    let filter = filter_of(req.filter_expression.as_ref())?;
    let invisible = match (&req.invisible_duration, req.auto_renew) {
        (Some(d), _) => invisible_of(d)?,
        (None, true) => AUTO_RENEW_INVISIBLE,
        (None, false) => return Err(status(Code::IllegalInvisibleTime, "invisible_duration is missing (and auto_renew is off)")),
    };
    // A batch size is a most: 0 or less takes the consumers' default, more than the bound gets the bound.
    let max_messages = match u32::try_from(req.batch_size) {
        Ok(0) | Err(_) => RECEIVE_BATCH_SIZE.unsigned_abs(),
        Ok(n) => n,
    }
    .min(RECEIVE_BATCH_MAX);
    let wait = req.long_polling_timeout.as_ref().and_then(duration_of).unwrap_or(Duration::ZERO);
    let max_attempts = MAX_DELIVERY_ATTEMPTS.unsigned_abs();
    Ok((ReceiveAsk { consumer_group, max_messages, invisible, filter, max_attempts, fifo: false }, wait))
}

/// The queues a receive at this broker serves: the one it names (led here) first, then every
/// other queue of `topic` this broker leads. A receive's queue is advisory: the Node client
/// names only queue 0 and Python a random one, so a receive serves the topic's queues on the
/// broker it reached, as the Apache proxy does (`../shared/rocketmq-clients.md`, 14).
fn receive_targets(core: &Core, topic: &str, named: (GroupRecord, QueueRaft)) -> Vec<(GroupRecord, QueueRaft)> {
    let map = core.local_map();
    let mut targets = vec![named];
    let queues = map.topics.get(topic).map_or(0, |t| t.queue_count);
    for queue in 0..queues {
        let Some(group) = map.route(topic, queue) else { continue };
        if targets.iter().any(|(g, _)| g.id == group.id) {
            continue;
        }
        let Some(raft) = core.group(group.id) else { continue };
        let m = raft.metrics().borrow_watched().clone();
        if m.state == openraft::ServerState::Leader && m.current_leader == Some(core.id) {
            targets.push((group.clone(), raft));
        }
    }
    targets
}

fn refused_receive(s: Status) -> Vec<ReceiveMessageResponse> {
    vec![ReceiveMessageResponse { content: Some(Content::Status(s)) }]
}

pub(super) async fn receive(core: &Core, send: &SendState, request: Request<ReceiveMessageRequest>) -> Vec<ReceiveMessageResponse> {
    // The names resolved and written in: the leader a receive is forwarded to does not see
    // this request's headers.
    let (consumer_group, resolved) = resolve_consumer_queue(request);
    let Resolved { names, req, forwarded, due } = match resolved {
        Ok(resolved) => resolved,
        Err(s) => return refused_receive(s),
    };
    let (ask, wait) = match receive_ask(core, consumer_group, &req) {
        Ok(found) => found,
        Err(s) => return refused_receive(s),
    };
    let (record, group) = match queue_group(core, &names).await {
        Ok(found) => found,
        Err(s) => return refused_receive(s),
    };
    let ask = ReceiveAsk { fifo: record.message_type == controller::MessageType::Fifo, ..ask };
    let until = long_poll_end(core, wait, due);
    let serve = core.leader_target(&group, forwarded, left(due)).await;
    let call = |mut client: MessagingServiceClient<Channel>, within: Option<Duration>| {
        // The leader long-polls only for what is left of this broker's long poll, so that its
        // answer comes back before the client's deadline.
        let polling = until.saturating_duration_since(Instant::now());
        let forwarded_req = ReceiveMessageRequest { long_polling_timeout: Some(duration(polling)), ..req.clone() };
        let mut forward = forward_request(core, forwarded_req, None);
        // A receive that waits for messages takes as long as it waits, as a pull.
        forward.set_timeout(within.unwrap_or(FORWARD_TIMEOUT + polling));
        async move { client.receive_message(forward).await }
    };
    let raft = match at_leader(core, &group, serve, forwarded, due, Effect::Write, call).await {
        AtLeader::Here(raft) => raft,
        AtLeader::Answered(mut stream) => {
            let mut items = Vec::new();
            // A receive answers at most RECEIVE_BATCH_MAX messages, a time and a status.
            while items.len() < RECEIVE_BATCH_MAX as usize + 2 {
                match stream.message().await {
                    Ok(Some(item)) => items.push(item),
                    Ok(None) => break,
                    // Messages may have been received there: delivered again once visible.
                    Err(e) => return refused_receive(status(Code::ProxyTimeout, format!("forwarded receive: {e}"))),
                }
            }
            return items;
        }
        AtLeader::Refused(s) => return refused_receive(codes::from_native(&s)),
    };
    let targets = receive_targets(core, &names.topic, (group, raft));
    // Exhausted messages are handed to the dead-letter queue first; then the receive goes on.
    let found = loop {
        match core.receive_here(&targets, &ask, until, due).await {
            Ok(Found { target, exhausted, .. }) if !exhausted.is_empty() => {
                let (group, raft) = &targets[target];
                if let Err(s) = dead_letter::hand_over(core, send, &ask.consumer_group, (group, raft), exhausted, due).await {
                    return refused_receive(s);
                }
                if Instant::now() >= until {
                    break Ok(Found::default());
                }
            }
            other => break other,
        }
    };
    match found.map(|f| f.received) {
        Ok(received) if received.is_empty() => refused_receive(status(Code::MessageNotFound, "no message to receive")),
        Ok(received) => {
            let store_host = core.client_endpoint(core.id).unwrap_or_default();
            let now = std::time::SystemTime::now();
            let mut out = vec![ReceiveMessageResponse { content: Some(Content::DeliveryTimestamp(now.into())) }];
            for Received { message, delivery } in received {
                let receipt = Receipt {
                    queue: message.message.queue,
                    offset: delivery.offset,
                    version: delivery.version,
                    invisible_until_ms: delivery.invisible_until_ms,
                };
                let attempt = i32::try_from(delivery.attempt).unwrap_or(i32::MAX);
                let handle = receipt.encode(&names.topic, &ask.consumer_group);
                let delivery = Delivery { attempt, receipt_handle: Some(handle), invisible: Some(ask.invisible) };
                let message = delivered(&names.resource, record.message_type, &store_host, message, delivery);
                out.push(ReceiveMessageResponse { content: Some(Content::Message(message)) });
            }
            out.push(ReceiveMessageResponse { content: Some(Content::Status(ok())) });
            out
        }
        Err(s) => refused_receive(codes::from_native(&s)),
    }
}

/// A request about one delivery, named by its receipt handle.
trait ReceiptRequest: Clone {
    fn resources(&mut self) -> (&mut Option<Resource>, &mut Option<Resource>);
    fn receipt_handle(&self) -> &str;
}

impl ReceiptRequest for ChangeInvisibleDurationRequest {
    fn resources(&mut self) -> (&mut Option<Resource>, &mut Option<Resource>) {
        (&mut self.group, &mut self.topic)
    }
    fn receipt_handle(&self) -> &str {
        &self.receipt_handle
    }
}

impl ReceiptRequest for ForwardMessageToDeadLetterQueueRequest {
    fn resources(&mut self) -> (&mut Option<Resource>, &mut Option<Resource>) {
        (&mut self.group, &mut self.topic)
    }
    fn receipt_handle(&self) -> &str {
        &self.receipt_handle
    }
}

/// A receipt request at the leader of its queue.
struct AtReceipt {
    /// raftmq's names, namespace included.
    consumer_group: String,
    topic: String,
    receipt: Receipt,
    group: GroupRecord,
    raft: QueueRaft,
    due: Option<Instant>,
}

/// A receipt request's names and handle checked (`ILLEGAL_CONSUMER_GROUP`, `TOPIC_NOT_FOUND`,
/// `INVALID_RECEIPT_HANDLE`), then taken to its queue's leader: served here, or forwarded once
/// with its namespaces resolved (the forwarded answer is `Err(Ok)`).
async fn at_receipt_leader<Req, R, F, Fut>(core: &Core, request: Request<Req>, forward: F) -> Result<AtReceipt, Result<R, Status>>
where
    Req: ReceiptRequest,
    F: Fn(MessagingServiceClient<Channel>, Request<Req>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>>,
{
    let (forwarded, due) = (is_forwarded(&request), answer_by(&request));
    let mut req = request.get_ref().clone();
    let (group_resource, consumer_group) = resolve(req.resources().0.as_ref(), &request);
    let (topic_resource, topic) = resolve(req.resources().1.as_ref(), &request);
    check_group(core, &consumer_group).map_err(Err)?;
    topic_record(core, &topic).await.map_err(Err)?;
    let receipt = Receipt::decode(req.receipt_handle(), &topic, &consumer_group).map_err(Err)?;
    *req.resources().0 = Some(group_resource);
    *req.resources().1 = Some(topic_resource.clone());
    let names = QueueNames { resource: topic_resource, topic: topic.clone(), queue: receipt.queue };
    let (group, raft) = at_named_queue_leader(core, &names, (forwarded, due), Effect::Write, req, forward).await?;
    Ok(AtReceipt { consumer_group, topic, receipt, group, raft, due })
}

pub(super) async fn ack(core: &Core, request: Request<AckMessageRequest>) -> AckMessageResponse {
    let refuse = |s: Status| AckMessageResponse { status: Some(s), entries: vec![] };
    let (forwarded, due) = (is_forwarded(&request), answer_by(&request));
    let (topic_resource, topic) = resolve(request.get_ref().topic.as_ref(), &request);
    let (group_resource, consumer_group) = resolve(request.get_ref().group.as_ref(), &request);
    let req = request.into_inner();
    if let Err(s) = check_group(core, &consumer_group) {
        return refuse(s);
    }
    if let Err(s) = topic_record(core, &topic).await {
        return refuse(s);
    }
    if req.entries.is_empty() || req.entries.len() > READ_MESSAGES_MAX {
        return refuse(status(Code::BadRequest, format!("{} entries: an ack has 1 to {READ_MESSAGES_MAX}", req.entries.len())));
    }
    // Each entry's answer, in order; entries are acknowledged together per queue (one Raft
    // entry each), at that queue's leader.
    let mut answers: Vec<Option<Status>> = vec![None; req.entries.len()];
    let mut by_queue: std::collections::BTreeMap<u32, Vec<(usize, Receipt)>> = Default::default();
    for (i, e) in req.entries.iter().enumerate() {
        match Receipt::decode(&e.receipt_handle, &topic, &consumer_group) {
            Ok(r) => by_queue.entry(r.queue).or_default().push((i, r)),
            Err(s) => answers[i] = Some(s),
        }
    }
    for (_, entries) in by_queue {
        let receipt = entries[0].1;
        let sub = AckMessageRequest {
            group: Some(group_resource.clone()),
            topic: Some(topic_resource.clone()),
            entries: entries.iter().map(|&(i, _)| req.entries[i].clone()).collect(),
        };
        let forward = |mut client: MessagingServiceClient<Channel>, r| async move { client.ack_message(r).await };
        let names = QueueNames { resource: topic_resource.clone(), topic: topic.clone(), queue: receipt.queue };
        let settled = match at_named_queue_leader(core, &names, (forwarded, due), Effect::Write, sub, forward).await {
            Ok((group, raft)) => {
                let deliveries = entries.iter().map(|(_, r)| (r.offset, r.version)).collect();
                core.ack_here(&raft, &group, &consumer_group, deliveries, due).await.map_err(|s| codes::from_native(&s))
            }
            Err(Ok(answered)) => {
                // The leader answered these entries, in the order sent.
                let by_entry = answered.entries.into_iter().map(|e| e.status).chain(std::iter::repeat(answered.status));
                for ((i, _), s) in entries.iter().zip(by_entry) {
                    answers[*i] = Some(s.unwrap_or_else(|| status(Code::InternalServerError, "the leader answered no status")));
                }
                continue;
            }
            Err(Err(s)) => Err(s),
        };
        match settled {
            Ok(settled) => {
                for ((i, _), ok_) in entries.iter().zip(settled) {
                    answers[*i] = Some(if ok_ {
                        ok()
                    } else {
                        status(Code::InvalidReceiptHandle, "stale receipt handle: the message was delivered again, or acknowledged")
                    });
                }
            }
            Err(s) => {
                for (i, _) in &entries {
                    answers[*i] = Some(s.clone());
                }
            }
        }
    }
    let entries: Vec<AckMessageResultEntry> = req
        .entries
        .into_iter()
        .zip(answers)
        .map(|(e, s)| AckMessageResultEntry {
            message_id: e.message_id,
            receipt_handle: e.receipt_handle,
            status: Some(s.unwrap_or_else(|| status(Code::InternalServerError, "entry not answered"))),
        })
        .collect();
    AckMessageResponse { status: Some(overall(&entries)), entries }
}

/// The status of a whole ack: its entries' when they agree, else `MULTIPLE_RESULTS`.
fn overall(entries: &[AckMessageResultEntry]) -> Status {
    let codes: std::collections::BTreeSet<i32> = entries.iter().filter_map(|e| e.status.as_ref().map(|s| s.code)).collect();
    match (codes.len(), entries.first().and_then(|e| e.status.clone())) {
        (1, Some(s)) => s,
        _ => status(Code::MultipleResults, "entries have different results: see each entry's status"),
    }
}

pub(super) async fn change_invisible_duration(
    core: &Core,
    request: Request<ChangeInvisibleDurationRequest>,
) -> ChangeInvisibleDurationResponse {
    let refuse = |s: Status| ChangeInvisibleDurationResponse { status: Some(s), receipt_handle: String::new() };
    let invisible = match request.get_ref().invisible_duration.as_ref().map(invisible_of) {
        Some(Ok(d)) => d,
        Some(Err(s)) => return refuse(s),
        None => return refuse(status(Code::IllegalInvisibleTime, "invisible_duration is missing")),
    };
    let forward = |mut client: MessagingServiceClient<Channel>, r| async move { client.change_invisible_duration(r).await };
    let AtReceipt { consumer_group, topic, receipt, group, raft, due } = match at_receipt_leader(core, request, forward).await {
        Ok(here) => here,
        Err(Ok(answered)) => return answered,
        Err(Err(s)) => return refuse(s),
    };
    match core.change_invisibility_here(&raft, &group, &consumer_group, (receipt.offset, receipt.version), invisible, due).await {
        Ok(Some((version, invisible_until_ms))) => {
            let renewed = Receipt { version, invisible_until_ms, ..receipt };
            ChangeInvisibleDurationResponse { status: Some(ok()), receipt_handle: renewed.encode(&topic, &consumer_group) }
        }
        Ok(None) => refuse(status(Code::InvalidReceiptHandle, "stale receipt handle: the message was delivered again, or acknowledged")),
        Err(s) => refuse(codes::from_native(&s)),
    }
}

/// A consumer's own hand-off of a message to its group's dead-letter queue (a push consumer's,
/// after its local retries): by receipt handle, at the queue's leader, the same two steps as a
/// message that ran out of attempts ([`dead_letter`]). A stale handle changes nothing.
pub(super) async fn forward_to_dead_letter_queue(
    core: &Core,
    send: &SendState,
    request: Request<ForwardMessageToDeadLetterQueueRequest>,
) -> ForwardMessageToDeadLetterQueueResponse {
    let answer = |s: Status| ForwardMessageToDeadLetterQueueResponse { status: Some(s) };
    let forward = |mut client: MessagingServiceClient<Channel>, r| async move { client.forward_message_to_dead_letter_queue(r).await };
    let AtReceipt { consumer_group, receipt, group, raft, due, .. } = match at_receipt_leader(core, request, forward).await {
        Ok(here) => here,
        Err(Ok(answered)) => return answered,
        Err(Err(s)) => return answer(s),
    };
    let delivery = match core.delivery_here(&group, &consumer_group, receipt.offset).await {
        Ok(Some(d)) if d.version == receipt.version => d,
        Ok(_) => {
            return answer(status(Code::InvalidReceiptHandle, "stale receipt handle: the message was delivered again, or acknowledged"));
        }
        Err(s) => return answer(codes::from_native(&s)),
    };
    let exhausted = match core.read_deliveries(&group, &[delivery]).await {
        Ok(found) if !found.is_empty() => found,
        Ok(_) => return answer(status(Code::MessageNotFound, "the message was deleted by retention")),
        Err(s) => return answer(codes::from_native(&s)),
    };
    match dead_letter::hand_over(core, send, &consumer_group, (&group, &raft), exhausted, due).await {
        Ok(()) => answer(ok()),
        Err(s) => answer(s),
    }
}

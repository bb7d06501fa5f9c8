//! `SendMessage`: normal and FIFO messages, checked at the edge, stored through the queue
//! group's send batcher on its leader (forwarded once by a broker that does not lead it).
//!
//! - **The broker picks the queue.** A FIFO message's queue is a fixed hash of its message group
//!   (clients hash differently, and Python never says which queue it chose); a normal message
//!   goes to a queue this broker leads when there is one (its route sent the client here), the
//!   one the client named when this broker leads it; the normal messages of one request all go
//!   to one queue, in one entry. A forwarded request keeps the queue its forwarder chose.
//! - **Types**: a message's type must be its topic's (`MESSAGE_PROPERTY_CONFLICT_WITH_TYPE`);
//!   a FIFO message needs a message group. Delay and transaction messages are refused with
//!   `NOT_IMPLEMENTED` until they land.
//! - **Answers**: one entry per message, in order, with the client's message id; a failure is
//!   in its entry and in the top-level status (Python reads only that one). What may have been
//!   stored is answered `MASTER_PERSISTENCE_TIMEOUT`, never as "nothing done".

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use controller::{ClusterMap, GroupRecord, MessageType as TopicType, TopicRecord};
use proto::apache::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use proto::apache::rocketmq::v2::{Code, Encoding, Message, MessageType, SendMessageRequest, SendMessageResponse, SendResultEntry, Status};
use tonic::Request;
use tonic::transport::Channel;

use super::{codes, ok, resolve, status, topic_record};
use crate::edge::{self, InvalidArgument, MessageParts, answer_by, left};
use crate::queue::NewMessage;
use crate::routing::{AtLeader, Effect, at_leader, forward_request, is_forwarded};
use crate::server::Core;
use crate::size_limits::{BORN_HOST_BYTES_MAX, MESSAGE_GROUP_BYTES_MAX, MESSAGE_ID_BYTES_MAX, TRACE_CONTEXT_BYTES_MAX};

/// What picks a normal message's queue when the client's choice is not kept.
#[derive(Default)]
pub(super) struct SendState {
    next_queue: AtomicU32,
}

impl SendState {
    fn round_robin(&self, among: &[u32]) -> Option<u32> {
        let n = u32::try_from(among.len()).ok().filter(|n| *n > 0)?;
        among.get((self.next_queue.fetch_add(1, Ordering::Relaxed) % n) as usize).copied()
    }
}

pub(super) async fn send_message(core: &Core, state: &SendState, request: Request<SendMessageRequest>) -> SendMessageResponse {
    let forwarded = is_forwarded(&request);
    let due = answer_by(&request);
    let resolved: Vec<_> = request.get_ref().messages.iter().map(|m| resolve(m.topic.as_ref(), &request)).collect();
    let messages = request.into_inner().messages;
    let ids: Vec<String> =
        messages.iter().map(|m| m.system_properties.as_ref().map(|p| p.message_id.clone()).unwrap_or_default()).collect();
    let refuse = |s: Status| SendMessageResponse {
        status: Some(s.clone()),
        entries: ids.iter().map(|id| entry(s.clone(), id.clone(), 0)).collect(),
    };
    let limits = &core.options.limits;
    if let Err(e) = edge::check_message_count(messages.len(), limits) {
        return refuse(codes::invalid(&e));
    }
    let topic = resolved[0].1.clone();
    if resolved.iter().any(|(_, t)| *t != topic) {
        return refuse(status(Code::BadRequest, "the messages of one send must share a topic"));
    }
    let (map, record) = match topic_record(core, &topic).await {
        Ok(found) => found,
        Err(s) => return refuse(s),
    };
    let mut by_queue: BTreeMap<u32, Vec<(usize, NewMessage)>> = BTreeMap::new();
    let mut normal_queue = None;
    for (i, m) in messages.iter().enumerate() {
        let new = match new_message(i, m, &record, limits) {
            Ok(new) => new,
            Err(s) => return refuse(s),
        };
        let queue = match &new.message_group {
            // The native API's routing key hashes the same way: one group, one queue, whichever
            // protocol sent it.
            Some(group) => crc32c::crc32c(group.as_bytes()) % record.queue_count.max(1),
            // A batch of normal messages goes to one queue, as RocketMQ's does.
            None => *normal_queue.get_or_insert_with(|| pick_normal_queue(core, state, &map, &record, new.queue, forwarded)),
        };
        by_queue.entry(queue).or_default().push((i, NewMessage { queue, ..new }));
    }
    let topic = &topic;
    let sends = by_queue.into_iter().map(|(queue, batch)| {
        let resource = resolved[0].0.clone();
        let originals: Vec<Message> = batch.iter().map(|(i, _)| messages[*i].clone()).collect();
        let group = map.route(topic, queue).cloned();
        async move {
            let (places, batch): (Vec<usize>, Vec<NewMessage>) = batch.into_iter().unzip();
            let answers = match group {
                Some(group) => send_to_queue(core, &group, batch, originals, resource, forwarded, due).await,
                None => {
                    let lost = status(Code::InternalServerError, format!("topic {topic:?} queue {queue} has no group in the map"));
                    batch.iter().map(|m| entry(lost.clone(), m.message_id.clone(), 0)).collect()
                }
            };
            places.into_iter().zip(answers).collect::<Vec<_>>()
        }
    });
    let mut entries: Vec<Option<SendResultEntry>> = vec![None; ids.len()];
    for (place, e) in futures::future::join_all(sends).await.into_iter().flatten() {
        entries[place] = Some(e);
    }
    let entries: Vec<SendResultEntry> = entries
        .into_iter()
        .zip(&ids)
        .map(|(e, id)| e.unwrap_or_else(|| entry(status(Code::InternalServerError, "no answer for this message"), id.clone(), 0)))
        .collect();
    let failed = entries.iter().filter_map(|e| e.status.as_ref()).find(|s| s.code != Code::Ok as i32).cloned();
    SendMessageResponse { status: Some(failed.unwrap_or_else(ok)), entries }
}

fn entry(status: Status, message_id: String, offset: u64) -> SendResultEntry {
    let offset = i64::try_from(offset).unwrap_or(i64::MAX);
    SendResultEntry { status: Some(status), message_id, transaction_id: String::new(), offset, recall_handle: String::new() }
}

/// Stores `batch` (all of `group`'s queue) at the group's leader: one entry per message, in order.
async fn send_to_queue(
    core: &Core,
    group: &GroupRecord,
    batch: Vec<NewMessage>,
    mut originals: Vec<Message>,
    resource: proto::apache::rocketmq::v2::Resource,
    forwarded: bool,
    due: Option<tokio::time::Instant>,
) -> Vec<SendResultEntry> {
    let ids: Vec<String> = batch.iter().map(|m| m.message_id.clone()).collect();
    let all = |s: Status| ids.iter().map(|id| entry(s.clone(), id.clone(), 0)).collect::<Vec<_>>();
    let queue = group.queue;
    let serve = core.leader_target(group, forwarded, left(due)).await;
    // The leader keeps this broker's choice of queue and needs no namespace header.
    for m in &mut originals {
        m.topic = Some(resource.clone());
        if let Some(p) = m.system_properties.as_mut() {
            p.queue_id = queue as i32;
        }
    }
    let call = |mut client: MessagingServiceClient<Channel>, within| {
        let forward = forward_request(core, SendMessageRequest { messages: originals.clone() }, within);
        async move { client.send_message(forward).await }
    };
    match at_leader(core, group, serve, forwarded, due, Effect::Write, call).await {
        AtLeader::Here(_) => {}
        AtLeader::Answered(reply) if reply.entries.len() == ids.len() => return reply.entries,
        AtLeader::Answered(reply) => {
            let reason = format!("the leader answered {} entries for {} messages: {:?}", reply.entries.len(), ids.len(), reply.status);
            return all(status(Code::MasterPersistenceTimeout, reason));
        }
        AtLeader::Refused(s) => return all(codes::from_native(&s)),
    }
    match core.send_here(group, batch, due).await {
        Ok(offsets) => ids.into_iter().zip(offsets).map(|(id, (_, offset))| entry(ok(), id, offset)).collect(),
        Err(s) => all(codes::from_native(&s)),
    }
}

/// Message `i` of a send as the group stores it (with the queue the client named, still to be
/// picked), or why it is refused.
fn new_message(i: usize, m: &Message, topic: &TopicRecord, limits: &edge::Limits) -> Result<NewMessage, Status> {
    let field = |name: &str| format!("messages[{i}].{name}");
    let too_long = |name: &str, len: usize, max: usize| {
        codes::invalid(&InvalidArgument { field: field(name), reason: format!("{len} bytes; must be 1 to {max}") })
    };
    let p = m.system_properties.clone().unwrap_or_default();
    if p.message_id.is_empty() || p.message_id.len() > MESSAGE_ID_BYTES_MAX {
        return Err(too_long("message_id", p.message_id.len(), MESSAGE_ID_BYTES_MAX));
    }
    let mut properties: Vec<(String, String)> = m.user_properties.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    // Sorted, so that every replica stores the same bytes whatever order the map arrived in.
    properties.sort();
    let parts = MessageParts { body: &m.body, properties: &properties, tag: p.tag.as_deref(), keys: &p.keys };
    edge::check_message(&format!("messages[{i}]"), &parts, limits).map_err(|e| codes::invalid(&e))?;
    let bounded = [
        ("message_group", p.message_group.as_deref(), MESSAGE_GROUP_BYTES_MAX),
        ("born_host", Some(p.born_host.as_str()).filter(|h| !h.is_empty()), BORN_HOST_BYTES_MAX),
        ("trace_context", p.trace_context.as_deref(), TRACE_CONTEXT_BYTES_MAX),
    ];
    for (name, value, max) in bounded {
        if let Some(v) = value.filter(|v| v.is_empty() || v.len() > max) {
            return Err(too_long(name, v.len(), max));
        }
    }
    check_type(i, &p, topic)?;
    let gzip = match Encoding::try_from(p.body_encoding) {
        Ok(Encoding::Gzip) => true,
        Ok(Encoding::Identity | Encoding::Unspecified) => false,
        Err(_) => return Err(status(Code::BadRequest, format!("{}: unknown body encoding {}", field("body_encoding"), p.body_encoding))),
    };
    Ok(NewMessage {
        // The client's choice, which `pick_queue` keeps or replaces.
        queue: u32::try_from(p.queue_id).unwrap_or(u32::MAX),
        message_id: p.message_id,
        tag: p.tag,
        keys: p.keys,
        properties,
        body: m.body.to_vec(),
        message_group: p.message_group,
        born_host: p.born_host,
        born_timestamp_ms: p.born_timestamp.as_ref().map_or(0, timestamp_ms),
        deliver_at_ms: p.delivery_timestamp.as_ref().map(timestamp_ms),
        trace_context: p.trace_context,
        body_gzip: gzip,
    })
}

/// A message's type must be its topic's; a FIFO message needs its group. A client that does
/// not say the type is taken at its word from what it set (a message group: FIFO; a delivery
/// time: delay).
fn check_type(i: usize, p: &proto::apache::rocketmq::v2::SystemProperties, topic: &TopicRecord) -> Result<(), Status> {
    let said = MessageType::try_from(p.message_type).unwrap_or(MessageType::Unspecified);
    let kind = match said {
        MessageType::Unspecified if p.message_group.is_some() => MessageType::Fifo,
        MessageType::Unspecified if p.delivery_timestamp.is_some() => MessageType::Delay,
        MessageType::Unspecified => MessageType::Normal,
        other => other,
    };
    let accepted = super::route::message_type(topic.message_type);
    if kind != accepted {
        let reason = format!("messages[{i}] is a {} message; topic {:?} takes {} messages", name(kind), topic.name, name(accepted));
        return Err(status(Code::MessagePropertyConflictWithType, reason));
    }
    match topic.message_type {
        TopicType::Normal if p.message_group.is_some() => {
            Err(status(Code::MessagePropertyConflictWithType, format!("messages[{i}] has a message group; only FIFO topics take one")))
        }
        TopicType::Fifo if p.message_group.is_none() => {
            Err(status(Code::IllegalMessageGroup, format!("messages[{i}] has no message group; topic {:?} is FIFO", topic.name)))
        }
        TopicType::Normal | TopicType::Fifo => Ok(()),
        TopicType::Delay | TopicType::Transaction => Err(status(
            Code::NotImplemented,
            format!("{} messages (topic {:?}) are not served by this raftmq release", name(kind), topic.name),
        )),
    }
}

fn name(t: MessageType) -> String {
    t.as_str_name().to_ascii_lowercase()
}

/// The queue of a request's normal messages, `asked` the one the client named: see the module
/// documentation.
fn pick_normal_queue(core: &Core, state: &SendState, map: &ClusterMap, topic: &TopicRecord, asked: u32, forwarded: bool) -> u32 {
    let count = topic.queue_count.max(1);
    if forwarded && asked < count {
        return asked;
    }
    let led_here: Vec<u32> =
        (0..count).filter(|q| map.route(&topic.name, *q).and_then(|g| core.known_leader(g)) == Some(core.id)).collect();
    if led_here.contains(&asked) {
        return asked;
    }
    state.round_robin(&led_here).or_else(|| state.round_robin(&(0..count).collect::<Vec<_>>())).unwrap_or(0)
}

fn timestamp_ms(t: &prost_types::Timestamp) -> u64 {
    let ms = t.seconds.saturating_mul(1000).saturating_add(i64::from(t.nanos / 1_000_000));
    u64::try_from(ms).unwrap_or(0)
}

//! The `rocketmq` workloads: producers and SimpleConsumers speaking RocketMQ 5's
//! `MessagingService` to random brokers (a broker that does not lead the queue forwards once),
//! as the official clients do, every operation recorded like the native workload's.
//!
//! Producers send unique checksummed values; on a FIFO topic each producer is its own message
//! group, so the broker chooses the queue. RocketMQ's send answer names only the offset, so a
//! send records [`QUEUE_CHOSEN_BY_BROKER`] and the checker learns the queue from where the value
//! was seen. Consumers of one consumer group receive batches with an invisible time and
//! acknowledge each message by its receipt handle (all of a batch at once, each from a process
//! of its own), leaving a few unacknowledged
//! ([`UNACKED_ONE_IN`]) so they must come again once visible. After the workload's deadline the consumers drain: they go on until
//! nothing was delivered for [`DRAIN_QUIET`] (longer than the invisible time), so every
//! acknowledged send must have been delivered by the end.
//!
//! Outcomes: `OK` is `ok`; the protocol's refusals (`4xxxx` codes but `REQUEST_TIMEOUT`, and
//! `HA_NOT_AVAILABLE`) promise nothing was done and are `fail`; anything else (a persistence
//! timeout, an internal error, a timeout, a broken stream) is `info`, and retires the process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proto::apache::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use proto::apache::rocketmq::v2::{
    AckMessageEntry, AckMessageRequest, Code, Encoding, Message, MessageQueue, MessageType, ReceiveMessageRequest, Resource,
    SendMessageRequest, SystemProperties, receive_message_response,
};
use rand::{RngExt, SeedableRng};
use rand_xorshift::XorShiftRng;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::cluster::channel;
use crate::history::{Delivered, EventKind, Op, QUEUE_CHOSEN_BY_BROKER};
use crate::workload::{CALL_TIMEOUT, ProducerPace, Workload};

/// The consumer group every consumer of the workload belongs to.
pub const CONSUMER_GROUP: &str = "jepsen-rocketmq";
/// How long a delivered message stays invisible to the consumer group.
pub const INVISIBLE: Duration = Duration::from_secs(3);
/// Most messages one receive asks for (the broker's most): a FIFO queue serves one batch at a
/// time, so the batch bounds its rate.
const BATCH: i32 = 32;
/// How long a receive waits at the broker for a message: short, since a receive naming a queue
/// that holds nothing new (FIFO groups hash to some queues only) waits its whole long poll.
const LONG_POLL: Duration = Duration::from_millis(300);
/// One delivery in this many is left unacknowledged: it must come again once visible.
pub const UNACKED_ONE_IN: u32 = 10;
/// The same on a FIFO topic, where an unacknowledged message holds back its whole queue until
/// it is visible again.
pub const FIFO_UNACKED_ONE_IN: u32 = 1000;
/// Message groups of each FIFO producer, used in turn: more groups spread over more queues
/// (the broker hashes the group to its queue), and each stays one producer's sequential sends.
const GROUPS_PER_PRODUCER: u64 = 4;
/// The drain ends once nothing was delivered for this long (every message left unacknowledged
/// has become visible again within it) and the consumer's last receives all succeeded empty.
pub const DRAIN_QUIET: Duration = Duration::from_secs(6);
/// The longest drain.
pub const DRAIN_MAX: Duration = Duration::from_secs(120);
/// Pause after an operation that did not succeed.
const BACKOFF: Duration = Duration::from_millis(200);

/// What the consumers share: when the last message was delivered, to end the drain.
pub struct Drain {
    last_delivery_ns: AtomicU64,
}

impl Drain {
    pub fn new() -> Self {
        Self { last_delivery_ns: AtomicU64::new(0) }
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

fn client(addr: SocketAddr) -> MessagingServiceClient<Channel> {
    MessagingServiceClient::new(channel(addr))
}

fn resource(name: &str) -> Resource {
    Resource { resource_namespace: String::new(), name: name.to_owned() }
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX), nanos: d.subsec_nanos() as i32 }
}

/// What a RocketMQ status code promises: see the module documentation.
fn outcome(code: i32) -> EventKind {
    let refused = (Code::BadRequest as i32..Code::InternalError as i32).contains(&code) && code != Code::RequestTimeout as i32;
    if code == Code::Ok as i32 {
        EventKind::Ok
    } else if refused || code == Code::HaNotAvailable as i32 {
        EventKind::Fail
    } else {
        EventKind::Info
    }
}

/// `(outcome, why)` of a status with `code` and `message`.
fn judged(code: i32, message: &str) -> (EventKind, Option<String>) {
    match outcome(code) {
        EventKind::Ok => (EventKind::Ok, None),
        kind => (kind, Some(format!("{code}: {message}"))),
    }
}

/// A transport failure: the request may have reached the broker, unless it certainly never left.
fn transport(status: &tonic::Status) -> (EventKind, Option<String>) {
    let kind = if client::transport::never_sent(status) { EventKind::Fail } else { EventKind::Info };
    (kind, Some(status.to_string()))
}

fn timed<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

impl Workload<'_> {
    /// One RocketMQ producer: sends unique values until the deadline; with `fifo`, in message
    /// groups of its own, [`GROUPS_PER_PRODUCER`] used in turn (the topic must be a FIFO topic),
    /// else to a random queue (which the broker may replace by one it leads).
    pub async fn produce_rocketmq(&self, producer: u64, seed: u64, fifo: bool) {
        let mut pace = ProducerPace::new(self, producer, seed);
        let mut process = self.recorder.new_process();
        while pace.turn(self).await {
            let (n, value) = pace.value();
            let message_id = format!("{producer:08X}{n:016X}");
            let group = fifo.then(|| format!("p{producer}-g{}", n % GROUPS_PER_PRODUCER));
            let endpoint = self.endpoints[pace.rng.random_range(0..self.endpoints.len())];
            let op = |offset| Op::Send { queue: QUEUE_CHOSEN_BY_BROKER, value: value.clone(), message_group: group.clone(), offset };
            self.recorder.record(process, EventKind::Invoke, op(None), None);
            let message = Message {
                topic: Some(resource(self.topic)),
                user_properties: HashMap::new(),
                system_properties: Some(SystemProperties {
                    message_id,
                    body_encoding: Encoding::Identity as i32,
                    message_type: if fifo { MessageType::Fifo } else { MessageType::Normal } as i32,
                    message_group: group.clone(),
                    queue_id: pace.rng.random_range(0..self.queues.max(1)) as i32,
                    ..SystemProperties::default()
                }),
                body: value.clone().into_bytes().into(),
            };
            let request = timed(SendMessageRequest { messages: vec![message] }, CALL_TIMEOUT);
            let (kind, offset, error) = match tokio::time::timeout(CALL_TIMEOUT, client(endpoint).send_message(request)).await {
                Ok(Ok(r)) => {
                    let r = r.into_inner();
                    let status = r.status.unwrap_or_default();
                    let (kind, error) = judged(status.code, &status.message);
                    let entry = r.entries.first().and_then(|e| e.status.as_ref().map(|s| (s.code, e.offset)));
                    match (kind, entry) {
                        (EventKind::Ok, Some((code, offset))) if code == Code::Ok as i32 => (kind, u64::try_from(offset).ok(), None),
                        (EventKind::Ok, _) => (EventKind::Info, None, Some("OK without an OK entry".to_string())),
                        _ => (kind, None, error),
                    }
                }
                Ok(Err(status)) => {
                    let (kind, error) = transport(&status);
                    (kind, None, error)
                }
                Err(_) => (EventKind::Info, None, Some(format!("no answer within {CALL_TIMEOUT:?}"))),
            };
            let kind = if kind == EventKind::Ok && offset.is_none() { EventKind::Info } else { kind };
            self.recorder.record(process, kind, op(offset), error);
            if kind == EventKind::Info {
                process = self.recorder.new_process();
            }
        }
    }

    /// One consumer of [`CONSUMER_GROUP`]: receives from random brokers, naming the queues in
    /// turn, and acknowledges what it got (but one in [`UNACKED_ONE_IN`], on a `fifo` topic
    /// [`FIFO_UNACKED_ONE_IN`]), until the deadline and then until the drain ends.
    pub async fn consume_rocketmq(&self, consumer: u64, seed: u64, fifo: bool, drain: &Drain) {
        let unacked_one_in = if fifo { FIFO_UNACKED_ONE_IN } else { UNACKED_ONE_IN };
        let mut rng = XorShiftRng::seed_from_u64(seed ^ 0x5EED_C0DE ^ consumer);
        let mut process = self.recorder.new_process();
        let mut queue = (consumer % u64::from(self.queues.max(1))) as u32;
        let drain_end = self.deadline + DRAIN_MAX;
        // Receives in a row that succeeded and found nothing: the drain needs every queue named
        // twice so, not only a quiet spell (a cluster still recovering is quiet too).
        let mut empty_in_a_row = 0u32;
        loop {
            let now = Instant::now();
            let quiet_ns = self.recorder.now_ns().saturating_sub(drain.last_delivery_ns.load(Ordering::Relaxed));
            let drained = now >= self.deadline && Duration::from_nanos(quiet_ns) >= DRAIN_QUIET && empty_in_a_row >= 2 * self.queues.max(1);
            if drained || now >= drain_end || !self.recorder.has_room() {
                return;
            }
            queue = (queue + 1) % self.queues.max(1);
            let endpoint = self.endpoints[rng.random_range(0..self.endpoints.len())];
            let mut client = client(endpoint);
            let (kind, delivered) = self.receive(&mut client, process, queue).await;
            if !delivered.is_empty() {
                drain.last_delivery_ns.fetch_max(self.recorder.now_ns(), Ordering::Relaxed);
            }
            empty_in_a_row = if kind == EventKind::Ok && delivered.is_empty() { empty_in_a_row + 1 } else { 0 };
            match kind {
                EventKind::Ok => {}
                EventKind::Info => {
                    process = self.recorder.new_process();
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                }
                _ => {
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                }
            }
            // Each acknowledgement from a process of its own, all at once, as a client acking
            // from its consumption threads does.
            let acks = delivered.into_iter().filter(|_| rng.random_range(0..unacked_one_in) != 0).map(|(message, handle)| {
                let mut client = client.clone();
                async move {
                    let process = self.recorder.new_process();
                    self.ack(&mut client, process, &message, handle).await;
                }
            });
            futures::future::join_all(acks).await;
        }
    }

    /// One receive naming `queue`: its outcome and the messages with their receipt handles.
    async fn receive(
        &self,
        client: &mut MessagingServiceClient<Channel>,
        process: u64,
        queue: u32,
    ) -> (EventKind, Vec<(Delivered, String)>) {
        let invisible_ms = INVISIBLE.as_millis() as u64;
        let op = |messages| Op::Receive { consumer_group: CONSUMER_GROUP.into(), queue, invisible_ms, messages };
        self.recorder.record(process, EventKind::Invoke, op(vec![]), None);
        let request = ReceiveMessageRequest {
            group: Some(resource(CONSUMER_GROUP)),
            message_queue: Some(MessageQueue { topic: Some(resource(self.topic)), id: queue as i32, ..MessageQueue::default() }),
            filter_expression: None,
            batch_size: BATCH,
            invisible_duration: Some(duration(INVISIBLE)),
            auto_renew: false,
            long_polling_timeout: Some(duration(LONG_POLL)),
            attempt_id: None,
        };
        let within = CALL_TIMEOUT + LONG_POLL;
        let received = tokio::time::timeout(within, async {
            let mut stream = client.receive_message(timed(request, within)).await.map_err(|s| transport(&s))?.into_inner();
            let (mut code, mut why, mut got) = (None, String::new(), Vec::new());
            while let Some(item) = stream.message().await.map_err(|s| (EventKind::Info, Some(s.to_string())))? {
                match item.content {
                    Some(receive_message_response::Content::Status(s)) => {
                        code = Some(s.code);
                        why = s.message;
                    }
                    Some(receive_message_response::Content::Message(m)) => got.push(m),
                    _ => {}
                }
            }
            Ok::<_, (EventKind, Option<String>)>((code, why, got))
        })
        .await;
        let (kind, messages, error) = match received {
            Err(_) => (EventKind::Info, vec![], Some(format!("no answer within {within:?}"))),
            Ok(Err((kind, error))) => (kind, vec![], error),
            Ok(Ok((None, _, _))) => (EventKind::Info, vec![], Some("the stream ended without a status".into())),
            Ok(Ok((Some(code), _, _))) if code == Code::MessageNotFound as i32 => (EventKind::Ok, vec![], None),
            Ok(Ok((Some(code), why, got))) => {
                let (kind, error) = judged(code, &why);
                let mut messages = Vec::with_capacity(got.len());
                for m in got {
                    let p = m.system_properties.unwrap_or_default();
                    let value = String::from_utf8_lossy(&m.body).into_owned();
                    let handle = p.receipt_handle.unwrap_or_default();
                    let message = Delivered {
                        queue: u32::try_from(p.queue_id).unwrap_or(QUEUE_CHOSEN_BY_BROKER),
                        offset: u64::try_from(p.queue_offset.unwrap_or(-1)).unwrap_or(u64::MAX),
                        value,
                        attempt: u32::try_from(p.delivery_attempt.unwrap_or(0)).unwrap_or(0),
                    };
                    messages.push((message, handle));
                }
                // Messages under a status that is not OK: what happened is unknown.
                let kind = if kind != EventKind::Ok && !messages.is_empty() { EventKind::Info } else { kind };
                (kind, messages, error)
            }
        };
        let recorded: Vec<Delivered> = if kind == EventKind::Ok { messages.iter().map(|(m, _)| m.clone()).collect() } else { vec![] };
        self.recorder.record(process, kind, op(recorded), error);
        (kind, if kind == EventKind::Ok { messages } else { vec![] })
    }

    /// Acknowledges one delivery by its receipt handle.
    async fn ack(&self, client: &mut MessagingServiceClient<Channel>, process: u64, message: &Delivered, handle: String) {
        let op = Op::Ack {
            consumer_group: CONSUMER_GROUP.into(),
            queue: message.queue,
            offset: message.offset,
            value: message.value.clone(),
            attempt: message.attempt,
        };
        self.recorder.record(process, EventKind::Invoke, op.clone(), None);
        let entry = AckMessageEntry { message_id: String::new(), receipt_handle: handle, lite_topic: None };
        let request = AckMessageRequest { group: Some(resource(CONSUMER_GROUP)), topic: Some(resource(self.topic)), entries: vec![entry] };
        let (kind, error) = match tokio::time::timeout(CALL_TIMEOUT, client.ack_message(timed(request, CALL_TIMEOUT))).await {
            Ok(Ok(r)) => {
                let r = r.into_inner();
                // The entry's own status says what became of this acknowledgement.
                match r.entries.first().and_then(|e| e.status.clone()).or(r.status) {
                    Some(s) => judged(s.code, &s.message),
                    None => (EventKind::Info, Some("no status".into())),
                }
            }
            Ok(Err(status)) => transport(&status),
            Err(_) => (EventKind::Info, Some(format!("no answer within {CALL_TIMEOUT:?}"))),
        };
        self.recorder.record(process, kind, op, error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_protocols_refusals_promise_nothing_was_done() {
        assert_eq!(outcome(Code::Ok as i32), EventKind::Ok);
        for refused in [Code::BadRequest, Code::TopicNotFound, Code::TooManyRequests, Code::InvalidReceiptHandle, Code::HaNotAvailable] {
            assert_eq!(outcome(refused as i32), EventKind::Fail, "{refused:?}");
        }
        for unknown in [Code::RequestTimeout, Code::MasterPersistenceTimeout, Code::InternalServerError, Code::ProxyTimeout] {
            assert_eq!(outcome(unknown as i32), EventKind::Info, "{unknown:?}");
        }
        assert_eq!(outcome(12345), EventKind::Info, "a code this client does not know");
    }
}

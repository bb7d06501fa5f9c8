//! The workload: producers sending unique values, consumers reading and committing, every
//! operation recorded as an invocation and a completion ([`Recorder`]); and the final read of
//! every queue on every replica.
//!
//! Outcomes follow the protocol's guarantees: `OK` is `ok`; `NOT_LEADER`, `BUSY`,
//! `UNAVAILABLE`, `INVALID_ARGUMENT` and `NOT_FOUND` promise nothing was done and are `fail`
//! (the checker holds the cluster to that: a failed send must never be read); everything else
//! (`OUTCOME_UNKNOWN`, `INTERNAL`, a timeout, a lost connection) may or may not have taken
//! effect and is `info`, after which the process is retired and a new one takes its place.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use client::RouteTable;
use proto::raftmq::v1::send_request::Target;
use proto::raftmq::v1::status::Code;
use proto::raftmq::v1::{
    BrokerInfo, CommitOffsetRequest, DescribeTopicRequest, FetchRequest, GetOffsetRequest, Message, QueueInfo, SendRequest, Status,
};
use rand::{RngExt, SeedableRng};
use rand_xorshift::XorShiftRng;
use tokio::time::Instant;

use crate::cluster::{admin_client, queue_client};
use crate::history::{Event, EventKind, FinalRead, Op};

/// Deadline of every client call: past it the outcome is unknown (`info`).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds of the random padding in each value, so message sizes vary.
const PADDING_MIN: usize = 8;
const PADDING_MAX: usize = 96;
/// Most events one run records; the workload stops issuing operations beyond it.
pub const EVENTS_MAX: usize = 10_000_000;

/// Collects the history: events get dense indexes and times since the run started.
pub struct Recorder {
    started: Instant,
    events: Mutex<Vec<Event>>,
    next_process: AtomicU64,
}

impl Recorder {
    pub fn new(started: Instant) -> Self {
        Self { started, events: Mutex::new(Vec::new()), next_process: AtomicU64::new(0) }
    }

    /// A process id never used before.
    pub fn new_process(&self) -> u64 {
        self.next_process.fetch_add(1, Ordering::Relaxed)
    }

    /// Nanoseconds since the run started.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether the history has room for another operation.
    pub fn has_room(&self) -> bool {
        self.lock().len() + 2 <= EVENTS_MAX
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Event>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(&self, process: u64, kind: EventKind, op: Op, error: Option<String>) {
        let mut events = self.lock();
        // The time is taken under the lock, so times never decrease along the history.
        let event = Event { index: events.len() as u64, process, time_ns: self.now_ns(), kind, op, error };
        events.push(event);
    }

    pub fn into_events(self) -> Vec<Event> {
        self.events.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

/// How a reply's status maps to an outcome: `fail` only where the status promises nothing was
/// done ([`CallError::promises_nothing_done`]), else `info`.
fn outcome(status: &Option<Status>) -> (EventKind, Option<String>) {
    let Some(s) = status else { return (EventKind::Info, Some("no status".into())) };
    match client::status::check(Some(s)) {
        Ok(()) => (EventKind::Ok, None),
        Err(e) if e.promises_nothing_done() => (EventKind::Fail, Some(format!("{}: {}", s.code, s.message))),
        Err(_) => (EventKind::Info, Some(format!("{}: {}", s.code, s.message))),
    }
}

/// How a call that failed in transport maps to an outcome: a request that certainly never left
/// this process did nothing (`fail`); anything else may have reached the server (`info`).
fn transport_outcome(status: &tonic::Status) -> EventKind {
    if client::transport::never_sent(status) { EventKind::Fail } else { EventKind::Info }
}

/// One client call within [`CALL_TIMEOUT`]: its reply, or, when the call itself failed, the
/// outcome that means and why.
async fn call<T>(reply: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> Result<T, (EventKind, String)> {
    match tokio::time::timeout(CALL_TIMEOUT, reply).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(status)) => Err((transport_outcome(&status), status.to_string())),
        Err(_) => Err((EventKind::Info, format!("no answer within {CALL_TIMEOUT:?}"))),
    }
}

/// `message` with [`CALL_TIMEOUT`] as its gRPC deadline, so the broker knows it too and answers
/// in time with a status that says what happened (OUTCOME_UNKNOWN, UNAVAILABLE) rather than
/// being cut off.
fn timed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// How producers choose the broker for each send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Routing {
    /// A random broker each time; a follower forwards the send to the leader.
    Random,
    /// The queue's leader as the cluster last reported it (`DescribeTopic`), as RocketMQ's
    /// clients route by topic route; learned again after any send that did not succeed.
    Leader,
}

/// Deadline of a route lookup.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(1);
/// Route lookups are shared: at most one per this gap, however many producers miss a route.
const ROUTE_REFRESH_GAP: Duration = Duration::from_millis(100);

/// The leader endpoint of each queue, for [`Routing::Leader`]: the client's [`RouteTable`],
/// learned from DescribeTopic with the brokers this run started.
pub struct LeaderRoutes {
    table: Mutex<RouteTable>,
    /// When the last lookup ended; one lookup at a time.
    refreshed: tokio::sync::Mutex<Option<Instant>>,
}

impl LeaderRoutes {
    pub fn new() -> Self {
        Self { table: Mutex::new(RouteTable::default()), refreshed: tokio::sync::Mutex::new(None) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RouteTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The queue's leader; every route names one of this run's brokers, so it parses.
    fn get(&self, queue: u32) -> Option<SocketAddr> {
        self.lock().leader(queue).and_then(|e| e.parse().ok())
    }

    fn forget(&self, queue: u32) {
        self.lock().forget(queue);
    }

    /// Asks a broker (from `ask`) for the topic's leaders, unless another lookup ended within
    /// [`ROUTE_REFRESH_GAP`]: producers that waited for a lookup in progress use its answer.
    /// `endpoints[i]` is broker `i + 1`'s client endpoint.
    async fn refresh(&self, topic: &str, ask: SocketAddr, endpoints: &[SocketAddr]) {
        let mut refreshed = self.refreshed.lock().await;
        if refreshed.is_some_and(|at| at.elapsed() < ROUTE_REFRESH_GAP) {
            return;
        }
        let req = DescribeTopicRequest { name: topic.into() };
        if let Ok(Ok(reply)) = tokio::time::timeout(ROUTE_TIMEOUT, admin_client(ask).describe_topic(req)).await {
            self.learn(&reply.into_inner().queues, endpoints);
        }
        *refreshed = Some(Instant::now());
    }

    /// Takes each queue's leader from `queues` (broker `i + 1` at `endpoints[i]`); a queue
    /// without a known leader loses its route.
    fn learn(&self, queues: &[QueueInfo], endpoints: &[SocketAddr]) {
        let brokers: Vec<BrokerInfo> = (1..)
            .zip(endpoints)
            .map(|(broker_id, e)| BrokerInfo { broker_id, endpoint: e.to_string(), alive: true, ..Default::default() })
            .collect();
        let reported = RouteTable::build(queues, &brokers);
        let mut table = self.lock();
        for q in queues {
            match reported.leader(q.queue_id) {
                Some(leader) => table.learn_leader(q.queue_id, leader),
                None => table.forget(q.queue_id),
            }
        }
    }
}

impl Default for LeaderRoutes {
    fn default() -> Self {
        Self::new()
    }
}

/// One producer's seeded choices and pace: both workloads' producers send at
/// `rate_per_producer` until the deadline, each value unique to the producer.
pub(crate) struct ProducerPace {
    pub(crate) rng: XorShiftRng,
    producer: u64,
    gap: Duration,
    next_at: Instant,
    n: u64,
}

impl ProducerPace {
    pub(crate) fn new(workload: &Workload<'_>, producer: u64, seed: u64) -> Self {
        Self {
            rng: XorShiftRng::seed_from_u64(seed ^ producer.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            producer,
            gap: Duration::from_secs_f64(1.0 / workload.rate_per_producer.max(0.001)),
            next_at: Instant::now(),
            n: 0,
        }
    }

    /// Waits for the next send's turn; false once the deadline passed or the history is full.
    pub(crate) async fn turn(&mut self, workload: &Workload<'_>) -> bool {
        if Instant::now() >= workload.deadline || !workload.recorder.has_room() {
            return false;
        }
        tokio::time::sleep_until(self.next_at).await;
        self.next_at += self.gap;
        true
    }

    /// The next unique checksummed value (`p{producer}-{n}`, [`crate::value`], padded with
    /// 8-96 seeded letters so sizes vary) and its number `n`.
    pub(crate) fn value(&mut self) -> (u64, String) {
        let rng = &mut self.rng;
        let padding: String = (0..rng.random_range(PADDING_MIN..=PADDING_MAX)).map(|_| char::from(rng.random_range(b'a'..=b'z'))).collect();
        let n = self.n;
        self.n += 1;
        (n, crate::value::checksummed(&format!("p{}-{n}", self.producer), &padding))
    }
}

/// What the workload clients share.
pub struct Workload<'a> {
    pub topic: &'a str,
    pub queues: u32,
    /// Every broker's client endpoint, in broker id order (broker 1 first).
    pub endpoints: &'a [SocketAddr],
    /// With [`Routing::Leader`], where producers send; `None` sends to random brokers.
    pub routes: Option<&'a LeaderRoutes>,
    pub recorder: &'a Recorder,
    pub deadline: Instant,
    /// Operations per second of each producer.
    pub rate_per_producer: f64,
}

impl Workload<'_> {
    /// One producer: sends unique checksummed values (`p{producer}-{n}`, [`crate::value`]) to random queues until the
    /// deadline. With `fifo`, it sends to one queue only, in its own message group, so its
    /// acknowledged values must take increasing offsets.
    pub async fn produce(&self, producer: u64, seed: u64, fifo: bool) {
        let mut pace = ProducerPace::new(self, producer, seed);
        let mut process = self.recorder.new_process();
        let fifo_queue = (producer % u64::from(self.queues.max(1))) as u32;
        let group = fifo.then(|| format!("p{producer}"));
        while pace.turn(self).await {
            // The seeded draws in this order (queue, value, endpoint), so a seed replays the same.
            let queue = if fifo { fifo_queue } else { pace.rng.random_range(0..self.queues.max(1)) };
            let (_, value) = pace.value();
            let random = self.endpoints[pace.rng.random_range(0..self.endpoints.len())];
            let endpoint = match self.routes {
                None => random,
                Some(routes) => match routes.get(queue) {
                    Some(leader) => leader,
                    None => {
                        routes.refresh(self.topic, random, self.endpoints).await;
                        routes.get(queue).unwrap_or(random)
                    }
                },
            };
            let op = |offset| Op::Send { queue, value: value.clone(), message_group: group.clone(), offset };
            self.recorder.record(process, EventKind::Invoke, op(None), None);
            let req = SendRequest {
                topic: self.topic.into(),
                target: Some(Target::QueueId(queue)),
                messages: vec![Message { body: value.clone().into_bytes().into(), ..Default::default() }],
                producer_id: String::new(),
            };
            let mut request = tonic::Request::new(req);
            request.set_timeout(CALL_TIMEOUT);
            let (kind, offset, error) = match call(queue_client(endpoint).send(request)).await {
                Ok(r) => {
                    let (kind, error) = outcome(&r.status);
                    match (kind, r.results.first()) {
                        (EventKind::Ok, Some(result)) if result.queue_id == queue => (kind, Some(result.offset), None),
                        (EventKind::Ok, _) => (EventKind::Info, None, Some(format!("ok without a result for queue {queue}"))),
                        _ => (kind, None, error),
                    }
                }
                Err((kind, error)) => (kind, None, Some(error)),
            };
            self.recorder.record(process, kind, op(offset), error);
            if kind != EventKind::Ok
                && let Some(routes) = self.routes
            {
                routes.forget(queue);
            }
            if kind == EventKind::Info {
                process = self.recorder.new_process();
            }
        }
    }

    /// One consumer of `queue` in `consumer_group`: sessions that start at the committed offset,
    /// poll forward, and commit every few polls, until the deadline. Any unknown outcome ends
    /// the session (and retires the process).
    pub async fn consume(&self, queue: u32, consumer_group: &str, seed: u64) {
        let mut rng = XorShiftRng::seed_from_u64(seed ^ 0xC0FF_EE00 ^ u64::from(queue));
        let mut session = 0u64;
        while Instant::now() < self.deadline && self.recorder.has_room() {
            session += 1;
            let process = self.recorder.new_process();
            let endpoint = self.endpoints[rng.random_range(0..self.endpoints.len())];
            let mut client = queue_client(endpoint);
            // The session starts where the group's committed offset says.
            let read = |offset| Op::ReadOffset { consumer_group: consumer_group.into(), queue, offset };
            self.recorder.record(process, EventKind::Invoke, read(None), None);
            let req = GetOffsetRequest { consumer_group: consumer_group.into(), topic: self.topic.into(), queue_id: queue };
            let mut next = match call(client.get_offset(timed(req))).await {
                Ok(r) => {
                    let (kind, error) = outcome(&r.status);
                    self.recorder.record(process, kind, read(r.offset.filter(|_| kind == EventKind::Ok)), error);
                    if kind != EventKind::Ok {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    r.offset.unwrap_or(0)
                }
                Err((kind, error)) => {
                    self.recorder.record(process, kind, read(None), Some(error));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let mut polls = 0u32;
            while Instant::now() < self.deadline && self.recorder.has_room() {
                let poll = |messages| Op::Poll { session, queue, from: next, messages };
                self.recorder.record(process, EventKind::Invoke, poll(vec![]), None);
                let req = FetchRequest {
                    topic: self.topic.into(),
                    queue_id: queue,
                    offset: next,
                    max_messages: 64,
                    wait_ms: 200,
                    ..Default::default()
                };
                let (kind, messages, error) = match call(client.fetch(timed(req))).await {
                    Ok(r) => {
                        let (kind, error) = outcome(&r.status);
                        let messages: Vec<(u64, String)> = r
                            .messages
                            .into_iter()
                            .filter_map(|m| Some((m.offset, String::from_utf8_lossy(&m.message?.body).into_owned())))
                            .collect();
                        (kind, messages, error)
                    }
                    Err((kind, error)) => (kind, vec![], Some(error)),
                };
                let last = messages.last().map(|(o, _)| *o);
                self.recorder.record(process, kind, poll(if kind == EventKind::Ok { messages } else { vec![] }), error);
                if kind != EventKind::Ok {
                    break;
                }
                if let Some(o) = last {
                    next = o + 1;
                }
                polls += 1;
                if polls.is_multiple_of(4) && !self.commit(&mut client, process, consumer_group, queue, next).await {
                    break;
                }
            }
        }
    }

    /// Commits `offset`; false when the session must end (the outcome was not `ok`).
    async fn commit(
        &self,
        client: &mut proto::raftmq::v1::queue_service_client::QueueServiceClient<tonic::transport::Channel>,
        process: u64,
        consumer_group: &str,
        queue: u32,
        offset: u64,
    ) -> bool {
        let op = Op::Commit { consumer_group: consumer_group.into(), queue, offset };
        self.recorder.record(process, EventKind::Invoke, op.clone(), None);
        let req = CommitOffsetRequest { consumer_group: consumer_group.into(), topic: self.topic.into(), queue_id: queue, offset };
        let (kind, error) = match call(client.commit_offset(timed(req))).await {
            Ok(r) => outcome(&r.status),
            Err((kind, error)) => (kind, Some(error)),
        };
        self.recorder.record(process, kind, op, error);
        kind == EventKind::Ok
    }
}

/// Everything `broker` (at `endpoint`) holds of `queue` of `topic` in its own replica (a
/// `local_only` fetch, so never another broker's answer), read from offset 0 until its
/// end, within `within`.
pub async fn final_read(endpoint: SocketAddr, broker: u64, topic: &str, queue: u32, within: Duration) -> Result<FinalRead, String> {
    let deadline = Instant::now() + within;
    let mut client = queue_client(endpoint);
    let mut out = FinalRead { broker, queue, start_offset: 0, end_offset: 0, messages: Vec::new() };
    let mut next = 0u64;
    let mut last_error = String::from("no answer");
    loop {
        if Instant::now() >= deadline {
            return Err(format!("broker {broker} queue {queue}: not read to its end within {within:?} (last: {last_error})"));
        }
        // From this broker's own replica, never forwarded: each replica is checked on its own.
        let req =
            FetchRequest { topic: topic.into(), queue_id: queue, offset: next, max_messages: 1000, local_only: true, ..Default::default() };
        let r = match call(client.fetch(req)).await {
            Ok(r) => r,
            Err((_, why)) => {
                last_error = why;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if outcome(&r.status).0 != EventKind::Ok {
            // NOT_FOUND: the broker hosts no replica of the queue, which retrying will not change.
            if r.status.as_ref().is_some_and(|s| s.code == Code::NotFound as i32) {
                return Err(format!("broker {broker} queue {queue}: refused: {}", outcome(&r.status).1.unwrap_or_default()));
            }
            last_error = outcome(&r.status).1.unwrap_or_default();
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        if out.messages.is_empty() {
            out.start_offset = r.start_offset;
        }
        out.end_offset = r.end_offset;
        for m in r.messages {
            let Some(message) = m.message else { continue };
            next = m.offset + 1;
            out.messages.push((m.offset, String::from_utf8_lossy(&message.body).into_owned()));
        }
        if next.max(out.start_offset) >= out.end_offset {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_the_reported_leaders_and_drop_unknown_ones() {
        let endpoints: Vec<SocketAddr> = (1..=3).map(|h| SocketAddr::from(([127, 0, 0, h], 8081))).collect();
        let queue = |queue_id, leader_broker_id| QueueInfo { queue_id, leader_broker_id, ..Default::default() };
        let routes = LeaderRoutes::new();
        routes.learn(&[queue(0, 2), queue(1, 3), queue(2, 1)], &endpoints);
        assert_eq!((routes.get(0), routes.get(1), routes.get(2)), (Some(endpoints[1]), Some(endpoints[2]), Some(endpoints[0])));
        // Queue 0 between leaders, queue 1 led by a broker this run does not know: no route, so
        // the producer picks a random broker; queue 2 keeps its leader.
        routes.learn(&[queue(0, 0), queue(1, 9)], &endpoints);
        assert_eq!((routes.get(0), routes.get(1), routes.get(2)), (None, None, Some(endpoints[0])));
        routes.forget(2);
        assert_eq!(routes.get(2), None);
    }
}

//! The reading side of `bench consume` and `bench e2e`: workers, each reading its share of the
//! topic's queues from their leaders, one fetch in flight, until `--count` messages are read.
//! `bench consume` counts every message and measures each non-empty fetch; `bench e2e` counts
//! only its own run's messages and measures each from its send to its reading.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use proto::raftmq::v1::{CommitOffsetRequest, FetchRequest};

use super::produce::is_fatal;
use super::rocketmq::{Received, RocketmqRoute};
use super::stamp::Stamp;
use super::state::{Counters, StopReason, StopSignal};
use crate::bench::latency::LatencyRecorder;
use crate::cli::consume::next_offset;
use client::{Router, queue_client, request};

/// Pause after a fetch that failed for good before the worker tries again.
const FETCH_FAILURE_PAUSE: Duration = Duration::from_millis(100);

/// Where a worker is in one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueCursor {
    pub queue_id: u32,
    pub offset: u64,
    /// The last fetch reached the queue's end.
    pub drained: bool,
}

impl QueueCursor {
    pub fn new(queue_id: u32, offset: u64) -> Self {
        Self { queue_id, offset, drained: false }
    }
}

/// The cursor to fetch on turn `turn`: the queues in turn, skipping those at their end while
/// others have messages; when all are at their end, simply the next in turn.
pub fn pick(cursors: &[QueueCursor], turn: usize) -> usize {
    let len = cursors.len();
    (0..len).map(|k| (turn + k) % len).find(|&i| !cursors[i].drained).unwrap_or(turn % len)
}

/// Deals `cursors` out to `workers` workers (at least one each), like cards.
pub fn deal(cursors: Vec<QueueCursor>, workers: usize) -> Vec<Vec<QueueCursor>> {
    let workers = workers.clamp(1, cursors.len().max(1));
    let mut hands = vec![Vec::new(); workers];
    for (i, c) in cursors.into_iter().enumerate() {
        hands[i % workers].push(c);
    }
    hands
}

/// Every one of `workers` workers (at least one) gets every queue, each starting at a different
/// one: RocketMQ's consumers of one group share the queues, the broker keeping which messages
/// each holds, where native readers own a queue's offset each.
pub fn share(cursors: Vec<QueueCursor>, workers: usize) -> Vec<Vec<QueueCursor>> {
    let len = cursors.len();
    (0..workers.max(1)).map(|w| (0..len).map(|k| cursors[(w + k) % len].clone()).collect()).collect()
}

pub enum ReadMode {
    /// Count every message.
    All,
    /// Count only messages stamped by run `run_id`, which started at `started`.
    Stamped { run_id: u64, started: Instant },
}

/// How a consumer reads: the native fetch, or RocketMQ's receive and ack.
#[derive(Clone)]
pub enum ConsumeVia {
    Native,
    Rocketmq(Arc<RocketmqRoute>),
}

pub struct Consumer {
    pub via: ConsumeVia,
    pub router: Arc<Router>,
    pub topic: String,
    pub count: u64,
    pub mode: ReadMode,
    /// How long a fetch waits at the broker once every queue of the worker is at its end.
    pub wait_ms: u32,
    /// Most messages per fetch or receive; 0: the broker's default.
    pub read_batch: u32,
    /// Native: the consumer group whose offset each fetch that returned messages commits.
    pub commit_group: Option<String>,
    pub counters: Arc<Counters>,
    pub stop: Arc<StopSignal>,
    pub deadline: Instant,
}

/// What one consumer worker measured.
pub struct ConsumeLatency {
    /// Each fetch that returned messages: the call until its reply.
    pub fetch: LatencyRecorder,
    /// e2e: each message of the run, from its send until its reading.
    pub end_to_end: LatencyRecorder,
}

impl Consumer {
    /// One worker over `cursors` (one or more queues).
    pub async fn work(self: Arc<Self>, mut cursors: Vec<QueueCursor>) -> anyhow::Result<ConsumeLatency> {
        if let ConsumeVia::Rocketmq(route) = &self.via {
            return self.clone().receive_and_ack(route.clone(), cursors).await;
        }
        let mut latency = ConsumeLatency { fetch: LatencyRecorder::new()?, end_to_end: LatencyRecorder::new()? };
        let mut turn = 0;
        while !cursors.is_empty() && self.counters.consumed.load(Ordering::Relaxed) < self.count && !self.stop.should_stop(self.deadline) {
            let i = pick(&cursors, turn);
            turn = turn.wrapping_add(1);
            let wait_ms = if cursors.iter().all(|c| c.drained) { self.wait_ms } else { 0 };
            let cursor = &mut cursors[i];
            let req = FetchRequest {
                topic: self.topic.clone(),
                queue_id: cursor.queue_id,
                offset: cursor.offset,
                max_messages: self.read_batch,
                max_bytes: 0,
                wait_ms,
                local_only: false,
            };
            let timeout = self.router.cluster().timeout() + Duration::from_millis(u64::from(wait_ms));
            let fetched_at = Instant::now();
            let call = self.router.call_within(cursor.queue_id, timeout, |ch, left| {
                let req = req.clone();
                async move { queue_client(ch).fetch(request(req, left)).await }
            });
            let reply = match tokio::time::timeout_at(self.deadline.into(), call).await {
                Err(_elapsed) => {
                    self.stop.stop(StopReason::Timeout);
                    break;
                }
                Ok(Ok(reply)) => reply,
                Ok(Err(f)) if is_fatal(&f.error) => {
                    return Err(anyhow::Error::new(f).context(format!("fetching queue {}", cursor.queue_id)));
                }
                Ok(Err(f)) => {
                    self.counters.note_error(format_args!("fetch of queue {} at offset {}: {f}", cursor.queue_id, cursor.offset));
                    Counters::add(&self.counters.fetch_failures, 1);
                    tokio::time::sleep(FETCH_FAILURE_PAUSE).await;
                    continue;
                }
            };
            let next =
                next_offset(cursor.offset, &reply).map_err(|e| anyhow::anyhow!("bad fetch reply from queue {}: {e}", cursor.queue_id))?;
            if !reply.messages.is_empty() {
                if let Some(group) = &self.commit_group
                    && let Err(e) = self.commit(group, cursor.queue_id, next).await
                {
                    // Not read yet for the group: the same messages are fetched again.
                    self.counters.note_error(format_args!("{e}"));
                    Counters::add(&self.counters.fetch_failures, 1);
                    tokio::time::sleep(FETCH_FAILURE_PAUSE).await;
                    continue;
                }
                latency.fetch.record(fetched_at.elapsed());
            }
            cursor.offset = next;
            cursor.drained = next >= reply.end_offset;
            let (mut read, mut bytes) = (0u64, 0u64);
            for m in &reply.messages {
                let body = m.message.as_ref().map_or(&[][..], |msg| &msg.body[..]);
                if let ReadMode::Stamped { run_id, started } = &self.mode {
                    let Some(stamp) = Stamp::read(body).filter(|s| s.run_id == *run_id) else { continue };
                    let now_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    latency.end_to_end.record(Duration::from_nanos(now_ns.saturating_sub(stamp.sent_ns)));
                }
                read += 1;
                bytes += body.len() as u64;
            }
            Counters::add(&self.counters.consumed, read);
            Counters::add(&self.counters.consumed_bytes, bytes);
        }
        Ok(latency)
    }
}

impl Consumer {
    /// Commits `offset` as `group`'s next offset in `queue`.
    async fn commit(&self, group: &str, queue: u32, offset: u64) -> Result<(), client::CallFailure> {
        let req = CommitOffsetRequest { consumer_group: group.to_owned(), topic: self.topic.clone(), queue_id: queue, offset };
        self.router
            .call(queue, |ch, left| {
                let req = req.clone();
                async move { queue_client(ch).commit_offset(request(req, left)).await }
            })
            .await
            .map(|_| ())
    }

    /// One RocketMQ worker over `cursors`' queues: receive a batch (`read_batch`), ack it, count it; a
    /// queue that had nothing is asked again after the others.
    async fn receive_and_ack(self: Arc<Self>, route: Arc<RocketmqRoute>, mut cursors: Vec<QueueCursor>) -> anyhow::Result<ConsumeLatency> {
        let mut latency = ConsumeLatency { fetch: LatencyRecorder::new()?, end_to_end: LatencyRecorder::new()? };
        let mut turn = 0;
        while !cursors.is_empty() && self.counters.consumed.load(Ordering::Relaxed) < self.count && !self.stop.should_stop(self.deadline) {
            let i = pick(&cursors, turn);
            turn = turn.wrapping_add(1);
            let wait = if cursors.iter().all(|c| c.drained) { Duration::from_millis(u64::from(self.wait_ms)) } else { Duration::ZERO };
            let started = Instant::now();
            match route.receive_and_ack(cursors[i].queue_id, BENCH_CONSUMER_GROUP, self.read_batch as i32, wait, Duration::ZERO).await {
                Received::Acked(sizes) => {
                    latency.fetch.record(started.elapsed());
                    cursors[i].drained = false;
                    Counters::add(&self.counters.consumed, sizes.len() as u64);
                    Counters::add(&self.counters.consumed_bytes, sizes.iter().sum::<usize>() as u64);
                }
                Received::Nothing => cursors[i].drained = true,
                Received::Failed(e) => {
                    self.counters.note_error(format_args!("{e}"));
                    Counters::add(&self.counters.fetch_failures, 1);
                    tokio::time::sleep(FETCH_FAILURE_PAUSE).await;
                }
            }
        }
        Ok(latency)
    }
}

/// The consumer group `bench consume --protocol rocketmq` receives as: a new group starts at each
/// queue's first message, so a run on a fresh topic reads what the produce run stored.
pub const BENCH_CONSUMER_GROUP: &str = "raftmq-bench";

#[cfg(test)]
mod tests {
    use super::*;

    fn cursors(drained: &[bool]) -> Vec<QueueCursor> {
        drained.iter().enumerate().map(|(i, &d)| QueueCursor { queue_id: i as u32, offset: 0, drained: d }).collect()
    }

    #[test]
    fn queues_with_messages_come_first() {
        let c = cursors(&[false, false, false]);
        assert_eq!((0..4).map(|t| pick(&c, t)).collect::<Vec<_>>(), [0, 1, 2, 0]);
        let c = cursors(&[true, false, true]);
        assert_eq!((0..3).map(|t| pick(&c, t)).collect::<Vec<_>>(), [1, 1, 1]);
        let c = cursors(&[true, true]);
        assert_eq!((0..3).map(|t| pick(&c, t)).collect::<Vec<_>>(), [0, 1, 0]);
    }

    #[test]
    fn queues_dealt_to_workers() {
        let hands = deal(cursors(&[false; 5]), 2);
        let ids: Vec<Vec<u32>> = hands.iter().map(|h| h.iter().map(|c| c.queue_id).collect()).collect();
        assert_eq!(ids, [vec![0, 2, 4], vec![1, 3]]);
        assert_eq!(deal(cursors(&[false; 2]), 8).len(), 2, "no idle workers");
        assert_eq!(deal(cursors(&[false; 2]), 0).len(), 1);
    }

    #[test]
    fn queues_shared_by_workers() {
        let hands = share(cursors(&[false; 3]), 4);
        let ids: Vec<Vec<u32>> = hands.iter().map(|h| h.iter().map(|c| c.queue_id).collect()).collect();
        assert_eq!(ids, [vec![0, 1, 2], vec![1, 2, 0], vec![2, 0, 1], vec![0, 1, 2]]);
        assert_eq!(share(cursors(&[false; 2]), 0).len(), 1);
    }
}

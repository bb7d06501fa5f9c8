//! The sending side of `bench produce` and `bench e2e`: workers, each with one send in flight,
//! claim the next `--batch` messages of the run until `--count` are claimed, and send them to
//! the topic's queues in turn. Latency is per send: the call until its acknowledgement.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use proto::raftmq::v1::send_request::Target as SendTarget;
use proto::raftmq::v1::{Message, SendRequest};

use super::rocketmq::{Outcome, RocketmqRoute};
use super::state::{Counters, StopReason, StopSignal};
use crate::bench::latency::LatencyRecorder;
use crate::cli::produce::{results_of, send};
use client::{CallError, Router};

/// The run's messages, numbered from 0, handed out `batch` at a time.
#[derive(Debug)]
pub struct SendPlan {
    count: u64,
    batch: u64,
    next: AtomicU64,
}

impl SendPlan {
    pub fn new(count: u64, batch: u64) -> Self {
        assert!(batch > 0, "a batch of no messages");
        Self { count, batch, next: AtomicU64::new(0) }
    }

    /// The next messages to send; None once all are claimed. Each worker stops at its first
    /// None, so `next` grows past `count` by at most one batch per worker.
    pub fn claim(&self) -> Option<Range<u64>> {
        let start = self.next.fetch_add(self.batch, Ordering::Relaxed);
        (start < self.count).then(|| start..(start + self.batch).min(self.count))
    }

    /// The queue of the send that starts at message `start`: the queues in turn.
    pub fn queue_of(&self, start: u64, queues: &[u32]) -> u32 {
        queues[((start / self.batch) % queues.len() as u64) as usize]
    }
}

/// Makes the body of message `index` (from 0).
pub type BodyMaker = Box<dyn Fn(u64) -> Vec<u8> + Send + Sync>;

/// Which protocol the sends go through.
#[derive(Clone)]
pub enum SendVia {
    /// `QueueService`, through the client crate's router.
    Native,
    /// RocketMQ 5's `MessagingService`, to the brokers the topic's route names.
    Rocketmq(Arc<RocketmqRoute>),
}

pub struct Producer {
    pub via: SendVia,
    pub router: Arc<Router>,
    pub topic: String,
    pub queues: Vec<u32>,
    pub plan: SendPlan,
    pub producer_id: String,
    pub body: BodyMaker,
    pub counters: Arc<Counters>,
    pub stop: Arc<StopSignal>,
    pub deadline: Instant,
}

/// Failures that no retry or later send can fix: the benchmark stops on them.
pub fn is_fatal(e: &CallError) -> bool {
    matches!(
        e,
        CallError::InvalidArgument { .. }
            | CallError::NotFound { .. }
            | CallError::BadEndpoint { .. }
            | CallError::Transport { code: tonic::Code::Unimplemented, .. }
    )
}

impl Producer {
    /// One worker: sends until the plan is exhausted, the run stops, or a fatal failure.
    pub async fn work(self: Arc<Self>) -> anyhow::Result<LatencyRecorder> {
        let mut latency = LatencyRecorder::new()?;
        while !self.stop.should_stop(self.deadline) {
            let Some(range) = self.plan.claim() else { break };
            let n = range.end - range.start;
            let queue = self.plan.queue_of(range.start, &self.queues);
            if let SendVia::Rocketmq(route) = &self.via {
                self.send_rocketmq(route, queue, range, &mut latency).await;
                continue;
            }
            // Sequences from 1: 0 would turn deduplication off.
            let messages = range.map(|i| Message { body: (self.body)(i).into(), sequence: i + 1, ..Default::default() }).collect();
            let req = SendRequest {
                topic: self.topic.clone(),
                target: Some(SendTarget::QueueId(queue)),
                messages,
                producer_id: self.producer_id.clone(),
            };
            let sent_at = Instant::now();
            let outcome = tokio::time::timeout_at(self.deadline.into(), send(&self.router, &req)).await;
            let c = &self.counters;
            match outcome {
                Ok(Ok(reply)) => {
                    results_of(reply, n as usize)?;
                    latency.record(sent_at.elapsed());
                    Counters::add(&c.acked, n);
                    Counters::add(&c.acked_bytes, req.messages.iter().map(|m| m.body.len() as u64).sum());
                }
                // Cut off by --timeout while in flight: it may have been stored.
                Err(_elapsed) => {
                    self.stop.stop(StopReason::Timeout);
                    Counters::add(&c.unknown, n);
                }
                Ok(Err(f)) if is_fatal(&f.error) => return Err(anyhow::Error::new(f).context(format!("sending to queue {queue}"))),
                Ok(Err(f)) => {
                    c.note_error(format_args!("send to queue {queue}: {f}"));
                    Counters::add(if f.maybe_applied { &c.unknown } else { &c.failed }, n);
                }
            }
        }
        Ok(latency)
    }

    /// One send of `range` to `queue` over RocketMQ's protocol, counted as the native ones are.
    async fn send_rocketmq(&self, route: &RocketmqRoute, queue: u32, range: Range<u64>, latency: &mut LatencyRecorder) {
        let n = range.end - range.start;
        let ids = range.clone().map(|i| format!("{}-{i}", self.producer_id)).collect();
        let bodies: Vec<Vec<u8>> = range.map(|i| (self.body)(i)).collect();
        let bytes: u64 = bodies.iter().map(|b| b.len() as u64).sum();
        let sent_at = Instant::now();
        let c = &self.counters;
        match tokio::time::timeout_at(self.deadline.into(), route.send(queue, ids, bodies)).await {
            Ok(Outcome::Acked) => {
                latency.record(sent_at.elapsed());
                Counters::add(&c.acked, n);
                Counters::add(&c.acked_bytes, bytes);
            }
            Ok(Outcome::Failed(e)) => {
                c.note_error(format_args!("send to queue {queue}: {e}"));
                Counters::add(&c.failed, n);
            }
            Ok(Outcome::Unknown(e)) => {
                c.note_error(format_args!("send to queue {queue}: {e}"));
                Counters::add(&c.unknown, n);
            }
            Err(_elapsed) => {
                self.stop.stop(StopReason::Timeout);
                Counters::add(&c.unknown, n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_cover_the_count_once() {
        let plan = SendPlan::new(10, 4);
        let claims: Vec<Range<u64>> = std::iter::from_fn(|| plan.claim()).collect();
        assert_eq!(claims, [0..4, 4..8, 8..10]);
        assert_eq!(plan.claim(), None);
    }

    #[test]
    fn sends_go_to_the_queues_in_turn() {
        let plan = SendPlan::new(100, 4);
        let queues = [3, 5, 9];
        let got: Vec<u32> = std::iter::from_fn(|| plan.claim()).take(5).map(|r| plan.queue_of(r.start, &queues)).collect();
        assert_eq!(got, [3, 5, 9, 3, 5]);
    }

    #[test]
    fn concurrent_claims_do_not_overlap() {
        let plan = Arc::new(SendPlan::new(10_000, 3));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let plan = plan.clone();
                std::thread::spawn(move || std::iter::from_fn(|| plan.claim()).map(|r| r.end - r.start).sum::<u64>())
            })
            .collect();
        let total: u64 = handles.into_iter().map(|h| h.join().expect("thread")).sum();
        assert_eq!(total, 10_000);
    }

    #[test]
    fn fatal_failures() {
        let m = String::new;
        assert!(is_fatal(&CallError::NotFound { message: m() }));
        assert!(is_fatal(&CallError::InvalidArgument { field: "topic".into(), message: m() }));
        assert!(is_fatal(&CallError::Transport { code: tonic::Code::Unimplemented, message: m() }));
        assert!(!is_fatal(&CallError::Busy { message: m() }));
        assert!(!is_fatal(&CallError::Unavailable { message: m() }));
        assert!(!is_fatal(&CallError::OutcomeUnknown { message: m() }));
        assert!(!is_fatal(&CallError::Transport { code: tonic::Code::Unavailable, message: m() }));
    }
}

//! The send path's metrics ([`SendPathMetrics`]): what [`super::SendBatcher`] records of every
//! send and every committed entry, registered by [`crate::metrics::BrokerMetrics`]. Here, beside
//! the batcher, so the send path depends on no broker-wide module.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use super::SendError;

/// Latency buckets of the send path and of requests, in seconds: 500 µs to 30 s (a `Fetch`
/// long-polls for up to 30 s by default).
pub(crate) const LATENCY_BUCKETS_SECONDS: [f64; 15] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The send path of every queue group hosted here (see [`crate::queue::SendBatcher`]).
#[derive(Debug)]
pub struct SendPathMetrics {
    messages: Counter,
    bytes: Counter,
    refused: Family<ReasonLabel, Counter>,
    entry_messages: Histogram,
    entry_bytes: Histogram,
    commit_seconds: Histogram,
    /// Messages queued for or inside an entry being proposed, answered or not yet.
    pub(crate) in_flight_messages: Gauge,
}

/// A `reason` label, of a refusal counted by reason.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub(crate) reason: &'static str,
}

/// The `reason` label of a send whose caller stopped waiting before its outcome (its deadline
/// passed): it may still be stored, and was answered OUTCOME_UNKNOWN.
const ABANDONED: &str = "abandoned";

/// The `reason` label of a refused send. Exhaustive: a new refusal must be named here.
fn refusal_reason(e: &SendError) -> &'static str {
    match e {
        SendError::Busy { .. } => "busy",
        SendError::TooLarge { .. } => "too_large",
        SendError::NotLeader { .. } => "not_leader",
        SendError::Unknown(_) => "unknown",
        SendError::Rejected(_) => "rejected",
    }
}

impl SendPathMetrics {
    pub(crate) fn new() -> Self {
        let refused = Family::default();
        // Every reason is exported from the start, at 0, so a rate over it is defined.
        for e in [
            SendError::Busy { in_flight_max: 0 },
            SendError::TooLarge { messages: 0, bytes: 0, messages_max: 0, bytes_max: 0 },
            SendError::NotLeader { leader: None },
            SendError::Unknown(String::new()),
            SendError::Rejected(String::new()),
        ] {
            let _ = refused.get_or_create(&ReasonLabel { reason: refusal_reason(&e) });
        }
        let _ = refused.get_or_create(&ReasonLabel { reason: ABANDONED });
        Self {
            messages: Counter::default(),
            bytes: Counter::default(),
            refused,
            // 1 to 512: the entry limit is 256 messages by default.
            entry_messages: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            // 64 B to 16 MiB: the entry limit is 8 MiB of bodies by default.
            entry_bytes: Histogram::new(exponential_buckets(64.0, 4.0, 10)),
            commit_seconds: Histogram::new(LATENCY_BUCKETS_SECONDS),
            in_flight_messages: Gauge::default(),
        }
    }

    pub(crate) fn register(&self, r: &mut Registry) {
        r.register("raftmq_send_messages", "Messages stored by sends answered OK", self.messages.clone());
        r.register_with_unit(
            "raftmq_send",
            "Bytes of messages stored by sends answered OK, each counted whole",
            Unit::Bytes,
            self.bytes.clone(),
        );
        r.register("raftmq_send_refused", "Sends answered with an error, by reason", self.refused.clone());
        r.register("raftmq_send_entry_messages", "Messages per committed send entry", self.entry_messages.clone());
        r.register_with_unit(
            "raftmq_send_entry",
            "Message bytes per committed send entry, each message counted whole",
            Unit::Bytes,
            self.entry_bytes.clone(),
        );
        r.register_with_unit(
            "raftmq_send_commit_duration",
            "Time from proposing a send entry to its commit and apply (Raft client_write), committed entries only",
            Unit::Seconds,
            self.commit_seconds.clone(),
        );
        r.register(
            "raftmq_send_in_flight_messages",
            "Messages accepted by the send path and not yet answered",
            self.in_flight_messages.clone(),
        );
    }

    /// One send's outcome; `bytes` is the sum of its bodies.
    pub(crate) fn record_send(&self, outcome: &Result<Vec<(u32, u64)>, SendError>, bytes: usize) {
        match outcome {
            Ok(offsets) => {
                self.messages.inc_by(offsets.len() as u64);
                self.bytes.inc_by(bytes as u64);
            }
            Err(e) => {
                self.refused.get_or_create(&ReasonLabel { reason: refusal_reason(e) }).inc();
            }
        }
    }

    /// A send whose caller stopped waiting for its outcome.
    pub(crate) fn record_abandoned(&self) {
        self.refused.get_or_create(&ReasonLabel { reason: ABANDONED }).inc();
    }

    /// One committed entry: its messages, their bytes (each counted whole) and `client_write` duration.
    pub(crate) fn record_entry(&self, messages: usize, bytes: usize, commit: Duration) {
        self.entry_messages.observe(messages as f64);
        self.entry_bytes.observe(bytes as f64);
        self.commit_seconds.observe(commit.as_secs_f64());
    }
}

//! The leader's send path for one queue group: concurrent sends become one Raft entry.
//!
//! Each send waits in a bounded queue; one task takes the first waiting send and everything
//! queued behind it, up to `messages_max` messages or `entry_bytes_max` bytes of messages, each
//! counted whole (body, keys, properties, tag and id: [`NewMessage::encoded_bytes`]) (lingering up
//! to `wait_max` for more only while other entries are in flight), stamps the store time and
//! proposes one `GroupCommand::Send` for all of them; each send gets its own offsets once the
//! entry is applied. Up to `entries_in_flight_max` entries are in flight (a pipeline, appended in
//! proposal order); while it is full the next sends gather, so entries grow with the load (group
//! commit of sends on top of the log's group commit of fsyncs), and a lone send is not delayed.
//!
//! Bounds: at most `in_flight_messages_max` messages are queued or being proposed; a send that
//! would exceed it is refused at once with [`SendError::Busy`], never queued without bound.
//!
//! With a [`SendPathMetrics`] handle, every send's outcome and every committed entry's size
//! and commit latency are recorded there.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::errors::ClientWriteError;
use openraft::impls::ProgressResponder;
use openraft::raft::ClientWriteResult;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::QueueRaft;
use super::command::{GroupCommand, GroupReply, NewMessage, QueueGroupConfig};
use super::send_metrics::SendPathMetrics;
use crate::raft::BrokerId;

/// The bounds of one group's send path (the `[send]` section of a broker's options); every one
/// has a default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SendBatchLimits {
    /// Most messages in one entry. Default 256.
    #[serde(rename = "batch_messages_max")]
    pub messages_max: usize,
    /// Most bytes of messages in one entry, each counted whole ([`NewMessage::encoded_bytes`]).
    /// Default 8 MiB; with its framing at most one log record (see [`crate::size_limits`]).
    pub entry_bytes_max: usize,
    /// Longest a send waits for others to join its entry, while other entries of the group are
    /// in flight (a send that finds none goes out at once); 0 sends at once. Default 1 ms.
    #[serde(rename = "batch_wait_us", with = "micros")]
    pub wait_max: Duration,
    /// Most messages queued or being proposed; beyond it sends are refused `Busy`. Default 4,096.
    #[serde(rename = "in_flight_messages_per_group")]
    pub in_flight_messages_max: usize,
    /// Most entries proposed and not yet applied: the depth of the pipeline. While it is full
    /// the next entry keeps gathering sends. Default 8.
    #[serde(rename = "entries_in_flight_per_group")]
    pub entries_in_flight_max: usize,
}

/// A duration as whole microseconds, as the file writes `batch_wait_us`.
mod micros {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_micros)
    }
}

impl Default for SendBatchLimits {
    fn default() -> Self {
        Self {
            messages_max: 256,
            entry_bytes_max: 8 << 20,
            wait_max: Duration::from_millis(1),
            in_flight_messages_max: 4096,
            entries_in_flight_max: 8,
        }
    }
}

impl SendBatchLimits {
    /// What is wrong with these limits, as (key, reason): every count must be above 0.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        [
            ("batch_messages_max", self.messages_max),
            ("entry_bytes_max", self.entry_bytes_max),
            ("in_flight_messages_per_group", self.in_flight_messages_max),
            ("entries_in_flight_per_group", self.entries_in_flight_max),
        ]
        .into_iter()
        .filter(|(_, v)| *v == 0)
        .map(|(k, _)| (k, "must be above 0".to_owned()))
        .collect()
    }
}

/// Why a send was not stored, and what the client may do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Too much is in flight for this group: retry later (nothing was stored).
    #[error("busy: {in_flight_max} messages already in flight for this group")]
    Busy { in_flight_max: usize },
    /// One send holds more than one entry can: split it (nothing was stored).
    #[error("a send of {messages} messages and {bytes} bytes exceeds one entry ({messages_max} messages, {bytes_max} bytes)")]
    TooLarge { messages: usize, bytes: usize, messages_max: usize, bytes_max: usize },
    /// This replica is not the leader: send to `leader` (nothing was stored).
    #[error("not the leader; leader is {leader:?}")]
    NotLeader { leader: Option<BrokerId> },
    /// The outcome is unknown: the entry may or may not be stored (leadership changed while it
    /// was being committed). A retry may store the messages twice unless deduplicated.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// The state machine refused the send (deterministically, on every replica).
    #[error("rejected: {0}")]
    Rejected(String),
}

/// Where a send's outcome goes: its offsets, or why it was not stored.
type SendOutcome = Result<Vec<(u32, u64)>, SendError>;

struct PendingSend {
    messages: Vec<NewMessage>,
    bytes: usize,
    _in_flight: InFlight,
    reply: oneshot::Sender<SendOutcome>,
}

/// A send's share of the in-flight bound, counted in the in-flight gauge until it is answered
/// (or dropped unanswered).
struct InFlight {
    _permit: OwnedSemaphorePermit,
    messages: i64,
    metrics: Option<Arc<SendPathMetrics>>,
}

impl InFlight {
    fn new(permit: OwnedSemaphorePermit, messages: usize, metrics: Option<Arc<SendPathMetrics>>) -> Self {
        let messages = i64::try_from(messages).unwrap_or(i64::MAX);
        if let Some(m) = &metrics {
            m.in_flight_messages.inc_by(messages);
        }
        Self { _permit: permit, messages, metrics }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(m) = &self.metrics {
            m.in_flight_messages.dec_by(self.messages);
        }
    }
}

/// Counts a send as abandoned when dropped before [`Self::answered`].
struct AbandonedSend(Option<Arc<SendPathMetrics>>);

impl AbandonedSend {
    fn answered(mut self) {
        self.0 = None;
    }
}

impl Drop for AbandonedSend {
    fn drop(&mut self) {
        if let Some(m) = &self.0 {
            m.record_abandoned();
        }
    }
}

/// See the module documentation. Cheap to clone.
#[derive(Clone)]
pub struct SendBatcher {
    queue: mpsc::Sender<PendingSend>,
    in_flight: Arc<Semaphore>,
    limits: SendBatchLimits,
    metrics: Option<Arc<SendPathMetrics>>,
}

impl SendBatcher {
    /// Starts the batching task of one group's leader replica (must run in a tokio runtime),
    /// recording nothing.
    pub fn start(raft: QueueRaft, limits: SendBatchLimits) -> Self {
        Self::spawn(raft, limits, None)
    }

    /// [`Self::start`], recording sends and entries in `metrics` (shared by every group).
    pub fn start_with_metrics(raft: QueueRaft, limits: SendBatchLimits, metrics: Arc<SendPathMetrics>) -> Self {
        Self::spawn(raft, limits, Some(metrics))
    }

    fn spawn(raft: QueueRaft, limits: SendBatchLimits, metrics: Option<Arc<SendPathMetrics>>) -> Self {
        let (tx, rx) = mpsc::channel(limits.in_flight_messages_max.max(1));
        tokio::spawn(run(raft, rx, limits, metrics.clone()));
        Self { queue: tx, in_flight: Arc::new(Semaphore::new(limits.in_flight_messages_max)), limits, metrics }
    }

    /// Stores `messages` (validated at the edge) in one entry with others' sends; returns each
    /// message's `(queue, offset)`, in order, once the entry is committed and applied.
    pub async fn send(&self, messages: Vec<NewMessage>) -> Result<Vec<(u32, u64)>, SendError> {
        let bytes: usize = messages.iter().map(NewMessage::encoded_bytes).sum();
        // A caller that stops waiting (its deadline passed) drops this future mid-way: the
        // send is then counted as abandoned (it may still be stored).
        let abandoned = AbandonedSend(self.metrics.clone());
        let outcome = self.store(messages, bytes).await;
        abandoned.answered();
        if let Some(m) = &self.metrics {
            m.record_send(&outcome, bytes);
        }
        outcome
    }

    async fn store(&self, messages: Vec<NewMessage>, bytes: usize) -> Result<Vec<(u32, u64)>, SendError> {
        let l = &self.limits;
        if messages.len() > l.messages_max || bytes > l.entry_bytes_max {
            return Err(SendError::TooLarge {
                messages: messages.len(),
                bytes,
                messages_max: l.messages_max,
                bytes_max: l.entry_bytes_max,
            });
        }
        let permits = u32::try_from(messages.len().max(1)).unwrap_or(u32::MAX);
        let permit = self
            .in_flight
            .clone()
            .try_acquire_many_owned(permits)
            .map_err(|_| SendError::Busy { in_flight_max: l.in_flight_messages_max })?;
        let (reply, answer) = oneshot::channel();
        let in_flight = InFlight::new(permit, messages.len(), self.metrics.clone());
        self.queue
            .try_send(PendingSend { messages, bytes, _in_flight: in_flight, reply })
            .map_err(|_| SendError::Busy { in_flight_max: l.in_flight_messages_max })?;
        answer.await.map_err(|_| SendError::Unknown("the send path stopped".into()))?
    }
}

async fn run(raft: QueueRaft, mut rx: mpsc::Receiver<PendingSend>, limits: SendBatchLimits, metrics: Option<Arc<SendPathMetrics>>) {
    let mut carried: Option<PendingSend> = None;
    let entries = Arc::new(Semaphore::new(limits.entries_in_flight_max.max(1)));
    loop {
        // Waiting for a pipeline slot before taking the first send lets the queue fill
        // meanwhile, so a full pipeline makes larger entries.
        let Ok(slot) = entries.clone().acquire_owned().await else { return };
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        // Linger for more sends only while other entries are in flight: then the wait overlaps
        // their commit. With nothing in flight a lone send goes out at once, and its latency is
        // not taxed by the batching window.
        let others_in_flight = entries.available_permits() + 1 < limits.entries_in_flight_max.max(1);
        let deadline = tokio::time::Instant::now() + limits.wait_max;
        let (mut count, mut bytes) = (first.messages.len(), first.bytes);
        let mut batch = vec![first];
        while count < limits.messages_max {
            // What is already queued joins at once; past the deadline nothing more is awaited.
            let next = match rx.try_recv() {
                Ok(next) => next,
                // Not even a zero-length timeout: tokio's timer rounds a deadline up to its next
                // 1 ms tick, which cost a lone send about 1 ms (measured, docs/benchmarks.md).
                Err(_) if !others_in_flight => break,
                Err(_) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(next)) => next,
                    _ => break,
                },
            };
            if count + next.messages.len() > limits.messages_max || bytes + next.bytes > limits.entry_bytes_max {
                carried = Some(next);
                break;
            }
            count += next.messages.len();
            bytes += next.bytes;
            batch.push(next);
        }
        propose(&raft, batch, slot, metrics.clone()).await;
    }
}

/// Submits one entry for `batch` and returns once the Raft core has it (so entries are
/// appended in the order this task proposes them); a task then waits for the entry to be
/// applied and answers every send in it.
async fn propose(raft: &QueueRaft, batch: Vec<PendingSend>, slot: OwnedSemaphorePermit, metrics: Option<Arc<SendPathMetrics>>) {
    let counts: Vec<usize> = batch.iter().map(|p| p.messages.len()).collect();
    let entry_bytes: usize = batch.iter().map(|p| p.bytes).sum();
    let mut replies = Vec::with_capacity(batch.len());
    let mut messages = Vec::with_capacity(counts.iter().sum());
    for p in batch {
        messages.extend(p.messages);
        replies.push((p.reply, p._in_flight));
    }
    let entry_messages = messages.len();
    // The leader's clock, stamped once into the command so every replica applies the same time.
    let store_time_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let started = Instant::now();
    let (responder, applied) = ProgressResponder::<QueueGroupConfig, ClientWriteResult<QueueGroupConfig>>::complete_only();
    tracing::trace!(target: "raftmq::hop", hop = "propose", messages = entry_messages);
    let submitted = raft.client_write_ff(GroupCommand::Send { store_time_ms, messages }, Some(responder)).await;
    tokio::spawn(async move {
        let outcome = match submitted {
            // The core stopped; whether it took the entry first cannot be told.
            Err(fatal) => Err(SendError::Unknown(fatal.to_string())),
            Ok(()) => match applied.await {
                Err(_) => Err(SendError::Unknown("the group stopped before answering".into())),
                Ok(written) => {
                    if let Ok(resp) = &written {
                        tracing::trace!(target: "raftmq::hop", hop = "answered", index = resp.log_id().index);
                    }
                    if let (Ok(_), Some(m)) = (&written, &metrics) {
                        m.record_entry(entry_messages, entry_bytes, started.elapsed());
                    }
                    match written {
                        Ok(resp) => match resp.response() {
                            GroupReply::Sent { offsets } if offsets.len() == counts.iter().sum::<usize>() => Ok(offsets.clone()),
                            GroupReply::Rejected { reason } | GroupReply::LimitReached { reason } => {
                                Err(SendError::Rejected(reason.clone()))
                            }
                            other => Err(SendError::Unknown(format!("unexpected reply {other:?}"))),
                        },
                        Err(e) => Err(client_write_error(e)),
                    }
                }
            },
        };
        answer(outcome, replies, counts);
        drop(slot);
    });
}

/// Hands each send of an entry its offsets, or the entry's error.
fn answer(outcome: SendOutcome, replies: Vec<(oneshot::Sender<SendOutcome>, InFlight)>, counts: Vec<usize>) {
    let mut offsets = outcome.as_ref().ok().map(|o| o.iter().copied());
    for ((reply, _in_flight), n) in replies.into_iter().zip(counts) {
        let answer = match (&outcome, offsets.as_mut()) {
            (Ok(_), Some(all)) => Ok(all.by_ref().take(n).collect()),
            (Err(e), _) => Err(e.clone()),
            (Ok(_), None) => Err(SendError::Unknown("offsets missing".into())),
        };
        let _ = reply.send(answer);
    }
}

fn client_write_error(e: ClientWriteError<QueueGroupConfig>) -> SendError {
    match e {
        ClientWriteError::ForwardToLeader(f) => SendError::NotLeader { leader: f.leader_id },
        other => SendError::Unknown(other.to_string()),
    }
}

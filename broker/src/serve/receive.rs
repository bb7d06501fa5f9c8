//! Consumer state at a queue's leader: receiving messages for a consumer group (each stays
//! invisible to the group for a while), acknowledging them, and changing how long one stays
//! invisible. Each is a Raft command of the queue group ([`GroupCommand::Receive`],
//! [`GroupCommand::Ack`], [`GroupCommand::ChangeInvisibility`]), so what was delivered, until
//! when and how often survives any failover exactly; this file only proposes them and reads
//! what they delivered.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use controller::GroupRecord;
use openraft::type_config::async_runtime::watch::WatchReceiver;
use proto::raftmq::v1::Status;
use tokio::time::Instant;

use crate::filter::Filter;
use crate::host::{QueueRaft, StoredMessage};
use crate::queue::{Delivery, GroupCommand, GroupReply, IN_FLIGHT_PER_CONSUMER_GROUP_MAX, ReceiveOutlook, StoreView, receive_outlook};
use crate::server::Core;
use crate::service::status;

/// What one receive asks for.
#[derive(Debug)]
pub(crate) struct ReceiveAsk {
    pub consumer_group: String,
    /// At most this many messages (at least 1).
    pub max_messages: u32,
    /// How long each delivered message stays invisible to the group.
    pub invisible: Duration,
    /// Messages that do not pass are acknowledged for the group without being delivered: a
    /// consumer group's subscription decides what it consumes (RocketMQ's semantics).
    pub filter: Filter,
    /// Deliveries of one message at most (0: no bound); then it is exhausted.
    pub max_attempts: u32,
    /// A FIFO topic's queue: delivered in order ([`GroupCommand::Receive`]).
    pub fifo: bool,
}

/// What a receive found: messages delivered now, or messages delivered their maximum attempts
/// that are due for the consumer group's dead-letter queue (still in flight: the caller hands
/// them over and acknowledges them).
#[derive(Debug, Default)]
pub(crate) struct Found {
    /// Which of the targets the messages are of.
    pub target: usize,
    pub received: Vec<Received>,
    pub exhausted: Vec<Received>,
}

/// A delivered message and the delivery that names it.
#[derive(Debug)]
pub(crate) struct Received {
    pub message: StoredMessage,
    pub delivery: Delivery,
}

/// This broker's clock in ms since the epoch: what a leader stamps into the commands it proposes.
fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Core {
    /// Messages of the queues of `targets` (each a group and its Raft, led here) for
    /// `ask.consumer_group`: those deliverable now, from the first target that has any, else
    /// the first that become so (a new message applied, one in flight becoming visible again)
    /// before `until`; none when none did. Exhausted messages (see [`Found`]) are found first,
    /// without proposing anything. A `Receive` is proposed only when the leader's applied
    /// state says it delivers something, so a long poll on idle queues writes nothing. Answers
    /// by `due`: past it a proposed receive may still commit (OUTCOME_UNKNOWN; its messages are
    /// then delivered again once visible).
    pub(crate) async fn receive_here(
        &self,
        targets: &[(GroupRecord, QueueRaft)],
        ask: &ReceiveAsk,
        until: Instant,
        due: Option<Instant>,
    ) -> Result<Found, Status> {
        let applied = |m: &openraft::RaftMetrics<_>| m.last_applied.as_ref().map_or(0, |l| l.index());
        let mut watches: Vec<_> = targets.iter().map(|(_, raft)| raft.metrics()).collect();
        loop {
            let now = now_ms();
            let mut visible_at: Option<u64> = None;
            let seen: Vec<u64> = watches.iter().map(|w| applied(&w.borrow_watched())).collect();
            for (target, (group, raft)) in targets.iter().enumerate() {
                let (group_id, queue, consumer_group) = (group.id, group.queue, ask.consumer_group.clone());
                let bounds = (IN_FLIGHT_PER_CONSUMER_GROUP_MAX, ask.max_attempts, ask.fifo);
                let outlook = self
                    .read_store(move |store| receive_outlook(&StoreView::new(store, group_id), &consumer_group, queue, now, bounds))
                    .await?;
                match outlook {
                    ReceiveOutlook::Exhausted(deliveries) => {
                        let exhausted = self.read_deliveries(group, &deliveries).await?;
                        return Ok(Found { target, received: vec![], exhausted });
                    }
                    ReceiveOutlook::Deliverable => {
                        let received = self.receive_once(raft, group, ask, now, due).await?;
                        if !received.is_empty() {
                            return Ok(Found { target, received, exhausted: vec![] });
                        }
                    }
                    ReceiveOutlook::Refused(reason) => {
                        return Err(status::resource_exhausted(format!("consumer group {:?}: {reason}", ask.consumer_group)));
                    }
                    ReceiveOutlook::NothingUntil(at) => {
                        visible_at = match (visible_at, at) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        }
                    }
                }
            }
            if Instant::now() >= until || self.stopping() {
                return Ok(Found::default());
            }
            let wake = visible_at.map_or(until, |t| (Instant::now() + Duration::from_millis(t.saturating_sub(now))).min(until));
            // Raft metrics change on every heartbeat: judge again only when an entry was
            // applied to one of the groups (a new message, an ack) or a message became visible.
            loop {
                let changed = {
                    let changes = watches.iter_mut().map(|w| Box::pin(w.changed()));
                    tokio::time::timeout_at(wake, futures::future::select_all(changes)).await.map(|(r, i, _)| (r, i))
                };
                match changed {
                    Ok((Ok(()), i)) if applied(&watches[i].borrow_watched()) == seen[i] => continue,
                    Ok((Ok(()), _)) | Err(_) => break,
                    Ok((Err(_), _)) => return Err(status::unavailable("a group's Raft stopped")),
                }
            }
        }
    }

    /// Proposes one `Receive` and reads what it delivered; what `ask.filter` does not pass is
    /// acknowledged at once and left out.
    async fn receive_once(
        &self,
        raft: &QueueRaft,
        group: &GroupRecord,
        ask: &ReceiveAsk,
        now_ms: u64,
        due: Option<Instant>,
    ) -> Result<Vec<Received>, Status> {
        let cmd = GroupCommand::Receive {
            consumer_group: ask.consumer_group.clone(),
            queue: group.queue,
            now_ms,
            invisible_ms: millis(ask.invisible),
            max_messages: ask.max_messages.max(1),
            in_flight_max: IN_FLIGHT_PER_CONSUMER_GROUP_MAX,
            max_attempts: ask.max_attempts,
            fifo: ask.fifo,
        };
        let may_be_done = "messages may have been received: they are delivered again once visible";
        let deliveries = match self.write_command(raft, cmd, due, may_be_done).await? {
            GroupReply::Received { deliveries } => deliveries,
            GroupReply::LimitReached { reason } => {
                return Err(status::resource_exhausted(format!("consumer group {:?}: {reason}", ask.consumer_group)));
            }
            GroupReply::Rejected { reason } => return Err(status::invalid("consumer_group", reason)),
            other => return Err(status::internal(format!("unexpected reply to a receive: {other:?}"))),
        };
        let mut received = Vec::with_capacity(deliveries.len());
        let mut filtered_out = Vec::new();
        for r in self.read_deliveries(group, &deliveries).await? {
            if ask.filter.matches(r.message.message.tag.as_deref(), &r.message.message.properties) {
                received.push(r);
            } else {
                filtered_out.push((r.delivery.offset, r.delivery.version));
            }
        }
        if !filtered_out.is_empty() {
            // Best effort: one left in flight is filtered out again when it becomes visible.
            if let Err(s) = self.ack_here(raft, group, &ask.consumer_group, filtered_out, due).await {
                tracing::debug!(group = group.id, status = ?s, "acknowledging messages the filter left out");
            }
        }
        Ok(received)
    }

    /// The messages `deliveries` name, read in runs of consecutive offsets. A message trimmed
    /// since (retention) is left out: the next receive settles it.
    pub(crate) async fn read_deliveries(&self, group: &GroupRecord, deliveries: &[Delivery]) -> Result<Vec<Received>, Status> {
        let mut found = Vec::with_capacity(deliveries.len());
        for run in consecutive_runs(deliveries) {
            let read = self
                .host
                .read_queue(group.id, group.queue, run[0].offset, run.len(), usize::MAX)
                .await
                .map_err(|e| status::internal(e.to_string()))?;
            let mut read = read.into_iter().peekable();
            for delivery in run {
                while read.next_if(|m| m.offset < delivery.offset).is_some() {}
                if let Some(message) = read.next_if(|m| m.offset == delivery.offset) {
                    found.push(Received { message, delivery: *delivery });
                }
            }
        }
        Ok(found)
    }

    /// The current delivery of `offset` of `group`'s queue to `consumer_group`, if it is in
    /// flight, as this replica applied it.
    pub(crate) async fn delivery_here(&self, group: &GroupRecord, consumer_group: &str, offset: u64) -> Result<Option<Delivery>, Status> {
        let (group_id, queue, consumer_group) = (group.id, group.queue, consumer_group.to_owned());
        let record = self.read_store(move |store| store.in_flight_record(group_id, &consumer_group, queue, offset)).await?;
        Ok(record.map(|r| Delivery { offset, attempt: r.attempt, version: r.version, invisible_until_ms: r.invisible_until_ms }))
    }

    /// Acknowledges `deliveries` (`(offset, version)` of `group`'s queue) for `consumer_group`
    /// through `raft` (led here), by `due`: for each, whether it was settled (false: its
    /// version is stale, as after a redelivery, or it was settled before).
    pub(crate) async fn ack_here(
        &self,
        raft: &QueueRaft,
        group: &GroupRecord,
        consumer_group: &str,
        deliveries: Vec<(u64, u32)>,
        due: Option<Instant>,
    ) -> Result<Vec<bool>, Status> {
        let cmd = GroupCommand::Ack { consumer_group: consumer_group.to_owned(), queue: group.queue, deliveries };
        match self.write_command(raft, cmd, due, "the messages may have been acknowledged").await? {
            GroupReply::Acked { settled } => Ok(settled),
            GroupReply::Rejected { reason } => Err(status::invalid("entries", reason)),
            other => Err(status::internal(format!("unexpected reply to an ack: {other:?}"))),
        }
    }

    /// Makes the delivery `(offset, version)` of `group`'s queue invisible to `consumer_group`
    /// for `invisible` from now, through `raft` (led here), by `due`: the new delivery (a new
    /// version, so a new receipt handle), or `None` when the version was stale.
    pub(crate) async fn change_invisibility_here(
        &self,
        raft: &QueueRaft,
        group: &GroupRecord,
        consumer_group: &str,
        (offset, version): (u64, u32),
        invisible: Duration,
        due: Option<Instant>,
    ) -> Result<Option<(u32, u64)>, Status> {
        let now_ms = now_ms();
        let invisible_ms = millis(invisible);
        let cmd = GroupCommand::ChangeInvisibility {
            consumer_group: consumer_group.to_owned(),
            queue: group.queue,
            offset,
            version,
            now_ms,
            invisible_ms,
        };
        match self.write_command(raft, cmd, due, "the invisibility may have changed").await? {
            GroupReply::InvisibilityChanged { version } => Ok(version.map(|v| (v, now_ms.saturating_add(invisible_ms)))),
            GroupReply::Rejected { reason } => Err(status::invalid("receipt_handle", reason)),
            other => Err(status::internal(format!("unexpected reply to a change of invisibility: {other:?}"))),
        }
    }
}

/// `deliveries` cut into runs of consecutive offsets, in their order: each run is one read.
fn consecutive_runs(deliveries: &[Delivery]) -> Vec<&[Delivery]> {
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=deliveries.len() {
        if i == deliveries.len() || deliveries[i].offset != deliveries[i - 1].offset + 1 {
            runs.push(&deliveries[start..i]);
            start = i;
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64) -> Delivery {
        Delivery { offset, attempt: 1, version: 1, invisible_until_ms: 0 }
    }

    #[test]
    fn deliveries_are_read_in_runs_of_consecutive_offsets() {
        let d = [at(7), at(2), at(3), at(4), at(9)];
        let runs: Vec<Vec<u64>> = consecutive_runs(&d).iter().map(|r| r.iter().map(|d| d.offset).collect()).collect();
        assert_eq!(runs, [vec![7], vec![2, 3, 4], vec![9]]);
        assert!(consecutive_runs(&[]).is_empty());
    }
}

//! What a queue group serves on this broker once routing has brought a request here ([`crate::routing`]):
//! storing messages through the group's send batcher, reading them (long-polling), committing
//! and reading consumer offsets. Every client protocol's adapter calls these and maps what they
//! return to its own status; none of them knows which protocol asked.

use std::time::Duration;

use controller::GroupRecord;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::raft::ReadPolicy;
use openraft::type_config::async_runtime::watch::WatchReceiver;
use proto::raftmq::v1::Status;
use tokio::time::Instant;

use crate::edge::left;
use crate::host::{QueueRaft, StoredMessage};
use crate::queue::{CONSUMER_GROUPS_PER_QUEUE_MAX, GroupCommand, GroupReply, NewMessage, SendError};
use crate::server::Core;
use crate::service::status;
use crate::store::{QueueStore, StoreError};

mod receive;

pub(crate) use receive::{Found, ReceiveAsk, Received};

/// What one read of a queue found: its messages from the offset asked (or from its start, when
/// that is above), where the next read begins, and the queue's offsets when it was read.
#[derive(Debug)]
pub(crate) struct QueueRead {
    pub messages: Vec<StoredMessage>,
    pub next_offset: u64,
    pub start_offset: u64,
    pub end_offset: u64,
}

impl Core {
    /// Stores `messages` in `group` (led here) through its send batcher, answering by `due`:
    /// their (queue, offset), in order. Past `due` the entry may still commit, so that is
    /// OUTCOME_UNKNOWN, never "nothing done".
    pub(crate) async fn send_here(
        &self,
        group: &GroupRecord,
        messages: Vec<NewMessage>,
        due: Option<Instant>,
    ) -> Result<Vec<(u32, u64)>, Status> {
        let Some(batcher) = self.queue_group(group.id).map(|g| g.batcher().clone()) else {
            return Err(status::unavailable(format!("group {} is not open on broker {}", group.id, self.id)));
        };
        let sent = match left(due) {
            Some(w) => tokio::time::timeout(w, batcher.send(messages)).await,
            None => Ok(batcher.send(messages).await),
        };
        let Ok(sent) = sent else {
            return Err(status::outcome_unknown("not committed within the request's deadline; the messages may still be stored"));
        };
        sent.map_err(|e| self.send_error(e))
    }

    fn send_error(&self, e: SendError) -> Status {
        match e {
            SendError::Busy { .. } => status::busy(e.to_string()),
            SendError::TooLarge { .. } => status::invalid("messages", e.to_string()),
            SendError::NotLeader { leader } => status::not_leader(leader.and_then(|l| self.endpoint_of(l)), e.to_string()),
            SendError::Unknown(_) => status::outcome_unknown(e.to_string()),
            SendError::Rejected(_) => status::internal(e.to_string()),
        }
    }

    /// Up to `max_messages` and `max_bytes` of `group`'s queue from `offset`, as this replica
    /// applied them (every one committed). With none there yet, waits up to `wait` (at most
    /// `limits.fetch_wait_ms_max`) for an apply to bring some, on the group's Raft metrics.
    pub(crate) async fn read_here(
        &self,
        group: &GroupRecord,
        raft: &QueueRaft,
        offset: u64,
        max_messages: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<QueueRead, Status> {
        let deadline = Instant::now() + wait.min(self.options.limits.fetch_wait_max());
        let mut metrics = raft.metrics();
        loop {
            let store = self.host.store();
            let (start, end) = store
                .start_offset(group.id, group.queue)
                .and_then(|s| Ok((s, store.next_offset(group.id, group.queue)?)))
                .map_err(|e| status::internal(e.to_string()))?;
            // Below the retained messages, the read begins at the first one.
            let from = offset.max(start);
            if from < end {
                let messages = self
                    .host
                    .read_queue(group.id, group.queue, from, max_messages, max_bytes)
                    .await
                    .map_err(|e| status::internal(e.to_string()))?;
                let next_offset = messages.last().map_or(from, |m| m.offset + 1);
                return Ok(QueueRead { messages, next_offset, start_offset: start, end_offset: end });
            }
            let changed = matches!(tokio::time::timeout_at(deadline, metrics.changed()).await, Ok(Ok(())));
            if !changed || self.stopping() {
                return Ok(QueueRead { messages: vec![], next_offset: from, start_offset: start, end_offset: end });
            }
        }
    }

    /// Commits `consumer_group`'s offset of `group`'s queue through `raft` (led here), bounded
    /// by `limits.consumer_groups_per_queue_max`, answering by `due`. Every outcome is counted
    /// in the offset-commit metrics, but one past `due`, which is
    /// answered before the commit's outcome is known.
    pub(crate) async fn commit_offset_here(
        &self,
        raft: &QueueRaft,
        group: &GroupRecord,
        consumer_group: &str,
        offset: u64,
        due: Option<Instant>,
    ) -> Result<(), Status> {
        let consumer_groups_max = self.options.limits.consumer_groups_per_queue_max;
        let cmd = GroupCommand::CommitOffsetBounded {
            consumer_group: consumer_group.to_owned(),
            queue: group.queue,
            offset,
            consumer_groups_max,
        };
        let result = match self.write_command(raft, cmd, due, "the offset may still be committed").await {
            Ok(GroupReply::OffsetCommitted) => Ok(()),
            Ok(GroupReply::Rejected { reason }) => Err(status::invalid("offset", reason)),
            Ok(GroupReply::LimitReached { reason }) => Err(status::resource_exhausted(format!(
                "{reason} (limits.consumer_groups_per_queue_max is {consumer_groups_max} on broker {}, at most \
                 {CONSUMER_GROUPS_PER_QUEUE_MAX}; or commit under a consumer group name the queue has already)",
                self.id
            ))),
            Ok(other) => Err(status::internal(format!("unexpected reply {other:?}"))),
            Err(s) => Err(s),
        };
        let answered = result.as_ref().err().cloned().unwrap_or_else(status::ok);
        self.commit_metrics.record(Some(&answered));
        result
    }

    /// Proposes `cmd` through `raft` (led here) and waits for its reply, by `due`. Without a
    /// reply: NOT_LEADER when this broker no longer leads (nothing done), else OUTCOME_UNKNOWN,
    /// whose message ends with `may_be_done` (the entry may still commit).
    pub(crate) async fn write_command(
        &self,
        raft: &QueueRaft,
        cmd: GroupCommand,
        due: Option<Instant>,
        may_be_done: &str,
    ) -> Result<GroupReply, Status> {
        let written = match left(due) {
            Some(w) => tokio::time::timeout(w, raft.client_write(cmd)).await,
            None => Ok(raft.client_write(cmd).await),
        };
        match written {
            Ok(Ok(resp)) => Ok(resp.response().clone()),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(status::not_leader(f.leader_id.and_then(|l| self.endpoint_of(l)), f.to_string()))
            }
            Ok(Err(e)) => Err(status::outcome_unknown(format!("outcome unknown: {e}; {may_be_done}"))),
            Err(_) => Err(status::outcome_unknown(format!("not committed within the request's deadline; {may_be_done}"))),
        }
    }

    /// The first offset `group`'s queue still holds and the offset its next message will get,
    /// read on `raft` (led here) after confirming leadership with a read index (invariant 6).
    pub(crate) async fn queue_offsets_here(
        &self,
        raft: &QueueRaft,
        group: &GroupRecord,
        due: Option<Instant>,
    ) -> Result<(u64, u64), Status> {
        self.confirm_leadership(raft, due).await?;
        let (group_id, queue) = (group.id, group.queue);
        self.read_store(move |store| Ok((store.start_offset(group_id, queue)?, store.next_offset(group_id, queue)?))).await
    }

    /// The offset of the first message of `group`'s queue stored at or after `at_ms` (ms since
    /// the epoch), or the queue's end when none is: a binary search over the index's store
    /// times, read on `raft` (led here) after a read index. Store times come from the leaders'
    /// clocks, so across a leader change they are ordered only as well as those clocks agree.
    pub(crate) async fn queue_offset_at_time_here(
        &self,
        raft: &QueueRaft,
        group: &GroupRecord,
        at_ms: u64,
        due: Option<Instant>,
    ) -> Result<u64, Status> {
        self.confirm_leadership(raft, due).await?;
        let (group_id, queue) = (group.id, group.queue);
        self.read_store(move |store| {
            let (mut low, mut high) = (store.start_offset(group_id, queue)?, store.next_offset(group_id, queue)?);
            while low < high {
                let mid = low + (high - low) / 2;
                // A message trimmed meanwhile reads as stored before `at_ms`: the search moves on.
                let stored_before = store.index_entry(group_id, queue, mid)?.is_none_or(|e| e.store_time_ms < at_ms);
                if stored_before {
                    low = mid + 1;
                } else {
                    high = mid;
                }
            }
            Ok(low)
        })
        .await
    }

    /// Confirms `raft` still leads and has applied everything committed before this call, by
    /// `due`: a read after it is never stale.
    async fn confirm_leadership(&self, raft: &QueueRaft, due: Option<Instant>) -> Result<(), Status> {
        let confirmed = match left(due) {
            Some(w) => tokio::time::timeout(w, raft.ensure_linearizable(ReadPolicy::ReadIndex)).await,
            None => Ok(raft.ensure_linearizable(ReadPolicy::ReadIndex).await),
        };
        match confirmed {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(status::not_leader(None, format!("linearizable read failed: {e}"))),
            // A read changes nothing: not answering in time did nothing either.
            Err(_) => Err(status::unavailable("leadership not confirmed within the request's deadline")),
        }
    }

    /// `consumer_group`'s committed offset of `group`'s queue, read on `raft` (led here) after
    /// confirming leadership with a read index, so the answer is never stale (invariant 6).
    pub(crate) async fn consumer_offset_here(
        &self,
        raft: &QueueRaft,
        group: &GroupRecord,
        consumer_group: &str,
        due: Option<Instant>,
    ) -> Result<Option<u64>, Status> {
        self.confirm_leadership(raft, due).await?;
        let (group_id, queue, consumer_group) = (group.id, group.queue, consumer_group.to_owned());
        self.read_store(move |store| store.consumer_offset(group_id, &consumer_group, queue)).await
    }

    /// `read` of the store on a blocking thread, its failure INTERNAL: a RocksDB read can wait
    /// for the disk, so never on an async worker.
    pub(crate) async fn read_store<T: Send + 'static>(
        &self,
        read: impl FnOnce(&QueueStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.host.store().clone();
        match tokio::task::spawn_blocking(move || read(&store)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(status::internal(e.to_string())),
            Err(e) => Err(status::internal(format!("store read task failed: {e}"))),
        }
    }
}

//! Reads, step 7 of a message's path: a queue's messages as this replica applied them. The
//! consume-queue index (the store) gives each message's Raft entry and its place in it; the
//! body comes from that entry in the log, where bodies are stored once.

use openraft::EntryPayload;
use openraft::alias::EntryOf;
use raft_log::GroupLog;

use crate::host::{GroupHost, HostError};
use crate::queue::{GroupCommand, NewMessage, QueueGroupConfig};
use crate::raft::GroupId;
use crate::store::QueueStore;

/// Bytes of messages one page of [`GroupHost::queue_digest`] holds (beyond its first message).
const DIGEST_PAGE_BYTES_MAX: usize = 16 << 20;

/// Most messages one [`GroupHost::read_queue`] returns.
pub const READ_MESSAGES_MAX: usize = 1024;

/// A stored message as a consumer reads it: its place in the queue and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub offset: u64,
    pub log_index: u64,
    pub store_time_ms: u64,
    pub message: NewMessage,
}

impl GroupHost {
    /// Reads up to `max` (at most [`READ_MESSAGES_MAX`]) messages of `queue` in `group` from
    /// `from_offset` on, as applied here: the consume index gives each message's Raft entry and
    /// ordinal, and the body comes from that entry in the log (bodies are stored once, there).
    ///
    /// Messages below the queue's start offset were trimmed (retention): a read from below it
    /// starts at the start offset, so the first message returned has an offset above
    /// `from_offset` and the caller learns where the queue now starts (when nothing is returned,
    /// [`QueueStore::start_offset`] says it). A trim and log purge that overtake the read are
    /// noticed (the entry is gone and the start offset moved past the message) and the read
    /// starts again from the new start offset, at most a few times. An index that does not
    /// match its entry is an error, never a wrong message.
    ///
    /// At most `max` messages (and [`READ_MESSAGES_MAX`]) and `max_bytes` bytes of messages,
    /// each counted whole ([`NewMessage::encoded_bytes`]), are returned, except that the first
    /// message is returned whatever its size; a message whose body alone (known from the index)
    /// would pass `max_bytes` is not read at all, so one call holds at most `max_bytes` plus one
    /// entry in memory.
    pub async fn read_queue(
        &self,
        group: GroupId,
        queue: u32,
        from_offset: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredMessage>, HostError> {
        // RocksDB reads and `pread`s of cold entries block: never on an async worker.
        let (store, engine) = (self.store().clone(), self.engine().clone());
        tokio::task::spawn_blocking(move || read_queue_blocking(&store, &engine.group(group), queue, from_offset, max, max_bytes))
            .await
            .map_err(|e| HostError::Task(e.to_string()))?
    }

    /// SHA-256 over the queue's start offset and every message of `queue` in `group` from it,
    /// stored by log entries up to `up_to_log_index`, in offset order: each message's offset and
    /// its bincode encoding (id, tag, keys, properties, body). Offsets are assigned in log order,
    /// so those messages are a contiguous run of the queue, and two replicas that applied at
    /// least that far and the same trims (so have the same start offset) must give the same
    /// digest (invariant 2). Returns the number of messages and the digest. A trim applied while
    /// digesting is an error (the run would have a hole): ask again.
    pub async fn queue_digest(&self, group: GroupId, queue: u32, up_to_log_index: u64) -> Result<(u64, [u8; 32]), HostError> {
        use sha2::Digest as _;
        let start = self.store().start_offset(group, queue)?;
        let mut hasher = sha2::Sha256::new();
        hasher.update(start.to_be_bytes());
        let mut next = start;
        'pages: loop {
            let page = self.read_queue(group, queue, next, READ_MESSAGES_MAX, DIGEST_PAGE_BYTES_MAX).await?;
            if page.is_empty() {
                break;
            }
            for m in page {
                if m.offset != next {
                    return Err(HostError::Group {
                        group,
                        reason: format!("queue {queue} trimmed while digesting: offset {} after {next}, started at {start}", m.offset),
                    });
                }
                if m.log_index > up_to_log_index {
                    break 'pages;
                }
                let bytes = bincode::serialize(&m.message).map_err(|e| HostError::LogRead {
                    group,
                    log_index: m.log_index,
                    reason: e.to_string(),
                })?;
                hasher.update(m.offset.to_be_bytes());
                hasher.update((bytes.len() as u64).to_be_bytes());
                hasher.update(&bytes);
                next += 1;
            }
        }
        Ok((next - start, hasher.finalize().into()))
    }
}

/// [`GroupHost::read_queue`], on a blocking thread.
fn read_queue_blocking(
    store: &QueueStore,
    log: &GroupLog,
    queue: u32,
    from_offset: u64,
    max: usize,
    max_bytes: usize,
) -> Result<Vec<StoredMessage>, HostError> {
    let group = log.id();
    // Each retry follows a trim applied during the read; trims are rare (minutes apart),
    // so a read overtaken this often means something is wrong.
    const ATTEMPTS: usize = 4;
    'attempts: for attempt in 1..=ATTEMPTS {
        let from = from_offset.max(store.start_offset(group, queue)?);
        let index = store.index_range(group, queue, from, max.min(READ_MESSAGES_MAX))?;
        let mut out = Vec::with_capacity(index.len());
        // Consecutive messages usually share an entry: read and decode each entry once.
        let mut current: Option<(u64, Vec<NewMessage>)> = None;
        let mut bytes = 0usize;
        for (offset, at) in index {
            if !out.is_empty() && bytes.saturating_add(at.size as usize) > max_bytes {
                break;
            }
            if current.as_ref().is_none_or(|(i, _)| *i != at.log_index) {
                let bad = |reason: String| HostError::LogRead { group, log_index: at.log_index, reason };
                let mut stored = log.read(at.log_index, at.log_index + 1).map_err(|e| bad(e.to_string()))?;
                let Some(stored) = stored.pop() else {
                    if attempt < ATTEMPTS && store.start_offset(group, queue)? > offset {
                        continue 'attempts;
                    }
                    return Err(bad(format!("not in the log, and offset {offset} of queue {queue} is not trimmed")));
                };
                let entry: EntryOf<QueueGroupConfig> = bincode::deserialize(&stored.payload).map_err(|e| bad(e.to_string()))?;
                let messages = match entry.payload {
                    EntryPayload::Normal(GroupCommand::Send { messages, .. } | GroupCommand::SendV1 { messages, .. }) => messages,
                    other => return Err(bad(format!("indexed message in a non-send entry: {other}"))),
                };
                current = Some((at.log_index, messages));
            }
            let messages = current.as_ref().map(|(_, m)| m.as_slice()).unwrap_or_default();
            let message =
                messages.get(at.position as usize).filter(|m| m.queue == queue && m.body.len() == at.size as usize).ok_or_else(|| {
                    HostError::LogRead {
                        group,
                        log_index: at.log_index,
                        reason: format!(
                            "index of queue {queue} offset {offset} names message {} of size {}, not in the entry",
                            at.position, at.size
                        ),
                    }
                })?;
            bytes = bytes.saturating_add(message.encoded_bytes());
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(StoredMessage { offset, log_index: at.log_index, store_time_ms: at.store_time_ms, message: message.clone() });
        }
        return Ok(out);
    }
    Err(HostError::Group { group, reason: format!("queue {queue}: reads overtaken by trims {ATTEMPTS} times") })
}

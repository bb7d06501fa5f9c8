//! openraft's log storage over one [`GroupLog`].
//!
//! Entries, votes and log ids are encoded with bincode; the record header keeps the entry's
//! index and term so the log can be verified and dumped without knowing these types.

use std::fmt::Debug;
use std::io;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};

use openraft::alias::{LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::vote::RaftLeaderId;
use openraft::{OptionalSend, RaftLogReader, RaftTypeConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{GroupLog, LogError, StoredEntry};

/// Bytes of entries one replication payload (`limited_get_log_entries`) carries at most, beyond
/// its first entry. openraft bounds a payload only by count (`max_payload_entries`, 300 by
/// default); 300 entries of 8 MiB would be one 2.4 GiB message held in memory on both ends.
pub const PAYLOAD_BYTES_MAX: usize = 4 << 20;
/// Entries read from the log at a time while filling a bounded payload.
const PAYLOAD_READ_CHUNK: u64 = 16;

/// The openraft types a [`RaftLogStore`] keeps: entries, votes and log ids it encodes with serde,
/// and a term it records beside each entry as a number. Every type config with them is one.
pub trait StoredTypes:
    RaftTypeConfig<
        Entry: Serialize + DeserializeOwned,
        Vote: Serialize + DeserializeOwned,
        LeaderId: RaftLeaderId<Committed: RaftLeaderId<Term: Into<u64>> + Serialize + DeserializeOwned>,
    >
{
}

impl<C> StoredTypes for C where
    C: RaftTypeConfig<
            Entry: Serialize + DeserializeOwned,
            Vote: Serialize + DeserializeOwned,
            LeaderId: RaftLeaderId<Committed: RaftLeaderId<Term: Into<u64>> + Serialize + DeserializeOwned>,
        >
{
}

/// openraft's `RaftLogStorage` and `RaftLogReader` for one group; clones share the group.
pub struct RaftLogStore<C> {
    log: GroupLog,
    _config: PhantomData<fn() -> C>,
}

impl<C> Clone for RaftLogStore<C> {
    fn clone(&self) -> Self {
        Self { log: self.log.clone(), _config: PhantomData }
    }
}

impl<C> RaftLogStore<C> {
    pub fn new(log: GroupLog) -> Self {
        Self { log, _config: PhantomData }
    }

    pub fn group_log(&self) -> &GroupLog {
        &self.log
    }

    /// Runs `f` on the group's log on a blocking thread, never on an async worker: every call
    /// that takes the engine's writer lock can wait for a segment roll's `fdatasync` (under that
    /// lock) or a `pread` of cold data, and a worker blocked there stops every other task it
    /// runs: heartbeats of groups whose disk is not slow included. The hot calls (append,
    /// committed, reads of the active segment) first try `GroupLog`'s `try_*_now`, which do
    /// their work only when that is a write into, or read from, the page cache with the lock
    /// free: a hop to a blocking thread for every call cost a quarter of the throughput.
    async fn off_worker<T: Send + 'static>(&self, f: impl FnOnce(&GroupLog) -> io::Result<T> + Send + 'static) -> io::Result<T> {
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || f(&log)).await.map_err(|e| io::Error::other(format!("log task failed: {e}")))?
    }
}

fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    bincode::serialize(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    bincode::deserialize(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Decodes `stored` onto `out` while the encoded entries stay within [`PAYLOAD_BYTES_MAX`]
/// (`bytes` so far; the first entry is taken whatever its size). `false`: the payload is full.
fn take_bounded<E: DeserializeOwned>(stored: &[StoredEntry], out: &mut Vec<E>, bytes: &mut usize) -> io::Result<bool> {
    for e in stored {
        if !out.is_empty() && *bytes + e.payload.len() > PAYLOAD_BYTES_MAX {
            return Ok(false);
        }
        *bytes += e.payload.len();
        out.push(decode(&e.payload)?);
    }
    Ok(*bytes < PAYLOAD_BYTES_MAX)
}

fn index_range(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(i) => *i,
        Bound::Excluded(i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(i) => i.saturating_add(1),
        Bound::Excluded(i) => *i,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

impl<C: StoredTypes> RaftLogReader<C> for RaftLogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, io::Error> {
        let (from, to) = index_range(&range);
        if let Some(stored) = self.log.try_read_now(from, to)? {
            return stored.iter().map(|e| decode(&e.payload)).collect();
        }
        self.off_worker(move |log| log.read(from, to)?.iter().map(|e| decode(&e.payload)).collect()).await
    }

    /// The entries from `start`, up to `end` and [`PAYLOAD_BYTES_MAX`] of encoded entries
    /// (always at least one when the range is not empty).
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<C::Entry>, io::Error> {
        // What a follower needs next was usually just written: read it here if it is in the
        // active segment, whole (one chunk, the common case of a follower that keeps up).
        let to = end.min(start.saturating_add(PAYLOAD_READ_CHUNK));
        if to == end
            && let Some(stored) = self.log.try_read_now(start, to)?
        {
            let (mut out, mut bytes) = (Vec::with_capacity(stored.len()), 0);
            take_bounded(&stored, &mut out, &mut bytes)?;
            return Ok(out);
        }
        self.off_worker(move |log| {
            let (mut out, mut bytes) = (Vec::new(), 0);
            let mut from = start;
            while from < end {
                let to = end.min(from.saturating_add(PAYLOAD_READ_CHUNK));
                let stored = log.read(from, to)?;
                if stored.is_empty() || !take_bounded(&stored, &mut out, &mut bytes)? {
                    break;
                }
                from = from.saturating_add(stored.len() as u64);
            }
            Ok(out)
        })
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        self.off_worker(|log| log.state().vote.map(|v| decode(&v)).transpose()).await
    }
}

impl<C: StoredTypes> RaftLogStorage<C> for RaftLogStore<C> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        self.off_worker(|log| {
            let state = log.state();
            let last_purged_log_id: Option<LogIdOf<C>> = state.purged.as_ref().map(|(_, b)| decode(b)).transpose()?;
            let last_log_id = match (state.first_index, state.last_index) {
                (Some(_), Some(last)) => {
                    let entries = log.read(last, last + 1)?;
                    let entry = entries.first().ok_or_else(|| io::Error::other(format!("last entry {last} vanished")))?;
                    Some(decode::<C::Entry>(&entry.payload)?.log_id())
                }
                _ => last_purged_log_id.clone(),
            };
            Ok(LogState { last_purged_log_id, last_log_id })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        let bytes = encode(vote)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.off_worker(move |log| {
            log.save_vote_then(
                &bytes,
                Some(Box::new(move |r| {
                    let _ = tx.send(r);
                })),
            )?;
            Ok(())
        })
        .await?;
        rx.await.map_err(|_| io::Error::from(LogError::Closed))?.map_err(io::Error::from)
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        if let Some(log_id) = committed {
            let bytes = encode(&log_id)?;
            if !self.log.try_save_committed_now(log_id.index, &bytes)? {
                self.off_worker(move |log| Ok(log.save_committed(log_id.index, &bytes)?)).await?;
            }
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        self.off_worker(|log| log.state().committed.map(|(_, b)| decode(&b)).transpose()).await
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        for entry in entries {
            let log_id = entry.log_id();
            encoded.push((log_id.leader_id.term().into(), log_id.index, encode(&entry)?));
        }
        let last = encoded.last().map_or(0, |(_, index, _)| *index);
        // `raftmq::hop` events time one entry's path through the broker (docs/benchmarks.md).
        tracing::trace!(target: "raftmq::hop", hop = "log_append", index = last);
        let on_durable: crate::OnDurable = Box::new(move |r| {
            tracing::trace!(target: "raftmq::hop", hop = "log_durable", index = last);
            callback.io_completed(r.map_err(io::Error::from))
        });
        // Here when it is only a write into the page cache; from a blocking thread when it
        // would wait for the writer lock or roll a segment.
        let records: Vec<(u64, u64, &[u8])> = encoded.iter().map(|(term, index, payload)| (*term, *index, payload.as_slice())).collect();
        let Some(on_durable) = self.log.try_append_now(&records, on_durable)? else { return Ok(()) };
        drop(records);
        self.off_worker(move |log| {
            let records = encoded.iter().map(|(term, index, payload)| (*term, *index, payload.as_slice()));
            log.append(records, on_durable)?;
            Ok(())
        })
        .await
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        self.off_worker(move |log| Ok(log.truncate_from(from)?)).await
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        let bytes = encode(&log_id)?;
        self.off_worker(move |log| Ok(log.purge(log_id.index, &bytes)?)).await
    }
}

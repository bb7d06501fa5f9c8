//! How far one group's entries are durable, by index: what a state machine waits for before it
//! applies an entry (the apply-versus-durable rule in `docs/ARCHITECTURE.md`).
//!
//! openraft applies an entry once the cluster committed it and this replica *accepted* it
//! (`min(cluster committed, locally accepted)`), which can be before this replica's copy is
//! fsynced. A state machine whose own store becomes durable on its own schedule (a periodic
//! flush, a memtable flush) could then hold an applied index that a power cut takes from the
//! log; on restart openraft would purge the log up to that index to close the hole, and every
//! message body of this replica would be gone. [`GroupLog::durable`](crate::GroupLog::durable)
//! resolves once entry `i` is durable here, so a state machine can never get ahead of its log.
//!
//! The progress is kept per group, beside (not under) the engine's writer lock: a waiter never
//! waits for a `pwrite`, only for the sync round that covers its entry.
//!
//! - Each append is a pending batch `first..=last`; its durability callback marks it done, and
//!   the done batches at the front advance `until` (every entry below it is durable). Sync rounds complete in order, so batches
//!   do too; the front rule makes that an invariant rather than an assumption.
//! - A truncation from `x` (explicit, or implied by an append at or below the last index)
//!   drops pending entries from `x` on and lowers `until` to `x`: a callback of a batch
//!   written before it then vouches only for what is left of that batch.
//! - A purge up to `x` drops pending entries up to `x`; no caller waits for a purged entry (a
//!   state machine applies only above its snapshot, and a log is purged only up to one), so
//!   `until` may pass `x`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::LogError;

/// One group's durable progress; shared by every [`crate::GroupLog`] of the group.
#[derive(Debug, Default)]
pub(crate) struct DurableIndex {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Every entry below this index is durable in this process's log (indexes start at 0).
    until: u64,
    /// Appends not yet durable, oldest first.
    pending: VecDeque<Pending>,
    next_batch: u64,
    /// Callers waiting for an index, each answered once `until` passes it. One per group
    /// state machine at a time (it applies entries in order); nothing keyed by client input.
    waiters: Vec<(u64, tokio::sync::oneshot::Sender<Result<(), LogError>>)>,
    /// A sync failed: every waiter, now and later, gets this.
    failed: Option<String>,
}

#[derive(Debug)]
struct Pending {
    id: u64,
    first: u64,
    last: u64,
    done: bool,
}

/// Identifies one append's batch for [`DurableIndex::completed`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchId(u64);

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every critical section leaves the state consistent before anything that can panic.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl DurableIndex {
    /// Progress for a group whose entries below `until` are durable already (what the log
    /// recovered: recovery syncs it before serving).
    pub(crate) fn new(until: u64) -> Arc<Self> {
        Arc::new(Self { state: Mutex::new(State { until, ..State::default() }) })
    }

    /// Records an append of `first..=last`, written but not yet durable. Called under the
    /// engine's writer lock, in the order appends and truncations are written.
    pub(crate) fn appended(&self, first: u64, last: u64) -> BatchId {
        assert!(first <= last, "an append of {first}..={last}");
        let mut s = lock(&self.state);
        s.truncate_from(first);
        let id = s.next_batch;
        s.next_batch += 1;
        s.pending.push_back(Pending { id, first, last, done: false });
        BatchId(id)
    }

    /// The batch's sync round is over, with `result`.
    pub(crate) fn completed(&self, batch: BatchId, result: &Result<(), LogError>) {
        let mut s = lock(&self.state);
        if let Err(e) = result {
            s.failed.get_or_insert_with(|| e.to_string());
        } else if let Some(p) = s.pending.iter_mut().find(|p| p.id == batch.0) {
            p.done = true;
        }
        while s.pending.front().is_some_and(|p| p.done) {
            let p = s.pending.pop_front().expect("front exists");
            s.until = s.until.max(p.last + 1);
        }
        s.wake();
    }

    /// Entries from `index` on were dropped.
    pub(crate) fn truncated_from(&self, index: u64) {
        lock(&self.state).truncate_from(index);
    }

    /// Entries up to `index` were purged.
    pub(crate) fn purged_upto(&self, index: u64) {
        let mut s = lock(&self.state);
        s.pending.retain_mut(|p| {
            p.first = p.first.max(index + 1);
            p.first <= p.last
        });
        // Pending batches are in index order, so what is left of them is above the purge.
        s.until = s.until.max(index + 1);
        s.wake();
    }

    /// Resolves once the entry at `index` is durable (or purged); an error once a sync failed.
    pub(crate) fn wait(&self, index: u64) -> DurableAt {
        let mut s = lock(&self.state);
        if index < s.until {
            return DurableAt::Ready(Ok(()));
        }
        if let Some(e) = &s.failed {
            return DurableAt::Ready(Err(LogError::Failed(e.clone())));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        s.waiters.push((index, tx));
        DurableAt::Pending(rx)
    }

    /// Every entry below this is durable.
    #[cfg(test)]
    fn until(&self) -> u64 {
        lock(&self.state).until
    }
}

impl State {
    fn truncate_from(&mut self, index: u64) {
        self.pending.retain_mut(|p| {
            if p.first >= index {
                return false;
            }
            p.last = p.last.min(index - 1);
            true
        });
        self.until = self.until.min(index);
    }

    fn wake(&mut self) {
        let until = self.until;
        let failed = self.failed.clone();
        let mut i = 0;
        while i < self.waiters.len() {
            let answer = if self.waiters[i].0 < until { Some(Ok(())) } else { failed.as_ref().map(|e| Err(LogError::Failed(e.clone()))) };
            match answer {
                Some(r) => {
                    let (_, tx) = self.waiters.swap_remove(i);
                    let _ = tx.send(r);
                }
                None => i += 1,
            }
        }
    }
}

/// What [`crate::GroupLog::durable`] returns: already known, or a wait for a sync round.
#[derive(Debug)]
pub enum DurableAt {
    Ready(Result<(), LogError>),
    Pending(tokio::sync::oneshot::Receiver<Result<(), LogError>>),
}

impl DurableAt {
    /// Waits until the entry is durable.
    pub async fn wait(self) -> Result<(), LogError> {
        match self {
            Self::Ready(r) => r,
            Self::Pending(rx) => rx.await.unwrap_or(Err(LogError::Closed)),
        }
    }

    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Ready(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(d: &DurableIndex, index: u64) -> bool {
        matches!(d.wait(index), DurableAt::Ready(Ok(())))
    }

    #[test]
    fn an_entry_is_durable_once_its_batch_and_every_earlier_one_are() {
        let d = DurableIndex::new(5);
        assert!(ready(&d, 4));
        let a = d.appended(5, 7);
        let b = d.appended(8, 9);
        assert!(!ready(&d, 5));
        d.completed(b, &Ok(()));
        assert_eq!(d.until(), 5, "a later batch done first vouches for nothing before it");
        d.completed(a, &Ok(()));
        assert_eq!(d.until(), 10);
    }

    #[tokio::test]
    async fn a_waiter_is_answered_when_its_entry_becomes_durable() {
        let d = DurableIndex::new(0);
        let a = d.appended(0, 3);
        let w = d.wait(2);
        assert!(!w.is_ready());
        d.completed(a, &Ok(()));
        w.wait().await.unwrap();
    }

    /// The case the rule exists for: a follower had 5..=10 of an old term written, the leader's
    /// 8..=9 replace 8..=10, and the old batch's sync finishes first. It must not make the new
    /// 8 and 9 look durable.
    #[test]
    fn a_batch_written_before_a_truncation_vouches_only_for_what_is_left_of_it() {
        let d = DurableIndex::new(5);
        let old = d.appended(5, 10);
        let new = d.appended(8, 9);
        d.completed(old, &Ok(()));
        assert_eq!(d.until(), 8);
        assert!(!ready(&d, 8));
        d.completed(new, &Ok(()));
        assert_eq!(d.until(), 10);

        let d = DurableIndex::new(11);
        d.truncated_from(6);
        assert_eq!(d.until(), 6, "an explicit truncation lowers what is durable too");
    }

    #[test]
    fn a_purge_drops_pending_entries_at_or_below_it() {
        let d = DurableIndex::new(1);
        let a = d.appended(1, 5);
        d.purged_upto(7);
        assert!(ready(&d, 7));
        let b = d.appended(8, 8);
        d.completed(a, &Ok(()));
        assert!(!ready(&d, 8));
        d.completed(b, &Ok(()));
        assert!(ready(&d, 8));
    }

    #[tokio::test]
    async fn a_failed_sync_fails_every_waiter_now_and_later() {
        let d = DurableIndex::new(0);
        let a = d.appended(0, 0);
        let w = d.wait(0);
        d.completed(a, &Err(LogError::Failed("disk gone".into())));
        assert!(matches!(w.wait().await, Err(LogError::Failed(_))));
        assert!(matches!(d.wait(0), DurableAt::Ready(Err(LogError::Failed(_)))));
    }
}

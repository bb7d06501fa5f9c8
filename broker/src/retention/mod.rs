//! Retention, what keeps a broker's disk bounded: which checkpoint of a queue group to trim at
//! and when a quiet group gets a checkpoint by time ([`policy`], pure), read from what this
//! replica applied ([`GroupHost::trim_candidate`], [`GroupHost::group_checkpoints`]), and the
//! task that proposes trims and checkpoints on the groups this broker leads (`task`).

pub mod policy;
pub(crate) mod task;

pub use policy::{CheckpointAge, GroupCheckpoints, RetentionPolicy, time_checkpoint_due, trim_candidate};

use crate::host::{GroupHost, HostError};

use crate::raft::GroupId;

impl GroupHost {
    /// The checkpoint `group` should be trimmed at under `retention` at `now_ms` (see
    /// [`trim_candidate`]), from what this replica applied: on the group's leader,
    /// propose [`crate::queue::GroupCommand::Trim`] at it; each replica then builds its snapshot and purges its
    /// log up to it once it applied the trim. `None`: nothing to trim (or the group has no
    /// state here).
    pub fn trim_candidate(&self, group: GroupId, now_ms: u64, retention: &RetentionPolicy) -> Result<Option<u64>, HostError> {
        let Some(applied) = self.store().applied_index(group) else {
            return Ok(None);
        };
        let trim_point = self.store().trim_point(group)?;
        let mut ages = Vec::new();
        // At most CHECKPOINTS_MAX + 1 checkpoints, each read and decoded once.
        for log_index in self.store().checkpoint_indexes(group)? {
            if trim_point.is_some_and(|t| log_index <= t) {
                continue;
            }
            // Dropped since listed (a trim applied meanwhile): the next call sees the new state.
            let Some(checkpoint) = self.store().checkpoint(group, log_index)? else {
                continue;
            };
            let mut newest_message_ms = None;
            for &(queue, next) in &checkpoint.next_offsets {
                if next <= self.store().start_offset(group, queue)? {
                    continue;
                }
                // The queue's last message up to the checkpoint; gone only if trimmed meanwhile.
                if let Some(entry) = self.store().index_entry(group, queue, next - 1)? {
                    newest_message_ms = newest_message_ms.max(Some(entry.store_time_ms));
                }
            }
            ages.push(CheckpointAge { log_index, newest_message_ms });
        }
        Ok(trim_candidate(&ages, trim_point, applied, now_ms, retention))
    }

    /// What [`time_checkpoint_due`] needs of `group`, from what this replica
    /// applied; `None` when the group has no state here.
    pub fn group_checkpoints(&self, group: GroupId) -> Result<Option<GroupCheckpoints>, HostError> {
        let Some(applied_index) = self.store().applied_index(group) else {
            return Ok(None);
        };
        let trim_point = self.store().trim_point(group)?;
        let indexes = self.store().checkpoint_indexes(group)?;
        let above_trim_point = indexes.iter().filter(|&&i| trim_point.is_none_or(|t| i > t)).count();
        Ok(Some(GroupCheckpoints { applied_index, newest: indexes.last().copied(), above_trim_point }))
    }
}

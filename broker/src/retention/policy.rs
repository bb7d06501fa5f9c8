//! Retention: which checkpoint a queue group's leader should trim at, and when it should ask
//! for a checkpoint by time, decided without IO.
//!
//! The leader periodically asks [`crate::host::GroupHost::trim_candidate`], proposes
//! [`crate::queue::GroupCommand::Trim`] at the answer, and once a replica applied the trim it builds a
//! snapshot and purges its log up to it. This module is the pure decision, [`trim_candidate`],
//! over what the host reads from the store.
//!
//! Checkpoints come by entries (every `checkpoint_interval_entries`), which a quiet group may
//! never reach; so the leader also proposes [`crate::queue::GroupCommand::Checkpoint`] when
//! [`time_checkpoint_due`] says so.

use std::time::Duration;

use crate::store::CHECKPOINTS_MAX;

/// How long a group keeps its messages, and how much log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Messages are trimmed once older than this (by their store time). Default 72 hours,
    /// RocketMQ's default `fileReservedTime`.
    pub max_age_ms: u64,
    /// A group holding more log entries than this above its trim point is trimmed to bring it
    /// under, whatever the age of its messages. Default `u64::MAX`: off.
    pub max_log_entries: u64,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self { max_age_ms: 72 * 60 * 60 * 1000, max_log_entries: u64::MAX }
    }
}

/// What the decision needs to know of one checkpoint above the trim point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointAge {
    pub log_index: u64,
    /// Store time of the newest message still held in the entries up to the checkpoint: the
    /// latest among each queue's last message below the checkpoint's next offset. `None` when
    /// no such message is held (they were all trimmed, or none was sent).
    pub newest_message_ms: Option<u64>,
}

/// The checkpoint to trim at, if any: the newest one such that every message held up to it is
/// older than `policy.max_age_ms` at `now_ms` (`store_time_ms + max_age_ms <= now_ms`), or, if
/// the group holds more than `policy.max_log_entries` entries above its trim point, the oldest
/// one that brings it under (the newest one if none does), whichever is newer.
///
/// `checkpoints` are the group's checkpoints above its trim point `trim_point`, ascending;
/// `applied_index` is the group's applied log index. Entries held above the trim point are
/// `applied_index - trim_point` (all of `0..=applied_index` when never trimmed).
///
/// The age rule takes the longest run of qualifying checkpoints from the oldest: store times
/// come from the leader's clock, which may step back after a leadership change, so a checkpoint
/// qualifies only if every older one does too (every message up to it is then old).
pub fn trim_candidate(
    checkpoints: &[CheckpointAge],
    trim_point: Option<u64>,
    applied_index: u64,
    now_ms: u64,
    policy: &RetentionPolicy,
) -> Option<u64> {
    let old = |c: &&CheckpointAge| c.newest_message_ms.is_none_or(|t| t.saturating_add(policy.max_age_ms) <= now_ms);
    let by_age = checkpoints.iter().take_while(old).last().map(|c| c.log_index);
    let held = match trim_point {
        Some(t) => applied_index.saturating_sub(t),
        None => applied_index.saturating_add(1),
    };
    let by_size = if held > policy.max_log_entries {
        let under = checkpoints.iter().find(|c| applied_index.saturating_sub(c.log_index) <= policy.max_log_entries);
        under.or(checkpoints.last()).map(|c| c.log_index)
    } else {
        None
    };
    by_age.max(by_size)
}

/// What the checkpoint-by-time decision needs to know of a group, as its leader applied it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCheckpoints {
    pub applied_index: u64,
    /// The newest checkpoint held (the one at the trim point included), if any.
    pub newest: Option<u64>,
    /// Checkpoints held above the trim point.
    pub above_trim_point: usize,
}

impl GroupCheckpoints {
    /// Whether entries were applied after the newest checkpoint: only then is another one worth
    /// an entry. A group whose last entry is a checkpoint is left alone (and may hibernate).
    pub fn entries_since_newest(&self) -> bool {
        self.newest.is_none_or(|n| self.applied_index > n)
    }
}

/// Whether the leader should propose a checkpoint by time: entries were applied since the newest
/// checkpoint, and the group has been in that state for `waited` (as this leader saw it) at
/// least `interval`. A busy group reaches its next checkpoint by entries first and never waits
/// that long, so only quiet groups get these.
///
/// A group holds at most [`CHECKPOINTS_MAX`] checkpoints above its trim point and drops the
/// oldest for room, but the age rule of [`trim_candidate`] needs old ones: a group that takes a
/// message now and then would, at one checkpoint a minute, hold only its last hour of
/// checkpoints and never trim by a 72 hours' age. So once half of the room is used, a
/// checkpoint by time also waits for `max_age_ms / (CHECKPOINTS_MAX / 2)`: the checkpoints held
/// then reach back at least `max_age_ms`, and a trim by age comes at most that spacing late.
pub fn time_checkpoint_due(group: &GroupCheckpoints, waited: Duration, interval: Duration, policy: &RetentionPolicy) -> bool {
    if !group.entries_since_newest() || waited < interval {
        return false;
    }
    let half = CHECKPOINTS_MAX / 2;
    group.above_trim_point < half || waited >= Duration::from_millis(policy.max_age_ms / half as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_of_groups_gives_when_a_checkpoint_by_time_is_due() {
        let minute = Duration::from_secs(60);
        let age = RetentionPolicy::default();
        let spacing = Duration::from_millis(age.max_age_ms / 32);
        let g = |applied_index, newest, above_trim_point| GroupCheckpoints { applied_index, newest, above_trim_point };
        // (name, group, waited, expected)
        let cases = [
            ("entries since, waited the interval", g(10, Some(4), 1), minute, true),
            ("entries since, waited less", g(10, Some(4), 1), minute - Duration::from_millis(1), false),
            ("nothing since the newest checkpoint", g(10, Some(10), 1), 10 * minute, false),
            ("no checkpoint at all", g(3, None, 0), minute, true),
            ("half the room used: waits for the spacing", g(100, Some(90), 32), 10 * minute, false),
            ("half the room used: the spacing passed", g(100, Some(90), 32), spacing, true),
            ("just under half the room", g(100, Some(90), 31), minute, true),
        ];
        for (name, group, waited, want) in cases {
            assert_eq!(time_checkpoint_due(&group, waited, minute, &age), want, "{name}");
        }
    }

    const HOUR_MS: u64 = 60 * 60 * 1000;

    fn at(log_index: u64, newest_message_ms: Option<u64>) -> CheckpointAge {
        CheckpointAge { log_index, newest_message_ms }
    }

    #[test]
    fn a_table_of_groups_gives_the_expected_trim_point() {
        let now = 1_000 * HOUR_MS;
        let age = RetentionPolicy::default();
        let size = |max_log_entries| RetentionPolicy { max_age_ms: u64::MAX, max_log_entries };
        // (name, checkpoints, trim point, applied index, policy, expected trim)
        type Case = (&'static str, Vec<CheckpointAge>, Option<u64>, u64, RetentionPolicy, Option<u64>);
        let cases: Vec<Case> = vec![
            ("no checkpoint", vec![], None, 100, age, None),
            ("every message young", vec![at(10, Some(now - HOUR_MS)), at(20, Some(now))], None, 25, age, None),
            (
                "the oldest two old enough",
                vec![at(10, Some(now - 80 * HOUR_MS)), at(20, Some(now - 72 * HOUR_MS)), at(30, Some(now))],
                Some(5),
                35,
                age,
                Some(20),
            ),
            ("just younger than the limit", vec![at(10, Some(now - 72 * HOUR_MS + 1))], None, 15, age, None),
            ("no message held up to the checkpoint", vec![at(10, None), at(20, Some(now))], Some(4), 25, age, Some(10)),
            ("a clock that stepped back stops the run", vec![at(10, Some(now)), at(20, Some(now - 100 * HOUR_MS))], None, 25, age, None),
            ("a store time near u64::MAX never qualifies", vec![at(10, Some(u64::MAX))], None, 15, age, None),
            ("size: under the limit", vec![at(10, Some(now)), at(20, Some(now))], Some(0), 25, size(25), None),
            (
                "size: the oldest that brings it under",
                vec![at(10, Some(now)), at(20, Some(now)), at(30, Some(now))],
                Some(0),
                35,
                size(20),
                Some(20),
            ),
            ("size: none brings it under, the newest", vec![at(10, Some(now)), at(20, Some(now))], Some(0), 100, size(20), Some(20)),
            ("size: never trimmed counts index 0", vec![at(10, Some(now))], None, 20, size(20), Some(10)),
            (
                "size and age: the newer",
                vec![at(10, Some(0)), at(20, Some(0)), at(30, Some(now))],
                Some(0),
                31,
                RetentionPolicy { max_log_entries: 25, ..age },
                Some(20),
            ),
            ("size off by default", vec![at(10, Some(now))], None, u64::MAX - 1, age, None),
        ];
        for (name, checkpoints, trim_point, applied, policy, want) in cases {
            assert_eq!(trim_candidate(&checkpoints, trim_point, applied, now, &policy), want, "{name}");
        }
    }

    #[test]
    fn the_default_keeps_72_hours_and_any_size() {
        assert_eq!(RetentionPolicy::default(), RetentionPolicy { max_age_ms: 259_200_000, max_log_entries: u64::MAX });
    }
}

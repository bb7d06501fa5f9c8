//! The in-memory index of one group's log: where each entry sits on disk, and the group's
//! vote, committed and purge point. Pure data: the engine applies the same operations while
//! writing and while replaying the log on open, so both paths obey one set of rules.

use std::collections::VecDeque;

/// Where one entry's record lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryLocation {
    pub segment: u64,
    /// Offset of the record (its header) in the segment.
    pub offset: u64,
    pub payload_len: u32,
    pub term: u64,
}

/// Which segment holds the newest record of each kind of group state; a segment holding one of
/// these is rewritten forward before it is deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateRecordSegments {
    pub vote: Option<u64>,
    pub committed: Option<u64>,
    pub purge: Option<u64>,
}

/// See the module documentation.
#[derive(Debug, Default, Clone)]
pub struct GroupIndex {
    /// Index of `entries[0]`; meaningful only when `entries` is not empty.
    first_index: u64,
    entries: VecDeque<EntryLocation>,
    /// The purge point: index and the caller's encoding of its log id.
    pub purged: Option<(u64, Vec<u8>)>,
    pub vote: Option<Vec<u8>>,
    /// The committed index and the caller's encoding of its log id.
    pub committed: Option<(u64, Vec<u8>)>,
    pub state_segments: StateRecordSegments,
    /// While replaying: the end of a hole seen before an entry. The entries before a hole
    /// lived in segments deleted once they were dead: purged by a purge record, or replaced by
    /// an overwrite, that comes later in the log. Replay accepts the hole, clears it when that
    /// later purge or truncation comes, and refuses the log if it never does.
    pub replay_gap_end: Option<u64>,
}

impl GroupIndex {
    pub fn purged_index(&self) -> Option<u64> {
        self.purged.as_ref().map(|(i, _)| *i)
    }

    /// Index of the first entry present.
    pub fn first_index(&self) -> Option<u64> {
        (!self.entries.is_empty()).then_some(self.first_index)
    }

    /// Index of the last entry present, or the purge point when no entry is.
    pub fn last_index(&self) -> Option<u64> {
        if self.entries.is_empty() { self.purged_index() } else { Some(self.first_index + self.entries.len() as u64 - 1) }
    }

    pub fn location(&self, index: u64) -> Option<EntryLocation> {
        let pos = index.checked_sub(self.first_index)?;
        self.entries.get(usize::try_from(pos).ok()?).copied()
    }

    /// The locations of the entries in `[from, to)` that are present.
    pub fn locations(&self, from: u64, to: u64) -> Vec<(u64, EntryLocation)> {
        if self.entries.is_empty() {
            return Vec::new();
        }
        let from = from.max(self.first_index);
        let to = to.min(self.first_index + self.entries.len() as u64);
        (from..to).map(|i| (i, self.entries[(i - self.first_index) as usize])).collect()
    }

    /// Checks that an entry at `index` may be appended: above the purge point and without a hole.
    /// An index at or below the last one replaces that entry and all after it (Raft overwrites a
    /// conflicting suffix).
    pub fn check_append(&self, index: u64) -> Result<(), String> {
        if let Some(p) = self.purged_index()
            && index <= p
        {
            return Err(format!("append of index {index} at or below the purge point {p}"));
        }
        let next = self.last_index().map_or(index, |l| l + 1);
        if index > next {
            return Err(format!("append of index {index} leaves a hole after {}", next - 1));
        }
        Ok(())
    }

    /// Replay only: starts the entries afresh at `index` after a hole; returns the dropped ones.
    pub fn restart_after_hole(&mut self, index: u64) -> Vec<EntryLocation> {
        self.replay_gap_end = Some(index - 1);
        let removed: Vec<EntryLocation> = self.entries.drain(..).collect();
        self.first_index = index;
        removed
    }

    /// Whether appending `index` would leave a hole (and nothing else is wrong with it).
    pub fn is_hole(&self, index: u64) -> bool {
        self.purged_index().is_none_or(|p| index > p) && self.last_index().is_some_and(|l| index > l + 1)
    }

    /// Appends an entry (after [`Self::check_append`]); returns the entries it replaced.
    pub fn push(&mut self, index: u64, location: EntryLocation) -> Vec<EntryLocation> {
        let removed = self.truncate_from(index);
        if self.entries.is_empty() {
            self.first_index = index;
        }
        debug_assert_eq!(self.first_index + self.entries.len() as u64, index, "entries stay consecutive");
        self.entries.push_back(location);
        removed
    }

    /// Drops the entries at `index` and after; returns them.
    pub fn truncate_from(&mut self, index: u64) -> Vec<EntryLocation> {
        // Dropping every entry after a replay hole drops the hole too.
        if self.replay_gap_end.is_some_and(|gap| index <= gap + 1) {
            self.replay_gap_end = None;
        }
        if self.entries.is_empty() {
            return Vec::new();
        }
        let keep = index.saturating_sub(self.first_index).min(self.entries.len() as u64) as usize;
        self.entries.split_off(keep).into()
    }

    /// Moves the purge point to `index`, dropping the entries up to it; returns them.
    pub fn purge_upto(&mut self, index: u64, log_id: Vec<u8>) -> Vec<EntryLocation> {
        if self.replay_gap_end.is_some_and(|gap| index >= gap) {
            self.replay_gap_end = None;
        }
        let mut removed = Vec::new();
        while !self.entries.is_empty() && self.first_index <= index {
            removed.extend(self.entries.pop_front());
            self.first_index += 1;
        }
        if self.entries.is_empty() {
            self.first_index = index + 1;
        }
        if self.purged_index().is_none_or(|p| p < index) {
            self.purged = Some((index, log_id));
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(term: u64) -> EntryLocation {
        EntryLocation { segment: 1, offset: 0, payload_len: 0, term }
    }

    #[test]
    fn append_truncate_purge_keep_entries_consecutive() {
        let mut g = GroupIndex::default();
        assert_eq!(g.last_index(), None);
        for i in 1..=5 {
            g.check_append(i).unwrap();
            assert!(g.push(i, loc(1)).is_empty());
        }
        assert_eq!((g.first_index(), g.last_index()), (Some(1), Some(5)));
        assert!(g.check_append(7).is_err(), "hole");
        g.check_append(4).unwrap();
        assert_eq!(g.push(4, loc(2)).len(), 2, "replaces 4 and 5");
        assert_eq!(g.last_index(), Some(4));
        assert_eq!(g.location(4).unwrap().term, 2);
        assert_eq!(g.purge_upto(2, vec![]).len(), 2);
        assert_eq!((g.first_index(), g.last_index()), (Some(3), Some(4)));
        assert!(g.check_append(2).is_err(), "at or below the purge point");
        g.purge_upto(10, vec![]);
        assert_eq!((g.first_index(), g.last_index()), (None, Some(10)));
        g.check_append(11).unwrap();
        g.push(11, loc(3));
        assert_eq!((g.first_index(), g.last_index()), (Some(11), Some(11)));
        assert_eq!(g.truncate_from(11).len(), 1);
        assert_eq!(g.last_index(), Some(10));
    }
}

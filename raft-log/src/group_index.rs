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

/// Marks, while replaying, a slot whose entry lives in a segment deleted after a rewrite record
/// copied it forward: that later rewrite record places it. Never left in an index that serves
/// (replay refuses a log that leaves one, see [`GroupIndex::finish_replay`]). Segments are
/// numbered from 1, so no real location is in segment 0.
const MISSING: EntryLocation = EntryLocation { segment: 0, offset: 0, payload_len: 0, term: 0 };

/// The most [`MISSING`] slots one group may hold while replaying. Each stands for an entry the
/// group held live at one moment (until a later rewrite places it or a later truncate or purge
/// drops it with its neighbours), so a real log stays far below this; a damaged one that would
/// make replay allocate without bound is refused.
pub const REPLAY_MISSING_MAX: u64 = 1 << 24;

fn is_missing(l: &EntryLocation) -> bool {
    l.segment == MISSING.segment
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
    /// While replaying: the end of a hole seen before the first entry after the purge point.
    /// The entries in the hole lived in segments deleted once they were dead, purged by a purge
    /// record or replaced by an overwrite that comes later in the log, or copied forward by
    /// rewrite records that come later. Replay accepts the hole, shrinks it as rewrites land in
    /// it, clears it when that later purge or truncation comes, and refuses the log if it never
    /// does.
    pub replay_gap_end: Option<u64>,
    /// While replaying: [`MISSING`] slots in `entries`.
    replay_missing: u64,
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

    /// Moves entry `index` from `from` to `to` (a rewrite copied its record forward); returns
    /// whether it was still at `from`, so moved. An entry that was truncated, purged, replaced
    /// or moved since is left alone.
    pub fn relocate(&mut self, index: u64, from: EntryLocation, to: EntryLocation) -> bool {
        let Some(pos) = index.checked_sub(self.first_index).and_then(|p| usize::try_from(p).ok()) else { return false };
        match self.entries.get_mut(pos) {
            Some(slot) if *slot == from => {
                *slot = to;
                true
            }
            _ => false,
        }
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
        let removed: Vec<EntryLocation> = self.entries.split_off(keep).into();
        self.present(removed)
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
        self.present(removed)
    }

    /// The real locations among removed slots (counting the [`MISSING`] ones out).
    fn present(&mut self, mut removed: Vec<EntryLocation>) -> Vec<EntryLocation> {
        let before = removed.len();
        removed.retain(|l| !is_missing(l));
        self.replay_missing -= (before - removed.len()) as u64;
        removed
    }

    /// Replay only: `n` more [`MISSING`] slots, at the back or the front; refused past
    /// [`REPLAY_MISSING_MAX`].
    fn add_missing(&mut self, n: u64, at_front: bool) -> Result<(), String> {
        if self.replay_missing.saturating_add(n) > REPLAY_MISSING_MAX {
            return Err(format!("{n} entries missing around a rewritten entry, more than the {REPLAY_MISSING_MAX} replay accepts"));
        }
        for _ in 0..n {
            if at_front {
                self.entries.push_front(MISSING);
            } else {
                self.entries.push_back(MISSING);
            }
        }
        if at_front {
            self.first_index -= n;
        }
        self.replay_missing += n;
        Ok(())
    }

    /// Replay of an entry record: as [`Self::push`], an index at or below the last one
    /// replaces the suffix. Returns the entries it replaced.
    ///
    /// A hole before it is accepted: right after the purge point (its entries died in segments
    /// deleted since, see [`Self::replay_gap_end`]), or after other entries as [`MISSING`]
    /// slots (later rewrite records place them, or a later truncate or purge drops them).
    pub fn replay_entry(&mut self, index: u64, location: EntryLocation) -> Result<Vec<EntryLocation>, String> {
        if let Some(p) = self.purged_index()
            && index <= p
        {
            return Err(format!("entry {index} at or below the purge point {p}"));
        }
        let mut removed = Vec::new();
        match self.last_index() {
            Some(last) if index > last + 1 => {
                let gap = index - last - 1;
                if self.entries.is_empty() || self.add_missing(gap, false).is_err() {
                    self.replay_gap_end = Some(index - 1);
                    let dropped: Vec<EntryLocation> = self.entries.drain(..).collect();
                    removed = self.present(dropped);
                    self.first_index = index;
                }
            }
            _ => removed = self.truncate_from(index),
        }
        if self.entries.is_empty() {
            self.first_index = index;
        }
        self.entries.push_back(location);
        Ok(removed)
    }

    /// Replay of a rewrite record: the entry at `index` (with `location`'s term) now lies at
    /// `location`. Where the entry is present it is moved (its old location returned); where its
    /// record lived in a segment deleted since, it is placed, with [`MISSING`] slots for the
    /// entries between it and the others, which later rewrite records place. A rewrite never
    /// truncates: a rewrite record was written for an entry that was live then, so every
    /// entry after it in the log stays. A later truncate or purge removes it as any entry.
    pub fn replay_rewrite(&mut self, index: u64, location: EntryLocation) -> Result<Option<EntryLocation>, String> {
        if let Some(p) = self.purged_index()
            && index <= p
        {
            return Err(format!("rewritten entry {index} at or below the purge point {p}"));
        }
        if self.entries.is_empty() {
            self.first_index = index;
            self.entries.push_back(location);
            self.shrink_gap_to(index);
            return Ok(None);
        }
        let last = self.first_index + self.entries.len() as u64 - 1;
        if index > last {
            self.add_missing(index - last - 1, false)?;
            self.entries.push_back(location);
            return Ok(None);
        }
        if index < self.first_index {
            self.add_missing(self.first_index - index - 1, true)?;
            self.entries.push_front(location);
            self.first_index = index;
            self.shrink_gap_to(index);
            return Ok(None);
        }
        let slot = &mut self.entries[(index - self.first_index) as usize];
        if is_missing(slot) {
            *slot = location;
            self.replay_missing -= 1;
            Ok(None)
        } else if slot.term == location.term {
            Ok(Some(std::mem::replace(slot, location)))
        } else {
            Err(format!("rewritten entry {index} has term {}, but the entry there has term {}", location.term, slot.term))
        }
    }

    /// A rewrite placed entry `index` first: the hole after the purge point now ends before it.
    fn shrink_gap_to(&mut self, index: u64) {
        if self.replay_gap_end.is_some() {
            let below = index - 1;
            self.replay_gap_end = (self.purged_index().is_none_or(|p| below > p) && below > 0).then_some(below);
        }
    }

    /// Replay only: checks that no entry is still missing once every record was replayed.
    pub fn finish_replay(&self) -> Result<(), String> {
        if let Some(gap) = self.replay_gap_end {
            return Err(format!("entries up to {gap} are missing and no later purge or truncation accounts for them"));
        }
        if self.replay_missing > 0 {
            let first = self.entries.iter().position(is_missing).map_or(0, |p| self.first_index + p as u64);
            return Err(format!(
                "{} entries, the first at index {first}, are missing and no rewrite record places them",
                self.replay_missing
            ));
        }
        Ok(())
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

//! The writer: the active segment and every group's index under one lock; encoding records,
//! writing them out, rolling to the next segment, and deleting segments no live entry needs.

use super::*;

pub(super) struct ActiveSegment {
    pub(super) seq: u64,
    pub(super) file: Arc<dyn LogFile>,
    pub(super) write_offset: u64,
    pub(super) capacity: u64,
}

pub(super) struct SegmentMeta {
    pub(super) file: Arc<dyn LogFile>,
    /// Entries in this segment still present in some group's index, and their record bytes.
    pub(super) live_entries: u64,
    pub(super) live_bytes: u64,
}

/// Bytes an entry's record takes in its segment.
pub(super) fn entry_bytes(l: &EntryLocation) -> u64 {
    record::record_len(l.payload_len as usize)
}

/// Whether a call may wait for the writer lock (and what its holder does under it: a segment
/// roll's fdatasync), or must be done at once or not at all (on an async worker).
#[derive(Debug, Clone, Copy)]
pub(super) enum Wait {
    Always,
    Never,
}

pub(super) struct WriterState {
    pub(super) active: ActiveSegment,
    pub(super) segments: BTreeMap<u64, SegmentMeta>,
    pub(super) groups: HashMap<GroupId, GroupIndex>,
    /// Everything before this position is durable.
    pub(super) durable: Position,
    pub(super) scratch: Vec<u8>,
}

impl WriterState {
    /// Everything before `to` is durable now. The durable position only grows and never passes
    /// the end of what was written: either would let the log vouch for bytes a crash can take.
    /// A position at or below the current one changes nothing (a round that a segment roll
    /// overtook).
    pub(super) fn advance_durable(&mut self, to: Position) {
        let written = Position { segment: self.active.seq, offset: self.active.write_offset };
        assert!(to <= written, "the durable position {to:?} would pass the end written {written:?}");
        if to > self.durable {
            self.durable = to;
        }
    }

    /// Whether `bytes` more of records fit in the active segment after what is buffered.
    pub(super) fn fits(&self, bytes: u64) -> bool {
        self.active.write_offset + self.scratch.len() as u64 + bytes <= self.active.capacity
    }
}

impl Shared {
    pub(super) fn max_payload(&self) -> u64 {
        self.options.max_payload_bytes()
    }

    /// Counts an entry now present at `l` as live in its segment.
    pub(super) fn note_added(&self, segments: &mut BTreeMap<u64, SegmentMeta>, l: &EntryLocation) {
        if let Some(meta) = segments.get_mut(&l.segment) {
            meta.live_entries += 1;
            meta.live_bytes += entry_bytes(l);
            self.stats.live_entry_bytes.fetch_add(entry_bytes(l), Ordering::Relaxed);
        }
    }

    /// Counts entries no longer present (truncated, purged, replaced, or moved by a rewrite)
    /// out of their segments.
    pub(super) fn note_removed(&self, segments: &mut BTreeMap<u64, SegmentMeta>, removed: &[EntryLocation]) {
        for l in removed {
            if let Some(meta) = segments.get_mut(&l.segment) {
                // A count that would go below zero means the index and the segments disagree on
                // what is live: reclaim would then delete a segment that still holds entries.
                // A loud stop, never a silent clamp.
                assert!(
                    meta.live_entries > 0 && meta.live_bytes >= entry_bytes(l),
                    "segment {}: removing an entry at offset {} below its live count ({} entries, {} bytes)",
                    l.segment,
                    l.offset,
                    meta.live_entries,
                    meta.live_bytes
                );
                meta.live_entries -= 1;
                meta.live_bytes -= entry_bytes(l);
                // Every change to the live counts happens under the writer lock.
                self.stats.live_entry_bytes.fetch_sub(entry_bytes(l), Ordering::Relaxed);
            }
        }
    }

    pub(super) fn publish_gauges(&self, w: &WriterState) {
        self.stats.segments_in_use.store(w.segments.len() as u64, Ordering::Relaxed);
        self.stats.live_entry_bytes.store(w.segments.values().map(|m| m.live_bytes).sum(), Ordering::Relaxed);
    }

    /// Wakes the reclaimer to check its condition again.
    pub(super) fn want_reclaim(&self) {
        lock(&self.reclaim).wanted = true;
        self.reclaim_wakeup.notify_one();
    }

    pub(super) fn check_usable(&self) -> Result<(), LogError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        if self.has_failed.load(Ordering::Acquire) {
            return Err(LogError::Failed(lock(&self.failed).clone().unwrap_or_default()));
        }
        Ok(())
    }

    pub(super) fn writable(&self) -> Result<MutexGuard<'_, WriterState>, LogError> {
        self.check_usable()?;
        Ok(lock(&self.writer))
    }

    /// [`Self::writable`], or `None` at once when `wait` is `Never` and the lock is held.
    pub(super) fn writable_with(&self, wait: Wait) -> Result<Option<MutexGuard<'_, WriterState>>, LogError> {
        self.check_usable()?;
        Ok(self.writer_with(wait))
    }

    /// The writer lock, or `None` at once when `wait` is `Never` and it is held.
    pub(super) fn writer_with(&self, wait: Wait) -> Option<MutexGuard<'_, WriterState>> {
        match wait {
            Wait::Always => Some(lock(&self.writer)),
            Wait::Never => match self.writer.try_lock() {
                Ok(w) => Some(w),
                Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            },
        }
    }

    pub(super) fn fail(&self, what: String) -> LogError {
        tracing::error!(error = %what, "raft-log stops accepting writes");
        let msg = lock(&self.failed).get_or_insert(what).clone();
        self.has_failed.store(true, Ordering::Release);
        LogError::Failed(msg)
    }

    pub(super) fn enqueue_waiter(&self, cb: OnDurable) -> Result<(), LogError> {
        self.check_usable()?;
        lock(&self.flush).waiters.push(cb);
        self.flush_wakeup.notify_one();
        Ok(())
    }

    /// Encodes one record at the end of the active segment into the write buffer, rolling to a
    /// new segment first when it does not fit. Returns where it goes. The caller writes the
    /// buffer out with [`Self::write_out`] before it releases the writer lock, so a batch
    /// costs one `pwrite` per segment it touches.
    pub(super) fn write_record(
        &self,
        w: &mut WriterState,
        kind: RecordKind,
        group: GroupId,
        term: u64,
        index: u64,
        payload: &[u8],
    ) -> Result<EntryLocation, LogError> {
        let len = record::record_len(payload.len());
        if len > self.options.segment_bytes - SEGMENT_HEADER_LEN {
            // Drop the batch encoded so far: nothing of a rejected call reaches the disk.
            w.scratch.clear();
            return Err(LogError::Invalid(format!("a {kind:?} record of {} payload bytes does not fit in a segment", payload.len())));
        }
        if !w.fits(len) {
            self.write_out(w)?;
            self.roll(w)?;
        }
        let payload_len = u32::try_from(payload.len()).map_err(|_| LogError::Invalid("payload over 4 GiB".into()))?;
        let durable_offset = if w.durable.segment == w.active.seq { w.durable.offset } else { SEGMENT_HEADER_LEN };
        let offset = w.active.write_offset + w.scratch.len() as u64;
        record::encode(&mut w.scratch, kind, group, term, index, durable_offset, payload);
        self.stats.records_appended.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_appended.fetch_add(len, Ordering::Relaxed);
        Ok(EntryLocation { segment: w.active.seq, offset, payload_len, term })
    }

    /// Writes the buffered records at the end of the active segment (into the page cache).
    pub(super) fn write_out(&self, w: &mut WriterState) -> Result<(), LogError> {
        if w.scratch.is_empty() {
            return Ok(());
        }
        let offset = w.active.write_offset;
        if let Err(e) = w.active.file.write_all_at(&w.scratch, offset) {
            w.scratch.clear();
            return Err(self.fail(format!("write to segment {} at {offset}: {e}", w.active.seq)));
        }
        w.active.write_offset += w.scratch.len() as u64;
        w.scratch.clear();
        Ok(())
    }

    /// Seals the active segment and makes the prepared spare the next one.
    pub(super) fn roll(&self, w: &mut WriterState) -> Result<(), LogError> {
        // The whole old segment must be durable before the new one receives a record: only the
        // newest segment may then have a torn tail, which is what recovery relies on.
        let started = Instant::now();
        if let Err(e) = w.active.file.sync_data() {
            return Err(self.fail(format!("sync of segment {} before rolling: {e}", w.active.seq)));
        }
        self.stats.seal_syncs.fetch_add(1, Ordering::Relaxed);
        self.stats.fsync_latency.record(started.elapsed());
        w.advance_durable(Position { segment: w.active.seq, offset: w.active.write_offset });
        let next = w.active.seq + 1;
        // Never wait for the preallocator: without a spare ready, the next segment is a new,
        // growing file (slower to sync, but no stall for every group).
        let file = {
            // Held until the spare is renamed: once the preallocator sees `ready` false it
            // starts a new spare by removing `spare.tmp`, which must not be this one.
            let mut spare = lock(&self.spare);
            let use_spare = std::mem::take(&mut spare.ready);
            if !use_spare {
                tracing::debug!(segment = next, "no preallocated segment ready; rolling onto a growing file");
            }
            install_segment(&*self.fs, &self.dir, next, use_spare).map_err(|e| self.fail(format!("installing segment {next}: {e}")))?
        };
        self.spare_changed.notify_all();
        w.segments.insert(next, SegmentMeta { file: file.clone(), live_entries: 0, live_bytes: 0 });
        w.active = ActiveSegment { seq: next, file, write_offset: SEGMENT_HEADER_LEN, capacity: self.options.segment_bytes };
        self.stats.segments_created.fetch_add(1, Ordering::Relaxed);
        self.stats.segments_in_use.store(w.segments.len() as u64, Ordering::Relaxed);
        self.want_reclaim();
        tracing::debug!(segment = next, "rolled to a new segment");
        Ok(())
    }

    /// Deletes the oldest segments once no live entry is left in them. The newest vote,
    /// committed and purge records of each group are written again first when they lie in such a
    /// segment, and the file is removed only after that rewrite is durable.
    pub(super) fn collect_garbage(&self, w: &mut WriterState) -> Result<(), LogError> {
        loop {
            let Some((&seq, meta)) = w.segments.first_key_value() else { return Ok(()) };
            if seq == w.active.seq || meta.live_entries > 0 {
                return Ok(());
            }
            let holders: Vec<GroupId> = w
                .groups
                .iter()
                .filter(|(_, g)| [g.state_segments.vote, g.state_segments.committed, g.state_segments.purge].contains(&Some(seq)))
                .map(|(id, _)| *id)
                .collect();
            for id in holders {
                self.rewrite_state(w, id, seq)?;
            }
            self.write_out(w)?;
            w.segments.remove(&seq);
            self.stats.segments_in_use.store(w.segments.len() as u64, Ordering::Relaxed);
            let after = Position { segment: w.active.seq, offset: w.active.write_offset };
            lock(&self.flush).deletions.push((after, seq));
            self.flush_wakeup.notify_one();
        }
    }

    pub(super) fn rewrite_state(&self, w: &mut WriterState, id: GroupId, seq: u64) -> Result<(), LogError> {
        let Some(g) = w.groups.get(&id).cloned() else { return Ok(()) };
        let mut segs = g.state_segments;
        if segs.vote == Some(seq)
            && let Some(v) = &g.vote
        {
            segs.vote = Some(self.write_record(w, RecordKind::Vote, id, 0, 0, v)?.segment);
        }
        if segs.committed == Some(seq)
            && let Some((i, c)) = &g.committed
        {
            segs.committed = Some(self.write_record(w, RecordKind::Committed, id, 0, *i, c)?.segment);
        }
        if segs.purge == Some(seq)
            && let Some((i, p)) = &g.purged
        {
            segs.purge = Some(self.write_record(w, RecordKind::Purge, id, 0, *i, p)?.segment);
        }
        if let Some(g) = w.groups.get_mut(&id) {
            g.state_segments = segs;
        }
        Ok(())
    }
}

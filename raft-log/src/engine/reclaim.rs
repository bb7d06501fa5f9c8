//! Reclaim: copies the live entries of the oldest segment forward so that a group that never
//! purges cannot pin every later segment.

use super::*;

#[derive(Default)]
pub(super) struct ReclaimState {
    /// Something changed that may make the reclaim condition hold.
    pub(super) wanted: bool,
    pub(super) shutdown: bool,
}

/// The oldest segment, when the reclaim condition holds: more than
/// [`LogOptions::reclaim_after_segments`] segments, at least half of their bytes dead.
pub(super) fn reclaim_target(options: &LogOptions, w: &WriterState) -> Option<(u64, Arc<dyn LogFile>)> {
    let (&seq, meta) = w.segments.first_key_value()?;
    let live: u64 = w.segments.values().map(|m| m.live_bytes).sum();
    let held = w.segments.len() as u64 * options.segment_bytes;
    let wanted = w.segments.len() > options.reclaim_after_segments && held >= live.saturating_mul(2);
    (wanted && seq != w.active.seq && meta.live_entries > 0).then(|| (seq, meta.file.clone()))
}

/// Rewrites the live entries of the oldest segments forward while the reclaim condition holds;
/// waits for a roll, purge or truncation to check it again.
pub(super) fn reclaimer_loop(shared: Arc<Shared>) {
    loop {
        {
            let mut r = lock(&shared.reclaim);
            while !r.wanted && !r.shutdown {
                r = shared.reclaim_wakeup.wait(r).unwrap_or_else(|p| p.into_inner());
            }
            if r.shutdown {
                return;
            }
            r.wanted = false;
        }
        loop {
            if shared.check_usable().is_err() {
                return;
            }
            let Some((seq, file)) = reclaim_target(&shared.options, &lock(&shared.writer)) else { break };
            if let Err(e) = shared.rewrite_segment(seq, &file) {
                if !matches!(e, LogError::Closed | LogError::Failed(_)) {
                    // A sealed segment that does not read back is corruption: never skip it. The
                    // log keeps serving what it can; the next open refuses it, naming the file
                    // and offset.
                    tracing::error!(segment = seq, error = %e, "reclaim stopped: cannot rewrite the oldest segment");
                }
                return;
            }
            tracing::debug!(segment = seq, "reclaimed the oldest segment");
        }
    }
}

impl Shared {
    /// Copies every live entry of sealed segment `seq` into the active segment as a rewrite
    /// record, at most [`LogOptions::rewrite_chunk_bytes`] per hold of the writer lock, then
    /// lets [`Self::collect_garbage`] delete it (after the round that makes the copies durable).
    ///
    /// The segment is read without the lock: its records never change. Under the lock each
    /// entry is copied only if its location is still this record; an entry truncated, purged
    /// or replaced meanwhile is left dead. Readers that took the old location before the move
    /// read the old file, which stays readable through their handle after it is removed.
    pub(super) fn rewrite_segment(&self, seq: u64, file: &Arc<dyn LogFile>) -> Result<(), LogError> {
        let path = join(&self.dir, &segment::segment_name(seq));
        let bytes = segment::read_all(file, &path)?;
        let scan = segment::scan_bytes(&bytes, &path, seq, false, false)?;
        let candidates: Vec<&segment::ScannedRecord> =
            scan.records.iter().filter(|r| matches!(r.header.kind, RecordKind::Entry | RecordKind::Rewrite)).collect();
        let chunk_max = self.options.rewrite_chunk_bytes.max(1);
        let mut next = 0;
        while next < candidates.len() {
            let mut w = self.writable()?;
            let w = &mut *w;
            let mut moved = Vec::new();
            let mut chunk_bytes = 0;
            while next < candidates.len() && chunk_bytes < chunk_max {
                let r = candidates[next];
                next += 1;
                let h = &r.header;
                let from = EntryLocation { segment: seq, offset: r.offset, payload_len: h.payload_len, term: h.term };
                if w.groups.get(&h.group).and_then(|g| g.location(h.index)) != Some(from) {
                    continue;
                }
                let start = (r.offset as usize) + HEADER_LEN;
                let payload = &bytes[start..start + h.payload_len as usize];
                let to = self.write_record(w, RecordKind::Rewrite, h.group, h.term, h.index, payload)?;
                chunk_bytes += entry_bytes(&to);
                moved.push((h.group, h.index, from, to));
            }
            self.write_out(w)?;
            // The index learns of the copies only once their bytes are written.
            for (group, index, from, to) in moved {
                if let Some(g) = w.groups.get_mut(&group)
                    && g.relocate(index, from, to)
                {
                    self.note_removed(&mut w.segments, &[from]);
                    self.note_added(&mut w.segments, &to);
                    self.stats.entries_rewritten.fetch_add(1, Ordering::Relaxed);
                    self.stats.bytes_rewritten.fetch_add(entry_bytes(&to), Ordering::Relaxed);
                }
            }
        }
        let mut w = self.writable()?;
        let left = w.segments.get(&seq).map_or(0, |m| m.live_entries);
        if left > 0 {
            return Err(LogError::Invalid(format!("segment {seq} still holds {left} live entries after its rewrite")));
        }
        self.collect_garbage(&mut w)
    }
}

//! Group commit: one thread syncs the active segment once per round for every append written
//! before the round began, answers them, then deletes the segments waiting for that round.

use super::*;

#[derive(Default)]
pub(super) struct FlushQueue {
    pub(super) waiters: Vec<OnDurable>,
    /// Segments to delete once the log up to the position is durable.
    pub(super) deletions: Vec<(Position, u64)>,
    pub(super) shutdown: bool,
}

/// The group-commit loop: each round syncs the active segment once for every append that was
/// written before the round started, then answers all of them.
pub(super) fn flusher_loop(shared: Arc<Shared>) {
    loop {
        let (waiters, deletions, shutdown) = {
            let mut q = lock(&shared.flush);
            while q.waiters.is_empty() && q.deletions.is_empty() && !q.shutdown {
                match shared.options.ack_before_sync {
                    None => q = shared.flush_wakeup.wait(q).unwrap_or_else(|p| p.into_inner()),
                    // Appends wait for no round in this test mode: sync on a timer instead.
                    Some(every) => {
                        let (guard, waited) = shared.flush_wakeup.wait_timeout(q, every).unwrap_or_else(|p| p.into_inner());
                        q = guard;
                        if waited.timed_out() {
                            break;
                        }
                    }
                }
            }
            (std::mem::take(&mut q.waiters), std::mem::take(&mut q.deletions), q.shutdown)
        };
        let result = sync_round(&shared);
        let result = result.and_then(|target| delete_segments(&shared, deletions, target));
        let n = waiters.len() as u64;
        for cb in waiters {
            cb(result.as_ref().map(|_| ()).map_err(|e| LogError::Failed(e.to_string())));
        }
        shared.stats.appends_made_durable.fetch_add(n, Ordering::Relaxed);
        if shutdown {
            let q = lock(&shared.flush);
            if q.waiters.is_empty() && q.deletions.is_empty() {
                return;
            }
        }
    }
}

/// Syncs the active segment up to what has been written; returns the position now durable.
pub(super) fn sync_round(shared: &Shared) -> Result<Position, LogError> {
    shared.check_usable().or_else(|e| if matches!(e, LogError::Closed) { Ok(()) } else { Err(e) })?;
    let (target, file, durable) = {
        let w = lock(&shared.writer);
        (Position { segment: w.active.seq, offset: w.active.write_offset }, w.active.file.clone(), w.durable)
    };
    if target <= durable {
        return Ok(durable);
    }
    let started = Instant::now();
    // One fdatasync covers every record written to the segment before it began (and earlier
    // segments were synced when they were sealed).
    if let Err(e) = file.sync_data() {
        return Err(shared.fail(format!("fdatasync of segment {}: {e}", target.segment)));
    }
    let elapsed = started.elapsed();
    shared.stats.sync_rounds.fetch_add(1, Ordering::Relaxed);
    shared.stats.sync_nanos_total.fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    shared.stats.fsync_latency.record(elapsed);
    lock(&shared.writer).advance_durable(target);
    Ok(target)
}

pub(super) fn delete_segments(shared: &Shared, deletions: Vec<(Position, u64)>, durable: Position) -> Result<Position, LogError> {
    if deletions.is_empty() {
        return Ok(durable);
    }
    let mut later = Vec::new();
    let mut removed = false;
    for (after, seq) in deletions {
        if after > durable {
            later.push((after, seq));
            continue;
        }
        let path = join(&shared.dir, &segment::segment_name(seq));
        if let Err(e) = shared.fs.remove(&path) {
            return Err(shared.fail(format!("removing {}: {e}", path.display())));
        }
        removed = true;
        shared.stats.segments_deleted.fetch_add(1, Ordering::Relaxed);
    }
    if removed {
        // Removals must be durable in order too: a crash must never bring back an old segment
        // without the ones after it, which the contiguity check on open would refuse.
        if let Err(e) = shared.fs.sync_dir(&shared.dir) {
            return Err(shared.fail(format!("syncing {}: {e}", shared.dir.display())));
        }
    }
    if !later.is_empty() {
        lock(&shared.flush).deletions.extend(later);
    }
    Ok(durable)
}

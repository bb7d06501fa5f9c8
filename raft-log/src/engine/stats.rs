//! What the engine counts for its users: appends, sync rounds, segments, reclaim, and the
//! latency of every fdatasync as a fixed-bucket histogram (no lock on the sync path).

use super::*;

/// Counters a user watches; all monotonic.
#[derive(Debug, Default)]
pub struct EngineStats {
    pub records_appended: AtomicU64,
    pub bytes_appended: AtomicU64,
    /// Group-commit rounds that ran an `fdatasync`.
    pub sync_rounds: AtomicU64,
    /// `fdatasync`s that sealed a full segment before the next one took records.
    pub seal_syncs: AtomicU64,
    /// Time spent in the `fdatasync`s of group-commit rounds (not seals).
    pub sync_nanos_total: AtomicU64,
    pub appends_made_durable: AtomicU64,
    pub segments_created: AtomicU64,
    pub segments_deleted: AtomicU64,
    /// Entries copied forward by reclaim, and their record bytes (headers and padding included).
    pub entries_rewritten: AtomicU64,
    pub bytes_rewritten: AtomicU64,
    /// Gauge: segments in use (a deleted one leaves this count before its file is removed,
    /// after the next sync round).
    pub segments_in_use: AtomicU64,
    /// Gauge: record bytes of the entries present in some group's index (live, not yet purged
    /// or truncated): what reclaim must keep.
    pub live_entry_bytes: AtomicU64,
    /// Latency of every `fdatasync` of a group-commit round or a seal that succeeded.
    pub fsync_latency: SyncLatencyHistogram,
}

impl EngineStats {
    /// A copy of [`Self::fsync_latency`] as it is now.
    pub fn fsync_latency(&self) -> SyncLatencySnapshot {
        self.fsync_latency.snapshot()
    }
}

/// Upper bounds, inclusive, of the finite buckets of [`SyncLatencyHistogram`], in nanoseconds:
/// 50 µs to 1 s. A last bucket holds everything slower.
pub const SYNC_LATENCY_BOUNDS_NANOS: [u64; 13] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
];

/// Buckets of [`SyncLatencyHistogram`]: one per bound and the unbounded one.
pub const SYNC_LATENCY_BUCKETS: usize = SYNC_LATENCY_BOUNDS_NANOS.len() + 1;

/// A latency histogram with fixed buckets, updated with relaxed atomics (no lock on the sync
/// path). Readers see each counter exactly but not all of them at one instant: a snapshot taken
/// while a sync is being recorded may count it in the buckets and not yet in the sum.
#[derive(Debug, Default)]
pub struct SyncLatencyHistogram {
    /// Observations per bucket (not cumulative); see [`SYNC_LATENCY_BOUNDS_NANOS`].
    pub(super) buckets: [AtomicU64; SYNC_LATENCY_BUCKETS],
    pub(super) sum_nanos: AtomicU64,
}

impl SyncLatencyHistogram {
    pub fn record(&self, elapsed: std::time::Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[sync_latency_bucket(nanos)].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> SyncLatencySnapshot {
        SyncLatencySnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_nanos: self.sum_nanos.load(Ordering::Relaxed),
        }
    }
}

/// The bucket of a latency: the first whose bound is at least `nanos`, else the last.
pub(super) fn sync_latency_bucket(nanos: u64) -> usize {
    SYNC_LATENCY_BOUNDS_NANOS.partition_point(|&bound| bound < nanos)
}

/// What a [`SyncLatencyHistogram`] held when read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncLatencySnapshot {
    /// Observations per bucket, not cumulative: `buckets[i]` counts latencies in
    /// `(SYNC_LATENCY_BOUNDS_NANOS[i - 1], SYNC_LATENCY_BOUNDS_NANOS[i]]`, the last one those
    /// above every bound.
    pub buckets: [u64; SYNC_LATENCY_BUCKETS],
    pub sum_nanos: u64,
}

impl SyncLatencySnapshot {
    /// Number of observations: the sum of the buckets, so the two always agree.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn sync_latency_buckets_are_upper_inclusive() {
        let cases = [
            (0, 0),
            (50_000, 0),
            (50_001, 1),
            (100_000, 1),
            (999_999, 4),
            (1_000_000, 4),
            (2_500_001, 6),
            (999_999_999, 12),
            (1_000_000_000, 12),
            (1_000_000_001, 13),
            (u64::MAX, 13),
        ];
        for (nanos, bucket) in cases {
            assert_eq!(sync_latency_bucket(nanos), bucket, "{nanos} ns");
        }
    }

    #[test]
    fn sync_latency_snapshot_counts_and_sums() {
        let h = SyncLatencyHistogram::default();
        for micros in [10, 50, 70, 3_000, 2_000_000] {
            h.record(Duration::from_micros(micros));
        }
        let s = h.snapshot();
        let mut expected = [0; SYNC_LATENCY_BUCKETS];
        expected[0] = 2;
        expected[1] = 1;
        expected[6] = 1;
        expected[13] = 1;
        assert_eq!(s.buckets, expected);
        assert_eq!(s.count(), 5);
        assert_eq!(s.sum_nanos, 2_003_130_000);
    }
}

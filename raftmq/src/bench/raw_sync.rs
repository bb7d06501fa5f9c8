//! The disk's raw rate: a loop of one `pwrite` and one `fdatasync`, with nothing of the log
//! engine in between. Background IO moves fsync latency by an order of magnitude, so every log
//! benchmark measures this in the same directory and the same run, and reports beside it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use super::latency::{Latency, LatencyRecorder};

/// Where each write goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// At the end of a new, growing file: every sync also commits the new file size.
    Append,
    /// Over a file already written with zeros and synced (wrapping around at its end): what
    /// raft-log's preallocated segments do.
    Overwrite,
}

impl SyncMode {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Append => "append (growing file)",
            Self::Overwrite => "overwrite (preallocated)",
        }
    }
}

/// Bounds of one probe; it stops at whichever comes first.
#[derive(Debug, Clone, Copy)]
pub struct ProbeLimits {
    pub duration: Duration,
    pub ops_max: u64,
}

/// The largest file an append probe grows, so that a fast disk and large writes do not fill it.
const APPEND_BYTES_MAX: u64 = 256 << 20;
/// The size of the preallocated file an overwrite probe cycles over (one raft-log segment).
const OVERWRITE_REGION_BYTES_MAX: u64 = 64 << 20;

#[derive(Debug, Clone, Serialize)]
pub struct RawSyncResult {
    pub mode: SyncMode,
    pub size: u64,
    pub ops: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub latency: Latency,
}

/// Runs one probe in `dir` with writes of `size` bytes; the file it uses is removed afterwards.
pub fn probe(dir: &Path, mode: SyncMode, size: u64, limits: ProbeLimits) -> anyhow::Result<RawSyncResult> {
    anyhow::ensure!(size > 0, "write size must be positive");
    let path = dir.join(format!("raw-sync-{}-{size}.tmp", if mode == SyncMode::Append { "append" } else { "overwrite" }));
    let file =
        OpenOptions::new().read(true).write(true).create_new(true).open(&path).with_context(|| format!("creating {}", path.display()))?;
    let result = run_probe(&file, mode, size, limits).with_context(|| format!("raw fdatasync probe on {}", path.display()));
    drop(file);
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    result
}

fn run_probe(file: &File, mode: SyncMode, size: u64, limits: ProbeLimits) -> anyhow::Result<RawSyncResult> {
    let wrap_at = match mode {
        SyncMode::Append => None,
        SyncMode::Overwrite => Some(preallocate(file, size, limits.ops_max)?),
    };
    let ops_max = match mode {
        SyncMode::Append => limits.ops_max.min(APPEND_BYTES_MAX / size).max(1),
        SyncMode::Overwrite => limits.ops_max,
    };
    let block = vec![0xA5u8; usize::try_from(size)?];
    let mut latencies = LatencyRecorder::new()?;
    let started = Instant::now();
    let deadline = started + limits.duration;
    let mut ops = 0;
    while ops < ops_max && Instant::now() < deadline {
        let offset = match wrap_at {
            None => ops * size,
            Some(region) => (ops * size) % region,
        };
        let t = Instant::now();
        file.write_all_at(&block, offset)?;
        file.sync_data()?;
        latencies.record(t.elapsed());
        ops += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(RawSyncResult { mode, size, ops, seconds, ops_per_sec: ops as f64 / seconds, latency: latencies.summary() })
}

/// Writes zeros over a region of whole blocks and syncs data and size, so later overwrites
/// change no file metadata that `fdatasync` would have to commit. Returns the region's length.
fn preallocate(file: &File, size: u64, ops_max: u64) -> anyhow::Result<u64> {
    const CHUNK: u64 = 1 << 20;
    let blocks = (OVERWRITE_REGION_BYTES_MAX / size).clamp(1, ops_max.max(1));
    let region = blocks * size;
    let zeros = vec![0u8; usize::try_from(CHUNK.min(region))?];
    let mut at = 0;
    while at < region {
        let n = CHUNK.min(region - at);
        file.write_all_at(&zeros[..usize::try_from(n)?], at)?;
        at += n;
    }
    // Data and the file size: the probe must then measure overwrites alone.
    file.sync_all()?;
    Ok(region)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_stop_at_the_op_bound_and_clean_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = ProbeLimits { duration: Duration::from_secs(30), ops_max: 7 };
        for mode in [SyncMode::Append, SyncMode::Overwrite] {
            let r = probe(dir.path(), mode, 4096, limits).expect("probe");
            assert_eq!(r.ops, 7, "{mode:?}");
            assert!(r.latency.p50_us > 0.0 && r.latency.max_us >= r.latency.p99_us);
        }
        assert_eq!(std::fs::read_dir(dir.path()).expect("read_dir").count(), 0, "probe files are removed");
    }

    #[test]
    fn overwrite_region_is_whole_blocks_and_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(dir.path().join("f")).expect("create");
        assert_eq!(preallocate(&file, 1000, 5).expect("preallocate"), 5000);
        assert_eq!(file.metadata().expect("metadata").len(), 5000);
        assert_eq!(preallocate(&file, 3 << 20, 1_000_000).expect("preallocate"), 21 * (3 << 20), "64 MiB rounded down to whole blocks");
    }
}

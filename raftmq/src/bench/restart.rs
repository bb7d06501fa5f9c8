//! `raftmq bench restart`: how long the log takes to open (a broker restart's log recovery:
//! every segment scanned and checksummed, then synced) after much was written, when little of it
//! is retained and when all of it is.
//!
//! Each case writes `--written-mib` of 64 KiB entries to one group, purging as it goes so that only
//! the newest `retained` bytes stay, beside a second group that writes a few entries first and
//! never purges (a quiet group: without reclaim it would pin every segment). Then the log is
//! closed, reopened, and the open is timed.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use raft_log::{LogEngine, LogOptions};

use super::scratch::ScratchDir;

#[derive(Args)]
pub struct BenchRestartArgs {
    /// Directory to work in: a new temporary directory is made in it and removed afterwards.
    /// Default: the system's temporary directory.
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// MiB written to the busy group in each case.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=WRITTEN_MIB_MAX))]
    written_mib: u64,
    /// MiB the busy group retains in the "little retained" case.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=WRITTEN_MIB_MAX))]
    retained_mib: u64,
    /// Print one JSON object per case.
    #[arg(long)]
    json: bool,
}

const WRITTEN_MIB_MAX: u64 = 64 << 10;
const ENTRY_BYTES: usize = 64 << 10;
/// Entries per append call.
const BATCH: u64 = 16;
/// The quiet group's entries, written first and never purged.
const QUIET_ENTRIES: u64 = 8;
/// Longest the reclaimer and the segment deletions get to settle after the writes.
const SETTLE_MAX: Duration = Duration::from_secs(120);

struct Case {
    label: &'static str,
    retained_bytes: u64,
}

pub fn run(args: BenchRestartArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.retained_mib <= args.written_mib, "--retained-mib must be at most --written-mib");
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = ScratchDir::create(&parent)?;
    let cases = [
        Case { label: "little retained", retained_bytes: args.retained_mib << 20 },
        Case { label: "all retained", retained_bytes: args.written_mib << 20 },
    ];
    if !args.json {
        println!("| case | written MiB | retained MiB | segments on disk | log bytes on disk | records replayed | open ms |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
    }
    for (i, case) in cases.iter().enumerate() {
        let dir = scratch.path().join(format!("case-{i}"));
        let written = write_case(&dir, args.written_mib << 20, case.retained_bytes)?;
        let on_disk = log_bytes(&dir)?;
        let started = Instant::now();
        let (engine, report) = LogEngine::open(&dir, LogOptions::default()).with_context(|| format!("reopening {}", dir.display()))?;
        let open = started.elapsed();
        drop(engine);
        let retained_mib = case.retained_bytes.min(written) >> 20;
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "case": case.label, "written_mib": written >> 20, "retained_mib": retained_mib,
                    "segments": report.segments, "log_bytes": on_disk, "records": report.records,
                    "open_ms": open.as_secs_f64() * 1e3,
                })
            );
        } else {
            println!(
                "| {} | {} | {} | {} | {} | {} | {:.0} |",
                case.label,
                written >> 20,
                retained_mib,
                report.segments,
                on_disk,
                report.records,
                open.as_secs_f64() * 1e3
            );
        }
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    scratch.remove()
}

/// Writes `written` bytes to group 1, keeping the newest `retained`; returns the bytes written.
fn write_case(dir: &Path, written: u64, retained: u64) -> anyhow::Result<u64> {
    let (engine, _) = LogEngine::open(dir, LogOptions::default()).with_context(|| format!("opening {}", dir.display()))?;
    let payload = vec![0x5a_u8; ENTRY_BYTES];
    let quiet = engine.group(2);
    quiet.append((0..QUIET_ENTRIES).map(|i| (1, i, payload.as_slice())), Box::new(|_| {}))?;
    let busy = engine.group(1);
    let entries = written / ENTRY_BYTES as u64;
    let keep = (retained / ENTRY_BYTES as u64).max(1);
    let mut next = 0;
    while next < entries {
        let end = (next + BATCH).min(entries);
        busy.append((next..end).map(|i| (1, i, payload.as_slice())), Box::new(|_| {}))?;
        next = end;
        if next > keep {
            busy.purge(next - keep - 1, b"bench")?;
        }
    }
    engine.sync()?;
    // The reclaimer and the flusher's deletions run in the background: let them settle.
    let deadline = Instant::now() + SETTLE_MAX;
    let mut last = engine.segment_count();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        engine.sync()?;
        let now = engine.segment_count();
        if now == last || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    Ok(entries * ENTRY_BYTES as u64)
}

fn log_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().ends_with(".seg") {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

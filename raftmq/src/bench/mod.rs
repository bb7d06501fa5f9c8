//! `raftmq bench log`: the log engine's append+flush rate and latency under a closed-loop load,
//! beside the disk's raw `pwrite`+`fdatasync` rate measured in the same directory and run.
//! `raftmq bench produce|consume|e2e`: load on a running cluster (see [`queue`]).
//! `raftmq bench restart`: the log's open time after much was written, little or all retained.
//! `raftmq bench scenario timeliness`: the seeds' timeliness test (see `queue::timeliness`).

mod engine_load;
mod latency;
mod queue;
mod raw_sync;
mod report;
mod restart;
mod scratch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use engine_load::LoadConfig;
use raw_sync::{ProbeLimits, RawSyncResult, SyncMode};
use report::{CellReport, RawPair};
use scratch::ScratchDir;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Benchmark the log engine (append + group-commit flush), beside the disk's raw fdatasync.
    Log(BenchLogArgs),
    /// Send messages to a running cluster: latency to ack, msgs/s, MiB/s. Exits 1 unless every
    /// message was acknowledged.
    Produce(queue::QueueBenchArgs),
    /// Read a topic from offset 0 of every queue until --count messages are read.
    Consume(queue::QueueBenchArgs),
    /// Send and read at once: latency from send to consume.
    E2e(queue::QueueBenchArgs),
    /// Time the log's open (a restart's recovery) after much was written, with little and with
    /// all of it retained.
    Restart(restart::BenchRestartArgs),
    /// Scenarios from the seeds' tests, on a running cluster.
    #[command(subcommand)]
    Scenario(ScenarioCommand),
}

#[derive(Subcommand)]
pub enum ScenarioCommand {
    /// The seeds' timeliness test through RocketMQ 5's protocol: the time from the first send
    /// to the last message processed by a consumer group that pauses per message, at several
    /// producer concurrencies.
    Timeliness(queue::TimelinessArgs),
}

#[derive(Args)]
pub struct BenchLogArgs {
    /// Directory to work in: a new temporary directory is made in it and removed afterwards.
    /// Default: the system's temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Stop after this many records (per matrix cell with --matrix) [default: 20000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    records: Option<u64>,
    /// Stop after this many seconds, whichever comes first [default: 10, or 6 per matrix cell].
    #[arg(long, value_parser = positive_seconds)]
    seconds: Option<f64>,
    /// Payload bytes of each record (and of each raw write).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=SIZE_MAX))]
    size: u64,
    /// Concurrent appenders, each waiting for its record to be durable before the next.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=APPENDERS_MAX))]
    appenders: u64,
    /// Raft groups the appenders write to.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=GROUPS_MAX))]
    groups: u64,
    /// Run the whole matrix: appenders {1, 64} x size {1 KiB, 64 KiB} x groups {1, 256}, and
    /// print a Markdown table (to stderr when --json is given).
    #[arg(long, conflicts_with_all = ["size", "appenders", "groups"])]
    matrix: bool,
    /// Seconds each raw fdatasync probe runs at most [default: 3, or 2 with --matrix].
    #[arg(long, value_parser = positive_seconds)]
    probe_seconds: Option<f64>,
    /// Print JSON: one object for a single run, one object per line with --matrix.
    #[arg(long)]
    json: bool,
}

/// The largest record raft-log accepts by default.
const SIZE_MAX: u64 = 16 << 20;
const APPENDERS_MAX: u64 = 4096;
const GROUPS_MAX: u64 = 1 << 20;
/// Raw probes stop after this many operations if their time is not up first.
const PROBE_OPS_MAX: u64 = 20_000;
const RECORDS_DEFAULT: u64 = 20_000;
const SECONDS_DEFAULT: f64 = 10.0;
const PROBE_SECONDS_DEFAULT: f64 = 3.0;
/// With these bounds (and `RECORDS_DEFAULT` per cell) the eight cells of `--matrix` and its
/// four raw probes at each end took 48 s on a quiet 2-core machine with one virtual disk.
const MATRIX_CELL_SECONDS_DEFAULT: f64 = 6.0;
const MATRIX_PROBE_SECONDS_DEFAULT: f64 = 2.0;

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds in (0, 86400]")),
    }
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Log(args) => {
            let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
            let scratch = ScratchDir::create(&parent)?;
            tracing::info!(dir = %scratch.path().display(), "benchmarking");
            if args.matrix {
                run_matrix(&args, &scratch)?
            } else {
                run_single(&args, &scratch)?
            }
            scratch.remove()?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Produce(args) => queue::run(queue::BenchKind::Produce, args),
        BenchCommand::Consume(args) => queue::run(queue::BenchKind::Consume, args),
        BenchCommand::E2e(args) => queue::run(queue::BenchKind::E2e, args),
        BenchCommand::Restart(args) => {
            restart::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Scenario(ScenarioCommand::Timeliness(args)) => queue::run_timeliness(args),
    }
}

fn probe_pair(scratch: &ScratchDir, size: u64, limits: ProbeLimits) -> anyhow::Result<RawPair> {
    let run = |mode: SyncMode| -> anyhow::Result<RawSyncResult> {
        let r = raw_sync::probe(scratch.path(), mode, size, limits)?;
        tracing::info!(mode = mode.describe(), size, ops_per_sec = r.ops_per_sec as u64, p99_us = r.latency.p99_us, "raw fdatasync");
        Ok(r)
    };
    Ok(RawPair { append: run(SyncMode::Append)?, overwrite: run(SyncMode::Overwrite)? })
}

fn probe_limits(args: &BenchLogArgs, default_seconds: f64) -> ProbeLimits {
    ProbeLimits { duration: Duration::from_secs_f64(args.probe_seconds.unwrap_or(default_seconds)), ops_max: PROBE_OPS_MAX }
}

fn run_single(args: &BenchLogArgs, scratch: &ScratchDir) -> anyhow::Result<()> {
    let raw = probe_pair(scratch, args.size, probe_limits(args, PROBE_SECONDS_DEFAULT))?;
    let cfg = LoadConfig {
        records_max: args.records.unwrap_or(RECORDS_DEFAULT),
        duration: Duration::from_secs_f64(args.seconds.unwrap_or(SECONDS_DEFAULT)),
        size: args.size,
        appenders: args.appenders,
        groups: args.groups,
    };
    let log_dir = scratch.path().join("log");
    let load = engine_load::run(&log_dir, &cfg)?;
    let cell = CellReport::new(load, &raw);
    report::print_single(scratch.path(), &raw, &cell, args.json)
}

fn run_matrix(args: &BenchLogArgs, scratch: &ScratchDir) -> anyhow::Result<()> {
    const SIZES: [u64; 2] = [1 << 10, 64 << 10];
    let records_max = args.records.unwrap_or(RECORDS_DEFAULT);
    let duration = Duration::from_secs_f64(args.seconds.unwrap_or(MATRIX_CELL_SECONDS_DEFAULT));
    let limits = probe_limits(args, MATRIX_PROBE_SECONDS_DEFAULT);
    let raw_start: Vec<RawPair> = SIZES.iter().map(|&size| probe_pair(scratch, size, limits)).collect::<anyhow::Result<_>>()?;
    let mut cells = Vec::new();
    for appenders in [1, 64] {
        for (size, raw) in SIZES.iter().zip(&raw_start) {
            for groups in [1, 256] {
                let cfg = LoadConfig { records_max, duration, size: *size, appenders, groups };
                let log_dir = scratch.path().join(format!("log-{appenders}-{size}-{groups}"));
                let load = engine_load::run(&log_dir, &cfg)?;
                // Each cell writes up to ~1 GiB; free it before the next.
                std::fs::remove_dir_all(&log_dir).with_context(|| format!("removing {}", log_dir.display()))?;
                tracing::info!(
                    appenders,
                    size,
                    groups,
                    records_per_sec = load.records_per_sec as u64,
                    p99_us = load.latency.p99_us,
                    "matrix cell done"
                );
                cells.push(CellReport::new(load, raw));
            }
        }
    }
    let raw_end: Vec<RawPair> = SIZES.iter().map(|&size| probe_pair(scratch, size, limits)).collect::<anyhow::Result<_>>()?;
    report::print_matrix(scratch.path(), &raw_start, &raw_end, &cells, args.json)
}

//! `raftmq log verify|dump`: print what `raft_log::verify` finds in a log directory. Neither
//! command changes anything on disk.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use raft_log::LogError;
use raft_log::record::RecordKind;
use raft_log::verify::{self, DumpLine, VerifyReport};
use serde_json::json;

/// Exit code when the log holds damage that recovery would refuse (or, for `dump`, any bad
/// stretch at all).
const EXIT_DAMAGED: u8 = 1;
/// Exit code for every other failure: not a directory, an I/O error.
const EXIT_ERROR: u8 = 2;

#[derive(Subcommand)]
pub enum LogCommand {
    /// Check every record and checksum of a log directory and summarise it.
    ///
    /// Exits 0 on a good log, also one with a torn tail (a partly written last record, which
    /// the next open cuts off); 1 on damage recovery would refuse, naming the file and byte
    /// offset; 2 on other errors.
    Verify(VerifyArgs),
    /// Print one line per record (file, offset, kind, group, index, term, size, checksum
    /// status), resuming after bad stretches. Exits 1 if any bad stretch was found.
    Dump(DumpArgs),
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The log directory.
    dir: PathBuf,
    /// Print one JSON object: the report, or {"error", "file", "offset"}.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct DumpArgs {
    /// The log directory.
    dir: PathBuf,
    /// Only entries with an index at or above this (bad stretches are always shown).
    #[arg(long)]
    from: Option<u64>,
    /// Only entries with an index at or below this (bad stretches are always shown).
    #[arg(long)]
    to: Option<u64>,
    /// Print one JSON object per line.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: LogCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        LogCommand::Verify(args) => run_verify(&args),
        LogCommand::Dump(args) => run_dump(&args),
    }
}

fn run_verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let mut out = io::stdout().lock();
    match verify::verify_dir(&args.dir) {
        Ok(report) => {
            if args.json {
                writeln!(out, "{}", report_json(&report)?)?;
            } else {
                write_report(&mut out, &report)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            if args.json {
                writeln!(out, "{}", error_json(&e))?;
            }
            Ok(ExitCode::from(exit_code_of(&e)))
        }
    }
}

fn exit_code_of(e: &LogError) -> u8 {
    if matches!(e, LogError::Corrupt { .. }) { EXIT_DAMAGED } else { EXIT_ERROR }
}

/// The first and last index over all groups (each group counts its own indexes).
fn index_range(report: &VerifyReport) -> (Option<u64>, Option<u64>) {
    let first = report.groups.iter().filter_map(|g| g.first_index).min();
    let last = report.groups.iter().filter_map(|g| g.last_index).max();
    (first, last)
}

fn report_json(report: &VerifyReport) -> anyhow::Result<serde_json::Value> {
    let mut value = serde_json::to_value(report).context("encoding the report")?;
    let (first, last) = index_range(report);
    if let Some(obj) = value.as_object_mut() {
        let status = if report.torn_tail.is_some() { "recoverable" } else { "ok" };
        obj.insert("status".into(), json!(status));
        obj.insert("first_index".into(), json!(first));
        obj.insert("last_index".into(), json!(last));
    }
    Ok(value)
}

fn error_json(e: &LogError) -> serde_json::Value {
    let (kind, file, offset) = match e {
        LogError::Corrupt { file, offset, .. } => ("corrupt", Some(file.as_path()), Some(*offset)),
        LogError::Io { path, .. } => ("io", Some(path.as_path()), None),
        _ => ("other", None, None),
    };
    json!({ "error": e.to_string(), "kind": kind, "file": file, "offset": offset })
}

fn or_dash(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn write_report(out: &mut impl Write, report: &VerifyReport) -> io::Result<()> {
    let status = if report.torn_tail.is_some() { "recoverable" } else { "ok" };
    writeln!(out, "log {}: {status}", report.dir.display())?;
    writeln!(out, "segments: {}, records: {}, bytes: {}", report.segments.len(), report.records, report.bytes)?;
    for s in &report.segments {
        writeln!(out, "  {}  records {}  bytes {} of {}", file_name(&s.file), s.records, s.bytes, s.capacity)?;
    }
    writeln!(out, "groups: {}", report.groups.len())?;
    for g in &report.groups {
        writeln!(
            out,
            "  group {}  first {}  last {}  purged {}  committed {}",
            g.group,
            or_dash(g.first_index),
            or_dash(g.last_index),
            or_dash(g.purged_index),
            or_dash(g.committed_index)
        )?;
    }
    let (first, last) = index_range(report);
    writeln!(out, "index: first {}, last {}", or_dash(first), or_dash(last))?;
    if let Some(t) = &report.torn_tail {
        writeln!(out, "recoverable: torn tail at {} offset {} (cut on next open): {}", t.file.display(), t.offset, t.reason)?;
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

fn run_dump(args: &DumpArgs) -> anyhow::Result<ExitCode> {
    if let (Some(from), Some(to)) = (args.from, args.to)
        && from > to
    {
        bail!("--from {from} is above --to {to}");
    }
    if !args.dir.is_dir() {
        bail!("{}: not a directory", args.dir.display());
    }
    let mut out = BufWriter::new(io::stdout().lock());
    let result = verify::dump_dir(&args.dir, args.from, args.to, |line| write_dump_line(&mut out, line, args.json));
    let result = result.and_then(|bad| out.flush().map(|()| bad).map_err(|e| LogError::Io { path: "<stdout>".into(), source: e }));
    match result {
        Ok(0) => Ok(ExitCode::SUCCESS),
        Ok(bad) => {
            eprintln!("{}: {bad} bad stretch(es) found", args.dir.display());
            Ok(ExitCode::from(EXIT_DAMAGED))
        }
        // The reader went away (`raftmq log dump DIR | head`): not an error of the log.
        Err(LogError::Io { source, .. }) if source.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(exit_code_of(&e)))
        }
    }
}

fn kind_name(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Entry => "entry",
        RecordKind::Truncate => "truncate",
        RecordKind::Purge => "purge",
        RecordKind::Vote => "vote",
        RecordKind::Committed => "committed",
        RecordKind::Rewrite => "rewrite",
    }
}

/// One record per line: `key: value` pairs in the style of Kafka's `kafka-dump-log`, or JSON.
fn write_dump_line(out: &mut impl Write, line: &DumpLine, json: bool) -> io::Result<()> {
    if json {
        return crate::cli::write_json_line(out, line);
    }
    writeln!(
        out,
        "file: {} offset: {} kind: {} group: {} index: {} term: {} size: {} status: {}",
        line.file,
        line.offset,
        line.kind.map_or("-", kind_name),
        or_dash(line.group),
        or_dash(line.index),
        or_dash(line.term),
        line.size,
        line.status
    )
}

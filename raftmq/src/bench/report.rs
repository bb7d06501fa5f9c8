//! How `bench log` prints: text or one JSON object for a single run; a Markdown table (and JSON
//! lines) for the matrix. The ratios are those the performance targets are stated in: the
//! engine's records/s over the raw appending fdatasync ops/s, and its p99 over the raw p99.

use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;
use serde_json::json;

use super::engine_load::LoadResult;
use super::raw_sync::RawSyncResult;

/// The raw probes for one write size.
#[derive(Debug, Clone, Serialize)]
pub struct RawPair {
    pub append: RawSyncResult,
    pub overwrite: RawSyncResult,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ratios {
    /// Engine records/s ÷ raw appending fdatasync ops/s (the targets' ratio).
    pub rate_vs_raw_append: f64,
    /// Engine p99 ÷ raw appending p99 (the targets' ratio).
    pub p99_vs_raw_append: f64,
    pub rate_vs_raw_overwrite: f64,
    pub p99_vs_raw_overwrite: f64,
}

/// One engine run with its ratios to the raw probes of the same write size.
#[derive(Debug, Clone, Serialize)]
pub struct CellReport {
    #[serde(flatten)]
    pub load: LoadResult,
    pub ratios: Ratios,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

impl CellReport {
    pub fn new(load: LoadResult, raw: &RawPair) -> Self {
        let ratios = Ratios {
            rate_vs_raw_append: ratio(load.records_per_sec, raw.append.ops_per_sec),
            p99_vs_raw_append: ratio(load.latency.p99_us, raw.append.latency.p99_us),
            rate_vs_raw_overwrite: ratio(load.records_per_sec, raw.overwrite.ops_per_sec),
            p99_vs_raw_overwrite: ratio(load.latency.p99_us, raw.overwrite.latency.p99_us),
        };
        Self { load, ratios }
    }
}

fn ms(us: f64) -> String {
    format!("{:.3}", us / 1000.0)
}

fn size_label(bytes: u64) -> String {
    if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) { format!("{} KiB", bytes >> 10) } else { format!("{bytes} B") }
}

fn write_raw(out: &mut dyn Write, r: &RawSyncResult) -> io::Result<()> {
    writeln!(
        out,
        "  {:<26} {:>8.0} ops/s  p50 {} ms  p99 {} ms  ({} ops in {:.1} s)",
        r.mode.describe(),
        r.ops_per_sec,
        ms(r.latency.p50_us),
        ms(r.latency.p99_us),
        r.ops,
        r.seconds
    )
}

pub fn print_single(dir: &Path, raw: &RawPair, cell: &CellReport, json: bool) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    if json {
        writeln!(out, "{}", json!({ "dir": dir, "raw_sync": raw, "engine": cell }))?;
        return Ok(());
    }
    let (l, r) = (&cell.load, &cell.ratios);
    writeln!(out, "raw pwrite + fdatasync of {}, in {}:", size_label(raw.append.size), dir.display())?;
    write_raw(&mut out, &raw.append)?;
    write_raw(&mut out, &raw.overwrite)?;
    writeln!(out, "log engine: {} appenders, {} groups, {} records, closed loop:", l.appenders, l.groups, size_label(l.size))?;
    writeln!(out, "  {} records in {:.2} s: {:.0} records/s, {:.2} MiB/s", l.records, l.seconds, l.records_per_sec, l.mib_per_sec)?;
    writeln!(
        out,
        "  append to durable: p50 {} ms  p99 {} ms  p999 {} ms  max {} ms",
        ms(l.latency.p50_us),
        ms(l.latency.p99_us),
        ms(l.latency.p999_us),
        ms(l.latency.max_us)
    )?;
    writeln!(out, "  sync rounds {}, {:.2} records per round", l.sync_rounds, l.records_per_sync_round)?;
    writeln!(out, "ratios: records/s / raw append ops/s = {:.2}; p99 / raw append p99 = {:.2}", r.rate_vs_raw_append, r.p99_vs_raw_append)?;
    writeln!(out, "  (against raw overwrite: {:.2} and {:.2})", r.rate_vs_raw_overwrite, r.p99_vs_raw_overwrite)?;
    Ok(())
}

/// How far apart two raw rates may be before the run counts as disturbed.
const DRIFT_FACTOR_MAX: f64 = 2.0;

pub fn print_matrix(dir: &Path, raw_start: &[RawPair], raw_end: &[RawPair], cells: &[CellReport], json: bool) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    if json {
        let phases = [("start", raw_start), ("end", raw_end)];
        for (phase, pairs) in phases {
            for p in pairs {
                for r in [&p.append, &p.overwrite] {
                    writeln!(stdout, "{}", json!({ "type": "raw_sync", "phase": phase, "dir": dir, "result": r }))?;
                }
            }
        }
        for c in cells {
            writeln!(stdout, "{}", json!({ "type": "engine", "result": c }))?;
        }
    }
    // With --json, stdout carries only JSON; the table goes to stderr.
    let mut stderr = io::stderr().lock();
    let table: &mut dyn Write = if json { &mut stderr } else { &mut stdout };
    write_matrix_table(table, dir, raw_start, raw_end, cells)?;
    Ok(())
}

fn write_matrix_table(out: &mut dyn Write, dir: &Path, raw_start: &[RawPair], raw_end: &[RawPair], cells: &[CellReport]) -> io::Result<()> {
    writeln!(out, "Raw `pwrite` + `fdatasync` in {}:\n", dir.display())?;
    writeln!(out, "| size | mode | phase | ops/s | p50 ms | p99 ms |")?;
    writeln!(out, "|---|---|---|---:|---:|---:|")?;
    for (phase, pairs) in [("start", raw_start), ("end", raw_end)] {
        for p in pairs {
            for r in [&p.append, &p.overwrite] {
                writeln!(
                    out,
                    "| {} | {} | {phase} | {:.0} | {} | {} |",
                    size_label(r.size),
                    r.mode.describe(),
                    r.ops_per_sec,
                    ms(r.latency.p50_us),
                    ms(r.latency.p99_us)
                )?;
            }
        }
    }
    writeln!(out, "\nLog engine, closed loop (latency: append call to durable callback):\n")?;
    writeln!(
        out,
        "| appenders | size | groups | records | records/s | MiB/s | p50 ms | p99 ms | p999 ms | max ms | sync rounds | records/round | rate ÷ raw | p99 ÷ raw |"
    )?;
    writeln!(out, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for c in cells {
        let l = &c.load;
        writeln!(
            out,
            "| {} | {} | {} | {} | {:.0} | {:.2} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} |",
            l.appenders,
            size_label(l.size),
            l.groups,
            l.records,
            l.records_per_sec,
            l.mib_per_sec,
            ms(l.latency.p50_us),
            ms(l.latency.p99_us),
            ms(l.latency.p999_us),
            ms(l.latency.max_us),
            l.sync_rounds,
            l.records_per_sync_round,
            c.ratios.rate_vs_raw_append,
            c.ratios.p99_vs_raw_append
        )?;
    }
    writeln!(out, "\n\"÷ raw\": against raw appending fdatasync of the same size at the start of the run.")?;
    for (s, e) in raw_start.iter().zip(raw_end) {
        for (a, b) in [(&s.append, &e.append), (&s.overwrite, &e.overwrite)] {
            let drift = ratio(a.ops_per_sec.max(b.ops_per_sec), a.ops_per_sec.min(b.ops_per_sec));
            if drift.is_nan() || drift > DRIFT_FACTOR_MAX {
                writeln!(
                    out,
                    "warning: raw {} of {} moved from {:.0} to {:.0} ops/s during the run: the machine was not quiet",
                    a.mode.describe(),
                    size_label(a.size),
                    a.ops_per_sec,
                    b.ops_per_sec
                )?;
            }
        }
    }
    Ok(())
}

//! `raftmq jepsen …`: fault campaigns against a real cluster, and their checker.
//!
//! `check DIR` checks a stored run: `DIR/history.jsonl` (every operation), `DIR/final.jsonl`
//! (what every replica held at the end) and, if present, `DIR/faults.jsonl` (the nemesis's
//! fault windows). It writes `DIR/results.json` and exits 1 when it finds an anomaly.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use jepsen::history::read_jsonl;
use jepsen::{CheckResult, Event, FaultWindow, FinalRead, WindowStats};
use serde::Serialize;

#[derive(Subcommand)]
pub enum JepsenCommand {
    /// Check a stored run again: reads DIR/history.jsonl, DIR/final.jsonl and DIR/faults.jsonl,
    /// writes DIR/results.json. Exits 1 if any anomaly is found.
    Check(CheckArgs),
}

#[derive(Args)]
pub struct CheckArgs {
    /// The run's directory.
    dir: PathBuf,
    /// Print results.json instead of the summary.
    #[arg(long)]
    json: bool,
}

/// Exit code when the history shows an anomaly.
const EXIT_ANOMALY: u8 = 1;

pub fn run(cmd: JepsenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        JepsenCommand::Check(args) => check(&args),
    }
}

/// What `results.json` holds.
#[derive(Serialize)]
struct Results<'a> {
    valid: bool,
    check: &'a CheckResult,
    anomaly_counts: std::collections::BTreeMap<jepsen::AnomalyClass, usize>,
    faults: &'a [WindowStats],
}

fn read<T: for<'de> serde::Deserialize<'de>>(dir: &Path, name: &'static str, required: bool) -> anyhow::Result<Vec<T>> {
    let path = dir.join(name);
    match File::open(&path) {
        Ok(f) => Ok(read_jsonl(BufReader::new(f), name)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("opening {}", path.display())),
    }
}

fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let events: Vec<Event> = read(&args.dir, "history.jsonl", true)?;
    let finals: Vec<FinalRead> = read(&args.dir, "final.jsonl", true)?;
    let windows: Vec<FaultWindow> = read(&args.dir, "faults.jsonl", false)?;
    let result = jepsen::check(&events, &finals);
    let faults = jepsen::by_window(&events, &windows);
    let results = Results { valid: result.valid(), check: &result, anomaly_counts: result.counts(), faults: &faults };
    let text = serde_json::to_string_pretty(&results)?;
    let path = args.dir.join("results.json");
    std::fs::write(&path, format!("{text}\n")).with_context(|| format!("writing {}", path.display()))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{text}")?;
    } else {
        write_summary(&mut out, &result, &faults)?;
    }
    Ok(if result.valid() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_ANOMALY) })
}

fn write_summary(out: &mut impl Write, r: &CheckResult, faults: &[WindowStats]) -> std::io::Result<()> {
    for (name, o) in [("send", r.sends), ("poll", r.polls), ("commit", r.commits), ("read offset", r.offset_reads)] {
        writeln!(out, "{name:<12} {:>8} invoked {:>8} ok {:>6} fail {:>6} unknown", o.invoked, o.ok, o.fail, o.info)?;
    }
    if r.acked_trimmed > 0 {
        writeln!(out, "{} acknowledged sends below a start offset (removed by retention) not checked", r.acked_trimmed)?;
    }
    for w in faults {
        let recovery = w.recovery_ns.map_or("never".to_string(), |ns| format!("{:.3} s", ns as f64 / 1e9));
        writeln!(out, "fault {:?}: availability {:.3} of {} ops, recovered after {recovery}", w.name, w.availability, w.invoked)?;
    }
    for a in &r.anomalies {
        writeln!(out, "ANOMALY {:?}: {} (events {:?})", a.class, a.detail, a.events)?;
    }
    if r.valid() {
        writeln!(out, "valid: no anomalies")
    } else {
        let counts: Vec<String> = r.counts().into_iter().filter(|(_, n)| *n > 0).map(|(c, n)| format!("{c:?} {n}")).collect();
        writeln!(out, "INVALID: {}", counts.join(", "))
    }
}

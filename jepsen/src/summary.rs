//! The results of several stored runs (a campaign) as two Markdown tables: one row per run, and
//! one per kind of fault over all runs. `raftmq jepsen summary DIR...` prints them; the results
//! table of docs/jepsen.md is its output.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::availability::WindowStats;
use crate::checker::CheckResult;

#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a run's results: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
}

/// The parts of `results.json` a summary needs.
#[derive(Debug, Clone, Deserialize)]
pub struct StoredResults {
    pub valid: bool,
    #[serde(default)]
    pub unhealthy: Vec<String>,
    pub check: CheckResult,
    pub anomaly_counts: BTreeMap<String, usize>,
    pub faults: Vec<WindowStats>,
}

/// One stored run.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The run's seed, from `run.json`, when it could be read.
    pub seed: Option<u64>,
    pub dir: PathBuf,
    pub results: StoredResults,
}

fn read(path: PathBuf) -> Result<String, SummaryError> {
    std::fs::read_to_string(&path).map_err(|source| SummaryError::Read { path, source })
}

/// Reads the run stored in `dir`.
pub fn load(dir: &Path) -> Result<RunSummary, SummaryError> {
    let path = dir.join("results.json");
    let results = serde_json::from_str(&read(path.clone())?).map_err(|source| SummaryError::Parse { path, source })?;
    let seed = read(dir.join("run.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|run| run.get("seed")?.as_u64());
    Ok(RunSummary { seed, dir: dir.to_path_buf(), results })
}

/// The kind of fault a window was: its recorded nemesis, or for runs stored before that was
/// recorded, read off the description the nemesis gave it.
pub fn fault_kind(w: &WindowStats) -> String {
    if let Some(k) = w.kind {
        return k.name().to_string();
    }
    let n = w.name.as_str();
    if let Some(ids) = n.strip_prefix("kill -9 broker ") {
        return if ids.contains(',') { "kill-majority" } else { "kill or kill-leader" }.to_string();
    }
    let kind = DESCRIBED_KINDS.iter().find(|(described, _)| described.matches(n)).map_or(n, |(_, kind)| kind);
    kind.to_string()
}

/// How a nemesis described each kind of fault before its kind was recorded.
const DESCRIBED_KINDS: [(Described, &str); 9] = [
    (Described::StartsWith("power loss"), "power-loss"),
    (Described::StartsWith("pause broker"), "pause"),
    (Described::StartsWith("isolate broker"), "partition-leader"),
    (Described::Contains("bridged by"), "partition-bridge"),
    (Described::Contains("hears nothing"), "partition-one-way"),
    (Described::StartsWith("partition {"), "partition-halves"),
    (Described::StartsWith("fsync of broker"), "slow-fsync"),
    (Described::StartsWith("packets of broker"), "link-delay"),
    (Described::Contains("packets lost"), "link-loss"),
];

enum Described {
    StartsWith(&'static str),
    Contains(&'static str),
}

impl Described {
    fn matches(&self, description: &str) -> bool {
        match self {
            Described::StartsWith(p) => description.starts_with(p),
            Described::Contains(p) => description.contains(p),
        }
    }
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Both tables, in Markdown.
pub fn markdown(runs: &[RunSummary]) -> String {
    let mut out = String::new();
    out.push_str(
        "| seed | operations | sends | acknowledged | unknown outcome | faults | anomalies | availability during faults | max recovery |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    // kind → (times, completed, ok, recoveries in seconds)
    let mut by_kind: BTreeMap<String, (usize, u64, u64, Vec<f64>)> = BTreeMap::new();
    for run in runs {
        let r = &run.results;
        let c = &r.check;
        let operations = c.sends.invoked + c.polls.invoked + c.commits.invoked + c.offset_reads.invoked;
        let completed: u64 = r.faults.iter().map(|w| w.completed).sum();
        let ok: u64 = r.faults.iter().map(|w| w.ok).sum();
        let availability = if completed == 0 { 1.0 } else { ok as f64 / completed as f64 };
        let max_recovery = r.faults.iter().filter_map(|w| w.recovery_ns).max().map_or("none".into(), |ns| format!("{:.1} s", seconds(ns)));
        let anomalies: usize = r.anomaly_counts.values().sum();
        let mut anomalies = anomalies.to_string();
        if !c.invalid.is_empty() {
            let _ = write!(anomalies, " (invalid: {})", c.invalid.join("; "));
        }
        if !r.unhealthy.is_empty() {
            let _ = write!(anomalies, " (unhealthy: {})", r.unhealthy.join("; "));
        }
        let seed = run.seed.map_or_else(|| run.dir.display().to_string(), |s| s.to_string());
        let _ = writeln!(
            out,
            "| {seed} | {} | {} | {} | {} | {} | {anomalies} | {availability:.3} | {max_recovery} |",
            thousands(operations),
            thousands(c.sends.invoked),
            thousands(c.sends.ok),
            thousands(c.sends.info),
            r.faults.len(),
        );
        for w in &r.faults {
            let k = by_kind.entry(fault_kind(w)).or_default();
            k.0 += 1;
            k.1 += w.completed;
            k.2 += w.ok;
            k.3.extend(w.recovery_ns.map(seconds));
        }
    }
    out.push_str("\n| fault | times | availability while in force | median recovery | max recovery |\n|---|---|---|---|---|\n");
    for (kind, (times, completed, ok, mut recoveries)) in by_kind {
        recoveries.sort_by(f64::total_cmp);
        let availability = if completed == 0 { 1.0 } else { ok as f64 / completed as f64 };
        let (median, max) = match recoveries.last() {
            Some(max) => (format!("{:.2} s", recoveries[recoveries.len() / 2]), format!("{max:.2} s")),
            None => ("none".into(), "none".into()),
        };
        let _ = writeln!(out, "| {kind} | {times} | {availability:.3} | {median} | {max} |");
    }
    out
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Outcomes;
    use crate::nemesis::NemesisKind;

    fn window(name: &str, kind: Option<NemesisKind>, completed: u64, ok: u64, recovery_ms: Option<u64>) -> WindowStats {
        let availability = if completed == 0 { 1.0 } else { ok as f64 / completed as f64 };
        WindowStats {
            name: name.into(),
            kind,
            start_ns: 0,
            end_ns: 1,
            completed,
            ok,
            availability,
            recovery_ns: recovery_ms.map(|ms| ms * 1_000_000),
        }
    }

    fn run(seed: u64, faults: Vec<WindowStats>, anomalies: usize) -> RunSummary {
        let outcomes = |invoked, ok, info| Outcomes { invoked, ok, fail: invoked - ok - info, info };
        RunSummary {
            seed: Some(seed),
            dir: PathBuf::from(format!("seed-{seed}")),
            results: StoredResults {
                valid: anomalies == 0,
                unhealthy: vec![],
                check: CheckResult {
                    sends: outcomes(120_000, 70_000, 1_500),
                    polls: outcomes(50_000, 50_000, 0),
                    commits: outcomes(10_000, 9_990, 10),
                    offset_reads: outcomes(1_000, 900, 0),
                    ..Default::default()
                },
                anomaly_counts: [("lost-write".to_string(), anomalies)].into(),
                faults,
            },
        }
    }

    #[test]
    fn a_row_per_run_and_a_row_per_kind_of_fault_over_all_runs() {
        let runs = vec![
            run(
                1,
                vec![
                    window("kill -9 broker 2", Some(NemesisKind::Kill), 100, 50, Some(300)),
                    window("pause broker 1", None, 10, 10, Some(100)),
                ],
                0,
            ),
            run(
                2,
                vec![
                    window("kill -9 broker 3", Some(NemesisKind::Kill), 300, 250, Some(1_000)),
                    window("kill -9 broker 1,2,3", None, 10, 0, None),
                ],
                2,
            ),
        ];
        let md = markdown(&runs);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines[2], "| 1 | 181,000 | 120,000 | 70,000 | 1,500 | 2 | 0 | 0.545 | 0.3 s |", "{md}");
        assert_eq!(lines[3], "| 2 | 181,000 | 120,000 | 70,000 | 1,500 | 2 | 2 | 0.806 | 1.0 s |", "{md}");
        // Kill over both runs: 300 of 400 ok; recoveries 0.3 s and 1.0 s.
        assert!(md.contains("| kill | 2 | 0.750 | 1.00 s | 1.00 s |"), "{md}");
        // Runs stored without a kind are classified by their description.
        assert!(md.contains("| kill-majority | 1 | 0.000 | none | none |"), "{md}");
        assert!(md.contains("| pause | 1 | 1.000 | 0.10 s | 0.10 s |"), "{md}");
    }

    #[test]
    fn every_nemesis_description_maps_back_to_its_kind() {
        let cases = [
            ("power loss of broker 1,2,3", "power-loss"),
            ("kill -9 broker 2", "kill or kill-leader"),
            ("kill -9 broker 1,2,3", "kill-majority"),
            ("pause broker 4", "pause"),
            ("isolate broker 2", "partition-leader"),
            ("partition {1,2} | {4,5} bridged by broker 3", "partition-bridge"),
            ("broker 2 hears nothing from 1,3", "partition-one-way"),
            ("partition {1,2} | {3,4,5}", "partition-halves"),
            ("fsync of broker 1 slowed by 120 ms", "slow-fsync"),
            ("packets of broker 3 held 88 ms", "link-delay"),
            ("14 % of broker 4's packets lost", "link-loss"),
        ];
        for (name, kind) in cases {
            assert_eq!(fault_kind(&window(name, None, 0, 0, None)), kind, "{name}");
        }
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}

//! `raftmq jepsen …`: fault campaigns against a real cluster, and their checker.
//!
//! `run` starts a local cluster of broker processes (this binary), each on its own loopback
//! host, runs the workload under the chosen nemeses, heals, reads everything back and checks
//! the history; it exits 1 when it finds an anomaly, and 3 when the run is invalid (no anomaly,
//! but a queue lacks a final read from one of its replicas, or the cluster did not recover).
//!
//! `check DIR` checks a stored run: `DIR/history.jsonl` (every operation), `DIR/final.jsonl`
//! (what every replica held at the end), `DIR/replicas.jsonl` (each queue's replicas, all of
//! which must have been read) and, if present, `DIR/faults.jsonl` (the nemesis's fault
//! windows). It writes `DIR/results.json` and exits as `run` does.
//!
//! `summary DIR...` prints the results of several stored runs as Markdown tables.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use jepsen::checker::Verdict;
use jepsen::history::QueueReplicas;
use jepsen::history::read_jsonl;
use jepsen::nemesis::NemesisKind;
use jepsen::run::{Results, RunOptions, WorkloadKind};
use jepsen::workload::Routing;
use jepsen::{CheckResult, Event, FaultWindow, FinalRead, WindowStats};

use std::time::Duration;

#[derive(Subcommand)]
pub enum JepsenCommand {
    /// Run a fault campaign on a local cluster and check it. Exits 1 if any anomaly is found, 3
    /// if the run is invalid (a replica's final read is missing, or the cluster did not recover).
    Run(RunArgs),
    /// Check a stored run again: reads DIR/history.jsonl, DIR/final.jsonl and DIR/faults.jsonl,
    /// writes DIR/results.json. Exits 1 if any anomaly is found, 3 if the run is invalid.
    Check(CheckArgs),
    /// Write DIR/index.html, the run's report (self-contained: open it in any browser).
    Report(ReportArgs),
    /// Summarize stored runs (a campaign) as Markdown tables: a row per run, and availability
    /// and recovery per kind of fault over all of them. Exits 1 if any run was not valid.
    Summary(SummaryArgs),
}

#[derive(Args)]
pub struct RunArgs {
    #[arg(long, default_value_t = 5)]
    brokers: usize,
    /// How long the workload runs: seconds, or with a unit (`90s`, `10m`).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    time: Duration,
    /// Comma-separated faults: kill, kill-leader, kill-majority, pause, power-loss,
    /// partition-halves, partition-leader, partition-bridge, partition-one-way, slow-fsync,
    /// link-delay, link-loss, torn-write, store-loss (the partitions and links need root and
    /// iptables).
    #[arg(long, default_value = "kill,kill-leader,pause", value_delimiter = ',')]
    nemesis: Vec<NemesisKind>,
    #[arg(long, value_enum, default_value = "queue")]
    workload: WorkloadArg,
    /// How producers pick a broker for each send: `random` (a follower forwards to the leader)
    /// or `leader` (each queue's leader as `DescribeTopic` reports it, as RocketMQ's clients do).
    #[arg(long, value_enum, default_value = "random")]
    routing: RoutingArg,
    /// Sends per second over all producers.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    #[arg(long, default_value_t = 8)]
    producers: u64,
    #[arg(long, default_value_t = 4)]
    queues: u32,
    /// Seeds the fault schedule and the clients' choices: the same seed replays the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The run's directory [default: jepsen-runs/seed-SEED-UNIXTIME].
    #[arg(long)]
    out: Option<PathBuf>,
    /// TOML appended to every broker's configuration; the default makes Raft elections take
    /// about a second, so faults are short.
    #[arg(long, default_value = FAST_RAFT)]
    broker_config: String,
    /// Print results.json instead of the summary.
    #[arg(long)]
    json: bool,
    /// TEST ONLY: run brokers that acknowledge sends before fdatasync, syncing every this many
    /// ms, to see the checker catch the lost writes (with the power-loss nemesis).
    #[arg(long, default_value_t = 0, hide = true)]
    unsafe_ack_before_fsync_ms: u64,
}

/// Raft timing for runs on one machine: a dead leader is replaced within about a second.
const FAST_RAFT: &str = "[raft]\nheartbeat_interval_ms = 100\nelection_timeout_min_ms = 500\nelection_timeout_max_ms = 1000\n";

#[derive(Clone, Copy, clap::ValueEnum)]
enum WorkloadArg {
    Queue,
    Fifo,
    Rocketmq,
    RocketmqFifo,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RoutingArg {
    Random,
    Leader,
}

/// The command that replays `args`' run.
fn replay_command(args: &RunArgs) -> String {
    let nemeses: Vec<&str> = args.nemesis.iter().map(|k| k.name()).collect();
    let workload = match args.workload {
        WorkloadArg::Queue => "queue",
        WorkloadArg::Fifo => "fifo",
        WorkloadArg::Rocketmq => "rocketmq",
        WorkloadArg::RocketmqFifo => "rocketmq-fifo",
    };
    let routing = match args.routing {
        RoutingArg::Random => "random",
        RoutingArg::Leader => "leader",
    };
    format!(
        "raftmq jepsen run --brokers {} --time {}ms --nemesis {} --workload {workload} --routing {routing} --rate {} --producers {} --queues {} --seed {}",
        args.brokers,
        args.time.as_millis(),
        nemeses.join(","),
        args.rate,
        args.producers,
        args.queues,
        args.seed
    )
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, ""), |i| s.split_at(i));
    let n: u64 = number.parse().map_err(|_| format!("{s:?} is not a duration (e.g. 120, 90s, 10m)"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "ms" => Ok(Duration::from_millis(n)),
        _ => Err(format!("unknown unit {unit:?} in {s:?} (s, m or ms)")),
    }
}

#[derive(Args)]
pub struct ReportArgs {
    /// The run's directory.
    dir: PathBuf,
}

#[derive(Args)]
pub struct SummaryArgs {
    /// The runs' directories.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
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
/// Exit code when the run is invalid without an anomaly: the history could not be checked in
/// full (a queue lacks a final read from one of its replicas), or the cluster did not recover.
const EXIT_INVALID: u8 = 3;

fn exit_code(verdict: Verdict) -> ExitCode {
    match verdict {
        Verdict::Passed => ExitCode::SUCCESS,
        Verdict::Anomalies => ExitCode::from(EXIT_ANOMALY),
        Verdict::Invalid => ExitCode::from(EXIT_INVALID),
    }
}

pub fn run(cmd: JepsenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        JepsenCommand::Run(args) => run_campaign(&args),
        JepsenCommand::Check(args) => check(&args),
        JepsenCommand::Report(args) => report(&args),
        JepsenCommand::Summary(args) => summary(&args),
    }
}

fn summary(args: &SummaryArgs) -> anyhow::Result<ExitCode> {
    let runs = args.dirs.iter().map(|d| jepsen::summary::load(d)).collect::<Result<Vec<_>, _>>()?;
    std::io::Write::write_all(&mut std::io::stdout().lock(), jepsen::summary::markdown(&runs).as_bytes())?;
    Ok(if runs.iter().all(|r| r.results.valid) { ExitCode::SUCCESS } else { ExitCode::from(EXIT_ANOMALY) })
}

/// A stored run, checked again.
struct StoredRun {
    events: Vec<Event>,
    windows: Vec<FaultWindow>,
    result: CheckResult,
    faults: Vec<WindowStats>,
}

fn load_and_check(dir: &Path) -> anyhow::Result<StoredRun> {
    let events: Vec<Event> = read(dir, "history.jsonl", true)?;
    let finals: Vec<FinalRead> = read(dir, "final.jsonl", true)?;
    // A run stored before replicas.jsonl existed checks as invalid: nothing shows that every
    // replica was read.
    let replicas: Vec<QueueReplicas> = read(dir, "replicas.jsonl", false)?;
    let windows: Vec<FaultWindow> = read(dir, "faults.jsonl", false)?;
    let result = jepsen::check(&events, &finals, &replicas);
    let faults = jepsen::by_window(&events, &windows);
    Ok(StoredRun { events, windows, result, faults })
}

fn report(args: &ReportArgs) -> anyhow::Result<ExitCode> {
    let StoredRun { events, windows, result, faults } = load_and_check(&args.dir)?;
    // The replay command, when the run recorded its options.
    let run: Option<serde_json::Value> =
        std::fs::read_to_string(args.dir.join("run.json")).ok().and_then(|t| serde_json::from_str(&t).ok());
    let command = run.as_ref().and_then(|r| r["replay"].as_str().map(String::from));
    let page = jepsen::report::render(&jepsen::report::ReportInput {
        events: &events,
        windows: &windows,
        faults: &faults,
        check: &result,
        command: command.as_deref(),
    });
    let path = args.dir.join("index.html");
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    writeln!(std::io::stdout().lock(), "{}", path.display())?;
    Ok(ExitCode::SUCCESS)
}

fn run_campaign(args: &RunArgs) -> anyhow::Result<ExitCode> {
    if args.brokers < 3 {
        anyhow::bail!("--brokers {}: a campaign needs at least 3 brokers (replication factor 3)", args.brokers);
    }
    if args.rate.is_nan() || args.rate <= 0.0 {
        anyhow::bail!("--rate must be above 0");
    }
    let dir = match &args.out {
        Some(d) => d.clone(),
        None => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            PathBuf::from("jepsen-runs").join(format!("seed-{}-{now}", args.seed))
        }
    };
    let options = RunOptions {
        brokers: args.brokers,
        time: args.time,
        nemeses: args.nemesis.clone(),
        workload: match args.workload {
            WorkloadArg::Queue => WorkloadKind::Queue,
            WorkloadArg::Fifo => WorkloadKind::Fifo,
            WorkloadArg::Rocketmq => WorkloadKind::Rocketmq,
            WorkloadArg::RocketmqFifo => WorkloadKind::RocketmqFifo,
        },
        routing: match args.routing {
            RoutingArg::Random => Routing::Random,
            RoutingArg::Leader => Routing::Leader,
        },
        rate: args.rate,
        producers: args.producers.max(1),
        queues: args.queues.max(1),
        seed: args.seed,
        dir: dir.clone(),
        binary: std::env::current_exe().context("locating the raftmq binary")?,
        extra_config: args.broker_config.clone(),
        unsafe_ack_before_fsync_ms: args.unsafe_ack_before_fsync_ms,
        replay: replay_command(args),
        schedule_fault_min: Duration::from_secs(3),
        schedule_fault_max: Duration::from_secs(8),
        schedule_quiet_min: Duration::from_secs(3),
        schedule_quiet_max: Duration::from_secs(6),
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    // Ctrl-C or SIGTERM drops the run: its cluster kills the brokers and its firewall removes
    // its rules. (A run started in the background of a script ignores SIGINT: SIGTERM it.)
    let report = runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("handling SIGTERM")?;
        tokio::select! {
            report = jepsen::run::run(&options) => Ok(report?),
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; the cluster was stopped and its firewall rules removed")),
            _ = term.recv() => Err(anyhow::anyhow!("terminated; the cluster was stopped and its firewall rules removed")),
        }
    })?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let text = std::fs::read_to_string(dir.join("results.json")).context("reading results.json")?;
        write!(out, "{text}")?;
    } else {
        writeln!(out, "run directory: {}", dir.display())?;
        writeln!(out, "replay: {}", replay_command(args))?;
        write_summary(&mut out, &report.check, &report.faults, &report.unhealthy)?;
    }
    Ok(exit_code(report.verdict()))
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
    let StoredRun { result, faults, .. } = load_and_check(&args.dir)?;
    // Whether the cluster came back healthy only the run could see: keep what it recorded.
    let path = args.dir.join("results.json");
    let earlier: Option<serde_json::Value> = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok());
    let unhealthy: Vec<String> = earlier
        .as_ref()
        .and_then(|r| r["unhealthy"].as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    let results = Results::new(&result, &faults, &unhealthy);
    let text = results.to_json();
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        write!(out, "{text}")?;
    } else {
        write_summary(&mut out, &result, &faults, &unhealthy)?;
    }
    Ok(exit_code(results.verdict))
}

fn write_summary(out: &mut impl Write, r: &CheckResult, faults: &[WindowStats], unhealthy: &[String]) -> std::io::Result<()> {
    for (name, o) in [
        ("send", r.sends),
        ("poll", r.polls),
        ("commit", r.commits),
        ("read offset", r.offset_reads),
        ("receive", r.receives),
        ("ack", r.acks),
    ] {
        writeln!(out, "{name:<12} {:>8} invoked {:>8} ok {:>6} fail {:>6} unknown", o.invoked, o.ok, o.fail, o.info)?;
    }
    if r.acked_trimmed > 0 {
        writeln!(out, "{} acknowledged sends below a start offset (removed by retention) not checked", r.acked_trimmed)?;
    }
    for w in faults {
        let recovery = w.recovery_ns.map_or("never".to_string(), |ns| format!("{:.3} s", ns as f64 / 1e9));
        writeln!(out, "fault {:?}: availability {:.3} of {} ops, recovered after {recovery}", w.name, w.availability, w.completed)?;
    }
    for a in &r.anomalies {
        writeln!(out, "ANOMALY {:?}: {} (events {:?})", a.class, a.detail, a.events)?;
    }
    for reason in unhealthy {
        writeln!(out, "UNHEALTHY after the heal: {reason}")?;
    }
    for reason in &r.invalid {
        writeln!(out, "INCOMPLETE: {reason}")?;
    }
    match r.verdict() {
        Verdict::Anomalies => {
            let counts: Vec<String> = r.counts().into_iter().filter(|(_, n)| *n > 0).map(|(c, n)| format!("{c:?} {n}")).collect();
            writeln!(out, "INVALID: anomalies: {}", counts.join(", "))
        }
        Verdict::Invalid => writeln!(out, "INVALID: no anomaly in what could be checked, but the history is incomplete"),
        Verdict::Passed if !unhealthy.is_empty() => {
            writeln!(out, "INVALID: no anomaly in what could be read, but the cluster did not recover")
        }
        Verdict::Passed => writeln!(out, "valid: no anomalies"),
    }
}

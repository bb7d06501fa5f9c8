//! `raftmq dev`: a local cluster of N brokers, each a child process of this supervisor.
//!
//! The first run writes `DIR/broker-N/broker.toml` for each broker; later runs check that the
//! directory holds the same cluster (broker count, ports) and start it on its data. The
//! supervisor waits until every broker answers ClusterStatus listing all of them, prints the
//! endpoints, and stops the brokers on Ctrl-C or SIGTERM (SIGTERM to each, SIGKILL after 10 s).
//! The brokers also get SIGTERM from the kernel if the supervisor dies without stopping them.
//!
//! A broker that dies while the cluster runs is reported with the end of its log, and the others
//! keep running: a local cluster is where one kills a broker on purpose to watch a failover, so
//! one exit must not take the rest down. The supervisor exits non-zero when none is left.

mod plan;
mod process;
mod ready;
mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use broker::options::BrokerOptions;
use clap::Args;
use tokio::signal::unix::{Signal, SignalKind, signal};

use plan::{BROKERS_MAX, BrokerPlan, ClusterPlan};
use process::{BrokerProcess, Stopped};
use report::{BrokerReport, ClusterReport};

#[derive(Args)]
pub struct DevArgs {
    /// Brokers to run, 1 to 100; the first three (all, if fewer) are the metadata group's voters.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=BROKERS_MAX))]
    brokers: u64,
    /// Directory for every broker's config, data and log; a later run with the same directory
    /// starts the same cluster on its data.
    #[arg(long, default_value = "./raftmq-dev")]
    data_dir: PathBuf,
    /// Broker N listens on base+N-1 (client gRPC), base+100+N-1 (peer) and base+200+N-1
    /// (metrics), all on 127.0.0.1.
    #[arg(long, default_value_t = 8081, value_parser = clap::value_parser!(u16).range(1..))]
    base_port: u16,
    /// Seconds to wait for every broker to be ready before giving up.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    ready_timeout: u64,
    /// Print the endpoints as one JSON object on stdout (progress goes to stderr either way).
    #[arg(long)]
    json: bool,
}

/// How long each broker gets to exit after SIGTERM before it is SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often readiness is probed while starting.
const READY_POLL: Duration = Duration::from_millis(250);
/// How often the brokers are checked for exits while running.
const EXIT_POLL: Duration = Duration::from_millis(500);

pub fn run(args: DevArgs) -> anyhow::Result<ExitCode> {
    // One thread: the brokers must be forked from a thread that lives as long as the supervisor,
    // since PR_SET_PDEATHSIG fires when the forking thread exits (see `BrokerProcess::spawn`).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(supervise(args))
}

async fn supervise(args: DevArgs) -> anyhow::Result<ExitCode> {
    let env_names: Vec<OsString> = std::env::vars_os().map(|(name, _)| name).collect();
    let conflicts = plan::conflicting_env_vars(env_names.iter().map(OsString::as_os_str));
    if !conflicts.is_empty() {
        anyhow::bail!(
            "{} {} set: it would give every broker the same value where raftmq dev gives each its own; unset it \
             (other RAFTMQ_* settings, like RAFTMQ_RAFT__HEARTBEAT_INTERVAL_MS, apply to every broker)",
            conflicts.join(", "),
            if conflicts.len() == 1 { "is" } else { "are" }
        );
    }
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let dir = std::fs::canonicalize(&args.data_dir).with_context(|| format!("resolving {}", args.data_dir.display()))?;
    let plan = ClusterPlan::new(&dir, args.brokers, args.base_port).map_err(anyhow::Error::msg)?;
    let configs = prepare_configs(&plan)?;

    // Registered before the first broker starts, so no Ctrl-C can leave one behind.
    let mut signals = Signals::new().context("installing signal handlers")?;
    let exe = std::env::current_exe().context("finding this program to start the brokers with")?;
    let mut brokers = Vec::with_capacity(plan.brokers.len());
    for b in &plan.brokers {
        let args = [OsStr::new("broker"), OsStr::new("--config"), b.config_path.as_os_str()];
        match BrokerProcess::spawn(b.id, &exe, &args, &b.log_path) {
            Ok(p) => brokers.push(p),
            Err(e) => {
                stop(&mut brokers, &mut signals).await;
                return Err(e);
            }
        }
    }
    eprintln!(
        "raftmq dev: started {} brokers in {}; waiting up to {} s for them to be ready",
        brokers.len(),
        dir.display(),
        args.ready_timeout
    );

    match wait_ready(&plan, &mut brokers, &mut signals, Duration::from_secs(args.ready_timeout)).await {
        Startup::Ready => {}
        Startup::Interrupted(name) => {
            eprintln!("raftmq dev: {name} while starting: stopping the brokers");
            stop(&mut brokers, &mut signals).await;
            return Ok(ExitCode::SUCCESS);
        }
        Startup::Failed(why) => {
            stop(&mut brokers, &mut signals).await;
            anyhow::bail!(why);
        }
    }

    let report = cluster_report(&plan, &configs, &brokers, &exe);
    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", serde_json::to_string(&report)?)?;
    } else {
        write!(stdout, "{}", report.text())?;
    }
    stdout.flush()?;
    drop(stdout);

    let signal = supervise_running(&mut brokers, &mut signals).await;
    stop(&mut brokers, &mut signals).await;
    match signal {
        Some(name) => {
            eprintln!("raftmq dev: stopped on {name}");
            Ok(ExitCode::SUCCESS)
        }
        None => anyhow::bail!("every broker has exited (their logs are above)"),
    }
}

/// Checks the existing configs against the plan, or writes them on a first run, then checks that
/// every port is free. Returns each config as its broker will load it (file and environment).
///
/// On a first run the ports are checked before anything is written, so that a busy port leaves
/// no configs behind that a retry with another --base-port would refuse.
fn prepare_configs(plan: &ClusterPlan) -> anyhow::Result<Vec<BrokerOptions>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&plan.dir).with_context(|| format!("listing {}", plan.dir.display()))? {
        names.push(entry.with_context(|| format!("listing {}", plan.dir.display()))?.file_name());
    }
    let found = plan::broker_dir_ids(names.iter().map(OsString::as_os_str));
    if plan.check_broker_dirs(&found).map_err(anyhow::Error::msg)? {
        process::check_ports_free(&plan.ports())?;
        for b in &plan.brokers {
            write_config(plan, b)?;
        }
        load_configs(plan)
    } else {
        let configs = load_configs(plan)?;
        process::check_ports_free(&plan.ports())?;
        Ok(configs)
    }
}

/// Loads every broker's config and checks it against the plan.
fn load_configs(plan: &ClusterPlan) -> anyhow::Result<Vec<BrokerOptions>> {
    let mut configs = Vec::with_capacity(plan.brokers.len());
    for b in &plan.brokers {
        let config = crate::config::load(Some(&b.config_path)).with_context(|| {
            format!("broker {} of {} cannot start (remove {} to start afresh)", b.id, plan.dir.display(), plan.dir.display())
        })?;
        let mismatches = plan.config_mismatches(b, &config);
        if !mismatches.is_empty() {
            let base = config.listen.port().checked_sub(u16::try_from(b.id - 1).unwrap_or(u16::MAX));
            let hint = base.map(|p| format!(" (its listen port suggests --base-port {p})")).unwrap_or_default();
            anyhow::bail!(
                "{} was made for another cluster than this run's:\n  {}\n\
                 This broker's data was written under those settings: run with the --brokers and --base-port it was made with{hint}, \
                 use another --data-dir, or remove {} to start afresh",
                b.config_path.display(),
                mismatches.join("\n  "),
                plan.dir.display()
            );
        }
        configs.push(config);
    }
    Ok(configs)
}

fn write_config(plan: &ClusterPlan, b: &BrokerPlan) -> anyhow::Result<()> {
    let text = plan.broker_toml(b).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&b.dir).with_context(|| format!("creating {}", b.dir.display()))?;
    // create_new: a file that appeared since the directory was listed is never overwritten.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&b.config_path)
        .with_context(|| format!("creating {}", b.config_path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("writing {}", b.config_path.display()))?;
    Ok(())
}

enum Startup {
    Ready,
    Interrupted(&'static str),
    Failed(String),
}

/// Probes every broker not yet ready until all are, one exits, a signal comes or `timeout` passes.
async fn wait_ready(plan: &ClusterPlan, brokers: &mut [BrokerProcess], signals: &mut Signals, timeout: Duration) -> Startup {
    let expected: BTreeSet<u64> = plan.brokers.iter().map(|b| b.id).collect();
    let mut not_ready: BTreeMap<u64, String> = plan.brokers.iter().map(|b| (b.id, "not probed yet".to_owned())).collect();
    let deadline = Instant::now() + timeout;
    loop {
        for b in brokers.iter_mut() {
            match b.poll_exit() {
                Ok(None) => {}
                Ok(Some(status)) => {
                    return Startup::Failed(format!("broker {} exited while starting ({status}){}", b.id, log_tail_text(&b.log_path)));
                }
                Err(e) => return Startup::Failed(format!("cannot tell whether broker {} is running: {e}", b.id)),
            }
        }
        let mut probes = tokio::task::JoinSet::new();
        for b in plan.brokers.iter().filter(|b| not_ready.contains_key(&b.id)) {
            let (id, client, expected) = (b.id, b.client, expected.clone());
            probes.spawn(async move { (id, ready::probe(client, &expected).await) });
        }
        while let Some(joined) = probes.join_next().await {
            match joined {
                Ok((id, Ok(()))) => {
                    not_ready.remove(&id);
                }
                Ok((id, Err(why))) => {
                    not_ready.insert(id, why);
                }
                Err(e) => return Startup::Failed(format!("a readiness probe failed: {e}")),
            }
        }
        if not_ready.is_empty() {
            return Startup::Ready;
        }
        if Instant::now() >= deadline {
            let lines: Vec<String> = not_ready
                .iter()
                .map(|(id, why)| format!("  broker {id}: {why} (log: {})", plan.brokers[(*id - 1) as usize].log_path.display()))
                .collect();
            return Startup::Failed(format!("not every broker was ready after {} s:\n{}", timeout.as_secs(), lines.join("\n")));
        }
        tokio::select! {
            name = signals.recv() => return Startup::Interrupted(name),
            () = tokio::time::sleep(READY_POLL) => {}
        }
    }
}

/// Watches the brokers until a signal comes (its name) or none is left (`None`). There is no
/// deadline: running until told to stop is the supervisor's job.
async fn supervise_running(brokers: &mut [BrokerProcess], signals: &mut Signals) -> Option<&'static str> {
    let mut running: BTreeSet<u64> = brokers.iter().map(|b| b.id).collect();
    loop {
        tokio::select! {
            name = signals.recv() => return Some(name),
            () = tokio::time::sleep(EXIT_POLL) => {}
        }
        for b in brokers.iter_mut() {
            if !running.contains(&b.id) {
                continue;
            }
            let gone = match b.poll_exit() {
                Ok(None) => continue,
                Ok(Some(status)) => format!("exited ({status})"),
                Err(e) => format!("cannot be watched any more ({e})"),
            };
            running.remove(&b.id);
            let rest = if running.is_empty() {
                "no broker is left".to_owned()
            } else {
                format!("the other {} keep running; Ctrl-C stops them", running.len())
            };
            eprintln!("raftmq dev: broker {} {gone}; {rest}{}", b.id, log_tail_text(&b.log_path));
        }
        if running.is_empty() {
            return None;
        }
    }
}

/// Stops every broker and reports how each ended; a second signal skips the grace period.
async fn stop(brokers: &mut [BrokerProcess], signals: &mut Signals) {
    let running: BTreeSet<u64> = brokers.iter_mut().filter_map(|b| matches!(b.poll_exit(), Ok(None)).then_some(b.id)).collect();
    if running.is_empty() {
        return;
    }
    eprintln!(
        "raftmq dev: stopping {} brokers (SIGTERM, then SIGKILL after {} s; Ctrl-C again to kill now)",
        running.len(),
        STOP_GRACE.as_secs()
    );
    let hurry = async {
        let name = signals.recv().await;
        eprintln!("raftmq dev: {name} again: killing the brokers now");
    };
    for (id, outcome) in process::stop_all(brokers, STOP_GRACE, hurry).await {
        // The ones that had exited before were reported then.
        if !running.contains(&id) {
            continue;
        }
        match outcome {
            Stopped::Exited(status) => eprintln!("raftmq dev: broker {id} stopped ({status})"),
            Stopped::Killed => eprintln!("raftmq dev: broker {id} was killed (it had not stopped)"),
            Stopped::Stuck => eprintln!("raftmq dev: broker {id} did not exit even after SIGKILL; check for it with `ps`"),
        }
    }
}

fn log_tail_text(log: &Path) -> String {
    match process::log_tail(log) {
        Ok(tail) => format!(". The end of {}:\n{tail}", log.display()),
        Err(e) => format!(". Its log {} cannot be read: {e}", log.display()),
    }
}

fn cluster_report(plan: &ClusterPlan, configs: &[BrokerOptions], brokers: &[BrokerProcess], exe: &Path) -> ClusterReport {
    let brokers: Vec<BrokerReport> = plan
        .brokers
        .iter()
        .zip(configs)
        .zip(brokers)
        .map(|((b, config), process)| BrokerReport {
            id: b.id,
            pid: process.pid(),
            client: config.advertise.clone(),
            peer: config.peer_advertise.clone(),
            metrics: config.metrics_listen.map(|a| format!("http://{a}/metrics")).unwrap_or_default(),
            data_dir: config.data_dir.display().to_string(),
            config: b.config_path.display().to_string(),
            log: b.log_path.display().to_string(),
        })
        .collect();
    let clients: Vec<String> = brokers.iter().map(|b| b.client.clone()).collect();
    ClusterReport {
        data_dir: plan.dir.display().to_string(),
        brokers,
        controllers: plan.controllers.clone(),
        broker_env: report::broker_env(&clients),
        next_commands: report::next_commands(exe, &clients),
    }
}

/// The signals that stop the cluster: Ctrl-C, SIGTERM, and SIGHUP (the terminal closed).
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.hangup.recv() => "SIGHUP",
        }
    }
}

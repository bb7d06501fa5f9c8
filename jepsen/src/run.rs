//! One fault campaign: start a cluster, run the workload while the nemeses inject faults from
//! the seed's schedule, heal everything, read every queue on every replica, then write and check
//! the history.
//!
//! Files in the run's directory: `history.jsonl`, `final.jsonl`, `replicas.jsonl`,
//! `faults.jsonl`, `results.json`, `index.html` (the report), `run.json` (the options, to replay), and
//! `broker-N/` (each broker's configuration, data and log).

use std::path::PathBuf;
use std::time::Duration;

use proto::raftmq::v1::{ClusterStatusRequest, CreateTopicRequest, DescribeTopicRequest, Topic};
use rand::{RngExt, SeedableRng};
use rand_xorshift::XorShiftRng;
use serde::Serialize;
use tokio::time::Instant;

use crate::availability::{FaultWindow, WindowStats, by_window};
use crate::checker::{CheckResult, check};
use crate::cluster::{ClusterError, ClusterOptions, LocalCluster, admin_client};
use crate::history::{FinalRead, QueueReplicas, write_jsonl};
use crate::nemesis::{self, NemesisKind, Schedule};
use crate::workload::{LeaderRoutes, Recorder, Routing, Workload, final_read};

/// The topic every run uses.
pub const TOPIC: &str = "jepsen";
/// How long the cluster may take to come up, and to settle after the faults are healed.
const READY_WITHIN: Duration = Duration::from_secs(90);
/// How long the final read of one queue on one replica may take.
const FINAL_READ_WITHIN: Duration = Duration::from_secs(60);

/// Which workload the clients run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// Half the producers send to random queues, the other half each to one queue in its own
    /// FIFO message group (whose order must hold).
    Queue,
    /// Every producer sends to one queue in its own message group.
    Fifo,
    /// RocketMQ 5's protocol ([`crate::rocketmq`]): producers send normal messages to a normal
    /// topic, SimpleConsumers of one consumer group receive and acknowledge them.
    Rocketmq,
    /// The same on a FIFO topic: each producer is its own message group, whose order the
    /// consumer group's deliveries must keep.
    #[serde(rename = "rocketmq-fifo")]
    RocketmqFifo,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunOptions {
    pub brokers: usize,
    pub time: Duration,
    pub nemeses: Vec<NemesisKind>,
    pub workload: WorkloadKind,
    /// How producers choose a broker for each send.
    pub routing: Routing,
    /// Sends per second over all producers.
    pub rate: f64,
    pub producers: u64,
    pub queues: u32,
    pub seed: u64,
    pub dir: PathBuf,
    /// The `raftmq` binary the brokers run.
    pub binary: PathBuf,
    /// TOML appended to every broker's configuration (not a `[testing]` section: the run
    /// writes that one).
    pub extra_config: String,
    /// **Test only**: brokers acknowledge sends before fdatasync, syncing every this many ms
    /// (0: never so broken). For proving that the checker catches lost writes.
    pub unsafe_ack_before_fsync_ms: u64,
    pub schedule_fault_min: Duration,
    pub schedule_fault_max: Duration,
    pub schedule_quiet_min: Duration,
    pub schedule_quiet_max: Duration,
    /// The command line that replays this run, for the report.
    pub replay: String,
}

impl RunOptions {
    fn schedule(&self) -> Schedule {
        Schedule {
            fault_min: self.schedule_fault_min,
            fault_max: self.schedule_fault_max,
            quiet_min: self.schedule_quiet_min,
            quiet_max: self.schedule_quiet_max,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Firewall(#[from] crate::net::FirewallError),
    #[error("{0}")]
    Setup(String),
    #[error("writing {what}: {source}")]
    Write { what: String, source: std::io::Error },
    #[error("{reason}\n{logs}")]
    Final { reason: String, logs: String },
}

/// What `results.json` holds: `run` writes it, and `raftmq jepsen check` writes it again from
/// the stored files (carrying `unhealthy` over, which only the run could see).
#[derive(Debug, Serialize)]
pub struct Results<'a> {
    /// No anomaly, the history checked in full, and the cluster came back healthy.
    pub valid: bool,
    /// `passed`, `anomalies` (at least one), or `invalid` (no anomaly, but the history could not
    /// be checked in full, or the cluster did not come back healthy).
    pub verdict: crate::checker::Verdict,
    pub unhealthy: &'a [String],
    pub check: &'a CheckResult,
    pub anomaly_counts: std::collections::BTreeMap<crate::checker::AnomalyClass, usize>,
    pub faults: &'a [WindowStats],
}

impl<'a> Results<'a> {
    pub fn new(check: &'a CheckResult, faults: &'a [WindowStats], unhealthy: &'a [String]) -> Self {
        let verdict = match check.verdict() {
            crate::checker::Verdict::Passed if !unhealthy.is_empty() => crate::checker::Verdict::Invalid,
            v => v,
        };
        Self { valid: verdict == crate::checker::Verdict::Passed, verdict, unhealthy, check, anomaly_counts: check.counts(), faults }
    }

    /// Pretty JSON with a final newline.
    pub fn to_json(&self) -> String {
        // Serializing plain data into a String cannot fail.
        format!("{}\n", serde_json::to_string_pretty(self).unwrap_or_default())
    }
}

/// What a run found.
pub struct RunReport {
    pub check: CheckResult,
    pub faults: Vec<WindowStats>,
    /// Why the cluster did not come back healthy after the faults were healed (groups that did
    /// not settle, replicas that could not be read), if it did not: the run is then a failure
    /// even with no anomaly, and the checked history holds only what could be read.
    pub unhealthy: Vec<String>,
}

impl RunReport {
    pub fn valid(&self) -> bool {
        self.check.valid() && self.unhealthy.is_empty()
    }

    /// As in `results.json`: an unhealthy cluster makes a run without anomalies invalid.
    pub fn verdict(&self) -> crate::checker::Verdict {
        Results::new(&self.check, &self.faults, &self.unhealthy).verdict
    }
}

fn write_file(path: PathBuf, bytes: &[u8]) -> Result<(), RunError> {
    std::fs::write(&path, bytes).map_err(|source| RunError::Write { what: path.display().to_string(), source })
}

fn jsonl<T: Serialize>(items: &[T]) -> Vec<u8> {
    let mut buf = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = write_jsonl(&mut buf, items);
    buf
}

/// Runs one campaign; see the module documentation.
pub async fn run(options: &RunOptions) -> Result<RunReport, RunError> {
    // A run's brokers are new hosts; data of an earlier run would name other addresses.
    if std::fs::read_dir(&options.dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(RunError::Setup(format!("{} is not empty: every run needs a directory of its own", options.dir.display())));
    }
    std::fs::create_dir_all(&options.dir).map_err(|source| RunError::Write { what: options.dir.display().to_string(), source })?;
    write_file(options.dir.join("run.json"), serde_json::to_string_pretty(options).unwrap_or_default().as_bytes())?;
    // With a power-loss nemesis, every broker keeps unsynced log writes in memory, so that
    // killing it loses them; with torn-write, it also keeps the torn last page on disk.
    let testing = format!(
        "[testing]\npower_loss = {}\nack_before_fsync_ms = {}\nfsync_delay_file = {}\ntorn_pages = {}\nstore_flush_file = {}\n",
        options.nemeses.iter().any(|k| k.needs_power_loss_mode()),
        options.unsafe_ack_before_fsync_ms,
        options.nemeses.iter().any(|k| k.needs_fsync_delay_file()),
        options.nemeses.contains(&NemesisKind::TornWrite),
        options.nemeses.contains(&NemesisKind::StoreLoss),
    );
    let mut cluster = LocalCluster::start(&ClusterOptions {
        brokers: options.brokers,
        binary: options.binary.clone(),
        dir: options.dir.clone(),
        extra_config: format!("{}\n{testing}", options.extra_config),
    })?;
    if options.nemeses.iter().any(|k| k.needs_firewall()) {
        cluster.firewall = Some(crate::net::Firewall::new(&format!("{}s{}", std::process::id(), options.seed), options.seed)?);
    }
    cluster.wait_ready(READY_WITHIN).await?;
    create_topic(&cluster, options).await?;

    let started = Instant::now();
    let recorder = Recorder::new(started);
    let deadline = started + options.time;
    let endpoints = cluster.client_addrs();
    let routes = LeaderRoutes::new();
    let workload = Workload {
        topic: TOPIC,
        queues: options.queues,
        endpoints: &endpoints,
        routes: (options.routing == Routing::Leader).then_some(&routes),
        recorder: &recorder,
        deadline,
        rate_per_producer: options.rate / options.producers.max(1) as f64,
    };
    let nemesis = run_nemesis(&mut cluster, options, &recorder, deadline);
    let windows = match options.workload {
        WorkloadKind::Queue | WorkloadKind::Fifo => {
            // queue: every other producer sends in its own FIFO message group; fifo: all of them.
            let fifo = |p: u64| options.workload == WorkloadKind::Fifo || p % 2 == 1;
            let producers = futures::future::join_all((0..options.producers).map(|p| workload.produce(p, options.seed, fifo(p))));
            let consumers = futures::future::join_all((0..options.queues).map(|q| workload.consume(q, "jepsen-consumers", options.seed)));
            tokio::join!(producers, consumers, nemesis).2
        }
        WorkloadKind::Rocketmq | WorkloadKind::RocketmqFifo => {
            let fifo = options.workload == WorkloadKind::RocketmqFifo;
            let drain = crate::rocketmq::Drain::new();
            let producers = futures::future::join_all((0..options.producers).map(|p| workload.produce_rocketmq(p, options.seed, fifo)));
            // Two consumers per queue: a FIFO queue serves one batch at a time.
            let consumers = futures::future::join_all(
                (0..2 * u64::from(options.queues)).map(|c| workload.consume_rocketmq(c, options.seed, fifo, &drain)),
            );
            tokio::join!(producers, consumers, nemesis).2
        }
    };
    let windows = windows?;

    // Heal is done; let the cluster settle, then read everything back. A cluster that does not
    // come back healthy is itself a failure, but the history is still checked against what can
    // be read: that is where a broken broker's lost writes show.
    let mut unhealthy = Vec::new();
    if let Err(reason) = settle(&cluster).await {
        tracing::warn!(%reason, logs = %cluster.log_tails(10), "the cluster did not settle after the heal");
        unhealthy.push(reason);
    }
    let read_within = if unhealthy.is_empty() { FINAL_READ_WITHIN } else { Duration::from_secs(10) };
    let (finals, replicas) = match read_everything(&cluster, options, read_within, &mut unhealthy).await {
        Ok(r) => r,
        Err(reason) => return Err(RunError::Final { reason, logs: cluster.log_tails(30) }),
    };
    cluster.kill_all();
    let events = recorder.into_events();
    write_file(options.dir.join("history.jsonl"), &jsonl(&events))?;
    write_file(options.dir.join("final.jsonl"), &jsonl(&finals))?;
    write_file(options.dir.join("replicas.jsonl"), &jsonl(&replicas))?;
    write_file(options.dir.join("faults.jsonl"), &jsonl(&windows))?;
    let result = check(&events, &finals, &replicas);
    let faults = by_window(&events, &windows);
    write_file(options.dir.join("results.json"), Results::new(&result, &faults, &unhealthy).to_json().as_bytes())?;
    let page = crate::report::render(&crate::report::ReportInput {
        events: &events,
        windows: &windows,
        faults: &faults,
        check: &result,
        command: Some(&options.replay),
    });
    write_file(options.dir.join("index.html"), page.as_bytes())?;
    Ok(RunReport { check: result, faults, unhealthy })
}

async fn create_topic(cluster: &LocalCluster, options: &RunOptions) -> Result<(), RunError> {
    let rf = options.brokers.min(3) as u32;
    let message_type = match options.workload {
        WorkloadKind::RocketmqFifo => proto::raftmq::v1::MessageType::Fifo,
        WorkloadKind::Rocketmq => proto::raftmq::v1::MessageType::Normal,
        WorkloadKind::Queue | WorkloadKind::Fifo => proto::raftmq::v1::MessageType::Unspecified,
    };
    let topic = Topic {
        name: TOPIC.into(),
        queue_count: options.queues,
        replication_factor: rf,
        message_type: message_type as i32,
        checkpoint_interval_entries: 0,
    };
    let mut admin = admin_client(cluster.brokers[0].client_addr());
    let reply = admin
        .create_topic(CreateTopicRequest { topic: Some(topic) })
        .await
        .map_err(|e| RunError::Setup(format!("creating the topic: {e}")))?
        .into_inner();
    match reply.status {
        Some(s) if s.code == proto::raftmq::v1::status::Code::Ok as i32 => Ok(()),
        other => Err(RunError::Setup(format!("creating the topic: {other:?}"))),
    }
}

/// Injects faults by the seed's schedule until the deadline; every fault is healed before it
/// returns. Returns the fault windows.
async fn run_nemesis(
    cluster: &mut LocalCluster,
    options: &RunOptions,
    recorder: &Recorder,
    deadline: Instant,
) -> Result<Vec<FaultWindow>, RunError> {
    let mut windows = Vec::new();
    if options.nemeses.is_empty() {
        return Ok(windows);
    }
    let mut rng = XorShiftRng::seed_from_u64(options.seed);
    let schedule = options.schedule();
    loop {
        let quiet = nemesis::between(&mut rng, schedule.quiet_min, schedule.quiet_max);
        if Instant::now() + quiet >= deadline {
            break;
        }
        tokio::time::sleep(quiet).await;
        let kind = options.nemeses[rng.random_range(0..options.nemeses.len())];
        let hold = nemesis::between(&mut rng, schedule.fault_min, schedule.fault_max);
        let start_ns = recorder.now_ns();
        let fault = nemesis::inject(kind, cluster, TOPIC, options.queues, &mut rng).await?;
        tracing::info!(fault = %fault.describe(), ?hold, "nemesis: injected");
        // A fault never outlasts the workload: the end of the run heals everything.
        tokio::time::sleep_until((Instant::now() + hold).min(deadline)).await;
        nemesis::heal(&fault, cluster)?;
        tracing::info!(fault = %fault.describe(), "nemesis: healed");
        windows.push(FaultWindow { name: fault.describe(), kind: Some(kind), start_ns, end_ns: recorder.now_ns() });
        if Instant::now() >= deadline {
            break;
        }
    }
    Ok(windows)
}

/// Waits for every broker and every group to settle: each replica applied what its leader
/// committed.
async fn settle(cluster: &LocalCluster) -> Result<(), String> {
    cluster.wait_ready(READY_WITHIN).await.map_err(|e| e.to_string())?;
    let mut admin = admin_client(cluster.brokers[0].client_addr());
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        let settled =
            match admin.cluster_status(ClusterStatusRequest {}).await {
                Ok(r) => r.into_inner().groups.iter().all(|g| {
                    g.leader_broker_id != 0 && !g.replicas.is_empty() && g.replicas.iter().all(|r| r.applied_index >= g.commit_index)
                }),
                Err(_) => false,
            };
        if settled {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!("groups did not settle within {READY_WITHIN:?} after the faults were healed"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Reads every queue on every replica of its group, each from that replica itself, within
/// `within`. Returns the reads and each queue's replicas; a replica that cannot be read is
/// noted in `unhealthy` and in its queue's `read_errors` (which makes the history invalid).
async fn read_everything(
    cluster: &LocalCluster,
    options: &RunOptions,
    within: Duration,
    unhealthy: &mut Vec<String>,
) -> Result<(Vec<FinalRead>, Vec<QueueReplicas>), String> {
    let mut admin = admin_client(cluster.brokers[0].client_addr());
    let described = admin
        .describe_topic(DescribeTopicRequest { name: TOPIC.into() })
        .await
        .map_err(|e| format!("describing the topic: {e}"))?
        .into_inner();
    let mut finals = Vec::new();
    let mut replicas = Vec::new();
    for q in described.queues.iter().take(options.queues as usize) {
        let mut queue = QueueReplicas { queue: q.queue_id, replicas: q.replica_broker_ids.clone(), read_errors: Default::default() };
        for &b in &q.replica_broker_ids {
            let endpoint = cluster.broker(b).map_err(|e| e.to_string())?.client_addr();
            match final_read(endpoint, b, TOPIC, q.queue_id, within).await {
                Ok(read) => finals.push(read),
                Err(reason) => {
                    unhealthy.push(reason.clone());
                    queue.read_errors.insert(b, reason);
                }
            }
        }
        replicas.push(queue);
    }
    // A queue the topic should have but the cluster did not describe has no replicas to read.
    let missing: Vec<u32> = (0..options.queues).filter(|q| !replicas.iter().any(|r: &QueueReplicas| r.queue == *q)).collect();
    replicas.extend(missing.into_iter().map(|queue| QueueReplicas { queue, replicas: vec![], read_errors: Default::default() }));
    Ok((finals, replicas))
}

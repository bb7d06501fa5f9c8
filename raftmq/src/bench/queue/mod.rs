//! `raftmq bench produce|consume|e2e`: load on a running cluster through QueueService, with
//! latency percentiles (HdrHistogram) and messages and MiB per second.
//!
//! - `produce`: `--concurrency` workers, each with one send of `--batch` messages in flight,
//!   send `--count` messages to the topic's queues in turn, each to its queue's leader.
//! - `consume`: reads every queue from offset 0, `--concurrency` queues at a time, until
//!   `--count` messages are read (run `bench produce` first); over RocketMQ, `--concurrency`
//!   consumers of one consumer group receive and acknowledge, sharing every queue.
//! - `e2e`: produces as `produce` does while one reader per queue reads from the queue's end as
//!   of the start; each body carries its send time, so the report has send-to-consume latency.
//!
//! The topic is created when missing (`--queues`). A progress line goes to stderr each second.
//! A run ends after `--time-limit` at the latest (sends then in flight count as unknown outcome),
//! or at Ctrl-C (a second Ctrl-C quits at once). Exit code 0 when the run did its whole count
//! without a failed or unknown send, else 1; 2 on errors that stop it (no such queue, a
//! refused request).

mod consume;
mod produce;
mod report;
mod rocketmq;
mod stamp;
mod state;
mod timeliness;

use std::io;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, value_parser};
use proto::raftmq::v1::{CreateTopicRequest, QueueInfo, Topic};
use tokio::task::JoinSet;

use super::latency::{Latency, LatencyRecorder};
use crate::cli::produce::{BATCH_MAX, BODY_BYTES_MAX, generated_body};
use client::{CallError, Cluster, Router, Target, admin_client, random_u64, request};

use crate::cli::{CommonArgs, EXIT_CHECK_FAILED, producer_id};
use consume::{BENCH_CONSUMER_GROUP, ConsumeLatency, ConsumeVia, Consumer, QueueCursor, ReadMode, deal, share};
use produce::{Producer, SendPlan, SendVia};
use report::{Measured, QueueBenchReport, RunShape};
use stamp::{STAMP_LEN, Stamp};
pub use state::BenchKind;
use state::{Counters, StopReason, StopSignal, report_progress};
pub use timeliness::{TimelinessArgs, run as run_timeliness};

const COUNT_MAX: u64 = 1_000_000_000_000;
const CONCURRENCY_MAX: u64 = 4096;
/// e2e readers at most (one per queue); a topic with more queues shares them out.
const E2E_READERS_MAX: usize = 1024;
/// How long a reader's fetch waits at the broker once its queues are all read to the end.
const FETCH_WAIT_MS: u32 = 500;
/// A created topic's queues get leaders within this, or the run goes on without (its calls
/// then start at --broker).
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// e2e, once sending is over: the readers stop when they read nothing new for this long.
const DRAIN_IDLE: Duration = Duration::from_secs(5);

#[derive(Args)]
pub struct QueueBenchArgs {
    /// Topic to use; created when missing.
    #[arg(long)]
    topic: String,
    /// Messages to send (produce, e2e) or read (consume).
    #[arg(long, default_value_t = 100_000, value_parser = value_parser!(u64).range(1..=COUNT_MAX))]
    count: u64,
    /// Body bytes of each message (e2e: at least 28, for the send time it carries).
    #[arg(long, default_value_t = 1024, value_parser = value_parser!(u64).range(0..=BODY_BYTES_MAX))]
    size: u64,
    /// Sends in flight at once (produce, e2e); consume: native, queues read at once (one reader
    /// per queue, so at most the queue count); rocketmq, consumers of the group, sharing the
    /// queues as RocketMQ's consumers do.
    #[arg(long, default_value_t = 64, value_parser = value_parser!(u64).range(1..=CONCURRENCY_MAX))]
    concurrency: u64,
    /// Messages per send (produce, e2e).
    #[arg(long, default_value_t = 1, value_parser = value_parser!(u64).range(1..=BATCH_MAX))]
    batch: u64,
    /// Queues of the topic when this run creates it [default: the cluster's default].
    #[arg(long, value_parser = value_parser!(u32).range(1..))]
    queues: Option<u32>,
    /// Seconds after which the run stops, done or not (`--timeout` is each call's deadline).
    #[arg(long, default_value_t = 300, value_parser = value_parser!(u64).range(1..=86_400))]
    time_limit: u64,
    /// The client protocol: raftmq's own `QueueService`, or RocketMQ 5's `MessagingService` as an
    /// official client uses it (produce: SendMessage; consume: ReceiveMessage and AckMessage of
    /// each batch, as consumer group `raftmq-bench`; e2e: native only).
    #[arg(long, value_enum, default_value_t = Protocol::Native)]
    protocol: Protocol,
    /// consume: most messages per fetch (native) or receive (rocketmq, at most 32) [default:
    /// native: the broker's (256); rocketmq: 32].
    #[arg(long, value_parser = value_parser!(u32).range(1..=i64::from(READ_BATCH_MAX)))]
    read_batch: Option<u32>,
    /// consume, native: after each fetch that returned messages, commit the next offset as this
    /// consumer group before reading on (one Raft entry per fetch, as Kafka's poll + commitSync):
    /// the native counterpart of RocketMQ's receive + ack. A failed commit counts as a failed fetch.
    #[arg(long)]
    commit_group: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

/// The most messages a `--read-batch` asks for: what one native fetch returns at most.
const READ_BATCH_MAX: u32 = 1024;
/// RocketMQ's receive batch when `--read-batch` leaves it unset, and the most the broker answers.
const RECEIVE_BATCH_DEFAULT: u32 = 32;

/// A client protocol of the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Native,
    Rocketmq,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Native => "native",
            Protocol::Rocketmq => "rocketmq",
        }
    }
}

pub fn run(kind: BenchKind, args: QueueBenchArgs) -> anyhow::Result<ExitCode> {
    crate::cli::runtime()?.block_on(run_bench(kind, args))
}

/// What every worker of one run shares.
struct Run {
    kind: BenchKind,
    args: QueueBenchArgs,
    router: Arc<Router>,
    send_via: SendVia,
    queues: Vec<QueueInfo>,
    counters: Arc<Counters>,
    stop: Arc<StopSignal>,
    started: Instant,
    deadline: Instant,
}

async fn run_bench(kind: BenchKind, args: QueueBenchArgs) -> anyhow::Result<ExitCode> {
    let size = usize::try_from(args.size)?;
    if kind == BenchKind::E2e && size < STAMP_LEN {
        bail!("bench e2e needs --size {STAMP_LEN} or more: each body carries its send time");
    }
    if args.protocol == Protocol::Rocketmq && kind == BenchKind::E2e {
        bail!("bench e2e --protocol rocketmq: not built yet; `bench produce` and `bench consume` run over it");
    }
    if kind != BenchKind::Consume && (args.read_batch.is_some() || args.commit_group.is_some()) {
        bail!("--read-batch and --commit-group are bench consume's");
    }
    if args.protocol == Protocol::Rocketmq {
        if args.commit_group.is_some() {
            bail!(
                "--commit-group is the native consumer's: over rocketmq each batch is acknowledged, as consumer group {BENCH_CONSUMER_GROUP}"
            );
        }
        if args.read_batch.is_some_and(|b| b > RECEIVE_BATCH_DEFAULT) {
            bail!("--read-batch over rocketmq is at most {RECEIVE_BATCH_DEFAULT}: the broker answers no more per receive");
        }
    }
    let cluster = args.common.connect.cluster();
    ensure_topic(&cluster, &args.topic, args.queues).await?;
    let (router, described) = Router::open(cluster, &args.topic).await.with_context(|| format!("describing topic {}", args.topic))?;
    if described.queues.is_empty() {
        bail!("topic {} has no queues", args.topic);
    }
    let send_via = match args.protocol {
        Protocol::Native => SendVia::Native,
        Protocol::Rocketmq => {
            let connect = &args.common.connect;
            let route = rocketmq::RocketmqRoute::query(&connect.broker, &args.topic, connect.timeout).await?;
            SendVia::Rocketmq(Arc::new(route))
        }
    };
    let started = Instant::now();
    let run = Arc::new(Run {
        kind,
        router: Arc::new(router),
        send_via,
        queues: described.queues,
        counters: Arc::new(Counters::default()),
        stop: Arc::new(StopSignal::default()),
        started,
        deadline: started + Duration::from_secs(args.time_limit),
        args,
    });
    let ctrl_c = tokio::spawn(watch_ctrl_c(run.stop.clone()));
    let progress = tokio::spawn(report_progress(kind, run.args.count, run.counters.clone(), started));
    let measured = match kind {
        BenchKind::Produce => run_produce(&run).await,
        BenchKind::Consume => run_consume(&run).await,
        BenchKind::E2e => run_e2e(&run).await,
    };
    progress.abort();
    ctrl_c.abort();
    let report = QueueBenchReport::new(run.shape(), measured?);
    report.write(&mut io::stdout().lock(), run.args.common.json)?;
    Ok(if report.complete() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_CHECK_FAILED) })
}

impl Run {
    fn shape(&self) -> RunShape {
        let a = &self.args;
        RunShape {
            kind: self.kind,
            topic: a.topic.clone(),
            queues: self.queues.len(),
            count: a.count,
            size: a.size,
            concurrency: a.concurrency,
            batch: a.batch,
            protocol: a.protocol,
            read_batch: a.read_batch,
            commit_group: a.commit_group.clone(),
        }
    }

    fn measured(&self, send: Option<Latency>, consumed: Option<ConsumeLatency>) -> anyhow::Result<Measured> {
        let (fetch, end_to_end) = match consumed {
            Some(c) => (summary(&c.fetch), summary(&c.end_to_end)),
            None => (None, None),
        };
        Ok(Measured {
            seconds: self.started.elapsed().as_secs_f64(),
            totals: self.counters.snapshot(),
            send_latency: send,
            fetch_latency: if self.kind == BenchKind::Consume { fetch } else { None },
            end_to_end_latency: end_to_end,
            stop: self.stop.reason(),
            first_error: self.counters.first_error(),
        })
    }

    fn producers(&self, body: produce::BodyMaker) -> JoinSet<anyhow::Result<LatencyRecorder>> {
        let producer = Arc::new(Producer {
            via: self.send_via.clone(),
            router: self.router.clone(),
            topic: self.args.topic.clone(),
            queues: self.queues.iter().map(|q| q.queue_id).collect(),
            plan: SendPlan::new(self.args.count, self.args.batch),
            producer_id: producer_id(),
            body,
            counters: self.counters.clone(),
            stop: self.stop.clone(),
            deadline: self.deadline,
        });
        let mut set = JoinSet::new();
        for _ in 0..self.args.concurrency {
            set.spawn(producer.clone().work());
        }
        set
    }

    fn consumers(&self, cursors: Vec<QueueCursor>, workers: usize, mode: ReadMode) -> JoinSet<anyhow::Result<ConsumeLatency>> {
        let (via, hands) = match &self.send_via {
            SendVia::Native => (ConsumeVia::Native, deal(cursors, workers)),
            SendVia::Rocketmq(route) => (ConsumeVia::Rocketmq(route.clone()), share(cursors, workers)),
        };
        let consumer = Arc::new(Consumer {
            via,
            router: self.router.clone(),
            topic: self.args.topic.clone(),
            count: self.args.count,
            mode,
            wait_ms: FETCH_WAIT_MS,
            read_batch: self.args.read_batch.unwrap_or(match self.args.protocol {
                // 0: the broker's default.
                Protocol::Native => 0,
                Protocol::Rocketmq => RECEIVE_BATCH_DEFAULT,
            }),
            commit_group: self.args.commit_group.clone(),
            counters: self.counters.clone(),
            stop: self.stop.clone(),
            deadline: self.deadline,
        });
        let mut set = JoinSet::new();
        for hand in hands {
            set.spawn(consumer.clone().work(hand));
        }
        set
    }
}

async fn run_produce(run: &Run) -> anyhow::Result<Measured> {
    let size = usize::try_from(run.args.size)?;
    let producers = run.producers(Box::new(move |i| generated_body(i + 1, size)));
    let send = merge(join_all(producers).await?)?;
    run.measured(summary(&send), None)
}

async fn run_consume(run: &Run) -> anyhow::Result<Measured> {
    let cursors = run.queues.iter().map(|q| QueueCursor::new(q.queue_id, 0)).collect();
    let workers = usize::try_from(run.args.concurrency)?;
    let consumed = merge_consumed(join_all(run.consumers(cursors, workers, ReadMode::All)).await?)?;
    run.measured(None, Some(consumed))
}

async fn run_e2e(run: &Run) -> anyhow::Result<Measured> {
    let size = usize::try_from(run.args.size)?;
    let (run_id, started) = (random_u64(), run.started);
    // Readers start at each queue's end as described before sending: every message of this run
    // comes after it.
    let cursors: Vec<QueueCursor> = run.queues.iter().map(|q| QueueCursor::new(q.queue_id, q.end_offset)).collect();
    let readers = cursors.len().min(E2E_READERS_MAX);
    let consumers = run.consumers(cursors, readers, ReadMode::Stamped { run_id, started });
    let body = move |i: u64| {
        let sent_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        Stamp { run_id, sequence: i + 1, sent_ns }.body(size)
    };
    let send = merge(join_all(run.producers(Box::new(body))).await?)?;
    drain(run).await;
    run.stop.stop(StopReason::Drained);
    let consumed = merge_consumed(join_all(consumers).await?)?;
    run.measured(summary(&send), Some(consumed))
}

/// e2e, after the last send: waits until the readers have read every message that may have
/// been stored, read nothing new for `DRAIN_IDLE`, or the run stops.
async fn drain(run: &Run) {
    let mut last = run.counters.snapshot().consumed;
    let mut last_change = Instant::now();
    while !run.stop.should_stop(run.deadline) {
        let now = run.counters.snapshot();
        if now.consumed >= now.acked + now.unknown || now.consumed >= run.args.count || last_change.elapsed() >= DRAIN_IDLE {
            return;
        }
        if now.consumed != last {
            (last, last_change) = (now.consumed, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for every worker; the first error stops the others (dropping the set aborts them).
async fn join_all<T: 'static>(mut set: JoinSet<anyhow::Result<T>>) -> anyhow::Result<Vec<T>> {
    let mut results = Vec::with_capacity(set.len());
    while let Some(joined) = set.join_next().await {
        results.push(joined.context("a benchmark worker panicked")??);
    }
    Ok(results)
}

fn merge(recorders: Vec<LatencyRecorder>) -> anyhow::Result<LatencyRecorder> {
    let mut all = LatencyRecorder::new()?;
    for r in &recorders {
        all.merge(r)?;
    }
    Ok(all)
}

fn merge_consumed(parts: Vec<ConsumeLatency>) -> anyhow::Result<ConsumeLatency> {
    let mut all = ConsumeLatency { fetch: LatencyRecorder::new()?, end_to_end: LatencyRecorder::new()? };
    for p in &parts {
        all.fetch.merge(&p.fetch)?;
        all.end_to_end.merge(&p.end_to_end)?;
    }
    Ok(all)
}

fn summary(r: &LatencyRecorder) -> Option<Latency> {
    (r.len() > 0).then(|| r.summary())
}

/// The first Ctrl-C stops the run after the calls in flight; a second one quits at once.
async fn watch_ctrl_c(stop: Arc<StopSignal>) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    eprintln!("stopping after the calls in flight; Ctrl-C again to quit at once");
    stop.stop(StopReason::Interrupted);
    if tokio::signal::ctrl_c().await.is_ok() {
        std::process::exit(130);
    }
}

/// Creates `topic` unless it exists, then waits (bounded) for its queues to have leaders.
async fn ensure_topic(cluster: &Cluster, topic: &str, queues: Option<u32>) -> anyhow::Result<()> {
    match cluster.describe_topic(topic).await {
        Ok(d) => {
            let existing = d.topic.as_ref().map_or(d.queues.len() as u32, |t| t.queue_count);
            if let Some(q) = queues
                && q != existing
            {
                tracing::warn!(topic, queues = existing, "the topic exists: --queues {q} is ignored");
            }
            return Ok(());
        }
        Err(f) if matches!(f.error, CallError::NotFound { .. }) => {}
        Err(f) => return Err(f).with_context(|| format!("describing topic {topic}")),
    }
    let req = CreateTopicRequest { topic: Some(Topic { name: topic.to_string(), queue_count: queues.unwrap_or(0), ..Default::default() }) };
    let created = cluster
        .call(Target::Bootstrap, |ch, left| {
            let req = req.clone();
            async move { admin_client(ch).create_topic(request(req, left)).await }
        })
        .await;
    match created {
        Ok(reply) => tracing::info!(topic, queues = reply.topic.map(|t| t.queue_count), "created the topic"),
        // Another run created it meanwhile.
        Err(f) if matches!(f.error, CallError::AlreadyExists { .. }) => {}
        Err(f) => return Err(f).with_context(|| format!("creating topic {topic}")),
    }
    let until = Instant::now() + TOPIC_READY_TIMEOUT;
    loop {
        let d = cluster.describe_topic(topic).await.with_context(|| format!("describing topic {topic}"))?;
        if !d.queues.is_empty() && d.queues.iter().all(|q| q.leader_broker_id != 0) {
            return Ok(());
        }
        if Instant::now() >= until {
            tracing::warn!(topic, "not every queue has a leader after {TOPIC_READY_TIMEOUT:?}; benchmarking anyway");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args_in_tests::FromTestArgs;

    #[test]
    fn arguments() {
        let a = QueueBenchArgs::from_test_args(&["--topic", "t"]).expect("defaults");
        assert_eq!((a.count, a.size, a.concurrency, a.batch, a.queues, a.time_limit), (100_000, 1024, 64, 1, None, 300));
        let a = QueueBenchArgs::from_test_args(&[
            "--topic",
            "t",
            "--count",
            "5",
            "--size",
            "28",
            "--concurrency",
            "2",
            "--batch",
            "8",
            "--queues",
            "4",
            "--time-limit",
            "9",
            "--timeout",
            "2s",
            "--json",
        ])
        .expect("all");
        assert_eq!((a.count, a.size, a.concurrency, a.batch, a.queues, a.time_limit, a.common.json), (5, 28, 2, 8, Some(4), 9, true));
        assert_eq!(a.common.connect.timeout, Duration::from_secs(2));
        for bad in
            [["--count", "0"], ["--concurrency", "0"], ["--batch", "0"], ["--queues", "0"], ["--time-limit", "0"], ["--size", "4194305"]]
        {
            assert!(QueueBenchArgs::from_test_args(&["--topic", "t", bad[0], bad[1]]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_protocol_is_native_unless_asked() {
        assert_eq!(QueueBenchArgs::from_test_args(&["--topic", "t"]).expect("defaults").protocol, Protocol::Native);
        let a = QueueBenchArgs::from_test_args(&["--topic", "t", "--protocol", "rocketmq"]).expect("rocketmq");
        assert_eq!(a.protocol, Protocol::Rocketmq);
        assert!(QueueBenchArgs::from_test_args(&["--topic", "t", "--protocol", "amqp"]).is_err());
    }
}

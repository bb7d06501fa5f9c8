//! `raftmq bench scenario timeliness`: the seeds' timeliness test, through RocketMQ 5's protocol
//! as an official client uses it. For each producer concurrency, on a fresh topic of `--queues`
//! queues: `--count` messages of `--size` bytes sent synchronously (each producer has one send in
//! flight and sends the next once it is acknowledged) while one consumer group of `--consumers`
//! tasks receives batches of up to 32 and processes them, pausing `--pause-ms-per-two` ms per
//! two messages, then acknowledges each batch. The figure is the time from the first send to
//! the `count`-th message processed and acknowledged.
//!
//! The consumers alone bound it: `consumers * 2 / pause` messages per millisecond (20 tasks at
//! 1 ms per 2 messages: 40,000/s, 50 s for 2,000,000). Beside the time, each round reports the
//! send and consume rates, so what bounds it on this machine shows: the sends (3-replica fsync)
//! or the consumers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, value_parser};
use serde::Serialize;
use tokio::task::JoinSet;

use super::ensure_topic;
use super::rocketmq::{Outcome, Received, RocketmqRoute};
use crate::cli::produce::generated_body;
use crate::cli::{CommonArgs, write_json_line};

const COUNT_MAX: u64 = 1_000_000_000;
const WORKERS_MAX: u64 = 4096;
/// The consumer group of every round.
const CONSUMER_GROUP: &str = "raftmq-timeliness";
/// Messages one receive asks for: the broker's most.
const RECEIVE_BATCH: i32 = 32;
/// How long a receive long-polls for messages.
const RECEIVE_WAIT: Duration = Duration::from_secs(1);
/// Pause after a send or receive that failed, before the next.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

#[derive(Args)]
pub struct TimelinessArgs {
    /// Messages per round.
    #[arg(long, default_value_t = 2_000_000, value_parser = value_parser!(u64).range(1..=COUNT_MAX))]
    count: u64,
    /// Body bytes of each message.
    #[arg(long, default_value_t = 128, value_parser = value_parser!(u64).range(1..=65_536))]
    size: u64,
    /// Queues of each round's topic.
    #[arg(long, default_value_t = 8, value_parser = value_parser!(u32).range(1..=1024))]
    queues: u32,
    /// Producer concurrencies, one round each: producers, each with one send in flight.
    #[arg(long, value_delimiter = ',', default_value = "64,128,256", value_parser = value_parser!(u64).range(1..=WORKERS_MAX))]
    producers: Vec<u64>,
    /// Consumer tasks of the consumer group.
    #[arg(long, default_value_t = 20, value_parser = value_parser!(u64).range(1..=WORKERS_MAX))]
    consumers: u64,
    /// Processing time each consumer spends per two messages, in ms.
    #[arg(long, default_value_t = 1.0)]
    pause_ms_per_two: f64,
    /// Seconds after which a round stops, done or not.
    #[arg(long, default_value_t = 3600, value_parser = value_parser!(u64).range(1..=86_400))]
    time_limit: u64,
    #[command(flatten)]
    common: CommonArgs,
}

/// What one round measured.
#[derive(Debug, Serialize)]
struct RoundReport {
    producers: u64,
    consumers: u64,
    count: u64,
    size: u64,
    queues: u32,
    topic: String,
    /// From the first send to the `count`-th message processed; `None` if the round stopped first.
    seconds: Option<f64>,
    /// Messages acknowledged to producers, and when the last was (s from the start).
    sent: u64,
    send_seconds: f64,
    /// Sends refused (sent again) and with an unknown outcome (not sent again).
    send_failures: u64,
    send_unknown: u64,
    processed: u64,
    /// What the consumers alone allow: `count` at `consumers * 2 / pause` messages per ms.
    consumer_bound_seconds: f64,
}

pub fn run(args: TimelinessArgs) -> anyhow::Result<std::process::ExitCode> {
    if !(args.pause_ms_per_two.is_finite() && (0.0..=1000.0).contains(&args.pause_ms_per_two)) {
        anyhow::bail!("--pause-ms-per-two {} is not in 0..=1000", args.pause_ms_per_two);
    }
    let runtime = crate::cli::runtime()?;
    let mut complete = true;
    for &producers in &args.producers {
        let report = runtime.block_on(round(&args, producers))?;
        complete &= report.seconds.is_some();
        if args.common.json {
            write_json_line(&mut std::io::stdout().lock(), &report)?;
        } else {
            print_round(&report);
        }
    }
    Ok(if complete { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(crate::cli::EXIT_CHECK_FAILED) })
}

fn print_round(r: &RoundReport) {
    let seconds = r.seconds.map_or_else(|| "not done".to_string(), |s| format!("{s:.1} s"));
    println!(
        "producers {:>4}  consumers {:>3}  {} x {} B on {} queues: {seconds} to the last processed (consumers alone: {:.1} s); \
         sends {:.0}/s over {:.1} s ({} refused and sent again, {} unknown); processed {}",
        r.producers,
        r.consumers,
        r.count,
        r.size,
        r.queues,
        r.consumer_bound_seconds,
        r.sent as f64 / r.send_seconds.max(1e-9),
        r.send_seconds,
        r.send_failures,
        r.send_unknown,
        r.processed,
    );
}

/// What a round's tasks share.
struct Shared {
    count: u64,
    next: AtomicU64,
    sent: AtomicU64,
    send_failures: AtomicU64,
    send_unknown: AtomicU64,
    /// Nanoseconds from the start to the last acknowledged send.
    last_sent_ns: AtomicU64,
    processed: AtomicU64,
    /// Nanoseconds from the start to the `count`-th message processed; 0 until then.
    done_ns: AtomicU64,
    started: Instant,
    deadline: Instant,
}

impl Shared {
    fn elapsed_ns(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn over(&self) -> bool {
        self.done_ns.load(Ordering::Relaxed) != 0 || Instant::now() >= self.deadline
    }
}

async fn round(args: &TimelinessArgs, producers: u64) -> anyhow::Result<RoundReport> {
    let topic = format!("timeliness-p{producers}-{:08x}", client::random_u64() as u32);
    let connect = &args.common.connect;
    ensure_topic(&connect.cluster(), &topic, Some(args.queues)).await?;
    let route = Arc::new(RocketmqRoute::query(&connect.broker, &topic, connect.timeout).await.context("the topic's route")?);
    let started = Instant::now();
    let shared = Arc::new(Shared {
        count: args.count,
        next: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        send_failures: AtomicU64::new(0),
        send_unknown: AtomicU64::new(0),
        last_sent_ns: AtomicU64::new(0),
        processed: AtomicU64::new(0),
        done_ns: AtomicU64::new(0),
        started,
        deadline: started + Duration::from_secs(args.time_limit),
    });
    let size = usize::try_from(args.size)?;
    let pause_per_message = Duration::from_secs_f64(args.pause_ms_per_two / 2.0 / 1000.0);
    let mut tasks = JoinSet::new();
    for _ in 0..producers {
        tasks.spawn(produce(route.clone(), shared.clone(), args.queues, size));
    }
    for c in 0..args.consumers {
        tasks.spawn(consume(route.clone(), shared.clone(), args.queues, c, pause_per_message));
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a benchmark task")?;
    }
    let done_ns = shared.done_ns.load(Ordering::Relaxed);
    let per_ms = args.consumers as f64 * 2.0 / args.pause_ms_per_two.max(1e-9);
    Ok(RoundReport {
        producers,
        consumers: args.consumers,
        count: args.count,
        size: args.size,
        queues: args.queues,
        topic,
        seconds: (done_ns != 0).then(|| done_ns as f64 / 1e9),
        sent: shared.sent.load(Ordering::Relaxed),
        send_seconds: shared.last_sent_ns.load(Ordering::Relaxed) as f64 / 1e9,
        send_failures: shared.send_failures.load(Ordering::Relaxed),
        send_unknown: shared.send_unknown.load(Ordering::Relaxed),
        processed: shared.processed.load(Ordering::Relaxed),
        consumer_bound_seconds: args.count as f64 / per_ms / 1000.0,
    })
}

/// One producer: takes the next message number and sends it to the next queue in turn, one at
/// a time, until `count` were taken. A refused send is sent again; an unknown one is not (it may
/// be stored, and a consumer then processes it).
async fn produce(route: Arc<RocketmqRoute>, shared: Arc<Shared>, queues: u32, size: usize) {
    let producer = client::random_u64();
    loop {
        let n = shared.next.fetch_add(1, Ordering::Relaxed);
        if n >= shared.count {
            return;
        }
        let queue = (n % u64::from(queues.max(1))) as u32;
        loop {
            if shared.over() {
                return;
            }
            let id = format!("{producer:016X}{n:016X}");
            match route.send(queue, vec![id], vec![generated_body(n, size)]).await {
                Outcome::Acked => {
                    shared.sent.fetch_add(1, Ordering::Relaxed);
                    shared.last_sent_ns.fetch_max(shared.elapsed_ns(), Ordering::Relaxed);
                    break;
                }
                Outcome::Failed(why) => {
                    tracing::debug!(%why, "send refused; sending again");
                    shared.send_failures.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Outcome::Unknown(why) => {
                    tracing::warn!(%why, "send outcome unknown");
                    shared.send_unknown.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}

/// One consumer task: receives from the queues in turn, processes each batch (the pause), then
/// acknowledges it; counts what was acknowledged, and marks the time the `count`-th was.
async fn consume(route: Arc<RocketmqRoute>, shared: Arc<Shared>, queues: u32, consumer: u64, pause_per_message: Duration) {
    let mut queue = (consumer % u64::from(queues.max(1))) as u32;
    while !shared.over() {
        queue = (queue + 1) % queues.max(1);
        match route.receive_and_ack(queue, CONSUMER_GROUP, RECEIVE_BATCH, RECEIVE_WAIT, pause_per_message).await {
            Received::Acked(sizes) => {
                let before = shared.processed.fetch_add(sizes.len() as u64, Ordering::Relaxed);
                if before < shared.count && before + sizes.len() as u64 >= shared.count {
                    shared.done_ns.store(shared.elapsed_ns().max(1), Ordering::Relaxed);
                }
            }
            Received::Nothing => {}
            Received::Failed(why) => {
                tracing::debug!(%why, "receive or ack failed");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

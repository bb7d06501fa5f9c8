//! `raftmq produce`: sends messages to a topic and prints where each was stored, one line per
//! message (`queue offset message_id`, or JSON), in order; a summary goes to stderr.
//!
//! Bodies are stdin's lines (without their `\n` or `\r\n`), like kafka-console-producer, or with
//! `--count N --size B` N generated bodies of B bytes. One send is in flight at a time, so
//! messages are stored in input order; a send carries up to `--batch` messages, as many as are
//! at hand (an interactive line goes out at once). The first send that fails stops the command:
//! every message before it is stored, none after it was sent. Exit codes: 0 all stored, 2 a send
//! failed (nothing of it stored), 3 a send's outcome is unknown (it may be stored).

use std::io::{self, BufRead, BufWriter, Read, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, value_parser};
use proto::raftmq::v1::send_request::Target as SendTarget;
use proto::raftmq::v1::{Message, SendReply, SendRequest, SendResult};
use serde_json::json;
use tokio::sync::mpsc;

use client::{CallFailure, Router, Target, queue_client, request};

use super::{CommonArgs, EXIT_OUTCOME_UNKNOWN, producer_id};

/// The broker's default body limit; a longer stdin line is refused here rather than sent.
pub const BODY_BYTES_MAX: u64 = 4 << 20;
/// Bodies of one send at most: a send becomes (part of) one Raft entry, which the broker
/// bounds at 8 MiB.
const SEND_BYTES_MAX: usize = 4 << 20;
/// Messages of one send at most (the broker's own default limit is 256).
pub const BATCH_MAX: u64 = 1024;

#[derive(Args)]
pub struct ProduceArgs {
    /// Topic to send to.
    #[arg(long)]
    topic: String,
    /// Send every message to this queue [default: the topic's queues in turn, one send each].
    #[arg(long, conflicts_with = "key")]
    queue: Option<u32>,
    /// Routing key: the broker hashes it to one queue, the same for every message.
    #[arg(long)]
    key: Option<String>,
    /// Send this many generated messages instead of reading stdin (with --size).
    #[arg(long, requires = "size", value_parser = value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Body bytes of each generated message (with --count).
    #[arg(long, requires = "count", value_parser = value_parser!(u64).range(0..=BODY_BYTES_MAX))]
    size: Option<u64>,
    /// Most messages per send (each send also stays under 4 MiB of bodies).
    #[arg(long, default_value_t = 1, value_parser = value_parser!(u64).range(1..=BATCH_MAX))]
    batch: u64,
    #[command(flatten)]
    common: CommonArgs,
}

/// How many messages and body bytes one send may carry; the first message always goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchLimits {
    messages_max: usize,
    bytes_max: usize,
}

impl BatchLimits {
    fn fits(&self, messages: usize, bytes: usize, next_bytes: usize) -> bool {
        messages == 0 || (messages < self.messages_max && bytes.saturating_add(next_bytes) <= self.bytes_max)
    }
}

/// Stdin lines read ahead of the sends, at most (each up to `BODY_BYTES_MAX`).
const STDIN_LINES_AHEAD: usize = 64;

/// Where bodies come from.
enum Bodies {
    Stdin { lines: mpsc::Receiver<io::Result<Vec<u8>>>, held: Option<io::Result<Vec<u8>>> },
    Generated { made: u64, count: u64, size: usize },
}

impl Bodies {
    /// The next send's bodies; None when the input is exhausted.
    async fn next_batch(&mut self, limits: BatchLimits, first_sequence: u64) -> io::Result<Option<Vec<Vec<u8>>>> {
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut bytes = 0usize;
        match self {
            Bodies::Stdin { lines, held } => {
                let first = match held.take() {
                    Some(item) => Some(item),
                    None => lines.recv().await,
                };
                let Some(first) = first else { return Ok(None) };
                let mut next = Some(first);
                // Take what is at hand without waiting: a line typed alone goes out alone.
                while let Some(item) = next.take() {
                    match item {
                        Ok(body) if limits.fits(batch.len(), bytes, body.len()) => {
                            bytes += body.len();
                            batch.push(body);
                        }
                        Err(e) if batch.is_empty() => return Err(e),
                        other => {
                            *held = Some(other);
                            break;
                        }
                    }
                    next = lines.try_recv().ok();
                }
            }
            Bodies::Generated { made, count, size } => {
                while *made < *count && limits.fits(batch.len(), bytes, *size) {
                    bytes += *size;
                    batch.push(generated_body(first_sequence + batch.len() as u64, *size));
                    *made += 1;
                }
                if batch.is_empty() {
                    return Ok(None);
                }
            }
        }
        Ok(Some(batch))
    }
}

/// A body of `size` bytes that names its sequence (`seq=17 ...`), padded with `a..z`.
pub fn generated_body(sequence: u64, size: usize) -> Vec<u8> {
    let mut body = format!("seq={sequence} ").into_bytes();
    body.truncate(size);
    body.extend((0..size - body.len()).map(|i| b'a' + (i % 26) as u8));
    body
}

/// One line of `r` without its `\n` or `\r\n`; None at the end of input. A line of more than
/// `max` bytes is an error, found after reading at most `max + 2` bytes of it.
fn read_line(r: &mut impl BufRead, max: usize) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(2);
    if r.by_ref().take(limit).read_until(b'\n', &mut line)? == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    if line.len() > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a line is longer than {max} bytes")));
    }
    Ok(Some(line))
}

/// Reads stdin on its own thread: tokio's stdin also blocks a thread, and a plain thread does
/// not hold the runtime open at exit while it waits for input.
fn spawn_stdin_reader() -> mpsc::Receiver<io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(STDIN_LINES_AHEAD);
    std::thread::spawn(move || {
        let mut stdin = io::stdin().lock();
        let max = usize::try_from(BODY_BYTES_MAX).unwrap_or(usize::MAX);
        loop {
            let item = match read_line(&mut stdin, max) {
                Ok(Some(line)) => Ok(line),
                Ok(None) => return,
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// Where one send goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Placement {
    Queue(u32),
    Key(String),
    /// The topic's queues in turn.
    RoundRobin(Vec<u32>),
}

impl Placement {
    /// The target of send number `n` (from 0).
    fn target(&self, n: u64) -> SendTarget {
        match self {
            Placement::Queue(q) => SendTarget::QueueId(*q),
            Placement::Key(k) => SendTarget::RoutingKey(k.clone()),
            Placement::RoundRobin(queues) => SendTarget::QueueId(queues[(n % queues.len() as u64) as usize]),
        }
    }
}

/// Sends `req` to its queue's leader, or by routing key to `--broker` (which forwards it or
/// names the leader).
pub async fn send(router: &Router, req: &SendRequest) -> Result<SendReply, CallFailure> {
    let rpc = |ch, left| {
        let req = req.clone();
        async move { queue_client(ch).send(request(req, left)).await }
    };
    match req.target {
        Some(SendTarget::QueueId(q)) => router.call(q, rpc).await,
        _ => router.cluster().call(Target::Bootstrap, rpc).await,
    }
}

/// The send's results, one per message in order, or why the reply cannot be trusted.
pub fn results_of(reply: SendReply, messages: usize) -> anyhow::Result<Vec<SendResult>> {
    if reply.results.len() != messages {
        bail!("the broker acknowledged {messages} message(s) with {} result(s)", reply.results.len());
    }
    Ok(reply.results)
}

pub fn run(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(produce(args))
}

async fn produce(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let cluster = args.common.connect.cluster();
    let (router, described) = Router::open(cluster, &args.topic).await.with_context(|| format!("describing topic {}", args.topic))?;
    let queues: Vec<u32> = described.queues.iter().map(|q| q.queue_id).collect();
    let placement = match (&args.queue, &args.key) {
        (Some(q), _) if !queues.contains(q) => bail!("topic {} has no queue {q} (its queues: {queues:?})", args.topic),
        (Some(q), _) => Placement::Queue(*q),
        (None, Some(k)) => Placement::Key(k.clone()),
        (None, None) if queues.is_empty() => bail!("topic {} has no queues", args.topic),
        (None, None) => Placement::RoundRobin(queues),
    };
    let mut bodies = match (args.count, args.size) {
        (Some(count), Some(size)) => Bodies::Generated { made: 0, count, size: usize::try_from(size)? },
        _ => Bodies::Stdin { lines: spawn_stdin_reader(), held: None },
    };
    let limits = BatchLimits { messages_max: usize::try_from(args.batch)?, bytes_max: SEND_BYTES_MAX };
    let router = Arc::new(router);
    let producer_id = producer_id();
    let mut out = BufWriter::new(io::stdout().lock());
    let started = Instant::now();
    let (mut acked, mut sends) = (0u64, 0u64);
    let outcome = loop {
        let first_sequence = acked + 1;
        let Some(batch) = bodies.next_batch(limits, first_sequence).await.context("reading stdin")? else { break Ok(ExitCode::SUCCESS) };
        let n = batch.len();
        let messages = batch
            .into_iter()
            .zip(first_sequence..)
            .map(|(body, sequence)| Message { body: body.into(), sequence, ..Default::default() })
            .collect();
        let req =
            SendRequest { topic: args.topic.clone(), target: Some(placement.target(sends)), messages, producer_id: producer_id.clone() };
        sends += 1;
        let last_sequence = first_sequence + n as u64 - 1;
        match send(&router, &req).await {
            Ok(reply) => {
                let results = results_of(reply, n).with_context(|| format!("sending messages {first_sequence}..={last_sequence}"))?;
                acked += n as u64;
                match write_results(&mut out, &results, first_sequence, args.common.json) {
                    Ok(()) => {}
                    // The reader is gone (`| head`): nothing more to say to it.
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break Ok(ExitCode::SUCCESS),
                    Err(e) => break Err(anyhow::Error::new(e).context("writing to stdout")),
                }
            }
            Err(f) if f.maybe_applied => {
                let _ = write_unknown(&mut out, first_sequence..=last_sequence, &f, args.common.json);
                eprintln!("error: messages {first_sequence}..={last_sequence}: outcome unknown, they may be stored: {f}");
                break Ok(ExitCode::from(EXIT_OUTCOME_UNKNOWN));
            }
            Err(f) => {
                break Err(
                    anyhow::Error::new(f).context(format!("sending messages {first_sequence}..={last_sequence} (none of them stored)"))
                );
            }
        }
    };
    let _ = out.flush();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "produced {acked} message(s) to {} in {sends} send(s), {seconds:.2} s ({:.0} msg/s)",
        args.topic,
        acked as f64 / seconds.max(1e-9)
    );
    outcome
}

/// Message number `first_sequence + i` (from 1, the line number with stdin) was stored at
/// `results[i]`. Flushed, so that an interactive user sees each line's result at once.
fn write_results(out: &mut impl Write, results: &[SendResult], first_sequence: u64, json: bool) -> io::Result<()> {
    for (r, sequence) in results.iter().zip(first_sequence..) {
        if json {
            writeln!(out, "{}", json!({ "sequence": sequence, "queue": r.queue_id, "offset": r.offset, "message_id": r.message_id }))?;
        } else {
            writeln!(out, "{} {} {}", r.queue_id, r.offset, r.message_id)?;
        }
    }
    out.flush()
}

fn write_unknown(out: &mut impl Write, sequences: std::ops::RangeInclusive<u64>, f: &CallFailure, json: bool) -> io::Result<()> {
    if json {
        for sequence in sequences {
            writeln!(out, "{}", json!({ "sequence": sequence, "outcome": "unknown", "error": f.to_string() }))?;
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args_in_tests::FromTestArgs;

    #[test]
    fn arguments() {
        let a = ProduceArgs::from_test_args(&["--topic", "t"]).expect("minimal");
        assert_eq!((a.queue, a.key, a.count, a.size, a.batch, a.common.json), (None, None, None, None, 1, false));
        if std::env::var_os("RAFTMQ_BROKER").is_none() {
            assert_eq!(a.common.connect.broker, ["127.0.0.1:8081"]);
        }
        if std::env::var_os("RAFTMQ_TIMEOUT").is_none() {
            assert_eq!(a.common.connect.timeout, std::time::Duration::from_secs(10));
        }
        let a = ProduceArgs::from_test_args(&["--topic", "t", "--broker", "b1:1,b2:2", "--broker", "b3:3", "--timeout", "1500ms"])
            .expect("a list");
        assert_eq!(a.common.connect.broker, ["b1:1", "b2:2", "b3:3"]);
        assert_eq!(a.common.connect.timeout, std::time::Duration::from_millis(1500));
        assert!(ProduceArgs::from_test_args(&["--topic", "t", "--timeout", "0s"]).is_err());
        let a = ProduceArgs::from_test_args(&["--topic", "t", "--queue", "3", "--count", "10", "--size", "0", "--batch", "16", "--json"])
            .expect("generated");
        assert_eq!((a.queue, a.count, a.size, a.batch, a.common.json), (Some(3), Some(10), Some(0), 16, true));
        assert!(ProduceArgs::from_test_args(&["--topic", "t", "--queue", "1", "--key", "k"]).is_err(), "queue and key together");
        assert!(ProduceArgs::from_test_args(&["--topic", "t", "--count", "10"]).is_err(), "count without size");
        assert!(ProduceArgs::from_test_args(&["--topic", "t", "--size", "10"]).is_err(), "size without count");
        assert!(ProduceArgs::from_test_args(&["--topic", "t", "--batch", "0"]).is_err());
        assert!(ProduceArgs::from_test_args(&["--topic", "t", "--count", "1", "--size", "4194305"]).is_err(), "over the body limit");
        assert!(ProduceArgs::from_test_args(&[]).is_err(), "no topic");
    }

    #[test]
    fn lines_lose_their_line_ends_and_are_bounded() {
        let mut r = io::Cursor::new(b"one\ntwo\r\n\nlast".to_vec());
        let lines: Vec<Vec<u8>> = std::iter::from_fn(|| read_line(&mut r, 8).expect("read")).collect();
        assert_eq!(lines, [b"one".to_vec(), b"two".to_vec(), Vec::new(), b"last".to_vec()]);

        let mut r = io::Cursor::new(b"12345678\n123456789\nnext\n".to_vec());
        assert_eq!(read_line(&mut r, 8).expect("fits"), Some(b"12345678".to_vec()));
        assert_eq!(read_line(&mut r, 8).expect_err("too long").kind(), io::ErrorKind::InvalidData);

        let mut r = io::Cursor::new(vec![b'x'; 100]);
        assert!(read_line(&mut r, 8).is_err(), "a long line without newline");
    }

    #[test]
    fn batches_respect_count_and_bytes() {
        let l = BatchLimits { messages_max: 3, bytes_max: 10 };
        assert!(l.fits(0, 0, 100), "the first message always goes");
        assert!(l.fits(2, 5, 5));
        assert!(!l.fits(3, 3, 1), "count");
        assert!(!l.fits(2, 6, 5), "bytes");
        assert!(!l.fits(1, usize::MAX, 1), "no overflow");
    }

    #[tokio::test]
    async fn stdin_batches_take_what_is_at_hand() {
        let (tx, rx) = mpsc::channel(16);
        for line in ["a", "bb", "ccc", "dddd"] {
            tx.send(Ok(line.as_bytes().to_vec())).await.expect("send");
        }
        let mut bodies = Bodies::Stdin { lines: rx, held: None };
        let l = BatchLimits { messages_max: 3, bytes_max: 5 };
        assert_eq!(bodies.next_batch(l, 1).await.expect("read"), Some(vec![b"a".to_vec(), b"bb".to_vec()]));
        assert_eq!(bodies.next_batch(l, 3).await.expect("read"), Some(vec![b"ccc".to_vec()]));
        tx.send(Err(io::Error::other("broken"))).await.expect("send");
        assert_eq!(bodies.next_batch(l, 4).await.expect("read"), Some(vec![b"dddd".to_vec()]), "the error waits its turn");
        assert!(bodies.next_batch(l, 5).await.is_err());
        drop(tx);
        assert_eq!(bodies.next_batch(l, 5).await.expect("end"), None);
    }

    #[tokio::test]
    async fn generated_batches() {
        let mut bodies = Bodies::Generated { made: 0, count: 5, size: 12 };
        let l = BatchLimits { messages_max: 2, bytes_max: 1 << 20 };
        let mut sizes = Vec::new();
        let mut next = 1;
        while let Some(batch) = bodies.next_batch(l, next).await.expect("generated") {
            assert!(batch.iter().all(|b| b.len() == 12));
            assert_eq!(batch[0], generated_body(next, 12));
            next += batch.len() as u64;
            sizes.push(batch.len());
        }
        assert_eq!(sizes, [2, 2, 1]);
    }

    #[test]
    fn generated_bodies() {
        assert_eq!(&generated_body(17, 12)[..], b"seq=17 abcde");
        assert_eq!(&generated_body(17, 3)[..], b"seq");
        assert!(generated_body(1, 0).is_empty());
        assert_eq!(generated_body(1, 100).len(), 100);
    }

    #[test]
    fn placements() {
        let rr = Placement::RoundRobin(vec![4, 7]);
        let got: Vec<SendTarget> = (0..3).map(|n| rr.target(n)).collect();
        assert_eq!(got, [SendTarget::QueueId(4), SendTarget::QueueId(7), SendTarget::QueueId(4)]);
        assert_eq!(Placement::Key("k".into()).target(9), SendTarget::RoutingKey("k".into()));
        assert_eq!(Placement::Queue(2).target(9), SendTarget::QueueId(2));
    }

    #[test]
    fn result_lines() {
        let r = |queue_id, offset, id: &str| SendResult { message_id: id.into(), queue_id, offset };
        let results = vec![r(1, 40, "m40"), r(1, 41, "m41")];
        let mut text = Vec::new();
        write_results(&mut text, &results, 5, false).expect("write");
        assert_eq!(String::from_utf8(text).expect("utf-8"), "1 40 m40\n1 41 m41\n");
        let mut json = Vec::new();
        write_results(&mut json, &results[..1], 5, true).expect("write");
        let v: serde_json::Value = serde_json::from_slice(&json).expect("json");
        assert_eq!(v, json!({ "sequence": 5, "queue": 1, "offset": 40, "message_id": "m40" }));
        assert!(results_of(SendReply { status: None, results: results.clone() }, 3).is_err());
        assert_eq!(results_of(SendReply { status: None, results: results.clone() }, 2).expect("two"), results);
    }
}

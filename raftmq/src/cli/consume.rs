//! `raftmq consume`: reads a topic's queues and prints each message's body on its own line
//! (UTF-8, invalid bytes replaced), or with `--json` one object per message: `queue`, `offset`,
//! `message_id`, `store_time_ms` and `body_base64` (the exact bytes, base64). A summary goes to
//! stderr.
//!
//! Every queue (or the `--queue`) is read by its own long-polling fetch loop from its leader.
//! Without `--group` reading starts at each queue's end (only new messages), or at offset 0 with
//! `--from-beginning`. With `--group` it starts at the group's committed offset (where none is
//! committed: offset 0 with `--from-beginning`, else the end) and commits after printing each
//! batch, so a message is printed at least once across runs. It stops after `--max-messages`,
//! when nothing new came for `--timeout-ms`, or on Ctrl-C.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use clap::{Args, value_parser};
use proto::raftmq::v1::{CommitOffsetRequest, FetchReply, FetchRequest, GetOffsetRequest, QueueInfo, StoredMessage};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use client::{Router, queue_client, request};

use super::CommonArgs;

/// How long one fetch waits at the broker for a message (the broker caps it).
const FETCH_WAIT_MS: u32 = 5_000;
/// An empty fetch that came back sooner than this (a broker that does not long-poll) is
/// followed by a pause, so an idle queue costs at most 10 fetches a second.
const EMPTY_FETCH_INTERVAL_MIN: Duration = Duration::from_millis(100);
/// Bytes of fetched, not yet printed messages over all queues, roughly: each queue's fetches
/// ask for its share (the broker still returns a first message larger than that whole).
const FETCH_BUFFER_BYTES: u32 = 64 << 20;
const FETCH_BYTES_MIN: u32 = 64 << 10;
const FETCH_BYTES_MAX: u32 = 4 << 20;

#[derive(Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    #[arg(long)]
    topic: String,
    /// Consumer group: start at its committed offsets, and commit after printing each batch.
    #[arg(long)]
    group: Option<String>,
    /// Start at offset 0 of each queue (with --group: of each queue where the group committed
    /// nothing) [default: at the end, only new messages].
    #[arg(long)]
    from_beginning: bool,
    /// Read only this queue [default: every queue of the topic].
    #[arg(long)]
    queue: Option<u32>,
    /// Stop after printing this many messages [default: no limit].
    #[arg(long, value_parser = value_parser!(u64).range(1..))]
    max_messages: Option<u64>,
    /// Stop when no new message came for this many milliseconds [default: wait until Ctrl-C].
    #[arg(long, value_parser = value_parser!(u64).range(1..))]
    timeout_ms: Option<u64>,
    #[command(flatten)]
    common: CommonArgs,
}

/// Where a queue's reading starts.
fn start_offset(committed: Option<u64>, from_beginning: bool, end_offset: u64) -> u64 {
    match committed {
        Some(offset) => offset,
        None if from_beginning => 0,
        None => end_offset,
    }
}

/// The offset to fetch from after `reply` to a fetch at `requested`, once the reply is checked:
/// messages in increasing offsets from `requested`, and a next offset past them.
pub fn next_offset(requested: u64, reply: &FetchReply) -> Result<u64, String> {
    let mut expected_min = requested;
    for m in &reply.messages {
        if m.offset < expected_min {
            return Err(format!("message at offset {} where {expected_min} or more was due", m.offset));
        }
        expected_min = m.offset + 1;
    }
    if reply.next_offset < expected_min {
        return Err(format!("next offset {} below {expected_min}", reply.next_offset));
    }
    Ok(reply.next_offset)
}

/// Messages fetched from one queue, and where its next fetch starts.
#[derive(Debug)]
struct Batch {
    queue_id: u32,
    messages: Vec<StoredMessage>,
    next_offset: u64,
}

impl Batch {
    /// The offset to commit once the first `printed` messages are printed: past the last one
    /// printed, or the batch's next offset when all were.
    fn commit_offset(&self, printed: usize) -> u64 {
        match printed {
            n if n >= self.messages.len() => self.next_offset,
            0 => self.messages.first().map_or(self.next_offset, |m| m.offset),
            n => self.messages[n - 1].offset + 1,
        }
    }
}

/// How many of `available` messages to print with `remaining` left to print (None: no limit).
fn printable(available: usize, remaining: Option<u64>) -> usize {
    remaining.map_or(available, |r| available.min(usize::try_from(r).unwrap_or(usize::MAX)))
}

/// Each queue's fetch size: its share of the buffer bound, within limits.
fn fetch_bytes(queues: usize) -> u32 {
    let queues = u32::try_from(queues.max(1)).unwrap_or(u32::MAX);
    (FETCH_BUFFER_BYTES / queues).clamp(FETCH_BYTES_MIN, FETCH_BYTES_MAX)
}

/// Reads `queue_id` from `offset` for ever, handing each non-empty batch to `tx`; ends when
/// `tx` is closed or after sending the error that stopped it.
async fn fetch_loop(
    router: Arc<Router>,
    topic: String,
    queue_id: u32,
    mut offset: u64,
    max_bytes: u32,
    tx: mpsc::Sender<anyhow::Result<Batch>>,
) {
    loop {
        let started = Instant::now();
        let req =
            FetchRequest { topic: topic.clone(), queue_id, offset, max_messages: 0, max_bytes, wait_ms: FETCH_WAIT_MS, local_only: false };
        let deadline = router.cluster().timeout() + Duration::from_millis(u64::from(FETCH_WAIT_MS));
        let reply = router
            .call_within(queue_id, deadline, |ch, left| {
                let req = req.clone();
                async move { queue_client(ch).fetch(request(req, left)).await }
            })
            .await;
        let checked = reply
            .map_err(anyhow::Error::new)
            .and_then(|reply| next_offset(offset, &reply).map(|next| (reply, next)).map_err(|e| anyhow!("bad fetch reply: {e}")));
        let (reply, next) = match checked {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(Err(e.context(format!("fetching queue {queue_id} at offset {offset}")))).await;
                return;
            }
        };
        if reply.messages.is_empty() {
            tokio::time::sleep(EMPTY_FETCH_INTERVAL_MIN.saturating_sub(started.elapsed())).await;
        } else if tx.send(Ok(Batch { queue_id, messages: reply.messages, next_offset: next })).await.is_err() {
            return;
        }
        offset = next;
    }
}

pub fn run(args: ConsumeArgs) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(consume(args))
}

/// Why reading stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    MaxMessages,
    Idle,
    Interrupted,
    ReaderGone,
}

async fn consume(args: ConsumeArgs) -> anyhow::Result<ExitCode> {
    let cluster = args.common.connect.cluster();
    let (router, described) = Router::open(cluster, &args.topic).await.with_context(|| format!("describing topic {}", args.topic))?;
    let router = Arc::new(router);
    let queues: Vec<&QueueInfo> = described.queues.iter().filter(|q| args.queue.is_none_or(|id| q.queue_id == id)).collect();
    if queues.is_empty() {
        match args.queue {
            Some(q) => bail!("topic {} has no queue {q}", args.topic),
            None => bail!("topic {} has no queues", args.topic),
        }
    }
    let (tx, mut rx) = mpsc::channel(queues.len().min(64));
    let mut fetchers = JoinSet::new();
    let max_bytes = fetch_bytes(queues.len());
    for q in &queues {
        let committed = match &args.group {
            Some(group) => committed_offset(&router, group, &args.topic, q.queue_id).await?,
            None => None,
        };
        let offset = start_offset(committed, args.from_beginning, q.end_offset);
        tracing::debug!(queue = q.queue_id, offset, "reading");
        fetchers.spawn(fetch_loop(router.clone(), args.topic.clone(), q.queue_id, offset, max_bytes, tx.clone()));
    }
    drop(tx);

    let mut out = BufWriter::new(io::stdout().lock());
    let idle = args.timeout_ms.map(Duration::from_millis);
    let mut printed_total = 0u64;
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(ctrl_c);
    let stop = loop {
        let remaining = args.max_messages.map(|m| m - printed_total);
        if remaining == Some(0) {
            break Stop::MaxMessages;
        }
        let next = tokio::select! {
            _ = &mut ctrl_c => break Stop::Interrupted,
            next = recv(&mut rx, idle) => next,
        };
        let batch = match next {
            Some(Some(Ok(batch))) => batch,
            Some(Some(Err(e))) => return Err(e),
            // Every fetch loop ends by sending its error, so the channel cannot close first.
            Some(None) => bail!("every fetch loop ended"),
            None => break Stop::Idle,
        };
        let n = printable(batch.messages.len(), remaining);
        match write_messages(&mut out, batch.queue_id, &batch.messages[..n], args.common.json) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break Stop::ReaderGone,
            Err(e) => return Err(anyhow::Error::new(e).context("writing to stdout")),
        }
        printed_total += n as u64;
        if let Some(group) = &args.group {
            commit(&router, group, &args.topic, batch.queue_id, batch.commit_offset(n)).await?;
        }
    };
    fetchers.abort_all();
    let why = match stop {
        Stop::MaxMessages => "--max-messages reached",
        Stop::Idle => "nothing new within --timeout-ms",
        Stop::Interrupted => "interrupted",
        Stop::ReaderGone => "stdout closed",
    };
    eprintln!("consumed {printed_total} message(s) from {} ({why})", args.topic);
    Ok(ExitCode::SUCCESS)
}

/// The next item from the fetch loops: None when `idle` passed without one.
async fn recv<T>(rx: &mut mpsc::Receiver<T>, idle: Option<Duration>) -> Option<Option<T>> {
    match idle {
        Some(d) => tokio::time::timeout(d, rx.recv()).await.ok(),
        None => Some(rx.recv().await),
    }
}

async fn committed_offset(router: &Router, group: &str, topic: &str, queue_id: u32) -> anyhow::Result<Option<u64>> {
    let req = GetOffsetRequest { consumer_group: group.to_string(), topic: topic.to_string(), queue_id };
    let reply = router
        .call(queue_id, |ch, left| {
            let req = req.clone();
            async move { queue_client(ch).get_offset(request(req, left)).await }
        })
        .await
        .with_context(|| format!("reading group {group}'s offset of queue {queue_id}"))?;
    Ok(reply.offset)
}

async fn commit(router: &Router, group: &str, topic: &str, queue_id: u32, offset: u64) -> anyhow::Result<()> {
    let req = CommitOffsetRequest { consumer_group: group.to_string(), topic: topic.to_string(), queue_id, offset };
    router
        .call(queue_id, |ch, left| {
            let req = req.clone();
            async move { queue_client(ch).commit_offset(request(req, left)).await }
        })
        .await
        .with_context(|| format!("committing group {group}'s offset {offset} of queue {queue_id}"))?;
    Ok(())
}

/// Prints `messages` and flushes, so that what is committed next has reached the reader.
fn write_messages(out: &mut impl Write, queue_id: u32, messages: &[StoredMessage], json: bool) -> io::Result<()> {
    for m in messages {
        let body = m.message.as_ref().map_or(&[][..], |msg| &msg.body[..]);
        if json {
            let body_base64 = base64::engine::general_purpose::STANDARD.encode(body);
            let line = json!({
                "queue": queue_id,
                "offset": m.offset,
                "message_id": m.message_id,
                "store_time_ms": m.store_time_ms,
                "body_base64": body_base64,
            });
            writeln!(out, "{line}")?;
        } else {
            out.write_all(String::from_utf8_lossy(body).as_bytes())?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args_in_tests::FromTestArgs;
    use proto::raftmq::v1::Message;

    #[test]
    fn arguments() {
        let a = ConsumeArgs::from_test_args(&["--topic", "t"]).expect("minimal");
        assert_eq!((a.group, a.from_beginning, a.queue, a.max_messages, a.timeout_ms), (None, false, None, None, None));
        let a = ConsumeArgs::from_test_args(&[
            "--topic",
            "t",
            "--group",
            "g",
            "--from-beginning",
            "--queue",
            "2",
            "--max-messages",
            "5",
            "--timeout-ms",
            "100",
        ])
        .expect("all");
        assert_eq!(
            (a.group.as_deref(), a.from_beginning, a.queue, a.max_messages, a.timeout_ms),
            (Some("g"), true, Some(2), Some(5), Some(100))
        );
        assert!(ConsumeArgs::from_test_args(&["--topic", "t", "--max-messages", "0"]).is_err());
        assert!(ConsumeArgs::from_test_args(&["--topic", "t", "--timeout-ms", "0"]).is_err());
    }

    #[test]
    fn where_reading_starts() {
        assert_eq!(start_offset(Some(7), false, 100), 7);
        assert_eq!(start_offset(Some(7), true, 100), 7, "a committed offset wins");
        assert_eq!(start_offset(None, true, 100), 0);
        assert_eq!(start_offset(None, false, 100), 100);
    }

    fn stored(offset: u64, body: &[u8]) -> StoredMessage {
        StoredMessage {
            offset,
            message_id: format!("m{offset}"),
            store_time_ms: 1_700_000_000_000,
            message: Some(Message { body: body.to_vec().into(), ..Default::default() }),
        }
    }

    fn reply(offsets: &[u64], next_offset: u64) -> FetchReply {
        FetchReply {
            status: None,
            messages: offsets.iter().map(|&o| stored(o, b"x")).collect(),
            next_offset,
            end_offset: next_offset,
            start_offset: 0,
        }
    }

    #[test]
    fn fetch_replies_are_checked() {
        assert_eq!(next_offset(10, &reply(&[10, 11, 12], 13)), Ok(13));
        assert_eq!(next_offset(10, &reply(&[], 10)), Ok(10));
        assert_eq!(next_offset(10, &reply(&[12], 13)), Ok(13), "a gap is allowed");
        assert!(next_offset(10, &reply(&[9], 10)).is_err(), "before the request");
        assert!(next_offset(10, &reply(&[10, 10], 11)).is_err(), "not increasing");
        assert!(next_offset(10, &reply(&[10, 11], 11)).is_err(), "next offset inside the batch");
        assert!(next_offset(10, &reply(&[], 9)).is_err(), "next offset going back");
    }

    #[test]
    fn printing_and_committing_part_of_a_batch() {
        let batch = Batch { queue_id: 1, messages: reply(&[10, 11, 12], 13).messages, next_offset: 13 };
        assert_eq!(printable(3, None), 3);
        assert_eq!(printable(3, Some(2)), 2);
        assert_eq!(printable(3, Some(9)), 3);
        assert_eq!(batch.commit_offset(3), 13);
        assert_eq!(batch.commit_offset(2), 12);
        assert_eq!(batch.commit_offset(0), 10);
    }

    #[test]
    fn fetch_sizes_share_the_buffer() {
        assert_eq!(fetch_bytes(0), 4 << 20);
        assert_eq!(fetch_bytes(1), 4 << 20);
        assert_eq!(fetch_bytes(64), 1 << 20);
        assert_eq!(fetch_bytes(100_000), 64 << 10);
    }

    #[test]
    fn message_lines() {
        let messages = [stored(10, b"hello"), stored(11, b"bad \xff byte")];
        let mut text = Vec::new();
        write_messages(&mut text, 3, &messages, false).expect("write");
        assert_eq!(String::from_utf8(text).expect("utf-8"), "hello\nbad \u{fffd} byte\n");
        let mut lines = Vec::new();
        write_messages(&mut lines, 3, &messages[1..], true).expect("write");
        let v: serde_json::Value = serde_json::from_slice(&lines).expect("json");
        assert_eq!(
            v,
            json!({ "queue": 3, "offset": 11, "message_id": "m11", "store_time_ms": 1_700_000_000_000i64, "body_base64": "YmFkIP8gYnl0ZQ==" })
        );
    }
}

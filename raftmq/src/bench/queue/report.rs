//! How a queue benchmark ends: one JSON object, or a few lines of text, on stdout.

use std::io::{self, Write};

use serde::Serialize;

use super::state::{BenchKind, Snapshot, StopReason};
use crate::bench::latency::Latency;

#[derive(Debug, Clone, Serialize)]
pub struct QueueBenchReport {
    /// What was asked.
    #[serde(flatten)]
    pub shape: RunShape,
    pub seconds: f64,
    pub acked: u64,
    pub failed: u64,
    pub unknown: u64,
    pub consumed: u64,
    pub fetch_failures: u64,
    /// Of the messages this benchmark is about: acknowledged (produce) or read (consume, e2e).
    pub msgs_per_sec: f64,
    /// Their bodies, in MiB (2^20 bytes) per second.
    pub mib_per_sec: f64,
    /// produce, e2e: each send, from the call to its acknowledgement.
    pub send_latency: Option<Latency>,
    /// consume: each fetch that returned messages.
    pub fetch_latency: Option<Latency>,
    /// e2e: each message, from its send to its reading.
    pub end_to_end_latency: Option<Latency>,
    /// "done", or why the run stopped before its count: "timeout", "interrupted".
    pub stopped: &'static str,
    pub first_error: Option<String>,
}

/// The run's settings, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct RunShape {
    #[serde(rename = "bench")]
    pub kind: BenchKind,
    pub topic: String,
    pub queues: usize,
    /// Messages, body bytes, sends in flight (consume: queues read at once), messages per send.
    pub count: u64,
    pub size: u64,
    pub concurrency: u64,
    pub batch: u64,
    /// The client protocol of the sends.
    pub protocol: super::Protocol,
    /// consume: the most messages per fetch or receive asked for (unset: the default), and
    /// the consumer group whose offsets the native fetches commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_batch: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_group: Option<String>,
}

pub struct Measured {
    pub seconds: f64,
    pub totals: Snapshot,
    pub send_latency: Option<Latency>,
    pub fetch_latency: Option<Latency>,
    pub end_to_end_latency: Option<Latency>,
    pub stop: Option<StopReason>,
    pub first_error: Option<String>,
}

impl QueueBenchReport {
    pub fn new(shape: RunShape, m: Measured) -> Self {
        let t = &m.totals;
        let (messages, bytes) = match shape.kind {
            BenchKind::Produce => (t.acked, t.acked_bytes),
            BenchKind::Consume | BenchKind::E2e => (t.consumed, t.consumed_bytes),
        };
        let per_sec = |v: f64| if m.seconds > 0.0 { v / m.seconds } else { 0.0 };
        let stopped = match m.stop {
            None | Some(StopReason::Drained) => "done",
            Some(StopReason::Timeout) => "timeout",
            Some(StopReason::Interrupted) => "interrupted",
        };
        Self {
            shape,
            seconds: m.seconds,
            acked: t.acked,
            failed: t.failed,
            unknown: t.unknown,
            consumed: t.consumed,
            fetch_failures: t.fetch_failures,
            msgs_per_sec: per_sec(messages as f64),
            mib_per_sec: per_sec(bytes as f64 / f64::from(1 << 20)),
            send_latency: m.send_latency,
            fetch_latency: m.fetch_latency,
            end_to_end_latency: m.end_to_end_latency,
            stopped,
            first_error: m.first_error,
        }
    }

    /// The run did all it was asked: every message acknowledged (produce), read (consume), or
    /// both (e2e), without a failure.
    pub fn complete(&self) -> bool {
        let sent = self.acked == self.shape.count && self.failed == 0 && self.unknown == 0;
        let read = self.consumed >= self.shape.count;
        match self.shape.kind {
            BenchKind::Produce => sent,
            BenchKind::Consume => read,
            BenchKind::E2e => sent && read,
        }
    }

    pub fn write(&self, out: &mut impl Write, json: bool) -> io::Result<()> {
        if json {
            return crate::cli::write_json_line(out, self);
        }
        writeln!(
            out,
            "bench {} ({}): topic {}, {} queues, {} x {} B, concurrency {}, batch {}",
            self.shape.kind.name(),
            self.shape.protocol.name(),
            self.shape.topic,
            self.shape.queues,
            self.shape.count,
            self.shape.size,
            self.shape.concurrency,
            self.shape.batch
        )?;
        if let Some(n) = self.shape.read_batch {
            writeln!(out, "  read batch {n}")?;
        }
        if let Some(group) = &self.shape.commit_group {
            writeln!(out, "  each fetch's offset committed as consumer group {group}")?;
        }
        let what = if self.shape.kind == BenchKind::Produce { "acked" } else { "consumed" };
        writeln!(out, "  {:.2} s, {what} {:.0} msg/s, {:.2} MiB/s", self.seconds, self.msgs_per_sec, self.mib_per_sec)?;
        if self.shape.kind != BenchKind::Consume {
            writeln!(out, "  sent: {} acked, {} failed, {} unknown outcome", self.acked, self.failed, self.unknown)?;
        }
        if self.shape.kind != BenchKind::Produce {
            writeln!(out, "  read: {} of {}, {} failed fetches", self.consumed, self.shape.count, self.fetch_failures)?;
        }
        let latencies = [
            ("send to ack (per send)", &self.send_latency),
            ("fetch (per non-empty fetch)", &self.fetch_latency),
            ("send to consume (per message)", &self.end_to_end_latency),
        ];
        for (name, l) in latencies {
            if let Some(l) = l {
                writeln!(
                    out,
                    "  {name}: p50 {} ms  p99 {} ms  p999 {} ms  max {} ms",
                    ms(l.p50_us),
                    ms(l.p99_us),
                    ms(l.p999_us),
                    ms(l.max_us)
                )?;
            }
        }
        if let Some(e) = &self.first_error {
            writeln!(out, "  first error: {e}")?;
        }
        if !self.complete() {
            writeln!(out, "  INCOMPLETE (stopped: {})", self.stopped)?;
        }
        Ok(())
    }
}

fn ms(us: f64) -> String {
    format!("{:.3}", us / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(kind: BenchKind) -> RunShape {
        RunShape {
            kind,
            topic: "t".into(),
            queues: 4,
            count: 1000,
            size: 1024,
            concurrency: 8,
            batch: 1,
            protocol: super::super::Protocol::Native,
            read_batch: None,
            commit_group: None,
        }
    }

    fn latency() -> Latency {
        Latency { p50_us: 1500.0, p99_us: 4000.0, p999_us: 9000.0, max_us: 12_000.0 }
    }

    fn measured(totals: Snapshot, stop: Option<StopReason>) -> Measured {
        Measured {
            seconds: 2.0,
            totals,
            send_latency: Some(latency()),
            fetch_latency: None,
            end_to_end_latency: None,
            stop,
            first_error: None,
        }
    }

    #[test]
    fn json_names_the_run_at_its_top_level() {
        let r = QueueBenchReport::new(shape(BenchKind::Produce), measured(Snapshot::default(), None));
        let mut out = Vec::new();
        r.write(&mut out, true).expect("write");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("one JSON object");
        assert_eq!((v["bench"].as_str(), v["topic"].as_str(), v["count"].as_u64()), (Some("produce"), Some("t"), Some(1000)), "{v}");
    }

    #[test]
    fn rates_count_the_messages_the_bench_is_about() {
        let totals = Snapshot { acked: 1000, acked_bytes: 1000 * 1024, consumed: 10, consumed_bytes: 10, ..Default::default() };
        let r = QueueBenchReport::new(shape(BenchKind::Produce), measured(totals, None));
        assert_eq!((r.msgs_per_sec, r.stopped), (500.0, "done"));
        assert!((r.mib_per_sec - 0.48828125).abs() < 1e-9);
        assert!(r.complete());
        let r = QueueBenchReport::new(shape(BenchKind::Consume), measured(totals, None));
        assert_eq!(r.msgs_per_sec, 5.0);
        assert!(!r.complete());
    }

    #[test]
    fn completeness() {
        let all = Snapshot { acked: 1000, consumed: 1000, ..Default::default() };
        assert!(QueueBenchReport::new(shape(BenchKind::E2e), measured(all, Some(StopReason::Drained))).complete());
        let unknown = Snapshot { acked: 999, unknown: 1, consumed: 1000, ..Default::default() };
        assert!(!QueueBenchReport::new(shape(BenchKind::E2e), measured(unknown, None)).complete());
        let short = Snapshot { acked: 1000, consumed: 999, ..Default::default() };
        let r = QueueBenchReport::new(shape(BenchKind::E2e), measured(short, Some(StopReason::Timeout)));
        assert!(!r.complete());
        assert_eq!(r.stopped, "timeout");
    }

    #[test]
    fn text_and_json() {
        let totals = Snapshot { acked: 900, failed: 60, unknown: 40, acked_bytes: 900 * 1024, ..Default::default() };
        let mut m = measured(totals, Some(StopReason::Interrupted));
        m.first_error = Some("send to queue 1: busy".into());
        let r = QueueBenchReport::new(shape(BenchKind::Produce), m);
        let mut text = Vec::new();
        r.write(&mut text, false).expect("write");
        assert_eq!(
            String::from_utf8(text).expect("utf-8"),
            "bench produce (native): topic t, 4 queues, 1000 x 1024 B, concurrency 8, batch 1\n\
             \x20 2.00 s, acked 450 msg/s, 0.44 MiB/s\n\
             \x20 sent: 900 acked, 60 failed, 40 unknown outcome\n\
             \x20 send to ack (per send): p50 1.500 ms  p99 4.000 ms  p999 9.000 ms  max 12.000 ms\n\
             \x20 first error: send to queue 1: busy\n\
             \x20 INCOMPLETE (stopped: interrupted)\n"
        );
        let mut json = Vec::new();
        r.write(&mut json, true).expect("write");
        let v: serde_json::Value = serde_json::from_slice(&json).expect("json");
        assert_eq!(v["bench"], "produce");
        assert_eq!(v["unknown"], 40);
        assert_eq!(v["send_latency"]["p99_us"], 4000.0);
        assert!(v["fetch_latency"].is_null());
    }
}

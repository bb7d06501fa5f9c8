//! What the workers of one queue benchmark share: counters, the stop signal, the progress line.

use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Running totals; each counter only grows.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages whose send was acknowledged.
    pub acked: AtomicU64,
    /// Messages whose send failed for sure (nothing stored).
    pub failed: AtomicU64,
    /// Messages whose send's outcome is unknown (maybe stored).
    pub unknown: AtomicU64,
    /// Messages read (of this run, for e2e).
    pub consumed: AtomicU64,
    pub acked_bytes: AtomicU64,
    pub consumed_bytes: AtomicU64,
    /// Fetches that failed after their retries (the worker tries again).
    pub fetch_failures: AtomicU64,
    /// The first failure of the run, for the report; later ones are only logged.
    first_error: Mutex<Option<String>>,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Records a failed call that the run goes on after.
    pub fn note_error(&self, error: fmt::Arguments<'_>) {
        tracing::debug!(%error, "call failed");
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            tracing::warn!(%error, "call failed (later failures are counted, not logged)");
            *first = Some(error.to_string());
        }
    }

    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn snapshot(&self) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            acked: get(&self.acked),
            failed: get(&self.failed),
            unknown: get(&self.unknown),
            consumed: get(&self.consumed),
            acked_bytes: get(&self.acked_bytes),
            consumed_bytes: get(&self.consumed_bytes),
            fetch_failures: get(&self.fetch_failures),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub acked: u64,
    pub failed: u64,
    pub unknown: u64,
    pub consumed: u64,
    pub acked_bytes: u64,
    pub consumed_bytes: u64,
    pub fetch_failures: u64,
}

/// Why a run stopped early; the first reason set wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `--timeout` passed.
    Timeout,
    /// Ctrl-C.
    Interrupted,
    /// e2e: producing ended and the consumers read what they could.
    Drained,
}

#[derive(Debug, Default)]
pub struct StopSignal {
    /// 0 while running, else a `StopReason` + 1.
    reason: AtomicU8,
}

impl StopSignal {
    pub fn stop(&self, reason: StopReason) {
        let code = match reason {
            StopReason::Timeout => 1,
            StopReason::Interrupted => 2,
            StopReason::Drained => 3,
        };
        let _ = self.reason.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
    }

    pub fn reason(&self) -> Option<StopReason> {
        match self.reason.load(Ordering::Acquire) {
            1 => Some(StopReason::Timeout),
            2 => Some(StopReason::Interrupted),
            3 => Some(StopReason::Drained),
            _ => None,
        }
    }

    /// Whether a worker should stop before its next call: a reason is set, or `deadline` passed
    /// (which then becomes the reason).
    pub fn should_stop(&self, deadline: Instant) -> bool {
        if self.reason().is_none() && Instant::now() >= deadline {
            self.stop(StopReason::Timeout);
        }
        self.reason().is_some()
    }
}

/// The benchmark kind, for names in output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchKind {
    Produce,
    Consume,
    E2e,
}

impl BenchKind {
    pub fn name(self) -> &'static str {
        match self {
            BenchKind::Produce => "produce",
            BenchKind::Consume => "consume",
            BenchKind::E2e => "e2e",
        }
    }
}

/// One progress line: totals against the target and the rate over the last interval.
pub fn progress_line(kind: BenchKind, elapsed: Duration, count: u64, now: Snapshot, before: Snapshot, interval: Duration) -> String {
    let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / interval.as_secs_f64().max(1e-9);
    let t = elapsed.as_secs_f64();
    let sent =
        format!("{}/{count} acked ({:.0} msg/s), {} failed, {} unknown", now.acked, rate(now.acked, before.acked), now.failed, now.unknown);
    let read = format!("{}/{count} consumed ({:.0} msg/s)", now.consumed, rate(now.consumed, before.consumed));
    let failures = if now.fetch_failures > 0 { format!(", {} failed fetches", now.fetch_failures) } else { String::new() };
    match kind {
        BenchKind::Produce => format!("[{t:6.1} s] produce: {sent}"),
        BenchKind::Consume => format!("[{t:6.1} s] consume: {read}{failures}"),
        BenchKind::E2e => format!("[{t:6.1} s] e2e: {sent}; {read}{failures}"),
    }
}

/// Prints a progress line to stderr once a second until aborted.
pub async fn report_progress(kind: BenchKind, count: u64, counters: Arc<Counters>, started: Instant) {
    const INTERVAL: Duration = Duration::from_secs(1);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + INTERVAL, INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut before = counters.snapshot();
    let mut at = Instant::now();
    loop {
        ticks.tick().await;
        let now = counters.snapshot();
        eprintln!("{}", progress_line(kind, started.elapsed(), count, now, before, at.elapsed()));
        before = now;
        at = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_stop_reason_wins_and_deadlines_stop() {
        let s = StopSignal::default();
        let later = Instant::now() + Duration::from_secs(60);
        assert!(!s.should_stop(later));
        assert!(s.should_stop(Instant::now()));
        assert_eq!(s.reason(), Some(StopReason::Timeout));
        s.stop(StopReason::Interrupted);
        assert_eq!(s.reason(), Some(StopReason::Timeout));
        let s = StopSignal::default();
        s.stop(StopReason::Drained);
        assert!(s.should_stop(later));
        assert_eq!(s.reason(), Some(StopReason::Drained));
    }

    #[test]
    fn progress_lines() {
        let before = Snapshot { acked: 1000, consumed: 500, ..Default::default() };
        let now = Snapshot { acked: 3000, failed: 2, unknown: 1, consumed: 2500, fetch_failures: 0, ..Default::default() };
        let sec = Duration::from_secs(1);
        let t = Duration::from_millis(3000);
        assert_eq!(
            progress_line(BenchKind::Produce, t, 10_000, now, before, sec),
            "[   3.0 s] produce: 3000/10000 acked (2000 msg/s), 2 failed, 1 unknown"
        );
        assert_eq!(
            progress_line(BenchKind::Consume, t, 10_000, now, before, sec * 2),
            "[   3.0 s] consume: 2500/10000 consumed (1000 msg/s)"
        );
        let now = Snapshot { fetch_failures: 4, ..now };
        assert_eq!(
            progress_line(BenchKind::E2e, t, 10_000, now, before, sec),
            "[   3.0 s] e2e: 3000/10000 acked (2000 msg/s), 2 failed, 1 unknown; 2500/10000 consumed (2000 msg/s), 4 failed fetches"
        );
    }
}

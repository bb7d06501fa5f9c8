//! Latency histograms (HdrHistogram, nanoseconds, 3 significant digits) and their summary.

use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies above this are recorded as this; a sync that slow is a broken disk, not a figure.
const LATENCY_NS_MAX: u64 = 60_000_000_000;

/// The percentiles the benchmarks report, in microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

pub struct LatencyRecorder {
    histogram: Histogram<u64>,
}

impl LatencyRecorder {
    pub fn new() -> anyhow::Result<Self> {
        let histogram = Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).context("creating a latency histogram")?;
        Ok(Self { histogram })
    }

    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.histogram.saturating_record(ns);
    }

    pub fn merge(&mut self, other: &Self) -> anyhow::Result<()> {
        self.histogram.add(&other.histogram).context("merging latency histograms")
    }

    pub fn len(&self) -> u64 {
        self.histogram.len()
    }

    pub fn summary(&self) -> Latency {
        let us = |ns: u64| ns as f64 / 1000.0;
        let h = &self.histogram;
        Latency {
            p50_us: us(h.value_at_quantile(0.5)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut a = LatencyRecorder::new().expect("histogram");
        let mut b = LatencyRecorder::new().expect("histogram");
        for us in 1..=500 {
            a.record(Duration::from_micros(us));
        }
        for us in 501..=1000 {
            b.record(Duration::from_micros(us));
        }
        a.merge(&b).expect("merge");
        assert_eq!(a.len(), 1000);
        let s = a.summary();
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.002;
        assert!(near(s.p50_us, 500.0), "{s:?}");
        assert!(near(s.p99_us, 990.0), "{s:?}");
        assert!(near(s.p999_us, 999.0), "{s:?}");
        assert!(near(s.max_us, 1000.0), "{s:?}");
    }
}

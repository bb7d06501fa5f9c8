//! A closed-loop load on the log engine: each appender appends one record, waits for its
//! `OnDurable` callback, and only then appends the next. Latency is measured from the append
//! call to the callback, so it includes waiting for the group-commit round.
//!
//! Appenders are tokio tasks on a runtime with one worker per core, as the broker's Raft groups
//! are: the flusher's callback completes a oneshot, waking the task, not an OS thread.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use raft_log::{GroupId, GroupLog, LogEngine, LogError, LogOptions};
use serde::Serialize;

use super::latency::{Latency, LatencyRecorder};

/// The longest an appender waits for one durable callback before it gives up on the run.
const DURABLE_WAIT_MAX: Duration = Duration::from_secs(60);
/// The unmeasured warm-up before each run: at most this long and this many records.
const WARMUP: Duration = Duration::from_secs(1);
const WARMUP_RECORDS_MAX: u64 = 5_000;
/// Every record of the benchmark is written in this term.
const TERM: u64 = 1;

#[derive(Debug, Clone, Copy)]
pub struct LoadConfig {
    /// Stop after this many records in total...
    pub records_max: u64,
    /// ... or after this long, whichever comes first.
    pub duration: Duration,
    /// Payload bytes of each record.
    pub size: u64,
    pub appenders: u64,
    pub groups: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub appenders: u64,
    pub groups: u64,
    pub size: u64,
    pub records: u64,
    pub seconds: f64,
    pub records_per_sec: f64,
    /// Payload bytes made durable per second, in MiB.
    pub mib_per_sec: f64,
    pub latency: Latency,
    /// Group-commit rounds that ran an `fdatasync` (from `LogEngine::stats`).
    pub sync_rounds: u64,
    pub records_per_sync_round: f64,
}

/// The groups appender `appender` writes to, in turn, as indexes `0..groups`. With fewer groups
/// than appenders several appenders share a group; with more, each appender takes every
/// `appenders`-th group, so that every group gets traffic.
pub fn groups_of(appender: u64, appenders: u64, groups: u64) -> Vec<u64> {
    if groups <= appenders { vec![appender % groups] } else { (appender..groups).step_by(appenders as usize).collect() }
}

/// One group's log and the next index to append to it. Appenders sharing a group take the lock
/// across the append so that the group's indexes stay consecutive.
struct GroupSlot {
    log: GroupLog,
    next_index: Mutex<u64>,
}

struct Load {
    slots: std::sync::Arc<Vec<GroupSlot>>,
    payload: Vec<u8>,
    records_max: u64,
    deadline: Instant,
    claimed: AtomicU64,
    /// Set by an appender that failed, so that the others stop too.
    stop: AtomicBool,
}

type Durable = (Instant, Result<(), LogError>);

impl Load {
    fn append(&self, slot: u64, done: tokio::sync::oneshot::Sender<Durable>) -> anyhow::Result<()> {
        let slot = &self.slots[usize::try_from(slot)?];
        let mut next = slot.next_index.lock().map_err(|_| anyhow!("an appender panicked"))?;
        let on_durable = Box::new(move |r: Result<(), LogError>| {
            // The receiver is gone only when its appender has already failed.
            let _ = done.send((Instant::now(), r));
        });
        slot.log
            .append([(TERM, *next, self.payload.as_slice())], on_durable)
            .with_context(|| format!("append to group {}", slot.log.id()))?;
        *next += 1;
        Ok(())
    }

    /// One appender's closed loop; returns its latencies.
    async fn appender(&self, slots: &[u64]) -> anyhow::Result<LatencyRecorder> {
        let mut latencies = LatencyRecorder::new()?;
        for (slot, _) in slots.iter().cycle().zip(0..self.records_max) {
            if self.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline {
                break;
            }
            if self.claimed.fetch_add(1, Ordering::Relaxed) >= self.records_max {
                break;
            }
            let started = Instant::now();
            let (tx, rx) = tokio::sync::oneshot::channel::<Durable>();
            self.append(*slot, tx)?;
            let (durable_at, result) = tokio::time::timeout(DURABLE_WAIT_MAX, rx)
                .await
                .context("no durable callback within 60 s")?
                .context("the engine dropped a durable callback")?;
            result.context("durable callback")?;
            latencies.record(durable_at.saturating_duration_since(started));
        }
        Ok(latencies)
    }
}

/// Opens a new log in `dir` and runs the load on it. The engine is closed (after a final sync)
/// before this returns; `dir` is left for the caller to remove.
pub fn run(dir: &Path, cfg: &LoadConfig) -> anyhow::Result<LoadResult> {
    anyhow::ensure!(cfg.appenders > 0 && cfg.groups > 0 && cfg.records_max > 0, "appenders, groups and records must be positive");
    let (engine, _) = LogEngine::open(dir, LogOptions::default()).with_context(|| format!("opening a log in {}", dir.display()))?;
    let slots: std::sync::Arc<Vec<GroupSlot>> = std::sync::Arc::new(
        (0..cfg.groups).map(|g| GroupSlot { log: engine.group(g as GroupId + 1), next_index: Mutex::new(1) }).collect(),
    );
    let payload = vec![0x5A; usize::try_from(cfg.size)?];
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_time().build().context("tokio runtime")?;
    let phase = |records_max: u64, duration: Duration| -> anyhow::Result<LatencyRecorder> {
        let load = std::sync::Arc::new(Load {
            slots: slots.clone(),
            payload: payload.clone(),
            records_max,
            deadline: Instant::now() + duration,
            claimed: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let outcomes: Vec<anyhow::Result<LatencyRecorder>> = runtime.block_on(async {
            let tasks: Vec<_> = (0..cfg.appenders)
                .map(|a| {
                    let load = load.clone();
                    let slots = groups_of(a, cfg.appenders, cfg.groups);
                    tokio::spawn(async move {
                        let r = load.appender(&slots).await;
                        if r.is_err() {
                            load.stop.store(true, Ordering::Relaxed);
                        }
                        r
                    })
                })
                .collect();
            let mut outcomes = Vec::with_capacity(tasks.len());
            for t in tasks {
                outcomes.push(t.await.unwrap_or_else(|_| Err(anyhow!("an appender panicked"))));
            }
            outcomes
        });
        let mut latencies = LatencyRecorder::new()?;
        for outcome in outcomes {
            latencies.merge(&outcome?)?;
        }
        Ok(latencies)
    };
    // Warm-up, not measured: the first spare segment is being zero-filled right after open,
    // and the runtime, page cache and allocator settle.
    phase(WARMUP_RECORDS_MAX.min(cfg.records_max), WARMUP.min(cfg.duration))?;
    let rounds_before = engine.stats().sync_rounds.load(Ordering::Relaxed);
    let started = Instant::now();
    let latencies = phase(cfg.records_max, cfg.duration)?;
    let seconds = started.elapsed().as_secs_f64();
    let sync_rounds = engine.stats().sync_rounds.load(Ordering::Relaxed) - rounds_before;
    drop(slots);
    drop(engine);
    let records = latencies.len();
    Ok(LoadResult {
        appenders: cfg.appenders,
        groups: cfg.groups,
        size: cfg.size,
        records,
        seconds,
        records_per_sec: records as f64 / seconds,
        mib_per_sec: (records * cfg.size) as f64 / seconds / f64::from(1 << 20),
        latency: latencies.summary(),
        sync_rounds,
        records_per_sync_round: if sync_rounds == 0 { 0.0 } else { records as f64 / sync_rounds as f64 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_gets_an_appender_and_every_appender_a_group() {
        // (appenders, groups, the groups of each appender)
        let table: &[(u64, u64, &[&[u64]])] = &[
            (1, 1, &[&[0]]),
            (4, 1, &[&[0], &[0], &[0], &[0]]),
            (4, 2, &[&[0], &[1], &[0], &[1]]),
            (2, 5, &[&[0, 2, 4], &[1, 3]]),
            (3, 3, &[&[0], &[1], &[2]]),
        ];
        for (appenders, groups, want) in table {
            let got: Vec<Vec<u64>> = (0..*appenders).map(|a| groups_of(a, *appenders, *groups)).collect();
            assert_eq!(got, want.iter().map(|g| g.to_vec()).collect::<Vec<_>>(), "{appenders} appenders, {groups} groups");
        }
        for (appenders, groups) in [(1, 256), (64, 256), (64, 1), (7, 100)] {
            let mut seen: Vec<u64> = (0..appenders).flat_map(|a| groups_of(a, appenders, groups)).collect();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen, (0..groups).collect::<Vec<_>>(), "{appenders} appenders, {groups} groups");
        }
    }

    #[test]
    fn closed_loop_appends_exactly_the_record_bound_with_consecutive_indexes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LoadConfig { records_max: 300, duration: Duration::from_secs(60), size: 100, appenders: 3, groups: 5 };
        let r = run(dir.path(), &cfg).expect("run");
        assert_eq!(r.records, 300);
        assert!(r.sync_rounds >= 1 && r.sync_rounds <= 300, "{r:?}");
        let (engine, _) = LogEngine::open(dir.path(), LogOptions::default()).expect("reopen");
        let mut total = 0;
        for g in 1..=5 {
            let state = engine.group(g).state();
            let last = state.last_index.expect("every group got traffic");
            assert_eq!(state.first_index, Some(1));
            assert_eq!(engine.group(g).read(1, last + 1).expect("read").len() as u64, last, "group {g} indexes are consecutive");
            total += last;
        }
        // The warm-up appends as many again (it is bounded by the same record count).
        assert_eq!(total, 600);
    }
}

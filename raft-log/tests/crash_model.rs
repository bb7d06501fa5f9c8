//! The log against a model: random appends, overwrites, truncates, purges, votes, commits,
//! syncs and power losses. A power loss (through `PowerLossFileSystem`) drops every byte not yet
//! fsynced; the reopened log must then equal the model after some prefix of the operations, and
//! that prefix must include every operation whose durability the log had confirmed (a returned
//! `sync`/`save_vote`, or an append's durable callback). The same holds when the power cut
//! also tears the last page written of each file (`PowerLossFileSystem::with_torn_pages`):
//! recovery finds the torn record by its checksum and cuts it. Reclaim steps (rewriting the
//! oldest segment's live entries forward, then deleting it after the next sync) change nothing
//! the model sees: a crash before, during or after one must neither lose a durable entry nor
//! bring back a truncated or purged one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use raft_log::fault::PowerLossFileSystem;
use raft_log::fs::StdFileSystem;
use raft_log::{LogEngine, LogOptions, StoredEntry};

const GROUPS: u64 = 3;

#[derive(Debug, Clone)]
enum Op {
    /// Appends `count` entries; `back` > 0 replaces the last `back` entries first.
    Append {
        group: u64,
        count: usize,
        back: usize,
        size: usize,
    },
    Truncate {
        group: u64,
        back: usize,
    },
    Purge {
        group: u64,
        ahead: usize,
    },
    Vote {
        group: u64,
        byte: u8,
    },
    Commit {
        group: u64,
    },
    Sync,
    /// One reclaim step: rewrites the oldest segment forward when the log holds more than two.
    Reclaim,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    let group = 0..GROUPS;
    prop_oneof![
        6 => (group.clone(), 1..5usize, prop_oneof![4 => Just(0usize), 1 => 1..4usize], 0..400usize)
            .prop_map(|(group, count, back, size)| Op::Append { group, count, back, size }),
        1 => (group.clone(), 1..4usize).prop_map(|(group, back)| Op::Truncate { group, back }),
        1 => (group.clone(), 0..8usize).prop_map(|(group, ahead)| Op::Purge { group, ahead }),
        1 => (group.clone(), any::<u8>()).prop_map(|(group, byte)| Op::Vote { group, byte }),
        1 => group.prop_map(|group| Op::Commit { group }),
        2 => Just(Op::Sync),
        2 => Just(Op::Reclaim),
        1 => Just(Op::Crash),
    ]
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct GroupModel {
    entries: Vec<StoredEntry>,
    purged: Option<u64>,
    vote: Option<Vec<u8>>,
    committed: Option<u64>,
}

impl GroupModel {
    fn last_index(&self) -> u64 {
        self.entries.last().map(|e| e.index).or(self.purged).unwrap_or(0)
    }
    /// Lowest index a truncate or overwrite may remove: above the purge point and the commit.
    fn floor(&self) -> u64 {
        self.purged.unwrap_or(0).max(self.committed.unwrap_or(0)) + 1
    }
}

type Model = BTreeMap<u64, GroupModel>;

fn payload(group: u64, index: u64, term: u64, size: usize) -> Vec<u8> {
    let seed = group * 1_000_003 + index * 7919 + term;
    (0..size).map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64) % 251) as u8).collect()
}

fn observed(engine: &LogEngine) -> Model {
    let mut m = Model::new();
    for g in 0..GROUPS {
        let log = engine.group(g);
        let s = log.state();
        let entries = log.read(0, u64::MAX).expect("read");
        let gm = GroupModel { entries, purged: s.purged.map(|(i, _)| i), vote: s.vote, committed: s.committed.map(|(i, _)| i) };
        if gm != GroupModel::default() {
            m.insert(g, gm);
        }
    }
    m
}

fn normalized(model: &Model) -> Model {
    model.iter().filter(|(_, g)| **g != GroupModel::default()).map(|(k, v)| (*k, v.clone())).collect()
}

/// One line per group: entries as index:term, then purge point, vote length and commit.
fn summary(m: &Model) -> String {
    m.iter()
        .map(|(g, gm)| {
            let entries: Vec<String> = gm.entries.iter().map(|e| format!("{}:{}/{}", e.index, e.term, e.payload.len())).collect();
            format!(
                "[g{g} {} purged={:?} vote={:?} commit={:?}]",
                entries.join(" "),
                gm.purged,
                gm.vote.as_ref().map(|v| v.len()),
                gm.committed
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

struct Run {
    _dir: tempfile::TempDir,
    fs: PowerLossFileSystem,
    options: LogOptions,
    engine: Option<LogEngine>,
    /// Model after each operation since the last crash; `history[0]` is the state at open.
    history: Vec<Model>,
    /// Every operation up to this many entries of `history` is known durable.
    confirmed: Arc<AtomicUsize>,
    term: u64,
}

impl Run {
    /// With `torn_seed`, power cuts tear the last page written (the seed picks the tears).
    fn new(torn_seed: Option<u64>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = match torn_seed {
            Some(seed) => PowerLossFileSystem::with_torn_pages(Arc::new(StdFileSystem), seed),
            None => PowerLossFileSystem::new(Arc::new(StdFileSystem)),
        };
        // Small segments: the runs roll segments, delete purged ones and reclaim pinned ones, a
        // few entries per hold of the writer lock; reclaim only at the model's `Reclaim` ops.
        let options = LogOptions {
            segment_bytes: 2048,
            max_record_bytes: 1024,
            reclaim_after_segments: 2,
            rewrite_chunk_bytes: 300,
            reclaim_in_background: false,
            ..LogOptions::default()
        };
        let (engine, _) = LogEngine::open_with(dir.path(), options.clone(), Arc::new(fs.clone())).expect("open");
        Self {
            _dir: dir,
            fs,
            options,
            engine: Some(engine),
            history: vec![Model::new()],
            confirmed: Arc::new(AtomicUsize::new(0)),
            term: 1,
        }
    }

    fn engine(&self) -> &LogEngine {
        self.engine.as_ref().expect("the engine is open between crashes")
    }

    fn confirm_upto(&self, n: usize) {
        self.confirmed.fetch_max(n, Ordering::SeqCst);
    }

    fn apply(&mut self, op: &Op) {
        let mut model = self.history.last().cloned().unwrap_or_default();
        match *op {
            Op::Append { group, count, back, size } => {
                let g = model.entry(group).or_default();
                let first = (g.last_index() + 1).saturating_sub(back as u64).max(g.floor()).max(g.purged.unwrap_or(0) + 1);
                self.term += 1;
                let term = self.term;
                let new: Vec<StoredEntry> =
                    (first..first + count as u64).map(|i| StoredEntry { index: i, term, payload: payload(group, i, term, size) }).collect();
                // Each record of a batch may survive alone (a batch can span a segment roll),
                // so each is a step of the model.
                for e in &new {
                    let g = model.entry(group).or_default();
                    g.entries.retain(|x| x.index < e.index);
                    g.entries.push(e.clone());
                    self.history.push(model.clone());
                }
                let done_at = self.history.len() - 1;
                let confirmed = self.confirmed.clone();
                self.engine()
                    .group(group)
                    .append(
                        new.iter().map(|e| (e.term, e.index, e.payload.as_slice())),
                        Box::new(move |r| {
                            if r.is_ok() {
                                confirmed.fetch_max(done_at, Ordering::SeqCst);
                            }
                        }),
                    )
                    .expect("append");
                return;
            }
            Op::Truncate { group, back } => {
                let g = model.entry(group).or_default();
                let from = (g.last_index() + 1).saturating_sub(back as u64).max(g.floor());
                if from <= g.last_index() && g.entries.first().is_some_and(|e| e.index <= from) {
                    g.entries.retain(|e| e.index < from);
                    self.engine().group(group).truncate_from(from).expect("truncate");
                }
            }
            Op::Purge { group, ahead } => {
                let g = model.entry(group).or_default();
                let first = g.entries.first().map(|e| e.index).unwrap_or(g.last_index() + 1);
                let upto = first + ahead as u64;
                if g.purged.is_none_or(|p| p < upto) {
                    g.entries.retain(|e| e.index > upto);
                    g.purged = Some(upto);
                    self.engine().group(group).purge(upto, &upto.to_le_bytes()).expect("purge");
                }
            }
            Op::Vote { group, byte } => {
                let vote = vec![byte; 1 + byte as usize % 9];
                model.entry(group).or_default().vote = Some(vote.clone());
                self.engine().group(group).save_vote(&vote).expect("vote");
                self.history.push(model);
                self.confirm_upto(self.history.len() - 1);
                return;
            }
            Op::Commit { group } => {
                let g = model.entry(group).or_default();
                if let Some(last) = g.entries.last().map(|e| e.index)
                    && g.committed.is_none_or(|c| c < last)
                {
                    g.committed = Some(last);
                    self.engine().group(group).save_committed(last, &last.to_le_bytes()).expect("commit");
                }
            }
            Op::Sync => {
                self.engine().sync().expect("sync");
                self.history.push(model);
                self.confirm_upto(self.history.len() - 1);
                return;
            }
            Op::Reclaim => {
                self.engine().reclaim_oldest().expect("reclaim");
            }
            Op::Crash => {
                self.crash_and_check();
                return;
            }
        }
        self.history.push(model);
    }

    fn crash_and_check(&mut self) {
        self.fs.crash().expect("crash");
        // The crashed engine's threads find no power and stop; only then does the machine
        // come back and the log reopen.
        drop(self.engine.take());
        self.fs.power_on();
        let (engine, _) =
            LogEngine::open_with(self._dir.path(), self.options.clone(), Arc::new(self.fs.clone())).expect("reopen after power loss");
        self.engine = Some(engine);
        let got = observed(self.engine());
        let min = self.confirmed.load(Ordering::SeqCst);
        let matched = (min..self.history.len()).rev().find(|&k| normalized(&self.history[k]) == got);
        match matched {
            Some(k) => {
                self.history = vec![self.history[k].clone()];
                self.confirmed = Arc::new(AtomicUsize::new(0));
            }
            None => panic!(
                "after power loss the log is not the model after any prefix of ops {min}..{}\nlog:    {}\nmodels: {}",
                self.history.len() - 1,
                summary(&got),
                (min..self.history.len())
                    .map(|k| format!("\n  after op {k}: {}", summary(&normalized(&self.history[k]))))
                    .collect::<String>()
            ),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn power_loss_keeps_exactly_a_durable_prefix(ops in proptest::collection::vec(op(), 1..60)) {
        let mut run = Run::new(None);
        for op in &ops {
            run.apply(op);
        }
        run.crash_and_check();
    }

    #[test]
    fn a_torn_power_loss_keeps_exactly_a_durable_prefix(ops in proptest::collection::vec(op(), 1..60), seed in any::<u64>()) {
        let mut run = Run::new(Some(seed));
        for op in &ops {
            run.apply(op);
        }
        run.crash_and_check();
    }
}

//! The checker: reads a history and the final reads, and reports every anomaly it finds, each
//! with the events that show it. Classes (the Jepsen Kafka and Redpanda analyses' taxonomy,
//! for a queue with dense offsets):
//!
//! - [`AnomalyClass::LostWrite`]: a send acknowledged at `(queue, offset)`, absent from every
//!   final read of the queue although a final read reaches past that offset.
//! - [`AnomalyClass::UnseenAtEnd`]: an acknowledged send absent from the final reads, none of
//!   which reaches its offset (the queue ends below an acknowledged offset).
//! - [`AnomalyClass::Duplicate`]: one value at two offsets (by acknowledgement or by any read).
//! - [`AnomalyClass::InconsistentOffset`]: one offset with two values among the
//!   acknowledgements and consumer reads, or a value acknowledged or read there that no final
//!   read holds there.
//! - [`AnomalyClass::Phantom`]: a value read that no operation ever sent, whose checksum is
//!   intact (a well-formed value from nowhere).
//! - [`AnomalyClass::Corrupt`]: a value read that no operation sent and whose checksum
//!   ([`crate::value`]) does not match its content: a sent value damaged on its way.
//! - [`AnomalyClass::FailedSendVisible`]: a value read whose send was answered with a definite
//!   failure (`NOT_LEADER`, `BUSY`, `UNAVAILABLE`...: the protocol's promise that nothing was
//!   stored), Jepsen's aborted read.
//! - [`AnomalyClass::NonmonotonicPoll`] and [`AnomalyClass::SkippedPoll`]: within one consumer
//!   session on one queue, a delivered offset not above the previous one, or a gap of offsets
//!   that retention did not remove.
//! - [`AnomalyClass::FifoOrder`]: in one FIFO message group, a send that completed before
//!   another was invoked got the higher offset.
//! - [`AnomalyClass::CommitBackwards`]: a committed offset read lower than a commit or read of
//!   the same consumer group and queue that completed before the read began.
//!
//!
//! Every replica's final read is also checked on its own and against the others':
//!
//! - [`AnomalyClass::ReplicaLostWrite`]: an acknowledged send that some replica's final read
//!   holds and another replica's lacks (at or above that replica's start offset).
//! - [`AnomalyClass::ReplicaGap`]: a replica's final read whose offsets are not dense from its
//!   start offset to its end offset (a hole, a repeat, or a step back).
//! - [`AnomalyClass::ReplicaDivergence`]: two replicas' final reads holding different values at
//!   one offset.
//!
//! Messages below a queue's start offset (removed by retention) are exempt from the lost and
//! skip checks: only there may an acknowledged message be missing.
//!
//! **A history that cannot be checked in full is invalid**, whatever anomalies it shows or does
//! not show ([`CheckResult::invalid`]): every queue must have a final read from every replica
//! of its group ([`QueueReplicas`]), and every queue the history names must have replicas.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::history::{Event, EventKind, FinalRead, Op, QueueReplicas};

/// The kinds of anomaly the checker finds; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnomalyClass {
    LostWrite,
    UnseenAtEnd,
    Duplicate,
    InconsistentOffset,
    Phantom,
    Corrupt,
    FailedSendVisible,
    NonmonotonicPoll,
    SkippedPoll,
    FifoOrder,
    CommitBackwards,
    ReplicaLostWrite,
    ReplicaGap,
    ReplicaDivergence,
}

impl AnomalyClass {
    pub const ALL: [AnomalyClass; 14] = [
        AnomalyClass::LostWrite,
        AnomalyClass::UnseenAtEnd,
        AnomalyClass::Duplicate,
        AnomalyClass::InconsistentOffset,
        AnomalyClass::Phantom,
        AnomalyClass::Corrupt,
        AnomalyClass::FailedSendVisible,
        AnomalyClass::NonmonotonicPoll,
        AnomalyClass::SkippedPoll,
        AnomalyClass::FifoOrder,
        AnomalyClass::CommitBackwards,
        AnomalyClass::ReplicaLostWrite,
        AnomalyClass::ReplicaGap,
        AnomalyClass::ReplicaDivergence,
    ];
}

/// One anomaly: its class, what happened, and the history events that show it (indexes into
/// `history.jsonl`; final reads are named in `detail`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    pub class: AnomalyClass,
    pub detail: String,
    pub events: Vec<u64>,
}

/// Counts of one kind of operation by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcomes {
    pub invoked: u64,
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
}

/// What [`check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub sends: Outcomes,
    pub polls: Outcomes,
    pub commits: Outcomes,
    pub offset_reads: Outcomes,
    /// Acknowledged sends below a queue's start offset: removed by retention, not checked.
    pub acked_trimmed: u64,
    pub anomalies: Vec<Anomaly>,
    /// Why the history could not be checked in full (a queue without a final read from one of
    /// its replicas, ...). Any reason makes the result invalid, with or without anomalies.
    #[serde(default)]
    pub invalid: Vec<String>,
}

/// What a checked history amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Checked in full, and no anomaly.
    Passed,
    /// At least one anomaly.
    Anomalies,
    /// No anomaly in what could be checked, but not everything could be.
    Invalid,
}

impl CheckResult {
    /// Checked in full, and no anomaly.
    pub fn valid(&self) -> bool {
        self.verdict() == Verdict::Passed
    }

    /// Anomalies first: an anomaly found in part of a history is one all the same.
    pub fn verdict(&self) -> Verdict {
        if !self.anomalies.is_empty() {
            Verdict::Anomalies
        } else if !self.invalid.is_empty() {
            Verdict::Invalid
        } else {
            Verdict::Passed
        }
    }

    /// Anomalies per class (every class present, zero if none).
    pub fn counts(&self) -> BTreeMap<AnomalyClass, usize> {
        let mut counts: BTreeMap<AnomalyClass, usize> = AnomalyClass::ALL.iter().map(|c| (*c, 0)).collect();
        for a in &self.anomalies {
            *counts.entry(a.class).or_default() += 1;
        }
        counts
    }
}

/// An operation: its invocation and, unless the history ended first, its completion.
struct Completed<'a> {
    invoke: &'a Event,
    completion: Option<&'a Event>,
}

impl Completed<'_> {
    fn kind(&self) -> Option<EventKind> {
        self.completion.map(|c| c.kind)
    }

    fn events(&self) -> Vec<u64> {
        std::iter::once(self.invoke.index).chain(self.completion.map(|c| c.index)).collect()
    }
}

/// Pairs every invocation with the next completion of the same process, in history order.
fn pair(events: &[Event]) -> Vec<Completed<'_>> {
    let mut open: HashMap<u64, usize> = HashMap::new();
    let mut ops: Vec<Completed<'_>> = Vec::new();
    for e in events {
        match e.kind {
            EventKind::Invoke => {
                open.insert(e.process, ops.len());
                ops.push(Completed { invoke: e, completion: None });
            }
            _ => {
                if let Some(i) = open.remove(&e.process) {
                    ops[i].completion = Some(e);
                }
            }
        }
    }
    ops
}

/// Where a value was seen at an offset: an event (acknowledgement or poll) or a replica's
/// final read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Event(u64),
    Final { broker: u64 },
}

impl Source {
    fn describe(self) -> String {
        match self {
            Source::Event(i) => format!("event {i}"),
            Source::Final { broker } => format!("broker {broker}'s final read"),
        }
    }
}

/// An acknowledged or attempted send.
struct Sent<'a> {
    op: &'a Completed<'a>,
    queue: u32,
    message_group: Option<&'a str>,
    /// On `ok`.
    offset: Option<u64>,
}

/// Checks `events` and `finals` against the queues' `replicas`; see the module documentation.
pub fn check(events: &[Event], finals: &[FinalRead], replicas: &[QueueReplicas]) -> CheckResult {
    let ops = pair(events);
    let mut result = CheckResult::default();
    let mut sent: HashMap<&str, Sent<'_>> = HashMap::new();
    // (queue, offset) → value → where seen.
    let mut seen: Observations<'_> = BTreeMap::new();
    for op in &ops {
        let outcome = match &op.invoke.op {
            Op::Send { .. } => &mut result.sends,
            Op::Poll { .. } => &mut result.polls,
            Op::Commit { .. } => &mut result.commits,
            Op::ReadOffset { .. } => &mut result.offset_reads,
        };
        outcome.invoked += 1;
        match op.kind() {
            Some(EventKind::Ok) => outcome.ok += 1,
            Some(EventKind::Fail) => outcome.fail += 1,
            Some(EventKind::Info) | None => outcome.info += 1,
            Some(EventKind::Invoke) => unreachable!("pair never completes with an invocation"),
        }
        if let Op::Send { queue, value, message_group, .. } = &op.invoke.op {
            let offset = match op.completion.map(|c| (c.kind, &c.op)) {
                Some((EventKind::Ok, Op::Send { offset, .. })) => *offset,
                _ => None,
            };
            if let Some(o) = offset {
                seen.entry((*queue, o)).or_default().entry(value).or_default().insert(Source::Event(op.completion.map_or(0, |c| c.index)));
            }
            sent.entry(value.as_str()).or_insert(Sent { op, queue: *queue, message_group: message_group.as_deref(), offset });
        }
        if let (Op::Poll { queue, .. }, Some(c)) = (&op.invoke.op, op.completion)
            && c.kind == EventKind::Ok
            && let Op::Poll { messages, .. } = &c.op
        {
            for (o, v) in messages {
                seen.entry((*queue, *o)).or_default().entry(v).or_default().insert(Source::Event(c.index));
            }
        }
    }
    for f in finals {
        for (o, v) in &f.messages {
            seen.entry((f.queue, *o)).or_default().entry(v).or_default().insert(Source::Final { broker: f.broker });
        }
    }
    // Retention removed everything below the highest start offset any replica reports.
    let mut start: HashMap<u32, u64> = HashMap::new();
    for f in finals {
        let s = start.entry(f.queue).or_default();
        *s = (*s).max(f.start_offset);
    }

    result.invalid = check_complete(&ops, finals, replicas);
    check_offsets(&seen, &sent, &mut result.anomalies);
    check_final(&sent, finals, &start, &mut result);
    check_replica_offsets(finals, &mut result.anomalies);
    check_polls(&ops, &start, &mut result.anomalies);
    check_fifo(&sent, &mut result.anomalies);
    check_commits(&ops, &mut result.anomalies);
    result
}

/// Every value seen at each `(queue, offset)`, and where.
type Observations<'a> = BTreeMap<(u32, u64), BTreeMap<&'a str, BTreeSet<Source>>>;

/// One place a value was seen.
struct Place<'a> {
    queue: u32,
    offset: u64,
    sources: &'a BTreeSet<Source>,
}

/// Inconsistent offsets, duplicates, phantoms, corrupt values and failed sends that were stored,
/// over every observation.
fn check_offsets(seen: &Observations<'_>, sent: &HashMap<&str, Sent<'_>>, out: &mut Vec<Anomaly>) {
    let events_of = |sources: &BTreeSet<Source>| -> Vec<u64> {
        sources.iter().filter_map(|s| if let Source::Event(i) = s { Some(*i) } else { None }).collect()
    };
    let mut offsets_of: BTreeMap<&str, Vec<Place<'_>>> = BTreeMap::new();
    for ((queue, offset), values) in seen {
        let from_events: Vec<&str> =
            values.iter().filter(|(_, s)| s.iter().any(|s| matches!(s, Source::Event(_)))).map(|(v, _)| *v).collect();
        let from_finals: Vec<&str> =
            values.iter().filter(|(_, s)| s.iter().any(|s| matches!(s, Source::Final { .. }))).map(|(v, _)| *v).collect();
        let describe = || {
            values
                .iter()
                .map(|(v, s)| format!("{v:?} ({})", s.iter().map(|s| s.describe()).collect::<Vec<_>>().join(", ")))
                .collect::<Vec<_>>()
                .join(" vs ")
        };
        // Acknowledgements and consumer reads disagree, or what they saw is in no final read
        // that reaches this offset (a replica holding something else there is a divergence).
        let unheld = !from_finals.is_empty() && from_events.iter().any(|v| !from_finals.contains(v));
        if from_events.len() > 1 || unheld {
            out.push(Anomaly {
                class: AnomalyClass::InconsistentOffset,
                detail: format!("queue {queue} offset {offset} holds {}", describe()),
                events: values.values().flat_map(events_of).collect(),
            });
        }
        if from_finals.len() > 1 {
            out.push(Anomaly {
                class: AnomalyClass::ReplicaDivergence,
                detail: format!("the replicas' final reads differ at queue {queue} offset {offset}: {}", describe()),
                events: values.values().flat_map(events_of).collect(),
            });
        }
        for (v, sources) in values {
            offsets_of.entry(v).or_default().push(Place { queue: *queue, offset: *offset, sources });
            match sent.get(v) {
                Some(s) if s.op.kind() == Some(EventKind::Fail) => {
                    let mut events = events_of(sources);
                    events.extend(s.op.events());
                    let why = s.op.completion.and_then(|c| c.error.as_deref()).unwrap_or("no reason given");
                    out.push(Anomaly {
                        class: AnomalyClass::FailedSendVisible,
                        detail: format!("{v:?} is at queue {queue} offset {offset}, but its send failed: {why}"),
                        events,
                    });
                }
                Some(_) => {}
                None => {
                    let (class, why) = if crate::value::verifies(v) {
                        (AnomalyClass::Phantom, "was never sent")
                    } else {
                        (AnomalyClass::Corrupt, "was never sent and fails its checksum")
                    };
                    out.push(Anomaly {
                        class,
                        detail: format!("{v:?} at queue {queue} offset {offset} {why}"),
                        events: events_of(sources),
                    });
                }
            }
        }
    }
    for (v, at) in offsets_of {
        if at.len() > 1 {
            let places: Vec<String> = at.iter().map(|p| format!("{}/{}", p.queue, p.offset)).collect();
            let mut events: Vec<u64> = at.iter().flat_map(|p| events_of(p.sources)).collect();
            if let Some(s) = sent.get(v) {
                events.extend(s.op.events());
            }
            events.sort_unstable();
            events.dedup();
            out.push(Anomaly { class: AnomalyClass::Duplicate, detail: format!("{v:?} at {}", places.join(" and ")), events });
        }
    }
}

/// Lost and unseen acknowledged sends, against the final reads: in none of them (lost, unseen),
/// or in some replica's but not in another's (lost on that replica).
fn check_final(sent: &HashMap<&str, Sent<'_>>, finals: &[FinalRead], start: &HashMap<u32, u64>, result: &mut CheckResult) {
    // Per queue, each replica's read with the set of values it holds.
    let mut by_queue: HashMap<u32, Vec<(&FinalRead, std::collections::HashSet<&str>)>> = HashMap::new();
    let mut reach: HashMap<u32, u64> = HashMap::new();
    for f in finals {
        by_queue.entry(f.queue).or_default().push((f, f.messages.iter().map(|(_, v)| v.as_str()).collect()));
        let r = reach.entry(f.queue).or_default();
        *r = (*r).max(read_end(f));
    }
    let mut acked: Vec<(&&str, &Sent<'_>)> = sent.iter().filter(|(_, s)| s.offset.is_some()).collect();
    acked.sort_by_key(|(_, s)| s.op.invoke.index);
    for (value, s) in acked {
        let Some(offset) = s.offset else { continue };
        // A queue without any final read makes the history invalid (`check_complete`).
        let Some(reads) = by_queue.get(&s.queue) else { continue };
        if offset < start.get(&s.queue).copied().unwrap_or(0) {
            result.acked_trimmed += 1;
        }
        let holders: Vec<u64> = reads.iter().filter(|(_, held)| held.contains(*value)).map(|(f, _)| f.broker).collect();
        if holders.is_empty() {
            if offset < start.get(&s.queue).copied().unwrap_or(0) {
                continue;
            }
            let reached = reach.get(&s.queue).copied().unwrap_or(0);
            let (class, why) = if reached > offset {
                (AnomalyClass::LostWrite, format!("the final reads reach offset {}", reached - 1))
            } else {
                (AnomalyClass::UnseenAtEnd, format!("the final reads end at offset {reached}"))
            };
            result.anomalies.push(Anomaly {
                class,
                detail: format!("{value:?} acknowledged at queue {} offset {offset} is in no final read; {why}", s.queue),
                events: s.op.events(),
            });
            continue;
        }
        for (f, held) in reads {
            if held.contains(*value) || offset < f.start_offset {
                continue;
            }
            result.anomalies.push(Anomaly {
                class: AnomalyClass::ReplicaLostWrite,
                detail: format!(
                    "{value:?} acknowledged at queue {} offset {offset} is missing from broker {}'s final read (offsets {}..{}), though broker {} holds it",
                    s.queue,
                    f.broker,
                    f.start_offset,
                    read_end(f),
                    holders.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
                ),
                events: s.op.events(),
            });
        }
    }
}

/// Where a final read ends: past its last message, or at the end the replica reported.
fn read_end(f: &FinalRead) -> u64 {
    f.messages.last().map_or(f.start_offset, |(o, _)| o + 1).max(f.end_offset)
}

/// Each replica's final read holds every offset from its start offset to its end offset, once
/// and in order.
fn check_replica_offsets(finals: &[FinalRead], out: &mut Vec<Anomaly>) {
    for f in finals {
        let (queue, broker) = (f.queue, f.broker);
        let mut expected = f.start_offset;
        for (offset, _) in &f.messages {
            if *offset > expected {
                out.push(Anomaly {
                    class: AnomalyClass::ReplicaGap,
                    detail: format!("broker {broker}'s final read of queue {queue} lacks offsets {expected}..{offset}"),
                    events: vec![],
                });
            } else if *offset < expected {
                out.push(Anomaly {
                    class: AnomalyClass::ReplicaGap,
                    detail: format!("broker {broker}'s final read of queue {queue} holds offset {offset} again after {}", expected - 1),
                    events: vec![],
                });
            }
            expected = expected.max(offset + 1);
        }
        if expected < f.end_offset {
            out.push(Anomaly {
                class: AnomalyClass::ReplicaGap,
                detail: format!(
                    "broker {broker}'s final read of queue {queue} lacks offsets {expected}..{}, below the end it reported",
                    f.end_offset
                ),
                events: vec![],
            });
        }
    }
}

/// Why the history cannot be checked in full: a queue without a final read from each of its
/// replicas, a queue named by the history without replicas, a final read from a broker that is
/// not a replica.
fn check_complete(ops: &[Completed<'_>], finals: &[FinalRead], replicas: &[QueueReplicas]) -> Vec<String> {
    let mut invalid = Vec::new();
    if replicas.is_empty() {
        invalid.push("no queue's replicas are known (replicas.jsonl is missing or empty), so no final read can be shown complete".into());
        return invalid;
    }
    let read: BTreeSet<(u32, u64)> = finals.iter().map(|f| (f.queue, f.broker)).collect();
    let mut known: BTreeSet<u32> = BTreeSet::new();
    for q in replicas {
        known.insert(q.queue);
        let list = q.replicas.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
        if q.replicas.is_empty() {
            invalid.push(format!("queue {}: the cluster reported no replica for it", q.queue));
        }
        for b in &q.replicas {
            if !read.contains(&(q.queue, *b)) {
                let why = q.read_errors.get(b).map_or("no read recorded".to_string(), String::clone);
                invalid.push(format!("queue {}: no final read from broker {b}, one of its replicas ({list}): {why}", q.queue));
            }
        }
        for f in finals.iter().filter(|f| f.queue == q.queue && !q.replicas.contains(&f.broker)) {
            invalid.push(format!("queue {}: a final read from broker {}, which is not one of its replicas ({list})", q.queue, f.broker));
        }
    }
    let named: BTreeSet<u32> = ops
        .iter()
        .map(|op| match &op.invoke.op {
            Op::Send { queue, .. } | Op::Poll { queue, .. } | Op::Commit { queue, .. } | Op::ReadOffset { queue, .. } => *queue,
        })
        .chain(finals.iter().map(|f| f.queue))
        .collect();
    for q in named.difference(&known) {
        invalid.push(format!("queue {q}: named in the history, but no replicas are known for it"));
    }
    invalid
}

/// Consumer sessions: each delivered offset is the one after the last (or after a trimmed gap).
fn check_polls(ops: &[Completed<'_>], start: &HashMap<u32, u64>, out: &mut Vec<Anomaly>) {
    // (process, session, queue) → the last delivered offset and the event that delivered it.
    let mut last: HashMap<(u64, u64, u32), (u64, u64)> = HashMap::new();
    let mut polls: Vec<&Completed<'_>> = ops.iter().filter(|op| matches!(op.invoke.op, Op::Poll { .. })).collect();
    polls.sort_by_key(|op| op.completion.map_or(u64::MAX, |c| c.index));
    for op in polls {
        let (Op::Poll { session, queue, from, .. }, Some(c)) = (&op.invoke.op, op.completion) else { continue };
        let (EventKind::Ok, Op::Poll { messages, .. }) = (c.kind, &c.op) else { continue };
        let key = (op.invoke.process, *session, *queue);
        for (offset, _) in messages {
            let (expected, previous) = match last.get(&key) {
                Some(&(o, event)) => (o + 1, Some(event)),
                None => (*from, None),
            };
            let events: Vec<u64> = previous.into_iter().chain(std::iter::once(c.index)).collect();
            if *offset < expected {
                out.push(Anomaly {
                    class: AnomalyClass::NonmonotonicPoll,
                    detail: format!("session {session} on queue {queue} got offset {offset} after {}", expected.saturating_sub(1)),
                    events,
                });
            } else if *offset > expected && expected >= start.get(queue).copied().unwrap_or(0) {
                out.push(Anomaly {
                    class: AnomalyClass::SkippedPoll,
                    detail: format!("session {session} on queue {queue} skipped offsets {expected}..{offset}"),
                    events,
                });
            }
            last.insert(key, (*offset, c.index));
        }
    }
}

/// An acknowledged send of a FIFO message group: its invocation and completion events.
#[derive(Clone, Copy)]
struct FifoSend<'a> {
    invoked: u64,
    completed: u64,
    offset: u64,
    value: &'a str,
}

/// FIFO groups: real-time order of acknowledged sends is offset order.
fn check_fifo(sent: &HashMap<&str, Sent<'_>>, out: &mut Vec<Anomaly>) {
    let mut groups: BTreeMap<(u32, &str), Vec<FifoSend<'_>>> = BTreeMap::new();
    for (value, s) in sent {
        if let (Some(g), Some(offset), Some(c)) = (s.message_group, s.offset, s.op.completion) {
            groups.entry((s.queue, g)).or_default().push(FifoSend { invoked: s.op.invoke.index, completed: c.index, offset, value });
        }
    }
    for ((queue, group), mut sends) in groups {
        let mut by_completion = sends.clone();
        by_completion.sort_by_key(|s| s.completed);
        sends.sort_by_key(|s| s.invoked);
        // The send with the highest offset among those completed before each one was invoked.
        let mut done = by_completion.iter().peekable();
        let mut highest: Option<FifoSend<'_>> = None;
        for b in sends {
            while let Some(a) = done.peek().filter(|a| a.completed < b.invoked) {
                if highest.is_none_or(|h| a.offset > h.offset) {
                    highest = Some(**a);
                }
                done.next();
            }
            if let Some(a) = highest.filter(|a| a.offset > b.offset) {
                out.push(Anomaly {
                    class: AnomalyClass::FifoOrder,
                    detail: format!(
                        "message group {group:?} on queue {queue}: {:?} (offset {}) completed before {:?} (offset {}) was sent",
                        a.value, a.offset, b.value, b.offset
                    ),
                    events: vec![a.invoked, a.completed, b.invoked, b.completed],
                });
            }
        }
    }
}

/// Committed offsets: a read never returns less than what completed before it began, unless a
/// commit of exactly that value was invoked after the higher value was seen (a later session
/// committing a lower offset, e.g. after an earlier session's unknown commit took effect late:
/// the register went down by a write, not by a lost one).
fn check_commits(ops: &[Completed<'_>], out: &mut Vec<Anomaly>) {
    // Walk the history in event order: completions raise the floor; a read's floor is the one
    // at its invocation.
    // (consumer group, queue) → every commit as (offset, its invocation index).
    let mut commits: HashMap<(&str, u32), Vec<(u64, u64)>> = HashMap::new();
    for op in ops {
        if let Op::Commit { consumer_group, queue, offset } = &op.invoke.op {
            commits.entry((consumer_group.as_str(), *queue)).or_default().push((*offset, op.invoke.index));
        }
    }
    let mut marks: Vec<(u64, &Completed<'_>, bool)> = Vec::new();
    for op in ops {
        if matches!(op.invoke.op, Op::Commit { .. } | Op::ReadOffset { .. }) {
            marks.push((op.invoke.index, op, true));
            if let Some(c) = op.completion {
                marks.push((c.index, op, false));
            }
        }
    }
    marks.sort_by_key(|m| m.0);
    // (consumer group, queue) → (highest committed or read offset, the event that showed it).
    let mut floor: HashMap<(&str, u32), (u64, u64)> = HashMap::new();
    let mut floor_at_invoke: HashMap<u64, Option<(u64, u64)>> = HashMap::new();
    for (_, op, is_invoke) in marks {
        let (group, queue) = match &op.invoke.op {
            Op::Commit { consumer_group, queue, .. } | Op::ReadOffset { consumer_group, queue, .. } => (consumer_group.as_str(), *queue),
            _ => continue,
        };
        if is_invoke {
            floor_at_invoke.insert(op.invoke.index, floor.get(&(group, queue)).copied());
            continue;
        }
        let Some(c) = op.completion.filter(|c| c.kind == EventKind::Ok) else { continue };
        let value = match (&op.invoke.op, &c.op) {
            (Op::Commit { offset, .. }, _) => Some(*offset),
            (Op::ReadOffset { .. }, Op::ReadOffset { offset, .. }) => {
                let read = offset.unwrap_or(0);
                if let Some(Some((f, event))) = floor_at_invoke.get(&op.invoke.index)
                    && read < *f
                {
                    let overwritten =
                        commits.get(&(group, queue)).is_some_and(|cs| cs.iter().any(|&(o, invoked)| o == read && invoked > *event));
                    if overwritten {
                        // Lowered by a later commit: the floor follows it down.
                        floor.insert((group, queue), (read, c.index));
                        continue;
                    }
                    out.push(Anomaly {
                        class: AnomalyClass::CommitBackwards,
                        detail: format!("consumer group {group:?} queue {queue}: read {read} after {f} was committed or read"),
                        events: vec![*event, op.invoke.index, c.index],
                    });
                }
                *offset
            }
            _ => None,
        };
        if let Some(v) = value {
            let f = floor.entry((group, queue)).or_insert((v, c.index));
            if v > f.0 {
                *f = (v, c.index);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A history under construction; each event's time is its index.
    #[derive(Default)]
    struct History {
        events: Vec<Event>,
    }

    impl History {
        fn push(&mut self, process: u64, kind: EventKind, op: Op) -> u64 {
            let index = self.events.len() as u64;
            let error = matches!(kind, EventKind::Fail | EventKind::Info).then(|| "test".to_string());
            self.events.push(Event { index, process, time_ns: index, kind, op, error });
            index
        }

        fn invoke_send(&mut self, process: u64, queue: u32, value: &str, group: Option<&str>) {
            let op = Op::Send { queue, value: value.into(), message_group: group.map(String::from), offset: None };
            self.push(process, EventKind::Invoke, op);
        }

        fn ack_send(&mut self, process: u64, queue: u32, value: &str, group: Option<&str>, offset: u64) {
            let op = Op::Send { queue, value: value.into(), message_group: group.map(String::from), offset: Some(offset) };
            self.push(process, EventKind::Ok, op);
        }

        /// An acknowledged send of `value` to `queue` at `offset`, invoked and completed at once.
        fn send(&mut self, process: u64, queue: u32, value: &str, offset: u64) {
            self.invoke_send(process, queue, value, None);
            self.ack_send(process, queue, value, None, offset);
        }

        fn poll(&mut self, process: u64, session: u64, queue: u32, from: u64, messages: &[(u64, &str)]) {
            self.push(process, EventKind::Invoke, Op::Poll { session, queue, from, messages: vec![] });
            let messages = messages.iter().map(|(o, v)| (*o, v.to_string())).collect();
            self.push(process, EventKind::Ok, Op::Poll { session, queue, from, messages });
        }

        fn commit(&mut self, process: u64, queue: u32, offset: u64) {
            let op = Op::Commit { consumer_group: "cg".into(), queue, offset };
            self.push(process, EventKind::Invoke, op.clone());
            self.push(process, EventKind::Ok, op);
        }

        fn read_offset(&mut self, process: u64, queue: u32, offset: Option<u64>) {
            self.push(process, EventKind::Invoke, Op::ReadOffset { consumer_group: "cg".into(), queue, offset: None });
            self.push(process, EventKind::Ok, Op::ReadOffset { consumer_group: "cg".into(), queue, offset });
        }
    }

    fn final_read(broker: u64, queue: u32, start_offset: u64, messages: &[(u64, &str)]) -> FinalRead {
        let end_offset = messages.last().map_or(start_offset, |(o, _)| o + 1);
        FinalRead { broker, queue, start_offset, end_offset, messages: messages.iter().map(|(o, v)| (*o, v.to_string())).collect() }
    }

    /// Three values on queue 0 at 0..3, read back whole by every replica and by one consumer.
    fn clean() -> (History, Vec<FinalRead>) {
        let mut h = History::default();
        h.send(1, 0, "a", 0);
        h.send(2, 0, "b", 1);
        h.send(1, 0, "c", 2);
        h.poll(5, 1, 0, 0, &[(0, "a"), (1, "b")]);
        h.poll(5, 1, 0, 2, &[(2, "c")]);
        h.commit(5, 0, 3);
        h.read_offset(6, 0, Some(3));
        let all = [(0, "a"), (1, "b"), (2, "c")];
        let finals = (1..=3).map(|b| final_read(b, 0, 0, &all)).collect();
        (h, finals)
    }

    /// Every queue's replicas are the brokers whose final reads are given.
    fn replicas_of(finals: &[FinalRead]) -> Vec<QueueReplicas> {
        let mut by_queue: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for f in finals {
            by_queue.entry(f.queue).or_default().push(f.broker);
        }
        by_queue.into_iter().map(|(queue, replicas)| QueueReplicas { queue, replicas, read_errors: Default::default() }).collect()
    }

    /// [`check`], with every given final read's broker a replica of its queue.
    fn check_all(events: &[Event], finals: &[FinalRead]) -> CheckResult {
        check(events, finals, &replicas_of(finals))
    }

    fn classes(result: &CheckResult) -> Vec<AnomalyClass> {
        result.anomalies.iter().map(|a| a.class).collect()
    }

    #[test]
    fn a_clean_history_has_no_anomalies() {
        let (h, finals) = clean();
        let r = check_all(&h.events, &finals);
        assert!(r.valid(), "{:?}", r.anomalies);
        assert_eq!(r.sends, Outcomes { invoked: 3, ok: 3, fail: 0, info: 0 });
        assert_eq!((r.polls.ok, r.commits.ok, r.offset_reads.ok), (2, 1, 1));
        assert_eq!(r.counts().values().sum::<usize>(), 0);
        assert_eq!(r.counts().len(), AnomalyClass::ALL.len());
        assert_eq!((r.verdict(), r.invalid.len()), (Verdict::Passed, 0));
    }

    #[test]
    fn an_acknowledged_value_missing_from_one_replica_is_lost_there() {
        let (h, mut finals) = clean();
        // Broker 3 ends at offset 2, without the acknowledged "c" that brokers 1 and 2 hold.
        finals[2].messages.pop();
        finals[2].end_offset = 2;
        let r = check_all(&h.events, &finals);
        assert_eq!(classes(&r), vec![AnomalyClass::ReplicaLostWrite], "{:?}", r.anomalies);
        let d = &r.anomalies[0].detail;
        assert!(
            d.contains(
                "\"c\" acknowledged at queue 0 offset 2 is missing from broker 3's final read (offsets 0..2), though broker 1, 2 holds it"
            ),
            "{d}"
        );
        assert_eq!(r.anomalies[0].events, vec![4, 5]);
        assert_eq!(r.verdict(), Verdict::Anomalies);
        // Below that replica's own start offset (its retention removed it), it may be missing.
        let (h, mut finals) = clean();
        finals[2] = final_read(3, 0, 1, &[(1, "b"), (2, "c")]);
        let r = check_all(&h.events, &finals);
        assert!(r.valid(), "{:?}", r.anomalies);
    }

    #[test]
    fn a_hole_or_a_repeat_in_one_replicas_offsets_is_a_gap() {
        // "x" of unknown outcome took offset 1; broker 3's read skips it (not acknowledged, so
        // nothing is lost, but the replica's offsets are not dense).
        let mut h = History::default();
        h.send(1, 0, "a", 0);
        h.invoke_send(2, 0, "x", None);
        h.push(2, EventKind::Info, Op::Send { queue: 0, value: "x".into(), message_group: None, offset: None });
        h.send(3, 0, "c", 2);
        let whole = [(0, "a"), (1, "x"), (2, "c")];
        let mut holed = final_read(3, 0, 0, &[(0, "a"), (2, "c")]);
        holed.end_offset = 3;
        let finals = vec![final_read(1, 0, 0, &whole), final_read(2, 0, 0, &whole), holed];
        let r = check_all(&h.events, &finals);
        assert_eq!(classes(&r), vec![AnomalyClass::ReplicaGap], "{:?}", r.anomalies);
        assert!(r.anomalies[0].detail.contains("broker 3's final read of queue 0 lacks offsets 1..2"), "{}", r.anomalies[0].detail);
        // The same offset twice, and a read that stops below the end its replica reported.
        let repeated = final_read(3, 0, 0, &[(0, "a"), (1, "x"), (1, "x"), (2, "c")]);
        let mut short = final_read(2, 0, 0, &[(0, "a"), (1, "x")]);
        short.end_offset = 2;
        let r = check_all(&h.events, &[final_read(1, 0, 0, &whole), short.clone(), repeated]);
        let gaps: Vec<&str> = r.anomalies.iter().filter(|a| a.class == AnomalyClass::ReplicaGap).map(|a| a.detail.as_str()).collect();
        assert_eq!(gaps, vec!["broker 3's final read of queue 0 holds offset 1 again after 1"], "{:?}", r.anomalies);
        short.end_offset = 3;
        let r = check_all(&h.events, &[final_read(1, 0, 0, &whole), short]);
        assert!(
            r.anomalies
                .iter()
                .any(|a| a.class == AnomalyClass::ReplicaGap && a.detail.contains("lacks offsets 2..3, below the end it reported")),
            "{:?}",
            r.anomalies
        );
    }

    #[test]
    fn a_queue_without_a_final_read_from_every_replica_is_invalid() {
        let (h, finals) = clean();
        let replicas = |read_errors: BTreeMap<u64, String>| vec![QueueReplicas { queue: 0, replicas: vec![1, 2, 3], read_errors }];
        // No final read at all: nothing can be called lost, and nothing is shown kept.
        let r = check(&h.events, &[], &replicas(BTreeMap::new()));
        assert!(r.anomalies.is_empty(), "{:?}", r.anomalies);
        assert_eq!(r.verdict(), Verdict::Invalid);
        assert_eq!(r.invalid.len(), 3, "{:?}", r.invalid);
        assert_eq!(r.invalid[0], "queue 0: no final read from broker 1, one of its replicas (1, 2, 3): no read recorded");
        // One replica unread, with the run's reason.
        let r = check(&h.events, &finals[..2], &replicas([(3, "broker 3 queue 0: refused: no replica here".to_string())].into()));
        assert_eq!(r.verdict(), Verdict::Invalid);
        assert_eq!(
            r.invalid,
            vec!["queue 0: no final read from broker 3, one of its replicas (1, 2, 3): broker 3 queue 0: refused: no replica here"]
        );
        // Without any replica list, and with a queue the list does not name.
        assert_eq!(check(&h.events, &finals, &[]).verdict(), Verdict::Invalid);
        let mut h2 = History::default();
        h2.send(1, 5, "z", 0);
        let r = check(&h2.events, &finals, &replicas(BTreeMap::new()));
        assert_eq!(r.invalid, vec!["queue 5: named in the history, but no replicas are known for it"], "{:?}", r.anomalies);
        // A read from a broker that is not a replica.
        let r = check(&h.events, &finals, &[QueueReplicas { queue: 0, replicas: vec![1, 2], read_errors: BTreeMap::new() }]);
        assert_eq!(r.invalid, vec!["queue 0: a final read from broker 3, which is not one of its replicas (1, 2)"]);
        // An anomaly in what could be checked outranks the gap in the history.
        let (h, mut finals) = clean();
        finals.truncate(2);
        for f in &mut finals {
            f.messages.retain(|(o, _)| *o != 1);
        }
        let r = check(&h.events, &finals, &replicas(BTreeMap::new()));
        let gap = AnomalyClass::ReplicaGap;
        assert_eq!((r.verdict(), classes(&r)), (Verdict::Anomalies, vec![AnomalyClass::LostWrite, gap, gap]));
        // The whole set read: valid.
        let (h, finals) = clean();
        assert_eq!(check(&h.events, &finals, &replicas(BTreeMap::new())).verdict(), Verdict::Passed);
    }

    #[test]
    fn an_acknowledged_value_missing_below_the_end_is_a_lost_write() {
        let (h, mut finals) = clean();
        for f in &mut finals {
            f.messages.retain(|(o, _)| *o != 1);
        }
        let r = check_all(&h.events, &finals);
        // Each replica's offsets also have a hole where "b" was.
        let gap = AnomalyClass::ReplicaGap;
        assert_eq!(classes(&r), vec![AnomalyClass::LostWrite, gap, gap, gap], "{:?}", r.anomalies);
        assert!(r.anomalies[0].detail.contains("\"b\" acknowledged at queue 0 offset 1"), "{}", r.anomalies[0].detail);
        assert_eq!(r.anomalies[0].events, vec![2, 3]);
    }

    #[test]
    fn an_acknowledged_value_past_the_end_is_unseen() {
        let (h, mut finals) = clean();
        for f in &mut finals {
            f.messages.pop();
            f.end_offset = 2;
        }
        let r = check_all(&h.events, &finals);
        assert_eq!(classes(&r), vec![AnomalyClass::UnseenAtEnd], "{:?}", r.anomalies);
        assert!(r.anomalies[0].detail.contains("end at offset 2"), "{}", r.anomalies[0].detail);
    }

    #[test]
    fn messages_removed_by_retention_are_not_lost() {
        let (h, _) = clean();
        let finals = vec![final_read(1, 0, 2, &[(2, "c")])];
        let r = check_all(&h.events, &finals);
        assert!(r.valid(), "{:?}", r.anomalies);
        assert_eq!(r.acked_trimmed, 2);
    }

    #[test]
    fn one_value_at_two_offsets_is_a_duplicate() {
        let (h, mut finals) = clean();
        for f in &mut finals {
            f.messages.push((3, "a".into()));
            f.end_offset = 4;
        }
        let r = check_all(&h.events, &finals);
        assert_eq!(classes(&r), vec![AnomalyClass::Duplicate], "{:?}", r.anomalies);
        assert!(r.anomalies[0].detail.contains("\"a\" at 0/0 and 0/3"), "{}", r.anomalies[0].detail);
    }

    #[test]
    fn replicas_disagreeing_at_an_offset_diverge() {
        let (mut h, mut finals) = clean();
        // A send whose outcome is unknown, stored on one replica only, where the others hold "c".
        h.invoke_send(3, 0, "x", None);
        h.push(3, EventKind::Info, Op::Send { queue: 0, value: "x".into(), message_group: None, offset: None });
        finals[2].messages[2].1 = "x".into();
        let r = check_all(&h.events, &finals);
        // Replica 3 also lacks the acknowledged "c".
        assert_eq!(classes(&r), vec![AnomalyClass::ReplicaDivergence, AnomalyClass::ReplicaLostWrite], "{:?}", r.anomalies);
        let d = &r.anomalies[0].detail;
        assert!(d.contains("differ at queue 0 offset 2") && d.contains("\"x\" (broker 3's final read)"), "{d}");
        assert!(r.anomalies[1].detail.contains("\"c\" acknowledged at queue 0 offset 2 is missing from broker 3's final read"));
        assert_eq!(r.sends.info, 1);
        // An acknowledgement that no replica holds at its offset is an inconsistent offset.
        let (mut h, finals) = clean();
        h.send(4, 0, "y", 1);
        let r = check_all(&h.events, &finals);
        assert_eq!(classes(&r), vec![AnomalyClass::InconsistentOffset, AnomalyClass::LostWrite], "{:?}", r.anomalies);
    }

    #[test]
    fn a_well_formed_value_never_sent_is_a_phantom() {
        let (h, mut finals) = clean();
        let ghost = crate::value::checksummed("ghost", "x");
        for f in &mut finals {
            f.messages.push((3, ghost.clone()));
            f.end_offset = 4;
        }
        let r = check_all(&h.events, &finals);
        assert_eq!(classes(&r), vec![AnomalyClass::Phantom], "{:?}", r.anomalies);
    }

    #[test]
    fn a_sent_value_damaged_in_a_read_is_corrupt() {
        let sent = crate::value::checksummed("p1-0", "abcdef");
        let mut h = History::default();
        h.send(1, 0, &sent, 0);
        // One byte of the padding flipped: no longer the value sent, and its checksum fails.
        let damaged = sent.replacen("abc", "abd", 1);
        let finals = vec![final_read(1, 0, 0, &[(0, &sent)]), final_read(2, 0, 0, &[(0, &damaged)])];
        let r = check_all(&h.events, &finals);
        assert_eq!(
            classes(&r),
            vec![AnomalyClass::ReplicaDivergence, AnomalyClass::Corrupt, AnomalyClass::ReplicaLostWrite],
            "{:?}",
            r.anomalies
        );
        assert!(r.anomalies[1].detail.contains("fails its checksum"), "{}", r.anomalies[1].detail);
    }

    #[test]
    fn a_consumer_going_back_or_skipping_is_caught() {
        let (mut h, finals) = clean();
        h.poll(7, 2, 0, 0, &[(0, "a"), (2, "c")]);
        h.poll(7, 2, 0, 3, &[(1, "b")]);
        let r = check_all(&h.events, &finals);
        assert_eq!(classes(&r), vec![AnomalyClass::SkippedPoll, AnomalyClass::NonmonotonicPoll], "{:?}", r.anomalies);
        assert!(r.anomalies[0].detail.contains("skipped offsets 1..2"), "{}", r.anomalies[0].detail);
        assert!(r.anomalies[1].detail.contains("got offset 1 after 2"), "{}", r.anomalies[1].detail);
        // Another session starting again from 0 is not a regression.
        let (mut h, finals) = clean();
        h.poll(7, 3, 0, 0, &[(0, "a")]);
        assert!(check_all(&h.events, &finals).valid());
    }

    #[test]
    fn a_gap_that_retention_removed_is_not_a_skip() {
        let (mut h, _) = clean();
        h.poll(7, 2, 0, 0, &[(2, "c")]);
        let finals = vec![final_read(1, 0, 2, &[(2, "c")])];
        let r = check_all(&h.events, &finals);
        assert!(r.valid(), "{:?}", r.anomalies);
    }

    #[test]
    fn fifo_order_follows_real_time_within_a_message_group() {
        let mut h = History::default();
        h.invoke_send(1, 0, "g1", Some("order-7"));
        h.ack_send(1, 0, "g1", Some("order-7"), 5);
        h.invoke_send(1, 0, "g2", Some("order-7"));
        h.ack_send(1, 0, "g2", Some("order-7"), 4);
        // Concurrent sends may land in either order.
        h.invoke_send(2, 0, "h1", Some("order-8"));
        h.invoke_send(3, 0, "h2", Some("order-8"));
        h.ack_send(3, 0, "h2", Some("order-8"), 6);
        h.ack_send(2, 0, "h1", Some("order-8"), 7);
        let finals = vec![final_read(1, 0, 4, &[(4, "g2"), (5, "g1"), (6, "h2"), (7, "h1")])];
        let r = check_all(&h.events, &finals);
        assert_eq!(classes(&r), vec![AnomalyClass::FifoOrder], "{:?}", r.anomalies);
        assert!(r.anomalies[0].detail.contains("\"g1\" (offset 5) completed before \"g2\" (offset 4)"), "{}", r.anomalies[0].detail);
        assert_eq!(r.anomalies[0].events, vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_committed_offset_read_lower_than_a_completed_commit_goes_backwards() {
        let (mut h, finals) = clean();
        h.read_offset(6, 0, Some(2));
        let r = check_all(&h.events, &finals);
        assert_eq!(classes(&r), vec![AnomalyClass::CommitBackwards], "{:?}", r.anomalies);
        assert!(r.anomalies[0].detail.contains("read 2 after 3"), "{}", r.anomalies[0].detail);
        // A read concurrent with the commit may see either value.
        let mut h = History::default();
        h.push(1, EventKind::Invoke, Op::Commit { consumer_group: "cg".into(), queue: 0, offset: 9 });
        h.read_offset(2, 0, None);
        h.push(1, EventKind::Ok, Op::Commit { consumer_group: "cg".into(), queue: 0, offset: 9 });
        h.read_offset(2, 0, Some(9));
        assert!(check_all(&h.events, &[]).anomalies.is_empty());
        // A commit of unknown outcome that takes effect late, then a new session that commits
        // lower: the register went down by a write, which is no anomaly.
        let mut h = History::default();
        h.push(1, EventKind::Invoke, Op::Commit { consumer_group: "cg".into(), queue: 0, offset: 100 });
        h.push(1, EventKind::Info, Op::Commit { consumer_group: "cg".into(), queue: 0, offset: 100 });
        h.read_offset(2, 0, Some(100));
        h.commit(2, 0, 94);
        h.read_offset(3, 0, Some(94));
        h.read_offset(3, 0, Some(94));
        assert!(check_all(&h.events, &[]).anomalies.is_empty(), "{:?}", check_all(&h.events, &[]).anomalies);
        // But a read of a value no later commit wrote is still caught.
        h.read_offset(3, 0, Some(50));
        assert_eq!(classes(&check_all(&h.events, &[])), vec![AnomalyClass::CommitBackwards]);
    }

    #[test]
    fn a_failed_send_that_was_stored_is_reported() {
        let (mut h, mut finals) = clean();
        h.invoke_send(9, 0, "refused", None);
        h.push(9, EventKind::Fail, Op::Send { queue: 0, value: "refused".into(), message_group: None, offset: None });
        for f in &mut finals {
            f.messages.push((3, "refused".into()));
            f.end_offset = 4;
        }
        let r = check_all(&h.events, &finals);
        assert_eq!(classes(&r), vec![AnomalyClass::FailedSendVisible], "{:?}", r.anomalies);
        assert!(
            r.anomalies[0].detail.contains("\"refused\" is at queue 0 offset 3, but its send failed: test"),
            "{}",
            r.anomalies[0].detail
        );
        // Once per place, with the send's events among those shown.
        assert!(r.anomalies[0].events.contains(&(h.events.len() as u64 - 1)), "{:?}", r.anomalies[0].events);
    }

    #[test]
    fn unknown_and_failed_sends_may_be_absent() {
        let (mut h, finals) = clean();
        h.invoke_send(8, 0, "maybe", None);
        h.push(8, EventKind::Info, Op::Send { queue: 0, value: "maybe".into(), message_group: None, offset: None });
        h.invoke_send(9, 0, "never", None);
        h.push(9, EventKind::Fail, Op::Send { queue: 0, value: "never".into(), message_group: None, offset: None });
        h.invoke_send(10, 0, "pending", None);
        let r = check_all(&h.events, &finals);
        assert!(r.valid(), "{:?}", r.anomalies);
        assert_eq!(r.sends, Outcomes { invoked: 6, ok: 3, fail: 1, info: 2 });
    }
}

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
//! A RocketMQ workload's consumer groups are checked in [`consumption`]: never received,
//! received after an acknowledgement, redelivered early, FIFO delivery order. Their deliveries
//! are observations like polls: the offset, phantom, corrupt and failed-send checks cover them.
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

use crate::history::{Event, EventKind, FinalRead, Op, QUEUE_CHOSEN_BY_BROKER, QueueReplicas};

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
    NeverReceived,
    ReceivedAfterAck,
    EarlyRedelivery,
    FifoDelivery,
}

impl AnomalyClass {
    pub const ALL: [AnomalyClass; 18] = [
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
        AnomalyClass::NeverReceived,
        AnomalyClass::ReceivedAfterAck,
        AnomalyClass::EarlyRedelivery,
        AnomalyClass::FifoDelivery,
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
    /// RocketMQ receives and acknowledgements.
    #[serde(default)]
    pub receives: Outcomes,
    #[serde(default)]
    pub acks: Outcomes,
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
            Op::Receive { .. } => &mut result.receives,
            Op::Ack { .. } => &mut result.acks,
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
            // A queue the broker chose is learned below, from where the value was seen.
            if let Some(o) = offset.filter(|_| *queue != QUEUE_CHOSEN_BY_BROKER) {
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
        if let Some(c) = op.completion.filter(|c| c.kind == EventKind::Ok)
            && let Op::Receive { messages, .. } = &c.op
        {
            for m in messages {
                seen.entry((m.queue, m.offset)).or_default().entry(&m.value).or_default().insert(Source::Event(c.index));
            }
        }
    }
    for f in finals {
        for (o, v) in &f.messages {
            seen.entry((f.queue, *o)).or_default().entry(v).or_default().insert(Source::Final { broker: f.broker });
        }
    }
    locate_chosen_queues(&mut sent, &mut seen);
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
    consumption::check(&ops, &sent, &start, &mut result.anomalies);
    result
}

/// Every value seen at each `(queue, offset)`, and where.
type Observations<'a> = BTreeMap<(u32, u64), BTreeMap<&'a str, BTreeSet<Source>>>;

/// An acknowledged send to [`QUEUE_CHOSEN_BY_BROKER`] took the queue where its value was seen at
/// its acknowledged offset (by a final read or a consumer); one seen nowhere keeps the
/// placeholder, and [`check_final`] reports it lost.
fn locate_chosen_queues<'a>(sent: &mut HashMap<&'a str, Sent<'a>>, seen: &mut Observations<'a>) {
    let mut at_offset: HashMap<(&str, u64), u32> = HashMap::new();
    for ((queue, offset), values) in seen.iter() {
        for value in values.keys() {
            at_offset.entry((value, *offset)).or_insert(*queue);
        }
    }
    for (value, s) in sent.iter_mut() {
        let Some(offset) = s.offset.filter(|_| s.queue == QUEUE_CHOSEN_BY_BROKER) else { continue };
        if let Some(&queue) = at_offset.get(&(*value, offset)) {
            s.queue = queue;
            let acked = Source::Event(s.op.completion.map_or(0, |c| c.index));
            seen.entry((queue, offset)).or_default().entry(value).or_default().insert(acked);
        }
    }
}

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
        if s.queue == QUEUE_CHOSEN_BY_BROKER {
            result.anomalies.push(Anomaly {
                class: AnomalyClass::LostWrite,
                detail: format!("{value:?} acknowledged at offset {offset} of a queue the broker chose is in no final read of any queue"),
                events: s.op.events(),
            });
            continue;
        }
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
            Op::Send { queue, .. }
            | Op::Poll { queue, .. }
            | Op::Commit { queue, .. }
            | Op::ReadOffset { queue, .. }
            | Op::Receive { queue, .. }
            | Op::Ack { queue, .. } => *queue,
        })
        .filter(|q| *q != QUEUE_CHOSEN_BY_BROKER)
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

mod consumption;
#[cfg(test)]
mod tests;

use super::*;
use crate::history::Delivered;

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
    assert!(r.anomalies[0].detail.contains("\"refused\" is at queue 0 offset 3, but its send failed: test"), "{}", r.anomalies[0].detail);
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

// RocketMQ consumption (`consumption`): sends to a queue the broker chooses, receives, acks.

const SECOND_NS: u64 = 1_000_000_000;

impl History {
    /// An acknowledged RocketMQ send of `value` (queue chosen by the broker) at `offset`.
    fn rocketmq_send(&mut self, process: u64, value: &str, group: Option<&str>, offset: u64) {
        self.invoke_send(process, QUEUE_CHOSEN_BY_BROKER, value, group);
        self.ack_send(process, QUEUE_CHOSEN_BY_BROKER, value, group, offset);
    }

    /// An `ok` receive invoked at `invoked_s` and completed at `completed_s` (seconds), delivering
    /// `(queue, offset, value, attempt)`, each invisible 5 s.
    fn receive(&mut self, process: u64, (invoked_s, completed_s): (u64, u64), messages: &[(u32, u64, &str, u32)]) {
        let op = |messages| Op::Receive { consumer_group: "cg".into(), queue: 0, invisible_ms: 5_000, messages };
        let at = |i: u64, s: u64| s * SECOND_NS + i;
        let i = self.push(process, EventKind::Invoke, op(vec![]));
        self.events[i as usize].time_ns = at(i, invoked_s);
        let delivered =
            messages.iter().map(|&(queue, offset, value, attempt)| Delivered { queue, offset, value: value.into(), attempt }).collect();
        let c = self.push(process, EventKind::Ok, op(delivered));
        self.events[c as usize].time_ns = at(c, completed_s);
    }

    /// An acknowledgement of `value` at queue 0 `offset`, completed with `kind`.
    fn ack(&mut self, process: u64, offset: u64, value: &str, kind: EventKind) {
        let op = Op::Ack { consumer_group: "cg".into(), queue: 0, offset, value: value.into(), attempt: 1 };
        self.push(process, EventKind::Invoke, op.clone());
        self.push(process, kind, op);
    }
}

/// `a` and `b` sent to queue 0 (chosen by the broker) in message group `group`, held by every
/// replica.
fn rocketmq_sent_in(group: Option<&str>) -> (History, Vec<FinalRead>) {
    let mut h = History::default();
    h.rocketmq_send(1, "a", group, 0);
    h.rocketmq_send(1, "b", group, 1);
    let finals = (1..=3).map(|b| final_read(b, 0, 0, &[(0, "a"), (1, "b")])).collect();
    (h, finals)
}

#[test]
fn a_consumer_group_that_got_and_acked_everything_in_order_passes() {
    let (mut h, finals) = rocketmq_sent_in(Some("g"));
    h.receive(5, (1, 1), &[(0, 0, "a", 1)]);
    h.ack(5, 0, "a", EventKind::Ok);
    // "b" left unacknowledged once, delivered again after its 5 s.
    h.receive(5, (2, 2), &[(0, 1, "b", 1)]);
    h.receive(5, (7, 8), &[(0, 1, "b", 2)]);
    h.ack(5, 1, "b", EventKind::Ok);
    let result = check_all(&h.events, &finals);
    assert!(result.valid(), "{:?}", result.anomalies);
    assert_eq!((result.receives.ok, result.acks.ok), (3, 2));
}

#[test]
fn a_send_to_a_queue_the_broker_chose_that_no_replica_holds_is_lost() {
    let (mut h, _) = rocketmq_sent_in(Some("g"));
    h.receive(5, (1, 1), &[(0, 0, "a", 1), (0, 1, "b", 1)]);
    let finals: Vec<FinalRead> = (1..=3).map(|b| final_read(b, 0, 0, &[(0, "a")])).collect();
    let result = check_all(&h.events, &finals);
    assert!(classes(&result).contains(&AnomalyClass::UnseenAtEnd), "located by the delivery at queue 0: {:?}", result.anomalies);
    let mut h = History::default();
    h.rocketmq_send(1, "c", None, 4);
    let result = check_all(&h.events, &finals);
    assert!(classes(&result).contains(&AnomalyClass::LostWrite), "seen nowhere: {:?}", result.anomalies);
}

#[test]
fn an_acknowledged_send_the_consumer_group_never_got_is_never_received() {
    let (mut h, finals) = rocketmq_sent_in(Some("g"));
    h.receive(5, (1, 1), &[(0, 0, "a", 1)]);
    h.ack(5, 0, "a", EventKind::Ok);
    assert_eq!(classes(&check_all(&h.events, &finals)), [AnomalyClass::NeverReceived]);
}

#[test]
fn a_delivery_after_an_acknowledgement_completed_is_caught() {
    let (mut h, finals) = rocketmq_sent_in(None);
    h.receive(5, (1, 1), &[(0, 0, "a", 1), (0, 1, "b", 1)]);
    h.ack(5, 1, "b", EventKind::Ok);
    // "a" was never acknowledged: its redelivery is due; "b"'s is not.
    h.receive(5, (7, 7), &[(0, 0, "a", 2)]);
    h.receive(5, (8, 8), &[(0, 1, "b", 2)]);
    h.ack(5, 0, "a", EventKind::Ok);
    assert_eq!(classes(&check_all(&h.events, &finals)), [AnomalyClass::ReceivedAfterAck]);
}

#[test]
fn a_redelivery_before_the_invisible_time_passed_or_a_repeated_attempt_is_early() {
    for (second, attempt) in [((3, 3), 2), ((8, 8), 1)] {
        let mut h = History::default();
        h.rocketmq_send(1, "a", None, 0);
        h.receive(5, (1, 1), &[(0, 0, "a", 1)]);
        h.receive(5, second, &[(0, 0, "a", attempt)]);
        h.ack(5, 0, "a", EventKind::Ok);
        let finals: Vec<FinalRead> = (1..=3).map(|b| final_read(b, 0, 0, &[(0, "a")])).collect();
        assert_eq!(classes(&check_all(&h.events, &finals)), [AnomalyClass::EarlyRedelivery], "{second:?} attempt {attempt}");
    }
}

#[test]
fn a_fifo_message_delivered_before_the_one_before_it_was_acknowledged_is_out_of_order() {
    let (mut h, finals) = rocketmq_sent_in(Some("g"));
    h.receive(5, (1, 1), &[(0, 0, "a", 1)]);
    h.receive(6, (2, 2), &[(0, 1, "b", 1)]);
    // Acknowledging "a" later does not make up for it; a failed ack would not either.
    h.ack(5, 0, "a", EventKind::Ok);
    h.ack(6, 1, "b", EventKind::Ok);
    assert_eq!(classes(&check_all(&h.events, &finals)), [AnomalyClass::FifoDelivery]);
    // One batch may carry both, in order; not out of order.
    let (mut h, finals) = rocketmq_sent_in(Some("g"));
    h.receive(5, (1, 1), &[(0, 0, "a", 1), (0, 1, "b", 1)]);
    h.ack(5, 0, "a", EventKind::Ok);
    h.ack(5, 1, "b", EventKind::Ok);
    assert!(check_all(&h.events, &finals).valid());
    let (mut h, finals) = rocketmq_sent_in(Some("g"));
    h.receive(5, (1, 1), &[(0, 1, "b", 1), (0, 0, "a", 1)]);
    h.ack(5, 0, "a", EventKind::Ok);
    h.ack(5, 1, "b", EventKind::Ok);
    assert_eq!(classes(&check_all(&h.events, &finals)), [AnomalyClass::FifoDelivery]);
    // Without a message group, no order is promised.
    let mut h = History::default();
    h.rocketmq_send(1, "a", None, 0);
    h.rocketmq_send(1, "b", None, 1);
    h.receive(5, (1, 1), &[(0, 1, "b", 1), (0, 0, "a", 1)]);
    h.ack(5, 0, "a", EventKind::Ok);
    h.ack(5, 1, "b", EventKind::Ok);
    assert!(check_all(&h.events, &finals).valid());
    // A predecessor out of attempts may have gone to the dead-letter queue instead.
    let (mut h, finals) = rocketmq_sent_in(Some("g"));
    h.receive(5, (1, 1), &[(0, 0, "a", consumption::DEAD_LETTER_ATTEMPT)]);
    h.receive(6, (7, 7), &[(0, 1, "b", 1)]);
    h.ack(6, 1, "b", EventKind::Ok);
    assert!(check_all(&h.events, &finals).valid());
}

//! What a RocketMQ consumer group was delivered, against what was sent and acknowledged: the
//! consumer state the brokers keep in Raft (receipts, invisibility, attempts, acks) must hold
//! through every fault.
//!
//! - [`AnomalyClass::NeverReceived`]: an acknowledged send that a consumer group of the history
//!   was never delivered, though its consumers drained the topic at the end.
//! - [`AnomalyClass::ReceivedAfterAck`]: a message delivered to a consumer group by a receive
//!   invoked after an acknowledgement of it completed `ok`.
//! - [`AnomalyClass::EarlyRedelivery`]: a message delivered again before the invisible time of
//!   an earlier delivery could have passed, or the same delivery attempt twice.
//! - [`AnomalyClass::FifoDelivery`]: in a FIFO message group, a message delivered before the one
//!   sent just before it (the next lower offset of the group on its queue) was acknowledged,
//!   other than right behind it in the same receive (a batch carries consecutive messages of a
//!   group in order, as RocketMQ's orderly pop does; the consumer takes them in that order).

use std::collections::{BTreeMap, HashMap};

use super::{Anomaly, AnomalyClass, Completed, Sent};
use crate::history::{Delivered, EventKind, Op};

/// From this delivery attempt on, the broker may move a message to the dead-letter queue
/// instead of delivering it again (RocketMQ's default: 16 retries, so 17 deliveries), which
/// unblocks its FIFO group without an acknowledgement.
pub const DEAD_LETTER_ATTEMPT: u32 = 17;

/// The broker stamps invisibility deadlines in whole milliseconds.
const CLOCK_SLACK_NS: u64 = 2_000_000;

/// One message delivered by an `ok` receive.
struct Delivery<'a> {
    receive: &'a Completed<'a>,
    invisible_ms: u64,
    message: &'a Delivered,
}

/// Checks the receives and acks of `ops`; `sent` by value, `start` each queue's start offset
/// (retention removed what is below it).
pub(super) fn check(ops: &[Completed<'_>], sent: &HashMap<&str, Sent<'_>>, start: &HashMap<u32, u64>, out: &mut Vec<Anomaly>) {
    // (consumer group, value) → its deliveries, in history order of their receives' completion.
    let mut delivered: BTreeMap<(&str, &str), Vec<Delivery<'_>>> = BTreeMap::new();
    // (consumer group, value) → the acknowledgements that may have settled it (not `fail`).
    let mut acks: HashMap<(&str, &str), Vec<&Completed<'_>>> = HashMap::new();
    let mut groups: Vec<&str> = Vec::new();
    let mut receives: Vec<&Completed<'_>> = Vec::new();
    for op in ops {
        match &op.invoke.op {
            Op::Receive { consumer_group, invisible_ms, .. } => {
                if !groups.contains(&consumer_group.as_str()) {
                    groups.push(consumer_group);
                }
                if let Some(c) = op.completion.filter(|c| c.kind == EventKind::Ok)
                    && let Op::Receive { messages, .. } = &c.op
                {
                    receives.push(op);
                    for message in messages {
                        let delivery = Delivery { receive: op, invisible_ms: *invisible_ms, message };
                        delivered.entry((consumer_group.as_str(), message.value.as_str())).or_default().push(delivery);
                    }
                }
            }
            Op::Ack { consumer_group, value, .. } if op.kind() != Some(EventKind::Fail) => {
                acks.entry((consumer_group.as_str(), value.as_str())).or_default().push(op);
            }
            _ => {}
        }
    }
    for list in delivered.values_mut() {
        list.sort_by_key(|d| completed_at(d.receive));
    }
    never_received(&groups, sent, start, &delivered, out);
    received_after_ack(&delivered, &acks, out);
    early_redelivery(&delivered, out);
    fifo_delivery(&receives, sent, &delivered, &acks, out);
}

/// The history index of an operation's completion (the end of the history if it has none).
fn completed_at(op: &Completed<'_>) -> u64 {
    op.completion.map_or(u64::MAX, |c| c.index)
}

fn never_received(
    groups: &[&str],
    sent: &HashMap<&str, Sent<'_>>,
    start: &HashMap<u32, u64>,
    delivered: &BTreeMap<(&str, &str), Vec<Delivery<'_>>>,
    out: &mut Vec<Anomaly>,
) {
    let mut acked: Vec<(&&str, &Sent<'_>)> = sent.iter().filter(|(_, s)| s.offset.is_some()).collect();
    acked.sort_by_key(|(_, s)| s.op.invoke.index);
    for group in groups {
        for (value, s) in &acked {
            let Some(offset) = s.offset else { continue };
            if offset < start.get(&s.queue).copied().unwrap_or(0) || delivered.contains_key(&(*group, **value)) {
                continue;
            }
            out.push(Anomaly {
                class: AnomalyClass::NeverReceived,
                detail: format!(
                    "{value:?} acknowledged at queue {} offset {offset} was never delivered to consumer group {group:?}",
                    s.queue
                ),
                events: s.op.events(),
            });
        }
    }
}

fn received_after_ack(
    delivered: &BTreeMap<(&str, &str), Vec<Delivery<'_>>>,
    acks: &HashMap<(&str, &str), Vec<&Completed<'_>>>,
    out: &mut Vec<Anomaly>,
) {
    for ((group, value), deliveries) in delivered {
        let Some(first_ok) =
            acks.get(&(*group, *value)).into_iter().flatten().filter(|a| a.kind() == Some(EventKind::Ok)).min_by_key(|a| completed_at(a))
        else {
            continue;
        };
        let acked_at = completed_at(first_ok);
        for d in deliveries.iter().filter(|d| d.receive.invoke.index > acked_at) {
            let mut events = first_ok.events();
            events.extend(d.receive.events());
            out.push(Anomaly {
                class: AnomalyClass::ReceivedAfterAck,
                detail: format!(
                    "{value:?} (queue {} offset {}) delivered to consumer group {group:?} as attempt {} after its acknowledgement completed",
                    d.message.queue, d.message.offset, d.message.attempt
                ),
                events,
            });
        }
    }
}

fn early_redelivery(delivered: &BTreeMap<(&str, &str), Vec<Delivery<'_>>>, out: &mut Vec<Anomaly>) {
    for ((group, value), deliveries) in delivered {
        let mut by_attempt: Vec<&Delivery<'_>> = deliveries.iter().collect();
        by_attempt.sort_by_key(|d| (d.message.attempt, completed_at(d.receive)));
        for pair in by_attempt.windows(2) {
            let (earlier, later) = (pair[0], pair[1]);
            let mut events = earlier.receive.events();
            events.extend(later.receive.events());
            if earlier.message.attempt == later.message.attempt {
                out.push(Anomaly {
                    class: AnomalyClass::EarlyRedelivery,
                    detail: format!("{value:?} delivered to consumer group {group:?} twice as attempt {}", later.message.attempt),
                    events,
                });
                continue;
            }
            // The broker stamped the earlier delivery no sooner than its receive was invoked,
            // and delivers again only once that stamp plus the invisible time has passed.
            let visible_from = earlier.receive.invoke.time_ns.saturating_add(earlier.invisible_ms.saturating_mul(1_000_000));
            let Some(later_done) = later.receive.completion.map(|c| c.time_ns) else { continue };
            if later_done.saturating_add(CLOCK_SLACK_NS) < visible_from {
                out.push(Anomaly {
                    class: AnomalyClass::EarlyRedelivery,
                    detail: format!(
                        "{value:?} delivered to consumer group {group:?} as attempt {} {} ms before attempt {} could be visible again ({} ms invisible)",
                        later.message.attempt,
                        (visible_from - later_done) / 1_000_000,
                        earlier.message.attempt,
                        earlier.invisible_ms
                    ),
                    events,
                });
            }
        }
    }
}

fn fifo_delivery(
    receives: &[&Completed<'_>],
    sent: &HashMap<&str, Sent<'_>>,
    delivered: &BTreeMap<(&str, &str), Vec<Delivery<'_>>>,
    acks: &HashMap<(&str, &str), Vec<&Completed<'_>>>,
    out: &mut Vec<Anomaly>,
) {
    // (queue, message group) → offset → value: from acknowledged sends and from deliveries.
    let mut groups: HashMap<(u32, &str), BTreeMap<u64, &str>> = HashMap::new();
    for (value, s) in sent {
        if let (Some(g), Some(offset)) = (s.message_group, s.offset) {
            groups.entry((s.queue, g)).or_default().insert(offset, value);
        }
    }
    for ((_, value), deliveries) in delivered {
        let Some(g) = sent.get(value).and_then(|s| s.message_group) else { continue };
        for d in deliveries {
            groups.entry((d.message.queue, g)).or_default().insert(d.message.offset, value);
        }
    }
    let attempts =
        |group: &str, value: &str| delivered.get(&(group, value)).map_or(0, |ds| ds.iter().map(|d| d.message.attempt).max().unwrap_or(0));
    for receive in receives {
        let (Op::Receive { consumer_group, .. }, Some(c)) = (&receive.invoke.op, receive.completion) else { continue };
        let Op::Receive { messages, .. } = &c.op else { continue };
        for (i, m) in messages.iter().enumerate() {
            let Some(g) = sent.get(m.value.as_str()).and_then(|s| s.message_group) else { continue };
            let Some((&before, &previous)) = groups.get(&(m.queue, g)).and_then(|offsets| offsets.range(..m.offset).next_back()) else {
                continue;
            };
            if attempts(consumer_group, previous) >= DEAD_LETTER_ATTEMPT {
                continue;
            }
            let ahead_in_batch = messages[..i].iter().any(|p| p.queue == m.queue && p.offset == before);
            let settled = acks.get(&(consumer_group.as_str(), previous)).into_iter().flatten().any(|a| a.invoke.index < c.index);
            if !settled && !ahead_in_batch {
                let mut events = receive.events();
                events.extend(acks.get(&(consumer_group.as_str(), previous)).into_iter().flatten().flat_map(|a| a.events()));
                out.push(Anomaly {
                    class: AnomalyClass::FifoDelivery,
                    detail: format!(
                        "message group {g:?} on queue {}: {:?} (offset {}) delivered to consumer group {consumer_group:?} before {previous:?} (offset {before}) was acknowledged",
                        m.queue, m.value, m.offset
                    ),
                    events,
                });
            }
        }
    }
}

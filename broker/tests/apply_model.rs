//! `apply_command` and `record_checkpoint` against a model of queues, consumer offsets,
//! checkpoints and trims, over random command sequences and checkpoint intervals: every stored
//! message gets the next dense offset of its queue (invariant 2), a consumer offset only moves
//! forward and never past its queue's end (invariant 3), a queue takes no more consumer groups
//! than the bound its commit carries, a refused command changes nothing, a
//! trim is accepted exactly at a held checkpoint above the trim point and leaves each queue
//! holding exactly the messages of the entries after it, and nothing held ever points at a log
//! entry at or below the trim point.

use std::collections::BTreeMap;

use broker::queue::{EntryEffects, GroupCommand, GroupReply, GroupView, NewMessage, QueueGroupOptions, apply_command, record_checkpoint};
use broker::store::CHECKPOINTS_MAX;
use proptest::prelude::*;

const QUEUES: u32 = 3;
const CONSUMERS: [&str; 2] = ["cg-a", "cg-b"];

/// The group state the functions read, kept by writing their own effects (as the store does).
type AppliedView = broker::testing::MemoryGroup;

/// What a user expects, kept without the functions under test: per queue, every message sent
/// (id and log index) and the first one still held; per consumer, its offset; the checkpoints
/// as the queue lengths at their index; the trim point.
#[derive(Default)]
struct Model {
    queues: BTreeMap<u32, Vec<(String, u64)>>,
    start: BTreeMap<u32, u64>,
    consumed: BTreeMap<(String, u32), u64>,
    checkpoints: BTreeMap<u64, BTreeMap<u32, u64>>,
    trim_point: Option<u64>,
}

impl Model {
    fn lengths(&self) -> BTreeMap<u32, u64> {
        self.queues.iter().map(|(q, v)| (*q, v.len() as u64)).collect()
    }

    /// Trims at the checkpoint `k`: each queue then starts at its length at `k`.
    fn trim(&mut self, k: u64) {
        let lengths = self.checkpoints[&k].clone();
        self.start.extend(lengths);
        self.trim_point = Some(k);
        self.checkpoints.retain(|&i, _| i >= k);
    }

    /// The checkpoint the entry at `k` records.
    fn checkpoint(&mut self, k: u64) {
        self.checkpoints.insert(k, self.lengths());
        let holds_nothing = self.queues.iter().all(|(q, v)| self.start.get(q).copied().unwrap_or(0) == v.len() as u64);
        if holds_nothing {
            self.trim(k);
        }
        let above: Vec<u64> = self.checkpoints.keys().copied().filter(|&i| self.trim_point.is_none_or(|t| i > t)).collect();
        for old in above.iter().take(above.len().saturating_sub(CHECKPOINTS_MAX)) {
            self.checkpoints.remove(old);
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Send(Vec<u32>),
    /// `consumer_groups_max`: the bound a leader stamped, or none (an entry from before it).
    Commit {
        consumer: usize,
        queue: u32,
        offset: u64,
        consumer_groups_max: Option<u32>,
    },
    /// Trim at the `n % (held + 1)`th held checkpoint, or at an index that is none when `n`
    /// picks the extra slot.
    Trim(usize),
    Blank,
    /// A checkpoint by time: recorded at its own index, whatever the interval.
    Checkpoint,
}

/// An operation, with trims `trim_weight` in 12 of them.
fn op(trim_weight: u32) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec(0..QUEUES, 1..6).prop_map(Op::Send),
        3 => (0..CONSUMERS.len(), 0..QUEUES, 0..30u64, proptest::option::of(1..3u32))
            .prop_map(|(consumer, queue, offset, consumer_groups_max)| Op::Commit { consumer, queue, offset, consumer_groups_max }),
        trim_weight => any::<usize>().prop_map(Op::Trim),
        1 => Just(Op::Blank),
        1 => Just(Op::Checkpoint),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn offsets_trims_and_checkpoints_follow_the_model(interval in 1..6u64, ops in proptest::collection::vec(op(2), 1..150)) {
        check(interval, &ops)?;
    }

    /// Long runs with rare trims: more checkpoints than a group keeps, so the oldest go.
    #[test]
    fn the_oldest_checkpoints_go_beyond_the_bound(ops in proptest::collection::vec(op(0), 80..200), trims in proptest::collection::vec((0..200usize, any::<usize>()), 0..3)) {
        let mut ops = ops;
        for (at, n) in trims {
            let at = at.min(ops.len() - 1);
            ops[at] = Op::Trim(n);
        }
        check(1, &ops)?;
    }
}

fn check(interval: u64, ops: &[Op]) -> Result<(), TestCaseError> {
    {
        let options = QueueGroupOptions { checkpoint_interval_entries: interval };
        let mut view = AppliedView::default();
        let mut model = Model::default();
        let mut sent = 0usize;
        for (i, op) in ops.iter().enumerate() {
            let log_index = i as u64 + 1;
            let command = match op {
                Op::Send(queues) => {
                    let messages: Vec<NewMessage> = queues
                        .iter()
                        .map(|q| {
                            sent += 1;
                            NewMessage {
                                queue: *q,
                                message_id: format!("m{sent}"),
                                tag: None,
                                keys: vec![],
                                properties: vec![],
                                body: vec![0; sent % 7],
                                ..NewMessage::default()
                            }
                        })
                        .collect();
                    Some(GroupCommand::Send { store_time_ms: 5, messages })
                }
                Op::Commit { consumer, queue, offset, consumer_groups_max: None } => {
                    Some(GroupCommand::CommitOffset { consumer_group: CONSUMERS[*consumer].to_string(), queue: *queue, offset: *offset })
                }
                Op::Commit { consumer, queue, offset, consumer_groups_max: Some(max) } => Some(GroupCommand::CommitOffsetBounded {
                    consumer_group: CONSUMERS[*consumer].to_string(),
                    queue: *queue,
                    offset: *offset,
                    consumer_groups_max: *max,
                }),
                Op::Trim(n) => {
                    let held: Vec<u64> = model.checkpoints.keys().copied().collect();
                    let up_to_log_index = held.get(n % (held.len() + 1)).copied().unwrap_or(log_index / 2);
                    Some(GroupCommand::Trim { up_to_log_index })
                }
                Op::Blank => None,
                Op::Checkpoint => Some(GroupCommand::Checkpoint),
            };
            let (mut effects, reply) = match &command {
                Some(c) => apply_command(&view, log_index, c).unwrap(),
                None => (EntryEffects::default(), GroupReply::NoCommand),
            };
            if matches!(reply, GroupReply::Rejected { .. } | GroupReply::LimitReached { .. }) {
                prop_assert_eq!(effects.clone(), EntryEffects::default(), "a refused command changes nothing");
            }
            match (&command, &reply) {
                (Some(GroupCommand::Send { messages, .. }), GroupReply::Sent { offsets }) => {
                    prop_assert_eq!(offsets.len(), messages.len());
                    for ((q, offset), (m, (iq, ioffset, entry))) in offsets.iter().zip(messages.iter().zip(&effects.index)) {
                        let queue = model.queues.entry(m.queue).or_default();
                        prop_assert_eq!((*q, *offset), (m.queue, queue.len() as u64), "the next dense offset of its queue");
                        prop_assert_eq!((*iq, *ioffset), (*q, *offset), "the index entry names the same place");
                        prop_assert_eq!((entry.log_index, entry.size as usize, entry.store_time_ms), (log_index, m.body.len(), 5));
                        queue.push((m.message_id.clone(), log_index));
                    }
                }
                (
                    Some(
                        GroupCommand::CommitOffset { consumer_group, queue, offset }
                        | GroupCommand::CommitOffsetBounded { consumer_group, queue, offset, .. },
                    ),
                    reply,
                ) => {
                    let end = model.queues.get(queue).map_or(0, |q| q.len() as u64);
                    let current = model.consumed.get(&(consumer_group.clone(), *queue)).copied();
                    let max = match &command {
                        Some(GroupCommand::CommitOffsetBounded { consumer_groups_max, .. }) => *consumer_groups_max as usize,
                        _ => usize::MAX,
                    };
                    let on_queue = model.consumed.keys().filter(|(_, q)| q == queue).count();
                    if *offset <= end && current.is_none() && on_queue >= max {
                        prop_assert!(matches!(reply, GroupReply::LimitReached { .. }), "{:?}", reply);
                    } else if *offset <= end && current.is_none_or(|c| *offset >= c) {
                        prop_assert_eq!(reply, &GroupReply::OffsetCommitted);
                        model.consumed.insert((consumer_group.clone(), *queue), *offset);
                    } else {
                        prop_assert!(matches!(reply, GroupReply::Rejected { .. }), "{:?}", reply);
                    }
                }
                (Some(GroupCommand::Trim { up_to_log_index: k }), reply) => {
                    if model.checkpoints.contains_key(k) && model.trim_point.is_none_or(|t| *k > t) {
                        prop_assert_eq!(reply, &GroupReply::Trimmed { up_to_log_index: *k });
                        model.trim(*k);
                    } else {
                        prop_assert!(matches!(reply, GroupReply::Rejected { .. }), "trim at {}: {:?}", k, reply);
                    }
                }
                (None, reply) => prop_assert_eq!(reply, &GroupReply::NoCommand),
                (Some(GroupCommand::Checkpoint), reply) => prop_assert_eq!(reply, &GroupReply::Checkpointed { log_index }),
                (Some(GroupCommand::Send { .. }), reply) => prop_assert!(false, "send refused: {:?}", reply),
                (Some(GroupCommand::SendV1 { .. }), _) => prop_assert!(false, "the model proposes no released-layout sends"),
                (Some(GroupCommand::Receive { .. } | GroupCommand::Ack { .. } | GroupCommand::ChangeInvisibility { .. }), _) => {
                    prop_assert!(false, "the model proposes no consumer commands yet")
                }
            }
            if options.records_checkpoint(log_index, command.as_ref()) {
                record_checkpoint(&view, log_index, log_index.to_le_bytes().to_vec(), &mut effects).unwrap();
                model.checkpoint(log_index);
            }
            // What the store would refuse to write, it refuses here too.
            effects.clone().into_batch(log_index).unwrap();
            view.write(&effects);

            for q in 0..QUEUES {
                let sent_to = model.queues.get(&q).map(Vec::as_slice).unwrap_or_default();
                let start = model.start.get(&q).copied().unwrap_or(0);
                prop_assert_eq!(view.next_offset(q).unwrap(), sent_to.len() as u64);
                prop_assert_eq!(view.start_offset(q).unwrap(), start, "queue {}", q);
                // Exactly the messages from the start offset on are held, each at its entry.
                let held: Vec<(u64, u64)> =
                    view.index.iter().filter(|((iq, _), _)| *iq == q).map(|((_, o), e)| (*o, e.log_index)).collect();
                let want: Vec<(u64, u64)> = sent_to.iter().enumerate().skip(start as usize).map(|(o, (_, li))| (o as u64, *li)).collect();
                prop_assert_eq!(held, want, "queue {}", q);
            }
            prop_assert_eq!(&view.consumers, &model.consumed);
            prop_assert_eq!(view.trim_point, model.trim_point);
            prop_assert_eq!(view.checkpoints.keys().collect::<Vec<_>>(), model.checkpoints.keys().collect::<Vec<_>>());
            for (k, lengths) in &model.checkpoints {
                let c = &view.checkpoints[k];
                let next: BTreeMap<u32, u64> = c.next_offsets.iter().copied().collect();
                prop_assert_eq!(&next, lengths, "checkpoint {}", k);
                prop_assert_eq!(c.raft_state.clone(), k.to_le_bytes().to_vec());
            }
            if let Some(t) = view.trim_point {
                prop_assert!(view.checkpoints.contains_key(&t), "the trim point's checkpoint is held");
                prop_assert!(view.index.values().all(|e| e.log_index > t), "nothing held points at an entry up to the trim point {}", t);
            }
            prop_assert!(view.checkpoints.len() <= CHECKPOINTS_MAX + 1);
        }
    }
    Ok(())
}

//! `apply_command` against a model of queues and consumer offsets, over random command
//! sequences: every stored message gets the next dense offset of its queue (invariant 2), a
//! consumer offset only moves forward and never past its queue's end (invariant 3), and a
//! refused command changes nothing.

use std::collections::BTreeMap;

use broker::queue::{EntryEffects, GroupCommand, GroupReply, GroupView, NewMessage, apply_command};
use broker::store::StoreError;
use proptest::prelude::*;

const QUEUES: u32 = 3;
const CONSUMERS: [&str; 2] = ["cg-a", "cg-b"];

/// The group state the function reads, kept by applying its own effects.
#[derive(Default)]
struct AppliedView {
    next: BTreeMap<u32, u64>,
    consumed: BTreeMap<(String, u32), u64>,
}

impl GroupView for AppliedView {
    fn next_offset(&self, queue: u32) -> Result<u64, StoreError> {
        Ok(self.next.get(&queue).copied().unwrap_or(0))
    }
    fn consumer_offset(&self, consumer_group: &str, queue: u32) -> Result<Option<u64>, StoreError> {
        Ok(self.consumed.get(&(consumer_group.to_string(), queue)).copied())
    }
}

impl AppliedView {
    fn apply(&mut self, effects: &EntryEffects) {
        for (queue, next) in &effects.next_offsets {
            self.next.insert(*queue, *next);
        }
        for (cg, queue, offset) in &effects.consumer_offsets {
            self.consumed.insert((cg.clone(), *queue), *offset);
        }
    }
}

/// What a user expects: per queue, the messages in send order; per consumer, its offset.
#[derive(Default)]
struct Model {
    queues: BTreeMap<u32, Vec<String>>,
    consumed: BTreeMap<(String, u32), u64>,
}

#[derive(Debug, Clone)]
enum Op {
    Send(Vec<u32>),
    Commit { consumer: usize, queue: u32, offset: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => proptest::collection::vec(0..QUEUES, 1..6).prop_map(Op::Send),
        2 => (0..CONSUMERS.len(), 0..QUEUES, 0..12u64).prop_map(|(consumer, queue, offset)| Op::Commit { consumer, queue, offset }),
    ]
}

proptest! {
    #[test]
    fn offsets_are_dense_and_consumer_progress_only_moves_forward(ops in proptest::collection::vec(op(), 1..40)) {
        let mut view = AppliedView::default();
        let mut model = Model::default();
        let mut sent = 0usize;
        for (i, op) in ops.iter().enumerate() {
            let log_index = i as u64 + 1;
            match op {
                Op::Send(queues) => {
                    let messages: Vec<NewMessage> = queues.iter().map(|q| {
                        sent += 1;
                        NewMessage { queue: *q, message_id: format!("m{sent}"), tag: None, keys: vec![], properties: vec![], body: vec![0; sent % 7] }
                    }).collect();
                    let (effects, reply) = apply_command(&view, log_index, &GroupCommand::Send { store_time_ms: 5, messages: messages.clone() }).unwrap();
                    let GroupReply::Sent { offsets } = reply else { panic!("send refused: {reply:?}") };
                    prop_assert_eq!(offsets.len(), messages.len());
                    for ((q, offset), (m, (iq, ioffset, entry))) in offsets.iter().zip(messages.iter().zip(&effects.index)) {
                        let queue = model.queues.entry(m.queue).or_default();
                        prop_assert_eq!((*q, *offset), (m.queue, queue.len() as u64), "the next dense offset of its queue");
                        prop_assert_eq!((*iq, *ioffset), (*q, *offset), "the index entry names the same place");
                        prop_assert_eq!((entry.log_index, entry.size as usize, entry.store_time_ms), (log_index, m.body.len(), 5));
                        queue.push(m.message_id.clone());
                    }
                    view.apply(&effects);
                }
                Op::Commit { consumer, queue, offset } => {
                    let cg = CONSUMERS[*consumer].to_string();
                    let (effects, reply) = apply_command(&view, log_index, &GroupCommand::CommitOffset { consumer_group: cg.clone(), queue: *queue, offset: *offset }).unwrap();
                    let end = model.queues.get(queue).map_or(0, |q| q.len() as u64);
                    let current = model.consumed.get(&(cg.clone(), *queue)).copied();
                    let allowed = *offset <= end && current.is_none_or(|c| *offset >= c);
                    if allowed {
                        prop_assert_eq!(reply, GroupReply::OffsetCommitted);
                        model.consumed.insert((cg, *queue), *offset);
                    } else {
                        prop_assert!(matches!(reply, GroupReply::Rejected { .. }), "{:?}", reply);
                        prop_assert_eq!(effects.clone(), EntryEffects::default(), "a refused command changes nothing");
                    }
                    view.apply(&effects);
                }
            }
            for q in 0..QUEUES {
                prop_assert_eq!(view.next_offset(q).unwrap(), model.queues.get(&q).map_or(0, |v| v.len() as u64));
            }
            for ((cg, q), offset) in &model.consumed {
                prop_assert_eq!(view.consumer_offset(cg, *q).unwrap(), Some(*offset));
            }
        }
    }
}

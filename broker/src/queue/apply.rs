//! What one command does to a queue group, decided without IO: given a view of the group's
//! current offsets and one Raft entry's command, [`apply_command`] returns the entry's effects
//! (index entries, next offsets, consumer offsets) and the reply. The state machine reads the
//! view from the store and writes the effects in one batch; tests drive it with tables.
//!
//! Every decision here must depend only on the command and the view, never on a clock, a random
//! seed or a limit that differs between replicas: replicas applying the same log must reach the
//! same state (invariant 2).

use std::collections::BTreeMap;

use super::command::{GroupCommand, GroupReply, NewMessage};
use crate::store::{ApplyBatch, CONSUMER_GROUP_BYTES_MAX, IndexEntry, StoreError};

/// The group state a command reads: as of the end of the previous entry.
pub trait GroupView {
    /// The offset the next message of `queue` will get (0 for a queue never written).
    fn next_offset(&self, queue: u32) -> Result<u64, StoreError>;
    /// `consumer_group`'s committed offset on `queue`, if it ever committed one.
    fn consumer_offset(&self, consumer_group: &str, queue: u32) -> Result<Option<u64>, StoreError>;
}

/// Everything one entry changes in its group, in a deterministic order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryEffects {
    /// `(queue, offset, entry)` of each stored message, in the command's order.
    pub index: Vec<(u32, u64, IndexEntry)>,
    /// `(queue, next offset)` of each queue written, by ascending queue.
    pub next_offsets: Vec<(u32, u64)>,
    /// `(consumer group, queue, offset)` of each committed offset that moved.
    pub consumer_offsets: Vec<(String, u32, u64)>,
}

impl EntryEffects {
    fn ops(&self) -> usize {
        self.index.len() + self.next_offsets.len() + self.consumer_offsets.len()
    }

    /// The store batch of Raft entry `log_index` holding these effects. Cannot fail for effects
    /// made by [`apply_command`], which refuses commands whose effects a batch cannot hold.
    pub fn into_batch(self, log_index: u64) -> Result<ApplyBatch, StoreError> {
        let mut batch = ApplyBatch::new(log_index);
        for (queue, offset, entry) in self.index {
            batch.put_index(queue, offset, entry)?;
        }
        for (queue, next) in self.next_offsets {
            batch.set_next_offset(queue, next)?;
        }
        for (consumer_group, queue, offset) in self.consumer_offsets {
            batch.set_consumer_offset(&consumer_group, queue, offset)?;
        }
        Ok(batch)
    }
}

/// Why a command was not applied: a refusal is a deterministic answer, a read error is not.
enum Outcome {
    Refused(String),
    Read(StoreError),
}

impl From<StoreError> for Outcome {
    fn from(e: StoreError) -> Self {
        Outcome::Read(e)
    }
}

/// The effects and reply of `command`, held by the Raft entry at `log_index`, on a group in
/// state `view`. A refused command has no effects and a [`GroupReply::Rejected`] reply; only a
/// failed read is an error (the caller must stop applying: going on would diverge).
pub fn apply_command(view: &impl GroupView, log_index: u64, command: &GroupCommand) -> Result<(EntryEffects, GroupReply), StoreError> {
    let result = match command {
        GroupCommand::Send { store_time_ms, messages } => send(view, log_index, *store_time_ms, messages),
        GroupCommand::CommitOffset { consumer_group, queue, offset } => commit_offset(view, consumer_group, *queue, *offset),
    };
    match result {
        Ok(done) => Ok(done),
        Err(Outcome::Refused(reason)) => Ok((EntryEffects::default(), GroupReply::Rejected { reason })),
        Err(Outcome::Read(e)) => Err(e),
    }
}

fn send(view: &impl GroupView, log_index: u64, store_time_ms: u64, messages: &[NewMessage]) -> Result<(EntryEffects, GroupReply), Outcome> {
    // Checked before any work: at most one index entry and one next offset per message.
    if messages.len() > ApplyBatch::OPS_MAX / 2 {
        return Err(Outcome::Refused(format!("{} messages in one entry, at most {}", messages.len(), ApplyBatch::OPS_MAX / 2)));
    }
    // Next offsets of the queues this entry touches, read once each (at most one per message).
    let mut next: BTreeMap<u32, u64> = BTreeMap::new();
    let mut effects = EntryEffects::default();
    let mut offsets = Vec::with_capacity(messages.len());
    for (ordinal, m) in messages.iter().enumerate() {
        let offset = match next.get(&m.queue) {
            Some(&o) => o,
            None => view.next_offset(m.queue)?,
        };
        let after = offset.checked_add(1).ok_or_else(|| Outcome::Refused(format!("queue {} is full", m.queue)))?;
        let size =
            u32::try_from(m.body.len()).map_err(|_| Outcome::Refused(format!("message {ordinal} body of {} bytes", m.body.len())))?;
        // Fits: the count is bounded above.
        let position = ordinal as u32;
        let entry = IndexEntry { log_index, position, size, tag_hash: tag_hash(m.tag.as_deref()), store_time_ms };
        effects.index.push((m.queue, offset, entry));
        offsets.push((m.queue, offset));
        next.insert(m.queue, after);
    }
    effects.next_offsets = next.into_iter().collect();
    debug_assert!(effects.ops() <= ApplyBatch::OPS_MAX);
    Ok((effects, GroupReply::Sent { offsets }))
}

fn commit_offset(view: &impl GroupView, consumer_group: &str, queue: u32, offset: u64) -> Result<(EntryEffects, GroupReply), Outcome> {
    if consumer_group.is_empty() || consumer_group.len() > CONSUMER_GROUP_BYTES_MAX {
        return Err(Outcome::Refused(format!(
            "consumer group name of {} bytes: must be 1 to {CONSUMER_GROUP_BYTES_MAX}",
            consumer_group.len()
        )));
    }
    // An offset names the next message to consume: past the queue's end it would name a
    // message not stored yet, and skip it once stored.
    let end = view.next_offset(queue)?;
    if offset > end {
        return Err(Outcome::Refused(format!("offset {offset} is past the end {end} of queue {queue}")));
    }
    let mut effects = EntryEffects::default();
    match view.consumer_offset(consumer_group, queue)? {
        // Invariant 3: consumer progress only moves forward.
        Some(current) if offset < current => {
            return Err(Outcome::Refused(format!(
                "offset {offset} of {consumer_group:?} on queue {queue} is behind its committed offset {current}"
            )));
        }
        Some(current) if offset == current => {}
        _ => effects.consumer_offsets.push((consumer_group.to_string(), queue, offset)),
    }
    Ok((effects, GroupReply::OffsetCommitted))
}

/// The tag hash of the index: 64-bit FNV-1a of the tag's UTF-8 bytes, 0 for no tag. Stable
/// across processes, versions and machines (unlike std's `RandomState`), since replicas and
/// consumers must compute the same value. A tag that hashes to 0 only costs a false match,
/// which tag filtering resolves by checking the tag itself.
pub fn tag_hash(tag: Option<&str>) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    match tag {
        None => 0,
        Some(t) => t.bytes().fold(OFFSET_BASIS, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A group's offsets in memory: the model the store must agree with.
    #[derive(Debug, Default, Clone, PartialEq)]
    struct Model {
        next: BTreeMap<u32, u64>,
        consumers: BTreeMap<(String, u32), u64>,
        index: BTreeMap<(u32, u64), IndexEntry>,
    }

    impl GroupView for Model {
        fn next_offset(&self, queue: u32) -> Result<u64, StoreError> {
            Ok(self.next.get(&queue).copied().unwrap_or(0))
        }
        fn consumer_offset(&self, consumer_group: &str, queue: u32) -> Result<Option<u64>, StoreError> {
            Ok(self.consumers.get(&(consumer_group.to_string(), queue)).copied())
        }
    }

    impl Model {
        fn write(&mut self, effects: &EntryEffects) {
            for (q, o, e) in &effects.index {
                assert!(self.index.insert((*q, *o), *e).is_none(), "offset {o} of queue {q} written twice");
            }
            self.next.extend(effects.next_offsets.iter().copied());
            for (cg, q, o) in &effects.consumer_offsets {
                self.consumers.insert((cg.clone(), *q), *o);
            }
        }
    }

    fn msg(queue: u32, tag: Option<&str>, body: &[u8]) -> NewMessage {
        NewMessage {
            queue,
            message_id: format!("id-{queue}-{}", body.len()),
            tag: tag.map(str::to_string),
            keys: vec![],
            properties: vec![],
            body: body.to_vec(),
        }
    }

    fn send_cmd(store_time_ms: u64, messages: Vec<NewMessage>) -> GroupCommand {
        GroupCommand::Send { store_time_ms, messages }
    }

    fn commit(cg: &str, queue: u32, offset: u64) -> GroupCommand {
        GroupCommand::CommitOffset { consumer_group: cg.into(), queue, offset }
    }

    fn rejected(reply: &GroupReply) -> bool {
        matches!(reply, GroupReply::Rejected { .. })
    }

    /// Applies `log` (entries from index 1) to an empty model; returns it and the replies.
    fn run(log: &[GroupCommand]) -> (Model, Vec<GroupReply>) {
        let mut model = Model::default();
        let mut replies = Vec::new();
        for (i, cmd) in log.iter().enumerate() {
            let (effects, reply) = apply_command(&model, i as u64 + 1, cmd).unwrap();
            if rejected(&reply) {
                assert_eq!(effects, EntryEffects::default(), "a refused command has no effects");
            }
            model.write(&effects);
            effects.into_batch(i as u64 + 1).unwrap();
            replies.push(reply);
        }
        (model, replies)
    }

    #[test]
    fn one_entry_to_several_queues_gets_dense_offsets_in_order() {
        let cmd = send_cmd(
            77,
            vec![msg(0, Some("a"), b"x"), msg(2, None, b"yy"), msg(0, Some("b"), b"zzz"), msg(2, None, b""), msg(0, None, b"w")],
        );
        let mut view = Model::default();
        view.next.insert(2, 40);
        let (effects, reply) = apply_command(&view, 9, &cmd).unwrap();
        assert_eq!(reply, GroupReply::Sent { offsets: vec![(0, 0), (2, 40), (0, 1), (2, 41), (0, 2)] });
        let ie = |position, size, tag| IndexEntry { log_index: 9, position, size, tag_hash: tag_hash(tag), store_time_ms: 77 };
        assert_eq!(
            effects.index,
            vec![
                (0, 0, ie(0, 1, Some("a"))),
                (2, 40, ie(1, 2, None)),
                (0, 1, ie(2, 3, Some("b"))),
                (2, 41, ie(3, 0, None)),
                (0, 2, ie(4, 1, None))
            ]
        );
        assert_eq!(effects.next_offsets, vec![(0, 3), (2, 42)]);
        assert!(effects.consumer_offsets.is_empty());
    }

    #[test]
    fn a_table_of_logs_gives_the_expected_offsets_and_replies() {
        struct Case {
            name: &'static str,
            log: Vec<GroupCommand>,
            replies: Vec<GroupReply>,
            next: Vec<(u32, u64)>,
            consumers: Vec<(String, u32, u64)>,
        }
        let sent = |offsets: &[(u32, u64)]| GroupReply::Sent { offsets: offsets.to_vec() };
        let c = |cg: &str, queue: u32, offset: u64| (cg.to_string(), queue, offset);
        let cases = vec![
            Case {
                name: "several entries continue each queue's offsets",
                log: vec![
                    send_cmd(1, vec![msg(0, None, b"a"), msg(1, None, b"b")]),
                    send_cmd(2, vec![msg(1, None, b"c"), msg(1, None, b"d")]),
                    send_cmd(3, vec![msg(0, None, b"e")]),
                ],
                replies: vec![sent(&[(0, 0), (1, 0)]), sent(&[(1, 1), (1, 2)]), sent(&[(0, 1)])],
                next: vec![(0, 2), (1, 3)],
                consumers: vec![],
            },
            Case {
                name: "an empty send stores nothing and answers with no offsets",
                log: vec![send_cmd(1, vec![])],
                replies: vec![sent(&[])],
                next: vec![],
                consumers: vec![],
            },
            Case {
                name: "commit forward, equal, backward",
                log: vec![
                    send_cmd(1, vec![msg(3, None, b"a"); 5]),
                    commit("cg", 3, 2),
                    commit("cg", 3, 4),
                    commit("cg", 3, 4),
                    commit("cg", 3, 3),
                    commit("cg", 3, 5),
                ],
                replies: vec![
                    sent(&[(3, 0), (3, 1), (3, 2), (3, 3), (3, 4)]),
                    GroupReply::OffsetCommitted,
                    GroupReply::OffsetCommitted,
                    GroupReply::OffsetCommitted,
                    GroupReply::Rejected { reason: "offset 3 of \"cg\" on queue 3 is behind its committed offset 4".into() },
                    GroupReply::OffsetCommitted,
                ],
                next: vec![(3, 5)],
                consumers: vec![c("cg", 3, 5)],
            },
            Case {
                name: "consumer groups and queues are independent",
                log: vec![
                    send_cmd(1, vec![msg(0, None, b"a"), msg(1, None, b"b")]),
                    commit("a", 0, 1),
                    commit("b", 0, 0),
                    commit("a", 1, 1),
                    commit("b", 0, 1),
                ],
                replies: vec![
                    sent(&[(0, 0), (1, 0)]),
                    GroupReply::OffsetCommitted,
                    GroupReply::OffsetCommitted,
                    GroupReply::OffsetCommitted,
                    GroupReply::OffsetCommitted,
                ],
                next: vec![(0, 1), (1, 1)],
                consumers: vec![c("a", 0, 1), c("a", 1, 1), c("b", 0, 1)],
            },
            Case {
                name: "a first commit of 0 on an empty queue is stored",
                log: vec![commit("cg", 9, 0)],
                replies: vec![GroupReply::OffsetCommitted],
                next: vec![],
                consumers: vec![c("cg", 9, 0)],
            },
            Case {
                name: "commits past the queue's end and bad names are refused",
                log: vec![
                    send_cmd(1, vec![msg(0, None, b"a")]),
                    commit("cg", 0, 2),
                    commit("", 0, 0),
                    commit(&"x".repeat(CONSUMER_GROUP_BYTES_MAX + 1), 0, 0),
                    commit(&"x".repeat(CONSUMER_GROUP_BYTES_MAX), 0, 1),
                ],
                replies: vec![
                    sent(&[(0, 0)]),
                    GroupReply::Rejected { reason: "offset 2 is past the end 1 of queue 0".into() },
                    GroupReply::Rejected { reason: "consumer group name of 0 bytes: must be 1 to 255".into() },
                    GroupReply::Rejected { reason: "consumer group name of 256 bytes: must be 1 to 255".into() },
                    GroupReply::OffsetCommitted,
                ],
                next: vec![(0, 1)],
                consumers: vec![c(&"x".repeat(CONSUMER_GROUP_BYTES_MAX), 0, 1)],
            },
        ];
        for case in cases {
            let (model, replies) = run(&case.log);
            assert_eq!(replies, case.replies, "{}", case.name);
            assert_eq!(model.next.into_iter().collect::<Vec<_>>(), case.next, "{}", case.name);
            assert_eq!(model.consumers.into_iter().map(|((cg, q), o)| (cg, q, o)).collect::<Vec<_>>(), case.consumers, "{}", case.name);
            // Dense: each queue's index holds exactly offsets 0..next.
            for (&(q, o), e) in &model.index {
                assert!(
                    o < case.next.iter().find(|(nq, _)| *nq == q).map_or(0, |(_, n)| *n),
                    "{}: offset {o} of queue {q} past its end",
                    case.name
                );
                assert!(e.log_index >= 1, "{}", case.name);
            }
            let stored: u64 = case.next.iter().map(|(_, n)| n).sum();
            assert_eq!(model.index.len() as u64, stored, "{}: offsets are dense", case.name);
        }
    }

    #[test]
    fn a_send_larger_than_a_batch_can_hold_is_refused_whole() {
        let half = ApplyBatch::OPS_MAX / 2;
        let (effects, reply) = apply_command(&Model::default(), 1, &send_cmd(1, vec![msg(0, None, b""); half + 1])).unwrap();
        assert!(rejected(&reply), "{reply:?}");
        assert_eq!(effects, EntryEffects::default());
        // The largest accepted send, each message to its own queue, fits one batch.
        let messages = (0..half as u32).map(|q| msg(q, None, b"")).collect();
        let (effects, reply) = apply_command(&Model::default(), 1, &send_cmd(1, messages)).unwrap();
        assert!(!rejected(&reply));
        assert_eq!(effects.into_batch(1).unwrap().len(), ApplyBatch::OPS_MAX);
    }

    #[test]
    fn a_full_queue_refuses_more() {
        let mut view = Model::default();
        view.next.insert(0, u64::MAX);
        let (effects, reply) = apply_command(&view, 1, &send_cmd(1, vec![msg(1, None, b"a"), msg(0, None, b"b")])).unwrap();
        assert_eq!(reply, GroupReply::Rejected { reason: "queue 0 is full".into() });
        assert_eq!(effects, EntryEffects::default(), "nothing of the command, not even its first message");
    }

    #[test]
    fn a_failed_read_is_an_error_not_a_reply() {
        struct Broken;
        impl GroupView for Broken {
            fn next_offset(&self, _: u32) -> Result<u64, StoreError> {
                Err(StoreError::Corrupt { key: "k".into(), reason: "bad".into() })
            }
            fn consumer_offset(&self, _: &str, _: u32) -> Result<Option<u64>, StoreError> {
                Err(StoreError::Corrupt { key: "k".into(), reason: "bad".into() })
            }
        }
        assert!(apply_command(&Broken, 1, &send_cmd(1, vec![msg(0, None, b"a")])).is_err());
        assert!(apply_command(&Broken, 1, &commit("cg", 0, 0)).is_err());
    }

    #[test]
    fn tag_hash_is_fnv1a_and_stable() {
        // Published FNV-1a 64 test vectors: the hash must never change, stored index entries
        // and consumers depend on it.
        assert_eq!(tag_hash(Some("")), 0xcbf2_9ce4_8422_2325);
        assert_eq!(tag_hash(Some("a")), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(tag_hash(Some("foobar")), 0x8594_4171_f739_67e8);
        assert_eq!(tag_hash(None), 0);
        assert_ne!(tag_hash(Some("TagA")), tag_hash(Some("TagB")));
    }
}

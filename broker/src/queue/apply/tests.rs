use std::collections::BTreeMap;

use super::*;

use crate::testing::MemoryGroup as Model;

/// Invariant 2 holds where offsets are made: effects whose offsets skip or repeat never
/// reach the store.
#[test]
#[should_panic(expected = "queue 0: offset 2 follows 0 in one entry")]
fn an_entry_whose_offsets_skip_stops_loudly() {
    into_batch(&[0, 2], 3);
}

#[test]
#[should_panic(expected = "queue 0: next offset 5 after indexing offset 1")]
fn a_next_offset_not_just_past_the_entry_stops_loudly() {
    into_batch(&[0, 1], 5);
}

/// The store batch of one entry that indexes `offsets` of queue 0 and sets its next offset.
fn into_batch(offsets: &[u64], next_offset: u64) {
    let entry = IndexEntry { log_index: 1, position: 0, size: 1, tag_hash: 0, store_time_ms: 0 };
    let index = offsets.iter().map(|offset| (0, *offset, entry)).collect();
    let effects = EntryEffects { index, next_offsets: vec![(0, next_offset)], ..Default::default() };
    let _ = effects.into_batch(1);
}

impl Model {
    /// Applies the entry at `log_index` (a command, or none for a blank entry) and the
    /// checkpoint it records under `options`, as the state machine does.
    fn apply(&mut self, options: QueueGroupOptions, log_index: u64, command: Option<&GroupCommand>) -> GroupReply {
        let (mut effects, reply) = match command {
            Some(c) => apply_command(self, log_index, c).unwrap(),
            None => (EntryEffects::default(), GroupReply::NoCommand),
        };
        if rejected(&reply) {
            assert_eq!(effects, EntryEffects::default(), "a refused command has no effects");
        }
        if options.records_checkpoint(log_index, command) {
            record_checkpoint(self, log_index, format!("state {log_index}").into_bytes(), &mut effects).unwrap();
        }
        self.write(&effects);
        effects.into_batch(log_index).unwrap();
        reply
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
        ..NewMessage::default()
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
    // No checkpoints: indexes start at 1, and this interval is never reached.
    let options = QueueGroupOptions { checkpoint_interval_entries: u64::MAX };
    let replies = log.iter().enumerate().map(|(i, cmd)| model.apply(options, i as u64 + 1, Some(cmd))).collect();
    (model, replies)
}

#[test]
fn one_entry_to_several_queues_gets_dense_offsets_in_order() {
    let cmd =
        send_cmd(77, vec![msg(0, Some("a"), b"x"), msg(2, None, b"yy"), msg(0, Some("b"), b"zzz"), msg(2, None, b""), msg(0, None, b"w")]);
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
    // The largest accepted send, to as many queues as a group may hold, fits one batch.
    let messages = (0..half as u32).map(|i| msg(i % CHECKPOINT_ITEMS_MAX as u32, None, b"")).collect();
    let (effects, reply) = apply_command(&Model::default(), 1, &send_cmd(1, messages)).unwrap();
    assert!(!rejected(&reply), "{reply:?}");
    assert_eq!(effects.into_batch(1).unwrap().len(), half + CHECKPOINT_ITEMS_MAX);
}

#[test]
fn new_queues_and_consumer_groups_stop_at_what_a_checkpoint_holds() {
    let full = |queues: u32, consumers: usize| {
        let mut m = Model::default();
        for q in 0..queues {
            m.next.insert(q, 1);
        }
        for c in 0..consumers {
            m.consumers.insert((format!("cg-{c}"), 0), 0);
        }
        m
    };
    let limit = |reply: &GroupReply| matches!(reply, GroupReply::LimitReached { .. });
    // Exactly at the bound: one offset of room left, taken by a new queue or consumer group.
    let almost = full(100, CHECKPOINT_ITEMS_MAX - 101);
    assert_eq!(
        apply_command(&almost, 1, &send_cmd(1, vec![msg(500, None, b"a")])).unwrap().1,
        GroupReply::Sent { offsets: vec![(500, 0)] }
    );
    assert_eq!(apply_command(&almost, 1, &commit("new", 0, 0)).unwrap().1, GroupReply::OffsetCommitted);
    let (effects, reply) = apply_command(&almost, 1, &send_cmd(1, vec![msg(500, None, b"a"), msg(501, None, b"b")])).unwrap();
    assert!(limit(&reply) && effects == EntryEffects::default(), "{reply:?}");
    // Full: no new queue, no new consumer group; existing ones go on.
    let at = full(100, CHECKPOINT_ITEMS_MAX - 100);
    let (effects, reply) = apply_command(&at, 1, &send_cmd(1, vec![msg(500, None, b"a")])).unwrap();
    assert!(limit(&reply) && effects == EntryEffects::default(), "{reply:?}");
    let GroupReply::LimitReached { reason } = apply_command(&at, 1, &commit("new", 0, 0)).unwrap().1 else { panic!("not refused") };
    assert_eq!(reason, "the group holds 16384 queue and consumer offsets; 1 more would pass the 16384 a checkpoint holds");
    assert_eq!(apply_command(&at, 1, &send_cmd(1, vec![msg(7, None, b"a")])).unwrap().1, GroupReply::Sent { offsets: vec![(7, 1)] });
    assert_eq!(apply_command(&at, 1, &commit("cg-3", 0, 1)).unwrap().1, GroupReply::OffsetCommitted);
}

fn bounded(cg: &str, queue: u32, offset: u64, consumer_groups_max: u32) -> GroupCommand {
    GroupCommand::CommitOffsetBounded { consumer_group: cg.into(), queue, offset, consumer_groups_max }
}

#[test]
fn a_queue_takes_consumer_groups_up_to_the_stamped_bound() {
    let options = QueueGroupOptions { checkpoint_interval_entries: 1 << 20 };
    let mut m = Model::default();
    m.apply(options, 1, Some(&send_cmd(1, vec![msg(0, None, b"a"), msg(1, None, b"b")])));
    for (i, cg) in ["a", "b", "c"].iter().enumerate() {
        assert_eq!(m.apply(options, 2 + i as u64, Some(&bounded(cg, 0, 0, 3))), GroupReply::OffsetCommitted, "{cg}");
    }
    // One above: refused, naming the bound; nothing stored.
    let reply = m.apply(options, 5, Some(&bounded("d", 0, 0, 3)));
    assert_eq!(reply, GroupReply::LimitReached { reason: "queue 0 has 3 consumer groups, at most 3: \"d\" would be one more".into() });
    assert_eq!(m.consumers.len(), 3);
    // Those at the bound go on; another queue counts its own; a higher stamp admits more.
    assert_eq!(m.apply(options, 6, Some(&bounded("c", 0, 1, 3))), GroupReply::OffsetCommitted);
    assert_eq!(m.apply(options, 7, Some(&bounded("d", 1, 0, 3))), GroupReply::OffsetCommitted);
    assert_eq!(m.apply(options, 8, Some(&bounded("d", 0, 0, 4))), GroupReply::OffsetCommitted);
    // A stamp above what a checkpoint holds counts as the most a queue may have.
    let mut huge = Model::default();
    for c in 0..CONSUMER_GROUPS_PER_QUEUE_MAX {
        huge.consumers.insert((format!("cg-{c}"), 0), 0);
    }
    assert!(matches!(apply_command(&huge, 1, &bounded("x", 0, 0, u32::MAX)).unwrap().1, GroupReply::LimitReached { .. }));
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
    fn bad<T>() -> Result<T, StoreError> {
        Err(StoreError::Corrupt { key: "k".into(), reason: "bad".into() })
    }
    impl GroupView for Broken {
        fn next_offset(&self, _: u32) -> Result<u64, StoreError> {
            bad()
        }
        fn consumer_offset(&self, _: &str, _: u32) -> Result<Option<u64>, StoreError> {
            bad()
        }
        fn start_offset(&self, _: u32) -> Result<u64, StoreError> {
            bad()
        }
        fn trim_point(&self) -> Result<Option<u64>, StoreError> {
            bad()
        }
        fn checkpoint(&self, _: u64) -> Result<Option<Checkpoint>, StoreError> {
            bad()
        }
        fn checkpoint_indexes(&self) -> Result<Vec<u64>, StoreError> {
            bad()
        }
        fn group_offsets(&self, _: usize) -> Result<Option<GroupOffsets>, StoreError> {
            bad()
        }
        fn offset_counts(&self, _: u32, _: usize) -> Result<OffsetCounts, StoreError> {
            bad()
        }
        fn pop_cursor(&self, _: &str, _: u32) -> Result<Option<u64>, StoreError> {
            bad()
        }
        fn in_flight(&self, _: &str, _: u32, _: std::ops::Range<u64>, _: usize) -> Result<Vec<(u64, InFlight)>, StoreError> {
            bad()
        }
        fn in_flight_tally(&self, _: &str, _: u32) -> Result<Option<InFlightTally>, StoreError> {
            bad()
        }
        fn receive_floor(&self, _: &str, _: u32) -> Result<u64, StoreError> {
            bad()
        }
        fn receive_items(&self, _: usize) -> Result<usize, StoreError> {
            bad()
        }
        fn in_flight_record(&self, _: &str, _: u32, _: u64) -> Result<Option<InFlight>, StoreError> {
            bad()
        }
        fn receive_state(&self, _: usize) -> Result<Option<ReceiveState>, StoreError> {
            bad()
        }
    }
    assert!(apply_command(&Broken, 1, &receive("cg", 0, 1, 5)).is_err());
    assert!(apply_command(&Broken, 1, &GroupCommand::Ack { consumer_group: "cg".into(), queue: 0, deliveries: vec![(0, 1)] }).is_err());
    assert!(apply_command(&Broken, 1, &send_cmd(1, vec![msg(0, None, b"a")])).is_err());
    assert!(apply_command(&Broken, 1, &commit("cg", 0, 0)).is_err());
    assert!(apply_command(&Broken, 1, &GroupCommand::Trim { up_to_log_index: 0 }).is_err());
    assert!(record_checkpoint(&Broken, 1, vec![], &mut EntryEffects::default()).is_err());
}

fn trim_to(up_to_log_index: u64) -> GroupCommand {
    GroupCommand::Trim { up_to_log_index }
}

#[test]
fn checkpoints_record_the_state_as_of_their_entry() {
    let options = QueueGroupOptions { checkpoint_interval_entries: 4 };
    let mut m = Model::default();
    m.apply(options, 1, Some(&send_cmd(1, vec![msg(0, None, b"a"), msg(1, None, b"b")])));
    m.apply(options, 2, Some(&commit("cg", 0, 1)));
    m.apply(options, 3, None);
    // Entry 4 is a checkpoint index: the checkpoint includes entry 4's own effects.
    m.apply(options, 4, Some(&send_cmd(2, vec![msg(1, None, b"c")])));
    let c = &m.checkpoints[&4];
    assert_eq!(c.log_index, 4);
    assert_eq!(c.raft_state, b"state 4");
    assert_eq!(c.next_offsets, vec![(0, 1), (1, 2)]);
    assert_eq!(c.consumer_offsets, vec![("cg".into(), 0, 1)]);
    assert_eq!(m.checkpoints.keys().copied().collect::<Vec<_>>(), vec![4]);
    assert_eq!(m.trim_point, None, "messages are held: no automatic trim");
}

#[test]
fn a_checkpoint_with_no_message_held_becomes_the_trim_point() {
    let options = QueueGroupOptions { checkpoint_interval_entries: 2 };
    let mut m = Model::default();
    m.apply(options, 0, None);
    assert_eq!((m.trim_point, m.checkpoints.keys().copied().collect::<Vec<_>>()), (Some(0), vec![0]));
    m.apply(options, 1, Some(&commit("cg", 0, 0)));
    m.apply(options, 2, None);
    assert_eq!((m.trim_point, m.checkpoints.keys().copied().collect::<Vec<_>>()), (Some(2), vec![2]), "the older one is dropped");
    assert_eq!(m.checkpoints[&2].consumer_offsets, vec![("cg".into(), 0, 0)]);
    m.apply(options, 3, Some(&send_cmd(1, vec![msg(0, None, b"a")])));
    m.apply(options, 4, None);
    assert_eq!(m.trim_point, Some(2), "a message is held at 4");
    m.apply(options, 5, Some(&trim_to(4)));
    m.apply(options, 6, None);
    assert_eq!((m.trim_point, m.checkpoints.keys().copied().collect::<Vec<_>>()), (Some(6), vec![6]), "all trimmed: nothing held at 6");
    assert_eq!(m.start, BTreeMap::from([(0, 1)]));
}

#[test]
fn a_trim_deletes_the_index_up_to_its_checkpoint_and_moves_the_start_offsets() {
    let options = QueueGroupOptions { checkpoint_interval_entries: 3 };
    let mut m = Model::default();
    let mut replies = Vec::new();
    let log: Vec<(u64, Option<GroupCommand>)> = vec![
        (1, Some(send_cmd(10, vec![msg(0, None, b"a"), msg(1, None, b"b"), msg(0, None, b"c")]))),
        (2, Some(commit("cg", 0, 2))),
        (3, Some(send_cmd(11, vec![msg(0, None, b"d")]))),
        (4, Some(send_cmd(12, vec![msg(2, None, b"e")]))),
        (5, Some(trim_to(4))),
        (6, Some(send_cmd(13, vec![msg(1, None, b"f")]))),
        (7, Some(trim_to(3))),
        (8, Some(trim_to(3))),
        (9, Some(trim_to(6))),
    ];
    for (i, c) in &log {
        replies.push(m.apply(options, *i, c.as_ref()));
    }
    assert_eq!(replies[4], GroupReply::Rejected { reason: "no checkpoint at log index 4".into() });
    assert_eq!(replies[6], GroupReply::Trimmed { up_to_log_index: 3 });
    assert_eq!(replies[7], GroupReply::Rejected { reason: "log index 3 is not above the trim point 3".into() });
    assert_eq!(replies[8], GroupReply::Trimmed { up_to_log_index: 6 });
    assert_eq!(m.start, BTreeMap::from([(0, 3), (1, 2), (2, 1)]));
    assert_eq!(m.next, BTreeMap::from([(0, 3), (1, 2), (2, 1)]));
    assert!(m.index.is_empty(), "every message was in an entry up to 6: {:?}", m.index);
    // Entry 9 is itself a checkpoint index, recorded after its trim: nothing is held any
    // more, so its checkpoint became the trim point at once.
    assert_eq!(m.trim_point, Some(9));
    assert_eq!(m.checkpoints.keys().copied().collect::<Vec<_>>(), vec![9]);
    assert_eq!(m.consumers, BTreeMap::from([(("cg".into(), 0), 2)]), "consumer offsets are kept");
    // After the trim at 3 and before the one at 6: the messages of entries 4 and 6 only.
    let mut m = Model::default();
    for (i, c) in &log[..7] {
        m.apply(options, *i, c.as_ref());
    }
    assert_eq!(m.index.keys().copied().collect::<Vec<_>>(), vec![(1, 1), (2, 0)]);
    assert_eq!(m.start, BTreeMap::from([(0, 3), (1, 1)]));
}

#[test]
fn a_checkpoint_command_records_a_checkpoint_at_its_own_index_that_a_trim_accepts() {
    // An interval that a quiet group never reaches.
    let options = QueueGroupOptions { checkpoint_interval_entries: 4096 };
    let mut m = Model::default();
    m.apply(options, 1, Some(&send_cmd(1, vec![msg(0, None, b"a"), msg(0, None, b"b")])));
    m.apply(options, 2, Some(&commit("cg", 0, 1)));
    assert!(m.checkpoints.is_empty());
    assert_eq!(m.apply(options, 3, Some(&trim_to(2))), GroupReply::Rejected { reason: "no checkpoint at log index 2".into() });
    assert_eq!(m.apply(options, 4, Some(&GroupCommand::Checkpoint)), GroupReply::Checkpointed { log_index: 4 });
    let c = &m.checkpoints[&4];
    assert_eq!((c.next_offsets.clone(), c.consumer_offsets.clone()), (vec![(0, 2)], vec![("cg".into(), 0, 1)]));
    assert_eq!(c.raft_state, b"state 4");
    assert_eq!(m.trim_point, None, "messages are held at 4");
    assert_eq!(m.apply(options, 5, Some(&trim_to(4))), GroupReply::Trimmed { up_to_log_index: 4 });
    assert_eq!((m.start.clone(), m.index.len()), (BTreeMap::from([(0, 2)]), 0));
    // Another one on the trimmed group holds nothing: it becomes the trim point at once.
    m.apply(options, 6, Some(&GroupCommand::Checkpoint));
    assert_eq!((m.trim_point, m.checkpoints.keys().copied().collect::<Vec<_>>()), (Some(6), vec![6]));
    // At an interval index the command records the one checkpoint the index does.
    let mut at_interval = Model::default();
    at_interval.apply(QueueGroupOptions { checkpoint_interval_entries: 2 }, 2, Some(&GroupCommand::Checkpoint));
    assert_eq!(at_interval.checkpoints.keys().copied().collect::<Vec<_>>(), vec![2]);
}

#[test]
fn at_most_checkpoints_max_are_kept_above_the_trim_point() {
    let options = QueueGroupOptions { checkpoint_interval_entries: 1 };
    let mut m = Model::default();
    m.apply(options, 1, Some(&send_cmd(1, vec![msg(0, None, b"a")])));
    assert_eq!(m.trim_point, None);
    m.apply(options, 2, Some(&trim_to(1)));
    assert_eq!(m.trim_point, Some(2), "entry 2 holds nothing any more: it became the trim point");
    m.apply(options, 3, Some(&send_cmd(1, vec![msg(0, None, b"b")])));
    for i in 4..=(3 + CHECKPOINTS_MAX as u64 + 10) {
        m.apply(options, i, None);
    }
    let last = 3 + CHECKPOINTS_MAX as u64 + 10;
    let held: Vec<u64> = m.checkpoints.keys().copied().collect();
    let want: Vec<u64> = std::iter::once(2).chain(last + 1 - CHECKPOINTS_MAX as u64..=last).collect();
    assert_eq!(held, want, "the trim point's checkpoint and the newest CHECKPOINTS_MAX");
}

/// Any client could commit offset 0 under new consumer-group names until the group held more
/// offsets than a checkpoint can, and from then on it recorded no checkpoint and never
/// trimmed again. Now the commit past that is refused, and the checkpoint still comes.
#[test]
fn commits_under_ever_new_consumer_groups_never_stop_checkpoints() {
    let options = QueueGroupOptions { checkpoint_interval_entries: 1 << 20 };
    let mut m = Model::default();
    let last = CHECKPOINT_ITEMS_MAX as u64 + 1;
    for i in 1..=last {
        // Two queues, so that the bound on consumer groups per queue does not come first.
        m.apply(options, i, Some(&commit(&format!("cg-{i}"), (i % 2) as u32, 0)));
    }
    assert_eq!(m.consumers.len(), CHECKPOINT_ITEMS_MAX, "the commit past what a checkpoint holds is refused");
    m.apply(options, 1 << 20, None);
    assert!(m.checkpoints.contains_key(&(1 << 20)), "the checkpoint is recorded");
}

#[test]
#[should_panic(expected = "a group holds more than 16384 offsets at log index 8")]
fn a_group_with_more_offsets_than_a_checkpoint_holds_is_a_broken_invariant() {
    let mut m = Model::default();
    for q in 0..=CHECKPOINT_ITEMS_MAX as u32 {
        m.next.insert(q, 1);
    }
    let _ = record_checkpoint(&m, 8, vec![], &mut EntryEffects::default());
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

fn receive(consumer_group: &str, queue: u32, now_ms: u64, max_messages: u32) -> GroupCommand {
    GroupCommand::Receive {
        consumer_group: consumer_group.into(),
        queue,
        now_ms,
        invisible_ms: 1_000,
        max_messages,
        in_flight_max: 4,
        max_attempts: 3,
        fifo: false,
    }
}

fn delivered(reply: &GroupReply) -> Vec<(u64, u32, u32)> {
    match reply {
        GroupReply::Received { deliveries } => deliveries.iter().map(|d| (d.offset, d.attempt, d.version)).collect(),
        other => panic!("not a receive's reply: {other:?}"),
    }
}

/// A model group with `count` messages on queue 0.
fn group_with(count: usize) -> Model {
    let mut m = Model::default();
    let options = QueueGroupOptions { checkpoint_interval_entries: 4096 };
    m.apply(options, 1, Some(&send_cmd(1, (0..count).map(|i| msg(0, None, format!("m{i}").as_bytes())).collect())));
    m
}

fn apply_to(m: &mut Model, log_index: u64, command: &GroupCommand) -> GroupReply {
    m.apply(QueueGroupOptions { checkpoint_interval_entries: 4096 }, log_index, Some(command))
}

#[test]
fn receives_deliver_new_messages_then_what_became_visible_again() {
    let mut m = group_with(6);
    // Bounded by the request, then by what is in flight (4).
    assert_eq!(delivered(&apply_to(&mut m, 2, &receive("cg", 0, 100, 3))), [(0, 1, 1), (1, 1, 1), (2, 1, 1)]);
    assert_eq!(delivered(&apply_to(&mut m, 3, &receive("cg", 0, 100, 3))), [(3, 1, 1)]);
    assert_eq!(delivered(&apply_to(&mut m, 4, &receive("cg", 0, 500, 3))), [], "all four still invisible, the bound reached");
    // Each consumer group has its own cursor.
    assert_eq!(delivered(&apply_to(&mut m, 5, &receive("other", 0, 100, 10))).len(), 4);
    // At 1100 the first delivery's invisibility ended: redelivered, attempt 2, a new version.
    let ack = GroupCommand::Ack { consumer_group: "cg".into(), queue: 0, deliveries: vec![(1, 1), (2, 1)] };
    assert_eq!(apply_to(&mut m, 6, &ack), GroupReply::Acked { settled: vec![true, true] });
    assert_eq!(delivered(&apply_to(&mut m, 7, &receive("cg", 0, 1_100, 10))), [(0, 2, 2), (3, 2, 2), (4, 1, 1), (5, 1, 1)]);
    assert_eq!(m.pop_cursors.get(&("cg".to_string(), 0)), Some(&6));
}

#[test]
fn a_stale_receipt_changes_nothing() {
    let mut m = group_with(2);
    assert_eq!(delivered(&apply_to(&mut m, 2, &receive("cg", 0, 100, 1))), [(0, 1, 1)]);
    assert_eq!(delivered(&apply_to(&mut m, 3, &receive("cg", 0, 1_100, 1))), [(0, 2, 2)], "redelivered: version 2");
    // The first delivery's handle is stale: its ack and its invisibility change do nothing.
    let stale_ack = GroupCommand::Ack { consumer_group: "cg".into(), queue: 0, deliveries: vec![(0, 1), (9, 1)] };
    assert_eq!(apply_to(&mut m, 4, &stale_ack), GroupReply::Acked { settled: vec![false, false] });
    let change = |version| GroupCommand::ChangeInvisibility {
        consumer_group: "cg".into(),
        queue: 0,
        offset: 0,
        version,
        now_ms: 1_200,
        invisible_ms: 60_000,
    };
    assert_eq!(apply_to(&mut m, 5, &change(1)), GroupReply::InvisibilityChanged { version: None });
    // The current handle renews it (a new version), so the message stays invisible.
    assert_eq!(apply_to(&mut m, 6, &change(2)), GroupReply::InvisibilityChanged { version: Some(3) });
    assert_eq!(delivered(&apply_to(&mut m, 7, &receive("cg", 0, 30_000, 1))), [(1, 1, 1)], "offset 0 is invisible until 61,200");
    let ack = GroupCommand::Ack { consumer_group: "cg".into(), queue: 0, deliveries: vec![(0, 3), (0, 3)] };
    assert_eq!(apply_to(&mut m, 8, &ack), GroupReply::Acked { settled: vec![true, false] }, "settled once");
    assert!(!m.in_flight.contains_key(&("cg".to_string(), 0, 0)));
}

#[test]
fn a_receive_refuses_a_name_keys_cannot_hold() {
    let mut m = group_with(1);
    let long = "x".repeat(CONSUMER_GROUP_BYTES_MAX + 1);
    assert!(matches!(apply_to(&mut m, 2, &receive(&long, 0, 1, 1)), GroupReply::Rejected { .. }));
    assert!(matches!(apply_to(&mut m, 3, &receive("", 0, 1, 1)), GroupReply::Rejected { .. }));
    assert!(m.in_flight.is_empty() && m.pop_cursors.is_empty());
}

/// A checkpoint holds the receive state as of its entry (the entry's own effects included), so
/// a replica that installs it resumes where the others are.
#[test]
fn checkpoints_hold_the_receive_state() {
    let mut m = group_with(3);
    assert_eq!(delivered(&apply_to(&mut m, 2, &receive("cg", 0, 100, 2))).len(), 2);
    let ack = GroupCommand::Ack { consumer_group: "cg".into(), queue: 0, deliveries: vec![(0, 1)] };
    apply_to(&mut m, 3, &ack);
    // The checkpoint entry itself receives nothing; one recorded at a receive would include it.
    assert_eq!(apply_to(&mut m, 4, &GroupCommand::Checkpoint), GroupReply::Checkpointed { log_index: 4 });
    let checkpoint = m.checkpoints.get(&4).expect("recorded").clone();
    assert_eq!(checkpoint.pop_cursors, vec![("cg".to_string(), 0, 2)]);
    let held: Vec<(u64, u32)> = checkpoint.in_flight.iter().map(|(_, _, o, r)| (*o, r.version)).collect();
    assert_eq!(held, [(1, 1)]);
    let options = QueueGroupOptions { checkpoint_interval_entries: 5 };
    m.apply(options, 5, Some(&receive("cg", 0, 100, 1)));
    let at_receive = m.checkpoints.get(&5).expect("recorded at the interval");
    assert_eq!((at_receive.pop_cursors.clone(), at_receive.in_flight.len()), (vec![("cg".to_string(), 0, 3)], 2));
}

#[test]
fn a_receive_beyond_what_a_checkpoint_holds_is_refused() {
    let mut m = group_with(2);
    for offset in 0..CHECKPOINT_RECEIVE_ITEMS_MAX as u64 {
        m.in_flight.insert((format!("g{}", offset % 1000), 1, offset), InFlight { invisible_until_ms: u64::MAX, attempt: 1, version: 1 });
    }
    assert!(matches!(apply_to(&mut m, 2, &receive("cg", 0, 100, 1)), GroupReply::LimitReached { .. }));
    m.in_flight.pop_first();
    m.in_flight.pop_first();
    // Room for the new cursor and one message: one delivered, not two.
    assert_eq!(delivered(&apply_to(&mut m, 3, &receive("cg", 0, 100, 2))), [(0, 1, 1)]);
}

/// A leader judges a receive before proposing it: deliverable exactly when the receive would
/// deliver, else when the next message in flight becomes visible, or the refusal's reason.
#[test]
fn a_receive_outlook_agrees_with_the_receive() {
    let mut m = group_with(2);
    assert_eq!(receive_outlook(&m, "cg", 0, 100, (4, 3, false)).unwrap(), ReceiveOutlook::Deliverable);
    assert_eq!(delivered(&apply_to(&mut m, 2, &receive("cg", 0, 100, 1))), [(0, 1, 1)]);
    assert_eq!(receive_outlook(&m, "cg", 0, 200, (4, 3, false)).unwrap(), ReceiveOutlook::Deliverable, "offset 1 is new");
    assert_eq!(delivered(&apply_to(&mut m, 3, &receive("cg", 0, 300, 1))), [(1, 1, 1)]);
    // Both in flight: visible again at 1,100 (offset 0) and 1,300.
    assert_eq!(receive_outlook(&m, "cg", 0, 500, (4, 3, false)).unwrap(), ReceiveOutlook::NothingUntil(Some(1_100)));
    assert_eq!(receive_outlook(&m, "cg", 0, 1_100, (4, 3, false)).unwrap(), ReceiveOutlook::Deliverable);
    // Bounded in flight per queue: none new beyond it, whatever is stored.
    assert_eq!(receive_outlook(&m, "cg", 0, 500, (2, 3, false)).unwrap(), ReceiveOutlook::NothingUntil(Some(1_100)));
    let ack = GroupCommand::Ack { consumer_group: "cg".into(), queue: 0, deliveries: vec![(0, 1), (1, 1)] };
    assert_eq!(apply_to(&mut m, 4, &ack), GroupReply::Acked { settled: vec![true, true] });
    assert_eq!(receive_outlook(&m, "cg", 0, 500, (4, 3, false)).unwrap(), ReceiveOutlook::NothingUntil(None), "all acknowledged");
    assert!(matches!(receive_outlook(&m, "", 0, 500, (4, 3, false)).unwrap(), ReceiveOutlook::Refused(_)));
}

/// A message delivered its maximum attempts is not delivered again: it waits in flight, listed
/// as exhausted, until the leader dead-letters it (an ack settles it).
#[test]
fn a_message_is_delivered_at_most_its_maximum_attempts() {
    let mut m = group_with(1);
    for (log_index, now) in [(2, 100), (3, 1_100), (4, 2_100)] {
        assert_eq!(delivered(&apply_to(&mut m, log_index, &receive("cg", 0, now, 1))).len(), 1);
    }
    assert_eq!(m.in_flight.get(&("cg".to_string(), 0, 0)).map(|r| r.attempt), Some(3));
    assert_eq!(delivered(&apply_to(&mut m, 5, &receive("cg", 0, 3_100, 1))), [], "three attempts: no fourth");
    let exhausted = Delivery { offset: 0, attempt: 3, version: 3, invisible_until_ms: 3_100 };
    assert_eq!(receive_outlook(&m, "cg", 0, 3_100, (4, 3, false)).unwrap(), ReceiveOutlook::Exhausted(vec![exhausted]));
    assert_eq!(receive_outlook(&m, "cg", 0, 3_000, (4, 3, false)).unwrap(), ReceiveOutlook::NothingUntil(Some(3_100)), "not visible yet");
    assert_eq!(receive_outlook(&m, "cg", 0, 3_100, (4, 0, false)).unwrap(), ReceiveOutlook::Deliverable, "0: no bound");
    let ack = GroupCommand::Ack { consumer_group: "cg".into(), queue: 0, deliveries: vec![(0, 3)] };
    assert_eq!(apply_to(&mut m, 6, &ack), GroupReply::Acked { settled: vec![true] });
    assert_eq!(receive_outlook(&m, "cg", 0, 3_100, (4, 3, false)).unwrap(), ReceiveOutlook::NothingUntil(None));
}

/// FIFO: nothing new is delivered while a message of the queue is in flight, and a redelivery
/// waits behind every earlier message in flight; an ack (or a dead letter) unblocks the queue.
#[test]
fn a_fifo_receive_keeps_the_queue_in_order() {
    let fifo = |now_ms: u64, max_messages: u32| match receive("cg", 0, now_ms, max_messages) {
        GroupCommand::Receive { consumer_group, queue, now_ms, invisible_ms, max_messages, in_flight_max, max_attempts, .. } => {
            GroupCommand::Receive { consumer_group, queue, now_ms, invisible_ms, max_messages, in_flight_max, max_attempts, fifo: true }
        }
        _ => unreachable!(),
    };
    let mut m = group_with(4);
    assert_eq!(delivered(&apply_to(&mut m, 2, &fifo(100, 2))), [(0, 1, 1), (1, 1, 1)]);
    assert_eq!(delivered(&apply_to(&mut m, 3, &fifo(200, 2))), [], "2 and 3 wait behind 0 and 1");
    assert_eq!(receive_outlook(&m, "cg", 0, 200, (4, 3, true)).unwrap(), ReceiveOutlook::NothingUntil(Some(1_100)));
    // Offset 0 is acknowledged; 1 made invisible longer: nothing passes it, not even at 1,100.
    let ack = GroupCommand::Ack { consumer_group: "cg".into(), queue: 0, deliveries: vec![(0, 1)] };
    assert_eq!(apply_to(&mut m, 4, &ack), GroupReply::Acked { settled: vec![true] });
    let longer =
        GroupCommand::ChangeInvisibility { consumer_group: "cg".into(), queue: 0, offset: 1, version: 1, now_ms: 300, invisible_ms: 5_000 };
    assert_eq!(apply_to(&mut m, 5, &longer), GroupReply::InvisibilityChanged { version: Some(2) });
    assert_eq!(delivered(&apply_to(&mut m, 6, &fifo(1_100, 2))), []);
    // Once visible, offset 1 comes again (retried in place), still ahead of 2 and 3.
    assert_eq!(delivered(&apply_to(&mut m, 7, &fifo(5_300, 2))), [(1, 2, 3)]);
    let ack = GroupCommand::Ack { consumer_group: "cg".into(), queue: 0, deliveries: vec![(1, 3)] };
    assert_eq!(apply_to(&mut m, 8, &ack), GroupReply::Acked { settled: vec![true] });
    assert_eq!(delivered(&apply_to(&mut m, 9, &fifo(5_400, 4))), [(2, 1, 1), (3, 1, 1)]);
    // A normal receive of another group is not held back by this group.
    assert_eq!(delivered(&apply_to(&mut m, 10, &receive("other", 0, 100, 4))).len(), 4);
}

/// A receive keeps the consumer group's floor at the lowest offset still in flight (or its
/// cursor), so the next one reads in-flight records from there, past what acks deleted; and the
/// group's count of receive items follows every receive and ack (the model asserts both on
/// each write, and each checkpoint checks the count against what the group holds).
#[test]
fn receives_keep_the_floor_and_the_count_of_receive_items() {
    let mut m = group_with(8);
    let floor = |m: &Model| m.receive_floors.get(&("cg".to_string(), 0)).copied();
    assert_eq!(delivered(&apply_to(&mut m, 2, &receive("cg", 0, 100, 4))).len(), 4);
    assert_eq!((floor(&m), m.receive_items), (None, Some(5)), "floor 0 is not stored; a cursor and four records");
    let ack = |deliveries: Vec<(u64, u32)>| GroupCommand::Ack { consumer_group: "cg".into(), queue: 0, deliveries };
    assert_eq!(apply_to(&mut m, 3, &ack(vec![(0, 1), (1, 1), (1, 1)])), GroupReply::Acked { settled: vec![true, true, false] });
    assert_eq!((floor(&m), m.receive_items), (None, Some(3)), "an ack settles, the floor waits for a receive");
    assert_eq!(delivered(&apply_to(&mut m, 4, &receive("cg", 0, 100, 4))), [(4, 1, 1), (5, 1, 1)]);
    assert_eq!((floor(&m), m.receive_items), (Some(2), Some(5)));
    assert_eq!(apply_to(&mut m, 5, &ack(vec![(2, 1), (3, 1), (4, 1), (5, 1)])), GroupReply::Acked { settled: vec![true; 4] });
    assert_eq!(delivered(&apply_to(&mut m, 6, &receive("cg", 0, 100, 4))), [(6, 1, 1), (7, 1, 1)]);
    assert_eq!((floor(&m), m.receive_items), (Some(6), Some(3)));
    apply_to(&mut m, 7, &ack(vec![(6, 1), (7, 1)]));
    assert!(delivered(&apply_to(&mut m, 8, &receive("cg", 0, 100, 4))).is_empty());
    assert_eq!((floor(&m), m.receive_items), (Some(8), Some(1)), "nothing in flight: the floor is the cursor");
    // A floor below which a record still lies would hide it: the model refuses such a state.
    assert_eq!(m.checkpoints.len(), 0);
    assert_eq!(apply_to(&mut m, 9, &GroupCommand::Checkpoint), GroupReply::Checkpointed { log_index: 9 });
}

/// What a checkpoint holds carries no floor, count or tally: a group installed from it counts
/// its receive items, reads its in-flight records from offset 0, and decides as the group it
/// came from, whatever the two then do (receives with and without something due, acks,
/// invisibility changes, trims under in-flight records, FIFO and normal receives).
#[test]
fn a_group_without_floors_counts_or_tallies_decides_as_one_with_them() {
    let options = QueueGroupOptions { checkpoint_interval_entries: 8 };
    let mut kept = group_with(40);
    let mut installed: Option<Model> = None;
    // A fixed pseudo-random walk (xorshift), so a failure replays.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut now = 100u64;
    for log_index in 2..400u64 {
        now += next(400);
        let cg = ["cg", "other"][next(2) as usize];
        let held: Vec<(u64, u32)> =
            kept.in_flight.iter().filter(|((c, q, _), _)| c == cg && *q == 0).map(|((_, _, o), r)| (*o, r.version)).collect();
        let command = match next(8) {
            0..=2 => {
                let fifo = next(4) == 0;
                let (max_messages, in_flight_max) = (1 + next(6) as u32, 2 + next(8) as u32);
                GroupCommand::Receive {
                    consumer_group: cg.into(),
                    queue: 0,
                    now_ms: now,
                    invisible_ms: 1_000,
                    max_messages,
                    in_flight_max,
                    max_attempts: 4,
                    fifo,
                }
            }
            3 | 4 if !held.is_empty() => {
                let picked = (0..1 + next(3)).map(|_| held[next(held.len() as u64) as usize]).collect();
                GroupCommand::Ack { consumer_group: cg.into(), queue: 0, deliveries: picked }
            }
            5 if !held.is_empty() => {
                let (offset, version) = held[next(held.len() as u64) as usize];
                GroupCommand::ChangeInvisibility {
                    consumer_group: cg.into(),
                    queue: 0,
                    offset,
                    version,
                    now_ms: now,
                    invisible_ms: next(3_000),
                }
            }
            6 => send_cmd(now, vec![msg(0, None, b"more")]),
            _ => match kept.checkpoints.keys().copied().rfind(|&k| kept.trim_point.is_none_or(|t| k > t)) {
                Some(k) => trim_to(k),
                None => GroupCommand::Checkpoint,
            },
        };
        if log_index % 50 == 0 {
            // A replica installs the kept group's state as a checkpoint carries it.
            let mut copy = kept.clone();
            copy.receive_floors.clear();
            copy.receive_items = None;
            copy.in_flight_tallies.clear();
            installed = Some(copy);
        }
        let reply = kept.apply(options, log_index, Some(&command));
        if let Some(copy) = installed.as_mut() {
            assert_eq!(copy.apply(options, log_index, Some(&command)), reply, "entry {log_index}: {command:?}");
            assert_eq!((&copy.in_flight, &copy.pop_cursors, &copy.start), (&kept.in_flight, &kept.pop_cursors, &kept.start));
        }
    }
    assert!(kept.in_flight_tallies.len() == 2 && installed.is_some_and(|c| c.in_flight_tallies.len() == 2));
}

/// The in-flight tally lets a receive with nothing visible again skip the records in flight:
/// it reads at most the lowest one, however many there are; once one may be visible again it
/// reads them all, and an ack or a shorter invisibility keeps the tally's promise.
#[test]
fn a_receive_with_nothing_due_reads_no_in_flight_record_past_the_lowest() {
    let receive = |now_ms: u64, max_messages: u32, in_flight_max: u32| GroupCommand::Receive {
        consumer_group: "cg".into(),
        queue: 0,
        now_ms,
        invisible_ms: 10_000,
        max_messages,
        in_flight_max,
        max_attempts: 3,
        fifo: false,
    };
    let mut m = group_with(64);
    for (log_index, now) in [(2, 100), (3, 200), (4, 300)] {
        let r = receive(now, 16, 64);
        assert_eq!(delivered(&apply_to(&mut m, log_index, &r)).len(), 16);
    }
    let tally = m.in_flight_tallies.get(&("cg".to_string(), 0)).copied();
    assert_eq!(tally, Some(InFlightTally { count: 48, due_from_ms: 10_100 }));
    let reads = |m: &Model, now: u64| {
        let counting = Counting { group: m, records: std::cell::Cell::new(0) };
        let r = receive(now, 16, 64);
        let (_, reply) = apply_command(&counting, 9, &r).unwrap();
        (delivered(&reply).len(), counting.records.get())
    };
    assert_eq!(reads(&m, 5_000), (16, 1), "new messages; of the 48 in flight only the lowest is read");
    assert_eq!(reads(&m, 10_100), (16, 48), "the first may be visible again: all are read");
    // An ack of the earliest leaves the time (a lower bound); the count follows.
    let ack = GroupCommand::Ack { consumer_group: "cg".into(), queue: 0, deliveries: vec![(0, 1)] };
    apply_to(&mut m, 5, &ack);
    assert_eq!(m.in_flight_tallies.get(&("cg".to_string(), 0)).copied(), Some(InFlightTally { count: 47, due_from_ms: 10_100 }));
    // Made visible sooner: the tally moves back, and a receive then finds it.
    let sooner =
        GroupCommand::ChangeInvisibility { consumer_group: "cg".into(), queue: 0, offset: 40, version: 1, now_ms: 400, invisible_ms: 100 };
    assert_eq!(apply_to(&mut m, 6, &sooner), GroupReply::InvisibilityChanged { version: Some(2) });
    assert_eq!(m.in_flight_tallies.get(&("cg".to_string(), 0)).map(|t| t.due_from_ms), Some(500));
    assert_eq!(
        receive_outlook(&m, "cg", 0, 499, (47, 3, false)).unwrap(),
        ReceiveOutlook::NothingUntil(Some(500)),
        "47 in flight, the bound"
    );
    let r = receive(500, 1, 48);
    assert_eq!(delivered(&apply_to(&mut m, 7, &r)), [(40, 2, 3)]);
    // Read in full, the tally is exact again: the earliest kept is offset 1's.
    assert_eq!(m.in_flight_tallies.get(&("cg".to_string(), 0)).copied(), Some(InFlightTally { count: 47, due_from_ms: 10_100 }));
    let all: Vec<(u64, u32)> = m.in_flight.iter().map(|((_, _, o), r)| (*o, r.version)).collect();
    apply_to(&mut m, 8, &GroupCommand::Ack { consumer_group: "cg".into(), queue: 0, deliveries: all });
    assert_eq!(m.in_flight_tallies.get(&("cg".to_string(), 0)).copied(), Some(InFlightTally::EMPTY), "nothing in flight");
}

/// A view that counts the in-flight records read through it.
struct Counting<'a> {
    group: &'a Model,
    records: std::cell::Cell<usize>,
}

impl GroupView for Counting<'_> {
    fn next_offset(&self, queue: u32) -> Result<u64, StoreError> {
        self.group.next_offset(queue)
    }
    fn consumer_offset(&self, consumer_group: &str, queue: u32) -> Result<Option<u64>, StoreError> {
        self.group.consumer_offset(consumer_group, queue)
    }
    fn start_offset(&self, queue: u32) -> Result<u64, StoreError> {
        self.group.start_offset(queue)
    }
    fn trim_point(&self) -> Result<Option<u64>, StoreError> {
        self.group.trim_point()
    }
    fn checkpoint(&self, log_index: u64) -> Result<Option<Checkpoint>, StoreError> {
        self.group.checkpoint(log_index)
    }
    fn checkpoint_indexes(&self) -> Result<Vec<u64>, StoreError> {
        self.group.checkpoint_indexes()
    }
    fn group_offsets(&self, items_max: usize) -> Result<Option<GroupOffsets>, StoreError> {
        self.group.group_offsets(items_max)
    }
    fn offset_counts(&self, queue: u32, items_max: usize) -> Result<OffsetCounts, StoreError> {
        self.group.offset_counts(queue, items_max)
    }
    fn pop_cursor(&self, consumer_group: &str, queue: u32) -> Result<Option<u64>, StoreError> {
        self.group.pop_cursor(consumer_group, queue)
    }
    fn in_flight(
        &self,
        consumer_group: &str,
        queue: u32,
        offsets: std::ops::Range<u64>,
        max: usize,
    ) -> Result<Vec<(u64, InFlight)>, StoreError> {
        let records = self.group.in_flight(consumer_group, queue, offsets, max)?;
        self.records.set(self.records.get() + records.len());
        Ok(records)
    }
    fn in_flight_tally(&self, consumer_group: &str, queue: u32) -> Result<Option<InFlightTally>, StoreError> {
        self.group.in_flight_tally(consumer_group, queue)
    }
    fn receive_floor(&self, consumer_group: &str, queue: u32) -> Result<u64, StoreError> {
        self.group.receive_floor(consumer_group, queue)
    }
    fn receive_items(&self, items_max: usize) -> Result<usize, StoreError> {
        self.group.receive_items(items_max)
    }
    fn in_flight_record(&self, consumer_group: &str, queue: u32, offset: u64) -> Result<Option<InFlight>, StoreError> {
        self.group.in_flight_record(consumer_group, queue, offset)
    }
    fn receive_state(&self, items_max: usize) -> Result<Option<ReceiveState>, StoreError> {
        self.group.receive_state(items_max)
    }
}

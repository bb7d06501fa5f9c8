//! Tests of the store against a real RocksDB in temporary directories.

use std::collections::BTreeMap;
use std::path::Path;

use tempfile::TempDir;

use super::*;

pub(super) fn open(dir: &Path) -> (QueueStore, OpenReport) {
    QueueStore::open(dir, &StoreOptions::default()).unwrap()
}

pub(super) fn entry(log_index: u64, n: u64) -> IndexEntry {
    IndexEntry {
        log_index,
        position: (n * 100) as u32,
        size: 50 + n as u32,
        tag_hash: n.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        store_time_ms: 1_764_000_000_000 + n,
    }
}

/// The effects of Raft entry `log_index` sending `count` messages to `queue` from offset
/// `from`, and of `consumer_group` committing `commit` on it.
pub(super) fn send(log_index: u64, queue: u32, from: u64, count: u64, consumer_group: &str, commit: u64) -> ApplyBatch {
    let mut b = ApplyBatch::new(log_index);
    for offset in from..from + count {
        b.put_index(queue, offset, entry(log_index, offset)).unwrap();
    }
    b.set_next_offset(queue, from + count).unwrap();
    b.set_consumer_offset(consumer_group, queue, commit).unwrap();
    b
}

/// What a kill -9 at this moment would leave: a copy of the files of the open store.
///
/// Closing the store instead would not model a crash: RocksDB flushes the memtables on close
/// when the WAL is off, and `avoid_flush_during_shutdown` cannot be set through the C API of
/// RocksDB 7.8 (`rocksdb_set_options` only reaches column family options). The copy holds
/// exactly what the files hold: if writes went to a WAL, the copy would hold that WAL and
/// reopening it would replay them, so lost writes prove the WAL is off.
pub(super) fn crash_image(store_dir: &Path) -> TempDir {
    let image = TempDir::new().unwrap();
    for e in std::fs::read_dir(store_dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), image.path().join(e.file_name())).unwrap();
        }
    }
    image
}

/// Every key of the store, grouped by group id.
fn keys_per_group(store: &QueueStore) -> BTreeMap<GroupId, usize> {
    let mut counts = BTreeMap::new();
    let mut it = store.db.raw_iterator();
    it.seek_to_first();
    while let Some(k) = it.key() {
        *counts.entry(keys::group_of(k).unwrap()).or_default() += 1;
        it.next();
    }
    it.status().unwrap();
    counts
}

#[test]
fn apply_then_every_read_round_trips() {
    let dir = TempDir::new().unwrap();
    let (store, report) = open(dir.path());
    assert_eq!(report.groups, 0);

    let mut b = send(5, 1, 0, 10, "cg-a", 4);
    b.put_index(2, 0, entry(5, 1000)).unwrap();
    b.set_next_offset(2, 1).unwrap();
    store.apply(7, &b).unwrap();

    let q1 = store.index_range(7, 1, 0, 100).unwrap();
    assert_eq!(q1, (0..10).map(|o| (o, entry(5, o))).collect::<Vec<_>>());
    assert_eq!(store.index_range(7, 1, 8, 100).unwrap(), vec![(8, entry(5, 8)), (9, entry(5, 9))]);
    assert_eq!(store.index_range(7, 1, 3, 2).unwrap(), vec![(3, entry(5, 3)), (4, entry(5, 4))]);
    assert_eq!(store.index_range(7, 1, 10, 100).unwrap(), vec![]);
    assert_eq!(store.index_range(7, 1, 0, 0).unwrap(), vec![]);
    assert_eq!(store.index_range(7, 2, 0, 100).unwrap(), vec![(0, entry(5, 1000))]);
    assert_eq!(store.index_range(7, 3, 0, 100).unwrap(), vec![]);
    assert_eq!(store.index_range(8, 1, 0, 100).unwrap(), vec![]);
    assert_eq!(store.next_offset(7, 1).unwrap(), 10);
    assert_eq!(store.next_offset(7, 2).unwrap(), 1);
    assert_eq!(store.next_offset(7, 3).unwrap(), 0);
    assert_eq!(store.consumer_offset(7, "cg-a", 1).unwrap(), Some(4));
    assert_eq!(store.consumer_offset(7, "cg-a", 2).unwrap(), None);
    assert_eq!(store.consumer_offset(7, "cg-b", 1).unwrap(), None);
    assert!(matches!(store.consumer_offset(7, "", 1), Err(StoreError::InvalidName { .. })));
    assert_eq!(store.applied_index(7), Some(5));
    assert_eq!(store.durable_applied_index(7), None);
    assert_eq!(store.applied_index(8), None);
    assert_eq!(store.groups(), vec![7]);

    store.apply(7, &send(6, 1, 10, 2, "cg-a", 10)).unwrap();
    assert_eq!(store.index_range(7, 1, 9, 100).unwrap(), vec![(9, entry(5, 9)), (10, entry(6, 10)), (11, entry(6, 11))]);
    assert_eq!(store.next_offset(7, 1).unwrap(), 12);
    assert_eq!(store.consumer_offset(7, "cg-a", 1).unwrap(), Some(10));
    assert_eq!(store.applied_index(7), Some(6));

    // An entry that changes nothing else still moves the applied index.
    store.apply(7, &ApplyBatch::new(9)).unwrap();
    assert_eq!(store.applied_index(7), Some(9));
}

#[test]
fn index_range_returns_at_most_the_limit() {
    let dir = TempDir::new().unwrap();
    let (store, _) = open(dir.path());
    let n = INDEX_RANGE_MAX as u64 + 10;
    store.apply(1, &send(1, 0, 0, n, "cg", 0)).unwrap();
    let got = store.index_range(1, 0, 0, usize::MAX).unwrap();
    assert_eq!(got.len(), INDEX_RANGE_MAX);
    assert_eq!(got.last().unwrap().0, INDEX_RANGE_MAX as u64 - 1);
    assert_eq!(store.index_range(1, 0, INDEX_RANGE_MAX as u64, usize::MAX).unwrap().len(), 10);
}

#[test]
fn an_apply_at_or_below_the_applied_index_is_refused_and_writes_nothing() {
    let dir = TempDir::new().unwrap();
    let (store, _) = open(dir.path());
    store.apply(3, &send(10, 0, 0, 1, "cg", 0)).unwrap();
    for index in [10, 9] {
        let err = store.apply(3, &send(index, 0, 1, 1, "cg", 1)).unwrap_err();
        assert!(matches!(err, StoreError::NotAfterApplied { group: 3, applied: 10, index: i } if i == index), "{err}");
    }
    assert_eq!(store.index_range(3, 0, 0, 10).unwrap().len(), 1);
    assert_eq!(store.next_offset(3, 0).unwrap(), 1);
    assert_eq!(store.consumer_offset(3, "cg", 0).unwrap(), Some(0));
    assert_eq!(store.applied_index(3), Some(10));
}

#[test]
fn unflushed_applies_are_lost_in_a_crash_and_flushed_ones_survive() {
    let dir = TempDir::new().unwrap();
    let (store, _) = open(dir.path());
    for i in 1..=3 {
        store.apply(1, &send(i, 0, (i - 1) * 5, 5, "cg", i)).unwrap();
    }
    store.flush().unwrap();
    assert_eq!(store.durable_applied_index(1), Some(3));
    store.apply(1, &send(4, 0, 15, 5, "cg", 4)).unwrap();
    store.apply(2, &send(1, 0, 0, 5, "cg", 1)).unwrap();
    assert_eq!((store.applied_index(1), store.durable_applied_index(1)), (Some(4), Some(3)));
    assert_eq!((store.applied_index(2), store.durable_applied_index(2)), (Some(1), None));

    {
        let image = crash_image(dir.path());
        let (crashed, report) = open(image.path());
        assert_eq!(report.groups, 1);
        assert_eq!(crashed.groups(), vec![1]);
        assert_eq!((crashed.applied_index(1), crashed.durable_applied_index(1)), (Some(3), Some(3)));
        assert_eq!(crashed.index_range(1, 0, 0, 100).unwrap().len(), 15);
        assert_eq!(crashed.next_offset(1, 0).unwrap(), 15);
        assert_eq!(crashed.consumer_offset(1, "cg", 0).unwrap(), Some(3));
        assert_eq!(crashed.applied_index(2), None);
        assert_eq!(crashed.index_range(2, 0, 0, 100).unwrap(), vec![]);
    }

    store.flush().unwrap();
    assert_eq!(store.durable_applied_index(1), Some(4));
    assert_eq!(store.durable_applied_index(2), Some(1));
    let image = crash_image(dir.path());
    let (crashed, _) = open(image.path());
    assert_eq!(crashed.groups(), vec![1, 2]);
    assert_eq!((crashed.applied_index(1), crashed.durable_applied_index(1)), (Some(4), Some(4)));
    assert_eq!(crashed.index_range(1, 0, 0, 100).unwrap().len(), 20);
    assert_eq!(crashed.consumer_offset(1, "cg", 0).unwrap(), Some(4));
    assert_eq!(crashed.durable_applied_index(2), Some(1));
    assert_eq!(crashed.index_range(2, 0, 0, 100).unwrap().len(), 5);
}

#[test]
fn the_raft_state_moves_with_its_batch_through_crashes_and_exports() {
    let dir = TempDir::new().unwrap();
    let (store, _) = open(dir.path());
    let with_state = |log_index: u64, state: &[u8]| {
        let mut b = send(log_index, 0, log_index - 1, 1, "cg", 0);
        b.set_raft_state(state.to_vec()).unwrap();
        b
    };
    assert_eq!(store.raft_state(1).unwrap(), None);
    store.apply(1, &with_state(1, b"state at 1")).unwrap();
    assert_eq!(store.raft_state(1).unwrap().as_deref(), Some(&b"state at 1"[..]));
    // A batch without a raft state leaves the last one in place.
    store.apply(1, &send(2, 0, 1, 1, "cg", 0)).unwrap();
    assert_eq!(store.raft_state(1).unwrap().as_deref(), Some(&b"state at 1"[..]));
    store.apply(1, &with_state(3, &[9; RAFT_STATE_BYTES_MAX])).unwrap();
    store.flush().unwrap();
    store.apply(1, &with_state(4, b"state at 4")).unwrap();

    // A crash keeps the state of the flushed batch, with the data of that batch.
    let (crashed, _) = open(crash_image(dir.path()).path());
    assert_eq!(crashed.raft_state(1).unwrap(), Some(vec![9; RAFT_STATE_BYTES_MAX]));
    assert_eq!((crashed.applied_index(1), crashed.next_offset(1, 0).unwrap()), (Some(3), 3));

    // An export carries it, both in its pages and as read from the export's own view.
    let export = store.export_group(1, 1 << 20).unwrap();
    store.apply(1, &with_state(5, b"state at 5")).unwrap();
    assert_eq!(export.raft_state().unwrap().as_deref(), Some(&b"state at 4"[..]));
    let pages: Vec<ExportPage> = export.map(|p| p.unwrap()).collect();
    store.import_group(2, pages).unwrap();
    assert_eq!(store.raft_state(2).unwrap().as_deref(), Some(&b"state at 4"[..]));
    assert_eq!(store.applied_index(2), Some(4));
}

#[test]
fn a_deleted_group_stays_durable_until_the_next_flush() {
    let dir = TempDir::new().unwrap();
    let (store, _) = open(dir.path());
    store.apply(1, &send(1, 0, 0, 5, "cg", 1)).unwrap();
    store.flush().unwrap();
    store.delete_group(1).unwrap();
    assert_eq!((store.applied_index(1), store.durable_applied_index(1)), (None, Some(1)));
    let (crashed, _) = open(crash_image(dir.path()).path());
    assert_eq!(crashed.applied_index(1), Some(1));
    store.flush().unwrap();
    assert_eq!(store.durable_applied_index(1), None);
    let (crashed, _) = open(crash_image(dir.path()).path());
    assert_eq!(crashed.applied_index(1), None);
}

#[test]
fn dropping_the_store_flushes() {
    let dir = TempDir::new().unwrap();
    {
        let (store, _) = open(dir.path());
        store.apply(1, &send(1, 0, 0, 5, "cg", 1)).unwrap();
    }
    let (store, _) = open(dir.path());
    assert_eq!(store.durable_applied_index(1), Some(1));
    assert_eq!(store.index_range(1, 0, 0, 100).unwrap().len(), 5);
}

#[test]
fn a_thousand_interleaved_groups_stay_separate_and_delete_group_removes_exactly_one() {
    const GROUPS: u64 = 1000;
    const ROUNDS: u64 = 3;
    // Spread ids over the whole u64 space, including both ends.
    let ids: Vec<GroupId> = (0..GROUPS).map(|g| if g == GROUPS - 1 { u64::MAX } else { g.wrapping_mul(0x9E37_79B9_7F4A_7C15) }).collect();
    assert_eq!(ids.iter().collect::<std::collections::HashSet<_>>().len(), ids.len());
    let dir = TempDir::new().unwrap();
    let (store, _) = open(dir.path());
    for round in 1..=ROUNDS {
        for (n, &g) in ids.iter().enumerate() {
            let queue = (n % 4) as u32;
            let mut b = ApplyBatch::new(round);
            for offset in (round - 1) * 2..round * 2 {
                b.put_index(queue, offset, entry(g ^ round, offset)).unwrap();
            }
            b.set_next_offset(queue, round * 2).unwrap();
            b.set_consumer_offset(&format!("cg-{n}"), queue, round).unwrap();
            store.apply(g, &b).unwrap();
        }
    }
    let check = |store: &QueueStore, n: usize, g: GroupId| {
        let queue = (n % 4) as u32;
        let want: Vec<_> = (1..=ROUNDS).flat_map(|r| ((r - 1) * 2..r * 2).map(move |o| (o, entry(g ^ r, o)))).collect();
        assert_eq!(store.index_range(g, queue, 0, 100).unwrap(), want, "group {g}");
        assert_eq!(store.index_range(g, (queue + 1) % 4, 0, 100).unwrap(), vec![], "group {g}");
        assert_eq!(store.next_offset(g, queue).unwrap(), ROUNDS * 2);
        assert_eq!(store.consumer_offset(g, &format!("cg-{n}"), queue).unwrap(), Some(ROUNDS));
        assert_eq!(store.consumer_offset(g, &format!("cg-{}", n + 1), queue).unwrap(), None);
        assert_eq!(store.applied_index(g), Some(ROUNDS));
    };
    for (n, &g) in ids.iter().enumerate() {
        check(&store, n, g);
    }
    // Per group: the applied index, one next offset, one consumer offset, 6 index entries.
    let per_group = 1 + 1 + 1 + ROUNDS as usize * 2;
    let before = keys_per_group(&store);
    assert_eq!(before.len(), GROUPS as usize);
    assert!(before.values().all(|&c| c == per_group));

    let victim = 500;
    store.delete_group(ids[victim]).unwrap();
    let after = keys_per_group(&store);
    let mut expected = before.clone();
    expected.remove(&ids[victim]);
    assert_eq!(after, expected);
    assert_eq!(store.applied_index(ids[victim]), None);
    assert_eq!(store.index_range(ids[victim], (victim % 4) as u32, 0, 100).unwrap(), vec![]);
    // Deleting the last group (id u64::MAX) leaves the others too.
    store.delete_group(u64::MAX).unwrap();
    assert_eq!(keys_per_group(&store).len(), GROUPS as usize - 2);

    store.flush().unwrap();
    drop(store);
    let (store, report) = open(dir.path());
    assert_eq!(report.groups, GROUPS as usize - 2);
    for (n, &g) in ids.iter().enumerate() {
        if n == victim || g == u64::MAX {
            assert_eq!(store.applied_index(g), None);
        } else {
            check(&store, n, g);
            assert_eq!(store.durable_applied_index(g), Some(ROUNDS));
        }
    }
}

#[test]
fn a_damaged_value_is_an_error_naming_the_key() {
    let dir = TempDir::new().unwrap();
    let (store, _) = open(dir.path());
    store.apply(7, &send(1, 1, 0, 5, "cg-a", 2)).unwrap();
    let damage = |item: Item, f: &dyn Fn(&mut Vec<u8>)| {
        let key = item.key(7);
        let mut v = store.db.get(&key).unwrap().unwrap();
        f(&mut v);
        store.db.put(&key, v).unwrap();
    };
    damage(Item::Index { queue: 1, offset: 2 }, &|v| v[5] ^= 0x10);
    let err = store.index_range(7, 1, 0, 100).unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { key, reason } if key == "group 7 index entry queue 1 offset 2" && reason.contains("checksum")),
        "{err}"
    );
    // Entries before the damage still read.
    assert_eq!(store.index_range(7, 1, 0, 2).unwrap().len(), 2);

    damage(Item::NextOffset { queue: 1 }, &|v| v.truncate(6));
    let err = store.next_offset(7, 1).unwrap_err();
    assert!(err.to_string().contains("group 7 next offset of queue 1"), "{err}");

    damage(Item::ConsumerOffset { consumer_group: "cg-a".into(), queue: 1 }, &|v| v[0] = 9);
    let err = store.consumer_offset(7, "cg-a", 1).unwrap_err();
    assert!(err.to_string().contains("group 7 offset of consumer group \"cg-a\" on queue 1"), "{err}");
    assert!(err.to_string().contains("format"), "{err}");

    let err = store.export_group(7, 1 << 20).unwrap().find_map(|page| page.err()).unwrap();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");

    // A damaged applied index refuses the open, naming it.
    damage(Item::Applied, &|v| v[3] ^= 1);
    drop(store);
    let err = QueueStore::open(dir.path(), &StoreOptions::default()).unwrap_err();
    assert!(err.to_string().contains("group 7 applied index"), "{err}");
}

#[test]
fn a_group_with_data_but_no_applied_index_refuses_the_open() {
    let dir = TempDir::new().unwrap();
    {
        let (store, _) = open(dir.path());
        store.db.put(Item::NextOffset { queue: 1 }.key(4), value::encode_u64(1)).unwrap();
    }
    let err = QueueStore::open(dir.path(), &StoreOptions::default()).unwrap_err();
    assert!(err.to_string().contains("group 4 has data but no applied index"), "{err}");
}

#[test]
fn applies_to_many_groups_run_concurrently_with_flushes() {
    const GROUPS: u64 = 64;
    const ENTRIES: u64 = 50;
    let dir = TempDir::new().unwrap();
    let (store, _) = open(dir.path());
    let applying = std::sync::atomic::AtomicUsize::new(2);
    std::thread::scope(|s| {
        for half in 0..2 {
            let (store, applying) = (&store, &applying);
            s.spawn(move || {
                for index in 1..=ENTRIES {
                    for g in (half..GROUPS).step_by(2) {
                        store.apply(g, &send(index, 0, index - 1, 1, "cg", index)).unwrap();
                    }
                }
                applying.fetch_sub(1, std::sync::atomic::Ordering::Release);
            });
        }
        // Flushes race the applies: a durable index never passes the applied one, and never
        // goes back. Bounded by the appliers finishing (checked after each flush).
        let mut last = vec![None; GROUPS as usize];
        loop {
            let done = applying.load(std::sync::atomic::Ordering::Acquire) == 0;
            store.flush().unwrap();
            for g in 0..GROUPS {
                let (durable, applied) = (store.durable_applied_index(g), store.applied_index(g));
                assert!(durable <= applied, "group {g}: durable {durable:?} past applied {applied:?}");
                assert!(durable >= last[g as usize], "group {g}: durable went back");
                last[g as usize] = durable;
            }
            if done {
                break;
            }
        }
    });
    for g in 0..GROUPS {
        assert_eq!(store.durable_applied_index(g), Some(ENTRIES));
        assert_eq!(store.index_range(g, 0, 0, usize::MAX).unwrap().len(), ENTRIES as usize);
    }
}

fn checkpoint(log_index: u64) -> Checkpoint {
    Checkpoint {
        log_index,
        raft_state: format!("raft state at {log_index}").into_bytes(),
        next_offsets: vec![(0, 3), (1, 10)],
        consumer_offsets: vec![("cg-a".into(), 1, 4), ("cg-b".into(), 0, 3)],
        ..Checkpoint::default()
    }
}

#[test]
fn trims_start_offsets_and_checkpoints_round_trip() {
    let dir = TempDir::new().unwrap();
    let (store, _) = open(dir.path());
    assert_eq!((store.trim_point(7).unwrap(), store.trim_checkpoint(7).unwrap()), (None, None));
    assert_eq!(store.start_offset(7, 1).unwrap(), 0, "never trimmed");
    let mut b = send(5, 1, 0, 10, "cg-a", 4);
    b.set_next_offset(0, 3).unwrap();
    b.set_consumer_offset("cg-b", 0, 3).unwrap();
    b.put_checkpoint(checkpoint(5)).unwrap();
    store.apply(7, &b).unwrap();
    store.apply(7, &send(6, 1, 10, 2, "cg-a", 4)).unwrap();
    assert_eq!(store.checkpoint(7, 5).unwrap(), Some(checkpoint(5)));
    assert_eq!(store.checkpoint(7, 6).unwrap(), None);
    assert_eq!(store.index_entry(7, 1, 9).unwrap(), Some(entry(5, 9)));
    assert_eq!(store.index_entry(7, 1, 12).unwrap(), None);
    let offsets = store.group_offsets(7, 4).unwrap().unwrap();
    assert_eq!(offsets.next, vec![(0, 3), (1, 12)]);
    assert_eq!(offsets.consumers, vec![("cg-a".into(), 1, 4), ("cg-b".into(), 0, 3)]);
    assert_eq!(offsets.start, vec![]);
    assert_eq!(store.group_offsets(7, 3).unwrap(), None, "over the limit: no partial answer");

    // A trim at 5: index entries of queue 1 below 10 go, in one range deletion.
    let mut t = ApplyBatch::new(8);
    t.trim_index(1, 10).unwrap();
    t.trim_index(0, 3).unwrap();
    t.set_start_offset(1, 10).unwrap();
    t.set_start_offset(0, 3).unwrap();
    t.set_trim_point(5);
    t.put_checkpoint(checkpoint(8)).unwrap();
    store.apply(7, &t).unwrap();
    assert_eq!(store.index_range(7, 1, 0, 100).unwrap(), vec![(10, entry(6, 10)), (11, entry(6, 11))]);
    assert_eq!((store.start_offset(7, 1).unwrap(), store.start_offset(7, 0).unwrap()), (10, 3));
    assert_eq!(store.trim_point(7).unwrap(), Some(5));
    assert_eq!(store.trim_checkpoint(7).unwrap(), Some(checkpoint(5)));
    assert_eq!(store.checkpoint_indexes(7).unwrap(), vec![5, 8]);
    assert_eq!(store.group_offsets(7, 4).unwrap().unwrap().start, vec![(0, 3), (1, 10)]);
    let mut d = ApplyBatch::new(9);
    d.drop_checkpoint(8).unwrap();
    store.apply(7, &d).unwrap();
    assert_eq!(store.checkpoint_indexes(7).unwrap(), vec![5]);
    assert_eq!(store.checkpoint_indexes(8).unwrap(), vec![], "other groups are apart");

    // They survive a crash once flushed, and move with an export.
    store.flush().unwrap();
    let (crashed, _) = open(crash_image(dir.path()).path());
    assert_eq!((crashed.trim_checkpoint(7).unwrap(), crashed.start_offset(7, 1).unwrap()), (Some(checkpoint(5)), 10));
    let pages: Vec<ExportPage> = store.export_group(7, 1 << 20).unwrap().map(|p| p.unwrap()).collect();
    store.import_group(3, pages).unwrap();
    assert_eq!((store.trim_checkpoint(3).unwrap(), store.start_offset(3, 1).unwrap()), (Some(checkpoint(5)), 10));
}

#[test]
fn a_checkpoint_export_imports_as_a_group_trimmed_at_it() {
    let dir = TempDir::new().unwrap();
    let (store, _) = open(dir.path());
    store.apply(2, &send(1, 5, 0, 7, "cg-z", 1)).unwrap();
    store.import_group(2, [checkpoint_export(&checkpoint(40))]).unwrap();
    assert_eq!(store.applied_index(2), Some(40));
    assert_eq!(store.raft_state(2).unwrap(), Some(b"raft state at 40".to_vec()));
    assert_eq!(store.trim_checkpoint(2).unwrap(), Some(checkpoint(40)));
    assert_eq!(store.checkpoint_indexes(2).unwrap(), vec![40]);
    let offsets = store.group_offsets(2, 100).unwrap().unwrap();
    assert_eq!(offsets.next, checkpoint(40).next_offsets);
    assert_eq!(offsets.start, checkpoint(40).next_offsets, "nothing below the next offsets is held");
    assert_eq!(offsets.consumers, checkpoint(40).consumer_offsets);
    for q in [0, 1, 5] {
        assert_eq!(store.index_range(2, q, 0, 100).unwrap(), vec![], "no index entry, the older ones included");
    }
}

/// A snapshot carries the receive state: the importer reads the cursors and in-flight
/// records the checkpoint holds, and nothing of what it held before.
#[test]
fn a_checkpoint_export_carries_the_receive_state() {
    let dir = TempDir::new().unwrap();
    let (store, _) = open(dir.path());
    let mut before = ApplyBatch::new(1);
    before.put_in_flight("cg-old", 0, 1, InFlight::default()).unwrap();
    before.set_in_flight_tally("cg-a", 0, InFlightTally { count: 9, due_from_ms: 1 }).unwrap();
    store.apply(2, &before).unwrap();
    let record = |version| InFlight { invisible_until_ms: 5_000, attempt: version, version };
    let with_state = Checkpoint {
        pop_cursors: vec![("cg-a".into(), 0, 3), ("cg-b".into(), 1, 10)],
        in_flight: vec![("cg-a".into(), 0, 1, record(2)), ("cg-a".into(), 0, 2, record(1))],
        ..checkpoint(40)
    };
    store.import_group(2, [checkpoint_export(&with_state)]).unwrap();
    assert_eq!(store.trim_checkpoint(2).unwrap(), Some(with_state.clone()));
    assert_eq!((store.pop_cursor(2, "cg-a", 0).unwrap(), store.pop_cursor(2, "cg-b", 1).unwrap()), (Some(3), Some(10)));
    assert_eq!(store.in_flight(2, "cg-a", 0, 0..u64::MAX, 10).unwrap(), vec![(1, record(2)), (2, record(1))]);
    assert!(store.in_flight(2, "cg-old", 0, 0..u64::MAX, 10).unwrap().is_empty(), "the import replaced the group's state");
    assert_eq!(store.in_flight_tally(2, "cg-a", 0).unwrap(), None, "a tally is derived: the importer's receives make it");
}

#[test]
fn a_damaged_trim_start_offset_or_checkpoint_is_an_error_naming_the_key() {
    let dir = TempDir::new().unwrap();
    let (store, _) = open(dir.path());
    let mut b = send(4, 1, 0, 5, "cg-a", 2);
    b.set_start_offset(1, 2).unwrap();
    b.set_trim_point(4);
    b.put_checkpoint(checkpoint(4)).unwrap();
    store.apply(7, &b).unwrap();
    let damage = |item: Item, f: &dyn Fn(&mut Vec<u8>)| {
        let key = item.key(7);
        let mut v = store.db.get(&key).unwrap().unwrap();
        f(&mut v);
        store.db.put(&key, v).unwrap();
    };
    damage(Item::Checkpoint { log_index: 4 }, &|v| v[9] ^= 0x40);
    let err = store.checkpoint(7, 4).unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { key, reason } if key == "group 7 checkpoint at log index 4" && reason.contains("checksum")),
        "{err}"
    );
    assert!(store.trim_checkpoint(7).unwrap_err().to_string().contains("group 7 checkpoint at log index 4"));
    let err = store.export_group(7, 1 << 20).unwrap().find_map(|page| page.err()).unwrap();
    assert!(err.to_string().contains("checkpoint at log index 4"), "{err}");

    damage(Item::StartOffset { queue: 1 }, &|v| v[2] ^= 1);
    assert!(store.start_offset(7, 1).unwrap_err().to_string().contains("group 7 start offset of queue 1"));
    damage(Item::TrimPoint, &|v| v.truncate(3));
    assert!(store.trim_point(7).unwrap_err().to_string().contains("group 7 trim point"));

    // A checkpoint stored under another index's key is refused, naming the key.
    store.db.put(Item::Checkpoint { log_index: 9 }.key(7), checkpoint(4).encode()).unwrap();
    let err = store.checkpoint(7, 9).unwrap_err();
    assert!(err.to_string().contains("group 7 checkpoint at log index 9") && err.to_string().contains("at log index 4"), "{err}");
    // A trim point whose checkpoint is missing is damage too.
    store.db.put(Item::TrimPoint.key(7), value::encode_u64(5)).unwrap();
    let err = store.trim_checkpoint(7).unwrap_err();
    assert!(err.to_string().contains("group 7 checkpoint at log index 5") && err.to_string().contains("missing"), "{err}");
}

#[test]
fn more_checkpoints_than_a_group_may_hold_is_damage() {
    let dir = TempDir::new().unwrap();
    let (store, _) = open(dir.path());
    store.apply(1, &ApplyBatch::new(1)).unwrap();
    for i in 0..=CHECKPOINTS_MAX as u64 {
        store.db.put(Item::Checkpoint { log_index: i }.key(1), checkpoint(i).encode()).unwrap();
    }
    assert_eq!(store.checkpoint_indexes(1).unwrap().len(), CHECKPOINTS_MAX + 1);
    store.db.put(Item::Checkpoint { log_index: 1000 }.key(1), checkpoint(1000).encode()).unwrap();
    let err = store.checkpoint_indexes(1).unwrap_err();
    assert!(err.to_string().contains("group 1 checkpoint at log index 1000"), "{err}");
}

#[test]
fn recorded_checkpoint_intervals_survive_a_crash_and_the_groups_data_going() {
    let dir = TempDir::new().unwrap();
    let (store, _) = open(dir.path());
    assert_eq!(store.checkpoint_interval(4).unwrap(), None);
    store.record_checkpoint_interval(&[(4, 64), (5, 4096)]).unwrap();
    store.apply(4, &send(1, 0, 0, 3, "cg", 0)).unwrap();
    // Nothing flushed: a crash keeps the settings (synced WAL) and loses the apply.
    let image = crash_image(dir.path());
    let (crashed, report) = open(image.path());
    assert_eq!(report.groups, 0);
    assert_eq!((crashed.checkpoint_interval(4).unwrap(), crashed.checkpoint_interval(5).unwrap()), (Some(64), Some(4096)));
    assert_eq!(crashed.checkpoint_interval(6).unwrap(), None);
    // A group's data may be replaced (an import) or deleted; its settings stay.
    store.delete_group(4).unwrap();
    store.flush().unwrap();
    assert_eq!(store.checkpoint_interval(4).unwrap(), Some(64));
    assert_eq!(keys_per_group(&store).get(&4), None);
    store.record_checkpoint_interval(&[(4, 8)]).unwrap();
    drop(store);
    let (reopened, _) = open(dir.path());
    assert_eq!(reopened.checkpoint_interval(4).unwrap(), Some(8));
}

/// Receive state: a cursor per (consumer group, queue) and in-flight records read back by
/// offset; a run of entries that delivers a message and settles it leaves it settled, and one
/// that settles and delivers it again leaves it in flight (the last change wins).
#[test]
fn receive_state_is_stored_in_entry_order() {
    let dir = TempDir::new().unwrap();
    let (store, _) = open(dir.path());
    let record = |version| InFlight { invisible_until_ms: 1_000 + u64::from(version), attempt: version, version };
    let mut b = ApplyBatch::new(1);
    b.set_pop_cursor("cg", 0, 5).unwrap();
    for offset in 0..5 {
        b.put_in_flight("cg", 0, offset, record(1)).unwrap();
    }
    b.put_in_flight("other", 0, 2, record(1)).unwrap();
    // Acknowledged in a later entry of the same run.
    b.settle("cg", 0, 1).unwrap();
    // Settled, then delivered again.
    b.settle("cg", 0, 3).unwrap();
    b.put_in_flight("cg", 0, 3, record(2)).unwrap();
    store.apply(7, &b).unwrap();

    assert_eq!(store.pop_cursor(7, "cg", 0).unwrap(), Some(5));
    assert_eq!(store.pop_cursor(7, "cg", 1).unwrap(), None);
    let held: Vec<(u64, u32)> = store.in_flight(7, "cg", 0, 0..u64::MAX, 100).unwrap().into_iter().map(|(o, r)| (o, r.version)).collect();
    assert_eq!(held, [(0, 1), (2, 1), (3, 2), (4, 1)]);
    assert_eq!(store.in_flight(7, "cg", 0, 3..u64::MAX, 1).unwrap().len(), 1, "from an offset, bounded");
    let below: Vec<u64> = store.in_flight(7, "cg", 0, 2..4, 100).unwrap().into_iter().map(|(o, _)| o).collect();
    assert_eq!(below, [2, 3], "up to an offset, not including it");
    assert_eq!(store.in_flight(7, "other", 0, 0..u64::MAX, 100).unwrap().len(), 1, "each consumer group its own");
    assert_eq!(store.in_flight_record(7, "cg", 0, 1).unwrap(), None);
    assert_eq!(store.in_flight_record(7, "cg", 0, 3).unwrap(), Some(record(2)));
    assert!(store.in_flight(7, "cg", 1, 0..u64::MAX, 100).unwrap().is_empty(), "another queue holds none");
    assert!(matches!(store.pop_cursor(7, "", 0), Err(StoreError::InvalidName { .. })));
}

/// The derived receive state: a floor per (consumer group, queue), 0 until set; the group's
/// count of receive items as kept, or counted (stopping just past the bound) until one is kept.
#[test]
fn receive_floors_and_the_count_of_receive_items_read_back() {
    let dir = TempDir::new().unwrap();
    let (store, _) = open(dir.path());
    let record = InFlight { invisible_until_ms: 1, attempt: 1, version: 1 };
    let mut b = ApplyBatch::new(1);
    b.set_pop_cursor("cg", 0, 5).unwrap();
    for offset in 0..5 {
        b.put_in_flight("cg", 0, offset, record).unwrap();
    }
    b.set_receive_floor("cg", 0, 3).unwrap();
    store.apply(7, &b).unwrap();
    assert_eq!(store.receive_floor(7, "cg", 0).unwrap(), 3);
    assert_eq!(store.receive_floor(7, "cg", 1).unwrap(), 0, "never set");
    assert_eq!(store.receive_items(7, 100).unwrap(), 6, "counted: one cursor, five records");
    assert_eq!(store.receive_items(7, 2).unwrap(), 3, "the counting stops just past the bound");
    let mut b = ApplyBatch::new(2);
    b.set_receive_items(42);
    store.apply(7, &b).unwrap();
    assert_eq!(store.receive_items(7, 2).unwrap(), 42, "as kept, not counted");
    assert!(matches!(store.receive_floor(7, "", 0), Err(StoreError::InvalidName { .. })));
    // In-flight tallies: none until set; the last one set in a batch wins.
    assert_eq!(store.in_flight_tally(7, "cg", 0).unwrap(), None);
    let mut b = ApplyBatch::new(3);
    b.set_in_flight_tally("cg", 0, InFlightTally { count: 5, due_from_ms: 1 }).unwrap();
    b.set_in_flight_tally("cg", 0, InFlightTally { count: 4, due_from_ms: 1 }).unwrap();
    b.set_in_flight_tally("cg", 1, InFlightTally::EMPTY).unwrap();
    store.apply(7, &b).unwrap();
    assert_eq!(store.in_flight_tally(7, "cg", 0).unwrap(), Some(InFlightTally { count: 4, due_from_ms: 1 }));
    assert_eq!(store.in_flight_tally(7, "cg", 1).unwrap(), Some(InFlightTally::EMPTY));
    assert!(matches!(store.in_flight_tally(7, "", 0), Err(StoreError::InvalidName { .. })));
}

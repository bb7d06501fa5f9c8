use super::*;

fn meta_at(index: u64) -> Meta {
    Meta { last_log_id: Some(openraft::testing::log_id::<C>(3, 1, index)), last_membership: Membership::default() }
}

fn pages() -> Vec<ExportPage> {
    vec![
        ExportPage {
            records: vec![GroupRecord { key: vec![1], value: vec![9; 13] }, GroupRecord { key: vec![2, 0, 0, 0, 7], value: vec![1; 13] }],
        },
        ExportPage { records: vec![GroupRecord { key: vec![5], value: vec![] }] },
    ]
}

use openraft::{Entry, Membership as Config};
use tempfile::TempDir;

use crate::queue::command::{GroupCommand, NewMessage};
use crate::raft::BrokerNode;
use crate::store::{IndexEntry, StoreOptions};

const GROUP: GroupId = 9;
type Payload = openraft::alias::EntryPayloadOf<C>;

fn open(dir: &TempDir) -> Arc<QueueStore> {
    Arc::new(QueueStore::open(dir.path(), &StoreOptions::default()).unwrap().0)
}

fn send(queues: &[u32]) -> GroupCommand {
    let messages = queues
        .iter()
        .map(|&queue| NewMessage {
            queue,
            message_id: format!("m{queue}"),
            tag: Some("t".into()),
            keys: vec![],
            properties: vec![],
            body: vec![queue as u8; 10],
            ..NewMessage::default()
        })
        .collect();
    GroupCommand::Send { store_time_ms: 1_000, messages }
}

async fn apply(sm: &mut QueueStateMachine, entries: Vec<Entry<openraft::alias::CommittedLeaderIdOf<C>, Payload>>) {
    let stream = futures::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
    sm.apply(stream).await.unwrap();
}

fn entry(index: u64, payload: Payload) -> Entry<openraft::alias::CommittedLeaderIdOf<C>, Payload> {
    Entry { log_id: openraft::testing::log_id::<C>(2, 1, index), payload }
}

fn config() -> Config<u64, BrokerNode> {
    let nodes: std::collections::BTreeMap<u64, BrokerNode> =
        [(1, BrokerNode { raft_addr: "a:1".into() }), (2, BrokerNode { raft_addr: "b:2".into() })].into();
    Config::new(vec![[1, 2].into()], nodes).unwrap()
}

/// Every read of the group: index entries and next offsets of queues 0..4.
fn reads(store: &QueueStore) -> (Vec<Vec<(u64, IndexEntry)>>, Vec<u64>) {
    ((0..4).map(|q| store.index_range(GROUP, q, 0, 100).unwrap()).collect(), (0..4).map(|q| store.next_offset(GROUP, q).unwrap()).collect())
}

#[tokio::test]
async fn applied_state_and_reads_survive_a_flush_and_reopen() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let mut sm = QueueStateMachine::new(store.clone(), GROUP);
    assert_eq!(sm.applied_state().await.unwrap(), (None, Membership::default()));
    apply(
        &mut sm,
        vec![entry(1, EntryPayload::Blank), entry(2, EntryPayload::Membership(config())), entry(3, EntryPayload::Normal(send(&[0, 1, 0])))],
    )
    .await;
    apply(&mut sm, vec![entry(4, EntryPayload::Normal(send(&[1, 2]))), entry(5, EntryPayload::Blank)]).await;
    let want_membership = Membership::new(Some(openraft::testing::log_id::<C>(2, 1, 2)), config());
    let state = sm.applied_state().await.unwrap();
    assert_eq!(state, (Some(openraft::testing::log_id::<C>(2, 1, 5)), want_membership.clone()));
    let before = reads(&store);
    assert_eq!(before.1, vec![2, 2, 1, 0]);
    assert_eq!(
        before.0[1][1],
        (1, IndexEntry { log_index: 4, position: 0, size: 10, tag_hash: crate::queue::tag_hash(Some("t")), store_time_ms: 1_000 })
    );
    store.flush().unwrap();
    drop(sm);
    drop(store);

    let store = open(&dir);
    let mut sm = QueueStateMachine::new(store.clone(), GROUP);
    assert_eq!(sm.applied_state().await.unwrap(), state);
    assert_eq!(reads(&store), before);
    // And it goes on from there, with offsets continuing densely.
    apply(&mut sm, vec![entry(6, EntryPayload::Normal(send(&[2])))]).await;
    assert_eq!(store.index_range(GROUP, 2, 0, 100).unwrap().iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![0, 1]);
}

fn commit(queue: u32, offset: u64) -> GroupCommand {
    GroupCommand::CommitOffset { consumer_group: "cg".into(), queue, offset }
}

fn trim(up_to_log_index: u64) -> GroupCommand {
    GroupCommand::Trim { up_to_log_index }
}

/// Every read of the group's replicated state: index entries, next, start and consumer
/// offsets of queues 0..4, the trim point and the checkpoints.
type GroupState = (Vec<Vec<(u64, IndexEntry)>>, Vec<u64>, Vec<u64>, Vec<Option<u64>>, Option<u64>, Vec<u64>);

fn group_state(store: &QueueStore) -> GroupState {
    let (index, next) = reads(store);
    (
        index,
        next,
        (0..4).map(|q| store.start_offset(GROUP, q).unwrap()).collect(),
        (0..4).map(|q| store.consumer_offset(GROUP, "cg", q).unwrap()).collect(),
        store.trim_point(GROUP).unwrap(),
        store.checkpoint_indexes(GROUP).unwrap(),
    )
}

/// Applies `entries` one at a time, returning each reply.
fn apply_replies(sm: &QueueStateMachine, entries: Vec<Entry<openraft::alias::CommittedLeaderIdOf<C>, Payload>>) -> Vec<GroupReply> {
    // openraft's responders cannot be made outside it: apply entry by entry instead.
    let mut membership = sm.raft_state().unwrap().map(|s| s.membership).unwrap_or_default();
    entries.into_iter().map(|e| sm.apply_entry(&e, &mut membership, Write::Always).unwrap().expect("written")).collect()
}

const EVERY_2: QueueGroupOptions = QueueGroupOptions { checkpoint_interval_entries: 2 };

/// Entries 1..=6 of a group with a checkpoint every 2 entries: a trim at 4 at entry 5.
fn trimmed_log() -> Vec<Entry<openraft::alias::CommittedLeaderIdOf<C>, Payload>> {
    vec![
        entry(1, EntryPayload::Membership(config())),
        entry(2, EntryPayload::Normal(send(&[0, 3, 3]))),
        entry(3, EntryPayload::Normal(commit(3, 1))),
        entry(4, EntryPayload::Normal(send(&[0, 1]))),
        entry(5, EntryPayload::Normal(trim(4))),
        entry(6, EntryPayload::Normal(send(&[3, 1]))),
    ]
}

#[tokio::test]
async fn the_snapshot_is_the_checkpoint_at_the_trim_point_and_survives_a_restart() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let mut a = QueueStateMachine::with_options(store.clone(), GROUP, EVERY_2);
    apply(&mut a, trimmed_log()).await;
    let snap = a.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let membership = Membership::new(Some(openraft::testing::log_id::<C>(2, 1, 1)), config());
    assert_eq!(snap.meta.last_log_id, Some(openraft::testing::log_id::<C>(2, 1, 4)), "the trim point, below the applied 6");
    assert_eq!(snap.meta.last_membership, membership);
    assert_eq!(store.durable_applied_index(GROUP), Some(6), "building flushes everything applied, the trim included");
    assert_eq!(a.get_current_snapshot().await.unwrap().unwrap().meta, snap.meta);
    let (index, next, start, consumers, trim_point, checkpoints) = group_state(&store);
    assert_eq!(next, vec![2, 2, 0, 3]);
    assert_eq!(start, vec![2, 1, 0, 2], "the next offsets at 4");
    assert_eq!(
        index.iter().map(|q| q.iter().map(|(o, _)| *o).collect::<Vec<_>>()).collect::<Vec<_>>(),
        vec![vec![], vec![1], vec![], vec![2]]
    );
    assert!(index.iter().flatten().all(|(_, e)| e.log_index > 4), "nothing points at an entry up to the trim point");
    assert_eq!((consumers[3], trim_point, checkpoints), (Some(1), Some(4), vec![4, 6]));

    // After a restart the store still names the same snapshot: it is not kept in memory.
    drop(a);
    drop(store);
    let store = open(&dir);
    let mut a = QueueStateMachine::with_options(store.clone(), GROUP, EVERY_2);
    let again = a.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!((&again.meta, again.snapshot.get_ref()), (&snap.meta, snap.snapshot.get_ref()));
}

#[tokio::test]
async fn an_installed_snapshot_then_the_log_after_it_give_the_leaders_state() {
    let (dir_a, dir_b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let store_a = open(&dir_a);
    let mut a = QueueStateMachine::with_options(store_a.clone(), GROUP, EVERY_2);
    let replies_a = apply_replies(&a, trimmed_log());
    assert_eq!(replies_a[4], GroupReply::Trimmed { up_to_log_index: 4 });
    let snap = a.get_snapshot_builder().await.build_snapshot().await.unwrap();

    // B holds older, different data of the group; the snapshot replaces all of it.
    let store_b = open(&dir_b);
    let mut b = QueueStateMachine::with_options(store_b.clone(), GROUP, EVERY_2);
    apply(&mut b, vec![entry(1, EntryPayload::Normal(send(&[2, 2])))]).await;
    b.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
    assert_eq!(b.applied_state().await.unwrap(), (snap.meta.last_log_id, snap.meta.last_membership.clone()));
    assert_eq!(store_b.durable_applied_index(GROUP), Some(4), "installing flushes");
    assert_eq!(b.get_current_snapshot().await.unwrap().unwrap().meta, snap.meta, "the installer serves the same snapshot");
    let (index, next, start, ..) = group_state(&store_b);
    assert_eq!((next, start), (vec![2, 1, 0, 2], vec![2, 1, 0, 2]));
    assert!(index.iter().all(Vec::is_empty), "no message up to the trim point, and B's own are gone");

    // B replays the entries after 4 as replication would: the trim it answers Rejected (it
    // is at that trim point already), the send gets the leader's offsets.
    let replies_b = apply_replies(&b, trimmed_log().split_off(4));
    assert!(matches!(replies_b[0], GroupReply::Rejected { .. }), "{:?}", replies_b[0]);
    assert_eq!(replies_b[1], replies_a[5]);
    assert_eq!(group_state(&store_b), group_state(&store_a), "same state after the same log");
    apply(&mut a, vec![entry(7, EntryPayload::Normal(send(&[1]))), entry(8, EntryPayload::Blank)]).await;
    apply(&mut b, vec![entry(7, EntryPayload::Normal(send(&[1]))), entry(8, EntryPayload::Blank)]).await;
    assert_eq!(group_state(&store_b), group_state(&store_a));

    // A snapshot whose meta disagrees with the one given is refused.
    let current = a.get_current_snapshot().await.unwrap().unwrap();
    let mut other = current.meta.clone();
    other.last_log_id = Some(openraft::testing::log_id::<C>(2, 1, 7));
    assert!(b.install_snapshot(&other, current.snapshot).await.is_err());
    // So is one that is not a checkpoint at a trim point (here: a whole-store export).
    let export: Vec<ExportPage> = store_a.export_group(GROUP, 1 << 20).unwrap().map(|p| p.unwrap()).collect();
    let applied = a.applied_state().await.unwrap();
    let meta = Meta { last_log_id: applied.0, last_membership: applied.1 };
    let err = b.install_snapshot(&meta, Cursor::new(encode_snapshot(&meta, &export))).await.unwrap_err();
    assert!(err.to_string().contains("trim point"), "{err}");
}

#[tokio::test]
async fn a_group_never_trimmed_has_no_snapshot() {
    let dir = TempDir::new().unwrap();
    let mut sm = QueueStateMachine::with_options(open(&dir), GROUP, EVERY_2);
    apply(&mut sm, vec![entry(1, EntryPayload::Normal(send(&[0]))), entry(2, EntryPayload::Blank)]).await;
    assert!(sm.get_current_snapshot().await.unwrap().is_none());
    assert!(sm.try_create_snapshot_builder(false).await.is_none(), "a policy-triggered build is declined");
    let snap = sm.try_create_snapshot_builder(true).await.unwrap().build_snapshot().await.unwrap();
    assert_eq!(snap.meta, Meta::default(), "an empty snapshot, which openraft ignores");
    assert_eq!(sm.store().durable_applied_index(GROUP), Some(2));
}

#[tokio::test]
async fn a_group_holding_no_message_at_a_checkpoint_has_its_snapshot_there() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let mut sm = QueueStateMachine::with_options(store.clone(), GROUP, EVERY_2);
    apply(&mut sm, vec![entry(1, EntryPayload::Membership(config())), entry(2, EntryPayload::Normal(commit(0, 0)))]).await;
    let snap = sm.try_create_snapshot_builder(false).await.unwrap().build_snapshot().await.unwrap();
    assert_eq!(snap.meta.last_log_id, Some(openraft::testing::log_id::<C>(2, 1, 2)));
    assert_eq!(store.trim_point(GROUP).unwrap(), Some(2));
    apply(&mut sm, vec![entry(3, EntryPayload::Normal(send(&[0]))), entry(4, EntryPayload::Blank)]).await;
    assert_eq!(store.trim_point(GROUP).unwrap(), Some(2), "a message is held at 4");
    assert_eq!(store.checkpoint_indexes(GROUP).unwrap(), vec![2, 4]);
}

/// What a kill -9 now would leave of the store in `dir` (see `store::tests::crash_image`).
fn crash_image(dir: &TempDir) -> TempDir {
    let image = TempDir::new().unwrap();
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), image.path().join(e.file_name())).unwrap();
        }
    }
    image
}

#[tokio::test]
async fn a_crash_after_a_trim_and_before_any_flush_re_applies_to_the_same_state() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let mut sm = QueueStateMachine::with_options(store.clone(), GROUP, EVERY_2);
    let log = trimmed_log();
    apply(&mut sm, log[..4].to_vec()).await;
    store.flush().unwrap();
    apply(&mut sm, log[4..].to_vec()).await;
    let before = group_state(&store);
    assert_eq!(before.4, Some(4));

    // The trim was not flushed: a crash loses it, and the snapshot with it (the log was not
    // purged, since a build flushes before openraft may purge).
    let image = crash_image(&dir);
    let crashed = Arc::new(QueueStore::open(image.path(), &StoreOptions::default()).unwrap().0);
    let mut again = QueueStateMachine::with_options(crashed.clone(), GROUP, EVERY_2);
    assert_eq!(again.applied_state().await.unwrap().0, Some(openraft::testing::log_id::<C>(2, 1, 4)));
    assert!(again.get_current_snapshot().await.unwrap().is_none());
    apply(&mut again, log[4..].to_vec()).await;
    assert_eq!(group_state(&crashed), before, "re-applying the trim is deterministic");
    assert_eq!(again.get_current_snapshot().await.unwrap().unwrap().meta.last_log_id, Some(openraft::testing::log_id::<C>(2, 1, 4)));
}

fn encode_snapshot(meta: &Meta, pages: &[ExportPage]) -> Vec<u8> {
    let mut w = SnapshotWriter::new(1, meta).unwrap();
    for p in pages {
        w.push_page(p).unwrap();
    }
    w.finish()
}

type OwnedRecord = (Vec<u8>, Vec<u8>);

fn decode_all(data: &[u8]) -> Result<(Meta, Vec<OwnedRecord>), String> {
    let (meta, records) = decode_snapshot(data)?;
    let records = records.map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec()))).collect::<Result<_, _>>()?;
    Ok((meta, records))
}

#[test]
fn a_snapshot_buffer_round_trips() {
    let data = encode_snapshot(&meta_at(42), &pages());
    let want: Vec<OwnedRecord> = pages().into_iter().flat_map(|p| p.records).map(|r| (r.key, r.value)).collect();
    assert_eq!(decode_all(&data).unwrap(), (meta_at(42), want));
    let empty = encode_snapshot(&Meta::default(), &[]);
    assert_eq!(decode_all(&empty).unwrap(), (Meta::default(), vec![]));
}

#[test]
fn a_damaged_or_truncated_snapshot_buffer_is_refused() {
    let data = encode_snapshot(&meta_at(42), &pages());
    for bit in 0..data.len() * 8 {
        let mut bad = data.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        assert!(decode_all(&bad).is_err(), "bit {bit} flipped went unnoticed");
    }
    for len in 0..data.len() {
        assert!(decode_all(&data[..len]).is_err(), "truncated to {len}");
    }
    // Well-checksummed buffers whose lengths point past their end are refused, not read.
    let sealed = |body: &[u8]| [body, &crc32c::crc32c(body).to_le_bytes()].concat();
    let huge_meta = [MAGIC.as_slice(), &u32::MAX.to_le_bytes()].concat();
    assert!(decode_all(&sealed(&huge_meta)).unwrap_err().contains("limit"));
    let mut header = encode_snapshot(&meta_at(1), &[]);
    header.truncate(header.len() - 4);
    let huge_key = [header.as_slice(), &u32::MAX.to_le_bytes(), &0u32.to_le_bytes()].concat();
    assert!(decode_all(&sealed(&huge_key)).unwrap_err().contains("past the end"));
}

#[test]
fn a_snapshot_is_refused_past_its_bound() {
    let mut w = SnapshotWriter::new(1, &meta_at(1)).unwrap();
    w.bytes_max = w.out.len() as u64 + 100;
    let page = ExportPage { records: vec![GroupRecord { key: vec![1], value: vec![0; 40] }] };
    w.push_page(&page).unwrap();
    assert!(matches!(w.push_page(&page), Err(StateMachineError::SnapshotTooLarge { max, .. }) if max == w.bytes_max));
    assert_eq!(decode_all(&w.finish()).unwrap().1.len(), 1, "the refused page left nothing behind");
}

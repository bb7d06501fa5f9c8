//! Retention end to end, on three brokers (`GroupHost`s) over the real Raft transport: one
//! follower is stopped; the group takes over 1,024 entries of sends and some consumer commits;
//! the leader trims at the checkpoint at 1,024 (the group's checkpoint interval),
//! every running replica builds its snapshot (the checkpoint at the trim point) and purges its
//! log past the stopped follower's position. The follower restarts and can only catch up by
//! snapshot, then by the log after it. Afterwards all three hold the same messages at the same
//! offsets, byte for byte, the same start and consumer offsets and the same digest, and new
//! sends get the same offsets everywhere.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use broker::host::{GroupHost, QueueRaft, StoredMessage};
use broker::queue::{GroupCommand, GroupReply, NewMessage, QueueGroupOptions};
use broker::raft::{BrokerId, BrokerNode, GroupId};
use broker::retention::RetentionPolicy;
use openraft::type_config::async_runtime::watch::WatchReceiver;

const GROUP: GroupId = 21;
const QUEUES: u32 = 3;
const CONSUMERS: [&str; 2] = ["cg-a", "cg-b"];
const WAIT: Duration = Duration::from_secs(60);
/// The group's options: a checkpoint every 1,024 entries.
const OPTIONS: QueueGroupOptions = QueueGroupOptions { checkpoint_interval_entries: 1024 };
/// Entries written while the follower is down: past the first checkpoint.
const ENTRIES: u64 = 1_300;
/// Concurrent writers: openraft and raft-log batch their entries, so the run takes seconds.
const WRITERS: u64 = 32;

fn message(i: u64, part: u64) -> NewMessage {
    NewMessage {
        queue: ((i + part) % u64::from(QUEUES)) as u32,
        message_id: format!("m-{i}-{part}"),
        tag: i.is_multiple_of(2).then(|| format!("tag-{}", i % 5)),
        keys: vec![format!("k-{i}")],
        properties: vec![("part".into(), part.to_string())],
        body: format!("body of entry {i} part {part}").repeat((i % 4 + 1) as usize).into_bytes(),
        ..NewMessage::default()
    }
}

/// Entry `i` of the test: one to three messages, stored at time `i` (ms).
fn send(i: u64) -> GroupCommand {
    GroupCommand::Send { store_time_ms: i, messages: (0..i % 3 + 1).map(|part| message(i, part)).collect() }
}

/// The replica of the group on `host` that leads it and holds its lease, if any.
fn leader_of(hosts: &[&GroupHost]) -> Option<QueueRaft> {
    hosts.iter().filter_map(|h| h.group(GROUP)).find(|r| {
        let m = r.metrics().borrow_watched().clone();
        m.current_leader == Some(m.id) && m.last_quorum_acked.is_some()
    })
}

/// Writes `cmd` through whichever replica leads, retrying while leadership settles; returns
/// the reply and the entry's log index.
async fn write(hosts: &[&GroupHost], cmd: GroupCommand) -> (GroupReply, u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(raft) = leader_of(hosts) {
            match raft.client_write(cmd.clone()).await {
                Ok(resp) => return (resp.response().clone(), resp.log_id().index),
                Err(e) => tracing::debug!(error = %e, "write refused, retrying"),
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no writable leader within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The host among `hosts` whose replica leads the group, if any.
fn leading_host<'a>(hosts: &[&'a GroupHost]) -> Option<&'a GroupHost> {
    hosts.iter().copied().find(|h| leader_of(&[h]).is_some())
}

/// Records the acknowledged messages of a send: `(queue, offset)` to the message.
fn record(acked: &mut BTreeMap<(u32, u64), NewMessage>, cmd: &GroupCommand, reply: &GroupReply) {
    let (GroupCommand::Send { messages, .. }, GroupReply::Sent { offsets }) = (cmd, reply) else {
        panic!("send answered {reply:?}");
    };
    assert_eq!(offsets.len(), messages.len());
    for (place, m) in offsets.iter().zip(messages) {
        assert!(acked.insert(*place, m.clone()).is_none(), "offset {place:?} given twice");
    }
}

async fn wait_applied(host: &GroupHost, index: u64) {
    let raft = host.group(GROUP).expect("group open");
    raft.wait(Some(WAIT)).applied_index_at_least(Some(index), "applied").await.expect("applied in time");
}

/// Every message of every queue on `host`, from offset 0 (the reads start at each queue's
/// start offset), page by page.
async fn read_all(host: &GroupHost) -> BTreeMap<u32, Vec<StoredMessage>> {
    let mut all = BTreeMap::new();
    for q in 0..QUEUES {
        let mut read: Vec<StoredMessage> = Vec::new();
        // Ends when a page comes back empty; each page moves past at least one message.
        loop {
            let from = read.last().map_or(0, |m| m.offset + 1);
            let page = host.read_queue(GROUP, q, from, 1000, usize::MAX).await.expect("read");
            if page.is_empty() {
                break;
            }
            read.extend(page);
        }
        all.insert(q, read);
    }
    all
}

/// Start, next and consumer offsets of every queue, and the trim point, on `host`.
type Offsets = (Vec<(u64, u64)>, Vec<Option<u64>>, Option<u64>);

fn offsets(host: &GroupHost) -> Offsets {
    let store = host.store();
    (
        (0..QUEUES).map(|q| (store.start_offset(GROUP, q).unwrap(), store.next_offset(GROUP, q).unwrap())).collect(),
        CONSUMERS.iter().flat_map(|cg| (0..QUEUES).map(move |q| store.consumer_offset(GROUP, cg, q).unwrap())).collect(),
        store.trim_point(GROUP).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_a_trim_and_purge_catches_up_by_snapshot_then_log() {
    let interval = OPTIONS.checkpoint_interval_entries;
    assert!(ENTRIES > interval + 100, "the test must write past the first checkpoint");
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut hosts: Vec<Option<GroupHost>> = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        hosts.push(Some(GroupHost::start(&common::host_options(i as BrokerId + 1, dir.path(), any)).await.unwrap()));
    }
    let members: BTreeMap<BrokerId, BrokerNode> = hosts.iter().flatten().map(|h| (h.id(), h.node())).collect();
    for h in hosts.iter().flatten() {
        h.open_group(GROUP, Some(OPTIONS)).await.unwrap();
    }
    hosts[0].as_ref().unwrap().group(GROUP).unwrap().initialize(members).await.unwrap();

    let mut acked: BTreeMap<(u32, u64), NewMessage> = BTreeMap::new();
    let mut last = 0;
    for i in 0..5 {
        let cmd = send(i);
        let (reply, index) = write(&hosts.iter().flatten().collect::<Vec<_>>(), cmd.clone()).await;
        record(&mut acked, &cmd, &reply);
        last = index;
    }
    for h in hosts.iter().flatten() {
        wait_applied(h, last).await;
    }

    // Stop a follower: it has applied about ten entries.
    let running: Vec<&GroupHost> = hosts.iter().flatten().collect();
    let leader_id = leading_host(&running).expect("a leader").id();
    let stopped = hosts.iter().position(|h| h.as_ref().is_some_and(|h| h.id() != leader_id)).unwrap();
    let stopped_host = hosts[stopped].take().unwrap();
    let stopped_id = stopped_host.id();
    let stopped_addr: SocketAddr = stopped_host.node().raft_addr.parse().unwrap();
    let stopped_at = stopped_host.store().applied_index(GROUP).unwrap();
    stopped_host.shutdown().await.unwrap();
    drop(stopped_host);
    let running: Vec<&GroupHost> = hosts.iter().flatten().collect();

    // Many entries from concurrent writers, with consumer commits among them (forward-only,
    // so each is at most the queue's end when it was proposed).
    let next_entry = std::sync::atomic::AtomicU64::new(5);
    let written = std::sync::Mutex::new(Vec::new());
    let (next_entry_ref, written_ref, running_ref) = (&next_entry, &written, &running);
    let writer = move |_: u64| async move {
        let (next_entry, written, running) = (next_entry_ref, written_ref, running_ref);
        // Ends when the shared counter passes ENTRIES.
        loop {
            let i = next_entry.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if i >= ENTRIES {
                return;
            }
            let cmd = send(i);
            let (reply, index) = write(running, cmd.clone()).await;
            written.lock().unwrap().push((cmd, reply, index));
        }
    };
    let committer = async {
        for round in 1..=6u64 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            for (n, cg) in CONSUMERS.iter().enumerate() {
                let queue = (round as u32 + n as u32) % QUEUES;
                let end = running[0].store().next_offset(GROUP, queue).unwrap();
                let cmd = GroupCommand::CommitOffset { consumer_group: cg.to_string(), queue, offset: end / 2 };
                let (reply, _) = write(&running, cmd).await;
                assert!(matches!(reply, GroupReply::OffsetCommitted | GroupReply::Rejected { .. }), "{reply:?}");
            }
        }
    };
    let (_, ()) = futures::join!(futures::future::join_all((0..WRITERS).map(writer)), committer);
    for (cmd, reply, index) in written.into_inner().unwrap() {
        record(&mut acked, &cmd, &reply);
        last = last.max(index);
    }
    assert!(last > interval, "log reached {last}");
    for h in &running {
        wait_applied(h, last).await;
    }

    // Retention: only the checkpoint at 4,096 is above the trim point (0: the group held no
    // message at its first entry). Every message up to it is old at u64::MAX, none at 0.
    let leader_host = leading_host(&running).expect("a leader");
    assert_eq!(leader_host.trim_candidate(GROUP, 0, &RetentionPolicy::default()).unwrap(), None);
    let candidate = leader_host.trim_candidate(GROUP, u64::MAX, &RetentionPolicy::default()).unwrap();
    assert_eq!(candidate, Some(interval));
    let (reply, trim_index) = write(&running, GroupCommand::Trim { up_to_log_index: interval }).await;
    assert_eq!(reply, GroupReply::Trimmed { up_to_log_index: interval });
    last = last.max(trim_index);

    // Every running replica, once it applied the trim: snapshot, then purge up to it.
    for h in &running {
        wait_applied(h, trim_index).await;
        let raft = h.group(GROUP).unwrap();
        raft.trigger().snapshot().await.unwrap();
        raft.wait(Some(WAIT)).metrics(|m| m.snapshot.is_some_and(|s| s.index == interval), "snapshot at the trim point").await.unwrap();
        raft.trigger().purge_log(interval).await.unwrap();
        raft.wait(Some(WAIT)).metrics(|m| m.purged.is_some_and(|p| p.index >= interval), "log purged").await.unwrap();
        assert!(h.store().durable_applied_index(GROUP).unwrap() >= trim_index, "purged no further than the store's durable point");
    }
    assert!(interval > stopped_at, "purged past the stopped follower's position");
    // A few more entries after the purge: the follower needs them from the log.
    for i in ENTRIES..ENTRIES + 10 {
        let cmd = send(i);
        let (reply, index) = write(&running, cmd.clone()).await;
        record(&mut acked, &cmd, &reply);
        last = index;
    }

    // The follower restarts on its directory and address.
    hosts[stopped] = Some(GroupHost::start(&common::host_options(stopped_id, dirs[stopped].path(), stopped_addr)).await.unwrap());
    let follower = hosts[stopped].as_ref().unwrap();
    // Reopened as a restarted broker does, before it has the map: with the options recorded here.
    follower.open_group(GROUP, None).await.unwrap();
    wait_applied(follower, last).await;
    let m = follower.group(GROUP).unwrap().metrics().borrow_watched().clone();
    assert_eq!(m.snapshot.map(|s| s.index), Some(interval), "it caught up by the snapshot");
    let all: Vec<&GroupHost> = hosts.iter().flatten().collect();
    for h in &all {
        wait_applied(h, last).await;
    }

    // Same offsets, same messages, same digests everywhere.
    let reference = offsets(all[0]);
    assert_eq!(reference.2, Some(interval));
    let checkpoint = all[0].store().checkpoint(GROUP, interval).unwrap().expect("the trim point's checkpoint");
    let starts: Vec<u64> = reference.0.iter().map(|(s, _)| *s).collect();
    let at_checkpoint: BTreeMap<u32, u64> = checkpoint.next_offsets.iter().copied().collect();
    assert_eq!(starts, (0..QUEUES).map(|q| at_checkpoint.get(&q).copied().unwrap_or(0)).collect::<Vec<_>>());
    assert!(starts.iter().all(|&s| s > 0), "every queue was trimmed: {starts:?}");
    assert!(reference.1.iter().any(|o| o.is_some_and(|o| o > 0)), "some consumer progress: {:?}", reference.1);
    let reads = read_all(all[0]).await;
    for (q, messages) in &reads {
        let (start, next) = reference.0[*q as usize];
        assert_eq!(
            messages.iter().map(|m| m.offset).collect::<Vec<_>>(),
            (start..next).collect::<Vec<_>>(),
            "queue {q} holds exactly [start, next)"
        );
        assert!(messages.iter().all(|m| m.log_index > interval), "nothing up to the trim point is held");
        for m in messages {
            if let Some(want) = acked.get(&(*q, m.offset)) {
                assert_eq!(&m.message, want, "queue {q} offset {}", m.offset);
            }
        }
    }
    let acked_held = acked.keys().filter(|(q, o)| *o >= reference.0[*q as usize].0).count();
    assert!(acked_held > 300, "{acked_held} acknowledged messages held");
    for h in &all {
        assert_eq!(offsets(h), reference, "broker {}", h.id());
        assert_eq!(read_all(h).await, reads, "broker {} reads the same bytes at the same offsets", h.id());
        for q in 0..QUEUES {
            let digest = h.queue_digest(GROUP, q, last).await.unwrap();
            assert_eq!(digest, all[0].queue_digest(GROUP, q, last).await.unwrap(), "broker {} queue {q}", h.id());
            let (start, next) = reference.0[q as usize];
            assert_eq!(digest.0, next - start);
        }
        // A read from below the start offset starts at it.
        let first = h.read_queue(GROUP, 0, 0, 1, usize::MAX).await.unwrap();
        assert_eq!(first.first().map(|m| m.offset), Some(reference.0[0].0));
    }

    // Every acknowledged message from the start offsets on is held, at its offset.
    for ((q, o), want) in acked.range(..) {
        if *o >= reference.0[*q as usize].0 {
            let held = reads[q].get((o - reference.0[*q as usize].0) as usize).map(|m| (m.offset, &m.message));
            assert_eq!(held, Some((*o, want)), "acknowledged queue {q} offset {o}");
        }
    }

    // New sends get the next offsets, the same on every replica.
    let mut expect_next: Vec<u64> = reference.0.iter().map(|(_, n)| *n).collect();
    let mut index = 0;
    for i in ENTRIES + 10..ENTRIES + 15 {
        let cmd = send(i);
        let (reply, at) = write(&all, cmd.clone()).await;
        let GroupReply::Sent { offsets: placed } = &reply else { panic!("{reply:?}") };
        for (q, o) in placed {
            assert_eq!(*o, expect_next[*q as usize], "queue {q} goes on densely after the trim and the catch-up");
            expect_next[*q as usize] += 1;
        }
        record(&mut acked, &cmd, &reply);
        index = at;
    }
    for h in &all {
        wait_applied(h, index).await;
    }
    let reference = offsets(all[0]);
    assert_eq!(reference.0.iter().map(|(_, n)| *n).collect::<Vec<_>>(), expect_next);
    let reads = read_all(all[0]).await;
    for h in &all {
        assert_eq!(offsets(h), reference, "broker {} after more sends", h.id());
        assert_eq!(read_all(h).await, reads, "broker {} after more sends", h.id());
    }
    for h in hosts.into_iter().flatten() {
        h.shutdown().await.unwrap();
    }
}

//! Three brokers (`GroupHost`s), each hosting a replica of every one of several queue groups on
//! one shared raft-log engine and one shared RocksDB store: writes to all groups land with dense
//! offsets on every replica; a broker that restarts on its data directory reopens every group
//! from disk, rejoins, and catches up.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use broker::host::{GroupHost, QueueRaft};
use broker::options::{STORE_FLUSH_FILE, STORE_FLUSHED_FILE};
use broker::queue::{GroupCommand, GroupReply, NewMessage, QueueGroupOptions};
use broker::raft::{BrokerId, BrokerNode, GroupId};

const GROUPS: u64 = 6;
const QUEUES: u32 = 2;
const WAIT: Duration = Duration::from_secs(30);

fn send(n: usize, tag: &str) -> GroupCommand {
    let messages = (0..n)
        .map(|i| NewMessage {
            queue: i as u32 % QUEUES,
            message_id: format!("{tag}-{i}"),
            tag: None,
            keys: vec![],
            properties: vec![],
            body: format!("{tag} body {i}").into_bytes(),
            ..NewMessage::default()
        })
        .collect();
    GroupCommand::Send { store_time_ms: 1, messages }
}

/// Writes through whichever replica leads `group`, retrying while leadership settles.
async fn write(hosts: &[&GroupHost], group: GroupId, cmd: GroupCommand) -> Vec<(u32, u64)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let rafts: Vec<QueueRaft> = hosts.iter().filter_map(|h| h.group(group)).collect();
        for raft in &rafts {
            let m = raft.metrics().borrow_watched().clone();
            if m.current_leader == Some(m.id) && m.last_quorum_acked.is_some() {
                match raft.client_write(cmd.clone()).await {
                    Ok(resp) => match resp.response() {
                        GroupReply::Sent { offsets } => return offsets.clone(),
                        other => panic!("group {group}: unexpected reply {other:?}"),
                    },
                    Err(e) => tracing::debug!(group, error = %e, "write refused, retrying"),
                }
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "group {group}: no writable leader within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_same_offsets(hosts: &[&GroupHost], group: GroupId, want: &BTreeMap<u32, u64>) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let all = hosts.iter().all(|h| (0..QUEUES).all(|q| h.store().next_offset(group, q).ok() == want.get(&q).copied()));
        if all {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            let states: Vec<String> = hosts
                .iter()
                .map(|h| {
                    let m = h.group(group).map(|r| r.metrics().borrow_watched().clone());
                    let offsets: Vec<_> = (0..QUEUES).map(|q| h.store().next_offset(group, q).ok()).collect();
                    format!(
                        "broker {}: offsets {offsets:?} {}",
                        h.id(),
                        m.map(|m| format!(
                            "leader {:?} last_log {:?} applied {:?} replication {:?}",
                            m.current_leader, m.last_log_index, m.last_applied, m.replication
                        ))
                        .unwrap_or_default()
                    )
                })
                .collect();
            panic!("group {group}: replicas did not reach offsets {want:?}:\n{}", states.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

use openraft::type_config::async_runtime::watch::WatchReceiver;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_share_engine_and_store_across_groups_and_a_restarted_host_catches_up() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let h1 = GroupHost::start(&common::host_options(1, dirs[0].path(), any)).await.unwrap();
    let h2 = GroupHost::start(&common::host_options(2, dirs[1].path(), any)).await.unwrap();
    let h3 = GroupHost::start(&common::host_options(3, dirs[2].path(), any)).await.unwrap();
    let members: BTreeMap<BrokerId, BrokerNode> = [&h1, &h2, &h3].iter().map(|h| (h.id(), h.node())).collect();
    for g in 1..=GROUPS {
        for h in [&h1, &h2, &h3] {
            h.open_group(g, None).await.unwrap();
        }
        // Leaders start spread over the brokers.
        [&h1, &h2, &h3][g as usize % 3].group(g).unwrap().initialize(members.clone()).await.unwrap();
    }

    let mut expected: BTreeMap<GroupId, BTreeMap<u32, u64>> = BTreeMap::new();
    for g in 1..=GROUPS {
        let offsets = write(&[&h1, &h2, &h3], g, send(5, "a")).await;
        assert_eq!(offsets, vec![(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)], "group {g}: dense offsets per queue from 0");
        expected.insert(g, BTreeMap::from([(0, 3), (1, 2)]));
    }
    for g in 1..=GROUPS {
        wait_same_offsets(&[&h1, &h2, &h3], g, &expected[&g]).await;
    }

    // Broker 2 restarts on its directory and address, reopening what it finds on disk.
    let addr2: SocketAddr = h2.node().raft_addr.parse().unwrap();
    h2.shutdown().await.unwrap();
    // The store stays open (and locked) until the host is dropped.
    drop(h2);
    for g in 1..=GROUPS {
        let offsets = write(&[&h1, &h3], g, send(3, "b")).await;
        assert_eq!(offsets, vec![(0, 3), (1, 2), (0, 4)], "group {g}: offsets go on while broker 2 is down");
        expected.insert(g, BTreeMap::from([(0, 5), (1, 3)]));
    }
    let h2 = GroupHost::start(&common::host_options(2, dirs[1].path(), addr2)).await.unwrap();
    assert_eq!(h2.groups_on_disk(), (1..=GROUPS).collect::<Vec<_>>());
    for g in h2.groups_on_disk() {
        h2.open_group(g, None).await.unwrap();
    }
    for g in 1..=GROUPS {
        wait_same_offsets(&[&h1, &h2, &h3], g, &expected[&g]).await;
    }
    // Every replica reads every message back at its offset, byte for byte, in send order.
    let want: BTreeMap<u32, Vec<String>> = BTreeMap::from([(0, vec!["a-0", "a-2", "a-4", "b-0", "b-2"]), (1, vec!["a-1", "a-3", "b-1"])])
        .into_iter()
        .map(|(q, ids)| (q, ids.into_iter().map(String::from).collect()))
        .collect();
    for h in [&h1, &h2, &h3] {
        for g in 1..=GROUPS {
            for (q, ids) in &want {
                let read = h.read_queue(g, *q, 0, 100, usize::MAX).await.unwrap();
                let got: Vec<(u64, String, Vec<u8>)> =
                    read.iter().map(|m| (m.offset, m.message.message_id.clone(), m.message.body.clone())).collect();
                let expected: Vec<(u64, String, Vec<u8>)> = ids
                    .iter()
                    .enumerate()
                    .map(|(o, id)| {
                        let (tag, i) = id.split_once('-').unwrap();
                        (o as u64, id.clone(), format!("{tag} body {i}").into_bytes())
                    })
                    .collect();
                assert_eq!(got, expected, "broker {} group {g} queue {q}", h.id());
            }
            let tail = h.read_queue(g, 0, 3, 100, usize::MAX).await.unwrap();
            assert_eq!(tail.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![3, 4], "reads start at the asked offset");
        }
    }
    for h in [h1, h2, h3] {
        h.shutdown().await.unwrap();
    }
}

/// A group's options are recorded with its replica when it is first opened with them, and a
/// restarted broker (which reopens its groups before it has the cluster map) applies with the
/// recorded ones; a map that says otherwise is refused rather than followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_group_applies_with_the_options_it_was_created_with() {
    const GROUP: GroupId = 7;
    let every_3 = QueueGroupOptions { checkpoint_interval_entries: 3 };
    let dir = tempfile::tempdir().unwrap();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let host = GroupHost::start(&common::host_options(1, dir.path(), any)).await.unwrap();
    host.open_group(GROUP, Some(every_3)).await.unwrap();
    host.group(GROUP).unwrap().initialize(BTreeMap::from([(host.id(), host.node())])).await.unwrap();
    for _ in 0..10 {
        write(&[&host], GROUP, send(1, "a")).await;
    }
    let before = host.store().checkpoint_indexes(GROUP).unwrap();
    let last_before = host.group(GROUP).unwrap().metrics().borrow_watched().last_applied.unwrap().index;
    assert!(!before.is_empty() && before.iter().all(|i| i % 3 == 0), "checkpoints every 3 entries: {before:?}");
    host.shutdown().await.unwrap();
    drop(host);

    let host = GroupHost::start(&common::host_options(1, dir.path(), any)).await.unwrap();
    host.open_group(GROUP, None).await.unwrap();
    for _ in 0..10 {
        write(&[&host], GROUP, send(1, "b")).await;
    }
    let after = host.store().checkpoint_indexes(GROUP).unwrap();
    assert!(after.iter().any(|&i| i > last_before), "entries applied after the restart record checkpoints: {after:?}");
    assert!(after.iter().all(|i| i % 3 == 0), "still every 3 entries after the restart: {after:?}");
    host.shutdown().await.unwrap();
    drop(host);

    let host = GroupHost::start(&common::host_options(1, dir.path(), any)).await.unwrap();
    let err = host.open_group(GROUP, Some(QueueGroupOptions { checkpoint_interval_entries: 5 })).await.unwrap_err();
    assert!(err.to_string().contains("checkpoint every 3 entries, but the group was created with 5"), "{err}");
    assert!(host.group(GROUP).is_none(), "a refused group is not opened");
    host.open_group(GROUP, Some(every_3)).await.unwrap();
    host.shutdown().await.unwrap();
}

/// A restarted leader must win an election before it serves, whatever the options say: the
/// state machine and the committed index are not persisted at once, so a leader restored
/// without one could answer reads from stale state (found by jepsen after a power loss).
#[tokio::test]
async fn every_group_runs_without_leader_restore() {
    let dir = tempfile::tempdir().unwrap();
    let options = common::host_options(1, dir.path(), SocketAddr::from(([127, 0, 0, 1], 0)));
    let host = GroupHost::start(&options).await.unwrap();
    assert_eq!(host.raft_config().enable_leader_restore, Some(false));
    host.shutdown().await.unwrap();
}

/// The store-flush test mode (jepsen's store-loss nemesis): a new number in the request file
/// flushes the queue store, and the number is written to the done file only after the flush,
/// so the durable applied index has caught up when the harness sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_flush_request_flushes_the_store_then_confirms() {
    const GROUP: GroupId = 3;
    let dir = tempfile::tempdir().unwrap();
    let mut options = common::host_options(1, dir.path(), SocketAddr::from(([127, 0, 0, 1], 0)));
    options.testing.store_flush_file = true;
    let (request, done) = (options.testing_file(STORE_FLUSH_FILE), options.testing_file(STORE_FLUSHED_FILE));
    let host = GroupHost::start(&options).await.unwrap();
    host.open_group(GROUP, None).await.unwrap();
    host.group(GROUP).unwrap().initialize(BTreeMap::from([(host.id(), host.node())])).await.unwrap();
    for _ in 0..5 {
        write(&[&host], GROUP, send(1, "a")).await;
    }
    let applied = host.store().applied_index(GROUP).unwrap();
    assert!(host.store().durable_applied_index(GROUP).is_none_or(|d| d < applied), "nothing flushed yet");
    assert!(!done.exists(), "no request, no confirmation");
    for n in ["1", "2"] {
        let applied = host.store().applied_index(GROUP).unwrap();
        std::fs::write(&request, n).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_to_string(&done).ok().as_deref() != Some(n) {
            assert!(std::time::Instant::now() < deadline, "flush request {n} not confirmed within 10 s");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(host.store().durable_applied_index(GROUP).is_some_and(|d| d >= applied), "request {n}: the store was flushed");
        write(&[&host], GROUP, send(1, "b")).await;
    }
    host.shutdown().await.unwrap();
}

//! The leader's send path over three real hosts: concurrent sends share Raft entries and get
//! distinct dense offsets; past the in-flight bound sends are refused `Busy` and nothing refused
//! is stored; on a follower a send is refused `NotLeader` with the leader named.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use broker::host::GroupHost;
use broker::queue::{NewMessage, SendBatchLimits, SendBatcher, SendError};
use broker::raft::{BrokerId, BrokerNode};
use openraft::type_config::async_runtime::watch::WatchReceiver;

const GROUP: u64 = 3;
const WAIT: Duration = Duration::from_secs(30);

fn message(id: &str) -> NewMessage {
    NewMessage {
        queue: 0,
        message_id: id.to_string(),
        tag: None,
        keys: vec![],
        properties: vec![],
        body: id.as_bytes().to_vec(),
        ..NewMessage::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_share_entries_get_dense_offsets_and_are_bounded() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut hosts = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        hosts.push(GroupHost::start(&common::host_options(i as u64 + 1, d.path(), SocketAddr::from(([127, 0, 0, 1], 0)))).await.unwrap());
    }
    let members: BTreeMap<BrokerId, BrokerNode> = hosts.iter().map(|h| (h.id(), h.node())).collect();
    for h in &hosts {
        h.open_group(GROUP, None).await.unwrap();
    }
    hosts[0].group(GROUP).unwrap().initialize(members).await.unwrap();
    let m = hosts[0].group(GROUP).unwrap().wait(Some(WAIT)).metrics(|m| m.current_leader.is_some(), "leader").await.unwrap();
    let leader_id = m.current_leader.unwrap();
    let leader = hosts.iter().find(|h| h.id() == leader_id).unwrap();
    let raft = leader.group(GROUP).unwrap();
    raft.wait(Some(WAIT)).metrics(|m| m.last_quorum_acked.is_some(), "lease").await.unwrap();

    // 64 concurrent sends of one message each.
    let batcher = SendBatcher::start(raft.clone(), SendBatchLimits { wait_max: Duration::from_millis(5), ..SendBatchLimits::default() });
    let log_before = raft.metrics().borrow_watched().last_log_index.unwrap_or(0);
    let sends: Vec<_> = (0..64)
        .map(|i| {
            let b = batcher.clone();
            tokio::spawn(async move { b.send(vec![message(&format!("a{i}"))]).await })
        })
        .collect();
    let mut offsets = BTreeSet::new();
    for s in sends {
        let got = s.await.unwrap().expect("send stored");
        assert_eq!(got.len(), 1);
        assert!(offsets.insert(got[0]), "offset {:?} given twice", got[0]);
    }
    assert_eq!(offsets, (0..64).map(|o| (0u32, o)).collect(), "dense offsets 0..64 on queue 0");
    let entries_used = raft.metrics().borrow_watched().last_log_index.unwrap_or(0) - log_before;
    assert!(entries_used < 64, "64 concurrent sends took {entries_used} entries: no batching");

    // A tight in-flight bound: some sends are refused Busy, the others are stored, none twice.
    let tight = SendBatcher::start(
        raft.clone(),
        SendBatchLimits { in_flight_messages_max: 8, wait_max: Duration::from_millis(50), ..SendBatchLimits::default() },
    );
    let sends: Vec<_> = (0..50)
        .map(|i| {
            let b = tight.clone();
            tokio::spawn(async move { (i, b.send(vec![message(&format!("b{i}"))]).await) })
        })
        .collect();
    let (mut stored, mut busy) = (BTreeMap::new(), 0);
    for s in sends {
        match s.await.unwrap() {
            (i, Ok(o)) => {
                stored.insert(o[0].1, format!("b{i}"));
            }
            (_, Err(SendError::Busy { in_flight_max: 8 })) => busy += 1,
            (_, Err(e)) => panic!("unexpected {e}"),
        }
    }
    assert!(busy > 0, "50 sends against a bound of 8 in flight were never refused");
    assert_eq!(stored.len() + busy, 50);
    assert_eq!(
        stored.keys().copied().collect::<Vec<_>>(),
        (64..64 + stored.len() as u64).collect::<Vec<_>>(),
        "stored sends are dense after the first 64"
    );
    let read = leader.read_queue(GROUP, 0, 64, 100, usize::MAX).await.unwrap();
    let read: BTreeMap<u64, String> = read.into_iter().map(|m| (m.offset, m.message.message_id)).collect();
    assert_eq!(read, stored, "exactly the stored sends are in the queue, at their offsets");

    // On a follower: refused, with the leader named.
    let follower = hosts.iter().find(|h| h.id() != leader_id).unwrap();
    let on_follower = SendBatcher::start(follower.group(GROUP).unwrap(), SendBatchLimits::default());
    assert_eq!(on_follower.send(vec![message("c")]).await, Err(SendError::NotLeader { leader: Some(leader_id) }));
    // Too large for one entry: refused before anything is queued.
    let too_many: Vec<NewMessage> = (0..257).map(|i| message(&format!("d{i}"))).collect();
    assert!(matches!(batcher.send(too_many).await, Err(SendError::TooLarge { messages: 257, .. })));

    // Entries are bounded by whole messages, not bodies: keys count as much as a body does.
    const ENTRY_BYTES: usize = 16 << 10;
    let wide = |id: String| NewMessage { keys: vec!["k".repeat(1024); 4], body: vec![], ..message(&id) };
    let bounded = SendBatcher::start(
        raft.clone(),
        SendBatchLimits { entry_bytes_max: ENTRY_BYTES, wait_max: Duration::from_millis(20), ..SendBatchLimits::default() },
    );
    let too_wide: Vec<NewMessage> = (0..4).map(|i| wide(format!("e{i}"))).collect();
    let too_wide_bytes: usize = too_wide.iter().map(NewMessage::encoded_bytes).sum();
    assert!(too_wide_bytes > ENTRY_BYTES && too_wide.iter().all(|m| m.body.is_empty()));
    assert!(
        matches!(bounded.send(too_wide).await, Err(SendError::TooLarge { messages: 4, bytes, .. }) if bytes == too_wide_bytes),
        "a send of empty bodies whose keys exceed one entry is refused whole"
    );
    let first = 64 + stored.len() as u64;
    let sends: Vec<_> = (0..48)
        .map(|i| {
            let b = bounded.clone();
            tokio::spawn(async move { b.send(vec![wide(format!("f{i}"))]).await })
        })
        .collect();
    for s in sends {
        s.await.unwrap().expect("wide send stored");
    }
    let read = leader.read_queue(GROUP, 0, first, 100, usize::MAX).await.unwrap();
    assert_eq!(read.len(), 48);
    let mut per_entry: BTreeMap<u64, usize> = BTreeMap::new();
    for m in &read {
        *per_entry.entry(m.log_index).or_default() += m.message.encoded_bytes();
    }
    assert!(per_entry.values().all(|&b| b <= ENTRY_BYTES), "an entry over {ENTRY_BYTES} bytes of messages: {per_entry:?}");

    // A caller that stops waiting (a deadline) is counted as abandoning its send.
    let metrics = broker::metrics::BrokerMetrics::new();
    let watched = SendBatcher::start_with_metrics(raft.clone(), SendBatchLimits::default(), metrics.send_path());
    let gave_up = tokio::time::timeout(Duration::ZERO, watched.send(vec![message("g")])).await;
    assert!(gave_up.is_err(), "a send cannot be answered before its first poll returns");
    let text = metrics.encode().unwrap();
    assert!(text.lines().any(|l| l == "raftmq_send_refused_total{reason=\"abandoned\"} 1"), "{text}");

    for h in hosts {
        h.shutdown().await.unwrap();
    }
}

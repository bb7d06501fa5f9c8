//! Multi-process fault tests: real `raftmq broker` processes on their own loopback hosts, real
//! gRPC between them, real fsync. What a user relies on: an acknowledged message survives
//! `kill -9` of its group's leader and a restart of the whole cluster, at the offset it was
//! acknowledged with, byte for byte, on every replica; and a broker that was down while
//! retention purged the log past it catches up (by snapshot) to the same messages.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::raftmq::v1::send_request::Target;
use proto::raftmq::v1::status::Code;
use proto::raftmq::v1::{
    ClusterStatusRequest, CommitOffsetRequest, CreateTopicRequest, DescribeTopicRequest, FetchRequest, GetOffsetRequest,
    GroupChecksumRequest, GroupStatus, Message, MoveLeaderReply, MoveLeaderRequest, SendRequest, Topic,
};
use support::{Cluster, code, replica};

/// Raft timing for loopback: a dead leader is replaced within about a second.
const FAST_RAFT: &str = "[raft]\nheartbeat_interval_ms = 100\nelection_timeout_min_ms = 500\nelection_timeout_max_ms = 1000\n";
const TOPIC: &str = "payments";
const QUEUES: u32 = 2;
/// Every loop of a test stops by this deadline.
const TEST_DEADLINE: Duration = Duration::from_secs(240);

#[derive(Default)]
struct History {
    /// Acknowledged: body → (queue, offset).
    acked: HashMap<String, (u32, u64)>,
    /// Answered with a status that guarantees nothing was stored (NOT_LEADER, BUSY).
    refused: HashSet<String>,
    /// No answer, or UNAVAILABLE: the message may or may not be stored.
    unknown: HashSet<String>,
}

/// Creates [`TOPIC`]; `checkpoint_interval_entries` 0 takes the default.
async fn create_topic(cluster: &Cluster, checkpoint_interval_entries: u64) {
    let mut admin = cluster.brokers[0].admin().await;
    let topic = Topic { name: TOPIC.into(), queue_count: QUEUES, replication_factor: 3, message_type: 0, checkpoint_interval_entries };
    let r = admin.create_topic(CreateTopicRequest { topic: Some(topic) }).await.expect("create topic").into_inner();
    assert_eq!(code(&r.status), Code::Ok, "{:?}", r.status);
    let want = if checkpoint_interval_entries == 0 { 4096 } else { checkpoint_interval_entries };
    assert_eq!(r.topic.map(|t| t.checkpoint_interval_entries), Some(want));
}

/// The leader of `queue`'s group, as the cluster reports it (polling until one is known).
async fn leader_of(cluster: &Cluster, queue: u32) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for b in &cluster.brokers {
            let mut admin = b.admin().await;
            if let Ok(r) = admin.describe_topic(DescribeTopicRequest { name: TOPIC.into() }).await {
                let r = r.into_inner();
                if let Some(q) = r.queues.iter().find(|q| q.queue_id == queue && q.leader_broker_id != 0) {
                    return q.leader_broker_id;
                }
            }
        }
        assert!(Instant::now() < deadline, "no leader for queue {queue}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `total` single-message sends from `concurrency` workers, each through a broker chosen
/// round-robin, retrying a failed value with a new body (so every attempt is told apart);
/// records every outcome.
async fn load(endpoints: &[std::net::SocketAddr], total: u64, concurrency: usize, acked_count: Arc<AtomicU64>) -> History {
    load_values(endpoints, 0, total, concurrency, acked_count).await
}

/// [`load`] of values `first..first + total`, without a shared count.
async fn load_from(endpoints: &[std::net::SocketAddr], first: u64, total: u64, concurrency: usize) -> History {
    load_values(endpoints, first, total, concurrency, Arc::new(AtomicU64::new(0))).await
}

async fn load_values(
    endpoints: &[std::net::SocketAddr],
    first: u64,
    total: u64,
    concurrency: usize,
    acked_count: Arc<AtomicU64>,
) -> History {
    let total = first + total;
    let history = Arc::new(Mutex::new(History::default()));
    let next = Arc::new(AtomicU64::new(first));
    let clients: Vec<_> = endpoints.iter().map(|&a| support::queue_client(a)).collect();
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let (history, next, clients, acked_count) = (history.clone(), next.clone(), clients.clone(), acked_count.clone());
            tokio::spawn(async move {
                let mut pick = w;
                loop {
                    let value = next.fetch_add(1, Ordering::Relaxed);
                    if value >= total {
                        return;
                    }
                    for attempt in 0..200u32 {
                        assert!(started.elapsed() < TEST_DEADLINE, "load did not finish within {TEST_DEADLINE:?}");
                        let body = format!("v{value}-a{attempt}");
                        pick += 1;
                        let mut client = clients[pick % clients.len()].clone();
                        let req = SendRequest {
                            topic: TOPIC.into(),
                            target: Some(Target::QueueId((value % u64::from(QUEUES)) as u32)),
                            messages: vec![Message { body: body.clone().into_bytes().into(), ..Default::default() }],
                            producer_id: String::new(),
                        };
                        let outcome = client.send(req).await;
                        let acknowledged = {
                            let mut h = history.lock().unwrap();
                            match outcome {
                                Ok(r) => {
                                    let r = r.into_inner();
                                    match code(&r.status) {
                                        Code::Ok => {
                                            assert_eq!(r.results.len(), 1);
                                            h.acked.insert(body, (r.results[0].queue_id, r.results[0].offset));
                                            acked_count.fetch_add(1, Ordering::Relaxed);
                                            true
                                        }
                                        Code::NotLeader | Code::Busy | Code::Unavailable => !h.refused.insert(body),
                                        Code::OutcomeUnknown => !h.unknown.insert(body),
                                        other => panic!("send refused with {other:?}: {:?}", r.status),
                                    }
                                }
                                Err(_) => {
                                    h.unknown.insert(body);
                                    false
                                }
                            }
                        };
                        if acknowledged {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("load worker");
    }
    Arc::try_unwrap(history).ok().expect("workers done").into_inner().unwrap()
}

/// Every message of `queue` that the replica on `broker` holds up to `end`, by offset: from the
/// queue's start offset (0 unless retention removed messages), dense.
async fn read_all(cluster: &Cluster, broker: usize, queue: u32, end: u64) -> BTreeMap<u64, String> {
    let mut client = cluster.brokers[broker].queue().await;
    let mut out = BTreeMap::new();
    let mut next = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while next < end {
        assert!(Instant::now() < deadline, "broker {} did not serve queue {queue} up to {end}", broker + 1);
        let r = match client
            .fetch(FetchRequest { topic: TOPIC.into(), queue_id: queue, offset: next, max_messages: 1000, ..Default::default() })
            .await
        {
            Ok(r) => r.into_inner(),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if code(&r.status) != Code::Ok || r.messages.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        for m in r.messages {
            // The first read (or one overtaken by a trim) starts at the start offset.
            assert!(m.offset == next || (out.is_empty() && m.offset > next && m.offset <= r.start_offset), "offsets are dense");
            next = m.offset + 1;
            out.insert(m.offset, String::from_utf8(m.message.expect("message").body.to_vec()).expect("utf-8 body"));
        }
    }
    out
}

/// The end offset of every queue, from the leaders.
async fn end_offsets(cluster: &Cluster) -> BTreeMap<u32, u64> {
    let mut admin = cluster.brokers[0].admin().await;
    let r = admin.describe_topic(DescribeTopicRequest { name: TOPIC.into() }).await.expect("describe").into_inner();
    assert_eq!(code(&r.status), Code::Ok);
    r.queues.iter().map(|q| (q.queue_id, q.end_offset)).collect()
}

/// Checks the history against every replica: each acknowledged message exactly once, at its
/// offset, on every replica; nothing refused stored; nothing stored that was never sent. Returns
/// each queue's start offset: messages below it were removed by retention (the same on every
/// replica), and only those may be missing.
async fn check(cluster: &Cluster, history: &History) -> BTreeMap<u32, u64> {
    let ends = end_offsets(cluster).await;
    let mut starts = BTreeMap::new();
    for q in 0..QUEUES {
        let end = ends[&q];
        let mut replicas = Vec::new();
        for b in 0..cluster.brokers.len() {
            replicas.push(read_all(cluster, b, q, end).await);
        }
        // A trim may be applied on one replica and not yet on another: compare what all hold.
        let start = replicas.iter().map(|r| r.keys().next().copied().unwrap_or(end)).max().unwrap_or(0);
        let held = |r: &BTreeMap<u64, String>| r.range(start..).map(|(o, b)| (*o, b.clone())).collect::<Vec<_>>();
        let stored = held(&replicas[0]);
        assert_eq!(stored.len() as u64, end - start, "queue {q} holds {start}..{end}");
        for (b, r) in replicas.iter().enumerate().skip(1) {
            assert!(held(r) == stored, "replica on broker {} differs from broker 1 on queue {q}", b + 1);
        }
        let mut seen = HashSet::new();
        for (offset, body) in &stored {
            assert!(seen.insert(body.clone()), "{body} stored twice on queue {q}");
            assert!(!history.refused.contains(body), "{body} was refused but is stored at {q}/{offset}");
            assert!(history.acked.contains_key(body) || history.unknown.contains(body), "{body} at {q}/{offset} was never sent");
        }
        for (body, (queue, offset)) in history.acked.iter().filter(|(_, (queue, o))| *queue == q && *o >= start) {
            let at = stored.get((offset - start) as usize).map(|(_, b)| b.as_str());
            assert_eq!(at, Some(body.as_str()), "acknowledged {body} missing at {queue}/{offset}");
        }
        starts.insert(q, start);
    }
    let mut admin = cluster.brokers[0].admin().await;
    let described = admin.describe_topic(DescribeTopicRequest { name: TOPIC.into() }).await.expect("describe").into_inner();
    for q in described.queues {
        let r = admin.group_checksum(GroupChecksumRequest { group_id: q.group_id, applied_index: 0 }).await.expect("checksum").into_inner();
        assert_eq!(code(&r.status), Code::Ok, "{:?}", r.status);
        assert_eq!(r.replicas.len(), 3);
        assert!(r.replicas.iter().all(|x| x.error.is_none()), "{:?}", r.replicas);
        assert!(r.replicas.windows(2).all(|w| w[0].digest == w[1].digest), "replicas of group {} differ: {:?}", q.group_id, r.replicas);
    }
    starts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_sends_survive_kill9_of_the_leader_mid_load() {
    let mut cluster = Cluster::start(3, FAST_RAFT).await;
    create_topic(&cluster, 0).await;
    let victim = leader_of(&cluster, 0).await as usize - 1;

    let acked = Arc::new(AtomicU64::new(0));
    const TOTAL: u64 = 10_000;
    // The load runs on its own task while this one kills and restarts the leader.
    let load_task = {
        let (acked, endpoints) = (acked.clone(), endpoints(&cluster));
        tokio::spawn(async move { load(&endpoints, TOTAL, 32, acked).await })
    };
    let deadline = Instant::now() + TEST_DEADLINE;
    while acked.load(Ordering::Relaxed) < TOTAL * 3 / 10 {
        assert!(Instant::now() < deadline, "load stalled before the kill");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.brokers[victim].kill9();
    let killed_at = acked.load(Ordering::Relaxed);
    // The survivors keep acknowledging: a new leader took over.
    while acked.load(Ordering::Relaxed) < killed_at + TOTAL / 5 {
        assert!(Instant::now() < deadline, "no progress after killing broker {}", victim + 1);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.brokers[victim].start();
    let history = load_task.await.expect("load");
    assert_eq!(history.acked.len() as u64, TOTAL);
    cluster.wait_ready().await;
    let starts = check(&cluster, &history).await;
    assert!(starts.values().all(|&s| s == 0), "nothing removed without retention: {starts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_cluster_restart_keeps_messages_and_consumer_offsets() {
    let mut cluster = Cluster::start(3, FAST_RAFT).await;
    create_topic(&cluster, 0).await;
    let history = load(&endpoints(&cluster), 1_000, 8, Arc::new(AtomicU64::new(0))).await;
    let mut client = cluster.brokers[1].queue().await;
    for q in 0..QUEUES {
        let r = client
            .commit_offset(CommitOffsetRequest {
                consumer_group: "ledger".into(),
                topic: TOPIC.into(),
                queue_id: q,
                offset: 100 + u64::from(q),
            })
            .await
            .expect("commit")
            .into_inner();
        assert_eq!(code(&r.status), Code::Ok, "{:?}", r.status);
    }

    // Every process dies at once, nothing flushed on the way out.
    for b in &mut cluster.brokers {
        b.kill9();
    }
    for b in &mut cluster.brokers {
        b.start();
    }
    cluster.wait_ready().await;
    let starts = check(&cluster, &history).await;
    assert!(starts.values().all(|&s| s == 0), "nothing removed without retention: {starts:?}");
    for b in &cluster.brokers {
        let mut client = b.queue().await;
        for q in 0..QUEUES {
            let deadline = Instant::now() + Duration::from_secs(30);
            let offset = loop {
                let r = client
                    .get_offset(GetOffsetRequest { consumer_group: "ledger".into(), topic: TOPIC.into(), queue_id: q })
                    .await
                    .map(|r| r.into_inner());
                match r {
                    Ok(r) if code(&r.status) == Code::Ok => break r.offset,
                    _ => {
                        assert!(Instant::now() < deadline, "no consumer offset from broker {}", b.id);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            };
            assert_eq!(offset, Some(100 + u64::from(q)), "consumer offset of queue {q} through broker {}", b.id);
        }
    }
}

/// Retention that keeps at most 256 entries per group, checked every 200 ms; with a checkpoint
/// every 64 entries, a group trims, snapshots and purges every few hundred entries.
const SMALL_RETENTION: &str = "[retention]\nmax_log_entries = 256\ncheck_interval_ms = 200\n";
const SMALL_CHECKPOINT_INTERVAL: u64 = 64;

/// A follower of each group is down while the groups take thousands of sends and retention
/// trims them, snapshots and purges every running replica's log past the last entry the stopped
/// one could hold. Restarted, it can only catch up by installing a snapshot and then the log
/// after it; afterwards every replica holds the same retained messages at the same offsets (and
/// digests), and every acknowledged message above the start offset is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_down_while_the_log_is_purged_past_it_catches_up_by_snapshot() {
    let mut cluster = Cluster::start(3, &format!("{FAST_RAFT}{SMALL_RETENTION}")).await;
    create_topic(&cluster, SMALL_CHECKPOINT_INTERVAL).await;
    let mut history = load(&endpoints(&cluster), 200, 8, Arc::new(AtomicU64::new(0))).await;
    let groups: Vec<u64> = {
        let mut admin = cluster.brokers[0].admin().await;
        let r = admin.describe_topic(DescribeTopicRequest { name: TOPIC.into() }).await.expect("describe").into_inner();
        r.queues.iter().map(|q| q.group_id).collect()
    };
    // A broker leading none of the groups (two groups, three brokers): a follower in each.
    let leaders = [leader_of(&cluster, 0).await, leader_of(&cluster, 1).await];
    let down = (1..=3u64).find(|b| !leaders.contains(b)).expect("a broker that leads nothing");
    let running: Vec<usize> = (1..=3u64).filter(|&b| b != down).map(|b| b as usize - 1).collect();
    cluster.brokers[down as usize - 1].kill9();
    // Everything the stopped replica can hold is at or below its group's last log index now,
    // as the leader reports it after the kill.
    let mut stopped_at = BTreeMap::new();
    for &g in &groups {
        let s = cluster.group_status(running[0], g).await;
        stopped_at.insert(g, replica(&s, s.leader_broker_id).matched_index);
    }

    let running_endpoints: Vec<_> = running.iter().map(|&b| cluster.brokers[b].client_addr()).collect();
    let deadline = Instant::now() + TEST_DEADLINE;
    let mut round = 0u64;
    loop {
        let mut purged_past = true;
        for &g in &groups {
            let s = cluster.group_status(running[0], g).await;
            for &b in &running {
                purged_past &= replica(&s, b as u64 + 1).purged_index > stopped_at[&g];
            }
        }
        if purged_past {
            break;
        }
        assert!(Instant::now() < deadline, "logs not purged past the stopped broker within {TEST_DEADLINE:?}");
        // More sends, told apart from the earlier ones by their values.
        round += 1;
        let more = load_from(&running_endpoints, round * 100_000, 600, 16).await;
        history.acked.extend(more.acked);
        history.refused.extend(more.refused);
        history.unknown.extend(more.unknown);
    }

    cluster.brokers[down as usize - 1].start();
    cluster.wait_ready().await;
    for &g in &groups {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = cluster.group_status(running[0], g).await;
            let r = replica(&s, down);
            if r.applied_index >= s.commit_index && r.snapshot_index > stopped_at[&g] {
                break;
            }
            assert!(Instant::now() < deadline, "broker {down} did not catch up group {g}: {s:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let starts = check(&cluster, &history).await;
    assert!(starts.values().all(|&s| s > 0), "retention removed messages from every queue: {starts:?}");
}

/// Groups with no new entry for 500 ms hibernate.
const QUICK_HIBERNATION: &str = "hibernate_after_ms = 500\n";

/// The groups of [`TOPIC`], by queue.
async fn topic_groups(cluster: &Cluster) -> Vec<u64> {
    let mut admin = cluster.brokers[0].admin().await;
    let r = admin.describe_topic(DescribeTopicRequest { name: TOPIC.into() }).await.expect("describe").into_inner();
    r.queues.iter().map(|q| q.group_id).collect()
}

/// Waits until every replica of every one of `groups` reports hibernating (through `via`);
/// returns each group's status then.
async fn wait_hibernating(cluster: &Cluster, via: usize, groups: &[u64]) -> BTreeMap<u64, GroupStatus> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = BTreeMap::new();
    for &g in groups {
        loop {
            let s = cluster.group_status(via, g).await;
            if s.replicas.len() == 3 && s.replicas.iter().all(|r| r.hibernating) {
                out.insert(g, s);
                break;
            }
            assert!(Instant::now() < deadline, "group {g} did not hibernate: {s:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    out
}

/// Quiet groups hibernate on every replica, without an election; a send wakes its group and is
/// acknowledged by the same leader in the same term, at the next offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quiet_groups_hibernate_and_a_send_wakes_them_without_an_election() {
    // The raft section of FAST_RAFT continues with the hibernation key.
    let cluster = Cluster::start(3, &format!("{FAST_RAFT}{QUICK_HIBERNATION}")).await;
    create_topic(&cluster, 0).await;
    let history = load(&endpoints(&cluster), 100, 4, Arc::new(AtomicU64::new(0))).await;
    let groups = topic_groups(&cluster).await;
    let asleep = wait_hibernating(&cluster, 0, &groups).await;

    // Held well past several election timeouts: nothing campaigns while hibernating.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = wait_hibernating(&cluster, 1, &groups).await;
    for g in &groups {
        assert_eq!((still[g].leader_broker_id, still[g].term), (asleep[g].leader_broker_id, asleep[g].term), "group {g}");
    }

    let ends = end_offsets(&cluster).await;
    let more = load_from(&endpoints(&cluster), 1_000_000, 20, 1).await;
    assert_eq!(more.acked.len(), 20);
    for (body, (queue, offset)) in &more.acked {
        assert!(*offset >= ends[queue], "{body} at {queue}/{offset}, below the end {} before", ends[queue]);
    }
    for g in &groups {
        let s = cluster.group_status(2, *g).await;
        assert_eq!((s.leader_broker_id, s.term), (asleep[g].leader_broker_id, asleep[g].term), "group {g} woke without an election");
    }
    let mut all = history;
    all.acked.extend(more.acked);
    check(&cluster, &all).await;
}

/// The first send to a group that hibernated longer than its leader's lease is stored at the
/// first try: the broker waits for the woken leader to hold a lease again (a heartbeat round)
/// instead of answering NOT_LEADER with no leader, which a client that does not retry (Node's
/// RocketMQ producer) reports as a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_first_send_to_a_long_hibernating_leader_is_stored_without_a_retry() {
    let cluster = Cluster::start(3, &format!("{FAST_RAFT}{QUICK_HIBERNATION}")).await;
    create_topic(&cluster, 0).await;
    load(&endpoints(&cluster), 100, 4, Arc::new(AtomicU64::new(0))).await;
    let groups = topic_groups(&cluster).await;
    let asleep = wait_hibernating(&cluster, 0, &groups).await;
    // Held past the lease (election_timeout_max_ms = 1000): the parked leader heard no quorum.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let leader = usize::try_from(asleep[&groups[0]].leader_broker_id).expect("broker id") - 1;
    let mut queue = cluster.brokers[leader].queue().await;
    let message = Message { body: b"after a long sleep".to_vec().into(), ..Default::default() };
    let req = SendRequest { topic: TOPIC.into(), target: Some(Target::QueueId(0)), messages: vec![message], producer_id: String::new() };
    let r = queue.send(req).await.expect("answered").into_inner();
    assert_eq!(code(&r.status), Code::Ok, "{:?}", r.status);
}

/// When the broker leading hibernating groups dies, the surviving replicas notice (their
/// brokers stop getting answers to pings), wake, and elect a new leader; sends go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hibernating_groups_elect_a_new_leader_when_their_leaders_broker_dies() {
    let mut cluster = Cluster::start(3, &format!("{FAST_RAFT}{QUICK_HIBERNATION}")).await;
    create_topic(&cluster, 0).await;
    let mut history = load(&endpoints(&cluster), 100, 4, Arc::new(AtomicU64::new(0))).await;
    let groups = topic_groups(&cluster).await;
    let asleep = wait_hibernating(&cluster, 0, &groups).await;
    let victim = asleep[&groups[0]].leader_broker_id;
    let survivors: Vec<usize> = (1..=3u64).filter(|&b| b != victim).map(|b| b as usize - 1).collect();
    cluster.brokers[victim as usize - 1].kill9();

    // Without any send to wake it, the group elects a leader among the survivors.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = cluster.group_status(survivors[0], groups[0]).await;
        if s.leader_broker_id != victim && s.term > asleep[&groups[0]].term {
            break;
        }
        assert!(Instant::now() < deadline, "no new leader for hibernating group {}: {s:?}", groups[0]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let survivor_endpoints: Vec<_> = survivors.iter().map(|&b| cluster.brokers[b].client_addr()).collect();
    let more = load_from(&survivor_endpoints, 1_000_000, 50, 4).await;
    assert_eq!(more.acked.len(), 50);
    history.acked.extend(more.acked);
    history.refused.extend(more.refused);
    history.unknown.extend(more.unknown);
    cluster.brokers[victim as usize - 1].start();
    cluster.wait_ready().await;
    check(&cluster, &history).await;
}

fn endpoints(cluster: &Cluster) -> Vec<std::net::SocketAddr> {
    cluster.brokers.iter().map(|b| b.client_addr()).collect()
}

/// A broker whose Raft core of a group stops by itself (here: its disk fails every fdatasync)
/// does not sit dead behind a healthy-looking process: it stops, with a non-zero exit and a log
/// line naming the group, while the other replicas go on acknowledging; restarted on a working
/// disk it rejoins, and every replica holds the same messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_whose_raft_core_dies_stops_its_broker_loudly() {
    let config = format!("{FAST_RAFT}[testing]\nfsync_delay_file = true\n");
    let mut cluster = Cluster::start(3, &config).await;
    create_topic(&cluster, 0).await;
    let leader = leader_of(&cluster, 0).await;
    let victim = cluster.brokers.iter().position(|b| b.id != leader).expect("a follower");
    let send = |body: String| SendRequest {
        topic: TOPIC.into(),
        target: Some(Target::QueueId(0)),
        messages: vec![Message { body: body.into_bytes().into(), ..Default::default() }],
        producer_id: String::new(),
    };
    let mut client = cluster.brokers[leader as usize - 1].queue().await;
    let r = client.send(send("before".into())).await.expect("send").into_inner();
    assert_eq!(code(&r.status), Code::Ok, "{:?}", r.status);

    let control = cluster.brokers[victim].dir.join("data").join(jepsen::cluster::FSYNC_DELAY_FILE);
    std::fs::write(&control, "fail").expect("failing the victim's disk");
    // The victim's next fdatasync fails once it reads the control file (every 100 ms); sends
    // keep coming so that it has something to sync, and keep being acknowledged by the others.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut acked = 1;
    let status = loop {
        if let Some(status) = cluster.brokers[victim].exit_status() {
            break status;
        }
        assert!(Instant::now() < deadline, "broker {} still runs with a dead group", victim + 1);
        let r = client.send(send(format!("during {acked}"))).await.expect("send").into_inner();
        assert_eq!(code(&r.status), Code::Ok, "{:?}", r.status);
        acked += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!status.success(), "a broker stopped by a dead group exits non-zero: {status}");
    let log = std::fs::read_to_string(cluster.brokers[victim].log()).expect("victim log");
    assert!(log.contains("Raft core of group") && log.contains("stopped"), "the log names the dead group");

    std::fs::write(&control, "0").expect("healing the victim's disk");
    cluster.brokers[victim].start();
    cluster.wait_ready().await;
    let r = client.send(send("after".into())).await.expect("send").into_inner();
    assert_eq!(code(&r.status), Code::Ok, "{:?}", r.status);
    acked += 1;
    let mut admin = cluster.brokers[0].admin().await;
    let described = admin.describe_topic(DescribeTopicRequest { name: TOPIC.into() }).await.expect("describe").into_inner();
    let group_id = described.queues[0].group_id;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = admin.group_checksum(GroupChecksumRequest { group_id, applied_index: 0 }).await.expect("checksum").into_inner();
        let agreed = code(&r.status) == Code::Ok
            && r.replicas.len() == 3
            && r.replicas.iter().all(|x| x.error.is_none())
            && r.replicas.windows(2).all(|w| w[0].digest == w[1].digest);
        if agreed {
            break;
        }
        assert!(Instant::now() < deadline, "replicas do not agree after the restart: {:?}", r.replicas);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The restarted replica catches up to every acknowledged send (fetches read its own copy).
    let mut c = cluster.brokers[victim].queue().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let f = c.fetch(FetchRequest { topic: TOPIC.into(), queue_id: 0, offset: 0, ..Default::default() }).await.expect("fetch");
        let f = f.into_inner();
        assert_eq!(code(&f.status), Code::Ok, "{:?}", f.status);
        if f.end_offset == acked {
            break;
        }
        assert!(f.end_offset < acked, "more stored than acknowledged: {} > {acked}", f.end_offset);
        assert!(Instant::now() < deadline, "the restarted replica holds {} of {acked} acknowledged sends", f.end_offset);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A leader move never leaves a group without a leader: a move to a replica more than 1,000
/// entries behind is refused at once (UNAVAILABLE, saying how far behind) and the group takes
/// sends on; a move to a replica that is down is answered OUTCOME_UNKNOWN when its 10 s are up
/// (the transfer may still end), and the other replicas elect a leader by themselves and
/// acknowledge sends, losing nothing acknowledged before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_move_to_a_lagging_or_dead_replica_never_leaves_the_group_without_a_leader() {
    let mut cluster = Cluster::start(3, FAST_RAFT).await;
    create_topic(&cluster, 0).await;
    let group = topic_groups(&cluster).await[0];
    let leader = leader_of(&cluster, 0).await;
    let target = (1..=3u64).find(|&b| b != leader).expect("a follower");
    let (leader_index, target_index) = (leader as usize - 1, target as usize - 1);
    cluster.brokers[target_index].kill9();
    // Every group the dead broker led elects a leader among the others.
    wait_led_without(&cluster, leader_index, &topic_groups(&cluster).await, target).await;

    // One send at a time to queue 0 (one entry each) until the dead replica lacks more than 1,000.
    let mut history = History::default();
    let mut queue = cluster.brokers[leader_index].queue().await;
    let started = Instant::now();
    let mut sent = 0u64;
    while replica(&cluster.group_status(leader_index, group).await, target).lag <= 1_000 {
        for _ in 0..100 {
            let body = format!("lag-{sent}");
            let message = Message { body: body.clone().into_bytes().into(), ..Default::default() };
            let req =
                SendRequest { topic: TOPIC.into(), target: Some(Target::QueueId(0)), messages: vec![message], producer_id: String::new() };
            let r = queue.send(req).await.expect("answered").into_inner();
            assert_eq!(code(&r.status), Code::Ok, "send {sent} after {:?}: {:?}", started.elapsed(), r.status);
            history.acked.insert(body, (0, r.results[0].offset));
            sent += 1;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{sent} sends in {:?}", started.elapsed());
    }
    let (refused, took) = move_leader(&cluster, leader_index, group, target).await;
    let message = refused.status.as_ref().map(|s| s.message.clone()).unwrap_or_default();
    assert_eq!(code(&refused.status), Code::Unavailable, "{refused:?}");
    assert!(
        message.contains(&format!("broker {target}'s replica of group {group} lacks")) && message.contains("at most 1000"),
        "{message}"
    );
    assert!(took < Duration::from_secs(2), "refused at once, took {took:?}");
    assert_eq!(refused.leader_broker_id, leader, "{refused:?}");
    let more = load_from(&[cluster.brokers[leader_index].client_addr()], 0, 20, 1).await;
    assert_eq!(more.acked.len(), 20, "the refused move stalled nothing");
    history.acked.extend(more.acked);

    // Caught up, then down again: the move is allowed and cannot end.
    cluster.brokers[target_index].start();
    let deadline = Instant::now() + Duration::from_secs(60);
    while replica(&cluster.group_status(leader_index, group).await, target).lag > 0 {
        assert!(Instant::now() < deadline, "broker {target} did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.brokers[target_index].kill9();
    let before = cluster.group_status(leader_index, group).await;
    let (unknown, took) = move_leader(&cluster, leader_index, group, target).await;
    assert_eq!(code(&unknown.status), Code::OutcomeUnknown, "{unknown:?}");
    assert!(took >= Duration::from_secs(9) && took < Duration::from_secs(20), "answered after {took:?}, not its 10 s");

    // The survivors elect a leader themselves (the old one stopped taking writes for the move).
    let survivors: Vec<usize> = (0..3).filter(|&b| b != target_index).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let led = loop {
        let s = cluster.group_status(survivors[0], group).await;
        if s.leader_broker_id != 0 && s.leader_broker_id != target && s.term > before.term {
            break s;
        }
        assert!(Instant::now() < deadline, "group {group} has no leader after the move to dead broker {target}: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let survivor_endpoints: Vec<_> = survivors.iter().map(|&b| cluster.brokers[b].client_addr()).collect();
    let more = load_from(&survivor_endpoints, 1_000, 40, 2).await;
    assert_eq!(more.acked.len(), 40, "leader {} acknowledges sends", led.leader_broker_id);
    history.acked.extend(more.acked);
    history.refused.extend(more.refused);
    history.unknown.extend(more.unknown);
    cluster.brokers[target_index].start();
    cluster.wait_ready().await;
    check(&cluster, &history).await;
}

/// Asks broker `via` to move `group`'s leadership to broker `to`: the answer and how long it took.
async fn move_leader(cluster: &Cluster, via: usize, group: u64, to: u64) -> (MoveLeaderReply, Duration) {
    let mut admin = cluster.brokers[via].admin().await;
    let started = Instant::now();
    let r = admin.move_leader(MoveLeaderRequest { group_id: group, to_broker_id: to }).await.expect("answered");
    (r.into_inner(), started.elapsed())
}

/// A queue group whose first replica (the one that initializes it) dies as the topic is
/// created still elects a leader among the others: every replica can start the group, and the
/// group is recorded started only once a majority holds its membership.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_whose_first_replica_dies_at_creation_elects_a_leader_among_the_others() {
    let mut cluster = Cluster::start(3, FAST_RAFT).await;
    let mut admin = cluster.brokers[0].admin().await;
    let topic = Topic { name: TOPIC.into(), queue_count: QUEUES, replication_factor: 3, message_type: 0, checkpoint_interval_entries: 0 };
    let r = admin.create_topic(CreateTopicRequest { topic: Some(topic) }).await.expect("create topic").into_inner();
    assert_eq!(code(&r.status), Code::Ok, "{:?}", r.status);
    let described = admin.describe_topic(DescribeTopicRequest { name: TOPIC.into() }).await.expect("describe").into_inner();
    let first = described.queues[0].replica_broker_ids[0];
    cluster.brokers[first as usize - 1].kill9();

    let survivors: Vec<usize> = (0..3).filter(|&b| b != first as usize - 1).collect();
    let groups: Vec<u64> = described.queues.iter().map(|q| q.group_id).collect();
    wait_led_without(&cluster, survivors[0], &groups, first).await;
    let survivor_endpoints: Vec<_> = survivors.iter().map(|&b| cluster.brokers[b].client_addr()).collect();
    let more = load_from(&survivor_endpoints, 0, 20, 2).await;
    assert_eq!(more.acked.len(), 20, "{:?}", more.refused);
    cluster.brokers[first as usize - 1].start();
    cluster.wait_ready().await;
    check(&cluster, &more).await;
}

/// Waits, 30 s at most, until broker `via` (an index into `brokers`) reports for each of
/// `groups` a leader other than broker `down`.
async fn wait_led_without(cluster: &Cluster, via: usize, groups: &[u64], down: u64) {
    let mut admin = cluster.brokers[via].admin().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    for &group in groups {
        loop {
            let status = admin.cluster_status(ClusterStatusRequest {}).await.expect("status").into_inner();
            let g = status.groups.iter().find(|g| g.group_id == group);
            if g.is_some_and(|g| g.leader_broker_id != 0 && g.leader_broker_id != down) {
                break;
            }
            assert!(Instant::now() < deadline, "group {group} has no leader with broker {down} down: {g:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

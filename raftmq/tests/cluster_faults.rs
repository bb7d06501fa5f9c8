//! Multi-process fault tests: real `raftmq broker` processes on their own loopback hosts, real
//! gRPC between them, real fsync. What a user relies on: an acknowledged message survives
//! `kill -9` of its group's leader and a restart of the whole cluster, at the offset it was
//! acknowledged with, byte for byte, on every replica.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::raftmq::v1::send_request::Target;
use proto::raftmq::v1::status::Code;
use proto::raftmq::v1::{
    CommitOffsetRequest, CreateTopicRequest, DescribeTopicRequest, FetchRequest, GetOffsetRequest, GroupChecksumRequest, Message,
    SendRequest, Topic,
};
use support::{Cluster, code};

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

async fn create_topic(cluster: &Cluster) {
    let mut admin = cluster.brokers[0].admin().await;
    let topic = Topic { name: TOPIC.into(), queue_count: QUEUES, replication_factor: 3, message_type: 0, checkpoint_interval_entries: 0 };
    let r = admin.create_topic(CreateTopicRequest { topic: Some(topic) }).await.expect("create topic").into_inner();
    assert_eq!(code(&r.status), Code::Ok, "{:?}", r.status);
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
    let history = Arc::new(Mutex::new(History::default()));
    let next = Arc::new(AtomicU64::new(0));
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
                                        Code::NotLeader | Code::Busy => !h.refused.insert(body),
                                        Code::Unavailable => !h.unknown.insert(body),
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

/// Every message of `queue` as the replica on `broker` holds it, from offset 0.
async fn read_all(cluster: &Cluster, broker: usize, queue: u32, end: u64) -> Vec<(u64, String)> {
    let mut client = cluster.brokers[broker].queue().await;
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (out.len() as u64) < end {
        assert!(Instant::now() < deadline, "broker {} did not serve queue {queue} up to {end}", broker + 1);
        let from = out.len() as u64;
        let r = match client
            .fetch(FetchRequest { topic: TOPIC.into(), queue_id: queue, offset: from, max_messages: 1000, ..Default::default() })
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
            assert_eq!(m.offset, out.len() as u64, "offsets are dense");
            out.push((m.offset, String::from_utf8(m.message.expect("message").body.to_vec()).expect("utf-8 body")));
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
/// offset, on every replica; nothing refused stored; nothing stored that was never sent.
async fn check(cluster: &Cluster, history: &History) {
    let ends = end_offsets(cluster).await;
    for q in 0..QUEUES {
        let end = ends[&q];
        let mut replicas = Vec::new();
        for b in 0..cluster.brokers.len() {
            replicas.push(read_all(cluster, b, q, end).await);
        }
        for (b, r) in replicas.iter().enumerate().skip(1) {
            assert!(r == &replicas[0], "replica on broker {} differs from broker 1 on queue {q}", b + 1);
        }
        let stored = &replicas[0];
        let mut seen = HashSet::new();
        for (offset, body) in stored {
            assert!(seen.insert(body.clone()), "{body} stored twice on queue {q}");
            assert!(!history.refused.contains(body), "{body} was refused but is stored at {q}/{offset}");
            assert!(history.acked.contains_key(body) || history.unknown.contains(body), "{body} at {q}/{offset} was never sent");
        }
        for (body, (queue, offset)) in history.acked.iter().filter(|(_, (queue, _))| *queue == q) {
            let at = stored.get(*offset as usize).map(|(_, b)| b.as_str());
            assert_eq!(at, Some(body.as_str()), "acknowledged {body} missing at {queue}/{offset}");
        }
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_sends_survive_kill9_of_the_leader_mid_load() {
    let mut cluster = Cluster::start(3, FAST_RAFT).await;
    create_topic(&cluster).await;
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
    check(&cluster, &history).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_cluster_restart_keeps_messages_and_consumer_offsets() {
    let mut cluster = Cluster::start(3, FAST_RAFT).await;
    create_topic(&cluster).await;
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
    check(&cluster, &history).await;
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

fn endpoints(cluster: &Cluster) -> Vec<std::net::SocketAddr> {
    cluster.brokers.iter().map(|b| b.client_addr()).collect()
}

//! RocketMQ consumption across a kill -9 of the queue's leader: every piece of consumer state
//! (what was delivered, until when, how often, what was acknowledged) is a Raft command, so a
//! new leader neither loses an acknowledged message's ack nor an unacknowledged message.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proto::apache::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use proto::apache::rocketmq::v2::{self as v2, Code as MqCode, MessageType, ReceiveMessageRequest, SendMessageRequest};
use proto::raftmq::v1::status::Code;
use proto::raftmq::v1::{DescribeTopicRequest, GroupStatus, MoveLeaderRequest, Topic};
use support::replica;
use support::rocketmq::*;
use tonic::transport::Channel;

const GROUP: &str = "ledger-writers";

fn message_id(m: &v2::Message) -> String {
    m.system_properties.as_ref().map(|p| p.message_id.clone()).unwrap_or_default()
}

fn attempt(m: &v2::Message) -> i32 {
    m.system_properties.as_ref().and_then(|p| p.delivery_attempt).unwrap_or(0)
}

/// Sends `count` messages to `topic` (queue 0; FIFO ones in one message group), all acknowledged.
async fn send_all(client: &mut MessagingServiceClient<Channel>, topic: &str, count: usize, fifo: bool) -> Vec<String> {
    let mut ids = Vec::new();
    let messages: Vec<v2::Message> = (0..count)
        .map(|i| {
            let id = format!("{topic}-{i:03}");
            ids.push(id.clone());
            let mut m = raw_message(topic, &id, format!("payment {i}").into_bytes());
            if fifo {
                let p = m.system_properties.as_mut().expect("properties");
                p.message_type = MessageType::Fifo as i32;
                p.message_group = Some("account-7".into());
            }
            m
        })
        .collect();
    let sent = client.send_message(SendMessageRequest { messages }).await.expect("send").into_inner();
    assert_eq!(sent.status.map(|s| s.code), Some(MqCode::Ok as i32));
    ids
}

/// What one consumer group saw: each delivery in order, and what its acks settled.
#[derive(Default)]
struct Seen {
    deliveries: Vec<(String, i32)>,
    acked: BTreeSet<String>,
}

/// Receives from `topic` through `clients` (any of them; one refused or gone is skipped) until
/// `stop` says so or 60 s pass, acknowledging what `ack` picks; returns the handles it kept.
async fn consume(
    clients: &mut [MessagingServiceClient<Channel>],
    topic: &str,
    request: &ReceiveMessageRequest,
    seen: &mut Seen,
    mut ack: impl FnMut(&v2::Message) -> bool,
    stop: impl Fn(&Seen) -> bool,
) -> Vec<(String, String)> {
    let mut kept = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut turn = 0;
    while !stop(seen) {
        assert!(Instant::now() < deadline, "consumption stalled: {} delivered, {} acknowledged", seen.deliveries.len(), seen.acked.len());
        turn += 1;
        let client = &mut clients[turn % clients.len()];
        let Ok((code, got)) = try_receive(client, request.clone()).await else { continue };
        if code != MqCode::Ok as i32 {
            // Nothing yet, or no leader yet (HA_NOT_AVAILABLE): nothing was done, ask again.
            continue;
        }
        for m in got {
            let id = message_id(&m);
            assert!(!seen.acked.contains(&id), "{id} delivered again after its ack was confirmed");
            seen.deliveries.push((id.clone(), attempt(&m)));
            if ack(&m) {
                match try_ack(client, topic, GROUP, &handle(&m)).await {
                    Ok(code) if code == MqCode::Ok as i32 => {
                        seen.acked.insert(id);
                    }
                    // Not confirmed (no answer, or the leader died under it): it may come again.
                    _ => {}
                }
            } else {
                kept.push((id, handle(&m)));
            }
        }
    }
    kept
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumption_survives_a_kill_of_the_queues_leader() {
    let cluster = cluster_with(&[topic("payments", 1, NORMAL), topic("postings", 1, FIFO)]).await;
    let leader = cluster.leader_of_first_queue("payments").await;
    let mut all: Vec<MessagingServiceClient<Channel>> = Vec::new();
    for b in 0..3 {
        all.push(raw_client(&cluster, b).await);
    }
    let ids = send_all(&mut all[0], "payments", 40, false).await;
    let fifo_ids = send_all(&mut all[0], "postings", 20, true).await;
    let invisible = Duration::from_secs(4);
    let request =
        |topic: &str| ReceiveMessageRequest { batch_size: 5, ..receive_request(topic, GROUP, Some(invisible), Duration::from_secs(2)) };

    // Before the kill: 15 received, 10 of them acknowledged, 5 kept in flight unacknowledged.
    let mut seen = Seen::default();
    let mut picked = 0;
    let kept = consume(
        &mut all,
        "payments",
        &request("payments"),
        &mut seen,
        |_| {
            picked += 1;
            picked <= 10
        },
        |s| s.deliveries.len() >= 15,
    )
    .await;
    let mut fifo_seen = Seen::default();
    consume(&mut all, "postings", &request("postings"), &mut fifo_seen, |_| true, |s| s.acked.len() >= 7).await;

    let mut survivors = Vec::new();
    for b in 0..3u64 {
        if b + 1 == leader {
            continue;
        }
        survivors.push(raw_client(&cluster, b as usize).await);
    }
    let mut cluster = cluster;
    cluster.brokers[(leader - 1) as usize].kill9();

    // A delivery made by the dead leader is acknowledged at the new one by its handle.
    let (kept_id, kept_handle) = kept.first().cloned().expect("a message kept in flight");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let code = try_ack(&mut survivors[0], "payments", GROUP, &kept_handle).await.unwrap_or(0);
        if code == MqCode::Ok as i32 {
            seen.acked.insert(kept_id.clone());
            break;
        }
        assert!(Instant::now() < deadline, "the new leader never honoured a handle of the old one (last code {code})");
        assert_ne!(code, MqCode::InvalidReceiptHandle as i32, "a handle of the dead leader is valid until redelivery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_ids: BTreeSet<String> = ids.iter().cloned().collect();
    consume(&mut survivors, "payments", &request("payments"), &mut seen, |_| true, |s| s.acked == all_ids).await;
    // The 4 others kept in flight came again, once visible: attempt 2; nothing else came twice.
    let mut attempts: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (id, a) in &seen.deliveries {
        attempts.entry(id).or_default().push(*a);
    }
    for (id, _) in kept.iter().skip(1) {
        assert_eq!(attempts[id.as_str()], [1, 2], "{id}: kept in flight, delivered again after the failover");
    }
    let twice: Vec<&&str> = attempts.iter().filter(|(_, a)| a.len() > 1).map(|(id, _)| id).collect();
    assert_eq!(twice.len(), kept.len() - 1, "only what was in flight came again: {twice:?}");

    // FIFO: some more acknowledged, then the killed broker back, then the FIFO queue's own
    // leader killed: every message acknowledged in the end, first deliveries in send order.
    let mut fifo_clients = Vec::new();
    for b in 0..3u64 {
        if b + 1 != leader {
            fifo_clients.push(raw_client(&cluster, b as usize).await);
        }
    }
    consume(&mut fifo_clients, "postings", &request("postings"), &mut fifo_seen, |_| true, |s| s.acked.len() >= 14).await;
    cluster.brokers[(leader - 1) as usize].start();
    cluster.wait_ready().await;
    let fifo_leader = cluster.leader_of_first_queue("postings").await;
    cluster.brokers[(fifo_leader - 1) as usize].kill9();
    let mut fifo_survivors = Vec::new();
    for b in 0..3u64 {
        if b + 1 != fifo_leader {
            fifo_survivors.push(raw_client(&cluster, b as usize).await);
        }
    }
    let all_fifo: BTreeSet<String> = fifo_ids.iter().cloned().collect();
    consume(&mut fifo_survivors, "postings", &request("postings"), &mut fifo_seen, |_| true, |s| s.acked == all_fifo).await;
    let mut first_seen = Vec::new();
    for (id, _) in &fifo_seen.deliveries {
        if !first_seen.contains(id) {
            first_seen.push(id.clone());
        }
    }
    assert_eq!(first_seen, fifo_ids, "FIFO order kept across both failovers");
}

/// Retention keeping at most 256 entries per group, checked every 200 ms: with a checkpoint
/// every 64 entries, the group trims, snapshots and purges its log every few hundred entries.
const SMALL_RETENTION: &str = "[retention]\nmax_log_entries = 256\ncheck_interval_ms = 200\n";

/// Sends `count` messages named `{prefix}-{i}` to queue 0 of `topic`, 10 to a request (one
/// Raft entry each), every one acknowledged; returns their ids.
async fn send_batches(client: &mut MessagingServiceClient<Channel>, topic: &str, prefix: &str, count: usize) -> Vec<String> {
    let ids: Vec<String> = (0..count).map(|i| format!("{prefix}-{i:04}")).collect();
    for batch in ids.chunks(10) {
        let messages = batch.iter().map(|id| raw_message(topic, id, id.as_bytes().to_vec())).collect();
        let sent = client.send_message(SendMessageRequest { messages }).await.expect("send").into_inner();
        assert_eq!(sent.status.map(|s| s.code), Some(MqCode::Ok as i32), "send of {batch:?}");
    }
    ids
}

/// Rounds of 200 sends, each received and acknowledged, until `done` holds of the group's status;
/// with `leader`, the group's leadership is moved back to that broker whenever an election (a
/// busy machine's missed heartbeats) took it elsewhere.
#[allow(clippy::too_many_arguments)]
async fn load_until(
    cluster: &support::Cluster,
    clients: &mut [MessagingServiceClient<Channel>],
    via: usize,
    group: u64,
    leader: Option<u64>,
    request: &ReceiveMessageRequest,
    seen: &mut Seen,
    done: impl Fn(&GroupStatus) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    for round in 0.. {
        let status = cluster.group_status(via, group).await;
        if done(&status) {
            return;
        }
        if let Some(to) = leader
            && status.leader_broker_id != to
        {
            let mut admin = cluster.brokers[via].admin().await;
            let moved = admin.move_leader(MoveLeaderRequest { group_id: group, to_broker_id: to }).await.expect("move leader");
            assert_eq!(support::code(&moved.into_inner().status), Code::Ok, "leadership back to broker {to}");
        }
        assert!(Instant::now() < deadline, "the log was not trimmed as awaited within 120 s");
        let prefix = format!("filler-{}-{round}", seen.deliveries.len());
        send_batches(&mut clients[0], "ledger", &prefix, 200).await;
        let acked = seen.acked.len() + 200;
        consume(clients, "ledger", request, seen, |_| true, |s| s.acked.len() >= acked).await;
    }
}

/// A follower down while the group's log is trimmed and purged past it catches up by installing
/// a snapshot, and is then made the group's leader: it serves the consumer group exactly as the
/// old leader would have (nothing acknowledged comes again, what is in flight stays invisible and
/// its old handles are honoured, new messages come once), and keeps checkpointing and trimming
/// as leader (each checkpoint checks the consumer-state counts it keeps, which an installed
/// snapshot does not carry).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_that_caught_up_by_snapshot_leads_with_the_same_consumer_state() {
    let mut cluster = support::Cluster::start(3, &format!("{FAST_RAFT}{SMALL_RETENTION}")).await;
    cluster.create_topic(Topic { checkpoint_interval_entries: 64, ..topic("ledger", 1, NORMAL) }).await;
    let group = {
        let mut admin = cluster.brokers[0].admin().await;
        let r = admin.describe_topic(DescribeTopicRequest { name: "ledger".into() }).await.expect("describe").into_inner();
        r.queues[0].group_id
    };
    let leader = cluster.leader_of_first_queue("ledger").await;
    let down = (1..=3u64).find(|&b| b != leader).expect("a follower");
    let running: Vec<usize> = (0..3).filter(|&b| b as u64 + 1 != down).collect();
    let mut clients = Vec::new();
    for &b in &running {
        clients.push(raw_client(&cluster, b).await);
    }
    let request = ReceiveMessageRequest {
        batch_size: 32,
        ..receive_request("ledger", GROUP, Some(Duration::from_secs(300)), Duration::from_secs(1))
    };
    let mut seen = Seen::default();
    send_batches(&mut clients[0], "ledger", "first", 100).await;
    consume(&mut clients, "ledger", &request, &mut seen, |_| true, |s| s.acked.len() >= 100).await;

    cluster.brokers[down as usize - 1].kill9();
    let stopped_at = replica(&cluster.group_status(running[0], group).await, leader).matched_index;
    let purged_past = |s: &GroupStatus| running.iter().all(|&b| replica(s, b as u64 + 1).purged_index > stopped_at);
    load_until(&cluster, &mut clients, running[0], group, None, &request, &mut seen, purged_past).await;

    // 40 more: 30 acknowledged, 10 kept in flight (invisible for 300 s).
    let final_ids = send_batches(&mut clients[0], "ledger", "final", 40).await;
    let before = seen.deliveries.len();
    let mut picked = 0;
    let kept = consume(
        &mut clients,
        "ledger",
        &request,
        &mut seen,
        |_| {
            picked += 1;
            picked <= 30
        },
        |s| s.deliveries.len() >= before + 40,
    )
    .await;
    assert_eq!(kept.len(), 10);
    assert!(kept.iter().all(|(id, _)| final_ids.contains(id)), "{kept:?}");

    cluster.brokers[down as usize - 1].start();
    cluster.wait_ready().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let caught_up = loop {
        let s = cluster.group_status(running[0], group).await;
        let r = replica(&s, down);
        if r.applied_index >= s.commit_index && r.snapshot_index > stopped_at {
            break *r;
        }
        assert!(Instant::now() < deadline, "broker {down} did not catch up by snapshot: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let mut admin = cluster.brokers[running[0]].admin().await;
    let moved = admin.move_leader(MoveLeaderRequest { group_id: group, to_broker_id: down }).await.expect("move leader").into_inner();
    assert_eq!((support::code(&moved.status), moved.leader_broker_id), (Code::Ok, down), "{moved:?}");
    let mut at_new = vec![raw_client(&cluster, down as usize - 1).await];

    // The old leader's handles are honoured; nothing is visible: all acknowledged or in flight.
    for (id, h) in &kept[..5] {
        assert_eq!(try_ack(&mut at_new[0], "ledger", GROUP, h).await.expect("ack"), MqCode::Ok as i32, "{id}");
        seen.acked.insert(id.clone());
    }
    let (code, got) = receive(&mut at_new[0], request.clone()).await;
    let got: Vec<String> = got.iter().map(message_id).collect();
    assert_eq!((code, got), (MqCode::MessageNotFound as i32, vec![]), "nothing acknowledged or in flight comes again");

    // New messages come once, after what the consumer group had.
    let after = send_batches(&mut at_new[0], "ledger", "after", 20).await;
    let before = seen.deliveries.len();
    consume(&mut at_new, "ledger", &request, &mut seen, |_| true, |s| s.deliveries.len() >= before + 20).await;
    let new: Vec<&String> = seen.deliveries[before..].iter().map(|(id, _)| id).collect();
    assert_eq!(new, after.iter().collect::<Vec<_>>(), "only the new messages, in order");
    for (id, h) in &kept[5..] {
        assert_eq!(try_ack(&mut at_new[0], "ledger", GROUP, h).await.expect("ack"), MqCode::Ok as i32, "{id}");
        seen.acked.insert(id.clone());
    }

    // The new leader checkpoints, trims and snapshots on: its snapshot moves past the one it
    // installed, and every broker is still running.
    let installed = caught_up.snapshot_index;
    let new_leader_snapshotted = |s: &GroupStatus| s.leader_broker_id == down && replica(s, down).snapshot_index > installed;
    load_until(&cluster, &mut at_new, down as usize - 1, group, Some(down), &request, &mut seen, new_leader_snapshotted).await;
    for b in &mut cluster.brokers {
        assert!(b.is_running(), "broker {} stopped; log {}", b.id, b.log().display());
    }
    // Every message was delivered once: none came again, all were acknowledged.
    let mut times: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, a) in &seen.deliveries {
        assert_eq!(*a, 1, "{id} delivered at attempt {a}");
        *times.entry(id).or_default() += 1;
    }
    assert!(times.values().all(|&n| n == 1), "delivered twice: {:?}", times.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>());
    assert_eq!(seen.acked.len(), times.len());
}

/// Receives for `group` at `client` until one brings nothing (at most `rounds`); returns what
/// came and the code that ended it.
async fn receive_until_refused(client: &mut MessagingServiceClient<Channel>, group: &str, rounds: usize) -> (Vec<v2::Message>, i32) {
    let request = ReceiveMessageRequest {
        batch_size: 32,
        ..receive_request("bounded", group, Some(Duration::from_secs(600)), Duration::from_millis(200))
    };
    let mut all = Vec::new();
    for _ in 0..rounds {
        let (code, got) = receive(client, request.clone()).await;
        if code != MqCode::Ok as i32 {
            return (all, code);
        }
        all.extend(got);
    }
    panic!("{group}: still receiving after {rounds} receives ({} messages)", all.len());
}

/// The bounds of a queue group's consumer state, end to end at their limits: a consumer group
/// holds at most 4,096 messages in flight per queue (a receive then brings nothing new until one
/// is acknowledged), and a queue group at most 8,192 receive items (cursors and in-flight
/// records over every consumer group: what a checkpoint holds), beyond which a receive is
/// refused TOO_MANY_REQUESTS. The count of those items that the brokers keep survives a kill -9
/// of the leader: the new leader refuses and admits exactly as the old one did.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receive_bounds_hold_at_their_limits_and_across_a_failover() {
    let mut cluster = cluster_with(&[topic("bounded", 1, NORMAL)]).await;
    let leader = cluster.leader_of_first_queue("bounded").await;
    let mut client = raw_client(&cluster, leader as usize - 1).await;
    for chunk in 0..33 {
        let messages = (0..250).map(|i| raw_message("bounded", &format!("m{chunk}-{i}"), b"x".to_vec())).collect();
        let sent = client.send_message(SendMessageRequest { messages }).await.expect("send").into_inner();
        assert_eq!(sent.status.map(|s| s.code), Some(MqCode::Ok as i32));
    }
    let offset = |m: &v2::Message| m.system_properties.as_ref().map_or(-1, |p| p.queue_offset.unwrap_or(-1));

    // Exactly 4,096 in flight for the first group; then nothing new (not an error).
    let (first, code) = receive_until_refused(&mut client, "first", 200).await;
    assert_eq!((first.len(), code), (4096, MqCode::MessageNotFound as i32));
    assert_eq!(first.iter().map(offset).collect::<BTreeSet<_>>(), (0..4096).collect::<BTreeSet<i64>>());
    // The second group gets what is left of 8,192 items: 8,192 - (4,096 + a cursor) - its own
    // cursor = 4,094; then it is refused, and told why.
    let (second, code) = receive_until_refused(&mut client, "second", 200).await;
    assert_eq!((second.len(), code), (4094, MqCode::TooManyRequests as i32));

    // Through a kill -9 of the leader, the new leader keeps the same count.
    cluster.brokers[leader as usize - 1].kill9();
    let survivor = (0..3).find(|&b| b + 1 != leader as usize).expect("a survivor");
    let mut client = raw_client(&cluster, survivor).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let request = ReceiveMessageRequest {
        batch_size: 32,
        ..receive_request("bounded", "second", Some(Duration::from_secs(600)), Duration::from_millis(200))
    };
    loop {
        let code = try_receive(&mut client, request.clone()).await.map_or(0, |(code, got)| {
            assert!(got.is_empty(), "the new leader delivered {} messages beyond the bound", got.len());
            code
        });
        if code == MqCode::TooManyRequests as i32 {
            break;
        }
        assert!(Instant::now() < deadline, "no refusal from a new leader (last code {code})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One acknowledged makes room for exactly one more.
    let acked = &second[0];
    assert_eq!(try_ack(&mut client, "bounded", "second", &handle(acked)).await.expect("ack"), MqCode::Ok as i32);
    let (more, code) = receive_until_refused(&mut client, "second", 5).await;
    assert_eq!((more.iter().map(offset).collect::<Vec<_>>(), code), (vec![4094], MqCode::TooManyRequests as i32));
}

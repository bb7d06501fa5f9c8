//! RocketMQ consumption across a kill -9 of the queue's leader: every piece of consumer state
//! (what was delivered, until when, how often, what was acknowledged) is a Raft command, so a
//! new leader neither loses an acknowledged message's ack nor an unacknowledged message.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proto::apache::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use proto::apache::rocketmq::v2::{self as v2, Code as MqCode, MessageType, ReceiveMessageRequest, SendMessageRequest};
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

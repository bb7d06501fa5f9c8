//! A cluster at its documented size limits: a message at exactly the body limit, and full
//! batches of messages carrying the most keys, properties and tag the edge admits, are
//! acknowledged, replicated to every replica byte for byte, and leave the group writable.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proto::raftmq::v1::send_request::Target;
use proto::raftmq::v1::status::Code;
use proto::raftmq::v1::{DescribeTopicRequest, FetchRequest, GroupChecksumRequest, Message, SendRequest, Topic};
use support::{Cluster, code};

/// While an entry is in flight, the batcher lingers up to `batch_wait_us` for more sends to join
/// the next one: 2 s, so the widest messages below gather into entries as full as the bounds
/// allow (256 of them would be 21 MB, over a 16 MiB log record) instead of depending on how fast
/// they arrive.
/// The default Raft timing: no failover is tested here, and a loaded machine must not elect.
const CONFIG: &str = "[send]\nbatch_wait_us = 2000000\n";

/// The edge's documented defaults (`[limits]`), which this test sends at exactly.
const BODY_BYTES_MAX: usize = 4 << 20;
const KEYS_PER_MESSAGE_MAX: usize = 64;
const TAG_BYTES_MAX: usize = 1 << 10;
const PROPERTIES_BYTES_MAX: usize = 16 << 10;
const MESSAGES_PER_SEND_MAX: usize = 256;
/// Long enough for a full entry on a loaded CI machine; far shorter than "forever".
const SEND_DEADLINE: Duration = Duration::from_secs(60);

/// A message with the most keys, properties and the longest tag the edge admits, told apart by
/// `n`, and an empty body.
fn widest_message(n: usize) -> Message {
    let keys = (0..KEYS_PER_MESSAGE_MAX).map(|k| format!("{n:06}-{k:03}-").chars().cycle().take(TAG_BYTES_MAX).collect()).collect();
    // 16 properties of 1 KiB each (name + value): exactly the properties limit.
    let properties: HashMap<String, String> = (0..16)
        .map(|p| {
            let name = format!("p{p:02}-{n:06}");
            let value = "v".repeat(PROPERTIES_BYTES_MAX / 16 - name.len());
            (name, value)
        })
        .collect();
    assert_eq!(properties.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>(), PROPERTIES_BYTES_MAX);
    let tag = format!("{n:06}").chars().cycle().take(TAG_BYTES_MAX).collect();
    Message { body: Default::default(), properties, tag: Some(tag), keys, ..Default::default() }
}

fn send_request(topic: &str, messages: Vec<Message>) -> tonic::Request<SendRequest> {
    let mut r =
        tonic::Request::new(SendRequest { topic: topic.into(), target: Some(Target::QueueId(0)), messages, producer_id: String::new() });
    r.set_timeout(SEND_DEADLINE);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_at_every_size_limit_are_acknowledged_and_replicated() {
    let cluster = Cluster::start(3, CONFIG).await;
    cluster
        .create_topic(Topic { name: "big".into(), queue_count: 1, replication_factor: 3, message_type: 0, checkpoint_interval_entries: 0 })
        .await;
    let mut admin = cluster.brokers[0].admin().await;
    let described = admin.describe_topic(DescribeTopicRequest { name: "big".into() }).await.expect("describe").into_inner();
    let group_id = described.queues[0].group_id;

    let mut sent: Vec<Message> = Vec::new();
    let leader = cluster.leader_of_first_queue("big").await;
    // The first send goes through a follower: forwarding carries a message at the limit too.
    let follower = cluster.brokers.iter().find(|b| b.id != leader).expect("a follower");
    let through_follower = follower.queue().await;
    // The rest go to the leader, so that the forwarding hop's own deadline is not what is tested.
    let client = cluster.brokers[leader as usize - 1].queue().await;

    // 1. A body of exactly body_bytes_max.
    let step = Instant::now();
    let body: Vec<u8> = (0..BODY_BYTES_MAX).map(|i| (i % 251) as u8).collect();
    let largest = Message { body: body.into(), ..Default::default() };
    let r = through_follower.clone().send(send_request("big", vec![largest.clone()])).await.expect("send of a body at the limit");
    let r = r.into_inner();
    assert_eq!(code(&r.status), Code::Ok, "{:?}", r.status);
    sent.push(largest);
    eprintln!("a body at the limit acknowledged through a follower in {:?}", step.elapsed());

    // 2. 256 concurrent single-message sends of the widest message, sent while another body at
    //    the limit commits: they gather into one entry behind it, which must stay within what
    //    the log and the transport accept (256 × 83 KB would be 21 MB, over a 16 MiB record).
    let started = Instant::now();
    let blocker = {
        let (mut c, m) = (client.clone(), sent[0].clone());
        tokio::spawn(async move { c.send(send_request("big", vec![m])).await })
    };
    let sends: Vec<_> = (0..MESSAGES_PER_SEND_MAX)
        .map(|n| {
            let mut c = client.clone();
            let m = widest_message(n);
            tokio::spawn(async move { (m.clone(), c.send(send_request("big", vec![m])).await) })
        })
        .collect();
    let r = blocker.await.expect("send task").expect("second send of a body at the limit").into_inner();
    assert_eq!(code(&r.status), Code::Ok, "{:?}", r.status);
    let blocker_offset = r.results[0].offset;
    let mut wide = Vec::new();
    for s in sends {
        let (m, r) = s.await.expect("send task");
        let r = r.expect("send of a widest message").into_inner();
        assert_eq!(code(&r.status), Code::Ok, "{:?}", r.status);
        wide.push((r.results[0].offset, m));
    }
    wide.push((blocker_offset, sent[0].clone()));
    wide.sort_by_key(|(o, _)| *o);
    eprintln!("256 widest messages acknowledged in {:?}", started.elapsed());
    assert_eq!(wide.iter().map(|(o, _)| *o).collect::<Vec<_>>(), (1..=1 + MESSAGES_PER_SEND_MAX as u64).collect::<Vec<_>>());
    sent.extend(wide.into_iter().map(|(_, m)| m));

    // 3. Ordinary sends after them, as a full batch in one request and one by one.
    let ordinary: Vec<Message> =
        (0..MESSAGES_PER_SEND_MAX).map(|i| Message { body: format!("ordinary {i}").into_bytes().into(), ..Default::default() }).collect();
    let r = client.clone().send(send_request("big", ordinary.clone())).await.expect("full batch").into_inner();
    assert_eq!(code(&r.status), Code::Ok, "{:?}", r.status);
    sent.extend(ordinary);
    for i in 0..8 {
        let m = Message { body: format!("after {i}").into_bytes().into(), ..Default::default() };
        let r = client.clone().send(send_request("big", vec![m.clone()])).await.expect("ordinary send").into_inner();
        assert_eq!(code(&r.status), Code::Ok, "{:?}", r.status);
        assert_eq!(r.results[0].offset, sent.len() as u64);
        sent.push(m);
    }

    // Read back byte for byte, through every broker.
    for b in &cluster.brokers {
        let mut c = b.queue().await;
        let mut offset = 0u64;
        while offset < sent.len() as u64 {
            let f = c
                .fetch(FetchRequest { topic: "big".into(), queue_id: 0, offset, max_bytes: 64 << 20, ..Default::default() })
                .await
                .expect("fetch")
                .into_inner();
            assert_eq!(code(&f.status), Code::Ok, "{:?}", f.status);
            assert!(!f.messages.is_empty(), "nothing at offset {offset} through broker {}", b.id);
            for m in f.messages {
                assert_eq!(m.offset, offset);
                assert!(m.message.as_ref() == Some(&sent[offset as usize]), "message {offset} differs through broker {}", b.id);
                offset += 1;
            }
        }
    }

    // A fetch's byte bound counts whole messages: of the widest ones (empty bodies), 1 MiB
    // holds about 12, not all 256.
    let raw_bytes = |m: &Message| {
        m.body.len()
            + m.keys.iter().map(String::len).sum::<usize>()
            + m.tag.as_ref().map_or(0, String::len)
            + m.properties.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    };
    // From the longer run of widest messages, before or after the second body at the limit.
    let from = if blocker_offset > 128 { 1 } else { blocker_offset + 1 };
    let mut c = client.clone();
    let f = c
        .fetch(FetchRequest {
            topic: "big".into(),
            queue_id: 0,
            offset: from,
            max_messages: 1024,
            max_bytes: 1 << 20,
            ..Default::default()
        })
        .await
        .expect("fetch")
        .into_inner();
    assert_eq!(code(&f.status), Code::Ok, "{:?}", f.status);
    let fetched: usize = f.messages.iter().map(|m| raw_bytes(m.message.as_ref().expect("message"))).sum();
    assert!(!f.messages.is_empty() && fetched <= 1 << 20, "{} messages of {fetched} bytes under a 1 MiB bound", f.messages.len());
    // It stopped at the bound, not before: the next message would not have fit (with slack
    // for each message's framing, which the broker counts too).
    let next = raw_bytes(&sent[f.next_offset as usize]);
    assert!(fetched + next + (f.messages.len() + 1) * 4096 > 1 << 20, "stopped at {fetched} bytes, before the bound");

    // Every replica holds the same messages: digests over each replica's own log agree.
    let r = admin.group_checksum(GroupChecksumRequest { group_id, applied_index: 0 }).await.expect("checksum").into_inner();
    assert_eq!(code(&r.status), Code::Ok, "{:?}", r.status);
    assert_eq!(r.replicas.len(), 3);
    assert!(r.replicas.iter().all(|x| x.error.is_none()), "{:?}", r.replicas);
    assert!(r.replicas.windows(2).all(|w| w[0].digest == w[1].digest), "replicas differ: {:?}", r.replicas);
}
